/*
 * transport/ssh-target: ssh://[USER@]HOST[:PORT]/PATH taken apart, as
 * OpenSSH reads such a destination (the last '@' ends the user, an IPv6
 * host in brackets).
 */
#include "ssh-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tr_ssh_target_parse(const char *target, struct tr_ssh_target *out, struct lm_error *err)
{
	const char *auth, *slash, *at, *hp, *colon = NULL, *p;
	long port = 22;

	memset(out, 0, sizeof(*out));
	if (strncmp(target, "ssh://", 6) != 0)
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': expected ssh://[USER@]HOST[:PORT]/PATH", target);
	auth = target + 6;
	slash = strchr(auth, '/');
	if (slash == NULL || slash[1] == '\0')
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': no socket path (ssh://[USER@]HOST[:PORT]/PATH)",
				    target);
	if (strlen(slash) > SSH_PATH_MAX)
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': socket path longer than %d bytes", target,
				    SSH_PATH_MAX);
	at = NULL;
	for (p = auth; p < slash; p++)
		if (*p == '@')
			at = p; /* the last '@', as OpenSSH takes it */
	hp = at ? at + 1 : auth;
	if (at == auth)
		return lm_error_set(err, LM_ERR_USAGE, "target '%s': empty user name", target);
	if (*hp == '[') {
		const char *close = memchr(hp, ']', (size_t)(slash - hp));

		if (close == NULL || close == hp + 1)
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': expected [ADDRESS] for an IPv6 host", target);
		if (close + 1 != slash && close[1] != ':')
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': unexpected text after ']'", target);
		if (close[1] == ':')
			colon = close + 1;
		out->host = strndup(hp + 1, (size_t)(close - hp - 1));
	} else {
		colon = memchr(hp, ':', (size_t)(slash - hp));
		if (colon != NULL && memchr(colon + 1, ':', (size_t)(slash - colon - 1)) != NULL)
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': an IPv6 host goes in brackets: "
					    "ssh://[ADDRESS]:PORT/PATH", target);
		if ((colon ? colon : slash) == hp)
			return lm_error_set(err, LM_ERR_USAGE, "target '%s': empty host name",
					    target);
		out->host = strndup(hp, (size_t)((colon ? colon : slash) - hp));
	}
	if (colon != NULL) {
		char *end;

		if (colon + 1 == slash || colon[1] < '0' || colon[1] > '9')
			goto bad_port;
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (errno != 0 || end != slash || port < 1 || port > 65535)
			goto bad_port;
	}
	out->port = (int)port;
	if (at != NULL)
		out->user = strndup(auth, (size_t)(at - auth));
	out->path = strdup(slash);
	if (out->host == NULL || out->path == NULL || (at != NULL && out->user == NULL)) {
		tr_ssh_target_clear(out);
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	for (p = out->host; *p != '\0'; p++)
		if (*p <= ' ' || *p == '@' || *p == '[' || *p == ']') {
			tr_ssh_target_clear(out);
			return lm_error_set(err, LM_ERR_USAGE, "target '%s': bad host name", target);
		}
	return 0;

bad_port:
	tr_ssh_target_clear(out);
	return lm_error_set(err, LM_ERR_USAGE, "target '%s': the port must be a number from 1 "
					       "to 65535", target);
}

void tr_ssh_target_clear(struct tr_ssh_target *tg)
{
	free(tg->user);
	free(tg->host);
	free(tg->path);
	memset(tg, 0, sizeof(*tg));
}

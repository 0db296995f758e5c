/*
 * transport/transport: a target string to the backend that makes its byte
 * stream, by scheme. The table is the one place that knows every backend;
 * the backends (transport/sock.c, transport/ssh-*.c) know only themselves.
 */
#include "transport-int.h"

#include <stddef.h>
#include <string.h>

struct tr_scheme {
	const char *prefix; /* NULL: a socket path, any target without "://" */
	tr_backend_new *make;
};

/* in order: the first that matches makes the transport */
static const struct tr_scheme tr_schemes[] = {
	{ "unix:", tr_sock_new_unix },
	{ "tcp:", tr_sock_new_tcp },
	{ NULL, tr_sock_new_unix },
	{ "ssh://", tr_ssh_new }, /* explains without opts->loop that it needs one */
};

/* Does target have sc's scheme? *rest: what follows the prefix. */
static int tr_scheme_match(const struct tr_scheme *sc, const char *target, const char **rest)
{
	if (sc->prefix == NULL) {
		*rest = target;
		return *target != '\0' && strstr(target, "://") == NULL;
	}
	*rest = target + strlen(sc->prefix);
	return strncmp(target, sc->prefix, strlen(sc->prefix)) == 0;
}

struct tr *tr_new_ex(const char *target, const struct tr_opts *opts, struct lm_error *err)
{
	const char *rest;
	size_t i;

	for (i = 0; i < sizeof(tr_schemes) / sizeof(tr_schemes[0]); i++)
		if (tr_scheme_match(&tr_schemes[i], target, &rest))
			return tr_schemes[i].make(target, rest, opts, err);
	lm_error_set(err, LM_ERR_USAGE,
		     "target '%s': expected unix:PATH, a socket path, tcp:HOST:PORT or "
		     "ssh://[USER@]HOST[:PORT]/PATH", target);
	return NULL;
}

struct tr *tr_new(const char *target, struct lm_error *err)
{
	return tr_new_ex(target, NULL, err);
}

void tr_free(struct tr *t)
{
	if (t != NULL)
		t->ops->destroy(t);
}

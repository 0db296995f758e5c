/*
 * transport/ssh-auth: public key authentication of a session, one
 * resumable step at a time: the keys of ssh-agent, then the identity files
 * (transport/ssh-keys.c). Never a password or a passphrase. What was tried
 * and why each failed goes into the one message of an AUTH failure.
 */
#include "ssh-int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tried_add(struct ssh_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tried_add(struct ssh_sess *s, const char *fmt, ...)
{
	size_t n = strlen(s->tried);
	va_list ap;

	if (n > 0 && n + 2 < sizeof(s->tried)) {
		strcpy(s->tried + n, ", ");
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(s->tried + n, sizeof(s->tried) - n, fmt, ap);
	va_end(ap);
}

static void sess_auth_done(struct ssh_sess *s)
{
	if (s->agent != NULL) {
		libssh2_agent_disconnect(s->agent);
		libssh2_agent_free(s->agent);
		s->agent = NULL;
	}
	s->auth = AUTH_DONE;
}

static void sess_auth_refused(struct ssh_sess *s, const char *why)
{
	ssh_sess_fail(s, LM_ERR_AUTH,
		      "authentication as %s on %s failed%s; tried: %s; load a key into ssh-agent "
		      "or pass -i FILE (livemerge never asks for a password)",
		      s->user, s->khname, why, s->tried[0] ? s->tried : "no key at all");
}

/* One step of authentication: 1 done, 0 wait, -1 failed (session failed). */
int ssh_auth_step(struct ssh_sess *s)
{
	int rc;

	for (;;) {
		switch (s->auth) {
		case AUTH_LIST: {
			const char *m = libssh2_userauth_list(s->ssh, s->user,
							      (unsigned int)strlen(s->user));

			if (m == NULL) {
				if (libssh2_userauth_authenticated(s->ssh)) {
					sess_auth_done(s);
					return 1;
				}
				rc = libssh2_session_last_errno(s->ssh);
				if (rc == LIBSSH2_ERROR_EAGAIN)
					return 0;
				ssh_sess_fail(s, LM_ERR_IO,
					      "%s closed the connection before authentication: %s",
					      s->khname, ssh_sess_lost(s));
				return -1;
			}
			s->methods = strdup(m);
			if (s->methods == NULL) {
				ssh_sess_fail(s, LM_ERR_NOMEM, "out of memory");
				return -1;
			}
			if (strstr(s->methods, "publickey") == NULL) {
				ssh_sess_fail(s, LM_ERR_AUTH,
					      "%s does not accept public keys for %s (it offers: %s); "
					      "livemerge never asks for a password",
					      s->khname, s->user, s->methods);
				return -1;
			}
			s->auth = AUTH_AGENT;
			break;
		}
		case AUTH_AGENT: {
			const char *sock = getenv("SSH_AUTH_SOCK");

			s->auth = AUTH_FILES;
			if (sock == NULL || *sock == '\0')
				break;
			s->agent = libssh2_agent_init(s->ssh);
			if (s->agent == NULL) {
				tried_add(s, "ssh-agent (out of memory)");
				break;
			}
			if (libssh2_agent_connect(s->agent) != 0) {
				tried_add(s, "ssh-agent (cannot connect to %s)", sock);
				break;
			}
			if (libssh2_agent_list_identities(s->agent) != 0) {
				tried_add(s, "ssh-agent (cannot list its keys: %s)",
					  ssh_sess_errmsg(s));
				break;
			}
			s->agent_key = NULL;
			s->auth = AUTH_AGENT_KEY;
			if (libssh2_agent_get_identity(s->agent, &s->agent_key, NULL) != 0) {
				tried_add(s, "ssh-agent (no keys)");
				s->auth = AUTH_FILES;
			}
			break;
		}
		case AUTH_AGENT_KEY:
			rc = libssh2_agent_userauth(s->agent, s->user, s->agent_key);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc == 0) {
				sess_auth_done(s);
				return 1;
			}
			if (ssh_rc_fatal(rc)) {
				tried_add(s, "ssh-agent key '%s' (%s)", s->agent_key->comment,
					  ssh_sess_lost(s));
				sess_auth_refused(s, " (the server closed the connection)");
				return -1;
			}
			tried_add(s, "ssh-agent key '%s' (%s)", s->agent_key->comment,
				  rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
						  rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED
					  ? "refused"
					  : ssh_sess_errmsg(s));
			if (libssh2_agent_get_identity(s->agent, &s->agent_key, s->agent_key) != 0)
				s->auth = AUTH_FILES;
			break;
		case AUTH_FILES:
			if (s->id_next >= s->nids) {
				sess_auth_refused(s, "");
				return -1;
			}
			s->auth = AUTH_FILE_KEY;
			break;
		case AUTH_FILE_KEY: {
			const char *file = s->ids[s->id_next];
			int rsa, enc = ssh_key_inspect(file, &rsa);

			if (enc != 0) {
				if (enc < 0)
					tried_add(s, "%s (%s)", file, strerror(errno));
				else
					tried_add(s, "%s (encrypted, and livemerge never asks for "
						     "a passphrase: add it to ssh-agent)", file);
				s->id_next++;
				s->auth = AUTH_FILES;
				break;
			}
			rc = libssh2_userauth_publickey_fromfile_ex(s->ssh, s->user,
								    (unsigned int)strlen(s->user),
								    NULL, file, NULL);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc == 0) {
				sess_auth_done(s);
				return 1;
			}
			s->id_next++;
			s->auth = AUTH_FILES;
			if (ssh_rc_fatal(rc)) {
				tried_add(s, "%s (%s)", file, ssh_sess_lost(s));
				sess_auth_refused(s, " (the server closed the connection)");
				return -1;
			}
			if (rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
			    rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED)
				tried_add(s, "%s (refused%s)", file,
					  rsa ? "; libssh2 1.10 signs RSA keys with SHA-1, which "
						"OpenSSH 8.8+ refuses: use an ed25519 or ecdsa key"
					      : "");
			else
				tried_add(s, "%s (unusable: %s)", file, ssh_sess_errmsg(s));
			break;
		}
		case AUTH_DONE:
			return 1;
		}
	}
}

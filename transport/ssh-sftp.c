/*
 * transport/ssh-sftp: files on the host of an ssh:// transport, over SFTP
 * on its session (tr_ssh_file_exists, tr_ssh_file_remove,
 * tr_ssh_file_read_head in transport.h); on a host without the sftp
 * subsystem, over an exec channel running a few POSIX shell words; on a host
 * that allows neither, they fail with UNSUPPORTED (the caller decides what
 * that means: the engine asks QEMU, or leaves a file where it is). Each is
 * a short blocking exchange:
 * the pump first finishes what the session has half done, then the
 * exchange has the session to itself until it ends, bounded by the session
 * timeout; the pump runs again afterwards.
 */
#include "ssh-int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for the session's socket in the directions libssh2 blocks on, until
 * deadline: 0, or -1 (timed out, or poll failed). */
static int sess_poll(struct ssh_sess *s, double deadline)
{
	int d = ssh_sess_dirs(s), r;
	struct pollfd pfd = { .fd = s->fd, .events = 0 };
	double left = deadline - mono_now();

	if (d & LIBSSH2_SESSION_BLOCK_INBOUND)
		pfd.events |= POLLIN;
	if (d & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pfd.events |= POLLOUT;
	if (pfd.events == 0)
		pfd.events = POLLIN;
	if (left <= 0)
		return -1;
	do
		r = poll(&pfd, 1, (int)(left * 1000) + 1);
	while (r < 0 && errno == EINTR && (left = deadline - mono_now()) > 0);
	return r > 0 ? 0 : -1;
}

/* Does a channel open (ours, or an SFTP probe's) hold libssh2's per-session
 * open state? Another open must not start then. */
static int sess_opening(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL; c = c->next)
		if (c->state == CHAN_OPENING || c->state == CHAN_PROBING)
			return 1;
	return 0;
}

static int sess_err_to(struct ssh_sess *s, struct tr_ssh *c, struct lm_error *err)
{
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	return lm_error_set(err, s->err.code ? s->err.code : LM_ERR_EOF, "%s: %s", c->base.desc,
			    s->state == SESS_DEAD ? s->err.msg : "the SSH session is not ready");
}

/*
 * Let the pump finish what the session has half done (a partial packet, a
 * channel open awaiting its answer) before a synchronous exchange takes
 * the session: 0, or -1 with err (nothing of the exchange sent).
 */
static int sess_settle(struct ssh_sess *s, struct tr_ssh *c, double deadline, struct lm_error *err)
{
	for (;;) {
		if (s->state != SESS_READY || c->failed)
			return sess_err_to(s, c, err);
		if (s->busy == BUSY_NONE && !sess_opening(s))
			return 0;
		ssh_pump(s);
		if (s->state != SESS_READY || c->failed)
			return sess_err_to(s, c, err);
		if (s->busy == BUSY_NONE && !sess_opening(s))
			return 0;
		if (sess_poll(s, deadline) < 0)
			return lm_error_set(err, LM_ERR_TIMEOUT,
					    "%s: the SSH session to %s stayed busy for %g s (a "
					    "packet or channel open in progress): cannot check "
					    "remote files now", c->base.desc, s->khname, s->timeout);
	}
}

/* A libssh2 call of the exchange failed with rc (not EAGAIN), or timed out
 * (rc 0): whether the session survives. A timeout mid-exchange leaves
 * libssh2 mid-packet, so the session is given up then. */
static int sftp_fail_session(struct ssh_sess *s, struct tr_ssh *c, int rc, const char *what,
			     const char *path, struct lm_error *err)
{
	if (rc == 0)
		ssh_sess_fail(s, LM_ERR_TIMEOUT,
			      "no answer from %s within %g s while %s %s over SFTP", s->khname,
			      s->timeout, what, path);
	else if (ssh_rc_fatal(rc))
		ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
			      ssh_sess_lost(s));
	else
		return 0;
	return sess_err_to(s, c, err);
}

enum sftp_job { SFTP_EXISTS, SFTP_REMOVE, SFTP_READ };

/* What SFTP_READ fills. */
struct sftp_read {
	void *buf;
	size_t len, got;
	char type;
};

/* SFTP_READ after its lstat: open path read-only and read up to rd->len.
 * The libssh2 rc of the step that failed (EAGAIN handled), or 0. */
static int sftp_read_head(struct ssh_sess *s, LIBSSH2_SFTP *sftp, const char *path,
			  struct sftp_read *rd, double deadline)
{
	LIBSSH2_SFTP_HANDLE *h;
	ssize_t n;
	int rc;

	while ((h = libssh2_sftp_open_ex(sftp, path, (unsigned int)strlen(path), LIBSSH2_FXF_READ, 0,
					 LIBSSH2_SFTP_OPENFILE)) == NULL) {
		rc = libssh2_session_last_errno(s->ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			return rc;
		if (sess_poll(s, deadline) < 0)
			return LIBSSH2_ERROR_TIMEOUT;
	}
	rc = 0;
	while (rd->got < rd->len) {
		n = libssh2_sftp_read(h, (char *)rd->buf + rd->got, rd->len - rd->got);
		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (sess_poll(s, deadline) < 0) {
				rc = LIBSSH2_ERROR_TIMEOUT;
				break;
			}
			continue;
		}
		if (n < 0) {
			rc = (int)n;
			break;
		}
		if (n == 0)
			break;
		rd->got += (size_t)n;
	}
	while (libssh2_sftp_close_handle(h) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			return LIBSSH2_ERROR_TIMEOUT;
	return rc;
}

/* ---- exec: the same through a shell, where the host has no sftp ---------------- */

/* path as one single-quoted shell word (a ' becomes '\''); owned, or NULL. */
static char *sh_quote(const char *path)
{
	size_t n = 3, i, k = 0;
	char *q;

	for (i = 0; path[i]; i++)
		n += path[i] == '\'' ? 4 : 1;
	if ((q = malloc(n)) == NULL)
		return NULL;
	q[k++] = '\'';
	for (i = 0; path[i]; i++) {
		if (path[i] == '\'') {
			memcpy(q + k, "'\\''", 4);
			k += 4;
		} else {
			q[k++] = path[i];
		}
	}
	q[k++] = '\'';
	q[k] = '\0';
	return q;
}

/* The marker our commands print first: without it, no shell of ours ran
 * (ForceCommand /bin/false, a restricted shell). */
#define EXEC_MARK "LM1\n"

/*
 * Run one command on an exec channel and read its stdout (up to cap bytes
 * into out, *got). 0, 1 (the host gave no channel or ran no shell of ours:
 * s->no_exec set), or -1 with the libssh2 rc in *rcp (0: timed out).
 */
static int exec_run(struct ssh_sess *s, const char *cmd, char *out, size_t cap, size_t *got,
		    double deadline, int *rcp)
{
	LIBSSH2_CHANNEL *ch;
	char sink[512];
	ssize_t n;
	int rc = 0, r = 0, eof_out = 0;

	*got = 0;
	while ((ch = libssh2_channel_open_session(s->ssh)) == NULL) {
		rc = libssh2_session_last_errno(s->ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (sess_poll(s, deadline) < 0) {
			*rcp = 0;
			return -1;
		}
	}
	if (ch == NULL) {
		if (ssh_rc_fatal(rc)) {
			*rcp = rc;
			return -1;
		}
		s->no_exec = 1; /* the session channel itself was refused */
		return 1;
	}
	while ((rc = libssh2_channel_exec(ch, cmd)) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0) {
			rc = 0;
			r = -1;
			goto close;
		}
	if (rc != 0) {
		if (ssh_rc_fatal(rc)) {
			r = -1;
			goto close;
		}
		s->no_exec = 1; /* exec refused */
		r = 1;
		goto close;
	}
	while (!eof_out) {
		if (*got < cap)
			n = libssh2_channel_read(ch, out + *got, cap - *got);
		else
			n = libssh2_channel_read(ch, sink, sizeof(sink)); /* past the cap: drop */
		if (n > 0) {
			if (*got < cap)
				*got += (size_t)n;
			continue;
		}
		/* stderr is not ours to show, but its window must not fill */
		while (libssh2_channel_read_stderr(ch, sink, sizeof(sink)) > 0)
			;
		if (n == 0 && libssh2_channel_eof(ch)) {
			eof_out = 1;
		} else if (n == 0 || n == LIBSSH2_ERROR_EAGAIN) {
			if (sess_poll(s, deadline) < 0) {
				rc = 0;
				r = -1;
				goto close;
			}
		} else {
			rc = (int)n;
			r = -1;
			goto close;
		}
	}
	if (*got < sizeof(EXEC_MARK) - 1 || memcmp(out, EXEC_MARK, sizeof(EXEC_MARK) - 1) != 0) {
		s->no_exec = 1; /* something ran, but not our shell words */
		r = 1;
	}
close:
	while (libssh2_channel_close(ch) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			break;
	while (libssh2_channel_free(ch) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			break;
	*rcp = rc;
	return r;
}

/*
 * job through an exec channel: what sftp_run does, for a host without the
 * sftp subsystem. Same returns; UNSUPPORTED when the host runs no shell for
 * us either.
 */
static int exec_job(struct tr_ssh *c, enum sftp_job job, const char *path, struct sftp_read *rd,
		    double deadline, int *dead, struct lm_error *err)
{
	struct ssh_sess *s = c->s;
	const char *verb = job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check";
	char *q, *cmd = NULL, small[64], *out = small;
	size_t cap = sizeof(small), got;
	int r, rc, result = -1;

	if (s->no_exec)
		return lm_error_set(err, LM_ERR_UNSUPPORTED, "cannot %s %s on %s: the host offers "
				    "neither SFTP nor an exec channel running a shell", verb, path,
				    s->khname);
	if ((q = sh_quote(path)) == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	if (job == SFTP_EXISTS)
		r = asprintf(&cmd, "printf 'LM1\\n'; if [ -e %s ] || [ -L %s ]; then echo 1; else "
			     "echo 0; fi", q, q);
	else if (job == SFTP_REMOVE)
		r = asprintf(&cmd, "printf 'LM1\\n'; rm -f -- %s && echo 0 || echo 1", q);
	else
		r = asprintf(&cmd, "printf 'LM1\\n'; if [ -L %s ]; then echo l; elif [ -f %s ]; "
			     "then echo r; elif [ -b %s ]; then echo b; elif [ -e %s ]; then echo o; "
			     "else echo n; fi; if [ ! -L %s ] && { [ -f %s ] || [ -b %s ]; }; then "
			     "head -c %zu < %s; fi", q, q, q, q, q, q, q, rd->len, q);
	free(q);
	if (r < 0)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	if (job == SFTP_READ) {
		cap = rd->len + 8;
		if ((out = malloc(cap)) == NULL) {
			free(cmd);
			return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		}
	}
	r = exec_run(s, cmd, out, cap, &got, deadline, &rc);
	free(cmd);
	if (r < 0) {
		if (sftp_fail_session(s, c, rc, job == SFTP_REMOVE ? "deleting" : "checking", path,
				      err) < 0)
			*dead = 1;
		else
			lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: %s", verb, path, s->khname,
				     ssh_sess_errmsg(s));
		goto out;
	}
	if (r > 0) {
		lm_error_set(err, LM_ERR_UNSUPPORTED, "cannot %s %s on %s: the host offers neither "
			     "SFTP nor an exec channel running a shell", verb, path, s->khname);
		goto out;
	}
	got -= sizeof(EXEC_MARK) - 1;
	memmove(out, out + sizeof(EXEC_MARK) - 1, got);
	if (job != SFTP_READ) {
		if (got < 2 || out[1] != '\n' || (out[0] != '0' && out[0] != '1'))
			lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: the host's shell answered "
				     "what it should not", verb, path, s->khname);
		else if (job == SFTP_EXISTS)
			result = out[0] == '1';
		else if (out[0] == '0')
			result = 0;
		else
			lm_error_set(err, LM_ERR_IO, "cannot delete %s on %s: rm failed", path,
				     s->khname);
		goto out;
	}
	if (got < 2 || out[1] != '\n' || strchr("lrbon", out[0]) == NULL) {
		lm_error_set(err, LM_ERR_IO, "cannot read %s on %s: the host's shell answered what "
			     "it should not", path, s->khname);
		goto out;
	}
	rd->type = out[0] == 'n' ? 0 : out[0] == 'o' ? 'o' : out[0];
	rd->got = got - 2 < rd->len ? got - 2 : rd->len;
	memcpy(rd->buf, out + 2, rd->got);
	result = (int)rd->got;
out:
	if (out != small)
		free(out);
	return result;
}

/* One SFTP exchange on c's session, to completion: see transport.h. */
static int sftp_run(struct tr *t, enum sftp_job job, const char *path, struct sftp_read *rd,
		    struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s;
	const char *what = job == SFTP_REMOVE ? "deleting" : job == SFTP_READ ? "reading" : "checking";
	LIBSSH2_SFTP *sftp = NULL;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	double deadline;
	int rc, result = -1, dead = 0;

	if (t == NULL || t->ops != &ssh_chan_ops)
		return lm_error_set(err, LM_ERR_USAGE, "%s: remote files need an ssh:// transport",
				    t != NULL ? t->desc : "(none)");
	s = c->s;
	c->wake_outstanding = 0;
	if (c->state != CHAN_OPEN || c->failed || s->state != SESS_READY)
		return c->failed || s->state == SESS_DEAD
			       ? sess_err_to(s, c, err)
			       : lm_error_set(err, LM_ERR_USAGE, "%s: not connected", t->desc);
	deadline = mono_now() + s->timeout;
	if (sess_settle(s, c, deadline, err) < 0)
		goto out;

	/* from here on nothing else may use the session until the end */
	if (s->no_sftp) {
		result = exec_job(c, job, path, rd, deadline, &dead, err);
		goto out;
	}
	while ((sftp = libssh2_sftp_init(s->ssh)) == NULL) {
		rc = libssh2_session_last_errno(s->ssh);
		if (rc == LIBSSH2_ERROR_EAGAIN) {
			if (sess_poll(s, deadline) == 0)
				continue;
			rc = 0;
		}
		if (sftp_fail_session(s, c, rc, what, path, err) < 0) {
			dead = 1;
			goto out;
		}
		/* no sftp subsystem (a hardened host): the same through a shell */
		s->no_sftp = 1;
		result = exec_job(c, job, path, rd, deadline, &dead, err);
		goto out;
	}
	for (;;) {
		if (job != SFTP_REMOVE)
			rc = libssh2_sftp_stat_ex(sftp, path, (unsigned int)strlen(path),
						  LIBSSH2_SFTP_LSTAT, &attrs);
		else
			rc = libssh2_sftp_unlink_ex(sftp, path, (unsigned int)strlen(path));
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (sess_poll(s, deadline) < 0) {
			rc = 0;
			(void)sftp_fail_session(s, c, rc, what, path, err);
			dead = 1;
			goto out;
		}
	}
	if (rc == 0 && job == SFTP_READ) {
		unsigned long perm = attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS ? attrs.permissions : 0;

		rd->type = LIBSSH2_SFTP_S_ISREG(perm)	? 'r'
			   : LIBSSH2_SFTP_S_ISBLK(perm) ? 'b'
			   : LIBSSH2_SFTP_S_ISLNK(perm) ? 'l'
							: 'o';
		if (rd->type == 'r' || rd->type == 'b')
			rc = sftp_read_head(s, sftp, path, rd, deadline);
		if (rc == LIBSSH2_ERROR_TIMEOUT) {
			(void)sftp_fail_session(s, c, 0, what, path, err);
			dead = 1;
			goto out;
		}
	}
	if (rc == 0) {
		result = job == SFTP_EXISTS ? 1 : job == SFTP_READ ? (int)rd->got : 0;
	} else if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
		unsigned long fx = libssh2_sftp_last_error(sftp);

		if (fx == LIBSSH2_FX_NO_SUCH_FILE || fx == LIBSSH2_FX_NO_SUCH_PATH)
			result = 0; /* SFTP_READ: type stays 0, missing */
		else
			lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: %s (SFTP status %lu)",
				     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check",
				     path, s->khname,
				     fx == LIBSSH2_FX_PERMISSION_DENIED ? "permission denied"
				     : fx == LIBSSH2_FX_FAILURE	       ? "failed"
									: "refused",
				     fx);
	} else if (sftp_fail_session(s, c, rc, what, path, err) < 0) {
		dead = 1;
		goto out;
	} else {
		lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: %s",
			     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check", path,
			     s->khname, ssh_sess_errmsg(s));
	}
	while ((rc = libssh2_sftp_shutdown(sftp)) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			break;
	if (rc != LIBSSH2_ERROR_EAGAIN)
		sftp = NULL; /* libssh2 freed it, whatever rc says */
	if (rc == LIBSSH2_ERROR_EAGAIN || ssh_rc_fatal(rc)) {
		/* the close did not finish: libssh2 may hold half a packet */
		struct lm_error e;

		(void)sftp_fail_session(s, c, rc == LIBSSH2_ERROR_EAGAIN ? 0 : rc, "closing the SFTP channel of",
					path, &e);
		if (result >= 0 && err != NULL)
			*err = e;
		dead = 1;
	}
out:
	if (dead && sftp != NULL)
		(void)libssh2_sftp_shutdown(sftp); /* the socket is shut: frees at once */
	if (dead)
		result = -1;
	/* other channels' packets may have been read meanwhile: wake them,
	 * send what they buffered, and watch the socket as libssh2 now needs */
	ev_now_update(s->loop);
	ssh_pump(s);
	return result;
}

int tr_ssh_file_exists(struct tr *t, const char *path, struct lm_error *err)
{
	return sftp_run(t, SFTP_EXISTS, path, NULL, err);
}

int tr_ssh_file_remove(struct tr *t, const char *path, struct lm_error *err)
{
	return sftp_run(t, SFTP_REMOVE, path, NULL, err);
}

long tr_ssh_file_read_head(struct tr *t, const char *path, void *buf, size_t len, char *type,
			   struct lm_error *err)
{
	struct sftp_read rd = { buf, len, 0, 0 };
	int r = sftp_run(t, SFTP_READ, path, &rd, err);

	*type = rd.type;
	return r;
}

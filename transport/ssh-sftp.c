/*
 * transport/ssh-sftp: files on the host of an ssh:// transport, over SFTP
 * on its session (tr_ssh_file_exists, tr_ssh_file_remove,
 * tr_ssh_file_read_head in transport.h). Each is a short blocking exchange:
 * the pump first finishes what the session has half done, then the
 * exchange has the session to itself until it ends, bounded by the session
 * timeout; the pump runs again afterwards.
 */
#include "ssh-int.h"

#include <errno.h>
#include <poll.h>
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
		lm_error_set(err, LM_ERR_IO, "%s: cannot start SFTP on %s to %s %s: %s (does sshd "
			     "offer the sftp subsystem?)", t->desc, s->khname,
			     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check", path,
			     ssh_sess_errmsg(s));
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

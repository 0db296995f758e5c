/*
 * transport/ssh-sftp: the kind of channel that is one SFTP exchange about a
 * file on the host (tr_ssh_sftp_new in transport.h): what the path is
 * (lstat, a final symlink never followed) and the first bytes of a regular
 * file or block device; or its removal.
 *
 * The whole exchange (start the sftp subsystem, lstat or unlink, open,
 * read, close, shut the subsystem down; or opendir, readdir to the end,
 * close for a listing) runs as the channel's open, one
 * step each time the pump finds the session free for it, like the probe of
 * a refused streamlocal channel: it never blocks, and the other channels
 * of the session go on meanwhile. When it ends the channel is done;
 * connect() returns 0 and tr_ssh_sftp_result tells what was found.
 */
#include "ssh-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { JOB_INIT, JOB_STAT, JOB_FOLLOW, JOB_OPEN, JOB_READ, JOB_OPENDIR, JOB_READDIR, JOB_CLOSE,
       JOB_SHUTDOWN };

static const char *job_verb(const struct tr_ssh *c)
{
	return c->job == TR_SFTP_REMOVE ? "delete" : c->job == TR_SFTP_LIST ? "list" : "read";
}

/* The exchange failed in a way the session survives: remember why, and
 * go on to close what is open. */
static void job_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void job_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
{
	char msg[sizeof(c->job_err.msg)];
	va_list ap;

	if (c->job_failed)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&c->job_err, code, "%s: %s", c->base.desc, msg);
	c->job_failed = 1;
}

/* Keep one entry of a listing: its kind's letter, its name, a NUL. 0, or
 * -1 when past the listing's limit or out of memory (the job failed). */
static int job_list_add(struct tr_ssh *c, const LIBSSH2_SFTP_ATTRIBUTES *a, const char *name,
			size_t nlen)
{
	unsigned long perm = a->flags & LIBSSH2_SFTP_ATTR_PERMISSIONS ? a->permissions : 0;
	char kind = LIBSSH2_SFTP_S_ISREG(perm)	 ? 'r'
		    : LIBSSH2_SFTP_S_ISBLK(perm) ? 'b'
		    : LIBSSH2_SFTP_S_ISLNK(perm) ? 'l'
						 : 'o';

	if ((nlen == 1 && name[0] == '.') || (nlen == 2 && memcmp(name, "..", 2) == 0))
		return 0;
	if (nlen == 0 || memchr(name, '\0', nlen) != NULL || memchr(name, '/', nlen) != NULL) {
		job_failf(c, LM_ERR_IO, "cannot list %s on %s: the host named an entry that no "
			  "file can have", c->path, c->s->khname);
		return -1;
	}
	if (c->jgot + nlen + 2 > c->jlen) {
		job_failf(c, LM_ERR_IO, "cannot list %s on %s: more than %zu bytes of names",
			  c->path, c->s->khname, c->jlen);
		return -1;
	}
	if (c->jgot + nlen + 2 > c->jcap) {
		size_t cap = c->jcap ? c->jcap : 4096;
		unsigned char *nb;

		while (cap < c->jgot + nlen + 2)
			cap *= 2;
		if ((nb = realloc(c->jbuf, cap)) == NULL) {
			job_failf(c, LM_ERR_NOMEM, "out of memory");
			return -1;
		}
		c->jbuf = nb;
		c->jcap = cap;
	}
	c->jbuf[c->jgot++] = (unsigned char)kind;
	memcpy(c->jbuf + c->jgot, name, nlen);
	c->jgot += nlen;
	c->jbuf[c->jgot++] = '\0';
	return 0;
}

/* An SFTP status as a refusal of the job (a missing path is no failure). */
static void job_status(struct tr_ssh *c)
{
	unsigned long fx = libssh2_sftp_last_error(c->sftp);

	if (fx == LIBSSH2_FX_NO_SUCH_FILE || fx == LIBSSH2_FX_NO_SUCH_PATH) {
		c->jtype = 0; /* missing; for a removal: already gone */
		return;
	}
	job_failf(c, LM_ERR_IO, "cannot %s %s on %s: %s (SFTP status %lu)", job_verb(c), c->path,
		  c->s->khname,
		  fx == LIBSSH2_FX_PERMISSION_DENIED ? "permission denied"
		  : fx == LIBSSH2_FX_FAILURE	     ? "failed"
						     : "refused",
		  fx);
}

/* The end of the exchange: done, or failed with its reason. */
static int job_end(struct tr_ssh *c)
{
	c->state = CHAN_DONE;
	c->s->kick = 1;
	ev_timer_stop(c->s->loop, &c->timer);
	if (c->job_failed)
		ssh_chan_fail(c, &c->job_err);
	else
		c->job_done = 1;
	return 1;
}

/* After a libssh2 call of the exchange returned rc: 1 go on, 0 wait for
 * the socket, -1 the session is lost (failed). */
static int job_rc(struct tr_ssh *c, int rc)
{
	struct ssh_sess *s = c->s;

	ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (ssh_rc_fatal(rc)) {
		ssh_sess_fail_lost(s, LM_ERR_EOF);
		return -1;
	}
	return 1;
}

/* One step of the exchange, see struct ssh_chan_kind. */
static int sftp_job_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	unsigned int plen = (unsigned int)strlen(c->path);
	ssize_t n;
	int rc, r;

	if (!ssh_sess_may_send(s, BUSY_PROBE, c))
		return 0;
	c->state = CHAN_PROBING; /* holds the session's open state: one at a time */
	switch (c->job_step) {
	case JOB_INIT:
		if (s->no_sftp) {
			job_failf(c, LM_ERR_UNSUPPORTED, "%s has no sftp subsystem", s->khname);
			return job_end(c);
		}
		c->sftp = libssh2_sftp_init(s->ssh);
		rc = c->sftp != NULL ? 0 : libssh2_session_last_errno(s->ssh);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		if (c->sftp == NULL) {
			s->no_sftp = 1; /* a hardened host: asked once per session */
			job_failf(c, LM_ERR_UNSUPPORTED, "%s has no sftp subsystem (%s)", s->khname,
				  ssh_sess_errmsg(s));
			return job_end(c);
		}
		c->job_step = c->job == TR_SFTP_LIST ? JOB_OPENDIR : JOB_STAT;
		return 1;
	case JOB_OPENDIR:
		c->fh = libssh2_sftp_open_ex(c->sftp, c->path, plen, 0, 0, LIBSSH2_SFTP_OPENDIR);
		rc = c->fh != NULL ? 0 : libssh2_session_last_errno(s->ssh);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		if (c->fh == NULL) {
			if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL)
				job_status(c); /* missing: jtype 0 */
			else
				job_failf(c, LM_ERR_IO, "cannot list %s on %s: %s", c->path,
					  s->khname, ssh_sess_errmsg(s));
			c->job_step = JOB_SHUTDOWN;
			return 1;
		}
		c->jtype = 'd';
		c->job_step = JOB_READDIR;
		return 1;
	case JOB_READDIR: {
		char name[1024];

		n = libssh2_sftp_readdir_ex(c->fh, name, sizeof(name) - 1, NULL, 0, &attrs);
		if ((r = job_rc(c, n < 0 ? (int)n : 0)) <= 0)
			return r == 0 ? 0 : 1;
		if (n < 0)
			job_failf(c, LM_ERR_IO, "cannot list %s on %s: %s", c->path, s->khname,
				  ssh_sess_errmsg(s));
		if (n <= 0 || job_list_add(c, &attrs, name, (size_t)n) < 0)
			c->job_step = JOB_CLOSE;
		return 1;
	}
	case JOB_STAT:
		if (c->job == TR_SFTP_REMOVE)
			rc = libssh2_sftp_unlink_ex(c->sftp, c->path, plen);
		else
			rc = libssh2_sftp_stat_ex(c->sftp, c->path, plen, LIBSSH2_SFTP_LSTAT, &attrs);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		c->job_step = JOB_SHUTDOWN;
		if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
			job_status(c);
		} else if (rc != 0) {
			job_failf(c, LM_ERR_IO, "cannot %s %s on %s: %s", job_verb(c), c->path,
				  s->khname, ssh_sess_errmsg(s));
		} else if (c->job != TR_SFTP_REMOVE) {
			unsigned long perm =
				attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS ? attrs.permissions : 0;

			c->jtype = LIBSSH2_SFTP_S_ISREG(perm)	? 'r'
				   : LIBSSH2_SFTP_S_ISBLK(perm) ? 'b'
				   : LIBSSH2_SFTP_S_ISLNK(perm) ? 'l'
								: 'o';
			if (c->jtype == 'l' && c->job == TR_SFTP_LOOK_DEVICE)
				c->job_step = JOB_FOLLOW;
			else if ((c->jtype == 'r' || c->jtype == 'b') && c->jlen > 0)
				c->job_step = JOB_OPEN;
		}
		return 1;
	case JOB_FOLLOW:
		/* a symlink: is it a volume's name, leading to a block device? */
		rc = libssh2_sftp_stat_ex(c->sftp, c->path, plen, LIBSSH2_SFTP_STAT, &attrs);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		c->job_step = JOB_SHUTDOWN;
		if (rc == 0 && (attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
		    LIBSSH2_SFTP_S_ISBLK(attrs.permissions)) {
			c->jtype = 'b';
			if (c->jlen > 0)
				c->job_step = JOB_OPEN;
		}
		return 1;
	case JOB_OPEN:
		c->fh = libssh2_sftp_open_ex(c->sftp, c->path, plen, LIBSSH2_FXF_READ, 0,
					     LIBSSH2_SFTP_OPENFILE);
		rc = c->fh != NULL ? 0 : libssh2_session_last_errno(s->ssh);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		if (c->fh == NULL) {
			if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL)
				job_status(c); /* gone between lstat and open: missing */
			else
				job_failf(c, LM_ERR_IO, "cannot read %s on %s: %s", c->path,
					  s->khname, ssh_sess_errmsg(s));
			c->job_step = JOB_SHUTDOWN;
			return 1;
		}
		c->job_step = JOB_READ;
		return 1;
	case JOB_READ:
		n = libssh2_sftp_read(c->fh, (char *)c->jbuf + c->jgot, c->jlen - c->jgot);
		if ((r = job_rc(c, n < 0 ? (int)n : 0)) <= 0)
			return r == 0 ? 0 : 1;
		if (n < 0)
			job_failf(c, LM_ERR_IO, "cannot read %s on %s: %s", c->path, s->khname,
				  ssh_sess_errmsg(s));
		else
			c->jgot += (size_t)n;
		if (n <= 0 || c->jgot == c->jlen)
			c->job_step = JOB_CLOSE;
		return 1;
	case JOB_CLOSE:
		rc = libssh2_sftp_close_handle(c->fh);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		c->fh = NULL; /* freed whatever rc says */
		c->job_step = JOB_SHUTDOWN;
		return 1;
	default:
		rc = libssh2_sftp_shutdown(c->sftp);
		if ((r = job_rc(c, rc)) <= 0)
			return r == 0 ? 0 : 1;
		c->sftp = NULL;
		return job_end(c);
	}
}

const struct ssh_chan_kind ssh_sftp_job = {
	.open_step = sftp_job_step,
};

struct tr *tr_ssh_sftp_new(const char *target, const struct tr_opts *opts, enum tr_sftp_job job,
			   const char *path, size_t len, struct lm_error *err)
{
	struct tr_ssh *c;

	if (job == TR_SFTP_REMOVE)
		len = 0;
	c = ssh_chan_make(target, opts, &ssh_sftp_job, path, err);
	if (c == NULL)
		return NULL;
	c->job = job;
	c->jlen = len;
	if (job != TR_SFTP_LIST && len > 0 && (c->jbuf = malloc(len)) == NULL) {
		tr_free(&c->base);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	return &c->base;
}

const void *tr_ssh_sftp_result(struct tr *t, char *type, size_t *len)
{
	struct tr_ssh *c = (struct tr_ssh *)t;

	if (t->ops != &ssh_chan_ops || c->kind != &ssh_sftp_job || !c->job_done) {
		*type = 0;
		*len = 0;
		return NULL;
	}
	*type = c->jtype;
	*len = c->jgot;
	return c->jbuf;
}

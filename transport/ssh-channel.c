/*
 * transport/ssh-channel: the ssh:// transport itself: one SSH channel of a
 * shared session (transport/ssh-session.c) behind the transport table.
 * Writes go to the channel's buffer and the session's pump sends them;
 * reads take what libssh2 queued for the channel. How a channel is opened
 * is its kind's (struct ssh_chan_kind): a unix socket on the host
 * (transport/ssh-streamlocal.c), a command run by the host's shell
 * (transport/ssh-exec.c), or an SFTP exchange (transport/ssh-sftp.c).
 */
#include "ssh-int.h"

#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SSH_OUT_MAX (64u << 20)

void ssh_chan_fail(struct tr_ssh *c, const struct lm_error *e)
{
	if (c->failed)
		return;
	c->failed = 1;
	c->err = *e;
	if (c->state != CHAN_OPEN)
		c->s->kick = 1;
}

void ssh_chan_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
{
	struct lm_error e;
	char msg[sizeof(e.msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&e, code, "%s: %s", c->base.desc, msg);
	ssh_chan_fail(c, &e);
}

void ssh_chan_free_mem(struct tr_ssh *c)
{
	if (c->s != NULL)
		ev_timer_stop(c->s->loop, &c->timer);
	free(c->out);
	free(c->jbuf);
	free(c->path);
	free(c->base.desc);
	free(c);
}

void ssh_chan_start_close(struct tr_ssh *c)
{
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_cap = 0;
	c->state = CHAN_CLOSING;
}

/* c's open succeeded with ch (any kind of channel). */
void ssh_chan_opened(struct tr_ssh *c, LIBSSH2_CHANNEL *ch)
{
	c->ch = ch;
	c->state = CHAN_OPEN;
	c->was_open = 1;
	ev_timer_stop(c->s->loop, &c->timer);
	if (!c->attached || c->failed)
		ssh_chan_start_close(c);
}

/* Would a read of len on c send a window adjustment (which must not
 * interleave with another operation's partial packet)? */
int ssh_chan_read_adjusts(struct tr_ssh *c, size_t len)
{
	unsigned long initial = 0, window;

	window = libssh2_channel_window_read_ex(c->ch, NULL, &initial);
	return window < initial / 4 * 3 + len;
}

/* Connect deadline of one channel (session setup included). */
static void chan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tr_ssh *c = w->data;
	struct ssh_sess *s = c->s;

	(void)loop;
	(void)revents;
	if (c->state == CHAN_OPEN || c->failed)
		return;
	if (s->state != SESS_READY)
		ssh_sess_fail(s, LM_ERR_TIMEOUT, "no answer from %s within %g s while %s",
			      s->khname, s->timeout, ssh_sess_stage(s));
	else if (c->kind == &ssh_sftp_job)
		ssh_chan_failf(c, LM_ERR_TIMEOUT, "no answer from the sftp subsystem of %s "
			       "within %g s about %s", s->khname, s->timeout, c->path);
	else
		ssh_chan_failf(c, LM_ERR_TIMEOUT, "sshd on %s did not open the channel within %g s",
			       s->khname, s->timeout);
	if (c->state == CHAN_WAIT)
		c->state = CHAN_DONE; /* still queued: never opened at all */
	ssh_pump(s);
}

/* ------------------------------------------------------------ the transport table */

/* c's sticky error into err: -1. */
static int chan_error(struct tr_ssh *c, struct lm_error *err)
{
	if (err != NULL)
		*err = c->err;
	return -1;
}

static int chan_connect(struct tr *t, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;

	c->wake_outstanding = 0;
	if (c->state == CHAN_NEW && !c->failed) {
		c->state = CHAN_WAIT;
		ev_timer_set(&c->timer, s->timeout, 0.);
		ev_timer_start(s->loop, &c->timer);
		if (s->state == SESS_NEW)
			ssh_sess_start(s);
	}
	if (!c->failed && c->state != CHAN_OPEN)
		ssh_pump(s);
	if (c->failed)
		return chan_error(c, err);
	return c->state == CHAN_OPEN || c->job_done ? 0 : 1;
}

static ssize_t chan_read(struct tr *t, char *buf, size_t len, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;
	ssize_t n;

	c->wake_outstanding = 0;
	if (c->failed)
		return chan_error(c, err);
	if (c->state != CHAN_OPEN)
		return TR_AGAIN;
	if (c->eof_seen)
		return 0;
	if (c->kind->side_read != NULL)
		c->kind->side_read(c);
	if (!ssh_sess_may_send(s, BUSY_READ, c) && ssh_chan_read_adjusts(c, len)) {
		ssh_pump(s);
		return c->failed ? chan_read(t, buf, len, err) : TR_AGAIN;
	}
	n = libssh2_channel_read(c->ch, buf, len);
	ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
		if (ssh_rc_fatal((int)n))
			ssh_sess_fail_lost(s, LM_ERR_EOF);
		else
			ssh_chan_failf(c, LM_ERR_IO, "read failed: %s", ssh_sess_errmsg(s));
	}
	if (n == 0) {
		c->eof_seen = 1;
		if (c->kind->side_read != NULL)
			c->kind->side_read(c); /* all of it is queued by now */
	}
	ssh_pump(s);
	if (n >= 0)
		return n;
	if (c->failed)
		return chan_error(c, err);
	return TR_AGAIN;
}

static ssize_t chan_write(struct tr *t, const char *buf, size_t len, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;

	c->wake_outstanding = 0;
	if (c->failed)
		return chan_error(c, err);
	if (c->state != CHAN_OPEN)
		return TR_AGAIN;
	if (len > SSH_OUT_MAX - c->out_len)
		len = SSH_OUT_MAX - c->out_len;
	if (len == 0)
		return TR_AGAIN;
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *nb;

		while (cap < c->out_len + len)
			cap *= 2;
		nb = realloc(c->out, cap);
		if (nb == NULL)
			return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		c->out = nb;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	ssh_pump(c->s);
	if (c->failed)
		return chan_error(c, err);
	return (ssize_t)len;
}

static int chan_want(struct tr *t)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;
	int d;

	/* an open channel only ever needs reads from its user: the session
	 * watches for writability itself */
	if (c->failed || c->state == CHAN_OPEN)
		return TR_WANT_READ;
	if (s->state == SESS_TCP)
		return TR_WANT_WRITE;
	d = ssh_sess_dirs(s);
	return ((d & LIBSSH2_SESSION_BLOCK_INBOUND) || !(d & LIBSSH2_SESSION_BLOCK_OUTBOUND)
			? TR_WANT_READ
			: 0) |
	       ((d & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? TR_WANT_WRITE : 0);
}

static int chan_fd(struct tr *t)
{
	return ((struct tr_ssh *)t)->s->fd;
}

static void chan_destroy(struct tr *t)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;

	c->attached = 0;
	c->base.wake = NULL;
	s->nattached--;
	ev_timer_stop(s->loop, &c->timer);
	if (s->nattached == 0) {
		ssh_sess_free(s); /* frees c too */
		return;
	}
	switch (c->state) {
	case CHAN_NEW:
	case CHAN_WAIT:
		c->state = CHAN_DONE;
		break;
	case CHAN_OPEN:
		/* a half-sent packet of ours must still go out whole first */
		if ((s->busy == BUSY_WRITE || s->busy == BUSY_READ) && s->busy_chan == c)
			c->close_after_busy = 1;
		else
			ssh_chan_start_close(c);
		break;
	default:
		break; /* an open or a probe in progress finishes by itself */
	}
	ssh_pump(s);
}

const struct tr_ops ssh_chan_ops = {
	.scheme = "ssh",
	.connect = chan_connect,
	.read = chan_read,
	.write = chan_write,
	.want = chan_want,
	.fd = chan_fd,
	.destroy = chan_destroy,
};

/* ------------------------------------------------------------ making one */

/* A channel of kind on the session of target's host (made, unconnected, if
 * the loop has none), held by its user; path: the kind's own string. */
struct tr_ssh *ssh_chan_make(const char *target, const struct tr_opts *opts,
			     const struct ssh_chan_kind *kind, const char *path, struct lm_error *err)
{
	struct tr_ssh_target tg;
	struct ssh_sess *s;
	struct tr_ssh *c;
	const char *user;
	struct passwd *pw;

	if (tr_ssh_target_parse(target, &tg, err) < 0)
		return NULL;
	if (opts == NULL || opts->loop == NULL) {
		tr_ssh_target_clear(&tg);
		lm_error_set(err, LM_ERR_USAGE, "target '%s': ssh targets need an event loop "
						"(tr_new_ex with opts->loop)", target);
		return NULL;
	}
	user = tg.user;
	if (user == NULL) {
		pw = getpwuid(getuid());
		user = pw != NULL ? pw->pw_name : getenv("USER");
		if (user == NULL) {
			tr_ssh_target_clear(&tg);
			lm_error_set(err, LM_ERR_USAGE, "target '%s': no user name: use "
							"ssh://USER@HOST/PATH", target);
			return NULL;
		}
	}
	s = ssh_sess_find(opts->loop, &tg, user);
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->base.desc = strdup(target)) == NULL ||
	    (c->path = strdup(path != NULL ? path : tg.path)) == NULL ||
	    (s == NULL && (s = ssh_sess_new(opts->loop, &tg, user, opts)) == NULL)) {
		if (c != NULL) {
			free(c->path);
			free(c->base.desc);
			free(c);
		}
		tr_ssh_target_clear(&tg);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	tr_ssh_target_clear(&tg);
	c->base.ops = &ssh_chan_ops;
	c->kind = kind;
	c->s = s;
	c->attached = 1;
	c->state = CHAN_NEW;
	ev_init(&c->timer, chan_timer_cb);
	c->timer.data = c;
	ssh_sess_attach(s, c);
	return c;
}

struct tr *tr_ssh_new(const char *target, const char *rest, const struct tr_opts *opts,
		      struct lm_error *err)
{
	struct tr_ssh *c;

	(void)rest; /* the whole target is parsed */
	c = ssh_chan_make(target, opts, &ssh_streamlocal, NULL, err);
	return c != NULL ? &c->base : NULL;
}

/*
 * transport/ssh-session: SSH sessions, their registry and the pump that
 * drives all their I/O.
 *
 * Sessions are shared: every channel to the same (loop, user, host, port)
 * in the process rides one SSH session, made by the first connect and
 * closed with the last channel. The session owns the TCP socket, an ev_io
 * on it and a keepalive timer; every transport of the session reports that
 * socket as its fd. A failed session is dead for good (its error sticky)
 * and fails every channel with it.
 *
 * Why the session drives all I/O itself (ssh_pump): libssh2 reads the
 * packets of every channel whichever channel asks, and it holds at most one
 * partly sent packet per session (offering a different packet while one is
 * pending fails with LIBSSH2_ERROR_BAD_USE). So a channel's writes go to its
 * own buffer and the pump sends them; the one operation that left a partial
 * packet ("busy") is resumed before any other may send; and after every step
 * the channels that have data, EOF or an error are woken through t->wake.
 * libssh2 keeps one channel open in progress per session, so opens go one
 * after the other, each as its channel's kind does it.
 */
#include "ssh-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define SSH_DEFAULT_TIMEOUT 15.0

static struct ssh_sess *ssh_sessions;

const char *ssh_sess_errmsg(struct ssh_sess *s)
{
	char *msg = NULL;

	if (s->ssh == NULL)
		return "no session";
	libssh2_session_last_error(s->ssh, &msg, NULL, 0);
	return msg != NULL && *msg != '\0' ? msg : "unknown error";
}

/* Why the connection broke, as the socket saw it. */
const char *ssh_sess_lost(struct ssh_sess *s)
{
	if (s->sock_eof)
		return "the server closed the connection";
	if (s->sock_errno != 0)
		return strerror(s->sock_errno);
	return ssh_sess_errmsg(s);
}

int ssh_sess_dirs(struct ssh_sess *s)
{
	return s->ssh != NULL ? libssh2_session_block_directions(s->ssh) : 0;
}

/* Errors after which the session cannot carry anything any more. */
int ssh_rc_fatal(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_BANNER_RECV:
	case LIBSSH2_ERROR_BANNER_SEND:
	case LIBSSH2_ERROR_INVALID_MAC:
	case LIBSSH2_ERROR_KEX_FAILURE:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE:
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_DECRYPT:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
	case LIBSSH2_ERROR_PROTO:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_ENCRYPT:
	case LIBSSH2_ERROR_BAD_SOCKET:
	case LIBSSH2_ERROR_OUT_OF_BOUNDARY:
		return 1;
	default:
		return 0;
	}
}

/* May the operation (op, c) send now? Only the busy one, or any when none
 * is: libssh2 must finish a partial packet before it takes another. */
int ssh_sess_may_send(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c)
{
	return s->busy == BUSY_NONE || (s->busy == op && s->busy_chan == c);
}

/* After an operation returned EAGAIN or finished: note or clear busy. */
void ssh_sess_note_busy(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c, int again)
{
	if (again && (ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND)) {
		if (s->busy == BUSY_NONE) {
			s->busy = op;
			s->busy_chan = c;
		}
	} else if (s->busy == op && s->busy_chan == c) {
		s->busy = BUSY_NONE;
		s->busy_chan = NULL;
	}
}

/* ------------------------------------------------------------ failures */

static void sess_unregister(struct ssh_sess *s)
{
	struct ssh_sess **pp;

	if (!s->registered)
		return;
	for (pp = &ssh_sessions; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	s->registered = 0;
}

static void sess_unlink_chan(struct ssh_sess *s, struct tr_ssh *c)
{
	struct tr_ssh **pp;

	for (pp = &s->chans; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
}

/*
 * The session is gone: every channel fails with err (the socket is shut
 * down, not closed, so that the fd number stays ours while the users'
 * watchers still name it). Channels nobody holds are freed.
 */
void ssh_sess_fail(struct ssh_sess *s, enum lm_err_code code, const char *fmt, ...)
{
	struct tr_ssh *c, *next;
	char msg[sizeof(s->err.msg)];
	va_list ap;

	if (s->state == SESS_DEAD)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&s->err, code, "%s", msg);
	s->state = SESS_DEAD;
	s->busy = BUSY_NONE;
	s->busy_chan = NULL;
	sess_unregister(s);
	ev_io_stop(s->loop, &s->io);
	s->io_events = 0;
	ev_timer_stop(s->loop, &s->keepalive);
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		ev_timer_stop(s->loop, &c->timer);
		if (!c->attached) {
			sess_unlink_chan(s, c);
			ssh_chan_free_mem(c);
			continue;
		}
		if (!c->failed) {
			struct lm_error e;

			lm_error_set(&e, code, "%s: %s", c->base.desc, msg);
			ssh_chan_fail(c, &e);
		}
		c->sftp = NULL; /* freed with the session's channels */
		c->fh = NULL;
		c->state = CHAN_DONE;
	}
	s->kick = 1;
	ev_timer_start(s->loop, &s->kicker);
}

void ssh_sess_fail_lost(struct ssh_sess *s, enum lm_err_code code)
{
	ssh_sess_fail(s, code, "connection to %s lost: %s", s->khname, ssh_sess_lost(s));
}

/* ------------------------------------------------------------ the pump */

/* The channel whose open is in progress or next. */
static struct tr_ssh *sess_open_head(struct ssh_sess *s)
{
	struct tr_ssh *c, *wait = NULL;

	for (c = s->chans; c != NULL; c = c->next) {
		if (c->state == CHAN_OPENING || c->state == CHAN_PROBING)
			return c;
		if (c->state == CHAN_WAIT && wait == NULL)
			wait = c;
	}
	return wait;
}

/* Open channels, one at a time, as far as the peer lets us. */
static void sess_opens(struct ssh_sess *s)
{
	struct tr_ssh *c;

	while (s->state == SESS_READY && (c = sess_open_head(s)) != NULL)
		if (!c->kind->open_step(c))
			return;
}

/* Hand the buffered bytes of open channels to libssh2. */
static void sess_writes(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL && s->state == SESS_READY; c = c->next) {
		while (c->state == CHAN_OPEN && c->attached && !c->failed && c->out_len > 0) {
			ssize_t n;

			if (!ssh_sess_may_send(s, BUSY_WRITE, c))
				return;
			n = libssh2_channel_write(c->ch, c->out, c->out_len);
			ssh_sess_note_busy(s, BUSY_WRITE, c, n == LIBSSH2_ERROR_EAGAIN);
			if (n > 0) {
				memmove(c->out, c->out + n, c->out_len - (size_t)n);
				c->out_len -= (size_t)n;
				continue;
			}
			if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
				break; /* the socket or the channel's window is full */
			if (ssh_rc_fatal((int)n)) {
				ssh_sess_fail_lost(s, LM_ERR_EOF);
				return;
			}
			ssh_chan_failf(c, LM_ERR_EOF, "write failed: %s", ssh_sess_errmsg(s));
		}
	}
}

/* Pull what the socket holds into libssh2's per-channel queues. */
static void sess_drain(struct ssh_sess *s)
{
	struct tr_ssh *c;
	char dummy[1];
	ssize_t n;

	for (c = s->chans; c != NULL; c = c->next)
		if (c->state == CHAN_OPEN && !c->failed && c->attached &&
		    (ssh_sess_may_send(s, BUSY_READ, c) || !ssh_chan_read_adjusts(c, 0)))
			break;
	if (c == NULL)
		return;
	n = libssh2_channel_read(c->ch, dummy, 0);
	if (n == LIBSSH2_ERROR_EAGAIN || n >= 0) {
		ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
		return;
	}
	if (ssh_rc_fatal((int)n))
		ssh_sess_fail_lost(s, LM_ERR_EOF);
}

/* Finish closing channels nobody holds. */
static void sess_closes(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;

	for (c = s->chans; c != NULL && s->state == SESS_READY; c = next) {
		int rc;

		next = c->next;
		if (c->state != CHAN_CLOSING)
			continue;
		if (!ssh_sess_may_send(s, BUSY_CLOSE, c))
			return;
		rc = libssh2_channel_free(c->ch);
		ssh_sess_note_busy(s, BUSY_CLOSE, c, rc == LIBSSH2_ERROR_EAGAIN);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			continue;
		c->ch = NULL;
		c->state = CHAN_DONE;
		if (ssh_rc_fatal(rc)) {
			ssh_sess_fail_lost(s, LM_ERR_EOF);
			return;
		}
	}
}

/* Free what is finished and held by nobody. */
static void sess_reap(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;

	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		if (!c->attached && c->state == CHAN_DONE) {
			sess_unlink_chan(s, c);
			ssh_chan_free_mem(c);
		}
	}
}

/*
 * Resume a half-sent read or write first (other operations' steps resume
 * themselves): a destroyed channel's too, whose buffer is kept for it.
 */
static void sess_resume(struct ssh_sess *s)
{
	struct tr_ssh *c = s->busy_chan;
	enum busy_op op = s->busy;
	char dummy[1];
	ssize_t n;

	if (op == BUSY_READ) {
		n = libssh2_channel_read(c->ch, dummy, 0);
		ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
	} else if (op == BUSY_WRITE) {
		n = libssh2_channel_write(c->ch, c->out, c->out_len);
		ssh_sess_note_busy(s, BUSY_WRITE, c, n == LIBSSH2_ERROR_EAGAIN);
		if (n > 0) {
			memmove(c->out, c->out + n, c->out_len - (size_t)n);
			c->out_len -= (size_t)n;
		}
	} else {
		return;
	}
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
		if (ssh_rc_fatal((int)n)) {
			ssh_sess_fail_lost(s, LM_ERR_EOF);
			return;
		}
		ssh_chan_failf(c, LM_ERR_IO, "%s failed: %s", op == BUSY_READ ? "read" : "write",
			       ssh_sess_errmsg(s));
	}
	if (s->busy == BUSY_NONE && c->close_after_busy) {
		c->close_after_busy = 0;
		ssh_chan_start_close(c);
	}
}

static void chan_wake(struct tr_ssh *c)
{
	if (c->base.wake != NULL)
		c->base.wake(c->base.wake_arg);
	else
		c->s->kick = 1;
}

/*
 * Does c's user have something to read it may not know of? libssh2 pulls
 * every channel's packets off the socket, so the fd may show nothing.
 * wake_outstanding (cleared by any call of the user) keeps one wake per
 * user action: a user that stopped reading is not woken in a loop.
 */
static int chan_needs_wake(struct tr_ssh *c)
{
	unsigned long avail = 0;

	if (!c->attached || c->wake_outstanding)
		return 0;
	if (c->failed)
		return c->was_open && !c->woke_failed;
	if (c->state != CHAN_OPEN)
		return 0;
	libssh2_channel_window_read_ex(c->ch, &avail, NULL);
	return avail > 0 || (!c->eof_seen && libssh2_channel_eof(c->ch));
}

/*
 * Wake the users that have something to read, and poke the watchers of
 * the socket when a connecting channel changed state (a user still
 * connecting only watches the fd). Runs from the kicker timer, one loop
 * iteration after the pump: a wake given while the user is inside one of
 * our calls would be lost when it re-arms its watcher on the way out.
 */
static void sess_notify(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL; c = c->next) {
		if (!chan_needs_wake(c))
			continue;
		c->wake_outstanding = 1;
		if (c->failed)
			c->woke_failed = 1;
		chan_wake(c);
	}
	if (s->kick && s->fd >= 0) {
		s->kick = 0;
		ev_feed_fd_event(s->loop, s->fd, EV_READ | EV_WRITE);
	}
}

static void sess_kicker_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	sess_notify(w->data);
}

static void sess_schedule_notify(struct ssh_sess *s)
{
	struct tr_ssh *c;
	int need = s->kick;

	for (c = s->chans; c != NULL && !need; c = c->next)
		need = chan_needs_wake(c);
	if (need && !ev_is_active(&s->kicker))
		ev_timer_start(s->loop, &s->kicker);
}

static void sess_update_io(struct ssh_sess *s)
{
	int ev = 0;

	if (s->state == SESS_TCP)
		ev = EV_WRITE;
	else if (s->state > SESS_TCP && s->state < SESS_DEAD)
		ev = EV_READ | ((ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? EV_WRITE : 0);
	if (ev == s->io_events && (ev == 0 || ev_is_active(&s->io)))
		return;
	ev_io_stop(s->loop, &s->io);
	s->io_events = ev;
	if (ev == 0 || s->fd < 0)
		return;
	ev_io_set(&s->io, s->fd, ev);
	ev_io_start(s->loop, &s->io);
}

/* Everything the session can do now. */
void ssh_pump(struct ssh_sess *s)
{
	int round;

	for (round = 0; round < 3; round++) {
		enum busy_op busy = s->busy;

		if (s->state > SESS_NEW && s->state < SESS_READY)
			ssh_sess_setup(s);
		if (s->state != SESS_READY)
			break;
		sess_resume(s);
		sess_opens(s);
		sess_writes(s);
		sess_drain(s);
		sess_closes(s);
		/* a busy operation that finished late in the round held back
		 * the steps before it: give them another go */
		if (s->busy != BUSY_NONE || busy == BUSY_NONE)
			break;
	}
	sess_reap(s);
	sess_schedule_notify(s);
	sess_update_io(s);
}

static void sess_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	ssh_pump(w->data);
}

static void sess_keepalive_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ssh_sess *s = w->data;
	int next = 0, outq = 0, rc;

	(void)loop;
	(void)revents;
	if (s->state != SESS_READY)
		return;
	/* libssh2 cannot resume a partly sent keepalive (it lives on the stack
	 * of libssh2_keepalive_send): send only when nothing else is pending
	 * and the kernel's send queue is empty, so it goes out whole */
	if (s->busy != BUSY_NONE || ioctl(s->fd, TIOCOUTQ, &outq) < 0 || outq > 0)
		return;
	rc = libssh2_keepalive_send(s->ssh, &next);
	if (rc != 0 || (ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
		ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: keepalive failed: %s",
			      s->khname, ssh_sess_lost(s));
	ssh_pump(s);
}

/* ------------------------------------------------------------ the registry */

/* The session of the registry to (loop, tg's host and port, user), or NULL. */
struct ssh_sess *ssh_sess_find(struct ev_loop *loop, const struct tr_ssh_target *tg,
			       const char *user)
{
	struct ssh_sess *s;

	for (s = ssh_sessions; s != NULL; s = s->next)
		if (s->loop == loop && s->port == tg->port && strcmp(s->host, tg->host) == 0 &&
		    strcmp(s->user, user) == 0)
			break;
	return s;
}

/* Add a new channel c, held by its user, to s. */
void ssh_sess_attach(struct ssh_sess *s, struct tr_ssh *c)
{
	struct tr_ssh **pp = &s->chans;

	/* append: opens go in the order the channels were made */
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = c;
	s->nattached++;
}

struct ssh_sess *ssh_sess_new(struct ev_loop *loop, const struct tr_ssh_target *tg,
			      const char *user, const struct tr_opts *o)
{
	struct ssh_sess *s = calloc(1, sizeof(*s));
	int ok;

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->fd = -1;
	s->port = tg->port;
	s->accept_new = o->accept_new_hostkey;
	s->timeout = o->timeout > 0 ? o->timeout : SSH_DEFAULT_TIMEOUT;
	s->user = strdup(user);
	s->host = strdup(tg->host);
	if (tg->port == 22)
		s->khname = strdup(tg->host);
	else if (asprintf(&s->khname, "[%s]:%d", tg->host, tg->port) < 0)
		s->khname = NULL;
	s->known_hosts =
		o->known_hosts ? strdup(o->known_hosts) : ssh_home_path(".ssh/known_hosts");
	ok = s->user && s->host && s->khname && s->known_hosts && ssh_keys_collect(s, o) == 0;
	if (!ok) {
		ssh_sess_free(s);
		return NULL;
	}
	libssh2_init(0);
	s->inited = 1;
	ev_init(&s->io, sess_io_cb);
	s->io.data = s;
	ev_timer_init(&s->keepalive, sess_keepalive_cb, SSH_KEEPALIVE_S, SSH_KEEPALIVE_S);
	s->keepalive.data = s;
	ev_timer_init(&s->kicker, sess_kicker_cb, 0., 0.);
	s->kicker.data = s;
	s->next = ssh_sessions;
	ssh_sessions = s;
	s->registered = 1;
	return s;
}

void ssh_sess_free(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;
	int i;

	sess_unregister(s);
	ev_io_stop(s->loop, &s->io);
	ev_timer_stop(s->loop, &s->keepalive);
	ev_timer_stop(s->loop, &s->kicker);
	if (s->ssh != NULL) {
		if (s->state == SESS_READY && s->busy == BUSY_NONE)
			/* best effort, once: sshd logs a clean disconnect */
			(void)libssh2_session_disconnect(s->ssh, "livemerge done");
		if (s->agent != NULL) {
			libssh2_agent_disconnect(s->agent);
			libssh2_agent_free(s->agent);
		}
		/* with the socket shut down no libssh2 call can wait: closing
		 * channels and the session fail at once instead of EAGAIN */
		if (s->fd >= 0)
			shutdown(s->fd, SHUT_RDWR);
		for (c = s->chans; c != NULL; c = c->next)
			if (c->sftp != NULL)
				(void)libssh2_sftp_shutdown(c->sftp);
		libssh2_session_free(s->ssh);
	}
	if (s->inited)
		libssh2_exit();
	if (s->fd >= 0)
		close(s->fd);
	if (s->ai_list != NULL)
		freeaddrinfo(s->ai_list);
	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		ssh_chan_free_mem(c);
	}
	for (i = 0; i < s->nids; i++)
		free(s->ids[i]);
	free(s->ids);
	free(s->methods);
	free(s->known_hosts);
	free(s->user);
	free(s->host);
	free(s->khname);
	free(s);
}

/*
 * qmp/conn: one QMP monitor connection on a libev loop (see conn.h).
 *
 * Re-entrancy: user callbacks run only from dispatch points that hold a
 * busy count; qmp_conn_free() inside one marks the connection and the
 * outermost dispatch frees it on the way out.
 */
#include "conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct pending {
	struct pending *prev, *next;
	struct qmp_conn *conn;
	int64_t id;
	char *name;
	json_object *args; /* kept until sent */
	int sent;
	qmp_reply_cb cb;
	void *arg;
	ev_timer timer;
	double timeout;
};

enum conn_phase {
	PHASE_IDLE,
	PHASE_CONNECTING,
	PHASE_GREETING,
	PHASE_NEGOTIATING,
	PHASE_READY,
	PHASE_FAILED,
};

struct qmp_conn {
	struct ev_loop *loop;
	struct tr *t;
	struct qmp_conn_opts opts;
	struct qmp_parser *parser;

	enum conn_phase phase;
	struct lm_error err; /* sticky, valid in PHASE_FAILED */
	json_object *greeting_msg; /* owns the greeting */
	json_object *greeting;

	ev_io io;
	int io_events;
	int want_extra; /* directions the transport asked for at its last AGAIN */
	ev_timer connect_timer;

	char *out; /* bytes queued for the transport */
	size_t out_len, out_off, out_cap;

	struct pending *head, *tail; /* in order of execute */
	int npending;
	int64_t next_id;

	qmp_event_cb event_cb;
	void *event_arg;
	qmp_state_cb state_cb;
	void *state_arg;

	int busy;
	int free_requested;
	int freeing;
};

static void conn_really_free(struct qmp_conn *c);
static void conn_flush(struct qmp_conn *c);

static void conn_enter(struct qmp_conn *c)
{
	c->busy++;
}

/* Leave a dispatch point; returns 1 if the connection is gone. */
static int conn_leave(struct qmp_conn *c)
{
	if (--c->busy == 0 && c->free_requested) {
		conn_really_free(c);
		return 1;
	}
	return 0;
}

static void conn_update_io(struct qmp_conn *c)
{
	int ev = 0;
	int fd;

	if (c->phase == PHASE_FAILED || c->phase == PHASE_IDLE) {
		ev = 0;
	} else if (c->phase == PHASE_CONNECTING) {
		int w = tr_want(c->t);

		ev = ((w & TR_WANT_READ) ? EV_READ : 0) | ((w & TR_WANT_WRITE) ? EV_WRITE : 0);
	} else {
		ev = EV_READ;
		if (c->out_len > c->out_off)
			ev |= EV_WRITE;
		if (c->want_extra & TR_WANT_WRITE)
			ev |= EV_WRITE;
	}
	if (ev == c->io_events && (ev == 0 || ev_is_active(&c->io)))
		return;
	ev_io_stop(c->loop, &c->io);
	c->io_events = ev;
	if (ev == 0)
		return;
	fd = tr_fd(c->t);
	if (fd < 0)
		return;
	ev_io_set(&c->io, fd, ev);
	ev_io_start(c->loop, &c->io);
}

static void pending_unlink(struct qmp_conn *c, struct pending *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		c->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		c->tail = p->prev;
	c->npending--;
	ev_timer_stop(c->loop, &p->timer);
}

static void pending_free(struct pending *p)
{
	free(p->name);
	json_object_put(p->args);
	free(p);
}

/* Unlink p, run its callback once, free it. */
static void pending_finish(struct qmp_conn *c, struct pending *p, json_object *ret,
			   const struct lm_error *err)
{
	pending_unlink(c, p);
	if (p->cb != NULL)
		p->cb(c, ret, err, p->arg);
	pending_free(p);
}

/* Run every pending callback with the sticky error. Caller holds busy. */
static void conn_fail_pending(struct qmp_conn *c)
{
	while (c->head != NULL) {
		struct pending *p = c->head;
		struct lm_error perr = c->err;

		if (p->name != NULL && strcmp(p->name, "qmp_capabilities") != 0)
			lm_error_prefix(&perr, "%s: ", p->name);
		pending_finish(c, p, NULL, &perr);
	}
}

static void conn_fail(struct qmp_conn *c, const struct lm_error *err)
{
	if (c->phase == PHASE_FAILED)
		return;
	c->phase = PHASE_FAILED;
	c->err = *err;
	ev_io_stop(c->loop, &c->io);
	c->io_events = 0;
	ev_timer_stop(c->loop, &c->connect_timer);
	conn_enter(c);
	conn_fail_pending(c);
	if (c->state_cb != NULL && !c->freeing)
		c->state_cb(c, &c->err, c->state_arg);
	conn_leave(c);
}

static void conn_failf(struct qmp_conn *c, enum lm_err_code code, const char *msg)
{
	struct lm_error e;

	lm_error_set(&e, code, "%s: %s", c->t->desc, msg);
	conn_fail(c, &e);
}

static int conn_queue_bytes(struct qmp_conn *c, const char *buf, size_t len)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *nb;

		if (c->out_off > 0) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		while (cap < c->out_len + len)
			cap *= 2;
		if (cap != c->out_cap) {
			nb = realloc(c->out, cap);
			if (nb == NULL)
				return -1;
			c->out = nb;
			c->out_cap = cap;
		}
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	return 0;
}

static int conn_send(struct qmp_conn *c, struct pending *p)
{
	size_t len;
	char *s = qmp_encode_command(p->name, p->args, p->id, &len);

	if (s == NULL || conn_queue_bytes(c, s, len) < 0) {
		free(s);
		return -1;
	}
	if (c->opts.trace != NULL)
		fprintf(c->opts.trace, "-> %s", s);
	free(s);
	p->sent = 1;
	json_object_put(p->args);
	p->args = NULL;
	return 0;
}

static void conn_send_waiting(struct qmp_conn *c)
{
	struct pending *p;

	for (p = c->head; p != NULL; p = p->next) {
		if (p->sent)
			continue;
		if (conn_send(c, p) < 0) {
			conn_failf(c, LM_ERR_NOMEM, "out of memory");
			return;
		}
	}
	conn_flush(c);
}

static void conn_flush(struct qmp_conn *c)
{
	struct lm_error e;

	while (c->phase != PHASE_FAILED && c->out_off < c->out_len) {
		ssize_t n = tr_write(c->t, c->out + c->out_off, c->out_len - c->out_off, &e);

		if (n == TR_AGAIN) {
			c->want_extra = tr_want(c->t);
			break;
		}
		if (n < 0) {
			conn_fail(c, &e);
			return;
		}
		c->want_extra = 0;
		c->out_off += (size_t)n;
	}
	conn_update_io(c);
}

static void pending_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pending *p = (struct pending *)((char *)w - offsetof(struct pending, timer));
	struct qmp_conn *c = p->conn;
	struct lm_error e;

	(void)loop;
	(void)revents;
	/* %g, not %.0f: a 0.5 s timeout must not read "within 0 s" */
	lm_error_set(&e, LM_ERR_TIMEOUT, "%s: no reply from QEMU within %g s", p->name,
		     p->timeout);
	conn_enter(c);
	pending_finish(c, p, NULL, &e);
	conn_leave(c);
}

static int conn_execute_internal(struct qmp_conn *c, const char *name, json_object *args,
				 double timeout, qmp_reply_cb cb, void *arg, struct lm_error *err)
{
	struct pending *p;

	if (c->phase == PHASE_FAILED) {
		if (err != NULL) {
			*err = c->err;
			lm_error_prefix(err, "%s: ", name);
		}
		return -1;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->name = strdup(name)) == NULL) {
		free(p);
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	p->conn = c;
	p->id = c->next_id++;
	p->args = args ? json_object_get(args) : NULL;
	p->cb = cb;
	p->arg = arg;
	p->timeout = timeout < 0 ? c->opts.command_timeout : timeout;
	ev_timer_init(&p->timer, pending_timeout_cb, p->timeout, 0.);
	if (p->timeout > 0)
		ev_timer_start(c->loop, &p->timer);
	p->prev = c->tail;
	if (c->tail)
		c->tail->next = p;
	else
		c->head = p;
	c->tail = p;
	c->npending++;
	return 0;
}

static void conn_negotiated_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			       void *arg)
{
	(void)ret;
	(void)arg;
	if (err != NULL) {
		struct lm_error e = *err;

		if (c->phase == PHASE_FAILED)
			return;
		lm_error_prefix(&e, "%s: capabilities negotiation failed: ", c->t->desc);
		if (e.code == LM_ERR_QMP)
			e.code = LM_ERR_PROTO;
		conn_fail(c, &e);
		return;
	}
	ev_timer_stop(c->loop, &c->connect_timer);
	c->phase = PHASE_READY;
	conn_send_waiting(c);
	if (c->phase == PHASE_READY && c->state_cb != NULL)
		c->state_cb(c, NULL, c->state_arg);
}

static void conn_on_greeting(struct qmp_conn *c, struct qmp_msg *m)
{
	struct lm_error e;
	struct pending *p;

	if (c->phase != PHASE_GREETING) {
		conn_failf(c, LM_ERR_PROTO, "QMP protocol error: unexpected second greeting");
		return;
	}
	c->greeting_msg = json_object_get(m->root);
	c->greeting = m->greeting;
	c->phase = PHASE_NEGOTIATING;
	/* qmp_capabilities goes first, ahead of anything queued already */
	if (conn_execute_internal(c, "qmp_capabilities", NULL, 0, conn_negotiated_cb, NULL, &e) < 0) {
		conn_fail(c, &e);
		return;
	}
	p = c->tail;
	if (p != c->head) {
		c->tail = p->prev;
		c->tail->next = NULL;
		p->prev = NULL;
		p->next = c->head;
		c->head->prev = p;
		c->head = p;
	}
	if (conn_send(c, p) < 0) {
		conn_failf(c, LM_ERR_NOMEM, "out of memory");
		return;
	}
	conn_flush(c);
}

static struct pending *conn_find(struct qmp_conn *c, int64_t id)
{
	struct pending *p;

	/* unsent commands too: a reply to one is a protocol error, not a
	 * late reply to be ignored (see conn_on_reply) */
	for (p = c->head; p != NULL; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

static void conn_on_reply(struct qmp_conn *c, struct qmp_msg *m)
{
	struct pending *p;
	int64_t id;

	if (m->id == NULL) {
		if (m->type == QMP_MSG_ERROR) {
			char msg[400];

			snprintf(msg, sizeof(msg), "QEMU could not parse our input: %s",
				 m->err_desc);
			conn_failf(c, LM_ERR_PROTO, msg);
		} else {
			conn_failf(c, LM_ERR_PROTO, "QMP protocol error: reply without id");
		}
		return;
	}
	if (!json_object_is_type(m->id, json_type_int)) {
		conn_failf(c, LM_ERR_PROTO, "QMP protocol error: reply with an id we never sent");
		return;
	}
	id = json_object_get_int64(m->id);
	p = conn_find(c, id);
	if (p == NULL) {
		if (id >= 1 && id < c->next_id) /* timed out earlier: a late reply */
			return;
		conn_failf(c, LM_ERR_PROTO, "QMP protocol error: reply with an id we never sent");
		return;
	}
	if (!p->sent) { /* still queued (e.g. during negotiation): QEMU never saw it */
		conn_failf(c, LM_ERR_PROTO, "QMP protocol error: reply with an id we never sent");
		return;
	}
	if (m->type == QMP_MSG_RETURN) {
		pending_finish(c, p, m->ret, NULL);
	} else {
		struct lm_error e;

		lm_error_set(&e, LM_ERR_QMP, "%s: %s", p->name, m->err_desc);
		snprintf(e.qmp_class, sizeof(e.qmp_class), "%s", m->err_class);
		pending_finish(c, p, NULL, &e);
	}
}

static void conn_dispatch(struct qmp_conn *c, struct qmp_msg *m)
{
	if (c->opts.trace != NULL)
		fprintf(c->opts.trace, "<- %s\n",
			json_object_to_json_string_ext(m->root, JSON_C_TO_STRING_PLAIN));
	switch (m->type) {
	case QMP_MSG_GREETING:
		conn_on_greeting(c, m);
		break;
	case QMP_MSG_EVENT:
		if (c->event_cb != NULL)
			c->event_cb(c, m, c->event_arg);
		break;
	case QMP_MSG_RETURN:
	case QMP_MSG_ERROR:
		if (c->phase == PHASE_GREETING) {
			conn_failf(c, LM_ERR_PROTO, "QMP protocol error: reply before the greeting");
			break;
		}
		conn_on_reply(c, m);
		break;
	}
}

static void conn_read(struct qmp_conn *c)
{
	char buf[65536];
	struct lm_error e;
	int rounds;

	/* bounded rounds: a fast peer must not starve other connections */
	for (rounds = 0; rounds < 16 && c->phase != PHASE_FAILED && !c->free_requested; rounds++) {
		ssize_t n = tr_read(c->t, buf, sizeof(buf), &e);
		struct qmp_msg *m;
		int r;

		if (n == TR_AGAIN) {
			c->want_extra = tr_want(c->t);
			break;
		}
		if (n < 0) {
			conn_fail(c, &e);
			return;
		}
		if (n == 0) {
			if (qmp_parser_pending(c->parser) > 0)
				conn_failf(c, LM_ERR_EOF,
					   "connection closed in the middle of a message");
			else if (c->phase == PHASE_GREETING)
				conn_failf(c, LM_ERR_EOF, "connection closed before the QMP greeting");
			else
				conn_failf(c, LM_ERR_EOF, "QEMU closed the monitor connection");
			return;
		}
		c->want_extra = 0;
		if (qmp_parser_feed(c->parser, buf, (size_t)n, &e) < 0) {
			conn_fail(c, &e);
			return;
		}
		while ((r = qmp_parser_next(c->parser, &m, &e)) == 1) {
			conn_dispatch(c, m);
			qmp_msg_free(m);
			if (c->phase == PHASE_FAILED || c->free_requested)
				return;
		}
		if (r < 0) {
			lm_error_prefix(&e, "%s: ", c->t->desc);
			conn_fail(c, &e);
			return;
		}
	}
}

static void conn_connect_step(struct qmp_conn *c)
{
	struct lm_error e;
	int r = tr_connect(c->t, &e);

	if (r < 0) {
		conn_fail(c, &e);
		return;
	}
	if (r == 0)
		c->phase = PHASE_GREETING;
	conn_update_io(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct qmp_conn *c = w->data;

	(void)loop;
	conn_enter(c);
	if (c->phase == PHASE_CONNECTING) {
		conn_connect_step(c);
	} else {
		if ((revents & EV_WRITE) && c->phase != PHASE_FAILED)
			conn_flush(c);
		if ((revents & EV_READ) && c->phase != PHASE_FAILED)
			conn_read(c);
		if (c->phase != PHASE_FAILED && !c->free_requested)
			conn_update_io(c);
	}
	conn_leave(c);
}

static void conn_wake(void *arg)
{
	struct qmp_conn *c = arg;

	if (c->phase == PHASE_FAILED || c->phase == PHASE_CONNECTING || c->phase == PHASE_IDLE)
		return;
	ev_feed_event(c->loop, &c->io, EV_READ);
}

static void conn_connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qmp_conn *c = w->data;
	const char *what;
	char msg[128];

	(void)loop;
	(void)revents;
	switch (c->phase) {
	case PHASE_CONNECTING: what = "connecting"; break;
	case PHASE_GREETING: what = "waiting for the QMP greeting"; break;
	default: what = "negotiating QMP capabilities"; break;
	}
	/* %g: a sub-second timeout must not read "after 0 s" */
	snprintf(msg, sizeof(msg), "timed out after %g s %s", c->opts.connect_timeout, what);
	conn_enter(c);
	conn_failf(c, LM_ERR_TIMEOUT, msg);
	conn_leave(c);
}

struct qmp_conn *qmp_conn_new(struct ev_loop *loop, struct tr *t, const struct qmp_conn_opts *opts)
{
	struct qmp_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		tr_free(t);
		return NULL;
	}
	if (opts != NULL)
		c->opts = *opts;
	if (c->opts.connect_timeout <= 0)
		c->opts.connect_timeout = 10;
	c->parser = qmp_parser_new(&c->opts.limits);
	if (c->parser == NULL) {
		tr_free(t);
		free(c);
		return NULL;
	}
	c->loop = loop;
	c->t = t;
	c->next_id = 1;
	c->phase = PHASE_IDLE;
	ev_init(&c->io, conn_io_cb);
	c->io.data = c;
	ev_timer_init(&c->connect_timer, conn_connect_timeout_cb, c->opts.connect_timeout, 0.);
	c->connect_timer.data = c;
	t->wake = conn_wake;
	t->wake_arg = c;
	return c;
}

void qmp_conn_set_event_cb(struct qmp_conn *c, qmp_event_cb cb, void *arg)
{
	c->event_cb = cb;
	c->event_arg = arg;
}

void qmp_conn_set_state_cb(struct qmp_conn *c, qmp_state_cb cb, void *arg)
{
	c->state_cb = cb;
	c->state_arg = arg;
}

int qmp_conn_start(struct qmp_conn *c, struct lm_error *err)
{
	int r;

	if (c->phase == PHASE_FAILED) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	if (c->phase != PHASE_IDLE)
		return 0;
	c->phase = PHASE_CONNECTING;
	r = tr_connect(c->t, &c->err);
	if (r < 0) {
		c->phase = PHASE_FAILED;
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	ev_timer_start(c->loop, &c->connect_timer);
	if (r == 0)
		c->phase = PHASE_GREETING;
	conn_update_io(c);
	return 0;
}

int qmp_conn_execute(struct qmp_conn *c, const char *name, json_object *args, double timeout,
		     qmp_reply_cb cb, void *arg, struct lm_error *err)
{
	if (conn_execute_internal(c, name, args, timeout, cb, arg, err) < 0)
		return -1;
	if (c->phase == PHASE_READY) {
		if (conn_send(c, c->tail) < 0) {
			struct pending *p = c->tail;

			pending_unlink(c, p);
			pending_free(p);
			return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		}
		/* flushed from the loop, so cb never runs inside execute */
		conn_update_io(c);
	}
	return 0;
}

struct ev_loop *qmp_conn_loop(const struct qmp_conn *c)
{
	return c->loop;
}

int qmp_conn_ready(const struct qmp_conn *c)
{
	return c->phase == PHASE_READY;
}

const struct lm_error *qmp_conn_error(const struct qmp_conn *c)
{
	return c->phase == PHASE_FAILED ? &c->err : NULL;
}

json_object *qmp_conn_greeting(const struct qmp_conn *c)
{
	return c->greeting;
}

int qmp_conn_qemu_version(const struct qmp_conn *c)
{
	json_object *v, *q;
	int maj = 0, min = 0, mic = 0;

	if (c->greeting == NULL || !json_object_object_get_ex(c->greeting, "version", &v) ||
	    !json_object_object_get_ex(v, "qemu", &q))
		return 0;
	if (json_object_object_get_ex(q, "major", &v))
		maj = json_object_get_int(v);
	if (json_object_object_get_ex(q, "minor", &v))
		min = json_object_get_int(v);
	if (json_object_object_get_ex(q, "micro", &v))
		mic = json_object_get_int(v);
	return maj * 10000 + min * 100 + mic;
}

const char *qmp_conn_desc(const struct qmp_conn *c)
{
	return c->t->desc;
}

int qmp_conn_pending(const struct qmp_conn *c)
{
	return c->npending;
}

static void conn_really_free(struct qmp_conn *c)
{
	struct lm_error e;

	c->freeing = 1;
	c->busy++; /* callbacks below must not free again */
	lm_error_set(&e, LM_ERR_EOF, "%s: connection closed", c->t->desc);
	conn_fail(c, &e);
	/* conn_fail() does nothing on a connection that failed already; commands
	 * queued before a qmp_conn_start() that failed at once are still here:
	 * they run with that failure, once, and are freed */
	conn_fail_pending(c);
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->connect_timer);
	qmp_parser_free(c->parser);
	json_object_put(c->greeting_msg);
	tr_free(c->t);
	free(c->out);
	free(c);
}

void qmp_conn_free(struct qmp_conn *c)
{
	if (c == NULL || c->freeing)
		return;
	if (c->busy > 0) {
		c->free_requested = 1;
		return;
	}
	conn_really_free(c);
}

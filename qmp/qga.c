/*
 * qmp/qga: guest agent client (see qga.h).
 *
 * States: DISCONNECTED -> CONNECTING -> SYNCING (0xFF + guest-sync-delimited
 * sent, dropping input up to the 0xFF sentinel, then waiting for our id) ->
 * IDLE <-> BUSY (one command in flight). After a timeout the next command
 * first resyncs on the same channel: the agent may still answer the
 * timed-out command, and only a fresh sync id tells that reply apart from
 * the next one. A closed or broken channel is final (DEAD): every queued
 * command fails, as do later ones.
 */
#include "qga.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "proto.h"

struct qga_framer {
	struct qmp_parser *p;
	int syncing;       /* waiting for the sync reply */
	int sentinel_seen; /* the 0xFF before it came */
	int64_t sync_id;
	struct lm_error err;
	int failed;
};

struct qga_framer *qga_framer_new(void)
{
	struct qga_framer *f = calloc(1, sizeof(*f));

	if (f != NULL && (f->p = qmp_parser_new(NULL)) == NULL) {
		free(f);
		return NULL;
	}
	return f;
}

void qga_framer_sync(struct qga_framer *f, int64_t id)
{
	struct qmp_parser *np = qmp_parser_new(NULL);

	/* whatever was half-read belongs to a stale reply */
	if (np != NULL) {
		qmp_parser_free(f->p);
		f->p = np;
		f->failed = 0;
	}
	f->syncing = 1;
	f->sentinel_seen = 0;
	f->sync_id = id;
}

int qga_framer_feed(struct qga_framer *f, const char *buf, size_t len, struct lm_error *err)
{
	if (f->failed) {
		if (err != NULL)
			*err = f->err;
		return -1;
	}
	/* Until the sync completes every 0xFF starts the dropping over: an
	 * earlier client's unread "\xff{return: old-id}" may come before ours,
	 * and 0xFF is no JSON (test-qga: test_framer_stale_sentinel). */
	while (f->syncing) {
		const char *ff = memchr(buf, 0xFF, len);

		if (ff == NULL) {
			if (!f->sentinel_seen)
				return 0;
			break;
		}
		if (f->sentinel_seen) {
			struct qmp_parser *np = qmp_parser_new(NULL);

			if (np == NULL) {
				f->failed = 1;
				lm_error_set(&f->err, LM_ERR_NOMEM, "out of memory");
				if (err != NULL)
					*err = f->err;
				return -1;
			}
			qmp_parser_free(f->p); /* held only stale bytes */
			f->p = np;
		}
		f->sentinel_seen = 1;
		len -= (size_t)(ff + 1 - buf);
		buf = ff + 1;
	}
	if (qmp_parser_feed(f->p, buf, len, &f->err) < 0) {
		f->failed = 1;
		if (err != NULL)
			*err = f->err;
		return -1;
	}
	return 0;
}

int qga_framer_next(struct qga_framer *f, struct qmp_msg **out, struct lm_error *err)
{
	for (;;) {
		int r = qmp_parser_next(f->p, out, &f->err);

		if (r < 0) {
			f->failed = 1;
			if (err != NULL)
				*err = f->err;
			return -1;
		}
		if (r == 0)
			return 0;
		if (!f->syncing)
			return 1;
		/* only our id ends the sync; anything else is stale */
		if ((*out)->type == QMP_MSG_RETURN && json_object_is_type((*out)->ret, json_type_int) &&
		    json_object_get_int64((*out)->ret) == f->sync_id) {
			f->syncing = 0;
			qmp_msg_free(*out);
			*out = NULL;
			return 2;
		}
		qmp_msg_free(*out);
		*out = NULL;
	}
}

void qga_framer_free(struct qga_framer *f)
{
	if (f == NULL)
		return;
	qmp_parser_free(f->p);
	free(f);
}

enum qga_state { QGA_DISCONNECTED, QGA_CONNECTING, QGA_SYNCING, QGA_IDLE, QGA_BUSY, QGA_DEAD };

struct qga_cmd {
	struct qga_cmd *next;
	char *name;
	json_object *args;
	qga_reply_cb cb;
	void *arg;
};

struct qga {
	struct ev_loop *loop;
	struct tr *t;
	double timeout;
	enum qga_state state;
	struct qga_framer *fr;
	int need_sync; /* a command timed out: resync before the next */
	int64_t sync_id;
	struct lm_error err; /* why the channel is DEAD */

	char *out;
	size_t out_len, out_off;

	struct qga_cmd *head, *tail; /* head is in flight while BUSY */
	ev_io io;
	ev_timer timer;
	ev_idle kick; /* starts work from the loop, never inside qga_execute */
	int busy, free_requested;
};

static void qga_really_free(struct qga *q);
static void qga_advance(struct qga *q);

static void qga_leave(struct qga *q)
{
	if (--q->busy == 0 && q->free_requested)
		qga_really_free(q);
}

static void qga_update_io(struct qga *q)
{
	int ev = 0, w = tr_want(q->t);

	if (q->state == QGA_DISCONNECTED || q->state == QGA_DEAD) {
		ev_io_stop(q->loop, &q->io);
		return;
	}
	if (q->state == QGA_CONNECTING)
		ev = ((w & TR_WANT_READ) ? EV_READ : 0) | ((w & TR_WANT_WRITE) ? EV_WRITE : 0);
	else
		ev = EV_READ | (q->out_off < q->out_len ? EV_WRITE : 0);
	ev_io_stop(q->loop, &q->io);
	if (ev != 0 && tr_fd(q->t) >= 0) {
		ev_io_set(&q->io, tr_fd(q->t), ev);
		ev_io_start(q->loop, &q->io);
	}
}

/* The channel is broken: stop watching it for good. */
static void qga_disconnect(struct qga *q)
{
	ev_io_stop(q->loop, &q->io);
	ev_timer_stop(q->loop, &q->timer);
	free(q->out);
	q->out = NULL;
	q->out_len = q->out_off = 0;
	q->state = QGA_DEAD;
}

static void qga_cmd_free(struct qga_cmd *c)
{
	free(c->name);
	json_object_put(c->args);
	free(c);
}

/* Finish the head command with ret or err. */
static void qga_finish_head(struct qga *q, json_object *ret, const struct lm_error *err)
{
	struct qga_cmd *c = q->head;

	if (c == NULL)
		return;
	q->head = c->next;
	if (q->head == NULL)
		q->tail = NULL;
	c->cb(q, ret, err, c->arg);
	qga_cmd_free(c);
}

/* The channel failed: fail every command, now and later (sticky). */
static void qga_fail(struct qga *q, const struct lm_error *err)
{
	qga_disconnect(q);
	q->err = *err;
	while (q->head != NULL)
		qga_finish_head(q, NULL, &q->err);
}

static int qga_queue(struct qga *q, const char *buf, size_t len)
{
	char *nb = realloc(q->out, q->out_len + len);

	if (nb == NULL)
		return -1;
	q->out = nb;
	memcpy(q->out + q->out_len, buf, len);
	q->out_len += len;
	return 0;
}

static void qga_arm_timer(struct qga *q)
{
	ev_timer_stop(q->loop, &q->timer);
	ev_timer_set(&q->timer, q->timeout, 0.);
	ev_timer_start(q->loop, &q->timer);
}

static void qga_send_sync(struct qga *q)
{
	char buf[160];
	uint32_t r = 0;
	int n;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)ev_now(q->loop) ^ (uint32_t)(uintptr_t)q;
	q->sync_id = (int64_t)(r & 0x7fffffff) + 1;
	buf[0] = (char)0xFF;
	n = snprintf(buf + 1, sizeof(buf) - 1,
		     "{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%lld}}\n",
		     (long long)q->sync_id);
	q->state = QGA_SYNCING;
	qga_framer_sync(q->fr, q->sync_id);
	if (qga_queue(q, buf, (size_t)n + 1) < 0) {
		struct lm_error e;

		lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
		qga_fail(q, &e);
		return;
	}
	qga_arm_timer(q);
}

static void qga_send_head(struct qga *q)
{
	struct qga_cmd *c = q->head;
	json_object *o = json_object_new_object();
	const char *s;

	json_object_object_add(o, "execute", json_object_new_string(c->name));
	if (c->args != NULL)
		json_object_object_add(o, "arguments", json_object_get(c->args));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	if (qga_queue(q, s, strlen(s)) < 0 || qga_queue(q, "\n", 1) < 0) {
		struct lm_error e;

		json_object_put(o);
		lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
		qga_fail(q, &e);
		return;
	}
	json_object_put(o);
	q->state = QGA_BUSY;
	qga_arm_timer(q);
}

static void qga_flush(struct qga *q)
{
	struct lm_error e;

	while (q->out_off < q->out_len) {
		ssize_t n = tr_write(q->t, q->out + q->out_off, q->out_len - q->out_off, &e);

		if (n == TR_AGAIN)
			break;
		if (n < 0) {
			qga_fail(q, &e);
			return;
		}
		q->out_off += (size_t)n;
	}
	if (q->out_off == q->out_len) {
		free(q->out);
		q->out = NULL;
		q->out_len = q->out_off = 0;
	}
}

/* A message after the sync. */
static void qga_on_message(struct qga *q, struct qmp_msg *m)
{
	struct lm_error e;

	if (q->state != QGA_BUSY)
		return; /* nothing asked: stale */
	ev_timer_stop(q->loop, &q->timer);
	q->state = QGA_IDLE;
	if (m->type == QMP_MSG_RETURN) {
		qga_finish_head(q, m->ret, NULL);
	} else if (m->type == QMP_MSG_ERROR) {
		lm_error_set(&e, LM_ERR_QMP, "guest agent: %s: %s", q->head->name, m->err_desc);
		snprintf(e.qmp_class, sizeof(e.qmp_class), "%s", m->err_class);
		qga_finish_head(q, NULL, &e);
	} else {
		lm_error_set(&e, LM_ERR_PROTO, "guest agent: unexpected message");
		qga_fail(q, &e);
		return;
	}
	qga_advance(q);
}

static void qga_read(struct qga *q)
{
	char buf[16384];
	struct lm_error e;

	for (;;) {
		ssize_t n = tr_read(q->t, buf, sizeof(buf), &e);
		struct qmp_msg *m;
		int r;

		if (n == TR_AGAIN)
			return;
		if (n <= 0) {
			if (n == 0)
				lm_error_set(&e, LM_ERR_EOF, "%s: guest agent channel closed",
					     q->t->desc);
			qga_fail(q, &e);
			return;
		}
		if (qga_framer_feed(q->fr, buf, (size_t)n, &e) < 0) {
			lm_error_prefix(&e, "guest agent %s: ", q->t->desc);
			qga_fail(q, &e);
			return;
		}
		while ((r = qga_framer_next(q->fr, &m, &e)) > 0) {
			if (r == 2) {
				ev_timer_stop(q->loop, &q->timer);
				q->state = QGA_IDLE;
				qga_advance(q);
			} else {
				qga_on_message(q, m);
				qmp_msg_free(m);
			}
			if (q->free_requested || q->state == QGA_DEAD)
				return;
		}
		if (r < 0) {
			lm_error_prefix(&e, "guest agent %s: ", q->t->desc);
			qga_fail(q, &e);
			return;
		}
	}
}

/* Move on: connect, sync, or send the next command, as the state needs. */
static void qga_advance(struct qga *q)
{
	struct lm_error e;
	int r;

	if (q->head == NULL || q->free_requested)
		goto out;
	switch (q->state) {
	case QGA_DEAD:
		while (q->head != NULL)
			qga_finish_head(q, NULL, &q->err);
		return;
	case QGA_DISCONNECTED:
		q->state = QGA_CONNECTING;
		qga_arm_timer(q);
		/* fallthrough */
	case QGA_CONNECTING:
		r = tr_connect(q->t, &e);
		if (r < 0) {
			qga_fail(q, &e);
			goto out;
		}
		if (r == 1)
			goto out;
		qga_send_sync(q);
		break;
	case QGA_IDLE:
		if (q->need_sync) {
			q->need_sync = 0;
			qga_send_sync(q);
		} else {
			qga_send_head(q);
		}
		break;
	default:
		break;
	}
	if (q->state != QGA_DEAD)
		qga_flush(q);
out:
	qga_update_io(q);
}

static void qga_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct qga *q = w->data;

	(void)loop;
	q->busy++;
	if (q->state == QGA_CONNECTING) {
		qga_advance(q);
	} else {
		if (revents & EV_WRITE)
			qga_flush(q);
		if ((revents & EV_READ) && q->state != QGA_DEAD)
			qga_read(q);
		if (!q->free_requested)
			qga_update_io(q);
	}
	qga_leave(q);
}

static void qga_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qga *q = w->data;
	struct lm_error e;

	(void)loop;
	(void)revents;
	q->busy++;
	if (q->state == QGA_BUSY) {
		lm_error_set(&e, LM_ERR_TIMEOUT, "guest agent %s: %s: no answer within %.0f s",
			     q->t->desc, q->head->name, q->timeout);
		q->state = QGA_IDLE;
		q->need_sync = 1;
		qga_finish_head(q, NULL, &e);
		qga_advance(q);
	} else {
		lm_error_set(&e, LM_ERR_TIMEOUT,
			     "guest agent %s: no answer within %.0f s (is qemu-ga running in the "
			     "guest?)", q->t->desc, q->timeout);
		qga_fail(q, &e);
	}
	qga_leave(q);
}

static void qga_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct qga *q = w->data;

	(void)revents;
	ev_idle_stop(loop, w);
	q->busy++;
	qga_advance(q);
	qga_leave(q);
}

struct qga *qga_new(struct ev_loop *loop, struct tr *t, double timeout)
{
	struct qga *q = calloc(1, sizeof(*q));

	if (q == NULL) {
		tr_free(t);
		return NULL;
	}
	q->fr = qga_framer_new();
	if (q->fr == NULL) {
		tr_free(t);
		free(q);
		return NULL;
	}
	q->loop = loop;
	q->t = t;
	q->timeout = timeout > 0 ? timeout : 10;
	q->state = QGA_DISCONNECTED;
	ev_init(&q->io, qga_io_cb);
	q->io.data = q;
	ev_init(&q->timer, qga_timer_cb);
	q->timer.data = q;
	ev_idle_init(&q->kick, qga_kick_cb);
	q->kick.data = q;
	return q;
}

int qga_execute(struct qga *q, const char *name, json_object *args, qga_reply_cb cb, void *arg,
		struct lm_error *err)
{
	struct qga_cmd *c = calloc(1, sizeof(*c));

	if (c == NULL || (c->name = strdup(name)) == NULL) {
		free(c);
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	c->args = args ? json_object_get(args) : NULL;
	c->cb = cb;
	c->arg = arg;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	ev_idle_start(q->loop, &q->kick);
	return 0;
}

const char *qga_desc(const struct qga *q)
{
	return q->t->desc;
}

static void qga_really_free(struct qga *q)
{
	struct lm_error e;

	q->busy++;
	q->free_requested = 1;
	ev_idle_stop(q->loop, &q->kick);
	qga_disconnect(q);
	lm_error_set(&e, LM_ERR_EOF, "guest agent %s: connection closed", q->t->desc);
	while (q->head != NULL)
		qga_finish_head(q, NULL, &e);
	qga_framer_free(q->fr);
	tr_free(q->t);
	free(q);
}

void qga_free(struct qga *q)
{
	if (q == NULL)
		return;
	if (q->busy > 0) {
		q->free_requested = 1;
		return;
	}
	qga_really_free(q);
}

/*
 * test-qga: the guest agent client (qmp/qga) against a fake agent played by
 * the test on the other end of a socketpair, and its framer alone.
 *
 * The fake agent reads what the client sends (0xFF bytes reset its parser,
 * as qemu-ga's does), logs it ("FF", "sync", "cmd:NAME") and answers through
 * a per-test handler; it can answer late (timers) and close. Every test
 * runs the real libev loop under a watchdog; callbacks only record, the
 * assertions come after the loop. At the end every command callback must
 * have run exactly once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../qmp/qga.h"
#include "testutil.h"

#define MAX_RECS 16
#define MAX_HELD 8

struct fixture;

struct rec {
	struct fixture *fx;
	int calls;
	int ok;
	json_object *ret;
	struct lm_error err;
	int seq;
	int free_q;           /* qga_free() from inside this callback */
	const char *then_exec; /* qga_execute() this from inside the callback */
	struct rec *then_rec;
};

struct agent {
	struct fixture *fx;
	int fd;
	ev_io io;
	json_tokener *tok;
	char log[2048];
	int64_t sync_ids[8];
	int nsync;
	int ncmds;
	json_object *held[MAX_HELD]; /* commands left unanswered, in order */
	int nheld;
	int eof;
	/* a write the agent makes later (to answer late) */
	ev_timer later;
	char *later_text;
	size_t later_len;
	/* bytes dribbled out one at a time */
	ev_timer drip;
	char *drip_buf;
	size_t drip_len, drip_off;
	void (*on_cmd)(struct agent *a, const char *name, json_object *cmd);
};

struct fixture {
	struct ev_loop *loop;
	struct qga *q;
	struct agent a;
	struct rec recs[MAX_RECS];
	int nrecs;
	int seq;
	int mode; /* per-test switch for the handlers */
};

/* ----------------------------------------------------------- the fake agent */

static void agent_log(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void agent_log(struct agent *a, const char *fmt, ...)
{
	size_t n = strlen(a->log);
	va_list ap;

	if (n > 0 && n < sizeof(a->log) - 1)
		a->log[n++] = ' ';
	va_start(ap, fmt);
	vsnprintf(a->log + n, sizeof(a->log) - n, fmt, ap);
	va_end(ap);
}

static void agent_write(struct agent *a, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(a->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail_msg("agent write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static void agent_say(struct agent *a, const char *text)
{
	agent_write(a, text, strlen(text));
}

static void agent_sayf(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void agent_sayf(struct agent *a, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	agent_say(a, buf);
}

/* What qemu-ga answers to guest-sync-delimited: the sentinel, then the id. */
static void agent_sync_reply(struct agent *a, int64_t id)
{
	agent_sayf(a, "\xff{\"return\": %lld}\n", (long long)id);
}

static void agent_close(struct agent *a)
{
	if (a->fd < 0)
		return;
	ev_io_stop(a->fx->loop, &a->io);
	close(a->fd);
	a->fd = -1;
}

static void agent_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;

	(void)loop;
	(void)revents;
	if (a->fd >= 0)
		agent_write(a, a->later_text, a->later_len);
	free(a->later_text);
	a->later_text = NULL;
}

/* Write text after secs. */
static void agent_say_later(struct agent *a, const char *text, double secs)
{
	assert_null(a->later_text);
	a->later_text = strdup(text);
	a->later_len = strlen(text);
	ev_timer_set(&a->later, secs, 0.);
	ev_timer_start(a->fx->loop, &a->later);
}

static void agent_drip_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;

	(void)revents;
	if (a->fd >= 0 && a->drip_off < a->drip_len)
		agent_write(a, a->drip_buf + a->drip_off++, 1);
	if (a->drip_off == a->drip_len || a->fd < 0) {
		ev_timer_stop(loop, w);
		free(a->drip_buf);
		a->drip_buf = NULL;
		a->drip_len = a->drip_off = 0;
	}
}

/* Write text one byte per millisecond (after what is still dripping). */
static void agent_drip(struct agent *a, const char *text, size_t len)
{
	a->drip_buf = realloc(a->drip_buf, a->drip_len + len);
	assert_non_null(a->drip_buf);
	memcpy(a->drip_buf + a->drip_len, text, len);
	a->drip_len += len;
	if (!ev_is_active(&a->drip)) {
		ev_timer_set(&a->drip, 0.001, 0.001);
		ev_timer_start(a->fx->loop, &a->drip);
	}
}

static void agent_on_object(struct agent *a, json_object *o)
{
	json_object *name, *args, *id;
	const char *n;

	if (!json_object_object_get_ex(o, "execute", &name) ||
	    !json_object_is_type(name, json_type_string))
		fail_msg("the client sent something that is no command: %s",
			 json_object_to_json_string(o));
	n = json_object_get_string(name);
	if (strcmp(n, "guest-sync-delimited") == 0) {
		assert_true(json_object_object_get_ex(o, "arguments", &args));
		assert_true(json_object_object_get_ex(args, "id", &id));
		assert_true(json_object_is_type(id, json_type_int));
		assert_true(json_object_get_int64(id) > 0);
		assert_true(a->nsync < 8);
		a->sync_ids[a->nsync++] = json_object_get_int64(id);
		agent_log(a, "sync");
	} else {
		a->ncmds++;
		agent_log(a, "cmd:%s", n);
	}
	if (a->on_cmd != NULL)
		a->on_cmd(a, n, o);
}

static void agent_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct agent *a = w->data;
	char buf[4096];
	ssize_t n;

	(void)loop;
	(void)revents;
	n = read(a->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		a->eof = 1;
		agent_log(a, "EOF");
		agent_close(a);
		return;
	}
	for (ssize_t i = 0; i < n && a->fd >= 0;) {
		json_object *o;
		enum json_tokener_error jerr;
		ssize_t end = i;

		if ((unsigned char)buf[i] == 0xFF) {
			/* qemu-ga's parser resets on the invalid byte */
			agent_log(a, "FF");
			json_tokener_reset(a->tok);
			i++;
			continue;
		}
		while (end < n && (unsigned char)buf[end] != 0xFF)
			end++;
		o = json_tokener_parse_ex(a->tok, buf + i, (int)(end - i));
		jerr = json_tokener_get_error(a->tok);
		if (jerr == json_tokener_continue) {
			i = end;
			continue;
		}
		if (jerr != json_tokener_success)
			fail_msg("the client sent bad JSON: %.*s", (int)(end - i), buf + i);
		i += (ssize_t)json_tokener_get_parse_end(a->tok);
		while (i < end && strchr(" \r\n\t", buf[i]) != NULL)
			i++;
		agent_on_object(a, o);
		json_object_put(o);
	}
}

/* Keep cmd unanswered (to answer later, or never). */
static void agent_hold(struct agent *a, json_object *cmd)
{
	assert_true(a->nheld < MAX_HELD);
	a->held[a->nheld++] = json_object_get(cmd);
}

/* --------------------------------------------------------------- the loop */

#define RUN_UNTIL(fx, cond, secs) TEST_RUN_UNTIL((fx)->loop, cond, secs, (void)0)
#define run_for(fx, secs) test_run_for((fx)->loop, (secs))

/* --------------------------------------------------------------- fixture */

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	int sv[2];

	if (fx == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	fx->loop = ev_loop_new(EVFLAG_AUTO);
	fx->a.fx = fx;
	fx->a.fd = sv[0];
	fx->a.tok = json_tokener_new();
	ev_io_init(&fx->a.io, agent_read_cb, sv[0], EV_READ);
	fx->a.io.data = &fx->a;
	ev_io_start(fx->loop, &fx->a.io);
	ev_init(&fx->a.later, agent_later_cb);
	fx->a.later.data = &fx->a;
	ev_init(&fx->a.drip, agent_drip_cb);
	fx->a.drip.data = &fx->a;
	*state = fx;
	/* the client end */
	{
		struct lm_error err;
		struct tr *t = tr_new_fd(sv[1], "qga-test", &err);

		if (t == NULL)
			return -1;
		fx->q = qga_new(fx->loop, t, 0.5);
		if (fx->q == NULL)
			return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int i;

	qga_free(fx->q);
	agent_close(&fx->a);
	ev_timer_stop(fx->loop, &fx->a.later);
	ev_timer_stop(fx->loop, &fx->a.drip);
	free(fx->a.later_text);
	free(fx->a.drip_buf);
	json_tokener_free(fx->a.tok);
	for (i = 0; i < fx->a.nheld; i++)
		json_object_put(fx->a.held[i]);
	for (i = 0; i < fx->nrecs; i++)
		json_object_put(fx->recs[i].ret);
	ev_loop_destroy(fx->loop);
	free(fx);
	return 0;
}

static void reply_cb(struct qga *q, json_object *ret, const struct lm_error *err, void *arg)
{
	struct rec *r = arg;

	r->calls++;
	r->seq = ++r->fx->seq;
	if (ret != NULL && err != NULL)
		fail_msg("callback with both a return and an error");
	if (err != NULL) {
		r->ok = 0;
		r->err = *err;
	} else {
		r->ok = 1;
		if (ret == NULL)
			fail_msg("success without a return value");
		json_object_put(r->ret);
		r->ret = json_object_get(ret);
	}
	if (r->then_exec != NULL) {
		struct lm_error e;

		r->then_rec->fx = r->fx;
		assert_int_equal(qga_execute(q, r->then_exec, NULL, reply_cb, r->then_rec, &e), 0);
		assert_int_equal(r->then_rec->calls, 0);
	}
	if (r->free_q) {
		qga_free(q);
		r->fx->q = NULL;
	}
}

static struct rec *exec(struct fixture *fx, const char *name, const char *args_json)
{
	struct rec *r;
	struct lm_error err;
	json_object *args = args_json ? json_tokener_parse(args_json) : NULL;

	assert_true(fx->nrecs < MAX_RECS);
	r = &fx->recs[fx->nrecs++];
	r->fx = fx;
	if (qga_execute(fx->q, name, args, reply_cb, r, &err) < 0)
		fail_msg("qga_execute %s: %s", name, err.msg);
	json_object_put(args);
	/* never from inside qga_execute */
	assert_int_equal(r->calls, 0);
	return r;
}

static struct rec *new_rec(struct fixture *fx)
{
	assert_true(fx->nrecs < MAX_RECS);
	fx->recs[fx->nrecs].fx = fx;
	return &fx->recs[fx->nrecs++];
}

static int all_called(struct fixture *fx)
{
	for (int i = 0; i < fx->nrecs; i++)
		if (fx->recs[i].calls == 0)
			return 0;
	return 1;
}

static void assert_once(struct fixture *fx)
{
	for (int i = 0; i < fx->nrecs; i++)
		if (fx->recs[i].calls != 1)
			fail_msg("callback %d ran %d times", i, fx->recs[i].calls);
}

static void assert_ok(const struct rec *r, const char *ret_json)
{
	json_object *want;

	if (!r->ok)
		fail_msg("expected success, got %s: %s", lm_error_code_name(r->err.code), r->err.msg);
	want = json_tokener_parse(ret_json);
	assert_non_null(want);
	if (!json_object_equal(want, r->ret)) {
		json_object_put(want);
		fail_msg("return %s, expected %s", json_object_to_json_string(r->ret), ret_json);
	}
	json_object_put(want);
}

static void assert_err(const struct rec *r, enum lm_err_code code, const char *needle)
{
	if (r->ok)
		fail_msg("expected %s, got success", lm_error_code_name(code));
	if (r->err.code != code)
		fail_msg("expected %s, got %s: %s", lm_error_code_name(code),
			 lm_error_code_name(r->err.code), r->err.msg);
	if (needle != NULL && strstr(r->err.msg, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", r->err.msg, needle);
}

static void assert_log(struct fixture *fx, const char *want)
{
	if (strcmp(fx->a.log, want) != 0)
		fail_msg("agent saw \"%s\", expected \"%s\"", fx->a.log, want);
}

/* ------------------------------------------------------------- handlers */

/* A well-behaved agent: stale output first, then the sentinel and the id;
 * freeze answers 2, thaw 2, ping {}, anything else {"ok": NAME}. */
static void agent_good(struct agent *a, const char *name, json_object *cmd)
{
	(void)cmd;
	if (strcmp(name, "guest-sync-delimited") == 0) {
		/* what an earlier client left unread: junk, a stale reply */
		agent_say(a, "\x01junk}{\"ret");
		agent_say(a, "{\"return\": {\"stale\": true}}\n");
		/* a stale reply with a wrong id after the sentinel is dropped too */
		agent_say(a, "\xff{\"return\": 4242}\n");
		agent_sayf(a, "{\"return\": %lld}\n", (long long)a->sync_ids[a->nsync - 1]);
	} else if (strcmp(name, "guest-fsfreeze-freeze") == 0 ||
		   strcmp(name, "guest-fsfreeze-thaw") == 0) {
		agent_say(a, "{\"return\": 2}\n");
	} else if (strcmp(name, "guest-ping") == 0) {
		agent_say(a, "{\"return\": {}}\n");
	} else {
		agent_sayf(a, "{\"return\": {\"ok\": \"%s\"}}\n", name);
	}
}

/* ---------------------------------------------------------------- tests */

static void test_sync_then_command(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2;

	fx->a.on_cmd = agent_good;
	r1 = exec(fx, "guest-fsfreeze-freeze", NULL);
	/* nothing goes out before the loop runs */
	assert_int_equal(fx->a.log[0], '\0');
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_ok(r1, "2");
	/* 0xFF, then the sync, then (only after the id came back) the command */
	assert_log(fx, "FF sync cmd:guest-fsfreeze-freeze");
	assert_int_equal(fx->a.nsync, 1);
	/* later commands need no new sync */
	r2 = exec(fx, "guest-fsfreeze-thaw", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_ok(r2, "2");
	assert_log(fx, "FF sync cmd:guest-fsfreeze-freeze cmd:guest-fsfreeze-thaw");
	assert_true(r1->seq < r2->seq);
	assert_once(fx);
}

static void agent_args(struct agent *a, const char *name, json_object *cmd)
{
	json_object *args;

	if (strcmp(name, "guest-sync-delimited") == 0) {
		agent_sync_reply(a, a->sync_ids[a->nsync - 1]);
		return;
	}
	/* echo the arguments */
	if (json_object_object_get_ex(cmd, "arguments", &args))
		agent_sayf(a, "{\"return\": %s}\n", json_object_to_json_string(args));
	else
		agent_say(a, "{\"return\": \"no arguments\"}\n");
}

static void test_commands_in_order_with_args(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2, *r3;

	fx->a.on_cmd = agent_args;
	r1 = exec(fx, "guest-exec-status", "{\"pid\": 7}");
	r2 = exec(fx, "guest-ping", NULL);
	r3 = exec(fx, "guest-fsfreeze-freeze-list", "{\"mountpoints\": [\"/\", \"/var\"]}");
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_ok(r1, "{\"pid\": 7}");
	assert_ok(r2, "\"no arguments\"");
	assert_ok(r3, "{\"mountpoints\": [\"/\", \"/var\"]}");
	assert_true(r1->seq < r2->seq && r2->seq < r3->seq);
	/* one at a time, one sync */
	assert_log(fx, "FF sync cmd:guest-exec-status cmd:guest-ping cmd:guest-fsfreeze-freeze-list");
	assert_once(fx);
}

/* The sync reply and the answer trickle in one byte at a time. */
static void agent_slow(struct agent *a, const char *name, json_object *cmd)
{
	char buf[256];
	int n;

	(void)cmd;
	if (strcmp(name, "guest-sync-delimited") == 0)
		n = snprintf(buf, sizeof(buf), "{\"return\": 1}\n\xff{\"return\": %lld}\n",
			     (long long)a->sync_ids[a->nsync - 1]);
	else
		n = snprintf(buf, sizeof(buf), "{\"return\":\n {\"frozen\": 3}}\n");
	agent_drip(a, buf, (size_t)n);
}

static void test_sync_reply_in_pieces(void **state)
{
	struct fixture *fx = *state;
	struct rec *r;

	fx->a.on_cmd = agent_slow;
	r = exec(fx, "guest-info", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_ok(r, "{\"frozen\": 3}");
	assert_log(fx, "FF sync cmd:guest-info");
	assert_once(fx);
}

/*
 * A sentinel and sync reply left over from an earlier client (killed while
 * it synced) come before the agent's answer to ours: the stale id must be
 * dropped like any stale reply, and the sync must still complete.
 */
static void agent_stale_sentinel(struct agent *a, const char *name, json_object *cmd)
{
	(void)cmd;
	if (strcmp(name, "guest-sync-delimited") == 0) {
		agent_say(a, "\xff{\"return\": 1}\n");
		agent_sync_reply(a, a->sync_ids[a->nsync - 1]);
	} else {
		agent_say(a, "{\"return\": {}}\n");
	}
}

static void test_stale_sentinel_before_sync(void **state)
{
	struct fixture *fx = *state;
	struct rec *r;

	fx->a.on_cmd = agent_stale_sentinel;
	r = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_ok(r, "{}");
	assert_log(fx, "FF sync cmd:guest-ping");
	assert_once(fx);
}

static void agent_refuses(struct agent *a, const char *name, json_object *cmd)
{
	(void)cmd;
	if (strcmp(name, "guest-sync-delimited") == 0)
		agent_sync_reply(a, a->sync_ids[a->nsync - 1]);
	else if (strcmp(name, "guest-fsfreeze-freeze") == 0)
		agent_say(a, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Command "
			     "guest-fsfreeze-freeze has been disabled\"}}\n");
	else
		agent_say(a, "{\"return\": {}}\n");
}

static void test_error_reply(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2;

	fx->a.on_cmd = agent_refuses;
	r1 = exec(fx, "guest-fsfreeze-freeze", NULL);
	r2 = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_err(r1, LM_ERR_QMP, "has been disabled");
	assert_string_equal(r1->err.qmp_class, "GenericError");
	assert_non_null(strstr(r1->err.msg, "guest-fsfreeze-freeze"));
	/* an error is an answer: no resync before the next command */
	assert_ok(r2, "{}");
	assert_log(fx, "FF sync cmd:guest-fsfreeze-freeze cmd:guest-ping");
	assert_once(fx);
}

/* Never answers guest-info; mode 1: answers it late, during the next sync
 * (before the sentinel); mode 2: answers it late while the client idles. */
static void agent_slow_info(struct agent *a, const char *name, json_object *cmd)
{
	struct fixture *fx = a->fx;

	if (strcmp(name, "guest-sync-delimited") == 0) {
		if (a->nsync == 2 && fx->mode == 1)
			agent_say(a, "{\"return\": {\"late\": true}}\n");
		agent_sync_reply(a, a->sync_ids[a->nsync - 1]);
	} else if (strcmp(name, "guest-info") == 0) {
		agent_hold(a, cmd);
		if (fx->mode == 2)
			agent_say_later(a, "{\"return\": {\"late\": true}}\n", 0.6);
	} else {
		agent_say(a, "{\"return\": {\"fresh\": true}}\n");
	}
}

static void timeout_then_resync(struct fixture *fx, int mode)
{
	struct rec *r1, *r2;
	ev_tstamp t0;

	fx->mode = mode;
	fx->a.on_cmd = agent_slow_info;
	t0 = ev_now(fx->loop);
	r1 = exec(fx, "guest-info", NULL);
	RUN_UNTIL(fx, r1->calls > 0, 5);
	ev_now_update(fx->loop);
	assert_err(r1, LM_ERR_TIMEOUT, "guest-info");
	assert_true(ev_now(fx->loop) - t0 >= 0.45);
	assert_log(fx, "FF sync cmd:guest-info");
	if (mode == 2)
		run_for(fx, 0.4); /* the late reply arrives while nothing is asked */
	r2 = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	/* the next command resynced first, with a new id, and got its own reply */
	assert_log(fx, "FF sync cmd:guest-info FF sync cmd:guest-ping");
	assert_int_equal(fx->a.nsync, 2);
	assert_true(fx->a.sync_ids[0] != fx->a.sync_ids[1]);
	assert_ok(r2, "{\"fresh\": true}");
	assert_once(fx);
}

static void test_timeout_resync_late_reply_in_sync(void **state)
{
	timeout_then_resync(*state, 1);
}

static void test_timeout_resync_late_reply_idle(void **state)
{
	timeout_then_resync(*state, 2);
}

/* A command issued from the timed-out command's callback resyncs too. */
static void test_timeout_then_exec_from_callback(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2 = new_rec(fx);

	fx->mode = 1;
	fx->a.on_cmd = agent_slow_info;
	r1 = new_rec(fx);
	r1->then_exec = "guest-ping";
	r1->then_rec = r2;
	{
		struct lm_error err;

		assert_int_equal(qga_execute(fx->q, "guest-info", NULL, reply_cb, r1, &err), 0);
	}
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_err(r1, LM_ERR_TIMEOUT, NULL);
	assert_ok(r2, "{\"fresh\": true}");
	assert_log(fx, "FF sync cmd:guest-info FF sync cmd:guest-ping");
	assert_once(fx);
}

static void agent_mute(struct agent *a, const char *name, json_object *cmd)
{
	(void)a;
	(void)name;
	(void)cmd;
}

/* No answer to the sync: the agent is not there; that is final. */
static void test_sync_timeout_is_final(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2, *r3;

	fx->a.on_cmd = agent_mute;
	r1 = exec(fx, "guest-ping", NULL);
	r2 = exec(fx, "guest-info", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_err(r1, LM_ERR_TIMEOUT, "qemu-ga");
	assert_err(r2, LM_ERR_TIMEOUT, "qemu-ga");
	r3 = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_err(r3, LM_ERR_TIMEOUT, NULL);
	assert_log(fx, "FF sync");
	assert_once(fx);
}

/* mode 0: close on the first command; mode 1: close on the sync. */
static void agent_closes(struct agent *a, const char *name, json_object *cmd)
{
	(void)cmd;
	if (strcmp(name, "guest-sync-delimited") == 0 && a->fx->mode == 0) {
		agent_sync_reply(a, a->sync_ids[a->nsync - 1]);
		return;
	}
	agent_close(a);
}

static void eof_fails_all(struct fixture *fx, int mode)
{
	struct rec *r[3], *later;
	int i;

	fx->mode = mode;
	fx->a.on_cmd = agent_closes;
	for (i = 0; i < 3; i++)
		r[i] = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	for (i = 0; i < 3; i++)
		assert_err(r[i], LM_ERR_EOF, NULL);
	/* ... exactly once, and nothing more happens */
	run_for(fx, 0.05);
	assert_once(fx);
	/* later commands fail too (not from inside qga_execute) */
	later = exec(fx, "guest-ping", NULL);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_err(later, LM_ERR_EOF, NULL);
	assert_log(fx, mode == 0 ? "FF sync cmd:guest-ping" : "FF sync");
	assert_once(fx);
}

static void test_eof_fails_every_command(void **state)
{
	eof_fails_all(*state, 0);
}

static void test_eof_during_sync(void **state)
{
	eof_fails_all(*state, 1);
}

static void test_free_in_callback(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2, *r3;

	fx->a.on_cmd = agent_good;
	r1 = exec(fx, "guest-ping", NULL);
	r2 = exec(fx, "guest-ping", NULL);
	r3 = exec(fx, "guest-ping", NULL);
	r1->free_q = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_null(fx->q);
	assert_ok(r1, "{}");
	assert_err(r2, LM_ERR_EOF, "closed");
	assert_err(r3, LM_ERR_EOF, "closed");
	/* the agent sees the channel close; nothing else went out */
	RUN_UNTIL(fx, fx->a.eof, 5);
	assert_log(fx, "FF sync cmd:guest-ping EOF");
	assert_once(fx);
}

/* Freed from inside a failure callback (EOF), with more queued behind it. */
static void test_free_in_failure_callback(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2;

	fx->mode = 0;
	fx->a.on_cmd = agent_closes;
	r1 = exec(fx, "guest-ping", NULL);
	r2 = exec(fx, "guest-ping", NULL);
	r1->free_q = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_null(fx->q);
	assert_err(r1, LM_ERR_EOF, NULL);
	assert_err(r2, LM_ERR_EOF, NULL);
	run_for(fx, 0.05);
	assert_once(fx);
}

/* Freed from inside a timeout callback. */
static void test_free_in_timeout_callback(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2;

	fx->mode = 0;
	fx->a.on_cmd = agent_slow_info;
	r1 = exec(fx, "guest-info", NULL);
	r2 = exec(fx, "guest-ping", NULL);
	r1->free_q = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_null(fx->q);
	assert_err(r1, LM_ERR_TIMEOUT, NULL);
	assert_err(r2, LM_ERR_EOF, "closed");
	run_for(fx, 0.05);
	assert_once(fx);
}

/* qga_free outside callbacks fails what is queued, at once. */
static void test_free_with_queued(void **state)
{
	struct fixture *fx = *state;
	struct rec *r1, *r2;

	fx->a.on_cmd = agent_mute;
	r1 = exec(fx, "guest-ping", NULL);
	run_for(fx, 0.05); /* syncing now */
	r2 = exec(fx, "guest-ping", NULL);
	qga_free(fx->q);
	fx->q = NULL;
	assert_err(r1, LM_ERR_EOF, "closed");
	assert_err(r2, LM_ERR_EOF, "closed");
	assert_once(fx);
	qga_free(NULL);
}

static void test_desc(void **state)
{
	struct fixture *fx = *state;

	assert_string_equal(qga_desc(fx->q), "qga-test");
}

/* -------------------------------------------------------- framer alone */

struct fres {
	int syncs;
	int msgs;
	int failed;
	char seen[512]; /* "S" for the sync, "R<json>" / "E<class>" per message */
};

static void framer_drain(struct qga_framer *f, struct fres *res)
{
	struct qmp_msg *m = NULL;
	struct lm_error e;
	int r;

	while ((r = qga_framer_next(f, &m, &e)) > 0) {
		size_t n = strlen(res->seen);

		if (r == 2) {
			res->syncs++;
			assert_null(m);
			snprintf(res->seen + n, sizeof(res->seen) - n, "S;");
			continue;
		}
		assert_non_null(m);
		res->msgs++;
		if (m->type == QMP_MSG_RETURN)
			snprintf(res->seen + n, sizeof(res->seen) - n, "R%s;",
				 json_object_to_json_string_ext(m->ret, JSON_C_TO_STRING_PLAIN));
		else if (m->type == QMP_MSG_ERROR)
			snprintf(res->seen + n, sizeof(res->seen) - n, "E%s;", m->err_class);
		else
			snprintf(res->seen + n, sizeof(res->seen) - n, "?;");
		qmp_msg_free(m);
		m = NULL;
	}
	if (r < 0)
		res->failed = 1;
}

/* Feed buf in pieces at the given cut points (sorted, within len). */
static void framer_run(const char *buf, size_t len, const size_t *cuts, int ncuts, int64_t id,
		       struct fres *res)
{
	struct qga_framer *f = qga_framer_new();
	struct lm_error e;
	size_t off = 0;
	int i;

	assert_non_null(f);
	memset(res, 0, sizeof(*res));
	qga_framer_sync(f, id);
	for (i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;

		if (end > off && qga_framer_feed(f, buf + off, end - off, &e) < 0)
			res->failed = 1;
		off = end;
		if (!res->failed)
			framer_drain(f, res);
	}
	qga_framer_free(f);
}

static const char stream[] = "\x01junk{\"return\": {\"stale\": 1}}\n"
			     "\xff"
			     "{\"return\": 5}\n"
			     "{\"return\": \"77\"}\n"
			     "{\"return\": 77}\r\n"
			     "{\"return\":\n {\"a\": 1}}\n"
			     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n";
static const char stream_want[] = "S;R{\"a\":1};EGenericError;";

static void test_framer_whole(void **state)
{
	struct fres res;

	(void)state;
	framer_run(stream, sizeof(stream) - 1, NULL, 0, 77, &res);
	assert_int_equal(res.failed, 0);
	assert_string_equal(res.seen, stream_want);
}

static void test_framer_split_everywhere(void **state)
{
	size_t len = sizeof(stream) - 1, i, j;
	struct fres res;

	(void)state;
	for (i = 0; i <= len; i++) {
		framer_run(stream, len, &i, 1, 77, &res);
		if (res.failed || strcmp(res.seen, stream_want) != 0)
			fail_msg("split at %zu: failed=%d seen %s", i, res.failed, res.seen);
	}
	/* two cuts, every pair */
	for (i = 0; i <= len; i++) {
		for (j = i; j <= len; j += 3) {
			size_t cuts[2] = { i, j };

			framer_run(stream, len, cuts, 2, 77, &res);
			if (res.failed || strcmp(res.seen, stream_want) != 0)
				fail_msg("split at %zu,%zu: failed=%d seen %s", i, j, res.failed,
					 res.seen);
		}
	}
}

static void test_framer_byte_by_byte(void **state)
{
	size_t len = sizeof(stream) - 1, i, cuts[sizeof(stream)];
	struct fres res;

	(void)state;
	for (i = 0; i < len; i++)
		cuts[i] = i + 1;
	framer_run(stream, len, cuts, (int)len, 77, &res);
	assert_int_equal(res.failed, 0);
	assert_string_equal(res.seen, stream_want);
}

static void test_framer_nothing_before_sentinel(void **state)
{
	static const char s[] = "{\"return\": 77}\n{\"return\": {}}\n";
	struct fres res;

	(void)state;
	/* without the sentinel even the right id is stale output */
	framer_run(s, sizeof(s) - 1, NULL, 0, 77, &res);
	assert_int_equal(res.failed, 0);
	assert_string_equal(res.seen, "");
}

static void test_framer_stale_sentinel(void **state)
{
	static const char s[] = "\xff{\"return\": 1}\n\xff{\"return\": 2}\n{\"return\": 3}\n";
	size_t len = sizeof(s) - 1, i;
	struct fres res;

	(void)state;
	for (i = 0; i <= len; i++) {
		framer_run(s, len, &i, 1, 2, &res);
		if (res.failed || strcmp(res.seen, "S;R3;") != 0)
			fail_msg("split at %zu: failed=%d seen %s", i, res.failed, res.seen);
	}
}

static void test_framer_errors_sticky(void **state)
{
	struct qga_framer *f = qga_framer_new();
	struct qmp_msg *m = NULL;
	struct lm_error e;
	struct fres res = { 0 };
	static const char bad[] = "\xff{\"return\": 9}\n[1, 2]\n";
	static const char good[] = "\xff{\"return\": 10}\n{\"return\": 1}\n";

	(void)state;
	qga_framer_sync(f, 9);
	assert_int_equal(qga_framer_feed(f, bad, sizeof(bad) - 1, &e), 0);
	assert_int_equal(qga_framer_next(f, &m, &e), 2);
	/* not an object: a protocol error, and it stays */
	assert_int_equal(qga_framer_next(f, &m, &e), -1);
	assert_int_equal(e.code, LM_ERR_PROTO);
	assert_int_equal(qga_framer_next(f, &m, &e), -1);
	assert_int_equal(qga_framer_feed(f, "{\"return\": 1}\n", 14, &e), -1);
	/* a new sync starts over */
	qga_framer_sync(f, 10);
	assert_int_equal(qga_framer_feed(f, good, sizeof(good) - 1, &e), 0);
	framer_drain(f, &res);
	assert_int_equal(res.failed, 0);
	assert_string_equal(res.seen, "S;R1;");
	qga_framer_free(f);
}

static void test_framer_resync_drops_half_message(void **state)
{
	struct qga_framer *f = qga_framer_new();
	struct lm_error e;
	struct fres res = { 0 };
	static const char a[] = "\xff{\"return\": 1}\n{\"return\": {\"half";
	static const char b[] = "\xff{\"return\": 2}\n{\"return\": true}\n";

	(void)state;
	qga_framer_sync(f, 1);
	assert_int_equal(qga_framer_feed(f, a, sizeof(a) - 1, &e), 0);
	framer_drain(f, &res);
	assert_string_equal(res.seen, "S;");
	qga_framer_sync(f, 2);
	assert_int_equal(qga_framer_feed(f, b, sizeof(b) - 1, &e), 0);
	framer_drain(f, &res);
	assert_int_equal(res.failed, 0);
	assert_string_equal(res.seen, "S;S;Rtrue;");
	qga_framer_free(f);
}

static void test_framer_no_sync_passes_through(void **state)
{
	struct qga_framer *f = qga_framer_new();
	struct lm_error e;
	struct fres res = { 0 };
	static const char s[] = "{\"return\": 1}\n{\"return\": 2}\n";

	(void)state;
	assert_int_equal(qga_framer_feed(f, s, sizeof(s) - 1, &e), 0);
	framer_drain(f, &res);
	assert_string_equal(res.seen, "R1;R2;");
	qga_framer_free(f);
	qga_framer_free(NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_sync_then_command),
		T(test_commands_in_order_with_args),
		T(test_sync_reply_in_pieces),
		T(test_stale_sentinel_before_sync),
		T(test_error_reply),
		T(test_timeout_resync_late_reply_in_sync),
		T(test_timeout_resync_late_reply_idle),
		T(test_timeout_then_exec_from_callback),
		T(test_sync_timeout_is_final),
		T(test_eof_fails_every_command),
		T(test_eof_during_sync),
		T(test_free_in_callback),
		T(test_free_in_failure_callback),
		T(test_free_in_timeout_callback),
		T(test_free_with_queued),
		T(test_desc),
		cmocka_unit_test(test_framer_whole),
		cmocka_unit_test(test_framer_split_everywhere),
		cmocka_unit_test(test_framer_byte_by_byte),
		cmocka_unit_test(test_framer_nothing_before_sentinel),
		cmocka_unit_test(test_framer_stale_sentinel),
		cmocka_unit_test(test_framer_errors_sticky),
		cmocka_unit_test(test_framer_resync_drops_half_message),
		cmocka_unit_test(test_framer_no_sync_passes_through),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test-conn: qmp/conn against the scripted fake QMP server (fakeqmp).
 *
 * Every test runs the real libev loop with a watchdog, so a hang fails the
 * test instead of blocking the run. Callbacks only record what they saw;
 * the assertions come after the loop returns. At the end of each test the
 * connection is freed and every command callback must have run exactly
 * once, and the fake must have used its whole script with no surprise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../qmp/conn.h"
#include "fakeqmp.h"
#include "testutil.h"

#define MAX_RECS 32
#define MAX_EVENTS 32

struct fixture;

struct reply_rec {
	struct fixture *fx;
	int calls;
	int ok;
	int ret_was_null;    /* success with ret NULL: contract broken */
	int both_set;        /* ret and err both non-NULL: contract broken */
	struct lm_error err;
	json_object *ret;    /* a reference taken in the callback */
	int seq;             /* order among all reply callbacks, from 1 */
	int events_seen;     /* events delivered before this callback ran */
	int free_conn;       /* free the connection from inside the callback */
	long index;          /* burst: the command's number */
	const char *then_exec;        /* execute this from inside the callback */
	struct reply_rec *then_rec;
	int then_rc;                  /* what that execute returned */
	int then_calls_at_return;     /* then_rec->calls right after it */
};

struct event_rec {
	char *name;
	json_object *data;
	int64_t ts_sec, ts_usec;
	int was_ready;
	int replies_seen;
};

struct fixture {
	struct ev_loop *loop;
	struct fq *fq;
	struct qmp_conn *c;

	struct reply_rec recs[MAX_RECS];
	int nrecs;
	struct reply_rec *many; /* burst tests */
	long nmany;
	int seq;

	struct event_rec events[MAX_EVENTS];
	int nevents;
	int free_in_event; /* free the connection at this event (1-based), 0 never */

	int state_ready, state_failed;
	struct lm_error state_err;
	int state_seq_ready; /* events seen when ready was reported */
	int free_in_state;
	int free_on_ready;
	struct throttle_tr *throttle; /* valid while fx->c lives */
};

/* --- a transport that writes and reads in small pieces ------------------ */

/*
 * Wraps a real transport: at most max_write bytes per write and max_read
 * per read, and every again_every-th call returns TR_AGAIN although the
 * socket is ready, so the connection's partial-write and AGAIN paths run
 * deterministically.
 */
struct throttle_tr {
	struct tr base;
	struct tr *inner;
	size_t max_write, max_read;
	int again_every;
	int want;
	long writes, reads;
	long write_agains, read_agains, short_writes;
};

static int throttle_connect(struct tr *t, struct lm_error *err)
{
	return tr_connect(((struct throttle_tr *)t)->inner, err);
}

static ssize_t throttle_read(struct tr *t, char *buf, size_t len, struct lm_error *err)
{
	struct throttle_tr *w = (struct throttle_tr *)t;
	ssize_t n;

	if (w->again_every > 0 && ++w->reads % w->again_every == 0) {
		w->read_agains++;
		w->want = TR_WANT_READ;
		return TR_AGAIN;
	}
	if (w->max_read > 0 && len > w->max_read)
		len = w->max_read;
	n = tr_read(w->inner, buf, len, err);
	if (n == TR_AGAIN)
		w->want = tr_want(w->inner);
	return n;
}

static ssize_t throttle_write(struct tr *t, const char *buf, size_t len, struct lm_error *err)
{
	struct throttle_tr *w = (struct throttle_tr *)t;
	ssize_t n;

	if (w->again_every > 0 && ++w->writes % w->again_every == 0) {
		w->write_agains++;
		w->want = TR_WANT_WRITE;
		return TR_AGAIN;
	}
	if (w->max_write > 0 && len > w->max_write) {
		len = w->max_write;
		w->short_writes++;
	}
	n = tr_write(w->inner, buf, len, err);
	if (n == TR_AGAIN) {
		w->write_agains++;
		w->want = tr_want(w->inner);
	}
	return n;
}

static int throttle_want(struct tr *t)
{
	return ((struct throttle_tr *)t)->want;
}

static int throttle_fd(struct tr *t)
{
	return tr_fd(((struct throttle_tr *)t)->inner);
}

static void throttle_destroy(struct tr *t)
{
	struct throttle_tr *w = (struct throttle_tr *)t;

	tr_free(w->inner);
	free(t->desc);
	free(w);
}

static const struct tr_ops throttle_ops = {
	.scheme = "throttle",
	.connect = throttle_connect,
	.read = throttle_read,
	.write = throttle_write,
	.want = throttle_want,
	.fd = throttle_fd,
	.destroy = throttle_destroy,
};

/* --- recording callbacks ------------------------------------------------- */

static void reply_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err, void *arg)
{
	struct reply_rec *r = arg;

	r->calls++;
	r->seq = ++r->fx->seq;
	r->events_seen = r->fx->nevents;
	if (ret != NULL && err != NULL)
		r->both_set = 1;
	if (err != NULL) {
		r->ok = 0;
		r->err = *err;
	} else {
		r->ok = 1;
		if (ret == NULL)
			r->ret_was_null = 1;
		json_object_put(r->ret);
		r->ret = json_object_get(ret);
	}
	if (r->then_exec != NULL) {
		struct lm_error e;

		r->then_rec->fx = r->fx;
		r->then_rc = qmp_conn_execute(c, r->then_exec, NULL, -1, reply_cb, r->then_rec, &e);
		r->then_calls_at_return = r->then_rec->calls;
	}
	if (r->free_conn) {
		qmp_conn_free(c);
		r->fx->c = NULL;
	}
}

static void event_cb(struct qmp_conn *c, const struct qmp_msg *ev, void *arg)
{
	struct fixture *fx = arg;
	struct event_rec *e;

	if (fx->nevents == MAX_EVENTS)
		return;
	e = &fx->events[fx->nevents++];
	e->name = strdup(ev->event);
	e->data = json_object_get(ev->data);
	e->ts_sec = ev->ts_sec;
	e->ts_usec = ev->ts_usec;
	e->was_ready = qmp_conn_ready(c);
	e->replies_seen = fx->seq;
	if (fx->free_in_event == fx->nevents) {
		qmp_conn_free(c);
		fx->c = NULL;
	}
}

static void state_cb(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct fixture *fx = arg;

	if (err == NULL) {
		fx->state_ready++;
		fx->state_seq_ready = fx->nevents;
		if (fx->free_on_ready) {
			qmp_conn_free(c);
			fx->c = NULL;
		}
		return;
	}
	fx->state_failed++;
	fx->state_err = *err;
	if (fx->free_in_state) {
		qmp_conn_free(c);
		fx->c = NULL;
	}
}

/* --- running the loop ------------------------------------------------------ */

#define RUN_UNTIL(fx, cond, secs) TEST_RUN_UNTIL((fx)->loop, cond, secs, (void)0)
#define run_for(fx, secs) test_run_for((fx)->loop, (secs))

/* --- fixture --------------------------------------------------------------- */

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	fx->loop = ev_loop_new(EVFLAG_AUTO);
	fx->fq = fq_new(fx->loop);
	*state = fx;
	return 0;
}

static void recs_free(struct reply_rec *r, long n)
{
	long i;

	for (i = 0; i < n; i++)
		json_object_put(r[i].ret);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int i;

	qmp_conn_free(fx->c);
	fq_free(fx->fq);
	recs_free(fx->recs, fx->nrecs);
	if (fx->many != NULL) {
		recs_free(fx->many, fx->nmany);
		free(fx->many);
	}
	for (i = 0; i < fx->nevents; i++) {
		free(fx->events[i].name);
		json_object_put(fx->events[i].data);
	}
	ev_loop_destroy(fx->loop);
	free(fx);
	return 0;
}

/* Connect a qmp_conn to the fake over a plain socket transport. */
static void fx_connect(struct fixture *fx, const struct qmp_conn_opts *opts)
{
	struct lm_error err;
	struct tr *t = tr_new_fd(fq_fd(fx->fq), "fake", &err);

	assert_non_null(t);
	fx->c = qmp_conn_new(fx->loop, t, opts);
	assert_non_null(fx->c);
	qmp_conn_set_event_cb(fx->c, event_cb, fx);
	qmp_conn_set_state_cb(fx->c, state_cb, fx);
}

/* The same through a throttling transport. */
static void fx_connect_throttled(struct fixture *fx, const struct qmp_conn_opts *opts,
				 size_t max_write, size_t max_read, int again_every)
{
	struct lm_error err;
	struct throttle_tr *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	w->inner = tr_new_fd(fq_fd(fx->fq), "fake", &err);
	assert_non_null(w->inner);
	w->base.ops = &throttle_ops;
	w->base.desc = strdup("throttled");
	w->max_write = max_write;
	w->max_read = max_read;
	w->again_every = again_every;
	w->want = TR_WANT_READ;
	fx->throttle = w;
	fx->c = qmp_conn_new(fx->loop, &w->base, opts);
	assert_non_null(fx->c);
	qmp_conn_set_event_cb(fx->c, event_cb, fx);
	qmp_conn_set_state_cb(fx->c, state_cb, fx);
}

static void fx_start(struct fixture *fx)
{
	struct lm_error err;

	assert_int_equal(qmp_conn_start(fx->c, &err), 0);
}

static struct reply_rec *fx_exec(struct fixture *fx, const char *name, const char *args_json,
				 double timeout)
{
	struct reply_rec *r;
	struct lm_error err;
	json_object *args = NULL;
	int rc;

	assert_true(fx->nrecs < MAX_RECS);
	r = &fx->recs[fx->nrecs++];
	r->fx = fx;
	if (args_json != NULL) {
		args = json_tokener_parse(args_json);
		assert_non_null(args);
	}
	rc = qmp_conn_execute(fx->c, name, args, timeout, reply_cb, r, &err);
	json_object_put(args); /* borrowed by execute */
	if (rc != 0)
		fail_msg("execute %s: %s", name, err.msg);
	/* the callback never runs from inside execute */
	assert_int_equal(r->calls, 0);
	return r;
}

static int all_called(const struct fixture *fx)
{
	int i;

	for (i = 0; i < fx->nrecs; i++)
		if (fx->recs[i].calls == 0)
			return 0;
	return 1;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void assert_rec_ok(const struct reply_rec *r, const char *ret_json)
{
	json_object *want;

	if (!r->ok)
		fail_msg("expected success, got %s: %s", lm_error_code_name(r->err.code),
			 r->err.msg);
	assert_int_equal(r->ret_was_null, 0);
	assert_int_equal(r->both_set, 0);
	if (ret_json != NULL) {
		want = json_tokener_parse(ret_json);
		assert_non_null(want);
		if (!json_object_equal(want, r->ret)) {
			json_object_put(want);
			fail_msg("return %s, expected %s",
				 json_object_to_json_string_ext(r->ret, JSON_C_TO_STRING_PLAIN),
				 ret_json);
		}
		json_object_put(want);
	}
}

static void assert_rec_err(const struct reply_rec *r, enum lm_err_code code, const char *needle)
{
	if (r->ok)
		fail_msg("expected error %s, got success", lm_error_code_name(code));
	assert_null(r->ret);
	if (r->err.code != code)
		fail_msg("expected error %s, got %s: %s", lm_error_code_name(code),
			 lm_error_code_name(r->err.code), r->err.msg);
	if (needle != NULL)
		assert_contains(r->err.msg, needle);
}

/*
 * End of a test: free the connection (what is still pending runs with
 * "connection closed"), let the fake see the EOF, then check that every
 * callback ran exactly once and the fake used its script.
 */
static void fx_finish(struct fixture *fx)
{
	long i;

	qmp_conn_free(fx->c);
	fx->c = NULL;
	RUN_UNTIL(fx, fq_done(fx->fq), 5);
	for (i = 0; i < fx->nrecs; i++)
		if (fx->recs[i].calls != 1)
			fail_msg("callback %ld ran %d times", i, fx->recs[i].calls);
	for (i = 0; i < fx->nmany; i++)
		if (fx->many[i].calls != 1)
			fail_msg("burst callback %ld ran %d times", i, fx->many[i].calls);
	assert_true(fx->state_ready <= 1);
	assert_true(fx->state_failed <= 1);
	assert_int_equal(fq_verify(fx->fq), 0);
}

/* --- negotiation ----------------------------------------------------------- */

static void test_negotiation_queues_commands(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;
	json_object *caps, *v;
	int hcaps;

	/* a pause before the greeting: anything the client sent early would
	 * reach the fake before qmp_capabilities and fail the script */
	fq_delay(fx->fq, 0.05);
	fq_greeting(fx->fq);
	hcaps = fq_command(fx->fq, "qmp_capabilities", NULL, "{}");
	fq_command(fx->fq, "query-status", NULL, "{\"status\": \"running\", \"running\": true}");
	fq_command(fx->fq, "query-name", NULL, "{\"name\": \"vm1\"}");

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, -1); /* before start */
	fx_start(fx);
	b = fx_exec(fx, "query-name", NULL, -1); /* before the greeting */
	assert_int_equal(qmp_conn_pending(fx->c), 2);
	assert_int_equal(qmp_conn_ready(fx->c), 0);
	assert_null(qmp_conn_greeting(fx->c));

	RUN_UNTIL(fx, all_called(fx), 5);
	assert_int_equal(fx->state_ready, 1);
	assert_int_equal(fx->state_failed, 0);
	assert_true(qmp_conn_ready(fx->c));
	assert_null(qmp_conn_error(fx->c));
	assert_int_equal(qmp_conn_qemu_version(fx->c), 70200);
	assert_non_null(qmp_conn_greeting(fx->c));
	assert_string_equal(qmp_conn_desc(fx->c), "fake");
	assert_rec_ok(a, "{\"status\": \"running\", \"running\": true}");
	assert_rec_ok(b, "{\"name\": \"vm1\"}");
	assert_true(a->seq < b->seq);
	assert_int_equal(qmp_conn_pending(fx->c), 0);

	/* qmp_capabilities went first, with no arguments and an integer id */
	assert_int_equal(fq_received(fx->fq), 3);
	caps = fq_command_json(fx->fq, hcaps);
	assert_non_null(caps);
	assert_false(json_object_object_get_ex(caps, "arguments", &v));
	assert_true(json_object_object_get_ex(caps, "id", &v));
	assert_true(json_object_is_type(v, json_type_int));
	fx_finish(fx);
}

static void test_greeting_one_byte_at_a_time(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	/* pretty-printed, as QEMU's pretty=on monitor sends it, a byte per 1 ms */
	fq_send(fx->fq, "{\n    \"QMP\": {\n        \"version\": {\n            \"qemu\": {\n"
			"                \"micro\": 1, \"minor\": 0, \"major\": 8\n            },\n"
			"            \"package\": \"\"\n        },\n        \"capabilities\": [\n"
			"        ]\n    }\n}\n");
	fq_split(fx->fq, 1, 0.001);
	fq_expect(fx->fq, "qmp_capabilities", NULL);
	fq_reply_return(fx->fq, "{}");
	fq_split(fx->fq, 1, 0.001);
	fq_expect(fx->fq, "query-status", NULL);
	fq_reply_return(fx->fq, "{\"status\": \"paused\", \"running\": false}");
	fq_split(fx->fq, 2, 0);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1, 10);
	assert_rec_ok(a, "{\"status\": \"paused\", \"running\": false}");
	assert_int_equal(qmp_conn_qemu_version(fx->c), 80001);
	fx_finish(fx);
}

static void test_negotiation_refused(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_greeting(fx->fq);
	fq_expect(fx->fq, "qmp_capabilities", NULL);
	fq_reply_error(fx->fq, "CommandNotFound",
		       "The command qmp_capabilities has not been found");

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, -1);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_ready, 0);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_contains(fx->state_err.msg, "capabilities negotiation failed");
	assert_contains(fx->state_err.msg, "has not been found");
	assert_int_equal(a->calls, 1);
	assert_rec_err(a, LM_ERR_PROTO, "query-status: ");
	fx_finish(fx);
}

static void test_no_greeting_connect_timeout(void **state)
{
	struct fixture *fx = *state;
	struct qmp_conn_opts opts = { .connect_timeout = 0.1 };
	struct reply_rec *a;
	double t0 = ev_time();

	/* the script is empty: the fake never says anything */
	fx_connect(fx, &opts);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_true(ev_time() - t0 >= 0.09);
	assert_true(ev_time() - t0 < 2);
	assert_int_equal(fx->state_err.code, LM_ERR_TIMEOUT);
	assert_contains(fx->state_err.msg, "waiting for the QMP greeting");
	assert_contains(fx->state_err.msg, "0.1 s");
	assert_int_equal(a->calls, 1);
	assert_rec_err(a, LM_ERR_TIMEOUT, "query-status: ");
	assert_int_equal(fq_received(fx->fq), 0);
	fx_finish(fx);
}

static void test_negotiation_timeout(void **state)
{
	struct fixture *fx = *state;
	struct qmp_conn_opts opts = { .connect_timeout = 0.1 };

	fq_greeting(fx->fq);
	fq_expect(fx->fq, "qmp_capabilities", NULL); /* and never answer */

	fx_connect(fx, &opts);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_err.code, LM_ERR_TIMEOUT);
	assert_contains(fx->state_err.msg, "negotiating QMP capabilities");
	assert_int_equal(fx->state_ready, 0);
	fx_finish(fx);
}

/* --- commands and replies -------------------------------------------------- */

static void test_out_of_order_replies(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b, *c;
	int ha, hb, hc;

	fq_handshake(fx->fq);
	ha = fq_expect(fx->fq, "query-block", NULL);
	hb = fq_expect(fx->fq, "query-jobs", NULL);
	hc = fq_expect(fx->fq, "block-job-set-speed", "{\"device\": \"c1\", \"speed\": 0}");
	fq_reply_return_to(fx->fq, hc, "{\"n\": 3}");
	fq_reply_return_to(fx->fq, ha, "[{\"n\": 1}]");
	fq_reply_return_to(fx->fq, hb, "{\"n\": 2}");

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, qmp_conn_ready(fx->c), 5);
	a = fx_exec(fx, "query-block", NULL, -1);
	b = fx_exec(fx, "query-jobs", NULL, -1);
	c = fx_exec(fx, "block-job-set-speed",
		    "{\"device\": \"c1\", \"speed\": 0, \"extra\": [1, 2]}", -1);
	assert_int_equal(qmp_conn_pending(fx->c), 3);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_rec_ok(a, "[{\"n\": 1}]");
	assert_rec_ok(b, "{\"n\": 2}");
	assert_rec_ok(c, "{\"n\": 3}");
	/* callbacks in the order the replies came */
	assert_true(c->seq < a->seq);
	assert_true(a->seq < b->seq);
	assert_int_equal(fx->state_failed, 0);
	fx_finish(fx);
}

static void test_events_routed(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;
	json_object *v;

	fq_greeting(fx->fq);
	fq_expect(fx->fq, "qmp_capabilities", NULL);
	fq_event(fx->fq, "RESUME", NULL); /* before the negotiation reply */
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "block-commit", "{\"job-id\": \"c1\", \"device\": \"vda\"}");
	fq_job_status(fx->fq, "c1", "created"); /* between the command and its reply */
	fq_job_status(fx->fq, "c1", "running");
	fq_reply_return(fx->fq, "{}");
	fq_block_job_ready(fx->fq, "c1", "commit");
	fq_event_ts(fx->fq, "SHUTDOWN", "{\"guest\": false, \"reason\": \"host-qmp-quit\"}", 1234,
		    567);

	fx_connect(fx, NULL);
	a = fx_exec(fx, "block-commit", "{\"job-id\": \"c1\", \"device\": \"vda\", \"top\": \"t\"}",
		    -1);
	fx_start(fx);
	RUN_UNTIL(fx, fx->nevents == 5, 5);

	assert_string_equal(fx->events[0].name, "RESUME");
	assert_null(fx->events[0].data);
	assert_int_equal(fx->events[0].ts_sec, 1700000001);
	assert_int_equal(fx->events[0].ts_usec, 1);
	assert_false(fx->events[0].was_ready);
	assert_int_equal(fx->state_seq_ready, 1); /* ready came after RESUME */

	assert_string_equal(fx->events[1].name, "JOB_STATUS_CHANGE");
	assert_true(json_object_object_get_ex(fx->events[1].data, "id", &v));
	assert_string_equal(json_object_get_string(v), "c1");
	assert_true(json_object_object_get_ex(fx->events[1].data, "status", &v));
	assert_string_equal(json_object_get_string(v), "created");
	assert_true(json_object_object_get_ex(fx->events[2].data, "status", &v));
	assert_string_equal(json_object_get_string(v), "running");
	assert_int_equal(fx->events[2].ts_sec, 1700000003);
	assert_int_equal(fx->events[1].replies_seen, 0);
	assert_int_equal(fx->events[2].replies_seen, 0);

	assert_int_equal(a->calls, 1);
	assert_rec_ok(a, "{}");
	assert_int_equal(a->events_seen, 3); /* both job events before the reply */

	assert_string_equal(fx->events[3].name, "BLOCK_JOB_READY");
	assert_true(json_object_object_get_ex(fx->events[3].data, "device", &v));
	assert_string_equal(json_object_get_string(v), "c1");
	assert_int_equal(fx->events[3].replies_seen, 1);
	assert_string_equal(fx->events[4].name, "SHUTDOWN");
	assert_int_equal(fx->events[4].ts_sec, 1234);
	assert_int_equal(fx->events[4].ts_usec, 567);
	assert_true(json_object_object_get_ex(fx->events[4].data, "reason", &v));
	assert_string_equal(json_object_get_string(v), "host-qmp-quit");
	fx_finish(fx);
}

static void test_qmp_error_reply(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "job-complete", "{\"id\": \"c1\"}");
	fq_reply_error(fx->fq, "GenericError",
		       "Job 'c1' in state 'running' cannot accept command verb 'complete'");
	fq_command(fx->fq, "query-jobs", NULL, "[]");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "job-complete", "{\"id\": \"c1\"}", -1);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_err(a, LM_ERR_QMP, "job-complete: ");
	assert_contains(a->err.msg, "cannot accept command verb 'complete'");
	assert_string_equal(a->err.qmp_class, "GenericError");
	/* QEMU's refusal is the command's failure, not the connection's */
	assert_true(qmp_conn_ready(fx->c));
	assert_int_equal(fx->state_failed, 0);
	b = fx_exec(fx, "query-jobs", NULL, -1);
	RUN_UNTIL(fx, b->calls == 1, 5);
	assert_rec_ok(b, "[]");
	fx_finish(fx);
}

static void test_command_timeout(void **state)
{
	struct fixture *fx = *state;
	struct qmp_conn_opts opts = { .command_timeout = 0.1 };
	struct reply_rec *slow, *patient;
	double t0;
	int h;

	fq_handshake(fx->fq);
	h = fq_expect(fx->fq, "slow", NULL);
	fq_delay(fx->fq, 0.3);
	fq_reply_return_to(fx->fq, h, "{\"late\": true}"); /* after the timeout */
	fq_expect(fx->fq, "query-status", NULL);
	fq_delay(fx->fq, 0.2); /* longer than the default timeout */
	fq_reply_return(fx->fq, "{\"status\": \"running\"}");

	fx_connect(fx, &opts);
	fx_start(fx);
	RUN_UNTIL(fx, qmp_conn_ready(fx->c), 5);
	t0 = ev_time();
	slow = fx_exec(fx, "slow", NULL, -1); /* the connection's default: 0.1 s */
	RUN_UNTIL(fx, slow->calls == 1, 5);
	assert_true(ev_time() - t0 >= 0.09);
	assert_true(ev_time() - t0 < 1.0); /* the 0.1 s default, not the 0.3 s reply */
	assert_rec_err(slow, LM_ERR_TIMEOUT, "slow: ");
	assert_contains(slow->err.msg, "within 0.1 s");
	assert_true(qmp_conn_ready(fx->c));

	patient = fx_exec(fx, "query-status", NULL, 0); /* 0: no timeout */
	RUN_UNTIL(fx, patient->calls == 1, 5);
	assert_rec_ok(patient, "{\"status\": \"running\"}");
	/* the late reply was dropped: no second call, no protocol error */
	assert_int_equal(slow->calls, 1);
	assert_int_equal(fx->state_failed, 0);
	assert_null(qmp_conn_error(fx->c));
	fx_finish(fx);
}

static void test_reply_with_unknown_id(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b, *late;
	struct lm_error err;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_reply_return_id(fx->fq, "999", "{}");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	RUN_UNTIL(fx, all_called(fx) && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "id we never sent");
	assert_rec_err(b, LM_ERR_PROTO, "id we never sent");
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);

	/* sticky */
	late = &fx->recs[fx->nrecs++];
	late->fx = fx;
	assert_int_equal(qmp_conn_execute(fx->c, "query-jobs", NULL, -1, reply_cb, late, &err), -1);
	assert_int_equal(err.code, LM_ERR_PROTO);
	assert_contains(err.msg, "query-jobs: ");
	run_for(fx, 0.02);
	assert_int_equal(late->calls, 0);
	late->calls = 1; /* never called, by contract: count it for fx_finish */
	fx_finish(fx);
	assert_int_equal(late->ok, 0);
}

static void test_reply_to_queued_command(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	/* query-status waits for the negotiation with id 1; a reply with id 1
	 * now answers a command QEMU has never seen */
	fq_greeting(fx->fq);
	fq_expect(fx->fq, "qmp_capabilities", NULL);
	fq_reply_return_id(fx->fq, "1", "{\"status\": \"running\"}");
	fq_reply_return(fx->fq, "{}");

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, -1);
	fx_start(fx);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "id we never sent");
	assert_int_equal(fx->state_ready, 0);
	assert_int_equal(fx->state_failed, 1);
	fx_finish(fx);
}

static void test_reply_with_string_id(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_reply_return_id(fx->fq, "\"1\"", "{}");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "id we never sent");
	assert_int_equal(fx->state_failed, 1);
	fx_finish(fx);
}

static void test_idless_error_fails_all(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_send(fx->fq, "{\"error\": {\"class\": \"GenericError\", "
			"\"desc\": \"JSON parse error, invalid keyword 'tru'\"}}\r\n");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	RUN_UNTIL(fx, all_called(fx) && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "could not parse our input");
	assert_rec_err(b, LM_ERR_PROTO, "invalid keyword 'tru'");
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_non_null(qmp_conn_error(fx->c));
	fx_finish(fx);
}

/* --- broken peers ------------------------------------------------------------ */

static void test_eof_mid_message(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *r[3], *late;
	struct lm_error err;
	int i;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_expect(fx->fq, "query-jobs", NULL);
	fq_send(fx->fq, "{\"return\": {\"status\": \"runn");
	fq_close(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, qmp_conn_ready(fx->c), 5);
	r[0] = fx_exec(fx, "query-status", NULL, -1);
	r[1] = fx_exec(fx, "query-name", NULL, 5);
	r[2] = fx_exec(fx, "query-jobs", NULL, -1);
	RUN_UNTIL(fx, all_called(fx), 5);
	run_for(fx, 0.05); /* nothing runs twice */
	for (i = 0; i < 3; i++) {
		assert_int_equal(r[i]->calls, 1);
		assert_rec_err(r[i], LM_ERR_EOF, "in the middle of a message");
	}
	assert_contains(r[1]->err.msg, "query-name: ");
	assert_int_equal(fx->state_failed, 1);
	assert_int_equal(fx->state_err.code, LM_ERR_EOF);
	assert_contains(fx->state_err.msg, "middle of a message");
	assert_false(qmp_conn_ready(fx->c));
	assert_non_null(qmp_conn_error(fx->c));
	assert_int_equal(qmp_conn_pending(fx->c), 0);

	late = &fx->recs[fx->nrecs++];
	late->fx = fx;
	assert_int_equal(qmp_conn_execute(fx->c, "query-status", NULL, -1, reply_cb, late, &err),
			 -1);
	assert_int_equal(err.code, LM_ERR_EOF);
	assert_contains(err.msg, "middle of a message");
	run_for(fx, 0.02);
	assert_int_equal(late->calls, 0);
	late->calls = 1;
	assert_int_equal(fx->state_failed, 1);
	fx_finish(fx);
}

static void test_eof_between_messages(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_close(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1 && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_EOF, "closed the monitor connection");
	fx_finish(fx);
}

static void test_eof_before_greeting(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_close(fx->fq);

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, -1);
	fx_start(fx);
	RUN_UNTIL(fx, a->calls == 1 && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_EOF, "before the QMP greeting");
	assert_int_equal(fx->state_err.code, LM_ERR_EOF);
	fx_finish(fx);
}

static void test_garbage_is_protocol_error(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_send(fx->fq, "hello, this is no JSON\r\n");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1 && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, NULL);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_contains(fx->state_err.msg, "fake: ");
	fx_finish(fx);
}

static void test_garbage_before_greeting(void **state)
{
	struct fixture *fx = *state;
	static const char junk[] = { '\x00', '\xff', 'S', 'S', 'H', '-', '2', '\n' };

	fq_send_bytes(fx->fq, junk, sizeof(junk));

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	fx_finish(fx);
}

static void test_valid_json_but_not_qmp(void **state)
{
	struct fixture *fx = *state;

	fq_handshake(fx->fq);
	fq_send(fx->fq, "{\"hello\": \"world\"}\r\n");

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_contains(fx->state_err.msg, "neither greeting, return, error nor event");
	fx_finish(fx);
}

static void test_reply_before_greeting(void **state)
{
	struct fixture *fx = *state;

	fq_send(fx->fq, "{\"return\": {}, \"id\": 1}\r\n");

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_contains(fx->state_err.msg, "before the greeting");
	fx_finish(fx);
}

static void test_second_greeting(void **state)
{
	struct fixture *fx = *state;

	fq_handshake(fx->fq);
	fq_greeting(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_ready, 1);
	assert_int_equal(fx->state_err.code, LM_ERR_PROTO);
	assert_contains(fx->state_err.msg, "second greeting");
	fx_finish(fx);
}

static void test_oversize_message(void **state)
{
	struct fixture *fx = *state;
	struct qmp_conn_opts opts = { .limits = { .max_bytes = 1024 } };
	struct reply_rec *a;
	char *big = malloc(4200);

	assert_non_null(big);
	memcpy(big, "{\"blob\": \"", 10);
	memset(big + 10, 'x', 4096);
	memcpy(big + 4106, "\"}", 3);

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-big", NULL);
	fq_reply_return(fx->fq, big);
	free(big);

	fx_connect(fx, &opts);
	fx_start(fx);
	a = fx_exec(fx, "query-big", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1 && fx->state_failed == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "larger than the limit");
	fx_finish(fx);
}

static void test_too_deep_message(void **state)
{
	struct fixture *fx = *state;
	struct qmp_conn_opts opts = { .limits = { .max_depth = 8 } };
	struct reply_rec *a;
	char deep[64];
	int i;

	for (i = 0; i < 20; i++)
		deep[i] = '[';
	for (i = 20; i < 40; i++)
		deep[i] = ']';
	deep[40] = '\0';

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-deep", NULL);
	fq_reply_return(fx->fq, deep);

	fx_connect(fx, &opts);
	fx_start(fx);
	a = fx_exec(fx, "query-deep", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_err(a, LM_ERR_PROTO, "deeper than the limit");
	fx_finish(fx);
}

/* --- freeing from inside callbacks ----------------------------------------- */

static void test_free_in_reply_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b, *c;
	int ha;

	fq_handshake(fx->fq);
	ha = fq_expect(fx->fq, "query-status", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_expect(fx->fq, "query-jobs", NULL);
	fq_reply_return_to(fx->fq, ha, "{}");
	fq_event(fx->fq, "RESUME", NULL); /* in the same read: must not be delivered */
	fq_expect_eof(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	c = fx_exec(fx, "query-jobs", NULL, 5);
	a->free_conn = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_null(fx->c);
	assert_rec_ok(a, "{}");
	assert_rec_err(b, LM_ERR_EOF, "connection closed");
	assert_rec_err(c, LM_ERR_EOF, "connection closed");
	assert_contains(c->err.msg, "query-jobs: ");
	assert_int_equal(fx->nevents, 0);
	assert_int_equal(fx->state_failed, 0); /* freed by its user: no state report */
	RUN_UNTIL(fx, fq_done(fx->fq), 5);      /* the fake saw the close */
	run_for(fx, 0.15);                       /* c's timer is gone too */
	fx_finish(fx);
}

static void test_free_in_event_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;
	int ha, hb;

	fq_handshake(fx->fq);
	ha = fq_expect(fx->fq, "query-status", NULL);
	hb = fq_expect(fx->fq, "query-name", NULL);
	fq_event(fx->fq, "STOP", NULL);
	fq_reply_return_to(fx->fq, ha, "{}");
	fq_reply_return_to(fx->fq, hb, "{}");
	fq_expect_eof(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	fx->free_in_event = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_null(fx->c);
	assert_int_equal(fx->nevents, 1);
	assert_rec_err(a, LM_ERR_EOF, "connection closed");
	assert_rec_err(b, LM_ERR_EOF, "connection closed");
	assert_int_equal(fx->state_failed, 0);
	fx_finish(fx);
}

static void test_free_in_state_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_close(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	fx->free_in_state = 1;
	RUN_UNTIL(fx, all_called(fx) && fx->state_failed == 1, 5);
	assert_null(fx->c);
	/* the failure reached everyone before the free: its own message */
	assert_rec_err(a, LM_ERR_EOF, "closed the monitor connection");
	assert_rec_err(b, LM_ERR_EOF, "closed the monitor connection");
	fx_finish(fx);
}

static void test_free_in_ready_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL); /* sent before ready is reported */
	fq_expect_eof(fx->fq);

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, -1);
	fx->free_on_ready = 1;
	fx_start(fx);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_null(fx->c);
	assert_int_equal(fx->state_ready, 1);
	assert_rec_err(a, LM_ERR_EOF, "connection closed");
	fx_finish(fx);
}

static void test_start_fails_at_once(void **state)
{
	struct fixture *fx = *state;
	struct lm_error err;
	struct reply_rec *a;
	struct tr *t;

	t = tr_new("unix:/nonexistent-dir/qmp.sock", &err);
	assert_non_null(t);
	fx->c = qmp_conn_new(fx->loop, t, NULL);
	assert_non_null(fx->c);
	qmp_conn_set_state_cb(fx->c, state_cb, fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	assert_int_equal(qmp_conn_start(fx->c, &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
	assert_contains(err.msg, "is the VM running?");
	assert_non_null(qmp_conn_error(fx->c));
	assert_int_equal(fx->state_failed, 0); /* by contract: start reported it */
	/* the command queued before start runs once, with the error, by the free
	 * at the latest */
	qmp_conn_free(fx->c);
	fx->c = NULL;
	assert_int_equal(a->calls, 1);
	assert_rec_err(a, LM_ERR_IO, "query-status: ");
	fx_finish(fx);
}

static void test_timeout_while_queued(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	/* the greeting comes late; a's timeout runs out while it waits in the
	 * queue, so it must never be sent (the fake would reject it) */
	fq_delay(fx->fq, 0.2);
	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-name", NULL, "{}");

	fx_connect(fx, NULL);
	a = fx_exec(fx, "query-status", NULL, 0.05);
	b = fx_exec(fx, "query-name", NULL, -1);
	fx_start(fx);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_rec_err(a, LM_ERR_TIMEOUT, "query-status: ");
	assert_rec_ok(b, "{}");
	assert_true(a->seq < b->seq);
	fx_finish(fx);
}

static void test_write_after_peer_closed(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;

	fq_handshake(fx->fq);
	fq_close(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	RUN_UNTIL(fx, fq_done(fx->fq) && fx->state_ready == 1, 5);
	if (fx->state_failed == 0) {
		a = fx_exec(fx, "query-status", NULL, -1);
		RUN_UNTIL(fx, a->calls == 1, 5);
		/* the write's EPIPE or the read's EOF, whichever the loop saw first */
		assert_rec_err(a, LM_ERR_EOF, NULL);
	}
	RUN_UNTIL(fx, fx->state_failed == 1, 5);
	assert_int_equal(fx->state_err.code, LM_ERR_EOF);
	fx_finish(fx);
}

static void test_free_in_timeout_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "slow", NULL);
	fq_expect(fx->fq, "query-name", NULL);
	fq_expect_eof(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "slow", NULL, 0.05);
	b = fx_exec(fx, "query-name", NULL, 0);
	a->free_conn = 1;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_rec_err(a, LM_ERR_TIMEOUT, "slow: ");
	assert_rec_err(b, LM_ERR_EOF, "connection closed");
	fx_finish(fx);
}

static void test_free_with_pending_outside_callbacks(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-status", NULL);
	fq_expect_eof(fx->fq);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, fq_received(fx->fq) == 2, 5);
	b = fx_exec(fx, "query-name", NULL, -1); /* queued, never sent */
	qmp_conn_free(fx->c);
	fx->c = NULL;
	assert_int_equal(a->calls, 1);
	assert_int_equal(b->calls, 1);
	assert_rec_err(a, LM_ERR_EOF, "connection closed");
	assert_rec_err(b, LM_ERR_EOF, "connection closed");
	fx_finish(fx);
}

/* --- volume ---------------------------------------------------------------- */

#define BIG_LEN ((size_t)8 << 20)

static void test_large_reply_in_pieces(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a;
	char *big = malloc(BIG_LEN + 32);
	json_object *v;
	const char *s;
	size_t i;

	assert_non_null(big);
	memcpy(big, "{\"data\": \"", 10);
	for (i = 0; i < BIG_LEN; i++)
		big[10 + i] = (char)('a' + i % 26);
	memcpy(big + 10 + BIG_LEN, "\"}", 3);

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "query-big", NULL);
	fq_event(fx->fq, "RESUME", NULL);
	fq_reply_return(fx->fq, big);
	fq_split(fx->fq, 4093, 0); /* a write per 4093 bytes */
	fq_event(fx->fq, "STOP", NULL);
	free(big);

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-big", NULL, -1);
	RUN_UNTIL(fx, a->calls == 1 && fx->nevents == 2, 30);
	assert_rec_ok(a, NULL);
	assert_true(json_object_object_get_ex(a->ret, "data", &v));
	assert_int_equal(json_object_get_string_len(v), BIG_LEN);
	s = json_object_get_string(v);
	for (i = 0; i < BIG_LEN; i++)
		if (s[i] != (char)('a' + i % 26))
			fail_msg("byte %zu is '%c'", i, s[i]);
	assert_string_equal(fx->events[0].name, "RESUME");
	assert_string_equal(fx->events[1].name, "STOP");
	assert_int_equal(a->events_seen, 1);
	fx_finish(fx);
}

#define BURST 10000

static void test_burst_of_commands(void **state)
{
	struct fixture *fx = *state;
	int *handles = malloc(sizeof(int) * BURST);
	struct lm_error err;
	char buf[64];
	long i;

	assert_non_null(handles);
	fx->many = calloc(BURST, sizeof(*fx->many));
	assert_non_null(fx->many);
	fx->nmany = BURST;

	fq_handshake(fx->fq);
	for (i = 0; i < BURST; i++) {
		snprintf(buf, sizeof(buf), "{\"n\": %ld}", i);
		handles[i] = fq_expect(fx->fq, "echo", buf);
	}
	/* all BURST in flight; answer last first */
	for (i = BURST - 1; i >= 0; i--) {
		snprintf(buf, sizeof(buf), "{\"n\": %ld}", i);
		fq_reply_return_to(fx->fq, handles[i], buf);
	}
	free(handles);

	/* a small send buffer so the socket says EAGAIN for real, too */
	{
		int fd = fq_fd(fx->fq), sz = 4096;

		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	}
	fx_connect_throttled(fx, NULL, 1000, 0, 7);
	fx_start(fx);
	RUN_UNTIL(fx, qmp_conn_ready(fx->c), 5);
	for (i = 0; i < BURST; i++) {
		json_object *args = json_object_new_object();

		json_object_object_add(args, "n", json_object_new_int64(i));
		fx->many[i].fx = fx;
		fx->many[i].index = i;
		if (qmp_conn_execute(fx->c, "echo", args, -1, reply_cb, &fx->many[i], &err) != 0)
			fail_msg("execute %ld: %s", i, err.msg);
		json_object_put(args);
	}
	assert_int_equal(qmp_conn_pending(fx->c), BURST);
	RUN_UNTIL(fx, fx->seq == BURST, 60);
	for (i = 0; i < BURST; i++) {
		json_object *n;

		assert_int_equal(fx->many[i].calls, 1);
		if (!fx->many[i].ok)
			fail_msg("command %ld: %s", i, fx->many[i].err.msg);
		assert_true(json_object_object_get_ex(fx->many[i].ret, "n", &n));
		assert_int_equal(json_object_get_int64(n), i);
		/* reverse order of replies */
		assert_int_equal(fx->many[i].seq, BURST - i);
	}
	assert_int_equal(qmp_conn_pending(fx->c), 0);
	/* the output buffer went out in pieces, through AGAIN */
	assert_true(fx->throttle->short_writes > 0);
	assert_true(fx->throttle->write_agains > 0);
	fx_finish(fx);
}

static void test_tiny_reads_and_writes(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;
	int ha, hb;

	fq_handshake(fx->fq);
	ha = fq_expect(fx->fq, "query-status", NULL);
	hb = fq_expect(fx->fq, "query-name", NULL);
	fq_job_status(fx->fq, "c1", "pending");
	fq_reply_return_to(fx->fq, hb, "{\"name\": \"vm \\\"quoted\\\" {}[]\"}");
	fq_block_job_pending(fx->fq, "c1", "commit");
	fq_reply_return_to(fx->fq, ha, "{\"status\": \"running\"}");
	fq_block_job_completed(fx->fq, "c1", "commit", "No space left on device");

	/* reads of 3 bytes, writes of 5, and a spurious AGAIN every 3rd call */
	fx_connect_throttled(fx, NULL, 5, 3, 3);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = fx_exec(fx, "query-name", NULL, -1);
	RUN_UNTIL(fx, all_called(fx) && fx->nevents == 3, 10);
	assert_rec_ok(a, "{\"status\": \"running\"}");
	assert_rec_ok(b, "{\"name\": \"vm \\\"quoted\\\" {}[]\"}");
	assert_true(b->seq < a->seq);
	assert_string_equal(fx->events[0].name, "JOB_STATUS_CHANGE");
	assert_string_equal(fx->events[1].name, "BLOCK_JOB_PENDING");
	assert_string_equal(fx->events[2].name, "BLOCK_JOB_COMPLETED");
	{
		json_object *v;

		assert_true(json_object_object_get_ex(fx->events[2].data, "error", &v));
		assert_string_equal(json_object_get_string(v), "No space left on device");
	}
	fx_finish(fx);
}

static void test_execute_from_callback(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-status", NULL, "{}");
	fq_command(fx->fq, "query-name", NULL, "{\"name\": \"x\"}");

	fx_connect(fx, NULL);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	b = &fx->recs[fx->nrecs++];
	a->then_exec = "query-name";
	a->then_rec = b;
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_rec_ok(a, "{}");
	assert_int_equal(a->then_rc, 0);
	assert_int_equal(a->then_calls_at_return, 0); /* not from inside execute */
	assert_rec_ok(b, "{\"name\": \"x\"}");
	fx_finish(fx);
}

/* --- connecting through a real listener ----------------------------------- */

struct listener {
	ev_io w;
	int lfd;
	int accepted;
};

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;

	(void)revents;
	l->accepted = accept(l->lfd, NULL, NULL);
	ev_io_stop(loop, w);
}

/* Connect to target (served by lfd) through tr_new() and the connecting
 * phase, then hand the accepted socket to a fake and run a command. */
static void connect_via_listener(struct fixture *fx, int lfd, const char *target)
{
	struct listener l = { .lfd = lfd, .accepted = -1 };
	struct lm_error err;
	struct reply_rec *a;
	struct tr *t;

	t = tr_new(target, &err);
	if (t == NULL)
		fail_msg("%s: %s", target, err.msg);
	fx->c = qmp_conn_new(fx->loop, t, NULL);
	assert_non_null(fx->c);
	qmp_conn_set_event_cb(fx->c, event_cb, fx);
	qmp_conn_set_state_cb(fx->c, state_cb, fx);
	ev_io_init(&l.w, listener_cb, lfd, EV_READ);
	l.w.data = &l;
	ev_io_start(fx->loop, &l.w);
	fx_start(fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, l.accepted >= 0 || fx->state_failed, 5);
	ev_io_stop(fx->loop, &l.w);
	assert_int_equal(fx->state_failed, 0);

	fq_free(fx->fq); /* the socketpair one is not needed */
	fx->fq = fq_new_on_fd(fx->loop, l.accepted);
	assert_int_equal(fq_fd(fx->fq), -1);
	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-status", NULL, "{\"status\": \"running\"}");
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_ok(a, "{\"status\": \"running\"}");
	assert_int_equal(fx->state_ready, 1);
	assert_string_equal(qmp_conn_desc(fx->c), target);
	fx_finish(fx);
}

static void test_connect_unix_listener(void **state)
{
	struct fixture *fx = *state;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/lm-test-conn.XXXXXX";
	char target[128];
	int lfd;

	assert_non_null(mkdtemp(dir));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/qmp.sock", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	snprintf(target, sizeof(target), "unix:%s", sun.sun_path);
	connect_via_listener(fx, lfd, target);
	close(lfd);
	unlink(sun.sun_path);
	rmdir(dir);
}

static void test_connect_tcp_listener(void **state)
{
	struct fixture *fx = *state;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	char target[64];
	int lfd;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	snprintf(target, sizeof(target), "tcp:127.0.0.1:%d", ntohs(sin.sin_port));
	connect_via_listener(fx, lfd, target);
	close(lfd);
}

static void test_connect_tcp_refused(void **state)
{
	struct fixture *fx = *state;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct lm_error err;
	struct reply_rec *a;
	char target[64];
	struct tr *t;
	int fd;

	/* a port that was free a moment ago */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	snprintf(target, sizeof(target), "tcp:127.0.0.1:%d", ntohs(sin.sin_port));

	t = tr_new(target, &err);
	assert_non_null(t);
	fx->c = qmp_conn_new(fx->loop, t, NULL);
	assert_non_null(fx->c);
	qmp_conn_set_state_cb(fx->c, state_cb, fx);
	a = fx_exec(fx, "query-status", NULL, -1);
	if (qmp_conn_start(fx->c, &err) == 0) {
		/* refused later, from the loop: the state callback says so */
		RUN_UNTIL(fx, fx->state_failed == 1, 5);
		err = fx->state_err;
		assert_int_equal(a->calls, 1);
	}
	assert_int_equal(err.code, LM_ERR_IO);
	assert_contains(err.msg, "nothing listens there");
	qmp_conn_free(fx->c);
	fx->c = NULL;
	assert_rec_err(a, LM_ERR_IO, "query-status: cannot connect");
	fx_finish(fx);
}

/* --- the fake itself ----------------------------------------------------------- */

static void test_fake_reports_surprises(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *a, *b;

	fq_handshake(fx->fq);
	fq_expect(fx->fq, "block-commit", "{\"job-id\": \"c1\", \"speed\": 0}");
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "query-jobs", NULL);

	fx_connect(fx, NULL);
	fx_start(fx);
	/* the wrong job-id: the fake answers with an error and records it */
	a = fx_exec(fx, "block-commit", "{\"job-id\": \"c2\", \"speed\": 0}", -1);
	RUN_UNTIL(fx, a->calls == 1, 5);
	assert_rec_err(a, LM_ERR_QMP, "fakeqmp: unexpected command block-commit");
	assert_string_equal(a->err.qmp_class, "GenericError");
	/* one failure, three steps never used */
	assert_int_equal(fq_problems(fx->fq), 4);
	assert_false(fq_done(fx->fq));
	assert_true(qmp_conn_ready(fx->c));

	/* a command after the end of a script is a surprise too */
	fq_free(fx->fq);
	qmp_conn_free(fx->c);
	fx->c = NULL;
	fx->fq = fq_new(fx->loop);
	fq_handshake(fx->fq);
	fx_connect(fx, NULL);
	fx_start(fx);
	b = fx_exec(fx, "query-status", NULL, -1);
	RUN_UNTIL(fx, b->calls == 1, 5);
	assert_rec_err(b, LM_ERR_QMP, "unexpected command query-status");
	assert_true(fq_done(fx->fq));
	assert_int_equal(fq_problems(fx->fq), 1);
}

static void test_fake_subset_matching(void **state)
{
	struct fixture *fx = *state;
	struct reply_rec *x, *y, *z;

	fq_handshake(fx->fq);
	fq_command(fx->fq, "x", "{\"a\": {\"b\": [1, {\"c\": true}]}, \"n\": 2.0, \"s\": null}",
		   "{}");
	fq_command(fx->fq, "y", "{\"a\": [1]}", "{}");
	fq_command(fx->fq, "z", "{}", "{}");

	fx_connect(fx, NULL);
	fx_start(fx);
	/* extra members anywhere are fine; 2 equals 2.0; null matches null */
	x = fx_exec(fx, "x",
		    "{\"a\": {\"b\": [1, {\"c\": true, \"d\": 5}], \"e\": 1}, \"n\": 2, "
		    "\"s\": null, \"extra\": \"z\"}",
		    -1);
	/* arrays must have the same length */
	y = fx_exec(fx, "y", "{\"a\": [1, 2]}", -1);
	/* {} matches a command without arguments */
	z = fx_exec(fx, "z", NULL, -1);
	RUN_UNTIL(fx, all_called(fx), 5);
	assert_rec_ok(x, "{}");
	assert_rec_err(y, LM_ERR_QMP, "unexpected command y");
	/* z came while the script still waited for y: rejected as well */
	assert_rec_err(z, LM_ERR_QMP, "unexpected command z");
	assert_int_equal(fq_problems(fx->fq), 2 + 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_negotiation_queues_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_greeting_one_byte_at_a_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_greeting_connect_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events_routed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qmp_error_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_with_unknown_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_to_queued_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_with_string_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idless_error_fails_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_mid_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_between_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_before_greeting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_is_protocol_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_before_greeting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_valid_json_but_not_qmp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_before_greeting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_greeting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversize_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_deep_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_reply_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_event_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_state_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_ready_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_timeout_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_fails_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_while_queued, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_after_peer_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_with_pending_outside_callbacks, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_execute_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_reply_in_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_burst_of_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tiny_reads_and_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_unix_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_tcp_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_tcp_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_reports_surprises, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_subset_matching, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

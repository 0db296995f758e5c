/*
 * ssh-channels: several QMP monitors in one process and one event loop,
 * through liblivemerge, for integration/test-ssh.sh (built by the test with
 * cc ... build/liblivemerge.a; not part of the build).
 *
 * usage: ssh-channels [-i KEY]... [--known-hosts FILE] [--rounds N]
 *                     [--until-fail K] [--idle SECS] TARGET...
 *
 * Connects every TARGET (ssh:// ones share one SSH session per host), waits
 * until all are negotiated and prints {"target","ready","qemu"} per target.
 * --rounds N: then N query-status round trips per target, one at a time,
 * in blocks of N/10 that alternate between the targets (so that a change
 * of machine load hits all alike); prints {"target","rounds","seconds"}.
 * --until-fail K: then keep K query-status in flight on every target until
 * every connection has failed (the test drops the SSH session); prints
 * "ready" first, then {"target","issued","callbacks","error","code"} per
 * target. Exit 0 if every callback ran exactly once per command issued.
 * --idle SECS: after connecting, run the loop idle that long, then one
 * query-status per target (keepalives must not disturb the channels).
 * Exit 3 if a target cannot connect, 1 on any other failure.
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../qmp/conn.h"
#include "../transport/transport.h"

#define MAXT 16

struct target {
	const char *name;
	struct qmp_conn *c;
	int state; /* 0 connecting, 1 ready, -1 failed */
	struct lm_error err;
	long issued, callbacks, inflight, done;
	double seconds; /* --rounds */
	int dup_callback;
};

static struct target targets[MAXT];
static int ntargets;
static long until_fail_k;

static void state_cb(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct target *t = arg;

	(void)c;
	if (err != NULL) {
		t->state = -1;
		t->err = *err;
	} else {
		t->state = 1;
	}
}

static void issue(struct target *t);

static void reply_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err, void *arg)
{
	struct target *t = arg;

	(void)c;
	(void)ret;
	t->callbacks++;
	t->inflight--;
	if (t->callbacks > t->issued)
		t->dup_callback = 1;
	if (err == NULL) {
		t->done++;
		if (until_fail_k > 0)
			issue(t);
	}
}

static void issue(struct target *t)
{
	struct lm_error e;

	if (t->state < 0)
		return;
	if (qmp_conn_execute(t->c, "query-status", NULL, -1, reply_cb, t, &e) == 0) {
		t->issued++;
		t->inflight++;
	}
}

static int all(int want)
{
	int i;

	for (i = 0; i < ntargets; i++)
		if (want == 1 ? targets[i].state != 1 : targets[i].state >= 0)
			return 0;
	return 1;
}

static int any_failed(void)
{
	int i;

	for (i = 0; i < ntargets; i++)
		if (targets[i].state < 0)
			return 1;
	return 0;
}

/* One JSON object on a line of stdout; takes o. */
static void emit(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static json_object *line(const struct target *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "target", json_object_new_string(t->name));
	return o;
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	fprintf(stderr, "ssh-channels: time limit reached\n");
	exit(1);
}

int main(int argc, char **argv)
{
	struct ev_loop *loop = EV_DEFAULT;
	const char *ids[8];
	struct tr_opts o = { .loop = loop, .identities = ids };
	struct qmp_conn_opts co = { .connect_timeout = 30 };
	long rounds = 0;
	double idle = 0;
	ev_timer deadline;
	int i, ok = 1;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-i") == 0 && i + 1 < argc && o.nidentities < 8)
			ids[o.nidentities++] = argv[++i];
		else if (strcmp(argv[i], "--known-hosts") == 0 && i + 1 < argc)
			o.known_hosts = argv[++i];
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (strcmp(argv[i], "--idle") == 0 && i + 1 < argc)
			idle = atof(argv[++i]);
		else if (strcmp(argv[i], "--until-fail") == 0 && i + 1 < argc)
			until_fail_k = atol(argv[++i]);
		else if (argv[i][0] == '-' || ntargets == MAXT)
			return fprintf(stderr, "ssh-channels: bad argument %s\n", argv[i]), 1;
		else
			targets[ntargets++].name = argv[i];
	}
	if (ntargets == 0)
		return fprintf(stderr, "usage: ssh-channels [options] TARGET...\n"), 1;
	ev_timer_init(&deadline, deadline_cb, 120., 0.);
	ev_timer_start(loop, &deadline);

	for (i = 0; i < ntargets; i++) {
		struct target *t = &targets[i];
		struct tr *tr = tr_new_ex(t->name, &o, &t->err);

		if (tr == NULL || (t->c = qmp_conn_new(loop, tr, &co)) == NULL) {
			fprintf(stderr, "ssh-channels: %s\n", t->err.msg);
			return 3;
		}
		qmp_conn_set_state_cb(t->c, state_cb, t);
		if (qmp_conn_start(t->c, &t->err) < 0)
			t->state = -1;
	}
	while (!all(1) && !any_failed())
		ev_run(loop, EVRUN_ONCE);
	for (i = 0; i < ntargets; i++) {
		struct target *t = &targets[i];

		if (t->state < 0) {
			fprintf(stderr, "ssh-channels: %s\n", t->err.msg);
			return 3;
		}
		json_object *o = line(t);

		json_object_object_add(o, "ready", json_object_new_boolean(1));
		json_object_object_add(o, "qemu", json_object_new_int(qmp_conn_qemu_version(t->c)));
		emit(o);
	}
	fflush(stdout);

	if (idle > 0) {
		ev_timer pause;

		ev_timer_init(&pause, idle_cb, idle, 0.);
		ev_timer_start(loop, &pause);
		ev_run(loop, 0);
		for (i = 0; i < ntargets; i++) {
			long before = targets[i].callbacks;

			issue(&targets[i]);
			while (targets[i].callbacks == before)
				ev_run(loop, EVRUN_ONCE);
			if (targets[i].done == 0) {
				fprintf(stderr, "ssh-channels: %s: query-status after idle failed: %s\n",
					targets[i].name, targets[i].err.msg);
				return 1;
			}
		}
	}

	if (rounds > 0) {
		long block = rounds >= 10 ? rounds / 10 : rounds, k;

		for (k = 0; k < rounds; k += block)
			for (i = 0; i < ntargets; i++) {
				struct target *t = &targets[i];
				long j, n = rounds - k < block ? rounds - k : block;
				ev_tstamp t0;

				ev_now_update(loop);
				t0 = ev_time();
				for (j = 0; j < n; j++) {
					long before = t->callbacks, done = t->done;

					issue(t);
					while (t->callbacks == before)
						ev_run(loop, EVRUN_ONCE);
					if (t->done != done + 1) {
						fprintf(stderr, "ssh-channels: %s: query-status failed\n",
							t->name);
						return 1;
					}
				}
				t->seconds += ev_time() - t0;
			}
		for (i = 0; i < ntargets; i++) {
			json_object *o = line(&targets[i]);

			json_object_object_add(o, "rounds", json_object_new_int64(rounds));
			json_object_object_add(o, "seconds", json_object_new_double(targets[i].seconds));
			emit(o);
		}
	}

	if (until_fail_k > 0) {
		int k;

		for (i = 0; i < ntargets; i++)
			for (k = 0; k < until_fail_k; k++)
				issue(&targets[i]);
		printf("ready\n");
		fflush(stdout);
		while (!all(-1))
			ev_run(loop, EVRUN_ONCE);
		/* anything still to run is due now: one more pass */
		ev_run(loop, EVRUN_NOWAIT);
		for (i = 0; i < ntargets; i++) {
			struct target *t = &targets[i];

			json_object *o = line(t);

			json_object_object_add(o, "issued", json_object_new_int64(t->issued));
			json_object_object_add(o, "callbacks", json_object_new_int64(t->callbacks));
			json_object_object_add(o, "done", json_object_new_int64(t->done));
			json_object_object_add(o, "code",
					       json_object_new_string(lm_error_code_name(t->err.code)));
			json_object_object_add(o, "error", json_object_new_string(t->err.msg));
			emit(o);
			if (t->callbacks != t->issued || t->dup_callback || t->inflight != 0)
				ok = 0;
		}
	}
	for (i = 0; i < ntargets; i++)
		qmp_conn_free(targets[i].c);
	ev_timer_stop(loop, &deadline);
	fflush(stdout);
	return ok ? 0 : 1;
}

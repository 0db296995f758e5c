/*
 * host-ops: operations on a VM's host through liblivemerge's host layer,
 * all started at once on one event loop, for integration/test-host-ssh.sh
 * (built by the test with cc ... build/liblivemerge.a; not part of the
 * build).
 *
 * usage: host-ops [-i KEY]... [--known-hosts FILE] [--ping] TARGET OP [-- OP]...
 *   OP: look PATH N | remove PATH | list DIR | run SECS PROGRAM [ARG]...
 *
 * TARGET is a monitor target (ssh://... for a remote host). One JSON line
 * per OP, in order, once all have ended: {"op":I,"ms":..} with "kind" and
 * "head" (hex) for look; "entries" ({"name","kind"}, sorted by name) for
 * list; "status", "out", "err_last" for run; or "error"
 * and "code" (lm_err_code). --ping: a QMP connection to TARGET meanwhile
 * sends query-status back to back until the operations end, then a line
 * {"pings":N,"max_ms":M} (how long the loop was ever kept from answering).
 * Exit 0 when every OP called back exactly once, else 1.
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../host/host.h"
#include "../qmp/conn.h"
#include "../transport/transport.h"

#define MAXOPS 32

struct op {
	int idx, calls;
	double t0, ms;
	json_object *line;
};

static struct op ops[MAXOPS];
static int nops, ended;
static struct qmp_conn *pinger;
static long pings;
static double ping_t0, ping_max;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void end_op(struct op *o, const struct lm_error *err)
{
	o->calls++;
	o->ms = (now() - o->t0) * 1000;
	if (o->calls > 1)
		return;
	ended++;
	json_object_object_add(o->line, "ms", json_object_new_double(o->ms));
	if (err != NULL) {
		json_object_object_add(o->line, "error", json_object_new_string(err->msg));
		json_object_object_add(o->line, "code", json_object_new_int(err->code));
	}
}

static void look_cb(void *arg, const struct host_file *f, const struct lm_error *err)
{
	struct op *o = arg;
	static const char *kinds[] = { "none", "regular", "block", "symlink", "other" };
	char *hex;
	size_t i;

	if (f != NULL) {
		json_object_object_add(o->line, "kind", json_object_new_string(kinds[f->kind]));
		hex = malloc(f->len * 2 + 1);
		for (i = 0; i < f->len; i++)
			sprintf(hex + 2 * i, "%02x", f->head[i]);
		hex[2 * f->len] = '\0';
		json_object_object_add(o->line, "head", json_object_new_string(hex));
		free(hex);
	}
	end_op(o, err);
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct host_dirent *)a)->name, ((const struct host_dirent *)b)->name);
}

static void list_cb(void *arg, const struct host_dirent *ents, size_t n,
		    const struct lm_error *err)
{
	static const char *kinds[] = { "none", "regular", "block", "symlink", "other" };
	struct op *o = arg;
	struct host_dirent *sorted;
	json_object *a;
	size_t i;

	if (err == NULL) {
		sorted = malloc((n ? n : 1) * sizeof(*sorted));
		memcpy(sorted, ents, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), ent_cmp);
		a = json_object_new_array();
		for (i = 0; i < n; i++) {
			json_object *e = json_object_new_object();

			json_object_object_add(e, "name", json_object_new_string(sorted[i].name));
			json_object_object_add(e, "kind", json_object_new_string(kinds[sorted[i].kind]));
			json_object_array_add(a, e);
		}
		json_object_object_add(o->line, "entries", a);
		free(sorted);
	}
	end_op(o, err);
}

static void done_cb(void *arg, const struct lm_error *err)
{
	end_op(arg, err);
}

static void run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct op *o = arg;

	if (r != NULL) {
		json_object_object_add(o->line, "status", json_object_new_int(r->status));
		json_object_object_add(o->line, "out", json_object_new_string_len(r->out, (int)r->outlen));
		json_object_object_add(o->line, "err_last", json_object_new_string(r->err_last));
	}
	end_op(o, err);
}

static void ping(void);

static void ping_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err, void *arg)
{
	double ms = (now() - ping_t0) * 1000;

	(void)c;
	(void)ret;
	(void)arg;
	if (err != NULL) {
		fprintf(stderr, "host-ops: ping: %s\n", err->msg);
		exit(1);
	}
	pings++;
	if (ms > ping_max)
		ping_max = ms;
	if (ended < nops)
		ping();
}

static void ping(void)
{
	struct lm_error e;

	ping_t0 = now();
	if (qmp_conn_execute(pinger, "query-status", NULL, -1, ping_cb, NULL, &e) < 0) {
		fprintf(stderr, "host-ops: ping: %s\n", e.msg);
		exit(1);
	}
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	fprintf(stderr, "host-ops: time limit reached\n");
	exit(1);
}

int main(int argc, char **argv)
{
	struct ev_loop *loop = EV_DEFAULT;
	const char *ids[8];
	struct tr_opts o = { .loop = loop, .identities = ids };
	struct lm_error e;
	struct host *h;
	ev_timer deadline;
	const char *target;
	int i, want_ping = 0, ok = 1;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-i") == 0 && i + 1 < argc && o.nidentities < 8)
			ids[o.nidentities++] = argv[++i];
		else if (strcmp(argv[i], "--known-hosts") == 0 && i + 1 < argc)
			o.known_hosts = argv[++i];
		else if (strcmp(argv[i], "--ping") == 0)
			want_ping = 1;
		else
			break;
	}
	if (i >= argc - 1) {
		fprintf(stderr, "usage: host-ops [-i KEY]... [--known-hosts F] [--ping] TARGET OP "
				"[-- OP]...\n");
		return 2;
	}
	target = argv[i++];
	if ((h = host_new(target, &o, &e)) == NULL) {
		fprintf(stderr, "host-ops: %s\n", e.msg);
		return 1;
	}
	if (want_ping) {
		struct qmp_conn_opts co = { .connect_timeout = 30 };
		struct tr *t = tr_new_ex(target, &o, &e);

		if (t == NULL || (pinger = qmp_conn_new(loop, t, &co)) == NULL ||
		    qmp_conn_start(pinger, &e) < 0) {
			fprintf(stderr, "host-ops: %s\n", e.msg);
			return 1;
		}
		while (!qmp_conn_ready(pinger) && qmp_conn_error(pinger) == NULL)
			ev_run(loop, EVRUN_ONCE);
		if (qmp_conn_error(pinger) != NULL) {
			fprintf(stderr, "host-ops: %s\n", qmp_conn_error(pinger)->msg);
			return 1;
		}
	}
	ev_timer_init(&deadline, deadline_cb, 120., 0.);
	ev_timer_start(loop, &deadline);
	while (i < argc && nops < MAXOPS) {
		struct op *op = &ops[nops];
		const char *verb = argv[i];
		struct host_op *ho = NULL;
		int j = i + 1;

		while (j < argc && strcmp(argv[j], "--") != 0)
			j++;
		if (j < argc)
			argv[j] = NULL; /* the end of run's words (argv[argc] is NULL) */
		op->idx = nops;
		op->line = json_object_new_object();
		json_object_object_add(op->line, "op", json_object_new_int(nops));
		op->t0 = now();
		if (strcmp(verb, "look") == 0 && j - i == 3)
			ho = host_look(h, argv[i + 1], (size_t)atol(argv[i + 2]), look_cb, op);
		else if (strcmp(verb, "list") == 0 && j - i == 2)
			ho = host_list(h, argv[i + 1], list_cb, op);
		else if (strcmp(verb, "remove") == 0 && j - i == 2)
			ho = host_remove(h, argv[i + 1], done_cb, op);
		else if (strcmp(verb, "run") == 0 && j - i >= 3)
			ho = host_run(h, (const char *const *)argv + i + 2, atof(argv[i + 1]), run_cb, op);
		if (ho == NULL) {
			fprintf(stderr, "host-ops: bad operation '%s'\n", verb);
			return 2;
		}
		nops++;
		i = j + 1;
	}
	if (pinger != NULL)
		ping();
	while (ended < nops)
		ev_run(loop, EVRUN_ONCE);
	while (pinger != NULL && qmp_conn_pending(pinger) > 0)
		ev_run(loop, EVRUN_ONCE);
	for (i = 0; i < nops; i++) {
		puts(json_object_to_json_string_ext(ops[i].line, JSON_C_TO_STRING_PLAIN |
								      JSON_C_TO_STRING_NOSLASHESCAPE));
		if (ops[i].calls != 1)
			ok = 0;
		json_object_put(ops[i].line);
	}
	if (pinger != NULL)
		printf("{\"pings\":%ld,\"max_ms\":%.1f}\n", pings, ping_max);
	host_free(h);
	qmp_conn_free(pinger);
	return ok ? 0 : 1;
}

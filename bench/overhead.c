/*
 * bench/overhead: time snapshot + active commit groups through the library,
 * and split each operation's wall time into QEMU's part and livemerge's.
 *
 * usage: overhead [--reps N] [--journal DIR] [--compare] [--raw FILE]
 *                 [--tag TAG] [--timeout S] SPEC
 *
 * SPEC lists the VMs, one a line: "TARGET[,TARGET2] DIR DISK [DISK...]";
 * overlays are created as DIR/DISK.TAG.rREP.qcow2 and unlinked after the
 * commit that merged them (outside the timed window). Every VM is connected
 * first; then each repetition runs a snapshot group on every VM at once,
 * waits for all, then a commit group of all disks on every VM at once (one
 * loop, like `livemerge batch --parallel <number of VMs>`).
 *
 * --compare (one VM with a second monitor TARGET2, and --journal): the
 * repetitions interleave T U T N T U T N ...: T traced with the journal (all
 * figures come from these), U untraced with the journal over TARGET2 (wall
 * only: what the trace itself costs), N traced without the journal (what
 * the journal's fdatasyncs cost) -- interleaved so that a busy machine
 * weighs on all three alike.
 *
 * Measuring: each connection gets a trace FILE* (struct qmp_conn_opts.trace,
 * the library's own hook: every message in "<- " and out "-> ") made with
 * fopencookie(), which stamps each line with CLOCK_REALTIME when the
 * library writes it. "-> " lines are written when a command is queued on the
 * connection, right before the same call writes it to the socket
 * (conn_send, then conn_flush); "<- " lines when a message has been read and
 * parsed, before it is dispatched. QEMU stamps its events with
 * g_get_real_time(), the same clock on the same host. From these:
 *   wall      merge_group_start() to the done callback
 *   jobspan   first JOB_STATUS_CHANGE created to last concluded (QEMU's stamps)
 *   busy      the union of the times QEMU was working for us: every command
 *             from queued to its reply read, and each job's autonomous phases
 *             (created->ready, job-complete queued->pending, job-finalize
 *             queued->concluded)
 *   own       wall - busy: livemerge's time (its processing, journal fsyncs,
 *             reaction delays)
 *   loop busy the time the loop was not waiting in poll (callbacks and the
 *             system calls they block in, merge_group_start included): the
 *             same thing measured from the other side; the run's total less
 *             the CPU time and less the time spent waiting for a CPU
 *             (/proc/thread-self/schedstat run_delay) is the time the loop
 *             sat blocked in system calls
 *   react_ready    QEMU's stamp of the last job's "ready" to our first
 *                  job-complete queued (the barrier releases on the last one)
 *   react_pending  the last "pending" stamp to our first job-finalize queued
 * and the process CPU time (getrusage) per phase.
 *
 * Output: one JSON line per VM, repetition and phase on --raw, and a summary
 * JSON object on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../merge/group.h"
#include "../merge/journal.h"
#include "../qmp/conn.h"
#include "../transport/transport.h"

struct rec {
	double t;
	char dir; /* '>' out, '<' in */
	char *line;
};

struct vm {
	int idx;
	char *target, *dir;
	char *target2; /* a second monitor of the same VM, untraced (NULL: none) */
	int ndisks;
	char **disks;
	struct qmp_conn *c, *c2;
	FILE *trace;
	struct merge_journal *journal;
	struct rec *recs;
	size_t nrecs, cap;
	char *part;
	size_t plen, pcap;
	double pt;
	int connected, conn_failed; /* counts: one per connection */
	struct merge_group *g;
	int done, outcome;
	double t0, t1;
	char err[512];
	/* results of the current phase */
	double wall, busy, jobspan, react_ready, react_pending;
	double ready_deliver, pending_deliver; /* QEMU stamp -> our read */
	int ncmds, njobs;
};

static struct vm *vms;
static int nvms;
static struct ev_loop *loop;

/*
 * How busy the loop was: from the check watcher (the poll returned) to the
 * prepare watcher (about to poll again) the loop is running callbacks,
 * waiting for a CPU, or blocked in a system call one of them made (the
 * journal's fdatasync). Less the CPU time and the run-queue wait, that is
 * the time it sat blocked.
 */
static ev_prepare loop_prepare;
static ev_check loop_check;
static double loop_woke, loop_busy, loop_busy_max;
static long loop_iters;

/*
 * Modes of a repetition: T traced + journal (every figure), U untraced +
 * journal (over the second monitor: wall only), N traced without journal.
 */
enum mode { MODE_T, MODE_U, MODE_N };

static double now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Time this thread spent runnable but waiting for a CPU (schedstat run_delay), s. */
static double runq_wait(void)
{
	FILE *f = fopen("/proc/thread-self/schedstat", "r");
	unsigned long long run = 0, wait = 0;

	if (f == NULL)
		return NAN;
	if (fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	fclose(f);
	return (double)wait * 1e-9;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "overhead: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
		die("%s%s", "out of memory", "");
	return p;
}

/* ------------------------------------------------------------ the trace tap */

static void rec_add(struct vm *v, double t, const char *line, size_t len)
{
	if (len < 3 || (line[0] != '-' && line[0] != '<'))
		return;
	if (v->nrecs == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 128;
		v->recs = xrealloc(v->recs, v->cap * sizeof(*v->recs));
	}
	v->recs[v->nrecs].t = t;
	v->recs[v->nrecs].dir = line[0] == '-' ? '>' : '<';
	v->recs[v->nrecs].line = strndup(line + 3, len - 3);
	v->nrecs++;
}

static ssize_t tap_write(void *cookie, const char *buf, size_t n)
{
	struct vm *v = cookie;
	size_t i, start = 0;

	for (i = 0; i < n; i++) {
		if (buf[i] != '\n')
			continue;
		if (v->plen == 0) {
			rec_add(v, now_real(), buf + start, i - start);
		} else {
			size_t k = i - start;

			if (v->plen + k > v->pcap)
				v->part = xrealloc(v->part, v->pcap = (v->plen + k) * 2);
			memcpy(v->part + v->plen, buf + start, k);
			rec_add(v, v->pt, v->part, v->plen + k);
			v->plen = 0;
		}
		start = i + 1;
	}
	if (start < n) {
		size_t k = n - start;

		if (v->plen == 0)
			v->pt = now_real();
		if (v->plen + k > v->pcap)
			v->part = xrealloc(v->part, v->pcap = (v->plen + k) * 2);
		memcpy(v->part + v->plen, buf + start, k);
		v->plen += k;
	}
	return (ssize_t)n;
}

static void recs_clear(struct vm *v)
{
	size_t i;

	for (i = 0; i < v->nrecs; i++)
		free(v->recs[i].line);
	v->nrecs = 0;
}

/* ------------------------------------------------------------ statistics */

struct series {
	double *x;
	int n, cap;
};

static void s_add(struct series *s, double x)
{
	if (isnan(x))
		return;
	if (s->n == s->cap)
		s->x = xrealloc(s->x, (size_t)(s->cap = s->cap ? s->cap * 2 : 256) * sizeof(double));
	s->x[s->n++] = x;
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* nearest-rank percentile */
static double s_pct(struct series *s, double p)
{
	int r;

	if (s->n == 0)
		return NAN;
	qsort(s->x, (size_t)s->n, sizeof(double), dcmp);
	r = (int)ceil(p / 100.0 * s->n);
	if (r < 1)
		r = 1;
	return s->x[r - 1];
}

static json_object *s_json(struct series *s, double scale)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "n", json_object_new_int(s->n));
	if (s->n == 0)
		return o;
	json_object_object_add(o, "min", json_object_new_double(s_pct(s, 0) * scale));
	json_object_object_add(o, "p50", json_object_new_double(s_pct(s, 50) * scale));
	json_object_object_add(o, "p90", json_object_new_double(s_pct(s, 90) * scale));
	json_object_object_add(o, "p99", json_object_new_double(s_pct(s, 99) * scale));
	json_object_object_add(o, "max", json_object_new_double(s_pct(s, 100) * scale));
	return o;
}

/* ------------------------------------------------------------ analysis */

struct ival {
	double a, b;
};

static int ival_cmp(const void *x, const void *y)
{
	const struct ival *p = x, *q = y;

	return p->a < q->a ? -1 : p->a > q->a;
}

static double union_len(struct ival *iv, int n, double lo, double hi)
{
	double sum = 0, cur_a = 0, cur_b = 0;
	int i, open = 0;

	qsort(iv, (size_t)n, sizeof(*iv), ival_cmp);
	for (i = 0; i < n; i++) {
		double a = iv[i].a < lo ? lo : iv[i].a, b = iv[i].b > hi ? hi : iv[i].b;

		if (b <= a)
			continue;
		if (open && a <= cur_b) {
			if (b > cur_b)
				cur_b = b;
			continue;
		}
		if (open)
			sum += cur_b - cur_a;
		cur_a = a;
		cur_b = b;
		open = 1;
	}
	if (open)
		sum += cur_b - cur_a;
	return sum;
}

#define MAXJ 64
struct jobt {
	char id[96];
	double created, ready, pending, concluded;  /* QEMU stamps, 0 unknown */
	double ready_rx, pending_rx;                /* when we read those events */
	double complete_tx, finalize_tx;            /* when we queued our verbs */
};

struct cmdt {
	int64_t id;
	double tx, rx;
	char name[48];
};

/* QEMU's service time per command name (from queued, or from the reply
 * before it when pipelined, to its reply read), over the whole run */
#define MAXNAMES 64
static struct cmdstat {
	char name[48];
	struct series *s;
} cmdstats[MAXNAMES];
static int ncmdstats;

static void cmdstat_add(const char *name, double x)
{
	int i;

	for (i = 0; i < ncmdstats; i++)
		if (strcmp(cmdstats[i].name, name) == 0)
			break;
	if (i == ncmdstats) {
		if (ncmdstats == MAXNAMES)
			return;
		snprintf(cmdstats[i].name, sizeof(cmdstats[i].name), "%s", name);
		cmdstats[i].s = calloc(1, sizeof(struct series));
		ncmdstats++;
	}
	s_add(cmdstats[i].s, x);
}

static struct jobt *job_get(struct jobt *jobs, int *n, const char *id)
{
	int i;

	for (i = 0; i < *n; i++)
		if (strcmp(jobs[i].id, id) == 0)
			return &jobs[i];
	if (*n == MAXJ)
		return NULL;
	memset(&jobs[*n], 0, sizeof(jobs[0]));
	snprintf(jobs[*n].id, sizeof(jobs[0].id), "%s", id);
	return &jobs[(*n)++];
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static void analyze(struct vm *v)
{
	struct jobt jobs[MAXJ];
	struct cmdt *cmds = calloc(v->nrecs + 1, sizeof(*cmds));
	struct ival *iv = calloc(2 * v->nrecs + 3 * MAXJ + 1, sizeof(*iv));
	int nj = 0, nc = 0, ni = 0, i, k;
	size_t r;
	double first_created = 0, last_concluded = 0, last_ready = 0, last_ready_rx = 0;
	double last_pending = 0, last_pending_rx = 0, first_complete = 0, first_finalize = 0;

	if (cmds == NULL || iv == NULL)
		die("%s%s", "out of memory", "");
	for (r = 0; r < v->nrecs; r++) {
		struct rec *rc = &v->recs[r];
		json_object *o = json_tokener_parse(rc->line), *x, *d;

		if (o == NULL)
			continue;
		if (rc->dir == '>') {
			const char *name = jstr(o, "execute");

			if (json_object_object_get_ex(o, "id", &x)) {
				cmds[nc].id = json_object_get_int64(x);
				cmds[nc].tx = rc->t;
				snprintf(cmds[nc].name, sizeof(cmds[nc].name), "%s", name ? name : "?");
				nc++;
			}
			if (name != NULL && json_object_object_get_ex(o, "arguments", &d) &&
			    jstr(d, "id") != NULL) {
				struct jobt *j = job_get(jobs, &nj, jstr(d, "id"));

				if (j != NULL && strcmp(name, "job-complete") == 0 && !j->complete_tx)
					j->complete_tx = rc->t;
				if (j != NULL && strcmp(name, "job-finalize") == 0 && !j->finalize_tx)
					j->finalize_tx = rc->t;
			}
		} else if (json_object_object_get_ex(o, "event", &x)) {
			json_object *ts, *s, *us;
			double t = 0;

			if (json_object_object_get_ex(o, "timestamp", &ts) &&
			    json_object_object_get_ex(ts, "seconds", &s) &&
			    json_object_object_get_ex(ts, "microseconds", &us))
				t = (double)json_object_get_int64(s) +
				    (double)json_object_get_int64(us) * 1e-6;
			if (strcmp(json_object_get_string(x), "JOB_STATUS_CHANGE") == 0 &&
			    json_object_object_get_ex(o, "data", &d) && jstr(d, "id") != NULL) {
				struct jobt *j = job_get(jobs, &nj, jstr(d, "id"));
				const char *st = jstr(d, "status");

				if (j == NULL || st == NULL)
					;
				else if (strcmp(st, "created") == 0 && !j->created)
					j->created = t;
				else if (strcmp(st, "ready") == 0 && !j->ready)
					j->ready = t, j->ready_rx = rc->t;
				else if (strcmp(st, "pending") == 0 && !j->pending)
					j->pending = t, j->pending_rx = rc->t;
				else if (strcmp(st, "concluded") == 0 && !j->concluded)
					j->concluded = t;
			}
		} else if (json_object_object_get_ex(o, "id", &x)) {
			int64_t id = json_object_get_int64(x);

			for (k = nc - 1; k >= 0; k--)
				if (cmds[k].id == id && !cmds[k].rx) {
					cmds[k].rx = rc->t;
					break;
				}
		}
		json_object_put(o);
	}
	{
		/* QEMU answers in order: a command's service time starts when it
		 * was queued or when the reply before it was read, the later */
		double prev_rx = 0;

		for (k = 0; k < nc; k++)
			if (cmds[k].rx > 0) {
				double from = cmds[k].tx > prev_rx ? cmds[k].tx : prev_rx;

				iv[ni].a = cmds[k].tx, iv[ni++].b = cmds[k].rx;
				cmdstat_add(cmds[k].name, cmds[k].rx - from);
				if (cmds[k].rx > prev_rx)
					prev_rx = cmds[k].rx;
			}
	}
	v->njobs = 0;
	for (i = 0; i < nj; i++) {
		struct jobt *j = &jobs[i];

		if (!j->created)
			continue;
		v->njobs++;
		if (!first_created || j->created < first_created)
			first_created = j->created;
		if (j->concluded > last_concluded)
			last_concluded = j->concluded;
		iv[ni].a = j->created;
		iv[ni++].b = j->ready ? j->ready : j->pending ? j->pending : j->concluded;
		if (j->complete_tx && j->pending)
			iv[ni].a = j->complete_tx, iv[ni++].b = j->pending;
		if (j->finalize_tx && j->concluded)
			iv[ni].a = j->finalize_tx, iv[ni++].b = j->concluded;
		if (j->ready > last_ready)
			last_ready = j->ready, last_ready_rx = j->ready_rx;
		if (j->pending > last_pending)
			last_pending = j->pending, last_pending_rx = j->pending_rx;
		if (j->complete_tx && (!first_complete || j->complete_tx < first_complete))
			first_complete = j->complete_tx;
		if (j->finalize_tx && (!first_finalize || j->finalize_tx < first_finalize))
			first_finalize = j->finalize_tx;
	}
	v->ncmds = nc;
	v->wall = v->t1 - v->t0;
	v->busy = union_len(iv, ni, v->t0, v->t1);
	v->jobspan = first_created && last_concluded ? last_concluded - first_created : 0;
	v->react_ready = last_ready && first_complete ? first_complete - last_ready : NAN;
	v->ready_deliver = last_ready && first_complete ? last_ready_rx - last_ready : NAN;
	v->react_pending = last_pending && first_finalize ? first_finalize - last_pending : NAN;
	v->pending_deliver = last_pending && first_finalize ? last_pending_rx - last_pending : NAN;
	free(cmds);
	free(iv);
}

/* ------------------------------------------------------------ driving */

static void loop_check_cb(struct ev_loop *l, ev_check *w, int revents)
{
	(void)l, (void)w, (void)revents;
	loop_woke = now_real();
}

static void loop_prepare_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
	double d;

	(void)l, (void)w, (void)revents;
	if (loop_woke == 0)
		return;
	d = now_real() - loop_woke;
	loop_busy += d;
	if (d > loop_busy_max)
		loop_busy_max = d;
	loop_iters++;
	loop_woke = 0;
}

static void on_state(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct vm *v = arg;

	(void)c;
	v->connected++;
	if (err != NULL) {
		v->conn_failed++;
		snprintf(v->err, sizeof(v->err), "%s", err->msg);
	}
}

static void on_done(const struct merge_result *r, void *arg)
{
	struct vm *v = arg;

	v->t1 = now_real();
	v->done = 1;
	v->outcome = r->outcome;
	if (r->err != NULL)
		snprintf(v->err, sizeof(v->err), "%s", r->err->msg);
}

static void run_phase(enum merge_verb verb, const char *tag, int rep, enum mode mode)
{
	struct merge_callbacks cb = { .done = on_done };
	int i, k, left = nvms;

	for (i = 0; i < nvms; i++) {
		struct vm *v = &vms[i];
		struct merge_target *t = calloc((size_t)v->ndisks, sizeof(*t));
		char **ov = calloc((size_t)v->ndisks, sizeof(char *));
		struct merge_request req = { .verb = verb, .ntargets = v->ndisks, .targets = t };
		struct lm_error e;

		for (k = 0; k < v->ndisks; k++) {
			t[k].disk = v->disks[k];
			if (verb == MERGE_SNAPSHOT) {
				if (asprintf(&ov[k], "%s/%s.%s.r%d.qcow2", v->dir, v->disks[k], tag, rep) < 0)
					die("%s%s", "out of memory", "");
				t[k].overlay = ov[k];
			}
		}
		req.journal = mode == MODE_N ? NULL : v->journal;
		recs_clear(v);
		v->done = 0;
		v->err[0] = '\0';
		v->t0 = now_real();
		v->g = merge_group_start(mode == MODE_U ? v->c2 : v->c, &req, &cb, v, &e);
		loop_busy += now_real() - v->t0; /* it runs outside the loop: count it */
		if (v->g == NULL)
			die("merge_group_start: %s%s", e.msg, "");
		for (k = 0; k < v->ndisks; k++)
			free(ov[k]);
		free(ov);
		free(t);
	}
	while (left > 0) {
		ev_run(loop, EVRUN_ONCE);
		for (left = 0, i = 0; i < nvms; i++)
			left += !vms[i].done;
	}
	for (i = 0; i < nvms; i++) {
		merge_group_free(vms[i].g);
		vms[i].g = NULL;
		if (vms[i].outcome != MERGE_DONE) {
			fprintf(stderr, "overhead: %s: %s failed (outcome %d): %s\n", vms[i].target,
				merge_verb_name(verb), vms[i].outcome, vms[i].err);
			exit(1);
		}
	}
}

/* ------------------------------------------------------------ main */

static void load_spec(const char *file)
{
	FILE *f = fopen(file, "r");
	char *line = NULL;
	size_t cap = 0;

	if (f == NULL)
		die("cannot open %s: %s", file, strerror(errno));
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *w;
		struct vm *v;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		vms = xrealloc(vms, (size_t)(nvms + 1) * sizeof(*vms));
		v = &vms[nvms];
		memset(v, 0, sizeof(*v));
		v->idx = nvms++;
		v->target = strdup(strtok_r(line, " \t\n", &save));
		if ((w = strchr(v->target, ',')) != NULL) {
			*w = '\0';
			v->target2 = w + 1;
		}
		w = strtok_r(NULL, " \t\n", &save);
		if (w == NULL)
			die("%s: line without DIR: %s", file, v->target);
		v->dir = strdup(w);
		while ((w = strtok_r(NULL, " \t\n", &save)) != NULL) {
			v->disks = xrealloc(v->disks, (size_t)(v->ndisks + 1) * sizeof(char *));
			v->disks[v->ndisks++] = strdup(w);
		}
		if (v->ndisks == 0)
			die("%s: line without disks: %s", file, v->target);
	}
	free(line);
	fclose(f);
	if (nvms == 0)
		die("%s: no VMs%s", file, "");
}

static struct qmp_conn *conn_open(struct vm *v, const char *target, FILE *trace, double timeout)
{
	struct qmp_conn_opts co = { .connect_timeout = timeout, .command_timeout = timeout };
	struct lm_error e;
	struct tr *t = tr_new(target, &e);
	struct qmp_conn *c;

	if (t == NULL)
		die("%s: %s", target, e.msg);
	co.trace = trace;
	c = qmp_conn_new(loop, t, &co);
	if (c == NULL)
		die("%s%s", "out of memory", "");
	qmp_conn_set_state_cb(c, on_state, v);
	if (qmp_conn_start(c, &e) < 0)
		die("%s: %s", target, e.msg);
	return c;
}

static double rep_sum(struct series *a, struct series *b)
{
	double x = s_pct(a, 50), y = s_pct(b, 50);

	return x + y;
}

int main(int argc, char **argv)
{
	const char *journal = NULL, *rawfile = NULL, *tag = "ov";
	int reps = 20, i, k, rep, ndisks, compare = 0, total_reps;
	double timeout = 60;
	FILE *raw = NULL;
	struct series own_op = { 0 }, issue_op = { 0 }, cpu_op = { 0 }, wall_snap = { 0 },
		      wall_commit = { 0 }, jobspan = { 0 }, busy = { 0 }, wall_op = { 0 },
		      r_ready = { 0 }, r_pending = { 0 }, d_ready = { 0 }, d_pending = { 0 },
		      p_ready = { 0 }, p_pending = { 0 }, cpu_vm = { 0 }, busy_op = { 0 },
		      own_op_n = { 0 }, cpu_op_n = { 0 };
	struct series m_wall[3][2] = { { { 0 } } }; /* per mode and phase: wall of VM 0 */
	double total_wall = 0, total_cpu = 0, total_runq = 0;
	json_object *sum;

	for (i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--reps") == 0)
			reps = atoi(argv[++i]);
		else if (strcmp(argv[i], "--journal") == 0)
			journal = argv[++i];
		else if (strcmp(argv[i], "--raw") == 0)
			rawfile = argv[++i];
		else if (strcmp(argv[i], "--tag") == 0)
			tag = argv[++i];
		else if (strcmp(argv[i], "--timeout") == 0)
			timeout = atof(argv[++i]);
		else if (strcmp(argv[i], "--compare") == 0)
			compare = 1;
		else
			die("unknown option %s%s", argv[i], "");
	}
	if (argc < 2 || argv[argc - 1][0] == '-') {
		fprintf(stderr, "usage: overhead [--reps N] [--journal DIR] [--compare] [--raw FILE] "
				"[--tag TAG] [--timeout S] SPEC\n");
		return 2;
	}
	load_spec(argv[argc - 1]);
	if (compare && (nvms != 1 || vms[0].target2 == NULL || journal == NULL))
		die("--compare needs one VM with a second monitor (TARGET,TARGET2) and --journal%s%s",
		    "", "");
	if (rawfile != NULL && (raw = fopen(rawfile, "w")) == NULL)
		die("cannot write %s: %s", rawfile, strerror(errno));
	loop = ev_default_loop(0);
	for (i = 0; i < nvms; i++) {
		struct vm *v = &vms[i];
		cookie_io_functions_t io = { .write = tap_write };
		struct lm_error e;

		v->trace = fopencookie(v, "w", io);
		if (v->trace == NULL)
			die("%s%s", "fopencookie failed", "");
		setvbuf(v->trace, NULL, _IONBF, 0);
		v->c = conn_open(v, v->target, v->trace, timeout);
		if (compare)
			v->c2 = conn_open(v, v->target2, NULL, timeout);
		if (journal != NULL && (v->journal = merge_journal_open(journal, v->target, &e)) == NULL)
			die("journal: %s%s", e.msg, "");
	}
	for (;;) {
		int pending = 0;

		for (i = 0; i < nvms; i++) {
			if (vms[i].conn_failed)
				die("%s: %s", vms[i].target, vms[i].err);
			pending += vms[i].connected < 1 + compare;
		}
		if (!pending)
			break;
		ev_run(loop, EVRUN_ONCE);
	}
	/* with --compare the modes interleave T U T N T U T N ...: T gets reps
	 * repetitions, U and N half as many each, all under the same conditions */
	total_reps = compare ? 2 * reps : reps;
	ev_prepare_init(&loop_prepare, loop_prepare_cb);
	ev_check_init(&loop_check, loop_check_cb);
	ev_prepare_start(loop, &loop_prepare);
	ev_check_start(loop, &loop_check);
	for (rep = 0; rep < total_reps; rep++) {
		static const enum merge_verb verbs[2] = { MERGE_SNAPSHOT, MERGE_COMMIT };
		static const char *const mode_names[3] = { "T", "U", "N" };
		enum mode mode = !compare || rep % 2 == 0 ? MODE_T : rep % 4 == 1 ? MODE_U : MODE_N;
		double phase_wall[2], phase_cpu[2], rep_wall[2] = { 0 }, rep_busy[2] = { 0 };
		double rep_jobspan = 0;
		int ph;

		double lb0 = loop_busy;

		for (ph = 0; ph < 2; ph++) {
			double c0 = cpu_now(), w0 = now_real(), q0 = runq_wait();

			run_phase(verbs[ph], tag, rep, mode);
			phase_wall[ph] = now_real() - w0;
			phase_cpu[ph] = cpu_now() - c0;
			total_runq += runq_wait() - q0;
			total_wall += phase_wall[ph];
			total_cpu += phase_cpu[ph];
			for (i = 0; i < nvms; i++) {
				struct vm *v = &vms[i];

				if (mode != MODE_U)
					analyze(v);
				else
					v->wall = v->t1 - v->t0, v->busy = v->jobspan = 0,
					v->react_ready = v->react_pending = NAN, v->ncmds = v->njobs = 0;
				if (i == 0)
					s_add(&m_wall[mode][ph], v->wall);
				if (raw != NULL)
					fprintf(raw,
						"{\"rep\":%d,\"mode\":\"%s\",\"vm\":%d,\"phase\":\"%s\",\"disks\":%d,"
						"\"wall\":%.6f,\"busy\":%.6f,\"jobspan\":%.6f,\"cmds\":%d,"
						"\"jobs\":%d,\"react_ready\":%.6f,\"react_pending\":%.6f,"
						"\"phase_cpu\":%.6f}\n",
						rep, mode_names[mode], i, merge_verb_name(verbs[ph]), v->ndisks,
						v->wall, v->busy, v->jobspan, v->ncmds, v->njobs,
						isnan(v->react_ready) ? -1 : v->react_ready,
						isnan(v->react_pending) ? -1 : v->react_pending, phase_cpu[ph]);
				if (mode == MODE_N && nvms == 1) {
					rep_wall[ph] = v->wall;
					rep_busy[ph] = v->busy;
				}
				if (mode != MODE_T)
					continue;
				s_add(&r_ready, v->react_ready);
				s_add(&r_pending, v->react_pending);
				s_add(&d_ready, v->ready_deliver);
				s_add(&d_pending, v->pending_deliver);
				s_add(&p_ready, v->react_ready - v->ready_deliver);
				s_add(&p_pending, v->react_pending - v->pending_deliver);
				if (ph == 0)
					s_add(&wall_snap, v->wall);
				else
					s_add(&wall_commit, v->wall);
				if (nvms == 1) {
					rep_wall[ph] = v->wall;
					rep_busy[ph] = v->busy;
					if (ph == 1)
						rep_jobspan = v->jobspan;
				}
			}
		}
		if (mode == MODE_N && nvms == 1) {
			double ops = 2.0 * vms[0].ndisks;

			s_add(&own_op_n, (rep_wall[0] + rep_wall[1] - rep_busy[0] - rep_busy[1]) / ops);
			s_add(&cpu_op_n, (phase_cpu[0] + phase_cpu[1]) / ops);
		}
		if (mode == MODE_T) {
			s_add(&cpu_vm, (phase_cpu[0] + phase_cpu[1]) / nvms);
			if (nvms == 1) {
				double ops = 2.0 * vms[0].ndisks;
				double wall = rep_wall[0] + rep_wall[1];

				s_add(&wall_op, wall / ops);
				s_add(&issue_op, (wall - rep_jobspan) / ops);
				s_add(&own_op, (wall - rep_busy[0] - rep_busy[1]) / ops);
				s_add(&busy, rep_busy[0] + rep_busy[1]);
				s_add(&jobspan, rep_jobspan);
				s_add(&cpu_op, (phase_cpu[0] + phase_cpu[1]) / ops);
				s_add(&busy_op, (loop_busy - lb0) / ops);
			}
		}
		/* the merged overlays left the chains: remove them, untimed */
		for (i = 0; i < nvms; i++)
			for (k = 0; k < vms[i].ndisks; k++) {
				char *p;

				if (asprintf(&p, "%s/%s.%s.r%d.qcow2", vms[i].dir, vms[i].disks[k], tag,
					     rep) >= 0) {
					unlink(p);
					free(p);
				}
			}
	}
	ndisks = vms[0].ndisks;
	sum = json_object_new_object();
	json_object_object_add(sum, "vms", json_object_new_int(nvms));
	json_object_object_add(sum, "disks", json_object_new_int(ndisks));
	json_object_object_add(sum, "reps", json_object_new_int(reps));
	json_object_object_add(sum, "journal", json_object_new_boolean(journal != NULL));
	/* milliseconds from here on */
	if (nvms == 1) {
		json_object_object_add(sum, "wall_per_op_ms", s_json(&wall_op, 1e3));
		json_object_object_add(sum, "issue_overhead_per_op_ms", s_json(&issue_op, 1e3));
		json_object_object_add(sum, "own_per_op_ms", s_json(&own_op, 1e3));
		json_object_object_add(sum, "cpu_per_op_ms", s_json(&cpu_op, 1e3));
		json_object_object_add(sum, "loop_busy_per_op_ms", s_json(&busy_op, 1e3));
		json_object_object_add(sum, "busy_ms", s_json(&busy, 1e3));
		json_object_object_add(sum, "jobspan_ms", s_json(&jobspan, 1e3));
	}
	if (compare) {
		json_object *m = json_object_new_object();

		/* median snapshot wall + median commit wall, per mode */
		json_object_object_add(m, "traced_journal",
				       json_object_new_double(rep_sum(&m_wall[MODE_T][0], &m_wall[MODE_T][1]) * 1e3));
		json_object_object_add(m, "untraced_journal",
				       json_object_new_double(rep_sum(&m_wall[MODE_U][0], &m_wall[MODE_U][1]) * 1e3));
		json_object_object_add(m, "traced_nojournal",
				       json_object_new_double(rep_sum(&m_wall[MODE_N][0], &m_wall[MODE_N][1]) * 1e3));
		json_object_object_add(m, "reps_untraced", json_object_new_int(m_wall[MODE_U][0].n));
		json_object_object_add(m, "reps_nojournal", json_object_new_int(m_wall[MODE_N][0].n));
		json_object_object_add(m, "own_per_op_nojournal", s_json(&own_op_n, 1e3));
		json_object_object_add(m, "cpu_per_op_nojournal", s_json(&cpu_op_n, 1e3));
		json_object_object_add(sum, "modes_wall_ms", m);
	}
	json_object_object_add(sum, "wall_snapshot_ms", s_json(&wall_snap, 1e3));
	json_object_object_add(sum, "wall_commit_ms", s_json(&wall_commit, 1e3));
	json_object_object_add(sum, "react_ready_ms", s_json(&r_ready, 1e3));
	json_object_object_add(sum, "react_pending_ms", s_json(&r_pending, 1e3));
	json_object_object_add(sum, "deliver_ready_ms", s_json(&d_ready, 1e3));
	json_object_object_add(sum, "deliver_pending_ms", s_json(&d_pending, 1e3));
	json_object_object_add(sum, "process_ready_ms", s_json(&p_ready, 1e3));
	json_object_object_add(sum, "process_pending_ms", s_json(&p_pending, 1e3));
	json_object_object_add(sum, "cpu_per_vm_rep_ms", s_json(&cpu_vm, 1e3));
	{
		json_object *cs = json_object_new_object();

		for (i = 0; i < ncmdstats; i++)
			json_object_object_add(cs, cmdstats[i].name, s_json(cmdstats[i].s, 1e3));
		json_object_object_add(sum, "command_ms", cs);
	}
	json_object_object_add(sum, "total_wall_s", json_object_new_double(total_wall));
	json_object_object_add(sum, "total_cpu_s", json_object_new_double(total_cpu));
	json_object_object_add(sum, "loop_busy_s", json_object_new_double(loop_busy));
	json_object_object_add(sum, "runqueue_wait_s", json_object_new_double(total_runq));
	json_object_object_add(sum, "loop_busy_max_ms", json_object_new_double(loop_busy_max * 1e3));
	json_object_object_add(sum, "loop_iterations", json_object_new_int64(loop_iters));
	printf("%s\n", json_object_to_json_string_ext(sum, JSON_C_TO_STRING_PLAIN));
	json_object_put(sum);
	for (i = 0; i < nvms; i++) {
		qmp_conn_free(vms[i].c);
		qmp_conn_free(vms[i].c2);
		merge_journal_close(vms[i].journal);
		fclose(vms[i].trace);
		recs_clear(&vms[i]);
	}
	if (raw != NULL)
		fclose(raw);
	return 0;
}

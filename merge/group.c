/*
 * merge/group: the all-or-none engine behind snapshot, commit and stream
 * (see group.h).
 *
 * The job table is keyed by job id and fed by events, never by the reply
 * that started a job: QEMU reports "created" and "running" before the
 * command returns. g_step() looks at the whole table after every event or
 * reply and decides the next move, so the order in which QEMU reports
 * things cannot confuse it.
 */
#include "group.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "query.h"
#include "xlate.h"

enum g_phase {
	P_FETCH,    /* reading chains and jobs */
	P_START,    /* snapshot transaction or job starts in flight */
	P_RUN,      /* jobs running; waiting until all can pivot */
	P_COMPLETE, /* active jobs told to complete; waiting until all pending */
	P_FLUSH,    /* all pending: flushing what the jobs wrote before any pivot */
	P_FINALIZE, /* finalize sent to all: past the point of no return */
	P_ABORT,    /* cancelling every job; waiting until all concluded */
	P_CLEANUP,  /* reading the jobs' results, dismissing them */
	P_VERIFY,   /* reading the chains again */
	P_RELEASE,  /* releasing the nodes of layers that left the chains */
	P_SETTLE,   /* flushing the rewritten headers, then deleting (if asked) */
	P_DONE,
};

struct gjob {
	struct merge_group *g;
	char *want;    /* the disk as requested */
	char *top_arg, *base_arg; /* layers as requested, NULL: defaults */
	char *name;    /* the disk as livemerge names it */
	char *root;    /* node name of the disk's active layer */
	int top, base; /* layer indexes in the chain before; base may be nlayers */
	char *top_node, *base_node;
	char *overlay, *new_node;
	int overlay_ours; /* did not exist before this run */
	char *job_id;
	int active;
	enum xl_job_status st;
	int start; /* 0 not sent, 1 in flight, 2 started, -1 refused */
	int adopted; /* started by an earlier run (adopt mode) */
	int out_of_space; /* pauses for lack of space seen */
	const char *space_op; /* "read" or "write" */
	int vanished;     /* left QEMU's job list without a result */
	int cancel_sent, complete_sent, finalize_sent, dismissed;
	int finalize_failed; /* QEMU refused its finalize: it will not end by itself */
	int flush_via_hmp;   /* its last flush went out as an HMP command */
	int probe;           /* snapshot: the host cannot tell if the overlay exists: ask QEMU */
	int seen; /* present in the last query-jobs */
	int64_t offset, len;
	char *error;
	enum xl_job_status told_st; /* what the job callback last said */
	int64_t told_offset, told_len;
};

struct merge_group {
	struct qmp_conn *c;
	struct ev_loop *loop;
	struct merge_request req;
	struct merge_callbacks cb;
	void *arg;
	int n;
	struct gjob *jobs;
	struct merge_chains *before, *after;

	enum g_phase phase;
	int changed;     /* a command that changes state was sent */
	int outstanding; /* replies this phase waits for */
	int fetch_jobs_done, fetch_chains_done;
	json_object *jobs_before;

	enum merge_outcome outcome; /* what the end will report */
	struct lm_error err;
	int have_err;

	ev_timer poll;
	double poll_interval;
	int poll_inflight;

	/* quiesce */
	int frozen;          /* freeze answered, thaw not yet */
	int thaw_sent;
	int thaw_answered;
	int quiesce_lost; /* the watchdog thawed before the transaction answered */
	int transaction_out; /* the snapshot transaction is in flight */
	double frozen_at;
	double frozen_ms; /* how long the guest was frozen, -1 if it was not */
	ev_timer freeze_watchdog;

	ev_timer space_timer; /* resumes jobs paused for lack of space */
	double space_since;   /* when the first pause for space came, 0: none */

	int flush_by_reopen; /* the QEMU has no HMP (storage daemon): flush by reopening */
	json_object *left;   /* [{"disk","file","why"}]: layers --delete did not remove */

	int unknown; /* whatever happens next, the end is MERGE_UNKNOWN */
	int journal_failed;
	int journaled; /* the intent is in the journal */
	int cancel_requested;
	int refs; /* the group + every command in flight */
	int abandoned;
	int done;
};

struct g_call {
	struct merge_group *g;
	struct gjob *j;
	void (*fn)(struct merge_group *g, struct gjob *j, json_object *ret,
		   const struct lm_error *err);
};

static void g_step(struct merge_group *g);
static void g_verify(struct merge_group *g);
static void g_finish(struct merge_group *g);
static const struct merge_disk *g_find_disk(struct merge_group *g, struct gjob *j,
					    const struct merge_chains *ch);
static void g_thaw(struct merge_group *g);
static void g_out_of_space(struct merge_group *g, struct gjob *j, const char *operation);
static void g_abort(struct merge_group *g);

const char *merge_verb_name(enum merge_verb v)
{
	switch (v) {
	case MERGE_SNAPSHOT: return "snapshot";
	case MERGE_COMMIT: return "commit";
	case MERGE_STREAM: return "stream";
	}
	return "?";
}

static void g_msg(struct merge_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void g_msg(struct merge_group *g, const char *fmt, ...)
{
	char line[600];
	va_list ap;

	if (g->cb.message == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	g->cb.message(line, g->arg);
}

/* Remember the first error; later ones only go to the message stream. */
static void g_error(struct merge_group *g, const struct lm_error *err)
{
	if (!g->have_err) {
		g->err = *err;
		g->have_err = 1;
	} else {
		g_msg(g, "also: %s", err->msg);
	}
}

static void g_errorf(struct merge_group *g, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void g_errorf(struct merge_group *g, enum lm_err_code code, const char *fmt, ...)
{
	struct lm_error e;
	va_list ap;

	lm_error_set(&e, code, "%s", "");
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	g_error(g, &e);
}

static void g_unref(struct merge_group *g)
{
	int i;

	if (--g->refs > 0)
		return;
	ev_timer_stop(g->loop, &g->poll);
	ev_timer_stop(g->loop, &g->freeze_watchdog);
	ev_timer_stop(g->loop, &g->space_timer);
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		free(j->want);
		free(j->top_arg);
		free(j->base_arg);
		free(j->name);
		free(j->root);
		free(j->top_node);
		free(j->base_node);
		free(j->overlay);
		free(j->new_node);
		free(j->job_id);
		free(j->error);
	}
	free(g->jobs);
	free((char *)g->req.format);
	merge_chains_free(g->before);
	merge_chains_free(g->after);
	json_object_put(g->jobs_before);
	json_object_put(g->left);
	free(g);
}

static void g_reply_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err, void *arg)
{
	struct g_call *call = arg;
	struct merge_group *g = call->g;

	(void)c;
	if (!g->abandoned && !g->done)
		call->fn(g, call->j, ret, err);
	free(call);
	g_unref(g);
}

/* Journal a step before it is sent; -1 (g's error set) if it cannot be. */
static int g_journal(struct merge_group *g, const char *step, struct gjob *j)
{
	json_object *f;
	struct lm_error e;
	int r;

	if (g->req.journal == NULL || g->req.dry_run)
		return 0;
	f = json_object_new_object();
	if (j != NULL) {
		json_object_object_add(f, "disk", json_object_new_string(j->name ? j->name : j->want));
		if (j->job_id != NULL)
			json_object_object_add(f, "job", json_object_new_string(j->job_id));
	}
	r = merge_journal_step(g->req.journal, step, f, &e);
	json_object_put(f);
	if (r < 0) {
		g->journal_failed = 1;
		g_error(g, &e);
	}
	return r;
}

/*
 * Send cmd (args taken). state_changing: announce it through the command
 * callback, and on a dry run do not send it (fn is not called then).
 * Returns 0, or -1 when the connection has failed (g's error set).
 */
static int g_send(struct merge_group *g, struct xl_cmd cmd, int state_changing, struct gjob *j,
		  void (*fn)(struct merge_group *, struct gjob *, json_object *,
			     const struct lm_error *))
{
	struct g_call *call;
	struct lm_error e;
	int r;

	if (state_changing && g_journal(g, cmd.step, j) < 0) {
		json_object_put(cmd.args);
		return -1;
	}
	if (state_changing && g->cb.command != NULL)
		g->cb.command(cmd.name, cmd.args, g->arg);
	if (state_changing && g->req.dry_run) {
		json_object_put(cmd.args);
		return 0;
	}
	call = calloc(1, sizeof(*call));
	if (call == NULL) {
		json_object_put(cmd.args);
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	call->g = g;
	call->j = j;
	call->fn = fn;
	r = qmp_conn_execute(g->c, cmd.name, cmd.args, -1, g_reply_cb, call, &e);
	json_object_put(cmd.args);
	if (r < 0) {
		free(call);
		g_error(g, &e);
		return -1;
	}
	if (state_changing)
		g->changed = 1;
	g->refs++;
	return 0;
}

static struct gjob *g_job_by_id(struct merge_group *g, const char *id)
{
	int i;

	if (id == NULL)
		return NULL;
	for (i = 0; i < g->n; i++)
		if (g->jobs[i].job_id != NULL && strcmp(g->jobs[i].job_id, id) == 0)
			return &g->jobs[i];
	return NULL;
}

static void g_job_update(struct merge_group *g, struct gjob *j)
{
	struct merge_job_update u = {
		.disk = j->name,
		.job_id = j->job_id,
		.status = xl_job_status_name(j->st),
		.offset = j->offset,
		.len = j->len,
		.speed = g->req.speed,
	};

	if (j->told_st == j->st && j->told_offset == j->offset && j->told_len == j->len)
		return;
	j->told_st = j->st;
	j->told_offset = j->offset;
	j->told_len = j->len;
	if (g->cb.job != NULL)
		g->cb.job(&u, g->arg);
}

/* The connection failed under us: nothing more can be sent. */
static void g_conn_lost(struct merge_group *g, const struct lm_error *err)
{
	struct lm_error e = *err;

	if (g->done)
		return;
	if (g->journal_failed) {
		/* nothing unjournaled was sent */
		g->outcome = g->changed ? MERGE_UNKNOWN : MERGE_FAILED;
		g_finish(g);
		return;
	}
	if (g->changed) {
		lm_error_prefix(&e, "monitor lost while the %s ran (QEMU goes on with its jobs; "
				    "check with 'livemerge jobs' and 'livemerge chain'): ",
				merge_verb_name(g->req.verb));
		g->outcome = MERGE_UNKNOWN;
	} else {
		g->outcome = MERGE_CONN_FAILED;
	}
	g->have_err = 0;
	g_error(g, &e);
	g_finish(g);
}

static int g_is_conn_error(const struct lm_error *err)
{
	return err->code != LM_ERR_QMP && err->code != LM_ERR_TIMEOUT;
}

/* ---- the end ---------------------------------------------------------- */

static json_object *g_result_json(struct merge_group *g)
{
	json_object *o = json_object_new_object(), *disks = json_object_new_array();
	const struct merge_chains *ch = g->after ? g->after : g->before;
	int i;

	json_object_object_add(o, "type", json_object_new_string("result"));
	json_object_object_add(o, "ok", json_object_new_boolean(g->outcome == MERGE_DONE));
	json_object_object_add(o, "verb", json_object_new_string(merge_verb_name(g->req.verb)));
	json_object_object_add(o, "outcome", json_object_new_int(g->outcome));
	if (g->req.dry_run)
		json_object_object_add(o, "dry-run", json_object_new_boolean(1));
	if (qmp_conn_qemu_version(g->c) > 0) {
		int v = qmp_conn_qemu_version(g->c);
		char ver[32];

		snprintf(ver, sizeof(ver), "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
		json_object_object_add(o, "qemu", json_object_new_string(ver));
	}
	if (g->frozen_ms >= 0)
		json_object_object_add(o, "frozen-ms", json_object_new_double(g->frozen_ms));
	if (g->req.verb == MERGE_SNAPSHOT && g->req.quiesce != NULL)
		json_object_object_add(o, "quiesced",
				       json_object_new_boolean(g->frozen_ms >= 0 && !g->quiesce_lost));
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *d = ch && j->name ? g_find_disk(g, j, ch) : NULL;
		json_object *jd = d ? merge_disk_to_json(d) : json_object_new_object();

		if (d == NULL)
			json_object_object_add(jd, "disk", json_object_new_string(j->name ? j->name
											  : j->want));
		if (j->job_id != NULL)
			json_object_object_add(jd, "job", json_object_new_string(j->job_id));
		if (j->error != NULL)
			json_object_object_add(jd, "error", json_object_new_string(j->error));
		json_object_array_add(disks, jd);
	}
	json_object_object_add(o, "disks", disks);
	if (g->left != NULL)
		json_object_object_add(o, "left", json_object_get(g->left));
	if (g->outcome != MERGE_DONE && g->have_err) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "code", json_object_new_string(lm_error_code_name(g->err.code)));
		json_object_object_add(e, "message", json_object_new_string(g->err.msg));
		if (g->err.qmp_class[0] != '\0')
			json_object_object_add(e, "class", json_object_new_string(g->err.qmp_class));
		json_object_object_add(o, "error", e);
	}
	return o;
}

static void g_finish(struct merge_group *g)
{
	struct merge_result r;

	if (g->done)
		return;
	g->done = 1;
	g->phase = P_DONE;
	ev_timer_stop(g->loop, &g->poll);
	ev_timer_stop(g->loop, &g->space_timer);
	qmp_conn_set_event_cb(g->c, NULL, NULL);
	if (g->unknown)
		g->outcome = MERGE_UNKNOWN;
	if (g->outcome != MERGE_DONE && !g->have_err)
		g_errorf(g, LM_ERR_FAILED, "%s failed", merge_verb_name(g->req.verb));
	r.outcome = g->outcome;
	r.err = g->outcome == MERGE_DONE ? NULL : &g->err;
	r.json = g_result_json(g);
	if (g->journaled && !g->req.dry_run && g->outcome != MERGE_UNKNOWN) {
		/* an unknown end stays open: 'recover' looks at it again */
		json_object *f = json_object_new_object();
		struct lm_error e;

		json_object_object_add(f, "outcome", json_object_new_int(g->outcome));
		if (merge_journal_step(g->req.journal, "end", f, &e) < 0)
			g_msg(g, "%s", e.msg);
		json_object_put(f);
	}
	g->refs++; /* the callback may free the group */
	if (g->cb.done != NULL)
		g->cb.done(&r, g->arg);
	json_object_put(r.json);
	g_unref(g);
}

/* ---- file helpers --------------------------------------------------------- */

static const struct merge_fileops *g_files(struct merge_group *g)
{
	return g->req.files != NULL ? g->req.files : merge_files_local();
}

static int g_file_exists(struct merge_group *g, const char *path, struct lm_error *err)
{
	return g_files(g)->exists(path, g_files(g)->arg, err);
}

static int g_file_remove(struct merge_group *g, const char *path, struct lm_error *err)
{
	return g_files(g)->remove(path, g_files(g)->arg, err);
}

/* Remove the overlays this run created (never one that existed before). */
static void g_remove_our_overlays(struct merge_group *g)
{
	int i;

	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		struct lm_error e;

		if (!j->overlay_ours || g_file_exists(g, j->overlay, &e) != 1)
			continue;
		if (g_file_remove(g, j->overlay, &e) < 0)
			g_msg(g, "%s: %s", j->name, e.msg);
		else
			g_msg(g, "%s: removed %s, created by this run", j->name, j->overlay);
	}
}

/* ---- expected chains ------------------------------------------------------- */

static const struct merge_disk *g_disk_before(struct merge_group *g, struct gjob *j)
{
	return merge_chains_find(g->before, j->name);
}

/* The file names j's chain must have: after the change (changed=1) or as
 * before (0). Returns the count, at most max, pointers borrowed from g. */
static int g_expected(struct merge_group *g, struct gjob *j, int changed, const char **expect,
		      int max)
{
	const struct merge_disk *b = g_disk_before(g, j);
	int n = 0, i;

	if (!changed || g->req.dry_run) {
		for (i = 0; i < b->nlayers && n < max; i++)
			expect[n++] = b->layers[i].filename;
	} else if (g->req.verb == MERGE_SNAPSHOT) {
		expect[n++] = j->overlay;
		for (i = 0; i < b->nlayers && n < max; i++)
			expect[n++] = b->layers[i].filename;
	} else {
		int keep_top = g->req.verb == MERGE_COMMIT ? j->top : 1;

		for (i = 0; i < keep_top && n < max; i++)
			expect[n++] = b->layers[i].filename;
		for (i = j->base; i < b->nlayers && n < max; i++)
			expect[n++] = b->layers[i].filename;
	}
	return n;
}

/* j's disk in ch: by name, or (a disk named after its active node, whose
 * name moved with it) by its chain as expected, or as before. */
static const struct merge_disk *g_find_disk(struct merge_group *g, struct gjob *j,
					    const struct merge_chains *ch)
{
	const struct merge_disk *d = merge_chains_find(ch, j->name);
	const char *files[4096];
	int n;

	if (d != NULL || ch == g->before)
		return d;
	n = g_expected(g, j, 1, files, 4096);
	if ((d = merge_chains_find_files(ch, files, n)) != NULL)
		return d;
	n = g_expected(g, j, 0, files, 4096);
	return merge_chains_find_files(ch, files, n);
}

/* Check j's chain in g->after: expected (changed=1) or as before (0). */
static int g_chain_check(struct merge_group *g, struct gjob *j, int changed, char *why, size_t len)
{
	const struct merge_disk *a = g_find_disk(g, j, g->after);
	const char *expect[4096];
	int n, i;

	if (a == NULL) {
		snprintf(why, len, "%s: the disk is gone", j->name);
		return -1;
	}
	n = g_expected(g, j, changed, expect, 4096);
	for (i = 0; i < n && i < a->nlayers; i++) {
		if (strcmp(a->layers[i].filename, expect[i]) != 0) {
			snprintf(why, len, "%s: layer %d is %s, expected %s", j->name, i,
				 a->layers[i].filename, expect[i]);
			return -1;
		}
	}
	if (a->nlayers != n) {
		snprintf(why, len, "%s: chain has %d layers, expected %d", j->name, a->nlayers, n);
		return -1;
	}
	return 0;
}

/* The journal's intent: all recovery needs to finish or roll back. */
static json_object *g_intent(struct merge_group *g)
{
	json_object *o = json_object_new_object(), *disks = json_object_new_array();
	const char *list[4096];
	int i, k, n;

	json_object_object_add(o, "verb", json_object_new_string(merge_verb_name(g->req.verb)));
	json_object_object_add(o, "target", json_object_new_string(qmp_conn_desc(g->c)));
	if (g->req.quiesce != NULL)
		json_object_object_add(o, "qga", json_object_new_string(qga_desc(g->req.quiesce)));
	json_object_object_add(o, "delete", json_object_new_boolean(g->req.delete_removed));
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		json_object *d = json_object_new_object(), *arr;

		json_object_object_add(d, "disk", json_object_new_string(j->name));
		json_object_object_add(d, "root", json_object_new_string(j->root));
		if (j->job_id != NULL)
			json_object_object_add(d, "job", json_object_new_string(j->job_id));
		if (j->overlay != NULL) {
			json_object_object_add(d, "overlay", json_object_new_string(j->overlay));
			json_object_object_add(d, "overlay-created",
					       json_object_new_boolean(j->overlay_ours));
		}
		arr = json_object_new_array();
		n = g_expected(g, j, 0, list, 4096);
		for (k = 0; k < n; k++)
			json_object_array_add(arr, json_object_new_string(list[k]));
		json_object_object_add(d, "before", arr);
		arr = json_object_new_array();
		n = g_expected(g, j, 1, list, 4096);
		for (k = 0; k < n; k++)
			json_object_array_add(arr, json_object_new_string(list[k]));
		json_object_object_add(d, "expect", arr);
		arr = json_object_new_array();
		if (g->req.verb != MERGE_SNAPSHOT) {
			for (k = g->req.verb == MERGE_COMMIT ? j->top : 1; k < j->base; k++) {
				const struct merge_layer *l = &b->layers[k];
				json_object *r = json_object_new_object();

				json_object_object_add(r, "filename", json_object_new_string(l->filename));
				if (l->node_name != NULL)
					json_object_object_add(r, "node", json_object_new_string(l->node_name));
				if (l->file_node != NULL)
					json_object_object_add(r, "file-node",
							       json_object_new_string(l->file_node));
				json_object_array_add(arr, r);
			}
		}
		json_object_object_add(d, "remove", arr);
		json_object_array_add(disks, d);
	}
	json_object_object_add(o, "disks", disks);
	return o;
}

/* ---- verify and finish ------------------------------------------------------ */

/* Index, in the chain before, of the layer that received j's data: the top
 * for a stream, the base for a commit. */
static int g_receiving_layer(struct merge_group *g, struct gjob *j)
{
	return g->req.verb == MERGE_STREAM ? 0 : j->base;
}

/* Index, in the chain before, of the layer whose header names the new
 * backing after the change: the top for a stream, the overlay above top
 * for an intermediate commit, the base (now active, header unchanged) for
 * an active commit. */
static int g_rewritten_layer(struct merge_group *g, struct gjob *j)
{
	if (g->req.verb == MERGE_STREAM)
		return 0;
	return j->active ? j->base : j->top - 1;
}

static void g_leave(struct merge_group *g, struct gjob *j, const char *file, const char *why)
{
	json_object *o = json_object_new_object();

	if (g->left == NULL)
		g->left = json_object_new_array();
	json_object_object_add(o, "disk", json_object_new_string(j->name));
	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "why", json_object_new_string(why));
	json_object_array_add(g->left, o);
	g_msg(g, "%s: left %s: %s", j->name, file, why);
}

static int g_in_any_chain(const struct merge_chains *ch, const char *file)
{
	int i, k;

	for (i = 0; ch != NULL && i < ch->ndisks; i++)
		for (k = 0; k < ch->disks[i].nlayers; k++)
			if (strcmp(ch->disks[i].layers[k].filename, file) == 0)
				return 1;
	return 0;
}

/*
 * Delete the layers that left the chains, each only after checking it on
 * the host, not on QEMU's word: the image that now holds the data names the
 * expected backing in its own header; the layer is in no chain now, is a
 * regular file or block device (no symlink followed), holds the format the
 * chain reported and names the layer below it as recorded before the
 * operation. Anything else is left in place, with the reason.
 */
static void g_delete_removed(struct merge_group *g)
{
	int i, k;

	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		int from = g->req.verb == MERGE_COMMIT ? j->top : 1;
		int rw = g_rewritten_layer(g, j), below = g->req.verb == MERGE_COMMIT && j->active
								  ? j->base + 1 : j->base;
		char why[600], line[700];

		if (merge_image_verify(g_files(g), b->layers[rw].filename, b->layers[rw].format,
				       below < b->nlayers ? b->layers[below].filename : NULL, why,
				       sizeof(why)) < 0) {
			snprintf(line, sizeof(line), "the image now holding the data, %s, is not as "
				 "expected on disk: %s", b->layers[rw].filename, why);
			for (k = from; k < j->base; k++)
				g_leave(g, j, b->layers[k].filename, line);
			continue;
		}
		for (k = from; k < j->base; k++) {
			struct lm_error e;
			const char *f = b->layers[k].filename;

			if (g_in_any_chain(g->after, f)) {
				g_leave(g, j, f, "it is still in a chain");
				continue;
			}
			if (merge_image_verify(g_files(g), f, b->layers[k].format,
					       k + 1 < b->nlayers ? b->layers[k + 1].filename : NULL,
					       why, sizeof(why)) < 0) {
				g_leave(g, j, f, why);
				continue;
			}
			if (g_journal(g, "delete", j) < 0) {
				g_leave(g, j, f, g->err.msg);
				continue;
			}
			if (g_file_remove(g, f, &e) < 0)
				g_leave(g, j, f, e.msg);
			else
				g_msg(g, "%s: deleted %s", j->name, f);
		}
	}
}

/* ---- durability: flushes ---------------------------------------------------- */

static void g_settled(struct merge_group *g)
{
	if (g->req.delete_removed && !g->req.dry_run)
		g_delete_removed(g);
	g_finish(g);
}

static void g_finalize_all(struct merge_group *g);
static int g_flush_one(struct merge_group *g, struct gjob *j);

/* One flush of the phase answered (or needed no command): the next step
 * runs when every one has. */
static void g_flush_answered(struct merge_group *g)
{
	if (--g->outstanding > 0)
		return;
	if (g->phase == P_FLUSH)
		g_finalize_all(g);
	else
		g_settled(g);
}

/* j's flush failed (why: a line). Before the pivot nothing may pivot:
 * cancel every job. After it the chains changed as asked, but the new
 * backing names may not be on disk yet: keep every layer. */
static void g_flush_failed(struct merge_group *g, struct gjob *j, const char *why)
{
	if (g->phase == P_FLUSH) {
		g_errorf(g, LM_ERR_FAILED, "%s: cannot flush what the job wrote to stable storage: "
			 "%s", j->name, why);
		g_abort(g);
		g_step(g);
		return;
	}
	g_errorf(g, LM_ERR_STATE, "%s: the merge is done, but the rewritten image header could "
		 "not be flushed to stable storage: %s; no layer was deleted", j->name, why);
	g->outcome = MERGE_UNKNOWN;
	g->req.delete_removed = 0;
	g_flush_answered(g);
}

/* Send j's flush, or account for one that needs no command (1). */
static void g_flush_send(struct merge_group *g, struct gjob *j)
{
	int r = g_flush_one(g, j);

	if (r < 0 && qmp_conn_error(g->c) != NULL)
		g_conn_lost(g, &g->err);
	else if (r < 0)
		g_flush_failed(g, j, g->err.msg);
	else if (r > 0 || g->req.dry_run)
		g_flush_answered(g);
}

static void g_flushed(struct merge_group *g, struct gjob *j, json_object *ret,
		      const struct lm_error *err)
{
	const char *said = NULL;
	char why[600];

	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (g->phase != P_FLUSH && g->phase != P_SETTLE) {
		g_step(g); /* the flush was overtaken by an abort */
		return;
	}
	if (err != NULL && strcmp(err->qmp_class, "CommandNotFound") == 0 && j->flush_via_hmp) {
		/* a storage daemon: no HMP; reopen the node instead */
		g->flush_by_reopen = 1;
		g_flush_send(g, j);
		return;
	}
	why[0] = '\0';
	if (err != NULL)
		snprintf(why, sizeof(why), "%s", err->msg);
	else if (j->flush_via_hmp && xl_flush_hmp_result(ret, &said) < 0)
		snprintf(why, sizeof(why), "QEMU said: %.500s", said);
	if (why[0] != '\0')
		g_flush_failed(g, j, why);
	else
		g_flush_answered(g);
}

/*
 * A storage daemon can flush a node only by reopening it, and QEMU reopens
 * only nodes with a name of their own (not the "#blockN" it gives layers it
 * opened from a backing file name). Where QEMU flushes such a node itself,
 * say so and rely on it (1); else -1 (g's error set).
 *  - an active commit: the mirror behind it flushed the base before the job
 *    went pending (and the base's header is not rewritten);
 *  - an intermediate commit into a read-only base: QEMU reopens the base
 *    read-only at the end of the finalize, which flushes it;
 *  - after the pivot: the rewritten header went straight to the file (QEMU
 *    caches no header), so it is with the host's page cache already.
 */
static int g_flush_unnamed(struct merge_group *g, struct gjob *j, const struct merge_layer *l)
{
	const struct merge_disk *b = g_disk_before(g, j);

	if (g->phase == P_SETTLE) {
		g_msg(g, "%s: %s has no node name of its own, so this QEMU cannot flush it; its "
		      "rewritten header was written straight to the file", j->name, l->filename);
		return 1;
	}
	if (g->req.verb == MERGE_COMMIT && j->active) {
		g_msg(g, "%s: %s has no node name of its own, so this QEMU cannot flush it; the "
		      "commit's mirror flushed it before the job paused", j->name, l->filename);
		return 1;
	}
	if (g->req.verb == MERGE_COMMIT && b->layers[j->base].read_only) {
		g_msg(g, "%s: %s has no node name of its own, so this QEMU cannot flush it now; "
		      "QEMU flushes it when it makes it read-only again at the finalize", j->name,
		      l->filename);
		return 1;
	}
	g_errorf(g, LM_ERR_FAILED, "%s has no node name of its own and this QEMU (no HMP) can "
		 "flush only named nodes: give it a node-name", l->filename);
	return -1;
}

/* Send the flush of j's layer for the current phase: before the pivot, the
 * layer the job wrote into (chain before); after it, the layer whose header
 * was rewritten (chain after). 0 sent (dry run: announced), 1 nothing to
 * send, -1 (g's error set). */
static int g_flush_one(struct merge_group *g, struct gjob *j)
{
	const struct merge_disk *d;
	const struct merge_layer *l;
	struct xl_cmd cmd = { 0 };
	int idx, writing = g->phase == P_FLUSH;

	if (writing) {
		d = g_disk_before(g, j);
		idx = g_receiving_layer(g, j);
	} else if (g->req.dry_run) { /* nothing changed: name it as it was */
		d = g_disk_before(g, j);
		idx = g_rewritten_layer(g, j);
	} else {
		d = g_find_disk(g, j, g->after);
		idx = g->req.verb == MERGE_COMMIT && !j->active ? j->top - 1 : 0;
	}
	if (d == NULL || idx >= d->nlayers) {
		g_errorf(g, LM_ERR_STATE, "%s: cannot find the layer to flush", j->name);
		return -1;
	}
	l = &d->layers[idx];
	if (!g->flush_by_reopen)
		cmd = xl_flush_hmp(l->node_name);
	if (cmd.args == NULL) {
		struct xl_node_opts o = {
			.node = l->node_name,
			.driver = l->format,
			.file = l->file_node,
			.backing = idx + 1 < d->nlayers ? d->layers[idx + 1].node_name : NULL,
			.read_only = writing ? 0 : l->read_only,
			.cache_direct = l->cache_direct,
			.cache_no_flush = l->cache_no_flush,
			.detect_zeroes = l->detect_zeroes,
		};

		if (l->node_name == NULL || l->node_name[0] == '#')
			return g_flush_unnamed(g, j, l);
		if (l->file_node == NULL || (idx + 1 < d->nlayers && o.backing == NULL)) {
			g_errorf(g, LM_ERR_STATE, "%s: cannot flush %s: QEMU does not tell its "
				 "nodes", j->name, l->filename);
			return -1;
		}
		cmd = xl_flush_reopen(&o);
	}
	j->flush_via_hmp = strcmp(cmd.name, "human-monitor-command") == 0;
	return g_send(g, cmd, 1, j, g_flushed);
}

/* Flush every job's data (P_FLUSH) or rewritten header (P_SETTLE); the
 * next step runs when every flush answered. */
static void g_flush_all(struct merge_group *g, enum g_phase phase)
{
	int i;

	g->phase = phase;
	g->outstanding = g->n + 1;
	for (i = 0; i < g->n && g->phase == phase && !g->done; i++)
		g_flush_send(g, &g->jobs[i]);
	if (g->phase == phase && !g->done)
		g_flush_answered(g);
}

static void g_released(struct merge_group *g, struct gjob *j, json_object *ret,
		       const struct lm_error *err)
{
	(void)ret;
	(void)j;
	/* nodes QEMU opened implicitly are gone already; "not owned" and
	 * "in use" are expected answers, and the chain is verified anyway */
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (--g->outstanding > 0)
		return;
	g_flush_all(g, P_SETTLE);
}

/* Layers that left the chains may still be held open by QEMU when they
 * were added with -blockdev: release them, format node before its file. */
static void g_release_removed(struct merge_group *g)
{
	int i, k;

	g->phase = P_RELEASE;
	g->outstanding = 1;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		int from = g->req.verb == MERGE_COMMIT ? j->top : 1;

		for (k = from; k < j->base; k++) {
			const struct merge_layer *l = &b->layers[k];

			/* only what QEMU still holds: it drops the nodes it opened itself */
			if (l->node_name != NULL && l->node_name[0] != '#' &&
			    (g->req.dry_run || merge_chains_has_node(g->after, l->node_name))) {
				if (g_send(g, xl_node_release(l->node_name), 1, j, g_released) < 0)
					goto lost;
				g->outstanding += !g->req.dry_run; /* no reply on a dry run */
			}
			if (l->file_node != NULL && l->file_node[0] != '#' &&
			    (g->req.dry_run || merge_chains_has_node(g->after, l->file_node))) {
				if (g_send(g, xl_node_release(l->file_node), 1, j, g_released) < 0)
					goto lost;
				g->outstanding += !g->req.dry_run;
			}
		}
	}
	if (--g->outstanding == 0)
		g_flush_all(g, P_SETTLE);
	return;
lost:
	g_conn_lost(g, &g->err);
}

static void g_verified(struct merge_chains *ch, const struct lm_error *err, void *arg)
{
	struct merge_group *g = arg;
	int expect_change = g->outcome == MERGE_DONE;
	char why[600];
	int i, bad = 0;

	if (g->done || g->abandoned) {
		merge_chains_free(ch);
		g_unref(g);
		return;
	}
	if (ch == NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
		} else {
			g_error(g, err);
			g->outcome = MERGE_UNKNOWN;
			g_finish(g);
		}
		g_unref(g);
		return;
	}
	g->after = ch;
	for (i = 0; i < g->n; i++) {
		if (g_chain_check(g, &g->jobs[i], expect_change, why, sizeof(why)) < 0) {
			g_errorf(g, LM_ERR_STATE, "%s chain check failed: %s",
				 expect_change ? "after the change," : "expected as before,", why);
			bad = 1;
		}
	}
	if (bad)
		g->outcome = MERGE_UNKNOWN;
	else if (expect_change && g->req.verb != MERGE_SNAPSHOT)
		g_release_removed(g); /* dry run: announced only (test-group: test_dry_run_commit) */
	if (g->phase != P_RELEASE && g->phase != P_SETTLE && !g->done)
		g_finish(g);
	g_unref(g);
}

/* Read the chains; cb gets them with a reference on g. */
static void g_read_chains(struct merge_group *g, merge_chains_cb cb)
{
	struct lm_error e;

	if (merge_chains_fetch(g->c, cb, g, &e) < 0) {
		g_conn_lost(g, &e);
		return;
	}
	g->refs++;
}

static void g_verify(struct merge_group *g)
{
	g->phase = P_VERIFY;
	g_read_chains(g, g_verified);
}

/* ---- jobs: cleanup ------------------------------------------------------------ */

static void g_dismissed(struct merge_group *g, struct gjob *j, json_object *ret,
			const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
			return;
		}
		g_msg(g, "%s: %s", j->name, err->msg);
	} else {
		j->dismissed = 1;
	}
	if (--g->outstanding == 0)
		g_verify(g);
}

static void g_dismiss_all(struct merge_group *g)
{
	int i;

	g->outstanding = 1;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		if (j->start != 2 || j->dismissed || j->st == XL_JOB_NULL || j->finalize_failed)
			continue;
		if (g_send(g, xl_job_verb(XL_VERB_DISMISS, j->job_id), 1, j, g_dismissed) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
		if (!g->req.dry_run)
			g->outstanding++;
	}
	if (--g->outstanding == 0)
		g_verify(g);
}

/* Read every concluded job's error before dismissing it. */
static void g_results_read(struct merge_group *g, struct gjob *unused, json_object *ret,
			   const struct lm_error *err)
{
	struct xl_job_info ji;
	int i;

	(void)unused;
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (err != NULL)
		g_msg(g, "cannot read the jobs' results: %s", err->msg);
	for (i = 0; err == NULL && xl_query_jobs_entry(ret, i, &ji) == 0; i++) {
		struct gjob *j = g_job_by_id(g, ji.id);

		if (j == NULL || ji.error == NULL)
			continue;
		if (j->error == NULL)
			j->error = strdup(ji.error);
	}
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		if (j->error == NULL)
			continue;
		if (g->outcome == MERGE_DONE) {
			g_errorf(g, LM_ERR_STATE, "%s: job %s failed at finalize: %s", j->name,
				 j->job_id, j->error);
			g->outcome = MERGE_UNKNOWN;
		} else if (!j->cancel_sent) {
			g_errorf(g, LM_ERR_FAILED, "%s: job %s failed: %s", j->name, j->job_id,
				 j->error);
		}
	}
	g_dismiss_all(g);
}

static void g_cleanup(struct merge_group *g)
{
	g->phase = P_CLEANUP;
	if (g->req.dry_run) {
		g_dismiss_all(g);
		return;
	}
	if (g_send(g, xl_query_jobs(), 0, NULL, g_results_read) < 0)
		g_conn_lost(g, &g->err);
}

/* ---- jobs: the barrier ---------------------------------------------------------- */

static int g_job_ended(const struct gjob *j)
{
	return j->st == XL_JOB_CONCLUDED || j->st == XL_JOB_NULL;
}

static int g_job_failed(const struct gjob *j)
{
	return j->start == -1 || j->st == XL_JOB_ABORTING || g_job_ended(j) || j->error != NULL;
}

static void g_cancelled(struct merge_group *g, struct gjob *j, json_object *ret,
			const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
			return;
		}
		/* e.g. it concluded meanwhile: its state decides */
		g_msg(g, "%s: %s", j->name, err->msg);
	}
	g_step(g);
}

static void g_abort(struct merge_group *g)
{
	int i;

	if (g->phase != P_ABORT) {
		g->phase = P_ABORT;
		g->outcome = MERGE_FAILED;
		g_msg(g, "cancelling every job: no disk pivots");
	}
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		/* a job that is aborting or failed is ending by itself: QEMU would
		 * refuse the cancel, and its own error must still be reported
		 * (test-group: test_commit_one_fails) */
		if (j->start != 2 || j->cancel_sent || g_job_ended(j) || j->st == XL_JOB_ABORTING ||
		    j->error != NULL)
			continue;
		j->cancel_sent = 1;
		if (g_send(g, xl_job_verb(XL_VERB_CANCEL, j->job_id), 1, j, g_cancelled) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
	}
}

static void g_job_reply(struct merge_group *g, struct gjob *j, json_object *ret,
			const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
			return;
		}
		g_errorf(g, err->code == LM_ERR_QMP ? LM_ERR_FAILED : err->code, "%s: %s", j->name,
			 err->msg);
		if (g->phase == P_FINALIZE) {
			g->outcome = MERGE_UNKNOWN;
			j->finalize_failed = 1;
			if (j->error == NULL)
				j->error = strdup(err->msg);
		} else if (g->phase != P_ABORT) {
			g_abort(g);
		}
	}
	g_step(g);
}

static void g_started(struct merge_group *g, struct gjob *j, json_object *ret,
		      const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
			return;
		}
		j->start = -1;
		g_errorf(g, LM_ERR_FAILED, "%s: QEMU refused the %s: %s", j->name,
			 merge_verb_name(g->req.verb), err->msg);
		snprintf(g->err.qmp_class, sizeof(g->err.qmp_class), "%s", err->qmp_class);
	} else {
		j->start = 2;
		g_msg(g, "%s: job %s started", j->name, j->job_id);
	}
	g_step(g);
}

/* Every job pending and its data flushed: finalize all, back to back. */
static void g_finalize_all(struct merge_group *g)
{
	int i;

	g->phase = P_FINALIZE;
	g->outcome = MERGE_DONE;
	g_msg(g, "finalizing every job back to back");
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		j->finalize_sent = 1;
		if (g_send(g, xl_job_verb(XL_VERB_FINALIZE, j->job_id), 1, j, g_job_reply) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
	}
	if (g->req.dry_run)
		for (i = 0; i < g->n; i++)
			g->jobs[i].st = XL_JOB_CONCLUDED;
	g_step(g);
}

static void g_step(struct merge_group *g)
{
	int i, all_started = 1, any_failed = 0, all_ready = 1, all_pending = 1, all_ended = 1;

	if (g->done || g->phase < P_RUN || g->phase >= P_CLEANUP)
		return;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		if (j->start == 1)
			all_started = 0;
		if (j->start != 2 && j->start != -1)
			all_ended = 0;
		/* do not wait for a job whose finalize was refused (test-group:
		 * test_commit_finalize_error); 'recover' finalizes it */
		if (j->start == 2 && !g_job_ended(j) && !j->finalize_failed)
			all_ended = 0;
		if (g_job_failed(j))
			any_failed = 1;
		if (!(j->start == 2 && (j->st == XL_JOB_PENDING || (j->active && j->st == XL_JOB_READY))))
			all_ready = 0;
		if (!(j->start == 2 && j->st == XL_JOB_PENDING))
			all_pending = 0;
	}
	switch (g->phase) {
	case P_RUN:
	case P_COMPLETE:
	case P_FLUSH:
		if (any_failed || g->cancel_requested) {
			if (g->cancel_requested && !g->have_err)
				g_errorf(g, LM_ERR_FAILED, "%s cancelled by request",
					 merge_verb_name(g->req.verb));
			g_abort(g);
			g_step(g);
			return;
		}
		if (g->phase == P_RUN && all_started && all_ready) {
			g->phase = P_COMPLETE;
			for (i = 0; i < g->n && !(g->jobs[i].active && g->jobs[i].st == XL_JOB_READY); i++)
				;
			g_msg(g, i < g->n ? "every job is ready: completing them" : "every job is ready");
			for (i = 0; i < g->n; i++) {
				struct gjob *j = &g->jobs[i];

				/* a job taken over may have been completed already */
				if (!j->active || j->complete_sent || j->st != XL_JOB_READY)
					continue;
				j->complete_sent = 1;
				if (g_send(g, xl_job_verb(XL_VERB_COMPLETE, j->job_id), 1, j,
					   g_job_reply) < 0) {
					g_conn_lost(g, &g->err);
					return;
				}
			}
			if (g->req.dry_run)
				for (i = 0; i < g->n; i++)
					g->jobs[i].st = XL_JOB_PENDING;
			g_step(g);
			return;
		}
		if (g->phase == P_COMPLETE && all_pending) {
			/* nothing may make a layer unnecessary before the data that
			 * replaces it is on stable storage (test-durable) */
			g_msg(g, "every job is pending: flushing what they wrote");
			g_flush_all(g, P_FLUSH);
		}
		return;
	case P_FINALIZE:
	case P_ABORT:
		/* a job whose start was answered after the abort began must be
		 * cancelled too (test-group: test_commit_start_refused_first,
		 * test_commit_cancel_while_starting) */
		if (g->phase == P_ABORT) {
			g_abort(g);
			if (g->done)
				return;
		}
		if (all_started && all_ended)
			g_cleanup(g);
		return;
	default:
		return;
	}
}

/* ---- events and polling ----------------------------------------------------------- */

static void g_resumed(struct merge_group *g, struct gjob *j, json_object *ret,
		      const struct lm_error *err)
{
	(void)ret;
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (err != NULL)
		g_msg(g, "%s: %s", j->name, err->msg);
}

static void g_space_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct merge_group *g = w->data;
	int i, paused = 0;

	(void)revents;
	if (g->done || g->phase >= P_FINALIZE)
		return;
	for (i = 0; i < g->n; i++)
		paused += g->jobs[i].st == XL_JOB_PAUSED;
	if (paused == 0) {
		ev_timer_stop(loop, w);
		g->space_since = 0;
		return;
	}
	if (ev_now(loop) - g->space_since > g->req.wait_for_space) {
		ev_timer_stop(loop, w);
		g_errorf(g, LM_ERR_FAILED, "no space appeared within %.0f s: cancelling every job, "
				       "nothing changes", g->req.wait_for_space);
		g_abort(g);
		g_step(g);
		return;
	}
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		if (j->st != XL_JOB_PAUSED)
			continue;
		if (g_send(g, xl_job_verb(XL_VERB_RESUME, j->job_id), 1, j, g_resumed) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
	}
}

/* A job paused because its target ran out of space (on-error=enospc). */
/* Report a job paused for lack of space, with how far it got, and cancel
 * everything or wait for space. */
static void g_space_report(struct merge_group *g, struct gjob *j)
{
	char done[96] = "";

	if (j->len > 0)
		snprintf(done, sizeof(done), " after %lld of %lld bytes (%.0f%%)",
			 (long long)(j->offset > 0 ? j->offset : 0), (long long)j->len,
			 100.0 * (double)(j->offset > 0 ? j->offset : 0) / (double)j->len);
	if (g->req.wait_for_space <= 0) {
		g_errorf(g, LM_ERR_FAILED,
			 "%s: no space left on device (%s)%s: cancelling every job, nothing changes; "
			 "free space where the %s's target layer lives and run again, or use "
			 "--wait-for-space SECS", j->name, j->space_op, done,
			 merge_verb_name(g->req.verb));
		g_abort(g);
		g_step(g);
		return;
	}
	if (g->space_since == 0) {
		g->space_since = ev_now(g->loop);
		g_msg(g, "%s: no space left on device (%s)%s: the job is paused; free space where "
			 "its target layer lives: it resumes by itself (waiting up to %.0f s)",
		      j->name, j->space_op, done, g->req.wait_for_space);
		ev_timer_set(&g->space_timer, 2., 2.);
		ev_timer_start(g->loop, &g->space_timer);
	}
}

/* The job's progress, read right after it paused, for the report. */
static void g_space_progress(struct merge_group *g, struct gjob *j, json_object *ret,
			     const struct lm_error *err)
{
	struct xl_job_info ji;
	int i;

	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	for (i = 0; err == NULL && xl_query_jobs_entry(ret, i, &ji) == 0; i++) {
		if (strcmp(ji.id, j->job_id) != 0)
			continue;
		if (ji.offset >= 0)
			j->offset = ji.offset;
		if (ji.len >= 0)
			j->len = ji.len;
	}
	if (g->phase < P_FINALIZE)
		g_space_report(g, j);
}

/* A job paused because its target ran out of space (on-error=enospc). */
static void g_out_of_space(struct merge_group *g, struct gjob *j, const char *operation)
{
	if (j->out_of_space++ > 0)
		return; /* one report per job: parallel writes fail together */
	j->space_op = operation != NULL && strcmp(operation, "read") == 0 ? "read" : "write";
	if (g_send(g, xl_query_jobs(), 0, j, g_space_progress) < 0)
		g_conn_lost(g, &g->err);
}

static void g_event_cb(struct qmp_conn *c, const struct qmp_msg *ev, void *arg)
{
	struct merge_group *g = arg;
	struct xl_job_event je;
	struct gjob *j;

	(void)c;
	xl_job_event_decode(ev, &je);
	if (je.kind == XL_EV_NONE || (j = g_job_by_id(g, je.job_id)) == NULL)
		return;
	/* before our start is sent, an id of ours is an earlier job's (a
	 * leftover being dismissed): not this run's job */
	if (j->start == 0)
		return;
	switch (je.kind) {
	case XL_EV_STATUS:
		j->st = je.status;
		if (je.status == XL_JOB_READY)
			g_msg(g, "%s: job %s ready to pivot", j->name, j->job_id);
		break;
	case XL_EV_COMPLETED:
	case XL_EV_CANCELLED:
		if (je.offset >= 0)
			j->offset = je.offset;
		if (je.len >= 0)
			j->len = je.len;
		if (je.error != NULL && j->error == NULL)
			j->error = strdup(je.error);
		break;
	case XL_EV_READY:
		if (je.offset >= 0)
			j->offset = je.offset;
		if (je.len >= 0)
			j->len = je.len;
		break;
	case XL_EV_ERROR:
		if (je.action != NULL && strcmp(je.action, "stop") == 0)
			g_out_of_space(g, j, je.operation);
		else
			g_msg(g, "%s: job %s hit an I/O error on %s (%s)", j->name, j->job_id,
			      je.operation ? je.operation : "?", je.action ? je.action : "?");
		break;
	default:
		break;
	}
	g_job_update(g, j);
	g_step(g);
}

static void g_polled(struct merge_group *g, struct gjob *unused, json_object *ret,
		     const struct lm_error *err)
{
	struct xl_job_info ji;
	int i;

	(void)unused;
	g->poll_inflight = 0;
	if (err != NULL) {
		if (g_is_conn_error(err))
			g_conn_lost(g, err);
		return;
	}
	for (i = 0; i < g->n; i++)
		g->jobs[i].seen = 0;
	for (i = 0; xl_query_jobs_entry(ret, i, &ji) == 0; i++) {
		struct gjob *j = g_job_by_id(g, ji.id);

		if (j == NULL)
			continue;
		j->seen = 1;
		if (ji.offset >= 0)
			j->offset = ji.offset;
		if (ji.len >= 0)
			j->len = ji.len;
		/* replies are ordered after every event before them: this is current */
		if (ji.status != XL_JOB_UNKNOWN)
			j->st = ji.status;
		if (ji.error != NULL && j->error == NULL)
			j->error = strdup(ji.error);
		g_job_update(g, j);
	}
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		if (j->start == 2 && !j->seen && !j->dismissed && g->phase < P_CLEANUP) {
			/* never infer success from a job that vanished */
			g_errorf(g, LM_ERR_STATE,
				 "%s: job %s vanished from QEMU without a result (dismissed from "
				 "elsewhere?)", j->name, j->job_id);
			j->st = XL_JOB_NULL;
			j->vanished = 1;
			g->unknown = 1;
			/* what is left is driven by the cancels' answers and events */
			ev_timer_stop(g->loop, &g->poll);
			if (g->phase < P_FINALIZE) {
				/* before the pivot point the others must not pivot either */
				g_abort(g);
				g_step(g);
			} else {
				g->outcome = MERGE_UNKNOWN;
				g->phase = P_CLEANUP;
				g_verify(g);
			}
			return;
		}
	}
	g_step(g);
}

static void g_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct merge_group *g = w->data;

	(void)loop;
	(void)revents;
	if (g->done || g->poll_inflight || g->phase < P_RUN || g->phase >= P_CLEANUP ||
	    g->req.dry_run)
		return;
	g->poll_inflight = 1;
	if (g_send(g, xl_query_jobs(), 0, NULL, g_polled) < 0)
		g_conn_lost(g, &g->err);
}

/* ---- starting ------------------------------------------------------------------------ */

static void g_snapshot_done(struct merge_group *g, struct gjob *unused, json_object *ret,
			    const struct lm_error *err)
{
	(void)unused;
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
			return;
		}
		g_errorf(g, LM_ERR_FAILED, "QEMU refused the snapshot (no disk changed): %s",
			 err->msg);
		snprintf(g->err.qmp_class, sizeof(g->err.qmp_class), "%s", err->qmp_class);
		g->outcome = MERGE_FAILED;
		g_remove_our_overlays(g);
	} else {
		g->outcome = MERGE_DONE;
		g_msg(g, "snapshot taken of %d disk%s", g->n, g->n == 1 ? "" : "s");
	}
	g->transaction_out = 0;
	if (g->frozen && !g->thaw_sent) {
		g_thaw(g); /* verifies when the guest is thawed */
		return;
	}
	if (g->thaw_sent && !g->thaw_answered)
		return; /* the watchdog's thaw is in flight; its answer verifies */
	g_verify(g);
}

/* ---- quiesce -------------------------------------------------------------------------- */

struct g_qga_call {
	struct merge_group *g;
	void (*fn)(struct merge_group *g, json_object *ret, const struct lm_error *err);
};

static void g_qga_reply(struct qga *q, json_object *ret, const struct lm_error *err, void *arg)
{
	struct g_qga_call *call = arg;
	struct merge_group *g = call->g;

	(void)q;
	if (!g->abandoned && !g->done)
		call->fn(g, ret, err);
	free(call);
	g_unref(g);
}

static int g_qga_send(struct merge_group *g, struct xl_cmd cmd,
		      void (*fn)(struct merge_group *, json_object *, const struct lm_error *))
{
	struct g_qga_call *call;
	struct lm_error e;
	int r;

	if (strcmp(cmd.step, "freeze-status") != 0 && g_journal(g, cmd.step, NULL) < 0) {
		json_object_put(cmd.args);
		return -1;
	}
	call = calloc(1, sizeof(*call));
	if (g->cb.command != NULL)
		g->cb.command(cmd.name, cmd.args, g->arg);
	if (call == NULL) {
		json_object_put(cmd.args);
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	call->g = g;
	call->fn = fn;
	r = qga_execute(g->req.quiesce, cmd.name, cmd.args, g_qga_reply, call, &e);
	json_object_put(cmd.args);
	if (r < 0) {
		free(call);
		g_error(g, &e);
		return -1;
	}
	g->refs++;
	return 0;
}

static void g_thawed(struct merge_group *g, json_object *ret, const struct lm_error *err)
{
	double ms = (ev_now(g->loop) - g->frozen_at) * 1000.0;

	(void)ret;
	g->thaw_answered = 1;
	ev_timer_stop(g->loop, &g->freeze_watchdog);
	if (err != NULL) {
		g_errorf(g, LM_ERR_STATE, "the guest may still be frozen: thaw failed: %s (run "
				       "'livemerge recover' or guest-fsfreeze-thaw)", err->msg);
		g->outcome = MERGE_UNKNOWN;
	} else {
		g->frozen = 0;
		g->frozen_ms = ms;
		g_msg(g, "guest thawed: filesystems were frozen for %.1f ms", ms);
	}
	if (!g->transaction_out)
		g_verify(g);
}

static void g_thaw(struct merge_group *g)
{
	g->thaw_sent = 1;
	if (g->req.dry_run) {
		if (g->cb.command != NULL)
			g->cb.command(xl_guest_thaw().name, NULL, g->arg);
		g->frozen = 0;
		return;
	}
	if (g_qga_send(g, xl_guest_thaw(), g_thawed) < 0) {
		g->thaw_answered = 1;
		g_errorf(g, LM_ERR_STATE, "the guest may still be frozen: cannot send thaw");
		g->outcome = MERGE_UNKNOWN;
		if (!g->transaction_out)
			g_verify(g);
	}
}

static void g_freeze_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct merge_group *g = w->data;

	(void)loop;
	(void)revents;
	if (!g->frozen || g->thaw_sent || g->done)
		return;
	g_msg(g, "the snapshot takes longer than %.0f s: thawing the guest now (the snapshot "
		 "will not be quiesced)", g->req.freeze_limit);
	g->quiesce_lost = g->transaction_out;
	g_thaw(g);
}

static void g_send_transaction(struct merge_group *g);

/* After a failed freeze: thaw only if the agent says something is frozen. */
static void g_freeze_status(struct merge_group *g, json_object *ret, const struct lm_error *err)
{
	const char *st = ret ? json_object_get_string(ret) : NULL;

	if (err == NULL && st != NULL && strcmp(st, "thawed") == 0) {
		g->frozen = 0;
		g_verify(g);
		return;
	}
	if (err != NULL)
		g_msg(g, "cannot tell whether the guest is frozen (%s): thawing", err->msg);
	g_thaw(g);
}

static void g_froze(struct merge_group *g, json_object *ret, const struct lm_error *err)
{
	if (err != NULL) {
		g_errorf(g, LM_ERR_FAILED, "cannot quiesce the guest (no disk changed): %s",
			 err->msg);
		g->outcome = MERGE_FAILED;
		/* a freeze that failed half-way may have frozen some filesystems */
		g->frozen = 1;
		g->frozen_at = ev_now(g->loop);
		if (g_qga_send(g, xl_guest_freeze_status(), g_freeze_status) < 0)
			g_thaw(g);
		return;
	}
	g->frozen = 1;
	g->frozen_at = ev_now(g->loop);
	g_msg(g, "guest quiesced: %d filesystem%s frozen", json_object_get_int(ret),
	      json_object_get_int(ret) == 1 ? "" : "s");
	ev_timer_set(&g->freeze_watchdog, g->req.freeze_limit, 0.);
	ev_timer_start(g->loop, &g->freeze_watchdog);
	g_send_transaction(g);
}

static void g_send_transaction(struct merge_group *g)
{
	const char **nodes = calloc((size_t)g->n, sizeof(*nodes));
	const char **files = calloc((size_t)g->n, sizeof(*files));
	const char **new_nodes = calloc((size_t)g->n, sizeof(*new_nodes));
	int i, r = -1;

	if (nodes != NULL && files != NULL && new_nodes != NULL) {
		for (i = 0; i < g->n; i++) {
			nodes[i] = g->jobs[i].root;
			files[i] = g->jobs[i].overlay;
			new_nodes[i] = g->jobs[i].new_node;
		}
		r = g_send(g, xl_snapshot_transaction(g->n, nodes, files, new_nodes, g->req.format),
			   1, NULL, g_snapshot_done);
	} else {
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
	}
	free(nodes);
	free(files);
	free(new_nodes);
	if (r < 0) {
		g_conn_lost(g, &g->err);
		return;
	}
	if (g->req.dry_run) {
		if (g->frozen)
			g_thaw(g);
		g->outcome = MERGE_DONE;
		g_verify(g);
		return;
	}
	g->transaction_out = 1;
}

static void g_start(struct merge_group *g)
{
	int i;

	g->phase = P_START;
	if (g->req.verb == MERGE_SNAPSHOT && g->req.quiesce != NULL) {
		if (g->req.dry_run) {
			if (g->cb.command != NULL)
				g->cb.command(xl_guest_freeze().name, NULL, g->arg);
			g->frozen = 1;
			g_send_transaction(g);
			return;
		}
		if (g_qga_send(g, xl_guest_freeze(), g_froze) < 0) {
			g->outcome = MERGE_FAILED;
			g_finish(g);
		}
		return;
	}
	if (g->req.verb == MERGE_SNAPSHOT) {
		g_send_transaction(g);
		return;
	}
	g->phase = P_RUN;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		struct xl_cmd cmd = g->req.verb == MERGE_COMMIT
					    ? xl_commit(j->job_id, j->root, j->top_node, j->base_node,
							g->req.speed)
					    : xl_stream(j->job_id, j->root, j->base_node, g->req.speed);

		if (j->adopted) {
			json_object_put(cmd.args);
			continue;
		}
		j->start = 1;
		if (g_send(g, cmd, 1, j, g_started) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
		if (g->req.dry_run) {
			j->start = 2;
			j->st = j->active ? XL_JOB_READY : XL_JOB_PENDING;
		}
	}
	if (g->poll_interval > 0 && !g->req.dry_run) {
		ev_timer_set(&g->poll, g->poll_interval, g->poll_interval);
		ev_timer_start(g->loop, &g->poll);
	}
	g_step(g);
}

/* ---- resolving the request against the live chains -------------------------------------- */

static void g_sanitize(char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '.' || *s == '_'))
			*s = '_';
}

static uint32_t g_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static int g_bad(struct merge_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int g_bad(struct merge_group *g, const char *fmt, ...)
{
	va_list ap;

	lm_error_set(&g->err, LM_ERR_USAGE, "%s", "");
	va_start(ap, fmt);
	vsnprintf(g->err.msg, sizeof(g->err.msg), fmt, ap);
	va_end(ap);
	g->have_err = 1;
	g->outcome = MERGE_BAD_REQUEST;
	return -1;
}

static int g_resolve_layer(struct merge_group *g, const struct merge_disk *d, const char *name,
			   const char *what)
{
	int k = merge_disk_find_layer(d, name);

	if (k < 0)
		return g_bad(g, "%s: no layer '%s' in its chain (for %s; 'livemerge chain %s' shows "
				"the layers)", d->name, name, what, d->name);
	return k;
}

static int g_resolve(struct merge_group *g)
{
	int i, k;

	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *d = merge_chains_find(g->before, j->want);
		const char *verb = merge_verb_name(g->req.verb);
		struct lm_error e;

		if (d == NULL)
			return g_bad(g, "no disk '%s' (run 'livemerge chain' to list the disks)",
				     j->want);
		for (k = 0; k < i; k++)
			if (strcmp(g->jobs[k].name, d->name) == 0)
				return g_bad(g, "disk %s is named twice", d->name);
		j->name = strdup(d->name);
		if (d->nlayers == 0 || d->layers[0].node_name == NULL)
			return g_bad(g, "%s: cannot tell the node name of its active layer", d->name);
		j->root = strdup(d->layers[0].node_name);
		if (g->req.verb == MERGE_SNAPSHOT) {
			char nn[32];
			int r;

			if (j->overlay == NULL || j->overlay[0] != '/')
				return g_bad(g, "%s: the overlay must be an absolute path", d->name);
			r = g_file_exists(g, j->overlay, &e);
			if (r < 0 && e.code == LM_ERR_UNSUPPORTED)
				j->probe = 1, r = 0; /* g_probe_overlays asks QEMU */
			else if (r < 0)
				return g_bad(g, "%s", e.msg);
			if (r == 1)
				return g_bad(g, "%s: overlay %s exists already%s%s; refusing to "
					     "overwrite it", d->name, j->overlay,
					     g->req.files != NULL && g->req.files->where ? " on " : "",
					     g->req.files != NULL && g->req.files->where
						     ? g->req.files->where
						     : "");
			for (k = 0; k < d->nlayers; k++)
				if (strcmp(d->layers[k].filename, j->overlay) == 0)
					return g_bad(g, "%s: %s is in its chain already", d->name,
						     j->overlay);
			for (k = 0; k < i; k++)
				if (strcmp(g->jobs[k].overlay, j->overlay) == 0)
					return g_bad(g, "overlay %s is given twice", j->overlay);
			j->overlay_ours = 1;
			snprintf(nn, sizeof(nn), "lm-%08x", g_hash(j->overlay));
			j->new_node = strdup(nn);
			continue;
		}
		if (d->nlayers < 2)
			return g_bad(g, "%s: its chain has a single layer: nothing to %s", d->name, verb);
		if (g->req.verb == MERGE_COMMIT) {
			j->top = 0;
			if (j->top_arg != NULL &&
			    (j->top = g_resolve_layer(g, d, j->top_arg, "--top")) < 0)
				return -1;
			if (j->top == d->nlayers - 1)
				return g_bad(g, "%s: top %s is the base of the chain: nothing below it",
					     d->name, d->layers[j->top].filename);
			j->base = j->top + 1;
			if (j->base_arg != NULL &&
			    (j->base = g_resolve_layer(g, d, j->base_arg, "--base")) < 0)
				return -1;
			if (j->base <= j->top)
				return g_bad(g, "%s: base %s is not below top %s", d->name,
					     d->layers[j->base].filename, d->layers[j->top].filename);
			j->active = j->top == 0;
			if (d->layers[j->top].node_name == NULL)
				return g_bad(g, "%s: cannot tell the node name of %s", d->name,
					     d->layers[j->top].filename);
			j->top_node = strdup(d->layers[j->top].node_name);
		} else {
			j->base = d->nlayers; /* flatten */
			if (j->base_arg != NULL &&
			    (j->base = g_resolve_layer(g, d, j->base_arg, "--base")) < 0)
				return -1;
			if (j->base == 0)
				return g_bad(g, "%s: base %s is the active layer: nothing to stream",
					     d->name, d->layers[0].filename);
			if (j->base == 1)
				return g_bad(g, "%s: base %s is right below the active layer: nothing "
						"to stream", d->name, d->layers[1].filename);
		}
		if (j->base < d->nlayers) {
			if (d->layers[j->base].node_name == NULL)
				return g_bad(g, "%s: cannot tell the node name of %s", d->name,
					     d->layers[j->base].filename);
			j->base_node = strdup(d->layers[j->base].node_name);
		}
		{
			char id[256];

			snprintf(id, sizeof(id), "livemerge-%s-%s", verb, d->name);
			g_sanitize(id + 10);
			j->job_id = strdup(id);
		}
	}
	return 0;
}

/* Jobs with our ids that QEMU still has: report and dismiss concluded ones,
 * refuse while one still runs. */
static int g_check_leftovers(struct merge_group *g)
{
	struct xl_job_info ji;
	int i;

	for (i = 0; xl_query_jobs_entry(g->jobs_before, i, &ji) == 0; i++) {
		struct gjob *j = g_job_by_id(g, ji.id);

		if (j == NULL)
			continue;
		/* every concluded job of ours was dismissed before the chains were read */
		if (ji.status == XL_JOB_CONCLUDED) {
			if (g->req.adopt) {
				/* it ended while we were away: that is a failure */
				j->start = 2;
				j->st = XL_JOB_NULL;
				j->dismissed = 1;
				j->adopted = 1;
				if (j->error == NULL)
					j->error = strdup(ji.error ? ji.error
								   : "it ended before it could be taken over");
			}
			continue;
		}
		if (g->req.adopt) {
			j->start = 2;
			j->st = ji.status;
			j->adopted = 1;
			if (ji.error != NULL && j->error == NULL)
				j->error = strdup(ji.error);
			g_msg(g, "%s: taking over job %s (%s)", j->name, ji.id,
			      xl_job_status_name(ji.status));
			continue;
		}
		return g_bad(g, "%s: job id %s is in use by a job in state '%s' (wait for it, or "
				"'livemerge cancel %s')", j->name, ji.id, xl_job_status_name(ji.status),
			     ji.id);
	}
	return 0;
}

static void g_chains_fetched(struct merge_chains *ch, const struct lm_error *err, void *arg);

/* Read the chains, once no concluded job of ours is left in QEMU (some
 * QEMUs crash listing block nodes beside a concluded stream job). */
static void g_fetch_chains(struct merge_group *g)
{
	g_read_chains(g, g_chains_fetched);
}

static void g_leftover_dismissed(struct merge_group *g, struct gjob *j, json_object *ret,
				 const struct lm_error *err)
{
	(void)ret;
	(void)j;
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (err != NULL) {
		g_errorf(g, LM_ERR_FAILED, "cannot dismiss leftover job: %s", err->msg);
		g->outcome = MERGE_FAILED;
		g_finish(g);
		return;
	}
	if (--g->outstanding == 0)
		g_fetch_chains(g);
}

/* Report and dismiss every concluded job of ours before anything else:
 * its id must be free, and its error is read first. */
static void g_dismiss_leftovers(struct merge_group *g)
{
	struct xl_job_info ji;
	const char *hazard;
	int i;

	hazard = merge_chains_hazard(g->jobs_before);
	if (hazard != NULL && strncmp(hazard, "livemerge-", 10) != 0) {
		g_bad(g, "job %s (a stream) is concluded and not dismissed: QEMU 7.2 crashes "
			 "listing block nodes then; dismiss it first ('livemerge cancel %s')",
		      hazard, hazard);
		g_finish(g);
		return;
	}
	g->outstanding = 1;
	for (i = 0; xl_query_jobs_entry(g->jobs_before, i, &ji) == 0; i++) {
		if (ji.status != XL_JOB_CONCLUDED || strncmp(ji.id, "livemerge-", 10) != 0)
			continue;
		g_msg(g, "dismissing leftover concluded job %s (%s)", ji.id,
		      ji.error ? ji.error : "it had succeeded");
		if (g_send(g, xl_job_verb(XL_VERB_DISMISS, ji.id), 1, NULL, g_leftover_dismissed) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
		if (!g->req.dry_run)
			g->outstanding++;
	}
	if (--g->outstanding == 0)
		g_fetch_chains(g);
}

static void g_begin(struct merge_group *g);

/* One probe answered, or its node closed again: go on when all have. */
static void g_probe_answered(struct merge_group *g)
{
	if (--g->outstanding > 0)
		return;
	if (g->have_err)
		g_finish(g);
	else
		g_begin(g);
}

static void g_probe_closed(struct merge_group *g, struct gjob *j, json_object *ret,
			   const struct lm_error *err)
{
	(void)j;
	(void)ret;
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	g_probe_answered(g);
}

/* QEMU's answer to whether j's overlay exists (a probe node opened or not). */
static void g_probed(struct merge_group *g, struct gjob *j, json_object *ret,
		     const struct lm_error *err)
{
	const char *host = g->req.files != NULL && g->req.files->where ? g->req.files->where
								       : "the VM's host";

	(void)ret;
	if (err != NULL && g_is_conn_error(err)) {
		g_conn_lost(g, err);
		return;
	}
	if (err == NULL) {
		char node[32];

		/* it opened: the path exists. Close the probe again. */
		snprintf(node, sizeof(node), "lm-probe-%08x", g_hash(j->overlay));
		g_bad(g, "%s: overlay %s exists already on %s; refusing to overwrite it", j->name,
		      j->overlay, host);
		if (g_send(g, xl_node_release(node), 0, j, g_probe_closed) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
		g->outstanding++;
	} else if (!xl_probe_absent(err)) {
		g_bad(g, "%s: cannot tell whether overlay %s exists on %s (no file access there, "
		      "and QEMU says: %s); refusing, so as never to overwrite it", j->name,
		      j->overlay, host, err->msg);
	}
	g_probe_answered(g);
}

/*
 * For the overlays whose host offers no file access (ssh with neither SFTP
 * nor exec), ask QEMU: a read-only probe node on the path opens if it
 * exists. "Does not exist" only on QEMU's word that it does not; anything
 * else refuses (test-ssh-bare).
 */
static void g_probe_overlays(struct merge_group *g)
{
	int i;

	g->outstanding = 1;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		char node[32];

		if (!j->probe)
			continue;
		snprintf(node, sizeof(node), "lm-probe-%08x", g_hash(j->overlay));
		if (g_send(g, xl_probe_file(node, j->overlay), 0, j, g_probed) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
		g->outstanding++;
	}
	g_probe_answered(g);
}

static void g_fetched(struct merge_group *g)
{
	if (g->done || !g->fetch_chains_done || !g->fetch_jobs_done)
		return;
	if (g->cancel_requested) {
		g_errorf(g, LM_ERR_FAILED, "%s cancelled before anything was sent",
			 merge_verb_name(g->req.verb));
		g->outcome = MERGE_FAILED;
		g_finish(g);
		return;
	}
	if (g_resolve(g) < 0 || g_check_leftovers(g) < 0) {
		g_finish(g);
		return;
	}
	g_probe_overlays(g);
}

/* The request is resolved and checked: journal the intent and start. */
static void g_begin(struct merge_group *g)
{
	if (g->req.adopt) {
		g->changed = 1;
		g->journaled = g->req.journal != NULL;
		if (g_journal(g, "resume", NULL) < 0) {
			g->outcome = MERGE_UNKNOWN;
			g_finish(g);
			return;
		}
	} else if (g->req.journal != NULL && !g->req.dry_run) {
		json_object *intent = g_intent(g);
		struct lm_error e;
		int r = merge_journal_begin(g->req.journal, intent, &e);

		json_object_put(intent);
		if (r < 0) {
			g_error(g, &e);
			g->outcome = MERGE_FAILED;
			g_finish(g);
			return;
		}
		g->journaled = 1;
	}
	g_start(g);
}

static void g_chains_fetched(struct merge_chains *ch, const struct lm_error *err, void *arg)
{
	struct merge_group *g = arg;

	if (g->done || g->abandoned) {
		merge_chains_free(ch);
		g_unref(g);
		return;
	}
	if (ch == NULL) {
		if (g_is_conn_error(err)) {
			g_conn_lost(g, err);
		} else {
			g->outcome = MERGE_CONN_FAILED;
			g_error(g, err);
			g_finish(g);
		}
	} else {
		g->before = ch;
		g->fetch_chains_done = 1;
		g_fetched(g);
	}
	g_unref(g);
}

static void g_jobs_fetched(struct merge_group *g, struct gjob *unused, json_object *ret,
			   const struct lm_error *err)
{
	(void)unused;
	if (err != NULL) {
		if (g_is_conn_error(err))
			g_conn_lost(g, err);
		else {
			g->outcome = MERGE_CONN_FAILED;
			g_error(g, err);
			g_finish(g);
		}
		return;
	}
	g->jobs_before = json_object_get(ret);
	g->fetch_jobs_done = 1;
	g_dismiss_leftovers(g);
}

/* ---- public ---------------------------------------------------------------------------- */

struct merge_group *merge_group_start(struct qmp_conn *c, const struct merge_request *req,
				      const struct merge_callbacks *cb, void *arg,
				      struct lm_error *err)
{
	struct merge_group *g;
	int i;

	if (req->ntargets <= 0) {
		lm_error_set(err, LM_ERR_USAGE, "%s: no disk given", merge_verb_name(req->verb));
		return NULL;
	}
	if (req->speed < 0) {
		lm_error_set(err, LM_ERR_USAGE, "speed must not be negative");
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (g == NULL || (g->jobs = calloc((size_t)req->ntargets, sizeof(*g->jobs))) == NULL) {
		free(g);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	g->c = c;
	g->loop = NULL;
	g->req = *req;
	g->req.format = req->format ? strdup(req->format) : NULL;
	g->cb = *cb;
	g->arg = arg;
	g->n = req->ntargets;
	g->refs = 1;
	g->poll_interval = 1.0;
	g->outcome = MERGE_FAILED;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		j->g = g;
		j->want = strdup(req->targets[i].disk ? req->targets[i].disk : "");
		if (req->targets[i].overlay != NULL)
			j->overlay = strdup(req->targets[i].overlay);
		if (req->targets[i].top != NULL)
			j->top_arg = strdup(req->targets[i].top);
		if (req->targets[i].base != NULL)
			j->base_arg = strdup(req->targets[i].base);
		j->offset = j->len = -1;
	}
	g->req.targets = NULL; /* the caller's; copied above */
	g->loop = qmp_conn_loop(c);
	g->frozen_ms = -1;
	if (g->req.freeze_limit <= 0)
		g->req.freeze_limit = 10;
	ev_init(&g->space_timer, g_space_cb);
	g->space_timer.data = g;
	ev_init(&g->freeze_watchdog, g_freeze_watchdog_cb);
	g->freeze_watchdog.data = g;
	ev_init(&g->poll, g_poll_cb);
	g->poll.data = g;
	qmp_conn_set_event_cb(c, g_event_cb, g);
	g->phase = P_FETCH;
	/* the jobs first: leftovers of ours go before the chains are read */
	if (g_send(g, xl_query_jobs(), 0, NULL, g_jobs_fetched) < 0) {
		if (err != NULL)
			*err = g->err;
		qmp_conn_set_event_cb(c, NULL, NULL);
		g_unref(g);
		return NULL;
	}
	return g;
}

void merge_group_set_poll_interval(struct merge_group *g, double interval)
{
	g->poll_interval = interval;
}

void merge_group_cancel(struct merge_group *g)
{
	if (g->done || g->cancel_requested)
		return;
	g->cancel_requested = 1;
	if (g->phase <= P_START) {
		/* nothing started yet, or the snapshot transaction is in flight:
		 * what comes back decides */
		return;
	}
	g_step(g);
}

void merge_group_free(struct merge_group *g)
{
	if (g == NULL)
		return;
	if (!g->done) {
		g->abandoned = 1;
		ev_timer_stop(g->loop, &g->poll);
		qmp_conn_set_event_cb(g->c, NULL, NULL);
	}
	g_unref(g);
}

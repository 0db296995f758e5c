/*
 * merge/group: the all-or-none engine behind snapshot, commit and stream
 * (see group.h).
 *
 * The job table is keyed by job id and fed by events, never by the reply
 * that started a job: QEMU reports "created" and "running" before the
 * command returns. g_step() looks at the whole table after every event or
 * reply and decides the next move, so the order in which QEMU reports
 * things cannot confuse it.
 *
 * This file holds the public API, the shared plumbing (messages, errors,
 * sending, journaling, the end), the event hook and job polling, g_step():
 * the all-or-none rules, and g_advance(): the one place the phase changes
 * (its comment draws the whole machine). Each phase lives in a file of its own,
 * in the order a run goes through them:
 *   group-resolve.c  read jobs and chains, resolve the request    P_FETCH
 *     group-plan.c   the plan: request + chains -> each disk's change (pure)
 *   group-prepare.c  journal the intent (volumes, later)           P_FETCH
 *   group-act.c      snapshot transaction (quiesced) or job starts P_START
 *   group-barrier.c  wait until every job can pivot, or cancel all P_RUN, P_ABORT
 *   group-pivot.c    complete, flush, finalize                     P_COMPLETE..P_FINALIZE
 *   group-cleanup.c  read the jobs' results, dismiss them          P_CLEANUP
 *   group-verify.c   read the chains again, check them             P_VERIFY
 *   group-cleanup.c  release nodes, flush headers, delete layers   P_RELEASE, P_SETTLE
 * group-int.h holds what they share.
 */
#include "group-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *merge_verb_name(enum merge_verb v)
{
	switch (v) {
	case MERGE_SNAPSHOT: return "snapshot";
	case MERGE_COMMIT: return "commit";
	case MERGE_STREAM: return "stream";
	}
	return "?";
}

void g_msg(struct merge_group *g, const char *fmt, ...)
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
void g_error(struct merge_group *g, const struct lm_error *err)
{
	if (!g->have_err) {
		g->err = *err;
		g->have_err = 1;
	} else {
		g_msg(g, "also: %s", err->msg);
	}
}

void g_errorf(struct merge_group *g, enum lm_err_code code, const char *fmt, ...)
{
	struct lm_error e;
	va_list ap;

	lm_error_set(&e, code, "%s", "");
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	g_error(g, &e);
}

void g_unref(struct merge_group *g)
{
	int i;

	if (--g->refs > 0)
		return;
	ev_timer_stop(g->loop, &g->poll);
	ev_timer_stop(g->loop, &g->freeze_watchdog);
	ev_timer_stop(g->loop, &g->space_timer);
	ev_timer_stop(g->loop, &g->vol_poll);
	g_marks_free(g);
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		free(j->ov_file_node);
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
		free(j->ends);
		free(j->error);
	}
	free(g->jobs);
	free((char *)g->req.format);
	merge_chains_free(g->before);
	merge_chains_free(g->after);
	json_object_put(g->jobs_before);
	json_object_put(g->left);
	host_free(g->own_host);
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
int g_journal(struct merge_group *g, const char *step, struct gjob *j)
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
int g_send(struct merge_group *g, struct xl_cmd cmd, int state_changing, struct gjob *j,
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

struct gjob *g_job_by_id(struct merge_group *g, const char *id)
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
void g_conn_lost(struct merge_group *g, const struct lm_error *err)
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

int g_is_conn_error(const struct lm_error *err)
{
	return err->code != LM_ERR_QMP && err->code != LM_ERR_TIMEOUT;
}

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

/* P_DONE: report the end, once. */
static void g_end(struct merge_group *g)
{
	struct merge_result r;

	g->done = 1;
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
		if (g->after != NULL) /* the chain state it led to, as verified */
			json_object_object_add(f, "chains", merge_chains_state_json(g->after));
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

/* The end, from any phase: done runs once. */
void g_finish(struct merge_group *g)
{
	if (g->done || g_hops_hold_finish(g))
		return; /* the host's answers end it */
	if (g_volumes_hold_finish(g))
		return; /* undoing the preparation ends it */
	g_advance(g, P_DONE);
}

/*
 * The one place the phase changes. Each phase's first step runs here; what
 * a phase then waits for comes back through g_step() (the job table) or
 * the phase's own reply handlers, which advance again:
 *
 *   P_FETCH ─ resolved ─> P_START ─ snapshot answered (thawed) ───────> P_VERIFY
 *                           └─ commit/stream ─> P_RUN ─ all ready ──> P_COMPLETE
 *   P_COMPLETE ─ all pending ─> P_FLUSH ─ flushed ─> P_FINALIZE ─ all ended ─> P_CLEANUP
 *   P_RUN, P_COMPLETE, P_FLUSH ─ a job failed, cancel, no space, flush failed ─> P_ABORT
 *   P_ABORT ─ all ended ─> P_CLEANUP ─ dismissed ─> P_VERIFY
 *   P_VERIFY ─ changed as asked (commit/stream) ─> P_RELEASE ─ released ─> P_SETTLE
 *   P_SETTLE ─ flushed (and deleted, if asked) ─> P_DONE; any phase ─ the end ─> P_DONE
 *   a job vanished after the pivot point: P_FINALIZE ─> P_VERIFY
 */
void g_advance(struct merge_group *g, enum g_phase next)
{
	g->phase = next;
	switch (next) {
	case P_FETCH:
		return; /* merge_group_start sends the first query: its failure is its caller's */
	case P_PREPARE:
		g_prepare(g); /* group-volumes.c */
		return;
	case P_START:
		g_act(g); /* group-act.c */
		return;
	case P_RUN:
		/* thresholds first: a job may fill a layer before any reply */
		g_marks_arm(g); /* group-volumes.c */
		g_start_jobs(g); /* group-act.c */
		return;
	case P_COMPLETE:
		g_complete_all(g); /* group-pivot.c */
		return;
	case P_FLUSH:
		g_flush_all(g); /* group-pivot.c */
		return;
	case P_FINALIZE:
		g_finalize_all(g); /* group-pivot.c */
		return;
	case P_ABORT:
		g_abort_all(g); /* group-barrier.c */
		return;
	case P_CLEANUP:
		g_cleanup(g); /* group-cleanup.c */
		return;
	case P_VERIFY:
		g_verify(g); /* group-verify.c */
		return;
	case P_RELEASE:
		g_release_removed(g); /* group-cleanup.c */
		return;
	case P_SETTLE:
		g_flush_all(g); /* group-pivot.c, the headers rewritten */
		return;
	case P_DONE:
		g_end(g);
		return;
	}
}

void g_step(struct merge_group *g)
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
			g_advance(g, P_COMPLETE);
			return;
		}
		if (g->phase == P_COMPLETE && all_pending) {
			/* nothing may make a layer unnecessary before the data that
			 * replaces it is on stable storage (test-durable) */
			g_msg(g, "every job is pending: flushing what they wrote");
			g_advance(g, P_FLUSH);
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
			g_advance(g, P_CLEANUP);
		return;
	default:
		return;
	}
}

static void g_event_cb(struct qmp_conn *c, const struct qmp_msg *ev, void *arg)
{
	struct merge_group *g = arg;
	struct xl_job_event je;
	struct gjob *j;

	(void)c;
	g_marks_event(g, ev); /* a block-device layer to grow */
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
				g_advance(g, P_VERIFY);
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
	if (g->req.host == NULL) {
		if ((g->own_host = host_new_local(g->loop, err)) == NULL) {
			g->refs = 1;
			g_unref(g);
			return NULL;
		}
	}
	g->frozen_ms = -1;
	if (g->req.freeze_limit <= 0)
		g->req.freeze_limit = 10;
	ev_init(&g->space_timer, g_space_cb);
	g->space_timer.data = g;
	ev_init(&g->freeze_watchdog, g_freeze_watchdog_cb);
	g->freeze_watchdog.data = g;
	ev_init(&g->poll, g_poll_cb);
	g->poll.data = g;
	ev_init(&g->vol_poll, NULL);
	g_volumes_init(g);
	qmp_conn_set_event_cb(c, g_event_cb, g);
	g_advance(g, P_FETCH);
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
		g_hops_cancel(g);
		g_volumes_stop(g);
	}
	g_unref(g);
}

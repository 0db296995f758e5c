/*
 * merge/group, phase "barrier" (P_RUN, P_ABORT): all or none.
 *
 * Before: group-act.c started the jobs. They run until every one can
 * pivot (ready or pending); g_step() in group.c decides when that is, and
 * then group-pivot.c takes over. If any job fails, is cancelled or
 * vanishes before that, or a target runs out of space (and no space
 * appears in time), every job is cancelled here (g_abort) and no chain
 * changes; when all have ended, group-cleanup.c reads their results.
 */
#include "group-int.h"

#include <stdio.h>
#include <string.h>

int g_job_ended(const struct gjob *j)
{
	return j->st == XL_JOB_CONCLUDED || j->st == XL_JOB_NULL;
}

int g_job_failed(const struct gjob *j)
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

/* Cancel every job that has started and is not ending by itself. */
static void g_cancel_rest(struct merge_group *g)
{
	int i;

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

/* P_ABORT begins: nothing pivots; cancel every job. */
void g_abort_all(struct merge_group *g)
{
	g->outcome = MERGE_FAILED;
	g_msg(g, "cancelling every job: no disk pivots");
	g_cancel_rest(g);
}

/* Give up before the pivot point: enter P_ABORT, or, in it already, cancel
 * the jobs whose start was answered since. */
void g_abort(struct merge_group *g)
{
	if (g->phase != P_ABORT)
		g_advance(g, P_ABORT);
	else
		g_cancel_rest(g);
}

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

void g_space_cb(struct ev_loop *loop, ev_timer *w, int revents)
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
void g_out_of_space(struct merge_group *g, struct gjob *j, const char *operation)
{
	if (j->out_of_space++ > 0)
		return; /* one report per job: parallel writes fail together */
	j->space_op = operation != NULL && strcmp(operation, "read") == 0 ? "read" : "write";
	if (g_send(g, xl_query_jobs(), 0, j, g_space_progress) < 0)
		g_conn_lost(g, &g->err);
}

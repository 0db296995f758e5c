/*
 * merge/group, phase "cleanup" (P_CLEANUP, then P_RELEASE, P_SETTLE).
 *
 * Before verify (P_CLEANUP): read every ended job's result, then dismiss
 * the jobs; next group-verify.c. After verify (P_RELEASE, P_SETTLE):
 * release the nodes of the layers that left the chains, flush the
 * rewritten headers (group-pivot.c's flush), then delete those layers if
 * asked; then the end (g_finish).
 * The deletion itself, on the VM's host, is group-files.c's.
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		g_advance(g, P_VERIFY);
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
		g_advance(g, P_VERIFY);
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

/* P_CLEANUP: read the jobs' results, then dismiss them. */
void g_cleanup(struct merge_group *g)
{
	if (g->req.dry_run) {
		g_dismiss_all(g);
		return;
	}
	if (g_send(g, xl_query_jobs(), 0, NULL, g_results_read) < 0)
		g_conn_lost(g, &g->err);
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
	g_advance(g, P_SETTLE);
}

/* Layers that left the chains may still be held open by QEMU when they
 * were added with -blockdev: release them, format node before its file. */
void g_release_removed(struct merge_group *g)
{
	int i, k;

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
		g_advance(g, P_SETTLE);
	return;
lost:
	g_conn_lost(g, &g->err);
}

void g_settled(struct merge_group *g)
{
	if (g->req.delete_removed && !g->req.dry_run)
		g_delete_removed(g);
	g_finish(g);
}

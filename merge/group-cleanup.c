/*
 * merge/group, phase "cleanup" (P_CLEANUP, then P_RELEASE, P_SETTLE).
 *
 * Before verify (P_CLEANUP): read every ended job's result, then dismiss
 * the jobs; next group-verify.c. After verify (P_RELEASE, P_SETTLE):
 * release the nodes of the layers that left the chains, flush the
 * rewritten headers (group-pivot.c's flush), then delete those layers if
 * asked; then the end (g_finish).
 *
 * The engine's file accesses all live here, in small functions of their
 * own: g_file_exists, g_file_remove, and merge_image_verify through
 * g_files(g).
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct merge_fileops *g_files(struct merge_group *g)
{
	return g->req.files != NULL ? g->req.files : merge_files_local();
}

int g_file_exists(struct merge_group *g, const char *path, struct lm_error *err)
{
	return g_files(g)->exists(path, g_files(g)->arg, err);
}

static int g_file_remove(struct merge_group *g, const char *path, struct lm_error *err)
{
	return g_files(g)->remove(path, g_files(g)->arg, err);
}

/* Remove the overlays this run created (never one that existed before). */
void g_remove_our_overlays(struct merge_group *g)
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

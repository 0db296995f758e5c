/*
 * merge/group, phase "pivot" (P_COMPLETE, P_FLUSH, P_FINALIZE).
 *
 * Before: the barrier (group-barrier.c, g_step) saw every job ready.
 * Active commits are told to complete; when every job is pending, what
 * they wrote is flushed to stable storage, then every job is finalized
 * back to back: past that point there is no going back.
 * The flush helpers here also serve the settle step after verify
 * (P_SETTLE, group-cleanup.c), which flushes the rewritten headers.
 * Next: group-cleanup.c (g_cleanup: read results, dismiss).
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_flush_one(struct merge_group *g, struct gjob *j);

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
int g_rewritten_layer(struct merge_group *g, struct gjob *j)
{
	if (g->req.verb == MERGE_STREAM)
		return 0;
	return j->active ? j->base : j->top - 1;
}

void g_job_reply(struct merge_group *g, struct gjob *j, json_object *ret,
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

/* Every job pending and its data flushed: finalize all, back to back. */
/* P_COMPLETE: every job can pivot; tell the ready active commits to
 * complete. g_step() waits until all are pending. */
void g_complete_all(struct merge_group *g)
{
	int i;

	for (i = 0; i < g->n && !(g->jobs[i].active && g->jobs[i].st == XL_JOB_READY); i++)
		;
	g_msg(g, i < g->n ? "every job is ready: completing them" : "every job is ready");
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];

		/* a job taken over may have been completed already */
		if (!j->active || j->complete_sent || j->st != XL_JOB_READY)
			continue;
		j->complete_sent = 1;
		if (g_send(g, xl_job_verb(XL_VERB_COMPLETE, j->job_id), 1, j, g_job_reply) < 0) {
			g_conn_lost(g, &g->err);
			return;
		}
	}
	if (g->req.dry_run)
		for (i = 0; i < g->n; i++)
			g->jobs[i].st = XL_JOB_PENDING;
	g_step(g);
}

/* P_FINALIZE: every job pending and its data flushed. */
void g_finalize_all(struct merge_group *g)
{
	int i;

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

/* One flush of the phase answered (or needed no command): the next step
 * runs when every one has. */
static void g_flush_answered(struct merge_group *g)
{
	if (--g->outstanding > 0)
		return;
	if (g->phase == P_FLUSH)
		g_advance(g, P_FINALIZE);
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
void g_flush_all(struct merge_group *g)
{
	enum g_phase phase = g->phase;
	int i;

	g->outstanding = g->n + 1;
	for (i = 0; i < g->n && g->phase == phase && !g->done; i++)
		g_flush_send(g, &g->jobs[i]);
	if (g->phase == phase && !g->done)
		g_flush_answered(g);
}

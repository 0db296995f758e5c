/*
 * merge/group, phase "act" (P_START): change the disks.
 *
 * Before: group-prepare.c journaled the intent.
 *  - snapshot: optionally freeze the guest through its agent (with a
 *    watchdog that thaws it whatever happens), send one transaction that
 *    puts an overlay on every disk or on none, thaw; then verify
 *    (group-verify.c). A refused transaction removes the overlays this run
 *    created.
 *  - commit/stream: start one job per disk (auto-finalize and auto-dismiss
 *    off); then the barrier (group-barrier.c, P_RUN).
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	g->freeze = Q_THAWED;
	ev_timer_stop(g->loop, &g->freeze_watchdog);
	if (err != NULL) {
		g_errorf(g, LM_ERR_STATE, "the guest may still be frozen: thaw failed: %s (run "
				       "'livemerge recover' or guest-fsfreeze-thaw)", err->msg);
		g->outcome = MERGE_UNKNOWN;
	} else {
		g->frozen_ms = ms;
		g_msg(g, "guest thawed: filesystems were frozen for %.1f ms", ms);
	}
	if (!g->transaction_out)
		g_advance(g, P_VERIFY);
}

static void g_thaw(struct merge_group *g)
{
	g->freeze = Q_THAWING;
	if (g->req.dry_run) {
		if (g->cb.command != NULL)
			g->cb.command(xl_guest_thaw().name, NULL, g->arg);
		g->freeze = Q_THAWED;
		return;
	}
	if (g_qga_send(g, xl_guest_thaw(), g_thawed) < 0) {
		g->freeze = Q_THAWED;
		g_errorf(g, LM_ERR_STATE, "the guest may still be frozen: cannot send thaw");
		g->outcome = MERGE_UNKNOWN;
		if (!g->transaction_out)
			g_advance(g, P_VERIFY);
	}
}

void g_freeze_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct merge_group *g = w->data;

	(void)loop;
	(void)revents;
	if (g->freeze != Q_FROZEN || g->done)
		return;
	g_msg(g, "the snapshot takes longer than %.0f s: thawing the guest now (the snapshot "
		 "will not be quiesced)", g->req.freeze_limit);
	g->quiesce_lost = g->transaction_out;
	g_thaw(g);
}

/* After a failed freeze: thaw only if the agent says something is frozen. */
static void g_freeze_status(struct merge_group *g, json_object *ret, const struct lm_error *err)
{
	const char *st = ret ? json_object_get_string(ret) : NULL;

	if (err == NULL && st != NULL && strcmp(st, "thawed") == 0) {
		g->freeze = Q_NONE;
		g_advance(g, P_VERIFY);
		return;
	}
	if (err != NULL)
		g_msg(g, "cannot tell whether the guest is frozen (%s): thawing", err->msg);
	g_thaw(g);
}

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
	if (g->freeze == Q_FROZEN) {
		g_thaw(g); /* verifies when the guest is thawed */
		return;
	}
	if (g->freeze == Q_THAWING)
		return; /* the watchdog's thaw is in flight; its answer verifies */
	g_advance(g, P_VERIFY);
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
			/* a formatted block device is on top by its node */
			files[i] = g->jobs[i].ov_block ? NULL : g->jobs[i].overlay;
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
		if (g->freeze == Q_FROZEN)
			g_thaw(g);
		g->outcome = MERGE_DONE;
		g_advance(g, P_VERIFY);
		return;
	}
	g->transaction_out = 1;
}

static void g_froze(struct merge_group *g, json_object *ret, const struct lm_error *err)
{
	if (err != NULL) {
		g_errorf(g, LM_ERR_FAILED, "cannot quiesce the guest (no disk changed): %s",
			 err->msg);
		g->outcome = MERGE_FAILED;
		/* a freeze that failed half-way may have frozen some filesystems */
		g->freeze = Q_FROZEN;
		g->frozen_at = ev_now(g->loop);
		if (g_qga_send(g, xl_guest_freeze_status(), g_freeze_status) < 0)
			g_thaw(g);
		return;
	}
	g->freeze = Q_FROZEN;
	g->frozen_at = ev_now(g->loop);
	g_msg(g, "guest quiesced: %d filesystem%s frozen", json_object_get_int(ret),
	      json_object_get_int(ret) == 1 ? "" : "s");
	ev_timer_set(&g->freeze_watchdog, g->req.freeze_limit, 0.);
	ev_timer_start(g->loop, &g->freeze_watchdog);
	g_send_transaction(g);
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

/* P_START: the snapshot (quiesced or not), or on to the job starts. */
void g_act(struct merge_group *g)
{
	if (g->req.verb == MERGE_SNAPSHOT && g->req.quiesce != NULL) {
		if (g->req.dry_run) {
			if (g->cb.command != NULL)
				g->cb.command(xl_guest_freeze().name, NULL, g->arg);
			g->freeze = Q_FROZEN;
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
	g_advance(g, P_RUN);
}

/* P_RUN: start one job per disk (but those taken over); the barrier follows. */
void g_start_jobs(struct merge_group *g)
{
	int i;

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

/*
 * merge/group, phase "resolve" (P_FETCH): the first phase.
 *
 * Read QEMU's jobs, dismiss concluded leftovers of ours, read the chains,
 * then resolve the request against them: the plan (group-plan.c, pure)
 * says which disk, which layers, which node names and job ids; then each
 * snapshot overlay must not exist yet. A request that cannot work is
 * refused (the outcome is MERGE_BAD_REQUEST and nothing was sent that
 * changes state). Overlays whose host gives no file access are probed
 * through QEMU.
 * Next: group-prepare.c (g_begin).
 */
#include "group-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int g_bad(struct merge_group *g, const char *fmt, ...)
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

/* Resolve the request against the chains: the plan (group-plan.c) into the
 * job table. Whether each snapshot overlay exists already is asked of the
 * host next (g_check_overlays). */
static int g_resolve(struct merge_group *g)
{
	struct merge_target *targets = calloc((size_t)g->n, sizeof(*targets));
	struct merge_request req = g->req;
	struct g_plan *p = NULL;
	struct lm_error e;
	int i, r;

	if (targets == NULL) {
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	for (i = 0; i < g->n; i++) {
		targets[i].disk = g->jobs[i].want;
		targets[i].overlay = g->jobs[i].overlay;
		targets[i].top = g->jobs[i].top_arg;
		targets[i].base = g->jobs[i].base_arg;
	}
	req.targets = targets;
	r = g_plan_build(&req, g->before, &p, &e);
	free(targets);
	for (i = 0; p != NULL && i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		struct g_plan_disk *pd = &p->disks[i];

		/* the plan's strings move into the job; names of disks found
		 * before a refusal too: the result lists their chains */
		j->name = pd->name, pd->name = NULL;
		j->root = pd->root, pd->root = NULL;
		j->top_node = pd->top_node, pd->top_node = NULL;
		j->base_node = pd->base_node, pd->base_node = NULL;
		j->new_node = pd->new_node, pd->new_node = NULL;
		j->job_id = pd->job_id, pd->job_id = NULL;
		j->top = pd->top;
		j->base = pd->base;
		j->active = pd->active;
	}
	g_plan_free(p);
	if (r < 0) {
		g->err = e;
		g->have_err = 1;
		g->outcome = e.code == LM_ERR_USAGE ? MERGE_BAD_REQUEST : MERGE_FAILED;
		return -1;
	}
	return 0;
}

/* A disk a job works on (its filter is on the chain: mirror_top,
 * commit_top, copy-on-read ...) takes no other: refused before anything is
 * sent. After the job ids: a leftover of ours is named by its id there. */
static int g_check_busy(struct merge_group *g)
{
	int i, k;

	for (i = 0; !g->req.adopt && i < g->n; i++) {
		const struct merge_disk *d = g_disk_before(g, &g->jobs[i]);

		for (k = 0; d != NULL && k < d->nfilters; k++)
			if (merge_driver_is_job_filter(d->filters[k].driver))
				return g_bad(g, "%s: a block job runs on it (its %s filter %s is on "
						"the chain)", d->name, d->filters[k].driver,
					     d->filters[k].node_name);
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
	const char *host = host_where(g_host(g)) ? host_where(g_host(g)) : "the VM's host";

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
 * For the overlays whose host cannot tell (host_look: UNSUPPORTED), ask QEMU: a read-only probe node on the path opens if it
 * exists. "Does not exist" only on QEMU's word that it does not; anything
 * else refuses (test-ssh-bare).
 */
void g_probe_overlays(struct merge_group *g)
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
	if (g_resolve(g) < 0 || g_check_leftovers(g) < 0 || g_check_busy(g) < 0) {
		g_finish(g);
		return;
	}
	g_check_overlays(g); /* group-files.c; then the base's room, g_probe_overlays */
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

void g_jobs_fetched(struct merge_group *g, struct gjob *unused, json_object *ret,
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

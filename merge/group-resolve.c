/*
 * merge/group, phase "resolve" (P_FETCH): the first phase.
 *
 * Read QEMU's jobs, dismiss concluded leftovers of ours, read the chains,
 * then resolve the request against them: which disk, which layers, which
 * node names and job ids; refuse a request that cannot work (the outcome
 * is MERGE_BAD_REQUEST and nothing was sent that changes state). Overlays
 * whose host gives no file access are probed through QEMU.
 * Next: group-prepare.c (g_begin).
 */
#include "group-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

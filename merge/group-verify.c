/*
 * merge/group, phase "verify" (P_VERIFY): check the chains.
 *
 * Before: the jobs were dismissed (group-cleanup.c), or the snapshot
 * transaction answered (group-act.c). Read the live chains again and
 * check each disk's chain against the expected one: changed as asked, or
 * (after a failure) as before. Never on QEMU's word alone.
 * Next: release the nodes of removed layers (group-cleanup.c), or the end.
 * The on-disk check of the images (merge_image_verify) runs right before
 * a layer is deleted, in group-cleanup.c, with the other file accesses.
 */
#include "group-int.h"

#include <stdio.h>
#include <string.h>

const struct merge_disk *g_disk_before(struct merge_group *g, struct gjob *j)
{
	return merge_chains_find(g->before, j->name);
}

/* The file names j's chain must have: after the change (changed=1) or as
 * before (0). Returns the count, at most max, pointers borrowed from g. */
int g_expected(struct merge_group *g, struct gjob *j, int changed, const char **expect,
	       int max)
{
	const struct merge_disk *b = g_disk_before(g, j);
	int n = 0, i;

	if (changed && !g->req.dry_run)
		return g_plan_chain_after(g->req.verb, b, j->top, j->base, j->overlay, expect, max);
	for (i = 0; i < b->nlayers && n < max; i++)
		expect[n++] = b->layers[i].filename;
	return n;
}

/* j's disk in ch: by name, or (a disk named after its active node, whose
 * name moved with it) by its chain as expected, or as before. */
const struct merge_disk *g_find_disk(struct merge_group *g, struct gjob *j,
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

/* Read the chains; cb gets them with a reference on g. */
void g_read_chains(struct merge_group *g, merge_chains_cb cb)
{
	struct lm_error e;

	if (merge_chains_fetch(g->c, cb, g, &e) < 0) {
		g_conn_lost(g, &e);
		return;
	}
	g->refs++;
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
		g_advance(g, P_RELEASE); /* dry run: announced only (test-group: test_dry_run_commit) */
	if (g->phase != P_RELEASE && g->phase != P_SETTLE && !g->done)
		g_finish(g);
	g_unref(g);
}

/* P_VERIFY: read the chains again; g_verified checks them. */
void g_verify(struct merge_group *g)
{
	g_read_chains(g, g_verified);
}

/*
 * merge/group, the plan: what a request does to each disk, from the request
 * and the chains before it alone.
 *
 * Pure: no connection, no files, no clock (tests/test-plan.c calls it on
 * hand-built chains). group-resolve.c builds the plan once the chains are
 * read and copies it into the job table; whether a snapshot's overlay
 * exists on the host is the engine's question, asked after the plan.
 */
#include "group-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The job id part that comes from a disk name: QEMU takes [A-Za-z0-9-._]. */
static void g_sanitize(char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '.' || *s == '_'))
			*s = '_';
}

uint32_t g_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static int g_plan_bad(struct lm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int g_plan_bad(struct lm_error *err, const char *fmt, ...)
{
	va_list ap;

	lm_error_set(err, LM_ERR_USAGE, "%s", "");
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static int g_plan_layer(const struct merge_disk *d, const char *name, const char *what,
			struct lm_error *err)
{
	int k = merge_disk_find_layer(d, name);

	if (k < 0)
		return g_plan_bad(err, "%s: no layer '%s' in its chain (for %s; 'livemerge chain %s' "
				  "shows the layers)", d->name, name, what, d->name);
	return k;
}

int g_plan_chain_after(enum merge_verb verb, const struct merge_disk *b, int top, int base,
		       const char *overlay, const char **expect, int max)
{
	int n = 0, i;

	if (verb == MERGE_SNAPSHOT) {
		expect[n++] = overlay;
		for (i = 0; i < b->nlayers && n < max; i++)
			expect[n++] = b->layers[i].filename;
	} else {
		int keep_top = verb == MERGE_COMMIT ? top : 1;

		for (i = 0; i < keep_top && n < max; i++)
			expect[n++] = b->layers[i].filename;
		for (i = base; i < b->nlayers && n < max; i++)
			expect[n++] = b->layers[i].filename;
	}
	return n;
}

/* Plan disk i of req (the disks before it planned already). */
static int g_plan_disk(const struct merge_request *req, const struct merge_chains *before,
		       struct g_plan *p, int i, struct lm_error *err)
{
	const struct merge_target *t = &req->targets[i];
	struct g_plan_disk *pd = &p->disks[i];
	const struct merge_disk *d = merge_chains_find(before, t->disk ? t->disk : "");
	const char *verb = merge_verb_name(req->verb);
	int k;

	if (d == NULL)
		return g_plan_bad(err, "no disk '%s' (run 'livemerge chain' to list the disks)",
				  t->disk ? t->disk : "");
	for (k = 0; k < i; k++)
		if (strcmp(p->disks[k].name, d->name) == 0)
			return g_plan_bad(err, "disk %s is named twice", d->name);
	pd->name = strdup(d->name);
	if (d->nlayers == 0 || d->layers[0].node_name == NULL)
		return g_plan_bad(err, "%s: cannot tell the node name of its active layer", d->name);
	pd->root = strdup(d->layers[0].node_name);
	if (req->verb == MERGE_SNAPSHOT) {
		char nn[32];

		if (t->overlay == NULL || t->overlay[0] != '/')
			return g_plan_bad(err, "%s: the overlay must be an absolute path", d->name);
		for (k = 0; k < d->nlayers; k++)
			if (strcmp(d->layers[k].filename, t->overlay) == 0)
				return g_plan_bad(err, "%s: %s is in its chain already", d->name,
						  t->overlay);
		for (k = 0; k < i; k++)
			if (strcmp(p->disks[k].overlay, t->overlay) == 0)
				return g_plan_bad(err, "overlay %s is given twice", t->overlay);
		pd->overlay = strdup(t->overlay);
		snprintf(nn, sizeof(nn), "lm-%08x", g_hash(t->overlay));
		pd->new_node = strdup(nn);
	} else {
		if (d->nlayers < 2)
			return g_plan_bad(err, "%s: its chain has a single layer: nothing to %s", d->name,
					  verb);
		if (req->verb == MERGE_COMMIT) {
			if (t->top != NULL && (pd->top = g_plan_layer(d, t->top, "--top", err)) < 0)
				return -1;
			if (pd->top == d->nlayers - 1)
				return g_plan_bad(err, "%s: top %s is the base of the chain: nothing "
						  "below it", d->name, d->layers[pd->top].filename);
			pd->base = pd->top + 1;
			if (t->base != NULL && (pd->base = g_plan_layer(d, t->base, "--base", err)) < 0)
				return -1;
			if (pd->base <= pd->top)
				return g_plan_bad(err, "%s: base %s is not below top %s", d->name,
						  d->layers[pd->base].filename,
						  d->layers[pd->top].filename);
			pd->active = pd->top == 0;
			if (d->layers[pd->top].node_name == NULL)
				return g_plan_bad(err, "%s: cannot tell the node name of %s", d->name,
						  d->layers[pd->top].filename);
			pd->top_node = strdup(d->layers[pd->top].node_name);
			pd->leave_from = pd->top;
		} else {
			pd->base = d->nlayers; /* flatten */
			if (t->base != NULL && (pd->base = g_plan_layer(d, t->base, "--base", err)) < 0)
				return -1;
			if (pd->base == 0)
				return g_plan_bad(err, "%s: base %s is the active layer: nothing to "
						  "stream", d->name, d->layers[0].filename);
			if (pd->base == 1)
				return g_plan_bad(err, "%s: base %s is right below the active layer: "
						  "nothing to stream", d->name, d->layers[1].filename);
			pd->leave_from = 1;
		}
		pd->leave_to = pd->base;
		if (pd->base < d->nlayers) {
			if (d->layers[pd->base].node_name == NULL)
				return g_plan_bad(err, "%s: cannot tell the node name of %s", d->name,
						  d->layers[pd->base].filename);
			pd->base_node = strdup(d->layers[pd->base].node_name);
		}
		{
			char id[256];

			snprintf(id, sizeof(id), "livemerge-%s-%s", verb, d->name);
			g_sanitize(id + 10);
			pd->job_id = strdup(id);
		}
	}
	pd->expect = calloc((size_t)d->nlayers + 1, sizeof(*pd->expect));
	if (pd->expect == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	pd->nexpect = g_plan_chain_after(req->verb, d, pd->top, pd->base, pd->overlay, pd->expect,
					 d->nlayers + 1);
	return 0;
}

int g_plan_build(const struct merge_request *req, const struct merge_chains *before,
		 struct g_plan **out, struct lm_error *err)
{
	struct g_plan *p = calloc(1, sizeof(*p));
	int i;

	*out = p;
	if (p == NULL || (p->disks = calloc((size_t)(req->ntargets > 0 ? req->ntargets : 1),
					    sizeof(*p->disks))) == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	p->n = req->ntargets;
	for (i = 0; i < p->n; i++)
		if (g_plan_disk(req, before, p, i, err) < 0)
			return -1;
	return 0;
}

void g_plan_free(struct g_plan *p)
{
	int i;

	if (p == NULL)
		return;
	for (i = 0; i < p->n && p->disks != NULL; i++) {
		struct g_plan_disk *pd = &p->disks[i];

		free(pd->name);
		free(pd->root);
		free(pd->top_node);
		free(pd->base_node);
		free(pd->overlay);
		free(pd->new_node);
		free(pd->job_id);
		free(pd->expect);
	}
	free(p->disks);
	free(p);
}

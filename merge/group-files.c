/*
 * merge/group: the engine's files on the VM's host (host/host.h), reached
 * on the event loop like QEMU is: whether a snapshot overlay exists already
 * (resolve), removing the overlays a refused snapshot left (act), and
 * deleting the layers that left the chains, each checked on the host first
 * (cleanup). Each host operation holds a reference on the group; the end
 * (g_finish) waits until none is out, and abandoning the group cancels
 * them.
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct g_hop {
	struct merge_group *g;
	struct gjob *j;
	struct host_op *op;
	struct merge_volume_op *vop; /* a volume removed by the volume command */
	int k; /* a layer index, or -1 */
	char *path;
	void (*look)(struct g_hop *h, const struct host_file *f, const struct lm_error *err);
	void (*done)(struct g_hop *h, const struct lm_error *err);
	void (*gdone)(struct merge_group *g, struct gjob *j, const struct lm_error *err);
	/* a layer's end being read (g_measure): the stage, what the header said */
	int stage;
	struct merge_qcow2_refs refs;
	int64_t bidx;
	struct g_hop *next;
};

struct host *g_host(struct merge_group *g)
{
	return g->req.host != NULL ? g->req.host : g->own_host;
}

static void g_hop_end(struct g_hop *h)
{
	struct merge_group *g = h->g;
	struct g_hop **pp;

	for (pp = &g->hops; *pp != NULL; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	free(h->path);
	free(h);
	if (g->hops == NULL && g->finish_waits && !g->done && !g->abandoned) {
		g->finish_waits = 0;
		g_finish(g);
	}
	g_unref(g);
}

static void g_hop_look_cb(void *arg, const struct host_file *f, const struct lm_error *err)
{
	struct g_hop *h = arg;

	h->op = NULL;
	if (!h->g->done && !h->g->abandoned)
		h->look(h, f, err);
	g_hop_end(h);
}

static void g_hop_done_cb(void *arg, const struct lm_error *err)
{
	struct g_hop *h = arg;

	h->op = NULL;
	h->vop = NULL;
	if (!h->g->done && !h->g->abandoned)
		h->done(h, err);
	g_hop_end(h);
}

static struct g_hop *g_hop_new(struct merge_group *g, struct gjob *j, int k, const char *path)
{
	struct g_hop *h = calloc(1, sizeof(*h));

	if (h == NULL || (h->path = strdup(path)) == NULL) {
		free(h);
		return NULL;
	}
	h->g = g;
	h->j = j;
	h->k = k;
	h->next = g->hops;
	g->hops = h;
	g->refs++;
	return h;
}

/* Look at path on the host (head bytes of it); cb gets the answer. 0, or -1
 * (out of memory: err set). */
static int g_look(struct merge_group *g, struct gjob *j, int k, const char *path, size_t head,
		  int device,
		  void (*cb)(struct g_hop *, const struct host_file *, const struct lm_error *))
{
	struct g_hop *h = g_hop_new(g, j, k, path);

	if (h != NULL) {
		h->look = cb;
		/* device: a symlink naming a block device is its volume's name */
		h->op = device ? host_look_device(g_host(g), path, head, g_hop_look_cb, h)
			       : host_look(g_host(g), path, head, g_hop_look_cb, h);
		if (h->op != NULL)
			return 0;
		g_hop_end(h);
	}
	g_errorf(g, LM_ERR_NOMEM, "out of memory");
	return -1;
}

static int g_remove(struct merge_group *g, struct gjob *j, int k, const char *path,
		    void (*cb)(struct g_hop *, const struct lm_error *))
{
	struct g_hop *h = g_hop_new(g, j, k, path);

	if (h != NULL) {
		h->done = cb;
		if ((h->op = host_remove(g_host(g), path, g_hop_done_cb, h)) != NULL)
			return 0;
		g_hop_end(h);
	}
	g_errorf(g, LM_ERR_NOMEM, "out of memory");
	return -1;
}

static void g_leave(struct merge_group *g, struct gjob *j, const char *file, const char *why);

/* Remove the volume at path with the volume command (merge/volume.c
 * journals it first). */
static int g_remove_volume(struct merge_group *g, struct gjob *j, int k, const char *path,
			   void (*cb)(struct g_hop *, const struct lm_error *))
{
	struct g_hop *h = g_hop_new(g, j, k, path);
	struct lm_error e;

	if (h == NULL) {
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	h->done = cb;
	if ((h->vop = merge_volume_run(&g->vols, MERGE_VOLUME_REMOVE, path, 0, g_hop_done_cb, h,
				       &e)) != NULL)
		return 0;
	g_hop_end(h);
	g_leave(g, j, path, e.msg);
	return -1;
}

static void g_hop_run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct lm_error e;

	if (err == NULL && r->status != 0) {
		lm_error_set(&e, LM_ERR_IO, "dd exited with %d%s%s", r->status,
			     r->err_last[0] ? ": " : "", r->err_last);
		err = &e;
	}
	g_hop_done_cb(arg, err);
}

static void g_hop_gdone(struct g_hop *h, const struct lm_error *err)
{
	h->gdone(h->g, h->j, err);
}

int g_zero_device(struct merge_group *g, struct gjob *j, const char *path, int64_t len,
		  void (*cb)(struct merge_group *, struct gjob *, const struct lm_error *))
{
	struct g_hop *h = g_hop_new(g, j, -1, path);
	char of[4200], count[32];
	const char *argv[] = { "dd", "if=/dev/zero", of, "bs=65536", count, "conv=notrunc,fsync",
			       "status=none", NULL };

	if (h == NULL) {
		g_errorf(g, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	h->done = g_hop_gdone;
	h->gdone = cb;
	snprintf(of, sizeof(of), "of=%s", path);
	snprintf(count, sizeof(count), "count=%lld", (long long)((len + 65535) / 65536));
	if ((h->op = host_run(g_host(g), argv, 60, g_hop_run_cb, h)) != NULL)
		return 0;
	g_hop_end(h);
	g_errorf(g, LM_ERR_NOMEM, "out of memory");
	return -1;
}

/* The group is abandoned: what runs on the host is stopped, no callback. */
void g_hops_cancel(struct merge_group *g)
{
	while (g->hops != NULL) {
		struct g_hop *h = g->hops;

		host_op_cancel(h->op);
		merge_volume_cancel(h->vop);
		h->op = NULL;
		h->vop = NULL;
		g_hop_end(h);
	}
}

/* Does g_finish have to wait for the host? Then it is called again. */
int g_hops_hold_finish(struct merge_group *g)
{
	if (g->hops == NULL)
		return 0;
	g->finish_waits = 1;
	return 1;
}

/* ------------------------------------------------------------ resolve */

/* One answer about the overlays (or a layer's end) is in: after the last,
 * the base's room, then refuse or go on. */
static void g_overlays_checked(struct merge_group *g)
{
	if (--g->outstanding > 0)
		return;
	if (g->have_err || g_check_base_space(g) < 0) {
		g_finish(g);
		return;
	}
	g_probe_overlays(g);
}

static int g_measure_read(struct g_hop *h, uint64_t off, size_t len);

/* One read of a layer's end is in: the next, or the end found (or not:
 * the layer then counts at its size). */
static void g_measure_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct g_hop *h = arg;
	struct merge_group *g = h->g;
	int64_t end = -1;
	uint64_t boff = 0;
	size_t csize = (size_t)1 << h->refs.cluster_bits;

	h->op = NULL;
	if (g->done || g->abandoned)
		goto out;
	if (err != NULL || r->status != 0)
		goto found;
	if (h->stage == 0) {
		if (merge_qcow2_refs(r->out, r->outlen, &h->refs) < 0 || h->refs.cluster_bits > 16)
			goto found;
		h->stage = 1;
		if (g_measure_read(h, h->refs.table_offset,
				   h->refs.table_bytes < HOST_RUN_OUT_MAX ? (size_t)h->refs.table_bytes
									  : HOST_RUN_OUT_MAX) == 0)
			return;
	} else if (h->stage == 1) {
		h->bidx = merge_qcow2_last_block(&h->refs, r->out, r->outlen, &boff);
		/* a table longer than was read may go on past it: unknown */
		if (h->bidx < 0 || (h->refs.table_bytes > r->outlen &&
				    (uint64_t)(h->bidx + 1) * 8 >= r->outlen))
			goto found;
		h->stage = 2;
		if (g_measure_read(h, boff, csize) == 0)
			return;
	} else {
		end = merge_qcow2_end(&h->refs, h->bidx, r->out, r->outlen);
	}
found:
	if (h->j->ends != NULL && end > 0)
		h->j->ends[h->k] = end;
	g_overlays_checked(g);
out:
	g_hop_end(h);
}

/* Read len bytes at off of h's layer on the host (dd; offsets are cluster
 * aligned, so whole 512-byte sectors). 0, or -1 (nothing started). */
static int g_measure_read(struct g_hop *h, uint64_t off, size_t len)
{
	char in[4200], skip[40], count[40];
	const char *argv[] = { "dd", in, "bs=512", skip, count, "status=none", NULL };

	snprintf(in, sizeof(in), "if=%s", h->path);
	snprintf(skip, sizeof(skip), "skip=%llu", (unsigned long long)(off / 512));
	snprintf(count, sizeof(count), "count=%llu", (unsigned long long)((len + 511) / 512));
	h->op = host_run(g_host(h->g), argv, 60, g_measure_cb, h);
	return h->op != NULL ? 0 : -1;
}

/*
 * A commit into a block device: each qcow2 layer on a block device from
 * top to base has its end read on the host (g_check_base_space counts it
 * in place of the device's size, which QEMU reports as its allocation).
 */
static void g_measure(struct merge_group *g)
{
	int i, k;

	for (i = 0; g->req.verb == MERGE_COMMIT && i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);

		if (b == NULL || j->base >= b->nlayers || !merge_layer_is_block(&b->layers[j->base]))
			continue;
		free(j->ends);
		if ((j->ends = malloc(sizeof(*j->ends) * (size_t)b->nlayers)) == NULL)
			return;
		for (k = 0; k < b->nlayers; k++)
			j->ends[k] = -1;
		for (k = j->top; k <= j->base; k++) {
			struct g_hop *h;

			if (!merge_layer_is_block(&b->layers[k]) ||
			    strcmp(b->layers[k].format, "qcow2") != 0 ||
			    (h = g_hop_new(g, j, k, b->layers[k].filename)) == NULL)
				continue;
			if (g_measure_read(h, 0, MERGE_IMAGE_HEAD) < 0) {
				g_hop_end(h);
				continue;
			}
			g->outstanding++;
		}
	}
}

static void g_overlay_looked(struct g_hop *h, const struct host_file *f,
			     const struct lm_error *err)
{
	struct merge_group *g = h->g;
	struct gjob *j = h->j;

	if (err != NULL && err->code == LM_ERR_UNSUPPORTED) {
		j->probe = 1; /* g_probe_overlays asks QEMU */
	} else if (err != NULL) {
		g_bad(g, "%s", err->msg);
	} else if (f->kind != HOST_FILE_NONE) {
		(void)g_overlay_device(g, j, f); /* only an empty block device will do */
	} else {
		g_overlay_missing(g, j);
	}
	g_overlays_checked(g);
}

/* Whether each snapshot overlay exists already, on the host, and where the
 * layers a commit merges into a block device end; then the probes through
 * QEMU for a host that cannot tell (g_probe_overlays). */
void g_check_overlays(struct merge_group *g)
{
	int i;

	g->outstanding = 1;
	g_measure(g);
	for (i = 0; g->req.verb == MERGE_SNAPSHOT && i < g->n; i++) {
		if (g_look(g, &g->jobs[i], -1, g->jobs[i].overlay, 65536, 1, g_overlay_looked) < 0)
			break;
		g->outstanding++;
	}
	g_overlays_checked(g);
}

/* ------------------------------------------------------------ act */

static void g_overlay_removed(struct g_hop *h, const struct lm_error *err)
{
	if (err != NULL)
		g_msg(h->g, "%s: %s", h->j->name, err->msg);
	else
		g_msg(h->g, "%s: removed %s, created by this run", h->j->name, h->path);
}

static void g_our_overlay_looked(struct g_hop *h, const struct host_file *f,
				 const struct lm_error *err)
{
	if (err != NULL || f->kind == HOST_FILE_NONE)
		return;
	(void)g_remove(h->g, h->j, -1, h->path, g_overlay_removed);
}

/* Remove the overlays this run created (never one that existed before);
 * the end waits for it. */
void g_remove_our_overlays(struct merge_group *g)
{
	int i;

	for (i = 0; i < g->n; i++)
		if (g->jobs[i].overlay_ours &&
		    g_look(g, &g->jobs[i], -1, g->jobs[i].overlay, 0, 0, g_our_overlay_looked) < 0)
			return;
}

/* ------------------------------------------------------------ cleanup: delete */

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

/* The layers of j that leave: [from, to) of its chain before. */
static void g_leaving(struct merge_group *g, struct gjob *j, int *from, int *to)
{
	*from = g->req.verb == MERGE_COMMIT ? j->top : 1;
	*to = j->base;
}

static void g_delete_next(struct merge_group *g);

static void g_layer_removed(struct g_hop *h, const struct lm_error *err)
{
	if (err != NULL)
		g_leave(h->g, h->j, h->path, err->msg);
	else
		g_msg(h->g, "%s: deleted %s", h->j->name, h->path);
	g_delete_next(h->g);
}

/* A leaving layer as the host has it: delete it only if it is what the
 * chain before said, naming the layer below it. */
static void g_layer_looked(struct g_hop *h, const struct host_file *f,
			   const struct lm_error *err)
{
	struct merge_group *g = h->g;
	struct gjob *j = h->j;
	const struct merge_disk *b = g_disk_before(g, j);
	char why[600];

	if (err != NULL) {
		g_leave(g, j, h->path, err->msg);
	} else if (merge_image_check(f, h->path, b->layers[h->k].format,
				     h->k + 1 < b->nlayers ? b->layers[h->k + 1].filename : NULL,
				     why, sizeof(why)) < 0) {
		g_leave(g, j, h->path, why);
	} else if (f->kind == HOST_FILE_BLOCK && !g_has_volume_cmd(g)) {
		g_leave(g, j, h->path, "it is a block device: removing it needs --volume-cmd");
	} else if (g_journal(g, "delete", j) < 0) {
		g_leave(g, j, h->path, g->err.msg);
	} else if (f->kind == HOST_FILE_BLOCK) {
		if (g_remove_volume(g, j, h->k, h->path, g_layer_removed) == 0)
			return;
	} else if (g_remove(g, j, h->k, h->path, g_layer_removed) == 0) {
		return;
	}
	g_delete_next(g);
}

/* The image now holding a job's data, as the host has it: the layers that
 * left go only if it names the expected backing in its own header. */
static void g_holder_looked(struct g_hop *h, const struct host_file *f,
			    const struct lm_error *err)
{
	struct merge_group *g = h->g;
	struct gjob *j = h->j;
	const struct merge_disk *b = g_disk_before(g, j);
	int rw = h->k, below = g->req.verb == MERGE_COMMIT && j->active ? j->base + 1 : j->base;
	int from, to, k;
	char why[600], line[700];

	if (err == NULL &&
	    merge_image_check(f, h->path, b->layers[rw].format,
			      below < b->nlayers ? b->layers[below].filename : NULL, why,
			      sizeof(why)) == 0) {
		g_delete_next(g);
		return;
	}
	snprintf(line, sizeof(line), "the image now holding the data, %s, is not as expected on "
		 "disk: %s", h->path, err != NULL ? err->msg : why);
	g_leaving(g, j, &from, &to);
	for (k = from; k < to; k++)
		g_leave(g, j, b->layers[k].filename, line);
	g->del_k = to; /* this job's layers are done */
	g_delete_next(g);
}

/*
 * Delete the layers that left the chains, one at a time, each only after
 * checking it on the host, not on QEMU's word: the image that now holds the
 * data names the expected backing in its own header; the layer is in no
 * chain now, is a regular file or block device (no symlink followed), holds
 * the format the chain reported and names the layer below it as recorded
 * before the operation. Anything else is left in place, with the reason.
 * g->del_i/del_k: the job and layer next; del_k -1: the job's holder.
 */
static void g_delete_next(struct merge_group *g)
{
	while (g->del_i < g->n) {
		struct gjob *j = &g->jobs[g->del_i];
		const struct merge_disk *b = g_disk_before(g, j);
		int from, to, k;

		g_leaving(g, j, &from, &to);
		if (g->del_k < 0) {
			int rw = g_rewritten_layer(g, j);

			g->del_k = from;
			if (g_look(g, j, rw, b->layers[rw].filename, MERGE_IMAGE_HEAD,
				   merge_layer_is_block(&b->layers[rw]), g_holder_looked) == 0)
				return;
			continue;
		}
		k = g->del_k++;
		if (k >= to) {
			g->del_i++;
			g->del_k = -1;
			continue;
		}
		if (g_in_any_chain(g->after, b->layers[k].filename)) {
			g_leave(g, j, b->layers[k].filename, "it is still in a chain");
			continue;
		}
		if (g_look(g, j, k, b->layers[k].filename, MERGE_IMAGE_HEAD,
			   merge_layer_is_block(&b->layers[k]), g_layer_looked) == 0)
			return;
	}
}

/* After the settle: delete if asked, then the end (which waits for the
 * host operations). */
void g_delete_removed(struct merge_group *g)
{
	g->del_i = 0;
	g->del_k = -1;
	g_delete_next(g);
}

/*
 * merge/group, phase "prepare" for block devices (P_PREPARE): between the
 * journal's intent (group-prepare.c) and act (group-act.c).
 *
 * What is decided before anything is sent (resolve):
 *  - a snapshot OVERLAY that is a block device is used only when it is
 *    empty (its first 64 KiB all zeros) and in no chain QEMU has open; one
 *    that does not exist is created by the volume command, when there is
 *    one;
 *  - a commit into a block device must fit: its size now against what it
 *    must hold (its own allocation plus every layer merged into it, capped
 *    at the most such an image can need, one chunk more for an active
 *    commit); without a volume command a base too small is refused.
 * What is done here, one disk after the other:
 *  - create the overlay volume (CMD create), open the device as a
 *    host_device node, format it as a qcow2 naming the disk's active layer
 *    as backing (a blockdev-create job), open that qcow2 with no backing:
 *    act then puts it on top in the one transaction (blockdev-snapshot);
 *  - grow the commit's base (CMD extend).
 * When a run that prepared something fails (a step here, or QEMU refusing
 * the snapshot transaction), the end first undoes it (g_volumes_hold_finish):
 * nodes released, every device it formatted wiped back to zeros where QEMU
 * wrote, every volume it created removed. A base that was grown stays so.
 */
#include "group-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOL_HEAD 65536 /* what must be zeros on an overlay device */
/* the most a wipe writes: creating a qcow2 writes its header, refcount
 * table and block and L1 table, far less (QEMU's count is not trusted
 * beyond it) */
#define VOL_WIPE_MAX ((int64_t)16 << 20)

/* A block-device layer kept ahead of the writes (see "watermarks"). */
struct g_mark {
	struct merge_group *g;
	struct gjob *j;
	char *node, *path;
	int64_t size, max;
	struct merge_volume_op *op;
};


int g_has_volume_cmd(const struct merge_group *g)
{
	return g->req.volume_cmd != NULL || g->req.volume_fn != NULL;
}

void g_volumes_init(struct merge_group *g)
{
	g->vols.host = g_host(g);
	g->vols.cmd = g->req.volume_cmd;
	g->vols.fn = g->req.volume_fn;
	g->vols.timeout = g->req.volume_timeout;
	g->vols.journal = g->req.dry_run ? NULL : g->req.journal;
	if (g->req.chunk <= 0)
		g->req.chunk = MERGE_VOLUME_CHUNK;
	if (g->req.headroom <= 0 || g->req.headroom >= g->req.chunk)
		g->req.headroom = g->req.chunk / 5 * 4;
}

/* ------------------------------------------------------------ resolve */

/* Is path a layer of any chain QEMU has open? */
static int g_device_in_use(struct merge_group *g, const char *path)
{
	int i, k;

	for (i = 0; g->before != NULL && i < g->before->ndisks; i++)
		for (k = 0; k < g->before->disks[i].nlayers; k++)
			if (strcmp(g->before->disks[i].layers[k].filename, path) == 0)
				return 1;
	return 0;
}

/* j's overlay goes on a block device: the name of its device node (the
 * journal's intent records it for recovery). */
static void g_overlay_block(struct gjob *j)
{
	char node[48];

	j->ov_block = 1;
	snprintf(node, sizeof(node), "lm-ovf-%08x", g_hash(j->overlay));
	free(j->ov_file_node);
	j->ov_file_node = strdup(node);
}

/*
 * What the host says of a snapshot overlay that exists: a block device may
 * take the overlay if it is empty. 0 taken (j->ov_block), -1 refused (g_bad).
 */
int g_overlay_device(struct merge_group *g, struct gjob *j, const struct host_file *f)
{
	const char *where = host_where(g_host(g));
	size_t i;

	if (f->kind != HOST_FILE_BLOCK)
		return g_bad(g, "%s: overlay %s exists already%s%s; refusing to overwrite it",
			     j->name, j->overlay, where ? " on " : "", where ? where : "");
	if (g_device_in_use(g, j->overlay))
		return g_bad(g, "%s: overlay %s is a block device QEMU already uses; refusing it",
			     j->name, j->overlay);
	if (g->req.format != NULL && strcmp(g->req.format, "qcow2") != 0)
		return g_bad(g, "%s: overlay %s is a block device: only qcow2 can be formatted on "
			     "it", j->name, j->overlay);
	for (i = 0; i < f->len && f->head[i] == 0; i++)
		;
	if (f->len < VOL_HEAD || i < f->len)
		return g_bad(g, "%s: overlay %s is a block device that is not empty (%s); "
			     "refusing to overwrite it", j->name, j->overlay,
			     f->len < VOL_HEAD ? "shorter than 64 KiB"
			     : f->len >= 4 && memcmp(f->head, "QFI\xfb", 4) == 0
				     ? "it holds a qcow2 header"
				     : "its first 64 KiB are not all zeros");
	g_overlay_block(j);
	return 0;
}

/* A snapshot overlay that does not exist: the volume command makes it, or
 * QEMU makes a file (the default). */
void g_overlay_missing(struct merge_group *g, struct gjob *j)
{
	if (g_has_volume_cmd(g)) {
		j->ov_create = 1;
		g_overlay_block(j);
	} else {
		j->overlay_ours = 1;
	}
}

/* The most the layer l (a qcow2 or raw image) can take on its volume. */
static int64_t g_layer_max(const struct merge_layer *l)
{
	if (l->format != NULL && strcmp(l->format, "qcow2") == 0)
		return merge_qcow2_max_size(l->virtual_size, MERGE_QCOW2_CLUSTER);
	return l->virtual_size;
}

/*
 * A commit into a block device: the bytes it must hold. The base's end
 * (the highest offset QEMU wrote since it opened it, or the end read on the
 * host, whichever is higher) plus what each layer merged into it can bring:
 * its end as read on the host (g_measure: the last cluster its refcounts
 * count, data or metadata), else its size. 0 when it fits already, -1 when
 * it does not and nothing can grow it (g_bad).
 */
/* What layer k (l) holds, at most: its end read on the host, or QEMU's
 * highest write if higher; unread, the base's highest write if QEMU wrote
 * it, else the layer's size. */
static int64_t g_layer_end(const struct gjob *j, const struct merge_layer *l, int k)
{
	int64_t end = j->ends != NULL ? j->ends[k] : -1;

	if (end > 0)
		return l->allocated > end ? l->allocated : end;
	if (k == j->base && l->allocated > 0)
		return l->allocated;
	return l->size > 0 ? l->size : 0;
}

int g_check_base_space(struct merge_group *g)
{
	int i, k;

	for (i = 0; g->req.verb == MERGE_COMMIT && i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		const struct merge_layer *base;
		int64_t need, max;

		if (b == NULL || j->base >= b->nlayers)
			continue;
		base = &b->layers[j->base];
		if (!merge_layer_is_block(base) || base->size < 0)
			continue;
		max = g_layer_max(base);
		need = g_layer_end(j, base, j->base);
		for (k = j->top; k < j->base; k++)
			need += g_layer_end(j, &b->layers[k], k);
		if (j->active)
			need += g->req.chunk;
		if (max > 0 && need > max)
			need = max;
		if (need <= base->size)
			continue;
		if (!g_has_volume_cmd(g))
			return g_bad(g, "%s: base %s is a block device of %lld bytes; the commit "
				     "needs up to %lld: give --volume-cmd to grow it first, or grow "
				     "it",
				     j->name, base->filename, (long long)base->size,
				     (long long)need);
		j->need = need;
	}
	return 0;
}

/* ------------------------------------------------------------ prepare */

static void g_prepare_next(struct merge_group *g);
static void g_volumes_undo_next(struct merge_group *g);

/* A step of the preparation failed: the end, which undoes it first. */
static void g_prepare_failed(struct merge_group *g)
{
	g->outcome = MERGE_FAILED;
	g_finish(g);
}

static void g_vol_done(void *arg, const struct lm_error *err)
{
	struct merge_group *g = arg;
	struct gjob *j = &g->jobs[g->vol_i];

	g->vol_op = NULL;
	if (g->done || g->abandoned) {
		g_unref(g);
		return;
	}
	if (err != NULL) {
		g_errorf(g, err->code == LM_ERR_TIMEOUT ? LM_ERR_TIMEOUT : LM_ERR_FAILED, "%s: %s",
			 j->name, err->msg);
		g_prepare_failed(g);
	} else {
		if (j->ov_create && !j->ov_created)
			j->ov_created = 1;
		else if (j->need > 0) {
			j->grown = j->need;
			j->need = 0; /* grown */
		}
		g_prepare_next(g);
	}
	g_unref(g);
}

static int g_vol_run(struct merge_group *g, enum merge_volume_verb verb, const char *path,
		     int64_t bytes)
{
	struct lm_error e;

	g->refs++;
	g->vol_op = merge_volume_run(&g->vols, verb, path, bytes, g_vol_done, g, &e);
	if (g->vol_op != NULL)
		return 0;
	g->refs--;
	g_error(g, &e);
	return -1;
}

static void g_overlay_added(struct merge_group *g, struct gjob *j, json_object *ret,
			    const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err))
			return g_conn_lost(g, err);
		g_errorf(g, LM_ERR_FAILED, "%s: QEMU cannot open the new overlay on %s: %s",
			 j->name, j->overlay, err->msg);
		return g_prepare_failed(g);
	}
	j->ov_added = 1;
	g_prepare_next(g);
}

static void g_create_polled(struct merge_group *g, struct gjob *j, json_object *ret,
			    const struct lm_error *err);

static void g_create_dismissed(struct merge_group *g, struct gjob *j, json_object *ret,
			       const struct lm_error *err)
{
	(void)ret;
	if (err != NULL && g_is_conn_error(err))
		return g_conn_lost(g, err);
	if (g->have_err)
		return g_prepare_failed(g); /* the format failed: it was only dismissed */
	if (g_send(g, xl_qcow2_add(j->new_node, j->ov_file_node), 1, j, g_overlay_added) < 0)
		g_conn_lost(g, &g->err);
}

static void g_vol_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct merge_group *g = w->data;

	(void)loop;
	(void)revents;
	if (g_send(g, xl_query_jobs(), 0, &g->jobs[g->vol_i], g_create_polled) < 0)
		g_conn_lost(g, &g->err);
}

/* The create job's state: wait until it concludes, then read how. */
static void g_create_polled(struct merge_group *g, struct gjob *j, json_object *ret,
			    const struct lm_error *err)
{
	char id[48];
	struct xl_job_info ji;
	int i;

	if (err != NULL)
		return g_is_conn_error(err) ? g_conn_lost(g, err) : g_prepare_failed(g);
	snprintf(id, sizeof(id), "lm-create-%08x", g_hash(j->overlay));
	for (i = 0; xl_query_jobs_entry(ret, i, &ji) == 0; i++) {
		if (strcmp(ji.id, id) != 0)
			continue;
		if (ji.status != XL_JOB_CONCLUDED) {
			ev_timer_set(&g->vol_poll, 0.02, 0.);
			ev_timer_start(g->loop, &g->vol_poll);
			return;
		}
		if (ji.error != NULL) {
			g_errorf(g, LM_ERR_FAILED, "%s: QEMU could not format %s: %s", j->name,
				 j->overlay, ji.error);
			if (g_send(g, xl_job_verb(XL_VERB_DISMISS, id), 1, j, g_create_dismissed) < 0)
				g_conn_lost(g, &g->err);
			return;
		}
		if (g_send(g, xl_job_verb(XL_VERB_DISMISS, id), 1, j, g_create_dismissed) < 0)
			g_conn_lost(g, &g->err);
		return;
	}
	g_errorf(g, LM_ERR_FAILED, "%s: the job formatting %s vanished", j->name, j->overlay);
	g_prepare_failed(g);
}

static void g_create_started(struct merge_group *g, struct gjob *j, json_object *ret,
			     const struct lm_error *err)
{
	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err))
			return g_conn_lost(g, err);
		g_errorf(g, LM_ERR_FAILED, "%s: QEMU refused to format %s: %s", j->name, j->overlay,
			 err->msg);
		return g_prepare_failed(g);
	}
	j->ov_formatted = 1;
	g_vol_poll_cb(g->loop, &g->vol_poll, 0);
}

static void g_device_added(struct merge_group *g, struct gjob *j, json_object *ret,
			   const struct lm_error *err)
{
	const struct merge_disk *b = g_disk_before(g, j);
	const struct merge_layer *top = &b->layers[0];
	char id[48];

	(void)ret;
	if (err != NULL) {
		if (g_is_conn_error(err))
			return g_conn_lost(g, err);
		g_errorf(g, LM_ERR_FAILED, "%s: QEMU cannot open %s: %s", j->name, j->overlay,
			 err->msg);
		return g_prepare_failed(g);
	}
	j->ov_file_added = 1;
	snprintf(id, sizeof(id), "lm-create-%08x", g_hash(j->overlay));
	if (g_send(g, xl_qcow2_create(id, j->ov_file_node, top->virtual_size, top->filename,
				      top->format),
		   1, j, g_create_started) < 0)
		g_conn_lost(g, &g->err);
}

/* One more step of the preparation, for the disk g->vol_i and on. */
static void g_prepare_next(struct merge_group *g)
{
	for (; g->vol_i < g->n; g->vol_i++) {
		struct gjob *j = &g->jobs[g->vol_i];
		const struct merge_disk *b = g_disk_before(g, j);

		if (g->cancel_requested) {
			g_errorf(g, LM_ERR_FAILED, "%s cancelled before anything changed",
				 merge_verb_name(g->req.verb));
			return g_prepare_failed(g);
		}
		if (j->need > 0) {
			if (g_vol_run(g, MERGE_VOLUME_EXTEND, b->layers[j->base].filename, j->need) < 0)
				return g_prepare_failed(g);
			return;
		}
		if (!j->ov_block || j->ov_added)
			continue;
		if (j->ov_create && !j->ov_created) {
			int64_t size = g->req.initial_size > 0 ? g->req.initial_size : g->req.chunk;
			int64_t max = merge_qcow2_max_size(b->layers[0].virtual_size,
							   MERGE_QCOW2_CLUSTER);

			if (max > 0 && size > max)
				size = max;
			if (g_vol_run(g, MERGE_VOLUME_CREATE, j->overlay, size) < 0)
				return g_prepare_failed(g);
			return;
		}
		if (!j->ov_file_added) {
			if (g_send(g, xl_device_add(j->ov_file_node, j->overlay), 1, j,
				   g_device_added) < 0)
				g_conn_lost(g, &g->err);
			return;
		}
	}
	g_advance(g, P_START);
}

/* P_PREPARE: the volumes this run needs, then act. */
void g_prepare(struct merge_group *g)
{
	int i, any = 0;

	for (i = 0; i < g->n; i++)
		any |= g->jobs[i].ov_block || g->jobs[i].need > 0;
	if (!any || g->req.dry_run) {
		g_advance(g, P_START);
		return;
	}
	ev_set_cb(&g->vol_poll, g_vol_poll_cb);
	g->vol_poll.data = g;
	g->changed = 1;
	g->vol_i = 0;
	g_prepare_next(g);
}

/* ------------------------------------------------------------ undo */

static void g_undo_step_done(struct merge_group *g, struct gjob *j, json_object *ret,
			     const struct lm_error *err)
{
	(void)ret;
	if (err != NULL && g_is_conn_error(err))
		return g_conn_lost(g, err);
	if (err != NULL)
		g_msg(g, "%s: %s", j->name, err->msg);
	g_volumes_undo_next(g);
}

static void g_undo_vol_done(void *arg, const struct lm_error *err)
{
	struct merge_group *g = arg;
	struct gjob *j = &g->jobs[g->vol_i];

	g->vol_op = NULL;
	if (!g->done && !g->abandoned) {
		if (err != NULL)
			g_msg(g, "%s: left %s: %s", j->name, j->overlay, err->msg);
		else
			g_msg(g, "%s: removed volume %s, created by this run", j->name, j->overlay);
		j->ov_created = 0;
		g_volumes_undo_next(g);
	}
	g_unref(g);
}

/* Zeros written on the host: the next undo step. */
static void g_wiped_on_host(struct merge_group *g, struct gjob *j, const struct lm_error *err)
{
	if (err != NULL)
		g_msg(g, "%s: left %s formatted: %s", j->name, j->overlay, err->msg);
	g_volumes_undo_next(g);
}

/* QEMU cannot write zeros over the device (a storage daemon has no HMP):
 * the host does, over the same range. */
static void g_wipe_on_host(struct merge_group *g, struct gjob *j)
{
	g_msg(g, "%s: wiping the %lld bytes this run wrote on %s, on its host", j->name,
	      (long long)j->wipe_len, j->overlay);
	if (g_zero_device(g, j, j->overlay, j->wipe_len, g_wiped_on_host) < 0)
		g_volumes_undo_next(g);
}

static void g_wiped(struct merge_group *g, struct gjob *j, json_object *ret,
		    const struct lm_error *err)
{
	(void)ret;
	if (err != NULL && g_is_conn_error(err))
		return g_conn_lost(g, err);
	if (err != NULL)
		return g_wipe_on_host(g, j);
	g_volumes_undo_next(g);
}

/* The device's written range is known (QEMU's count, capped at what making
 * a qcow2 on it can have written): zero it through HMP, else on the host;
 * then release it. */
static void g_wipe_stats(struct merge_group *g, struct gjob *j, json_object *ret,
			 const struct lm_error *err)
{
	int64_t n = err == NULL ? xl_node_written(ret, j->ov_file_node) : -1;
	struct xl_cmd c;

	if (err != NULL && g_is_conn_error(err))
		return g_conn_lost(g, err);
	j->ov_formatted = 0;
	j->wipe_len = n > 0 && n < VOL_WIPE_MAX ? n : n > 0 ? VOL_WIPE_MAX : VOL_HEAD;
	c = xl_zero_hmp(j->ov_file_node, j->wipe_len);
	if (c.args == NULL || g->flush_by_reopen) {
		json_object_put(c.args);
		return g_wipe_on_host(g, j);
	}
	if (g_send(g, c, 1, j, g_wiped) < 0)
		g_conn_lost(g, &g->err);
	else
		g_msg(g, "%s: wiping the %lld bytes this run wrote on %s", j->name,
		      (long long)j->wipe_len, j->overlay);
}

/* Undo, last disk first, one step at a time: the qcow2 node, the wipe, the
 * device node, the volume. */
static void g_volumes_undo_next(struct merge_group *g)
{
	for (; g->vol_i >= 0; g->vol_i--) {
		struct gjob *j = &g->jobs[g->vol_i];

		if (j->ov_added) {
			j->ov_added = 0;
			if (g_send(g, xl_node_release(j->new_node), 1, j, g_undo_step_done) < 0)
				return g_conn_lost(g, &g->err);
			return;
		}
		if (j->ov_formatted) {
			if (g_send(g, xl_node_stats(), 0, j, g_wipe_stats) < 0)
				return g_conn_lost(g, &g->err);
			return;
		}
		if (j->ov_file_added) {
			j->ov_file_added = 0;
			if (g_send(g, xl_node_release(j->ov_file_node), 1, j, g_undo_step_done) < 0)
				return g_conn_lost(g, &g->err);
			return;
		}
		if (j->ov_created) {
			struct lm_error e;

			g->refs++;
			g->vol_op = merge_volume_run(&g->vols, MERGE_VOLUME_REMOVE, j->overlay, 0,
						     g_undo_vol_done, g, &e);
			if (g->vol_op != NULL)
				return;
			g->refs--;
			g_msg(g, "%s: left %s: %s", j->name, j->overlay, e.msg);
			j->ov_created = 0;
		}
	}
	g->undo = 2;
	g_finish(g);
}

/*
 * Before the end of a run that failed (nothing changed): undo what the
 * preparation did, then the end again. 1 when the end must wait for it.
 */
int g_volumes_hold_finish(struct merge_group *g)
{
	int i, any = 0;

	for (i = 0; i < g->nmarks && !g->abandoned; i++)
		if (g->marks[i].op != NULL) {
			g->marks_wait = 1; /* a layer still grows: its answer ends it */
			return 1;
		}
	if (g->outcome != MERGE_FAILED || g->undo != 0 || g->abandoned)
		return 0;
	for (i = 0; i < g->n; i++)
		any |= g->jobs[i].ov_added || g->jobs[i].ov_formatted ||
		       g->jobs[i].ov_file_added || g->jobs[i].ov_created;
	if (!any)
		return 0;
	g->undo = 1;
	ev_timer_stop(g->loop, &g->vol_poll);
	g->vol_i = g->n - 1;
	g_volumes_undo_next(g);
	return 1;
}

/* Cancel what runs (the group is abandoned or freed). */
void g_volumes_stop(struct merge_group *g)
{
	int i;

	ev_timer_stop(g->loop, &g->vol_poll);
	for (i = 0; i < g->nmarks; i++)
		if (g->marks[i].op != NULL) {
			merge_volume_cancel(g->marks[i].op);
			g->marks[i].op = NULL;
			g->refs--; /* the caller holds the last reference */
		}
	if (g->vol_op != NULL) {
		merge_volume_cancel(g->vol_op);
		g->vol_op = NULL;
		g_unref(g);
	}
}

/* ------------------------------------------------------------ watermarks */

/*
 * While the jobs run, every block-device layer that receives writes (the
 * active layer, which the guest writes; the base of a commit, which the job
 * writes) carries QEMU's one-shot write threshold at its size less the
 * headroom, on its protocol node (offsets on the device: what must fit).
 * Each BLOCK_WRITE_THRESHOLD grows it by a chunk through the volume command
 * (capped at the most the layer can need) and arms the threshold again. No
 * polling. QEMU writes past the device size it opened with once the device
 * is larger, so the size kept here is the one the command grew it to.
 */
static void g_mark_armed(struct merge_group *g, struct gjob *j, json_object *ret,
			 const struct lm_error *err)
{
	(void)ret;
	if (err != NULL && !g_is_conn_error(err))
		g_msg(g, "%s: cannot watch the space of a layer: %s", j->name, err->msg);
}

static void g_mark_arm(struct g_mark *m)
{
	int64_t t = merge_volume_threshold(m->size, m->g->req.headroom, m->max);

	if (t > 0 && !m->g->done)
		(void)g_send(m->g, xl_write_threshold(m->node, t), 0, m->j, g_mark_armed);
}

static void g_mark_grown(void *arg, const struct lm_error *err)
{
	struct g_mark *m = arg;
	struct merge_group *g = m->g;
	int64_t next = merge_volume_next_size(m->size, g->req.chunk, m->max);

	m->op = NULL;
	if (!g->done && !g->abandoned) {
		if (err != NULL) {
			g_msg(g, "%s: cannot grow %s: %s", m->j->name, m->path, err->msg);
		} else {
			g_msg(g, "%s: grew %s from %lld to %lld bytes", m->j->name, m->path,
			      (long long)m->size, (long long)next);
			m->size = next;
			if (!g->marks_wait)
				g_mark_arm(m);
		}
		if (g->marks_wait) {
			g->marks_wait = 0;
			g_finish(g); /* waits again while another layer grows */
		}
	}
	g_unref(g);
}

/* Arm the thresholds of the layers that receive writes (P_RUN). */
void g_marks_arm(struct merge_group *g)
{
	int i, r;

	if (!g_has_volume_cmd(g) || g->req.dry_run)
		return;
	if ((g->marks = calloc((size_t)g->n * 2, sizeof(*g->marks))) == NULL)
		return;
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		int ks[2] = { 0, g->req.verb == MERGE_COMMIT && j->base < b->nlayers ? j->base : -1 };

		for (r = 0; r < 2; r++) {
			const struct merge_layer *l = ks[r] >= 0 ? &b->layers[ks[r]] : NULL;
			const char *node = l == NULL ? NULL : l->file_node ? l->file_node : l->node_name;
			struct g_mark *m = &g->marks[g->nmarks];

			if (l == NULL || !merge_layer_is_block(l) || node == NULL || l->size <= 0)
				continue;
			m->g = g;
			m->j = j;
			m->node = strdup(node);
			m->path = strdup(l->filename);
			m->size = ks[r] == j->base && j->grown > l->size ? j->grown : l->size;
			m->max = g_layer_max(l);
			if (m->node == NULL || m->path == NULL) {
				free(m->node);
				free(m->path);
				continue;
			}
			g->nmarks++;
			g_mark_arm(m);
		}
	}
}

/* An event: a threshold crossed on one of ours grows that layer. */
void g_marks_event(struct merge_group *g, const struct qmp_msg *ev)
{
	struct xl_watch_event we;
	struct lm_error e;
	int i;

	if (g->nmarks == 0)
		return;
	xl_watch_event_decode(ev, &we);
	if (we.kind != XL_WEV_THRESHOLD || we.node == NULL)
		return;
	for (i = 0; i < g->nmarks; i++) {
		struct g_mark *m = &g->marks[i];
		int64_t next = merge_volume_next_size(m->size, g->req.chunk, m->max);

		if (strcmp(m->node, we.node) != 0 || m->op != NULL || next <= m->size)
			continue;
		g->refs++;
		m->op = merge_volume_run(&g->vols, MERGE_VOLUME_EXTEND, m->path, next, g_mark_grown, m,
					 &e);
		if (m->op == NULL) {
			g->refs--;
			g_msg(g, "%s: cannot grow %s: %s", m->j->name, m->path, e.msg);
		}
	}
}

/* Free the marks (the group's last reference: nothing grows any more). */
void g_marks_free(struct merge_group *g)
{
	int i;

	for (i = 0; i < g->nmarks; i++) {
		free(g->marks[i].node);
		free(g->marks[i].path);
	}
	free(g->marks);
	g->marks = NULL;
	g->nmarks = 0;
}

/*
 * merge/recover: reconciling an unfinished journaled operation (see
 * recover.h).
 */
#include "recover.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "query.h"
#include "volume.h"
#include "xlate.h"

struct rec {
	struct qmp_conn *c;
	struct ev_loop *loop;
	struct merge_journal *j;
	const struct merge_recover_opts *o;
	struct host *host, *own_host;
	json_object *entries, *intent;
	struct lm_error err;
};

static void rec_msg(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rec_msg(struct rec *r, const char *fmt, ...)
{
	char line[600];
	va_list ap;

	if (r->o->message == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	r->o->message(line, r->o->arg);
}

static const char *rec_str(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static json_object *rec_arr(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_array))
		return v;
	return NULL;
}

static int rec_has_step(struct rec *r, const char *step)
{
	size_t i;

	for (i = 0; i < json_object_array_length(r->entries); i++) {
		const char *s = rec_str(json_object_array_get_idx(r->entries, i), "step");

		if (s != NULL && strcmp(s, step) == 0)
			return 1;
	}
	return 0;
}

/* ---- waiting on the loop ---------------------------------------------------------- */

struct rec_wait {
	int done;
	json_object *ret;
	struct lm_error err;
};

static void rec_reply_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			 void *arg)
{
	struct rec_wait *w = arg;

	(void)c;
	w->done = 1;
	if (err != NULL)
		w->err = *err;
	else
		w->ret = json_object_get(ret);
}

/* Run cmd (args taken) and wait. 0 with *ret owned (may pass NULL), or -1. */
static int rec_exec(struct rec *r, struct xl_cmd cmd, json_object **ret, struct lm_error *err)
{
	struct rec_wait w = { 0 };
	int rc;

	if (ret != NULL)
		*ret = NULL;
	if (strcmp(cmd.step, "query") != 0 && merge_journal_step(r->j, cmd.step, NULL, err) < 0) {
		json_object_put(cmd.args);
		return -1;
	}
	rc = qmp_conn_execute(r->c, cmd.name, cmd.args, -1, rec_reply_cb, &w, err);
	json_object_put(cmd.args);
	if (rc < 0)
		return -1;
	while (!w.done)
		ev_run(r->loop, EVRUN_ONCE);
	if (w.err.code != LM_OK) {
		*err = w.err;
		return -1;
	}
	if (ret != NULL)
		*ret = w.ret;
	else
		json_object_put(w.ret);
	return 0;
}

struct rec_chains_wait {
	int done;
	struct merge_chains *ch;
	struct lm_error err;
};

static void rec_chains_cb(struct merge_chains *ch, const struct lm_error *err, void *arg)
{
	struct rec_chains_wait *w = arg;

	w->done = 1;
	w->ch = ch;
	if (err != NULL)
		w->err = *err;
}

static struct merge_chains *rec_chains(struct rec *r, struct lm_error *err)
{
	struct rec_chains_wait w = { 0 };

	if (merge_chains_fetch(r->c, rec_chains_cb, &w, err) < 0)
		return NULL;
	while (!w.done)
		ev_run(r->loop, EVRUN_ONCE);
	if (w.ch == NULL)
		*err = w.err;
	return w.ch;
}

/* The operation's job ids that QEMU has, with their status. */
static int rec_jobs(struct rec *r, json_object **jobs, struct lm_error *err)
{
	return rec_exec(r, xl_query_jobs(), jobs, err);
}

static int rec_is_ours(struct rec *r, const char *job_id)
{
	json_object *disks = rec_arr(r->intent, "disks");
	size_t i;

	for (i = 0; disks && i < json_object_array_length(disks); i++) {
		const char *id = rec_str(json_object_array_get_idx(disks, i), "job");

		if (id != NULL && strcmp(id, job_id) == 0)
			return 1;
	}
	return 0;
}

/* Wait until none of the operation's jobs is short of concluded. */
static int rec_wait_jobs_end(struct rec *r, struct lm_error *err)
{
	double deadline = ev_time() + (r->o->timeout > 0 ? r->o->timeout : 120);

	for (;;) {
		json_object *jobs;
		struct xl_job_info ji;
		int i, busy = 0;

		if (rec_jobs(r, &jobs, err) < 0)
			return -1;
		for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++)
			if (rec_is_ours(r, ji.id) && ji.status != XL_JOB_CONCLUDED &&
			    ji.status != XL_JOB_NULL)
				busy++;
		json_object_put(jobs);
		if (busy == 0)
			return 0;
		if (ev_time() > deadline)
			return lm_error_set(err, LM_ERR_TIMEOUT,
					    "%d job%s still running after %.0f s", busy,
					    busy == 1 ? " is" : "s are", r->o->timeout > 0 ? r->o->timeout : 120);
		ev_sleep(0.2); /* jobs end within moments of a cancel or finalize */
	}
}

/* Cancel (before the pivot point) or finalize (after it) what is left. */
/* 1 if one of the operation's jobs waits in pending (err: 0, decided later). */
static int rec_has_pending(struct rec *r)
{
	json_object *jobs;
	struct xl_job_info ji;
	struct lm_error e;
	int i, n = 0;

	if (rec_jobs(r, &jobs, &e) < 0)
		return 0;
	for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++)
		n += rec_is_ours(r, ji.id) && ji.status == XL_JOB_PENDING;
	json_object_put(jobs);
	return n > 0;
}

static int rec_drive_jobs(struct rec *r, int forward, struct lm_error *err)
{
	json_object *jobs;
	struct xl_job_info ji;
	int i;

	if (rec_jobs(r, &jobs, err) < 0)
		return -1;
	for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++) {
		struct lm_error e;

		if (!rec_is_ours(r, ji.id) || ji.status == XL_JOB_CONCLUDED || ji.status == XL_JOB_NULL)
			continue;
		if (forward && ji.status == XL_JOB_PENDING) {
			rec_msg(r, "job %s is pending after the pivot point: finalizing it", ji.id);
			if (rec_exec(r, xl_job_verb(XL_VERB_FINALIZE, ji.id), NULL, &e) < 0)
				rec_msg(r, "%s", e.msg);
		} else {
			rec_msg(r, "job %s is %s before the pivot point: cancelling it", ji.id,
				xl_job_status_name(ji.status));
			if (rec_exec(r, xl_job_verb(XL_VERB_CANCEL, ji.id), NULL, &e) < 0)
				rec_msg(r, "%s", e.msg);
		}
		if (qmp_conn_error(r->c) != NULL) {
			*err = *qmp_conn_error(r->c);
			json_object_put(jobs);
			return -1;
		}
	}
	json_object_put(jobs);
	return rec_wait_jobs_end(r, err);
}

/* Read every concluded job of ours (the operation's, and any other
 * livemerge- leftover) and dismiss it. */
static int rec_dismiss(struct rec *r, struct lm_error *err)
{
	json_object *jobs;
	struct xl_job_info ji;
	int i;

	if (rec_jobs(r, &jobs, err) < 0)
		return -1;
	for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++) {
		struct lm_error e;

		if (ji.status != XL_JOB_CONCLUDED ||
		    (!rec_is_ours(r, ji.id) && strncmp(ji.id, "livemerge-", 10) != 0))
			continue;
		rec_msg(r, "job %s concluded%s%s: dismissing it", ji.id, ji.error ? " with error: " : "",
			ji.error ? ji.error : "");
		if (rec_exec(r, xl_job_verb(XL_VERB_DISMISS, ji.id), NULL, &e) < 0)
			rec_msg(r, "%s", e.msg);
	}
	json_object_put(jobs);
	return qmp_conn_error(r->c) ? (*err = *qmp_conn_error(r->c), -1) : 0;
}

/* The journaled disk d in ch: by name, else by its chain as expected or as
 * before (a storage daemon's disk is named after its active node). */
static const struct merge_disk *rec_find(const struct merge_chains *ch, json_object *d)
{
	const char *name = rec_str(d, "disk");
	const struct merge_disk *md = name ? merge_chains_find(ch, name) : NULL;
	const char *files[4096];
	const char *lists[] = { "expect", "before" };
	size_t i, k;

	for (i = 0; md == NULL && i < 2; i++) {
		json_object *l = rec_arr(d, lists[i]);
		size_t n = l ? json_object_array_length(l) : 0;

		for (k = 0; k < n && k < 4096; k++)
			files[k] = json_object_get_string(json_object_array_get_idx(l, k));
		if (n > 0 && n <= 4096)
			md = merge_chains_find_files(ch, files, (int)n);
	}
	return md;
}

/* 1 if d's chain is exactly the journaled list. */
static int rec_chain_is(const struct merge_disk *d, json_object *list)
{
	int i;

	if (d == NULL || list == NULL || (size_t)d->nlayers != json_object_array_length(list))
		return 0;
	for (i = 0; i < d->nlayers; i++)
		if (strcmp(d->layers[i].filename,
			   json_object_get_string(json_object_array_get_idx(list, (size_t)i))) != 0)
			return 0;
	return 1;
}

static int rec_in_any_chain(const struct merge_chains *ch, const char *file)
{
	int i, k;

	for (i = 0; i < ch->ndisks; i++)
		for (k = 0; k < ch->disks[i].nlayers; k++)
			if (strcmp(ch->disks[i].layers[k].filename, file) == 0)
				return 1;
	return 0;
}

/* The VM's host (recovery waits for it: host_*_wait run the loop). */
static struct host *rec_host(struct rec *r)
{
	struct lm_error e;

	if (r->host == NULL && (r->host = r->own_host = host_new_local(r->loop, &e)) == NULL)
		rec_msg(r, "%s", e.msg);
	return r->host;
}

static int rec_file_exists(struct rec *r, const char *path)
{
	enum host_file_kind kind = HOST_FILE_NONE;
	struct lm_error e;
	char b[1];

	return rec_host(r) != NULL && host_look_wait(r->host, path, b, 0, &kind, &e) == 0 &&
	       kind != HOST_FILE_NONE;
}

static int rec_remove_file(struct rec *r, const char *path)
{
	struct lm_error e;

	if (rec_host(r) == NULL)
		return -1;
	if (host_remove_wait(r->host, path, &e) < 0) {
		rec_msg(r, "%s", e.msg);
		return -1;
	}
	return 0;
}

/* ---- block devices an interrupted snapshot prepared ----------------------------- */

struct rec_vol_wait {
	int done;
	struct lm_error err;
	int failed;
};

static void rec_vol_cb(void *arg, const struct lm_error *err)
{
	struct rec_vol_wait *w = arg;

	w->done = 1;
	if (err != NULL) {
		w->failed = 1;
		w->err = *err;
	}
}

/* Run the volume command to remove path, waiting for it. 0, or -1 (err). */
static int rec_volume_remove(struct rec *r, const char *path, struct lm_error *err)
{
	struct merge_volumes v = { .host = rec_host(r), .cmd = r->o->volume_cmd,
				   .timeout = r->o->volume_timeout, .journal = r->j };
	struct rec_vol_wait w = { 0 };

	if (v.host == NULL || v.cmd == NULL)
		return lm_error_set(err, LM_ERR_USAGE, "no volume command (--volume-cmd) to "
				    "remove it");
	if (merge_volume_run(&v, MERGE_VOLUME_REMOVE, path, 0, rec_vol_cb, &w, err) == NULL)
		return -1;
	while (!w.done)
		ev_run(r->loop, EVRUN_ONCE);
	if (w.failed) {
		*err = w.err;
		return -1;
	}
	return 0;
}

/*
 * The overlay device of disk d that an interrupted snapshot prepared and
 * did not put in any chain: its nodes released, what QEMU wrote on it
 * (if the journal says it was formatted) wiped back to zeros, the volume
 * removed if the run created it.
 */
static void rec_overlay_device(struct rec *r, const struct merge_chains *ch, json_object *d)
{
	const char *name = rec_str(d, "disk"), *ov = rec_str(d, "overlay");
	const char *node = rec_str(d, "overlay-node"), *fnode = rec_str(d, "overlay-file-node");
	json_object *v, *stats = NULL;
	struct lm_error e;
	int64_t n = -1;
	struct xl_cmd c;

	if (node != NULL && merge_chains_has_node(ch, node))
		rec_exec(r, xl_node_release(node), NULL, &e);
	if (fnode != NULL && rec_has_step(r, "format")) {
		if (!merge_chains_has_node(ch, fnode) &&
		    rec_exec(r, xl_device_add(fnode, ov), NULL, &e) < 0)
			rec_msg(r, "%s: cannot open %s to wipe it: %s", name, ov, e.msg);
		if (rec_exec(r, xl_node_stats(), &stats, &e) == 0)
			n = xl_node_written(stats, fnode);
		json_object_put(stats);
		/* not written since opened here: what a qcow2 create writes first */
		c = xl_zero_hmp(fnode, n > 0 ? n : 4 * 65536);
		if (c.args == NULL || rec_exec(r, c, NULL, &e) < 0)
			rec_msg(r, "%s: left %s formatted by the interrupted snapshot: %s", name, ov,
				c.args == NULL ? "no node to write through" : e.msg);
		else
			rec_msg(r, "%s: wiped what the interrupted snapshot wrote on %s", name, ov);
	}
	if (fnode != NULL)
		rec_exec(r, xl_node_release(fnode), NULL, &e); /* gone already is fine */
	if (json_object_object_get_ex(d, "overlay-volume", &v) && json_object_get_boolean(v) &&
	    rec_file_exists(r, ov)) {
		if (rec_volume_remove(r, ov, &e) < 0)
			rec_msg(r, "%s: left %s, created by the interrupted snapshot: %s", name, ov,
				e.msg);
		else
			rec_msg(r, "%s: removed volume %s, created by the interrupted snapshot", name,
				ov);
	}
}

/* ---- durability ------------------------------------------------------------- */

/* Flush one layer to stable storage: HMP where the QEMU has it, else a
 * reopen of the node with its own options (see xlate.h). */
static int rec_flush_layer(struct rec *r, const struct merge_disk *d, int k, struct lm_error *err)
{
	const struct merge_layer *l = &d->layers[k];
	struct xl_cmd cmd = xl_flush_hmp(l->node_name);
	json_object *ret = NULL;
	const char *said;
	int rc;

	if (cmd.args != NULL) {
		rc = rec_exec(r, cmd, &ret, err);
		if (rc == 0) {
			rc = xl_flush_hmp_result(ret, &said);
			if (rc < 0)
				lm_error_set(err, LM_ERR_QMP, "QEMU said: %.400s", said);
			json_object_put(ret);
			return rc;
		}
		if (strcmp(err->qmp_class, "CommandNotFound") != 0)
			return -1;
	}
	if (l->node_name != NULL && l->node_name[0] == '#') {
		/* a storage daemon reopens only nodes named by their user; where QEMU
		 * flushes such a node itself is said in merge/group.c (g_flush_unnamed) */
		rec_msg(r, "%s: %s has no node name of its own, so this QEMU cannot flush it; "
			"relying on QEMU's own flush of it", d->name, l->filename);
		return 0;
	}
	if (l->node_name == NULL || l->file_node == NULL ||
	    (k + 1 < d->nlayers && d->layers[k + 1].node_name == NULL))
		return lm_error_set(err, LM_ERR_STATE, "QEMU does not tell the nodes of %s",
				    l->filename);
	{
		struct xl_node_opts o = {
			.node = l->node_name,
			.driver = l->format,
			.file = l->file_node,
			.backing = k + 1 < d->nlayers ? d->layers[k + 1].node_name : NULL,
			.read_only = l->read_only,
			.cache_direct = l->cache_direct,
			.cache_no_flush = l->cache_no_flush,
			.detect_zeroes = l->detect_zeroes,
		};

		return rec_exec(r, xl_flush_reopen(&o), NULL, err);
	}
}

/* The file, of journaled disk d, that its job wrote into: the top for a
 * stream, the base (the layer right below the last one removed) for a
 * commit. Borrowed from the journal; NULL if it cannot be told. */
static const char *rec_receiving_file(struct rec *r, json_object *d)
{
	json_object *before = rec_arr(d, "before"), *rm = rec_arr(d, "remove");
	const char *last;
	size_t n = before ? json_object_array_length(before) : 0, k;

	if (n == 0)
		return NULL;
	if (strcmp(rec_str(r->intent, "verb"), "stream") == 0)
		return json_object_get_string(json_object_array_get_idx(before, 0));
	if (rm == NULL || json_object_array_length(rm) == 0)
		return NULL;
	last = rec_str(json_object_array_get_idx(rm, json_object_array_length(rm) - 1), "filename");
	for (k = 0; last != NULL && k + 1 < n; k++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(before, k)), last) == 0)
			return json_object_get_string(json_object_array_get_idx(before, k + 1));
	return NULL;
}

/*
 * Flush the journaled disks' live layers to stable storage: with jobs
 * pending (before the finalize), only the layer each job wrote into: an
 * active commit keeps its source drained while pending, and a flush of it
 * would wait forever inside QEMU; after the jobs ended, every writable
 * layer, for what a finalize rewrote.
 */
static int rec_flush_disks(struct rec *r, json_object *disks, int pending, struct lm_error *err)
{
	struct merge_chains *ch = rec_chains(r, err);
	size_t i;
	int k, rc = 0;

	if (ch == NULL)
		return -1;
	for (i = 0; rc == 0 && i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, i);
		const struct merge_disk *md = rec_find(ch, d);
		const char *recv = pending ? rec_receiving_file(r, d) : NULL;

		if (pending && recv == NULL) {
			rc = lm_error_set(err, LM_ERR_STATE, "%s: the journal does not tell which "
					  "layer the job wrote into", rec_str(d, "disk"));
			break;
		}
		for (k = 0; rc == 0 && md != NULL && k < md->nlayers; k++) {
			if (pending ? strcmp(md->layers[k].filename, recv) != 0
				    : md->layers[k].read_only)
				continue;
			if ((rc = rec_flush_layer(r, md, k, err)) < 0)
				lm_error_prefix(err, "%s: cannot flush %s: ", md->name,
						md->layers[k].filename);
		}
	}
	merge_chains_free(ch);
	return rc;
}

/* 1 if the disk's live chain is, on disk, what QEMU says: every qcow2
 * layer's own header names the layer below it. */
static int rec_chain_on_disk(struct rec *r, const struct merge_disk *md, char *why, size_t len)
{
	char w[600];
	int k;

	for (k = 0; k + 1 < md->nlayers; k++) {
		if (merge_image_verify(rec_host(r), md->layers[k].filename, md->layers[k].format,
				       md->layers[k + 1].filename, w, sizeof(w)) < 0) {
			snprintf(why, len, "%s in the live chain: %s", md->layers[k].filename, w);
			return 0;
		}
	}
	return 1;
}

static void rec_qga_cb(struct qga *q, json_object *ret, const struct lm_error *err, void *arg)
{
	(void)q;
	rec_reply_cb(NULL, ret, err, arg);
}

static void rec_thaw(struct rec *r)
{
	const char *target = rec_str(r->intent, "qga");
	struct qga *q;
	struct rec_wait w = { 0 };
	struct lm_error e;

	if (target == NULL)
		return;
	q = r->o->qga_open ? r->o->qga_open(target, r->o->arg) : NULL;
	if (q == NULL) {
		rec_msg(r, "a freeze was journaled but the guest agent %s cannot be reached from "
			   "here: thaw it (guest-fsfreeze-thaw)", target);
		return;
	}
	{
		struct xl_cmd cmd = xl_guest_thaw();

		if (merge_journal_step(r->j, cmd.step, NULL, &e) < 0) {
			rec_msg(r, "%s", e.msg);
			qga_free(q);
			return;
		}
		if (qga_execute(q, cmd.name, cmd.args, rec_qga_cb, &w, &e) < 0) {
			rec_msg(r, "%s", e.msg);
			qga_free(q);
			return;
		}
	}
	while (!w.done)
		ev_run(r->loop, EVRUN_ONCE);
	if (w.err.code != LM_OK)
		rec_msg(r, "thawing the guest failed: %s", w.err.msg);
	else
		rec_msg(r, "guest thawed (%d filesystem%s)", json_object_get_int(w.ret),
			json_object_get_int(w.ret) == 1 ? "" : "s");
	json_object_put(w.ret);
	qga_free(q);
}

/* Check file, one of disk d's journaled layers to remove, on the host: in
 * the chain the journal recorded before the operation, a regular file or
 * block device (no symlink), a qcow2 naming the layer below it as
 * recorded. 0, or -1 with why. */
static int rec_removable(struct rec *r, json_object *d, const char *file, char *why, size_t len)
{
	json_object *before = rec_arr(d, "before");
	size_t n = before ? json_object_array_length(before) : 0, k;

	for (k = 0; k < n; k++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(before, k)), file) == 0)
			break;
	if (k == n) {
		snprintf(why, len, "it is not in the chain the journal recorded before the operation");
		return -1;
	}
	return merge_image_verify(rec_host(r), file, "qcow2",
				  k + 1 < n ? json_object_get_string(
						      json_object_array_get_idx(before, k + 1))
					    : NULL,
				  why, len);
}

/*
 * An unfinished volume step journaled as an operation of its own (by
 * watch: merge/volume.c): a volume grown stays grown, what the chains hold
 * never changed, so recovery only closes it. A create or remove (only
 * library users run those outside an operation) may or may not have
 * happened: the message names the volume.
 */
static enum merge_outcome rec_volume_step(struct rec *r, const char *verb,
					  enum merge_recovered *what, struct lm_error *err)
{
	const char *path = rec_str(r->intent, "path");
	json_object *f = json_object_new_object();
	int rc;

	if (strcmp(verb, "extend") == 0)
		rec_msg(r, "journal %s: an unfinished extension of %s: left as it is (grown or not, "
			   "it holds what it held)", merge_journal_path(r->j), path);
	else
		rec_msg(r, "journal %s: an unfinished volume %s of %s: check it with the volume "
			   "command's own tools", merge_journal_path(r->j), verb, path);
	json_object_object_add(f, "outcome", json_object_new_int(MERGE_DONE));
	json_object_object_add(f, "recovered", json_object_new_string("volume"));
	rc = merge_journal_step(r->j, "end", f, err);
	json_object_put(f);
	*what = MERGE_REC_FINISHED;
	return rc < 0 ? MERGE_UNKNOWN : MERGE_DONE;
}

int merge_journal_unfinished_has(struct merge_journal *j, const char *step)
{
	struct rec r = { 0 };
	struct lm_error e;
	int finished, has;

	if (merge_journal_last(j, &r.entries, &finished, &e) < 0 || r.entries == NULL)
		return 0;
	has = !finished && rec_has_step(&r, step);
	json_object_put(r.entries);
	return has;
}

enum merge_outcome merge_recover(struct qmp_conn *c, struct merge_journal *j,
				 const struct merge_recover_opts *opts,
				 enum merge_recovered *what, struct lm_error *err)
{
	struct merge_recover_opts no_opts = { 0 };
	struct rec r = { .c = c, .loop = qmp_conn_loop(c), .j = j, .o = opts ? opts : &no_opts,
			 .host = opts ? opts->host : NULL };
	struct merge_chains *ch = NULL;
	json_object *disks;
	const char *verb;
	int finished, i, changed = 0, unchanged = 0, bad = 0, forward;
	enum merge_outcome out = MERGE_DONE;

	*what = MERGE_REC_NOTHING;
	if (merge_journal_last(j, &r.entries, &finished, err) < 0)
		return MERGE_FAILED;
	if (r.entries == NULL || finished) {
		json_object_put(r.entries);
		return MERGE_DONE;
	}
	r.intent = json_object_array_get_idx(r.entries, 0);
	verb = rec_str(r.intent, "verb");
	disks = rec_arr(r.intent, "disks");
	if (verb != NULL && disks == NULL && rec_str(r.intent, "path") != NULL &&
	    (strcmp(verb, "extend") == 0 || strcmp(verb, "create") == 0 ||
	     strcmp(verb, "remove") == 0)) {
		out = rec_volume_step(&r, verb, what, err);
		json_object_put(r.entries);
		return out;
	}
	if (verb == NULL || disks == NULL || strcmp(rec_str(r.intent, "step"), "intent") != 0) {
		/* an operation whose intent was lost cannot be reasoned about */
		lm_error_set(err, LM_ERR_STATE, "journal %s: the unfinished operation has no intent",
			     merge_journal_path(j));
		json_object_put(r.entries);
		return MERGE_UNKNOWN;
	}
	rec_msg(&r, "journal %s: an unfinished %s of %zu disk%s: reconciling", merge_journal_path(j),
		verb, json_object_array_length(disks), json_object_array_length(disks) == 1 ? "" : "s");

	if (strcmp(verb, "snapshot") == 0) {
		if (rec_has_step(&r, "freeze"))
			rec_thaw(&r);
	} else {
		forward = rec_has_step(&r, "finalize");
		/* nothing pivots before what the jobs wrote is on stable storage */
		if (forward && rec_has_pending(&r) && rec_flush_disks(&r, disks, 1, err) < 0) {
			out = MERGE_UNKNOWN;
			goto out;
		}
		if (rec_drive_jobs(&r, forward, err) < 0)
			goto conn_failed;
	}
	if (rec_dismiss(&r, err) < 0)
		goto conn_failed;
	{
		json_object *jobs;
		const char *hazard;

		if (rec_jobs(&r, &jobs, err) < 0)
			goto conn_failed;
		hazard = merge_chains_hazard(jobs);
		if (hazard != NULL) {
			lm_error_set(err, LM_ERR_STATE, "job %s (a stream) is concluded and not "
				     "dismissed: QEMU 7.2 crashes listing block nodes then; dismiss it "
				     "first ('livemerge cancel %s')", hazard, hazard);
			json_object_put(jobs);
			goto conn_failed;
		}
		json_object_put(jobs);
	}
	ch = rec_chains(&r, err);
	if (ch == NULL)
		goto conn_failed;
	for (i = 0; (size_t)i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, (size_t)i);
		const char *name = rec_str(d, "disk");
		const struct merge_disk *md = rec_find(ch, d);

		if (rec_chain_is(md, rec_arr(d, "expect"))) {
			changed++;
			rec_msg(&r, "%s: changed as asked", name);
		} else if (rec_chain_is(md, rec_arr(d, "before"))) {
			unchanged++;
			rec_msg(&r, "%s: as before", name);
		} else {
			bad++;
			lm_error_set(err, LM_ERR_STATE,
				     "%s: its chain is neither as before nor as expected: check with "
				     "'livemerge chain %s'", name ? name : "?", name ? name : "");
		}
	}
	if (bad > 0) {
		out = MERGE_UNKNOWN;
		goto out;
	}
	/* what a finalize rewrote is on stable storage before anything goes,
	 * and before the operation is marked finished */
	if (changed > 0 && rec_flush_disks(&r, disks, 0, err) < 0) {
		out = MERGE_UNKNOWN;
		goto out;
	}
	for (i = 0; (size_t)i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, (size_t)i);
		const struct merge_disk *md = rec_find(ch, d);
		json_object *rm = rec_arr(d, "remove"), *v;
		int want_delete = json_object_object_get_ex(r.intent, "delete", &v) &&
				  json_object_get_boolean(v);
		char why[1400], held[1200];
		size_t k;

		if (strcmp(verb, "snapshot") == 0) {
			const char *ov = rec_str(d, "overlay");

			if (rec_chain_is(md, rec_arr(d, "before")) && ov != NULL &&
			    json_object_object_get_ex(d, "overlay-device", &v) &&
			    json_object_get_boolean(v) && !rec_in_any_chain(ch, ov)) {
				rec_overlay_device(&r, ch, d);
				continue;
			}
			if (rec_chain_is(md, rec_arr(d, "before")) && ov != NULL &&
			    json_object_object_get_ex(d, "overlay-created", &v) &&
			    json_object_get_boolean(v) && !rec_in_any_chain(ch, ov) &&
			    rec_file_exists(&r, ov) && rec_remove_file(&r, ov) == 0)
				rec_msg(&r, "%s: removed %s, created by the interrupted snapshot",
					rec_str(d, "disk"), ov);
			continue;
		}
		if (!rec_chain_is(md, rec_arr(d, "expect")))
			continue;
		held[0] = '\0';
		if (want_delete && rm != NULL && json_object_array_length(rm) > 0 &&
		    !rec_chain_on_disk(&r, md, held, sizeof(held)))
			rec_msg(&r, "%s: deleting nothing: %s", rec_str(d, "disk"), held);
		for (k = 0; rm && k < json_object_array_length(rm); k++) {
			json_object *l = json_object_array_get_idx(rm, k);
			const char *node = rec_str(l, "node"), *fnode = rec_str(l, "file-node");
			const char *file = rec_str(l, "filename");
			struct lm_error e;

			/* nodes QEMU opened itself are gone; errors here are expected */
			if (node != NULL && node[0] != '#' && merge_chains_has_node(ch, node))
				rec_exec(&r, xl_node_release(node), NULL, &e);
			if (fnode != NULL && fnode[0] != '#' && merge_chains_has_node(ch, fnode))
				rec_exec(&r, xl_node_release(fnode), NULL, &e);
			if (!want_delete || file == NULL || rec_in_any_chain(ch, file))
				continue;
			if (held[0] != '\0')
				snprintf(why, sizeof(why), "the live chain is not as expected on disk: %s",
					 held);
			if (held[0] != '\0' || rec_removable(&r, d, file, why, sizeof(why)) < 0) {
				rec_msg(&r, "%s: left %s: %s", rec_str(d, "disk"), file, why);
				if (r.o->left != NULL)
					r.o->left(rec_str(d, "disk"), file, why, r.o->arg);
			} else if (rec_remove_file(&r, file) == 0) {
				rec_msg(&r, "%s: deleted %s", rec_str(d, "disk"), file);
			}
		}
	}
	{
		json_object *f = json_object_new_object();

		json_object_object_add(f, "outcome", json_object_new_int(MERGE_DONE));
		json_object_object_add(f, "recovered",
				       json_object_new_string(changed && unchanged ? "mixed"
							      : changed	       ? "finished"
										: "rolled-back"));
		json_object_object_add(f, "verb", json_object_new_string("recover"));
		json_object_object_add(f, "target", json_object_new_string(qmp_conn_desc(c)));
		json_object_object_add(f, "chains", merge_chains_state_json(ch));
		if (merge_journal_step(j, "end", f, err) < 0)
			out = MERGE_UNKNOWN;
		json_object_put(f);
	}
	*what = changed && unchanged ? MERGE_REC_MIXED
		: changed	     ? MERGE_REC_FINISHED
				     : MERGE_REC_ROLLED_BACK;
	rec_msg(&r, "recovered: %s", changed && unchanged ? "some disks changed, the others are as before"
				     : changed		    ? "the operation is finished"
							    : "the operation is rolled back");
	goto out;
conn_failed:
	out = err->code == LM_ERR_STATE || err->code == LM_ERR_TIMEOUT ? MERGE_UNKNOWN
								       : MERGE_CONN_FAILED;
out:
	merge_chains_free(ch);
	json_object_put(r.entries);
	host_free(r.own_host);
	return out;
}

/*
 * merge/volume: volume steps through the engine's command or function, each
 * journaled before it runs, and the size arithmetic (see volume.h).
 */
#include "volume.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/lm-escape.h"
#include "../host/host.h"
#include "journal.h"

struct merge_volume_op {
	const struct merge_volumes *v;
	enum merge_volume_verb verb;
	char *path;
	int64_t bytes;
	int own_op;             /* journaled as an operation of its own: end it */
	struct host_op *run;    /* the command, while it runs */
	void *handle;           /* the function's step, while it runs */
	merge_volume_cb *cb;
	void *arg;
};

static int64_t vol_div_up(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

static int64_t vol_round_up(int64_t a, int64_t b)
{
	return vol_div_up(a, b) * b;
}

/* "CMD extend PATH BYTES", for messages (escaped: the path is the caller's,
 * but it may have come from QEMU). */
static void vol_describe(const struct merge_volume_op *op, char *buf, size_t len)
{
	char raw[600];

	if (op->verb == MERGE_VOLUME_REMOVE)
		snprintf(raw, sizeof(raw), "%s remove %s", op->v->fn ? "volume function" : op->v->cmd,
			 op->path);
	else
		snprintf(raw, sizeof(raw), "%s %s %s %" PRId64,
			 op->v->fn ? "volume function" : op->v->cmd, merge_volume_verb_name(op->verb),
			 op->path, op->bytes);
	lm_escape(buf, len, raw, strlen(raw), 0);
}

static json_object *vol_entry(const struct merge_volume_op *op)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "path", json_object_new_string(op->path));
	if (op->verb != MERGE_VOLUME_REMOVE)
		json_object_object_add(o, "bytes", json_object_new_int64(op->bytes));
	return o;
}

/* The entry that must be on disk before the step runs. */
static int vol_journal_before(struct merge_volume_op *op, struct lm_error *err)
{
	struct merge_journal *j = op->v->journal;
	json_object *o;
	char step[32];
	int r;

	if (j == NULL)
		return 0;
	o = vol_entry(op);
	if (merge_journal_in_op(j)) {
		snprintf(step, sizeof(step), "volume-%s", merge_volume_verb_name(op->verb));
		r = merge_journal_step(j, step, o, err);
	} else {
		json_object_object_add(o, "verb",
				       json_object_new_string(merge_volume_verb_name(op->verb)));
		r = merge_journal_begin(j, o, err);
		op->own_op = r == 0;
	}
	json_object_put(o);
	return r;
}

static void vol_free(struct merge_volume_op *op)
{
	free(op->path);
	free(op);
}

/* The step is over (e NULL: done): end its own journal operation, tell the
 * caller, free. */
static void vol_finish(struct merge_volume_op *op, const struct lm_error *e)
{
	struct lm_error jerr;

	op->run = NULL;
	op->handle = NULL;
	if (op->own_op) {
		json_object *f = json_object_new_object();

		json_object_object_add(f, "outcome", json_object_new_int(e == NULL ? 0 : 1));
		if (merge_journal_step(op->v->journal, "end", f, &jerr) < 0 && e == NULL)
			e = &jerr;
		json_object_put(f);
	}
	op->cb(op->arg, e);
	vol_free(op);
}

static void vol_ran(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct merge_volume_op *op = arg;
	struct lm_error e;
	char what[700], last[400];

	if (err == NULL && r->status == 0) {
		vol_finish(op, NULL);
		return;
	}
	vol_describe(op, what, sizeof(what));
	if (err != NULL) {
		e = *err;
		if (err->code == LM_ERR_TIMEOUT)
			lm_error_set(&e, LM_ERR_TIMEOUT, "volume command '%s' did not end within %g s",
				     what, op->v->timeout > 0 ? op->v->timeout : 60.0);
		else
			lm_error_prefix(&e, "volume command '%s': ", what);
	} else {
		lm_escape(last, sizeof(last), r->err_last, strlen(r->err_last), 0);
		if (r->status < 0)
			lm_error_set(&e, LM_ERR_FAILED, "volume command '%s' was killed%s%s", what,
				     last[0] ? ": " : "", last);
		else
			lm_error_set(&e, LM_ERR_FAILED, "volume command '%s' refused (exit %d)%s%s",
				     what, r->status, last[0] ? ": " : "", last);
	}
	vol_finish(op, &e);
}

static void vol_fn_done(void *arg, const struct lm_error *err)
{
	struct merge_volume_op *op = arg;
	struct lm_error e;
	char what[700];

	if (err == NULL) {
		vol_finish(op, NULL);
		return;
	}
	e = *err;
	vol_describe(op, what, sizeof(what));
	lm_error_prefix(&e, "%s: ", what);
	vol_finish(op, &e);
}

const char *merge_volume_verb_name(enum merge_volume_verb verb)
{
	switch (verb) {
	case MERGE_VOLUME_CREATE:
		return "create";
	case MERGE_VOLUME_EXTEND:
		return "extend";
	case MERGE_VOLUME_REMOVE:
		return "remove";
	}
	return "?";
}

struct merge_volume_op *merge_volume_run(const struct merge_volumes *v,
					 enum merge_volume_verb verb, const char *path,
					 int64_t bytes, merge_volume_cb *cb, void *arg,
					 struct lm_error *err)
{
	struct merge_volume_op *op;
	char num[24];
	const char *argv[5];

	if (path == NULL || path[0] == '\0' || (verb != MERGE_VOLUME_REMOVE && bytes <= 0) ||
	    (v->fn == NULL && (v->cmd == NULL || v->cmd[0] == '\0' || v->host == NULL))) {
		lm_error_set(err, LM_ERR_USAGE, "volume %s: no %s", merge_volume_verb_name(verb),
			     path == NULL || path[0] == '\0' ? "path"
			     : verb != MERGE_VOLUME_REMOVE && bytes <= 0 ? "size"
									: "volume command");
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (op == NULL || (op->path = strdup(path)) == NULL) {
		free(op);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	op->v = v;
	op->verb = verb;
	op->bytes = verb == MERGE_VOLUME_REMOVE ? 0 : bytes;
	op->cb = cb;
	op->arg = arg;
	if (vol_journal_before(op, err) < 0) {
		vol_free(op);
		return NULL;
	}
	if (v->fn != NULL) {
		op->handle = v->fn->start(v->fn->arg, verb, op->path, op->bytes, vol_fn_done, op, err);
		if (op->handle != NULL)
			return op;
	} else {
		snprintf(num, sizeof(num), "%" PRId64, op->bytes);
		argv[0] = v->cmd;
		argv[1] = merge_volume_verb_name(verb);
		argv[2] = op->path;
		argv[3] = verb == MERGE_VOLUME_REMOVE ? NULL : num;
		argv[4] = NULL;
		op->run = host_run(v->host, argv, v->timeout > 0 ? v->timeout : 60.0, vol_ran, op);
		if (op->run != NULL)
			return op;
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	/* nothing ran: the operation of its own ends here */
	if (op->own_op) {
		json_object *f = json_object_new_object();
		struct lm_error jerr;

		json_object_object_add(f, "outcome", json_object_new_int(1));
		merge_journal_step(v->journal, "end", f, &jerr);
		json_object_put(f);
	}
	vol_free(op);
	return NULL;
}

void merge_volume_cancel(struct merge_volume_op *op)
{
	if (op == NULL)
		return;
	if (op->run != NULL)
		host_op_cancel(op->run);
	if (op->handle != NULL && op->v->fn->cancel != NULL)
		op->v->fn->cancel(op->v->fn->arg, op->handle);
	vol_free(op);
}

/* QEMU's qcow2_refcount_metadata_size (block/qcow2-refcount.c), without the
 * generous increase: the refcount blocks and table clusters that count
 * clusters host clusters and themselves, found as a fixed point. */
static int64_t vol_refcount_metadata(int64_t clusters, int64_t cluster_size, int refcount_order)
{
	int64_t per_table_cluster = cluster_size / 8;
	int64_t per_block = cluster_size * 8 / (1 << refcount_order);
	int64_t table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = vol_div_up(clusters + table + blocks, per_block);
		table = vol_div_up(blocks, per_table_cluster);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cluster_size;
}

int64_t merge_qcow2_max_size(int64_t virtual_size, int64_t cluster_size)
{
	int64_t meta, data, nl2e, nl1e;

	if (virtual_size < 0 || cluster_size < 512 || cluster_size > (2 << 20) ||
	    (cluster_size & (cluster_size - 1)) != 0 || virtual_size > ((int64_t)1 << 55))
		return -1;
	/* as qcow2_calc_prealloc_size (block/qcow2.c) */
	data = vol_round_up(virtual_size, cluster_size);
	meta = cluster_size; /* the header */
	nl2e = vol_round_up(data / cluster_size, cluster_size / 8);
	meta += nl2e * 8;
	nl1e = vol_round_up(nl2e * 8 / cluster_size, cluster_size / 8);
	meta += nl1e * 8;
	meta += vol_refcount_metadata((meta + data) / cluster_size, cluster_size, 4);
	return meta + data;
}

int64_t merge_volume_next_size(int64_t size, int64_t chunk, int64_t max)
{
	int64_t next = size > INT64_MAX - chunk ? INT64_MAX : size + chunk;

	if (max > 0 && next > max)
		next = max;
	return next < size ? size : next;
}

int64_t merge_volume_threshold(int64_t size, int64_t headroom, int64_t max)
{
	if (max > 0 && size >= max)
		return 0;
	return size - headroom >= 1 ? size - headroom : 1;
}

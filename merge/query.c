/*
 * merge/query: reading disks and chains from a live monitor.
 */
#include "query.h"

#include "xlate.h"

#include <stdlib.h>
#include <string.h>

enum { Q_BLOCK, Q_NODES, Q_GRAPH, Q_EXPORTS, Q_STATS, Q_COUNT };

struct chains_fetch {
	merge_chains_cb cb;
	void *arg;
	int outstanding;
	json_object *ret[Q_COUNT];
	struct lm_error err;
	int failed;
};

static void fetch_done(struct chains_fetch *f)
{
	struct merge_chains *ch = NULL;
	int i;

	if (!f->failed &&
	    merge_chains_decode(f->ret[Q_BLOCK], f->ret[Q_NODES], f->ret[Q_GRAPH], &ch, &f->err) < 0)
		f->failed = 1;
	if (!f->failed && merge_chains_name_exports(ch, f->ret[Q_EXPORTS]) < 0) {
		merge_chains_free(ch);
		lm_error_set(&f->err, LM_ERR_NOMEM, "out of memory");
		f->failed = 1;
	}
	if (!f->failed && f->ret[Q_STATS] != NULL &&
	    merge_chains_add_stats(ch, f->ret[Q_STATS], &f->err) < 0) {
		merge_chains_free(ch);
		f->failed = 1;
	}
	f->cb(f->failed ? NULL : ch, f->failed ? &f->err : NULL, f->arg);
	for (i = 0; i < Q_COUNT; i++)
		json_object_put(f->ret[i]);
	free(f);
}

static void fetch_reply(struct chains_fetch *f, int which, json_object *ret,
			const struct lm_error *err)
{
	if (err != NULL) {
		/* the graph is a debugging command that a QEMU may lack; exports
		 * only a QEMU that serves them; without the statistics only the
		 * layers' allocation is unknown */
		int optional = (which == Q_GRAPH || which == Q_EXPORTS || which == Q_STATS) &&
			       err->code == LM_ERR_QMP;

		if (!optional && !f->failed) {
			f->failed = 1;
			f->err = *err;
		}
	} else {
		f->ret[which] = json_object_get(ret);
	}
	if (--f->outstanding == 0)
		fetch_done(f);
}

static void fetch_block_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	(void)c;
	fetch_reply(arg, Q_BLOCK, ret, err);
}

static void fetch_nodes_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	(void)c;
	fetch_reply(arg, Q_NODES, ret, err);
}

static void fetch_graph_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	(void)c;
	fetch_reply(arg, Q_GRAPH, ret, err);
}

static void fetch_exports_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			     void *arg)
{
	(void)c;
	fetch_reply(arg, Q_EXPORTS, ret, err);
}

static void fetch_stats_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	(void)c;
	fetch_reply(arg, Q_STATS, ret, err);
}

/* Send one query of f (after one is in flight, failures go through f). */
static void fetch_send(struct chains_fetch *f, struct qmp_conn *c, const char *name,
		       json_object *args, qmp_reply_cb cb)
{
	if (!f->failed && qmp_conn_execute(c, name, args, -1, cb, f, &f->err) == 0)
		f->outstanding++;
	else
		f->failed = 1;
}

static int fetch_start(struct qmp_conn *c, int with_stats, merge_chains_cb cb, void *arg,
		       struct lm_error *err)
{
	struct chains_fetch *f = calloc(1, sizeof(*f));
	json_object *flat, *nodes;

	if (f == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	f->cb = cb;
	f->arg = arg;
	if (qmp_conn_execute(c, "query-block", NULL, -1, fetch_block_cb, f, err) < 0) {
		free(f);
		return -1;
	}
	f->outstanding = 1;
	/* once one is in flight, the callbacks own f: later failures go through them */
	flat = json_object_new_object();
	json_object_object_add(flat, "flat", json_object_new_boolean(1));
	fetch_send(f, c, "query-named-block-nodes", flat, fetch_nodes_cb);
	json_object_put(flat);
	fetch_send(f, c, "x-debug-query-block-graph", NULL, fetch_graph_cb);
	fetch_send(f, c, "query-block-exports", NULL, fetch_exports_cb);
	if (with_stats) {
		nodes = json_object_new_object();
		json_object_object_add(nodes, "query-nodes", json_object_new_boolean(1));
		fetch_send(f, c, "query-blockstats", nodes, fetch_stats_cb);
		json_object_put(nodes);
	}
	return 0;
}

int merge_chains_fetch(struct qmp_conn *c, merge_chains_cb cb, void *arg, struct lm_error *err)
{
	return fetch_start(c, 0, cb, arg, err);
}

int merge_chains_fetch_usage(struct qmp_conn *c, merge_chains_cb cb, void *arg,
			     struct lm_error *err)
{
	return fetch_start(c, 1, cb, arg, err);
}

const char *merge_chains_hazard(json_object *jobs)
{
	struct xl_job_info ji;
	int i;

	for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++)
		if (ji.status == XL_JOB_CONCLUDED && ji.type != NULL && strcmp(ji.type, "stream") == 0)
			return ji.id;
	return NULL;
}

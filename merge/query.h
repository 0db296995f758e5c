/*
 * merge/query: reading disks and chains from a live monitor.
 */
#ifndef MERGE_QUERY_H
#define MERGE_QUERY_H

#include "../qmp/conn.h"
#include "chain.h"

/*
 * On success ch is handed over (the callback owns it; free with
 * merge_chains_free) and err is NULL; on failure ch is NULL.
 */
typedef void (*merge_chains_cb)(struct merge_chains *ch, const struct lm_error *err, void *arg);

/*
 * Ask c for its block devices, named nodes and (where QEMU has it) its
 * block graph, all in flight at once, and decode them. cb runs exactly once
 * unless this returns -1 (err filled).
 */
int merge_chains_fetch(struct qmp_conn *c, merge_chains_cb cb, void *arg, struct lm_error *err);

/*
 * As merge_chains_fetch, and also query-blockstats over every node, so each
 * layer's allocated is filled (merge_chains_add_stats); a QEMU that refuses
 * the statistics leaves it at -1.
 */
int merge_chains_fetch_usage(struct qmp_conn *c, merge_chains_cb cb, void *arg,
			     struct lm_error *err);

/*
 * QEMU 7.2 crashes answering query-named-block-nodes while a cancelled
 * block-stream job is concluded and not dismissed. Given query-jobs'
 * return value, the id of such a job (borrowed), or NULL when reading the
 * chains is safe. Callers dismiss their own first and refuse otherwise.
 */
const char *merge_chains_hazard(json_object *jobs);

#endif

/*
 * merge/chain: the model of a VM's disks and their backing chains, and its
 * decoder from what QEMU reports.
 *
 * A disk is what a guest device (or a qemu-storage-daemon export) writes
 * to; its chain runs from the active layer (index 0) down to the base.
 * The decoder is pure (JSON in, model out) so it can be tested and fuzzed
 * without a QEMU; merge/query.c fetches its inputs from a live monitor.
 */
#ifndef MERGE_CHAIN_H
#define MERGE_CHAIN_H

#include <json-c/json.h>
#include <stdint.h>

#include "../common/lm-error.h"

struct merge_layer {
	char *node_name;        /* QEMU's node name; NULL if it could not be told */
	char *file_node;        /* its protocol child's node name, NULL if unknown */
	char *filename;         /* as QEMU opened it */
	char *format;           /* qcow2, raw, ... */
	int64_t virtual_size;
	char *backing_filename; /* as written in the image header; NULL on the base */
	int read_only;
	/* its open options as QEMU reports them, for a reopen that keeps them */
	int cache_direct, cache_no_flush;
	char *detect_zeroes; /* "off", "on", "unmap"; NULL if not reported */
	/*
	 * What holds the layer: its protocol node (the file child of a format
	 * node, or the layer itself when it has no format node above it).
	 * protocol is that node's driver ("file", "host_device", ...; NULL if
	 * QEMU does not tell which node it is); size its length as QEMU knows
	 * it (-1 unknown): a file's length, grown by QEMU's own writes, or a
	 * device's size when QEMU opened it (QEMU 7.2 and 10.0 do not notice a
	 * device grown underneath). allocated: the offset just past the highest
	 * byte QEMU has written to that node since it opened it (query-blockstats'
	 * wr_highest_offset; 0 if nothing yet), -1 when not asked for.
	 */
	char *protocol;
	int64_t size;
	int64_t allocated;
};

/*
 * A filter node on a disk's chain: a running job's own (mirror_top above
 * an active commit's top, commit_top above an intermediate commit's top,
 * copy-on-read above a stream's top) or one the VM was started with
 * (throttle, preallocate, ...). It holds no data of its own, so it is not
 * a layer: the chain passes through it.
 */
struct merge_filter {
	char *node_name;
	char *driver;  /* mirror_top, commit_top, copy-on-read, throttle, ... */
	int above;     /* the index of the layer it sits on */
};

struct merge_disk {
	char *name;     /* how livemerge names it: qdev id, else backend name, else top node */
	char *device;   /* block-backend name, "" when anonymous */
	char *qdev;     /* qdev path, NULL when no device (storage daemon) */
	char *qdev_id;  /* the id part of a /machine/peripheral/ID/... path, or NULL */
	int nlayers;
	struct merge_layer *layers; /* [0] active ... [nlayers-1] base */
	int nfilters;
	struct merge_filter *filters; /* top down */
};

struct merge_chains {
	int ndisks;
	struct merge_disk *disks;
	int nnodes;
	char **nodes; /* every named node QEMU has open, in or out of a chain */
};

/* 1 if drv is a filter driver (no data of its own, one child it passes
 * through), as QEMU names them. */
int merge_driver_is_filter(const char *drv);
/* 1 if drv is a filter that a block job puts on a chain (mirror_top,
 * commit_top, copy-on-read, copy-before-write ...), not one a VM is
 * started with (throttle, preallocate, compress). */
int merge_driver_is_job_filter(const char *drv);

/* 1 if QEMU has a node of that name open. */
int merge_chains_has_node(const struct merge_chains *ch, const char *node);

/*
 * Build the model from the return values of query-block (array),
 * query-named-block-nodes with flat=true (array) and, where the QEMU has it,
 * x-debug-query-block-graph (object; NULL if absent). All borrowed.
 * Returns 0 and an owned *out, or -1 with err filled (PROTO for input that
 * does not have the expected shape).
 */
int merge_chains_decode(json_object *query_block, json_object *named_nodes, json_object *graph,
			struct merge_chains **out, struct lm_error *err);

void merge_chains_free(struct merge_chains *ch);

/*
 * Name the disks of a storage daemon after their exports: a disk with no
 * device whose active node an export serves takes the export's id (stable
 * across snapshots and commits, unlike the active node's name). Anonymous
 * backends that no export serves are a running job's own (a commit's
 * backend on its base, say), not disks: they are dropped. exports is
 * query-block-exports' return value (borrowed; NULL: leave all as they
 * are). 0 or -1 on ENOMEM.
 */
int merge_chains_name_exports(struct merge_chains *ch, json_object *exports);

/*
 * Fill each layer's allocated from query-blockstats' return value with
 * query-nodes=true (borrowed): the stats of the layer's node name, those of
 * its protocol child ("parent" in QEMU's words) when it has one. Layers
 * without a node name, or whose node the stats do not list, stay at -1.
 * 0, or -1 with err filled (PROTO) when stats is not an array.
 */
int merge_chains_add_stats(struct merge_chains *ch, json_object *stats, struct lm_error *err);

/* The disk named by the user: qdev id, qdev path, block-backend name or
 * the node name of its active layer. Borrowed; NULL if none matches. */
struct merge_disk *merge_chains_find(const struct merge_chains *ch, const char *name);

/* The disk whose chain is exactly files[0..n) (active layer first), for a
 * disk whose name followed its active node (storage daemon) and changed
 * with it. Borrowed; NULL if none. */
struct merge_disk *merge_chains_find_files(const struct merge_chains *ch, const char *const *files,
					   int n);

/* The layer of disk d named by node name or filename; its index or -1. */
int merge_disk_find_layer(const struct merge_disk *d, const char *layer);

/* "block" for a layer on a block device (host_device), "file" for one in a
 * file, else the protocol driver's name (nbd, ...); NULL if unknown. Borrowed. */
const char *merge_layer_type(const struct merge_layer *l);
/* 1 if l is on a block device (merge_layer_type "block"), else 0. */
int merge_layer_is_block(const struct merge_layer *l);

/* {"disk":.."device":..,"qdev":..,"node-name":..,"chain":[{...},..]}; owned.
 * Each layer: node-name, filename, format, virtual-size, backing-filename,
 * and where known type ("file" for a file, "block" for a host_device,
 * else the protocol driver's name), size and allocated. A disk with filter
 * nodes on its chain also has "filters":[{"node-name","driver","above"}]
 * ("above": the node name of the layer the filter sits on). */
json_object *merge_disk_to_json(const struct merge_disk *d);

/* Every disk of ch as merge_disk_to_json gives it, without "allocated": the
 * chain state the journal records after an operation. Owned array. */
json_object *merge_chains_state_json(const struct merge_chains *ch);

#endif

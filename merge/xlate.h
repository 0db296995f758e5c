/*
 * merge/xlate: the one place where QMP command and event names appear.
 *
 * The merge engine speaks of disks, layers and jobs; these functions turn
 * its requests into QMP commands (name + arguments) and QEMU's job events
 * and reports back into its terms. When QEMU renames or deprecates
 * something (block-job-* in 10.1), this file changes and nothing else.
 */
#ifndef MERGE_XLATE_H
#define MERGE_XLATE_H

#include <json-c/json.h>
#include <stdint.h>

#include "../qmp/proto.h"

/* Job states as QEMU's job state machine has them. */
enum xl_job_status {
	XL_JOB_UNKNOWN = 0,
	XL_JOB_UNDEFINED,
	XL_JOB_CREATED,
	XL_JOB_RUNNING,
	XL_JOB_PAUSED,
	XL_JOB_READY,
	XL_JOB_STANDBY,
	XL_JOB_WAITING,
	XL_JOB_PENDING,
	XL_JOB_ABORTING,
	XL_JOB_CONCLUDED,
	XL_JOB_NULL,
};

enum xl_job_verb { XL_VERB_COMPLETE, XL_VERB_FINALIZE, XL_VERB_DISMISS, XL_VERB_CANCEL, XL_VERB_RESUME };

/* A command to send: name is static, args owned (NULL for none); step is
 * the engine's name for what it does, as the journal records it. */
struct xl_cmd {
	const char *name;
	json_object *args;
	const char *step;
};

/* One transaction that puts an overlay on top of each node; all or none.
 * nodes/files/new_nodes are arrays of n. format NULL: qcow2. */
struct xl_cmd xl_snapshot_transaction(int n, const char *const *nodes, const char *const *files,
				      const char *const *new_nodes, const char *format);

/*
 * A new overlay on a block device, through QMP only (no program on the
 * host): xl_device_add opens the device as a host_device node;
 * xl_qcow2_create formats it (a job: wait for it to conclude, then dismiss
 * it) as a qcow2 of size bytes whose header names backing (of
 * backing_format); xl_qcow2_add opens that qcow2 as node over file_node
 * with no backing opened; xl_snapshot_transaction's nodes whose
 * new_nodes[i] is such a node and files[i] NULL put it on top
 * (blockdev-snapshot) in the same transaction as the others.
 */
struct xl_cmd xl_device_add(const char *node, const char *path);
struct xl_cmd xl_qcow2_create(const char *job_id, const char *file_node, int64_t size,
			      const char *backing, const char *backing_format);
struct xl_cmd xl_qcow2_add(const char *node, const char *file_node);
/* Write zeros over [0, len) of node (HMP qemu-io: qemu-system only); args
 * NULL when the node name is unfit for an HMP command line. */
struct xl_cmd xl_zero_hmp(const char *node, int64_t len);
/* Every node's I/O statistics (query-blockstats of the nodes). */
struct xl_cmd xl_node_stats(void);
/* The highest offset written to node since it was opened (-1: not found). */
int64_t xl_node_written(json_object *stats, const char *node);

/* Commit top_node down into base_node on the disk whose active node is
 * root_node; held before finalize and dismiss. speed 0: unlimited. */
struct xl_cmd xl_commit(const char *job_id, const char *root_node, const char *top_node,
			const char *base_node, int64_t speed);

/* Copy everything above base_node (NULL: the whole chain) into root_node. */
struct xl_cmd xl_stream(const char *job_id, const char *root_node, const char *base_node,
			int64_t speed);

/* Who the VM is: its UUID (xl_vm_uuid_of: the string, NULL if the answer
 * has none) and its name (xl_vm_name_of: NULL when the VM has none). The
 * storage daemon knows neither command (CommandNotFound). */
struct xl_cmd xl_vm_uuid(void);
struct xl_cmd xl_vm_name(void);
const char *xl_vm_uuid_of(json_object *ret);
const char *xl_vm_name_of(json_object *ret);

/* Every node of the VM, flat; xl_node_written_file: the image file or
 * device a node of that answer opened read-write (a file or host_device
 * node), or NULL. QEMU's image locks let one process at a time write an
 * image: two monitors whose VMs write one image reach one process. */
struct xl_cmd xl_nodes(void);
const char *xl_node_written_file(json_object *node);

/* Drop a node the monitor added (-blockdev) once nothing uses it. */
struct xl_cmd xl_node_release(const char *node);

/*
 * Flush one node to stable storage: its cached metadata (a qcow2's L2 and
 * refcount tables) is written and its file synced, so what a job copied
 * into it survives QEMU dying. Two means, by what the QEMU offers:
 *  - xl_flush_hmp: qemu-system's HMP "qemu-io NODE flush" flushes that node
 *    alone and changes nothing; the guest runs on. args NULL (the caller
 *    falls back) when the node name is unfit for an HMP command line.
 *  - xl_flush_reopen: qemu-storage-daemon has no HMP; a blockdev-reopen of
 *    the node with its own options flushes it before anything else (QEMU's
 *    bdrv_reopen_prepare). Options QEMU does not report (discard, a qcow2's
 *    cache sizes) return to their defaults.
 */
struct xl_node_opts {
	const char *node, *driver;
	const char *file;    /* the protocol child's node name */
	const char *backing; /* the backing child's node name, NULL: none */
	int read_only, cache_direct, cache_no_flush;
	const char *detect_zeroes; /* NULL: QEMU's default */
};
struct xl_cmd xl_flush_hmp(const char *node);
struct xl_cmd xl_flush_reopen(const struct xl_node_opts *o);

/* What an HMP flush answered: 0 when it printed nothing (done), else -1 and
 * *said is its text (borrowed from ret). */
int xl_flush_hmp_result(json_object *ret, const char **said);

/*
 * Whether a file exists on QEMU's host, told by QEMU itself (for a host that
 * offers livemerge no file access): a read-only, unlocked file node at path,
 * released again with xl_node_release(node) when it opened. xl_probe_absent:
 * 1 if QEMU's refusal says the path does not exist; anything else refused
 * means "cannot tell".
 */
struct xl_cmd xl_probe_file(const char *node, const char *path);
int xl_probe_absent(const struct lm_error *err);

/* Guest agent: freeze or thaw every filesystem, or ask which it is. */
struct xl_cmd xl_guest_freeze(void);
struct xl_cmd xl_guest_thaw(void);
struct xl_cmd xl_guest_freeze_status(void);

struct xl_cmd xl_job_verb(enum xl_job_verb verb, const char *job_id);
struct xl_cmd xl_job_set_speed(const char *job_id, int64_t speed);
struct xl_cmd xl_query_jobs(void);

enum xl_job_status xl_job_status_parse(const char *s);
const char *xl_job_status_name(enum xl_job_status st);

/* What a job event says, in the engine's terms. */
struct xl_job_event {
	enum {
		XL_EV_NONE,      /* not a job event */
		XL_EV_STATUS,    /* the job changed state: status */
		XL_EV_READY,     /* an active commit can pivot */
		XL_EV_COMPLETED, /* finished; error set if it failed; offset/len */
		XL_EV_CANCELLED, /* cancelled; offset/len */
		XL_EV_ERROR,     /* an I/O error paused or hit the job: operation, action */
	} kind;
	const char *job_id;
	enum xl_job_status status;
	const char *error;
	const char *operation, *action;
	int64_t offset, len;
};

/* Decode ev; borrowed strings live as long as ev. */
void xl_job_event_decode(const struct qmp_msg *ev, struct xl_job_event *out);

/* One entry of a query-jobs reply. */
struct xl_job_info {
	const char *id, *type, *error;
	enum xl_job_status status;
	int64_t offset, len;
};

/* The i-th entry of a query-jobs return; -1 when i is past the end or the
 * entry is malformed. */
int xl_query_jobs_entry(json_object *ret, int i, struct xl_job_info *out);

/*
 * Keeping block volumes ahead of the guest (merge/watch.c).
 */

/* Arm node's one-shot write threshold at bytes (0 disarms): an event when a
 * write to node ends past it. */
struct xl_cmd xl_write_threshold(const char *node, int64_t bytes);
/* Resume a VM that stopped (on an I/O error). */
struct xl_cmd xl_vm_continue(void);
/* The VM's run state, and the disks as devices see them (query-block). */
struct xl_cmd xl_vm_status(void);
struct xl_cmd xl_query_devices(void);
/* 1 if the run state (xl_vm_status's return) is "stopped on an I/O error". */
int xl_vm_status_io_error(json_object *ret);

/* One device of xl_query_devices' return: its names, the node it writes to
 * (NULL: no medium) and whether its last I/O error was "no space". */
struct xl_device_info {
	const char *device, *qdev, *node;
	int nospace;
};
/* The i-th device; -1 past the end or for a malformed entry. */
int xl_query_devices_entry(json_object *ret, int i, struct xl_device_info *out);

/* What an event means to a watcher of volumes. Strings borrowed from ev. */
struct xl_watch_event {
	enum {
		XL_WEV_NONE,
		XL_WEV_THRESHOLD, /* a write ended past node's threshold */
		XL_WEV_IO_ERROR,  /* an I/O error on node/device; nospace, stopped */
		XL_WEV_JOB_END,   /* a job ended: the graph may have changed */
	} kind;
	const char *node, *device;
	int nospace, stopped;
	int64_t threshold, exceeded;
	double when; /* QEMU's timestamp, s since the epoch; 0 unknown */
};
void xl_watch_event_decode(const struct qmp_msg *ev, struct xl_watch_event *out);

#endif

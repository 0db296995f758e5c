/*
 * merge/group: snapshot, commit and stream over several disks of one VM,
 * all or none.
 *
 * A group runs on the caller's libev loop over a connected qmp_conn:
 *  - snapshot: one transaction puts a new overlay on every disk, or on
 *    none; overlay files this run created are removed again on failure.
 *  - commit: one job per disk (active commits pivot), held before any graph
 *    change (auto-finalize off) until every job is ready; then all are
 *    finalized back to back. If any job fails or is cancelled before that,
 *    the others are cancelled and every chain stays as it was.
 *  - stream: the same barrier for block-stream jobs.
 * After the change the live chains are read again and must be the expected
 * ones; only then are jobs dismissed and (if asked) removed images deleted.
 *
 * Callback rules: done runs exactly once (never from inside
 * merge_group_start); job/command/message may run any number of times
 * before it. Everything passed to a callback is borrowed for the call.
 * While a group runs it owns the connection's event hook. A group may be
 * freed from inside its done callback; freeing a group that is not done
 * abandons it (jobs in QEMU are left as they are; see merge_group_cancel).
 */
#ifndef MERGE_GROUP_H
#define MERGE_GROUP_H

#include <json-c/json.h>
#include <stdint.h>

#include "../qmp/conn.h"
#include "../qmp/qga.h"
#include "chain.h"
#include "../host/host.h"
#include "files.h"
#include "volume.h"
#include "journal.h"

enum merge_verb { MERGE_SNAPSHOT, MERGE_COMMIT, MERGE_STREAM };

/* One disk of a request. */
struct merge_target {
	const char *disk;    /* device id, qdev path, backend or top node name */
	const char *overlay; /* snapshot: the overlay file to create */
	const char *top;     /* commit: layer merged down (NULL: the active layer) */
	const char *base;    /* commit: layer merged into (NULL: the one below top);
				stream: lowest layer kept (NULL: flatten the chain) */
};

struct merge_request {
	enum merge_verb verb;
	int ntargets;
	const struct merge_target *targets;
	const char *format; /* snapshot: overlay format (NULL: qcow2) */
	int64_t speed;      /* commit/stream: bytes per second, 0 unlimited */
	int delete_removed; /* commit/stream: delete images that left the chains */
	int dry_run;        /* report the commands, send none that changes state */
	struct qga *quiesce; /* snapshot: freeze the guest's filesystems through this
				agent around the transaction (borrowed; NULL: no) */
	double freeze_limit; /* snapshot: thaw after this many seconds whatever
				happens (0: 10) */
	struct merge_journal *journal; /* each step is journaled before it is sent
					  (borrowed; NULL: no journal) */
	double wait_for_space; /* commit/stream: a job paused for lack of space is
				  resumed every 2 s for up to this many seconds
				  (0: cancel every job at once, nothing changes) */
	int adopt; /* commit/stream after a lost monitor: take over the jobs of
		      ours QEMU still has (the journal's operation goes on)
		      instead of refusing them */
	struct host *host; /* the VM's host, where its image files are (borrowed;
			      NULL: this machine) */
	/* Block-device layers (merge/volume.h): the engine's volume command,
	 * run on host (or a library's own function instead). Without either, a
	 * commit into a block device too small for it is refused, and a
	 * snapshot can only go onto an empty device that exists. */
	const char *volume_cmd;
	const struct merge_volume_fn *volume_fn;
	double volume_timeout; /* s for one run (0: 60) */
	int64_t initial_size;  /* snapshot onto a volume the command creates:
				  its bytes (0: one chunk, at most what the
				  overlay can need) */
	int64_t chunk;         /* growth step (0: MERGE_VOLUME_CHUNK) */
	int64_t headroom;      /* while a job runs, a block-device layer that
				  receives writes is grown by a chunk when a
				  write ends within this many bytes of its end
				  (0: 80 % of the chunk) */
};

/* Outcomes; the values are the CLI's exit codes. */
enum merge_outcome {
	MERGE_DONE = 0,        /* every disk changed as asked, chains verified */
	MERGE_FAILED = 1,      /* failed and rolled back: chains as before */
	MERGE_BAD_REQUEST = 2, /* refused before anything was sent */
	MERGE_CONN_FAILED = 3, /* the monitor failed before anything changed */
	MERGE_UNKNOWN = 4,     /* stopped with state possibly changed */
};

struct merge_job_update {
	const char *disk;
	const char *job_id;
	const char *status; /* QEMU's job status name */
	int64_t offset, len;
	int64_t speed;
};

struct merge_result {
	enum merge_outcome outcome;
	const struct lm_error *err; /* NULL on MERGE_DONE */
	/* {"type":"result","ok":..,"verb":..,"disks":[{"disk":..,"chain":[..]},..],
	 *  "error":{"code":..,"message":..,"class":..}} */
	json_object *json;
};

struct merge_callbacks {
	/* a job's status or progress changed */
	void (*job)(const struct merge_job_update *u, void *arg);
	/* a command that changes state is about to be sent (dry run: would be) */
	void (*command)(const char *name, json_object *args, void *arg);
	/* a line for a person: what happens and why */
	void (*message)(const char *line, void *arg);
	/* the end, exactly once */
	void (*done)(const struct merge_result *r, void *arg);
};

struct merge_group;

/*
 * Start req on c (connected or connecting). req and its strings are copied.
 * Returns the group, or NULL with err filled when req itself is malformed
 * (USAGE) or memory ran out; done is not called then.
 */
struct merge_group *merge_group_start(struct qmp_conn *c, const struct merge_request *req,
				      const struct merge_callbacks *cb, void *arg,
				      struct lm_error *err);

/* Poll job progress every interval seconds (default 1; 0 turns it off). */
void merge_group_set_poll_interval(struct merge_group *g, double interval);

/*
 * Ask the group to stop: before the pivot point jobs are cancelled and the
 * chains stay as they were (outcome FAILED); after it, the group finishes.
 */
void merge_group_cancel(struct merge_group *g);

void merge_group_free(struct merge_group *g);

const char *merge_verb_name(enum merge_verb v);

#endif

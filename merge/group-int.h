/*
 * merge/group-int.h: the insides of the group engine (merge/group*.c),
 * shared by its files; not installed, not for users of the library.
 *
 * The phases below run in this order; each lives in a file of its own
 * (see the top of group.c). g_step() in group.c holds the all-or-none rules;
 * g_advance() there is the only code that changes g->phase.
 */
#ifndef MERGE_GROUP_INT_H
#define MERGE_GROUP_INT_H

#include "group.h"

#include "query.h"
#include "xlate.h"

enum g_phase {
	P_FETCH,    /* reading chains and jobs */
	P_PREPARE,  /* volumes made, formatted, grown (group-volumes.c) */
	P_START,    /* snapshot transaction or job starts in flight */
	P_RUN,      /* jobs running; waiting until all can pivot */
	P_COMPLETE, /* active jobs told to complete; waiting until all pending */
	P_FLUSH,    /* all pending: flushing what the jobs wrote before any pivot */
	P_FINALIZE, /* finalize sent to all: past the point of no return */
	P_ABORT,    /* cancelling every job; waiting until all concluded */
	P_CLEANUP,  /* reading the jobs' results, dismissing them */
	P_VERIFY,   /* reading the chains again */
	P_RELEASE,  /* releasing the nodes of layers that left the chains */
	P_SETTLE,   /* flushing the rewritten headers, then deleting (if asked) */
	P_DONE,
};

/* The guest's filesystems around a quiesced snapshot (group-act.c). */
enum g_freeze {
	Q_NONE,    /* nothing frozen: not asked, not yet, or the agent says thawed */
	Q_FROZEN,  /* the freeze answered (or failed half-way); no thaw sent yet */
	Q_THAWING, /* thaw sent, its answer not back */
	Q_THAWED,  /* thaw answered, or it could not be sent: nothing more to do */
};

struct gjob {
	struct merge_group *g;
	char *want;    /* the disk as requested */
	char *top_arg, *base_arg; /* layers as requested, NULL: defaults */
	char *name;    /* the disk as livemerge names it */
	char *root;    /* node name of the disk's active layer */
	int top, base; /* layer indexes in the chain before; base may be nlayers */
	char *top_node, *base_node;
	char *overlay, *new_node;
	int overlay_ours; /* did not exist before this run */
	char *job_id;
	int active;
	enum xl_job_status st;
	int start; /* 0 not sent, 1 in flight, 2 started, -1 refused */
	int adopted; /* started by an earlier run (adopt mode) */
	int out_of_space; /* pauses for lack of space seen */
	const char *space_op; /* "read" or "write" */
	int vanished;     /* left QEMU's job list without a result */
	int cancel_sent, complete_sent, finalize_sent, dismissed;
	int finalize_failed; /* QEMU refused its finalize: it will not end by itself */
	int flush_via_hmp;   /* its last flush went out as an HMP command */
	int probe;           /* snapshot: the host cannot tell if the overlay exists: ask QEMU */
	/* snapshot onto a block device (group-volumes.c) */
	int ov_block;        /* formatted here, put on top by node */
	int ov_create;       /* the volume command makes it first */
	int ov_created;      /* ... and did: removed again on failure */
	int ov_file_added, ov_formatted, ov_added; /* done so far, undone on failure */
	char *ov_file_node;
	int64_t need;        /* commit into a block device: the bytes it must hold */
	int64_t wipe_len;    /* snapshot undo: the bytes to write zeros over */
	int64_t *ends;       /* commit into a block device: each layer's end read on
				the host (chain before's indexes), -1 unknown */
	int64_t grown;       /* ... and the size the preparation grew it to */
	int seen; /* present in the last query-jobs */
	int64_t offset, len;
	char *error;
	enum xl_job_status told_st; /* what the job callback last said */
	int64_t told_offset, told_len;
};

struct merge_group {
	struct qmp_conn *c;
	struct ev_loop *loop;
	struct merge_request req;
	struct merge_callbacks cb;
	void *arg;
	int n;
	struct gjob *jobs;
	struct merge_chains *before, *after;

	enum g_phase phase;
	int changed;     /* a command that changes state was sent */
	int outstanding; /* replies this phase waits for */
	int fetch_jobs_done, fetch_chains_done;
	json_object *jobs_before;

	enum merge_outcome outcome; /* what the end will report */
	struct lm_error err;
	int have_err;

	ev_timer poll;
	double poll_interval;
	int poll_inflight;

	/* quiesce */
	enum g_freeze freeze;
	int quiesce_lost; /* the watchdog thawed before the transaction answered */
	int transaction_out; /* the snapshot transaction is in flight */
	double frozen_at;
	double frozen_ms; /* how long the guest was frozen, -1 if it was not */
	ev_timer freeze_watchdog;

	ev_timer space_timer; /* resumes jobs paused for lack of space */
	double space_since;   /* when the first pause for space came, 0: none */

	int flush_by_reopen; /* the QEMU has no HMP (storage daemon): flush by reopening */
	json_object *left;   /* [{"disk","file","why"}]: layers --delete did not remove */

	int unknown; /* whatever happens next, the end is MERGE_UNKNOWN */
	int journal_failed;
	int journaled; /* the intent is in the journal */
	struct host *own_host; /* this machine, when the request named no host */
	struct g_hop *hops;    /* host operations out (group-files.c) */
	int finish_waits;      /* the end waits for them */
	int del_i, del_k;      /* deleting: the job and layer next */
	struct merge_volumes vols; /* the volume command, where it runs */
	int vol_i;             /* preparing or undoing: the job next */
	struct merge_volume_op *vol_op;
	ev_timer vol_poll;     /* a blockdev-create job, until it concludes */
	int undo;              /* undoing the preparation: 1 running, 2 done */
	struct g_mark *marks;  /* block-device layers kept ahead of the writes */
	int nmarks;
	int marks_wait;        /* the end waits for a layer that grows */
	int cancel_requested;
	int refs; /* the group + every command in flight */
	int abandoned;
	int done;
};

struct g_call {
	struct merge_group *g;
	struct gjob *j;
	void (*fn)(struct merge_group *g, struct gjob *j, json_object *ret,
		   const struct lm_error *err);
};

/* ---- the plan (group-plan.c): pure, no connection, no files ---- */

/* What the request does to one disk, from the chains before it. Strings
 * owned by the plan; expect borrows from the chains (and the overlay). */
struct g_plan_disk {
	char *name;       /* the disk as livemerge names it; NULL: not found */
	char *root;       /* node name of its active layer */
	int top, base;    /* commit/stream: layer indexes in the chain before;
			     base may be nlayers (stream to the bottom) */
	int active;       /* commit: top is the active layer, the job pivots */
	char *top_node;   /* commit */
	char *base_node;  /* commit/stream; NULL: no base (stream flattens) */
	char *overlay;    /* snapshot: the new overlay's file */
	char *new_node;   /* snapshot: its node name */
	char *job_id;     /* commit/stream */
	int nexpect;
	const char **expect;      /* the chain after, file names, active layer first */
	int leave_from, leave_to; /* layers [from, to) of the chain before leave it */
};

struct g_plan {
	int n;
	struct g_plan_disk *disks; /* one a target, in the request's order */
};

/*
 * Plan req (its targets, verb) against the chains before. Returns 0, or -1
 * with err filled (USAGE: the request cannot work; NOMEM). *out is set
 * either way (NULL only when memory ran out) and owned by the caller
 * (g_plan_free); after a refusal it holds the disks planned before it, and
 * the refused disk's name where that disk was found.
 */
int g_plan_build(const struct merge_request *req, const struct merge_chains *before,
		 struct g_plan **out, struct lm_error *err);
void g_plan_free(struct g_plan *p);

/* The file names of disk b's chain after verb with these layers (top,
 * base: commit/stream; overlay: snapshot). Count, at most max; borrowed. */
int g_plan_chain_after(enum merge_verb verb, const struct merge_disk *b, int top, int base,
		       const char *overlay, const char **expect, int max);

/* FNV-1a of s: short node names derived from a path. */
uint32_t g_hash(const char *s);

/* ---- shared helpers, by the file that defines them ---- */

/* group.c */
void g_msg(struct merge_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void g_error(struct merge_group *g, const struct lm_error *err);
void g_errorf(struct merge_group *g, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void g_unref(struct merge_group *g);
int g_journal(struct merge_group *g, const char *step, struct gjob *j);
int g_send(struct merge_group *g, struct xl_cmd cmd, int state_changing, struct gjob *j,
	   void (*fn)(struct merge_group *, struct gjob *, json_object *,
		      const struct lm_error *));
struct gjob *g_job_by_id(struct merge_group *g, const char *id);
void g_conn_lost(struct merge_group *g, const struct lm_error *err);
int g_is_conn_error(const struct lm_error *err);
void g_finish(struct merge_group *g);
void g_advance(struct merge_group *g, enum g_phase next);
void g_step(struct merge_group *g);

/* group-volumes.c: block devices */
void g_volumes_init(struct merge_group *g);
int g_has_volume_cmd(const struct merge_group *g);
int g_overlay_device(struct merge_group *g, struct gjob *j, const struct host_file *f);
void g_overlay_missing(struct merge_group *g, struct gjob *j);
int g_check_base_space(struct merge_group *g);
void g_prepare(struct merge_group *g);
int g_volumes_hold_finish(struct merge_group *g);
void g_volumes_stop(struct merge_group *g);
void g_marks_arm(struct merge_group *g);
void g_marks_event(struct merge_group *g, const struct qmp_msg *ev);
void g_marks_free(struct merge_group *g);

/* group-resolve.c */
void g_jobs_fetched(struct merge_group *g, struct gjob *unused, json_object *ret,
		    const struct lm_error *err);

/* group-prepare.c */
void g_begin(struct merge_group *g);

/* group-act.c */
void g_freeze_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents);
void g_act(struct merge_group *g);
void g_start_jobs(struct merge_group *g);

/* group-barrier.c */
int g_job_ended(const struct gjob *j);
int g_job_failed(const struct gjob *j);
void g_abort(struct merge_group *g);
void g_abort_all(struct merge_group *g);
void g_space_cb(struct ev_loop *loop, ev_timer *w, int revents);
void g_out_of_space(struct merge_group *g, struct gjob *j, const char *operation);

/* group-pivot.c */
void g_job_reply(struct merge_group *g, struct gjob *j, json_object *ret,
		 const struct lm_error *err);
int g_rewritten_layer(struct merge_group *g, struct gjob *j);
void g_complete_all(struct merge_group *g);
void g_finalize_all(struct merge_group *g);
void g_flush_all(struct merge_group *g);

/* group-verify.c */
const struct merge_disk *g_disk_before(struct merge_group *g, struct gjob *j);
int g_expected(struct merge_group *g, struct gjob *j, int changed, const char **expect,
	       int max);
const struct merge_disk *g_find_disk(struct merge_group *g, struct gjob *j,
				     const struct merge_chains *ch);
void g_read_chains(struct merge_group *g, merge_chains_cb cb);
void g_verify(struct merge_group *g);

/* group-cleanup.c */
void g_cleanup(struct merge_group *g);
void g_release_removed(struct merge_group *g);
void g_settled(struct merge_group *g);

/* group-files.c: the VM's host */
struct g_hop;
struct host *g_host(struct merge_group *g);
void g_check_overlays(struct merge_group *g);
void g_remove_our_overlays(struct merge_group *g);
void g_delete_removed(struct merge_group *g);
void g_hops_cancel(struct merge_group *g);
/* Write len bytes of zeros at the start of the device at path, on the host
 * (dd there): a device this run formatted, wiped where QEMU cannot (no
 * HMP). cb gets the outcome. 0, or -1 (out of memory: err set). */
int g_zero_device(struct merge_group *g, struct gjob *j, const char *path, int64_t len,
		  void (*cb)(struct merge_group *, struct gjob *, const struct lm_error *));
int g_hops_hold_finish(struct merge_group *g);

/* group-resolve.c */
int g_bad(struct merge_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void g_probe_overlays(struct merge_group *g);

#endif

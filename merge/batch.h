/*
 * merge/batch: one verb on many VMs at once, from one event loop.
 *
 * Each VM gets its own monitor connection (and guest agent, for a quiesced
 * snapshot), its own journal and its own merge group; at most `parallel`
 * run at a time. Before anything runs, every VM is asked who it is
 * (merge/vmlock.h) and which images it writes: a plan naming one VM twice
 * (the same target; two monitors of one VM; two entries writing one image,
 * which only one process can) is refused whole, through the duplicate
 * callback, before a VM is even connected to for the first kind. While a VM's verb
 * runs the batch holds the VM's lock; a VM another livemerge holds fails
 * (MERGE_BAD_REQUEST, LM_ERR_BUSY) and the others go on. A VM's outcome never touches another's: a failure is
 * reported for that VM and the batch goes on. VMs reached over ssh on the
 * same host share one SSH session (the transport does that).
 *
 * The vms array and everything it points to are borrowed until the done
 * callback; callbacks follow merge/group.h's rules.
 */
#ifndef MERGE_BATCH_H
#define MERGE_BATCH_H

#include <ev.h>

#include "group.h"

struct merge_batch_vm {
	const char *target; /* the QMP monitor */
	const char *qga;    /* the guest agent (snapshot: quiesce); NULL: none */
	const struct merge_request *req;
};

struct merge_batch_opts {
	int parallel;            /* VMs at once (0: 16) */
	double timeout;          /* connect and per-command, s (0: 30) */
	const char *journal_dir; /* NULL: the default; "" : no journal */
	int dry_run;
	/* how transports are made (ssh: keys, known_hosts); its loop is
	 * ignored: the batch's is used. NULL: defaults */
	const struct tr_opts *tr;
};

struct merge_batch_callbacks {
	void (*vm_message)(int vm, const char *line, void *arg);
	void (*vm_job)(int vm, const struct merge_job_update *u, void *arg);
	void (*vm_command)(int vm, const char *name, json_object *args, void *arg);
	/* a VM ended; r->json is its result object; seconds from its start */
	void (*vm_done)(int vm, const struct merge_result *r, double seconds, void *arg);
	/* entries first and second (first < second) name one VM (why says how):
	 * nothing ran, and done(0, 0) follows. Called at most once. */
	void (*duplicate)(int first, int second, const char *why, void *arg);
	/* every VM ended */
	void (*done)(int ok, int failed, void *arg);
};

struct merge_batch;

struct merge_batch *merge_batch_start(struct ev_loop *loop, const struct merge_batch_vm *vms,
				      int n, const struct merge_batch_opts *opts,
				      const struct merge_batch_callbacks *cb, void *arg,
				      struct lm_error *err);

void merge_batch_free(struct merge_batch *b);

#endif

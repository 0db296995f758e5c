/*
 * merge/recover: finish or roll back an operation the journal shows as
 * unfinished (livemerge was killed, the monitor dropped, the host
 * rebooted), reconciling three views: the journal, QEMU's jobs and the live
 * chains. It never guesses from a vanished job: what a disk's chain is
 * decides whether that disk changed.
 *
 *  - snapshot: thaw the guest if a freeze was journaled; each disk either
 *    has its new overlay or not; if none has, the overlays this operation
 *    created are removed.
 *  - commit/stream before the first finalize: every job of the operation is
 *    cancelled, so no chain changes. From the first finalize on: pending
 *    jobs are finalized, so every chain changes.
 *  - then concluded jobs are read and dismissed, the chains checked against
 *    the journal's before/expected, removed layers' nodes released and (if
 *    the operation asked) their files deleted, and the end journaled.
 *
 * Running it again changes nothing: the operation has its end.
 *
 * merge_recover() is synchronous: it runs the connection's loop (nested)
 * until it is done. Do not call it from inside a callback of that
 * connection.
 */
#ifndef MERGE_RECOVER_H
#define MERGE_RECOVER_H

#include "../qmp/conn.h"
#include "../qmp/qga.h"
#include "group.h"
#include "journal.h"

struct merge_recover_opts {
	/* open a guest agent client for a journaled target (to thaw); NULL or
	 * returning NULL: the guest cannot be thawed from here */
	struct qga *(*qga_open)(const char *target, void *arg);
	/* a line for a person */
	void (*message)(const char *line, void *arg);
	/* a layer the operation was to delete that stays on disk, and why
	 * (told through message too); NULL: the message only */
	void (*left)(const char *disk, const char *file, const char *why, void *arg);
	void *arg;
	struct host *host; /* the VM's host, where its image files are (borrowed;
			      NULL: this machine) */
	const char *volume_cmd; /* removes the volumes an interrupted snapshot
				   created (NULL: they are left, and named) */
	double volume_timeout;
	double timeout; /* for jobs to end, s (0: 120) */
};

enum merge_recovered {
	MERGE_REC_NOTHING,     /* the last operation had finished */
	MERGE_REC_FINISHED,    /* every disk changed as the operation asked */
	MERGE_REC_ROLLED_BACK, /* every disk is as before */
	MERGE_REC_MIXED,       /* some disks changed, the others are as before */
};

/*
 * Reconcile c's VM with journal j. Returns MERGE_DONE when there was nothing
 * to do or every disk is consistent again (*what says which),
 * MERGE_CONN_FAILED if the monitor failed, MERGE_UNKNOWN if some chain is
 * neither as before nor as expected (err says which; the journal stays
 * open).
 */
enum merge_outcome merge_recover(struct qmp_conn *c, struct merge_journal *j,
				 const struct merge_recover_opts *opts,
				 enum merge_recovered *what, struct lm_error *err);

/* 1 if the journal's last operation is unfinished and got as far as step. */
int merge_journal_unfinished_has(struct merge_journal *j, const char *step);

#endif

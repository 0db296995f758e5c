/*
 * merge/journal: what livemerge is doing to a VM, on disk, before it does
 * it.
 *
 * One append-only file per VM (JSON lines, each written before the step it
 * names is sent; those recovery decides by, the intent, a freeze and a
 * finalize, are also fdatasync'ed first). An operation is a run of entries with the same "op"
 * number: first {"step":"intent",...} with everything recovery needs (the
 * chains before, the chains expected, the job ids, the guest agent), then
 * one entry per step, last {"step":"end"}. An operation without its end was
 * interrupted; merge/recover.c finishes or rolls it back.
 *
 * A line torn by a crash is ignored by the reader: it was never fsync'ed,
 * so the step it named was never sent.
 *
 * The end of an operation that read the live chains records them
 * ("chains": each disk as merge_disk_to_json gives it): the chain state the
 * operation led to. Those states are the VM's history, kept as long as the
 * journal is. Compaction (after an end, once the file passes a bound)
 * moves the chain states of finished operations to a history file beside
 * the journal (NAME.history: one state a line, appended and synced first)
 * and rewrites the journal with only the last operation and any
 * unfinished one (written to a temporary file, synced, renamed over, the
 * directory synced). So the journal stays small, its last operation is
 * read from its end, and a crash at any point loses nothing: a state in
 * both files is read once.
 */
#ifndef MERGE_JOURNAL_H
#define MERGE_JOURNAL_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/lm-error.h"

struct merge_journal;

/*
 * Open (create) the journal of the VM reached at target, in dir (created
 * 0700 if missing; NULL: $XDG_STATE_HOME/livemerge or
 * ~/.local/state/livemerge). Returns an owned journal or NULL (err).
 */
struct merge_journal *merge_journal_open(const char *dir, const char *target,
					 struct lm_error *err);

/*
 * The same for a journal whose file name is name.journal (a file name, no
 * '/'): merge/vmlock.h names a VM's journal by the VM's identity.
 * merge_journal_open(dir, target) is this with merge_journal_target_stem.
 */
struct merge_journal *merge_journal_open_stem(const char *dir, const char *name,
					      struct lm_error *err);

/* The name a journal keyed by its monitor target has (before .journal):
 * unix:/run/vm1/qmp.sock -> _run_vm1_qmp.sock. Written into out (size). */
void merge_journal_target_stem(const char *target, char *out, size_t size);

/* The journal directory: dir, or NULL for the default (see
 * merge_journal_open); created 0700 if missing. Written into out. 0 or -1. */
int merge_journal_dir(const char *dir, char *out, size_t size, struct lm_error *err);

void merge_journal_close(struct merge_journal *j);

const char *merge_journal_path(const struct merge_journal *j);

/*
 * The last operation in the journal: *entries an owned array of its entries
 * (NULL if the journal is empty), *finished 1 if it has its end. 0, or -1
 * (err) if the file cannot be read.
 */
int merge_journal_last(struct merge_journal *j, json_object **entries, int *finished,
		       struct lm_error *err);

/* The same for the journal name.journal in dir (as for
 * merge_journal_open_stem; merge/vmlock.h names a VM's), read only:
 * nothing is created or written, a journal that does not exist is an empty
 * one (*entries NULL). 0, or -1 (err). */
int merge_journal_read_last(const char *dir, const char *name, json_object **entries,
			    int *finished, struct lm_error *err);

/* The same over bytes (the reader the fuzzer drives). Never fails: what
 * cannot be parsed is skipped. */
void merge_journal_parse(const char *buf, size_t len, json_object **entries, int *finished);

/* Start a new operation: entry gets "op" (one more than the last) and
 * "step":"intent". entry borrowed. 0 or -1 (err). */
int merge_journal_begin(struct merge_journal *j, json_object *entry, struct lm_error *err);

/* Append one step of the current operation (fields may be NULL), fsync'ed. */
int merge_journal_step(struct merge_journal *j, const char *step, json_object *fields,
		       struct lm_error *err);

/* 1 while an operation this handle began has not had its end: a step
 * written now belongs to it. */
int merge_journal_in_op(const struct merge_journal *j);

/*
 * Compact now (see above). Runs only while no other handle has the
 * journal open (each holds a shared lock) and no operation of this one is
 * open. 0 compacted, 1 nothing done (nothing to drop, or not now), -1
 * (err) failed: the journal is as it was, the history may hold states
 * that are in the journal too.
 */
int merge_journal_compact(struct merge_journal *j, struct lm_error *err);

/* Compact after an end once the journal is larger than bytes (default
 * 64 KiB; 0: after every end). */
void merge_journal_set_compact_bytes(size_t bytes);

/*
 * Every chain state recorded for the VM, oldest first: *states an owned
 * array of {"op","time","verb","target","outcome","disks":[{"disk",...,
 * "chain":[...]}]}, with "of" (the verb recovery finished or rolled back)
 * and "recovered" when recover ended the operation. 0 or -1 (err).
 */
int merge_journal_history(struct merge_journal *j, json_object **states, struct lm_error *err);

/* The chain states of the operations in buf (journal bytes) numbered above
 * after, appended to out (an array). Never fails (the fuzzer drives it). */
void merge_journal_parse_states(const char *buf, size_t len, int64_t after, json_object *out);

/* For fault-injection tests: SIGKILL the process right after the entry for
 * step (or "step#N", its N-th occurrence) is on disk. NULL: never.
 * Compaction's points: "compact-history" (states appended and synced),
 * "compact-write" (the new journal synced, not renamed), "compact-rename". */
void merge_journal_set_crash_point(const char *step);

#endif

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
 */
#ifndef MERGE_JOURNAL_H
#define MERGE_JOURNAL_H

#include <json-c/json.h>

#include "../common/lm-error.h"

struct merge_journal;

/*
 * Open (create) the journal of the VM reached at target, in dir (created
 * 0700 if missing; NULL: $XDG_STATE_HOME/livemerge or
 * ~/.local/state/livemerge). Returns an owned journal or NULL (err).
 */
struct merge_journal *merge_journal_open(const char *dir, const char *target,
					 struct lm_error *err);

void merge_journal_close(struct merge_journal *j);

const char *merge_journal_path(const struct merge_journal *j);

/*
 * The last operation in the journal: *entries an owned array of its entries
 * (NULL if the journal is empty), *finished 1 if it has its end. 0, or -1
 * (err) if the file cannot be read.
 */
int merge_journal_last(struct merge_journal *j, json_object **entries, int *finished,
		       struct lm_error *err);

/* The same for the VM reached at target (dir as for merge_journal_open),
 * read only: nothing is created or written, a journal that does not exist
 * is an empty one (*entries NULL). 0, or -1 (err). */
int merge_journal_read_last(const char *dir, const char *target, json_object **entries,
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

/* For fault-injection tests: SIGKILL the process right after the entry for
 * step (or "step#N", its N-th occurrence) is on disk. NULL: never. */
void merge_journal_set_crash_point(const char *step);

#endif

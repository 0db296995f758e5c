/*
 * merge/check: a VM's chains held against every other account of them,
 * without changing anything.
 *
 * The live graph (QEMU's), each layer's own image header on the VM's host,
 * the journal's last operation, the engine's view (an expected chain per
 * disk) and the image files and volumes in the VM's directories each tell
 * where a disk's data is. merge_check compares what was gathered and
 * returns what disagrees, one finding each. It is pure (gathered inputs
 * in, findings out) so every finding can be tested without a QEMU;
 * cli/cmd-check.c gathers the inputs on the loop.
 */
#ifndef MERGE_CHECK_H
#define MERGE_CHECK_H

#include <json-c/json.h>

#include "../host/host.h"
#include "chain.h"
#include "files.h"

/* What the host has at one path, read without QEMU (host_look_device). */
struct merge_check_file {
	const char *path;
	enum host_file_kind kind; /* HOST_FILE_NONE: no such file */
	const unsigned char *head; /* its first bytes (MERGE_IMAGE_HEAD or fewer) */
	size_t len;
};

struct merge_check_input {
	const struct merge_chains *live; /* QEMU's live graph */
	/* the disks to check (names as merge_chains_find takes); 0: every disk */
	const char *const *disks;
	int ndisks;
	/* every live layer's path as the host has it; a layer not here is not
	 * held against the host (a layer QEMU reaches by another protocol) */
	const struct merge_check_file *files;
	int nfiles;
	/* merge_journal_last's entries (NULL: empty journal) and finished flag */
	json_object *journal;
	int journal_finished;
	/* the engine's view, from merge_check_expect_parse; NULL: none given */
	json_object *expect;
	/* the entries of each --dir (regular files, block devices and symlinks
	 * to block devices, as looked at), paths DIR/NAME; dirs the DIRs */
	const struct merge_check_file *dir_files;
	int ndir_files;
	/* query-jobs' return value (NULL: none asked) */
	json_object *jobs;
};

/*
 * Compare. Returns an owned array of findings, each an object
 * {"type":"finding","code","disk","layer", then one member per source
 * saying what it says}: code one of backing-mismatch, missing,
 * unfinished-operation, journal-differs, expect-differs, orphan, dirty,
 * corrupt, foreign-job; disk and layer null when the finding is about no
 * one disk or layer. Sources: "live" (QEMU), "header" (the image's header on
 * the host), "host" (what the path is there), "journal", "expect", "dir",
 * "job". NULL only when out of memory.
 */
json_object *merge_check(const struct merge_check_input *in);

/*
 * Parse the engine's view: JSON {"DISK": ["/top", ..., "/base"], ...},
 * every path absolute, every chain at least one layer. 0 with *out owned,
 * or -1 with why (a line naming what is wrong). Pure.
 */
int merge_check_expect_parse(const char *text, size_t len, json_object **out, char *why,
			     size_t whylen);

/* Is a regular file under a --dir an image (a qcow2 header, or a name
 * ending in .qcow2, .img or .raw)? Block devices always are. Pure. */
int merge_check_is_image(const struct merge_check_file *f);

#endif

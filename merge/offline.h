/*
 * merge/offline: the target of a stopped VM, its chains named by their top
 * images: "offline:DISK=PATH[,DISK=PATH...]", or the same after an ssh://
 * host ("ssh://[USER@]HOST[:PORT]/offline:DISK=PATH,...") for images on
 * that host.
 *
 * Only the words: what runs them (a qemu-storage-daemon started for one
 * command) is the caller's. Pure, so it can be tested without a host.
 */
#ifndef MERGE_OFFLINE_H
#define MERGE_OFFLINE_H

#include "../common/lm-error.h"

/* The most disks one offline target names. */
#define MERGE_OFFLINE_MAX_DISKS 32

struct merge_offline_disk {
	char *disk; /* a QEMU node name: a letter, then letters, digits, '-', '_', '.' */
	char *path; /* the top image, absolute */
};

struct merge_offline {
	char *ssh;  /* "ssh://[USER@]HOST[:PORT]" for a remote host, NULL: this machine */
	int ndisks;
	struct merge_offline_disk *disks; /* in the target's order */
	/* what the VM's journal is keyed by: "offline:DISK=PATH,..." with the
	 * disks sorted by name, after the ssh prefix and '/' for a remote host */
	char *key;
};

/* 1 if target is an offline target (well formed or not), else 0. */
int merge_offline_is(const char *target);

/*
 * Parse an offline target. A relative PATH is taken against cwd on this
 * machine (NULL: refused); on an ssh:// host every PATH must be absolute.
 * Refused (USAGE): no disk, a DISK that is no node name or named twice, an
 * empty PATH, a PATH named twice, a PATH with ',' (the separator), more
 * than MERGE_OFFLINE_MAX_DISKS disks. Returns an owned target or NULL with
 * err.
 */
struct merge_offline *merge_offline_parse(const char *target, const char *cwd,
					  struct lm_error *err);

void merge_offline_free(struct merge_offline *o);

/* The disk of o named name, or NULL. Borrowed. */
const struct merge_offline_disk *merge_offline_find(const struct merge_offline *o,
						    const char *name);

#endif

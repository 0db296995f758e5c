/*
 * merge/watch: keep every written block-device layer of a VM ahead of the
 * guest, on the event loop, for as long as the caller runs it.
 *
 * Written layers are the active layer of each watched disk when it is a
 * qcow2 on a block device (a host_device protocol node). Each carries
 * QEMU's one-shot write threshold on its protocol node (whose offsets are
 * the volume's) at size - headroom. BLOCK_WRITE_THRESHOLD starts the
 * volume command at once (extend to size + chunk, capped at the most a
 * qcow2 of that virtual size can need); when it is done the threshold is
 * armed again. Nothing polls the allocation.
 *
 * A VM stopped on ENOSPC (BLOCK_IO_ERROR nospace, or found stopped with
 * io-status nospace) gets its layer extended and then, only then and only
 * when QEMU still says it stopped on an I/O error, `cont`.
 *
 * The graph changes under the watch (snapshots, commits, streams, by
 * livemerge or anyone). QEMU signals job ends (re-read at once) but no
 * event names a snapshot or a blockdev-add, so the watch also compares,
 * every rescan seconds, which node each device writes to (one query-block)
 * and re-reads the chains when that changed. A new overlay is so unwatched
 * for at most that long; if it fills in that time the VM stops on ENOSPC
 * (it never loses a write) and the watch extends and resumes it.
 */
#ifndef MERGE_WATCH_H
#define MERGE_WATCH_H

#include <ev.h>
#include <stdint.h>

#include "../common/lm-error.h"
#include "../qmp/conn.h"
#include "volume.h"

struct merge_watch;

/* One extension, for the caller to show. Strings borrowed for the call. */
struct merge_watch_extension {
	const char *disk;
	const char *layer;  /* the qcow2 node's name */
	const char *path;   /* the volume, as QEMU opened it */
	const char *why;    /* "threshold", "nospace", "allocated" (found past its threshold) */
	int64_t from, to;   /* bytes */
	double ms;          /* QEMU's event to the command's start, ms; -1 without an event */
	double took;        /* the command's run, s */
};

struct merge_watch_opts {
	const struct merge_volumes *volumes; /* borrowed, outlives the watch */
	int64_t chunk;    /* 0: MERGE_VOLUME_CHUNK */
	int64_t headroom; /* 0: 80 % of the chunk */
	const char *const *disks; /* the disks to watch (as merge_chains_find names them); */
	int ndisks;               /* 0: every disk */
	double rescan;    /* s between checks for a changed graph; 0: 2 */
	/* an extension done (err NULL) or refused / failed (err) */
	void (*extended)(const struct merge_watch_extension *x, const struct lm_error *err,
			 void *arg);
	/* a line for a person (raw: QEMU's names; escape before printing) */
	void (*message)(const char *line, void *arg);
	void *arg;
};

/* A watch on loop; nothing happens before merge_watch_attach. opts is
 * copied (what it points to is borrowed). NULL with err (NOMEM). */
struct merge_watch *merge_watch_new(struct ev_loop *loop, const struct merge_watch_opts *opts,
				    struct lm_error *err);

/*
 * Watch the VM behind c (borrowed; negotiated; the watch takes its event
 * and state callbacks). After a lost monitor, attach the new connection:
 * everything is read again (thresholds armed again, a VM stopped meanwhile
 * found). Running volume commands go on.
 */
void merge_watch_attach(struct merge_watch *w, struct qmp_conn *c);

/*
 * How the watch is: 0 while it runs; 1 when the monitor was lost (err
 * says why; attach a new connection); -1 when it cannot go on (err: USAGE
 * for a named disk the VM does not have, or one with no layer to watch).
 */
int merge_watch_status(const struct merge_watch *w, struct lm_error *err);

/* 1 once the chains were read and every watched layer armed. */
int merge_watch_ready(const struct merge_watch *w);

/* The number of layers watched now. */
int merge_watch_count(const struct merge_watch *w);

/* Stop: running volume commands are stopped (an extension half done
 * leaves a volume grown, which is harmless). Free the connection first:
 * its pending replies and callbacks reach the watch. NULL is fine. */
void merge_watch_free(struct merge_watch *w);

#endif

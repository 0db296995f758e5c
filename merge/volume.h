/*
 * merge/volume: the engine's volumes (block devices: logical volumes, loop
 * devices) made, grown and removed through the engine's own program, and
 * the size arithmetic that decides by how much.
 *
 * The program (the volume command) runs on the VM's host (struct host:
 * this machine, or over the monitor's SSH session) with a time limit:
 *     CMD create PATH BYTES     make a volume of at least BYTES at PATH
 *     CMD extend PATH BYTES     grow PATH to at least BYTES
 *     CMD remove PATH           remove the volume
 * Exit 0 is done; anything else is a refusal, reported with the last line
 * of its stderr. A library user may give a function instead of a program.
 *
 * Every step is journaled before it runs, so recovery knows which volumes
 * may have been made, grown or removed: inside the journal's current
 * operation when one is open (a snapshot or merge that needs a volume), as
 * a step {"step":"volume-create"|"volume-extend"|"volume-remove","path":..,
 * "bytes":..}; else as an operation of its own (watch): an intent
 * {"verb":"create"|"extend"|"remove","path":..,"bytes":..} and, when the
 * step is over, its end {"outcome":0 done, 1 refused or failed}.
 */
#ifndef MERGE_VOLUME_H
#define MERGE_VOLUME_H

#include <stdint.h>

#include "../common/lm-error.h"

struct host;
struct merge_journal;
struct merge_volume_op;

enum merge_volume_verb {
	MERGE_VOLUME_CREATE,
	MERGE_VOLUME_EXTEND,
	MERGE_VOLUME_REMOVE,
};

/* "create", "extend", "remove". */
const char *merge_volume_verb_name(enum merge_volume_verb verb);

/* How a volume step ended: err NULL when done, else why not (borrowed for
 * the call). */
typedef void merge_volume_cb(void *arg, const struct lm_error *err);

/*
 * A library user's own volume function, used instead of a program: start
 * verb on path (bytes: 0 for remove) and call done(done_arg, err) exactly
 * once, later, from the loop (never from inside start). Returns a handle for
 * cancel, or NULL when it could not start (then it fills err and never
 * calls done). cancel (may be NULL: the step is then left to finish
 * unheard) stops it; done is not called after. The function keeps its own
 * time limit.
 */
struct merge_volume_fn {
	void *(*start)(void *arg, enum merge_volume_verb verb, const char *path, int64_t bytes,
		       merge_volume_cb *done, void *done_arg, struct lm_error *err);
	void (*cancel)(void *arg, void *handle);
	void *arg;
};

/* Where and how volumes are made. All borrowed; they must outlive every
 * operation started with them. */
struct merge_volumes {
	struct host *host;             /* where cmd runs */
	const char *cmd;               /* the volume command (a program name or path) */
	double timeout;                /* for one run of cmd, s (0: 60) */
	struct merge_journal *journal; /* NULL: steps are not journaled */
	const struct merge_volume_fn *fn; /* set: used instead of cmd and host */
};

/*
 * Run verb on path (bytes: at least this many; ignored for remove): journal
 * it, then run the volume command. cb(arg, err) runs exactly once, later,
 * from the loop: err NULL when done; else err->code TIMEOUT (the command
 * was stopped after v->timeout), FAILED (it refused: the message names the
 * command and ends with its stderr's last line, escaped), IO, UNSUPPORTED
 * or EOF (the host could not run it), IO (the journal could not record the
 * end). Returns the operation, valid until cb returns or until
 * merge_volume_cancel; NULL when nothing was started (bad arguments, the
 * journal could not be written, no memory: err says which, cb never runs).
 */
struct merge_volume_op *merge_volume_run(const struct merge_volumes *v,
					 enum merge_volume_verb verb, const char *path,
					 int64_t bytes, merge_volume_cb *cb, void *arg,
					 struct lm_error *err);

/* Stop an operation that has not called back (a command still running is
 * killed); cb never runs. Its journal entry stays: the step may have
 * happened. NULL is fine. */
void merge_volume_cancel(struct merge_volume_op *op);

/* Sizes. Defaults are vdsm's: a chunk of 2.5 GiB, and a threshold 80 % of a
 * chunk below the end of the volume. */
#define MERGE_VOLUME_CHUNK ((int64_t)2560 << 20)
#define MERGE_VOLUME_HEADROOM (MERGE_VOLUME_CHUNK / 5 * 4)
#define MERGE_QCOW2_CLUSTER 65536

/*
 * The most a qcow2 image of virtual_size bytes with cluster_size clusters
 * (a power of two, 512..2 MiB) and 16-bit refcounts can take on its volume
 * when every cluster is allocated: a header cluster, L1 and L2 tables,
 * refcount table and blocks, and the data, as `qemu-img measure` reports
 * for "fully allocated size" (QEMU's qcow2_calc_prealloc_size). -1 when the
 * arguments are out of range or the result would overflow.
 */
int64_t merge_qcow2_max_size(int64_t virtual_size, int64_t cluster_size);

/*
 * The size to grow a volume of size bytes to after its threshold was
 * crossed: size + chunk, capped at max (the most the layer can need; <= 0:
 * no cap), never less than size.
 */
int64_t merge_volume_next_size(int64_t size, int64_t chunk, int64_t max);

/*
 * The write threshold for a volume of size bytes: size - headroom, at least
 * 1 (QEMU reads 0 as "none"); 0 when size is at or past max (> 0): the
 * volume holds all the layer can need, nothing to watch.
 */
int64_t merge_volume_threshold(int64_t size, int64_t headroom, int64_t max);

#endif

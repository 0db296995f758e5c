/*
 * merge/vmlock: one VM, one journal, one livemerge acting on it at a time.
 *
 * A VM may be reached through several monitors (a second -qmp socket,
 * unix: and ssh:// to the same socket). Its journal and its lock are named
 * after the VM itself, not after the monitor, so every way in finds the
 * same ones. The name (the VM's key) comes from what QEMU says it is:
 *
 *   1. its UUID (query-uuid), unless it is the all-zero default: a UUID
 *      names one VM everywhere (libvirt and the engines give each VM its
 *      own) -> "uuid+0123abcd-...";
 *   2. else its name (query-name), which is unique on its host only: the
 *      key carries the host the target names (ssh:// HOST[:PORT], tcp:
 *      HOST, "local" for a unix socket) -> "name+NAME+HOST", the name's
 *      bytes outside [A-Za-z0-9.-] written as _XX;
 *   3. else (qemu-storage-daemon answers neither; a VM run with neither
 *      -uuid nor -name) the target, named as journals always were:
 *      unix:/run/vm1/qmp.sock -> "_run_vm1_qmp.sock".
 *
 * Keys of the first two kinds hold a '+', which a target's name never does,
 * so they cannot meet one. The journal is DIR/KEY.journal and the lock
 * DIR/KEY.lock: an flock(2) on that file, held while a verb that changes the
 * VM's state runs and released by the kernel when its holder ends or dies.
 * The file holds the holder's pid, verb and target (for the message of the
 * one refused). Locks are per journal directory on one machine: two
 * livemerge processes on different machines, or with different --journal
 * directories, do not see each other's.
 *
 * A journal named after a target before the VM's identity named it (older
 * livemerge) is taken over: renamed to the key's name when the key has none
 * yet, or, when both exist and the older has an unfinished operation, used
 * until that is recovered.
 */
#ifndef MERGE_VMLOCK_H
#define MERGE_VMLOCK_H

#include <ev.h>
#include <stddef.h>

#include "../common/lm-error.h"
#include "../qmp/conn.h"
#include "journal.h"

/* Longest key (without .journal), NUL included. */
#define MERGE_VM_KEY_MAX 512

/*
 * The key of a VM from QEMU's answers (pure): uuid and name as QEMU gave
 * them (NULL: none, or the command is unknown), target the monitor it was
 * reached through. Written into key (MERGE_VM_KEY_MAX bytes) and, for
 * messages, a description into desc ("uuid X", "name 'X' on HOST",
 * "monitor TARGET"; desc may be NULL).
 */
void merge_vm_key(const char *uuid, const char *name, const char *target, char *key,
		  char *desc, size_t desc_size);

/* A VM, identified, maybe locked. */
struct merge_vm {
	char key[MERGE_VM_KEY_MAX];
	char desc[MERGE_VM_KEY_MAX + 32];
	int lock_fd; /* -1: no lock held */
};

/* Release the lock (if held) and free; NULL is fine. */
void merge_vm_free(struct merge_vm *vm);

/*
 * Take the lock of the VM whose key is vm->key, in the journal directory
 * dir (NULL: the default), at once, recording verb and target as its
 * holder. 0; or -1 with err: LM_ERR_BUSY naming the holder's pid, verb
 * and target when another process holds it, LM_ERR_IO otherwise.
 */
int merge_vm_lock(struct merge_vm *vm, const char *dir, const char *verb, const char *target,
		  struct lm_error *err);

/*
 * Open the VM's journal in dir (NULL: the default), taking over the one
 * named after target if there is one (see above). Owned, or NULL (err).
 */
struct merge_journal *merge_vm_journal_open(const char *dir, const struct merge_vm *vm,
					    const char *target, struct lm_error *err);

/*
 * The last operation of the VM's journal, read without opening it (nothing
 * is created or written: merge_journal_read_last), by the same rule as
 * merge_vm_journal_open: the journal named after target while it holds an
 * unfinished operation, else the VM's. 0, or -1 (err).
 */
int merge_vm_journal_read_last(const char *dir, const struct merge_vm *vm, const char *target,
			       json_object **entries, int *finished, struct lm_error *err);

struct merge_vm_claim_opts {
	const char *dir;    /* the journal directory; NULL: the default */
	const char *target; /* the monitor c was reached through */
	const char *verb;   /* the verb to record as the lock's holder; NULL: no lock */
	double wait_lock;   /* a held lock: wait up to this many s for it; 0: refuse */
	/* said once when the lock is held and the claim waits (may be NULL) */
	void (*message)(const char *line, void *arg);
};

/* vm (owned by the callee, free with merge_vm_free) or NULL with err. */
typedef void (*merge_vm_claim_cb)(struct merge_vm *vm, const struct lm_error *err, void *arg);

struct merge_vm_claim;

/*
 * Ask the VM behind the negotiated connection c who it is, then (with
 * o->verb) take its lock, waiting on c's loop (a retry every 0.2 s) up to
 * o->wait_lock seconds. cb runs exactly once, never from inside this call.
 * Strings in o are copied. Returns the claim, or NULL (err) at once.
 */
struct merge_vm_claim *merge_vm_claim_start(struct qmp_conn *c,
					    const struct merge_vm_claim_opts *o,
					    merge_vm_claim_cb cb, void *arg, struct lm_error *err);

/* Free the claim; before its callback ran, that cancels it (the callback
 * never runs). Fine from inside the callback; NULL is fine. */
void merge_vm_claim_free(struct merge_vm_claim *cl);

#endif

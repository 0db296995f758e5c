/*
 * host: the machine a VM runs on, as livemerge reaches it: its files and
 * its programs.
 *
 * A host is this machine (files by lstat/open/unlink, programs by fork and
 * exec) or the host of an ssh:// target (over the SSH session that the
 * VM's monitor uses: SFTP when the host offers it, else its shell through
 * an exec channel). The engine holds a struct host and never learns which
 * kind it is; cli/ and batch choose it from the target (host_new).
 *
 * Every operation runs on the caller's libev loop and never blocks it: it
 * starts, and its callback runs once, later, from the loop (never from
 * inside the call that started it), with err NULL on success. The struct
 * host_op it returns is valid until its callback returns or until
 * host_op_cancel; a callback must not cancel its own operation. Paths are
 * the host's. Nothing a host answers is trusted beyond what it is: bytes
 * read from a file, an exit status, a stderr line (raw: escape it before it
 * reaches a terminal).
 */
#ifndef LM_HOST_H
#define LM_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "../common/lm-error.h"

struct ev_loop;
struct tr_opts;
struct host;
struct host_op;

/* What a path is on the host, told without following a final symlink. */
enum host_file_kind {
	HOST_FILE_NONE,    /* no such file */
	HOST_FILE_REGULAR,
	HOST_FILE_BLOCK,   /* a block device */
	HOST_FILE_SYMLINK,
	HOST_FILE_OTHER,   /* a directory, socket, fifo, character device */
};

/*
 * The host of the VM whose monitor is at target: for "ssh://..." that host
 * (opts as for tr_new_ex: loop, identities, known_hosts, timeout; copied),
 * else this machine (opts->loop only). The session is the monitor's when
 * one is open on the loop, else one is made for each operation. NULL with
 * err (USAGE, NOMEM).
 */
struct host *host_new(const char *target, const struct tr_opts *opts, struct lm_error *err);
/* This machine as a host, on loop. NULL with err (NOMEM). */
struct host *host_new_local(struct ev_loop *loop, struct lm_error *err);
/* Cancel what still runs (no callback) and free; NULL is fine. */
void host_free(struct host *h);
/* Where the host is, for messages: NULL for this machine, else "HOST". */
const char *host_where(const struct host *h);

/* What host_look found: the path's kind and, for a regular file or a
 * block device, its first bytes (borrowed for the callback; never NULL). */
struct host_file {
	enum host_file_kind kind;
	const unsigned char *head;
	size_t len;
};
typedef void host_look_cb(void *arg, const struct host_file *f, const struct lm_error *err);
/* Look at path: its kind, and up to head of its first bytes (0: none).
 * err: IO (refused, e.g. permission denied), UNSUPPORTED (a remote host
 * that offers neither SFTP nor a shell), TIMEOUT, EOF (session lost). */
struct host_op *host_look(struct host *h, const char *path, size_t head, host_look_cb *cb,
			  void *arg);

/* The same, but a final symlink that leads to a block device is followed
 * (kind HOST_FILE_BLOCK, its bytes read through it): how logical volumes
 * are named (/dev/VG/LV). A symlink to anything else stays a symlink. */
struct host_op *host_look_device(struct host *h, const char *path, size_t head,
				 host_look_cb *cb, void *arg);

/* One entry of a directory, as host_list found it: its name (no
 * directory part) and kind (a symlink not followed). */
struct host_dirent {
	const char *name;
	enum host_file_kind kind;
};
typedef void host_list_cb(void *arg, const struct host_dirent *ents, size_t n,
			  const struct lm_error *err);
/* List the directory dir: every entry but "." and "..", in no order (ents
 * borrowed for the callback; names are raw bytes from the host). At most
 * HOST_LIST_MAX bytes of names are kept: past them the listing fails.
 * err: IO (no such directory, not a directory, refused), UNSUPPORTED,
 * TIMEOUT, EOF as host_look's. */
#define HOST_LIST_MAX (4u << 20)
struct host_op *host_list(struct host *h, const char *dir, host_list_cb *cb, void *arg);

typedef void host_done_cb(void *arg, const struct lm_error *err);
/* Remove path (a symlink itself, never its target); gone already is
 * success. Errors as host_look's. */
struct host_op *host_remove(struct host *h, const char *path, host_done_cb *cb, void *arg);

/* How a program ended. */
struct host_run_result {
	int status;        /* its exit status; -1 when it did not exit (signal) */
	const char *out;   /* its stdout, NUL-terminated (at most HOST_RUN_OUT_MAX
			      bytes kept) */
	size_t outlen;
	const char *err_last; /* the last non-empty line of its stderr, raw, "" if none */
};
#define HOST_RUN_OUT_MAX 65536
typedef void host_run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err);
/*
 * Run argv[0] (looked up in PATH) with argv[1..] (NULL-terminated) on the
 * host, stdin empty, for at most timeout seconds. Over ssh the words are
 * quoted for the host's POSIX shell, which runs it. The callback has r when
 * the program ran to its end (any exit status: the caller judges it), or
 * err: TIMEOUT (it was stopped: SIGKILL here, SIGTERM over ssh), IO (it
 * could not start), UNSUPPORTED (the host runs no command for us), EOF.
 */
struct host_op *host_run(struct host *h, const char *const *argv, double timeout,
			 host_run_cb *cb, void *arg);

/* The size in bytes of the block device at path (a symlink to one is
 * followed) as the host's kernel has it now, waiting on the loop (other
 * watchers run meanwhile). -1 with err: IO (not a block device, or not
 * readable), UNSUPPORTED (a remote host that runs no command for us),
 * TIMEOUT, EOF. */
int64_t host_device_size_wait(struct host *h, const char *path, struct lm_error *err);

/*
 * As host_run, for a program that must not outlive this process (a daemon
 * started for one command, with a long timeout): here it gets SIGTERM when
 * livemerge ends, however it ends, SIGKILL included (PR_SET_PDEATHSIG);
 * over ssh the end of its channel (livemerge gone and its connection with
 * it) makes the host's shell send it SIGTERM, as on a cancel.
 */
struct host_op *host_run_tied(struct host *h, const char *const *argv, double timeout,
			      host_run_cb *cb, void *arg);

/* Stop an operation that has not called back yet; it never will. A
 * program still running is stopped as on a timeout. */
void host_op_cancel(struct host_op *op);

/*
 * For code that waits anyway (recovery, one-shot verbs): run the loop
 * until the operation ends. Other watchers of the loop run meanwhile.
 * host_look_wait copies up to len bytes into buf: the count (with *kind),
 * or -1 with err. host_remove_wait: 0 or -1 with err.
 */
long host_look_wait(struct host *h, const char *path, void *buf, size_t len,
		    enum host_file_kind *kind, struct lm_error *err);
int host_remove_wait(struct host *h, const char *path, struct lm_error *err);
/* host_run_wait: 0 with the program's exit status in *status and the start
 * of its stdout in out (len bytes at most, NUL-terminated), or -1 with err. */
int host_run_wait(struct host *h, const char *const *argv, double timeout, int *status,
		  char *out, size_t len, struct lm_error *err);

#endif

/*
 * host/host-int.h: the insides of host/, shared by its files only (not
 * installed). host.c owns operations (made, completed, cancelled, freed);
 * host-local.c and host-ssh.c carry them out, each for its kind of host.
 */
#ifndef LM_HOST_INT_H
#define LM_HOST_INT_H

#include <ev.h>
#include <sys/types.h>

#include "../transport/transport.h"
#include "host.h"

enum host_op_type { HOP_LOOK, HOP_REMOVE, HOP_RUN, HOP_LIST };

/* HOP_LIST's op->buf: one record per entry, its kind's letter (r b l o)
 * then its name and a NUL; each kind fills it so, host.c reads it. */

struct host_op {
	struct host *h;
	struct host_op *next; /* in h->ops */
	enum host_op_type type;
	char *path;  /* LOOK, REMOVE, LIST */
	size_t head; /* LOOK: bytes wanted */
	int follow;  /* LOOK: a final symlink to a block device is followed */
	char **argv; /* RUN */
	int tied;    /* RUN: the program ends with this process (host_run_tied) */
	double timeout;
	host_look_cb *look_cb;
	host_done_cb *done_cb;
	host_list_cb *list_cb;
	host_run_cb *run_cb;
	void *arg;
	int orphan; /* cancelled, a child not reaped yet: no callback, freed when reaped */

	/* the outcome */
	int failed;
	struct lm_error err;
	enum host_file_kind kind;
	unsigned char *buf; /* LOOK: head bytes; RUN: stdout */
	size_t len, cap;
	int status;
	char errtail[512];
	size_t errlen;

	/* the doing (host-local.c, host-ssh.c) */
	ev_timer start;   /* starts the work from the loop */
	ev_timer limit;   /* the time limit */
	ev_timer reap;    /* a local child's exit, polled (a loop of its own) */
	ev_child child;   /* a local child's exit (the default loop reaps them all) */
	int exited;       /* the local child was reaped: status set */
	ev_io io, io2;    /* a local child's stdout and stderr; an ssh channel's fd */
	pid_t pid;
	int out_fd, err_fd;
	struct tr *t;
	int stage;     /* host-ssh.c: 0 sftp, 1 exec */
	int connected; /* host-ssh.c: tr_connect returned 0 */
	char tail[32]; /* host-ssh.c: the last bytes of an exec's stdout */
	size_t taillen;
};

struct host_impl {
	void (*start)(struct host_op *op); /* from op->start's callback */
	void (*stop)(struct host_op *op);  /* cancel or time out: release what runs */
	void (*free)(struct host *h);
};

struct host {
	const struct host_impl *impl;
	struct ev_loop *loop;
	struct host_op *ops;
	/* ssh: */
	char *target;
	char *where;
	struct tr_opts opts; /* identities and known_hosts owned */
	int no_sftp, no_exec;
	void *impl_data; /* another kind's own (tests/fakehost.c) */
};

/* host.c */
/* End op: its callback runs, then it is freed. */
void host_op_finish(struct host_op *op);
/* Free op, no callback (an orphan once its child is reaped). */
void host_op_free(struct host_op *op);
/* End op with an error. */
void host_op_failf(struct host_op *op, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Append n bytes of stdout/head to op->buf, keeping at most max. 0, -1 (memory). */
int host_op_keep(struct host_op *op, const void *b, size_t n, size_t max);
/* Append one HOP_LIST record (kind letter, name). 0; -1 with op failed
 * (past HOST_LIST_MAX, or no memory): the caller stops. */
int host_op_list_add(struct host_op *op, char kind, const char *name);
/* Append n bytes of b to the NUL-terminated tail (*len of cap-1 bytes at
 * most), keeping the last ones. */
void host_tail_keep(char *tail, size_t *len, size_t cap, const char *b, size_t n);
/* Keep the last bytes of a program's stderr. */
void host_op_errtail(struct host_op *op, const char *b, size_t n);

/* host-local.c */
extern const struct host_impl host_local_impl;
/* host-ssh.c */
extern const struct host_impl host_ssh_impl;
int host_ssh_init(struct host *h, const char *target, const struct tr_opts *opts,
		  struct lm_error *err);

#endif

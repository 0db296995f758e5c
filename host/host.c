/*
 * host/host: what every host does alike: operations made, started from the
 * loop, timed, ended exactly once, cancelled; the choice of the kind of
 * host by target. The kinds carry the operations out: host-local.c on this
 * machine, host-ssh.c over an SSH session.
 */
#include "host-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct host *host_new(const char *target, const struct tr_opts *opts, struct lm_error *err)
{
	struct host *h;

	if (opts == NULL || opts->loop == NULL) {
		lm_error_set(err, LM_ERR_USAGE, "a host needs an event loop");
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	h->loop = opts->loop;
	if (target != NULL && strncmp(target, "ssh://", 6) == 0) {
		h->impl = &host_ssh_impl;
		if (host_ssh_init(h, target, opts, err) < 0) {
			host_free(h);
			return NULL;
		}
	} else {
		h->impl = &host_local_impl;
	}
	return h;
}

struct host *host_new_local(struct ev_loop *loop, struct lm_error *err)
{
	struct tr_opts o = { .loop = loop };

	return host_new(NULL, &o, err);
}

const char *host_where(const struct host *h)
{
	return h != NULL ? h->where : NULL;
}

/* ------------------------------------------------------------ operations */

static void op_unlink(struct host_op *op)
{
	struct host_op **pp;

	for (pp = &op->h->ops; *pp != NULL; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			break;
		}
}

void host_op_free(struct host_op *op)
{
	char **a;

	op_unlink(op);
	ev_timer_stop(op->h->loop, &op->start);
	ev_timer_stop(op->h->loop, &op->limit);
	ev_timer_stop(op->h->loop, &op->reap);
	if (ev_is_active(&op->child))
		ev_child_stop(op->h->loop, &op->child);
	ev_io_stop(op->h->loop, &op->io);
	ev_io_stop(op->h->loop, &op->io2);
	free(op->path);
	for (a = op->argv; a != NULL && *a != NULL; a++)
		free(*a);
	free(op->argv);
	free(op->buf);
	free(op);
}

/* The last non-empty line of what a program wrote to stderr. */
static const char *op_err_last(struct host_op *op)
{
	char *e = op->errtail, *end, *start;

	op->errtail[op->errlen] = '\0';
	end = e + op->errlen;
	while (end > e && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		*--end = '\0';
	start = end;
	while (start > e && start[-1] != '\n')
		start--;
	return start;
}

/* The kind a HOP_LIST record's letter names, or HOST_FILE_NONE. */
static enum host_file_kind op_list_kind(char c)
{
	return c == 'r' ? HOST_FILE_REGULAR
	       : c == 'b' ? HOST_FILE_BLOCK
	       : c == 'l' ? HOST_FILE_SYMLINK
	       : c == 'o' ? HOST_FILE_OTHER
			  : HOST_FILE_NONE;
}

/* Call a listing's callback with the records of op->buf, each checked:
 * the host's answer is not trusted to be well formed. */
static void op_list_finish(struct host_op *op, const struct lm_error *err)
{
	struct host_dirent *ents = NULL;
	struct lm_error bad;
	size_t n = 0, cap = 0, off = 0;

	while (err == NULL && off < op->len) {
		const char *rec = (const char *)op->buf + off;
		size_t rlen = strnlen(rec, op->len - off);
		enum host_file_kind kind = op_list_kind(rec[0]);

		if (off + rlen == op->len || rlen < 2 || kind == HOST_FILE_NONE ||
		    memchr(rec + 1, '/', rlen - 1) != NULL || strcmp(rec + 1, ".") == 0 ||
		    strcmp(rec + 1, "..") == 0) {
			lm_error_set(&bad, LM_ERR_IO, "cannot list %s%s%s: the host answered what "
				     "it should not", op->path, op->h->where ? " on " : "",
				     op->h->where ? op->h->where : "");
			err = &bad;
			break;
		}
		if (n == cap) {
			struct host_dirent *ne;

			cap = cap ? 2 * cap : 64;
			if ((ne = realloc(ents, cap * sizeof(*ents))) == NULL) {
				lm_error_set(&bad, LM_ERR_NOMEM, "out of memory");
				err = &bad;
				break;
			}
			ents = ne;
		}
		ents[n].name = rec + 1;
		ents[n].kind = kind;
		n++;
		off += rlen + 1;
	}
	if (err != NULL)
		op->list_cb(op->arg, NULL, 0, err);
	else
		op->list_cb(op->arg, ents != NULL ? ents : (struct host_dirent *)"", n, NULL);
	free(ents);
}

int host_op_list_add(struct host_op *op, char kind, const char *name)
{
	size_t len = strlen(name) + 2;

	if (op->len + len > HOST_LIST_MAX) {
		host_op_failf(op, LM_ERR_IO, "cannot list %s: more than %u bytes of names",
			      op->path, HOST_LIST_MAX);
		return -1;
	}
	if (host_op_keep(op, &kind, 1, HOST_LIST_MAX) < 0 ||
	    host_op_keep(op, name, len - 1, HOST_LIST_MAX) < 0) {
		host_op_failf(op, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	return 0;
}

void host_op_finish(struct host_op *op)
{
	struct lm_error *err = op->failed ? &op->err : NULL;

	ev_timer_stop(op->h->loop, &op->limit);
	op->h->impl->stop(op);
	if (op->type == HOP_LOOK) {
		struct host_file f = { op->kind, op->buf != NULL ? op->buf : (const unsigned char *)"",
				       op->len };

		op->look_cb(op->arg, err == NULL ? &f : NULL, err);
	} else if (op->type == HOP_REMOVE) {
		op->done_cb(op->arg, err);
	} else if (op->type == HOP_LIST) {
		op_list_finish(op, err);
	} else {
		struct host_run_result r = { op->status, op->buf != NULL ? (char *)op->buf : "",
					     op->len, op_err_last(op) };

		op->run_cb(op->arg, err == NULL ? &r : NULL, err);
	}
	if (!op->orphan) /* else freed by its kind once its child is reaped */
		host_op_free(op);
}

void host_op_failf(struct host_op *op, enum lm_err_code code, const char *fmt, ...)
{
	char msg[sizeof(op->err.msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&op->err, code, "%s", msg);
	op->failed = 1;
	host_op_finish(op);
}

int host_op_keep(struct host_op *op, const void *b, size_t n, size_t max)
{
	if (op->len + n > max)
		n = max - op->len;
	if (n == 0)
		return 0;
	if (op->len + n + 1 > op->cap) {
		size_t cap = op->cap ? op->cap : 4096;
		unsigned char *nb;

		while (cap < op->len + n + 1)
			cap *= 2;
		if ((nb = realloc(op->buf, cap)) == NULL)
			return -1;
		op->buf = nb;
		op->cap = cap;
	}
	memcpy(op->buf + op->len, b, n);
	op->len += n;
	op->buf[op->len] = '\0';
	return 0;
}

void host_tail_keep(char *tail, size_t *len, size_t cap, const char *b, size_t n)
{
	size_t keep = cap - 1;

	if (n >= keep) {
		memcpy(tail, b + n - keep, keep);
		*len = keep;
	} else {
		if (*len + n > keep) {
			size_t drop = *len + n - keep;

			memmove(tail, tail + drop, *len - drop);
			*len -= drop;
		}
		memcpy(tail + *len, b, n);
		*len += n;
	}
	tail[*len] = '\0';
}

void host_op_errtail(struct host_op *op, const char *b, size_t n)
{
	host_tail_keep(op->errtail, &op->errlen, sizeof(op->errtail), b, n);
}

static void op_start_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct host_op *op = w->data;

	(void)loop;
	(void)revents;
	op->h->impl->start(op);
}

static void op_limit_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct host_op *op = w->data;

	(void)loop;
	(void)revents;
	if (op->type == HOP_RUN)
		host_op_failf(op, LM_ERR_TIMEOUT, "%s%s%s: no end within %g s: stopped", op->argv[0],
			      op->h->where ? " on " : "", op->h->where ? op->h->where : "",
			      op->timeout);
	else
		host_op_failf(op, LM_ERR_TIMEOUT, "%s%s%s: no answer within %g s", op->path,
			      op->h->where ? " on " : "", op->h->where ? op->h->where : "",
			      op->timeout);
}

/* A new operation of h, started from the loop at once. NULL: no memory. */
static struct host_op *op_new(struct host *h, enum host_op_type type, double timeout, void *arg)
{
	struct host_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->h = h;
	op->type = type;
	op->arg = arg;
	op->pid = -1;
	op->out_fd = op->err_fd = -1;
	op->timeout = timeout > 0 ? timeout : 60;
	ev_timer_init(&op->start, op_start_cb, 0., 0.);
	op->start.data = op;
	ev_timer_init(&op->limit, op_limit_cb, op->timeout, 0.);
	op->limit.data = op;
	op->next = h->ops;
	h->ops = op;
	return op;
}

static void op_go(struct host_op *op)
{
	ev_timer_start(op->h->loop, &op->start);
	ev_timer_start(op->h->loop, &op->limit);
}

/* How long a file operation may take: the session's timeout, doubled for
 * a connect on the way. */
static double h_file_timeout(const struct host *h)
{
	return h->opts.timeout > 0 ? 2 * h->opts.timeout : 30;
}

/* A new operation of h on path, not started yet. NULL: no memory. */
static struct host_op *op_new_path(struct host *h, enum host_op_type type, const char *path,
				   void *arg)
{
	struct host_op *op = op_new(h, type, h_file_timeout(h), arg);

	if (op == NULL || (op->path = strdup(path)) == NULL) {
		if (op != NULL)
			host_op_free(op);
		return NULL;
	}
	return op;
}

struct host_op *host_look(struct host *h, const char *path, size_t head, host_look_cb *cb,
			  void *arg)
{
	struct host_op *op = op_new_path(h, HOP_LOOK, path, arg);

	if (op == NULL)
		return NULL;
	op->head = head;
	op->look_cb = cb;
	op_go(op);
	return op;
}

struct host_op *host_look_device(struct host *h, const char *path, size_t head,
				 host_look_cb *cb, void *arg)
{
	struct host_op *op = host_look(h, path, head, cb, arg);

	if (op != NULL)
		op->follow = 1;
	return op;
}

struct host_op *host_list(struct host *h, const char *dir, host_list_cb *cb, void *arg)
{
	struct host_op *op = op_new_path(h, HOP_LIST, dir, arg);

	if (op == NULL)
		return NULL;
	op->list_cb = cb;
	op_go(op);
	return op;
}

struct host_op *host_remove(struct host *h, const char *path, host_done_cb *cb, void *arg)
{
	struct host_op *op = op_new_path(h, HOP_REMOVE, path, arg);

	if (op == NULL)
		return NULL;
	op->done_cb = cb;
	op_go(op);
	return op;
}

static struct host_op *run_new(struct host *h, const char *const *argv, double timeout,
			       int tied, host_run_cb *cb, void *arg)
{
	struct host_op *op = op_new(h, HOP_RUN, timeout, arg);
	size_t n = 0, i;

	if (op == NULL)
		return NULL;
	while (argv[n] != NULL)
		n++;
	if (n == 0 || (op->argv = calloc(n + 1, sizeof(char *))) == NULL) {
		host_op_free(op);
		return NULL;
	}
	for (i = 0; i < n; i++)
		if ((op->argv[i] = strdup(argv[i])) == NULL) {
			host_op_free(op);
			return NULL;
		}
	op->run_cb = cb;
	op->tied = tied;
	op_go(op);
	return op;
}

struct host_op *host_run(struct host *h, const char *const *argv, double timeout,
			 host_run_cb *cb, void *arg)
{
	return run_new(h, argv, timeout, 0, cb, arg);
}

struct host_op *host_run_tied(struct host *h, const char *const *argv, double timeout,
			      host_run_cb *cb, void *arg)
{
	return run_new(h, argv, timeout, 1, cb, arg);
}

void host_op_cancel(struct host_op *op)
{
	if (op == NULL)
		return;
	ev_timer_stop(op->h->loop, &op->limit);
	op->h->impl->stop(op);
	if (!op->orphan)
		host_op_free(op);
}

/* Free op whatever it is doing (the host goes away). */
void host_free(struct host *h)
{
	if (h == NULL)
		return;
	while (h->ops != NULL) {
		struct host_op *op = h->ops;

		ev_timer_stop(h->loop, &op->limit);
		op->h->impl->stop(op);
		host_op_free(op); /* an orphan's child is left to init */
	}
	if (h->impl != NULL && h->impl->free != NULL)
		h->impl->free(h);
	free(h);
}

/* ------------------------------------------------------------ waiting */

struct waiter {
	int done;
	struct lm_error err;
	int failed;
	enum host_file_kind kind;
	void *buf;
	size_t len;
	int status; /* a program's */
};

static void wait_done_cb(void *arg, const struct lm_error *err)
{
	struct waiter *w = arg;

	w->done = 1;
	if (err != NULL) {
		w->failed = 1;
		w->err = *err;
	}
}

static void wait_look_cb(void *arg, const struct host_file *f, const struct lm_error *err)
{
	struct waiter *w = arg;

	wait_done_cb(arg, err);
	if (err != NULL)
		return;
	w->kind = f->kind;
	if (w->len > f->len)
		w->len = f->len;
	memcpy(w->buf, f->head, w->len);
}

static void wait_run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct waiter *w = arg;

	wait_done_cb(arg, err);
	if (err != NULL)
		return;
	w->status = r->status;
	if (w->len > r->outlen + 1)
		w->len = r->outlen + 1;
	if (w->len > 0) {
		memcpy(w->buf, r->out, w->len - 1);
		((char *)w->buf)[w->len - 1] = '\0';
	}
}

static int wait_for(struct host *h, struct host_op *op, struct waiter *w, struct lm_error *err)
{
	if (op == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	while (!w->done)
		ev_run(h->loop, EVRUN_ONCE);
	if (w->failed) {
		if (err != NULL)
			*err = w->err;
		return -1;
	}
	return 0;
}

long host_look_wait(struct host *h, const char *path, void *buf, size_t len,
		    enum host_file_kind *kind, struct lm_error *err)
{
	struct waiter w = { .buf = buf, .len = len };

	if (wait_for(h, host_look(h, path, len, wait_look_cb, &w), &w, err) < 0)
		return -1;
	*kind = w.kind;
	return (long)w.len;
}

int host_remove_wait(struct host *h, const char *path, struct lm_error *err)
{
	struct waiter w = { 0 };

	return wait_for(h, host_remove(h, path, wait_done_cb, &w), &w, err);
}

int host_run_wait(struct host *h, const char *const *argv, double timeout, int *status,
		  char *out, size_t len, struct lm_error *err)
{
	struct waiter w = { .buf = out, .len = len };

	if (wait_for(h, host_run(h, argv, timeout, wait_run_cb, &w), &w, err) < 0)
		return -1;
	*status = w.status;
	return 0;
}

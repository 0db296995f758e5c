/*
 * host/host-ssh: the host of an ssh:// target, reached through the SSH
 * session its monitor channel uses (transport/ssh-*.c shares one session
 * per host and loop). Files: an SFTP exchange when the host has the sftp
 * subsystem, else a few POSIX shell words on an exec channel; programs: an
 * exec channel. Each runs on the loop like the monitor's channel.
 *
 * What the host refuses is asked once: no sftp subsystem (a hardened
 * sshd_config), no shell of ours (ForceCommand). Every command starts by
 * printing a marker, so a ForceCommand that runs something else is told
 * apart from a shell of ours that failed. A program run for us ends with
 * a trailer carrying its exit status; while it runs, a watcher reads the
 * channel's stdin, whose end (our close, on a time limit or a cancel)
 * makes it send the program SIGTERM.
 */
#include "host-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXEC_MARK "LM1\n"
#define EXEC_END "\nLMX "

int host_ssh_init(struct host *h, const char *target, const struct tr_opts *opts,
		  struct lm_error *err)
{
	struct tr_ssh_target tg;
	char **ids = NULL;
	int i = 0;

	if (tr_ssh_target_parse(target, &tg, err) < 0)
		return -1;
	if (tg.port == 22)
		h->where = strdup(tg.host);
	else if (asprintf(&h->where, "[%s]:%d", tg.host, tg.port) < 0)
		h->where = NULL;
	tr_ssh_target_clear(&tg);
	h->opts = *opts;
	h->opts.identities = NULL;
	h->opts.known_hosts = NULL;
	h->target = strdup(target);
	if (opts->nidentities > 0 &&
	    (ids = calloc((size_t)opts->nidentities, sizeof(char *))) != NULL) {
		for (i = 0; i < opts->nidentities; i++)
			if ((ids[i] = strdup(opts->identities[i])) == NULL)
				break;
		h->opts.identities = (const char *const *)ids;
	}
	if (opts->known_hosts != NULL)
		h->opts.known_hosts = strdup(opts->known_hosts);
	if (h->where == NULL || h->target == NULL ||
	    (opts->nidentities > 0 && (ids == NULL || i < opts->nidentities)) ||
	    (opts->known_hosts != NULL && h->opts.known_hosts == NULL))
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	return 0;
}

static void ssh_free(struct host *h)
{
	int i = 0;

	for (i = 0; h->opts.identities != NULL && i < h->opts.nidentities; i++)
		free((char *)h->opts.identities[i]);
	free((void *)h->opts.identities);
	free((char *)h->opts.known_hosts);
	free(h->target);
	free(h->where);
}

/* path as one single-quoted shell word (a ' becomes '\''); owned, or NULL. */
static char *sh_quote(const char *s)
{
	size_t n = 3, i, k = 0;
	char *q;

	for (i = 0; s[i]; i++)
		n += s[i] == '\'' ? 4 : 1;
	if ((q = malloc(n)) == NULL)
		return NULL;
	q[k++] = '\'';
	for (i = 0; s[i]; i++) {
		if (s[i] == '\'') {
			memcpy(q + k, "'\\''", 4);
			k += 4;
		} else {
			q[k++] = s[i];
		}
	}
	q[k++] = '\'';
	q[k] = '\0';
	return q;
}

/* The shell words of op (owned), or NULL (out of memory). */
static char *ssh_command(const struct host_op *op)
{
	char *q = NULL, *cmd = NULL, *words = NULL;
	size_t i, n = 0;
	int r = -1;

	if (op->type != HOP_RUN) {
		if ((q = sh_quote(op->path)) == NULL)
			return NULL;
		if (op->type == HOP_LIST)
			/* one record per entry: kind letter, name, NUL (names may hold a newline) */
			r = asprintf(&cmd, "printf 'LM1\\n'; if [ -d %s ]; then echo d; for f in %s/* "
				     "%s/.[!.]* %s/..?*; do if [ -L \"$f\" ]; then t=l; elif [ -f "
				     "\"$f\" ]; then t=r; elif [ -b \"$f\" ]; then t=b; elif [ -e "
				     "\"$f\" ]; then t=o; else continue; fi; printf '%%s%%s\\000' "
				     "\"$t\" \"${f##*/}\"; done; else echo n; fi", q, q, q, q);
		else if (op->type == HOP_REMOVE)
			r = asprintf(&cmd, "printf 'LM1\\n'; rm -f -- %s && echo 0 || echo 1", q);
		else if (op->follow)
			/* test -b follows a symlink: a volume's name is its device */
			r = asprintf(&cmd, "printf 'LM1\\n'; if [ -b %s ]; then echo b; elif [ -L %s ]; "
				     "then echo l; elif [ -f %s ]; then echo r; elif [ -e %s ]; then "
				     "echo o; else echo n; fi; if [ -b %s ] || { [ ! -L %s ] && "
				     "[ -f %s ]; }; then head -c %zu < %s; fi", q, q, q, q, q, q, q,
				     op->head, q);
		else if (op->head == 0)
			r = asprintf(&cmd, "printf 'LM1\\n'; if [ -L %s ]; then echo l; elif [ -f %s ]; "
				     "then echo r; elif [ -b %s ]; then echo b; elif [ -e %s ]; then "
				     "echo o; else echo n; fi", q, q, q, q);
		else
			r = asprintf(&cmd, "printf 'LM1\\n'; if [ -L %s ]; then echo l; elif [ -f %s ]; "
				     "then echo r; elif [ -b %s ]; then echo b; elif [ -e %s ]; then "
				     "echo o; else echo n; fi; if [ ! -L %s ] && { [ -f %s ] || "
				     "[ -b %s ]; }; then head -c %zu < %s; fi", q, q, q, q, q, q, q,
				     op->head, q);
		free(q);
		return r < 0 ? NULL : cmd;
	}
	for (i = 0; op->argv[i] != NULL; i++) {
		char *nw;

		if ((q = sh_quote(op->argv[i])) == NULL ||
		    (nw = realloc(words, n + strlen(q) + 2)) == NULL) {
			free(q);
			free(words);
			return NULL;
		}
		words = nw;
		memcpy(words + n, q, strlen(q));
		n += strlen(q);
		words[n++] = ' ';
		words[n] = '\0';
		free(q);
	}
	/* the program in the background, its stdin empty; a watcher on the
	 * channel's stdin stops it when we close; the trailer has its status */
	r = asprintf(&cmd, "printf 'LM1\\n'; exec 3<&0 </dev/null; %s3<&- & p=$!; "
		     "{ read x <&3; kill $p; } 2>/dev/null & w=$!; wait $p; s=$?; "
		     "kill $w 2>/dev/null; printf '\\nLMX %%d\\n' \"$s\"", words);
	free(words);
	return r < 0 ? NULL : cmd;
}

static const char *op_verb(const struct host_op *op)
{
	return op->type == HOP_REMOVE ? "delete"
	       : op->type == HOP_LOOK ? "read"
	       : op->type == HOP_LIST ? "list"
				      : "run";
}

static const char *op_what(const struct host_op *op)
{
	return op->type == HOP_RUN ? op->argv[0] : op->path;
}

static void ssh_stop(struct host_op *op)
{
	ev_io_stop(op->h->loop, &op->io);
	tr_free(op->t);
	op->t = NULL;
}

static void ssh_begin(struct host_op *op);

/* Watch the channel's fd as the transport wants. */
static void ssh_watch(struct host_op *op)
{
	int fd = tr_fd(op->t), want = tr_want(op->t), ev = 0;

	ev_io_stop(op->h->loop, &op->io);
	if (fd < 0)
		return; /* the wake comes */
	if (want & TR_WANT_READ)
		ev |= EV_READ;
	if (want & TR_WANT_WRITE)
		ev |= EV_WRITE;
	ev_io_set(&op->io, fd, ev ? ev : EV_READ);
	ev_io_start(op->h->loop, &op->io);
}

/* The channel failed: fall back from SFTP to the shell, or end. */
static void ssh_failed(struct host_op *op, const struct lm_error *e)
{
	struct host *h = op->h;

	if (e->code == LM_ERR_UNSUPPORTED && op->stage == 0) {
		h->no_sftp = 1;
		ssh_stop(op);
		op->stage = 1;
		return ssh_begin(op);
	}
	if (e->code == LM_ERR_UNSUPPORTED)
		h->no_exec = 1;
	if (h->no_exec)
		return host_op_failf(op, LM_ERR_UNSUPPORTED, "cannot %s %s on %s: the host offers %s"
				     "no exec channel running a shell", op_verb(op), op_what(op),
				     h->where, op->type == HOP_RUN ? "" : "neither SFTP nor ");
	op->err = *e;
	op->failed = 1;
	host_op_finish(op);
}

/* An SFTP exchange ended. */
static void sftp_done(struct host_op *op)
{
	size_t len;
	char type;
	const void *b = tr_ssh_sftp_result(op->t, &type, &len);

	if (op->type == HOP_LIST) {
		if (type != 'd')
			return host_op_failf(op, LM_ERR_IO, "cannot list %s on %s: no such directory",
					     op->path, op->h->where);
		if (len > 0 && host_op_keep(op, b, len, HOST_LIST_MAX) < 0)
			return host_op_failf(op, LM_ERR_NOMEM, "out of memory");
		return host_op_finish(op);
	}
	op->kind = type == 'r'	 ? HOST_FILE_REGULAR
		   : type == 'b' ? HOST_FILE_BLOCK
		   : type == 'l' ? HOST_FILE_SYMLINK
		   : type == 'o' ? HOST_FILE_OTHER
				 : HOST_FILE_NONE;
	if (len > 0 && host_op_keep(op, b, len, op->head) < 0)
		return host_op_failf(op, LM_ERR_NOMEM, "out of memory");
	host_op_finish(op);
}

/* The shell's answer to a file operation. */
static void exec_file_done(struct host_op *op)
{
	const char *o = (const char *)op->buf;
	size_t n = op->len;

	if (n < 2 || o[1] != '\n' ||
	    strchr(op->type == HOP_LOOK ? "lrbon" : op->type == HOP_LIST ? "dn" : "01", o[0]) ==
		    NULL ||
	    o[0] == '\0')
		return host_op_failf(op, LM_ERR_IO, "cannot %s %s on %s: the host's shell answered "
				     "what it should not", op_verb(op), op->path, op->h->where);
	if (op->type == HOP_LIST) {
		if (o[0] == 'n')
			return host_op_failf(op, LM_ERR_IO, "cannot list %s on %s: no such directory",
					     op->path, op->h->where);
		if (n - 2 > HOST_LIST_MAX)
			return host_op_failf(op, LM_ERR_IO, "cannot list %s on %s: more than %u "
					     "bytes of names", op->path, op->h->where, HOST_LIST_MAX);
		op->len = n - 2;
		memmove(op->buf, op->buf + 2, op->len);
		return host_op_finish(op);
	}
	if (op->type == HOP_REMOVE) {
		if (o[0] == '0')
			return host_op_finish(op);
		return host_op_failf(op, LM_ERR_IO, "cannot delete %s on %s: rm failed", op->path,
				     op->h->where);
	}
	op->kind = o[0] == 'l'	 ? HOST_FILE_SYMLINK
		   : o[0] == 'r' ? HOST_FILE_REGULAR
		   : o[0] == 'b' ? HOST_FILE_BLOCK
		   : o[0] == 'o' ? HOST_FILE_OTHER
				 : HOST_FILE_NONE;
	op->len = n - 2 < op->head ? n - 2 : op->head;
	memmove(op->buf, op->buf + 2, op->len);
	host_op_finish(op);
}

/* A program's stdout ended: its status from the trailer. */
static void exec_run_done(struct host_op *op)
{
	char *t, *end;
	long st;

	t = strstr(op->tail, EXEC_END);
	while (t != NULL && strstr(t + 1, EXEC_END) != NULL)
		t = strstr(t + 1, EXEC_END);
	if (t == NULL || (st = strtol(t + sizeof(EXEC_END) - 1, &end, 10)) < 0 || st > 255 ||
	    *end != '\n' || end[1] != '\0')
		return host_op_failf(op, LM_ERR_IO, "%s on %s: the host's shell ended without its "
				     "exit status (killed?)", op->argv[0], op->h->where);
	op->status = (int)st;
	/* the trailer off the kept stdout, when it was kept */
	if (op->len >= strlen(t) && memcmp(op->buf + op->len - strlen(t), t, strlen(t)) == 0)
		op->len -= strlen(t);
	op->buf[op->len] = '\0';
	host_op_finish(op);
}

/* The stream of an exec channel ended. */
static void exec_done(struct host_op *op)
{
	size_t m = sizeof(EXEC_MARK) - 1;

	if (op->len < m || memcmp(op->buf, EXEC_MARK, m) != 0) {
		struct lm_error e;

		/* something ran, but not our shell words */
		lm_error_set(&e, LM_ERR_UNSUPPORTED, "no shell of ours");
		return ssh_failed(op, &e);
	}
	op->len -= m;
	memmove(op->buf, op->buf + m, op->len);
	op->buf[op->len] = '\0';
	if (op->type == HOP_RUN)
		return exec_run_done(op);
	exec_file_done(op);
}

/* Keep n bytes of an exec's stdout. */
static int exec_keep(struct host_op *op, const char *b, size_t n)
{
	size_t max = op->type == HOP_RUN    ? HOST_RUN_OUT_MAX + sizeof(EXEC_MARK)
		     : op->type == HOP_LOOK ? op->head + 8
		     : op->type == HOP_LIST ? (size_t)HOST_LIST_MAX + 8
					    : 64;

	host_tail_keep(op->tail, &op->taillen, sizeof(op->tail), b, n);
	return host_op_keep(op, b, n, max);
}

/* Everything the channel lets us do now. */
static void ssh_step(struct host_op *op)
{
	struct lm_error e;
	char buf[8192];
	ssize_t n;
	int r;

	if (!op->connected) {
		r = tr_connect(op->t, &e);
		if (r < 0)
			return ssh_failed(op, &e);
		if (r > 0)
			return ssh_watch(op);
		op->connected = 1;
		if (op->stage == 0)
			return sftp_done(op);
	}
	for (;;) {
		n = tr_read(op->t, buf, sizeof(buf), &e);
		if (n == TR_AGAIN)
			return ssh_watch(op);
		if (n < 0)
			return ssh_failed(op, &e);
		if (n == 0)
			break;
		if (exec_keep(op, buf, (size_t)n) < 0)
			return host_op_failf(op, LM_ERR_NOMEM, "out of memory");
	}
	host_op_errtail(op, tr_ssh_exec_stderr(op->t), strlen(tr_ssh_exec_stderr(op->t)));
	exec_done(op);
}

static void ssh_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	ssh_step(w->data);
}

/* The transport has bytes for us: step from the loop, not from inside it. */
static void ssh_wake(void *arg)
{
	struct host_op *op = arg;

	ev_feed_event(op->h->loop, &op->io, EV_READ);
}

/* Start op's channel: SFTP (stage 0) or the shell (stage 1). */
static void ssh_begin(struct host_op *op)
{
	struct host *h = op->h;
	struct lm_error e;
	char *cmd;

	op->connected = 0;
	op->len = op->taillen = 0;
	if (op->stage == 0 && (op->type == HOP_RUN || h->no_sftp))
		op->stage = 1;
	if (op->stage == 1 && h->no_exec) {
		lm_error_set(&e, LM_ERR_UNSUPPORTED, "no shell");
		return ssh_failed(op, &e);
	}
	if (op->stage == 0) {
		op->t = tr_ssh_sftp_new(h->target, &h->opts,
					op->type == HOP_REMOVE ? TR_SFTP_REMOVE
					: op->type == HOP_LIST ? TR_SFTP_LIST
					: op->follow	       ? TR_SFTP_LOOK_DEVICE
							       : TR_SFTP_LOOK,
					op->path, op->type == HOP_LIST ? HOST_LIST_MAX : op->head,
					&e);
	} else {
		if ((cmd = ssh_command(op)) == NULL)
			return host_op_failf(op, LM_ERR_NOMEM, "out of memory");
		op->t = tr_ssh_exec_new(h->target, &h->opts, cmd, &e);
		free(cmd);
	}
	if (op->t == NULL) {
		op->err = e;
		op->failed = 1;
		return host_op_finish(op);
	}
	op->t->wake = ssh_wake;
	op->t->wake_arg = op;
	ev_init(&op->io, ssh_io_cb);
	op->io.data = op;
	ssh_step(op);
}

static void ssh_start(struct host_op *op)
{
	op->stage = 0;
	ssh_begin(op);
}

const struct host_impl host_ssh_impl = {
	.start = ssh_start,
	.stop = ssh_stop,
	.free = ssh_free,
};

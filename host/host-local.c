/*
 * host/host-local: this machine as the VM's host. Files: lstat, open
 * without following a final symlink (checked to be the file lstat saw),
 * pread, unlink, a directory read whole; each is short, made from the loop. A
 * program: fork and exec in a process group of its own (a tied one also
 * with PR_SET_PDEATHSIG, so it ends with us), stdout and stderr
 * read from pipes on the loop, its exit polled; on its time limit the
 * group is killed.
 */
#include "host-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REAP_POLL_S 0.005

static enum host_file_kind local_kind(mode_t m)
{
	if (S_ISREG(m))
		return HOST_FILE_REGULAR;
	if (S_ISBLK(m))
		return HOST_FILE_BLOCK;
	if (S_ISLNK(m))
		return HOST_FILE_SYMLINK;
	return HOST_FILE_OTHER;
}

static void local_look(struct host_op *op)
{
	struct stat st, fst;
	ssize_t n;
	int fd;

	if (lstat(op->path, &st) < 0) {
		if (errno != ENOENT)
			return host_op_failf(op, LM_ERR_IO, "cannot check %s: %s", op->path,
					     strerror(errno));
		op->kind = HOST_FILE_NONE;
		return host_op_finish(op);
	}
	op->kind = local_kind(st.st_mode);
	if (op->kind == HOST_FILE_SYMLINK && op->follow && stat(op->path, &fst) == 0 &&
	    S_ISBLK(fst.st_mode)) {
		st = fst; /* a volume's name (/dev/VG/LV): the device itself */
		op->kind = HOST_FILE_BLOCK;
	} else if (op->kind == HOST_FILE_SYMLINK) {
		op->follow = 0;
	}
	if ((op->kind != HOST_FILE_REGULAR && op->kind != HOST_FILE_BLOCK) || op->head == 0)
		return host_op_finish(op);
	if ((op->buf = malloc(op->head + 1)) == NULL)
		return host_op_failf(op, LM_ERR_NOMEM, "out of memory");
	op->cap = op->head + 1;
	fd = open(op->path, O_RDONLY | (op->follow ? 0 : O_NOFOLLOW) | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return host_op_failf(op, LM_ERR_IO, "cannot read %s: %s", op->path,
				     strerror(errno));
	/* the path may have been swapped between lstat and open */
	if (fstat(fd, &fst) < 0 || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
		close(fd);
		return host_op_failf(op, LM_ERR_IO, "cannot read %s: it changed while being opened",
				     op->path);
	}
	while (op->len < op->head) {
		n = pread(fd, op->buf + op->len, op->head - op->len, (off_t)op->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			close(fd);
			return host_op_failf(op, LM_ERR_IO, "cannot read %s: %s", op->path,
					     strerror(e));
		}
		if (n == 0)
			break;
		op->len += (size_t)n;
	}
	close(fd);
	host_op_finish(op);
}

static void local_list(struct host_op *op)
{
	static const char letter[] = { [HOST_FILE_REGULAR] = 'r', [HOST_FILE_BLOCK] = 'b',
				       [HOST_FILE_SYMLINK] = 'l', [HOST_FILE_OTHER] = 'o' };
	struct dirent *de;
	DIR *d = opendir(op->path);

	if (d == NULL)
		return host_op_failf(op, LM_ERR_IO, "cannot list %s: %s", op->path,
				     strerror(errno));
	while ((errno = 0, de = readdir(d)) != NULL) {
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		if (host_op_list_add(op, letter[local_kind(st.st_mode)], de->d_name) < 0) {
			closedir(d);
			return; /* op ended */
		}
	}
	if (errno != 0) {
		int e = errno;

		closedir(d);
		return host_op_failf(op, LM_ERR_IO, "cannot list %s: %s", op->path, strerror(e));
	}
	closedir(d);
	host_op_finish(op);
}

static void local_remove(struct host_op *op)
{
	if (unlink(op->path) == 0 || errno == ENOENT)
		return host_op_finish(op);
	host_op_failf(op, LM_ERR_IO, "cannot delete %s: %s", op->path, strerror(errno));
}

/* ------------------------------------------------------------ programs */

static void run_close(struct host_op *op, int which)
{
	ev_io *w = which == 0 ? &op->io : &op->io2;
	int *fd = which == 0 ? &op->out_fd : &op->err_fd;

	ev_io_stop(op->h->loop, w);
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The child's exit status, from waitpid's. */
static void run_exited(struct host_op *op, int st)
{
	op->pid = -1;
	op->exited = 1;
	op->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	ev_timer_stop(op->h->loop, &op->reap);
	if (ev_is_active(&op->child))
		ev_child_stop(op->h->loop, &op->child);
}

/* Has the child exited (polled, on a loop of its own)? */
static int run_reaped(struct host_op *op)
{
	int st = 0;
	pid_t r;

	if (op->exited)
		return 1;
	if (ev_is_active(&op->child))
		return 0; /* the default loop reaps it and tells op->child */
	do
		r = waitpid(op->pid, &st, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return 0;
	run_exited(op, r < 0 ? -1 : st);
	return 1;
}

/* The child exited and its pipes ended: the operation ends (an orphan is
 * freed). */
static void run_maybe_done(struct host_op *op)
{
	if (!op->exited || op->out_fd >= 0 || op->err_fd >= 0)
		return;
	if (op->orphan)
		host_op_free(op);
	else if (op->status == 127 && op->len == 0 && op->errlen == 0)
		host_op_failf(op, LM_ERR_IO, "cannot run %s", op->argv[0]);
	else
		host_op_finish(op);
}

static void run_reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct host_op *op = w->data;

	(void)loop;
	(void)revents;
	if (run_reaped(op))
		run_maybe_done(op);
}

static void run_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct host_op *op = w->data;

	(void)loop;
	(void)revents;
	run_exited(op, w->rstatus);
	run_maybe_done(op);
}

/* Both pipes ended: wait for the exit. */
static void run_outputs_done(struct host_op *op)
{
	if (op->out_fd >= 0 || op->err_fd >= 0)
		return;
	if (op->exited || ev_is_active(&op->child))
		return run_maybe_done(op);
	ev_timer_set(&op->reap, 0., REAP_POLL_S);
	ev_timer_start(op->h->loop, &op->reap);
}

static void run_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct host_op *op = w->data;
	int which = w == &op->io ? 0 : 1;
	int fd = which == 0 ? op->out_fd : op->err_fd;
	char buf[4096];
	ssize_t n;

	(void)loop;
	(void)revents;
	n = read(fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		run_close(op, which);
		run_outputs_done(op);
		return;
	}
	if (which == 1)
		host_op_errtail(op, buf, (size_t)n);
	else if (host_op_keep(op, buf, (size_t)n, HOST_RUN_OUT_MAX) < 0)
		host_op_failf(op, LM_ERR_NOMEM, "out of memory");
}

static void local_run(struct host_op *op)
{
	int out[2] = { -1, -1 }, errp[2] = { -1, -1 }, null;
	pid_t pid, parent = getpid();

	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		int e = errno;

		if (out[0] >= 0) {
			close(out[0]);
			close(out[1]);
		}
		return host_op_failf(op, LM_ERR_IO, "cannot run %s: %s", op->argv[0], strerror(e));
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setpgid(0, 0);
		/* tied: SIGTERM when we end (the group is its own, so a signal to
		 * ours would miss it); we may have ended before the prctl */
		if (op->tied && (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent))
			_exit(126);
		null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, 0);
		dup2(out[1], 1);
		dup2(errp[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execvp(op->argv[0], op->argv);
		_exit(127);
	}
	close(out[1]);
	close(errp[1]);
	if (pid < 0) {
		int e = errno;

		close(out[0]);
		close(errp[0]);
		return host_op_failf(op, LM_ERR_IO, "cannot run %s: %s", op->argv[0], strerror(e));
	}
	setpgid(pid, pid); /* both sides: no race with the kill */
	op->pid = pid;
	op->out_fd = out[0];
	op->err_fd = errp[0];
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(errp[0], F_SETFL, O_NONBLOCK);
	ev_io_init(&op->io, run_io_cb, out[0], EV_READ);
	op->io.data = op;
	ev_io_init(&op->io2, run_io_cb, errp[0], EV_READ);
	op->io2.data = op;
	ev_init(&op->reap, run_reap_cb);
	op->reap.data = op;
	if (ev_is_default_loop(op->h->loop)) {
		/* its SIGCHLD handler reaps every child: ask it for ours */
		ev_child_init(&op->child, run_child_cb, pid, 0);
		op->child.data = op;
		ev_child_start(op->h->loop, &op->child);
	}
	ev_io_start(op->h->loop, &op->io);
	ev_io_start(op->h->loop, &op->io2);
}

static void local_start(struct host_op *op)
{
	switch (op->type) {
	case HOP_LOOK:
		local_look(op);
		break;
	case HOP_REMOVE:
		local_remove(op);
		break;
	case HOP_LIST:
		local_list(op);
		break;
	default:
		local_run(op);
		break;
	}
}

/* Release what runs: pipes closed, a child still running killed with its
 * group; one not reaped at once makes op an orphan, freed when it is. */
static void local_stop(struct host_op *op)
{
	if (op->type != HOP_RUN)
		return;
	run_close(op, 0);
	run_close(op, 1);
	if (op->pid <= 0)
		return;
	kill(-op->pid, SIGKILL);
	if (run_reaped(op))
		return;
	op->orphan = 1;
	if (!ev_is_active(&op->child)) {
		ev_timer_set(&op->reap, REAP_POLL_S, REAP_POLL_S);
		ev_timer_start(op->h->loop, &op->reap);
	}
}

const struct host_impl host_local_impl = {
	.start = local_start,
	.stop = local_stop,
};

/*
 * test-host: this machine as a VM's host (host/host-local.c): files looked
 * at and removed, programs run with a time limit, every operation ending
 * once, from the loop, or never after a cancel. Real files in a temporary
 * directory and real programs (sh, sleep, head).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "../host/host.h"
#include "../transport/transport.h"

struct fix {
	struct ev_loop *loop;
	struct host *h;
	char dir[64];
};

struct seen {
	int calls;
	int started; /* the starting call has returned */
	int failed;
	struct lm_error err;
	enum host_file_kind kind;
	char head[256];
	size_t len;
	int status;
	char out[256];
	size_t outlen;
	char err_last[256];
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int setup_loop(void **state, struct ev_loop *loop)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct tr_opts o = { 0 };
	struct lm_error err;

	f->loop = loop;
	o.loop = f->loop;
	f->h = host_new("/run/qmp.sock", &o, &err);
	assert_non_null(f->h);
	assert_null(host_where(f->h));
	snprintf(f->dir, sizeof(f->dir), "/tmp/lm-host-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

/* A loop of its own: the host polls its children's exits. */
static int setup(void **state)
{
	return setup_loop(state, ev_loop_new(0));
}

/* The default loop reaps every child itself (SIGCHLD): the host asks it. */
static int setup_default(void **state)
{
	return setup_loop(state, EV_DEFAULT);
}

static int teardown(void **state)
{
	struct fix *f = *state;
	char cmd[128];

	host_free(f->h);
	if (!ev_is_default_loop(f->loop))
		ev_loop_destroy(f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static const char *in(struct fix *f, const char *name)
{
	static char p[4][128];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", f->dir, name);
	return p[k];
}

static void write_file(const char *path, const char *bytes)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(bytes, fp);
	fclose(fp);
}

static void look_cb(void *arg, const struct host_file *hf, const struct lm_error *err)
{
	struct seen *s = arg;

	assert_true(s->started); /* never from inside host_look */
	s->calls++;
	if (err != NULL) {
		s->failed = 1;
		s->err = *err;
		return;
	}
	s->kind = hf->kind;
	s->len = hf->len < sizeof(s->head) ? hf->len : sizeof(s->head);
	memcpy(s->head, hf->head, s->len);
}

static void done_cb(void *arg, const struct lm_error *err)
{
	struct seen *s = arg;

	assert_true(s->started);
	s->calls++;
	if (err != NULL) {
		s->failed = 1;
		s->err = *err;
	}
}

static void run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct seen *s = arg;

	assert_true(s->started);
	s->calls++;
	if (err != NULL) {
		s->failed = 1;
		s->err = *err;
		return;
	}
	s->status = r->status;
	s->outlen = r->outlen;
	snprintf(s->out, sizeof(s->out), "%s", r->out);
	snprintf(s->err_last, sizeof(s->err_last), "%s", r->err_last);
}

/* Run the loop until s has its callback (or limit s pass). */
static void wait_seen(struct fix *f, struct seen *s, double limit)
{
	double end = now() + limit;

	while (s->calls == 0 && now() < end)
		ev_run(f->loop, EVRUN_ONCE);
}

/* Run the loop for a while (a cancelled operation must stay silent). */
static void spin(struct fix *f, double secs)
{
	double end = now() + secs;

	while (now() < end) {
		ev_run(f->loop, EVRUN_NOWAIT);
		usleep(2000);
	}
}

/* Does pid run (a zombie nobody reaped does not)? */
static int alive(pid_t pid)
{
	char path[64], st[256];
	FILE *fp;
	char *p;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	if (fgets(st, sizeof(st), fp) != NULL && (p = strrchr(st, ')')) != NULL)
		r = p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
	fclose(fp);
	return r;
}

static void look(struct fix *f, const char *path, size_t head, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	assert_non_null(host_look(f->h, path, head, look_cb, s));
	s->started = 1;
	wait_seen(f, s, 5);
	assert_int_equal(s->calls, 1);
}

static void test_look(void **state)
{
	struct fix *f = *state;
	struct seen s;

	write_file(in(f, "img"), "QFI\xfb and more");
	look(f, in(f, "img"), 4, &s);
	assert_false(s.failed);
	assert_int_equal(s.kind, HOST_FILE_REGULAR);
	assert_int_equal(s.len, 4);
	assert_memory_equal(s.head, "QFI\xfb", 4);

	look(f, in(f, "img"), 0, &s); /* only the kind */
	assert_int_equal(s.kind, HOST_FILE_REGULAR);
	assert_int_equal(s.len, 0);

	look(f, in(f, "img"), 200, &s); /* shorter than asked: what there is */
	assert_int_equal(s.len, strlen("QFI\xfb and more"));

	look(f, in(f, "missing"), 16, &s);
	assert_false(s.failed);
	assert_int_equal(s.kind, HOST_FILE_NONE);

	/* a symlink is what it is, never what it names */
	assert_int_equal(symlink(in(f, "img"), in(f, "link")), 0);
	look(f, in(f, "link"), 16, &s);
	assert_int_equal(s.kind, HOST_FILE_SYMLINK);
	assert_int_equal(s.len, 0);

	look(f, f->dir, 16, &s);
	assert_int_equal(s.kind, HOST_FILE_OTHER);
	look(f, "/dev/null", 16, &s);
	assert_int_equal(s.kind, HOST_FILE_OTHER);
}

struct listed {
	int calls, started, failed;
	struct lm_error err;
	char names[8][64];
	enum host_file_kind kinds[8];
	size_t n;
};

static void list_cb(void *arg, const struct host_dirent *ents, size_t n, const struct lm_error *err)
{
	struct listed *l = arg;
	size_t i;

	assert_true(l->started); /* from the loop, never from inside host_list */
	l->calls++;
	if (err != NULL) {
		l->failed = 1;
		l->err = *err;
		assert_null(ents);
		return;
	}
	assert_non_null(ents);
	for (i = 0; i < n && i < 8; i++) {
		snprintf(l->names[i], sizeof(l->names[i]), "%s", ents[i].name);
		l->kinds[i] = ents[i].kind;
	}
	l->n = n;
}

static void list(struct fix *f, const char *dir, struct listed *l)
{
	double end = now() + 5;

	memset(l, 0, sizeof(*l));
	assert_non_null(host_list(f->h, dir, list_cb, l));
	l->started = 1;
	while (l->calls == 0 && now() < end)
		ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(l->calls, 1);
}

/* The kind listed for name, or -1 when it is not listed. */
static int listed_kind(const struct listed *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return (int)l->kinds[i];
	return -1;
}

static void test_list(void **state)
{
	struct fix *f = *state;
	struct listed l;

	assert_int_equal(mkdir(in(f, "d"), 0700), 0);
	list(f, in(f, "d"), &l); /* empty: no "." or ".." */
	assert_false(l.failed);
	assert_int_equal(l.n, 0);

	write_file(in(f, "d/a.qcow2"), "QFI\xfb");
	write_file(in(f, "d/.hidden"), "x");
	write_file(in(f, "d/new\nline"), "x");
	assert_int_equal(symlink("/dev/null", in(f, "d/ln")), 0);
	assert_int_equal(symlink(in(f, "nowhere"), in(f, "d/dangling")), 0);
	assert_int_equal(mkdir(in(f, "d/sub"), 0700), 0);
	list(f, in(f, "d"), &l);
	assert_false(l.failed);
	assert_int_equal(l.n, 6);
	assert_int_equal(listed_kind(&l, "a.qcow2"), HOST_FILE_REGULAR);
	assert_int_equal(listed_kind(&l, ".hidden"), HOST_FILE_REGULAR);
	assert_int_equal(listed_kind(&l, "new\nline"), HOST_FILE_REGULAR);
	assert_int_equal(listed_kind(&l, "ln"), HOST_FILE_SYMLINK); /* never followed */
	assert_int_equal(listed_kind(&l, "dangling"), HOST_FILE_SYMLINK);
	assert_int_equal(listed_kind(&l, "sub"), HOST_FILE_OTHER);

	list(f, "/dev", &l); /* a directory bigger than the test keeps */
	assert_false(l.failed);
	assert_true(l.n > 8);

	list(f, in(f, "missing"), &l);
	assert_true(l.failed);
	assert_int_equal(l.err.code, LM_ERR_IO);
	assert_non_null(strstr(l.err.msg, "cannot list"));
	list(f, in(f, "d/a.qcow2"), &l); /* not a directory */
	assert_true(l.failed);
	assert_int_equal(l.err.code, LM_ERR_IO);
}

static void test_look_refused(void **state)
{
	struct fix *f = *state;
	struct seen s;

	if (geteuid() == 0) {
		/* root reads anything: a path through a file is refused instead */
		write_file(in(f, "plain"), "x");
		look(f, in(f, "plain/below"), 16, &s);
	} else {
		write_file(in(f, "secret"), "x");
		assert_int_equal(chmod(in(f, "secret"), 0), 0);
		look(f, in(f, "secret"), 16, &s);
	}
	assert_true(s.failed);
	assert_int_equal(s.err.code, LM_ERR_IO);
	assert_non_null(strstr(s.err.msg, "cannot"));
}

static void test_remove(void **state)
{
	struct fix *f = *state;
	struct seen s = { 0 };
	struct stat st;
	struct lm_error err;

	write_file(in(f, "gone"), "x");
	assert_non_null(host_remove(f->h, in(f, "gone"), done_cb, &s));
	s.started = 1;
	wait_seen(f, &s, 5);
	assert_int_equal(s.calls, 1);
	assert_false(s.failed);
	assert_int_equal(lstat(in(f, "gone"), &st), -1);

	/* gone already: success */
	assert_int_equal(host_remove_wait(f->h, in(f, "gone"), &err), 0);

	/* a symlink goes, what it names stays */
	write_file(in(f, "kept"), "x");
	assert_int_equal(symlink(in(f, "kept"), in(f, "ln")), 0);
	assert_int_equal(host_remove_wait(f->h, in(f, "ln"), &err), 0);
	assert_int_equal(lstat(in(f, "ln"), &st), -1);
	assert_int_equal(lstat(in(f, "kept"), &st), 0);

	/* a directory is refused */
	assert_int_equal(mkdir(in(f, "d"), 0700), 0);
	assert_int_equal(host_remove_wait(f->h, in(f, "d"), &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
	assert_int_equal(lstat(in(f, "d"), &st), 0);
}

static void test_look_wait(void **state)
{
	struct fix *f = *state;
	struct lm_error err;
	enum host_file_kind k;
	char buf[8];

	write_file(in(f, "w"), "abcdefghij");
	assert_int_equal(host_look_wait(f->h, in(f, "w"), buf, sizeof(buf), &k, &err), 8);
	assert_int_equal(k, HOST_FILE_REGULAR);
	assert_memory_equal(buf, "abcdefgh", 8);
	assert_int_equal(host_look_wait(f->h, in(f, "nope"), buf, sizeof(buf), &k, &err), 0);
	assert_int_equal(k, HOST_FILE_NONE);
}

static void run(struct fix *f, const char *const *argv, double limit, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	assert_non_null(host_run(f->h, argv, limit, run_cb, s));
	s->started = 1;
	wait_seen(f, s, limit + 5);
	assert_int_equal(s->calls, 1);
}

static void test_run(void **state)
{
	struct fix *f = *state;
	struct seen s;
	const char *prog[] = { "sh", "-c",
			       "echo out; echo first >&2; printf 'last line\\n\\n' >&2; exit 3",
			       NULL };
	const char *quiet[] = { "true", NULL };
	const char *words[] = { "printf", "%s|", "a b", "it's", "$HOME", NULL };

	run(f, prog, 5, &s);
	assert_false(s.failed);
	assert_int_equal(s.status, 3);
	assert_string_equal(s.out, "out\n");
	assert_string_equal(s.err_last, "last line");

	run(f, quiet, 5, &s);
	assert_false(s.failed);
	assert_int_equal(s.status, 0);
	assert_int_equal(s.outlen, 0);
	assert_string_equal(s.err_last, "");

	/* arguments reach the program as they are, no shell between */
	run(f, words, 5, &s);
	assert_int_equal(s.status, 0);
	assert_string_equal(s.out, "a b|it's|$HOME|");
}

static void test_run_missing(void **state)
{
	struct fix *f = *state;
	struct seen s;
	const char *argv[] = { "/nonexistent/volume-cmd", "create", NULL };

	run(f, argv, 5, &s);
	assert_true(s.failed);
	assert_int_equal(s.err.code, LM_ERR_IO);
	assert_non_null(strstr(s.err.msg, "/nonexistent/volume-cmd"));
}

static void test_run_big_output(void **state)
{
	struct fix *f = *state;
	struct seen s;
	const char *argv[] = { "head", "-c", "300000", "/dev/zero", NULL };

	run(f, argv, 10, &s);
	assert_false(s.failed);
	assert_int_equal(s.status, 0);
	assert_int_equal(s.outlen, HOST_RUN_OUT_MAX);
}

/* The pid a test program wrote, once it is there. */
static pid_t read_pid(struct fix *f, const char *file)
{
	double end = now() + 5;
	FILE *fp;
	int pid = 0;

	while (now() < end) {
		ev_run(f->loop, EVRUN_NOWAIT);
		if ((fp = fopen(file, "r")) != NULL) {
			if (fscanf(fp, "%d", &pid) == 1) {
				fclose(fp);
				return pid;
			}
			fclose(fp);
		}
		usleep(5000);
	}
	return 0;
}

static void test_run_timeout(void **state)
{
	struct fix *f = *state;
	struct seen s;
	char script[256];
	const char *argv[] = { "sh", "-c", script, NULL };
	double t0;
	pid_t pid;

	/* the program and a child of its own: the time limit kills both */
	snprintf(script, sizeof(script), "sleep 30 & echo $! > %s; exec sleep 30", in(f, "pid"));
	t0 = now();
	run(f, argv, 0.3, &s);
	assert_true(now() - t0 < 3);
	assert_true(s.failed);
	assert_int_equal(s.err.code, LM_ERR_TIMEOUT);
	assert_non_null(strstr(s.err.msg, "no end within 0.3 s"));
	pid = read_pid(f, in(f, "pid"));
	assert_true(pid > 0);
	spin(f, 0.2);
	assert_false(alive(pid)); /* the program's own child is gone too */
}

static void test_cancel(void **state)
{
	struct fix *f = *state;
	struct seen s = { 0 };
	char script[256];
	const char *argv[] = { "sh", "-c", script, NULL };
	struct host_op *op;
	pid_t pid;

	snprintf(script, sizeof(script), "echo $$ > %s; exec sleep 30", in(f, "cpid"));
	op = host_run(f->h, argv, 30, run_cb, &s);
	assert_non_null(op);
	s.started = 1;
	pid = read_pid(f, in(f, "cpid"));
	assert_true(pid > 0);
	host_op_cancel(op);
	spin(f, 0.3);
	assert_int_equal(s.calls, 0);
	assert_false(alive(pid));

	/* a file operation cancelled before it ran: never runs */
	write_file(in(f, "stay"), "x");
	op = host_remove(f->h, in(f, "stay"), done_cb, &s);
	host_op_cancel(op);
	spin(f, 0.05);
	assert_int_equal(s.calls, 0);
	assert_int_equal(access(in(f, "stay"), F_OK), 0);
}

static void test_free_pending(void **state)
{
	struct fix *f = *state;
	struct seen s = { 0 };
	const char *argv[] = { "sleep", "30", NULL };

	/* freeing the host with work in flight: no callback, nothing leaks */
	assert_non_null(host_run(f->h, argv, 30, run_cb, &s));
	assert_non_null(host_look(f->h, "/", 0, look_cb, &s));
	s.started = 1;
	ev_run(f->loop, EVRUN_NOWAIT);
	host_free(f->h);
	f->h = NULL;
	spin(f, 0.05);
	assert_int_equal(s.calls <= 1, 1); /* the look may have ended first */
}

static void test_run_wait(void **state)
{
	struct fix *f = *state;
	const char *prog[] = { "printf", "abcdef", NULL };
	const char *missing[] = { "/nonexistent/lm-no-such-program", NULL };
	struct lm_error err;
	char out[4];
	int st = -2;

	assert_int_equal(host_run_wait(f->h, prog, 5, &st, out, sizeof(out), &err), 0);
	assert_int_equal(st, 0);
	assert_string_equal(out, "abc"); /* cut to fit, NUL-terminated */
	assert_int_equal(host_run_wait(f->h, prog, 5, &st, NULL, 0, &err), 0);
	assert_int_equal(host_run_wait(f->h, missing, 5, &st, out, sizeof(out), &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
}

/* 1 while pid runs (a zombie does not). */
static int running(pid_t pid)
{
	char path[64], stat[256], *p;
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	n = fread(stat, 1, sizeof(stat) - 1, fp);
	fclose(fp);
	stat[n] = '\0';
	p = strrchr(stat, ')');
	return p != NULL && p[1] == ' ' && p[2] != 'Z';
}

/*
 * A process that starts `sleep` through the host layer (tied or not) and is
 * then SIGKILLed: the pid of its sleep, which is then checked. The process
 * is a child of ours with a loop of its own.
 */
static pid_t sleep_of_killed(struct fix *f, int tied)
{
	const char *argv[] = { "sh", "-c", "echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 30",
			       NULL };
	char path[128], buf[32];
	pid_t child, pid = 0;
	FILE *fp;
	int i;

	snprintf(path, sizeof(path), "%s/pid", f->dir);
	unlink(path);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
		struct host *h;
		struct lm_error err;

		if (chdir(f->dir) < 0 || loop == NULL || (h = host_new_local(loop, &err)) == NULL ||
		    (tied ? host_run_tied : host_run)(h, argv, 60, run_cb, NULL) == NULL)
			_exit(1);
		for (;;)
			ev_run(loop, EVRUN_ONCE);
	}
	for (i = 0; i < 500 && pid == 0; i++) {
		if ((fp = fopen(path, "r")) != NULL) {
			if (fgets(buf, sizeof(buf), fp) != NULL)
				pid = (pid_t)atoi(buf);
			fclose(fp);
		}
		if (pid == 0)
			usleep(10000);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	assert_true(pid > 0);
	return pid;
}

static void test_run_tied(void **state)
{
	struct fix *f = *state;
	pid_t pid;
	int i;

	/* tied: it ends with the process that started it, SIGKILL and all */
	pid = sleep_of_killed(f, 1);
	for (i = 0; i < 200 && running(pid); i++)
		usleep(10000);
	if (running(pid)) {
		kill(pid, SIGKILL);
		fail_msg("a tied program outlived the process that started it");
	}
	/* not tied: it runs on (in its own process group), as a time-limited command may */
	pid = sleep_of_killed(f, 0);
	usleep(300000);
	assert_true(running(pid));
	kill(pid, SIGKILL);
}

static void test_new_bad(void **state)
{
	struct lm_error err;
	struct tr_opts o = { 0 };

	(void)state;
	assert_null(host_new("ssh://h/x", NULL, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	o.loop = EV_DEFAULT;
	assert_null(host_new("ssh://", &o, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_look, setup, teardown),
		cmocka_unit_test_setup_teardown(test_look_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_look_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_big_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run, setup_default, teardown),
		cmocka_unit_test_setup_teardown(test_run_missing, setup_default, teardown),
		cmocka_unit_test_setup_teardown(test_run_timeout, setup_default, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup_default, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup_default, teardown),
		cmocka_unit_test_setup_teardown(test_run_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_tied, setup, teardown),
		cmocka_unit_test(test_new_bad),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

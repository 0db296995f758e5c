/*
 * test-ssh-target: ssh:// targets taken apart (tr_ssh_target_parse) and
 * made into transports (tr_new_ex) without touching the network; malformed
 * ones refused with LM_ERR_USAGE and a message naming what was written.
 * Then the connect steps that fail before SSH proper, against local
 * listeners on the loopback (nothing listening, not an SSH server, a server
 * that never speaks), driven by a libev loop as qmp/conn drives them. The
 * rest (a real sshd) is integration/test-ssh.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../transport/transport.h"

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

struct good {
	const char *target, *user, *host;
	int port;
	const char *path;
};

static void test_parse_good(void **state)
{
	static const struct good cases[] = {
		{ "ssh://host7/run/vm42/qmp.sock", NULL, "host7", 22, "/run/vm42/qmp.sock" },
		{ "ssh://root@host7/run/vm42/qmp.sock", "root", "host7", 22, "/run/vm42/qmp.sock" },
		{ "ssh://admin@10.0.0.5:2222/q", "admin", "10.0.0.5", 2222, "/q" },
		{ "ssh://h:1/x", NULL, "h", 1, "/x" },
		{ "ssh://h:65535/x", NULL, "h", 65535, "/x" },
		{ "ssh://[::1]/run/qmp", NULL, "::1", 22, "/run/qmp" },
		{ "ssh://u@[fe80::1%eth0]:2200/a/b", "u", "fe80::1%eth0", 2200, "/a/b" },
		/* the last '@' ends the user, as OpenSSH reads it */
		{ "ssh://a@b@host/p", "a@b", "host", 22, "/p" },
		/* the path is everything from the first '/', '@' and ':' included */
		{ "ssh://host/dir@x/y:z.sock", NULL, "host", 22, "/dir@x/y:z.sock" },
		{ "ssh://host//double", NULL, "host", 22, "//double" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct good *g = &cases[i];
		struct tr_ssh_target tg;
		struct lm_error err;

		lm_error_clear(&err);
		if (tr_ssh_target_parse(g->target, &tg, &err) != 0)
			fail_msg("'%s' refused: %s", g->target, err.msg);
		if (g->user == NULL)
			assert_null(tg.user);
		else
			assert_string_equal(tg.user, g->user);
		assert_string_equal(tg.host, g->host);
		assert_int_equal(tg.port, g->port);
		assert_string_equal(tg.path, g->path);
		tr_ssh_target_clear(&tg);
		assert_null(tg.host);
	}
}

static void test_parse_bad(void **state)
{
	static const char *bad[] = {
		"ssh://",
		"ssh:///run/qmp",          /* no host */
		"ssh://host",              /* no path */
		"ssh://host/",             /* empty path */
		"ssh://@host/p",           /* empty user */
		"ssh://user@/p",           /* empty host */
		"ssh://user@:22/p",        /* empty host, with a port */
		"ssh://host:/p",           /* empty port */
		"ssh://host:0/p",
		"ssh://host:65536/p",
		"ssh://host:22x/p",
		"ssh://host:-1/p",
		"ssh://host:+22/p",
		"ssh://host: 22/p",
		"ssh://::1/p",             /* IPv6 without brackets */
		"ssh://[::1/p",            /* unclosed bracket */
		"ssh://[]/p",              /* empty brackets */
		"ssh://[::1]x/p",          /* text after the bracket */
		"ssh://[::1]:/p",
		"ssh://ho st/p",           /* a blank in the host */
		"ssh:/host/p",             /* not ssh:// at all */
		"sh://host/p",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tr_ssh_target tg;
		struct lm_error err;

		lm_error_clear(&err);
		if (tr_ssh_target_parse(bad[i], &tg, &err) == 0) {
			tr_ssh_target_clear(&tg);
			fail_msg("'%s' was accepted", bad[i]);
		}
		if (err.code != LM_ERR_USAGE)
			fail_msg("'%s': code %s: %s", bad[i], lm_error_code_name(err.code), err.msg);
		assert_contains(err.msg, bad[i]);
		assert_null(tg.host);
		assert_null(tg.user);
		assert_null(tg.path);
	}
}

static void test_parse_long_path(void **state)
{
	char target[256], path[200];
	struct tr_ssh_target tg;
	struct lm_error err;

	(void)state;
	/* a remote sun_path holds 107 bytes and a NUL */
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[107] = '\0';
	snprintf(target, sizeof(target), "ssh://h%s", path);
	assert_int_equal(tr_ssh_target_parse(target, &tg, &err), 0);
	tr_ssh_target_clear(&tg);
	path[107] = 'a';
	path[108] = '\0';
	snprintf(target, sizeof(target), "ssh://h%s", path);
	assert_int_equal(tr_ssh_target_parse(target, &tg, &err), -1);
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "longer than 107");
}

/* Bad targets are refused by tr_new_ex as well, before any I/O. */
static void test_new_ex_bad(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tr_opts o = { .loop = loop };
	struct lm_error err;

	(void)state;
	assert_null(tr_new_ex("ssh://host:99999/p", &o, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "ssh://host:99999/p");
	assert_null(tr_new_ex("ssh://host", &o, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	/* without a loop: a usage error that says why, also through tr_new */
	assert_null(tr_new_ex("ssh://host/p", NULL, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "event loop");
	assert_null(tr_new("ssh://host/p", &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "event loop");
	ev_loop_destroy(loop);
}

/* Good targets make transports; no connection until tr_connect. */
static void test_new_ex_good(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	const char *ids[] = { "/nonexistent/key" };
	struct tr_opts o = { .loop = loop, .identities = ids, .nidentities = 1,
			     .known_hosts = "/nonexistent/known_hosts", .timeout = 3 };
	struct lm_error err;
	struct tr *a, *b, *c, *u;

	(void)state;
	a = tr_new_ex("ssh://root@192.0.2.1:2222/run/a.qmp", &o, &err);
	assert_non_null(a);
	assert_string_equal(a->desc, "ssh://root@192.0.2.1:2222/run/a.qmp");
	assert_string_equal(a->ops->scheme, "ssh");
	assert_int_equal(tr_fd(a), -1); /* nothing opened yet */
	/* a second channel to the same place, and one elsewhere */
	b = tr_new_ex("ssh://root@192.0.2.1:2222/run/b.qmp", &o, &err);
	assert_non_null(b);
	c = tr_new_ex("ssh://other@192.0.2.1:2222/run/a.qmp", &o, &err);
	assert_non_null(c);
	/* unix and tcp go through tr_new */
	u = tr_new_ex("unix:/run/x.qmp", &o, &err);
	assert_non_null(u);
	assert_string_equal(u->ops->scheme, "unix");
	tr_free(b);
	tr_free(a);
	tr_free(c);
	tr_free(u);
	ev_loop_destroy(loop);
}

/* A loopback TCP listener; *port set. */
static int listener(int *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

struct drive {
	struct ev_loop *loop;
	struct tr *t;
	ev_io io;
	ev_io server_io; /* the listener, accepting */
	ev_timer watchdog;
	int result; /* 1 while connecting */
	struct lm_error err;
	const char *say; /* what the server sends after accept, then closes; NULL: silent */
	int peer;
};

static void drive_arm(struct drive *d)
{
	int w = tr_want(d->t), ev = 0;

	ev |= (w & TR_WANT_READ) ? EV_READ : 0;
	ev |= (w & TR_WANT_WRITE) ? EV_WRITE : 0;
	ev_io_stop(d->loop, &d->io);
	ev_io_set(&d->io, tr_fd(d->t), ev);
	ev_io_start(d->loop, &d->io);
}

static void drive_step(struct drive *d)
{
	d->result = tr_connect(d->t, &d->err);
	if (d->result == 1)
		drive_arm(d);
	else
		ev_break(d->loop, EVBREAK_ALL);
}

static void drive_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct drive *d = w->data;

	(void)loop;
	(void)revents;
	drive_step(d);
}

static void drive_server_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct drive *d = w->data;

	(void)revents;
	ev_io_stop(loop, w);
	d->peer = accept(w->fd, NULL, NULL);
	assert_true(d->peer >= 0);
	if (d->say != NULL) {
		assert_true(write(d->peer, d->say, strlen(d->say)) > 0);
		close(d->peer);
		d->peer = -1;
	}
}

static void drive_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	fail_msg("connect did not end within 10 s");
}

/* Connect t to the end; the result and error land in d. */
static void drive(struct drive *d, struct ev_loop *loop, struct tr *t, int server, const char *say)
{
	d->loop = loop;
	d->t = t;
	d->say = say;
	d->peer = -1;
	ev_init(&d->io, drive_io_cb);
	d->io.data = d;
	ev_io_init(&d->server_io, drive_server_cb, server, EV_READ);
	d->server_io.data = d;
	if (server >= 0)
		ev_io_start(loop, &d->server_io);
	ev_timer_init(&d->watchdog, drive_watchdog_cb, 10., 0.);
	ev_timer_start(loop, &d->watchdog);
	drive_step(d);
	if (d->result == 1)
		ev_run(loop, 0);
	ev_io_stop(loop, &d->io);
	ev_io_stop(loop, &d->server_io);
	ev_timer_stop(loop, &d->watchdog);
}

static void test_connect_refused(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tr_opts o = { .loop = loop, .known_hosts = "/nonexistent", .timeout = 5 };
	struct drive d;
	char target[64];
	struct lm_error err;
	int port, fd = listener(&port);

	(void)state;
	close(fd); /* nothing listens there now */
	snprintf(target, sizeof(target), "ssh://u@127.0.0.1:%d/q", port);
	d.t = tr_new_ex(target, &o, &err);
	assert_non_null(d.t);
	drive(&d, loop, d.t, -1, NULL);
	assert_int_equal(d.result, -1);
	assert_int_equal(d.err.code, LM_ERR_IO);
	assert_contains(d.err.msg, target);
	assert_contains(d.err.msg, "cannot connect to 127.0.0.1 port");
	assert_contains(d.err.msg, "refused");
	tr_free(d.t);
	ev_loop_destroy(loop);
}

static void test_connect_not_ssh(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tr_opts o = { .loop = loop, .known_hosts = "/nonexistent", .timeout = 5 };
	struct drive d;
	char target[64];
	struct lm_error err;
	int port, fd = listener(&port);

	(void)state;
	snprintf(target, sizeof(target), "ssh://u@127.0.0.1:%d/q", port);
	d.t = tr_new_ex(target, &o, &err);
	assert_non_null(d.t);
	drive(&d, loop, d.t, fd, "HTTP/1.0 400 Bad Request\r\n\r\n");
	assert_int_equal(d.result, -1);
	assert_int_equal(d.err.code, LM_ERR_IO);
	assert_contains(d.err.msg, "SSH handshake with 127.0.0.1 port");
	tr_free(d.t);
	close(fd);
	ev_loop_destroy(loop);
}

static void test_connect_silent_timeout(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tr_opts o = { .loop = loop, .known_hosts = "/nonexistent", .timeout = 0.3 };
	struct drive d;
	char target[64];
	struct lm_error err;
	int port, fd = listener(&port);
	ev_tstamp t0;

	(void)state;
	snprintf(target, sizeof(target), "ssh://u@127.0.0.1:%d/q", port);
	d.t = tr_new_ex(target, &o, &err);
	assert_non_null(d.t);
	t0 = ev_time();
	drive(&d, loop, d.t, fd, NULL); /* accepts, says nothing */
	assert_int_equal(d.result, -1);
	assert_int_equal(d.err.code, LM_ERR_TIMEOUT);
	assert_contains(d.err.msg, "within 0.3 s while in the SSH handshake");
	assert_true(ev_time() - t0 < 5);
	tr_free(d.t);
	if (d.peer >= 0)
		close(d.peer);
	close(fd);
	ev_loop_destroy(loop);
}

/* Two channels of one session fail together; freeing one mid-connect is
 * fine; the last free closes the session. */
static void test_shared_session_fails_together(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tr_opts o = { .loop = loop, .known_hosts = "/nonexistent", .timeout = 5 };
	struct drive d;
	char ta[64], tb[64], tc[64];
	struct lm_error err, eb;
	struct tr *b, *c;
	int port, fd = listener(&port);

	(void)state;
	snprintf(ta, sizeof(ta), "ssh://u@127.0.0.1:%d/a", port);
	snprintf(tb, sizeof(tb), "ssh://u@127.0.0.1:%d/b", port);
	snprintf(tc, sizeof(tc), "ssh://u@127.0.0.1:%d/c", port);
	d.t = tr_new_ex(ta, &o, &err);
	b = tr_new_ex(tb, &o, &err);
	c = tr_new_ex(tc, &o, &err);
	assert_non_null(d.t);
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(tr_connect(c, &err), 1);
	assert_int_equal(tr_connect(b, &eb), 1);
	assert_int_equal(tr_fd(b), tr_fd(d.t)); /* one socket */
	tr_free(c);                              /* gone while connecting */
	drive(&d, loop, d.t, fd, "SSH-1.0-too-old\r\n");
	assert_int_equal(d.result, -1);
	assert_int_equal(tr_connect(b, &eb), -1);
	assert_int_equal(eb.code, d.err.code);
	assert_contains(eb.msg, tb);
	assert_contains(d.err.msg, ta);
	tr_free(d.t);
	tr_free(b);
	close(fd);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_long_path),
		cmocka_unit_test(test_new_ex_bad),
		cmocka_unit_test(test_new_ex_good),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_not_ssh),
		cmocka_unit_test(test_connect_silent_timeout),
		cmocka_unit_test(test_shared_session_fails_together),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

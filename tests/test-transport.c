/*
 * test-transport: target parsing and real connects for transport/sock.
 *
 * Listeners are real sockets in a temporary directory (unix) or on an
 * ephemeral loopback port (tcp); the transport is driven by hand with poll()
 * on tr_fd()/tr_want(), as an event loop would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../transport/transport.h"

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* Wait (at most 5 s) for what the transport asked for. */
static void wait_want(struct tr *t)
{
	struct pollfd pfd = { .fd = tr_fd(t), .events = 0 };

	if (tr_want(t) & TR_WANT_READ)
		pfd.events |= POLLIN;
	if (tr_want(t) & TR_WANT_WRITE)
		pfd.events |= POLLOUT;
	assert_true(pfd.events != 0);
	if (poll(&pfd, 1, 5000) != 1)
		fail_msg("%s: nothing happened in 5 s", t->desc);
}

/* Drive tr_connect to the end: returns its last result. */
static int connect_all(struct tr *t, struct lm_error *err)
{
	int r, i;

	for (i = 0; i < 1000; i++) {
		r = tr_connect(t, err);
		if (r != 1)
			return r;
		wait_want(t);
	}
	fail_msg("%s: connect never finished", t->desc);
	return -1;
}

/* Read exactly len bytes through the transport. */
static void read_all(struct tr *t, char *buf, size_t len)
{
	struct lm_error err;
	size_t got = 0;

	while (got < len) {
		ssize_t n = tr_read(t, buf + got, len - got, &err);

		if (n == TR_AGAIN) {
			assert_int_equal(tr_want(t), TR_WANT_READ);
			wait_want(t);
			continue;
		}
		if (n <= 0)
			fail_msg("read: %zd %s", n, n < 0 ? err.msg : "EOF");
		got += (size_t)n;
	}
}

static void write_all(struct tr *t, const char *buf, size_t len)
{
	struct lm_error err;
	size_t put = 0;

	while (put < len) {
		ssize_t n = tr_write(t, buf + put, len - put, &err);

		if (n == TR_AGAIN) {
			wait_want(t);
			continue;
		}
		if (n <= 0)
			fail_msg("write: %zd %s", n, n < 0 ? err.msg : "");
		put += (size_t)n;
	}
}

static int accept_one(int lfd)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int fd;

	assert_int_equal(poll(&pfd, 1, 5000), 1);
	fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	return fd;
}

/*
 * The conversation every connected transport must hold: the server speaks
 * first (as QEMU does), an empty read says AGAIN, the client answers, the
 * server closes and the client reads end of stream, then writes fail as EOF.
 */
static void converse(struct tr *t, int sfd)
{
	static const char hello[] = "{\"QMP\": {}}\r\n";
	static const char answer[] = "{\"execute\": \"qmp_capabilities\"}\r\n";
	char buf[128];
	struct lm_error err;
	ssize_t n;
	size_t got = 0;
	int i;

	n = tr_read(t, buf, sizeof(buf), &err);
	assert_int_equal(n, TR_AGAIN);
	assert_int_equal(tr_want(t), TR_WANT_READ);

	assert_int_equal(write(sfd, hello, strlen(hello)), (ssize_t)strlen(hello));
	read_all(t, buf, strlen(hello));
	assert_memory_equal(buf, hello, strlen(hello));

	write_all(t, answer, strlen(answer));
	while (got < strlen(answer)) {
		n = read(sfd, buf + got, sizeof(buf) - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_memory_equal(buf, answer, strlen(answer));

	close(sfd);
	for (;;) {
		n = tr_read(t, buf, sizeof(buf), &err);
		if (n != TR_AGAIN)
			break;
		wait_want(t);
	}
	assert_int_equal(n, 0);
	/* the peer is gone: a write fails, as EOF, with no SIGPIPE. Over tcp
	 * the first writes may still be taken until the peer's reset is back. */
	for (i = 0; i < 500; i++) {
		n = tr_write(t, answer, strlen(answer), &err);
		if (n < 0 && n != TR_AGAIN)
			break;
		usleep(2000);
	}
	assert_int_equal(n, -1);
	assert_int_equal(err.code, LM_ERR_EOF);
	assert_contains(err.msg, t->desc);
}

/* --- parsing -------------------------------------------------------------- */

static void test_parse_unix(void **state)
{
	struct lm_error err;
	struct tr *t;

	(void)state;
	t = tr_new("unix:/run/qemu/vm1.qmp", &err);
	assert_non_null(t);
	assert_string_equal(t->ops->scheme, "unix");
	assert_string_equal(t->desc, "unix:/run/qemu/vm1.qmp");
	assert_int_equal(tr_fd(t), -1); /* nothing connected yet */
	tr_free(t);

	t = tr_new("unix:relative.sock", &err); /* explicit scheme: no '/' needed */
	assert_non_null(t);
	assert_string_equal(t->ops->scheme, "unix");
	tr_free(t);

	t = tr_new("/var/lib/vm/qmp.sock", &err); /* a bare path */
	assert_non_null(t);
	assert_string_equal(t->ops->scheme, "unix");
	assert_string_equal(t->desc, "/var/lib/vm/qmp.sock");
	tr_free(t);

	t = tr_new("./qmp.sock", &err);
	assert_non_null(t);
	assert_string_equal(t->ops->scheme, "unix");
	tr_free(t);

	t = tr_new("qmp.sock", &err); /* a bare name in the current directory */
	assert_non_null(t);
	assert_string_equal(t->ops->scheme, "unix");
	tr_free(t);

	tr_free(NULL);
}

static void test_parse_tcp(void **state)
{
	static const char *good[] = {
		"tcp:127.0.0.1:4444", "tcp:localhost:4444", "tcp:[::1]:4444",
		"tcp:[fe80::1%lo]:1", "tcp:qemu-host.example:65535",
	};
	struct lm_error err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct tr *t = tr_new(good[i], &err);

		if (t == NULL)
			fail_msg("%s: %s", good[i], err.msg);
		assert_string_equal(t->ops->scheme, "tcp");
		assert_string_equal(t->desc, good[i]);
		tr_free(t);
	}
}

static void test_parse_bad(void **state)
{
	static const char *bad[] = {
		"",
		"unix:",             /* empty path */
		"tcp:",
		"tcp:host",          /* no port */
		"tcp:host:",         /* empty port */
		"tcp::4444",         /* empty host */
		"tcp:[::1]",         /* bracketed host, no port */
		"tcp:[::1]4444",     /* no colon after the bracket */
		"tcp:[]:4444",       /* empty bracketed host */
		"tcp:[::1:4444",     /* unclosed bracket */
		"http://host/qmp",   /* a URL is no path */
		"ssh://host/path",
	};
	struct lm_error err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tr *t;

		lm_error_clear(&err);
		t = tr_new(bad[i], &err);
		if (t != NULL) {
			tr_free(t);
			fail_msg("'%s' was accepted", bad[i]);
		}
		if (err.code != LM_ERR_USAGE || err.msg[0] == '\0')
			fail_msg("'%s': code %s: %s", bad[i], lm_error_code_name(err.code),
				 err.msg);
		/* the message names what the user wrote */
		assert_contains(err.msg, bad[i]);
	}
}

static void test_parse_long_unix_path(void **state)
{
	struct sockaddr_un sun;
	char target[256];
	size_t max = sizeof(sun.sun_path) - 1; /* room for the NUL */
	struct lm_error err;
	struct tr *t;

	(void)state;
	/* exactly as long as fits */
	strcpy(target, "unix:/");
	memset(target + 6, 'a', max - 1);
	target[5 + max] = '\0';
	t = tr_new(target, &err);
	assert_non_null(t);
	tr_free(t);

	/* one more byte does not */
	strcpy(target, "unix:/");
	memset(target + 6, 'a', max);
	target[6 + max] = '\0';
	t = tr_new(target, &err);
	assert_null(t);
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "longer than");

	/* and the same for a bare path */
	t = tr_new(target + 5, &err);
	assert_null(t);
	assert_int_equal(err.code, LM_ERR_USAGE);
}

/* --- real connects ----------------------------------------------------------- */

struct tmpdir {
	char path[64];
};

static void tmpdir_make(struct tmpdir *d)
{
	strcpy(d->path, "/tmp/lm-test-tr.XXXXXX");
	assert_non_null(mkdtemp(d->path));
}

static int unix_listener(const char *path, int do_listen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sun.sun_path));
	strcpy(sun.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	if (do_listen)
		assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void test_unix_connect(void **state)
{
	struct tmpdir d;
	char path[128], target[160];
	struct lm_error err;
	struct tr *t;
	int lfd;

	(void)state;
	tmpdir_make(&d);
	snprintf(path, sizeof(path), "%s/qmp.sock", d.path);
	lfd = unix_listener(path, 1);

	snprintf(target, sizeof(target), "unix:%s", path);
	t = tr_new(target, &err);
	assert_non_null(t);
	if (connect_all(t, &err) != 0)
		fail_msg("connect: %s", err.msg);
	assert_true(tr_fd(t) >= 0);
	assert_int_equal(tr_connect(t, &err), 0); /* again: still connected */
	converse(t, accept_one(lfd));
	tr_free(t);

	/* a bare path works the same */
	t = tr_new(path, &err);
	assert_non_null(t);
	assert_int_equal(connect_all(t, &err), 0);
	converse(t, accept_one(lfd));
	tr_free(t);

	close(lfd);
	unlink(path);
	rmdir(d.path);
}

static void test_unix_connect_missing(void **state)
{
	struct tmpdir d;
	char target[160];
	struct lm_error err;
	struct tr *t;

	(void)state;
	tmpdir_make(&d);
	snprintf(target, sizeof(target), "unix:%s/absent.sock", d.path);
	t = tr_new(target, &err);
	assert_non_null(t);
	lm_error_clear(&err);
	assert_int_equal(connect_all(t, &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
	assert_contains(err.msg, target);
	assert_contains(err.msg, strerror(ENOENT));
	assert_contains(err.msg, "is the VM running?");
	assert_int_equal(tr_fd(t), -1); /* nothing left open */
	tr_free(t);
	rmdir(d.path);
}

static void test_unix_connect_refused(void **state)
{
	struct tmpdir d;
	char path[128];
	struct lm_error err;
	struct tr *t;
	int fd;

	(void)state;
	tmpdir_make(&d);
	snprintf(path, sizeof(path), "%s/stale.sock", d.path);
	fd = unix_listener(path, 0); /* bound, not listening: like a stale socket */
	t = tr_new(path, &err);
	assert_non_null(t);
	assert_int_equal(connect_all(t, &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
	assert_contains(err.msg, "nothing listens there");
	tr_free(t);
	close(fd);
	unlink(path);
	rmdir(d.path);
}

static int tcp_listener(int family, const char *addr, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(family, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &sin->sin_addr);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, addr, &sin6->sin6_addr);
		len = sizeof(*sin6);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4) < 0) {
		int e = errno;

		close(fd);
		errno = e; /* the caller tells "no IPv6 here" from a failure by it */
		return -1;
	}
	len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static void test_tcp_connect(void **state)
{
	char target[64];
	struct lm_error err;
	struct tr *t;
	int lfd, port;

	(void)state;
	lfd = tcp_listener(AF_INET, "127.0.0.1", &port);
	assert_true(lfd >= 0);
	snprintf(target, sizeof(target), "tcp:127.0.0.1:%d", port);
	t = tr_new(target, &err);
	assert_non_null(t);
	if (connect_all(t, &err) != 0)
		fail_msg("connect: %s", err.msg);
	converse(t, accept_one(lfd));
	tr_free(t);

	/* by name */
	snprintf(target, sizeof(target), "tcp:localhost:%d", port);
	t = tr_new(target, &err);
	assert_non_null(t);
	if (connect_all(t, &err) != 0)
		fail_msg("connect: %s", err.msg);
	converse(t, accept_one(lfd));
	tr_free(t);
	close(lfd);
}

static void test_tcp_connect_ipv6(void **state)
{
	char target[64];
	struct lm_error err;
	struct tr *t;
	int lfd, port;

	(void)state;
	lfd = tcp_listener(AF_INET6, "::1", &port);
	if (lfd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
		/* no IPv6, or no ::1, on this machine: cmocka counts the test as skipped (and
		 * scripts/check.sh shows it in the tally), never as passed */
		print_message("no IPv6 loopback here (%s): skipped\n", strerror(errno));
		skip();
	}
	if (lfd < 0)
		fail_msg("listening on [::1]: %s", strerror(errno));
	snprintf(target, sizeof(target), "tcp:[::1]:%d", port);
	t = tr_new(target, &err);
	assert_non_null(t);
	if (connect_all(t, &err) != 0)
		fail_msg("connect: %s", err.msg);
	converse(t, accept_one(lfd));
	tr_free(t);
	close(lfd);
}

static void test_tcp_connect_refused(void **state)
{
	char target[64];
	struct lm_error err;
	struct tr *t;
	int lfd, port;

	(void)state;
	/* a port that was just free: listen, learn it, close */
	lfd = tcp_listener(AF_INET, "127.0.0.1", &port);
	assert_true(lfd >= 0);
	close(lfd);
	snprintf(target, sizeof(target), "tcp:127.0.0.1:%d", port);
	t = tr_new(target, &err);
	assert_non_null(t);
	assert_int_equal(connect_all(t, &err), -1);
	assert_int_equal(err.code, LM_ERR_IO);
	assert_contains(err.msg, target);
	assert_contains(err.msg, "nothing listens there");
	tr_free(t);
}

static void test_new_fd(void **state)
{
	struct lm_error err;
	struct tr *t;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t = tr_new_fd(sv[0], "pair", &err);
	assert_non_null(t);
	assert_string_equal(t->desc, "pair");
	assert_int_equal(tr_fd(t), sv[0]);
	assert_int_equal(tr_connect(t, &err), 0);
	/* the ssh-only accessors refuse another transport */
	assert_string_equal(tr_ssh_exec_stderr(t), "");
	{
		char type = 'x';
		size_t len = 7;

		assert_null(tr_ssh_sftp_result(t, &type, &len));
		assert_int_equal(type, 0);
		assert_int_equal(len, 0);
	}
	converse(t, sv[1]);
	tr_free(t); /* closes sv[0] */
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_unix),
		cmocka_unit_test(test_parse_tcp),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_long_unix_path),
		cmocka_unit_test(test_unix_connect),
		cmocka_unit_test(test_unix_connect_missing),
		cmocka_unit_test(test_unix_connect_refused),
		cmocka_unit_test(test_tcp_connect),
		cmocka_unit_test(test_tcp_connect_ipv6),
		cmocka_unit_test(test_tcp_connect_refused),
		cmocka_unit_test(test_new_fd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

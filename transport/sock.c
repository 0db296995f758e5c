/*
 * transport/sock: unix and tcp sockets behind the transport table.
 *
 * Connects are non-blocking. For tcp each address getaddrinfo() gives is
 * tried in turn (name resolution itself is synchronous).
 */
#include "transport-int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct tr_sock {
	struct tr base;
	int fd;
	int want;
	int connected;
	struct sockaddr_un sun; /* unix */
	struct addrinfo *ai_list, *ai_next; /* tcp */
	char *host, *port;
};

static int sock_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static const char *sock_hint(int e)
{
	switch (e) {
	case ENOENT: return " (no such socket: is the VM running?)";
	case ECONNREFUSED: return " (nothing listens there)";
	case EACCES: return " (permission denied)";
	default: return "";
	}
}

/* Start one connect() on addr; 0 done, 1 in progress, -1 failed (errno). */
static int sock_start(struct tr_sock *s, int family, const struct sockaddr *addr, socklen_t len)
{
	s->fd = socket(family, SOCK_STREAM, 0);
	if (s->fd < 0)
		return -1;
	if (sock_set_nonblock(s->fd) < 0)
		return -1;
	if (connect(s->fd, addr, len) == 0)
		return 0;
	if (errno == EINPROGRESS || errno == EAGAIN) {
		s->want = TR_WANT_WRITE;
		return 1;
	}
	return -1;
}

static int sock_finish(struct tr_sock *s)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -1;
	if (soerr != 0) {
		errno = soerr;
		return -1;
	}
	return 0;
}

static void sock_close_fd(struct tr_sock *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static int sock_connect_unix(struct tr *t, struct lm_error *err)
{
	struct tr_sock *s = (struct tr_sock *)t;
	int r;

	if (s->connected)
		return 0;
	if (s->fd < 0)
		r = sock_start(s, AF_UNIX, (struct sockaddr *)&s->sun, sizeof(s->sun));
	else
		r = sock_finish(s);
	if (r < 0) {
		int e = errno;

		sock_close_fd(s);
		return lm_error_set(err, LM_ERR_IO, "cannot connect to %s: %s%s", t->desc,
				    strerror(e), sock_hint(e));
	}
	if (r == 0)
		s->connected = 1;
	return r;
}

static int sock_connect_tcp(struct tr *t, struct lm_error *err)
{
	struct tr_sock *s = (struct tr_sock *)t;
	int r, e = 0;

	if (s->connected)
		return 0;
	if (s->ai_list == NULL) {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
		int g = getaddrinfo(s->host, s->port, &hints, &s->ai_list);

		if (g != 0)
			return lm_error_set(err, LM_ERR_IO, "cannot resolve %s: %s", s->host,
					    gai_strerror(g));
		s->ai_next = s->ai_list;
	}
	if (s->fd >= 0) {
		if (sock_finish(s) == 0) {
			s->connected = 1;
			return 0;
		}
		e = errno;
		sock_close_fd(s);
		s->ai_next = s->ai_next->ai_next;
	}
	for (; s->ai_next != NULL; s->ai_next = s->ai_next->ai_next) {
		r = sock_start(s, s->ai_next->ai_family, s->ai_next->ai_addr, s->ai_next->ai_addrlen);
		if (r == 0) {
			s->connected = 1;
			return 0;
		}
		if (r == 1)
			return 1;
		e = errno;
		sock_close_fd(s);
	}
	return lm_error_set(err, LM_ERR_IO, "cannot connect to %s: %s%s", t->desc,
			    strerror(e ? e : ECONNREFUSED), sock_hint(e));
}

static ssize_t sock_read(struct tr *t, char *buf, size_t len, struct lm_error *err)
{
	struct tr_sock *s = (struct tr_sock *)t;
	ssize_t n;

	do
		n = recv(s->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		s->want = TR_WANT_READ;
		return TR_AGAIN;
	}
	if (errno == ECONNRESET)
		return lm_error_set(err, LM_ERR_EOF, "%s: connection reset by peer", t->desc);
	return lm_error_set(err, LM_ERR_IO, "%s: read failed: %s", t->desc, strerror(errno));
}

static ssize_t sock_write(struct tr *t, const char *buf, size_t len, struct lm_error *err)
{
	struct tr_sock *s = (struct tr_sock *)t;
	ssize_t n;

	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		s->want = TR_WANT_WRITE;
		return TR_AGAIN;
	}
	if (errno == EPIPE || errno == ECONNRESET)
		return lm_error_set(err, LM_ERR_EOF, "%s: connection closed by peer", t->desc);
	return lm_error_set(err, LM_ERR_IO, "%s: write failed: %s", t->desc, strerror(errno));
}

static int sock_want(struct tr *t)
{
	return ((struct tr_sock *)t)->want;
}

static int sock_fd(struct tr *t)
{
	return ((struct tr_sock *)t)->fd;
}

static void sock_destroy(struct tr *t)
{
	struct tr_sock *s = (struct tr_sock *)t;

	sock_close_fd(s);
	if (s->ai_list != NULL)
		freeaddrinfo(s->ai_list);
	free(s->host);
	free(s->port);
	free(t->desc);
	free(s);
}

static const struct tr_ops sock_unix_ops = {
	.scheme = "unix",
	.connect = sock_connect_unix,
	.read = sock_read,
	.write = sock_write,
	.want = sock_want,
	.fd = sock_fd,
	.destroy = sock_destroy,
};

static const struct tr_ops sock_tcp_ops = {
	.scheme = "tcp",
	.connect = sock_connect_tcp,
	.read = sock_read,
	.write = sock_write,
	.want = sock_want,
	.fd = sock_fd,
	.destroy = sock_destroy,
};

static struct tr_sock *sock_alloc(const struct tr_ops *ops, const char *desc, struct lm_error *err)
{
	struct tr_sock *s = calloc(1, sizeof(*s));

	if (s == NULL || (s->base.desc = strdup(desc)) == NULL) {
		free(s);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	s->base.ops = ops;
	s->fd = -1;
	s->want = TR_WANT_READ;
	return s;
}

struct tr *tr_sock_new_unix(const char *target, const char *path, const struct tr_opts *opts,
			    struct lm_error *err)
{
	struct tr_sock *s;

	(void)opts;
	if (*path == '\0') {
		lm_error_set(err, LM_ERR_USAGE, "target '%s': empty socket path", target);
		return NULL;
	}
	if (strlen(path) >= sizeof(s->sun.sun_path)) {
		lm_error_set(err, LM_ERR_USAGE, "target '%s': socket path longer than %zu bytes",
			     target, sizeof(s->sun.sun_path) - 1);
		return NULL;
	}
	s = sock_alloc(&sock_unix_ops, target, err);
	if (s == NULL)
		return NULL;
	s->sun.sun_family = AF_UNIX;
	strcpy(s->sun.sun_path, path);
	return &s->base;
}

struct tr *tr_sock_new_tcp(const char *target, const char *hostport, const struct tr_opts *opts,
			   struct lm_error *err)
{
	const char *colon = strrchr(hostport, ':');
	struct tr_sock *s;
	const char *h = hostport;
	size_t hl;

	(void)opts;
	if (colon == NULL || colon == hostport || colon[1] == '\0') {
		lm_error_set(err, LM_ERR_USAGE, "target '%s': expected tcp:HOST:PORT", target);
		return NULL;
	}
	hl = (size_t)(colon - hostport);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') { /* [::1]:4444 */
		h++;
		hl -= 2;
	} else if (h[0] == '[') {
		/* "[::1]" without a port, "[::1]4444", "[]:1": the last colon
		 * fell inside the brackets, which would make "1]" the port and
		 * fail only later as a name that does not resolve */
		lm_error_set(err, LM_ERR_USAGE, "target '%s': expected tcp:[ADDRESS]:PORT", target);
		return NULL;
	}
	s = sock_alloc(&sock_tcp_ops, target, err);
	if (s == NULL)
		return NULL;
	s->host = strndup(h, hl);
	s->port = strdup(colon + 1);
	if (s->host == NULL || s->port == NULL) {
		sock_destroy(&s->base);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	return &s->base;
}

struct tr *tr_new_fd(int fd, const char *desc, struct lm_error *err)
{
	struct tr_sock *s = sock_alloc(&sock_unix_ops, desc, err);

	if (s == NULL) {
		close(fd);
		return NULL;
	}
	s->fd = fd;
	if (sock_set_nonblock(fd) < 0) {
		lm_error_set(err, LM_ERR_IO, "%s: fcntl: %s", desc, strerror(errno));
		sock_destroy(&s->base);
		return NULL;
	}
	s->connected = 1;
	return &s->base;
}

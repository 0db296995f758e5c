/*
 * transport/ssh-connect: a session from nothing to authenticated, each step
 * resumable and none blocking on the network: resolve (getaddrinfo,
 * synchronous as in transport/sock), TCP connect (each address in turn),
 * SSH handshake, host key check (transport/ssh-knownhosts.c), public key
 * authentication (transport/ssh-auth.c).
 *
 * libssh2 1.10 talks to ssh-agent over a blocking unix socket; the
 * session's send/recv callbacks bound each agent exchange with poll() and
 * the timeout, and turn the agent closing into an error (libssh2 would
 * loop).
 */
#include "ssh-int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* OpenSSH's order; libssh2's own prefers ECDSA, which would miss the
 * ED25519 key an OpenSSH client wrote to known_hosts */
#define SSH_HOSTKEY_PREF                                                                   \
	"ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-rsa," \
	"ssh-dss"

/* The agent's socket is blocking in libssh2 1.10: wait for it, bounded. */
static int sess_agent_wait(struct ssh_sess *s, int fd, short events)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int ms = (int)(s->timeout * 1000), r;

	do
		r = poll(&pfd, 1, ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	return 0;
}

static LIBSSH2_SEND_FUNC(sess_send_cb)
{
	struct ssh_sess *s = *abstract;
	ssize_t n;

	if (socket != s->fd) {
		int r = sess_agent_wait(s, socket, POLLOUT);

		if (r < 0)
			return r;
	}
	do
		n = send(socket, buffer, length, flags | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno != EAGAIN && socket == s->fd)
		s->sock_errno = errno;
	return n < 0 ? -errno : n;
}

static LIBSSH2_RECV_FUNC(sess_recv_cb)
{
	struct ssh_sess *s = *abstract;
	ssize_t n;

	if (socket != s->fd) {
		int r = sess_agent_wait(s, socket, POLLIN);

		if (r < 0)
			return r;
	}
	do
		n = recv(socket, buffer, length, flags);
	while (n < 0 && errno == EINTR);
	if (n == 0 && socket != s->fd)
		return -ECONNRESET; /* libssh2 1.10 would wait for the agent forever */
	if (n == 0 && length > 0)
		s->sock_eof = 1;
	if (n < 0 && errno != EAGAIN && socket == s->fd)
		s->sock_errno = errno;
	return n < 0 ? -errno : n;
}

static int sock_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/*
 * Start connect() to the next address: 1 in progress or done, -1 none left.
 * A retry takes over the fd number of the first socket (dup2): the users'
 * watchers name that number, and closing it under them would silence them.
 */
static int sess_tcp_next(struct ssh_sess *s, int *last_errno)
{
	for (; s->ai_next != NULL; s->ai_next = s->ai_next->ai_next) {
		struct addrinfo *ai = s->ai_next;
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);

		if (fd < 0) {
			*last_errno = errno;
			continue;
		}
		if (s->fd >= 0) {
			if (dup2(fd, s->fd) < 0) {
				*last_errno = errno;
				close(fd);
				return -1;
			}
			close(fd);
			fd = s->fd;
			/* a new file behind the same number: libev must re-add it */
			ev_io_stop(s->loop, &s->io);
			s->io_events = 0;
		}
		s->fd = fd;
		if (sock_nonblock(fd) == 0 &&
		    (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS))
			return 1;
		*last_errno = errno;
	}
	return -1;
}

void ssh_sess_start(struct ssh_sess *s)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	char port[16];
	int g, e = ECONNREFUSED;

	snprintf(port, sizeof(port), "%d", s->port);
	g = getaddrinfo(s->host, port, &hints, &s->ai_list);
	if (g != 0) {
		ssh_sess_fail(s, LM_ERR_IO, "cannot resolve %s: %s", s->host, gai_strerror(g));
		return;
	}
	s->ai_next = s->ai_list;
	s->state = SESS_TCP;
	if (sess_tcp_next(s, &e) < 0 || s->fd < 0)
		ssh_sess_fail(s, LM_ERR_IO, "cannot connect to %s port %d: %s", s->host, s->port,
			      strerror(e));
}

/* TCP connected: make the libssh2 session. 0, or -1 (session failed). */
static int sess_tcp_done(struct ssh_sess *s)
{
	int one = 1;
	unsigned int user_timeout = SSH_KEEPALIVE_S * 3 * 1000;

	/* many small packets each way: Nagle would add a delayed-ACK wait to
	 * every QMP round trip */
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* a peer that stops acknowledging (keepalives included) fails the
	 * socket within this time, instead of the kernel's ~15 minutes */
	setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
	s->ssh = libssh2_session_init_ex(NULL, NULL, NULL, s);
	if (s->ssh == NULL) {
		ssh_sess_fail(s, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	libssh2_session_set_blocking(s->ssh, 0);
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_SEND, (void *)sess_send_cb);
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_RECV, (void *)sess_recv_cb);
	(void)libssh2_session_method_pref(s->ssh, LIBSSH2_METHOD_HOSTKEY, SSH_HOSTKEY_PREF);
	/* no reply wanted: libssh2 1.10 queues every REQUEST_FAILURE answer
	 * for good; a dead peer is found by TCP_USER_TIMEOUT instead */
	libssh2_keepalive_config(s->ssh, 0, SSH_KEEPALIVE_S);
	s->state = SESS_HANDSHAKE;
	return 0;
}

const char *ssh_sess_stage(const struct ssh_sess *s)
{
	switch (s->state) {
	case SESS_NEW:
	case SESS_TCP: return "connecting";
	case SESS_HANDSHAKE: return "in the SSH handshake";
	case SESS_AUTH: return "authenticating";
	default: return "opening the channel";
	}
}

/* Advance the session towards READY. */
void ssh_sess_setup(struct ssh_sess *s)
{
	int rc;

	if (s->state == SESS_TCP) {
		struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };
		int soerr = 0, e;
		socklen_t sl = sizeof(soerr);

		if (poll(&pfd, 1, 0) <= 0)
			return; /* still connecting */
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr != 0) {
			e = soerr;
			s->ai_next = s->ai_next->ai_next;
			if (sess_tcp_next(s, &e) < 0)
				ssh_sess_fail(s, LM_ERR_IO, "cannot connect to %s port %d: %s",
					      s->host, s->port, strerror(e));
			return;
		}
		if (sess_tcp_done(s) < 0)
			return;
	}
	if (s->state == SESS_HANDSHAKE) {
		rc = libssh2_session_handshake(s->ssh, s->fd);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (rc != 0) {
			ssh_sess_fail(s, LM_ERR_IO,
				      "SSH handshake with %s port %d failed: %s (is it an SSH server?)",
				      s->host, s->port, ssh_sess_lost(s));
			return;
		}
		if (ssh_hostkey_check(s) < 0)
			return;
		s->state = SESS_AUTH;
	}
	if (s->state == SESS_AUTH) {
		if (ssh_auth_step(s) <= 0)
			return;
		s->state = SESS_READY;
		s->kick = 1;
		ev_timer_start(s->loop, &s->keepalive);
	}
}

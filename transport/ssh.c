/*
 * transport/ssh: a byte stream to a unix socket on another host, through an
 * SSH channel of type direct-streamlocal@openssh.com (what `ssh -L
 * /local:/remote` uses). libssh2 runs non-blocking on the caller's libev
 * loop; no thread, no child process, no helper program on the remote host:
 * sshd connects the channel to the socket itself.
 *
 * Sessions are shared: every channel to the same (loop, user, host, port) in
 * the process rides one SSH session, made by the first connect and closed
 * with the last channel. The session owns the TCP socket, an ev_io on it and
 * a keepalive timer; every transport of the session reports that socket as
 * its fd.
 *
 * Why the session drives all I/O itself (ssh_pump): libssh2 reads the
 * packets of every channel whichever channel asks, and it holds at most one
 * partly sent packet per session (offering a different packet while one is
 * pending fails with LIBSSH2_ERROR_BAD_USE). So a channel's writes go to its
 * own buffer and the pump sends them; the one operation that left a partial
 * packet ("busy") is resumed before any other may send; and after every step
 * the channels that have data, EOF or an error are woken through t->wake.
 *
 * Connect steps, each resumable and none blocking on the network: resolve
 * (getaddrinfo, synchronous as in transport/sock), TCP connect, SSH
 * handshake, host key check against known_hosts, public key authentication
 * (ssh-agent, then identity files), channel open. libssh2 keeps one channel
 * open in progress per session, so opens go one after the other. A refused
 * open is diagnosed with an SFTP stat of the socket path (sshd answers
 * "administratively prohibited" both when forwarding is disabled and when
 * the socket is missing).
 *
 * libssh2 1.10 talks to ssh-agent over a blocking unix socket; the session's
 * send/recv callbacks bound each agent exchange with poll() and the
 * timeout, and turn the agent closing into an error (libssh2 would loop).
 */
#include "transport.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SSH_DEFAULT_TIMEOUT 15.0
#ifndef SSH_KEEPALIVE_S
#define SSH_KEEPALIVE_S 15 /* s between keepalives; -D for tests */
#endif
#define SSH_OUT_MAX (64u << 20)
#define SSH_PATH_MAX 107 /* a remote sun_path, less its NUL */
#define SSH_CHANNEL_TYPE "direct-streamlocal@openssh.com"
/* OpenSSH's order; libssh2's own prefers ECDSA, which would miss the
 * ED25519 key an OpenSSH client wrote to known_hosts */
#define SSH_HOSTKEY_PREF                                                                   \
	"ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-rsa," \
	"ssh-dss"

enum sess_state { SESS_NEW, SESS_TCP, SESS_HANDSHAKE, SESS_AUTH, SESS_READY, SESS_DEAD };
enum auth_step { AUTH_LIST, AUTH_AGENT, AUTH_AGENT_KEY, AUTH_FILES, AUTH_FILE_KEY, AUTH_DONE };
enum chan_state {
	CHAN_NEW,     /* made, connect() not called yet */
	CHAN_WAIT,    /* queued for its open */
	CHAN_OPENING, /* libssh2_channel_open_ex in progress */
	CHAN_PROBING, /* open refused: finding out why */
	CHAN_OPEN,
	CHAN_CLOSING, /* libssh2_channel_free in progress */
	CHAN_DONE,    /* no libssh2 channel any more (closed, refused, failed) */
};
enum busy_op { BUSY_NONE, BUSY_OPEN, BUSY_PROBE, BUSY_WRITE, BUSY_READ, BUSY_CLOSE };
enum probe_step { PROBE_INIT, PROBE_STAT, PROBE_SHUTDOWN };
enum probe_found { FOUND_UNKNOWN, FOUND_MISSING, FOUND_SOCKET, FOUND_OTHER, FOUND_NOACCESS };

struct ssh_sess;
struct tr_ssh;

/*
 * A kind of channel: what differs between them is how one is opened.
 * The pump opens a session's channels one at a time, in the order made:
 * open_step is called for the head of that queue (CHAN_WAIT, CHAN_OPENING
 * or CHAN_PROBING) and sends only when ssh_sess_may_send(s, BUSY_OPEN or
 * BUSY_PROBE, c). It returns 1 when c moved on (opened through
 * ssh_chan_opened, failed to CHAN_DONE, or a next step that may run at
 * once), 0 to wait for the socket (or the session failed).
 */
struct ssh_chan_kind {
	int (*open_step)(struct tr_ssh *c);
};

struct tr_ssh {
	struct tr base;
	struct ssh_sess *s;
	const struct ssh_chan_kind *kind;
	struct tr_ssh *next; /* in s->chans, in the order made */
	char *path;
	enum chan_state state;
	int attached; /* the user still holds it */
	int failed;   /* err is sticky */
	int was_open;
	int eof_seen;         /* read() returned 0 */
	int wake_outstanding; /* woken, and the user has not called us since */
	int woke_failed;
	int close_after_busy; /* destroyed while its read/write is half sent */
	struct lm_error err;
	LIBSSH2_CHANNEL *ch;
	char *out; /* bytes accepted by write(), not yet taken by libssh2 */
	size_t out_len, out_cap;
	ev_timer timer; /* connect + open deadline */
	/* why an open was refused */
	char refusal[160];
	enum probe_step probe;
	enum probe_found found;
	LIBSSH2_SFTP *sftp;
};

struct ssh_sess {
	struct ssh_sess *next; /* in the registry */
	int registered;
	struct ev_loop *loop;
	char *user, *host, *khname; /* khname: "host" or "[host]:port" */
	int port;
	char **ids; /* identity files to try, in order */
	int nids;
	char *known_hosts;
	int accept_new;
	double timeout;

	enum sess_state state;
	struct lm_error err; /* sticky in SESS_DEAD; without a target prefix */
	int fd;
	struct addrinfo *ai_list, *ai_next;
	LIBSSH2_SESSION *ssh;
	ev_io io;
	int io_events;
	ev_timer keepalive;
	ev_timer kicker; /* wakes users one loop iteration later, see sess_notify */
	int inited;      /* libssh2_init() called */

	struct tr_ssh *chans;
	int nattached;

	enum busy_op busy;
	struct tr_ssh *busy_chan;
	int kick; /* connecting channels changed state: poke their watchers */
	int sock_eof;   /* the peer closed the TCP connection */
	int sock_errno; /* the last error of the socket (libssh2 says only "transport read") */

	/* authentication */
	enum auth_step auth;
	char *methods;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *agent_key;
	int agent_tried;
	int id_next;
	char tried[400];
};

static struct ssh_sess *ssh_sessions;

static void ssh_pump(struct ssh_sess *s);
static void ssh_sess_free(struct ssh_sess *s);

/* ------------------------------------------------------------ small helpers */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64 of src without '=' padding, as OpenSSH prints fingerprints */
static void ssh_b64_encode_nopad(const unsigned char *src, size_t len, char *dst, size_t cap)
{
	size_t i, o = 0;

	for (i = 0; i < len && o + 5 < cap; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)src[i + 1] << 8;
		if (i + 2 < len)
			v |= src[i + 2];
		dst[o++] = b64chars[(v >> 18) & 63];
		dst[o++] = b64chars[(v >> 12) & 63];
		if (i + 1 < len)
			dst[o++] = b64chars[(v >> 6) & 63];
		if (i + 2 < len)
			dst[o++] = b64chars[v & 63];
	}
	dst[o] = '\0';
}

/* Decode base64 (whitespace skipped); returns the length or -1. */
static long b64_decode(const char *src, size_t len, unsigned char *dst, size_t cap)
{
	uint32_t v = 0;
	int bits = 0;
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		const char *p;

		if (src[i] == '=' || src[i] == '\n' || src[i] == '\r' || src[i] == ' ')
			continue;
		p = strchr(b64chars, src[i]);
		if (p == NULL || src[i] == '\0')
			return -1;
		v = (v << 6) | (uint32_t)(p - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return (long)o;
			dst[o++] = (unsigned char)(v >> bits);
		}
	}
	return (long)o;
}

static void tried_add(struct ssh_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tried_add(struct ssh_sess *s, const char *fmt, ...)
{
	size_t n = strlen(s->tried);
	va_list ap;

	if (n > 0 && n + 2 < sizeof(s->tried)) {
		strcpy(s->tried + n, ", ");
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(s->tried + n, sizeof(s->tried) - n, fmt, ap);
	va_end(ap);
}

static const char *ssh_sess_errmsg(struct ssh_sess *s)
{
	char *msg = NULL;

	if (s->ssh == NULL)
		return "no session";
	libssh2_session_last_error(s->ssh, &msg, NULL, 0);
	return msg != NULL && *msg != '\0' ? msg : "unknown error";
}

/* Why the connection broke, as the socket saw it. */
static const char *ssh_sess_lost(struct ssh_sess *s)
{
	if (s->sock_eof)
		return "the server closed the connection";
	if (s->sock_errno != 0)
		return strerror(s->sock_errno);
	return ssh_sess_errmsg(s);
}

static int ssh_sess_dirs(struct ssh_sess *s)
{
	return s->ssh != NULL ? libssh2_session_block_directions(s->ssh) : 0;
}

/* Errors after which the session cannot carry anything any more. */
static int ssh_rc_fatal(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_BANNER_RECV:
	case LIBSSH2_ERROR_BANNER_SEND:
	case LIBSSH2_ERROR_INVALID_MAC:
	case LIBSSH2_ERROR_KEX_FAILURE:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE:
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_DECRYPT:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
	case LIBSSH2_ERROR_PROTO:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_ENCRYPT:
	case LIBSSH2_ERROR_BAD_SOCKET:
	case LIBSSH2_ERROR_OUT_OF_BOUNDARY:
		return 1;
	default:
		return 0;
	}
}

/* May the operation (op, c) send now? Only the busy one, or any when none
 * is: libssh2 must finish a partial packet before it takes another. */
static int ssh_sess_may_send(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c)
{
	return s->busy == BUSY_NONE || (s->busy == op && s->busy_chan == c);
}

/* After an operation returned EAGAIN or finished: note or clear busy. */
static void ssh_sess_note_busy(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c, int again)
{
	if (again && (ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND)) {
		if (s->busy == BUSY_NONE) {
			s->busy = op;
			s->busy_chan = c;
		}
	} else if (s->busy == op && s->busy_chan == c) {
		s->busy = BUSY_NONE;
		s->busy_chan = NULL;
	}
}

/* ------------------------------------------------------------ failures */

static void ssh_chan_fail(struct tr_ssh *c, const struct lm_error *e)
{
	if (c->failed)
		return;
	c->failed = 1;
	c->err = *e;
	if (c->state != CHAN_OPEN)
		c->s->kick = 1;
}

static void ssh_chan_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ssh_chan_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
{
	struct lm_error e;
	char msg[sizeof(e.msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&e, code, "%s: %s", c->base.desc, msg);
	ssh_chan_fail(c, &e);
}

static void sess_unregister(struct ssh_sess *s)
{
	struct ssh_sess **pp;

	if (!s->registered)
		return;
	for (pp = &ssh_sessions; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	s->registered = 0;
}

static void sess_unlink_chan(struct ssh_sess *s, struct tr_ssh *c)
{
	struct tr_ssh **pp;

	for (pp = &s->chans; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
}

static void ssh_chan_free_mem(struct tr_ssh *c)
{
	if (c->s != NULL)
		ev_timer_stop(c->s->loop, &c->timer);
	free(c->out);
	free(c->path);
	free(c->base.desc);
	free(c);
}

/*
 * The session is gone: every channel fails with err (the socket is shut
 * down, not closed, so that the fd number stays ours while the users'
 * watchers still name it). Channels nobody holds are freed.
 */
static void ssh_sess_fail(struct ssh_sess *s, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ssh_sess_fail(struct ssh_sess *s, enum lm_err_code code, const char *fmt, ...)
{
	struct tr_ssh *c, *next;
	char msg[sizeof(s->err.msg)];
	va_list ap;

	if (s->state == SESS_DEAD)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lm_error_set(&s->err, code, "%s", msg);
	s->state = SESS_DEAD;
	s->busy = BUSY_NONE;
	s->busy_chan = NULL;
	sess_unregister(s);
	ev_io_stop(s->loop, &s->io);
	s->io_events = 0;
	ev_timer_stop(s->loop, &s->keepalive);
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		ev_timer_stop(s->loop, &c->timer);
		if (!c->attached) {
			sess_unlink_chan(s, c);
			ssh_chan_free_mem(c);
			continue;
		}
		if (!c->failed) {
			struct lm_error e;

			lm_error_set(&e, code, "%s: %s", c->base.desc, msg);
			ssh_chan_fail(c, &e);
		}
		c->sftp = NULL; /* freed with the session's channels */
		c->state = CHAN_DONE;
	}
	s->kick = 1;
	ev_timer_start(s->loop, &s->kicker);
}

/* ------------------------------------------------------------ libssh2 I/O callbacks */

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

static LIBSSH2_SEND_FUNC(ssh_cb_send)
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

static LIBSSH2_RECV_FUNC(ssh_cb_recv)
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

/* ------------------------------------------------------------ host keys */

static int hostkey_bits(int type, const char **name)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: *name = "RSA"; return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: *name = "DSA"; return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519: *name = "ED25519"; return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: *name = "unknown"; return 0;
	}
}

/*
 * Load known_hosts line by line: libssh2_knownhost_readfile stops at the
 * first line it cannot parse (@cert-authority, a key type it does not
 * know), which would hide the entries after it. *ends_nl: whether the file
 * ends with a newline (for appending). 0, or -1 with errno (ENOENT: none).
 */
static int hostkey_load(LIBSSH2_KNOWNHOSTS *kh, const char *file, int *ends_nl)
{
	FILE *f = fopen(file, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	*ends_nl = 1;
	if (f == NULL)
		return -1;
	while ((n = getline(&line, &cap, f)) > 0) {
		*ends_nl = line[n - 1] == '\n';
		(void)libssh2_knownhost_readline(kh, line, (size_t)n,
						 LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	}
	free(line);
	fclose(f);
	return 0;
}

static int hostkey_append(struct ssh_sess *s, LIBSSH2_KNOWNHOSTS *kh, const char *key,
			  size_t keylen, int bits, int ends_nl)
{
	struct libssh2_knownhost *node;
	char line[8192];
	size_t len = 0;
	int fd;

	if (libssh2_knownhost_addc(kh, s->khname, NULL, key, keylen, NULL, 0,
				   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | bits,
				   &node) != 0 ||
	    libssh2_knownhost_writeline(kh, node, line, sizeof(line), &len,
					LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
		errno = ENOMEM;
		return -1;
	}
	fd = open(s->known_hosts, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		/* the default ~/.ssh may not exist yet; OpenSSH makes it 0700 */
		char *dir = strdup(s->known_hosts), *slash = dir ? strrchr(dir, '/') : NULL;

		if (slash != NULL && slash != dir) {
			*slash = '\0';
			(void)mkdir(dir, 0700);
		}
		free(dir);
		fd = open(s->known_hosts, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -1;
	if ((!ends_nl && write(fd, "\n", 1) != 1) || write(fd, line, len) != (ssize_t)len) {
		int e = errno;

		close(fd);
		errno = e ? e : EIO;
		return -1;
	}
	return close(fd);
}

/* Check the server's key: 0, or -1 with the session failed (HOSTKEY). */
static int ssh_hostkey_check(struct ssh_sess *s)
{
	const char *key, *hash, *tname;
	char fp[96], b64[48];
	size_t keylen;
	int type, bits, r, ends_nl;
	LIBSSH2_KNOWNHOSTS *kh;

	key = libssh2_session_hostkey(s->ssh, &keylen, &type);
	hash = libssh2_hostkey_hash(s->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	if (key == NULL || hash == NULL) {
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "%s sent no usable host key", s->khname);
		return -1;
	}
	ssh_b64_encode_nopad((const unsigned char *)hash, 32, b64, sizeof(b64));
	bits = hostkey_bits(type, &tname);
	snprintf(fp, sizeof(fp), "%s key SHA256:%s", tname, b64);
	kh = libssh2_knownhost_init(s->ssh);
	if (kh == NULL) {
		ssh_sess_fail(s, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	if (hostkey_load(kh, s->known_hosts, &ends_nl) < 0 && errno != ENOENT) {
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot read known hosts file %s: %s",
			      s->known_hosts, strerror(errno));
		libssh2_knownhost_free(kh);
		return -1;
	}
	/* the name as OpenSSH writes it, and port -1: libssh2 would also try
	 * the bare host for a non-22 port, which OpenSSH does not */
	r = libssh2_knownhost_checkp(kh, s->khname, -1, key, keylen,
				     LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | bits,
				     NULL);
	switch (r) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		r = 0;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		ssh_sess_fail(s, LM_ERR_HOSTKEY,
			      "host key for %s has CHANGED (now %s), refusing to connect: someone "
			      "may be intercepting the connection; if the host was reinstalled, "
			      "remove the old key (ssh-keygen -R '%s' -f %s) and connect again",
			      s->khname, fp, s->khname, s->known_hosts);
		r = -1;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		if (!s->accept_new) {
			ssh_sess_fail(s, LM_ERR_HOSTKEY,
				      "host %s is not in %s (it offers %s): check the fingerprint, "
				      "then add it with --accept-new-host-key (or ssh to it once)",
				      s->khname, s->known_hosts, fp);
			r = -1;
		} else if (hostkey_append(s, kh, key, keylen, bits, ends_nl) < 0) {
			ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot add %s to %s: %s", s->khname,
				      s->known_hosts, strerror(errno));
			r = -1;
		} else {
			r = 0;
		}
		break;
	default:
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot check the host key of %s: %s", s->khname,
			      ssh_sess_errmsg(s));
		r = -1;
		break;
	}
	libssh2_knownhost_free(kh);
	return r;
}

/* ------------------------------------------------------------ authentication */

/*
 * What a private key file is, without decrypting it: 1 encrypted, 0 not,
 * -1 unreadable (errno). *rsa: an RSA key (libssh2 1.10 signs those with
 * SHA-1 only, which OpenSSH 8.8+ refuses).
 */
static int ssh_key_inspect(const char *file, int *rsa)
{
	static const char ossh_begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
	char buf[16384], *p, *end;
	unsigned char bin[512];
	ssize_t n;
	long bl;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	*rsa = 0;
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	if (strstr(buf, "BEGIN RSA PRIVATE KEY") != NULL)
		*rsa = 1;
	if (strstr(buf, "Proc-Type: 4,ENCRYPTED") != NULL ||
	    strstr(buf, "BEGIN ENCRYPTED PRIVATE KEY") != NULL)
		return 1;
	p = strstr(buf, ossh_begin);
	if (p == NULL)
		return 0;
	p += sizeof(ossh_begin) - 1;
	end = strstr(p, "-----END");
	bl = b64_decode(p, end ? (size_t)(end - p) : strlen(p), bin, sizeof(bin));
	/* "openssh-key-v1\0", string ciphername, string kdfname, string kdf,
	 * uint32 nkeys, string publickey (string keytype ...) */
	if (bl > 19 && memcmp(bin, "openssh-key-v1", 15) == 0) {
		size_t off = 15, i;
		uint32_t len = 0;
		int encrypted = 0;

		for (i = 0; i < 3 && off + 4 <= (size_t)bl; i++) {
			len = (uint32_t)bin[off] << 24 | (uint32_t)bin[off + 1] << 16 |
			      (uint32_t)bin[off + 2] << 8 | bin[off + 3];
			if (i == 0)
				encrypted = !(len == 4 && off + 8 <= (size_t)bl &&
					      memcmp(bin + off + 4, "none", 4) == 0);
			off += 4 + len;
		}
		off += 4 + 4 + 4; /* nkeys, publickey length, keytype length */
		if (off + 7 <= (size_t)bl && memcmp(bin + off, "ssh-rsa", 7) == 0)
			*rsa = 1;
		return encrypted;
	}
	return 0;
}

static void sess_auth_done(struct ssh_sess *s)
{
	if (s->agent != NULL) {
		libssh2_agent_disconnect(s->agent);
		libssh2_agent_free(s->agent);
		s->agent = NULL;
	}
	s->auth = AUTH_DONE;
}

static void sess_auth_refused(struct ssh_sess *s, const char *why)
{
	ssh_sess_fail(s, LM_ERR_AUTH,
		      "authentication as %s on %s failed%s; tried: %s; load a key into ssh-agent "
		      "or pass -i FILE (livemerge never asks for a password)",
		      s->user, s->khname, why, s->tried[0] ? s->tried : "no key at all");
}

/* One step of authentication: 1 done, 0 wait, -1 failed (session failed). */
static int ssh_auth_step(struct ssh_sess *s)
{
	int rc;

	for (;;) {
		switch (s->auth) {
		case AUTH_LIST: {
			const char *m = libssh2_userauth_list(s->ssh, s->user,
							      (unsigned int)strlen(s->user));

			if (m == NULL) {
				if (libssh2_userauth_authenticated(s->ssh)) {
					sess_auth_done(s);
					return 1;
				}
				rc = libssh2_session_last_errno(s->ssh);
				if (rc == LIBSSH2_ERROR_EAGAIN)
					return 0;
				ssh_sess_fail(s, LM_ERR_IO,
					      "%s closed the connection before authentication: %s",
					      s->khname, ssh_sess_lost(s));
				return -1;
			}
			s->methods = strdup(m);
			if (s->methods == NULL) {
				ssh_sess_fail(s, LM_ERR_NOMEM, "out of memory");
				return -1;
			}
			if (strstr(s->methods, "publickey") == NULL) {
				ssh_sess_fail(s, LM_ERR_AUTH,
					      "%s does not accept public keys for %s (it offers: %s); "
					      "livemerge never asks for a password",
					      s->khname, s->user, s->methods);
				return -1;
			}
			s->auth = AUTH_AGENT;
			break;
		}
		case AUTH_AGENT: {
			const char *sock = getenv("SSH_AUTH_SOCK");

			s->auth = AUTH_FILES;
			if (sock == NULL || *sock == '\0')
				break;
			s->agent = libssh2_agent_init(s->ssh);
			if (s->agent == NULL) {
				tried_add(s, "ssh-agent (out of memory)");
				break;
			}
			if (libssh2_agent_connect(s->agent) != 0) {
				tried_add(s, "ssh-agent (cannot connect to %s)", sock);
				break;
			}
			if (libssh2_agent_list_identities(s->agent) != 0) {
				tried_add(s, "ssh-agent (cannot list its keys: %s)",
					  ssh_sess_errmsg(s));
				break;
			}
			s->agent_key = NULL;
			s->auth = AUTH_AGENT_KEY;
			if (libssh2_agent_get_identity(s->agent, &s->agent_key, NULL) != 0) {
				tried_add(s, "ssh-agent (no keys)");
				s->auth = AUTH_FILES;
			}
			break;
		}
		case AUTH_AGENT_KEY:
			rc = libssh2_agent_userauth(s->agent, s->user, s->agent_key);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc == 0) {
				sess_auth_done(s);
				return 1;
			}
			if (ssh_rc_fatal(rc)) {
				tried_add(s, "ssh-agent key '%s' (%s)", s->agent_key->comment,
					  ssh_sess_lost(s));
				sess_auth_refused(s, " (the server closed the connection)");
				return -1;
			}
			tried_add(s, "ssh-agent key '%s' (%s)", s->agent_key->comment,
				  rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
						  rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED
					  ? "refused"
					  : ssh_sess_errmsg(s));
			if (libssh2_agent_get_identity(s->agent, &s->agent_key, s->agent_key) != 0)
				s->auth = AUTH_FILES;
			break;
		case AUTH_FILES:
			if (s->id_next >= s->nids) {
				sess_auth_refused(s, "");
				return -1;
			}
			s->auth = AUTH_FILE_KEY;
			break;
		case AUTH_FILE_KEY: {
			const char *file = s->ids[s->id_next];
			int rsa, enc = ssh_key_inspect(file, &rsa);

			if (enc != 0) {
				if (enc < 0)
					tried_add(s, "%s (%s)", file, strerror(errno));
				else
					tried_add(s, "%s (encrypted, and livemerge never asks for "
						     "a passphrase: add it to ssh-agent)", file);
				s->id_next++;
				s->auth = AUTH_FILES;
				break;
			}
			rc = libssh2_userauth_publickey_fromfile_ex(s->ssh, s->user,
								    (unsigned int)strlen(s->user),
								    NULL, file, NULL);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc == 0) {
				sess_auth_done(s);
				return 1;
			}
			s->id_next++;
			s->auth = AUTH_FILES;
			if (ssh_rc_fatal(rc)) {
				tried_add(s, "%s (%s)", file, ssh_sess_lost(s));
				sess_auth_refused(s, " (the server closed the connection)");
				return -1;
			}
			if (rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
			    rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED)
				tried_add(s, "%s (refused%s)", file,
					  rsa ? "; libssh2 1.10 signs RSA keys with SHA-1, which "
						"OpenSSH 8.8+ refuses: use an ed25519 or ecdsa key"
					      : "");
			else
				tried_add(s, "%s (unusable: %s)", file, ssh_sess_errmsg(s));
			break;
		}
		case AUTH_DONE:
			return 1;
		}
	}
}

/* ------------------------------------------------------------ session setup */

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

static void ssh_sess_start(struct ssh_sess *s)
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
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_SEND, (void *)ssh_cb_send);
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_RECV, (void *)ssh_cb_recv);
	(void)libssh2_session_method_pref(s->ssh, LIBSSH2_METHOD_HOSTKEY, SSH_HOSTKEY_PREF);
	/* no reply wanted: libssh2 1.10 queues every REQUEST_FAILURE answer
	 * for good; a dead peer is found by TCP_USER_TIMEOUT instead */
	libssh2_keepalive_config(s->ssh, 0, SSH_KEEPALIVE_S);
	s->state = SESS_HANDSHAKE;
	return 0;
}

static const char *ssh_sess_stage(const struct ssh_sess *s)
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
static void ssh_sess_setup(struct ssh_sess *s)
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

/* ------------------------------------------------------------ channels */

/* The channel whose open is in progress or next. */
static struct tr_ssh *sess_open_head(struct ssh_sess *s)
{
	struct tr_ssh *c, *wait = NULL;

	for (c = s->chans; c != NULL; c = c->next) {
		if (c->state == CHAN_OPENING || c->state == CHAN_PROBING)
			return c;
		if (c->state == CHAN_WAIT && wait == NULL)
			wait = c;
	}
	return wait;
}

static void ssh_chan_start_close(struct tr_ssh *c)
{
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_cap = 0;
	c->state = CHAN_CLOSING;
}

/* c's open succeeded with ch (any kind of channel). */
static void ssh_chan_opened(struct tr_ssh *c, LIBSSH2_CHANNEL *ch)
{
	c->ch = ch;
	c->state = CHAN_OPEN;
	c->was_open = 1;
	ev_timer_stop(c->s->loop, &c->timer);
	if (!c->attached || c->failed)
		ssh_chan_start_close(c);
}

static void chan_probe_finish(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	const char *host = s->khname;

	switch (c->found) {
	case FOUND_MISSING:
		ssh_chan_failf(c, LM_ERR_IO, "no such socket on %s: %s (is the VM running, and "
					     "is that its monitor socket?)", host, c->path);
		break;
	case FOUND_OTHER:
		ssh_chan_failf(c, LM_ERR_IO, "%s on %s is not a unix socket", c->path, host);
		break;
	case FOUND_NOACCESS:
		ssh_chan_failf(c, LM_ERR_IO, "%s on %s: permission denied for %s", c->path, host,
			       s->user);
		break;
	case FOUND_SOCKET:
		ssh_chan_failf(c, LM_ERR_IO,
			       "sshd on %s refused a channel to %s, which exists: sshd_config "
			       "must allow it with `AllowStreamLocalForwarding yes` (the default) "
			       "and no DisableForwarding, or nothing listens on the socket (sshd "
			       "says: %s)",
			       host, c->path, c->refusal);
		break;
	default:
		ssh_chan_failf(c, LM_ERR_IO,
			       "sshd on %s refused a channel to %s (%s): either the socket is missing "
			       "or sshd_config forbids it (`AllowStreamLocalForwarding yes` is the "
			       "default)", host, c->path, c->refusal);
		break;
	}
	c->state = CHAN_DONE;
	s->kick = 1;
}

/* Find out with an SFTP stat why sshd refused: 1 done, 0 wait. */
static int chan_probe_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	int rc;

	if (!ssh_sess_may_send(s, BUSY_PROBE, c))
		return 0;
	if (c->probe == PROBE_INIT) {
		c->sftp = libssh2_sftp_init(s->ssh);
		if (c->sftp == NULL) {
			rc = libssh2_session_last_errno(s->ssh);
			ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (ssh_rc_fatal(rc)) {
				ssh_sess_fail(s, LM_ERR_IO, "connection to %s lost: %s", s->khname,
					      ssh_sess_lost(s));
				return 1;
			}
			chan_probe_finish(c); /* no SFTP there: say both */
			return 1;
		}
		c->probe = PROBE_STAT;
	}
	if (c->probe == PROBE_STAT) {
		rc = libssh2_sftp_stat_ex(c->sftp, c->path, (unsigned int)strlen(c->path),
					  LIBSSH2_SFTP_STAT, &attrs);
		ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0) {
			c->found = !(attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) ? FOUND_UNKNOWN
				   : LIBSSH2_SFTP_S_ISSOCK(attrs.permissions)    ? FOUND_SOCKET
										   : FOUND_OTHER;
		} else if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
			unsigned long fx = libssh2_sftp_last_error(c->sftp);

			c->found = fx == LIBSSH2_FX_NO_SUCH_FILE || fx == LIBSSH2_FX_NO_SUCH_PATH
					   ? FOUND_MISSING
				   : fx == LIBSSH2_FX_PERMISSION_DENIED ? FOUND_NOACCESS
									: FOUND_UNKNOWN;
		} else if (ssh_rc_fatal(rc)) {
			ssh_sess_fail(s, LM_ERR_IO, "connection to %s lost: %s", s->khname,
				      ssh_sess_lost(s));
			return 1;
		}
		c->probe = PROBE_SHUTDOWN;
	}
	rc = libssh2_sftp_shutdown(c->sftp);
	ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	c->sftp = NULL;
	chan_probe_finish(c);
	return 1;
}

/* A channel to a unix socket on the host: one step of its open, see
 * struct ssh_chan_kind. */
static int streamlocal_open_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	unsigned char msg[4 + SSH_PATH_MAX + 4 + 4];
	size_t plen = strlen(c->path), n = 0;
	LIBSSH2_CHANNEL *ch;
	int rc;

	if (c->state == CHAN_PROBING)
		return chan_probe_step(c);
	if (!ssh_sess_may_send(s, BUSY_OPEN, c))
		return 0;
	c->state = CHAN_OPENING;
	/* string socket path, string reserved (""), uint32 reserved (0) */
	msg[n++] = (unsigned char)(plen >> 24);
	msg[n++] = (unsigned char)(plen >> 16);
	msg[n++] = (unsigned char)(plen >> 8);
	msg[n++] = (unsigned char)plen;
	memcpy(msg + n, c->path, plen);
	n += plen;
	memset(msg + n, 0, 8);
	n += 8;
	ch = libssh2_channel_open_ex(s->ssh, SSH_CHANNEL_TYPE, sizeof(SSH_CHANNEL_TYPE) - 1,
				     LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_PACKET_DEFAULT,
				     (const char *)msg, (unsigned int)n);
	rc = ch != NULL ? 0 : libssh2_session_last_errno(s->ssh);
	ssh_sess_note_busy(s, BUSY_OPEN, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	s->kick = 1;
	if (ch != NULL) {
		ssh_chan_opened(c, ch);
		return 1;
	}
	if (ssh_rc_fatal(rc)) {
		ssh_sess_fail(s, LM_ERR_IO, "connection to %s lost: %s", s->khname,
			      ssh_sess_lost(s));
		return 0;
	}
	snprintf(c->refusal, sizeof(c->refusal), "%s", ssh_sess_errmsg(s));
	if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE &&
	    strstr(c->refusal, "unknown channel type") != NULL) {
		ssh_chan_failf(c, LM_ERR_IO, "sshd on %s cannot forward to unix sockets "
					     "(OpenSSH 6.7 or later can): %s", s->khname, c->refusal);
		c->state = CHAN_DONE;
	} else if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE && c->attached && !c->failed) {
		c->state = CHAN_PROBING;
		c->probe = PROBE_INIT;
		c->found = FOUND_UNKNOWN;
	} else {
		ssh_chan_failf(c, LM_ERR_IO, "cannot open a channel to %s on %s: %s", c->path,
			       s->khname, c->refusal);
		c->state = CHAN_DONE;
	}
	return 1;
}

static const struct ssh_chan_kind ssh_streamlocal = {
	.open_step = streamlocal_open_step,
};

/* Open channels, one at a time, as far as the peer lets us. */
static void sess_opens(struct ssh_sess *s)
{
	struct tr_ssh *c;

	while (s->state == SESS_READY && (c = sess_open_head(s)) != NULL)
		if (!c->kind->open_step(c))
			return;
}

/* Hand the buffered bytes of open channels to libssh2. */
static void sess_writes(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL && s->state == SESS_READY; c = c->next) {
		while (c->state == CHAN_OPEN && c->attached && !c->failed && c->out_len > 0) {
			ssize_t n;

			if (!ssh_sess_may_send(s, BUSY_WRITE, c))
				return;
			n = libssh2_channel_write(c->ch, c->out, c->out_len);
			ssh_sess_note_busy(s, BUSY_WRITE, c, n == LIBSSH2_ERROR_EAGAIN);
			if (n > 0) {
				memmove(c->out, c->out + n, c->out_len - (size_t)n);
				c->out_len -= (size_t)n;
				continue;
			}
			if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
				break; /* the socket or the channel's window is full */
			if (ssh_rc_fatal((int)n)) {
				ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
					      ssh_sess_lost(s));
				return;
			}
			ssh_chan_failf(c, LM_ERR_EOF, "write failed: %s", ssh_sess_errmsg(s));
		}
	}
}

/* Would a read of len on c send a window adjustment (which must not
 * interleave with another operation's partial packet)? */
static int ssh_chan_read_adjusts(struct tr_ssh *c, size_t len)
{
	unsigned long initial = 0, window;

	window = libssh2_channel_window_read_ex(c->ch, NULL, &initial);
	return window < initial / 4 * 3 + len;
}

/* Pull what the socket holds into libssh2's per-channel queues. */
static void sess_drain(struct ssh_sess *s)
{
	struct tr_ssh *c;
	char dummy[1];
	ssize_t n;

	for (c = s->chans; c != NULL; c = c->next)
		if (c->state == CHAN_OPEN && !c->failed && c->attached &&
		    (ssh_sess_may_send(s, BUSY_READ, c) || !ssh_chan_read_adjusts(c, 0)))
			break;
	if (c == NULL)
		return;
	n = libssh2_channel_read(c->ch, dummy, 0);
	if (n == LIBSSH2_ERROR_EAGAIN || n >= 0) {
		ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
		return;
	}
	if (ssh_rc_fatal((int)n))
		ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
			      ssh_sess_lost(s));
}

/* Finish closing channels nobody holds. */
static void sess_closes(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;

	for (c = s->chans; c != NULL && s->state == SESS_READY; c = next) {
		int rc;

		next = c->next;
		if (c->state != CHAN_CLOSING)
			continue;
		if (!ssh_sess_may_send(s, BUSY_CLOSE, c))
			return;
		rc = libssh2_channel_free(c->ch);
		ssh_sess_note_busy(s, BUSY_CLOSE, c, rc == LIBSSH2_ERROR_EAGAIN);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			continue;
		c->ch = NULL;
		c->state = CHAN_DONE;
		if (ssh_rc_fatal(rc)) {
			ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
				      ssh_sess_lost(s));
			return;
		}
	}
}

/* Free what is finished and held by nobody. */
static void sess_reap(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;

	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		if (!c->attached && c->state == CHAN_DONE) {
			sess_unlink_chan(s, c);
			ssh_chan_free_mem(c);
		}
	}
}

/*
 * Resume a half-sent read or write first (other operations' steps resume
 * themselves): a destroyed channel's too, whose buffer is kept for it.
 */
static void sess_resume(struct ssh_sess *s)
{
	struct tr_ssh *c = s->busy_chan;
	enum busy_op op = s->busy;
	char dummy[1];
	ssize_t n;

	if (op == BUSY_READ) {
		n = libssh2_channel_read(c->ch, dummy, 0);
		ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
	} else if (op == BUSY_WRITE) {
		n = libssh2_channel_write(c->ch, c->out, c->out_len);
		ssh_sess_note_busy(s, BUSY_WRITE, c, n == LIBSSH2_ERROR_EAGAIN);
		if (n > 0) {
			memmove(c->out, c->out + n, c->out_len - (size_t)n);
			c->out_len -= (size_t)n;
		}
	} else {
		return;
	}
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
		if (ssh_rc_fatal((int)n)) {
			ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
				      ssh_sess_lost(s));
			return;
		}
		ssh_chan_failf(c, LM_ERR_IO, "%s failed: %s", op == BUSY_READ ? "read" : "write",
			       ssh_sess_errmsg(s));
	}
	if (s->busy == BUSY_NONE && c->close_after_busy) {
		c->close_after_busy = 0;
		ssh_chan_start_close(c);
	}
}

static void chan_wake(struct tr_ssh *c)
{
	if (c->base.wake != NULL)
		c->base.wake(c->base.wake_arg);
	else
		c->s->kick = 1;
}

/*
 * Does c's user have something to read it may not know of? libssh2 pulls
 * every channel's packets off the socket, so the fd may show nothing.
 * wake_outstanding (cleared by any call of the user) keeps one wake per
 * user action: a user that stopped reading is not woken in a loop.
 */
static int chan_needs_wake(struct tr_ssh *c)
{
	unsigned long avail = 0;

	if (!c->attached || c->wake_outstanding)
		return 0;
	if (c->failed)
		return c->was_open && !c->woke_failed;
	if (c->state != CHAN_OPEN)
		return 0;
	libssh2_channel_window_read_ex(c->ch, &avail, NULL);
	return avail > 0 || (!c->eof_seen && libssh2_channel_eof(c->ch));
}

/*
 * Wake the users that have something to read, and poke the watchers of
 * the socket when a connecting channel changed state (a user still
 * connecting only watches the fd). Runs from the kicker timer, one loop
 * iteration after the pump: a wake given while the user is inside one of
 * our calls would be lost when it re-arms its watcher on the way out.
 */
static void sess_notify(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL; c = c->next) {
		if (!chan_needs_wake(c))
			continue;
		c->wake_outstanding = 1;
		if (c->failed)
			c->woke_failed = 1;
		chan_wake(c);
	}
	if (s->kick && s->fd >= 0) {
		s->kick = 0;
		ev_feed_fd_event(s->loop, s->fd, EV_READ | EV_WRITE);
	}
}

static void sess_kicker_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	sess_notify(w->data);
}

static void sess_schedule_notify(struct ssh_sess *s)
{
	struct tr_ssh *c;
	int need = s->kick;

	for (c = s->chans; c != NULL && !need; c = c->next)
		need = chan_needs_wake(c);
	if (need && !ev_is_active(&s->kicker))
		ev_timer_start(s->loop, &s->kicker);
}

static void sess_update_io(struct ssh_sess *s)
{
	int ev = 0;

	if (s->state == SESS_TCP)
		ev = EV_WRITE;
	else if (s->state > SESS_TCP && s->state < SESS_DEAD)
		ev = EV_READ | ((ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? EV_WRITE : 0);
	if (ev == s->io_events && (ev == 0 || ev_is_active(&s->io)))
		return;
	ev_io_stop(s->loop, &s->io);
	s->io_events = ev;
	if (ev == 0 || s->fd < 0)
		return;
	ev_io_set(&s->io, s->fd, ev);
	ev_io_start(s->loop, &s->io);
}

/* Everything the session can do now. */
static void ssh_pump(struct ssh_sess *s)
{
	int round;

	for (round = 0; round < 3; round++) {
		enum busy_op busy = s->busy;

		if (s->state > SESS_NEW && s->state < SESS_READY)
			ssh_sess_setup(s);
		if (s->state != SESS_READY)
			break;
		sess_resume(s);
		sess_opens(s);
		sess_writes(s);
		sess_drain(s);
		sess_closes(s);
		/* a busy operation that finished late in the round held back
		 * the steps before it: give them another go */
		if (s->busy != BUSY_NONE || busy == BUSY_NONE)
			break;
	}
	sess_reap(s);
	sess_schedule_notify(s);
	sess_update_io(s);
}

static void sess_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	ssh_pump(w->data);
}

static void sess_keepalive_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ssh_sess *s = w->data;
	int next = 0, outq = 0, rc;

	(void)loop;
	(void)revents;
	if (s->state != SESS_READY)
		return;
	/* libssh2 cannot resume a partly sent keepalive (it lives on the stack
	 * of libssh2_keepalive_send): send only when nothing else is pending
	 * and the kernel's send queue is empty, so it goes out whole */
	if (s->busy != BUSY_NONE || ioctl(s->fd, TIOCOUTQ, &outq) < 0 || outq > 0)
		return;
	rc = libssh2_keepalive_send(s->ssh, &next);
	if (rc != 0 || (ssh_sess_dirs(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
		ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: keepalive failed: %s",
			      s->khname, ssh_sess_lost(s));
	ssh_pump(s);
}

/* Connect deadline of one channel (session setup included). */
static void chan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tr_ssh *c = w->data;
	struct ssh_sess *s = c->s;

	(void)loop;
	(void)revents;
	if (c->state == CHAN_OPEN || c->failed)
		return;
	if (s->state != SESS_READY)
		ssh_sess_fail(s, LM_ERR_TIMEOUT, "no answer from %s within %g s while %s",
			      s->khname, s->timeout, ssh_sess_stage(s));
	else
		ssh_chan_failf(c, LM_ERR_TIMEOUT, "sshd on %s did not open the channel within %g s",
			       s->khname, s->timeout);
	if (c->state == CHAN_WAIT)
		c->state = CHAN_DONE; /* still queued: never opened at all */
	ssh_pump(s);
}

/* ------------------------------------------------------------ the transport table */

static int ssh_connect(struct tr *t, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;

	c->wake_outstanding = 0;
	if (c->state == CHAN_NEW && !c->failed) {
		c->state = CHAN_WAIT;
		ev_timer_set(&c->timer, s->timeout, 0.);
		ev_timer_start(s->loop, &c->timer);
		if (s->state == SESS_NEW)
			ssh_sess_start(s);
	}
	if (!c->failed && c->state != CHAN_OPEN)
		ssh_pump(s);
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	return c->state == CHAN_OPEN ? 0 : 1;
}

static ssize_t ssh_read(struct tr *t, char *buf, size_t len, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;
	ssize_t n;

	c->wake_outstanding = 0;
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	if (c->state != CHAN_OPEN)
		return TR_AGAIN;
	if (c->eof_seen)
		return 0;
	if (!ssh_sess_may_send(s, BUSY_READ, c) && ssh_chan_read_adjusts(c, len)) {
		ssh_pump(s);
		return c->failed ? ssh_read(t, buf, len, err) : TR_AGAIN;
	}
	n = libssh2_channel_read(c->ch, buf, len);
	ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN) {
		if (ssh_rc_fatal((int)n))
			ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
				      ssh_sess_lost(s));
		else
			ssh_chan_failf(c, LM_ERR_IO, "read failed: %s", ssh_sess_errmsg(s));
	}
	if (n == 0)
		c->eof_seen = 1;
	ssh_pump(s);
	if (n >= 0)
		return n;
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	return TR_AGAIN;
}

static ssize_t ssh_write(struct tr *t, const char *buf, size_t len, struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;

	c->wake_outstanding = 0;
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	if (c->state != CHAN_OPEN)
		return TR_AGAIN;
	if (len > SSH_OUT_MAX - c->out_len)
		len = SSH_OUT_MAX - c->out_len;
	if (len == 0)
		return TR_AGAIN;
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *nb;

		while (cap < c->out_len + len)
			cap *= 2;
		nb = realloc(c->out, cap);
		if (nb == NULL)
			return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		c->out = nb;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	ssh_pump(c->s);
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	return (ssize_t)len;
}

static int ssh_want(struct tr *t)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;
	int d;

	/* an open channel only ever needs reads from its user: the session
	 * watches for writability itself */
	if (c->failed || c->state == CHAN_OPEN)
		return TR_WANT_READ;
	if (s->state == SESS_TCP)
		return TR_WANT_WRITE;
	d = ssh_sess_dirs(s);
	return ((d & LIBSSH2_SESSION_BLOCK_INBOUND) || !(d & LIBSSH2_SESSION_BLOCK_OUTBOUND)
			? TR_WANT_READ
			: 0) |
	       ((d & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? TR_WANT_WRITE : 0);
}

static int ssh_fd(struct tr *t)
{
	return ((struct tr_ssh *)t)->s->fd;
}

static void ssh_destroy(struct tr *t)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s = c->s;

	c->attached = 0;
	c->base.wake = NULL;
	s->nattached--;
	ev_timer_stop(s->loop, &c->timer);
	if (s->nattached == 0) {
		ssh_sess_free(s); /* frees c too */
		return;
	}
	switch (c->state) {
	case CHAN_NEW:
	case CHAN_WAIT:
		c->state = CHAN_DONE;
		break;
	case CHAN_OPEN:
		/* a half-sent packet of ours must still go out whole first */
		if ((s->busy == BUSY_WRITE || s->busy == BUSY_READ) && s->busy_chan == c)
			c->close_after_busy = 1;
		else
			ssh_chan_start_close(c);
		break;
	default:
		break; /* an open or a probe in progress finishes by itself */
	}
	ssh_pump(s);
}

static const struct tr_ops ssh_chan_ops = {
	.scheme = "ssh",
	.connect = ssh_connect,
	.read = ssh_read,
	.write = ssh_write,
	.want = ssh_want,
	.fd = ssh_fd,
	.destroy = ssh_destroy,
};

/* ------------------------------------------------------------ remote files (SFTP) */

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for the session's socket in the directions libssh2 blocks on, until
 * deadline: 0, or -1 (timed out, or poll failed). */
static int sess_poll(struct ssh_sess *s, double deadline)
{
	int d = ssh_sess_dirs(s), r;
	struct pollfd pfd = { .fd = s->fd, .events = 0 };
	double left = deadline - mono_now();

	if (d & LIBSSH2_SESSION_BLOCK_INBOUND)
		pfd.events |= POLLIN;
	if (d & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pfd.events |= POLLOUT;
	if (pfd.events == 0)
		pfd.events = POLLIN;
	if (left <= 0)
		return -1;
	do
		r = poll(&pfd, 1, (int)(left * 1000) + 1);
	while (r < 0 && errno == EINTR && (left = deadline - mono_now()) > 0);
	return r > 0 ? 0 : -1;
}

/* Does a channel open (ours, or an SFTP probe's) hold libssh2's per-session
 * open state? Another open must not start then. */
static int sess_opening(struct ssh_sess *s)
{
	struct tr_ssh *c;

	for (c = s->chans; c != NULL; c = c->next)
		if (c->state == CHAN_OPENING || c->state == CHAN_PROBING)
			return 1;
	return 0;
}

static int sess_err_to(struct ssh_sess *s, struct tr_ssh *c, struct lm_error *err)
{
	if (c->failed) {
		if (err != NULL)
			*err = c->err;
		return -1;
	}
	return lm_error_set(err, s->err.code ? s->err.code : LM_ERR_EOF, "%s: %s", c->base.desc,
			    s->state == SESS_DEAD ? s->err.msg : "the SSH session is not ready");
}

/*
 * Let the pump finish what the session has half done (a partial packet, a
 * channel open awaiting its answer) before a synchronous exchange takes
 * the session: 0, or -1 with err (nothing of the exchange sent).
 */
static int sess_settle(struct ssh_sess *s, struct tr_ssh *c, double deadline, struct lm_error *err)
{
	for (;;) {
		if (s->state != SESS_READY || c->failed)
			return sess_err_to(s, c, err);
		if (s->busy == BUSY_NONE && !sess_opening(s))
			return 0;
		ssh_pump(s);
		if (s->state != SESS_READY || c->failed)
			return sess_err_to(s, c, err);
		if (s->busy == BUSY_NONE && !sess_opening(s))
			return 0;
		if (sess_poll(s, deadline) < 0)
			return lm_error_set(err, LM_ERR_TIMEOUT,
					    "%s: the SSH session to %s stayed busy for %g s (a "
					    "packet or channel open in progress): cannot check "
					    "remote files now", c->base.desc, s->khname, s->timeout);
	}
}

/* A libssh2 call of the exchange failed with rc (not EAGAIN), or timed out
 * (rc 0): whether the session survives. A timeout mid-exchange leaves
 * libssh2 mid-packet, so the session is given up then. */
static int sftp_fail_session(struct ssh_sess *s, struct tr_ssh *c, int rc, const char *what,
			     const char *path, struct lm_error *err)
{
	if (rc == 0)
		ssh_sess_fail(s, LM_ERR_TIMEOUT,
			      "no answer from %s within %g s while %s %s over SFTP", s->khname,
			      s->timeout, what, path);
	else if (ssh_rc_fatal(rc))
		ssh_sess_fail(s, LM_ERR_EOF, "connection to %s lost: %s", s->khname,
			      ssh_sess_lost(s));
	else
		return 0;
	return sess_err_to(s, c, err);
}

enum sftp_job { SFTP_EXISTS, SFTP_REMOVE, SFTP_READ };

/* What SFTP_READ fills. */
struct sftp_read {
	void *buf;
	size_t len, got;
	char type;
};

/* SFTP_READ after its lstat: open path read-only and read up to rd->len.
 * The libssh2 rc of the step that failed (EAGAIN handled), or 0. */
static int sftp_read_head(struct ssh_sess *s, LIBSSH2_SFTP *sftp, const char *path,
			  struct sftp_read *rd, double deadline)
{
	LIBSSH2_SFTP_HANDLE *h;
	ssize_t n;
	int rc;

	while ((h = libssh2_sftp_open_ex(sftp, path, (unsigned int)strlen(path), LIBSSH2_FXF_READ, 0,
					 LIBSSH2_SFTP_OPENFILE)) == NULL) {
		rc = libssh2_session_last_errno(s->ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			return rc;
		if (sess_poll(s, deadline) < 0)
			return LIBSSH2_ERROR_TIMEOUT;
	}
	rc = 0;
	while (rd->got < rd->len) {
		n = libssh2_sftp_read(h, (char *)rd->buf + rd->got, rd->len - rd->got);
		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (sess_poll(s, deadline) < 0) {
				rc = LIBSSH2_ERROR_TIMEOUT;
				break;
			}
			continue;
		}
		if (n < 0) {
			rc = (int)n;
			break;
		}
		if (n == 0)
			break;
		rd->got += (size_t)n;
	}
	while (libssh2_sftp_close_handle(h) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			return LIBSSH2_ERROR_TIMEOUT;
	return rc;
}

/* One SFTP exchange on c's session, to completion: see transport.h. */
static int ssh_sftp_run(struct tr *t, enum sftp_job job, const char *path, struct sftp_read *rd,
			struct lm_error *err)
{
	struct tr_ssh *c = (struct tr_ssh *)t;
	struct ssh_sess *s;
	const char *what = job == SFTP_REMOVE ? "deleting" : job == SFTP_READ ? "reading" : "checking";
	LIBSSH2_SFTP *sftp = NULL;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	double deadline;
	int rc, result = -1, dead = 0;

	if (t == NULL || t->ops != &ssh_chan_ops)
		return lm_error_set(err, LM_ERR_USAGE, "%s: remote files need an ssh:// transport",
				    t != NULL ? t->desc : "(none)");
	s = c->s;
	c->wake_outstanding = 0;
	if (c->state != CHAN_OPEN || c->failed || s->state != SESS_READY)
		return c->failed || s->state == SESS_DEAD
			       ? sess_err_to(s, c, err)
			       : lm_error_set(err, LM_ERR_USAGE, "%s: not connected", t->desc);
	deadline = mono_now() + s->timeout;
	if (sess_settle(s, c, deadline, err) < 0)
		goto out;

	/* from here on nothing else may use the session until the end */
	while ((sftp = libssh2_sftp_init(s->ssh)) == NULL) {
		rc = libssh2_session_last_errno(s->ssh);
		if (rc == LIBSSH2_ERROR_EAGAIN) {
			if (sess_poll(s, deadline) == 0)
				continue;
			rc = 0;
		}
		if (sftp_fail_session(s, c, rc, what, path, err) < 0) {
			dead = 1;
			goto out;
		}
		lm_error_set(err, LM_ERR_IO, "%s: cannot start SFTP on %s to %s %s: %s (does sshd "
			     "offer the sftp subsystem?)", t->desc, s->khname,
			     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check", path,
			     ssh_sess_errmsg(s));
		goto out;
	}
	for (;;) {
		if (job != SFTP_REMOVE)
			rc = libssh2_sftp_stat_ex(sftp, path, (unsigned int)strlen(path),
						  LIBSSH2_SFTP_LSTAT, &attrs);
		else
			rc = libssh2_sftp_unlink_ex(sftp, path, (unsigned int)strlen(path));
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (sess_poll(s, deadline) < 0) {
			rc = 0;
			(void)sftp_fail_session(s, c, rc, what, path, err);
			dead = 1;
			goto out;
		}
	}
	if (rc == 0 && job == SFTP_READ) {
		unsigned long perm = attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS ? attrs.permissions : 0;

		rd->type = LIBSSH2_SFTP_S_ISREG(perm)	? 'r'
			   : LIBSSH2_SFTP_S_ISBLK(perm) ? 'b'
			   : LIBSSH2_SFTP_S_ISLNK(perm) ? 'l'
							: 'o';
		if (rd->type == 'r' || rd->type == 'b')
			rc = sftp_read_head(s, sftp, path, rd, deadline);
		if (rc == LIBSSH2_ERROR_TIMEOUT) {
			(void)sftp_fail_session(s, c, 0, what, path, err);
			dead = 1;
			goto out;
		}
	}
	if (rc == 0) {
		result = job == SFTP_EXISTS ? 1 : job == SFTP_READ ? (int)rd->got : 0;
	} else if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
		unsigned long fx = libssh2_sftp_last_error(sftp);

		if (fx == LIBSSH2_FX_NO_SUCH_FILE || fx == LIBSSH2_FX_NO_SUCH_PATH)
			result = 0; /* SFTP_READ: type stays 0, missing */
		else
			lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: %s (SFTP status %lu)",
				     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check",
				     path, s->khname,
				     fx == LIBSSH2_FX_PERMISSION_DENIED ? "permission denied"
				     : fx == LIBSSH2_FX_FAILURE	       ? "failed"
									: "refused",
				     fx);
	} else if (sftp_fail_session(s, c, rc, what, path, err) < 0) {
		dead = 1;
		goto out;
	} else {
		lm_error_set(err, LM_ERR_IO, "cannot %s %s on %s: %s",
			     job == SFTP_REMOVE ? "delete" : job == SFTP_READ ? "read" : "check", path,
			     s->khname, ssh_sess_errmsg(s));
	}
	while ((rc = libssh2_sftp_shutdown(sftp)) == LIBSSH2_ERROR_EAGAIN)
		if (sess_poll(s, deadline) < 0)
			break;
	if (rc != LIBSSH2_ERROR_EAGAIN)
		sftp = NULL; /* libssh2 freed it, whatever rc says */
	if (rc == LIBSSH2_ERROR_EAGAIN || ssh_rc_fatal(rc)) {
		/* the close did not finish: libssh2 may hold half a packet */
		struct lm_error e;

		(void)sftp_fail_session(s, c, rc == LIBSSH2_ERROR_EAGAIN ? 0 : rc, "closing the SFTP channel of",
					path, &e);
		if (result >= 0 && err != NULL)
			*err = e;
		dead = 1;
	}
out:
	if (dead && sftp != NULL)
		(void)libssh2_sftp_shutdown(sftp); /* the socket is shut: frees at once */
	if (dead)
		result = -1;
	/* other channels' packets may have been read meanwhile: wake them,
	 * send what they buffered, and watch the socket as libssh2 now needs */
	ev_now_update(s->loop);
	ssh_pump(s);
	return result;
}

int tr_ssh_file_exists(struct tr *t, const char *path, struct lm_error *err)
{
	return ssh_sftp_run(t, SFTP_EXISTS, path, NULL, err);
}

int tr_ssh_file_remove(struct tr *t, const char *path, struct lm_error *err)
{
	return ssh_sftp_run(t, SFTP_REMOVE, path, NULL, err);
}

long tr_ssh_file_read_head(struct tr *t, const char *path, void *buf, size_t len, char *type,
			   struct lm_error *err)
{
	struct sftp_read rd = { buf, len, 0, 0 };
	int r = ssh_sftp_run(t, SFTP_READ, path, &rd, err);

	*type = rd.type;
	return r;
}

/* ------------------------------------------------------------ sessions */

static void ssh_sess_free(struct ssh_sess *s)
{
	struct tr_ssh *c, *next;
	int i;

	sess_unregister(s);
	ev_io_stop(s->loop, &s->io);
	ev_timer_stop(s->loop, &s->keepalive);
	ev_timer_stop(s->loop, &s->kicker);
	if (s->ssh != NULL) {
		if (s->state == SESS_READY && s->busy == BUSY_NONE)
			/* best effort, once: sshd logs a clean disconnect */
			(void)libssh2_session_disconnect(s->ssh, "livemerge done");
		if (s->agent != NULL) {
			libssh2_agent_disconnect(s->agent);
			libssh2_agent_free(s->agent);
		}
		/* with the socket shut down no libssh2 call can wait: closing
		 * channels and the session fail at once instead of EAGAIN */
		if (s->fd >= 0)
			shutdown(s->fd, SHUT_RDWR);
		for (c = s->chans; c != NULL; c = c->next)
			if (c->sftp != NULL)
				(void)libssh2_sftp_shutdown(c->sftp);
		libssh2_session_free(s->ssh);
	}
	if (s->inited)
		libssh2_exit();
	if (s->fd >= 0)
		close(s->fd);
	if (s->ai_list != NULL)
		freeaddrinfo(s->ai_list);
	for (c = s->chans; c != NULL; c = next) {
		next = c->next;
		ssh_chan_free_mem(c);
	}
	for (i = 0; i < s->nids; i++)
		free(s->ids[i]);
	free(s->ids);
	free(s->methods);
	free(s->known_hosts);
	free(s->user);
	free(s->host);
	free(s->khname);
	free(s);
}

static char *ssh_home_path(const char *rel)
{
	const char *home = getenv("HOME");
	struct passwd *pw;
	char *p;

	if (home == NULL || *home == '\0') {
		pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	if (asprintf(&p, "%s/%s", home, rel) < 0)
		return NULL;
	return p;
}

static int key_add(struct ssh_sess *s, const char *file)
{
	char **n;
	int i;

	for (i = 0; i < s->nids; i++)
		if (strcmp(s->ids[i], file) == 0)
			return 0;
	n = realloc(s->ids, sizeof(*n) * (size_t)(s->nids + 1));
	if (n == NULL)
		return -1;
	s->ids = n;
	if ((s->ids[s->nids] = strdup(file)) == NULL)
		return -1;
	s->nids++;
	return 0;
}

/* The identity files to try into s->ids: o's, then those of the defaults
 * that exist. 0, or -1 (out of memory). */
static int ssh_keys_collect(struct ssh_sess *s, const struct tr_opts *o)
{
	static const char *const defaults[] = { ".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa" };
	size_t i;
	int ok = 1;

	for (i = 0; ok && i < (size_t)o->nidentities; i++)
		ok = key_add(s, o->identities[i]) == 0;
	for (i = 0; ok && i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		char *p = ssh_home_path(defaults[i]);

		ok = p != NULL && (access(p, F_OK) != 0 || key_add(s, p) == 0);
		free(p);
	}
	return ok ? 0 : -1;
}

/* The session of the registry to (loop, tg's host and port, user), or NULL. */
static struct ssh_sess *ssh_sess_find(struct ev_loop *loop, const struct tr_ssh_target *tg,
				      const char *user)
{
	struct ssh_sess *s;

	for (s = ssh_sessions; s != NULL; s = s->next)
		if (s->loop == loop && s->port == tg->port && strcmp(s->host, tg->host) == 0 &&
		    strcmp(s->user, user) == 0)
			break;
	return s;
}

/* Add a new channel c, held by its user, to s. */
static void ssh_sess_attach(struct ssh_sess *s, struct tr_ssh *c)
{
	struct tr_ssh **pp = &s->chans;

	/* append: opens go in the order the channels were made */
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = c;
	s->nattached++;
}

static struct ssh_sess *ssh_sess_new(struct ev_loop *loop, const struct tr_ssh_target *tg,
				     const char *user, const struct tr_opts *o)
{
	struct ssh_sess *s = calloc(1, sizeof(*s));
	int ok;

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->fd = -1;
	s->port = tg->port;
	s->accept_new = o->accept_new_hostkey;
	s->timeout = o->timeout > 0 ? o->timeout : SSH_DEFAULT_TIMEOUT;
	s->user = strdup(user);
	s->host = strdup(tg->host);
	if (tg->port == 22)
		s->khname = strdup(tg->host);
	else if (asprintf(&s->khname, "[%s]:%d", tg->host, tg->port) < 0)
		s->khname = NULL;
	s->known_hosts =
		o->known_hosts ? strdup(o->known_hosts) : ssh_home_path(".ssh/known_hosts");
	ok = s->user && s->host && s->khname && s->known_hosts && ssh_keys_collect(s, o) == 0;
	if (!ok) {
		ssh_sess_free(s);
		return NULL;
	}
	libssh2_init(0);
	s->inited = 1;
	ev_init(&s->io, sess_io_cb);
	s->io.data = s;
	ev_timer_init(&s->keepalive, sess_keepalive_cb, SSH_KEEPALIVE_S, SSH_KEEPALIVE_S);
	s->keepalive.data = s;
	ev_timer_init(&s->kicker, sess_kicker_cb, 0., 0.);
	s->kicker.data = s;
	s->next = ssh_sessions;
	ssh_sessions = s;
	s->registered = 1;
	return s;
}

/* ------------------------------------------------------------ targets */

int tr_ssh_target_parse(const char *target, struct tr_ssh_target *out, struct lm_error *err)
{
	const char *auth, *slash, *at, *hp, *colon = NULL, *p;
	long port = 22;

	memset(out, 0, sizeof(*out));
	if (strncmp(target, "ssh://", 6) != 0)
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': expected ssh://[USER@]HOST[:PORT]/PATH", target);
	auth = target + 6;
	slash = strchr(auth, '/');
	if (slash == NULL || slash[1] == '\0')
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': no socket path (ssh://[USER@]HOST[:PORT]/PATH)",
				    target);
	if (strlen(slash) > SSH_PATH_MAX)
		return lm_error_set(err, LM_ERR_USAGE,
				    "target '%s': socket path longer than %d bytes", target,
				    SSH_PATH_MAX);
	at = NULL;
	for (p = auth; p < slash; p++)
		if (*p == '@')
			at = p; /* the last '@', as OpenSSH takes it */
	hp = at ? at + 1 : auth;
	if (at == auth)
		return lm_error_set(err, LM_ERR_USAGE, "target '%s': empty user name", target);
	if (*hp == '[') {
		const char *close = memchr(hp, ']', (size_t)(slash - hp));

		if (close == NULL || close == hp + 1)
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': expected [ADDRESS] for an IPv6 host", target);
		if (close + 1 != slash && close[1] != ':')
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': unexpected text after ']'", target);
		if (close[1] == ':')
			colon = close + 1;
		out->host = strndup(hp + 1, (size_t)(close - hp - 1));
	} else {
		colon = memchr(hp, ':', (size_t)(slash - hp));
		if (colon != NULL && memchr(colon + 1, ':', (size_t)(slash - colon - 1)) != NULL)
			return lm_error_set(err, LM_ERR_USAGE,
					    "target '%s': an IPv6 host goes in brackets: "
					    "ssh://[ADDRESS]:PORT/PATH", target);
		if ((colon ? colon : slash) == hp)
			return lm_error_set(err, LM_ERR_USAGE, "target '%s': empty host name",
					    target);
		out->host = strndup(hp, (size_t)((colon ? colon : slash) - hp));
	}
	if (colon != NULL) {
		char *end;

		if (colon + 1 == slash || colon[1] < '0' || colon[1] > '9')
			goto bad_port;
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (errno != 0 || end != slash || port < 1 || port > 65535)
			goto bad_port;
	}
	out->port = (int)port;
	if (at != NULL)
		out->user = strndup(auth, (size_t)(at - auth));
	out->path = strdup(slash);
	if (out->host == NULL || out->path == NULL || (at != NULL && out->user == NULL)) {
		tr_ssh_target_clear(out);
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	for (p = out->host; *p != '\0'; p++)
		if (*p <= ' ' || *p == '@' || *p == '[' || *p == ']') {
			tr_ssh_target_clear(out);
			return lm_error_set(err, LM_ERR_USAGE, "target '%s': bad host name", target);
		}
	return 0;

bad_port:
	tr_ssh_target_clear(out);
	return lm_error_set(err, LM_ERR_USAGE, "target '%s': the port must be a number from 1 "
					       "to 65535", target);
}

void tr_ssh_target_clear(struct tr_ssh_target *tg)
{
	free(tg->user);
	free(tg->host);
	free(tg->path);
	memset(tg, 0, sizeof(*tg));
}

static struct tr *ssh_new(const char *target, const struct tr_opts *opts, struct lm_error *err)
{
	struct tr_ssh_target tg;
	struct ssh_sess *s;
	struct tr_ssh *c;
	const char *user;
	struct passwd *pw;

	if (tr_ssh_target_parse(target, &tg, err) < 0)
		return NULL;
	if (opts == NULL || opts->loop == NULL) {
		tr_ssh_target_clear(&tg);
		lm_error_set(err, LM_ERR_USAGE, "target '%s': ssh targets need an event loop "
						"(tr_new_ex with opts->loop)", target);
		return NULL;
	}
	user = tg.user;
	if (user == NULL) {
		pw = getpwuid(getuid());
		user = pw != NULL ? pw->pw_name : getenv("USER");
		if (user == NULL) {
			tr_ssh_target_clear(&tg);
			lm_error_set(err, LM_ERR_USAGE, "target '%s': no user name: use "
							"ssh://USER@HOST/PATH", target);
			return NULL;
		}
	}
	s = ssh_sess_find(opts->loop, &tg, user);
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->base.desc = strdup(target)) == NULL ||
	    (c->path = strdup(tg.path)) == NULL ||
	    (s == NULL && (s = ssh_sess_new(opts->loop, &tg, user, opts)) == NULL)) {
		if (c != NULL) {
			free(c->path);
			free(c->base.desc);
			free(c);
		}
		tr_ssh_target_clear(&tg);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	tr_ssh_target_clear(&tg);
	c->base.ops = &ssh_chan_ops;
	c->kind = &ssh_streamlocal;
	c->s = s;
	c->attached = 1;
	c->state = CHAN_NEW;
	ev_init(&c->timer, chan_timer_cb);
	c->timer.data = c;
	ssh_sess_attach(s, c);
	return &c->base;
}

struct tr *tr_new_ex(const char *target, const struct tr_opts *opts, struct lm_error *err)
{
	if (strncmp(target, "ssh://", 6) == 0)
		return ssh_new(target, opts, err);
	return tr_new(target, err);
}

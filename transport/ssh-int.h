/*
 * transport/ssh-int.h: the insides of the ssh:// transport, shared by its
 * files and by nothing else (not installed; included only by
 * transport/ssh-*.c). What it does for its users is in transport.h.
 *
 * An ssh:// transport is a byte stream to a unix socket on another host,
 * through an SSH channel. libssh2 runs non-blocking on the caller's libev
 * loop; no thread, no child process, no helper program on the remote host.
 * The files, one concern each:
 *
 *   ssh-target.c       ssh://[USER@]HOST[:PORT]/PATH taken apart
 *   ssh-channel.c      a channel behind the transport table (struct tr_ssh)
 *   ssh-streamlocal.c  the kind of channel that reaches a unix socket
 *   ssh-session.c      sessions shared by channels: registry, pump, failure
 *   ssh-connect.c      a session from TCP connect to authenticated
 *   ssh-knownhosts.c   the host key against known_hosts
 *   ssh-auth.c         public key authentication (ssh-agent, then files)
 *   ssh-keys.c         the private key files to try, and what each is
 *   ssh-exec.c         the kind of channel that runs a command on the host
 *   ssh-sftp.c         the kind that is one SFTP exchange about a file
 *
 * Names: static functions carry the prefix of what they act on (sess_,
 * chan_, hostkey_, key_, sftp_); the functions declared here add ssh_ in
 * front (ssh_sess_fail, ssh_chan_failf); the public ones are tr_ssh_ in
 * transport.h, the constructor tr_ssh_new in transport-int.h.
 */
#ifndef LM_TRANSPORT_SSH_INT_H
#define LM_TRANSPORT_SSH_INT_H

#include <ev.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>

#include "transport-int.h"

#ifndef SSH_KEEPALIVE_S
#define SSH_KEEPALIVE_S 15 /* s between keepalives; -D for tests */
#endif
#define SSH_PATH_MAX 107 /* a remote sun_path, less its NUL */

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
	/* NULL, or take what else the channel carries (an exec's stderr)
	 * before each read of the stream and once at its end */
	void (*side_read)(struct tr_ssh *c);
};

/* One channel: the ssh:// transport a user holds. */
struct tr_ssh {
	struct tr base;
	struct ssh_sess *s;
	const struct ssh_chan_kind *kind;
	struct tr_ssh *next; /* in s->chans, in the order made */
	char *path; /* the socket on the host */
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
	/* why an open was refused (ssh-streamlocal.c) */
	char refusal[160];
	enum probe_step probe;
	enum probe_found found;
	LIBSSH2_SFTP *sftp;
	/* an exec channel (ssh-exec.c): the last bytes of its stderr */
	int exec_started;
	char errtail[512];
	size_t errlen;
	/* an SFTP exchange (ssh-sftp.c), run whole as the channel's open */
	enum tr_sftp_job job;
	int job_step;
	int job_done; /* ended: connect() returns 0 */
	struct lm_error job_err;
	int job_failed;
	LIBSSH2_SFTP_HANDLE *fh;
	unsigned char *jbuf;
	size_t jlen, jgot; /* a listing: jlen its limit */
	size_t jcap;       /* a listing: jbuf's size */
	char jtype;
};

/* One SSH session, shared by the channels to one (loop, user, host, port). */
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
	/* remote files (ssh-sftp.c): what the host refused, so it is asked once */
	int no_sftp; /* the sftp subsystem was refused: use an exec channel */
	int no_exec; /* an exec channel ran no shell for us either (ForceCommand) */

	/* authentication */
	enum auth_step auth;
	char *methods;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *agent_key;
	int agent_tried;
	int id_next;
	char tried[400];
};

/* ssh-session.c: the registry */

/* The session of the registry to (loop, tg's host and port, user), or NULL. */
struct ssh_sess *ssh_sess_find(struct ev_loop *loop, const struct tr_ssh_target *tg,
			       const char *user);
/* A new session in the registry, not connected (o's options copied), or
 * NULL (out of memory). */
struct ssh_sess *ssh_sess_new(struct ev_loop *loop, const struct tr_ssh_target *tg,
			      const char *user, const struct tr_opts *o);
/* Add a new channel c, held by its user, to s. */
void ssh_sess_attach(struct ssh_sess *s, struct tr_ssh *c);
/* Close s and free it with all its channels. */
void ssh_sess_free(struct ssh_sess *s);

/* ssh-session.c: state and failure */

/* Everything the session can do now; then wake users, watch the socket. */
void ssh_pump(struct ssh_sess *s);
/*
 * The session is gone: every channel fails with the message (the socket
 * is shut down, not closed, so that the fd number stays ours while the
 * users' watchers still name it). Channels nobody holds are freed.
 */
void ssh_sess_fail(struct ssh_sess *s, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* ssh_sess_fail with "connection to HOST lost: " and what the socket saw. */
void ssh_sess_fail_lost(struct ssh_sess *s, enum lm_err_code code);
/* libssh2's last error message of s. */
const char *ssh_sess_errmsg(struct ssh_sess *s);
/* Why the connection broke, as the socket saw it. */
const char *ssh_sess_lost(struct ssh_sess *s);
/* libssh2_session_block_directions, 0 without a libssh2 session. */
int ssh_sess_dirs(struct ssh_sess *s);
/* Errors after which the session cannot carry anything any more. */
int ssh_rc_fatal(int rc);
/* May the operation (op, c) send now? Only the busy one, or any when none
 * is: libssh2 must finish a partial packet before it takes another. */
int ssh_sess_may_send(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c);
/* After an operation returned EAGAIN or finished: note or clear busy. */
void ssh_sess_note_busy(struct ssh_sess *s, enum busy_op op, struct tr_ssh *c, int again);

/* ssh-connect.c */

/* Resolve and start the TCP connect (SESS_NEW to SESS_TCP), or fail s. */
void ssh_sess_start(struct ssh_sess *s);
/* Advance the session towards SESS_READY, as far as the peer lets us. */
void ssh_sess_setup(struct ssh_sess *s);
/* What the session was doing, for a timeout's message. */
const char *ssh_sess_stage(const struct ssh_sess *s);

/* ssh-knownhosts.c: check the server's key: 0, or -1 with the session
 * failed (HOSTKEY). */
int ssh_hostkey_check(struct ssh_sess *s);

/* ssh-auth.c: one step of authentication: 1 done, 0 wait, -1 failed
 * (session failed). */
int ssh_auth_step(struct ssh_sess *s);

/* ssh-keys.c */

/* The identity files to try into s->ids: o's, then those of the defaults
 * that exist. 0, or -1 (out of memory). */
int ssh_keys_collect(struct ssh_sess *s, const struct tr_opts *o);
/* What a private key file is, without decrypting it: 1 encrypted, 0 not,
 * -1 unreadable (errno). *rsa: an RSA key. */
int ssh_key_inspect(const char *file, int *rsa);
/* "$HOME/rel" (owned), or NULL (out of memory). */
char *ssh_home_path(const char *rel);
/* base64 of src without '=' padding, as OpenSSH prints fingerprints */
void ssh_b64_encode_nopad(const unsigned char *src, size_t len, char *dst, size_t cap);

/* ssh-channel.c */

extern const struct tr_ops ssh_chan_ops;
/* Fail c with e (sticky; the first failure stays). */
void ssh_chan_fail(struct tr_ssh *c, const struct lm_error *e);
/* Fail c with a message after its target. */
void ssh_chan_failf(struct tr_ssh *c, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* c's open succeeded with ch (any kind of channel). */
void ssh_chan_opened(struct tr_ssh *c, LIBSSH2_CHANNEL *ch);
/* Drop c's unsent bytes and have the pump close it. */
void ssh_chan_start_close(struct tr_ssh *c);
/* Would a read of len on c send a window adjustment (which must not
 * interleave with another operation's partial packet)? */
int ssh_chan_read_adjusts(struct tr_ssh *c, size_t len);
/* Free c's memory (not its libssh2 channel). */
void ssh_chan_free_mem(struct tr_ssh *c);

/* A channel of kind on the session of target's host (made, unconnected, if
 * the loop has none), held by its user; path: the kind's own string (NULL:
 * the target's path). NULL with err. */
struct tr_ssh *ssh_chan_make(const char *target, const struct tr_opts *opts,
			     const struct ssh_chan_kind *kind, const char *path,
			     struct lm_error *err);

/* ssh-streamlocal.c: to a unix socket on the host (c->path) */
extern const struct ssh_chan_kind ssh_streamlocal;
/* ssh-exec.c: a command (c->path) run by the host's shell */
extern const struct ssh_chan_kind ssh_exec;
/* ssh-sftp.c: one SFTP exchange about the file c->path */
extern const struct ssh_chan_kind ssh_sftp_job;

#endif

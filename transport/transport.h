/*
 * transport: byte streams to a monitor, as a table of functions.
 *
 * Every transport is non-blocking and says what it waits for: after an
 * operation returns TR_AGAIN, tr_want() tells which directions
 * (TR_WANT_READ|TR_WANT_WRITE) of tr_fd() to wait on before calling again.
 * For a socket that is the obvious direction; for an SSH channel it is what
 * libssh2_session_block_directions() reports, which may be the other one.
 *
 * A transport that can hold received bytes the fd does not show (an SSH
 * session shared by several channels) calls t->wake(t->wake_arg) when it
 * has bytes for this stream; the user of the transport then reads. wake
 * must not call back into the transport (qmp/conn's feeds its ev_io). A
 * transport whose user set no wake gets its fd's watchers run instead.
 *
 * Targets: "unix:PATH", "tcp:HOST:PORT", "tcp:[ADDRESS]:PORT", any other
 * string without "://" taken as a unix socket path, and (tr_new_ex only)
 * "ssh://[USER@]HOST[:PORT]/PATH": the unix socket PATH on HOST, reached
 * through sshd (transport/ssh-*.c). All ssh:// transports of one loop to the
 * same USER, HOST and PORT share one SSH session (the first one's options
 * hold for it); each is its own channel. The registry of sessions is not
 * locked: use ssh:// transports from one thread.
 */
#ifndef LM_TRANSPORT_H
#define LM_TRANSPORT_H

#include <sys/types.h>

#include "../common/lm-error.h"

#define TR_WANT_READ 1
#define TR_WANT_WRITE 2
#define TR_AGAIN (-2)

struct tr;

struct tr_ops {
	const char *scheme;
	/* Advance the connection: 0 connected, 1 in progress (wait on
	 * tr_want() and call again), -1 failed (err filled). */
	int (*connect)(struct tr *t, struct lm_error *err);
	/* >0 bytes read, 0 end of stream, TR_AGAIN, -1 failed (err filled). */
	ssize_t (*read)(struct tr *t, char *buf, size_t len, struct lm_error *err);
	/* >0 bytes written, TR_AGAIN, -1 failed (err filled). */
	ssize_t (*write)(struct tr *t, const char *buf, size_t len, struct lm_error *err);
	int (*want)(struct tr *t);
	int (*fd)(struct tr *t);
	/* Close and free the transport. */
	void (*destroy)(struct tr *t);
};

struct tr {
	const struct tr_ops *ops;
	char *desc; /* the target as the user wrote it, for messages */
	void (*wake)(void *arg);
	void *wake_arg;
};

/*
 * Make a transport for a target string; nothing is connected yet. Returns
 * an owned transport (free with tr_free) or NULL with err filled (USAGE for
 * a target that cannot be understood).
 */
struct tr *tr_new(const char *target, struct lm_error *err);

/* Options of tr_new_ex; all but loop matter only to ssh:// targets. */
struct ev_loop;
struct tr_opts {
	struct ev_loop *loop;              /* required for ssh:// */
	const char *const *identities;     /* private key files to try, in order, */
	int nidentities;                   /*   before ~/.ssh/id_{ed25519,ecdsa,rsa} */
	const char *known_hosts;           /* NULL: ~/.ssh/known_hosts */
	int accept_new_hostkey;            /* add an unknown host's key (never a changed one) */
	double timeout;                    /* s for TCP connect, SSH setup, channel open; 0: 15 */
};

/*
 * tr_new with options (copied; opts may be NULL for unix and tcp). For
 * ssh:// nothing touches the network before the first tr_connect. Failures
 * of an ssh:// transport use LM_ERR_HOSTKEY (unknown or changed host key),
 * LM_ERR_AUTH (no key accepted), LM_ERR_TIMEOUT, LM_ERR_IO and LM_ERR_EOF,
 * each with one line that names the target and what to do.
 */
struct tr *tr_new_ex(const char *target, const struct tr_opts *opts, struct lm_error *err);

/* An ssh:// target taken apart (user NULL when not given; port 22 then). */
struct tr_ssh_target {
	char *user;
	char *host; /* without the brackets of an IPv6 address */
	int port;
	char *path; /* absolute */
};

/* Parse target into *out (owned strings: tr_ssh_target_clear). 0, or -1
 * with err (USAGE for a malformed target, with out cleared). */
int tr_ssh_target_parse(const char *target, struct tr_ssh_target *out, struct lm_error *err);
void tr_ssh_target_clear(struct tr_ssh_target *tg);

/*
 * Files on the host of a connected ssh:// transport t, over SFTP on t's
 * session (the paths are that host's): tr_ssh_file_exists 1 exists (lstat:
 * a dangling symlink counts), 0 does not, -1 error; tr_ssh_file_remove 0
 * removed or already gone, -1 error. Each is a short blocking exchange
 * bounded by the session timeout, like agent authentication: what the
 * session has half sent (or a channel open it awaits) is finished first,
 * or the call refuses (TIMEOUT, nothing sent); no other channel of the
 * session moves meanwhile, and those with data read in the meantime are
 * woken afterwards. A peer that stops answering mid-exchange fails the
 * whole session (TIMEOUT). Meant for before a merge starts and after it
 * ends, not while jobs are watched. Not an ssh:// transport: -1, USAGE.
 */
int tr_ssh_file_exists(struct tr *t, const char *path, struct lm_error *err);
int tr_ssh_file_remove(struct tr *t, const char *path, struct lm_error *err);
/* The same exchange: what path is (*type: 'r' regular, 'b' block device,
 * 'l' symlink, 'o' other, 0 missing; lstat, never following a final
 * symlink) and, for 'r' and 'b', up to len of its first bytes into buf.
 * The count read, or -1 (err). */
long tr_ssh_file_read_head(struct tr *t, const char *path, void *buf, size_t len, char *type,
			   struct lm_error *err);

/* A transport over an fd already connected (tests, socketpair). Takes fd. */
struct tr *tr_new_fd(int fd, const char *desc, struct lm_error *err);

/* Close and free; NULL is fine. */
void tr_free(struct tr *t);

static inline int tr_connect(struct tr *t, struct lm_error *err)
{
	return t->ops->connect(t, err);
}
static inline ssize_t tr_read(struct tr *t, char *buf, size_t len, struct lm_error *err)
{
	return t->ops->read(t, buf, len, err);
}
static inline ssize_t tr_write(struct tr *t, const char *buf, size_t len, struct lm_error *err)
{
	return t->ops->write(t, buf, len, err);
}
static inline int tr_want(struct tr *t)
{
	return t->ops->want(t);
}
static inline int tr_fd(struct tr *t)
{
	return t->ops->fd(t);
}

#endif

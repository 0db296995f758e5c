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
 * Work on the host of an ssh:// target, each on a channel of its own of the
 * session that target's transports share (made if the loop has none:
 * connected and authenticated as tr_new_ex's; opts as there). Each is a
 * transport like the others, on the loop, never blocking: drive it with
 * tr_connect until 0 (its fd, want and wake as for any), read it, tr_free it.
 */

/* A command run by the host's login shell (an exec channel; cmd is shell
 * text, quote it). tr_read gives its stdout; nothing is written to its
 * stdin, which stays open until tr_free (the command may take that end as
 * its sign to stop). tr_connect fails UNSUPPORTED when sshd refuses to run
 * commands. */
struct tr *tr_ssh_exec_new(const char *target, const struct tr_opts *opts, const char *cmd,
			   struct lm_error *err);
/* The last bytes (at most 511) the command wrote to stderr so far; raw
 * bytes from the host, NUL-terminated; "" for another transport. */
const char *tr_ssh_exec_stderr(struct tr *t);

/* One SFTP exchange about path on the host: TR_SFTP_LOOK: what it is
 * (lstat: a final symlink is not followed) and, for a regular file or a
 * block device, its first len bytes; TR_SFTP_REMOVE: unlink it. tr_connect
 * returns 0 once it has ended (then tr_ssh_sftp_result), 1 while it runs,
 * -1 failed: UNSUPPORTED when the host has no sftp subsystem (the session
 * remembers: later ones fail at once), IO when the host refused (e.g.
 * permission denied), TIMEOUT, EOF. Nothing is ever read from it. */
enum tr_sftp_job {
	TR_SFTP_LOOK,
	TR_SFTP_LOOK_DEVICE, /* the same, following a final symlink to a block device */
	TR_SFTP_REMOVE,
	TR_SFTP_LIST, /* the directory path's entries (lstat kinds), at most len bytes */
};
struct tr *tr_ssh_sftp_new(const char *target, const struct tr_opts *opts, enum tr_sftp_job job,
			   const char *path, size_t len, struct lm_error *err);
/* After tr_connect returned 0: *type is 'r' regular, 'b' block device, 'l'
 * symlink, 'o' other, 0 missing (a removal: removed, or already gone); the
 * bytes read (borrowed until tr_free), *len of them. A listing: *type 'd'
 * (0: no such directory), the bytes one record per entry (kind letter r b
 * l o, the name, a NUL), "." and ".." left out. */
const void *tr_ssh_sftp_result(struct tr *t, char *type, size_t *len);

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

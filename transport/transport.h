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
 * has bytes for this stream; the user of the transport then reads.
 *
 * Targets: "unix:PATH", "tcp:HOST:PORT", "tcp:[ADDRESS]:PORT", and any other
 * string without "://" taken as a unix socket path.
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

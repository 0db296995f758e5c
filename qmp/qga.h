/*
 * qmp/qga: a client of the QEMU guest agent (qemu-ga) on libev.
 *
 * The agent speaks QMP-like JSON without a greeting or ids one can trust
 * across a reconnect, over a channel that may hold stale bytes from an
 * earlier client. So: on connect, and again after any timeout, the client
 * sends 0xFF and guest-sync-delimited with a fresh random id, discards
 * input up to the agent's 0xFF sentinel, and waits for that id to come
 * back before it sends anything else. Commands then go one at a time.
 *
 * Callbacks follow qmp/conn's rules: each runs exactly once, replies are
 * borrowed, qga_free() may be called from inside one.
 */
#ifndef QMP_QGA_H
#define QMP_QGA_H

#include <ev.h>
#include <json-c/json.h>

#include "../transport/transport.h"
#include "proto.h"

struct qga;

typedef void (*qga_reply_cb)(struct qga *q, json_object *ret, const struct lm_error *err,
			     void *arg);

/* New agent client over t (taken). timeout: per command and for syncing,
 * seconds (0: 10). NULL on ENOMEM (t freed). */
struct qga *qga_new(struct ev_loop *loop, struct tr *t, double timeout);

/* Queue a command; cb runs exactly once, never from inside this call.
 * Connecting and syncing happen as needed. -1 (err) when out of memory. */
int qga_execute(struct qga *q, const char *name, json_object *args, qga_reply_cb cb, void *arg,
		struct lm_error *err);

const char *qga_desc(const struct qga *q);

/* Fail what is queued ("closed") and free; NULL is fine; deferred inside
 * a callback. */
void qga_free(struct qga *q);

/*
 * The framing alone, without I/O (what the client uses, and what the fuzzer
 * drives). After qga_framer_sync(f, id), input up to the agent's 0xFF
 * sentinel is dropped (every 0xFF before the sync completes starts that
 * over), then messages until {"return": id} are dropped as stale;
 * qga_framer_next() returns 2 once for that reply, then 1 per message.
 * 0: more bytes needed; -1: protocol error (err), sticky.
 */
struct qga_framer;

struct qga_framer *qga_framer_new(void);
void qga_framer_sync(struct qga_framer *f, int64_t id);
int qga_framer_feed(struct qga_framer *f, const char *buf, size_t len, struct lm_error *err);
int qga_framer_next(struct qga_framer *f, struct qmp_msg **out, struct lm_error *err);
void qga_framer_free(struct qga_framer *f);

#endif

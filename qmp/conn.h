/*
 * qmp/conn: one QMP monitor connection on a libev loop.
 *
 * Owns its transport, a parser, an output buffer and the table of commands
 * in flight keyed by id. It reads the greeting, negotiates
 * qmp_capabilities, then sends commands as they come (several in flight;
 * commands issued before negotiation finishes wait for it).
 *
 * Callback contract:
 *  - a command's callback runs exactly once: with the return value, or with
 *    an error (QEMU's error, the command's timeout, or the connection's
 *    failure). It never runs from inside qmp_conn_execute().
 *  - everything handed to a callback is borrowed for the duration of the
 *    call; take json_object_get() to keep a value.
 *  - qmp_conn_free() may be called from inside any callback; the free
 *    happens when the callback returns. Pending callbacks then run with an
 *    EOF error "connection closed".
 *  - failure is sticky: after EOF, a reset, a protocol error or an id-less
 *    error from QEMU, every pending command fails with that error, the state
 *    callback runs once with it, and every later execute fails at once.
 */
#ifndef QMP_CONN_H
#define QMP_CONN_H

#include <ev.h>
#include <json-c/json.h>
#include <stdio.h>

#include "../transport/transport.h"
#include "proto.h"

struct qmp_conn;

struct qmp_conn_opts {
	double connect_timeout; /* connect + greeting + negotiation, s; 0: 10 */
	double command_timeout; /* default per command, s; 0: none */
	struct qmp_parser_limits limits; /* zeros: the parser's defaults */
	FILE *trace; /* if set, every message in and out is written here */
};

/* ret: the "return" value (never NULL on success); err: NULL on success. */
typedef void (*qmp_reply_cb)(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			     void *arg);
/* An event, borrowed for the call. */
typedef void (*qmp_event_cb)(struct qmp_conn *c, const struct qmp_msg *ev, void *arg);
/* err NULL: negotiated and ready. Otherwise the connection failed (sticky). */
typedef void (*qmp_state_cb)(struct qmp_conn *c, const struct lm_error *err, void *arg);

/*
 * New connection over t (taken, freed with the connection) on loop. opts may
 * be NULL. Nothing happens until qmp_conn_start(). NULL on ENOMEM (t freed).
 */
struct qmp_conn *qmp_conn_new(struct ev_loop *loop, struct tr *t,
			      const struct qmp_conn_opts *opts);

void qmp_conn_set_event_cb(struct qmp_conn *c, qmp_event_cb cb, void *arg);
void qmp_conn_set_state_cb(struct qmp_conn *c, qmp_state_cb cb, void *arg);

/* Begin connecting. 0, or -1 with err filled if the connection failed
 * already (the state callback is not called for that; commands queued
 * before it run with that error when the connection is freed). */
int qmp_conn_start(struct qmp_conn *c, struct lm_error *err);

/*
 * Send command name with args (borrowed, may be NULL). timeout: seconds,
 * < 0 for the connection's default, 0 for none. Returns 0 and calls cb
 * exactly once later; or -1 (err filled, cb never called) if the connection
 * has failed or memory ran out.
 */
int qmp_conn_execute(struct qmp_conn *c, const char *name, json_object *args, double timeout,
		     qmp_reply_cb cb, void *arg, struct lm_error *err);

/* The loop the connection runs on. */
struct ev_loop *qmp_conn_loop(const struct qmp_conn *c);

/* 1 once negotiated and not failed. */
int qmp_conn_ready(const struct qmp_conn *c);

/* The sticky error, or NULL while the connection is healthy. */
const struct lm_error *qmp_conn_error(const struct qmp_conn *c);

/* The greeting's "QMP" member (borrowed), NULL before it arrived. */
json_object *qmp_conn_greeting(const struct qmp_conn *c);

/* QEMU's version as major*10000+minor*100+micro, 0 if unknown. */
int qmp_conn_qemu_version(const struct qmp_conn *c);

/* The transport's description (the target string). */
const char *qmp_conn_desc(const struct qmp_conn *c);

/* Number of commands in flight or waiting to be sent. */
int qmp_conn_pending(const struct qmp_conn *c);

/* Close, fail what is pending ("connection closed") and free; NULL is
 * fine. Deferred when called from inside one of this connection's
 * callbacks. */
void qmp_conn_free(struct qmp_conn *c);

#endif

/*
 * qmp/proto: the QMP codec. Bytes in, typed messages out; no I/O.
 *
 * A parser is fed whatever bytes arrived (any split: a message over many
 * reads, several messages in one read, pretty-printed over lines) and hands
 * back whole messages, classified by their key, never by position:
 * greeting ("QMP"), return, error, event. Hard caps bound what a hostile
 * peer can make it hold: bytes per message, values per message, nesting
 * depth. Breaking a cap, or sending anything that is not a JSON object,
 * is a protocol error; the parser then stays failed (sticky).
 *
 * Usage: p = qmp_parser_new(NULL); for each read: qmp_parser_feed(p, buf,
 * n); while ((r = qmp_parser_next(p, &msg, &err)) == 1) { use msg;
 * qmp_msg_free(msg); } if (r < 0) give up.
 */
#ifndef QMP_PROTO_H
#define QMP_PROTO_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/lm-error.h"

#define QMP_DEFAULT_MAX_BYTES ((size_t)64 << 20) /* as QEMU's own parser */
#define QMP_DEFAULT_MAX_VALUES ((size_t)1 << 21)
#define QMP_DEFAULT_MAX_DEPTH 1024

struct qmp_parser_limits {
	size_t max_bytes;  /* bytes of one message, whitespace inside included */
	size_t max_values; /* objects, arrays and members/elements of one message */
	int max_depth;     /* nesting of objects and arrays */
};

enum qmp_msg_type {
	QMP_MSG_GREETING,
	QMP_MSG_RETURN,
	QMP_MSG_ERROR,
	QMP_MSG_EVENT,
};

/*
 * One message. Owns root; every other pointer borrows from root and lives
 * as long as the message does. Take json_object_get() on a member to keep it
 * past qmp_msg_free().
 */
struct qmp_msg {
	enum qmp_msg_type type;
	json_object *root;
	json_object *id;          /* RETURN/ERROR: echoed id or NULL */
	json_object *ret;         /* RETURN: the value of "return" */
	const char *err_class;    /* ERROR: "GenericError", ... ("" if absent) */
	const char *err_desc;     /* ERROR: QEMU's description ("" if absent) */
	const char *event;        /* EVENT: its name */
	json_object *data;        /* EVENT: "data" or NULL */
	int64_t ts_sec, ts_usec;  /* EVENT: QEMU's timestamp, -1 if absent */
	json_object *greeting;    /* GREETING: the value of "QMP" */
};

struct qmp_parser;

/* New parser with the given caps (NULL: the defaults above). NULL on ENOMEM. */
struct qmp_parser *qmp_parser_new(const struct qmp_parser_limits *limits);

/* Free a parser; NULL is fine. */
void qmp_parser_free(struct qmp_parser *p);

/*
 * Append len bytes (copied). Returns 0, or -1 with err filled when out of
 * memory or the parser already failed. Call qmp_parser_next until it returns
 * 0 before the next feed, so that at most one read's worth stays buffered.
 */
int qmp_parser_feed(struct qmp_parser *p, const char *buf, size_t len, struct lm_error *err);

/*
 * Take the next whole message: 1 and *out set (caller owns it, free with
 * qmp_msg_free), 0 when more bytes are needed, -1 on a protocol error (err
 * filled; every later call fails the same way).
 */
int qmp_parser_next(struct qmp_parser *p, struct qmp_msg **out, struct lm_error *err);

/* Bytes of an unfinished message held (0 between messages). */
size_t qmp_parser_pending(const struct qmp_parser *p);

/* Classify a parsed JSON object as a QMP message; takes ownership of root
 * on success. Returns NULL (err filled, root untouched) when it is none. */
struct qmp_msg *qmp_msg_from_json(json_object *root, struct lm_error *err);

/* Free a message; NULL is fine. */
void qmp_msg_free(struct qmp_msg *m);

/*
 * Encode {"execute": name, "arguments": args, "id": id} followed by "\r\n".
 * args may be NULL (no "arguments") and is borrowed. Returns a malloc'd
 * string (*len set) or NULL on ENOMEM.
 */
char *qmp_encode_command(const char *name, json_object *args, int64_t id, size_t *len);

#endif

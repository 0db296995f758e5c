/*
 * fuzz/fuzz-proto: libFuzzer target for the QMP codec (qmp/proto).
 *
 * Input: one header byte H, then (H & 15) split-size bytes, then the bytes a
 * monitor sends. The payload is fed in pieces of the split sizes (each
 * byte + 1, cycled; one piece if there are none), every message drained
 * after each feed, with the caps chosen by (H >> 4) & 3 (mostly small ones,
 * so that they break often). The same payload is then parsed from a single
 * feed: both runs must give the same messages and the same verdict, since
 * how a stream is split must never change what it says. A message must have
 * the fields its type promises.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../qmp/proto.h"

static const struct qmp_parser_limits caps[4] = {
	{ .max_bytes = (size_t)1 << 20, .max_values = 1 << 16, .max_depth = 64 },
	{ .max_bytes = 4096, .max_values = 256, .max_depth = 8 },
	{ .max_bytes = 256, .max_values = 32, .max_depth = 4 },
	{ .max_bytes = (size_t)64 << 10, .max_values = 1024, .max_depth = 16 },
};

struct outcome {
	int n;
	char *text[64]; /* the first messages, serialized */
	int failed;
	enum lm_err_code code;
};

static void check_msg(const struct qmp_msg *m)
{
	if (m->root == NULL || !json_object_is_type(m->root, json_type_object))
		abort();
	switch (m->type) {
	case QMP_MSG_GREETING:
		if (!json_object_object_get_ex(m->root, "QMP", NULL))
			abort();
		break;
	case QMP_MSG_RETURN:
		if (!json_object_object_get_ex(m->root, "return", NULL))
			abort();
		break;
	case QMP_MSG_ERROR:
		if (m->err_class == NULL || m->err_desc == NULL)
			abort();
		(void)strlen(m->err_class);
		(void)strlen(m->err_desc);
		break;
	case QMP_MSG_EVENT:
		if (m->event == NULL)
			abort();
		(void)strlen(m->event);
		break;
	default:
		abort();
	}
	if (m->type == QMP_MSG_RETURN && m->id != NULL) {
		/* the encoder takes what a reply carries */
		size_t len;
		char *s = qmp_encode_command("x", m->ret, json_object_get_int64(m->id), &len);

		if (s == NULL || strlen(s) != len || len < 2 || memcmp(s + len - 2, "\r\n", 2) != 0)
			abort();
		free(s);
	}
}

static void record(struct outcome *o, const struct qmp_msg *m)
{
	check_msg(m);
	if (o->n < 64) {
		const char *s = json_object_to_json_string_ext(m->root, JSON_C_TO_STRING_PLAIN);
		size_t len = strlen(s);

		o->text[o->n] = malloc(len + 2);
		if (o->text[o->n] == NULL)
			abort();
		o->text[o->n][0] = (char)('0' + m->type);
		memcpy(o->text[o->n] + 1, s, len + 1);
	}
	o->n++;
}

/* Drain p; 0, or -1 once it failed. */
static int drain(struct qmp_parser *p, struct outcome *o)
{
	struct lm_error err = { 0 };
	struct qmp_msg *m;
	int r;

	while ((r = qmp_parser_next(p, &m, &err)) == 1) {
		record(o, m);
		qmp_msg_free(m);
	}
	if (r == 0) {
		if (m != NULL)
			abort();
		return 0;
	}
	if (r != -1 || m != NULL || err.code == LM_OK || err.msg[0] == '\0')
		abort();
	o->failed = 1;
	o->code = err.code;
	return -1;
}

static void run(const uint8_t *data, size_t size, const uint8_t *splits, size_t nsplits,
		const struct qmp_parser_limits *lim, struct outcome *o)
{
	struct qmp_parser *p = qmp_parser_new(lim);
	struct lm_error err = { 0 };
	size_t off = 0, k = 0;

	if (p == NULL)
		abort();
	while (off < size) {
		size_t n = nsplits ? (size_t)splits[k++ % nsplits] + 1 : size;

		if (n > size - off)
			n = size - off;
		if (qmp_parser_feed(p, (const char *)data + off, n, &err) < 0) {
			o->failed = 1;
			o->code = err.code;
			break;
		}
		off += n;
		if (drain(p, o) < 0)
			break;
		if (qmp_parser_pending(p) > lim->max_bytes)
			abort();
	}
	if (o->failed) {
		/* sticky */
		struct qmp_msg *m;

		if (qmp_parser_feed(p, "{}", 2, &err) != -1 || qmp_parser_next(p, &m, &err) != -1)
			abort();
	}
	qmp_parser_free(p);
}

static void outcome_free(struct outcome *o)
{
	int i;

	for (i = 0; i < o->n && i < 64; i++)
		free(o->text[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome split = { 0 }, whole = { 0 };
	const struct qmp_parser_limits *lim;
	size_t nsplits;
	int i;

	if (size == 0)
		return 0;
	lim = &caps[(data[0] >> 4) & 3];
	nsplits = data[0] & 15;
	if (nsplits > size - 1)
		nsplits = size - 1;
	run(data + 1 + nsplits, size - 1 - nsplits, data + 1, nsplits, lim, &split);
	run(data + 1 + nsplits, size - 1 - nsplits, NULL, 0, lim, &whole);
	if (split.n != whole.n || split.failed != whole.failed || split.code != whole.code) {
		fprintf(stderr, "split: %d messages, failed %d; one feed: %d messages, failed %d\n",
			split.n, split.failed, whole.n, whole.failed);
		abort();
	}
	for (i = 0; i < split.n && i < 64; i++) {
		if (strcmp(split.text[i], whole.text[i]) != 0) {
			fprintf(stderr, "message %d differs:\n%s\n%s\n", i, split.text[i],
				whole.text[i]);
			abort();
		}
	}
	outcome_free(&split);
	outcome_free(&whole);
	return 0;
}

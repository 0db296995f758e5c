/*
 * tests/test-proto: the QMP codec (qmp/proto) under every framing a peer can
 * produce, malformed input, its caps, and the command encoder.
 *
 * The reference for a stream is the list of messages it holds, each as its
 * type and its JSON re-serialized by json-c; every way of splitting the
 * stream into feeds must give exactly that list. Streams come from a
 * synthetic string built to hold every awkward case, and from raw monitor
 * traffic captured from QEMU 7.2 (tests/fixtures/NAME.qmp, see capture.sh).
 * Fixtures are read from $LM_FIXTURES, else tests/fixtures (scripts/run-unit.sh
 * runs tests from the top of the tree).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../qmp/proto.h"

/* ------------------------------------------------------------------ helpers */

/*
 * Every awkward case in one realistic stream: greeting, an event before the
 * negotiation reply, returns with ids of several types, an error, a
 * pretty-printed multi-line reply with \r\n, strings holding braces,
 * brackets, quotes, escaped quotes, backslashes (also as a string's last
 * character) and unicode escapes, two messages with nothing between them,
 * and whitespace-only stretches.
 */
static const char stream_text[] =
	"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
	"\"package\": \"Debian 1:7.2+dfsg-7\"}, \"capabilities\": [\"oob\"]}}\r\n"
	"{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
	"\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"created\", "
	"\"id\": \"job-{\\\"x\\\"}\"}}\r\n"
	"{\"return\": {}, \"id\": 1}\r\n"
	"{\r\n"
	"    \"return\": [\r\n"
	"        {\r\n"
	"            \"device\": \"dr}i]v{e[\",\r\n"
	"            \"qdev\": \"/machine/peripheral/vda/virtio-backend\",\r\n"
	"            \"inserted\": {\r\n"
	"                \"node-name\": \"a\\\\\\\"b\",\r\n"
	"                \"empty\": {\r\n"
	"                },\r\n"
	"                \"list\": [\r\n"
	"                ]\r\n"
	"            }\r\n"
	"        }\r\n"
	"    ],\r\n"
	"    \"id\": \"str-id\"\r\n"
	"}\r\n"
	"{\"id\": 3, \"error\": {\"class\": \"GenericError\", "
	"\"desc\": \"Cannot find '\\\"{[' \\u00e9 \\ud83d\\ude00 \\\\\"}}\r\n"
	"\r\n  \t \r\n"
	"{\"event\": \"BLOCK_JOB_COMPLETED\", \"data\": {\"device\": \"c]}\", "
	"\"error\": \"a \\\"quoted\\\" \\\\ back\\\\slash\\\\\"}, "
	"\"timestamp\": {\"seconds\": 1700000001, \"microseconds\": 7}}\n"
	"{\"return\": \"ends with a backslash \\\\\", \"id\": {\"a\": [1, 2]}}"
	"{\"return\": 42, \"id\": -9007199254740993}\r\n";

#define STREAM_MSGS 8

static const enum qmp_msg_type stream_types[STREAM_MSGS] = {
	QMP_MSG_GREETING, QMP_MSG_EVENT, QMP_MSG_RETURN, QMP_MSG_RETURN,
	QMP_MSG_ERROR,    QMP_MSG_EVENT, QMP_MSG_RETURN, QMP_MSG_RETURN,
};

/* The messages of a stream: type, then the JSON as json-c prints it. */
struct msg_list {
	int n;
	int cap;
	char **text;
	int failed;         /* feed or next returned -1 */
	struct lm_error err; /* its error */
};

static void msg_list_add(struct msg_list *l, const struct qmp_msg *m)
{
	const char *json = json_object_to_json_string_ext(m->root, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(json) + 3;
	char *s = malloc(len);

	assert_non_null(s);
	snprintf(s, len, "%d:%s", (int)m->type, json);
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->text = realloc(l->text, sizeof(*l->text) * (size_t)l->cap);
		assert_non_null(l->text);
	}
	l->text[l->n++] = s;
}

static void msg_list_clear(struct msg_list *l)
{
	int i;

	for (i = 0; i < l->n; i++)
		free(l->text[i]);
	free(l->text);
	memset(l, 0, sizeof(*l));
}

/* Take every message the parser holds; 0, or -1 once it failed. */
static int drain(struct qmp_parser *p, struct msg_list *l)
{
	struct qmp_msg *m;
	int r;

	while ((r = qmp_parser_next(p, &m, &l->err)) == 1) {
		assert_non_null(m);
		msg_list_add(l, m);
		qmp_msg_free(m);
	}
	if (r < 0) {
		assert_null(m);
		l->failed = 1;
		return -1;
	}
	assert_int_equal(r, 0);
	return 0;
}

/* Feed one piece and drain; -1 once the parser failed. */
static int feed_drain(struct qmp_parser *p, const char *buf, size_t len, struct msg_list *l)
{
	if (qmp_parser_feed(p, buf, len, &l->err) < 0) {
		l->failed = 1;
		return -1;
	}
	return drain(p, l);
}

/*
 * Parse buf[0..len) fed in pieces ending at the offsets cuts[0..ncuts) (in
 * increasing order) and then the rest, with the given limits; the pending
 * byte count must be 0 at the end of a clean stream.
 */
static void parse_split(const char *buf, size_t len, const size_t *cuts, int ncuts,
			const struct qmp_parser_limits *lim, struct msg_list *l)
{
	struct qmp_parser *p = qmp_parser_new(lim);
	size_t from = 0;
	int i;

	assert_non_null(p);
	memset(l, 0, sizeof(*l));
	for (i = 0; i <= ncuts && !l->failed; i++) {
		size_t to = i < ncuts ? cuts[i] : len;

		feed_drain(p, buf + from, to - from, l);
		from = to;
	}
	if (!l->failed)
		assert_int_equal(qmp_parser_pending(p), 0);
	qmp_parser_free(p);
}

static void assert_same_msgs(const struct msg_list *want, const struct msg_list *got,
			     const char *how)
{
	int i;

	if (got->failed)
		fail_msg("%s: parser failed: %s", how, got->err.msg);
	if (got->n != want->n)
		fail_msg("%s: %d messages, expected %d", how, got->n, want->n);
	for (i = 0; i < want->n; i++)
		if (strcmp(want->text[i], got->text[i]) != 0)
			fail_msg("%s: message %d is\n  %s\nexpected\n  %s", how, i, got->text[i],
				 want->text[i]);
}

static char *read_fixture(const char *name, size_t *len)
{
	const char *dir = getenv("LM_FIXTURES");
	char path[4096];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures", name);
	f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open fixture %s (run from the top of the tree or set LM_FIXTURES)",
			 path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* The one message of text (with the default limits); the caller frees it. */
static struct qmp_msg *parse_one(const char *text)
{
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct lm_error err = { 0 };
	struct qmp_msg *m = NULL, *extra = NULL;

	assert_non_null(p);
	assert_int_equal(qmp_parser_feed(p, text, strlen(text), &err), 0);
	if (qmp_parser_next(p, &m, &err) != 1)
		fail_msg("no message from %s: %s", text, err.msg);
	assert_int_equal(qmp_parser_next(p, &extra, &err), 0);
	assert_null(extra);
	qmp_parser_free(p);
	return m;
}

/*
 * text must fail with LM_ERR_PROTO (after its complete messages, if any,
 * are delivered: want_msgs of them) whether fed at once or byte by byte,
 * and the failure must stick: feed and next both fail afterwards, even
 * with a valid message, with the same error.
 */
static void assert_proto_error(const char *text, size_t len, int want_msgs,
			       const struct qmp_parser_limits *lim, const char *why)
{
	static const char valid[] = "{\"return\": {}}\r\n";
	int bytewise;

	for (bytewise = 0; bytewise < 2; bytewise++) {
		struct qmp_parser *p = qmp_parser_new(lim);
		struct msg_list l = { 0 };
		struct lm_error err2 = { 0 };
		struct qmp_msg *m = (struct qmp_msg *)1;
		size_t i;

		assert_non_null(p);
		if (bytewise) {
			for (i = 0; i < len && !l.failed; i++)
				feed_drain(p, text + i, 1, &l);
		} else {
			feed_drain(p, text, len, &l);
		}
		if (!l.failed)
			fail_msg("no error for %s (%s)", why, bytewise ? "byte by byte" : "one feed");
		assert_int_equal(l.err.code, LM_ERR_PROTO);
		assert_non_null(strstr(l.err.msg, "QMP protocol error"));
		assert_int_equal(l.n, want_msgs);
		/* sticky */
		assert_int_equal(qmp_parser_feed(p, valid, sizeof(valid) - 1, &err2), -1);
		assert_int_equal(err2.code, LM_ERR_PROTO);
		assert_string_equal(err2.msg, l.err.msg);
		memset(&err2, 0, sizeof(err2));
		assert_int_equal(qmp_parser_next(p, &m, &err2), -1);
		assert_null(m);
		assert_int_equal(err2.code, LM_ERR_PROTO);
		assert_string_equal(err2.msg, l.err.msg);
		assert_int_equal(qmp_parser_next(p, &m, NULL), -1);
		msg_list_clear(&l);
		qmp_parser_free(p);
	}
}

#define PROTO_ERROR(lit, nmsgs) assert_proto_error(lit, sizeof(lit) - 1, nmsgs, NULL, lit)

/* A buffer holding prefix, n copies of c, suffix; NUL-terminated. */
static char *build(const char *prefix, char c, size_t n, const char *suffix, size_t *len)
{
	size_t a = strlen(prefix), b = strlen(suffix);
	char *s = malloc(a + n + b + 1);

	assert_non_null(s);
	memcpy(s, prefix, a);
	memset(s + a, c, n);
	memcpy(s + a + n, suffix, b + 1);
	if (len != NULL)
		*len = a + n + b;
	return s;
}

/* {"return": [[[ ... 1 ... ]]]} nesting depth levels in all. */
static char *nested(int depth, size_t *len)
{
	size_t n = (size_t)depth - 1, i;
	const char *pre = "{\"return\": ", *post = "}";
	size_t a = strlen(pre);
	char *s = malloc(a + 2 * n + 3);

	assert_non_null(s);
	memcpy(s, pre, a);
	for (i = 0; i < n; i++)
		s[a + i] = '[';
	s[a + n] = '1';
	for (i = 0; i < n; i++)
		s[a + n + 1 + i] = ']';
	memcpy(s + a + 2 * n + 1, post, 2);
	*len = a + 2 * n + 2;
	return s;
}

/* ------------------------------------------------------------------ framing */

static void test_stream_reference(void **state)
{
	struct msg_list l;
	int i;

	(void)state;
	parse_split(stream_text, sizeof(stream_text) - 1, NULL, 0, NULL, &l);
	assert_false(l.failed);
	assert_int_equal(l.n, STREAM_MSGS);
	for (i = 0; i < STREAM_MSGS; i++)
		assert_int_equal(l.text[i][0] - '0', (int)stream_types[i]);
	/* the awkward strings came through intact */
	assert_non_null(strstr(l.text[1], "\"job-{\\\"x\\\"}\""));
	assert_non_null(strstr(l.text[3], "\"device\":\"dr}i]v{e[\""));
	assert_non_null(strstr(l.text[3], "\"node-name\":\"a\\\\\\\"b\""));
	assert_non_null(strstr(l.text[6], "\"ends with a backslash \\\\\""));
	msg_list_clear(&l);
}

static void test_stream_every_split(void **state)
{
	const size_t len = sizeof(stream_text) - 1;
	struct msg_list want, got;
	size_t cut;

	(void)state;
	parse_split(stream_text, len, NULL, 0, NULL, &want);
	for (cut = 0; cut <= len; cut++) {
		char how[64];

		snprintf(how, sizeof(how), "split at %zu", cut);
		parse_split(stream_text, len, &cut, 1, NULL, &got);
		assert_same_msgs(&want, &got, how);
		msg_list_clear(&got);
	}
	msg_list_clear(&want);
}

static void test_stream_two_splits(void **state)
{
	const size_t len = sizeof(stream_text) - 1;
	struct msg_list want, got;
	size_t cuts[2];

	(void)state;
	parse_split(stream_text, len, NULL, 0, NULL, &want);
	for (cuts[0] = 0; cuts[0] <= len; cuts[0] += 3) {
		for (cuts[1] = cuts[0]; cuts[1] <= len; cuts[1] += 17) {
			char how[64];

			snprintf(how, sizeof(how), "split at %zu and %zu", cuts[0], cuts[1]);
			parse_split(stream_text, len, cuts, 2, NULL, &got);
			assert_same_msgs(&want, &got, how);
			msg_list_clear(&got);
		}
	}
	msg_list_clear(&want);
}

static void test_stream_byte_by_byte(void **state)
{
	const size_t len = sizeof(stream_text) - 1;
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct msg_list want, got = { 0 };
	size_t i;
	int was_between = 1;

	(void)state;
	assert_non_null(p);
	parse_split(stream_text, len, NULL, 0, NULL, &want);
	for (i = 0; i < len; i++) {
		int before = got.n;

		assert_int_equal(feed_drain(p, stream_text + i, 1, &got), 0);
		/* at most one message can end at one byte */
		assert_in_range(got.n - before, 0, 1);
		if (got.n > before)
			assert_int_equal(qmp_parser_pending(p), 0);
		/* inside a message pending counts its bytes; between, it is 0 */
		if (qmp_parser_pending(p) > 0)
			was_between = 0;
	}
	assert_false(was_between);
	assert_int_equal(qmp_parser_pending(p), 0);
	assert_same_msgs(&want, &got, "byte by byte");
	msg_list_clear(&want);
	msg_list_clear(&got);
	qmp_parser_free(p);
}

/* Real traffic: each message of a QEMU 7.2 session, one per line (jq -c). */
static void check_real_stream(const char *name, const char *const *want_types, int nwant,
			      int every_offset)
{
	size_t len, cut;
	char *buf = read_fixture(name, &len);
	struct msg_list want, got;
	int i;

	parse_split(buf, len, NULL, 0, NULL, &want);
	if (want.failed)
		fail_msg("%s: %s", name, want.err.msg);
	assert_int_equal(want.n, nwant);
	for (i = 0; i < nwant; i++) {
		if (strstr(want.text[i], want_types[i]) == NULL)
			fail_msg("%s: message %d is %s, expected it to hold %s", name, i,
				 want.text[i], want_types[i]);
	}
	/* byte by byte */
	{
		struct qmp_parser *p = qmp_parser_new(NULL);
		size_t j;

		memset(&got, 0, sizeof(got));
		for (j = 0; j < len; j++)
			assert_int_equal(feed_drain(p, buf + j, 1, &got), 0);
		assert_same_msgs(&want, &got, "real stream byte by byte");
		msg_list_clear(&got);
		qmp_parser_free(p);
	}
	for (cut = 0; cut <= len; cut += every_offset ? 1 : 97) {
		char how[96];

		snprintf(how, sizeof(how), "%s split at %zu", name, cut);
		parse_split(buf, len, &cut, 1, NULL, &got);
		assert_same_msgs(&want, &got, how);
		msg_list_clear(&got);
	}
	msg_list_clear(&want);
	free(buf);
}

static void test_real_pretty_job_session(void **state)
{
	/* a pretty-printing monitor (pretty=on): \r\n and 4-space indents */
	static const char *const types[] = {
		"0:{\"QMP\"",
		"1:{\"return\":{},\"id\":1}",
		"\"status\":\"created\",\"id\":\"commit-disk1\"",
		"\"status\":\"running\",\"id\":\"commit-disk1\"",
		"1:{\"return\":{},\"id\":2}",
		"\"status\":\"waiting\",\"id\":\"commit-disk1\"",
		"\"status\":\"pending\",\"id\":\"commit-disk1\"",
		"3:{\"timestamp\":{\"seconds\":",
		"\"status\":\"concluded\",\"id\":\"commit-disk1\"",
		"\"status\":\"null\",\"id\":\"commit-disk1\"",
		"\"status\":\"created\",\"id\":\"commit-disk0\"",
		"\"status\":\"running\",\"id\":\"commit-disk0\"",
		"1:{\"return\":{},\"id\":3}",
		"2:{\"id\":4,\"error\":{\"class\":\"DeviceNotFound\"",
		"\"status\":\"ready\",\"id\":\"commit-disk0\"",
		"\"event\":\"BLOCK_JOB_READY\"",
		"1:{\"return\":[{\"current-progress\":0,\"status\":\"ready\"",
		"1:{\"return\":{},\"id\":6}",
		"\"status\":\"waiting\",\"id\":\"commit-disk0\"",
		"\"status\":\"pending\",\"id\":\"commit-disk0\"",
		"\"event\":\"BLOCK_JOB_COMPLETED\"",
		"\"status\":\"concluded\",\"id\":\"commit-disk0\"",
		"\"status\":\"null\",\"id\":\"commit-disk0\"",
		"2:{\"id\":7,\"error\":{\"class\":\"GenericError\",\"desc\":\"Job not found\"}}",
		"\"event\":\"BLOCK_EXPORT_DELETED\"",
		"\"event\":\"BLOCK_EXPORT_DELETED\"",
		"1:{\"return\":{},\"id\":8}",
	};

	(void)state;
	check_real_stream("qsd-jobs.qmp", types, (int)(sizeof(types) / sizeof(types[0])), 1);
}

static void test_real_query_session(void **state)
{
	/* a plain monitor: one message a line, \r\n; QEMU 7.2 reports SHUTDOWN
	 * before it answers quit */
	static const char *const types[] = {
		"0:{\"QMP\"",
		"1:{\"return\":{},\"id\":\"cap\"}",
		"\"id\":\"block\"}",
		"\"id\":\"nodes\"}",
		"\"id\":\"graph\"}",
		"3:{\"timestamp\":{\"seconds\":",
		"1:{\"return\":{},\"id\":\"quit\"}",
	};

	(void)state;
	check_real_stream("vm-drive.qmp", types, 7, 0);
	check_real_stream("vm-blockdev.qmp", types, 7, 0);
	/* the storage daemon deletes its exports on quit */
	{
		static const char *const qsd_types[] = {
			"0:{\"QMP\"",
			"1:{\"return\":{},\"id\":\"cap\"}",
			"1:{\"return\":[],\"id\":\"block\"}",
			"\"id\":\"nodes\"}",
			"\"id\":\"graph\"}",
			"\"event\":\"BLOCK_EXPORT_DELETED\",\"data\":{\"id\":\"exp0\"}",
			"\"event\":\"BLOCK_EXPORT_DELETED\",\"data\":{\"id\":\"exp1\"}",
			"1:{\"return\":{},\"id\":\"quit\"}",
		};

		check_real_stream("qsd.qmp", qsd_types, 8, 0);
	}
}

static void test_several_in_one_feed(void **state)
{
	static const char text[] = "{\"return\": 1, \"id\": 1}{\"return\": 2, \"id\": 2}"
				   "\n{\"return\": 3, \"id\": 3}   {\"event\": \"X\"}";
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct lm_error err = { 0 };
	struct qmp_msg *m;
	int i;

	(void)state;
	/* an empty feed on a fresh parser (no buffer yet) is fine */
	assert_int_equal(qmp_parser_feed(p, NULL, 0, &err), 0);
	assert_int_equal(qmp_parser_next(p, &m, &err), 0);
	assert_int_equal(qmp_parser_feed(p, text, sizeof(text) - 1, &err), 0);
	for (i = 1; i <= 3; i++) {
		assert_int_equal(qmp_parser_next(p, &m, &err), 1);
		assert_int_equal(m->type, QMP_MSG_RETURN);
		assert_int_equal(json_object_get_int(m->ret), i);
		assert_int_equal(json_object_get_int(m->id), i);
		qmp_msg_free(m);
	}
	assert_int_equal(qmp_parser_next(p, &m, &err), 1);
	assert_int_equal(m->type, QMP_MSG_EVENT);
	assert_string_equal(m->event, "X");
	qmp_msg_free(m);
	assert_int_equal(qmp_parser_next(p, &m, &err), 0);
	assert_null(m);
	assert_int_equal(qmp_parser_next(p, &m, &err), 0);
	assert_int_equal(qmp_parser_pending(p), 0);
	qmp_parser_free(p);
}

static void test_partial_message_waits(void **state)
{
	static const char a[] = "{\"return\": {\"x\": \"}\"", b[] = "}, \"id\": 5}";
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct lm_error err = { 0 };
	struct qmp_msg *m;

	(void)state;
	assert_int_equal(qmp_parser_feed(p, a, sizeof(a) - 1, &err), 0);
	assert_int_equal(qmp_parser_next(p, &m, &err), 0);
	assert_null(m);
	assert_int_equal(qmp_parser_pending(p), sizeof(a) - 1);
	assert_int_equal(qmp_parser_feed(p, b, sizeof(b) - 1, &err), 0);
	assert_int_equal(qmp_parser_next(p, &m, &err), 1);
	assert_int_equal(json_object_get_int(m->id), 5);
	assert_string_equal(json_object_get_string(json_object_object_get(m->ret, "x")), "}");
	qmp_msg_free(m);
	assert_int_equal(qmp_parser_pending(p), 0);
	/* empty feeds are fine */
	assert_int_equal(qmp_parser_feed(p, "", 0, &err), 0);
	assert_int_equal(qmp_parser_next(p, &m, &err), 0);
	qmp_parser_free(p);
	qmp_parser_free(NULL);
}

/* ------------------------------------------------------------ classification */

static void test_classify_greeting(void **state)
{
	struct qmp_msg *m = parse_one("{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, "
				      "\"capabilities\": [\"oob\"]}}");
	json_object *caps;

	(void)state;
	assert_int_equal(m->type, QMP_MSG_GREETING);
	assert_non_null(m->greeting);
	assert_true(json_object_object_get_ex(m->greeting, "capabilities", &caps));
	assert_string_equal(json_object_get_string(json_object_array_get_idx(caps, 0)), "oob");
	assert_null(m->id);
	assert_null(m->ret);
	assert_null(m->event);
	assert_null(m->data);
	assert_null(m->err_class);
	assert_int_equal(m->ts_sec, -1);
	assert_int_equal(m->ts_usec, -1);
	qmp_msg_free(m);
}

static void test_classify_return(void **state)
{
	struct qmp_msg *m = parse_one("{\"return\": {\"status\": \"running\"}, \"id\": 17}");

	(void)state;
	assert_int_equal(m->type, QMP_MSG_RETURN);
	assert_non_null(m->id);
	assert_int_equal(json_object_get_int64(m->id), 17);
	assert_string_equal(json_object_get_string(json_object_object_get(m->ret, "status")),
			    "running");
	assert_null(m->greeting);
	assert_null(m->event);
	assert_null(m->err_class);
	assert_null(m->err_desc);
	qmp_msg_free(m);

	/* no id; a scalar and a null return value */
	m = parse_one("{\"return\": 5}");
	assert_int_equal(m->type, QMP_MSG_RETURN);
	assert_null(m->id);
	assert_int_equal(json_object_get_int(m->ret), 5);
	qmp_msg_free(m);
	m = parse_one("{\"id\": \"x\", \"return\": null}");
	assert_int_equal(m->type, QMP_MSG_RETURN);
	assert_null(m->ret);
	assert_string_equal(json_object_get_string(m->id), "x");
	qmp_msg_free(m);

	/* a member taken with json_object_get outlives the message */
	{
		json_object *kept;

		m = parse_one("{\"return\": [1, 2, 3], \"id\": 1}");
		kept = json_object_get(m->ret);
		qmp_msg_free(m);
		assert_int_equal(json_object_array_length(kept), 3);
		json_object_put(kept);
	}
}

static void test_classify_error(void **state)
{
	struct qmp_msg *m = parse_one("{\"id\": 4, \"error\": {\"class\": \"DeviceNotFound\", "
				      "\"desc\": \"Device 'no-such-disk' not found\"}}");

	(void)state;
	assert_int_equal(m->type, QMP_MSG_ERROR);
	assert_int_equal(json_object_get_int(m->id), 4);
	assert_string_equal(m->err_class, "DeviceNotFound");
	assert_string_equal(m->err_desc, "Device 'no-such-disk' not found");
	assert_null(m->ret);
	assert_null(m->event);
	qmp_msg_free(m);

	/* an error without id (QEMU could not parse the command) */
	m = parse_one("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}");
	assert_int_equal(m->type, QMP_MSG_ERROR);
	assert_null(m->id);
	assert_string_equal(m->err_class, "GenericError");
	qmp_msg_free(m);

	/* class and desc missing or of the wrong type read as "" */
	m = parse_one("{\"error\": {\"class\": 1}, \"id\": 2}");
	assert_int_equal(m->type, QMP_MSG_ERROR);
	assert_string_equal(m->err_class, "");
	assert_string_equal(m->err_desc, "");
	qmp_msg_free(m);

	/* an error that is not an object is no QMP message */
	PROTO_ERROR("{\"error\": \"bad\", \"id\": 1}", 0);
}

static void test_classify_event(void **state)
{
	struct qmp_msg *m = parse_one(
		"{\"timestamp\": {\"seconds\": 1795418279, \"microseconds\": 448030}, "
		"\"event\": \"BLOCK_JOB_READY\", \"data\": {\"device\": \"commit-disk0\", "
		"\"len\": 0, \"offset\": 0, \"speed\": 0, \"type\": \"commit\"}}");

	(void)state;
	assert_int_equal(m->type, QMP_MSG_EVENT);
	assert_string_equal(m->event, "BLOCK_JOB_READY");
	assert_non_null(m->data);
	assert_string_equal(json_object_get_string(json_object_object_get(m->data, "device")),
			    "commit-disk0");
	assert_int_equal(m->ts_sec, 1795418279);
	assert_int_equal(m->ts_usec, 448030);
	assert_null(m->id);
	assert_null(m->ret);
	qmp_msg_free(m);

	/* no data, no timestamp */
	m = parse_one("{\"event\": \"STOP\"}");
	assert_int_equal(m->type, QMP_MSG_EVENT);
	assert_string_equal(m->event, "STOP");
	assert_null(m->data);
	assert_int_equal(m->ts_sec, -1);
	assert_int_equal(m->ts_usec, -1);
	qmp_msg_free(m);

	/* an event name that is not a string is no QMP message */
	PROTO_ERROR("{\"event\": 5, \"data\": {}}", 0);
}

static void test_msg_from_json(void **state)
{
	struct lm_error err = { 0 };
	json_object *arr = json_tokener_parse("[1, 2]");
	json_object *none = json_tokener_parse("{\"foo\": 1}");
	json_object *ret = json_tokener_parse("{\"return\": {}, \"id\": 9}");
	struct qmp_msg *m;

	(void)state;
	/* refused: err filled, root still the caller's */
	assert_null(qmp_msg_from_json(arr, &err));
	assert_int_equal(err.code, LM_ERR_PROTO);
	assert_int_equal(json_object_array_length(arr), 2);
	json_object_put(arr);
	memset(&err, 0, sizeof(err));
	assert_null(qmp_msg_from_json(none, &err));
	assert_int_equal(err.code, LM_ERR_PROTO);
	assert_non_null(strstr(err.msg, "neither"));
	json_object_put(none);
	assert_null(qmp_msg_from_json(NULL, NULL));
	/* taken: root belongs to the message */
	m = qmp_msg_from_json(ret, &err);
	assert_non_null(m);
	assert_ptr_equal(m->root, ret);
	assert_int_equal(m->type, QMP_MSG_RETURN);
	assert_int_equal(json_object_get_int(m->id), 9);
	qmp_msg_free(m);
	qmp_msg_free(NULL);
}

/* ------------------------------------------------------------------ malformed */

static void test_malformed_not_object(void **state)
{
	(void)state;
	PROTO_ERROR("hello world\r\n", 0);
	PROTO_ERROR("[1, 2, 3]\r\n", 0);
	PROTO_ERROR("[{\"return\": {}}]", 0);
	PROTO_ERROR("42\r\n", 0);
	PROTO_ERROR("\"string\"", 0);
	PROTO_ERROR("null", 0);
	PROTO_ERROR("true", 0);
	/* garbage after good messages: the good ones still arrive first */
	PROTO_ERROR("{\"return\": {}}\r\n{\"event\": \"STOP\"}\r\nxyz", 2);
	PROTO_ERROR("{\"return\": {}}}", 1);
	PROTO_ERROR("{\"return\": {}}\r\n\0{\"return\": {}}", 1);
}

static void test_malformed_json_in_object(void **state)
{
	(void)state;
	PROTO_ERROR("{\"return\": tru}", 0);
	PROTO_ERROR("{\"return\" 1}", 0);
	PROTO_ERROR("{\"return\": 1,}", 0);
	PROTO_ERROR("{\"return\": [1, 2,]}", 0);
	PROTO_ERROR("{\"return\": [1 2]}", 0);
	PROTO_ERROR("{\"return\": 01}", 0);
	PROTO_ERROR("{\"return\": \"bad \\q escape\"}", 0);
	PROTO_ERROR("{\"return\": [}", 0);
	PROTO_ERROR("{\"return\": {]}", 0);
	PROTO_ERROR("{\"return\": 1]", 0);
	PROTO_ERROR("{return: 1}", 0);
	PROTO_ERROR("{/* comment */ \"return\": 1}", 0);
	PROTO_ERROR("{\"return\": 1 // comment\n}", 0);
	PROTO_ERROR("{\"return\": \"a\0b\"}", 0);
	/* single quotes are no JSON (json-c alone would take them as names) */
	PROTO_ERROR("{'return': 1}", 0);
	PROTO_ERROR("{'\"': 1}\r\n{\"return\": {}}", 0);
	PROTO_ERROR("{\"return\": 'x'}", 0);
	/* a valid message, then an invalid one */
	PROTO_ERROR("{\"return\": {}, \"id\": 1}\r\n{\"return\": {\"a\": nul}}", 1);
}

/*
 * Invalid input must fail however it is split. json-c 0.16 alone accepts
 * "179" and then "-418292" from two calls as the number 179 (qmp/proto.c
 * holds a number's bytes back until what ends it has arrived).
 */
static void test_malformed_number_every_split(void **state)
{
	static const char *const cases[] = {
		"{\"return\": 179-418292, \"id\": 1}\r\n{\"return\": {}}\r\n",
		"{\"return\": [1-2]}",
		"{\"return\": 1.5e+3-2}",
		"{\"return\": 1e5e5}",
		"{\"return\": 1.2.3}",
		"{\"return\": 12 34}",
		"{\"return\": truex}",
		"{\"return\": nullnull}",
		"{\"timestamp\": {\"seconds\": 17-95, \"microseconds\": 1}, \"event\": \"X\"}",
	};
	size_t i, cut;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i]);

		for (cut = 0; cut <= len; cut++) {
			struct msg_list l;

			parse_split(cases[i], len, &cut, 1, NULL, &l);
			if (!l.failed || l.n != 0)
				fail_msg("%s split at %zu: %d messages, failed %d", cases[i], cut,
					 l.n, l.failed);
			assert_int_equal(l.err.code, LM_ERR_PROTO);
			msg_list_clear(&l);
		}
		assert_proto_error(cases[i], len, 0, NULL, cases[i]);
	}
}

static void test_malformed_unterminated_string(void **state)
{
	/*
	 * The string never ends where the peer meant: the next message's
	 * text is read as the rest of the string, then as garbage. The
	 * parser must fail there, not wait for the byte cap.
	 */
	static const char text[] = "{\"return\": \"abc\r\n{\"return\": {}, \"id\": 2}\r\n"
				   "{\"event\": \"STOP\"}\r\n";

	(void)state;
	PROTO_ERROR(text, 0);
}

static void test_malformed_none_of_four(void **state)
{
	(void)state;
	PROTO_ERROR("{}", 0);
	PROTO_ERROR("{\"foo\": 1, \"id\": 2}", 0);
	PROTO_ERROR("{\"execute\": \"query-block\", \"id\": 1}", 0);
	PROTO_ERROR("{\"return\": {}}\r\n{\"Return\": {}}\r\n{\"return\": {}}", 1);
}

/* ------------------------------------------------------------------ caps */

/* A return message of exactly len bytes: {"return":"xxx...x"} */
static char *message_of_size(size_t len)
{
	static const char pre[] = "{\"return\":\"", post[] = "\"}";

	assert_true(len >= sizeof(pre) + sizeof(post) - 2);
	return build(pre, 'x', len - (sizeof(pre) - 1) - (sizeof(post) - 1), post, NULL);
}

static void test_cap_bytes(void **state)
{
	const struct qmp_parser_limits lim = { .max_bytes = 64 };
	char *at = message_of_size(64), *over = message_of_size(65);
	struct msg_list l;

	(void)state;
	assert_int_equal(strlen(at), 64);
	parse_split(at, 64, NULL, 0, &lim, &l);
	assert_false(l.failed);
	assert_int_equal(l.n, 1);
	msg_list_clear(&l);
	assert_proto_error(over, 65, 0, &lim, "65 bytes over a 64-byte cap");
	/* the error says why */
	parse_split(over, 65, NULL, 0, &lim, &l);
	assert_true(l.failed);
	assert_non_null(strstr(l.err.msg, "larger than the limit"));
	msg_list_clear(&l);
	/* whitespace inside a message counts */
	{
		size_t len;
		char *ws = build("{\"return\": 1", ' ', 60, "}", &len);

		assert_proto_error(ws, len, 0, &lim, "whitespace inside a message");
		free(ws);
	}
	free(at);
	free(over);
}

static void test_cap_bytes_whitespace_between(void **state)
{
	/* whitespace between messages belongs to no message */
	const struct qmp_parser_limits lim = { .max_bytes = 64 };
	char *msg = message_of_size(64);
	size_t n = 4096 + 2 * 64, off;
	char *text = malloc(n);
	struct msg_list l;
	size_t cut;

	(void)state;
	memset(text, '\n', n);
	for (off = 0; off < n; off += 100)
		text[off] = off % 200 ? '\r' : '\t';
	memcpy(text + 1000, msg, 64);
	memcpy(text + 3000, msg, 64);
	parse_split(text, n, NULL, 0, &lim, &l);
	assert_false(l.failed);
	assert_int_equal(l.n, 2);
	msg_list_clear(&l);
	for (cut = 0; cut <= n; cut += 61) {
		parse_split(text, n, &cut, 1, &lim, &l);
		if (l.failed)
			fail_msg("split at %zu: %s", cut, l.err.msg);
		assert_int_equal(l.n, 2);
		msg_list_clear(&l);
	}
	free(text);
	free(msg);
}

static void test_cap_bytes_never_ending_string(void **state)
{
	/* 100 MiB in 64 KiB reads of one endless string, 1 MiB cap */
	const size_t cap = (size_t)1 << 20, chunk = (size_t)64 << 10, total = (size_t)100 << 20;
	const struct qmp_parser_limits lim = { .max_bytes = cap };
	struct qmp_parser *p = qmp_parser_new(&lim);
	char *buf = malloc(chunk);
	struct msg_list l = { 0 };
	size_t fed = 0;

	(void)state;
	assert_non_null(buf);
	memset(buf, 'a', chunk);
	assert_int_equal(feed_drain(p, "{\"return\": \"", 12, &l), 0);
	fed = 12;
	while (fed < total) {
		if (feed_drain(p, buf, chunk, &l) < 0)
			break;
		fed += chunk;
		/* held bytes never exceed the cap */
		assert_in_range(qmp_parser_pending(p), 1, cap);
	}
	assert_true(l.failed);
	assert_int_equal(l.err.code, LM_ERR_PROTO);
	assert_non_null(strstr(l.err.msg, "larger than the limit"));
	/* it failed with the read that crossed the cap, not at the end */
	assert_in_range(fed, cap - chunk, cap);
	assert_int_equal(l.n, 0);
	free(buf);
	qmp_parser_free(p);
}

static void test_cap_bytes_default(void **state)
{
	/* default 64 MiB: a message of 65 MiB in one feed is refused */
	size_t len = (size_t)65 << 20;
	char *big;
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct lm_error err = { 0 };
	struct qmp_msg *m;

	(void)state;
	big = build("{\"return\": \"", 'y', len, "\"}", &len);
	assert_int_equal(qmp_parser_feed(p, big, len, &err), 0);
	assert_int_equal(qmp_parser_next(p, &m, &err), -1);
	assert_int_equal(err.code, LM_ERR_PROTO);
	qmp_parser_free(p);
	free(big);
}

static void test_cap_depth(void **state)
{
	const struct qmp_parser_limits lim = { .max_depth = 4 };
	struct msg_list l;
	size_t len;
	char *s;

	(void)state;
	/* exactly at the cap: accepted; one more: refused */
	s = nested(4, &len);
	parse_split(s, len, NULL, 0, &lim, &l);
	if (l.failed)
		fail_msg("depth 4 with a cap of 4: %s", l.err.msg);
	assert_int_equal(l.n, 1);
	msg_list_clear(&l);
	free(s);
	s = nested(5, &len);
	assert_proto_error(s, len, 0, &lim, "depth 5 over a cap of 4");
	parse_split(s, len, NULL, 0, &lim, &l);
	assert_non_null(strstr(l.err.msg, "deeper than the limit"));
	msg_list_clear(&l);
	free(s);
	/* objects count as arrays do */
	{
		static const char ok[] = "{\"return\": {\"a\": {\"b\": {\"c\": 1}}}}";
		static const char deep[] = "{\"return\": {\"a\": {\"b\": {\"c\": {}}}}}";

		parse_split(ok, sizeof(ok) - 1, NULL, 0, &lim, &l);
		assert_false(l.failed);
		msg_list_clear(&l);
		assert_proto_error(deep, sizeof(deep) - 1, 0, &lim, "objects over depth 4");
	}
	/* brackets in strings are no nesting */
	{
		static const char str[] = "{\"return\": \"{{{{{{[[[[[[\", \"id\": \"]]]]}}}}\"}";

		parse_split(str, sizeof(str) - 1, NULL, 0, &lim, &l);
		assert_false(l.failed);
		assert_int_equal(l.n, 1);
		msg_list_clear(&l);
	}
}

static void test_cap_depth_default(void **state)
{
	struct msg_list l;
	size_t len;
	char *s;

	(void)state;
	/* the default cap itself is accepted (json-c's own limit is above it) */
	s = nested(QMP_DEFAULT_MAX_DEPTH, &len);
	parse_split(s, len, NULL, 0, NULL, &l);
	if (l.failed)
		fail_msg("depth %d with the default cap: %s", QMP_DEFAULT_MAX_DEPTH, l.err.msg);
	assert_int_equal(l.n, 1);
	msg_list_clear(&l);
	free(s);
	s = nested(QMP_DEFAULT_MAX_DEPTH + 1, &len);
	assert_proto_error(s, len, 0, NULL, "one over the default depth");
	free(s);
	/* 100000 levels: refused, no crash, in one feed and byte by byte */
	s = nested(100000, &len);
	assert_proto_error(s, len, 0, NULL, "depth 100000");
	free(s);
	/* and without the closing brackets: refused as soon as it passes the cap */
	s = build("{\"return\": ", '[', 100000, "", &len);
	assert_proto_error(s, len, 0, NULL, "100000 open brackets");
	free(s);
}

static void test_cap_values(void **state)
{
	const struct qmp_parser_limits lim = { .max_values = 10 };
	static const char few[] = "{\"return\": [1, 2, 3, 4, 5, 6, 7, 8]}";
	struct msg_list l;
	size_t len;
	char *many;

	(void)state;
	parse_split(few, sizeof(few) - 1, NULL, 0, &lim, &l);
	if (l.failed)
		fail_msg("8 elements with a cap of 10 values: %s", l.err.msg);
	msg_list_clear(&l);
	{
		/* [1,1,1,...] with 50 elements */
		char buf[256] = "{\"return\": [1";
		int i;

		for (i = 1; i < 50; i++)
			strcat(buf, ",1");
		strcat(buf, "]}");
		assert_proto_error(buf, strlen(buf), 0, &lim, "50 values over a cap of 10");
		parse_split(buf, strlen(buf), NULL, 0, &lim, &l);
		assert_non_null(strstr(l.err.msg, "more values than the limit"));
		msg_list_clear(&l);
	}
	{
		/* many empty objects: each one counts */
		char buf[256] = "{\"return\": [{}";
		int i;

		for (i = 1; i < 20; i++)
			strcat(buf, ",{}");
		strcat(buf, "]}");
		assert_proto_error(buf, strlen(buf), 0, &lim, "20 objects over a cap of 10");
	}
	/* commas in strings are no values */
	many = build("{\"return\": \"", ',', 1000, "\"}", &len);
	parse_split(many, len, NULL, 0, &lim, &l);
	assert_false(l.failed);
	assert_int_equal(l.n, 1);
	msg_list_clear(&l);
	free(many);
	/* the count starts again with each message */
	{
		char buf[1024] = "";
		int i;

		for (i = 0; i < 20; i++)
			strcat(buf, few);
		parse_split(buf, strlen(buf), NULL, 0, &lim, &l);
		assert_false(l.failed);
		assert_int_equal(l.n, 20);
		msg_list_clear(&l);
	}
}

/* ------------------------------------------------------------------ encoder */

static json_object *parse_strict(const char *s, size_t len)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, s, (int)len);
	assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
	assert_int_equal(json_tokener_get_parse_end(tok), len);
	json_tokener_free(tok);
	assert_non_null(o);
	return o;
}

static void test_encode_no_args(void **state)
{
	size_t len = 0;
	char *s = qmp_encode_command("query-block", NULL, 5, &len);
	json_object *o, *v;

	(void)state;
	assert_non_null(s);
	assert_int_equal(len, strlen(s));
	assert_true(len > 2);
	assert_memory_equal(s + len - 2, "\r\n", 2);
	assert_null(memchr(s, '\n', len - 1));
	o = parse_strict(s, len - 2);
	assert_int_equal(json_object_object_length(o), 2);
	assert_true(json_object_object_get_ex(o, "execute", &v));
	assert_string_equal(json_object_get_string(v), "query-block");
	assert_true(json_object_object_get_ex(o, "id", &v));
	assert_true(json_object_is_type(v, json_type_int));
	assert_int_equal(json_object_get_int64(v), 5);
	assert_false(json_object_object_get_ex(o, "arguments", NULL));
	json_object_put(o);
	free(s);
	/* len may be NULL */
	s = qmp_encode_command("qmp_capabilities", NULL, 0, NULL);
	assert_non_null(s);
	assert_non_null(strstr(s, "\"execute\":\"qmp_capabilities\""));
	free(s);
}

static void test_encode_round_trip(void **state)
{
	static const char args_text[] =
		"{\"job-id\": \"commit-{\\\"vda\\\"}\", \"device\": \"/machine/peripheral/vda\","
		" \"top-node\": \"#block123\", \"path\": \"C:\\\\images\\\\a b.qcow2\","
		" \"unicode\": \"\\u00e9\\u4e2d\\ud83d\\ude00\", \"ctl\": \"\\t\\n\\u0001\","
		" \"nested\": {\"list\": [1, -2, 3.5, true, false, null, [], {}]},"
		" \"big\": 9223372036854775807, \"small\": -9223372036854775808}";
	json_object *args = json_tokener_parse(args_text);
	const int64_t ids[] = { 0, 1, 42, INT64_MAX, INT64_MIN, -1 };
	size_t i;

	(void)state;
	assert_non_null(args);
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		size_t len;
		char *s = qmp_encode_command("block-commit", args, ids[i], &len);
		json_object *o, *v;

		assert_non_null(s);
		assert_int_equal(len, strlen(s));
		assert_memory_equal(s + len - 2, "\r\n", 2);
		/* one line: the framing of a command never depends on its content */
		assert_null(memchr(s, '\n', len - 1));
		assert_null(memchr(s, '\r', len - 2));
		/* slashes stay as they are */
		assert_non_null(strstr(s, "/machine/peripheral/vda"));
		o = parse_strict(s, len - 2);
		assert_true(json_object_object_get_ex(o, "execute", &v));
		assert_string_equal(json_object_get_string(v), "block-commit");
		assert_true(json_object_object_get_ex(o, "id", &v));
		assert_int_equal(json_object_get_int64(v), ids[i]);
		assert_true(json_object_object_get_ex(o, "arguments", &v));
		if (!json_object_equal(v, args))
			fail_msg("arguments changed:\n  %s\nexpected\n  %s",
				 json_object_to_json_string(v), json_object_to_json_string(args));
		json_object_put(o);
		free(s);
	}
	/* args is borrowed: still ours, with one reference */
	assert_int_equal(json_object_put(args), 1);
}

/*
 * An encoded command, sent back the way QEMU frames its replies, goes
 * through the parser: wrap its arguments as a return value.
 */
static void test_encode_through_parser(void **state)
{
	json_object *args = json_tokener_parse("{\"a\": \"}{\\\"\", \"b\": [\"\\\\\"]}");
	size_t len;
	char *s = qmp_encode_command("x", args, 77, &len);
	json_object *cmd = parse_strict(s, len - 2), *reply = json_object_new_object();
	const char *text;
	struct msg_list l;
	size_t cut;

	(void)state;
	json_object_object_add(reply, "return",
			       json_object_get(json_object_object_get(cmd, "arguments")));
	json_object_object_add(reply, "id", json_object_get(json_object_object_get(cmd, "id")));
	text = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY);
	for (cut = 0; cut <= strlen(text); cut++) {
		parse_split(text, strlen(text), &cut, 1, NULL, &l);
		assert_false(l.failed);
		assert_int_equal(l.n, 1);
		assert_int_equal(l.text[0][0] - '0', QMP_MSG_RETURN);
		msg_list_clear(&l);
	}
	{
		struct qmp_msg *m = parse_one(text);

		assert_int_equal(json_object_get_int(m->id), 77);
		assert_true(json_object_equal(m->ret, args));
		qmp_msg_free(m);
	}
	json_object_put(reply);
	json_object_put(cmd);
	json_object_put(args);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_reference),
		cmocka_unit_test(test_stream_every_split),
		cmocka_unit_test(test_stream_two_splits),
		cmocka_unit_test(test_stream_byte_by_byte),
		cmocka_unit_test(test_real_pretty_job_session),
		cmocka_unit_test(test_real_query_session),
		cmocka_unit_test(test_several_in_one_feed),
		cmocka_unit_test(test_partial_message_waits),
		cmocka_unit_test(test_classify_greeting),
		cmocka_unit_test(test_classify_return),
		cmocka_unit_test(test_classify_error),
		cmocka_unit_test(test_classify_event),
		cmocka_unit_test(test_msg_from_json),
		cmocka_unit_test(test_malformed_not_object),
		cmocka_unit_test(test_malformed_json_in_object),
		cmocka_unit_test(test_malformed_number_every_split),
		cmocka_unit_test(test_malformed_unterminated_string),
		cmocka_unit_test(test_malformed_none_of_four),
		cmocka_unit_test(test_cap_bytes),
		cmocka_unit_test(test_cap_bytes_whitespace_between),
		cmocka_unit_test(test_cap_bytes_never_ending_string),
		cmocka_unit_test(test_cap_bytes_default),
		cmocka_unit_test(test_cap_depth),
		cmocka_unit_test(test_cap_depth_default),
		cmocka_unit_test(test_cap_values),
		cmocka_unit_test(test_encode_no_args),
		cmocka_unit_test(test_encode_round_trip),
		cmocka_unit_test(test_encode_through_parser),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}

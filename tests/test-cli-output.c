/*
 * test-cli-output: what the real livemerge binary prints when the monitor
 * is hostile. A scripted fake monitor (fakeqmp on an accepted unix socket)
 * answers the binary (build/livemerge, next to this test's build/tests/)
 * with node names, file names, a qdev path, job ids, job errors and QMP
 * error texts that hold terminal escapes (OSC "\e]0;pwned\a", SGR
 * "\e[31m"), newlines, CR, TAB, DEL, a C1 control (U+009B, CSI) and a byte
 * that is not UTF-8 -- what no real QEMU can be made to send for node names
 * and job ids (integration/test-names.sh does file names on a real one).
 *
 * Human output (chain, jobs, a failing qmp, a refused snapshot with its
 * message and error lines, qmp's pretty reply) must hold no byte below 0x20
 * but '\n', no DEL, no C1 control and only valid UTF-8, with the names shown
 * escaped; --json must give back the exact bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "binrun.h"
#include "fakeqmp.h"

#define OSC "\033]0;pwned\007"
#define SGR "\033[31m"

static const char top_node[] = "top" SGR "node";
static const char base_node[] = "base" OSC "\n";
static const char top_file[] = "/img/top" OSC "\n.qcow2";
static const char base_file[] = "/img/base" SGR "\r\t\x7f\xc2\x9b\xff.qcow2";
static const char qdev[] = "/machine/peripheral/vd" SGR "a/virtio-backend";
static const char disk[] = "vd" SGR "a";
static const char job_a[] = "livemerge-commit-vd" SGR "a";
static const char job_b[] = "x" OSC "\ny";
static const char job_err[] = "Input/output error" OSC "\n" SGR "\x7f";
static const char qmp_desc[] = "no such thing " OSC "\nlivemerge: fake line\r" SGR "\xc2\x85";

/* The fixture is a struct binrun: the temp dir, the monitor's socket, the outputs. */
static int setup(void **state)
{
	struct binrun *fx = malloc(sizeof(*fx));

	if (fx == NULL || binrun_init(fx) < 0) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	binrun_fini(*state);
	free(*state);
	return 0;
}

/*
 * Run livemerge -c unix:SOCK --journal DIR/j ARGS (NULL-terminated) against
 * script(fq, arg), the fake's part (binrun.h). Returns the exit status; the
 * output is in fx->stdout_text / stderr_text.
 */
#define run_lm(fx, script, arg, ...)                                                               \
	binrun_exit_code((fx), binrun_run((fx), NULL, (script), (arg), __VA_ARGS__))

/* --- checks --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (RFC 3629), 0 if there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t v, min;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, v = s[0] & 0x1f, min = 0x80;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, v = s[0] & 0x0f, min = 0x800;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, v = s[0] & 0x07, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	return v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) ? 0 : len;
}

/* text is safe on a terminal: no C0 control but '\n', no DEL, no C1, valid UTF-8. */
static void assert_clean(const char *what, const char *text, size_t n)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0, k;

	while (i < n) {
		if ((s[i] < 0x20 && s[i] != '\n') || s[i] == 0x7f)
			fail_msg("%s: raw control byte 0x%02x at offset %zu of:\n%s", what, s[i], i,
				 binrun_show(text, n));
		k = utf8_len(s + i, n - i);
		if (k == 0)
			fail_msg("%s: byte 0x%02x at offset %zu is not UTF-8", what, s[i], i);
		if (k == 2 && s[i] == 0xc2 && s[i + 1] <= 0x9f)
			fail_msg("%s: raw C1 control U+00%02X at offset %zu", what, s[i + 1], i);
		i += k;
	}
}

static void assert_outputs_clean(struct binrun *fx, const char *verb)
{
	char what[64];

	snprintf(what, sizeof(what), "%s: stdout", verb);
	assert_clean(what, fx->stdout_text, fx->stdout_len);
	snprintf(what, sizeof(what), "%s: stderr", verb);
	assert_clean(what, fx->stderr_text, fx->stderr_len);
}

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
	{
		char n[1024];

		snprintf(n, sizeof(n), "%s", binrun_show(needle, strlen(needle)));
		fail_msg("'%s' not found in:\n%s", n, binrun_show(hay, strlen(hay)));
	}
}

/* The JSON lines of stdout, as an array (owned). */
static json_object *json_lines(struct binrun *fx)
{
	json_object *arr = json_object_new_array();
	char *save = NULL, *line, *copy = strdup(fx->stdout_text);

	assert_non_null(copy);
	for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_object *o = json_tokener_parse(line);

		if (o == NULL)
			fail_msg("stdout line is not JSON: %s", binrun_show(line, strlen(line)));
		json_object_array_add(arr, o);
	}
	free(copy);
	return arr;
}

/* assert_string_equal, reporting through binrun_show() */
static void assert_same(const char *got, const char *want)
{
	if (strcmp(got, want) != 0) {
		char w[1024];

		snprintf(w, sizeof(w), "%s", binrun_show(want, strlen(want)));
		fail_msg("expected '%s', got '%s'", w, binrun_show(got, strlen(got)));
	}
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no \"%s\" in %s", key, json_object_to_json_string(o)); /* JSON: escaped */
	return json_object_get_string(v);
}

/* --- the fake's scripts ----------------------------------------------------- */

static json_object *image(const char *file, const char *backing)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "filename", json_object_new_string(file));
	json_object_object_add(o, "format", json_object_new_string("qcow2"));
	json_object_object_add(o, "virtual-size", json_object_new_int64(67108864));
	if (backing != NULL)
		json_object_object_add(o, "backing-filename", json_object_new_string(backing));
	return o;
}

static json_object *named_node(const char *node, const char *file, const char *backing)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "node-name", json_object_new_string(node));
	json_object_object_add(o, "drv", json_object_new_string("qcow2"));
	json_object_object_add(o, "file", json_object_new_string(file));
	if (backing != NULL)
		json_object_object_add(o, "backing_file", json_object_new_string(backing));
	json_object_object_add(o, "ro", json_object_new_boolean(backing == NULL));
	json_object_object_add(o, "image", image(file, backing));
	return o;
}

/* fq_reply_return with a json-c value (JSON-escaped by json-c), consumed. */
static void reply_to(struct fq *fq, int h, json_object *v)
{
	fq_reply_return_to(fq, h, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	json_object_put(v);
}

/* The four chain queries (merge/query.c), answered with the hostile chain;
 * usage: also the block statistics (the chain command asks for them), where
 * the top's protocol child has 2 MiB written. */
static void s_chain(struct fq *fq, int usage)
{
	json_object *block = json_object_new_array(), *b = json_object_new_object();
	json_object *ins = json_object_new_object(), *nodes = json_object_new_array();
	int h[5];

	json_object_object_add(ins, "node-name", json_object_new_string(top_node));
	json_object_object_add(b, "device", json_object_new_string(""));
	json_object_object_add(b, "qdev", json_object_new_string(qdev));
	json_object_object_add(b, "inserted", ins);
	json_object_array_add(block, b);
	json_object_array_add(nodes, named_node(top_node, top_file, base_file));
	json_object_array_add(nodes, named_node(base_node, base_file, NULL));
	h[0] = fq_expect(fq, "query-block", NULL);
	h[1] = fq_expect(fq, "query-named-block-nodes", NULL);
	h[2] = fq_expect(fq, "x-debug-query-block-graph", NULL);
	h[3] = fq_expect(fq, "query-block-exports", NULL);
	if (usage)
		h[4] = fq_expect(fq, "query-blockstats", "{\"query-nodes\": true}");
	reply_to(fq, h[0], block);
	reply_to(fq, h[1], nodes);
	fq_reply_error_to(fq, h[2], "CommandNotFound", "no graph " OSC);
	fq_reply_return_to(fq, h[3], "[]");
	if (usage) {
		json_object *stats = json_object_new_array(), *e = json_object_new_object();
		json_object *parent = json_object_new_object(), *st = json_object_new_object();

		json_object_object_add(st, "wr_highest_offset", json_object_new_int64(2097152));
		json_object_object_add(parent, "stats", st);
		json_object_object_add(e, "node-name", json_object_new_string(top_node));
		json_object_object_add(e, "parent", parent);
		json_object_array_add(stats, e);
		reply_to(fq, h[4], stats);
	}
}

/* connected, no job in the way, the chains read (usage: as the chain command) */
static void s_start(struct fq *fq, int usage)
{
	fq_handshake(fq);
	fq_command(fq, "query-jobs", NULL, "[]");
	s_chain(fq, usage);
}

/* The start of a verb that changes state: it asks which VM this is first. */
static void s_start_verb(struct fq *fq)
{
	fq_handshake(fq);
	fq_no_identity(fq);
	fq_command(fq, "query-jobs", NULL, "[]");
	s_chain(fq, 0);
}

static void script_chain(struct fq *fq, void *arg)
{
	(void)arg;
	s_start(fq, 1);
}

static void script_jobs(struct fq *fq, void *arg)
{
	json_object *jobs = json_object_new_array(), *j;

	(void)arg;
	j = json_object_new_object();
	json_object_object_add(j, "id", json_object_new_string(job_a));
	json_object_object_add(j, "type", json_object_new_string("commit"));
	json_object_object_add(j, "status", json_object_new_string("concluded"));
	json_object_object_add(j, "current-progress", json_object_new_int64(1048576));
	json_object_object_add(j, "total-progress", json_object_new_int64(2097152));
	json_object_object_add(j, "error", json_object_new_string(job_err));
	json_object_array_add(jobs, j);
	j = json_object_new_object();
	json_object_object_add(j, "id", json_object_new_string(job_b));
	json_object_object_add(j, "type", json_object_new_string("stream" SGR));
	json_object_object_add(j, "status", json_object_new_string("running"));
	json_object_object_add(j, "current-progress", json_object_new_int64(0));
	json_object_object_add(j, "total-progress", json_object_new_int64(1));
	json_object_array_add(jobs, j);
	fq_handshake(fq);
	fq_expect(fq, "query-jobs", NULL);
	fq_reply_return(fq, json_object_to_json_string_ext(jobs, JSON_C_TO_STRING_PLAIN));
	json_object_put(jobs);
	fq_command(fq, "query-block-jobs", NULL, "[]");
}

static void script_qmp_error(struct fq *fq, void *arg)
{
	(void)arg;
	fq_handshake(fq);
	fq_expect(fq, "query-status", NULL);
	fq_reply_error(fq, "GenericError", qmp_desc); /* the fake JSON-escapes it */
}

static void script_qmp_return(struct fq *fq, void *arg)
{
	(void)arg;
	fq_handshake(fq);
	/* DEL and C1 controls as JSON escapes and (U+009B) raw: json-c writes both raw */
	fq_command(fq, "query-name", NULL,
		   "{\"name\": \"vm\\u001b[31m\\n\\u007f\\u009b\\u0085x\", "
		   "\"k\\u001b\": [\"\xc2\x9b\"]}");
}

static void fq_make_file(struct fq *fq, void *arg)
{
	int fd = open(arg, O_CREAT | O_EXCL | O_WRONLY, 0600);

	(void)fq;
	assert_true(fd >= 0);
	close(fd);
}

/* snapshot of the hostile disk onto arg (a path in the temp dir): QEMU
 * creates the overlay, then refuses the transaction with an escape-laden
 * text; livemerge removes the file (a message line naming the disk) and
 * reads the chains again to confirm nothing changed. */
static void script_snapshot_refused(struct fq *fq, void *arg)
{
	s_start_verb(fq);
	fq_expect(fq, "transaction", NULL);
	fq_call(fq, fq_make_file, arg);
	fq_reply_error(fq, "GenericError", "Could not create '" OSC "': Permission denied\n\033[2J");
	s_chain(fq, 0);
}

/* commit of the hostile disk: the job fails with an escape-laden error;
 * livemerge reads it, dismisses the job and finds the chain unchanged. */
static void script_commit_fails(struct fq *fq, void *arg)
{
	/* the engine makes its job id of the disk name with anything but
	 * [A-Za-z0-9._-] replaced: QEMU would refuse the rest */
	static const char cjob[] = "livemerge-commit-vd__31ma";
	char jobs[1024];
	json_object *j = json_object_new_array(), *o = json_object_new_object();

	(void)arg;
	json_object_object_add(o, "id", json_object_new_string(cjob));
	json_object_object_add(o, "type", json_object_new_string("commit"));
	json_object_object_add(o, "status", json_object_new_string("concluded"));
	json_object_object_add(o, "current-progress", json_object_new_int64(1048576));
	json_object_object_add(o, "total-progress", json_object_new_int64(2097152));
	json_object_object_add(o, "error", json_object_new_string(job_err));
	json_object_array_add(j, o);
	snprintf(jobs, sizeof(jobs), "%s", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
	s_start_verb(fq);
	fq_expect(fq, "block-commit", NULL);
	fq_job_status(fq, cjob, "created");
	fq_job_status(fq, cjob, "running");
	fq_reply_return(fq, "{}");
	fq_job_status(fq, cjob, "aborting");
	fq_block_job_completed(fq, cjob, "commit", job_err);
	fq_job_status(fq, cjob, "concluded");
	fq_command(fq, "query-jobs", NULL, jobs);
	fq_command(fq, "job-dismiss", NULL, "{}");
	fq_job_status(fq, cjob, "null");
	s_chain(fq, 0);
}

/* --- tests ------------------------------------------------------------------ */

static void test_chain_human(void **state)
{
	struct binrun *fx = *state;

	assert_int_equal(run_lm(fx, script_chain, NULL, "chain", NULL), 0);
	assert_outputs_clean(fx, "chain");
	assert_contains(fx->stdout_text, "vd\\x1b[31ma  (/machine/peripheral/vd\\x1b[31ma/virtio");
	assert_contains(fx->stdout_text, "top\\x1b[31mnode");
	assert_contains(fx->stdout_text, "/img/top\\x1b]0;pwned\\x07\\n.qcow2");
	assert_contains(fx->stdout_text, "/img/base\\x1b[31m\\r\\t\\x7f\\u009b\\xff.qcow2");
	assert_contains(fx->stdout_text, "base\\x1b]0;pwned\\x07\\n");
	/* the top's statistics: no protocol node told, so no type or size */
	assert_contains(fx->stdout_text, "  allocated 2 MiB\n");
	/* a line per disk and per layer: nothing split a line */
	{
		int lines = 0;
		const char *p;

		for (p = fx->stdout_text; *p; p++)
			lines += *p == '\n';
		assert_int_equal(lines, 3);
	}
}

static void test_chain_json_exact(void **state)
{
	struct binrun *fx = *state;
	json_object *lines, *d, *chain, *l, *v;

	assert_int_equal(run_lm(fx, script_chain, NULL, "--json", "chain", NULL), 0);
	assert_clean("chain --json: stderr", fx->stderr_text, fx->stderr_len);
	lines = json_lines(fx);
	assert_int_equal(json_object_array_length(lines), 1);
	d = json_object_array_get_idx(lines, 0);
	assert_same(jstr(d, "disk"), disk);
	assert_same(jstr(d, "qdev"), qdev);
	assert_same(jstr(d, "node-name"), top_node);
	assert_true(json_object_object_get_ex(d, "chain", &chain));
	assert_int_equal(json_object_array_length(chain), 2);
	l = json_object_array_get_idx(chain, 0);
	assert_same(jstr(l, "node-name"), top_node);
	assert_same(jstr(l, "filename"), top_file);
	assert_same(jstr(l, "backing-filename"), base_file);
	assert_true(json_object_object_get_ex(l, "allocated", &v));
	assert_int_equal(json_object_get_int64(v), 2097152);
	assert_false(json_object_object_get_ex(l, "type", NULL));
	l = json_object_array_get_idx(chain, 1);
	assert_false(json_object_object_get_ex(l, "allocated", NULL));
	assert_same(jstr(l, "node-name"), base_node);
	assert_same(jstr(l, "filename"), base_file);
	json_object_put(lines);
}

static void test_jobs_human(void **state)
{
	struct binrun *fx = *state;

	assert_int_equal(run_lm(fx, script_jobs, NULL, "jobs", NULL), 0);
	assert_outputs_clean(fx, "jobs");
	assert_contains(fx->stdout_text, "livemerge-commit-vd\\x1b[31ma");
	assert_contains(fx->stdout_text, "error: Input/output error\\x1b]0;pwned\\x07\\n");
	assert_contains(fx->stdout_text, "x\\x1b]0;pwned\\x07\\ny");
}

static void test_jobs_json_exact(void **state)
{
	struct binrun *fx = *state;
	json_object *lines, *j;

	assert_int_equal(run_lm(fx, script_jobs, NULL, "--json", "jobs", NULL), 0);
	lines = json_lines(fx);
	assert_int_equal(json_object_array_length(lines), 2);
	j = json_object_array_get_idx(lines, 0);
	assert_same(jstr(j, "job"), job_a);
	assert_same(jstr(j, "disk"), disk);
	assert_same(jstr(j, "error"), job_err);
	j = json_object_array_get_idx(lines, 1);
	assert_same(jstr(j, "job"), job_b);
	assert_same(jstr(j, "job-type"), "stream" SGR);
	json_object_put(lines);
}

static void test_qmp_error_line(void **state)
{
	struct binrun *fx = *state;

	assert_int_equal(run_lm(fx, script_qmp_error, NULL, "qmp", "query-status", NULL), 1);
	assert_outputs_clean(fx, "qmp error");
	assert_int_equal(fx->stdout_len, 0);
	/* one line: the desc's newline cannot forge a second "livemerge:" line */
	assert_same(fx->stderr_text,
			    "livemerge: query-status: no such thing \\x1b]0;pwned\\x07\\nlivemerge: "
			    "fake line\\r\\x1b[31m\\u0085\n");
	/* --json changes nothing on stderr: it is for a person */
	assert_int_equal(run_lm(fx, script_qmp_error, NULL, "--json", "qmp", "query-status", NULL),
			 1);
	assert_outputs_clean(fx, "qmp --json error");
}

static void test_qmp_return(void **state)
{
	struct binrun *fx = *state;
	json_object *lines, *r, *v;

	assert_int_equal(run_lm(fx, script_qmp_return, NULL, "qmp", "query-name", NULL), 0);
	assert_outputs_clean(fx, "qmp");
	/* human: still JSON, the controls json-c leaves raw as \u escapes */
	r = json_tokener_parse(fx->stdout_text);
	assert_non_null(r);
	assert_same(jstr(r, "name"), "vm" SGR "\n\x7f\xc2\x9b\xc2\x85x");
	json_object_put(r);
	assert_int_equal(run_lm(fx, script_qmp_return, NULL, "--json", "qmp", "query-name", NULL),
			 0);
	lines = json_lines(fx);
	assert_int_equal(json_object_array_length(lines), 1);
	r = json_object_array_get_idx(lines, 0);
	assert_same(jstr(r, "name"), "vm" SGR "\n\x7f\xc2\x9b\xc2\x85x");
	assert_true(json_object_object_get_ex(r, "k\033", &v));
	assert_same(json_object_get_string(json_object_array_get_idx(v, 0)), "\xc2\x9b");
	json_object_put(lines);
}

static void test_snapshot_refused(void **state)
{
	struct binrun *fx = *state;
	char arg[256], ov[128];

	snprintf(ov, sizeof(ov), "%s/ov.qcow2", fx->dir);
	snprintf(arg, sizeof(arg), "%s=%s", top_node, ov);
	assert_int_equal(run_lm(fx, script_snapshot_refused, ov, "snapshot", arg, NULL), 1);
	assert_outputs_clean(fx, "snapshot");
	assert_int_equal(access(ov, F_OK), -1);
	assert_contains(fx->stderr_text, "vd\\x1b[31ma: removed ");
	assert_contains(fx->stderr_text, "\\x1b]0;pwned\\x07': Permission denied\\n\\x1b[2J");
	assert_contains(fx->stderr_text, "rolled back");
	/* every line on stderr is one of ours */
	{
		const char *p = fx->stderr_text;

		while (*p != '\0') {
			if (strncmp(p, "livemerge: ", 11) != 0 && strncmp(p, "vd\\x1b[31ma: ", 13) != 0)
				fail_msg("a stderr line not of ours: %s",
					 binrun_show(p, strcspn(p, "\n")));
			p = strchr(p, '\n');
			assert_non_null(p);
			p++;
		}
	}
}

static void test_commit_job_fails(void **state)
{
	struct binrun *fx = *state;

	assert_int_equal(run_lm(fx, script_commit_fails, NULL, "commit", disk, NULL), 1);
	assert_outputs_clean(fx, "commit");
	/* job lines (stderr is no terminal), a message line, the error line */
	assert_contains(fx->stderr_text, "\nvd\\x1b[31ma: job livemerge-commit-vd__31ma running\n");
	assert_contains(fx->stderr_text, "\ncancelling every job: no disk pivots\n");
	assert_contains(fx->stderr_text, "\nlivemerge: vd\\x1b[31ma: job livemerge-commit-vd__31ma "
					 "failed: Input/output error\\x1b]0;pwned\\x07\\n"
					 "\\x1b[31m\\x7f\n");
	assert_contains(fx->stderr_text, "\nlivemerge: rolled back");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chain_human, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_json_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jobs_human, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jobs_json_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qmp_error_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qmp_return, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_job_fails, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

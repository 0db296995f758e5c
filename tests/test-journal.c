/*
 * test-journal: merge/journal (the per-VM JSON-lines journal) in a temp
 * directory: where the file goes and how it is named, the begin / step /
 * last round trip, torn and garbage lines, several operations, the pure
 * reader (merge_journal_parse) on hostile input, and the helper recover
 * uses to ask whether an unfinished operation got as far as a step
 * (merge_journal_unfinished_has).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../merge/journal.h"
#include "../merge/recover.h"
#include "testutil.h"

struct fixture {
	char dir[512];
};


static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/lm-test-journal-XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	test_rm_rf(fx->dir);
	free(fx);
	return 0;
}

static struct merge_journal *open_ok(const char *dir, const char *target)
{
	struct lm_error err = { 0 };
	struct merge_journal *j = merge_journal_open(dir, target, &err);

	if (j == NULL)
		fail_msg("merge_journal_open(%s, %s): %s", dir ? dir : "NULL", target, err.msg);
	return j;
}

static json_object *obj(const char *text)
{
	json_object *o = json_tokener_parse(text);

	assert_non_null(o);
	return o;
}

static const char *entry_str(json_object *entries, size_t i, const char *key)
{
	json_object *v;

	assert_true(i < json_object_array_length(entries));
	if (!json_object_object_get_ex(json_object_array_get_idx(entries, i), key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t entry_int(json_object *entries, size_t i, const char *key)
{
	json_object *v;

	assert_true(i < json_object_array_length(entries));
	assert_true(json_object_object_get_ex(json_object_array_get_idx(entries, i), key, &v));
	assert_true(json_object_is_type(v, json_type_int));
	return json_object_get_int64(v);
}

/* The steps of entries, comma-separated, into buf. */
static const char *steps_of(json_object *entries, char *buf, size_t len)
{
	size_t i, n = entries ? json_object_array_length(entries) : 0;

	buf[0] = '\0';
	for (i = 0; i < n; i++) {
		const char *s = entry_str(entries, i, "step");

		if (i > 0)
			strncat(buf, ",", len - strlen(buf) - 1);
		strncat(buf, s ? s : "?", len - strlen(buf) - 1);
	}
	return buf;
}

static void assert_last(struct merge_journal *j, const char *want_steps, int want_finished)
{
	json_object *entries = NULL;
	struct lm_error err = { 0 };
	int finished = -1;
	char buf[1024];

	if (merge_journal_last(j, &entries, &finished, &err) < 0)
		fail_msg("merge_journal_last: %s", err.msg);
	if (want_steps == NULL) {
		assert_null(entries);
	} else {
		assert_non_null(entries);
		if (strcmp(steps_of(entries, buf, sizeof(buf)), want_steps) != 0)
			fail_msg("last operation has steps \"%s\", expected \"%s\"", buf, want_steps);
	}
	assert_int_equal(finished, want_finished);
	json_object_put(entries);
}

static void append_raw(const char *path, const char *bytes, size_t len)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	close(fd);
}

static void begin(struct merge_journal *j, const char *intent_json)
{
	json_object *o = obj(intent_json);
	struct lm_error err = { 0 };

	if (merge_journal_begin(j, o, &err) < 0)
		fail_msg("merge_journal_begin: %s", err.msg);
	json_object_put(o);
}

static void step(struct merge_journal *j, const char *name, const char *fields_json)
{
	json_object *o = fields_json ? obj(fields_json) : NULL;
	struct lm_error err = { 0 };

	if (merge_journal_step(j, name, o, &err) < 0)
		fail_msg("merge_journal_step %s: %s", name, err.msg);
	json_object_put(o);
}

/* ------------------------------------------------------------------- tests */

static void test_open_creates_dirs_0700(void **state)
{
	struct fixture *fx = *state;
	char dir[PATH_MAX], parent[PATH_MAX];
	struct merge_journal *j;
	struct stat st;
	mode_t old = umask(0);

	/* even with umask 0 the directories are private */
	snprintf(parent, sizeof(parent), "%s/state", fx->dir);
	snprintf(dir, sizeof(dir), "%s/state/livemerge", fx->dir);
	j = open_ok(dir, "unix:/run/vm1/qmp.sock");
	umask(old);
	assert_int_equal(stat(parent, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	/* the file: in dir, named after the target, private, empty */
	assert_int_equal(strncmp(merge_journal_path(j), dir, strlen(dir)), 0);
	assert_int_equal(merge_journal_path(j)[strlen(dir)], '/');
	assert_null(strchr(merge_journal_path(j) + strlen(dir) + 1, '/'));
	assert_non_null(strstr(merge_journal_path(j), "run_vm1_qmp.sock"));
	assert_non_null(strstr(merge_journal_path(j), ".journal"));
	assert_int_equal(stat(merge_journal_path(j), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 0);
	assert_last(j, NULL, 0);
	merge_journal_close(j);
}

static void test_name_same_for_unix_prefix(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *a = open_ok(fx->dir, "unix:/x");
	struct merge_journal *b = open_ok(fx->dir, "/x");
	struct merge_journal *c = open_ok(fx->dir, "tcp:127.0.0.1:4444");
	struct merge_journal *d = open_ok(fx->dir, "/y");

	assert_string_equal(merge_journal_path(a), merge_journal_path(b));
	assert_string_not_equal(merge_journal_path(a), merge_journal_path(c));
	assert_string_not_equal(merge_journal_path(a), merge_journal_path(d));
	/* nothing of the target escapes the directory */
	assert_null(strchr(merge_journal_path(c) + strlen(fx->dir) + 1, '/'));
	/* one file: what one writes, the other reads */
	begin(a, "{\"verb\":\"commit\"}");
	assert_last(b, "intent", 0);
	assert_last(d, NULL, 0);
	merge_journal_close(a);
	merge_journal_close(b);
	merge_journal_close(c);
	merge_journal_close(d);
}

static void test_default_dirs(void **state)
{
	struct fixture *fx = *state;
	char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char *xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
	char want[PATH_MAX], xdgdir[PATH_MAX];
	struct merge_journal *j;
	struct lm_error err = { 0 };

	snprintf(xdgdir, sizeof(xdgdir), "%s/xdg", fx->dir);
	setenv("XDG_STATE_HOME", xdgdir, 1);
	j = open_ok(NULL, "/x");
	snprintf(want, sizeof(want), "%s/xdg/livemerge/", fx->dir);
	assert_int_equal(strncmp(merge_journal_path(j), want, strlen(want)), 0);
	merge_journal_close(j);

	unsetenv("XDG_STATE_HOME");
	setenv("HOME", fx->dir, 1);
	j = open_ok(NULL, "/x");
	snprintf(want, sizeof(want), "%s/.local/state/livemerge/", fx->dir);
	assert_int_equal(strncmp(merge_journal_path(j), want, strlen(want)), 0);
	merge_journal_close(j);

	setenv("XDG_STATE_HOME", "", 1); /* empty counts as unset */
	unsetenv("HOME");
	j = merge_journal_open(NULL, "/x", &err);
	assert_null(j);
	assert_int_equal(err.code, LM_ERR_USAGE);

	if (home)
		setenv("HOME", home, 1);
	if (xdg)
		setenv("XDG_STATE_HOME", xdg, 1);
	else
		unsetenv("XDG_STATE_HOME");
	free(home);
	free(xdg);
}

static void test_open_fails(void **state)
{
	struct fixture *fx = *state;
	char file[PATH_MAX], dir[PATH_MAX];
	struct lm_error err = { 0 };
	int fd;

	/* a plain file where the directory should be */
	snprintf(file, sizeof(file), "%s/plain", fx->dir);
	fd = open(file, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(dir, sizeof(dir), "%s/plain/sub", fx->dir);
	assert_null(merge_journal_open(dir, "/x", &err));
	assert_int_equal(err.code, LM_ERR_IO);
	assert_non_null(strstr(err.msg, "plain"));
}

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "unix:/run/vm.sock");
	json_object *entries = NULL, *v, *e0;
	struct lm_error err = { 0 };
	int finished = -1;
	char line[4096];
	FILE *f;
	int nlines = 0;

	begin(j, "{\"verb\":\"commit\",\"disks\":[{\"disk\":\"vda\",\"job\":\"livemerge-commit-vda\"}]}");
	assert_last(j, "intent", 0);
	step(j, "start", "{\"disk\":\"vda\",\"job\":\"livemerge-commit-vda\"}");
	step(j, "complete", NULL);
	assert_last(j, "intent,start,complete", 0);
	step(j, "finalize", "{\"disk\":\"vda\"}");
	step(j, "end", "{\"outcome\":0}");

	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(finished, 1);
	assert_int_equal(json_object_array_length(entries), 5);
	/* every entry: the operation's number, its step, a timestamp */
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(entry_int(entries, i, "op"), 1);
		assert_true(json_object_object_get_ex(json_object_array_get_idx(entries, i), "ts",
						      &v));
		assert_true(json_object_is_type(v, json_type_double));
	}
	/* the intent keeps what it was given */
	e0 = json_object_array_get_idx(entries, 0);
	assert_string_equal(entry_str(entries, 0, "step"), "intent");
	assert_string_equal(entry_str(entries, 0, "verb"), "commit");
	assert_true(json_object_object_get_ex(e0, "disks", &v));
	assert_string_equal(json_object_get_string(json_object_object_get(
				    json_object_array_get_idx(v, 0), "job")),
			    "livemerge-commit-vda");
	/* steps keep their fields */
	assert_string_equal(entry_str(entries, 1, "disk"), "vda");
	assert_string_equal(entry_str(entries, 1, "job"), "livemerge-commit-vda");
	assert_int_equal(entry_int(entries, 4, "outcome"), 0);
	json_object_put(entries);

	/* the file is JSON lines, one per entry, each a whole object */
	f = fopen(merge_journal_path(j), "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		json_object *o;

		assert_true(strlen(line) > 0 && line[strlen(line) - 1] == '\n');
		o = json_tokener_parse(line);
		assert_non_null(o);
		assert_true(json_object_is_type(o, json_type_object));
		json_object_put(o);
		nlines++;
	}
	fclose(f);
	assert_int_equal(nlines, 5);
	merge_journal_close(j);

	/* a reopened journal reads the same, and numbers on from there */
	j = open_ok(fx->dir, "/run/vm.sock");
	assert_last(j, "intent,start,complete,finalize,end", 1);
	begin(j, "{\"verb\":\"stream\"}");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(entry_int(entries, 0, "op"), 2);
	assert_string_equal(entry_str(entries, 0, "verb"), "stream");
	json_object_put(entries);
	merge_journal_close(j);
}

static void test_two_operations_last_wins(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	json_object *entries = NULL;
	struct lm_error err = { 0 };
	int finished;

	begin(j, "{\"verb\":\"snapshot\"}");
	step(j, "freeze", NULL);
	step(j, "snapshot", NULL);
	/* no end: interrupted; then a new operation starts */
	begin(j, "{\"verb\":\"commit\"}");
	step(j, "start", "{\"disk\":\"vdb\"}");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(finished, 0);
	assert_int_equal(json_object_array_length(entries), 2);
	assert_int_equal(entry_int(entries, 0, "op"), 2);
	assert_int_equal(entry_int(entries, 1, "op"), 2);
	assert_string_equal(entry_str(entries, 0, "verb"), "commit");
	json_object_put(entries);
	/* its end finishes it */
	step(j, "end", NULL);
	assert_last(j, "intent,start,end", 1);
	merge_journal_close(j);
}

static void test_torn_last_line_ignored(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	static const char torn[] = "{\"op\":1,\"step\":\"finalize\",\"disk\":\"v";
	static const char whole_but_unterminated[] = "{\"op\":1,\"step\":\"finalize\"}";

	begin(j, "{\"verb\":\"commit\"}");
	step(j, "start", NULL);
	append_raw(merge_journal_path(j), torn, sizeof(torn) - 1);
	assert_last(j, "intent,start", 0);
	merge_journal_close(j);

	/* a line that parses but has no newline was not fsync'ed either */
	j = open_ok(fx->dir, "/vm2");
	begin(j, "{\"verb\":\"commit\"}");
	append_raw(merge_journal_path(j), whole_but_unterminated,
		   sizeof(whole_but_unterminated) - 1);
	assert_last(j, "intent", 0);
	merge_journal_close(j);
}

/* Reading without opening: no journal is made, a torn line is left as it is. */
static void test_read_last_changes_nothing(void **state)
{
	struct fixture *fx = *state;
	static const char torn[] = "{\"op\":1,\"step\":\"fin";
	char sub[600], path[700];
	struct lm_error err = { 0 };
	json_object *entries = NULL;
	struct merge_journal *j;
	struct stat st;
	int finished = -1;
	off_t size;

	snprintf(sub, sizeof(sub), "%s/none", fx->dir);
	assert_int_equal(merge_journal_read_last(sub, "/vm", &entries, &finished, &err), 0);
	assert_null(entries);
	assert_int_equal(finished, 0);
	assert_int_equal(stat(sub, &st), -1); /* not even its directory */

	j = open_ok(fx->dir, "/vm");
	begin(j, "{\"verb\":\"commit\"}");
	step(j, "start", NULL);
	snprintf(path, sizeof(path), "%s", merge_journal_path(j));
	merge_journal_close(j);
	append_raw(path, torn, sizeof(torn) - 1);
	assert_int_equal(stat(path, &st), 0);
	size = st.st_size;
	assert_int_equal(merge_journal_read_last(fx->dir, "unix:/vm", &entries, &finished, &err), 0);
	assert_non_null(entries);
	assert_int_equal(json_object_array_length(entries), 2);
	assert_string_equal(entry_str(entries, 1, "step"), "start");
	assert_int_equal(finished, 0);
	json_object_put(entries);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, size); /* the torn line not ended */
}

/*
 * After a crash tore the last line, the next entry must still be readable:
 * a writer that appends straight after the fragment glues its line to it.
 */
static void test_write_after_torn_line(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	static const char torn[] = "{\"op\":1,\"step\":\"fina";

	begin(j, "{\"verb\":\"commit\"}");
	step(j, "start", NULL);
	append_raw(merge_journal_path(j), torn, sizeof(torn) - 1);
	merge_journal_close(j);

	/* the next run (recover, or the next verb) opens the journal again */
	j = open_ok(fx->dir, "/vm");
	assert_last(j, "intent,start", 0);
	step(j, "cancel", NULL);
	step(j, "end", NULL);
	assert_last(j, "intent,start,cancel,end", 1);
	begin(j, "{\"verb\":\"stream\"}");
	assert_last(j, "intent", 0);
	merge_journal_close(j);
}

static void test_garbage_lines_skipped(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	static const char junk[] = "this is not json\n"
				   "{\"op\":1,\"step\":\"bogus\"} trailing\n"
				   "\n"
				   "[1,2,3]\n";

	begin(j, "{\"verb\":\"commit\"}");
	append_raw(merge_journal_path(j), junk, sizeof(junk) - 1);
	step(j, "start", NULL);
	assert_last(j, "intent,start", 0);
	merge_journal_close(j);
}

static void parse_str(const char *text, size_t len, const char *want_steps, int want_finished)
{
	json_object *entries = (json_object *)1;
	int finished = -1;
	char buf[1024];

	merge_journal_parse(text, len, &entries, &finished);
	if (want_steps == NULL) {
		if (entries != NULL)
			fail_msg("parse of \"%.*s\" gave \"%s\", expected nothing", (int)len, text,
				 steps_of(entries, buf, sizeof(buf)));
	} else {
		assert_non_null(entries);
		if (strcmp(steps_of(entries, buf, sizeof(buf)), want_steps) != 0)
			fail_msg("parse of \"%.*s\": steps \"%s\", expected \"%s\"", (int)len, text,
				 buf, want_steps);
	}
	assert_int_equal(finished, want_finished);
	json_object_put(entries);
}

#define PARSE(lit, steps, fin) parse_str((lit), sizeof(lit) - 1, (steps), (fin))

static void test_parse_garbage(void **state)
{
	static const char nul[] = "{\"op\":1,\"step\":\"intent\"}\n\0\0\0\n{\"op\":1,\"step\":\"start\"}\n";
	static const char ff[] = "\xff\xfe\n{\"op\":1,\"step\":\"intent\"}\n";
	char deep[600];
	int i, k = 0;

	(void)state;
	parse_str("", 0, NULL, 0);
	PARSE("\n\n\n", NULL, 0);
	PARSE("garbage\n", NULL, 0);
	PARSE("{\"op\":1,\"step\":\"intent\"}", NULL, 0); /* no newline: torn */
	PARSE("{\"op\":\"1\",\"step\":\"intent\"}\n", NULL, 0);  /* op not an int */
	PARSE("{\"op\":1.5,\"step\":\"intent\"}\n", NULL, 0);
	PARSE("{\"op\":1}\n", NULL, 0);                          /* no step */
	PARSE("{\"op\":1,\"step\":7}\n", NULL, 0);               /* step not a string */
	PARSE("[{\"op\":1,\"step\":\"intent\"}]\n", NULL, 0);   /* not an object */
	PARSE("{\"op\":1,\"step\":\"intent\"} {\"x\":1}\n", NULL, 0); /* two values on a line */
	PARSE("{\"op\":1,\"step\":\"intent\"\n,\"x\":1}\n", NULL, 0); /* split over lines */
	PARSE("{\"op\":1,\"step\":\"intent\"}\n{\"op\":1,\"step\":\"start\"}\n", "intent,start", 0);
	PARSE("{\"op\":1,\"step\":\"intent\"}\r\n", "intent", 0);
	PARSE("{\"op\":1,\"step\":\"intent\"}\n{\"op\":1,\"step\":\"end\"}\n", "intent,end", 1);
	/* a new op number starts a new operation, intent or not */
	PARSE("{\"op\":1,\"step\":\"intent\"}\n{\"op\":1,\"step\":\"end\"}\n"
	      "{\"op\":2,\"step\":\"start\"}\n",
	      "start", 0);
	/* an intent starts a new operation even with the same number */
	PARSE("{\"op\":3,\"step\":\"intent\"}\n{\"op\":3,\"step\":\"end\"}\n"
	      "{\"op\":3,\"step\":\"intent\"}\n",
	      "intent", 0);
	/* a garbage line between steps does not split the operation */
	PARSE("{\"op\":1,\"step\":\"intent\"}\nxx\n{\"op\":1,\"step\":\"start\"}\n", "intent,start", 0);
	parse_str(nul, sizeof(nul) - 1, "intent,start", 0);
	parse_str(ff, sizeof(ff) - 1, "intent", 0);
	/* deeper than the reader's depth cap: skipped, not a crash */
	k += snprintf(deep + k, sizeof(deep) - (size_t)k, "{\"op\":1,\"step\":\"intent\",\"x\":");
	for (i = 0; i < 100; i++)
		deep[k++] = '[';
	for (i = 0; i < 100; i++)
		deep[k++] = ']';
	deep[k++] = '}';
	deep[k++] = '\n';
	parse_str(deep, (size_t)k, NULL, 0);
}

static void test_unfinished_has(void **state)
{
	struct fixture *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");

	assert_int_equal(merge_journal_unfinished_has(j, "intent"), 0); /* empty */
	begin(j, "{\"verb\":\"snapshot\",\"qga\":\"unix:/run/qga.sock\"}");
	assert_int_equal(merge_journal_unfinished_has(j, "intent"), 1);
	assert_int_equal(merge_journal_unfinished_has(j, "freeze"), 0);
	step(j, "freeze", NULL);
	assert_int_equal(merge_journal_unfinished_has(j, "freeze"), 1);
	assert_int_equal(merge_journal_unfinished_has(j, "thaw"), 0);
	step(j, "snapshot", NULL);
	step(j, "thaw", NULL);
	assert_int_equal(merge_journal_unfinished_has(j, "thaw"), 1);
	step(j, "end", NULL);
	/* finished: nothing is unfinished */
	assert_int_equal(merge_journal_unfinished_has(j, "freeze"), 0);
	assert_int_equal(merge_journal_unfinished_has(j, "end"), 0);
	/* only the last operation counts */
	begin(j, "{\"verb\":\"commit\"}");
	assert_int_equal(merge_journal_unfinished_has(j, "freeze"), 0);
	step(j, "finalize", NULL);
	assert_int_equal(merge_journal_unfinished_has(j, "finalize"), 1);
	merge_journal_close(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_dirs_0700, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_last_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_same_for_unix_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_operations_last_wins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_last_line_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_after_torn_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_lines_skipped, setup, teardown),
		cmocka_unit_test(test_parse_garbage),
		cmocka_unit_test_setup_teardown(test_unfinished_has, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

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
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../merge/journal.h"
#include "../merge/recover.h"
#include "testutil.h"

static int setup(void **state)
{
	return test_dir_setup(state, "journal");
}

static int teardown(void **state)
{
	return test_dir_teardown(state);
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
	static const char torn[] = "{\"op\":1,\"step\":\"fin";
	char sub[600], path[700];
	struct lm_error err = { 0 };
	json_object *entries = NULL;
	struct merge_journal *j;
	struct stat st;
	int finished = -1;
	off_t size;

	snprintf(sub, sizeof(sub), "%s/none", fx->dir);
	assert_int_equal(merge_journal_read_last(sub, "_vm", &entries, &finished, &err), 0);
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
	assert_int_equal(merge_journal_read_last(fx->dir, "_vm", &entries, &finished, &err), 0);
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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
	struct test_dir *fx = *state;
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

/* ------------------------------------------------- chain states, compaction */

/* One finished operation as the engine writes it: intent, steps, an end
 * with the chain state (vda: files[0] over files[1] ...). */
static void op_with_state(struct merge_journal *j, const char *verb, const char *top,
			  const char *base)
{
	char buf[2048];

	snprintf(buf, sizeof(buf),
		 "{\"verb\":\"%s\",\"target\":\"unix:/run/vm.sock\",\"disks\":[{\"disk\":\"vda\","
		 "\"before\":[\"%s\"],\"expect\":[\"%s\",\"%s\"]}]}", verb, base, top, base);
	begin(j, buf);
	step(j, "start", "{\"disk\":\"vda\",\"job\":\"livemerge-x-vda\"}");
	step(j, "complete", NULL);
	step(j, "finalize", "{\"disk\":\"vda\"}");
	snprintf(buf, sizeof(buf),
		 "{\"outcome\":0,\"chains\":[{\"disk\":\"vda\",\"chain\":["
		 "{\"filename\":\"%s\",\"format\":\"qcow2\",\"virtual-size\":1048576,"
		 "\"backing-filename\":\"%s\",\"type\":\"file\",\"size\":196608},"
		 "{\"filename\":\"%s\",\"format\":\"raw\",\"virtual-size\":1048576,"
		 "\"type\":\"file\",\"size\":1048576}]}]}", top, base, base);
	step(j, "end", buf);
}

static json_object *history_ok(struct merge_journal *j)
{
	struct lm_error err = { 0 };
	json_object *h = NULL;

	if (merge_journal_history(j, &h, &err) < 0)
		fail_msg("merge_journal_history: %s", err.msg);
	assert_non_null(h);
	return h;
}

static char *history_text(struct merge_journal *j)
{
	json_object *h = history_ok(j);
	char *s = strdup(json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN));

	json_object_put(h);
	return s;
}

static char *slurp_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 22);
	size_t n;

	assert_non_null(buf);
	if (f == NULL)
		return buf;
	n = fread(buf, 1, (1 << 22) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void history_path(struct merge_journal *j, char *buf, size_t len)
{
	const char *p = merge_journal_path(j);

	snprintf(buf, len, "%.*s.history", (int)(strlen(p) - strlen(".journal")), p);
}

static void test_states_recorded(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "unix:/run/vm.sock");
	json_object *h, *st, *l;

	op_with_state(j, "snapshot", "/i/top1", "/i/base");
	begin(j, "{\"verb\":\"extend\",\"path\":\"/dev/vg/lv\"}"); /* no chains */
	step(j, "end", "{\"outcome\":0}");
	op_with_state(j, "commit", "/i/top2", "/i/base");
	begin(j, "{\"verb\":\"stream\",\"target\":\"unix:/run/vm.sock\",\"disks\":[]}");
	step(j, "start", NULL);
	/* recovery ends the stream another run began */
	step(j, "end", "{\"outcome\":0,\"recovered\":\"finished\",\"verb\":\"recover\","
		       "\"target\":\"unix:/other\",\"chains\":[{\"disk\":\"vda\",\"chain\":[]}]}");
	h = history_ok(j);
	assert_int_equal(json_object_array_length(h), 3);
	st = json_object_array_get_idx(h, 0);
	assert_int_equal(json_object_get_int(json_object_object_get(st, "op")), 1);
	assert_string_equal(json_object_get_string(json_object_object_get(st, "verb")), "snapshot");
	assert_string_equal(json_object_get_string(json_object_object_get(st, "target")),
			    "unix:/run/vm.sock");
	assert_true(json_object_is_type(json_object_object_get(st, "time"), json_type_double));
	l = json_object_array_get_idx(
		json_object_object_get(json_object_array_get_idx(json_object_object_get(st, "disks"),
								 0),
				       "chain"),
		0);
	assert_string_equal(json_object_get_string(json_object_object_get(l, "filename")),
			    "/i/top1");
	assert_string_equal(json_object_get_string(json_object_object_get(l, "backing-filename")),
			    "/i/base");
	assert_null(json_object_object_get(st, "of"));
	st = json_object_array_get_idx(h, 1);
	assert_int_equal(json_object_get_int(json_object_object_get(st, "op")), 3);
	assert_string_equal(json_object_get_string(json_object_object_get(st, "verb")), "commit");
	st = json_object_array_get_idx(h, 2);
	assert_string_equal(json_object_get_string(json_object_object_get(st, "verb")), "recover");
	assert_string_equal(json_object_get_string(json_object_object_get(st, "of")), "stream");
	assert_string_equal(json_object_get_string(json_object_object_get(st, "recovered")),
			    "finished");
	assert_string_equal(json_object_get_string(json_object_object_get(st, "target")),
			    "unix:/other");
	json_object_put(h);
	merge_journal_close(j);
}

/* Compaction keeps every chain state, drops the steps, keeps the last
 * operation whole; op numbers go on. */
static void test_compact_keeps_every_state(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	struct lm_error err = { 0 };
	char *before, *after, *jt, hp[1024], name[64];
	json_object *entries;
	int i, finished;

	merge_journal_set_compact_bytes((size_t)1 << 30);
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "/i/top%d", i);
		op_with_state(j, i % 2 ? "commit" : "snapshot", name, "/i/base");
	}
	before = history_text(j);
	assert_int_equal(count_lines(jt = slurp_file(merge_journal_path(j))), 200);
	free(jt);
	assert_int_equal(merge_journal_compact(j, &err), 0);
	after = history_text(j);
	assert_string_equal(after, before);
	/* the journal: the last operation only, whole */
	jt = slurp_file(merge_journal_path(j));
	assert_int_equal(count_lines(jt), 5);
	assert_non_null(strstr(jt, "\"op\":40,\"step\":\"intent\""));
	free(jt);
	assert_last(j, "intent,start,complete,finalize,end", 1);
	/* the history file: all 40 states, one a line (the last one is in both) */
	history_path(j, hp, sizeof(hp));
	jt = slurp_file(hp);
	assert_int_equal(count_lines(jt), 40);
	free(jt);
	/* nothing more to drop: a second compaction does nothing */
	assert_int_equal(merge_journal_compact(j, &err), 1);
	free(after);
	/* numbering goes on, in this handle and the next */
	op_with_state(j, "stream", "/i/s", "/i/base");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(entry_int(entries, 0, "op"), 41);
	json_object_put(entries);
	merge_journal_close(j);
	j = open_ok(fx->dir, "/vm");
	assert_int_equal(merge_journal_compact(j, &err), 0);
	after = history_text(j);
	assert_non_null(strstr(after, "\"op\":41"));
	begin(j, "{\"verb\":\"commit\"}");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(entry_int(entries, 0, "op"), 42);
	json_object_put(entries);
	free(before);
	free(after);
	merge_journal_close(j);

	/* a journal removed by hand: a new one numbers on from its history */
	unlink(merge_journal_path(j = open_ok(fx->dir, "/vm")));
	merge_journal_close(j);
	j = open_ok(fx->dir, "/vm");
	begin(j, "{\"verb\":\"commit\"}");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(entry_int(entries, 0, "op"), 42);
	json_object_put(entries);
	merge_journal_close(j);
	merge_journal_set_compact_bytes((size_t)64 << 10);
}

/* An unfinished operation keeps every line, wherever it is; the steps of
 * finished ones go, and a journal past the bound compacts at each end. */
static void test_compact_keeps_unfinished(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	struct lm_error err = { 0 };
	char *jt, *before;
	static const char old_unfinished[] =
		"{\"op\":2,\"step\":\"intent\",\"verb\":\"commit\",\"disks\":[]}\n"
		"{\"op\":2,\"step\":\"start\",\"disk\":\"vda\"}\n";

	merge_journal_set_compact_bytes((size_t)1 << 30);
	op_with_state(j, "snapshot", "/i/t1", "/i/b");
	merge_journal_close(j);
	append_raw(merge_journal_path(j = open_ok(fx->dir, "/vm")), old_unfinished,
		   sizeof(old_unfinished) - 1);
	merge_journal_close(j);
	j = open_ok(fx->dir, "/vm");
	op_with_state(j, "commit", "/i/t2", "/i/b");
	op_with_state(j, "snapshot", "/i/t3", "/i/b");
	begin(j, "{\"verb\":\"stream\",\"disks\":[{\"disk\":\"vda\",\"before\":[\"/i/t3\"]}]}");
	step(j, "start", "{\"disk\":\"vda\"}");
	step(j, "finalize", "{\"disk\":\"vda\"}");
	before = history_text(j);
	/* while this handle's operation is open it never compacts */
	assert_int_equal(merge_journal_compact(j, &err), 1);
	merge_journal_close(j); /* as a killed livemerge leaves it */
	j = open_ok(fx->dir, "/vm");
	assert_int_equal(merge_journal_compact(j, &err), 0);
	jt = slurp_file(merge_journal_path(j));
	assert_non_null(strstr(jt, old_unfinished));
	assert_non_null(strstr(jt, "\"op\":5,\"step\":\"intent\""));
	assert_non_null(strstr(jt, "\"op\":5,\"step\":\"start\""));
	assert_non_null(strstr(jt, "\"op\":5,\"step\":\"finalize\""));
	assert_null(strstr(jt, "\"op\":3,"));
	assert_null(strstr(jt, "\"op\":1,"));
	assert_int_equal(count_lines(jt), 5);
	free(jt);
	assert_last(j, "intent,start,finalize", 0);
	assert_int_equal(merge_journal_unfinished_has(j, "finalize"), 1);
	jt = history_text(j);
	assert_string_equal(jt, before);
	free(jt);
	free(before);
	merge_journal_close(j);

	/* past the bound, each end compacts: the journal stays one operation */
	merge_journal_set_compact_bytes(0);
	j = open_ok(fx->dir, "/vm2");
	op_with_state(j, "snapshot", "/i/a", "/i/b");
	op_with_state(j, "commit", "/i/b", "/i/c");
	op_with_state(j, "snapshot", "/i/d", "/i/b");
	jt = slurp_file(merge_journal_path(j));
	assert_int_equal(count_lines(jt), 5);
	free(jt);
	jt = history_text(j);
	assert_non_null(strstr(jt, "\"op\":1"));
	assert_non_null(strstr(jt, "\"op\":2"));
	assert_non_null(strstr(jt, "\"op\":3"));
	free(jt);
	merge_journal_close(j);
	merge_journal_set_compact_bytes((size_t)64 << 10);
}

/* Torn lines, in the journal and in the history file, lose no state. */
static void test_compact_torn_lines(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	struct lm_error err = { 0 };
	static const char torn[] = "{\"op\":9,\"step\":\"ste";
	char *before, *after, hp[1024];

	merge_journal_set_compact_bytes((size_t)1 << 30);
	op_with_state(j, "snapshot", "/i/t1", "/i/b");
	op_with_state(j, "commit", "/i/t2", "/i/b");
	op_with_state(j, "snapshot", "/i/t3", "/i/b");
	append_raw(merge_journal_path(j), torn, sizeof(torn) - 1);
	merge_journal_close(j);
	j = open_ok(fx->dir, "/vm"); /* ends the torn line */
	before = history_text(j);
	assert_non_null(strstr(before, "\"op\":3"));
	assert_int_equal(merge_journal_compact(j, &err), 0);
	after = history_text(j);
	assert_string_equal(after, before);
	free(after);
	/* a crash tore the history's last line: its state is still in the journal */
	history_path(j, hp, sizeof(hp));
	append_raw(hp, torn, sizeof(torn) - 1);
	op_with_state(j, "stream", "/i/t4", "/i/b");
	op_with_state(j, "snapshot", "/i/t5", "/i/b");
	assert_int_equal(merge_journal_compact(j, &err), 0);
	after = history_text(j);
	assert_non_null(strstr(after, "\"op\":4"));
	assert_non_null(strstr(after, "\"op\":5"));
	assert_int_equal(strncmp(after, before, strlen(before) - 1), 0);
	free(before);
	free(after);
	merge_journal_close(j);
	merge_journal_set_compact_bytes((size_t)64 << 10);
}

/* A crash at each point of a compaction: the journal reads as before,
 * no state is lost or shown twice, and the next compaction finishes. */
static void test_compact_crash(void **state)
{
	static const char *const points[] = { "compact-history", "compact-write",
					      "compact-rename" };
	struct test_dir *fx = *state;
	size_t p;

	for (p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
		struct merge_journal *j;
		struct lm_error err = { 0 };
		char target[64], *before, *after, *jt_before, *jt;
		int status, i;
		pid_t pid;

		snprintf(target, sizeof(target), "/vm%zu", p);
		merge_journal_set_compact_bytes((size_t)1 << 30);
		j = open_ok(fx->dir, target);
		for (i = 0; i < 6; i++)
			op_with_state(j, i % 2 ? "commit" : "snapshot", i % 2 ? "/i/b" : "/i/t",
				      "/i/b");
		before = history_text(j);
		jt_before = slurp_file(merge_journal_path(j));
		merge_journal_close(j);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			j = open_ok(fx->dir, target);
			merge_journal_set_crash_point(points[p]);
			merge_journal_compact(j, &err);
			_exit(0); /* the crash point was not reached */
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("%s: the compaction was not killed there", points[p]);
		j = open_ok(fx->dir, target);
		after = history_text(j);
		assert_string_equal(after, before);
		free(after);
		jt = slurp_file(merge_journal_path(j));
		if (p < 2) /* not renamed yet: the journal as it was */
			assert_string_equal(jt, jt_before);
		else
			assert_int_equal(count_lines(jt), 5);
		free(jt);
		assert_last(j, "intent,start,complete,finalize,end", 1);
		assert_int_equal(merge_journal_compact(j, &err), p < 2 ? 0 : 1);
		after = history_text(j);
		assert_string_equal(after, before);
		free(after);
		free(before);
		free(jt_before);
		merge_journal_close(j);
	}
	merge_journal_set_compact_bytes((size_t)64 << 10);
}

/* Another handle on the journal (it may be appending): no compaction. */
static void test_compact_waits_for_other_handle(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *a = open_ok(fx->dir, "/vm"), *b;
	struct lm_error err = { 0 };

	op_with_state(a, "snapshot", "/i/t", "/i/b");
	op_with_state(a, "commit", "/i/b", "/i/b");
	b = open_ok(fx->dir, "/vm");
	assert_int_equal(merge_journal_compact(a, &err), 1);
	merge_journal_close(b);
	assert_int_equal(merge_journal_compact(a, &err), 0);
	merge_journal_close(a);
}

/* The last operation is found from the file's end, however long the file
 * and however large the operation. */
static void test_last_from_the_end(void **state)
{
	struct test_dir *fx = *state;
	struct merge_journal *j = open_ok(fx->dir, "/vm");
	struct lm_error err = { 0 };
	json_object *entries;
	char *big = malloc(100000);
	int i, finished;

	assert_non_null(big);
	merge_journal_set_compact_bytes((size_t)1 << 30);
	for (i = 0; i < 300; i++)
		op_with_state(j, "snapshot", "/i/t", "/i/b");
	strcpy(big, "{\"verb\":\"commit\",\"pad\":\"");
	memset(big + strlen(big), 'x', 90000);
	strcpy(big + strlen("{\"verb\":\"commit\",\"pad\":\"") + 90000, "\"}");
	begin(j, big);
	for (i = 0; i < 500; i++)
		step(j, "poll", "{\"disk\":\"vda\"}");
	merge_journal_close(j);
	j = open_ok(fx->dir, "/vm");
	assert_int_equal(merge_journal_last(j, &entries, &finished, &err), 0);
	assert_int_equal(finished, 0);
	assert_int_equal(json_object_array_length(entries), 501);
	assert_int_equal(entry_int(entries, 0, "op"), 301);
	assert_string_equal(entry_str(entries, 0, "step"), "intent");
	json_object_put(entries);
	free(big);
	merge_journal_close(j);
	merge_journal_set_compact_bytes((size_t)64 << 10);
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
		cmocka_unit_test_setup_teardown(test_states_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_keeps_every_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_keeps_unfinished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_torn_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_waits_for_other_handle, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_last_from_the_end, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

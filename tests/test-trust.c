/*
 * test-trust: --delete and recover do not delete a file on QEMU's word.
 *
 * The real livemerge binary (build/livemerge, next to this test's
 * build/tests/) runs against a scripted fake monitor (fakeqmp on an
 * accepted unix socket) that lies about vda's chain: it reports
 * top.qcow2 <- MIDDLE <- base.qcow2, where top and base are real qcow2
 * files made here and MIDDLE is something that must not be deleted. The
 * fake runs `commit vda --top MIDDLE --delete` by the book (block-commit,
 * pending, the HMP flush of the base, finalize -- at which point top's
 * header is rewritten to name base, as QEMU would --, concluded,
 * query-jobs, dismiss, the chains read again without MIDDLE, the flush of
 * top) and livemerge must check MIDDLE on the host before removing it.
 *
 * MIDDLE is: a plain text file; a symlink to a qcow2 outside the images'
 * directory; a real qcow2 whose header names another backing; and, for
 * `recover` (after a commit killed past its finalize with
 * LIVEMERGE_CRASH_AT), a qcow2 that the journal lists for removal but not
 * in the chain it recorded before the operation. Each time: MIDDLE (and a
 * symlink's target) is still there byte for byte, exit 0, the human output
 * says "vda: left MIDDLE: WHY" and --json's result lists it under "left"
 * with the reason. Also left: a genuine MIDDLE when top's own header still
 * names it after QEMU reported the pivot. A genuine layer (a qcow2 naming
 * base) is deleted, so the fake's script is one that lets a deletion happen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "binrun.h"
#include "fakeqmp.h"
#include "testutil.h"

#define JOB "livemerge-commit-vda"

struct fixture {
	struct binrun run; /* the temp dir, the monitor's socket, the outputs */
	char top[160], mid[160], base[160], outside[160], other[160];
};

/* --- files ------------------------------------------------------------------- */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0)
		fail_msg("'%s' failed (status %d)", cmd, rc);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* top names MIDDLE (by path; nothing is opened), base has no backing. */
static void make_top_and_base(struct fixture *fx)
{
	unlink(fx->top);
	sh("qemu-img create -q -f qcow2 %s 64M", fx->base);
	sh("qemu-img create -q -f qcow2 -u -b %s -F qcow2 %s 64M", fx->mid, fx->top);
}

/* What QEMU does to top's header when the commit of MIDDLE is finalized. */
static void rebase_top(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	(void)fq;
	sh("qemu-img rebase -q -u -b %s -F qcow2 %s", fx->base, fx->top);
}

/* A file's bytes, to see it untouched afterwards. */
struct snap {
	char *bytes;
	size_t len;
	char link[PATH_MAX]; /* a symlink's target, "" for a file */
};

static void snap_take(struct snap *s, const char *path)
{
	struct stat st;
	ssize_t n;

	memset(s, 0, sizeof(*s));
	assert_int_equal(lstat(path, &st), 0);
	if (S_ISLNK(st.st_mode)) {
		n = readlink(path, s->link, sizeof(s->link) - 1);
		assert_true(n > 0);
		s->link[n] = '\0';
	}
	s->bytes = binrun_slurp(path, &s->len); /* through a symlink: its target's bytes */
}

static void snap_same(struct snap *s, const char *path)
{
	struct stat st;
	char link[PATH_MAX];
	ssize_t n;
	size_t len;
	char *now;

	if (lstat(path, &st) != 0)
		fail_msg("%s is gone", path);
	if (s->link[0] != '\0') {
		if (!S_ISLNK(st.st_mode))
			fail_msg("%s is no longer a symlink", path);
		n = readlink(path, link, sizeof(link) - 1);
		assert_true(n > 0);
		link[n] = '\0';
		assert_string_equal(link, s->link);
	}
	now = binrun_slurp(path, &len);
	if (len != s->len || memcmp(now, s->bytes, len) != 0)
		fail_msg("%s changed (%zu bytes, was %zu)", path, len, s->len);
	free(now);
	free(s->bytes);
	s->bytes = NULL;
}

/* --- fixture ------------------------------------------------------------------- */

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	const char *dir;
	char d[200];

	if (fx == NULL)
		return -1;
	if (binrun_init(&fx->run) < 0) {
		free(fx);
		return -1;
	}
	dir = fx->run.dir;
	snprintf(d, sizeof(d), "%s/img", dir);
	if (mkdir(d, 0700) < 0)
		goto fail;
	snprintf(d, sizeof(d), "%s/elsewhere", dir);
	if (mkdir(d, 0700) < 0)
		goto fail;
	snprintf(fx->top, sizeof(fx->top), "%s/img/top.qcow2", dir);
	snprintf(fx->mid, sizeof(fx->mid), "%s/img/mid.qcow2", dir);
	snprintf(fx->base, sizeof(fx->base), "%s/img/base.qcow2", dir);
	snprintf(fx->other, sizeof(fx->other), "%s/img/other.qcow2", dir);
	snprintf(fx->outside, sizeof(fx->outside), "%s/elsewhere/target.qcow2", dir);
	*state = fx;
	return 0;
fail:
	binrun_fini(&fx->run);
	free(fx);
	return -1;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	binrun_fini(&fx->run);
	free(fx);
	return 0;
}

/* --- running the binary ------------------------------------------------- */

/*
 * Run [crash_at: LIVEMERGE_CRASH_AT=crash_at] livemerge -c unix:SOCK
 * --journal DIR/j ARGS (NULL-terminated) against script(fq, fx), the fake's
 * part (binrun.h). Every step of the script must be used. Returns the wait
 * status; the output is in fx->run.stdout_text / stderr_text.
 */
#define run_lm_env(fx, crash_at, script, ...)                                                      \
	binrun_run(&(fx)->run, (crash_at), (script), (fx), __VA_ARGS__)

/* The exit code of a run that must have exited by itself. */
#define exit_code(fx, status) binrun_exit_code(&(fx)->run, (status))

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("'%s' not found in:\n%s", needle, hay);
}

/* The {"type":"result"} line of stdout (owned); fails unless there is exactly one. */
static json_object *result_line(struct fixture *fx)
{
	json_object *res = NULL;
	char *save = NULL, *line, *copy = strdup(fx->run.stdout_text);

	assert_non_null(copy);
	for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_object *o = json_tokener_parse(line), *t;

		if (o == NULL)
			fail_msg("stdout line is not JSON: %s", line);
		if (json_object_object_get_ex(o, "type", &t) &&
		    strcmp(json_object_get_string(t), "result") == 0) {
			if (res != NULL)
				fail_msg("two result lines in:\n%s", fx->run.stdout_text);
			res = o;
		} else {
			json_object_put(o);
		}
	}
	free(copy);
	if (res == NULL)
		fail_msg("no result line in:\n%s", fx->run.stdout_text);
	return res;
}

/* --json's result: ok, and "left" is exactly [{"disk":"vda","file":file,"why":~why}]. */
static void assert_left_json(struct fixture *fx, const char *file, const char *why)
{
	json_object *res = result_line(fx), *v, *l;

	assert_true(json_object_object_get_ex(res, "ok", &v));
	assert_true(json_object_get_boolean(v));
	if (!json_object_object_get_ex(res, "left", &v))
		fail_msg("no \"left\" in the result: %s", json_object_to_json_string(res));
	assert_int_equal(json_object_array_length(v), 1);
	l = json_object_array_get_idx(v, 0);
	assert_string_equal(json_object_get_string(json_object_object_get(l, "disk")), "vda");
	assert_string_equal(json_object_get_string(json_object_object_get(l, "file")), file);
	assert_contains(json_object_get_string(json_object_object_get(l, "why")), why);
	json_object_put(res);
}

/* --- the fake's scripts ----------------------------------------------------- */

static json_object *named_node(const char *node, const char *file, const char *backing, int ro)
{
	json_object *o = json_object_new_object(), *img = json_object_new_object();

	json_object_object_add(img, "filename", json_object_new_string(file));
	json_object_object_add(img, "format", json_object_new_string("qcow2"));
	json_object_object_add(img, "virtual-size", json_object_new_int64(67108864));
	if (backing != NULL)
		json_object_object_add(img, "backing-filename", json_object_new_string(backing));
	json_object_object_add(o, "node-name", json_object_new_string(node));
	json_object_object_add(o, "drv", json_object_new_string("qcow2"));
	json_object_object_add(o, "file", json_object_new_string(file));
	if (backing != NULL)
		json_object_object_add(o, "backing_file", json_object_new_string(backing));
	json_object_object_add(o, "ro", json_object_new_boolean(ro));
	json_object_object_add(o, "image", img);
	return o;
}

static void reply_to(struct fq *fq, int h, json_object *v)
{
	fq_reply_return_to(fq, h, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	json_object_put(v);
}

/* The four chain queries (merge/query.c): vda is top <- mid <- base, or
 * after the commit (mid NULL) top <- base. */
static void s_chain(struct fq *fq, struct fixture *fx, const char *mid)
{
	json_object *block = json_object_new_array(), *b = json_object_new_object();
	json_object *ins = json_object_new_object(), *nodes = json_object_new_array();
	int h[4];

	json_object_object_add(ins, "node-name", json_object_new_string("top-node"));
	json_object_object_add(b, "device", json_object_new_string(""));
	json_object_object_add(b, "qdev",
			       json_object_new_string("/machine/peripheral/vda/virtio-backend"));
	json_object_object_add(b, "inserted", ins);
	json_object_array_add(block, b);
	json_object_array_add(nodes, named_node("top-node", fx->top, mid ? mid : fx->base, 0));
	if (mid != NULL)
		json_object_array_add(nodes, named_node("mid-node", mid, fx->base, 1));
	json_object_array_add(nodes, named_node("base-node", fx->base, NULL, 1));
	h[0] = fq_expect(fq, "query-block", NULL);
	h[1] = fq_expect(fq, "query-named-block-nodes", NULL);
	h[2] = fq_expect(fq, "x-debug-query-block-graph", NULL);
	h[3] = fq_expect(fq, "query-block-exports", NULL);
	reply_to(fq, h[0], block);
	reply_to(fq, h[1], nodes);
	fq_reply_error_to(fq, h[2], "CommandNotFound",
			  "The command x-debug-query-block-graph has not been found");
	fq_reply_return_to(fq, h[3], "[]");
}

static void s_hmp_flush(struct fq *fq, const char *node)
{
	char args[256];

	snprintf(args, sizeof(args), "{\"command-line\": \"qemu-io %s flush\"}", node);
	fq_expect(fq, "human-monitor-command", args);
	fq_reply_return(fq, "\"\"");
}

static const char concluded[] =
	"[{\"current-progress\": 1048576, \"status\": \"concluded\", \"total-progress\": 1048576, "
	"\"type\": \"commit\", \"id\": \"" JOB "\"}]";

/* From the start to the finalize's return (top's header rewritten then,
 * unless !rebase: QEMU says the pivot happened, the disk does not). */
static void s_commit_to_finalized(struct fq *fq, struct fixture *fx, int rebase)
{
	fq_handshake(fq);
	fq_no_identity(fq);
	fq_command(fq, "query-jobs", NULL, "[]");
	s_chain(fq, fx, fx->mid);
	fq_expect(fq, "block-commit",
		  "{\"job-id\": \"" JOB "\", \"top-node\": \"mid-node\", \"base-node\": \"base-node\", "
		  "\"auto-finalize\": false, \"auto-dismiss\": false}");
	fq_job_status(fq, JOB, "created");
	fq_job_status(fq, JOB, "running");
	fq_reply_return(fq, "{}");
	fq_job_status(fq, JOB, "waiting");
	fq_job_status(fq, JOB, "pending");
	fq_block_job_pending(fq, JOB, "commit");
	s_hmp_flush(fq, "base-node"); /* what the job wrote into, before any finalize */
	fq_expect(fq, "job-finalize", "{\"id\": \"" JOB "\"}");
	if (rebase)
		fq_call(fq, rebase_top, fx);
	fq_block_job_completed(fq, JOB, "commit", NULL);
	fq_job_status(fq, JOB, "concluded");
	fq_reply_return(fq, "{}");
}

/* The tail after the finalize: results, dismiss, the chains without MIDDLE,
 * the flush of top. */
static void s_commit_tail(struct fq *fq, struct fixture *fx)
{
	fq_command(fq, "query-jobs", NULL, concluded);
	fq_expect(fq, "job-dismiss", "{\"id\": \"" JOB "\"}");
	fq_job_status(fq, JOB, "null");
	fq_reply_return(fq, "{}");
	s_chain(fq, fx, NULL);
	s_hmp_flush(fq, "top-node"); /* the rewritten header, before anything goes */
}

/* commit vda --top MIDDLE --delete, by the book. */
static void script_commit(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	s_commit_to_finalized(fq, fx, 1);
	s_commit_tail(fq, fx);
}

/* The same, but top's header still names MIDDLE after the finalize. */
static void script_commit_no_pivot_on_disk(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	s_commit_to_finalized(fq, fx, 0);
	s_commit_tail(fq, fx);
}

/* The same, killed by LIVEMERGE_CRASH_AT=dismiss before job-dismiss is sent. */
static void script_commit_killed(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	s_commit_to_finalized(fq, fx, 1);
	fq_command(fq, "query-jobs", NULL, concluded);
	fq_expect_eof(fq);
}

/* recover: the job is concluded, the chain changed as asked. */
static void script_recover(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	fq_handshake(fq);
	fq_no_identity(fq);
	fq_command(fq, "query-jobs", NULL, concluded); /* any job pending? */
	fq_command(fq, "query-jobs", NULL, concluded); /* finalize or cancel what runs */
	fq_command(fq, "query-jobs", NULL, concluded); /* until every job of ours ended */
	fq_command(fq, "query-jobs", NULL, concluded); /* dismiss ours */
	fq_expect(fq, "job-dismiss", "{\"id\": \"" JOB "\"}");
	fq_job_status(fq, JOB, "null");
	fq_reply_return(fq, "{}");
	fq_command(fq, "query-jobs", NULL, "[]");
	s_chain(fq, fx, NULL); /* changed as asked */
	s_chain(fq, fx, NULL); /* the writable layers, to flush */
	s_hmp_flush(fq, "top-node");
}

/* --- the cases ---------------------------------------------------------------- */

/*
 * Run the lying commit twice (human, then --json), each time on fresh
 * images, with MIDDLE made by make_mid; MIDDLE (and watch, when given) must
 * stay byte for byte, the run exit 0, and both outputs name the refusal.
 */
static void commit_refused(struct fixture *fx, void (*make_mid)(struct fixture *fx),
			   const char *watch, const char *why)
{
	struct snap s_mid, s_watch;
	char line[512];
	int json;

	for (json = 0; json < 2; json++) {
		unlink(fx->mid);
		make_mid(fx);
		make_top_and_base(fx);
		snap_take(&s_mid, fx->mid);
		if (watch != NULL)
			snap_take(&s_watch, watch);
		if (json)
			assert_int_equal(exit_code(fx, run_lm_env(fx, NULL, script_commit, "--json",
								  "commit", "vda", "--top", fx->mid,
								  "--delete", NULL)), 0);
		else
			assert_int_equal(exit_code(fx, run_lm_env(fx, NULL, script_commit, "commit",
								  "vda", "--top", fx->mid, "--delete",
								  NULL)), 0);
		snap_same(&s_mid, fx->mid);
		if (watch != NULL)
			snap_same(&s_watch, watch);
		if (json) {
			assert_left_json(fx, fx->mid, why);
		} else {
			snprintf(line, sizeof(line), "vda: left %s: %s", fx->mid, why);
			assert_contains(fx->run.stderr_text, line);
		}
	}
}

static void mid_text(struct fixture *fx)
{
	write_text(fx->mid, "root:x:0:0:root:/root:/bin/bash\n");
}

static void mid_symlink(struct fixture *fx)
{
	/* a genuine layer in every other respect: only the link stops it */
	unlink(fx->outside);
	sh("qemu-img create -q -f qcow2 -u -b %s -F qcow2 %s 64M", fx->base, fx->outside);
	assert_int_equal(symlink(fx->outside, fx->mid), 0);
}

static void mid_other_backing(struct fixture *fx)
{
	sh("qemu-img create -q -f qcow2 -u -b %s -F qcow2 %s 64M", fx->other, fx->mid);
}

static void mid_genuine(struct fixture *fx)
{
	sh("qemu-img create -q -f qcow2 -u -b %s -F qcow2 %s 64M", fx->base, fx->mid);
}

static void test_commit_text_file_left(void **state)
{
	commit_refused(*state, mid_text, NULL, "it holds no qcow2 header");
}

static void test_commit_symlink_left(void **state)
{
	struct fixture *fx = *state;

	commit_refused(fx, mid_symlink, fx->outside, "it is a symbolic link");
}

static void test_commit_other_backing_left(void **state)
{
	struct fixture *fx = *state;
	char why[512];

	snprintf(why, sizeof(why), "its header names backing file %s, expected %s", fx->other,
		 fx->base);
	commit_refused(fx, mid_other_backing, NULL, why);
}

/* The control: a layer that passes every check is deleted, with no "left". */
static void test_commit_genuine_deleted(void **state)
{
	struct fixture *fx = *state;
	char line[512];
	json_object *res, *v;

	mid_genuine(fx);
	make_top_and_base(fx);
	assert_int_equal(exit_code(fx, run_lm_env(fx, NULL, script_commit, "--json", "commit", "vda",
						  "--top", fx->mid, "--delete", NULL)), 0);
	assert_int_equal(access(fx->mid, F_OK), -1);
	snprintf(line, sizeof(line), "vda: deleted %s", fx->mid);
	assert_contains(fx->run.stdout_text, line);
	res = result_line(fx);
	assert_false(json_object_object_get_ex(res, "left", &v));
	json_object_put(res);
}

/* QEMU says top now sits on base, but top's own header still names MIDDLE
 * (a genuine layer): the data is not known to be where QEMU says, so MIDDLE
 * stays. */
static void test_commit_result_not_on_disk_left(void **state)
{
	struct fixture *fx = *state;
	char why[1024];
	struct snap s;

	mid_genuine(fx);
	make_top_and_base(fx);
	snap_take(&s, fx->mid);
	assert_int_equal(exit_code(fx, run_lm_env(fx, NULL, script_commit_no_pivot_on_disk, "--json",
						  "commit", "vda", "--top", fx->mid, "--delete",
						  NULL)), 0);
	snap_same(&s, fx->mid);
	snprintf(why, sizeof(why), "the image now holding the data, %s, is not as expected on "
		 "disk: its header names backing file %s, expected %s", fx->top, fx->mid, fx->base);
	assert_left_json(fx, fx->mid, why);
}

/* The journal's file (the only one in DIR/j; its lock is beside it). */
static void journal_file(struct fixture *fx, char *path, size_t len)
{
	DIR *d = opendir(fx->run.journal);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		size_t k = strlen(e->d_name);

		if (e->d_name[0] == '.' || k < 8 || strcmp(e->d_name + k - 8, ".journal") != 0)
			continue;
		snprintf(path, len, "%s/%s", fx->run.journal, e->d_name);
		n++;
	}
	closedir(d);
	assert_int_equal(n, 1);
}

/* In the journal's intent, the file to remove becomes file (the chain
 * recorded before stays what it was). */
static void journal_remove_is(struct fixture *fx, const char *file)
{
	char path[PATH_MAX], *text, *nl;
	size_t len;
	json_object *intent, *disks, *rm;
	FILE *f;

	journal_file(fx, path, sizeof(path));
	text = binrun_slurp(path, &len);
	nl = strchr(text, '\n');
	assert_non_null(nl);
	*nl = '\0';
	intent = json_tokener_parse(text);
	assert_non_null(intent);
	assert_string_equal(json_object_get_string(json_object_object_get(intent, "step")), "intent");
	disks = json_object_object_get(intent, "disks");
	assert_int_equal(json_object_array_length(disks), 1);
	rm = json_object_object_get(json_object_array_get_idx(disks, 0), "remove");
	assert_int_equal(json_object_array_length(rm), 1);
	assert_string_equal(json_object_get_string(json_object_object_get(
				    json_object_array_get_idx(rm, 0), "filename")),
			    fx->mid);
	json_object_object_add(json_object_array_get_idx(rm, 0), "filename",
			       json_object_new_string(file));
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%s\n%s", json_object_to_json_string_ext(intent, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE), nl + 1);
	assert_int_equal(fclose(f), 0);
	json_object_put(intent);
	free(text);
}

/*
 * recover: a commit of a genuine MIDDLE killed after its finalize
 * (LIVEMERGE_CRASH_AT=dismiss) leaves a journal; in it, the file to remove
 * is made another one: a qcow2 with no backing (say, another VM's base),
 * which the journal's chain before the operation does not hold. recover
 * finishes the operation and leaves that file.
 */
static void test_recover_not_in_recorded_chain(void **state)
{
	struct fixture *fx = *state;
	const char *why = "it is not in the chain the journal recorded before the operation";
	char line[512];
	struct snap s;
	int json, st;

	sh("qemu-img create -q -f qcow2 %s 64M", fx->outside);
	for (json = 0; json < 2; json++) {
		test_rm_rf(fx->run.journal);
		unlink(fx->mid);
		mid_genuine(fx);
		make_top_and_base(fx);
		st = run_lm_env(fx, "dismiss", script_commit_killed, "commit", "vda", "--top",
				fx->mid, "--delete", NULL);
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
			fail_msg("the commit was not killed at its dismiss (status %#x):\n%s", st,
				 fx->run.stderr_text);
		journal_remove_is(fx, fx->outside);
		snap_take(&s, fx->outside);
		if (json)
			st = run_lm_env(fx, NULL, script_recover, "--json", "recover", NULL);
		else
			st = run_lm_env(fx, NULL, script_recover, "recover", NULL);
		assert_int_equal(exit_code(fx, st), 0);
		snap_same(&s, fx->outside);
		if (json) {
			assert_contains(fx->run.stdout_text, "recovered: the operation is finished");
			assert_left_json(fx, fx->outside, why);
		} else {
			assert_contains(fx->run.stderr_text, "recovered: the operation is finished");
			snprintf(line, sizeof(line), "vda: left %s: %s", fx->outside, why);
			assert_contains(fx->run.stderr_text, line);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_genuine_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_text_file_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_symlink_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_other_backing_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_result_not_on_disk_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_not_in_recorded_chain, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

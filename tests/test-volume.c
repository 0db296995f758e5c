/*
 * test-volume: volume steps (merge/volume.c) run through a real program on
 * this machine as the VM's host: done, refused with its stderr's last line
 * (escaped), stopped at the time limit, journaled before the program runs
 * (the program itself looks into the journal), through a library function
 * instead of a program; and the size arithmetic against qemu-img measure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "../host/host.h"
#include "../merge/files.h"
#include "../merge/journal.h"
#include "../merge/recover.h"
#include "../qmp/conn.h"
#include "fakeqmp.h"
#include "../merge/volume.h"
#include "../transport/transport.h"

/*
 * The volume command: records "VERB PATH [BYTES] journaled=yes|no" in
 * $DIR/log, where journaled says whether the journal already held an entry
 * naming PATH; a PATH ending in "refuse" fails with two stderr lines, the
 * last with an escape sequence; one ending in "slow" sleeps.
 */
static const char script[] =
	"#!/bin/sh\n"
	"dir=$(dirname \"$0\")\n"
	"j=no\n"
	"grep -q \"\\\"path\\\":\\\"$2\\\"\" \"$LM_TEST_JOURNAL\" 2>/dev/null && j=yes\n"
	"echo \"$* journaled=$j\" >>\"$dir/log\"\n"
	"case $2 in\n"
	"*refuse) echo 'first line' >&2; printf 'no room \\033[2J in vg0\\n\\n' >&2; exit 3 ;;\n"
	"*slow) sleep 10 ;;\n"
	"esac\n"
	"exit 0\n";

struct fix {
	struct ev_loop *loop;
	struct host *h;
	struct merge_journal *j;
	struct merge_volumes v;
	char dir[64];
	char cmd[96];
};

struct seen {
	int calls;
	int started;
	int failed;
	struct lm_error err;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct tr_opts o = { 0 };
	struct lm_error err;
	FILE *fp;

	f->loop = ev_loop_new(0);
	o.loop = f->loop;
	f->h = host_new("/run/qmp.sock", &o, &err);
	assert_non_null(f->h);
	snprintf(f->dir, sizeof(f->dir), "/tmp/lm-volume-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->cmd, sizeof(f->cmd), "%s/volcmd", f->dir);
	fp = fopen(f->cmd, "w");
	assert_non_null(fp);
	fputs(script, fp);
	fclose(fp);
	assert_int_equal(chmod(f->cmd, 0755), 0);
	f->j = merge_journal_open(f->dir, "unix:/run/vm.sock", &err);
	assert_non_null(f->j);
	setenv("LM_TEST_JOURNAL", merge_journal_path(f->j), 1);
	f->v.host = f->h;
	f->v.cmd = f->cmd;
	f->v.journal = f->j;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	char cmd[128];

	merge_journal_close(f->j);
	host_free(f->h);
	ev_loop_destroy(f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void done_cb(void *arg, const struct lm_error *err)
{
	struct seen *s = arg;

	assert_true(s->started); /* never from inside merge_volume_run */
	s->calls++;
	if (err != NULL) {
		s->failed = 1;
		s->err = *err;
	}
}

static void run(struct fix *f, enum merge_volume_verb verb, const char *name, int64_t bytes,
		struct seen *s)
{
	char path[128];
	struct lm_error err;
	double end = now() + 20;

	memset(s, 0, sizeof(*s));
	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	assert_non_null(merge_volume_run(&f->v, verb, path, bytes, done_cb, s, &err));
	s->started = 1;
	while (s->calls == 0 && now() < end)
		ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(s->calls, 1);
}

/* The file's whole text (static buffer). */
static const char *slurp(const char *path)
{
	static char buf[8192];
	FILE *fp = fopen(path, "r");
	size_t n = 0;

	if (fp != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
	return buf;
}

static const char *log_of(struct fix *f)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/log", f->dir);
	return slurp(p);
}

static void test_done_and_journaled_first(void **state)
{
	struct fix *f = *state;
	struct seen s;
	char want[512];
	const char *jt;

	run(f, MERGE_VOLUME_CREATE, "vol1", 1 << 20, &s);
	assert_false(s.failed);
	run(f, MERGE_VOLUME_EXTEND, "vol1", 3 << 20, &s);
	assert_false(s.failed);
	run(f, MERGE_VOLUME_REMOVE, "vol1", 0, &s);
	assert_false(s.failed);
	snprintf(want, sizeof(want),
		 "create %s/vol1 1048576 journaled=yes\n"
		 "extend %s/vol1 3145728 journaled=yes\n"
		 "remove %s/vol1 journaled=yes\n",
		 f->dir, f->dir, f->dir);
	assert_string_equal(log_of(f), want);
	/* no operation open: each step is an operation of its own, ended */
	jt = slurp(merge_journal_path(f->j));
	assert_non_null(strstr(jt, "\"op\":1,\"step\":\"intent\",\"path\":"));
	assert_non_null(strstr(jt, "\"bytes\":3145728,\"verb\":\"extend\""));
	assert_non_null(strstr(jt, "\"op\":3,\"step\":\"end\",\"outcome\":0"));
	assert_false(merge_journal_in_op(f->j));
}

/* The control: with no journal the program finds no entry. */
static void test_no_journal(void **state)
{
	struct fix *f = *state;
	struct seen s;
	char want[256];

	f->v.journal = NULL;
	run(f, MERGE_VOLUME_EXTEND, "vol2", 1 << 20, &s);
	assert_false(s.failed);
	snprintf(want, sizeof(want), "extend %s/vol2 1048576 journaled=no\n", f->dir);
	assert_string_equal(log_of(f), want);
}

static void test_inside_an_operation(void **state)
{
	struct fix *f = *state;
	struct seen s;
	struct lm_error err;
	json_object *intent = json_object_new_object(), *entries;
	int finished;
	const char *jt;

	json_object_object_add(intent, "verb", json_object_new_string("commit"));
	assert_int_equal(merge_journal_begin(f->j, intent, &err), 0);
	json_object_put(intent);
	run(f, MERGE_VOLUME_EXTEND, "base", 5 << 20, &s);
	assert_false(s.failed);
	assert_non_null(strstr(log_of(f), "base 5242880 journaled=yes"));
	/* a step of the commit, which stays open */
	jt = slurp(merge_journal_path(f->j));
	assert_non_null(strstr(jt, "\"op\":1,\"step\":\"volume-extend\",\"path\":"));
	assert_null(strstr(jt, "\"verb\":\"extend\""));
	assert_int_equal(merge_journal_last(f->j, &entries, &finished, &err), 0);
	assert_false(finished);
	assert_int_equal(json_object_array_length(entries), 2);
	json_object_put(entries);
	assert_true(merge_journal_in_op(f->j));
}

static void test_refused(void **state)
{
	struct fix *f = *state;
	struct seen s;
	char want[512];

	run(f, MERGE_VOLUME_EXTEND, "vg-refuse", 1 << 30, &s);
	assert_true(s.failed);
	assert_int_equal(s.err.code, LM_ERR_FAILED);
	snprintf(want, sizeof(want),
		 "volume command '%s extend %s/vg-refuse 1073741824' refused (exit 3): "
		 "no room \\x1b[2J in vg0",
		 f->cmd, f->dir);
	assert_string_equal(s.err.msg, want);
	assert_null(strchr(s.err.msg, '\033'));
	/* ended as refused */
	assert_non_null(strstr(slurp(merge_journal_path(f->j)), "\"step\":\"end\",\"outcome\":1"));
}

static void test_timeout(void **state)
{
	struct fix *f = *state;
	struct seen s;
	double t0 = now();

	f->v.timeout = 0.5;
	run(f, MERGE_VOLUME_CREATE, "slow", 1 << 20, &s);
	assert_true(now() - t0 < 5);
	assert_true(s.failed);
	assert_int_equal(s.err.code, LM_ERR_TIMEOUT);
	assert_non_null(strstr(s.err.msg, "did not end within 0.5 s"));
}

static void test_bad_arguments(void **state)
{
	struct fix *f = *state;
	struct lm_error err;
	struct merge_volumes none = { 0 };

	assert_null(merge_volume_run(&f->v, MERGE_VOLUME_EXTEND, "/dev/x", 0, done_cb, NULL, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_null(merge_volume_run(&none, MERGE_VOLUME_REMOVE, "/dev/x", 0, done_cb, NULL, &err));
	assert_string_equal(err.msg, "volume remove: no volume command");
	/* nothing journaled for what never started */
	assert_string_equal(slurp(merge_journal_path(f->j)), "");
}

/* Killed while an extension ran: recover closes the step without a word to
 * QEMU (the volume holds what it held, grown or not). */
static void test_recover_closes_an_extension(void **state)
{
	struct fix *f = *state;
	struct seen s = { 0 };
	struct lm_error err;
	struct merge_volume_op *op;
	enum merge_recovered what;
	struct fq *fq = fq_new(f->loop);
	struct qmp_conn *c = qmp_conn_new(f->loop, tr_new_fd(fq_fd(fq), "fake", &err), NULL);
	json_object *entries;
	int finished;

	op = merge_volume_run(&f->v, MERGE_VOLUME_EXTEND, "/dev/vg/lv", 1 << 30, done_cb, &s, &err);
	assert_non_null(op);
	merge_volume_cancel(op); /* as if livemerge died: no end */
	assert_int_equal(merge_journal_last(f->j, &entries, &finished, &err), 0);
	assert_false(finished);
	json_object_put(entries);
	assert_int_equal(merge_recover(c, f->j, NULL, &what, &err), MERGE_DONE);
	assert_int_equal(what, MERGE_REC_FINISHED);
	assert_int_equal(merge_journal_last(f->j, &entries, &finished, &err), 0);
	assert_true(finished);
	json_object_put(entries);
	assert_int_equal(fq_verify(fq), 0); /* nothing was sent */
	qmp_conn_free(c);
	fq_free(fq);
}

/* A library function as the volume command: a timer stands for the work. */
struct fake_step {
	ev_timer t;
	struct ev_loop *loop;
	merge_volume_cb *done;
	void *done_arg;
	int fail;
};

static int fn_calls, fn_cancels;
static char fn_seen[256];

static void fake_fire(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fake_step *st = (struct fake_step *)t;
	struct lm_error e;

	(void)loop, (void)revents;
	lm_error_set(&e, LM_ERR_FAILED, "thin pool full");
	st->done(st->done_arg, st->fail ? &e : NULL);
	free(st);
}

static void *fake_start(void *arg, enum merge_volume_verb verb, const char *path, int64_t bytes,
			merge_volume_cb *done, void *done_arg, struct lm_error *err)
{
	struct fake_step *st = calloc(1, sizeof(*st));

	(void)err;
	fn_calls++;
	snprintf(fn_seen, sizeof(fn_seen), "%s %s %lld", merge_volume_verb_name(verb), path,
		 (long long)bytes);
	st->loop = arg;
	st->done = done;
	st->done_arg = done_arg;
	st->fail = strstr(path, "full") != NULL;
	ev_timer_init(&st->t, fake_fire, 0.01, 0);
	ev_timer_start(st->loop, &st->t);
	return st;
}

static void fake_cancel(void *arg, void *handle)
{
	struct fake_step *st = handle;

	fn_cancels++;
	ev_timer_stop(arg, &st->t);
	free(st);
}

static void test_function(void **state)
{
	struct fix *f = *state;
	struct merge_volume_fn fn = { fake_start, fake_cancel, f->loop };
	struct seen s;
	struct lm_error err;
	struct merge_volume_op *op;
	char want[256];

	f->v.fn = &fn;
	f->v.cmd = NULL;
	run(f, MERGE_VOLUME_EXTEND, "lv", 7 << 20, &s);
	assert_false(s.failed);
	snprintf(want, sizeof(want), "extend %s/lv 7340032", f->dir);
	assert_string_equal(fn_seen, want);
	run(f, MERGE_VOLUME_EXTEND, "full", 7 << 20, &s);
	assert_true(s.failed);
	snprintf(want, sizeof(want), "volume function extend %s/full 7340032: thin pool full",
		 f->dir);
	assert_string_equal(s.err.msg, want);
	/* cancelled: never called back */
	memset(&s, 0, sizeof(s));
	op = merge_volume_run(&f->v, MERGE_VOLUME_REMOVE, "/dev/vg/x", 0, done_cb, &s, &err);
	assert_non_null(op);
	merge_volume_cancel(op);
	ev_run(f->loop, EVRUN_NOWAIT);
	usleep(30000);
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_int_equal(s.calls, 0);
	assert_int_equal(fn_cancels, 1);
	assert_int_equal(fn_calls, 3);
	assert_string_equal(log_of(f), ""); /* the program never ran */
}

/* qemu-img measure --size N -O qcow2 [-o cluster_size=C]: "fully-allocated"
 * on QEMU 7.2 (recorded; the test below also asks the qemu-img here). */
static const struct {
	int64_t size, cluster, full;
} measured[] = {
	{ 1 << 20, 65536, 1376256 },
	{ 64 << 20, 65536, 67436544 },
	{ (int64_t)1 << 30, 65536, 1074135040 },
	{ (int64_t)10 << 30, 65536, 10739318784 },
	{ (int64_t)100 << 30, 65536, 107390828544 },
	{ (int64_t)1 << 40, 65536, 1099679662080 },
	{ (int64_t)1 << 30, 4096, 1076379648 },
	{ (int64_t)1 << 30, 2 << 20, 1084227584 },
};

static void test_qcow2_max_size(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(measured) / sizeof(measured[0]); i++)
		assert_int_equal(merge_qcow2_max_size(measured[i].size, measured[i].cluster),
				 measured[i].full);
	assert_int_equal(merge_qcow2_max_size(1 << 20, 1000), -1);
	assert_int_equal(merge_qcow2_max_size(-1, 65536), -1);
	assert_int_equal(merge_qcow2_max_size(1 << 20, 4 << 20), -1);
}

/* The same against the qemu-img of this machine, for sizes not recorded. */
static void test_qcow2_max_size_live(void **state)
{
	static const char *const sizes[] = { "3000000", "512M", "33G", "2T" };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char cmd[160], line[256];
		long long full = -1, vsize;
		FILE *p;
		char *q;

		snprintf(cmd, sizeof(cmd),
			 "qemu-img measure --size %s -O qcow2 --output=json | tr -d ' \\n'", sizes[i]);
		p = popen(cmd, "r");
		assert_non_null(p);
		assert_non_null(fgets(line, sizeof(line), p));
		assert_int_equal(pclose(p), 0);
		q = strstr(line, "\"fully-allocated\":");
		assert_non_null(q);
		full = atoll(q + strlen("\"fully-allocated\":"));
		vsize = strtoll(sizes[i], &q, 10);
		vsize <<= *q == 'M' ? 20 : *q == 'G' ? 30 : *q == 'T' ? 40 : 0;
		assert_int_equal(merge_qcow2_max_size(vsize, MERGE_QCOW2_CLUSTER), full);
	}
}

static void test_next_size_and_threshold(void **state)
{
	const int64_t M = 1 << 20, G = (int64_t)1 << 30;

	(void)state;
	assert_int_equal(MERGE_VOLUME_CHUNK, 2560 * M);
	assert_int_equal(MERGE_VOLUME_HEADROOM, 2048 * M);
	assert_int_equal(merge_volume_next_size(G, MERGE_VOLUME_CHUNK, 0), G + 2560 * M);
	assert_int_equal(merge_volume_next_size(G, MERGE_VOLUME_CHUNK, 2 * G), 2 * G);
	assert_int_equal(merge_volume_next_size(3 * G, MERGE_VOLUME_CHUNK, 2 * G), 3 * G);
	assert_int_equal(merge_volume_next_size(INT64_MAX - 1, 10, 0), INT64_MAX);
	assert_int_equal(merge_volume_threshold(64 * M, 24 * M, 0), 40 * M);
	assert_int_equal(merge_volume_threshold(64 * M, 24 * M, 100 * M), 40 * M);
	assert_int_equal(merge_volume_threshold(G, MERGE_VOLUME_HEADROOM, 0), 1);
	assert_int_equal(merge_volume_threshold(100 * M, 24 * M, 100 * M), 0);
}

/* The bytes [off, off+len) of path, malloc'd (NULL if short). */
static unsigned char *read_at(const char *path, uint64_t off, size_t len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b = malloc(len);

	assert_non_null(f);
	assert_non_null(b);
	if (fseeko(f, (off_t)off, SEEK_SET) != 0 || fread(b, 1, len, f) != len) {
		free(b);
		b = NULL;
	}
	fclose(f);
	return b;
}

/* The image end offset qemu-img check reports for path. */
static int64_t check_end(const char *path)
{
	char cmd[512], out[64] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "qemu-img check --output=json '%s' | jq '.\"image-end-offset\"'",
		 path);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, sizeof(out), p));
	assert_int_equal(pclose(p), 0);
	return strtoll(out, NULL, 10);
}

/* The three reads of merge/image-end.c, over the file. */
static int64_t image_end(const char *path)
{
	struct merge_qcow2_refs r;
	unsigned char *head = read_at(path, 0, 65536), *table, *block;
	uint64_t boff = 0;
	int64_t bi, end;
	size_t tlen;

	assert_non_null(head);
	assert_int_equal(merge_qcow2_refs(head, 65536, &r), 0);
	free(head);
	tlen = r.table_bytes < 65536 ? (size_t)r.table_bytes : 65536;
	table = read_at(path, r.table_offset, tlen);
	assert_non_null(table);
	bi = merge_qcow2_last_block(&r, table, tlen, &boff);
	free(table);
	assert_true(bi >= 0);
	block = read_at(path, boff, (size_t)1 << r.cluster_bits);
	assert_non_null(block);
	end = merge_qcow2_end(&r, bi, block, (size_t)1 << r.cluster_bits);
	free(block);
	return end;
}

/*
 * Images made by qemu-img and written by qemu-io, with each refcount width
 * and cluster size that changes the arithmetic: the end found from the
 * refcount structures is the one qemu-img check reports; bytes that are no
 * qcow2, or name a refcount table out of range, give none.
 */
static void test_qcow2_end(void **state)
{
	static const char *const opts[] = { "", "refcount_bits=1", "refcount_bits=4",
					    "refcount_bits=64", "cluster_size=4096",
					    "cluster_size=512,refcount_bits=2", "compat=0.10" };
	char dir[] = "/tmp/lm-end.XXXXXX", path[64], cmd[512];
	struct merge_qcow2_refs r;
	unsigned char junk[128];
	size_t i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/i.qcow2", dir);
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		snprintf(cmd, sizeof(cmd),
			 "qemu-img create -q -f qcow2 %s%s '%s' 4G && "
			 "qemu-io -c 'write -P 0x5a 0 64k' -c 'write 1G 3M' -c 'write 3G 512' "
			 "'%s' >/dev/null",
			 opts[i][0] ? "-o " : "", opts[i], path, path);
		assert_int_equal(system(cmd), 0);
		if (check_end(path) != image_end(path))
			fail_msg("%s: end %lld, qemu-img check says %lld", opts[i],
				 (long long)image_end(path), (long long)check_end(path));
		assert_int_equal(unlink(path), 0);
	}
	memset(junk, 0, sizeof(junk));
	assert_int_equal(merge_qcow2_refs(junk, sizeof(junk), &r), -1);
	memcpy(junk, "QFI\xfb\0\0\0\3", 8);
	junk[23] = 16; /* cluster_bits 16, refcount table at 0: out of range */
	assert_int_equal(merge_qcow2_refs(junk, sizeof(junk), &r), -1);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_done_and_journaled_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inside_an_operation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_function, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_closes_an_extension, setup, teardown),
		cmocka_unit_test(test_qcow2_max_size),
		cmocka_unit_test(test_qcow2_max_size_live),
		cmocka_unit_test(test_next_size_and_threshold),
		cmocka_unit_test(test_qcow2_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

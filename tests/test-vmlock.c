/*
 * test-vmlock: merge/vmlock: the VM's key from what QEMU says it is (one
 * key for every monitor of one VM, the fallbacks, hostile answers), the
 * lock (a second holder refused with the first's pid and verb, free again
 * once the first lets go), and the journal an older livemerge named after
 * the target, taken over.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../merge/journal.h"
#include "../merge/vmlock.h"
#include "../transport/transport.h"
#include "fakeqmp.h"
#include "testutil.h"

static int setup(void **state)
{
	return test_dir_setup(state, "vmlock");
}

static int teardown(void **state)
{
	return test_dir_teardown(state);
}

static const char *key_of(const char *uuid, const char *name, const char *target)
{
	static char key[MERGE_VM_KEY_MAX], desc[MERGE_VM_KEY_MAX];

	merge_vm_key(uuid, name, target, key, desc, sizeof(desc));
	return key;
}

#define UUID "8E3B5C1A-0F0D-4C55-9A3B-1234567890AB"
#define ZERO "00000000-0000-0000-0000-000000000000"

/* One VM through any monitor is one key: its UUID, lower case. */
static void test_uuid_names_the_vm(void **state)
{
	(void)state;
	assert_string_equal(key_of(UUID, "web", "unix:/run/vm1/qmp.sock"),
			    "uuid+8e3b5c1a-0f0d-4c55-9a3b-1234567890ab");
	assert_string_equal(key_of(UUID, NULL, "/run/vm1/second.sock"),
			    "uuid+8e3b5c1a-0f0d-4c55-9a3b-1234567890ab");
	assert_string_equal(key_of(UUID, NULL, "ssh://root@host:2222/run/vm1/qmp.sock"),
			    "uuid+8e3b5c1a-0f0d-4c55-9a3b-1234567890ab");
}

/* No UUID (the default all zeros): the name, unique on its host only. */
static void test_name_with_its_host(void **state)
{
	(void)state;
	assert_string_equal(key_of(ZERO, "web", "unix:/run/vm1/qmp.sock"), "name+web+local");
	assert_string_equal(key_of(ZERO, "web", "/run/vm1/other.sock"), "name+web+local");
	assert_string_equal(key_of(ZERO, "web", "ssh://root@Host.Example/run/q.sock"),
			    "name+web+host.example");
	assert_string_equal(key_of(ZERO, "web", "ssh://h.example:22/run/q.sock"),
			    "name+web+h.example");
	assert_string_equal(key_of(ZERO, "web", "ssh://h.example:2222/run/q.sock"),
			    "name+web+h.example_3a2222");
	assert_string_equal(key_of(ZERO, "web", "tcp:10.0.0.5:4444"), "name+web+10.0.0.5");
	/* bytes that are no file name's, or the escape itself: written _XX,
	 * so two names never meet */
	assert_string_equal(key_of(ZERO, "a b/../c_", "/x"), "name+a_20b_2f.._2fc_5f+local");
	assert_string_equal(key_of(ZERO, "a_20b", "/x"), "name+a_5f20b+local");
	assert_string_equal(key_of(ZERO, "\x1b[2J", "/x"), "name+_1b_5b2J+local");
	assert_string_equal(key_of(NULL, "web", "/x"), "name+web+local");
}

/* Neither (the storage daemon, a VM run without -uuid and -name), or an
 * answer that is no UUID: the target, as journals were always named. */
static void test_target_otherwise(void **state)
{
	char stem[MERGE_VM_KEY_MAX], big[400];

	(void)state;
	merge_journal_target_stem("unix:/run/vm1/qmp.sock", stem, sizeof(stem));
	assert_string_equal(stem, "_run_vm1_qmp.sock");
	assert_string_equal(key_of(NULL, NULL, "unix:/run/vm1/qmp.sock"), stem);
	assert_string_equal(key_of(ZERO, NULL, "/run/vm1/qmp.sock"), stem);
	assert_string_equal(key_of(ZERO, "", "/run/vm1/qmp.sock"), stem);
	assert_string_equal(key_of("../../etc/passwd-0000-0000-0000-00000000", NULL,
				   "/run/vm1/qmp.sock"), stem);
	assert_string_equal(key_of("8e3b5c1a-0f0d-4c55-9a3b-1234567890ag", NULL,
				   "/run/vm1/qmp.sock"), stem);
	assert_string_equal(key_of(UUID "0", NULL, "/run/vm1/qmp.sock"), stem);
	/* a name too long for a file name */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_string_equal(key_of(ZERO, big, "/run/vm1/qmp.sock"), stem);
	/* every key of the VM's own kind holds a '+', no target's ever does */
	assert_null(strchr(key_of(NULL, NULL, "unix:/run/a+b/q.sock"), '+'));
}

static struct merge_vm *vm_new(const char *uuid, const char *target)
{
	struct merge_vm *vm = calloc(1, sizeof(*vm));

	assert_non_null(vm);
	vm->lock_fd = -1;
	merge_vm_key(uuid, NULL, target, vm->key, vm->desc, sizeof(vm->desc));
	return vm;
}

/* A second holder is refused naming the first; free once the first ends.
 * flock: two opens in one process exclude each other too (batch). */
static void test_lock_refuses_second(void **state)
{
	struct test_dir *fx = *state;
	struct merge_vm *a = vm_new(UUID, "unix:/a"), *b = vm_new(UUID, "unix:/b");
	struct lm_error err = { 0 };
	char want[128], path[600];
	struct stat st;

	assert_int_equal(merge_vm_lock(a, fx->dir, "commit", "unix:/a", &err), 0);
	assert_int_equal(merge_vm_lock(a, fx->dir, "commit", "unix:/a", &err), 0); /* held */
	assert_int_equal(merge_vm_lock(b, fx->dir, "snapshot", "unix:/b", &err), -1);
	assert_int_equal(err.code, LM_ERR_BUSY);
	snprintf(want, sizeof(want), "livemerge pid %d runs 'commit' on it through unix:/a",
		 (int)getpid());
	if (strstr(err.msg, want) == NULL)
		fail_msg("'%s' does not say '%s'", err.msg, want);
	assert_non_null(strstr(err.msg, "uuid 8e3b5c1a-0f0d-4c55-9a3b-1234567890ab"));
	assert_int_equal(b->lock_fd, -1);
	merge_vm_free(a);
	assert_int_equal(merge_vm_lock(b, fx->dir, "snapshot", "unix:/b", &err), 0);
	/* the file stays (removing a lock file races with its next taker) */
	snprintf(path, sizeof(path), "%s/uuid+8e3b5c1a-0f0d-4c55-9a3b-1234567890ab.lock", fx->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	merge_vm_free(b);
}

static void begin_op(struct merge_journal *j)
{
	json_object *o = json_object_new_object();
	struct lm_error err;

	json_object_object_add(o, "verb", json_object_new_string("commit"));
	assert_int_equal(merge_journal_begin(j, o, &err), 0);
	json_object_put(o);
}

static int unfinished(struct merge_journal *j)
{
	json_object *last = NULL;
	struct lm_error err;
	int finished = 1, r;

	assert_int_equal(merge_journal_last(j, &last, &finished, &err), 0);
	r = last != NULL && !finished;
	json_object_put(last);
	return r;
}

/* The VM's journal reached through target is the file at path, with (or
 * without) an unfinished operation. */
static void expect_journal(struct test_dir *fx, const struct merge_vm *vm, const char *target,
			   const char *path, int want_unfinished)
{
	struct lm_error err = { 0 };
	struct merge_journal *j = merge_vm_journal_open(fx->dir, vm, target, &err);

	if (j == NULL)
		fail_msg("merge_vm_journal_open through %s: %s", target, err.msg);
	assert_string_equal(merge_journal_path(j), path);
	assert_int_equal(unfinished(j), want_unfinished);
	merge_journal_close(j);
}

/* An older journal named after the target: renamed to the VM's name, its
 * unfinished operation still there for recovery. */
static void test_old_journal_taken_over(void **state)
{
	struct test_dir *fx = *state;
	struct merge_vm *vm = vm_new(UUID, "unix:/run/a.sock");
	struct lm_error err = { 0 };
	struct merge_journal *j;
	char old_path[600], new_path[1200];

	j = merge_journal_open(fx->dir, "unix:/run/a.sock", &err);
	assert_non_null(j);
	begin_op(j);
	merge_journal_close(j);
	snprintf(old_path, sizeof(old_path), "%s/_run_a.sock.journal", fx->dir);
	snprintf(new_path, sizeof(new_path), "%s/%s.journal", fx->dir, vm->key);
	assert_int_equal(access(old_path, F_OK), 0);

	expect_journal(fx, vm, "unix:/run/a.sock", new_path, 1);
	assert_int_equal(access(old_path, F_OK), -1);
	/* through another monitor of the VM: the same journal */
	expect_journal(fx, vm, "unix:/run/second.sock", new_path, 1);
	merge_vm_free(vm);
}

/* Both exist: the older is used while it has an unfinished operation. */
static void test_old_journal_unfinished_first(void **state)
{
	struct test_dir *fx = *state;
	struct merge_vm *vm = vm_new(UUID, "unix:/run/b.sock");
	struct lm_error err = { 0 };
	struct merge_journal *j;
	char old_path[600], new_path[1200];

	snprintf(old_path, sizeof(old_path), "%s/_run_b.sock.journal", fx->dir);
	snprintf(new_path, sizeof(new_path), "%s/%s.journal", fx->dir, vm->key);
	j = merge_journal_open_stem(fx->dir, vm->key, &err); /* the VM's, finished */
	assert_non_null(j);
	begin_op(j);
	assert_int_equal(merge_journal_step(j, "end", NULL, &err), 0);
	merge_journal_close(j);
	j = merge_journal_open(fx->dir, "/run/b.sock", &err); /* the older, unfinished */
	assert_non_null(j);
	begin_op(j);
	merge_journal_close(j);

	expect_journal(fx, vm, "unix:/run/b.sock", old_path, 1);
	j = merge_journal_open(fx->dir, "/run/b.sock", &err);
	assert_non_null(j);
	assert_int_equal(merge_journal_step(j, "end", NULL, &err), 0); /* recovered */
	merge_journal_close(j);
	expect_journal(fx, vm, "unix:/run/b.sock", new_path, 0);
	merge_vm_free(vm);
}

/* A VM known by its target: the very file journals always had. */
static void test_target_key_same_file(void **state)
{
	struct test_dir *fx = *state;
	struct merge_vm *vm = vm_new(NULL, "unix:/run/qsd.sock");
	struct lm_error err = { 0 };
	struct merge_journal *j;
	char path[600];

	snprintf(path, sizeof(path), "%s/_run_qsd.sock.journal", fx->dir);
	j = merge_vm_journal_open(fx->dir, vm, "unix:/run/qsd.sock", &err);
	assert_non_null(j);
	assert_string_equal(merge_journal_path(j), path);
	merge_journal_close(j);
	assert_null(merge_journal_open_stem(fx->dir, "../x", &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	merge_vm_free(vm);
}

/* A claim through the fake monitor: its callback's result and messages. */
struct claim_run {
	struct ev_loop *loop;
	struct fq *fq;
	struct qmp_conn *c;
	struct merge_vm_claim *cl;
	int calls, messages;
	struct merge_vm *vm;
	struct lm_error err;
	struct merge_vm *other; /* a holder to let go during the wait */
	ev_timer release;
};

static void claim_cb(struct merge_vm *vm, const struct lm_error *err, void *arg)
{
	struct claim_run *r = arg;

	r->calls++;
	r->vm = vm;
	if (err != NULL)
		r->err = *err;
	merge_vm_claim_free(r->cl); /* from inside its own callback */
	r->cl = NULL;
}

static void claim_msg(const char *line, void *arg)
{
	struct claim_run *r = arg;

	(void)line;
	r->messages++;
}

static void claim_setup(struct claim_run *r)
{
	struct lm_error err;
	struct tr *t;

	memset(r, 0, sizeof(*r));
	r->loop = ev_loop_new(EVFLAG_AUTO);
	r->fq = fq_new(r->loop);
	fq_handshake(r->fq);
	t = tr_new_fd(fq_fd(r->fq), "fake", &err);
	assert_non_null(t);
	r->c = qmp_conn_new(r->loop, t, NULL);
	assert_non_null(r->c);
	assert_int_equal(qmp_conn_start(r->c, &err), 0);
}

static void claim_start(struct claim_run *r, const char *dir, const char *verb, double wait)
{
	struct merge_vm_claim_opts o = {
		.dir = dir, .target = "unix:/run/vm1/qmp.sock", .verb = verb, .wait_lock = wait,
		.message = claim_msg,
	};
	struct lm_error err;

	r->cl = merge_vm_claim_start(r->c, &o, claim_cb, r, &err);
	assert_non_null(r->cl);
	assert_int_equal(r->calls, 0); /* never from inside the call */
}

static void claim_teardown(struct claim_run *r)
{
	merge_vm_claim_free(r->cl);
	merge_vm_free(r->vm);
	merge_vm_free(r->other);
	qmp_conn_free(r->c);
	assert_int_equal(fq_verify(r->fq), 0);
	fq_free(r->fq);
	ev_loop_destroy(r->loop);
}

/* The storage daemon knows neither command: the target names it. */
static void test_claim_storage_daemon(void **state)
{
	struct test_dir *fx = *state;
	struct claim_run r;

	claim_setup(&r);
	fq_expect(r.fq, "query-uuid", NULL);
	fq_reply_error(r.fq, "CommandNotFound", "The command query-uuid has not been found");
	claim_start(&r, fx->dir, "commit", 0);
	TEST_RUN_UNTIL(r.loop, r.calls == 1, 5, (void)0);
	assert_non_null(r.vm);
	assert_string_equal(r.vm->key, "_run_vm1_qmp.sock");
	assert_true(r.vm->lock_fd >= 0);
	claim_teardown(&r);
}

/* All-zero UUID: the name is asked for; any other error ends the claim. */
static void test_claim_name_and_errors(void **state)
{
	struct test_dir *fx = *state;
	struct claim_run r;

	claim_setup(&r);
	fq_expect(r.fq, "query-uuid", NULL);
	fq_reply_return(r.fq, "{\"UUID\": \"" ZERO "\"}");
	fq_expect(r.fq, "query-name", NULL);
	fq_reply_return(r.fq, "{\"name\": \"web\"}");
	claim_start(&r, fx->dir, NULL, 0);
	TEST_RUN_UNTIL(r.loop, r.calls == 1, 5, (void)0);
	assert_non_null(r.vm);
	assert_string_equal(r.vm->key, "name+web+local");
	assert_int_equal(r.vm->lock_fd, -1); /* no verb: no lock */
	claim_teardown(&r);

	claim_setup(&r);
	fq_expect(r.fq, "query-uuid", NULL);
	fq_reply_error(r.fq, "GenericError", "no");
	claim_start(&r, fx->dir, "commit", 0);
	TEST_RUN_UNTIL(r.loop, r.calls == 1, 5, (void)0);
	assert_null(r.vm);
	assert_int_equal(r.err.code, LM_ERR_QMP);
	assert_non_null(strstr(r.err.msg, "cannot tell which VM this is"));
	claim_teardown(&r);
}

static void release_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct claim_run *r = w->data;

	(void)loop;
	(void)revents;
	merge_vm_free(r->other);
	r->other = NULL;
}

/* A held lock: refused at once; waited for, said once, taken when the
 * holder lets go; or refused when the wait ends. */
static void test_claim_waits(void **state)
{
	struct test_dir *fx = *state;
	struct lm_error err;
	struct claim_run r;
	int i;

	for (i = 0; i < 3; i++) {
		claim_setup(&r);
		r.other = vm_new(UUID, "unix:/a");
		assert_int_equal(merge_vm_lock(r.other, fx->dir, "stream", "unix:/a", &err), 0);
		fq_expect(r.fq, "query-uuid", NULL);
		fq_reply_return(r.fq, "{\"UUID\": \"" UUID "\"}");
		if (i == 1) {
			ev_timer_init(&r.release, release_cb, 0.5, 0);
			r.release.data = &r;
			ev_timer_start(r.loop, &r.release);
		}
		claim_start(&r, fx->dir, "commit", i == 0 ? 0 : 1.0);
		TEST_RUN_UNTIL(r.loop, r.calls == 1, 5, (void)0);
		ev_timer_stop(r.loop, &r.release);
		if (i == 1) {
			assert_non_null(r.vm);
			assert_true(r.vm->lock_fd >= 0);
		} else {
			assert_null(r.vm);
			assert_int_equal(r.err.code, LM_ERR_BUSY);
			assert_non_null(strstr(r.err.msg, "runs 'stream' on it through unix:/a"));
			assert_int_equal(strncmp(r.err.msg, "waited", 6) == 0, i == 2);
		}
		assert_int_equal(r.messages, i == 0 ? 0 : 1);
		claim_teardown(&r);
	}
}

/* Freed before QEMU answers: the callback never runs, nothing leaks. */
static void test_claim_abandoned(void **state)
{
	struct test_dir *fx = *state;
	struct claim_run r;

	claim_setup(&r);
	fq_expect(r.fq, "query-uuid", NULL);
	fq_delay(r.fq, 0.2);
	fq_reply_return(r.fq, "{\"UUID\": \"" UUID "\"}");
	claim_start(&r, fx->dir, "commit", 0);
	merge_vm_claim_free(r.cl);
	r.cl = NULL;
	TEST_RUN_UNTIL(r.loop, fq_done(r.fq), 5, (void)0);
	ev_run(r.loop, EVRUN_NOWAIT);
	assert_int_equal(r.calls, 0);
	claim_teardown(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uuid_names_the_vm),
		cmocka_unit_test(test_name_with_its_host),
		cmocka_unit_test(test_target_otherwise),
		cmocka_unit_test_setup_teardown(test_lock_refuses_second, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_journal_taken_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_journal_unfinished_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_target_key_same_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_storage_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_name_and_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_abandoned, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

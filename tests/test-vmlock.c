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
#include "testutil.h"

struct fixture {
	char dir[512];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/lm-test-vmlock-XXXXXX");
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
	struct fixture *fx = *state;
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

/* An older journal named after the target: renamed to the VM's name, its
 * unfinished operation still there for recovery. */
static void test_old_journal_taken_over(void **state)
{
	struct fixture *fx = *state;
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

	j = merge_vm_journal_open(fx->dir, vm, "unix:/run/a.sock", &err);
	assert_non_null(j);
	assert_string_equal(merge_journal_path(j), new_path);
	assert_int_equal(unfinished(j), 1);
	merge_journal_close(j);
	assert_int_equal(access(old_path, F_OK), -1);
	/* through another monitor of the VM: the same journal */
	j = merge_vm_journal_open(fx->dir, vm, "unix:/run/second.sock", &err);
	assert_non_null(j);
	assert_string_equal(merge_journal_path(j), new_path);
	assert_int_equal(unfinished(j), 1);
	merge_journal_close(j);
	merge_vm_free(vm);
}

/* Both exist: the older is used while it has an unfinished operation. */
static void test_old_journal_unfinished_first(void **state)
{
	struct fixture *fx = *state;
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

	j = merge_vm_journal_open(fx->dir, vm, "unix:/run/b.sock", &err);
	assert_non_null(j);
	assert_string_equal(merge_journal_path(j), old_path);
	assert_int_equal(unfinished(j), 1);
	assert_int_equal(merge_journal_step(j, "end", NULL, &err), 0); /* recovered */
	merge_journal_close(j);
	j = merge_vm_journal_open(fx->dir, vm, "unix:/run/b.sock", &err);
	assert_non_null(j);
	assert_string_equal(merge_journal_path(j), new_path);
	assert_int_equal(unfinished(j), 0);
	merge_journal_close(j);
	merge_vm_free(vm);
}

/* A VM known by its target: the very file journals always had. */
static void test_target_key_same_file(void **state)
{
	struct fixture *fx = *state;
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

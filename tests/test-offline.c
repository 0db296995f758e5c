/*
 * test-offline: offline targets taken apart (merge_offline_parse): the
 * disks and their top images in the target's order, relative paths made
 * absolute here and refused for an ssh:// host, the journal key the same
 * whatever the disks' order; malformed ones refused with LM_ERR_USAGE and a
 * message naming what was written. The daemon itself is
 * integration/test-offline.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../merge/offline.h"

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void test_is(void **state)
{
	(void)state;
	assert_true(merge_offline_is("offline:vda=/a"));
	assert_true(merge_offline_is("offline:"));
	assert_true(merge_offline_is("ssh://root@h:2222/offline:vda=/a"));
	assert_false(merge_offline_is("unix:/run/qmp.sock"));
	assert_false(merge_offline_is("/run/offline:x"));
	assert_false(merge_offline_is("ssh://h/run/offline:vda=/a")); /* a socket path */
	assert_false(merge_offline_is("ssh://hoffline:vda=/a"));
	assert_false(merge_offline_is(NULL));
}

static void test_parse_local(void **state)
{
	struct lm_error err;
	struct merge_offline *o;

	(void)state;
	o = merge_offline_parse("offline:vdb=/img/b.qcow2,vda=a.qcow2,x.y_z-1=/c", "/work", &err);
	assert_non_null(o);
	assert_null(o->ssh);
	assert_int_equal(o->ndisks, 3);
	assert_string_equal(o->disks[0].disk, "vdb");
	assert_string_equal(o->disks[0].path, "/img/b.qcow2");
	assert_string_equal(o->disks[1].disk, "vda");
	assert_string_equal(o->disks[1].path, "/work/a.qcow2");
	assert_string_equal(o->disks[2].disk, "x.y_z-1");
	assert_string_equal(o->disks[2].path, "/c");
	/* sorted by disk: the same VM's journal whatever the order on the command line */
	assert_string_equal(o->key, "offline:vda=/work/a.qcow2,vdb=/img/b.qcow2,x.y_z-1=/c");
	assert_string_equal(merge_offline_find(o, "vda")->path, "/work/a.qcow2");
	assert_null(merge_offline_find(o, "vdc"));
	merge_offline_free(o);

	/* a path holds '=' and ':' as it likes */
	o = merge_offline_parse("offline:vda=/i/a=b:c.qcow2", NULL, &err);
	assert_non_null(o);
	assert_string_equal(o->disks[0].path, "/i/a=b:c.qcow2");
	merge_offline_free(o);
	merge_offline_free(NULL);
}

static void test_parse_ssh(void **state)
{
	struct lm_error err;
	struct merge_offline *o;

	(void)state;
	o = merge_offline_parse("ssh://root@host7:2222/offline:vdb=/i/b,vda=/i/a", "/work", &err);
	assert_non_null(o);
	assert_string_equal(o->ssh, "ssh://root@host7:2222");
	assert_int_equal(o->ndisks, 2);
	assert_string_equal(o->disks[1].path, "/i/a");
	assert_string_equal(o->key, "ssh://root@host7:2222/offline:vda=/i/a,vdb=/i/b");
	merge_offline_free(o);

	/* the host's paths are the host's: no working directory of ours */
	o = merge_offline_parse("ssh://host7/offline:vda=a.qcow2", "/work", &err);
	assert_null(o);
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "must be absolute on an ssh:// host");
}

static void test_parse_bad(void **state)
{
	static const struct {
		const char *target, *says;
	} cases[] = {
		{ "offline:", "no disk" },
		{ "offline:vda", "'vda' is not DISK=PATH" },
		{ "offline:vda=", "disk vda has no image path" },
		{ "offline:=/a", "disk name ''" },
		{ "offline:1vda=/a", "disk name '1vda'" },
		{ "offline:v da=/a", "disk name 'v da'" },
		{ "offline:vda!=/a", "disk name 'vda!'" },
		{ "offline:abcdefghijklmnopqrstuvwxyz0123456=/a", "at most 31" },
		{ "offline:vda=/a,vda=/b", "disk vda named twice" },
		{ "offline:vda=/a,vdb=/a", "/a is the top of both vda and vdb" },
		{ "offline:vda=/a,", "'' is not DISK=PATH" },
		{ "offline:vda=/a,,vdb=/b", "'' is not DISK=PATH" },
		/* a ',' in a path splits it: what follows is no DISK=PATH */
		{ "offline:vda=/a,b.qcow2", "'b.qcow2' is not DISK=PATH" },
		{ "unix:/run/qmp", "not an offline target" },
	};
	struct lm_error err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&err, 0, sizeof(err));
		if (merge_offline_parse(cases[i].target, "/work", &err) != NULL)
			fail_msg("'%s' was accepted", cases[i].target);
		assert_int_equal(err.code, LM_ERR_USAGE);
		assert_contains(err.msg, cases[i].says);
	}
}

static void test_parse_too_many(void **state)
{
	char target[4096];
	struct lm_error err;
	struct merge_offline *o;
	size_t n = 0;
	int i;

	(void)state;
	n += (size_t)snprintf(target + n, sizeof(target) - n, "offline:");
	for (i = 0; i < MERGE_OFFLINE_MAX_DISKS; i++)
		n += (size_t)snprintf(target + n, sizeof(target) - n, "%sd%d=/i/%d", i ? "," : "", i,
				      i);
	o = merge_offline_parse(target, NULL, &err);
	assert_non_null(o);
	assert_int_equal(o->ndisks, MERGE_OFFLINE_MAX_DISKS);
	merge_offline_free(o);
	snprintf(target + n, sizeof(target) - n, ",extra=/i/x");
	assert_null(merge_offline_parse(target, NULL, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_contains(err.msg, "at most 32 disks");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_is),
		cmocka_unit_test(test_parse_local),
		cmocka_unit_test(test_parse_ssh),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_too_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * tests/test-plan: the group engine's plan (merge/group-plan.c), called
 * directly on hand-built chains, no monitor: what each request does to
 * each disk (nodes, layers, job id, the chain after, the layers that leave)
 * and which requests it refuses.
 *
 * Disk "vda": a.3 (node n3, active) over a.2 (n2) over a.1 (n1) over a.0 (n0).
 * Disk "vdb": b.1 (m1, active) over b.0 (m0).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../merge/group-int.h"

static struct merge_layer vda_layers[] = {
	{ .node_name = "n3", .filename = "/img/a.3", .format = "qcow2" },
	{ .node_name = "n2", .filename = "/img/a.2", .format = "qcow2" },
	{ .node_name = "n1", .filename = "/img/a.1", .format = "qcow2" },
	{ .node_name = "n0", .filename = "/img/a.0", .format = "raw" },
};

static struct merge_layer vdb_layers[] = {
	{ .node_name = "m1", .filename = "/img/b.1", .format = "qcow2" },
	{ .node_name = "m0", .filename = "/img/b.0", .format = "raw" },
};

static struct merge_disk disks[] = {
	{ .name = "vda", .device = "", .qdev_id = "vda", .nlayers = 4, .layers = vda_layers },
	{ .name = "vdb", .device = "", .qdev_id = "vdb", .nlayers = 2, .layers = vdb_layers },
};

static const struct merge_chains chains = { .ndisks = 2, .disks = disks };

/* Plan one request; on success the plan, else NULL with err filled. */
static struct g_plan *plan(enum merge_verb verb, const struct merge_target *t, int n,
			   struct lm_error *err)
{
	struct merge_request req = { .verb = verb, .ntargets = n, .targets = t };
	struct g_plan *p = NULL;

	memset(err, 0, sizeof(*err));
	if (g_plan_build(&req, &chains, &p, err) < 0) {
		g_plan_free(p);
		return NULL;
	}
	assert_non_null(p);
	assert_int_equal(p->n, n);
	return p;
}

/* Plan a request that must be accepted. */
static struct g_plan *plan_ok(enum merge_verb verb, const struct merge_target *t, int n)
{
	struct lm_error err;
	struct g_plan *p = plan(verb, t, n, &err);

	if (p == NULL)
		fail_msg("refused: %s", err.msg);
	return p;
}

static void assert_chain(const struct g_plan_disk *d, int n, const char *const *files)
{
	int i;

	assert_int_equal(d->nexpect, n);
	for (i = 0; i < n; i++)
		assert_string_equal(d->expect[i], files[i]);
}

/* A request that is refused: USAGE, and the message says why. */
static void assert_refused(enum merge_verb verb, const struct merge_target *t, int n,
			   const char *why)
{
	struct lm_error err;

	assert_null(plan(verb, t, n, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	if (strstr(err.msg, why) == NULL)
		fail_msg("refusal \"%s\" does not say \"%s\"", err.msg, why);
}

static void test_active_commit(void **state)
{
	const struct merge_target t[] = { { .disk = "vda" } };
	const char *after[] = { "/img/a.2", "/img/a.1", "/img/a.0" };
	struct g_plan *p = plan_ok(MERGE_COMMIT, t, 1);
	const struct g_plan_disk *d = &p->disks[0];

	(void)state;
	assert_string_equal(d->name, "vda");
	assert_string_equal(d->root, "n3");
	assert_int_equal(d->top, 0);
	assert_int_equal(d->base, 1);
	assert_true(d->active);
	assert_string_equal(d->top_node, "n3");
	assert_string_equal(d->base_node, "n2");
	assert_null(d->overlay);
	assert_null(d->new_node);
	assert_string_equal(d->job_id, "livemerge-commit-vda");
	assert_chain(d, 3, after);
	assert_int_equal(d->leave_from, 0);
	assert_int_equal(d->leave_to, 1);
	g_plan_free(p);
}

static void test_intermediate_commit(void **state)
{
	/* top by node name, base by file name */
	const struct merge_target t[] = { { .disk = "vda", .top = "n2", .base = "/img/a.0" } };
	const char *after[] = { "/img/a.3", "/img/a.0" };
	struct g_plan *p = plan_ok(MERGE_COMMIT, t, 1);
	const struct g_plan_disk *d = &p->disks[0];

	(void)state;
	assert_string_equal(d->name, "vda");
	assert_string_equal(d->root, "n3");
	assert_int_equal(d->top, 1);
	assert_int_equal(d->base, 3);
	assert_false(d->active);
	assert_string_equal(d->top_node, "n2");
	assert_string_equal(d->base_node, "n0");
	assert_string_equal(d->job_id, "livemerge-commit-vda");
	assert_chain(d, 2, after);
	assert_int_equal(d->leave_from, 1); /* a.2 and a.1 leave */
	assert_int_equal(d->leave_to, 3);
	g_plan_free(p);
}

static void test_stream_with_base(void **state)
{
	const struct merge_target t[] = { { .disk = "vda", .base = "n1" } };
	const char *after[] = { "/img/a.3", "/img/a.1", "/img/a.0" };
	struct g_plan *p = plan_ok(MERGE_STREAM, t, 1);
	const struct g_plan_disk *d = &p->disks[0];

	(void)state;
	assert_string_equal(d->root, "n3");
	assert_int_equal(d->base, 2);
	assert_false(d->active);
	assert_null(d->top_node);
	assert_string_equal(d->base_node, "n1");
	assert_string_equal(d->job_id, "livemerge-stream-vda");
	assert_chain(d, 3, after);
	assert_int_equal(d->leave_from, 1); /* a.2 leaves */
	assert_int_equal(d->leave_to, 2);
	g_plan_free(p);
}

static void test_stream_without_base(void **state)
{
	const struct merge_target t[] = { { .disk = "vda" } };
	const char *after[] = { "/img/a.3" };
	struct g_plan *p = plan_ok(MERGE_STREAM, t, 1);
	const struct g_plan_disk *d = &p->disks[0];

	(void)state;
	assert_int_equal(d->base, 4); /* below the base: flatten */
	assert_null(d->base_node);
	assert_string_equal(d->job_id, "livemerge-stream-vda");
	assert_chain(d, 1, after);
	assert_int_equal(d->leave_from, 1);
	assert_int_equal(d->leave_to, 4);
	g_plan_free(p);
}

static void test_snapshot_two_disks(void **state)
{
	const struct merge_target t[] = { { .disk = "vda", .overlay = "/img/a.4" },
					  { .disk = "m1", .overlay = "/img/b.2" } };
	const char *after_a[] = { "/img/a.4", "/img/a.3", "/img/a.2", "/img/a.1", "/img/a.0" };
	const char *after_b[] = { "/img/b.2", "/img/b.1", "/img/b.0" };
	char nn[32];
	struct g_plan *p = plan_ok(MERGE_SNAPSHOT, t, 2);
	const struct g_plan_disk *d = &p->disks[0];

	(void)state;
	assert_string_equal(d->name, "vda");
	assert_string_equal(d->root, "n3");
	assert_string_equal(d->overlay, "/img/a.4");
	snprintf(nn, sizeof(nn), "lm-%08x", g_hash("/img/a.4"));
	assert_string_equal(d->new_node, nn);
	assert_null(d->job_id);
	assert_null(d->top_node);
	assert_null(d->base_node);
	assert_chain(d, 5, after_a);
	assert_int_equal(d->leave_from, d->leave_to); /* nothing leaves */
	d = &p->disks[1];
	assert_string_equal(d->name, "vdb"); /* named by its active node */
	assert_string_equal(d->root, "m1");
	assert_string_equal(d->overlay, "/img/b.2");
	assert_chain(d, 3, after_b);
	g_plan_free(p);
}

static void test_bad_requests(void **state)
{
	const struct merge_target unknown[] = { { .disk = "vdz" } };
	const struct merge_target top_not_in_chain[] = { { .disk = "vda", .top = "/img/b.1" } };
	const struct merge_target base_above_top[] = { { .disk = "vda", .top = "n1", .base = "n2" } };
	const struct merge_target top_is_base[] = { { .disk = "vda", .top = "n0" } };
	const struct merge_target twice[] = { { .disk = "vda" }, { .disk = "n3" } };
	const struct merge_target stream_base_active[] = { { .disk = "vdb", .base = "m1" } };
	const struct merge_target stream_base_below[] = { { .disk = "vdb", .base = "m0" } };
	const struct merge_target relative[] = { { .disk = "vda", .overlay = "a.4" } };
	const struct merge_target in_chain[] = { { .disk = "vda", .overlay = "/img/a.1" } };
	const struct merge_target snap_twice[] = { { .disk = "vda", .overlay = "/img/x1" },
						   { .disk = "n3", .overlay = "/img/x2" } };
	const struct merge_target overlay_twice[] = { { .disk = "vda", .overlay = "/img/x" },
						      { .disk = "vdb", .overlay = "/img/x" } };

	(void)state;
	assert_refused(MERGE_COMMIT, unknown, 1, "no disk 'vdz'");
	assert_refused(MERGE_COMMIT, top_not_in_chain, 1, "no layer '/img/b.1' in its chain (for --top");
	assert_refused(MERGE_COMMIT, base_above_top, 1, "base /img/a.2 is not below top /img/a.1");
	assert_refused(MERGE_COMMIT, top_is_base, 1, "is the base of the chain");
	assert_refused(MERGE_COMMIT, twice, 2, "disk vda is named twice");
	assert_refused(MERGE_STREAM, twice, 2, "disk vda is named twice");
	assert_refused(MERGE_STREAM, stream_base_active, 1, "is the active layer");
	assert_refused(MERGE_STREAM, stream_base_below, 1, "right below the active layer");
	assert_refused(MERGE_SNAPSHOT, relative, 1, "must be an absolute path");
	assert_refused(MERGE_SNAPSHOT, in_chain, 1, "/img/a.1 is in its chain already");
	assert_refused(MERGE_SNAPSHOT, overlay_twice, 2, "overlay /img/x is given twice");
	assert_refused(MERGE_SNAPSHOT, snap_twice, 2, "disk vda is named twice");
}

/* After a refusal the plan still names the disks found before it (the
 * engine's result lists their chains). */
static void test_refusal_keeps_names(void **state)
{
	const struct merge_target t[] = { { .disk = "vdb" }, { .disk = "vdz" } };
	struct merge_request req = { .verb = MERGE_COMMIT, .ntargets = 2, .targets = t };
	struct g_plan *p = NULL;
	struct lm_error err;

	(void)state;
	assert_int_equal(g_plan_build(&req, &chains, &p, &err), -1);
	assert_non_null(p);
	assert_string_equal(p->disks[0].name, "vdb");
	assert_null(p->disks[1].name);
	g_plan_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_active_commit),
		cmocka_unit_test(test_intermediate_commit),
		cmocka_unit_test(test_stream_with_base),
		cmocka_unit_test(test_stream_without_base),
		cmocka_unit_test(test_snapshot_two_disks),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_refusal_keeps_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * tests/test-chain: the chain decoder (merge/chain) on block reports captured
 * from a real QEMU 7.2 (tests/fixtures/NAME.json, made by capture.sh), with
 * the block graph and without it (the file-name matching fallback), and on
 * malformed reports.
 *
 * The fixtures come from three layouts over the same two chains (capture.sh
 * has the details): disk "a" is a.1.qcow2 over a.0.qcow2 (64 MiB), disk "b"
 * is b.3 over b.2 over b.1 over b.0 (128 MiB), all under /tmp/lm-fixtures.
 * Backing layers get automatic node names, so the expected node name of a
 * layer is looked up in the fixture's own named-node list by file name.
 * Fixtures are read from $LM_FIXTURES, else tests/fixtures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../merge/chain.h"

#define FIXDIR "/tmp/lm-fixtures/"
#define MIB ((int64_t)1 << 20)
#define LAYER_CAP 4096 /* the decoder's limit on layers per chain */

/* ------------------------------------------------------------------ helpers */

struct want_disk {
	const char *name;      /* merge_disk.name */
	const char *device;    /* block-backend name, "" if anonymous */
	const char *qdev;      /* NULL for a storage-daemon export */
	const char *qdev_id;
	const char *top_node;  /* NULL: QEMU chose it (taken from query-block) */
	const char *file_node; /* the top's protocol node, NULL: QEMU chose it */
	int nlayers;
	const char *files[4]; /* top first */
	int64_t size;
};

struct fixture {
	json_object *root;
	json_object *block, *nodes, *graph; /* borrowed from root */
};

static void fixture_load(struct fixture *fx, const char *name)
{
	const char *dir = getenv("LM_FIXTURES");
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures", name);
	fx->root = json_object_from_file(path);
	if (fx->root == NULL)
		fail_msg("cannot read fixture %s (run from the top of the tree or set LM_FIXTURES)",
			 path);
	assert_true(json_object_object_get_ex(fx->root, "block", &fx->block));
	assert_true(json_object_object_get_ex(fx->root, "nodes", &fx->nodes));
	assert_true(json_object_object_get_ex(fx->root, "graph", &fx->graph));
	assert_true(json_object_is_type(fx->block, json_type_array));
	assert_true(json_object_is_type(fx->nodes, json_type_array));
	assert_true(json_object_is_type(fx->graph, json_type_object));
}

static const char *member_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The named node of driver drv (qcow2, file ...) that has file open, from the fixture; must
 * be one. */
static json_object *fixture_node_obj(const struct fixture *fx, const char *file, const char *drv)
{
	size_t i, n = json_object_array_length(fx->nodes);
	json_object *found = NULL;

	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(fx->nodes, i);
		const char *f = member_str(o, "file"), *d = member_str(o, "drv");

		if (f == NULL || d == NULL || strcmp(f, file) != 0 || strcmp(d, drv) != 0)
			continue;
		if (found != NULL)
			fail_msg("fixture has two %s nodes for %s", drv, file);
		found = o;
	}
	if (found == NULL)
		fail_msg("fixture has no %s node for %s", drv, file);
	return found;
}

static const char *fixture_node(const struct fixture *fx, const char *file, const char *drv)
{
	return member_str(fixture_node_obj(fx, file, drv), "node-name");
}

/* The length QEMU reports for that node (its image's virtual-size). */
static int64_t fixture_node_size(const struct fixture *fx, const char *file, const char *drv)
{
	json_object *image, *v;

	assert_true(json_object_object_get_ex(fixture_node_obj(fx, file, drv), "image", &image));
	assert_true(json_object_object_get_ex(image, "virtual-size", &v));
	return json_object_get_int64(v);
}

static struct merge_chains *decode_ok(const struct fixture *fx, int with_graph)
{
	struct merge_chains *ch = NULL;
	struct lm_error err = { 0 };

	if (merge_chains_decode(fx->block, fx->nodes, with_graph ? fx->graph : NULL, &ch, &err) < 0)
		fail_msg("decode (%s graph) failed: %s", with_graph ? "with" : "without", err.msg);
	assert_non_null(ch);
	assert_int_equal(err.code, LM_OK);
	return ch;
}

static void assert_str_or_null(const char *got, const char *want, const char *what)
{
	if (want == NULL && got == NULL)
		return;
	if (want == NULL || got == NULL || strcmp(want, got) != 0)
		fail_msg("%s is \"%s\", expected \"%s\"", what, got ? got : "(null)",
			 want ? want : "(null)");
}

static void check_disk_json(const struct merge_disk *d)
{
	json_object *o = merge_disk_to_json(d), *v, *chain;
	int i;

	assert_non_null(o);
	assert_string_equal(member_str(o, "disk"), d->name);
	assert_string_equal(member_str(o, "device"), d->device);
	if (d->qdev != NULL)
		assert_string_equal(member_str(o, "qdev"), d->qdev);
	else
		assert_false(json_object_object_get_ex(o, "qdev", NULL));
	assert_string_equal(member_str(o, "node-name"), d->layers[0].node_name);
	assert_true(json_object_object_get_ex(o, "chain", &chain));
	assert_true(json_object_is_type(chain, json_type_array));
	assert_int_equal(json_object_array_length(chain), d->nlayers);
	for (i = 0; i < d->nlayers; i++) {
		json_object *lo = json_object_array_get_idx(chain, (size_t)i);
		const struct merge_layer *l = &d->layers[i];

		assert_string_equal(member_str(lo, "node-name"), l->node_name);
		assert_string_equal(member_str(lo, "filename"), l->filename);
		assert_string_equal(member_str(lo, "format"), l->format);
		assert_true(json_object_object_get_ex(lo, "virtual-size", &v));
		assert_true(json_object_is_type(v, json_type_int));
		assert_int_equal(json_object_get_int64(v), l->virtual_size);
		if (l->backing_filename != NULL)
			assert_string_equal(member_str(lo, "backing-filename"), l->backing_filename);
		else
			assert_false(json_object_object_get_ex(lo, "backing-filename", NULL));
		if (l->protocol != NULL)
			assert_string_equal(member_str(lo, "type"), merge_layer_type(l));
		else
			assert_false(json_object_object_get_ex(lo, "type", NULL));
		assert_int_equal(json_object_object_get_ex(lo, "size", &v), l->size >= 0);
		if (l->size >= 0)
			assert_int_equal(json_object_get_int64(v), l->size);
		assert_int_equal(json_object_object_get_ex(lo, "allocated", &v), l->allocated >= 0);
		if (l->allocated >= 0)
			assert_int_equal(json_object_get_int64(v), l->allocated);
	}
	/* no member is JSON null: absent values are left out */
	json_object_object_foreach(o, key, val)
	{
		if (val == NULL)
			fail_msg("to_json: \"%s\" is null", key);
	}
	json_object_put(o);
}

static void check_disk(const struct fixture *fx, const struct merge_chains *ch,
		       const struct want_disk *w, int with_graph)
{
	const struct merge_disk *d = merge_chains_find(ch, w->name);
	const char *top = w->top_node;
	int i;

	if (d == NULL)
		fail_msg("no disk named %s", w->name);
	assert_string_equal(d->name, w->name);
	assert_str_or_null(d->device, w->device, "device");
	assert_str_or_null(d->qdev, w->qdev, "qdev");
	assert_str_or_null(d->qdev_id, w->qdev_id, "qdev_id");
	assert_int_equal(d->nlayers, w->nlayers);
	if (top == NULL)
		top = fixture_node(fx, w->files[0], "qcow2");
	assert_string_equal(d->layers[0].node_name, top);
	for (i = 0; i < w->nlayers; i++) {
		const struct merge_layer *l = &d->layers[i];
		const char *node = fixture_node(fx, w->files[i], "qcow2");

		assert_string_equal(l->filename, w->files[i]);
		assert_string_equal(l->format, "qcow2");
		assert_int_equal(l->virtual_size, w->size);
		assert_string_equal(l->node_name, node);
		if (i > 0 || w->top_node == NULL)
			assert_memory_equal(l->node_name, "#block", 6); /* automatic name */
		assert_str_or_null(l->backing_filename, i + 1 < w->nlayers ? w->files[i + 1] : NULL,
				   "backing_filename");
		/* the top is the writable one */
		assert_int_equal(l->read_only, i > 0);
		/* the protocol node under it: only the graph tells */
		if (with_graph)
			assert_str_or_null(l->file_node,
					   i == 0 && w->file_node ? w->file_node
								  : fixture_node(fx, w->files[i], "file"),
					   "file_node");
		else
			assert_null(l->file_node);
		/* a file holds it, as long as QEMU has it; no statistics asked for */
		assert_str_or_null(l->protocol, "file", "protocol");
		assert_str_or_null(merge_layer_type(l), "file", "type");
		assert_int_equal(l->size, fixture_node_size(fx, w->files[i], "file"));
		assert_int_equal(l->allocated, -1);
		/* a layer by node name and by file name */
		assert_int_equal(merge_disk_find_layer(d, l->node_name), i);
		assert_int_equal(merge_disk_find_layer(d, l->filename), i);
	}
	assert_int_equal(merge_disk_find_layer(d, "nope"), -1);
	assert_int_equal(merge_disk_find_layer(d, ""), -1);
	assert_int_equal(merge_disk_find_layer(d, FIXDIR "c.0.qcow2"), -1);
	/* every way of naming the disk finds it */
	assert_ptr_equal(merge_chains_find(ch, top), d);
	if (w->qdev_id != NULL)
		assert_ptr_equal(merge_chains_find(ch, w->qdev_id), d);
	if (w->qdev != NULL)
		assert_ptr_equal(merge_chains_find(ch, w->qdev), d);
	if (w->device[0] != '\0')
		assert_ptr_equal(merge_chains_find(ch, w->device), d);
	/* a layer below the top, or a protocol node, names no disk */
	assert_null(merge_chains_find(ch, d->layers[1].node_name));
	assert_null(merge_chains_find(ch, fixture_node(fx, w->files[0], "file")));
	check_disk_json(d);
}

static void check_layout(const char *fixture, const struct want_disk *want, int nwant)
{
	struct fixture fx;
	int with_graph, i;

	fixture_load(&fx, fixture);
	for (with_graph = 1; with_graph >= 0; with_graph--) {
		struct merge_chains *ch = decode_ok(&fx, with_graph);

		assert_int_equal(ch->ndisks, nwant);
		for (i = 0; i < nwant; i++)
			check_disk(&fx, ch, &want[i], with_graph);
		assert_null(merge_chains_find(ch, "nope"));
		assert_null(merge_chains_find(ch, ""));
		merge_chains_free(ch);
	}
	json_object_put(fx.root);
}

/* ------------------------------------------------------------------ fixtures */

static void test_vm_blockdev(void **state)
{
	static const struct want_disk want[] = {
		{ "vda", "", "/machine/peripheral/vda/virtio-backend", "vda", "vda-top", "vda-file",
		  2, { FIXDIR "a.1.qcow2", FIXDIR "a.0.qcow2" }, 64 * MIB },
		{ "vdb", "", "/machine/peripheral/vdb/virtio-backend", "vdb", "vdb-top", "vdb-file",
		  4,
		  { FIXDIR "b.3.qcow2", FIXDIR "b.2.qcow2", FIXDIR "b.1.qcow2", FIXDIR "b.0.qcow2" },
		  128 * MIB },
	};

	(void)state;
	check_layout("vm-blockdev.json", want, 2);
}

static void test_vm_drive(void **state)
{
	static const struct want_disk want[] = {
		{ "virtio-disk0", "drive-virtio-disk0",
		  "/machine/peripheral/virtio-disk0/virtio-backend", "virtio-disk0", NULL, NULL, 2,
		  { FIXDIR "a.1.qcow2", FIXDIR "a.0.qcow2" }, 64 * MIB },
		{ "virtio-disk1", "drive-virtio-disk1",
		  "/machine/peripheral/virtio-disk1/virtio-backend", "virtio-disk1", NULL, NULL, 4,
		  { FIXDIR "b.3.qcow2", FIXDIR "b.2.qcow2", FIXDIR "b.1.qcow2", FIXDIR "b.0.qcow2" },
		  128 * MIB },
	};

	(void)state;
	check_layout("vm-drive.json", want, 2);
}

static void test_qsd(void **state)
{
	static const struct want_disk want[] = {
		{ "disk0", "", NULL, NULL, "disk0", "disk0-file", 2,
		  { FIXDIR "a.1.qcow2", FIXDIR "a.0.qcow2" }, 64 * MIB },
		{ "disk1", "", NULL, NULL, "disk1", "disk1-file", 4,
		  { FIXDIR "b.3.qcow2", FIXDIR "b.2.qcow2", FIXDIR "b.1.qcow2", FIXDIR "b.0.qcow2" },
		  128 * MIB },
	};

	(void)state;
	check_layout("qsd.json", want, 2);
}

/*
 * Jobs running (capture.sh --jobs): a job puts a filter node on the chain
 * it works on (mirror_top above an active commit's top, commit_top above
 * an intermediate commit's top, copy-on-read above a stream's top), and the
 * job's own backends show in the graph. Each disk is listed once, by its
 * device, with its layers only; the filters are recorded with the layer
 * they sit on (the graph tells); without the graph the chains are the
 * same.
 */
struct want_filters {
	const char *disk;
	int nlayers;
	const char *files[4];
	const char *driver; /* the one filter on the chain */
	int above;
};

static void check_filters(const struct fixture *fx, const struct merge_chains *ch,
			  const struct want_filters *w, int with_graph)
{
	const struct merge_disk *d = merge_chains_find(ch, w->disk);
	json_object *o, *fa, *fo;
	int i;

	if (d == NULL)
		fail_msg("no disk named %s", w->disk);
	assert_int_equal(d->nlayers, w->nlayers);
	for (i = 0; i < w->nlayers; i++) {
		assert_string_equal(d->layers[i].filename, w->files[i]);
		assert_string_equal(d->layers[i].format, "qcow2");
		assert_string_equal(d->layers[i].node_name, fixture_node(fx, w->files[i], "qcow2"));
	}
	if (!with_graph) {
		assert_int_equal(d->nfilters, 0);
		return;
	}
	assert_int_equal(d->nfilters, 1);
	assert_string_equal(d->filters[0].driver, w->driver);
	assert_int_equal(d->filters[0].above, w->above);
	assert_string_equal(d->filters[0].node_name,
			    fixture_node(fx, w->files[w->above], w->driver));
	o = merge_disk_to_json(d);
	assert_true(json_object_object_get_ex(o, "filters", &fa));
	assert_int_equal(json_object_array_length(fa), 1);
	fo = json_object_array_get_idx(fa, 0);
	assert_string_equal(member_str(fo, "driver"), w->driver);
	assert_string_equal(member_str(fo, "node-name"), d->filters[0].node_name);
	assert_string_equal(member_str(fo, "above"), d->layers[w->above].node_name);
	json_object_put(o);
	/* the filter's node name names no disk */
	assert_null(merge_chains_find(ch, d->filters[0].node_name));
}

static void test_vm_jobs(void **state)
{
	static const struct want_filters want[] = {
		{ "vda", 2, { FIXDIR "a.1.qcow2", FIXDIR "a.0.qcow2" }, "mirror_top", 0 },
		{ "vdb", 4,
		  { FIXDIR "b.3.qcow2", FIXDIR "b.2.qcow2", FIXDIR "b.1.qcow2", FIXDIR "b.0.qcow2" },
		  "commit_top", 1 },
		{ "vdc", 3, { FIXDIR "c.2.qcow2", FIXDIR "c.1.qcow2", FIXDIR "c.0.qcow2" },
		  "copy-on-read", 0 },
	};
	struct fixture fx;
	int with_graph, i;

	(void)state;
	fixture_load(&fx, "vm-jobs.json");
	for (with_graph = 1; with_graph >= 0; with_graph--) {
		struct merge_chains *ch = decode_ok(&fx, with_graph);
		json_object *none = json_object_new_array();

		/* as merge/query.c does: the jobs' own anonymous backends go */
		assert_int_equal(merge_chains_name_exports(ch, none), 0);
		json_object_put(none);
		assert_int_equal(ch->ndisks, 3);
		for (i = 0; i < 3; i++)
			check_filters(&fx, ch, &want[i], with_graph);
		merge_chains_free(ch);
	}
	json_object_put(fx.root);
}

/* The storage daemon during an active commit: the export serves the job's
 * mirror_top, and the disk is still named after the export. */
static void test_qsd_running(void **state)
{
	static const struct want_filters want = {
		"exp0", 2, { FIXDIR "a.1.qcow2", FIXDIR "a.0.qcow2" }, "mirror_top", 0
	};
	struct fixture fx;
	struct merge_chains *ch;
	json_object *exports;

	(void)state;
	fixture_load(&fx, "qsd-running.json");
	assert_true(json_object_object_get_ex(fx.root, "exports", &exports));
	ch = decode_ok(&fx, 1);
	assert_int_equal(merge_chains_name_exports(ch, exports), 0);
	assert_int_equal(ch->ndisks, 1);
	check_filters(&fx, ch, &want, 1);
	merge_chains_free(ch);
	json_object_put(fx.root);
}

/*
 * Layers on block devices (capture.sh --block): vda is a qcow2 on a 32 MiB
 * device over a raw base on a 64 MiB one, vdb one qcow2 on a 16 MiB device;
 * QEMU wrote 1 MiB through vda, so vda's top device has its image's end as
 * the highest offset written, and nothing else has been written since QEMU
 * opened it. The device names (/dev/loopN) come from the fixture.
 */
static void check_block_layer(const struct fixture *fx, const struct merge_layer *l,
			      const char *format, int64_t size, int64_t allocated)
{
	assert_string_equal(l->format, format);
	assert_string_equal(l->protocol, "host_device");
	assert_string_equal(merge_layer_type(l), "block");
	assert_int_equal(l->size, size);
	assert_int_equal(l->size, fixture_node_size(fx, l->filename, "host_device"));
	assert_int_equal(l->allocated, allocated);
}

static void test_vm_block(void **state)
{
	struct fixture fx;
	json_object *stats;
	int with_graph;

	(void)state;
	fixture_load(&fx, "vm-block.json");
	assert_true(json_object_object_get_ex(fx.root, "stats", &stats));
	for (with_graph = 1; with_graph >= 0; with_graph--) {
		struct merge_chains *ch = decode_ok(&fx, with_graph);
		struct lm_error err = { 0 };
		const struct merge_disk *a = merge_chains_find(ch, "vda");
		const struct merge_disk *b = merge_chains_find(ch, "vdb");

		assert_non_null(a);
		assert_non_null(b);
		assert_int_equal(a->nlayers, 2);
		assert_int_equal(b->nlayers, 1);
		/* not asked yet: unknown, and left out of the JSON */
		check_block_layer(&fx, &a->layers[0], "qcow2", 32 * MIB, -1);
		check_disk_json(a);
		assert_int_equal(merge_chains_add_stats(ch, stats, &err), 0);
		/* qemu-img check after the same steps: "Image end offset: 2424832" */
		check_block_layer(&fx, &a->layers[0], "qcow2", 32 * MIB, 2424832);
		check_block_layer(&fx, &a->layers[1], "raw", 64 * MIB, 0);
		check_block_layer(&fx, &b->layers[0], "qcow2", 16 * MIB, 0);
		check_disk_json(a);
		check_disk_json(b);
		merge_chains_free(ch);
	}
	json_object_put(fx.root);
}

/* Statistics that are not an array are refused; entries without a node name,
 * for another node or without numbers leave a layer's allocation unknown. */
static void test_stats_malformed(void **state)
{
	struct fixture fx;
	struct merge_chains *ch;
	struct lm_error err = { 0 };
	json_object *odd;

	(void)state;
	fixture_load(&fx, "vm-block.json");
	ch = decode_ok(&fx, 1);
	odd = json_object_new_object();
	assert_int_equal(merge_chains_add_stats(ch, odd, &err), -1);
	assert_int_equal(err.code, LM_ERR_PROTO);
	json_object_put(odd);
	odd = json_tokener_parse("[{\"stats\": {\"wr_highest_offset\": 5}}, 7,"
				 " {\"node-name\": \"other\", \"stats\": {\"wr_highest_offset\": 5}},"
				 " {\"node-name\": \"vdb-top\", \"parent\": {\"stats\": {}}},"
				 " {\"node-name\": \"vda-top\", \"stats\": {\"wr_highest_offset\": 9}}]");
	assert_non_null(odd);
	assert_int_equal(merge_chains_add_stats(ch, odd, &err), 0);
	assert_int_equal(merge_chains_find(ch, "vdb")->layers[0].allocated, -1);
	assert_int_equal(merge_chains_find(ch, "vda")->layers[1].allocated, -1);
	/* no protocol child reported: the node's own */
	assert_int_equal(merge_chains_find(ch, "vda")->layers[0].allocated, 9);
	json_object_put(odd);
	merge_chains_free(ch);
	json_object_put(fx.root);
}

/* The drive order of query-block is the disk order. */
static void test_disk_order(void **state)
{
	struct fixture fx;
	struct merge_chains *ch;

	(void)state;
	fixture_load(&fx, "vm-drive.json");
	ch = decode_ok(&fx, 1);
	assert_int_equal(ch->ndisks, 2);
	assert_string_equal(ch->disks[0].name, "virtio-disk0");
	assert_string_equal(ch->disks[1].name, "virtio-disk1");
	merge_chains_free(ch);
	json_object_put(fx.root);
}

/* ---------------------------------------------------------- malformed input */

/* A two-layer disk: top over base, plus top's protocol node. */
static const char good_block[] =
	"[{\"device\": \"d0\", \"qdev\": \"/machine/peripheral/vd0/virtio-backend\","
	" \"inserted\": {\"node-name\": \"top\"}}]";
static const char good_nodes[] =
	"[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"file\": \"/i/top.qcow2\","
	"  \"backing_file\": \"/i/base.qcow2\", \"backing_file_depth\": 0, \"ro\": false,"
	"  \"image\": {\"filename\": \"/i/top.qcow2\", \"format\": \"qcow2\","
	"             \"virtual-size\": 1048576, \"backing-filename\": \"base.qcow2\"}},"
	" {\"node-name\": \"top-file\", \"drv\": \"file\", \"file\": \"/i/top.qcow2\","
	"  \"image\": {\"filename\": \"/i/top.qcow2\", \"format\": \"file\"}},"
	" {\"node-name\": \"base\", \"drv\": \"qcow2\", \"file\": \"/i/base.qcow2\", \"ro\": true,"
	"  \"image\": {\"filename\": \"/i/base.qcow2\", \"format\": \"qcow2\","
	"             \"virtual-size\": 1048576}}]";
static const char good_graph[] =
	"{\"nodes\": [{\"id\": 1, \"type\": \"block-backend\", \"name\": \"d0\"},"
	"            {\"id\": 2, \"type\": \"block-driver\", \"name\": \"top\"},"
	"            {\"id\": 3, \"type\": \"block-driver\", \"name\": \"base\"},"
	"            {\"id\": 4, \"type\": \"block-driver\", \"name\": \"top-file\"}],"
	" \"edges\": [{\"parent\": 1, \"child\": 2, \"name\": \"root\"},"
	"            {\"parent\": 2, \"child\": 4, \"name\": \"file\"},"
	"            {\"parent\": 2, \"child\": 3, \"name\": \"backing\"}]}";

static json_object *parse_or_null(const char *text)
{
	json_object *o;

	if (text == NULL)
		return NULL;
	o = json_tokener_parse(text);
	if (o == NULL && strcmp(text, "null") != 0)
		fail_msg("bad test JSON: %s", text);
	return o;
}

/* Decode the three texts ("null"/NULL: a NULL pointer); returns decode's result. */
static int decode_text(const char *block, const char *nodes, const char *graph,
		       struct merge_chains **out, struct lm_error *err)
{
	json_object *b = parse_or_null(block), *n = parse_or_null(nodes), *g = parse_or_null(graph);
	int r;

	*out = (struct merge_chains *)1;
	r = merge_chains_decode(b, n, g, out, err);
	json_object_put(b);
	json_object_put(n);
	json_object_put(g);
	return r;
}

static void assert_decode_fails(const char *block, const char *nodes, const char *graph,
				const char *msg_part, const char *why)
{
	struct merge_chains *ch;
	struct lm_error err = { 0 };

	if (decode_text(block, nodes, graph, &ch, &err) != -1)
		fail_msg("decoded, expected a failure: %s", why);
	assert_null(ch);
	if (err.code != LM_ERR_PROTO)
		fail_msg("%s: code %s (%s), expected protocol", why, lm_error_code_name(err.code),
			 err.msg);
	if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
		fail_msg("%s: message \"%s\" lacks \"%s\"", why, err.msg, msg_part);
}

static void test_synthetic_good(void **state)
{
	struct merge_chains *ch;
	struct lm_error err = { 0 };
	int with_graph;

	(void)state;
	for (with_graph = 0; with_graph < 2; with_graph++) {
		struct merge_disk *d;

		assert_int_equal(decode_text(good_block, good_nodes, with_graph ? good_graph : NULL,
					     &ch, &err),
				 0);
		assert_int_equal(ch->ndisks, 1);
		d = merge_chains_find(ch, "vd0");
		assert_non_null(d);
		assert_ptr_equal(merge_chains_find(ch, "d0"), d);
		assert_ptr_equal(merge_chains_find(ch, "top"), d);
		assert_int_equal(d->nlayers, 2);
		assert_string_equal(d->layers[0].node_name, "top");
		assert_string_equal(d->layers[1].node_name, "base");
		/* the header's own (relative) backing name */
		assert_string_equal(d->layers[0].backing_filename, "base.qcow2");
		assert_null(d->layers[1].backing_filename);
		assert_int_equal(merge_disk_find_layer(d, "/i/base.qcow2"), 1);
		if (with_graph)
			assert_string_equal(d->layers[0].file_node, "top-file");
		merge_chains_free(ch);
	}
	merge_chains_free(NULL);
}

static void test_malformed_types(void **state)
{
	(void)state;
	assert_decode_fails("{}", good_nodes, NULL, "not an array", "query-block an object");
	assert_decode_fails(NULL, good_nodes, NULL, "not an array", "query-block missing");
	assert_decode_fails("\"x\"", good_nodes, good_graph, NULL, "query-block a string");
	assert_decode_fails(good_block, "{}", NULL, "not an array", "named nodes an object");
	assert_decode_fails(good_block, NULL, good_graph, NULL, "named nodes missing");
	assert_decode_fails(good_block, "5", NULL, NULL, "named nodes a number");
	/* a query-block entry whose node-name is missing or no string */
	assert_decode_fails("[{\"device\": \"d0\", \"inserted\": {}}]", good_nodes, NULL,
			    "without node-name", "inserted without node-name");
	assert_decode_fails("[{\"device\": \"d0\", \"inserted\": {\"node-name\": 5}}]",
			    good_nodes, NULL, "without node-name", "node-name a number");
	/* images of the wrong shape */
	assert_decode_fails(good_block,
			    "[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"image\": \"x\"}]",
			    NULL, "not among the named nodes", "image a string");
	assert_decode_fails(good_block,
			    "[{\"node-name\": \"top\", \"drv\": \"qcow2\","
			    " \"image\": {\"filename\": \"/i/top.qcow2\", \"format\": 7}}]",
			    NULL, "lacks filename or format", "format a number");
	assert_decode_fails(good_block,
			    "[{\"node-name\": \"top\", \"drv\": \"qcow2\","
			    " \"image\": {\"format\": \"qcow2\"}}]",
			    NULL, "lacks filename or format", "no filename");
	/* a graph of the wrong shape */
	assert_decode_fails(good_block, good_nodes, "{\"nodes\": 1, \"edges\": []}",
			    "block graph", "graph nodes a number");
	assert_decode_fails(good_block, good_nodes, "{\"nodes\": []}", "block graph",
			    "graph without edges");
	assert_decode_fails(good_block, good_nodes,
			    "{\"nodes\": [{\"type\": \"block-driver\", \"name\": \"top\"}],"
			    " \"edges\": []}",
			    "block graph node malformed", "graph node without id");
	assert_decode_fails(good_block, good_nodes,
			    "{\"nodes\": [null], \"edges\": []}", "block graph node malformed",
			    "graph node null");
}

static void test_malformed_elements_skipped(void **state)
{
	/* entries that are no drive with a medium are no disks, not errors */
	struct merge_chains *ch;
	struct lm_error err = { 0 };

	(void)state;
	assert_int_equal(decode_text("[null, 1, \"x\", {}, {\"device\": \"cd0\"},"
				     " {\"device\": \"cd1\", \"inserted\": \"x\"}]",
				     "[null, 2]", NULL, &ch, &err),
			 0);
	assert_int_equal(ch->ndisks, 0);
	merge_chains_free(ch);
	/* edges that name no known node are skipped */
	assert_int_equal(decode_text(good_block, good_nodes,
				     "{\"nodes\": [{\"id\": 1, \"type\": \"block-backend\", \"name\": \"d0\"},"
				     " {\"id\": 2, \"type\": \"block-driver\", \"name\": \"top\"},"
				     " {\"id\": 3, \"type\": \"block-driver\", \"name\": \"base\"},"
				     " {\"id\": 9, \"type\": \"block-job\", \"name\": \"job0\"}],"
				     " \"edges\": [null, {\"parent\": 9, \"child\": 2, \"name\": \"main node\"},"
				     " {\"parent\": 2, \"child\": 77, \"name\": \"file\"},"
				     " {\"parent\": \"2\", \"child\": 3, \"name\": \"backing\"},"
				     " {\"parent\": 2, \"child\": 3, \"name\": \"backing\"}]}",
				     &ch, &err),
			 0);
	assert_int_equal(ch->ndisks, 1);
	assert_int_equal(ch->disks[0].nlayers, 2);
	assert_null(ch->disks[0].layers[0].file_node);
	merge_chains_free(ch);
}

static void test_missing_node(void **state)
{
	static const char no_base[] =
		"[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"file\": \"/i/top.qcow2\","
		"  \"backing_file\": \"/i/base.qcow2\","
		"  \"image\": {\"filename\": \"/i/top.qcow2\", \"format\": \"qcow2\"}}]";
	static const char two_bases[] =
		"[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"file\": \"/i/top.qcow2\","
		"  \"backing_file\": \"/i/base.qcow2\","
		"  \"image\": {\"filename\": \"/i/top.qcow2\", \"format\": \"qcow2\"}},"
		" {\"node-name\": \"b1\", \"drv\": \"qcow2\", \"file\": \"/i/base.qcow2\","
		"  \"image\": {\"filename\": \"/i/base.qcow2\", \"format\": \"qcow2\"}},"
		" {\"node-name\": \"b2\", \"drv\": \"qcow2\", \"file\": \"/i/base.qcow2\","
		"  \"image\": {\"filename\": \"/i/base.qcow2\", \"format\": \"qcow2\"}}]";

	(void)state;
	/* the top is not among the named nodes */
	assert_decode_fails("[{\"device\": \"d0\", \"inserted\": {\"node-name\": \"ghost\"}}]",
			    good_nodes, NULL, "'ghost' is not among the named nodes", "ghost top");
	assert_decode_fails("[{\"device\": \"d0\", \"inserted\": {\"node-name\": \"ghost\"}}]",
			    good_nodes, good_graph, "'ghost' is not among", "ghost top, graph");
	/* nobody has the backing file open */
	assert_decode_fails(good_block, no_base, NULL, "backing file '/i/base.qcow2'",
			    "no node for the backing file");
	/* two nodes have it open: no guessing */
	assert_decode_fails(good_block, two_bases, NULL, "cannot tell", "two nodes for the base");
	/* the graph has no backing edge under a layer that has a backing file */
	assert_decode_fails(good_block, good_nodes,
			    "{\"nodes\": [{\"id\": 1, \"type\": \"block-backend\", \"name\": \"d0\"},"
			    " {\"id\": 2, \"type\": \"block-driver\", \"name\": \"top\"}],"
			    " \"edges\": [{\"parent\": 1, \"child\": 2, \"name\": \"root\"}]}",
			    "cannot tell", "graph without the backing edge");
	/* the graph's backing child is not a named node */
	assert_decode_fails(good_block, good_nodes,
			    "{\"nodes\": [{\"id\": 1, \"type\": \"block-backend\", \"name\": \"d0\"},"
			    " {\"id\": 2, \"type\": \"block-driver\", \"name\": \"top\"},"
			    " {\"id\": 3, \"type\": \"block-driver\", \"name\": \"elsewhere\"}],"
			    " \"edges\": [{\"parent\": 2, \"child\": 3, \"name\": \"backing\"}]}",
			    "'elsewhere' is not among", "graph backing child unnamed");
}

static void test_cycles(void **state)
{
	/* two layers that are each other's backing file */
	static const char loop_nodes[] =
		"[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"file\": \"/i/a\","
		"  \"backing_file\": \"/i/b\", \"image\": {\"filename\": \"/i/a\", \"format\": \"qcow2\"}},"
		" {\"node-name\": \"b\", \"drv\": \"qcow2\", \"file\": \"/i/b\","
		"  \"backing_file\": \"/i/a\", \"image\": {\"filename\": \"/i/b\", \"format\": \"qcow2\"}}]";
	static const char loop_graph[] =
		"{\"nodes\": [{\"id\": 1, \"type\": \"block-driver\", \"name\": \"top\"},"
		"            {\"id\": 2, \"type\": \"block-driver\", \"name\": \"b\"}],"
		" \"edges\": [{\"parent\": 1, \"child\": 2, \"name\": \"backing\"},"
		"            {\"parent\": 2, \"child\": 1, \"name\": \"backing\"}]}";
	/* one layer that is its own backing file */
	static const char self_nodes[] =
		"[{\"node-name\": \"top\", \"drv\": \"qcow2\", \"file\": \"/i/a\","
		"  \"backing_file\": \"/i/a\", \"image\": {\"filename\": \"/i/a\", \"format\": \"qcow2\"}}]";
	static const char self_graph[] =
		"{\"nodes\": [{\"id\": 1, \"type\": \"block-driver\", \"name\": \"top\"}],"
		" \"edges\": [{\"parent\": 1, \"child\": 1, \"name\": \"backing\"}]}";

	(void)state;
	assert_decode_fails(good_block, loop_nodes, loop_graph, "too deep", "graph cycle");
	assert_decode_fails(good_block, loop_nodes, NULL, "too deep", "file name cycle");
	assert_decode_fails(good_block, self_nodes, self_graph, "too deep", "graph self loop");
	assert_decode_fails(good_block, self_nodes, NULL, "too deep", "file name self loop");
}

/*
 * A straight chain of n layers, l0 (top) ... l{n-1} (base): query-block,
 * named nodes and graph, built as objects.
 */
static void long_chain(int n, json_object **block, json_object **nodes, json_object **graph)
{
	json_object *gnodes = json_object_new_array(), *edges = json_object_new_array();
	json_object *b = json_object_new_object(), *ins = json_object_new_object();
	int i;

	*nodes = json_object_new_array();
	*graph = json_object_new_object();
	*block = json_object_new_array();
	json_object_object_add(ins, "node-name", json_object_new_string("l0"));
	json_object_object_add(b, "device", json_object_new_string("long"));
	json_object_object_add(b, "inserted", ins);
	json_object_array_add(*block, b);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_new_object(), *img = json_object_new_object();
		json_object *g = json_object_new_object(), *e;
		char name[32], file[32];

		snprintf(name, sizeof(name), "l%d", i);
		snprintf(file, sizeof(file), "/i/l%d.qcow2", i);
		json_object_object_add(img, "filename", json_object_new_string(file));
		json_object_object_add(img, "format", json_object_new_string("qcow2"));
		json_object_object_add(img, "virtual-size", json_object_new_int64(MIB));
		json_object_object_add(o, "node-name", json_object_new_string(name));
		json_object_object_add(o, "drv", json_object_new_string("qcow2"));
		json_object_object_add(o, "file", json_object_new_string(file));
		json_object_object_add(o, "backing_file_depth", json_object_new_int(0));
		if (i + 1 < n) {
			snprintf(file, sizeof(file), "/i/l%d.qcow2", i + 1);
			json_object_object_add(o, "backing_file", json_object_new_string(file));
			e = json_object_new_object();
			json_object_object_add(e, "parent", json_object_new_int(i));
			json_object_object_add(e, "child", json_object_new_int(i + 1));
			json_object_object_add(e, "name", json_object_new_string("backing"));
			json_object_array_add(edges, e);
		}
		json_object_object_add(o, "image", img);
		json_object_array_add(*nodes, o);
		json_object_object_add(g, "id", json_object_new_int(i));
		json_object_object_add(g, "type", json_object_new_string("block-driver"));
		json_object_object_add(g, "name", json_object_new_string(name));
		json_object_array_add(gnodes, g);
	}
	json_object_object_add(*graph, "nodes", gnodes);
	json_object_object_add(*graph, "edges", edges);
}

static void test_layer_cap(void **state)
{
	int with_graph;

	(void)state;
	for (with_graph = 0; with_graph < 2; with_graph++) {
		json_object *block, *nodes, *graph;
		struct merge_chains *ch = NULL;
		struct lm_error err = { 0 };

		/* exactly at the cap: decoded, every layer there */
		long_chain(LAYER_CAP, &block, &nodes, &graph);
		if (merge_chains_decode(block, nodes, with_graph ? graph : NULL, &ch, &err) < 0)
			fail_msg("%d layers: %s", LAYER_CAP, err.msg);
		assert_int_equal(ch->ndisks, 1);
		assert_int_equal(ch->disks[0].nlayers, LAYER_CAP);
		assert_string_equal(ch->disks[0].layers[LAYER_CAP - 1].node_name, "l4095");
		assert_int_equal(merge_disk_find_layer(&ch->disks[0], "/i/l4095.qcow2"),
				 LAYER_CAP - 1);
		merge_chains_free(ch);
		json_object_put(block);
		json_object_put(nodes);
		json_object_put(graph);

		/* one more: refused */
		long_chain(LAYER_CAP + 1, &block, &nodes, &graph);
		assert_int_equal(merge_chains_decode(block, nodes, with_graph ? graph : NULL, &ch,
						     &err),
				 -1);
		assert_null(ch);
		assert_int_equal(err.code, LM_ERR_PROTO);
		assert_non_null(strstr(err.msg, "too deep"));
		json_object_put(block);
		json_object_put(nodes);
		json_object_put(graph);
	}
}

/* The storage daemon without a graph: tops are the format nodes nobody backs onto. */
static void test_qsd_tops_without_graph(void **state)
{
	struct fixture fx;
	struct merge_chains *ch;
	int i;

	(void)state;
	fixture_load(&fx, "qsd.json");
	assert_int_equal(json_object_array_length(fx.block), 0);
	ch = decode_ok(&fx, 0);
	assert_int_equal(ch->ndisks, 2);
	for (i = 0; i < ch->ndisks; i++) {
		assert_string_equal(ch->disks[i].device, "");
		assert_null(ch->disks[i].qdev);
		assert_null(ch->disks[i].qdev_id);
		assert_string_equal(ch->disks[i].name, ch->disks[i].layers[0].node_name);
	}
	merge_chains_free(ch);
	json_object_put(fx.root);
}

/* Removing one backing edge from a real graph makes the chain unreadable. */
static void test_real_graph_edge_missing(void **state)
{
	struct fixture fx;
	json_object *edges;
	const char *mid = NULL;
	size_t i, n;
	int64_t mid_id = -1;

	(void)state;
	fixture_load(&fx, "vm-blockdev.json");
	mid = fixture_node(&fx, FIXDIR "b.2.qcow2", "qcow2");
	assert_true(json_object_object_get_ex(fx.graph, "nodes", &edges));
	n = json_object_array_length(edges);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(edges, i);

		if (strcmp(member_str(o, "name"), mid) == 0)
			mid_id = json_object_get_int64(json_object_object_get(o, "id"));
	}
	assert_true(mid_id >= 0);
	assert_true(json_object_object_get_ex(fx.graph, "edges", &edges));
	n = json_object_array_length(edges);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(edges, i);

		if (json_object_get_int64(json_object_object_get(o, "parent")) == mid_id &&
		    strcmp(member_str(o, "name"), "backing") == 0)
			break;
	}
	assert_true(i < n);
	assert_int_equal(json_object_array_del_idx(edges, i, 1), 0);
	{
		struct merge_chains *ch = (struct merge_chains *)1;
		struct lm_error err = { 0 };

		assert_int_equal(merge_chains_decode(fx.block, fx.nodes, fx.graph, &ch, &err), -1);
		assert_null(ch);
		assert_int_equal(err.code, LM_ERR_PROTO);
		assert_non_null(strstr(err.msg, FIXDIR "b.1.qcow2"));
	}
	json_object_put(fx.root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vm_blockdev),
		cmocka_unit_test(test_vm_drive),
		cmocka_unit_test(test_qsd),
		cmocka_unit_test(test_vm_block),
		cmocka_unit_test(test_stats_malformed),
		cmocka_unit_test(test_disk_order),
		cmocka_unit_test(test_qsd_tops_without_graph),
		cmocka_unit_test(test_synthetic_good),
		cmocka_unit_test(test_malformed_types),
		cmocka_unit_test(test_malformed_elements_skipped),
		cmocka_unit_test(test_missing_node),
		cmocka_unit_test(test_cycles),
		cmocka_unit_test(test_layer_cap),
		cmocka_unit_test(test_vm_jobs),
		cmocka_unit_test(test_qsd_running),
		cmocka_unit_test(test_real_graph_edge_missing),
	};

	return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}

/*
 * tests/test-check: merge_check on gathered inputs, no monitor and no host:
 * chains built here, image headers made byte by byte as qcow2 writes them,
 * journals as the engine writes them (read back through
 * merge_journal_parse), the engine's view, directory entries and QEMU's
 * job list. Each finding code once from the situation that makes it, once
 * not from the situation that must not; a sound VM gives none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../merge/check.h"
#include "../merge/journal.h"

#define IMG "/img/"

/* ------------------------------------------------------------------ helpers */

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

#define HEAD_LEN 4096

struct fixture {
	struct merge_chains ch;
	struct merge_disk disks[2];
	struct merge_layer layers[2][3];
	struct merge_check_file files[8];
	unsigned char heads[8][HEAD_LEN];
	int nfiles;
	struct merge_check_file dir[4];
	unsigned char dir_heads[4][HEAD_LEN];
	int ndir;
	json_object *journal, *expect, *jobs;
	int finished;
};

/* A qcow2 v3 header into buf: backing (NULL: none) with format qcow2,
 * incompatible bits (1 dirty, 2 corrupt). */
static void qcow2_head(unsigned char *buf, const char *backing, uint64_t incompat)
{
	memset(buf, 0, HEAD_LEN);
	put32(buf, 0x514649fb);
	put32(buf + 4, 3);
	put32(buf + 20, 16);                /* cluster bits */
	put64(buf + 24, (uint64_t)64 << 20); /* virtual size */
	put64(buf + 72, incompat);
	put32(buf + 96, 4);  /* refcount order */
	put32(buf + 100, 104); /* header length */
	/* extension: backing format "qcow2", then the end */
	put32(buf + 104, 0xe2792aca);
	put32(buf + 108, 5);
	memcpy(buf + 112, "qcow2", 5);
	if (backing != NULL) {
		put64(buf + 8, 512);
		put32(buf + 16, (uint32_t)strlen(backing));
		memcpy(buf + 512, backing, strlen(backing));
	}
}

static void layer(struct merge_layer *l, const char *file, const char *fmt, int ro)
{
	memset(l, 0, sizeof(*l));
	l->filename = (char *)file;
	l->format = (char *)fmt;
	l->node_name = (char *)"n";
	l->protocol = (char *)"file";
	l->read_only = ro;
	l->size = l->allocated = -1;
}

/* The file the host has for path: kind, and a qcow2 header naming backing. */
static struct merge_check_file *host_file(struct fixture *f, const char *path,
					  enum host_file_kind kind, const char *backing,
					  uint64_t incompat)
{
	int i = f->nfiles++;

	qcow2_head(f->heads[i], backing, incompat);
	f->files[i].path = path;
	f->files[i].kind = kind;
	f->files[i].head = f->heads[i];
	f->files[i].len = kind == HOST_FILE_REGULAR || kind == HOST_FILE_BLOCK ? HEAD_LEN : 0;
	return &f->files[i];
}

/*
 * A sound VM: vda = a.2 > a.1 > a.0 (qcow2), vdb = b.1 (qcow2) > b.0 (raw);
 * every header names the layer below; the journal's last operation, a
 * finished commit of vda, left the chain it has now.
 */
static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *text =
		"{\"op\":1,\"step\":\"intent\",\"verb\":\"commit\",\"disks\":[{\"disk\":\"vda\","
		"\"before\":[\"" IMG "a.3\",\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
		"\"expect\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"]}]}\n"
		"{\"op\":1,\"step\":\"start\"}\n"
		"{\"op\":1,\"step\":\"end\",\"outcome\":0}\n";

	layer(&f->layers[0][0], IMG "a.2", "qcow2", 0);
	layer(&f->layers[0][1], IMG "a.1", "qcow2", 1);
	layer(&f->layers[0][2], IMG "a.0", "qcow2", 1);
	layer(&f->layers[1][0], IMG "b.1", "qcow2", 0);
	layer(&f->layers[1][1], IMG "b.0", "raw", 1);
	f->disks[0] = (struct merge_disk){ .name = (char *)"vda", .device = (char *)"",
					   .nlayers = 3, .layers = f->layers[0] };
	f->disks[1] = (struct merge_disk){ .name = (char *)"vdb", .device = (char *)"",
					   .nlayers = 2, .layers = f->layers[1] };
	f->ch.ndisks = 2;
	f->ch.disks = f->disks;
	host_file(f, IMG "a.2", HOST_FILE_REGULAR, IMG "a.1", 0);
	host_file(f, IMG "a.1", HOST_FILE_REGULAR, "a.0", 0); /* relative, as qemu-img writes */
	host_file(f, IMG "a.0", HOST_FILE_REGULAR, NULL, 0);
	host_file(f, IMG "b.1", HOST_FILE_BLOCK, IMG "b.0", 1); /* dirty: QEMU writes it */
	host_file(f, IMG "b.0", HOST_FILE_REGULAR, NULL, 0);
	put32(f->heads[3] + 108, 3); /* b.1 names its backing's format: raw */
	memcpy(f->heads[3] + 112, "raw\0\0", 5);
	memset(f->heads[4], 0, HEAD_LEN); /* raw */
	merge_journal_parse(text, strlen(text), &f->journal, &f->finished);
	assert_non_null(f->journal);
	assert_true(f->finished);
	f->jobs = json_tokener_parse("[{\"id\":\"livemerge-commit-vda\",\"type\":\"commit\","
				     "\"status\":\"concluded\"}]");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	json_object_put(f->journal);
	json_object_put(f->expect);
	json_object_put(f->jobs);
	free(f);
	return 0;
}

static void dir_file(struct fixture *f, const char *path, enum host_file_kind kind, int qcow2)
{
	int i = f->ndir++;

	if (qcow2)
		qcow2_head(f->dir_heads[i], IMG "a.0", 0);
	f->dir[i].path = path;
	f->dir[i].kind = kind;
	f->dir[i].head = f->dir_heads[i];
	f->dir[i].len = kind == HOST_FILE_SYMLINK ? 0 : HEAD_LEN;
}

static json_object *run(struct fixture *f, const char *const *disks, int ndisks)
{
	struct merge_check_input in = {
		.live = &f->ch, .disks = disks, .ndisks = ndisks,
		.files = f->files, .nfiles = f->nfiles,
		.journal = f->journal, .journal_finished = f->finished,
		.expect = f->expect,
		.dir_files = f->dir, .ndir_files = f->ndir,
		.jobs = f->jobs,
	};
	json_object *out = merge_check(&in);

	assert_non_null(out);
	return out;
}

static const char *field(json_object *finding, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(finding, k, &v) || v == NULL)
		return NULL;
	return json_object_get_string(v);
}

/* The only finding of out must be code on disk and layer (NULL: none); it is returned. */
static json_object *only(json_object *out, const char *code, const char *disk, const char *layer)
{
	json_object *x;

	if (json_object_array_length(out) != 1)
		fail_msg("want one finding %s, got %s", code, json_object_to_json_string(out));
	x = json_object_array_get_idx(out, 0);
	assert_string_equal(field(x, "type"), "finding");
	assert_string_equal(field(x, "code"), code);
	if (disk == NULL)
		assert_null(field(x, "disk"));
	else
		assert_string_equal(field(x, "disk"), disk);
	if (layer == NULL)
		assert_null(field(x, "layer"));
	else
		assert_string_equal(field(x, "layer"), layer);
	return x;
}

static void none(json_object *out)
{
	if (json_object_array_length(out) != 0)
		fail_msg("want no finding, got %s", json_object_to_json_string(out));
	json_object_put(out);
}

/* ------------------------------------------------------------------ tests */

static void test_sound(void **state)
{
	struct fixture *f = *state;
	char why[200];

	assert_int_equal(merge_check_expect_parse(
				 "{\"vda\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
				 "\"vdb\":[\"" IMG "b.1\",\"" IMG "/b.0\"]}\n",
				 strlen("{\"vda\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
					"\"vdb\":[\"" IMG "b.1\",\"" IMG "/b.0\"]}\n"),
				 &f->expect, why, sizeof(why)),
			 0);
	dir_file(f, IMG "a.0", HOST_FILE_REGULAR, 1);
	dir_file(f, IMG "b.1", HOST_FILE_BLOCK, 1);
	dir_file(f, IMG "notes.txt", HOST_FILE_REGULAR, 0); /* no image */
	dir_file(f, IMG "link", HOST_FILE_SYMLINK, 0);      /* to no device */
	none(run(f, NULL, 0));
}

static void test_backing_mismatch(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	qcow2_head(f->heads[0], IMG "other", 0); /* a.2's header rewritten */
	out = run(f, NULL, 0);
	x = only(out, "backing-mismatch", "vda", IMG "a.2");
	assert_string_equal(field(x, "live"), IMG "a.1 (qcow2)");
	assert_string_equal(field(x, "header"), IMG "other (qcow2)");
	json_object_put(out);

	/* the base's header names a backing the live graph does not have */
	qcow2_head(f->heads[0], IMG "a.1", 0);
	qcow2_head(f->heads[2], IMG "gone", 0);
	out = run(f, NULL, 0);
	x = only(out, "backing-mismatch", "vda", IMG "a.0");
	assert_string_equal(field(x, "live"), "no backing (the base)");
	json_object_put(out);

	/* one that names none above a layer */
	qcow2_head(f->heads[2], NULL, 0);
	qcow2_head(f->heads[1], NULL, 0);
	out = run(f, NULL, 0);
	x = only(out, "backing-mismatch", "vda", IMG "a.1");
	assert_string_equal(field(x, "header"), "no backing file");
	json_object_put(out);
}

static void test_missing(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	f->files[4].kind = HOST_FILE_NONE;
	f->files[4].len = 0;
	out = run(f, NULL, 0);
	x = only(out, "missing", "vdb", IMG "b.0");
	assert_string_equal(field(x, "host"), "no such file or device");
	json_object_put(out);
	/* a layer QEMU reaches otherwise (no file here to look at): not held against the host */
	f->nfiles = 4;
	none(run(f, NULL, 0));
}

static void test_dirty_corrupt(void **state)
{
	struct fixture *f = *state;
	json_object *out;

	/* dirty on a layer QEMU only reads: never repaired */
	qcow2_head(f->heads[1], "a.0", 1);
	out = run(f, NULL, 0);
	only(out, "dirty", "vda", IMG "a.1");
	json_object_put(out);
	/* dirty on the layer QEMU writes (lazy refcounts while it runs): no finding */
	qcow2_head(f->heads[1], "a.0", 0);
	qcow2_head(f->heads[0], IMG "a.1", 1);
	none(run(f, NULL, 0));

	qcow2_head(f->heads[2], NULL, 2);
	out = run(f, NULL, 0);
	only(out, "corrupt", "vda", IMG "a.0");
	assert_string_equal(field(json_object_array_get_idx(out, 0), "header"), "corrupt bit set");
	json_object_put(out);

	/* a qcow2 layer whose header is gone or broken */
	memset(f->heads[2], 0, HEAD_LEN);
	out = run(f, NULL, 0);
	only(out, "corrupt", "vda", IMG "a.0");
	assert_string_equal(field(json_object_array_get_idx(out, 0), "header"), "no qcow2 header");
	json_object_put(out);
	qcow2_head(f->heads[2], NULL, 0);
	put32(f->heads[2] + 4, 9);
	out = run(f, NULL, 0);
	only(out, "corrupt", "vda", IMG "a.0");
	json_object_put(out);
}

static void journal(struct fixture *f, const char *text)
{
	json_object_put(f->journal);
	merge_journal_parse(text, strlen(text), &f->journal, &f->finished);
	assert_non_null(f->journal);
}

static void test_unfinished(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	journal(f, "{\"op\":2,\"step\":\"intent\",\"verb\":\"stream\",\"disks\":[{\"disk\":\"vdb\","
		   "\"before\":[\"" IMG "b.1\",\"" IMG "b.0\"],\"expect\":[\"" IMG "b.1\"]}]}\n"
		   "{\"op\":2,\"step\":\"start\"}\n");
	assert_false(f->finished);
	out = run(f, NULL, 0);
	x = only(out, "unfinished-operation", "vdb", NULL);
	assert_string_equal(field(x, "journal"), "stream begun, not finished; its last step: start");
	assert_string_equal(json_object_to_json_string_ext(json_object_object_get(x, "live"),
							   JSON_C_TO_STRING_PLAIN |
								   JSON_C_TO_STRING_NOSLASHESCAPE),
			    "[\"" IMG "b.1\",\"" IMG "b.0\"]");
	json_object_put(out);
	/* the disk not asked for: nothing about it */
	{
		const char *disks[] = { "vda" };

		none(run(f, disks, 1));
	}
	/* an unfinished operation of no disk (a volume's) */
	journal(f, "{\"op\":3,\"step\":\"intent\",\"verb\":\"extend\",\"path\":\"/dev/vg/x\"}\n");
	out = run(f, NULL, 0);
	only(out, "unfinished-operation", NULL, NULL);
	json_object_put(out);
}

static void test_journal_differs(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	/* done: the chain expected is the one left */
	f->layers[0][0].filename = (char *)IMG "a.9";
	f->files[0].path = IMG "a.9";
	out = run(f, NULL, 0);
	x = only(out, "journal-differs", "vda", NULL);
	assert_string_equal(field(x, "journal-op"), "commit, done");
	assert_int_equal(json_object_array_length(json_object_object_get(x, "journal")), 3);
	json_object_put(out);
	f->layers[0][0].filename = (char *)IMG "a.2";
	f->files[0].path = IMG "a.2";

	/* rolled back: the chain as before is the one left */
	journal(f, "{\"op\":1,\"step\":\"intent\",\"verb\":\"commit\",\"disks\":[{\"disk\":\"vda\","
		   "\"before\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
		   "\"expect\":[\"" IMG "a.2\",\"" IMG "a.0\"]}]}\n"
		   "{\"op\":1,\"step\":\"end\",\"outcome\":1}\n");
	none(run(f, NULL, 0));
	journal(f, "{\"op\":1,\"step\":\"intent\",\"verb\":\"commit\",\"disks\":[{\"disk\":\"vda\","
		   "\"before\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
		   "\"expect\":[\"" IMG "a.2\",\"" IMG "a.0\"]}]}\n"
		   "{\"op\":1,\"step\":\"end\",\"outcome\":0,\"recovered\":\"rolled-back\"}\n");
	none(run(f, NULL, 0));
	journal(f, "{\"op\":1,\"step\":\"intent\",\"verb\":\"commit\",\"disks\":[{\"disk\":\"vda\","
		   "\"before\":[\"" IMG "a.2\",\"" IMG "a.1\",\"" IMG "a.0\"],"
		   "\"expect\":[\"" IMG "a.2\",\"" IMG "a.0\"]}]}\n"
		   "{\"op\":1,\"step\":\"end\",\"outcome\":0,\"recovered\":\"finished\"}\n");
	out = run(f, NULL, 0);
	only(out, "journal-differs", "vda", NULL);
	json_object_put(out);
}

static void test_expect(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;
	char why[200];
	const char *text = "{\"vda\":[\"" IMG "a.2\",\"" IMG "a.0\"],\"vdz\":[\"/x\"]}";

	assert_int_equal(merge_check_expect_parse(text, strlen(text), &f->expect, why, sizeof(why)),
			 0);
	out = run(f, NULL, 0);
	assert_int_equal(json_object_array_length(out), 2);
	x = json_object_array_get_idx(out, 0);
	assert_string_equal(field(x, "code"), "expect-differs");
	assert_string_equal(field(x, "disk"), "vda");
	assert_int_equal(json_object_array_length(json_object_object_get(x, "live")), 3);
	assert_int_equal(json_object_array_length(json_object_object_get(x, "expect")), 2);
	x = json_object_array_get_idx(out, 1);
	assert_string_equal(field(x, "code"), "expect-differs");
	assert_string_equal(field(x, "disk"), "vdz"); /* the engine has a disk the VM lacks */
	assert_null(field(x, "live"));
	json_object_put(out);
	{
		const char *disks[] = { "vdb" };

		none(run(f, disks, 1));
	}
}

static void test_expect_parse(void **state)
{
	static const char *const bad[] = {
		"", "{", "[]", "{\"vda\":\"/a\"}", "{\"vda\":[]}", "{\"vda\":[\"a.qcow2\"]}",
		"{\"vda\":[1]}", "{\"vda\":[\"/a\"]} x", "{\"vda\":[\"/a\"]}{}",
	};
	json_object *o;
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		if (merge_check_expect_parse(bad[i], strlen(bad[i]), &o, why, sizeof(why)) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_null(o);
		assert_true(why[0] != '\0');
	}
	assert_int_equal(merge_check_expect_parse("{\"vda\":[\"/a\"]}  \n", 17, &o, why, sizeof(why)),
			 0);
	json_object_put(o);
}

static void test_orphan(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	dir_file(f, IMG "a.0", HOST_FILE_REGULAR, 1);        /* in a chain */
	dir_file(f, IMG "/a.3", HOST_FILE_REGULAR, 1);       /* left by a commit */
	dir_file(f, IMG "vol", HOST_FILE_BLOCK, 0);          /* a volume (or a symlink to one) */
	dir_file(f, IMG "empty.qcow2", HOST_FILE_REGULAR, 0); /* named as an image */
	memset(f->dir_heads[3], 0, HEAD_LEN);
	out = run(f, NULL, 0);
	assert_int_equal(json_object_array_length(out), 3);
	x = json_object_array_get_idx(out, 0);
	assert_string_equal(field(x, "code"), "orphan");
	assert_null(field(x, "disk"));
	assert_string_equal(field(x, "layer"), IMG "/a.3");
	assert_string_equal(field(x, "host"), "file, qcow2 backed by " IMG "a.0");
	x = json_object_array_get_idx(out, 1);
	assert_string_equal(field(x, "layer"), IMG "vol");
	assert_string_equal(field(x, "host"), "block device, no image header");
	x = json_object_array_get_idx(out, 2);
	assert_string_equal(field(x, "layer"), IMG "empty.qcow2");
	json_object_put(out);
}

static void test_foreign_job(void **state)
{
	struct fixture *f = *state;
	json_object *out, *x;

	json_object_put(f->jobs);
	f->jobs = json_tokener_parse("[{\"id\":\"livemerge-stream-vdb\",\"type\":\"stream\","
				     "\"status\":\"running\"},{\"id\":\"backup0\",\"type\":"
				     "\"backup\",\"status\":\"running\"}]");
	out = run(f, NULL, 0);
	x = only(out, "foreign-job", NULL, NULL);
	assert_string_equal(field(x, "job"), "backup job backup0, running");
	json_object_put(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dirty_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unfinished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_differs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expect, setup, teardown),
		cmocka_unit_test(test_expect_parse),
		cmocka_unit_test_setup_teardown(test_orphan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_job, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

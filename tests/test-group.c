/*
 * test-group: the all-or-none engine (merge/group) against scripted QMP
 * sequences played by the fake QMP server (tests/fakeqmp).
 *
 * The VM is the two-disk q35 VM of tests/fixtures/vm-blockdev.json, captured
 * from QEMU 7.2: vda is a.1 over a.0 (node vda-top over an automatic node),
 * vdb is b.3 over b.2 over b.1 over b.0 (vdb-top over automatic nodes). The
 * first chain read is answered with the fixture itself; the chains after a
 * change are generated in the same shapes (query-block with nested
 * backing-image, flat query-named-block-nodes, x-debug-query-block-graph),
 * and test_generator_matches_fixture checks that the generator, given the
 * fixture's chains, decodes to exactly what the fixture decodes to. Node
 * names are looked up from the fixture, never hard-coded (automatic names
 * change with every capture).
 *
 * Each test scripts the exact command sequence the engine must send (any
 * other command fails the fake's verification), runs the real libev loop
 * under a watchdog until the done callback, and then checks the outcome,
 * the result JSON, the command/job/message callbacks, and that nothing more
 * is sent afterwards.
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

#include "../merge/group-int.h"
#include "../merge/journal.h"
#include "fakehost.h"
#include "fakeqmp.h"
#include "testutil.h"

#define JV "livemerge-commit-vda"
#define JB "livemerge-commit-vdb"
#define MAXL 8
#define MAXD 4
#define MAXREC 256

/* ------------------------------------------------------------ a VM model */

struct tlayer {
	char file[256];
	char node[64];
	char fnode[64];
	int64_t size;
};

struct tdisk {
	char id[32]; /* qdev id: /machine/peripheral/ID/virtio-backend */
	int n;
	struct tlayer l[MAXL]; /* active first */
};

struct tvm {
	int n;
	struct tdisk d[MAXD];
	int norph; /* monitor-owned nodes no chain uses any more */
	struct tlayer orph[MAXL];
};

static json_object *js(const char *s)
{
	return json_object_new_string(s);
}

static json_object *ji(int64_t v)
{
	return json_object_new_int64(v);
}

static json_object *jb(int v)
{
	return json_object_new_boolean(v);
}

/* The "image" of layer i of d as QEMU 7.2 reports it; nested: with the
 * backing-image chain below (query-block), else flat (named nodes). */
static json_object *gen_image(const struct tdisk *d, int i, int nested)
{
	json_object *o = json_object_new_object(), *fs = json_object_new_object();
	json_object *data = json_object_new_object();

	if (nested && i + 1 < d->n)
		json_object_object_add(o, "backing-image", gen_image(d, i + 1, 1));
	if (i + 1 < d->n)
		json_object_object_add(o, "backing-filename-format", js("qcow2"));
	json_object_object_add(o, "virtual-size", ji(d->l[i].size));
	json_object_object_add(o, "filename", js(d->l[i].file));
	json_object_object_add(o, "cluster-size", ji(65536));
	json_object_object_add(o, "format", js("qcow2"));
	json_object_object_add(o, "actual-size", ji(200704));
	json_object_object_add(data, "compat", js("1.1"));
	json_object_object_add(data, "compression-type", js("zlib"));
	json_object_object_add(data, "lazy-refcounts", jb(0));
	json_object_object_add(data, "refcount-bits", ji(16));
	json_object_object_add(data, "corrupt", jb(0));
	json_object_object_add(data, "extended-l2", jb(0));
	json_object_object_add(fs, "type", js("qcow2"));
	json_object_object_add(fs, "data", data);
	json_object_object_add(o, "format-specific", fs);
	if (i + 1 < d->n) {
		json_object_object_add(o, "full-backing-filename", js(d->l[i + 1].file));
		json_object_object_add(o, "backing-filename", js(d->l[i + 1].file));
	}
	json_object_object_add(o, "dirty-flag", jb(0));
	return o;
}

/* The members every BlockDeviceInfo has, around the ones that matter. */
static json_object *gen_node_info(json_object *image, const char *node, const char *drv,
				  const char *file, const char *backing_file, int ro, int depth)
{
	json_object *o = json_object_new_object(), *cache = json_object_new_object();

	json_object_object_add(o, "iops_rd", ji(0));
	json_object_object_add(o, "detect_zeroes", js("off"));
	json_object_object_add(o, "image", image);
	json_object_object_add(o, "iops_wr", ji(0));
	json_object_object_add(o, "ro", jb(ro));
	json_object_object_add(o, "node-name", js(node));
	json_object_object_add(o, "backing_file_depth", ji(depth));
	json_object_object_add(o, "drv", js(drv));
	json_object_object_add(o, "iops", ji(0));
	json_object_object_add(o, "bps_wr", ji(0));
	json_object_object_add(o, "write_threshold", ji(0));
	if (backing_file != NULL)
		json_object_object_add(o, "backing_file", js(backing_file));
	json_object_object_add(o, "encrypted", jb(0));
	json_object_object_add(o, "bps", ji(0));
	json_object_object_add(o, "bps_rd", ji(0));
	json_object_object_add(cache, "no-flush", jb(0));
	json_object_object_add(cache, "direct", jb(0));
	json_object_object_add(cache, "writeback", jb(1));
	json_object_object_add(o, "cache", cache);
	json_object_object_add(o, "file", js(file));
	return o;
}

static json_object *gen_file_image(const char *file)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "virtual-size", ji(197120));
	json_object_object_add(o, "filename", js(file));
	json_object_object_add(o, "format", js("file"));
	json_object_object_add(o, "actual-size", ji(200704));
	json_object_object_add(o, "dirty-flag", jb(0));
	return o;
}

static void gen_qdev(const struct tdisk *d, char *buf, size_t len)
{
	snprintf(buf, len, "/machine/peripheral/%s/virtio-backend", d->id);
}

static json_object *gen_query_block(const struct tvm *vm)
{
	json_object *arr = json_object_new_array();
	int k;

	for (k = 0; k < vm->n; k++) {
		const struct tdisk *d = &vm->d[k];
		json_object *b = json_object_new_object();
		char qdev[128];

		gen_qdev(d, qdev, sizeof(qdev));
		json_object_object_add(b, "io-status", js("ok"));
		json_object_object_add(b, "device", js(""));
		json_object_object_add(b, "locked", jb(0));
		json_object_object_add(b, "removable", jb(0));
		json_object_object_add(b, "inserted",
				       gen_node_info(gen_image(d, 0, 1), d->l[0].node, "qcow2",
						     d->l[0].file, d->n > 1 ? d->l[1].file : NULL, 0,
						     d->n - 1));
		json_object_object_add(b, "qdev", js(qdev));
		json_object_object_add(b, "type", js("unknown"));
		json_object_array_add(arr, b);
	}
	return arr;
}

static void gen_layer_nodes(json_object *arr, const struct tdisk *d, int i, int ro)
{
	const struct tlayer *l = &d->l[i];

	json_object_array_add(arr, gen_node_info(gen_image(d, i, 0), l->node, "qcow2", l->file,
						 i + 1 < d->n ? d->l[i + 1].file : NULL, ro, 0));
	json_object_array_add(arr, gen_node_info(gen_file_image(l->file), l->fnode, "file",
						 l->file, NULL, ro, 0));
}

static json_object *gen_named_nodes(const struct tvm *vm)
{
	json_object *arr = json_object_new_array();
	int k, i;

	/* QEMU lists the newest nodes first; the order does not matter */
	for (k = vm->n - 1; k >= 0; k--)
		for (i = vm->d[k].n - 1; i >= 0; i--)
			gen_layer_nodes(arr, &vm->d[k], i, i > 0);
	for (i = 0; i < vm->norph; i++) {
		struct tdisk one = { .n = 1 };

		one.l[0] = vm->orph[i];
		gen_layer_nodes(arr, &one, 0, 0);
	}
	return arr;
}

static json_object *gen_edge(const char *name, int parent, int child, int writes)
{
	json_object *e = json_object_new_object(), *sp = json_object_new_array();
	json_object *p = json_object_new_array();

	json_object_object_add(e, "name", js(name));
	json_object_object_add(e, "parent", ji(parent));
	json_object_array_add(sp, js("write-unchanged"));
	json_object_array_add(sp, js("consistent-read"));
	json_object_object_add(e, "shared-perm", sp);
	if (writes) {
		json_object_array_add(p, js("write"));
	}
	json_object_array_add(p, js("consistent-read"));
	json_object_object_add(e, "perm", p);
	json_object_object_add(e, "child", ji(child));
	return e;
}

static json_object *gen_gnode(const char *name, const char *type, int id)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", js(name));
	json_object_object_add(o, "type", js(type));
	json_object_object_add(o, "id", ji(id));
	return o;
}

static json_object *gen_graph(const struct tvm *vm)
{
	json_object *g = json_object_new_object(), *nodes = json_object_new_array();
	json_object *edges = json_object_new_array();
	int k, i, id = 1;

	for (k = 0; k < vm->n; k++) {
		const struct tdisk *d = &vm->d[k];
		char qdev[128];
		int backend = id++, prev = -1;

		gen_qdev(d, qdev, sizeof(qdev));
		json_object_array_add(nodes, gen_gnode(qdev, "block-backend", backend));
		for (i = 0; i < d->n; i++) {
			int fmt = id++, file = id++;

			json_object_array_add(nodes, gen_gnode(d->l[i].node, "block-driver", fmt));
			json_object_array_add(nodes, gen_gnode(d->l[i].fnode, "block-driver", file));
			json_object_array_add(edges, gen_edge("file", fmt, file, i == 0));
			if (i == 0)
				json_object_array_add(edges, gen_edge("root", backend, fmt, 1));
			else
				json_object_array_add(edges, gen_edge("backing", prev, fmt, 0));
			prev = fmt;
		}
	}
	for (i = 0; i < vm->norph; i++) {
		int fmt = id++, file = id++;

		json_object_array_add(nodes, gen_gnode(vm->orph[i].node, "block-driver", fmt));
		json_object_array_add(nodes, gen_gnode(vm->orph[i].fnode, "block-driver", file));
		json_object_array_add(edges, gen_edge("file", fmt, file, 0));
	}
	json_object_object_add(g, "edges", edges);
	json_object_object_add(g, "nodes", nodes);
	return g;
}

static char *json_text(json_object *o)
{
	char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));

	json_object_put(o);
	assert_non_null(s);
	return s;
}

/* The three reports of vm as text. */
struct vmtext {
	char *block, *nodes, *graph;
};

static void vm_text(const struct tvm *vm, struct vmtext *t)
{
	t->block = json_text(gen_query_block(vm));
	t->nodes = json_text(gen_named_nodes(vm));
	t->graph = json_text(gen_graph(vm));
}

static void vmtext_free(struct vmtext *t)
{
	free(t->block);
	free(t->nodes);
	free(t->graph);
	memset(t, 0, sizeof(*t));
}

static struct tdisk *vm_disk(struct tvm *vm, const char *id)
{
	for (int k = 0; k < vm->n; k++)
		if (strcmp(vm->d[k].id, id) == 0)
			return &vm->d[k];
	fail_msg("no disk %s in the model", id);
	return NULL;
}

/* The chain of id after a commit of layers [top, base) into base. Nodes the
 * monitor added (named, not #blockNNN) stay as orphans until released. */
static void vm_commit(struct tvm *vm, const char *id, int top, int base)
{
	struct tdisk *d = vm_disk(vm, id);
	int i;

	for (i = top; i < base; i++)
		if (d->l[i].node[0] != '#')
			vm->orph[vm->norph++] = d->l[i];
	memmove(&d->l[top], &d->l[base], sizeof(d->l[0]) * (size_t)(d->n - base));
	d->n -= base - top;
}

/* The chain of id after a snapshot onto overlay. */
static void vm_snapshot(struct tvm *vm, const char *id, const char *overlay, const char *node)
{
	struct tdisk *d = vm_disk(vm, id);

	memmove(&d->l[1], &d->l[0], sizeof(d->l[0]) * (size_t)d->n);
	d->n++;
	memset(&d->l[0], 0, sizeof(d->l[0]));
	snprintf(d->l[0].file, sizeof(d->l[0].file), "%s", overlay);
	snprintf(d->l[0].node, sizeof(d->l[0].node), "%s", node);
	snprintf(d->l[0].fnode, sizeof(d->l[0].fnode), "#block9%02d", d->n);
	d->l[0].size = d->l[1].size;
}

/* ------------------------------------------------------------ the fixture file */

struct fixfile {
	json_object *root, *block, *nodes, *graph;
	struct vmtext text;
	struct tvm vm; /* its chains, decoded */
};

static void fixfile_load(struct fixfile *ff, const char *name)
{
	const char *dir = getenv("LM_FIXTURES");
	char path[4096];
	struct merge_chains *ch = NULL;
	struct lm_error err = { 0 };
	int k, i;

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures", name);
	ff->root = json_object_from_file(path);
	if (ff->root == NULL)
		fail_msg("cannot read fixture %s (run from the top of the tree or set LM_FIXTURES)",
			 path);
	assert_true(json_object_object_get_ex(ff->root, "block", &ff->block));
	assert_true(json_object_object_get_ex(ff->root, "nodes", &ff->nodes));
	assert_true(json_object_object_get_ex(ff->root, "graph", &ff->graph));
	ff->text.block = strdup(json_object_to_json_string_ext(ff->block, JSON_C_TO_STRING_PLAIN));
	ff->text.nodes = strdup(json_object_to_json_string_ext(ff->nodes, JSON_C_TO_STRING_PLAIN));
	ff->text.graph = strdup(json_object_to_json_string_ext(ff->graph, JSON_C_TO_STRING_PLAIN));
	if (merge_chains_decode(ff->block, ff->nodes, ff->graph, &ch, &err) < 0)
		fail_msg("fixture %s does not decode: %s", name, err.msg);
	memset(&ff->vm, 0, sizeof(ff->vm));
	assert_true(ch->ndisks <= MAXD);
	for (k = 0; k < ch->ndisks; k++) {
		const struct merge_disk *d = &ch->disks[k];
		struct tdisk *t = &ff->vm.d[ff->vm.n++];

		assert_non_null(d->qdev_id);
		snprintf(t->id, sizeof(t->id), "%s", d->qdev_id);
		assert_true(d->nlayers <= MAXL);
		t->n = d->nlayers;
		for (i = 0; i < d->nlayers; i++) {
			assert_non_null(d->layers[i].node_name);
			assert_non_null(d->layers[i].file_node);
			snprintf(t->l[i].file, sizeof(t->l[i].file), "%s", d->layers[i].filename);
			snprintf(t->l[i].node, sizeof(t->l[i].node), "%s", d->layers[i].node_name);
			snprintf(t->l[i].fnode, sizeof(t->l[i].fnode), "%s", d->layers[i].file_node);
			t->l[i].size = d->layers[i].virtual_size;
		}
	}
	merge_chains_free(ch);
}

static void fixfile_free(struct fixfile *ff)
{
	vmtext_free(&ff->text);
	json_object_put(ff->root);
}

/* ------------------------------------------------------------ test fixture */

struct fixture {
	struct ev_loop *loop;
	struct host *host; /* a fake one, when a test sets it */
	struct fq *fq;
	struct qmp_conn *c;
	struct merge_group *g;
	struct fixfile fix;
	struct tvm vm; /* the fixture's chains: vda, vdb */
	const char *na_top, *na_base;          /* vda: vda-top over a.0's node */
	const char *nb[4], *fb[4];             /* vdb: layer nodes and files, top first */
	double poll;                           /* poll interval for the group (0: off) */
	int seq;

	/* what the callbacks saw */
	char *cmd_name[MAXREC];
	json_object *cmd_args[MAXREC];
	int ncmds;
	struct {
		char disk[32], job[64], status[16];
		int seq;
	} upd[MAXREC];
	int nupd;
	char *msg[MAXREC];
	int msg_seq[MAXREC];
	int nmsgs;
	int done_calls;
	enum merge_outcome outcome;
	struct lm_error err;
	int had_err;
	json_object *result;
	int ncmds_at_done;

	/* actions at a point */
	const char *cancel_on_msg;
	ev_timer cancel_timer;
	int cancelled;

	char tmp[256];
	struct vmtext texts[8]; /* freed at teardown */
	int ntexts;
	struct merge_journal *journal;
};


static void cancel_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fixture *fx = w->data;

	(void)loop;
	(void)revents;
	fx->cancelled++;
	merge_group_cancel(fx->g);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct tdisk *a, *b;
	int i;

	if (fx == NULL)
		return -1;
	fx->loop = ev_loop_new(EVFLAG_AUTO);
	fx->fq = fq_new(fx->loop);
	fixfile_load(&fx->fix, "vm-blockdev.json");
	fx->vm = fx->fix.vm;
	a = vm_disk(&fx->vm, "vda");
	b = vm_disk(&fx->vm, "vdb");
	assert_int_equal(a->n, 2);
	assert_int_equal(b->n, 4);
	fx->na_top = a->l[0].node;
	fx->na_base = a->l[1].node;
	for (i = 0; i < 4; i++) {
		fx->nb[i] = b->l[i].node;
		fx->fb[i] = b->l[i].file;
	}
	ev_init(&fx->cancel_timer, cancel_timer_cb);
	fx->cancel_timer.data = fx;
	snprintf(fx->tmp, sizeof(fx->tmp), "/tmp/lm-test-group-XXXXXX");
	if (mkdtemp(fx->tmp) == NULL)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int i;

	ev_timer_stop(fx->loop, &fx->cancel_timer);
	merge_group_free(fx->g);
	host_free(fx->host);
	qmp_conn_free(fx->c);
	fq_free(fx->fq);
	merge_journal_close(fx->journal);
	for (i = 0; i < fx->ncmds; i++) {
		free(fx->cmd_name[i]);
		json_object_put(fx->cmd_args[i]);
	}
	for (i = 0; i < fx->nmsgs; i++)
		free(fx->msg[i]);
	for (i = 0; i < fx->ntexts; i++)
		vmtext_free(&fx->texts[i]);
	json_object_put(fx->result);
	fixfile_free(&fx->fix);
	test_rm_rf(fx->tmp);
	ev_loop_destroy(fx->loop);
	free(fx);
	return 0;
}

/* ------------------------------------------------------------ callbacks */

static void cb_job(const struct merge_job_update *u, void *arg)
{
	struct fixture *fx = arg;

	assert_true(fx->nupd < MAXREC);
	assert_non_null(u->disk);
	assert_non_null(u->job_id);
	assert_non_null(u->status);
	snprintf(fx->upd[fx->nupd].disk, sizeof(fx->upd[0].disk), "%s", u->disk);
	snprintf(fx->upd[fx->nupd].job, sizeof(fx->upd[0].job), "%s", u->job_id);
	snprintf(fx->upd[fx->nupd].status, sizeof(fx->upd[0].status), "%s", u->status);
	fx->upd[fx->nupd].seq = ++fx->seq;
	fx->nupd++;
}

static void cb_command(const char *name, json_object *args, void *arg)
{
	struct fixture *fx = arg;

	assert_true(fx->ncmds < MAXREC);
	if (fx->done_calls > 0)
		fail_msg("command %s announced after the end", name);
	fx->cmd_name[fx->ncmds] = strdup(name);
	fx->cmd_args[fx->ncmds] = args ? json_tokener_parse(json_object_to_json_string(args)) : NULL;
	fx->ncmds++;
}

static void cb_message(const char *line, void *arg)
{
	struct fixture *fx = arg;

	assert_true(fx->nmsgs < MAXREC);
	assert_non_null(line);
	fx->msg[fx->nmsgs] = strdup(line);
	fx->msg_seq[fx->nmsgs] = ++fx->seq;
	fx->nmsgs++;
	if (getenv("LM_TEST_TRACE"))
		fprintf(stderr, "message: %s\n", line);
	if (fx->cancel_on_msg != NULL && strstr(line, fx->cancel_on_msg) != NULL &&
	    !ev_is_active(&fx->cancel_timer) && fx->cancelled == 0) {
		/* from the loop, not from inside the engine */
		ev_timer_set(&fx->cancel_timer, 0., 0.);
		ev_timer_start(fx->loop, &fx->cancel_timer);
	}
}

static void cb_done(const struct merge_result *r, void *arg)
{
	struct fixture *fx = arg;

	fx->done_calls++;
	fx->outcome = r->outcome;
	fx->had_err = r->err != NULL;
	if (r->err != NULL)
		fx->err = *r->err;
	assert_non_null(r->json);
	json_object_put(fx->result);
	fx->result = json_tokener_parse(json_object_to_json_string(r->json));
	fx->ncmds_at_done = fx->ncmds;
	if (getenv("LM_TEST_TRACE"))
		fprintf(stderr, "done: %d %s\n", r->outcome, r->err ? r->err->msg : "");
}

static const struct merge_callbacks cbs = { cb_job, cb_command, cb_message, cb_done };

/* ------------------------------------------------------------ running */

#define RUN_UNTIL(fx, cond, secs) TEST_RUN_UNTIL((fx)->loop, cond, secs, fq_verify((fx)->fq))
#define run_for(fx, secs) test_run_for((fx)->loop, (secs))

static void fx_connect(struct fixture *fx)
{
	struct lm_error err;
	struct tr *t = tr_new_fd(fq_fd(fx->fq), "fake", &err);

	assert_non_null(t);
	fx->c = qmp_conn_new(fx->loop, t, NULL);
	assert_non_null(fx->c);
	assert_int_equal(qmp_conn_start(fx->c, &err), 0);
}

static void fx_start(struct fixture *fx, const struct merge_request *req)
{
	struct lm_error err = { 0 };

	fx_connect(fx);
	fx->g = merge_group_start(fx->c, req, &cbs, fx, &err);
	if (fx->g == NULL)
		fail_msg("merge_group_start: %s", err.msg);
	merge_group_set_poll_interval(fx->g, fx->poll);
	/* done never runs from inside merge_group_start */
	assert_int_equal(fx->done_calls, 0);
}

/* Run until done, then a little more: nothing may follow the end; the
 * script must be used up with no surprise. */
static void fx_finish(struct fixture *fx, double secs)
{
	RUN_UNTIL(fx, fx->done_calls > 0, secs);
	run_for(fx, 0.05);
	assert_int_equal(fx->done_calls, 1);
	assert_int_equal(fx->ncmds, fx->ncmds_at_done);
	if (fq_verify(fx->fq) != 0)
		fail_msg("the fake QMP server saw something unexpected (see above)");
}

static struct merge_request commit_req(const struct merge_target *t, int n)
{
	struct merge_request r = { 0 };

	r.verb = MERGE_COMMIT;
	r.ntargets = n;
	r.targets = t;
	return r;
}

static const struct merge_target both[] = { { .disk = "vda" }, { .disk = "vdb" } };

/* ------------------------------------------------------------ assertions */

static void assert_contains(const char *hay, const char *needle)
{
	if (hay == NULL || strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

/* The names the command callback saw, comma-separated. */
static void assert_cmds(struct fixture *fx, const char *want)
{
	char buf[4096] = "";

	for (int i = 0; i < fx->ncmds; i++) {
		if (i > 0)
			strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
		strncat(buf, fx->cmd_name[i], sizeof(buf) - strlen(buf) - 1);
	}
	if (strcmp(buf, want) != 0)
		fail_msg("commands announced: \"%s\", expected \"%s\"", buf, want);
}

/* Argument key of the i-th announced command. */
static const char *cmd_arg(struct fixture *fx, int i, const char *key)
{
	json_object *v;

	assert_true(i < fx->ncmds);
	if (fx->cmd_args[i] == NULL || !json_object_object_get_ex(fx->cmd_args[i], key, &v))
		return NULL;
	return json_object_get_string(v);
}

/* The statuses the job callback reported for disk, repeats folded. */
static void assert_statuses(struct fixture *fx, const char *disk, const char *job,
			    const char *want)
{
	char buf[1024] = "", last[16] = "";

	for (int i = 0; i < fx->nupd; i++) {
		if (strcmp(fx->upd[i].disk, disk) != 0)
			continue;
		assert_string_equal(fx->upd[i].job, job);
		if (strcmp(fx->upd[i].status, last) == 0)
			continue;
		snprintf(last, sizeof(last), "%s", fx->upd[i].status);
		if (buf[0] != '\0')
			strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
		strncat(buf, last, sizeof(buf) - strlen(buf) - 1);
	}
	if (strcmp(buf, want) != 0)
		fail_msg("%s: statuses \"%s\", expected \"%s\"", disk, buf, want);
}

static int msg_index(struct fixture *fx, const char *needle)
{
	for (int i = 0; i < fx->nmsgs; i++)
		if (strstr(fx->msg[i], needle) != NULL)
			return i;
	return -1;
}

static void assert_msg(struct fixture *fx, const char *needle)
{
	if (msg_index(fx, needle) < 0) {
		for (int i = 0; i < fx->nmsgs; i++)
			fprintf(stderr, "  message: %s\n", fx->msg[i]);
		fail_msg("no message contains \"%s\"", needle);
	}
}

static json_object *res_get(struct fixture *fx, const char *key)
{
	json_object *v = NULL;

	assert_non_null(fx->result);
	json_object_object_get_ex(fx->result, key, &v);
	return v;
}

/* The result JSON: type, ok, verb, outcome; and the error member. */
static void assert_result(struct fixture *fx, const char *verb, enum merge_outcome outcome)
{
	json_object *v;

	if (fx->outcome != outcome)
		fail_msg("outcome %d, expected %d (%s)", fx->outcome, outcome,
			 fx->had_err ? fx->err.msg : "no error");
	assert_string_equal(json_object_get_string(res_get(fx, "type")), "result");
	assert_string_equal(json_object_get_string(res_get(fx, "verb")), verb);
	assert_int_equal(json_object_get_int(res_get(fx, "outcome")), outcome);
	assert_int_equal(json_object_get_boolean(res_get(fx, "ok")), outcome == MERGE_DONE);
	v = res_get(fx, "error");
	if (outcome == MERGE_DONE) {
		assert_int_equal(fx->had_err, 0);
		assert_null(v);
	} else {
		json_object *m;

		assert_int_equal(fx->had_err, 1);
		assert_non_null(v);
		assert_true(json_object_object_get_ex(v, "message", &m));
		assert_string_equal(json_object_get_string(m), fx->err.msg);
		assert_true(json_object_object_get_ex(v, "code", &m));
	}
}

/* The chain of disk in the result JSON, file names comma-separated. */
static void assert_result_chain(struct fixture *fx, const char *disk, const char *want)
{
	json_object *disks = res_get(fx, "disks"), *chain;
	char buf[2048] = "";
	size_t i, k;

	assert_non_null(disks);
	for (i = 0; i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, i), *name;

		if (!json_object_object_get_ex(d, "disk", &name) ||
		    strcmp(json_object_get_string(name), disk) != 0)
			continue;
		assert_true(json_object_object_get_ex(d, "chain", &chain));
		for (k = 0; k < json_object_array_length(chain); k++) {
			json_object *f;

			assert_true(json_object_object_get_ex(json_object_array_get_idx(chain, k),
							      "filename", &f));
			if (k > 0)
				strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
			strncat(buf, json_object_get_string(f), sizeof(buf) - strlen(buf) - 1);
		}
		if (strcmp(buf, want) != 0)
			fail_msg("%s: chain in the result is \"%s\", expected \"%s\"", disk, buf, want);
		return;
	}
	fail_msg("no disk %s in the result", disk);
}

/* ------------------------------------------------------------ script pieces */

static struct vmtext *fx_texts(struct fixture *fx, const struct tvm *vm)
{
	assert_true(fx->ntexts < 8);
	vm_text(vm, &fx->texts[fx->ntexts]);
	return &fx->texts[fx->ntexts++];
}

/* The chains read: the four queries in flight together (and query-jobs
 * right behind them when jobs_json is given), then the answers. vm NULL:
 * the fixture itself. */
static void s_fetch(struct fixture *fx, const struct tvm *vm, const char *jobs_json)
{
	const struct vmtext *t = vm ? fx_texts(fx, vm) : &fx->fix.text;
	int h[5], n = 4;

	h[0] = fq_expect(fx->fq, "query-block", NULL);
	h[1] = fq_expect(fx->fq, "query-named-block-nodes", "{\"flat\": true}");
	h[2] = fq_expect(fx->fq, "x-debug-query-block-graph", NULL);
	h[3] = fq_expect(fx->fq, "query-block-exports", NULL);
	if (jobs_json != NULL)
		h[n++] = fq_expect(fx->fq, "query-jobs", NULL);
	fq_reply_return_to(fx->fq, h[0], t->block);
	fq_reply_return_to(fx->fq, h[1], t->nodes);
	fq_reply_return_to(fx->fq, h[2], t->graph);
	fq_reply_return_to(fx->fq, h[3], "[]");
	if (jobs_json != NULL)
		fq_reply_return_to(fx->fq, h[4], jobs_json);
}

/* Greeting, negotiation, the jobs (read first: concluded leftovers of ours
 * are dismissed before the chains are read), then the chains unless a
 * concluded job is listed (the test scripts its dismissal, then s_fetch). */
static void s_begin(struct fixture *fx, const char *jobs_json)
{
	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-jobs", NULL, jobs_json ? jobs_json : "[]");
	if (jobs_json == NULL || strstr(jobs_json, "\"concluded\"") == NULL)
		s_fetch(fx, NULL, NULL);
}

/* block-commit as QEMU 7.2 runs it: created and running before the return. */
static void s_commit_start(struct fixture *fx, const char *job, const char *device,
			   const char *top, const char *base)
{
	char args[1024];

	snprintf(args, sizeof(args),
		 "{\"job-id\": \"%s\", \"device\": \"%s\", \"top-node\": \"%s\", \"base-node\": "
		 "\"%s\", \"auto-finalize\": false, \"auto-dismiss\": false, \"on-error\": "
		 "\"enospc\"}",
		 job, device, top, base);
	fq_expect(fx->fq, "block-commit", args);
	fq_job_status(fx->fq, job, "created");
	fq_job_status(fx->fq, job, "running");
	fq_reply_return(fx->fq, "{}");
}

static void s_start_both(struct fixture *fx)
{
	s_commit_start(fx, JV, fx->na_top, fx->na_top, fx->na_base);
	s_commit_start(fx, JB, fx->nb[0], fx->nb[0], fx->nb[1]);
}

static void s_ready(struct fixture *fx, const char *job)
{
	fq_job_status(fx->fq, job, "ready");
	fq_block_job_ready(fx->fq, job, "commit");
}

static int s_verb(struct fixture *fx, const char *verb, const char *job)
{
	char args[256];

	snprintf(args, sizeof(args), "{\"id\": \"%s\"}", job);
	return fq_expect(fx->fq, verb, args);
}

static void s_complete(struct fixture *fx, const char *job)
{
	s_verb(fx, "job-complete", job);
	fq_reply_return(fx->fq, "{}");
}

static void s_pending(struct fixture *fx, const char *job)
{
	fq_job_status(fx->fq, job, "waiting");
	fq_job_status(fx->fq, job, "pending");
	fq_block_job_pending(fx->fq, job, "commit");
}

/* What job-finalize of a pending commit emits before its return. */
static void s_concluded(struct fixture *fx, const char *job)
{
	fq_block_job_completed(fx->fq, job, "commit", NULL);
	fq_job_status(fx->fq, job, "concluded");
}

/* Both finalizes arrive before either is answered. */
static void s_finalize_both(struct fixture *fx)
{
	int h1 = s_verb(fx, "job-finalize", JV);
	int h2 = s_verb(fx, "job-finalize", JB);

	s_concluded(fx, JV);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_concluded(fx, JB);
	fq_reply_return_to(fx->fq, h2, "{}");
}

/* What a forced cancel emits. */
static void s_cancelled(struct fixture *fx, const char *job)
{
	char data[256];

	snprintf(data, sizeof(data),
		 "{\"device\": \"%s\", \"len\": 1048576, \"offset\": 524288, \"speed\": 0, "
		 "\"type\": \"commit\"}",
		 job);
	fq_job_status(fx->fq, job, "aborting");
	fq_event(fx->fq, "BLOCK_JOB_CANCELLED", data);
	fq_job_status(fx->fq, job, "concluded");
}

static void s_dismiss(struct fixture *fx, const char *job)
{
	s_verb(fx, "job-dismiss", job);
	fq_job_status(fx->fq, job, "null");
	fq_reply_return(fx->fq, "{}");
}

/* A flush through HMP, answered as qemu-system does: with nothing. */
static void s_flush(struct fixture *fx)
{
	fq_expect(fx->fq, "human-monitor-command", NULL);
	fq_reply_return(fx->fq, "\"\"");
}

static void s_release(struct fixture *fx, const char *node)
{
	char args[256];

	snprintf(args, sizeof(args), "{\"node-name\": \"%s\"}", node);
	fq_expect(fx->fq, "blockdev-del", args);
	fq_reply_return(fx->fq, "{}");
}

/* A query-jobs entry. */
static void job_entry(char *buf, size_t len, const char *job, const char *status,
		      const char *error)
{
	size_t n = strlen(buf);

	snprintf(buf + n, len - n,
		 "%s{\"current-progress\": 1048576, \"status\": \"%s\", \"total-progress\": 1048576, "
		 "\"type\": \"commit\", \"id\": \"%s\"%s%s%s}",
		 n > 1 ? ", " : "", status, job, error ? ", \"error\": \"" : "", error ? error : "",
		 error ? "\"" : "");
}

static const char both_concluded[] =
	"[{\"current-progress\": 1048576, \"status\": \"concluded\", \"total-progress\": 1048576, "
	"\"type\": \"commit\", \"id\": \"" JV "\"}, {\"current-progress\": 1048576, \"status\": "
	"\"concluded\", \"total-progress\": 1048576, \"type\": \"commit\", \"id\": \"" JB "\"}]";

static const char both_cancelled[] =
	"[{\"current-progress\": 524288, \"status\": \"concluded\", \"total-progress\": 1048576, "
	"\"type\": \"commit\", \"id\": \"" JV "\", \"error\": \"Operation canceled\"}, "
	"{\"current-progress\": 524288, \"status\": \"concluded\", \"total-progress\": 1048576, "
	"\"type\": \"commit\", \"id\": \"" JB "\", \"error\": \"Operation canceled\"}]";

/* The VM after both active commits pivoted. */
static struct tvm vm_both_committed(struct fixture *fx)
{
	struct tvm vm = fx->vm;

	vm_commit(&vm, "vda", 0, 1);
	vm_commit(&vm, "vdb", 0, 1);
	return vm;
}

/* From both READY on: complete, pending, finalize, read the results,
 * dismiss, read the chains (pivoted), release the old tops. */
static void s_tail_from_ready(struct fixture *fx)
{
	struct tvm after = vm_both_committed(fx);

	s_complete(fx, JV);
	s_complete(fx, JB);
	s_pending(fx, JV);
	s_pending(fx, JB);
	s_flush(fx);
	s_flush(fx);
	s_finalize_both(fx);
	fq_command(fx->fq, "query-jobs", NULL, both_concluded);
	s_dismiss(fx, JV);
	s_dismiss(fx, JB);
	s_fetch(fx, &after, NULL);
	s_release(fx, "vda-top");
	s_release(fx, "vda-file");
	s_release(fx, "vdb-top");
	s_release(fx, "vdb-file");
	s_flush(fx);
	s_flush(fx);
}

/* The rollback end: results read, both dismissed, chains as before. */
static void s_rollback_tail(struct fixture *fx, const char *jobs_json, int dismiss_a,
			    int dismiss_b)
{
	fq_command(fx->fq, "query-jobs", NULL, jobs_json);
	if (dismiss_a)
		s_dismiss(fx, JV);
	if (dismiss_b)
		s_dismiss(fx, JB);
	s_fetch(fx, &fx->vm, NULL);
}

static const char happy_cmds[] = "block-commit,block-commit,job-complete,job-complete,"
				 "human-monitor-command,human-monitor-command,"
				 "job-finalize,job-finalize,job-dismiss,job-dismiss,"
				 "blockdev-del,blockdev-del,blockdev-del,blockdev-del,"
				 "human-monitor-command,human-monitor-command";

static const char rollback_status[] = "created,running,ready,aborting,concluded,null";

/* ------------------------------------------------------------ tests: the model */

static void test_generator_matches_fixture(void **state)
{
	struct fixture *fx = *state;
	struct vmtext t;
	json_object *b, *n, *g;
	struct merge_chains *want = NULL, *got = NULL;
	struct lm_error err = { 0 };
	int k;

	vm_text(&fx->vm, &t);
	b = json_tokener_parse(t.block);
	n = json_tokener_parse(t.nodes);
	g = json_tokener_parse(t.graph);
	assert_int_equal(merge_chains_decode(fx->fix.block, fx->fix.nodes, fx->fix.graph, &want,
					     &err), 0);
	if (merge_chains_decode(b, n, g, &got, &err) < 0)
		fail_msg("generated reports do not decode: %s", err.msg);
	assert_int_equal(got->ndisks, want->ndisks);
	for (k = 0; k < want->ndisks; k++) {
		json_object *w = merge_disk_to_json(&want->disks[k]);
		json_object *o = merge_disk_to_json(&got->disks[k]);

		if (!json_object_equal(w, o))
			fail_msg("disk %d: generated %s, fixture %s", k,
				 json_object_to_json_string(o), json_object_to_json_string(w));
		assert_string_equal(got->disks[k].layers[0].file_node,
				    want->disks[k].layers[0].file_node);
		json_object_put(w);
		json_object_put(o);
	}
	/* and without the graph (the file-name fallback) */
	merge_chains_free(got);
	got = NULL;
	assert_int_equal(merge_chains_decode(b, n, NULL, &got, &err), 0);
	assert_int_equal(got->ndisks, 2);
	assert_int_equal(got->disks[1].nlayers, 4);
	merge_chains_free(got);
	merge_chains_free(want);
	json_object_put(b);
	json_object_put(n);
	json_object_put(g);
	vmtext_free(&t);
}

/* ------------------------------------------------------------ tests: commit */

static void check_happy_result(struct fixture *fx)
{
	struct tvm after = vm_both_committed(fx);
	char want[1024];

	assert_result(fx, "commit", MERGE_DONE);
	assert_cmds(fx, happy_cmds);
	/* the announced arguments name the jobs and layers */
	assert_string_equal(cmd_arg(fx, 0, "job-id"), JV);
	assert_string_equal(cmd_arg(fx, 0, "top-node"), fx->na_top);
	assert_string_equal(cmd_arg(fx, 0, "base-node"), fx->na_base);
	assert_string_equal(cmd_arg(fx, 1, "job-id"), JB);
	assert_string_equal(cmd_arg(fx, 1, "base-node"), fx->nb[1]);
	/* what the jobs wrote (each base) is flushed before any finalize */
	snprintf(want, sizeof(want), "qemu-io %s flush", fx->na_base);
	assert_string_equal(cmd_arg(fx, 4, "command-line"), want);
	snprintf(want, sizeof(want), "qemu-io %s flush", fx->nb[1]);
	assert_string_equal(cmd_arg(fx, 5, "command-line"), want);
	assert_string_equal(cmd_arg(fx, 6, "id"), JV);
	assert_string_equal(cmd_arg(fx, 7, "id"), JB);
	assert_statuses(fx, "vda", JV, "created,running,ready,waiting,pending,concluded,null");
	assert_statuses(fx, "vdb", JB, "created,running,ready,waiting,pending,concluded,null");
	assert_msg(fx, "every job is ready: completing them");
	assert_msg(fx, "every job is pending: flushing what they wrote");
	assert_msg(fx, "finalizing every job back to back");
	/* the chains in the result are the ones read back after the pivot */
	assert_result_chain(fx, "vda", after.d[0].l[0].file);
	snprintf(want, sizeof(want), "%s,%s,%s", fx->fb[1], fx->fb[2], fx->fb[3]);
	assert_result_chain(fx, "vdb", want);
}

/* Both active commits, from start to the verified end, as QEMU runs them. */
static void run_happy_commit(struct fixture *fx, const struct merge_request *req)
{
	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_tail_from_ready(fx);
	fx_start(fx, req);
	fx_finish(fx, 10);
	check_happy_result(fx);
}

static void test_commit_two_disks(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	int created, started;

	run_happy_commit(fx, &req);
	/* "created" came from an event before block-commit returned */
	created = fx->upd[0].seq;
	assert_string_equal(fx->upd[0].status, "created");
	assert_true((started = msg_index(fx, "vda: job " JV " started")) >= 0);
	assert_true(created < fx->msg_seq[started]);
}

static void test_commit_ready_other_order(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JB);
	s_ready(fx, JV);
	s_tail_from_ready(fx);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	check_happy_result(fx);
}

/* vda's active commit and vdb's intermediate one (b.2 into b.1), from their
 * start until both are pending; after becomes the chains after the pivot. */
static void s_mixed_to_pending(struct fixture *fx, struct tvm *after)
{
	vm_commit(after, "vda", 0, 1);
	vm_commit(after, "vdb", 1, 2);
	s_begin(fx, "[]");
	s_commit_start(fx, JV, fx->na_top, fx->na_top, fx->na_base);
	s_commit_start(fx, JB, fx->nb[0], fx->nb[1], fx->nb[2]);
	s_pending(fx, JB);
	s_ready(fx, JV);
	s_complete(fx, JV);
	s_pending(fx, JV);
}

/* vdb: an intermediate commit (b.2 into b.1) completes by itself and is
 * pending before vda's active commit is even ready; only vda is completed. */
static void test_commit_pending_before_other_ready(void **state)
{
	struct fixture *fx = *state;
	const struct merge_target t[] = { { .disk = "vda" },
					  { .disk = "vdb", .top = fx->fb[1] } };
	struct merge_request req = commit_req(t, 2);
	struct tvm after = fx->vm;
	char want[1024];

	s_mixed_to_pending(fx, &after);
	s_flush(fx);
	s_flush(fx);
	s_finalize_both(fx);
	fq_command(fx->fq, "query-jobs", NULL, both_concluded);
	s_dismiss(fx, JV);
	s_dismiss(fx, JB);
	s_fetch(fx, &after, NULL);
	s_release(fx, "vda-top");
	s_release(fx, "vda-file");
	/* b.2's nodes were QEMU's own (#blockNNN): nothing to release */
	s_flush(fx);
	s_flush(fx);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	assert_cmds(fx, "block-commit,block-commit,job-complete,human-monitor-command,"
			"human-monitor-command,job-finalize,job-finalize,job-dismiss,job-dismiss,"
			"blockdev-del,blockdev-del,human-monitor-command,human-monitor-command");
	/* an intermediate commit rewrote the header of the layer above top: that
	 * one is flushed after the pivot (vdb's active layer) */
	snprintf(want, sizeof(want), "qemu-io %s flush", fx->nb[0]);
	assert_string_equal(cmd_arg(fx, 12, "command-line"), want);
	assert_statuses(fx, "vdb", JB, "created,running,waiting,pending,concluded,null");
	snprintf(want, sizeof(want), "%s,%s,%s", fx->fb[0], fx->fb[2], fx->fb[3]);
	assert_result_chain(fx, "vdb", want);
}

/* A storage daemon has no HMP: the flush falls back to a reopen of the node
 * with its own options, and where the node has no name of its own (QEMU's
 * "#blockN") to QEMU's own flush, said in a message. vda: an active commit
 * into an unnamed base (the mirror flushed it); vdb: an intermediate commit
 * into an unnamed read-only base (QEMU flushes it when it makes it read-only
 * again), whose rewritten header is vdb-top's: reopened after the pivot. */
static void test_flush_storage_daemon(void **state)
{
	struct fixture *fx = *state;
	const struct merge_target t[] = { { .disk = "vda" },
					  { .disk = "vdb", .top = fx->fb[1] } };
	struct merge_request req = commit_req(t, 2);
	struct tvm after = fx->vm;
	char reopen[1024];
	int h1, h2;

	s_mixed_to_pending(fx, &after);
	h1 = fq_expect(fx->fq, "human-monitor-command", NULL);
	h2 = fq_expect(fx->fq, "human-monitor-command", NULL);
	fq_reply_error_to(fx->fq, h1, "CommandNotFound",
			  "The command human-monitor-command has not been found");
	fq_reply_error_to(fx->fq, h2, "CommandNotFound",
			  "The command human-monitor-command has not been found");
	s_finalize_both(fx);
	fq_command(fx->fq, "query-jobs", NULL, both_concluded);
	s_dismiss(fx, JV);
	s_dismiss(fx, JB);
	s_fetch(fx, &after, NULL);
	s_release(fx, "vda-top");
	s_release(fx, "vda-file");
	snprintf(reopen, sizeof(reopen),
		 "{\"options\": [{\"driver\": \"qcow2\", \"node-name\": \"vdb-top\", "
		 "\"file\": \"vdb-file\", \"backing\": \"%s\", \"read-only\": false, "
		 "\"cache\": {\"direct\": false, \"no-flush\": false}}]}",
		 fx->nb[2]);
	fq_expect(fx->fq, "blockdev-reopen", reopen);
	fq_reply_return(fx->fq, "{}");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	assert_cmds(fx, "block-commit,block-commit,job-complete,human-monitor-command,"
			"human-monitor-command,job-finalize,job-finalize,job-dismiss,job-dismiss,"
			"blockdev-del,blockdev-del,blockdev-reopen");
	assert_msg(fx, "the commit's mirror flushed it before the job paused");
	assert_msg(fx, "QEMU flushes it when it makes it read-only again at the finalize");
	assert_msg(fx, "its rewritten header was written straight to the file");
}

/* One job fails (QEMU concludes it with an error) while the other is
 * ready: the other is cancelled, nothing is completed or finalized. */
static void test_commit_one_fails(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs[1024] = "[";
	int h;

	job_entry(jobs, sizeof(jobs), JV, "concluded", "Input/output error");
	job_entry(jobs, sizeof(jobs), JB, "concluded", "Operation canceled");
	strcat(jobs, "]");
	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JB);
	fq_job_status(fx->fq, JV, "aborting");
	fq_block_job_completed(fx->fq, JV, "commit", "Input/output error");
	fq_job_status(fx->fq, JV, "concluded");
	h = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, jobs, 1, 1);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-dismiss,job-dismiss");
	assert_string_equal(cmd_arg(fx, 2, "id"), JB);
	assert_contains(fx->err.msg, "vda");
	assert_contains(fx->err.msg, "Input/output error");
	assert_msg(fx, "cancelling every job: no disk pivots");
	assert_statuses(fx, "vda", JV, "created,running,aborting,concluded,null");
	assert_statuses(fx, "vdb", JB, rollback_status);
	assert_result_chain(fx, "vda", "/tmp/lm-fixtures/a.1.qcow2,/tmp/lm-fixtures/a.0.qcow2");
}

/* QEMU refuses disk 2's block-commit after disk 1's job started. */
static void test_commit_start_refused_second(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs[512] = "[";

	job_entry(jobs, sizeof(jobs), JV, "concluded", "Operation canceled");
	strcat(jobs, "]");
	s_begin(fx, "[]");
	s_commit_start(fx, JV, fx->na_top, fx->na_top, fx->na_base);
	fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JB "\"}");
	fq_reply_error(fx->fq, "GenericError", "Permission conflict on node 'vdb-file'");
	s_verb(fx, "job-cancel", JV);
	fq_reply_return(fx->fq, "{}");
	s_cancelled(fx, JV);
	s_rollback_tail(fx, jobs, 1, 0);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-dismiss");
	assert_contains(fx->err.msg, "vdb");
	assert_contains(fx->err.msg, "Permission conflict");
	assert_string_equal(fx->err.qmp_class, "GenericError");
	assert_statuses(fx, "vda", JV, "created,running,aborting,concluded,null");
}

/*
 * QEMU refuses disk 1's block-commit while disk 2's is still in flight (both
 * are sent back to back): disk 2's job, started after the abort began, must
 * be cancelled too, not left running.
 */
static void test_commit_start_refused_first(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs[512] = "[";
	int h1, h2;

	job_entry(jobs, sizeof(jobs), JB, "concluded", "Operation canceled");
	strcat(jobs, "]");
	s_begin(fx, "[]");
	h1 = fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JV "\"}");
	h2 = fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JB "\"}");
	fq_reply_error_to(fx->fq, h1, "GenericError", "Device has no medium");
	fq_job_status(fx->fq, JB, "created");
	fq_job_status(fx->fq, JB, "running");
	fq_reply_return_to(fx->fq, h2, "{}");
	s_verb(fx, "job-cancel", JB);
	fq_reply_return(fx->fq, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, jobs, 0, 1);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-dismiss");
	assert_contains(fx->err.msg, "vda");
	assert_contains(fx->err.msg, "Device has no medium");
}

static void test_commit_cancel_while_running(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	int h1, h2;

	s_begin(fx, "[]");
	s_start_both(fx);
	h1 = s_verb(fx, "job-cancel", JV);
	h2 = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_cancelled(fx, JV);
	fq_reply_return_to(fx->fq, h2, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, both_cancelled, 1, 1);
	fx->cancel_on_msg = "vdb: job " JB " started";
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_int_equal(fx->cancelled, 1);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-cancel,job-dismiss,job-dismiss");
	assert_contains(fx->err.msg, "cancelled by request");
	assert_statuses(fx, "vda", JV, "created,running,aborting,concluded,null");
	assert_statuses(fx, "vdb", JB, "created,running,aborting,concluded,null");
}

static void fq_cancel_group(struct fq *fq, void *arg)
{
	struct fixture *fx = arg;

	(void)fq;
	fx->cancelled++;
	merge_group_cancel(fx->g);
}

/* Cancelled while the block-commits are still in flight: each job is
 * cancelled once it exists. */
static void test_commit_cancel_while_starting(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	int h1, h2;

	s_begin(fx, "[]");
	h1 = fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JV "\"}");
	h2 = fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JB "\"}");
	fq_call(fx->fq, fq_cancel_group, fx);
	fq_job_status(fx->fq, JV, "created");
	fq_job_status(fx->fq, JV, "running");
	fq_reply_return_to(fx->fq, h1, "{}");
	fq_job_status(fx->fq, JB, "created");
	fq_job_status(fx->fq, JB, "running");
	fq_reply_return_to(fx->fq, h2, "{}");
	h1 = s_verb(fx, "job-cancel", JV);
	h2 = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_cancelled(fx, JV);
	fq_reply_return_to(fx->fq, h2, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, both_cancelled, 1, 1);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-cancel,job-dismiss,job-dismiss");
	assert_contains(fx->err.msg, "cancelled by request");
}

/* Cancelled before anything was sent: nothing is. */
static void test_commit_cancel_before_start(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	s_begin(fx, "[]");
	fx_start(fx, &req);
	merge_group_cancel(fx->g);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_cmds(fx, "");
	assert_contains(fx->err.msg, "cancelled before anything was sent");
}

/* A job vanishes from query-jobs: never a success, the end is unknown. */
static void test_commit_job_vanishes(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs1[1024] = "[", jobs2[1024] = "[";
	json_object *entries = NULL;
	struct lm_error err;
	int finished = -1;

	job_entry(jobs1, sizeof(jobs1), JV, "running", NULL);
	job_entry(jobs1, sizeof(jobs1), JB, "running", NULL);
	strcat(jobs1, "]");
	job_entry(jobs2, sizeof(jobs2), JB, "running", NULL);
	strcat(jobs2, "]");
	fx->journal = merge_journal_open(fx->tmp, "/x", &err);
	assert_non_null(fx->journal);
	req.journal = fx->journal;
	char jobs3[1024] = "[";
	int h;

	job_entry(jobs3, sizeof(jobs3), JB, "concluded", "Operation canceled");
	strcat(jobs3, "]");
	s_begin(fx, "[]");
	s_start_both(fx);
	fq_command(fx->fq, "query-jobs", NULL, jobs1);
	fq_command(fx->fq, "query-jobs", NULL, jobs2);
	/* before the pivot point the other disk must not pivot either */
	h = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, jobs3, 0, 1);
	fx->poll = 0.02;
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_UNKNOWN);
	assert_contains(fx->err.msg, "vanished");
	assert_contains(fx->err.msg, JV);
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-dismiss");
	/* an unknown end stays open in the journal for 'recover' */
	assert_int_equal(merge_journal_last(fx->journal, &entries, &finished, &err), 0);
	assert_int_equal(finished, 0);
	json_object_put(entries);
}

/* The monitor closes while both jobs run (no command in flight): the next
 * progress poll finds it closed. */
static void test_commit_conn_closed_mid_job(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	s_begin(fx, "[]");
	s_start_both(fx);
	fq_close(fx->fq);
	fx->poll = 0.2;
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_UNKNOWN);
	assert_contains(fx->err.msg, "monitor lost while the commit ran");
	assert_cmds(fx, "block-commit,block-commit");
}

/* ... and while commands are in flight (job-complete sent, no answer). */
static void test_commit_conn_closed_in_flight(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_verb(fx, "job-complete", JV);
	s_verb(fx, "job-complete", JB);
	fq_close(fx->fq);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_UNKNOWN);
	assert_contains(fx->err.msg, "monitor lost");
	assert_cmds(fx, "block-commit,block-commit,job-complete,job-complete");
}

/* Closed before anything was sent: a connection failure, nothing changed. */
static void test_commit_conn_closed_before_start(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-jobs", NULL, "[]");
	fq_expect(fx->fq, "query-block", NULL);
	fq_expect(fx->fq, "query-named-block-nodes", NULL);
	fq_expect(fx->fq, "x-debug-query-block-graph", NULL);
	fq_expect(fx->fq, "query-block-exports", NULL);
	fq_close(fx->fq);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_CONN_FAILED);
	assert_int_equal(fx->err.code, LM_ERR_EOF);
	assert_cmds(fx, "");
}

/* Closed before the greeting. */
static void test_commit_conn_never_greets(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);

	fq_close(fx->fq);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_CONN_FAILED);
	assert_cmds(fx, "");
}

/* job-finalize fails for vdb after vda finalized: vda pivoted, vdb did not:
 * the end is unknown (and the engine does not wait for vdb forever). */
static void test_commit_finalize_error(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	struct tvm after = fx->vm;
	char jobs[1024] = "[";
	int h1, h2;

	vm_commit(&after, "vda", 0, 1);
	job_entry(jobs, sizeof(jobs), JV, "concluded", NULL);
	job_entry(jobs, sizeof(jobs), JB, "pending", NULL);
	strcat(jobs, "]");
	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_complete(fx, JV);
	s_complete(fx, JB);
	s_pending(fx, JV);
	s_pending(fx, JB);
	s_flush(fx);
	s_flush(fx);
	h1 = s_verb(fx, "job-finalize", JV);
	h2 = s_verb(fx, "job-finalize", JB);
	s_concluded(fx, JV);
	fq_reply_return_to(fx->fq, h1, "{}");
	fq_reply_error_to(fx->fq, h2, "GenericError", "Job 'livemerge-commit-vdb' not found");
	fq_command(fx->fq, "query-jobs", NULL, jobs);
	s_dismiss(fx, JV);
	s_fetch(fx, &after, NULL);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_UNKNOWN);
	assert_contains(fx->err.msg, "vdb");
	assert_contains(fx->err.msg, "not found");
	assert_cmds(fx, "block-commit,block-commit,job-complete,job-complete,"
			"human-monitor-command,human-monitor-command,job-finalize,"
			"job-finalize,job-dismiss");
}

/* ------------------------------------------------------------ tests: bad requests */

static void bad_request(struct fixture *fx, const struct merge_target *t, int n,
			const char *jobs_json, const char *needle)
{
	struct merge_request req = commit_req(t, n);

	s_begin(fx, jobs_json ? jobs_json : "[]");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_BAD_REQUEST);
	assert_int_equal(fx->err.code, LM_ERR_USAGE);
	assert_contains(fx->err.msg, needle);
	/* nothing that changes state was announced or sent */
	assert_cmds(fx, "");
}

static void test_bad_unknown_disk(void **state)
{
	const struct merge_target t[] = { { .disk = "vda" }, { .disk = "vdz" } };

	bad_request(*state, t, 2, NULL, "no disk 'vdz'");
}

static void test_bad_unknown_top(void **state)
{
	const struct merge_target t[] = { { .disk = "vda" }, { .disk = "vdb", .top = "nope" } };

	bad_request(*state, t, 2, NULL, "no layer 'nope'");
}

static void test_bad_unknown_base(void **state)
{
	const struct merge_target t[] = { { .disk = "vda", .base = "/no/such.qcow2" } };

	bad_request(*state, t, 1, NULL, "no layer '/no/such.qcow2'");
}

static void test_bad_base_above_top(void **state)
{
	struct fixture *fx = *state;
	const struct merge_target t[] = { { .disk = "vdb", .top = fx->fb[2], .base = fx->fb[1] } };

	bad_request(fx, t, 1, NULL, "is not below top");
}

static void test_bad_top_is_base(void **state)
{
	struct fixture *fx = *state;
	const struct merge_target t[] = { { .disk = "vdb", .top = fx->fb[3] } };

	bad_request(fx, t, 1, NULL, "nothing below it");
}

static void test_bad_disk_twice(void **state)
{
	const struct merge_target t[] = { { .disk = "vda" }, { .disk = "vda-top" } };

	bad_request(*state, t, 2, NULL, "named twice");
}

static void test_bad_single_layer(void **state)
{
	struct fixture *fx = *state;
	struct tvm vm = fx->vm;
	struct merge_request req = commit_req(both, 2);

	vm_disk(&vm, "vda")->n = 1; /* a.1 alone, no backing */
	fq_handshake(fx->fq);
	fq_command(fx->fq, "query-jobs", NULL, "[]");
	s_fetch(fx, &vm, NULL);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_BAD_REQUEST);
	assert_contains(fx->err.msg, "single layer");
	assert_cmds(fx, "");
}

static void test_bad_job_id_in_use(void **state)
{
	char jobs[512] = "[";

	job_entry(jobs, sizeof(jobs), JV, "running", NULL);
	strcat(jobs, "]");
	bad_request(*state, both, 2, jobs, "in use");
}

static void test_bad_request_refused_at_once(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 0);
	struct lm_error err = { 0 };

	fx_connect(fx);
	assert_null(merge_group_start(fx->c, &req, &cbs, fx, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	req = commit_req(both, 2);
	req.speed = -1;
	assert_null(merge_group_start(fx->c, &req, &cbs, fx, &err));
	assert_int_equal(err.code, LM_ERR_USAGE);
	assert_int_equal(fx->done_calls, 0);
	/* the fake only greets: nothing was sent */
	fq_handshake(fx->fq);
	RUN_UNTIL(fx, fq_done(fx->fq), 5);
	assert_int_equal(fq_verify(fx->fq), 0);
}

/* A leftover concluded job of ours is dismissed first, then the run goes on. */
static void test_leftover_concluded_dismissed(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs[512] = "[";

	job_entry(jobs, sizeof(jobs), JV, "concluded", "Operation canceled");
	strcat(jobs, "]");
	s_begin(fx, jobs);
	/* its "null" event must not be taken for the new job's */
	s_dismiss(fx, JV);
	s_fetch(fx, NULL, NULL);
	s_start_both(fx);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_tail_from_ready(fx);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	assert_cmds(fx, "job-dismiss,block-commit,block-commit,job-complete,job-complete,"
			"human-monitor-command,human-monitor-command,"
			"job-finalize,job-finalize,job-dismiss,job-dismiss,"
			"blockdev-del,blockdev-del,blockdev-del,blockdev-del,"
			"human-monitor-command,human-monitor-command");
	assert_msg(fx, "dismissing leftover concluded job " JV " (Operation canceled)");
}

/* ------------------------------------------------------------ tests: snapshot */

static void snapshot_paths(struct fixture *fx, char *pa, char *pb, size_t len)
{
	snprintf(pa, len, "%s/vda.snap.qcow2", fx->tmp);
	snprintf(pb, len, "%s/vdb.snap.qcow2", fx->tmp);
}

static void s_expect_transaction(struct fixture *fx, const char *pa, const char *pb)
{
	char args[2048];

	snprintf(args, sizeof(args),
		 "{\"actions\": ["
		 "{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": \"%s\", "
		 "\"snapshot-file\": \"%s\", \"format\": \"qcow2\", \"mode\": \"absolute-paths\"}},"
		 "{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": \"%s\", "
		 "\"snapshot-file\": \"%s\", \"format\": \"qcow2\", \"mode\": \"absolute-paths\"}}]}",
		 fx->na_top, pa, fx->nb[0], pb);
	fq_expect(fx->fq, "transaction", args);
}

static void test_snapshot_two_disks(void **state)
{
	struct fixture *fx = *state;
	char pa[512], pb[512], want[2048];
	const struct merge_target t[2] = { { .disk = "vda", .overlay = pa },
					   { .disk = "vdb", .overlay = pb } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 2, .targets = t };
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	struct tvm after = fx->vm;
	json_object *actions, *d, *nn;

	snapshot_paths(fx, pa, pb, sizeof(pa));
	req.host = h;
	vm_snapshot(&after, "vda", pa, "snap-a");
	vm_snapshot(&after, "vdb", pb, "snap-b");
	s_begin(fx, "[]");
	s_expect_transaction(fx, pa, pb);
	fq_reply_return(fx->fq, "{}");
	s_fetch(fx, &after, NULL);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_DONE);
	assert_cmds(fx, "transaction");
	/* both actions in the one transaction, each with its own new node name */
	assert_true(json_object_object_get_ex(fx->cmd_args[0], "actions", &actions));
	assert_int_equal(json_object_array_length(actions), 2);
	assert_true(json_object_object_get_ex(json_object_array_get_idx(actions, 0), "data", &d));
	assert_true(json_object_object_get_ex(d, "snapshot-node-name", &nn));
	assert_non_null(json_object_get_string(nn));
	{
		json_object *d2, *nn2;

		assert_true(json_object_object_get_ex(json_object_array_get_idx(actions, 1), "data",
						      &d2));
		assert_true(json_object_object_get_ex(d2, "snapshot-node-name", &nn2));
		assert_string_not_equal(json_object_get_string(nn), json_object_get_string(nn2));
	}
	assert_true(fakehost_looks(fh) >= 2);
	assert_int_equal(fakehost_removes(fh), 0);
	snprintf(want, sizeof(want), "%s,/tmp/lm-fixtures/a.1.qcow2,/tmp/lm-fixtures/a.0.qcow2",
		 pa);
	assert_result_chain(fx, "vda", want);
	snprintf(want, sizeof(want), "%s,%s,%s,%s,%s", pb, fx->fb[0], fx->fb[1], fx->fb[2],
		 fx->fb[3]);
	assert_result_chain(fx, "vdb", want);
	assert_msg(fx, "snapshot taken of 2 disks");
}

static void fq_make_file(struct fq *fq, void *arg)
{
	const char *path = arg;
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);

	(void)fq;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "QFI\xfb", 4), 4);
	close(fd);
}

/* QEMU creates vda's overlay, then refuses the transaction for vdb: the
 * overlay this run created is removed; nothing else is. */
static void test_snapshot_transaction_error(void **state)
{
	struct fixture *fx = *state;
	char pa[512], pb[512], keep[512];
	const struct merge_target t[2] = { { .disk = "vda", .overlay = pa },
					   { .disk = "vdb", .overlay = pb } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 2, .targets = t };
	struct stat st;

	snapshot_paths(fx, pa, pb, sizeof(pa));
	snprintf(keep, sizeof(keep), "%s/other.qcow2", fx->tmp);
	fq_make_file(NULL, keep);
	s_begin(fx, "[]");
	s_expect_transaction(fx, pa, pb);
	fq_call(fx->fq, fq_make_file, pa);
	fq_reply_error(fx->fq, "GenericError",
		       "Could not create file: Permission denied");
	s_fetch(fx, &fx->vm, NULL);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_FAILED);
	assert_contains(fx->err.msg, "Permission denied");
	assert_string_equal(fx->err.qmp_class, "GenericError");
	assert_cmds(fx, "transaction");
	assert_int_equal(lstat(pa, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(lstat(keep, &st), 0);
	assert_msg(fx, "removed");
	assert_result_chain(fx, "vda", "/tmp/lm-fixtures/a.1.qcow2,/tmp/lm-fixtures/a.0.qcow2");
}

/* With no file access on the host, QEMU is asked whether each overlay
 * exists: a read-only probe node. "No such file" lets the snapshot go on;
 * a probe that opens (the file exists) is closed again and refused; any
 * other answer cannot tell and refuses: never an overwrite on a guess. */
static void probe_case(void **state, const char *answer_b)
{
	struct fixture *fx = *state;
	char pa[512], pb[512], args[1024], enoent[1024], other[1024];
	const struct merge_target t[2] = { { .disk = "vda", .overlay = pa },
					   { .disk = "vdb", .overlay = pb } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 2, .targets = t };
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	struct tvm after = fx->vm;
	int h1, h2;

	snapshot_paths(fx, pa, pb, sizeof(pa));
	req.host = h;
	fakehost_set_where(h, "host7");
	fakehost_fail_looks(fh, LM_ERR_UNSUPPORTED);
	vm_snapshot(&after, "vda", pa, "snap-a");
	vm_snapshot(&after, "vdb", pb, "snap-b");
	s_begin(fx, "[]");
	snprintf(args, sizeof(args), "{\"driver\": \"file\", \"filename\": \"%s\", "
		 "\"read-only\": true, \"locking\": \"off\"}", pa);
	h1 = fq_expect(fx->fq, "blockdev-add", args);
	snprintf(args, sizeof(args), "{\"driver\": \"file\", \"filename\": \"%s\"}", pb);
	h2 = fq_expect(fx->fq, "blockdev-add", args);
	snprintf(enoent, sizeof(enoent), "Could not open '%s': No such file or directory", pa);
	fq_reply_error_to(fx->fq, h1, "GenericError", enoent);
	if (strcmp(answer_b, "absent") == 0) {
		snprintf(enoent, sizeof(enoent), "Could not open '%s': No such file or directory", pb);
		fq_reply_error_to(fx->fq, h2, "GenericError", enoent);
		s_expect_transaction(fx, pa, pb);
		fq_reply_return(fx->fq, "{}");
		s_fetch(fx, &after, NULL);
	} else if (strcmp(answer_b, "exists") == 0) {
		fq_reply_return_to(fx->fq, h2, "{}");
		fq_expect(fx->fq, "blockdev-del", NULL);
		fq_reply_return(fx->fq, "{}");
	} else {
		snprintf(other, sizeof(other), "Could not open '%s': Permission denied", pb);
		fq_reply_error_to(fx->fq, h2, "GenericError", other);
	}
	fx_start(fx, &req);
	fx_finish(fx, 10);
	if (strcmp(answer_b, "absent") == 0) {
		assert_result(fx, "snapshot", MERGE_DONE);
		assert_cmds(fx, "transaction");
		return;
	}
	assert_result(fx, "snapshot", MERGE_BAD_REQUEST);
	assert_cmds(fx, "");
	assert_contains(fx->err.msg, pb);
	assert_contains(fx->err.msg, "host7");
	assert_contains(fx->err.msg, strcmp(answer_b, "exists") == 0 ? "exists already"
								      : "cannot tell whether");
}

static void test_snapshot_probe_absent(void **state)
{
	probe_case(state, "absent");
}

static void test_snapshot_probe_exists(void **state)
{
	probe_case(state, "exists");
}

static void test_snapshot_probe_cannot_tell(void **state)
{
	probe_case(state, "denied");
}

/* An overlay path that exists is refused before anything is sent. */
static void test_snapshot_existing_overlay(void **state)
{
	struct fixture *fx = *state;
	char pa[512], pb[512];
	const struct merge_target t[2] = { { .disk = "vda", .overlay = pa },
					   { .disk = "vdb", .overlay = pb } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 2, .targets = t };
	struct stat st;

	snapshot_paths(fx, pa, pb, sizeof(pa));
	fq_make_file(NULL, pb);
	s_begin(fx, "[]");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_BAD_REQUEST);
	assert_contains(fx->err.msg, "exists already");
	assert_contains(fx->err.msg, pb);
	assert_cmds(fx, "");
	assert_int_equal(lstat(pb, &st), 0);
	assert_int_equal(st.st_size, 4);
}

/* A block device as OVERLAY: taken only when empty and unused; anything on
 * it (a qcow2 header, data) is refused before anything is sent. */
static void device_overlay_refused(void **state, const char *head, const char *why)
{
	struct fixture *fx = *state;
	const char *dev = "/dev/lm-test-device";
	const struct merge_target t[1] = { { .disk = "vda", .overlay = dev } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 1, .targets = t };
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	static unsigned char bytes[65536];

	memset(bytes, 0, sizeof(bytes));
	memcpy(bytes + 4096, head, strlen(head)); /* past the first sector: still seen */
	fakehost_file(fh, dev, HOST_FILE_BLOCK, bytes, sizeof(bytes));
	req.host = h;
	s_begin(fx, "[]");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_BAD_REQUEST);
	assert_contains(fx->err.msg, dev);
	assert_contains(fx->err.msg, why);
	assert_cmds(fx, "");
}

static void test_snapshot_device_with_data(void **state)
{
	device_overlay_refused(state, "some data", "not all zeros");
}

/* A device with a few bytes only (shorter than 64 KiB) cannot be told empty. */
static void test_snapshot_device_short(void **state)
{
	struct fixture *fx = *state;
	const char *dev = "/dev/lm-test-short";
	const struct merge_target t[1] = { { .disk = "vda", .overlay = dev } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 1, .targets = t };
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	static const unsigned char zeros[512];

	fakehost_file(fh, dev, HOST_FILE_BLOCK, zeros, sizeof(zeros));
	req.host = h;
	s_begin(fx, "[]");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_BAD_REQUEST);
	assert_contains(fx->err.msg, "shorter than 64 KiB");
	assert_cmds(fx, "");
}

/* An empty device is formatted through QMP before the transaction: its node
 * is added, a create job formats it naming the active layer, the qcow2 is
 * opened, and the transaction puts it on top by node (blockdev-snapshot). */
static void test_snapshot_device_formatted(void **state)
{
	struct fixture *fx = *state;
	const char *dev = "/dev/lm-test-empty";
	const struct merge_target t[1] = { { .disk = "vda", .overlay = dev } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 1, .targets = t };
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	static const unsigned char zeros[65536];
	json_object *actions, *a, *v;
	char id[256];

	fakehost_file(fh, dev, HOST_FILE_BLOCK, zeros, sizeof(zeros));
	req.host = h;
	s_begin(fx, "[]");
	fq_expect(fx->fq, "blockdev-add", NULL);
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "blockdev-create", NULL);
	fq_reply_return(fx->fq, "{}");
	snprintf(id, sizeof(id), "[{\"id\": \"lm-create-%08x\", \"type\": \"create\", "
		 "\"status\": \"concluded\", \"current-progress\": 1, \"total-progress\": 1}]",
		 g_hash(dev));
	fq_expect(fx->fq, "query-jobs", NULL);
	fq_reply_return(fx->fq, id);
	fq_expect(fx->fq, "job-dismiss", NULL);
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "blockdev-add", NULL);
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "transaction", NULL);
	fq_reply_error(fx->fq, "GenericError", "refused for the test");
	s_fetch(fx, &fx->vm, NULL); /* the chains read again: as before */
	/* the undo: the qcow2 node, the wipe of what QEMU wrote, the device node */
	fq_expect(fx->fq, "blockdev-del", NULL);
	fq_reply_return(fx->fq, "{}");
	fq_expect(fx->fq, "query-blockstats", NULL);
	fq_reply_return(fx->fq, "[]");
	fq_expect(fx->fq, "human-monitor-command", NULL);
	fq_reply_return(fx->fq, "\"\"");
	fq_expect(fx->fq, "blockdev-del", NULL);
	fq_reply_return(fx->fq, "{}");
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_FAILED);
	assert_true(json_object_object_get_ex(fx->cmd_args[1], "options", &v));
	assert_string_equal(json_object_get_string(json_object_object_get(v, "backing-file")),
			    fx->vm.d[0].l[0].file);
	assert_cmds(fx, "blockdev-add,blockdev-create,job-dismiss,blockdev-add,transaction,"
			"blockdev-del,human-monitor-command,blockdev-del");
	assert_true(json_object_object_get_ex(fx->cmd_args[4], "actions", &actions));
	a = json_object_array_get_idx(actions, 0);
	assert_string_equal(json_object_get_string(json_object_object_get(a, "type")),
			    "blockdev-snapshot");
	assert_msg(fx, "vda: wiping the 65536 bytes this run wrote on /dev/lm-test-empty");
}

/* ------------------------------------------------------------ tests: dry run */

static void test_dry_run_commit(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	json_object *v;

	req.dry_run = 1;
	req.delete_removed = 1; /* ... and still nothing is deleted */
	req.host = h;
	s_begin(fx, "[]");
	s_fetch(fx, &fx->vm, NULL); /* the read-back: queries are allowed */
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	/* the whole sequence a real run sends, the releases included */
	assert_cmds(fx, happy_cmds);
	assert_string_equal(cmd_arg(fx, 0, "job-id"), JV);
	assert_string_equal(cmd_arg(fx, 10, "node-name"), "vda-top");
	assert_true(json_object_object_get_ex(fx->result, "dry-run", &v));
	assert_true(json_object_get_boolean(v));
	assert_int_equal(fakehost_removes(fh), 0);
}

/* --delete: after the chains are verified and the nodes released, the
 * images that left the chains are deleted (and only those). */
static void test_commit_delete_removed(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);

	req.delete_removed = 1;
	req.host = h;
	/* on disk: each removed layer names the layer below it; each base,
	 * now the active layer, names what it named before */
	fakehost_qcow2(fh, "/tmp/lm-fixtures/a.1.qcow2", "/tmp/lm-fixtures/a.0.qcow2", NULL);
	fakehost_qcow2(fh, "/tmp/lm-fixtures/a.0.qcow2", NULL, NULL);
	fakehost_qcow2(fh, fx->fb[0], fx->fb[1], NULL);
	fakehost_qcow2(fh, fx->fb[1], fx->fb[2], NULL);
	run_happy_commit(fx, &req);
	assert_int_equal(fakehost_removes(fh), 2);
	assert_true(fakehost_removed(fh, "/tmp/lm-fixtures/a.1.qcow2"));
	assert_true(fakehost_removed(fh, fx->fb[0]));
	assert_msg(fx, "vda: deleted /tmp/lm-fixtures/a.1.qcow2");
	assert_null(json_object_object_get(fx->result, "left"));
}

/* --delete on QEMU's word alone deletes nothing: a layer that is a symlink,
 * a text file, or a qcow2 whose header names another backing is left in
 * place with the reason; the merge itself still succeeds. */
static void delete_refused(void **state, const char *which, const char *why)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	struct fakehost *fh;
	struct host *h = fx->host = fakehost_new(fx->loop, &fh);
	const char *a1 = "/tmp/lm-fixtures/a.1.qcow2";
	json_object *left, *l0;

	req.delete_removed = 1;
	req.host = h;
	fakehost_qcow2(fh, "/tmp/lm-fixtures/a.0.qcow2", NULL, NULL);
	fakehost_qcow2(fh, fx->fb[0], fx->fb[1], NULL);
	fakehost_qcow2(fh, fx->fb[1], fx->fb[2], NULL);
	if (strcmp(which, "symlink") == 0) {
		fakehost_file(fh, a1, HOST_FILE_SYMLINK, NULL, 0);
	} else if (strcmp(which, "text") == 0) {
		fakehost_qcow2(fh, a1, NULL, "root:x:0:0:root:/root:/bin/bash\n");
	} else if (strcmp(which, "other-backing") == 0) {
		fakehost_qcow2(fh, a1, "/etc/other.qcow2", NULL);
	} else { /* the base, now active, names a backing it never had */
		fakehost_qcow2(fh, "/tmp/lm-fixtures/a.0.qcow2", "/tmp/lm-fixtures/elsewhere.qcow2",
			       NULL);
		fakehost_qcow2(fh, a1, "/tmp/lm-fixtures/a.0.qcow2", NULL);
	}
	run_happy_commit(fx, &req);
	/* vdb's layer passed every check and went; vda's stayed, with the reason */
	assert_int_equal(fakehost_removes(fh), 1);
	assert_true(fakehost_removed(fh, fx->fb[0]));
	assert_true(json_object_object_get_ex(fx->result, "left", &left));
	assert_int_equal(json_object_array_length(left), 1);
	l0 = json_object_array_get_idx(left, 0);
	assert_string_equal(json_object_get_string(json_object_object_get(l0, "file")), a1);
	assert_contains(json_object_get_string(json_object_object_get(l0, "why")), why);
	assert_msg(fx, "vda: left /tmp/lm-fixtures/a.1.qcow2");
}

static void test_delete_refused_symlink(void **state)
{
	delete_refused(state, "symlink", "it is a symbolic link");
}

static void test_delete_refused_text(void **state)
{
	delete_refused(state, "text", "it holds no qcow2 header");
}

static void test_delete_refused_other_backing(void **state)
{
	delete_refused(state, "other-backing",
		       "its header names backing file /etc/other.qcow2, expected /tmp/lm-fixtures/a.0.qcow2");
}

static void test_delete_refused_result_unverified(void **state)
{
	delete_refused(state, "base", "the image now holding the data, /tmp/lm-fixtures/a.0.qcow2");
}

static void test_dry_run_snapshot(void **state)
{
	struct fixture *fx = *state;
	char pa[512], pb[512];
	const struct merge_target t[2] = { { .disk = "vda", .overlay = pa },
					   { .disk = "vdb", .overlay = pb } };
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .ntargets = 2, .targets = t };

	snapshot_paths(fx, pa, pb, sizeof(pa));
	req.dry_run = 1;
	s_begin(fx, "[]");
	s_fetch(fx, &fx->vm, NULL);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "snapshot", MERGE_DONE);
	assert_cmds(fx, "transaction");
}

/* ------------------------------------------------------------ tests: out of space */

static void s_enospc(struct fixture *fx, const char *job)
{
	char data[256];

	snprintf(data, sizeof(data),
		 "{\"device\": \"%s\", \"operation\": \"write\", \"action\": \"stop\"}", job);
	fq_event(fx->fq, "BLOCK_JOB_ERROR", data);
	fq_job_status(fx->fq, job, "paused");
	/* the engine reads how far the job got, for its report */
	snprintf(data, sizeof(data),
		 "[{\"current-progress\": 524288, \"status\": \"paused\", \"total-progress\": "
		 "1048576, \"type\": \"commit\", \"id\": \"%s\"}]",
		 job);
	fq_command(fx->fq, "query-jobs", NULL, data);
}

static void test_enospc_cancels_all(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	int h1, h2;

	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JB);
	s_enospc(fx, JV);
	h1 = s_verb(fx, "job-cancel", JV);
	h2 = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_cancelled(fx, JV);
	fq_reply_return_to(fx->fq, h2, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, both_cancelled, 1, 1);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_contains(fx->err.msg, "vda: no space left on device");
	assert_contains(fx->err.msg, "--wait-for-space");
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-cancel,job-dismiss,job-dismiss");
	assert_statuses(fx, "vda", JV, "created,running,paused,aborting,concluded,null");
}

static void test_enospc_wait_resumes(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	ev_tstamp t0;

	req.wait_for_space = 10;
	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JB);
	s_enospc(fx, JV);
	s_verb(fx, "job-resume", JV);
	fq_reply_return(fx->fq, "{}");
	fq_job_status(fx->fq, JV, "running");
	s_ready(fx, JV);
	s_tail_from_ready(fx);
	ev_now_update(fx->loop);
	t0 = ev_now(fx->loop);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	ev_now_update(fx->loop);
	assert_result(fx, "commit", MERGE_DONE);
	/* resumed on the 2 s timer, not at once */
	assert_true(ev_now(fx->loop) - t0 >= 1.9);
	assert_cmds(fx, "block-commit,block-commit,job-resume,job-complete,job-complete,"
			"human-monitor-command,human-monitor-command,"
			"job-finalize,job-finalize,job-dismiss,job-dismiss,"
			"blockdev-del,blockdev-del,blockdev-del,blockdev-del,"
			"human-monitor-command,human-monitor-command");
	assert_msg(fx, "it resumes by itself");
	assert_msg(fx, "after 524288 of 1048576 bytes (50%)");
	assert_statuses(fx, "vda", JV,
			"created,running,paused,running,ready,waiting,pending,concluded,null");
}

/* No space within the budget (1 s, checked on the 2 s timer): cancel all. */
static void test_enospc_wait_budget_spent(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	int h1, h2;

	req.wait_for_space = 1;
	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JB);
	s_enospc(fx, JV);
	h1 = s_verb(fx, "job-cancel", JV);
	h2 = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_cancelled(fx, JV);
	fq_reply_return_to(fx->fq, h2, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, both_cancelled, 1, 1);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_contains(fx->err.msg, "no space appeared within 1 s");
	assert_cmds(fx, "block-commit,block-commit,job-cancel,job-cancel,job-dismiss,job-dismiss");
}

/* ------------------------------------------------------------ tests: adopt */

static void test_adopt_running_jobs(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	char jobs[1024] = "[";

	req.adopt = 1;
	job_entry(jobs, sizeof(jobs), JV, "running", NULL);
	job_entry(jobs, sizeof(jobs), JB, "ready", NULL);
	strcat(jobs, "]");
	s_begin(fx, jobs);
	s_ready(fx, JV);
	s_tail_from_ready(fx);
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	assert_cmds(fx, "job-complete,job-complete,human-monitor-command,human-monitor-command,"
			"job-finalize,job-finalize,job-dismiss,job-dismiss,blockdev-del,blockdev-del,"
			"blockdev-del,blockdev-del,human-monitor-command,human-monitor-command");
	assert_msg(fx, "vda: taking over job " JV " (running)");
	assert_msg(fx, "vdb: taking over job " JB " (ready)");
}

/* ------------------------------------------------------------ tests: journal */

struct jcheck {
	struct fixture *fx;
	const char *step, *disk;
	int ok;
};

/* At the point the fake receives a command, its step is in the journal. */
static void fq_check_journal(struct fq *fq, void *arg)
{
	struct jcheck *jc = arg;
	json_object *entries = NULL;
	struct lm_error err;
	int finished;
	size_t i;

	(void)fq;
	if (merge_journal_last(jc->fx->journal, &entries, &finished, &err) < 0 || entries == NULL)
		return;
	for (i = 0; i < json_object_array_length(entries); i++) {
		json_object *e = json_object_array_get_idx(entries, i), *s, *d;

		if (json_object_object_get_ex(e, "step", &s) &&
		    strcmp(json_object_get_string(s), jc->step) == 0 &&
		    json_object_object_get_ex(e, "disk", &d) &&
		    strcmp(json_object_get_string(d), jc->disk) == 0)
			jc->ok = 1;
	}
	json_object_put(entries);
}

static void test_journal_steps(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	static const char *const step_of[][2] = {
		{ "block-commit", "start" },  { "job-complete", "complete" },
		{ "job-finalize", "finalize" }, { "job-dismiss", "dismiss" },
		{ "blockdev-del", "release" }, { "human-monitor-command", "flush" },
	};
	struct jcheck jc_start = { fx, "start", "vda", 0 }, jc_fin = { fx, "finalize", "vdb", 0 };
	json_object *entries = NULL, *intent, *v, *disks, *d0;
	struct lm_error err;
	int finished = 0, i;
	size_t k;

	fx->journal = merge_journal_open(fx->tmp, "unix:/run/vm.qmp", &err);
	assert_non_null(fx->journal);
	req.journal = fx->journal;
	s_begin(fx, "[]");
	fq_expect(fx->fq, "block-commit", "{\"job-id\": \"" JV "\"}");
	fq_call(fx->fq, fq_check_journal, &jc_start);
	fq_job_status(fx->fq, JV, "created");
	fq_job_status(fx->fq, JV, "running");
	fq_reply_return(fx->fq, "{}");
	s_commit_start(fx, JB, fx->nb[0], fx->nb[0], fx->nb[1]);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_complete(fx, JV);
	s_complete(fx, JB);
	s_pending(fx, JV);
	s_pending(fx, JB);
	s_flush(fx);
	s_flush(fx);
	{
		int h1 = s_verb(fx, "job-finalize", JV);
		int h2 = s_verb(fx, "job-finalize", JB);

		fq_call(fx->fq, fq_check_journal, &jc_fin);
		s_concluded(fx, JV);
		fq_reply_return_to(fx->fq, h1, "{}");
		s_concluded(fx, JB);
		fq_reply_return_to(fx->fq, h2, "{}");
	}
	{
		struct tvm after = vm_both_committed(fx);

		fq_command(fx->fq, "query-jobs", NULL, both_concluded);
		s_dismiss(fx, JV);
		s_dismiss(fx, JB);
		s_fetch(fx, &after, NULL);
		s_release(fx, "vda-top");
		s_release(fx, "vda-file");
		s_release(fx, "vdb-top");
		s_release(fx, "vdb-file");
		s_flush(fx);
		s_flush(fx);
	}
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_DONE);
	assert_int_equal(jc_start.ok, 1);
	assert_int_equal(jc_fin.ok, 1);

	assert_int_equal(merge_journal_last(fx->journal, &entries, &finished, &err), 0);
	assert_int_equal(finished, 1);
	/* intent, one step per state-changing command in the same order, end */
	assert_int_equal(json_object_array_length(entries), (size_t)fx->ncmds + 2);
	intent = json_object_array_get_idx(entries, 0);
	assert_true(json_object_object_get_ex(intent, "step", &v));
	assert_string_equal(json_object_get_string(v), "intent");
	for (i = 0; i < fx->ncmds; i++) {
		json_object *e = json_object_array_get_idx(entries, (size_t)i + 1);
		const char *want = NULL;

		for (k = 0; k < sizeof(step_of) / sizeof(step_of[0]); k++)
			if (strcmp(step_of[k][0], fx->cmd_name[i]) == 0)
				want = step_of[k][1];
		assert_non_null(want);
		assert_true(json_object_object_get_ex(e, "step", &v));
		if (strcmp(json_object_get_string(v), want) != 0)
			fail_msg("journal entry %d is %s, the command %s", i + 1,
				 json_object_get_string(v), fx->cmd_name[i]);
		if (i < 8) {
			assert_true(json_object_object_get_ex(e, "job", &v));
			assert_string_equal(json_object_get_string(v), i % 2 ? JB : JV);
		}
	}
	v = json_object_array_get_idx(entries, json_object_array_length(entries) - 1);
	assert_true(json_object_object_get_ex(v, "step", &v));
	assert_string_equal(json_object_get_string(v), "end");
	/* what recovery needs */
	assert_true(json_object_object_get_ex(intent, "verb", &v));
	assert_string_equal(json_object_get_string(v), "commit");
	assert_true(json_object_object_get_ex(intent, "target", &v));
	assert_string_equal(json_object_get_string(v), "fake");
	assert_true(json_object_object_get_ex(intent, "disks", &disks));
	assert_int_equal(json_object_array_length(disks), 2);
	d0 = json_object_array_get_idx(disks, 0);
	assert_true(json_object_object_get_ex(d0, "job", &v));
	assert_string_equal(json_object_get_string(v), JV);
	assert_true(json_object_object_get_ex(d0, "root", &v));
	assert_string_equal(json_object_get_string(v), "vda-top");
	assert_true(json_object_object_get_ex(d0, "before", &v));
	assert_int_equal(json_object_array_length(v), 2);
	assert_true(json_object_object_get_ex(d0, "expect", &v));
	assert_int_equal(json_object_array_length(v), 1);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)),
			    "/tmp/lm-fixtures/a.0.qcow2");
	assert_true(json_object_object_get_ex(d0, "remove", &v));
	assert_int_equal(json_object_array_length(v), 1);
	json_object_put(entries);
}

/* A rolled-back run journals its end with the outcome. */
static void test_journal_rollback_end(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	json_object *entries = NULL, *last, *v;
	struct lm_error err;
	int finished = 0;
	int h1, h2;

	fx->journal = merge_journal_open(fx->tmp, "/x", &err);
	assert_non_null(fx->journal);
	req.journal = fx->journal;
	s_begin(fx, "[]");
	s_start_both(fx);
	h1 = s_verb(fx, "job-cancel", JV);
	h2 = s_verb(fx, "job-cancel", JB);
	fq_reply_return_to(fx->fq, h1, "{}");
	s_cancelled(fx, JV);
	fq_reply_return_to(fx->fq, h2, "{}");
	s_cancelled(fx, JB);
	s_rollback_tail(fx, both_cancelled, 1, 1);
	fx->cancel_on_msg = "vdb: job " JB " started";
	fx_start(fx, &req);
	fx_finish(fx, 10);
	assert_result(fx, "commit", MERGE_FAILED);
	assert_int_equal(merge_journal_last(fx->journal, &entries, &finished, &err), 0);
	assert_int_equal(finished, 1);
	assert_int_equal(json_object_array_length(entries), (size_t)fx->ncmds + 2);
	last = json_object_array_get_idx(entries, json_object_array_length(entries) - 1);
	assert_true(json_object_object_get_ex(last, "outcome", &v));
	assert_int_equal(json_object_get_int(v), MERGE_FAILED);
	json_object_put(entries);
}

/* A group freed from inside its done callback. */
static void cb_done_free(const struct merge_result *r, void *arg)
{
	struct fixture *fx = arg;

	cb_done(r, arg);
	merge_group_free(fx->g);
	fx->g = NULL;
}

static void test_free_in_done(void **state)
{
	struct fixture *fx = *state;
	struct merge_request req = commit_req(both, 2);
	const struct merge_callbacks c2 = { cb_job, cb_command, cb_message, cb_done_free };
	struct lm_error err;

	s_begin(fx, "[]");
	s_start_both(fx);
	s_ready(fx, JV);
	s_ready(fx, JB);
	s_tail_from_ready(fx);
	fx_connect(fx);
	fx->g = merge_group_start(fx->c, &req, &c2, fx, &err);
	assert_non_null(fx->g);
	merge_group_set_poll_interval(fx->g, 0);
	fx_finish(fx, 10);
	assert_null(fx->g);
	assert_result(fx, "commit", MERGE_DONE);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_generator_matches_fixture),
		T(test_commit_two_disks),
		T(test_commit_ready_other_order),
		T(test_commit_pending_before_other_ready),
		T(test_commit_one_fails),
		T(test_commit_start_refused_second),
		T(test_commit_start_refused_first),
		T(test_commit_cancel_while_running),
		T(test_commit_cancel_while_starting),
		T(test_commit_cancel_before_start),
		T(test_commit_job_vanishes),
		T(test_commit_conn_closed_mid_job),
		T(test_commit_conn_closed_in_flight),
		T(test_commit_conn_closed_before_start),
		T(test_commit_conn_never_greets),
		T(test_commit_finalize_error),
		T(test_flush_storage_daemon),
		T(test_bad_unknown_disk),
		T(test_bad_unknown_top),
		T(test_bad_unknown_base),
		T(test_bad_base_above_top),
		T(test_bad_top_is_base),
		T(test_bad_disk_twice),
		T(test_bad_single_layer),
		T(test_bad_job_id_in_use),
		T(test_bad_request_refused_at_once),
		T(test_leftover_concluded_dismissed),
		T(test_snapshot_two_disks),
		T(test_snapshot_device_with_data),
		T(test_snapshot_device_short),
		T(test_snapshot_device_formatted),
		T(test_snapshot_transaction_error),
		T(test_snapshot_existing_overlay),
		T(test_snapshot_probe_absent),
		T(test_snapshot_probe_exists),
		T(test_snapshot_probe_cannot_tell),
		T(test_dry_run_commit),
		T(test_dry_run_snapshot),
		T(test_commit_delete_removed),
		T(test_delete_refused_symlink),
		T(test_delete_refused_text),
		T(test_delete_refused_other_backing),
		T(test_delete_refused_result_unverified),
		T(test_enospc_cancels_all),
		T(test_enospc_wait_resumes),
		T(test_enospc_wait_budget_spent),
		T(test_adopt_running_jobs),
		T(test_journal_steps),
		T(test_journal_rollback_end),
		T(test_free_in_done),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

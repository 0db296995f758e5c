/*
 * merge/batch: many VMs, one loop (see batch.h).
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/host.h"
#include "journal.h"
#include "vmlock.h"
#include "xlate.h"

struct bvm {
	struct merge_batch *b;
	int idx;
	struct host *host; /* where its image files are */
	struct qmp_conn *conn;
	struct qmp_conn *id_conn; /* phase one's, to ask who the VM is */
	struct merge_vm_claim *claim;
	struct merge_vm *vm; /* who it is; while it runs, its lock */
	struct lm_error id_err; /* why it could not be identified (code LM_OK: it was) */
	json_object *images;    /* the files it writes (xl_node_written_file), or NULL */
	int identifying, identified, images_pending;
	struct qga *qga;
	struct merge_journal *journal;
	struct merge_group *g;
	struct merge_request req;
	double started;
	int running, done;
};

struct merge_batch {
	struct ev_loop *loop;
	const struct merge_batch_vm *vms;
	int n;
	struct merge_batch_opts o;
	struct merge_batch_callbacks cb;
	void *arg;
	struct bvm *v;
	int next, running, ok, failed;
	int identifying_all; /* phase one: who each VM is, before anything runs */
	int next_id, identifying;
	int freeing; /* merge_batch_free runs: late replies are dropped */
	ev_idle kick;
	int finished;
};

static void batch_fill(struct merge_batch *b);

/* The ssh options of the batch. */
static struct tr_opts batch_tr_opts(const struct merge_batch *b)
{
	struct tr_opts o = { 0 };

	if (b->o.tr != NULL)
		o = *b->o.tr;
	o.loop = b->loop;
	if (o.timeout <= 0)
		o.timeout = b->o.timeout;
	return o;
}

/* A transport for target; VMs on one ssh host share its session. */
static struct tr *batch_transport(struct merge_batch *b, const char *target, struct lm_error *err)
{
	struct tr_opts o = batch_tr_opts(b);

	return tr_new_ex(target, &o, err);
}

/* The host of the VM at target (its image files are there). */
static struct host *batch_host(struct merge_batch *b, const char *target, struct lm_error *err)
{
	struct tr_opts o = batch_tr_opts(b);

	return host_new(target, &o, err);
}

static void bvm_release(struct bvm *v)
{
	merge_vm_claim_free(v->claim);
	v->claim = NULL;
	qmp_conn_free(v->id_conn);
	v->id_conn = NULL;
	merge_vm_free(v->vm);
	v->vm = NULL;
	json_object_put(v->images);
	v->images = NULL;
	merge_group_free(v->g);
	v->g = NULL;
	qga_free(v->qga);
	v->qga = NULL;
	qmp_conn_free(v->conn);
	v->conn = NULL;
	host_free(v->host);
	v->host = NULL;
	merge_journal_close(v->journal);
	v->journal = NULL;
}

static void bvm_end(struct bvm *v, const struct merge_result *r)
{
	struct merge_batch *b = v->b;

	if (v->done)
		return;
	v->done = 1;
	v->running = 0;
	b->running--;
	if (r->outcome == MERGE_DONE)
		b->ok++;
	else
		b->failed++;
	if (b->cb.vm_done != NULL)
		b->cb.vm_done(v->idx, r, ev_now(b->loop) - v->started, b->arg);
	/* freed from the loop: we may be inside the group's or conn's callback */
	ev_idle_start(b->loop, &b->kick);
}

/* A VM that ended before its group could start. */
static void bvm_fail(struct bvm *v, enum merge_outcome outcome, const struct lm_error *err)
{
	struct merge_result r = { .outcome = outcome, .err = err };
	json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string("result"));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "verb", json_object_new_string(merge_verb_name(v->req.verb)));
	json_object_object_add(o, "outcome", json_object_new_int(outcome));
	json_object_object_add(o, "disks", json_object_new_array());
	json_object_object_add(e, "code", json_object_new_string(lm_error_code_name(err->code)));
	json_object_object_add(e, "message", json_object_new_string(err->msg));
	json_object_object_add(o, "error", e);
	r.json = o;
	bvm_end(v, &r);
	json_object_put(o);
}

static void bvm_job(const struct merge_job_update *u, void *arg)
{
	struct bvm *v = arg;

	if (v->b->cb.vm_job != NULL)
		v->b->cb.vm_job(v->idx, u, v->b->arg);
}

static void bvm_message(const char *line, void *arg)
{
	struct bvm *v = arg;

	if (v->b->cb.vm_message != NULL)
		v->b->cb.vm_message(v->idx, line, v->b->arg);
}

static void bvm_command(const char *name, json_object *args, void *arg)
{
	struct bvm *v = arg;

	if (v->b->cb.vm_command != NULL)
		v->b->cb.vm_command(v->idx, name, args, v->b->arg);
}

static void bvm_done(const struct merge_result *r, void *arg)
{
	bvm_end(arg, r);
}

/* The VM's lock is held (or no journal is kept): journal, agent, host, group. */
static void bvm_go(struct bvm *v)
{
	struct merge_batch *b = v->b;
	const struct merge_batch_vm *vm = &b->vms[v->idx];
	struct merge_callbacks cbs = {
		.job = bvm_job, .message = bvm_message, .command = bvm_command, .done = bvm_done,
	};
	struct lm_error e;

	if (v->vm != NULL) {
		json_object *last = NULL;
		int finished = 1;

		v->journal = merge_vm_journal_open(b->o.journal_dir, v->vm, vm->target, &e);
		if (v->journal == NULL) {
			bvm_fail(v, MERGE_FAILED, &e);
			return;
		}
		if (merge_journal_last(v->journal, &last, &finished, &e) == 0 && last != NULL &&
		    !finished) {
			json_object_put(last);
			lm_error_set(&e, LM_ERR_STATE,
				     "an earlier operation on this VM did not finish: run "
				     "'livemerge -c %s recover' first", vm->target);
			bvm_fail(v, MERGE_FAILED, &e);
			return;
		}
		json_object_put(last);
		v->req.journal = v->journal;
	}
	if (vm->qga != NULL && v->req.verb == MERGE_SNAPSHOT) {
		struct tr *t = batch_transport(b, vm->qga, &e);

		if (t == NULL || (v->qga = qga_new(b->loop, t, b->o.timeout)) == NULL) {
			if (t != NULL)
				lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
			bvm_fail(v, MERGE_BAD_REQUEST, &e);
			return;
		}
		v->req.quiesce = v->qga;
	}
	/* a VM reached over ssh has its image files on that host */
	if (v->host == NULL && (v->host = batch_host(b, vm->target, &e)) == NULL) {
		bvm_fail(v, MERGE_CONN_FAILED, &e);
		return;
	}
	v->req.host = v->host;
	v->g = merge_group_start(v->conn, &v->req, &cbs, v, &e);
	if (v->g == NULL)
		bvm_fail(v, e.code == LM_ERR_USAGE ? MERGE_BAD_REQUEST : MERGE_FAILED, &e);
}

static void bvm_claimed(struct merge_vm *vm, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;

	merge_vm_free(v->vm); /* phase one's: this one holds the lock */
	v->vm = vm;
	if (vm == NULL) {
		bvm_fail(v, err->code == LM_ERR_BUSY ? MERGE_BAD_REQUEST : MERGE_CONN_FAILED, err);
		return;
	}
	bvm_go(v);
}

static void bvm_ready(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;
	struct merge_batch *b = v->b;
	struct merge_vm_claim_opts co = {
		.dir = b->o.journal_dir,
		.target = b->vms[v->idx].target,
		.verb = merge_verb_name(v->req.verb),
	};
	struct lm_error e;

	qmp_conn_set_state_cb(c, NULL, NULL);
	if (err != NULL) {
		bvm_fail(v, MERGE_CONN_FAILED, err);
		return;
	}
	if (b->o.dry_run || (b->o.journal_dir != NULL && *b->o.journal_dir == '\0')) {
		merge_vm_free(v->vm);
		v->vm = NULL;
		bvm_go(v);
		return;
	}
	/* the VM's lock, while its verb runs; its journal is named after it */
	v->claim = merge_vm_claim_start(c, &co, bvm_claimed, v, &e);
	if (v->claim == NULL)
		bvm_fail(v, MERGE_CONN_FAILED, &e);
}

static void bvm_start(struct bvm *v)
{
	struct merge_batch *b = v->b;
	const struct merge_batch_vm *vm = &b->vms[v->idx];
	struct qmp_conn_opts co = { .connect_timeout = b->o.timeout, .command_timeout = b->o.timeout };
	struct lm_error e;
	struct tr *t;

	v->running = 1;
	b->running++;
	v->started = ev_now(b->loop);
	v->req = *vm->req;
	v->req.dry_run = v->req.dry_run || b->o.dry_run;
	if (v->id_err.code != LM_OK) {
		bvm_fail(v, MERGE_CONN_FAILED, &v->id_err);
		return;
	}
	t = batch_transport(b, vm->target, &e);
	if (t == NULL) {
		bvm_fail(v, MERGE_BAD_REQUEST, &e);
		return;
	}
	v->conn = qmp_conn_new(b->loop, t, &co);
	if (v->conn == NULL) {
		lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
		bvm_fail(v, MERGE_CONN_FAILED, &e);
		return;
	}
	qmp_conn_set_state_cb(v->conn, bvm_ready, v);
	if (qmp_conn_start(v->conn, &e) < 0)
		bvm_fail(v, MERGE_CONN_FAILED, &e);
}

static void batch_fill(struct merge_batch *b)
{
	while (b->running < b->o.parallel && b->next < b->n)
		bvm_start(&b->v[b->next++]);
}

/* Phase one: who the VM is (its key, the images it writes), on a
 * connection of its own. */
static void bvm_identified(struct merge_vm *vm, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;

	if (vm != NULL)
		v->vm = vm;
	if (vm == NULL && err != NULL)
		v->id_err = *err;
	v->identifying = 0;
	v->identified = 1;
	v->b->identifying--;
	ev_idle_start(v->b->loop, &v->b->kick); /* its connection goes from the loop */
}

static void bvm_images_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			  void *arg)
{
	struct bvm *v = arg;
	size_t i, n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;

	(void)c;
	v->images_pending = 0;
	if (v->b->freeing)
		return;
	/* no answer: the images are not compared, the VM still runs */
	for (i = 0; err == NULL && i < n; i++) {
		const char *f = xl_node_written_file(json_object_array_get_idx(ret, i));

		if (f == NULL)
			continue;
		if (v->images == NULL)
			v->images = json_object_new_array();
		json_object_array_add(v->images, json_object_new_string(f));
	}
	bvm_identified(NULL, NULL, v);
}

/* Known who it is: then which images it writes. */
static void bvm_id_claimed(struct merge_vm *vm, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;
	struct xl_cmd cmd = xl_nodes();
	struct lm_error e;

	if (vm == NULL) {
		json_object_put(cmd.args);
		bvm_identified(NULL, err, v);
		return;
	}
	v->vm = vm;
	v->images_pending = 1;
	if (qmp_conn_execute(v->id_conn, cmd.name, cmd.args, -1, bvm_images_cb, v, &e) < 0) {
		v->images_pending = 0;
		bvm_identified(NULL, NULL, v);
	}
	json_object_put(cmd.args);
}

static void bvm_id_ready(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;
	struct merge_vm_claim_opts co = {
		.dir = v->b->o.journal_dir != NULL && *v->b->o.journal_dir == '\0' ? NULL
										     : v->b->o.journal_dir,
		.target = v->b->vms[v->idx].target,
	};
	struct lm_error e;

	qmp_conn_set_state_cb(c, NULL, NULL);
	if (err == NULL && (v->claim = merge_vm_claim_start(c, &co, bvm_id_claimed, v, &e)) != NULL)
		return;
	bvm_identified(NULL, err != NULL ? err : &e, v);
}

static void bvm_identify(struct bvm *v)
{
	struct merge_batch *b = v->b;
	struct qmp_conn_opts co = { .connect_timeout = b->o.timeout, .command_timeout = b->o.timeout };
	struct lm_error e;
	struct tr *t;

	v->identifying = 1;
	b->identifying++;
	t = batch_transport(b, b->vms[v->idx].target, &e);
	if (t == NULL) {
		bvm_identified(NULL, &e, v);
		return;
	}
	v->id_conn = qmp_conn_new(b->loop, t, &co);
	if (v->id_conn == NULL) {
		lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
		bvm_identified(NULL, &e, v);
		return;
	}
	qmp_conn_set_state_cb(v->id_conn, bvm_id_ready, v);
	if (qmp_conn_start(v->id_conn, &e) < 0)
		bvm_identified(NULL, &e, v);
}

/* Two entries whose VMs write one image (one process: QEMU's image locks):
 * 1 if found (reported). */
static int batch_same_images(struct merge_batch *b)
{
	json_object *seen = json_object_new_object(), *at;
	char why[600];
	size_t k;
	int i;

	for (i = 0; i < b->n; i++) {
		for (k = 0; b->v[i].images != NULL && k < json_object_array_length(b->v[i].images);
		     k++) {
			const char *f = json_object_get_string(json_object_array_get_idx(b->v[i].images, k));

			if (!json_object_object_get_ex(seen, f, &at)) {
				json_object_object_add(seen, f, json_object_new_int(i));
				continue;
			}
			if (json_object_get_int(at) == i)
				continue;
			snprintf(why, sizeof(why), "both write the image %s", f);
			if (b->cb.duplicate != NULL)
				b->cb.duplicate(json_object_get_int(at), i, why, b->arg);
			json_object_put(seen);
			return 1;
		}
	}
	json_object_put(seen);
	return 0;
}

/* Two entries that name one VM: the same journal name of their targets,
 * or the same key (one VM through two monitors). 1 if found (reported). */
static int batch_duplicates(struct merge_batch *b, int by_identity)
{
	char si[MERGE_VM_KEY_MAX], sk[MERGE_VM_KEY_MAX], why[MERGE_VM_KEY_MAX + 64];
	int i, k;

	for (i = 0; i < b->n; i++) {
		for (k = 0; k < i; k++) {
			if (by_identity) {
				if (b->v[i].vm == NULL || b->v[k].vm == NULL ||
				    strcmp(b->v[i].vm->key, b->v[k].vm->key) != 0)
					continue;
				snprintf(why, sizeof(why), "both reach the VM with %s", b->v[i].vm->desc);
			} else {
				merge_journal_target_stem(b->vms[i].target, si, sizeof(si));
				merge_journal_target_stem(b->vms[k].target, sk, sizeof(sk));
				if (strcmp(si, sk) != 0)
					continue;
				snprintf(why, sizeof(why), "both name the monitor %s", b->vms[i].target);
			}
			if (b->cb.duplicate != NULL)
				b->cb.duplicate(k, i, why, b->arg);
			return 1;
		}
	}
	return 0;
}

/* Phase one's connections that are done with. */
static void batch_let_go_ids(struct merge_batch *b)
{
	int i;

	for (i = 0; i < b->n; i++) {
		if (b->v[i].identified && b->v[i].id_conn != NULL && !b->v[i].images_pending) {
			merge_vm_claim_free(b->v[i].claim);
			b->v[i].claim = NULL;
			qmp_conn_free(b->v[i].id_conn);
			b->v[i].id_conn = NULL;
		}
	}
}

/* Phase one's step: identify up to parallel VMs at once; when every VM is
 * known, refuse a plan naming one twice. 0 when phase two may start. The
 * next connections start before the finished ones go: VMs on one ssh host
 * keep one session (phase two's first ones start before phase one's last
 * go, in batch_kick_cb). */
static int batch_identify_step(struct merge_batch *b)
{
	/* the same target twice: refused before anything connects */
	if (b->next_id == 0 && batch_duplicates(b, 0)) {
		b->finished = 1;
		if (b->cb.done != NULL)
			b->cb.done(0, 0, b->arg);
		return 1;
	}
	while (b->identifying < b->o.parallel && b->next_id < b->n)
		bvm_identify(&b->v[b->next_id++]);
	if (b->identifying > 0 || b->next_id < b->n) {
		batch_let_go_ids(b);
		return 1;
	}
	b->identifying_all = 0;
	if (batch_duplicates(b, 1) || batch_same_images(b)) {
		batch_let_go_ids(b);
		b->finished = 1;
		if (b->cb.done != NULL)
			b->cb.done(0, 0, b->arg);
		return 1;
	}
	return 0;
}

static void batch_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct merge_batch *b = w->data;
	int i;

	(void)revents;
	ev_idle_stop(loop, w);
	if (b->finished)
		return;
	if (b->identifying_all && batch_identify_step(b))
		return;
	/* start the next VMs before letting the finished ones go: a VM on the
	 * same ssh host then joins the session they kept open */
	batch_fill(b);
	batch_let_go_ids(b);
	for (i = 0; i < b->n; i++)
		if (b->v[i].done && (b->v[i].conn != NULL || b->v[i].g != NULL))
			bvm_release(&b->v[i]);
	if (b->running == 0 && b->next == b->n && !b->finished) {
		b->finished = 1;
		if (b->cb.done != NULL)
			b->cb.done(b->ok, b->failed, b->arg);
	}
}

struct merge_batch *merge_batch_start(struct ev_loop *loop, const struct merge_batch_vm *vms,
				      int n, const struct merge_batch_opts *opts,
				      const struct merge_batch_callbacks *cb, void *arg,
				      struct lm_error *err)
{
	struct merge_batch *b = calloc(1, sizeof(*b));
	int i;

	if (b == NULL || (b->v = calloc((size_t)(n ? n : 1), sizeof(*b->v))) == NULL) {
		free(b);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	b->loop = loop;
	b->vms = vms;
	b->n = n;
	if (opts != NULL)
		b->o = *opts;
	if (b->o.parallel <= 0)
		b->o.parallel = 16;
	if (b->o.timeout <= 0)
		b->o.timeout = 30;
	b->cb = *cb;
	b->arg = arg;
	for (i = 0; i < n; i++) {
		b->v[i].b = b;
		b->v[i].idx = i;
	}
	ev_idle_init(&b->kick, batch_kick_cb);
	b->kick.data = b;
	b->identifying_all = 1;
	ev_idle_start(loop, &b->kick); /* starts from the loop, not from here */
	return b;
}

void merge_batch_free(struct merge_batch *b)
{
	int i;

	if (b == NULL)
		return;
	ev_idle_stop(b->loop, &b->kick);
	b->freeing = 1;
	for (i = 0; i < b->n; i++)
		bvm_release(&b->v[i]);
	free(b->v);
	free(b);
}

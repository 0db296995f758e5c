/*
 * merge/batch: many VMs, one loop (see batch.h).
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/host.h"
#include "journal.h"

struct bvm {
	struct merge_batch *b;
	int idx;
	struct host *host; /* where its image files are */
	struct qmp_conn *conn;
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

static void bvm_ready(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct bvm *v = arg;
	struct merge_batch *b = v->b;
	const struct merge_batch_vm *vm = &b->vms[v->idx];
	struct merge_callbacks cbs = {
		.job = bvm_job, .message = bvm_message, .command = bvm_command, .done = bvm_done,
	};
	struct lm_error e;

	qmp_conn_set_state_cb(c, NULL, NULL);
	if (err != NULL) {
		bvm_fail(v, MERGE_CONN_FAILED, err);
		return;
	}
	if (!b->o.dry_run && (b->o.journal_dir == NULL || *b->o.journal_dir != '\0')) {
		json_object *last = NULL;
		int finished = 1;

		v->journal = merge_journal_open(b->o.journal_dir, vm->target, &e);
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
	v->g = merge_group_start(c, &v->req, &cbs, v, &e);
	if (v->g == NULL)
		bvm_fail(v, e.code == LM_ERR_USAGE ? MERGE_BAD_REQUEST : MERGE_FAILED, &e);
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

static void batch_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct merge_batch *b = w->data;
	int i;

	(void)revents;
	ev_idle_stop(loop, w);
	/* start the next VMs before letting the finished ones go: a VM on the
	 * same ssh host then joins the session they kept open */
	batch_fill(b);
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
	ev_idle_start(loop, &b->kick); /* starts from the loop, not from here */
	return b;
}

void merge_batch_free(struct merge_batch *b)
{
	int i;

	if (b == NULL)
		return;
	ev_idle_stop(b->loop, &b->kick);
	for (i = 0; i < b->n; i++)
		bvm_release(&b->v[i]);
	free(b->v);
	free(b);
}

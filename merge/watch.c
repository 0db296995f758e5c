/*
 * merge/watch: block volumes kept ahead of the guest (see watch.h).
 *
 * Each QMP reply callback carries the watch and the connection generation
 * it was sent on; a reply from an earlier connection changes nothing.
 * Layers are found again by their protocol node's name, never by a
 * pointer kept across replies.
 */
#include "watch.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "query.h"
#include "xlate.h"

/* Without the image's cluster size (the chains do not carry it) the cap is
 * taken for the largest, 2 MiB: a few MiB per GiB above the truth for
 * 64 KiB clusters, never below it. */
#define WATCH_CAP_CLUSTER (2 << 20)

struct watch_layer {
	struct watch_layer *next;
	struct merge_watch *w;
	char *disk, *node, *prot, *path;
	int64_t size;     /* the volume's size as far as known: QEMU's, or what it was grown to */
	int64_t max;      /* the most the layer can need */
	int64_t armed;    /* the threshold QEMU holds, 0: none */
	int64_t allocated;
	int seen;         /* in the graph last read */
	int nospace;      /* the VM stopped for want of space here: resume once grown */
	struct merge_volume_op *op; /* the extension running */
	int64_t op_to;
	const char *op_why;
	double op_event, op_start;
};

struct merge_watch {
	struct ev_loop *loop;
	struct merge_watch_opts o;
	struct qmp_conn *c;
	unsigned gen;
	struct watch_layer *layers;
	ev_timer rescan;
	int refreshing, refresh_again;
	int ready;
	int vm_nospace;  /* the VM is stopped on ENOSPC of a watched layer */
	int continuing;  /* query-status / cont in flight */
	char *signature; /* which node each device wrote to at the last read */
	char *said;      /* the last message of a kind told once */
	int status;      /* 0 running, 1 lost, -1 fatal */
	struct lm_error err;
};

struct watch_req {
	struct merge_watch *w;
	unsigned gen;
	char *prot; /* the layer concerned, or NULL */
	int64_t bytes;
};

static void watch_refresh(struct merge_watch *w);
static void watch_extend(struct watch_layer *l, const char *why, double event);

static double watch_now(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void watch_msg(struct merge_watch *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void watch_msg(struct merge_watch *w, const char *fmt, ...)
{
	char line[700];
	va_list ap;

	if (w->o.message == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	w->o.message(line, w->o.arg);
}

/* The same, but not twice in a row (a state seen at every rescan). */
static void watch_msg_once(struct merge_watch *w, const char *line)
{
	if (w->said != NULL && strcmp(w->said, line) == 0)
		return;
	free(w->said);
	w->said = strdup(line);
	watch_msg(w, "%s", line);
}

static struct watch_layer *watch_find(struct merge_watch *w, const char *prot)
{
	struct watch_layer *l;

	for (l = w->layers; prot != NULL && l != NULL; l = l->next)
		if (strcmp(l->prot, prot) == 0)
			return l;
	return NULL;
}

static void watch_layer_free(struct watch_layer *l)
{
	merge_volume_cancel(l->op);
	free(l->disk);
	free(l->node);
	free(l->prot);
	free(l->path);
	free(l);
}

/* Send a command for layer l (NULL: none); cb gets a struct watch_req. */
static void watch_send(struct merge_watch *w, struct xl_cmd cmd, struct watch_layer *l,
		       int64_t bytes, qmp_reply_cb cb)
{
	struct watch_req *rq = calloc(1, sizeof(*rq));
	struct lm_error err;

	if (rq != NULL) {
		rq->w = w;
		rq->gen = w->gen;
		rq->bytes = bytes;
		rq->prot = l != NULL ? strdup(l->prot) : NULL;
	}
	if (rq == NULL || (l != NULL && rq->prot == NULL) ||
	    qmp_conn_execute(w->c, cmd.name, cmd.args, -1, cb, rq, &err) < 0) {
		/* the connection failed: its state callback tells */
		if (rq != NULL)
			free(rq->prot);
		free(rq);
	}
	json_object_put(cmd.args);
}

/* Take rq; 1 if its reply still concerns the current connection. */
static int watch_req_current(struct watch_req *rq, struct merge_watch **w, char **prot,
			     int64_t *bytes)
{
	int cur = rq->w->gen == rq->gen;

	*w = rq->w;
	*prot = rq->prot;
	if (bytes != NULL)
		*bytes = rq->bytes;
	free(rq);
	return cur;
}

/* The watch a reply without a layer is for, or NULL when it came on an
 * earlier connection; rq is freed. */
static struct merge_watch *watch_reply(void *arg)
{
	struct merge_watch *w;
	char *prot;

	if (!watch_req_current(arg, &w, &prot, NULL))
		w = NULL;
	free(prot);
	return w;
}

static void watch_armed_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	struct merge_watch *w;
	struct watch_layer *l;
	char *prot;
	int64_t bytes;

	(void)c, (void)ret;
	if (watch_req_current(arg, &w, &prot, &bytes) && (l = watch_find(w, prot)) != NULL) {
		if (err != NULL)
			watch_msg(w, "%s: QEMU refused a write threshold on %s: %s", l->disk, l->prot,
				  err->msg);
		else
			l->armed = bytes;
	}
	free(prot);
}

/* Arm l's threshold for its size; extend at once if QEMU has written past
 * it already (a write before the threshold existed). */
static void watch_arm(struct watch_layer *l)
{
	struct merge_watch *w = l->w;
	int64_t t = merge_volume_threshold(l->size, w->o.headroom, l->max);

	if (l->op != NULL || w->c == NULL || w->status != 0)
		return;
	if (t == 0) {
		watch_msg(w, "%s: %s is %" PRId64 " bytes, all a qcow2 of its size can need: not "
			     "watched further", l->disk, l->path, l->size);
		l->armed = -1;
		return;
	}
	if (l->allocated >= t) {
		watch_extend(l, "allocated", 0);
		return;
	}
	if (l->armed == t)
		return;
	watch_send(w, xl_write_threshold(l->prot, t), l, t, watch_armed_cb);
}

static void watch_continued_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			       void *arg)
{
	struct merge_watch *w;

	(void)c, (void)ret;
	if ((w = watch_reply(arg)) != NULL) {
		w->continuing = 0;
		if (err != NULL) {
			watch_msg(w, "QEMU refused to resume the VM: %s", err->msg);
		} else {
			w->vm_nospace = 0;
			watch_msg(w, "VM resumed: its volumes have room again");
		}
	}
}

static void watch_status_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			    void *arg)
{
	struct merge_watch *w;

	(void)c;
	if ((w = watch_reply(arg)) != NULL) {
		if (err == NULL && xl_vm_status_io_error(ret)) {
			watch_send(w, xl_vm_continue(), NULL, 0, watch_continued_cb);
		} else {
			/* running again, or stopped by someone for another reason: not ours */
			w->continuing = 0;
			w->vm_nospace = 0;
		}
	}
}

/* Resume the VM when it stopped for want of space and every layer it
 * stopped on has grown; only if QEMU still says it stopped on an I/O
 * error (a VM paused by someone stays paused). */
static void watch_maybe_continue(struct merge_watch *w)
{
	struct watch_layer *l;

	if (!w->vm_nospace || w->continuing || w->c == NULL || w->status != 0)
		return;
	for (l = w->layers; l != NULL; l = l->next)
		if (l->nospace)
			return;
	w->continuing = 1;
	watch_send(w, xl_vm_status(), NULL, 0, watch_status_cb);
}

static void watch_extended(void *arg, const struct lm_error *err)
{
	struct watch_layer *l = arg;
	struct merge_watch *w = l->w;
	struct merge_watch_extension x = {
		l->disk, l->node, l->path, l->op_why, l->size, l->op_to,
		l->op_event > 0 ? (l->op_start - l->op_event) * 1000 : -1, watch_now() - l->op_start,
	};

	l->op = NULL;
	if (w->o.extended != NULL)
		w->o.extended(&x, err, w->o.arg);
	if (!l->seen) {
		/* it left the written layers meanwhile */
		struct watch_layer **pp;

		for (pp = &w->layers; *pp != l; pp = &(*pp)->next)
			;
		*pp = l->next;
		watch_layer_free(l);
		return;
	}
	if (err != NULL) {
		/* armed again at the next rescan: a refusal is retried no faster */
		l->armed = 0;
		return;
	}
	l->size = l->op_to;
	l->armed = 0;
	if (l->nospace) {
		l->nospace = 0;
		watch_maybe_continue(w);
	}
	watch_arm(l);
}

/* Grow l by a chunk (capped) through the volume command. event: QEMU's
 * timestamp of what asked for it, 0 if none. */
static void watch_extend(struct watch_layer *l, const char *why, double event)
{
	struct merge_watch *w = l->w;
	struct lm_error err;
	int64_t to;

	if (l->op != NULL)
		return;
	to = merge_volume_next_size(l->size, w->o.chunk, l->max);
	if (to <= l->size) {
		watch_msg(w, "%s: %s holds all a qcow2 of its size can need (%" PRId64 " bytes): "
			     "not extended", l->disk, l->path, l->size);
		return;
	}
	l->op_to = to;
	l->op_why = why;
	l->op_event = event;
	l->op_start = watch_now();
	l->op = merge_volume_run(w->o.volumes, MERGE_VOLUME_EXTEND, l->path, to, watch_extended, l,
				 &err);
	/* The command has started only now: the journal's record of the
	 * extension (synced) and the fork come before it, and count in the
	 * delay from QEMU's event. */
	if (l->op != NULL)
		l->op_start = watch_now();
	if (l->op == NULL) {
		struct merge_watch_extension x = { l->disk, l->node, l->path, why, l->size, to, -1, 0 };

		if (w->o.extended != NULL)
			w->o.extended(&x, &err, w->o.arg);
	}
}

/* Does the user want disk d? */
static int watch_wants(struct merge_watch *w, const struct merge_disk *d,
		       const struct merge_chains *ch)
{
	int i;

	if (w->o.ndisks == 0)
		return 1;
	for (i = 0; i < w->o.ndisks; i++)
		if (merge_chains_find(ch, w->o.disks[i]) == d)
			return 1;
	return 0;
}

/* The layer of d that receives the guest's writes, if it is one to watch. */
static const struct merge_layer *watch_written(const struct merge_disk *d)
{
	const struct merge_layer *l = d->nlayers > 0 ? &d->layers[0] : NULL;

	if (l == NULL || !merge_layer_is_block(l) || l->format == NULL ||
	    strcmp(l->format, "qcow2") != 0 || l->file_node == NULL || l->node_name == NULL ||
	    l->filename == NULL)
		return NULL;
	return l;
}

static void watch_fatal(struct merge_watch *w, const char *msg)
{
	w->status = -1;
	lm_error_set(&w->err, LM_ERR_USAGE, "%s", msg);
}

/* Make the watched layers those of ch; new ones are armed. */
static void watch_apply_chains(struct merge_watch *w, const struct merge_chains *ch)
{
	struct watch_layer *l, **pp;
	char msg[600];
	int i;

	for (i = 0; !w->ready && i < w->o.ndisks; i++) {
		const struct merge_disk *d = merge_chains_find(ch, w->o.disks[i]);

		if (d == NULL) {
			snprintf(msg, sizeof(msg), "the VM has no disk '%s': see 'livemerge chain'",
				 w->o.disks[i]);
			watch_fatal(w, msg);
			return;
		}
		if (watch_written(d) == NULL) {
			snprintf(msg, sizeof(msg), "%s: its active layer is not a qcow2 on a block "
				 "device: nothing to keep ahead", d->name);
			watch_fatal(w, msg);
			return;
		}
	}
	for (l = w->layers; l != NULL; l = l->next)
		l->seen = 0;
	for (i = 0; i < ch->ndisks; i++) {
		const struct merge_disk *d = &ch->disks[i];
		const struct merge_layer *ml = watch_written(d);

		if (ml == NULL || !watch_wants(w, d, ch))
			continue;
		l = watch_find(w, ml->file_node);
		if (l == NULL) {
			l = calloc(1, sizeof(*l));
			if (l == NULL)
				continue;
			l->w = w;
			l->disk = strdup(d->name);
			l->node = strdup(ml->node_name);
			l->prot = strdup(ml->file_node);
			l->path = strdup(ml->filename);
			if (!l->disk || !l->node || !l->prot || !l->path) {
				watch_layer_free(l);
				continue;
			}
			l->max = merge_qcow2_max_size(ml->virtual_size, WATCH_CAP_CLUSTER);
			l->next = w->layers;
			w->layers = l;
			watch_msg(w, "%s: watching %s (%s): %" PRId64 " bytes, threshold %" PRId64,
				  l->disk, l->path, l->node, ml->size > 0 ? ml->size : 0,
				  merge_volume_threshold(ml->size > 0 ? ml->size : 0, w->o.headroom,
							 l->max));
		}
		l->seen = 1;
		/* QEMU's size of a device is the one it had when opened (or the
		 * highest write); what a volume was grown to may be more */
		if (ml->size > l->size)
			l->size = ml->size;
		if (ml->allocated > l->allocated)
			l->allocated = ml->allocated;
	}
	for (pp = &w->layers; (l = *pp) != NULL;) {
		if (!l->seen && l->op == NULL) {
			watch_msg(w, "%s: %s left the written layers: no longer watched", l->disk,
				  l->path);
			*pp = l->next;
			watch_layer_free(l);
			continue;
		}
		pp = &l->next;
	}
	for (l = w->layers; l != NULL; l = l->next)
		if (l->seen)
			watch_arm(l);
}

/* Which node each device writes to, as one string. NULL on ENOMEM. */
static char *watch_signature(json_object *devices)
{
	struct xl_device_info di;
	size_t len = 1, k = 0;
	char *s;
	int i;

	for (i = 0; xl_query_devices_entry(devices, i, &di) == 0; i++)
		len += strlen(di.device ? di.device : "") + strlen(di.qdev ? di.qdev : "") +
		       strlen(di.node ? di.node : "") + 3;
	s = malloc(len);
	if (s == NULL)
		return NULL;
	s[0] = '\0';
	for (i = 0; xl_query_devices_entry(devices, i, &di) == 0; i++)
		k += (size_t)snprintf(s + k, len - k, "%s\n%s\n%s\n", di.device ? di.device : "",
				      di.qdev ? di.qdev : "", di.node ? di.node : "");
	return s;
}

/* The devices that stopped for want of space: their layers are grown, then
 * the VM resumed. */
static void watch_nospace(struct merge_watch *w, json_object *devices)
{
	struct xl_device_info di;
	struct watch_layer *l;
	char line[600];
	int i;

	for (i = 0; xl_query_devices_entry(devices, i, &di) == 0; i++) {
		if (!di.nospace || di.node == NULL)
			continue;
		for (l = w->layers; l != NULL; l = l->next)
			if (l->seen && strcmp(l->node, di.node) == 0)
				break;
		if (l == NULL) {
			snprintf(line, sizeof(line), "the VM stopped: no space on %s (node %s), "
				 "which this watch does not keep: left stopped",
				 di.qdev ? di.qdev : di.device ? di.device : "?", di.node);
			watch_msg_once(w, line);
			continue;
		}
		if (l->nospace)
			continue;
		watch_msg(w, "%s: the VM stopped: no space left on %s: extending, then resuming",
			  l->disk, l->path);
		l->nospace = 1;
		w->vm_nospace = 1;
		if (l->op != NULL)
			l->op_why = "nospace"; /* started as found past its threshold: the same need */
		watch_extend(l, "nospace", 0);
	}
	watch_maybe_continue(w);
}

static void watch_refresh_done(struct merge_watch *w)
{
	w->refreshing = 0;
	if (w->refresh_again && w->status == 0) {
		w->refresh_again = 0;
		watch_refresh(w);
	}
}

static void watch_vm_status_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			       void *arg);

static void watch_devices_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			     void *arg)
{
	struct merge_watch *w;

	(void)c;
	if ((w = watch_reply(arg)) == NULL)
		return;
	if (err != NULL) {
		watch_refresh_done(w);
		return;
	}
	free(w->signature);
	w->signature = watch_signature(ret);
	/* a stopped VM's devices are asked again, with the run state known */
	watch_send(w, xl_vm_status(), NULL, 0, watch_vm_status_cb);
}

static void watch_vm_devices_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
				void *arg)
{
	struct merge_watch *w;

	(void)c;
	if ((w = watch_reply(arg)) != NULL && err == NULL)
		watch_nospace(w, ret);
}

static void watch_vm_status_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			       void *arg)
{
	struct merge_watch *w;

	(void)c;
	if ((w = watch_reply(arg)) == NULL)
		return;
	if (err == NULL && xl_vm_status_io_error(ret))
		watch_send(w, xl_query_devices(), NULL, 0, watch_vm_devices_cb);
	if (!w->ready) {
		w->ready = 1;
		watch_msg(w, "watching %d layer%s", merge_watch_count(w),
			  merge_watch_count(w) == 1 ? "" : "s");
	}
	watch_refresh_done(w);
}

static void watch_chains_cb(struct merge_chains *ch, const struct lm_error *err, void *arg)
{
	struct merge_watch *w;

	if ((w = watch_reply(arg)) == NULL) {
		merge_chains_free(ch);
		return;
	}
	if (err != NULL) {
		watch_msg(w, "cannot read the chains: %s", err->msg);
		watch_refresh_done(w);
		return;
	}
	watch_apply_chains(w, ch);
	merge_chains_free(ch);
	if (w->status != 0) {
		watch_refresh_done(w);
		return;
	}
	watch_send(w, xl_query_devices(), NULL, 0, watch_devices_cb);
}

static void watch_jobs_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			  void *arg)
{
	struct merge_watch *w;
	struct watch_req *rq;
	struct lm_error e;
	const char *hazard;
	char line[300];

	(void)c;
	if ((w = watch_reply(arg)) == NULL)
		return;
	if (err != NULL) {
		watch_refresh_done(w);
		return;
	}
	hazard = merge_chains_hazard(ret);
	if (hazard != NULL) {
		/* read again when that job goes (its JOB_STATUS_CHANGE null) */
		snprintf(line, sizeof(line), "not reading the chains while job %s is concluded and "
			 "not dismissed (QEMU 7.2 would crash)", hazard);
		watch_msg_once(w, line);
		watch_refresh_done(w);
		return;
	}
	rq = calloc(1, sizeof(*rq));
	if (rq == NULL) {
		watch_refresh_done(w);
		return;
	}
	rq->w = w;
	rq->gen = w->gen;
	if (merge_chains_fetch_usage(w->c, watch_chains_cb, rq, &e) < 0) {
		free(rq);
		watch_refresh_done(w);
	}
}

/* Read the graph again: jobs (a hazard first), chains with usage, devices,
 * run state. One at a time; asked again meanwhile, once more after. */
static void watch_refresh(struct merge_watch *w)
{
	if (w->c == NULL || w->status != 0)
		return;
	if (w->refreshing) {
		w->refresh_again = 1;
		return;
	}
	w->refreshing = 1;
	watch_send(w, xl_query_jobs(), NULL, 0, watch_jobs_cb);
}

static void watch_rescan_devices_cb(struct qmp_conn *c, json_object *ret,
				    const struct lm_error *err, void *arg)
{
	struct merge_watch *w;
	struct watch_layer *l;
	char *sig;

	(void)c;
	if ((w = watch_reply(arg)) == NULL || err != NULL)
		return;
	sig = watch_signature(ret);
	if (sig != NULL && (w->signature == NULL || strcmp(sig, w->signature) != 0)) {
		watch_refresh(w);
	} else {
		/* a threshold lost to a refused extension is armed again */
		for (l = w->layers; l != NULL; l = l->next)
			if (l->seen && l->armed == 0 && l->op == NULL)
				watch_arm(l);
	}
	free(sig);
}

static void watch_rescan_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct merge_watch *w = t->data;

	(void)loop, (void)revents;
	if (w->c != NULL && w->status == 0 && w->ready && !w->refreshing)
		watch_send(w, xl_query_devices(), NULL, 0, watch_rescan_devices_cb);
}

static void watch_event_cb(struct qmp_conn *c, const struct qmp_msg *ev, void *arg)
{
	struct merge_watch *w = arg;
	struct xl_watch_event we;
	struct watch_layer *l;

	(void)c;
	xl_watch_event_decode(ev, &we);
	switch (we.kind) {
	case XL_WEV_THRESHOLD:
		l = watch_find(w, we.node);
		if (l == NULL)
			break;
		l->armed = 0; /* one-shot: spent */
		if (we.threshold + we.exceeded > l->allocated)
			l->allocated = we.threshold + we.exceeded;
		watch_extend(l, "threshold", we.when);
		break;
	case XL_WEV_IO_ERROR:
		if (we.nospace && we.stopped)
			watch_refresh(w); /* finds the device stopped, grows its layer */
		break;
	case XL_WEV_JOB_END:
		watch_refresh(w);
		break;
	case XL_WEV_NONE:
		break;
	}
}

static void watch_state_cb(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct merge_watch *w = arg;

	if (c != w->c || err == NULL || w->status != 0)
		return;
	w->status = 1;
	w->err = *err;
}

struct merge_watch *merge_watch_new(struct ev_loop *loop, const struct merge_watch_opts *opts,
				    struct lm_error *err)
{
	struct merge_watch *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	w->loop = loop;
	w->o = *opts;
	if (w->o.chunk <= 0)
		w->o.chunk = MERGE_VOLUME_CHUNK;
	if (w->o.headroom <= 0)
		w->o.headroom = w->o.chunk / 5 * 4;
	if (w->o.rescan <= 0)
		w->o.rescan = 2;
	ev_timer_init(&w->rescan, watch_rescan_cb, w->o.rescan, w->o.rescan);
	w->rescan.data = w;
	return w;
}

void merge_watch_attach(struct merge_watch *w, struct qmp_conn *c)
{
	struct watch_layer *l;

	w->gen++;
	w->c = c;
	w->status = 0;
	lm_error_clear(&w->err);
	w->refreshing = w->refresh_again = 0;
	w->continuing = 0;
	free(w->signature);
	w->signature = NULL;
	/* what QEMU holds is unknown after a reconnect: arm everything again */
	for (l = w->layers; l != NULL; l = l->next) {
		l->armed = 0;
		l->nospace = 0;
	}
	w->vm_nospace = 0;
	qmp_conn_set_event_cb(c, watch_event_cb, w);
	qmp_conn_set_state_cb(c, watch_state_cb, w);
	ev_timer_again(w->loop, &w->rescan);
	watch_refresh(w);
}

int merge_watch_status(const struct merge_watch *w, struct lm_error *err)
{
	if (w->status != 0 && err != NULL)
		*err = w->err;
	return w->status;
}

int merge_watch_ready(const struct merge_watch *w)
{
	return w->ready;
}

int merge_watch_count(const struct merge_watch *w)
{
	const struct watch_layer *l;
	int n = 0;

	for (l = w->layers; l != NULL; l = l->next)
		n += l->seen;
	return n;
}

void merge_watch_free(struct merge_watch *w)
{
	struct watch_layer *l;

	if (w == NULL)
		return;
	ev_timer_stop(w->loop, &w->rescan);
	while ((l = w->layers) != NULL) {
		w->layers = l->next;
		watch_layer_free(l);
	}
	w->gen++;
	free(w->signature);
	free(w->said);
	free(w);
}

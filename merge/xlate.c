/*
 * merge/xlate: engine requests to QMP and QMP job reports to engine terms.
 */
#include "xlate.h"

#include <stdio.h>
#include <string.h>

static const char *const xl_status_names[] = {
	[XL_JOB_UNKNOWN] = "unknown",     [XL_JOB_UNDEFINED] = "undefined",
	[XL_JOB_CREATED] = "created",     [XL_JOB_RUNNING] = "running",
	[XL_JOB_PAUSED] = "paused",       [XL_JOB_READY] = "ready",
	[XL_JOB_STANDBY] = "standby",     [XL_JOB_WAITING] = "waiting",
	[XL_JOB_PENDING] = "pending",     [XL_JOB_ABORTING] = "aborting",
	[XL_JOB_CONCLUDED] = "concluded", [XL_JOB_NULL] = "null",
};

static void xl_add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

static const char *xl_str(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static int64_t xl_int(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int))
		return json_object_get_int64(v);
	return -1;
}

struct xl_cmd xl_snapshot_transaction(int n, const char *const *nodes, const char *const *files,
				      const char *const *new_nodes, const char *format)
{
	struct xl_cmd c = { "transaction", json_object_new_object(), "snapshot" };
	json_object *actions = json_object_new_array();
	int i;

	for (i = 0; i < n; i++) {
		json_object *a = json_object_new_object(), *d = json_object_new_object();

		if (files[i] == NULL) {
			/* an overlay node opened already (a formatted block device) */
			xl_add_str(d, "node", nodes[i]);
			xl_add_str(d, "overlay", new_nodes[i]);
			xl_add_str(a, "type", "blockdev-snapshot");
			json_object_object_add(a, "data", d);
			json_object_array_add(actions, a);
			continue;
		}
		xl_add_str(d, "node-name", nodes[i]);
		xl_add_str(d, "snapshot-file", files[i]);
		if (new_nodes != NULL && new_nodes[i] != NULL)
			xl_add_str(d, "snapshot-node-name", new_nodes[i]);
		xl_add_str(d, "format", format ? format : "qcow2");
		xl_add_str(d, "mode", "absolute-paths");
		xl_add_str(a, "type", "blockdev-snapshot-sync");
		json_object_object_add(a, "data", d);
		json_object_array_add(actions, a);
	}
	json_object_object_add(c.args, "actions", actions);
	return c;
}

static json_object *xl_job_args(const char *job_id, const char *root_node, int64_t speed)
{
	json_object *a = json_object_new_object();

	xl_add_str(a, "job-id", job_id);
	xl_add_str(a, "device", root_node);
	if (speed > 0)
		json_object_object_add(a, "speed", json_object_new_int64(speed));
	/* out of space: pause (BLOCK_JOB_ERROR action "stop") instead of failing */
	xl_add_str(a, "on-error", "enospc");
	/* held in PENDING before any graph change, kept CONCLUDED until read */
	json_object_object_add(a, "auto-finalize", json_object_new_boolean(0));
	json_object_object_add(a, "auto-dismiss", json_object_new_boolean(0));
	return a;
}

struct xl_cmd xl_commit(const char *job_id, const char *root_node, const char *top_node,
			const char *base_node, int64_t speed)
{
	struct xl_cmd c = { "block-commit", xl_job_args(job_id, root_node, speed), "start" };

	xl_add_str(c.args, "top-node", top_node);
	xl_add_str(c.args, "base-node", base_node);
	return c;
}

struct xl_cmd xl_stream(const char *job_id, const char *root_node, const char *base_node,
			int64_t speed)
{
	struct xl_cmd c = { "block-stream", xl_job_args(job_id, root_node, speed), "start" };

	if (base_node != NULL)
		xl_add_str(c.args, "base-node", base_node);
	return c;
}

struct xl_cmd xl_guest_freeze(void)
{
	struct xl_cmd c = { "guest-fsfreeze-freeze", NULL, "freeze" };

	return c;
}

struct xl_cmd xl_guest_thaw(void)
{
	struct xl_cmd c = { "guest-fsfreeze-thaw", NULL, "thaw" };

	return c;
}

struct xl_cmd xl_guest_freeze_status(void)
{
	struct xl_cmd c = { "guest-fsfreeze-status", NULL, "freeze-status" };

	return c;
}

struct xl_cmd xl_vm_uuid(void)
{
	struct xl_cmd c = { "query-uuid", NULL, "query" };

	return c;
}

struct xl_cmd xl_vm_name(void)
{
	struct xl_cmd c = { "query-name", NULL, "query" };

	return c;
}

const char *xl_vm_uuid_of(json_object *ret)
{
	return json_object_is_type(ret, json_type_object) ? xl_str(ret, "UUID") : NULL;
}

const char *xl_vm_name_of(json_object *ret)
{
	return json_object_is_type(ret, json_type_object) ? xl_str(ret, "name") : NULL;
}

struct xl_cmd xl_nodes(void)
{
	struct xl_cmd c = { "query-named-block-nodes", json_object_new_object(), "query" };

	json_object_object_add(c.args, "flat", json_object_new_boolean(1));
	return c;
}

const char *xl_node_written_file(json_object *node)
{
	const char *drv = xl_str(node, "drv");
	json_object *ro;

	if (drv == NULL || (strcmp(drv, "file") != 0 && strcmp(drv, "host_device") != 0) ||
	    !json_object_object_get_ex(node, "ro", &ro) || json_object_get_boolean(ro))
		return NULL;
	return xl_str(node, "file");
}

struct xl_cmd xl_node_release(const char *node)
{
	struct xl_cmd c = { "blockdev-del", json_object_new_object(), "release" };

	xl_add_str(c.args, "node-name", node);
	return c;
}

/* HMP "qemu-io NODE WORDS" (qemu-system only), journaled as step; args NULL
 * when node is unfit for an HMP command line. */
static struct xl_cmd xl_hmp_qemu_io(const char *step, const char *node, const char *words)
{
	struct xl_cmd c = { "human-monitor-command", NULL, step };
	char line[300];
	const char *p;

	/* QEMU's node names are letters, digits, '-', '.', '_' (and '#' for its
	 * own); anything else could smuggle words onto the command line */
	if (node == NULL || *node == '\0' || strlen(node) > 200)
		return c;
	for (p = node; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '#'))
			return c;
	snprintf(line, sizeof(line), "qemu-io %s %s", node, words);
	c.args = json_object_new_object();
	xl_add_str(c.args, "command-line", line);
	return c;
}

struct xl_cmd xl_flush_hmp(const char *node)
{
	return xl_hmp_qemu_io("flush", node, "flush");
}

struct xl_cmd xl_device_add(const char *node, const char *path)
{
	struct xl_cmd c = { "blockdev-add", json_object_new_object(), "device-add" };

	xl_add_str(c.args, "driver", "host_device");
	xl_add_str(c.args, "node-name", node);
	xl_add_str(c.args, "filename", path);
	return c;
}

struct xl_cmd xl_qcow2_create(const char *job_id, const char *file_node, int64_t size,
			      const char *backing, const char *backing_format)
{
	struct xl_cmd c = { "blockdev-create", json_object_new_object(), "format" };
	json_object *o = json_object_new_object();

	xl_add_str(c.args, "job-id", job_id);
	xl_add_str(o, "driver", "qcow2");
	xl_add_str(o, "file", file_node);
	json_object_object_add(o, "size", json_object_new_int64(size));
	xl_add_str(o, "backing-file", backing);
	xl_add_str(o, "backing-fmt", backing_format);
	json_object_object_add(c.args, "options", o);
	return c;
}

struct xl_cmd xl_qcow2_add(const char *node, const char *file_node)
{
	struct xl_cmd c = { "blockdev-add", json_object_new_object(), "overlay-add" };

	xl_add_str(c.args, "driver", "qcow2");
	xl_add_str(c.args, "node-name", node);
	xl_add_str(c.args, "file", file_node);
	json_object_object_add(c.args, "backing", NULL); /* JSON null: none opened */
	return c;
}

struct xl_cmd xl_zero_hmp(const char *node, int64_t len)
{
	char words[64];

	snprintf(words, sizeof(words), "\"write -z 0 %lld\"", (long long)len);
	return xl_hmp_qemu_io("wipe", node, words);
}

struct xl_cmd xl_node_stats(void)
{
	struct xl_cmd c = { "query-blockstats", json_object_new_object(), "query" };

	json_object_object_add(c.args, "query-nodes", json_object_new_boolean(1));
	return c;
}

int64_t xl_node_written(json_object *stats, const char *node)
{
	size_t i, n = json_object_is_type(stats, json_type_array) ? json_object_array_length(stats) : 0;

	for (i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(stats, i), *v, *st;

		if (json_object_object_get_ex(e, "node-name", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    strcmp(json_object_get_string(v), node) == 0 &&
		    json_object_object_get_ex(e, "stats", &st) &&
		    json_object_object_get_ex(st, "wr_highest_offset", &v) &&
		    json_object_is_type(v, json_type_int))
			return json_object_get_int64(v);
	}
	return -1;
}

struct xl_cmd xl_probe_file(const char *node, const char *path)
{
	struct xl_cmd c = { "blockdev-add", json_object_new_object(), "probe" };

	xl_add_str(c.args, "driver", "file");
	xl_add_str(c.args, "node-name", node);
	xl_add_str(c.args, "filename", path);
	json_object_object_add(c.args, "read-only", json_object_new_boolean(1));
	xl_add_str(c.args, "locking", "off");
	return c;
}

int xl_probe_absent(const struct lm_error *err)
{
	/* QEMU's raw-posix driver: "Could not open 'PATH': No such file or
	 * directory". The end decides: PATH is the user's and may hold anything;
	 * a message cut short (a long PATH) cannot tell. */
	static const char tail[] = "': No such file or directory";
	size_t n = err != NULL ? strlen(err->msg) : 0;

	return err != NULL && err->code == LM_ERR_QMP && n >= sizeof(tail) - 1 &&
	       strcmp(err->msg + n - (sizeof(tail) - 1), tail) == 0;
}

static int xl_is_cow(const char *driver)
{
	return driver != NULL &&
	       (strcmp(driver, "qcow2") == 0 || strcmp(driver, "qed") == 0 ||
		strcmp(driver, "vmdk") == 0 || strcmp(driver, "qcow") == 0);
}

struct xl_cmd xl_flush_reopen(const struct xl_node_opts *o)
{
	struct xl_cmd c = { "blockdev-reopen", json_object_new_object(), "flush" };
	json_object *opts = json_object_new_object(), *cache = json_object_new_object();
	json_object *list = json_object_new_array();

	xl_add_str(opts, "driver", o->driver);
	xl_add_str(opts, "node-name", o->node);
	if (o->file != NULL)
		xl_add_str(opts, "file", o->file);
	if (xl_is_cow(o->driver))
		json_object_object_add(opts, "backing",
				       o->backing ? json_object_new_string(o->backing) : NULL);
	json_object_object_add(opts, "read-only", json_object_new_boolean(o->read_only));
	json_object_object_add(cache, "direct", json_object_new_boolean(o->cache_direct));
	json_object_object_add(cache, "no-flush", json_object_new_boolean(o->cache_no_flush));
	json_object_object_add(opts, "cache", cache);
	if (o->detect_zeroes != NULL)
		xl_add_str(opts, "detect-zeroes", o->detect_zeroes);
	json_object_array_add(list, opts);
	json_object_object_add(c.args, "options", list);
	return c;
}

int xl_flush_hmp_result(json_object *ret, const char **said)
{
	const char *s = json_object_is_type(ret, json_type_string) ? json_object_get_string(ret) : NULL;

	*said = s ? s : "(no text)";
	return s != NULL && s[strspn(s, " \r\n\t")] == '\0' ? 0 : -1;
}

struct xl_cmd xl_job_verb(enum xl_job_verb verb, const char *job_id)
{
	static const char *const names[] = {
		[XL_VERB_COMPLETE] = "job-complete",
		[XL_VERB_FINALIZE] = "job-finalize",
		[XL_VERB_DISMISS] = "job-dismiss",
		[XL_VERB_CANCEL] = "job-cancel",
		[XL_VERB_RESUME] = "job-resume",
	};
	static const char *const steps[] = {
		[XL_VERB_COMPLETE] = "complete",
		[XL_VERB_FINALIZE] = "finalize",
		[XL_VERB_DISMISS] = "dismiss",
		[XL_VERB_CANCEL] = "cancel",
		[XL_VERB_RESUME] = "resume",
	};
	struct xl_cmd c = { names[verb], json_object_new_object(), steps[verb] };

	xl_add_str(c.args, "id", job_id);
	return c;
}

struct xl_cmd xl_job_set_speed(const char *job_id, int64_t speed)
{
	struct xl_cmd c = { "block-job-set-speed", json_object_new_object(), "set-speed" };

	xl_add_str(c.args, "device", job_id);
	json_object_object_add(c.args, "speed", json_object_new_int64(speed));
	return c;
}

struct xl_cmd xl_query_jobs(void)
{
	struct xl_cmd c = { "query-jobs", NULL, "query" };

	return c;
}

enum xl_job_status xl_job_status_parse(const char *s)
{
	size_t i;

	if (s == NULL)
		return XL_JOB_UNKNOWN;
	for (i = 1; i < sizeof(xl_status_names) / sizeof(xl_status_names[0]); i++)
		if (strcmp(s, xl_status_names[i]) == 0)
			return (enum xl_job_status)i;
	return XL_JOB_UNKNOWN;
}

const char *xl_job_status_name(enum xl_job_status st)
{
	if ((size_t)st >= sizeof(xl_status_names) / sizeof(xl_status_names[0]))
		return "unknown";
	return xl_status_names[st];
}

void xl_job_event_decode(const struct qmp_msg *ev, struct xl_job_event *out)
{
	const char *name = ev->event;

	memset(out, 0, sizeof(*out));
	out->offset = out->len = -1;
	if (ev->type != QMP_MSG_EVENT || ev->data == NULL)
		return;
	if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
		out->kind = XL_EV_STATUS;
		out->job_id = xl_str(ev->data, "id");
		out->status = xl_job_status_parse(xl_str(ev->data, "status"));
	} else if (strncmp(name, "BLOCK_JOB_", 10) == 0) {
		/* block job events name the job in "device" */
		out->job_id = xl_str(ev->data, "device");
		out->offset = xl_int(ev->data, "offset");
		out->len = xl_int(ev->data, "len");
		if (strcmp(name, "BLOCK_JOB_READY") == 0) {
			out->kind = XL_EV_READY;
		} else if (strcmp(name, "BLOCK_JOB_COMPLETED") == 0) {
			out->kind = XL_EV_COMPLETED;
			out->error = xl_str(ev->data, "error");
		} else if (strcmp(name, "BLOCK_JOB_CANCELLED") == 0) {
			out->kind = XL_EV_CANCELLED;
		} else if (strcmp(name, "BLOCK_JOB_ERROR") == 0) {
			out->kind = XL_EV_ERROR;
			out->operation = xl_str(ev->data, "operation");
			out->action = xl_str(ev->data, "action");
		}
	}
	if (out->job_id == NULL)
		out->kind = XL_EV_NONE;
}

int xl_query_jobs_entry(json_object *ret, int i, struct xl_job_info *out)
{
	json_object *o;

	if (!json_object_is_type(ret, json_type_array) || i < 0 ||
	    (size_t)i >= json_object_array_length(ret))
		return -1;
	o = json_object_array_get_idx(ret, (size_t)i);
	memset(out, 0, sizeof(*out));
	out->id = xl_str(o, "id");
	out->type = xl_str(o, "type");
	out->error = xl_str(o, "error");
	out->status = xl_job_status_parse(xl_str(o, "status"));
	out->offset = xl_int(o, "current-progress");
	out->len = xl_int(o, "total-progress");
	return out->id == NULL ? -1 : 0;
}

struct xl_cmd xl_write_threshold(const char *node, int64_t bytes)
{
	struct xl_cmd c = { "block-set-write-threshold", json_object_new_object(), "threshold" };

	json_object_object_add(c.args, "node-name", json_object_new_string(node));
	json_object_object_add(c.args, "write-threshold", json_object_new_int64(bytes));
	return c;
}

struct xl_cmd xl_vm_continue(void)
{
	struct xl_cmd c = { "cont", NULL, "continue" };

	return c;
}

struct xl_cmd xl_vm_status(void)
{
	struct xl_cmd c = { "query-status", NULL, "query" };

	return c;
}

struct xl_cmd xl_query_devices(void)
{
	struct xl_cmd c = { "query-block", NULL, "query" };

	return c;
}

int xl_vm_status_io_error(json_object *ret)
{
	const char *st = xl_str(ret, "status");

	return st != NULL && strcmp(st, "io-error") == 0;
}

int xl_query_devices_entry(json_object *ret, int i, struct xl_device_info *out)
{
	json_object *d, *ins;
	const char *io;

	if (!json_object_is_type(ret, json_type_array) || i < 0 ||
	    (size_t)i >= json_object_array_length(ret))
		return -1;
	d = json_object_array_get_idx(ret, (size_t)i);
	if (!json_object_is_type(d, json_type_object))
		return -1;
	out->device = xl_str(d, "device");
	out->qdev = xl_str(d, "qdev");
	out->node = json_object_object_get_ex(d, "inserted", &ins) ? xl_str(ins, "node-name") : NULL;
	io = xl_str(d, "io-status");
	out->nospace = io != NULL && strcmp(io, "nospace") == 0;
	return 0;
}

void xl_watch_event_decode(const struct qmp_msg *ev, struct xl_watch_event *out)
{
	json_object *d = ev->data, *v;
	const char *st;

	memset(out, 0, sizeof(*out));
	if (ev->ts_sec >= 0)
		out->when = (double)ev->ts_sec + (double)(ev->ts_usec > 0 ? ev->ts_usec : 0) / 1e6;
	if (strcmp(ev->event, "BLOCK_WRITE_THRESHOLD") == 0) {
		out->kind = XL_WEV_THRESHOLD;
		out->node = xl_str(d, "node-name");
		if (json_object_object_get_ex(d, "write-threshold", &v))
			out->threshold = json_object_get_int64(v);
		if (json_object_object_get_ex(d, "amount-exceeded", &v))
			out->exceeded = json_object_get_int64(v);
	} else if (strcmp(ev->event, "BLOCK_IO_ERROR") == 0) {
		out->kind = XL_WEV_IO_ERROR;
		out->node = xl_str(d, "node-name");
		out->device = xl_str(d, "device");
		out->nospace = json_object_object_get_ex(d, "nospace", &v) && json_object_get_boolean(v);
		st = xl_str(d, "action");
		out->stopped = st != NULL && strcmp(st, "stop") == 0;
	} else if (strcmp(ev->event, "BLOCK_JOB_COMPLETED") == 0 ||
		   strcmp(ev->event, "BLOCK_JOB_CANCELLED") == 0 ||
		   (strcmp(ev->event, "JOB_STATUS_CHANGE") == 0 && (st = xl_str(d, "status")) != NULL &&
		    (strcmp(st, "concluded") == 0 || strcmp(st, "null") == 0))) {
		out->kind = XL_WEV_JOB_END;
	}
}

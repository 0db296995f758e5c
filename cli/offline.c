/*
 * cli/offline: the storage daemon of an offline target (offline.h).
 *
 * Why an export: in qemu-storage-daemon a node no one holds is dropped
 * when the graph changes under it (an active commit's pivot drops the top
 * blockdev-add opened, so the disk vanishes), and only an export or a job
 * holds a node there and follows it through a pivot. Each disk is
 * therefore served by an NBD export named DISK, read-only, on a unix
 * socket in the daemon's private directory: no one else can reach it, and
 * the engine names the disk after it as on any storage daemon.
 */
#include "offline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../merge/files.h"
#include "../merge/offline.h"

#define OFFLINE_DAEMON "qemu-storage-daemon"
#define OFFLINE_LIFETIME 1e7     /* s: the daemon's time limit; it is stopped long before */
#define OFFLINE_QUIT_WAIT 10.0   /* s: for a quit before it is stopped */
#define OFFLINE_MAX_LAYERS 256

struct cli_offline {
	struct merge_offline *t;
	char *host_target; /* ssh://.../offline for the host layer, NULL: this machine */
	char *dir;         /* the daemon's private directory on the host */
	struct host_op *run; /* the daemon while it runs */
	int started, ready, ended, stopping;
	int status;        /* its exit status once ended (-1: a signal) */
	char last[256];    /* the last line of its stderr, escaped later */
	struct lm_error run_err;
	int run_failed;
};

int cli_offline(const struct cli_ctx *ctx)
{
	return merge_offline_is(ctx->target);
}

static struct cli_offline *offline_state(struct cli_ctx *ctx)
{
	struct lm_error err;
	char cwd[4096];
	struct cli_offline *o;

	if (ctx->offline != NULL)
		return ctx->offline;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		abort();
	o->t = merge_offline_parse(ctx->target, getcwd(cwd, sizeof(cwd)), &err);
	if (o->t == NULL) {
		cli_error(cli_exit_code(&err), "%s", err.msg);
		exit(cli_exit_code(&err));
	}
	if (o->t->ssh != NULL && asprintf(&o->host_target, "%s/offline", o->t->ssh) < 0)
		abort();
	ctx->offline = o;
	return o;
}

const struct merge_offline *cli_offline_target(struct cli_ctx *ctx)
{
	return offline_state(ctx)->t;
}

const char *cli_offline_host_target(struct cli_ctx *ctx)
{
	return offline_state(ctx)->host_target;
}

/* ------------------------------------------------------------ the chains */

/* path's directory joined with name (a backing file relative to its image). */
static char *offline_relative(const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');
	char *out;

	if (name[0] == '/' || slash == NULL)
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - path), path, name) < 0)
		return NULL;
	return out;
}

/*
 * Walk disk's chain from its top on the host, by the headers alone: the top
 * a qcow2 file or block device, every backing named with its format (QEMU
 * would probe a backing named without: never let it), every layer there.
 * *block: the top is a block device; *layers (NULL-terminated, owned) gets
 * every layer's path. 0, or -1 with err (USAGE).
 */
static int offline_check_chain(struct host *h, const struct merge_offline_disk *d, int *block,
			       char ***layers, struct lm_error *err)
{
	static unsigned char head[MERGE_IMAGE_HEAD];
	char *path = strdup(d->path), *next, why[256];
	struct merge_image img;
	enum host_file_kind kind;
	const char *fmt = "qcow2";
	int depth, rc = -1;
	long n;

	if (path == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	for (depth = 0; depth < OFFLINE_MAX_LAYERS; depth++) {
		n = host_look_wait(h, path, head, sizeof(head), &kind, err);
		if (n < 0) {
			lm_error_prefix(err, "disk %s: ", d->disk);
			goto out;
		}
		if (kind == HOST_FILE_NONE) {
			lm_error_set(err, LM_ERR_USAGE, "disk %s: %s does not exist%s", d->disk, path,
				     depth ? " (a backing file named in the chain)" : "");
			goto out;
		}
		if (kind != HOST_FILE_REGULAR && kind != HOST_FILE_BLOCK) {
			lm_error_set(err, LM_ERR_USAGE, "disk %s: %s is %s, not an image file or "
				     "block device", d->disk, path,
				     kind == HOST_FILE_SYMLINK ? "a symlink (name the image itself)"
							       : "something else");
			goto out;
		}
		if (depth == 0)
			*block = kind == HOST_FILE_BLOCK;
		if ((*layers = realloc(*layers, (size_t)(depth + 2) * sizeof(char *))) == NULL ||
		    ((*layers)[depth] = strdup(path)) == NULL)
			abort();
		(*layers)[depth + 1] = NULL;
		if (strcmp(fmt, "qcow2") != 0) {
			rc = 0; /* a raw base (or another format QEMU is told): the chain ends */
			goto out;
		}
		if (merge_image_parse(head, (size_t)n, &img, why, sizeof(why)) < 0 ||
		    strcmp(img.format, "qcow2") != 0) {
			lm_error_set(err, LM_ERR_USAGE, "disk %s: %s is not a qcow2 image%s%s",
				     d->disk, path, img.format[0] ? ": " : "",
				     img.format[0] ? why : (depth ? "" : " (only a qcow2 top has a "
								       "chain to merge)"));
			goto out;
		}
		if (!img.has_backing) {
			rc = 0;
			goto out;
		}
		if (img.backing_format[0] == '\0') {
			lm_error_set(err, LM_ERR_USAGE, "disk %s: %s names its backing file without "
				     "its format, which QEMU would probe: write it into the header "
				     "(qemu-img rebase -u -b BACKING -F FORMAT)", d->disk, path);
			goto out;
		}
		fmt = strcmp(img.backing_format, "qcow2") == 0 ? "qcow2" : "raw";
		if ((next = offline_relative(path, img.backing)) == NULL) {
			lm_error_set(err, LM_ERR_NOMEM, "out of memory");
			goto out;
		}
		free(path);
		path = next;
	}
	lm_error_set(err, LM_ERR_USAGE, "disk %s: its chain is longer than %d layers", d->disk,
		     OFFLINE_MAX_LAYERS);
out:
	free(path);
	return rc;
}

/* ------------------------------------------------------------ the daemon */

static void offline_run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct cli_offline *o = arg;

	o->run = NULL;
	o->ended = 1;
	if (err != NULL) {
		o->run_failed = 1;
		o->run_err = *err;
		o->status = -1;
		return;
	}
	o->status = r->status;
	snprintf(o->last, sizeof(o->last), "%s", r->err_last);
}

static void offline_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	*(int *)w->data = 1;
}

/* Run the loop for about s seconds (the daemon's watchers with it). */
static void offline_sleep(struct cli_ctx *ctx, double s)
{
	ev_timer t;
	int fired = 0;

	ev_timer_init(&t, offline_tick_cb, s, 0.);
	t.data = &fired;
	ev_timer_start(ctx->loop, &t);
	while (!fired)
		ev_run(ctx->loop, EVRUN_ONCE);
	ev_timer_stop(ctx->loop, &t);
}

/* Why the daemon ended, for a message. */
static void offline_ended_why(const struct cli_offline *o, char *buf, size_t len)
{
	if (o->run_failed && o->run_err.code == LM_ERR_IO)
		snprintf(buf, len, "%s (is it on the host's PATH?)", o->run_err.msg);
	else if (o->run_failed)
		snprintf(buf, len, "%s", o->run_err.msg);
	else if (o->status == 127)
		snprintf(buf, len, "%s is not on the host's PATH", OFFLINE_DAEMON);
	else if (o->status < 0)
		snprintf(buf, len, "%s was killed", OFFLINE_DAEMON);
	else
		snprintf(buf, len, "%s exited with status %d%s%.200s", OFFLINE_DAEMON, o->status,
			 o->last[0] ? ": " : "", o->last);
}

/* The private directory: mkdtemp here, mktemp -d on an ssh host. */
static int offline_make_dir(struct cli_ctx *ctx, struct cli_offline *o, struct lm_error *err)
{
	static const char *const argv[] = { "mktemp", "-d", "-t", "livemerge-offline.XXXXXX", NULL };
	const char *tmp = getenv("TMPDIR");
	char out[256];
	size_t n;
	int st;

	if (o->t->ssh == NULL) {
		if (asprintf(&o->dir, "%s/livemerge-offline.XXXXXX",
			     tmp != NULL && tmp[0] == '/' ? tmp : "/tmp") < 0)
			abort();
		if (mkdtemp(o->dir) == NULL) {
			int e = errno;

			free(o->dir);
			o->dir = NULL;
			return lm_error_set(err, LM_ERR_IO, "cannot make a directory for %s: %s",
					    OFFLINE_DAEMON, strerror(e));
		}
	} else {
		if (host_run_wait(cli_host(ctx), argv, ctx->timeout, &st, out, sizeof(out), err) < 0) {
			lm_error_prefix(err, "cannot make a directory for %s on the host: ",
					OFFLINE_DAEMON);
			return -1;
		}
		n = strcspn(out, "\n");
		out[n] = '\0';
		if (st != 0 || out[0] != '/')
			return lm_error_set(err, LM_ERR_IO, "cannot make a directory for %s on the "
					    "host: mktemp -d %s", OFFLINE_DAEMON,
					    st != 0 ? "failed" : "answered no usable path");
		if ((o->dir = strdup(out)) == NULL)
			abort();
	}
	if (strchr(o->dir, ',') != NULL || strlen(o->dir) > 80)
		/* the socket path goes into QEMU's option syntax and a sun_path */
		return lm_error_set(err, LM_ERR_USAGE, "the temporary directory %s is too long or "
				    "holds ',': set TMPDIR on the host", o->dir);
	return 0;
}

/* Start the daemon and wait for its monitor socket. 0, or -1 with err. */
static int offline_spawn(struct cli_ctx *ctx, struct cli_offline *o, struct lm_error *err)
{
	char *chardev = NULL, *pidfile = NULL, *sock = NULL, why[640];
	const char *argv[] = { OFFLINE_DAEMON, "--chardev", NULL, "--monitor", "chardev=lm-monitor",
			       "--pidfile", NULL, NULL };
	double until = ev_now(ctx->loop) + ctx->timeout;
	enum host_file_kind kind = HOST_FILE_NONE;
	unsigned char b[1];
	int rc = -1;

	if (asprintf(&chardev, "socket,id=lm-monitor,path=%s/qmp.sock,server=on,wait=off",
		     o->dir) < 0 ||
	    asprintf(&pidfile, "%s/qsd.pid", o->dir) < 0 || asprintf(&sock, "%s/qmp.sock", o->dir) < 0)
		abort();
	argv[2] = chardev;
	argv[6] = pidfile;
	o->started = 1;
	o->run = host_run_tied(cli_host(ctx), argv, OFFLINE_LIFETIME, offline_run_cb, o);
	if (o->run == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* the monitor listens once its socket exists */
	while (!o->ended && kind != HOST_FILE_OTHER) {
		if (ev_now(ctx->loop) > until) {
			lm_error_set(err, LM_ERR_TIMEOUT, "%s made no monitor socket within %g s",
				     OFFLINE_DAEMON, ctx->timeout);
			goto out;
		}
		offline_sleep(ctx, 0.05);
		if (host_look_wait(cli_host(ctx), sock, b, 0, &kind, err) < 0)
			goto out;
	}
	if (o->ended) {
		offline_ended_why(o, why, sizeof(why));
		lm_error_set(err, LM_ERR_IO, "cannot start %s%s%s: %s", OFFLINE_DAEMON,
			     o->t->ssh ? " on " : "", o->t->ssh ? host_where(cli_host(ctx)) : "", why);
		goto out;
	}
	rc = 0;
out:
	free(chardev);
	free(pidfile);
	free(sock);
	return rc;
}

/* The daemon's pid as its pidfile says, or 0. */
static long offline_daemon_pid(struct cli_ctx *ctx, struct cli_offline *o)
{
	char path[300], b[32];
	enum host_file_kind kind;
	struct lm_error e;
	long n;

	snprintf(path, sizeof(path), "%s/qsd.pid", o->dir);
	n = host_look_wait(cli_host(ctx), path, b, sizeof(b) - 1, &kind, &e);
	if (n <= 0 || kind != HOST_FILE_REGULAR)
		return 0;
	b[n] = '\0';
	return strtol(b, NULL, 10);
}

/*
 * Who holds one of layers, for the message of a refused lock: "pid N
 * (NAME)" from fuser and /proc/N/comm on the host (our daemon left out),
 * or why it cannot be told. Into buf.
 */
static void offline_holder(struct cli_ctx *ctx, struct cli_offline *o, char **layers, char *buf,
			   size_t len)
{
	const char *argv[OFFLINE_MAX_LAYERS + 2] = { "fuser" };
	long ours = offline_daemon_pid(ctx, o), pid;
	struct lm_error e;
	char out[1024], comm[64], path[64], *p, *end;
	enum host_file_kind kind;
	int i, st = 0;
	long n;

	for (i = 0; layers[i] != NULL && i < OFFLINE_MAX_LAYERS; i++)
		argv[i + 1] = layers[i];
	argv[i + 1] = NULL;
	if (host_run_wait(cli_host(ctx), argv, ctx->timeout, &st, out, sizeof(out), &e) < 0 ||
	    (st != 0 && st != 1)) {
		snprintf(buf, len, "which process holds it cannot be told: fuser is not on the "
			 "host or failed");
		return;
	}
	for (p = out;; p = end) {
		pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid <= 0 || pid == ours)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		n = host_look_wait(cli_host(ctx), path, comm, sizeof(comm) - 1, &kind, &e);
		comm[n > 0 ? n : 0] = '\0';
		comm[strcspn(comm, "\n")] = '\0';
		snprintf(buf, len, "held by pid %ld%s%s%s", pid, comm[0] ? " (" : "", comm,
			 comm[0] ? ")" : "");
		return;
	}
	snprintf(buf, len, "no process of this host has it open: another host's, on shared "
		 "storage?");
}

/* A QMP command to the daemon, with a message of ours on failure. */
static int offline_qmp(struct cli_ctx *ctx, const char *name, json_object *args,
		       struct lm_error *err)
{
	json_object *ret = NULL;
	int rc = cli_execute(ctx, name, args, &ret, err);

	json_object_put(args);
	json_object_put(ret);
	return rc;
}

/* The NBD server for the exports that hold the disks (see the top). */
static int offline_serve(struct cli_ctx *ctx, struct cli_offline *o, struct lm_error *err)
{
	json_object *args = json_object_new_object(), *addr = json_object_new_object(),
		    *data = json_object_new_object();
	char *path;

	if (asprintf(&path, "%s/nbd.sock", o->dir) < 0)
		abort();
	json_object_object_add(data, "path", json_object_new_string(path));
	json_object_object_add(addr, "type", json_object_new_string("unix"));
	json_object_object_add(addr, "data", data);
	json_object_object_add(args, "addr", addr);
	free(path);
	return offline_qmp(ctx, "nbd-server-start", args, err);
}

/* Open disk d (its top a block device or not) and export it. */
static int offline_open(struct cli_ctx *ctx, struct cli_offline *o,
			const struct merge_offline_disk *d, int block, char **layers,
			struct lm_error *err)
{
	json_object *args = json_object_new_object(), *file = json_object_new_object();
	char holder[200], said[sizeof(err->msg)];

	json_object_object_add(file, "driver", json_object_new_string(block ? "host_device"
									      : "file"));
	json_object_object_add(file, "filename", json_object_new_string(d->path));
	json_object_object_add(args, "driver", json_object_new_string("qcow2"));
	json_object_object_add(args, "node-name", json_object_new_string(d->disk));
	json_object_object_add(args, "file", file);
	if (offline_qmp(ctx, "blockdev-add", args, err) < 0) {
		if (err->code == LM_ERR_QMP && strstr(err->msg, "lock") != NULL) {
			/* QEMU's image locks: another QEMU (or qemu-img) uses the chain */
			snprintf(said, sizeof(said), "%s", err->msg);
			offline_holder(ctx, o, layers, holder, sizeof(holder));
			return lm_error_set(err, LM_ERR_IO, "disk %s: %s or an image below it is in "
					    "use (%s), %s: stop that VM first; nothing was changed",
					    d->disk, d->path, said, holder);
		}
		lm_error_prefix(err, "disk %s: cannot open %s: ", d->disk, d->path);
		err->code = LM_ERR_USAGE;
		return -1;
	}
	args = json_object_new_object();
	json_object_object_add(args, "type", json_object_new_string("nbd"));
	json_object_object_add(args, "id", json_object_new_string(d->disk));
	json_object_object_add(args, "node-name", json_object_new_string(d->disk));
	json_object_object_add(args, "writable", json_object_new_boolean(0));
	return offline_qmp(ctx, "block-export-add", args, err);
}

static void offline_free_layers(char **layers)
{
	char **l;

	for (l = layers; l != NULL && *l != NULL; l++)
		free(*l);
	free(layers);
}

/*
 * Remove the daemon's directory and what is in it. Done as soon as the
 * disks are open (the daemon needs none of it any more: its monitor
 * connection is made, no one is to reach its NBD server), so a livemerge
 * killed afterwards leaves nothing behind on the host; else when it stops.
 */
static void offline_remove_dir(struct cli_ctx *ctx, struct cli_offline *o)
{
	static const char *const files[] = { "qmp.sock", "nbd.sock", "qsd.pid" };
	struct lm_error e;
	char path[300];
	size_t i;
	int st;

	for (i = 0; o->dir != NULL && i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", o->dir, files[i]);
		host_remove_wait(cli_host(ctx), path, &e);
	}
	if (o->dir != NULL && o->t->ssh == NULL) {
		rmdir(o->dir);
	} else if (o->dir != NULL) {
		const char *argv[] = { "rmdir", "--", o->dir, NULL };

		host_run_wait(cli_host(ctx), argv, ctx->timeout, &st, NULL, 0, &e);
	}
	free(o->dir);
	o->dir = NULL;
}

int cli_offline_start(struct cli_ctx *ctx, struct lm_error *err)
{
	struct cli_offline *o = offline_state(ctx);
	char ***layers, *mon;
	int *block, i, rc = -1;
	double until;

	if (o->started)
		return lm_error_set(err, LM_ERR_EOF, "%s ended: it is not started again behind the "
				    "operation's back", OFFLINE_DAEMON);
	layers = calloc((size_t)o->t->ndisks, sizeof(*layers));
	block = calloc((size_t)o->t->ndisks, sizeof(*block));
	if (layers == NULL || block == NULL)
		abort();
	for (i = 0; i < o->t->ndisks; i++)
		if (offline_check_chain(cli_host(ctx), &o->t->disks[i], &block[i], &layers[i], err) < 0)
			goto out;
	if (offline_make_dir(ctx, o, err) < 0 || offline_spawn(ctx, o, err) < 0)
		goto out;
	if (asprintf(&mon, "%s%s/qmp.sock", o->t->ssh ? o->t->ssh : "unix:", o->dir) < 0)
		abort();
	/* the socket's file exists from its bind, a moment before it listens */
	until = ev_now(ctx->loop) + ctx->timeout;
	while ((rc = cli_connect_monitor(ctx, mon, err)) < 0 && err->code == LM_ERR_IO && !o->ended &&
	       ev_now(ctx->loop) < until) {
		qmp_conn_free(ctx->conn);
		ctx->conn = NULL;
		offline_sleep(ctx, 0.05);
	}
	free(mon);
	if (rc < 0)
		goto out;
	rc = offline_serve(ctx, o, err);
	for (i = 0; rc == 0 && i < o->t->ndisks; i++)
		rc = offline_open(ctx, o, &o->t->disks[i], block[i], layers[i], err);
	if (rc == 0) {
		offline_remove_dir(ctx, o);
		o->ready = 1;
	}
out:
	for (i = 0; i < o->t->ndisks; i++)
		offline_free_layers(layers[i]);
	free(layers);
	free(block);
	return rc;
}

void cli_offline_stop(struct cli_ctx *ctx)
{
	struct cli_offline *o = ctx->offline;
	json_object *ret = NULL;
	struct lm_error e;
	char why[640];
	double until;

	if (o == NULL || o->stopping)
		return;
	o->stopping = 1;
	if (!o->started)
		goto out;
	if (o->ended && o->ready) {
		offline_ended_why(o, why, sizeof(why));
		cli_error(0, "%s ended before livemerge was done with it (%s)", OFFLINE_DAEMON, why);
	}
	if (!o->ended && ctx->conn != NULL && cli_execute(ctx, "quit", NULL, &ret, &e) == 0)
		json_object_put(ret);
	qmp_conn_free(ctx->conn);
	ctx->conn = NULL;
	until = ev_now(ctx->loop) + OFFLINE_QUIT_WAIT;
	while (!o->ended && ev_now(ctx->loop) < until)
		offline_sleep(ctx, 0.05);
	if (!o->ended) {
		host_op_cancel(o->run); /* stopped: SIGKILL here, SIGTERM over ssh */
		o->run = NULL;
	}
	offline_remove_dir(ctx, o);
out:
	merge_offline_free(o->t);
	free(o->host_target);
	free(o);
	ctx->offline = NULL;
}

int cli_offline_verify(struct cli_ctx *ctx, json_object *result)
{
	json_object *disks, *d, *chain, *l, *v;
	const char *file, *next, *disk;
	size_t i, k, n;
	char why[640];

	cli_offline_stop(ctx);
	if (!json_object_object_get_ex(result, "disks", &disks))
		return EXIT_OK;
	for (i = 0; i < json_object_array_length(disks); i++) {
		d = json_object_array_get_idx(disks, i);
		if (!json_object_object_get_ex(d, "chain", &chain) ||
		    !json_object_object_get_ex(d, "disk", &v))
			continue;
		disk = json_object_get_string(v);
		n = json_object_array_length(chain);
		for (k = 0; k < n; k++) {
			l = json_object_array_get_idx(chain, k);
			if (!json_object_object_get_ex(l, "format", &v) ||
			    strcmp(json_object_get_string(v), "qcow2") != 0)
				continue; /* a raw base has no header to read */
			json_object_object_get_ex(l, "filename", &v);
			file = json_object_get_string(v);
			next = NULL;
			if (k + 1 < n &&
			    json_object_object_get_ex(json_object_array_get_idx(chain, k + 1),
						      "filename", &v))
				next = json_object_get_string(v);
			if (merge_image_verify(cli_host(ctx), file, "qcow2", next, why,
					       sizeof(why)) < 0)
				return cli_error(EXIT_INTERRUPTED, "disk %s: the images read back after "
						 "%s stopped are not the chain it reported: %s",
						 disk, OFFLINE_DAEMON, why);
		}
	}
	return EXIT_OK;
}

/*
 * cmd-watch: keep the VM's block-device layers ahead of the guest until
 * told to stop (merge/watch.c does the work; this file parses, reconnects
 * and prints).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/journal.h"
#include "../merge/watch.h"
#include "cli.h"
#include "offline.h"

static int cmd_watch_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_watch_entry = {
	.name = "watch",
	.args_usage = "[DISK...] --volume-cmd CMD [--chunk B] [--headroom B] [--volume-timeout S]",
	.summary = "keep thin block volumes extended ahead of the guest",
	.help = "\nRuns until SIGTERM or SIGINT, keeping each watched disk's active layer, when it\n"
		"is a qcow2 on a block device, larger than what the guest writes: QEMU's write\n"
		"threshold sits at the volume's size minus --headroom; when a write passes it,\n"
		"'CMD extend PATH BYTES' grows the volume by --chunk (capped at the most a qcow2\n"
		"of that virtual size can need) and the threshold is armed again. No polling.\n"
		"A VM stopped for want of space (found so at start, or stopping later) is\n"
		"resumed once its volume is extended, and only then. Snapshots, commits and\n"
		"streams, by livemerge or anyone, are followed; a lost monitor is reconnected.\n"
		"With no DISK, every disk. One line per extension on stdout; with --json a\n"
		"JSON line {\"disk\",\"layer\",\"path\",\"why\",\"from\",\"to\",\"ms\",\"seconds\"}\n"
		"(ms: QEMU's event to the command's start; why: threshold, nospace, allocated).\n"
		"  --volume-cmd CMD       the volume command, run on the VM's host (required)\n"
		"  --chunk B              bytes added per extension (default 2560M)\n"
		"  --headroom B           threshold below the volume's end (default 80 % of the\n"
		"                         chunk)\n"
		"  --volume-timeout S     limit for one run of CMD (default 60)\n"
		"  --rescan S             how often to look for a changed graph that QEMU signals\n"
		"                         by no event (a snapshot), default 2\n"
		"Each extension is journaled before it runs (the VM's journal with '#watch').\n"
		"Exit: 0 stopped by a signal, 2 bad arguments or a DISK the VM lacks or that has\n"
		"no block-device layer, 3 cannot connect (or the monitor stayed lost 60 s).\n",
	.needs_conn = 1,
	.exec = cmd_watch_exec,
};

enum { OPT_VOLUME_CMD = 0x300, OPT_CHUNK, OPT_HEADROOM, OPT_VOLUME_TIMEOUT, OPT_RESCAN };

struct watch_args {
	const char *cmd;
	int64_t chunk, headroom;
	double volume_timeout, rescan;
};

struct watch_ui {
	struct cli_ctx *ctx;
	int stop;
};

static int cmd_watch_seconds(const char *opt, const char *arg, double *out)
{
	char *end;

	*out = strtod(arg, &end);
	if (*end != '\0' || !(*out > 0) || *out > 86400)
		return cli_error(EXIT_USAGE, "watch: %s: '%s' is not a number of seconds (0 < S "
					     "<= 86400)", opt, arg);
	return 0;
}

static int cmd_watch_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	struct watch_args *a = data;

	(void)ctx;
	switch (opt) {
	case OPT_VOLUME_CMD:
		if (arg[0] == '\0')
			return cli_error(EXIT_USAGE, "watch: --volume-cmd: empty");
		a->cmd = arg;
		return 0;
	case OPT_CHUNK:
	case OPT_HEADROOM:
		if (cli_parse_size(arg, opt == OPT_CHUNK ? &a->chunk : &a->headroom) < 0 ||
		    (opt == OPT_CHUNK ? a->chunk : a->headroom) <= 0)
			return cli_error(EXIT_USAGE, "watch: %s: '%s' is not a positive size (bytes, "
						     "or with K, M, G)",
					 opt == OPT_CHUNK ? "--chunk" : "--headroom", arg);
		return 0;
	case OPT_VOLUME_TIMEOUT:
		return cmd_watch_seconds("--volume-timeout", arg, &a->volume_timeout);
	case OPT_RESCAN:
		return cmd_watch_seconds("--rescan", arg, &a->rescan);
	}
	return EXIT_USAGE;
}

static void cmd_watch_message(const char *line, void *arg)
{
	(void)arg;
	cli_line(stderr, "livemerge: watch: %s", line);
}

static void cmd_watch_extended(const struct merge_watch_extension *x, const struct lm_error *err,
			       void *arg)
{
	struct watch_ui *ui = arg;

	if (err != NULL) {
		cli_error(0, "watch: %s: extending %s to %" PRId64 " bytes failed: %s", x->disk,
			  x->path, x->to, err->msg);
		return;
	}
	if (ui->ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "disk", json_object_new_string(x->disk));
		json_object_object_add(o, "layer", json_object_new_string(x->layer));
		json_object_object_add(o, "path", json_object_new_string(x->path));
		json_object_object_add(o, "why", json_object_new_string(x->why));
		json_object_object_add(o, "from", json_object_new_int64(x->from));
		json_object_object_add(o, "to", json_object_new_int64(x->to));
		json_object_object_add(o, "ms", x->ms >= 0 ? json_object_new_double(x->ms) : NULL);
		json_object_object_add(o, "seconds", json_object_new_double(x->took));
		cli_print_json(ui->ctx, o);
		json_object_put(o);
	} else if (x->ms >= 0) {
		cli_line(stdout, "%s: extended %s (%s) from %" PRId64 " to %" PRId64 " bytes (%s; "
			 "command started %.1f ms after QEMU's event, ran %.2f s)", x->disk, x->path,
			 x->layer, x->from, x->to, x->why, x->ms, x->took);
	} else {
		cli_line(stdout, "%s: extended %s (%s) from %" PRId64 " to %" PRId64 " bytes (%s; "
			 "ran %.2f s)", x->disk, x->path, x->layer, x->from, x->to, x->why, x->took);
	}
	fflush(stdout);
}

static void cmd_watch_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
	struct watch_ui *ui = s->data;

	(void)loop, (void)revents;
	ui->stop = 1;
}

static void cmd_watch_due(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop, (void)revents;
	*(int *)t->data = 1;
}

/* The monitor was lost: try again with backoff for up to a minute.
 * EXIT_OK once attached again, else an exit code (message printed). */
static int cmd_watch_reconnect(struct cli_ctx *ctx, struct watch_ui *ui, struct merge_watch *w,
			       const struct lm_error *why)
{
	static const double delays[] = { 0.2, 0.5, 1, 2, 4, 8, 15, 15, 15 };
	struct lm_error err = *why;
	size_t i;

	cli_line(stderr, "livemerge: watch: the monitor was lost (%s): reconnecting", why->msg);
	qmp_conn_free(ctx->conn);
	ctx->conn = NULL;
	for (i = 0; i < sizeof(delays) / sizeof(delays[0]) && !ui->stop; i++) {
		ev_timer t;
		int due = 0;

		/* wait on the loop, not in a sleep: extensions and signals go on */
		ev_timer_init(&t, cmd_watch_due, delays[i], 0);
		t.data = &due;
		ev_timer_start(ctx->loop, &t);
		while (!due && !ui->stop)
			ev_run(ctx->loop, EVRUN_ONCE);
		ev_timer_stop(ctx->loop, &t);
		if (ui->stop)
			return EXIT_OK;
		if (cli_connect_ex(ctx, &err) == 0) {
			cli_line(stderr, "livemerge: watch: monitor reconnected");
			merge_watch_attach(w, ctx->conn);
			return EXIT_OK;
		}
		qmp_conn_free(ctx->conn);
		ctx->conn = NULL;
	}
	if (ui->stop)
		return EXIT_OK;
	return cli_error(EXIT_CONNECT, "watch: the monitor stayed lost (%s): QEMU may be gone",
			 err.msg);
}

static int cmd_watch_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "volume-cmd", required_argument, NULL, OPT_VOLUME_CMD },
		{ "chunk", required_argument, NULL, OPT_CHUNK },
		{ "headroom", required_argument, NULL, OPT_HEADROOM },
		{ "volume-timeout", required_argument, NULL, OPT_VOLUME_TIMEOUT },
		{ "rescan", required_argument, NULL, OPT_RESCAN },
		{ NULL, 0, NULL, 0 },
	};
	struct watch_args a = { 0 };
	struct watch_ui ui = { ctx, 0 };
	struct merge_volumes vols = { 0 };
	struct merge_watch_opts wo = { 0 };
	struct merge_watch *w = NULL;
	struct merge_journal *j = NULL;
	struct lm_error err;
	ev_signal sigterm, sigint;
	char *jtarget = NULL;
	int first, r, st;

	r = cli_parse_verb(ctx, &cmd_watch_entry, argc, argv, NULL, opts, cmd_watch_opt, &a,
			   &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (a.cmd == NULL)
		return cli_error(EXIT_USAGE, "watch: --volume-cmd CMD is required (the program that "
					     "extends a volume: see README, \"Volume commands\")");
	if (cli_offline(ctx))
		return cli_error(EXIT_USAGE, "watch: an offline target's VM is stopped: no guest "
					     "writes to watch");
	if (a.chunk == 0)
		a.chunk = MERGE_VOLUME_CHUNK;
	if (a.headroom == 0)
		a.headroom = a.chunk / 5 * 4;
	r = cli_connect(ctx);
	if (r != EXIT_OK)
		return r;
	/* the watch's own journal: a merge running meanwhile keeps the VM's */
	if (asprintf(&jtarget, "%s#watch", ctx->target) < 0)
		abort();
	j = merge_journal_open(ctx->journal_dir, jtarget, &err);
	free(jtarget);
	if (j == NULL)
		return cli_error(EXIT_FAILED, "watch: %s (nothing was sent)", err.msg);
	vols.host = cli_host(ctx);
	vols.cmd = a.cmd;
	vols.timeout = a.volume_timeout;
	vols.journal = j;
	wo.volumes = &vols;
	wo.chunk = a.chunk;
	wo.headroom = a.headroom;
	wo.disks = (const char *const *)argv + first;
	wo.ndisks = argc - first;
	wo.rescan = a.rescan;
	wo.extended = cmd_watch_extended;
	wo.message = cmd_watch_message;
	wo.arg = &ui;
	w = merge_watch_new(ctx->loop, &wo, &err);
	if (w == NULL)
		abort();
	ev_signal_init(&sigterm, cmd_watch_signal, SIGTERM);
	ev_signal_init(&sigint, cmd_watch_signal, SIGINT);
	sigterm.data = sigint.data = &ui;
	ev_signal_start(ctx->loop, &sigterm);
	ev_signal_start(ctx->loop, &sigint);
	merge_watch_attach(w, ctx->conn);
	r = EXIT_OK;
	while (!ui.stop) {
		ev_run(ctx->loop, EVRUN_ONCE);
		st = merge_watch_status(w, &err);
		if (st < 0) {
			r = cli_error(cli_exit_code(&err), "watch: %s", err.msg);
			break;
		}
		if (st > 0 && (r = cmd_watch_reconnect(ctx, &ui, w, &err)) != EXIT_OK)
			break;
	}
	if (ui.stop)
		cli_line(stderr, "livemerge: watch: stopped");
	ev_signal_stop(ctx->loop, &sigterm);
	ev_signal_stop(ctx->loop, &sigint);
	qmp_conn_free(ctx->conn);
	ctx->conn = NULL;
	merge_watch_free(w);
	merge_journal_close(j);
	return r;
}

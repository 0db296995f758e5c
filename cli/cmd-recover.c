/*
 * cmd-recover: reconcile an interrupted operation; also the journal
 * plumbing every state-changing verb shares.
 */
#include <stdlib.h>
#include <string.h>

#include "../merge/journal.h"
#include "../merge/recover.h"
#include "../merge/vmlock.h"
#include "cli.h"
#include "offline.h"

static int cmd_recover_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_recover_entry = {
	.name = "recover",
	.args_usage = "[--volume-cmd CMD [--volume-timeout SECS]]",
	.summary = "finish or roll back an interrupted operation (from the journal)",
	.help = "\nReads the VM's journal; if its last operation did not finish (livemerge was\n"
		"killed, the monitor dropped), reconciles the journal, QEMU's jobs and the live\n"
		"chains: a snapshot is kept or its overlays removed, and a frozen guest thawed;\n"
		"a commit or stream interrupted before its first finalize is cancelled (no disk\n"
		"changes), one interrupted after it is finalized (every disk changes). Then\n"
		"jobs of ours are dismissed and, if the operation asked, removed images deleted.\n"
		"Running it again changes nothing. Every verb that changes state runs this\n"
		"first when it finds an unfinished operation.\n"
		"A snapshot onto a block device that was interrupted: the device's nodes are\n"
		"released, what QEMU wrote on it wiped back to zeros, and a volume the run\n"
		"created removed with `CMD remove PATH` (--volume-cmd; without it the volume\n"
		"is left and named). A volume that is in a chain is never removed; one that\n"
		"was grown stays grown.\n"
		"The journal is the VM's, named after its UUID or name, so an operation begun\n"
		"through one monitor is found through any other (README: One VM, one journal,\n"
		"one livemerge).\n"
		"While it runs it holds the VM's lock: another livemerge acting on the VM,\n"
		"through any monitor, refuses at once (exit 2, naming this one's pid and verb)\n"
		"or, with --wait-lock SECS, waits for it.\n"
		"On an offline target (-c offline:DISK=PATH,...) the same target as the\n"
		"interrupted verb's: a storage daemon is started for it and opens the tops,\n"
		"whose headers show what reached the images.\n"
		"Exit: 0 consistent (recovered or nothing to do), 2 the VM is busy with another\n"
		"livemerge, 3 cannot connect, 4 a chain is neither as before nor as expected\n"
		"(the message names it).\n",
	.needs_conn = 1,
	.exec = cmd_recover_exec,
};

struct cli_claim {
	struct cli_ctx *ctx;
	int done;
	struct merge_vm *vm;
	struct lm_error err;
};

static void cli_claim_msg(const char *line, void *arg);

static void cli_claim_cb(struct merge_vm *vm, const struct lm_error *err, void *arg)
{
	struct cli_claim *w = arg;

	w->done = 1;
	w->vm = vm;
	if (err != NULL)
		w->err = *err;
}

const char *cli_vm_target(struct cli_ctx *ctx)
{
	/* an offline VM's: keyed by its top images, whatever their order */
	return cli_offline(ctx) ? cli_offline_target(ctx)->key : ctx->target;
}

int cli_identify(struct cli_ctx *ctx, const char *verb)
{
	struct cli_claim w = { .ctx = ctx };
	struct merge_vm_claim_opts o = {
		.dir = ctx->journal_dir,
		.target = cli_vm_target(ctx),
		.verb = verb,
		.wait_lock = ctx->wait_lock,
		.message = cli_claim_msg,
	};
	struct merge_vm_claim *cl;

	if (ctx->vm != NULL)
		return EXIT_OK;
	cl = merge_vm_claim_start(ctx->conn, &o, cli_claim_cb, &w, &w.err);
	while (cl != NULL && !w.done)
		ev_run(ctx->loop, EVRUN_ONCE);
	merge_vm_claim_free(cl);
	if (w.vm == NULL)
		return cli_error(cli_exit_code(&w.err), "%s (nothing was sent%s)", w.err.msg,
				 w.err.code == LM_ERR_BUSY && ctx->wait_lock <= 0
					 ? "; --wait-lock SECS waits for it"
					 : "");
	ctx->vm = w.vm;
	return EXIT_OK;
}

struct merge_journal *cli_journal_open(struct cli_ctx *ctx, const char *verb, int *code)
{
	struct merge_journal *j;
	struct lm_error err;

	if ((*code = cli_identify(ctx, verb)) != EXIT_OK)
		return NULL;
	j = merge_vm_journal_open(ctx->journal_dir, ctx->vm, cli_vm_target(ctx), &err);
	if (j == NULL)
		*code = cli_error(EXIT_FAILED, "%s (nothing was sent)", err.msg);
	return j;
}

/* What the recovery's callbacks write to: the context, and for the
 * recover verb's --json result the layers left on disk (NULL: not kept). */
struct cli_recover_ui {
	struct cli_ctx *ctx;
	json_object *left;
};

static void cli_recover_msg(const char *line, void *arg)
{
	struct cli_ctx *ctx = ((struct cli_recover_ui *)arg)->ctx;

	if (ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("message"));
		json_object_object_add(o, "message", json_object_new_string(line));
		cli_print_json(ctx, o);
		json_object_put(o);
		return;
	}
	cli_line(stderr, "%s", line);
}

static void cli_claim_msg(const char *line, void *arg)
{
	struct cli_recover_ui ui = { .ctx = ((struct cli_claim *)arg)->ctx };

	cli_recover_msg(line, &ui);
}

static void cli_recover_left(const char *disk, const char *file, const char *why, void *arg)
{
	struct cli_recover_ui *ui = arg;
	json_object *o;

	if (ui->left == NULL)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "disk", json_object_new_string(disk ? disk : ""));
	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "why", json_object_new_string(why));
	json_object_array_add(ui->left, o);
}

static struct qga *cli_recover_qga(const char *target, void *arg)
{
	struct cli_ctx *ctx = ((struct cli_recover_ui *)arg)->ctx;
	struct lm_error err;
	struct tr *t = cli_transport(ctx, target, &err);

	if (t == NULL) {
		cli_recover_msg(err.msg, arg);
		return NULL;
	}
	return qga_new(ctx->loop, t, ctx->timeout);
}

/* cli_recover, with the layers left on disk appended to left (NULL: not kept). */
static int cli_recover_run(struct cli_ctx *ctx, struct merge_journal *j, int verbose,
			   enum merge_recovered *what, json_object *left)
{
	struct cli_recover_ui ui = { .ctx = ctx, .left = left };
	struct merge_recover_opts o = {
		.qga_open = cli_recover_qga,
		.message = cli_recover_msg,
		.left = cli_recover_left,
		.arg = &ui,
		.host = cli_host(ctx),
		.volume_cmd = ctx->volume_cmd,
		.volume_timeout = ctx->volume_timeout,
	};
	struct lm_error err;
	enum merge_outcome r;
	enum merge_recovered dummy;

	if (what == NULL)
		what = &dummy;
	lm_error_clear(&err);
	r = merge_recover(ctx->conn, j, &o, what, &err);
	if (r == MERGE_DONE) {
		if (*what == MERGE_REC_NOTHING && verbose)
			cli_recover_msg("nothing to recover: the last operation finished", &ui);
		return EXIT_OK;
	}
	return cli_error(r == MERGE_CONN_FAILED ? EXIT_CONNECT : EXIT_INTERRUPTED, "recover: %s",
			 err.msg);
}

int cli_recover(struct cli_ctx *ctx, struct merge_journal *j, int verbose,
		enum merge_recovered *what)
{
	return cli_recover_run(ctx, j, verbose, what, NULL);
}

static int recover_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	char *end;

	(void)data;
	if (opt == 'V' && *arg != '\0') {
		ctx->volume_cmd = arg;
		return 0;
	}
	if (opt == 'T') {
		ctx->volume_timeout = strtod(arg, &end);
		if (*end == '\0' && ctx->volume_timeout > 0)
			return 0;
		return cli_error(EXIT_USAGE, "--volume-timeout: '%s' is not a positive number", arg);
	}
	return cli_error(EXIT_USAGE, "--volume-cmd: empty");
}

static int cmd_recover_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "volume-cmd", required_argument, NULL, 'V' },
		{ "volume-timeout", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	struct merge_journal *j;
	json_object *left;
	int first, r;

	r = cli_parse_verb(ctx, &cmd_recover_entry, argc, argv, NULL, opts, recover_opt, NULL,
			   &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (first != argc) {
		cli_verb_usage(stderr, &cmd_recover_entry);
		return EXIT_USAGE;
	}
	if ((r = cli_connect(ctx)) != EXIT_OK)
		return r;
	j = cli_journal_open(ctx, "recover", &r);
	if (j == NULL)
		return r;
	left = json_object_new_array();
	r = cli_recover_run(ctx, j, 1, NULL, left);
	merge_journal_close(j);
	if (ctx->json) {
		/* the last line, as the merge verbs end theirs */
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("result"));
		json_object_object_add(o, "ok", json_object_new_boolean(r == EXIT_OK));
		json_object_object_add(o, "verb", json_object_new_string("recover"));
		json_object_object_add(o, "outcome", json_object_new_int(r));
		if (json_object_array_length(left) > 0)
			json_object_object_add(o, "left", json_object_get(left));
		cli_print_json(ctx, o);
		json_object_put(o);
	}
	json_object_put(left);
	return r;
}

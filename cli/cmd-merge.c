/*
 * cmd-merge: the commit and stream verbs (one option set, one runner).
 */
#include <stdlib.h>
#include <string.h>

#include "run-group.h"

static int cmd_merge_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_commit_entry = {
	.name = "commit",
	.args_usage = "DISK [DISK...] [--top LAYER] [--base LAYER] [--speed BYTES] [--delete]\n"
		      "       [--wait-for-space SECS]",
	.summary = "merge a layer down into the one below, live; several disks pivot all or none",
	.help = "\nMerges the data of --top (default: the active layer) down into --base\n"
		"(default: the layer right below top), live. From the active layer this is an\n"
		"active commit: the disk pivots to base when done (\"delete the latest snapshot\").\n"
		"From a layer below, the overlay above it is re-pointed to base.\n"
		"Several disks run at once and pivot ALL OR NONE: if any job fails or is\n"
		"cancelled before every job is ready, all are cancelled and every chain stays\n"
		"as it was (exit 1).\n"
		"  --top LAYER     node name or file name as 'chain' shows it\n"
		"  --base LAYER    node name or file name as 'chain' shows it\n"
		"  --speed BYTES   bytes per second per job (suffixes K, M, G)\n"
		"  --delete        delete the images that left the chains, after the live\n"
		"                  chains are checked\n"
		"  --wait-for-space SECS  a job that runs out of space pauses; wait up to SECS\n"
		"                  for space to appear (resuming it every 2 s) instead of\n"
		"                  cancelling every job at once\n"
		"Example: livemerge -c unix:/run/vm1/qmp.sock commit vda vdb --delete\n",
	.needs_conn = 1,
	.exec = cmd_merge_exec,
};

const struct cmd_entry cmd_stream_entry = {
	.name = "stream",
	.args_usage = "DISK [DISK...] [--base LAYER] [--speed BYTES] [--delete]",
	.summary = "pull the data of lower layers up into the active layer (blockpull)",
	.help = "\nCopies the data of the layers above --base into the active layer and makes\n"
		"base its backing file; with no --base the chain is flattened into the active\n"
		"layer. Several disks run at once and change all or none.\n"
		"  --base LAYER    node name or file name as 'chain' shows it\n"
		"  --speed BYTES   bytes per second per job (suffixes K, M, G)\n"
		"  --delete        delete the images that left the chains\n"
		"  --wait-for-space SECS  as for commit\n",
	.needs_conn = 1,
	.exec = cmd_merge_exec,
};

struct merge_opts {
	const char *top, *base;
	int64_t speed;
	double wait_for_space;
	int del;
	int is_commit;
};

static int cmd_merge_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	struct merge_opts *o = data;

	(void)ctx;
	switch (opt) {
	case 't':
		if (!o->is_commit)
			return cli_error(EXIT_USAGE, "stream: no --top; the active layer is the top");
		o->top = arg;
		return 0;
	case 'b': o->base = arg; return 0;
	case 'd': o->del = 1; return 0;
	case 'w': {
		char *end;

		o->wait_for_space = strtod(arg, &end);
		if (*end != '\0' || o->wait_for_space <= 0)
			return cli_error(EXIT_USAGE, "--wait-for-space: '%s' is not a positive number",
					 arg);
		return 0;
	}
	case 's':
		if (cli_parse_size(arg, &o->speed) < 0)
			return cli_error(EXIT_USAGE, "--speed: '%s' is not a byte count", arg);
		return 0;
	}
	return EXIT_USAGE;
}

static int cmd_merge_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "top", required_argument, NULL, 't' },
		{ "base", required_argument, NULL, 'b' },
		{ "speed", required_argument, NULL, 's' },
		{ "delete", no_argument, NULL, 'd' },
		{ "wait-for-space", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	int is_commit = strcmp(argv[0], "commit") == 0;
	const struct cmd_entry *cmd = is_commit ? &cmd_commit_entry : &cmd_stream_entry;
	struct merge_opts o = { .is_commit = is_commit };
	struct merge_request req = { 0 };
	struct merge_target *t;
	int first, r, i, n;

	r = cli_parse_verb(ctx, cmd, argc, argv, NULL, opts, cmd_merge_opt, &o, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	n = argc - first;
	if (n < 1) {
		cli_verb_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	t = calloc((size_t)n, sizeof(*t));
	if (t == NULL)
		abort();
	for (i = 0; i < n; i++) {
		t[i].disk = argv[first + i];
		t[i].top = o.top;
		t[i].base = o.base;
	}
	req.verb = is_commit ? MERGE_COMMIT : MERGE_STREAM;
	req.ntargets = n;
	req.targets = t;
	req.speed = o.speed;
	req.delete_removed = o.del;
	req.wait_for_space = o.wait_for_space;
	req.dry_run = ctx->dry_run;
	r = cli_run_group(ctx, &req);
	free(t);
	return r;
}

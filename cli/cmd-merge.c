/*
 * cmd-merge: the commit and stream verbs (one option set, one runner).
 */
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "run-group.h"

static int cmd_merge_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_commit_entry = {
	.name = "commit",
	.args_usage = "DISK [DISK...] [--top LAYER] [--base LAYER] [--speed BYTES] [--delete]\n"
		      "       [--wait-for-space SECS] [--volume-cmd CMD [--volume-timeout SECS]\n"
		      "       [--chunk BYTES] [--headroom BYTES]]",
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
		"                  chains are checked and each image is checked on its host\n"
		"                  (a regular file, not a symlink, a qcow2 header naming the\n"
		"                  layer below); what fails a check is left and listed. Over\n"
		"                  ssh:// the host needs SFTP or an exec channel for it; with\n"
		"                  neither, the files are left and listed, and the merge\n"
		"                  still succeeds\n"
		"  --wait-for-space SECS  a job that runs out of space pauses; wait up to SECS\n"
		"                  for space to appear (resuming it every 2 s) instead of\n"
		"                  cancelling every job at once\n"
		"  --volume-cmd CMD  the engine's program for block-device layers, run on the\n"
		"                  VM's host (over ssh:// through an exec channel):\n"
		"                  `CMD extend PATH BYTES`, `CMD remove PATH`; exit 0 is done\n"
		"  --volume-timeout SECS  limit for one run of CMD (default 60)\n"
		"  --chunk BYTES   growth step: an active commit's base gets this much room\n"
		"                  on top, and a layer that fills while a job runs grows by\n"
		"                  it (default 2.5G)\n"
		"  --headroom BYTES  while a job runs, every block-device layer that receives\n"
		"                  writes (the active layer, a commit's base) carries QEMU's\n"
		"                  write threshold this far below its end; crossing it grows\n"
		"                  the layer by a chunk (CMD extend) at once (default 80 %% of\n"
		"                  the chunk)\n"
		"A base on a block device must hold what is merged into it: its allocation\n"
		"plus the size of every layer merged (at most what such an image can need).\n"
		"If it is smaller, CMD extend runs before any job starts; without\n"
		"--volume-cmd the commit is refused (exit 2) with the bytes needed. With\n"
		"--delete, a layer that is a block device is removed by CMD remove.\n"
		"While it runs it holds the VM's lock: another livemerge acting on the VM,\n"
		"through any monitor, refuses at once (exit 2, naming this one's pid and verb)\n"
		"or, with --wait-lock SECS, waits for it.\n"
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
		"  --delete        delete the images that left the chains (as for commit)\n"
		"  --wait-for-space SECS  as for commit\n"
		"While it runs it holds the VM's lock: another livemerge acting on the VM,\n"
		"through any monitor, refuses at once (exit 2, naming this one's pid and verb)\n"
		"or, with --wait-lock SECS, waits for it.\n",
	.needs_conn = 1,
	.exec = cmd_merge_exec,
};

static int cmd_merge_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	struct cli_request cr;
	int r;

	r = cli_request_parse(ctx, argc, argv, &cr);
	if (r == 0)
		r = cli_run_group(ctx, &cr.req);
	else if (r < 0)
		r = EXIT_OK;
	cli_request_free(&cr);
	return r;
}

/*
 * cmd-snapshot: atomic external snapshot of several disks.
 */
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "run-group.h"

static int cmd_snapshot_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_snapshot_entry = {
	.name = "snapshot",
	.args_usage = "DISK=OVERLAY [DISK=OVERLAY...] [--format FMT] [--quiesce QGA]\n"
		      "       [--volume-cmd CMD [--volume-timeout SECS] [--initial-size BYTES]]",
	.summary = "put a new overlay on several disks at once, all or none",
	.help = "\nCreates OVERLAY (a new image backed by the disk's active layer) for every\n"
		"DISK in one QMP transaction: every disk gets its overlay or none does. The\n"
		"guest writes into the overlays from then on.\n"
		"  --format FMT   overlay format (default qcow2)\n"
		"  --quiesce QGA  freeze the guest's filesystems through its agent (QGA: the\n"
		"                 qemu-ga socket: unix:PATH, a path or ssh://...) around the\n"
		"                 transaction;\n"
		"                 it is thawed on every path, at the latest after\n"
		"  --freeze-limit SECS (default 10); the time frozen is reported\n"
		"An OVERLAY that exists already is refused before anything is sent (exit 2),\n"
		"unless it is an empty block device (its first 64 KiB all zeros, used by no\n"
		"chain): that is formatted as a qcow2 over the disk's active layer, through\n"
		"QEMU alone, and put on top in the same transaction.\n"
		"Over ssh:// that is checked on the host through SFTP, else an exec channel,\n"
		"else by asking QEMU (a read-only probe of the path); when none can tell, the\n"
		"snapshot is refused.\n"
		"  --volume-cmd CMD  the engine's program for volumes, run on the VM's host:\n"
		"                 an OVERLAY that does not exist is made by\n"
		"                 `CMD create PATH BYTES`, then formatted (and, on failure,\n"
		"                 removed by `CMD remove PATH`)\n"
		"  --volume-timeout SECS  limit for one run of CMD (default 60)\n"
		"  --initial-size BYTES  the new volume's size (default one chunk, 2.5G, at\n"
		"                 most what the overlay can need)\n"
		"  --chunk BYTES  the default for --initial-size\n"
		"On failure the overlay files this run created are removed, every device it\n"
		"formatted is wiped back to zeros where QEMU wrote, and the chains are as\n"
		"before (exit 1).\n"
		"While it runs it holds the VM's lock: another livemerge acting on the VM,\n"
		"through any monitor, refuses at once (exit 2, naming this one's pid and verb)\n"
		"or, with --wait-lock SECS, waits for it.\n"
		"Example: livemerge -c unix:/run/vm1/qmp.sock snapshot vda=/images/vda.s1.qcow2 \\\n"
		"             vdb=/images/vdb.s1.qcow2\n",
	.needs_conn = 1,
	.exec = cmd_snapshot_exec,
};

static int cmd_snapshot_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	struct cli_request cr;
	struct qga *qga = NULL;
	int r;

	r = cli_request_parse(ctx, argc, argv, &cr);
	if (r != 0) {
		cli_request_free(&cr);
		return r < 0 ? EXIT_OK : r;
	}
	if (cr.quiesce != NULL) {
		struct lm_error err;
		struct tr *t = cli_transport(ctx, cr.quiesce, &err);

		if (t == NULL) {
			cli_request_free(&cr);
			return cli_report(&err);
		}
		qga = qga_new(EV_DEFAULT, t, ctx->timeout);
		if (qga == NULL)
			abort();
		cr.req.quiesce = qga;
	}
	r = cli_run_group(ctx, &cr.req);
	qga_free(qga);
	cli_request_free(&cr);
	return r;
}

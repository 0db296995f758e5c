/*
 * cmd-chain: show each disk's live backing chain.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/query.h"
#include "cli.h"

static int cmd_chain_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_chain_entry = {
	.name = "chain",
	.args_usage = "[DISK...]",
	.summary = "show each disk's live backing chain",
	.help = "\nShows each disk's backing chain as QEMU has it open, active layer first, one\n"
		"layer a line: node name, file, format, virtual size, then what holds the layer\n"
		"(file or block device), its size and how much of it QEMU has written. With no\n"
		"DISK, all disks. DISK is the device id (vda), the qdev path, the block-backend\n"
		"name, or the node name of the disk's active layer.\n"
		"--json: one object per disk and line: {\"disk\",\"device\",\"qdev\",\"node-name\",\n"
		"\"chain\":[{\"node-name\",\"filename\",\"format\",\"virtual-size\",\n"
		"\"backing-filename\",\"type\",\"size\",\"allocated\"},...]} (the first five as in\n"
		"qemu-img info). Of the layer's protocol node (the file or device under its\n"
		"format, or the layer itself when it has no format node):\n"
		"  type       \"file\" (driver file), \"block\" (driver host_device), else the\n"
		"             driver's name (nbd ...)\n"
		"  size       its length in bytes: a file's as QEMU knows it (QEMU's own writes\n"
		"             grow it); a block device's as the host's kernel has it now (read\n"
		"             on the host: QEMU does not see a device grown underneath), or\n"
		"             QEMU's when the host cannot be asked\n"
		"  allocated  the offset just past the highest byte QEMU has written to it since\n"
		"             it opened it (query-blockstats wr_highest_offset): for a qcow2 layer\n"
		"             that QEMU grew, the image's end, what the device must hold; 0 until\n"
		"             QEMU writes there (an image written before is not counted)\n"
		"Each of these three is left out when QEMU does not tell it.\n"
		"A filter node on a chain (a running job's mirror_top, commit_top or\n"
		"copy-on-read, or a throttle the VM was started with) is not a layer: it is\n"
		"shown as a \"filter\" line above the layer it sits on, and in JSON as the\n"
		"disk's \"filters\":[{\"node-name\",\"driver\",\"above\"}]. Disks are named and\n"
		"resolved past it, by every verb.\n"
		"Exit: 0 ok, 2 unknown disk, 3 cannot connect or protocol failure.\n",
	.needs_conn = 1,
	.exec = cmd_chain_exec,
};

static void cmd_chain_print(struct cli_ctx *ctx, const struct merge_disk *d)
{
	int i;

	if (ctx->json) {
		json_object *o = merge_disk_to_json(d);

		cli_print_json(ctx, o);
		json_object_put(o);
		return;
	}
	if (d->qdev != NULL && strcmp(d->qdev, d->name) != 0)
		cli_line(stdout, "%s  (%s)", d->name, d->qdev);
	else
		cli_line(stdout, "%s", d->name);
	for (i = 0; i < d->nlayers; i++) {
		const struct merge_layer *l = &d->layers[i];
		char size[32];
		int f;

		for (f = 0; f < d->nfilters; f++)
			if (d->filters[f].above == i)
				cli_line(stdout, "  %-8s %-20s %s (above %s)", "filter",
					 d->filters[f].node_name, d->filters[f].driver,
					 l->node_name ? l->node_name : l->filename);

		char holder[128], hsize[32], alloc[32];
		const char *type = merge_layer_type(l);

		cli_format_size(l->virtual_size, size, sizeof(size));
		cli_format_size(l->size, hsize, sizeof(hsize));
		cli_format_size(l->allocated, alloc, sizeof(alloc));
		snprintf(holder, sizeof(holder), "%s%s%s%s%s", type ? type : "",
			 type && l->size >= 0 ? " " : "", l->size >= 0 ? hsize : "",
			 l->allocated >= 0 ? (type || l->size >= 0 ? ", allocated " : "allocated ") : "",
			 l->allocated >= 0 ? alloc : "");
		cli_line(stdout, "  %-8s %-20s %s  %s  %s%s%s",
		       i == 0 ? "active" : i == d->nlayers - 1 ? "base" : "",
		       l->node_name ? l->node_name : "-", l->filename, l->format, size,
		       holder[0] ? "  " : "", holder);
	}
}

/* A block device's size as its host has it now, for every block layer
 * (QEMU keeps the size a device had when it opened it); QEMU's where the
 * host cannot tell. */
static void cmd_chain_device_sizes(struct cli_ctx *ctx, struct merge_chains *ch)
{
	struct host *h = NULL;
	int i, k;

	for (i = 0; i < ch->ndisks; i++)
		for (k = 0; k < ch->disks[i].nlayers; k++) {
			struct merge_layer *l = &ch->disks[i].layers[k];
			int64_t size;

			if (!merge_layer_is_block(l) || l->filename == NULL)
				continue;
			if (h == NULL && (h = cli_host(ctx)) == NULL)
				return;
			if ((size = host_device_size_wait(h, l->filename, NULL)) >= 0)
				l->size = size;
		}
}

static int cmd_chain_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	struct merge_chains *ch;
	int first, r, i;

	r = cli_parse_verb(ctx, &cmd_chain_entry, argc, argv, NULL, NULL, NULL, NULL, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	r = cli_connect(ctx);
	if (r != EXIT_OK)
		return r;
	r = cli_read_chains(ctx, "chain", 1, NULL, &ch);
	if (r != EXIT_OK)
		return r;
	for (i = first; i < argc; i++) {
		if (merge_chains_find(ch, argv[i]) == NULL) {
			r = cli_error(EXIT_USAGE, "chain: no disk '%s' (run 'livemerge chain' to "
						  "list the disks)", argv[i]);
			merge_chains_free(ch);
			return r;
		}
	}
	cmd_chain_device_sizes(ctx, ch);
	if (first == argc)
		for (i = 0; i < ch->ndisks; i++)
			cmd_chain_print(ctx, &ch->disks[i]);
	else
		for (i = first; i < argc; i++)
			cmd_chain_print(ctx, merge_chains_find(ch, argv[i]));
	merge_chains_free(ch);
	return EXIT_OK;
}

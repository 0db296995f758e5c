/*
 * cmd-snapshot: atomic external snapshot of several disks.
 */
#include <stdlib.h>
#include <string.h>

#include "run-group.h"

static int cmd_snapshot_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_snapshot_entry = {
	.name = "snapshot",
	.args_usage = "DISK=OVERLAY [DISK=OVERLAY...] [--format FMT]",
	.summary = "put a new overlay on several disks at once, all or none",
	.help = "\nCreates OVERLAY (a new image backed by the disk's active layer) for every\n"
		"DISK in one QMP transaction: every disk gets its overlay or none does. The\n"
		"guest writes into the overlays from then on.\n"
		"  --format FMT   overlay format (default qcow2)\n"
		"  --quiesce QGA  freeze the guest's filesystems through its agent (QGA: the\n"
		"                 qemu-ga socket, unix:PATH or a path) around the transaction;\n"
		"                 it is thawed on every path, at the latest after\n"
		"  --freeze-limit SECS (default 10); the time frozen is reported\n"
		"An OVERLAY that exists already is refused before anything is sent (exit 2).\n"
		"On failure the overlay files this run created are removed and the chains\n"
		"are as before (exit 1).\n"
		"Example: livemerge -c unix:/run/vm1/qmp.sock snapshot vda=/images/vda.s1.qcow2 \\\n"
		"             vdb=/images/vdb.s1.qcow2\n",
	.needs_conn = 1,
	.exec = cmd_snapshot_exec,
};

struct snapshot_opts {
	const char *format, *quiesce;
	double freeze_limit;
};

static int cmd_snapshot_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	struct snapshot_opts *o = data;
	char *end;

	(void)ctx;
	switch (opt) {
	case 'f': o->format = arg; return 0;
	case 'q': o->quiesce = arg; return 0;
	case 'F':
		o->freeze_limit = strtod(arg, &end);
		if (*end != '\0' || o->freeze_limit <= 0)
			return cli_error(EXIT_USAGE, "--freeze-limit: '%s' is not a positive number",
					 arg);
		return 0;
	}
	return EXIT_USAGE;
}

static int cmd_snapshot_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "quiesce", required_argument, NULL, 'q' },
		{ "freeze-limit", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	struct merge_request req = { .verb = MERGE_SNAPSHOT, .dry_run = ctx->dry_run };
	struct merge_target *t;
	struct snapshot_opts o = { 0 };
	struct qga *qga = NULL;
	int first, r, i, n;

	r = cli_parse_verb(ctx, &cmd_snapshot_entry, argc, argv, "f:", opts, cmd_snapshot_opt,
			   &o, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	n = argc - first;
	if (n < 1) {
		cli_verb_usage(stderr, &cmd_snapshot_entry);
		return EXIT_USAGE;
	}
	t = calloc((size_t)n, sizeof(*t));
	if (t == NULL)
		abort();
	for (i = 0; i < n; i++) {
		char *a = argv[first + i], *eq = strchr(a, '=');

		if (eq == NULL || eq == a || eq[1] == '\0') {
			r = cli_error(EXIT_USAGE, "snapshot: '%s' is not DISK=OVERLAY", a);
			goto out;
		}
		*eq = '\0';
		t[i].disk = a;
		t[i].overlay = cli_abspath(eq + 1);
		if (t[i].overlay == NULL) {
			r = cli_error(EXIT_USAGE, "snapshot: cannot make %s absolute", eq + 1);
			goto out;
		}
	}
	req.ntargets = n;
	req.targets = t;
	req.format = o.format;
	req.dry_run = ctx->dry_run;
	req.freeze_limit = o.freeze_limit;
	if (o.quiesce != NULL) {
		struct lm_error err;
		struct tr *t = tr_new(o.quiesce, &err);

		if (t == NULL) {
			r = cli_report(&err);
			goto out;
		}
		qga = qga_new(EV_DEFAULT, t, ctx->timeout);
		if (qga == NULL)
			abort();
		req.quiesce = qga;
	}
	r = cli_run_group(ctx, &req);
out:
	qga_free(qga);
	for (i = 0; i < n; i++)
		free((char *)t[i].overlay);
	free(t);
	return r;
}

/*
 * main: global options, then the verb.
 */
#include <stdlib.h>
#include <string.h>

#include "../merge/journal.h"
#include "../merge/vmlock.h"
#include "cli.h"
#include "offline.h"

#ifndef LM_VERSION
#define LM_VERSION "0.0"
#endif

static void main_usage(FILE *f)
{
	int i;

	fputs("usage: livemerge [-c TARGET] [--json] [--timeout SECS] [--dry-run] [--debug]\n"
	      "                 VERB [ARGS...]\n"
	      "       livemerge VERB --help | --help | [-c TARGET] --version\n\n"
	      "A QMP client that shows, snapshots and merges the disks of running QEMU VMs.\n\n"
	      "Verbs:\n",
	      f);
	for (i = 0; cmd_table[i] != NULL; i++)
		fprintf(f, "  %-10s %s\n", cmd_table[i]->name, cmd_table[i]->summary);
	fputs("\nOptions:\n"
	      "  -c, --connect TARGET  the QMP monitor: unix:PATH, a socket path,\n"
	      "                        tcp:HOST:PORT or ssh://[USER@]HOST[:PORT]/PATH\n"
	      "                        (default: $LIVEMERGE_CONNECT); a stopped VM's chains:\n"
	      "                        offline:DISK=PATH[,DISK=PATH...] (PATH its top image;\n"
	      "                        after ssh://[USER@]HOST[:PORT]/ on that host), run by a\n"
	      "                        qemu-storage-daemon started for the one command\n"
	      "  --json                machine-readable output, one JSON object a line\n"
	      "  --timeout SECS        connect and per-command timeout (default 30)\n"
	      "  --dry-run             print what would be sent, send nothing that changes state\n"
	      "  --debug               print every QMP message to stderr\n"
	      "  --journal DIR         where the per-VM journals live (default:\n"
	      "                        $XDG_STATE_HOME/livemerge or ~/.local/state/livemerge)\n"
	      "  --wait-lock SECS      a VM another livemerge is changing: wait up to SECS\n"
	      "                        for it to finish instead of refusing at once (exit 2)\n"
	      "  -i, --identity FILE   ssh: a private key to try after ssh-agent (repeatable)\n"
	      "  --known-hosts FILE    ssh: host keys (default ~/.ssh/known_hosts)\n"
	      "  --accept-new-host-key ssh: add an unknown host's key (a changed one: never)\n"
	      "  --ssh-timeout SECS    ssh: limit for connecting, authenticating and opening\n"
	      "                        the channel (default 15)\n"
	      "\nExit codes:\n"
	      "  0 success\n"
	      "  1 the operation failed (QEMU refused or a job failed); nothing changed\n"
	      "  2 usage or bad input (unknown disk, bad JSON argument), or the VM is busy\n"
	      "    with another livemerge (the message names its pid and verb); nothing sent\n"
	      "  3 cannot connect, transport or protocol failure\n"
	      "  4 interrupted with state possibly changed (the message says what to run)\n",
	      f);
}

/* --version itself, among the options main_version parses */
static int main_version_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	(void)ctx, (void)opt, (void)arg, (void)data;
	return 0;
}

/* --version; with -c TARGET among the global options (argv[1..argc-1]) also
 * the version of the QEMU behind it, from its greeting. */
static int main_version(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option version_opt[] = { { "version", no_argument, NULL, 'V' },
						      { NULL, 0, NULL, 0 } };
	static const struct cmd_entry version_entry = { .name = "--version", .args_usage = "",
							.help = "" };
	int first, r, v;

	printf("livemerge %s\n", LM_VERSION);
	fflush(stdout);
	ctx->target = NULL; /* only an explicit -c, not $LIVEMERGE_CONNECT */
	r = cli_parse_verb(ctx, &version_entry, argc, argv, NULL, version_opt, main_version_opt,
			   NULL, &first);
	if (r != 0 || ctx->target == NULL)
		return r < 0 ? EXIT_OK : r;
	ctx->loop = EV_DEFAULT;
	r = cli_connect(ctx);
	if (r == EXIT_OK) {
		v = qmp_conn_qemu_version(ctx->conn);
		if (v > 0)
			printf("qemu %d.%d.%d (%s)\n", v / 10000, v / 100 % 100, v % 100, ctx->target);
		else
			printf("qemu unknown (%s)\n", ctx->target);
	}
	qmp_conn_free(ctx->conn);
	return r;
}

int main(int argc, char **argv)
{
	struct cli_ctx ctx = { .timeout = 30 };
	int i, r, version = 0;

	ctx.target = getenv("LIVEMERGE_CONNECT");
	/* fault injection for the recovery tests: die right after this journal step */
	if (getenv("LIVEMERGE_CRASH_AT") != NULL && *getenv("LIVEMERGE_CRASH_AT") != '\0')
		merge_journal_set_crash_point(getenv("LIVEMERGE_CRASH_AT"));
	/* compaction's bound in bytes (tests make it small to compact every time) */
	if (getenv("LIVEMERGE_JOURNAL_COMPACT") != NULL && *getenv("LIVEMERGE_JOURNAL_COMPACT") != '\0')
		merge_journal_set_compact_bytes(strtoull(getenv("LIVEMERGE_JOURNAL_COMPACT"), NULL, 10));
	if (ctx.target != NULL && *ctx.target == '\0')
		ctx.target = NULL;
	/* global options up to the verb; the verb parses the rest (and these again) */
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--version") == 0) {
			version = 1;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			main_usage(stdout);
			return EXIT_OK;
		}
		if (strcmp(a, "-c") == 0 || strcmp(a, "--connect") == 0 || strcmp(a, "--timeout") == 0 ||
		    strcmp(a, "--journal") == 0 || strcmp(a, "-i") == 0 ||
		    strcmp(a, "--identity") == 0 || strcmp(a, "--known-hosts") == 0 ||
		    strcmp(a, "--ssh-timeout") == 0 || strcmp(a, "--wait-lock") == 0) {
			if (++i == argc)
				return cli_error(EXIT_USAGE, "option %s needs an argument", a);
			continue;
		}
		if (strncmp(a, "--connect=", 10) == 0 || strncmp(a, "--timeout=", 10) == 0 ||
		    strncmp(a, "--journal=", 10) == 0 || strncmp(a, "--identity=", 11) == 0 ||
		    strncmp(a, "--known-hosts=", 14) == 0 || strncmp(a, "--ssh-timeout=", 14) == 0 ||
		    strncmp(a, "--wait-lock=", 12) == 0 || strcmp(a, "--accept-new-host-key") == 0 || (a[1] == 'i' && a[2] != '\0') ||
		    (a[1] == 'c' && a[2] != '\0') || strcmp(a, "--json") == 0 ||
		    strcmp(a, "--dry-run") == 0 || strcmp(a, "--debug") == 0)
			continue;
		return cli_error(EXIT_USAGE, "unknown option '%s' before the verb "
					     "(livemerge --help lists them)", a);
	}
	if (version)
		return main_version(&ctx, i, argv);
	if (i == argc) {
		main_usage(stderr);
		return EXIT_USAGE;
	}
	for (r = 0; cmd_table[r] != NULL; r++) {
		const struct cmd_entry *cmd = cmd_table[r];
		char **vargv;
		int vargc, j, k = 0;

		if (strcmp(cmd->name, argv[i]) != 0)
			continue;
		/* the verb sees: verb, global options, its own arguments */
		vargc = argc - 1;
		vargv = calloc((size_t)argc + 1, sizeof(*vargv));
		if (vargv == NULL)
			abort();
		vargv[k++] = argv[i];
		for (j = 1; j < i; j++)
			vargv[k++] = argv[j];
		for (j = i + 1; j < argc; j++)
			vargv[k++] = argv[j];
		ctx.loop = EV_DEFAULT;
		r = cmd->exec(&ctx, vargc, vargv);
		cli_offline_stop(&ctx); /* an offline target's daemon, on every path */
		host_free(ctx.host);
		qmp_conn_free(ctx.conn);
		merge_vm_free(ctx.vm); /* its lock */
		free(vargv);
		fflush(stdout);
		return r;
	}
	cli_error(EXIT_USAGE, "unknown verb '%s' (livemerge --help lists them)", argv[i]);
	return EXIT_USAGE;
}

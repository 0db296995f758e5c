/*
 * cli: the livemerge command line, a thin user of liblivemerge.
 *
 * One file per verb (cmd-*.c) exporting one table entry; cmd.c holds the
 * table; cli.c the shared plumbing (connecting, waiting for a reply, exit
 * codes, printing). Everything printed for a person goes through escape.h.
 */
#ifndef LM_CLI_H
#define LM_CLI_H

#include <ev.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/lm-error.h"
#include "../host/host.h"
#include "../merge/recover.h"
#include "../qmp/conn.h"
#include "escape.h"

/* Exit codes: the contract with scripts and management engines. */
enum cli_exit {
	EXIT_OK = 0,          /* success */
	EXIT_FAILED = 1,      /* the operation failed (QEMU refused); nothing changed */
	EXIT_USAGE = 2,       /* usage or bad input; nothing sent */
	EXIT_CONNECT = 3,     /* cannot connect, transport or protocol failure */
	EXIT_INTERRUPTED = 4, /* interrupted with state possibly changed */
};

struct cli_ctx {
	struct ev_loop *loop;
	const char *target; /* -c, or $LIVEMERGE_CONNECT */
	int json;
	int dry_run;
	double timeout; /* per command, s */
	FILE *trace;    /* --debug */
	const char *journal_dir; /* --journal, NULL: the default */
	struct qmp_conn *conn;
	/* ssh:// targets (transport/transport.h, struct tr_opts) */
	const char *identities[16]; /* -i FILE, in order */
	int nidentities;
	const char *known_hosts; /* --known-hosts, NULL: ~/.ssh/known_hosts */
	int accept_new_hostkey;  /* --accept-new-host-key */
	double ssh_timeout;      /* --ssh-timeout, 0: the transport's default */
	struct host *host;       /* the VM's host (cli_host), made when first needed */
	double wait_lock;        /* --wait-lock: s to wait for a VM another livemerge holds */
	struct merge_vm *vm;     /* the VM, while this process holds its lock (cli_journal_open) */
	const char *volume_cmd;  /* --volume-cmd of the verb (recovery uses it too) */
	double volume_timeout;
	struct cli_offline *offline; /* an offline target's daemon (cli/offline.h) */
};

struct cmd_entry {
	const char *name;
	const char *args_usage; /* "[DISK...]" */
	const char *summary;    /* one line for the verb list */
	const char *help;       /* the verb's --help body */
	int needs_conn;
	/* argv[0] is the verb; returns an exit code */
	int (*exec)(struct cli_ctx *ctx, int argc, char **argv);
};

extern const struct cmd_entry *const cmd_table[];

/* Map an error to its exit code: QMP/FAILED/STATE 1, USAGE/BUSY 2, the rest 3. */
int cli_exit_code(const struct lm_error *err);

/* Put before every error message while set (e.g. the plan path in batch). */
extern const char *cli_error_prefix;

/* Print "livemerge: MSG" on stderr, one line with controls escaped (MSG
 * often quotes QEMU), and return code. */
int cli_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print err on stderr; return its exit code. */
int cli_report(const struct lm_error *err);

/* Connect to ctx->target and negotiate; returns EXIT_OK or an exit code
 * (message printed). */
int cli_connect(struct cli_ctx *ctx);

/* The same, quiet: 0 or -1 with err. */
int cli_connect_ex(struct cli_ctx *ctx, struct lm_error *err);

/* Connect to the monitor at target (not ctx->target: an offline target's
 * daemon) and negotiate: 0 or -1 with err. */
int cli_connect_monitor(struct cli_ctx *ctx, const char *target, struct lm_error *err);

/* A transport for target (monitor or guest agent) with ctx's ssh options:
 * tr_new_ex on ctx->loop. NULL with err on failure. */
struct tr *cli_transport(struct cli_ctx *ctx, const char *target, struct lm_error *err);

/* The VM's host, where its image files are: for an ssh:// target that host
 * (over the SSH session its monitor uses), else this machine. Made at the
 * first call; exits 3 if it cannot be (never this machine in its place). */
struct host *cli_host(struct cli_ctx *ctx);

/* Run one command and wait: 0 with *ret owned by the caller, or -1 and err. */
int cli_execute(struct cli_ctx *ctx, const char *name, json_object *args, json_object **ret,
		struct lm_error *err);

struct merge_chains;

/*
 * Read the chains for verb (its name starts the messages): query-jobs
 * first, refused (exit 1) while a concluded stream job waits to be
 * dismissed (merge_chains_hazard), then the chains, with each layer's
 * allocation when usage is set. EXIT_OK with *out owned (and *jobs, the
 * query-jobs return value, owned, when jobs is not NULL), or an exit code
 * (message printed).
 */
int cli_read_chains(struct cli_ctx *ctx, const char *verb, int usage, json_object **jobs,
		    struct merge_chains **out);

struct merge_journal;
struct merge_vm;

/* Ask the connected VM who it is, take its lock for verb (held in ctx->vm
 * until the process ends; waiting up to ctx->wait_lock s for another
 * livemerge to let it go) and open its journal. NULL (message printed,
 * *code set: 2 when the VM is busy) on failure. */
struct merge_journal *cli_journal_open(struct cli_ctx *ctx, const char *verb, int *code);

/* The first half of that: ask the connected VM who it is into ctx->vm and,
 * with verb, take its lock. EXIT_OK, or the exit code (message printed). */
int cli_identify(struct cli_ctx *ctx, const char *verb);

/* The target the VM's journal and lock are named by when QEMU tells no
 * identity: ctx->target, or an offline target's key (its disks sorted). */
const char *cli_vm_target(struct cli_ctx *ctx);

/* If the journal shows an unfinished operation, reconcile it now. Returns
 * EXIT_OK when the VM is consistent (recovered or nothing to do), else the
 * exit code (message printed). */
int cli_recover(struct cli_ctx *ctx, struct merge_journal *j, int verbose,
		enum merge_recovered *what);

/* Print a JSON value: compact on one line with --json (exact), pretty and
 * terminal-safe (CLI_ESC_JSON) otherwise. */
void cli_print_json(struct cli_ctx *ctx, json_object *o);

/*
 * Parse a verb's options: the verb's own longopts (may be NULL) plus the
 * options every verb takes (--json, --timeout, --dry-run, --debug, -c,
 * --help). For each verb option handle(ctx, opt, optarg, data) is called and
 * returns 0 or an exit code. Returns -1 when --help was given (help printed),
 * an exit code > 0 on error, or 0 with *first set to the first operand.
 */
int cli_parse_verb(struct cli_ctx *ctx, const struct cmd_entry *cmd, int argc, char **argv,
		   const char *shortopts, const struct option *longopts,
		   int (*handle)(struct cli_ctx *, int, const char *, void *), void *data,
		   int *first);

void cli_verb_usage(FILE *f, const struct cmd_entry *cmd);

/* Parse a byte count ("10485760", "10M", "512KiB"); 0 or -1. */
int cli_parse_size(const char *s, int64_t *out);

/* n bytes for a person: "512 B", "64 MiB", "1.5 GiB". */
void cli_format_size(int64_t n, char *buf, size_t len);

/* path made absolute against the working directory; malloc'd or NULL. */
char *cli_abspath(const char *path);

#endif

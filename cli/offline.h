/*
 * cli/offline: a stopped VM's chains, run through a qemu-storage-daemon
 * that livemerge starts on the VM's host for the one command (the target
 * "offline:DISK=PATH,...", merge/offline.h).
 *
 * The daemon gets a private directory (0700) for its monitor socket, is
 * started through the host layer (host_run_tied: it ends with livemerge,
 * however livemerge ends), and each disk's top image is opened by node
 * name DISK, its format read from its header first (QEMU never probes).
 * After the command it is told to quit, or stopped, and its directory is
 * removed.
 */
#ifndef LM_CLI_OFFLINE_H
#define LM_CLI_OFFLINE_H

#include "../merge/offline.h"
#include "cli.h"

/* 1 if ctx->target is an offline target. */
int cli_offline(const struct cli_ctx *ctx);

/* The parsed target (made at the first call; a malformed one exits 2,
 * nothing started). */
const struct merge_offline *cli_offline_target(struct cli_ctx *ctx);

/* The target the host layer is given: "ssh://HOST/offline" for a remote
 * host, NULL for this machine. */
const char *cli_offline_host_target(struct cli_ctx *ctx);

/*
 * Check every disk's chain on its host, start the daemon, connect
 * ctx->conn to it and open the disks. 0, or -1 with err: USAGE for an
 * image that cannot be opened as named, IO (exit 3) for an image another
 * process holds (named when the host can tell who) or a daemon that does
 * not start. A second call after the daemon ended fails: a daemon that
 * died is not started again behind the operation's back.
 */
int cli_offline_start(struct cli_ctx *ctx, struct lm_error *err);

/* Stop the daemon (quit, else stopped after a few seconds) and remove its
 * directory; nothing when none runs. ctx->conn is freed. */
void cli_offline_stop(struct cli_ctx *ctx);

/*
 * After a merge's success (result: its JSON result, borrowed): stop the
 * daemon, then read each resulting chain's headers back on the host: each
 * qcow2 layer must name the next as its backing, the last none. EXIT_OK, or
 * EXIT_INTERRUPTED with the message printed.
 */
int cli_offline_verify(struct cli_ctx *ctx, json_object *result);

#endif

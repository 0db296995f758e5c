/*
 * run-group: run a merge group for a verb and report it.
 */
#ifndef LM_RUN_GROUP_H
#define LM_RUN_GROUP_H

#include "../merge/group.h"
#include "cli.h"

/* Connect, run req to its end with progress output; returns the exit code. */
int cli_run_group(struct cli_ctx *ctx, const struct merge_request *req);

#endif

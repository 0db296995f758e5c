/*
 * request: a verb's command-line arguments turned into a merge request.
 * The verbs and the batch plan (whose "args" are exactly a verb's
 * arguments) share it.
 */
#ifndef LM_REQUEST_H
#define LM_REQUEST_H

#include "../merge/group.h"
#include "cli.h"

struct cli_request {
	struct merge_request req;
	struct merge_target *targets;
	char **owned; /* strings the request points into */
	int nowned;
	const char *quiesce; /* snapshot --quiesce target, NULL: none */
};

/*
 * Parse argv (argv[0] the verb: snapshot, commit or stream) into out.
 * Returns 0; -1 when --help was asked (printed); or an exit code with the
 * message printed. errbuf (may be NULL) receives the message too.
 */
int cli_request_parse(struct cli_ctx *ctx, int argc, char **argv, struct cli_request *out);

void cli_request_free(struct cli_request *r);

/* The verb entries this parser serves, by name; NULL if none. */
const struct cmd_entry *cli_request_verb(const char *name);

#endif

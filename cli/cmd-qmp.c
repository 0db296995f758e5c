/*
 * cmd-qmp: send one QMP command and print its reply.
 */
#include <string.h>

#include "cli.h"

static int cmd_qmp_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_qmp_entry = {
	.name = "qmp",
	.args_usage = "COMMAND [ARGUMENTS-JSON]",
	.summary = "send one QMP command, print the reply",
	.help = "\nSends COMMAND with ARGUMENTS-JSON (a JSON object) and prints QEMU's return\n"
		"value, pretty-printed (compact on one line with --json).\n"
		"Exit: 0 QEMU returned, 1 QEMU answered with an error, 2 bad input,\n"
		"3 cannot connect or protocol failure.\n"
		"Example: livemerge -c unix:/run/vm1/qmp.sock qmp query-jobs\n",
	.needs_conn = 1,
	.exec = cmd_qmp_exec,
};

static int cmd_qmp_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	json_object *args = NULL, *ret;
	struct lm_error err;
	int first, r;

	r = cli_parse_verb(ctx, &cmd_qmp_entry, argc, argv, NULL, NULL, NULL, NULL, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (argc - first < 1 || argc - first > 2) {
		cli_verb_usage(stderr, &cmd_qmp_entry);
		return EXIT_USAGE;
	}
	if (argc - first == 2) {
		enum json_tokener_error jerr;

		args = json_tokener_parse_verbose(argv[first + 1], &jerr);
		if (args == NULL || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			return cli_error(EXIT_USAGE, "qmp: ARGUMENTS must be a JSON object: %s",
					 args == NULL ? json_tokener_error_desc(jerr)
						      : "got another JSON value");
		}
	}
	if (ctx->dry_run) {
		json_object *cmd = json_object_new_object();

		json_object_object_add(cmd, "execute", json_object_new_string(argv[first]));
		if (args != NULL)
			json_object_object_add(cmd, "arguments", args);
		cli_print_json(ctx, cmd);
		json_object_put(cmd);
		return EXIT_OK;
	}
	r = cli_connect(ctx);
	if (r != EXIT_OK) {
		json_object_put(args);
		return r;
	}
	r = cli_execute(ctx, argv[first], args, &ret, &err);
	json_object_put(args);
	if (r < 0)
		return cli_report(&err);
	cli_print_json(ctx, ret);
	json_object_put(ret);
	return EXIT_OK;
}

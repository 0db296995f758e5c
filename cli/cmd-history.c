/*
 * cmd-history: every chain state the VM's journal recorded, oldest first.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "../merge/journal.h"
#include "cli.h"

static int cmd_history_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_history_entry = {
	.name = "history",
	.args_usage = "[DISK...]",
	.summary = "every chain state the journal recorded, oldest first",
	.help = "\nShows, oldest first, each chain state the VM's journal recorded: after every\n"
		"snapshot, commit and stream that read the chains back, and every recover that\n"
		"ended an interrupted one; with the time (UTC), the operation (verb and target;\n"
		"for recover, the verb it finished or rolled back) and each disk's chain,\n"
		"active layer first: file, format, virtual size, what held it and its size.\n"
		"With DISK (the name the disk had in the journal: device id, block-backend\n"
		"name or qdev path), only that disk's chains. The journal is the VM's, named\n"
		"after its UUID or name: history asks the VM who it is (query-uuid,\n"
		"query-name; nothing else is sent). When the VM cannot be reached (stopped),\n"
		"the journal named after the monitor is read (a storage daemon's, or a VM's\n"
		"without -uuid and -name); a VM with a UUID must be reachable.\n"
		"--json: one line per state, {\"type\":\"state\",\"op\",\"time\",\"verb\",\"target\",\n"
		"\"outcome\",\"disks\":[{\"disk\",\"device\",\"qdev\",\"node-name\",\"chain\":[{\n"
		"\"node-name\",\"filename\",\"format\",\"virtual-size\",\"backing-filename\",\"type\",\n"
		"\"size\"},...]}]} (\"of\" and \"recovered\" when recover ended it), then\n"
		"{\"type\":\"result\",\"ok\",\"verb\":\"history\",\"outcome\",\"states\"}. Each layer's\n"
		"backing file is the next layer: a state is enough to rebuild the chain by hand.\n"
		"Exit: 0 ok (also when nothing was recorded), 2 no target or a DISK no state\n"
		"names, 1 the journal cannot be read, 3 the VM cannot be reached and no journal\n"
		"is named after the monitor.\n",
	.needs_conn = 0,
	.exec = cmd_history_exec,
};

static const char *cmd_history_str(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static int64_t cmd_history_int(json_object *o, const char *k, int64_t dflt)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) &&
	    (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
		return json_object_get_int64(v);
	return dflt;
}

/* 1 if disk d (a state's entry) is the one the user named. */
static int cmd_history_is(json_object *d, const char *name)
{
	const char *keys[] = { "disk", "device", "qdev" };
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = cmd_history_str(d, keys[i]);

		if (v != NULL && *v != '\0' && strcmp(v, name) == 0)
			return 1;
	}
	return 0;
}

/* st's disks that names[0..n) name (all when n is 0), an owned array. */
static json_object *cmd_history_disks(json_object *st, char **names, int n)
{
	json_object *disks = json_object_object_get(st, "disks"), *out = json_object_new_array();
	size_t i;
	int k;

	for (i = 0; json_object_is_type(disks, json_type_array) &&
		    i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, i);

		for (k = 0; k < n && !cmd_history_is(d, names[k]); k++)
			;
		if (n == 0 || k < n)
			json_object_array_add(out, json_object_get(d));
	}
	return out;
}

static void cmd_history_print_text(json_object *st, json_object *disks)
{
	const char *verb = cmd_history_str(st, "verb"), *of = cmd_history_str(st, "of");
	const char *rec = cmd_history_str(st, "recovered"), *target = cmd_history_str(st, "target");
	int64_t outcome = cmd_history_int(st, "outcome", -1);
	time_t t = (time_t)cmd_history_int(st, "time", 0);
	char when[64], what[160];
	struct tm tm;
	size_t i, k;

	if (gmtime_r(&t, &tm) == NULL || strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof(when), "?");
	if (of != NULL)
		snprintf(what, sizeof(what), "%s of a %s (%s)", verb ? verb : "?", of,
			 rec ? rec : "?");
	else
		snprintf(what, sizeof(what), "%s%s", verb ? verb : "?",
			 outcome == 0 ? "" : outcome == 1 ? " (failed, rolled back)" : " (unknown end)");
	cli_line(stdout, "#%" PRId64 "  %s  %s  %s", cmd_history_int(st, "op", 0), when, what,
		 target ? target : "");
	for (i = 0; i < json_object_array_length(disks); i++) {
		json_object *d = json_object_array_get_idx(disks, i);
		json_object *chain = json_object_object_get(d, "chain");
		size_t n = json_object_is_type(chain, json_type_array) ? json_object_array_length(chain)
									: 0;

		cli_line(stdout, "  %s", cmd_history_str(d, "disk") ? cmd_history_str(d, "disk") : "?");
		for (k = 0; k < n; k++) {
			json_object *l = json_object_array_get_idx(chain, k);
			const char *type = cmd_history_str(l, "type");
			int64_t size = cmd_history_int(l, "size", -1);
			char vsize[32], hsize[32];

			cli_format_size(cmd_history_int(l, "virtual-size", 0), vsize, sizeof(vsize));
			cli_format_size(size, hsize, sizeof(hsize));
			cli_line(stdout, "    %-6s %s  %s  %s%s%s%s%s",
				 k == 0 ? "active" : k + 1 == n ? "base" : "",
				 cmd_history_str(l, "filename") ? cmd_history_str(l, "filename") : "?",
				 cmd_history_str(l, "format") ? cmd_history_str(l, "format") : "?",
				 vsize, type || size >= 0 ? "  " : "", type ? type : "",
				 type && size >= 0 ? " " : "", size >= 0 ? hsize : "");
		}
	}
}

/* The VM's journal: asked of the VM who it is (no lock: history changes
 * nothing), else, when it cannot be reached, the one named after the
 * monitor if there is one. NULL with *code (message printed). */
static struct merge_journal *cmd_history_journal(struct cli_ctx *ctx, int *code)
{
	struct lm_error err, e2;
	char dir[4096], stem[512], *path = NULL;
	struct merge_journal *j = NULL;

	if (cli_connect_ex(ctx, &err) == 0)
		return cli_journal_open(ctx, NULL, code);
	merge_journal_target_stem(cli_vm_target(ctx), stem, sizeof(stem));
	if (merge_journal_dir(ctx->journal_dir, dir, sizeof(dir), &e2) == 0 &&
	    asprintf(&path, "%s/%s.journal", dir, stem) > 0 && access(path, F_OK) == 0)
		j = merge_journal_open_stem(ctx->journal_dir, stem, &e2);
	free(path);
	if (j == NULL)
		*code = cli_error(cli_exit_code(&err), "history: %s (the VM's journal is named after "
						       "its identity, which only the VM tells)",
				  err.msg);
	return j;
}

static int cmd_history_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	struct merge_journal *j;
	struct lm_error err;
	json_object *states;
	int first, r, i, *seen = NULL, shown = 0;
	size_t k;

	r = cli_parse_verb(ctx, &cmd_history_entry, argc, argv, NULL, NULL, NULL, NULL, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (ctx->target == NULL)
		return cli_error(EXIT_USAGE, "history: no monitor given: use -c TARGET (the VM's "
					     "journal is named after it) or set LIVEMERGE_CONNECT");
	j = cmd_history_journal(ctx, &r);
	if (j == NULL)
		return r;
	if (merge_journal_history(j, &states, &err) < 0) {
		merge_journal_close(j);
		return cli_error(EXIT_FAILED, "history: %s", err.msg);
	}
	merge_journal_close(j);
	seen = calloc((size_t)(argc - first) + 1, sizeof(*seen));
	if (seen == NULL)
		abort();
	for (k = 0; k < json_object_array_length(states); k++) {
		json_object *disks = cmd_history_disks(json_object_array_get_idx(states, k),
							argv + first, argc - first);
		size_t d;

		for (d = 0; d < json_object_array_length(disks); d++)
			for (i = first; i < argc; i++)
				seen[i - first] |= cmd_history_is(json_object_array_get_idx(disks, d),
								  argv[i]);
		json_object_put(disks);
	}
	for (i = first; i < argc; i++)
		if (!seen[i - first]) {
			r = cli_error(EXIT_USAGE, "history: no chain state in the journal names a disk "
						  "'%s'", argv[i]);
			free(seen);
			json_object_put(states);
			return r;
		}
	free(seen);
	for (k = 0; k < json_object_array_length(states); k++) {
		json_object *st = json_object_array_get_idx(states, k);
		json_object *disks = cmd_history_disks(st, argv + first, argc - first);

		if (json_object_array_length(disks) == 0) {
			json_object_put(disks);
			continue;
		}
		shown++;
		if (ctx->json) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "type", json_object_new_string("state"));
			json_object_object_foreach(st, key, val)
			{
				if (strcmp(key, "disks") != 0)
					json_object_object_add(o, key, json_object_get(val));
			}
			json_object_object_add(o, "disks", json_object_get(disks));
			cli_print_json(ctx, o);
			json_object_put(o);
		} else {
			cmd_history_print_text(st, disks);
		}
		json_object_put(disks);
	}
	json_object_put(states);
	if (ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("result"));
		json_object_object_add(o, "ok", json_object_new_boolean(1));
		json_object_object_add(o, "verb", json_object_new_string("history"));
		json_object_object_add(o, "outcome", json_object_new_int(EXIT_OK));
		json_object_object_add(o, "states", json_object_new_int(shown));
		cli_print_json(ctx, o);
		json_object_put(o);
	} else if (shown == 0) {
		cli_line(stderr, "no chain state recorded for this VM yet");
	}
	return EXIT_OK;
}

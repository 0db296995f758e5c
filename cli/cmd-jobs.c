/*
 * cmd-jobs: list QEMU's block jobs; cmd-cancel lives here too (both read
 * the same job table).
 */
#include <stdlib.h>
#include <string.h>

#include "../merge/xlate.h"
#include "cli.h"

static int cmd_jobs_exec(struct cli_ctx *ctx, int argc, char **argv);
static int cmd_cancel_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_jobs_entry = {
	.name = "jobs",
	.args_usage = "",
	.summary = "list the block jobs QEMU has",
	.help = "\nLists QEMU's jobs: id, type, disk (for livemerge's own jobs), status,\n"
		"progress and speed. --json: one object per job and line.\n",
	.needs_conn = 1,
	.exec = cmd_jobs_exec,
};

const struct cmd_entry cmd_cancel_entry = {
	.name = "cancel",
	.args_usage = "JOB [JOB...]",
	.summary = "cancel jobs without pivot, and dismiss them",
	.help = "\nCancels each JOB (as 'jobs' lists it) without pivot: a commit that is ready\n"
		"is abandoned, its disk stays on the layer it had. Waits until each job ends\n"
		"and dismisses those QEMU keeps. Exit 1 if a job cannot be cancelled, 2 if\n"
		"there is no such job.\n",
	.needs_conn = 1,
	.exec = cmd_cancel_exec,
};

/* "livemerge-commit-vda" -> "vda" */
static const char *cmd_jobs_disk(const char *id)
{
	static const char *const prefixes[] = { "livemerge-commit-", "livemerge-stream-", NULL };
	int i;

	for (i = 0; prefixes[i] != NULL; i++)
		if (strncmp(id, prefixes[i], strlen(prefixes[i])) == 0)
			return id + strlen(prefixes[i]);
	return "-";
}

static int64_t cmd_jobs_speed(json_object *block_jobs, const char *id)
{
	size_t i;

	for (i = 0; block_jobs && i < json_object_array_length(block_jobs); i++) {
		json_object *o = json_object_array_get_idx(block_jobs, i), *v;

		if (json_object_object_get_ex(o, "device", &v) &&
		    strcmp(json_object_get_string(v), id) == 0 &&
		    json_object_object_get_ex(o, "speed", &v))
			return json_object_get_int64(v);
	}
	return 0;
}

static int cmd_jobs_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	json_object *jobs, *block_jobs = NULL;
	struct xl_job_info ji;
	struct lm_error err;
	int first, r, i;

	r = cli_parse_verb(ctx, &cmd_jobs_entry, argc, argv, NULL, NULL, NULL, NULL, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (first != argc) {
		cli_verb_usage(stderr, &cmd_jobs_entry);
		return EXIT_USAGE;
	}
	if ((r = cli_connect(ctx)) != EXIT_OK)
		return r;
	{
		struct xl_cmd q = xl_query_jobs();

		if (cli_execute(ctx, q.name, q.args, &jobs, &err) < 0)
			return cli_report(&err);
	}
	if (cli_execute(ctx, "query-block-jobs", NULL, &block_jobs, &err) < 0)
		block_jobs = NULL; /* speed is a nicety */
	if (!ctx->json && xl_query_jobs_entry(jobs, 0, &ji) == 0)
		cli_line(stdout, "%-28s %-8s %-8s %-10s %8s %12s", "JOB", "TYPE", "DISK", "STATUS",
		       "PROGRESS", "SPEED");
	for (i = 0; xl_query_jobs_entry(jobs, i, &ji) == 0; i++) {
		double pct = ji.len > 0 ? 100.0 * (double)ji.offset / (double)ji.len : 0;
		int64_t speed = cmd_jobs_speed(block_jobs, ji.id);

		if (ctx->json) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "type", json_object_new_string("job"));
			json_object_object_add(o, "job", json_object_new_string(ji.id));
			json_object_object_add(o, "job-type", json_object_new_string(ji.type ? ji.type : ""));
			json_object_object_add(o, "disk", json_object_new_string(cmd_jobs_disk(ji.id)));
			json_object_object_add(o, "status",
					       json_object_new_string(xl_job_status_name(ji.status)));
			json_object_object_add(o, "offset", json_object_new_int64(ji.offset));
			json_object_object_add(o, "len", json_object_new_int64(ji.len));
			json_object_object_add(o, "speed", json_object_new_int64(speed));
			if (ji.error)
				json_object_object_add(o, "error", json_object_new_string(ji.error));
			cli_print_json(ctx, o);
			json_object_put(o);
		} else {
			cli_line(stdout, "%-28s %-8s %-8s %-10s %7.1f%% %12lld%s%s", ji.id,
			       ji.type ? ji.type : "", cmd_jobs_disk(ji.id),
			       xl_job_status_name(ji.status), pct, (long long)speed,
			       ji.error ? "  error: " : "", ji.error ? ji.error : "");
		}
	}
	json_object_put(jobs);
	json_object_put(block_jobs);
	return EXIT_OK;
}

struct cancel_wait {
	char **ids;
	int n;
	int *ended; /* concluded or null seen */
};

static void cmd_cancel_event(struct qmp_conn *c, const struct qmp_msg *ev, void *arg)
{
	struct cancel_wait *w = arg;
	struct xl_job_event je;
	int i;

	(void)c;
	xl_job_event_decode(ev, &je);
	if (je.kind != XL_EV_STATUS)
		return;
	for (i = 0; i < w->n; i++)
		if (strcmp(w->ids[i], je.job_id) == 0 &&
		    (je.status == XL_JOB_CONCLUDED || je.status == XL_JOB_NULL))
			w->ended[i] = 1;
}

static int cmd_cancel_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	struct cancel_wait w = { 0 };
	json_object *jobs, *ret;
	struct xl_job_info ji;
	struct lm_error err;
	int first, r, i, k, failed = 0;

	r = cli_parse_verb(ctx, &cmd_cancel_entry, argc, argv, NULL, NULL, NULL, NULL, &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (first == argc) {
		cli_verb_usage(stderr, &cmd_cancel_entry);
		return EXIT_USAGE;
	}
	if ((r = cli_connect(ctx)) != EXIT_OK)
		return r;
	if (cli_execute(ctx, "query-jobs", NULL, &jobs, &err) < 0)
		return cli_report(&err);
	w.ids = argv + first;
	w.n = argc - first;
	w.ended = calloc((size_t)w.n, sizeof(int));
	if (w.ended == NULL)
		abort();
	for (i = 0; i < w.n; i++) {
		for (k = 0; xl_query_jobs_entry(jobs, k, &ji) == 0; k++)
			if (strcmp(ji.id, w.ids[i]) == 0)
				break;
		if (xl_query_jobs_entry(jobs, k, &ji) < 0) {
			json_object_put(jobs);
			free(w.ended);
			return cli_error(EXIT_USAGE, "cancel: no job '%s' ('livemerge jobs' lists them)",
					 w.ids[i]);
		}
		if (ji.status == XL_JOB_CONCLUDED)
			w.ended[i] = 1;
	}
	json_object_put(jobs);
	qmp_conn_set_event_cb(ctx->conn, cmd_cancel_event, &w);
	for (i = 0; i < w.n; i++) {
		struct xl_cmd c;

		if (w.ended[i])
			continue;
		c = xl_job_verb(XL_VERB_CANCEL, w.ids[i]);
		if (ctx->dry_run) {
			printf("{\"execute\":\"%s\",\"arguments\":", c.name);
			cli_put_escaped(stdout,
					json_object_to_json_string_ext(c.args, JSON_C_TO_STRING_PLAIN),
					CLI_ESC_JSON);
			puts("}");
			json_object_put(c.args);
			w.ended[i] = 1;
			continue;
		}
		r = cli_execute(ctx, c.name, c.args, &ret, &err);
		json_object_put(c.args);
		if (r < 0) {
			cli_error(cli_exit_code(&err), "cancel: %s", err.msg);
			failed = 1;
			w.ended[i] = 1;
			continue;
		}
		json_object_put(ret);
	}
	for (;;) {
		for (i = 0; i < w.n && w.ended[i]; i++)
			;
		if (i == w.n || qmp_conn_error(ctx->conn) != NULL)
			break;
		ev_run(ctx->loop, EVRUN_ONCE);
	}
	qmp_conn_set_event_cb(ctx->conn, NULL, NULL);
	/* dismiss what QEMU kept */
	if (!ctx->dry_run && cli_execute(ctx, "query-jobs", NULL, &jobs, &err) == 0) {
		for (k = 0; xl_query_jobs_entry(jobs, k, &ji) == 0; k++) {
			for (i = 0; i < w.n && strcmp(w.ids[i], ji.id) != 0; i++)
				;
			if (i == w.n || ji.status != XL_JOB_CONCLUDED)
				continue;
			{
				struct xl_cmd c = xl_job_verb(XL_VERB_DISMISS, ji.id);

				if (cli_execute(ctx, c.name, c.args, &ret, &err) == 0)
					json_object_put(ret);
				json_object_put(c.args);
			}
			if (!ctx->json)
				cli_line(stdout, "%s: cancelled%s%s", ji.id, ji.error ? ": " : "",
					 ji.error ? ji.error : "");
		}
		json_object_put(jobs);
	}
	free(w.ended);
	return failed ? EXIT_FAILED : EXIT_OK;
}

/*
 * run-group: drive a merge group from the command line, with progress.
 *
 * Output: on a terminal, a progress bar per disk on stderr (percent, rate,
 * ETA); otherwise a plain line per job state change; with --json one JSON
 * object per line on stdout: {"type":"job",...}, {"type":"message",...},
 * {"type":"command",...} (dry run) and last {"type":"result",...}.
 * SIGINT/SIGTERM ask the group to cancel: before the pivot point every job
 * is cancelled and the chains stay as they were. Human lines carry QEMU's
 * names and texts: each is printed through cli_line (escape.h).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../merge/group.h"
#include "../merge/journal.h"
#include "../merge/recover.h"
#include "offline.h"
#include "run-group.h"

struct bar {
	char *disk;
	char status[16];
	int64_t offset, len, off0;
	double t0, last_t;
	int64_t last_off;
	double rate;
};

struct run {
	struct cli_ctx *ctx;
	struct merge_group *g;
	int done;
	int outcome;
	int tty;
	int nbars, drawn;
	struct bar bars[64];
	ev_signal sigint, sigterm;
	int interrupted;
	int may_retry; /* a lost monitor is worth a reconnect */
	int conn_lost; /* it was lost: the result is not final */
	json_object *result; /* the last result, for an offline target's check */
};

static void run_bars_clear(struct run *r)
{
	int i;

	for (i = 0; i < r->drawn; i++)
		fputs("\033[1A\r\033[K", stderr);
	r->drawn = 0;
}

static void run_bars_draw(struct run *r)
{
	int i;

	for (i = 0; i < r->nbars; i++) {
		struct bar *b = &r->bars[i];
		double frac = b->len > 0 ? (double)b->offset / (double)b->len : 0;
		char fill[31], line[512];
		int k, w = (int)(frac * 30), n;

		if (strcmp(b->status, "pending") == 0 || strcmp(b->status, "concluded") == 0 ||
		    strcmp(b->status, "ready") == 0)
			w = b->len > 0 ? w : 30;
		for (k = 0; k < 30; k++)
			fill[k] = k < w ? '#' : '.';
		fill[30] = '\0';
		n = snprintf(line, sizeof(line), "%-10s [%s] %5.1f%% %-9s", b->disk, fill,
			     frac * 100, b->status);
		if (b->rate > 0 && n >= 0 && (size_t)n < sizeof(line)) {
			double eta = (double)(b->len - b->offset) / b->rate;

			n += snprintf(line + n, sizeof(line) - (size_t)n, " %7.1f MiB/s",
				      b->rate / 1048576.0);
			if (eta > 0 && (size_t)n < sizeof(line))
				snprintf(line + n, sizeof(line) - (size_t)n, " ETA %2d:%02d",
					 (int)eta / 60, (int)eta % 60);
		}
		cli_line(stderr, "%s", line);
	}
	r->drawn = r->nbars;
}

static struct bar *run_bar(struct run *r, const char *disk)
{
	int i;

	for (i = 0; i < r->nbars; i++)
		if (strcmp(r->bars[i].disk, disk) == 0)
			return &r->bars[i];
	if (r->nbars == 64)
		return NULL;
	memset(&r->bars[r->nbars], 0, sizeof(r->bars[0]));
	r->bars[r->nbars].disk = strdup(disk);
	r->bars[r->nbars].off0 = -1;
	return &r->bars[r->nbars++];
}

static void run_job_cb(const struct merge_job_update *u, void *arg)
{
	struct run *r = arg;
	struct bar *b = run_bar(r, u->disk);
	double now = ev_now(r->ctx->loop);
	int changed;

	if (r->ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("job"));
		json_object_object_add(o, "disk", json_object_new_string(u->disk));
		json_object_object_add(o, "job", json_object_new_string(u->job_id));
		json_object_object_add(o, "status", json_object_new_string(u->status));
		json_object_object_add(o, "offset", json_object_new_int64(u->offset < 0 ? 0 : u->offset));
		json_object_object_add(o, "len", json_object_new_int64(u->len < 0 ? 0 : u->len));
		cli_print_json(r->ctx, o);
		json_object_put(o);
		fflush(stdout);
	}
	if (b == NULL)
		return;
	changed = strcmp(b->status, u->status) != 0;
	snprintf(b->status, sizeof(b->status), "%s", u->status);
	if (u->offset >= 0) {
		if (b->off0 < 0) {
			b->off0 = b->last_off = u->offset;
			b->t0 = b->last_t = now;
		} else if (now - b->last_t >= 0.5) {
			double inst = (double)(u->offset - b->last_off) / (now - b->last_t);

			b->rate = b->rate > 0 ? 0.7 * b->rate + 0.3 * inst : inst;
			b->last_off = u->offset;
			b->last_t = now;
		}
		b->offset = u->offset;
	}
	if (u->len >= 0)
		b->len = u->len;
	if (r->ctx->json)
		return;
	if (r->tty) {
		run_bars_clear(r);
		run_bars_draw(r);
	} else if (changed && b->len > 0) {
		cli_line(stderr, "%s: job %s %s (%lld/%lld bytes)", u->disk, u->job_id, u->status,
			 (long long)b->offset, (long long)b->len);
	} else if (changed) {
		cli_line(stderr, "%s: job %s %s", u->disk, u->job_id, u->status);
	}
}

static void run_message_cb(const char *line, void *arg)
{
	struct run *r = arg;

	if (r->ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("message"));
		json_object_object_add(o, "message", json_object_new_string(line));
		cli_print_json(r->ctx, o);
		json_object_put(o);
		fflush(stdout);
		return;
	}
	if (r->tty)
		run_bars_clear(r);
	cli_line(stderr, "%s", line);
	if (r->tty)
		run_bars_draw(r);
}

static void run_command_cb(const char *name, json_object *args, void *arg)
{
	struct run *r = arg;
	json_object *o;

	if (!r->ctx->dry_run)
		return;
	o = json_object_new_object();
	if (r->ctx->json)
		json_object_object_add(o, "type", json_object_new_string("command"));
	json_object_object_add(o, "execute", json_object_new_string(name));
	if (args != NULL)
		json_object_object_add(o, "arguments", json_object_get(args));
	if (r->ctx->json) {
		cli_print_json(r->ctx, o);
	} else {
		cli_put_escaped(stdout,
				json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
									  JSON_C_TO_STRING_NOSLASHESCAPE),
				CLI_ESC_JSON);
		putchar('\n');
	}
	json_object_put(o);
}

static void run_print_chains(json_object *result)
{
	json_object *disks, *d, *chain, *l, *v;
	size_t i, k, len;
	char *line;
	FILE *f;

	if (!json_object_object_get_ex(result, "disks", &disks))
		return;
	for (i = 0; i < json_object_array_length(disks); i++) {
		d = json_object_array_get_idx(disks, i);
		if (!json_object_object_get_ex(d, "chain", &chain))
			continue;
		f = open_memstream(&line, &len);
		if (f == NULL)
			abort();
		json_object_object_get_ex(d, "disk", &v);
		fprintf(f, "%s:", json_object_get_string(v));
		for (k = 0; k < json_object_array_length(chain); k++) {
			l = json_object_array_get_idx(chain, k);
			json_object_object_get_ex(l, "filename", &v);
			fprintf(f, "%s %s", k ? " ->" : "", json_object_get_string(v));
		}
		if (fclose(f) != 0)
			abort();
		cli_line(stdout, "%s", line);
		free(line);
	}
}

static void run_done_cb(const struct merge_result *res, void *arg)
{
	struct run *r = arg;

	r->done = 1;
	r->outcome = res->outcome;
	json_object_put(r->result);
	r->result = json_object_get(res->json);
	if (res->outcome == MERGE_UNKNOWN && r->may_retry && !r->interrupted &&
	    (res->err->code == LM_ERR_EOF || res->err->code == LM_ERR_IO)) {
		r->conn_lost = 1;
		run_message_cb(res->err->msg, r);
		run_message_cb("reconnecting to the monitor", r);
		return;
	}
	if (r->tty && !r->ctx->json)
		run_bars_clear(r), run_bars_draw(r), r->drawn = 0;
	if (r->ctx->json) {
		cli_print_json(r->ctx, res->json);
		if (res->err != NULL)
			cli_error(0, "%s", res->err->msg);
		return;
	}
	if (res->outcome == MERGE_DONE) {
		if (!r->ctx->dry_run)
			run_print_chains(res->json);
		return;
	}
	cli_error(0, "%s", res->err->msg);
	if (res->outcome == MERGE_FAILED)
		cli_error(0, "rolled back: every chain is as it was");
	else if (res->outcome == MERGE_UNKNOWN && cli_offline(r->ctx))
		/* its daemon is gone with its jobs: the images and the journal tell */
		cli_error(0, "the chains may have changed: run 'livemerge -c %s recover' to "
			     "finish or roll back the operation", r->ctx->target);
	else if (res->outcome == MERGE_UNKNOWN)
		cli_error(0, "the chains may have changed: check with 'livemerge chain' and "
			     "'livemerge jobs'");
}

static void run_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct run *r = w->data;

	(void)loop;
	(void)revents;
	if (r->interrupted++ == 0) {
		run_message_cb("interrupted: cancelling (no disk pivots unless finalizing "
			       "started already)", r);
		merge_group_cancel(r->g);
	}
}

/* After a lost monitor: reconnect with backoff; EXIT_OK or an exit code. */
static int run_reconnect(struct run *r)
{
	struct cli_ctx *ctx = r->ctx;
	static const double delays[] = { 0.5, 1, 2, 4, 8 };
	struct lm_error err;
	size_t i;

	qmp_conn_free(ctx->conn);
	ctx->conn = NULL;
	for (i = 0; i < sizeof(delays) / sizeof(delays[0]) && !r->interrupted; i++) {
		ev_sleep(delays[i]);
		if (cli_connect_ex(ctx, &err) == 0) {
			run_message_cb("monitor reconnected", r);
			return EXIT_OK;
		}
		qmp_conn_free(ctx->conn);
		ctx->conn = NULL;
	}
	return cli_error(EXIT_INTERRUPTED,
			 "the monitor connection was lost and %zu reconnects failed (%s): QEMU may be "
			 "gone. Its images are consistent on disk; the journal records the "
			 "operation: once the VM runs again, run 'livemerge recover'", i, err.msg);
}

int cli_run_group(struct cli_ctx *ctx, const struct merge_request *req)
{
	struct merge_callbacks cbs = {
		.job = run_job_cb,
		.message = run_message_cb,
		.command = run_command_cb,
		.done = run_done_cb,
	};
	struct run *r = calloc(1, sizeof(*r));
	struct merge_request jreq = *req;
	struct merge_journal *journal = NULL;
	struct lm_error err;
	int code, i, attempt;

	if (r == NULL)
		abort();
	r->ctx = ctx;
	r->tty = isatty(STDERR_FILENO) && !ctx->json;
	code = cli_connect(ctx);
	if (code != EXIT_OK)
		goto out;
	if (!ctx->dry_run) {
		journal = cli_journal_open(ctx, merge_verb_name(req->verb), &code);
		if (journal == NULL)
			goto out;
		/* an earlier operation on this VM that did not finish comes first */
		code = cli_recover(ctx, journal, 0, NULL);
		if (code != EXIT_OK)
			goto out;
		jreq.journal = journal;
	}
	if (jreq.host == NULL)
		jreq.host = cli_host(ctx); /* ssh://: the images are on that host */
	ev_signal_init(&r->sigint, run_signal_cb, SIGINT);
	ev_signal_init(&r->sigterm, run_signal_cb, SIGTERM);
	r->sigint.data = r->sigterm.data = r;
	ev_signal_start(ctx->loop, &r->sigint);
	ev_signal_start(ctx->loop, &r->sigterm);
	for (attempt = 0;; attempt++) {
		r->done = r->conn_lost = 0;
		/* a storage daemon of ours that died is not started again under a job:
		 * as a QEMU that died, the journal and recover finish the operation */
		r->may_retry = journal != NULL && attempt < 3 && !cli_offline(ctx);
		r->g = merge_group_start(ctx->conn, &jreq, &cbs, r, &err);
		if (r->g == NULL) {
			code = cli_report(&err);
			break;
		}
		while (!r->done)
			ev_run(ctx->loop, EVRUN_ONCE);
		merge_group_free(r->g);
		r->g = NULL;
		code = r->outcome;
		if (!r->conn_lost)
			break;
		code = run_reconnect(r);
		if (code != EXIT_OK)
			break;
		if (req->verb == MERGE_SNAPSHOT || merge_journal_unfinished_has(journal, "finalize")) {
			/* past the point of no return, or a transaction whose answer was
			 * lost: the journal and the live chains tell what happened */
			enum merge_recovered what;

			code = cli_recover(ctx, journal, 0, &what);
			if (code == EXIT_OK)
				code = what == MERGE_REC_FINISHED	? EXIT_OK
				       : what == MERGE_REC_ROLLED_BACK ? EXIT_FAILED
									: EXIT_INTERRUPTED;
			break;
		}
		jreq.adopt = 1; /* the jobs run on in QEMU: take them over */
	}
	ev_signal_stop(ctx->loop, &r->sigint);
	ev_signal_stop(ctx->loop, &r->sigterm);
	if (code == EXIT_OK && cli_offline(ctx) && !ctx->dry_run && r->result != NULL)
		code = cli_offline_verify(ctx, r->result); /* the images, read back */
out:
	json_object_put(r->result);
	merge_journal_close(journal);
	for (i = 0; i < r->nbars; i++)
		free(r->bars[i].disk);
	free(r);
	return code;
}

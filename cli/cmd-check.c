/*
 * cmd-check: hold each disk's live chain against the image headers on the
 * VM's host, the journal, the engine's view (--expect) and the VM's
 * directories (--dir); change nothing. The comparing is merge/check.c's;
 * this file gathers its inputs (every file read at once on the loop) and
 * prints what it found.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/check.h"
#include "../merge/journal.h"
#include "../merge/query.h"
#include "../merge/vmlock.h"
#include "cli.h"

static int cmd_check_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_check_entry = {
	.name = "check",
	.args_usage = "[DISK...] [--expect FILE] [--dir DIR]...",
	.summary = "compare the chains with the image headers, the journal and the engine's view",
	.help = "\nReads each disk's live chain (QEMU), every layer's image header on the VM's host\n"
		"(read there, not through QEMU: format, backing file and format, dirty and\n"
		"corrupt bits), the journal's last operation, and compares them. Changes\n"
		"nothing: no file is opened for writing, no QMP command that changes state is\n"
		"sent, no recovery runs. With no DISK, all disks.\n"
		"  --expect FILE  the engine's view, JSON {\"vda\": [\"/top\", ..., \"/base\"], ...}\n"
		"  --dir DIR      (repeatable) image files and volumes in DIR on the VM's host\n"
		"                 that are in no chain of the VM are orphans\n"
		"One line per finding: code, disk, layer, what each source says, then a summary.\n"
		"Codes: backing-mismatch, missing, unfinished-operation, journal-differs,\n"
		"expect-differs, orphan, dirty, corrupt, foreign-job (README: what to do).\n"
		"--json: {\"type\":\"finding\",\"code\",\"disk\",\"layer\",...} per finding, then\n"
		"{\"type\":\"summary\",\"findings\",\"disks\",\"layers\",\"codes\":{...}}.\n"
		"Exit: 0 no finding, 1 findings, 2 bad input (unknown disk, unreadable or\n"
		"invalid --expect, no such --dir), 3 cannot connect or read the host.\n",
	.needs_conn = 1,
	.exec = cmd_check_exec,
};

#define CHECK_MAX_DIRS 16

struct check_opts {
	const char *expect_file;
	const char *dirs[CHECK_MAX_DIRS];
	int ndirs;
};

/* One path being read on the host. */
struct check_look {
	struct check_run *run;
	char *path;
	int done;
	struct merge_check_file f;
	unsigned char *head;
	struct lm_error err;
	int failed;
};

struct check_run {
	struct host *host;
	struct check_look *looks; /* the live layers, then the --dir entries */
	int nlooks, cap, pending;
	int started, inflight;    /* looks[0..started) were started; inflight of them run */
	int ndir_first;           /* index of the first --dir entry in looks */
	int lists_pending;
	int failed_code;          /* an exit code when gathering failed */
};

enum { OPT_EXPECT = 2000, OPT_DIR };

static int cmd_check_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	struct check_opts *o = data;

	(void)ctx;
	if (opt == OPT_EXPECT) {
		o->expect_file = arg;
		return 0;
	}
	if (o->ndirs == CHECK_MAX_DIRS)
		return cli_error(EXIT_USAGE, "check: at most %d --dir", CHECK_MAX_DIRS);
	o->dirs[o->ndirs++] = arg;
	return 0;
}

/* Read and parse --expect: EXIT_OK with *out, or EXIT_USAGE (said). */
static int cmd_check_read_expect(const char *file, json_object **out)
{
	char why[256], *buf = NULL;
	size_t len = 0, cap = 0;
	FILE *fp = fopen(file, "r");
	int r;

	if (fp == NULL)
		return cli_error(EXIT_USAGE, "check: --expect %s: %s", file, strerror(errno));
	for (;;) {
		size_t n;

		if (len + 4096 > cap) {
			if (cap >= (16u << 20)) {
				fclose(fp);
				free(buf);
				return cli_error(EXIT_USAGE, "check: --expect %s: larger than 16 MiB",
						 file);
			}
			cap = cap ? 2 * cap : 8192;
			if ((buf = realloc(buf, cap)) == NULL)
				abort();
		}
		n = fread(buf + len, 1, cap - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(fp)) {
		fclose(fp);
		free(buf);
		return cli_error(EXIT_USAGE, "check: --expect %s: cannot read it", file);
	}
	fclose(fp);
	r = merge_check_expect_parse(buf ? buf : "", len, out, why, sizeof(why));
	free(buf);
	if (r < 0)
		return cli_error(EXIT_USAGE, "check: --expect %s: %s", file, why);
	return EXIT_OK;
}

/* ---- reading the host ------------------------------------------------------------- */

static void cmd_check_pump(struct check_run *run);

static void cmd_check_look_cb(void *arg, const struct host_file *f, const struct lm_error *err)
{
	struct check_look *l = arg;

	l->done = 1;
	l->run->pending--;
	l->run->inflight--;
	cmd_check_pump(l->run);
	if (err != NULL) {
		l->failed = 1;
		l->err = *err;
		return;
	}
	l->f.kind = f->kind;
	if (f->len > 0) {
		if ((l->head = malloc(f->len)) == NULL)
			abort();
		memcpy(l->head, f->head, f->len);
	}
	l->f.head = l->head;
	l->f.len = f->len;
}

/* The run whose looks index the callbacks carry (one check runs at a time). */
static struct check_run *cmd_check_current;

static void cmd_check_look_idx_cb(void *arg, const struct host_file *f, const struct lm_error *err)
{
	cmd_check_look_cb(&cmd_check_current->looks[(intptr_t)arg], f, err);
}

/*
 * Start what waits, two at a time: over ssh each read is an SFTP exchange of
 * its own (a subsystem started, one at a time per session) whose time limit
 * runs from its start; a VM's whole directory queued at once would spend
 * the last ones' time waiting for the first.
 */
#define CHECK_INFLIGHT 2
static void cmd_check_pump(struct check_run *run)
{
	while (run->inflight < CHECK_INFLIGHT && run->started < run->nlooks) {
		int i = run->started++;

		run->inflight++;
		/* the callbacks find their entry by index: looks may move when it grows */
		if (host_look_device(run->host, run->looks[i].path, MERGE_IMAGE_HEAD,
				     cmd_check_look_idx_cb, (void *)(intptr_t)i) == NULL)
			abort();
	}
}

/* Read path (owned, taken) on the host, as soon as a turn is free. */
static void cmd_check_look(struct check_run *run, char *path)
{
	struct check_look *l;

	if (run->nlooks == run->cap) {
		run->cap = run->cap ? 2 * run->cap : 32;
		if ((run->looks = realloc(run->looks, (size_t)run->cap * sizeof(*run->looks))) == NULL)
			abort();
	}
	l = &run->looks[run->nlooks++];
	memset(l, 0, sizeof(*l));
	l->run = run;
	l->path = path;
	l->f.path = path;
	run->pending++;
	cmd_check_pump(run);
}

struct check_list {
	struct check_run *run;
	const char *dir;
};

static void cmd_check_list_cb(void *arg, const struct host_dirent *ents, size_t n,
			      const struct lm_error *err)
{
	struct check_list *cl = arg;
	struct check_run *run = cl->run;
	size_t i;

	run->lists_pending--;
	if (err != NULL) {
		/* a directory that is not there is the caller's mistake; a host that
		 * cannot be read is not */
		run->failed_code = cli_error(err->code == LM_ERR_IO ? EXIT_USAGE : EXIT_CONNECT,
					     "check: --dir %s: %s", cl->dir, err->msg);
		return;
	}
	for (i = 0; i < n; i++) {
		char *path;

		if (ents[i].kind != HOST_FILE_REGULAR && ents[i].kind != HOST_FILE_BLOCK &&
		    ents[i].kind != HOST_FILE_SYMLINK)
			continue;
		if (asprintf(&path, "%s%s%s", cl->dir,
			     cl->dir[strlen(cl->dir) - 1] == '/' ? "" : "/", ents[i].name) < 0)
			abort();
		cmd_check_look(run, path);
	}
}

static int cmd_check_by_path(const void *a, const void *b)
{
	return strcmp(((const struct merge_check_file *)a)->path,
		      ((const struct merge_check_file *)b)->path);
}

/* ---- printing --------------------------------------------------------------------- */

/* What one source says, for a person: a string, [a, b] for a chain, - for none. */
static void cmd_check_value(json_object *v, char *buf, size_t len)
{
	size_t i, k = 0;

	if (v == NULL) {
		snprintf(buf, len, "-");
		return;
	}
	if (!json_object_is_type(v, json_type_array)) {
		snprintf(buf, len, "%s", json_object_get_string(v));
		return;
	}
	k += (size_t)snprintf(buf, len, "[");
	for (i = 0; i < json_object_array_length(v) && k < len; i++)
		k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? ", " : "",
				      json_object_get_string(json_object_array_get_idx(v, i)));
	if (k < len)
		snprintf(buf + k, len - k, "]");
}

static void cmd_check_print(struct cli_ctx *ctx, json_object *f)
{
	char line[8192], val[4096];
	size_t k;
	json_object *v;

	if (ctx->json) {
		cli_print_json(ctx, f);
		return;
	}
	k = (size_t)snprintf(line, sizeof(line), "%-20s %-6s %s",
			     json_object_get_string(json_object_object_get(f, "code")),
			     json_object_object_get_ex(f, "disk", &v) && v ? json_object_get_string(v) : "-",
			     json_object_object_get_ex(f, "layer", &v) && v ? json_object_get_string(v) : "-");
	json_object_object_foreach(f, key, val_o)
	{
		if (strcmp(key, "type") == 0 || strcmp(key, "code") == 0 || strcmp(key, "disk") == 0 ||
		    strcmp(key, "layer") == 0 || k >= sizeof(line))
			continue;
		cmd_check_value(val_o, val, sizeof(val));
		k += (size_t)snprintf(line + k, sizeof(line) - k, "  %s: %s", key, val);
	}
	cli_line(stdout, "%s", line); /* escaped: the strings come from QEMU and the host */
}

static void cmd_check_summary(struct cli_ctx *ctx, json_object *findings, int ndisks, int nlayers)
{
	json_object *s = json_object_new_object(), *codes = json_object_new_object(), *v;
	size_t i, n = json_object_array_length(findings);
	char text[1024];
	size_t k = 0;

	for (i = 0; i < n; i++) {
		const char *c = json_object_get_string(
			json_object_object_get(json_object_array_get_idx(findings, i), "code"));

		if (json_object_object_get_ex(codes, c, &v))
			json_object_object_add(codes, c, json_object_new_int(json_object_get_int(v) + 1));
		else
			json_object_object_add(codes, c, json_object_new_int(1));
	}
	if (ctx->json) {
		json_object_object_add(s, "type", json_object_new_string("summary"));
		json_object_object_add(s, "findings", json_object_new_int((int)n));
		json_object_object_add(s, "disks", json_object_new_int(ndisks));
		json_object_object_add(s, "layers", json_object_new_int(nlayers));
		json_object_object_add(s, "codes", codes);
		cli_print_json(ctx, s);
		json_object_put(s);
		return;
	}
	json_object_object_foreach(codes, code, count)
	{
		k += (size_t)snprintf(text + k, sizeof(text) - k, "%s%s %d", k ? ", " : "", code,
				      json_object_get_int(count));
		if (k >= sizeof(text))
			break;
	}
	if (n == 0)
		cli_line(stdout, "check: no finding (%d disk%s, %d layer%s)", ndisks,
			 ndisks == 1 ? "" : "s", nlayers, nlayers == 1 ? "" : "s");
	else
		cli_line(stdout, "check: %zu finding%s (%s) on %d disk%s, %d layer%s", n,
			 n == 1 ? "" : "s", text, ndisks, ndisks == 1 ? "" : "s", nlayers,
			 nlayers == 1 ? "" : "s");
	json_object_put(codes);
	json_object_put(s);
}

/* ---- the verb --------------------------------------------------------------------- */

/* Is layer l one the host holds (a file or a device, named by an absolute path)? */
static int cmd_check_on_host(const struct merge_layer *l)
{
	const char *type = merge_layer_type(l);

	if (l->filename == NULL || l->filename[0] != '/')
		return 0;
	return type == NULL || strcmp(type, "file") == 0 || strcmp(type, "block") == 0;
}

static int cmd_check_wanted(const struct merge_chains *ch, char **disks, int ndisks,
			    const struct merge_disk *d)
{
	int i;

	for (i = 0; i < ndisks; i++)
		if (merge_chains_find(ch, disks[i]) == d)
			return 1;
	return ndisks == 0;
}

static int cmd_check_gather(struct cli_ctx *ctx, struct check_run *run,
			    const struct merge_chains *ch, char **disks, int ndisks,
			    const struct check_opts *o, int *nlayers)
{
	struct check_list lists[CHECK_MAX_DIRS];
	int i, k;

	run->host = cli_host(ctx);
	cmd_check_current = run;
	for (i = 0; i < ch->ndisks; i++) {
		const struct merge_disk *d = &ch->disks[i];

		if (!cmd_check_wanted(ch, disks, ndisks, d))
			continue;
		for (k = 0; k < d->nlayers; k++) {
			(*nlayers)++;
			if (cmd_check_on_host(&d->layers[k])) {
				char *p = strdup(d->layers[k].filename);

				if (p == NULL)
					abort();
				cmd_check_look(run, p);
			}
		}
	}
	run->ndir_first = run->nlooks;
	for (i = 0; i < o->ndirs; i++) {
		lists[i].run = run;
		lists[i].dir = o->dirs[i];
		run->lists_pending++;
		if (host_list(run->host, o->dirs[i], cmd_check_list_cb, &lists[i]) == NULL)
			abort();
	}
	while (run->lists_pending > 0 || run->pending > 0)
		ev_run(ctx->loop, EVRUN_ONCE);
	if (run->failed_code != 0)
		return run->failed_code;
	for (i = 0; i < run->nlooks; i++)
		if (run->looks[i].failed)
			return cli_error(EXIT_CONNECT, "check: cannot read %s on the VM's host: %s",
					 run->looks[i].path, run->looks[i].err.msg);
	return EXIT_OK;
}

static void cmd_check_run_free(struct check_run *run)
{
	int i;

	for (i = 0; i < run->nlooks; i++) {
		free(run->looks[i].path);
		free(run->looks[i].head);
	}
	free(run->looks);
}

static int cmd_check_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "expect", required_argument, NULL, OPT_EXPECT },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ NULL, 0, NULL, 0 },
	};
	struct check_opts o = { 0 };
	struct check_run run = { 0 };
	struct merge_check_input in = { 0 };
	struct merge_check_file *files = NULL;
	struct merge_chains *ch = NULL;
	json_object *expect = NULL, *jobs = NULL, *entries = NULL, *findings;
	struct lm_error err;
	int first, r, i, nlayers = 0, ndisks = 0, finished = 1;

	r = cli_parse_verb(ctx, &cmd_check_entry, argc, argv, NULL, longopts, cmd_check_opt, &o,
			   &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	for (i = 0; i < o.ndirs; i++)
		if (o.dirs[i][0] != '/' || o.dirs[i][1] == '\0')
			return cli_error(EXIT_USAGE, "check: --dir %s: not an absolute path to a "
						     "directory", o.dirs[i]);
	if (o.expect_file != NULL && (r = cmd_check_read_expect(o.expect_file, &expect)) != EXIT_OK)
		return r;
	r = cli_connect(ctx);
	if (r != EXIT_OK)
		goto out;
	r = cli_read_chains(ctx, "check", 0, &jobs, &ch);
	if (r != EXIT_OK)
		goto out;
	for (i = first; i < argc; i++)
		if (merge_chains_find(ch, argv[i]) == NULL) {
			r = cli_error(EXIT_USAGE, "check: no disk '%s' (run 'livemerge chain' to list "
						  "the disks)", argv[i]);
			goto out;
		}
	r = cmd_check_gather(ctx, &run, ch, argv + first, argc - first, &o, &nlayers);
	if (r != EXIT_OK)
		goto out;
	if ((r = cli_identify(ctx, NULL)) != EXIT_OK)
		goto out;
	if (merge_vm_journal_read_last(ctx->journal_dir, ctx->vm, cli_vm_target(ctx), &entries,
				       &finished, &err) < 0) {
		r = cli_error(err.code == LM_ERR_USAGE ? EXIT_USAGE : EXIT_CONNECT, "check: %s",
			      err.msg);
		goto out;
	}

	if ((files = calloc((size_t)run.nlooks + 1, sizeof(*files))) == NULL)
		abort();
	for (i = 0; i < run.nlooks; i++)
		files[i] = run.looks[i].f;
	/* orphans in name order, whatever order the host listed them in */
	qsort(files + run.ndir_first, (size_t)(run.nlooks - run.ndir_first), sizeof(*files),
	      cmd_check_by_path);
	for (i = 0; i < ch->ndisks; i++)
		ndisks += cmd_check_wanted(ch, argv + first, argc - first, &ch->disks[i]);
	in.live = ch;
	in.disks = (const char *const *)argv + first;
	in.ndisks = argc - first;
	in.files = files;
	in.nfiles = run.ndir_first;
	in.dir_files = files + run.ndir_first;
	in.ndir_files = run.nlooks - run.ndir_first;
	in.journal = entries;
	in.journal_finished = finished;
	in.expect = expect;
	in.jobs = jobs;
	if ((findings = merge_check(&in)) == NULL)
		abort();
	for (i = 0; i < (int)json_object_array_length(findings); i++)
		cmd_check_print(ctx, json_object_array_get_idx(findings, (size_t)i));
	cmd_check_summary(ctx, findings, ndisks, nlayers);
	r = json_object_array_length(findings) > 0 ? EXIT_FAILED : EXIT_OK;
	json_object_put(findings);
out:
	free(files);
	cmd_check_run_free(&run);
	merge_chains_free(ch);
	json_object_put(expect);
	json_object_put(jobs);
	json_object_put(entries);
	return r;
}

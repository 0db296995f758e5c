/*
 * cmd-batch: one verb on many VMs, from a plan, in one event loop.
 *
 * Plan (unknown keys refused, the first error reported with its JSON path,
 * nothing runs unless the whole plan is valid):
 *   {"parallel": 16,
 *    "defaults": {"timeout": 30, "journal": "/dir", "known-hosts": "/path",
 *                 "identity": ["/path/key"]},
 *    "vms": [{"target": "unix:/run/vm1/qmp.sock", "qga": "unix:/run/vm1/qga.sock",
 *             "verb": "commit", "args": ["vda", "vdb", "--speed", "10M"]}, ...]}
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/batch.h"
#include "../merge/offline.h"
#include "request.h"

static int cmd_batch_exec(struct cli_ctx *ctx, int argc, char **argv);

const struct cmd_entry cmd_batch_entry = {
	.name = "batch",
	.args_usage = "PLAN.json [--parallel N]",
	.summary = "run snapshot/commit/stream on many VMs at once, from a plan",
	.help = "\nRuns one verb per VM, all in one process, at most N at a time (--parallel, or\n"
		"the plan's \"parallel\", default 16). Each VM's outcome is its own: one failing\n"
		"never stops or changes another. The plan:\n"
		"  {\"parallel\": 16,\n"
		"   \"defaults\": {\"timeout\": 30, \"journal\": DIR, \"known-hosts\": FILE,\n"
		"                \"identity\": [FILE, ...]},\n"
		"   \"vms\": [{\"target\": TARGET, \"qga\": QGA_TARGET (optional),\n"
		"            \"verb\": \"snapshot\"|\"commit\"|\"stream\",\n"
		"            \"args\": [the verb's command-line arguments]}, ...]}\n"
		"Unknown keys are refused; a malformed plan is refused whole before anything\n"
		"runs (exit 2, with the JSON path of the first error). So is a plan that names\n"
		"one VM twice (exit 2, both JSON paths): the same target, two monitors of one\n"
		"VM (every VM is asked who it is first), or two entries whose VMs write one\n"
		"image (README: One VM, one journal, one livemerge). While a VM's verb runs,\n"
		"its lock is held; a VM another livemerge is changing fails at once (its result\n"
		"names the holder) and the others go on. --json prints one line per job event\n"
		"and per VM result ({\"type\":\"vm\",\"vm\":i,...}) and a summary.\n"
		"Exit: 0 if every VM succeeded, 1 otherwise, 2 for a plan refused whole.\n",
	.needs_conn = 0,
	.exec = cmd_batch_exec,
};

struct batch_plan {
	int n;
	struct merge_batch_vm *vms;
	struct cli_request *reqs;
	char ***argvs;
	int parallel;
	double timeout;
	const char *journal;
	const char *known_hosts;
	const char *identities[16];
	int nidentities;
	json_object *root;
};

struct batch_run {
	struct cli_ctx *ctx;
	struct batch_plan *p;
	int done, ok, failed;
	int duplicate; /* the plan names one VM twice: refused */
	double t0;
};

static int batch_bad(const char *path, const char *what)
{
	return cli_error(EXIT_USAGE, "batch: plan %s: %s (nothing was run)", path, what);
}

static int batch_keys(json_object *o, const char *path, const char *const *allowed)
{
	json_object_object_foreach(o, k, v)
	{
		int i, ok = 0;

		(void)v;
		for (i = 0; allowed[i] != NULL; i++)
			ok |= strcmp(k, allowed[i]) == 0;
		if (!ok) {
			char p[256];

			snprintf(p, sizeof(p), "%s.%s", path, k);
			return batch_bad(p, "unknown key");
		}
	}
	return 0;
}

static const char *batch_str(json_object *o, const char *k)
{
	json_object *v;

	if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static void batch_plan_free(struct batch_plan *p)
{
	int i;

	for (i = 0; i < p->n; i++) {
		cli_request_free(&p->reqs[i]);
		free(p->argvs ? p->argvs[i] : NULL);
	}
	free(p->vms);
	free(p->reqs);
	free(p->argvs);
	json_object_put(p->root);
}

/* The whole file as one JSON value, nothing but white space after it. */
static int batch_read_json(const char *file, json_object **out)
{
	FILE *f = fopen(file, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n, end, k;
	json_tokener *tok;
	enum json_tokener_error jerr;
	int line = 1, col = 1;

	*out = NULL;
	if (f == NULL)
		return cli_error(EXIT_USAGE, "batch: cannot read plan %s: %s", file, strerror(errno));
	do {
		if (len + 65536 > cap) {
			cap = cap ? cap * 2 : 65536;
			if (cap > ((size_t)64 << 20) || (buf = realloc(buf, cap)) == NULL) {
				fclose(f);
				free(buf);
				return cli_error(EXIT_USAGE, "batch: plan %s is larger than 64 MiB", file);
			}
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	tok = json_tokener_new();
	if (tok == NULL)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*out = json_tokener_parse_ex(tok, buf ? buf : "", (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (*out == NULL && jerr == json_tokener_continue)
		end = len;
	for (k = end; *out != NULL && k < len && strchr(" \t\r\n", buf[k]) != NULL; k++)
		;
	if (*out != NULL && k == len) {
		free(buf);
		return 0;
	}
	if (*out != NULL)
		end = k;
	for (k = 0; k < end && k < len; k++) {
		if (buf[k] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	free(buf);
	json_object_put(*out);
	*out = NULL;
	return cli_error(EXIT_USAGE, "batch: plan %s is not valid JSON at line %d, column %d: %s "
				     "(nothing was run)", file, line, col,
			 jerr == json_tokener_continue ? "it ends too early"
			 : jerr == json_tokener_success ? "more after the plan's object"
							: json_tokener_error_desc(jerr));
}

static int batch_load(struct cli_ctx *ctx, const char *file, struct batch_plan *p)
{
	static const char *const top_keys[] = { "parallel", "defaults", "vms", NULL };
	static const char *const def_keys[] = { "timeout", "journal", "known-hosts", "identity", NULL };
	static const char *const vm_keys[] = { "target", "qga", "verb", "args", NULL };
	json_object *vms, *v, *defaults;
	int i, r;

	memset(p, 0, sizeof(*p));
	if ((r = batch_read_json(file, &p->root)) != 0)
		return r;
	if (!json_object_is_type(p->root, json_type_object))
		return batch_bad("$", "not a JSON object");
	if ((r = batch_keys(p->root, "$", top_keys)) != 0)
		return r;
	if (json_object_object_get_ex(p->root, "parallel", &v)) {
		if (!json_object_is_type(v, json_type_int) || json_object_get_int(v) < 1)
			return batch_bad("$.parallel", "not a positive integer");
		p->parallel = json_object_get_int(v);
	}
	if (json_object_object_get_ex(p->root, "defaults", &defaults)) {
		if (!json_object_is_type(defaults, json_type_object))
			return batch_bad("$.defaults", "not an object");
		if ((r = batch_keys(defaults, "$.defaults", def_keys)) != 0)
			return r;
		if (json_object_object_get_ex(defaults, "timeout", &v)) {
			if (!(json_object_is_type(v, json_type_int) ||
			      json_object_is_type(v, json_type_double)) ||
			    json_object_get_double(v) <= 0)
				return batch_bad("$.defaults.timeout", "not a positive number");
			p->timeout = json_object_get_double(v);
		}
		if (json_object_object_get_ex(defaults, "journal", &v)) {
			if (!json_object_is_type(v, json_type_string))
				return batch_bad("$.defaults.journal", "not a string");
			p->journal = json_object_get_string(v);
		}
		if (json_object_object_get_ex(defaults, "known-hosts", &v)) {
			if (!json_object_is_type(v, json_type_string))
				return batch_bad("$.defaults.known-hosts", "not a string");
			p->known_hosts = json_object_get_string(v);
		}
		if (json_object_object_get_ex(defaults, "identity", &v)) {
			size_t k;

			if (!json_object_is_type(v, json_type_array))
				return batch_bad("$.defaults.identity", "not an array");
			for (k = 0; k < json_object_array_length(v); k++) {
				json_object *id = json_object_array_get_idx(v, k);
				char path[64];

				snprintf(path, sizeof(path), "$.defaults.identity[%zu]", k);
				if (!json_object_is_type(id, json_type_string))
					return batch_bad(path, "not a string");
				if (p->nidentities == 16)
					return batch_bad(path, "more than 16 identities");
				p->identities[p->nidentities++] = json_object_get_string(id);
			}
		}
	}
	if (!json_object_object_get_ex(p->root, "vms", &vms) ||
	    !json_object_is_type(vms, json_type_array))
		return batch_bad("$.vms", "missing or not an array");
	p->n = (int)json_object_array_length(vms);
	if (p->n == 0)
		return batch_bad("$.vms", "empty");
	p->vms = calloc((size_t)p->n, sizeof(*p->vms));
	p->reqs = calloc((size_t)p->n, sizeof(*p->reqs));
	p->argvs = calloc((size_t)p->n, sizeof(*p->argvs));
	if (p->vms == NULL || p->reqs == NULL || p->argvs == NULL)
		abort();
	for (i = 0; i < p->n; i++) {
		json_object *vm = json_object_array_get_idx(vms, (size_t)i), *args;
		struct cli_ctx scratch = *ctx;
		char path[64];
		const char *verb;
		size_t k, na;

		snprintf(path, sizeof(path), "$.vms[%d]", i);
		if (!json_object_is_type(vm, json_type_object))
			return batch_bad(path, "not an object");
		if ((r = batch_keys(vm, path, vm_keys)) != 0)
			return r;
		p->vms[i].target = batch_str(vm, "target");
		p->vms[i].qga = batch_str(vm, "qga");
		verb = batch_str(vm, "verb");
		if (p->vms[i].target == NULL || *p->vms[i].target == '\0') {
			strcat(path, ".target");
			return batch_bad(path, "missing or not a string");
		}
		if (merge_offline_is(p->vms[i].target)) {
			strcat(path, ".target");
			return batch_bad(path, "an offline target is not run from a plan: run "
				      "livemerge -c offline:... VERB for it");
		}
		if (json_object_object_get_ex(vm, "qga", &v) && p->vms[i].qga == NULL) {
			strcat(path, ".qga");
			return batch_bad(path, "not a string");
		}
		if (verb == NULL || cli_request_verb(verb) == NULL) {
			strcat(path, ".verb");
			return batch_bad(path, "must be \"snapshot\", \"commit\" or \"stream\"");
		}
		if (!json_object_object_get_ex(vm, "args", &args) ||
		    !json_object_is_type(args, json_type_array)) {
			strcat(path, ".args");
			return batch_bad(path, "missing or not an array");
		}
		na = json_object_array_length(args);
		p->argvs[i] = calloc(na + 2, sizeof(char *));
		if (p->argvs[i] == NULL)
			abort();
		p->argvs[i][0] = (char *)verb;
		for (k = 0; k < na; k++) {
			json_object *a = json_object_array_get_idx(args, k);

			if (!json_object_is_type(a, json_type_string)) {
				snprintf(path, sizeof(path), "$.vms[%d].args[%zu]", i, k);
				return batch_bad(path, "not a string");
			}
			p->argvs[i][k + 1] = (char *)json_object_get_string(a);
		}
		scratch.target = p->vms[i].target;
		snprintf(path, sizeof(path), "batch: plan $.vms[%d].args: ", i);
		cli_error_prefix = path;
		r = cli_request_parse(&scratch, (int)na + 1, p->argvs[i], &p->reqs[i]);
		cli_error_prefix = NULL;
		if (r != 0)
			return r < 0 ? EXIT_USAGE : r;
		p->vms[i].req = &p->reqs[i].req;
	}
	return 0;
}

static json_object *batch_line(const char *type, int vm, const char *target)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string(type));
	json_object_object_add(o, "vm", json_object_new_int(vm));
	json_object_object_add(o, "target", json_object_new_string(target));
	return o;
}

static void batch_vm_job(int vm, const struct merge_job_update *u, void *arg)
{
	struct batch_run *br = arg;
	json_object *o;

	if (!br->ctx->json)
		return;
	o = batch_line("job", vm, br->p->vms[vm].target);
	json_object_object_add(o, "disk", json_object_new_string(u->disk));
	json_object_object_add(o, "job", json_object_new_string(u->job_id));
	json_object_object_add(o, "status", json_object_new_string(u->status));
	json_object_object_add(o, "offset", json_object_new_int64(u->offset < 0 ? 0 : u->offset));
	json_object_object_add(o, "len", json_object_new_int64(u->len < 0 ? 0 : u->len));
	cli_print_json(br->ctx, o);
	json_object_put(o);
}

static void batch_vm_command(int vm, const char *name, json_object *args, void *arg)
{
	struct batch_run *br = arg;
	json_object *o;

	if (!br->ctx->dry_run)
		return;
	o = batch_line("command", vm, br->p->vms[vm].target);
	json_object_object_add(o, "execute", json_object_new_string(name));
	if (args != NULL)
		json_object_object_add(o, "arguments", json_object_get(args));
	cli_print_json(br->ctx, o);
	json_object_put(o);
}

static void batch_vm_done(int vm, const struct merge_result *r, double secs, void *arg)
{
	struct batch_run *br = arg;
	const char *target = br->p->vms[vm].target;

	if (br->ctx->json) {
		json_object *o = batch_line("vm", vm, target);

		json_object_object_add(o, "seconds", json_object_new_double(secs));
		json_object_object_add(o, "result", json_object_get(r->json));
		cli_print_json(br->ctx, o);
		json_object_put(o);
		fflush(stdout);
		return;
	}
	if (r->outcome == MERGE_DONE)
		cli_line(stdout, "vm %d %s: ok (%.2f s)", vm, target, secs);
	else
		cli_line(stdout, "vm %d %s: failed (exit %d): %s", vm, target, r->outcome,
			 r->err ? r->err->msg : "?");
	fflush(stdout);
}

static void batch_duplicate(int first, int second, const char *why, void *arg)
{
	struct batch_run *br = arg;
	char a[32], b[32];

	br->duplicate = 1;
	snprintf(a, sizeof(a), "$.vms[%d]", first);
	snprintf(b, sizeof(b), "$.vms[%d]", second);
	cli_error(EXIT_USAGE, "batch: plan %s and %s name one VM (%s): nothing was run", a, b,
		  why);
}

static void batch_done(int ok, int failed, void *arg)
{
	struct batch_run *br = arg;

	br->done = 1;
	br->ok = ok;
	br->failed = failed;
}

static int cmd_batch_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	char *end;
	long v;

	(void)ctx;
	if (opt != 'p')
		return EXIT_USAGE;
	v = strtol(arg, &end, 10);
	if (*end != '\0' || v < 1 || v > 100000)
		return cli_error(EXIT_USAGE, "--parallel: '%s' is not a positive integer", arg);
	*(int *)data = (int)v;
	return 0;
}

static int cmd_batch_exec(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "parallel", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	struct merge_batch_callbacks cbs = {
		.vm_job = batch_vm_job,
		.vm_command = batch_vm_command,
		.vm_done = batch_vm_done,
		.duplicate = batch_duplicate,
		.done = batch_done,
	};
	struct batch_plan plan;
	struct batch_run br = { .ctx = ctx, .p = &plan };
	struct merge_batch_opts bo = { 0 };
	struct merge_batch *b;
	struct lm_error err;
	int first, r, parallel = 0;

	r = cli_parse_verb(ctx, &cmd_batch_entry, argc, argv, "p:", opts, cmd_batch_opt, &parallel,
			   &first);
	if (r != 0)
		return r < 0 ? EXIT_OK : r;
	if (argc - first != 1) {
		cli_verb_usage(stderr, &cmd_batch_entry);
		return EXIT_USAGE;
	}
	r = batch_load(ctx, argv[first], &plan);
	if (r != 0) {
		batch_plan_free(&plan);
		return r;
	}
	bo.parallel = parallel ? parallel : plan.parallel;
	bo.timeout = plan.timeout ? plan.timeout : ctx->timeout;
	bo.journal_dir = ctx->journal_dir ? ctx->journal_dir : plan.journal;
	bo.dry_run = ctx->dry_run;
	{
		/* the command line's ssh options first, then the plan's defaults */
		static struct tr_opts to;
		int k;

		to.identities = ctx->identities;
		to.nidentities = ctx->nidentities;
		for (k = 0; k < plan.nidentities && ctx->nidentities < 16; k++)
			ctx->identities[ctx->nidentities++] = plan.identities[k];
		to.nidentities = ctx->nidentities;
		to.known_hosts = ctx->known_hosts ? ctx->known_hosts : plan.known_hosts;
		to.accept_new_hostkey = ctx->accept_new_hostkey;
		to.timeout = ctx->ssh_timeout;
		bo.tr = &to;
	}
	br.t0 = ev_time();
	b = merge_batch_start(ctx->loop, plan.vms, plan.n, &bo, &cbs, &br, &err);
	if (b == NULL) {
		batch_plan_free(&plan);
		return cli_report(&err);
	}
	while (!br.done)
		ev_run(ctx->loop, EVRUN_ONCE);
	merge_batch_free(b);
	if (br.duplicate) {
		batch_plan_free(&plan);
		return EXIT_USAGE;
	}
	if (ctx->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("summary"));
		json_object_object_add(o, "vms", json_object_new_int(plan.n));
		json_object_object_add(o, "ok", json_object_new_int(br.ok));
		json_object_object_add(o, "failed", json_object_new_int(br.failed));
		json_object_object_add(o, "seconds", json_object_new_double(ev_time() - br.t0));
		cli_print_json(ctx, o);
		json_object_put(o);
	} else {
		printf("batch: %d VMs, %d ok, %d failed (%.2f s)\n", plan.n, br.ok, br.failed,
		       ev_time() - br.t0);
	}
	batch_plan_free(&plan);
	return br.failed ? EXIT_FAILED : EXIT_OK;
}

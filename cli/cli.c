/*
 * cli: shared plumbing of the verbs.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/query.h"
#include "../transport/transport.h"
#include "offline.h"

int cli_exit_code(const struct lm_error *err)
{
	switch (err->code) {
	case LM_OK: return EXIT_OK;
	case LM_ERR_QMP:
	case LM_ERR_FAILED:
	case LM_ERR_STATE: return EXIT_FAILED;
	case LM_ERR_USAGE:
	case LM_ERR_BUSY: return EXIT_USAGE;
	default: return EXIT_CONNECT;
	}
}

const char *cli_error_prefix;

int cli_error(int code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		abort();
	va_end(ap);
	cli_line(stderr, "livemerge: %s%s", cli_error_prefix ? cli_error_prefix : "", msg);
	free(msg);
	return code;
}

int cli_report(const struct lm_error *err)
{
	return cli_error(cli_exit_code(err), "%s", err->msg);
}

struct sync_wait {
	int done;
	json_object *ret;
	struct lm_error err;
};

static void cli_state_cb(struct qmp_conn *c, const struct lm_error *err, void *arg)
{
	struct sync_wait *w = arg;

	(void)c;
	if (w == NULL || w->done)
		return;
	w->done = 1;
	if (err != NULL)
		w->err = *err;
}

int cli_connect_ex(struct cli_ctx *ctx, struct lm_error *err)
{
	if (ctx->target == NULL)
		return lm_error_set(err, LM_ERR_USAGE, "no monitor given: use -c TARGET (unix:PATH, "
						      "tcp:HOST:PORT) or set LIVEMERGE_CONNECT");
	if (cli_offline(ctx))
		return cli_offline_start(ctx, err);
	return cli_connect_monitor(ctx, ctx->target, err);
}

int cli_connect_monitor(struct cli_ctx *ctx, const char *target, struct lm_error *err)
{
	struct qmp_conn_opts opts = { .command_timeout = ctx->timeout, .trace = ctx->trace };
	struct sync_wait w = { 0 };
	struct tr *t;

	t = cli_transport(ctx, target, err);
	if (t == NULL)
		return -1;
	opts.connect_timeout = ctx->timeout;
	if (strncmp(target, "ssh://", 6) == 0) /* the SSH setup has its own limit */
		opts.connect_timeout += ctx->ssh_timeout > 0 ? ctx->ssh_timeout : 15;
	ctx->conn = qmp_conn_new(ctx->loop, t, &opts);
	if (ctx->conn == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	qmp_conn_set_state_cb(ctx->conn, cli_state_cb, &w);
	if (qmp_conn_start(ctx->conn, err) < 0) {
		if (err->code != LM_ERR_USAGE)
			err->code = LM_ERR_IO;
		return -1;
	}
	while (!w.done)
		ev_run(ctx->loop, EVRUN_ONCE);
	qmp_conn_set_state_cb(ctx->conn, NULL, NULL);
	if (w.err.code != LM_OK) {
		*err = w.err;
		if (err->code == LM_ERR_QMP)
			err->code = LM_ERR_PROTO;
		return -1;
	}
	return 0;
}

/* The ssh options of the command line, for transports and hosts. */
static struct tr_opts cli_tr_opts(const struct cli_ctx *ctx)
{
	struct tr_opts o = {
		.loop = ctx->loop,
		.identities = ctx->identities,
		.nidentities = ctx->nidentities,
		.known_hosts = ctx->known_hosts,
		.accept_new_hostkey = ctx->accept_new_hostkey,
		.timeout = ctx->ssh_timeout,
	};

	return o;
}

struct tr *cli_transport(struct cli_ctx *ctx, const char *target, struct lm_error *err)
{
	struct tr_opts o = cli_tr_opts(ctx);

	return tr_new_ex(target, &o, err);
}

struct host *cli_host(struct cli_ctx *ctx)
{
	struct tr_opts o = cli_tr_opts(ctx);
	struct lm_error err;

	const char *where = cli_offline(ctx) ? cli_offline_host_target(ctx) : ctx->target;

	if (ctx->host == NULL && (ctx->host = host_new(where, &o, &err)) == NULL) {
		/* never this machine's files in place of the VM host's */
		cli_error(EXIT_CONNECT, "%s", err.msg);
		exit(EXIT_CONNECT);
	}
	return ctx->host;
}

int cli_connect(struct cli_ctx *ctx)
{
	struct lm_error err;

	if (cli_connect_ex(ctx, &err) < 0)
		return cli_report(&err);
	return EXIT_OK;
}

static void cli_reply_cb(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			 void *arg)
{
	struct sync_wait *w = arg;

	(void)c;
	w->done = 1;
	if (err != NULL)
		w->err = *err;
	else
		w->ret = json_object_get(ret);
}

int cli_execute(struct cli_ctx *ctx, const char *name, json_object *args, json_object **ret,
		struct lm_error *err)
{
	struct sync_wait w = { 0 };

	*ret = NULL;
	if (qmp_conn_execute(ctx->conn, name, args, -1, cli_reply_cb, &w, err) < 0)
		return -1;
	while (!w.done)
		ev_run(ctx->loop, EVRUN_ONCE);
	if (w.err.code != LM_OK) {
		*err = w.err;
		return -1;
	}
	*ret = w.ret;
	return 0;
}

void cli_print_json(struct cli_ctx *ctx, json_object *o)
{
	int flags = JSON_C_TO_STRING_NOSLASHESCAPE;

	if (ctx->json) {
		puts(json_object_to_json_string_ext(o, flags | JSON_C_TO_STRING_PLAIN));
		return;
	}
	/* json-c leaves DEL, C1 controls and stray bytes raw */
	cli_put_escaped(stdout,
			json_object_to_json_string_ext(o, flags | JSON_C_TO_STRING_PRETTY |
								  JSON_C_TO_STRING_SPACED),
			CLI_ESC_JSON | CLI_ESC_KEEP_NL);
	putchar('\n');
}

void cli_verb_usage(FILE *f, const struct cmd_entry *cmd)
{
	fprintf(f, "usage: livemerge [-c TARGET] [--json] %s %s\n", cmd->name, cmd->args_usage);
}

enum { OPT_JSON = 1000, OPT_TIMEOUT, OPT_DRYRUN, OPT_DEBUG, OPT_HELP, OPT_JOURNAL,
       OPT_KNOWN_HOSTS, OPT_ACCEPT_NEW, OPT_SSH_TIMEOUT, OPT_WAIT_LOCK };

static const struct option common_opts[] = {
	{ "connect", required_argument, NULL, 'c' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "dry-run", no_argument, NULL, OPT_DRYRUN },
	{ "debug", no_argument, NULL, OPT_DEBUG },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "journal", required_argument, NULL, OPT_JOURNAL },
	{ "identity", required_argument, NULL, 'i' },
	{ "known-hosts", required_argument, NULL, OPT_KNOWN_HOSTS },
	{ "accept-new-host-key", no_argument, NULL, OPT_ACCEPT_NEW },
	{ "ssh-timeout", required_argument, NULL, OPT_SSH_TIMEOUT },
	{ "wait-lock", required_argument, NULL, OPT_WAIT_LOCK },
};

int cli_parse_verb(struct cli_ctx *ctx, const struct cmd_entry *cmd, int argc, char **argv,
		   const char *shortopts, const struct option *longopts,
		   int (*handle)(struct cli_ctx *, int, const char *, void *), void *data,
		   int *first)
{
	struct option all[64];
	char so[64];
	size_t n = 0, i;
	int opt;

	for (i = 0; longopts != NULL && longopts[i].name != NULL && n < 40; i++)
		all[n++] = longopts[i];
	for (i = 0; i < sizeof(common_opts) / sizeof(common_opts[0]); i++)
		all[n++] = common_opts[i];
	memset(&all[n], 0, sizeof(all[n]));
	snprintf(so, sizeof(so), "c:hi:%s", shortopts ? shortopts : "");
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, so, all, NULL)) != -1) {
		char *end;
		int r;

		switch (opt) {
		case 'c': ctx->target = optarg; break;
		case OPT_JSON: ctx->json = 1; break;
		case OPT_DRYRUN: ctx->dry_run = 1; break;
		case OPT_DEBUG: ctx->trace = stderr; break;
		case OPT_JOURNAL: ctx->journal_dir = optarg; break;
		case 'i':
			for (r = 0; r < ctx->nidentities && strcmp(ctx->identities[r], optarg); r++)
				;
			if (r < ctx->nidentities)
				break; /* parsed before (global options reach the verb too) */
			if (ctx->nidentities == (int)(sizeof(ctx->identities) / sizeof(ctx->identities[0])))
				return cli_error(EXIT_USAGE, "-i: at most %d identity files",
						 ctx->nidentities);
			ctx->identities[ctx->nidentities++] = optarg;
			break;
		case OPT_KNOWN_HOSTS: ctx->known_hosts = optarg; break;
		case OPT_ACCEPT_NEW: ctx->accept_new_hostkey = 1; break;
		case OPT_SSH_TIMEOUT:
			ctx->ssh_timeout = strtod(optarg, &end);
			if (*end != '\0' || ctx->ssh_timeout <= 0)
				return cli_error(EXIT_USAGE, "--ssh-timeout: '%s' is not a positive number",
						 optarg);
			break;
		case OPT_WAIT_LOCK:
			ctx->wait_lock = strtod(optarg, &end);
			if (*end != '\0' || !(ctx->wait_lock >= 0) || ctx->wait_lock > 1e9)
				return cli_error(EXIT_USAGE, "--wait-lock: '%s' is not a number of "
							     "seconds", optarg);
			break;
		case OPT_TIMEOUT:
			ctx->timeout = strtod(optarg, &end);
			if (*end != '\0' || ctx->timeout <= 0)
				return cli_error(EXIT_USAGE, "--timeout: '%s' is not a positive number",
						 optarg);
			break;
		case 'h':
		case OPT_HELP:
			cli_verb_usage(stdout, cmd);
			fputs(cmd->help, stdout);
			return -1;
		case '?':
		case ':':
			if (optopt != 0)
				cli_error(EXIT_USAGE, "%s: bad or incomplete option '-%c'", cmd->name,
					  optopt);
			else
				cli_error(EXIT_USAGE, "%s: bad or incomplete option '%s'", cmd->name,
					  argv[optind - 1]);
			cli_verb_usage(stderr, cmd);
			return EXIT_USAGE;
		default:
			if (handle == NULL)
				return cli_error(EXIT_USAGE, "%s: unexpected option", cmd->name);
			r = handle(ctx, opt, optarg, data);
			if (r != 0)
				return r;
			break;
		}
	}
	*first = optind;
	return 0;
}

int cli_parse_size(const char *s, int64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (*s == '-' || *s == '\0')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s)
		return -1;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return -1;
	}
	if (*end == 'i' && shift)
		end++;
	if (*end == 'B' && shift)
		end++;
	if (*end != '\0' || v > ((unsigned long long)INT64_MAX >> shift))
		return -1;
	*out = (int64_t)(v << shift);
	return 0;
}

char *cli_abspath(const char *path)
{
	char cwd[4096], *out;

	if (path[0] == '/')
		return strdup(path);
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, path[0] == '.' && path[1] == '/' ? path + 2 : path) < 0)
		return NULL;
	return out;
}

void cli_format_size(int64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0 || v != (double)(int64_t)v)
		snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
	else
		snprintf(buf, len, "%.0f %s", v, units[u]);
}

struct chains_wait {
	int done;
	struct merge_chains *ch;
	struct lm_error err;
};

static void cli_chains_cb(struct merge_chains *ch, const struct lm_error *err, void *arg)
{
	struct chains_wait *w = arg;

	w->done = 1;
	w->ch = ch;
	if (err != NULL)
		w->err = *err;
}

int cli_read_chains(struct cli_ctx *ctx, const char *verb, int usage, json_object **jobs,
		    struct merge_chains **out)
{
	struct chains_wait w = { 0 };
	struct lm_error err;
	json_object *j;
	const char *hazard;
	int r;

	*out = NULL;
	if (jobs != NULL)
		*jobs = NULL;
	if (cli_execute(ctx, "query-jobs", NULL, &j, &err) < 0) {
		if (err.code == LM_ERR_QMP)
			err.code = LM_ERR_PROTO; /* a query refused: not a failed operation */
		return cli_report(&err);
	}
	hazard = merge_chains_hazard(j);
	if (hazard != NULL) {
		r = cli_error(EXIT_FAILED, "%s: job %s (a stream) is concluded and not dismissed: "
					   "QEMU 7.2 crashes listing block nodes then; dismiss it "
					   "first ('livemerge cancel %s')", verb, hazard, hazard);
		json_object_put(j);
		return r;
	}
	if ((usage ? merge_chains_fetch_usage : merge_chains_fetch)(ctx->conn, cli_chains_cb, &w,
								     &err) < 0) {
		json_object_put(j);
		return cli_report(&err);
	}
	while (!w.done)
		ev_run(ctx->loop, EVRUN_ONCE);
	if (w.ch == NULL) {
		json_object_put(j);
		if (w.err.code == LM_ERR_QMP)
			w.err.code = LM_ERR_PROTO;
		return cli_report(&w.err);
	}
	*out = w.ch;
	if (jobs != NULL)
		*jobs = j;
	else
		json_object_put(j);
	return EXIT_OK;
}

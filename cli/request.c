/*
 * request: parsing snapshot, commit and stream arguments.
 */
#include "request.h"

#include <stdlib.h>
#include <string.h>

extern const struct cmd_entry cmd_snapshot_entry;
extern const struct cmd_entry cmd_commit_entry;
extern const struct cmd_entry cmd_stream_entry;

struct req_opts {
	struct cli_request *r;
	int verb;
	const char *top, *base, *format, *quiesce;
	int64_t speed;
	double wait_for_space, freeze_limit;
	int del;
	const char *volume_cmd;
	double volume_timeout;
	int64_t initial_size, chunk, headroom;
};

static int req_seconds(const char *opt, const char *arg, double *out)
{
	char *end;

	*out = strtod(arg, &end);
	if (*end != '\0' || *out <= 0)
		return cli_error(EXIT_USAGE, "%s: '%s' is not a positive number", opt, arg);
	return 0;
}

static int req_opt(struct cli_ctx *ctx, int opt, const char *arg, void *data)
{
	struct req_opts *o = data;

	(void)ctx;
	switch (opt) {
	case 't':
		if (o->verb != MERGE_COMMIT)
			return cli_error(EXIT_USAGE, "stream: no --top; the active layer is the top");
		o->top = arg;
		return 0;
	case 'b': o->base = arg; return 0;
	case 'd': o->del = 1; return 0;
	case 'f': o->format = arg; return 0;
	case 'q': o->quiesce = arg; return 0;
	case 'F': return req_seconds("--freeze-limit", arg, &o->freeze_limit);
	case 'w': return req_seconds("--wait-for-space", arg, &o->wait_for_space);
	case 's':
		if (cli_parse_size(arg, &o->speed) < 0)
			return cli_error(EXIT_USAGE, "--speed: '%s' is not a byte count", arg);
		return 0;
	case 'V':
		if (*arg == '\0')
			return cli_error(EXIT_USAGE, "--volume-cmd: empty");
		o->volume_cmd = arg;
		return 0;
	case 'T': return req_seconds("--volume-timeout", arg, &o->volume_timeout);
	case 'I':
		if (cli_parse_size(arg, &o->initial_size) < 0 || o->initial_size <= 0)
			return cli_error(EXIT_USAGE, "--initial-size: '%s' is not a byte count", arg);
		return 0;
	case 'C':
		if (cli_parse_size(arg, &o->chunk) < 0 || o->chunk <= 0)
			return cli_error(EXIT_USAGE, "--chunk: '%s' is not a byte count", arg);
		return 0;
	case 'H':
		if (cli_parse_size(arg, &o->headroom) < 0 || o->headroom <= 0)
			return cli_error(EXIT_USAGE, "--headroom: '%s' is not a byte count", arg);
		return 0;
	}
	return EXIT_USAGE;
}

static char *req_own(struct cli_request *r, char *s)
{
	char **n;

	if (s == NULL)
		return NULL;
	n = realloc(r->owned, sizeof(*n) * (size_t)(r->nowned + 1));
	if (n == NULL)
		abort();
	r->owned = n;
	r->owned[r->nowned++] = s;
	return s;
}

const struct cmd_entry *cli_request_verb(const char *name)
{
	if (strcmp(name, "snapshot") == 0)
		return &cmd_snapshot_entry;
	if (strcmp(name, "commit") == 0)
		return &cmd_commit_entry;
	if (strcmp(name, "stream") == 0)
		return &cmd_stream_entry;
	return NULL;
}

int cli_request_parse(struct cli_ctx *ctx, int argc, char **argv, struct cli_request *out)
{
	static const struct option merge_opts[] = {
		{ "top", required_argument, NULL, 't' },
		{ "base", required_argument, NULL, 'b' },
		{ "speed", required_argument, NULL, 's' },
		{ "delete", no_argument, NULL, 'd' },
		{ "wait-for-space", required_argument, NULL, 'w' },
		{ "volume-cmd", required_argument, NULL, 'V' },
		{ "volume-timeout", required_argument, NULL, 'T' },
		{ "chunk", required_argument, NULL, 'C' },
		{ "headroom", required_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct option snapshot_opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "quiesce", required_argument, NULL, 'q' },
		{ "freeze-limit", required_argument, NULL, 'F' },
		{ "volume-cmd", required_argument, NULL, 'V' },
		{ "volume-timeout", required_argument, NULL, 'T' },
		{ "initial-size", required_argument, NULL, 'I' },
		{ "chunk", required_argument, NULL, 'C' },
		{ NULL, 0, NULL, 0 },
	};
	const struct cmd_entry *cmd = cli_request_verb(argv[0]);
	struct req_opts o = { .r = out };
	int first, r, i, n, remote;

	memset(out, 0, sizeof(*out));
	if (cmd == NULL)
		return cli_error(EXIT_USAGE, "'%s' is not snapshot, commit or stream", argv[0]);
	o.verb = strcmp(argv[0], "snapshot") == 0 ? MERGE_SNAPSHOT
		 : strcmp(argv[0], "commit") == 0 ? MERGE_COMMIT
						    : MERGE_STREAM;
	r = cli_parse_verb(ctx, cmd, argc, argv, o.verb == MERGE_SNAPSHOT ? "f:" : NULL,
			   o.verb == MERGE_SNAPSHOT ? snapshot_opts : merge_opts, req_opt, &o, &first);
	if (r != 0)
		return r;
	n = argc - first;
	if (n < 1) {
		cli_verb_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	out->targets = calloc((size_t)n, sizeof(*out->targets));
	if (out->targets == NULL)
		abort();
	/* files of a VM reached over ssh live on that host: no local cwd */
	remote = ctx->target != NULL && strncmp(ctx->target, "ssh://", 6) == 0;
	for (i = 0; i < n; i++) {
		struct merge_target *t = &out->targets[i];
		char *a = argv[first + i];

		t->disk = a;
		t->top = o.top;
		t->base = o.base;
		if (o.verb != MERGE_SNAPSHOT)
			continue;
		{
			char *eq = strchr(a, '=');

			if (eq == NULL || eq == a || eq[1] == '\0')
				return cli_error(EXIT_USAGE, "snapshot: '%s' is not DISK=OVERLAY", a);
			t->disk = req_own(out, strndup(a, (size_t)(eq - a)));
			if (remote && eq[1] != '/')
				return cli_error(EXIT_USAGE, "snapshot: overlay '%s' must be an absolute "
							     "path on the remote host", eq + 1);
			t->overlay = req_own(out, cli_abspath(eq + 1));
			if (t->overlay == NULL)
				return cli_error(EXIT_USAGE, "snapshot: cannot make %s absolute", eq + 1);
		}
	}
	out->req.verb = o.verb;
	out->req.ntargets = n;
	out->req.targets = out->targets;
	out->req.format = o.format;
	out->req.speed = o.speed;
	out->req.delete_removed = o.del;
	out->req.wait_for_space = o.wait_for_space;
	out->req.freeze_limit = o.freeze_limit;
	out->req.dry_run = ctx->dry_run;
	out->req.volume_cmd = o.volume_cmd;
	ctx->volume_cmd = o.volume_cmd; /* the recovery first uses it too */
	ctx->volume_timeout = o.volume_timeout;
	out->req.volume_timeout = o.volume_timeout;
	out->req.initial_size = o.initial_size;
	out->req.chunk = o.chunk;
	out->req.headroom = o.headroom;
	out->quiesce = o.quiesce;
	return 0;
}

void cli_request_free(struct cli_request *r)
{
	int i;

	for (i = 0; i < r->nowned; i++)
		free(r->owned[i]);
	free(r->owned);
	free(r->targets);
	memset(r, 0, sizeof(*r));
}

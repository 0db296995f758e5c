/*
 * fakeqmp: a scripted fake QMP server over a socketpair (see fakeqmp.h).
 *
 * One function, fq_advance(), moves the script along as far as it can and
 * returns where it has to wait: for a command, for the output to drain, for
 * a timer, for the client's EOF. The read, write and timer watchers only
 * record what happened and call it again. All output goes through one
 * buffer, so a reply to an unexpected command can never land inside a
 * message the script is still sending.
 */
#include "fakeqmp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum fq_step_kind {
	FQ_STEP_SEND,   /* text as given */
	FQ_STEP_REPLY,  /* return/error built when reached, echoing an id */
	FQ_STEP_EXPECT,
	FQ_STEP_DELAY,
	FQ_STEP_CLOSE,
	FQ_STEP_EOF,
	FQ_STEP_CALL,
};

struct fq_step {
	enum fq_step_kind kind;
	char *desc;     /* for reports */
	char *text;     /* SEND: the bytes; REPLY: the return value or error object */
	size_t len;
	int is_error;   /* REPLY: "error" instead of "return" */
	int handle;     /* REPLY: whose id to echo (-1: id_text); EXPECT: own handle */
	char *id_text;  /* REPLY with a chosen id */
	char *name;     /* EXPECT */
	json_object *args; /* EXPECT: the subset, NULL for any */
	size_t chunk;   /* SEND/REPLY: piece size, 0 for all at once */
	double delay;   /* SEND/REPLY: between pieces; DELAY: how long */
	void (*fn)(struct fq *fq, void *arg);
	void *arg;
};

enum fq_timer_state { FQ_TIMER_IDLE, FQ_TIMER_RUNNING, FQ_TIMER_FIRED };

struct fq {
	struct ev_loop *loop;
	int sfd, cfd;
	int cfd_taken;
	ev_io rio, wio;
	ev_timer timer;
	ev_timer kick; /* starts the script from the loop once steps are added */
	enum fq_timer_state timer_state;

	struct fq_step *steps;
	int nsteps, steps_cap;
	int cur;
	int last_send; /* index of the last sending step, for fq_split; -1 */

	json_object **cmds; /* by handle: the command matched, NULL until then */
	int nhandles, cmds_cap;

	json_object **queue; /* received, waiting for an EXPECT step */
	size_t qhead, qlen, qcap;
	json_tokener *tok;
	int nreceived;

	char *obuf; /* bytes accepted for the socket, not written yet */
	size_t olen, ooff, ocap;

	char *out; /* the current sending step's whole message */
	size_t out_len, out_off;
	int out_owned;
	int sending;

	int peer_eof;
	int mid_command; /* the client has sent part of a command */
	int closed;
	int broken; /* a write failed: the script stops where it is */
	int nevents;
	int advancing, again;
	int trace;

	char **failures;
	int nfail, fail_cap;
};

static void fq_advance(struct fq *fq);

static void *fq_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL) {
		fprintf(stderr, "fakeqmp: out of memory\n");
		abort();
	}
	return q;
}

static char *fq_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(fq_xrealloc(NULL, n), s, n);
}

static char *fq_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fq_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	s = fq_xrealloc(NULL, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static void fq_fail(struct fq *fq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fq_fail(struct fq *fq, const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (fq->nfail == fq->fail_cap) {
		fq->fail_cap = fq->fail_cap ? fq->fail_cap * 2 : 8;
		fq->failures =
			fq_xrealloc(fq->failures, sizeof(*fq->failures) * (size_t)fq->fail_cap);
	}
	fq->failures[fq->nfail++] = fq_xstrdup(buf);
	if (fq->trace)
		fprintf(stderr, "fakeqmp: FAIL %s\n", buf);
}

/* A short one-line excerpt of text for reports. */
static char *fq_excerpt(const char *text, size_t len)
{
	size_t n = len < 72 ? len : 72;
	char *s = fq_xrealloc(NULL, n + 4);
	size_t i;

	for (i = 0; i < n; i++)
		s[i] = (text[i] == '\n' || text[i] == '\r' || text[i] == '\0') ? ' ' : text[i];
	strcpy(s + n, len > n ? "..." : "");
	return s;
}

static const char *fq_plain(json_object *o)
{
	return o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "null";
}

static json_object *fq_parse(struct fq *fq, const char *what, const char *json)
{
	json_object *o;

	if (json == NULL)
		return NULL;
	o = json_tokener_parse(json);
	if (o == NULL)
		fq_fail(fq, "script: %s: not valid JSON: %.200s", what, json);
	return o;
}

static struct fq_step *fq_add(struct fq *fq, enum fq_step_kind kind)
{
	struct fq_step *s;

	if (fq->nsteps == fq->steps_cap) {
		fq->steps_cap = fq->steps_cap ? fq->steps_cap * 2 : 32;
		fq->steps = fq_xrealloc(fq->steps, sizeof(*fq->steps) * (size_t)fq->steps_cap);
	}
	s = &fq->steps[fq->nsteps++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->handle = -1;
	if (kind == FQ_STEP_SEND || kind == FQ_STEP_REPLY)
		fq->last_send = fq->nsteps - 1;
	ev_timer_start(fq->loop, &fq->kick); /* no-op while already armed */
	return s;
}

/* --- output ------------------------------------------------------------- */

static void fq_stop_io(struct fq *fq)
{
	ev_io_stop(fq->loop, &fq->rio);
	ev_io_stop(fq->loop, &fq->wio);
}

static void fq_append(struct fq *fq, const char *buf, size_t len)
{
	if (fq->ooff == fq->olen)
		fq->ooff = fq->olen = 0;
	if (fq->olen + len > fq->ocap) {
		while (fq->olen + len > fq->ocap)
			fq->ocap = fq->ocap ? fq->ocap * 2 : 65536;
		fq->obuf = fq_xrealloc(fq->obuf, fq->ocap);
	}
	memcpy(fq->obuf + fq->olen, buf, len);
	fq->olen += len;
}

static void fq_flush(struct fq *fq)
{
	while (fq->ooff < fq->olen) {
		ssize_t n;

		if (fq->sfd < 0 || fq->broken) {
			fq->ooff = fq->olen = 0;
			return;
		}
		n = send(fq->sfd, fq->obuf + fq->ooff, fq->olen - fq->ooff, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ev_io_start(fq->loop, &fq->wio);
			return;
		}
		if (n < 0) {
			fq_fail(fq, "write to the client failed: %s (step %d)", strerror(errno),
				fq->cur + 1);
			fq->broken = 1;
			fq->ooff = fq->olen = 0;
			break;
		}
		if (fq->trace) {
			char *ex = fq_excerpt(fq->obuf + fq->ooff, (size_t)n);

			fprintf(stderr, "fakeqmp -> [%zd] %s\n", n, ex);
			free(ex);
		}
		fq->ooff += (size_t)n;
	}
	ev_io_stop(fq->loop, &fq->wio);
}

/* Answer a command the script did not want, so that the client moves on. */
static void fq_reject(struct fq *fq, json_object *cmd, const char *why)
{
	json_object *id = NULL, *name = NULL;
	json_object *reply, *error;
	const char *s;
	char *desc;

	json_object_object_get_ex(cmd, "execute", &name);
	fq_fail(fq, "unexpected command %s (%s)", fq_plain(cmd), why);
	if (fq->sfd < 0 || fq->broken)
		return;
	reply = json_object_new_object();
	error = json_object_new_object();
	json_object_object_add(error, "class", json_object_new_string("GenericError"));
	desc = fq_xasprintf("fakeqmp: unexpected command %s",
			    name ? json_object_get_string(name) : "?");
	json_object_object_add(error, "desc", json_object_new_string(desc));
	free(desc);
	json_object_object_add(reply, "error", error);
	if (json_object_object_get_ex(cmd, "id", &id))
		json_object_object_add(reply, "id", json_object_get(id));
	s = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN);
	fq_append(fq, s, strlen(s));
	fq_append(fq, "\r\n", 2);
	json_object_put(reply);
	fq_flush(fq);
}

/* --- matching ----------------------------------------------------------- */

/* 1 if every member of want is in got with an equal (subset) value. */
static int fq_subset(json_object *want, json_object *got)
{
	enum json_type wt = json_object_get_type(want);
	enum json_type gt = json_object_get_type(got);

	if (want == NULL)
		return got == NULL;
	if (wt == json_type_object) {
		if (gt != json_type_object)
			return 0;
		json_object_object_foreach(want, key, wv) {
			json_object *gv;

			if (!json_object_object_get_ex(got, key, &gv) || !fq_subset(wv, gv))
				return 0;
		}
		return 1;
	}
	if (wt == json_type_array) {
		size_t i, n = json_object_array_length(want);

		if (gt != json_type_array || json_object_array_length(got) != n)
			return 0;
		for (i = 0; i < n; i++)
			if (!fq_subset(json_object_array_get_idx(want, i),
				       json_object_array_get_idx(got, i)))
				return 0;
		return 1;
	}
	if ((wt == json_type_int || wt == json_type_double) &&
	    (gt == json_type_int || gt == json_type_double)) {
		if (wt == json_type_int && gt == json_type_int)
			return json_object_get_int64(want) == json_object_get_int64(got);
		return json_object_get_double(want) == json_object_get_double(got);
	}
	return json_object_equal(want, got);
}

static int fq_matches(const struct fq_step *s, json_object *cmd)
{
	json_object *name, *args = NULL;
	int ok;

	if (!json_object_object_get_ex(cmd, "execute", &name) ||
	    strcmp(json_object_get_string(name), s->name) != 0)
		return 0;
	if (s->args == NULL)
		return 1;
	if (!json_object_object_get_ex(cmd, "arguments", &args) || args == NULL) {
		/* no arguments match like {} */
		json_object *empty = json_object_new_object();

		ok = fq_subset(s->args, empty);
		json_object_put(empty);
		return ok;
	}
	return fq_subset(s->args, args);
}

static json_object *fq_queue_pop(struct fq *fq)
{
	json_object *cmd;

	if (fq->qhead == fq->qlen)
		return NULL;
	cmd = fq->queue[fq->qhead++];
	if (fq->qhead == fq->qlen)
		fq->qhead = fq->qlen = 0;
	return cmd;
}

static void fq_queue_push(struct fq *fq, json_object *cmd)
{
	if (fq->qlen == fq->qcap) {
		fq->qcap = fq->qcap ? fq->qcap * 2 : 64;
		fq->queue = fq_xrealloc(fq->queue, sizeof(*fq->queue) * fq->qcap);
	}
	fq->queue[fq->qlen++] = cmd;
}

/* --- the script ---------------------------------------------------------- */

/* Start the message of a sending step in fq->out. 0, or -1 if it cannot be. */
static int fq_begin_send(struct fq *fq, struct fq_step *s)
{
	const char *id = NULL;

	if (s->kind == FQ_STEP_SEND) {
		fq->out = s->text;
		fq->out_len = s->len;
		fq->out_owned = 0;
	} else {
		if (s->handle >= 0) {
			json_object *cmd = fq->cmds[s->handle], *idv;

			if (cmd == NULL) {
				fq_fail(fq, "script: step %d replies to expect #%d, not come yet",
					fq->cur + 1, s->handle);
				return -1;
			}
			if (json_object_object_get_ex(cmd, "id", &idv))
				id = fq_plain(idv);
		} else {
			id = s->id_text;
		}
		if (id != NULL)
			fq->out = fq_xasprintf("{\"%s\": %s, \"id\": %s}\r\n",
					       s->is_error ? "error" : "return", s->text, id);
		else
			fq->out = fq_xasprintf("{\"%s\": %s}\r\n", s->is_error ? "error" : "return",
					       s->text);
		fq->out_len = strlen(fq->out);
		fq->out_owned = 1;
	}
	fq->out_off = 0;
	fq->sending = 1;
	return 0;
}

static void fq_end_send(struct fq *fq)
{
	if (fq->out_owned)
		free(fq->out);
	fq->out = NULL;
	fq->out_len = fq->out_off = 0;
	fq->out_owned = 0;
	fq->sending = 0;
}

static void fq_start_timer(struct fq *fq, double secs)
{
	ev_timer_set(&fq->timer, secs, 0.);
	ev_timer_start(fq->loop, &fq->timer);
	fq->timer_state = FQ_TIMER_RUNNING;
}

/* Run one step as far as it goes: 1 done (go on), 0 wait. */
static int fq_step(struct fq *fq, struct fq_step *s)
{
	json_object *cmd;

	switch (s->kind) {
	case FQ_STEP_SEND:
	case FQ_STEP_REPLY:
		if (fq->sfd < 0) {
			fq_fail(fq, "script: step %d (%s) comes after fq_close()", fq->cur + 1,
				s->desc);
			fq->broken = 1;
			return 0;
		}
		if (!fq->sending && fq_begin_send(fq, s) < 0) {
			fq->broken = 1;
			return 0;
		}
		for (;;) {
			size_t n;

			if (fq->broken || fq->timer_state == FQ_TIMER_RUNNING ||
			    fq->ooff < fq->olen)
				return 0;
			if (fq->out_off == fq->out_len) {
				fq_end_send(fq);
				return 1;
			}
			if (fq->timer_state == FQ_TIMER_FIRED) {
				fq->timer_state = FQ_TIMER_IDLE;
			} else if (fq->out_off > 0 && s->delay > 0) {
				fq_start_timer(fq, s->delay);
				return 0;
			}
			n = fq->out_len - fq->out_off;
			if (s->chunk > 0 && n > s->chunk)
				n = s->chunk;
			fq_append(fq, fq->out + fq->out_off, n);
			fq->out_off += n;
			fq_flush(fq);
		}
	case FQ_STEP_EXPECT:
		while ((cmd = fq_queue_pop(fq)) != NULL) {
			if (fq_matches(s, cmd)) {
				fq->cmds[s->handle] = cmd;
				return 1;
			}
			fq_reject(fq, cmd, s->desc);
			json_object_put(cmd);
		}
		return 0;
	case FQ_STEP_DELAY:
		if (fq->timer_state == FQ_TIMER_IDLE) {
			fq_start_timer(fq, s->delay);
			return 0;
		}
		if (fq->timer_state == FQ_TIMER_RUNNING)
			return 0;
		fq->timer_state = FQ_TIMER_IDLE;
		return 1;
	case FQ_STEP_CLOSE:
		if (fq->ooff < fq->olen && !fq->broken)
			return 0;
		fq_stop_io(fq);
		if (fq->sfd >= 0)
			close(fq->sfd);
		fq->sfd = -1;
		fq->closed = 1;
		return 1;
	case FQ_STEP_EOF:
		return fq->peer_eof;
	case FQ_STEP_CALL:
		return 1; /* run by fq_advance once the step counts as done */
	}
	return 0;
}

static void fq_advance(struct fq *fq)
{
	if (fq->advancing) {
		fq->again = 1;
		return;
	}
	fq->advancing = 1;
	do {
		fq->again = 0;
		while (fq->cur < fq->nsteps && !fq->broken) {
			struct fq_step *s = &fq->steps[fq->cur];

			if (!fq_step(fq, s))
				break;
			fq->cur++;
			if (s->kind == FQ_STEP_CALL)
				s->fn(fq, s->arg);
		}
		if (fq->cur == fq->nsteps) {
			json_object *cmd;

			while ((cmd = fq_queue_pop(fq)) != NULL) {
				fq_reject(fq, cmd, "the script has ended");
				json_object_put(cmd);
			}
		}
	} while (fq->again);
	fq->advancing = 0;
}

/* --- watchers ------------------------------------------------------------ */

static void fq_on_command(struct fq *fq, json_object *obj)
{
	json_object *name;

	fq->nreceived++;
	if (fq->trace)
		fprintf(stderr, "fakeqmp <- %.300s\n", fq_plain(obj));
	if (!json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, "execute", &name) ||
	    !json_object_is_type(name, json_type_string)) {
		fq_fail(fq, "the client sent something that is no command: %.200s", fq_plain(obj));
		json_object_put(obj);
		return;
	}
	fq_queue_push(fq, obj);
}

static void fq_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fq *fq = w->data;
	char buf[65536];

	(void)loop;
	(void)revents;
	for (;;) {
		ssize_t n = recv(fq->sfd, buf, sizeof(buf), 0);
		size_t off = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) { /* EOF, or a reset, which is the same to the script */
			fq->peer_eof = 1;
			ev_io_stop(fq->loop, &fq->rio);
			if (fq->mid_command)
				fq_fail(fq, "the client closed in the middle of a command");
			break;
		}
		while (off < (size_t)n) {
			json_object *obj =
				json_tokener_parse_ex(fq->tok, buf + off, (int)(n - off));
			enum json_tokener_error jerr = json_tokener_get_error(fq->tok);

			if (jerr == json_tokener_continue) {
				for (; off < (size_t)n; off++)
					if (!strchr(" \t\r\n", buf[off]))
						fq->mid_command = 1;
				break;
			}
			fq->mid_command = 0;
			if (jerr != json_tokener_success) {
				char *ex = fq_excerpt(buf + off, (size_t)n - off);

				fq_fail(fq, "the client sent bad JSON (%s): %s",
					json_tokener_error_desc(jerr), ex);
				free(ex);
				json_tokener_reset(fq->tok);
				break;
			}
			off += json_tokener_get_parse_end(fq->tok);
			fq_on_command(fq, obj);
		}
	}
	fq_advance(fq);
}

static void fq_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fq *fq = w->data;

	(void)loop;
	(void)revents;
	fq_flush(fq);
	fq_advance(fq);
}

static void fq_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	fq_advance(w->data);
}

static void fq_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fq *fq = w->data;

	(void)loop;
	(void)revents;
	fq->timer_state = FQ_TIMER_FIRED;
	fq_advance(fq);
}

/* --- public -------------------------------------------------------------- */

struct fq *fq_new_on_fd(struct ev_loop *loop, int fd)
{
	struct fq *fq = fq_xrealloc(NULL, sizeof(*fq));
	const char *tr = getenv("FAKEQMP_TRACE");
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		perror("fakeqmp: fcntl");
		abort();
	}
	memset(fq, 0, sizeof(*fq));
	fq->loop = loop;
	fq->sfd = fd;
	fq->cfd = -1;
	fq->cfd_taken = 1;
	fq->last_send = -1;
	fq->trace = tr != NULL && *tr != '\0' && strcmp(tr, "0") != 0;
	fq->tok = json_tokener_new();
	if (fq->tok == NULL)
		abort();
	ev_io_init(&fq->rio, fq_read_cb, fq->sfd, EV_READ);
	fq->rio.data = fq;
	ev_io_init(&fq->wio, fq_write_cb, fq->sfd, EV_WRITE);
	fq->wio.data = fq;
	ev_timer_init(&fq->timer, fq_timer_cb, 0., 0.);
	fq->timer.data = fq;
	ev_timer_init(&fq->kick, fq_kick_cb, 0., 0.);
	fq->kick.data = fq;
	ev_io_start(loop, &fq->rio);
	return fq;
}

struct fq *fq_new(struct ev_loop *loop)
{
	struct fq *fq;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("fakeqmp: socketpair");
		abort();
	}
	fq = fq_new_on_fd(loop, sv[0]);
	fq->cfd = sv[1];
	fq->cfd_taken = 0;
	return fq;
}

void fq_free(struct fq *fq)
{
	int i;

	if (fq == NULL)
		return;
	fq_stop_io(fq);
	ev_timer_stop(fq->loop, &fq->timer);
	ev_timer_stop(fq->loop, &fq->kick);
	if (fq->sfd >= 0)
		close(fq->sfd);
	if (!fq->cfd_taken)
		close(fq->cfd);
	for (i = 0; i < fq->nsteps; i++) {
		struct fq_step *s = &fq->steps[i];

		free(s->desc);
		free(s->text);
		free(s->id_text);
		free(s->name);
		json_object_put(s->args);
	}
	free(fq->steps);
	for (i = 0; i < fq->nhandles; i++)
		json_object_put(fq->cmds[i]);
	free(fq->cmds);
	while (fq->qhead < fq->qlen)
		json_object_put(fq->queue[fq->qhead++]);
	free(fq->queue);
	json_tokener_free(fq->tok);
	free(fq->obuf);
	if (fq->out_owned)
		free(fq->out);
	for (i = 0; i < fq->nfail; i++)
		free(fq->failures[i]);
	free(fq->failures);
	free(fq);
}

int fq_fd(struct fq *fq)
{
	fq->cfd_taken = 1; /* -1 for a fake made by fq_new_on_fd() */
	return fq->cfd;
}

void fq_send_bytes(struct fq *fq, const void *buf, size_t len)
{
	struct fq_step *s = fq_add(fq, FQ_STEP_SEND);
	char *ex;

	s->text = memcpy(fq_xrealloc(NULL, len), buf, len);
	s->len = len;
	ex = fq_excerpt(buf, len);
	s->desc = fq_xasprintf("send %s", ex);
	free(ex);
}

void fq_send(struct fq *fq, const char *text)
{
	fq_send_bytes(fq, text, strlen(text));
}

void fq_split(struct fq *fq, size_t chunk, double delay)
{
	if (fq->last_send < 0) {
		fq_fail(fq, "script: fq_split() with no sending step before it");
		return;
	}
	fq->steps[fq->last_send].chunk = chunk;
	fq->steps[fq->last_send].delay = delay;
}

void fq_greeting_version(struct fq *fq, int major, int minor, int micro)
{
	char *g = fq_xasprintf("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": %d, \"minor\": %d, "
			       "\"major\": %d}, \"package\": \"Debian fakeqmp\"}, "
			       "\"capabilities\": [\"oob\"]}}\r\n",
			       micro, minor, major);

	fq_send(fq, g);
	free(g);
}

void fq_greeting(struct fq *fq)
{
	fq_greeting_version(fq, 7, 2, 0);
}

void fq_handshake(struct fq *fq)
{
	fq_greeting(fq);
	fq_command(fq, "qmp_capabilities", NULL, "{}");
}

void fq_no_identity(struct fq *fq)
{
	fq_expect(fq, "query-uuid", NULL);
	fq_reply_error(fq, "CommandNotFound", "The command query-uuid has not been found");
}

void fq_event_ts(struct fq *fq, const char *name, const char *data_json, long long sec,
		 long long usec)
{
	json_object *ev = json_object_new_object();
	json_object *ts = json_object_new_object();
	char *text;

	json_object_object_add(ev, "event", json_object_new_string(name));
	if (data_json != NULL) {
		json_object *data = fq_parse(fq, name, data_json);

		if (data != NULL)
			json_object_object_add(ev, "data", data);
	}
	json_object_object_add(ts, "seconds", json_object_new_int64(sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(usec));
	json_object_object_add(ev, "timestamp", ts);
	/* QEMU ends every message with a newline */
	text = fq_xasprintf("%s\r\n", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_SPACED));
	fq_send(fq, text);
	free(text);
	json_object_put(ev);
}

void fq_event(struct fq *fq, const char *name, const char *data_json)
{
	fq->nevents++;
	fq_event_ts(fq, name, data_json, 1700000000LL + fq->nevents, fq->nevents);
}

/* Send event name with data (taken). */
static void fq_event_obj(struct fq *fq, const char *name, json_object *data)
{
	fq_event(fq, name, json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN));
	json_object_put(data);
}

static json_object *fq_obj_str(json_object *o, const char *key, const char *val)
{
	json_object_object_add(o, key, json_object_new_string(val));
	return o;
}

static json_object *fq_obj_int(json_object *o, const char *key, int64_t val)
{
	json_object_object_add(o, key, json_object_new_int64(val));
	return o;
}

/* The members BLOCK_JOB_READY and BLOCK_JOB_COMPLETED share. */
static json_object *fq_block_job_data(const char *job_id, const char *type, int64_t offset)
{
	json_object *d = json_object_new_object();

	fq_obj_str(d, "device", job_id);
	fq_obj_int(d, "len", 1048576);
	fq_obj_int(d, "offset", offset);
	fq_obj_int(d, "speed", 0);
	return fq_obj_str(d, "type", type);
}

void fq_job_status(struct fq *fq, const char *job_id, const char *status)
{
	json_object *d = json_object_new_object();

	fq_obj_str(d, "status", status);
	fq_event_obj(fq, "JOB_STATUS_CHANGE", fq_obj_str(d, "id", job_id));
}

void fq_block_job_ready(struct fq *fq, const char *job_id, const char *type)
{
	fq_event_obj(fq, "BLOCK_JOB_READY", fq_block_job_data(job_id, type, 1048576));
}

void fq_block_job_pending(struct fq *fq, const char *job_id, const char *type)
{
	json_object *d = json_object_new_object();

	fq_obj_str(d, "type", type);
	fq_event_obj(fq, "BLOCK_JOB_PENDING", fq_obj_str(d, "id", job_id));
}

void fq_block_job_completed(struct fq *fq, const char *job_id, const char *type,
			    const char *error)
{
	json_object *d = fq_block_job_data(job_id, type, error ? 0 : 1048576);

	if (error != NULL)
		fq_obj_str(d, "error", error);
	fq_event_obj(fq, "BLOCK_JOB_COMPLETED", d);
}

int fq_expect(struct fq *fq, const char *name, const char *args_subset_json)
{
	struct fq_step *s = fq_add(fq, FQ_STEP_EXPECT);

	s->name = fq_xstrdup(name);
	s->args = fq_parse(fq, name, args_subset_json);
	s->desc = fq_xasprintf("expect %s %.200s", name, args_subset_json ? args_subset_json : "");
	s->handle = fq->nhandles++;
	if (fq->nhandles > fq->cmds_cap) {
		fq->cmds_cap = fq->cmds_cap ? fq->cmds_cap * 2 : 32;
		fq->cmds = fq_xrealloc(fq->cmds, sizeof(*fq->cmds) * (size_t)fq->cmds_cap);
	}
	fq->cmds[s->handle] = NULL;
	return s->handle;
}

static void fq_add_reply(struct fq *fq, int h, const char *id_text, int is_error, char *body)
{
	struct fq_step *s;
	char *ex;

	if (id_text == NULL && (h < 0 || h >= fq->nhandles)) {
		fq_fail(fq, "script: reply to expect #%d, which does not exist", h);
		free(body);
		return;
	}
	s = fq_add(fq, FQ_STEP_REPLY);
	s->handle = id_text ? -1 : h;
	s->id_text = id_text ? fq_xstrdup(id_text) : NULL;
	s->is_error = is_error;
	s->text = body;
	ex = fq_excerpt(body, strlen(body));
	s->desc = fq_xasprintf("reply %s %s to %s%d", is_error ? "error" : "return", ex,
			       id_text ? "id " : "expect #", id_text ? 0 : h);
	free(ex);
}

static char *fq_checked_body(struct fq *fq, const char *ret_json)
{
	json_object *o = fq_parse(fq, "reply", ret_json);

	/* parsing only checks the script; the text goes out as written */
	json_object_put(o);
	return fq_xstrdup(ret_json);
}

static char *fq_error_body(const char *cls, const char *desc)
{
	json_object *e = json_object_new_object();
	char *s;

	json_object_object_add(e, "class", json_object_new_string(cls));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	s = fq_xstrdup(json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
	json_object_put(e);
	return s;
}

void fq_reply_return_to(struct fq *fq, int h, const char *ret_json)
{
	fq_add_reply(fq, h, NULL, 0, fq_checked_body(fq, ret_json));
}

void fq_reply_error_to(struct fq *fq, int h, const char *cls, const char *desc)
{
	fq_add_reply(fq, h, NULL, 1, fq_error_body(cls, desc));
}

void fq_reply_return(struct fq *fq, const char *ret_json)
{
	fq_reply_return_to(fq, fq->nhandles - 1, ret_json);
}

void fq_reply_error(struct fq *fq, const char *cls, const char *desc)
{
	fq_reply_error_to(fq, fq->nhandles - 1, cls, desc);
}

void fq_reply_return_id(struct fq *fq, const char *id_json, const char *ret_json)
{
	json_object *o = fq_parse(fq, "id", id_json);

	json_object_put(o);
	fq_add_reply(fq, -1, id_json, 0, fq_checked_body(fq, ret_json));
}

int fq_command(struct fq *fq, const char *name, const char *args_subset_json,
	       const char *ret_json)
{
	int h = fq_expect(fq, name, args_subset_json);

	fq_reply_return(fq, ret_json);
	return h;
}

json_object *fq_command_json(struct fq *fq, int h)
{
	return h >= 0 && h < fq->nhandles ? fq->cmds[h] : NULL;
}

void fq_delay(struct fq *fq, double secs)
{
	struct fq_step *s = fq_add(fq, FQ_STEP_DELAY);

	s->delay = secs;
	s->desc = fq_xasprintf("delay %g s", secs);
}

void fq_close(struct fq *fq)
{
	fq_add(fq, FQ_STEP_CLOSE)->desc = fq_xstrdup("close");
}

void fq_expect_eof(struct fq *fq)
{
	fq_add(fq, FQ_STEP_EOF)->desc = fq_xstrdup("expect the client to close");
}

void fq_call(struct fq *fq, void (*fn)(struct fq *fq, void *arg), void *arg)
{
	struct fq_step *s = fq_add(fq, FQ_STEP_CALL);

	s->fn = fn;
	s->arg = arg;
	s->desc = fq_xstrdup("call");
}

int fq_done(const struct fq *fq)
{
	return fq->cur == fq->nsteps;
}

int fq_received(const struct fq *fq)
{
	return fq->nreceived;
}

int fq_problems(const struct fq *fq)
{
	return fq->nfail + (fq->nsteps - fq->cur) + (int)(fq->qlen - fq->qhead);
}

int fq_verify(struct fq *fq)
{
	int i, n = 0;

	for (i = 0; i < fq->nfail; i++, n++)
		fprintf(stderr, "fakeqmp: %s\n", fq->failures[i]);
	for (i = fq->cur; i < fq->nsteps; i++, n++)
		fprintf(stderr, "fakeqmp: step %d never %s: %s\n", i + 1,
			i == fq->cur ? "finished" : "reached", fq->steps[i].desc);
	for (size_t q = fq->qhead; q < fq->qlen; q++, n++)
		fprintf(stderr, "fakeqmp: command %s received but never expected\n",
			fq_plain(fq->queue[q]));
	return n;
}

/*
 * transport/ssh-exec: the kind of channel that runs a command on the host
 * (tr_ssh_exec_new in transport.h): a session channel with an "exec"
 * request, as `ssh HOST CMD` makes. The stream is the command's stdout;
 * its stderr is kept apart, only its last bytes (tr_ssh_exec_stderr). The
 * channel's stdin is never written and stays open until the user frees
 * the transport: a command can take its end as the sign to stop.
 */
#include "ssh-int.h"

#include <string.h>

/* One step of the open, see struct ssh_chan_kind. */
static int exec_open_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	int rc;

	if (!ssh_sess_may_send(s, BUSY_OPEN, c))
		return 0;
	c->state = CHAN_OPENING;
	if (c->ch == NULL) {
		c->ch = libssh2_channel_open_session(s->ssh);
		rc = c->ch != NULL ? 0 : libssh2_session_last_errno(s->ssh);
		ssh_sess_note_busy(s, BUSY_OPEN, c, rc == LIBSSH2_ERROR_EAGAIN);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		s->kick = 1;
		if (ssh_rc_fatal(rc)) {
			ssh_sess_fail_lost(s, LM_ERR_EOF);
			return 0;
		}
		if (c->ch == NULL) {
			ssh_chan_failf(c, LM_ERR_UNSUPPORTED, "sshd on %s refused a session channel "
				       "(%s)", s->khname, ssh_sess_errmsg(s));
			c->state = CHAN_DONE;
			return 1;
		}
	}
	rc = libssh2_channel_process_startup(c->ch, "exec", 4, c->path,
					     (unsigned int)strlen(c->path));
	ssh_sess_note_busy(s, BUSY_OPEN, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	s->kick = 1;
	if (ssh_rc_fatal(rc)) {
		ssh_sess_fail_lost(s, LM_ERR_EOF);
		return 0;
	}
	if (rc != 0) {
		ssh_chan_failf(c, LM_ERR_UNSUPPORTED, "sshd on %s refused to run a command (%s)",
			       s->khname, ssh_sess_errmsg(s));
		ssh_chan_start_close(c); /* the pump frees the session channel */
		return 1;
	}
	c->exec_started = 1;
	ssh_chan_opened(c, c->ch);
	return 1;
}

/* Take the stderr libssh2 holds, keeping its last bytes: its window must
 * not fill while the user reads stdout. */
static void exec_side_read(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	char buf[1024];
	ssize_t n;
	size_t keep = sizeof(c->errtail) - 1;

	for (;;) {
		if (!ssh_sess_may_send(s, BUSY_READ, c) && ssh_chan_read_adjusts(c, sizeof(buf)))
			return;
		n = libssh2_channel_read_stderr(c->ch, buf, sizeof(buf));
		ssh_sess_note_busy(s, BUSY_READ, c, n == LIBSSH2_ERROR_EAGAIN);
		if (n <= 0)
			return; /* a failure shows on the stdout read that follows */
		if ((size_t)n >= keep) {
			memcpy(c->errtail, buf + n - keep, keep);
			c->errlen = keep;
		} else {
			if (c->errlen + (size_t)n > keep) {
				size_t drop = c->errlen + (size_t)n - keep;

				memmove(c->errtail, c->errtail + drop, c->errlen - drop);
				c->errlen -= drop;
			}
			memcpy(c->errtail + c->errlen, buf, (size_t)n);
			c->errlen += (size_t)n;
		}
		c->errtail[c->errlen] = '\0';
	}
}

const struct ssh_chan_kind ssh_exec = {
	.open_step = exec_open_step,
	.side_read = exec_side_read,
};

struct tr *tr_ssh_exec_new(const char *target, const struct tr_opts *opts, const char *cmd,
			   struct lm_error *err)
{
	struct tr_ssh *c = ssh_chan_make(target, opts, &ssh_exec, cmd, err);

	return c != NULL ? &c->base : NULL;
}

const char *tr_ssh_exec_stderr(struct tr *t)
{
	struct tr_ssh *c = (struct tr_ssh *)t;

	if (t->ops != &ssh_chan_ops || c->kind != &ssh_exec)
		return "";
	c->errtail[c->errlen] = '\0';
	return c->errtail;
}

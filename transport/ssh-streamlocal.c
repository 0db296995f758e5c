/*
 * transport/ssh-streamlocal: the kind of channel that reaches a unix
 * socket on the host: type direct-streamlocal@openssh.com (what `ssh -L
 * /local:/remote` uses), so sshd connects the channel to the socket itself
 * and no helper program runs on the host.
 *
 * A refused open is diagnosed with an SFTP stat of the socket path (sshd
 * answers "administratively prohibited" both when forwarding is disabled
 * and when the socket is missing).
 */
#include "ssh-int.h"

#include <stdio.h>
#include <string.h>

#define SSH_CHANNEL_TYPE "direct-streamlocal@openssh.com"

static void streamlocal_probe_finish(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	const char *host = s->khname;

	switch (c->found) {
	case FOUND_MISSING:
		ssh_chan_failf(c, LM_ERR_IO, "no such socket on %s: %s (is the VM running, and "
					     "is that its monitor socket?)", host, c->path);
		break;
	case FOUND_OTHER:
		ssh_chan_failf(c, LM_ERR_IO, "%s on %s is not a unix socket", c->path, host);
		break;
	case FOUND_NOACCESS:
		ssh_chan_failf(c, LM_ERR_IO, "%s on %s: permission denied for %s", c->path, host,
			       s->user);
		break;
	case FOUND_SOCKET:
		ssh_chan_failf(c, LM_ERR_IO,
			       "sshd on %s refused a channel to %s, which exists: sshd_config "
			       "must allow it with `AllowStreamLocalForwarding yes` (the default) "
			       "and no DisableForwarding, or nothing listens on the socket (sshd "
			       "says: %s)",
			       host, c->path, c->refusal);
		break;
	default:
		ssh_chan_failf(c, LM_ERR_IO,
			       "sshd on %s refused a channel to %s (%s): either the socket is missing "
			       "or sshd_config forbids it (`AllowStreamLocalForwarding yes` is the "
			       "default)", host, c->path, c->refusal);
		break;
	}
	c->state = CHAN_DONE;
	s->kick = 1;
}

/* Find out with an SFTP stat why sshd refused: 1 done, 0 wait. */
static int streamlocal_probe_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	int rc;

	if (!ssh_sess_may_send(s, BUSY_PROBE, c))
		return 0;
	if (c->probe == PROBE_INIT) {
		c->sftp = libssh2_sftp_init(s->ssh);
		if (c->sftp == NULL) {
			rc = libssh2_session_last_errno(s->ssh);
			ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (ssh_rc_fatal(rc)) {
				ssh_sess_fail_lost(s, LM_ERR_IO);
				return 1;
			}
			streamlocal_probe_finish(c); /* no SFTP there: say both */
			return 1;
		}
		c->probe = PROBE_STAT;
	}
	if (c->probe == PROBE_STAT) {
		rc = libssh2_sftp_stat_ex(c->sftp, c->path, (unsigned int)strlen(c->path),
					  LIBSSH2_SFTP_STAT, &attrs);
		ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0) {
			c->found = !(attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) ? FOUND_UNKNOWN
				   : LIBSSH2_SFTP_S_ISSOCK(attrs.permissions)    ? FOUND_SOCKET
										   : FOUND_OTHER;
		} else if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
			unsigned long fx = libssh2_sftp_last_error(c->sftp);

			c->found = fx == LIBSSH2_FX_NO_SUCH_FILE || fx == LIBSSH2_FX_NO_SUCH_PATH
					   ? FOUND_MISSING
				   : fx == LIBSSH2_FX_PERMISSION_DENIED ? FOUND_NOACCESS
									: FOUND_UNKNOWN;
		} else if (ssh_rc_fatal(rc)) {
			ssh_sess_fail_lost(s, LM_ERR_IO);
			return 1;
		}
		c->probe = PROBE_SHUTDOWN;
	}
	rc = libssh2_sftp_shutdown(c->sftp);
	ssh_sess_note_busy(s, BUSY_PROBE, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	c->sftp = NULL;
	streamlocal_probe_finish(c);
	return 1;
}

/* A channel to a unix socket on the host: one step of its open, see
 * struct ssh_chan_kind. */
static int streamlocal_open_step(struct tr_ssh *c)
{
	struct ssh_sess *s = c->s;
	unsigned char msg[4 + SSH_PATH_MAX + 4 + 4];
	size_t plen = strlen(c->path), n = 0;
	LIBSSH2_CHANNEL *ch;
	int rc;

	if (c->state == CHAN_PROBING)
		return streamlocal_probe_step(c);
	if (!ssh_sess_may_send(s, BUSY_OPEN, c))
		return 0;
	c->state = CHAN_OPENING;
	/* string socket path, string reserved (""), uint32 reserved (0) */
	msg[n++] = (unsigned char)(plen >> 24);
	msg[n++] = (unsigned char)(plen >> 16);
	msg[n++] = (unsigned char)(plen >> 8);
	msg[n++] = (unsigned char)plen;
	memcpy(msg + n, c->path, plen);
	n += plen;
	memset(msg + n, 0, 8);
	n += 8;
	ch = libssh2_channel_open_ex(s->ssh, SSH_CHANNEL_TYPE, sizeof(SSH_CHANNEL_TYPE) - 1,
				     LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_PACKET_DEFAULT,
				     (const char *)msg, (unsigned int)n);
	rc = ch != NULL ? 0 : libssh2_session_last_errno(s->ssh);
	ssh_sess_note_busy(s, BUSY_OPEN, c, rc == LIBSSH2_ERROR_EAGAIN);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	s->kick = 1;
	if (ch != NULL) {
		ssh_chan_opened(c, ch);
		return 1;
	}
	if (ssh_rc_fatal(rc)) {
		ssh_sess_fail_lost(s, LM_ERR_IO);
		return 0;
	}
	snprintf(c->refusal, sizeof(c->refusal), "%s", ssh_sess_errmsg(s));
	if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE &&
	    strstr(c->refusal, "unknown channel type") != NULL) {
		ssh_chan_failf(c, LM_ERR_IO, "sshd on %s cannot forward to unix sockets "
					     "(OpenSSH 6.7 or later can): %s", s->khname, c->refusal);
		c->state = CHAN_DONE;
	} else if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE && c->attached && !c->failed) {
		c->state = CHAN_PROBING;
		c->probe = PROBE_INIT;
		c->found = FOUND_UNKNOWN;
	} else {
		ssh_chan_failf(c, LM_ERR_IO, "cannot open a channel to %s on %s: %s", c->path,
			       s->khname, c->refusal);
		c->state = CHAN_DONE;
	}
	return 1;
}

const struct ssh_chan_kind ssh_streamlocal = {
	.open_step = streamlocal_open_step,
};

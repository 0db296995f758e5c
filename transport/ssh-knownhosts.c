/*
 * transport/ssh-knownhosts: the server's host key against OpenSSH's
 * known_hosts (hashed entries too, through libssh2's knownhost API), and
 * with accept-new an unknown host's key appended to it (never a changed
 * one).
 */
#include "ssh-int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int hostkey_bits(int type, const char **name)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: *name = "RSA"; return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: *name = "DSA"; return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: *name = "ECDSA"; return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519: *name = "ED25519"; return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: *name = "unknown"; return 0;
	}
}

/*
 * Load known_hosts line by line: libssh2_knownhost_readfile stops at the
 * first line it cannot parse (@cert-authority, a key type it does not
 * know), which would hide the entries after it. *ends_nl: whether the file
 * ends with a newline (for appending). 0, or -1 with errno (ENOENT: none).
 */
static int hostkey_load(LIBSSH2_KNOWNHOSTS *kh, const char *file, int *ends_nl)
{
	FILE *f = fopen(file, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	*ends_nl = 1;
	if (f == NULL)
		return -1;
	while ((n = getline(&line, &cap, f)) > 0) {
		*ends_nl = line[n - 1] == '\n';
		(void)libssh2_knownhost_readline(kh, line, (size_t)n,
						 LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	}
	free(line);
	fclose(f);
	return 0;
}

static int hostkey_append(struct ssh_sess *s, LIBSSH2_KNOWNHOSTS *kh, const char *key,
			  size_t keylen, int bits, int ends_nl)
{
	struct libssh2_knownhost *node;
	char line[8192];
	size_t len = 0;
	int fd;

	if (libssh2_knownhost_addc(kh, s->khname, NULL, key, keylen, NULL, 0,
				   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | bits,
				   &node) != 0 ||
	    libssh2_knownhost_writeline(kh, node, line, sizeof(line), &len,
					LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
		errno = ENOMEM;
		return -1;
	}
	fd = open(s->known_hosts, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		/* the default ~/.ssh may not exist yet; OpenSSH makes it 0700 */
		char *dir = strdup(s->known_hosts), *slash = dir ? strrchr(dir, '/') : NULL;

		if (slash != NULL && slash != dir) {
			*slash = '\0';
			(void)mkdir(dir, 0700);
		}
		free(dir);
		fd = open(s->known_hosts, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -1;
	if ((!ends_nl && write(fd, "\n", 1) != 1) || write(fd, line, len) != (ssize_t)len) {
		int e = errno;

		close(fd);
		errno = e ? e : EIO;
		return -1;
	}
	return close(fd);
}

/* Check the server's key: 0, or -1 with the session failed (HOSTKEY). */
int ssh_hostkey_check(struct ssh_sess *s)
{
	const char *key, *hash, *tname;
	char fp[96], b64[48];
	size_t keylen;
	int type, bits, r, ends_nl;
	LIBSSH2_KNOWNHOSTS *kh;

	key = libssh2_session_hostkey(s->ssh, &keylen, &type);
	hash = libssh2_hostkey_hash(s->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	if (key == NULL || hash == NULL) {
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "%s sent no usable host key", s->khname);
		return -1;
	}
	ssh_b64_encode_nopad((const unsigned char *)hash, 32, b64, sizeof(b64));
	bits = hostkey_bits(type, &tname);
	snprintf(fp, sizeof(fp), "%s key SHA256:%s", tname, b64);
	kh = libssh2_knownhost_init(s->ssh);
	if (kh == NULL) {
		ssh_sess_fail(s, LM_ERR_NOMEM, "out of memory");
		return -1;
	}
	if (hostkey_load(kh, s->known_hosts, &ends_nl) < 0 && errno != ENOENT) {
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot read known hosts file %s: %s",
			      s->known_hosts, strerror(errno));
		libssh2_knownhost_free(kh);
		return -1;
	}
	/* the name as OpenSSH writes it, and port -1: libssh2 would also try
	 * the bare host for a non-22 port, which OpenSSH does not */
	r = libssh2_knownhost_checkp(kh, s->khname, -1, key, keylen,
				     LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | bits,
				     NULL);
	switch (r) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		r = 0;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		ssh_sess_fail(s, LM_ERR_HOSTKEY,
			      "host key for %s has CHANGED (now %s), refusing to connect: someone "
			      "may be intercepting the connection; if the host was reinstalled, "
			      "remove the old key (ssh-keygen -R '%s' -f %s) and connect again",
			      s->khname, fp, s->khname, s->known_hosts);
		r = -1;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		if (!s->accept_new) {
			ssh_sess_fail(s, LM_ERR_HOSTKEY,
				      "host %s is not in %s (it offers %s): check the fingerprint, "
				      "then add it with --accept-new-host-key (or ssh to it once)",
				      s->khname, s->known_hosts, fp);
			r = -1;
		} else if (hostkey_append(s, kh, key, keylen, bits, ends_nl) < 0) {
			ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot add %s to %s: %s", s->khname,
				      s->known_hosts, strerror(errno));
			r = -1;
		} else {
			r = 0;
		}
		break;
	default:
		ssh_sess_fail(s, LM_ERR_HOSTKEY, "cannot check the host key of %s: %s", s->khname,
			      ssh_sess_errmsg(s));
		r = -1;
		break;
	}
	libssh2_knownhost_free(kh);
	return r;
}

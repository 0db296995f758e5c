/*
 * transport/ssh-keys: the user's private key files, as the ssh backend
 * reads them: which to try (those given with -i, then the ~/.ssh defaults
 * that exist) and what each is, without decrypting it (encrypted, RSA).
 * Also the base64 the keys and the host key fingerprints are written in.
 */
#include "ssh-int.h"

#include <fcntl.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64 of src without '=' padding, as OpenSSH prints fingerprints */
void ssh_b64_encode_nopad(const unsigned char *src, size_t len, char *dst, size_t cap)
{
	size_t i, o = 0;

	for (i = 0; i < len && o + 5 < cap; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)src[i + 1] << 8;
		if (i + 2 < len)
			v |= src[i + 2];
		dst[o++] = b64chars[(v >> 18) & 63];
		dst[o++] = b64chars[(v >> 12) & 63];
		if (i + 1 < len)
			dst[o++] = b64chars[(v >> 6) & 63];
		if (i + 2 < len)
			dst[o++] = b64chars[v & 63];
	}
	dst[o] = '\0';
}

/* Decode base64 (whitespace skipped); returns the length or -1. */
static long b64_decode(const char *src, size_t len, unsigned char *dst, size_t cap)
{
	uint32_t v = 0;
	int bits = 0;
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		const char *p;

		if (src[i] == '=' || src[i] == '\n' || src[i] == '\r' || src[i] == ' ')
			continue;
		p = strchr(b64chars, src[i]);
		if (p == NULL || src[i] == '\0')
			return -1;
		v = (v << 6) | (uint32_t)(p - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return (long)o;
			dst[o++] = (unsigned char)(v >> bits);
		}
	}
	return (long)o;
}

static int key_add(struct ssh_sess *s, const char *file)
{
	char **n;
	int i;

	for (i = 0; i < s->nids; i++)
		if (strcmp(s->ids[i], file) == 0)
			return 0;
	n = realloc(s->ids, sizeof(*n) * (size_t)(s->nids + 1));
	if (n == NULL)
		return -1;
	s->ids = n;
	if ((s->ids[s->nids] = strdup(file)) == NULL)
		return -1;
	s->nids++;
	return 0;
}

/*
 * What a private key file is, without decrypting it: 1 encrypted, 0 not,
 * -1 unreadable (errno). *rsa: an RSA key (libssh2 1.10 signs those with
 * SHA-1 only, which OpenSSH 8.8+ refuses).
 */
int ssh_key_inspect(const char *file, int *rsa)
{
	static const char ossh_begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
	char buf[16384], *p, *end;
	unsigned char bin[512];
	ssize_t n;
	long bl;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	*rsa = 0;
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	if (strstr(buf, "BEGIN RSA PRIVATE KEY") != NULL)
		*rsa = 1;
	if (strstr(buf, "Proc-Type: 4,ENCRYPTED") != NULL ||
	    strstr(buf, "BEGIN ENCRYPTED PRIVATE KEY") != NULL)
		return 1;
	p = strstr(buf, ossh_begin);
	if (p == NULL)
		return 0;
	p += sizeof(ossh_begin) - 1;
	end = strstr(p, "-----END");
	bl = b64_decode(p, end ? (size_t)(end - p) : strlen(p), bin, sizeof(bin));
	/* "openssh-key-v1\0", string ciphername, string kdfname, string kdf,
	 * uint32 nkeys, string publickey (string keytype ...) */
	if (bl > 19 && memcmp(bin, "openssh-key-v1", 15) == 0) {
		size_t off = 15, i;
		uint32_t len = 0;
		int encrypted = 0;

		for (i = 0; i < 3 && off + 4 <= (size_t)bl; i++) {
			len = (uint32_t)bin[off] << 24 | (uint32_t)bin[off + 1] << 16 |
			      (uint32_t)bin[off + 2] << 8 | bin[off + 3];
			if (i == 0)
				encrypted = !(len == 4 && off + 8 <= (size_t)bl &&
					      memcmp(bin + off + 4, "none", 4) == 0);
			off += 4 + len;
		}
		off += 4 + 4 + 4; /* nkeys, publickey length, keytype length */
		if (off + 7 <= (size_t)bl && memcmp(bin + off, "ssh-rsa", 7) == 0)
			*rsa = 1;
		return encrypted;
	}
	return 0;
}

char *ssh_home_path(const char *rel)
{
	const char *home = getenv("HOME");
	struct passwd *pw;
	char *p;

	if (home == NULL || *home == '\0') {
		pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	if (asprintf(&p, "%s/%s", home, rel) < 0)
		return NULL;
	return p;
}

/* The identity files to try into s->ids: o's, then those of the defaults
 * that exist. 0, or -1 (out of memory). */
int ssh_keys_collect(struct ssh_sess *s, const struct tr_opts *o)
{
	static const char *const defaults[] = { ".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa" };
	size_t i;
	int ok = 1;

	for (i = 0; ok && i < (size_t)o->nidentities; i++)
		ok = key_add(s, o->identities[i]) == 0;
	for (i = 0; ok && i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		char *p = ssh_home_path(defaults[i]);

		ok = p != NULL && (access(p, F_OK) != 0 || key_add(s, p) == 0);
		free(p);
	}
	return ok ? 0 : -1;
}

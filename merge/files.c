/*
 * merge/files: image files read on the host, not on QEMU's word (see
 * files.h).
 */
#include "files.h"

#include "../host/host.h"

#include <stdio.h>
#include <string.h>

/* ---- image headers ------------------------------------------------------------ */

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static int image_bad(char *why, size_t whylen, const char *what)
{
	snprintf(why, whylen, "its qcow2 header is malformed: %s", what);
	return -1;
}

int merge_image_parse(const void *buf, size_t len, struct merge_image *img, char *why,
		      size_t whylen)
{
	const unsigned char *p = buf;
	uint32_t version, hdr_len, bsize;
	uint64_t boff, incompat = 0;
	size_t off;

	memset(img, 0, sizeof(*img));
	if (len < 72 || be32(p) != QCOW2_MAGIC)
		return 0;
	version = be32(p + 4);
	if (version != 2 && version != 3)
		return image_bad(why, whylen, "unknown version");
	snprintf(img->format, sizeof(img->format), "qcow2");
	img->virtual_size = be64(p + 24);
	hdr_len = 72;
	if (version == 3) {
		if (len < 104)
			return image_bad(why, whylen, "version 3 header cut short");
		incompat = be64(p + 72);
		hdr_len = be32(p + 100);
		if (hdr_len < 104 || hdr_len > len)
			return image_bad(why, whylen, "header length out of range");
	}
	img->dirty = (incompat & 1) != 0;
	img->corrupt = (incompat & 2) != 0;
	boff = be64(p + 8);
	bsize = be32(p + 16);
	if (boff != 0) {
		if (bsize == 0 || bsize >= sizeof(img->backing))
			return image_bad(why, whylen, "backing name length out of range");
		if (boff > len || bsize > len - boff)
			return image_bad(why, whylen, "backing name beyond the first cluster");
		if (memchr(p + boff, '\0', bsize) != NULL)
			return image_bad(why, whylen, "backing name holds a NUL byte");
		memcpy(img->backing, p + boff, bsize);
		img->backing[bsize] = '\0';
		img->has_backing = 1;
	}
	/* header extensions: {type, length, data padded to 8}, type 0 ends them */
	for (off = hdr_len; off + 8 <= len;) {
		uint32_t type = be32(p + off), elen = be32(p + off + 4);
		size_t padded = ((size_t)elen + 7) & ~(size_t)7;

		if (type == 0)
			break;
		if (padded > len - off - 8)
			break; /* past what was read: no backing format known */
		if (type == QCOW2_EXT_BACKING_FORMAT && elen < sizeof(img->backing_format) &&
		    memchr(p + off + 8, '\0', elen) == NULL) {
			memcpy(img->backing_format, p + off + 8, elen);
			img->backing_format[elen] = '\0';
		}
		off += 8 + padded;
	}
	return 0;
}

/* Copy path into out with "//" and "/./" collapsed; "a/b/../c" is left as it is. */
static void image_tidy(const char *path, char *out, size_t outlen)
{
	size_t k = 0;
	const char *s = path;

	while (*s && k + 1 < outlen) {
		if (s[0] == '/' && s[1] == '/') {
			s++;
			continue;
		}
		if (s[0] == '/' && s[1] == '.' && s[2] == '/') {
			s += 2;
			continue;
		}
		out[k++] = *s++;
	}
	out[k] = '\0';
}

int merge_path_same(const char *a, const char *b)
{
	char ta[4096], tb[4096];

	if (strcmp(a, b) == 0)
		return 1;
	image_tidy(a, ta, sizeof(ta));
	image_tidy(b, tb, sizeof(tb));
	return strcmp(ta, tb) == 0;
}

int merge_image_backing_is(const struct merge_image *img, const char *image_path,
			   const char *expect)
{
	char joined[4096 + 1024], a[sizeof(joined)], b[4096];
	const char *slash;

	if (expect == NULL)
		return !img->has_backing;
	if (!img->has_backing)
		return 0;
	if (strcmp(img->backing, expect) == 0)
		return 1;
	if (img->backing[0] == '/' || (slash = strrchr(image_path, '/')) == NULL) {
		snprintf(joined, sizeof(joined), "%s", img->backing);
	} else {
		snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - image_path), image_path,
			 img->backing);
	}
	image_tidy(joined, a, sizeof(a));
	image_tidy(expect, b, sizeof(b));
	return strcmp(a, b) == 0;
}

int merge_image_check(const struct host_file *f, const char *path, const char *format,
		      const char *expect_backing, char *why, size_t whylen)
{
	struct merge_image img;

	switch (f->kind) {
	case HOST_FILE_REGULAR:
	case HOST_FILE_BLOCK:
		break;
	case HOST_FILE_NONE:
		snprintf(why, whylen, "it does not exist");
		return -1;
	case HOST_FILE_SYMLINK:
		snprintf(why, whylen, "it is a symbolic link");
		return -1;
	default:
		snprintf(why, whylen, "it is not a regular file or a block device");
		return -1;
	}
	if (format == NULL || strcmp(format, "qcow2") != 0) {
		snprintf(why, whylen, "its format (%s) is not one livemerge can check",
			 format ? format : "unknown");
		return -1;
	}
	if (merge_image_parse(f->head, f->len, &img, why, whylen) < 0)
		return -1;
	if (strcmp(img.format, "qcow2") != 0) {
		snprintf(why, whylen, "it holds no qcow2 header");
		return -1;
	}
	if (!merge_image_backing_is(&img, path, expect_backing)) {
		if (expect_backing == NULL)
			snprintf(why, whylen, "its header names backing file %s, expected none",
				 img.backing);
		else if (!img.has_backing)
			snprintf(why, whylen, "its header names no backing file, expected %s",
				 expect_backing);
		else
			snprintf(why, whylen, "its header names backing file %s, expected %s",
				 img.backing, expect_backing);
		return -1;
	}
	return 0;
}

int merge_image_verify(struct host *h, const char *path, const char *format,
		       const char *expect_backing, char *why, size_t whylen)
{
	static unsigned char head[MERGE_IMAGE_HEAD];
	struct host_file f = { HOST_FILE_NONE, head, 0 };
	struct lm_error e;
	long n = h != NULL ? host_look_wait(h, path, head, sizeof(head), &f.kind, &e) : -1;

	if (h == NULL)
		lm_error_set(&e, LM_ERR_USAGE, "no host to read it on");
	if (n < 0) {
		snprintf(why, whylen, "%s", e.msg);
		return -1;
	}
	f.len = (size_t)n;
	return merge_image_check(&f, path, format, expect_backing, why, whylen);
}

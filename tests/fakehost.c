/*
 * tests/fakehost: a VM host whose files are a table (see fakehost.h).
 */
#include "fakehost.h"

#include <stdlib.h>
#include <string.h>

#include "../host/host-int.h"

#define FAKE_FILES 16

struct fakehost {
	struct {
		char path[256];
		enum host_file_kind kind;
		unsigned char head[65536];
		size_t len;
		int removed;
	} f[FAKE_FILES];
	int n;
	enum lm_err_code fail_looks;
	int looks, removes;
};

static int fake_find(const struct fakehost *fh, const char *path)
{
	int i;

	for (i = 0; i < fh->n; i++)
		if (strcmp(fh->f[i].path, path) == 0)
			return i;
	return -1;
}

static void fake_start(struct host_op *op)
{
	struct fakehost *fh = op->h->impl_data;
	int i = op->path != NULL ? fake_find(fh, op->path) : -1;

	switch (op->type) {
	case HOP_LOOK:
		fh->looks++;
		if (fh->fail_looks != LM_OK)
			return host_op_failf(op, fh->fail_looks, "cannot check %s: no file access",
					     op->path);
		op->kind = i >= 0 && !fh->f[i].removed ? fh->f[i].kind : HOST_FILE_NONE;
		if (op->kind == HOST_FILE_REGULAR || op->kind == HOST_FILE_BLOCK)
			(void)host_op_keep(op, fh->f[i].head,
					   fh->f[i].len < op->head ? fh->f[i].len : op->head,
					   op->head);
		return host_op_finish(op);
	case HOP_REMOVE:
		fh->removes++;
		if (i < 0) {
			if (fh->n < FAKE_FILES) {
				i = fh->n++;
				memset(&fh->f[i], 0, sizeof(fh->f[i]));
				strncpy(fh->f[i].path, op->path, sizeof(fh->f[i].path) - 1);
			}
		}
		if (i >= 0)
			fh->f[i].removed = 1;
		return host_op_finish(op);
	default:
		op->status = 0;
		return host_op_finish(op);
	}
}

static void fake_stop(struct host_op *op)
{
	(void)op;
}

static void fake_free(struct host *h)
{
	free(h->impl_data);
	free(h->where);
}

static const struct host_impl fake_impl = {
	.start = fake_start,
	.stop = fake_stop,
	.free = fake_free,
};

struct host *fakehost_new(struct ev_loop *loop, struct fakehost **fh)
{
	struct tr_opts o = { .loop = loop };
	struct lm_error e;
	struct host *h = host_new(NULL, &o, &e);

	if (h == NULL)
		return NULL;
	h->impl = &fake_impl;
	h->impl_data = *fh = calloc(1, sizeof(**fh));
	return h;
}

void fakehost_file(struct fakehost *fh, const char *path, enum host_file_kind kind,
		   const void *head, size_t len)
{
	int i = fake_find(fh, path);

	if (i < 0) {
		if (fh->n == FAKE_FILES)
			abort();
		i = fh->n++;
	}
	memset(&fh->f[i], 0, sizeof(fh->f[i]));
	strncpy(fh->f[i].path, path, sizeof(fh->f[i].path) - 1);
	fh->f[i].kind = kind;
	if (len > sizeof(fh->f[i].head))
		len = sizeof(fh->f[i].head);
	if (head != NULL)
		memcpy(fh->f[i].head, head, len);
	fh->f[i].len = head != NULL ? len : 0;
}

/* A qcow2 v3 header naming backing at offset 512, as qemu-img writes it. */
void fakehost_qcow2(struct fakehost *fh, const char *path, const char *backing, const char *raw)
{
	unsigned char p[1024] = { 0 };

	if (raw != NULL)
		return fakehost_file(fh, path, HOST_FILE_REGULAR, raw, strlen(raw));
	memcpy(p, "QFI\xfb\0\0\0\3", 8);
	p[103] = 104; /* header length */
	if (backing != NULL) {
		size_t n = strlen(backing);

		p[14] = 2; /* backing name at 512 */
		p[19] = (unsigned char)n;
		memcpy(p + 512, backing, n);
	}
	fakehost_file(fh, path, HOST_FILE_REGULAR, p, sizeof(p));
}

void fakehost_set_where(struct host *h, const char *where)
{
	free(h->where);
	h->where = strdup(where);
}

void fakehost_fail_looks(struct fakehost *fh, enum lm_err_code code)
{
	fh->fail_looks = code;
}

int fakehost_looks(const struct fakehost *fh)
{
	return fh->looks;
}

int fakehost_removes(const struct fakehost *fh)
{
	return fh->removes;
}

int fakehost_removed(const struct fakehost *fh, const char *path)
{
	int i = fake_find(fh, path);

	return i >= 0 && fh->f[i].removed;
}

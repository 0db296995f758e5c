/*
 * merge/files: the VM's image files as the host has them, read without
 * trusting QEMU.
 *
 * QEMU's answers are untrusted input: a guest that escaped into QEMU owns
 * them. Before livemerge deletes a layer, or believes that a merge's result
 * is on disk, it reads the image itself: what the path is (no symlink is
 * followed), the format its header declares and the backing file named in
 * that header. The parsing is pure (bytes in, header out) so it can be
 * tested and fuzzed; the files are read on the VM's host (host/host.h), so
 * an ssh:// VM's files are read where they are.
 */
#ifndef MERGE_FILES_H
#define MERGE_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "../common/lm-error.h"
#include "../host/host.h"

/* How many bytes of an image's start merge_image_parse wants to see. */
#define MERGE_IMAGE_HEAD 65536

/* What an image's own header says. */
struct merge_image {
	char format[16];    /* "qcow2", or "" when the bytes are no known image */
	int has_backing;    /* the header names a backing file */
	char backing[1024]; /* as written (may be relative to the image's directory) */
	char backing_format[16];
	int dirty, corrupt; /* qcow2 incompatible bits */
	uint64_t virtual_size;
};

/*
 * Where a qcow2 image ends (merge/image-end.c): the offset just past its
 * last cluster in use, data or metadata, found from its refcount structures
 * in three reads: the header, the refcount table, the last refcount block.
 * All pure, over the bytes read.
 */
struct merge_qcow2_refs {
	uint32_t cluster_bits;  /* 9..21 */
	uint32_t refcount_bits; /* 1..64 */
	uint64_t table_offset;  /* of the refcount table, cluster-aligned */
	uint64_t table_bytes;   /* its length */
};
/* From the header's first len bytes: 0, or -1 when they are no qcow2 or a
 * field is out of range. */
int merge_qcow2_refs(const void *head, size_t len, struct merge_qcow2_refs *r);
/* In the first len bytes of the refcount table: the index of the last
 * refcount block that exists and its offset; -1 if none or out of range. */
int64_t merge_qcow2_last_block(const struct merge_qcow2_refs *r, const void *table, size_t len,
			       uint64_t *block_offset);
/* Given that block (index block_index, len bytes, at least a cluster): the
 * image's end; -1 if no cluster of it is in use. */
int64_t merge_qcow2_end(const struct merge_qcow2_refs *r, int64_t block_index, const void *block,
			size_t len);

/* Parse the first len bytes of an image. 0, or -1 with why (a line) when
 * the bytes claim a format but break it (a backing name outside them, too
 * long, not text). Unknown bytes are 0 with format "". Pure. */
int merge_image_parse(const void *buf, size_t len, struct merge_image *img, char *why,
		      size_t whylen);

/* 1 if backing, as written in the header of the image at image_path,
 * names the file expect (a relative name is taken relative to the image's
 * directory, as QEMU does), else 0. expect NULL: 1 only if there is no
 * backing. Pure. */
int merge_image_backing_is(const struct merge_image *img, const char *image_path,
			   const char *expect);

/* 1 if a and b name the same path once "//" and "/./" are collapsed. Pure. */
int merge_path_same(const char *a, const char *b);

/*
 * Check an image as the host has it (f, from host_look with at least
 * MERGE_IMAGE_HEAD bytes), without asking QEMU: that it is a regular file
 * or a block device (a symlink is never followed), that its header is
 * format's (only qcow2 can be checked: any other format fails), and that
 * its header names expect_backing as its backing file (NULL: none). 0 when
 * all hold; -1 with why, a line saying which check failed. Pure.
 */
int merge_image_check(const struct host_file *f, const char *path, const char *format,
		      const char *expect_backing, char *why, size_t whylen);

/* The same, reading the image on host h first (runs h's loop until it is
 * read: for code that waits anyway, as recovery does). */
int merge_image_verify(struct host *h, const char *path, const char *format,
		       const char *expect_backing, char *why, size_t whylen);

#endif

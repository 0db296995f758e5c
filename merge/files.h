/*
 * merge/files: the VM's image files as the host has them, read without
 * trusting QEMU.
 *
 * QEMU's answers are untrusted input: a guest that escaped into QEMU owns
 * them. Before livemerge deletes a layer, or believes that a merge's result
 * is on disk, it reads the image itself: what the path is (no symlink is
 * followed), the format its header declares and the backing file named in
 * that header. The parsing is pure (bytes in, header out) so it can be
 * tested and fuzzed; the file access goes through struct merge_fileops, so
 * an ssh:// VM's files are read on its host.
 */
#ifndef MERGE_FILES_H
#define MERGE_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "../common/lm-error.h"

/* What a path is on the VM's host, told without following a final symlink. */
enum merge_file_kind {
	MERGE_FILE_NONE,    /* no such file */
	MERGE_FILE_REGULAR,
	MERGE_FILE_BLOCK,   /* a block device */
	MERGE_FILE_SYMLINK,
	MERGE_FILE_OTHER,   /* a directory, socket, fifo, character device */
};

/* How the engine reaches the VM's image files (default: this host's,
 * merge_files_local() in files.h). */
struct merge_fileops {
	/* 1 exists, 0 does not, -1 cannot tell (err filled; code UNSUPPORTED when
	 * the host offers no means to look: the engine then asks QEMU) */
	int (*exists)(const char *path, void *arg, struct lm_error *err);
	/* 0 removed (or already gone), -1 failed (err filled) */
	int (*remove)(const char *path, void *arg, struct lm_error *err);
	/* What path is (*kind, never following a final symlink) and, when it is a
	 * regular file or a block device, up to len of its first bytes into buf:
	 * the count read (0 for other kinds), or -1 (err filled). NULL: the
	 * engine cannot look into files there, and deletes nothing. */
	long (*read_head)(const char *path, void *buf, size_t len, enum merge_file_kind *kind,
			  void *arg, struct lm_error *err);
	void *arg;
	const char *where; /* the files' host, for messages (NULL: this host) */
};

/* This host's files: lstat, unlink, open(O_NOFOLLOW) + pread. Static; never NULL. */
const struct merge_fileops *merge_files_local(void);

/* The image files of a VM on host (host/host.h): NULL for this machine
 * (the engine's default), else ops reading them there. hf is the
 * caller's and must outlive the returned ops. */
struct host;
struct merge_host_files {
	struct merge_fileops ops;
	struct host *h;
};
const struct merge_fileops *merge_files_on_host(struct merge_host_files *hf, struct host *h);

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

/*
 * Read the image at path through files (NULL: this host) and check, without
 * asking QEMU, that it is a regular file or a block device (a symlink is
 * never followed), that its header is format's (only qcow2 can be checked:
 * any other format fails), and that its header names expect_backing as its
 * backing file (NULL: none). 0 when all hold; -1 with why, a line saying
 * which check failed.
 */
int merge_image_verify(const struct merge_fileops *files, const char *path, const char *format,
		       const char *expect_backing, char *why, size_t whylen);

#endif

/*
 * tests/fakehost: a VM host whose files are a table the test fills, for
 * driving the engine without real files where the recorded QEMU replies
 * name paths that do not exist here. Built on host/host-int.h (a kind of
 * host of its own), so the engine runs its real asynchronous paths.
 */
#ifndef LM_TESTS_FAKEHOST_H
#define LM_TESTS_FAKEHOST_H

#include <ev.h>

#include "../host/host.h"

struct fakehost;

/* A host on loop whose files are *fh's table (empty: every path missing). */
struct host *fakehost_new(struct ev_loop *loop, struct fakehost **fh);
/* path is kind, its first bytes head[0..len) (copied). Again: replaced. */
void fakehost_file(struct fakehost *fh, const char *path, enum host_file_kind kind,
		   const void *head, size_t len);
/* A qcow2 header at path naming backing (NULL: none), or, with raw set,
 * those bytes instead. */
void fakehost_qcow2(struct fakehost *fh, const char *path, const char *backing, const char *raw);
/* Where h is, for messages ("HOST"; default: this machine). */
void fakehost_set_where(struct host *h, const char *where);
/* From now on every look fails with code (0: looks work again). */
void fakehost_fail_looks(struct fakehost *fh, enum lm_err_code code);
/* How many looks and removals were asked; whether path was removed. */
int fakehost_looks(const struct fakehost *fh);
int fakehost_removes(const struct fakehost *fh);
int fakehost_removed(const struct fakehost *fh, const char *path);

#endif

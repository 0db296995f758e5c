/*
 * host/host-size: a block device's size now, as the host's kernel has it.
 *
 * QEMU keeps the size a device had when it opened it (7.2 and 10.0 alike),
 * so a volume grown underneath (losetup -c, lvextend) is only seen by
 * asking the host: here by lseek to its end; over ssh by the size the
 * kernel publishes under /sys/class/block (in 512-byte sectors), read by
 * the host's shell. Needs nothing but sh, readlink and cat there.
 */
#include "host-int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct size_wait {
	int done;
	int64_t size;
	struct lm_error err;
};

static void size_run_cb(void *arg, const struct host_run_result *r, const struct lm_error *err)
{
	struct size_wait *w = arg;
	char *end;
	unsigned long long sectors;

	w->done = 1;
	if (err != NULL) {
		w->err = *err;
		return;
	}
	errno = 0;
	sectors = strtoull(r->out, &end, 10);
	if (r->status != 0 || end == r->out || (*end != '\n' && *end != '\0') || errno != 0 ||
	    r->out[0] < '0' || r->out[0] > '9' || sectors > (unsigned long long)INT64_MAX / 512) {
		lm_error_set(&w->err, LM_ERR_IO, "not a block device, or its size cannot be read");
		return;
	}
	w->size = (int64_t)sectors * 512;
}

static int64_t local_size(const char *path, struct lm_error *err)
{
	struct stat st;
	off_t end;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		lm_error_set(err, LM_ERR_IO, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode) || (end = lseek(fd, 0, SEEK_END)) < 0) {
		close(fd);
		lm_error_set(err, LM_ERR_IO, "not a block device, or its size cannot be read");
		return -1;
	}
	close(fd);
	return (int64_t)end;
}

int64_t host_device_size_wait(struct host *h, const char *path, struct lm_error *err)
{
	static const char script[] = "n=$(readlink -f -- \"$1\") && [ -b \"$n\" ] && "
				     "exec cat \"/sys/class/block/${n##*/}/size\"";
	const char *argv[] = { "sh", "-c", script, "sh", path, NULL };
	struct size_wait w = { .size = -1 };
	struct host_op *op;

	if (h->impl == &host_local_impl)
		return local_size(path, err);
	op = host_run(h, argv, 30, size_run_cb, &w);
	if (op == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	while (!w.done)
		ev_run(h->loop, EVRUN_ONCE);
	if (w.size < 0 && err != NULL)
		*err = w.err;
	return w.size;
}

/*
 * writer.c: the test guest's data writer (built static on the host, run by the guest's /init).
 *
 * Guest mode (no arguments): reads its settings from /proc/cmdline
 *   lm.disks=vda,vdb   disks to write a log to (a name matches /sys/block/X/serial first,
 *                      then /dev/NAME), each in its own process
 *   lm.rate=100        blocks per second per disk
 *   lm.batch=5         blocks written between two fdatasync + ACK
 *   lm.region=16       ring size in MiB (capped by the disk size)
 *   lm.wsize=1         blocks per write (contiguous blocks of a batch written at once)
 *   lm.fsdisk=vdc      a disk whose filesystem /init mounted at /mnt: append a record to
 *                      /mnt/lm.log with fsync lm.fsrate (default 10) times per second
 * and writes, for each disk, 4 KiB blocks in a ring (format in lmblock.h) with O_DIRECT,
 * fdatasync after each batch, then one line "ACK <disk> <seq>" (the last seq made durable)
 * to the virtio-serial port named org.livemerge.ack.0 (the serial console if there is none).
 * The filesystem appender reports "FSACK <disk> <n>" the same way; a frozen filesystem stops it.
 * Errors are reported as "ERR <disk> <seq> <what>" and retried a second later: the writer runs
 * until the guest is powered off. At start a disk's ring is scanned, and the log goes on after
 * the newest valid block found there, so a rebooted guest never reuses a sequence number.
 *
 * Host mode, to make test data for the checker:
 *   writer --file PATH --disk NAME --ring N --seqs FIRST-LAST
 * writes the blocks of seqs FIRST..LAST (in order) of disk NAME with ring N into PATH.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmblock.h"

#define ACK_PORT_NAME "org.livemerge.ack.0"
#define MAX_DISKS 16
#define FS_RECORD 21 /* "%020llu\n" */

static int ack_fd = -1;

static void say(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	/* One write per line: several processes share the port. */
	if (ack_fd >= 0 && write(ack_fd, line, n) < 0)
		fprintf(stderr, "writer: ack port: %s\n", strerror(errno));
	if (ack_fd < 0 || (strncmp(line, "ACK ", 4) != 0 && strncmp(line, "FSACK ", 6) != 0))
		fputs(line, stderr);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (time_t)t) * 1e9)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return 0;
}

/* The value of "key=" on the kernel command line, or def. */
static const char *cmdline_get(const char *cmdline, const char *key, const char *def)
{
	static char value[8][256];
	static int slot;
	size_t klen = strlen(key);
	const char *p = cmdline;

	while (*p) {
		while (*p == ' ')
			p++;
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			char *v = value[slot++ % 8];
			size_t n = strcspn(p + klen + 1, " \n");
			if (n >= sizeof(value[0]))
				n = sizeof(value[0]) - 1;
			memcpy(v, p + klen + 1, n);
			v[n] = 0;
			return v;
		}
		p += strcspn(p, " ");
	}
	return def;
}

/* /dev path of the disk named name: a block device whose serial is name, else /dev/name. */
static void disk_path(const char *name, char *path, size_t size)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	char file[300], serial[64];

	snprintf(path, size, "/dev/%s", name);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "/sys/block/%s/serial", e->d_name);
		if (read_small(file, serial, sizeof(serial)) == 0 && strcmp(serial, name) == 0) {
			snprintf(path, size, "/dev/%s", e->d_name);
			break;
		}
	}
	closedir(d);
}

static int find_ack_port(char *path, size_t size)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	char file[300], name[64];
	int found = -1;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "/sys/class/virtio-ports/%s/name", e->d_name);
		if (read_small(file, name, sizeof(name)) == 0 && strcmp(name, ACK_PORT_NAME) == 0) {
			snprintf(path, size, "/dev/%s", e->d_name);
			found = 0;
			break;
		}
	}
	closedir(d);
	return found;
}

static int valid_block(const unsigned char *b, const char *disk, uint64_t index, struct lmb_header *h)
{
	memcpy(h, b, sizeof(*h));
	return h->magic == LMB_MAGIC && h->version == LMB_VERSION &&
	       strncmp(h->disk, disk, LMB_NAME_MAX) == 0 && h->ring_blocks > 0 &&
	       h->index == index && h->seq % h->ring_blocks == index && h->crc == lmb_block_crc(b);
}

/* Scan the ring: the newest valid seq (0 if none); *ring is set to the ring size found there. */
static uint64_t scan_ring(int fd, const char *disk, uint64_t *ring)
{
	enum { CHUNK = 256 };
	unsigned char *buf;
	uint64_t max = 0, found_ring = 0;

	if (posix_memalign((void **)&buf, LMB_SIZE, CHUNK * LMB_SIZE))
		return 0;
	for (uint64_t b = 0; b < *ring; b += CHUNK) {
		uint64_t n = *ring - b < CHUNK ? *ring - b : CHUNK;
		ssize_t got = pread(fd, buf, n * LMB_SIZE, b * LMB_SIZE);
		if (got < 0) {
			say("ERR %s 0 scan read at block %llu: %s\n", disk, (unsigned long long)b, strerror(errno));
			break;
		}
		for (uint64_t i = 0; i < (uint64_t)got / LMB_SIZE; i++) {
			struct lmb_header h;
			if (valid_block(buf + i * LMB_SIZE, disk, b + i, &h)) {
				if (h.seq > max)
					max = h.seq;
				found_ring = h.ring_blocks;
			}
		}
	}
	free(buf);
	if (found_ring && found_ring != *ring) {
		say("LOG %s: keeping the ring of %llu blocks found on the disk\n", disk,
		    (unsigned long long)found_ring);
		*ring = found_ring;
	}
	return max;
}

static void disk_worker(const char *disk, double rate, unsigned batch, unsigned wsize,
			uint64_t region)
{
	char path[300];
	unsigned char *buf;
	uint64_t ring, seq, size = 0;
	double next;
	int fd = -1, direct = 1;

	disk_path(disk, path, sizeof(path));
	for (int tries = 0; fd < 0; tries++) {
		fd = open(path, O_RDWR | O_DIRECT);
		if (fd < 0 && errno == EINVAL) {
			direct = 0;
			fd = open(path, O_RDWR);
		}
		if (fd < 0) {
			if (tries % 10 == 0)
				say("ERR %s 0 open %s: %s\n", disk, path, strerror(errno));
			usleep(100000);
		}
	}
	if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
		struct stat st;
		size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	}
	ring = (size < region ? size : region) / LMB_SIZE;
	if (ring < 2) {
		say("ERR %s 0 disk %s too small (%llu bytes)\n", disk, path, (unsigned long long)size);
		for (;;)
			pause();
	}
	if (posix_memalign((void **)&buf, LMB_SIZE, (size_t)batch * LMB_SIZE))
		abort();
	seq = scan_ring(fd, disk, &ring) + 1;
	say("LOG %s: %s ring %llu blocks, from seq %llu, %.0f blocks/s, batch %u%s\n", disk, path,
	    (unsigned long long)ring, (unsigned long long)seq, rate, batch, direct ? ", O_DIRECT" : "");
	next = now();
	for (;;) {
		uint64_t first = seq;
		int failed = 0;

		for (unsigned i = 0; i < batch && !failed;) {
			/* up to wsize blocks in one write, while they are contiguous on the disk */
			unsigned k = 0;
			do {
				lmb_fill(buf + (size_t)(i + k) * LMB_SIZE, disk, seq + k, ring);
				k++;
			} while (k < wsize && i + k < batch && (seq + k) % ring != 0);
			ssize_t n = pwrite(fd, buf + (size_t)i * LMB_SIZE, (size_t)k * LMB_SIZE,
					   (seq % ring) * LMB_SIZE);
			if (n != (ssize_t)k * LMB_SIZE) {
				say("ERR %s %llu write: %s\n", disk, (unsigned long long)seq,
				    n < 0 ? strerror(errno) : "short write");
				failed = 1;
			}
			i += k;
			seq += k;
		}
		if (!failed && fdatasync(fd) < 0) {
			say("ERR %s %llu fdatasync: %s\n", disk, (unsigned long long)(seq - 1), strerror(errno));
			failed = 1;
		}
		if (failed) {
			/* Nothing of this batch is acknowledged: write it all again. */
			seq = first;
			sleep(1);
			next = now();
			continue;
		}
		say("ACK %s %llu\n", disk, (unsigned long long)(seq - 1));
		next += batch / rate;
		if (next < now() - 1.0)
			next = now(); /* fell behind (e.g. the VM was paused): no burst to catch up */
		sleep_until(next);
	}
}

static void fs_worker(const char *disk, double rate)
{
	const char *path = "/mnt/lm.log";
	char rec[FS_RECORD + 1];
	struct stat st;
	uint64_t n;
	double next;
	int fd;

	while ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644)) < 0) {
		say("ERR %s 0 open %s: %s\n", disk, path, strerror(errno));
		sleep(1);
	}
	n = fstat(fd, &st) == 0 ? (uint64_t)st.st_size / FS_RECORD : 0;
	if (ftruncate(fd, n * FS_RECORD) < 0) /* drop a partial record */
		say("ERR %s %llu ftruncate: %s\n", disk, (unsigned long long)n, strerror(errno));
	say("LOG %s: appending to %s from record %llu, %.0f/s\n", disk, path,
	    (unsigned long long)n + 1, rate);
	next = now();
	for (;;) {
		n++;
		snprintf(rec, sizeof(rec), "%020llu\n", (unsigned long long)n);
		if (write(fd, rec, FS_RECORD) != FS_RECORD || fsync(fd) < 0) {
			say("ERR %s %llu append: %s\n", disk, (unsigned long long)n, strerror(errno));
			sleep(1);
			n = fstat(fd, &st) == 0 ? (uint64_t)st.st_size / FS_RECORD : n - 1;
			continue;
		}
		say("FSACK %s %llu\n", disk, (unsigned long long)n);
		next += 1.0 / rate;
		if (next < now() - 1.0)
			next = now();
		sleep_until(next);
	}
}

static int host_mode(int argc, char **argv)
{
	const char *file = NULL, *disk = NULL;
	unsigned long long ring = 0, first = 0, last = 0;
	unsigned char block[LMB_SIZE];
	int fd;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--file"))
			file = argv[i + 1];
		else if (!strcmp(argv[i], "--disk"))
			disk = argv[i + 1];
		else if (!strcmp(argv[i], "--ring"))
			ring = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seqs")) {
			if (sscanf(argv[i + 1], "%llu-%llu", &first, &last) != 2)
				first = last = 0;
		} else
			file = NULL, i = argc;
	}
	if (!file || !disk || strlen(disk) >= LMB_NAME_MAX || ring < 2 || first < 1 || last < first) {
		fprintf(stderr, "usage: writer --file PATH --disk NAME --ring N --seqs FIRST-LAST\n");
		return 2;
	}
	fd = open(file, O_RDWR | O_CREAT, 0644);
	if (fd < 0) {
		perror(file);
		return 1;
	}
	for (unsigned long long s = first; s <= last; s++) {
		lmb_fill(block, disk, s, ring);
		if (pwrite(fd, block, LMB_SIZE, (s % ring) * LMB_SIZE) != LMB_SIZE) {
			perror(file);
			return 1;
		}
	}
	return close(fd) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	char cmdline[4096], port[300], list[256];
	const char *disks[MAX_DISKS], *fsdisk;
	pid_t pids[MAX_DISKS + 1];
	double rate, fsrate;
	unsigned batch, wsize, ndisks = 0;
	uint64_t region;

	if (argc > 1)
		return host_mode(argc, argv);

	if (read_small("/proc/cmdline", cmdline, sizeof(cmdline)) < 0) {
		perror("writer: /proc/cmdline");
		return 1;
	}
	rate = atof(cmdline_get(cmdline, "lm.rate", "100"));
	if (rate <= 0)
		rate = 100;
	batch = (unsigned)atoi(cmdline_get(cmdline, "lm.batch", "0"));
	if (batch == 0)
		batch = rate >= 40 ? (unsigned)(rate / 20) : 1;
	if (batch > 256)
		batch = 256;
	region = (uint64_t)atoll(cmdline_get(cmdline, "lm.region", "16")) << 20;
	wsize = (unsigned)atoi(cmdline_get(cmdline, "lm.wsize", "1"));
	if (wsize == 0)
		wsize = 1;
	fsdisk = cmdline_get(cmdline, "lm.fsdisk", NULL);
	fsrate = atof(cmdline_get(cmdline, "lm.fsrate", "10"));
	if (fsrate <= 0)
		fsrate = 10;
	snprintf(list, sizeof(list), "%s", cmdline_get(cmdline, "lm.disks", ""));
	for (char *save, *tok = strtok_r(list, ",", &save); tok && ndisks < MAX_DISKS;
	     tok = strtok_r(NULL, ",", &save))
		if (strlen(tok) < LMB_NAME_MAX)
			disks[ndisks++] = tok;

	if (find_ack_port(port, sizeof(port)) == 0)
		ack_fd = open(port, O_WRONLY | O_CLOEXEC);
	if (ack_fd < 0)
		ack_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);

	for (unsigned i = 0; i <= ndisks; i++) {
		if (i == ndisks && !fsdisk)
			break;
		pids[i] = fork();
		if (pids[i] == 0) {
			if (i < ndisks)
				disk_worker(disks[i], rate, batch, wsize, region);
			else
				fs_worker(fsdisk, fsrate);
			_exit(1);
		}
	}
	/* Keep every worker alive until power-off. */
	for (;;) {
		int status;
		pid_t pid = wait(&status);
		if (pid < 0) {
			if (errno == ECHILD)
				pause();
			continue;
		}
		for (unsigned i = 0; i <= ndisks; i++) {
			if (pids[i] != pid || (i == ndisks && !fsdisk))
				continue;
			say("ERR %s 0 worker exited (status %d), restarting\n", i < ndisks ? disks[i] : fsdisk,
			    status);
			sleep(1);
			pids[i] = fork();
			if (pids[i] == 0) {
				if (i < ndisks)
					disk_worker(disks[i], rate, batch, wsize, region);
				else
					fs_worker(fsdisk, fsrate);
				_exit(1);
			}
		}
	}
}

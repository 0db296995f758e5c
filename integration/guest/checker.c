/*
 * checker.c: host-side proof that a disk holds the guest writer's log intact (format in
 * lmblock.h).
 *
 * usage: checker [-v] [-n RING_BLOCKS] FILE DISK ACKED
 *   FILE    the disk's raw contents (a raw image, qemu-img convert output, /dev/nbdX)
 *   DISK    the writer's name for the disk (vda)
 *   ACKED   the last sequence number the guest acknowledged for DISK (0: none)
 *   -n      the ring size in blocks (default: read from the first valid block)
 *   -v      one line per bad block on stderr
 *
 * Every block of the ring is classified:
 *   empty      all zeroes (never written)
 *   valid      magic, version, crc, payload, disk name, index and offset all right
 *   torn       anything else that is not zeroes: a crc or payload mismatch, garbage
 *   misplaced  a sound block (crc right) of another disk, index or offset, or another ring
 * Then each acknowledged seq s in (ACKED - RING, ACKED] must be in its block s % RING with a
 * seq >= s: a block holding an older seq is stale, an empty one is missing (torn or misplaced
 * blocks are counted once, as such). Newer seqs than ACKED are fine (in flight when the ACK
 * was read). Prints one summary line on stdout:
 *   disk vda: acked 1234, checked 4096 blocks, 0 torn, 0 stale, 0 missing, 0 misplaced, seqs 1..1234 checked
 * where the last field names the acknowledged seqs checked ("seqs none checked" when ACKED is
 * 0): with exit status 0, each of them is proven on the disk.
 * Exit status: 0 when all four counts are 0, 1 when any is not, 2 on a usage or I/O error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmblock.h"

enum kind { EMPTY, VALID, TORN, MISPLACED };

static const char *kind_name[] = {"empty", "valid", "torn", "misplaced"};

static int all_zero(const unsigned char *b)
{
	for (size_t i = 0; i < LMB_SIZE; i++)
		if (b[i])
			return 0;
	return 1;
}

static enum kind classify(const unsigned char *b, const char *disk, uint64_t index, uint64_t ring,
			  uint64_t *seq, const char **why)
{
	unsigned char expect[LMB_SIZE];
	struct lmb_header h;

	*why = "";
	if (all_zero(b))
		return EMPTY;
	memcpy(&h, b, sizeof(h));
	if (h.magic != LMB_MAGIC) {
		*why = "no magic";
		return TORN;
	}
	if (h.crc != lmb_block_crc(b)) {
		*why = "crc mismatch";
		return TORN;
	}
	if (h.version != LMB_VERSION) {
		*why = "unknown version";
		return TORN;
	}
	if (strncmp(h.disk, disk, LMB_NAME_MAX) != 0) {
		*why = "another disk's block";
		return MISPLACED;
	}
	if (h.ring_blocks != ring) {
		*why = "another ring size";
		return MISPLACED;
	}
	if (h.index != index || h.offset != index * LMB_SIZE || h.seq % ring != index) {
		*why = "wrong index, offset or seq for this place";
		return MISPLACED;
	}
	/* A sound crc over the wrong payload would be a writer bug; check it all the same. */
	memcpy(expect, b, sizeof(h));
	lmb_payload(expect, h.disk, h.seq);
	if (memcmp(expect + sizeof(h), b + sizeof(h), LMB_SIZE - sizeof(h)) != 0) {
		*why = "payload mismatch";
		return TORN;
	}
	*seq = h.seq;
	return VALID;
}

/* The ring size recorded in the first sound block of the disk, or 0. */
static uint64_t find_ring(int fd, uint64_t max_blocks)
{
	unsigned char b[LMB_SIZE];
	struct lmb_header h;

	for (uint64_t i = 0; i < max_blocks; i++) {
		if (pread(fd, b, LMB_SIZE, i * LMB_SIZE) != LMB_SIZE)
			break;
		memcpy(&h, b, sizeof(h));
		if (h.magic == LMB_MAGIC && h.crc == lmb_block_crc(b) && h.ring_blocks >= 2)
			return h.ring_blocks;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t ring = 0, acked, torn = 0, stale = 0, missing = 0, misplaced = 0, newer = 0, first;
	unsigned char *data;
	enum kind *kinds;
	uint64_t *seqs;
	const char *file, *disk;
	off_t size;
	int opt, verbose = 0, fd;

	while ((opt = getopt(argc, argv, "vn:")) != -1) {
		switch (opt) {
		case 'v':
			verbose = 1;
			break;
		case 'n':
			ring = strtoull(optarg, NULL, 0);
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 3)
		goto usage;
	file = argv[optind];
	disk = argv[optind + 1];
	acked = strtoull(argv[optind + 2], NULL, 0);
	if (!*disk || strlen(disk) >= LMB_NAME_MAX)
		goto usage;

	fd = open(file, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "checker: %s: %s\n", file, strerror(errno));
		return 2;
	}
	size = lseek(fd, 0, SEEK_END);
	if (size < (off_t)LMB_SIZE) {
		fprintf(stderr, "checker: %s: too small or unreadable\n", file);
		return 2;
	}
	if (!ring)
		ring = find_ring(fd, (uint64_t)size / LMB_SIZE);
	if (!ring) {
		/* No sound block at all: fine only if nothing was acknowledged and it is not garbage. */
		ring = (uint64_t)size / LMB_SIZE;
		if (ring > 4096)
			ring = 4096;
	}
	if ((uint64_t)size < ring * LMB_SIZE) {
		fprintf(stderr, "checker: %s: %lld bytes, smaller than the ring of %llu blocks\n", file,
			(long long)size, (unsigned long long)ring);
		return 2;
	}

	data = malloc(LMB_SIZE);
	kinds = calloc(ring, sizeof(*kinds));
	seqs = calloc(ring, sizeof(*seqs));
	if (!data || !kinds || !seqs) {
		fprintf(stderr, "checker: out of memory\n");
		return 2;
	}
	for (uint64_t i = 0; i < ring; i++) {
		const char *why;
		if (pread(fd, data, LMB_SIZE, i * LMB_SIZE) != LMB_SIZE) {
			fprintf(stderr, "checker: %s: read at %llu: %s\n", file,
				(unsigned long long)(i * LMB_SIZE), strerror(errno));
			free(data);
			free(kinds);
			free(seqs);
			close(fd);
			return 2;
		}
		kinds[i] = classify(data, disk, i, ring, &seqs[i], &why);
		if (kinds[i] == TORN)
			torn++;
		else if (kinds[i] == MISPLACED)
			misplaced++;
		else if (kinds[i] == VALID && seqs[i] > acked)
			newer++;
		if (verbose && (kinds[i] == TORN || kinds[i] == MISPLACED))
			fprintf(stderr, "block %llu (offset %llu): %s: %s\n", (unsigned long long)i,
				(unsigned long long)(i * LMB_SIZE), kind_name[kinds[i]], why);
	}
	first = acked > ring ? acked - ring + 1 : 1;
	for (uint64_t s = first; acked && s <= acked; s++) {
		uint64_t i = s % ring;
		if (kinds[i] == EMPTY) {
			missing++;
			if (verbose)
				fprintf(stderr, "seq %llu (block %llu): missing\n", (unsigned long long)s,
					(unsigned long long)i);
		} else if (kinds[i] == VALID && seqs[i] < s) {
			stale++;
			if (verbose)
				fprintf(stderr, "seq %llu (block %llu): stale, holds seq %llu\n",
					(unsigned long long)s, (unsigned long long)i, (unsigned long long)seqs[i]);
		}
	}
	printf("disk %s: acked %llu, checked %llu blocks, %llu torn, %llu stale, %llu missing, "
	       "%llu misplaced, ",
	       disk, (unsigned long long)acked, (unsigned long long)ring, (unsigned long long)torn,
	       (unsigned long long)stale, (unsigned long long)missing, (unsigned long long)misplaced);
	if (acked)
		printf("seqs %llu..%llu checked\n", (unsigned long long)first, (unsigned long long)acked);
	else
		printf("seqs none checked\n");
	if (verbose)
		fprintf(stderr, "disk %s: %llu blocks newer than the last ack\n", disk,
			(unsigned long long)newer);
	free(data);
	free(kinds);
	free(seqs);
	close(fd);
	return torn || stale || missing || misplaced ? 1 : 0;

usage:
	fprintf(stderr, "usage: checker [-v] [-n RING_BLOCKS] FILE DISK ACKED\n");
	return 2;
}

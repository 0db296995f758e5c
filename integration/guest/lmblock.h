/*
 * lmblock.h: the on-disk format of the guest writer's log, shared by writer.c (in the guest)
 * and checker.c (on the host).
 *
 * A disk's log is a ring of LMB_SIZE-byte blocks over the first ring_blocks * LMB_SIZE bytes
 * of the raw block device. Sequence numbers start at 1; the block of seq s is s % ring_blocks,
 * so a block always holds the newest seq congruent to its index that reached the disk.
 * Each block is a header (below, little-endian, as x86 lays it out) and a payload of
 * pseudo-random bytes derived from (disk name, seq); crc32 covers the whole block with the crc
 * field zeroed. A block that is all zeroes was never written.
 */
#ifndef LMBLOCK_H
#define LMBLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LMB_SIZE 4096u
#define LMB_MAGIC 0x314b4c4252574d4cull /* "LMWRBLK1" */
#define LMB_VERSION 1u
#define LMB_NAME_MAX 16

struct lmb_header {
	uint64_t magic;
	char disk[LMB_NAME_MAX]; /* NUL-padded, e.g. "vda" */
	uint64_t index;		 /* block index in the ring (seq % ring_blocks) */
	uint64_t offset;	 /* byte offset on the disk (index * LMB_SIZE) */
	uint64_t seq;		 /* sequence number, >= 1 */
	uint64_t ring_blocks;	 /* size of the ring in blocks */
	uint32_t version;
	uint32_t crc;		 /* crc32 (IEEE, as zlib) of the block with this field zeroed */
};

_Static_assert(sizeof(struct lmb_header) == 64, "lmb_header layout");

static uint32_t lmb_crc_table[256];

static inline void lmb_crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		lmb_crc_table[i] = c;
	}
}

static inline uint32_t lmb_crc32(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = 0xffffffffu;

	if (!lmb_crc_table[1])
		lmb_crc_init();
	while (len--)
		c = lmb_crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* crc of a block as stored: the crc field counts as zero. */
static inline uint32_t lmb_block_crc(const unsigned char *block)
{
	unsigned char copy[LMB_SIZE];

	memcpy(copy, block, LMB_SIZE);
	memset(copy + offsetof(struct lmb_header, crc), 0, sizeof(uint32_t));
	return lmb_crc32(copy, LMB_SIZE);
}

static inline uint64_t lmb_splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The payload bytes of (disk, seq), after the header. */
static inline void lmb_payload(unsigned char *block, const char *disk, uint64_t seq)
{
	uint64_t state = 0xcbf29ce484222325ull; /* FNV-1a of the name, then the seq */

	for (const char *c = disk; *c; c++)
		state = (state ^ (unsigned char)*c) * 0x100000001b3ull;
	state ^= seq * 0x9e3779b97f4a7c15ull;
	for (size_t off = sizeof(struct lmb_header); off < LMB_SIZE; off += 8) {
		uint64_t v = lmb_splitmix(&state);
		memcpy(block + off, &v, 8);
	}
}

/* Fill block with the complete record of (disk, seq) in a ring of ring_blocks. */
static inline void lmb_fill(unsigned char *block, const char *disk, uint64_t seq, uint64_t ring_blocks)
{
	struct lmb_header h;

	memset(&h, 0, sizeof(h));
	h.magic = LMB_MAGIC;
	strncpy(h.disk, disk, LMB_NAME_MAX - 1);
	h.index = seq % ring_blocks;
	h.offset = h.index * LMB_SIZE;
	h.seq = seq;
	h.ring_blocks = ring_blocks;
	h.version = LMB_VERSION;
	h.crc = 0;
	memcpy(block, &h, sizeof(h));
	lmb_payload(block, h.disk, seq);
	h.crc = lmb_crc32(block, LMB_SIZE);
	memcpy(block + offsetof(struct lmb_header, crc), &h.crc, sizeof(h.crc));
}

#endif

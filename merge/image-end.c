/*
 * merge/image-end: where a qcow2 image ends, from its refcount structures
 * as the host has them (what `qemu-img check` calls the image end offset):
 * the offset just past the last cluster in use, data or metadata. A layer
 * merged into a base brings at most that much; QEMU does not tell it for
 * an image on a block device (its allocation there is the device's size).
 * Pure: bytes in, numbers out; every offset and count is bounded before
 * use, the bytes being the image's, so whoever wrote the image's.
 */
#include "files.h"

#include <string.h>

static uint32_t rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const unsigned char *p)
{
	return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

int merge_qcow2_refs(const void *head, size_t len, struct merge_qcow2_refs *r)
{
	const unsigned char *p = head;
	uint32_t version, order = 4, clusters;

	memset(r, 0, sizeof(*r));
	if (len < 72 || rd32(p) != 0x514649fb)
		return -1;
	version = rd32(p + 4);
	if (version != 2 && version != 3)
		return -1;
	if (version == 3) {
		if (len < 104)
			return -1;
		order = rd32(p + 96);
	}
	r->cluster_bits = rd32(p + 20);
	if (r->cluster_bits < 9 || r->cluster_bits > 21 || order > 6)
		return -1;
	r->refcount_bits = 1u << order;
	r->table_offset = rd64(p + 48);
	clusters = rd32(p + 56);
	if (clusters == 0 || r->table_offset == 0 ||
	    (r->table_offset & (((uint64_t)1 << r->cluster_bits) - 1)) != 0 ||
	    r->table_offset > ((uint64_t)1 << 56) || clusters > (1u << 24))
		return -1;
	r->table_bytes = (uint64_t)clusters << r->cluster_bits;
	return 0;
}

int64_t merge_qcow2_last_block(const struct merge_qcow2_refs *r, const void *table, size_t len,
			       uint64_t *block_offset)
{
	const unsigned char *p = table;
	size_t n = (len < r->table_bytes ? len : (size_t)r->table_bytes) / 8, i;

	for (i = n; i-- > 0;) {
		uint64_t off = rd64(p + i * 8) & ~(uint64_t)0x1ff;

		if (off == 0)
			continue;
		if ((off & (((uint64_t)1 << r->cluster_bits) - 1)) != 0 || off > ((uint64_t)1 << 56))
			return -1;
		*block_offset = off;
		return (int64_t)i;
	}
	return -1;
}

/* Refcount entry i of a block of refcount_bits-wide entries (big-endian
 * for 8 bits and wider, low bits first within a byte below that). */
static uint64_t refcount_at(const unsigned char *b, uint32_t bits, size_t i)
{
	if (bits < 8) {
		size_t bit = i * bits;

		return (uint64_t)(b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
	}
	switch (bits) {
	case 8:
		return b[i];
	case 16:
		return (uint64_t)b[2 * i] << 8 | b[2 * i + 1];
	case 32:
		return rd32(b + 4 * i);
	default:
		return rd64(b + 8 * i);
	}
}

int64_t merge_qcow2_end(const struct merge_qcow2_refs *r, int64_t block_index, const void *block,
			size_t len)
{
	size_t csize = (size_t)1 << r->cluster_bits;
	size_t per_block = csize * 8 / r->refcount_bits, i;
	uint64_t end;

	if (block_index < 0 || len < csize ||
	    (uint64_t)block_index >= ((uint64_t)INT64_MAX >> r->cluster_bits) / per_block)
		return -1;
	for (i = per_block; i-- > 0;) {
		if (refcount_at(block, r->refcount_bits, i) == 0)
			continue;
		end = ((uint64_t)block_index * per_block + i + 1) << r->cluster_bits;
		return end > (uint64_t)INT64_MAX ? -1 : (int64_t)end;
	}
	return -1;
}

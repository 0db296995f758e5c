/*
 * fuzz/fuzz-image: libFuzzer target for the image header reader
 * (merge/files: merge_image_parse, merge_image_backing_is) and the image
 * end's reads (merge/image-end.c).
 *
 * Input: the first bytes of an image file, as livemerge reads them on the
 * host before it deletes a layer. An image's header is written by QEMU, so
 * by whoever owns QEMU: any bytes. A parse either refuses with a reason or
 * yields a header whose strings are terminated and within their fields; the
 * backing comparison must agree with itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct merge_image img;
	struct merge_qcow2_refs refs;
	uint64_t boff = 0;
	char why[256];

	/* the image end's three reads, all over these bytes: bounded, never past them */
	if (merge_qcow2_refs(data, size, &refs) == 0) {
		int64_t bi = merge_qcow2_last_block(&refs, data, size, &boff), end;

		if (refs.cluster_bits < 9 || refs.cluster_bits > 21 || refs.refcount_bits == 0 ||
		    refs.refcount_bits > 64)
			abort();
		if (bi >= 0 && (boff == 0 || (boff & 511) != 0 || (uint64_t)bi * 8 >= size))
			abort();
		end = merge_qcow2_end(&refs, bi < 0 ? 0 : bi, data, size);
		if (end == 0 || (end > 0 && (end & 511) != 0))
			abort();
	}
	why[0] = '\0';
	if (merge_image_parse(data, size, &img, why, sizeof(why)) < 0) {
		if (why[0] == '\0')
			abort();
		return 0;
	}
	if (memchr(img.format, '\0', sizeof(img.format)) == NULL ||
	    memchr(img.backing, '\0', sizeof(img.backing)) == NULL ||
	    memchr(img.backing_format, '\0', sizeof(img.backing_format)) == NULL)
		abort();
	if (img.has_backing != (img.backing[0] != '\0'))
		abort();
	if (img.has_backing && !merge_image_backing_is(&img, "/images/top.qcow2", img.backing))
		abort();
	if (merge_image_backing_is(&img, "/images/top.qcow2", NULL) == img.has_backing)
		abort();
	return 0;
}

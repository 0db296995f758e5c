/*
 * fuzz/fuzz-image: libFuzzer target for the image header reader
 * (merge/files: merge_image_parse, merge_image_backing_is).
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
	char why[256];

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

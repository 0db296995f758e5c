/*
 * fuzz/fuzz-qga: libFuzzer target for the guest agent framing (qmp/qga).
 *
 * Input: byte 0 picks the sync id (1..256) and whether a second sync starts
 * half-way; bytes 1..4 are split sizes; the rest is what an agent channel
 * could carry (stale replies, the 0xFF sentinel, the sync reply, replies).
 * Checks: no crash, no leak; the sync completes at most once per
 * qga_framer_sync(); no message comes out before the sync completed; a
 * failed framer stays failed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../qmp/qga.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qga_framer *f;
	struct lm_error e;
	size_t off, piece = 0;
	int synced = 0, failed = 0, resync;
	int64_t id;

	if (size < 5)
		return 0;
	id = (int64_t)(data[0] & 0x7f) + 1;
	resync = data[0] & 0x80;
	f = qga_framer_new();
	if (f == NULL)
		return 0;
	qga_framer_sync(f, id);
	for (off = 5; off < size;) {
		size_t n = (size_t)data[1 + piece++ % 4] + 1;
		struct qmp_msg *m;
		int r;

		if (n > size - off)
			n = size - off;
		r = qga_framer_feed(f, (const char *)data + off, n, &e);
		off += n;
		if (failed && r != -1)
			abort(); /* sticky */
		if (r < 0) {
			failed = 1;
			continue;
		}
		while ((r = qga_framer_next(f, &m, &e)) > 0) {
			if (r == 2) {
				if (synced)
					abort(); /* one sync, one completion */
				synced = 1;
			} else {
				if (!synced || m == NULL)
					abort(); /* nothing before the sync */
				qmp_msg_free(m);
			}
		}
		if (r < 0)
			failed = 1;
		if (resync && off > size / 2 && synced) {
			qga_framer_sync(f, id + 1);
			synced = 0;
			failed = 0;
			resync = 0;
		}
	}
	qga_framer_free(f);
	return 0;
}

/*
 * bench/codec: throughput of the QMP codec (qmp_parser_feed/next) over a
 * recorded stream of real QMP traffic.
 *
 * usage: codec [--mb N] [--chunk BYTES] [--rounds R] STREAM
 *
 * STREAM holds the raw bytes a QEMU monitor sent (greeting, replies, events,
 * as QEMU framed them). It is replicated in memory to at least N MB
 * (default 100; 1 MB = 10^6 bytes), then fed to a fresh parser in chunks of
 * BYTES (default 65536, the connection's read size), taking every message
 * after each feed and freeing it, R times (default 5). Prints one JSON
 * object: the stream's size and message count, and per round and as the
 * median: MB/s and messages/s. Throughput is per CPU second of this process
 * (CLOCK_PROCESS_CPUTIME_ID: what the codec costs, not how busy the machine
 * was); the wall-clock figure (CLOCK_MONOTONIC) is reported next to it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../qmp/proto.h"

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Parse buf[0..len) in chunks; returns the number of messages, -1 on error. */
static long parse_all(const char *buf, size_t len, size_t chunk, long *types)
{
	struct qmp_parser *p = qmp_parser_new(NULL);
	struct lm_error err;
	struct qmp_msg *m;
	size_t off;
	long n = 0;
	int r;

	if (p == NULL)
		return -1;
	for (off = 0; off < len; off += chunk) {
		size_t k = len - off < chunk ? len - off : chunk;

		if (qmp_parser_feed(p, buf + off, k, &err) < 0) {
			fprintf(stderr, "codec: feed: %s\n", err.msg);
			n = -1;
			break;
		}
		while ((r = qmp_parser_next(p, &m, &err)) == 1) {
			if (types != NULL)
				types[m->type]++;
			qmp_msg_free(m);
			n++;
		}
		if (r < 0) {
			fprintf(stderr, "codec: next: %s\n", err.msg);
			n = -1;
			break;
		}
	}
	if (n >= 0 && qmp_parser_pending(p) != 0) {
		fprintf(stderr, "codec: %zu bytes left unparsed at the end\n", qmp_parser_pending(p));
		n = -1;
	}
	qmp_parser_free(p);
	return n;
}

/*
 * The floor: json-c alone building the same objects from the same chunks
 * (no framing scan, no caps, no classification). Returns the messages.
 */
static long jsonc_only(const char *buf, size_t len, size_t chunk)
{
	json_tokener *tok = json_tokener_new();
	size_t off, k, used;
	long n = 0;

	for (off = 0; off < len; off += chunk) {
		k = len - off < chunk ? len - off : chunk;
		used = 0;
		while (used < k) {
			json_object *o = json_tokener_parse_ex(tok, buf + off + used, (int)(k - used));
			enum json_tokener_error e = json_tokener_get_error(tok);

			if (e == json_tokener_continue)
				break;
			if (o == NULL) {
				json_tokener_free(tok);
				return -1;
			}
			used += json_tokener_get_parse_end(tok);
			json_object_put(o);
			n++;
			json_tokener_reset(tok);
			while (used < k && (buf[off + used] == '\r' || buf[off + used] == '\n' ||
					    buf[off + used] == ' '))
				used++;
		}
	}
	json_tokener_free(tok);
	return n;
}

int main(int argc, char **argv)
{
	double mb = 100, mbs[64], mps[64], wmbs[64];
	size_t chunk = 65536, size = 0, cap = 1 << 16, total, copies, i;
	int rounds = 5, a, r;
	long per_copy, msgs, types[4] = { 0 };
	char *one, *all;
	FILE *f;

	for (a = 1; a < argc - 1; a++) {
		if (strcmp(argv[a], "--mb") == 0)
			mb = atof(argv[++a]);
		else if (strcmp(argv[a], "--chunk") == 0)
			chunk = (size_t)atol(argv[++a]);
		else if (strcmp(argv[a], "--rounds") == 0)
			rounds = atoi(argv[++a]);
		else
			break;
	}
	if (a != argc - 1 || chunk == 0 || rounds < 1 || rounds > 64 || mb <= 0) {
		fprintf(stderr, "usage: codec [--mb N] [--chunk BYTES] [--rounds R] STREAM\n");
		return 2;
	}
	if ((f = fopen(argv[a], "rb")) == NULL) {
		fprintf(stderr, "codec: %s: %s\n", argv[a], strerror(errno));
		return 1;
	}
	one = malloc(cap);
	for (;;) {
		size_t k;

		if (size == cap)
			one = realloc(one, cap *= 2);
		if (one == NULL)
			abort();
		k = fread(one + size, 1, cap - size, f);
		if (k == 0)
			break;
		size += k;
	}
	fclose(f);
	per_copy = parse_all(one, size, chunk, types);
	if (size == 0 || per_copy <= 0) {
		fprintf(stderr, "codec: %s: no QMP messages\n", argv[a]);
		return 1;
	}
	copies = (size_t)(mb * 1e6 / (double)size) + 1;
	total = copies * size;
	all = malloc(total);
	if (all == NULL)
		abort();
	for (i = 0; i < copies; i++)
		memcpy(all + i * size, one, size);
	printf("{\"stream_bytes\":%zu,\"stream_messages\":%ld,\"greetings\":%ld,\"returns\":%ld,"
	       "\"errors\":%ld,\"events\":%ld,\"copies\":%zu,\"bytes\":%zu,\"chunk\":%zu,\"rounds\":[",
	       size, per_copy, types[QMP_MSG_GREETING], types[QMP_MSG_RETURN], types[QMP_MSG_ERROR],
	       types[QMP_MSG_EVENT], copies, total, chunk);
	for (r = 0; r < rounds; r++) {
		double t0 = cpu(), w0 = mono(), dt, wt;

		msgs = parse_all(all, total, chunk, NULL);
		dt = cpu() - t0;
		wt = mono() - w0;
		if (msgs != per_copy * (long)copies) {
			fprintf(stderr, "codec: round %d parsed %ld messages, expected %ld\n", r, msgs,
				per_copy * (long)copies);
			return 1;
		}
		mbs[r] = (double)total / 1e6 / dt;
		mps[r] = (double)msgs / dt;
		wmbs[r] = (double)total / 1e6 / wt;
		printf("%s{\"cpu_seconds\":%.4f,\"wall_seconds\":%.4f,\"mb_per_s\":%.1f,"
		       "\"msgs_per_s\":%.0f}", r ? "," : "", dt, wt, mbs[r], mps[r]);
	}
	qsort(mbs, (size_t)rounds, sizeof(double), dcmp);
	qsort(mps, (size_t)rounds, sizeof(double), dcmp);
	qsort(wmbs, (size_t)rounds, sizeof(double), dcmp);
	printf("],\"mb_per_s\":%.1f,\"msgs_per_s\":%.0f,\"wall_mb_per_s\":%.1f,\"bytes_per_msg\":%.0f",
	       mbs[rounds / 2], mps[rounds / 2], wmbs[rounds / 2], (double)size / (double)per_copy);
	for (r = 0; r < rounds; r++) {
		double t0 = cpu(), dt;

		msgs = jsonc_only(all, total, chunk);
		dt = cpu() - t0;
		if (msgs != per_copy * (long)copies) {
			fprintf(stderr, "codec: json-c alone parsed %ld messages, expected %ld\n", msgs,
				per_copy * (long)copies);
			return 1;
		}
		mbs[r] = (double)total / 1e6 / dt;
	}
	qsort(mbs, (size_t)rounds, sizeof(double), dcmp);
	printf(",\"jsonc_only_mb_per_s\":%.1f}\n", mbs[rounds / 2]);
	free(one);
	free(all);
	return 0;
}

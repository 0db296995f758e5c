/*
 * bench/journal: an aged journal, written the way the engine writes one,
 * and the time to read the last operation from it.
 *
 *   journal fill TEMPLATE DIR TARGET N
 *       TEMPLATE is a journal a real run wrote (one snapshot + commit cycle,
 *       compaction off). Its operations are replayed N times through the
 *       journal API (merge_journal_begin for each intent, merge_journal_step
 *       for every other entry, its fields as the engine wrote them), into
 *       the journal of TARGET in DIR: the same writes, syncs and compactions
 *       as N real cycles, without QEMU. Prints {"cycles","seconds",
 *       "journal_bytes","history_bytes"}.
 *   journal open DIR TARGET REPS
 *       REPS times: open the journal, read its last operation (what every
 *       verb does first), close it. Prints {"reps","us":[...]}.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../merge/journal.h"

static double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long bench_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* The template's entries, in order, without what the journal adds itself. */
static json_object *bench_template(const char *path)
{
	json_object *all = json_object_new_array();
	char line[1 << 16];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		perror(path);
		exit(1);
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		json_object *o = json_tokener_parse(line);

		if (o == NULL || !json_object_is_type(o, json_type_object)) {
			fprintf(stderr, "%s: not a journal line: %.80s\n", path, line);
			exit(1);
		}
		json_object_object_del(o, "ts");
		json_object_array_add(all, o);
	}
	fclose(f);
	if (json_object_array_length(all) == 0) {
		fprintf(stderr, "%s: empty\n", path);
		exit(1);
	}
	return all;
}

static int bench_fill(const char *template, const char *dir, const char *target, long n)
{
	json_object *t = bench_template(template);
	struct lm_error err;
	struct merge_journal *j = merge_journal_open(dir, target, &err);
	size_t k, len = json_object_array_length(t);
	double t0 = bench_now();
	char hist[4096];
	long i;

	if (j == NULL) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	for (i = 0; i < n; i++) {
		for (k = 0; k < len; k++) {
			json_object *e = json_object_array_get_idx(t, k), *f;
			const char *step = json_object_get_string(json_object_object_get(e, "step"));
			int r;

			f = json_object_new_object();
			json_object_object_foreach(e, key, val)
			{
				if (strcmp(key, "op") != 0 && strcmp(key, "step") != 0)
					json_object_object_add(f, key, json_object_get(val));
			}
			r = strcmp(step, "intent") == 0 ? merge_journal_begin(j, f, &err)
							: merge_journal_step(j, step, f, &err);
			json_object_put(f);
			if (r < 0) {
				fprintf(stderr, "cycle %ld: %s\n", i, err.msg);
				return 1;
			}
		}
	}
	snprintf(hist, sizeof(hist), "%.*s.history",
		 (int)(strlen(merge_journal_path(j)) - strlen(".journal")), merge_journal_path(j));
	printf("{\"cycles\":%ld,\"seconds\":%.3f,\"journal_bytes\":%ld,\"history_bytes\":%ld}\n", n,
	       bench_now() - t0, bench_size(merge_journal_path(j)), bench_size(hist));
	merge_journal_close(j);
	json_object_put(t);
	return 0;
}

static int bench_open(const char *dir, const char *target, long reps)
{
	long i;

	printf("{\"reps\":%ld,\"us\":[", reps);
	for (i = 0; i < reps; i++) {
		struct lm_error err;
		json_object *last;
		int finished;
		double t0 = bench_now();
		struct merge_journal *j = merge_journal_open(dir, target, &err);

		if (j == NULL || merge_journal_last(j, &last, &finished, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		json_object_put(last);
		merge_journal_close(j);
		printf("%s%.1f", i ? "," : "", (bench_now() - t0) * 1e6);
	}
	printf("]}\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "fill") == 0)
		return bench_fill(argv[2], argv[3], argv[4], atol(argv[5]));
	if (argc == 5 && strcmp(argv[1], "open") == 0)
		return bench_open(argv[2], argv[3], atol(argv[4]));
	fprintf(stderr, "usage: journal fill TEMPLATE DIR TARGET N | journal open DIR TARGET REPS\n");
	return 2;
}

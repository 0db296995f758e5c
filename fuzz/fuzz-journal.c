/*
 * fuzz/fuzz-journal: libFuzzer target for the journal reader
 * (merge/journal). Whatever the file holds (a torn last line, garbage,
 * deep JSON, entries of several operations), the reader must return the
 * last operation's entries as an array of objects that all have an integer
 * "op" and a string "step", the intent (if any) first, and never crash.
 * The chain-state reader (history) returns objects with an integer "op",
 * above the one asked for, each with an array "disks".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *entries = NULL, *v;
	int finished = 0;
	size_t i, n;
	int64_t op = -1;

	entries = json_object_new_array();
	merge_journal_parse_states((const char *)data, size, 1, entries);
	for (i = 0; i < json_object_array_length(entries); i++) {
		json_object *o = json_object_array_get_idx(entries, i);

		if (!json_object_object_get_ex(o, "op", &v) || !json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) <= 1 || !json_object_object_get_ex(o, "disks", &v) ||
		    !json_object_is_type(v, json_type_array))
			abort();
	}
	json_object_put(entries);

	merge_journal_parse((const char *)data, size, &entries, &finished);
	if (entries == NULL)
		return finished ? (abort(), 0) : 0;
	if (!json_object_is_type(entries, json_type_array))
		abort();
	n = json_object_array_length(entries);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(entries, i);

		if (!json_object_is_type(o, json_type_object) ||
		    !json_object_object_get_ex(o, "op", &v) || !json_object_is_type(v, json_type_int))
			abort();
		if (i == 0)
			op = json_object_get_int64(v);
		else if (json_object_get_int64(v) != op)
			abort(); /* one operation */
		if (!json_object_object_get_ex(o, "step", &v) ||
		    !json_object_is_type(v, json_type_string))
			abort();
		if (i > 0 && strcmp(json_object_get_string(v), "intent") == 0)
			abort(); /* an intent starts a new operation */
	}
	json_object_put(entries);
	return 0;
}

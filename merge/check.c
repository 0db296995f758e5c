/*
 * merge/check: the chains against the headers, the journal, the engine's
 * view and the directories (see check.h).
 */
#include "check.h"

#include <stdio.h>
#include <string.h>

#include "group.h"

/* ---- small readers of untrusted JSON ---------------------------------------------- */

static const char *ck_str(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static json_object *ck_arr(json_object *o, const char *k)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_array))
		return v;
	return NULL;
}

/* ---- findings --------------------------------------------------------------------- */

static json_object *ck_str_or_null(const char *s)
{
	return s != NULL ? json_object_new_string(s) : NULL;
}

/* A new finding appended to out: code, disk, layer; the caller adds what each
 * source says. Borrowed from out. */
static json_object *ck_add(json_object *out, const char *code, const char *disk,
			   const char *layer)
{
	json_object *f = json_object_new_object();

	json_object_object_add(f, "type", json_object_new_string("finding"));
	json_object_object_add(f, "code", json_object_new_string(code));
	json_object_object_add(f, "disk", ck_str_or_null(disk));
	json_object_object_add(f, "layer", ck_str_or_null(layer));
	json_object_array_add(out, f);
	return f;
}

static void ck_say(json_object *f, const char *source, const char *what)
{
	json_object_object_add(f, source, ck_str_or_null(what));
}

/* A disk's live chain as an array of file names, active layer first. */
static json_object *ck_chain_json(const struct merge_disk *d)
{
	json_object *a = json_object_new_array();
	int i;

	for (i = 0; d != NULL && i < d->nlayers; i++)
		json_object_array_add(a, json_object_new_string(d->layers[i].filename));
	return a;
}

/* 1 if the disk's live chain is exactly the file names of chain (array). */
static int ck_chain_is(const struct merge_disk *d, json_object *chain)
{
	int i;

	if (chain == NULL || (int)json_object_array_length(chain) != d->nlayers)
		return 0;
	for (i = 0; i < d->nlayers; i++) {
		json_object *v = json_object_array_get_idx(chain, (size_t)i);

		if (!json_object_is_type(v, json_type_string) ||
		    !merge_path_same(d->layers[i].filename, json_object_get_string(v)))
			return 0;
	}
	return 1;
}

static int ck_wanted(const struct merge_check_input *in, const struct merge_disk *d)
{
	int i;

	if (in->ndisks == 0)
		return 1;
	for (i = 0; i < in->ndisks; i++)
		if (merge_chains_find(in->live, in->disks[i]) == d)
			return 1;
	return 0;
}

static const struct merge_check_file *ck_file(const struct merge_check_input *in,
					      const char *path)
{
	int i;

	for (i = 0; i < in->nfiles; i++)
		if (strcmp(in->files[i].path, path) == 0)
			return &in->files[i];
	return NULL;
}

/* ---- the live layers against their headers ---------------------------------------- */

static const char *ck_kind_name(enum host_file_kind k)
{
	switch (k) {
	case HOST_FILE_NONE: return "missing";
	case HOST_FILE_REGULAR: return "file";
	case HOST_FILE_BLOCK: return "block device";
	case HOST_FILE_SYMLINK: return "symbolic link";
	default: return "neither a file nor a block device";
	}
}

static void ck_layer(json_object *out, const struct merge_check_input *in,
		     const struct merge_disk *d, int i)
{
	const struct merge_layer *l = &d->layers[i];
	const struct merge_layer *below = i + 1 < d->nlayers ? &d->layers[i + 1] : NULL;
	const struct merge_check_file *f = ck_file(in, l->filename);
	struct merge_image img;
	char why[256], says[1200];
	json_object *x;

	if (f == NULL)
		return;
	if (f->kind == HOST_FILE_NONE) {
		x = ck_add(out, "missing", d->name, l->filename);
		snprintf(says, sizeof(says), "open as node %s", l->node_name ? l->node_name : "-");
		ck_say(x, "live", says);
		ck_say(x, "host", "no such file or device");
		return;
	}
	if (l->format == NULL || strcmp(l->format, "qcow2") != 0)
		return; /* only a qcow2 header says more */
	if (f->kind != HOST_FILE_REGULAR && f->kind != HOST_FILE_BLOCK)
		return; /* a symlink QEMU was given: not followed here */
	if (merge_image_parse(f->head, f->len, &img, why, sizeof(why)) < 0 ||
	    strcmp(img.format, "qcow2") != 0) {
		x = ck_add(out, "corrupt", d->name, l->filename);
		ck_say(x, "live", "qcow2");
		ck_say(x, "header", img.format[0] ? why : "no qcow2 header");
		return;
	}
	if (img.corrupt) {
		x = ck_add(out, "corrupt", d->name, l->filename);
		ck_say(x, "live", l->read_only ? "open read-only" : "open read-write");
		ck_say(x, "header", "corrupt bit set");
	}
	if (img.dirty && l->read_only) {
		/* QEMU repairs a dirty image it opens read-write, never one it only reads;
		 * a layer it writes is dirty while it runs with lazy refcounts */
		x = ck_add(out, "dirty", d->name, l->filename);
		ck_say(x, "live", "open read-only: not repaired");
		ck_say(x, "header", "dirty bit set (not closed cleanly, lazy refcounts)");
	}
	if (!merge_image_backing_is(&img, l->filename, below ? below->filename : NULL) ||
	    (below != NULL && img.backing_format[0] && below->format != NULL &&
	     strcmp(img.backing_format, below->format) != 0)) {
		x = ck_add(out, "backing-mismatch", d->name, l->filename);
		if (below != NULL) {
			snprintf(says, sizeof(says), "%s (%s)", below->filename,
				 below->format ? below->format : "?");
			ck_say(x, "live", says);
		} else {
			ck_say(x, "live", "no backing (the base)");
		}
		if (img.has_backing) {
			snprintf(says, sizeof(says), "%s (%s)", img.backing,
				 img.backing_format[0] ? img.backing_format : "format not named");
			ck_say(x, "header", says);
		} else {
			ck_say(x, "header", "no backing file");
		}
	}
}

/* ---- the journal ------------------------------------------------------------------ */

static json_object *ck_entry(json_object *entries, const char *step)
{
	size_t i, n = entries ? json_object_array_length(entries) : 0;
	json_object *found = NULL;

	for (i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(entries, i);
		const char *s = ck_str(e, "step");

		if (s != NULL && strcmp(s, step) == 0)
			found = e;
	}
	return found;
}

/* The disk an intent's entry names, in the live graph; NULL if gone. */
static const struct merge_disk *ck_intent_disk(const struct merge_check_input *in, json_object *jd)
{
	const char *name = ck_str(jd, "disk");
	const struct merge_disk *d = name ? merge_chains_find(in->live, name) : NULL;
	json_object *lists[2] = { ck_arr(jd, "expect"), ck_arr(jd, "before") };
	int i, k;

	if (d != NULL)
		return d;
	/* a storage daemon's disk named after its active node: by its chain */
	for (k = 0; k < 2; k++)
		for (i = 0; i < in->live->ndisks; i++)
			if (ck_chain_is(&in->live->disks[i], lists[k]))
				return &in->live->disks[i];
	return NULL;
}

static void ck_journal(json_object *out, const struct merge_check_input *in)
{
	json_object *intent = ck_entry(in->journal, "intent"), *end, *disks, *last;
	const char *verb, *recovered, *laststep;
	size_t i, n;
	char says[200];
	int outcome = -1;

	if (intent == NULL)
		return;
	verb = ck_str(intent, "verb");
	disks = ck_arr(intent, "disks");
	n = disks ? json_object_array_length(disks) : 0;
	if (!in->journal_finished) {
		last = json_object_array_get_idx(in->journal, json_object_array_length(in->journal) - 1);
		laststep = ck_str(last, "step");
		snprintf(says, sizeof(says), "%s begun, not finished; its last step: %s",
			 verb ? verb : "an operation", laststep ? laststep : "?");
		for (i = 0; i < n || (i == 0 && n == 0); i++) {
			json_object *jd = n ? json_object_array_get_idx(disks, i) : NULL;
			const struct merge_disk *d = jd ? ck_intent_disk(in, jd) : NULL;
			json_object *x;

			if (d != NULL && !ck_wanted(in, d))
				continue;
			x = ck_add(out, "unfinished-operation", d ? d->name : ck_str(jd, "disk"),
				   NULL);
			ck_say(x, "journal", says);
			if (d != NULL)
				json_object_object_add(x, "live", ck_chain_json(d));
			if (jd != NULL) {
				json_object_object_add(x, "journal-before",
						       json_object_get(ck_arr(jd, "before")));
				json_object_object_add(x, "journal-expect",
						       json_object_get(ck_arr(jd, "expect")));
			}
		}
		return;
	}
	end = ck_entry(in->journal, "end");
	if (end != NULL) {
		json_object *v;

		if (json_object_object_get_ex(end, "outcome", &v))
			outcome = json_object_get_int(v);
	}
	recovered = ck_str(end, "recovered");
	for (i = 0; i < n; i++) {
		json_object *jd = json_object_array_get_idx(disks, i);
		json_object *before = ck_arr(jd, "before"), *expect = ck_arr(jd, "expect");
		const struct merge_disk *d = ck_intent_disk(in, jd);
		json_object *recorded, *x;
		int ok;

		if (d == NULL || !ck_wanted(in, d) || (before == NULL && expect == NULL))
			continue;
		/* the chain the operation left: expected when it was done, as before
		 * when rolled back; "mixed" recoveries left either */
		if (recovered != NULL && strcmp(recovered, "mixed") == 0)
			ok = ck_chain_is(d, before) || ck_chain_is(d, expect);
		else if (outcome == MERGE_DONE &&
			 (recovered == NULL || strcmp(recovered, "rolled-back") != 0))
			ok = ck_chain_is(d, expect);
		else
			ok = ck_chain_is(d, before);
		if (ok)
			continue;
		recorded = outcome == MERGE_DONE && (recovered == NULL ||
						     strcmp(recovered, "rolled-back") != 0)
				   ? expect
				   : before;
		x = ck_add(out, "journal-differs", d->name, NULL);
		json_object_object_add(x, "live", ck_chain_json(d));
		json_object_object_add(x, "journal", json_object_get(recorded));
		snprintf(says, sizeof(says), "%s, %s", verb ? verb : "?",
			 recovered ? recovered : outcome == MERGE_DONE ? "done" : "rolled back");
		ck_say(x, "journal-op", says);
	}
}

/* ---- the engine's view ------------------------------------------------------------ */

static void ck_expect(json_object *out, const struct merge_check_input *in)
{
	if (in->expect == NULL)
		return;
	json_object_object_foreach(in->expect, name, chain)
	{
		const struct merge_disk *d = merge_chains_find(in->live, name);
		json_object *x;

		if (d != NULL ? !ck_wanted(in, d) : in->ndisks > 0)
			continue;
		if (d != NULL && ck_chain_is(d, chain))
			continue;
		x = ck_add(out, "expect-differs", d ? d->name : name, NULL);
		json_object_object_add(x, "live", d ? ck_chain_json(d) : NULL);
		json_object_object_add(x, "expect", json_object_get(chain));
	}
}

int merge_check_expect_parse(const char *text, size_t len, json_object **out, char *why,
			     size_t whylen)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;
	enum json_tokener_error je;

	*out = NULL;
	if (tok == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	o = json_tokener_parse_ex(tok, text, (int)len);
	je = json_tokener_get_error(tok);
	if (o != NULL && je == json_tokener_success && json_tokener_get_parse_end(tok) < len &&
	    strspn(text + json_tokener_get_parse_end(tok), " \t\r\n") !=
		    len - json_tokener_get_parse_end(tok)) {
		snprintf(why, whylen, "text after the JSON object at byte %zu",
			 json_tokener_get_parse_end(tok));
		json_tokener_free(tok);
		json_object_put(o);
		return -1;
	}
	if (o == NULL) {
		snprintf(why, whylen, "not JSON: %s", je == json_tokener_continue
							    ? "it ends too early"
							    : json_tokener_error_desc(je));
		json_tokener_free(tok);
		return -1;
	}
	json_tokener_free(tok);
	if (!json_object_is_type(o, json_type_object)) {
		snprintf(why, whylen, "not a JSON object {\"DISK\": [\"/top\", ..., \"/base\"]}");
		json_object_put(o);
		return -1;
	}
	json_object_object_foreach(o, name, chain)
	{
		size_t i, n;

		if (!json_object_is_type(chain, json_type_array) ||
		    (n = json_object_array_length(chain)) == 0) {
			snprintf(why, whylen, "%.64s: not an array of one or more paths", name);
			json_object_put(o);
			return -1;
		}
		for (i = 0; i < n; i++) {
			json_object *p = json_object_array_get_idx(chain, i);

			if (!json_object_is_type(p, json_type_string) ||
			    json_object_get_string(p)[0] != '/') {
				snprintf(why, whylen, "%.64s[%zu]: not an absolute path", name, i);
				json_object_put(o);
				return -1;
			}
		}
	}
	*out = o;
	return 0;
}

/* ---- the directories -------------------------------------------------------------- */

static int ck_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

int merge_check_is_image(const struct merge_check_file *f)
{
	struct merge_image img;
	char why[8];

	if (f->kind == HOST_FILE_BLOCK)
		return 1;
	if (f->kind != HOST_FILE_REGULAR)
		return 0;
	if (merge_image_parse(f->head, f->len, &img, why, sizeof(why)) < 0 || img.format[0])
		return 1;
	return ck_suffix(f->path, ".qcow2") || ck_suffix(f->path, ".img") ||
	       ck_suffix(f->path, ".raw");
}

static int ck_in_a_chain(const struct merge_chains *live, const char *path)
{
	int i, k;

	for (i = 0; i < live->ndisks; i++)
		for (k = 0; k < live->disks[i].nlayers; k++)
			if (merge_path_same(live->disks[i].layers[k].filename, path))
				return 1;
	return 0;
}

static void ck_dirs(json_object *out, const struct merge_check_input *in)
{
	int i;

	for (i = 0; i < in->ndir_files; i++) {
		const struct merge_check_file *f = &in->dir_files[i];
		struct merge_image img;
		char why[256], says[1200];
		json_object *x;

		if (!merge_check_is_image(f) || ck_in_a_chain(in->live, f->path))
			continue;
		x = ck_add(out, "orphan", NULL, f->path);
		ck_say(x, "live", "in no chain");
		if (merge_image_parse(f->head, f->len, &img, why, sizeof(why)) < 0)
			snprintf(says, sizeof(says), "%s, qcow2 header malformed: %s",
				 ck_kind_name(f->kind), why);
		else if (!img.format[0])
			snprintf(says, sizeof(says), "%s, no image header", ck_kind_name(f->kind));
		else if (img.has_backing)
			snprintf(says, sizeof(says), "%s, %s backed by %s", ck_kind_name(f->kind),
				 img.format, img.backing);
		else
			snprintf(says, sizeof(says), "%s, %s without backing", ck_kind_name(f->kind),
				 img.format);
		ck_say(x, "host", says);
	}
}

/* ---- jobs ------------------------------------------------------------------------- */

static void ck_jobs(json_object *out, const struct merge_check_input *in)
{
	size_t i, n = in->jobs && json_object_is_type(in->jobs, json_type_array)
			      ? json_object_array_length(in->jobs)
			      : 0;

	for (i = 0; i < n; i++) {
		json_object *j = json_object_array_get_idx(in->jobs, i), *x;
		const char *id = ck_str(j, "id");
		char says[300];

		if (id != NULL && strncmp(id, "livemerge-", 10) == 0)
			continue;
		x = ck_add(out, "foreign-job", NULL, NULL);
		snprintf(says, sizeof(says), "%s job %s, %s", ck_str(j, "type") ? ck_str(j, "type") : "a",
			 id ? id : "without an id", ck_str(j, "status") ? ck_str(j, "status") : "?");
		ck_say(x, "job", says);
		ck_say(x, "livemerge", "not one of its jobs");
	}
}

json_object *merge_check(const struct merge_check_input *in)
{
	json_object *out = json_object_new_array();
	int i, k;

	if (out == NULL)
		return NULL;
	for (i = 0; i < in->live->ndisks; i++) {
		const struct merge_disk *d = &in->live->disks[i];

		if (!ck_wanted(in, d))
			continue;
		for (k = 0; k < d->nlayers; k++)
			ck_layer(out, in, d, k);
	}
	ck_journal(out, in);
	ck_expect(out, in);
	ck_dirs(out, in);
	ck_jobs(out, in);
	return out;
}

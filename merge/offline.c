/*
 * merge/offline: an offline target's words taken apart (offline.h).
 */
#include "offline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFLINE_WORD "offline:"

/* The "offline:..." part of target, or NULL. */
static const char *offline_body(const char *target)
{
	const char *slash;

	if (strncmp(target, OFFLINE_WORD, strlen(OFFLINE_WORD)) == 0)
		return target;
	if (strncmp(target, "ssh://", 6) != 0 || (slash = strchr(target + 6, '/')) == NULL)
		return NULL;
	return strncmp(slash + 1, OFFLINE_WORD, strlen(OFFLINE_WORD)) == 0 ? slash + 1 : NULL;
}

int merge_offline_is(const char *target)
{
	return target != NULL && offline_body(target) != NULL;
}

/* QEMU's rule for node names (and ours for a disk): a letter first, then
 * letters, digits, '-', '_', '.'; at most 31 bytes. */
static int offline_node_name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 31 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return 0;
	for (i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return 0;
	return 1;
}

static int offline_disk_cmp(const void *a, const void *b)
{
	return strcmp(((const struct merge_offline_disk *)a)->disk,
		      ((const struct merge_offline_disk *)b)->disk);
}

/* o->key from its disks, sorted by name. 0 or -1 (memory). */
static int offline_make_key(struct merge_offline *o)
{
	struct merge_offline_disk *sorted = malloc((size_t)o->ndisks * sizeof(*sorted));
	char *key = NULL;
	size_t len = 0;
	FILE *f;
	int i;

	if (sorted == NULL)
		return -1;
	memcpy(sorted, o->disks, (size_t)o->ndisks * sizeof(*sorted));
	qsort(sorted, (size_t)o->ndisks, sizeof(*sorted), offline_disk_cmp);
	if ((f = open_memstream(&key, &len)) == NULL) {
		free(sorted);
		return -1;
	}
	if (o->ssh != NULL)
		fprintf(f, "%s/", o->ssh);
	fputs(OFFLINE_WORD, f);
	for (i = 0; i < o->ndisks; i++)
		fprintf(f, "%s%s=%s", i ? "," : "", sorted[i].disk, sorted[i].path);
	free(sorted);
	if (fclose(f) != 0) {
		free(key);
		return -1;
	}
	o->key = key;
	return 0;
}

void merge_offline_free(struct merge_offline *o)
{
	int i;

	if (o == NULL)
		return;
	for (i = 0; i < o->ndisks; i++) {
		free(o->disks[i].disk);
		free(o->disks[i].path);
	}
	free(o->disks);
	free(o->ssh);
	free(o->key);
	free(o);
}

const struct merge_offline_disk *merge_offline_find(const struct merge_offline *o,
						    const char *name)
{
	int i;

	for (i = 0; o != NULL && i < o->ndisks; i++)
		if (strcmp(o->disks[i].disk, name) == 0)
			return &o->disks[i];
	return NULL;
}

/* One DISK=PATH word (n bytes at w) into o. 0, or -1 with err. */
static int offline_add(struct merge_offline *o, const char *w, size_t n, const char *cwd,
		       struct lm_error *err)
{
	const char *eq = memchr(w, '=', n);
	struct merge_offline_disk *d;
	size_t dn, pn;
	int i;

	if (eq == NULL)
		return lm_error_set(err, LM_ERR_USAGE, "offline target: '%.*s' is not DISK=PATH",
				    (int)n, w);
	dn = (size_t)(eq - w);
	pn = n - dn - 1;
	if (!offline_node_name_ok(w, dn))
		return lm_error_set(err, LM_ERR_USAGE, "offline target: disk name '%.*s' must start "
				    "with a letter and hold only letters, digits, '-', '_' and '.' "
				    "(at most 31)", (int)dn, w);
	if (pn == 0)
		return lm_error_set(err, LM_ERR_USAGE, "offline target: disk %.*s has no image path",
				    (int)dn, w);
	if (eq[1] != '/' && (o->ssh != NULL || cwd == NULL))
		return lm_error_set(err, LM_ERR_USAGE, "offline target: %.*s: the image path '%.*s' "
				    "must be absolute%s", (int)dn, w, (int)pn, eq + 1,
				    o->ssh != NULL ? " on an ssh:// host" : "");
	if (o->ndisks == MERGE_OFFLINE_MAX_DISKS)
		return lm_error_set(err, LM_ERR_USAGE, "offline target: at most %d disks",
				    MERGE_OFFLINE_MAX_DISKS);
	d = &o->disks[o->ndisks];
	d->disk = strndup(w, dn);
	if (eq[1] == '/')
		d->path = strndup(eq + 1, pn);
	else if (asprintf(&d->path, "%s/%.*s", cwd, (int)pn, eq + 1) < 0)
		d->path = NULL;
	if (d->disk == NULL || d->path == NULL) {
		free(d->disk);
		free(d->path);
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	}
	o->ndisks++;
	for (i = 0; i < o->ndisks - 1; i++) {
		if (strcmp(o->disks[i].disk, d->disk) == 0)
			return lm_error_set(err, LM_ERR_USAGE, "offline target: disk %s named twice",
					    d->disk);
		if (strcmp(o->disks[i].path, d->path) == 0)
			return lm_error_set(err, LM_ERR_USAGE, "offline target: %s is the top of "
					    "both %s and %s", d->path, o->disks[i].disk, d->disk);
	}
	return 0;
}

struct merge_offline *merge_offline_parse(const char *target, const char *cwd,
					  struct lm_error *err)
{
	const char *body = target != NULL ? offline_body(target) : NULL, *w, *end;
	struct merge_offline *o;

	if (body == NULL) {
		lm_error_set(err, LM_ERR_USAGE, "'%s' is not an offline target "
			     "(offline:DISK=PATH[,DISK=PATH...])", target ? target : "");
		return NULL;
	}
	if ((o = calloc(1, sizeof(*o))) == NULL ||
	    (o->disks = calloc(MERGE_OFFLINE_MAX_DISKS, sizeof(*o->disks))) == NULL ||
	    (body != target && (o->ssh = strndup(target, (size_t)(body - 1 - target))) == NULL)) {
		merge_offline_free(o);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	w = body + strlen(OFFLINE_WORD);
	if (*w == '\0') {
		lm_error_set(err, LM_ERR_USAGE, "offline target: no disk (offline:DISK=PATH"
			     "[,DISK=PATH...]; a PATH cannot hold ',')");
		goto fail;
	}
	for (;;) {
		end = strchr(w, ',');
		if (end == NULL)
			end = w + strlen(w);
		if (offline_add(o, w, (size_t)(end - w), cwd, err) < 0)
			goto fail;
		if (*end == '\0')
			break;
		w = end + 1;
	}
	if (offline_make_key(o) < 0) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	return o;
fail:
	merge_offline_free(o);
	return NULL;
}

/*
 * merge/journal: the per-VM journal file (see journal.h).
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define JOURNAL_MAX_BYTES ((size_t)16 << 20) /* read at most the last 16 MiB */
#define JOURNAL_TAIL_BYTES ((size_t)8 << 10)  /* the last operation: read from here */

struct merge_journal {
	char *path;
	char *history; /* the chain states compaction moved out of path */
	int fd;
	int64_t op; /* the current operation's number */
	int in_op;  /* this handle began op and has not ended it */
};

static json_object *journal_history_entry(const char *p, size_t n);

static const char *crash_step;
static int crash_count;
static size_t compact_bytes = (size_t)64 << 10;

void merge_journal_set_crash_point(const char *step)
{
	crash_step = step;
	crash_count = 0;
}

void merge_journal_set_compact_bytes(size_t bytes)
{
	compact_bytes = bytes;
}

/* SIGKILL here if step (or its N-th time, "step#N") is the crash point. */
static void journal_crash_point(const char *step)
{
	const char *hash;
	size_t sl;
	int want;

	if (crash_step == NULL)
		return;
	hash = strchr(crash_step, '#');
	sl = hash ? (size_t)(hash - crash_step) : strlen(crash_step);
	want = hash ? atoi(hash + 1) : 1;
	if (strlen(step) == sl && strncmp(step, crash_step, sl) == 0 && ++crash_count == want)
		raise(SIGKILL);
}

/*
 * Every handle on a journal holds a shared lock on it (an open file
 * description lock, which neither flock() nor another descriptor's fcntl
 * lock of this process disturbs); compaction replaces the file only while
 * it can turn that into the one exclusive lock, so no other handle can be
 * appending to the file it replaces. Returns 0, or -1 if another handle
 * holds a lock.
 */
static int journal_lock(int fd, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET };

	return fcntl(fd, F_OFD_SETLK, &fl);
}

/* fsync the directory dir, so a file just created in it stays after a crash. */
static int journal_sync_dir(const char *dir, struct lm_error *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return lm_error_set(err, LM_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
	r = fsync(fd);
	close(fd);
	if (r < 0)
		return lm_error_set(err, LM_ERR_IO, "cannot sync %s: %s", dir, strerror(errno));
	return 0;
}

/* mkdir path; when it was made, sync its parent so it stays after a crash. */
static int journal_mkdir(char *path, struct lm_error *err)
{
	char *slash;
	int r;

	if (mkdir(path, 0700) < 0)
		return errno == EEXIST ? 0
				       : lm_error_set(err, LM_ERR_IO, "cannot create %s: %s", path,
						      strerror(errno));
	slash = strrchr(path, '/');
	if (slash == NULL || slash == path)
		return journal_sync_dir(slash == path ? "/" : ".", err);
	*slash = '\0';
	r = journal_sync_dir(path, err);
	*slash = '/';
	return r;
}

static int journal_mkdirs(char *path, struct lm_error *err)
{
	char *p;
	int r;

	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = journal_mkdir(path, err);
		*p = '/';
		if (r < 0)
			return -1;
	}
	return journal_mkdir(path, err);
}

/* The history file beside the journal: NAME.journal -> NAME.history. */
static int journal_history_path(struct merge_journal *j)
{
	size_t n = strlen(j->path);

	if (n > 8 && strcmp(j->path + n - 8, ".journal") == 0)
		return asprintf(&j->history, "%.*s.history", (int)(n - 8), j->path) < 0 ? -1 : 0;
	return asprintf(&j->history, "%s.history", j->path) < 0 ? -1 : 0;
}

/*
 * Open (create) j->path in dir and take the shared lock. A compaction may
 * replace the file between the open and the lock: then the descriptor is
 * the old file's, and it is opened again.
 */
static int journal_open_file(struct merge_journal *j, const char *dir, struct lm_error *err)
{
	struct stat fst, pst;
	int tries, wait;

	for (tries = 0; tries < 100; tries++) {
		j->fd = open(j->path, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
		if (j->fd >= 0) {
			/* a new file: its name must survive a crash as its entries do */
			if (journal_sync_dir(dir, err) < 0)
				return -1;
		} else if (errno == EEXIST) {
			j->fd = open(j->path, O_RDWR | O_APPEND | O_CLOEXEC);
		}
		if (j->fd < 0)
			return lm_error_set(err, LM_ERR_IO, "cannot open journal %s: %s", j->path,
					    strerror(errno));
		/* a compaction holds the lock for a few syncs; wait for it, 5 s at most
		 * (then go on without: the lock only defers compactions) */
		for (wait = 0; wait < 5000 && journal_lock(j->fd, F_RDLCK) < 0; wait++)
			usleep(1000);
		if (fstat(j->fd, &fst) == 0 && stat(j->path, &pst) == 0 &&
		    fst.st_ino == pst.st_ino && fst.st_dev == pst.st_dev)
			return 0;
		close(j->fd);
		j->fd = -1;
	}
	return lm_error_set(err, LM_ERR_IO, "cannot open journal %s: it keeps being replaced",
			    j->path);
}

/* Read all of the file at fd from off; malloc'd (NUL-terminated) or NULL. */
static char *journal_read_from(int fd, size_t off, size_t *len)
{
	struct stat st;
	size_t n, done = 0;
	char *buf;

	if (fstat(fd, &st) < 0)
		return NULL;
	n = (size_t)st.st_size > off ? (size_t)st.st_size - off : 0;
	buf = malloc(n + 1);
	if (buf == NULL)
		return NULL;
	while (done < n) {
		ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return NULL;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	buf[done] = '\0';
	*len = done;
	return buf;
}

/* The "op" of the history's last whole line, 0 if none: read from its end. */
static int64_t journal_history_last_op(const struct merge_journal *j)
{
	int fd = open(j->history, O_RDONLY | O_CLOEXEC);
	size_t win = JOURNAL_TAIL_BYTES, len;
	int64_t op = 0;
	struct stat st;

	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return 0;
	}
	for (;; win *= 4) {
		size_t off = (size_t)st.st_size > win ? (size_t)st.st_size - win : 0;
		char *buf = journal_read_from(fd, off, &len), *end, *line;
		json_object *o, *v;

		if (buf == NULL)
			break;
		end = buf + len;
		while (end > buf && end[-1] != '\n')
			end--; /* a torn last line */
		if (end > buf)
			end--;
		*end = '\0';
		line = memrchr(buf, '\n', (size_t)(end - buf));
		if (line == NULL && off > 0) {
			free(buf);
			continue; /* the last line is longer than the window */
		}
		line = line ? line + 1 : buf;
		o = journal_history_entry(line, strlen(line));
		if (o != NULL && json_object_object_get_ex(o, "op", &v))
			op = json_object_get_int64(v);
		json_object_put(o);
		free(buf);
		break;
	}
	close(fd);
	return op;
}

/* The journal directory's name (see merge_journal_dir), not made. */
static int journal_base(const char *dir, char *out, size_t size, struct lm_error *err)
{
	int n;

	if (dir != NULL)
		n = snprintf(out, size, "%s", dir);
	else if (getenv("XDG_STATE_HOME") && *getenv("XDG_STATE_HOME"))
		n = snprintf(out, size, "%s/livemerge", getenv("XDG_STATE_HOME"));
	else if (getenv("HOME") && *getenv("HOME"))
		n = snprintf(out, size, "%s/.local/state/livemerge", getenv("HOME"));
	else
		return lm_error_set(err, LM_ERR_USAGE, "no journal directory: set HOME or use "
						       "--journal DIR");
	if (n < 0 || (size_t)n >= size)
		return lm_error_set(err, LM_ERR_USAGE, "journal directory name too long");
	return 0;
}

int merge_journal_dir(const char *dir, char *out, size_t size, struct lm_error *err)
{
	if (journal_base(dir, out, size, err) < 0)
		return -1;
	return journal_mkdirs(out, err);
}

void merge_journal_target_stem(const char *target, char *out, size_t size)
{
	size_t i, k = 0;

	/* readable: unix:/run/vm1/qmp.sock and /run/vm1/qmp.sock (the same
	 * monitor) -> _run_vm1_qmp.sock */
	if (strncmp(target, "unix:", 5) == 0)
		target += 5;
	for (i = 0; target[i] && k + 1 < size && k < 496; i++) {
		char c = target[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '@'))
			c = '_';
		if (c == '_' && k > 0 && out[k - 1] == '_')
			continue;
		out[k++] = c;
	}
	if (size > 0)
		out[k] = '\0';
}

struct merge_journal *merge_journal_open(const char *dir, const char *target,
					 struct lm_error *err)
{
	char stem[512];

	merge_journal_target_stem(target, stem, sizeof(stem));
	return merge_journal_open_stem(dir, stem, err);
}

struct merge_journal *merge_journal_open_stem(const char *dir, const char *name,
					      struct lm_error *err)
{
	struct merge_journal *j;
	char base[4096];
	json_object *last = NULL;
	int finished;

	if (*name == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0) {
		lm_error_set(err, LM_ERR_USAGE, "journal name '%s' is not a file name", name);
		return NULL;
	}
	if (merge_journal_dir(dir, base, sizeof(base), err) < 0)
		return NULL;
	j = calloc(1, sizeof(*j));
	if (j == NULL || asprintf(&j->path, "%s/%s.journal", base, name) < 0) {
		free(j);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	if (journal_history_path(j) < 0) {
		merge_journal_close(j);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	j->fd = -1;
	if (journal_open_file(j, base, err) < 0) {
		merge_journal_close(j);
		return NULL;
	}
	if (merge_journal_last(j, &last, &finished, err) < 0) {
		merge_journal_close(j);
		return NULL;
	}
	/* A crash may have torn the last line; end it, or the next entry would be
	 * glued to the fragment and lost with it (test-journal:
	 * test_write_after_torn_line). */
	{
		struct stat st;
		char c;

		if (fstat(j->fd, &st) == 0 && st.st_size > 0 &&
		    pread(j->fd, &c, 1, st.st_size - 1) == 1 && c != '\n' &&
		    (write(j->fd, "\n", 1) != 1 || fdatasync(j->fd) < 0)) {
			lm_error_set(err, LM_ERR_IO, "cannot write journal %s: %s", j->path,
				     strerror(errno));
			json_object_put(last);
			merge_journal_close(j);
			return NULL;
		}
	}
	if (last != NULL && json_object_array_length(last) > 0) {
		json_object *op;

		if (json_object_object_get_ex(json_object_array_get_idx(last, 0), "op", &op))
			j->op = json_object_get_int64(op);
	}
	json_object_put(last);
	if (j->op == 0) /* a journal made anew beside its history numbers on */
		j->op = journal_history_last_op(j);
	return j;
}

void merge_journal_close(struct merge_journal *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->path);
	free(j->history);
	free(j);
}

const char *merge_journal_path(const struct merge_journal *j)
{
	return j->path;
}

/* The JSON value that is the whole line [p, p+n), owned; NULL if it is not
 * one (a torn or foreign line). */
static json_object *journal_json_line(const char *p, size_t n)
{
	json_tokener *tok = json_tokener_new_ex(32);
	json_object *o;

	if (tok == NULL || n > INT32_MAX) {
		json_tokener_free(tok);
		return NULL;
	}
	o = json_tokener_parse_ex(tok, p, (int)n);
	if (o != NULL && (json_tokener_get_error(tok) != json_tokener_success ||
			  json_tokener_get_parse_end(tok) != n)) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* The object on the line [p, p+n) if it has an integer "op" and a member
 * key of type type, owned; NULL for anything else. */
static json_object *journal_op_line(const char *p, size_t n, const char *key, json_type type)
{
	json_object *o = journal_json_line(p, n), *v;

	if (o == NULL || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "op", &v) || !json_object_is_type(v, json_type_int) ||
	    !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* A journal entry: an integer "op" and a string "step". */
static json_object *journal_entry(const char *p, size_t n)
{
	return journal_op_line(p, n, "step", json_type_string);
}

static int64_t journal_op(json_object *o)
{
	return json_object_get_int64(json_object_object_get(o, "op"));
}

static const char *journal_step_of(json_object *o)
{
	return json_object_get_string(json_object_object_get(o, "step"));
}

/*
 * One operation as the file holds it: a run of entries that starts at an
 * intent or where the op number changes (the reader's rule), its bytes
 * [start, end) in the buffer (its lines, and any junk line between them).
 */
struct journal_run {
	int64_t op;
	size_t start, end;
	json_object *intent, *last_end; /* owned; NULL if none */
	json_object *entries;           /* owned, only when asked for */
};

/*
 * Split buf into runs; *runs malloc'd (free with journal_runs_free). keep:
 * also keep each run's entries. -1 on ENOMEM.
 */
static int journal_runs(const char *buf, size_t len, int keep, struct journal_run **runs,
			size_t *nruns)
{
	const char *p = buf, *end = buf + len;
	struct journal_run *r = NULL, *cur = NULL;
	size_t n = 0, cap = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		json_object *o;

		if (nl == NULL)
			break; /* torn last line: never fsync'ed, its step never sent */
		o = journal_entry(p, (size_t)(nl - p));
		if (o == NULL) {
			p = nl + 1;
			continue;
		}
		if (cur == NULL || strcmp(journal_step_of(o), "intent") == 0 ||
		    journal_op(o) != cur->op) {
			if (n == cap) {
				struct journal_run *nr = realloc(r, (cap ? cap * 2 : 16) * sizeof(*r));

				if (nr == NULL) {
					json_object_put(o);
					*runs = r;
					*nruns = n;
					return -1;
				}
				r = nr;
				cap = cap ? cap * 2 : 16;
			}
			cur = &r[n++];
			memset(cur, 0, sizeof(*cur));
			cur->op = journal_op(o);
			cur->start = (size_t)(p - buf);
			if (strcmp(journal_step_of(o), "intent") == 0)
				cur->intent = json_object_get(o);
			if (keep)
				cur->entries = json_object_new_array();
		}
		cur->end = (size_t)(nl + 1 - buf);
		if (strcmp(journal_step_of(o), "end") == 0) {
			json_object_put(cur->last_end);
			cur->last_end = json_object_get(o);
		}
		if (cur->entries != NULL)
			json_object_array_add(cur->entries, json_object_get(o));
		json_object_put(o);
		p = nl + 1;
	}
	*runs = r;
	*nruns = n;
	return 0;
}

static void journal_runs_free(struct journal_run *r, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		json_object_put(r[i].intent);
		json_object_put(r[i].last_end);
		json_object_put(r[i].entries);
	}
	free(r);
}

void merge_journal_parse(const char *buf, size_t len, json_object **entries, int *finished)
{
	struct journal_run *r;
	size_t n;

	journal_runs(buf, len, 1, &r, &n);
	*entries = NULL;
	*finished = 0;
	if (n > 0) {
		*entries = json_object_get(r[n - 1].entries);
		*finished = r[n - 1].last_end != NULL;
	}
	journal_runs_free(r, n);
}

/* Copy member k of src into o, if src has it. */
static void journal_copy(json_object *o, const char *k, json_object *src, const char *sk)
{
	json_object *v;

	if (src != NULL && json_object_object_get_ex(src, sk, &v))
		json_object_object_add(o, k, json_object_get(v));
}

/*
 * The chain state a finished run led to (see merge_journal_history), owned;
 * NULL when its end recorded no chains (a volume step, a journal written
 * before chains were recorded).
 */
static json_object *journal_state(const struct journal_run *r)
{
	json_object *o, *chains, *v;
	const char *iv = NULL, *ev = NULL;

	if (r->last_end == NULL || !json_object_object_get_ex(r->last_end, "chains", &chains) ||
	    !json_object_is_type(chains, json_type_array))
		return NULL;
	o = json_object_new_object();
	if (o == NULL)
		return NULL;
	json_object_object_add(o, "op", json_object_new_int64(r->op));
	journal_copy(o, "time", r->last_end, "ts");
	if (r->intent != NULL && json_object_object_get_ex(r->intent, "verb", &v) &&
	    json_object_is_type(v, json_type_string))
		iv = json_object_get_string(v);
	if (json_object_object_get_ex(r->last_end, "verb", &v) &&
	    json_object_is_type(v, json_type_string))
		ev = json_object_get_string(v);
	if (ev != NULL)
		json_object_object_add(o, "verb", json_object_new_string(ev));
	else if (iv != NULL)
		json_object_object_add(o, "verb", json_object_new_string(iv));
	if (json_object_object_get_ex(r->last_end, "target", &v))
		json_object_object_add(o, "target", json_object_get(v));
	else
		journal_copy(o, "target", r->intent, "target");
	if (ev != NULL && iv != NULL && strcmp(ev, iv) != 0) {
		/* recovery ended an operation that another verb began */
		json_object_object_add(o, "of", json_object_new_string(iv));
		journal_copy(o, "recovered", r->last_end, "recovered");
	}
	journal_copy(o, "outcome", r->last_end, "outcome");
	json_object_object_add(o, "disks", json_object_get(chains));
	return o;
}

void merge_journal_parse_states(const char *buf, size_t len, int64_t after, json_object *out)
{
	struct journal_run *r;
	size_t n, i;

	journal_runs(buf, len, 0, &r, &n);
	for (i = 0; i < n; i++) {
		json_object *st = r[i].op > after ? journal_state(&r[i]) : NULL;

		if (st != NULL)
			json_object_array_add(out, st);
	}
	journal_runs_free(r, n);
}

/* A history line: an object with an integer "op" and an array "disks". */
static json_object *journal_history_entry(const char *p, size_t n)
{
	return journal_op_line(p, n, "disks", json_type_array);
}

/* The first entry of a parsed run is its intent. */
static int journal_starts_with_intent(json_object *entries)
{
	json_object *v;

	return entries != NULL && json_object_array_length(entries) > 0 &&
	       json_object_object_get_ex(json_object_array_get_idx(entries, 0), "step", &v) &&
	       strcmp(json_object_get_string(v), "intent") == 0;
}

/*
 * Where the last line that looks like an intent starts in buf (the writer
 * puts "op" and "step" first: {"op":N,"step":"intent",...), found without
 * parsing what comes before it; (size_t)-1 if none. Only a shortcut: the
 * caller parses from there and checks.
 */
static size_t journal_last_intent(const char *buf, size_t n)
{
	static const char pre[] = "{\"op\":", mid[] = ",\"step\":\"intent\"";
	size_t i = n;

	while (i > 0) {
		size_t start, k;

		i--;
		if (i > 0 && buf[i - 1] != '\n')
			continue;
		start = i;
		if (n - start < sizeof(pre) - 1 || memcmp(buf + start, pre, sizeof(pre) - 1) != 0)
			continue;
		k = start + sizeof(pre) - 1;
		while (k < n && buf[k] >= '0' && buf[k] <= '9')
			k++;
		if (n - k >= sizeof(mid) - 1 && memcmp(buf + k, mid, sizeof(mid) - 1) == 0 &&
		    memchr(buf + k, '\n', n - k) != NULL)
			return start;
	}
	return (size_t)-1;
}

/*
 * Read from the end: the last operation is most often a few KiB, whatever
 * the journal's age. The window grows until it holds the operation's
 * intent (or the whole file, or the last 16 MiB).
 */
int merge_journal_last(struct merge_journal *j, json_object **entries, int *finished,
		       struct lm_error *err)
{
	struct stat st;
	size_t win = JOURNAL_TAIL_BYTES;

	*entries = NULL;
	*finished = 0;
	if (fstat(j->fd, &st) < 0)
		return lm_error_set(err, LM_ERR_IO, "journal %s: %s", j->path, strerror(errno));
	for (;; win *= 4) {
		size_t len = (size_t)st.st_size, off = 0, n;
		char *buf;

		if (win > JOURNAL_MAX_BYTES)
			win = JOURNAL_MAX_BYTES;
		if (len > win)
			off = len - win;
		buf = journal_read_from(j->fd, off, &n);
		if (buf == NULL)
			return lm_error_set(err, LM_ERR_IO, "journal %s: %s", j->path,
					    errno ? strerror(errno) : "cannot read");
		{
			size_t from = journal_last_intent(buf, n);

			/* a whole intent line starts the last operation: parse from there */
			if (from != (size_t)-1) {
				merge_journal_parse(buf + from, n - from, entries, finished);
				if (journal_starts_with_intent(*entries)) {
					free(buf);
					return 0;
				}
				json_object_put(*entries);
			}
		}
		if (off > 0) { /* start at a line boundary */
			char *nl = memchr(buf, '\n', n);
			size_t skip = nl ? (size_t)(nl - buf) + 1 : n;

			merge_journal_parse(buf + skip, n - skip, entries, finished);
		} else {
			merge_journal_parse(buf, n, entries, finished);
		}
		free(buf);
		if (off == 0 || win == JOURNAL_MAX_BYTES || journal_starts_with_intent(*entries))
			return 0;
		json_object_put(*entries);
		*entries = NULL;
		*finished = 0;
	}
}

/*
 * Which entries must reach the disk before their step is sent: the ones
 * recovery decides by. The intent (what the chains were and will be), a
 * freeze (the guest must be thawed), a finalize (past it recovery rolls
 * forward, before it back). Every other step is written at once too, so a
 * killed livemerge leaves it in the file (the kernel has it); only a host
 * crash can lose one, and recovery reads the live chains and jobs for
 * those, never the step. This keeps the syncs per operation at a few.
 */
static int journal_must_sync(const char *step)
{
	return strcmp(step, "intent") == 0 || strcmp(step, "freeze") == 0 ||
	       strcmp(step, "finalize") == 0;
}

static int journal_write(struct merge_journal *j, json_object *o, const char *step,
			 struct lm_error *err)
{
	struct timeval tv;
	const char *s;
	char *line;
	size_t len, done = 0;

	gettimeofday(&tv, NULL);
	json_object_object_add(o, "ts", json_object_new_double((double)tv.tv_sec +
							      (double)tv.tv_usec / 1e6));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	line = malloc(len + 1);
	if (line == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	memcpy(line, s, len);
	line[len] = '\n';
	while (done < len + 1) {
		ssize_t n = write(j->fd, line + done, len + 1 - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(line);
			return lm_error_set(err, LM_ERR_IO, "cannot write journal %s: %s (nothing was "
							    "sent for this step)", j->path, strerror(errno));
		}
		done += (size_t)n;
	}
	free(line);
	if (journal_must_sync(step) && fdatasync(j->fd) < 0)
		return lm_error_set(err, LM_ERR_IO, "cannot sync journal %s: %s", j->path,
				    strerror(errno));
	journal_crash_point(step);
	return 0;
}

/* Copy src's members into o. */
static void journal_merge(json_object *o, json_object *src)
{
	if (src == NULL)
		return;
	json_object_object_foreach(src, k, v)
	{
		json_object_object_add(o, k, json_object_get(v));
	}
}

int merge_journal_begin(struct merge_journal *j, json_object *entry, struct lm_error *err)
{
	json_object *o = json_object_new_object();
	int r;

	json_object_object_add(o, "op", json_object_new_int64(j->op + 1));
	json_object_object_add(o, "step", json_object_new_string("intent"));
	journal_merge(o, entry);
	r = journal_write(j, o, "intent", err);
	json_object_put(o);
	if (r == 0) {
		j->op++;
		j->in_op = 1;
	}
	return r;
}

int merge_journal_step(struct merge_journal *j, const char *step, json_object *fields,
		       struct lm_error *err)
{
	json_object *o = json_object_new_object();
	int r;

	json_object_object_add(o, "op", json_object_new_int64(j->op));
	json_object_object_add(o, "step", json_object_new_string(step));
	journal_merge(o, fields);
	r = journal_write(j, o, step, err);
	json_object_put(o);
	if (r == 0 && strcmp(step, "end") == 0) {
		struct stat st;
		struct lm_error ignored;

		j->in_op = 0;
		/* the steps of finished operations past the bound go (their chain
		 * states to the history); a failure leaves the journal whole */
		if (fstat(j->fd, &st) == 0 && (size_t)st.st_size > compact_bytes)
			merge_journal_compact(j, &ignored);
	}
	return r;
}

/* Write all of buf to fd; 0 or -1 (errno). */
static int journal_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync the directory that holds path. */
static int journal_sync_parent(const char *path, struct lm_error *err)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];

	if (slash == NULL)
		return journal_sync_dir(".", err);
	snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	return journal_sync_dir(dir, err);
}

/*
 * Append the chain states of runs[0..n) past the history's last op to the
 * history file, on stable storage before the journal may lose them. 0 or
 * -1 (err).
 */
static int journal_archive(struct merge_journal *j, const struct journal_run *runs, size_t n,
			   struct lm_error *err)
{
	int64_t last = journal_history_last_op(j);
	int fd = -1, created = 0, rc = -1;
	struct stat st;
	size_t i;

	for (i = 0; i < n; i++) {
		json_object *st_o = runs[i].op > last ? journal_state(&runs[i]) : NULL;
		const char *s;
		char c;

		if (st_o == NULL)
			continue;
		if (fd < 0) {
			fd = open(j->history, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			created = fd >= 0;
			if (fd < 0 && errno == EEXIST)
				fd = open(j->history, O_RDWR | O_APPEND | O_CLOEXEC);
			if (fd < 0) {
				json_object_put(st_o);
				lm_error_set(err, LM_ERR_IO, "cannot open %s: %s", j->history,
					     strerror(errno));
				goto out;
			}
			/* a line torn by a crash: end it (its state is still in the journal) */
			if (fstat(fd, &st) == 0 && st.st_size > 0 &&
			    pread(fd, &c, 1, st.st_size - 1) == 1 && c != '\n' &&
			    journal_write_all(fd, "\n", 1) < 0) {
				json_object_put(st_o);
				goto io;
			}
		}
		s = json_object_to_json_string_ext(st_o, JSON_C_TO_STRING_PLAIN |
							 JSON_C_TO_STRING_NOSLASHESCAPE);
		if (journal_write_all(fd, s, strlen(s)) < 0 || journal_write_all(fd, "\n", 1) < 0) {
			json_object_put(st_o);
			goto io;
		}
		json_object_put(st_o);
	}
	if (fd < 0)
		return 0;
	if (fdatasync(fd) < 0)
		goto io;
	if (created && journal_sync_parent(j->history, err) < 0)
		goto out;
	journal_crash_point("compact-history");
	rc = 0;
	goto out;
io:
	lm_error_set(err, LM_ERR_IO, "cannot write %s: %s", j->history, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

int merge_journal_compact(struct merge_journal *j, struct lm_error *err)
{
	struct journal_run *runs = NULL;
	size_t n = 0, len, i, kept = 0;
	char *buf = NULL, *tmp = NULL;
	int fd = -1, rc = -1;

	if (j->in_op)
		return 1; /* between an intent and its end: the next end compacts */
	if (journal_lock(j->fd, F_WRLCK) < 0)
		return 1; /* another handle has the journal open: it may be appending */
	buf = journal_read_from(j->fd, 0, &len);
	if (buf == NULL || journal_runs(buf, len, 0, &runs, &n) < 0) {
		lm_error_set(err, LM_ERR_IO, "cannot read journal %s", j->path);
		goto out;
	}
	/* kept: the last operation (the one a verb asks for), any unfinished one */
	for (i = 0; i < n; i++)
		if (i + 1 == n || runs[i].last_end == NULL)
			kept += runs[i].end - runs[i].start;
	if (kept == len) {
		rc = 1; /* nothing to drop */
		goto out;
	}
	if (journal_archive(j, runs, n, err) < 0)
		goto out;
	if (asprintf(&tmp, "%s.tmp", j->path) < 0) {
		tmp = NULL;
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto io;
	for (i = 0; i < n; i++)
		if ((i + 1 == n || runs[i].last_end == NULL) &&
		    journal_write_all(fd, buf + runs[i].start, runs[i].end - runs[i].start) < 0)
			goto io;
	if (fsync(fd) < 0)
		goto io;
	close(fd);
	fd = -1;
	journal_crash_point("compact-write");
	if (rename(tmp, j->path) < 0)
		goto io;
	journal_crash_point("compact-rename");
	if (journal_sync_parent(j->path, err) < 0)
		goto out;
	fd = open(j->path, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		goto io;
	journal_lock(fd, F_RDLCK);
	close(j->fd); /* and with it the exclusive lock on the file replaced */
	j->fd = fd;
	fd = -1;
	rc = 0;
	goto out;
io:
	lm_error_set(err, LM_ERR_IO, "cannot compact journal %s: %s", j->path, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0 && tmp != NULL)
		unlink(tmp);
	if (rc != 0)
		journal_lock(j->fd, F_RDLCK);
	free(tmp);
	free(buf);
	journal_runs_free(runs, n);
	return rc;
}

int merge_journal_history(struct merge_journal *j, json_object **states, struct lm_error *err)
{
	json_object *out = json_object_new_array();
	int64_t last = 0;
	size_t len;
	char *buf;
	int fd;

	*states = NULL;
	if (out == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	fd = open(j->history, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		json_object_put(out);
		return lm_error_set(err, LM_ERR_IO, "cannot open %s: %s", j->history,
				    strerror(errno));
	}
	if (fd >= 0) {
		char *p, *nl;

		buf = journal_read_from(fd, 0, &len);
		close(fd);
		if (buf == NULL) {
			json_object_put(out);
			return lm_error_set(err, LM_ERR_IO, "cannot read %s", j->history);
		}
		for (p = buf; (nl = memchr(p, '\n', len - (size_t)(p - buf))) != NULL; p = nl + 1) {
			json_object *o = journal_history_entry(p, (size_t)(nl - p));

			/* a state written twice (a crash between the history's sync and
			 * the journal's rename, then compacted again) is shown once */
			if (o != NULL && journal_op(o) > last) {
				last = journal_op(o);
				json_object_array_add(out, o);
			} else {
				json_object_put(o);
			}
		}
		free(buf);
	}
	buf = journal_read_from(j->fd, 0, &len);
	if (buf == NULL) {
		json_object_put(out);
		return lm_error_set(err, LM_ERR_IO, "cannot read journal %s", j->path);
	}
	merge_journal_parse_states(buf, len, last, out);
	free(buf);
	*states = out;
	return 0;
}

int merge_journal_in_op(const struct merge_journal *j)
{
	return j->in_op;
}

int merge_journal_read_last(const char *dir, const char *name, json_object **entries,
			    int *finished, struct lm_error *err)
{
	struct merge_journal j = { 0 };
	char base[4096], path[4096 + 512 + 16];
	int r;

	*entries = NULL;
	*finished = 0;
	if (*name == '\0' || strchr(name, '/') != NULL || strlen(name) >= 512)
		return lm_error_set(err, LM_ERR_USAGE, "journal name '%s' is not a file name", name);
	if (journal_base(dir, base, sizeof(base), err) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/%s.journal", base, name);
	j.path = path;
	j.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (j.fd < 0 && errno == ENOENT)
		return 0; /* no journal: livemerge never acted on this VM here */
	if (j.fd < 0)
		return lm_error_set(err, LM_ERR_IO, "cannot open journal %s: %s", path,
				    strerror(errno));
	r = merge_journal_last(&j, entries, finished, err);
	close(j.fd);
	return r;
}

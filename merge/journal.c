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

struct merge_journal {
	char *path;
	int fd;
	int64_t op; /* the current operation's number */
	int in_op;  /* this handle began op and has not ended it */
};

static const char *crash_step;
static int crash_count;

void merge_journal_set_crash_point(const char *step)
{
	crash_step = step;
	crash_count = 0;
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

/* Where the journal of the VM at target lives: its directory into base,
 * its file name (no directory) into name. 0, or -1 with err (USAGE). */
static int journal_locate(const char *dir, const char *target, char *base, size_t baselen,
			  char *name, size_t namelen, struct lm_error *err)
{
	size_t i, k = 0;

	if (dir != NULL) {
		snprintf(base, baselen, "%s", dir);
	} else if (getenv("XDG_STATE_HOME") && *getenv("XDG_STATE_HOME")) {
		snprintf(base, baselen, "%s/livemerge", getenv("XDG_STATE_HOME"));
	} else if (getenv("HOME") && *getenv("HOME")) {
		snprintf(base, baselen, "%s/.local/state/livemerge", getenv("HOME"));
	} else {
		return lm_error_set(err, LM_ERR_USAGE,
				    "no journal directory: set HOME or use --journal DIR");
	}
	/* the file is named after the target, readable: unix:/run/vm1/qmp.sock
	 * and /run/vm1/qmp.sock (the same monitor) -> _run_vm1_qmp.sock.journal */
	if (strncmp(target, "unix:", 5) == 0)
		target += 5;
	for (i = 0; target[i] && k < namelen - 16; i++) {
		char c = target[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '@'))
			c = '_';
		if (c == '_' && k > 0 && name[k - 1] == '_')
			continue;
		name[k++] = c;
	}
	name[k] = '\0';
	return 0;
}

struct merge_journal *merge_journal_open(const char *dir, const char *target,
					 struct lm_error *err)
{
	struct merge_journal *j;
	char base[4096], name[512];
	json_object *last = NULL;
	int finished;

	if (journal_locate(dir, target, base, sizeof(base), name, sizeof(name), err) < 0)
		return NULL;
	if (journal_mkdirs(base, err) < 0)
		return NULL;
	j = calloc(1, sizeof(*j));
	if (j == NULL || asprintf(&j->path, "%s/%s.journal", base, name) < 0) {
		free(j);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	j->fd = open(j->path, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (j->fd >= 0) {
		/* a new file: its name must survive a crash as its entries do */
		if (journal_sync_dir(base, err) < 0) {
			merge_journal_close(j);
			return NULL;
		}
	} else if (errno == EEXIST) {
		j->fd = open(j->path, O_RDWR | O_APPEND | O_CLOEXEC);
	}
	if (j->fd < 0) {
		lm_error_set(err, LM_ERR_IO, "cannot open journal %s: %s", j->path, strerror(errno));
		free(j->path);
		free(j);
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
	return j;
}

int merge_journal_read_last(const char *dir, const char *target, json_object **entries,
			    int *finished, struct lm_error *err)
{
	struct merge_journal j = { 0 };
	char base[4096], name[512], path[4096 + 512 + 16];
	int r;

	*entries = NULL;
	*finished = 0;
	if (journal_locate(dir, target, base, sizeof(base), name, sizeof(name), err) < 0)
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

void merge_journal_close(struct merge_journal *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->path);
	free(j);
}

const char *merge_journal_path(const struct merge_journal *j)
{
	return j->path;
}

void merge_journal_parse(const char *buf, size_t len, json_object **entries, int *finished)
{
	const char *p = buf, *end = buf + len;
	json_object *cur = NULL;
	int64_t cur_op = -1;

	*entries = NULL;
	*finished = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		json_object *o, *v;
		enum json_tokener_error jerr;
		json_tokener *tok;
		int64_t op;

		if (nl == NULL)
			break; /* torn last line: never fsync'ed, its step never sent */
		tok = json_tokener_new_ex(32);
		if (tok == NULL)
			break;
		o = json_tokener_parse_ex(tok, p, (int)(nl - p));
		jerr = json_tokener_get_error(tok);
		if (o != NULL && (jerr != json_tokener_success ||
				  json_tokener_get_parse_end(tok) != (size_t)(nl - p))) {
			json_object_put(o);
			o = NULL;
		}
		json_tokener_free(tok);
		p = nl + 1;
		if (o == NULL || !json_object_is_type(o, json_type_object) ||
		    !json_object_object_get_ex(o, "op", &v) || !json_object_is_type(v, json_type_int) ||
		    !json_object_object_get_ex(o, "step", &v) ||
		    !json_object_is_type(v, json_type_string)) {
			json_object_put(o);
			continue;
		}
		json_object_object_get_ex(o, "op", &v);
		op = json_object_get_int64(v);
		json_object_object_get_ex(o, "step", &v);
		if (strcmp(json_object_get_string(v), "intent") == 0 || op != cur_op) {
			json_object_put(cur);
			cur = json_object_new_array();
			cur_op = op;
			*finished = 0;
		}
		if (cur == NULL) {
			json_object_put(o);
			break;
		}
		json_object_object_get_ex(o, "step", &v);
		if (strcmp(json_object_get_string(v), "end") == 0)
			*finished = 1;
		json_object_array_add(cur, o);
	}
	*entries = cur;
}

int merge_journal_last(struct merge_journal *j, json_object **entries, int *finished,
		       struct lm_error *err)
{
	struct stat st;
	size_t len, off = 0;
	char *buf;
	ssize_t n;

	*entries = NULL;
	*finished = 0;
	if (fstat(j->fd, &st) < 0)
		return lm_error_set(err, LM_ERR_IO, "journal %s: %s", j->path, strerror(errno));
	len = (size_t)st.st_size;
	if (len > JOURNAL_MAX_BYTES) {
		off = len - JOURNAL_MAX_BYTES;
		len = JOURNAL_MAX_BYTES;
	}
	buf = malloc(len + 1);
	if (buf == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	n = pread(j->fd, buf, len, (off_t)off);
	if (n < 0) {
		free(buf);
		return lm_error_set(err, LM_ERR_IO, "journal %s: %s", j->path, strerror(errno));
	}
	if (off > 0) { /* start at a line boundary */
		char *nl = memchr(buf, '\n', (size_t)n);
		size_t skip = nl ? (size_t)(nl - buf) + 1 : (size_t)n;

		merge_journal_parse(buf + skip, (size_t)n - skip, entries, finished);
	} else {
		merge_journal_parse(buf, (size_t)n, entries, finished);
	}
	free(buf);
	return 0;
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
	if (crash_step != NULL) {
		const char *hash = strchr(crash_step, '#');
		size_t sl = hash ? (size_t)(hash - crash_step) : strlen(crash_step);
		int want = hash ? atoi(hash + 1) : 1;

		if (strlen(step) == sl && strncmp(step, crash_step, sl) == 0 && ++crash_count == want)
			raise(SIGKILL);
	}
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
	if (r == 0 && strcmp(step, "end") == 0)
		j->in_op = 0;
	return r;
}

int merge_journal_in_op(const struct merge_journal *j)
{
	return j->in_op;
}

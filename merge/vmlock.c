/*
 * merge/vmlock: the VM's key, its lock and its journal (see vmlock.h).
 */
#include "vmlock.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xlate.h"

#define VMLOCK_RETRY 0.2 /* s between tries while waiting for a lock */

/* A UUID as QEMU prints it: 8-4-4-4-12 hex digits, not all zero. */
static int vm_uuid_usable(const char *uuid)
{
	int i, nonzero = 0;

	if (uuid == NULL || strlen(uuid) != 36)
		return 0;
	for (i = 0; i < 36; i++) {
		char c = uuid[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return 0;
			continue;
		}
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return 0;
		nonzero |= c != '0';
	}
	return nonzero;
}

/* Append s to out[*k..size) with every byte outside [A-Za-z0-9.-] as _XX
 * (one way back: the encoding is injective). lower: fold A-Z. -1 if it does
 * not fit. */
static int vm_key_put(char *out, size_t *k, size_t size, const char *s, int lower)
{
	static const char hex[] = "0123456789abcdef";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (lower && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-') {
			if (*k + 1 >= size)
				return -1;
			out[(*k)++] = (char)c;
			continue;
		}
		if (*k + 3 >= size)
			return -1;
		out[(*k)++] = '_';
		out[(*k)++] = hex[c >> 4];
		out[(*k)++] = hex[c & 15];
	}
	out[*k] = '\0';
	return 0;
}

/* The host a target names, where a VM name is unique: ssh://[U@]HOST[:PORT]
 * -> HOST[:PORT] (":22" dropped), tcp:HOST:PORT -> HOST, else "local".
 * Written into out. */
static void vm_target_host(const char *target, char *out, size_t size)
{
	const char *p, *end, *at;
	size_t n;

	if (strncmp(target, "ssh://", 6) == 0) {
		p = target + 6;
		end = p + strcspn(p, "/");
		for (at = p; at < end; at++)
			if (*at == '@')
				p = at + 1;
		n = (size_t)(end - p);
		if (n > 3 && strncmp(end - 3, ":22", 3) == 0 && end[-4] != ':')
			n -= 3;
	} else if (strncmp(target, "tcp:", 4) == 0) {
		p = target + 4;
		end = strrchr(p, ':');
		n = end != NULL ? (size_t)(end - p) : strlen(p);
	} else {
		p = "local";
		n = 5;
	}
	if (n == 0)
		p = "local", n = 5;
	snprintf(out, size, "%.*s", (int)n, p);
}

void merge_vm_key(const char *uuid, const char *name, const char *target, char *key,
		  char *desc, size_t desc_size)
{
	char host[256];
	size_t k = 0;

	if (vm_uuid_usable(uuid)) {
		memcpy(key, "uuid+", 5);
		k = 5;
		vm_key_put(key, &k, MERGE_VM_KEY_MAX, uuid, 1);
		if (desc != NULL)
			snprintf(desc, desc_size, "uuid %s", key + 5);
		return;
	}
	if (name != NULL && *name != '\0') {
		vm_target_host(target, host, sizeof(host));
		memcpy(key, "name+", 5);
		k = 5;
		/* a key past 255 bytes would make no file name: the target names it */
		if (vm_key_put(key, &k, 240, name, 0) == 0 && k + 1 < 240 &&
		    (key[k++] = '+', vm_key_put(key, &k, 240, host, 1) == 0)) {
			if (desc != NULL)
				snprintf(desc, desc_size, "name '%s' on %s", name, host);
			return;
		}
	}
	merge_journal_target_stem(target, key, MERGE_VM_KEY_MAX);
	if (desc != NULL)
		snprintf(desc, desc_size, "monitor %s", target);
}

void merge_vm_free(struct merge_vm *vm)
{
	if (vm == NULL)
		return;
	if (vm->lock_fd >= 0) {
		/* say no more who holds it (a crash leaves the words: see
		 * vm_lock_holder), then let the lock go with the descriptor */
		if (ftruncate(vm->lock_fd, 0) < 0) {
			/* only the message of a later refusal depends on it */
		}
		close(vm->lock_fd);
	}
	free(vm);
}

/* What the lock file says of its holder, for the refused one's message. */
static void vm_lock_holder(int fd, char *out, size_t size)
{
	char buf[1024];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	json_object *o, *pid, *verb, *target;

	snprintf(out, size, "another process holds its lock (it has not said who it is)");
	if (n <= 0)
		return;
	buf[n] = '\0';
	o = json_tokener_parse(buf);
	/* a holder that is gone (its pid no longer exists) wrote what the file
	 * says, and someone else holds the lock now (a child of the holder) */
	if (o != NULL && json_object_object_get_ex(o, "pid", &pid) &&
	    json_object_object_get_ex(o, "verb", &verb) &&
	    json_object_object_get_ex(o, "target", &target) && json_object_get_int(pid) > 0 &&
	    (kill(json_object_get_int(pid), 0) == 0 || errno == EPERM))
		snprintf(out, size, "livemerge pid %d runs '%s' on it through %s",
			 json_object_get_int(pid), json_object_get_string(verb),
			 json_object_get_string(target));
	json_object_put(o);
}

int merge_vm_lock(struct merge_vm *vm, const char *dir, const char *verb, const char *target,
		  struct lm_error *err)
{
	char base[4096], *path, holder[600];
	json_object *o;
	const char *s;
	size_t len;
	int fd;

	if (vm->lock_fd >= 0)
		return 0;
	if (merge_journal_dir(dir, base, sizeof(base), err) < 0)
		return -1;
	if (asprintf(&path, "%s/%s.lock", base, vm->key) < 0)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		lm_error_set(err, LM_ERR_IO, "cannot open lock %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	/* flock, not fcntl: held per open file, so two claims in one process
	 * (a batch naming one VM twice) exclude each other too */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		if (e == EWOULDBLOCK)
			vm_lock_holder(fd, holder, sizeof(holder));
		close(fd);
		if (e == EWOULDBLOCK)
			lm_error_set(err, LM_ERR_BUSY, "the VM (%s) is busy: %s", vm->desc, holder);
		else
			lm_error_set(err, LM_ERR_IO, "cannot lock %s: %s", path, strerror(e));
		free(path);
		return -1;
	}
	free(path);
	o = json_object_new_object();
	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(o, "verb", json_object_new_string(verb));
	json_object_object_add(o, "target", json_object_new_string(target));
	json_object_object_add(o, "vm", json_object_new_string(vm->desc));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	len = strlen(s);
	/* who holds it is only for the message: a failure here is no failure */
	if (ftruncate(fd, 0) == 0 && pwrite(fd, s, len, 0) == (ssize_t)len)
		(void)pwrite(fd, "\n", 1, (off_t)len);
	json_object_put(o);
	vm->lock_fd = fd;
	return 0;
}

/* 1 if the file at path exists (a regular file, not followed), 0 if not,
 * -1 (err) if it cannot be told. */
static int vm_file_exists(const char *path, struct lm_error *err)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return lm_error_set(err, LM_ERR_IO, "cannot read %s: %s", path, strerror(errno));
	}
	if (!S_ISREG(st.st_mode))
		return lm_error_set(err, LM_ERR_IO, "journal %s is not a regular file", path);
	return 1;
}

struct merge_journal *merge_vm_journal_open(const char *dir, const struct merge_vm *vm,
					    const char *target, struct lm_error *err)
{
	char base[4096], old_stem[MERGE_VM_KEY_MAX], *old_path = NULL, *new_path = NULL;
	struct merge_journal *j = NULL;
	int old_exists, new_exists;

	merge_journal_target_stem(target, old_stem, sizeof(old_stem));
	if (strcmp(old_stem, vm->key) == 0)
		return merge_journal_open_stem(dir, vm->key, err);
	if (merge_journal_dir(dir, base, sizeof(base), err) < 0)
		return NULL;
	if (asprintf(&old_path, "%s/%s.journal", base, old_stem) < 0 ||
	    asprintf(&new_path, "%s/%s.journal", base, vm->key) < 0) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((old_exists = vm_file_exists(old_path, err)) < 0 ||
	    (new_exists = vm_file_exists(new_path, err)) < 0)
		goto out;
	if (old_exists && !new_exists) {
		/* the journal an older livemerge named after this monitor becomes
		 * the VM's; the directory is synced so the new name stays */
		if (rename(old_path, new_path) < 0 && errno != ENOENT) {
			lm_error_set(err, LM_ERR_IO, "cannot rename %s to %s: %s", old_path, new_path,
				     strerror(errno));
			goto out;
		}
	} else if (old_exists) {
		json_object *last = NULL;
		int finished = 1;

		/* both: an unfinished operation in the older is recovered there */
		j = merge_journal_open_stem(dir, old_stem, err);
		if (j == NULL)
			goto out;
		if (merge_journal_last(j, &last, &finished, err) < 0) {
			merge_journal_close(j);
			j = NULL;
			goto out;
		}
		json_object_put(last);
		if (last != NULL && !finished)
			goto out;
		merge_journal_close(j);
	}
	j = merge_journal_open_stem(dir, vm->key, err);
out:
	free(old_path);
	free(new_path);
	return j;
}

struct merge_vm_claim {
	struct qmp_conn *conn;
	struct ev_loop *loop;
	char *dir, *target, *verb;
	double wait_lock;
	void (*message)(const char *line, void *arg);
	merge_vm_claim_cb cb;
	void *arg;
	char *uuid;
	struct merge_vm *vm;
	ev_timer retry;
	double deadline;
	int pending;   /* a command in flight: its reply frees an abandoned claim */
	int abandoned; /* freed by its owner */
	int done;      /* cb ran */
};

static void vm_claim_destroy(struct merge_vm_claim *cl)
{
	ev_timer_stop(cl->loop, &cl->retry);
	merge_vm_free(cl->vm);
	free(cl->dir);
	free(cl->target);
	free(cl->verb);
	free(cl->uuid);
	free(cl);
}

static void vm_claim_finish(struct merge_vm_claim *cl, const struct lm_error *err)
{
	struct merge_vm *vm = err == NULL ? cl->vm : NULL;

	ev_timer_stop(cl->loop, &cl->retry);
	if (err == NULL)
		cl->vm = NULL;
	cl->done = 1;
	cl->cb(vm, err, cl->arg);
}

/* Try the lock; on a busy one wait (timer) while time is left. */
static void vm_claim_lock(struct merge_vm_claim *cl)
{
	struct ev_loop *loop = cl->loop;
	struct lm_error e;

	if (cl->verb == NULL || merge_vm_lock(cl->vm, cl->dir, cl->verb, cl->target, &e) == 0) {
		vm_claim_finish(cl, NULL);
		return;
	}
	if (e.code != LM_ERR_BUSY || cl->wait_lock <= 0) {
		vm_claim_finish(cl, &e);
		return;
	}
	if (cl->deadline == 0) {
		char line[1200];

		cl->deadline = ev_now(loop) + cl->wait_lock;
		if (cl->message != NULL) {
			snprintf(line, sizeof(line), "%s; waiting up to %g s for it", e.msg,
				 cl->wait_lock);
			cl->message(line, cl->arg);
		}
	} else if (ev_now(loop) >= cl->deadline) {
		lm_error_prefix(&e, "waited %g s: ", cl->wait_lock);
		vm_claim_finish(cl, &e);
		return;
	}
	ev_timer_set(&cl->retry, VMLOCK_RETRY, 0);
	ev_timer_start(loop, &cl->retry);
}

static void vm_claim_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	vm_claim_lock(w->data);
}

static void vm_claim_identified(struct merge_vm_claim *cl, const char *name)
{
	cl->vm = calloc(1, sizeof(*cl->vm));
	if (cl->vm == NULL) {
		struct lm_error e;

		lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
		vm_claim_finish(cl, &e);
		return;
	}
	cl->vm->lock_fd = -1;
	merge_vm_key(cl->uuid, name, cl->target, cl->vm->key, cl->vm->desc, sizeof(cl->vm->desc));
	vm_claim_lock(cl);
}

static void vm_claim_send(struct merge_vm_claim *cl, struct xl_cmd cmd);

/* QEMU's answer to query-uuid, then to query-name. An unknown command
 * (the storage daemon) is no answer; any other failure ends the claim. */
static void vm_claim_reply(struct qmp_conn *c, json_object *ret, const struct lm_error *err,
			   void *arg)
{
	struct merge_vm_claim *cl = arg;
	int asked_name = cl->uuid != NULL;
	const char *v;

	(void)c;
	cl->pending = 0;
	if (cl->abandoned) {
		vm_claim_destroy(cl);
		return;
	}
	if (err != NULL && !(err->code == LM_ERR_QMP && strcmp(err->qmp_class, "CommandNotFound") == 0)) {
		struct lm_error e = *err;

		lm_error_prefix(&e, "cannot tell which VM this is: ");
		vm_claim_finish(cl, &e);
		return;
	}
	if (!asked_name) {
		v = err == NULL ? xl_vm_uuid_of(ret) : NULL;
		cl->uuid = strdup(v != NULL ? v : "");
		if (cl->uuid == NULL) {
			struct lm_error e;

			lm_error_set(&e, LM_ERR_NOMEM, "out of memory");
			vm_claim_finish(cl, &e);
			return;
		}
		if (!vm_uuid_usable(cl->uuid) && err == NULL) {
			vm_claim_send(cl, xl_vm_name());
			return;
		}
		vm_claim_identified(cl, NULL);
		return;
	}
	vm_claim_identified(cl, err == NULL ? xl_vm_name_of(ret) : NULL);
}

static void vm_claim_send(struct merge_vm_claim *cl, struct xl_cmd cmd)
{
	struct lm_error e;

	cl->pending = 1;
	if (qmp_conn_execute(cl->conn, cmd.name, cmd.args, -1, vm_claim_reply, cl, &e) < 0) {
		cl->pending = 0;
		vm_claim_finish(cl, &e);
	}
	json_object_put(cmd.args);
}

struct merge_vm_claim *merge_vm_claim_start(struct qmp_conn *c,
					    const struct merge_vm_claim_opts *o,
					    merge_vm_claim_cb cb, void *arg, struct lm_error *err)
{
	struct merge_vm_claim *cl = calloc(1, sizeof(*cl));
	struct xl_cmd cmd = xl_vm_uuid();

	if (cl == NULL || (o->dir != NULL && (cl->dir = strdup(o->dir)) == NULL) ||
	    (cl->target = strdup(o->target)) == NULL ||
	    (o->verb != NULL && (cl->verb = strdup(o->verb)) == NULL)) {
		if (cl != NULL) {
			free(cl->dir);
			free(cl->target);
		}
		free(cl);
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	cl->conn = c;
	cl->loop = qmp_conn_loop(c);
	cl->wait_lock = o->wait_lock;
	cl->message = o->message;
	cl->cb = cb;
	cl->arg = arg;
	ev_timer_init(&cl->retry, vm_claim_retry_cb, VMLOCK_RETRY, 0);
	cl->retry.data = cl;
	cl->pending = 1;
	if (qmp_conn_execute(c, cmd.name, cmd.args, -1, vm_claim_reply, cl, err) < 0) {
		json_object_put(cmd.args);
		free(cl->dir);
		free(cl->target);
		free(cl->verb);
		free(cl);
		return NULL;
	}
	json_object_put(cmd.args);
	return cl;
}

void merge_vm_claim_free(struct merge_vm_claim *cl)
{
	if (cl == NULL)
		return;
	if (cl->pending) {
		/* the reply still comes (the connection answers or fails it) */
		cl->abandoned = 1;
		ev_timer_stop(cl->loop, &cl->retry);
		return;
	}
	vm_claim_destroy(cl);
}

int merge_vm_journal_read_last(const char *dir, const struct merge_vm *vm, const char *target,
			       json_object **entries, int *finished, struct lm_error *err)
{
	char stem[MERGE_VM_KEY_MAX];
	json_object *old = NULL;
	int old_finished = 1;

	if (merge_journal_read_last(dir, vm->key, entries, finished, err) < 0)
		return -1;
	merge_journal_target_stem(target, stem, sizeof(stem));
	if (strcmp(stem, vm->key) == 0 ||
	    merge_journal_read_last(dir, stem, &old, &old_finished, err) < 0)
		return 0;
	if (old != NULL && !old_finished) {
		/* as merge_vm_journal_open: the older's unfinished operation first */
		json_object_put(*entries);
		*entries = old;
		*finished = 0;
		return 0;
	}
	json_object_put(old);
	return 0;
}

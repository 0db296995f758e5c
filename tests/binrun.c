/*
 * binrun: the real livemerge binary against a scripted fake monitor, for
 * tests. See binrun.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "binrun.h"
#include "testutil.h"

static void binrun_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct binrun *br = w->data;

	(void)revents;
	br->status = w->rstatus;
	ev_child_stop(loop, w);
	w->data = NULL;
}

/* binrun_show() into buf of size bytes. */
static const char *binrun_show_into(char *buf, size_t size, const char *text, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 5 < size; i++) {
		unsigned char c = (unsigned char)text[i];

		if ((c >= 0x20 && c < 0x7f) || c == '\n')
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
	}
	buf[o] = '\0';
	return buf;
}

const char *binrun_show(const char *text, size_t n)
{
	static char buf[4096];

	return binrun_show_into(buf, sizeof(buf), text, n);
}

char *binrun_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	do {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
	} while (r > 0);
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

int binrun_init(struct binrun *br)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char self[PATH_MAX], name[NAME_MAX + 1];
	ssize_t n;

	memset(br, 0, sizeof(*br));
	br->lfd = -1;
	/* the binary of this build tree: BUILD/tests/test-NAME -> BUILD/livemerge */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return -1;
	self[n] = '\0';
	snprintf(name, sizeof(name), "%s", basename(self));
	snprintf(br->lm, sizeof(br->lm), "%s/livemerge", dirname(dirname(self)));
	if (access(br->lm, X_OK) != 0) {
		fprintf(stderr, "%s: no %s (make builds it)\n", name, br->lm);
		return -1;
	}
	snprintf(br->dir, sizeof(br->dir), "/tmp/lm-%.40s-XXXXXX", name);
	if (mkdtemp(br->dir) == NULL)
		return -1;
	snprintf(br->sock, sizeof(br->sock), "%s/m.sock", br->dir);
	snprintf(br->out, sizeof(br->out), "%s/out", br->dir);
	snprintf(br->err, sizeof(br->err), "%s/err", br->dir);
	snprintf(br->journal, sizeof(br->journal), "%s/j", br->dir);
	if (strlen(br->sock) >= sizeof(sa.sun_path))
		goto fail;
	memcpy(sa.sun_path, br->sock, strlen(br->sock) + 1);
	br->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (br->lfd < 0 || bind(br->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(br->lfd, 1) < 0)
		goto fail;
	br->loop = EV_DEFAULT;
	return 0;
fail:
	binrun_fini(br);
	return -1;
}

void binrun_fini(struct binrun *br)
{
	fq_free(br->fq);
	br->fq = NULL;
	if (br->lfd >= 0)
		close(br->lfd);
	br->lfd = -1;
	free(br->stdout_text);
	free(br->stderr_text);
	br->stdout_text = br->stderr_text = NULL;
	if (br->dir[0] != '\0')
		test_rm_rf(br->dir);
	br->dir[0] = '\0';
}

int binrun_run(struct binrun *br, const char *crash_at, void (*script)(struct fq *fq, void *arg),
	       void *arg, ...)
{
	char *argv[32], target[160];
	ev_child cw;
	va_list ap;
	pid_t pid;
	int n = 0;

	snprintf(target, sizeof(target), "unix:%s", br->sock);
	argv[n++] = br->lm;
	argv[n++] = "-c";
	argv[n++] = target;
	argv[n++] = "--journal";
	argv[n++] = br->journal;
	va_start(ap, arg);
	while (n < 31 && (argv[n] = va_arg(ap, char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	fq_free(br->fq);
	br->fq = NULL;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(br->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(br->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(127);
		if (crash_at != NULL)
			setenv("LIVEMERGE_CRASH_AT", crash_at, 1);
		else
			unsetenv("LIVEMERGE_CRASH_AT");
		execv(argv[0], argv);
		_exit(127);
	}
	br->status = -1;
	ev_child_init(&cw, binrun_child_cb, pid, 0);
	cw.data = br;
	ev_child_start(br->loop, &cw);
	if (script != NULL) {
		struct pollfd p = { .fd = br->lfd, .events = POLLIN };
		int fd;

		if (poll(&p, 1, 10000) != 1) {
			kill(pid, SIGKILL);
			fail_msg("livemerge did not connect within 10 s");
		}
		fd = accept4(br->lfd, NULL, NULL, SOCK_CLOEXEC);
		assert_true(fd >= 0);
		br->fq = fq_new_on_fd(br->loop, fd);
		script(br->fq, arg);
	}
	TEST_RUN_UNTIL(br->loop, cw.data == NULL, 20, {
		ev_child_stop(br->loop, &cw);
		kill(pid, SIGKILL);
	});
	if (br->fq != NULL)
		TEST_RUN_UNTIL(br->loop, fq_done(br->fq), 5, (void)0);
	free(br->stdout_text);
	free(br->stderr_text);
	br->stdout_text = binrun_slurp(br->out, &br->stdout_len);
	br->stderr_text = binrun_slurp(br->err, &br->stderr_len);
	if (br->fq != NULL && fq_verify(br->fq) != 0) {
		char e[4096], o[4096];

		fail_msg("the fake's script was not followed; livemerge said:\n%s%s",
			 binrun_show_into(e, sizeof(e), br->stderr_text, br->stderr_len),
			 binrun_show_into(o, sizeof(o), br->stdout_text, br->stdout_len));
	}
	return br->status;
}

int binrun_exit_code(struct binrun *br, int status)
{
	if (!WIFEXITED(status))
		fail_msg("livemerge did not exit (status %#x):\n%s", status,
			 binrun_show(br->stderr_text, br->stderr_len));
	return WEXITSTATUS(status);
}

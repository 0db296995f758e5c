/*
 * testutil: what the cmocka tests share: running the loop under a watchdog,
 * and removing a temp tree. Include after <cmocka.h>.
 */
#ifndef LM_TESTUTIL_H
#define LM_TESTUTIL_H

#include <dirent.h>
#include <ev.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline void test_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	*(int *)w->data = 1;
	ev_break(loop, EVBREAK_ONE);
}

/* Run loop until cond holds; after secs run on_fire and fail the test. */
#define TEST_RUN_UNTIL(loop, cond, secs, on_fire)                                            \
	do {                                                                                 \
		ev_timer wd_;                                                                \
		int fired_ = 0;                                                              \
		ev_timer_init(&wd_, test_watchdog_cb, (secs), 0.);                           \
		wd_.data = &fired_;                                                          \
		ev_timer_start((loop), &wd_);                                                \
		while (!(cond) && !fired_)                                                   \
			ev_run((loop), EVRUN_ONCE);                                          \
		ev_timer_stop((loop), &wd_);                                                 \
		if (fired_) {                                                                \
			on_fire;                                                             \
			fail_msg("watchdog: %s still false after %g s", #cond,               \
				 (double)(secs));                                            \
		}                                                                            \
	} while (0)

/* Run loop for secs, whatever happens (to see that nothing more does). */
static inline void test_run_for(struct ev_loop *loop, double secs)
{
	ev_timer wd;
	int fired = 0;

	ev_timer_init(&wd, test_watchdog_cb, secs, 0.);
	wd.data = &fired;
	ev_timer_start(loop, &wd);
	while (!fired)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &wd);
}

/* rm -r of what a test made (plain files and directories only). */
static inline void test_rm_rf(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (lstat(path, &st) < 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	d = opendir(path);
	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			char sub[PATH_MAX];
			int n;

			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			n = snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			if (n > 0 && (size_t)n < sizeof(sub))
				test_rm_rf(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

/* A test whose state is a fresh directory /tmp/lm-test-NAME-XXXXXX, removed
 * with what it holds afterwards: cmocka setup and teardown bodies. */
struct test_dir {
	char dir[512];
};

static inline int test_dir_setup(void **state, const char *name)
{
	struct test_dir *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/lm-test-%s-XXXXXX", name);
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static inline int test_dir_teardown(void **state)
{
	struct test_dir *fx = *state;

	test_rm_rf(fx->dir);
	free(fx);
	return 0;
}

#endif

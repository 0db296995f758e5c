/*
 * binrun: run the real livemerge binary of this build tree against a
 * scripted fake monitor, for the tests of what the binary does as a whole
 * (test-cli-output, test-trust).
 *
 * binrun_init() makes a temp dir holding a unix socket that listens for the
 * monitor, and finds BUILD/livemerge next to the test's BUILD/tests/.
 * binrun_run() runs livemerge -c unix:SOCK --journal DIR/j ARGS with stdout
 * and stderr going to files in the dir; once the binary connects, the
 * accepted connection goes to a fresh fakeqmp and the test's script writes
 * the fake's part. The loop runs until the binary exits (20 s at most, then
 * it is killed), then until the script is used up (5 s); the outputs are
 * read back, and a script not followed fails the test.
 *
 *     struct binrun br;
 *     binrun_init(&br);                                 (cmocka setup)
 *     st = binrun_run(&br, NULL, script, arg, "chain", NULL);
 *     assert_int_equal(binrun_exit_code(&br, st), 0);
 *     assert_non_null(strstr(br.stdout_text, "vda"));
 *     binrun_fini(&br);                                 (cmocka teardown)
 *
 * Ownership: the struct is the caller's (alone or inside its fixture); what
 * it points to is binrun's. binrun_fini() frees the fake and the outputs,
 * closes the socket and removes the temp dir with all a test put in it. The
 * fake (fq) and the outputs of a run are valid until the next run. Failures
 * of a run end the test (cmocka's fail_msg); include after <cmocka.h>.
 */
#ifndef TESTS_BINRUN_H
#define TESTS_BINRUN_H

#include <ev.h>
#include <limits.h>
#include <stddef.h>

#include "fakeqmp.h"

struct binrun {
	char dir[64];      /* the temp dir: /tmp/lm-TESTNAME-XXXXXX */
	char sock[128];    /* DIR/m.sock, where the binary finds its monitor */
	char out[128];     /* DIR/out, the binary's stdout */
	char err[128];     /* DIR/err, its stderr */
	char journal[128]; /* DIR/j, its --journal */
	char lm[PATH_MAX]; /* BUILD/livemerge */
	int lfd;           /* listening on sock */
	struct ev_loop *loop;
	struct fq *fq;     /* the last run's fake, NULL before the first */
	int status;        /* the last run's wait status, -1 while it runs */
	char *stdout_text, *stderr_text; /* the last run's outputs, NUL-terminated */
	size_t stdout_len, stderr_len;
};

/*
 * Fill br: the temp dir, the listening socket, the binary's path. Returns 0,
 * or -1 with the reason on stderr (no binary: make builds it), leaving
 * nothing behind.
 */
int binrun_init(struct binrun *br);

/* Undo binrun_init() and free what the runs left. */
void binrun_fini(struct binrun *br);

/*
 * Run the binary with the arguments after arg (NULL-terminated, at most 26),
 * LIVEMERGE_CRASH_AT=crash_at in its environment (NULL: unset).
 * script(fq, arg) writes the fake's part once the binary connected; script
 * NULL: the binary is not expected to connect. Returns the wait status (also
 * in br->status); the outputs are in br->stdout_text / stderr_text.
 */
int binrun_run(struct binrun *br, const char *crash_at, void (*script)(struct fq *fq, void *arg),
	       void *arg, ...) __attribute__((sentinel));

/* The exit code of a run that must have exited by itself (status from binrun_run()). */
int binrun_exit_code(struct binrun *br, int status);

/* A whole file (owned, NUL-terminated), its length in *len; fails the test
 * if it cannot be read. */
char *binrun_slurp(const char *path, size_t *len);

/*
 * n bytes of text for a failure message, bytes outside printable ASCII but
 * '\n' as \xHH: a failing test's report must not drive the terminal either.
 * A static buffer, overwritten by the next call; cut at about 4 KiB.
 */
const char *binrun_show(const char *text, size_t n);

#endif

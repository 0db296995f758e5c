/*
 * fakeqmp: a scripted fake QMP server for tests, in the test's own process.
 *
 * The fake holds one end of a socketpair and runs on the same libev loop as
 * the code under test, which gets the other end from fq_fd(). A test first
 * writes a script, a list of steps run strictly in order, then runs its loop.
 * Steps that only send run at once; fq_expect() waits for the client's next
 * command; fq_delay() and split sends wait on a timer; fq_expect_eof() waits
 * for the client to close its end.
 *
 *     struct fq *fq = fq_new(loop);
 *     fq_handshake(fq);                         greeting + qmp_capabilities
 *     fq_expect(fq, "block-commit", "{\"job-id\":\"c1\"}");
 *     fq_job_status(fq, "c1", "created");       events before the reply,
 *     fq_job_status(fq, "c1", "running");       as QEMU sends them
 *     fq_reply_return(fq, "{}");                echoes block-commit's id
 *     fq_block_job_ready(fq, "c1", "commit");
 *     t = tr_new_fd(fq_fd(fq), "fake", &err);   ... run the loop ...
 *     assert_int_equal(fq_verify(fq), 0);       every step used, no surprise
 *     fq_free(fq);
 *
 * Commands. A command the client sends is matched against the script's
 * current fq_expect() step by name and, when given, by arguments: the
 * expected arguments are a JSON subset (every member the script names must
 * be there with an equal value, recursively; arrays must have the same
 * length, element by element; extra members the client sends are fine). A
 * command that arrives while the script is at another step (a send, a
 * delay) waits in a queue for the next fq_expect(). A command that does not
 * match, or arrives after the script ended, is unexpected: it is recorded
 * as a failure for fq_verify() and answered at once with a GenericError
 * "fakeqmp: unexpected command ..." so the client does not hang.
 *
 * Replies. fq_reply_*() answer the most recent fq_expect() (its id echoed,
 * whatever type it had); the *_to() forms answer the command of an earlier
 * handle, so replies can come out of order. fq_reply_return_id() sends a
 * deliberately chosen id.
 *
 * Failures (an unexpected command, bad JSON in the script or from the
 * client, a write error, script steps left unused) are collected and
 * reported by fq_verify(). Set FAKEQMP_TRACE=1 in the environment to see the
 * traffic on stderr.
 *
 * Recipes. Never greet: an empty script (the fake reads and says nothing).
 * Close in the middle of a message: fq_send(fq, "{\"return\": {\"st"); fq_close(fq).
 * One byte every 5 ms: fq_send(fq, text); fq_split(fq, 1, 0.005). A reply
 * to an id never sent: fq_reply_return_id(fq, "999", "{}"). QEMU's
 * id-less parse error: fq_send(fq, "{\"error\": {...}}\r\n"). Events while
 * a command runs (as block-commit's JOB_STATUS_CHANGE created/running):
 * fq_expect(); fq_job_status() ...; fq_reply_return(). Act on the client
 * side at an exact point of the script: fq_call().
 *
 * JSON arguments of the script functions are text; NULL means "none". The
 * fake copies every string it is given. Ownership: fq_new() returns an owned
 * fake, freed with fq_free() (which closes its end, and the client end too
 * if fq_fd() never handed it out).
 */
#ifndef TESTS_FAKEQMP_H
#define TESTS_FAKEQMP_H

#include <ev.h>
#include <json-c/json.h>
#include <stddef.h>

struct fq;

/* A fake on loop with a fresh socketpair. Aborts if the system refuses. */
struct fq *fq_new(struct ev_loop *loop);

/*
 * A fake on a server-side fd the test already has (a connection accepted
 * from a real unix or tcp listener, to test connecting). Takes fd and makes
 * it non-blocking; fq_fd() then returns -1.
 */
struct fq *fq_new_on_fd(struct ev_loop *loop, int fd);

/* Stop watching, close both ends still held, free the script. NULL is fine. */
void fq_free(struct fq *fq);

/*
 * The client end of the socketpair. The caller takes it (e.g. tr_new_fd()
 * takes it in turn); fq_free() then leaves it alone. Each call returns the
 * same fd.
 */
int fq_fd(struct fq *fq);

/* --- sending ------------------------------------------------------------ */

/* Send text as is (a greeting, an event, a reply, garbage). */
void fq_send(struct fq *fq, const char *text);

/* Send len raw bytes (may contain NULs). */
void fq_send_bytes(struct fq *fq, const void *buf, size_t len);

/*
 * Make the last sending step (fq_send*, fq_reply_*, fq_event*, fq_greeting
 * ...) write its bytes in pieces of chunk bytes, waiting delay seconds
 * between pieces (0: as fast as the socket takes them, still one write per
 * piece). fq_split(fq, 1, 0.002) sends one byte every 2 ms.
 */
void fq_split(struct fq *fq, size_t chunk, double delay);

/* QEMU 7.2's greeting with capabilities ["oob"]. */
void fq_greeting(struct fq *fq);

/* A greeting naming another QEMU version. */
void fq_greeting_version(struct fq *fq, int major, int minor, int micro);

/* fq_greeting() + fq_expect("qmp_capabilities", NULL) + fq_reply_return("{}"). */
void fq_handshake(struct fq *fq);

/* The answer of a monitor that does not say which VM it is (as the storage
 * daemon's): query-uuid is CommandNotFound, so the VM's journal and lock
 * are named after the target (merge/vmlock.h). Verbs that change state ask
 * it right after the handshake. */
void fq_no_identity(struct fq *fq);

/*
 * Send {"event": name, "data": data_json, "timestamp": {...}}; data_json NULL
 * leaves "data" out. The timestamp is deterministic: seconds 1700000000+n,
 * microseconds n, where n counts this fake's events from 1.
 */
void fq_event(struct fq *fq, const char *name, const char *data_json);

/* The same with an explicit timestamp. */
void fq_event_ts(struct fq *fq, const char *name, const char *data_json, long long sec,
		 long long usec);

/* Block-job events as QEMU 7.2 words them (len/offset 1048576, speed 0). */
void fq_job_status(struct fq *fq, const char *job_id, const char *status); /* JOB_STATUS_CHANGE */
void fq_block_job_ready(struct fq *fq, const char *job_id, const char *type);
void fq_block_job_pending(struct fq *fq, const char *job_id, const char *type);
/* error NULL: success; otherwise the "error" member a failed job carries. */
void fq_block_job_completed(struct fq *fq, const char *job_id, const char *type,
			    const char *error);

/* --- commands and replies ---------------------------------------------- */

/*
 * Wait for the client's next command; it must be name with arguments
 * matching args_subset_json (NULL: any arguments, or none). Returns a handle
 * for fq_reply_*_to() and fq_command_json().
 */
int fq_expect(struct fq *fq, const char *name, const char *args_subset_json);

/* {"return": ret_json, "id": <id of the last fq_expect()>} */
void fq_reply_return(struct fq *fq, const char *ret_json);

/* {"error": {"class": cls, "desc": desc}, "id": <id of the last fq_expect()>} */
void fq_reply_error(struct fq *fq, const char *cls, const char *desc);

/* The same for the command of handle h. */
void fq_reply_return_to(struct fq *fq, int h, const char *ret_json);
void fq_reply_error_to(struct fq *fq, int h, const char *cls, const char *desc);

/* {"return": ret_json, "id": id_json}: any id, e.g. one never sent. */
void fq_reply_return_id(struct fq *fq, const char *id_json, const char *ret_json);

/* fq_expect() then fq_reply_return(). Returns the handle. */
int fq_command(struct fq *fq, const char *name, const char *args_subset_json,
	       const char *ret_json);

/* The whole command received for handle h (borrowed), NULL until it came. */
json_object *fq_command_json(struct fq *fq, int h);

/* --- time, closing, hooks ---------------------------------------------- */

/* Wait secs before the next step. */
void fq_delay(struct fq *fq, double secs);

/* Close the server end: the client reads EOF (mid-message if the last send
 * was a partial one). Steps after this can only be delays and calls. */
void fq_close(struct fq *fq);

/* Wait until the client closes its end (reads EOF). */
void fq_expect_eof(struct fq *fq);

/* Call fn(fq, arg) when the script reaches this step. */
void fq_call(struct fq *fq, void (*fn)(struct fq *fq, void *arg), void *arg);

/* --- results ------------------------------------------------------------ */

/* 1 once every step has run. */
int fq_done(const struct fq *fq);

/* Commands received so far (matched or not). */
int fq_received(const struct fq *fq);

/*
 * The number of problems: failures recorded while running plus one for each
 * step never reached. Each is printed to stderr with "fakeqmp: ". 0 is a
 * clean run.
 */
int fq_verify(struct fq *fq);

/* The same count, printing nothing (for tests that expect problems). */
int fq_problems(const struct fq *fq);

#endif

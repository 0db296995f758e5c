/*
 * escape: what the CLI shows a person, made safe for a terminal.
 *
 * Strings from the monitor and the guest agent (file and node names, job
 * ids, QEMU's error texts) are untrusted: a guest that took over QEMU
 * chooses them. Every human print path goes through here, so none of them
 * can move the cursor, retitle the window, recolour, clear the screen or
 * forge a line. JSON output (--json) does not: json-c escapes it and it
 * carries the exact bytes.
 *
 * The rules are the library's (common/lm-escape.h).
 */
#ifndef LM_CLI_ESCAPE_H
#define LM_CLI_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

#include "../common/lm-escape.h"

enum cli_escape_flags {
	CLI_ESC_KEEP_NL = LM_ESC_KEEP_NL, /* '\n' stays a line break */
	CLI_ESC_JSON = LM_ESC_JSON,       /* src is json-c's JSON text; stays JSON */
};

/* lm_escape, for the CLI. */
size_t cli_escape(char *dst, size_t cap, const char *src, size_t n, int flags);

/* s escaped (malloc'd, the caller frees); aborts when out of memory. */
char *cli_escape_dup(const char *s, int flags);

/* Write s escaped to f (no newline added). */
void cli_put_escaped(FILE *f, const char *s, int flags);

/* One line of human output on f: fmt formatted, the whole line escaped,
 * then '\n'. */
void cli_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

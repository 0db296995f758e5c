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
 * Escaped: C0 controls (ESC, BEL, CR, LF, TAB ...), DEL, the C1 controls
 * U+0080..U+009F (as UTF-8) and bytes that are not UTF-8. Valid UTF-8 text
 * passes unchanged. Plain text gets \n \r \t, \xHH for the other controls
 * and stray bytes, \u00HH for C1, and a backslash doubled, so what is shown
 * reads back unambiguously.
 */
#ifndef LM_CLI_ESCAPE_H
#define LM_CLI_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

enum cli_escape_flags {
	/* text of several lines: '\n' stays a line break */
	CLI_ESC_KEEP_NL = 1,
	/* src is JSON text written by json-c: its backslashes are JSON escapes
	 * and stay; what is escaped becomes a JSON escape (\u00HH; a byte that
	 * is not UTF-8 becomes \ufffd), so the text stays JSON of the same value */
	CLI_ESC_JSON = 2,
};

/*
 * Escape src[0..n) into dst, at most cap bytes with the terminating NUL
 * (dst may be NULL when cap is 0). Returns the length of the whole escaped
 * text, as snprintf does: the output was cut if that is >= cap.
 */
size_t cli_escape(char *dst, size_t cap, const char *src, size_t n, int flags);

/* s escaped (malloc'd, the caller frees); aborts when out of memory. */
char *cli_escape_dup(const char *s, int flags);

/* Write s escaped to f (no newline added). */
void cli_put_escaped(FILE *f, const char *s, int flags);

/* One line of human output on f: fmt formatted, the whole line escaped,
 * then '\n'. */
void cli_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

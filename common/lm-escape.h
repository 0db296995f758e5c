/*
 * lm-escape: text from a host, a monitor or a guest agent, made safe to
 * show a person.
 *
 * What such a peer says is untrusted (a guest that took over QEMU, a host
 * program's stderr): printed raw it could move the cursor, retitle the
 * window or forge a line. The library escapes it before it puts it into an
 * error message; the CLI's print paths (cli/escape.h) use the same rules.
 *
 * Escaped: C0 controls (ESC, BEL, CR, LF, TAB ...), DEL, the C1 controls
 * U+0080..U+009F (as UTF-8) and bytes that are not UTF-8. Valid UTF-8 text
 * passes unchanged. Plain text gets \n \r \t, \xHH for the other controls
 * and stray bytes, \u00HH for C1, and a backslash doubled, so what is shown
 * reads back unambiguously.
 */
#ifndef LM_ESCAPE_H
#define LM_ESCAPE_H

#include <stddef.h>

enum lm_escape_flags {
	/* text of several lines: '\n' stays a line break */
	LM_ESC_KEEP_NL = 1,
	/* src is JSON text written by json-c: its backslashes are JSON escapes
	 * and stay; what is escaped becomes a JSON escape (\u00HH; a byte that
	 * is not UTF-8 becomes \ufffd), so the text stays JSON of the same value */
	LM_ESC_JSON = 2,
};

/*
 * Escape src[0..n) into dst, at most cap bytes with the terminating NUL
 * (dst may be NULL when cap is 0). Returns the length of the whole escaped
 * text, as snprintf does: the output was cut if that is >= cap.
 */
size_t lm_escape(char *dst, size_t cap, const char *src, size_t n, int flags);

#endif

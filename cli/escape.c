/*
 * escape: terminal-safe rendering of human output (see escape.h).
 */
#include "escape.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

size_t cli_escape(char *dst, size_t cap, const char *src, size_t n, int flags)
{
	return lm_escape(dst, cap, src, n, flags);
}

char *cli_escape_dup(const char *s, int flags)
{
	size_t n = strlen(s), len = cli_escape(NULL, 0, s, n, flags);
	char *out = malloc(len + 1);

	if (out == NULL)
		abort();
	cli_escape(out, len + 1, s, n, flags);
	return out;
}

void cli_put_escaped(FILE *f, const char *s, int flags)
{
	char *e = cli_escape_dup(s, flags);

	fputs(e, f);
	free(e);
}

void cli_line(FILE *f, const char *fmt, ...)
{
	va_list ap;
	char *line;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		abort();
	va_end(ap);
	cli_put_escaped(f, line, 0);
	fputc('\n', f);
	free(line);
}

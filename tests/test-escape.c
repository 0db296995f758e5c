/*
 * test-escape: cli/escape, the one place human output is made safe for a
 * terminal: every C0 control byte, DEL, ESC sequences, newline, backslash,
 * valid UTF-8 unchanged (ASCII, 2-, 3- and 4-byte characters, the edges
 * around C1 and the top of Unicode), the C1 controls U+0080..U+009F, bytes
 * that are not UTF-8 (stray continuations, overlong forms, surrogates,
 * beyond U+10FFFF, cut sequences), multi-line text, the JSON flavour (the
 * escaped text is JSON of the same value), truncation, and the line printer.
 *
 * The rules live in the library (common/lm-escape.c); the CLI's wrappers in
 * cli/escape.c. cli/ is not in liblivemerge: both sources are compiled in
 * here (the test also uses the UTF-8 decoder, a static function).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cli/escape.c"
#include "../common/lm-escape.c"

/* Escaped n bytes of src (static buffer). */
static const char *esc_n(const char *src, size_t n, int flags)
{
	static char buf[4096];
	size_t len = cli_escape(buf, sizeof(buf), src, n, flags);

	assert_true(len < sizeof(buf));
	assert_int_equal(strlen(buf), len);
	return buf;
}

static const char *esc(const char *src)
{
	return esc_n(src, strlen(src), 0);
}

/* No byte a terminal acts on: no C0 control, no DEL, no C1, only UTF-8. */
static void assert_terminal_safe(const char *s, int keep_nl)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i, n = strlen(s), k;
	uint32_t cp;

	for (i = 0; i < n; i += k) {
		k = esc_utf8(u + i, n - i, &cp);
		assert_int_not_equal(k, 0);
		if (cp == '\n' && keep_nl)
			continue;
		assert_false(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f));
	}
}

static void test_every_c0_control_and_del(void **state)
{
	char in[4], want[16];
	int c;

	(void)state;
	for (c = 0; c < 0x20; c++) {
		in[0] = 'a';
		in[1] = (char)c;
		in[2] = 'b';
		switch (c) {
		case '\n': snprintf(want, sizeof(want), "a\\nb"); break;
		case '\r': snprintf(want, sizeof(want), "a\\rb"); break;
		case '\t': snprintf(want, sizeof(want), "a\\tb"); break;
		default: snprintf(want, sizeof(want), "a\\x%02xb", c); break;
		}
		assert_string_equal(esc_n(in, 3, 0), want);
		assert_terminal_safe(esc_n(in, 3, 0), 0);
	}
	assert_string_equal(esc("a\x7f" "b"), "a\\x7fb");
}

static void test_printable_ascii_unchanged(void **state)
{
	char in[0x7f - 0x20 + 1];
	int c;

	(void)state;
	for (c = 0x20; c < 0x7f; c++)
		in[c - 0x20] = c == '\\' ? 'x' : (char)c;
	in[sizeof(in) - 1] = '\0';
	assert_string_equal(esc(in), in);
}

static void test_escape_sequences(void **state)
{
	(void)state;
	assert_string_equal(esc("\033]0;pwned\a"), "\\x1b]0;pwned\\x07");
	assert_string_equal(esc("\033[31mred\033[0m"), "\\x1b[31mred\\x1b[0m");
	assert_string_equal(esc("\033[2J\033[H"), "\\x1b[2J\\x1b[H");
	assert_string_equal(esc("\033]8;;http://x/\033\\link\033]8;;\033\\"),
			    "\\x1b]8;;http://x/\\x1b\\\\link\\x1b]8;;\\x1b\\\\");
	assert_string_equal(esc("ok\rlivemerge: forged"), "ok\\rlivemerge: forged");
}

static void test_newline_and_backslash(void **state)
{
	(void)state;
	assert_string_equal(esc("a\nb\n"), "a\\nb\\n");
	assert_string_equal(esc("C:\\dir"), "C:\\\\dir");
	/* a name that spells an escape is told apart from one that holds it */
	assert_string_equal(esc("\\x1b"), "\\\\x1b");
	assert_string_equal(esc("\033"), "\\x1b");
	assert_string_equal(esc("\\"), "\\\\");
	assert_string_equal(esc(""), "");
}

static void test_utf8_unchanged(void **state)
{
	static const char *const ok[] = {
		"h\xc3\xa9llo",		  /* U+00E9 */
		"\xc2\xa0",		  /* U+00A0, right after the C1 block */
		"\xc2\xbf",		  /* U+00BF */
		"\xdf\xbf",		  /* U+07FF */
		"\xe0\xa0\x80",		  /* U+0800 */
		"\xe6\x97\xa5\xe6\x9c\xac", /* two CJK characters */
		"\xed\x9f\xbf",		  /* U+D7FF, below the surrogates */
		"\xee\x80\x80",		  /* U+E000, above them */
		"\xef\xbf\xbd",		  /* U+FFFD */
		"\xef\xbf\xbf",		  /* U+FFFF */
		"\xf0\x90\x80\x80",	  /* U+10000 */
		"\xf0\x9f\x92\xbe",	  /* U+1F4BE */
		"\xf4\x8f\xbf\xbf",	  /* U+10FFFF */
		"/var/lib/\xd0\xb4\xd0\xb8\xd1\x81\xd0\xba.qcow2",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_string_equal(esc(ok[i]), ok[i]);
		assert_string_equal(esc_n(ok[i], strlen(ok[i]), CLI_ESC_JSON), ok[i]);
	}
}

static void test_c1_controls(void **state)
{
	char in[3] = { '\xc2', 0, 0 }, want[16];
	int c;

	(void)state;
	for (c = 0x80; c <= 0x9f; c++) {
		in[1] = (char)c;
		snprintf(want, sizeof(want), "\\u%04x", c);
		assert_string_equal(esc(in), want);
		assert_string_equal(esc_n(in, 2, CLI_ESC_JSON), want);
	}
	assert_string_equal(esc("a\xc2\x9b" "31mb"), "a\\u009b31mb");
}

static void test_invalid_utf8(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "\x80", "\\x80" },		       /* a stray continuation byte */
		{ "\x9b" "31m", "\\x9b31m" },	       /* a raw C1 byte (8-bit CSI) */
		{ "\xbf", "\\xbf" },
		{ "\xc0\xaf", "\\xc0\\xaf" },	       /* overlong '/' */
		{ "\xc1\xbf", "\\xc1\\xbf" },	       /* overlong */
		{ "\xe0\x80\xaf", "\\xe0\\x80\\xaf" }, /* overlong, 3 bytes */
		{ "\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf" },
		{ "\xed\xa0\x80", "\\xed\\xa0\\x80" }, /* a surrogate, U+D800 */
		{ "\xed\xbf\xbf", "\\xed\\xbf\\xbf" }, /* U+DFFF */
		{ "\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80" }, /* U+110000 */
		{ "\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80" },
		{ "\xfe\xff", "\\xfe\\xff" },
		{ "\xe6\x97", "\\xe6\\x97" },	       /* cut at the end */
		{ "\xe6\x97" "A", "\\xe6\\x97A" },     /* cut, then ASCII */
		{ "\xc3" "\033[1m", "\\xc3\\x1b[1m" }, /* cut, then ESC */
		{ "\xff\xc3\xa9", "\\xff\xc3\xa9" },   /* resync on the next character */
		{ "\xc2", "\\xc2" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_string_equal(esc(cases[i].in), cases[i].want);
		assert_terminal_safe(esc(cases[i].in), 0);
	}
	/* a NUL inside the given length is a control byte too */
	assert_string_equal(esc_n("a\0b", 3, 0), "a\\x00b");
}

static void test_keep_newlines(void **state)
{
	(void)state;
	assert_string_equal(esc_n("a\nb\033[2J\n", 8, CLI_ESC_KEEP_NL), "a\nb\\x1b[2J\n");
	assert_string_equal(esc_n("x\r\n", 3, CLI_ESC_KEEP_NL), "x\\r\n");
}

/* JSON flavour: for every character json-c leaves raw, the escaped text is
 * still JSON and parses back to the same string; backslashes stay. */
static void test_json_flavour(void **state)
{
	char in[8];
	int c;

	(void)state;
	for (c = 1; c <= 0xa0; c++) {
		json_object *s, *back;
		const char *text, *e;
		size_t n;

		n = 0;
		in[n++] = 'a';
		if (c < 0x80) {
			in[n++] = (char)c;
		} else {
			in[n++] = (char)(0xc0 | c >> 6);
			in[n++] = (char)(0x80 | (c & 0x3f));
		}
		in[n++] = 'z';
		in[n] = '\0';
		s = json_object_new_string(in);
		text = json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN |
								 JSON_C_TO_STRING_NOSLASHESCAPE);
		e = esc_n(text, strlen(text), CLI_ESC_JSON);
		assert_terminal_safe(e, 0);
		back = json_tokener_parse(e);
		assert_non_null(back);
		assert_string_equal(json_object_get_string(back), in);
		json_object_put(back);
		json_object_put(s);
	}
	/* pretty JSON keeps its line breaks; a byte that is not UTF-8 becomes U+FFFD */
	assert_string_equal(esc_n("{\n  \"a\\\\\": \"\x7f\xff\"\n}", 17,
				  CLI_ESC_JSON | CLI_ESC_KEEP_NL),
			    "{\n  \"a\\\\\": \"\\u007f\\ufffd\"\n}");
}

static void test_truncation(void **state)
{
	char buf[8];
	size_t len;

	(void)state;
	len = cli_escape(buf, sizeof(buf), "\033\033\033", 3, 0);
	assert_int_equal(len, 12);
	assert_string_equal(buf, "\\x1b\\x1");
	assert_int_equal(cli_escape(NULL, 0, "\033", 1, 0), 4);
	len = cli_escape(buf, 1, "abc", 3, 0);
	assert_int_equal(len, 3);
	assert_string_equal(buf, "");
}

static void test_dup_and_line(void **state)
{
	char *s, *mem = NULL;
	size_t memlen = 0;
	FILE *f;

	(void)state;
	s = cli_escape_dup("top\033]0;x\a\n", 0);
	assert_string_equal(s, "top\\x1b]0;x\\x07\\n");
	free(s);
	f = open_memstream(&mem, &memlen);
	assert_non_null(f);
	cli_line(f, "%s: job %s %s", "vd\033[31ma", "j\nforged", "ready");
	cli_put_escaped(f, "x\\y\n", CLI_ESC_KEEP_NL);
	fclose(f);
	assert_string_equal(mem, "vd\\x1b[31ma: job j\\nforged ready\nx\\\\y\n");
	free(mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_c0_control_and_del),
		cmocka_unit_test(test_printable_ascii_unchanged),
		cmocka_unit_test(test_escape_sequences),
		cmocka_unit_test(test_newline_and_backslash),
		cmocka_unit_test(test_utf8_unchanged),
		cmocka_unit_test(test_c1_controls),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_keep_newlines),
		cmocka_unit_test(test_json_flavour),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_dup_and_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

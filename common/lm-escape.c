/*
 * lm-escape: untrusted text made safe to show (see lm-escape.h).
 */
#include "lm-escape.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) with its code point, or 0. */
static size_t esc_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len, i;
	uint32_t v, min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, v = s[0] & 0x1f, min = 0x80;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, v = s[0] & 0x0f, min = 0x800;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, v = s[0] & 0x07, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

struct esc_out {
	char *dst;
	size_t cap, len;
};

static void esc_put(struct esc_out *o, const char *s, size_t n)
{
	if (o->len < o->cap) {
		size_t room = o->cap - o->len;

		memcpy(o->dst + o->len, s, n < room ? n : room);
	}
	o->len += n;
}

size_t lm_escape(char *dst, size_t cap, const char *src, size_t n, int flags)
{
	const unsigned char *s = (const unsigned char *)src;
	struct esc_out o = { dst, cap > 0 ? cap - 1 : 0, 0 };
	int json = flags & LM_ESC_JSON;
	size_t i = 0, k;
	uint32_t cp;
	char buf[8];

	while (i < n) {
		k = esc_utf8(s + i, n - i, &cp);
		if (k == 0) {
			/* not UTF-8: one byte at a time, the next may start a character */
			if (json)
				esc_put(&o, "\\ufffd", 6);
			else
				esc_put(&o, buf, (size_t)snprintf(buf, sizeof(buf), "\\x%02x", s[i]));
			i++;
			continue;
		}
		if (cp == '\n' && (flags & LM_ESC_KEEP_NL))
			esc_put(&o, "\n", 1);
		else if (cp == '\n')
			esc_put(&o, "\\n", 2);
		else if (cp == '\r')
			esc_put(&o, "\\r", 2);
		else if (cp == '\t')
			esc_put(&o, "\\t", 2);
		else if (cp == '\\' && !json)
			esc_put(&o, "\\\\", 2);
		else if (cp < 0x20 || cp == 0x7f)
			esc_put(&o, buf,
				(size_t)snprintf(buf, sizeof(buf), json ? "\\u%04x" : "\\x%02x", cp));
		else if (cp >= 0x80 && cp <= 0x9f)
			esc_put(&o, buf, (size_t)snprintf(buf, sizeof(buf), "\\u%04x", cp));
		else
			esc_put(&o, (const char *)s + i, k);
		i += k;
	}
	if (cap > 0)
		dst[o.len < o.cap ? o.len : o.cap] = '\0';
	return o.len;
}

/*
 * qmp/proto: the QMP codec (see proto.h).
 *
 * Two passes over each byte, both linear: a small scanner finds where a
 * message ends (tracking strings, escapes and nesting) and counts its
 * values, so caps are enforced before json-c allocates anything for bytes
 * past them; json-c's streaming tokener then builds the objects from exactly
 * the bytes of that message.
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

struct qmp_parser {
	json_tokener *tok;
	struct qmp_parser_limits lim;

	char *buf; /* fed, not yet parsed */
	size_t len, off, cap;

	/* scanner state for the current message */
	int started;
	int in_str, esc;
	int depth;
	size_t msg_bytes, msg_values;
	size_t held; /* scanned bytes at buf+off not yet given to json-c */

	int failed;
	struct lm_error err;
};

static int parser_fail(struct qmp_parser *p, struct lm_error *err, enum lm_err_code code,
		       const char *what)
{
	p->failed = 1;
	lm_error_set(&p->err, code, "QMP protocol error: %s", what);
	if (err != NULL)
		*err = p->err;
	return -1;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A byte that can be part of a JSON number (holding back the e of true is harmless). */
static int is_number_char(char c)
{
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/*
 * Scan buf[0..n) of the current message. Returns how many bytes belong to it
 * (n if it goes on past them), and sets *complete when the message ends
 * there. -1 when a cap breaks or the message is no object.
 */
static long scan(struct qmp_parser *p, const char *buf, size_t n, int *complete,
		 const char **why)
{
	size_t i;

	*complete = 0;
	for (i = 0; i < n; i++) {
		char c = buf[i];

		if (p->in_str) {
			if (p->esc)
				p->esc = 0;
			else if (c == '\\')
				p->esc = 1;
			else if (c == '"')
				p->in_str = 0;
			continue;
		}
		if (p->depth == 0 && !p->started) {
			if (c != '{') {
				*why = "message is not a JSON object";
				return -1;
			}
			p->started = 1;
		}
		switch (c) {
		case '"':
			p->in_str = 1;
			break;
		case '\'':
			/*
			 * JSON has no single-quoted strings, but json-c takes
			 * single-quoted member names even in strict mode; this
			 * scanner would frame such a message differently from
			 * json-c (a '"' or '}' inside one), so refuse it here.
			 */
			*why = "malformed JSON (single quote)";
			return -1;
		case '{':
		case '[':
			if (++p->depth > p->lim.max_depth) {
				*why = "message nests deeper than the limit";
				return -1;
			}
			/* fallthrough */
		case ',':
			if (++p->msg_values > p->lim.max_values) {
				*why = "message has more values than the limit";
				return -1;
			}
			break;
		case '}':
		case ']':
			if (--p->depth == 0) {
				*complete = 1;
				return (long)(i + 1);
			}
			break;
		default:
			break;
		}
	}
	return (long)n;
}

struct qmp_parser *qmp_parser_new(const struct qmp_parser_limits *limits)
{
	struct qmp_parser *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->lim.max_bytes = QMP_DEFAULT_MAX_BYTES;
	p->lim.max_values = QMP_DEFAULT_MAX_VALUES;
	p->lim.max_depth = QMP_DEFAULT_MAX_DEPTH;
	if (limits != NULL) {
		if (limits->max_bytes)
			p->lim.max_bytes = limits->max_bytes;
		if (limits->max_values)
			p->lim.max_values = limits->max_values;
		if (limits->max_depth > 0)
			p->lim.max_depth = limits->max_depth;
	}
	/* json-c's own depth check one above ours: the scanner decides first */
	p->tok = json_tokener_new_ex(p->lim.max_depth + 1);
	if (p->tok == NULL) {
		free(p);
		return NULL;
	}
	json_tokener_set_flags(p->tok, JSON_TOKENER_STRICT);
	return p;
}

void qmp_parser_free(struct qmp_parser *p)
{
	if (p == NULL)
		return;
	json_tokener_free(p->tok);
	free(p->buf);
	free(p);
}

int qmp_parser_feed(struct qmp_parser *p, const char *buf, size_t len, struct lm_error *err)
{
	if (p->failed) {
		if (err != NULL)
			*err = p->err;
		return -1;
	}
	if (len == 0)
		return 0; /* nothing to add: and buf may still be NULL (p->buf + 0 is UB) */
	if (p->off == p->len)
		p->off = p->len = 0;
	if (p->len + len > p->cap) {
		size_t need = p->len - p->off + len;
		char *nb;

		if (p->off > 0) {
			memmove(p->buf, p->buf + p->off, p->len - p->off);
			p->len -= p->off;
			p->off = 0;
		}
		if (need > p->cap) {
			size_t cap = p->cap ? p->cap : 4096;

			while (cap < need)
				cap *= 2;
			nb = realloc(p->buf, cap);
			if (nb == NULL)
				return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
			p->buf = nb;
			p->cap = cap;
		}
	}
	memcpy(p->buf + p->len, buf, len);
	p->len += len;
	return 0;
}

size_t qmp_parser_pending(const struct qmp_parser *p)
{
	return p->msg_bytes;
}

static const char *str_member(json_object *o, const char *key)
{
	json_object *v;

	if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

struct qmp_msg *qmp_msg_from_json(json_object *root, struct lm_error *err)
{
	struct qmp_msg *m;
	json_object *v;

	if (!json_object_is_type(root, json_type_object)) {
		lm_error_set(err, LM_ERR_PROTO, "QMP protocol error: message is not a JSON object");
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	m->ts_sec = m->ts_usec = -1;
	json_object_object_get_ex(root, "id", &m->id);
	if (json_object_object_get_ex(root, "return", &v)) {
		m->type = QMP_MSG_RETURN;
		m->ret = v;
	} else if (json_object_object_get_ex(root, "error", &v)) {
		const char *s;

		if (!json_object_is_type(v, json_type_object))
			goto bad;
		m->type = QMP_MSG_ERROR;
		s = str_member(v, "class");
		m->err_class = s ? s : "";
		s = str_member(v, "desc");
		m->err_desc = s ? s : "";
	} else if ((m->event = str_member(root, "event")) != NULL) {
		m->type = QMP_MSG_EVENT;
		if (json_object_object_get_ex(root, "data", &v))
			m->data = v;
		if (json_object_object_get_ex(root, "timestamp", &v) &&
		    json_object_is_type(v, json_type_object)) {
			json_object *t;

			if (json_object_object_get_ex(v, "seconds", &t))
				m->ts_sec = json_object_get_int64(t);
			if (json_object_object_get_ex(v, "microseconds", &t))
				m->ts_usec = json_object_get_int64(t);
		}
	} else if (json_object_object_get_ex(root, "QMP", &v)) {
		m->type = QMP_MSG_GREETING;
		m->greeting = v;
	} else {
		goto bad;
	}
	m->root = root;
	return m;
bad:
	free(m);
	lm_error_set(err, LM_ERR_PROTO,
		     "QMP protocol error: message is neither greeting, return, error nor event");
	return NULL;
}

void qmp_msg_free(struct qmp_msg *m)
{
	if (m == NULL)
		return;
	json_object_put(m->root);
	free(m);
}

static void message_reset(struct qmp_parser *p)
{
	p->started = 0;
	p->in_str = p->esc = 0;
	p->depth = 0;
	p->msg_bytes = p->msg_values = 0;
	p->held = 0;
	json_tokener_reset(p->tok);
}

int qmp_parser_next(struct qmp_parser *p, struct qmp_msg **out, struct lm_error *err)
{
	*out = NULL;
	if (p->failed) {
		if (err != NULL)
			*err = p->err;
		return -1;
	}
	while (p->off + p->held < p->len) {
		const char *why = NULL;
		const char *chunk;
		size_t n, room, give, hold = 0;
		long used;
		int complete;
		json_object *obj;
		enum json_tokener_error jerr;

		if (!p->started) {
			while (p->off < p->len && is_ws(p->buf[p->off]))
				p->off++;
			if (p->off == p->len)
				break;
		}
		chunk = p->buf + p->off + p->held;
		n = p->len - p->off - p->held;
		room = p->lim.max_bytes - p->msg_bytes;
		if (n > room)
			n = room + 1; /* one byte past the cap is enough to refuse */
		used = scan(p, chunk, n, &complete, &why);
		if (used < 0)
			return parser_fail(p, err, LM_ERR_PROTO, why);
		if (p->msg_bytes + (size_t)used > p->lim.max_bytes)
			return parser_fail(p, err, LM_ERR_PROTO, "message is larger than the limit");
		p->msg_bytes += (size_t)used;
		give = p->held + (size_t)used;
		/*
		 * json-c 0.16 mis-parses a number that ends exactly at the end
		 * of one parse_ex call: given "{\"a\": 179" and then "-4}" it
		 * returns {"a": 179} where one call with all of it fails. So
		 * a trailing run of number bytes (outside strings) is held
		 * back until the byte after it has arrived, and json-c always
		 * sees a number together with what ends it.
		 */
		if (!complete && !p->in_str)
			while (hold < give && is_number_char(p->buf[p->off + give - hold - 1]))
				hold++;
		give -= hold;
		obj = NULL;
		jerr = json_tokener_continue;
		if (give > 0) {
			obj = json_tokener_parse_ex(p->tok, p->buf + p->off, (int)give);
			jerr = json_tokener_get_error(p->tok);
		}
		p->off += give;
		p->held = hold;
		if (!complete) {
			if (jerr != json_tokener_continue) {
				/*
				 * json-c may have finished a value the scanner
				 * still sees open (they disagree on the framing):
				 * free what it built instead of leaking it.
				 */
				json_object_put(obj);
				return parser_fail(p, err, LM_ERR_PROTO,
						   jerr == json_tokener_success
							   ? "malformed JSON"
							   : json_tokener_error_desc(jerr));
			}
			continue;
		}
		if (obj == NULL || json_tokener_get_parse_end(p->tok) != give) {
			json_object_put(obj);
			return parser_fail(p, err, LM_ERR_PROTO,
					   jerr == json_tokener_success || jerr == json_tokener_continue
						   ? "malformed JSON"
						   : json_tokener_error_desc(jerr));
		}
		message_reset(p);
		*out = qmp_msg_from_json(obj, &p->err);
		if (*out == NULL) {
			json_object_put(obj);
			p->failed = 1;
			if (err != NULL)
				*err = p->err;
			return -1;
		}
		return 1;
	}
	return 0;
}

char *qmp_encode_command(const char *name, json_object *args, int64_t id, size_t *len)
{
	json_object *cmd = json_object_new_object();
	const char *s;
	char *out = NULL;
	size_t n;

	if (cmd == NULL)
		return NULL;
	if (json_object_object_add(cmd, "execute", json_object_new_string(name)) < 0)
		goto done;
	if (args != NULL &&
	    json_object_object_add(cmd, "arguments", json_object_get(args)) < 0)
		goto done;
	if (json_object_object_add(cmd, "id", json_object_new_int64(id)) < 0)
		goto done;
	s = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (s == NULL)
		goto done;
	n = strlen(s);
	out = malloc(n + 3);
	if (out == NULL)
		goto done;
	memcpy(out, s, n);
	memcpy(out + n, "\r\n", 3);
	if (len != NULL)
		*len = n + 2;
done:
	json_object_put(cmd);
	return out;
}

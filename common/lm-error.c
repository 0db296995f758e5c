/*
 * lm-error: filling and naming the shared error record.
 */
#include "lm-error.h"

#include <stdio.h>
#include <string.h>

int lm_error_set(struct lm_error *err, enum lm_err_code code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return -1;
	err->code = code;
	err->qmp_class[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

void lm_error_prefix(struct lm_error *err, const char *fmt, ...)
{
	char old[sizeof(err->msg)];
	va_list ap;
	int n;

	if (err == NULL)
		return;
	memcpy(old, err->msg, sizeof(old));
	va_start(ap, fmt);
	n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(err->msg))
		strncat(err->msg, old, sizeof(err->msg) - (size_t)n - 1);
}

void lm_error_clear(struct lm_error *err)
{
	if (err == NULL)
		return;
	err->code = LM_OK;
	err->qmp_class[0] = '\0';
	err->msg[0] = '\0';
}

const char *lm_error_code_name(enum lm_err_code code)
{
	switch (code) {
	case LM_OK: return "ok";
	case LM_ERR_IO: return "io";
	case LM_ERR_EOF: return "eof";
	case LM_ERR_PROTO: return "protocol";
	case LM_ERR_TIMEOUT: return "timeout";
	case LM_ERR_QMP: return "qmp";
	case LM_ERR_STATE: return "state";
	case LM_ERR_USAGE: return "usage";
	case LM_ERR_AUTH: return "auth";
	case LM_ERR_HOSTKEY: return "hostkey";
	case LM_ERR_NOMEM: return "nomem";
	case LM_ERR_FAILED: return "failed";
	case LM_ERR_UNSUPPORTED: return "unsupported";
	case LM_ERR_BUSY: return "busy";
	}
	return "unknown";
}

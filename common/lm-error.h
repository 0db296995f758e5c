/*
 * lm-error: the error record every livemerge layer fills for its caller.
 *
 * Functions return 0 / -1 (or a count / -1) and, on failure, fill a
 * caller-owned struct lm_error. The code says which kind of failure it was
 * (and so which exit code a CLI maps it to); the message is one line meant
 * for a person; qmp_class carries QEMU's error class when QEMU refused.
 */
#ifndef LM_ERROR_H
#define LM_ERROR_H

#include <stdarg.h>

enum lm_err_code {
	LM_OK = 0,
	LM_ERR_IO,      /* read/write/connect failed at the OS level */
	LM_ERR_EOF,     /* the peer closed the connection */
	LM_ERR_PROTO,   /* the peer broke the protocol (bad JSON, caps) */
	LM_ERR_TIMEOUT, /* no answer in time */
	LM_ERR_QMP,     /* QEMU answered with an error */
	LM_ERR_STATE,   /* the operation does not fit the current state */
	LM_ERR_USAGE,   /* bad input from the caller */
	LM_ERR_AUTH,    /* authentication refused */
	LM_ERR_HOSTKEY, /* host key unknown or changed */
	LM_ERR_NOMEM,   /* out of memory */
	LM_ERR_FAILED,  /* an operation failed and was rolled back */
	LM_ERR_UNSUPPORTED, /* the host offers no means for it (no SFTP, no exec) */
	LM_ERR_BUSY,    /* another livemerge acts on the VM (merge/vmlock.h) */
};

struct lm_error {
	enum lm_err_code code;
	char qmp_class[64]; /* QEMU's error class, "" unless code == LM_ERR_QMP */
	char msg[512];
};

/* Fill err (may be NULL) with code and a printf-style message; returns -1. */
int lm_error_set(struct lm_error *err, enum lm_err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix err->msg with a printf-style context ("vda: " ...); keeps code and class. */
void lm_error_prefix(struct lm_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Reset err to LM_OK and an empty message. err may be NULL. */
void lm_error_clear(struct lm_error *err);

/* A short constant name for code ("io", "eof", "protocol", ...). */
const char *lm_error_code_name(enum lm_err_code code);

#endif

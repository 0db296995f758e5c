/*
 * transport/transport-int.h: what transport/transport.c needs from the
 * backends (not installed; included only by transport/). Each backend makes
 * its transport from a target whose scheme the table in transport.c picked;
 * the backends do not know each other.
 */
#ifndef LM_TRANSPORT_INT_H
#define LM_TRANSPORT_INT_H

#include "transport.h"

/*
 * A backend's constructor: target is the whole string as the user wrote it
 * (for messages), rest what follows the scheme's prefix (all of it for a
 * plain socket path), opts as tr_new_ex got them (NULL from tr_new). An
 * owned transport, or NULL with err filled (USAGE for a malformed target).
 */
typedef struct tr *tr_backend_new(const char *target, const char *rest,
				  const struct tr_opts *opts, struct lm_error *err);

tr_backend_new tr_sock_new_unix; /* transport/sock.c: rest is the socket path */
tr_backend_new tr_sock_new_tcp;  /* transport/sock.c: rest is HOST:PORT */
tr_backend_new tr_ssh_new;       /* transport/ssh-channel.c: parses the whole target */

#endif

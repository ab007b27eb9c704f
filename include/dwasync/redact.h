/*
 * redact.h - keeps secrets out of logs, error rows and metrics.
 *
 * Two rules, applied to any text that leaves the process through a log line, a stored error
 * message or a debug payload dump:
 *   1. every secret registered with dw_redact_register() (client secrets, tokens, private
 *      key material read from secret files) is replaced wherever it occurs;
 *   2. shapes that are secrets whatever their origin are replaced: the value after
 *      "Bearer ", JSON Web Tokens (eyJ...eyJ...sig), and the values of client_secret,
 *      client_assertion, access_token, refresh_token and password in form, JSON or
 *      conninfo syntax, and PEM private key blocks.
 * The registry is process-global; it copies what it is given and holds it until exit.
 */
#ifndef DWASYNC_REDACT_H
#define DWASYNC_REDACT_H

#include <stddef.h>

#include "dwasync/buf.h"

/* What a redacted secret is replaced with. */
#define DW_REDACTED "[REDACTED]"

/* Registers a secret value (copied). Values shorter than 4 bytes are ignored. */
void dw_redact_register(const char *secret);

/* Forgets every registered secret (tests). */
void dw_redact_clear(void);

/* Rewrites b in place with every secret replaced. */
void dw_redact_buf(struct dw_buf *b);

/* Returns a redacted heap copy of s (caller frees). */
char *dw_redact_str(const char *s);

#endif

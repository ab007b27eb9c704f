/*
 * secret.h - reading secrets (client secrets, private keys) from files.
 *
 * A secret is named by a path, or by a bare name that is looked up in systemd's
 * $CREDENTIALS_DIRECTORY (LoadCredential=) and nowhere else (never the working directory).
 * One rule, for `check` and the daemon: the file is opened without blocking and following
 * symlinks (secret mounts are links), and must be a regular file owned by this user or
 * root, with no group or other access, of at most DW_SECRET_MAX_SIZE bytes; anything else
 * is refused with a message that says how to fix it. What is read is registered with the
 * redactor so it can never be logged. The returned string is owned by the caller, who
 * should release it with dw_secret_free() (which wipes it first).
 */
#ifndef DWASYNC_SECRET_H
#define DWASYNC_SECRET_H

#include <stddef.h>

#include "dwasync/rc.h"

/* Largest secret file accepted (a PEM chain fits comfortably). */
#define DW_SECRET_MAX_SIZE (64 * 1024)

/*
 * Resolves name to a path: names without '/' are looked up in $CREDENTIALS_DIRECTORY
 * when it is set. Returns a heap string the caller frees.
 */
char *dw_secret_resolve(const char *name);

/*
 * Reads the secret named by name into *out (NUL-terminated, trailing newlines removed
 * unless keep_newlines) and *out_len. Errors (missing, unsafe mode, too large) are logged
 * here with the path and a fix hint.
 */
dw_rc dw_secret_read(const char *name, int keep_newlines, char **out, size_t *out_len);

/*
 * Applies dw_secret_read's rule without reading. why gets "\"<path>\" <problem>[. <fix>]".
 * Returns DW_ERR_SECRET for a file that exists but is unsafe (mode, owner, size),
 * DW_ERR_NOT_FOUND, DW_ERR_IO or DW_ERR_INVALID (not a regular file) otherwise.
 */
dw_rc dw_secret_check(const char *name, char *why, size_t why_size);

/* Wipes and frees a secret returned by dw_secret_read(); accepts NULL. */
void dw_secret_free(char *secret, size_t len);

#endif

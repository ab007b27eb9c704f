/*
 * buf.h - growable byte buffers with a size cap (in the spirit of curl's dynbuf).
 *
 * A struct dw_buf is caller-owned: dw_buf_init() before use, dw_buf_cleanup() to release
 * the memory, dw_buf_reset() to empty it and keep the allocation (the hot paths reuse one
 * buffer per change or per request). The contents are always NUL-terminated so they can be
 * handed to C string functions, but may also hold binary data (use len, not strlen).
 * Appending past the cap fails with DW_ERR_RANGE and leaves the buffer unchanged; the cap
 * is what keeps one absurd value from growing memory without bound.
 */
#ifndef DWASYNC_BUF_H
#define DWASYNC_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "dwasync/rc.h"

struct dw_buf {
    char *data;     /* NUL-terminated contents, NULL until the first append */
    size_t len;     /* bytes used, excluding the terminator */
    size_t cap;     /* bytes allocated */
    size_t max_len; /* largest len allowed */
};

/* Default cap for buffers that hold one message or one value. */
#define DW_BUF_DEFAULT_MAX ((size_t)1 << 30)

/* Prepares an empty buffer that may grow to max_len bytes (0 means DW_BUF_DEFAULT_MAX). */
void dw_buf_init(struct dw_buf *b, size_t max_len);

/* Releases the memory; the buffer is empty and reusable afterwards. */
void dw_buf_cleanup(struct dw_buf *b);

/* Empties the buffer, keeping its allocation. */
void dw_buf_reset(struct dw_buf *b);

/* Cuts the contents back to their first len bytes (len <= b->len): undoes a failed append. */
void dw_buf_truncate(struct dw_buf *b, size_t len);

/* Appends bytes; DW_ERR_RANGE if the cap would be exceeded. */
dw_rc dw_buf_append(struct dw_buf *b, const void *data, size_t len);

/* Appends a NUL-terminated string. */
dw_rc dw_buf_puts(struct dw_buf *b, const char *s);

/* Appends one byte. */
dw_rc dw_buf_putc(struct dw_buf *b, char c);

/* Appends formatted text. */
dw_rc dw_buf_printf(struct dw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
dw_rc dw_buf_vprintf(struct dw_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Appends s as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
dw_rc dw_buf_put_json_string(struct dw_buf *b, const char *s, size_t len);

/* Makes room for at least extra more bytes; DW_ERR_RANGE past the cap. */
dw_rc dw_buf_reserve(struct dw_buf *b, size_t extra);

/* Takes the contents out as a heap string (caller frees), trimmed of most of the slack
 * growth left; the buffer is left empty. */
char *dw_buf_steal(struct dw_buf *b);

/* The contents as a C string ("" when empty); borrowed, valid until the next change. */
const char *dw_buf_str(const struct dw_buf *b);

#endif

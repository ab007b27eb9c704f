/*
 * text.h - immutable text shared by counted references: one allocation holds the count,
 * the length and the NUL-terminated bytes.
 *
 * For text kept in more than one place at once without copies: a write's body travels to
 * the sink while the pipeline keeps the same body to send again (write.h). Single-threaded,
 * as the daemon is. Ownership: dw_text_new() and dw_text_ref() each give one reference,
 * dw_text_unref() releases one; the last frees the text.
 */
#ifndef DWASYNC_TEXT_H
#define DWASYNC_TEXT_H

#include <stddef.h>

struct dw_text {
    size_t refs;
    size_t len;  /* bytes, without the terminator (the text may hold NUL bytes) */
    char data[]; /* NUL-terminated */
};

/* A new text holding a copy of the len bytes at data (one reference). */
struct dw_text *dw_text_new(const char *data, size_t len);

/* Another reference to t (NULL is fine: returns NULL). */
struct dw_text *dw_text_ref(struct dw_text *t);

/* Releases one reference (NULL is fine); the last one frees t. */
void dw_text_unref(struct dw_text *t);

#endif

/*
 * text.h - immutable text shared by counted references: one allocation holds the count,
 * the length and the NUL-terminated bytes.
 *
 * For text kept in more than one place at once without copies: a write's body travels to
 * the sink while the pipeline keeps the same body to send again (write.h). Single-threaded,
 * as the daemon is. Ownership: dw_text_new() and dw_text_hold() each give one hold,
 * dw_text_drop() lets one go; the last frees the text (write.h's struct dw_refs works alike).
 */
#ifndef DWASYNC_TEXT_H
#define DWASYNC_TEXT_H

#include <stddef.h>

struct dw_text {
    size_t holders;
    size_t len;  /* bytes, without the terminator (the text may hold NUL bytes) */
    char data[]; /* NUL-terminated */
};

/* A new text holding a copy of the len bytes at data (one hold). */
struct dw_text *dw_text_new(const char *data, size_t len);

/* Another hold on t (NULL is fine: returns NULL). */
struct dw_text *dw_text_hold(struct dw_text *t);

/* Lets go of one hold (NULL is fine); the last one frees t. */
void dw_text_drop(struct dw_text *t);

#endif

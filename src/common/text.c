/*
 * Shared immutable text (see text.h): a counted header in front of the bytes, in one
 * allocation.
 */
#include "dwasync/text.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"

struct dw_text *dw_text_new(const char *data, size_t len)
{
    struct dw_text *t = dw_malloc(sizeof *t + len + 1);
    t->holders = 1;
    t->len = len;
    if (len)
        memcpy(t->data, data, len);
    t->data[len] = '\0';
    return t;
}

struct dw_text *dw_text_hold(struct dw_text *t)
{
    if (t)
        t->holders++;
    return t;
}

void dw_text_drop(struct dw_text *t)
{
    if (t && --t->holders == 0)
        free(t);
}

/*
 * Growable, capped byte buffers (see buf.h). Capacity doubles from 64 bytes; every append
 * checks the cap before it grows and leaves the contents NUL-terminated.
 * dw_buf_put_json_string() is the JSON string escaper the JSON writer, the logger, the
 * value typing and the sink's request bodies all share.
 */
#include "dwasync/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"

void dw_buf_init(struct dw_buf *b, size_t max_len)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max_len = max_len ? max_len : DW_BUF_DEFAULT_MAX;
}

void dw_buf_cleanup(struct dw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void dw_buf_reset(struct dw_buf *b)
{
    dw_buf_truncate(b, 0);
}

void dw_buf_truncate(struct dw_buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

dw_rc dw_buf_reserve(struct dw_buf *b, size_t extra)
{
    if (extra > b->max_len - b->len)
        return DW_ERR_RANGE;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return DW_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    b->data = dw_realloc(b->data, cap);
    b->data[b->len] = '\0'; /* a new buffer holds "" at once */
    b->cap = cap;
    return DW_OK;
}

dw_rc dw_buf_append(struct dw_buf *b, const void *data, size_t len)
{
    dw_rc rc = dw_buf_reserve(b, len);
    if (rc != DW_OK)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return DW_OK;
}

dw_rc dw_buf_puts(struct dw_buf *b, const char *s)
{
    return dw_buf_append(b, s, strlen(s));
}

dw_rc dw_buf_putc(struct dw_buf *b, char c)
{
    if (b->len + 1 < b->cap) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return DW_OK;
    }
    return dw_buf_append(b, &c, 1);
}

dw_rc dw_buf_vprintf(struct dw_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, copy);
    va_end(copy);
    if (n < 0 || (size_t)n > b->max_len - b->len) {
        if (b->data)
            b->data[b->len] = '\0';
        return n < 0 ? DW_ERR_INVALID : DW_ERR_RANGE;
    }
    if ((size_t)n < room) {
        b->len += (size_t)n;
        return DW_OK;
    }
    dw_rc rc = dw_buf_reserve(b, (size_t)n);
    if (rc != DW_OK) {
        if (b->data)
            b->data[b->len] = '\0';
        return rc;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return DW_OK;
}

dw_rc dw_buf_printf(struct dw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dw_rc rc = dw_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

dw_rc dw_buf_put_json_string(struct dw_buf *b, const char *s, size_t len)
{
    /* Upper case, as jansson writes it: every JSON text dwasync writes escapes alike. */
    static const char hex[] = "0123456789ABCDEF";
    /* Worst case every byte becomes \u00XX; reserving once keeps the loop branch-light. */
    if (len > (b->max_len / 6))
        return DW_ERR_RANGE;
    dw_rc rc = dw_buf_reserve(b, len * 6 + 2);
    if (rc != DW_OK)
        return rc;
    char *out = b->data + b->len;
    *out++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"':
            *out++ = '"';
            break;
        case '\\':
            *out++ = '\\';
            break;
        case '\n':
            *out++ = 'n';
            break;
        case '\r':
            *out++ = 'r';
            break;
        case '\t':
            *out++ = 't';
            break;
        case '\b':
            *out++ = 'b';
            break;
        case '\f':
            *out++ = 'f';
            break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->len = (size_t)(out - b->data);
    b->data[b->len] = '\0';
    return DW_OK;
}

char *dw_buf_steal(struct dw_buf *b)
{
    /* A buffer grows by doubling; a string kept for long (a row image, a request body)
     * should not keep the slack, up to half its size. */
    if (b->data && b->cap - b->len - 1 > b->len / 4)
        b->data = dw_realloc(b->data, b->len + 1);
    char *p = b->data ? b->data : dw_strdup("");
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

const char *dw_buf_str(const struct dw_buf *b)
{
    return b->data ? b->data : "";
}

/*
 * dwasync's JSON writer (see json.h): compact and canonical (sorted keys) texts of jansson
 * values, appended straight into a dw_buf. Its output is byte for byte json_dumps()'s with
 * DW_JSON_FLAGS, since canonical texts are stored in the error table; parsing stays jansson's.
 */
#include "dwasync/json.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"

/*
 * The writer below produces byte for byte what json_dumps() does with DW_JSON_FLAGS (and
 * JSON_SORT_KEYS for the canonical form): canonical texts are stored in the error table, so
 * they must not change with the writer. It exists because jansson's dump goes through a
 * callback per token and snprintf() per number, which made serializing a third of the
 * daemon's CPU; this one appends straight into a buffer.
 */

/* Deeper than any JSON dwasync builds or accepts (jansson parses at most 2048 levels). */
#define MAX_DEPTH 2048
/* Objects with at most this many members sort their keys without allocating. */
#define SORT_ON_STACK 32

struct member {
    const char *key;
    size_t len;
    const json_t *value;
};

static int cmp_members(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static dw_rc put_integer(struct dw_buf *b, json_int_t v)
{
    char digits[24];
    char *p = digits + sizeof digits;
    /* Negate in unsigned arithmetic: -INT64_MIN does not fit in the signed type. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return dw_buf_append(b, p, (size_t)(digits + sizeof digits - p));
}

/* As jansson: %.*g, a ".0" when that reads as an integer, the exponent without '+' or
 * leading zeros. */
static dw_rc put_real(struct dw_buf *b, double v)
{
    char text[64];
    int n = snprintf(text, sizeof text, "%.*g", DW_JSON_REAL_DIGITS, v);
    if (n < 0 || (size_t)n >= sizeof text - 3)
        return DW_ERR_RANGE;
    size_t len = (size_t)n;
    if (strchr(text, '.') == NULL && strchr(text, 'e') == NULL) {
        memcpy(text + len, ".0", 3);
        len += 2;
    }
    char *e = strchr(text, 'e');
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - text) + 1);
            len -= (size_t)(end - start);
        }
    }
    return dw_buf_append(b, text, len);
}

static dw_rc put_value(struct dw_buf *b, const json_t *v, bool sorted, int depth);

static dw_rc put_member(struct dw_buf *b, const struct member *m, bool first, bool sorted,
                        int depth)
{
    dw_rc rc;
    if ((!first && (rc = dw_buf_putc(b, ',')) != DW_OK) ||
        (rc = dw_buf_put_json_string(b, m->key, m->len)) != DW_OK ||
        (rc = dw_buf_putc(b, ':')) != DW_OK)
        return rc;
    return put_value(b, m->value, sorted, depth);
}

/* The members of an object, comma-separated, without the braces. */
static dw_rc put_members(struct dw_buf *b, const json_t *o, bool sorted, int depth)
{
    size_t n = json_object_size(o), i = 0;
    struct member stack[SORT_ON_STACK];
    struct member *m = !sorted ? NULL : n <= SORT_ON_STACK ? stack : dw_malloc(n * sizeof *m);
    dw_rc rc = DW_OK;
    for (void *it = json_object_iter((json_t *)o); it && rc == DW_OK;
         it = json_object_iter_next((json_t *)o, it), i++) {
        struct member one = {json_object_iter_key(it), json_object_iter_key_len(it),
                             json_object_iter_value(it)};
        if (sorted)
            m[i] = one;
        else
            rc = put_member(b, &one, i == 0, sorted, depth);
    }
    if (sorted && rc == DW_OK) {
        qsort(m, i, sizeof *m, cmp_members);
        for (size_t k = 0; k < i && rc == DW_OK; k++)
            rc = put_member(b, &m[k], k == 0, sorted, depth);
    }
    if (m != stack)
        free(m);
    return rc;
}

static dw_rc put_value(struct dw_buf *b, const json_t *v, bool sorted, int depth)
{
    dw_rc rc;
    if (depth > MAX_DEPTH)
        return DW_ERR_RANGE;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if ((rc = dw_buf_putc(b, '{')) != DW_OK ||
            (rc = put_members(b, v, sorted, depth + 1)) != DW_OK)
            return rc;
        return dw_buf_putc(b, '}');
    case JSON_ARRAY:
        if ((rc = dw_buf_putc(b, '[')) != DW_OK)
            return rc;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if ((i > 0 && (rc = dw_buf_putc(b, ',')) != DW_OK) ||
                (rc = put_value(b, json_array_get(v, i), sorted, depth + 1)) != DW_OK)
                return rc;
        }
        return dw_buf_putc(b, ']');
    case JSON_STRING:
        return dw_buf_put_json_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_integer(b, json_integer_value(v));
    case JSON_REAL:
        return put_real(b, json_real_value(v));
    case JSON_TRUE:
        return dw_buf_puts(b, "true");
    case JSON_FALSE:
        return dw_buf_puts(b, "false");
    case JSON_NULL:
        return dw_buf_puts(b, "null");
    }
    return DW_ERR_INVALID;
}

enum shape {
    SHAPE_COMPACT,   /* the value as json_dumps() writes it */
    SHAPE_CANONICAL, /* and with every object's keys sorted */
    SHAPE_MEMBERS,   /* an object's members without the braces */
};

/* Appends value in shape; on failure b is as it was. */
static dw_rc append(struct dw_buf *b, const json_t *value, enum shape shape)
{
    size_t mark = b->len;
    dw_rc rc = DW_ERR_INVALID;
    if (shape == SHAPE_MEMBERS && json_is_object(value))
        rc = put_members(b, value, false, 1);
    else if (shape != SHAPE_MEMBERS && value)
        rc = put_value(b, value, shape == SHAPE_CANONICAL, 0);
    if (rc != DW_OK)
        dw_buf_truncate(b, mark);
    return rc;
}

static char *dump(const json_t *value, enum shape shape)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    if (append(&b, value, shape) != DW_OK)
        dw_oom(0); /* as json_dumps() failing: only allocation or absurd depth gets here */
    return dw_buf_steal(&b);
}

char *dw_json_dumps(const json_t *value)
{
    return dump(value, SHAPE_COMPACT);
}

char *dw_json_canonical(const json_t *value)
{
    return dump(value, SHAPE_CANONICAL);
}

dw_rc dw_json_append(struct dw_buf *b, const json_t *value)
{
    return append(b, value, SHAPE_COMPACT);
}

dw_rc dw_json_append_canonical(struct dw_buf *b, const json_t *value)
{
    return append(b, value, SHAPE_CANONICAL);
}

dw_rc dw_json_append_members(struct dw_buf *b, const json_t *object)
{
    return append(b, object, SHAPE_MEMBERS);
}

dw_rc dw_json_append_member(struct dw_buf *b, const char *name, const json_t *value, bool first)
{
    size_t mark = b->len;
    const struct member one = {name, strlen(name), value};
    dw_rc rc = value ? put_member(b, &one, first, false, 0) : DW_ERR_INVALID;
    if (rc != DW_OK)
        dw_buf_truncate(b, mark);
    return rc;
}

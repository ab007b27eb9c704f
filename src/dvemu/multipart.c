/* Multipart bodies of $batch requests (RFC 2046 as OData 4.0 uses it) and embedded HTTP
 * requests. Lines end with CRLF on the wire; a bare LF is accepted too, as Dataverse does. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/dvemu.h"

dw_rc dw_dvemu_boundary(const char *content_type, char **out)
{
    const char *p = content_type;
    while ((p = strcasestr(p, "boundary")) != NULL) {
        const char *q = p + 8;
        while (*q == ' ')
            q++;
        if (*q != '=') {
            p = q;
            continue;
        }
        q++;
        while (*q == ' ')
            q++;
        size_t n;
        if (*q == '"') {
            q++;
            const char *e = strchr(q, '"');
            if (e == NULL)
                return DW_ERR_INVALID;
            n = (size_t)(e - q);
        } else {
            n = strcspn(q, "; \t");
        }
        if (n == 0 || n > 70)
            return DW_ERR_INVALID;
        *out = dw_strndup(q, n);
        return DW_OK;
    }
    return DW_ERR_INVALID;
}

/* Finds the next line that is exactly "--boundary" or "--boundary--" (optionally followed by
 * blanks) starting at or after pos and at the start of a line. */
static const char *find_delim(const char *body, size_t len, size_t pos, const char *boundary,
                              bool *last, const char **after)
{
    size_t blen = strlen(boundary);
    for (size_t i = pos; i + 2 + blen <= len; i++) {
        if ((i == 0 || body[i - 1] == '\n') && body[i] == '-' && body[i + 1] == '-' &&
            memcmp(body + i + 2, boundary, blen) == 0) {
            size_t j = i + 2 + blen;
            *last = false;
            if (j + 1 < len + 1 && j + 2 <= len && body[j] == '-' && body[j + 1] == '-') {
                *last = true;
                j += 2;
            }
            while (j < len && (body[j] == ' ' || body[j] == '\t'))
                j++;
            if (j < len && body[j] == '\r')
                j++;
            if (j < len && body[j] == '\n')
                j++;
            else if (j < len && !*last)
                continue; /* "--boundaryX": a longer token, not our delimiter */
            *after = body + j;
            return body + i;
        }
    }
    return NULL;
}

/* Splits a header block from what follows the first empty line. */
static void split_headers(const char *s, size_t len, struct dw_dvemu_part *p)
{
    size_t i = 0;
    p->headers = s;
    for (;;) {
        if (i >= len) {
            p->headers_len = len;
            p->body = s + len;
            p->body_len = 0;
            return;
        }
        /* An empty line: CRLF or LF at the start of a line. */
        if (i == 0 || s[i - 1] == '\n') {
            if (s[i] == '\n') {
                p->headers_len = i;
                p->body = s + i + 1;
                p->body_len = len - i - 1;
                return;
            }
            if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
                p->headers_len = i;
                p->body = s + i + 2;
                p->body_len = len - i - 2;
                return;
            }
        }
        i++;
    }
}

dw_rc dw_dvemu_multipart_parse(const char *body, size_t len, const char *boundary,
                               struct dw_dvemu_part **parts, size_t *nparts)
{
    bool last = false;
    const char *after;
    const char *d = find_delim(body, len, 0, boundary, &last, &after);
    if (d == NULL || last)
        return DW_ERR_PROTOCOL;
    struct dw_dvemu_part *arr = NULL;
    size_t n = 0;
    while (!last) {
        const char *start = after;
        const char *next = find_delim(body, len, (size_t)(start - body), boundary, &last, &after);
        if (next == NULL) {
            free(arr);
            return DW_ERR_PROTOCOL;
        }
        /* The CRLF before a delimiter belongs to the delimiter. */
        const char *end = next;
        if (end > start && end[-1] == '\n')
            end--;
        if (end > start && end[-1] == '\r')
            end--;
        arr = dw_array_grow(arr, n, sizeof *arr);
        split_headers(start, (size_t)(end - start), &arr[n]);
        n++;
    }
    *parts = arr;
    *nparts = n;
    return DW_OK;
}

dw_rc dw_dvemu_header_get(const char *block, size_t len, const char *name, char **out)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && block[e] != '\n')
            e++;
        size_t line_end = e;
        if (line_end > i && block[line_end - 1] == '\r')
            line_end--;
        if (line_end - i > nlen && strncasecmp(block + i, name, nlen) == 0 &&
            block[i + nlen] == ':') {
            size_t v = i + nlen + 1;
            while (v < line_end && (block[v] == ' ' || block[v] == '\t'))
                v++;
            size_t ve = line_end;
            while (ve > v && (block[ve - 1] == ' ' || block[ve - 1] == '\t'))
                ve--;
            *out = dw_strndup(block + v, ve - v);
            return DW_OK;
        }
        i = e + 1;
    }
    return DW_ERR_NOT_FOUND;
}

dw_rc dw_dvemu_inner_parse(const char *text, size_t len, struct dw_dvemu_inner *out)
{
    struct dw_dvemu_inner r = {0};
    size_t i = 0;
    /* Tolerate blank lines before the request line. */
    while (i < len && (text[i] == '\r' || text[i] == '\n'))
        i++;
    size_t m = 0;
    while (i < len && isupper((unsigned char)text[i]) && m + 1 < sizeof r.method)
        r.method[m++] = text[i++];
    r.method[m] = '\0';
    if (m == 0 || i >= len || text[i] != ' ')
        return DW_ERR_PROTOCOL;
    i++;
    size_t u = i;
    while (i < len && text[i] != ' ' && text[i] != '\r' && text[i] != '\n')
        i++;
    if (i == u)
        return DW_ERR_PROTOCOL;
    r.url = text + u;
    r.url_len = i - u;
    while (i < len && text[i] != '\n')
        i++;
    if (i >= len)
        return DW_ERR_PROTOCOL;
    i++;
    struct dw_dvemu_part p;
    split_headers(text + i, len - i, &p);
    r.headers = p.headers;
    r.headers_len = p.headers_len;
    r.body = p.body;
    r.body_len = p.body_len;
    /* Trailing CRLFs after a body are framing, not content. */
    while (r.body_len > 0 && (r.body[r.body_len - 1] == '\n' || r.body[r.body_len - 1] == '\r'))
        r.body_len--;
    *out = r;
    return DW_OK;
}

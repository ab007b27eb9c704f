/*
 * OData $batch bodies (see dvbatch.h): the builder writes multipart requests with CRLF line
 * ends, optionally inside one changeset; the parser splits a response at its boundary, one
 * level of nested changesets, and reads each embedded HTTP response. Pure; no I/O.
 */
#include "dwasync/dvbatch.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"

static dw_rc put_request(struct dw_buf *out, const char *boundary, const struct dw_batch_request *r,
                         size_t content_id)
{
    dw_rc rc = dw_buf_printf(out,
                             "--%s\r\nContent-Type: application/http\r\n"
                             "Content-Transfer-Encoding: binary\r\n",
                             boundary);
    if (rc == DW_OK && content_id)
        rc = dw_buf_printf(out, "Content-ID: %zu\r\n", content_id);
    if (rc == DW_OK)
        rc = dw_buf_printf(out, "\r\n%s %s HTTP/1.1\r\n", r->method, r->url);
    if (rc == DW_OK && r->headers)
        rc = dw_buf_puts(out, r->headers);
    if (rc == DW_OK && r->body)
        rc = dw_buf_puts(out, "Content-Type: application/json; type=entry\r\n");
    if (rc == DW_OK)
        rc = dw_buf_puts(out, "\r\n");
    if (rc == DW_OK && r->body)
        rc = dw_buf_append(out, r->body, r->body_len);
    if (rc == DW_OK)
        rc = dw_buf_puts(out, "\r\n");
    return rc;
}

dw_rc dw_batch_build(struct dw_buf *out, const char *boundary, const char *changeset,
                     const struct dw_batch_request *reqs, size_t n)
{
    dw_rc rc = DW_OK;
    if (changeset)
        rc = dw_buf_printf(out, "--%s\r\nContent-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n",
                           boundary, changeset);
    for (size_t i = 0; i < n && rc == DW_OK; i++)
        rc = put_request(out, changeset ? changeset : boundary, &reqs[i],
                         !changeset           ? 0
                         : reqs[i].content_id ? reqs[i].content_id
                                              : i + 1);
    if (rc == DW_OK && changeset)
        rc = dw_buf_printf(out, "--%s--\r\n", changeset);
    if (rc == DW_OK)
        rc = dw_buf_printf(out, "--%s--\r\n", boundary);
    return rc;
}

/* A view of bytes inside the body being parsed. */
struct span {
    const char *p;
    size_t n;
};

/* Finds the value of a header parameter (name=value or name="value") in a header value. */
static char *header_param(const char *value, size_t len, const char *param)
{
    size_t plen = strlen(param);
    for (size_t i = 0; i + plen < len; i++) {
        if ((i == 0 || value[i - 1] == ';' || value[i - 1] == ' ' || value[i - 1] == '\t') &&
            strncasecmp(value + i, param, plen) == 0 && value[i + plen] == '=') {
            const char *v = value + i + plen + 1;
            const char *end = value + len;
            if (v < end && *v == '"') {
                const char *q = memchr(v + 1, '"', (size_t)(end - v - 1));
                if (q == NULL)
                    return NULL;
                return dw_strndup(v + 1, (size_t)(q - v - 1));
            }
            const char *e = v;
            while (e < end && *e != ';' && *e != ' ' && *e != '\t' && *e != '\r' && *e != '\n')
                e++;
            return e > v ? dw_strndup(v, (size_t)(e - v)) : NULL;
        }
    }
    return NULL;
}

dw_rc dw_batch_boundary(const char *content_type, char **out)
{
    if (content_type == NULL || strncasecmp(content_type, "multipart/", 10) != 0)
        return DW_ERR_PROTOCOL;
    char *b = header_param(content_type, strlen(content_type), "boundary");
    /* RFC 2046 limits a boundary to 70 characters; more is a broken or hostile peer. */
    if (b == NULL || *b == '\0' || strlen(b) > 200) {
        free(b);
        return DW_ERR_PROTOCOL;
    }
    *out = b;
    return DW_OK;
}

/* Reads one line (LF or CRLF); returns false at the end. The line excludes its ending. */
static bool next_line(struct span *s, struct span *line)
{
    if (s->n == 0)
        return false;
    const char *nl = memchr(s->p, '\n', s->n);
    size_t len = nl ? (size_t)(nl - s->p) : s->n;
    line->p = s->p;
    line->n = len;
    if (len > 0 && line->p[len - 1] == '\r')
        line->n--;
    size_t adv = nl ? len + 1 : len;
    s->p += adv;
    s->n -= adv;
    return true;
}

/* Header lookup in a block of header lines; returns the value span or n=0. */
static bool find_header(struct span headers, const char *name, struct span *value)
{
    struct span line;
    size_t nlen = strlen(name);
    while (next_line(&headers, &line)) {
        if (line.n > nlen && strncasecmp(line.p, name, nlen) == 0 && line.p[nlen] == ':') {
            const char *v = line.p + nlen + 1;
            const char *end = line.p + line.n;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            value->p = v;
            value->n = (size_t)(end - v);
            return true;
        }
    }
    return false;
}

/* Splits an entity into its header block and its content at the first empty line. */
static bool split_headers(struct span entity, struct span *headers, struct span *content)
{
    struct span s = entity, line;
    headers->p = entity.p;
    while (next_line(&s, &line)) {
        if (line.n == 0) {
            headers->n = (size_t)(line.p - entity.p);
            *content = s;
            return true;
        }
    }
    return false;
}

/*
 * Splits a multipart body into its parts: each part is the bytes between the end of one
 * delimiter line and the line ending before the next delimiter. Calls add for each.
 */
struct parse_ctx {
    struct dw_batch_response *resp;
    size_t cap;
};

static dw_rc parse_multipart(struct parse_ctx *ctx, const char *boundary, struct span body,
                             int depth);

/* A NUL-terminated copy that keeps embedded NUL bytes, so body_len always matches. */
static char *span_dup(struct span s)
{
    char *out = dw_malloc(s.n + 1);
    memcpy(out, s.p, s.n);
    out[s.n] = '\0';
    return out;
}

/* Finds the next delimiter "--boundary" at a line start at or after from. */
static const char *find_delim(struct span body, size_t from, const char *delim, size_t dlen)
{
    while (from < body.n) {
        const char *hit = memmem(body.p + from, body.n - from, delim, dlen);
        if (hit == NULL)
            return NULL;
        if (hit == body.p || hit[-1] == '\n')
            return hit;
        from = (size_t)(hit - body.p) + 1;
    }
    return NULL;
}

static dw_rc add_part(struct parse_ctx *ctx, struct span headers, struct span content)
{
    struct span v, status_line, inner_headers, inner_body, s;
    if (ctx->resp->nparts >= DW_BATCH_MAX_PARTS)
        return DW_ERR_PROTOCOL;
    /* The embedded response: status line, headers, empty line, body. */
    s = content;
    if (!next_line(&s, &status_line))
        return DW_ERR_PROTOCOL;
    if (status_line.n < 12 || strncmp(status_line.p, "HTTP/", 5) != 0)
        return DW_ERR_PROTOCOL;
    const char *sp = memchr(status_line.p, ' ', status_line.n);
    if (sp == NULL || (size_t)(status_line.p + status_line.n - sp) < 4 ||
        !isdigit((unsigned char)sp[1]) || !isdigit((unsigned char)sp[2]) ||
        !isdigit((unsigned char)sp[3]))
        return DW_ERR_PROTOCOL;
    int status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
    if (status < 100)
        return DW_ERR_PROTOCOL;
    if (!split_headers(s, &inner_headers, &inner_body)) {
        /* Headers without the empty line that ends them: no body. */
        inner_headers = s;
        inner_body.p = s.p + s.n;
        inner_body.n = 0;
    }
    if (find_header(inner_headers, "Content-Length", &v)) {
        char tmp[24];
        size_t n = v.n < sizeof tmp - 1 ? v.n : sizeof tmp - 1;
        memcpy(tmp, v.p, n);
        tmp[n] = '\0';
        char *end;
        unsigned long long cl = strtoull(tmp, &end, 10);
        if (end != tmp && *end == '\0' && cl <= inner_body.n)
            inner_body.n = (size_t)cl;
    } else {
        /* Without a length, the body runs to the part's end, less the line ending. */
        while (inner_body.n > 0 &&
               (inner_body.p[inner_body.n - 1] == '\n' || inner_body.p[inner_body.n - 1] == '\r'))
            inner_body.n--;
    }
    if (ctx->resp->nparts == ctx->cap) {
        ctx->cap = ctx->cap ? ctx->cap * 2 : 16;
        ctx->resp->parts = dw_realloc(ctx->resp->parts, ctx->cap * sizeof *ctx->resp->parts);
    }
    struct dw_batch_part *p = &ctx->resp->parts[ctx->resp->nparts++];
    memset(p, 0, sizeof *p);
    p->status = status;
    if (find_header(headers, "Content-ID", &v) || find_header(inner_headers, "Content-ID", &v))
        p->content_id = span_dup(v);
    if (find_header(inner_headers, "Retry-After", &v))
        p->retry_after = span_dup(v);
    p->body = span_dup(inner_body);
    p->body_len = inner_body.n;
    return DW_OK;
}

static dw_rc handle_part(struct parse_ctx *ctx, struct span part, int depth)
{
    struct span headers, content, ct;
    if (!split_headers(part, &headers, &content))
        return DW_ERR_PROTOCOL;
    if (find_header(headers, "Content-Type", &ct) && ct.n >= 10 &&
        strncasecmp(ct.p, "multipart/", 10) == 0) {
        if (depth > 0)
            return DW_ERR_PROTOCOL; /* Dataverse nests changesets one level only */
        char *cts = span_dup(ct), *inner = NULL;
        dw_rc rc = dw_batch_boundary(cts, &inner);
        free(cts);
        if (rc == DW_OK)
            rc = parse_multipart(ctx, inner, content, depth + 1);
        free(inner);
        return rc;
    }
    return add_part(ctx, headers, content);
}

static dw_rc parse_multipart(struct parse_ctx *ctx, const char *boundary, struct span body,
                             int depth)
{
    size_t dlen = strlen(boundary) + 2;
    char *delim = dw_asprintf("--%s", boundary);
    dw_rc rc = DW_OK;
    const char *d = find_delim(body, 0, delim, dlen);
    if (d == NULL) {
        rc = DW_ERR_PROTOCOL;
        goto out;
    }
    for (;;) {
        const char *after = d + dlen;
        size_t rest = (size_t)(body.p + body.n - after);
        if (rest >= 2 && after[0] == '-' && after[1] == '-')
            break; /* close delimiter; what follows is the epilogue */
        /* The rest of the delimiter line may only hold transport padding. */
        const char *nl = memchr(after, '\n', rest);
        if (nl == NULL) {
            rc = DW_ERR_PROTOCOL;
            goto out;
        }
        for (const char *c = after; c < nl; c++)
            if (*c != ' ' && *c != '\t' && *c != '\r') {
                rc = DW_ERR_PROTOCOL;
                goto out;
            }
        const char *start = nl + 1;
        const char *next = find_delim(body, (size_t)(start - body.p), delim, dlen);
        if (next == NULL) {
            rc = DW_ERR_PROTOCOL; /* no close delimiter: truncated */
            goto out;
        }
        /* The line ending before a delimiter belongs to the delimiter. */
        const char *end = next;
        if (end > start && end[-1] == '\n')
            end--;
        if (end > start && end[-1] == '\r')
            end--;
        struct span part = {start, (size_t)(end - start)};
        if ((rc = handle_part(ctx, part, depth)) != DW_OK)
            goto out;
        d = next;
    }
out:
    free(delim);
    return rc;
}

dw_rc dw_batch_parse(const char *content_type, const char *body, size_t len,
                     struct dw_batch_response *out)
{
    char *boundary = NULL;
    struct dw_batch_response resp = {NULL, 0};
    struct parse_ctx ctx = {&resp, 0};
    dw_rc rc = dw_batch_boundary(content_type, &boundary);
    if (rc != DW_OK)
        goto out;
    rc = parse_multipart(&ctx, boundary, (struct span){body, len}, 0);
    if (rc == DW_OK && resp.nparts == 0)
        rc = DW_ERR_PROTOCOL;
out:
    free(boundary);
    if (rc != DW_OK) {
        dw_batch_response_cleanup(&resp);
        return rc;
    }
    *out = resp;
    return DW_OK;
}

void dw_batch_response_cleanup(struct dw_batch_response *r)
{
    for (size_t i = 0; i < r->nparts; i++) {
        free(r->parts[i].content_id);
        free(r->parts[i].retry_after);
        free(r->parts[i].body);
    }
    free(r->parts);
    r->parts = NULL;
    r->nparts = 0;
}

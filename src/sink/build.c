/*
 * Request building: the body of a row as sent, a row's address, the UpsertMultiple body of
 * a bulk request, the multipart body of a $batch (or of one changeset), the metadata GETs
 * (whether a table supports UpsertMultiple) and the URLs of the Web API.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvbatch.h"
#include "dwasync/dvkey.h"
#include "dwasync/json.h"

/* Appends the members of the body as sent (no braces): a POST's whole body, or the write's
 * body text followed by its refs, written out (rbinds) once they are resolved. */
void dw_sink_put_body_members(struct dw_buf *b, const struct row *r)
{
    if (r->rbody) {
        (void)dw_json_append_members(b, r->rbody);
        return;
    }
    bool first = r->body == NULL || r->body->len == 0;
    if (!first)
        (void)dw_buf_append(b, r->body->data, r->body->len);
    if (r->rbinds) {
        if (!first && r->rbinds[0])
            (void)dw_buf_putc(b, ',');
        (void)dw_buf_puts(b, r->rbinds);
        return;
    }
    for (size_t i = 0; i < dw_refs_count(r->refs); i++) {
        (void)dw_json_append_member(b, r->refs->items[i].name, r->refs->items[i].ref, first);
        first = false;
    }
}

/* Whether the body as sent has no members. */
static bool body_empty(const struct row *r)
{
    if (r->rbody)
        return json_object_size(r->rbody) == 0;
    return (r->body == NULL || r->body->len == 0) && dw_refs_count(r->refs) == 0;
}

char *dw_sink_body_text(const struct row *r)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_putc(&b, '{');
    dw_sink_put_body_members(&b, r);
    (void)dw_buf_putc(&b, '}');
    return dw_buf_steal(&b);
}

char *dw_sink_api_url(struct dw_sink *s, const char *fmt, ...)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_printf(&b, "%s/", s->api);
    va_list ap;
    va_start(ap, fmt);
    (void)dw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return dw_buf_steal(&b);
}

/* One header line "Name: true|false\r\n" for a boolean write option that is set. */
static void put_flag_header(struct dw_buf *b, const json_t *options, const char *option,
                            const char *header)
{
    const json_t *v = json_object_get(options, option);
    if (json_is_boolean(v))
        (void)dw_buf_printf(b, "%s: %s\r\n", header, json_is_true(v) ? "true" : "false");
}

/* The MSCRM.* headers of a write's options (write.h), each line ending in CRLF; none for
 * NULL. "Use optional parameters" and "Bypass custom Dataverse logic" name them. */
void dw_sink_put_option_headers(struct dw_buf *b, const json_t *options)
{
    const json_t *logic = json_object_get(options, "bypass_logic");
    for (size_t i = 0; i < json_array_size(logic); i++) {
        (void)dw_buf_puts(b, i ? "," : "MSCRM.BypassBusinessLogicExecution: ");
        (void)dw_buf_puts(b, json_string_value(json_array_get(logic, i)));
    }
    if (json_array_size(logic))
        (void)dw_buf_puts(b, "\r\n");
    put_flag_header(b, options, "suppress_duplicate_detection", "MSCRM.SuppressDuplicateDetection");
    put_flag_header(b, options, "suppress_flows", "MSCRM.SuppressCallbackRegistrationExpanderJob");
}

/* Appends "?tag=<tag>" for a write whose options have a tag (a token: no escaping needed). */
static void put_tag_query(struct dw_buf *b, const json_t *options)
{
    const char *tag = json_string_value(json_object_get(options, "tag"));
    if (tag)
        (void)dw_buf_printf(b, "?tag=%s", tag);
}

struct curl_slist *dw_sink_add_option_headers(struct curl_slist *list, struct req *q)
{
    if (q->kind != REQ_BULK)
        return list; /* a $batch carries them in each part */
    struct dw_buf lines;
    dw_buf_init(&lines, 0);
    dw_sink_put_option_headers(&lines, as_write(q)->rows[0]->options);
    for (char *line = lines.data, *end; line && (end = strstr(line, "\r\n")) != NULL;
         line = end + 2) {
        *end = '\0';
        list = curl_slist_append(list, line);
    }
    dw_buf_cleanup(&lines);
    return list;
}

/* The address of a row: "<set>(<key segment>)" or "<set>(<guid>)", URL-encoded. */
static void row_address(struct dw_buf *b, const struct row *r, bool encode)
{
    (void)dw_buf_puts(b, r->entity_set);
    (void)dw_buf_putc(b, '(');
    if (r->guid)
        (void)dw_buf_puts(b, r->guid);
    else
        (void)dw_dvkey_segment(b, r->rkey, encode);
    (void)dw_buf_putc(b, ')');
}

/*
 * A new GET request of kind to "<api>/<path>&$filter=<condition><value>", the value an OData
 * string literal and the filter percent-encoded (path carries the "?$select=...").
 */
struct req *dw_sink_filter_get(struct dw_sink *s, enum req_kind kind, const char *path,
                               const char *condition, const char *value)
{
    struct dw_buf filter, url;
    dw_buf_init(&filter, 0);
    dw_buf_init(&url, 0);
    json_t *v = json_string(value);
    (void)dw_buf_puts(&filter, condition);
    if (v == NULL || dw_dvkey_literal(&filter, v, false) != DW_OK)
        (void)dw_buf_puts(&filter, "''");
    json_decref(v);
    (void)dw_dvkey_encode(&url, filter.data, filter.len);
    struct req *q =
        dw_sink_req_new(kind, "GET", dw_sink_api_url(s, "%s&$filter=%s", path, dw_buf_str(&url)));
    dw_buf_cleanup(&filter);
    dw_buf_cleanup(&url);
    return q;
}

void dw_sink_queue_bulkinfo(struct dw_sink *s, struct bulk_entry *e)
{
    struct req *q = dw_sink_filter_get(
        s, REQ_BULKINFO, "sdkmessagefilters?$select=sdkmessagefilterid",
        "sdkmessageid/name eq 'UpsertMultiple' and primaryobjecttypecode eq ", e->name);
    as_bulkinfo(q)->entry = e;
    e->state = ST_INFLIGHT;
    dw_sink_enqueue(s, q);
}

/* Gives a write request its rows (a copy of the array; the rows themselves are sent). */
static void carry_rows(struct write_req *w, struct row **rows, size_t n)
{
    w->rows = dw_malloc(n * sizeof *w->rows);
    memcpy(w->rows, rows, n * sizeof *rows);
    w->nrows = n;
}

void dw_sink_queue_bulk(struct dw_sink *s, struct row **rows, size_t n)
{
    /* Written straight into the body: each target is the row's body with its type and
     * address in front, {"Targets":[{"@odata.type":..,"@odata.id":..,<body>},..]}. */
    struct dw_buf body, address;
    dw_buf_init(&body, 0);
    dw_buf_init(&address, 0);
    (void)dw_buf_puts(&body, "{\"Targets\":[");
    for (size_t i = 0; i < n; i++) {
        struct row *r = rows[i];
        dw_buf_reset(&address);
        (void)dw_buf_puts(&address, "Microsoft.Dynamics.CRM.");
        (void)dw_buf_puts(&address, r->logical_name);
        (void)dw_buf_puts(&body, i ? ",{\"@odata.type\":" : "{\"@odata.type\":");
        (void)dw_buf_put_json_string(&body, address.data, address.len);
        dw_buf_reset(&address);
        row_address(&address, r, true);
        (void)dw_buf_puts(&body, ",\"@odata.id\":");
        (void)dw_buf_put_json_string(&body, address.data, address.len);
        if (!body_empty(r)) {
            (void)dw_buf_putc(&body, ',');
            dw_sink_put_body_members(&body, r);
        }
        (void)dw_buf_putc(&body, '}');
        r->sent = true;
        dw_sink_row_move(s, r, ROW_SENT);
    }
    (void)dw_buf_puts(&body, "]}");
    dw_buf_cleanup(&address);
    /* The rows share their options (dw_sink_plan() groups them so). */
    struct dw_buf path;
    dw_buf_init(&path, 0);
    (void)dw_buf_printf(&path, "%s/Microsoft.Dynamics.CRM.UpsertMultiple", rows[0]->entity_set);
    put_tag_query(&path, rows[0]->options);
    struct req *q = dw_sink_req_new(REQ_BULK, "POST", dw_sink_api_url(s, "%s", dw_buf_str(&path)));
    dw_buf_cleanup(&path);
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    q->content_type = dw_strdup("application/json");
    carry_rows(as_write(q), rows, n);
    dw_sink_enqueue(s, q);
}

/*
 * Builds a $batch request of rows (moved to ROW_SENT); the caller queues it. With
 * content_ids the rows go as one changeset (REQ_CHANGESET) under those Content-IDs.
 */
struct write_req *dw_sink_build_batch(struct dw_sink *s, struct row **rows, size_t n,
                                      const size_t *content_ids)
{
    struct dw_batch_request *parts = dw_calloc(n, sizeof *parts);
    char **urls = dw_calloc(n, sizeof *urls);
    char **bodies = dw_calloc(n, sizeof *bodies);
    char **heads = dw_calloc(n, sizeof *heads);
    char boundary[48];
    snprintf(boundary, sizeof boundary, "batch_%08x%08x", dw_sink_random32(), dw_sink_random32());
    for (size_t i = 0; i < n; i++) {
        struct row *r = rows[i];
        struct dw_buf b;
        dw_buf_init(&b, 0);
        (void)dw_buf_printf(&b, "%s/", s->api_path);
        if (r->post)
            (void)dw_buf_puts(&b, r->entity_set);
        else
            row_address(&b, r, true);
        put_tag_query(&b, r->options);
        urls[i] = dw_buf_steal(&b);
        parts[i].url = urls[i];
        parts[i].content_id = content_ids ? content_ids[i] : 0;
        r->sent = true;
        /* Each part carries its own row's options: a $batch may mix maps. */
        struct dw_buf h;
        dw_buf_init(&h, 0);
        if (r->op == DW_WRITE_CREATE && !r->post)
            (void)dw_buf_puts(&h, "If-None-Match: *\r\n");
        else if (r->op == DW_WRITE_UPDATE && !r->post)
            (void)dw_buf_puts(&h, "If-Match: *\r\n");
        dw_sink_put_option_headers(&h, r->options);
        heads[i] = h.len ? dw_buf_steal(&h) : NULL;
        dw_buf_cleanup(&h);
        parts[i].headers = heads[i];
        if (r->op == DW_WRITE_DELETE) {
            parts[i].method = "DELETE";
        } else {
            parts[i].method = r->post ? "POST" : "PATCH";
            bodies[i] = dw_sink_body_text(r);
            parts[i].body_len = strlen(bodies[i]);
            parts[i].body = bodies[i];
        }
        dw_sink_row_move(s, r, ROW_SENT);
    }
    struct dw_buf body;
    dw_buf_init(&body, 0);
    char changeset[48];
    snprintf(changeset, sizeof changeset, "changeset_%08x%08x", dw_sink_random32(),
             dw_sink_random32());
    (void)dw_batch_build(&body, boundary, content_ids ? changeset : NULL, parts, n);
    struct req *q = dw_sink_req_new(content_ids ? REQ_CHANGESET : REQ_BATCH, "POST",
                                    dw_sink_api_url(s, "$batch"));
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    q->content_type = dw_asprintf("multipart/mixed; boundary=\"%s\"", boundary);
    carry_rows(as_write(q), rows, n);
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        free(bodies[i]);
        free(heads[i]);
    }
    free(urls);
    free(bodies);
    free(heads);
    free(parts);
    return as_write(q);
}

struct write_req *dw_sink_make_batch(struct dw_sink *s, struct row **rows, size_t n)
{
    return dw_sink_build_batch(s, rows, n, NULL);
}

void dw_sink_queue_batch(struct dw_sink *s, struct row **rows, size_t n)
{
    dw_sink_enqueue(s, &dw_sink_make_batch(s, rows, n)->req);
}

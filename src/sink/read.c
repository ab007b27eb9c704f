/*
 * Answers to GETs: parent-id lookups, entity-set metadata and UpsertMultiple support (paged
 * collections followed within the configured environment only, a 200 that is not a
 * collection asked again), and the blocking reads: dw_sink_get_page(), one page and its next
 * link, and dw_sink_get_json(), the pages of a collection joined, built on it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvauth.h"
#include "dwasync/json.h"
#include "dwasync/log.h"

/* Whether url is inside the configured environment: a next link elsewhere is not followed
 * (the token would go with it). */
static bool in_environment(const struct dw_sink *s, const char *url)
{
    size_t alen = strlen(s->api);
    return strncmp(url, s->api, alen) == 0 && url[alen] == '/';
}

/*
 * A collection answered in pages ("Page results using OData": at most 5,000 rows, or the
 * server's page size, and an @odata.nextLink): keeps this page's rows and sends the request
 * again to the next link; true when it did. On the last page, *values becomes every page's
 * rows (held by q). A next link outside the configured environment is not followed (the
 * token would go with it): *bad is set.
 */
static bool follow_next_page(struct dw_sink *s, struct read_req *rd, json_t *doc, json_t **values,
                             bool *bad)
{
    struct req *q = &rd->req;
    const char *next = json_string_value(json_object_get(doc, "@odata.nextLink"));
    *bad = false;
    if (next == NULL || !json_is_array(*values)) {
        if (rd->pages && json_is_array(*values)) {
            json_array_extend(rd->pages, *values);
            json_object_set(doc, "value", rd->pages);
            *values = rd->pages;
        }
        return false;
    }
    if (!in_environment(s, next)) {
        DW_ERROR("GET \"%s\" answered a next page outside \"%s\": not followed", q->url, s->api);
        *bad = true;
        return false;
    }
    if (rd->pages == NULL)
        rd->pages = json_array();
    json_array_extend(rd->pages, *values);
    free(q->url);
    q->url = dw_strdup(next);
    dw_sink_req_reset_transfer(q);
    dw_sink_enqueue(s, q);
    return true;
}

/* A blocking GET is done: its caller reads the document (one page) from the response
 * buffer, and frees it. */
static void settle_get(struct get_req *g, bool ok, long http, const char *code, const char *msg)
{
    struct req *q = &g->rd.req;
    g->done = true;
    g->http = http;
    g->rc = ok ? DW_OK : http == 404 ? DW_ERR_NOT_FOUND : DW_ERR_HTTP;
    if (g->rc != DW_OK)
        DW_ERROR("GET \"%s\" failed: HTTP %ld %s %s", q->url, http, code, msg);
}

/* Whether the table supports UpsertMultiple: it does when a message filter was found. A
 * failed question counts as no (the rows go as $batch, which every table takes). */
static void settle_bulkinfo(struct bulkinfo_req *b, const json_t *values)
{
    b->entry->state = ST_OK;
    b->entry->supported = json_array_size(values) > 0;
    DW_INFO("table \"%s\" %s UpsertMultiple", b->entry->name,
            b->entry->supported ? "supports" : "does not support");
}

/* The primary id attribute of an entity set, or why it could not be found. */
static void settle_setinfo(struct setinfo_req *e, const json_t *values, long http, const char *code,
                           const char *msg)
{
    const char *pk =
        json_string_value(json_object_get(json_array_get(values, 0), "PrimaryIdAttribute"));
    if (pk) {
        e->entry->state = ST_OK;
        e->entry->pk = dw_strdup(pk);
        return;
    }
    char *m = dw_asprintf("cannot find the primary id of entity set \"%s\": %s", e->entry->set,
                          *msg ? msg : "no such entity set");
    e->entry->state = ST_FAILED;
    dw_sink_failure_set(&e->entry->fail, DW_WRITE_REJECTED, DW_ERRCLASS_VALIDATION, (int)http, code,
                        m);
    free(m);
}

void dw_sink_fail_read(struct dw_sink *s, struct read_req *rd, const struct failure *f)
{
    struct req *q = &rd->req;
    if (q->kind == REQ_LOOKUP) {
        struct lookup_req *l = as_lookup(q);
        for (size_t i = 0; i < l->nentries; i++)
            dw_sink_fail_entry(s, l->entries[i], f);
    } else if (q->kind == REQ_SETINFO) {
        struct set_entry *e = as_setinfo(q)->entry;
        e->state = ST_FAILED;
        dw_sink_failure_set(&e->fail, f->status, f->cls, f->http, f->code, f->message);
    } else if (q->kind == REQ_BULKINFO) {
        as_bulkinfo(q)->entry->state = ST_OK;
        as_bulkinfo(q)->entry->supported = false;
    }
}

void dw_sink_complete_read(struct dw_sink *s, struct read_req *rd, CURLcode cc, long http)
{
    struct req *q = &rd->req;
    char *code = NULL, *msg = NULL;
    dw_sink_transfer_error(q, cc, http, &code, &msg);
    struct dw_classification c = dw_classify(DW_WRITE_UPSERT, cc, (int)http, code);
    if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        dw_sink_req_reset_transfer(q);
        dw_sink_enqueue(s, q);
        goto out;
    }
    if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %ld %s", http, msg);
        dw_sink_retry(s, q, &c, (int)http, code, m);
        free(m);
        goto out;
    }
    json_t *doc = c.verdict == DW_VERDICT_OK ? json_loads(dw_buf_str(&q->resp), 0, NULL) : NULL;
    json_t *values = json_object_get(doc, "value");
    bool bad_link = false;
    /* A blocking GET answers one page: its caller follows the next link (dw_sink_get_page()). */
    if (c.verdict == DW_VERDICT_OK && q->kind != REQ_GET &&
        follow_next_page(s, rd, doc, &values, &bad_link)) {
        json_decref(doc);
        goto out;
    }
    if (bad_link) /* asked again, as for a malformed answer */
        values = NULL;
    if (c.verdict == DW_VERDICT_OK && q->kind != REQ_GET && !json_is_array(values)) {
        /* A 200 whose body is not a collection says nothing: "not found" read from it
         * could create a duplicate row, so it is asked again. */
        struct dw_classification bad = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_WARN("GET \"%s\" answered 200 with a body that is not a collection", q->url);
        json_decref(doc);
        dw_sink_retry(s, q, &bad, (int)http, "", "malformed response");
        goto out;
    }
    struct failure f = {DW_WRITE_REJECTED, c.error_class, (int)http, code, msg};
    switch (q->kind) {
    case REQ_GET:
        settle_get(as_get(q), c.verdict == DW_VERDICT_OK, http, code, msg);
        json_decref(doc);
        goto out; /* the caller reads the response and frees the request */
    case REQ_BULKINFO:
        settle_bulkinfo(as_bulkinfo(q), values);
        break;
    case REQ_SETINFO:
        settle_setinfo(as_setinfo(q), values, http, code, msg);
        break;
    case REQ_LOOKUP:
        if (c.verdict == DW_VERDICT_OK)
            dw_sink_settle_lookup(s, as_lookup(q), values);
        else
            dw_sink_fail_read(s, rd, &f);
        break;
    default:
        break;
    }
    json_decref(doc);
    dw_sink_req_free(q);
out:
    free(code);
    free(msg);
}

dw_rc dw_sink_get_page(struct dw_sink *s, const char *path_or_next_link, json_t **page,
                       char **next_link)
{
    *page = NULL;
    *next_link = NULL;
    bool absolute = strncmp(path_or_next_link, "https://", 8) == 0 ||
                    strncmp(path_or_next_link, "http://", 7) == 0;
    if (absolute && !in_environment(s, path_or_next_link)) {
        DW_ERROR("next link \"%s\" is outside \"%s\": not followed", path_or_next_link, s->api);
        return DW_ERR_INVALID;
    }
    char *url =
        absolute ? dw_strdup(path_or_next_link) : dw_sink_api_url(s, "%s", path_or_next_link);
    json_t *doc = NULL;
    dw_rc rc = dw_sink_blocking_get(s, url, &doc);
    if (rc != DW_OK)
        return rc;
    const char *next = json_string_value(json_object_get(doc, "@odata.nextLink"));
    if (next && !in_environment(s, next)) {
        DW_ERROR("GET \"%s\" answered a next page outside \"%s\": not followed", path_or_next_link,
                 s->api);
        json_decref(doc);
        return DW_ERR_PROTOCOL;
    }
    if (next) {
        *next_link = dw_strdup(next);
        json_object_del(doc, "@odata.nextLink");
    }
    *page = doc;
    return DW_OK;
}

dw_rc dw_sink_get_json(struct dw_sink *s, const char *path_and_query, json_t **out)
{
    json_t *doc = NULL;
    char *next = NULL;
    dw_rc rc = dw_sink_get_page(s, path_and_query, &doc, &next);
    json_t *rows = json_object_get(doc, "value");
    while (rc == DW_OK && next && json_is_array(rows)) {
        char *link = next;
        json_t *page = NULL;
        if ((rc = dw_sink_get_page(s, link, &page, &next)) == DW_OK)
            json_array_extend(rows, json_object_get(page, "value"));
        json_decref(page);
        free(link);
    }
    free(next);
    if (rc != DW_OK) {
        json_decref(doc);
        return rc;
    }
    *out = doc;
    return DW_OK;
}

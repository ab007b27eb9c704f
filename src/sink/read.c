/*
 * Answers to GETs: parent-id lookups, entity-set metadata, UpsertMultiple support and the
 * blocking GETs of dw_sink_get_json(), with paged collections followed (within the
 * configured environment only) and a 200 that is not a collection asked again.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvauth.h"
#include "dwasync/json.h"
#include "dwasync/log.h"

/*
 * A collection answered in pages ("Page results using OData": at most 5,000 rows, or the
 * server's page size, and an @odata.nextLink): keeps this page's rows and sends the request
 * again to the next link; true when it did. On the last page, *values becomes every page's
 * rows (held by q). A next link outside the configured environment is not followed (the
 * token would go with it): *bad is set.
 */
static bool follow_next_page(struct dw_sink *s, struct req *q, json_t *doc, json_t **values,
                             bool *bad)
{
    const char *next = json_string_value(json_object_get(doc, "@odata.nextLink"));
    size_t alen = strlen(s->api);
    *bad = false;
    if (next == NULL || !json_is_array(*values)) {
        if (q->pages && json_is_array(*values)) {
            json_array_extend(q->pages, *values);
            json_object_set(doc, "value", q->pages);
            *values = q->pages;
        }
        return false;
    }
    if (strncmp(next, s->api, alen) != 0 || next[alen] != '/') {
        DW_ERROR("GET \"%s\" answered a next page outside \"%s\": not followed", q->url, s->api);
        *bad = true;
        return false;
    }
    if (q->pages == NULL)
        q->pages = json_array();
    json_array_extend(q->pages, *values);
    free(q->url);
    q->url = dw_strdup(next);
    dw_sink_req_reset_transfer(q);
    dw_sink_enqueue(s, q);
    return true;
}

void dw_sink_complete_lookup(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
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
    if (c.verdict == DW_VERDICT_OK && follow_next_page(s, q, doc, &values, &bad_link)) {
        json_decref(doc);
        goto out;
    }
    if (bad_link) { /* a GET fails; a lookup is asked again, as for a malformed answer */
        values = NULL;
        if (q->kind == REQ_GET)
            c.verdict = DW_VERDICT_PERMANENT;
    }
    if (c.verdict == DW_VERDICT_OK && q->kind != REQ_GET && !json_is_array(values)) {
        /* A 200 whose body is not a collection says nothing: "not found" read from it
         * could create a duplicate row, so it is asked again. */
        struct dw_classification bad = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_WARN("GET \"%s\" answered 200 with a body that is not a collection", q->url);
        json_decref(doc);
        dw_sink_retry(s, q, &bad, (int)http, "", "malformed response");
        goto out;
    }
    if (q->kind == REQ_GET) {
        q->done = true;
        q->http = http;
        q->rc = c.verdict == DW_VERDICT_OK ? DW_OK : http == 404 ? DW_ERR_NOT_FOUND : DW_ERR_HTTP;
        if (q->rc == DW_OK && q->pages) { /* the caller reads every page's rows as one */
            char *all = dw_json_dumps(doc);
            dw_buf_reset(&q->resp);
            if (dw_buf_puts(&q->resp, all) != DW_OK)
                q->rc = DW_ERR_RANGE;
            free(all);
        }
        if (q->rc != DW_OK)
            DW_ERROR("GET \"%s\" failed: HTTP %ld %s %s", q->url, http, code, msg);
        json_decref(doc);
        goto out; /* the caller reads q->resp and frees it */
    }
    if (q->kind == REQ_BULKINFO) {
        q->bulk_entry->state = ST_OK;
        q->bulk_entry->supported = json_array_size(values) > 0;
        DW_INFO("table \"%s\" %s UpsertMultiple", q->bulk_entry->name,
                q->bulk_entry->supported ? "supports" : "does not support");
    } else if (q->kind == REQ_SETINFO) {
        const char *pk =
            json_string_value(json_object_get(json_array_get(values, 0), "PrimaryIdAttribute"));
        if (pk) {
            q->set_entry->state = ST_OK;
            q->set_entry->pk = dw_strdup(pk);
        } else {
            char *m = dw_asprintf("cannot find the primary id of entity set \"%s\": %s",
                                  q->set_entry->set, *msg ? msg : "no such entity set");
            q->set_entry->state = ST_FAILED;
            dw_sink_failure_set(&q->set_entry->fail, DW_WRITE_REJECTED, DW_ERRCLASS_VALIDATION,
                                (int)http, code, m);
            free(m);
        }
    } else if (q->kind == REQ_LOOKUP) {
        if (c.verdict == DW_VERDICT_OK) {
            dw_sink_settle_lookup(s, q, values);
        } else {
            struct failure f = {DW_WRITE_REJECTED, c.error_class, (int)http, code, msg};
            for (size_t i = 0; i < q->nentries; i++)
                dw_sink_fail_entry(s, q->entries[i], &f);
        }
    }
    json_decref(doc);
    dw_sink_req_free(q);
out:
    free(code);
    free(msg);
}

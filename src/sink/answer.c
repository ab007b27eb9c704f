/*
 * Answers to writes: an error body read, a failure told retryable or permanent by the
 * classifier, a $batch answer read part by part, and the bad rows of a failed bulk request
 * or of a batch refused as a whole isolated by sending them again as $batch, alone if need
 * be. A lost answer to a POST is never resent blindly (it may have landed).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/dvauth.h"
#include "dwasync/dvbatch.h"
#include "dwasync/log.h"

/* Reads {"error":{"code":..,"message":..}} (or an OAuth-style error) from a body. */
void dw_sink_parse_error(const char *body, char **code, char **message)
{
    json_t *doc = json_loads(body ? body : "", JSON_DECODE_ANY, NULL);
    json_t *err = json_object_get(doc, "error");
    const char *c = json_string_value(json_object_get(err, "code"));
    const char *m = json_string_value(json_object_get(err, "message"));
    *code = dw_strdup(c ? c : "");
    if (m)
        *message = dw_strdup(m);
    else if (body && *body && doc == NULL)
        *message = dw_strndup(body, 300);
    else
        *message = dw_strdup("");
    json_decref(doc);
}

/* The error code and message of a finished transfer: the transport's, none for a success
 * (whose body may be large, and is no error), or the error Dataverse answered. */
void dw_sink_transfer_error(const struct req *q, CURLcode cc, long http, char **code,
                            char **message)
{
    if (cc == CURLE_WRITE_ERROR && q->too_big) {
        *code = dw_strdup("");
        *message = dw_asprintf("the response is larger than [dataverse] max_response_bytes "
                               "(%zu bytes): not read",
                               q->resp.max_len);
    } else if (cc != CURLE_OK) {
        *code = dw_strdup("");
        *message = dw_strdup(q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
    } else if (http >= 300 && http < 400) {
        *code = dw_strdup("");
        *message = dw_asprintf("configuration error: redirected to \"%s\", which dwasync "
                               "does not follow. Set [dataverse] url (or authority) to the "
                               "address that answers itself.",
                               q->location ? q->location : "(no Location header)");
    } else if (http >= 200 && http < 300) {
        *code = dw_strdup("");
        *message = dw_strdup("");
    } else {
        dw_sink_parse_error(dw_buf_str(&q->resp), code, message);
    }
}

/* Finishes every row of a write request with f (and the rest of its atomic group). */
static void give_up_write(struct dw_sink *s, struct write_req *w, const struct failure *f)
{
    for (size_t i = 0; i < w->nrows; i++)
        dw_sink_finish_row(s, w->rows[i], f->status, f->cls, f->http, f->code, f->message);
    if (w->req.kind == REQ_CHANGESET)
        dw_sink_atomic_fail(s, as_changeset(&w->req)->atomic, NULL, f);
}

void dw_sink_give_up(struct dw_sink *s, struct req *q, const struct failure *f)
{
    switch (q->kind) {
    case REQ_BULK:
    case REQ_BATCH:
    case REQ_CHANGESET:
        give_up_write(s, as_write(q), f);
        break;
    case REQ_LOOKUP:
    case REQ_SETINFO:
    case REQ_BULKINFO:
        dw_sink_fail_read(s, as_read(q), f);
        break;
    case REQ_GET: {
        struct get_req *g = as_get(q);
        g->done = true;
        g->http = f->http;
        g->rc = DW_ERR_HTTP;
        DW_ERROR("GET \"%s\" failed: %s", q->url, f->message);
        return; /* the caller frees it */
    }
    case REQ_TOKEN:
    case REQ_PROBE:
        break;
    }
    dw_sink_req_free(q);
}

/* Sends every row of q again as its own $batch (isolates the bad rows of a bulk request
 * or of a batch refused as a whole). */
static void isolate(struct dw_sink *s, struct write_req *w, bool singles)
{
    for (size_t i = 0; i < w->nrows; i++) {
        w->rows[i]->no_bulk = true;
        w->rows[i]->single = singles;
        dw_sink_row_move(s, w->rows[i], ROW_READY);
    }
    dw_sink_req_free(&w->req);
}

/*
 * A row created with POST (its key cannot be put in a URL) whose answer was lost may exist
 * now: sending the POST again would meet a duplicate key. Such rows are resolved again
 * instead (the $filter lookup then finds the row and the write becomes a PATCH by id).
 * Returns the request holding the other rows, or NULL when none are left (q is consumed).
 */
static struct write_req *reresolve_posts(struct dw_sink *s, struct write_req *w)
{
    struct req *q = &w->req;
    size_t keep = 0;
    for (size_t i = 0; i < w->nrows; i++) {
        if (w->rows[i]->post) {
            w->rows[i]->post_lost = true;
            dw_sink_row_move(s, w->rows[i], ROW_RESOLVING);
        } else {
            w->rows[keep++] = w->rows[i];
        }
    }
    if (keep == w->nrows)
        return w;
    DW_WARN("the answer to a $batch with %zu row(s) created by POST was lost: looking them up "
            "again rather than risk a duplicate",
            w->nrows - keep);
    struct write_req *nw = keep ? dw_sink_make_batch(s, w->rows, keep) : NULL;
    if (nw) {
        nw->req.attempts = q->attempts;
        nw->req.token_gen = q->token_gen;
        nw->req.auth_retried = q->auth_retried;
        nw->req.retry_after = q->retry_after ? dw_strdup(q->retry_after) : NULL;
    }
    dw_sink_req_free(q);
    return nw;
}

static void complete_batch(struct dw_sink *s, struct write_req *w)
{
    struct req *q = &w->req;
    struct dw_batch_response br = {NULL, 0};
    if (dw_batch_parse(q->resp_type, q->resp.data ? q->resp.data : "", q->resp.len, &br) != DW_OK) {
        struct dw_classification c = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_ERROR("$batch answer of %zu bytes could not be parsed (content type \"%s\")",
                 q->resp.len, q->resp_type ? q->resp_type : "");
        dw_sink_retry(s, q, &c, 200, "", "malformed $batch response");
        return;
    }
    struct row **again = dw_malloc(w->nrows * sizeof *again);
    size_t nagain = 0, nunanswered = 0;
    bool throttled = false, renew = false;
    int64_t pause = -1;
    struct dw_classification last = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
    char *last_msg = NULL;
    int last_http = 0;
    for (size_t i = 0; i < w->nrows; i++) {
        struct row *r = w->rows[i];
        if (i >= br.nparts) {
            /* The batch stopped early: never attempted, so resolved and grouped again. */
            dw_sink_row_move(s, r, ROW_READY);
            nunanswered++;
            continue;
        }
        const struct dw_batch_part *p = &br.parts[i];
        char *code = NULL, *msg = NULL;
        dw_sink_parse_error(p->body, &code, &msg);
        struct dw_classification c = dw_classify(r->op, CURLE_OK, p->status, code);
        if (c.verdict == DW_VERDICT_OK) {
            dw_sink_finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, p->status, "", "");
        } else if (c.verdict == DW_VERDICT_PERMANENT && r->post && r->post_lost &&
                   c.error_class == DW_ERRCLASS_DUPLICATE) {
            /* Our own earlier POST landed after all: find the row and update it by id. */
            r->post_lost = false;
            dw_sink_row_move(s, r, ROW_RESOLVING);
        } else if (c.verdict == DW_VERDICT_PERMANENT) {
            if (p->status != 404 || !dw_sink_refresh_ids(s, r))
                dw_sink_finish_row(s, r, DW_WRITE_REJECTED, c.error_class, p->status, code, msg);
        } else if (r->post) {
            r->post_lost = true; /* see reresolve_posts() */
            dw_sink_row_move(s, r, ROW_RESOLVING);
        } else {
            again[nagain++] = r;
            throttled |= c.throttled;
            renew |= c.verdict == DW_VERDICT_RENEW_AUTH;
            if (c.throttled) {
                int64_t ra = dw_retry_after_ms(p->retry_after, time(NULL));
                if (ra > pause)
                    pause = ra;
            }
            last = c;
            free(last_msg);
            last_msg = dw_asprintf("HTTP %d %s", p->status, msg);
            last_http = p->status;
        }
        free(code);
        free(msg);
    }
    if (nunanswered)
        DW_WARN("$batch answered %zu of %zu requests; sending the rest again", br.nparts, w->nrows);
    if (nagain) {
        /* The rows that failed transiently are retried together as a new batch that keeps
         * the attempt count. */
        struct req *nq = &dw_sink_make_batch(s, again, nagain)->req;
        nq->attempts = q->attempts;
        nq->token_gen = q->token_gen;
        if (renew && nq->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        if (throttled) {
            last.throttled = true;
            nq->retry_after = pause >= 0 ? dw_asprintf("%" PRId64, (pause + 999) / 1000) : NULL;
        }
        last.verdict = DW_VERDICT_RETRY;
        dw_sink_retry(s, nq, &last, last_http, "", last_msg ? last_msg : "");
    }
    free(last_msg);
    free(again);
    dw_batch_response_cleanup(&br);
    dw_sink_req_free(q);
}

/* A bulk action answers 204, or 200 with a JSON body; anything else was garbled. */
static bool bulk_answer_ok(const struct req *q)
{
    if (q->resp.len == 0)
        return true;
    json_t *doc = json_loadb(q->resp.data, q->resp.len, JSON_DECODE_ANY, NULL);
    bool ok = doc != NULL;
    json_decref(doc);
    return ok;
}

void dw_sink_complete_write(struct dw_sink *s, struct write_req *w, CURLcode cc, long http)
{
    struct req *q = &w->req;
    char *code = NULL, *msg = NULL;
    enum dw_write_op op = w->nrows ? w->rows[0]->op : DW_WRITE_UPSERT;
    dw_sink_transfer_error(q, cc, http, &code, &msg);
    struct dw_classification c = dw_classify(op, cc, (int)http, code);
    if (c.verdict == DW_VERDICT_OK && q->kind == REQ_BATCH) {
        complete_batch(s, w);
    } else if (c.verdict == DW_VERDICT_OK && !bulk_answer_ok(q)) {
        /* Upserts are idempotent: an answer that cannot be read is safest sent again. */
        struct dw_classification bad = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_WARN("bulk request to \"%s\" answered HTTP %ld with a body that is not JSON", q->url,
                http);
        dw_sink_retry(s, q, &bad, (int)http, "", "malformed response");
    } else if (c.verdict == DW_VERDICT_OK) {
        for (size_t i = 0; i < w->nrows; i++)
            dw_sink_finish_row(s, w->rows[i], DW_WRITE_APPLIED, DW_ERRCLASS_NONE, (int)http, "",
                               "");
        dw_sink_req_free(q);
    } else if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        DW_INFO("Dataverse answered 401: renewing the access token and retrying");
        dw_sink_req_reset_transfer(q);
        dw_sink_enqueue(s, q);
    } else if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %ld %s", http, msg);
        if (c.config_error)
            DW_ERROR("cannot reach Dataverse at \"%s\": %s", q->url, msg);
        if (q->kind == REQ_BATCH)
            w = reresolve_posts(s, w);
        if (w)
            dw_sink_retry(s, &w->req, &c, (int)http, code, m);
        free(m);
    } else if (q->kind == REQ_BULK && http == 404 && !as_bulk(q)->after_siblings) {
        /* A table whose rows refer to each other: the parent may be in another request of
         * the same level, applied after this one. Sent once more when those are answered
         * (at once if they are), before isolating its rows one by one. */
        DW_DEBUG("UpsertMultiple of %zu rows to \"%s\" met a missing parent: sending it again "
                 "after the other requests to its table",
                 w->nrows, w->rows[0]->entity_set);
        as_bulk(q)->after_siblings = true;
        dw_sink_req_reset_transfer(q);
        dw_sink_enqueue(s, q);
    } else if (q->kind == REQ_BULK) {
        DW_WARN("UpsertMultiple of %zu rows to \"%s\" failed (HTTP %ld %s %s): sending them "
                "as $batch to isolate the bad rows",
                w->nrows, w->rows[0]->entity_set, http, code, msg);
        isolate(s, w, false);
    } else if (w->nrows > 1) {
        DW_WARN("$batch of %zu rows refused as a whole (HTTP %ld %s %s): sending each row "
                "alone",
                w->nrows, http, code, msg);
        isolate(s, w, true);
    } else {
        for (size_t i = 0; i < w->nrows; i++)
            if (http != 404 || !dw_sink_refresh_ids(s, w->rows[i]))
                dw_sink_finish_row(s, w->rows[i], DW_WRITE_REJECTED, c.error_class, (int)http, code,
                                   msg);
        dw_sink_req_free(q);
    }
    free(code);
    free(msg);
}

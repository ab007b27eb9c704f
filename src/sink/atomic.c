/*
 * Atomic groups (dw_sink_submit_atomic()): rows resolved like any other, then sent as one
 * $batch changeset in the order given, a parent created in the same changeset named by its
 * Content-ID; all applied, or all rolled back with the failed row named.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/dvauth.h"
#include "dwasync/dvbatch.h"
#include "dwasync/dvkey.h"
#include "dwasync/log.h"

/*
 * dw_sink_ref_guid() for a row of an atomic group: a parent that does not exist yet but is written
 * earlier in the group is named by its Content-ID ("$n"), which Dataverse resolves inside
 * the changeset. A parent that exists keeps its GUID, so an existing child stays addressed
 * by its key.
 */
enum res dw_sink_atomic_ref_guid(struct dw_sink *s, struct row *r, const json_t *ref,
                                 const char *set, const json_t *rkey, char **guid)
{
    struct guid_entry *g = dw_sink_guid_get(s, set, rkey);
    if (g->state == ST_NOTFOUND && r->op != DW_WRITE_DELETE) {
        char *id = dw_dvkey_target_id(set, json_object_get(ref, "key"));
        size_t k = 0;
        for (size_t i = 0; i < r->atomic_index && k == 0; i++) {
            const struct row *p = r->atomic->rows[i];
            if (p && p->op != DW_WRITE_DELETE && strcmp(r->atomic->ids[i], id) == 0)
                k = i + 1;
        }
        free(id);
        if (k) {
            *guid = dw_asprintf("$%zu", k);
            return RES_READY;
        }
    }
    return dw_sink_ref_guid(s, r, set, rkey, false, guid);
}

/* Whether a resolved key names its parent by Content-ID (see dw_sink_atomic_ref_guid()). */
bool dw_sink_names_content_id(const json_t *rkey)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)rkey, name, v)
    {
        if (dw_dvkey_is_lookup_part(name) && json_is_string(v) && json_string_value(v)[0] == '$')
            return true;
    }
    return false;
}

void dw_sink_atomic_free(struct dw_sink *s, struct atomic *a)
{
    DL_DELETE(s->atomics, a);
    for (size_t i = 0; i < a->n; i++) {
        if (a->rows[i])
            a->rows[i]->atomic = NULL;
        free(a->ids[i]);
    }
    free(a->ids);
    free(a->rows);
    free(a);
}

/*
 * Finishes every row of a group that is not finished yet and frees the group. With a
 * culprit, it gets the failure f (unless it failed already, in resolution) and the others
 * are rolled back naming it; without one, every row gets f as it is.
 */
void dw_sink_atomic_fail(struct dw_sink *s, struct atomic *a, struct row *culprit,
                         const struct failure *f)
{
    char *name = NULL, *msg = NULL;
    if (culprit) {
        const struct failure *why = culprit->where == ROW_DONE ? &culprit->res : f;
        name = dw_dvkey_target_id(culprit->entity_set, culprit->key);
        msg = dw_asprintf("rolled back: %s in the same atomic group failed: %s", name,
                          why->message ? why->message : "");
        char status[16];
        snprintf(status, sizeof status, "%d", why->http);
        DW_LOGF(DW_LOG_WARN,
                DW_FIELDS({"target", name}, {"status", status}, {"code", why->code},
                          {"class", dw_error_class_name(why->cls)}),
                "atomic group of %zu writes not applied: one failed: %s", a->n, why->message);
    }
    for (size_t i = 0; i < a->n; i++) {
        struct row *r = a->rows[i];
        if (r == NULL || r->where == ROW_DONE)
            continue;
        if (culprit && r != culprit)
            dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, f->http, "", msg);
        else
            dw_sink_finish_row(s, r, f->status, f->cls, f->http, f->code, f->message);
    }
    free(name);
    free(msg);
    dw_sink_atomic_free(s, a);
}

static void changeset_again(struct dw_sink *s, struct changeset_req *cs, enum row_where to);

/* Sends a group whose rows are all ready as one changeset, Content-IDs by place in it. */
static void queue_changeset(struct dw_sink *s, struct atomic *a)
{
    struct row **rows = dw_malloc(a->n * sizeof *rows);
    size_t *ids = dw_malloc(a->n * sizeof *ids), n = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->rows[i]) {
            rows[n] = a->rows[i];
            ids[n++] = i + 1;
        }
    }
    if (n == 0) {
        dw_sink_atomic_free(s, a);
    } else {
        struct req *q = &dw_sink_build_batch(s, rows, n, ids)->req;
        as_changeset(q)->atomic = a;
        q->attempts = a->attempts;
        a->sent = true;
        dw_sink_enqueue(s, q);
    }
    free(rows);
    free(ids);
}

/*
 * Moves atomic groups on: a changeset due again after a lost answer gives its rows back to
 * resolution; a group with a row that failed resolution fails as a whole; a group whose
 * rows are all ready is sent.
 */
void dw_sink_plan_atomic(struct dw_sink *s)
{
    int64_t now = dw_clock_ms();
    struct req *q, *qt;
    DL_FOREACH_SAFE(s->queue, q, qt)
    {
        if (q->kind != REQ_CHANGESET || !as_changeset(q)->atomic->reresolve || q->not_before > now)
            continue;
        DL_DELETE(s->queue, q);
        as_changeset(q)->atomic->reresolve = false;
        changeset_again(s, as_changeset(q), ROW_RESOLVING);
    }
    struct atomic *a, *at;
    DL_FOREACH_SAFE(s->atomics, a, at)
    {
        if (a->sent)
            continue;
        struct row *failed = NULL;
        bool ready = true;
        for (size_t i = 0; i < a->n; i++) {
            struct row *r = a->rows[i];
            if (r == NULL)
                continue;
            if (r->where == ROW_DONE && r->res.status == DW_WRITE_APPLIED) {
                /* Done without a request (a delete of a row that is not there). */
                a->rows[i] = NULL;
                r->atomic = NULL;
            } else if (r->where == ROW_DONE) {
                failed = failed ? failed : r;
            } else if (r->where != ROW_READY) {
                ready = false;
            }
        }
        if (failed)
            dw_sink_atomic_fail(s, a, failed, &failed->res);
        else if (ready)
            queue_changeset(s, a);
    }
}

/* The row of a changeset that a failed part's Content-ID names, or NULL. */
static struct row *changeset_culprit(const struct changeset_req *cs, const char *content_id)
{
    char *end = NULL;
    unsigned long id = content_id ? strtoul(content_id, &end, 10) : 0;
    if (id == 0 || end == content_id || *end != '\0' || id > cs->atomic->n)
        return NULL;
    for (size_t i = 0; i < cs->w.nrows; i++)
        if (cs->w.rows[i]->atomic_index == id - 1)
            return cs->w.rows[i];
    return NULL;
}

/* Puts a sent group's rows back to be sent again as a new changeset. */
static void changeset_again(struct dw_sink *s, struct changeset_req *cs, enum row_where to)
{
    cs->atomic->sent = false;
    cs->atomic->attempts = cs->w.req.attempts;
    for (size_t i = 0; i < cs->w.nrows; i++)
        dw_sink_row_move(s, cs->w.rows[i], to);
    dw_sink_req_free(&cs->w.req);
}

/*
 * The answer to a changeset: every part 2xx applies every row; otherwise Dataverse rolled
 * all back and answered with the failed part alone, which names its row by Content-ID.
 */
void dw_sink_complete_changeset(struct dw_sink *s, struct changeset_req *cs, CURLcode cc, long http)
{
    struct req *q = &cs->w.req;
    struct dw_batch_response br = {NULL, 0};
    const struct dw_batch_part *bad = NULL;
    struct row *culprit = NULL;
    char *code = NULL, *msg = NULL;
    int status = (int)http;
    bool parsed =
        cc == CURLE_OK && q->resp_type && strncasecmp(q->resp_type, "multipart/", 10) == 0 &&
        dw_batch_parse(q->resp_type, q->resp.data ? q->resp.data : "", q->resp.len, &br) == DW_OK;
    for (size_t i = 0; parsed && i < br.nparts && bad == NULL; i++)
        if (br.parts[i].status < 200 || br.parts[i].status > 299)
            bad = &br.parts[i];
    if (parsed && bad == NULL && status >= 200 && status <= 299 && br.nparts == cs->w.nrows) {
        for (size_t i = 0; i < cs->w.nrows; i++)
            dw_sink_finish_row(s, cs->w.rows[i], DW_WRITE_APPLIED, DW_ERRCLASS_NONE,
                               br.parts[i].status, "", "");
        dw_sink_atomic_free(s, cs->atomic);
        dw_sink_req_free(q);
        goto out;
    }
    if (bad) { /* (only from a parsed answer, so the transfer itself succeeded) */
        status = bad->status;
        culprit = changeset_culprit(cs, bad->content_id);
        dw_sink_parse_error(bad->body, &code, &msg);
        if (bad->retry_after && q->retry_after == NULL)
            q->retry_after = dw_strdup(bad->retry_after);
    } else {
        dw_sink_transfer_error(q, cc, http, &code, &msg);
    }
    struct dw_classification c =
        dw_classify(culprit ? culprit->op : DW_WRITE_UPSERT, cc, status, code);
    if (c.verdict == DW_VERDICT_OK && culprit) {
        /* A delete of a row that is not there is done, but it failed the changeset: send
         * the others again without it. */
        struct atomic *a = cs->atomic;
        a->rows[culprit->atomic_index] = NULL;
        culprit->atomic = NULL;
        dw_sink_finish_row(s, culprit, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, status, "", "");
        size_t keep = 0;
        for (size_t i = 0; i < cs->w.nrows; i++)
            if (cs->w.rows[i] != culprit)
                cs->w.rows[keep++] = cs->w.rows[i];
        cs->w.nrows = keep;
        changeset_again(s, cs, ROW_READY);
    } else if (c.verdict == DW_VERDICT_OK) {
        /* A 2xx whose parts do not add up: nothing can be assumed, so it is sent again. */
        struct dw_classification bad_answer = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false,
                                               false};
        DW_WARN("changeset of %zu rows answered HTTP %ld with %zu parts: sending it again",
                cs->w.nrows, http, br.nparts);
        dw_sink_retry(s, q, &bad_answer, status, "", "malformed changeset response");
    } else if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        dw_sink_req_reset_transfer(q);
        dw_sink_enqueue(s, q);
    } else if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        /* A lost answer may hide a commit: rows created by POST are looked up again
         * before the changeset goes again (they are then updated by key). */
        for (size_t i = 0; i < cs->w.nrows; i++)
            cs->atomic->reresolve |= cs->w.rows[i]->post;
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %d %s", status, msg);
        dw_sink_retry(s, q, &c, status, code, m);
        free(m);
    } else if (status == 404 && culprit && !cs->atomic->refreshed &&
               dw_sink_forget_cache(s, culprit)) {
        /* A parent's cached id may be stale (deleted and created again): once more. */
        cs->atomic->refreshed = true;
        changeset_again(s, cs, ROW_RESOLVING);
    } else {
        struct failure f = {DW_WRITE_REJECTED, c.error_class, status, code, msg};
        char *unnamed = NULL;
        if (culprit == NULL) {
            unnamed = dw_asprintf("rolled back: a write in the same atomic group failed "
                                  "(Dataverse did not say which): %s",
                                  msg);
            f.message = unnamed;
            DW_WARN("atomic group of %zu writes not applied: HTTP %d %s %s", cs->w.nrows, status,
                    code, msg);
        }
        struct atomic *a = cs->atomic;
        dw_sink_req_free(q);
        dw_sink_atomic_fail(s, a, culprit, &f);
        free(unnamed);
    }
out:
    free(code);
    free(msg);
    dw_batch_response_cleanup(&br);
}

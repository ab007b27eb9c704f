/*
 * The sink's public API (sink.h): creating and freeing it, taking writes (checked before
 * anything is queued), delivering each row's result to the done callback, and the blocking
 * calls (WhoAmI, GET) used by check and the CLI. The rooms behind it are named in
 * internal.h.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/dvauth.h"
#include "dwasync/dvkey.h"
#include "dwasync/log.h"

static char *url_path(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    return dw_strdup(p ? p : "");
}

dw_rc dw_sink_new(const struct dw_config *cfg, dw_write_done_fn done, void *user,
                  struct dw_sink **out)
{
    dw_rc rc = DW_OK;
    struct dw_sink *s = dw_calloc(1, sizeof *s);
    s->cfg = cfg;
    s->done_fn = done;
    s->done_user = user;
    dw_buf_init(&s->scratch, 0);
    s->wake_fd = -1;
    const char *url = cfg->dataverse.url;
    char why[512];
    if ((rc = dw_config_check_transport(cfg, why, sizeof why)) != DW_OK) {
        DW_ERROR("%s", why);
        goto out;
    }
    if (strncasecmp(url, "https://", 8) != 0 ||
        strncasecmp(cfg->dataverse.authority, "https://", 8) != 0)
        DW_WARN("allow_insecure_http: talking to Dataverse without TLS (a local emulator only)");
    char *base = dw_strdup(url);
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        base[--n] = '\0';
    s->api = dw_asprintf("%s/api/data/%s", base, cfg->dataverse.api_version);
    free(base);
    s->api_path = url_path(s->api);
    if ((rc = dw_auth_new(cfg, &s->auth)) != DW_OK)
        goto out;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->multi = curl_multi_init();
    if (s->multi == NULL)
        dw_oom(0);
    curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)cfg->dataverse.max_concurrency);
    dw_sink_transport_init(s);
    dw_aimd_init(&s->aimd, (int)cfg->dataverse.max_concurrency);
out:
    if (rc != DW_OK) {
        dw_sink_free(s);
        return rc;
    }
    *out = s;
    return DW_OK;
}

static void free_rows(struct row **list)
{
    struct row *r, *tmp;
    DL_FOREACH_SAFE(*list, r, tmp)
    {
        DL_DELETE(*list, r);
        dw_sink_row_free(r);
    }
}

/* Frees a request with the rows it carries (a blocking GET belongs to its caller). */
static void free_req_and_rows(struct req *q)
{
    if (q->kind == REQ_GET)
        return;
    for (size_t i = 0; is_write_req(q) && i < as_write(q)->nrows; i++)
        dw_sink_row_free(as_write(q)->rows[i]);
    dw_sink_req_free(q);
}

void dw_sink_free(struct dw_sink *s)
{
    if (s == NULL)
        return;
    /* Groups first: freeing one touches its rows, which go next. */
    while (s->atomics)
        dw_sink_atomic_free(s, s->atomics);
    struct req *q, *qt;
    DL_FOREACH_SAFE(s->transfers, q, qt)
    {
        DL_DELETE(s->transfers, q);
        curl_multi_remove_handle(s->multi, q->easy);
        free_req_and_rows(q);
    }
    DL_FOREACH_SAFE(s->queue, q, qt)
    {
        DL_DELETE(s->queue, q);
        free_req_and_rows(q);
    }
    free_rows(&s->resolving);
    free_rows(&s->ready);
    free_rows(&s->done);
    struct guid_entry *g, *gt;
    HASH_ITER(hh, s->guids, g, gt)
    {
        HASH_DEL(s->guids, g);
        dw_sink_guid_entry_free(g);
    }
    free(s->to_lookup.v);
    free(s->negatives.v);
    struct set_entry *e, *et;
    HASH_ITER(hh, s->sets, e, et)
    {
        dw_sink_set_entry_drop(s, e);
    }
    struct bulk_entry *b, *bt;
    HASH_ITER(hh, s->bulks, b, bt)
    {
        HASH_DEL(s->bulks, b);
        free(b->name);
        free(b);
    }
    dw_sink_transport_cleanup(s);
    dw_auth_free(s->auth);
    free(s->api);
    free(s->api_path);
    dw_buf_cleanup(&s->scratch);
    free(s);
}

/* Whether refs (NULL: none) holds only lookups bound by reference objects (write.h). */
static bool refs_valid(const struct dw_refs *refs)
{
    for (size_t i = 0; i < dw_refs_count(refs); i++)
        if (!dw_write_is_bind_ref(refs->items[i].name, refs->items[i].ref))
            return false;
    return true;
}

/* Whether the entity sets and key attributes refs names are identifiers. */
static bool refs_names_ok(const struct dw_refs *refs)
{
    for (size_t i = 0; i < dw_refs_count(refs); i++)
        if (!dw_dvkey_names_ok(refs->items[i].ref))
            return false;
    return true;
}

static bool write_valid(const struct dw_write *w, const char **why)
{
    if ((unsigned)w->op > DW_WRITE_DELETE)
        *why = "unknown operation";
    else if (!dw_dvkey_identifier_ok(w->entity_set))
        *why = "entity set missing or not an identifier";
    else if (w->logical_name && !dw_dvkey_identifier_ok(w->logical_name))
        *why = "logical name not an identifier";
    else if (!json_is_object(w->key) || json_object_size(w->key) == 0)
        *why = "key missing or not a non-empty object";
    else if (!dw_dvkey_names_ok(w->key) || !refs_names_ok(w->refs))
        *why = "a key attribute or a referenced entity set is not an identifier";
    else if (w->op != DW_WRITE_DELETE && w->body == NULL)
        *why = "body missing or not an object";
    else if (w->op != DW_WRITE_DELETE && !refs_valid(w->refs))
        *why = "a reference is not a lookup bound to a reference object";
    else if (!dw_write_options_ok(w->options))
        *why = "write options not of the documented shape (write.h)";
    else
        return true;
    return false;
}

dw_rc dw_sink_submit(struct dw_sink *s, struct dw_write *writes, void *const *write_users, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        if (!write_valid(&writes[i], &why)) {
            DW_ERROR("write %zu of %zu refused: %s", i + 1, n, why);
            return DW_ERR_INVALID;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct dw_write *w = &writes[i];
        struct row *r = dw_calloc(1, sizeof *r);
        r->op = w->op;
        r->entity_set = w->entity_set;
        r->logical_name = w->logical_name;
        r->key = w->key;
        r->options = w->options;
        if (w->op == DW_WRITE_DELETE) {
            dw_text_drop(w->body);
            dw_refs_drop(w->refs);
        } else {
            r->body = w->body;
            r->refs = w->refs;
        }
        r->user = write_users ? write_users[i] : NULL;
        r->where = ROW_RESOLVING;
        DL_APPEND(s->resolving, r);
        memset(w, 0, sizeof *w);
        s->pending++;
    }
    return DW_OK;
}

dw_rc dw_sink_submit_atomic(struct dw_sink *s, struct dw_write *writes, void *const *write_users,
                            size_t n)
{
    if (n == 0 || n > DW_SINK_ATOMIC_MAX) {
        DW_ERROR("an atomic group holds 1 to %d writes, not %zu", DW_SINK_ATOMIC_MAX, n);
        return DW_ERR_INVALID;
    }
    dw_rc rc = dw_sink_submit(s, writes, write_users, n);
    if (rc != DW_OK)
        return rc;
    /* dw_sink_submit() appended the n rows to the resolving list: they are its tail. */
    struct atomic *a = dw_calloc(1, sizeof *a);
    a->rows = dw_calloc(n, sizeof *a->rows);
    a->ids = dw_calloc(n, sizeof *a->ids);
    a->n = n;
    struct row *r = s->resolving->prev;
    for (size_t i = n; i-- > 0; r = r->prev) {
        a->rows[i] = r;
        a->ids[i] = dw_dvkey_target_id(r->entity_set, r->key);
        r->atomic = a;
        r->atomic_index = i;
    }
    DL_APPEND(s->atomics, a);
    return DW_OK;
}

size_t dw_sink_pending(const struct dw_sink *s)
{
    return s->pending;
}

dw_rc dw_sink_run(struct dw_sink *s, int timeout_ms)
{
    return dw_sink_drive(s, timeout_ms, true);
}

void dw_sink_wakeup(struct dw_sink *s)
{
    dw_sink_transport_wakeup(s);
}

void dw_sink_get_stats(const struct dw_sink *s, struct dw_sink_stats *out)
{
    *out = s->stats;
}

dw_rc dw_sink_blocking_get(struct dw_sink *s, char *url, json_t **out)
{
    struct req *q = dw_sink_req_new(REQ_GET, "GET", url);
    struct get_req *g = as_get(q);
    dw_rc rc = DW_OK;
    dw_sink_enqueue(s, q);
    while (!g->done) {
        if (s->token_config_error && !s->token_in_flight && q->easy == NULL &&
            dw_auth_token(s->auth, dw_clock_ms()) == NULL) {
            DW_ERROR("cannot obtain an access token from \"%s\" (see the error above)",
                     dw_auth_token_url(s->auth));
            DL_DELETE(s->queue, q);
            rc = DW_ERR_AUTH;
            goto out;
        }
        if ((rc = dw_sink_drive(s, 1000, false)) != DW_OK)
            goto out;
    }
    if ((rc = g->rc) != DW_OK)
        goto out;
    json_error_t jerr;
    json_t *doc = json_loads(dw_buf_str(&q->resp), 0, &jerr);
    if (doc == NULL) {
        DW_ERROR("GET \"%s\" answered with invalid JSON: %s", q->url, jerr.text);
        rc = DW_ERR_PROTOCOL;
        goto out;
    }
    *out = doc;
out:
    dw_sink_req_free(q);
    return rc;
}

dw_rc dw_sink_whoami(struct dw_sink *s, char **user_id)
{
    json_t *doc = NULL;
    dw_rc rc = dw_sink_blocking_get(s, dw_sink_api_url(s, "WhoAmI"), &doc);
    if (rc != DW_OK)
        return rc;
    const char *id = json_string_value(json_object_get(doc, "UserId"));
    if (id == NULL) {
        DW_ERROR("WhoAmI answered without a UserId");
        rc = DW_ERR_PROTOCOL;
    } else if (user_id) {
        *user_id = dw_strdup(id);
    }
    json_decref(doc);
    return rc;
}

void dw_sink_deliver(struct dw_sink *s)
{
    struct row *r;
    while ((r = s->done)) {
        DL_DELETE(s->done, r);
        /* The body sent, for a row that failed (an applied row needs none). */
        char *payload =
            r->sent && r->body && r->res.status != DW_WRITE_APPLIED ? dw_sink_body_text(r) : NULL;
        struct dw_write_result res = {
            .status = r->res.status,
            .error_class = r->res.cls,
            .http_status = r->res.http,
            .code = r->res.code ? r->res.code : "",
            .message = r->res.message ? r->res.message : "",
            .payload = payload,
            .missing_parent = r->missing,
        };
        s->pending--;
        s->done_fn(s->done_user, r->user, &res);
        free(payload);
        dw_sink_row_free(r);
    }
}

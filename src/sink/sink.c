/*
 * The sink engine: rows go from submitted to resolved (lookups and key fallbacks turned
 * into GUIDs), to grouped (UpsertMultiple per table, else $batch), to sent, to done.
 *
 * Everything runs inside dw_sink_run() on one thread: plan() moves rows and cache entries
 * forward and queues requests, start_requests() hands queued requests to curl multi within
 * the throttle's limits, complete() reads each answer through the classifier. Row results
 * wait in a done list until they are delivered to the callback.
 */
#include "dwasync/clock.h"
#include "dwasync/sink.h"

#include <inttypes.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uthash.h>
#include <utlist.h>

#include "dwasync/alloc.h"
#include "dwasync/dvauth.h"
#include "dwasync/dvbatch.h"
#include "dwasync/dvclassify.h"
#include "dwasync/dvkey.h"
#include "dwasync/dvthrottle.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/redact.h"

/* Largest response body kept: a full $batch answer of 1000 parts fits easily. */
#define RESPONSE_MAX ((size_t)256 << 20)
/* First retry delay; doubles per attempt up to [dataverse] retry_max_backoff_ms. */
#define BACKOFF_BASE_MS 250
/* Pause after a 429 that carries no usable Retry-After. */
#define DEFAULT_RETRY_AFTER_MS 5000
/* Attempts of a blocking call (whoami, get) when retry_limit is 0 (forever). */
#define BLOCKING_ATTEMPTS 5
/* Nesting of reference objects inside reference keys (company inside group inside ...). */
#define MAX_REF_DEPTH 4
/* GUID lookups asked in one $filter query ("(key1) or (key2) or ..."), and the longest
 * filter such a query may carry (Dataverse accepts URLs up to 32 KB; this stays well below). */
#define LOOKUP_BATCH   100
#define LOOKUP_URL_MAX 16000
/* Cached GUIDs kept; the oldest are forgotten beyond this (asked again when needed, a hundred
 * to a query). An entry is a few hundred bytes: its id, set name, GUID and hash handle. */
#define GUID_CACHE_MAX 10000

enum state { ST_PENDING, ST_INFLIGHT, ST_OK, ST_NOTFOUND, ST_FAILED };

/* The outcome of a failed lookup, copied to the rows that needed it. */
struct failure {
    enum dw_write_status status;
    enum dw_error_class cls;
    int http;
    const char *code;    /* owned (heap) once stored by failure_set() */
    const char *message; /* likewise */
};

/* GUID of one row found by (entity set, resolved key); the "GUID cache". */
struct guid_entry {
    char *id; /* "<set>(<canonical key>)" */
    char *set;
    json_t *rkey; /* the key, while it is being looked up */
    enum state state;
    uint64_t neg_pass; /* plan pass in which it became NOTFOUND/FAILED */
    bool alone;        /* a shared lookup could not tell its answer apart: ask alone */
    char *guid;
    struct failure fail;
    UT_hash_handle hh;
};

/* A growable array of cache entries (borrowed pointers). */
struct entry_list {
    struct guid_entry **v;
    size_t n, cap;
};

/* Per entity set: the primary id attribute (needed to read a GUID from a $filter answer). */
struct set_entry {
    char *set;
    enum state state;
    char *pk;
    struct failure fail;
    UT_hash_handle hh;
};

/* Per table: whether UpsertMultiple is available (asked once via sdkmessagefilters). */
struct bulk_entry {
    char *name;
    enum state state;
    bool supported;
    UT_hash_handle hh;
};

enum row_where { ROW_RESOLVING, ROW_READY, ROW_SENT, ROW_DONE };

struct atomic;

/* The parents a row refers to, for naming a missing one: when only one can be, it is named.
 * Only the first is kept, and its text made only on failure: rows rarely fail. */
struct parents {
    size_t n;
    const char *set; /* borrowed from the row's key or body */
    json_t *rkey;    /* the first one's resolved key */
};

struct row {
    struct row *prev, *next;
    enum row_where where;
    enum dw_write_op op;
    char *entity_set, *logical_name;
    json_t *key, *body;
    void *user;
    json_t *rkey;           /* key with references replaced by GUIDs */
    json_t *rbinds;         /* each bind reference of body written out ("/<set>(<key>)"), in
                             * body order; NULL when it has none */
    json_t *rbody;          /* the whole body to send when it is not body + rbinds (a POST) */
    json_t *used;           /* ids of GUID cache entries this row relied on, or NULL */
    struct parents binds;   /* the parents bound by reference in the body */
    struct parents keyrefs; /* the parents named in the key */
    char *guid;             /* set when the row is addressed by id (unaddressable key) */
    bool post;              /* unaddressable key, no such row: create with POST */
    bool no_bulk;           /* isolating a failed bulk request: go through $batch */
    bool single;            /* isolating a failed batch: go alone */
    bool refreshed;         /* already resolved again after a 404 */
    bool post_lost;         /* a POST of this row may have landed although its answer was lost */
    bool sent;              /* handed to a request: a failure reports the body sent */
    struct failure res;
    char *missing;
    char *wait_id;         /* id of the cache entry resolution last waited for, or NULL */
    struct atomic *atomic; /* the atomic group it belongs to, or NULL */
    size_t atomic_index;   /* its place in the group */
};

enum req_kind {
    REQ_TOKEN,
    REQ_BULK,
    REQ_BATCH,
    REQ_LOOKUP,
    REQ_SETINFO,
    REQ_BULKINFO,
    REQ_GET,
    REQ_CHANGESET, /* one atomic group as one changeset */
};

struct req {
    struct req *prev, *next;
    enum req_kind kind;
    struct row **rows;
    size_t nrows;
    const char *method;
    char *url;
    char *body;
    size_t body_len;
    char *content_type;
    bool continue_on_error;
    int attempts;
    bool auth_retried;
    bool after_siblings; /* REQ_BULK sent again after a 404: waits for the others to its set */
    int64_t not_before;
    unsigned token_gen;
    struct guid_entry **entries; /* REQ_LOOKUP: the cache entries it answers */
    size_t nentries;
    struct set_entry *set_entry;
    struct bulk_entry *bulk_entry;
    struct atomic *atomic; /* REQ_CHANGESET */
    /* transfer */
    CURL *easy;
    struct curl_slist *headers;
    struct dw_buf resp;
    char *resp_type;
    char *retry_after;
    char *location; /* Location of a 3xx answer */
    bool too_big;   /* the body passed [dataverse] max_response_bytes */
    int dop_hint;
    char errbuf[CURL_ERROR_SIZE];
    json_t *pages; /* a paged collection: the rows of the pages before this one */
    /* blocking GET result */
    bool done;
    dw_rc rc;
    long http;
};

struct dw_sink {
    const struct dw_config *cfg;
    dw_write_done_fn done_fn;
    void *done_user;
    CURLM *multi;
    struct dw_auth *auth;
    char *api;      /* <url>/api/data/<version> */
    char *api_path; /* its path, for the request lines of $batch parts */
    struct row *resolving, *ready, *done;
    size_t pending;
    struct req *queue;
    struct req *transfers; /* requests handed to curl */
    int in_flight;         /* Dataverse requests among them */
    bool token_in_flight;
    int token_failures;
    int64_t token_not_before;
    bool token_config_error;
    int64_t paused_until;
    struct dw_aimd aimd;
    struct guid_entry *guids;
    size_t guids_ok;             /* entries in state ST_OK */
    struct entry_list to_lookup; /* entries in ST_PENDING: need a lookup */
    struct entry_list negatives; /* entries NOTFOUND or FAILED, dropped a pass later */
    struct set_entry *sets;
    struct bulk_entry *bulks;
    struct atomic *atomics;
    uint64_t pass;
    struct dw_buf scratch; /* reused for the cache id of each reference resolved */
    struct dw_sink_stats stats;
};

static uint32_t random32(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)dw_clock_ms();
    return r;
}

static void failure_set(struct failure *f, enum dw_write_status status, enum dw_error_class cls,
                        int http, const char *code, const char *message)
{
    free((char *)f->code);
    free((char *)f->message);
    f->status = status;
    f->cls = cls;
    f->http = http;
    f->code = dw_strdup(code ? code : "");
    f->message = dw_redact_str(message ? message : "");
}

static void failure_cleanup(struct failure *f)
{
    free((char *)f->code);
    free((char *)f->message);
    f->code = f->message = NULL;
}

/* --- rows ------------------------------------------------------------------------------ */

static struct row **list_of(struct dw_sink *s, enum row_where w)
{
    switch (w) {
    case ROW_RESOLVING:
        return &s->resolving;
    case ROW_READY:
        return &s->ready;
    case ROW_DONE:
        return &s->done;
    case ROW_SENT:
        break;
    }
    return NULL;
}

static void row_move(struct dw_sink *s, struct row *r, enum row_where to)
{
    struct row **from = list_of(s, r->where);
    if (from)
        DL_DELETE(*from, r);
    r->where = to;
    struct row **dest = list_of(s, to);
    if (dest)
        DL_APPEND(*dest, r);
}

static char *ref_display(const char *set, const json_t *rkey);

static void parents_clear(struct parents *p)
{
    json_decref(p->rkey);
    memset(p, 0, sizeof *p);
}

static void parents_note(struct parents *p, const char *set, const json_t *rkey)
{
    if (p->n++ == 0) {
        p->set = set;
        p->rkey = json_incref((json_t *)rkey);
    }
}

static void row_free(struct row *r)
{
    free(r->entity_set);
    free(r->logical_name);
    json_decref(r->key);
    json_decref(r->body);
    json_decref(r->rkey);
    json_decref(r->rbinds);
    json_decref(r->rbody);
    json_decref(r->used);
    parents_clear(&r->binds);
    parents_clear(&r->keyrefs);
    free(r->guid);
    free(r->missing);
    free(r->wait_id);
    failure_cleanup(&r->res);
    free(r);
}

static void finish_row(struct dw_sink *s, struct row *r, enum dw_write_status status,
                       enum dw_error_class cls, int http, const char *code, const char *message)
{
    failure_set(&r->res, status, cls, http, code, message);
    /* Dataverse does not say which parent is missing; when only one can be, name it (the
     * key's parents were just looked up, so a bound one is the suspect). */
    if (cls == DW_ERRCLASS_MISSING_PARENT && r->missing == NULL) {
        const struct parents *c = r->binds.n ? &r->binds : &r->keyrefs;
        if (c->n == 1)
            r->missing = ref_display(c->set, c->rkey);
    }
    if (status == DW_WRITE_APPLIED)
        s->stats.rows_applied++;
    else
        s->stats.rows_rejected++;
    row_move(s, r, ROW_DONE);
}

static void guid_entry_free(struct guid_entry *g)
{
    free(g->id);
    free(g->set);
    json_decref(g->rkey);
    free(g->guid);
    failure_cleanup(&g->fail);
    free(g);
}

/* Drops a found (ST_OK) entry from the cache. */
static void entry_forget(struct dw_sink *s, struct guid_entry *g)
{
    HASH_DEL(s->guids, g);
    s->guids_ok--;
    guid_entry_free(g);
}

/* Forgets the cached ids a row relied on (after a 404); returns how many there were. An id
 * the cache no longer holds (forgotten as the oldest) counts too: resolving the row again
 * asks for it afresh. */
static size_t forget_cache(struct dw_sink *s, struct row *r)
{
    size_t i, n = 0;
    json_t *id;
    json_array_foreach(r->used, i, id)
    {
        struct guid_entry *g = NULL;
        HASH_FIND_STR(s->guids, json_string_value(id), g);
        if (g == NULL) {
            n++;
        } else if (g->state == ST_OK) {
            DW_DEBUG("forgetting the cached id of \"%s\"", g->id);
            entry_forget(s, g);
            n++;
        }
    }
    return n;
}

/* Keeps the cache bounded: forgets the oldest found ids, a quarter of the limit at a time. */
static void trim_cache(struct dw_sink *s)
{
    if (s->guids_ok <= GUID_CACHE_MAX)
        return;
    struct guid_entry *g, *tmp;
    HASH_ITER(hh, s->guids, g, tmp)
    {
        if (s->guids_ok <= GUID_CACHE_MAX / 4 * 3)
            break;
        if (g->state == ST_OK)
            entry_forget(s, g);
    }
}

/*
 * After a 404: when the row relied on cached ids, forgets them and resolves the row once
 * more (a parent deleted and created again has a new id). True when the row goes round
 * again; false when the 404 stands.
 */
static bool refresh_ids(struct dw_sink *s, struct row *r)
{
    if (r->refreshed || forget_cache(s, r) == 0)
        return false;
    r->refreshed = true;
    row_move(s, r, ROW_RESOLVING);
    return true;
}

/* --- GUID resolution --------------------------------------------------------------------- */

enum res { RES_READY, RES_WAIT, RES_FAIL };

static enum res atomic_ref_guid(struct dw_sink *s, struct row *r, const json_t *ref,
                                const char *set, const json_t *rkey, char **guid);
static bool names_content_id(const json_t *rkey);

static char *ref_display(const char *set, const json_t *rkey)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_puts(&b, set);
    (void)dw_buf_putc(&b, '(');
    (void)dw_dvkey_segment(&b, rkey, false);
    (void)dw_buf_putc(&b, ')');
    return dw_buf_steal(&b);
}

static void entry_list_push(struct entry_list *l, struct guid_entry *g)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = dw_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = g;
}

static void entry_found(struct dw_sink *s, struct guid_entry *g, const char *guid)
{
    g->state = ST_OK;
    g->guid = dw_strdup(guid);
    s->guids_ok++;
    /* Only a lookup reads the key: a found entry keeps its id text and GUID alone. */
    json_decref(g->rkey);
    g->rkey = NULL;
}

/* NOTFOUND or FAILED: kept for the rest of this plan pass (every row waiting for it sees
 * the outcome), then dropped so that the next rows ask again. */
static void entry_negative(struct dw_sink *s, struct guid_entry *g, enum state state)
{
    g->state = state;
    g->neg_pass = s->pass;
    entry_list_push(&s->negatives, g);
}

static struct guid_entry *guid_get(struct dw_sink *s, const char *set, const json_t *rkey)
{
    struct dw_buf *id = &s->scratch;
    dw_buf_reset(id);
    if (dw_dvkey_append_target_id(id, set, rkey) != DW_OK)
        dw_oom(0);
    struct guid_entry *g = NULL;
    HASH_FIND(hh, s->guids, id->data, id->len, g);
    if (g)
        return g;
    g = dw_calloc(1, sizeof *g);
    g->id = dw_strdup(id->data);
    g->set = dw_strdup(set);
    g->rkey = json_deep_copy(rkey);
    g->state = ST_PENDING;
    HASH_ADD_KEYPTR(hh, s->guids, g->id, strlen(g->id), g);
    entry_list_push(&s->to_lookup, g);
    return g;
}

static enum res resolve_key(struct dw_sink *s, struct row *r, const json_t *key, int depth,
                            json_t **out);

/*
 * The GUID of the row a reference object names. RES_FAIL has set the row's result. When
 * not_found_ok, a missing row gives RES_READY with *guid NULL (the row's own key).
 */
static enum res ref_guid(struct dw_sink *s, struct row *r, const char *set, const json_t *rkey,
                         bool not_found_ok, char **guid)
{
    struct guid_entry *g = guid_get(s, set, rkey);
    if (r->used == NULL)
        r->used = json_array();
    json_array_append_new(r->used, json_string(g->id));
    switch (g->state) {
    case ST_PENDING:
    case ST_INFLIGHT:
        free(r->wait_id);
        r->wait_id = dw_strdup(g->id);
        return RES_WAIT;
    case ST_OK:
        *guid = dw_strdup(g->guid);
        return RES_READY;
    case ST_NOTFOUND:
        if (not_found_ok) {
            *guid = NULL;
            return RES_READY;
        }
        if (r->op == DW_WRITE_DELETE) {
            /* A row keyed by a parent that is gone is gone too (or cascaded with it): a
             * redelivered child delete is done, not a missing parent (DESIGN invariant 9). */
            finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, 404, "", "");
            return RES_FAIL;
        }
        free(r->missing);
        r->missing = ref_display(set, rkey);
        {
            char *msg = dw_asprintf("A record with the specified key values does not exist in "
                                    "%s (parent %s)",
                                    set, r->missing);
            finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MISSING_PARENT, 404, "0x80048d02", msg);
            free(msg);
        }
        return RES_FAIL;
    case ST_FAILED:
        finish_row(s, r, g->fail.status, g->fail.cls, g->fail.http, g->fail.code, g->fail.message);
        return RES_FAIL;
    }
    return RES_WAIT;
}

/* Resolves the key of a reference object and then its GUID. */
static enum res resolve_ref(struct dw_sink *s, struct row *r, const json_t *ref, int depth,
                            char **set_out, json_t **rkey_out, char **guid)
{
    const char *set = json_string_value(json_object_get(ref, "$ref"));
    json_t *rkey = NULL;
    enum res res = resolve_key(s, r, json_object_get(ref, "key"), depth + 1, &rkey);
    if (res == RES_READY && guid)
        res = r->atomic && depth == 0 ? atomic_ref_guid(s, r, ref, set, rkey, guid)
                                      : ref_guid(s, r, set, rkey, false, guid);
    if (res == RES_READY) {
        if (depth == 0)
            parents_note(guid ? &r->keyrefs : &r->binds, set, rkey);
        *set_out = dw_strdup(set);
        *rkey_out = rkey;
    } else {
        json_decref(rkey);
    }
    return res;
}

/* Whether every value of a key is a scalar: then it is its own resolved form. */
static bool key_is_plain(const json_t *key)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)key, name, v)
    {
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
            return false;
    }
    return true;
}

static enum res resolve_key(struct dw_sink *s, struct row *r, const json_t *key, int depth,
                            json_t **out)
{
    const char *name;
    json_t *v;
    if (depth > MAX_REF_DEPTH || !json_is_object(key) || json_object_size(key) == 0) {
        finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "",
                   "a key is empty, not an object, or nests references too deeply");
        return RES_FAIL;
    }
    if (key_is_plain(key)) {
        *out = json_incref((json_t *)key); /* shared, never modified */
        return RES_READY;
    }
    json_t *rkey = json_object();
    json_object_foreach((json_t *)key, name, v)
    {
        if (dw_dvkey_is_ref(v)) {
            char *set = NULL, *guid = NULL;
            json_t *inner = NULL;
            enum res res = resolve_ref(s, r, v, depth, &set, &inner, &guid);
            if (res != RES_READY) {
                json_decref(rkey);
                return res;
            }
            json_object_set_new(rkey, name, json_string(guid));
            free(set);
            free(guid);
            json_decref(inner);
        } else if (json_is_string(v) || json_is_number(v) || json_is_boolean(v)) {
            json_object_set(rkey, name, v);
        } else {
            char *msg = dw_asprintf("key part \"%s\" is not a scalar or a reference", name);
            finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "", msg);
            free(msg);
            json_decref(rkey);
            return RES_FAIL;
        }
    }
    *out = rkey;
    return RES_READY;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether a body binds a parent by a reference object (which must be written out). */
static bool is_bind_ref(const char *name, const json_t *v)
{
    return ends_with(name, "@odata.bind") && dw_dvkey_is_ref(v);
}

static bool body_has_refs(const json_t *body)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)body, name, v)
    {
        if (is_bind_ref(name, v))
            return true;
    }
    return false;
}

/*
 * Writes each "@odata.bind" reference of the body out as "/<set>(<key>)", or "/<set>(<guid>)"
 * when the parent's key cannot be put in a URL (or a Content-ID inside an atomic group),
 * into *out in body order: the body itself is never copied or modified (sink.h), and what
 * is sent is its members with these in place of the references (put_body_members()).
 * *out is NULL for a body without references.
 */
static enum res resolve_body(struct dw_sink *s, struct row *r, json_t **out)
{
    const char *name;
    json_t *v;
    *out = NULL;
    if (!body_has_refs(r->body))
        return RES_READY;
    json_t *binds = json_array();
    json_object_foreach(r->body, name, v)
    {
        if (!is_bind_ref(name, v))
            continue;
        char *set = NULL;
        json_t *pkey = NULL;
        enum res res = resolve_ref(s, r, v, 0, &set, &pkey, NULL);
        if (res == RES_READY) {
            struct dw_buf b;
            dw_buf_init(&b, 0);
            if (dw_dvkey_addressable(pkey)) {
                (void)dw_buf_putc(&b, '/');
                (void)dw_buf_puts(&b, set);
                (void)dw_buf_putc(&b, '(');
                (void)dw_dvkey_segment(&b, pkey, true);
                (void)dw_buf_putc(&b, ')');
            } else {
                char *guid = NULL;
                res = r->atomic ? atomic_ref_guid(s, r, v, set, pkey, &guid)
                                : ref_guid(s, r, set, pkey, false, &guid);
                if (res == RES_READY && guid[0] == '$')
                    (void)dw_buf_puts(&b, guid); /* a Content-ID reference */
                else if (res == RES_READY)
                    (void)dw_buf_printf(&b, "/%s(%s)", set, guid);
                free(guid);
            }
            if (res == RES_READY)
                json_array_append_new(binds, json_stringn(dw_buf_str(&b), b.len));
            dw_buf_cleanup(&b);
        }
        free(set);
        json_decref(pkey);
        if (res != RES_READY) {
            json_decref(binds);
            return res;
        }
    }
    *out = binds;
    return RES_READY;
}

/* The body sent when it is an object as it stands (a POST's, or one without references);
 * NULL when its references are to be replaced by rbinds (sent_value()). */
static const json_t *body_as_is(const struct row *r)
{
    return r->rbody ? r->rbody : r->rbinds == NULL ? r->body : NULL;
}

/* What is sent for body member name: v, or for a bind reference the next of rbinds (*k
 * counts them; members are visited in body order). */
static json_t *sent_value(const struct row *r, const char *name, json_t *v, size_t *k)
{
    return is_bind_ref(name, v) ? json_array_get(r->rbinds, (*k)++) : v;
}

/* Appends the members of the body as sent (no braces): the body with its bind references
 * written out, or the whole body of a POST. */
static void put_body_members(struct dw_buf *b, const struct row *r)
{
    if (body_as_is(r)) {
        (void)dw_json_append_members(b, body_as_is(r));
        return;
    }
    const char *name;
    json_t *v;
    size_t k = 0;
    bool first = true;
    json_object_foreach(r->body, name, v)
    {
        if (!first)
            (void)dw_buf_putc(b, ',');
        first = false;
        (void)dw_buf_put_json_string(b, name, strlen(name));
        (void)dw_buf_putc(b, ':');
        (void)dw_json_append(b, sent_value(r, name, v, &k));
    }
}

/* The body as sent, as a new reference: a failure's payload, and the start of a POST's body. */
static json_t *body_as_sent(const struct row *r)
{
    if (body_as_is(r))
        return json_incref((json_t *)body_as_is(r));
    json_t *whole = json_object();
    const char *name;
    json_t *v;
    size_t k = 0;
    json_object_foreach(r->body, name, v)
    {
        json_object_set(whole, name, sent_value(r, name, v, &k));
    }
    return whole;
}

/* Adds the key attributes to the body of a POST (only for unaddressable keys). */
static enum res post_body(struct dw_sink *s, struct row *r)
{
    const char *name;
    json_t *v;
    json_t *sent = body_as_sent(r);
    json_t *own = json_copy(sent); /* the caller's body is never modified */
    json_decref(sent);
    json_decref(r->rbody);
    r->rbody = own;
    json_object_foreach(r->key, name, v)
    {
        if (!dw_dvkey_is_lookup_part(name)) {
            json_object_set(r->rbody, name, v);
            continue;
        }
        if (!dw_dvkey_is_ref(v)) {
            char *msg = dw_asprintf("cannot create a row whose key holds a character a URL "
                                    "cannot carry when key part \"%s\" is a bare GUID: give "
                                    "it as a reference object",
                                    name);
            finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "", msg);
            free(msg);
            return RES_FAIL;
        }
        /* "_parent_value" becomes "parent@odata.bind": the lookup's navigation name. */
        char *nav = dw_strndup(name + 1, strlen(name) - 7);
        char *bind = dw_asprintf("%s@odata.bind", nav);
        const char *id = json_string_value(json_object_get(r->rkey, name));
        char *val = id[0] == '$'
                        ? dw_strdup(id) /* a Content-ID reference */
                        : dw_asprintf("/%s(%s)", json_string_value(json_object_get(v, "$ref")), id);
        json_object_set_new(r->rbody, bind, json_string(val));
        free(nav);
        free(bind);
        free(val);
    }
    return RES_READY;
}

static enum res resolve_row(struct dw_sink *s, struct row *r)
{
    free(r->wait_id);
    r->wait_id = NULL;
    json_decref(r->used);
    r->used = NULL;
    parents_clear(&r->binds);
    parents_clear(&r->keyrefs);
    json_t *rkey = NULL, *rbinds = NULL;
    enum res res = resolve_key(s, r, r->key, 0, &rkey);
    if (res == RES_READY && r->body)
        res = resolve_body(s, r, &rbinds);
    if (res != RES_READY)
        goto out;
    free(r->guid);
    r->guid = NULL;
    /* Keyed through a parent created earlier in its changeset: new, so created by POST. */
    r->post = r->atomic && names_content_id(rkey);
    if (r->post && r->op == DW_WRITE_UPDATE) {
        finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, 404, "",
                   "update-only write: no row matches the key");
        res = RES_FAIL;
        goto out;
    }
    if (!r->post && !dw_dvkey_addressable(rkey)) {
        char *guid = NULL;
        res = ref_guid(s, r, r->entity_set, rkey, true, &guid);
        if (res != RES_READY)
            goto out;
        if (guid) {
            r->guid = guid;
        } else if (r->op == DW_WRITE_DELETE) {
            finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, 404, "", "");
            res = RES_FAIL;
            goto out;
        } else if (r->op == DW_WRITE_UPDATE) {
            finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, 404, "",
                       "update-only write: no row matches the key");
            res = RES_FAIL;
            goto out;
        } else {
            r->post = true;
        }
    }
    json_decref(r->rkey);
    json_decref(r->rbinds);
    json_decref(r->rbody);
    r->rkey = rkey;
    r->rbinds = rbinds;
    r->rbody = NULL;
    rkey = rbinds = NULL;
    if (r->post)
        res = post_body(s, r);
out:
    json_decref(rkey);
    json_decref(rbinds);
    return res;
}

/* --- requests -------------------------------------------------------------------------- */

static struct req *req_new(enum req_kind kind, const char *method, char *url)
{
    struct req *q = dw_calloc(1, sizeof *q);
    q->kind = kind;
    q->method = method;
    q->url = url;
    dw_buf_init(&q->resp, RESPONSE_MAX);
    return q;
}

static void req_reset_transfer(struct req *q)
{
    if (q->easy)
        curl_easy_cleanup(q->easy);
    q->easy = NULL;
    curl_slist_free_all(q->headers);
    q->headers = NULL;
    dw_buf_reset(&q->resp);
    free(q->resp_type);
    free(q->retry_after);
    free(q->location);
    q->resp_type = q->retry_after = q->location = NULL;
    q->too_big = false;
    q->dop_hint = 0;
    q->errbuf[0] = '\0';
}

static void req_free(struct req *q)
{
    if (q == NULL)
        return;
    req_reset_transfer(q);
    dw_buf_cleanup(&q->resp);
    free(q->rows);
    free(q->entries);
    json_decref(q->pages);
    free(q->url);
    free(q->body);
    free(q->content_type);
    free(q);
}

static void enqueue(struct dw_sink *s, struct req *q)
{
    DL_APPEND(s->queue, q);
}

static char *api_url(struct dw_sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *api_url(struct dw_sink *s, const char *fmt, ...)
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
 * Queues one GET that finds the GUIDs of as many of entries[0..n) (all of one entity set)
 * as fit in a URL, and returns how many it took. One entry: "$filter=<key>", the first
 * answer row is it. Several: "$filter=(<key>) or (<key>) ...", selecting the key
 * attributes too so that each answer row can be matched back to its entry.
 */
static size_t queue_lookup(struct dw_sink *s, struct guid_entry **entries, size_t n, const char *pk)
{
    struct dw_buf filter, clause, url;
    dw_buf_init(&filter, 0);
    dw_buf_init(&clause, 0);
    dw_buf_init(&url, 0);
    json_t *select = json_object();
    size_t taken = 0;
    if (n == 1) {
        (void)dw_dvkey_filter(&filter, entries[0]->rkey);
        taken = 1;
    }
    for (; n > 1 && taken < n; taken++) {
        dw_buf_reset(&clause);
        (void)dw_buf_puts(&clause, taken ? "%20or%20(" : "(");
        (void)dw_dvkey_filter(&clause, entries[taken]->rkey);
        (void)dw_buf_putc(&clause, ')');
        if (taken > 0 && filter.len + clause.len > LOOKUP_URL_MAX)
            break;
        (void)dw_buf_append(&filter, clause.data, clause.len);
        const char *name;
        json_t *v;
        json_object_foreach(entries[taken]->rkey, name, v)
            json_object_set(select, name, json_true());
    }
    (void)dw_buf_printf(&url, "%s?$select=%s", entries[0]->set, pk);
    const char *name;
    json_t *v;
    json_object_foreach(select, name, v)
    {
        if (strcmp(name, pk) != 0)
            (void)dw_buf_printf(&url, ",%s", name);
    }
    (void)dw_buf_printf(&url, "&$top=%zu&$filter=%s", 2 * taken, dw_buf_str(&filter));
    struct req *q = req_new(REQ_LOOKUP, "GET", api_url(s, "%s", dw_buf_str(&url)));
    q->entries = dw_malloc(taken * sizeof *q->entries);
    q->nentries = taken;
    for (size_t i = 0; i < taken; i++) {
        q->entries[i] = entries[i];
        entries[i]->state = ST_INFLIGHT;
    }
    enqueue(s, q);
    json_decref(select);
    dw_buf_cleanup(&filter);
    dw_buf_cleanup(&clause);
    dw_buf_cleanup(&url);
    return taken;
}

/* "<before><value as an OData string literal><after>", a new heap string. */
static char *filter_eq(const char *before, const char *value, const char *after)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    json_t *v = json_string(value);
    (void)dw_buf_puts(&b, before);
    if (v == NULL || dw_dvkey_literal(&b, v, false) != DW_OK)
        (void)dw_buf_puts(&b, "''");
    (void)dw_buf_puts(&b, after);
    json_decref(v);
    return dw_buf_steal(&b);
}

static void queue_setinfo(struct dw_sink *s, struct set_entry *e)
{
    struct dw_buf b;
    char *filter = filter_eq("EntitySetName eq ", e->set, "");
    dw_buf_init(&b, 0);
    (void)dw_dvkey_encode(&b, filter, strlen(filter));
    struct req *q = req_new(
        REQ_SETINFO, "GET",
        api_url(s,
                "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=%s",
                dw_buf_str(&b)));
    free(filter);
    dw_buf_cleanup(&b);
    q->set_entry = e;
    e->state = ST_INFLIGHT;
    enqueue(s, q);
}

static void queue_bulkinfo(struct dw_sink *s, struct bulk_entry *e)
{
    struct dw_buf b;
    char *filter = filter_eq("sdkmessageid/name eq 'UpsertMultiple' and primaryobjecttypecode eq ",
                             e->name, "");
    dw_buf_init(&b, 0);
    (void)dw_dvkey_encode(&b, filter, strlen(filter));
    struct req *q = req_new(
        REQ_BULKINFO, "GET",
        api_url(s, "sdkmessagefilters?$select=sdkmessagefilterid&$filter=%s", dw_buf_str(&b)));
    free(filter);
    dw_buf_cleanup(&b);
    q->bulk_entry = e;
    e->state = ST_INFLIGHT;
    enqueue(s, q);
}

static void queue_bulk(struct dw_sink *s, struct row **rows, size_t n)
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
        if (json_object_size(r->body) || json_object_size(r->rbody)) {
            (void)dw_buf_putc(&body, ',');
            put_body_members(&body, r);
        }
        (void)dw_buf_putc(&body, '}');
        r->sent = true;
        row_move(s, r, ROW_SENT);
    }
    (void)dw_buf_puts(&body, "]}");
    dw_buf_cleanup(&address);
    struct req *q =
        req_new(REQ_BULK, "POST",
                api_url(s, "%s/Microsoft.Dynamics.CRM.UpsertMultiple", rows[0]->entity_set));
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    q->content_type = dw_strdup("application/json");
    q->rows = dw_malloc(n * sizeof *q->rows);
    memcpy(q->rows, rows, n * sizeof *rows);
    q->nrows = n;
    enqueue(s, q);
}

/*
 * Builds a $batch request of rows (moved to ROW_SENT); the caller queues it. With
 * content_ids the rows go as one changeset (REQ_CHANGESET) under those Content-IDs.
 */
static struct req *build_batch(struct dw_sink *s, struct row **rows, size_t n,
                               const size_t *content_ids)
{
    struct dw_batch_request *parts = dw_calloc(n, sizeof *parts);
    char **urls = dw_calloc(n, sizeof *urls);
    char **bodies = dw_calloc(n, sizeof *bodies);
    char boundary[48];
    snprintf(boundary, sizeof boundary, "batch_%08x%08x", random32(), random32());
    for (size_t i = 0; i < n; i++) {
        struct row *r = rows[i];
        struct dw_buf b;
        dw_buf_init(&b, 0);
        (void)dw_buf_printf(&b, "%s/", s->api_path);
        if (r->post)
            (void)dw_buf_puts(&b, r->entity_set);
        else
            row_address(&b, r, true);
        urls[i] = dw_buf_steal(&b);
        parts[i].url = urls[i];
        parts[i].content_id = content_ids ? content_ids[i] : 0;
        r->sent = true;
        if (r->op == DW_WRITE_DELETE) {
            parts[i].method = "DELETE";
        } else {
            parts[i].method = r->post ? "POST" : "PATCH";
            if (!r->post && r->op == DW_WRITE_CREATE)
                parts[i].headers = "If-None-Match: *\r\n";
            else if (!r->post && r->op == DW_WRITE_UPDATE)
                parts[i].headers = "If-Match: *\r\n";
            struct dw_buf one;
            dw_buf_init(&one, 0);
            (void)dw_buf_putc(&one, '{');
            put_body_members(&one, r);
            (void)dw_buf_putc(&one, '}');
            parts[i].body_len = one.len;
            bodies[i] = dw_buf_steal(&one);
            parts[i].body = bodies[i];
        }
        row_move(s, r, ROW_SENT);
    }
    struct dw_buf body;
    dw_buf_init(&body, 0);
    char changeset[48];
    snprintf(changeset, sizeof changeset, "changeset_%08x%08x", random32(), random32());
    (void)dw_batch_build(&body, boundary, content_ids ? changeset : NULL, parts, n);
    struct req *q = req_new(content_ids ? REQ_CHANGESET : REQ_BATCH, "POST", api_url(s, "$batch"));
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    q->content_type = dw_asprintf("multipart/mixed; boundary=\"%s\"", boundary);
    q->continue_on_error = content_ids == NULL;
    q->rows = dw_malloc(n * sizeof *q->rows);
    memcpy(q->rows, rows, n * sizeof *rows);
    q->nrows = n;
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        free(bodies[i]);
    }
    free(urls);
    free(bodies);
    free(parts);
    return q;
}

static struct req *make_batch(struct dw_sink *s, struct row **rows, size_t n)
{
    return build_batch(s, rows, n, NULL);
}

static void queue_batch(struct dw_sink *s, struct row **rows, size_t n)
{
    enqueue(s, make_batch(s, rows, n));
}

/* --- planning -------------------------------------------------------------------------- */

/* Length of s without trailing spaces. */
static size_t unpadded_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    return n;
}

/* Equal as Dataverse's SQL collation compares ASCII text: without case, trailing spaces
 * ignored ('A1' = 'a1  '). */
static bool collation_equal(const char *a, const char *b)
{
    size_t n = unpadded_len(a);
    return n == unpadded_len(b) && strncasecmp(a, b, n) == 0;
}

/* Whether every string in the key is ASCII: only then does collation_equal() compare as
 * Dataverse does, so only such keys share a lookup query. */
static bool key_is_ascii(const json_t *rkey)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)rkey, name, v)
    {
        for (const char *p = json_string_value(v); p && *p; p++)
            if ((unsigned char)*p >= 0x80)
                return false;
    }
    return true;
}

/* Whether an answer row carries the key's values. */
static bool key_matches(const json_t *rkey, const json_t *row)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)rkey, name, v)
    {
        const json_t *got = json_object_get(row, name);
        if (json_is_string(v)) {
            if (!json_is_string(got) ||
                !collation_equal(json_string_value(v), json_string_value(got)))
                return false;
        } else if (json_is_number(v)) {
            if (!json_is_number(got) || json_number_value(v) != json_number_value(got))
                return false;
        } else if (!json_is_boolean(v) || !json_is_boolean(got) ||
                   json_is_true(v) != json_is_true(got)) {
            return false;
        }
    }
    return true;
}

static void fail_entry(struct dw_sink *s, struct guid_entry *g, const struct failure *f)
{
    entry_negative(s, g, ST_FAILED);
    failure_set(&g->fail, f->status, f->cls, f->http, f->code, f->message);
}

static struct set_entry *set_get(struct dw_sink *s, const char *set)
{
    struct set_entry *e = NULL;
    HASH_FIND_STR(s->sets, set, e);
    if (e == NULL) {
        e = dw_calloc(1, sizeof *e);
        e->set = dw_strdup(set);
        e->state = ST_PENDING;
        HASH_ADD_KEYPTR(hh, s->sets, e->set, strlen(e->set), e);
    }
    return e;
}

static int cmp_entries_by_set(const void *a, const void *b)
{
    const struct guid_entry *x = *(struct guid_entry *const *)a;
    const struct guid_entry *y = *(struct guid_entry *const *)b;
    return strcmp(x->set, y->set);
}

/* Queues the lookups of entries[0..n), all of one set: shared queries, except for the
 * entries that must be asked alone (non-ASCII keys, whose answer rows only Dataverse's
 * collation can match back). */
static void queue_set_lookups(struct dw_sink *s, struct guid_entry **entries, size_t n,
                              const char *pk)
{
    size_t shared = 0;
    for (size_t i = 0; i < n; i++) {
        if (entries[i]->alone || !key_is_ascii(entries[i]->rkey))
            (void)queue_lookup(s, &entries[i], 1, pk);
        else
            entries[shared++] = entries[i];
    }
    for (size_t i = 0; i < shared;) {
        size_t chunk = shared - i < LOOKUP_BATCH ? shared - i : LOOKUP_BATCH;
        i += queue_lookup(s, entries + i, chunk, pk);
    }
}

/* Issues requests for the GUID cache entries that need one, grouped by entity set. */
static void advance_entries(struct dw_sink *s)
{
    struct entry_list *l = &s->to_lookup;
    if (l->n == 0)
        return;
    struct guid_entry **ready = dw_malloc(l->n * sizeof *ready);
    size_t keep = 0, nready = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct guid_entry *g = l->v[i];
        struct set_entry *e = set_get(s, g->set);
        if (e->state == ST_PENDING)
            queue_setinfo(s, e);
        if (e->state == ST_OK)
            ready[nready++] = g;
        else if (e->state == ST_FAILED)
            fail_entry(s, g, &e->fail);
        else
            l->v[keep++] = g; /* waits for the set's metadata */
    }
    l->n = keep;
    qsort(ready, nready, sizeof *ready, cmp_entries_by_set);
    for (size_t i = 0; i < nready;) {
        size_t j = i + 1;
        while (j < nready && strcmp(ready[j]->set, ready[i]->set) == 0)
            j++;
        struct set_entry *e = set_get(s, ready[i]->set);
        queue_set_lookups(s, ready + i, j - i, e->pk);
        i = j;
    }
    free(ready);
}

static void drop_negative_entries(struct dw_sink *s)
{
    struct entry_list *l = &s->negatives;
    size_t keep = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct guid_entry *g = l->v[i];
        if (g->neg_pass < s->pass) {
            HASH_DEL(s->guids, g);
            guid_entry_free(g);
        } else {
            l->v[keep++] = g;
        }
    }
    l->n = keep;
    /* A set whose metadata could not be read is asked again next time. */
    struct set_entry *e, *etmp;
    HASH_ITER(hh, s->sets, e, etmp)
    {
        if (e->state == ST_FAILED) {
            HASH_DEL(s->sets, e);
            free(e->set);
            free(e->pk);
            failure_cleanup(&e->fail);
            free(e);
        }
    }
}

/* A ready row and its place in the ready list, for a stable sort. */
struct ready_row {
    struct row *row;
    size_t place;
};

/* By entity set, keeping submission order within one: a row bound to a parent earlier in
 * the same bulk request finds it created (UpsertMultiple applies its targets in order). */
static int cmp_rows_by_set(const void *a, const void *b)
{
    const struct ready_row *x = a, *y = b;
    int c = strcmp(x->row->entity_set, y->row->entity_set);
    return c ? c : (x->place > y->place) - (x->place < y->place);
}

static void group_ready(struct dw_sink *s)
{
    size_t n = 0, nbulk = 0, nbatch = 0;
    struct row *r, *tmp;
    DL_COUNT(s->ready, r, n);
    if (n == 0)
        return;
    /* While parents are still being resolved, more rows become ready with each answer:
     * only whole requests go out meanwhile, and the rest waits to be joined by them, so a
     * few large requests are sent instead of many small ones. Resolution always ends
     * (found, missing, or given up), so nothing waits for ever. */
    size_t size = (size_t)s->cfg->dataverse.batch_size;
    bool whole_only = s->resolving != NULL;
    if (whole_only && n < size)
        return;
    struct ready_row *bulk = dw_malloc(n * sizeof *bulk);
    struct row **batch = dw_malloc(n * sizeof *batch);
    struct row **group = dw_malloc(n * sizeof *group);
    DL_FOREACH_SAFE(s->ready, r, tmp)
    {
        if (r->atomic)
            continue; /* sent with its group by plan_atomic() */
        if (r->single) {
            queue_batch(s, &r, 1);
            continue;
        }
        if (r->op == DW_WRITE_UPSERT && !r->no_bulk && !r->post && r->logical_name &&
            *r->logical_name) {
            struct bulk_entry *e = NULL;
            HASH_FIND_STR(s->bulks, r->logical_name, e);
            if (e == NULL) {
                e = dw_calloc(1, sizeof *e);
                e->name = dw_strdup(r->logical_name);
                HASH_ADD_KEYPTR(hh, s->bulks, e->name, strlen(e->name), e);
                queue_bulkinfo(s, e);
            }
            if (e->state != ST_OK)
                continue; /* waits for the answer */
            if (e->supported) {
                bulk[nbulk] = (struct ready_row){r, nbulk};
                nbulk++;
                continue;
            }
        }
        batch[nbatch++] = r;
    }
    qsort(bulk, nbulk, sizeof *bulk, cmp_rows_by_set);
    for (size_t i = 0; i < nbulk;) {
        size_t j = i;
        while (j < nbulk && j - i < size &&
               strcmp(bulk[j].row->entity_set, bulk[i].row->entity_set) == 0) {
            group[j - i] = bulk[j].row;
            j++;
        }
        if (j - i == size || !whole_only)
            queue_bulk(s, group, j - i);
        i = j;
    }
    for (size_t i = 0; i < nbatch; i += size)
        if (nbatch - i >= size || !whole_only)
            queue_batch(s, batch + i, nbatch - i < size ? nbatch - i : size);
    free(bulk);
    free(batch);
    free(group);
}

static void plan_atomic(struct dw_sink *s);

/* True while the cache entry a row last waited for is still being looked up. */
static bool still_waiting(struct dw_sink *s, const struct row *r)
{
    struct guid_entry *g = NULL;
    if (r->wait_id)
        HASH_FIND_STR(s->guids, r->wait_id, g);
    return g && (g->state == ST_PENDING || g->state == ST_INFLIGHT);
}

static void plan(struct dw_sink *s)
{
    s->pass++;
    advance_entries(s);
    struct row *r, *tmp;
    DL_FOREACH_SAFE(s->resolving, r, tmp)
    {
        if (!still_waiting(s, r) && resolve_row(s, r) == RES_READY)
            row_move(s, r, ROW_READY);
    }
    advance_entries(s);
    drop_negative_entries(s);
    trim_cache(s);
    plan_atomic(s);
    group_ready(s);
}

/* --- transfers ------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    struct req *q = user;
    if (dw_buf_append(&q->resp, data, size * nmemb) == DW_OK)
        return size * nmemb;
    q->too_big = true; /* curl then fails the transfer with CURLE_WRITE_ERROR */
    return 0;
}

static char *header_value(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    return dw_strndup(v, (size_t)(end - v));
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user)
{
    struct req *q = user;
    size_t len = size * nmemb;
    char *v;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue or a redirect) starts its headers afresh. */
        free(q->resp_type);
        free(q->retry_after);
        free(q->location);
        q->resp_type = q->retry_after = q->location = NULL;
    } else if ((v = header_value(data, len, "Location"))) {
        free(q->location);
        q->location = v;
    } else if ((v = header_value(data, len, "Content-Type"))) {
        free(q->resp_type);
        q->resp_type = v;
    } else if ((v = header_value(data, len, "Retry-After"))) {
        free(q->retry_after);
        q->retry_after = v;
    } else if ((v = header_value(data, len, "x-ms-dop-hint"))) {
        long hint = strtol(v, NULL, 10);
        q->dop_hint = hint > 0 && hint < 1000 ? (int)hint : 0;
        free(v);
    }
    return len;
}

static void debug_request(struct dw_sink *s, const struct req *q)
{
    if (!s->cfg->dataverse.debug_payloads || !dw_log_enabled(DW_LOG_DEBUG))
        return;
    /* The Authorization header is never part of what is logged; the body passes the
     * redactor in dw_log_emit like every log line. */
    DW_LOGF(DW_LOG_DEBUG, DW_FIELDS({"method", q->method}, {"url", q->url}),
            "request headers: Authorization: Bearer " DW_REDACTED ", Content-Type: %s",
            q->content_type ? q->content_type : "application/x-www-form-urlencoded");
    if (q->body && q->kind != REQ_TOKEN)
        DW_DEBUG("request body: %.*s", (int)q->body_len, q->body);
}

static void debug_response(struct dw_sink *s, const struct req *q, long http)
{
    if (!s->cfg->dataverse.debug_payloads || !dw_log_enabled(DW_LOG_DEBUG))
        return;
    char status[16];
    snprintf(status, sizeof status, "%ld", http);
    DW_LOGF(DW_LOG_DEBUG, DW_FIELDS({"url", q->url}, {"status", status}), "response body: %s",
            q->kind == REQ_TOKEN ? "(token response withheld)" : dw_buf_str(&q->resp));
}

static dw_rc start_transfer(struct dw_sink *s, struct req *q, const char *token)
{
    req_reset_transfer(q);
    CURL *e = curl_easy_init();
    if (e == NULL)
        dw_oom(0);
    q->easy = e;
    const struct dw_config *c = s->cfg;
    if (q->kind == REQ_TOKEN) {
        q->headers = curl_slist_append(q->headers, "Accept: application/json");
        q->headers =
            curl_slist_append(q->headers, "Content-Type: application/x-www-form-urlencoded");
    } else {
        char *auth = dw_asprintf("Authorization: Bearer %s", token);
        q->headers = curl_slist_append(q->headers, auth);
        explicit_bzero(auth, strlen(auth));
        free(auth);
        q->headers = curl_slist_append(q->headers, "Accept: application/json");
        q->headers = curl_slist_append(q->headers, "OData-MaxVersion: 4.0");
        q->headers = curl_slist_append(q->headers, "OData-Version: 4.0");
        if (q->content_type) {
            char *ct = dw_asprintf("Content-Type: %s", q->content_type);
            q->headers = curl_slist_append(q->headers, ct);
            free(ct);
        }
        if (q->continue_on_error)
            q->headers = curl_slist_append(q->headers, "Prefer: odata.continue-on-error");
        q->token_gen = dw_auth_generation(s->auth);
    }
    q->headers = curl_slist_append(q->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
    if (q->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    } else if (strcmp(q->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    q->resp.max_len = (size_t)c->dataverse.max_response_bytes;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->dataverse.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->dataverse.request_timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->dataverse.ca_file && *c->dataverse.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->dataverse.ca_file);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "dwasync/" DW_VERSION);
    debug_request(s, q);
    DW_DEBUG("sending %s %s (attempt %d, %zu rows)", q->method, q->url, q->attempts + 1, q->nrows);
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        req_reset_transfer(q);
        return DW_ERR_HTTP;
    }
    DL_APPEND(s->transfers, q);
    if (q->kind == REQ_TOKEN) {
        s->token_in_flight = true;
    } else {
        s->in_flight++;
        s->stats.requests++;
    }
    return DW_OK;
}

static void start_token_request(struct dw_sink *s, int64_t now)
{
    struct dw_buf body;
    dw_buf_init(&body, 0);
    if (dw_auth_request_body(s->auth, (int64_t)time(NULL), &body) != DW_OK) {
        dw_buf_cleanup(&body);
        s->token_not_before = now + 5000;
        return;
    }
    struct req *q = req_new(REQ_TOKEN, "POST", dw_strdup(dw_auth_token_url(s->auth)));
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    if (start_transfer(s, q, NULL) != DW_OK) {
        explicit_bzero(q->body, q->body_len);
        req_free(q);
        s->token_not_before = now + 1000;
    }
}

/* Whether another bulk request to the same table as q is in flight. */
static bool sibling_in_flight(const struct dw_sink *s, const struct req *q)
{
    const struct req *t;
    DL_FOREACH(s->transfers, t)
    {
        if (t != q && t->kind == REQ_BULK && strcmp(t->url, q->url) == 0)
            return true;
    }
    return false;
}

static void start_requests(struct dw_sink *s)
{
    int64_t now = dw_clock_ms();
    const char *token = dw_auth_token(s->auth, now);
    int64_t renew = dw_auth_renew_at(s->auth);
    bool want_token = token == NULL || (renew && now >= renew);
    if (want_token && !s->token_in_flight && now >= s->token_not_before && s->queue)
        start_token_request(s, now);
    if (token == NULL || now < s->paused_until)
        return;
    int limit = dw_aimd_limit(&s->aimd);
    struct req *q, *tmp;
    DL_FOREACH_SAFE(s->queue, q, tmp)
    {
        if (s->in_flight >= limit)
            break;
        if (q->not_before > now || (q->after_siblings && sibling_in_flight(s, q)))
            continue;
        DL_DELETE(s->queue, q);
        if (start_transfer(s, q, token) != DW_OK) {
            q->not_before = now + 1000;
            DL_APPEND(s->queue, q);
        }
    }
    s->stats.concurrency = limit;
    s->stats.in_flight = s->in_flight;
}

/* --- completions ----------------------------------------------------------------------- */

/* Reads {"error":{"code":..,"message":..}} (or an OAuth-style error) from a body. */
static void parse_error(const char *body, char **code, char **message)
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
static void transfer_error(const struct req *q, CURLcode cc, long http, char **code, char **message)
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
        parse_error(dw_buf_str(&q->resp), code, message);
    }
}

static int retry_limit(const struct dw_sink *s, const struct req *q)
{
    if (q->kind == REQ_GET)
        return s->cfg->dataverse.retry_limit ? (int)s->cfg->dataverse.retry_limit
                                             : BLOCKING_ATTEMPTS;
    return (int)s->cfg->dataverse.retry_limit;
}

static void give_up(struct dw_sink *s, struct req *q, const struct failure *f);

/*
 * Puts a request back in the queue after a transient failure, or gives up past the retry
 * limit. A 429 pauses the whole environment; anything else backs off this request alone.
 */
static void retry(struct dw_sink *s, struct req *q, const struct dw_classification *c, int http,
                  const char *code, const char *message)
{
    int64_t now = dw_clock_ms();
    q->attempts++;
    int limit = retry_limit(s, q);
    if ((limit > 0 && q->attempts >= limit) || (q->kind == REQ_GET && c->config_error)) {
        char *msg = dw_asprintf("gave up after %d attempt%s: %s", q->attempts,
                                q->attempts == 1 ? "" : "s", message);
        struct failure f = {DW_WRITE_GAVE_UP, DW_ERRCLASS_TRANSIENT, http, code, msg};
        give_up(s, q, &f);
        free(msg);
        return;
    }
    int64_t delay;
    if (c->throttled) {
        delay = dw_retry_after_ms(q->retry_after, time(NULL));
        if (delay < 0)
            delay = DEFAULT_RETRY_AFTER_MS;
        if (now + delay > s->paused_until)
            s->paused_until = now + delay;
        s->stats.throttled++;
        dw_aimd_throttled(&s->aimd);
        DW_WARN("Dataverse throttled a request (HTTP 429): pausing all requests for %" PRId64 " ms",
                delay);
    } else {
        delay = dw_backoff_ms(q->attempts, BACKOFF_BASE_MS, s->cfg->dataverse.retry_max_backoff_ms,
                              random32());
        DW_WARN("transient failure (%s): retrying in %" PRId64 " ms (attempt %d)", message, delay,
                q->attempts);
    }
    s->stats.retries++;
    s->stats.retry_sleep_ms += (uint64_t)delay;
    q->not_before = now + delay;
    req_reset_transfer(q);
    enqueue(s, q);
}

static void atomic_fail(struct dw_sink *s, struct atomic *a, struct row *culprit,
                        const struct failure *f);

static void give_up(struct dw_sink *s, struct req *q, const struct failure *f)
{
    switch (q->kind) {
    case REQ_BULK:
    case REQ_BATCH:
    case REQ_CHANGESET:
        for (size_t i = 0; i < q->nrows; i++)
            finish_row(s, q->rows[i], f->status, f->cls, f->http, f->code, f->message);
        if (q->atomic)
            atomic_fail(s, q->atomic, NULL, f);
        break;
    case REQ_LOOKUP:
        for (size_t i = 0; i < q->nentries; i++)
            fail_entry(s, q->entries[i], f);
        break;
    case REQ_SETINFO:
        q->set_entry->state = ST_FAILED;
        failure_set(&q->set_entry->fail, f->status, f->cls, f->http, f->code, f->message);
        break;
    case REQ_BULKINFO:
        q->bulk_entry->state = ST_OK;
        q->bulk_entry->supported = false;
        break;
    case REQ_GET:
        q->done = true;
        q->http = f->http;
        q->rc = DW_ERR_HTTP;
        DW_ERROR("GET \"%s\" failed: %s", q->url, f->message);
        return; /* the caller frees it */
    case REQ_TOKEN:
        break;
    }
    req_free(q);
}

/* Sends every row of q again as its own $batch (isolates the bad rows of a bulk request
 * or of a batch refused as a whole). */
static void isolate(struct dw_sink *s, struct req *q, bool singles)
{
    for (size_t i = 0; i < q->nrows; i++) {
        q->rows[i]->no_bulk = true;
        q->rows[i]->single = singles;
        row_move(s, q->rows[i], ROW_READY);
    }
    req_free(q);
}

/*
 * A row created with POST (its key cannot be put in a URL) whose answer was lost may exist
 * now: sending the POST again would meet a duplicate key. Such rows are resolved again
 * instead (the $filter lookup then finds the row and the write becomes a PATCH by id).
 * Returns the request holding the other rows, or NULL when none are left (q is consumed).
 */
static struct req *reresolve_posts(struct dw_sink *s, struct req *q)
{
    size_t keep = 0;
    for (size_t i = 0; i < q->nrows; i++) {
        if (q->rows[i]->post) {
            q->rows[i]->post_lost = true;
            row_move(s, q->rows[i], ROW_RESOLVING);
        } else {
            q->rows[keep++] = q->rows[i];
        }
    }
    if (keep == q->nrows)
        return q;
    DW_WARN("the answer to a $batch with %zu row(s) created by POST was lost: looking them up "
            "again rather than risk a duplicate",
            q->nrows - keep);
    struct req *nq = keep ? make_batch(s, q->rows, keep) : NULL;
    if (nq) {
        nq->attempts = q->attempts;
        nq->token_gen = q->token_gen;
        nq->auth_retried = q->auth_retried;
        nq->retry_after = q->retry_after ? dw_strdup(q->retry_after) : NULL;
    }
    req_free(q);
    return nq;
}

static void complete_batch(struct dw_sink *s, struct req *q)
{
    struct dw_batch_response br = {NULL, 0};
    if (dw_batch_parse(q->resp_type, q->resp.data ? q->resp.data : "", q->resp.len, &br) != DW_OK) {
        struct dw_classification c = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_ERROR("$batch answer of %zu bytes could not be parsed (content type \"%s\")",
                 q->resp.len, q->resp_type ? q->resp_type : "");
        retry(s, q, &c, 200, "", "malformed $batch response");
        return;
    }
    struct row **again = dw_malloc(q->nrows * sizeof *again);
    size_t nagain = 0, nunanswered = 0;
    bool throttled = false, renew = false;
    int64_t pause = -1;
    struct dw_classification last = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
    char *last_msg = NULL;
    int last_http = 0;
    for (size_t i = 0; i < q->nrows; i++) {
        struct row *r = q->rows[i];
        if (i >= br.nparts) {
            /* The batch stopped early: never attempted, so resolved and grouped again. */
            row_move(s, r, ROW_READY);
            nunanswered++;
            continue;
        }
        const struct dw_batch_part *p = &br.parts[i];
        char *code = NULL, *msg = NULL;
        parse_error(p->body, &code, &msg);
        struct dw_classification c = dw_classify(r->op, CURLE_OK, p->status, code);
        if (c.verdict == DW_VERDICT_OK) {
            finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, p->status, "", "");
        } else if (c.verdict == DW_VERDICT_PERMANENT && r->post && r->post_lost &&
                   c.error_class == DW_ERRCLASS_DUPLICATE) {
            /* Our own earlier POST landed after all: find the row and update it by id. */
            r->post_lost = false;
            row_move(s, r, ROW_RESOLVING);
        } else if (c.verdict == DW_VERDICT_PERMANENT) {
            if (p->status != 404 || !refresh_ids(s, r))
                finish_row(s, r, DW_WRITE_REJECTED, c.error_class, p->status, code, msg);
        } else if (r->post) {
            r->post_lost = true; /* see reresolve_posts() */
            row_move(s, r, ROW_RESOLVING);
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
        DW_WARN("$batch answered %zu of %zu requests; sending the rest again", br.nparts, q->nrows);
    if (nagain) {
        /* The rows that failed transiently are retried together as a new batch that keeps
         * the attempt count. */
        struct req *nq = make_batch(s, again, nagain);
        nq->attempts = q->attempts;
        nq->token_gen = q->token_gen;
        if (renew && nq->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        if (throttled) {
            last.throttled = true;
            nq->retry_after = pause >= 0 ? dw_asprintf("%" PRId64, (pause + 999) / 1000) : NULL;
        }
        last.verdict = DW_VERDICT_RETRY;
        retry(s, nq, &last, last_http, "", last_msg ? last_msg : "");
    }
    free(last_msg);
    free(again);
    dw_batch_response_cleanup(&br);
    req_free(q);
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

static void complete_write(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
    char *code = NULL, *msg = NULL;
    enum dw_write_op op = q->nrows ? q->rows[0]->op : DW_WRITE_UPSERT;
    transfer_error(q, cc, http, &code, &msg);
    struct dw_classification c = dw_classify(op, cc, (int)http, code);
    if (c.verdict == DW_VERDICT_OK && q->kind == REQ_BATCH) {
        complete_batch(s, q);
    } else if (c.verdict == DW_VERDICT_OK && !bulk_answer_ok(q)) {
        /* Upserts are idempotent: an answer that cannot be read is safest sent again. */
        struct dw_classification bad = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false, false};
        DW_WARN("bulk request to \"%s\" answered HTTP %ld with a body that is not JSON", q->url,
                http);
        retry(s, q, &bad, (int)http, "", "malformed response");
    } else if (c.verdict == DW_VERDICT_OK) {
        for (size_t i = 0; i < q->nrows; i++)
            finish_row(s, q->rows[i], DW_WRITE_APPLIED, DW_ERRCLASS_NONE, (int)http, "", "");
        req_free(q);
    } else if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        DW_INFO("Dataverse answered 401: renewing the access token and retrying");
        req_reset_transfer(q);
        enqueue(s, q);
    } else if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %ld %s", http, msg);
        if (c.config_error)
            DW_ERROR("cannot reach Dataverse at \"%s\": %s", q->url, msg);
        if (q->kind == REQ_BATCH)
            q = reresolve_posts(s, q);
        if (q)
            retry(s, q, &c, (int)http, code, m);
        free(m);
    } else if (q->kind == REQ_BULK && http == 404 && !q->after_siblings) {
        /* A table whose rows refer to each other: the parent may be in another request of
         * the same level, applied after this one. Sent once more when those are answered
         * (at once if they are), before isolating its rows one by one. */
        DW_DEBUG("UpsertMultiple of %zu rows to \"%s\" met a missing parent: sending it again "
                 "after the other requests to its table",
                 q->nrows, q->rows[0]->entity_set);
        q->after_siblings = true;
        req_reset_transfer(q);
        enqueue(s, q);
    } else if (q->kind == REQ_BULK) {
        DW_WARN("UpsertMultiple of %zu rows to \"%s\" failed (HTTP %ld %s %s): sending them "
                "as $batch to isolate the bad rows",
                q->nrows, q->rows[0]->entity_set, http, code, msg);
        isolate(s, q, false);
    } else if (q->nrows > 1) {
        DW_WARN("$batch of %zu rows refused as a whole (HTTP %ld %s %s): sending each row "
                "alone",
                q->nrows, http, code, msg);
        isolate(s, q, true);
    } else {
        for (size_t i = 0; i < q->nrows; i++)
            if (http != 404 || !refresh_ids(s, q->rows[i]))
                finish_row(s, q->rows[i], DW_WRITE_REJECTED, c.error_class, (int)http, code, msg);
        req_free(q);
    }
    free(code);
    free(msg);
}

/*
 * Reads the GUIDs a successful lookup found. A lone entry takes the first row. Shared
 * entries take the row that carries their key; an entry no row matches was not found,
 * unless some row matched no entry either (Dataverse compared in a way key_matches() did
 * not foresee), in which case it is asked again alone rather than reported missing.
 */
static void settle_lookup(struct dw_sink *s, struct req *q, const json_t *values)
{
    struct set_entry *e = NULL;
    HASH_FIND_STR(s->sets, q->entries[0]->set, e);
    const char *pk = e ? e->pk : NULL;
    size_t nrows = json_array_size(values);
    bool *claimed = dw_calloc(nrows ? nrows : 1, sizeof *claimed);
    struct guid_entry **unmatched = dw_malloc(q->nentries * sizeof *unmatched);
    size_t nunmatched = 0;
    for (size_t i = 0; i < q->nentries; i++) {
        struct guid_entry *g = q->entries[i];
        const char *guid = NULL;
        for (size_t j = 0; pk && j < nrows; j++) {
            const json_t *row = json_array_get(values, j);
            if (q->nentries > 1 && !key_matches(g->rkey, row))
                continue;
            claimed[j] = true;
            if (guid == NULL)
                guid = json_string_value(json_object_get(row, pk));
        }
        if (guid && dw_dvkey_is_guid(guid))
            entry_found(s, g, guid);
        else
            unmatched[nunmatched++] = g;
    }
    bool stray = false;
    for (size_t j = 0; j < nrows; j++)
        stray |= !claimed[j];
    for (size_t i = 0; i < nunmatched; i++) {
        if (stray && q->nentries > 1) {
            unmatched[i]->alone = true;
            unmatched[i]->state = ST_PENDING;
            entry_list_push(&s->to_lookup, unmatched[i]);
        } else {
            entry_negative(s, unmatched[i], ST_NOTFOUND);
        }
    }
    free(claimed);
    free(unmatched);
}

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
    req_reset_transfer(q);
    enqueue(s, q);
    return true;
}

static void complete_lookup(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
    char *code = NULL, *msg = NULL;
    transfer_error(q, cc, http, &code, &msg);
    struct dw_classification c = dw_classify(DW_WRITE_UPSERT, cc, (int)http, code);
    if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        req_reset_transfer(q);
        enqueue(s, q);
        goto out;
    }
    if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %ld %s", http, msg);
        retry(s, q, &c, (int)http, code, m);
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
        retry(s, q, &bad, (int)http, "", "malformed response");
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
            failure_set(&q->set_entry->fail, DW_WRITE_REJECTED, DW_ERRCLASS_VALIDATION, (int)http,
                        code, m);
            free(m);
        }
    } else if (q->kind == REQ_LOOKUP) {
        if (c.verdict == DW_VERDICT_OK) {
            settle_lookup(s, q, values);
        } else {
            struct failure f = {DW_WRITE_REJECTED, c.error_class, (int)http, code, msg};
            for (size_t i = 0; i < q->nentries; i++)
                fail_entry(s, q->entries[i], &f);
        }
    }
    json_decref(doc);
    req_free(q);
out:
    free(code);
    free(msg);
}

static void complete_token(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
    int64_t now = dw_clock_ms();
    s->token_in_flight = false;
    explicit_bzero(q->body, q->body_len);
    if (cc == CURLE_OK && dw_auth_accept(s->auth, http, dw_buf_str(&q->resp), now) == DW_OK) {
        s->token_failures = 0;
        s->stats.token_renewals++;
        s->token_config_error = false;
    } else {
        if (cc != CURLE_OK || (http >= 300 && http < 400)) {
            struct dw_classification c = dw_classify(DW_WRITE_UPSERT, cc, (int)http, "");
            char *code = NULL, *msg = NULL;
            transfer_error(q, cc, http, &code, &msg);
            DW_ERROR("token request to \"%s\" failed: %s", q->url, msg);
            s->token_config_error = c.config_error;
            free(code);
            free(msg);
        } else {
            s->token_config_error = http >= 400 && http < 500 && http != 429;
        }
        s->token_failures++;
        int64_t d = dw_backoff_ms(s->token_failures, 1000, s->cfg->dataverse.retry_max_backoff_ms,
                                  random32());
        s->token_not_before = now + d;
        /* Rows waiting for a token give up with everything else past the retry limit. */
        int limit = (int)s->cfg->dataverse.retry_limit;
        if (limit > 0 && s->token_failures >= limit) {
            struct req *w, *tmp;
            struct failure f = {DW_WRITE_GAVE_UP, DW_ERRCLASS_TRANSIENT, (int)http, "",
                                "gave up: no access token could be obtained"};
            DL_FOREACH_SAFE(s->queue, w, tmp)
            {
                if (w->kind == REQ_GET)
                    continue;
                DL_DELETE(s->queue, w);
                give_up(s, w, &f);
            }
        }
    }
    req_free(q);
}

static void complete_changeset(struct dw_sink *s, struct req *q, CURLcode cc, long http);

/* Handles every finished transfer; returns how many there were. */
static int process_done(struct dw_sink *s)
{
    CURLMsg *m;
    int left, n = 0;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        n++;
        struct req *q = NULL;
        long http = 0;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &http);
        curl_multi_remove_handle(s->multi, m->easy_handle);
        DL_DELETE(s->transfers, q);
        DW_DEBUG("answer to %s %s: HTTP %ld, %s", q->method, q->url, http,
                 cc == CURLE_OK ? "ok" : curl_easy_strerror(cc));
        debug_response(s, q, http);
        if (q->kind == REQ_TOKEN) {
            complete_token(s, q, cc, http);
            continue;
        }
        s->in_flight--;
        if (cc == CURLE_OK) {
            if (http >= 200 && http < 300)
                s->stats.responses_2xx++;
            else if (http >= 400 && http < 500)
                s->stats.responses_4xx++;
            else if (http >= 500)
                s->stats.responses_5xx++;
            if (q->dop_hint > 0)
                dw_aimd_set_hint(&s->aimd, q->dop_hint);
            if (http >= 200 && http < 300)
                dw_aimd_success(&s->aimd);
        }
        if (q->kind == REQ_BULK || q->kind == REQ_BATCH)
            complete_write(s, q, cc, http);
        else if (q->kind == REQ_CHANGESET)
            complete_changeset(s, q, cc, http);
        else
            complete_lookup(s, q, cc, http);
    }
    return n;
}

static void deliver(struct dw_sink *s)
{
    struct row *r;
    while ((r = s->done)) {
        DL_DELETE(s->done, r);
        /* The body sent, for a row that failed (an applied row needs none). */
        json_t *payload =
            r->sent && r->body && r->res.status != DW_WRITE_APPLIED ? body_as_sent(r) : NULL;
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
        json_decref(payload);
        row_free(r);
    }
}

/*
 * When the engine next has something to do that no socket will announce: a backoff that
 * ends, a pause that lifts, a token to renew or ask again for. Requests that wait for a
 * free slot or for a token in flight are woken by a completion instead.
 */
static int64_t next_timer(struct dw_sink *s, int64_t now)
{
    int64_t t = INT64_MAX;
    if (s->queue == NULL)
        return t;
    if (dw_auth_token(s->auth, now) == NULL) {
        if (!s->token_in_flight)
            t = s->token_not_before > now ? s->token_not_before : now;
        return t;
    }
    int64_t renew = dw_auth_renew_at(s->auth);
    if (renew && !s->token_in_flight)
        t = renew > s->token_not_before ? renew : s->token_not_before;
    if (now < s->paused_until)
        return s->paused_until < t ? s->paused_until : t;
    struct req *q;
    DL_FOREACH(s->queue, q)
    {
        if (q->not_before > now && q->not_before < t)
            t = q->not_before;
    }
    return t;
}

/* One turn of the engine; results are delivered only when deliver is set. */
static dw_rc drive(struct dw_sink *s, struct curl_waitfd *extra, unsigned nextra, int timeout_ms,
                   bool do_deliver)
{
    int running = 0;
    plan(s);
    start_requests(s);
    curl_multi_perform(s->multi, &running);
    /* Something finished already: hand it on rather than wait for more. */
    if (process_done(s) == 0 && !(do_deliver && s->done)) {
        int64_t now = dw_clock_ms();
        int64_t t = next_timer(s, now);
        int wait = timeout_ms;
        if (t != INT64_MAX && t - now < wait)
            wait = t - now < 0 ? 0 : (int)(t - now);
        CURLMcode mc = curl_multi_poll(s->multi, extra, nextra, wait, NULL);
        if (mc != CURLM_OK && mc != CURLM_UNRECOVERABLE_POLL) {
            DW_ERROR("curl_multi_poll failed: %s", curl_multi_strerror(mc));
            return DW_ERR_IO;
        }
        curl_multi_perform(s->multi, &running);
        process_done(s);
    }
    plan(s);
    start_requests(s);
    s->stats.in_flight = s->in_flight;
    s->stats.concurrency = dw_aimd_limit(&s->aimd);
    s->stats.throttled_until_ms = s->paused_until > dw_clock_ms() ? s->paused_until : 0;
    if (do_deliver)
        deliver(s);
    return DW_OK;
}

/* --- atomic groups ------------------------------------------------------------------- */

/*
 * The writes of one dw_sink_submit_atomic() call. Its rows resolve like any other; once all
 * are ready, plan_atomic() sends them as one changeset (REQ_CHANGESET). A group lives only
 * while none of its rows is finished: whoever finishes one (a failed resolution swept by
 * plan_atomic(), the changeset's answer, give_up()) finishes the others at once and frees
 * the group, before deliver() can free a row it points to.
 */
struct atomic {
    struct atomic *prev, *next;
    struct row **rows; /* in changeset order; NULL where a row finished alone (a no-op) */
    char **ids;        /* dw_dvkey_target_id() of each row, to find parents by their key */
    size_t n;
    bool sent;      /* a changeset request holds the rows */
    bool reresolve; /* resolve the rows again before the changeset goes again */
    bool refreshed; /* cached ids were already forgotten once after a 404 */
    int attempts;   /* of the changeset, kept across re-resolution */
};

/*
 * ref_guid() for a row of an atomic group: a parent that does not exist yet but is written
 * earlier in the group is named by its Content-ID ("$n"), which Dataverse resolves inside
 * the changeset. A parent that exists keeps its GUID, so an existing child stays addressed
 * by its key.
 */
static enum res atomic_ref_guid(struct dw_sink *s, struct row *r, const json_t *ref,
                                const char *set, const json_t *rkey, char **guid)
{
    struct guid_entry *g = guid_get(s, set, rkey);
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
    return ref_guid(s, r, set, rkey, false, guid);
}

/* Whether a resolved key names its parent by Content-ID (see atomic_ref_guid()). */
static bool names_content_id(const json_t *rkey)
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

static void atomic_free(struct dw_sink *s, struct atomic *a)
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
static void atomic_fail(struct dw_sink *s, struct atomic *a, struct row *culprit,
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
            finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, f->http, "", msg);
        else
            finish_row(s, r, f->status, f->cls, f->http, f->code, f->message);
    }
    free(name);
    free(msg);
    atomic_free(s, a);
}

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
        atomic_free(s, a);
    } else {
        struct req *q = build_batch(s, rows, n, ids);
        q->atomic = a;
        q->attempts = a->attempts;
        a->sent = true;
        enqueue(s, q);
    }
    free(rows);
    free(ids);
}

/*
 * Moves atomic groups on: a changeset due again after a lost answer gives its rows back to
 * resolution; a group with a row that failed resolution fails as a whole; a group whose
 * rows are all ready is sent.
 */
static void plan_atomic(struct dw_sink *s)
{
    int64_t now = dw_clock_ms();
    struct req *q, *qt;
    DL_FOREACH_SAFE(s->queue, q, qt)
    {
        if (q->kind != REQ_CHANGESET || !q->atomic->reresolve || q->not_before > now)
            continue;
        DL_DELETE(s->queue, q);
        q->atomic->reresolve = false;
        q->atomic->sent = false;
        q->atomic->attempts = q->attempts;
        for (size_t i = 0; i < q->nrows; i++)
            row_move(s, q->rows[i], ROW_RESOLVING);
        req_free(q);
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
            atomic_fail(s, a, failed, &failed->res);
        else if (ready)
            queue_changeset(s, a);
    }
}

/* The row of a changeset that a failed part's Content-ID names, or NULL. */
static struct row *changeset_culprit(const struct req *q, const char *content_id)
{
    char *end = NULL;
    unsigned long id = content_id ? strtoul(content_id, &end, 10) : 0;
    if (id == 0 || end == content_id || *end != '\0' || id > q->atomic->n)
        return NULL;
    for (size_t i = 0; i < q->nrows; i++)
        if (q->rows[i]->atomic_index == id - 1)
            return q->rows[i];
    return NULL;
}

/* Puts a sent group's rows back to be sent again as a new changeset. */
static void changeset_again(struct dw_sink *s, struct req *q, enum row_where to)
{
    q->atomic->sent = false;
    q->atomic->attempts = q->attempts;
    for (size_t i = 0; i < q->nrows; i++)
        row_move(s, q->rows[i], to);
    req_free(q);
}

/*
 * The answer to a changeset: every part 2xx applies every row; otherwise Dataverse rolled
 * all back and answered with the failed part alone, which names its row by Content-ID.
 */
static void complete_changeset(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
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
    if (parsed && bad == NULL && status >= 200 && status <= 299 && br.nparts == q->nrows) {
        for (size_t i = 0; i < q->nrows; i++)
            finish_row(s, q->rows[i], DW_WRITE_APPLIED, DW_ERRCLASS_NONE, br.parts[i].status, "",
                       "");
        atomic_free(s, q->atomic);
        req_free(q);
        goto out;
    }
    if (bad) { /* (only from a parsed answer, so the transfer itself succeeded) */
        status = bad->status;
        culprit = changeset_culprit(q, bad->content_id);
        parse_error(bad->body, &code, &msg);
        if (bad->retry_after && q->retry_after == NULL)
            q->retry_after = dw_strdup(bad->retry_after);
    } else {
        transfer_error(q, cc, http, &code, &msg);
    }
    struct dw_classification c =
        dw_classify(culprit ? culprit->op : DW_WRITE_UPSERT, cc, status, code);
    if (c.verdict == DW_VERDICT_OK && culprit) {
        /* A delete of a row that is not there is done, but it failed the changeset: send
         * the others again without it. */
        struct atomic *a = q->atomic;
        a->rows[culprit->atomic_index] = NULL;
        culprit->atomic = NULL;
        finish_row(s, culprit, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, status, "", "");
        size_t keep = 0;
        for (size_t i = 0; i < q->nrows; i++)
            if (q->rows[i] != culprit)
                q->rows[keep++] = q->rows[i];
        q->nrows = keep;
        changeset_again(s, q, ROW_READY);
    } else if (c.verdict == DW_VERDICT_OK) {
        /* A 2xx whose parts do not add up: nothing can be assumed, so it is sent again. */
        struct dw_classification bad_answer = {DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT, false,
                                               false};
        DW_WARN("changeset of %zu rows answered HTTP %ld with %zu parts: sending it again",
                q->nrows, http, br.nparts);
        retry(s, q, &bad_answer, status, "", "malformed changeset response");
    } else if (c.verdict == DW_VERDICT_RENEW_AUTH && !q->auth_retried) {
        q->auth_retried = true;
        if (q->token_gen == dw_auth_generation(s->auth))
            dw_auth_invalidate(s->auth);
        req_reset_transfer(q);
        enqueue(s, q);
    } else if (c.verdict == DW_VERDICT_RETRY || c.verdict == DW_VERDICT_RENEW_AUTH) {
        /* A lost answer may hide a commit: rows created by POST are looked up again
         * before the changeset goes again (they are then updated by key). */
        for (size_t i = 0; i < q->nrows; i++)
            q->atomic->reresolve |= q->rows[i]->post;
        char *m = cc != CURLE_OK ? dw_strdup(msg) : dw_asprintf("HTTP %d %s", status, msg);
        retry(s, q, &c, status, code, m);
        free(m);
    } else if (status == 404 && culprit && !q->atomic->refreshed && forget_cache(s, culprit)) {
        /* A parent's cached id may be stale (deleted and created again): once more. */
        q->atomic->refreshed = true;
        changeset_again(s, q, ROW_RESOLVING);
    } else {
        struct failure f = {DW_WRITE_REJECTED, c.error_class, status, code, msg};
        char *unnamed = NULL;
        if (culprit == NULL) {
            unnamed = dw_asprintf("rolled back: a write in the same atomic group failed "
                                  "(Dataverse did not say which): %s",
                                  msg);
            f.message = unnamed;
            DW_WARN("atomic group of %zu writes not applied: HTTP %d %s %s", q->nrows, status, code,
                    msg);
        }
        struct atomic *a = q->atomic;
        req_free(q);
        atomic_fail(s, a, culprit, &f);
        free(unnamed);
    }
out:
    free(code);
    free(msg);
    dw_batch_response_cleanup(&br);
}

/* --- public API ------------------------------------------------------------------------ */

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
        row_free(r);
    }
}

static void free_req_and_rows(struct req *q)
{
    for (size_t i = 0; i < q->nrows; i++)
        row_free(q->rows[i]);
    req_free(q);
}

static void atomic_free(struct dw_sink *s, struct atomic *a);

void dw_sink_free(struct dw_sink *s)
{
    if (s == NULL)
        return;
    /* Groups first: freeing one touches its rows, which go next. */
    while (s->atomics)
        atomic_free(s, s->atomics);
    struct req *q, *qt;
    DL_FOREACH_SAFE(s->transfers, q, qt)
    {
        DL_DELETE(s->transfers, q);
        curl_multi_remove_handle(s->multi, q->easy);
        if (q->kind != REQ_GET)
            free_req_and_rows(q);
    }
    DL_FOREACH_SAFE(s->queue, q, qt)
    {
        DL_DELETE(s->queue, q);
        if (q->kind != REQ_GET)
            free_req_and_rows(q);
    }
    free_rows(&s->resolving);
    free_rows(&s->ready);
    free_rows(&s->done);
    struct guid_entry *g, *gt;
    HASH_ITER(hh, s->guids, g, gt)
    {
        HASH_DEL(s->guids, g);
        guid_entry_free(g);
    }
    free(s->to_lookup.v);
    free(s->negatives.v);
    struct set_entry *e, *et;
    HASH_ITER(hh, s->sets, e, et)
    {
        HASH_DEL(s->sets, e);
        free(e->set);
        free(e->pk);
        failure_cleanup(&e->fail);
        free(e);
    }
    struct bulk_entry *b, *bt;
    HASH_ITER(hh, s->bulks, b, bt)
    {
        HASH_DEL(s->bulks, b);
        free(b->name);
        free(b);
    }
    if (s->multi)
        curl_multi_cleanup(s->multi);
    dw_auth_free(s->auth);
    free(s->api);
    free(s->api_path);
    dw_buf_cleanup(&s->scratch);
    free(s);
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
    else if (!dw_dvkey_names_ok(w->key) || !dw_dvkey_names_ok(w->body))
        *why = "a key attribute or a referenced entity set is not an identifier";
    else if (w->op != DW_WRITE_DELETE && !json_is_object(w->body))
        *why = "body missing or not an object";
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
        r->body = w->op == DW_WRITE_DELETE ? NULL : w->body;
        if (w->op == DW_WRITE_DELETE)
            json_decref(w->body);
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

dw_rc dw_sink_run(struct dw_sink *s, struct curl_waitfd *extra, unsigned nextra, int timeout_ms)
{
    return drive(s, extra, nextra, timeout_ms, true);
}

/* curl_multi_wakeup() only write()s to curl's wake-up socket pair, which a signal handler
 * may do. */
void dw_sink_wakeup(struct dw_sink *s)
{
    curl_multi_wakeup(s->multi);
}

void dw_sink_get_stats(const struct dw_sink *s, struct dw_sink_stats *out)
{
    *out = s->stats;
}

/* Runs one GET to completion without delivering write results. */
static dw_rc blocking_get(struct dw_sink *s, char *url, json_t **out)
{
    struct req *q = req_new(REQ_GET, "GET", url);
    dw_rc rc = DW_OK;
    enqueue(s, q);
    while (!q->done) {
        if (s->token_config_error && !s->token_in_flight && q->easy == NULL &&
            dw_auth_token(s->auth, dw_clock_ms()) == NULL) {
            DW_ERROR("cannot obtain an access token from \"%s\" (see the error above)",
                     dw_auth_token_url(s->auth));
            DL_DELETE(s->queue, q);
            rc = DW_ERR_AUTH;
            goto out;
        }
        if ((rc = drive(s, NULL, 0, 1000, false)) != DW_OK)
            goto out;
    }
    if ((rc = q->rc) != DW_OK)
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
    req_free(q);
    return rc;
}

dw_rc dw_sink_whoami(struct dw_sink *s, char **user_id)
{
    json_t *doc = NULL;
    dw_rc rc = blocking_get(s, api_url(s, "WhoAmI"), &doc);
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

dw_rc dw_sink_get_json(struct dw_sink *s, const char *path_and_query, json_t **out)
{
    return blocking_get(s, api_url(s, "%s", path_and_query), out);
}

/*
 * The parent-id cache: the GUID of a row found by (entity set, resolved key), asked with
 * $filter lookups that share one query for up to a hundred keys of one set, the primary id
 * attribute of each set (from EntityDefinitions), and matching a shared answer's rows back
 * to their keys as Dataverse's collation compares them. Bounded: the oldest found ids are
 * forgotten, a miss or failure is kept only for the plan pass that saw it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/dvkey.h"
#include "dwasync/log.h"

/* GUID lookups asked in one $filter query ("(key1) or (key2) or ..."), and the longest
 * filter such a query may carry (Dataverse accepts URLs up to 32 KB; this stays well below). */
#define LOOKUP_BATCH   100
#define LOOKUP_URL_MAX 16000
/* Cached GUIDs kept; the oldest are forgotten beyond this (asked again when needed, a hundred
 * to a query). An entry is a few hundred bytes: its id, set name, GUID and hash handle. */
#define GUID_CACHE_MAX 10000

void dw_sink_guid_entry_free(struct guid_entry *g)
{
    free(g->id);
    free(g->set);
    json_decref(g->rkey);
    free(g->guid);
    dw_sink_failure_cleanup(&g->fail);
    free(g);
}

/* Forgets what is known of an entity set (a failure, asked again next time; or all at the end). */
void dw_sink_set_entry_drop(struct dw_sink *s, struct set_entry *e)
{
    HASH_DEL(s->sets, e);
    free(e->set);
    free(e->pk);
    dw_sink_failure_cleanup(&e->fail);
    free(e);
}

/* Drops a found (ST_OK) entry from the cache. */
static void entry_forget(struct dw_sink *s, struct guid_entry *g)
{
    HASH_DEL(s->guids, g);
    s->guids_ok--;
    dw_sink_guid_entry_free(g);
}

/* Forgets the cached ids a row relied on (after a 404); returns how many there were. An id
 * the cache no longer holds (forgotten as the oldest) counts too: resolving the row again
 * asks for it afresh. */
size_t dw_sink_forget_cache(struct dw_sink *s, struct row *r)
{
    size_t n = 0;
    for (size_t at = 0; at < r->used_len; at += strlen(r->used + at) + 1) {
        const char *id = r->used + at;
        struct guid_entry *g = NULL;
        HASH_FIND_STR(s->guids, id, g);
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
void dw_sink_trim_cache(struct dw_sink *s)
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
bool dw_sink_refresh_ids(struct dw_sink *s, struct row *r)
{
    if (r->refreshed || dw_sink_forget_cache(s, r) == 0)
        return false;
    r->refreshed = true;
    dw_sink_row_move(s, r, ROW_RESOLVING);
    return true;
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

struct guid_entry *dw_sink_guid_get(struct dw_sink *s, const char *set, const json_t *rkey)
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

void dw_sink_fail_entry(struct dw_sink *s, struct guid_entry *g, const struct failure *f)
{
    entry_negative(s, g, ST_FAILED);
    dw_sink_failure_set(&g->fail, f->status, f->cls, f->http, f->code, f->message);
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

static int cmp_entries_by_set(const void *a, const void *b)
{
    const struct guid_entry *x = *(struct guid_entry *const *)a;
    const struct guid_entry *y = *(struct guid_entry *const *)b;
    return strcmp(x->set, y->set);
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
    struct req *q = dw_sink_req_new(REQ_LOOKUP, "GET", dw_sink_api_url(s, "%s", dw_buf_str(&url)));
    struct lookup_req *l = as_lookup(q);
    l->entries = dw_malloc(taken * sizeof *l->entries);
    l->nentries = taken;
    for (size_t i = 0; i < taken; i++) {
        l->entries[i] = entries[i];
        entries[i]->state = ST_INFLIGHT;
    }
    dw_sink_enqueue(s, q);
    json_decref(select);
    dw_buf_cleanup(&filter);
    dw_buf_cleanup(&clause);
    dw_buf_cleanup(&url);
    return taken;
}

static void queue_setinfo(struct dw_sink *s, struct set_entry *e)
{
    struct req *q = dw_sink_filter_get(
        s, REQ_SETINFO, "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute",
        "EntitySetName eq ", e->set);
    as_setinfo(q)->entry = e;
    e->state = ST_INFLIGHT;
    dw_sink_enqueue(s, q);
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
void dw_sink_advance_entries(struct dw_sink *s)
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
            dw_sink_fail_entry(s, g, &e->fail);
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

void dw_sink_drop_negative_entries(struct dw_sink *s)
{
    struct entry_list *l = &s->negatives;
    size_t keep = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct guid_entry *g = l->v[i];
        if (g->neg_pass < s->pass) {
            HASH_DEL(s->guids, g);
            dw_sink_guid_entry_free(g);
        } else {
            l->v[keep++] = g;
        }
    }
    l->n = keep;
    /* A set whose metadata could not be read is asked again next time. */
    struct set_entry *e, *etmp;
    HASH_ITER(hh, s->sets, e, etmp)
    {
        if (e->state == ST_FAILED)
            dw_sink_set_entry_drop(s, e);
    }
}

/*
 * Reads the GUIDs a successful lookup found. A lone entry takes the first row. Shared
 * entries take the row that carries their key; an entry no row matches was not found,
 * unless some row matched no entry either (Dataverse compared in a way key_matches() did
 * not foresee), in which case it is asked again alone rather than reported missing.
 */
void dw_sink_settle_lookup(struct dw_sink *s, struct lookup_req *l, const json_t *values)
{
    struct set_entry *e = NULL;
    HASH_FIND_STR(s->sets, l->entries[0]->set, e);
    const char *pk = e ? e->pk : NULL;
    size_t nrows = json_array_size(values);
    bool *claimed = dw_calloc(nrows ? nrows : 1, sizeof *claimed);
    struct guid_entry **unmatched = dw_malloc(l->nentries * sizeof *unmatched);
    size_t nunmatched = 0;
    for (size_t i = 0; i < l->nentries; i++) {
        struct guid_entry *g = l->entries[i];
        const char *guid = NULL;
        for (size_t j = 0; pk && j < nrows; j++) {
            const json_t *row = json_array_get(values, j);
            if (l->nentries > 1 && !key_matches(g->rkey, row))
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
        if (stray && l->nentries > 1) {
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

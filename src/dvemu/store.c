/* dvemu's row store: rows by id, one index per alternate key, the write history, and the
 * undo log that makes changesets and bulk actions all-or-nothing. Every function here runs
 * under emu->store_lock (the caller holds it). */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "dwasync/alloc.h"
#include "dwasync/hash.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "internal.h"

void emu_err_set(struct emu_err *e, int status, const char *code, const char *fmt, ...)
{
    emu_err_clear(e);
    e->status = status;
    e->code = dw_strdup(code);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e->message, fmt, ap) < 0)
        dw_oom(0);
    va_end(ap);
}

void emu_err_clear(struct emu_err *e)
{
    free(e->code);
    free(e->message);
    e->code = e->message = NULL;
    e->status = 0;
}

/* xoshiro256**: the random bits of new ids. An id needs to be unique, not secret, so
 * OpenSSL seeds one generator per thread and a call costs nanoseconds, not a lock and a
 * DRBG round (which made id generation a twentieth of dvemu's time). */
static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(void)
{
    static _Thread_local uint64_t st[4];
    static _Thread_local bool seeded;
    if (!seeded) {
        if (RAND_bytes((unsigned char *)st, sizeof st) != 1)
            dw_oom(sizeof st); /* no entropy: nothing sensible left to do */
        seeded = true;
    }
    uint64_t result = rotl(st[1] * 5, 7) * 9, t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

void emu_new_guid(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    uint64_t hi = next_random(), lo = next_random();
    memcpy(b, &hi, 8);
    memcpy(b + 8, &lo, 8);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 1 */
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

struct emu_row *emu_row_find_id(struct emu_table *t, const char *id)
{
    struct emu_row *r = NULL;
    char low[37];
    size_t n = strlen(id);
    if (n != 36)
        return NULL;
    for (size_t i = 0; i <= 36; i++)
        low[i] = (char)tolower((unsigned char)id[i]);
    HASH_FIND_STR(t->rows, low, r);
    return r;
}

/* Appends one key value in the form the index compares (strings fold case and lose
 * trailing spaces, as SQL Server's collation compares them) to out[*n..size); false when
 * it does not fit. Fixed buffers, not heap ones: this runs several times for every row
 * written. */
static bool key_value(char *out, size_t size, size_t *n, const json_t *v)
{
    char num[40];
    const char *s = num;
    char tag;
    if (json_is_string(v)) {
        tag = 's';
        s = json_string_value(v);
    } else if (json_is_number(v)) {
        tag = 'n';
        snprintf(num, sizeof num, "%.17g", json_number_value(v));
    } else if (json_is_boolean(v)) {
        tag = 'b';
        num[0] = json_is_true(v) ? '1' : '0';
        num[1] = '\0';
    } else {
        return false;
    }
    size_t len = strlen(s);
    while (tag == 's' && len > 0 && s[len - 1] == ' ')
        len--;
    if (*n + len + 3 > size)
        return false;
    out[(*n)++] = tag;
    for (size_t i = 0; i < len; i++)
        out[(*n)++] = (char)tolower((unsigned char)s[i]);
    out[(*n)++] = '\x1f';
    out[*n] = '\0';
    return true;
}

bool emu_key_string(const struct emu_table *t, const struct emu_key *k, const json_t *row,
                    char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < k->nattrs; i++) {
        const struct emu_attr *a = emu_attr_find(t, k->attrs[i]);
        const json_t *v = json_object_get(row, a->prop);
        /* A row with a null key part is not in that key's index. */
        if (v == NULL || json_is_null(v) || !key_value(out, size, &n, v))
            return false;
    }
    return true;
}

struct emu_row *emu_row_find(struct emu_table *t, const struct dw_dvemu_key *key, bool *by_alt,
                             struct emu_err *err)
{
    *by_alt = false;
    if (key->nparts == 1 &&
        (key->parts[0].name == NULL || strcmp(key->parts[0].name, t->primary_id) == 0)) {
        const char *id = json_string_value(key->parts[0].value);
        if (id == NULL || !dw_dvemu_is_guid(id, strlen(id))) {
            emu_err_set(err, 400, "0x80060888", "Bad Request - Error in query syntax.");
            return NULL;
        }
        struct emu_row *r = emu_row_find_id(t, id);
        if (r == NULL)
            emu_err_set(err, 404, "0x80040217", "%s With Id = %s Does Not Exist", t->logical, id);
        return r;
    }
    *by_alt = true;
    for (size_t ki = 0; ki < t->nkeys; ki++) {
        const struct emu_key *k = &t->keys[ki];
        if (k->nattrs != key->nparts)
            continue;
        /* The URL may name the parts in any order: build the index text in key order. */
        char ks[EMU_KEY_MAX];
        size_t n = 0;
        bool match = true;
        for (size_t j = 0; j < k->nattrs && match; j++) {
            const struct emu_attr *a = emu_attr_find(t, k->attrs[j]);
            const json_t *v = NULL;
            for (size_t i = 0; i < key->nparts; i++)
                if (key->parts[i].name && strcmp(key->parts[i].name, a->prop) == 0)
                    v = key->parts[i].value;
            match = v != NULL && key_value(ks, sizeof ks, &n, v);
        }
        if (!match)
            continue;
        struct emu_kidx *e = NULL;
        HASH_FIND_STR(t->kidx[ki], ks, e);
        if (e == NULL)
            emu_err_set(err, 404, "0x80048d02",
                        "A record with the specified key values does not exist in %s entity",
                        t->logical);
        return e ? e->row : NULL;
    }
    emu_err_set(err, 400, "0x80060888",
                "The key in the request URI is not valid for resource "
                "'Microsoft.Dynamics.CRM.%s'. Ensure that the names and number of key "
                "properties match the declared or alternate key properties for the resource "
                "'Microsoft.Dynamics.CRM.%s'.",
                t->logical, t->logical);
    return NULL;
}

struct emu_row *emu_key_conflict(struct emu_table *t, const json_t *data, const char *id,
                                 const struct emu_key **which)
{
    for (size_t ki = 0; ki < t->nkeys; ki++) {
        char ks[EMU_KEY_MAX];
        struct emu_kidx *e = NULL;
        if (emu_key_string(t, &t->keys[ki], data, ks, sizeof ks))
            HASH_FIND_STR(t->kidx[ki], ks, e);
        if (e && strcmp(e->row->id, id) != 0) {
            *which = &t->keys[ki];
            return e->row;
        }
    }
    return NULL;
}

static void index_remove(struct emu_table *t, size_t ki, struct emu_row *r)
{
    t->gen++;
    char ks[EMU_KEY_MAX];
    struct emu_kidx *e = NULL;
    if (emu_key_string(t, &t->keys[ki], r->data, ks, sizeof ks))
        HASH_FIND_STR(t->kidx[ki], ks, e);
    if (e && e->row == r) {
        HASH_DEL(t->kidx[ki], e);
        free(e->k);
        free(e);
    }
}

static void index_add(struct emu_table *t, size_t ki, struct emu_row *r)
{
    char ks[EMU_KEY_MAX];
    if (!emu_key_string(t, &t->keys[ki], r->data, ks, sizeof ks))
        return;
    struct emu_kidx *e = NULL;
    HASH_FIND_STR(t->kidx[ki], ks, e);
    if (e) {
        /* Callers check conflicts first; keep the index consistent regardless. */
        e->row = r;
        return;
    }
    e = dw_calloc(1, sizeof *e);
    e->k = dw_strdup(ks);
    e->row = r;
    HASH_ADD_KEYPTR(hh, t->kidx[ki], e->k, strlen(e->k), e);
}

/* Whether the row's value for key ki differs between two versions of the row. */
static bool key_changed(struct emu_table *t, size_t ki, const json_t *a, const json_t *b)
{
    char ka[EMU_KEY_MAX], kb[EMU_KEY_MAX];
    bool ha = emu_key_string(t, &t->keys[ki], a, ka, sizeof ka);
    bool hb = emu_key_string(t, &t->keys[ki], b, kb, sizeof kb);
    return ha != hb || (ha && strcmp(ka, kb) != 0);
}

/* Replaces the row's data without history or undo (used by put and rollback). */
static void row_set(struct emu_table *t, const char *id, json_t *data)
{
    struct emu_row *r = NULL;
    HASH_FIND_STR(t->rows, id, r);
    if (r) {
        /* An update rarely changes key values: keep those index entries as they are. */
        for (size_t ki = 0; ki < t->nkeys; ki++)
            if (data == NULL || key_changed(t, ki, r->data, data))
                index_remove(t, ki, r);
        json_t *old = r->data;
        if (data == NULL) {
            t->gen++;
            json_decref(old);
            HASH_DEL(t->rows, r);
            free(r);
            return;
        }
        r->data = json_incref(data);
        for (size_t ki = 0; ki < t->nkeys; ki++)
            if (key_changed(t, ki, old, data))
                index_add(t, ki, r);
        json_decref(old);
        return;
    }
    if (data == NULL)
        return;
    r = dw_calloc(1, sizeof *r);
    memcpy(r->id, id, 37);
    r->data = json_incref(data);
    HASH_ADD_STR(t->rows, id, r);
    for (size_t ki = 0; ki < t->nkeys; ki++)
        index_add(t, ki, r);
}

void emu_row_finish(struct emu *emu, const struct emu_table *t, json_t *row, const char *id,
                    bool created)
{
    json_object_set_new(row, t->primary_id, json_string(id));
    if (created)
        json_object_set(row, "createdon", emu->now_json);
    json_object_set(row, "modifiedon", emu->now_json);
    json_object_set_new(row, "versionnumber", json_integer((json_int_t)++emu->version));
}

void emu_row_put(struct emu *emu, struct emu_table *t, const char *id, json_t *data, const char *op)
{
    struct emu_row *old = NULL;
    emu->rows_put++;
    HASH_FIND_STR(t->rows, id, old);
    if (emu->in_txn) {
        if (emu->nundo == emu->undo_cap) {
            emu->undo_cap = emu->undo_cap ? emu->undo_cap * 2 : 64;
            emu->undo = dw_realloc(emu->undo, emu->undo_cap * sizeof *emu->undo);
        }
        struct emu_undo *u = &emu->undo[emu->nundo++];
        u->table = t;
        memcpy(u->id, id, 37);
        u->old = old ? json_incref(old->data) : NULL;
    }
    json_t *hist_row = data ? data : (old ? old->data : NULL);
    emu->seq++;
    if (emu->opt->history_max > 0) {
        if (emu->nhist == emu->opt->history_max) {
            emu->hist_dropped++;
        } else {
            if (emu->nhist == emu->hist_cap) {
                emu->hist_cap = emu->hist_cap ? emu->hist_cap * 2 : 1024;
                emu->hist = dw_realloc(emu->hist, emu->hist_cap * sizeof *emu->hist);
            }
            struct emu_hist *h = &emu->hist[emu->nhist++];
            h->seq = emu->seq;
            h->table = t;
            memcpy(h->id, id, 37);
            h->op = op;
            h->row = json_incref(hist_row);
        }
    }
    t->rows_written++;
    row_set(t, id, data);
}

void emu_txn_begin(struct emu *emu)
{
    emu->in_txn = true;
    emu->nundo = 0;
    emu->txn_hist_mark = emu->nhist;
    emu->txn_seq_mark = emu->seq;
}

void emu_txn_commit(struct emu *emu)
{
    for (size_t i = 0; i < emu->nundo; i++)
        json_decref(emu->undo[i].old);
    emu->nundo = 0;
    emu->in_txn = false;
}

void emu_txn_rollback(struct emu *emu)
{
    for (size_t i = emu->nundo; i-- > 0;) {
        struct emu_undo *u = &emu->undo[i];
        row_set(u->table, u->id, u->old);
        json_decref(u->old);
        u->table->rows_written--;
    }
    emu->nundo = 0;
    /* Rolled-back writes never happened: drop them from the history too. */
    while (emu->nhist > emu->txn_hist_mark)
        json_decref(emu->hist[--emu->nhist].row);
    emu->seq = emu->txn_seq_mark;
    emu->in_txn = false;
}

static void table_clear(struct emu_table *t)
{
    struct emu_row *r, *tmp;
    for (size_t ki = 0; ki < t->nkeys; ki++) {
        struct emu_kidx *e, *etmp;
        HASH_ITER(hh, t->kidx[ki], e, etmp)
        {
            HASH_DEL(t->kidx[ki], e);
            free(e->k);
            free(e);
        }
    }
    HASH_ITER(hh, t->rows, r, tmp)
    {
        HASH_DEL(t->rows, r);
        json_decref(r->data);
        free(r);
    }
    t->rows_written = 0;
    t->gen++;
}

void emu_store_reset(struct emu *emu)
{
    for (size_t i = 0; i < emu->ntables; i++)
        table_clear(&emu->tables[i]);
    for (size_t i = 0; i < emu->nhist; i++)
        json_decref(emu->hist[i].row);
    emu->nhist = 0;
    emu->hist_dropped = 0;
    emu->seq = 0;
}

/*
 * Binds repeat: most rows of a bulk request name the same company, currency or group, and
 * finding each one again (parse the reference, build the index text, probe the index) was
 * a tenth of dvemu's time. A bind that found its row is remembered by its text, for as long
 * as its table's generation stays: no row of it deleted, no key value of it changed (rows
 * themselves never move). Direct-mapped; a miss only costs the lookup done anyway.
 */
#define BIND_MEMO_SLOTS 1024

struct emu_bind_memo {
    char *ref;
    struct emu_table *table;
    struct emu_row *row;
    uint64_t gen; /* the table's generation when found */
};

static struct emu_bind_memo *bind_slot(struct emu *emu, const char *ref)
{
    if (emu->bind_memo == NULL)
        emu->bind_memo = dw_calloc(BIND_MEMO_SLOTS, sizeof *emu->bind_memo);
    return &emu->bind_memo[dw_fnv1a(DW_FNV1A_BASIS, ref, strlen(ref)) % BIND_MEMO_SLOTS];
}

struct emu_row *emu_bind_memo_find(struct emu *emu, const char *ref, struct emu_table **table)
{
    struct emu_bind_memo *m = bind_slot(emu, ref);
    if (m->ref == NULL || m->gen != m->table->gen || strcmp(m->ref, ref) != 0)
        return NULL;
    *table = m->table;
    return m->row;
}

void emu_bind_memo_keep(struct emu *emu, const char *ref, struct emu_table *table,
                        struct emu_row *row)
{
    struct emu_bind_memo *m = bind_slot(emu, ref);
    free(m->ref);
    *m = (struct emu_bind_memo){dw_strdup(ref), table, row, table->gen};
}

void emu_store_free(struct emu *emu)
{
    emu_store_reset(emu);
    for (size_t i = 0; emu->bind_memo && i < BIND_MEMO_SLOTS; i++)
        free(emu->bind_memo[i].ref);
    free(emu->bind_memo);
    emu->bind_memo = NULL;
    free(emu->hist);
    free(emu->undo);
    json_decref(emu->now_json);
    emu->now_json = NULL;
    emu->hist = NULL;
    emu->undo = NULL;
}

json_t *emu_row_public(const struct emu_table *t, const json_t *row)
{
    json_t *o = json_object();
    json_t *ver = json_object_get(row, "versionnumber");
    char *etag = dw_asprintf("W/\"%lld\"", (long long)json_integer_value(ver));
    json_object_set_new(o, "@odata.etag", json_string(etag));
    free(etag);
    json_object_update(o, (json_t *)row);
    /* A column with no value is there, as null ("Select columns": every column asked for
     * comes back, and a row read without $select has all of them). */
    for (size_t i = 0; i < t->nattrs; i++)
        if (json_object_get(o, t->attrs[i].prop) == NULL)
            json_object_set_new(o, t->attrs[i].prop, json_null());
    return o;
}

dw_rc emu_state_save(struct emu *emu, const char *file)
{
    json_t *root = json_object();
    json_t *tables = json_object();
    for (size_t i = 0; i < emu->ntables; i++) {
        struct emu_table *t = &emu->tables[i];
        json_t *rows = json_array();
        for (struct emu_row *r = t->rows; r; r = r->hh.next)
            json_array_append(rows, r->data);
        json_object_set_new(tables, t->set, rows);
    }
    json_object_set_new(root, "tables", tables);
    json_object_set_new(root, "version", json_integer((json_int_t)emu->version));
    char *tmp = dw_asprintf("%s.tmp", file);
    dw_rc rc = DW_OK;
    char *text = dw_json_dumps(root);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fputs(text, f) < 0 || fflush(f) != 0) {
        DW_ERROR("cannot write state file \"%s\"", tmp);
        rc = DW_ERR_IO;
    }
    if (f && fclose(f) != 0)
        rc = DW_ERR_IO;
    if (rc == DW_OK && rename(tmp, file) != 0) {
        DW_ERROR("cannot rename \"%s\" to \"%s\"", tmp, file);
        rc = DW_ERR_IO;
    }
    free(text);
    free(tmp);
    json_decref(root);
    return rc;
}

dw_rc emu_state_load(struct emu *emu, const char *file)
{
    json_error_t jerr;
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return DW_OK; /* no state yet: start empty */
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    if (root == NULL) {
        DW_ERROR("cannot read state file \"%s\": %s", file, jerr.text);
        return DW_ERR_IO;
    }
    const char *set;
    json_t *rows;
    json_object_foreach(json_object_get(root, "tables"), set, rows)
    {
        struct emu_table *t = emu_table_by_set(emu, set, strlen(set));
        if (t == NULL) {
            DW_WARN("state file \"%s\": table \"%s\" is not in the metadata; skipped", file, set);
            continue;
        }
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            const char *id = json_string_value(json_object_get(row, t->primary_id));
            if (id && dw_dvemu_is_guid(id, strlen(id)))
                row_set(t, id, row);
        }
    }
    emu->version = (uint64_t)json_integer_value(json_object_get(root, "version"));
    json_decref(root);
    return DW_OK;
}

/* A lookup that can name a row of some table, and what deleting that row does to it. */
struct lookup_ref {
    struct emu_table *table;
    const struct emu_attr *attr;
    enum emu_cascade cascade;
};

/* The lookups that can name a row of t (a new array of *n; NULL when none). */
static struct lookup_ref *lookups_to(struct emu *emu, const struct emu_table *t, size_t *n)
{
    struct lookup_ref *refs = NULL;
    *n = 0;
    for (size_t i = 0; i < emu->ntables; i++) {
        struct emu_table *u = &emu->tables[i];
        for (size_t k = 0; k < u->nattrs; k++) {
            const struct emu_attr *a = &u->attrs[k];
            for (size_t j = 0; j < a->ntargets; j++)
                if (strcmp(a->targets[j], t->logical) == 0) {
                    refs = dw_array_grow(refs, *n, sizeof *refs);
                    refs[(*n)++] = (struct lookup_ref){u, a, a->cascade_delete[j]};
                }
        }
    }
    return refs;
}

/* The ids of the rows (but id's own) whose lookup ref names id (a new array of *n). */
static char (*rows_naming(const struct lookup_ref *ref, const char *id, size_t *n))[37]
{
    char(*ids)[37] = NULL;
    *n = 0;
    for (const struct emu_row *r = ref->table->rows; r != NULL; r = r->hh.next) {
        const char *v = json_string_value(json_object_get(r->data, ref->attr->prop));
        if (v == NULL || strcasecmp(v, id) != 0 || strcmp(r->id, id) == 0)
            continue;
        ids = dw_array_grow(ids, *n, sizeof *ids);
        memcpy(ids[(*n)++], r->id, 37);
    }
    return ids;
}

/* Deleting nests no deeper than this (a chain of cascades; a cycle stops here). */
#define CASCADE_DEPTH_MAX 16

/* True, with err set, when deleting (t, id) would meet a Restrict relationship. */
static bool delete_restricted(struct emu *emu, const struct emu_table *t, const char *id, int depth,
                              struct emu_err *err)
{
    size_t nrefs;
    struct lookup_ref *refs = lookups_to(emu, t, &nrefs);
    bool restricted = false;
    for (size_t i = 0; i < nrefs && !restricted && depth <= CASCADE_DEPTH_MAX; i++) {
        if (refs[i].cascade == EMU_CASCADE_REMOVE_LINK)
            continue;
        size_t n;
        char(*ids)[37] = rows_naming(&refs[i], id, &n);
        restricted = n > 0 && refs[i].cascade == EMU_CASCADE_RESTRICT;
        for (size_t k = 0; k < n && !restricted; k++)
            restricted = delete_restricted(emu, refs[i].table, ids[k], depth + 1, err);
        free(ids);
    }
    free(refs);
    if (restricted && err->status == 0)
        emu_err_set(err, 400, "0x80040227",
                    "The object you tried to delete is associated with another object and "
                    "cannot be deleted.");
    return restricted;
}

/* Deletes (t, id) after what names it: deleted too (Cascade) or cleared (RemoveLink). */
static void delete_cascading(struct emu *emu, struct emu_table *t, const char *id, int depth)
{
    size_t nrefs;
    struct lookup_ref *refs = lookups_to(emu, t, &nrefs);
    for (size_t i = 0; i < nrefs; i++) {
        size_t n;
        char(*ids)[37] = rows_naming(&refs[i], id, &n);
        for (size_t k = 0; k < n; k++) {
            struct emu_row *r = emu_row_find_id(refs[i].table, ids[k]);
            if (r == NULL) /* gone with an earlier cascade */
                continue;
            if (refs[i].cascade == EMU_CASCADE_CASCADE && depth < CASCADE_DEPTH_MAX) {
                delete_cascading(emu, refs[i].table, ids[k], depth + 1);
                continue;
            }
            json_t *row = json_copy(r->data);
            json_object_set_new(row, refs[i].attr->prop, json_null());
            emu_row_finish(emu, refs[i].table, row, ids[k], false);
            emu_row_put(emu, refs[i].table, ids[k], row, "update");
            json_decref(row);
        }
        free(ids);
    }
    free(refs);
    emu_row_put(emu, t, id, NULL, "delete");
    emu_m2m_forget(emu, t, id);
}

dw_rc emu_row_delete(struct emu *emu, struct emu_table *t, const char *id, struct emu_err *err)
{
    if (delete_restricted(emu, t, id, 0, err))
        return DW_ERR_INVALID;
    delete_cascading(emu, t, id, 0);
    return DW_OK;
}

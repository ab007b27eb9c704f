/*
 * `dwasync verify` (see verify.h): both sides of each entity set page by page into temporary
 * tables, compared by the server into dwasync.verify_result; with repair, extras deleted and
 * the source rows of every drifted key queued as a keyed copy the daemon interleaves.
 */
#include "dwasync/verify.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/copyreq.h"
#include "dwasync/dvkey.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/pg.h"
#include "dwasync/sink.h"
#include "dwasync/snapshot.h"
#include "dwasync/values.h"

/* Rows sent to a temporary table in one statement. */
#define FLUSH_ROWS 500
/* Source keys in one repair copy request's condition. */
#define REPAIR_KEYS 200
/* Parent GUIDs asked for in one request ($filter of "or"s: about 60 bytes each in the URL). */
#define PARENTS_PER_REQUEST 40
/* Parent keys kept across pages; past this, the cache is emptied before the next page (a page
 * holds at most 5,000 rows, so memory stays bounded by a page's parents). */
#define PARENTS_CACHED 20000

struct verifier {
    const struct dw_verify_options *o;
    PGconn *control, *source;
    struct dw_job_maps *maps;
    const struct dw_jobdef *def; /* borrowed from maps */
    struct dw_types *types;
    struct dw_values_options values;
    struct dw_sink *sink;
    json_t *parents; /* entity set -> {GUID: key object, or null when no such row} */
    size_t nparents; /* entries in parents, bounded by PARENTS_CACHED */
    json_t *batch;   /* rows waiting for flush() */
    const char *batch_sql;
    const struct dw_tablemap *map; /* the map whose source rows are being read */
    json_t *key_columns;           /* its table's key column names */
    struct dw_verify_summary sum;
    dw_rc scan_rc;
    dw_rc parents_rc; /* a parent set that could not be read: the comparison is not trusted */
};

/* cdm_companies keyed by cdm_companycode: the parent of every company key part. */
static char company_set[] = DW_COMPANY_ENTITY_SET, company_name[] = DW_COMPANY_LOGICAL_NAME,
            company_key[] = DW_COMPANY_KEY;
static struct dw_keypart company_part = {
    .kind = DW_KEYPART_COLUMN, .target = company_key, .attr = company_key};
static const struct dw_lookup company_lookup = {company_set, company_name, &company_part, 1};

static const char expected_sql[] =
    "INSERT INTO vr_expected SELECT * FROM jsonb_to_recordset($1::jsonb)"
    " AS x(target_id text, map text, source_key jsonb, fields jsonb) ON CONFLICT DO NOTHING";
static const char actual_sql[] =
    "INSERT INTO vr_actual SELECT * FROM jsonb_to_recordset($1::jsonb)"
    " AS x(target_id text, dv_key jsonb, fields jsonb) ON CONFLICT DO NOTHING";

static dw_rc flush(struct verifier *v)
{
    if (json_array_size(v->batch) == 0)
        return DW_OK;
    char *text = dw_json_dumps(v->batch);
    const char *params[] = {text};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(v->control, "storing rows to compare", v->batch_sql, 1, params, &res);
    PQclear(res);
    free(text);
    json_array_clear(v->batch);
    return rc;
}

static dw_rc push(struct verifier *v, const char *sql, json_t *row)
{
    dw_rc rc = DW_OK;
    if (v->batch_sql != sql)
        rc = flush(v);
    v->batch_sql = sql;
    json_array_append_new(v->batch, row);
    if (rc == DW_OK && json_array_size(v->batch) >= FLUSH_ROWS)
        rc = flush(v);
    return rc;
}

/* "<set>(<key>)" of a reference object, as the engine names targets. */
static json_t *ref_text(const json_t *ref)
{
    char *id = dw_dvkey_target_id(json_string_value(json_object_get(ref, "$ref")),
                                  json_object_get(ref, "key"));
    json_t *s = json_string(id ? id : "");
    free(id);
    return s;
}

static json_t *parent_key(struct verifier *v, const struct dw_lookup *l, const char *guid);
static bool writes_toward_dataverse(const struct dw_colmap *c);
static dw_rc record_run(struct verifier *v, bool finished);

/* A row's key object as the engine builds it (lookup parts as references); NULL if the row
 * lacks a part (new reference). */
static json_t *row_key(struct verifier *v, const struct dw_keypart *parts, size_t n,
                       const json_t *row)
{
    json_t *key = json_object();
    for (size_t i = 0; i < n; i++) {
        const struct dw_keypart *p = &parts[i];
        json_t *x = json_object_get(row, p->attr);
        if (x == NULL || json_is_null(x))
            goto fail;
        if (p->kind == DW_KEYPART_COLUMN) {
            json_object_set(key, p->attr, x);
            continue;
        }
        const struct dw_lookup *l = p->kind == DW_KEYPART_COMPANY ? &company_lookup : p->lookup;
        json_t *pk = json_is_string(x) ? parent_key(v, l, json_string_value(x)) : NULL;
        if (pk == NULL)
            goto fail;
        json_object_set_new(key, p->attr, json_pack("{s:s,s:O}", "$ref", l->entity_set, "key", pk));
    }
    return key;
fail:
    json_decref(key);
    return NULL;
}

/*
 * Pages through an entity set (path: "<set>?$select=..."), one page in memory at a time:
 * page_fn (may be NULL) sees each page's rows first, then row_fn each row. With progress, a
 * line per page.
 */
static dw_rc read_pages(struct verifier *v, const char *path,
                        dw_rc (*page_fn)(struct verifier *, const json_t *, void *),
                        dw_rc (*row_fn)(struct verifier *, const json_t *, void *), void *user,
                        bool progress)
{
    char *next = dw_strdup(path);
    dw_rc rc = DW_OK;
    int64_t rows = 0, pages = 0;
    while (next && rc == DW_OK) {
        json_t *page = NULL;
        char *link = next;
        rc = dw_sink_get_page(v->sink, link, &page, &next);
        free(link);
        const json_t *value = json_object_get(page, "value");
        if (rc == DW_OK && page_fn)
            rc = page_fn(v, value, user);
        size_t i;
        json_t *row;
        json_array_foreach(value, i, row)
        {
            if (rc == DW_OK)
                rc = row_fn(v, row, user);
            rows++;
        }
        json_decref(page);
        pages++;
        if (progress && rc == DW_OK)
            rc = record_run(v, false);
        if (progress && v->o->progress && rc == DW_OK)
            fprintf(v->o->progress, "verify: %.*s: page %" PRId64 ", %" PRId64 " rows read%s\n",
                    (int)strcspn(path, "?"), path, pages, rows, next ? "" : " (last)");
    }
    free(next);
    return rc;
}

/* The cache of one parent set's keys by GUID (created empty on first use). */
static json_t *parent_cache(struct verifier *v, const struct dw_lookup *l)
{
    json_t *cache = json_object_get(v->parents, l->entity_set);
    if (cache == NULL) {
        cache = json_object();
        json_object_set_new(v->parents, l->entity_set, cache);
    }
    return cache;
}

static void cache_parent(struct verifier *v, const struct dw_lookup *l, const char *guid,
                         json_t *key)
{
    json_t *cache = parent_cache(v, l);
    if (json_object_get(cache, guid) == NULL)
        v->nparents++;
    json_object_set_new(cache, guid, key);
}

static dw_rc add_parent(struct verifier *v, const json_t *row, void *user)
{
    const struct dw_lookup *l = user;
    char *id_attr = dw_asprintf("%sid", l->logical_name);
    const char *guid = json_string_value(json_object_get(row, id_attr));
    json_t *key = guid ? row_key(v, l->key, l->nkey, row) : NULL;
    if (key)
        cache_parent(v, l, guid, key);
    free(id_attr);
    return DW_OK;
}

/* A GUID as Dataverse writes it: the only text put into a $filter unquoted. */
static bool guid_ok(const char *s)
{
    return s && strlen(s) == 36 && strspn(s, "0123456789abcdefABCDEF-") == 36;
}

/* One request for the keys of the n parents named in guids. */
static void fetch_parent_group(struct verifier *v, const struct dw_lookup *l, const char **guids,
                               size_t n)
{
    struct dw_buf path;
    dw_buf_init(&path, 0);
    dw_buf_printf(&path, "%s?$select=%sid", l->entity_set, l->logical_name);
    for (size_t i = 0; i < l->nkey; i++)
        dw_buf_printf(&path, ",%s", l->key[i].attr);
    dw_buf_puts(&path, "&$filter=");
    for (size_t i = 0; i < n; i++)
        dw_buf_printf(&path, "%s%sid%%20eq%%20%s", i ? "%20or%20" : "", l->logical_name, guids[i]);
    dw_rc rc = read_pages(v, dw_buf_str(&path), NULL, add_parent, (void *)l, false);
    dw_buf_cleanup(&path);
    if (rc != DW_OK) {
        v->parents_rc = rc;
        return;
    }
    /* A GUID no row answered: a dangling lookup, compared by its GUID. */
    json_t *cache = parent_cache(v, l);
    for (size_t i = 0; i < n; i++)
        if (json_object_get(cache, guids[i]) == NULL)
            cache_parent(v, l, guids[i], json_null());
}

/* Reads the keys of the parents named by guids ({GUID: true}, none cached), in requests of
 * PARENTS_PER_REQUEST. */
static void fetch_parents(struct verifier *v, const struct dw_lookup *l, json_t *guids)
{
    const char *group[PARENTS_PER_REQUEST];
    size_t n = 0;
    const char *guid;
    json_t *x;
    json_object_foreach(guids, guid, x)
    {
        group[n++] = guid;
        if (n == PARENTS_PER_REQUEST) {
            fetch_parent_group(v, l, group, n);
            n = 0;
        }
    }
    if (n)
        fetch_parent_group(v, l, group, n);
}

/* The key of a parent row by GUID (borrowed; NULL if unknown), read on a miss. */
static json_t *parent_key(struct verifier *v, const struct dw_lookup *l, const char *guid)
{
    if (!guid_ok(guid))
        return NULL;
    json_t *key = json_object_get(parent_cache(v, l), guid);
    if (key == NULL && v->parents_rc == DW_OK) {
        json_t *one = json_pack("{s:b}", guid, 1);
        fetch_parents(v, l, one);
        json_decref(one);
        key = json_object_get(parent_cache(v, l), guid);
    }
    return json_is_null(key) ? NULL : key;
}

/* The parents a page names and the cache lacks: per parent set, its lookup and GUIDs. */
struct wanted {
    const struct dw_lookup *lookup;
    json_t *guids; /* {GUID: true} */
};

struct wanted_list {
    struct wanted *items;
    size_t len, cap;
};

static void want_parent(struct verifier *v, struct wanted_list *w, const struct dw_lookup *l,
                        const json_t *row, const char *attr)
{
    const char *guid = json_string_value(json_object_get(row, attr));
    if (!guid_ok(guid) || json_object_get(parent_cache(v, l), guid))
        return;
    size_t i = 0;
    while (i < w->len && strcmp(w->items[i].lookup->entity_set, l->entity_set) != 0)
        i++;
    if (i == w->len) {
        if (w->len == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4;
            w->items = dw_realloc(w->items, w->cap * sizeof *w->items);
        }
        w->items[w->len++] = (struct wanted){l, json_object()};
    }
    json_object_set_new(w->items[i].guids, guid, json_true());
}

/*
 * Before a page of a set's rows is compared: the keys of the parents its lookups name, a
 * request per PARENTS_PER_REQUEST GUIDs, neither one per row nor the parents' whole sets
 * (memory stays bounded by PARENTS_CACHED and a page's parents).
 */
static dw_rc prefetch_parents(struct verifier *v, const json_t *rows, void *user)
{
    const struct dw_tablemap *first = user;
    if (v->nparents > PARENTS_CACHED) {
        json_object_clear(v->parents);
        v->nparents = 0;
    }
    struct wanted_list w = {0};
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row)
    {
        for (size_t k = 0; k < first->nkey; k++) {
            const struct dw_keypart *p = &first->key[k];
            if (p->kind != DW_KEYPART_COLUMN)
                want_parent(v, &w, p->kind == DW_KEYPART_COMPANY ? &company_lookup : p->lookup, row,
                            p->attr);
        }
        for (size_t g = 0; g < v->def->ngroups; g++) {
            for (size_t m = 0; m < v->def->groups[g].nmaps; m++) {
                const struct dw_tablemap *t = &v->def->groups[g].maps[m];
                for (size_t c = 0; strcmp(t->entity_set, first->entity_set) == 0 && c < t->ncols;
                     c++) {
                    const struct dw_colmap *col = &t->cols[c];
                    if (col->lookup == NULL || !writes_toward_dataverse(col))
                        continue;
                    char *attr = dw_asprintf("_%s_value", col->target);
                    want_parent(v, &w, col->lookup, row, attr);
                    free(attr);
                }
            }
        }
    }
    for (size_t j = 0; j < w.len; j++) {
        fetch_parents(v, w.items[j].lookup, w.items[j].guids);
        json_decref(w.items[j].guids);
    }
    free(w.items);
    return DW_OK;
}

static bool writes_toward_dataverse(const struct dw_colmap *c)
{
    return c->direction != DW_DIR_TO_FO && c->direction != DW_DIR_TO_FO_TRANSFORM;
}

/* What Dataverse holds of the attributes the maps of the set write (lookups as texts). */
static json_t *actual_fields(struct verifier *v, const char *set, const json_t *row)
{
    json_t *fields = json_object();
    for (size_t g = 0; g < v->def->ngroups; g++) {
        for (size_t i = 0; i < v->def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &v->def->groups[g].maps[i];
            for (size_t c = 0; strcmp(m->entity_set, set) == 0 && c < m->ncols; c++) {
                const struct dw_colmap *col = &m->cols[c];
                if (!writes_toward_dataverse(col))
                    continue;
                if (col->lookup == NULL) {
                    json_t *x = json_object_get(row, col->target);
                    json_object_set(fields, col->target, x ? x : json_null());
                    continue;
                }
                char *attr = dw_asprintf("_%s_value", col->target);
                const char *guid = json_string_value(json_object_get(row, attr));
                json_t *pk = guid ? parent_key(v, col->lookup, guid) : NULL;
                json_t *ref =
                    pk ? json_pack("{s:s,s:O}", "$ref", col->lookup->entity_set, "key", pk) : NULL;
                json_object_set_new(fields, col->bind,
                                    ref    ? ref_text(ref)
                                    : guid ? json_string(guid)
                                           : json_null());
                json_decref(ref);
                free(attr);
            }
        }
    }
    return fields;
}

static dw_rc add_actual(struct verifier *v, const json_t *row, void *user)
{
    const struct dw_tablemap *m = user;
    json_t *key = row_key(v, m->key, m->nkey, row);
    v->sum.target_rows++;
    if (key == NULL) {
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"entity_set", m->entity_set}),
                "a Dataverse row without its alternate key is not compared");
        return DW_OK;
    }
    char *id = dw_dvkey_target_id(m->entity_set, key);
    json_t *r = json_pack("{s:s,s:o,s:o}", "target_id", id ? id : "", "dv_key", key, "fields",
                          actual_fields(v, m->entity_set, row));
    free(id);
    return push(v, actual_sql, r);
}

/* The expected attributes of a mapped write (lookups as "<set>(<key>)" texts). */
static json_t *expected_fields(const struct dw_write *w)
{
    json_t *fields = json_object(), *body = dw_write_body(w);
    const char *k;
    json_t *x;
    json_object_foreach(body, k, x)
    {
        json_object_set_new(fields, k, dw_dvkey_is_ref(x) ? ref_text(x) : json_incref(x));
    }
    json_decref(body);
    return fields;
}

static dw_rc on_source_row(void *user, const struct dw_change *c)
{
    struct verifier *v = user;
    struct dw_row_json row = {0};
    char *error = NULL;
    struct dw_mapped_vec mapped = {0};
    v->sum.source_rows++;
    if (dw_change_row_json(c, &v->values, &row, &error) != DW_OK) {
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"map", v->map->name}),
                "a source row cannot be converted, not compared: %s", error);
        free(error);
        return DW_OK;
    }
    struct dw_source_row src = {c->rel->schema, c->rel->name, DW_CHANGE_INSERT,
                                row.new_row,    NULL,         NULL};
    dw_rc rc = dw_mapping_map_row_with(v->maps, v->map->id, &src, &mapped);
    json_t *skey = json_object();
    size_t i;
    json_t *name;
    json_array_foreach(v->key_columns, i, name)
    {
        json_t *x = dw_row_get(row.new_row, json_string_value(name));
        json_object_set(skey, json_string_value(name), x ? x : json_null());
    }
    for (size_t k = 0; rc == DW_OK && k < mapped.len; k++) {
        const struct dw_mapped *m = &mapped.items[k];
        if (!m->ok || m->write.op == DW_WRITE_DELETE)
            continue; /* unmappable rows are the error table's business */
        rc = push(v, expected_sql,
                  json_pack("{s:s,s:s,s:O,s:o}", "target_id", m->target_id, "map", v->map->name,
                            "source_key", skey, "fields", expected_fields(&m->write)));
    }
    json_decref(skey);
    dw_mapped_vec_cleanup(&mapped);
    dw_row_json_cleanup(&row);
    if (v->o->progress && v->sum.source_rows % 10000 == 0)
        fprintf(v->o->progress, "verify: %" PRId64 " source rows read\n", v->sum.source_rows);
    return rc;
}

/* Reads the source rows of one map under its filter and maps them. */
static dw_rc read_source(struct verifier *v, const struct dw_tablemap *m)
{
    struct dw_src_catalog cat = {NULL, 0};
    struct dw_buf cond;
    dw_buf_init(&cond, 0);
    char *table = dw_asprintf("%s.%s", m->source_schema, m->source_table);
    const char *only[] = {m->name};
    struct dw_copy_selection sel = {only, 1, NULL, 0};
    bool any = false;
    dw_rc rc = dw_src_catalog_fetch(v->source, v->def, &cat);
    if (rc == DW_OK)
        rc = dw_copy_table_filter(v->def, &cat, m->source_schema, m->source_table, &sel, &cond,
                                  &any);
    json_decref(v->key_columns);
    v->key_columns = NULL;
    if (rc == DW_OK)
        rc = dw_snapshot_key_columns(v->source, table, &v->key_columns);
    if (rc == DW_OK) {
        struct dw_snapshot_request req = {table, cond.len ? dw_buf_str(&cond) : NULL, NULL};
        struct dw_stream_handler h = {.user = v, .change = on_source_row};
        v->map = m;
        rc = dw_snapshot_scan(v->source, &req, v->o->config->source.snapshot_fetch_rows, &h);
    }
    if (rc == DW_OK)
        rc = flush(v);
    dw_src_catalog_cleanup(&cat);
    dw_buf_cleanup(&cond);
    free(table);
    return rc;
}

/* "<set>?$select=..." with every key and mapped attribute of the maps writing set. */
static char *select_path(const struct verifier *v, const char *set)
{
    json_t *attrs = json_object();
    for (size_t g = 0; g < v->def->ngroups; g++) {
        for (size_t i = 0; i < v->def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &v->def->groups[g].maps[i];
            if (strcmp(m->entity_set, set) != 0)
                continue;
            for (size_t k = 0; k < m->nkey; k++)
                json_object_set_new(attrs, m->key[k].attr, json_true());
            for (size_t c = 0; c < m->ncols; c++) {
                if (!writes_toward_dataverse(&m->cols[c]))
                    continue;
                char *a = m->cols[c].lookup ? dw_asprintf("_%s_value", m->cols[c].target)
                                            : dw_strdup(m->cols[c].target);
                json_object_set_new(attrs, a, json_true());
                free(a);
            }
        }
    }
    struct dw_buf path;
    dw_buf_init(&path, 0);
    dw_buf_printf(&path, "%s?$select=", set);
    const char *k;
    json_t *x;
    bool first = true;
    json_object_foreach(attrs, k, x)
    {
        dw_buf_printf(&path, "%s%s", first ? "" : ",", k);
        first = false;
    }
    json_decref(attrs);
    char *out = dw_strdup(dw_buf_str(&path));
    dw_buf_cleanup(&path);
    return out;
}

/* Compares the two sides of one entity set into verify_result. */
static dw_rc compare(struct verifier *v, const char *set, const char *first_map)
{
    char run[32];
    snprintf(run, sizeof run, "%" PRId64, v->sum.run_id);
    const char *params[] = {run, set, first_map};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(
        v->control, "comparing Dataverse with the source",
        "WITH d AS (SELECT e.target_id, e.map, e.source_key, e.fields AS expected,"
        "   a.dv_key, a.fields AS actual, a.target_id IS NULL AS missing,"
        "   (SELECT array_agg(k ORDER BY k) FROM jsonb_each(e.fields) x(k, val)"
        "     WHERE a.fields -> k IS DISTINCT FROM val) AS cols"
        "   FROM vr_expected e LEFT JOIN vr_actual a USING (target_id)),"
        " ins AS (INSERT INTO dwasync.verify_result (run_id, table_map, entity_set, class,"
        "   target_id, columns, source_key, dv_key, expected, actual)"
        "  SELECT $1::bigint, map, $2, CASE WHEN missing THEN 'missing' ELSE 'different' END,"
        "   target_id, CASE WHEN missing THEN NULL ELSE cols END, source_key, dv_key, expected,"
        "   actual FROM d WHERE missing OR cols IS NOT NULL"
        "  UNION ALL SELECT $1::bigint, $3, $2, 'extra', a.target_id, NULL, NULL, a.dv_key,"
        "   NULL, a.fields FROM vr_actual a LEFT JOIN vr_expected e USING (target_id)"
        "   WHERE e.target_id IS NULL RETURNING class)"
        " SELECT count(*) FILTER (WHERE class = 'missing'), count(*) FILTER (WHERE class ="
        " 'extra'), count(*) FILTER (WHERE class = 'different') FROM ins",
        3, params, &res);
    if (rc != DW_OK)
        return rc;
    int64_t missing = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    int64_t extra = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    int64_t different = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    v->sum.missing += missing;
    v->sum.extra += extra;
    v->sum.different += different;
    if (v->o->progress)
        fprintf(v->o->progress,
                "verify: %s: %" PRId64 " missing, %" PRId64 " extra, %" PRId64 " different\n", set,
                missing, extra, different);
    return rc;
}

static bool map_selected(const struct dw_verify_options *o, const struct dw_tablemap *m)
{
    if (o->nmaps == 0)
        return true;
    for (size_t i = 0; i < o->nmaps; i++)
        if (strcmp(o->maps[i], m->name) == 0)
            return true;
    return false;
}

/* Verifies one entity set: every map of the job writing it. */
static dw_rc verify_set(struct verifier *v, const char *set)
{
    dw_rc rc =
        dw_pg_exec(v->control, "preparing the comparison", "TRUNCATE vr_expected, vr_actual");
    const struct dw_tablemap *first = NULL;
    for (size_t g = 0; g < v->def->ngroups && rc == DW_OK; g++) {
        for (size_t i = 0; i < v->def->groups[g].nmaps && rc == DW_OK; i++) {
            const struct dw_tablemap *m = &v->def->groups[g].maps[i];
            if (strcmp(m->entity_set, set) != 0)
                continue;
            first = first ? first : m;
            rc = read_source(v, m);
        }
    }
    char *path = select_path(v, set);
    if (rc == DW_OK)
        rc = read_pages(v, path, prefetch_parents, add_actual, (void *)first, true);
    /* Rows whose parents' keys are missing would be reported as drift that is not there. */
    if (rc == DW_OK)
        rc = v->parents_rc;
    if (rc == DW_OK)
        rc = flush(v);
    free(path);
    if (rc == DW_OK)
        rc = compare(v, set, first->name);
    return rc == DW_OK ? record_run(v, false) : rc;
}

/* --- repair ------------------------------------------------------------------------------ */

static void deleted(void *user, void *write_user, const struct dw_write_result *r)
{
    struct verifier *v = user;
    (void)write_user;
    if (r->status == DW_WRITE_APPLIED)
        v->sum.deleted++;
    else
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"code", r->code}),
                "repair: deleting an extra row failed (HTTP %d): %s", r->http_status, r->message);
}

/* Deletes the run's extras through the sink, by alternate key. */
static dw_rc delete_extras(struct verifier *v, const struct dw_tablemap *m)
{
    char run[32];
    snprintf(run, sizeof run, "%" PRId64, v->sum.run_id);
    const char *params[] = {run, m->name};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(v->control, "reading the extras",
                           "SELECT dv_key::text FROM dwasync.verify_result WHERE run_id = $1"
                           " AND table_map = $2 AND class = 'extra'",
                           2, params, &res);
    for (int i = 0; rc == DW_OK && i < PQntuples(res); i++) {
        struct dw_write w = {.op = DW_WRITE_DELETE,
                             .entity_set = dw_strdup(m->entity_set),
                             .logical_name = dw_strdup(m->logical_name),
                             .key = json_loads(PQgetvalue(res, i, 0), 0, NULL),
                             .options = json_incref(m->write_options)};
        rc = dw_sink_submit(v->sink, &w, NULL, 1);
        dw_write_cleanup(&w);
        while (rc == DW_OK && dw_sink_pending(v->sink) > 0)
            rc = dw_sink_run(v->sink, 1000);
    }
    PQclear(res);
    return rc;
}

/* Adds to skey the source columns of key parts, read from their values in a Dataverse key
 * (a lookup part's from the key of the row it points to, which the source row holds as its
 * own columns), named as the source table spells them; false when one is absent. */
static bool add_source_parts(const struct dw_keypart *parts, size_t n, const struct dw_src_table *t,
                             const json_t *dv_key, json_t *skey)
{
    for (size_t i = 0; i < n; i++) {
        const struct dw_keypart *p = &parts[i];
        json_t *x = json_object_get(dv_key, p->attr);
        if (p->kind == DW_KEYPART_LOOKUP) {
            if (!add_source_parts(p->lookup->key, p->lookup->nkey, t, json_object_get(x, "key"),
                                  skey))
                return false;
            continue;
        }
        if (p->kind == DW_KEYPART_COMPANY)
            x = json_object_get(json_object_get(x, "key"), DW_COMPANY_KEY);
        if (x == NULL || p->source == NULL)
            return false;
        const struct dw_src_column *col = t ? dw_src_table_column(t, p->source) : NULL;
        json_object_set(skey, col ? col->name : p->source, x);
    }
    return true;
}

/* The source key of an extra from its Dataverse key; NULL if it cannot be read from it. */
static json_t *extra_source_key(const struct dw_tablemap *m, const struct dw_src_table *t,
                                const json_t *dv_key)
{
    json_t *skey = json_object();
    if (add_source_parts(m->key, m->nkey, t, dv_key, skey))
        return skey;
    json_decref(skey);
    return NULL;
}

static void append_literal(PGconn *conn, struct dw_buf *b, const json_t *x)
{
    char *text = json_is_string(x) ? dw_strdup(json_string_value(x)) : dw_json_dumps(x);
    char *lit = PQescapeLiteral(conn, text, strlen(text));
    dw_buf_puts(b, lit ? lit : "NULL");
    PQfreemem(lit);
    free(text);
}

/* Appends "(k1, k2) = (v1, v2)" for a key object; false for an empty one. */
static bool key_condition(PGconn *conn, struct dw_buf *b, const json_t *skey)
{
    if (!json_is_object(skey) || json_object_size(skey) == 0)
        return false;
    struct dw_buf names, values;
    dw_buf_init(&names, 0);
    dw_buf_init(&values, 0);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)skey, k, x)
    {
        char *q = dw_pg_quote_ident(conn, k);
        dw_buf_printf(&names, "%s%s", names.len ? ", " : "", q ? q : "NULL");
        PQfreemem(q);
        if (values.len)
            dw_buf_puts(&values, ", ");
        append_literal(conn, &values, x);
    }
    dw_buf_printf(b, "(%s) = (%s)", dw_buf_str(&names), dw_buf_str(&values));
    dw_buf_cleanup(&names);
    dw_buf_cleanup(&values);
    return true;
}

/* Queues keyed copies of one map's drifted keys, REPAIR_KEYS keys a request. */
static dw_rc queue_repairs(struct verifier *v, const struct dw_tablemap *m)
{
    char run[32];
    snprintf(run, sizeof run, "%" PRId64, v->sum.run_id);
    const char *params[] = {run, m->name};
    PGresult *res = NULL;
    dw_rc rc =
        dw_pg_query(v->control, "reading the drift to repair",
                    "SELECT class, source_key::text, dv_key::text FROM"
                    " dwasync.verify_result WHERE run_id = $1 AND table_map = $2 ORDER BY id",
                    2, params, &res);
    struct dw_buf cond;
    dw_buf_init(&cond, 0);
    struct dw_src_catalog cat = {NULL, 0};
    if (rc == DW_OK)
        rc = dw_src_catalog_fetch(v->source, v->def, &cat);
    const struct dw_src_table *t = dw_src_catalog_table(&cat, m->source_schema, m->source_table);
    int keys = 0;
    for (int i = 0; rc == DW_OK && i <= PQntuples(res); i++) {
        if (i < PQntuples(res)) {
            bool extra = strcmp(PQgetvalue(res, i, 0), "extra") == 0;
            json_t *dv = extra ? json_loads(PQgetvalue(res, i, 2), 0, NULL) : NULL;
            json_t *skey =
                extra ? extra_source_key(m, t, dv) : json_loads(PQgetvalue(res, i, 1), 0, NULL);
            size_t mark = cond.len;
            if (cond.len)
                dw_buf_puts(&cond, " OR ");
            if (key_condition(v->source, &cond, skey))
                keys++;
            else if (cond.data) {
                cond.len = mark;
                cond.data[mark] = '\0';
            }
            json_decref(dv);
            json_decref(skey);
        }
        if (keys > 0 && (keys == REPAIR_KEYS || i == PQntuples(res))) {
            const char *only[] = {m->name};
            struct dw_copyreq_spec spec = {"repair", {only, 1, NULL, 0}, dw_buf_str(&cond)};
            int tables = 0;
            rc = dw_copyreq_queue(v->control, v->source, v->def, &spec, NULL, &tables);
            v->sum.copies_queued += tables;
            dw_buf_reset(&cond);
            keys = 0;
        }
    }
    dw_buf_cleanup(&cond);
    dw_src_catalog_cleanup(&cat);
    PQclear(res);
    return rc;
}

static dw_rc repair(struct verifier *v)
{
    dw_rc rc = DW_OK;
    for (size_t g = 0; g < v->def->ngroups && rc == DW_OK; g++) {
        for (size_t i = 0; i < v->def->groups[g].nmaps && rc == DW_OK; i++) {
            const struct dw_tablemap *m = &v->def->groups[g].maps[i];
            if ((rc = delete_extras(v, m)) == DW_OK)
                rc = queue_repairs(v, m);
        }
    }
    return rc;
}

/* --- the run ------------------------------------------------------------------------------ */

static dw_rc start_run(struct verifier *v)
{
    json_t *names = json_array();
    for (size_t g = 0; g < v->def->ngroups; g++)
        for (size_t i = 0; i < v->def->groups[g].nmaps; i++)
            if (map_selected(v->o, &v->def->groups[g].maps[i]))
                json_array_append_new(names, json_string(v->def->groups[g].maps[i].name));
    char *text = dw_json_dumps(names);
    json_decref(names);
    const char *params[] = {v->o->job, text, v->o->repair ? "t" : "f"};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(v->control, "recording the verify run",
                           "INSERT INTO dwasync.verify_run (job_id, maps, repair) SELECT j.id,"
                           " ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3::boolean"
                           " FROM dwasync.job j WHERE j.name = $1 RETURNING id",
                           3, params, &res);
    if (rc == DW_OK)
        v->sum.run_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    free(text);
    if (rc == DW_OK)
        rc = dw_pg_exec(v->control, "preparing the comparison",
                        "CREATE TEMP TABLE vr_expected (target_id text PRIMARY KEY, map text,"
                        " source_key jsonb, fields jsonb);"
                        " CREATE TEMP TABLE vr_actual (target_id text PRIMARY KEY, dv_key jsonb,"
                        " fields jsonb)");
    return rc;
}

/* Records the run's totals so far (progress, read by the daemon's metrics), and with
 * finished, its end. */
static dw_rc record_run(struct verifier *v, bool finished)
{
    char p[6][32];
    int64_t vals[] = {v->sum.run_id,  v->sum.source_rows, v->sum.target_rows,
                      v->sum.missing, v->sum.extra,       v->sum.different};
    const char *params[7];
    for (int i = 0; i < 6; i++) {
        snprintf(p[i], sizeof p[i], "%" PRId64, vals[i]);
        params[i] = p[i];
    }
    params[6] = finished ? "t" : "f";
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(v->control, "recording the verify run",
                           "UPDATE dwasync.verify_run SET finished_at = CASE WHEN $7::boolean"
                           " THEN now() END, source_rows = $2, target_rows = $3, missing = $4,"
                           " extra = $5, different = $6 WHERE id = $1",
                           7, params, &res);
    PQclear(res);
    return rc;
}

static dw_rc check_maps(const struct verifier *v)
{
    for (size_t i = 0; i < v->o->nmaps; i++) {
        if (dw_jobdef_find_map(v->def, v->o->maps[i]) == NULL) {
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"hint", "dwasync map list JOB names its maps."}),
                    "job \"%s\" has no map \"%s\"", v->o->job, v->o->maps[i]);
            return DW_ERR_INVALID;
        }
    }
    return DW_OK;
}

/* Verifies each entity set the selected maps write, once. */
static dw_rc verify_sets(struct verifier *v)
{
    json_t *done = json_object();
    dw_rc rc = DW_OK;
    for (size_t g = 0; g < v->def->ngroups && rc == DW_OK; g++) {
        for (size_t i = 0; i < v->def->groups[g].nmaps && rc == DW_OK; i++) {
            const struct dw_tablemap *m = &v->def->groups[g].maps[i];
            if (!map_selected(v->o, m) || json_object_get(done, m->entity_set))
                continue;
            json_object_set_new(done, m->entity_set, json_true());
            rc = verify_set(v, m->entity_set);
        }
    }
    json_decref(done);
    return rc;
}

dw_rc dw_verify_run(const struct dw_verify_options *o, struct dw_verify_summary *out)
{
    struct verifier v = {.o = o, .parents = json_object(), .batch = json_array()};
    const struct dw_config *cfg = o->config;
    dw_rc rc = dw_pg_connect(dw_config_control_conninfo(cfg), "dwasync verify", &v.control);
    if (rc == DW_OK)
        rc = dw_pg_connect(cfg->source.conninfo, "dwasync verify", &v.source);
    if (rc == DW_OK && (rc = dw_job_maps_load(v.control, o->job, &v.maps)) == DW_OK) {
        v.def = dw_job_maps_def(v.maps);
        rc = check_maps(&v);
    }
    if (rc == DW_OK && (rc = dw_values_options_init(&v.values, cfg->source.timezone)) == DW_OK) {
        v.types = dw_types_new();
        v.values.types = v.types;
        rc = dw_types_load(v.source, v.types);
    }
    if (rc == DW_OK)
        rc = dw_sink_new(cfg, deleted, &v, &v.sink);
    if (rc == DW_OK)
        rc = start_run(&v);
    if (rc == DW_OK)
        rc = verify_sets(&v);
    if (rc == DW_OK)
        rc = record_run(&v, true);
    if (rc == DW_OK && o->repair && v.sum.missing + v.sum.extra + v.sum.different > 0)
        rc = repair(&v);
    if (rc == DW_OK)
        *out = v.sum;
    dw_sink_free(v.sink);
    dw_types_free(v.types);
    dw_job_maps_free(v.maps);
    json_decref(v.key_columns);
    json_decref(v.parents);
    json_decref(v.batch);
    PQfinish(v.source);
    PQfinish(v.control);
    return rc;
}

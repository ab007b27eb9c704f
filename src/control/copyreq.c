/*
 * Queueing copies for `job resync` and `verify --repair` (see copyreq.h): the selection is
 * checked, each table's condition built from its maps' filters and the operator's predicate,
 * its rows counted read-only on the source, and the requests inserted in one transaction.
 */
#include "dwasync/copyreq.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"
#include "dwasync/snapshot.h"

/* A source table to copy and the lowest sequence of its maps (parents are copied first). */
struct table_ref {
    const char *schema, *name;
    int sequence;
};

static int by_sequence(const void *a, const void *b)
{
    const struct table_ref *x = a, *y = b;
    if (x->sequence != y->sequence)
        return x->sequence < y->sequence ? -1 : 1;
    int c = strcmp(x->schema, y->schema);
    return c ? c : strcmp(x->name, y->name);
}

/* The job's source tables, each once, in copy order; caller frees the array. */
static struct table_ref *job_tables(const struct dw_jobdef *def, size_t *n)
{
    struct table_ref *t = dw_calloc(dw_jobdef_map_count(def) + 1, sizeof *t);
    *n = 0;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            size_t k = 0;
            while (k < *n && (strcmp(t[k].schema, m->source_schema) != 0 ||
                              strcmp(t[k].name, m->source_table) != 0))
                k++;
            if (k == *n)
                t[(*n)++] = (struct table_ref){m->source_schema, m->source_table, m->sequence};
            else if (m->sequence < t[k].sequence)
                t[k].sequence = m->sequence;
        }
    }
    qsort(t, *n, sizeof *t, by_sequence);
    return t;
}

static dw_rc check_selection(const struct dw_jobdef *def, const struct dw_copy_selection *sel)
{
    for (size_t i = 0; i < sel->nmaps; i++) {
        if (dw_jobdef_find_map(def, sel->maps[i]) == NULL) {
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"hint", "dwasync map list JOB names its maps."}),
                    "job \"%s\" has no map \"%s\"", def->name, sel->maps[i]);
            return DW_ERR_INVALID;
        }
    }
    for (size_t i = 0; i < sel->nles && def->nlegal_entities > 0; i++) {
        bool listed = false;
        for (size_t k = 0; k < def->nlegal_entities && !listed; k++)
            listed = strcmp(def->legal_entities[k], sel->les[i]) == 0;
        if (!listed) {
            DW_LOGF(DW_LOG_ERROR,
                    DW_FIELDS({"hint", "Add it to the job's legal_entities in its map file "
                                       "and import it first."}),
                    "job \"%s\" does not sync legal entity \"%s\"", def->name, sel->les[i]);
            return DW_ERR_INVALID;
        }
    }
    return DW_OK;
}

dw_rc dw_copyreq_count(PGconn *source, const char *schema, const char *table, const char *condition,
                       int64_t *rows)
{
    char *qs = dw_pg_quote_ident(source, schema), *qt = dw_pg_quote_ident(source, table);
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    dw_buf_printf(&sql, "SELECT count(*) FROM ONLY %s.%s", qs ? qs : "", qt ? qt : "");
    if (condition && *condition)
        dw_buf_printf(&sql, " WHERE (%s)", condition);
    PQfreemem(qs);
    PQfreemem(qt);
    PGresult *res = NULL;
    dw_rc rc =
        dw_pg_exec(source, "counting the rows to copy",
                   "BEGIN TRANSACTION READ ONLY; SET LOCAL standard_conforming_strings = on");
    if (rc == DW_OK && (rc = dw_pg_query(source, "counting the rows to copy", dw_buf_str(&sql), 0,
                                         NULL, &res)) == DW_OK)
        *rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    (void)dw_pg_exec(source, "counting the rows to copy", rc == DW_OK ? "COMMIT" : "ROLLBACK");
    dw_buf_cleanup(&sql);
    return rc;
}

static dw_rc job_initial_sync(PGconn *control, const char *job, char *out, size_t size)
{
    const char *params[] = {job};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(control, "reading the job",
                           "SELECT initial_sync FROM dwasync.job WHERE name = $1", 1, params, &res);
    if (rc == DW_OK && PQntuples(res) == 0) {
        DW_ERROR("job \"%s\" does not exist", job);
        rc = DW_ERR_NOT_FOUND;
    }
    if (rc == DW_OK)
        snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static dw_rc insert_request(PGconn *control, const char *job, const struct table_ref *t,
                            const char *kind, const char *condition, const char *map_name,
                            int64_t rows)
{
    char total[32];
    snprintf(total, sizeof total, "%" PRId64, rows);
    const char *params[] = {job, t->schema, t->name, condition, kind, map_name, total};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(
        control, "queueing a copy",
        "INSERT INTO dwasync.copy_request (job_id, ord, source_schema, source_table, condition,"
        " kind, map_name, rows_total) SELECT j.id, coalesce((SELECT max(ord) FROM"
        " dwasync.copy_request c WHERE c.job_id = j.id), 0) + 1, $2, $3, $4, $5, $6, $7"
        " FROM dwasync.job j WHERE j.name = $1",
        7, params, &res);
    PQclear(res);
    return rc;
}

/* The table's condition: its selected maps' filters and the predicate; *any false: none. */
static dw_rc table_condition(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                             const struct table_ref *t, const struct dw_copyreq_spec *spec,
                             struct dw_buf *cond, bool *any)
{
    struct dw_buf filter;
    dw_buf_init(&filter, 0);
    dw_rc rc = dw_copy_table_filter(def, cat, t->schema, t->name, &spec->sel, &filter, any);
    if (rc == DW_OK && filter.len > 0)
        dw_buf_printf(cond, "(%s)", dw_buf_str(&filter));
    if (rc == DW_OK && spec->where && *spec->where)
        dw_buf_printf(cond, "%s(%s)", cond->len ? " AND " : "", spec->where);
    dw_buf_cleanup(&filter);
    return rc;
}

dw_rc dw_copyreq_queue(PGconn *control, PGconn *source, const struct dw_jobdef *def,
                       const struct dw_copyreq_spec *spec, FILE *report, int *tables)
{
    const char *why = NULL;
    char initial[32];
    struct dw_src_catalog cat = {NULL, 0};
    size_t n = 0;
    struct table_ref *t = NULL;
    int queued = 0;
    bool in_txn = false;
    dw_rc rc = check_selection(def, &spec->sel);
    if (rc != DW_OK)
        goto out;
    if (spec->where && !dw_snapshot_condition_ok(spec->where, &why)) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Give one SQL condition on the source table's columns, "
                                   "e.g. --where \"creditlimit > 1000\"."}),
                "--where is refused: %s", why);
        rc = DW_ERR_INVALID;
        goto out;
    }
    if ((rc = job_initial_sync(control, def->name, initial, sizeof initial)) != DW_OK)
        goto out;
    if (strcmp(initial, "pending") == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "The initial sync copies every row; wait for it."}),
                "job \"%s\" has an initial sync pending", def->name);
        rc = DW_ERR_STATE;
        goto out;
    }
    if ((rc = dw_src_catalog_fetch(source, def, &cat)) != DW_OK)
        goto out;
    t = job_tables(def, &n);
    if ((rc = dw_pg_exec(control, "queueing a copy", "BEGIN")) != DW_OK)
        goto out;
    in_txn = true;
    for (size_t i = 0; i < n && rc == DW_OK; i++) {
        struct dw_buf cond;
        dw_buf_init(&cond, 0);
        bool any = false;
        int64_t rows = 0;
        rc = table_condition(def, &cat, &t[i], spec, &cond, &any);
        if (rc == DW_OK && any)
            rc = dw_copyreq_count(source, t[i].schema, t[i].name,
                                  cond.len ? dw_buf_str(&cond) : NULL, &rows);
        if (rc == DW_OK && any)
            rc = insert_request(control, def->name, &t[i], spec->kind,
                                cond.len ? dw_buf_str(&cond) : NULL,
                                spec->sel.nmaps == 1 ? spec->sel.maps[0] : NULL, rows);
        if (rc == DW_OK && any && report)
            fprintf(report, "%s: %s.%s, %" PRId64 " row%s\n", spec->kind, t[i].schema, t[i].name,
                    rows, rows == 1 ? "" : "s");
        queued += rc == DW_OK && any;
        dw_buf_cleanup(&cond);
    }
    if (rc == DW_OK && queued == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Legal entities select only maps with a company key."}),
                "nothing to copy: no map of job \"%s\" is selected", def->name);
        rc = DW_ERR_INVALID;
    }
    if (rc == DW_OK)
        rc = dw_pg_exec(control, "queueing a copy", "COMMIT");
    in_txn = rc != DW_OK;
out:
    if (in_txn)
        (void)dw_pg_exec(control, "queueing a copy", "ROLLBACK");
    free(t);
    dw_src_catalog_cleanup(&cat);
    if (rc == DW_OK && tables)
        *tables = queued;
    return rc;
}

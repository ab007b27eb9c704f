/* Initial sync in the slot's exported snapshot (see snapshot.h). */
#include "dwasync/snapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"
#include "dwasync/pgoutput.h"

/* A table's relation as pgoutput would describe it, built from the catalog. */
static dw_rc describe_table(PGconn *conn, const char *table, struct dw_relation *rel)
{
    PGresult *res = NULL;
    dw_rc rc;
    const char *dot = strchr(table, '.');
    char *schema = dw_strndup(dot ? table : "public", dot ? (size_t)(dot - table) : 6);
    const char *params[2] = {schema, dot ? dot + 1 : table};
    memset(rel, 0, sizeof *rel);
    rc = dw_pg_query(conn, "looking up a table for the initial sync",
                     "SELECT c.oid, n.nspname, c.relname, c.relreplident FROM pg_class c"
                     " JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                     2, params, &res);
    if (rc != DW_OK)
        goto out;
    if (PQntuples(res) != 1) {
        DW_ERROR("table \"%s\".\"%s\" does not exist", params[0], params[1]);
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    rel->oid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    rel->schema = dw_strdup(PQgetvalue(res, 0, 1));
    rel->name = dw_strdup(PQgetvalue(res, 0, 2));
    rel->replica_identity = PQgetvalue(res, 0, 3)[0];
    PQclear(res);
    res = NULL;
    const char *oid_param[1] = {NULL};
    char oidbuf[16];
    snprintf(oidbuf, sizeof oidbuf, "%" PRIu32, rel->oid);
    oid_param[0] = oidbuf;
    /* Key columns as pgoutput flags them: the replica identity's columns, all for FULL. */
    rc = dw_pg_query(conn, "reading the columns of a table for the initial sync",
                     "SELECT a.attname, a.atttypid, a.atttypmod,"
                     " CASE c.relreplident WHEN 'f' THEN true WHEN 'n' THEN false"
                     " ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid"
                     "  AND a.attnum = ANY (i.indkey) AND ((c.relreplident = 'd' AND"
                     "  i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) END"
                     " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                     " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
                     " AND a.attgenerated = '' ORDER BY a.attnum",
                     1, oid_param, &res);
    if (rc != DW_OK)
        goto out;
    rel->ncols = PQntuples(res);
    rel->cols = dw_calloc((size_t)rel->ncols + 1, sizeof(struct dw_rel_column));
    for (int i = 0; i < rel->ncols; i++) {
        rel->cols[i].name = dw_strdup(PQgetvalue(res, i, 0));
        rel->cols[i].type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        rel->cols[i].typmod = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        rel->cols[i].key = PQgetvalue(res, i, 3)[0] == 't';
    }
out:
    PQclear(res);
    free(schema);
    return rc;
}

/* Copies one table through a cursor, FETCH fetch_rows at a time. */
static dw_rc copy_table(PGconn *conn, const char *table, int64_t fetch_rows,
                        const struct dw_txn *txn, uint32_t *index,
                        const struct dw_stream_handler *h)
{
    struct dw_relation rel;
    struct dw_buf sql;
    struct dw_datum *cols = NULL;
    PGresult *res = NULL;
    dw_buf_init(&sql, 0);
    dw_rc rc = describe_table(conn, table, &rel);
    if (rc != DW_OK)
        goto out;
    char *qs = dw_pg_quote_ident(conn, rel.schema), *qt = dw_pg_quote_ident(conn, rel.name);
    dw_buf_puts(&sql, "DECLARE dw_snapshot NO SCROLL CURSOR FOR SELECT ");
    for (int i = 0; i < rel.ncols; i++) {
        char *qc = dw_pg_quote_ident(conn, rel.cols[i].name);
        dw_buf_printf(&sql, "%s%s", i ? ", " : "", qc ? qc : "NULL");
        PQfreemem(qc);
    }
    if (rel.ncols == 0)
        dw_buf_puts(&sql, "NULL");
    dw_buf_printf(&sql, " FROM ONLY %s.%s", qs ? qs : "", qt ? qt : "");
    PQfreemem(qs);
    PQfreemem(qt);
    if ((rc = dw_pg_exec(conn, "declaring the initial sync cursor", dw_buf_str(&sql))) != DW_OK)
        goto out;
    char fetch[64];
    snprintf(fetch, sizeof fetch, "FETCH %" PRId64 " FROM dw_snapshot",
             fetch_rows > 0 ? fetch_rows : 10000);
    cols = dw_calloc((size_t)rel.ncols + 1, sizeof *cols);
    int64_t rows = 0;
    for (;;) {
        if ((rc = dw_pg_query(conn, "fetching rows for the initial sync", fetch, 0, NULL, &res)) !=
            DW_OK)
            goto out;
        int n = PQntuples(res);
        if (n == 0)
            break;
        for (int r = 0; r < n; r++) {
            for (int i = 0; i < rel.ncols; i++)
                cols[i] = PQgetisnull(res, r, i)
                              ? (struct dw_datum){DW_DATUM_NULL, NULL, 0}
                              : (struct dw_datum){DW_DATUM_TEXT, PQgetvalue(res, r, i),
                                                  (uint32_t)PQgetlength(res, r, i)};
            struct dw_change c = {.op = DW_CHANGE_INSERT,
                                  .lsn = txn->commit_lsn,
                                  .commit_lsn = txn->commit_lsn,
                                  .xid = txn->xid,
                                  .commit_time_us = txn->commit_time_us,
                                  .index = (*index)++,
                                  .rel = &rel,
                                  .new_tuple = {rel.ncols, cols}};
            if (h->change && (rc = h->change(h->user, &c)) != DW_OK)
                goto out;
        }
        rows += n;
        PQclear(res);
        res = NULL;
    }
    rc = dw_pg_exec(conn, "closing the initial sync cursor", "CLOSE dw_snapshot");
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"table", table}), "initial sync copied %" PRId64 " rows", rows);
out:
    PQclear(res);
    free(cols);
    dw_relation_cleanup(&rel);
    dw_buf_cleanup(&sql);
    return rc;
}

dw_rc dw_snapshot_run(const struct dw_snapshot_options *o, const struct dw_stream_handler *h,
                      dw_lsn *consistent_point)
{
    PGconn *repl = NULL, *conn = NULL;
    char *snapshot = NULL;
    dw_lsn cp = 0;
    dw_rc rc;
    if ((rc = dw_stream_connect(o->conninfo, true, "dwasync initial sync", &repl)) != DW_OK)
        goto out;
    if (PQserverVersion(repl) < 140000) {
        DW_ERROR("the source server runs PostgreSQL %d; dwasync needs 14 or newer",
                 PQserverVersion(repl) / 10000);
        rc = DW_ERR_VERSION;
        goto out;
    }
    if ((rc = dw_stream_drop_slot(repl, o->slot)) != DW_OK)
        goto out;
    if ((rc = dw_stream_create_slot(repl, o->slot, true, &cp, &snapshot)) != DW_OK)
        goto out;
    if (snapshot == NULL) {
        DW_ERROR("the server exported no snapshot for the initial sync");
        rc = DW_ERR_PROTOCOL;
        goto out;
    }
    /* repl stays idle from here on: the exported snapshot lives until its next command. */
    if ((rc = dw_stream_connect(o->conninfo, false, "dwasync initial sync", &conn)) != DW_OK)
        goto out;
    if ((rc = dw_pg_exec(conn, "starting the initial sync transaction",
                         "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")) != DW_OK)
        goto out;
    char *lit = PQescapeLiteral(conn, snapshot, strlen(snapshot));
    char *set = dw_asprintf("SET TRANSACTION SNAPSHOT %s", lit ? lit : "''");
    PQfreemem(lit);
    rc = dw_pg_exec(conn, "importing the slot's snapshot", set);
    free(set);
    if (rc != DW_OK)
        goto out;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct dw_txn txn = {0, cp, 0, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000};
    uint32_t index = 0;
    if (h->begin && (rc = h->begin(h->user, &txn)) != DW_OK)
        goto out;
    for (size_t i = 0; i < o->ntables; i++) {
        if ((rc = copy_table(conn, o->tables[i], o->fetch_rows, &txn, &index, h)) != DW_OK)
            goto out;
    }
    if ((rc = dw_pg_exec(conn, "ending the initial sync transaction", "COMMIT")) != DW_OK)
        goto out;
    txn.end_lsn = cp;
    if (h->commit && (rc = h->commit(h->user, &txn)) != DW_OK)
        goto out;
    *consistent_point = cp;
out:
    if (rc != DW_OK && h->reset)
        h->reset(h->user);
    free(snapshot);
    PQfinish(conn);
    PQfinish(repl);
    return rc;
}

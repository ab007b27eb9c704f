/* Initial sync in the slot's exported snapshot (see snapshot.h). */
#include "dwasync/snapshot.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <uthash.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/json.h"
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

/* ---- the chunked copy (watermarks), see snapshot.h ---- */

/* A buffered row, found by the text of its key. */
struct chunk_row {
    UT_hash_handle hh;
    int row;
    char key[]; /* hash key, NUL-terminated */
};

/*
 * The transactions a chunk's read saw, as pg_current_snapshot() describes its snapshot:
 * those before xmin, and those before xmax but for the ones in xip (running, or committed in
 * the WAL but not yet visible). 32-bit xids, as the stream names them, compared modulo 2^32.
 */
struct read_snapshot {
    uint32_t xmin, xmax;
    uint32_t *xip;
    size_t nxip;
};

struct dw_snapshot_chunk {
    struct dw_relation rel;
    struct read_snapshot seen;
    int nkeys;
    int *keycol; /* the copy's key: columns of rel, in the key index's order */
    PGresult *rows;
    bool *dropped;
    struct chunk_row *index; /* uthash by key text */
    char *low, *high;        /* the watermarks' contents */
    bool window_open;
    bool final;
    bool reading;   /* its SELECT sent, its rows not yet in (dw_snapshot_chunk_continue) */
    int64_t asked;  /* rows asked for: fewer read means the table's last chunk */
    char *last_key; /* JSON array of the last row's key texts; NULL when no row */
};

/* Appends one value as "length:bytes;" so that no two keys share a text. */
static void key_part(struct dw_buf *b, const char *data, size_t len)
{
    dw_buf_printf(b, "%zu:", len);
    dw_buf_append(b, data, len);
    dw_buf_putc(b, ';');
}

/*
 * The key text of a stream tuple: the chunk's key columns, found by name in the stream's
 * relation (whose own key flags follow the replica identity, which may be FULL).
 */
static bool tuple_key(const struct dw_snapshot_chunk *c, const struct dw_relation *rel,
                      const struct dw_tuple *t, struct dw_buf *b)
{
    dw_buf_reset(b);
    if (t->cols == NULL || t->ncols != rel->ncols)
        return false;
    for (int k = 0; k < c->nkeys; k++) {
        const char *name = c->rel.cols[c->keycol[k]].name;
        int i = 0;
        while (i < rel->ncols && strcmp(rel->cols[i].name, name) != 0)
            i++;
        if (i == rel->ncols || t->cols[i].kind != DW_DATUM_TEXT)
            return false;
        key_part(b, t->cols[i].data, t->cols[i].len);
    }
    return true;
}

/* The copy's key: the replica identity index, else the primary key (also under FULL). */
static dw_rc find_key(PGconn *conn, struct dw_snapshot_chunk *c)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%" PRIu32, c->rel.oid);
    const char *params[] = {oid};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(
        conn, "reading a table's key for the initial sync",
        "WITH ix AS (SELECT indkey FROM pg_index WHERE indrelid = $1::oid"
        "  AND (indisreplident OR indisprimary) ORDER BY indisreplident DESC LIMIT 1)"
        " SELECT a.attname FROM ix, unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)"
        " JOIN pg_attribute a ON a.attrelid = $1::oid AND a.attnum = k.attnum ORDER BY k.pos",
        1, params, &res);
    if (rc != DW_OK)
        return rc;
    int n = PQntuples(res);
    c->keycol = dw_calloc((size_t)n + 1, sizeof *c->keycol);
    for (int k = 0; k < n; k++) {
        int i = 0;
        while (i < c->rel.ncols && strcmp(c->rel.cols[i].name, PQgetvalue(res, k, 0)) != 0)
            i++;
        if (i == c->rel.ncols) { /* an expression index or a generated column */
            n = 0;
            break;
        }
        c->keycol[k] = i;
    }
    c->nkeys = n;
    PQclear(res);
    return DW_OK;
}

static void drop_key(struct dw_snapshot_chunk *c, const char *key)
{
    struct chunk_row *e = NULL;
    HASH_FIND_STR(c->index, key, e);
    if (e)
        c->dropped[e->row] = true;
}

/* Emits a watermark: a transactional logical message with prefix "dwasync". */
static dw_rc emit_watermark(PGconn *conn, const char *content)
{
    const char *params[] = {content};
    PGresult *res = NULL;
    dw_rc rc =
        dw_pg_query(conn, "writing an initial sync watermark",
                    "SELECT pg_logical_emit_message(true, '" DW_SNAPSHOT_WATERMARK_PREFIX "', $1)",
                    1, params, &res);
    PQclear(res);
    return rc;
}

/* "xmin:xmax:xip,..." (pg_snapshot text, 64-bit xids) as 32-bit xids. */
static dw_rc parse_snapshot(const char *text, struct read_snapshot *out)
{
    char *end = NULL;
    out->xmin = (uint32_t)strtoull(text, &end, 10);
    if (*end != ':')
        return DW_ERR_PROTOCOL;
    out->xmax = (uint32_t)strtoull(end + 1, &end, 10);
    if (*end != ':')
        return DW_ERR_PROTOCOL;
    size_t cap = 1;
    for (const char *p = end + 1; *p; p++)
        cap += *p == ',';
    out->xip = dw_calloc(cap, sizeof *out->xip);
    out->nxip = 0;
    for (const char *p = end + 1; *p; p = *end ? end + 1 : end) {
        out->xip[out->nxip++] = (uint32_t)strtoull(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return DW_ERR_PROTOCOL;
    }
    return DW_OK;
}

/* a before b, modulo 2^32 (as Postgres compares normal xids). */
static bool xid_precedes(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

/*
 * Sends the SELECT of one chunk: rows after last_key in key order, LIMIT rows. With seen, in
 * a REPEATABLE READ transaction whose snapshot it describes. chunk_select_receive() takes its
 * rows and ends the transaction.
 */
static dw_rc chunk_select_send(PGconn *conn, const struct dw_snapshot_chunk *c,
                               const char *condition, json_t *last, int64_t rows,
                               struct read_snapshot *seen)
{
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    const char *params[64];
    Oid types[64];
    int np = 0;
    dw_rc rc = DW_OK;
    PGresult *res = NULL;
    char *qs = dw_pg_quote_ident(conn, c->rel.schema), *qt = dw_pg_quote_ident(conn, c->rel.name);
    struct dw_buf keys;
    dw_buf_init(&keys, 0);
    for (int k = 0; k < c->nkeys; k++) {
        int i = c->keycol[k];
        char *qc = dw_pg_quote_ident(conn, c->rel.cols[i].name);
        dw_buf_printf(&keys, "%s%s", keys.len ? ", " : "", qc ? qc : "NULL");
        PQfreemem(qc);
        if (last) {
            if (np == 64 || !json_is_string(json_array_get(last, (size_t)np))) {
                DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", c->rel.name}),
                        "the recorded position of the initial sync does not match the table's "
                        "key");
                rc = DW_ERR_INVALID;
                goto out;
            }
            params[np] = json_string_value(json_array_get(last, (size_t)np));
            types[np] = c->rel.cols[i].type_oid;
            np++;
        }
    }
    if (last && (size_t)np != json_array_size(last)) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", c->rel.name}),
                "the recorded position of the initial sync does not match the table's key");
        rc = DW_ERR_INVALID;
        goto out;
    }
    dw_buf_puts(&sql, "SELECT ");
    for (int i = 0; i < c->rel.ncols; i++) {
        char *qc = dw_pg_quote_ident(conn, c->rel.cols[i].name);
        dw_buf_printf(&sql, "%s%s", i ? ", " : "", qc ? qc : "NULL");
        PQfreemem(qc);
    }
    if (c->rel.ncols == 0)
        dw_buf_puts(&sql, "NULL");
    dw_buf_printf(&sql, " FROM ONLY %s.%s WHERE true", qs ? qs : "", qt ? qt : "");
    if (np) {
        dw_buf_printf(&sql, " AND (%s) > (", dw_buf_str(&keys));
        for (int i = 0; i < np; i++)
            dw_buf_printf(&sql, "%s$%d", i ? ", " : "", i + 1);
        dw_buf_puts(&sql, ")");
    }
    if (condition && *condition)
        dw_buf_printf(&sql, " AND (%s)", condition);
    dw_buf_printf(&sql, " ORDER BY %s LIMIT %" PRId64, dw_buf_str(&keys), rows);
    /* The condition may hold an operator's predicate: it runs where it can change nothing,
     * and with the string syntax dw_snapshot_condition_ok() assumed. */
    const char *what = "reading a chunk of a copy";
    if ((rc = dw_pg_exec(conn, what,
                         seen ? "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                                " SET LOCAL standard_conforming_strings = on"
                              : "BEGIN TRANSACTION READ ONLY;"
                                " SET LOCAL standard_conforming_strings = on")) != DW_OK)
        goto out;
    if (seen) {
        rc = dw_pg_query_row(conn, what, "SELECT pg_current_snapshot()::text", 0, NULL, &res);
        if (rc == DW_OK && (rc = parse_snapshot(PQgetvalue(res, 0, 0), seen)) != DW_OK)
            DW_ERROR("unexpected snapshot from the source server: %s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (rc != DW_OK) {
            (void)dw_pg_exec(conn, what, "ROLLBACK");
            goto out;
        }
    }
    if (!PQsendQueryParams(conn, dw_buf_str(&sql), np, types, params, NULL, NULL, 0)) {
        rc = dw_pg_fail(conn, NULL, what);
        (void)dw_pg_exec(conn, what, "ROLLBACK");
    }
out:
    PQfreemem(qs);
    PQfreemem(qt);
    dw_buf_cleanup(&keys);
    dw_buf_cleanup(&sql);
    return rc;
}

/* The rows of the SELECT chunk_select_send() sent (blocking until they are all in, unless
 * PQisBusy() says they are), and the end of its transaction. */
static dw_rc chunk_select_receive(PGconn *conn, PGresult **out)
{
    const char *what = "reading a chunk of a copy";
    PGresult *res = PQgetResult(conn), *extra;
    while ((extra = PQgetResult(conn)) != NULL)
        PQclear(extra);
    dw_rc rc = DW_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dw_pg_fail(conn, res, what);
        PQclear(res);
        (void)dw_pg_exec(conn, what, "ROLLBACK");
        return rc;
    }
    if ((rc = dw_pg_exec(conn, what, "COMMIT")) != DW_OK) {
        PQclear(res);
        return rc;
    }
    *out = res;
    return DW_OK;
}

/* The SELECT of one chunk, sent and waited for (dw_snapshot_scan(), which only reads). */
static dw_rc chunk_select(PGconn *conn, const struct dw_snapshot_chunk *c, const char *condition,
                          json_t *last, int64_t rows, struct read_snapshot *seen, PGresult **out)
{
    dw_rc rc = chunk_select_send(conn, c, condition, last, rows, seen);
    return rc == DW_OK ? chunk_select_receive(conn, out) : rc;
}

dw_rc dw_snapshot_chunk_begin(PGconn *conn, const struct dw_snapshot_request *req, int64_t rows,
                              const char *tag, struct dw_snapshot_chunk **out)
{
    struct dw_snapshot_chunk *c = dw_calloc(1, sizeof *c);
    json_t *last = NULL;
    dw_rc rc = describe_table(conn, req->table, &c->rel);
    if (rc != DW_OK)
        goto out;
    if ((rc = find_key(conn, c)) != DW_OK)
        goto out;
    if (c->nkeys == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"table", req->table},
                          {"hint", "Give the table a primary key (or a replica identity index)."}),
                "table has no primary key or replica identity index: the initial sync copies "
                "it in key order");
        rc = DW_ERR_UNSUPPORTED;
        goto out;
    }
    const char *why = NULL;
    if (req->condition && *req->condition && !dw_snapshot_condition_ok(req->condition, &why)) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", req->table}),
                "the copy's condition is refused: %s", why);
        rc = DW_ERR_INVALID;
        goto out;
    }
    if (req->last_key && *req->last_key) {
        last = json_loads(req->last_key, 0, NULL);
        if (!json_is_array(last)) {
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", req->table}),
                    "the recorded position of the initial sync is not a JSON array");
            rc = DW_ERR_INVALID;
            goto out;
        }
    }
    c->low = dw_asprintf("%s low", tag);
    c->high = dw_asprintf("%s high", tag);
    c->asked = rows > 0 ? rows : 10000;
    /* DBLog's order: low watermark, read, high watermark, each committed on its own. A
     * change the stream shows between the two may or may not be in what was read; the
     * stream's version wins for those keys (dw_snapshot_chunk_observe), as it does for a
     * change before the low watermark whose transaction the read did not see. */
    if ((rc = emit_watermark(conn, c->low)) != DW_OK)
        goto out;
    if ((rc = chunk_select_send(conn, c, req->condition, last, c->asked, &c->seen)) != DW_OK)
        goto out;
    c->reading = true;
out:
    json_decref(last);
    if (rc != DW_OK) {
        dw_snapshot_chunk_free(c);
        return rc;
    }
    *out = c;
    return DW_OK;
}

bool dw_snapshot_chunk_reading(const struct dw_snapshot_chunk *c)
{
    return c->reading;
}

dw_rc dw_snapshot_chunk_continue(PGconn *conn, struct dw_snapshot_chunk *c, bool *done)
{
    *done = !c->reading;
    if (!c->reading)
        return DW_OK;
    if (!PQconsumeInput(conn))
        return dw_pg_fail(conn, NULL, "reading a chunk of a copy");
    if (PQisBusy(conn))
        return DW_OK;
    c->reading = false;
    dw_rc rc = chunk_select_receive(conn, &c->rows);
    if (rc == DW_OK)
        rc = emit_watermark(conn, c->high);
    if (rc != DW_OK)
        return rc;
    int n = PQntuples(c->rows);
    c->final = n < c->asked;
    c->dropped = dw_calloc((size_t)n + 1, sizeof *c->dropped);
    struct dw_buf key;
    dw_buf_init(&key, 0);
    for (int r = 0; r < n; r++) {
        dw_buf_reset(&key);
        for (int k = 0; k < c->nkeys; k++)
            key_part(&key, PQgetvalue(c->rows, r, c->keycol[k]),
                     (size_t)PQgetlength(c->rows, r, c->keycol[k]));
        size_t klen = key.len;
        struct chunk_row *e = dw_malloc(sizeof *e + klen + 1);
        memset(e, 0, sizeof *e);
        e->row = r;
        memcpy(e->key, dw_buf_str(&key), klen + 1);
        struct chunk_row *dup = NULL;
        HASH_FIND_STR(c->index, e->key, dup);
        if (dup)
            free(e);
        else
            HASH_ADD_STR(c->index, key, e);
    }
    dw_buf_cleanup(&key);
    if (n > 0) {
        json_t *k = json_array();
        for (int j = 0; j < c->nkeys; j++)
            json_array_append_new(k,
                                  json_stringn(PQgetvalue(c->rows, n - 1, c->keycol[j]),
                                               (size_t)PQgetlength(c->rows, n - 1, c->keycol[j])));
        c->last_key = dw_json_dumps(k);
        json_decref(k);
    }
    *done = true;
    return DW_OK;
}

/* The JSON array of the key texts of a result's row r. */
static json_t *row_key_json(const struct dw_snapshot_chunk *c, const PGresult *res, int r)
{
    json_t *k = json_array();
    for (int j = 0; j < c->nkeys; j++)
        json_array_append_new(k, json_stringn(PQgetvalue(res, r, c->keycol[j]),
                                              (size_t)PQgetlength(res, r, c->keycol[j])));
    return k;
}

dw_rc dw_snapshot_scan(PGconn *conn, const struct dw_snapshot_request *req, int64_t rows,
                       const struct dw_stream_handler *h)
{
    struct dw_snapshot_chunk *c = dw_calloc(1, sizeof *c);
    json_t *last = NULL;
    const char *why = NULL;
    struct dw_txn txn = {0};
    uint32_t index = 0;
    dw_rc rc = DW_OK;
    rows = rows > 0 ? rows : 10000;
    if (req->condition && *req->condition && !dw_snapshot_condition_ok(req->condition, &why)) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", req->table}), "the condition is refused: %s",
                why);
        rc = DW_ERR_INVALID;
        goto out;
    }
    if ((rc = describe_table(conn, req->table, &c->rel)) != DW_OK ||
        (rc = find_key(conn, c)) != DW_OK)
        goto out;
    if (c->nkeys == 0) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", req->table}),
                "table has no primary key or replica identity index: it is read in key order");
        rc = DW_ERR_UNSUPPORTED;
        goto out;
    }
    for (;;) {
        if ((rc = chunk_select(conn, c, req->condition, last, rows, NULL, &c->rows)) != DW_OK)
            break;
        int n = PQntuples(c->rows);
        int64_t emitted = 0;
        c->dropped = dw_calloc((size_t)n + 1, sizeof *c->dropped);
        rc = dw_snapshot_chunk_emit(c, &txn, &index, h, &emitted);
        if (n > 0) {
            json_decref(last);
            last = row_key_json(c, c->rows, n - 1);
        }
        dw_snapshot_chunk_trim(c);
        if (rc != DW_OK || n < rows)
            break;
    }
out:
    json_decref(last);
    dw_snapshot_chunk_free(c);
    return rc;
}

dw_rc dw_snapshot_key_columns(PGconn *conn, const char *table, json_t **out)
{
    struct dw_snapshot_chunk *c = dw_calloc(1, sizeof *c);
    dw_rc rc = describe_table(conn, table, &c->rel);
    if (rc == DW_OK)
        rc = find_key(conn, c);
    if (rc == DW_OK) {
        json_t *names = json_array();
        for (int k = 0; k < c->nkeys; k++)
            json_array_append_new(names, json_string(c->rel.cols[c->keycol[k]].name));
        *out = names;
    }
    dw_snapshot_chunk_free(c);
    return rc;
}

int dw_snapshot_chunk_watermark(struct dw_snapshot_chunk *c, const struct dw_logical_message *m)
{
    if (c == NULL || strcmp(m->prefix, DW_SNAPSHOT_WATERMARK_PREFIX) != 0)
        return 0;
    if (m->len == strlen(c->low) && memcmp(m->content, c->low, m->len) == 0) {
        c->window_open = true;
        return DW_SNAPSHOT_LOW;
    }
    if (m->len == strlen(c->high) && memcmp(m->content, c->high, m->len) == 0) {
        c->window_open = false;
        return DW_SNAPSHOT_HIGH;
    }
    return 0;
}

/* Whether the chunk's read saw transaction xid (committed and visible to its snapshot). */
static bool read_saw(const struct dw_snapshot_chunk *c, uint32_t xid)
{
    const struct read_snapshot *s = &c->seen;
    if (xid_precedes(xid, s->xmin))
        return true;
    if (!xid_precedes(xid, s->xmax))
        return false;
    for (size_t i = 0; i < s->nxip; i++)
        if (s->xip[i] == xid)
            return false;
    return true;
}

size_t dw_snapshot_chunk_unseen(const struct dw_snapshot_chunk *c, const uint32_t **xids)
{
    *xids = c->seen.xip;
    return c->seen.nxip;
}

void dw_snapshot_chunk_observe(struct dw_snapshot_chunk *c, const struct dw_change *ch)
{
    if (c == NULL || c->rows == NULL)
        return;
    /* Outside the window, only a transaction the read did not see: one whose commit went
     * into the WAL before the low watermark but was not yet visible to the read. */
    if (!c->window_open && read_saw(c, ch->xid))
        return;
    int n = PQntuples(c->rows);
    if (ch->op == DW_CHANGE_TRUNCATE) {
        for (int i = 0; i < ch->ntruncated; i++)
            if (ch->truncated[i] && ch->truncated[i]->oid == c->rel.oid)
                memset(c->dropped, 1, (size_t)n * sizeof *c->dropped);
        return;
    }
    if (ch->rel == NULL || ch->rel->oid != c->rel.oid)
        return;
    struct dw_buf key;
    dw_buf_init(&key, 0);
    if (ch->op != DW_CHANGE_DELETE && tuple_key(c, ch->rel, &ch->new_tuple, &key))
        drop_key(c, dw_buf_str(&key));
    if (ch->old_kind && tuple_key(c, ch->rel, &ch->old_tuple, &key))
        drop_key(c, dw_buf_str(&key));
    dw_buf_cleanup(&key);
}

dw_rc dw_snapshot_chunk_emit(struct dw_snapshot_chunk *c, const struct dw_txn *txn, uint32_t *index,
                             const struct dw_stream_handler *h, int64_t *emitted)
{
    int n = PQntuples(c->rows);
    struct dw_datum *cols = dw_calloc((size_t)c->rel.ncols + 1, sizeof *cols);
    dw_rc rc = DW_OK;
    *emitted = 0;
    for (int r = 0; r < n && rc == DW_OK; r++) {
        if (c->dropped[r])
            continue;
        for (int i = 0; i < c->rel.ncols; i++)
            cols[i] = PQgetisnull(c->rows, r, i)
                          ? (struct dw_datum){DW_DATUM_NULL, NULL, 0}
                          : (struct dw_datum){DW_DATUM_TEXT, PQgetvalue(c->rows, r, i),
                                              (uint32_t)PQgetlength(c->rows, r, i)};
        struct dw_change ch = {.op = DW_CHANGE_INSERT,
                               .lsn = txn->commit_lsn,
                               .commit_lsn = txn->commit_lsn,
                               .xid = txn->xid,
                               .commit_time_us = txn->commit_time_us,
                               .index = (*index)++,
                               .rel = &c->rel,
                               .new_tuple = {c->rel.ncols, cols}};
        if (h->change)
            rc = h->change(h->user, &ch);
        (*emitted)++;
    }
    free(cols);
    return rc;
}

void dw_snapshot_chunk_trim(struct dw_snapshot_chunk *c)
{
    struct chunk_row *e, *tmp;
    HASH_ITER(hh, c->index, e, tmp)
    {
        HASH_DEL(c->index, e);
        free(e);
    }
    PQclear(c->rows);
    c->rows = NULL;
    free(c->dropped);
    c->dropped = NULL;
    c->window_open = false;
}

/* Collects the values of the chunk's key columns from a stream tuple (NUL-terminated copies). */
static bool tuple_key_values(const struct dw_snapshot_chunk *c, const struct dw_relation *rel,
                             const struct dw_tuple *t, char **out)
{
    if (t->cols == NULL || t->ncols != rel->ncols)
        return false;
    for (int k = 0; k < c->nkeys; k++) {
        const char *name = c->rel.cols[c->keycol[k]].name;
        int i = 0;
        while (i < rel->ncols && strcmp(rel->cols[i].name, name) != 0)
            i++;
        if (i == rel->ncols || t->cols[i].kind != DW_DATUM_TEXT)
            return false;
        out[k] = dw_strndup(t->cols[i].data, t->cols[i].len);
    }
    return true;
}

/* Whether one key (values of the chunk's key columns) sorts after the chunk's last key. */
static dw_rc key_beyond(PGconn *conn, const struct dw_snapshot_chunk *c, char *const *key,
                        json_t *last, bool *beyond)
{
    const char *params[128];
    Oid types[128];
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    dw_buf_puts(&sql, "SELECT ROW(");
    for (int k = 0; k < c->nkeys; k++) {
        params[k] = key[k];
        params[c->nkeys + k] = json_string_value(json_array_get(last, (size_t)k));
        types[k] = types[c->nkeys + k] = c->rel.cols[c->keycol[k]].type_oid;
        dw_buf_printf(&sql, "%s$%d", k ? ", " : "", k + 1);
    }
    dw_buf_puts(&sql, ") > ROW(");
    for (int k = 0; k < c->nkeys; k++)
        dw_buf_printf(&sql, "%s$%d", k ? ", " : "", c->nkeys + k + 1);
    dw_buf_puts(&sql, ")");
    dw_rc rc = DW_OK;
    PGresult *res =
        PQexecParams(conn, dw_buf_str(&sql), 2 * c->nkeys, types, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = dw_pg_fail(conn, res, "comparing a key with the initial sync's position");
    else
        *beyond = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    dw_buf_cleanup(&sql);
    return rc;
}

dw_rc dw_snapshot_chunk_beyond(PGconn *conn, const struct dw_snapshot_chunk *c,
                               const struct dw_change *ch, bool *beyond)
{
    *beyond = false;
    if (c->final || c->last_key == NULL || ch->rel == NULL || c->nkeys > 64)
        return DW_OK;
    json_t *last = json_loads(c->last_key, 0, NULL);
    char *key[64] = {NULL};
    dw_rc rc = DW_OK;
    bool all = true;
    const struct dw_tuple *tuples[2] = {ch->op != DW_CHANGE_DELETE ? &ch->new_tuple : NULL,
                                        ch->old_kind ? &ch->old_tuple : NULL};
    for (int t = 0; t < 2 && all && rc == DW_OK; t++) {
        if (tuples[t] == NULL)
            continue;
        bool b = false;
        if (!tuple_key_values(c, ch->rel, tuples[t], key))
            all = false;
        else if ((rc = key_beyond(conn, c, key, last, &b)) == DW_OK)
            all = b;
        for (int k = 0; k < c->nkeys; k++) {
            free(key[k]);
            key[k] = NULL;
        }
    }
    json_decref(last);
    if (rc == DW_OK)
        *beyond = all && (tuples[0] || tuples[1]);
    return rc;
}

const char *dw_snapshot_chunk_last_key(const struct dw_snapshot_chunk *c)
{
    return c->last_key;
}

bool dw_snapshot_chunk_final(const struct dw_snapshot_chunk *c)
{
    return c->final;
}

int64_t dw_snapshot_chunk_rows(const struct dw_snapshot_chunk *c)
{
    return c->rows ? PQntuples(c->rows) : 0;
}

void dw_snapshot_chunk_free(struct dw_snapshot_chunk *c)
{
    if (c == NULL)
        return;
    dw_snapshot_chunk_trim(c);
    free(c->low);
    free(c->high);
    free(c->last_key);
    free(c->keycol);
    free(c->seen.xip);
    dw_relation_cleanup(&c->rel);
    free(c);
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* Skips a quoted literal or identifier starting at s[*i] (the quote); false if unclosed. */
static bool skip_quoted(const char *s, size_t n, size_t *i, char quote, bool backslash_escapes)
{
    for (size_t j = *i + 1; j < n; j++) {
        if (backslash_escapes && s[j] == '\\') {
            j++;
            continue;
        }
        if (s[j] != quote)
            continue;
        if (j + 1 < n && s[j + 1] == quote) {
            j++;
            continue;
        }
        *i = j;
        return true;
    }
    return false;
}

/*
 * A lexer of just what it takes to know where literals, quoted identifiers and parentheses
 * are (PostgreSQL's rules under standard_conforming_strings = on, which the copy sets), not a
 * parser: the server parses the condition, this only keeps it inside its parentheses.
 */
bool dw_snapshot_condition_ok(const char *s, const char **why)
{
    size_t n = strlen(s);
    int depth = 0;
    bool blank = true;
    if (n > DW_SNAPSHOT_CONDITION_MAX) {
        *why = "longer than 16384 bytes";
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        blank = blank && isspace((unsigned char)c);
        if (c == '\'' || c == '"') {
            bool e = c == '\'' && i > 0 && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
                     (i < 2 || !ident_char(s[i - 2]));
            if (!skip_quoted(s, n, &i, c, e)) {
                *why = c == '"' ? "a quoted identifier is not closed" : "a literal is not closed";
                return false;
            }
        } else if (c == ';') {
            *why = "it contains ';' (one condition, not statements)";
            return false;
        } else if ((c == '-' && s[i + 1] == '-') || (c == '/' && s[i + 1] == '*')) {
            *why = "it contains a comment";
            return false;
        } else if (c == '$' || c == '\\') {
            *why = c == '$' ? "it contains '$' (dollar quotes and parameters are not accepted)"
                            : "it contains a backslash outside an E'' literal";
            return false;
        } else if (c == '(') {
            depth++;
        } else if (c == ')' && --depth < 0) {
            *why = "a ')' closes more than it opened";
            return false;
        }
    }
    if (depth != 0) {
        *why = "a '(' is not closed";
        return false;
    }
    if (blank) {
        *why = "it is empty";
        return false;
    }
    return true;
}

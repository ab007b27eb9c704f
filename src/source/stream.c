/* The non-blocking logical replication stream (see stream.h). */
#include "dwasync/clock.h"
#include "dwasync/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/failpoint.h"
#include "dwasync/buf.h"
#include "dwasync/daemon.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

/* The text forms of values are ours; and no JIT: a copy's chunk read is short, and with a
 * map's filter on a large table its estimate could reach jit_above_cost (as dw_pg_connect()). */
#define SESSION_OPTIONS                                                                            \
    "-c datestyle=ISO -c timezone=UTC -c intervalstyle=iso_8601 -c bytea_output=hex "              \
    "-c extra_float_digits=3 -c jit=off"
#define BACKOFF_MIN_MS     200
#define PING_AFTER_MS      100
#define CONNECT_TIMEOUT_MS 10000
#define CONNECT_POLL_MS    10
#define CLOSE_WAIT_MS      5000

struct dw_stream {
    char *conninfo, *slot, *publication, *record_path;
    int64_t status_interval_ms, reconnect_max_ms;
    bool create_slot;
    struct dw_types *types;
    struct dw_stream_handler h;

    PGconn *conn;
    struct dw_pgoutput *dec;
    FILE *record;

    dw_lsn start_lsn;      /* server WAL end at the first connect */
    dw_lsn slot_confirmed; /* the slot's confirmed position at the last connect */
    dw_lsn flushed;        /* what the caller made durable */
    dw_lsn reported;       /* flush position last sent */
    dw_lsn received;       /* see dw_stream_received_lsn() */
    dw_lsn last_data;      /* start of the latest XLogData message */
    dw_lsn keepalive_end;  /* WAL end of the latest keepalive */
    uint64_t data_seq;     /* XLogData messages received */
    uint64_t idle_seq;     /* data_seq when the caller last said it was idle */
    bool idle;

    int64_t now_ms, last_status_ms, last_recv_ms;
    struct dw_backoff backoff; /* paces reconnects; counts them */
    dw_rc handler_rc;          /* the consumer's failure, passed on as it is (not a reconnect) */
    PGconn *pending;           /* a reconnect in progress (PQconnectPoll) */
    int64_t connect_deadline_ms;
    size_t changes;    /* changes dispatched in the current step */
    bool budget_spent; /* the last step stopped at its budget: more may be buffered */
};

/* Microseconds since the PostgreSQL epoch, for status updates. */
static int64_t pg_now_us(void)
{
    return dw_clock_wall_us() - DW_PG_EPOCH_OFFSET_US;
}

static bool name_ok(const char *name, bool digit_first)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 63 || (!digit_first && name[0] >= '0' && name[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

bool dw_stream_slot_name_ok(const char *name)
{
    return name_ok(name, true);
}

bool dw_stream_publication_name_ok(const char *name)
{
    return name_ok(name, false);
}

/* libpq messages end with a newline; log lines must not. */
static const char *conn_error(PGconn *conn, char *buf, size_t size)
{
    snprintf(buf, size, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

/* Opens a connection with the session settings: complete, or only started when async. */
static dw_rc open_conn(const char *conninfo, bool replication, const char *application_name,
                       bool async, PGconn **out)
{
    char *err = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &err);
    if (parsed == NULL) {
        DW_ERROR("invalid [source] conninfo: %s", err ? err : "out of memory");
        PQfreemem(err);
        return DW_ERR_CONFIG;
    }
    const char *user_options = NULL;
    bool has_timeout = false;
    for (PQconninfoOption *opt = parsed; opt->keyword; opt++) {
        if (strcmp(opt->keyword, "options") == 0 && opt->val)
            user_options = opt->val;
        if (strcmp(opt->keyword, "connect_timeout") == 0 && opt->val)
            has_timeout = true;
    }
    /* The session settings go after the user's so the text forms are always ours. */
    char *options = dw_asprintf("%s%s%s", user_options ? user_options : "", user_options ? " " : "",
                                SESSION_OPTIONS);
    PQconninfoFree(parsed);
    const char *keys[7], *vals[7];
    int k = 0;
    keys[k] = "dbname", vals[k++] = conninfo;
    keys[k] = "options", vals[k++] = options;
    keys[k] = "application_name", vals[k++] = application_name;
    if (replication)
        keys[k] = "replication", vals[k++] = "database";
    if (!has_timeout)
        keys[k] = "connect_timeout", vals[k++] = "10";
    keys[k] = NULL, vals[k] = NULL;
    PGconn *conn = async ? PQconnectStartParams(keys, vals, 1) : PQconnectdbParams(keys, vals, 1);
    free(options);
    if (conn == NULL || PQstatus(conn) == CONNECTION_BAD) {
        char msg[1024];
        DW_ERROR("cannot connect to the source database: %s", conn_error(conn, msg, sizeof msg));
        PQfinish(conn);
        return DW_ERR_PG;
    }
    *out = conn;
    return DW_OK;
}

dw_rc dw_stream_connect(const char *conninfo, bool replication, const char *application_name,
                        PGconn **out)
{
    return open_conn(conninfo, replication, application_name, false, out);
}

/* Runs a simple query (a walsender accepts no other) expecting tuples. *out is the result,
 * or NULL on failure (so a caller's cleanup may PQclear it either way). */
static dw_rc simple_query(PGconn *conn, const char *what, const char *sql, PGresult **out)
{
    *out = NULL;
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        dw_rc rc = dw_pg_fail(conn, res, what);
        PQclear(res);
        return rc;
    }
    *out = res;
    return DW_OK;
}

dw_rc dw_stream_create_publication(const char *conninfo, const char *publication,
                                   const char *const *tables, size_t ntables)
{
    PGconn *conn = NULL;
    PGresult *res = NULL;
    struct dw_buf sql;
    dw_rc rc;
    dw_buf_init(&sql, 0);
    if (!dw_stream_publication_name_ok(publication)) {
        DW_ERROR("invalid publication name \"%s\": use 1-63 lowercase letters, digits and "
                 "underscores, not starting with a digit",
                 publication);
        rc = DW_ERR_INVALID;
        goto out;
    }
    if ((rc = dw_stream_connect(conninfo, false, "dwasync", &conn)) != DW_OK)
        goto out;
    const char *params[1] = {publication};
    if ((rc = dw_pg_query(conn, "looking up the publication",
                          "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, params, &res)) !=
        DW_OK)
        goto out;
    if (PQntuples(res) > 0) {
        rc = DW_ERR_EXISTS;
        goto out;
    }
    dw_buf_printf(&sql, "CREATE PUBLICATION %s", publication);
    if (ntables == 0)
        dw_buf_puts(&sql, " FOR ALL TABLES");
    for (size_t i = 0; i < ntables; i++) {
        const char *dot = strchr(tables[i], '.');
        char *schema = dot ? dw_strndup(tables[i], (size_t)(dot - tables[i])) : NULL;
        char *qs = schema ? dw_pg_quote_ident(conn, schema) : NULL;
        char *qt = dw_pg_quote_ident(conn, dot ? dot + 1 : tables[i]);
        dw_buf_printf(&sql, "%s%s%s%s", i ? ", " : " FOR TABLE ", qs ? qs : "", qs ? "." : "",
                      qt ? qt : "");
        PQfreemem(qs);
        PQfreemem(qt);
        free(schema);
    }
    rc = dw_pg_exec(conn, "creating the publication", dw_buf_str(&sql));
    if (rc == DW_OK)
        DW_INFO("created publication \"%s\"", publication);
out:
    PQclear(res);
    PQfinish(conn);
    dw_buf_cleanup(&sql);
    return rc;
}

dw_rc dw_stream_create_slot(PGconn *repl, const char *slot, bool export_snapshot,
                            dw_lsn *consistent_point, char **snapshot)
{
    char sql[256];
    PGresult *res = NULL;
    dw_rc rc;
    if (!dw_stream_slot_name_ok(slot))
        return DW_ERR_INVALID;
    /* PostgreSQL 15 spells the snapshot option differently from 14. */
    if (PQserverVersion(repl) >= 150000)
        snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT '%s')",
                 slot, export_snapshot ? "export" : "nothing");
    else
        snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", slot,
                 export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
    if ((rc = simple_query(repl, "creating the replication slot", sql, &res)) != DW_OK)
        return rc;
    dw_lsn cp = 0;
    if (PQntuples(res) != 1 || PQnfields(res) < 3 ||
        dw_lsn_parse(PQgetvalue(res, 0, 1), &cp) != DW_OK) {
        DW_ERROR("unexpected reply to CREATE_REPLICATION_SLOT");
        PQclear(res);
        return DW_ERR_PROTOCOL;
    }
    if (snapshot)
        *snapshot = PQgetisnull(res, 0, 2) ? NULL : dw_strdup(PQgetvalue(res, 0, 2));
    *consistent_point = cp;
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"slot", slot}), "created replication slot at %X/%X",
            DW_LSN_ARGS(cp));
    PQclear(res);
    return DW_OK;
}

dw_rc dw_stream_drop_slot(PGconn *repl, const char *slot)
{
    char sql[160];
    PGresult *res = NULL;
    if (!dw_stream_slot_name_ok(slot))
        return DW_ERR_INVALID;
    snprintf(sql, sizeof sql, "SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s'", slot);
    dw_rc rc = simple_query(repl, "looking up the replication slot", sql, &res);
    if (rc != DW_OK)
        return rc;
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    if (!exists)
        return DW_OK;
    snprintf(sql, sizeof sql, "DROP_REPLICATION_SLOT %s WAIT", slot);
    rc = simple_query(repl, "dropping the replication slot", sql, &res);
    if (rc == DW_OK) {
        PQclear(res);
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"slot", slot}), "dropped replication slot");
    }
    return rc;
}

static dw_lsn flush_position(const struct dw_stream *s);
static void record_type(void *user, uint32_t oid, char kind, uint32_t base);

/* --- connecting ------------------------------------------------------------------------- */

/*
 * The checks of stream.h; a permanent problem returns its code with *permanent set. A query
 * that fails is not one: the walsender may have been killed or the server restarted while
 * the checks ran, and the next attempt asks again.
 */
static dw_rc check_server(struct dw_stream *s, PGconn *conn, bool *permanent)
{
    PGresult *res = NULL;
    char sql[256];
    dw_rc rc;
    *permanent = true;
    int version = PQserverVersion(conn);
    if (version < 140000) {
        DW_ERROR("the source server runs PostgreSQL %d.%d; dwasync needs 14 or newer",
                 version / 10000, version % 10000);
        return DW_ERR_VERSION;
    }
    *permanent = false;
    if ((rc = simple_query(conn, "IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM", &res)) != DW_OK)
        return rc;
    dw_lsn xlogpos = 0;
    if (PQntuples(res) != 1 || PQnfields(res) < 4 ||
        dw_lsn_parse(PQgetvalue(res, 0, 2), &xlogpos) != DW_OK) {
        DW_ERROR("unexpected reply to IDENTIFY_SYSTEM");
        PQclear(res);
        return DW_ERR_PROTOCOL;
    }
    char *dbname = dw_strdup(PQgetvalue(res, 0, 3));
    PQclear(res);
    if (s->start_lsn == 0)
        s->start_lsn = xlogpos;

    if ((rc = simple_query(conn, "reading wal_level", "SELECT current_setting('wal_level')",
                           &res)) != DW_OK)
        goto out;
    *permanent = true;
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Set wal_level = logical in postgresql.conf (or ALTER SYSTEM "
                                   "SET wal_level = logical) and restart the server."}),
                "the source server has wal_level \"%s\"; logical replication needs \"logical\"",
                PQgetvalue(res, 0, 0));
        rc = DW_ERR_CONFIG;
        goto out;
    }
    PQclear(res);

    *permanent = false;
    snprintf(sql, sizeof sql, "SELECT 1 FROM pg_publication WHERE pubname = '%s'", s->publication);
    if ((rc = simple_query(conn, "looking up the publication", sql, &res)) != DW_OK)
        goto out;
    *permanent = true;
    if (PQntuples(res) == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Create it, e.g. CREATE PUBLICATION name FOR TABLE ..., in "
                                   "the source database."}),
                "publication \"%s\" does not exist in database \"%s\"", s->publication, dbname);
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    PQclear(res);

    *permanent = false;
    snprintf(sql, sizeof sql,
             "SELECT plugin, slot_type, database, wal_status, confirmed_flush_lsn"
             " FROM pg_replication_slots"
             " WHERE slot_name = '%s'",
             s->slot);
    if ((rc = simple_query(conn, "looking up the replication slot", sql, &res)) != DW_OK)
        goto out;
    *permanent = true;
    if (PQntuples(res) == 0) {
        PQclear(res);
        res = NULL;
        if (!s->create_slot) {
            DW_LOGF(DW_LOG_ERROR,
                    DW_FIELDS({"hint", "Create it with --create-slot, or check the slot name."}),
                    "replication slot \"%s\" does not exist", s->slot);
            rc = DW_ERR_NOT_FOUND;
            goto out;
        }
        *permanent = false;
        rc = dw_stream_create_slot(conn, s->slot, false, &s->slot_confirmed, NULL);
        goto out;
    }
    const char *plugin = PQgetvalue(res, 0, 0), *type = PQgetvalue(res, 0, 1);
    const char *db = PQgetvalue(res, 0, 2), *wal_status = PQgetvalue(res, 0, 3);
    if (dw_lsn_parse(PQgetvalue(res, 0, 4), &s->slot_confirmed) != DW_OK)
        s->slot_confirmed = 0;
    if (strcmp(type, "logical") != 0 || strcmp(plugin, "pgoutput") != 0) {
        DW_ERROR("replication slot \"%s\" is a %s slot with plugin \"%s\"; dwasync needs a "
                 "logical slot using pgoutput",
                 s->slot, type, plugin);
        rc = DW_ERR_CONFIG;
    } else if (strcmp(db, dbname) != 0) {
        DW_ERROR("replication slot \"%s\" belongs to database \"%s\", not \"%s\"", s->slot, db,
                 dbname);
        rc = DW_ERR_CONFIG;
    } else if (strcmp(wal_status, "lost") == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint",
                           "The server removed WAL the slot still needed (max_slot_wal_keep_size)."
                           " Drop the slot (SELECT pg_drop_replication_slot(...)), then create "
                           "it again and resynchronise the tables (job start --initial-sync)."}),
                "replication slot \"%s\" is invalidated (wal_status lost)", s->slot);
        rc = DW_ERR_STATE;
    }
out:
    PQclear(res);
    free(dbname);
    return rc;
}

/* Drops the connection and schedules the next attempt (capped, jittered backoff). */
static void disconnect(struct dw_stream *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
    dw_backoff_failed(&s->backoff, (uint64_t)s->now_ms);
    if (s->h.reset)
        s->h.reset(s->h.user);
    dw_pgoutput_reset(s->dec);
    /* The caller's reset dropped what was received and not yet applied: neither the old
     * connection's keepalive (flush_position()) nor what it received says any more what the
     * caller has seen. The next connection starts from what the caller confirmed. */
    s->keepalive_end = 0;
    s->idle = false;
    s->received = s->flushed > s->reported ? s->flushed : s->reported;
}

/* After a failed attempt: drops it and says when the next one comes (one line an attempt). */
static void retry_later(struct dw_stream *s)
{
    disconnect(s);
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"slot", s->slot}),
            "reconnecting the replication stream in %d ms (attempt %" PRIu64 ")",
            dw_backoff_timeout_ms(&s->backoff, (uint64_t)s->now_ms), s->backoff.failures + 1);
}

/*
 * Checks the server and starts streaming on an established replication connection (taken
 * over: kept on success, closed on failure). permanent tells the caller not to retry.
 */
static dw_rc start_stream(struct dw_stream *s, PGconn *conn, bool *permanent)
{
    PGresult *res = NULL;
    char sql[512];
    dw_rc rc;
    *permanent = false;
    if ((rc = check_server(s, conn, permanent)) != DW_OK)
        goto out;
    *permanent = false;
    if (s->types && (rc = dw_types_load(conn, s->types)) != DW_OK)
        goto out;
    if (s->types && s->record)
        dw_types_foreach(s->types, record_type, s);
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT %s LOGICAL %X/%X (proto_version '1', publication_names "
             "'\"%s\"', messages 'true')",
             s->slot, DW_LSN_ARGS(flush_position(s)), s->publication);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        rc = dw_pg_fail(conn, res, "START_REPLICATION");
        goto out;
    }
    if (PQsetnonblocking(conn, 1) != 0) {
        rc = DW_ERR_PG;
        goto out;
    }
    /* Asked from 0/0, the server starts at the slot's confirmed position: say which. */
    dw_lsn from = flush_position(s) ? flush_position(s) : s->slot_confirmed;
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"slot", s->slot}, {"publication", s->publication}),
            "streaming from %X/%X", DW_LSN_ARGS(from));
    s->conn = conn;
    conn = NULL;
    dw_backoff_succeeded(&s->backoff);
    s->last_status_ms = s->now_ms;
    s->last_recv_ms = s->now_ms;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* Connects (blocking), checks and starts streaming. */
static dw_rc connect_stream(struct dw_stream *s, bool *permanent)
{
    PGconn *conn = NULL;
    dw_rc rc = dw_stream_connect(s->conninfo, true, "dwasync", &conn);
    if (rc != DW_OK) {
        *permanent = rc == DW_ERR_CONFIG;
        return rc;
    }
    return start_stream(s, conn, permanent);
}

/*
 * Reconnecting without blocking the caller's loop: the connection is started and then
 * advanced by PQconnectPoll() on every step (connect_timeout is enforced here, libpq only
 * does that in blocking connects). The checks and START_REPLICATION that follow are quick
 * round trips on a live server and run at once.
 */
static dw_rc reconnect_step(struct dw_stream *s)
{
    bool permanent = false;
    dw_rc rc;
    if (s->pending == NULL) {
        if (!dw_backoff_due(&s->backoff, (uint64_t)s->now_ms))
            return DW_OK;
        rc = open_conn(s->conninfo, true, "dwasync", true, &s->pending);
        if (rc == DW_ERR_CONFIG)
            return rc;
        if (rc != DW_OK)
            goto retry;
        s->connect_deadline_ms = s->now_ms + CONNECT_TIMEOUT_MS;
    }
    PostgresPollingStatusType st = PQconnectPoll(s->pending);
    if (st == PGRES_POLLING_FAILED ||
        (st != PGRES_POLLING_OK && s->now_ms > s->connect_deadline_ms)) {
        char msg[1024];
        DW_WARN("cannot connect to the source database: %s",
                st == PGRES_POLLING_FAILED ? conn_error(s->pending, msg, sizeof msg) : "timeout");
        PQfinish(s->pending);
        s->pending = NULL;
        goto retry;
    }
    if (st != PGRES_POLLING_OK)
        return DW_OK;
    PGconn *conn = s->pending;
    s->pending = NULL;
    rc = start_stream(s, conn, &permanent);
    if (rc == DW_OK || permanent)
        return rc;
retry:
    retry_later(s);
    return DW_OK;
}

/* --- streaming -------------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static dw_lsn flush_position(const struct dw_stream *s)
{
    dw_lsn pos = s->flushed;
    if (s->idle && s->idle_seq == s->data_seq && !dw_pgoutput_in_txn(s->dec) &&
        s->keepalive_end > pos)
        pos = s->keepalive_end;
    return pos > s->reported ? pos : s->reported;
}

static dw_rc send_status(struct dw_stream *s, bool reply)
{
    uint8_t msg[34];
    dw_lsn flush = flush_position(s);
    dw_lsn written = s->received > flush ? s->received : flush;
    /* A crash here: the checkpoint is durable, the slot still at the older position; the
     * server redelivers what the checkpoint covers and the pipeline must take it again. */
    if (s->flushed > s->reported && DW_FAILPOINT("checkpoint_before_slot_confirm"))
        return DW_ERR_IO;
    msg[0] = 'r';
    put_u64(msg + 1, written);
    put_u64(msg + 9, flush);
    put_u64(msg + 17, 0);
    put_u64(msg + 25, (uint64_t)pg_now_us());
    msg[33] = reply ? 1 : 0;
    if (PQputCopyData(s->conn, (const char *)msg, sizeof msg) <= 0 || PQflush(s->conn) < 0) {
        char err[512];
        DW_WARN("cannot send a status update: %s", conn_error(s->conn, err, sizeof err));
        return DW_ERR_IO;
    }
    if (flush != s->reported)
        DW_DEBUG("confirmed %X/%X", DW_LSN_ARGS(flush));
    s->reported = flush;
    s->last_status_ms = s->now_ms;
    return DW_OK;
}

static dw_rc on_begin(void *user, const struct dw_txn *t)
{
    struct dw_stream *s = user;
    return s->handler_rc = (s->h.begin ? s->h.begin(s->h.user, t) : DW_OK);
}

static dw_rc on_change(void *user, const struct dw_change *c)
{
    struct dw_stream *s = user;
    s->changes++;
    return s->handler_rc = (s->h.change ? s->h.change(s->h.user, c) : DW_OK);
}

static dw_rc on_commit(void *user, const struct dw_txn *t)
{
    struct dw_stream *s = user;
    if (t->end_lsn > s->received)
        s->received = t->end_lsn;
    return s->handler_rc = (s->h.commit ? s->h.commit(s->h.user, t) : DW_OK);
}

static dw_rc on_message(void *user, const struct dw_logical_message *m)
{
    struct dw_stream *s = user;
    return s->handler_rc = (s->h.message ? s->h.message(s->h.user, m) : DW_OK);
}

static void record_frame(struct dw_stream *s, const char *buf, int len);

static void record_type(void *user, uint32_t oid, char kind, uint32_t base)
{
    char f[10] = {'y',  (char)(oid >> 24),  (char)(oid >> 16),  (char)(oid >> 8),  (char)oid,
                  kind, (char)(base >> 24), (char)(base >> 16), (char)(base >> 8), (char)base};
    record_frame(user, f, sizeof f);
}

static void record_frame(struct dw_stream *s, const char *buf, int len)
{
    uint8_t n[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    if (fwrite(n, 1, 4, s->record) != 4 || fwrite(buf, 1, (size_t)len, s->record) != (size_t)len)
        DW_WARN("cannot write the recording: %s", strerror(errno));
}

/*
 * A Y message announces a user-defined type before a relation uses it. One created after we
 * connected is not in the type map yet: look it up now on a short-lived side connection (the
 * replication connection is busy streaming). Rare: pgoutput sends Y once per relation
 * description. A type that is no domain, enum or array is remembered as text so that it is
 * looked up only once.
 */
static void refresh_types(struct dw_stream *s, const uint8_t *msg, size_t len)
{
    if (s->types == NULL || len < 5 || msg[0] != 'Y')
        return;
    uint32_t oid = (uint32_t)msg[1] << 24 | (uint32_t)msg[2] << 16 | (uint32_t)msg[3] << 8 | msg[4];
    if (dw_types_has(s->types, oid))
        return;
    PGconn *side = NULL;
    if (dw_stream_connect(s->conninfo, false, "dwasync types", &side) == DW_OK &&
        dw_types_load(side, s->types) == DW_OK) {
        if (!dw_types_has(s->types, oid))
            dw_types_add(s->types, oid, 't', 25);
        if (s->record)
            dw_types_foreach(s->types, record_type, s);
    }
    PQfinish(side);
}

/* One CopyData message from the server. */
static dw_rc handle_message(struct dw_stream *s, const char *buf, int len)
{
    const uint8_t *p = (const uint8_t *)buf;
    s->last_recv_ms = s->now_ms;
    if (len >= 25 && p[0] == 'w') {
        static const struct dw_pgoutput_handler fwd = {NULL, on_begin, on_change, on_commit,
                                                       on_message};
        struct dw_pgoutput_handler h = fwd;
        h.user = s;
        s->data_seq++;
        s->last_data = get_u64(p + 1);
        refresh_types(s, p + 25, (size_t)len - 25);
        if (s->record)
            record_frame(s, buf, len);
        return dw_pgoutput_decode(s->dec, s->last_data, p + 25, (size_t)len - 25, &h);
    }
    if (len >= 18 && p[0] == 'k') {
        dw_lsn end = get_u64(p + 1);
        if (end > s->keepalive_end)
            s->keepalive_end = end;
        if (!dw_pgoutput_in_txn(s->dec) && end > s->received)
            s->received = end;
        if (p[17])
            return send_status(s, false) == DW_OK ? DW_OK : DW_ERR_IO;
        return DW_OK;
    }
    DW_ERROR("unexpected replication message \"%c\" (%d bytes)", len > 0 ? buf[0] : '?', len);
    return DW_ERR_PROTOCOL;
}

static dw_rc read_messages(struct dw_stream *s, size_t max_changes)
{
    char err[512];
    bool consumed = false;
    s->changes = 0;
    while (s->changes < max_changes) {
        char *buf = NULL;
        int len = PQgetCopyData(s->conn, &buf, 1);
        if (len == 0 && !consumed) {
            /* The socket is read only once libpq's buffer is drained: libpq takes all the
             * socket holds and grows its buffer to fit, so reading ahead of what is processed
             * let it grow by tens of megabytes while the walsender outpaced the pipeline.
             * Left in the socket, the data holds the walsender back instead. */
            if (!PQconsumeInput(s->conn)) {
                DW_WARN("replication connection lost: %s", conn_error(s->conn, err, sizeof err));
                return DW_ERR_IO;
            }
            consumed = true;
            continue;
        }
        if (len == 0)
            return DW_OK;
        if (len == -1) {
            PGresult *res = PQgetResult(s->conn);
            if (PQresultStatus(res) == PGRES_COMMAND_OK)
                DW_WARN("the server ended the replication stream");
            else
                dw_pg_fail(s->conn, res, "replication stream");
            PQclear(res);
            return DW_ERR_IO;
        }
        if (len < 0) {
            DW_WARN("replication connection lost: %s", conn_error(s->conn, err, sizeof err));
            return DW_ERR_IO;
        }
        dw_rc rc = handle_message(s, buf, len);
        PQfreemem(buf);
        if (rc != DW_OK)
            return rc;
    }
    s->budget_spent = true; /* more may wait in libpq's buffer */
    return DW_OK;
}

dw_rc dw_stream_open(const struct dw_stream_options *o, const struct dw_stream_handler *h,
                     struct dw_stream **out)
{
    if (!dw_stream_slot_name_ok(o->slot)) {
        DW_ERROR("invalid slot name \"%s\": use 1-63 lowercase letters, digits and underscores",
                 o->slot ? o->slot : "");
        return DW_ERR_INVALID;
    }
    if (!dw_stream_publication_name_ok(o->publication)) {
        DW_ERROR("invalid publication name \"%s\": use 1-63 lowercase letters, digits and "
                 "underscores, not starting with a digit",
                 o->publication ? o->publication : "");
        return DW_ERR_INVALID;
    }
    struct dw_stream *s = dw_calloc(1, sizeof *s);
    s->conninfo = dw_strdup(o->conninfo ? o->conninfo : "");
    s->slot = dw_strdup(o->slot);
    s->publication = dw_strdup(o->publication);
    s->status_interval_ms = o->status_interval_ms > 0 ? o->status_interval_ms : 10000;
    s->reconnect_max_ms = o->reconnect_max_ms > 0 ? o->reconnect_max_ms : 30000;
    s->create_slot = o->create_slot;
    s->types = o->types;
    s->h = *h;
    s->dec = dw_pgoutput_new();
    dw_backoff_init(&s->backoff, BACKOFF_MIN_MS, (uint64_t)s->reconnect_max_ms);
    s->now_ms = dw_clock_ms();
    if (o->record_path) {
        s->record_path = dw_strdup(o->record_path);
        if ((s->record = fopen(o->record_path, "ab")) == NULL) {
            DW_ERROR("cannot open \"%s\": %s", o->record_path, strerror(errno));
            dw_stream_close(s);
            return DW_ERR_IO;
        }
    }
    bool permanent;
    dw_rc rc = connect_stream(s, &permanent);
    if (rc != DW_OK && permanent) {
        dw_stream_close(s);
        return rc;
    }
    if (rc != DW_OK)
        retry_later(s);
    *out = s;
    return DW_OK;
}

int dw_stream_fd(const struct dw_stream *s)
{
    return s->conn ? PQsocket(s->conn) : -1;
}

dw_rc dw_stream_step(struct dw_stream *s, size_t max_changes)
{
    s->now_ms = dw_clock_ms();
    s->budget_spent = false;
    if (s->conn == NULL) {
        dw_rc rc = reconnect_step(s);
        if (rc != DW_OK || s->conn == NULL)
            return rc;
    }
    /* max_changes 0: the caller has no room; only the timers are served. */
    if (max_changes > 0) {
        s->handler_rc = DW_OK;
        dw_rc rc = read_messages(s, max_changes);
        if (s->handler_rc != DW_OK)
            return s->handler_rc;
        if (rc == DW_ERR_IO || rc == DW_ERR_PROTOCOL) {
            disconnect(s);
            return DW_OK;
        }
        if (rc != DW_OK)
            return rc;
    }
    s->now_ms = dw_clock_ms();
    bool due = s->now_ms - s->last_status_ms >= s->status_interval_ms;
    /* While behind the start position and hearing nothing, ask for a keepalive. */
    bool ping = max_changes > 0 && s->received < s->start_lsn && !dw_pgoutput_in_txn(s->dec) &&
                s->now_ms - s->last_recv_ms >= PING_AFTER_MS &&
                s->now_ms - s->last_status_ms >= PING_AFTER_MS;
    if (due || ping || flush_position(s) > s->reported) {
        if (send_status(s, ping) != DW_OK) {
            disconnect(s);
            return DW_OK;
        }
    }
    if (PQflush(s->conn) < 0)
        disconnect(s);
    return DW_OK;
}

bool dw_stream_budget_spent(const struct dw_stream *s)
{
    return s->budget_spent;
}

int dw_stream_timeout_ms(const struct dw_stream *s)
{
    int64_t now = dw_clock_ms();
    if (s->pending)
        return CONNECT_POLL_MS; /* libpq may be waiting to write: no fd to offer for that */
    if (s->conn == NULL)
        return dw_backoff_timeout_ms(&s->backoff, (uint64_t)now);
    int64_t until = s->last_status_ms + s->status_interval_ms - now;
    if (s->received < s->start_lsn) {
        int64_t ping = s->last_status_ms + PING_AFTER_MS - now;
        if (ping < until)
            until = ping;
    }
    return until < 0 ? 0 : (int)until;
}

void dw_stream_confirm(struct dw_stream *s, dw_lsn flushed, bool idle)
{
    if (flushed > s->flushed)
        s->flushed = flushed;
    s->idle = idle;
    s->idle_seq = s->data_seq;
}

dw_lsn dw_stream_received_lsn(const struct dw_stream *s)
{
    return s->received;
}

dw_lsn dw_stream_start_lsn(const struct dw_stream *s)
{
    return s->start_lsn;
}

dw_lsn dw_stream_reported_lsn(const struct dw_stream *s)
{
    return s->reported;
}

uint64_t dw_stream_reconnects(const struct dw_stream *s)
{
    return s->backoff.reconnects;
}

bool dw_stream_connected(const struct dw_stream *s)
{
    return s->conn != NULL;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

dw_rc dw_stream_replay(const char *path, struct dw_types *types,
                       const struct dw_pgoutput_handler *h)
{
    FILE *f = fopen(path, "rb");
    struct dw_buf frame;
    struct dw_pgoutput *dec = dw_pgoutput_new();
    dw_rc rc = DW_OK;
    dw_buf_init(&frame, 0);
    if (f == NULL) {
        DW_ERROR("cannot open \"%s\": %s", path, strerror(errno));
        rc = DW_ERR_IO;
        goto out;
    }
    uint8_t n[4];
    size_t got;
    while ((got = fread(n, 1, 4, f)) == 4) {
        uint32_t len = be32(n);
        dw_buf_reset(&frame);
        if ((rc = dw_buf_reserve(&frame, len)) != DW_OK || fread(frame.data, 1, len, f) != len) {
            rc = DW_ERR_PROTOCOL;
            break;
        }
        const uint8_t *p = (const uint8_t *)frame.data;
        if (len >= 25 && p[0] == 'w') {
            rc = dw_pgoutput_decode(dec, get_u64(p + 1), p + 25, len - 25, h);
        } else if (len == 10 && p[0] == 'y') {
            if (types)
                dw_types_add(types, be32(p + 1), (char)p[5], be32(p + 6));
        } else {
            rc = DW_ERR_PROTOCOL;
        }
        if (rc != DW_OK)
            break;
    }
    if (rc == DW_OK && got != 0)
        rc = DW_ERR_PROTOCOL;
    if (rc == DW_ERR_PROTOCOL)
        DW_ERROR("\"%s\" is not a valid recording", path);
out:
    if (f)
        fclose(f);
    dw_pgoutput_free(dec);
    dw_buf_cleanup(&frame);
    return rc;
}

/* Waits until conn's socket is ready for what libpq needs (writing while it has output
 * queued, else reading) and takes in what arrived; false past the deadline or on an error. */
static bool await_conn(PGconn *conn, bool writing, int64_t deadline_ms)
{
    int64_t left = deadline_ms - dw_clock_ms();
    struct pollfd p = {.fd = PQsocket(conn), .events = writing ? POLLOUT : POLLIN};
    if (left <= 0 || p.fd < 0)
        return false;
    int n = poll(&p, 1, (int)left);
    if (n < 0 && errno == EINTR)
        return true; /* a signal: look again */
    return n > 0 && PQconsumeInput(conn);
}

/*
 * Ends the stream as pg_recvlogical does: our CopyDone, then the server's CopyDone and the
 * end of START_REPLICATION. The walsender reads our last status before our CopyDone and
 * releases the slot before it ends the command, so once this returns the slot is free and
 * its confirmed position is the one last reported: a `dwasync run --until-caught-up` that
 * has returned leaves the slot where its checkpoint is, for the next command to see (the
 * replay horizon, errtable.h) and take. What the server sent meanwhile is dropped: it is
 * unconfirmed, so the slot sends it again. Bounded: a server that does not answer in
 * CLOSE_WAIT_MS is left to PQfinish.
 */
static void end_copy(PGconn *conn)
{
    int64_t deadline = dw_clock_ms() + CLOSE_WAIT_MS;
    if (PQputCopyEnd(conn, NULL) != 1)
        return;
    for (;;) { /* until the server's CopyDone */
        int queued = PQflush(conn);
        if (queued < 0)
            return;
        if (queued == 0) {
            char *buf = NULL;
            int len;
            while ((len = PQgetCopyData(conn, &buf, 1)) > 0)
                PQfreemem(buf);
            if (len == -1)
                break;
            if (len == -2)
                return;
        }
        if (!await_conn(conn, queued == 1, deadline))
            return;
    }
    for (;;) { /* the command's results, to the end */
        while (!PQisBusy(conn)) {
            PGresult *res = PQgetResult(conn);
            if (res == NULL)
                return;
            PQclear(res);
        }
        if (!await_conn(conn, false, deadline))
            return;
    }
}

void dw_stream_close(struct dw_stream *s)
{
    if (s == NULL)
        return;
    if (s->conn) {
        s->now_ms = dw_clock_ms();
        if (PQstatus(s->conn) == CONNECTION_OK && send_status(s, false) == DW_OK)
            end_copy(s->conn);
        PQfinish(s->conn);
    }
    PQfinish(s->pending);
    if (s->record)
        fclose(s->record);
    dw_pgoutput_free(s->dec);
    free(s->conninfo);
    free(s->slot);
    free(s->publication);
    free(s->record_path);
    free(s);
}

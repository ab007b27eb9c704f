/*
 * The libpq helpers (see pg.h): connect, run a statement, a parameterized query or one that
 * returns one row (or one integer), and log a
 * failure once with the server's primary message, SQLSTATE and hint, never the conninfo.
 */
#include "dwasync/pg.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/log.h"

/* libpq messages end with a newline; log lines must not. */
static void chomp_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    while (n > 0 && (src[n - 1] == '\n' || src[n - 1] == ' '))
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

dw_rc dw_pg_connect(const char *conninfo, const char *application_name, PGconn **out)
{
    const char *keys[] = {"dbname", "application_name", "fallback_application_name", NULL};
    const char *vals[] = {conninfo, application_name, "dwasync", NULL};
    /* expand_dbname=1: the conninfo may be a string or a URI. */
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char msg[1024];
        chomp_copy(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
        DW_ERROR("cannot connect to postgres: %s", msg);
        PQfinish(conn);
        return DW_ERR_PG;
    }
    /* dwasync's statements are short: a plan whose estimates run high (a queue of rows
     * freshly changed) would spend far longer compiling than executing. */
    PGresult *res = PQexec(conn, "SET jit = off");
    PQclear(res);
    *out = conn;
    return DW_OK;
}

const char *dw_pg_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

dw_rc dw_pg_fail(PGconn *conn, const PGresult *res, const char *what)
{
    char msg[2048];
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    chomp_copy(msg, sizeof msg, primary ? primary : PQerrorMessage(conn));
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"sqlstate", dw_pg_sqlstate(res)}, {"hint", hint}),
            "%s failed: %s", what, msg);
    return DW_ERR_PG;
}

/* A statement's result into *out if it succeeded (rows or none), else logged and freed. */
static dw_rc take_result(PGconn *conn, const char *what, PGresult *res, PGresult **out)
{
    *out = NULL;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        dw_rc rc = dw_pg_fail(conn, res, what);
        PQclear(res);
        return rc;
    }
    *out = res;
    return DW_OK;
}

dw_rc dw_pg_query(PGconn *conn, const char *what, const char *sql, int nparams,
                  const char *const *params, PGresult **out)
{
    return take_result(conn, what, PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0),
                       out);
}

dw_rc dw_pg_send(PGconn *conn, const char *what, const char *sql, int nparams,
                 const char *const *params)
{
    if (PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0) != 1)
        return dw_pg_fail(conn, NULL, what);
    return DW_OK;
}

dw_rc dw_pg_receive(PGconn *conn, const char *what, PGresult **out)
{
    /* One statement: its result, then NULL (read to the end, so the connection is free). */
    PGresult *res = PQgetResult(conn), *more;
    while ((more = PQgetResult(conn)) != NULL)
        PQclear(more);
    return take_result(conn, what, res, out);
}

dw_rc dw_pg_query_row(PGconn *conn, const char *what, const char *sql, int nparams,
                      const char *const *params, PGresult **out)
{
    *out = NULL;
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(conn, what, sql, nparams, params, &res);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(res) != 1) {
        DW_ERROR("%s failed: %d rows where one was expected", what, PQntuples(res));
        PQclear(res);
        return DW_ERR_PG;
    }
    *out = res;
    return DW_OK;
}

dw_rc dw_pg_query_int(PGconn *conn, const char *what, const char *sql, int nparams,
                      const char *const *params, int64_t *out)
{
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query_row(conn, what, sql, nparams, params, &res);
    if (rc != DW_OK)
        return rc;
    *out = PQgetisnull(res, 0, 0) ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return DW_OK;
}

dw_rc dw_pg_exec(PGconn *conn, const char *what, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    dw_rc rc = DW_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = dw_pg_fail(conn, res, what);
    PQclear(res);
    return rc;
}

char *dw_pg_quote_ident(PGconn *conn, const char *ident)
{
    return PQescapeIdentifier(conn, ident, strlen(ident));
}

/*
 * pg.h - thin helpers over libpq for the control and source connections.
 *
 * They exist so that every Postgres failure is logged the same way (the command's purpose,
 * the server's message and SQLSTATE, never the conninfo, which may hold a password) and so
 * that callers write `if ((rc = dw_pg_exec(...)) != DW_OK) goto out;` instead of checking
 * PGresult statuses by hand. Connections are caller-owned PGconn pointers (PQfinish).
 */
#ifndef DWASYNC_PG_H
#define DWASYNC_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dwasync/rc.h"

/* Connects with a conninfo; logs and returns DW_ERR_PG on failure. *out set on success. */
dw_rc dw_pg_connect(const char *conninfo, const char *application_name, PGconn **out);

/* Runs a command that returns no rows (or whose rows are ignored). what names it in logs. */
dw_rc dw_pg_exec(PGconn *conn, const char *what, const char *sql);

/*
 * Runs a parameterised query (text parameters, NULL allowed). On success *out holds the
 * result (caller PQclear()s it); PGRES_COMMAND_OK and PGRES_TUPLES_OK count as success. On
 * failure *out is NULL, so one PQclear() on every path is right whatever came before.
 */
dw_rc dw_pg_query(PGconn *conn, const char *what, const char *sql, int nparams,
                  const char *const *params, PGresult **out);

/*
 * dw_pg_query() in two halves, for work done while the server runs the query: the first
 * sends it (DW_ERR_PG, logged, if it cannot be sent), the second waits for its result, as
 * dw_pg_query() returns it. Nothing else may use conn in between, and a query sent must be
 * received, even when the caller gives up on it.
 */
dw_rc dw_pg_send(PGconn *conn, const char *what, const char *sql, int nparams,
                 const char *const *params);
dw_rc dw_pg_receive(PGconn *conn, const char *what, PGresult **out);

/*
 * dw_pg_query() for a query that returns exactly one row; any other number of rows is
 * logged with what and returns DW_ERR_PG (*out NULL, as on any failure). On success *out holds the
 * result (caller PQclear()s it).
 */
dw_rc dw_pg_query_row(PGconn *conn, const char *what, const char *sql, int nparams,
                      const char *const *params, PGresult **out);

/*
 * dw_pg_query_row() for a query whose one row's first column is an integer (a count, a
 * version, what a function returns): *out gets it, 0 for NULL. The result is cleared.
 */
dw_rc dw_pg_query_int(PGconn *conn, const char *what, const char *sql, int nparams,
                      const char *const *params, int64_t *out);

/* Logs a failed result with what, the message and SQLSTATE; returns DW_ERR_PG. */
dw_rc dw_pg_fail(PGconn *conn, const PGresult *res, const char *what);

/* SQLSTATE of a failed result ("" when none). Borrowed from res. */
const char *dw_pg_sqlstate(const PGresult *res);

/* Quotes an identifier with PQescapeIdentifier; caller frees with PQfreemem. NULL on error. */
char *dw_pg_quote_ident(PGconn *conn, const char *ident);

#endif

/* The check before a replication slot is streamed from or dropped (slotguard.h). */
#include "dwasync/slotguard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

dw_rc dw_slotguard_judge(PGconn *conn, const char *job, const char *slot, bool *exists, char *why,
                         size_t why_size)
{
    PGresult *res = NULL;
    char *sql = NULL, *lit = NULL;
    dw_rc rc = DW_ERR_STATE;
    char own[128];
    snprintf(own, sizeof own, "%s%s", DW_SLOT_PREFIX, job);
    if (strcmp(slot, own) != 0) {
        snprintf(why, why_size, "replication slot \"%s\" is not job \"%s\"'s own (\"%s\")", slot,
                 job, own);
        goto out;
    }
    /* A replication connection takes only simple queries: the name goes in as a literal. */
    lit = PQescapeLiteral(conn, slot, strlen(slot));
    if (lit == NULL) {
        rc = DW_ERR_PG;
        DW_ERROR("cannot quote replication slot name \"%s\": %s", slot, PQerrorMessage(conn));
        goto out;
    }
    sql = dw_asprintf("SELECT slot_type, coalesce(plugin, ''), coalesce(database::text, ''),"
                      " current_database() FROM pg_catalog.pg_replication_slots"
                      " WHERE slot_name = %s",
                      lit);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dw_pg_fail(conn, res, "checking the replication slot");
        goto out;
    }
    if (PQntuples(res) == 0) {
        if (exists)
            *exists = false;
        rc = DW_OK;
        goto out;
    }
    const char *type = PQgetvalue(res, 0, 0), *plugin = PQgetvalue(res, 0, 1),
               *db = PQgetvalue(res, 0, 2), *current = PQgetvalue(res, 0, 3);
    char what[200];
    if (strcmp(type, "logical") != 0)
        snprintf(what, sizeof what, "it is a %s slot", type);
    else if (strcmp(plugin, "pgoutput") != 0)
        snprintf(what, sizeof what, "it decodes with plugin \"%s\"", plugin);
    else if (strcmp(db, current) != 0)
        snprintf(what, sizeof what, "it belongs to database \"%s\"", db);
    else
        what[0] = '\0';
    if (what[0] != '\0') {
        snprintf(why, why_size,
                 "replication slot \"%s\" is not job \"%s\"'s: %s, dwasync uses only a logical "
                 "pgoutput slot of database \"%s\"",
                 slot, job, what, current);
        goto out;
    }
    if (exists)
        *exists = true;
    rc = DW_OK;
out:
    PQclear(res);
    PQfreemem(lit);
    free(sql);
    return rc;
}

dw_rc dw_slotguard_check(PGconn *conn, const char *job, const char *slot, bool *exists)
{
    char why[512];
    dw_rc rc = dw_slotguard_judge(conn, job, slot, exists, why, sizeof why);
    if (rc == DW_ERR_STATE)
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"job", job}, {"slot", slot},
                          {"hint", "Another consumer owns this slot; it was left untouched. Drop "
                                   "or rename it yourself if it is no longer needed."}),
                "%s", why);
    return rc;
}

dw_rc dw_slotguard_verify(const char *conninfo, const char *job, const char *slot)
{
    PGconn *conn = NULL;
    dw_rc rc = dw_pg_connect(conninfo, "dwasync run (slot check)", &conn);
    if (rc == DW_OK)
        rc = dw_slotguard_check(conn, job, slot, NULL);
    PQfinish(conn);
    return rc;
}

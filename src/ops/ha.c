/*
 * The job lock (see ha.h): LOCK TABLE ... NOWAIT on the dedicated lock session, tried at most
 * once per poll interval by a standby and verified through dwasync.job_lock_holder() by the
 * active runner, which tells a lost session (take the lock again) from a lost lock.
 * dw_ha_heartbeat() keeps the job's dwasync.runner row (host, pid, version, status,
 * throttling) current for `dwasync status`.
 */
#include "dwasync/ha.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

void dw_ha_init(struct dw_ha *ha, PGconn *conn, int64_t job_id, uint64_t poll_ms)
{
    memset(ha, 0, sizeof *ha);
    ha->conn = conn;
    ha->job_id = job_id;
    ha->poll_ms = poll_ms ? poll_ms : DW_HA_DEFAULT_POLL_MS;
}

/* Closes the lock session: ending it ends the transaction and releases the row lock. */
static void close_lock(struct dw_ha *ha)
{
    PQfinish(ha->lock);
    ha->lock = NULL;
    ha->active = false;
}

/* Opens the lock session with the control connection's parameters and our own name. */
static dw_rc open_lock(struct dw_ha *ha)
{
    PQconninfoOption *opts = PQconninfo(ha->conn);
    if (opts == NULL)
        return DW_ERR_PG;
    size_t n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    const char **keys = dw_calloc(n + 2, sizeof *keys);
    const char **vals = dw_calloc(n + 2, sizeof *vals);
    size_t k = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL || strcmp(o->keyword, "application_name") == 0)
            continue;
        keys[k] = o->keyword;
        vals[k++] = o->val;
    }
    keys[k] = "application_name";
    vals[k++] = DW_HA_LOCK_APPNAME;
    PGconn *conn = PQconnectdbParams(keys, vals, 0);
    free(keys);
    free(vals);
    PQconninfoFree(opts);
    dw_rc rc = DW_OK;
    if (PQstatus(conn) != CONNECTION_OK) {
        rc = dw_pg_fail(conn, NULL, "connecting the job lock session");
        PQfinish(conn);
        return rc;
    }
    /* The transaction stays open for as long as this runner is active: no timeout may end it. */
    if ((rc = dw_pg_exec(conn, "preparing the job lock session",
                         "SET idle_in_transaction_session_timeout = 0")) != DW_OK) {
        PQfinish(conn);
        return rc;
    }
    ha->lock = conn;
    return DW_OK;
}

dw_rc dw_ha_try(struct dw_ha *ha, uint64_t now_ms, bool *active)
{
    char job[24];
    PGresult *res = NULL;
    dw_rc rc = DW_OK;
    if (ha->active || now_ms < ha->next_try_ms)
        goto out;
    ha->next_try_ms = now_ms + ha->poll_ms;
    if (ha->lock == NULL && (rc = open_lock(ha)) != DW_OK)
        goto out;
    snprintf(job, sizeof job, "%" PRId64, ha->job_id);
    const char *params[] = {job};
    if ((rc = dw_pg_query(ha->lock, "job lock attempt",
                          "SELECT dwasync.job_lock_relation($1::bigint)::text", 1, params, &res)) !=
        DW_OK)
        goto fail;
    char *sql = dw_asprintf("LOCK TABLE %s IN EXCLUSIVE MODE NOWAIT", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    if ((rc = dw_pg_exec(ha->lock, "job lock attempt", "BEGIN")) != DW_OK) {
        free(sql);
        goto fail;
    }
    /* NOWAIT: a held lock is an answer (standby), not an error to log. */
    res = PQexec(ha->lock, sql);
    free(sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job_id", job}), "acquired the job lock: now active");
        ha->active = true;
    } else if (strcmp(dw_pg_sqlstate(res), "55P03") != 0) {
        rc = dw_pg_fail(ha->lock, res, "job lock attempt");
        goto fail;
    } else if ((rc = dw_pg_exec(ha->lock, "job lock attempt", "ROLLBACK")) != DW_OK) {
        goto fail;
    }
    goto out;
fail:
    close_lock(ha); /* a new session next time */
out:
    PQclear(res);
    if (rc == DW_OK)
        *active = ha->active;
    return rc;
}

int dw_ha_timeout_ms(const struct dw_ha *ha, uint64_t now_ms)
{
    if (ha->active || now_ms >= ha->next_try_ms)
        return 0;
    uint64_t left = ha->next_try_ms - now_ms;
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

dw_rc dw_ha_check(struct dw_ha *ha)
{
    char job[24];
    PGresult *res = NULL;
    dw_rc rc;
    if (!ha->active || ha->lock == NULL)
        return DW_ERR_STATE;
    snprintf(job, sizeof job, "%" PRId64, ha->job_id);
    const char *params[] = {job};
    rc = dw_pg_query(ha->lock, "job lock check",
                     "SELECT count(*) FROM dwasync.job_lock_holder($1::bigint)"
                     " WHERE pid = pg_backend_pid()",
                     1, params, &res);
    if (rc != DW_OK) {
        /* The session is gone (a restart, a terminated backend): the server released the
         * lock with it. Nobody is known to hold it; the caller takes it again. */
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job_id", job}),
                "the job lock session was lost; taking the lock again");
        close_lock(ha);
        return DW_ERR_PG;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "1") != 0) {
        DW_ERROR("lost the job lock: stopping work as active runner");
        close_lock(ha);
        rc = DW_ERR_STATE;
    }
    PQclear(res);
    return rc;
}

dw_rc dw_ha_heartbeat(struct dw_ha *ha, const struct dw_ha_report *report)
{
    char host[256], pid[24], job[24], secs[32], total[24];
    PGresult *res = NULL;
    if (!ha->active)
        return DW_ERR_STATE;
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(job, sizeof job, "%" PRId64, ha->job_id);
    snprintf(secs, sizeof secs, "%.3f", report ? report->throttled_for_seconds : 0.0);
    snprintf(total, sizeof total, "%" PRId64, report ? report->throttled_total : 0);
    const char *params[] = {
        job, host, pid, DW_VERSION, report && report->status ? report->status : "", secs, total};
    /* A new process (new pid) restarts started_at; the same one only moves its heartbeat. */
    dw_rc rc = dw_pg_query(
        ha->conn, "runner heartbeat",
        "INSERT INTO dwasync.runner AS r (job_id, host, pid, version, status, throttled_until,"
        " throttled_total)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::float8 > 0"
        "   THEN now() + make_interval(secs => $6::float8) END, $7)"
        " ON CONFLICT (job_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
        "   version = EXCLUDED.version, status = EXCLUDED.status,"
        "   throttled_until = EXCLUDED.throttled_until, throttled_total = EXCLUDED.throttled_total,"
        "   heartbeat_at = now(),"
        "   started_at = CASE WHEN r.pid = EXCLUDED.pid AND r.host = EXCLUDED.host"
        "     THEN r.started_at ELSE now() END",
        7, params, &res);
    PQclear(res);
    return rc;
}

void dw_ha_cleanup(struct dw_ha *ha)
{
    /* The lock's transaction is ended here, not by closing its session: a backend releases
     * its locks only as it exits, a moment after its client has gone, and a command run right
     * after a runner stopped (`errors replay` asks dwasync.replay_listeners() whether one
     * holds the job) must find the job free. */
    if (ha->active && PQstatus(ha->lock) == CONNECTION_OK)
        PQclear(PQexec(ha->lock, "ROLLBACK"));
    close_lock(ha);
}

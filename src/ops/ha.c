/*
 * The job lock (see ha.h): pg_try_advisory_lock() on the dedicated lock connection, tried at
 * most once per poll interval by a standby and verified in pg_locks by the active runner.
 * dw_ha_heartbeat() keeps the job's dwasync.runner row (host, pid, version, status,
 * throttling) current for `dwasync status`.
 */
#include "dwasync/ha.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dwasync/log.h"
#include "dwasync/pg.h"

void dw_ha_init(struct dw_ha *ha, PGconn *conn, int64_t job_id, uint64_t poll_ms)
{
    memset(ha, 0, sizeof *ha);
    ha->conn = conn;
    ha->job_id = job_id;
    ha->poll_ms = poll_ms ? poll_ms : DW_HA_DEFAULT_POLL_MS;
}

/* The lock's two int4 keys as text parameters. The job id fits: ids are small identities. */
static void lock_params(const struct dw_ha *ha, char cls[16], char obj[24])
{
    snprintf(cls, 16, "%d", DW_HA_LOCK_CLASS);
    snprintf(obj, 24, "%" PRId64, ha->job_id);
}

dw_rc dw_ha_try(struct dw_ha *ha, uint64_t now_ms, bool *active)
{
    char cls[16], obj[24];
    PGresult *res = NULL;
    dw_rc rc = DW_OK;
    if (ha->active || now_ms < ha->next_try_ms)
        goto out;
    lock_params(ha, cls, obj);
    const char *params[] = {cls, obj};
    rc = dw_pg_query(ha->conn, "job lock attempt",
                     "SELECT pg_try_advisory_lock($1::int4, $2::int4)", 2, params, &res);
    if (rc != DW_OK)
        goto out;
    ha->next_try_ms = now_ms + ha->poll_ms;
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        char job[24];
        snprintf(job, sizeof job, "%" PRId64, ha->job_id);
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job_id", job}), "acquired the job lock: now active");
        ha->active = true;
    }
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
    char cls[16], obj[24];
    PGresult *res = NULL;
    dw_rc rc;
    if (!ha->active)
        return DW_ERR_STATE;
    lock_params(ha, cls, obj);
    const char *params[] = {cls, obj};
    /* objsubid 2 marks the two-int4-key form of advisory locks. */
    rc = dw_pg_query(ha->conn, "job lock check",
                     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                     " AND pid = pg_backend_pid() AND classid = $1::int4::oid"
                     " AND objid = $2::int4::oid AND objsubid = 2",
                     2, params, &res);
    if (rc == DW_OK && strcmp(PQgetvalue(res, 0, 0), "1") != 0)
        rc = DW_ERR_STATE;
    if (rc != DW_OK) {
        DW_ERROR("lost the job lock: stopping work as active runner");
        ha->active = false;
        if (rc != DW_ERR_STATE)
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
    if (ha->active && ha->conn && PQstatus(ha->conn) == CONNECTION_OK) {
        char cls[16], obj[24];
        PGresult *res = NULL;
        lock_params(ha, cls, obj);
        const char *params[] = {cls, obj};
        if (dw_pg_query(ha->conn, "job lock release",
                        "SELECT pg_advisory_unlock($1::int4, $2::int4)", 2, params, &res) == DW_OK)
            PQclear(res);
    }
    ha->active = false;
}

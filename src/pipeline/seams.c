/*
 * The production side of the pipeline's seams (see seams.h): the writer forwards to the
 * sink, the store writes the error table, the checkpoint row and the apply statistics on
 * the control connection. The failpoint between error rows and checkpoint lives here,
 * where the two writes are.
 */
#include "dwasync/seams.h"

#include <inttypes.h>
#include <stdio.h>

#include "dwasync/errtable.h"
#include "dwasync/failpoint.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

static dw_rc sink_submit(void *user, struct dw_write *writes, void *const *tickets, size_t n)
{
    return dw_sink_submit(user, writes, tickets, n);
}

static dw_rc sink_submit_atomic(void *user, struct dw_write *writes, void *const *tickets, size_t n)
{
    return dw_sink_submit_atomic(user, writes, tickets, n);
}

static size_t sink_pending(void *user)
{
    return dw_sink_pending(user);
}

/* A run that waits for nothing: the requests go out and travel while the caller works. */
static void sink_send(void *user)
{
    (void)dw_sink_run(user, 0);
}

void dw_seams_sink_writer(struct dw_sink *sink, struct dw_pipeline_writer *out)
{
    *out = (struct dw_pipeline_writer){
        .submit = sink_submit,
        .submit_atomic = sink_submit_atomic,
        .pending = sink_pending,
        .send = sink_send,
        .user = sink,
    };
}

static dw_rc control_load_blocked(void *user, int64_t job_id, struct dw_blocked_keys *set)
{
    return dw_errtable_load_blocked(user, job_id, set);
}

static dw_rc control_load_checkpoint(void *user, int64_t job_id, dw_lsn *confirmed)
{
    char job[32];
    snprintf(job, sizeof job, "%" PRId64, job_id);
    const char *params[1] = {job};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(user, "reading the job's checkpoint",
                           "SELECT confirmed_lsn FROM dwasync.checkpoint WHERE job_id = $1", 1,
                           params, &res);
    *confirmed = 0;
    if (rc == DW_OK && PQntuples(res) == 1 &&
        dw_lsn_parse(PQgetvalue(res, 0, 0), confirmed) != DW_OK)
        rc = DW_ERR_PG;
    PQclear(res);
    return rc;
}

/* The checkpoint moves forward only (greatest()), and the minute's counters add up. */
static dw_rc write_checkpoint(PGconn *control, const struct dw_pipeline_persist *w)
{
    char lsn[DW_LSN_STRLEN], job[32], nap[32], nfail[32], ctime[40];
    dw_lsn_format(w->confirmed_lsn, lsn);
    snprintf(job, sizeof job, "%" PRId64, w->job_id);
    snprintf(nap, sizeof nap, "%zu", w->rows_applied);
    snprintf(nfail, sizeof nfail, "%zu", w->rows_failed);
    snprintf(ctime, sizeof ctime, "%" PRId64, w->last_commit_time_us);
    const char *params[] = {job, lsn, ctime, nap, nfail};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(
        control, "writing the checkpoint",
        "WITH cp AS (INSERT INTO dwasync.checkpoint AS c (job_id, confirmed_lsn, "
        "last_commit_time, last_applied_at, updated_at) VALUES ($1, $2::pg_lsn, "
        "CASE WHEN $3::bigint > 0 THEN to_timestamp($3::bigint / 1000000.0) END, now(), now()) "
        "ON CONFLICT (job_id) DO UPDATE SET confirmed_lsn = greatest(c.confirmed_lsn, "
        "excluded.confirmed_lsn), last_commit_time = coalesce(excluded.last_commit_time, "
        "c.last_commit_time), last_applied_at = now(), updated_at = now()) "
        "INSERT INTO dwasync.apply_stat AS s (job_id, minute, rows_applied, rows_failed) "
        "VALUES ($1, date_trunc('minute', now()), $4, $5) ON CONFLICT (job_id, minute) DO "
        "UPDATE SET rows_applied = s.rows_applied + excluded.rows_applied, "
        "rows_failed = s.rows_failed + excluded.rows_failed",
        5, params, &res);
    PQclear(res);
    return rc;
}

/*
 * One transaction: error rows that were durable without the checkpoint could be replayed
 * before the stream resends their changes after a crash, and a resent change that failed
 * again would then find its row resolved and be skipped (tests/unit/test_pipeline.c).
 */
static dw_rc control_persist(void *user, const struct dw_pipeline_persist *w,
                             struct dw_blocked_keys *blocked)
{
    PGconn *control = user;
    dw_rc rc = dw_pg_exec(control, "writing the checkpoint", "BEGIN");
    if (rc != DW_OK)
        goto out;
    if (w->nrows && (rc = dw_errtable_insert(control, w->rows, w->nrows, blocked, NULL)) != DW_OK)
        goto rollback;
    if (DW_FAILPOINT("error_rows_before_checkpoint")) {
        rc = DW_ERR_PG;
        goto rollback;
    }
    if ((rc = write_checkpoint(control, w)) != DW_OK)
        goto rollback;
    rc = dw_pg_exec(control, "writing the checkpoint", "COMMIT");
    goto out;
rollback:
    if (PQstatus(control) == CONNECTION_OK)
        (void)dw_pg_exec(control, "rolling back the checkpoint", "ROLLBACK");
out:
    if (rc != DW_OK && PQstatus(control) != CONNECTION_OK) {
        DW_WARN("control database connection lost; reconnecting");
        PQreset(control);
    }
    return rc;
}

void dw_seams_control_store(PGconn *control, struct dw_pipeline_store *out)
{
    *out = (struct dw_pipeline_store){
        .load_blocked = control_load_blocked,
        .load_checkpoint = control_load_checkpoint,
        .persist = control_persist,
        .user = control,
    };
}

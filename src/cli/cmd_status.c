/*
 * `dwasync status [--json]`: one row per job from the control schema (job, checkpoint,
 * apply_stat, runner, and dwasync.error when it exists) joined with the job's
 * replication slot on the source database.
 *
 * The JSON form is a stable interface (documented in dwasync(1) and README): fields are
 * only ever added. Times are ISO 8601 UTC strings or null; lag_seconds is the age of the
 * newest applied commit while WAL remains to be applied, 0 when caught up, null when
 * unknown; throughput is the previous complete minute.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/cli.h"
#include "dwasync/ha.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

#define STATUS_JSON_VERSION 1
/* A runner heartbeats about every second (runner.c); one silent this long is not alive. */
#define RUNNER_STALE_SECONDS 30.0

#define ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* $1 is the instant the report is about (status time below), so every age in it agrees. */
/* clang-format off */
static const char jobs_sql[] =
    "SELECT j.id, j.name, j.state, coalesce(j.state_reason, ''), j.slot_name,"
    " j.publication_name, j.initial_sync, coalesce(c.confirmed_lsn, '0/0')::text,"
    " " ISO("c.last_commit_time") ", " ISO("c.last_applied_at") ","
    " extract(epoch FROM $1::timestamptz - c.last_commit_time)::float8,"
    " coalesce(s.applied, 0), coalesce(s.failed, 0),"
    " r.host, r.pid, " ISO("r.heartbeat_at") ","
    " extract(epoch FROM $1::timestamptz - r.heartbeat_at)::float8,"
    " coalesce(r.status, ''), " ISO("r.throttled_until") ","
    " greatest(extract(epoch FROM r.throttled_until - $1::timestamptz), 0)::float8,"
    " r.throttled_total"
    " FROM dwasync.job j"
    " LEFT JOIN dwasync.checkpoint c ON c.job_id = j.id"
    " LEFT JOIN dwasync.runner r ON r.job_id = j.id"
    " LEFT JOIN LATERAL (SELECT sum(rows_applied) AS applied, sum(rows_failed) AS failed"
    "   FROM dwasync.apply_stat a WHERE a.job_id = j.id"
    "   AND a.minute = date_trunc('minute', $1::timestamptz) - interval '1 minute') s ON true"
    " ORDER BY j.name";
/* clang-format on */

/* Counts and the most recent failure (any status) of one job in dwasync.error (020). */
static const char errors_sql[] =
    "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'waiting'),"
    " (SELECT json_build_object('id', e.id, 'status', e.status,"
    "   'table', e.source_schema || '.' || e.source_table, 'http_status', e.http_status,"
    "   'code', e.dv_code, 'class', e.class, 'message', e.message,"
    "   'at', " ISO(
        "e.last_failed_at") ")"
                            "   FROM dwasync.error e WHERE e.job_id = $1 AND e.status <> 'waiting'"
                            "   ORDER BY e.last_failed_at DESC, e.id DESC LIMIT 1)"
                            " FROM dwasync.error WHERE job_id = $1";

static const char slots_sql[] =
    "SELECT slot_name, active, coalesce(wal_status, ''),"
    " pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "   ELSE pg_current_wal_lsn() END, confirmed_flush_lsn)::bigint"
    " FROM pg_replication_slots WHERE slot_type = 'logical'";

static json_t *text_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static json_t *int_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null()
                                      : json_integer(strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static json_t *real_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null()
                                      : json_real(strtod(PQgetvalue(res, row, col), NULL));
}

/* Adds the error counts and last error of a job; errors.available false before the table. */
static dw_rc add_errors(PGconn *conn, bool have_table, const char *job_id, json_t *job)
{
    json_t *errors = json_object();
    json_object_set_new(job, "errors", errors);
    json_object_set_new(errors, "available", json_boolean(have_table));
    if (!have_table) {
        json_object_set_new(errors, "open", json_null());
        json_object_set_new(errors, "waiting", json_null());
        json_object_set_new(job, "last_error", json_null());
        return DW_OK;
    }
    PGresult *res = NULL;
    const char *params[] = {job_id};
    dw_rc rc = dw_pg_query(conn, "error counts", errors_sql, 1, params, &res);
    if (rc != DW_OK)
        return rc;
    json_object_set_new(errors, "open", int_or_null(res, 0, 0));
    json_object_set_new(errors, "waiting", int_or_null(res, 0, 1));
    json_t *last = NULL;
    if (!PQgetisnull(res, 0, 2))
        last = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    json_object_set_new(job, "last_error", last ? last : json_null());
    PQclear(res);
    return DW_OK;
}

/*
 * The copies under way (initial sync, resync, repair; sql/060): the requests queued with the
 * oldest one not done, their rows copied of the rows they matched when queued, the rate since
 * they started and the time left at that rate; null when nothing is being copied.
 */
static const char copy_sql[] =
    "SELECT count(*) FILTER (WHERE NOT done), string_agg(DISTINCT kind, ','),"
    " coalesce(sum(rows_copied), 0), CASE WHEN count(rows_total) = count(*) THEN sum(rows_total)"
    " END, extract(epoch FROM $2::timestamptz - min(started_at))::float8"
    " FROM dwasync.copy_request WHERE job_id = $1 AND created_at >= (SELECT min(created_at)"
    " FROM dwasync.copy_request WHERE job_id = $1 AND NOT done)";

static dw_rc add_copy(PGconn *conn, const char *job_id, const char *now, json_t *job)
{
    PGresult *res = NULL;
    const char *params[] = {job_id, now};
    dw_rc rc = dw_pg_query(conn, "copy progress", copy_sql, 2, params, &res);
    if (rc != DW_OK)
        return rc;
    json_t *copy = json_null();
    if (strtoll(PQgetvalue(res, 0, 0), NULL, 10) > 0) {
        copy = json_object();
        double done = strtod(PQgetvalue(res, 0, 2), NULL);
        double secs = PQgetisnull(res, 0, 4) ? 0 : strtod(PQgetvalue(res, 0, 4), NULL);
        double rate = secs > 0 ? done / secs : 0;
        json_object_set_new(copy, "tables_left", int_or_null(res, 0, 0));
        json_object_set_new(copy, "kind", text_or_null(res, 0, 1));
        json_object_set_new(copy, "rows_copied", int_or_null(res, 0, 2));
        json_object_set_new(copy, "rows_total", int_or_null(res, 0, 3));
        json_object_set_new(copy, "rows_per_second", secs > 0 ? json_real(rate) : json_null());
        double left = PQgetisnull(res, 0, 3) ? -1 : strtod(PQgetvalue(res, 0, 3), NULL) - done;
        json_object_set_new(copy, "eta_seconds",
                            rate > 0 && left >= 0 ? json_real(left / rate) : json_null());
    }
    json_object_set_new(job, "copy", copy);
    PQclear(res);
    return DW_OK;
}

/* Fills slot fields from the source database's logical slots (NULL res: unknown). */
static void add_slot(const PGresult *slots, const char *slot_name, const char *last_commit_age,
                     json_t *job)
{
    json_t *slot = json_object();
    json_object_set_new(job, "slot", slot);
    json_object_set_new(slot, "name", json_string(slot_name));
    int row = -1;
    for (int i = 0; slots && i < PQntuples(slots); i++)
        if (strcmp(PQgetvalue(slots, i, 0), slot_name) == 0)
            row = i;
    json_object_set_new(slot, "exists", slots ? json_boolean(row >= 0) : json_null());
    if (row < 0) {
        json_object_set_new(slot, "active", json_null());
        json_object_set_new(slot, "wal_status", json_null());
        json_object_set_new(job, "lag_bytes", json_null());
        json_object_set_new(job, "lag_seconds", json_null());
        return;
    }
    json_object_set_new(slot, "active", json_boolean(PQgetvalue(slots, row, 1)[0] == 't'));
    json_object_set_new(slot, "wal_status", json_string(PQgetvalue(slots, row, 2)));
    json_t *bytes = int_or_null(slots, row, 3);
    json_object_set_new(job, "lag_bytes", bytes);
    if (json_is_integer(bytes) && json_integer_value(bytes) <= 0)
        json_object_set_new(job, "lag_seconds", json_integer(0));
    else if (last_commit_age)
        json_object_set_new(job, "lag_seconds", json_real(strtod(last_commit_age, NULL)));
    else
        json_object_set_new(job, "lag_seconds", json_null());
}

/*
 * "lock": who holds the job's lock (ha.h), null when nobody does. A holder that is not a
 * dwasync lock session is "foreign": the job's runners wait as standbys until it lets go.
 * Quietly null on a schema without dwasync.job_lock_holder().
 */
static void add_lock(PGconn *conn, const char *job_id, json_t *job)
{
    const char *params[] = {job_id};
    PGresult *res = PQexecParams(conn,
                                 "SELECT pid, role, application_name"
                                 " FROM dwasync.job_lock_holder($1::bigint)",
                                 1, NULL, params, NULL, NULL, 0);
    json_t *lock = json_null();
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        lock = json_object();
        json_object_set_new(lock, "pid", int_or_null(res, 0, 0));
        json_object_set_new(lock, "role", text_or_null(res, 0, 1));
        json_object_set_new(lock, "application_name", text_or_null(res, 0, 2));
        json_object_set_new(lock, "foreign",
                            json_boolean(strcmp(PQgetvalue(res, 0, 2), DW_HA_LOCK_APPNAME) != 0));
    }
    PQclear(res);
    json_object_set_new(job, "lock", lock);
}

/* Builds the whole status document as of `at` (a timestamp text; NULL: the server's now). */
static dw_rc build(const struct dw_config *cfg, const char *at, json_t **out)
{
    PGconn *control = NULL, *source = NULL;
    PGresult *jobs = NULL, *slots = NULL, *reg = NULL;
    json_t *doc = json_object(), *list = json_array();
    dw_rc rc;
    json_object_set_new(doc, "version", json_integer(STATUS_JSON_VERSION));
    json_object_set_new(doc, "jobs", list);
    if ((rc = dw_pg_connect(dw_config_control_conninfo(cfg), "dwasync status", &control)) != DW_OK)
        goto out;
    const char *at_param[] = {at};
    if ((rc = dw_pg_query(
             control, "status time",
             "SELECT " ISO(
                 "coalesce($1::timestamptz, now())") ","
                                                     " to_regclass('dwasync.job') IS NOT NULL,"
                                                     " to_regclass('dwasync.error') IS NOT NULL,"
                                                     " to_regclass('dwasync.runner') IS NOT NULL",
             1, at_param, &reg)) != DW_OK)
        goto out;
    json_object_set_new(doc, "generated_at", json_string(PQgetvalue(reg, 0, 0)));
    if (PQgetvalue(reg, 0, 1)[0] != 't' || PQgetvalue(reg, 0, 3)[0] != 't') {
        DW_ERROR("the control schema is missing or out of date: run dwasync init");
        rc = DW_ERR_VERSION;
        goto out;
    }
    bool have_errors = PQgetvalue(reg, 0, 2)[0] == 't';
    const char *now_param[] = {PQgetvalue(reg, 0, 0)};
    if ((rc = dw_pg_query(control, "job status", jobs_sql, 1, now_param, &jobs)) != DW_OK)
        goto out;
    /* The slot lives on the source; unreachable source means unknown lag, not failure. */
    const char *src = cfg->source.conninfo;
    if (strcmp(src, dw_config_control_conninfo(cfg)) == 0)
        source = control;
    else if (dw_pg_connect(src, "dwasync status", &source) != DW_OK)
        source = NULL;
    if (source && dw_pg_query(source, "slot status", slots_sql, 0, NULL, &slots) != DW_OK)
        slots = NULL;
    for (int i = 0; i < PQntuples(jobs); i++) {
        json_t *job = json_object();
        json_array_append_new(list, job);
        json_object_set_new(job, "name", text_or_null(jobs, i, 1));
        json_object_set_new(job, "state", text_or_null(jobs, i, 2));
        json_object_set_new(job, "state_reason", text_or_null(jobs, i, 3));
        json_object_set_new(job, "publication", text_or_null(jobs, i, 5));
        json_object_set_new(job, "initial_sync", text_or_null(jobs, i, 6));
        json_object_set_new(job, "confirmed_lsn", text_or_null(jobs, i, 7));
        json_object_set_new(job, "last_commit_time", text_or_null(jobs, i, 8));
        json_object_set_new(job, "last_applied_at", text_or_null(jobs, i, 9));
        add_slot(slots, PQgetvalue(jobs, i, 4),
                 PQgetisnull(jobs, i, 10) ? NULL : PQgetvalue(jobs, i, 10), job);
        json_t *tp = json_object();
        json_object_set_new(job, "throughput_last_minute", tp);
        int64_t applied = strtoll(PQgetvalue(jobs, i, 11), NULL, 10);
        json_object_set_new(tp, "rows_applied", json_integer(applied));
        json_object_set_new(tp, "rows_failed", int_or_null(jobs, i, 12));
        json_object_set_new(tp, "rows_per_second", json_real((double)applied / 60.0));
        json_t *runner = json_null();
        bool alive = false;
        if (!PQgetisnull(jobs, i, 13)) {
            runner = json_object();
            json_object_set_new(runner, "host", text_or_null(jobs, i, 13));
            json_object_set_new(runner, "pid", int_or_null(jobs, i, 14));
            json_object_set_new(runner, "heartbeat_at", text_or_null(jobs, i, 15));
            json_object_set_new(runner, "heartbeat_age_seconds", real_or_null(jobs, i, 16));
            json_object_set_new(runner, "status", text_or_null(jobs, i, 17));
            alive = !PQgetisnull(jobs, i, 16) &&
                    strtod(PQgetvalue(jobs, i, 16), NULL) < RUNNER_STALE_SECONDS;
            json_object_set_new(runner, "alive", json_boolean(alive));
        }
        json_object_set_new(job, "runner", runner);
        json_object_set_new(job, "runner_alive", json_boolean(alive));
        json_t *thr = json_object();
        json_object_set_new(job, "throttling", thr);
        bool throttled = !PQgetisnull(jobs, i, 19) && strtod(PQgetvalue(jobs, i, 19), NULL) > 0;
        json_object_set_new(thr, "state",
                            json_string(PQgetisnull(jobs, i, 13) ? "unknown"
                                        : throttled              ? "throttled"
                                                                 : "none"));
        json_object_set_new(thr, "until", throttled ? text_or_null(jobs, i, 18) : json_null());
        json_object_set_new(thr, "responses_429", int_or_null(jobs, i, 20));
        add_lock(control, PQgetvalue(jobs, i, 0), job);
        if ((rc = add_errors(control, have_errors, PQgetvalue(jobs, i, 0), job)) != DW_OK ||
            (rc = add_copy(control, PQgetvalue(jobs, i, 0), now_param[0], job)) != DW_OK)
            goto out;
    }
    *out = json_incref(doc);
out:
    PQclear(reg);
    PQclear(jobs);
    PQclear(slots);
    if (source != control)
        PQfinish(source);
    PQfinish(control);
    json_decref(doc);
    return rc;
}

static void human_bytes(json_t *v, char *buf, size_t size)
{
    if (!json_is_integer(v)) {
        snprintf(buf, size, "-");
        return;
    }
    double b = (double)json_integer_value(v);
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void count_text(json_t *v, char *buf, size_t size)
{
    if (json_is_integer(v))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        snprintf(buf, size, "-");
}

/* "job "x": copying (resync): 3 tables left, 120 of 400 rows, 40 rows/s, ETA 7 s". */
static void print_copy(json_t *job)
{
    json_t *copy = json_object_get(job, "copy");
    if (!json_is_object(copy))
        return;
    char total[32], rate[32], eta[32];
    count_text(json_object_get(copy, "rows_total"), total, sizeof total);
    json_t *r = json_object_get(copy, "rows_per_second"), *e = json_object_get(copy, "eta_seconds");
    snprintf(rate, sizeof rate, json_is_number(r) ? "%.0f" : "-", json_number_value(r));
    snprintf(eta, sizeof eta, json_is_number(e) ? "%.0f s" : "-", json_number_value(e));
    printf("job \"%s\": copying (%s): %" JSON_INTEGER_FORMAT " table(s) left, %" JSON_INTEGER_FORMAT
           " of %s rows, %s rows/s, ETA %s\n",
           json_string_value(json_object_get(job, "name")),
           json_string_value(json_object_get(copy, "kind")),
           json_integer_value(json_object_get(copy, "tables_left")),
           json_integer_value(json_object_get(copy, "rows_copied")), total, rate, eta);
}

/* Why a job is not active, when something recorded why (the alert rule, the guard). */
static void print_reasons(json_t *doc)
{
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(doc, "jobs"), i, job)
    {
        const char *reason = json_string_value(json_object_get(job, "state_reason"));
        if (reason && *reason)
            printf("job \"%s\" is %s: %s\n", json_string_value(json_object_get(job, "name")),
                   json_string_value(json_object_get(job, "state")), reason);
    }
}

static void print_table(json_t *doc)
{
    printf("%-16s %-8s %10s %8s %9s %6s %8s %-10s %s\n", "JOB", "STATE", "LAG", "LAG(S)",
           "ROWS/MIN", "OPEN", "WAITING", "THROTTLE", "LAST ERROR");
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(doc, "jobs"), i, job)
    {
        char lag[32], lag_s[32], open[24], waiting[24];
        human_bytes(json_object_get(job, "lag_bytes"), lag, sizeof lag);
        json_t *ls = json_object_get(job, "lag_seconds");
        if (json_is_number(ls))
            snprintf(lag_s, sizeof lag_s, "%.0f", json_number_value(ls));
        else
            snprintf(lag_s, sizeof lag_s, "-");
        json_t *errors = json_object_get(job, "errors");
        json_t *o = json_object_get(errors, "open"), *w = json_object_get(errors, "waiting");
        count_text(o, open, sizeof open);
        count_text(w, waiting, sizeof waiting);
        json_t *last = json_object_get(job, "last_error");
        const char *msg = json_string_value(json_object_get(last, "message"));
        printf("%-16s %-8s %10s %8s %9" JSON_INTEGER_FORMAT " %6s %8s %-10s %.60s\n",
               json_string_value(json_object_get(job, "name")),
               json_string_value(json_object_get(job, "state")), lag, lag_s,
               json_integer_value(
                   json_object_get(json_object_get(job, "throughput_last_minute"), "rows_applied")),
               open, waiting,
               json_string_value(json_object_get(json_object_get(job, "throttling"), "state")),
               msg ? msg : "-");
    }
    json_array_foreach(json_object_get(doc, "jobs"), i, job)
    {
        json_t *lock = json_object_get(job, "lock");
        if (json_is_true(json_object_get(lock, "foreign")))
            printf("job \"%s\": its lock is held by a foreign session (pid %" JSON_INTEGER_FORMAT
                   ", role \"%s\", application \"%s\"): no runner applies until it ends\n",
                   json_string_value(json_object_get(job, "name")),
                   json_integer_value(json_object_get(lock, "pid")),
                   json_string_value(json_object_get(lock, "role")),
                   json_string_value(json_object_get(lock, "application_name")));
    }
    print_reasons(doc);
    if (json_array_size(json_object_get(doc, "jobs")) == 0)
        printf("(no jobs: create one with dwasync job create NAME)\n");
    json_array_foreach(json_object_get(doc, "jobs"), i, job) print_copy(job);
    json_array_foreach(json_object_get(doc, "jobs"), i, job)
    {
        const char *state = json_string_value(json_object_get(job, "state"));
        if (strcmp(state, "active") != 0 || json_is_true(json_object_get(job, "runner_alive")))
            continue;
        json_t *age = json_object_get(json_object_get(job, "runner"), "heartbeat_age_seconds");
        if (json_is_number(age))
            printf("warning: job \"%s\" is active but no runner is alive (last heartbeat %.0f s "
                   "ago)\n",
                   json_string_value(json_object_get(job, "name")), json_number_value(age));
        else
            printf("warning: job \"%s\" is active but no runner has ever run it\n",
                   json_string_value(json_object_get(job, "name")));
    }
}

int dw_cmd_status(struct dw_cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'}, {"at", required_argument, NULL, 'a'}, {NULL, 0, NULL, 0}};
    bool as_json = false;
    const char *at = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'j')
            as_json = true;
        else if (opt == 'a')
            at = optarg;
        else
            return dw_cli_usage("status");
    }
    if (optind != argc)
        return dw_cli_usage("status");
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_EXIT_FAILURE;
    json_t *doc = NULL;
    if (build(cfg, at, &doc) != DW_OK)
        return DW_EXIT_FAILURE;
    if (as_json) {
        char *text = dw_json_dumps(doc);
        printf("%s\n", text);
        free(text);
    } else {
        print_table(doc);
    }
    json_decref(doc);
    return DW_EXIT_OK;
}

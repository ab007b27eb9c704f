/*
 * `dwasync run` (see runner.h): finds the job, waits as a standby for its lock, runs a pending
 * initial sync, then loops in stream_loop(): read the stream while the pipeline has room,
 * poll the pipeline, confirm to the slot, tend error replays, and wait one turn of the run's
 * event loop (loop.h), whose tenants are curl's sockets and timer (the sink), the signal fd,
 * the metrics listener, and in that wait the stream's and control connection's sockets
 * (watches: their descriptors change with reconnects).
 * A run owns what it builds (loop, connections, sink, pipeline, stream) and tears it down
 * before it returns.
 */
#include "dwasync/runner.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/changemetrics.h"
#include "dwasync/clock.h"
#include "dwasync/daemon.h"
#include "dwasync/errtable.h"
#include "dwasync/failpoint.h"
#include "dwasync/guard.h"
#include "dwasync/ha.h"
#include "dwasync/log.h"
#include "dwasync/loop.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/metrics.h"
#include "dwasync/migrate.h"
#include "dwasync/paths.h"
#include "dwasync/pg.h"
#include "dwasync/pipeline.h"
#include "dwasync/seams.h"
#include "dwasync/sink.h"
#include "dwasync/slotguard.h"
#include "dwasync/snapshot.h"
#include "dwasync/stream.h"
#include "dwasync/values.h"

/* How often the job's state (paused, stopped) is read from the control database. */
#define JOB_CHECK_MS 2000
/* How often the HA lock is verified while active. */
#define HA_CHECK_MS 5000
/* How often metrics gauges and the systemd status line are refreshed. */
#define STATUS_MS 1000
/* Changes read from the stream per step: small enough to keep the loop responsive. */
#define STEP_BUDGET 2000
/* How often the error table is looked at without a NOTIFY (requests made while we were
 * not listening, the alert rule). */
#define ERRORS_CHECK_MS 10000
/* How often resolved and skipped error rows past their retention are purged. */
#define PURGE_MS (3600 * 1000)
/* How often the publication is checked to still hold every mapped table (and on SIGHUP). */
#define PUBLICATION_CHECK_MS 60000
/* Transactions the stream delivered that a chunk's read is checked against (see
 * stale_chunk()): far more than commit while one waits to become visible. */
#define STREAMED_XIDS 4096
/* How soon a chunk read too early (stale_chunk()) is read again: at first, and at most. */
#define STALE_CHUNK_RETRY_MS     50
#define STALE_CHUNK_RETRY_MAX_MS 1000
/* Starts in a row that may fail on Postgres, with the source reachable, before the error
 * counts as permanent (a restart can end a session between two steps of the start). */
#define START_ATTEMPTS 5
/* First and longest delay between attempts to reconnect a control session or retake the
 * lock (the stream's ceiling is [source] reconnect_max_ms). */
#define RECONNECT_MIN_MS 200
#define RECONNECT_MAX_MS 30000

struct job {
    int64_t id;
    char *name;
    char *state;
    char *slot;
    char *publication;
    char *initial_sync;
    char *state_reason; /* why it is not active (failed, paused by the guard); "" if unsaid */
};

/* One table to copy, as dwasync.copy_request (sql/050, 060) records it. */
struct copy_req {
    int64_t id;
    char *table; /* "schema.table" */
    char *kind;  /* "initial", "resync" or "repair" */
    char *condition;
    char *last_key; /* where the next chunk starts (in memory: may run ahead of the record) */
    bool no_skip;   /* rows past last_key may be in Dataverse already (an earlier process, or
                     * a resync or repair: those rows were synced before) */
};

/* A chunk handed to the pipeline whose progress is recorded once it is checkpointed. */
struct copy_step {
    dw_lsn end_lsn; /* of the high watermark's transaction */
    int64_t req_id;
    char *last_key;
    bool final;
    int64_t rows;
};

struct copy {
    bool active;  /* a copy (initial sync, resync, repair) is running */
    bool initial; /* the job's initial sync is among the requests */
    PGconn *conn; /* source session for watermarks and chunk reads */
    struct copy_req *reqs;
    size_t nreqs, cur; /* cur: the table being copied; nreqs when every chunk was read */
    struct dw_snapshot_chunk *chunk;    /* read, not yet committed with its high watermark */
    struct dw_snapshot_chunk *frontier; /* the last chunk committed of the table being copied */
    bool emitted;                       /* its rows went into the open transaction */
    /* The stream reconnected: chunks handed over but not yet planned were dropped with the
     * pipeline's filling window, and their high watermarks come again without them. The
     * copy goes on from what is recorded (copy_tend()), after recording the chunks checkpointed
     * before (end_lsn <= reset_confirmed). */
    bool reset;
    dw_lsn reset_confirmed;
    struct copy_step *steps;
    size_t nsteps, capsteps;
    int64_t retry_at_ms;    /* after a failed read: when to try again */
    int64_t next_poll_ms;   /* when to look for queued requests (resync, repair) and progress */
    uint32_t waiting_xid;   /* the transaction a chunk waits to see (logged once), or 0 */
    int64_t stale_retry_ms; /* how soon a chunk that missed it is read again (doubling) */
};

/* The last STREAMED_XIDS transactions the stream delivered, oldest overwritten first. */
struct streamed_xids {
    uint32_t xid[STREAMED_XIDS];
    size_t next;
};

struct runner {
    const struct dw_runner_options *opts;
    struct dw_config config; /* our copy, replaced on SIGHUP */
    struct job job;
    PGconn *control;   /* checkpoint, errors, job state */
    PGconn *lock_conn; /* the HA lock's session */
    struct dw_ha ha;
    struct dw_watchdog watchdog;
    struct dw_loop *loop; /* the one wait of the process */
    int signal_fd;
    bool waiting;       /* in the stream loop's own wait: its connections are watched */
    bool heartbeat_due; /* the heartbeat session broke: write it again once it is back */
    bool control_ready; /* the control connection was readable in that wait */
    struct dw_job_maps *maps;
    struct dw_types *types;
    struct dw_values_options values;
    struct dw_sink *sink;
    struct dw_pipeline_writer writer; /* the pipeline's seams: the sink ... */
    struct dw_pipeline_store store;   /* ... and the control connection */
    struct dw_pipeline *pipeline;
    struct dw_stream *stream;
    struct dw_replay *replay;
    bool replay_wanted; /* a NOTIFY or a completion: pump the replay engine */
    struct dw_metrics *metrics;
    struct dw_change_metrics *change_metrics; /* the observer's counts, in metrics */
    struct dw_metrics_server *metrics_server;
    bool stopping;
    bool paused;
    bool start_again;  /* the job and its maps are read again: see must_start_again() */
    bool failed_seen;  /* the job failed since it last started streaming */
    bool job_dropped;  /* the job's row is gone: the run ends */
    bool dataverse_ok; /* see track_dataverse() */
    struct dw_sink_stats sink_seen; /* the sink's counters at the last status tick */
    struct dw_progress progress;    /* of an initial sync */
    uint64_t snapshot_rows;
    struct copy copy;  /* the initial sync's chunked copy (snapshot.h) */
    struct dw_txn txn; /* the transaction the stream has open */
    bool txn_changed;  /* it changed rows (more than logical messages) */
    struct streamed_xids streamed;
    int64_t next_job_check_ms;
    int64_t next_ha_check_ms;
    int64_t next_status_ms;
    int64_t next_errors_check_ms;
    int64_t next_purge_ms;
    int64_t next_publication_check_ms;
    struct dw_backoff control_backoff; /* reconnects of the control and heartbeat sessions */
    struct dw_backoff lock_backoff;    /* attempts to take the lock again, or to start again */
    int control_pid;                   /* the control session's backend when LISTEN was issued */
    bool lock_lost;             /* the lock session broke: start again once the lock is retaken */
    uint64_t restarts;          /* times the job started again after a broken connection */
    unsigned failed_starts;     /* in a row, since the job last streamed */
    uint64_t stream_reconnects; /* of the streams already closed */
    int64_t started_ms; /* wall clock: tells this process's watermarks from an earlier one's */
    /* Chunks read by this process, every copy of every start of the job counted: numbers the
     * watermarks, so that one redelivered from before a restart of the job never matches a
     * chunk read after it (its rows would go into a transaction already applied). */
    uint64_t chunks_read;
    uint64_t metrics_seen_unchanged;        /* pipeline counter already added to the metrics */
    struct dw_sink_stats metrics_seen_sink; /* sink counters already added to the metrics */
    struct dw_pipeline_observer observer;   /* per table, class and map: see observed() */
    bool slot_start_read;                   /* see slot_confirmed_at_start() */
    dw_lsn slot_start_lsn;
};

static dw_rc on_snapshot_change(void *user, const struct dw_change *c);
static void copy_committed(struct runner *r, dw_lsn end_lsn);
static bool copy_skips(struct runner *r, const struct dw_change *c);
static dw_rc copy_tend(struct runner *r);
static dw_rc copy_start(struct runner *r);

static void job_cleanup(struct job *j)
{
    free(j->name);
    free(j->state);
    free(j->slot);
    free(j->publication);
    free(j->initial_sync);
    free(j->state_reason);
    memset(j, 0, sizeof *j);
}

#define JOB_SELECT                                                                                 \
    "SELECT id, name, state, slot_name, publication_name, initial_sync FROM dwasync.job"

/* Reads the job row: by name, or the one job that is not stopped; by id once it is known. */
static dw_rc load_job(struct runner *r)
{
    const char *name = r->opts->job_name;
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    /* Read again (after the lock, after a restart, once active): the same job, found by its
     * id (even if it is stopped: it then waits, as a stopped job does at start). */
    bool again = r->job.id != 0;
    const char *sql = JOB_SELECT " WHERE state <> 'stopped' ORDER BY name";
    const char *params[] = {NULL};
    if (again) {
        sql = JOB_SELECT " WHERE id = $1";
        params[0] = id;
    } else if (name) {
        sql = JOB_SELECT " WHERE name = $1";
        params[0] = name;
    }
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading the job", sql, params[0] ? 1 : 0,
                           params[0] ? params : NULL, &res);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(res) == 0) {
        if (again)
            r->job_dropped = true;
        else if (name)
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"hint", "Create it with dwasync job create."}),
                    "job \"%s\" does not exist", name);
        else
            DW_LOGF(DW_LOG_ERROR,
                    DW_FIELDS({"hint", "Start a job with dwasync job start NAME, or name one "
                                       "with --job."}),
                    "no job is active");
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    if (PQntuples(res) > 1) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Run one process per job: dwasync run --job NAME "
                                   "(the dwasync@NAME service)."}),
                "%d jobs are not stopped; say which one to run", PQntuples(res));
        rc = DW_ERR_INVALID;
        goto out;
    }
    job_cleanup(&r->job);
    r->job.id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    r->job.name = dw_strdup(PQgetvalue(res, 0, 1));
    r->job.state = dw_strdup(PQgetvalue(res, 0, 2));
    r->job.slot = dw_strdup(PQgetvalue(res, 0, 3));
    r->job.publication = dw_strdup(PQgetvalue(res, 0, 4));
    r->job.initial_sync = dw_strdup(PQgetvalue(res, 0, 5));
out:
    PQclear(res);
    return rc;
}

static dw_rc set_initial_sync(struct runner *r, const char *value)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {value, id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "recording the initial sync state",
                           "UPDATE dwasync.job SET initial_sync = $1, updated_at = now() "
                           "WHERE id = $2",
                           2, params, &res);
    PQclear(res);
    if (rc == DW_OK) {
        free(r->job.initial_sync);
        r->job.initial_sync = dw_strdup(value);
    }
    return rc;
}

/* Stream events go straight to the pipeline; a chunk of the initial sync watches them. */
static dw_rc on_begin(void *user, const struct dw_txn *t)
{
    struct runner *r = user;
    r->txn = *t;
    r->txn_changed = false;
    return dw_pipeline_begin(r->pipeline, t->xid, t->commit_lsn, t->commit_time_us);
}

/*
 * Hands a change to the pipeline through take, typed by the source stage. A change of a
 * table no map reads goes untyped (the pipeline counts it ignored before it looks at a row).
 */
static dw_rc hand_on(struct runner *r, const struct dw_change *c,
                     dw_rc (*take)(struct dw_pipeline *, const struct dw_typed_change *))
{
    struct dw_typed_change typed = {.change = c};
    if (c->op == DW_CHANGE_TRUNCATE || dw_job_maps_reader(r->maps, c->rel->schema, c->rel->name))
        dw_change_type(c, &r->values, &typed);
    dw_rc rc = take(r->pipeline, &typed);
    dw_typed_change_cleanup(&typed);
    return rc;
}

static dw_rc on_change(void *user, const struct dw_change *c)
{
    struct runner *r = user;
    r->txn_changed = true;
    if (copy_skips(r, c))
        return hand_on(r, c, dw_pipeline_change_removals);
    dw_snapshot_chunk_observe(r->copy.chunk, c);
    return hand_on(r, c, r->copy.active ? dw_pipeline_change_sent : dw_pipeline_change);
}

static dw_rc on_commit(void *user, const struct dw_txn *t)
{
    struct runner *r = user;
    if (r->txn_changed) /* not the copy's own watermarks: they change no row */
        r->streamed.xid[r->streamed.next++ % STREAMED_XIDS] = r->txn.xid;
    dw_rc rc = dw_pipeline_commit(r->pipeline, t->commit_lsn, t->end_lsn, t->commit_time_us);
    if (rc == DW_OK && r->copy.emitted)
        copy_committed(r, t->end_lsn);
    return rc;
}

static void on_reset(void *user)
{
    struct runner *r = user;
    dw_pipeline_reset(r->pipeline);
    /* The chunk's rows (if handed over) went with the partial transaction: read it again. */
    dw_snapshot_chunk_free(r->copy.chunk);
    r->copy.chunk = NULL;
    r->copy.emitted = false;
    if (r->copy.active && !r->copy.reset) {
        r->copy.reset = true;
        r->copy.reset_confirmed = dw_pipeline_confirmed(r->pipeline);
    }
}

static dw_rc on_message(void *user, const struct dw_logical_message *m)
{
    struct runner *r = user;
    if (dw_snapshot_chunk_watermark(r->copy.chunk, m) != DW_SNAPSHOT_HIGH)
        return DW_OK;
    /* Durably, before any row can reach Dataverse: after a crash, rows past the recorded
     * progress may be there, so changes to them must not be skipped (copy_skips). */
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->copy.reqs[r->copy.cur].id);
    const char *params[] = {id, dw_snapshot_chunk_last_key(r->copy.chunk)};
    PGresult *res = NULL;
    dw_rc wrc = dw_pg_query(r->control, "recording the initial sync's position",
                            "UPDATE dwasync.copy_request SET emitted_key = "
                            "coalesce($2::jsonb, emitted_key) WHERE id = $1",
                            2, params, &res);
    PQclear(res);
    if (wrc != DW_OK)
        return wrc;
    struct dw_stream_handler h = {.user = r, .change = on_snapshot_change};
    uint32_t index = 0;
    int64_t emitted = 0;
    dw_rc rc = dw_snapshot_chunk_emit(r->copy.chunk, &r->txn, &index, &h, &emitted);
    r->copy.emitted = true;
    return rc;
}

static void health(void *ud, struct dw_health *out)
{
    struct runner *r = ud;
    out->job_active = r->ha.active && !r->paused && r->pipeline != NULL;
    out->stream_ok = r->stream && dw_stream_connected(r->stream);
    struct dw_sink_stats st = {0};
    if (r->sink)
        dw_sink_get_stats(r->sink, &st);
    out->dataverse_ok = r->sink != NULL && r->dataverse_ok && st.throttled_until_ms == 0;
    snprintf(out->job, sizeof out->job, "%s", r->job.name ? r->job.name : "");
    if (r->job.state && strcmp(r->job.state, "failed") == 0)
        snprintf(out->detail, sizeof out->detail, "job failed: %s",
                 r->job.state_reason && *r->job.state_reason ? r->job.state_reason
                                                             : "(no reason recorded)");
    else if (r->lock_lost)
        snprintf(out->detail, sizeof out->detail, "taking the job lock again");
    else if (r->paused)
        snprintf(out->detail, sizeof out->detail, "job is paused%s%s",
                 r->job.state_reason && *r->job.state_reason ? ": " : "",
                 r->job.state_reason ? r->job.state_reason : "");
    else if (!r->ha.active)
        snprintf(out->detail, sizeof out->detail, "standby: another runner holds the job");
}

/*
 * Dataverse counts as reachable unless, since the last tick, requests were retried and
 * none succeeded (an outage, a refused connection, 5xx answers); idle counts as reachable.
 */
static void track_dataverse(struct runner *r)
{
    struct dw_sink_stats st = {0};
    if (r->sink)
        dw_sink_get_stats(r->sink, &st);
    if (st.responses_2xx > r->sink_seen.responses_2xx)
        r->dataverse_ok = true;
    else if (st.retries > r->sink_seen.retries)
        r->dataverse_ok = false;
    r->sink_seen = st;
}

/*
 * The slot's confirmed position when this process started: what lag counts from until the
 * pipeline or the stream confirms something itself (else a restarted runner would report
 * the absolute WAL position as its lag). Read once, on a connection of its own.
 */
static dw_lsn slot_confirmed_at_start(struct runner *r)
{
    if (r->slot_start_read)
        return r->slot_start_lsn;
    r->slot_start_read = true;
    PGconn *src = NULL;
    PGresult *res = NULL;
    const char *params[] = {r->job.slot};
    if (dw_pg_connect(r->config.source.conninfo, "dwasync run (metrics)", &src) == DW_OK &&
        dw_pg_query(src, "reading the slot's confirmed position",
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                    1, params, &res) == DW_OK &&
        PQntuples(res) == 1)
        (void)dw_lsn_parse(PQgetvalue(res, 0, 0), &r->slot_start_lsn);
    PQclear(res);
    PQfinish(src);
    return r->slot_start_lsn;
}

/* Bytes of WAL received but not yet confirmed (applied or parked, or idle). */
static double slot_lag_bytes(struct runner *r, dw_lsn pipeline_confirmed)
{
    dw_lsn base = slot_confirmed_at_start(r), received = dw_stream_received_lsn(r->stream);
    if (pipeline_confirmed > base)
        base = pipeline_confirmed;
    if (dw_stream_reported_lsn(r->stream) > base)
        base = dw_stream_reported_lsn(r->stream);
    return received > base ? (double)(received - base) : 0;
}

/* The pipeline's observer: counters by table and class, errors by class, latency per map. */
static void observed(void *user, enum dw_observed what, const char *schema, const char *table,
                     const char *map, const char *class_name, int64_t commit_time_us)
{
    struct runner *r = user;
    if (r->change_metrics)
        dw_change_metrics_count(r->change_metrics, r->job.name, what, schema, table, map,
                                class_name, commit_time_us);
}

/* Copies the pipeline and sink counters into the metrics registry. */
static void update_metrics(struct runner *r)
{
    if (r->metrics == NULL)
        return;
    const char *job_label[] = {"job", r->job.name, NULL};
    dw_metrics_set(r->metrics, DW_M_JOB_ACTIVE, job_label, r->ha.active ? 1 : 0);
    dw_metrics_update_process(r->metrics);
    if (r->pipeline == NULL)
        return;
    struct dw_pipeline_stats st;
    dw_pipeline_get_stats(r->pipeline, &st);
    dw_metrics_inc(r->metrics, DW_M_CHANGES_UNCHANGED, job_label,
                   (double)(st.rows_unchanged - r->metrics_seen_unchanged));
    r->metrics_seen_unchanged = st.rows_unchanged;
    dw_metrics_set(r->metrics, DW_M_WINDOW_ROWS, job_label, (double)st.last_window_rows);
    if (r->sink) {
        struct dw_sink_stats ss;
        dw_sink_get_stats(r->sink, &ss);
        dw_metrics_add_sink_stats(r->metrics, r->job.name, &ss, &r->metrics_seen_sink);
    }
    if (st.last_commit_time_us)
        dw_metrics_set(r->metrics, DW_M_LAST_COMMIT_TIME, job_label,
                       (double)st.last_commit_time_us / 1e6);
    dw_metrics_set(r->metrics, DW_M_WINDOW_BYTES, job_label, (double)st.last_window_bytes);
    if (r->stream)
        dw_metrics_set(r->metrics, DW_M_SLOT_LAG_BYTES, job_label,
                       slot_lag_bytes(r, st.confirmed_lsn));
    if (st.last_commit_time_us) {
        double lag_s = (double)(dw_clock_wall_us() - st.last_commit_time_us) / 1e6;
        dw_metrics_set(r->metrics, DW_M_SLOT_LAG_SECONDS, job_label,
                       dw_pipeline_idle(r->pipeline) ? 0 : lag_s);
    }
}

/* Connections this process restored: the stream's, the control sessions', and the job's
 * restarts after its lock session broke (or starting it failed on a broken connection). */
static uint64_t reconnect_count(const struct runner *r)
{
    return r->control_backoff.reconnects + r->restarts + r->stream_reconnects +
           (r->stream ? dw_stream_reconnects(r->stream) : 0);
}

static void report_status(struct runner *r)
{
    if (r->pipeline == NULL)
        return;
    struct dw_pipeline_stats st;
    dw_pipeline_get_stats(r->pipeline, &st);
    char lsn[DW_LSN_STRLEN], line[256];
    int n = snprintf(line, sizeof line,
                     "job %s %s: %" PRIu64 " applied, %" PRIu64 " parked, confirmed %s",
                     r->job.name, r->paused ? r->job.state : "active", st.rows_applied,
                     st.rows_failed + st.rows_parked, dw_lsn_format(st.confirmed_lsn, lsn));
    uint64_t reconnects = reconnect_count(r);
    if (reconnects && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, ", %" PRIu64 " reconnects", reconnects);
    dw_daemon_notify_status("%s", line);
    /* The runner row (sql/030) is what `dwasync status` shows: heartbeat, line, throttling. */
    struct dw_sink_stats ss = {0};
    if (r->sink)
        dw_sink_get_stats(r->sink, &ss);
    int64_t throttled_ms = ss.throttled_until_ms ? ss.throttled_until_ms - dw_clock_ms() : 0;
    struct dw_ha_report report = {
        .status = line,
        .throttled_for_seconds = throttled_ms > 0 ? (double)throttled_ms / 1000.0 : 0.0,
        .throttled_total = (int64_t)ss.throttled,
    };
    if (PQstatus(r->lock_conn) == CONNECTION_OK) /* else tend_control() reconnects it */
        (void)dw_ha_heartbeat(&r->ha, &report);
    /* A session a server restart broke is found broken by this write: once tend_control()
     * has it back, the heartbeat is written again at once, not a status tick later (any
     * other failure waits for the next tick). */
    r->heartbeat_due = PQstatus(r->lock_conn) != CONNECTION_OK;
}

/* Runs the sink (and its callbacks) and the pipeline until done() or the deadline. */
static dw_rc drain(struct runner *r, bool (*done)(struct runner *), int64_t deadline_ms)
{
    while (!done(r)) {
        if (deadline_ms && dw_clock_ms() >= deadline_ms)
            return DW_ERR_TIMEOUT;
        dw_rc rc = dw_pipeline_poll(r->pipeline, true);
        if (rc != DW_OK && rc != DW_ERR_PG)
            return rc;
        if (done(r))
            break;
        int timeout = dw_pipeline_timeout_ms(r->pipeline);
        dw_sink_run(r->sink, timeout < 0 || timeout > 200 ? 200 : timeout);
        unsigned sig = dw_daemon_signals_take();
        if (sig & DW_SIGNAL_STOP)
            r->stopping = true;
    }
    return DW_OK;
}

/*
 * Before in-flight writes are given up (the slot gives their changes again): waits, bounded,
 * until Dataverse has answered those already on the wire (answers dropped), so that none is
 * applied after the same rows written again and their newer changes (dw_sink_settle()).
 * Nothing to wait for after a drain that finished.
 */
static void settle_writes(struct runner *r)
{
    if (r->sink == NULL)
        return;
    size_t left = dw_sink_settle(r->sink, 0);
    if (left == 0)
        return;
    int64_t bound = r->config.dataverse.request_timeout_ms < DW_RUNNER_SETTLE_MS
                        ? r->config.dataverse.request_timeout_ms
                        : DW_RUNNER_SETTLE_MS;
    int64_t deadline = dw_clock_ms() + bound;
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
            "%zu write request(s) on the wire: waiting for Dataverse to finish them (their "
            "answers dropped) before they are given up",
            left);
    while (left && dw_clock_ms() < deadline) {
        int64_t step = dw_clock_ms() + 1000;
        left = dw_sink_settle(r->sink, step < deadline ? step : deadline);
        /* As idle_wait(): /healthz answers, the watchdog is fed, a stop is noted. */
        if (r->metrics_server)
            dw_metrics_server_run(r->metrics_server);
        if (dw_daemon_signals_take() & DW_SIGNAL_STOP)
            r->stopping = true;
        dw_watchdog_tick(&r->watchdog, (uint64_t)dw_clock_ms());
    }
    if (left)
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", r->job.name}),
                "%zu write request(s) given up on the wire after %" PRId64 " ms: Dataverse may "
                "still apply them after the rows are written again",
                left, bound);
}

/* A stop's drain is over when the pipeline has settled (pipeline.h): a transaction received
 * in part is not waited for, since nothing reads the rest of it while stopping. */
static bool pipeline_settled(struct runner *r)
{
    return dw_pipeline_settled(r->pipeline);
}

static bool pipeline_accepting(struct runner *r)
{
    return dw_pipeline_accepting(r->pipeline) || r->stopping;
}

/* Snapshot rows arrive by callback; when the window is full, apply before reading more. */
static dw_rc on_snapshot_change(void *user, const struct dw_change *c)
{
    struct runner *r = user;
    dw_rc rc = hand_on(r, c, dw_pipeline_change);
    if (++r->snapshot_rows % 1000 == 0)
        dw_progress_update(&r->progress, r->snapshot_rows, (uint64_t)dw_clock_ms());
    if (rc == DW_OK && !dw_pipeline_accepting(r->pipeline))
        rc = drain(r, pipeline_accepting, 0);
    if (rc == DW_OK && r->stopping)
        rc = DW_ERR_INTERRUPTED;
    return rc;
}

/* The high watermark's transaction is in the pipeline: its chunk waits for the checkpoint. */
static void copy_committed(struct runner *r, dw_lsn end_lsn)
{
    struct copy *cp = &r->copy;
    struct copy_req *q = &cp->reqs[cp->cur];
    const char *last = dw_snapshot_chunk_last_key(cp->chunk);
    bool final = dw_snapshot_chunk_final(cp->chunk);
    if (cp->nsteps == cp->capsteps) {
        cp->capsteps = cp->capsteps ? cp->capsteps * 2 : 8;
        cp->steps = dw_realloc(cp->steps, cp->capsteps * sizeof *cp->steps);
    }
    cp->steps[cp->nsteps++] = (struct copy_step){
        .end_lsn = end_lsn,
        .req_id = q->id,
        .last_key = last ? dw_strdup(last) : NULL,
        .final = final,
        .rows = dw_snapshot_chunk_rows(cp->chunk),
    };
    char lsn[DW_LSN_STRLEN];
    DW_DEBUG("copy of %s: a chunk of %" PRId64 " row(s) up to %s is in the pipeline (its high "
             "watermark's transaction ends at %s)",
             q->table, dw_snapshot_chunk_rows(cp->chunk), last ? last : "(none)",
             dw_lsn_format(end_lsn, lsn));
    if (last) {
        free(q->last_key);
        q->last_key = dw_strdup(last);
    }
    dw_snapshot_chunk_free(cp->frontier);
    cp->frontier = NULL;
    if (final) {
        DW_LOGF(DW_LOG_INFO,
                DW_FIELDS({"job", r->job.name}, {"table", q->table}, {"kind", q->kind}),
                "copy read the last chunk of the table");
        cp->cur++;
        dw_snapshot_chunk_free(cp->chunk);
    } else {
        dw_snapshot_chunk_trim(cp->chunk);
        cp->frontier = cp->chunk;
    }
    cp->chunk = NULL;
    cp->emitted = false;
}

/*
 * True when a stream change touches only rows the copy has not reached: a table whose copy
 * has not started, or keys after the last chunk read of the table being copied. The copy
 * reads those rows later, as they are then; applying the change's upsert now could name a
 * parent row the copy has not written yet (a missing parent that is no error). Its deletes
 * are applied all the same (dw_pipeline_change_removals): a row gone from the source is
 * never read by the copy, and Dataverse may hold it from an earlier sync.
 */
static bool copy_skips(struct runner *r, const struct dw_change *c)
{
    struct copy *cp = &r->copy;
    if (!cp->active || c->rel == NULL || cp->cur == cp->nreqs)
        return false;
    size_t i = cp->cur;
    size_t ls = strlen(c->rel->schema);
    for (; i < cp->nreqs; i++) {
        const char *t = cp->reqs[i].table;
        if (strncmp(t, c->rel->schema, ls) == 0 && t[ls] == '.' &&
            strcmp(t + ls + 1, c->rel->name) == 0)
            break;
    }
    if (i == cp->nreqs || cp->reqs[i].no_skip)
        return false; /* copied already, not copied at all, or partly applied earlier */
    if (i > cp->cur)
        return true;
    const struct dw_snapshot_chunk *f = cp->chunk ? cp->chunk : cp->frontier;
    if (f == NULL)
        return cp->reqs[i].last_key == NULL;
    bool beyond = false;
    if (cp->conn == NULL || dw_snapshot_chunk_beyond(cp->conn, f, c, &beyond) != DW_OK)
        return false; /* when in doubt, apply: a missing parent is retried, then parked */
    return beyond;
}

static void copy_cleanup(struct copy *cp)
{
    for (size_t i = 0; i < cp->nreqs; i++) {
        free(cp->reqs[i].table);
        free(cp->reqs[i].kind);
        free(cp->reqs[i].condition);
        free(cp->reqs[i].last_key);
    }
    free(cp->reqs);
    for (size_t i = 0; i < cp->nsteps; i++)
        free(cp->steps[i].last_key);
    free(cp->steps);
    dw_snapshot_chunk_free(cp->chunk);
    dw_snapshot_chunk_free(cp->frontier);
    PQfinish(cp->conn);
    memset(cp, 0, sizeof *cp);
}

/*
 * Gives each table of a planned initial sync its maps' row filter (the publication's), so
 * rows no map takes (other legal entities, filtered rows) never leave the server.
 */
static dw_rc copy_plan_filters(struct runner *r)
{
    const struct dw_jobdef *def = dw_job_maps_def(r->maps);
    struct dw_src_catalog cat = {NULL, 0};
    PGconn *src = NULL;
    PGresult *res = NULL;
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    dw_rc rc = dw_pg_connect(r->config.source.conninfo, "dwasync initial sync", &src);
    if (rc != DW_OK || (rc = dw_src_catalog_fetch(src, def, &cat)) != DW_OK ||
        (rc = dw_pg_query(r->control, "planning the initial sync",
                          "SELECT id, source_schema, source_table FROM dwasync.copy_request "
                          "WHERE job_id = $1",
                          1, params, &res)) != DW_OK)
        goto out;
    for (int i = 0; i < PQntuples(res) && rc == DW_OK; i++) {
        struct dw_buf where;
        dw_buf_init(&where, 0);
        rc = dw_publication_table_filter(def, &cat, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                                         &where);
        if (rc == DW_OK && where.len > 0) {
            const char *p[] = {PQgetvalue(res, i, 0), dw_buf_str(&where)};
            PGresult *u = NULL;
            rc = dw_pg_query(r->control, "planning the initial sync",
                             "UPDATE dwasync.copy_request SET condition = $2 WHERE id = $1", 2, p,
                             &u);
            PQclear(u);
        }
        dw_buf_cleanup(&where);
    }
out:
    PQclear(res);
    PQfinish(src);
    dw_src_catalog_cleanup(&cat);
    return rc;
}

/*
 * Plans the initial sync of a job whose sync is pending: one copy request per source table,
 * in sequence order (parents first), and the state "running", in one transaction.
 */
static dw_rc copy_plan(struct runner *r)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_exec(r->control, "planning the initial sync", "BEGIN");
    if (rc != DW_OK)
        return rc;
    if ((rc = dw_pg_query(r->control, "planning the initial sync",
                          "DELETE FROM dwasync.copy_request WHERE job_id = $1", 1, params, &res)) !=
        DW_OK)
        goto out;
    PQclear(res);
    if ((rc = dw_pg_query(r->control, "planning the initial sync",
                          "INSERT INTO dwasync.copy_request (job_id, ord, source_schema, "
                          "source_table) SELECT $1, row_number() OVER (ORDER BY min(m.sequence), "
                          "m.source_schema, m.source_table), m.source_schema, m.source_table "
                          "FROM dwasync.table_map m WHERE m.job_id = $1 "
                          "GROUP BY m.source_schema, m.source_table",
                          1, params, &res)) != DW_OK)
        goto out;
    PQclear(res);
    res = NULL;
    if ((rc = copy_plan_filters(r)) != DW_OK)
        goto out;
    if ((rc = set_initial_sync(r, "running")) != DW_OK)
        goto out;
    rc = dw_pg_exec(r->control, "planning the initial sync", "COMMIT");
out:
    PQclear(res);
    if (rc != DW_OK)
        (void)dw_pg_exec(r->control, "planning the initial sync", "ROLLBACK");
    return rc;
}

/*
 * Loads the copy requests not done yet (the initial sync's, resyncs and repairs, in the order
 * queued), marks them started and opens the copy session.
 */
static dw_rc copy_start(struct runner *r)
{
    struct copy *cp = &r->copy;
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading the copy's progress",
                           "WITH s AS (UPDATE dwasync.copy_request SET started_at = "
                           "coalesce(started_at, now()) WHERE job_id = $1 AND NOT done RETURNING "
                           "id, source_schema || '.' || source_table, condition, last_key::text, "
                           "kind, emitted_key IS DISTINCT FROM last_key OR kind <> 'initial', ord) "
                           "SELECT s.*, (SELECT count(*) FROM dwasync.copy_request d WHERE "
                           "d.job_id = $1 AND d.done AND d.kind = 'initial') FROM s ORDER BY ord",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    int n = PQntuples(res), started = 0;
    bool some_done = n > 0 && strtoll(PQgetvalue(res, 0, 7), NULL, 10) > 0;
    cp->reqs = dw_calloc((size_t)n + 1, sizeof *cp->reqs);
    for (int i = 0; i < n; i++) {
        struct copy_req *q = &cp->reqs[cp->nreqs++];
        q->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        q->table = dw_strdup(PQgetvalue(res, i, 1));
        q->condition = PQgetisnull(res, i, 2) ? NULL : dw_strdup(PQgetvalue(res, i, 2));
        q->last_key = PQgetisnull(res, i, 3) ? NULL : dw_strdup(PQgetvalue(res, i, 3));
        q->kind = dw_strdup(PQgetvalue(res, i, 4));
        q->no_skip = PQgetvalue(res, i, 5)[0] == 't';
        cp->initial |= strcmp(q->kind, "initial") == 0;
        started += q->last_key != NULL;
    }
    PQclear(res);
    cp->active = true;
    r->snapshot_rows = 0;
    const char *what = cp->initial ? "initial sync" : "copy";
    dw_progress_init(&r->progress, what, 0, stderr, 0, (uint64_t)dw_clock_ms());
    if (started || (cp->initial && some_done))
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"slot", r->job.slot}),
                "%s resumes: %d table(s) left, %d in progress", what, n, started);
    else
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"slot", r->job.slot}),
                "%s of %d table(s) starting, interleaved with the stream", what, n);
    rc = dw_stream_connect(r->config.source.conninfo, false, "dwasync initial sync", &cp->conn);
    /* The first chunk now, before the stream delivers anything: it sets the position that
     * tells the changes to skip (copy_skips) from those to apply. */
    return rc == DW_OK ? copy_tend(r) : rc;
}

/* Publishes the progress of the job's latest `dwasync verify` run (another process) as
 * gauges; none until the job has one. */
static dw_rc publish_verify_progress(struct runner *r)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading verify's progress",
                           "SELECT finished_at IS NULL, source_rows + target_rows,"
                           " missing + extra + different FROM dwasync.verify_run"
                           " WHERE job_id = $1 ORDER BY id DESC LIMIT 1",
                           1, params, &res);
    if (rc == DW_OK && PQntuples(res) == 1) {
        const char *job_label[] = {"job", r->job.name, NULL};
        dw_metrics_set(r->metrics, DW_M_VERIFY_RUNNING, job_label,
                       PQgetvalue(res, 0, 0)[0] == 't' ? 1.0 : 0.0);
        dw_metrics_set(r->metrics, DW_M_VERIFY_ROWS, job_label,
                       strtod(PQgetvalue(res, 0, 1), NULL));
        dw_metrics_set(r->metrics, DW_M_VERIFY_DRIFT, job_label,
                       strtod(PQgetvalue(res, 0, 2), NULL));
    }
    PQclear(res);
    return rc;
}

/*
 * Every JOB_CHECK_MS: publishes the progress of the copies not done and of the latest verify
 * as gauges and, when no copy runs, starts those queued meanwhile (`job resync`, `verify
 * --repair`). A pending initial sync is planned by start_job() first.
 */
static dw_rc copy_poll(struct runner *r)
{
    struct copy *cp = &r->copy;
    int64_t now = dw_clock_ms();
    if (now < cp->next_poll_ms || r->paused)
        return DW_OK;
    cp->next_poll_ms = now + JOB_CHECK_MS;
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading the copy's progress",
                           "SELECT count(*), coalesce(sum(rows_copied), 0), "
                           "coalesce(sum(rows_total), 0) FROM dwasync.copy_request "
                           "WHERE job_id = $1 AND NOT done",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    int64_t pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    if (r->metrics) {
        const char *job_label[] = {"job", r->job.name, NULL};
        dw_metrics_set(r->metrics, DW_M_COPY_TABLES, job_label, (double)pending);
        dw_metrics_set(r->metrics, DW_M_COPY_ROWS, job_label, strtod(PQgetvalue(res, 0, 1), NULL));
        dw_metrics_set(r->metrics, DW_M_COPY_ROWS_PLANNED, job_label,
                       strtod(PQgetvalue(res, 0, 2), NULL));
    }
    PQclear(res);
    if (r->metrics && (rc = publish_verify_progress(r)) != DW_OK)
        return rc;
    if (cp->active || pending == 0 || strcmp(r->job.initial_sync, "pending") == 0)
        return DW_OK;
    return copy_start(r);
}

static bool was_streamed(const struct streamed_xids *s, uint32_t xid)
{
    size_t held = s->next < STREAMED_XIDS ? s->next : STREAMED_XIDS;
    for (size_t k = 0; k < held; k++)
        if (s->xid[k] == xid)
            return true;
    return false;
}

/*
 * True when the chunk just read missed a transaction the stream has already delivered: its
 * commit was in the WAL but not yet visible to the read (snapshot.h). Its changes went ahead
 * of the chunk, which would write older rows after them: the chunk is read again once that
 * transaction is visible.
 */
static bool stale_chunk(struct runner *r)
{
    struct copy *cp = &r->copy;
    const uint32_t *unseen = NULL;
    size_t n = dw_snapshot_chunk_unseen(cp->chunk, &unseen);
    for (size_t i = 0; i < n; i++) {
        /* The one waited for stays waited for, however long ago it was streamed. */
        if (unseen[i] != cp->waiting_xid && !was_streamed(&r->streamed, unseen[i]))
            continue;
        if (cp->waiting_xid != unseen[i]) {
            cp->waiting_xid = unseen[i];
            cp->stale_retry_ms = STALE_CHUNK_RETRY_MS;
            DW_LOGF(DW_LOG_INFO,
                    DW_FIELDS({"job", r->job.name}, {"table", cp->reqs[cp->cur].table}),
                    "copy waits for transaction %" PRIu32 ", streamed already: committed but "
                    "not visible yet (a synchronous standby not answering?)",
                    unseen[i]);
        } else if (cp->stale_retry_ms < STALE_CHUNK_RETRY_MAX_MS) {
            cp->stale_retry_ms *= 2;
        }
        return true;
    }
    return false;
}

/* A chunk's read ended (rc): kept, read again later, or the copy's connection made again. */
static dw_rc copy_read_ended(struct runner *r, dw_rc rc)
{
    struct copy *cp = &r->copy;
    if (rc == DW_OK && stale_chunk(r)) {
        dw_snapshot_chunk_free(cp->chunk); /* its watermarks will match no chunk */
        cp->chunk = NULL;
        cp->retry_at_ms = dw_clock_ms() + cp->stale_retry_ms;
        return DW_OK;
    }
    if (rc == DW_OK)
        cp->waiting_xid = 0; /* seen at last (a failed read says nothing of it) */
    if (rc == DW_ERR_PG) {
        /* The source went away: the stream reconnects by itself, so does the copy. */
        cp->retry_at_ms = dw_clock_ms() + 1000;
        return DW_OK;
    }
    return rc;
}

/* Whether a chunk is being read: the stream waits (snapshot.h), the sink goes on. */
static bool copy_reading(const struct runner *r)
{
    return r->copy.chunk && dw_snapshot_chunk_reading(r->copy.chunk);
}

/* Takes the rows of the chunk being read as the server sends them. */
static dw_rc copy_read_on(struct runner *r)
{
    struct copy *cp = &r->copy;
    bool done = false;
    dw_rc rc = dw_snapshot_chunk_continue(cp->conn, cp->chunk, &done);
    if (rc != DW_OK) {
        dw_snapshot_chunk_free(cp->chunk);
        cp->chunk = NULL;
    }
    return rc == DW_OK && !done ? DW_OK : copy_read_ended(r, rc);
}

/*
 * Moves the copy on: records the progress of chunks the checkpoint has passed, takes the
 * rows of the chunk being read, starts reading the next when none is in flight, and marks
 * the sync done at the end.
 */
static dw_rc copy_tend(struct runner *r)
{
    struct copy *cp = &r->copy;
    dw_rc rc = copy_poll(r);
    if (rc != DW_OK || !cp->active)
        return rc;
    dw_lsn confirmed = cp->reset ? cp->reset_confirmed : dw_pipeline_confirmed(r->pipeline);
    size_t done = 0;
    while (done < cp->nsteps && cp->steps[done].end_lsn <= confirmed) {
        struct copy_step *st = &cp->steps[done];
        char id[32], rows[32];
        snprintf(id, sizeof id, "%" PRId64, st->req_id);
        snprintf(rows, sizeof rows, "%" PRId64, st->rows);
        const char *params[] = {id, st->last_key, st->final ? "t" : "f", rows};
        PGresult *res = NULL;
        /* A crash here leaves the chunk applied and checkpointed but not recorded: it is read
         * and applied again after the restart (harmless: upserts, and the same watermarks). */
        if (DW_FAILPOINT("initial_sync_chunk_applied_before_progress")) {
            rc = DW_ERR_IO;
            break;
        }
        rc = dw_pg_query(r->control, "recording the initial sync's progress",
                         "UPDATE dwasync.copy_request SET last_key = coalesce($2::jsonb, "
                         "last_key), done = $3, rows_copied = rows_copied + $4, "
                         "updated_at = now() WHERE id = $1",
                         4, params, &res);
        PQclear(res);
        if (rc != DW_OK)
            break;
        char lsn[DW_LSN_STRLEN];
        DW_DEBUG("copy progress recorded: request %s up to %s (checkpoint past %s)", id,
                 st->last_key ? st->last_key : "(none)", dw_lsn_format(st->end_lsn, lsn));
        free(st->last_key);
        done++;
    }
    if (done) {
        memmove(cp->steps, cp->steps + done, (cp->nsteps - done) * sizeof *cp->steps);
        cp->nsteps -= done;
    }
    if (rc != DW_OK)
        return rc;
    if (cp->reset) {
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                "the stream reconnected: the copy goes on from its last recorded chunk");
        copy_cleanup(cp);
        return copy_start(r);
    }
    if (cp->cur == cp->nreqs && cp->nsteps == 0 && cp->chunk == NULL) {
        if (cp->initial && (rc = set_initial_sync(r, "done")) != DW_OK)
            return rc;
        r->progress.total = r->snapshot_rows;
        r->progress.done = r->snapshot_rows; /* updates come every 1000 rows: the exact count */
        dw_progress_finish(&r->progress, (uint64_t)dw_clock_ms());
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                "%s done: %" PRIu64 " row(s) copied by this process",
                cp->initial ? "initial sync" : "copy", r->snapshot_rows);
        copy_cleanup(cp);
        return DW_OK;
    }
    if (copy_reading(r))
        return copy_read_on(r);
    if (cp->chunk || cp->cur == cp->nreqs || r->paused || !dw_pipeline_accepting(r->pipeline) ||
        dw_clock_ms() < cp->retry_at_ms)
        return DW_OK;
    if (cp->conn == NULL || PQstatus(cp->conn) != CONNECTION_OK) {
        PQfinish(cp->conn);
        cp->conn = NULL;
        if (dw_stream_connect(r->config.source.conninfo, false, "dwasync initial sync",
                              &cp->conn) != DW_OK) {
            cp->retry_at_ms = dw_clock_ms() + 1000;
            return DW_OK;
        }
    }
    struct copy_req *q = &cp->reqs[cp->cur];
    char tag[96];
    snprintf(tag, sizeof tag, "job %" PRId64 " pid %d start %" PRId64 " chunk %" PRIu64, r->job.id,
             (int)getpid(), r->started_ms, ++r->chunks_read);
    struct dw_snapshot_request req = {q->table, q->condition, q->last_key};
    /* A chunk's rows wait in its result until the pipeline takes them: no more than a
     * window's worth, so that a result is let go within about a window (a 10,000-row chunk
     * of the sample's customers held 5 MB, under heaptrack, at bench_replay.sh's peak). */
    int64_t rows = r->config.source.snapshot_fetch_rows < r->config.apply.window_rows
                       ? r->config.source.snapshot_fetch_rows
                       : r->config.apply.window_rows;
    rc = dw_snapshot_chunk_begin(cp->conn, &req, rows, tag, &cp->chunk);
    return rc == DW_OK ? DW_OK : copy_read_ended(r, rc);
}

static dw_rc open_stream(struct runner *r, bool create_slot)
{
    struct dw_stream_handler handler = {
        .user = r,
        .begin = on_begin,
        .change = on_change,
        .commit = on_commit,
        .reset = on_reset,
        .message = on_message,
    };
    struct dw_stream_options so = {
        .conninfo = r->config.source.conninfo,
        .slot = r->job.slot,
        .publication = r->job.publication,
        .status_interval_ms = r->config.source.status_interval_ms,
        .reconnect_max_ms = r->config.source.reconnect_max_ms,
        .create_slot = create_slot,
        .types = r->types,
    };
    dw_rc rc = dw_slotguard_verify(r->config.source.conninfo, r->job.name, r->job.slot);
    return rc != DW_OK ? rc : dw_stream_open(&so, &handler, &r->stream);
}

/* A replay write in flight: the sink answers through the ticket. */
struct replay_ticket {
    struct dw_write_ticket base;
    struct runner *runner;
    void *token; /* the replay engine's */
};

static void replay_done(struct dw_write_ticket *t, const struct dw_write_result *res)
{
    struct replay_ticket *rt = (struct replay_ticket *)t;
    dw_replay_complete(rt->runner->replay, rt->token, res);
    rt->runner->replay_wanted = true;
    free(rt);
}

static dw_rc replay_remap(void *user, const struct dw_errstored *row, struct dw_remap *out)
{
    struct runner *r = user;
    return dw_replay_remap_with_maps(r->maps, row, out);
}

static dw_rc replay_submit(void *user, void *token, struct dw_write *w)
{
    struct runner *r = user;
    struct replay_ticket *t = dw_malloc(sizeof *t);
    *t = (struct replay_ticket){.base.done = replay_done, .runner = r, .token = token};
    void *ticket = &t->base;
    dw_rc rc = dw_sink_submit(r->sink, w, &ticket, 1);
    if (rc != DW_OK)
        free(t);
    return rc;
}

static void replay_unblocked(void *user, int64_t map_id, const char *key_text)
{
    struct runner *r = user;
    dw_pipeline_unblock(r->pipeline, map_id, key_text);
}

/* Replays what operators queued, reads replay requests, enforces the alert rule, purges. */
static dw_rc tend_errors(struct runner *r, int64_t now, bool control_readable)
{
    bool requested = false;
    dw_rc rc = DW_OK;
    /* Every turn: a request may wait in libpq's queue, read with another statement's answer. */
    if ((rc = dw_errtable_poll_requests(r->control, r->job.name,
                                        control_readable || now >= r->next_errors_check_ms,
                                        &requested)) != DW_OK)
        return rc;
    r->replay_wanted |= requested;
    if (now >= r->next_errors_check_ms) {
        r->next_errors_check_ms = now + ERRORS_CHECK_MS;
        r->replay_wanted = true; /* requests made while nobody listened */
        bool paused = false;
        if ((rc = dw_errtable_alert_enforce(r->control, r->job.id, &paused)) != DW_OK)
            return rc;
        if (paused)
            r->next_job_check_ms = now; /* notice the pause at once */
    }
    if (now >= r->next_purge_ms) {
        r->next_purge_ms = now + PURGE_MS;
        int64_t purged = 0;
        if ((rc = dw_errtable_purge(r->control, r->job.id,
                                    (int)r->config.apply.error_retention_days, &purged)) != DW_OK)
            return rc;
        if (purged)
            DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                    "purged %" PRId64 " resolved or skipped error rows", purged);
    }
    if (r->replay_wanted) {
        r->replay_wanted = false;
        bool idle = true;
        rc = dw_replay_pump(r->replay, &idle);
    }
    return rc;
}

/* Starts the machinery of an active job: maps, sink, pipeline, stream. */
static dw_rc start_job(struct runner *r)
{
    dw_rc rc = dw_job_maps_load(r->control, r->job.name, &r->maps);
    if (rc != DW_OK)
        return rc;
    if ((rc = dw_values_options_init(&r->values, r->config.source.timezone)) != DW_OK)
        return rc;
    /* Filled from the source's pg_type by the stream (and snapshot) when they connect. */
    r->types = dw_types_new();
    r->values.types = r->types;
    r->values.max_value_bytes = r->config.apply.max_value_bytes;
    if ((rc = dw_sink_new(&r->config, dw_write_ticket_dispatch, NULL, &r->sink)) != DW_OK)
        return rc;
    dw_sink_use_loop(r->sink, r->loop);
    struct dw_pipeline_options po = {
        .job_id = r->job.id,
        .job_name = r->job.name,
        .window_rows = r->config.apply.window_rows,
        .window_growth = r->config.apply.window_growth,
        .apply_ahead = r->config.apply.apply_ahead,
        .window_bytes = r->config.apply.window_bytes,
        .window_ms = r->config.apply.window_ms,
        .missing_parent_retries = r->config.apply.missing_parent_retries,
        .batch_size = r->config.dataverse.batch_size,
        .observer = &r->observer,
    };
    dw_seams_sink_writer(r->sink, &r->writer);
    dw_seams_control_store(r->control, &r->store);
    if ((rc = dw_pipeline_new(&po, &r->writer, &r->store, r->maps, &r->pipeline)) != DW_OK)
        return rc;
    static const struct dw_replay_ops replay_ops = {replay_remap, replay_submit, replay_unblocked};
    if ((rc = dw_errtable_listen(r->control)) != DW_OK ||
        (rc = dw_replay_new(r->control, r->job.id, &replay_ops, r,
                            dw_replay_in_flight_for(&r->config), &r->replay)) != DW_OK)
        return rc;
    /* The slot is created once, by `job start` (here only when it is missing), and kept: an
     * interrupted sync resumes on it at its next chunk, and deletes committed meanwhile
     * arrive through it. */
    bool pending = strcmp(r->job.initial_sync, "pending") == 0;
    if ((rc = open_stream(r, pending)) != DW_OK)
        return rc;
    if (pending && (rc = copy_plan(r)) != DW_OK)
        return rc;
    /* A copy under way or queued (initial sync, resync, repair) goes on at once: its first
     * chunk is read before the stream delivers anything, as when the copy began. */
    if (strcmp(r->job.initial_sync, "running") == 0)
        rc = copy_start(r);
    else
        rc = copy_poll(r);
    return rc;
}

/* Tears down what start_job built, after the pipeline drained or gave up. */
static void stop_job(struct runner *r)
{
    if (r->stream) {
        if (r->pipeline && dw_pipeline_confirmed(r->pipeline))
            dw_stream_confirm(r->stream, dw_pipeline_confirmed(r->pipeline),
                              dw_pipeline_idle(r->pipeline));
        r->stream_reconnects += dw_stream_reconnects(r->stream);
        dw_stream_close(r->stream);
        r->stream = NULL;
    }
    settle_writes(r);
    dw_sink_free(r->sink); /* first: no callback may reach a freed pipeline or engine */
    r->sink = NULL;
    dw_replay_free(r->replay);
    r->replay = NULL;
    dw_pipeline_free(r->pipeline);
    r->pipeline = NULL;
    dw_job_maps_free(r->maps);
    r->maps = NULL;
    dw_types_free(r->types);
    r->types = NULL;
    copy_cleanup(&r->copy);
    /* A job started again counts from zero: the metrics take deltas from these. */
    r->metrics_seen_unchanged = 0;
    memset(&r->metrics_seen_sink, 0, sizeof r->metrics_seen_sink);
    memset(&r->sink_seen, 0, sizeof r->sink_seen);
}

/*
 * Reloads the config's log settings (SIGHUP). Table maps are not reloaded: they cannot
 * change while the job is active or paused, and a stopped job starts again from its maps.
 */
static void reload(struct runner *r)
{
    dw_daemon_notify_reloading();
    if (r->opts->config_path) {
        struct dw_config fresh;
        struct dw_buf errors;
        dw_config_init(&fresh);
        dw_buf_init(&errors, 0);
        if (dw_config_load(&fresh, r->opts->config_path, &errors) == DW_OK) {
            dw_log_configure((enum dw_log_level)fresh.log.level,
                             (enum dw_log_format)fresh.log.format);
            dw_config_cleanup(&fresh);
            DW_INFO("configuration reloaded (log settings; restart for other changes)");
        } else {
            DW_ERROR("configuration not reloaded: %s", dw_buf_str(&errors));
            dw_config_cleanup(&fresh);
        }
        dw_buf_cleanup(&errors);
    }
    r->next_publication_check_ms = 0; /* SIGHUP also checks the publication at once */
    dw_daemon_notify_ready("reloaded");
}

/*
 * Re-reads the job's state (only the state: the name and slot are borrowed by the pipeline
 * and the stream, and a job is never renamed); pauses or stops the stream accordingly.
 */
static dw_rc check_job(struct runner *r)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading the job's state",
                           "SELECT state, coalesce(state_reason, '') FROM dwasync.job "
                           "WHERE id = $1",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(res) == 0) {
        r->job_dropped = true;
        PQclear(res);
        return DW_ERR_NOT_FOUND;
    }
    free(r->job.state);
    r->job.state = dw_strdup(PQgetvalue(res, 0, 0));
    free(r->job.state_reason);
    r->job.state_reason = dw_strdup(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (strcmp(r->job.state, "failed") == 0)
        r->failed_seen = true;
    bool paused = strcmp(r->job.state, "active") != 0;
    if (!paused && r->paused)
        r->next_publication_check_ms = 0; /* started again: is the cause of a failure gone? */
    if (paused != r->paused)
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"state", r->job.state}),
                paused ? "job is %s: applying what was received, then holding the stream"
                       : "job is %s again: resuming",
                r->job.state);
    r->paused = paused;
    return DW_OK;
}

/*
 * After check_job(): whether the stream loop ends so that the job starts again from its
 * record, the job and its maps read afresh (start_job_again()). Maps may change only while
 * a job is stopped or failed: a stopped job is held until it is started, a failed one that
 * was started again goes at once. With --until-caught-up a stop ends the run instead.
 */
static bool must_start_again(struct runner *r)
{
    if (strcmp(r->job.state, "stopped") == 0) {
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}), "job was stopped");
        r->start_again = !r->opts->until_caught_up;
        return true;
    }
    if (r->failed_seen && strcmp(r->job.state, "active") == 0) {
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                "job was started again after it failed: reading it and its maps again");
        r->start_again = true;
        return true;
    }
    return false;
}

/* libpq's message for a log line: its last line, without the final newline. */
static void pg_reason(PGconn *conn, char *buf, size_t size)
{
    snprintf(buf, size, "%s", conn ? PQerrorMessage(conn) : "no connection");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n == 0)
        snprintf(buf, size, "connection lost");
}

/*
 * Keeps the control session (checkpoints, errors, job state, LISTEN) and the heartbeat
 * session up: a broken one is reset when its backoff allows, one warning per attempt. A
 * reset session gets its LISTEN again (whoever reset it: the pipeline resets the control
 * session when a checkpoint fails), and the lock is verified at once, since whatever broke
 * the control session may have ended the lock session too. DW_OK when both are up.
 */
static dw_rc tend_control(struct runner *r)
{
    bool broken = PQstatus(r->control) != CONNECTION_OK || PQstatus(r->lock_conn) != CONNECTION_OK;
    uint64_t now = (uint64_t)dw_clock_ms();
    if (broken && dw_backoff_due(&r->control_backoff, now)) {
        if (PQstatus(r->control) != CONNECTION_OK)
            PQreset(r->control);
        if (PQstatus(r->lock_conn) != CONNECTION_OK)
            PQreset(r->lock_conn);
        broken = PQstatus(r->control) != CONNECTION_OK || PQstatus(r->lock_conn) != CONNECTION_OK;
        if (broken) {
            char why[512];
            pg_reason(PQstatus(r->control) != CONNECTION_OK ? r->control : r->lock_conn, why,
                      sizeof why);
            uint64_t delay = dw_backoff_failed(&r->control_backoff, now);
            DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", r->job.name}),
                    "control database connection lost (%s); reconnecting in %" PRIu64
                    " ms (attempt %" PRIu64 ")",
                    why, delay, r->control_backoff.failures);
        }
    }
    if (broken)
        return DW_ERR_PG;
    if (PQbackendPID(r->control) != r->control_pid) {
        if (r->control_pid != 0)
            DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                    "control database connection restored");
        if (r->replay && dw_errtable_listen(r->control) != DW_OK)
            return DW_ERR_PG;
        r->control_pid = PQbackendPID(r->control);
        r->replay_wanted = true; /* requests made while nobody listened */
        r->next_ha_check_ms = 0;
        dw_backoff_succeeded(&r->control_backoff);
    }
    return DW_OK;
}

/*
 * Marks the job failed with a reason (status, /healthz, dwasync.job_status show it) and holds
 * the stream at once, as check_job() would on reading the new state.
 */
static dw_rc fail_job(struct runner *r, const char *reason)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id, reason};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(r->control, "marking the job failed",
                           "UPDATE dwasync.job SET state = 'failed', state_reason = $2, "
                           "updated_at = now() WHERE id = $1 AND state IN ('active', 'paused')",
                           2, params, &res);
    if (rc == DW_OK && strcmp(PQcmdTuples(res), "1") == 0) {
        free(r->job.state);
        r->job.state = dw_strdup("failed");
        free(r->job.state_reason);
        r->job.state_reason = dw_strdup(reason);
        r->paused = true;
        r->failed_seen = true;
    }
    PQclear(res);
    return rc;
}

/*
 * A mapped table that left the publication (ALTER TABLE ... DROP COLUMN ... CASCADE drops a
 * table whose row filter names the column) sends no changes any more, silently. The mapped
 * tables are read from the control schema; membership is asked of the source, on the control
 * session when both are one database. A missing table fails the job.
 */
static dw_rc check_publication(struct runner *r)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, r->job.id);
    const char *params[] = {id};
    PGresult *res = NULL;
    PGconn *source = NULL;
    dw_rc rc = dw_pg_query(r->control, "reading the mapped tables",
                           "SELECT coalesce(json_agg(DISTINCT jsonb_build_array(source_schema, "
                           "source_table)), '[]')::text FROM dwasync.table_map WHERE job_id = $1",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    char *tables = dw_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    bool same_db = strcmp(dw_config_control_conninfo(&r->config), r->config.source.conninfo) == 0;
    if (!same_db && (rc = dw_pg_connect(r->config.source.conninfo, "dwasync run (publication)",
                                        &source)) != DW_OK)
        goto out;
    const char *p2[] = {r->job.publication, tables};
    if ((rc = dw_pg_query(same_db ? r->control : source, "checking the publication",
                          "SELECT string_agg(format('%I.%I', t->>0, t->>1), ', ' ORDER BY 1) "
                          "FROM json_array_elements($2::json) t WHERE NOT EXISTS (SELECT 1 "
                          "FROM pg_publication_tables p WHERE p.pubname = $1 "
                          "AND p.schemaname = t->>0 AND p.tablename = t->>1)",
                          2, p2, &res)) != DW_OK)
        goto out;
    if (!PQgetisnull(res, 0, 0)) {
        char *reason = dw_asprintf("mapped tables not in publication \"%s\": %s",
                                   r->job.publication, PQgetvalue(res, 0, 0));
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"job", r->job.name},
                          {"hint", "Their changes no longer arrive. Add them to the publication "
                                   "again (ALTER PUBLICATION ... ADD TABLE), resynchronise them "
                                   "(dwasync job resync --map), then dwasync job start."}),
                "%s; the job is marked failed and holds its stream", reason);
        rc = fail_job(r, reason);
        free(reason);
    }
out:
    PQclear(res);
    PQfinish(source);
    free(tables);
    return rc;
}

/*
 * The signal fd or the metrics listener is ready: the turn ends, and the loop's caller takes
 * the signals (dw_daemon_signals_take) and serves the listener (dw_metrics_server_run).
 */
static void on_wakeup_fd(void *user, int fd, unsigned revents)
{
    (void)user;
    (void)fd;
    (void)revents;
}

/*
 * Waits up to timeout_ms for a signal while nothing else runs (a standby, a paused job, a
 * backoff): /healthz and /metrics keep answering, the watchdog keeps being fed.
 */
static void idle_wait(struct runner *r, int timeout_ms)
{
    (void)dw_loop_run_once(r->loop, timeout_ms < 0 || timeout_ms > 1000 ? 1000 : timeout_ms);
    update_metrics(r);
    if (r->metrics_server)
        dw_metrics_server_run(r->metrics_server);
    if (dw_daemon_signals_take() & DW_SIGNAL_STOP)
        r->stopping = true;
    dw_watchdog_tick(&r->watchdog, (uint64_t)dw_clock_ms());
}

static bool caught_up(struct runner *r)
{
    return r->stream && dw_stream_start_lsn(r->stream) != DW_LSN_INVALID &&
           dw_stream_received_lsn(r->stream) >= dw_stream_start_lsn(r->stream) &&
           dw_pipeline_idle(r->pipeline) && !r->copy.active;
}

/* The stream's socket, watched in the stream loop's wait while the pipeline takes what it
 * would read (not in a drain or a blocking call: nothing there would read it). */
static int stream_watch_fd(void *user)
{
    struct runner *r = user;
    if (!r->waiting || r->paused || copy_reading(r) || !dw_pipeline_accepting(r->pipeline))
        return -1;
    return dw_stream_fd(r->stream);
}

/* The copy's connection while it reads a chunk, in the same wait: its rows end the wait. */
static int copy_watch_fd(void *user)
{
    struct runner *r = user;
    return r->waiting && copy_reading(r) ? PQsocket(r->copy.conn) : -1;
}

/* The control connection's socket (NOTIFYs of replays and skips), in the same wait. */
static int control_watch_fd(void *user)
{
    struct runner *r = user;
    return r->waiting ? PQsocket(r->control) : -1;
}

static void on_control_ready(void *user, int fd, unsigned revents)
{
    (void)fd;
    (void)revents;
    ((struct runner *)user)->control_ready = true;
}

/* One turn after another of an active job (stream_loop() watches its connections). */
static dw_rc stream_turns(struct runner *r)
{
    dw_rc rc = DW_OK;
    while (!r->stopping) {
        int64_t now = dw_clock_ms();
        unsigned sig = dw_daemon_signals_take();
        if (sig & DW_SIGNAL_STOP)
            break;
        if (sig & DW_SIGNAL_RELOAD)
            reload(r);
        bool control_ok = tend_control(r) == DW_OK;
        if (now >= r->next_ha_check_ms) {
            r->next_ha_check_ms = now + HA_CHECK_MS;
            if ((rc = dw_ha_check(&r->ha)) != DW_OK) {
                /* Start again: retake the lock (or become a standby if another runner took
                 * it), then read the job and resume from the slot's confirmed position. */
                r->lock_lost = true;
                return DW_ERR_RETRY;
            }
        }
        if (control_ok && now >= r->next_job_check_ms) {
            r->next_job_check_ms = now + JOB_CHECK_MS;
            if (check_job(r) == DW_OK && must_start_again(r))
                break;
        }
        if (control_ok && !r->paused && now >= r->next_publication_check_ms) {
            r->next_publication_check_ms = now + PUBLICATION_CHECK_MS;
            (void)check_publication(r); /* a failure to ask is retried at the next check */
        }
        /* Held, a failed job would never catch up. */
        if (r->opts->until_caught_up && strcmp(r->job.state, "failed") == 0) {
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"job", r->job.name}),
                    "job failed (%s); nothing more can be caught up with",
                    r->job.state_reason && *r->job.state_reason ? r->job.state_reason
                                                                : "no reason recorded");
            return DW_ERR_STATE;
        }

        /* Read while the pipeline has room; a full budget means more may be buffered. */
        bool more = false;
        size_t room = r->paused || copy_reading(r) ? 0 : dw_pipeline_room(r->pipeline);
        if (room > 0) {
            size_t budget = room < STEP_BUDGET ? room : STEP_BUDGET;
            uint64_t reconnects = dw_stream_reconnects(r->stream);
            rc = dw_stream_step(r->stream, budget);
            if (dw_stream_reconnects(r->stream) != reconnects)
                r->next_ha_check_ms = 0; /* the source came back: is the lock still ours? */
            if (rc != DW_OK && rc != DW_ERR_RETRY)
                return rc;
            more = dw_stream_budget_spent(r->stream);
        } else {
            /* Not reading: still keep the walsender's feedback timer satisfied. */
            rc = dw_stream_step(r->stream, 0);
            if (rc != DW_OK && rc != DW_ERR_RETRY)
                return rc;
        }
        /* A stream that waits for a chunk's read is neither drained nor behind: the windows
         * keep the size they learnt (window.h). */
        if (!copy_reading(r))
            dw_pipeline_stream_drained(r->pipeline, room > 0 && !more);
        bool flush = r->opts->until_caught_up || r->paused;
        rc = dw_pipeline_poll(r->pipeline, flush);
        if (rc != DW_OK && rc != DW_ERR_PG)
            return rc;
        /* Always, even before the first window: an idle pipeline lets the stream confirm
         * keepalives, so an idle publication pins no WAL from the first minute on. */
        dw_stream_confirm(r->stream, dw_pipeline_confirmed(r->pipeline),
                          dw_pipeline_idle(r->pipeline));
        if ((rc = copy_tend(r)) != DW_OK && rc != DW_ERR_PG)
            return rc;

        if (r->opts->until_caught_up && caught_up(r)) {
            DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                    "caught up: everything committed before start is applied or parked");
            break;
        }
        if (now >= r->next_status_ms || (r->heartbeat_due && control_ok)) {
            r->next_status_ms = now + STATUS_MS;
            track_dataverse(r);
            update_metrics(r);
            report_status(r);
        }
        dw_watchdog_tick(&r->watchdog, (uint64_t)dw_clock_ms());

        int timeout = more ? 0 : STATUS_MS;
        int t = dw_stream_timeout_ms(r->stream);
        if (t >= 0 && t < timeout)
            timeout = t;
        t = dw_pipeline_timeout_ms(r->pipeline);
        if (t >= 0 && t < timeout)
            timeout = t;
        t = dw_watchdog_timeout_ms(&r->watchdog, (uint64_t)dw_clock_ms());
        if (t >= 0 && t < timeout)
            timeout = t;
        if (r->metrics_server) {
            t = dw_metrics_server_timeout_ms(r->metrics_server);
            if (t >= 0 && t < timeout)
                timeout = t;
        }
        if (r->replay_wanted)
            timeout = 0;
        if (r->copy.active && r->copy.chunk == NULL) { /* a chunk to read again */
            int64_t wait = r->copy.retry_at_ms - dw_clock_ms();
            if (wait > 0 && wait < timeout)
                timeout = (int)wait;
        }
        if (!control_ok) {
            t = dw_backoff_timeout_ms(&r->control_backoff, (uint64_t)dw_clock_ms());
            if (t < timeout)
                timeout = t;
        }
        r->control_ready = false;
        r->waiting = true;
        rc = dw_sink_run(r->sink, timeout);
        r->waiting = false;
        if (rc != DW_OK)
            return rc;
        if (r->metrics_server)
            dw_metrics_server_run(r->metrics_server);
        /* A broken control connection is reset by tend_control() (or the pipeline's next
         * checkpoint). */
        if (control_ok)
            (void)tend_errors(r, dw_clock_ms(), r->control_ready);
    }
    return DW_OK;
}

/*
 * The event loop of an active job: the stream's, the control connection's and (while it
 * reads a chunk) the copy's sockets are watched on the loop while it runs, each turn on the
 * descriptor its connection has then (both change with reconnects: loop.h's watches).
 */
static dw_rc stream_loop(struct runner *r)
{
    struct dw_loop_watch *stream = dw_loop_watch_new(r->loop, stream_watch_fd, DW_LOOP_IN,
                                                     on_wakeup_fd, r),
                         *control = dw_loop_watch_new(r->loop, control_watch_fd, DW_LOOP_IN,
                                                      on_control_ready, r),
                         *copy =
                             dw_loop_watch_new(r->loop, copy_watch_fd, DW_LOOP_IN, on_wakeup_fd, r);
    dw_rc rc = stream_turns(r);
    dw_loop_watch_free(copy);
    dw_loop_watch_free(control);
    dw_loop_watch_free(stream);
    return rc;
}

/*
 * Waits as a standby until this process holds the job's lock (or a stop is requested). A
 * lock still held from before is verified first. A lock session that cannot be opened (the
 * server is down or restarting) is retried with backoff: only a lock held by another runner
 * makes this process a standby.
 */
static dw_rc wait_for_lock(struct runner *r)
{
    bool active = false;
    bool said = false;
    if (r->ha.active && dw_ha_check(&r->ha) == DW_OK)
        return DW_OK;
    while (!r->stopping) {
        uint64_t now = (uint64_t)dw_clock_ms();
        dw_rc rc =
            dw_backoff_due(&r->lock_backoff, now) ? dw_ha_try(&r->ha, now, &active) : DW_ERR_RETRY;
        if (rc == DW_ERR_PG) {
            uint64_t delay = dw_backoff_failed(&r->lock_backoff, now);
            r->ha.next_try_ms = 0; /* the backoff paces the next attempt */
            DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", r->job.name}),
                    "cannot take the job lock; trying again in %" PRIu64 " ms (attempt %" PRIu64
                    ")",
                    delay, r->lock_backoff.failures);
        } else if (rc != DW_OK && rc != DW_ERR_RETRY) {
            return rc;
        } else if (rc == DW_OK) {
            dw_backoff_succeeded(&r->lock_backoff);
            if (active) {
                r->lock_lost = false;
                return DW_OK;
            }
            r->lock_lost = false; /* not ours to take again: a standby now */
            if (!said) {
                DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                        "another runner holds the job: waiting as a standby");
                dw_daemon_notify_ready("standby");
                said = true;
            }
        }
        int timeout = dw_ha_timeout_ms(&r->ha, (uint64_t)dw_clock_ms());
        int backoff = dw_backoff_timeout_ms(&r->lock_backoff, (uint64_t)dw_clock_ms());
        idle_wait(r, backoff > timeout ? backoff : timeout);
    }
    return DW_OK;
}

/*
 * Waits while the job is paused, stopped or failed. DW_OK once it is active, DW_ERR_STATE
 * when it is not and the run should end (--until-caught-up), DW_ERR_INTERRUPTED on a stop,
 * or the error of reading the job (DW_ERR_PG: the caller reconnects and starts again).
 */
static dw_rc wait_until_active(struct runner *r)
{
    bool said = false;
    while (!r->stopping) {
        dw_rc rc = check_job(r);
        if (rc != DW_OK)
            return rc;
        if (strcmp(r->job.state, "active") == 0)
            return DW_OK;
        if (r->opts->until_caught_up) {
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"job", r->job.name}, {"state", r->job.state}),
                    "job is not active; nothing to catch up with");
            return DW_ERR_STATE;
        }
        if (!said) {
            DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"state", r->job.state}),
                    "job is not active: waiting");
            said = true;
        }
        idle_wait(r, JOB_CHECK_MS);
    }
    return DW_ERR_INTERRUPTED;
}

/*
 * After a step failed on Postgres again and again: true when a connection is broken (the
 * control or heartbeat session, or the source cannot be reached), a fault that heals; false
 * for an error a live server keeps giving (permissions, a bad object), which ends the run.
 */
static bool connection_fault(struct runner *r)
{
    if (PQstatus(r->control) != CONNECTION_OK || PQstatus(r->lock_conn) != CONNECTION_OK)
        return true;
    PGconn *probe = NULL;
    if (dw_pg_connect(r->config.source.conninfo, "dwasync run (probe)", &probe) != DW_OK)
        return true;
    PQfinish(probe);
    return false;
}

/* A round trip that tells libpq whether the session still lives (CONNECTION_BAD if not). */
static void ping(PGconn *conn)
{
    if (PQstatus(conn) == CONNECTION_OK)
        PQclear(PQexec(conn, "SELECT 1"));
}

/*
 * Waits until the control sessions are up again (or a stop), with backoff. Both are pinged
 * first: whatever broke one connection (a restart) likely broke the idle ones too.
 */
static void reconnect_control(struct runner *r)
{
    ping(r->control);
    ping(r->lock_conn);
    while (!r->stopping && tend_control(r) != DW_OK)
        idle_wait(r, dw_backoff_timeout_ms(&r->control_backoff, (uint64_t)dw_clock_ms()));
}

/*
 * Waits until the job is active and the environment guard (guard.h) trusts its source and
 * Dataverse environment: a changed one pauses the job before anything is read or written.
 * A failure to read either identity is retried (the source or Dataverse may be coming up).
 * Returns as wait_until_active() does.
 */
static dw_rc wait_until_trusted(struct runner *r)
{
    for (;;) {
        dw_rc rc = wait_until_active(r);
        if (rc != DW_OK)
            return rc;
        bool trusted = false;
        rc = dw_guard_verify(r->control, &r->config, r->job.id, r->job.name, &trusted);
        if (rc == DW_OK && trusted)
            return DW_OK;
        if (rc != DW_OK)
            idle_wait(r, JOB_CHECK_MS);
        if (r->stopping)
            return DW_ERR_INTERRUPTED;
    }
}

/*
 * One life of the active job: take the lock, read the job (after the lock, never before),
 * start it, stream. DW_ERR_RETRY when it should start again: the lock session or another
 * connection broke (the slot redelivers what was not confirmed; the apply is idempotent).
 */
static dw_rc run_once(struct runner *r)
{
    dw_rc rc = wait_for_lock(r);
    if (rc != DW_OK || r->stopping)
        return rc;
    /* Everything read before the lock may be stale: a standby that waited while another
     * runner finished the initial sync must see "done", not the "pending" it read first. */
    if (DW_FAILPOINT("failover_after_lock_before_job_read"))
        return DW_ERR_IO;
    if ((rc = load_job(r)) != DW_OK)
        return rc;
    if ((rc = wait_until_trusted(r)) != DW_OK)
        return rc == DW_ERR_INTERRUPTED ? DW_OK : rc;
    /* Read again once active: a job started while this runner waited was given its initial
     * sync state (and perhaps a new slot) by "job start". */
    if ((rc = load_job(r)) != DW_OK)
        return rc;
    if ((rc = start_job(r)) != DW_OK)
        return rc;
    dw_daemon_notify_ready("streaming");
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"slot", r->job.slot}),
            "streaming changes to Dataverse");
    r->failed_starts = 0;
    r->failed_seen = strcmp(r->job.state, "failed") == 0;
    return stream_loop(r);
}

/*
 * The job stopped, or started again after it failed (must_start_again()): what is in flight
 * is finished (bounded) and confirmed, the stream and the sink are closed, and the lock is
 * kept. The next run_once() waits while the job is stopped, then reads the job and its maps
 * afresh, so an operator's stop, import, start needs no restart of the service.
 */
static void start_job_again(struct runner *r)
{
    r->start_again = false;
    if (drain(r, pipeline_settled, dw_clock_ms() + DW_RUNNER_DRAIN_MS) != DW_OK) {
        DW_WARN("starting the job again with writes still in flight; they will be applied "
                "again from the slot");
    }
    stop_job(r);
    if (strcmp(r->job.state, "stopped") != 0)
        return;
    dw_daemon_notify_status("job stopped: waiting until it is started again");
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}, {"slot", r->job.slot}),
            "the stopped job holds its lock and slot; it streams again from the slot when "
            "started");
}

/*
 * Runs the job until a stop, a permanent error, or (--until-caught-up) the end. A broken
 * connection starts it again after a backoff; another runner holding the lock makes this
 * one a standby (in wait_for_lock) rather than ending it.
 */
static dw_rc run_job(struct runner *r)
{
    for (;;) {
        dw_rc rc = run_once(r);
        if (rc == DW_OK && r->start_again && !r->stopping) {
            start_job_again(r);
            continue;
        }
        if (r->job_dropped) {
            DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", r->job.name}),
                    "the job was dropped: nothing is left to run");
            return DW_OK;
        }
        /* A stop that interrupted the work (a copy waiting for room in the pipeline) is a
         * clean stop: what was not applied is applied again on the next start. */
        if (r->stopping)
            return rc == DW_ERR_INTERRUPTED ? DW_OK : rc;
        if (rc == DW_OK)
            return rc;
        bool again =
            rc == DW_ERR_RETRY ||
            (rc == DW_ERR_PG && (++r->failed_starts < START_ATTEMPTS || connection_fault(r)));
        if (!again)
            return rc;
        /* Nothing is drained: in-flight writes are abandoned (the slot redelivers them),
         * once those on the wire are answered (stop_job()). */
        stop_job(r);
        r->restarts++;
        r->control_pid = 0;
        reconnect_control(r);
        if (rc != DW_ERR_RETRY) {
            uint64_t delay = dw_backoff_failed(&r->lock_backoff, (uint64_t)dw_clock_ms());
            DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", r->job.name}),
                    "starting the job failed on a broken connection; again in %" PRIu64 " ms",
                    delay);
        } else {
            DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", r->job.name}),
                    "the job lock session was lost: taking the lock again, then resuming from "
                    "the slot's confirmed position");
        }
    }
}

/* The runner keeps its own copy of the config, read from the same file as the CLI's. */
static dw_rc copy_config(struct dw_config *dst, const char *path)
{
    dw_config_init(dst);
    if (path == NULL)
        return DW_OK; /* the CLI ran on built-in defaults too */
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc = dw_config_load(dst, path, &errors);
    if (rc != DW_OK)
        DW_ERROR("%s", dw_buf_str(&errors));
    dw_buf_cleanup(&errors);
    return rc;
}

dw_rc dw_runner_run(const struct dw_runner_options *opts)
{
    struct runner r = {.opts = opts,
                       .observer = {.changed = observed},
                       .signal_fd = -1,
                       .dataverse_ok = true,
                       .started_ms = dw_clock_wall_us() / 1000};
    r.observer.user = &r;
    dw_rc rc = copy_config(&r.config, opts->config_path);
    if (rc != DW_OK)
        return rc;
    const char *conninfo = dw_config_control_conninfo(&r.config);
    const char *sqldir = dw_paths_sqldir();
    r.loop = dw_loop_new(NULL);
    if ((rc = dw_daemon_signals_install(&r.signal_fd)) != DW_OK ||
        (rc = dw_loop_add_fd(r.loop, r.signal_fd, DW_LOOP_IN, on_wakeup_fd, &r)) != DW_OK)
        goto out;
    dw_watchdog_init(&r.watchdog, (uint64_t)dw_clock_ms());
    if ((rc = dw_pg_connect(conninfo, "dwasync run", &r.control)) != DW_OK)
        goto out;
    if ((rc = dw_pg_connect(conninfo, "dwasync run (lock)", &r.lock_conn)) != DW_OK)
        goto out;
    if (sqldir == NULL || (rc = dw_migrate_require_current(r.control, sqldir)) != DW_OK) {
        rc = rc ? rc : DW_ERR_VERSION;
        goto out;
    }
    if ((rc = load_job(&r)) != DW_OK)
        goto out;
    if (r.config.metrics.listen && *r.config.metrics.listen) {
        r.metrics = dw_metrics_new();
        dw_metrics_define_standard(r.metrics);
        r.change_metrics = dw_change_metrics_new(r.metrics);
        if ((rc = dw_metrics_server_start(r.config.metrics.listen, r.metrics, health, &r,
                                          &r.metrics_server)) != DW_OK)
            goto out;
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"listen", r.config.metrics.listen}),
                "serving /metrics and /healthz on port %u",
                dw_metrics_server_port(r.metrics_server));
        rc = dw_loop_add_fd(r.loop, dw_metrics_server_fd(r.metrics_server), DW_LOOP_IN,
                            on_wakeup_fd, &r);
        if (rc != DW_OK)
            goto out;
    }
    dw_ha_init(&r.ha, r.lock_conn, r.job.id, 0);
    dw_backoff_init(&r.control_backoff, RECONNECT_MIN_MS, RECONNECT_MAX_MS);
    dw_backoff_init(&r.lock_backoff, RECONNECT_MIN_MS, RECONNECT_MAX_MS);
    rc = run_job(&r);

    /* Stop: finish what is in flight (bounded), confirm what is safe. */
    dw_daemon_notify_stopping();
    if (r.pipeline && r.sink) {
        r.stopping = true;
        if (drain(&r, pipeline_settled, dw_clock_ms() + DW_RUNNER_DRAIN_MS) != DW_OK) {
            DW_WARN("stopping with writes still in flight; they will be applied again on "
                    "the next start");
        }
    }
out:
    update_metrics(&r);
    stop_job(&r);
    dw_loop_free(r.loop); /* after the sink, its tenant; it closes none of the descriptors */
    dw_ha_cleanup(&r.ha);
    dw_metrics_server_free(r.metrics_server);
    dw_change_metrics_free(r.change_metrics);
    dw_metrics_free(r.metrics);
    PQfinish(r.lock_conn);
    PQfinish(r.control);
    dw_daemon_signals_restore();
    job_cleanup(&r.job);
    dw_config_cleanup(&r.config);
    return rc;
}

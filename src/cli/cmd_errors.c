/*
 * `dwasync errors list | show | replay | skip | resolve-from-source`: triage of the error table
 * from the shell.
 * Everything goes through the same SQL the operator would use from psql (the views and
 * dwasync.replay_error / replay_errors / skip_error), so the two paths cannot disagree.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/cli.h"
#include "dwasync/daemon.h"
#include "dwasync/errtable.h"
#include "dwasync/ha.h"
#include "dwasync/log.h"
#include "dwasync/mapping.h"
#include "dwasync/migrate.h"
#include "dwasync/paths.h"
#include "dwasync/pg.h"
#include "dwasync/sink.h"

struct errors_opts {
    const char *job;
    const char *status;
    const char *table;
    const char *code;
    const char *reason;
    const char *limit;
    bool all;
    bool queue_only;
    int nids;
    char **ids; /* borrowed from argv */
};

/* Parses the subcommand's options; positional arguments must be error ids. */
static int parse_opts(const char *sub, int argc, char **argv, struct errors_opts *o)
{
    static const struct option options[] = {
        {"job", required_argument, NULL, 'j'},
        {"status", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},
        {"code", required_argument, NULL, 'c'},
        {"reason", required_argument, NULL, 'r'},
        {"limit", required_argument, NULL, 'l'},
        {"all", no_argument, NULL, 'a'},
        {"queue-only", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'j':
            o->job = optarg;
            break;
        case 's':
            o->status = optarg;
            break;
        case 't':
            o->table = optarg;
            break;
        case 'c':
            o->code = optarg;
            break;
        case 'r':
            o->reason = optarg;
            break;
        case 'l':
            o->limit = optarg;
            break;
        case 'a':
            o->all = true;
            break;
        case 'q':
            o->queue_only = true;
            break;
        default:
            return dw_cli_usage("errors");
        }
    }
    o->ids = argv + optind;
    o->nids = argc - optind;
    for (int i = 0; i < o->nids; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(o->ids[i], &end, 10);
        if (errno != 0 || *end != '\0' || end == o->ids[i] || v <= 0) {
            fprintf(stderr, "dwasync errors %s: \"%s\" is not an error id\n", sub, o->ids[i]);
            return DW_EXIT_USAGE;
        }
    }
    if (o->limit != NULL) {
        char *end;
        long long v = strtoll(o->limit, &end, 10);
        if (*end != '\0' || end == o->limit || v <= 0) {
            fprintf(stderr, "dwasync errors %s: --limit needs a positive number\n", sub);
            return DW_EXIT_USAGE;
        }
    }
    return DW_EXIT_OK;
}

/* Server NOTICEs ("already resolved: nothing to replay") are for the operator's eyes. */
static void print_notice(void *arg, const char *message)
{
    (void)arg;
    const char *text = strncmp(message, "NOTICE:  ", 9) == 0 ? message + 9 : message;
    fprintf(stdout, "note: %s", text);
}

static dw_rc connect_control(struct dw_cli *cli, PGconn **out)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_ERR_CONFIG;
    dw_rc rc = dw_pg_connect(dw_config_control_conninfo(cfg), "dwasync errors", out);
    if (rc != DW_OK)
        return rc;
    PQsetNoticeProcessor(*out, print_notice, NULL);
    const char *sqldir = dw_paths_sqldir();
    if (sqldir != NULL && (rc = dw_migrate_require_current(*out, sqldir)) != DW_OK) {
        PQfinish(*out);
        *out = NULL;
    }
    return rc;
}

/* Clips a message to one line of at most width characters for the list. */
static void clip(char *dst, size_t size, const char *src, size_t width)
{
    size_t n = 0;
    for (; src[n] && src[n] != '\n' && n < width && n + 1 < size; n++)
        dst[n] = src[n];
    dst[n] = '\0';
    if (src[n] != '\0' && n >= 3 && n + 1 < size)
        memcpy(dst + n - 3, "...", 3);
}

static int errors_list(PGconn *conn, const struct errors_opts *o)
{
    static const char *const statuses[] = {"open",    "waiting", "replaying",  "resolved",
                                           "skipped", "all",     "unresolved", NULL};
    const char *status = o->status ? o->status : "unresolved";
    bool known = false;
    for (const char *const *s = statuses; *s; s++)
        known = known || strcmp(*s, status) == 0;
    if (!known) {
        fprintf(stderr,
                "dwasync errors list: unknown status \"%s\" (open, waiting, replaying, "
                "resolved, skipped, unresolved, all)\n",
                status);
        return DW_EXIT_USAGE;
    }
    const char *params[] = {o->job, status, o->table, o->code, o->limit ? o->limit : "1000"};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(
        conn, "listing errors",
        "SELECT id, status, job, source_table, coalesce(class, '-'), "
        "coalesce(http_status::text, '-'), coalesce(dv_code, '-'), attempts, "
        "to_char(last_failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), "
        "CASE WHEN status = 'waiting' AND blocked_by IS NOT NULL "
        "THEN 'waiting behind ' || blocked_by ELSE message END "
        "FROM dwasync.error_detail "
        "WHERE ($1::text IS NULL OR job = $1) "
        "AND ($2 = 'all' OR status = $2 OR ($2 = 'unresolved' AND status IN "
        "('open', 'waiting', 'replaying'))) "
        "AND ($3::text IS NULL OR $3 IN (source_table, split_part(source_table, '.', 2), "
        "table_map)) "
        "AND ($4::text IS NULL OR dv_code = $4) "
        "ORDER BY commit_lsn, position, part, id LIMIT $5::bigint",
        5, params, &res);
    if (rc != DW_OK)
        return DW_EXIT_FAILURE;
    printf("%-8s %-9s %-12s %-24s %-14s %-4s %-10s %-3s %-19s %s\n", "ID", "STATUS", "JOB", "TABLE",
           "CLASS", "HTTP", "CODE", "TRY", "LAST FAILURE (UTC)", "MESSAGE");
    for (int i = 0; i < PQntuples(res); i++) {
        char msg[64];
        clip(msg, sizeof msg, PQgetvalue(res, i, 9), 60);
        printf("%-8s %-9s %-12s %-24s %-14s %-4s %-10s %-3s %-19s %s\n", PQgetvalue(res, i, 0),
               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 6),
               PQgetvalue(res, i, 7), PQgetvalue(res, i, 8), msg);
    }
    printf("(%d error%s)\n", PQntuples(res), PQntuples(res) == 1 ? "" : "s");
    PQclear(res);
    return DW_EXIT_OK;
}

static int errors_show(PGconn *conn, const struct errors_opts *o)
{
    if (o->nids != 1)
        return dw_cli_usage("errors");
    const char *params[] = {o->ids[0]};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(conn, "reading an error",
                           "SELECT * FROM dwasync.error_detail "
                           "WHERE id = $1::bigint",
                           1, params, &res);
    if (rc != DW_OK)
        return DW_EXIT_FAILURE;
    if (PQntuples(res) == 0) {
        DW_ERROR("error %s does not exist", o->ids[0]);
        PQclear(res);
        return DW_EXIT_FAILURE;
    }
    for (int c = 0; c < PQnfields(res); c++) {
        const char *name = PQfname(res, c);
        if (PQgetisnull(res, 0, c)) {
            printf("%-20s -\n", name);
            continue;
        }
        const char *v = PQgetvalue(res, 0, c);
        if (strchr(v, '\n') == NULL) {
            printf("%-20s %s\n", name, v);
            continue;
        }
        /* Pretty JSON: one indented block under its name. */
        printf("%s:\n    ", name);
        for (const char *p = v; *p; p++) {
            putchar(*p);
            if (*p == '\n')
                fputs("    ", stdout);
        }
        putchar('\n');
    }
    PQclear(res);
    return DW_EXIT_OK;
}

/* Runs one function call per id (or the one bulk call) in a single transaction. */
static dw_rc call_each(PGconn *conn, const char *what, const char *sql, const struct errors_opts *o,
                       bool with_reason, long long *total, bool print_each)
{
    dw_rc rc = dw_pg_exec(conn, "starting a transaction", "BEGIN");
    if (rc != DW_OK)
        return rc;
    *total = 0;
    for (int i = 0; i < o->nids; i++) {
        const char *params[] = {o->ids[i], o->reason};
        PGresult *res = NULL;
        if ((rc = dw_pg_query(conn, what, sql, with_reason ? 2 : 1, params, &res)) != DW_OK)
            goto rollback;
        long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (print_each)
            printf("error %s: %lld row%s\n", o->ids[i], n, n == 1 ? "" : "s");
        *total += n;
        PQclear(res);
    }
    return dw_pg_exec(conn, "committing", "COMMIT");
rollback:
    (void)dw_pg_exec(conn, "rolling back", "ROLLBACK");
    return rc;
}

/* A direct replay: the job's maps as they are now, a sink of our own, the engine. */
struct direct {
    struct dw_job_maps *maps;
    struct dw_sink *sink;
    struct dw_replay *engine;
};

static dw_rc direct_remap(void *user, const struct dw_errstored *row, struct dw_remap *out)
{
    struct direct *d = user;
    return dw_replay_remap_with_maps(d->maps, row, out);
}

static dw_rc direct_submit(void *user, void *token, struct dw_write *w)
{
    struct direct *d = user;
    return dw_sink_submit(d->sink, w, &token, 1);
}

static void direct_done(void *user, void *write_user, const struct dw_write_result *r)
{
    struct direct *d = user;
    dw_replay_complete(d->engine, write_user, r);
}

/*
 * Applies a job's queued rows from here, as `dwasync run` would. The job lock (ha.h) is
 * held throughout, so no runner can start applying the job's stream meanwhile; if a
 * runner holds it, that runner was NOTIFYed and replays them itself.
 */
static dw_rc replay_directly(const struct dw_config *cfg, int64_t job_id, const char *job)
{
    static const struct dw_replay_ops ops = {direct_remap, direct_submit, NULL};
    struct direct d = {0};
    struct dw_ha ha;
    struct dw_replay_stats st = {0};
    PGconn *conn = NULL;
    bool active = false;
    dw_rc rc = dw_pg_connect(dw_config_control_conninfo(cfg), "dwasync errors replay", &conn);
    if (rc != DW_OK)
        return rc;
    dw_ha_init(&ha, conn, job_id, 0);
    if ((rc = dw_ha_try(&ha, 0, &active)) != DW_OK)
        goto out;
    if (!active) {
        printf("job \"%s\": a `dwasync run` holds the job and replays the rows\n", job);
        goto out;
    }
    if ((rc = dw_job_maps_load(conn, job, &d.maps)) != DW_OK)
        goto out;
    if ((rc = dw_sink_new(cfg, direct_done, &d, &d.sink)) != DW_OK)
        goto out;
    if ((rc = dw_replay_new(conn, job_id, &ops, &d, dw_replay_in_flight_for(cfg), &d.engine)) !=
        DW_OK)
        goto out;
    /* A bulk replay can be long: rows done, rate and ETA, live on a terminal. */
    struct dw_progress progress;
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, job_id);
    const char *params[] = {id};
    int64_t total = 0, left = 0;
    (void)dw_pg_query_int(conn, "counting queued rows",
                          "SELECT count(*) FROM dwasync.error WHERE job_id = $1 AND status IN "
                          "('replaying', 'waiting')",
                          1, params, &total);
    dw_progress_init(&progress, "replay", (uint64_t)total, stderr, 0, (uint64_t)dw_clock_ms());
    for (;;) {
        bool idle = false;
        if ((rc = dw_replay_pump(d.engine, &idle)) != DW_OK || idle)
            break;
        if ((rc = dw_sink_run(d.sink, 500)) != DW_OK)
            break;
        dw_replay_get_stats(d.engine, &st);
        dw_progress_update(&progress, st.resolved + st.failed, (uint64_t)dw_clock_ms());
    }
    dw_replay_get_stats(d.engine, &st);
    progress.done = st.resolved + st.failed;
    dw_progress_finish(&progress, (uint64_t)dw_clock_ms());
    printf("job \"%s\": replayed %" PRIu64 " row%s: %" PRIu64 " resolved, %" PRIu64
           " failed again%s\n",
           job, st.resolved + st.failed, st.resolved + st.failed == 1 ? "" : "s", st.resolved,
           st.failed, st.failed ? " (dwasync errors list shows why)" : "");
    /* Rows still queued once the engine is idle are past the replay horizon (errtable.h). */
    if (rc == DW_OK &&
        dw_pg_query_int(conn, "counting rows left queued",
                        "SELECT count(*) FROM dwasync.error WHERE job_id = $1 AND status = "
                        "'replaying'",
                        1, params, &left) == DW_OK) {
        if (left == 1)
            printf("job \"%s\": 1 row stays queued: its change comes after the position the job "
                   "has confirmed; `dwasync run` replays it once it has confirmed it\n",
                   job);
        else if (left > 1)
            printf("job \"%s\": %" PRId64 " rows stay queued: their changes come after the "
                   "position the job has confirmed; `dwasync run` replays them once it has "
                   "confirmed them\n",
                   job, left);
    }
out:
    dw_replay_free(d.engine);
    dw_sink_free(d.sink);
    dw_job_maps_free(d.maps);
    dw_ha_cleanup(&ha);
    PQfinish(conn);
    return rc;
}

/* The control database's clock, before rows are queued: replay_queued() tells the rows this
 * command queued by it. NULL on failure. Caller frees. */
static char *queue_start(PGconn *conn)
{
    PGresult *res = NULL;
    if (dw_pg_query(conn, "reading the clock", "SELECT clock_timestamp()::text", 0, NULL, &res) !=
        DW_OK)
        return NULL;
    char *at = dw_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return at;
}

/*
 * After queueing: each job with queued rows is replayed by its runner, or from here. The
 * rows this command queued (since) count even when a running daemon has replayed them
 * already, as it does at once on the notification: the command still says who replays them.
 */
static int replay_queued(struct dw_cli *cli, PGconn *conn, const struct errors_opts *o,
                         const char *since)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    PGresult *res = NULL;
    const char *params[] = {since};
    if (dw_pg_query(conn, "finding jobs with queued errors",
                    "SELECT j.id, j.name, dwasync.replay_listeners(j.name) FROM dwasync.job j "
                    "WHERE EXISTS (SELECT 1 FROM dwasync.error e WHERE e.job_id = j.id AND "
                    "(e.status = 'replaying' OR e.replay_requested_at >= $1::timestamptz)) "
                    "ORDER BY j.name",
                    1, params, &res) != DW_OK)
        return DW_EXIT_FAILURE;
    int status = DW_EXIT_OK;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *job = PQgetvalue(res, i, 1);
        if (strcmp(PQgetvalue(res, i, 2), "0") != 0) {
            printf("job \"%s\": the active `dwasync run` replays them now "
                   "(dwasync errors list to follow)\n",
                   job);
        } else if (o->queue_only || cfg->dataverse.url == NULL || *cfg->dataverse.url == '\0') {
            printf("job \"%s\": no dwasync daemon is listening: the rows will be replayed when "
                   "`dwasync run` next starts\n",
                   job);
        } else if (replay_directly(cfg, strtoll(PQgetvalue(res, i, 0), NULL, 10), job) != DW_OK) {
            printf("job \"%s\": the rows stay queued and will be replayed when `dwasync run` "
                   "next starts\n",
                   job);
            status = DW_EXIT_FAILURE;
        }
    }
    PQclear(res);
    return status;
}

/*
 * Queues what --all matches in chunks, parents' first (sql/069), each committed on its own:
 * a running daemon replays the first while the next is queued. Chunks grow from
 * REPLAY_FIRST_CHUNK keys, so that the daemon starts soon and a large queue costs few scans.
 * Rows this command queued and the daemon failed again are not queued twice (since).
 */
#define REPLAY_FIRST_CHUNK   1000
#define REPLAY_LARGEST_CHUNK 16000

static dw_rc queue_in_chunks(PGconn *conn, const struct errors_opts *o, const char *since,
                             long long *total)
{
    long long chunk = REPLAY_FIRST_CHUNK, queued;
    *total = 0;
    do {
        char limit[24];
        snprintf(limit, sizeof limit, "%lld", chunk);
        const char *params[] = {o->job, o->table, o->code, since, limit};
        PGresult *res = NULL;
        dw_rc rc = dw_pg_query(
            conn, "queueing errors for replay",
            "SELECT dwasync.replay_errors_chunk($1, $2, $3, NULL, $4::timestamptz, $5::integer)", 5,
            params, &res);
        if (rc != DW_OK)
            return rc;
        queued = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        *total += queued;
        if (chunk < REPLAY_LARGEST_CHUNK)
            chunk *= 4;
    } while (queued > 0);
    return DW_OK;
}

static int errors_replay(struct dw_cli *cli, PGconn *conn, const struct errors_opts *o)
{
    long long total = 0;
    dw_rc rc;
    char *since = NULL;
    if (o->all == (o->nids > 0)) {
        fprintf(stderr, "dwasync errors replay: give error ids or --all (%s)\n",
                o->all ? "not both"
                       : "with --job, --table or --code, --all replays what they match");
        return dw_cli_usage("errors");
    }
    if ((o->table || o->code || o->job) && !o->all) {
        fprintf(stderr, "dwasync errors replay: --job, --table and --code go with --all\n");
        return dw_cli_usage("errors");
    }
    if ((since = queue_start(conn)) == NULL)
        return DW_EXIT_FAILURE;
    if (o->all) {
        rc = queue_in_chunks(conn, o, since, &total);
    } else {
        rc = call_each(conn, "queueing an error for replay", "SELECT dwasync.replay_error($1)", o,
                       false, &total, false);
    }
    int status = DW_EXIT_FAILURE;
    if (rc == DW_OK) {
        printf("queued %lld row%s for replay\n", total, total == 1 ? "" : "s");
        /* Rows queued earlier (from psql, or by a skip) are applied too. */
        status = replay_queued(cli, conn, o, since);
    }
    free(since);
    return status;
}

static int errors_skip(PGconn *conn, const struct errors_opts *o)
{
    if (o->nids == 0 || o->reason == NULL || o->all) {
        fprintf(stderr, "dwasync errors skip: give error ids and --reason TEXT\n");
        return dw_cli_usage("errors");
    }
    long long released = 0;
    dw_rc rc = call_each(conn, "skipping an error", "SELECT dwasync.skip_error($1, $2)", o, true,
                         &released, false);
    if (rc != DW_OK)
        return DW_EXIT_FAILURE;
    printf("skipped %d error%s", o->nids, o->nids == 1 ? "" : "s");
    if (released > 0)
        printf("; %lld waiting row%s released for replay", released, released == 1 ? "" : "s");
    printf("\n");
    return DW_EXIT_OK;
}

/*
 * Applies each key's current source row instead of its queued changes (sql/066): the key's
 * earlier rows are resolved at once, the latest carries the source row, queued for replay.
 */
static int errors_resolve_from_source(struct dw_cli *cli, PGconn *conn, const struct errors_opts *o)
{
    if (o->nids == 0 || o->all || o->reason) {
        fprintf(stderr, "dwasync errors resolve-from-source: give error ids\n");
        return dw_cli_usage("errors");
    }
    long long rows = 0;
    char *since = queue_start(conn);
    if (since == NULL ||
        call_each(conn, "resolving an error from the source row",
                  "SELECT dwasync.resolve_from_source($1)", o, false, &rows, false) != DW_OK) {
        free(since);
        return DW_EXIT_FAILURE;
    }
    printf("resolved %lld row%s from the current source rows; the rows' current state is "
           "queued for replay\n",
           rows, rows == 1 ? "" : "s");
    int status = replay_queued(cli, conn, o, since);
    free(since);
    return status;
}

int dw_cmd_errors(struct dw_cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return dw_cli_usage("errors");
    const char *sub = argv[1];
    struct errors_opts o;
    int status = parse_opts(sub, argc - 1, argv + 1, &o);
    if (status != DW_EXIT_OK)
        return status;
    bool known = strcmp(sub, "list") == 0 || strcmp(sub, "show") == 0 ||
                 strcmp(sub, "replay") == 0 || strcmp(sub, "skip") == 0 ||
                 strcmp(sub, "resolve-from-source") == 0;
    if (!known) {
        fprintf(stderr, "dwasync errors: unknown subcommand \"%s\"\n", sub);
        return dw_cli_usage("errors");
    }
    if (strcmp(sub, "list") == 0 && o.nids > 0)
        return dw_cli_usage("errors");
    PGconn *conn = NULL;
    if (connect_control(cli, &conn) != DW_OK)
        return DW_EXIT_FAILURE;
    if (strcmp(sub, "list") == 0)
        status = errors_list(conn, &o);
    else if (strcmp(sub, "show") == 0)
        status = errors_show(conn, &o);
    else if (strcmp(sub, "replay") == 0)
        status = errors_replay(cli, conn, &o);
    else if (strcmp(sub, "skip") == 0)
        status = errors_skip(conn, &o);
    else
        status = errors_resolve_from_source(cli, conn, &o);
    PQfinish(conn);
    return status;
}

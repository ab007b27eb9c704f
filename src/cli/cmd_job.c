/* `dwasync job create|list|show|start|stop|pause|resume|drop|resync|relink`: integration job
 * lifecycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/copyreq.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapstore.h"
#include "dwasync/pg.h"
#include "dwasync/slotguard.h"

struct jobrow {
    char state[16];
    char slot[64];
    char publication[64];
};

static dw_rc read_job(PGconn *ctl, const char *name, struct jobrow *j)
{
    PGresult *r = NULL;
    const char *p[1] = {name};
    dw_rc rc = dw_pg_query(ctl, "reading the job",
                           "SELECT state, slot_name, publication_name FROM dwasync.job"
                           " WHERE name = $1",
                           1, p, &r);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(r) == 0) {
        DW_ERROR("job \"%s\" does not exist", name);
        PQclear(r);
        return DW_ERR_NOT_FOUND;
    }
    snprintf(j->state, sizeof j->state, "%s", PQgetvalue(r, 0, 0));
    snprintf(j->slot, sizeof j->slot, "%s", PQgetvalue(r, 0, 1));
    snprintf(j->publication, sizeof j->publication, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    return DW_OK;
}

/* Moves a job between states through dwasync.set_job_state (the only way the admin role may):
 * verb is start, stop, pause or resume; DW_ERR_STATE when the job is not in a state it
 * applies to. */
static dw_rc set_state(PGconn *ctl, const char *name, const char *verb, bool initial_sync)
{
    PGresult *r = NULL;
    const char *p[3] = {name, verb, initial_sync ? "true" : "false"};
    dw_rc rc = dw_pg_query(ctl, "changing the job state",
                           "SELECT dwasync.set_job_state($1, $2, $3::boolean)", 3, p, &r);
    if (rc == DW_OK && PQgetisnull(r, 0, 0))
        rc = DW_ERR_STATE;
    PQclear(r);
    return rc;
}

static bool source_has(PGconn *src, const char *what, const char *sql, const char *name, dw_rc *rc)
{
    PGresult *r = NULL;
    const char *p[1] = {name};
    *rc = dw_pg_query(src, what, sql, 1, p, &r);
    bool yes = *rc == DW_OK && PQntuples(r) > 0;
    PQclear(r);
    return yes;
}

static const char *const pub_exists_sql = "SELECT 1 FROM pg_publication WHERE pubname = $1";

static int job_create(struct dw_cli *cli, const char *name, const char *url)
{
    PGconn *ctl = NULL;
    PGresult *r = NULL;
    int status = DW_EXIT_FAILURE;
    const char *p[2] = {name, url ? url : ""};
    if (dw_cli_connect_control(cli, "dwasync job", &ctl) != DW_OK)
        goto out;
    if (dw_pg_query(ctl, "creating the job",
                    "INSERT INTO dwasync.job (name, slot_name, publication_name, environment_url)"
                    " VALUES ($1, 'dwasync_' || $1, 'dwasync_' || $1, $2)"
                    " ON CONFLICT DO NOTHING",
                    2, p, &r) != DW_OK)
        goto out;
    if (strtol(PQcmdTuples(r), NULL, 10) != 1) {
        DW_ERROR("job \"%s\" already exists", name);
        goto out;
    }
    printf("created job \"%s\" (stopped); import its maps with \"dwasync map import FILE\"\n",
           name);
    status = DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(ctl);
    return status;
}

static int job_list(struct dw_cli *cli)
{
    PGconn *ctl = NULL;
    PGresult *r = NULL;
    int status = DW_EXIT_FAILURE;
    if (dw_cli_connect_control(cli, "dwasync job", &ctl) != DW_OK ||
        dw_pg_query(ctl, "listing jobs",
                    "SELECT j.name, j.state, j.initial_sync,"
                    " (SELECT count(*) FROM dwasync.table_map m WHERE m.job_id = j.id),"
                    " j.slot_name, j.publication_name, coalesce(j.state_reason, '')"
                    " FROM dwasync.job j ORDER BY j.name",
                    0, NULL, &r) != DW_OK)
        goto out;
    printf("%-20s %-8s %-12s %5s %-28s %-28s %s\n", "JOB", "STATE", "INITIAL_SYNC", "MAPS", "SLOT",
           "PUBLICATION", "REASON");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-20s %-8s %-12s %5s %-28s %-28s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
               PQgetvalue(r, i, 6));
    status = DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(ctl);
    return status;
}

static int job_show(struct dw_cli *cli, const char *name)
{
    PGconn *ctl = NULL, *src = NULL;
    PGresult *r = NULL;
    int status = DW_EXIT_FAILURE;
    const char *p[1] = {name};
    if (dw_cli_connect_control(cli, "dwasync job", &ctl) != DW_OK ||
        dw_pg_query(ctl, "reading the job",
                    "SELECT name, state, coalesce(state_reason, ''), environment_url,"
                    " array_to_string(legal_entities, ', '), slot_name, publication_name,"
                    " initial_sync, coalesce(started_at::text, ''),"
                    " coalesce(stopped_at::text, ''),"
                    " (SELECT count(*) FROM dwasync.table_map m WHERE m.job_id = j.id)"
                    " FROM dwasync.job j WHERE name = $1",
                    1, p, &r) != DW_OK)
        goto out;
    if (PQntuples(r) == 0) {
        DW_ERROR("job \"%s\" does not exist", name);
        goto out;
    }
    static const char *const labels[] = {
        "job",  "state",       "reason",       "environment", "legal entities",
        "slot", "publication", "initial sync", "started at",  "stopped at",
        "maps"};
    for (int c = 0; c < 11; c++)
        printf("%-15s %s\n", labels[c], PQgetvalue(r, 0, c));
    const char *slot[1] = {PQgetvalue(r, 0, 5)}, *pub[1] = {PQgetvalue(r, 0, 6)};
    PGresult *s = NULL;
    if (dw_cli_connect_source(cli, "dwasync job", &src) == DW_OK &&
        dw_pg_query(src, "reading the slot",
                    "SELECT active, confirmed_flush_lsn,"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
                    " FROM pg_replication_slots WHERE slot_name = $1",
                    1, slot, &s) == DW_OK) {
        if (PQntuples(s) == 0)
            printf("%-15s %s\n", "slot state", "(not created)");
        else
            printf("%-15s %s, confirmed %s, lag %s bytes\n", "slot state",
                   PQgetvalue(s, 0, 0)[0] == 't' ? "in use" : "idle", PQgetvalue(s, 0, 1),
                   PQgetvalue(s, 0, 2));
        PQclear(s);
        s = NULL;
        if (dw_pg_query(src, "reading the publication",
                        "SELECT schemaname || '.' || tablename, coalesce(rowfilter, '')"
                        " FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
                        1, pub, &s) == DW_OK) {
            for (int i = 0; i < PQntuples(s); i++)
                printf("%-15s %s%s%s\n", i == 0 ? "published" : "", PQgetvalue(s, i, 0),
                       PQgetvalue(s, i, 1)[0] ? " WHERE " : "", PQgetvalue(s, i, 1));
        }
        PQclear(s);
    }
    status = DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(ctl);
    PQfinish(src);
    return status;
}

/* Creates the publication, or makes an existing one publish exactly the job's tables. */
static dw_rc ensure_publication(PGconn *src, const struct dw_jobdef *def, const char *pub)
{
    struct dw_src_catalog cat = {NULL, 0};
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    dw_rc rc = dw_src_catalog_fetch(src, def, &cat);
    if (rc != DW_OK)
        goto out;
    bool exists = source_has(src, "looking for the publication", pub_exists_sql, pub, &rc);
    if (rc != DW_OK)
        goto out;
    char *qpub = dw_pg_quote_ident(src, pub);
    if (exists)
        (void)dw_buf_printf(&sql, "ALTER PUBLICATION %s SET ", qpub);
    else
        (void)dw_buf_printf(&sql, "CREATE PUBLICATION %s FOR ", qpub);
    PQfreemem(qpub);
    (void)dw_publication_tables_sql(def, &cat, &sql);
    if (!exists)
        (void)dw_buf_puts(&sql, " WITH (publish = 'insert, update, delete, truncate')");
    DW_DEBUG("publication: %s", dw_buf_str(&sql));
    rc = dw_pg_exec(src, exists ? "altering the publication" : "creating the publication",
                    dw_buf_str(&sql));
out:
    dw_buf_cleanup(&sql);
    dw_src_catalog_cleanup(&cat);
    return rc;
}

static dw_rc drop_slot(PGconn *src, const char *slot)
{
    const char *sp[1] = {slot};
    PGresult *r = NULL;
    dw_rc rc = dw_pg_query(src, "dropping the replication slot",
                           "SELECT pg_drop_replication_slot($1)", 1, sp, &r);
    PQclear(r);
    return rc;
}

static int job_start(struct dw_cli *cli, const char *name, bool initial_sync)
{
    PGconn *ctl = NULL, *src = NULL;
    PGresult *r = NULL;
    struct dw_jobdef *def = NULL;
    struct jobrow j;
    int status = DW_EXIT_FAILURE;
    bool created = false; /* the slot, by this call */
    dw_rc rc;
    if (dw_cli_connect_control(cli, "dwasync job start", &ctl) != DW_OK ||
        read_job(ctl, name, &j) != DW_OK)
        goto out;
    if (strcmp(j.state, "stopped") != 0 && strcmp(j.state, "failed") != 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", strcmp(j.state, "paused") == 0
                                       ? "Run \"dwasync job resume\" to continue a paused job."
                                       : "Stop it first to start it again."}),
                "job \"%s\" is %s", name, j.state);
        goto out;
    }
    if (dw_mapstore_load(ctl, name, &def) != DW_OK)
        goto out;
    int errors = dw_cli_map_validate(cli, def, true, ctl);
    if (errors != 0) {
        if (errors > 0)
            fprintf(stderr, "job \"%s\" not started: its maps have %d error%s\n", name, errors,
                    errors == 1 ? "" : "s");
        goto out;
    }
    if (dw_cli_connect_source(cli, "dwasync job start", &src) != DW_OK)
        goto out;
    bool slot = false;
    if (dw_slotguard_check(src, name, j.slot, &slot) != DW_OK)
        goto out;
    if (initial_sync && slot) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Start without --initial-sync to continue from the slot, or "
                                   "drop the job and import its maps again for a full copy."}),
                "job \"%s\" already has replication slot \"%s\": an initial sync needs a new "
                "slot whose snapshot matches the copy",
                name, j.slot);
        goto out;
    }
    /* The publication first: pgoutput looks it up as of each change's position in WAL, so
     * it must exist before the slot's starting point. */
    if (ensure_publication(src, def, j.publication) != DW_OK)
        goto out;
    /* The slot now, for an initial sync too: every change committed once the job has started
     * reaches Dataverse, a delete of a row an earlier sync wrote among them. (The copy reads
     * in chunks of its own, between watermarks: it needs no snapshot of the slot's.) */
    if (!slot) {
        const char *sp[1] = {j.slot};
        if (dw_pg_query(src, "creating the replication slot",
                        "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", 1, sp,
                        &r) != DW_OK)
            goto out;
        printf("created replication slot \"%s\" at %s\n", j.slot, PQgetvalue(r, 0, 0));
        PQclear(r);
        r = NULL;
        created = true;
    }
    const char *cp[1] = {name};
    if (dw_pg_query(ctl, "preparing the checkpoint",
                    "INSERT INTO dwasync.checkpoint (job_id) SELECT id FROM dwasync.job"
                    " WHERE name = $1 ON CONFLICT DO NOTHING",
                    1, cp, &r) != DW_OK)
        goto out;
    rc = set_state(ctl, name, "start", initial_sync);
    if (rc != DW_OK) {
        if (rc == DW_ERR_STATE)
            DW_ERROR("job \"%s\" changed state meanwhile: not started", name);
        goto out;
    }
    printf("job \"%s\" is active: publication \"%s\" publishes %zu map%s%s\n", name, j.publication,
           dw_jobdef_map_count(def), dw_jobdef_map_count(def) == 1 ? "" : "s",
           initial_sync ? "; the daemon copies existing rows first (initial sync pending)" : "");
    status = DW_EXIT_OK;
out:
    /* Not started: an initial sync started again would refuse the slot left behind. */
    if (status != DW_EXIT_OK && created && initial_sync)
        (void)drop_slot(src, j.slot);
    PQclear(r);
    dw_jobdef_free(def);
    PQfinish(src);
    PQfinish(ctl);
    return status;
}

static int job_transition(struct dw_cli *cli, const char *verb, const char *name)
{
    PGconn *ctl = NULL;
    struct jobrow j;
    int status = DW_EXIT_FAILURE;
    if (dw_cli_connect_control(cli, "dwasync job", &ctl) != DW_OK ||
        read_job(ctl, name, &j) != DW_OK)
        goto out;
    const char *to = strcmp(verb, "stop") == 0    ? "stopped"
                     : strcmp(verb, "pause") == 0 ? "paused"
                                                  : "active";
    if (strcmp(j.state, to) == 0) {
        printf("job \"%s\" is already %s\n", name, to);
        status = DW_EXIT_OK;
        goto out;
    }
    dw_rc rc = set_state(ctl, name, verb, false);
    if (rc == DW_ERR_STATE) {
        DW_ERROR("job \"%s\" is %s: cannot %s it", name, j.state, verb);
        goto out;
    }
    if (rc != DW_OK)
        goto out;
    if (strcmp(verb, "stop") == 0)
        printf("job \"%s\" stopped; replication slot \"%s\" is kept, so no change is lost and the "
               "source retains WAL while the job is stopped (watch its disk); its maps may be "
               "changed now\n",
               name, j.slot);
    else if (strcmp(verb, "pause") == 0)
        printf("job \"%s\" paused; replication slot \"%s\" is kept and lag grows until "
               "\"dwasync job resume %s\"\n",
               name, j.slot, name);
    else
        printf("job \"%s\" resumed: it catches up from replication slot \"%s\"\n", name, j.slot);
    status = DW_EXIT_OK;
out:
    PQfinish(ctl);
    return status;
}

static int job_drop(struct dw_cli *cli, const char *name, bool yes)
{
    PGconn *ctl = NULL, *src = NULL;
    PGresult *r = NULL;
    struct jobrow j;
    int status = DW_EXIT_FAILURE;
    dw_rc rc;
    if (dw_cli_connect_control(cli, "dwasync job drop", &ctl) != DW_OK ||
        read_job(ctl, name, &j) != DW_OK)
        goto out;
    if (strcmp(j.state, "stopped") != 0 && strcmp(j.state, "failed") != 0) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"hint", "Run \"dwasync job stop\" first."}),
                "job \"%s\" is %s: cannot drop it", name, j.state);
        goto out;
    }
    if (!yes) {
        fprintf(stderr,
                "this drops job \"%s\", its table maps, replication slot \"%s\" and publication "
                "\"%s\"; changes not yet applied are lost. Run again with --yes to confirm\n",
                name, j.slot, j.publication);
        goto out;
    }
    if (dw_cli_connect_source(cli, "dwasync job drop", &src) != DW_OK)
        goto out;
    bool slot = false;
    if (dw_slotguard_check(src, name, j.slot, &slot) != DW_OK)
        goto out;
    if (slot && drop_slot(src, j.slot) != DW_OK)
        goto out;
    char *q = dw_pg_quote_ident(src, j.publication);
    char *sql = dw_asprintf("DROP PUBLICATION IF EXISTS %s", q);
    PQfreemem(q);
    rc = dw_pg_exec(src, "dropping the publication", sql);
    free(sql);
    if (rc != DW_OK)
        goto out;
    const char *p[1] = {name};
    if (dw_pg_query(ctl, "dropping the job", "DELETE FROM dwasync.job WHERE name = $1", 1, p, &r) !=
        DW_OK)
        goto out;
    printf("dropped job \"%s\", replication slot \"%s\" and publication \"%s\"\n", name, j.slot,
           j.publication);
    status = DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(src);
    PQfinish(ctl);
    return status;
}

/* `job resync NAME [--map M]... [--legal-entity LE]... [--where SQL]`: see copyreq.h. */
static int job_resync(struct dw_cli *cli, int argc, char **argv)
{
    const char *name = argv[2];
    const char **maps = dw_calloc((size_t)argc, sizeof *maps);
    const char **les = dw_calloc((size_t)argc, sizeof *les);
    struct dw_copyreq_spec spec = {.kind = "resync", .sel = {maps, 0, les, 0}};
    PGconn *ctl = NULL, *src = NULL;
    struct dw_jobdef *def = NULL;
    struct jobrow j;
    int status = DW_EXIT_FAILURE, tables = 0;
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 == argc || (spec.where && strcmp(argv[i], "--where") == 0)) {
            status = dw_cli_usage("job");
            goto out;
        }
        if (strcmp(argv[i], "--map") == 0)
            maps[spec.sel.nmaps++] = argv[i + 1];
        else if (strcmp(argv[i], "--legal-entity") == 0)
            les[spec.sel.nles++] = argv[i + 1];
        else if (strcmp(argv[i], "--where") == 0)
            spec.where = argv[i + 1];
        else {
            status = dw_cli_usage("job");
            goto out;
        }
    }
    if (dw_cli_connect_control(cli, "dwasync job resync", &ctl) != DW_OK ||
        read_job(ctl, name, &j) != DW_OK || dw_mapstore_load(ctl, name, &def) != DW_OK ||
        dw_cli_connect_source(cli, "dwasync job resync", &src) != DW_OK ||
        dw_copyreq_queue(ctl, src, def, &spec, stdout, &tables) != DW_OK)
        goto out;
    printf(
        "job \"%s\": %d table%s queued for resync; %s\n", name, tables, tables == 1 ? "" : "s",
        strcmp(j.state, "active") == 0
            ? "the daemon copies them interleaved with the stream (dwasync status shows progress)"
            : "the daemon copies them once the job is active");
    status = DW_EXIT_OK;
out:
    dw_jobdef_free(def);
    PQfinish(src);
    PQfinish(ctl);
    free(maps);
    free(les);
    return status;
}

/* After a relink: a source that is another cluster has no slot of the job's yet. False
 * then (the operator was told what to do), true when the slot exists or cannot be seen. */
static bool relink_slot_exists(struct dw_cli *cli, const char *name, const char *slot_name)
{
    PGconn *src = NULL;
    bool slot = true;
    if (dw_cli_connect_source(cli, "dwasync job relink", &src) == DW_OK &&
        dw_slotguard_check(src, name, slot_name, &slot) == DW_OK && !slot)
        printf("replication slot \"%s\" does not exist on this source: the job cannot stream "
               "until it has one; to copy the source again, run \"dwasync job stop %s\" and "
               "\"dwasync job start %s --initial-sync\"\n",
               slot_name, name, name);
    PQfinish(src);
    return slot;
}

/* The step an operator asked for after a relink: a resync of the whole job, or a verify. */
static int relink_next_step(struct dw_cli *cli, const char *name, const char *step)
{
    if (step == NULL) {
        printf("changes made in the old source or environment since the last checkpoint are not "
               "in the new one: compare the data (\"dwasync verify %s\") before relying on it\n",
               name);
        return DW_EXIT_OK;
    }
    char job[] = "job", resync[] = "resync", verify[] = "verify";
    char *args[] = {job, resync, (char *)name, NULL};
    if (strcmp(step, "--resync") == 0)
        return job_resync(cli, 3, args);
    args[0] = verify;
    args[1] = (char *)name;
    args[2] = NULL;
    return dw_cmd_verify(cli, 2, args);
}

/* Accepts the source and environment identity the environment guard saw (sql/065). */
static int job_relink(struct dw_cli *cli, const char *name, const char *step)
{
    PGconn *ctl = NULL;
    PGresult *r = NULL;
    struct jobrow j;
    int status = DW_EXIT_FAILURE;
    const char *p[1] = {name};
    if (dw_cli_connect_control(cli, "dwasync job relink", &ctl) != DW_OK ||
        read_job(ctl, name, &j) != DW_OK ||
        dw_pg_query(ctl, "relinking the job",
                    "SELECT s.seen ->> 'source_system_id', s.seen ->> 'source_timeline',"
                    " s.seen ->> 'source_database', s.seen ->> 'organization_id',"
                    " s.seen ->> 'dataverse_url', dwasync.relink_job($1)"
                    " FROM dwasync.job j JOIN dwasync.job_identity s ON s.job_id = j.id"
                    " WHERE j.name = $1",
                    1, p, &r) != DW_OK)
        goto out;
    if (PQntuples(r) == 0) {
        DW_LOGF(
            DW_LOG_ERROR,
            DW_FIELDS({"hint", "The identity is recorded when the daemon first starts the job."}),
            "job \"%s\" has no recorded source or environment to relink", name);
        goto out;
    }
    printf("job \"%s\" relinked to source system %s (timeline %s, database \"%s\") and "
           "organization %s at %s; it is %s\n",
           name, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
           PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5));
    status = relink_slot_exists(cli, name, j.slot) ? relink_next_step(cli, name, step) : DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(ctl);
    return status;
}

int dw_cmd_job(struct dw_cli *cli, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0 && argc == 2)
        return job_list(cli);
    if (argc < 3)
        return dw_cli_usage("job");
    const char *verb = argv[1], *name = argv[2];
    if (strcmp(verb, "create") == 0) {
        if (argc == 3)
            return job_create(cli, name, NULL);
        if (argc == 5 && strcmp(argv[3], "--environment-url") == 0)
            return job_create(cli, name, argv[4]);
        return dw_cli_usage("job");
    }
    if (strcmp(verb, "start") == 0) {
        if (argc == 3)
            return job_start(cli, name, false);
        if (argc == 4 && strcmp(argv[3], "--initial-sync") == 0)
            return job_start(cli, name, true);
        return dw_cli_usage("job");
    }
    if (strcmp(verb, "resync") == 0)
        return job_resync(cli, argc, argv);
    if (strcmp(verb, "drop") == 0) {
        if (argc == 3)
            return job_drop(cli, name, false);
        if (argc == 4 && strcmp(argv[3], "--yes") == 0)
            return job_drop(cli, name, true);
        return dw_cli_usage("job");
    }
    if (strcmp(verb, "relink") == 0) {
        if (argc == 3)
            return job_relink(cli, name, NULL);
        if (argc == 4 && (strcmp(argv[3], "--resync") == 0 || strcmp(argv[3], "--verify") == 0))
            return job_relink(cli, name, argv[3]);
        return dw_cli_usage("job");
    }
    if (argc != 3)
        return dw_cli_usage("job");
    if (strcmp(verb, "show") == 0)
        return job_show(cli, name);
    if (strcmp(verb, "stop") == 0 || strcmp(verb, "pause") == 0 || strcmp(verb, "resume") == 0)
        return job_transition(cli, verb, name);
    return dw_cli_usage("job");
}

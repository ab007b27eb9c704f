/*
 * `dwasync check [--job NAME] [--json]`: the configuration health check, in the spirit of
 * dual-write's. Each check is a row in the table `checks` below and adds findings (a
 * stable code, a severity, a one-line message and a fix hint); the exit status is 0 only
 * if no finding is an error. Checks run in table order and read what earlier ones left in
 * the context (connections, the job rows): a check whose prerequisite failed says nothing,
 * since the failed prerequisite already produced its finding.
 *
 * To add a check: write `static void check_x(struct ctx *c)` calling add() and append a
 * row to `checks`. Codes are stable (tests and operators match on them): never reuse one.
 *
 * The Dataverse checks go through the sink (token and WhoAmI) and dvmeta + the map
 * validator (mapped tables, columns and alternate keys), with retries bounded so that a
 * check answers within seconds.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/dvmeta.h"
#include "dwasync/guard.h"
#include "dwasync/ha.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapstore.h"
#include "dwasync/migrate.h"
#include "dwasync/paths.h"
#include "dwasync/pg.h"
#include "dwasync/secret.h"
#include "dwasync/slotguard.h"
#include "dwasync/sink.h"

enum severity { SEV_OK, SEV_NOTE, SEV_WARN, SEV_ERROR };

static const char *const severity_names[] = {"ok", "note", "warning", "error"};

struct finding {
    char code[8];
    enum severity severity;
    char *job; /* NULL for findings not about one job */
    char *message;
    char *hint;
};

struct job_row {
    char *id, *name, *state, *slot, *publication, *state_reason;
};

struct ctx {
    struct dw_cli *cli;
    const char *only_job;
    struct dw_config cfg;
    bool config_ok;
    PGconn *source;  /* NULL until connected (and if unreachable) */
    PGconn *control; /* may equal source */
    bool schema_ok;
    bool dataverse_ok; /* WhoAmI answered */
    char *user_id;     /* the application user's systemuserid, once WhoAmI answered */
    struct dw_sink *sink;
    struct job_row *jobs;
    int njobs;
    struct finding *findings;
    size_t nfindings;
};

static void add(struct ctx *c, enum severity sev, const char *code, const char *job,
                const char *hint, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void add(struct ctx *c, enum severity sev, const char *code, const char *job,
                const char *hint, const char *fmt, ...)
{
    c->findings = dw_realloc(c->findings, (c->nfindings + 1) * sizeof *c->findings);
    struct finding *f = &c->findings[c->nfindings++];
    memset(f, 0, sizeof *f);
    snprintf(f->code, sizeof f->code, "%s", code);
    f->severity = sev;
    f->job = job ? dw_strdup(job) : NULL;
    f->hint = dw_strdup(hint ? hint : "");
    struct dw_buf msg;
    dw_buf_init(&msg, 4096);
    va_list ap;
    va_start(ap, fmt);
    (void)dw_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    f->message = dw_buf_steal(&msg);
}

/* Runs a one-row query; NULL (and no log line: the finding says it) on failure. */
static PGresult *one_row(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Connects quietly: failures become findings, not log lines. */
static PGconn *connect_quiet(const char *conninfo, char *why, size_t why_size)
{
    const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, "dwasync check", "10", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
        return conn;
    snprintf(why, why_size, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    why[strcspn(why, "\n")] = '\0';
    PQfinish(conn);
    return NULL;
}

/* --- the checks ------------------------------------------------------------------------- */

static void check_config(struct ctx *c)
{
    const char *path = dw_config_path(c->cli->config_path);
    bool explicit_path = (c->cli->config_path && *c->cli->config_path) || getenv("DWASYNC_CONFIG");
    if (!explicit_path && access(path, F_OK) != 0 && errno == ENOENT) {
        add(c, SEV_WARN, "CFG002", NULL, "Create it from `dwasync config sample`.",
            "no config file at \"%s\": using built-in defaults", path);
        c->config_ok = true;
        return;
    }
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    if (dw_config_load(&c->cfg, path, &errors) != DW_OK) {
        const char *text = dw_buf_str(&errors);
        int n = 0;
        for (const char *p = text; *p; p++)
            n += *p == '\n';
        add(c, SEV_ERROR, "CFG001", NULL,
            "Fix the file; `dwasync config describe` lists every key.",
            "config \"%s\" is invalid: %.*s%s", path, (int)strcspn(text, "\n"), text,
            n > 1 ? " (and more: see dwasync config validate)" : "");
    } else {
        add(c, SEV_OK, "CFG000", NULL, "", "config \"%s\" is valid", path);
        c->config_ok = true;
    }
    dw_buf_cleanup(&errors);
}

/* One secret file, judged by the daemon's own rule (dw_secret_check). */
static void check_one_secret(struct ctx *c, const char *key, const char *name)
{
    char why[512];
    dw_rc rc = dw_secret_check(name, why, sizeof why);
    if (rc == DW_OK) {
        char *path = dw_secret_resolve(name);
        add(c, SEV_OK, "SEC000", NULL, "", "[dataverse] %s: \"%s\" is present and private", key,
            path);
        free(path);
    } else if (rc == DW_ERR_SECRET) {
        add(c, SEV_ERROR, "SEC002", NULL, "dwasync refuses to read it.", "[dataverse] %s: %s", key,
            why);
    } else {
        add(c, SEV_ERROR, "SEC001", NULL,
            "Create the file (a regular file, mode 0600, owned by the dwasync user) or fix the "
            "path.",
            "[dataverse] %s: %s", key, why);
    }
}

static void check_secrets(struct ctx *c)
{
    if (!c->config_ok)
        return;
    const struct dw_config *cfg = &c->cfg;
    if (!*cfg->dataverse.url) {
        add(c, SEV_ERROR, "DV001", NULL,
            "Set [dataverse] url, e.g. https://contoso.crm.dynamics.com.",
            "[dataverse] url is not set");
    } else {
        char why[512];
        if (dw_config_check_transport(cfg, why, sizeof why) != DW_OK)
            add(c, SEV_ERROR, "DV007", NULL,
                "dwasync talks to Dataverse and the authority over https only.", "%s", why);
        else if (cfg->dataverse.allow_insecure_http)
            add(c, SEV_WARN, "DV007", NULL, "Remove allow_insecure_http outside a test setup.",
                "allow_insecure_http is set: http is accepted to loopback addresses");
    }
    bool secret = *cfg->dataverse.client_secret_file != '\0';
    bool cert = *cfg->dataverse.certificate_file != '\0' || *cfg->dataverse.private_key_file;
    if (!secret && !cert && *cfg->dataverse.url) {
        add(c, SEV_ERROR, "SEC003", NULL,
            "Set client_secret_file, or certificate_file and private_key_file.",
            "no Dataverse credential is configured");
    }
    if (secret)
        check_one_secret(c, "client_secret_file", cfg->dataverse.client_secret_file);
    if (cert) {
        if (!*cfg->dataverse.certificate_file || !*cfg->dataverse.private_key_file)
            add(c, SEV_ERROR, "SEC004", NULL, "Set both certificate_file and private_key_file.",
                "certificate credentials need both a certificate and a private key");
        if (*cfg->dataverse.private_key_file)
            check_one_secret(c, "private_key_file", cfg->dataverse.private_key_file);
        /* The certificate is public: it must only be there and readable. */
        char *cert_path = *cfg->dataverse.certificate_file
                              ? dw_secret_resolve(cfg->dataverse.certificate_file)
                              : NULL;
        if (cert_path && access(cert_path, R_OK) != 0)
            add(c, SEV_ERROR, "SEC005", NULL, "Fix the path or the file's permissions.",
                "[dataverse] certificate_file: \"%s\" cannot be read: %s", cert_path,
                strerror(errno));
        free(cert_path);
    }
}

static void check_postgres(struct ctx *c)
{
    char why[512];
    if (!c->config_ok)
        return;
    c->source = connect_quiet(c->cfg.source.conninfo, why, sizeof why);
    if (c->source == NULL) {
        add(c, SEV_ERROR, "PG001", NULL,
            "Check [source] conninfo, that the server runs, pg_hba.conf and the password "
            "(.pgpass).",
            "cannot connect to the source database: %s", why);
        return;
    }
    add(c, SEV_OK, "PG000", NULL, "", "source database reachable (server %d, database \"%s\")",
        PQserverVersion(c->source), PQdb(c->source));
    const char *control = dw_config_control_conninfo(&c->cfg);
    if (strcmp(control, c->cfg.source.conninfo) == 0) {
        c->control = c->source;
        return;
    }
    c->control = connect_quiet(control, why, sizeof why);
    if (c->control == NULL)
        add(c, SEV_ERROR, "PG002", NULL,
            "Check [control] conninfo, that the server runs, pg_hba.conf and the password.",
            "cannot connect to the control database: %s", why);
}

static void check_replication(struct ctx *c)
{
    if (c->source == NULL)
        return;
    PGresult *r = one_row(c->source,
                          "SELECT current_setting('wal_level'), r.rolreplication OR r.rolsuper,"
                          " current_user, current_setting('max_slot_wal_keep_size'),"
                          " current_setting('max_replication_slots')::int"
                          "   - (SELECT count(*) FROM pg_replication_slots),"
                          " current_setting('max_wal_senders')::int"
                          " FROM pg_roles r WHERE r.rolname = current_user",
                          0, NULL);
    if (r == NULL) {
        add(c, SEV_ERROR, "PG009", NULL, "Check the role's privileges.",
            "cannot read the replication settings of the source database");
        return;
    }
    const char *wal_level = PQgetvalue(r, 0, 0);
    if (strcmp(wal_level, "logical") != 0)
        add(c, SEV_ERROR, "PG003", NULL,
            "Set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) "
            "and restart the server.",
            "wal_level is \"%s\": logical decoding needs \"logical\"", wal_level);
    else
        add(c, SEV_OK, "PG003", NULL, "", "wal_level is logical");
    if (PQgetvalue(r, 0, 1)[0] != 't')
        add(c, SEV_ERROR, "PG004", NULL, "Run ALTER ROLE ... REPLICATION as a superuser.",
            "role \"%s\" lacks the REPLICATION attribute needed to stream changes",
            PQgetvalue(r, 0, 2));
    else
        add(c, SEV_OK, "PG004", NULL, "", "role \"%s\" may replicate", PQgetvalue(r, 0, 2));
    const char *keep = PQgetvalue(r, 0, 3);
    if (strcmp(keep, "-1") == 0)
        add(c, SEV_NOTE, "PG005", NULL,
            "Consider max_slot_wal_keep_size so a long outage cannot fill the disk (the slot "
            "would then be invalidated and need an initial sync).",
            "max_slot_wal_keep_size is unlimited: a stalled job retains WAL without bound");
    else
        add(c, SEV_NOTE, "PG005", NULL,
            "A job that lags more than this loses its slot and needs a new initial sync.",
            "max_slot_wal_keep_size is %s", keep);
    long free_slots = strtol(PQgetvalue(r, 0, 4), NULL, 10);
    if (free_slots <= 0)
        add(c, SEV_WARN, "PG006", NULL,
            "Raise max_replication_slots (needs a restart) before starting another job.",
            "no free replication slot (max_replication_slots is used up)");
    if (strtol(PQgetvalue(r, 0, 5), NULL, 10) <= 0)
        add(c, SEV_ERROR, "PG007", NULL, "Set max_wal_senders to at least the number of jobs.",
            "max_wal_senders is 0: no replication connection is possible");
    PQclear(r);
}

static void check_control_schema(struct ctx *c)
{
    if (c->control == NULL)
        return;
    int current = 0, latest = 0;
    const char *sqldir = dw_paths_sqldir();
    if (dw_migrate_current(c->control, &current) != DW_OK) {
        add(c, SEV_ERROR, "CTL002", NULL, "Check the role's privileges on schema dwasync.",
            "cannot read the control schema version");
        return;
    }
    if (current == 0) {
        add(c, SEV_ERROR, "CTL001", NULL, "Run dwasync init.",
            "the control schema is not installed");
        return;
    }
    if (sqldir == NULL || dw_migrate_latest(sqldir, &latest) != DW_OK) {
        add(c, SEV_WARN, "CTL003", NULL, "Set DWASYNC_SHAREDIR or reinstall the package.",
            "cannot find the SQL migrations to compare the schema version with");
        c->schema_ok = true;
        return;
    }
    if (current < latest) {
        add(c, SEV_ERROR, "CTL001", NULL, "Run dwasync init to upgrade it.",
            "the control schema is at version %d, this dwasync needs %d", current, latest);
        return;
    }
    if (current > latest) {
        add(c, SEV_ERROR, "CTL004", NULL, "Upgrade dwasync on this host.",
            "the control schema is at version %d, newer than this dwasync (%d)", current, latest);
        return;
    }
    add(c, SEV_OK, "CTL000", NULL, "", "control schema is current (version %d)", current);
    c->schema_ok = true;
}

static void load_jobs(struct ctx *c)
{
    if (!c->schema_ok)
        return;
    const char *params[] = {c->only_job};
    PGresult *res = PQexecParams(
        c->control,
        "SELECT id, name, state, slot_name, publication_name,"
        " coalesce(state_reason, '') FROM dwasync.job WHERE $1::text IS NULL OR name = $1"
        " ORDER BY name",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        add(c, SEV_ERROR, "JOB002", NULL, "Check the role's privileges on schema dwasync.",
            "cannot read the jobs: %s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        PQclear(res);
        return;
    }
    c->njobs = PQntuples(res);
    c->jobs = dw_calloc((size_t)c->njobs + 1, sizeof *c->jobs);
    for (int i = 0; i < c->njobs; i++) {
        c->jobs[i].id = dw_strdup(PQgetvalue(res, i, 0));
        c->jobs[i].name = dw_strdup(PQgetvalue(res, i, 1));
        c->jobs[i].state = dw_strdup(PQgetvalue(res, i, 2));
        c->jobs[i].slot = dw_strdup(PQgetvalue(res, i, 3));
        c->jobs[i].publication = dw_strdup(PQgetvalue(res, i, 4));
        c->jobs[i].state_reason = dw_strdup(PQgetvalue(res, i, 5));
    }
    PQclear(res);
    if (c->only_job && c->njobs == 0)
        add(c, SEV_ERROR, "JOB001", c->only_job, "Run dwasync job list to see the jobs.",
            "job \"%s\" does not exist", c->only_job);
    else if (c->njobs == 0)
        add(c, SEV_NOTE, "JOB000", NULL, "Create one with dwasync job create NAME.",
            "no jobs are defined yet");
}

/* A missing slot or publication is an error for a running job, expected for a new one. */
static enum severity missing_severity(const struct job_row *j)
{
    return strcmp(j->state, "stopped") == 0 ? SEV_NOTE : SEV_ERROR;
}

static void check_slots(struct ctx *c)
{
    if (c->source == NULL)
        return;
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        const char *params[] = {j->slot};
        PGresult *r = one_row(c->source,
                              "SELECT plugin, database = current_database(),"
                              " coalesce(wal_status, ''), active,"
                              " coalesce(pg_size_pretty(safe_wal_size), '')"
                              " FROM pg_replication_slots WHERE slot_name = $1",
                              1, params);
        if (r == NULL) {
            add(c, missing_severity(j), "SLOT001", j->name,
                "dwasync job start creates it; a running job without one needs a new initial sync.",
                "replication slot \"%s\" does not exist", j->slot);
            continue;
        }
        const char *wal_status = PQgetvalue(r, 0, 2);
        char why[512];
        dw_rc rc = dw_slotguard_judge(c->source, j->name, j->slot, NULL, why, sizeof why);
        if (rc != DW_OK)
            add(c, SEV_ERROR, "SLOT003", j->name,
                "Another consumer owns this slot: dwasync neither streams from it nor drops it.",
                "%s", rc == DW_ERR_STATE ? why : "the slot could not be checked");
        else if (strcmp(wal_status, "lost") == 0)
            add(c, SEV_ERROR, "SLOT002", j->name,
                "The slot lost WAL it needed: recreate it with dwasync job start --initial-sync.",
                "slot \"%s\" is invalidated (wal_status lost)", j->slot);
        else if (strcmp(wal_status, "unreserved") == 0)
            add(c, SEV_WARN, "SLOT002", j->name,
                "The job is close to max_slot_wal_keep_size: let it catch up or raise the limit.",
                "slot \"%s\" is about to lose WAL (wal_status unreserved, %s left)", j->slot,
                PQgetvalue(r, 0, 4));
        else if (strcmp(wal_status, "extended") == 0)
            add(c, SEV_NOTE, "SLOT002", j->name, "The job lags; watch dwasync status.",
                "slot \"%s\" retains more WAL than max_wal_size (wal_status extended)", j->slot);
        else
            add(c, SEV_OK, "SLOT000", j->name, "", "slot \"%s\" is healthy (wal_status %s)",
                j->slot, wal_status);
        PQclear(r);
    }
}

static void check_publications(struct ctx *c)
{
    if (c->source == NULL)
        return;
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        const char *params[] = {j->publication};
        PGresult *r = one_row(c->source,
                              "SELECT pubinsert AND pubupdate AND pubdelete"
                              " FROM pg_publication WHERE pubname = $1",
                              1, params);
        if (r == NULL) {
            add(c, missing_severity(j), "PUB001", j->name,
                "dwasync job start creates it from the job's table maps.",
                "publication \"%s\" does not exist", j->publication);
            continue;
        }
        if (PQgetvalue(r, 0, 0)[0] != 't')
            add(c, SEV_ERROR, "PUB002", j->name,
                "ALTER PUBLICATION ... SET (publish = 'insert, update, delete, truncate').",
                "publication \"%s\" does not publish inserts, updates and deletes", j->publication);
        PQclear(r);
        if (c->control != c->source)
            continue; /* table maps live elsewhere: compare by name only */
        const char *p2[] = {j->id, j->publication};
        PGresult *m = PQexecParams(c->source,
                                   "SELECT m.source_schema || '.' || m.source_table"
                                   " FROM dwasync.table_map m WHERE m.job_id = $1::bigint"
                                   " AND NOT EXISTS (SELECT 1 FROM pg_publication_tables t"
                                   "   WHERE t.pubname = $2 AND t.schemaname = m.source_schema"
                                   "   AND t.tablename = m.source_table)"
                                   " ORDER BY 1",
                                   2, NULL, p2, NULL, NULL, 0);
        if (PQresultStatus(m) == PGRES_TUPLES_OK) {
            for (int k = 0; k < PQntuples(m); k++)
                add(c, missing_severity(j), "PUB003", j->name,
                    "Stop and start the job so its publication follows its table maps.",
                    "mapped table \"%s\" is not in publication \"%s\"", PQgetvalue(m, k, 0),
                    j->publication);
        }
        PQclear(m);
    }
}

static void ignore_done(void *user, void *write_user, const struct dw_write_result *r)
{
    (void)user;
    (void)write_user;
    (void)r;
}

/* True if an earlier finding of this family is an error (later checks would repeat it). */
static bool failed(const struct ctx *c, const char *family)
{
    for (size_t i = 0; i < c->nfindings; i++)
        if (c->findings[i].severity == SEV_ERROR &&
            strncmp(c->findings[i].code, family, strlen(family)) == 0)
            return true;
    return false;
}

/*
 * Connects (TCP and TLS) to url's host within 5 s. The sink retries an unreachable peer
 * without end, as the daemon should; a health check must answer instead.
 */
static bool reachable(const struct dw_config *cfg, const char *url, char *why, size_t why_size)
{
    char err[CURL_ERROR_SIZE] = "";
    CURL *e = curl_easy_init();
    if (e == NULL) {
        snprintf(why, why_size, "out of memory");
        return false;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    if (*cfg->dataverse.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->dataverse.ca_file);
    CURLcode cc = curl_easy_perform(e);
    if (cc != CURLE_OK)
        snprintf(why, why_size, "%s", *err ? err : curl_easy_strerror(cc));
    curl_easy_cleanup(e);
    return cc == CURLE_OK;
}

/* Token and WhoAmI: the sink fetches a token on the first request. */
static void check_dataverse(struct ctx *c)
{
    if (!c->config_ok || !*c->cfg.dataverse.url || failed(c, "SEC") || failed(c, "DV007"))
        return;
    /* A health check must answer, not retry for ever: bound retries and timeouts. */
    struct dw_config *cfg = &c->cfg;
    cfg->dataverse.retry_limit = 2;
    if (cfg->dataverse.retry_max_backoff_ms > 2000)
        cfg->dataverse.retry_max_backoff_ms = 2000;
    if (cfg->dataverse.request_timeout_ms > 30000)
        cfg->dataverse.request_timeout_ms = 30000;
    char why[CURL_ERROR_SIZE + 64];
    if (!reachable(cfg, cfg->dataverse.authority, why, sizeof why)) {
        add(c, SEV_ERROR, "DV002", NULL,
            "Check [dataverse] authority, DNS, proxies and firewalls (and ca_file for TLS).",
            "cannot reach the authority \"%s\": %s", cfg->dataverse.authority, why);
        return;
    }
    if (!reachable(cfg, cfg->dataverse.url, why, sizeof why)) {
        add(c, SEV_ERROR, "DV003", NULL,
            "Check [dataverse] url, DNS, proxies and firewalls (and ca_file for TLS).",
            "cannot reach the environment \"%s\": %s", cfg->dataverse.url, why);
        return;
    }
    if (dw_sink_new(cfg, ignore_done, NULL, &c->sink) != DW_OK) {
        add(c, SEV_ERROR, "DV002", NULL,
            "Check [dataverse] url, tenant_id, client_id and the credential files (see the "
            "log line above).",
            "cannot set up the Dataverse client");
        return;
    }
    char *user_id = NULL;
    dw_rc rc = dw_sink_whoami(c->sink, &user_id);
    if (rc == DW_ERR_AUTH) {
        add(c, SEV_ERROR, "DV002", NULL,
            "Check tenant_id, client_id and the client secret or certificate registered for "
            "the application in Entra ID (the log line above has the server's answer).",
            "cannot obtain an access token from the authority");
    } else if (rc != DW_OK) {
        add(c, SEV_ERROR, "DV003", NULL,
            "Check the URL, that the application user exists in the environment and has a "
            "security role (the log line above has the server's answer).",
            "WhoAmI on \"%s\" failed: %s", cfg->dataverse.url, dw_rc_str(rc));
    } else {
        add(c, SEV_OK, "DV003", NULL, "", "WhoAmI answers (user %s)", user_id);
        c->dataverse_ok = true;
        c->user_id = user_id;
        return;
    }
    free(user_id);
}

/* Mapped tables exist, mapped columns exist and fit, alternate keys exist and are active. */
static void check_dataverse_maps(struct ctx *c)
{
    if (!c->dataverse_ok || c->control == NULL)
        return;
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        struct dw_jobdef *def = NULL;
        struct dw_entity_meta **metas = NULL;
        size_t nmetas = 0;
        if (dw_mapstore_load(c->control, j->name, &def) != DW_OK) {
            add(c, SEV_ERROR, "DV006", j->name, "See the log line above.",
                "cannot load the job's table maps");
            continue;
        }
        size_t nmaps = dw_jobdef_map_count(def);
        metas = dw_calloc(nmaps + 1, sizeof *metas);
        for (size_t g = 0; g < def->ngroups; g++) {
            for (size_t k = 0; k < def->groups[g].nmaps; k++) {
                const struct dw_tablemap *m = &def->groups[g].maps[k];
                bool seen = false;
                for (size_t x = 0; x < nmetas && !seen; x++)
                    seen = strcmp(metas[x]->logical_name, m->logical_name) == 0;
                if (seen)
                    continue;
                struct dw_entity_meta *meta = NULL;
                dw_rc rc = dw_dvmeta_fetch(c->sink, m->logical_name, &meta);
                if (rc == DW_ERR_NOT_FOUND)
                    add(c, SEV_ERROR, "DV004", j->name,
                        "Fix the map's target table, or create the table in the environment.",
                        "map \"%s\": Dataverse table \"%s\" does not exist", m->name,
                        m->logical_name);
                else if (rc != DW_OK)
                    add(c, SEV_ERROR, "DV004", j->name, "See the log line above.",
                        "map \"%s\": cannot read the metadata of table \"%s\"", m->name,
                        m->logical_name);
                else
                    metas[nmetas++] = meta;
            }
        }
        if (nmetas > 0) {
            struct dw_findings f;
            dw_findings_init(&f);
            dw_mapvalidate(def, NULL, (const struct dw_entity_meta *const *)metas, nmetas, &f);
            /* One finding per line "error: PATH: message" / "warning: PATH: message". */
            char *text = dw_strdup(dw_buf_str(&f.text));
            for (char *line = text, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                    *next++ = '\0';
                bool is_error = strncmp(line, "error: ", 7) == 0;
                const char *msg = strchr(line, ' ') ? strchr(line, ' ') + 1 : line;
                add(c, is_error ? SEV_ERROR : SEV_WARN, "DV005", j->name,
                    "Fix the map (dwasync map export, edit, import) or the Dataverse table; "
                    "dwasync map validate shows every finding.",
                    "%s", msg);
            }
            if (f.errors == 0 && f.warnings == 0)
                add(c, SEV_OK, "DV005", j->name, "",
                    "mapped Dataverse tables, columns and alternate keys are in place");
            free(text);
            dw_findings_cleanup(&f);
        }
        for (size_t x = 0; x < nmetas; x++)
            dw_entity_meta_free(metas[x]);
        free(metas);
        dw_jobdef_free(def);
    }
}

/* The first map of def whose write options bypass custom logic, or NULL. */
static const struct dw_tablemap *first_bypassing_map(const struct dw_jobdef *def)
{
    for (size_t g = 0; g < def->ngroups; g++)
        for (size_t k = 0; k < def->groups[g].nmaps; k++)
            if (json_object_get(def->groups[g].maps[k].write_options, "bypass_logic"))
                return &def->groups[g].maps[k];
    return NULL;
}

/* Whether the application user holds a privilege, asked as "Bypass custom Dataverse logic"
 * advises (RetrieveUserPrivilegeByPrivilegeName): a write that bypasses custom logic without
 * it is refused (403), every row of the map would go to the error table. */
static dw_rc user_has_privilege(struct ctx *c, const char *privilege, bool *held)
{
    char *path = dw_asprintf("systemusers(%s)/Microsoft.Dynamics.CRM."
                             "RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='%s')",
                             c->user_id, privilege);
    json_t *doc = NULL;
    dw_rc rc = dw_sink_get_json(c->sink, path, &doc);
    free(path);
    if (rc == DW_OK)
        *held = json_array_size(json_object_get(doc, "RolePrivileges")) > 0;
    json_decref(doc);
    return rc;
}

/* A map whose write options bypass custom logic needs prvBypassCustomBusinessLogic. */
static void check_write_options(struct ctx *c)
{
    static const char privilege[] = "prvBypassCustomBusinessLogic";
    if (!c->dataverse_ok || c->control == NULL)
        return;
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        struct dw_jobdef *def = NULL;
        if (dw_mapstore_load(c->control, j->name, &def) != DW_OK)
            continue; /* DV006 said so */
        const struct dw_tablemap *m = first_bypassing_map(def);
        bool held = false;
        if (m == NULL) {
            dw_jobdef_free(def);
            continue;
        }
        if (user_has_privilege(c, privilege, &held) != DW_OK)
            add(c, SEV_ERROR, "DV008", j->name, "See the log line above.",
                "map \"%s\" bypasses custom logic: cannot read whether the application user "
                "holds %s",
                m->name, privilege);
        else if (!held)
            add(c, SEV_ERROR, "DV008", j->name,
                "Give the application user's security role the privilege, or remove "
                "bypass_logic from the map's options.write.",
                "map \"%s\" bypasses custom logic, but the application user lacks %s: its "
                "writes would be refused (403)",
                m->name, privilege);
        else
            add(c, SEV_OK, "DV008", j->name, "", "the application user holds %s (map \"%s\")",
                privilege, m->name);
        dw_jobdef_free(def);
    }
}

/* A session other than a dwasync runner's holding a job's lock stalls the job (ha.h). */
static void check_job_lock(struct ctx *c)
{
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        const char *params[] = {j->id};
        PGresult *r = one_row(c->control,
                              "SELECT pid, role, application_name"
                              " FROM dwasync.job_lock_holder($1::bigint)",
                              1, params);
        if (r != NULL && strcmp(PQgetvalue(r, 0, 2), DW_HA_LOCK_APPNAME) != 0)
            add(c, SEV_ERROR, "LOCK001", j->name,
                "End that session (pg_terminate_backend) or its transaction; only dwasync runs "
                "hold job locks.",
                "the job's lock is held by a foreign session (pid %s, role \"%s\", application "
                "\"%s\"): no runner can apply",
                PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
        else if (r != NULL)
            add(c, SEV_OK, "LOCK000", j->name, "", "the job's lock is held by a runner (pid %s)",
                PQgetvalue(r, 0, 0));
        PQclear(r);
    }
}

/* An active job needs a runner: a dwasync session holding its lock (ha.h). */
static void check_runner(struct ctx *c)
{
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        if (strcmp(j->state, "active") != 0)
            continue;
        const char *params[] = {j->id, DW_HA_LOCK_APPNAME};
        PGresult *r = one_row(c->control,
                              "SELECT EXISTS (SELECT 1 FROM dwasync.job_lock_holder($1::bigint)"
                              "   WHERE application_name = $2),"
                              " (SELECT extract(epoch FROM now() - heartbeat_at)::bigint"
                              "   FROM dwasync.runner WHERE job_id = $1::bigint)",
                              2, params);
        if (r == NULL)
            continue; /* a schema without the lock: check_control_schema said so */
        if (PQgetvalue(r, 0, 0)[0] == 't')
            add(c, SEV_OK, "RUN000", j->name, "", "a runner is applying the job");
        else if (PQgetisnull(r, 0, 1))
            add(c, SEV_ERROR, "RUN001", j->name,
                "Start the daemon: systemctl start dwasync@NAME, or dwasync run --job NAME.",
                "the job is active but no runner has ever run it");
        else
            add(c, SEV_ERROR, "RUN001", j->name,
                "Start the daemon: systemctl start dwasync@NAME, or dwasync run --job NAME.",
                "the job is active but no runner is alive (last heartbeat %s s ago)",
                PQgetvalue(r, 0, 1));
        PQclear(r);
    }
}

/* A job the environment guard paused waits for an operator's decision (guard.h). */
static void check_guard(struct ctx *c)
{
    for (int i = 0; i < c->njobs; i++) {
        const struct job_row *j = &c->jobs[i];
        const char *prefix = DW_GUARD_REASON_PREFIX;
        if (strncmp(j->state_reason, prefix, strlen(prefix)) == 0)
            add(c, SEV_ERROR, "ENV001", j->name,
                "If the new source or environment is the right one, run dwasync job relink; "
                "else correct the configuration.",
                "%s by the environment guard: %s", j->state, j->state_reason + strlen(prefix));
    }
}

/* The job named by slot's owner, borrowed from c->jobs; NULL when no listed job owns it. */
static const struct job_row *slot_owner(const struct ctx *c, const char *slot)
{
    for (int i = 0; i < c->njobs; i++)
        if (strcmp(c->jobs[i].slot, slot) == 0)
            return &c->jobs[i];
    return NULL;
}

/*
 * dwasync's slots (named "dwasync_...", a job's or one `decode` created) that nobody streams
 * from hold WAL back on the source until they are used or dropped.
 */
static void check_idle_slots(struct ctx *c)
{
    if (c->source == NULL || !c->schema_ok)
        return;
    PGresult *r =
        PQexec(c->source, "SELECT slot_name, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(),"
                          " restart_lsn)) FROM pg_replication_slots"
                          " WHERE slot_name LIKE 'dwasync\\_%' AND NOT active"
                          " AND database = current_database() AND restart_lsn IS NOT NULL"
                          " AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > 0"
                          " ORDER BY 1");
    for (int k = 0; PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++) {
        const char *slot = PQgetvalue(r, k, 0), *size = PQgetvalue(r, k, 1);
        const struct job_row *j = slot_owner(c, slot);
        const char *params[] = {slot};
        PGresult *owner =
            j ? NULL
              : one_row(c->control, "SELECT name FROM dwasync.job WHERE slot_name = $1", 1, params);
        if (j)
            add(c, SEV_WARN, "SLOT004", j->name,
                strcmp(j->state, "stopped") == 0
                    ? "Start the job again, or drop it with dwasync job drop if it is not coming "
                      "back."
                    : "Start the job's daemon so it consumes the slot.",
                "slot \"%s\" is inactive and retains %s of WAL (job %s)", slot, size, j->state);
        else if (owner == NULL && c->only_job == NULL)
            add(c, SEV_WARN, "SLOT004", NULL,
                "No job owns it (a dwasync decode slot, or a dropped job's): drop it with "
                "SELECT pg_drop_replication_slot('<slot>') once nobody needs it.",
                "slot \"%s\" is inactive, belongs to no job and retains %s of WAL", slot, size);
        PQclear(owner);
    }
    PQclear(r);
}

static const struct {
    const char *name;
    void (*run)(struct ctx *c);
} checks[] = {
    {"config", check_config},
    {"secrets", check_secrets},
    {"postgres", check_postgres},
    {"replication", check_replication},
    {"control schema", check_control_schema},
    {"jobs", load_jobs},
    {"job lock", check_job_lock},
    {"runner", check_runner},
    {"environment guard", check_guard},
    {"slots", check_slots},
    {"idle slots", check_idle_slots},
    {"publications", check_publications},
    {"dataverse", check_dataverse},
    {"dataverse maps", check_dataverse_maps},
    {"write options", check_write_options},
};

static void print_findings(const struct ctx *c, bool as_json, bool verbose)
{
    if (as_json) {
        json_t *doc = json_object(), *list = json_array();
        for (size_t i = 0; i < c->nfindings; i++) {
            const struct finding *f = &c->findings[i];
            json_t *o = json_object();
            json_object_set_new(o, "code", json_string(f->code));
            json_object_set_new(o, "severity", json_string(severity_names[f->severity]));
            json_object_set_new(o, "job", f->job ? json_string(f->job) : json_null());
            json_object_set_new(o, "message", json_string(f->message));
            json_object_set_new(o, "hint", json_string(f->hint));
            json_array_append_new(list, o);
        }
        json_object_set_new(doc, "findings", list);
        char *text = dw_json_dumps(doc);
        printf("%s\n", text);
        free(text);
        json_decref(doc);
        return;
    }
    int errors = 0, warnings = 0;
    for (size_t i = 0; i < c->nfindings; i++) {
        const struct finding *f = &c->findings[i];
        errors += f->severity == SEV_ERROR;
        warnings += f->severity == SEV_WARN;
        if (f->severity == SEV_OK && !verbose)
            continue;
        printf("%-7s %-7s %s%s%s%s\n", severity_names[f->severity], f->code, f->job ? "job \"" : "",
               f->job ? f->job : "", f->job ? "\": " : "", f->message);
        if (*f->hint && f->severity != SEV_OK)
            printf("                fix: %s\n", f->hint);
    }
    printf("%d error%s, %d warning%s\n", errors, errors == 1 ? "" : "s", warnings,
           warnings == 1 ? "" : "s");
}

int dw_cmd_check(struct dw_cli *cli, int argc, char **argv)
{
    static const struct option options[] = {{"job", required_argument, NULL, 'j'},
                                            {"json", no_argument, NULL, 'J'},
                                            {NULL, 0, NULL, 0}};
    struct ctx c;
    bool as_json = false;
    int opt;
    memset(&c, 0, sizeof c);
    c.cli = cli;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'j')
            c.only_job = optarg;
        else if (opt == 'J')
            as_json = true;
        else
            return dw_cli_usage("check");
    }
    if (optind != argc)
        return dw_cli_usage("check");
    dw_config_init(&c.cfg);
    for (size_t i = 0; i < sizeof checks / sizeof *checks; i++)
        checks[i].run(&c);
    print_findings(&c, as_json, cli->verbose);
    bool failed = false;
    for (size_t i = 0; i < c.nfindings; i++) {
        failed |= c.findings[i].severity == SEV_ERROR;
        free(c.findings[i].job);
        free(c.findings[i].message);
        free(c.findings[i].hint);
    }
    free(c.findings);
    for (int i = 0; i < c.njobs; i++) {
        free(c.jobs[i].id);
        free(c.jobs[i].name);
        free(c.jobs[i].state);
        free(c.jobs[i].slot);
        free(c.jobs[i].publication);
        free(c.jobs[i].state_reason);
    }
    free(c.jobs);
    if (c.control != c.source)
        PQfinish(c.control);
    PQfinish(c.source);
    dw_sink_free(c.sink);
    free(c.user_id);
    dw_config_cleanup(&c.cfg);
    return failed ? DW_EXIT_FAILURE : DW_EXIT_OK;
}

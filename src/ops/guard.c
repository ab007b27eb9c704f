/*
 * The environment guard (see guard.h): reads the identity of the source (pg_control_system(),
 * the timeline of the last checkpoint, the database) and of the Dataverse environment
 * (WhoAmI's OrganizationId, the URL), compares it with the identity recorded for the job in
 * dwasync.job_identity (sql/065) and pauses the job, naming both, when it changed.
 */
#include "dwasync/guard.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"
#include "dwasync/pipeline.h"
#include "dwasync/sink.h"

static void copy_text(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

/* The URL as compared: "https://org.crm.dynamics.com/" and without the slash are one place. */
static void copy_url(char *dst, size_t size, const char *url)
{
    copy_text(dst, size, url);
    size_t n = strlen(dst);
    while (n > 0 && dst[n - 1] == '/')
        dst[--n] = '\0';
}

dw_rc dw_guard_read_source(PGconn *src, struct dw_guard_identity *id)
{
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(src, "reading the source's identity",
                           "SELECT s.system_identifier::text, c.timeline_id, d.datname, d.oid "
                           "FROM pg_control_system() s, pg_control_checkpoint() c, "
                           "pg_database d WHERE d.datname = current_database()",
                           0, NULL, &res);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(res) != 1) {
        DW_ERROR("reading the source's identity: no row for the current database");
        rc = DW_ERR_PG;
        goto out;
    }
    copy_text(id->source_system_id, sizeof id->source_system_id, PQgetvalue(res, 0, 0));
    id->source_timeline = (int)strtol(PQgetvalue(res, 0, 1), NULL, 10);
    copy_text(id->source_database, sizeof id->source_database, PQgetvalue(res, 0, 2));
    id->source_database_oid = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
out:
    PQclear(res);
    return rc;
}

dw_rc dw_guard_read_environment(struct dw_sink *sink, const char *url, struct dw_guard_identity *id)
{
    json_t *who = NULL;
    dw_rc rc = dw_sink_get_json(sink, "WhoAmI", &who);
    if (rc != DW_OK)
        return rc;
    const char *org = json_string_value(json_object_get(who, "OrganizationId"));
    if (org == NULL || *org == '\0') {
        DW_ERROR("WhoAmI answered without an OrganizationId");
        rc = DW_ERR_PROTOCOL;
    } else {
        copy_text(id->organization_id, sizeof id->organization_id, org);
        copy_url(id->dataverse_url, sizeof id->dataverse_url, url);
    }
    json_decref(who);
    return rc;
}

static bool same_source(const struct dw_guard_identity *a, const struct dw_guard_identity *b)
{
    return strcmp(a->source_system_id, b->source_system_id) == 0 &&
           a->source_timeline == b->source_timeline &&
           strcmp(a->source_database, b->source_database) == 0 &&
           a->source_database_oid == b->source_database_oid;
}

static bool same_environment(const struct dw_guard_identity *a, const struct dw_guard_identity *b)
{
    return strcmp(a->organization_id, b->organization_id) == 0 &&
           strcmp(a->dataverse_url, b->dataverse_url) == 0;
}

static char *describe_source(const struct dw_guard_identity *id)
{
    return dw_asprintf("system %s, timeline %d, database \"%s\" oid %" PRId64, id->source_system_id,
                       id->source_timeline, id->source_database, id->source_database_oid);
}

static char *describe_environment(const struct dw_guard_identity *id)
{
    return dw_asprintf("organization %s at %s", id->organization_id, id->dataverse_url);
}

/* "the source changed (was A; now B)" or "the source is unchanged (A)". */
static char *describe_side(const char *side, char *(*describe)(const struct dw_guard_identity *),
                           const struct dw_guard_identity *was, const struct dw_guard_identity *now,
                           bool same)
{
    char *a = describe(was), *b = describe(now);
    char *text = same ? dw_asprintf("the %s is unchanged (%s)", side, a)
                      : dw_asprintf("the %s changed (was %s; now %s)", side, a, b);
    free(a);
    free(b);
    return text;
}

static char *mismatch_reason(const struct dw_guard_identity *was,
                             const struct dw_guard_identity *now)
{
    char *src = describe_side("source", describe_source, was, now, same_source(was, now));
    char *env =
        describe_side("environment", describe_environment, was, now, same_environment(was, now));
    char *reason = dw_asprintf(DW_GUARD_REASON_PREFIX "%s; %s", src, env);
    free(src);
    free(env);
    return reason;
}

static void identity_params(const struct dw_guard_identity *id, char timeline[16], char oid[24],
                            const char *params[6])
{
    snprintf(timeline, 16, "%d", id->source_timeline);
    snprintf(oid, 24, "%" PRId64, id->source_database_oid);
    params[0] = id->source_system_id;
    params[1] = timeline;
    params[2] = id->source_database;
    params[3] = oid;
    params[4] = id->organization_id;
    params[5] = id->dataverse_url;
}

static dw_rc record_identity(PGconn *control, const char *job_id,
                             const struct dw_guard_identity *id)
{
    char timeline[16], oid[24];
    const char *params[7] = {job_id};
    identity_params(id, timeline, oid, params + 1);
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(control, "recording the job's source and environment",
                           "INSERT INTO dwasync.job_identity (job_id, source_system_id, "
                           "source_timeline, source_database, source_database_oid, "
                           "organization_id, dataverse_url) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                           "ON CONFLICT (job_id) DO NOTHING",
                           7, params, &res);
    PQclear(res);
    return rc;
}

dw_rc dw_guard_judge(PGconn *control, int64_t job_id, const struct dw_guard_identity *now,
                     char **reason)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, job_id);
    const char *params[] = {id};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(control, "reading the job's source and environment",
                           "SELECT source_system_id, source_timeline, source_database, "
                           "source_database_oid, organization_id, dataverse_url "
                           "FROM dwasync.job_identity WHERE job_id = $1",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        if ((rc = record_identity(control, id, now)) == DW_OK)
            *reason = NULL;
        return rc;
    }
    struct dw_guard_identity was = {0};
    copy_text(was.source_system_id, sizeof was.source_system_id, PQgetvalue(res, 0, 0));
    was.source_timeline = (int)strtol(PQgetvalue(res, 0, 1), NULL, 10);
    copy_text(was.source_database, sizeof was.source_database, PQgetvalue(res, 0, 2));
    was.source_database_oid = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    copy_text(was.organization_id, sizeof was.organization_id, PQgetvalue(res, 0, 4));
    copy_text(was.dataverse_url, sizeof was.dataverse_url, PQgetvalue(res, 0, 5));
    PQclear(res);
    *reason =
        same_source(&was, now) && same_environment(&was, now) ? NULL : mismatch_reason(&was, now);
    return DW_OK;
}

static char *identity_json(const struct dw_guard_identity *id)
{
    json_t *o =
        json_pack("{s:s, s:i, s:s, s:I, s:s, s:s}", "source_system_id", id->source_system_id,
                  "source_timeline", id->source_timeline, "source_database", id->source_database,
                  "source_database_oid", (json_int_t)id->source_database_oid, "organization_id",
                  id->organization_id, "dataverse_url", id->dataverse_url);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

/* Keeps what was seen for relink and pauses the job, in one statement. */
static dw_rc pause_job(PGconn *control, int64_t job_id, const struct dw_guard_identity *seen,
                       const char *reason)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, job_id);
    char *seen_json = identity_json(seen);
    const char *params[] = {id, seen_json, reason};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(control, "pausing the job (environment guard)",
                           "WITH kept AS (UPDATE dwasync.job_identity SET seen = $2::jsonb, "
                           "seen_at = now() WHERE job_id = $1) "
                           "UPDATE dwasync.job SET state = 'paused', state_reason = $3, "
                           "updated_at = now() WHERE id = $1 AND state = 'active'",
                           3, params, &res);
    PQclear(res);
    free(seen_json);
    return rc;
}

static dw_rc read_identity(const struct dw_config *cfg, struct dw_guard_identity *id)
{
    PGconn *src = NULL;
    struct dw_sink *sink = NULL;
    dw_rc rc = dw_pg_connect(cfg->source.conninfo, "dwasync environment guard", &src);
    if (rc == DW_OK)
        rc = dw_guard_read_source(src, id);
    PQfinish(src);
    if (rc == DW_OK && (rc = dw_sink_new(cfg, dw_write_ticket_dispatch, NULL, &sink)) == DW_OK)
        rc = dw_guard_read_environment(sink, cfg->dataverse.url, id);
    dw_sink_free(sink);
    return rc;
}

dw_rc dw_guard_verify(PGconn *control, const struct dw_config *cfg, int64_t job_id,
                      const char *job_name, bool *trusted)
{
    struct dw_guard_identity now = {0};
    char *reason = NULL;
    dw_rc rc = read_identity(cfg, &now);
    if (rc == DW_OK)
        rc = dw_guard_judge(control, job_id, &now, &reason);
    if (rc != DW_OK || reason == NULL)
        goto out;
    if ((rc = pause_job(control, job_id, &now, reason)) != DW_OK)
        goto out;
    DW_LOGF(DW_LOG_ERROR,
            DW_FIELDS({"job", job_name},
                      {"hint", "Nothing was read or written. If the new source or environment is "
                               "the right one, accept it with dwasync job relink; else correct "
                               "the configuration."}),
            "job paused: %s", reason);
out:
    if (rc == DW_OK)
        *trusted = reason == NULL;
    free(reason);
    return rc;
}

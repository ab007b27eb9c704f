/*
 * Control schema migrations (see migrate.h): lists sql/NNN_name.sql (a duplicate version is
 * an error), takes an advisory lock so concurrent `dwasync init` runs serialize, and applies
 * each newer file together with its dwasync.schema_version row in one transaction.
 */
#include "dwasync/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

/* Arbitrary but fixed: serializes concurrent `dwasync init` runs on one database. */
#define MIGRATE_LOCK_KEY "7346299130"

struct migration {
    int version;
    char *file; /* name within the sql dir */
};

static int by_version(const void *a, const void *b)
{
    const struct migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static void free_migrations(struct migration *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].file);
    free(m);
}

/* Lists NNN_name.sql files, sorted; duplicate versions are an error. */
static dw_rc list_migrations(const char *sqldir, struct migration **out, size_t *count)
{
    DIR *d = opendir(sqldir);
    if (d == NULL) {
        DW_ERROR("cannot open migration directory \"%s\": %s", sqldir, strerror(errno));
        return DW_ERR_IO;
    }
    struct migration *m = NULL;
    size_t n = 0;
    dw_rc rc = DW_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 4, ".sql") != 0 || !isdigit((unsigned char)name[0]))
            continue;
        char *end;
        long v = strtol(name, &end, 10);
        if (*end != '_' || v <= 0 || v > 100000) {
            DW_ERROR("migration file \"%s\" is not named NNN_description.sql", name);
            rc = DW_ERR_INVALID;
            goto out;
        }
        m = dw_realloc(m, (n + 1) * sizeof *m);
        m[n].version = (int)v;
        m[n].file = dw_strdup(name);
        n++;
    }
    qsort(m, n, sizeof *m, by_version);
    for (size_t i = 1; i < n; i++) {
        if (m[i].version == m[i - 1].version) {
            DW_ERROR("migrations \"%s\" and \"%s\" have the same version", m[i - 1].file,
                     m[i].file);
            rc = DW_ERR_INVALID;
            goto out;
        }
    }
out:
    closedir(d);
    if (rc != DW_OK) {
        free_migrations(m, n);
        return rc;
    }
    *out = m;
    *count = n;
    return DW_OK;
}

static dw_rc read_file(const char *path, struct dw_buf *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        DW_ERROR("cannot open \"%s\": %s", path, strerror(errno));
        return DW_ERR_IO;
    }
    char chunk[8192];
    size_t n;
    dw_rc rc = DW_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && rc == DW_OK)
        rc = dw_buf_append(out, chunk, n);
    if (ferror(f)) {
        DW_ERROR("cannot read \"%s\": %s", path, strerror(errno));
        rc = DW_ERR_IO;
    }
    fclose(f);
    return rc;
}

dw_rc dw_migrate_latest(const char *sqldir, int *out)
{
    struct migration *m;
    size_t n;
    dw_rc rc = list_migrations(sqldir, &m, &n);
    if (rc != DW_OK)
        return rc;
    *out = n ? m[n - 1].version : 0;
    free_migrations(m, n);
    return DW_OK;
}

dw_rc dw_migrate_current(PGconn *conn, int *out)
{
    int64_t installed = 0, version = 0;
    dw_rc rc = dw_pg_query_int(conn, "reading the schema version",
                               "SELECT CASE WHEN to_regclass('dwasync.schema_version') IS NULL "
                               "THEN 0 ELSE 1 END",
                               0, NULL, &installed);
    if (rc == DW_OK && installed)
        rc = dw_pg_query_int(conn, "reading the schema version",
                             "SELECT coalesce(max(version), 0) FROM dwasync.schema_version", 0,
                             NULL, &version);
    if (rc == DW_OK)
        *out = (int)version; /* an int4 column */
    return rc;
}

static dw_rc apply_one(PGconn *conn, const char *sqldir, const struct migration *m)
{
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    char *path = dw_asprintf("%s/%s", sqldir, m->file);
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->file};
    PGresult *res = NULL;
    dw_rc rc = read_file(path, &sql);
    if (rc != DW_OK)
        goto out;
    if ((rc = dw_pg_exec(conn, "starting a migration", "BEGIN")) != DW_OK)
        goto out;
    if ((rc = dw_pg_exec(conn, m->file, dw_buf_str(&sql))) != DW_OK)
        goto rollback;
    rc = dw_pg_query(conn, "recording the schema version",
                     "INSERT INTO dwasync.schema_version (version, name) VALUES ($1, $2)", 2,
                     params, &res);
    if (rc != DW_OK)
        goto rollback;
    PQclear(res);
    if ((rc = dw_pg_exec(conn, "committing a migration", "COMMIT")) != DW_OK)
        goto out;
    DW_INFO("applied migration \"%s\"", m->file);
    goto out;
rollback:
    (void)dw_pg_exec(conn, "rolling back a migration", "ROLLBACK");
out:
    free(path);
    dw_buf_cleanup(&sql);
    return rc;
}

dw_rc dw_migrate_run(PGconn *conn, const char *sqldir, struct dw_migrate_result *out)
{
    struct migration *m = NULL;
    size_t n = 0;
    int current = 0, applied = 0, from = 0;
    dw_rc rc = list_migrations(sqldir, &m, &n);
    if (rc != DW_OK)
        return rc;
    if ((rc = dw_pg_exec(conn, "taking the migration lock",
                         "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")")) != DW_OK)
        goto out;
    if ((rc = dw_migrate_current(conn, &current)) != DW_OK)
        goto unlock;
    from = current;
    int latest = n ? m[n - 1].version : 0;
    if (current > latest) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"hint", "Install the dwasync release that created this schema, or "
                                   "a newer one."}),
                "the control schema is at version %d but this dwasync knows versions up to %d",
                current, latest);
        rc = DW_ERR_VERSION;
        goto unlock;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= current)
            continue;
        if ((rc = apply_one(conn, sqldir, &m[i])) != DW_OK)
            goto unlock;
        current = m[i].version;
        applied++;
    }
unlock:
    (void)dw_pg_exec(conn, "releasing the migration lock",
                     "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
out:
    free_migrations(m, n);
    if (rc == DW_OK) {
        out->from_version = from;
        out->to_version = current;
        out->applied = applied;
    }
    return rc;
}

dw_rc dw_migrate_require_current(PGconn *conn, const char *sqldir)
{
    int current, latest;
    dw_rc rc = dw_migrate_current(conn, &current);
    if (rc == DW_OK)
        rc = dw_migrate_latest(sqldir, &latest);
    if (rc != DW_OK)
        return rc;
    if (current == latest)
        return DW_OK;
    if (current < latest)
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"hint", "Run dwasync init to install or upgrade it."}),
                "the control schema is at version %d; this dwasync needs version %d", current,
                latest);
    else
        DW_ERROR("the control schema is at version %d, newer than this dwasync knows (%d)", current,
                 latest);
    return DW_ERR_VERSION;
}

/*
 * migrate.h - installs and upgrades the control schema (`dwasync init`).
 *
 * Migrations are the files sql/NNN_name.sql, applied in version order, each in its own
 * transaction together with its row in dwasync.schema_version. Concurrent runs serialize on
 * an advisory lock. Running twice changes nothing; a database whose schema is newer than
 * the newest migration this binary ships is refused (an older binary must not run on it).
 */
#ifndef DWASYNC_MIGRATE_H
#define DWASYNC_MIGRATE_H

#include <libpq-fe.h>

#include "dwasync/rc.h"

/* Result of a migration run. */
struct dw_migrate_result {
    int from_version; /* schema version before the run (0: no schema) */
    int to_version;   /* schema version after the run */
    int applied;      /* number of migrations applied */
};

/* Applies every pending migration found in sqldir to conn. */
dw_rc dw_migrate_run(PGconn *conn, const char *sqldir, struct dw_migrate_result *out);

/* Newest version among the migrations in sqldir (0 if none). */
dw_rc dw_migrate_latest(const char *sqldir, int *out);

/* Current schema version of the database (0 if the schema is not installed). */
dw_rc dw_migrate_current(PGconn *conn, int *out);

/* Fails with DW_ERR_VERSION (logged with a hint) unless the schema is exactly current. */
dw_rc dw_migrate_require_current(PGconn *conn, const char *sqldir);

#endif

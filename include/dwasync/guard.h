/*
 * guard.h - the environment guard: a job streams only between the source and the Dataverse
 * environment it was started against.
 *
 * A job's identity (sql/065, dwasync.job_identity) is the source's system identifier,
 * timeline and database (name and oid), and the environment's organization id (WhoAmI) and
 * URL. The runner reads the current identity before it opens the stream or writes anything:
 * the first time it is recorded; when it differs later (a restored or cloned mirror, a
 * promoted standby, a refreshed or copied Dataverse environment) the job is paused with a
 * reason that names both identities, and what was seen is kept for `dwasync job relink`,
 * which accepts it (dwasync.relink_job()). Resuming a paused job does not get past the
 * guard: only relink changes the recorded identity.
 *
 * Everything here is caller-owned; struct dw_guard_identity holds no pointers.
 */
#ifndef DWASYNC_GUARD_H
#define DWASYNC_GUARD_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/config.h"
#include "dwasync/rc.h"

/* The prefix of the state_reason of a job the guard paused (relink_job() looks for it). */
#define DW_GUARD_REASON_PREFIX "environment guard: "

struct dw_sink;

struct dw_guard_identity {
    char source_system_id[32]; /* decimal, as pg_control_system() prints it */
    int source_timeline;
    char source_database[64];
    int64_t source_database_oid;
    char organization_id[64];
    char dataverse_url[512]; /* without trailing slashes */
};

/* Fills the source half of id from a connection to the source database (logged on failure). */
dw_rc dw_guard_read_source(PGconn *src, struct dw_guard_identity *id);

/* Fills the environment half of id: WhoAmI's OrganizationId through sink, and url. */
dw_rc dw_guard_read_environment(struct dw_sink *sink, const char *url,
                                struct dw_guard_identity *id);

/*
 * Compares now with job's recorded identity, recording it when there is none. *reason is
 * NULL when the job may stream, else a new string (caller frees) starting with
 * DW_GUARD_REASON_PREFIX that names the recorded and the current identity.
 */
dw_rc dw_guard_judge(PGconn *control, int64_t job_id, const struct dw_guard_identity *now,
                     char **reason);

/*
 * The runner's call, before it starts an active job: reads the current identity (its own
 * source connection and sink, closed before it returns), judges it and, when it changed,
 * pauses the job with the reason and keeps what it saw for relink (logged once, here).
 * *trusted is false then. A failure to read either side returns its error (nothing paused).
 */
dw_rc dw_guard_verify(PGconn *control, const struct dw_config *cfg, int64_t job_id,
                      const char *job_name, bool *trusted);

#endif

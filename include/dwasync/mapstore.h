/*
 * mapstore.h - job definitions in the control schema (dwasync.job, table_group, table_map).
 *
 * Import writes a whole definition in one transaction: the job is created if new, its
 * groups and maps are upserted by name (ids of unchanged maps stay, so error rows keep
 * pointing at them; a map whose definition changed gets version + 1) and maps or groups no
 * longer in the file are removed. A job that is active, starting or paused is refused:
 * maps change only while the job is stopped, as in dual-write.
 *
 * Load reads a job back into the same struct dw_jobdef a map file parses to, through the
 * same parser, with map ids filled in. Connections are borrowed; definitions are owned by
 * the caller (dw_jobdef_free()).
 */
#ifndef DWASYNC_MAPSTORE_H
#define DWASYNC_MAPSTORE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "dwasync/mapfile.h"
#include "dwasync/rc.h"

struct dw_mapstore_import_result {
    bool job_created;
    int maps;         /* maps in the definition */
    int maps_changed; /* new maps and maps whose definition changed */
    int maps_removed; /* maps no longer in the definition */
};

/* Imports def (see the banner); DW_ERR_STATE, logged with a hint, if the job is running. */
dw_rc dw_mapstore_import(PGconn *control, const struct dw_jobdef *def,
                         struct dw_mapstore_import_result *result);

/*
 * Loads a job's definition. DW_ERR_NOT_FOUND if there is no such job, DW_ERR_STATE if it
 * has no maps yet (both logged).
 */
dw_rc dw_mapstore_load(PGconn *control, const char *job_name, struct dw_jobdef **out);

#endif

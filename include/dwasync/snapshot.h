/*
 * snapshot.h - the initial sync: a table's existing rows, consistent with the slot.
 *
 * dw_snapshot_run() drops the slot if it exists (an earlier, interrupted sync left it),
 * creates it again with an exported snapshot on a replication connection, and reads the
 * given tables inside that snapshot on a second connection with a cursor (FETCH fetch_rows
 * at a time: memory is bounded by one batch, whatever the table size). Every row goes to the
 * handler as an INSERT inside one transaction: begin, one change per row (index counting
 * across all tables), commit, with commit_lsn = end_lsn = the slot's consistent point.
 * The caller then streams from the slot (stream.h), which starts exactly after that point:
 * nothing is missed and nothing is applied twice out of order.
 *
 * Restartable: when anything fails midway the caller simply runs it again; the slot is
 * dropped and recreated and the copy starts over (upserts make repeated rows harmless).
 * Row filters and column lists of the publication are not applied to the copy.
 *
 * Ownership: options and the handler are borrowed for the call; the relation and datums
 * passed to the handler are borrowed for each callback.
 */
#ifndef DWASYNC_SNAPSHOT_H
#define DWASYNC_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "dwasync/lsn.h"
#include "dwasync/rc.h"
#include "dwasync/stream.h"

struct dw_snapshot_options {
    const char *conninfo;      /* source database (no replication=) */
    const char *slot;          /* slot to (re)create */
    const char *const *tables; /* "schema.table" or "table" (public) */
    size_t ntables;
    int64_t fetch_rows; /* rows per FETCH; 0 = 10000 */
};

/*
 * Runs the initial sync described above; *consistent_point is where streaming continues.
 * Handler errors are returned as they are; DW_ERR_NOT_FOUND names a missing table.
 */
dw_rc dw_snapshot_run(const struct dw_snapshot_options *o, const struct dw_stream_handler *h,
                      dw_lsn *consistent_point);

#endif

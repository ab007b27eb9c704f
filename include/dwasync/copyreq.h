/*
 * copyreq.h - queueing copies of source rows into a job that keeps streaming: what `dwasync
 * job resync` and `dwasync verify --repair` write into dwasync.copy_request (sql/050, 060).
 *
 * The daemon copies each queued table in key-ordered chunks between watermarks, interleaved
 * with the stream on the job's own slot (snapshot.h): no new slot, no lost position, per-key
 * order kept (a copied row goes out at its chunk's high watermark, after every change the
 * stream delivered before it, and parks behind an open error of its key like any change),
 * resumable from the last checkpointed chunk after a crash or a failover.
 *
 * What is copied of a table is decided here, once, and stored as the request's condition:
 * the selected maps' row filters and legal entities (dw_copy_table_filter(), so excluded
 * rows never leave the server) and the operator's predicate. The predicate is checked with
 * dw_snapshot_condition_ok() (one parenthesized expression: no ';', no comment, no dollar
 * quote) and by the server: the rows it matches are counted in a READ ONLY transaction,
 * which also gives the copy's total for progress and ETA.
 *
 * Ownership: connections and the definition are borrowed for the call.
 */
#ifndef DWASYNC_COPYREQ_H
#define DWASYNC_COPYREQ_H

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>

#include "dwasync/mapfile.h"
#include "dwasync/rc.h"

struct dw_copyreq_spec {
    const char *kind;             /* "resync" or "repair" */
    struct dw_copy_selection sel; /* maps by name (checked to exist) and legal entities */
    const char *where;            /* the operator's predicate on the source table, or NULL */
};

/*
 * Queues one request per selected source table of def (the job's maps, parents first), in
 * one transaction on control, after checking the selection (unknown maps, legal entities
 * the job does not sync: DW_ERR_INVALID, logged with a hint) and counting each table's rows
 * on source. Prints one line per table to report (NULL: silent); *tables (may be NULL) is
 * how many were queued. Refused (DW_ERR_STATE) while the job's initial sync is pending.
 */
dw_rc dw_copyreq_queue(PGconn *control, PGconn *source, const struct dw_jobdef *def,
                       const struct dw_copyreq_spec *spec, FILE *report, int *tables);

/*
 * Counts the rows of schema.table matching condition (NULL: all) in a READ ONLY transaction
 * with standard_conforming_strings on, as the copy reads them. Errors (a predicate that does
 * not parse or names an unknown column) are logged with the server's message.
 */
dw_rc dw_copyreq_count(PGconn *source, const char *schema, const char *table, const char *condition,
                       int64_t *rows);

#endif

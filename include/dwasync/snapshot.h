/*
 * snapshot.h - the initial sync: a table's existing rows, consistent with the slot.
 *
 * Two ways. The daemon uses the chunked copy below (the slot is created once and kept, the
 * copy is interleaved with the stream and resumable). `dwasync decode --initial-sync` uses
 * dw_snapshot_run(): it drops the slot if it exists (an earlier, interrupted sync left it),
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
 * Row filters and column lists of the publication are not applied to this copy (the
 * daemon's chunked copy below reads under the maps' filters: its request's condition).
 *
 * Ownership: options and the handler are borrowed for the call; the relation and datums
 * passed to the handler are borrowed for each callback.
 */
#ifndef DWASYNC_SNAPSHOT_H
#define DWASYNC_SNAPSHOT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
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
 * The chunked copy: what `dwasync run` does for an initial sync (and, with a condition, what an
 * online resync can reuse). The slot exists and stays; the stream runs; a table is copied in
 * chunks in key order, each chunk read between two watermarks written into the WAL (DBLog):
 *
 *   dw_snapshot_chunk_begin()  emits the low watermark (pg_logical_emit_message, prefix
 *   and _continue()            "dwasync", transactional), reads up to rows rows after
 *                              last_key matching the request's condition (the maps'
 *                              filters, an operator's predicate; read-only, see
 *                              dw_snapshot_condition_ok()) ordered by the replica identity
 *                              key, emits the high
 *                              watermark; the rows are buffered (memory: one chunk).
 *   the stream then delivers   low: dw_snapshot_chunk_watermark() opens the window; every
 *                              change is passed to dw_snapshot_chunk_observe(), which drops
 *                              buffered rows whose key the stream changed (insert, update,
 *                              delete; a TRUNCATE drops them all): the stream's later
 *                              version wins. high: dw_snapshot_chunk_emit() hands the rows
 *                              left to the handler as INSERTs of the high watermark's
 *                              transaction, so they are applied and checkpointed with it.
 *
 * Postgres writes a transaction's commit into the WAL before it makes it visible (a
 * synchronous standby holds it in between until it answers; a busy machine, for a moment).
 * Such a transaction can commit before the low watermark and still be invisible to the read:
 * the read takes its snapshot with pg_current_snapshot(), and dw_snapshot_chunk_observe()
 * drops the keys of a transaction it did not see wherever the stream shows it before the
 * high watermark. One the stream delivered before the read cannot be caught that way: the
 * caller checks dw_snapshot_chunk_unseen() against the transactions it has streamed, and
 * reads the chunk again once they are visible.
 *
 * Changes to rows the copy has not reached yet are skipped (dw_snapshot_chunk_beyond(), and
 * every change to a table whose copy has not started): the copy reads them later as they are
 * then, so a change never names a parent row the copy has not written yet.
 *
 * Per key the order holds: a row goes out at the high watermark with a value no older than
 * any change the stream delivered before it. The caller records last_key (durably, once the
 * high watermark's transaction is checkpointed) and reads the next chunk from there; after a
 * crash it resumes at the recorded key (a chunk whose progress was not recorded is read
 * again: harmless, upserts). Deletes committed meanwhile arrive through the stream.
 *
 * Ownership: a chunk is created by dw_snapshot_chunk_begin() and freed by
 * dw_snapshot_chunk_free() (NULL accepted); the request and connection are borrowed for
 * the call. The connection is a normal source session opened by dw_stream_connect().
 */
#define DW_SNAPSHOT_WATERMARK_PREFIX "dwasync"
enum { DW_SNAPSHOT_LOW = 1, DW_SNAPSHOT_HIGH = 2 };

/* One table to copy, from after last_key (a JSON array of key texts; NULL: from the start). */
struct dw_snapshot_request {
    const char *table;     /* "schema.table" */
    const char *condition; /* an SQL condition on the table's rows, or NULL for all rows */
    const char *last_key;
};

/* Longest condition a copy accepts. */
#define DW_SNAPSHOT_CONDITION_MAX 16384

/*
 * Whether an SQL condition may be run by a copy (an operator's `--where` goes through here
 * when queued, and again before each chunk is read). It must stay one expression inside the
 * parentheses the copy puts around it: parentheses balanced outside literals and quoted
 * identifiers, no ';', no comment, no '$' (dollar quotes, parameters), no backslash outside
 * an E'' literal, not empty, at most DW_SNAPSHOT_CONDITION_MAX bytes. The server parses it;
 * the chunk's SELECT runs in a READ ONLY transaction with standard_conforming_strings on (the
 * string rules assumed here), as the daemon's role. *why is a static reason when false.
 */
bool dw_snapshot_condition_ok(const char *condition, const char **why);

struct dw_snapshot_chunk;

/*
 * Starts reading the next chunk of rows rows (0 = 10000): emits the low watermark and sends
 * the read, whose rows the server sends while the caller does other work; tag makes the
 * watermarks unique (job, process, chunk number). DW_ERR_UNSUPPORTED for a table without a
 * replica identity key. Until the read is done, conn is the chunk's, and the stream must not
 * be read: its low watermark may come before the rows it is checked against.
 */
dw_rc dw_snapshot_chunk_begin(PGconn *conn, const struct dw_snapshot_request *req, int64_t rows,
                              const char *tag, struct dw_snapshot_chunk **out);

/* Takes what the server has sent of the read (call it when PQsocket(conn) is readable); *done
 * once every row is in and the high watermark is written. On an error the chunk is to be
 * freed: its read is given up. */
dw_rc dw_snapshot_chunk_continue(PGconn *conn, struct dw_snapshot_chunk *c, bool *done);

/* Whether the chunk's read is still under way. */
bool dw_snapshot_chunk_reading(const struct dw_snapshot_chunk *c);

/* DW_SNAPSHOT_LOW or DW_SNAPSHOT_HIGH when m is one of this chunk's watermarks, else 0. */
int dw_snapshot_chunk_watermark(struct dw_snapshot_chunk *c, const struct dw_logical_message *m);

/* Drops buffered rows whose key the stream's change touches: between the watermarks, and
 * before them when the read did not see the change's transaction. */
void dw_snapshot_chunk_observe(struct dw_snapshot_chunk *c, const struct dw_change *ch);

/* The transactions running or not yet visible when the chunk was read (*xids borrowed):
 * any the caller has already streamed makes the chunk stale. */
size_t dw_snapshot_chunk_unseen(const struct dw_snapshot_chunk *c, const uint32_t **xids);

/*
 * Passes the rows not dropped to h->change as INSERTs of txn, numbering them from *index;
 * *emitted counts them. The handler's error is returned.
 */
dw_rc dw_snapshot_chunk_emit(struct dw_snapshot_chunk *c, const struct dw_txn *txn, uint32_t *index,
                             const struct dw_stream_handler *h, int64_t *emitted);

/* Frees the buffered rows once emitted; the key description and last key stay (frontier). */
void dw_snapshot_chunk_trim(struct dw_snapshot_chunk *c);

/*
 * *beyond: every key the change touches (new, and old if sent) sorts after the chunk's last
 * key, compared by the server (collations, types). Such a change to the table being copied
 * can be skipped: a later chunk reads the row as it is then, after the change (which keeps
 * a stream change from naming a parent the copy has not reached). False for the final chunk.
 */
dw_rc dw_snapshot_chunk_beyond(PGconn *conn, const struct dw_snapshot_chunk *c,
                               const struct dw_change *ch, bool *beyond);

/* The key of the chunk's last row read (JSON array text, borrowed), NULL for an empty chunk. */
const char *dw_snapshot_chunk_last_key(const struct dw_snapshot_chunk *c);

/* True when the chunk reached the end of the table (fewer rows than asked for). */
bool dw_snapshot_chunk_final(const struct dw_snapshot_chunk *c);

/* Rows read (dropped ones included). */
int64_t dw_snapshot_chunk_rows(const struct dw_snapshot_chunk *c);

void dw_snapshot_chunk_free(struct dw_snapshot_chunk *c);

/*
 * Reads the table's rows matching req->condition (checked as above) in key order, rows at a
 * time (0 = 10000; memory: one such page), each in a READ ONLY transaction, and passes each
 * to h->change as an INSERT (the relation described from the catalog as the copy does);
 * no watermark is written. For `dwasync verify`. The handler's error stops the scan.
 */
dw_rc dw_snapshot_scan(PGconn *conn, const struct dw_snapshot_request *req, int64_t rows,
                       const struct dw_stream_handler *h);

/*
 * The columns a copy orders a table by and names its rows with (the replica identity index,
 * else the primary key): *out is a new JSON array of names, empty when there is none.
 */
dw_rc dw_snapshot_key_columns(PGconn *conn, const char *table, json_t **out);

/*
 * Runs the initial sync described above; *consistent_point is where streaming continues.
 * Handler errors are returned as they are; DW_ERR_NOT_FOUND names a missing table.
 */
dw_rc dw_snapshot_run(const struct dw_snapshot_options *o, const struct dw_stream_handler *h,
                      dw_lsn *consistent_point);

#endif

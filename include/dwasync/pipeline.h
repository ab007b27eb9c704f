/*
 * pipeline.h - the apply pipeline of one job: decoded changes in, Dataverse writes out,
 * and the checkpoint rule in between.
 *
 * Changes are mapped as they arrive (mapping.h) and gathered into a *filling* window; when
 * the window is full (rows, bytes) or old enough, and the previous window is done, it
 * becomes the *applying* window: it is planned (window.h), its levels are submitted to the
 * sink one after another per table group, groups in parallel, and every chain ends applied
 * or failed. The atomic units of a level (changes of one transaction through atomic maps)
 * go to the sink as atomic groups (dw_sink_submit_atomic()); a window is cut inside a
 * transaction with atomic changes only after a whole multiple of DW_SINK_ATOMIC_MAX of its
 * changes, so its changesets are of that size whatever window_ms does.
 * Failed chains and unmappable changes become error rows; changes whose key is blocked are
 * parked behind them. The error rows, the job's checkpoint row and its apply
 * statistics are written in ONE control-database transaction, and only after it commits
 * does dw_pipeline_confirmed() move to the window's last commit end LSN: nothing is
 * acknowledged to the slot before it is applied or durably parked (DESIGN invariant 1).
 * The next window is planned and sent before that write, so its requests are on their way
 * while it is made; windows are still persisted, and confirmed, one by one in order.
 *
 * A chain that meets a missing parent (retries left) does not hold its window: it is carried
 * to the front of the filling window and sent again with it, after the parents it holds; the
 * windows it left behind are persisted without moving the checkpoint past it.
 *
 * Memory is bounded by three windows: while one applies, the next fills and the one before
 * waits for its error rows and checkpoint, and the caller stops reading the stream when
 * dw_pipeline_accepting() says the filling one is full. A
 * transaction larger than a window is applied in pieces; its end LSN is confirmed only with
 * the window that received its commit.
 *
 * Redelivery: after a reconnect the server resends from the confirmed position. Changes of
 * transactions already taken into a window are recognised by their commit LSN and dropped,
 * so a key never sees an older version after a newer one within one process.
 *
 * Ownership: the pipeline borrows the sink, the control connection and the maps (which
 * must outlive it: a job's maps cannot change while it runs). Writes reach
 * the sink through tickets (struct dw_write_ticket), so several users (the pipeline, error
 * replay) can share one sink: create the sink with dw_write_ticket_dispatch as its done
 * callback.
 */
#ifndef DWASYNC_PIPELINE_H
#define DWASYNC_PIPELINE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/lsn.h"
#include "dwasync/mapping.h"
#include "dwasync/rc.h"
#include "dwasync/sink.h"
#include "dwasync/values.h"

/* What a sink write carries back to whoever submitted it. */
struct dw_write_ticket {
    void (*done)(struct dw_write_ticket *ticket, const struct dw_write_result *result);
};

/* Done callback for dw_sink_new(): forwards each result to its ticket's done(). */
void dw_write_ticket_dispatch(void *user, void *write_user, const struct dw_write_result *r);

struct dw_pipeline_options {
    int64_t job_id;
    const char *job_name;
    int64_t window_rows;
    int64_t window_bytes;
    int64_t window_ms;
    int64_t missing_parent_retries;
    int64_t batch_size; /* rows per bulk request; windows grow under a backlog to fill them
                         * (window.h); 0: they never grow */
    const struct dw_values_options *values; /* how source values become JSON (borrowed) */
};

struct dw_pipeline_stats {
    uint64_t changes_received; /* row changes decoded for this job */
    uint64_t changes_ignored;  /* of unmapped tables or outside every filter */
    uint64_t rows_applied;     /* source changes applied (before coalescing) */
    uint64_t rows_failed;      /* open error rows written */
    uint64_t rows_parked;      /* waiting error rows written */
    uint64_t rows_unchanged;   /* updates applied without a request: nothing mapped changed */
    uint64_t windows;          /* windows completed */
    uint64_t last_window_rows;
    dw_lsn confirmed_lsn;
    int64_t last_commit_time_us; /* commit time of the last confirmed transaction */
};

struct dw_pipeline;

/*
 * Creates a pipeline and loads the job's blocked keys from the error table. All pointers
 * are borrowed (options strings included) and must outlive the pipeline.
 */
dw_rc dw_pipeline_new(const struct dw_pipeline_options *opts, struct dw_sink *sink, PGconn *control,
                      const struct dw_job_maps *maps, struct dw_pipeline **out);

/* Frees the pipeline; writes still in the sink must have completed (or the sink freed). */
void dw_pipeline_free(struct dw_pipeline *p);

/* Stream events. Errors are fatal for the stream (DW_ERR_PROTOCOL on an event out of order). */
dw_rc dw_pipeline_begin(struct dw_pipeline *p, uint32_t xid, dw_lsn commit_lsn,
                        int64_t commit_time_us);
dw_rc dw_pipeline_change(struct dw_pipeline *p, const struct dw_change *c);
dw_rc dw_pipeline_commit(struct dw_pipeline *p, dw_lsn commit_lsn, dw_lsn end_lsn,
                         int64_t commit_time_us);
/* The stream reconnected: drop what was received but not yet planned. */
void dw_pipeline_reset(struct dw_pipeline *p);

/* Whether the filling window has room for more changes (back-pressure on the stream). */
bool dw_pipeline_accepting(const struct dw_pipeline *p);
/*
 * How many more changes the filling window takes before it is full by rows (0: none,
 * SIZE_MAX: an atomic transaction holds it open). A reader that takes no more than this
 * closes windows at exactly window_rows, so a window's bulk requests come out whole
 * (2,000 rows: two requests of 1,000, not a third one of the few rows past the bound).
 */
size_t dw_pipeline_room(const struct dw_pipeline *p);

/*
 * Tells whether the stream had nothing more to read at the runner's last read. Then a
 * filling window closes at the end of a transaction without waiting for window_ms; and if
 * its last commit is recent (dw_window_recent()), the stream is caught up: the row bound
 * returns to window_rows (window.h). While it is behind, windows grow until bulk requests
 * are full.
 */
void dw_pipeline_stream_drained(struct dw_pipeline *p, bool drained);

/*
 * Advances the pipeline: persists a finished window, starts the next one when it is due
 * (or at once when flush is true), resubmits due retries. Returns DW_ERR_PG when the
 * control database could not be written; the window is kept and retried on the next call.
 */
dw_rc dw_pipeline_poll(struct dw_pipeline *p, bool flush);

/* Milliseconds until dw_pipeline_poll() has something to do by the clock (-1: nothing). */
int dw_pipeline_timeout_ms(const struct dw_pipeline *p);

/* Everything up to this LSN is applied or durably parked. */
dw_lsn dw_pipeline_confirmed(const struct dw_pipeline *p);

/* True when nothing received is pending: no window, no open transaction. */
bool dw_pipeline_idle(const struct dw_pipeline *p);

/* A key's error queue emptied (replayed or skipped): its changes may flow again. */
void dw_pipeline_unblock(struct dw_pipeline *p, int64_t map_id, const char *key_text);

/* Copies the counters. */
void dw_pipeline_get_stats(const struct dw_pipeline *p, struct dw_pipeline_stats *out);

#endif

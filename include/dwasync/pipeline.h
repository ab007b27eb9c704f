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
 * statistics go to the checkpoint store together, and only after it says all of it is
 * durable does dw_pipeline_confirmed() move to the window's last commit end LSN: nothing is
 * acknowledged to the slot before it is applied or durably parked (README invariant 1).
 * The next window is planned and sent before that write, so its requests are on their way
 * while it is made; windows are still persisted, and confirmed, one by one in order.
 *
 * A chain that meets a missing parent (retries left) does not hold its window: it is carried
 * to the front of the filling window and sent again with it, after the parents it holds; the
 * windows it left behind are persisted without moving the checkpoint past it, nor past any
 * later window while a carried chain waits in a window not yet applied.
 *
 * Applying ahead ([apply] apply_ahead, off by default): once a window is at the last level
 * of each of its table groups, the next one may start, so that its first levels overlap the
 * first's last (a level is done only when its largest request is, and levels of one or two
 * requests leave most of Dataverse's execution-time budget unused). Between them, the two
 * keep each group's apply order: no write starts while one of an earlier level is in
 * flight. The second's changes of keys the first has not applied wait for it (after a
 * failure of the key they are parked; after a missing parent, carried behind it).
 *
 * Memory is bounded by three windows: while one applies, the next fills (or applies ahead,
 * and then nothing fills) and the one before waits for its error rows and checkpoint, and
 * the caller stops reading the stream when dw_pipeline_accepting() says the filling one is
 * full; applying ahead, the sink holds the requests of two windows. A
 * transaction larger than a window is applied in pieces; its end LSN is confirmed only with
 * the window that received its commit.
 *
 * Redelivery: after a reconnect the server resends from the confirmed position. Changes of
 * transactions already taken into a window are recognised by their commit LSN and dropped,
 * so a key never sees an older version after a newer one within one process.
 *
 * Seams: the pipeline reaches Dataverse through a writer (struct dw_pipeline_writer) and
 * the control database through a checkpoint store (struct dw_pipeline_store), small
 * interfaces as struct dw_replay_ops is for replay. The daemon passes the sink and the
 * control connection (seams.h); tests/unit/test_pipeline.c passes in-memory fakes.
 *
 * Ownership: the pipeline borrows the writer, the store and the maps (which must outlive
 * it: a job's maps cannot change while it runs). Writes reach the writer through tickets
 * (struct dw_write_ticket), so several users (the pipeline, error replay) can share one
 * sink: create the sink with dw_write_ticket_dispatch as its done callback.
 */
#ifndef DWASYNC_PIPELINE_H
#define DWASYNC_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/errtable.h"
#include "dwasync/lsn.h"
#include "dwasync/mapping.h"
#include "dwasync/rc.h"
#include "dwasync/values.h"
#include "dwasync/write.h"

struct dw_sink; /* sink.h */

/* What a sink write carries back to whoever submitted it. */
struct dw_write_ticket {
    void (*done)(struct dw_write_ticket *ticket, const struct dw_write_result *result);
};

/* Done callback for dw_sink_new(): forwards each result to its ticket's done(). */
void dw_write_ticket_dispatch(void *user, void *write_user, const struct dw_write_result *r);

/*
 * Where the pipeline's writes go. submit and submit_atomic have dw_sink_submit()'s and
 * dw_sink_submit_atomic()'s contract: they take the writes' contents, and each write's
 * ticket (tickets[i], a struct dw_write_ticket *) gets exactly one done() call later, never
 * from inside submit; DW_ERR_INVALID (nothing queued) for a malformed write.
 */
struct dw_pipeline_writer {
    dw_rc (*submit)(void *user, struct dw_write *writes, void *const *tickets, size_t n);
    dw_rc (*submit_atomic)(void *user, struct dw_write *writes, void *const *tickets, size_t n);
    /* Writes submitted whose ticket has not been answered yet. */
    size_t (*pending)(void *user);
    /* Starts sending what was submitted, without waiting for answers. */
    void (*send)(void *user);
    void *user; /* passed to every call; borrowed */
};

/* What one window leaves in the control database; everything is borrowed for the call. */
struct dw_pipeline_persist {
    int64_t job_id;
    const struct dw_errrow *rows; /* its error rows (open and waiting) */
    size_t nrows;
    dw_lsn confirmed_lsn;        /* the checkpoint it moves to (never backwards) */
    int64_t last_commit_time_us; /* commit time at confirmed_lsn; 0 if unknown */
    size_t rows_applied;         /* statistics of the window */
    size_t rows_failed;
};

/*
 * Where the pipeline keeps what must survive a crash. persist writes a window's error rows
 * (rows already stored are skipped, and blocked gets the key of every row stored, as
 * dw_errtable_insert() does), its checkpoint and its statistics, all or nothing: it
 * returns DW_OK only when all of it is durable, and the pipeline moves
 * dw_pipeline_confirmed() only then. (Error rows durable without their checkpoint could be
 * replayed before a crash's redelivery resends their changes, and a resent change that
 * failed again would find its row resolved.) Persisting a window again after a failure
 * must be harmless.
 */
struct dw_pipeline_store {
    /* Replaces set's contents with the job's keys blocked behind open errors. */
    dw_rc (*load_blocked)(void *user, int64_t job_id, struct dw_blocked_keys *set);
    /* The job's checkpoint (0 when it has none). The stream starts from the slot, which may
     * be behind it (the slot is confirmed after the checkpoint is written, and a server
     * crash can move a slot back): transactions the checkpoint passed are not taken again,
     * so a resent change can never be applied, or parked, after what followed it. */
    dw_rc (*load_checkpoint)(void *user, int64_t job_id, dw_lsn *confirmed);
    dw_rc (*persist)(void *user, const struct dw_pipeline_persist *window,
                     struct dw_blocked_keys *blocked);
    void *user; /* passed to every call; borrowed */
};

/* What an observer is told about one change (metrics by table, class and map). */
enum dw_observed {
    DW_OBSERVED_RECEIVED, /* decoded (class: the operation) */
    DW_OBSERVED_APPLIED,  /* applied and checkpointed (class: the operation) */
    DW_OBSERVED_PARKED,   /* in the error table, checkpointed (class: the error class or
                           * "waiting") */
};

/* Optional: called once per change and event; strings are borrowed for the call. */
struct dw_pipeline_observer {
    void (*changed)(void *user, enum dw_observed what, const char *schema, const char *table,
                    const char *map, const char *class_name, int64_t commit_time_us);
    void *user;
};

struct dw_pipeline_options {
    int64_t job_id;
    const char *job_name;
    int64_t window_rows;
    int64_t window_bytes;
    int64_t window_ms;
    int64_t missing_parent_retries;
    int64_t batch_size;    /* rows per bulk request; windows grow under a backlog to fill them
                            * (window.h); 0: they never grow */
    int64_t window_growth; /* the most they grow, in window_rows; 0: DW_WINDOW_GROWTH_DEFAULT */
    bool apply_ahead;      /* a window may apply ahead of the one before (above) */
    /* Monotonic milliseconds for windows and retries; NULL: dw_clock_ms (tests set theirs). */
    int64_t (*clock_ms)(void);
    const struct dw_pipeline_observer *observer; /* NULL: none (borrowed) */
};

struct dw_pipeline_stats {
    uint64_t changes_received; /* row changes decoded for this job */
    uint64_t changes_ignored;  /* of unmapped tables or outside every filter */
    uint64_t rows_applied;     /* source changes applied (before coalescing) */
    uint64_t rows_failed;      /* open error rows written */
    uint64_t rows_parked;      /* waiting error rows written */
    uint64_t rows_unchanged;   /* updates applied without a request: nothing mapped changed */
    uint64_t windows;          /* windows completed */
    uint64_t windows_ahead;    /* of those, started while the one before was at its last levels */
    uint64_t last_window_rows;
    uint64_t last_window_bytes; /* source bytes of its changes (before coalescing) */
    dw_lsn confirmed_lsn;
    int64_t last_commit_time_us; /* commit time of the last confirmed transaction */
};

struct dw_pipeline;

/*
 * Creates a pipeline and loads the job's blocked keys from the store. All pointers are
 * borrowed (options strings, writer and store included) and must outlive the pipeline.
 */
dw_rc dw_pipeline_new(const struct dw_pipeline_options *opts,
                      const struct dw_pipeline_writer *writer,
                      const struct dw_pipeline_store *store, const struct dw_job_maps *maps,
                      struct dw_pipeline **out);

/* Frees the pipeline; writes still in the writer must have completed (or the writer freed). */
void dw_pipeline_free(struct dw_pipeline *p);

/* Stream events. Errors are fatal for the stream (DW_ERR_PROTOCOL on an event out of order). */
dw_rc dw_pipeline_begin(struct dw_pipeline *p, uint32_t xid, dw_lsn commit_lsn,
                        int64_t commit_time_us);
/* A change, typed by the source stage (values.h); the pipeline borrows it for the call. */
dw_rc dw_pipeline_change(struct dw_pipeline *p, const struct dw_typed_change *c);
/* A change while a copy runs: an update that changes nothing mapped is sent all the same
 * (dw_pipeline_change() applies it without a request), since the row it writes may not be
 * in Dataverse: the copy left it to the stream (a chunk drops the rows the stream changes
 * while it is read), or a resync is repairing it. */
dw_rc dw_pipeline_change_sent(struct dw_pipeline *p, const struct dw_typed_change *c);
/* A change to a row a copy has not reached yet: only the deletes it implies are taken (the
 * row deleted, moved out of a filter, or its old key). The copy writes the row as it is when
 * read, but never sees a row that is gone, and Dataverse may hold it from an earlier sync. */
dw_rc dw_pipeline_change_removals(struct dw_pipeline *p, const struct dw_typed_change *c);
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

/*
 * Whether everything received is applied and persisted, except what waits for the rest of
 * a transaction received in part (an atomic one: it goes whole or not at all). A stop
 * drains to this state: nothing reads the stream then, so the rest never comes, and what
 * was not applied is received again from the slot.
 */
bool dw_pipeline_settled(const struct dw_pipeline *p);

/*
 * A key's error queue emptied (replayed or skipped): its changes may flow again. A key with
 * a change parked in a window whose error rows are not written yet stays blocked: that row,
 * once written, heads the key's queue again (errtable.h), and its replay unblocks the key.
 */
void dw_pipeline_unblock(struct dw_pipeline *p, int64_t map_id, const char *key_text);

/* Copies the counters. */
void dw_pipeline_get_stats(const struct dw_pipeline *p, struct dw_pipeline_stats *out);

#endif

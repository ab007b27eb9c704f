/*
 * stream.h - the logical replication stream: a non-blocking pgoutput reader that plugs into
 * the caller's poll loop.
 *
 * The caller polls dw_stream_fd() for reading (together with its other sockets) with a
 * timeout of at most dw_stream_timeout_ms(), and calls dw_stream_step() when the fd is
 * readable or the timeout expires. step reads what has arrived, decodes it and dispatches
 * at most max_changes changes to the handler (back-pressure: the rest stays in the socket
 * and in libpq's buffer; when a step used its whole budget, more may be buffered where the
 * fd does not signal it, so call step again without waiting; with max_changes 0 nothing is
 * read and only the timers are served), answers keepalives that ask for a reply at once,
 * sends standby status updates when due and, after the connection dropped, reconnects with
 * capped exponential backoff and jitter (dw_backoff) when due. A reconnect calls handler->reset
 * first: the consumer discards a partially received transaction, which the server sends again from
 * the confirmed position.
 *
 * Checkpoint rule: the flush position reported to the server is only what the caller
 * confirmed with dw_stream_confirm() (what it made durable). When the caller says it is
 * idle (nothing received is pending) and no transaction is open, the stream also confirms
 * the WAL end of the latest keepalive, so an idle publication pins no WAL.
 *
 * The first connection, in dw_stream_open(), blocks (so that configuration mistakes are
 * reported at once); reconnects are started and advanced by step without blocking (the fd
 * is -1 and the timeout short meanwhile; a connect that takes over 10 s is abandoned and
 * retried), then the checks and START_REPLICATION run as quick round trips. The checks:
 * server version 14 or newer, wal_level = logical, the publication exists, the slot exists
 * (or is created when asked), uses pgoutput, belongs to this database and is not
 * invalidated (wal_status 'lost': the stream stops with DW_ERR_STATE and says how to
 * recover). Failures of these checks are permanent (step returns the error); a failed
 * connection or a dropped stream is retried.
 *
 * Sessions are opened with DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601,
 * bytea_output hex and extra_float_digits 3, the text forms values.h relies on.
 *
 * Ownership: dw_stream_open() returns a new stream freed by dw_stream_close(); it copies
 * the option strings and the handler. The dw_txn and dw_change passed to the handler are
 * borrowed for the call (pgoutput.h).
 */
#ifndef DWASYNC_STREAM_H
#define DWASYNC_STREAM_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/lsn.h"
#include "dwasync/pgoutput.h"
#include "dwasync/rc.h"
#include "dwasync/values.h"

/* What the stream calls; a non-DW_OK return from begin/change/commit is returned by step. */
struct dw_stream_handler {
    void *user;
    dw_rc (*begin)(void *user, const struct dw_txn *t);
    dw_rc (*change)(void *user, const struct dw_change *c);
    dw_rc (*commit)(void *user, const struct dw_txn *t);
    void (*reset)(void *user); /* after a reconnect: drop any partially received transaction */
    /* A logical decoding message (the initial sync's watermarks); may be NULL. */
    dw_rc (*message)(void *user, const struct dw_logical_message *m);
};

struct dw_stream_options {
    const char *conninfo;       /* libpq conninfo of the source database (no replication=) */
    const char *slot;           /* replication slot name */
    const char *publication;    /* publication name */
    int64_t status_interval_ms; /* standby status update period; 0 = 10000 */
    int64_t reconnect_max_ms;   /* backoff ceiling; 0 = 30000 */
    bool create_slot;           /* create the slot when it does not exist */
    struct dw_types *types;     /* borrowed, may be NULL: refreshed from pg_type on connect */
    const char *record_path;    /* tests: append every received XLogData frame to this file */
};

struct dw_stream;

/* Pattern for slot names: 1-63 of [a-z0-9_]. */
bool dw_stream_slot_name_ok(const char *name);

/* Pattern for publication names: 1-63 of [a-z0-9_], not starting with a digit. */
bool dw_stream_publication_name_ok(const char *name);

/*
 * Connects with the session settings above; replication = true adds replication=database.
 * application_name names the connection in pg_stat_activity. *out set on success.
 */
dw_rc dw_stream_connect(const char *conninfo, bool replication, const char *application_name,
                        PGconn **out);

/*
 * Creates the publication (FOR ALL TABLES when ntables is 0, else FOR TABLE the given
 * "schema.table" names) over a normal connection. DW_ERR_EXISTS if it already exists.
 */
dw_rc dw_stream_create_publication(const char *conninfo, const char *publication,
                                   const char *const *tables, size_t ntables);

/*
 * Creates a pgoutput slot over a replication connection. With export_snapshot the exported
 * snapshot name is returned in *snapshot (caller frees; valid while conn stays idle), else
 * snapshot may be NULL. *consistent_point receives the slot's consistent point.
 */
dw_rc dw_stream_create_slot(PGconn *repl, const char *slot, bool export_snapshot,
                            dw_lsn *consistent_point, char **snapshot);

/* Drops a slot (waiting for it to become inactive); DW_OK when it does not exist. */
dw_rc dw_stream_drop_slot(PGconn *repl, const char *slot);

/*
 * Validates the options and connects for the first time (so configuration mistakes are
 * reported at once). A connection failure is not an error here: the stream starts
 * disconnected and retries. *out set on success.
 */
dw_rc dw_stream_open(const struct dw_stream_options *o, const struct dw_stream_handler *h,
                     struct dw_stream **out);

/* The socket to poll for reading, -1 while disconnected. */
int dw_stream_fd(const struct dw_stream *s);

/* Does the work that is due without blocking (see the banner); DW_OK or a permanent error. */
dw_rc dw_stream_step(struct dw_stream *s, size_t max_changes);

/* Whether the last dw_stream_step() stopped because it had dispatched max_changes: more may
 * already be buffered, so the caller steps again without waiting for the socket. */
bool dw_stream_budget_spent(const struct dw_stream *s);

/* Milliseconds until step must be called even if the fd stays quiet (0 = now). */
int dw_stream_timeout_ms(const struct dw_stream *s);

/*
 * Records the caller's durable position (a commit's end LSN; never moves backwards) and
 * whether everything received so far is done (idle). Reported with the next status update.
 */
void dw_stream_confirm(struct dw_stream *s, dw_lsn flushed, bool idle);

/*
 * Everything in the WAL before this position has been received and dispatched: the end of
 * the last commit, or the latest keepalive's WAL end while no transaction is open.
 */
dw_lsn dw_stream_received_lsn(const struct dw_stream *s);

/* The server's WAL end when the stream first connected (0 before): for --until-caught-up. */
dw_lsn dw_stream_start_lsn(const struct dw_stream *s);

/* The flush position last sent to the server. */
dw_lsn dw_stream_reported_lsn(const struct dw_stream *s);

/* Times the stream started streaming again after its connection was lost. */
uint64_t dw_stream_reconnects(const struct dw_stream *s);

/* True while connected and streaming. */
bool dw_stream_connected(const struct dw_stream *s);

/*
 * Decodes a recording made with record_path, offline: the file is a sequence of frames, each
 * a 4-byte big-endian length and the bytes; a frame is an XLogData message as received
 * ('w' + 24-byte header + pgoutput message) or a user type ('y', oid, kind, base oid as in
 * dw_types_add, recorded at each connect) which is added to types (may be NULL). A
 * truncated file or a malformed frame is DW_ERR_PROTOCOL; handler errors are passed on.
 */
dw_rc dw_stream_replay(const char *path, struct dw_types *types,
                       const struct dw_pgoutput_handler *h);

/*
 * Sends a final status update when connected and ends the stream with the server (for at
 * most 5 s): once it returns, the slot is inactive and confirmed where the stream last
 * reported. Closes and frees; NULL is accepted.
 */
void dw_stream_close(struct dw_stream *s);

#endif

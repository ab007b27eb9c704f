/*
 * runner.h - `dwasync run`: the daemon that keeps one integration job flowing.
 *
 * One process, one thread, one event loop (loop.h), which the run owns. Its tenants are
 * curl's sockets and timer (the sink, dw_sink_use_loop), the signal self-pipe and the
 * metrics listener; the replication stream and the control connection (LISTEN for replay
 * requests) are watched turn by turn, as their sockets change with reconnects. Per turn
 * it reads changes while the pipeline has room, advances the pipeline, confirms to the slot
 * what the pipeline has made durable, and keeps systemd and the metrics informed.
 *
 * Life of a run: connect to the control database, take the job's HA lock (or wait as a
 * standby), wait while the job is paused or stopped, load the maps, run a pending initial
 * sync through the snapshot path, stream. "job stop" holds the job (in-flight writes finished
 * and confirmed, stream closed, lock kept) until it is started again, when the job and its
 * maps are read afresh, as they are for a failed job started again; a dropped job ends the
 * run. SIGTERM/SIGINT finish what is in
 * flight (bounded by DW_RUNNER_DRAIN_MS), confirm what is safe and return DW_OK; SIGHUP
 * reloads the config's log settings (maps cannot change while a job runs) and checks the
 * publication at once.
 *
 * Faults: a broken connection is retried with capped, jittered backoff (dw_backoff), one
 * warning per attempt: the stream reconnects by itself, the control and heartbeat sessions
 * are reset (LISTEN is issued again), and a lost lock session (a restarted server, a
 * terminated backend) starts the job again: in-flight writes are abandoned once Dataverse
 * has answered those already sent (bounded by DW_RUNNER_SETTLE_MS: one it applied later
 * would take back the same rows written again), the lock is taken again, the job is read
 * again (after the lock, never before) and streaming resumes from the slot's confirmed
 * position, which redelivers what was not confirmed (the apply is idempotent). Only another
 * runner holding the lock makes this one a standby; only a permanent error (configuration,
 * a check the server answered) ends the run.
 *
 * Publication: at start, every minute and on SIGHUP the runner checks that every mapped
 * table is still in the job's publication; a missing one fails the job (state `failed`
 * with the reason, shown by status, /healthz and dwasync.job_status) and the stream is
 * held until the job is started again.
 */
#ifndef DWASYNC_RUNNER_H
#define DWASYNC_RUNNER_H

#include <stdbool.h>

#include "dwasync/config.h"
#include "dwasync/rc.h"

/* Longest a stop waits for in-flight writes before giving up on them (they are replayed). */
#define DW_RUNNER_DRAIN_MS 30000

/* Longest the writes on the wire are waited for before they are given up (a fault, or a stop
 * whose drain ran out), unless [dataverse] request_timeout_ms is shorter. */
#define DW_RUNNER_SETTLE_MS 60000

struct dw_runner_options {
    const char *config_path; /* the config file (re-read on SIGHUP); NULL: built-in defaults */
    const char *job_name;    /* NULL: the one job that is not stopped */
    bool until_caught_up;    /* return once everything committed before start is done */
};

/* Runs the job until stopped (or caught up). DW_OK on a clean stop. */
dw_rc dw_runner_run(const struct dw_runner_options *opts);

#endif

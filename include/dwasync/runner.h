/*
 * runner.h - `dwasync run`: the daemon that keeps one integration job flowing.
 *
 * One process, one thread, one event loop. The loop polls the replication stream, curl's
 * sockets (through dw_sink_run), the signal self-pipe, the control connection (LISTEN for
 * replay requests) and the metrics listener together. Per turn it reads changes while the
 * pipeline has room, advances the pipeline, confirms to the slot what the pipeline has made
 * durable, and keeps systemd and the metrics informed.
 *
 * Life of a run: connect to the control database, take the job's HA lock (or wait as a
 * standby), wait while the job is paused or stopped, load the maps, run a pending initial
 * sync through the snapshot path, stream until stopped. SIGTERM/SIGINT finish what is in
 * flight (bounded by DW_RUNNER_DRAIN_MS), confirm what is safe and return DW_OK; SIGHUP
 * reloads the config's log settings (maps cannot change while a job runs). Lost Postgres or
 * Dataverse connections are retried with backoff while the job stays active.
 */
#ifndef DWASYNC_RUNNER_H
#define DWASYNC_RUNNER_H

#include <stdbool.h>

#include "dwasync/config.h"
#include "dwasync/rc.h"

/* Longest a stop waits for in-flight writes before giving up on them (they are replayed). */
#define DW_RUNNER_DRAIN_MS 30000

struct dw_runner_options {
    const char *config_path; /* the config file (re-read on SIGHUP); NULL: built-in defaults */
    const char *job_name;    /* NULL: the one job that is not stopped */
    bool until_caught_up;    /* return once everything committed before start is done */
};

/* Runs the job until stopped (or caught up). DW_OK on a clean stop. */
dw_rc dw_runner_run(const struct dw_runner_options *opts);

#endif

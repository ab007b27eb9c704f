/*
 * daemon.h - what the long-running `dwasync run` process needs from its host: systemd
 * notifications (READY, STATUS, WATCHDOG, RELOADING, STOPPING), signal handling that fits
 * a single-threaded poll loop, and a progress reporter for initial syncs and bulk replays.
 *
 * Signals: dw_daemon_signals_install() makes TERM/INT request a stop and HUP request a
 * reload. The handlers only set a volatile sig_atomic_t flag and write one byte to a
 * non-blocking self-pipe (the pg_recvlogical pattern); the event loop polls the pipe's
 * read end with its other descriptors and calls dw_daemon_signals_take() when it is
 * readable (or on every turn: it is cheap). The pipe is process-global state; install
 * once, dw_daemon_signals_restore() puts the default handlers back (tests, exec).
 *
 * systemd: every notify call is a no-op outside systemd ($NOTIFY_SOCKET unset), so the
 * daemon calls them unconditionally. The watchdog is a caller-owned struct: it reads the
 * interval systemd asked for (WatchdogSec=) and pings at half of it.
 *
 * Progress: a caller-owned struct dw_progress, no heap. On a terminal it redraws one live
 * line on stderr (at most 4 times a second); elsewhere (systemd, pipes) it writes a log
 * line every report_interval_ms. The math (rate, ETA) is exposed for tests.
 *
 * Backoff: a caller-owned struct dw_backoff, no heap, paces the retries of a broken
 * connection: capped exponential delays with jitter (half fixed, half random), so runners
 * that lost the same server do not all knock at the same moment when it comes back.
 */
#ifndef DWASYNC_DAEMON_H
#define DWASYNC_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Bits returned by dw_daemon_signals_take(). */
#define DW_SIGNAL_STOP   1u /* SIGTERM or SIGINT: finish the current window and exit */
#define DW_SIGNAL_RELOAD 2u /* SIGHUP: re-read the config and table maps */

/*
 * Installs the TERM/INT/HUP handlers and the self-pipe; *out_fd is the read end to poll
 * for POLLIN (borrowed; closed by dw_daemon_signals_restore). Calling it twice returns
 * the same descriptor.
 */
dw_rc dw_daemon_signals_install(int *out_fd);

/* Returns and clears the pending DW_SIGNAL_* bits, draining the self-pipe. */
unsigned dw_daemon_signals_take(void);

/* True once a stop was requested (not cleared by dw_daemon_signals_take). */
bool dw_daemon_stop_requested(void);

/* Restores the default handlers and closes the self-pipe. */
void dw_daemon_signals_restore(void);

/* True when $NOTIFY_SOCKET is set, i.e. the process runs as a Type=notify service. */
bool dw_daemon_under_systemd(void);

/* READY=1 with a STATUS line: maps loaded, connections up, the loop is about to start. */
void dw_daemon_notify_ready(const char *status);

/* STATUS=... (shown by `systemctl status`); printf-style, truncated at 200 bytes. */
void dw_daemon_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* RELOADING=1 at the start of a SIGHUP reload; call dw_daemon_notify_ready() when done. */
void dw_daemon_notify_reloading(void);

/* STOPPING=1 when shutdown begins. */
void dw_daemon_notify_stopping(void);

/* Watchdog state; caller-owned, filled by dw_watchdog_init. */
struct dw_watchdog {
    bool enabled;
    uint64_t interval_ms; /* ping period: half of WatchdogSec */
    uint64_t last_ms;     /* monotonic time of the last ping */
};

/* Reads WatchdogSec= through sd_watchdog_enabled(); disabled outside systemd. */
void dw_watchdog_init(struct dw_watchdog *w, uint64_t now_ms);

/* Milliseconds the loop may sleep before the next ping is due; -1 when disabled. */
int dw_watchdog_timeout_ms(const struct dw_watchdog *w, uint64_t now_ms);

/* Sends WATCHDOG=1 when a ping is due. Call from every loop turn, never from a timer. */
void dw_watchdog_tick(struct dw_watchdog *w, uint64_t now_ms);

/* Reconnect pacing of one connection; caller-owned, filled by dw_backoff_init. */
struct dw_backoff {
    uint64_t min_ms;     /* the first delay (before jitter) */
    uint64_t max_ms;     /* the cap */
    uint64_t next_ms;    /* the next delay before jitter */
    uint64_t due_ms;     /* monotonic time of the next attempt; 0 when none is scheduled */
    uint64_t failures;   /* attempts that failed since the last success */
    uint64_t reconnects; /* successful reconnects since init (for status and metrics) */
};

/* Delays start at min_ms and double up to max_ms (max_ms < min_ms is raised to min_ms). */
void dw_backoff_init(struct dw_backoff *b, uint64_t min_ms, uint64_t max_ms);

/*
 * Records a failure at now_ms and schedules the next attempt after a delay d/2 + rand(d/2),
 * d the current step (which then doubles, capped). Returns the delay chosen.
 */
uint64_t dw_backoff_failed(struct dw_backoff *b, uint64_t now_ms);

/* True when no attempt is scheduled or its time has come. */
bool dw_backoff_due(const struct dw_backoff *b, uint64_t now_ms);

/* Milliseconds until the next attempt (0 when due or none is scheduled). */
int dw_backoff_timeout_ms(const struct dw_backoff *b, uint64_t now_ms);

/* Records a success: the next failure starts again from min_ms; counts a reconnect when
 * failures preceded it. */
void dw_backoff_succeeded(struct dw_backoff *b);

/* Progress of a long piece of work (rows done out of a known or unknown total). */
struct dw_progress {
    char what[64];  /* e.g. "initial sync of \"custtable\"" (truncated) */
    uint64_t total; /* 0 when unknown */
    uint64_t done;
    uint64_t start_ms;           /* monotonic */
    uint64_t last_report_ms;     /* when the last line was written */
    uint64_t report_interval_ms; /* between log lines (not on a terminal) */
    bool live;                   /* redraw one terminal line instead of logging */
    FILE *out;                   /* terminal stream for the live line (borrowed) */
    bool drawn;                  /* a live line is on screen */
};

/*
 * Starts a report. live: out is a terminal (isatty) and not under systemd; log lines
 * every report_interval_ms otherwise (10 s when 0).
 */
void dw_progress_init(struct dw_progress *p, const char *what, uint64_t total, FILE *out,
                      uint64_t report_interval_ms, uint64_t now_ms);

/* Records progress (done is absolute, not a delta) and reports when a report is due. */
void dw_progress_update(struct dw_progress *p, uint64_t done, uint64_t now_ms);

/* Writes the final line (always) and ends the live line with a newline. */
void dw_progress_finish(struct dw_progress *p, uint64_t now_ms);

/* Average rate since start in rows per second (0 before any time has passed). */
double dw_progress_rate(const struct dw_progress *p, uint64_t now_ms);

/* Seconds left at the average rate; -1 when unknown (no total, no rate yet). */
int64_t dw_progress_eta_seconds(const struct dw_progress *p, uint64_t now_ms);

/*
 * Appends the human line to out, e.g.
 * "initial sync: 1200/5000 rows (24.0%), 400 rows/s, eta 9s" (eta as 1h02m03s when long).
 */
void dw_progress_format(const struct dw_progress *p, uint64_t now_ms, struct dw_buf *out);

#endif

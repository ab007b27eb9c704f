/*
 * metrics.h - the metrics registry, its Prometheus text exposition, and the optional HTTP
 * listener ([metrics] listen) that serves /metrics and /healthz.
 *
 * Registry: families (a name, counter or gauge, a HELP line) hold series keyed by their
 * label set, in uthash tables. Names are checked when a family is defined: they start with
 * "dwasync_", counters end in "_total", units are spelled in the name (_bytes, _seconds).
 * Label values are escaped on output, never trusted. A family holds at most
 * DW_METRICS_MAX_SERIES series so a runaway label (say, a table per tenant) cannot grow
 * memory without bound; past it an update fails with DW_ERR_RANGE and is logged once.
 * The registry is caller-owned (dw_metrics_new / dw_metrics_free); the strings passed in
 * are copied.
 *
 * Listener: the daemon is single-threaded, so the listener is libmicrohttpd in external
 * polling mode with epoll (MHD_USE_EPOLL, no internal thread): dw_metrics_server_fd() is
 * one descriptor the event loop polls for POLLIN next to the replication socket and curl's,
 * dw_metrics_server_timeout_ms() bounds the poll timeout, dw_metrics_server_run() serves
 * whatever is ready. Requests are answered inside that call on the loop's thread, so the
 * registry needs no lock and a scrape always sees a consistent state between two windows.
 * (An internal MHD thread would have needed a mutex around every counter update on the hot
 * path.) Responses are small and built in memory; a slow client cannot block the loop
 * because MHD writes non-blocking and keeps the rest for the next turn. A client address
 * holds at most 4 of the 32 connections, and a connection lasts at most 10 s in all (idle
 * or trickling), so slow clients cannot starve /healthz.
 */
#ifndef DWASYNC_METRICS_H
#define DWASYNC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Most series one family may hold. */
#define DW_METRICS_MAX_SERIES 10000

/* Names of the metrics the pipeline, sink and source update (defined by
 * dw_metrics_define_standard). Labels are listed after each name. */
/* counters */
#define DW_M_CHANGES_RECEIVED "dwasync_changes_received_total"              /* job, table, class */
#define DW_M_CHANGES_APPLIED  "dwasync_changes_applied_total"               /* job, table, class */
#define DW_M_CHANGES_PARKED   "dwasync_changes_parked_total"                /* job, table, class */
#define DW_M_REQUESTS         "dwasync_dataverse_requests_total"            /* job, status */
#define DW_M_THROTTLED        "dwasync_dataverse_throttled_total"           /* job (HTTP 429s) */
#define DW_M_RETRY_SLEEPS     "dwasync_dataverse_retry_sleeps_total"        /* job */
#define DW_M_RETRY_SLEEP_SECS "dwasync_dataverse_retry_sleep_seconds_total" /* job */
#define DW_M_TOKEN_RENEWALS   "dwasync_dataverse_token_renewals_total"      /* job */
#define DW_M_ERRORS           "dwasync_errors_total" /* job, table, class: error rows written */

/* updates not sent: every mapped column kept its value */
#define DW_M_CHANGES_UNCHANGED "dwasync_changes_unchanged_total" /* job */

/* gauges */
#define DW_M_SLOT_LAG_BYTES   "dwasync_slot_lag_bytes"                        /* job */
#define DW_M_SLOT_LAG_SECONDS "dwasync_slot_lag_seconds"                      /* job */
#define DW_M_LAST_COMMIT_TIME "dwasync_last_applied_commit_timestamp_seconds" /* job */
#define DW_M_WINDOW_ROWS      "dwasync_apply_window_rows"  /* job: rows in the last window */
#define DW_M_WINDOW_BYTES     "dwasync_apply_window_bytes" /* job */
#define DW_M_JOB_ACTIVE       "dwasync_job_active"         /* job: 1 active, 0 standby */
#define DW_M_RSS              "dwasync_process_resident_memory_bytes"
/* Copies under way (initial sync, `job resync`, `verify --repair`), all labelled job: */
#define DW_M_COPY_TABLES       "dwasync_copy_tables_pending" /* tables left to copy */
#define DW_M_COPY_ROWS         "dwasync_copy_rows_copied"    /* rows copied of those tables */
#define DW_M_COPY_ROWS_PLANNED "dwasync_copy_rows_planned"   /* rows they matched when queued */
/* The job's latest `dwasync verify` run (from dwasync.verify_run), all labelled job: */
#define DW_M_VERIFY_RUNNING "dwasync_verify_running"    /* 1 until it finishes (or dies) */
#define DW_M_VERIFY_ROWS    "dwasync_verify_rows_read"  /* source and Dataverse rows read */
#define DW_M_VERIFY_DRIFT   "dwasync_verify_drift_rows" /* missing, extra, different so far */
/* histograms (buckets DW_METRICS_SECONDS_BOUNDS) */
#define DW_M_APPLY_LATENCY "dwasync_commit_to_applied_seconds" /* job, map: commit to applied */

/* The "class" label: for received and applied changes the operation (insert, update,
 * delete, truncate); for parked changes the error class (e.g. "validation",
 * "missing_parent", "waiting"), and for errors the error class alone (parked rows that
 * failed, not those merely waiting behind one). The "table" label is "schema.table". */

/* The upper bounds of every histogram's buckets, in seconds (+Inf is implied). */
#define DW_METRICS_SECONDS_BOUNDS                                                                  \
    {                                                                                              \
        0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900                                      \
    }

enum dw_metric_type { DW_METRIC_COUNTER, DW_METRIC_GAUGE, DW_METRIC_HISTOGRAM };

struct dw_metrics;

/* A new empty registry; caller frees with dw_metrics_free. */
struct dw_metrics *dw_metrics_new(void);

/* Frees the registry and every series; accepts NULL. */
void dw_metrics_free(struct dw_metrics *m);

/*
 * Defines a family. DW_ERR_INVALID (logged) for a name that breaks the conventions;
 * defining the same name again with the same type is a no-op, with another type an error.
 */
dw_rc dw_metrics_define(struct dw_metrics *m, const char *name, enum dw_metric_type type,
                        const char *help);

/* Defines every DW_M_* family with its help text. */
dw_rc dw_metrics_define_standard(struct dw_metrics *m);

/*
 * Label sets are NULL-terminated arrays of name, value pairs, e.g.
 *   (const char *[]){"job", "crm", "table", "custtable", NULL}
 * or NULL for none. Order does not matter (the set is sorted). All strings are copied.
 */

/* Adds delta (>= 0) to a counter series, creating it at 0 first. */
dw_rc dw_metrics_inc(struct dw_metrics *m, const char *name, const char *const *labels,
                     double delta);

/* Sets a gauge series. */
dw_rc dw_metrics_set(struct dw_metrics *m, const char *name, const char *const *labels,
                     double value);

/* Adds one observation to a histogram series (its bucket, _sum and _count). */
dw_rc dw_metrics_observe(struct dw_metrics *m, const char *name, const char *const *labels,
                         double value);

/*
 * A series kept by the caller, for counting on the hot path: found (or made at 0) once by
 * dw_metrics_series(), then moved without its label set being rendered, sorted and hashed
 * again (a change is counted three times). Valid while the registry lives (series are never
 * removed). NULL, with the reason logged as dw_metrics_inc() would, when the family is not of
 * that type, the labels are malformed or the family is full.
 */
struct dw_metric_series;
struct dw_metric_series *dw_metrics_series(struct dw_metrics *m, const char *name,
                                           enum dw_metric_type type, const char *const *labels);

/* Adds delta (>= 0) to a counter's kept series; NULL is ignored. */
void dw_metric_series_inc(struct dw_metric_series *s, double delta);

/* Adds one observation to a histogram's kept series; NULL is ignored. */
void dw_metric_series_observe(struct dw_metric_series *s, double value);

/* Reads a series (tests, status); DW_ERR_NOT_FOUND when it does not exist. */
dw_rc dw_metrics_get(const struct dw_metrics *m, const char *name, const char *const *labels,
                     double *out);

struct dw_sink_stats;

/*
 * Adds what the sink counted since *seen to DW_M_REQUESTS (status "2xx", "4xx", "5xx"),
 * DW_M_THROTTLED, DW_M_RETRY_SLEEPS, DW_M_RETRY_SLEEP_SECS and DW_M_TOKEN_RENEWALS of job,
 * then copies now into *seen (caller-owned, zeroed before the first call). Call it when
 * the metrics are refreshed; counters that went backwards (a new sink) restart from 0.
 */
void dw_metrics_add_sink_stats(struct dw_metrics *m, const char *job,
                               const struct dw_sink_stats *now, struct dw_sink_stats *seen);

/* Sets DW_M_RSS from /proc/self/statm (done before every exposition). */
void dw_metrics_update_process(struct dw_metrics *m);

/*
 * Appends the Prometheus text exposition format (version 0.0.4) to out: families sorted by
 * name, each with # HELP and # TYPE lines, series sorted by label set.
 */
dw_rc dw_metrics_render(struct dw_metrics *m, struct dw_buf *out);

/* Appends value as Prometheus writes it: integers without a fraction, +Inf, -Inf, NaN. */
void dw_metrics_format_value(double value, struct dw_buf *out);

/* Appends s escaped for a label value (backslash, double quote, newline). */
void dw_metrics_escape_label(const char *s, struct dw_buf *out);

/* --- the HTTP listener ---------------------------------------------------------------- */

/* What /healthz reports; filled by the daemon's health callback. */
struct dw_health {
    bool job_active;   /* this process holds the job's lock and the job is active */
    bool stream_ok;    /* the replication stream is connected */
    bool dataverse_ok; /* the last Dataverse exchange succeeded (or a retry is pending) */
    char job[64];
    char detail[512]; /* optional free text, e.g. why the job is paused; no secrets */
};

/* Fills *out (zeroed by the caller's server before the call). ud is borrowed. */
typedef void (*dw_health_fn)(void *ud, struct dw_health *out);

struct dw_metrics_server;

/*
 * Parses "host:port" ("[::1]:9187" for IPv6; port 0 picks a free port) into a socket
 * address. DW_ERR_CONFIG with a message naming the value on failure.
 */
dw_rc dw_metrics_parse_listen(const char *listen, void *sockaddr_out, unsigned *len_out);

/*
 * Starts listening on listen. m and health/ud are borrowed and must outlive the server;
 * health may be NULL (then /healthz answers 200 while the server runs).
 */
dw_rc dw_metrics_server_start(const char *listen, struct dw_metrics *m, dw_health_fn health,
                              void *ud, struct dw_metrics_server **out);

/* The descriptor to poll for POLLIN (MHD's epoll descriptor). */
int dw_metrics_server_fd(const struct dw_metrics_server *s);

/* Longest poll timeout that keeps MHD's own timers honest; -1 when none is pending. */
int dw_metrics_server_timeout_ms(const struct dw_metrics_server *s);

/* Serves every ready request without blocking. */
dw_rc dw_metrics_server_run(struct dw_metrics_server *s);

/* The bound port (useful with port 0). */
unsigned dw_metrics_server_port(const struct dw_metrics_server *s);

/* Stops listening and frees the server; accepts NULL. */
void dw_metrics_server_free(struct dw_metrics_server *s);

#endif

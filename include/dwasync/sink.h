/*
 * sink.h - the Dataverse Web API client: what the pipeline hands writes to.
 *
 * The sink owns authentication (client secret or certificate), the curl multi handle and
 * its connections, throttling (429 Retry-After pauses the whole environment, AIMD
 * concurrency under x-ms-dop-hint), retries with backoff, bulk requests (UpsertMultiple
 * where the table supports it, else $batch) and isolation of the bad rows of a failed bulk
 * request. It is single-threaded and non-blocking: curl's sockets and timer are tenants of
 * an event loop (loop.h), the sink's own or the daemon's (dw_sink_use_loop()), and
 * dw_sink_run() runs one turn of it, calling back the loop's other tenants too.
 *
 * What a write and its result are (struct dw_write, struct dw_write_result, the error
 * classes) is the contract in write.h, shared with mapping, pipeline and control.
 *
 * Ownership: dw_sink_submit() takes the contents of each struct dw_write (strings and JSON
 * references) and returns the array to the caller empty. The sink never modifies the key,
 * body and refs it is given, so a caller may keep (and later resubmit) references. The done
 * callback is called exactly once per submitted write, from inside dw_sink_run() (never from
 * submit), with a result whose pointers are borrowed for the duration of the callback.
 *
 * Ordering: writes in flight at the same time may complete in any order. The pipeline
 * never submits two writes to the same row at once and waits for a sequence level to
 * complete before submitting the next, so the sink need not order anything. The one
 * exception is an atomic group (dw_sink_submit_atomic()): its writes go in one $batch
 * changeset in the order given.
 */
#ifndef DWASYNC_SINK_H
#define DWASYNC_SINK_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/config.h"
#include "dwasync/rc.h"
#include "dwasync/write.h"

struct dw_sink;
struct dw_loop;

/* Throttling and traffic counters for status and metrics. */
struct dw_sink_stats {
    uint64_t requests; /* HTTP requests sent (bulk and batch count once) */
    uint64_t responses_2xx, responses_4xx, responses_5xx;
    uint64_t throttled;      /* 429 responses */
    uint64_t retries;        /* requests retried after a transient failure */
    uint64_t retry_sleep_ms; /* total time spent backing off */
    uint64_t probes;         /* WhoAmI requests asking whether an outage is over */
    uint64_t token_renewals;
    uint64_t rows_applied, rows_rejected;
    int concurrency;            /* current concurrency limit */
    int in_flight;              /* requests in flight now */
    int64_t throttled_until_ms; /* CLOCK_MONOTONIC ms until which requests pause; 0 if none */
};

/* Creates a sink from the [dataverse] config; reads secrets, validates the URL. */
dw_rc dw_sink_new(const struct dw_config *cfg, dw_write_done_fn done, void *user,
                  struct dw_sink **out);

/* Stops everything in flight (without calling callbacks) and frees the sink; NULL is fine. */
void dw_sink_free(struct dw_sink *sink);

/*
 * Queues n writes (each to a different row) and takes their contents; write_users[i] comes
 * back in the done callback. Returns DW_ERR_INVALID only for a malformed write (nothing
 * queued in that case).
 */
dw_rc dw_sink_submit(struct dw_sink *sink, struct dw_write *writes, void *const *write_users,
                     size_t n);

/*
 * Queues n writes (1..DW_SINK_ATOMIC_MAX, each to a different row) as one atomic group: one
 * $batch changeset holding them in the order given (parents first), applied all or none,
 * never as UpsertMultiple. A reference (key part or bind) to a row written earlier in the
 * group that does not exist yet becomes a Content-ID reference ("$n"), so a new child is
 * created (POST) under a parent created in the same changeset. A retryable failure sends
 * the whole changeset again (looked up afresh when it creates rows with POST, in case the
 * lost answer hid a commit). On a permanent failure the failing write gets its own error
 * and every other write is rejected with class DW_ERRCLASS_CONFLICT and the message
 * "rolled back: <set>(<key>) in the same atomic group failed: <error>", naming the failed
 * row as the mapping's target id does. Ownership and callbacks as dw_sink_submit();
 * DW_ERR_INVALID (nothing queued) for a malformed write or a bad n.
 */
dw_rc dw_sink_submit_atomic(struct dw_sink *sink, struct dw_write *writes, void *const *write_users,
                            size_t n);

/* Writes submitted whose done callback has not run yet. */
size_t dw_sink_pending(const struct dw_sink *sink);

/*
 * Lets the write requests already sent finish before the sink is freed: a request given up
 * while on the wire may still be applied by Dataverse, after the same rows written again
 * (from the slot) and newer ones, which it would take back. Starts nothing more, drops the
 * answers without a callback, and runs turns of the loop until no write is on the wire or
 * deadline_ms (dw_clock_ms()) has come; a deadline already past looks once without waiting.
 * Returns the writes still on the wire. The sink is then only good for dw_sink_free().
 */
size_t dw_sink_settle(struct dw_sink *sink, int64_t deadline_ms);

/*
 * Drives transfers: starts queued requests, runs one turn of the loop (waiting up to
 * timeout_ms for curl's sockets, the sink's deadlines and the loop's other tenants), and
 * runs the done callbacks of finished writes.
 */
dw_rc dw_sink_run(struct dw_sink *sink, int timeout_ms);

/*
 * Moves the sink's tenants (curl's sockets and timer, its own deadlines, its wake-up
 * descriptor) from its private loop onto loop, which the caller owns and must keep until
 * after dw_sink_free(). Call it right after dw_sink_new(), before any write. From then on
 * dw_sink_run() runs turns of that loop, calling back whatever else is registered on it.
 */
void dw_sink_use_loop(struct dw_sink *sink, struct dw_loop *loop);

/* Wakes a dw_sink_run() that is waiting (for signal handlers: async-signal-safe). */
void dw_sink_wakeup(struct dw_sink *sink);

/* Copies the counters. */
void dw_sink_get_stats(const struct dw_sink *sink, struct dw_sink_stats *out);

/* Blocking: WhoAmI, for health checks; *user_id (caller frees) may be NULL. */
dw_rc dw_sink_whoami(struct dw_sink *sink, char **user_id);

/*
 * Blocking: one page of GET <api base>/<path> (e.g. "accounts?$select=name"), or of an
 * absolute next link a previous page gave, with auth and retries. On 200 *page is a new
 * reference to the answer (a collection's rows in "value", at most the server's page:
 * 5,000 rows in Dataverse) and *next_link (caller frees) the next page's link, NULL on the
 * last page; the link is removed from *page. A next link outside the configured
 * environment is never followed: DW_ERR_INVALID when given, DW_ERR_PROTOCOL when answered.
 * On 4xx returns DW_ERR_NOT_FOUND (404) or DW_ERR_HTTP, logged. Memory: one page.
 */
dw_rc dw_sink_get_page(struct dw_sink *sink, const char *path_or_next_link, json_t **page,
                       char **next_link);

/*
 * Blocking: GET <api base>/<path_and_query> (e.g. "EntityDefinitions(LogicalName='account')")
 * with auth and retries, a collection's pages joined into one "value" (dw_sink_get_page()
 * followed to the last page: for small sets such as metadata; read large ones a page at a
 * time). *out is a new reference on 200; on 4xx returns DW_ERR_NOT_FOUND (404) or
 * DW_ERR_HTTP, logged.
 */
dw_rc dw_sink_get_json(struct dw_sink *sink, const char *path_and_query, json_t **out);

#endif

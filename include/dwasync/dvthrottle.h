/*
 * dvthrottle.h - the arithmetic of politeness toward Dataverse: AIMD concurrency,
 * exponential backoff with jitter, Retry-After parsing, and how many requests a level's rows
 * go in.
 *
 * Pure functions over a caller-owned struct dw_aimd; the sink holds one per environment.
 */
#ifndef DWASYNC_DVTHROTTLE_H
#define DWASYNC_DVTHROTTLE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Additive-increase, multiplicative-decrease window of requests in flight. */
struct dw_aimd {
    double window; /* current window; the limit is its floor */
    int max;       /* [dataverse] max_concurrency */
    int hint;      /* last x-ms-dop-hint, 0 if none seen */
};

/* Starts low (2, or max if smaller): the server's appetite is learnt, not assumed. */
void dw_aimd_init(struct dw_aimd *a, int max);

/* A healthy response: grows the window by about one per window's worth of responses. */
void dw_aimd_success(struct dw_aimd *a);

/* A 429: halves the window (never below 1). */
void dw_aimd_throttled(struct dw_aimd *a);

/* Records the server's x-ms-dop-hint (ignored unless positive). */
void dw_aimd_set_hint(struct dw_aimd *a, int hint);

/* Requests allowed in flight: floor(window) within [1, min(max, hint)]. */
int dw_aimd_limit(const struct dw_aimd *a);

/*
 * How many requests n rows of one table and level go in, at most batch rows each: as few as
 * batch allows, or more, over the free request slots, while each still carries
 * DW_REQUEST_SERVER_MS of server time or more at row_ms a row (the server's time per row as
 * measured; 0 when not known, then as few as batch allows). A level is done when its last
 * request is: one request of 640 expensive rows would leave the budget of concurrent server
 * time unused for seconds while the next level waits, and requests that carry what the
 * execution budget allows per request leave the request budget unspent first. Rows so cheap
 * that batch of them carry less than that (0.2 ms each at 1,000) are never spread. 0 when n
 * is 0.
 */
#define DW_REQUEST_SERVER_MS 200.0 /* Dataverse's defaults: 1,200,000 ms per 6,000 requests */
size_t dw_requests_for(size_t n, size_t batch, double row_ms, int free_slots);

/*
 * Delay before retry number attempt (1 for the first retry): base * 2^(attempt-1), capped
 * at cap, then "equal jitter": half of it fixed, the other half scaled by rnd/UINT32_MAX.
 */
int64_t dw_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd);

/*
 * Parses a Retry-After value, delta-seconds or an HTTP-date (relative to now), into
 * milliseconds (>= 0). Returns -1 when value is NULL or unparsable.
 */
int64_t dw_retry_after_ms(const char *value, time_t now);

#endif

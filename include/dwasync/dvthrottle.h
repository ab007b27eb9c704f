/*
 * dvthrottle.h - the arithmetic of politeness toward Dataverse: AIMD concurrency,
 * exponential backoff with jitter, and Retry-After parsing.
 *
 * Pure functions over a caller-owned struct dw_aimd; the sink holds one per environment.
 */
#ifndef DWASYNC_DVTHROTTLE_H
#define DWASYNC_DVTHROTTLE_H

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

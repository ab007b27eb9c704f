/*
 * clock.h - the two clocks dwasync uses: a monotonic one for timeouts, windows and
 * backoff (never jumps), and the wall clock for timestamps people read.
 */
#ifndef DWASYNC_CLOCK_H
#define DWASYNC_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds (CLOCK_MONOTONIC); only differences mean anything. */
int64_t dw_clock_ms(void);

/* Wall-clock microseconds since the Unix epoch. */
int64_t dw_clock_wall_us(void);

/* Microseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch. */
#define DW_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/*
 * A PostgreSQL timestamp (microseconds since 2000-01-01) as microseconds since the Unix
 * epoch. PostgreSQL's range ends in 294276 AD, past what int64 holds from 1970: later
 * values (and 'infinity') saturate at INT64_MAX instead of overflowing.
 */
int64_t dw_clock_pg_to_unix_us(int64_t pg_us);

#endif

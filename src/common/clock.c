/*
 * The monotonic and wall clocks over clock_gettime() (see clock.h), and the conversion of
 * PostgreSQL timestamps (microseconds since 2000-01-01) to Unix time.
 */
#include "dwasync/clock.h"

#include <stdint.h>
#include <time.h>

int64_t dw_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dw_clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t dw_clock_pg_to_unix_us(int64_t pg_us)
{
    return pg_us > INT64_MAX - DW_PG_EPOCH_OFFSET_US ? INT64_MAX : pg_us + DW_PG_EPOCH_OFFSET_US;
}

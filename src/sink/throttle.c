/*
 * The arithmetic of throttling (see dvthrottle.h): the AIMD concurrency window, exponential
 * backoff with jitter, Retry-After in seconds or HTTP-date form, and the number of requests
 * for a level's rows. Pure functions; the caller passes the time, the random number and the
 * measured server time.
 */
#include "dwasync/dvthrottle.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dw_aimd_init(struct dw_aimd *a, int max)
{
    a->max = max < 1 ? 1 : max;
    a->hint = 0;
    a->window = a->max < 2 ? a->max : 2;
}

static int ceiling(const struct dw_aimd *a)
{
    return a->hint > 0 && a->hint < a->max ? a->hint : a->max;
}

void dw_aimd_success(struct dw_aimd *a)
{
    a->window += 1.0 / a->window;
    /* Growing past the ceiling would only delay the shrink after the next 429. */
    if (a->window > ceiling(a))
        a->window = ceiling(a);
}

void dw_aimd_throttled(struct dw_aimd *a)
{
    a->window /= 2;
    if (a->window < 1)
        a->window = 1;
}

void dw_aimd_set_hint(struct dw_aimd *a, int hint)
{
    if (hint > 0)
        a->hint = hint;
    if (a->window > ceiling(a))
        a->window = ceiling(a);
}

int dw_aimd_limit(const struct dw_aimd *a)
{
    int limit = (int)a->window;
    if (limit > ceiling(a))
        limit = ceiling(a);
    return limit < 1 ? 1 : limit;
}

size_t dw_requests_for(size_t n, size_t batch, double row_ms, int free_slots)
{
    if (batch == 0)
        batch = 1;
    size_t k = (n + batch - 1) / batch;
    if (row_ms <= 0 || free_slots <= 0 || (size_t)free_slots <= k)
        return k;
    double fewest = DW_REQUEST_SERVER_MS / row_ms; /* rows of one request */
    if (fewest >= (double)n)
        return k;
    size_t min_rows = (size_t)ceil(fewest);
    size_t spread = n / (min_rows ? min_rows : 1);
    if (spread > (size_t)free_slots)
        spread = (size_t)free_slots;
    return spread > k ? spread : k;
}

int64_t dw_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d *= 2;
    if (d > cap_ms)
        d = cap_ms;
    int64_t half = d / 2;
    return d - half + (int64_t)((double)half * ((double)rnd / (double)UINT32_MAX));
}

int64_t dw_retry_after_ms(const char *value, time_t now)
{
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        double secs = strtod(value, &end);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end != '\0' || secs < 0 || secs > 86400.0 * 7)
            return -1;
        return (int64_t)(secs * 1000.0);
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL)
        return -1;
    time_t at = timegm(&tm);
    return at > now ? (int64_t)(at - now) * 1000 : 0;
}

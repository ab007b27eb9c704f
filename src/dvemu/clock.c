/* dvemu's clock: the one time source of everything time-based in the emulator (token
 * lifetimes and client-assertion windows, service protection windows and Retry-After, the
 * server time a request costs, createdon/modifiedon).
 *
 * With --clock real it is the machine's clocks. With --clock manual it stands still from the
 * moment dvemu starts until a test moves it (POST /_dvemu/clock), so a test that checks a
 * token expiry or a sliding window never races the machine: it says when time passes. A
 * request that costs server time (a "slow" fault) then waits until the clock has been moved
 * past its end, and the test can see how many requests are waiting. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "internal.h"

void emu_clock_init(struct emu_clock *c, bool manual)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->moved, NULL);
    c->manual = manual;
    c->offset_ms = 0;
    c->waiting = 0;
    c->stopping = false;
    c->mono0_ms = dw_clock_ms();
    c->wall0_ms = dw_clock_wall_us() / 1000;
    if (manual) /* on a whole second, so token lifetimes (in seconds) end on the millisecond */
        c->wall0_ms -= c->wall0_ms % 1000;
}

void emu_clock_cleanup(struct emu_clock *c)
{
    pthread_cond_destroy(&c->moved);
    pthread_mutex_destroy(&c->lock);
}

int64_t emu_clock_ms(struct emu_clock *c)
{
    if (!c->manual)
        return dw_clock_ms();
    pthread_mutex_lock(&c->lock);
    int64_t v = c->mono0_ms + c->offset_ms;
    pthread_mutex_unlock(&c->lock);
    return v;
}

int64_t emu_clock_wall_ms(struct emu_clock *c)
{
    if (!c->manual)
        return dw_clock_wall_us() / 1000;
    pthread_mutex_lock(&c->lock);
    int64_t v = c->wall0_ms + c->offset_ms;
    pthread_mutex_unlock(&c->lock);
    return v;
}

void emu_clock_sleep(struct emu_clock *c, int64_t ms)
{
    if (ms <= 0)
        return;
    if (!c->manual) {
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        return;
    }
    pthread_mutex_lock(&c->lock);
    int64_t until = c->offset_ms + ms;
    c->waiting++;
    while (c->offset_ms < until && !c->stopping)
        pthread_cond_wait(&c->moved, &c->lock);
    c->waiting--;
    pthread_mutex_unlock(&c->lock);
}

void emu_clock_release(struct emu_clock *c)
{
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->moved);
    pthread_mutex_unlock(&c->lock);
}

dw_rc emu_clock_move(struct emu_clock *c, int64_t advance_ms, int64_t set_ms, bool set, char **why)
{
    dw_rc rc = DW_OK;
    if (!c->manual) {
        *why = dw_strdup("the clock is the machine's: start dvemu with --clock manual to move it");
        return DW_ERR_STATE;
    }
    pthread_mutex_lock(&c->lock);
    int64_t to = set ? set_ms : c->offset_ms + advance_ms;
    if (advance_ms < 0 || to < c->offset_ms) {
        *why =
            dw_asprintf("the clock only moves forward (it reads %lld ms)", (long long)c->offset_ms);
        rc = DW_ERR_INVALID;
        goto out;
    }
    c->offset_ms = to;
    pthread_cond_broadcast(&c->moved);
out:
    pthread_mutex_unlock(&c->lock);
    return rc;
}

json_t *emu_clock_json(struct emu_clock *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t wall = (c->manual ? c->wall0_ms + c->offset_ms : dw_clock_wall_us() / 1000);
    time_t secs = (time_t)(wall / 1000);
    struct tm tm;
    char iso[40], frac[8];
    gmtime_r(&secs, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof frac, ".%03dZ", (int)(wall % 1000));
    size_t n = strlen(iso);
    snprintf(iso + n, sizeof iso - n, "%s", frac);
    json_t *j =
        json_pack("{s:s, s:I, s:I, s:s, s:i}", "mode", c->manual ? "manual" : "real", "now_ms",
                  (json_int_t)(c->manual ? c->offset_ms : dw_clock_ms() - c->mono0_ms), "wall_s",
                  (json_int_t)(wall / 1000), "wall", iso, "waiting", c->waiting);
    pthread_mutex_unlock(&c->lock);
    return j;
}

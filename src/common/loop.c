/*
 * The event loop (see loop.h): epoll for descriptors, a short list of timers scanned per
 * turn (a daemon has a handful: curl's one timeout, the runner's ticks), and a watcher
 * table indexed by descriptor so that an event already returned by epoll_wait() for a
 * descriptor unregistered meanwhile finds no watcher and is dropped.
 */
#include "dwasync/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <utlist.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/log.h"

/* Events taken from epoll per turn; more wait for the next turn (level-triggered). */
#define EVENTS_PER_TURN 64

struct watcher {
    dw_loop_fd_fn fn;
    void *user;
    unsigned events;
};

struct dw_loop_timer {
    struct dw_loop *loop;
    dw_loop_timer_fn fn;
    void *user;
    bool active;
    int64_t due;
    int64_t period;
    uint64_t fired_turn; /* the turn it last fired in: at most once per turn */
    struct dw_loop_timer *prev, *next;
};

struct dw_loop_watch {
    struct dw_loop *loop;
    dw_loop_watch_fd_fn fd_fn;
    unsigned events;
    dw_loop_fd_fn fn;
    void *user;
    int fd; /* registered for the turn running, or -1 */
    struct dw_loop_watch *prev, *next;
};

struct dw_loop {
    int epfd;
    dw_loop_clock_fn now;
    struct watcher **watchers; /* indexed by fd */
    size_t nwatchers;
    struct dw_loop_timer *timers;
    struct dw_loop_watch *watches;
    uint64_t turn;
    bool stopped;
};

struct dw_loop *dw_loop_new(dw_loop_clock_fn now)
{
    struct dw_loop *loop = dw_calloc(1, sizeof *loop);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        DW_ERROR("epoll_create1 failed: %s", strerror(errno));
        abort();
    }
    loop->now = now ? now : dw_clock_ms;
    return loop;
}

void dw_loop_free(struct dw_loop *loop)
{
    if (loop == NULL)
        return;
    for (size_t i = 0; i < loop->nwatchers; i++)
        free(loop->watchers[i]);
    free(loop->watchers);
    struct dw_loop_timer *t, *tmp;
    DL_FOREACH_SAFE(loop->timers, t, tmp)
    {
        DL_DELETE(loop->timers, t);
        t->active = false;
    }
    close(loop->epfd);
    free(loop);
}

static uint32_t to_epoll(unsigned events)
{
    return (events & DW_LOOP_IN ? EPOLLIN : 0) | (events & DW_LOOP_OUT ? EPOLLOUT : 0);
}

static unsigned from_epoll(uint32_t ev)
{
    return (ev & EPOLLIN ? DW_LOOP_IN : 0) | (ev & EPOLLOUT ? DW_LOOP_OUT : 0) |
           (ev & (EPOLLERR | EPOLLHUP) ? DW_LOOP_ERR : 0);
}

static struct watcher *watcher_of(const struct dw_loop *loop, int fd)
{
    return fd >= 0 && (size_t)fd < loop->nwatchers ? loop->watchers[fd] : NULL;
}

bool dw_loop_has_fd(const struct dw_loop *loop, int fd)
{
    return watcher_of(loop, fd) != NULL;
}

static dw_rc epoll_set(struct dw_loop *loop, int op, int fd, unsigned events)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
    if (epoll_ctl(loop->epfd, op, fd, &ev) != 0) {
        DW_ERROR("cannot watch descriptor %d: %s", fd, strerror(errno));
        return DW_ERR_IO;
    }
    return DW_OK;
}

dw_rc dw_loop_add_fd(struct dw_loop *loop, int fd, unsigned events, dw_loop_fd_fn fn, void *user)
{
    if (fd < 0)
        return DW_ERR_INVALID;
    if (watcher_of(loop, fd))
        return DW_ERR_EXISTS;
    dw_rc rc = epoll_set(loop, EPOLL_CTL_ADD, fd, events);
    if (rc != DW_OK)
        return rc;
    if ((size_t)fd >= loop->nwatchers) {
        size_t n = (size_t)fd + 16;
        loop->watchers = dw_realloc(loop->watchers, n * sizeof *loop->watchers);
        memset(loop->watchers + loop->nwatchers, 0, (n - loop->nwatchers) * sizeof *loop->watchers);
        loop->nwatchers = n;
    }
    struct watcher *w = dw_calloc(1, sizeof *w);
    *w = (struct watcher){fn, user, events};
    loop->watchers[fd] = w;
    return DW_OK;
}

dw_rc dw_loop_mod_fd(struct dw_loop *loop, int fd, unsigned events)
{
    struct watcher *w = watcher_of(loop, fd);
    if (w == NULL)
        return DW_ERR_NOT_FOUND;
    if (w->events == events)
        return DW_OK;
    dw_rc rc = epoll_set(loop, EPOLL_CTL_MOD, fd, events);
    if (rc == DW_OK)
        w->events = events;
    return rc;
}

void dw_loop_del_fd(struct dw_loop *loop, int fd)
{
    struct watcher *w = watcher_of(loop, fd);
    if (w == NULL)
        return;
    /* The descriptor may be closed already (curl closes before it says so): ignore errors. */
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    free(w);
    loop->watchers[fd] = NULL;
}

struct dw_loop_watch *dw_loop_watch_new(struct dw_loop *loop, dw_loop_watch_fd_fn fd_fn,
                                        unsigned events, dw_loop_fd_fn fn, void *user)
{
    struct dw_loop_watch *w = dw_calloc(1, sizeof *w);
    *w = (struct dw_loop_watch){loop, fd_fn, events, fn, user, -1, NULL, NULL};
    DL_APPEND(loop->watches, w);
    return w;
}

/* Unregisters the descriptor a watch registered for this turn, if it is still the watch's. */
static void watch_release(struct dw_loop_watch *w)
{
    struct watcher *held = watcher_of(w->loop, w->fd);
    if (held && held->fn == w->fn && held->user == w->user)
        dw_loop_del_fd(w->loop, w->fd);
    w->fd = -1;
}

void dw_loop_watch_free(struct dw_loop_watch *w)
{
    if (w == NULL)
        return;
    watch_release(w);
    DL_DELETE(w->loop->watches, w);
    free(w);
}

void dw_loop_del_user(struct dw_loop *loop, const void *user)
{
    for (size_t fd = 0; fd < loop->nwatchers; fd++)
        if (loop->watchers[fd] && loop->watchers[fd]->user == user)
            dw_loop_del_fd(loop, (int)fd);
}

struct dw_loop_timer *dw_loop_timer_new(struct dw_loop *loop, dw_loop_timer_fn fn, void *user)
{
    struct dw_loop_timer *t = dw_calloc(1, sizeof *t);
    t->loop = loop;
    t->fn = fn;
    t->user = user;
    return t;
}

void dw_loop_timer_start(struct dw_loop_timer *t, int64_t delay_ms, int64_t period_ms)
{
    if (!t->active)
        DL_APPEND(t->loop->timers, t);
    t->active = true;
    t->due = t->loop->now() + (delay_ms > 0 ? delay_ms : 0);
    t->period = period_ms > 0 ? period_ms : 0;
}

void dw_loop_timer_stop(struct dw_loop_timer *t)
{
    if (!t->active)
        return;
    t->active = false;
    DL_DELETE(t->loop->timers, t);
}

bool dw_loop_timer_active(const struct dw_loop_timer *t)
{
    return t->active;
}

void dw_loop_timer_free(struct dw_loop_timer *t)
{
    if (t == NULL)
        return;
    dw_loop_timer_stop(t);
    free(t);
}

/* Milliseconds to wait: timeout_ms, shortened to the next due timer; -1 for no limit. */
static int wait_ms(const struct dw_loop *loop, int timeout_ms)
{
    if (loop->stopped)
        return 0;
    int64_t now = loop->now(), wait = timeout_ms < 0 ? INT64_MAX : timeout_ms;
    const struct dw_loop_timer *t;
    DL_FOREACH(loop->timers, t)
    {
        int64_t left = t->due > now ? t->due - now : 0;
        if (left < wait)
            wait = left;
    }
    return wait == INT64_MAX ? -1 : (int)(wait > INT32_MAX ? INT32_MAX : wait);
}

/* The first timer due and not yet fired this turn, or NULL. */
static struct dw_loop_timer *next_due(const struct dw_loop *loop, int64_t now)
{
    struct dw_loop_timer *t, *best = NULL;
    DL_FOREACH(loop->timers, t)
    {
        if (t->due <= now && t->fired_turn != loop->turn && (best == NULL || t->due < best->due))
            best = t;
    }
    return best;
}

/* Fires due timers one at a time, rescanning after each: a callback may free any timer. */
static void fire_timers(struct dw_loop *loop)
{
    int64_t now = loop->now();
    struct dw_loop_timer *t;
    while ((t = next_due(loop, now))) {
        t->fired_turn = loop->turn;
        if (t->period > 0) {
            t->due += t->period;
            if (t->due <= now)
                t->due = now + t->period;
        } else {
            dw_loop_timer_stop(t);
        }
        t->fn(t->user);
    }
}

dw_rc dw_loop_run_once(struct dw_loop *loop, int timeout_ms)
{
    struct epoll_event evs[EVENTS_PER_TURN];
    struct dw_loop_watch *watch;
    loop->turn++;
    DL_FOREACH(loop->watches, watch)
    {
        int fd = watch->fd_fn(watch->user);
        bool added =
            fd >= 0 && dw_loop_add_fd(loop, fd, watch->events, watch->fn, watch->user) == DW_OK;
        watch->fd = added ? fd : -1;
    }
    int n = epoll_wait(loop->epfd, evs, EVENTS_PER_TURN, wait_ms(loop, timeout_ms));
    if (n < 0) {
        if (errno != EINTR) {
            DW_ERROR("epoll_wait failed: %s", strerror(errno));
            return DW_ERR_IO;
        }
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        struct watcher *w = watcher_of(loop, fd);
        if (w)
            w->fn(w->user, fd, from_epoll(evs[i].events));
    }
    DL_FOREACH(loop->watches, watch)
    {
        watch_release(watch);
    }
    fire_timers(loop);
    return DW_OK;
}

void dw_loop_stop(struct dw_loop *loop)
{
    loop->stopped = true;
}

bool dw_loop_stopped(const struct dw_loop *loop)
{
    return loop->stopped;
}

/*
 * loop.h - the daemon's one event loop: descriptors watched through epoll and timers on the
 * monotonic clock, run one turn at a time by the daemon (runner.c). Its tenants (the HTTP
 * client's sockets and timer, the replication stream, the control connection, the metrics
 * listener, the signal fd) register themselves and are called back from dw_loop_run_once().
 * A tenant whose descriptor changes under it (a libpq connection, which PQreset() and
 * reconnects close and open again) registers a watch instead: the loop asks it before each
 * turn which descriptor to watch, and watches that one for the turn only.
 *
 * Single-threaded. Ownership: the loop belongs to whoever made it with dw_loop_new() and
 * must outlive every registration and timer made on it. Callbacks may register, modify or
 * unregister any descriptor and start, stop or free any timer, their own included. A
 * descriptor unregistered during a turn is not called back for the rest of that turn.
 */
#ifndef DWASYNC_LOOP_H
#define DWASYNC_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "dwasync/rc.h"

struct dw_loop;
struct dw_loop_timer;
struct dw_loop_watch;

/* Events asked for and reported (DW_LOOP_ERR is only reported: errors and hang-ups). */
enum {
    DW_LOOP_IN = 1,
    DW_LOOP_OUT = 2,
    DW_LOOP_ERR = 4,
};

/* Called when fd has some of the events asked for (revents: DW_LOOP_* bits). */
typedef void (*dw_loop_fd_fn)(void *user, int fd, unsigned revents);
/* Called when a timer is due. */
typedef void (*dw_loop_timer_fn)(void *user);
/* A monotonic clock in milliseconds (dw_clock_ms, or a test's own). */
typedef int64_t (*dw_loop_clock_fn)(void);

/* A new loop on clock now (NULL: dw_clock_ms). Caller frees with dw_loop_free. Aborts
 * if the kernel gives no epoll instance (out of descriptors): nothing could run. */
struct dw_loop *dw_loop_new(dw_loop_clock_fn now);

/* Frees the loop (NULL is fine). Registered descriptors are not closed; timers and watches
 * must have been freed by their owners. */
void dw_loop_free(struct dw_loop *loop);

/* Watches fd for events (DW_LOOP_IN|DW_LOOP_OUT) and calls fn(user, ...) when some occur.
 * An fd is registered at most once: DW_ERR_EXISTS otherwise; DW_ERR_IO if epoll refuses. */
dw_rc dw_loop_add_fd(struct dw_loop *loop, int fd, unsigned events, dw_loop_fd_fn fn, void *user);

/* Changes the events watched on a registered fd (DW_ERR_NOT_FOUND if it is not). */
dw_rc dw_loop_mod_fd(struct dw_loop *loop, int fd, unsigned events);

/* Stops watching fd (nothing if it is not registered). Call it before closing fd. */
void dw_loop_del_fd(struct dw_loop *loop, int fd);

/* Stops watching every descriptor registered with user: for a tenant that goes away while
 * descriptors it was told about are closed without a word (curl's connection cache). */
void dw_loop_del_user(struct dw_loop *loop, const void *user);

/* Whether fd is registered. */
bool dw_loop_has_fd(const struct dw_loop *loop, int fd);

/* The descriptor a watch wants watched this turn, or -1 for none. */
typedef int (*dw_loop_watch_fd_fn)(void *user);

/*
 * A watch: before each turn, fd_fn(user) names a descriptor (or -1), which is watched for
 * events during that turn only, calling fn(user, ...) when some occur, and unregistered
 * when the turn ends. A descriptor closed and opened again between turns (as libpq does)
 * is never left registered. A descriptor registered already by another tenant is not
 * watched that turn. fn must not close the descriptor. Caller frees with dw_loop_watch_free.
 */
struct dw_loop_watch *dw_loop_watch_new(struct dw_loop *loop, dw_loop_watch_fd_fn fd_fn,
                                        unsigned events, dw_loop_fd_fn fn, void *user);

/* Stops and frees a watch (NULL is fine); not from inside its own callbacks. */
void dw_loop_watch_free(struct dw_loop_watch *w);

/* A stopped timer that calls fn(user) when due. Caller frees with dw_loop_timer_free. */
struct dw_loop_timer *dw_loop_timer_new(struct dw_loop *loop, dw_loop_timer_fn fn, void *user);

/* (Re)starts t: due delay_ms from now (0: at the next turn), then every period_ms if
 * period_ms > 0 (a repeating timer), or once if it is 0. */
void dw_loop_timer_start(struct dw_loop_timer *t, int64_t delay_ms, int64_t period_ms);

/* Stops t (nothing if it is stopped). */
void dw_loop_timer_stop(struct dw_loop_timer *t);

/* Whether t is started and has not fired (one-shot) or been stopped. */
bool dw_loop_timer_active(const struct dw_loop_timer *t);

/* Stops and frees t (NULL is fine). */
void dw_loop_timer_free(struct dw_loop_timer *t);

/*
 * One turn: waits up to timeout_ms (negative: no limit) or until the next timer is due,
 * whichever is first, or not at all if dw_loop_stop() was called; then calls back every
 * ready descriptor and every due timer, each at most once. Returns DW_OK (also when
 * interrupted by a signal) or DW_ERR_IO if epoll fails.
 */
dw_rc dw_loop_run_once(struct dw_loop *loop, int timeout_ms);

/* Asks the loop to stop: the turn running ends without further waiting, and later turns do
 * not wait (for callbacks and signal handling; not async-signal-safe). */
void dw_loop_stop(struct dw_loop *loop);

/* Whether dw_loop_stop() was called. */
bool dw_loop_stopped(const struct dw_loop *loop);

#endif

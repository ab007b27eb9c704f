/*
 * Unit tests: the event loop (loop.h). Descriptors are pipes written by the test itself
 * before the turn, and time is a fake monotonic clock the test advances, so that nothing
 * waits on the machine's speed: a turn that should not wait is run with timeout 0 or must
 * return at once because something is already ready or due.
 */
#include <check.h>
#include <stdint.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/loop.h"

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

struct seen {
    int calls;
    int fd;
    unsigned revents;
};

static void on_fd(void *user, int fd, unsigned revents)
{
    struct seen *s = user;
    s->calls++;
    s->fd = fd;
    s->revents = revents;
}

static void on_timer(void *user)
{
    (*(int *)user)++;
}

START_TEST(a_readable_pipe_is_called_back_until_drained)
{
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct seen s = {0};
    ck_assert_int_eq(dw_loop_add_fd(loop, p[0], DW_LOOP_IN, on_fd, &s), DW_OK);
    ck_assert_int_eq(dw_loop_add_fd(loop, p[0], DW_LOOP_IN, on_fd, &s), DW_ERR_EXISTS);
    ck_assert(dw_loop_has_fd(loop, p[0]));
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(s.calls, 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    /* Ready already: a turn with no time limit returns at once. */
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.fd, p[0]);
    ck_assert(s.revents & DW_LOOP_IN);
    /* Level-triggered: still readable, called again. */
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(s.calls, 2);
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(s.calls, 2);
    dw_loop_del_fd(loop, p[0]);
    ck_assert(!dw_loop_has_fd(loop, p[0]));
    close(p[0]);
    close(p[1]);
    dw_loop_free(loop);
}
END_TEST

START_TEST(modify_switches_between_read_and_write)
{
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct seen s = {0};
    ck_assert_int_eq(dw_loop_mod_fd(loop, p[1], DW_LOOP_OUT), DW_ERR_NOT_FOUND);
    ck_assert_int_eq(dw_loop_add_fd(loop, p[1], 0, on_fd, &s), DW_OK);
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(s.calls, 0);
    ck_assert_int_eq(dw_loop_mod_fd(loop, p[1], DW_LOOP_OUT), DW_OK);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(s.calls, 1);
    ck_assert(s.revents & DW_LOOP_OUT);
    /* The reader closed: the writer is told of the error. */
    close(p[0]);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert(s.revents & DW_LOOP_ERR);
    dw_loop_del_fd(loop, p[1]);
    close(p[1]);
    dw_loop_free(loop);
}
END_TEST

/* Two ready pipes; whichever is called first unregisters the other. */
struct pair {
    struct dw_loop *loop;
    int fds[2];
    int calls;
};

static void unregister_other(void *user, int fd, unsigned revents)
{
    (void)revents;
    struct pair *p = user;
    p->calls++;
    dw_loop_del_fd(p->loop, fd == p->fds[0] ? p->fds[1] : p->fds[0]);
}

START_TEST(a_descriptor_unregistered_in_a_turn_is_not_called_back)
{
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int a[2], b[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    struct pair p = {loop, {a[0], b[0]}, 0};
    ck_assert_int_eq(dw_loop_add_fd(loop, a[0], DW_LOOP_IN, unregister_other, &p), DW_OK);
    ck_assert_int_eq(dw_loop_add_fd(loop, b[0], DW_LOOP_IN, unregister_other, &p), DW_OK);
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(p.calls, 1);
    for (int i = 0; i < 2; i++) {
        dw_loop_del_fd(loop, a[i]);
        dw_loop_del_fd(loop, b[i]);
        close(a[i]);
        close(b[i]);
    }
    dw_loop_free(loop);
}
END_TEST

/* A tenant going away drops every descriptor it registered, and only those: a number
 * reused by the next tenant must not reach the one that left. */
START_TEST(deleting_a_user_drops_exactly_its_descriptors)
{
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int a[2], b[2], c[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    ck_assert_int_eq(pipe(c), 0);
    int gone = 0, stays = 0;
    ck_assert_int_eq(dw_loop_add_fd(loop, a[0], DW_LOOP_IN, unregister_other, &gone), DW_OK);
    ck_assert_int_eq(dw_loop_add_fd(loop, b[0], DW_LOOP_IN, unregister_other, &gone), DW_OK);
    ck_assert_int_eq(dw_loop_add_fd(loop, c[0], DW_LOOP_IN, unregister_other, &stays), DW_OK);
    dw_loop_del_user(loop, &gone);
    ck_assert(!dw_loop_has_fd(loop, a[0]));
    ck_assert(!dw_loop_has_fd(loop, b[0]));
    ck_assert(dw_loop_has_fd(loop, c[0]));
    dw_loop_del_fd(loop, c[0]);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
        close(c[i]);
    }
    dw_loop_free(loop);
}
END_TEST

START_TEST(a_one_shot_timer_fires_once_when_due)
{
    fake_now = 1000;
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int fired = 0;
    struct dw_loop_timer *t = dw_loop_timer_new(loop, on_timer, &fired);
    ck_assert(!dw_loop_timer_active(t));
    dw_loop_timer_start(t, 50, 0);
    ck_assert(dw_loop_timer_active(t));
    fake_now += 49;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 0);
    fake_now += 1;
    /* Due now: even a turn with no time limit does not wait. */
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(fired, 1);
    ck_assert(!dw_loop_timer_active(t));
    fake_now += 1000;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 1);
    dw_loop_timer_free(t);
    dw_loop_free(loop);
}
END_TEST

START_TEST(a_repeating_timer_fires_once_per_turn_on_its_period)
{
    fake_now = 0;
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int fired = 0;
    struct dw_loop_timer *t = dw_loop_timer_new(loop, on_timer, &fired);
    dw_loop_timer_start(t, 10, 10);
    fake_now = 10;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 1);
    fake_now = 19;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 1);
    fake_now = 20;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 2);
    /* Far behind: one call, not one per missed period, and the next is a period later. */
    fake_now = 1000;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 3);
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 3);
    fake_now = 1010;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 4);
    dw_loop_timer_stop(t);
    fake_now = 5000;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(fired, 4);
    dw_loop_timer_free(t);
    dw_loop_free(loop);
}
END_TEST

/* A timer whose callback frees a second timer due in the same turn. */
struct victim {
    struct dw_loop_timer *other;
    int fired;
};

static void free_other(void *user)
{
    struct victim *v = user;
    v->fired++;
    dw_loop_timer_free(v->other);
    v->other = NULL;
}

START_TEST(a_timer_freed_by_another_in_the_same_turn_does_not_fire)
{
    fake_now = 0;
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int other_fired = 0;
    struct victim v = {0};
    struct dw_loop_timer *first = dw_loop_timer_new(loop, free_other, &v);
    v.other = dw_loop_timer_new(loop, on_timer, &other_fired);
    dw_loop_timer_start(first, 5, 0);
    dw_loop_timer_start(v.other, 6, 0);
    fake_now = 10;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(v.fired, 1);
    ck_assert_int_eq(other_fired, 0);
    dw_loop_timer_free(first);
    dw_loop_free(loop);
}
END_TEST

static void stop_loop(void *user)
{
    dw_loop_stop(user);
}

START_TEST(stop_ends_waiting)
{
    struct dw_loop *loop = dw_loop_new(NULL);
    ck_assert(!dw_loop_stopped(loop));
    struct dw_loop_timer *t = dw_loop_timer_new(loop, stop_loop, loop);
    dw_loop_timer_start(t, 0, 0);
    /* The real clock: the timer is due at once, and once stopped no turn waits. */
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert(dw_loop_stopped(loop));
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    dw_loop_timer_free(t);
    dw_loop_free(loop);
}
END_TEST

/* A watch's descriptor, as a libpq connection's, which changes under the watch, and what
 * on_fd() saw (first: on_fd() takes the struct as its struct seen). */
struct watched {
    struct seen seen;
    int fd;
};

static int watched_fd(void *user)
{
    return ((struct watched *)user)->fd;
}

/* A watch is registered for each turn only, on whatever descriptor it names that turn: a
 * new descriptor, one closed and opened again under the same number (as PQreset() does),
 * or none; and it leaves alone a descriptor another tenant registered. */
START_TEST(a_watch_follows_its_descriptor_turn_by_turn)
{
    struct dw_loop *loop = dw_loop_new(fake_clock);
    int a[2], b[2], c[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    struct watched w = {{0}, a[0]};
    struct seen *seen = &w.seen;
    struct dw_loop_watch *watch = dw_loop_watch_new(loop, watched_fd, DW_LOOP_IN, on_fd, &w);
    /* Nothing ready: no call, and nothing left registered after the turn. */
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(seen->calls, 0);
    ck_assert(!dw_loop_has_fd(loop, a[0]));
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK); /* returns: a[0] is readable */
    ck_assert_int_eq(seen->calls, 1);
    ck_assert_int_eq(seen->fd, a[0]);
    /* The descriptor changes: the new one is watched, the old one no more. */
    w.fd = b[0];
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(seen->calls, 2);
    ck_assert_int_eq(seen->fd, b[0]);
    /* Closed and opened again under the same number: watched still. */
    int number = b[0];
    close(b[0]);
    close(b[1]);
    ck_assert_int_eq(pipe(c), 0);
    ck_assert_int_eq(dup2(c[0], number), number); /* (a no-op if pipe() reused it) */
    ck_assert_int_eq(write(c[1], "x", 1), 1);
    ck_assert_int_eq(dw_loop_run_once(loop, -1), DW_OK);
    ck_assert_int_eq(seen->calls, 3);
    ck_assert_int_eq(seen->fd, number);
    /* None named: nothing is watched (a[0] is still readable). */
    w.fd = -1;
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(seen->calls, 3);
    /* A descriptor another tenant holds stays the other tenant's. */
    struct seen other = {0};
    w.fd = a[0];
    ck_assert_int_eq(dw_loop_add_fd(loop, a[0], DW_LOOP_IN, on_fd, &other), DW_OK);
    ck_assert_int_eq(dw_loop_run_once(loop, 0), DW_OK);
    ck_assert_int_eq(other.calls, 1);
    ck_assert_int_eq(seen->calls, 3);
    ck_assert(dw_loop_has_fd(loop, a[0]));
    dw_loop_watch_free(watch);
    ck_assert(dw_loop_has_fd(loop, a[0]));
    dw_loop_del_fd(loop, a[0]);
    close(a[0]);
    close(a[1]);
    close(c[0]);
    close(c[1]);
    if (number != c[0])
        close(number);
    dw_loop_free(loop);
}
END_TEST

static Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    tcase_add_test(tc, a_readable_pipe_is_called_back_until_drained);
    tcase_add_test(tc, modify_switches_between_read_and_write);
    tcase_add_test(tc, a_descriptor_unregistered_in_a_turn_is_not_called_back);
    tcase_add_test(tc, deleting_a_user_drops_exactly_its_descriptors);
    tcase_add_test(tc, a_one_shot_timer_fires_once_when_due);
    tcase_add_test(tc, a_repeating_timer_fires_once_per_turn_on_its_period);
    tcase_add_test(tc, a_timer_freed_by_another_in_the_same_turn_does_not_fire);
    tcase_add_test(tc, stop_ends_waiting);
    tcase_add_test(tc, a_watch_follows_its_descriptor_turn_by_turn);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = loop_suite, .nofork = true};

/* Unit tests: named fault-injection points (failpoint.h): parsing, the N-th hit, crashes. */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/failpoint.h"

START_TEST(unarmed_points_never_fire)
{
    ck_assert_int_eq(dw_failpoints_configure(NULL), DW_OK);
    ck_assert(!dw_failpoints_armed);
    ck_assert(!DW_FAILPOINT("anything"));
    ck_assert_int_eq(dw_failpoints_configure(""), DW_OK);
    ck_assert(!DW_FAILPOINT("anything"));
}
END_TEST

START_TEST(errors_fire_every_time_or_on_the_nth_hit)
{
    ck_assert_int_eq(dw_failpoints_configure("a:error,b:error@3"), DW_OK);
    ck_assert(dw_failpoints_armed);
    ck_assert(DW_FAILPOINT("a"));
    ck_assert(DW_FAILPOINT("a"));
    ck_assert(!DW_FAILPOINT("b"));
    ck_assert(!DW_FAILPOINT("b"));
    ck_assert(DW_FAILPOINT("b"));
    ck_assert(!DW_FAILPOINT("b"));
    ck_assert(!DW_FAILPOINT("c"));
    /* Re-arming starts the counts again and forgets earlier points. */
    ck_assert_int_eq(dw_failpoints_configure("b:error@1"), DW_OK);
    ck_assert(DW_FAILPOINT("b"));
    ck_assert(!DW_FAILPOINT("a"));
}
END_TEST

START_TEST(malformed_texts_are_refused_and_arm_nothing)
{
    ck_assert_int_eq(dw_failpoints_configure("a:error"), DW_OK);
    const char *bad[] = {"a",         ":crash",    "a:boom",           "a:crash@",
                         "a:crash@0", "a:crash@x", "a:error,,b:error", "a:crash@-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(dw_failpoints_configure(bad[i]) == DW_ERR_INVALID, "%s", bad[i]);
        ck_assert(DW_FAILPOINT("a")); /* the earlier arming stands */
    }
    dw_failpoints_configure(NULL);
}
END_TEST

static int child_status(const char *spec, int hits_before_exit)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (dw_failpoints_configure(spec) != DW_OK)
            _exit(2);
        for (int i = 0; i < hits_before_exit; i++)
            (void)DW_FAILPOINT("p");
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

START_TEST(crash_kills_the_process_as_kill_9_does)
{
    int status = child_status("p:crash", 1);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    status = child_status("p:crash@3", 2);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    status = child_status("p:crash@3", 3);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}
END_TEST

static Suite *failpoint_suite(void)
{
    Suite *s = suite_create("failpoint");
    TCase *tc = tcase_create("failpoint");
    tcase_add_test(tc, unarmed_points_never_fire);
    tcase_add_test(tc, errors_fire_every_time_or_on_the_nth_hit);
    tcase_add_test(tc, malformed_texts_are_refused_and_arm_nothing);
    tcase_add_test(tc, crash_kills_the_process_as_kill_9_does);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = failpoint_suite, .nofork = true};

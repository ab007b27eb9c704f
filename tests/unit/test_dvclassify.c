/* Unit tests: the classifier table, AIMD and backoff arithmetic, Retry-After parsing. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/dvclassify.h"
#include "dwasync/dvthrottle.h"

struct row {
    enum dw_write_op op;
    CURLcode cc;
    int http;
    const char *code;
    enum dw_verdict verdict;
    enum dw_error_class cls;
};

START_TEST(classifier_table)
{
    static const struct row table[] = {
        {DW_WRITE_UPSERT, CURLE_OK, 204, "", DW_VERDICT_OK, DW_ERRCLASS_NONE},
        {DW_WRITE_UPSERT, CURLE_OK, 200, "", DW_VERDICT_OK, DW_ERRCLASS_NONE},
        {DW_WRITE_CREATE, CURLE_OK, 201, "", DW_VERDICT_OK, DW_ERRCLASS_NONE},
        {DW_WRITE_DELETE, CURLE_OK, 404, "0x80040217", DW_VERDICT_OK, DW_ERRCLASS_NONE},
        {DW_WRITE_UPSERT, CURLE_OK, 429, "0x80072322", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 503, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 502, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 504, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 500, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 500, "0x80040265", DW_VERDICT_PERMANENT, DW_ERRCLASS_UNKNOWN},
        {DW_WRITE_UPSERT, CURLE_OK, 500, "0x80072326", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 500, "0x80040216", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_OK, 401, "", DW_VERDICT_RENEW_AUTH, DW_ERRCLASS_PRIVILEGE},
        {DW_WRITE_UPSERT, CURLE_OK, 400, "0x80044331", DW_VERDICT_PERMANENT,
         DW_ERRCLASS_VALIDATION},
        {DW_WRITE_UPSERT, CURLE_OK, 400, "0x0", DW_VERDICT_PERMANENT, DW_ERRCLASS_VALIDATION},
        {DW_WRITE_UPSERT, CURLE_OK, 400, "0x80040237", DW_VERDICT_PERMANENT, DW_ERRCLASS_DUPLICATE},
        {DW_WRITE_UPSERT, CURLE_OK, 404, "0x80048d02", DW_VERDICT_PERMANENT,
         DW_ERRCLASS_MISSING_PARENT},
        {DW_WRITE_UPSERT, CURLE_OK, 404, "0x80040217", DW_VERDICT_PERMANENT,
         DW_ERRCLASS_MISSING_PARENT},
        {DW_WRITE_UPSERT, CURLE_OK, 404, "0x8006088a", DW_VERDICT_PERMANENT,
         DW_ERRCLASS_VALIDATION},
        {DW_WRITE_UPDATE, CURLE_OK, 404, "", DW_VERDICT_PERMANENT, DW_ERRCLASS_CONFLICT},
        {DW_WRITE_UPDATE, CURLE_OK, 404, "0x80048d02", DW_VERDICT_PERMANENT,
         DW_ERRCLASS_MISSING_PARENT},
        {DW_WRITE_CREATE, CURLE_OK, 412, "", DW_VERDICT_PERMANENT, DW_ERRCLASS_DUPLICATE},
        {DW_WRITE_UPDATE, CURLE_OK, 412, "", DW_VERDICT_PERMANENT, DW_ERRCLASS_CONFLICT},
        {DW_WRITE_UPSERT, CURLE_OK, 403, "0x80040220", DW_VERDICT_PERMANENT, DW_ERRCLASS_PRIVILEGE},
        {DW_WRITE_DELETE, CURLE_OK, 403, "0x80048306", DW_VERDICT_PERMANENT, DW_ERRCLASS_PRIVILEGE},
        {DW_WRITE_UPSERT, CURLE_OK, 409, "", DW_VERDICT_PERMANENT, DW_ERRCLASS_CONFLICT},
        {DW_WRITE_UPSERT, CURLE_OK, 418, "", DW_VERDICT_PERMANENT, DW_ERRCLASS_UNKNOWN},
        {DW_WRITE_UPSERT, CURLE_OPERATION_TIMEDOUT, 0, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_COULDNT_CONNECT, 0, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_RECV_ERROR, 0, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_DELETE, CURLE_GOT_NOTHING, 0, "", DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT},
        {DW_WRITE_UPSERT, CURLE_PEER_FAILED_VERIFICATION, 0, "", DW_VERDICT_RETRY,
         DW_ERRCLASS_TRANSIENT},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        const struct row *t = &table[i];
        struct dw_classification c = dw_classify(t->op, t->cc, t->http, t->code);
        ck_assert_msg(c.verdict == t->verdict && c.error_class == t->cls,
                      "row %zu (HTTP %d %s): got %s/%s, want %s/%s", i, t->http, t->code,
                      dw_verdict_name(c.verdict), dw_error_class_name(c.error_class),
                      dw_verdict_name(t->verdict), dw_error_class_name(t->cls));
    }
    ck_assert(dw_classify(DW_WRITE_UPSERT, CURLE_OK, 429, "").throttled);
    ck_assert(!dw_classify(DW_WRITE_UPSERT, CURLE_OK, 503, "").throttled);
    ck_assert(dw_classify(DW_WRITE_UPSERT, CURLE_PEER_FAILED_VERIFICATION, 0, NULL).config_error);
    ck_assert(!dw_classify(DW_WRITE_UPSERT, CURLE_COULDNT_CONNECT, 0, NULL).config_error);
    ck_assert_str_eq(dw_error_class_name(DW_ERRCLASS_MISSING_PARENT), "missing_parent");
    ck_assert_str_eq(dw_error_class_name((enum dw_error_class)99), "unknown");
}
END_TEST

START_TEST(requests_spread_only_while_rows_are_expensive)
{
    /* Not measured yet, or cheap rows: as few requests as batch_size allows. */
    ck_assert_uint_eq(dw_requests_for(0, 1000, 0, 8), 0);
    ck_assert_uint_eq(dw_requests_for(640, 1000, 0, 8), 1);
    ck_assert_uint_eq(dw_requests_for(2500, 1000, 0, 8), 3);
    ck_assert_uint_eq(dw_requests_for(1000, 1000, 0.2, 8), 1);
    ck_assert_uint_eq(dw_requests_for(2500, 1000, 0.05, 8), 3);
    /* Expensive rows: over the free slots, each request 200 ms of server time or more. */
    ck_assert_uint_eq(dw_requests_for(640, 1000, 1, 8), 3);  /* 200 rows or more */
    ck_assert_uint_eq(dw_requests_for(640, 1000, 3, 8), 8);  /* 67 or more */
    ck_assert_uint_eq(dw_requests_for(640, 1000, 3, 12), 9); /* 9 of 67 or more */
    ck_assert_uint_eq(dw_requests_for(640, 1000, 4, 3), 3);
    ck_assert_uint_eq(dw_requests_for(2500, 1000, 0.5, 8), 6); /* 400 or more */
    ck_assert_uint_eq(dw_requests_for(150, 1000, 4, 8), 3);
    ck_assert_uint_eq(dw_requests_for(40, 1000, 4, 8), 1);
    /* Never fewer than batch_size allows, nor more when no slot is free. */
    ck_assert_uint_eq(dw_requests_for(3340, 1000, 4, 2), 4);
    ck_assert_uint_eq(dw_requests_for(640, 1000, 4, 0), 1);
    ck_assert_uint_eq(dw_requests_for(640, 1000, 4, -2), 1);
    ck_assert_uint_eq(dw_requests_for(640, 100, 4, 16), 12);
    ck_assert_uint_eq(dw_requests_for(640, 100, 1e-300, 16), 7);
}
END_TEST

START_TEST(aimd_grows_slowly_halves_and_respects_ceilings)
{
    struct dw_aimd a;
    dw_aimd_init(&a, 16);
    ck_assert_int_eq(dw_aimd_limit(&a), 2);
    /* About one step per window of healthy responses. */
    dw_aimd_success(&a);
    dw_aimd_success(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 2);
    for (int i = 0; i < 3; i++)
        dw_aimd_success(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 3);
    for (int i = 0; i < 1000; i++)
        dw_aimd_success(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 16);
    dw_aimd_throttled(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 8);
    dw_aimd_throttled(&a);
    dw_aimd_throttled(&a);
    dw_aimd_throttled(&a);
    dw_aimd_throttled(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 1);
    /* The server's hint caps the window below the configured maximum... */
    for (int i = 0; i < 1000; i++)
        dw_aimd_success(&a);
    dw_aimd_set_hint(&a, 5);
    ck_assert_int_eq(dw_aimd_limit(&a), 5);
    for (int i = 0; i < 100; i++)
        dw_aimd_success(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 5);
    /* ...but never lifts it above it. */
    dw_aimd_set_hint(&a, 100);
    for (int i = 0; i < 1000; i++)
        dw_aimd_success(&a);
    ck_assert_int_eq(dw_aimd_limit(&a), 16);
    dw_aimd_set_hint(&a, 0); /* ignored */
    ck_assert_int_eq(dw_aimd_limit(&a), 16);
    dw_aimd_init(&a, 1);
    ck_assert_int_eq(dw_aimd_limit(&a), 1);
}
END_TEST

START_TEST(backoff_doubles_with_jitter_and_is_capped)
{
    /* rnd 0: the fixed half; rnd max: the whole delay. */
    ck_assert_int_eq(dw_backoff_ms(1, 250, 60000, 0), 125);
    ck_assert_int_eq(dw_backoff_ms(1, 250, 60000, UINT32_MAX), 250);
    ck_assert_int_eq(dw_backoff_ms(2, 250, 60000, UINT32_MAX), 500);
    ck_assert_int_eq(dw_backoff_ms(5, 250, 60000, UINT32_MAX), 4000);
    ck_assert_int_eq(dw_backoff_ms(5, 250, 60000, 0), 2000);
    ck_assert_int_eq(dw_backoff_ms(20, 250, 60000, UINT32_MAX), 60000);
    ck_assert_int_eq(dw_backoff_ms(20, 250, 60000, 0), 30000);
    ck_assert_int_eq(dw_backoff_ms(1000000, 250, 60000, UINT32_MAX / 2), 44999);
    for (uint32_t r = 0; r < 4000000000u; r += 123456789u) {
        int64_t d = dw_backoff_ms(3, 250, 60000, r);
        ck_assert(d >= 500 && d <= 1000);
    }
    ck_assert_int_eq(dw_backoff_ms(0, 250, 60000, UINT32_MAX), 250);
}
END_TEST

START_TEST(retry_after_values)
{
    ck_assert_int_eq(dw_retry_after_ms("7", 0), 7000);
    ck_assert_int_eq(dw_retry_after_ms(" 0 ", 0), 0);
    ck_assert_int_eq(dw_retry_after_ms("1.5", 0), 1500);
    ck_assert_int_eq(dw_retry_after_ms(NULL, 0), -1);
    ck_assert_int_eq(dw_retry_after_ms("soon", 0), -1);
    ck_assert_int_eq(dw_retry_after_ms("-3", 0), -1);
    ck_assert_int_eq(dw_retry_after_ms("5x", 0), -1);
    /* HTTP-date, relative to now: Sun, 22 Nov 2026 10:00:30 GMT is 1795341630. */
    ck_assert_int_eq(dw_retry_after_ms("Sun, 22 Nov 2026 10:00:30 GMT", 1795341600), 30000);
    ck_assert_int_eq(dw_retry_after_ms("Sun, 22 Nov 2026 10:00:30 GMT", 1795341700), 0);
}
END_TEST

static Suite *classify_suite(void)
{
    Suite *s = suite_create("dvclassify");
    TCase *tc = tcase_create("dvclassify");
    tcase_add_test(tc, classifier_table);
    tcase_add_test(tc, requests_spread_only_while_rows_are_expensive);
    tcase_add_test(tc, aimd_grows_slowly_halves_and_respects_ceilings);
    tcase_add_test(tc, backoff_doubles_with_jitter_and_is_capped);
    tcase_add_test(tc, retry_after_values);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = classify_suite};

/* Unit tests: PostgreSQL text values to typed JSON (values.h), both forms, by type. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/values.h"

static struct dw_values_options utc;

/* The fast writer's JSON for a value ("!INVALID"/"!RANGE" on error). */
static const char *conv(uint32_t oid, const char *text)
{
    static struct dw_buf b;
    static char out[8192];
    dw_buf_init(&b, 0);
    dw_buf_puts(&b, "prefix:");
    const char *why = NULL;
    dw_rc rc = dw_value_append_json(&b, oid, text, strlen(text), &utc, &why);
    if (rc != DW_OK) {
        ck_assert_str_eq(dw_buf_str(&b), "prefix:"); /* left unchanged */
        ck_assert_ptr_nonnull(why);
        snprintf(out, sizeof out, "!%s", rc == DW_ERR_RANGE ? "RANGE" : "INVALID");
    } else {
        snprintf(out, sizeof out, "%s", b.data + 7);
    }
    dw_buf_cleanup(&b);
    return out;
}

static void setup(void)
{
    ck_assert_int_eq(dw_values_options_init(&utc, "UTC"), DW_OK);
}

START_TEST(scalars)
{
    ck_assert_str_eq(conv(16, "t"), "true");
    ck_assert_str_eq(conv(16, "f"), "false");
    ck_assert_str_eq(conv(16, "yes"), "!INVALID");
    ck_assert_str_eq(conv(20, "-9223372036854775808"), "-9223372036854775808");
    ck_assert_str_eq(conv(23, "12a"), "!INVALID");
    ck_assert_str_eq(conv(23, ""), "!INVALID");
    ck_assert_str_eq(conv(25, "say \"hi\"\\\n"), "\"say \\\"hi\\\"\\\\\\n\"");
    ck_assert_str_eq(conv(25, ""), "\"\"");
    ck_assert_str_eq(conv(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                     "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
    ck_assert_str_eq(conv(1186, "P1DT2H"), "\"P1DT2H\"");
    ck_assert_str_eq(conv(869, "10.0.0.1"), "\"10.0.0.1\""); /* inet: its text form */
}
END_TEST

START_TEST(numbers_exact_and_unrepresentable)
{
    ck_assert_str_eq(conv(1700, "123456789012345678901234567890.123456789012"),
                     "123456789012345678901234567890.123456789012");
    ck_assert_str_eq(conv(1700, "-0.000001"), "-0.000001");
    ck_assert_str_eq(conv(1700, "1234567.890000"), "1234567.890000");
    ck_assert_str_eq(conv(1700, "NaN"), "!RANGE");
    ck_assert_str_eq(conv(1700, "Infinity"), "!RANGE");
    ck_assert_str_eq(conv(1700, "-Infinity"), "!RANGE");
    ck_assert_str_eq(conv(1700, "01"), "!INVALID");
    ck_assert_str_eq(conv(1700, "1."), "!INVALID");
    ck_assert_str_eq(conv(701, "-0"), "-0");
    ck_assert_str_eq(conv(701, "1e+300"), "1e+300");
    ck_assert_str_eq(conv(701, "NaN"), "!RANGE");
    ck_assert_str_eq(conv(700, "-Infinity"), "!RANGE");
}
END_TEST

START_TEST(text_checks_and_bpchar)
{
    ck_assert_str_eq(conv(1042, "ab   "), "\"ab\"");
    ck_assert_str_eq(conv(1042, "   "), "\"\"");
    ck_assert_str_eq(conv(1042, " a\t "), "\" a\\t\"");
    ck_assert_str_eq(conv(1043, "ab   "), "\"ab   \""); /* varchar keeps its blanks */
    ck_assert_str_eq(conv(25, "\xf0\x9f\x98\x80 \xc3\xa9"), "\"\xf0\x9f\x98\x80 \xc3\xa9\"");
    ck_assert_str_eq(conv(25, "bad \xc3\x28"), "!INVALID");
    ck_assert_str_eq(conv(25, "overlong \xc0\xaf"), "!INVALID");
    ck_assert_str_eq(conv(25, "surrogate \xed\xa0\x80"), "!INVALID");
    ck_assert_str_eq(conv(25, "cut \xe6\x97"), "!INVALID");
    ck_assert_str_eq(conv(25, "too big \xf4\x90\x80\x80"), "!INVALID");
    struct dw_buf b;
    dw_buf_init(&b, 0);
    const char *why;
    ck_assert_int_eq(dw_value_append_json(&b, 25, "a\0b", 3, &utc, &why), DW_ERR_INVALID);
    ck_assert_str_eq(why, "NUL byte in text");
    dw_buf_cleanup(&b);
}
END_TEST

START_TEST(dates_and_times)
{
    ck_assert_str_eq(conv(1082, "2026-11-22"), "\"2026-11-22\"");
    ck_assert_str_eq(conv(1082, "1900-02-28"), "\"1900-02-28\"");
    ck_assert_str_eq(conv(1082, "0001-01-01 BC"), "\"0000-01-01\"");
    ck_assert_str_eq(conv(1082, "0044-03-15 BC"), "\"-0043-03-15\"");
    ck_assert_str_eq(conv(1082, "10000-01-01"), "\"+10000-01-01\"");
    ck_assert_str_eq(conv(1082, "infinity"), "\"infinity\"");
    ck_assert_str_eq(conv(1082, "22/11/2026"), "!INVALID");
    ck_assert_str_eq(conv(1114, "2026-11-22 10:00:00"), "\"2026-11-22T10:00:00Z\"");
    ck_assert_str_eq(conv(1114, "1969-12-31 23:59:59.5"), "\"1969-12-31T23:59:59.5Z\"");
    ck_assert_str_eq(conv(1114, "2024-02-29 00:00:00"), "\"2024-02-29T00:00:00Z\"");
    ck_assert_str_eq(conv(1114, "2026-11-22 10:00:00+00"), "!INVALID");
    ck_assert_str_eq(conv(1184, "2026-11-22 10:00:00+05:30"), "\"2026-11-22T04:30:00Z\"");
    ck_assert_str_eq(conv(1184, "2026-01-01 00:00:00.000001-03"),
                     "\"2026-01-01T03:00:00.000001Z\"");
    ck_assert_str_eq(conv(1184, "1883-11-18 12:00:00-04:56:02"), "\"1883-11-18T16:56:02Z\"");
    ck_assert_str_eq(conv(1184, "0100-01-01 00:00:00+00 BC"), "\"-0099-01-01T00:00:00Z\"");
    ck_assert_str_eq(conv(1184, "-infinity"), "\"-infinity\"");
    ck_assert_str_eq(conv(1184, "2026-11-22 10:00:00"), "!INVALID");
    ck_assert_str_eq(conv(1083, "13:45:07.25"), "\"13:45:07.25\"");
    ck_assert_str_eq(conv(1266, "13:45:07+02"), "\"13:45:07+02:00\"");
    ck_assert_str_eq(conv(1266, "13:45:07.1-05:30"), "\"13:45:07.1-05:30\"");
    ck_assert_str_eq(conv(1083, "25:00:00"), "!INVALID");

    struct dw_buf b;
    dw_buf_init(&b, 0);
    dw_time_append_iso(&b, 0);
    ck_assert_str_eq(dw_buf_str(&b), "1970-01-01T00:00:00.000000Z");
    dw_buf_reset(&b);
    dw_time_append_iso(&b, -1);
    ck_assert_str_eq(dw_buf_str(&b), "1969-12-31T23:59:59.999999Z");
    /* The ends of the range (a saturated commit time is INT64_MAX); years past 9999 carry
     * their sign, as ISO 8601 expands them. */
    dw_buf_reset(&b);
    dw_time_append_iso(&b, INT64_MAX);
    ck_assert_str_eq(dw_buf_str(&b), "+294247-01-10T04:00:54.775807Z");
    dw_buf_reset(&b);
    dw_time_append_iso(&b, INT64_MIN);
    ck_assert_str_eq(dw_buf_str(&b), "-290308-12-21T19:59:05.224192Z");
    dw_buf_cleanup(&b);
}
END_TEST

/* Runs in its own process (Check forks), so changing TZ does not leak into other tests. */
START_TEST(timestamp_in_source_time_zone)
{
    ck_assert_int_eq(dw_values_options_init(&utc, "Europe/Paris"), DW_OK);
    ck_assert(!utc.tz_utc);
    ck_assert_str_eq(conv(1114, "2026-07-01 12:00:00.5"), "\"2026-07-01T10:00:00.5Z\"");
    ck_assert_str_eq(conv(1114, "2026-01-01 12:00:00"), "\"2026-01-01T11:00:00Z\"");
    /* with time zone: the zone setting does not apply */
    ck_assert_str_eq(conv(1184, "2026-01-01 12:00:00+00"), "\"2026-01-01T12:00:00Z\"");
    struct dw_values_options o;
    ck_assert_int_eq(dw_values_options_init(&o, "Mars/Olympus_Mons"), DW_ERR_CONFIG);
    ck_assert_int_eq(dw_values_options_init(&o, "../../etc/passwd"), DW_ERR_CONFIG);
}
END_TEST

START_TEST(bytea_base64)
{
    ck_assert_str_eq(conv(17, "\\x"), "\"\"");
    ck_assert_str_eq(conv(17, "\\x01"), "\"AQ==\"");
    ck_assert_str_eq(conv(17, "\\x0102"), "\"AQI=\"");
    ck_assert_str_eq(conv(17, "\\x010203"), "\"AQID\"");
    ck_assert_str_eq(conv(17, "\\xFFfe"), "\"//4=\"");
    ck_assert_str_eq(conv(17, "\\x0"), "!INVALID");
    ck_assert_str_eq(conv(17, "\\xzz"), "!INVALID");
    ck_assert_str_eq(conv(17, "abc"), "!INVALID");
    /* 2000 bytes cross the encoder's chunk boundaries */
    static char hex[4003];
    memcpy(hex, "\\x", 2);
    memset(hex + 2, '0', 4000);
    hex[4002] = '\0';
    const char *b64 = conv(17, hex);
    ck_assert_uint_eq(strlen(b64), 2 + 2668);
    ck_assert_int_eq(strspn(b64 + 1, "A"), 2667); /* 666 groups, then 2 bytes: "AAA=" */
    ck_assert_str_eq(b64 + 2668, "=\"");
}
END_TEST

START_TEST(embedded_json)
{
    ck_assert_str_eq(conv(114, "{ \"a\" :\n [1, 2.50e3, \"x y\"] ,\"b\":{}}"),
                     "{\"a\":[1,2.50e3,\"x y\"],\"b\":{}}");
    ck_assert_str_eq(conv(3802, "12345678901234567890.5"), "12345678901234567890.5");
    ck_assert_str_eq(conv(3802, "  true "), "true");
    ck_assert_str_eq(conv(3802, "\"a\\u00e9\\n\""), "\"a\\u00e9\\n\"");
    ck_assert_str_eq(conv(114, "{\"a\":}"), "!INVALID");
    ck_assert_str_eq(conv(114, "[1,]"), "!INVALID");
    ck_assert_str_eq(conv(114, "[1] 2"), "!INVALID");
    ck_assert_str_eq(conv(114, "\"\\u0000\""), "!INVALID");
    ck_assert_str_eq(conv(114, "\"tab\there\""), "!INVALID");
    ck_assert_str_eq(conv(114, "nul"), "!INVALID");
    char deep[700];
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    deep[600] = '\0';
    ck_assert_str_eq(conv(114, deep), "!INVALID");
}
END_TEST

START_TEST(arrays)
{
    ck_assert_str_eq(conv(1007, "{1,2,NULL}"), "[1,2,null]");
    ck_assert_str_eq(conv(1007, "{}"), "[]");
    ck_assert_str_eq(conv(1007, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
    ck_assert_str_eq(conv(1007, "[0:1]={5,6}"), "[5,6]");
    ck_assert_str_eq(conv(1009, "{\"a b\",\"c\\\"d\",\"e\\\\f\",\"NULL\",\"\"}"),
                     "[\"a b\",\"c\\\"d\",\"e\\\\f\",\"NULL\",\"\"]");
    ck_assert_str_eq(conv(1014, "{\"a  \",b}"), "[\"a\",\"b\"]");
    ck_assert_str_eq(conv(1000, "{t,f}"), "[true,false]");
    ck_assert_str_eq(conv(1185, "{\"2020-01-01 00:00:00+01\"}"), "[\"2019-12-31T23:00:00Z\"]");
    ck_assert_str_eq(conv(1231, "{1.5,NaN}"), "!RANGE");
    ck_assert_str_eq(conv(1007, "{1,2"), "!INVALID");
    ck_assert_str_eq(conv(1007, "{1,,2}"), "!INVALID");
    ck_assert_str_eq(conv(1007, "{1}x"), "!INVALID");
    ck_assert_str_eq(conv(1007, "{\"1}"), "!INVALID");
    ck_assert_str_eq(conv(1007, "{{{{{{{1}}}}}}}"), "!INVALID"); /* more than 6 dimensions */
}
END_TEST

START_TEST(domains_and_enums)
{
    struct dw_types *t = dw_types_new();
    dw_types_add(t, 20000, 'd', 1700);  /* domain over numeric */
    dw_types_add(t, 20001, 'd', 20000); /* domain over that domain */
    dw_types_add(t, 20002, 'e', 25);    /* enum */
    dw_types_add(t, 20003, 'a', 20002); /* enum[] */
    dw_types_add(t, 20004, 'a', 20001); /* domain[] */
    utc.types = t;
    ck_assert_str_eq(conv(20000, "12.50"), "12.50");
    ck_assert_str_eq(conv(20001, "12.50"), "12.50");
    ck_assert_str_eq(conv(20002, "happy"), "\"happy\"");
    ck_assert_str_eq(conv(20003, "{sad,happy}"), "[\"sad\",\"happy\"]");
    ck_assert_str_eq(conv(20004, "{1,NULL}"), "[1,null]");
    ck_assert_str_eq(conv(29999, "(1,x)"), "\"(1,x)\""); /* unknown type: its text */
    dw_types_add(t, 20000, 'd', 25); /* a later definition replaces the earlier one */
    ck_assert_str_eq(conv(20000, "12.50"), "\"12.50\"");
    utc.types = NULL;
    dw_types_free(t);
}
END_TEST

/* A one-row change over a relation of numeric columns, for the jansson form. */
START_TEST(row_json_numbers)
{
    struct dw_rel_column cols[2] = {{(char *)"id", 23, -1, true}, {(char *)"x", 1700, -1, false}};
    struct dw_relation rel = {1, (char *)"public", (char *)"t", 'd', 2, cols};
    static const struct {
        const char *in;
        const char *out; /* dump, or NULL when unrepresentable */
    } cases[] = {
        {"100.000000", "100"},
        {"-42", "-42"},
        {"9223372036854775807", "9223372036854775807"},
        {"9223372036854775808", NULL}, /* integral, past int64, 19 digits */
        {"0.1", "0.1"},
        {"1234567.890000", "1234567.89"},
        {"12345678901234.5", "12345678901234.5"}, /* 15 significant digits */
        {"123456789012345.6", NULL},              /* 16 */
        {"0.000000000000000000000123", "1.23e-22"},
        {"NaN", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dw_datum d[2] = {{DW_DATUM_TEXT, "7", 1},
                                {DW_DATUM_TEXT, cases[i].in, (uint32_t)strlen(cases[i].in)}};
        struct dw_change c = {.op = DW_CHANGE_INSERT, .rel = &rel, .new_tuple = {2, d}};
        struct dw_row_json row = {0};
        char *error = NULL;
        dw_rc rc = dw_change_row_json(&c, &utc, &row, &error);
        if (cases[i].out == NULL) {
            ck_assert_msg(rc == DW_ERR_RANGE, "%s should be unrepresentable", cases[i].in);
            ck_assert_ptr_nonnull(strstr(error, "column \"x\""));
            ck_assert_ptr_nonnull(strstr(error, cases[i].in));
            ck_assert_ptr_null(row.new_row);
            free(error);
            continue;
        }
        ck_assert_int_eq(rc, DW_OK);
        char *s = dw_json_dumps(json_object_get(row.new_row, "x"));
        ck_assert_msg(strcmp(s, cases[i].out) == 0, "%s gave %s", cases[i].in, s);
        free(s);
        s = dw_json_dumps(row.key);
        ck_assert_str_eq(s, "{\"id\":7}");
        free(s);
        ck_assert_ptr_null(row.old_row);
        ck_assert_uint_eq(json_array_size(row.unchanged), 0);
        dw_row_json_cleanup(&row);
    }
}
END_TEST

/* numeric[] elements follow the scalar rules, never jansson's doubles. */
START_TEST(row_json_numeric_arrays)
{
    struct dw_rel_column cols[1] = {{(char *)"a", 1231, -1, false}};
    struct dw_relation rel = {1, (char *)"public", (char *)"t", 'd', 1, cols};
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"{1.10,100.000000,NULL}", "[1.1,100,null]"},
        {"{{1,2},{3.5,-4}}", "[[1,2],[3.5,-4]]"},
        {"{}", "[]"},
        {"{1.5,1234567890123456.7}", NULL},
        {"{NaN}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dw_datum d[1] = {{DW_DATUM_TEXT, cases[i].in, (uint32_t)strlen(cases[i].in)}};
        struct dw_change c = {.op = DW_CHANGE_INSERT, .rel = &rel, .new_tuple = {1, d}};
        struct dw_row_json row = {0};
        char *error = NULL;
        dw_rc rc = dw_change_row_json(&c, &utc, &row, &error);
        if (cases[i].out == NULL) {
            ck_assert_msg(rc == DW_ERR_RANGE, "%s should be unrepresentable", cases[i].in);
            ck_assert_ptr_nonnull(strstr(error, "column \"a\""));
            free(error);
            continue;
        }
        ck_assert_int_eq(rc, DW_OK);
        char *s = dw_json_dumps(json_object_get(row.new_row, "a"));
        ck_assert_msg(strcmp(s, cases[i].out) == 0, "%s gave %s", cases[i].in, s);
        free(s);
        dw_row_json_cleanup(&row);
    }
}
END_TEST

/* Lenient conversion keeps the key: an unconvertible value as its text, a value over
 * max_value_bytes left out unread (and named with its size); strict conversion refuses both. */
START_TEST(row_json_lenient_and_bounded)
{
    struct dw_rel_column cols[3] = {{(char *)"id", 23, -1, true},
                                    {(char *)"x", 1700, -1, false},
                                    {(char *)"big", 25, -1, false}};
    struct dw_relation rel = {1, (char *)"public", (char *)"t", 'd', 3, cols};
    struct dw_values_options o = utc;
    o.max_value_bytes = 18;
    struct dw_datum d[3] = {{DW_DATUM_TEXT, "7", 1},
                            {DW_DATUM_TEXT, "123456789012345.6", 17},
                            {DW_DATUM_TEXT, "1234567890123456789", 19}};
    struct dw_change c = {.op = DW_CHANGE_INSERT, .rel = &rel, .new_tuple = {3, d}};
    struct dw_row_json row = {0};
    char *problem = NULL;
    ck_assert_int_eq(dw_change_row_json(&c, &o, &row, &problem), DW_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(problem, "column \"x\": numeric has more significant digits"));
    free(problem);
    problem = NULL;
    ck_assert_int_eq(dw_change_row_json_lenient(&c, &o, &row, &problem), DW_OK);
    ck_assert_ptr_nonnull(strstr(problem, "column \"x\": numeric has more significant digits"));
    free(problem);
    char *s = dw_json_dumps(row.new_row);
    ck_assert_str_eq(s, "{\"id\":7,\"x\":\"123456789012345.6\"}");
    free(s);
    s = dw_json_dumps(row.key);
    ck_assert_str_eq(s, "{\"id\":7}");
    free(s);
    ck_assert_uint_eq(json_array_size(row.unchanged), 0);
    dw_row_json_cleanup(&row);

    /* Only the value too large: its size is the problem. */
    d[1] = (struct dw_datum){DW_DATUM_TEXT, "1.5", 3};
    problem = NULL;
    ck_assert_int_eq(dw_change_row_json(&c, &o, &row, &problem), DW_ERR_RANGE);
    ck_assert_str_eq(problem, "column \"big\": value too large (19 bytes)");
    free(problem);
    problem = NULL;
    ck_assert_int_eq(dw_change_row_json_lenient(&c, &o, &row, &problem), DW_OK);
    ck_assert_str_eq(problem, "column \"big\": value too large (19 bytes)");
    free(problem);
    s = dw_json_dumps(row.new_row);
    ck_assert_str_eq(s, "{\"id\":7,\"x\":1.5}");
    free(s);
    dw_row_json_cleanup(&row);

    /* Within the bound, or with no bound: converted, no problem. */
    o.max_value_bytes = 0;
    problem = NULL;
    ck_assert_int_eq(dw_change_row_json_lenient(&c, &o, &row, &problem), DW_OK);
    ck_assert_ptr_null(problem);
    s = dw_json_dumps(row.new_row);
    ck_assert_str_eq(s, "{\"id\":7,\"x\":1.5,\"big\":\"1234567890123456789\"}");
    free(s);
    dw_row_json_cleanup(&row);
}
END_TEST

START_TEST(decode_line_reports_bad_values)
{
    struct dw_rel_column cols[2] = {{(char *)"id", 23, -1, true}, {(char *)"t", 25, -1, false}};
    struct dw_relation rel = {1, (char *)"public", (char *)"t", 'd', 2, cols};
    struct dw_datum oldd[2] = {{DW_DATUM_TEXT, "7", 1}, {DW_DATUM_NULL, NULL, 0}};
    struct dw_datum newd[2] = {{DW_DATUM_TEXT, "8", 1}, {DW_DATUM_TEXT, "a\xff", 2}};
    struct dw_change c = {.op = DW_CHANGE_UPDATE,
                          .lsn = 0x1A2B3C4,
                          .xid = 123,
                          .commit_time_us = 1795341600123456,
                          .rel = &rel,
                          .new_tuple = {2, newd},
                          .old_tuple = {2, oldd},
                          .old_kind = 'K'};
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_change_append_json(&b, &c, &utc), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b),
                     "{\"lsn\":\"0/1A2B3C4\",\"xid\":123,\"commit_time\":"
                     "\"2026-11-22T10:00:00.123456Z\",\"op\":\"update\",\"schema\":\"public\","
                     "\"table\":\"t\",\"key\":{\"id\":8},\"new\":{\"id\":8,\"t\":\"a\\\\xff\"},"
                     "\"old\":{\"id\":7},\"unchanged\":[],\"errors\":[{\"column\":\"t\","
                     "\"error\":\"invalid UTF-8\"}]}\n");
    /* The jansson form refuses the row and says which column and why. */
    struct dw_row_json row;
    char *error = NULL;
    ck_assert_int_eq(dw_change_row_json(&c, &utc, &row, &error), DW_ERR_RANGE);
    ck_assert_str_eq(error, "column \"t\": invalid UTF-8: value \"a\xff\"");
    free(error);
    dw_buf_cleanup(&b);
}
END_TEST

static Suite *values_suite(void)
{
    Suite *s = suite_create("values");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, scalars);
    tcase_add_test(tc, numbers_exact_and_unrepresentable);
    tcase_add_test(tc, text_checks_and_bpchar);
    tcase_add_test(tc, dates_and_times);
    tcase_add_test(tc, timestamp_in_source_time_zone);
    tcase_add_test(tc, bytea_base64);
    tcase_add_test(tc, embedded_json);
    tcase_add_test(tc, arrays);
    tcase_add_test(tc, domains_and_enums);
    tcase_add_test(tc, row_json_numbers);
    tcase_add_test(tc, row_json_numeric_arrays);
    tcase_add_test(tc, row_json_lenient_and_bounded);
    tcase_add_test(tc, decode_line_reports_bad_values);
    suite_add_tcase(s, tc);
    return s;
}

/* Only what the suite is about reaches the log: malformed input logs by design. */
static void quiet_logs(void)
{
    dw_log_configure(DW_LOG_ERROR + 1, DW_LOG_LOGFMT);
}

const struct dw_check_suite dw_check_suite = {.make = values_suite, .before = quiet_logs};

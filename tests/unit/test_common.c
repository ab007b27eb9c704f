/* Unit tests: logging (formats, escaping, redaction), buffers, LSNs, return codes. */
#include <check.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/lsn.h"
#include "dwasync/redact.h"
#include "dwasync/text.h"

static char *log_text;
static size_t log_len;
static FILE *log_file;

static void capture_start(enum dw_log_format format)
{
    log_file = open_memstream(&log_text, &log_len);
    dw_log_set_stream(log_file);
    dw_log_set_timestamps(false);
    dw_log_configure(DW_LOG_INFO, format);
}

static const char *capture_text(void)
{
    fflush(log_file);
    return log_text;
}

static void capture_end(void)
{
    dw_log_set_stream(NULL);
    fclose(log_file);
    free(log_text);
    log_text = NULL;
    dw_redact_clear();
}

START_TEST(logfmt_line_shape_and_level_filter)
{
    capture_start(DW_LOG_LOGFMT);
    DW_DEBUG("not shown %d", 1);
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", "sales"}, {"table", "custtable"}), "applied %d rows",
            42);
    ck_assert_str_eq(capture_text(),
                     "level=info msg=\"applied 42 rows\" job=sales table=custtable\n");
    capture_end();
}
END_TEST

START_TEST(control_characters_are_escaped)
{
    capture_start(DW_LOG_LOGFMT);
    DW_LOGF(DW_LOG_WARN, DW_FIELDS({"key", "a\nb\"c\x01"}), "line\nbreak");
    ck_assert_str_eq(capture_text(), "level=warn msg=\"line\\nbreak\" key=\"a\\nb\\\"c\\x01\"\n");
    capture_end();

    capture_start(DW_LOG_JSON);
    DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"key", "tab\there"}), "quote \" and \x02");
    ck_assert_str_eq(capture_text(), "{\"level\":\"error\",\"msg\":\"quote \\\" and "
                                     "\\u0002\",\"key\":\"tab\\there\"}\n");
    capture_end();
}
END_TEST

START_TEST(secrets_are_redacted_even_by_mistake)
{
    capture_start(DW_LOG_LOGFMT);
    dw_redact_register("MyClientSecret~123");
    const char *jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    DW_ERROR("request failed: Authorization: Bearer abc.def-ghi_123 body=%s", "x");
    DW_ERROR("token %s expired", jwt);
    DW_ERROR("posting client_id=1&client_secret=MyClientSecret~123&scope=x");
    DW_ERROR("answer {\"access_token\":\"opaque-token-value\",\"expires_in\":3599}");
    DW_ERROR("form client_assertion=%s&grant_type=client_credentials", jwt);
    DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"conninfo", "host=db password=pgpw123 user=x"}), "connect");
    DW_ERROR("key -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY----- done");
    const char *out = capture_text();
    ck_assert_ptr_null(strstr(out, "abc.def-ghi_123"));
    ck_assert_ptr_null(strstr(out, "eyJ"));
    ck_assert_ptr_null(strstr(out, "MyClientSecret"));
    ck_assert_ptr_null(strstr(out, "opaque-token-value"));
    ck_assert_ptr_null(strstr(out, "pgpw123"));
    ck_assert_ptr_null(strstr(out, "MIIEvQIBADANBg"));
    ck_assert_ptr_nonnull(strstr(out, "Bearer [REDACTED] body=x"));
    ck_assert_ptr_nonnull(strstr(out, "\\\"access_token\\\":\\\"[REDACTED]\\\",\\\"expires_in"));
    ck_assert_ptr_nonnull(strstr(out, "&grant_type=client_credentials"));
    ck_assert_ptr_nonnull(strstr(out, "user=x"));
    ck_assert_ptr_nonnull(strstr(out, " done"));
    capture_end();
}
END_TEST

START_TEST(redaction_leaves_ordinary_text_alone)
{
    char *s = dw_redact_str("password policy and bearer of news: eyJ is fine alone");
    ck_assert_str_eq(s, "password policy and bearer of news: eyJ is fine alone");
    free(s);
}
END_TEST

START_TEST(buf_grows_caps_and_escapes)
{
    struct dw_buf b;
    dw_buf_init(&b, 16);
    ck_assert_int_eq(dw_buf_puts(&b, "0123456789"), DW_OK);
    ck_assert_int_eq(dw_buf_printf(&b, "%d", 12345), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "012345678912345");
    ck_assert_int_eq(dw_buf_puts(&b, "xy"), DW_ERR_RANGE);
    ck_assert_str_eq(dw_buf_str(&b), "012345678912345");
    ck_assert_int_eq(dw_buf_printf(&b, "%s", "long enough"), DW_ERR_RANGE);
    ck_assert_uint_eq(b.len, 15);
    dw_buf_reset(&b);
    ck_assert_str_eq(dw_buf_str(&b), "");
    dw_buf_cleanup(&b);

    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_buf_put_json_string(&b, "a\"b\\c\n\x1f\xc3\xa9", 9), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "\"a\\\"b\\\\c\\n\\u001F\xc3\xa9\"");
    char *stolen = dw_buf_steal(&b);
    ck_assert_str_eq(stolen, "\"a\\\"b\\\\c\\n\\u001F\xc3\xa9\"");
    ck_assert_uint_eq(b.len, 0);
    free(stolen);
    dw_buf_cleanup(&b);
}
END_TEST

/* A pseudo-random JSON tree for the writer's differential test (fixed seed: reproducible). */
static uint64_t json_seed = 42;
static unsigned json_rand(unsigned n)
{
    json_seed = json_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(json_seed >> 33) % n;
}

static json_t *random_json(int depth)
{
    static const char *const strings[] = {"",
                                          "a",
                                          "Müller 東京",
                                          "q\"uo\\te",
                                          "tab\there",
                                          "\x01\x1f\x7f",
                                          "/slash/",
                                          "line\nfeed\r\b\f"};
    static const double reals[] = {
        0.1, -2.5, 1234567.89,          1e15, 1e16, 1e300, -1e-300, 123456789012345678.0,
        3.0, 5e-5, 0.000123456789012345};
    static const json_int_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, 1000000, -999};
    unsigned kind = json_rand(depth > 3 ? 6 : 8);
    switch (kind) {
    case 0:
        return json_string(strings[json_rand(8)]);
    case 1:
        return json_integer(ints[json_rand(8)]);
    case 2:
        return json_real(reals[json_rand(11)]);
    case 3:
        return json_boolean(json_rand(2));
    case 4:
        return json_null();
    case 5:
        return json_string("plain");
    case 6: {
        json_t *o = json_object();
        for (unsigned i = json_rand(40); i > 0; i--) {
            char key[16];
            snprintf(key, sizeof key, "%c%u", "zAb_@"[json_rand(5)], json_rand(100));
            json_object_set_new(o, key, random_json(depth + 1));
        }
        return o;
    }
    default: {
        json_t *a = json_array();
        for (unsigned i = json_rand(6); i > 0; i--)
            json_array_append_new(a, random_json(depth + 1));
        return a;
    }
    }
}

START_TEST(json_writer_matches_jansson)
{
    for (int round = 0; round < 2000; round++) {
        json_t *v = random_json(0);
        char *ours = dw_json_dumps(v), *canon = dw_json_canonical(v);
        char *theirs = json_dumps(v, DW_JSON_FLAGS | JSON_ENCODE_ANY);
        char *sorted = json_dumps(v, DW_JSON_FLAGS | JSON_ENCODE_ANY | JSON_SORT_KEYS);
        ck_assert_str_eq(ours, theirs);
        ck_assert_str_eq(canon, sorted);
        free(ours);
        free(canon);
        free(theirs);
        free(sorted);
        json_decref(v);
    }
}
END_TEST

START_TEST(json_append_shapes)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    json_t *o = json_pack("{s:i, s:s, s:[b,n]}", "z", 1, "a", "x", "m", 1);
    ck_assert_int_eq(dw_buf_puts(&b, "{\"first\":0,"), DW_OK);
    ck_assert_int_eq(dw_json_append_members(&b, o), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "{\"first\":0,\"z\":1,\"a\":\"x\",\"m\":[true,null]");
    dw_buf_reset(&b);
    ck_assert_int_eq(dw_json_append_canonical(&b, o), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "{\"a\":\"x\",\"m\":[true,null],\"z\":1}");
    /* Nothing is appended on failure. */
    ck_assert_int_eq(dw_json_append_members(&b, json_object_get(o, "m")), DW_ERR_INVALID);
    ck_assert_int_eq(dw_json_append(&b, NULL), DW_ERR_INVALID);
    ck_assert_str_eq(dw_buf_str(&b), "{\"a\":\"x\",\"m\":[true,null],\"z\":1}");
    struct dw_buf small;
    dw_buf_init(&small, 8);
    ck_assert_int_eq(dw_buf_puts(&small, "ab"), DW_OK);
    ck_assert_int_eq(dw_json_append(&small, o), DW_ERR_RANGE);
    ck_assert_str_eq(dw_buf_str(&small), "ab");
    /* One member at a time, a comma before all but the first; none on failure. */
    dw_buf_reset(&small);
    ck_assert_int_eq(dw_json_append_member(&small, "k", json_object_get(o, "z"), true), DW_OK);
    ck_assert_int_eq(dw_json_append_member(&small, "a", json_object_get(o, "a"), false),
                     DW_ERR_RANGE);
    ck_assert_int_eq(dw_json_append_member(&small, "q", NULL, false), DW_ERR_INVALID);
    ck_assert_str_eq(dw_buf_str(&small), "\"k\":1");
    dw_buf_cleanup(&small);
    dw_buf_cleanup(&b);
    json_decref(o);
}
END_TEST

/* Shared text: a copy of the bytes (NULs too), freed with its last reference (ASan and
 * LeakSanitizer tell a double free or a leak). */
START_TEST(text_is_shared_by_counted_references)
{
    struct dw_text *t = dw_text_new("a\0b", 3);
    ck_assert_uint_eq(t->len, 3);
    ck_assert_int_eq(memcmp(t->data, "a\0b", 4), 0); /* and the terminator */
    ck_assert_ptr_eq(dw_text_hold(t), t);
    ck_assert_uint_eq(t->holders, 2);
    dw_text_drop(t);
    ck_assert_uint_eq(t->holders, 1);
    dw_text_drop(t);
    ck_assert_ptr_null(dw_text_hold(NULL));
    dw_text_drop(NULL);
    struct dw_text *empty = dw_text_new(NULL, 0);
    ck_assert_str_eq(empty->data, "");
    dw_text_drop(empty);
}
END_TEST

START_TEST(lsn_parse_and_format)
{
    dw_lsn lsn;
    char s[DW_LSN_STRLEN];
    ck_assert_int_eq(dw_lsn_parse("0/1A2B3C4", &lsn), DW_OK);
    ck_assert_uint_eq(lsn, 0x1A2B3C4);
    ck_assert_str_eq(dw_lsn_format(lsn, s), "0/1A2B3C4");
    ck_assert_int_eq(dw_lsn_parse("FFFFFFFF/FFFFFFFF", &lsn), DW_OK);
    ck_assert_uint_eq(lsn, UINT64_MAX);
    ck_assert_str_eq(dw_lsn_format(lsn, s), "FFFFFFFF/FFFFFFFF");
    ck_assert_int_eq(dw_lsn_parse("1/", &lsn), DW_ERR_INVALID);
    ck_assert_int_eq(dw_lsn_parse("/1", &lsn), DW_ERR_INVALID);
    ck_assert_int_eq(dw_lsn_parse("1/2/3", &lsn), DW_ERR_INVALID);
    ck_assert_int_eq(dw_lsn_parse("123456789/0", &lsn), DW_ERR_INVALID);
    ck_assert_int_eq(dw_lsn_parse("g/0", &lsn), DW_ERR_INVALID);
}
END_TEST

START_TEST(jansson_allocates_through_dw_malloc)
{
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    ck_assert_ptr_eq((void *)m, (void *)dw_malloc);
    ck_assert_ptr_eq((void *)f, (void *)free);
}
END_TEST

/* Appends through dw_array_grow keep every element, and the array moves only when its
 * length reaches 4, 8, 16, ... (between those, the same block comes back untouched). */
START_TEST(arrays_grow_by_doubling)
{
    uint32_t *a = NULL;
    size_t len = 0;
    for (; len < 10000; len++) {
        uint32_t *before = a;
        a = dw_array_grow(a, len, sizeof *a);
        bool at_capacity = len == 0 || (len >= 4 && (len & (len - 1)) == 0);
        if (!at_capacity)
            ck_assert_ptr_eq(a, before);
        ck_assert_uint_ge(malloc_usable_size(a), (len + 1) * sizeof *a);
        a[len] = (uint32_t)len * 7u;
    }
    for (size_t i = 0; i < len; i++)
        ck_assert_uint_eq(a[i], (uint32_t)i * 7u);
    /* A length that drops (a reset) grows again from the same block. */
    uint32_t *same = dw_array_grow(a, 5, sizeof *a);
    ck_assert_ptr_eq(same, a);
    free(a);
}
END_TEST

START_TEST(rc_names)
{
    ck_assert_str_eq(dw_rc_str(DW_OK), "ok");
    ck_assert_str_eq(dw_rc_str(DW_ERR_PROTOCOL), "protocol error");
    ck_assert_str_eq(dw_rc_str((dw_rc)9999), "unknown error");
    for (int rc = 0; rc < DW_ERR__COUNT; rc++)
        ck_assert_str_ne(dw_rc_str((dw_rc)rc), "unknown error");
}
END_TEST

static Suite *common_suite(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("common");
    tcase_add_test(tc, logfmt_line_shape_and_level_filter);
    tcase_add_test(tc, control_characters_are_escaped);
    tcase_add_test(tc, secrets_are_redacted_even_by_mistake);
    tcase_add_test(tc, redaction_leaves_ordinary_text_alone);
    tcase_add_test(tc, buf_grows_caps_and_escapes);
    tcase_add_test(tc, json_writer_matches_jansson);
    tcase_add_test(tc, json_append_shapes);
    tcase_add_test(tc, text_is_shared_by_counted_references);
    tcase_add_test(tc, lsn_parse_and_format);
    tcase_add_test(tc, jansson_allocates_through_dw_malloc);
    tcase_add_test(tc, arrays_grow_by_doubling);
    tcase_add_test(tc, rc_names);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = common_suite};

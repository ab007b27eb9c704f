/* Unit tests: dvemu's pure parsers (OData keys, $filter, multipart $batch bodies). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/buf.h"
#include "dwasync/dvemu.h"

static struct dw_dvemu_key parse_ok(const char *raw)
{
    struct dw_dvemu_key k = {0};
    ck_assert_int_eq(dw_dvemu_key_parse(raw, strlen(raw), &k), DW_OK);
    return k;
}

START_TEST(key_bare_guid)
{
    struct dw_dvemu_key k = parse_ok("00000000-0000-0000-0000-00000000000A");
    ck_assert_uint_eq(k.nparts, 1);
    ck_assert_ptr_null(k.parts[0].name);
    ck_assert_str_eq(json_string_value(k.parts[0].value), "00000000-0000-0000-0000-00000000000a");
    dw_dvemu_key_cleanup(&k);
}
END_TEST

START_TEST(key_composite_with_lookup_and_quotes)
{
    struct dw_dvemu_key k =
        parse_ok("accountnumber='O''Brien, Ltd',_msdyn_company_value=1b1cec7a-29a2-3cb4-eb03-"
                 "4e755396c50c");
    ck_assert_uint_eq(k.nparts, 2);
    ck_assert_str_eq(k.parts[0].name, "accountnumber");
    ck_assert_str_eq(json_string_value(k.parts[0].value), "O'Brien, Ltd");
    ck_assert_str_eq(k.parts[1].name, "_msdyn_company_value");
    ck_assert_str_eq(json_string_value(k.parts[1].value), "1b1cec7a-29a2-3cb4-eb03-4e755396c50c");
    dw_dvemu_key_cleanup(&k);
}
END_TEST

START_TEST(key_percent_encoded)
{
    /* 'A&B ''x''' percent-encoded after the quotes were doubled */
    struct dw_dvemu_key k = parse_ok("accountnumber=%27A%26B%20%27%27x%27%27%27,sequencenumber=10");
    ck_assert_uint_eq(k.nparts, 2);
    ck_assert_str_eq(json_string_value(k.parts[0].value), "A&B 'x'");
    ck_assert(json_is_integer(k.parts[1].value));
    ck_assert_int_eq(json_integer_value(k.parts[1].value), 10);
    dw_dvemu_key_cleanup(&k);
}
END_TEST

START_TEST(key_malformed)
{
    static const char *const bad[] = {
        "",     "name='unterminated", "a='x',", "a='x' b='y'", "a='x',a='y'", "'x',b='y'",
        "a=%2", "a='x'%00''",         "a=",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct dw_dvemu_key k = {0};
        ck_assert_msg(dw_dvemu_key_parse(bad[i], strlen(bad[i]), &k) != DW_OK, "accepted [%s]",
                      bad[i]);
    }
}
END_TEST

static bool filter_matches(const char *filter, const char *row_json)
{
    struct dw_dvemu_filter *f = NULL;
    char *err = NULL;
    ck_assert_msg(dw_dvemu_filter_parse(filter, &f, &err) == DW_OK, "%s", err ? err : "");
    json_t *row = json_loads(row_json, 0, NULL);
    ck_assert_ptr_nonnull(row);
    bool m = dw_dvemu_filter_match(f, row);
    json_decref(row);
    dw_dvemu_filter_free(f);
    return m;
}

START_TEST(filter_operators)
{
    const char *row = "{\"name\":\"Contoso\",\"n\":5,\"ok\":true,\"nul\":null,"
                      "\"sdkmessageid\":{\"name\":\"UpsertMultiple\"}}";
    ck_assert(filter_matches("name eq 'contoso'", row)); /* case-insensitive like SQL */
    ck_assert(!filter_matches("name ne 'Contoso'", row));
    ck_assert(filter_matches("n gt 4 and n le 5", row));
    ck_assert(!filter_matches("n lt 5", row));
    ck_assert(filter_matches("n eq 1 or ok eq true", row));
    ck_assert(filter_matches("nul eq null and missing eq null and name ne null", row));
    ck_assert(filter_matches("not (n eq 1)", row));
    ck_assert(filter_matches("sdkmessageid/name eq 'UpsertMultiple' and (n ge 5)", row));
    ck_assert(!filter_matches("sdkmessageid/name eq 'CreateMultiple'", row));
    ck_assert(filter_matches("name eq 'O''Brien' or n eq 5", row));
    const char *dated = "{\"modifiedon\":\"2026-11-22T10:00:00Z\"}";
    ck_assert(filter_matches("modifiedon gt 2026-11-22T09:59:59Z", dated));
    ck_assert(!filter_matches("modifiedon lt 2026-11-01", dated));
}
END_TEST

/* "Filter rows using OData" (Microsoft Learn, Dataverse Web API): contains, startswith and
 * endswith; not, parentheses and "and" binding tighter than "or"; null comparisons; lookups
 * by their _x_value property. */
START_TEST(filter_functions_and_precedence)
{
    const char *row = "{\"name\":\"Contoso Pharmaceuticals\",\"n\":5,\"city\":null,"
                      "\"_parentaccountid_value\":\"9b4c2c4e-1111-4222-8333-444455556666\","
                      "\"createdon\":\"2026-11-22T10:00:00Z\"}";
    ck_assert(filter_matches("contains(name,'pharma')", row));
    ck_assert(filter_matches("startswith(name, 'CONTOSO')", row));
    ck_assert(filter_matches("endswith(name,'ceuticals')", row));
    ck_assert(!filter_matches("startswith(name,'Pharma')", row));
    ck_assert(!filter_matches("contains(city,'x')", row)); /* null contains nothing */
    ck_assert(filter_matches("not contains(name,'Fabrikam')", row));
    ck_assert(filter_matches("not startswith(name,'x') and n eq 5", row));
    /* and binds tighter than or: true or (false and false) */
    ck_assert(filter_matches("n eq 5 or n eq 1 and n eq 2", row));
    ck_assert(!filter_matches("(n eq 5 or n eq 1) and n eq 2", row));
    ck_assert(filter_matches("city eq null and name ne null", row));
    ck_assert(
        filter_matches("_parentaccountid_value eq 9B4C2C4E-1111-4222-8333-444455556666", row));
    ck_assert(filter_matches("createdon ge 2026-11-22 and createdon lt 2026-11-23", row));
    ck_assert(filter_matches("n ne 4 and (contains(name,'x') or n gt 4)", row));
}
END_TEST

START_TEST(filter_unknown_function)
{
    struct dw_dvemu_filter *f = NULL;
    char *err = NULL;
    ck_assert_int_ne(dw_dvemu_filter_parse("substringof('x',name)", &f, &err), DW_OK);
    ck_assert_str_eq(err, "An unknown function with name 'substringof' was found. This may also "
                          "be a function import or a key lookup on a navigation property, which "
                          "is not allowed.");
    free(err);
    err = NULL;
    ck_assert_int_ne(dw_dvemu_filter_parse("contains(name)", &f, &err), DW_OK);
    ck_assert_ptr_nonnull(strstr(err, "Syntax error at position"));
    free(err);
}
END_TEST

START_TEST(filter_collation_ignores_trailing_spaces)
{
    const char *row = "{\"code\":\"SO-7\"}";
    ck_assert(filter_matches("code eq 'so-7   '", row));
    ck_assert(filter_matches("code ne 'SO-7 1'", row));
    ck_assert(filter_matches("code lt 'SO-7 1' and code gt 'SO-'", row));
    ck_assert(!filter_matches("code eq ' SO-7'", row)); /* leading spaces count */
}
END_TEST

/* The key terms of a filter, as "name=value;..." per disjunct joined by " | ". */
static char *key_terms(const char *filter)
{
    struct dw_dvemu_filter *f = NULL;
    char *err = NULL;
    ck_assert_msg(dw_dvemu_filter_parse(filter, &f, &err) == DW_OK, "%s", err ? err : "");
    struct dw_dvemu_key *keys = NULL;
    size_t n = 0;
    struct dw_buf b;
    dw_buf_init(&b, 0);
    if (!dw_dvemu_filter_key_terms(f, &keys, &n))
        (void)dw_buf_puts(&b, "none");
    for (size_t i = 0; i < n; i++) {
        if (i)
            (void)dw_buf_puts(&b, " | ");
        for (size_t j = 0; j < keys[i].nparts; j++) {
            char *v = json_dumps(keys[i].parts[j].value, JSON_ENCODE_ANY);
            (void)dw_buf_printf(&b, "%s=%s;", keys[i].parts[j].name, v);
            free(v);
        }
        dw_dvemu_key_cleanup(&keys[i]);
    }
    free(keys);
    dw_dvemu_filter_free(f);
    return dw_buf_steal(&b);
}

START_TEST(filter_key_terms)
{
    static const char *const cases[][2] = {
        {"a eq 1", "a=1;"},
        {"(a eq 'x' and b eq 2) or (a eq 'y' and b eq 3)", "a=\"x\";b=2; | a=\"y\";b=3;"},
        {"a eq 1 or b eq 2 or c eq 3", "a=1; | b=2; | c=3;"},
        {"a eq 1 and b gt 2", "none"},
        {"a eq null", "none"},
        {"not (a eq 1)", "none"},
        {"a/b eq 1", "none"},
        {"a eq 1 or a ne 2", "none"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = key_terms(cases[i][0]);
        ck_assert_msg(strcmp(got, cases[i][1]) == 0, "[%s]: got [%s]", cases[i][0], got);
        free(got);
    }
}
END_TEST

START_TEST(filter_syntax_errors)
{
    static const char *const bad[] = {"name eq",         "name 'x'", "(name eq 'x'",
                                      "name eq 'x' and", "eq 'x'",   "name eq 'x' garbage"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct dw_dvemu_filter *f = NULL;
        char *err = NULL;
        ck_assert_msg(dw_dvemu_filter_parse(bad[i], &f, &err) != DW_OK, "accepted [%s]", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "Syntax error at position"));
        free(err);
    }
}
END_TEST

START_TEST(multipart_batch_with_changeset)
{
    const char *body = "--batch_1\r\n"
                       "Content-Type: multipart/mixed; boundary=\"changeset_2\"\r\n"
                       "\r\n"
                       "--changeset_2\r\n"
                       "Content-Type: application/http\r\n"
                       "Content-Transfer-Encoding: binary\r\n"
                       "Content-ID: 1\r\n"
                       "\r\n"
                       "POST /api/data/v9.2/accounts HTTP/1.1\r\n"
                       "Content-Type: application/json; type=entry\r\n"
                       "\r\n"
                       "{\"name\":\"a\"}\r\n"
                       "--changeset_2--\r\n"
                       "\r\n"
                       "--batch_1\r\n"
                       "Content-Type: application/http\r\n"
                       "Content-Transfer-Encoding: binary\r\n"
                       "\r\n"
                       "GET accounts?$top=1 HTTP/1.1\r\n"
                       "\r\n"
                       "\r\n"
                       "--batch_1--\r\n";
    char *b = NULL;
    ck_assert_int_eq(dw_dvemu_boundary("multipart/mixed; boundary=\"batch_1\"", &b), DW_OK);
    ck_assert_str_eq(b, "batch_1");
    struct dw_dvemu_part *parts = NULL;
    size_t n = 0;
    ck_assert_int_eq(dw_dvemu_multipart_parse(body, strlen(body), b, &parts, &n), DW_OK);
    ck_assert_uint_eq(n, 2);
    char *ct = NULL, *cb = NULL;
    ck_assert_int_eq(
        dw_dvemu_header_get(parts[0].headers, parts[0].headers_len, "content-type", &ct), DW_OK);
    ck_assert_int_eq(dw_dvemu_boundary(ct, &cb), DW_OK);
    ck_assert_str_eq(cb, "changeset_2");
    struct dw_dvemu_part *sub = NULL;
    size_t nsub = 0;
    ck_assert_int_eq(dw_dvemu_multipart_parse(parts[0].body, parts[0].body_len, cb, &sub, &nsub),
                     DW_OK);
    ck_assert_uint_eq(nsub, 1);
    char *cid = NULL;
    ck_assert_int_eq(dw_dvemu_header_get(sub[0].headers, sub[0].headers_len, "Content-ID", &cid),
                     DW_OK);
    ck_assert_str_eq(cid, "1");
    struct dw_dvemu_inner in;
    ck_assert_int_eq(dw_dvemu_inner_parse(sub[0].body, sub[0].body_len, &in), DW_OK);
    ck_assert_str_eq(in.method, "POST");
    ck_assert_int_eq(strncmp(in.url, "/api/data/v9.2/accounts", in.url_len), 0);
    ck_assert_uint_eq(in.body_len, strlen("{\"name\":\"a\"}"));
    ck_assert_int_eq(strncmp(in.body, "{\"name\":\"a\"}", in.body_len), 0);
    ck_assert_int_eq(dw_dvemu_inner_parse(parts[1].body, parts[1].body_len, &in), DW_OK);
    ck_assert_str_eq(in.method, "GET");
    ck_assert_uint_eq(in.body_len, 0);
    free(cid);
    free(sub);
    free(ct);
    free(cb);
    free(parts);
    free(b);
}
END_TEST

START_TEST(multipart_malformed)
{
    struct dw_dvemu_part *parts = NULL;
    size_t n = 0;
    const char *no_end = "--b\r\nContent-Type: application/http\r\n\r\nGET x HTTP/1.1\r\n";
    ck_assert_int_eq(dw_dvemu_multipart_parse(no_end, strlen(no_end), "b", &parts, &n),
                     DW_ERR_PROTOCOL);
    const char *no_start = "garbage only";
    ck_assert_int_eq(dw_dvemu_multipart_parse(no_start, strlen(no_start), "b", &parts, &n),
                     DW_ERR_PROTOCOL);
    char *b = NULL;
    ck_assert_int_ne(dw_dvemu_boundary("multipart/mixed", &b), DW_OK);
    struct dw_dvemu_inner in;
    ck_assert_int_ne(dw_dvemu_inner_parse("not a request", 13, &in), DW_OK);
}
END_TEST

static Suite *dvemu_suite(void)
{
    Suite *s = suite_create("dvemu");
    TCase *tc = tcase_create("parsers");
    tcase_add_test(tc, key_bare_guid);
    tcase_add_test(tc, key_composite_with_lookup_and_quotes);
    tcase_add_test(tc, key_percent_encoded);
    tcase_add_test(tc, key_malformed);
    tcase_add_test(tc, filter_operators);
    tcase_add_test(tc, filter_syntax_errors);
    tcase_add_test(tc, filter_functions_and_precedence);
    tcase_add_test(tc, filter_unknown_function);
    tcase_add_test(tc, filter_collation_ignores_trailing_spaces);
    tcase_add_test(tc, filter_key_terms);
    tcase_add_test(tc, multipart_batch_with_changeset);
    tcase_add_test(tc, multipart_malformed);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = dvemu_suite};

/* Unit tests: key literals, URL encoding (quotes, unicode, unaddressable characters),
 * segments and $filter fallbacks. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/dvkey.h"

static char *segment(const char *key_json, bool encode)
{
    json_t *key = json_loads(key_json, 0, NULL);
    ck_assert_ptr_nonnull(key);
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_dvkey_segment(&b, key, encode), DW_OK);
    json_decref(key);
    return dw_buf_steal(&b);
}

static char *filter(const char *key_json)
{
    json_t *key = json_loads(key_json, 0, NULL);
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_dvkey_filter(&b, key), DW_OK);
    json_decref(key);
    return dw_buf_steal(&b);
}

static void check_literal(json_t *v, bool bare, const char *expected)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_dvkey_literal(&b, v, bare), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), expected);
    dw_buf_cleanup(&b);
    json_decref(v);
}

/* Dataverse names: ^[A-Za-z_][A-Za-z0-9_]*$, checked in keys and in reference sets; a key
 * segment with a name that is not one is refused (it would carry CR/LF into a request). */
START_TEST(identifiers)
{
    static const char *const good[] = {"accounts", "_msdyn_company_value", "A1", "x"};
    static const char *const bad[] = {
        "", "1abc", "acc ounts", "accounts\r\nX: y", "a/b", "a'b", "a#b", "a(b)", "naïve", NULL};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        ck_assert_msg(dw_dvkey_identifier_ok(good[i]), "refused %s", good[i]);
    for (size_t i = 0; bad[i]; i++)
        ck_assert_msg(!dw_dvkey_identifier_ok(bad[i]), "accepted %s", bad[i]);
    ck_assert(!dw_dvkey_identifier_ok(NULL));
    char longest[130];
    memset(longest, 'a', 129);
    longest[129] = '\0';
    ck_assert(!dw_dvkey_identifier_ok(longest)); /* 129 characters */
    longest[128] = '\0';
    ck_assert(dw_dvkey_identifier_ok(longest)); /* 128 */

    json_t *ok = json_loads("{\"k\": 1, \"_p_value\": {\"$ref\": \"cdm_companies\", \"key\": "
                            "{\"cdm_companycode\": \"A#1\"}}}",
                            0, NULL);
    ck_assert(dw_dvkey_names_ok(ok));
    json_decref(ok);
    static const char *const bad_json[] = {
        "{\"p\": {\"$ref\": \"cdm_companies\\r\\nX: y\", \"key\": {\"c\": 1}}}",
        "{\"p\": {\"$ref\": \"cdm_companies\", \"key\": {\"c d\": 1}}}",
        "{\"p\": [{\"$ref\": \"a\", \"key\": {\"b\": {\"$ref\": \"c/d\", \"key\": {\"e\": 1}}}}]}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++) {
        json_t *v = json_loads(bad_json[i], 0, NULL);
        ck_assert_ptr_nonnull(v);
        ck_assert_msg(!dw_dvkey_names_ok(v), "accepted %s", bad_json[i]);
        json_decref(v);
    }
    json_t *key = json_loads("{\"acc\\r\\nX\": \"v\"}", 0, NULL);
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_dvkey_segment(&b, key, true), DW_ERR_INVALID);
    dw_buf_cleanup(&b);
    json_decref(key);
}
END_TEST

START_TEST(literals)
{
    check_literal(json_string("ABC123"), false, "'ABC123'");
    check_literal(json_string("O'Brien"), false, "'O''Brien'");
    check_literal(json_string("''"), false, "''''''");
    check_literal(json_string(""), false, "''");
    check_literal(json_integer(-42), false, "-42");
    check_literal(json_real(12.5), false, "12.5");
    check_literal(json_true(), false, "true");
    check_literal(json_false(), false, "false");
    check_literal(json_string("00000000-0000-0000-0000-000000000001"), true,
                  "00000000-0000-0000-0000-000000000001");
    /* A GUID-looking string in an ordinary key part stays a quoted string. */
    check_literal(json_string("00000000-0000-0000-0000-000000000001"), false,
                  "'00000000-0000-0000-0000-000000000001'");
    /* Not a GUID: quoted even in a lookup part. */
    check_literal(json_string("0000-zz"), true, "'0000-zz'");

    struct dw_buf b;
    dw_buf_init(&b, 0);
    json_t *bad = json_null();
    ck_assert_int_eq(dw_dvkey_literal(&b, bad, false), DW_ERR_INVALID);
    json_t *arr = json_array();
    ck_assert_int_eq(dw_dvkey_literal(&b, arr, false), DW_ERR_INVALID);
    json_decref(arr);
    dw_buf_cleanup(&b);
}
END_TEST

START_TEST(segments_are_quoted_and_encoded)
{
    char *s = segment("{\"accountnumber\":\"ABC123\"}", true);
    ck_assert_str_eq(s, "accountnumber='ABC123'");
    free(s);
    s = segment("{\"firstname\":\"Joe\",\"emailaddress1\":\"abc@example.com\"}", true);
    ck_assert_str_eq(s, "firstname='Joe',emailaddress1='abc%40example.com'");
    free(s);
    s = segment("{\"lastname\":\"O'Brien Smith\"}", true);
    ck_assert_str_eq(s, "lastname='O''Brien%20Smith'");
    free(s);
    /* Unicode goes byte by byte as UTF-8. */
    s = segment("{\"name\":\"M\\u00fcller \\u6771\\u4eac\"}", true);
    ck_assert_str_eq(s, "name='M%C3%BCller%20%E6%9D%B1%E4%BA%AC'");
    free(s);
    s = segment("{\"name\":\"M\\u00fcller\"}", false);
    ck_assert_str_eq(s, "name='M\xc3\xbcller'");
    free(s);
    s = segment("{\"name\":\"a#b\\\"c\"}", true);
    ck_assert_str_eq(s, "name='a%23b%22c'");
    free(s);
    /* Composite with a lookup part: the GUID goes bare, numbers unquoted. */
    s = segment("{\"accountnumber\":\"C1\",\"_msdyn_company_value\":"
                "\"6f0a3c11-2a5b-4c3d-9e8f-0123456789ab\",\"msdyn_line\":3}",
                true);
    ck_assert_str_eq(s, "accountnumber='C1',_msdyn_company_value=6f0a3c11-2a5b-4c3d-9e8f-"
                        "0123456789ab,msdyn_line=3");
    free(s);

    struct dw_buf b;
    dw_buf_init(&b, 0);
    json_t *empty = json_object();
    ck_assert_int_eq(dw_dvkey_segment(&b, empty, true), DW_ERR_INVALID);
    json_t *ref = json_loads("{\"_x_value\":{\"$ref\":\"xs\",\"key\":{\"a\":1}}}", 0, NULL);
    ck_assert_int_eq(dw_dvkey_segment(&b, ref, true), DW_ERR_INVALID);
    json_decref(ref);
    json_decref(empty);
    dw_buf_cleanup(&b);
}
END_TEST

START_TEST(unaddressable_characters)
{
    const char *bad = "/<>*%&:\\?+";
    for (const char *c = bad; *c; c++) {
        char value[8] = {'a', *c, 'b', '\0'};
        json_t *key = json_pack("{s:s}", "k", value);
        ck_assert_msg(!dw_dvkey_addressable(key), "'%c' must be unaddressable", *c);
        json_decref(key);
    }
    json_t *ok = json_pack("{s:s, s:i, s:s}", "k", "plain -._~'#@ text", "n", 5, "u",
                           "\xc3\xbc\xe6\x9d\xb1");
    ck_assert(dw_dvkey_addressable(ok));
    json_decref(ok);

    /* The fallback filter carries those characters percent-encoded. */
    char *f = filter("{\"name\":\"a/b&c+d%e\",\"n\":7}");
    ck_assert_str_eq(f, "name%20eq%20'a%2Fb%26c%2Bd%25e'%20and%20n%20eq%207");
    free(f);
    f = filter("{\"name\":\"x:y\",\"_parent_value\":\"6f0a3c11-2a5b-4c3d-9e8f-0123456789ab\"}");
    ck_assert_str_eq(f, "name%20eq%20'x%3Ay'%20and%20_parent_value%20eq%20"
                        "6f0a3c11-2a5b-4c3d-9e8f-0123456789ab");
    free(f);
}
END_TEST

START_TEST(guids_refs_and_lookup_parts)
{
    ck_assert(dw_dvkey_is_guid("6f0a3c11-2a5b-4c3d-9e8f-0123456789AB"));
    ck_assert(!dw_dvkey_is_guid("6f0a3c11-2a5b-4c3d-9e8f-0123456789a"));
    ck_assert(!dw_dvkey_is_guid("6f0a3c11-2a5b-4c3d-9e8f-0123456789abc"));
    ck_assert(!dw_dvkey_is_guid("6f0a3c112a5b-4c3d-9e8f-0123456789ab"));
    ck_assert(!dw_dvkey_is_guid(""));
    ck_assert(dw_dvkey_is_lookup_part("_msdyn_company_value"));
    ck_assert(!dw_dvkey_is_lookup_part("_value"));
    ck_assert(!dw_dvkey_is_lookup_part("msdyn_value"));
    json_t *ref =
        json_loads("{\"$ref\":\"cdm_companies\",\"key\":{\"cdm_companycode\":\"USMF\"}}", 0, NULL);
    ck_assert(dw_dvkey_is_ref(ref));
    json_decref(ref);
    static const char *const not_refs[] = {
        "{\"$ref\":\"x\"}",
        "{\"$ref\":1,\"key\":{}}",
        "{\"$ref\":\"x\",\"key\":\"k\"}",
        "{\"ref\":\"x\",\"key\":{}}",
        "{\"$ref\":\"x\",\"keys\":{}}",
        "[\"$ref\",\"key\"]",
    };
    for (size_t i = 0; i < sizeof not_refs / sizeof not_refs[0]; i++) {
        json_t *notref = json_loads(not_refs[i], JSON_DECODE_ANY, NULL);
        ck_assert_msg(!dw_dvkey_is_ref(notref), "%s", not_refs[i]);
        json_decref(notref);
    }
    /* Members in either order, and extra ones tolerated. */
    json_t *swapped = json_loads("{\"key\":{\"a\":1},\"note\":0,\"$ref\":\"x\"}", 0, NULL);
    ck_assert(dw_dvkey_is_ref(swapped));
    json_decref(swapped);
}
END_TEST

START_TEST(target_ids_are_canonical)
{
    json_t *a = json_loads("{\"b\":\"2\",\"_p_value\":{\"key\":{\"z\":1,\"y\":\"\\\"\"},"
                           "\"$ref\":\"ps\"}}",
                           0, NULL);
    json_t *b = json_loads("{\"_p_value\":{\"$ref\":\"ps\",\"key\":{\"y\":\"\\\"\",\"z\":1}},"
                           "\"b\":\"2\"}",
                           0, NULL);
    char *ia = dw_dvkey_target_id("accounts", a), *ib = dw_dvkey_target_id("accounts", b);
    ck_assert_str_eq(ia,
                     "accounts({\"_p_value\":{\"$ref\":\"ps\",\"key\":{\"y\":\"\\\"\",\"z\":1}},"
                     "\"b\":\"2\"})");
    ck_assert_str_eq(ia, ib);
    struct dw_buf buf;
    dw_buf_init(&buf, 0);
    ck_assert_int_eq(dw_buf_puts(&buf, "x "), DW_OK);
    ck_assert_int_eq(dw_dvkey_append_target_id(&buf, "accounts", a), DW_OK);
    ck_assert_str_eq(dw_buf_str(&buf) + 2, ia);
    dw_buf_cleanup(&buf);
    free(ia);
    free(ib);
    json_decref(a);
    json_decref(b);
}
END_TEST

/* What a person types after `dataverse get` becomes a URL without losing its syntax. */
START_TEST(typed_paths_are_made_fit_for_a_url)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_dvkey_encode_path(&b, "accounts?$filter=name eq 'A&B'&$top=2"), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "accounts?$filter=name%20eq%20'A&B'&$top=2");
    dw_buf_reset(&b);
    /* Escapes already present are kept; a bare '%' and URL-hostile bytes are encoded. */
    ck_assert_int_eq(
        dw_dvkey_encode_path(&b, "x?$filter=a eq '50%25' or a eq '5% \"#{|}'\t\xc3\xa9"), DW_OK);
    ck_assert_str_eq(
        dw_buf_str(&b),
        "x?$filter=a%20eq%20'50%25'%20or%20a%20eq%20'5%25%20%22%23%7B%7C%7D'%09%C3%A9");
    dw_buf_reset(&b);
    ck_assert_int_eq(dw_dvkey_encode_path(&b, "accounts(name='a',num=1)/primarycontactid"), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b), "accounts(name='a',num=1)/primarycontactid");
    dw_buf_cleanup(&b);
}
END_TEST

static Suite *dvkey_suite(void)
{
    Suite *s = suite_create("dvkey");
    TCase *tc = tcase_create("dvkey");
    tcase_add_test(tc, identifiers);
    tcase_add_test(tc, literals);
    tcase_add_test(tc, segments_are_quoted_and_encoded);
    tcase_add_test(tc, unaddressable_characters);
    tcase_add_test(tc, guids_refs_and_lookup_parts);
    tcase_add_test(tc, target_ids_are_canonical);
    tcase_add_test(tc, typed_paths_are_made_fit_for_a_url);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = dvkey_suite};

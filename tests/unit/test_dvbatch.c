/* Unit tests: the $batch multipart builder and the response parser (documented example
 * responses, LF-only bodies, quoted boundaries, malformed input). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/dvbatch.h"

#define B "batchresponse_9c2b0c5e-1d2f-4b51-8a3c-5d6e7f809a1b"

static char *read_data(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/batch/%s", DW_TEST_DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *data = malloc(1 << 20);
    *len = fread(data, 1, (1 << 20) - 1, f);
    data[*len] = '\0';
    fclose(f);
    return data;
}

START_TEST(build_requests)
{
    struct dw_batch_request reqs[] = {
        {"PATCH", "/api/data/v9.2/accounts(accountnumber='A1')", NULL, "{\"name\":\"x\"}", 12, 0},
        {"DELETE", "/api/data/v9.2/accounts(accountnumber='A2')", "If-Match: *\r\n", NULL, 0, 0},
    };
    struct dw_buf b;
    dw_buf_init(&b, 0);
    ck_assert_int_eq(dw_batch_build(&b, "batch_1", NULL, reqs, 2), DW_OK);
    ck_assert_str_eq(dw_buf_str(&b),
                     "--batch_1\r\nContent-Type: application/http\r\n"
                     "Content-Transfer-Encoding: binary\r\n\r\n"
                     "PATCH /api/data/v9.2/accounts(accountnumber='A1') HTTP/1.1\r\n"
                     "Content-Type: application/json; type=entry\r\n\r\n"
                     "{\"name\":\"x\"}\r\n"
                     "--batch_1\r\nContent-Type: application/http\r\n"
                     "Content-Transfer-Encoding: binary\r\n\r\n"
                     "DELETE /api/data/v9.2/accounts(accountnumber='A2') HTTP/1.1\r\n"
                     "If-Match: *\r\n\r\n\r\n"
                     "--batch_1--\r\n");
    dw_buf_reset(&b);
    ck_assert_int_eq(dw_batch_build(&b, "batch_2", "changeset_2", reqs, 2), DW_OK);
    const char *s = dw_buf_str(&b);
    ck_assert_ptr_nonnull(
        strstr(s, "--batch_2\r\nContent-Type: multipart/mixed; boundary=\"changeset_2\"\r\n\r\n"
                  "--changeset_2\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "Content-ID: 1\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "Content-ID: 2\r\n"));
    ck_assert_ptr_nonnull(strstr(s, "--changeset_2--\r\n--batch_2--\r\n"));
    /* Requests may bring their own Content-IDs (an atomic group less a row keeps its ids). */
    reqs[0].content_id = 3;
    reqs[1].content_id = 7;
    dw_buf_reset(&b);
    ck_assert_int_eq(dw_batch_build(&b, "batch_3", "changeset_3", reqs, 2), DW_OK);
    s = dw_buf_str(&b);
    ck_assert_ptr_nonnull(strstr(s, "Content-ID: 3\r\n\r\nPATCH "));
    ck_assert_ptr_nonnull(strstr(s, "Content-ID: 7\r\n\r\nDELETE "));
    ck_assert_ptr_null(strstr(s, "Content-ID: 1\r\n"));
    dw_buf_cleanup(&b);
}
END_TEST

START_TEST(boundary_from_content_type)
{
    char *b = NULL;
    ck_assert_int_eq(dw_batch_boundary("multipart/mixed; boundary=batchresponse_x", &b), DW_OK);
    ck_assert_str_eq(b, "batchresponse_x");
    free(b);
    ck_assert_int_eq(dw_batch_boundary("multipart/mixed;boundary=\"batch_q; a\"; x=1", &b), DW_OK);
    ck_assert_str_eq(b, "batch_q; a");
    free(b);
    ck_assert_int_eq(dw_batch_boundary("Multipart/Mixed; charset=utf-8; BOUNDARY=z", &b), DW_OK);
    ck_assert_str_eq(b, "z");
    free(b);
    ck_assert_int_eq(dw_batch_boundary("application/json", &b), DW_ERR_PROTOCOL);
    ck_assert_int_eq(dw_batch_boundary("multipart/mixed", &b), DW_ERR_PROTOCOL);
    ck_assert_int_eq(dw_batch_boundary("multipart/mixed; boundary=\"unterminated", &b),
                     DW_ERR_PROTOCOL);
    ck_assert_int_eq(dw_batch_boundary(NULL, &b), DW_ERR_PROTOCOL);
}
END_TEST

START_TEST(parse_documented_mixed_response)
{
    size_t len;
    char *data = read_data("documented_mixed.txt", &len);
    struct dw_batch_response r;
    ck_assert_int_eq(dw_batch_parse("multipart/mixed; boundary=" B, data, len, &r), DW_OK);
    ck_assert_uint_eq(r.nparts, 4);
    ck_assert_int_eq(r.parts[0].status, 204);
    ck_assert_ptr_null(r.parts[0].content_id);
    ck_assert_str_eq(r.parts[0].body, "");
    ck_assert_int_eq(r.parts[1].status, 204);
    ck_assert_str_eq(r.parts[1].content_id, "1");
    ck_assert_str_eq(r.parts[2].content_id, "2");
    ck_assert_int_eq(r.parts[3].status, 200);
    ck_assert_ptr_nonnull(strstr(r.parts[3].body, "\"subject\":\"Task 1\""));
    ck_assert(r.parts[3].body[r.parts[3].body_len - 1] == '}');
    dw_batch_response_cleanup(&r);
    ck_assert_uint_eq(r.nparts, 0);
    free(data);
}
END_TEST

START_TEST(parse_documented_error_response)
{
    size_t len;
    char *data = read_data("documented_error.txt", &len);
    struct dw_batch_response r;
    /* The same boundary, quoted this time. */
    ck_assert_int_eq(dw_batch_parse("multipart/mixed; boundary=\"" B "\"", data, len, &r), DW_OK);
    ck_assert_uint_eq(r.nparts, 1);
    ck_assert_int_eq(r.parts[0].status, 400);
    ck_assert_ptr_nonnull(strstr(r.parts[0].body, "0x80044331"));
    dw_batch_response_cleanup(&r);
    free(data);
}
END_TEST

START_TEST(parse_lf_only_with_content_length)
{
    size_t len;
    char *data = read_data("continue_on_error_lf.txt", &len);
    struct dw_batch_response r;
    ck_assert_int_eq(dw_batch_parse("multipart/mixed; boundary=" B, data, len, &r), DW_OK);
    ck_assert_uint_eq(r.nparts, 3);
    ck_assert_int_eq(r.parts[0].status, 204);
    ck_assert_int_eq(r.parts[1].status, 404);
    ck_assert_str_eq(r.parts[1].body, "{\"error\":{\"code\":\"0x80048d02\",\"message\":\"A record "
                                      "with the specified key values does not exist in "
                                      "account entity\"}}");
    ck_assert_int_eq(r.parts[2].status, 429);
    ck_assert_str_eq(r.parts[2].retry_after, "7");
    dw_batch_response_cleanup(&r);
    free(data);
}
END_TEST

START_TEST(round_trip_of_a_built_body)
{
    /* What the builder writes for requests, parsed as if it were an answer, keeps its
     * framing: the parser and the builder agree on delimiters. */
    const char *resp = "preamble\r\n--b\r\nContent-Type: application/http\r\n\r\n"
                       "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 2\r\n\r\n{}\r\n"
                       "--b  \r\nContent-Type: application/http\r\n\r\n"
                       "HTTP/1.1 201 Created\r\n\r\n{\"a\":\"--b not a delimiter\"}\r\n"
                       "--b--\r\nepilogue";
    struct dw_batch_response r;
    ck_assert_int_eq(dw_batch_parse("multipart/mixed; boundary=b", resp, strlen(resp), &r), DW_OK);
    ck_assert_uint_eq(r.nparts, 2);
    ck_assert_int_eq(r.parts[0].status, 412);
    ck_assert_str_eq(r.parts[0].body, "{}");
    ck_assert_int_eq(r.parts[1].status, 201);
    ck_assert_str_eq(r.parts[1].body, "{\"a\":\"--b not a delimiter\"}");
    dw_batch_response_cleanup(&r);
}
END_TEST

START_TEST(malformed_responses_are_refused)
{
    static const char *const bad[] = {
        "",                                                              /* empty */
        "--b\r\n",                                                       /* no close */
        "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204\r\n", /* truncated */
        "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 2x4 No\r\n\r\n--b--",
        "--b\r\nContent-Type: application/http\r\n\r\nGARBAGE\r\n--b--",
        "--b\r\nno blank line ever\r\n--b--",
        "--b--", /* no parts */
        "--bogus\r\n\r\nHTTP/1.1 204 No\r\n--b--",
        "--bX\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No\r\n\r\n--b--",
        /* nesting deeper than one changeset */
        "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: "
        "multipart/mixed; boundary=d\r\n\r\n--d\r\nContent-Type: application/http\r\n\r\n"
        "HTTP/1.1 204 No\r\n\r\n--d--\r\n--c--\r\n--b--",
        /* a nested changeset without its boundary */
        "--b\r\nContent-Type: multipart/mixed\r\n\r\n--c--\r\n--b--",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct dw_batch_response r = {NULL, 0};
        ck_assert_msg(dw_batch_parse("multipart/mixed; boundary=b", bad[i], strlen(bad[i]), &r) ==
                          DW_ERR_PROTOCOL,
                      "input %zu accepted", i);
        ck_assert_uint_eq(r.nparts, 0);
    }
    struct dw_batch_response r;
    ck_assert_int_eq(dw_batch_parse("application/json", "{}", 2, &r), DW_ERR_PROTOCOL);
    /* A Content-Length larger than the part is ignored rather than trusted. */
    const char *lying = "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\n"
                        "Content-Length: 99999\r\n\r\n{\"x\":1}\r\n--b--";
    ck_assert_int_eq(dw_batch_parse("multipart/mixed; boundary=b", lying, strlen(lying), &r),
                     DW_OK);
    ck_assert_str_eq(r.parts[0].body, "{\"x\":1}");
    dw_batch_response_cleanup(&r);
}
END_TEST

static Suite *dvbatch_suite(void)
{
    Suite *s = suite_create("dvbatch");
    TCase *tc = tcase_create("dvbatch");
    tcase_add_test(tc, build_requests);
    tcase_add_test(tc, boundary_from_content_type);
    tcase_add_test(tc, parse_documented_mixed_response);
    tcase_add_test(tc, parse_documented_error_response);
    tcase_add_test(tc, parse_lf_only_with_content_length);
    tcase_add_test(tc, round_trip_of_a_built_body);
    tcase_add_test(tc, malformed_responses_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = dvbatch_suite};

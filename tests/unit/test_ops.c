/* Unit tests: metrics registry and exposition, the daemon's counts of changes, the HTTP listener
 * driven in-process, progress math, signal flags, watchdog interval. */
#include <check.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/changemetrics.h"
#include "dwasync/daemon.h"
#include "dwasync/log.h"
#include "dwasync/metrics.h"
#include "dwasync/sink.h"

START_TEST(names_follow_conventions)
{
    struct dw_metrics *m = dw_metrics_new();
    FILE *sink = fopen("/dev/null", "w");
    dw_log_set_stream(sink);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_x_total", DW_METRIC_COUNTER, "x"), DW_OK);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_x_total", DW_METRIC_COUNTER, "x"), DW_OK);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_x_total", DW_METRIC_GAUGE, "x"), DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_y", DW_METRIC_COUNTER, "y"), DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_y_total", DW_METRIC_GAUGE, "y"), DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define(m, "other_total", DW_METRIC_COUNTER, "o"), DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_bad-name", DW_METRIC_GAUGE, "b"),
                     DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    /* Undefined families, wrong types, bad labels and negative deltas are refused. */
    ck_assert_int_eq(dw_metrics_inc(m, "dwasync_nope_total", NULL, 1), DW_ERR_NOT_FOUND);
    ck_assert_int_eq(dw_metrics_set(m, DW_M_CHANGES_APPLIED, NULL, 1), DW_ERR_NOT_FOUND);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, NULL, -1), DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, (const char *[]){"__x", "1", NULL}, 1),
                     DW_ERR_INVALID);
    ck_assert_int_eq(
        dw_metrics_inc(m, DW_M_CHANGES_APPLIED, (const char *[]){"job", "a", "job", "b", NULL}, 1),
        DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, (const char *[]){"job", NULL}, 1),
                     DW_ERR_INVALID);
    dw_log_set_stream(NULL);
    fclose(sink);
    dw_metrics_free(m);
}
END_TEST

START_TEST(series_by_label_set)
{
    struct dw_metrics *m = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    const char *a[] = {"job", "crm", "table", "custtable", "class", "insert", NULL};
    const char *a_reordered[] = {"class", "insert", "table", "custtable", "job", "crm", NULL};
    const char *b[] = {"job", "crm", "table", "custtable", "class", "delete", NULL};
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, a, 3), DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, a_reordered, 2), DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_CHANGES_APPLIED, b, 1), DW_OK);
    double v = 0;
    ck_assert_int_eq(dw_metrics_get(m, DW_M_CHANGES_APPLIED, a, &v), DW_OK);
    ck_assert(v == 5.0);
    ck_assert_int_eq(dw_metrics_get(m, DW_M_CHANGES_APPLIED, b, &v), DW_OK);
    ck_assert(v == 1.0);
    ck_assert_int_eq(dw_metrics_get(m, DW_M_CHANGES_PARKED, a, &v), DW_ERR_NOT_FOUND);
    ck_assert_int_eq(
        dw_metrics_set(m, DW_M_SLOT_LAG_BYTES, (const char *[]){"job", "crm", NULL}, 100), DW_OK);
    ck_assert_int_eq(
        dw_metrics_set(m, DW_M_SLOT_LAG_BYTES, (const char *[]){"job", "crm", NULL}, 40), DW_OK);
    ck_assert_int_eq(
        dw_metrics_get(m, DW_M_SLOT_LAG_BYTES, (const char *[]){"job", "crm", NULL}, &v), DW_OK);
    ck_assert(v == 40.0);
    dw_metrics_free(m);
}
END_TEST

START_TEST(series_count_is_capped)
{
    struct dw_metrics *m = dw_metrics_new();
    FILE *sink = fopen("/dev/null", "w");
    dw_log_set_stream(sink);
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    char name[32];
    for (int i = 0; i < DW_METRICS_MAX_SERIES; i++) {
        snprintf(name, sizeof name, "t%d", i);
        ck_assert_int_eq(dw_metrics_inc(m, DW_M_THROTTLED, (const char *[]){"job", name, NULL}, 1),
                         DW_OK);
    }
    ck_assert_int_eq(
        dw_metrics_inc(m, DW_M_THROTTLED, (const char *[]){"job", "one-more", NULL}, 1),
        DW_ERR_RANGE);
    /* Existing series still move. */
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_THROTTLED, (const char *[]){"job", "t0", NULL}, 1),
                     DW_OK);
    dw_log_set_stream(NULL);
    fclose(sink);
    dw_metrics_free(m);
}
END_TEST

START_TEST(exposition_format)
{
    struct dw_metrics *m = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_b_total", DW_METRIC_COUNTER,
                                       "Help with a \\ backslash\nand a newline."),
                     DW_OK);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_a_bytes", DW_METRIC_GAUGE, "A gauge."), DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, "dwasync_b_total",
                                    (const char *[]){"table", "we\"ird\\na\nme", "job", "z", NULL},
                                    2),
                     DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, "dwasync_b_total", (const char *[]){"job", "a", NULL}, 0.5),
                     DW_OK);
    ck_assert_int_eq(dw_metrics_set(m, "dwasync_a_bytes", NULL, 1e20), DW_OK);
    struct dw_buf out;
    dw_buf_init(&out, 0);
    ck_assert_int_eq(dw_metrics_render(m, &out), DW_OK);
    ck_assert_str_eq(dw_buf_str(&out),
                     "# HELP dwasync_a_bytes A gauge.\n"
                     "# TYPE dwasync_a_bytes gauge\n"
                     "dwasync_a_bytes 1e+20\n"
                     "# HELP dwasync_b_total Help with a \\\\ backslash\\nand a newline.\n"
                     "# TYPE dwasync_b_total counter\n"
                     "dwasync_b_total{job=\"a\"} 0.5\n"
                     "dwasync_b_total{job=\"z\",table=\"we\\\"ird\\\\na\\nme\"} 2\n");
    dw_buf_reset(&out);
    dw_metrics_format_value(1.0 / 0.0, &out);
    dw_metrics_format_value(-1.0 / 0.0, &out);
    dw_metrics_format_value(0.0 / 0.0, &out);
    dw_metrics_format_value(12345678901.0, &out);
    ck_assert_str_eq(dw_buf_str(&out), "+Inf-InfNaN12345678901");
    dw_buf_cleanup(&out);
    dw_metrics_free(m);
}
END_TEST

START_TEST(histogram_exposition)
{
    struct dw_metrics *m = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_x_bytes", DW_METRIC_HISTOGRAM, "Wrong unit."),
                     DW_ERR_INVALID);
    ck_assert_int_eq(dw_metrics_define(m, "dwasync_x_seconds", DW_METRIC_HISTOGRAM, "Latency."),
                     DW_OK);
    const char *labels[] = {"job", "j", NULL};
    ck_assert_int_eq(dw_metrics_observe(m, "dwasync_x_seconds", labels, 0.0625), DW_OK);
    ck_assert_int_eq(dw_metrics_observe(m, "dwasync_x_seconds", labels, 0.03125), DW_OK);
    ck_assert_int_eq(dw_metrics_observe(m, "dwasync_x_seconds", labels, 1000), DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, "dwasync_x_seconds", labels, 1), DW_ERR_NOT_FOUND);
    struct dw_buf out;
    dw_buf_init(&out, 0);
    ck_assert_int_eq(dw_metrics_render(m, &out), DW_OK);
    ck_assert_str_eq(dw_buf_str(&out), "# HELP dwasync_x_seconds Latency.\n"
                                       "# TYPE dwasync_x_seconds histogram\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"0.05\"} 1\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"0.1\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"0.25\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"0.5\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"1\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"2.5\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"5\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"10\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"30\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"60\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"300\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"900\"} 2\n"
                                       "dwasync_x_seconds_bucket{job=\"j\",le=\"+Inf\"} 3\n"
                                       "dwasync_x_seconds_sum{job=\"j\"} 1000.09375\n"
                                       "dwasync_x_seconds_count{job=\"j\"} 3\n");
    dw_buf_cleanup(&out);
    dw_metrics_free(m);
}
END_TEST

/* The rendered registry without what the clock or the process decides: the latency's _sum
 * and the process's RSS. */
static char *render_counts(struct dw_metrics *m)
{
    struct dw_buf out, kept;
    dw_buf_init(&out, 0);
    dw_buf_init(&kept, 0);
    ck_assert_int_eq(dw_metrics_render(m, &out), DW_OK);
    for (char *line = out.data, *end; *line; line = end + 1) {
        end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        if (strncmp(line, DW_M_APPLY_LATENCY "_sum", strlen(DW_M_APPLY_LATENCY "_sum")) != 0 &&
            strncmp(line, DW_M_RSS " ", strlen(DW_M_RSS " ")) != 0)
            dw_buf_printf(&kept, "%.*s\n", (int)(end - line), line);
    }
    dw_buf_cleanup(&out);
    return kept.data;
}

START_TEST(change_counts_are_the_registrys_own)
{
    /* Counted through the kept series and straight into the registry, the same changes give
     * the same exposition: series made when first counted, errors only for failures, latency
     * per map; a job name too long to be kept still counts. */
    struct dw_metrics *kept = dw_metrics_new(), *direct = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define_standard(kept), DW_OK);
    ck_assert_int_eq(dw_metrics_define_standard(direct), DW_OK);
    struct dw_change_metrics *cm = dw_change_metrics_new(kept);
    char long_job[1200];
    memset(long_job, 'j', sizeof long_job - 1);
    long_job[sizeof long_job - 1] = '\0';
    static const struct {
        enum dw_observed what;
        const char *table, *class_name;
    } events[] = {
        {DW_OBSERVED_RECEIVED, "custtable", "insert"},
        {DW_OBSERVED_RECEIVED, "custtable", "insert"},
        {DW_OBSERVED_RECEIVED, "salesline", "update"},
        {DW_OBSERVED_APPLIED, "custtable", "insert"},
        {DW_OBSERVED_PARKED, "salesline", "validation"},
        {DW_OBSERVED_PARKED, "salesline", "waiting"},
        {DW_OBSERVED_APPLIED, "custtable", "insert"},
        {DW_OBSERVED_PARKED, "salesline", "validation"},
    };
    const char *jobs[] = {"crm", "erp", long_job};
    for (size_t j = 0; j < 3; j++)
        for (size_t i = 0; i < sizeof events / sizeof *events; i++) {
            char qualified[256];
            snprintf(qualified, sizeof qualified, "fno.%s", events[i].table);
            const char *labels[] = {
                "job", jobs[j], "table", qualified, "class", events[i].class_name, NULL};
            const char *by_map[] = {"job", jobs[j], "map", "customers", NULL};
            dw_change_metrics_count(cm, jobs[j], events[i].what, "fno", events[i].table,
                                    "customers", events[i].class_name, 1);
            const char *family = events[i].what == DW_OBSERVED_RECEIVED  ? DW_M_CHANGES_RECEIVED
                                 : events[i].what == DW_OBSERVED_APPLIED ? DW_M_CHANGES_APPLIED
                                                                         : DW_M_CHANGES_PARKED;
            ck_assert_int_eq(dw_metrics_inc(direct, family, labels, 1), DW_OK);
            if (events[i].what == DW_OBSERVED_PARKED && strcmp(events[i].class_name, "waiting"))
                ck_assert_int_eq(dw_metrics_inc(direct, DW_M_ERRORS, labels, 1), DW_OK);
            if (events[i].what == DW_OBSERVED_APPLIED) /* committed in 1970: the +Inf bucket */
                ck_assert_int_eq(dw_metrics_observe(direct, DW_M_APPLY_LATENCY, by_map, 1e9),
                                 DW_OK);
        }
    char *a = render_counts(kept), *b = render_counts(direct);
    if (strcmp(a, b) != 0) /* Check's messages are too short for two expositions */
        fprintf(stderr, "kept:\n%s\ndirect:\n%s", a, b);
    ck_assert(strcmp(a, b) == 0);
    ck_assert_ptr_nonnull(strstr(a, "dwasync_errors_total{class=\"validation\",job=\"crm\","));
    ck_assert_ptr_null(strstr(a, "dwasync_errors_total{class=\"waiting\""));
    free(a);
    free(b);
    dw_change_metrics_free(cm);
    dw_metrics_free(kept);
    dw_metrics_free(direct);
}
END_TEST

START_TEST(sink_stats_become_counters)
{
    struct dw_metrics *m = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    struct dw_sink_stats seen, now;
    memset(&seen, 0, sizeof seen);
    memset(&now, 0, sizeof now);
    now.responses_2xx = 10;
    now.responses_4xx = 3;
    now.throttled = 2;
    now.retries = 4;
    now.retry_sleep_ms = 1500;
    now.token_renewals = 1;
    dw_metrics_add_sink_stats(m, "crm", &now, &seen);
    now.responses_2xx = 15;
    now.retry_sleep_ms = 2500;
    dw_metrics_add_sink_stats(m, "crm", &now, &seen);
    double v = -1;
    ck_assert_int_eq(
        dw_metrics_get(m, DW_M_REQUESTS, (const char *[]){"job", "crm", "status", "2xx", NULL}, &v),
        DW_OK);
    ck_assert(v == 15.0);
    ck_assert_int_eq(
        dw_metrics_get(m, DW_M_REQUESTS, (const char *[]){"job", "crm", "status", "4xx", NULL}, &v),
        DW_OK);
    ck_assert(v == 3.0);
    ck_assert_int_eq(dw_metrics_get(m, DW_M_THROTTLED, (const char *[]){"job", "crm", NULL}, &v),
                     DW_OK);
    ck_assert(v == 2.0);
    ck_assert_int_eq(
        dw_metrics_get(m, DW_M_RETRY_SLEEP_SECS, (const char *[]){"job", "crm", NULL}, &v), DW_OK);
    ck_assert(v == 2.5);
    ck_assert_int_eq(
        dw_metrics_get(m, DW_M_TOKEN_RENEWALS, (const char *[]){"job", "crm", NULL}, &v), DW_OK);
    ck_assert(v == 1.0);
    /* A new sink starts its counters at 0: the counter keeps growing, never drops. */
    memset(&now, 0, sizeof now);
    now.throttled = 1;
    dw_metrics_add_sink_stats(m, "crm", &now, &seen);
    ck_assert_int_eq(dw_metrics_get(m, DW_M_THROTTLED, (const char *[]){"job", "crm", NULL}, &v),
                     DW_OK);
    ck_assert(v == 3.0);
    dw_metrics_free(m);
}
END_TEST

START_TEST(rss_is_reported)
{
    struct dw_metrics *m = dw_metrics_new();
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    dw_metrics_update_process(m);
    double rss = 0;
    ck_assert_int_eq(dw_metrics_get(m, DW_M_RSS, NULL, &rss), DW_OK);
    ck_assert(rss > 1024 * 1024);
    dw_metrics_free(m);
}
END_TEST

START_TEST(listen_address_parsing)
{
    struct sockaddr_storage sa;
    unsigned len = 0;
    FILE *sink = fopen("/dev/null", "w");
    dw_log_set_stream(sink);
    ck_assert_int_eq(dw_metrics_parse_listen("127.0.0.1:9187", &sa, &len), DW_OK);
    ck_assert_int_eq(sa.ss_family, AF_INET);
    ck_assert_int_eq(dw_metrics_parse_listen("[::1]:9187", &sa, &len), DW_OK);
    ck_assert_int_eq(sa.ss_family, AF_INET6);
    ck_assert_int_eq(dw_metrics_parse_listen("127.0.0.1", &sa, &len), DW_ERR_CONFIG);
    ck_assert_int_eq(dw_metrics_parse_listen("127.0.0.1:99999", &sa, &len), DW_ERR_CONFIG);
    ck_assert_int_eq(dw_metrics_parse_listen("127.0.0.1:x", &sa, &len), DW_ERR_CONFIG);
    ck_assert_int_eq(dw_metrics_parse_listen("::1:80", &sa, &len), DW_ERR_CONFIG);
    ck_assert_int_eq(dw_metrics_parse_listen("", &sa, &len), DW_ERR_CONFIG);
    dw_log_set_stream(NULL);
    fclose(sink);
}
END_TEST

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    dw_buf_append(ud, data, size * n);
    return size * n;
}

static bool healthy;
static void health_cb(void *ud, struct dw_health *h)
{
    (void)ud;
    snprintf(h->job, sizeof h->job, "crm");
    h->job_active = true;
    h->stream_ok = true;
    h->dataverse_ok = healthy;
}

/* One GET served by the listener on this very thread: curl multi and MHD take turns,
 * as the daemon's loop does. */
static long fetch(struct dw_metrics_server *s, const char *path, struct dw_buf *body)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", dw_metrics_server_port(s), path);
    CURL *e = curl_easy_init();
    CURLM *multi = curl_multi_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_multi_add_handle(multi, e);
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        struct pollfd pfd = {.fd = dw_metrics_server_fd(s), .events = POLLIN};
        poll(&pfd, 1, 10);
        ck_assert_int_eq(dw_metrics_server_run(s), DW_OK);
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(multi, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(multi);
    return status;
}

START_TEST(listener_serves_metrics_and_health)
{
    struct dw_metrics *m = dw_metrics_new();
    struct dw_metrics_server *s = NULL;
    FILE *sink = fopen("/dev/null", "w");
    dw_log_set_stream(sink);
    ck_assert_int_eq(dw_metrics_define_standard(m), DW_OK);
    ck_assert_int_eq(dw_metrics_inc(m, DW_M_THROTTLED, (const char *[]){"job", "crm", NULL}, 7),
                     DW_OK);
    ck_assert_int_eq(dw_metrics_server_start("127.0.0.1:0", m, health_cb, NULL, &s), DW_OK);
    ck_assert_uint_gt(dw_metrics_server_port(s), 0);
    ck_assert_int_ge(dw_metrics_server_fd(s), 0);
    struct dw_buf body;
    dw_buf_init(&body, 0);
    ck_assert_int_eq(fetch(s, "/metrics", &body), 200);
    ck_assert_ptr_nonnull(
        strstr(dw_buf_str(&body), "dwasync_dataverse_throttled_total{job=\"crm\"} 7\n"));
    ck_assert_ptr_nonnull(
        strstr(dw_buf_str(&body), "# TYPE dwasync_process_resident_memory_bytes gauge\n"));
    dw_buf_reset(&body);
    healthy = true;
    ck_assert_int_eq(fetch(s, "/healthz", &body), 200);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&body), "\"status\":\"ok\""));
    dw_buf_reset(&body);
    healthy = false;
    ck_assert_int_eq(fetch(s, "/healthz", &body), 503);
    ck_assert_ptr_nonnull(
        strstr(dw_buf_str(&body), "\"reasons\":[\"dataverse is not reachable\"]"));
    dw_buf_reset(&body);
    ck_assert_int_eq(fetch(s, "/nope", &body), 404);
    dw_buf_cleanup(&body);
    /* A second listener on the same port is a clear error, not a crash. */
    char listen[64];
    struct dw_metrics_server *s2 = NULL;
    snprintf(listen, sizeof listen, "127.0.0.1:%u", dw_metrics_server_port(s));
    ck_assert_int_eq(dw_metrics_server_start(listen, m, NULL, NULL, &s2), DW_ERR_IO);
    dw_metrics_server_free(s);
    dw_metrics_free(m);
    dw_log_set_stream(NULL);
    fclose(sink);
}
END_TEST

START_TEST(backoff_is_capped_exponential_with_jitter)
{
    struct dw_backoff b;
    dw_backoff_init(&b, 200, 1000);
    ck_assert(dw_backoff_due(&b, 0));
    uint64_t steps[] = {200, 400, 800, 1000, 1000};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        uint64_t d = dw_backoff_failed(&b, 10000);
        ck_assert_uint_ge(d, steps[i] / 2); /* half fixed, half random: never below */
        ck_assert_uint_le(d, steps[i]);     /* and never past the step (the cap) */
        ck_assert(!dw_backoff_due(&b, 10000 + d - 1));
        ck_assert(dw_backoff_due(&b, 10000 + d));
        ck_assert_int_eq(dw_backoff_timeout_ms(&b, 10000), (int)d);
    }
    ck_assert_uint_eq(b.failures, 5);
    ck_assert_uint_eq(b.reconnects, 0);
    dw_backoff_succeeded(&b);
    ck_assert_uint_eq(b.reconnects, 1);
    ck_assert(dw_backoff_due(&b, 0));
    ck_assert_uint_le(dw_backoff_failed(&b, 0), 200); /* a success starts over */
    dw_backoff_succeeded(&b);
    dw_backoff_succeeded(&b); /* a success without failures is no reconnect */
    ck_assert_uint_eq(b.reconnects, 2);
}
END_TEST

START_TEST(progress_math)
{
    struct dw_progress p;
    FILE *sink = fopen("/dev/null", "w");
    dw_log_set_stream(sink);
    dw_progress_init(&p, "initial sync of \"custtable\"", 5000, NULL, 0, 1000);
    ck_assert(dw_progress_rate(&p, 1000) == 0.0);
    ck_assert_int_eq(dw_progress_eta_seconds(&p, 1000), -1);
    dw_progress_update(&p, 1200, 4000); /* 1200 rows in 3 s: 400 rows/s */
    ck_assert(dw_progress_rate(&p, 4000) == 400.0);
    ck_assert_int_eq(dw_progress_eta_seconds(&p, 4000), 10); /* 3800 / 400 = 9.5, rounded up */
    struct dw_buf out;
    dw_buf_init(&out, 0);
    dw_progress_format(&p, 4000, &out);
    ck_assert_str_eq(dw_buf_str(&out),
                     "initial sync of \"custtable\": 1200/5000 rows (24.0%), 400 rows/s, eta 10s");
    /* Long runs print hours; unknown totals print no percentage and no eta. */
    dw_progress_init(&p, "replay", 1000000, NULL, 0, 0);
    dw_progress_update(&p, 100, 1000);
    dw_buf_reset(&out);
    dw_progress_format(&p, 1000, &out);
    ck_assert_str_eq(dw_buf_str(&out), "replay: 100/1000000 rows (0.0%), 100 rows/s, eta 2h46m39s");
    dw_progress_init(&p, "bulk", 0, NULL, 0, 0);
    dw_progress_update(&p, 50, 2000);
    ck_assert_int_eq(dw_progress_eta_seconds(&p, 2000), -1);
    dw_buf_reset(&out);
    dw_progress_format(&p, 2000, &out);
    ck_assert_str_eq(dw_buf_str(&out), "bulk: 50 rows, 25 rows/s");
    dw_progress_update(&p, 50, 2000);
    ck_assert_int_eq(dw_progress_eta_seconds(&p, 2000), -1);
    dw_buf_cleanup(&out);
    dw_log_set_stream(NULL);
    fclose(sink);
}
END_TEST

START_TEST(progress_logs_at_interval)
{
    char *text = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&text, &len);
    dw_log_set_stream(log);
    dw_log_configure(DW_LOG_INFO, DW_LOG_LOGFMT);
    struct dw_progress p;
    dw_progress_init(&p, "sync", 100, NULL, 1000, 0);
    dw_progress_update(&p, 10, 500);  /* not due */
    dw_progress_update(&p, 20, 1000); /* due */
    dw_progress_update(&p, 30, 1500); /* not due */
    dw_progress_finish(&p, 2000);
    fflush(log);
    ck_assert_ptr_nonnull(strstr(text, "sync: 20/100 rows (20.0%), 20 rows/s, eta 4s"));
    ck_assert_ptr_null(strstr(text, "sync: 10/100"));
    /* Exactly two lines: the one due at 1000 ms and the final one. */
    int lines = 0;
    for (const char *c = text; (c = strstr(c, "sync: ")) != NULL; c++)
        lines++;
    ck_assert_int_eq(lines, 2);
    ck_assert_ptr_nonnull(
        strstr(text, "sync: 30/100 rows (30.0%), 15 rows/s, eta 5s (done in 2.0s)"));
    dw_log_set_stream(NULL);
    fclose(log);
    free(text);
}
END_TEST

/* On a terminal, a log line written while the live progress line is drawn erases that line
 * first (it starts at the left margin, never after the progress text), and the next redraw
 * draws the progress line again. */
START_TEST(log_lines_erase_the_live_progress_line)
{
    char *text = NULL;
    size_t len = 0;
    FILE *tty = open_memstream(&text, &len);
    dw_log_set_stream(tty);
    dw_log_set_timestamps(false);
    dw_log_configure(DW_LOG_INFO, DW_LOG_LOGFMT);
    struct dw_progress p;
    dw_progress_init(&p, "sync", 100, tty, 0, 0);
    p.live = true; /* as on a terminal */
    dw_progress_update(&p, 10, 1000);
    DW_INFO("a table was copied");
    DW_INFO("and another");
    dw_progress_update(&p, 20, 2000);
    dw_progress_finish(&p, 3000);
    DW_INFO("after the report");
    fflush(tty);
    ck_assert_str_eq(text, "\rsync: 10/100 rows (10.0%), 10 rows/s, eta 9s\033[K"
                           "\r\033[Klevel=info msg=\"a table was copied\"\n"
                           "level=info msg=\"and another\"\n"
                           "\rsync: 20/100 rows (20.0%), 10 rows/s, eta 8s\033[K"
                           "\rsync: 20/100 rows (20.0%), 7 rows/s, eta 12s (done in 3.0s)\033[K\n"
                           "level=info msg=\"after the report\"\n");
    dw_log_set_stream(NULL);
    dw_log_set_timestamps(true);
    fclose(tty);
    free(text);
}
END_TEST

START_TEST(signals_set_flags_and_wake_the_loop)
{
    int fd = -1;
    ck_assert_int_eq(dw_daemon_signals_install(&fd), DW_OK);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_eq(dw_daemon_signals_take(), 0);
    raise(SIGHUP);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pfd, 1, 1000), 1);
    ck_assert_uint_eq(dw_daemon_signals_take(), DW_SIGNAL_RELOAD);
    ck_assert_uint_eq(dw_daemon_signals_take(), 0); /* reload is consumed */
    ck_assert_int_eq(poll(&pfd, 1, 0), 0);          /* and the pipe drained */
    ck_assert(!dw_daemon_stop_requested());
    raise(SIGTERM);
    ck_assert_uint_eq(dw_daemon_signals_take(), DW_SIGNAL_STOP);
    ck_assert(dw_daemon_stop_requested());
    ck_assert_uint_eq(dw_daemon_signals_take(), DW_SIGNAL_STOP); /* stop stays requested */
    dw_daemon_signals_restore();
    ck_assert(!dw_daemon_stop_requested());
}
END_TEST

START_TEST(watchdog_interval)
{
    struct dw_watchdog w;
    unsetenv("WATCHDOG_USEC");
    dw_watchdog_init(&w, 0);
    ck_assert(!w.enabled);
    ck_assert_int_eq(dw_watchdog_timeout_ms(&w, 0), -1);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    setenv("WATCHDOG_USEC", "30000000", 1);
    dw_watchdog_init(&w, 1000);
    ck_assert(w.enabled);
    ck_assert_uint_eq(w.interval_ms, 15000);
    ck_assert_int_eq(dw_watchdog_timeout_ms(&w, 1000), 15000);
    ck_assert_int_eq(dw_watchdog_timeout_ms(&w, 11000), 5000);
    dw_watchdog_tick(&w, 16000); /* no NOTIFY_SOCKET: sd_notify is a no-op, time still moves */
    ck_assert_int_eq(dw_watchdog_timeout_ms(&w, 16000), 15000);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_add_test(tc, names_follow_conventions);
    tcase_add_test(tc, backoff_is_capped_exponential_with_jitter);
    tcase_add_test(tc, series_by_label_set);
    tcase_add_test(tc, series_count_is_capped);
    tcase_add_test(tc, exposition_format);
    tcase_add_test(tc, histogram_exposition);
    tcase_add_test(tc, change_counts_are_the_registrys_own);
    tcase_add_test(tc, sink_stats_become_counters);
    tcase_add_test(tc, rss_is_reported);
    tcase_add_test(tc, listen_address_parsing);
    tcase_add_test(tc, listener_serves_metrics_and_health);
    tcase_add_test(tc, progress_math);
    tcase_add_test(tc, progress_logs_at_interval);
    tcase_add_test(tc, log_lines_erase_the_live_progress_line);
    tcase_add_test(tc, signals_set_flags_and_wake_the_loop);
    tcase_add_test(tc, watchdog_interval);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = ops_suite};

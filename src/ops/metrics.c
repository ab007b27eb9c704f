/*
 * The metrics registry, its Prometheus text exposition, and the /metrics and /healthz
 * listener on libmicrohttpd in external polling mode (see metrics.h for the rules), plus the
 * glue that copies the sink's counters and the process's RSS into the standard families.
 * Everything runs on the daemon's one thread; nothing here takes a lock.
 */
#include "dwasync/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uthash.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/sink.h"

static const double seconds_bounds[] = DW_METRICS_SECONDS_BOUNDS;
#define NBOUNDS (sizeof seconds_bounds / sizeof *seconds_bounds)

struct dw_metric_series {
    char *labels;      /* rendered, sorted label set: job="a",table="b" ("" when none); hash key */
    double value;      /* a histogram's: the sum of its observations */
    uint64_t *buckets; /* histograms: observations per bound (not cumulative), NBOUNDS + 1 */
    uint64_t count;    /* histograms: observations */
    UT_hash_handle hh;
};

struct family {
    char *name; /* hash key */
    char *help;
    enum dw_metric_type type;
    struct dw_metric_series *series;
    unsigned nseries;
    bool overflow_logged;
    UT_hash_handle hh;
};

struct dw_metrics {
    struct family *families;
};

struct dw_metrics *dw_metrics_new(void)
{
    return dw_calloc(1, sizeof(struct dw_metrics));
}

void dw_metrics_free(struct dw_metrics *m)
{
    if (m == NULL)
        return;
    struct family *f, *ftmp;
    HASH_ITER(hh, m->families, f, ftmp)
    {
        struct dw_metric_series *s, *stmp;
        HASH_ITER(hh, f->series, s, stmp)
        {
            HASH_DEL(f->series, s);
            free(s->labels);
            free(s->buckets);
            free(s);
        }
        HASH_DEL(m->families, f);
        free(f->name);
        free(f->help);
        free(f);
    }
    free(m);
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const char *c = s; *c; c++) {
        bool alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                     (colon_ok && *c == ':');
        bool digit = *c >= '0' && *c <= '9';
        if (!alpha && !(digit && c != s))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

dw_rc dw_metrics_define(struct dw_metrics *m, const char *name, enum dw_metric_type type,
                        const char *help)
{
    if (!valid_name(name, true) || strncmp(name, "dwasync_", 8) != 0) {
        DW_ERROR("metric name \"%s\" is not a valid dwasync_ prometheus name", name);
        return DW_ERR_INVALID;
    }
    if ((type == DW_METRIC_COUNTER) != ends_with(name, "_total")) {
        DW_ERROR("metric \"%s\": counters, and only counters, end in \"_total\"", name);
        return DW_ERR_INVALID;
    }
    if (type == DW_METRIC_HISTOGRAM && !ends_with(name, "_seconds")) {
        DW_ERROR("histogram \"%s\": its buckets are seconds, so its name ends in \"_seconds\"",
                 name);
        return DW_ERR_INVALID;
    }
    struct family *f;
    HASH_FIND_STR(m->families, name, f);
    if (f != NULL) {
        if (f->type != type) {
            DW_ERROR("metric \"%s\" is already defined with another type", name);
            return DW_ERR_EXISTS;
        }
        return DW_OK;
    }
    f = dw_calloc(1, sizeof *f);
    f->name = dw_strdup(name);
    f->help = dw_strdup(help ? help : "");
    f->type = type;
    HASH_ADD_KEYPTR(hh, m->families, f->name, strlen(f->name), f);
    return DW_OK;
}

static const struct {
    const char *name;
    enum dw_metric_type type;
    const char *help;
} standard[] = {
    {DW_M_CHANGES_RECEIVED, DW_METRIC_COUNTER, "Row changes decoded from the replication stream."},
    {DW_M_CHANGES_APPLIED, DW_METRIC_COUNTER, "Row changes applied to Dataverse (2xx)."},
    {DW_M_CHANGES_PARKED, DW_METRIC_COUNTER, "Row changes written to the error table."},
    {DW_M_REQUESTS, DW_METRIC_COUNTER, "Dataverse HTTP requests by response status."},
    {DW_M_THROTTLED, DW_METRIC_COUNTER,
     "Dataverse responses with status 429 (service protection)."},
    {DW_M_RETRY_SLEEPS, DW_METRIC_COUNTER, "Backoff sleeps before retrying a Dataverse request."},
    {DW_M_RETRY_SLEEP_SECS, DW_METRIC_COUNTER, "Seconds spent in backoff before retries."},
    {DW_M_TOKEN_RENEWALS, DW_METRIC_COUNTER, "OAuth2 access token acquisitions."},
    {DW_M_ERRORS, DW_METRIC_COUNTER, "Row changes that failed, by error class."},
    {DW_M_CHANGES_UNCHANGED, DW_METRIC_COUNTER,
     "Updates not sent to Dataverse: every mapped column kept its value."},
    {DW_M_SLOT_LAG_BYTES, DW_METRIC_GAUGE,
     "WAL bytes between the server and the applied position."},
    {DW_M_SLOT_LAG_SECONDS, DW_METRIC_GAUGE, "Age of the oldest unapplied commit in seconds."},
    {DW_M_LAST_COMMIT_TIME, DW_METRIC_GAUGE, "Commit time of the last applied transaction (Unix)."},
    {DW_M_WINDOW_ROWS, DW_METRIC_GAUGE, "Row changes in the last apply window."},
    {DW_M_WINDOW_BYTES, DW_METRIC_GAUGE, "Bytes of row data in the last apply window."},
    {DW_M_JOB_ACTIVE, DW_METRIC_GAUGE, "1 when this process runs the job, 0 when it is a standby."},
    {DW_M_RSS, DW_METRIC_GAUGE, "Resident set size of the dwasync process in bytes."},
    {DW_M_COPY_TABLES, DW_METRIC_GAUGE,
     "Tables left to copy (initial sync, resync, repair) interleaved with the stream."},
    {DW_M_COPY_ROWS, DW_METRIC_GAUGE, "Rows copied so far of the tables left to copy."},
    {DW_M_COPY_ROWS_PLANNED, DW_METRIC_GAUGE,
     "Rows the tables left to copy matched when queued (0: not counted)."},
    {DW_M_VERIFY_RUNNING, DW_METRIC_GAUGE,
     "1 while the job's latest verify run has not finished (it may have died: see status)."},
    {DW_M_VERIFY_ROWS, DW_METRIC_GAUGE,
     "Source and Dataverse rows the job's latest verify run has read so far."},
    {DW_M_VERIFY_DRIFT, DW_METRIC_GAUGE,
     "Drifted rows (missing, extra, different) the job's latest verify run has found so far."},
    {DW_M_APPLY_LATENCY, DW_METRIC_HISTOGRAM,
     "Seconds from a change's commit in the source to its apply in Dataverse, per map."},
};

static const char *type_name(enum dw_metric_type t)
{
    return t == DW_METRIC_COUNTER ? "counter" : t == DW_METRIC_GAUGE ? "gauge" : "histogram";
}

dw_rc dw_metrics_define_standard(struct dw_metrics *m)
{
    for (size_t i = 0; i < sizeof standard / sizeof *standard; i++) {
        dw_rc rc = dw_metrics_define(m, standard[i].name, standard[i].type, standard[i].help);
        if (rc != DW_OK)
            return rc;
    }
    return DW_OK;
}

void dw_metrics_escape_label(const char *s, struct dw_buf *out)
{
    for (; *s; s++) {
        if (*s == '\\')
            (void)dw_buf_puts(out, "\\\\");
        else if (*s == '"')
            (void)dw_buf_puts(out, "\\\"");
        else if (*s == '\n')
            (void)dw_buf_puts(out, "\\n");
        else
            (void)dw_buf_putc(out, *s);
    }
}

static int cmp_label(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

/* Renders a label set canonically (sorted by name) into out; DW_ERR_INVALID if malformed. */
static dw_rc render_labels(const char *const *labels, struct dw_buf *out)
{
    size_t n = 0;
    while (labels && labels[2 * n]) {
        if (labels[2 * n + 1] == NULL)
            return DW_ERR_INVALID;
        n++;
    }
    if (n == 0)
        return DW_OK;
    const char **pairs = dw_malloc(2 * n * sizeof *pairs);
    memcpy(pairs, labels, 2 * n * sizeof *pairs);
    qsort(pairs, n, 2 * sizeof *pairs, cmp_label);
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < n; i++) {
        if (!valid_name(pairs[2 * i], false) || strncmp(pairs[2 * i], "__", 2) == 0 ||
            (i > 0 && strcmp(pairs[2 * i], pairs[2 * i - 2]) == 0)) {
            rc = DW_ERR_INVALID;
            goto out;
        }
        (void)dw_buf_printf(out, "%s%s=\"", i ? "," : "", pairs[2 * i]);
        dw_metrics_escape_label(pairs[2 * i + 1], out);
        (void)dw_buf_putc(out, '"');
    }
out:
    free(pairs);
    return rc;
}

/* Finds (or, when create, adds) a series; logs why it cannot. */
static dw_rc find_series(const struct dw_metrics *m, const char *name, const char *const *labels,
                         bool create, enum dw_metric_type want, struct dw_metric_series **out)
{
    struct family *f;
    struct dw_metric_series *s = NULL;
    struct dw_buf key;
    dw_rc rc = DW_OK;
    dw_buf_init(&key, 64 * 1024);
    HASH_FIND_STR(m->families, name, f);
    if (f == NULL || (create && f->type != want)) {
        if (create)
            DW_ERROR("metric \"%s\" is not defined as a %s", name, type_name(want));
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    if ((rc = render_labels(labels, &key)) != DW_OK) {
        DW_ERROR("metric \"%s\": malformed label set", name);
        goto out;
    }
    HASH_FIND(hh, f->series, dw_buf_str(&key), key.len, s);
    if (s == NULL) {
        if (!create) {
            rc = DW_ERR_NOT_FOUND;
            goto out;
        }
        if (f->nseries >= DW_METRICS_MAX_SERIES) {
            if (!f->overflow_logged)
                DW_WARN("metric \"%s\" has %d series, dropping new label sets", name,
                        DW_METRICS_MAX_SERIES);
            f->overflow_logged = true;
            rc = DW_ERR_RANGE;
            goto out;
        }
        s = dw_calloc(1, sizeof *s);
        s->labels = dw_strdup(dw_buf_str(&key));
        HASH_ADD_KEYPTR(hh, f->series, s->labels, strlen(s->labels), s);
        f->nseries++;
    }
    *out = s;
out:
    dw_buf_cleanup(&key);
    return rc;
}

dw_rc dw_metrics_inc(struct dw_metrics *m, const char *name, const char *const *labels,
                     double delta)
{
    if (!(delta >= 0)) {
        DW_ERROR("counter \"%s\" cannot decrease", name);
        return DW_ERR_INVALID;
    }
    struct dw_metric_series *s;
    dw_rc rc = find_series(m, name, labels, true, DW_METRIC_COUNTER, &s);
    if (rc == DW_OK)
        dw_metric_series_inc(s, delta);
    return rc;
}

dw_rc dw_metrics_set(struct dw_metrics *m, const char *name, const char *const *labels,
                     double value)
{
    struct dw_metric_series *s;
    dw_rc rc = find_series(m, name, labels, true, DW_METRIC_GAUGE, &s);
    if (rc == DW_OK)
        s->value = value;
    return rc;
}

dw_rc dw_metrics_observe(struct dw_metrics *m, const char *name, const char *const *labels,
                         double value)
{
    struct dw_metric_series *s;
    dw_rc rc = find_series(m, name, labels, true, DW_METRIC_HISTOGRAM, &s);
    if (rc == DW_OK)
        dw_metric_series_observe(s, value);
    return rc;
}

struct dw_metric_series *dw_metrics_series(struct dw_metrics *m, const char *name,
                                           enum dw_metric_type type, const char *const *labels)
{
    struct dw_metric_series *s;
    return find_series(m, name, labels, true, type, &s) == DW_OK ? s : NULL;
}

void dw_metric_series_inc(struct dw_metric_series *s, double delta)
{
    if (s && delta >= 0)
        s->value += delta;
}

void dw_metric_series_observe(struct dw_metric_series *s, double value)
{
    if (s == NULL)
        return;
    if (s->buckets == NULL)
        s->buckets = dw_calloc(NBOUNDS + 1, sizeof *s->buckets);
    size_t b = 0;
    while (b < NBOUNDS && value > seconds_bounds[b])
        b++;
    s->buckets[b]++;
    s->count++;
    s->value += value;
}

dw_rc dw_metrics_get(const struct dw_metrics *m, const char *name, const char *const *labels,
                     double *out)
{
    struct dw_metric_series *s;
    dw_rc rc = find_series(m, name, labels, false, DW_METRIC_GAUGE, &s);
    if (rc == DW_OK)
        *out = s->value;
    return rc;
}

/* The increase of a counter that only grows, or all of now after a reset. */
static double delta(uint64_t now, uint64_t seen)
{
    return (double)(now >= seen ? now - seen : now);
}

void dw_metrics_add_sink_stats(struct dw_metrics *m, const char *job,
                               const struct dw_sink_stats *now, struct dw_sink_stats *seen)
{
    const char *by_job[] = {"job", job, NULL};
    const char *s2[] = {"job", job, "status", "2xx", NULL};
    const char *s4[] = {"job", job, "status", "4xx", NULL};
    const char *s5[] = {"job", job, "status", "5xx", NULL};
    (void)dw_metrics_inc(m, DW_M_REQUESTS, s2, delta(now->responses_2xx, seen->responses_2xx));
    (void)dw_metrics_inc(m, DW_M_REQUESTS, s4, delta(now->responses_4xx, seen->responses_4xx));
    (void)dw_metrics_inc(m, DW_M_REQUESTS, s5, delta(now->responses_5xx, seen->responses_5xx));
    (void)dw_metrics_inc(m, DW_M_THROTTLED, by_job, delta(now->throttled, seen->throttled));
    (void)dw_metrics_inc(m, DW_M_RETRY_SLEEPS, by_job, delta(now->retries, seen->retries));
    (void)dw_metrics_inc(m, DW_M_RETRY_SLEEP_SECS, by_job,
                         delta(now->retry_sleep_ms, seen->retry_sleep_ms) / 1000.0);
    (void)dw_metrics_inc(m, DW_M_TOKEN_RENEWALS, by_job,
                         delta(now->token_renewals, seen->token_renewals));
    *seen = *now;
}

void dw_metrics_update_process(struct dw_metrics *m)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return;
    unsigned long size_pages = 0, rss_pages = 0;
    if (fscanf(f, "%lu %lu", &size_pages, &rss_pages) == 2) {
        struct family *fam;
        HASH_FIND_STR(m->families, DW_M_RSS, fam);
        if (fam != NULL)
            (void)dw_metrics_set(m, DW_M_RSS, NULL,
                                 (double)rss_pages * (double)sysconf(_SC_PAGESIZE));
    }
    fclose(f);
}

void dw_metrics_format_value(double v, struct dw_buf *out)
{
    if (isnan(v))
        (void)dw_buf_puts(out, "NaN");
    else if (isinf(v))
        (void)dw_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        (void)dw_buf_printf(out, "%.0f", v);
    else
        (void)dw_buf_printf(out, "%.17g", v);
}

static int cmp_family(struct family *a, struct family *b)
{
    return strcmp(a->name, b->name);
}

static int cmp_series(struct dw_metric_series *a, struct dw_metric_series *b)
{
    return strcmp(a->labels, b->labels);
}

/* One histogram series: cumulative _bucket lines up to +Inf, then _sum and _count. */
static dw_rc render_histogram(const char *name, const struct dw_metric_series *s,
                              struct dw_buf *out)
{
    const char *sep = *s->labels ? "," : "";
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= NBOUNDS; b++) {
        cumulative += s->buckets ? s->buckets[b] : 0;
        (void)dw_buf_printf(out, "%s_bucket{%s%sle=\"", name, s->labels, sep);
        if (b < NBOUNDS) /* %g: the bounds as written, not their nearest doubles */
            (void)dw_buf_printf(out, "%g", seconds_bounds[b]);
        else
            (void)dw_buf_puts(out, "+Inf");
        (void)dw_buf_printf(out, "\"} %" PRIu64 "\n", cumulative);
    }
    (void)dw_buf_printf(out, *s->labels ? "%s_sum{%s} " : "%s_sum%s ", name, s->labels);
    dw_metrics_format_value(s->value, out);
    return dw_buf_printf(out,
                         *s->labels ? "\n%s_count{%s} %" PRIu64 "\n" : "\n%s_count%s %" PRIu64 "\n",
                         name, s->labels, s->count);
}

dw_rc dw_metrics_render(struct dw_metrics *m, struct dw_buf *out)
{
    dw_metrics_update_process(m);
    HASH_SRT(hh, m->families, cmp_family);
    for (struct family *f = m->families; f; f = f->hh.next) {
        (void)dw_buf_printf(out, "# HELP %s ", f->name);
        for (const char *c = f->help; *c; c++) {
            if (*c == '\\')
                (void)dw_buf_puts(out, "\\\\");
            else if (*c == '\n')
                (void)dw_buf_puts(out, "\\n");
            else
                (void)dw_buf_putc(out, *c);
        }
        (void)dw_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        HASH_SRT(hh, f->series, cmp_series);
        for (struct dw_metric_series *s = f->series; s; s = s->hh.next) {
            if (f->type == DW_METRIC_HISTOGRAM) {
                if (render_histogram(f->name, s, out) != DW_OK)
                    return DW_ERR_RANGE;
                continue;
            }
            if (*s->labels)
                (void)dw_buf_printf(out, "%s{%s} ", f->name, s->labels);
            else
                (void)dw_buf_printf(out, "%s ", f->name);
            dw_metrics_format_value(s->value, out);
            if (dw_buf_putc(out, '\n') != DW_OK)
                return DW_ERR_RANGE;
        }
    }
    return DW_OK;
}

/* --- HTTP listener ---------------------------------------------------------------------- */

/* Connections held at once, from one client address, and how long one may last in all: a
 * slow client (one byte at a time, never idle long enough for the idle timeout) is cut at
 * the deadline, and many of them from one address cannot take every slot from /healthz. */
#define CONN_LIMIT       32
#define CONN_PER_CLIENT  4
#define CONN_DEADLINE_MS 10000

struct conn_slot {
    struct MHD_Connection *conn; /* NULL: free */
    int64_t started_ms;
};

struct dw_metrics_server {
    struct MHD_Daemon *mhd;
    struct dw_metrics *metrics;
    dw_health_fn health;
    void *health_ud;
    unsigned port;
    struct conn_slot conns[CONN_LIMIT];
};

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct dw_metrics_server *s = cls;
    (void)socket_context;
    for (size_t i = 0; i < CONN_LIMIT; i++) {
        struct conn_slot *c = &s->conns[i];
        if (code == MHD_CONNECTION_NOTIFY_STARTED && c->conn == NULL) {
            c->conn = conn;
            c->started_ms = dw_clock_ms();
            return;
        }
        if (code == MHD_CONNECTION_NOTIFY_CLOSED && c->conn == conn) {
            c->conn = NULL;
            return;
        }
    }
}

/* Milliseconds until the first connection reaches its deadline (0: one has; -1: none). */
static int64_t next_deadline_ms(const struct dw_metrics_server *s, int64_t now)
{
    int64_t next = -1;
    for (size_t i = 0; i < CONN_LIMIT; i++) {
        const struct conn_slot *c = &s->conns[i];
        if (c->conn == NULL)
            continue;
        int64_t left = c->started_ms + CONN_DEADLINE_MS - now;
        left = left < 0 ? 0 : left;
        if (next < 0 || left < next)
            next = left;
    }
    return next;
}

/* Shuts down the sockets of connections past the deadline; MHD sees the end of the stream
 * and closes them in the same MHD_run. */
static void cut_slow_connections(struct dw_metrics_server *s)
{
    int64_t now = dw_clock_ms();
    for (size_t i = 0; i < CONN_LIMIT; i++) {
        struct conn_slot *c = &s->conns[i];
        if (c->conn == NULL || c->started_ms + CONN_DEADLINE_MS > now)
            continue;
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info)
            (void)shutdown(info->connect_fd, SHUT_RDWR);
    }
}

dw_rc dw_metrics_parse_listen(const char *listen, void *sockaddr_out, unsigned *len_out)
{
    char host[256];
    const char *port;
    dw_rc rc = DW_ERR_CONFIG;
    struct addrinfo hints, *res = NULL;
    if (listen == NULL || *listen == '\0')
        goto bad;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof host)
            goto bad;
        memcpy(host, listen + 1, (size_t)(close - listen - 1));
        host[close - listen - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (colon == NULL || (size_t)(colon - listen) >= sizeof host ||
            strchr(listen, ':') != colon)
            goto bad;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
        goto bad;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (gai != 0) {
        DW_ERROR("[metrics] listen = \"%s\": cannot resolve \"%s\": %s", listen, host,
                 gai_strerror(gai));
        return DW_ERR_CONFIG;
    }
    if (res->ai_addrlen > sizeof(struct sockaddr_storage))
        goto bad;
    memcpy(sockaddr_out, res->ai_addr, res->ai_addrlen);
    *len_out = (unsigned)res->ai_addrlen;
    rc = DW_OK;
    freeaddrinfo(res);
    return rc;
bad:
    if (res)
        freeaddrinfo(res);
    DW_ERROR("[metrics] listen = \"%s\" is not HOST:PORT (e.g. 127.0.0.1:9187 or [::1]:9187)",
             listen ? listen : "");
    return rc;
}

/* MHD's own messages go through our logger (redacted, one line each) instead of stderr. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    DW_DEBUG("metrics listener: %s", msg);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             struct dw_buf *body)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        body->len, body->data ? body->data : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void health_body(struct dw_metrics_server *s, unsigned *status, struct dw_buf *body)
{
    struct dw_health h;
    memset(&h, 0, sizeof h);
    if (s->health == NULL) {
        h.job_active = h.stream_ok = h.dataverse_ok = true;
    } else {
        s->health(s->health_ud, &h);
    }
    bool ok = h.job_active && h.stream_ok && h.dataverse_ok;
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(ok ? "ok" : "unhealthy"));
    if (h.job[0])
        json_object_set_new(o, "job", json_string(h.job));
    json_object_set_new(o, "job_active", json_boolean(h.job_active));
    json_object_set_new(o, "stream", json_boolean(h.stream_ok));
    json_object_set_new(o, "dataverse", json_boolean(h.dataverse_ok));
    if (!ok) {
        json_t *reasons = json_array();
        if (!h.job_active)
            json_array_append_new(reasons, json_string("job is not active in this process"));
        if (!h.stream_ok)
            json_array_append_new(reasons, json_string("replication stream is not connected"));
        if (!h.dataverse_ok)
            json_array_append_new(reasons, json_string("dataverse is not reachable"));
        json_object_set_new(o, "reasons", reasons);
    }
    if (h.detail[0])
        json_object_set_new(o, "detail", json_string(h.detail));
    (void)dw_json_append(body, o);
    (void)dw_buf_putc(body, '\n');
    json_decref(o);
    *status = ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **ctx)
{
    (void)version;
    (void)upload_data;
    (void)ctx;
    struct dw_metrics_server *s = cls;
    struct dw_buf body;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";
    enum MHD_Result r;
    dw_buf_init(&body, 64u * 1024 * 1024);
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* bodies are ignored: only GET is served */
        dw_buf_cleanup(&body);
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        (void)dw_buf_puts(&body, "only GET is served\n");
    } else if (strcmp(url, "/metrics") == 0) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        if (dw_metrics_render(s->metrics, &body) != DW_OK) {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            dw_buf_reset(&body);
            (void)dw_buf_puts(&body, "exposition too large\n");
        }
    } else if (strcmp(url, "/healthz") == 0) {
        type = "application/json";
        health_body(s, &status, &body);
    } else {
        status = MHD_HTTP_NOT_FOUND;
        (void)dw_buf_puts(&body, "not found: try /metrics or /healthz\n");
    }
    r = reply(conn, status, type, &body);
    dw_buf_cleanup(&body);
    return r;
}

dw_rc dw_metrics_server_start(const char *listen, struct dw_metrics *m, dw_health_fn health,
                              void *ud, struct dw_metrics_server **out)
{
    struct sockaddr_storage addr;
    unsigned addrlen = 0;
    dw_rc rc = dw_metrics_parse_listen(listen, &addr, &addrlen);
    if (rc != DW_OK)
        return rc;
    struct dw_metrics_server *s = dw_calloc(1, sizeof *s);
    s->metrics = m;
    s->health = health;
    s->health_ud = ud;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                     : ((struct sockaddr_in *)&addr)->sin_port);
    s->mhd = MHD_start_daemon(flags, port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)CONN_PER_CLIENT,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (s->mhd == NULL) {
        DW_ERROR("cannot listen for metrics on \"%s\" (address in use, or not permitted)", listen);
        free(s);
        return DW_ERR_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    DW_INFO("serving /metrics and /healthz on \"%s\" (port %u)", listen, s->port);
    *out = s;
    return DW_OK;
}

int dw_metrics_server_fd(const struct dw_metrics_server *s)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

int dw_metrics_server_timeout_ms(const struct dw_metrics_server *s)
{
    MHD_UNSIGNED_LONG_LONG t;
    int64_t cut = next_deadline_ms(s, dw_clock_ms());
    if (cut == 0)
        cut = 100; /* cut already: wait for MHD to notice the closed socket */
    if (MHD_get_timeout(s->mhd, &t) != MHD_YES)
        return cut < 0 ? -1 : (int)cut;
    if (cut >= 0 && (MHD_UNSIGNED_LONG_LONG)cut < t)
        t = (MHD_UNSIGNED_LONG_LONG)cut;
    return t > 0x7fffffff ? 0x7fffffff : (int)t;
}

dw_rc dw_metrics_server_run(struct dw_metrics_server *s)
{
    cut_slow_connections(s);
    return MHD_run(s->mhd) == MHD_YES ? DW_OK : DW_ERR_IO;
}

unsigned dw_metrics_server_port(const struct dw_metrics_server *s)
{
    return s->port;
}

void dw_metrics_server_free(struct dw_metrics_server *s)
{
    if (s == NULL)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}

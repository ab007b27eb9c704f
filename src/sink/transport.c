/*
 * Transport: requests handed to curl multi within the throttle's limits (AIMD concurrency
 * under x-ms-dop-hint, a pause after 429), response headers and bodies read with a size cap,
 * access tokens asked for and renewed, retries with backoff, and the engine's turn
 * (dw_sink_drive()). curl is driven through CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION and
 * curl_multi_socket_action() (the pattern of curl's docs/examples/ephiperfifo.c): its
 * sockets and its one timeout are tenants of an event loop (loop.h), with the caller's
 * descriptors, the engine's own deadlines (backoff, pauses, tokens) and a wake-up eventfd.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/dvauth.h"
#include "dwasync/log.h"
#include "dwasync/loop.h"
#include "dwasync/redact.h"

/* Largest response body kept: a full $batch answer of 1000 parts fits easily. */
#define RESPONSE_MAX ((size_t)256 << 20)
/* First retry delay; doubles per attempt up to [dataverse] retry_max_backoff_ms. */
#define BACKOFF_BASE_MS 250
/* Pause after a 429 that carries no usable Retry-After. */
#define DEFAULT_RETRY_AFTER_MS 5000
/* Attempts of a blocking call (whoami, get) when retry_limit is 0 (forever). */
#define BLOCKING_ATTEMPTS 5

uint32_t dw_sink_random32(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)dw_clock_ms();
    return r;
}

/* The size of the type that a request of this kind is. */
static size_t req_size(enum req_kind kind)
{
    switch (kind) {
    case REQ_TOKEN:
    case REQ_PROBE:
        break;
    case REQ_BULK:
        return sizeof(struct bulk_req);
    case REQ_BATCH:
        return sizeof(struct write_req);
    case REQ_CHANGESET:
        return sizeof(struct changeset_req);
    case REQ_LOOKUP:
        return sizeof(struct lookup_req);
    case REQ_SETINFO:
        return sizeof(struct setinfo_req);
    case REQ_BULKINFO:
        return sizeof(struct bulkinfo_req);
    case REQ_GET:
        return sizeof(struct get_req);
    }
    return sizeof(struct req);
}

struct req *dw_sink_req_new(enum req_kind kind, const char *method, char *url)
{
    struct req *q = dw_calloc(1, req_size(kind));
    q->kind = kind;
    q->method = method;
    q->url = url;
    dw_buf_init(&q->resp, RESPONSE_MAX);
    return q;
}

void dw_sink_req_reset_transfer(struct req *q)
{
    if (q->easy)
        curl_easy_cleanup(q->easy);
    q->easy = NULL;
    curl_slist_free_all(q->headers);
    q->headers = NULL;
    dw_buf_reset(&q->resp);
    free(q->resp_type);
    free(q->retry_after);
    free(q->location);
    q->resp_type = q->retry_after = q->location = NULL;
    q->too_big = false;
    q->dop_hint = 0;
    q->errbuf[0] = '\0';
}

void dw_sink_req_free(struct req *q)
{
    if (q == NULL)
        return;
    dw_sink_req_reset_transfer(q);
    dw_buf_cleanup(&q->resp);
    if (is_write_req(q))
        free(as_write(q)->rows);
    if (is_read_req(q))
        json_decref(as_read(q)->pages);
    if (q->kind == REQ_LOOKUP)
        free(as_lookup(q)->entries);
    free(q->url);
    free(q->body);
    free(q->content_type);
    free(q);
}

void dw_sink_enqueue(struct dw_sink *s, struct req *q)
{
    DL_APPEND(s->queue, q);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    struct req *q = user;
    if (dw_buf_append(&q->resp, data, size * nmemb) == DW_OK)
        return size * nmemb;
    q->too_big = true; /* curl then fails the transfer with CURLE_WRITE_ERROR */
    return 0;
}

static char *header_value(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    return dw_strndup(v, (size_t)(end - v));
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user)
{
    struct req *q = user;
    size_t len = size * nmemb;
    char *v;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue or a redirect) starts its headers afresh. */
        free(q->resp_type);
        free(q->retry_after);
        free(q->location);
        q->resp_type = q->retry_after = q->location = NULL;
    } else if ((v = header_value(data, len, "Location"))) {
        free(q->location);
        q->location = v;
    } else if ((v = header_value(data, len, "Content-Type"))) {
        free(q->resp_type);
        q->resp_type = v;
    } else if ((v = header_value(data, len, "Retry-After"))) {
        free(q->retry_after);
        q->retry_after = v;
    } else if ((v = header_value(data, len, "x-ms-dop-hint"))) {
        long hint = strtol(v, NULL, 10);
        q->dop_hint = hint > 0 && hint < 1000 ? (int)hint : 0;
        free(v);
    }
    return len;
}

static void debug_request(struct dw_sink *s, const struct req *q)
{
    if (!s->cfg->dataverse.debug_payloads || !dw_log_enabled(DW_LOG_DEBUG))
        return;
    /* The Authorization header is never part of what is logged; the body passes the
     * redactor in dw_log_emit like every log line. */
    DW_LOGF(DW_LOG_DEBUG, DW_FIELDS({"method", q->method}, {"url", q->url}),
            "request headers: Authorization: Bearer " DW_REDACTED ", Content-Type: %s",
            q->content_type ? q->content_type : "application/x-www-form-urlencoded");
    if (q->body && q->kind != REQ_TOKEN)
        DW_DEBUG("request body: %.*s", (int)q->body_len, q->body);
}

static void debug_response(struct dw_sink *s, const struct req *q, long http)
{
    if (!s->cfg->dataverse.debug_payloads || !dw_log_enabled(DW_LOG_DEBUG))
        return;
    char status[16];
    snprintf(status, sizeof status, "%ld", http);
    DW_LOGF(DW_LOG_DEBUG, DW_FIELDS({"url", q->url}, {"status", status}), "response body: %s",
            q->kind == REQ_TOKEN ? "(token response withheld)" : dw_buf_str(&q->resp));
}

dw_rc dw_sink_start_transfer(struct dw_sink *s, struct req *q, const char *token)
{
    dw_sink_req_reset_transfer(q);
    CURL *e = curl_easy_init();
    if (e == NULL)
        dw_oom(0);
    q->easy = e;
    const struct dw_config *c = s->cfg;
    if (q->kind == REQ_TOKEN) {
        q->headers = curl_slist_append(q->headers, "Accept: application/json");
        q->headers =
            curl_slist_append(q->headers, "Content-Type: application/x-www-form-urlencoded");
    } else {
        char *auth = dw_asprintf("Authorization: Bearer %s", token);
        q->headers = curl_slist_append(q->headers, auth);
        explicit_bzero(auth, strlen(auth));
        free(auth);
        q->headers = curl_slist_append(q->headers, "Accept: application/json");
        q->headers = curl_slist_append(q->headers, "OData-MaxVersion: 4.0");
        q->headers = curl_slist_append(q->headers, "OData-Version: 4.0");
        if (q->content_type) {
            char *ct = dw_asprintf("Content-Type: %s", q->content_type);
            q->headers = curl_slist_append(q->headers, ct);
            free(ct);
        }
        if (q->kind == REQ_BATCH)
            q->headers = curl_slist_append(q->headers, "Prefer: odata.continue-on-error");
        q->headers = dw_sink_add_option_headers(q->headers, q);
        q->token_gen = dw_auth_generation(s->auth);
    }
    q->headers = curl_slist_append(q->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
    if (q->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    } else if (strcmp(q->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    q->resp.max_len = (size_t)c->dataverse.max_response_bytes;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->dataverse.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->dataverse.request_timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->dataverse.ca_file && *c->dataverse.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->dataverse.ca_file);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "dwasync/" DW_VERSION);
    /* No cookie engine (no CURLOPT_COOKIEFILE/COOKIEJAR, no shared cookies): Azure's
     * ARRAffinity cookie would pin every request to one web server of the environment, and
     * Microsoft advises spreading them (test_sink: no_affinity_cookie_is_kept). */
    debug_request(s, q);
    DW_DEBUG("sending %s %s (attempt %d, %zu rows)", q->method, q->url, q->attempts + 1,
             is_write_req(q) ? as_write(q)->nrows : 0);
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        dw_sink_req_reset_transfer(q);
        return DW_ERR_HTTP;
    }
    DL_APPEND(s->transfers, q);
    if (q->kind == REQ_TOKEN) {
        s->token_in_flight = true;
    } else {
        s->in_flight++;
        s->stats.requests++;
    }
    return DW_OK;
}

static void start_token_request(struct dw_sink *s, int64_t now)
{
    struct dw_buf body;
    dw_buf_init(&body, 0);
    if (dw_auth_request_body(s->auth, (int64_t)time(NULL), &body) != DW_OK) {
        dw_buf_cleanup(&body);
        s->token_not_before = now + 5000;
        return;
    }
    struct req *q = dw_sink_req_new(REQ_TOKEN, "POST", dw_strdup(dw_auth_token_url(s->auth)));
    q->body_len = body.len;
    q->body = dw_buf_steal(&body);
    if (dw_sink_start_transfer(s, q, NULL) != DW_OK) {
        explicit_bzero(q->body, q->body_len);
        dw_sink_req_free(q);
        s->token_not_before = now + 1000;
    }
}

/* Whether another bulk request to the same table as q is in flight. */
static bool sibling_in_flight(const struct dw_sink *s, const struct req *q)
{
    const struct req *t;
    DL_FOREACH(s->transfers, t)
    {
        if (t != q && t->kind == REQ_BULK && strcmp(t->url, q->url) == 0)
            return true;
    }
    return false;
}

static void start_requests(struct dw_sink *s)
{
    int64_t now = dw_clock_ms();
    const char *token = dw_auth_token(s->auth, now);
    int64_t renew = dw_auth_renew_at(s->auth);
    bool want_token = token == NULL || (renew && now >= renew);
    if (want_token && !s->token_in_flight && now >= s->token_not_before && s->queue)
        start_token_request(s, now);
    if (token == NULL || now < s->paused_until)
        return;
    int limit = dw_aimd_limit(&s->aimd);
    if (dw_sink_probe_due(s, now, limit))
        dw_sink_start_probe(s, token, now);
    struct req *q, *tmp;
    DL_FOREACH_SAFE(s->queue, q, tmp)
    {
        if (s->in_flight >= limit)
            break;
        if (q->not_before > now ||
            (q->kind == REQ_BULK && as_bulk(q)->after_siblings && sibling_in_flight(s, q)))
            continue;
        DL_DELETE(s->queue, q);
        if (dw_sink_start_transfer(s, q, token) != DW_OK) {
            q->not_before = now + 1000;
            DL_APPEND(s->queue, q);
        }
    }
    s->stats.concurrency = limit;
    s->stats.in_flight = s->in_flight;
}

static int retry_limit(const struct dw_sink *s, const struct req *q)
{
    if (q->kind == REQ_GET)
        return s->cfg->dataverse.retry_limit ? (int)s->cfg->dataverse.retry_limit
                                             : BLOCKING_ATTEMPTS;
    return (int)s->cfg->dataverse.retry_limit;
}

/*
 * Puts a request back in the queue after a transient failure, or gives up past the retry
 * limit. A 429 pauses the whole environment; anything else backs off this request alone.
 */
void dw_sink_retry(struct dw_sink *s, struct req *q, const struct dw_classification *c, int http,
                   const char *code, const char *message)
{
    int64_t now = dw_clock_ms();
    q->attempts++;
    int limit = retry_limit(s, q);
    if ((limit > 0 && q->attempts >= limit) || (q->kind == REQ_GET && c->config_error)) {
        char *msg = dw_asprintf("gave up after %d attempt%s: %s", q->attempts,
                                q->attempts == 1 ? "" : "s", message);
        struct failure f = {DW_WRITE_GAVE_UP, DW_ERRCLASS_TRANSIENT, http, code, msg};
        dw_sink_give_up(s, q, &f);
        free(msg);
        return;
    }
    int64_t delay;
    if (c->throttled) {
        delay = dw_retry_after_ms(q->retry_after, time(NULL));
        if (delay < 0)
            delay = DEFAULT_RETRY_AFTER_MS;
        if (now + delay > s->paused_until)
            s->paused_until = now + delay;
        s->stats.throttled++;
        dw_aimd_throttled(&s->aimd);
        DW_WARN("Dataverse throttled a request (HTTP 429): pausing all requests for %" PRId64 " ms",
                delay);
    } else {
        if (http == 0 || http >= 500)
            dw_sink_outage_begin(s, now);
        delay = dw_backoff_ms(q->attempts, BACKOFF_BASE_MS, s->cfg->dataverse.retry_max_backoff_ms,
                              dw_sink_random32());
        DW_WARN("transient failure (%s): retrying in %" PRId64 " ms (attempt %d)", message, delay,
                q->attempts);
    }
    s->stats.retries++;
    s->stats.retry_sleep_ms += (uint64_t)delay;
    q->not_before = now + delay;
    dw_sink_req_reset_transfer(q);
    dw_sink_enqueue(s, q);
}

static void complete_token(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
    int64_t now = dw_clock_ms();
    s->token_in_flight = false;
    explicit_bzero(q->body, q->body_len);
    if (cc == CURLE_OK && dw_auth_accept(s->auth, http, dw_buf_str(&q->resp), now) == DW_OK) {
        s->token_failures = 0;
        s->stats.token_renewals++;
        s->token_config_error = false;
    } else {
        if (cc != CURLE_OK || (http >= 300 && http < 400)) {
            struct dw_classification c = dw_classify(DW_WRITE_UPSERT, cc, (int)http, "");
            char *code = NULL, *msg = NULL;
            dw_sink_transfer_error(q, cc, http, &code, &msg);
            DW_ERROR("token request to \"%s\" failed: %s", q->url, msg);
            s->token_config_error = c.config_error;
            free(code);
            free(msg);
        } else {
            s->token_config_error = http >= 400 && http < 500 && http != 429;
        }
        s->token_failures++;
        int64_t d = dw_backoff_ms(s->token_failures, 1000, s->cfg->dataverse.retry_max_backoff_ms,
                                  dw_sink_random32());
        s->token_not_before = now + d;
        /* Rows waiting for a token give up with everything else past the retry limit. */
        int limit = (int)s->cfg->dataverse.retry_limit;
        if (limit > 0 && s->token_failures >= limit) {
            struct req *w, *tmp;
            struct failure f = {DW_WRITE_GAVE_UP, DW_ERRCLASS_TRANSIENT, (int)http, "",
                                "gave up: no access token could be obtained"};
            DL_FOREACH_SAFE(s->queue, w, tmp)
            {
                if (w->kind == REQ_GET)
                    continue;
                DL_DELETE(s->queue, w);
                dw_sink_give_up(s, w, &f);
            }
        }
    }
    dw_sink_req_free(q);
}

/* Handles every finished transfer; returns how many there were. */
/* The request of a transfer curl has finished, taken out of the multi handle and the
 * transfers (its easy handle still answers curl_easy_getinfo()); NULL for another message. */
static struct req *detach_finished(struct dw_sink *s, const CURLMsg *m)
{
    if (m->msg != CURLMSG_DONE)
        return NULL;
    struct req *q = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
    curl_multi_remove_handle(s->multi, m->easy_handle);
    DL_DELETE(s->transfers, q);
    return q;
}

/*
 * Folds a write's server time per row into s->row_ms, a moving average (plan.c sizes the
 * requests by it): from the request about to be sent to its answer received (curl's timings),
 * for requests of enough rows that a request's fixed cost does not dominate.
 */
#define ROW_TIME_MIN_ROWS 50
static void note_row_time(struct dw_sink *s, struct req *q)
{
    size_t rows = as_write(q)->nrows;
    curl_off_t sent = 0, total = 0;
    if (rows < ROW_TIME_MIN_ROWS ||
        curl_easy_getinfo(q->easy, CURLINFO_PRETRANSFER_TIME_T, &sent) != CURLE_OK ||
        curl_easy_getinfo(q->easy, CURLINFO_TOTAL_TIME_T, &total) != CURLE_OK || total < sent)
        return;
    double ms = (double)(total - sent) / 1000.0 / (double)rows;
    s->row_ms = s->row_ms > 0 ? 0.75 * s->row_ms + 0.25 * ms : ms;
}

static int process_done(struct dw_sink *s)
{
    CURLMsg *m;
    int left, n = 0;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        CURLcode cc = m->data.result;
        struct req *q = detach_finished(s, m);
        if (q == NULL)
            continue;
        n++;
        long http = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &http);
        DW_DEBUG("answer to %s %s: HTTP %ld, %s", q->method, q->url, http,
                 cc == CURLE_OK ? "ok" : curl_easy_strerror(cc));
        debug_response(s, q, http);
        if (q->kind == REQ_TOKEN) {
            complete_token(s, q, cc, http);
            continue;
        }
        s->in_flight--;
        if (q->kind == REQ_PROBE) {
            dw_sink_complete_probe(s, q, cc, http);
            continue;
        }
        if (dw_sink_answered(cc, http))
            dw_sink_outage_end(s, dw_clock_ms());
        if (cc == CURLE_OK) {
            if (http >= 200 && http < 300)
                s->stats.responses_2xx++;
            else if (http >= 400 && http < 500)
                s->stats.responses_4xx++;
            else if (http >= 500)
                s->stats.responses_5xx++;
            if (q->dop_hint > 0)
                dw_aimd_set_hint(&s->aimd, q->dop_hint);
            if (http >= 200 && http < 300) {
                dw_aimd_success(&s->aimd);
                if (q->kind == REQ_BULK || q->kind == REQ_BATCH)
                    note_row_time(s, q);
            }
        }
        if (q->kind == REQ_CHANGESET)
            dw_sink_complete_changeset(s, as_changeset(q), cc, http);
        else if (is_write_req(q))
            dw_sink_complete_write(s, as_write(q), cc, http);
        else
            dw_sink_complete_read(s, as_read(q), cc, http);
    }
    return n;
}

/*
 * When the engine next has something to do that no socket will announce: a backoff that
 * ends, a pause that lifts, a token to renew or ask again for. Requests that wait for a
 * free slot or for a token in flight are woken by a completion instead.
 */
static int64_t next_timer(struct dw_sink *s, int64_t now)
{
    int64_t t = INT64_MAX;
    if (s->queue == NULL)
        return t;
    if (dw_auth_token(s->auth, now) == NULL) {
        if (!s->token_in_flight)
            t = s->token_not_before > now ? s->token_not_before : now;
        return t;
    }
    int64_t renew = dw_auth_renew_at(s->auth);
    if (renew && !s->token_in_flight)
        t = renew > s->token_not_before ? renew : s->token_not_before;
    if (now < s->paused_until)
        return s->paused_until < t ? s->paused_until : t;
    struct req *q;
    DL_FOREACH(s->queue, q)
    {
        if (q->not_before > now && q->not_before < t)
            t = q->not_before;
    }
    int64_t probe = s->probe_at > now ? s->probe_at : now;
    if (probe < t && dw_sink_probe_due(s, probe, dw_aimd_limit(&s->aimd)))
        t = probe;
    return t;
}

/* A socket curl asked about is ready: let curl act on it. */
static void on_socket_ready(void *user, int fd, unsigned revents)
{
    struct dw_sink *s = user;
    int flags = (revents & DW_LOOP_IN ? CURL_CSELECT_IN : 0) |
                (revents & DW_LOOP_OUT ? CURL_CSELECT_OUT : 0) |
                (revents & DW_LOOP_ERR ? CURL_CSELECT_ERR : 0);
    int running = 0;
    curl_multi_socket_action(s->multi, fd, flags, &running);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which events it wants on a socket, or that it is done. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *user, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct dw_sink *s = user;
    if (what == CURL_POLL_REMOVE) {
        dw_loop_del_fd(s->loop, fd);
        return 0;
    }
    unsigned events =
        (what & CURL_POLL_IN ? DW_LOOP_IN : 0) | (what & CURL_POLL_OUT ? DW_LOOP_OUT : 0);
    if (dw_loop_has_fd(s->loop, fd) && dw_loop_mod_fd(s->loop, fd, events) == DW_OK)
        return 0;
    /* New, or a number curl reused after closing a socket without a word: watch it anew. */
    dw_loop_del_fd(s->loop, fd);
    return dw_loop_add_fd(s->loop, fd, events, on_socket_ready, s) == DW_OK ? 0 : -1;
}

static void on_curl_timeout(void *user)
{
    struct dw_sink *s = user;
    int running = 0;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
}

/* CURLMOPT_TIMERFUNCTION: curl's one timeout (-1: none), acted on from the loop, never
 * from inside this callback (curl forbids it). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *user)
{
    (void)multi;
    struct dw_sink *s = user;
    if (timeout_ms < 0)
        dw_loop_timer_stop(s->curl_timer);
    else
        dw_loop_timer_start(s->curl_timer, timeout_ms, 0);
    return 0;
}

/* The engine's deadline came: the turn that follows starts what it allows. */
static void on_engine_timer(void *user)
{
    (void)user;
}

static void on_wakeup(void *user, int fd, unsigned revents)
{
    (void)user;
    (void)revents;
    uint64_t n;
    ssize_t got = read(fd, &n, sizeof n);
    (void)got;
}

/* Registers the sink's own timers and wake-up descriptor on s->loop. */
static void register_tenants(struct dw_sink *s)
{
    s->curl_timer = dw_loop_timer_new(s->loop, on_curl_timeout, s);
    s->engine_timer = dw_loop_timer_new(s->loop, on_engine_timer, s);
    if (s->wake_fd >= 0 && dw_loop_add_fd(s->loop, s->wake_fd, DW_LOOP_IN, on_wakeup, s) != DW_OK)
        DW_WARN("the sink's wake-up descriptor is not watched: dw_sink_wakeup() cannot end a wait");
}

static void unregister_tenants(struct dw_sink *s)
{
    dw_loop_timer_free(s->curl_timer);
    dw_loop_timer_free(s->engine_timer);
    s->curl_timer = s->engine_timer = NULL;
    /* Every descriptor curl named is dropped too: the sockets of its connection cache may
     * close without a CURL_POLL_REMOVE, and a number reused by the next sink on the same
     * loop must not reach this one's callback. */
    dw_loop_del_user(s->loop, s);
}

void dw_sink_transport_init(struct dw_sink *s)
{
    s->loop = dw_loop_new(NULL);
    s->own_loop = true;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0)
        DW_WARN("no wake-up descriptor for the sink: %s", strerror(errno));
    register_tenants(s);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
}

/* Before any request: curl has no socket yet, and its timer is restarted on the new loop. */
void dw_sink_use_loop(struct dw_sink *s, struct dw_loop *loop)
{
    bool curl_timer_on = dw_loop_timer_active(s->curl_timer);
    unregister_tenants(s);
    if (s->own_loop)
        dw_loop_free(s->loop);
    s->loop = loop;
    s->own_loop = false;
    register_tenants(s);
    if (curl_timer_on)
        dw_loop_timer_start(s->curl_timer, 0, 0);
}

void dw_sink_transport_cleanup(struct dw_sink *s)
{
    /* curl says goodbye to its sockets while it cleans up: the loop goes last. */
    if (s->multi)
        curl_multi_cleanup(s->multi);
    s->multi = NULL;
    if (s->loop == NULL)
        return;
    unregister_tenants(s);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->own_loop)
        dw_loop_free(s->loop);
    s->loop = NULL;
}

/* write() to an eventfd is async-signal-safe: a signal handler may call this. */
void dw_sink_transport_wakeup(struct dw_sink *s)
{
    uint64_t one = 1;
    if (s->wake_fd >= 0) {
        ssize_t put = write(s->wake_fd, &one, sizeof one);
        (void)put;
    }
}

/* Requests on the wire that write rows: Dataverse may apply one whatever becomes of its
 * answer. */
static size_t writes_on_wire(const struct dw_sink *s)
{
    size_t n = 0;
    const struct req *q;
    DL_FOREACH(s->transfers, q)
    {
        n += is_write_req(q);
    }
    return n;
}

/* Takes what curl has finished out of the transfers, answer unread: queued, never started
 * again, freed with the sink. */
static void drop_finished(struct dw_sink *s)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        struct req *q = detach_finished(s, m);
        if (q == NULL)
            continue;
        if (q->kind == REQ_TOKEN) {
            s->token_in_flight = false;
            explicit_bzero(q->body, q->body_len); /* as complete_token(): the credential */
        } else {
            s->in_flight--;
        }
        DL_APPEND(s->queue, q);
    }
}

size_t dw_sink_settle(struct dw_sink *s, int64_t deadline_ms)
{
    dw_loop_timer_stop(s->engine_timer); /* nothing is started any more */
    for (;;) {
        int running = 0;
        curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        drop_finished(s);
        size_t left = writes_on_wire(s);
        int64_t now = dw_clock_ms();
        if (left == 0 || now >= deadline_ms)
            return left;
        int64_t wait = deadline_ms - now;
        if (dw_loop_run_once(s->loop, wait > 1000 ? 1000 : (int)wait) != DW_OK)
            return left;
    }
}

/* Waits one turn of the loop: curl's sockets, the engine's deadline, the loop's tenants. */
static dw_rc wait_turn(struct dw_sink *s, int timeout_ms)
{
    int64_t now = dw_clock_ms();
    int64_t t = next_timer(s, now);
    if (t == INT64_MAX)
        dw_loop_timer_stop(s->engine_timer);
    else
        dw_loop_timer_start(s->engine_timer, t - now, 0);
    return dw_loop_run_once(s->loop, timeout_ms);
}

/* One turn of the engine; results are delivered only when do_deliver is set. */
dw_rc dw_sink_drive(struct dw_sink *s, int timeout_ms, bool do_deliver)
{
    int running = 0;
    dw_sink_plan(s);
    start_requests(s);
    /* Lets curl start what was just added (the kick ephiperfifo.c gives a new handle). */
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    /* Something finished already: hand it on rather than wait for more. */
    if (process_done(s) == 0 && !(do_deliver && s->done)) {
        dw_rc rc = wait_turn(s, timeout_ms);
        if (rc != DW_OK)
            return rc;
        process_done(s);
    }
    dw_sink_plan(s);
    start_requests(s);
    s->stats.in_flight = s->in_flight;
    s->stats.concurrency = dw_aimd_limit(&s->aimd);
    s->stats.throttled_until_ms = s->paused_until > dw_clock_ms() ? s->paused_until : 0;
    if (do_deliver)
        dw_sink_deliver(s);
    return DW_OK;
}

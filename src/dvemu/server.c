/* dvemu's HTTP side on libmicrohttpd: request intake, the token endpoint, bearer checks,
 * service protection limits, faults on demand, the admin endpoints and the run loop.
 *
 * Threads: libmicrohttpd calls the handler from many threads (one per connection, or a pool
 * of epoll threads). Shared state is guarded: the store by emu->store_lock (webapi.c), the
 * limits by limit_lock, faults by fault_lock, counters by counter_lock. Locks never nest
 * except store_lock taken alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "dwasync/clock.h"
#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "internal.h"

#define MAX_BODY ((size_t)128 * 1024 * 1024) /* above Dataverse's 116.85 MB request cap */

enum fault_kind { F_NONE = -1, F_503, F_500, F_429, F_SLOW, F_DROP, F_MALFORMED, F_HTML, F_COUNT };
static const char *const fault_names[F_COUNT] = {"503",  "500",       "429", "slow",
                                                 "drop", "malformed", "html"};

struct user_limits {
    char *user;
    int64_t *ts;   /* start of each request in the window, ms */
    int64_t *exec; /* its execution time, ms (0 while running) */
    size_t head, count, cap;
    uint64_t base; /* absolute number of the entry at head */
    int64_t exec_sum;
    int concurrent;
    UT_hash_handle hh;
};

struct server {
    struct emu emu;
    pthread_mutex_t limit_lock;
    struct user_limits *users;
    int concurrent_peak; /* the most requests one user had in flight since counters were reset */
    pthread_mutex_t fault_lock;
    bool outage;
    char *outage_except; /* a resource (e.g. WhoAmI) answered as usual during the outage */
    uint64_t rng;
    uint64_t seed;
    double rate[F_COUNT];
    int slow_ms;
    json_t *schedule; /* request number -> fault name */
    uint64_t api_requests;
    pthread_mutex_t counter_lock;
    json_t *counters; /* "<METHOD> <resource> <status>" -> count */
    uint64_t throttled, faults_injected;
};

struct conn {
    char *uri;
    struct dw_buf body;
    bool started;
    bool too_large;
    struct timespec start;
};

/* --- counters -------------------------------------------------------------------------- */

static void count_request(struct server *s, const char *method, const char *resource, int status)
{
    char key[160];
    snprintf(key, sizeof key, "%s %s %d", method, resource, status);
    pthread_mutex_lock(&s->counter_lock);
    json_t *v = json_object_get(s->counters, key);
    json_object_set_new(s->counters, key, json_integer(json_integer_value(v) + 1));
    pthread_mutex_unlock(&s->counter_lock);
}

/* --- faults ---------------------------------------------------------------------------- */

/* splitmix64: small, seedable, and the same sequence on every platform. */
static double next_random(struct server *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static dw_rc faults_configure(struct server *s, json_t *cfg, char **why)
{
    if (!json_is_object(cfg)) {
        *why = dw_strdup("faults must be a JSON object");
        return DW_ERR_INVALID;
    }
    json_t *rates = json_object_get(cfg, "rates");
    json_t *schedule = json_object_get(cfg, "schedule");
    const char *k;
    json_t *v;
    json_object_foreach(rates, k, v)
    {
        int i;
        for (i = 0; i < F_COUNT; i++)
            if (strcmp(fault_names[i], k) == 0)
                break;
        if (i == F_COUNT || !json_is_number(v) || json_number_value(v) < 0 ||
            json_number_value(v) > 1) {
            *why = dw_asprintf("unknown fault \"%s\" or rate outside 0..1", k);
            return DW_ERR_INVALID;
        }
    }
    json_object_foreach(schedule, k, v)
    {
        bool known = false;
        for (int i = 0; i < F_COUNT; i++)
            known |= json_is_string(v) && strcmp(fault_names[i], json_string_value(v)) == 0;
        if (!known || strtoull(k, NULL, 10) == 0) {
            *why = dw_asprintf("schedule entry \"%s\" must map a request number to a fault", k);
            return DW_ERR_INVALID;
        }
    }
    pthread_mutex_lock(&s->fault_lock);
    if (json_object_get(cfg, "outage")) {
        s->outage = json_is_true(json_object_get(cfg, "outage"));
        const char *except = json_string_value(json_object_get(cfg, "outage_except"));
        free(s->outage_except);
        s->outage_except = s->outage && except && *except ? dw_strdup(except) : NULL;
    }
    if (rates) {
        for (int i = 0; i < F_COUNT; i++)
            s->rate[i] = json_number_value(json_object_get(rates, fault_names[i]));
    }
    if (json_is_integer(json_object_get(cfg, "slow_ms")))
        s->slow_ms = (int)json_integer_value(json_object_get(cfg, "slow_ms"));
    if (schedule) {
        json_decref(s->schedule);
        s->schedule = json_deep_copy(schedule);
        s->api_requests = 0;
    }
    if (json_is_integer(json_object_get(cfg, "seed")) || rates) {
        s->seed = (uint64_t)json_integer_value(json_object_get(cfg, "seed"));
        s->rng = s->seed;
        s->api_requests = 0;
    }
    pthread_mutex_unlock(&s->fault_lock);
    return DW_OK;
}

static json_t *faults_json(struct server *s)
{
    pthread_mutex_lock(&s->fault_lock);
    json_t *rates = json_object();
    for (int i = 0; i < F_COUNT; i++)
        json_object_set_new(rates, fault_names[i], json_real(s->rate[i]));
    json_t *j = json_pack("{s:b, s:I, s:o, s:i, s:O, s:I, s:I}", "outage", s->outage, "seed",
                          (json_int_t)s->seed, "rates", rates, "slow_ms", s->slow_ms, "schedule",
                          s->schedule, "requests", (json_int_t)s->api_requests, "injected",
                          (json_int_t)s->faults_injected);
    pthread_mutex_unlock(&s->fault_lock);
    return j;
}

/* Whether the request path names resource (its last segment, key and query excluded). */
static bool path_names(const char *path, const char *resource)
{
    const char *last = strrchr(path, '/');
    last = last ? last + 1 : path;
    size_t n = strcspn(last, "?(");
    return strlen(resource) == n && strncmp(last, resource, n) == 0;
}

/* Decides the fault for the next API request (outage counts as a 503, but for the resource
 * the outage excepts). */
static int fault_draw(struct server *s, const char *path, int *slow_ms)
{
    int kind = F_NONE;
    pthread_mutex_lock(&s->fault_lock);
    uint64_t n = ++s->api_requests;
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)n);
    const char *sched = json_string_value(json_object_get(s->schedule, key));
    double u = next_random(s);
    if (s->outage && !(s->outage_except && path_names(path, s->outage_except))) {
        kind = F_503;
    } else if (sched) {
        for (int i = 0; i < F_COUNT; i++)
            if (strcmp(fault_names[i], sched) == 0)
                kind = i;
    } else {
        double acc = 0;
        for (int i = 0; i < F_COUNT && kind == F_NONE; i++) {
            acc += s->rate[i];
            if (u < acc)
                kind = i;
        }
    }
    if (kind != F_NONE)
        s->faults_injected++;
    *slow_ms = s->slow_ms > 0 ? s->slow_ms : 2000;
    pthread_mutex_unlock(&s->fault_lock);
    return kind;
}

/* --- service protection limits --------------------------------------------------------- */

static void limits_purge(struct user_limits *u, int64_t now, int64_t window_ms)
{
    while (u->count > 0 && u->ts[u->head] <= now - window_ms) {
        u->exec_sum -= u->exec[u->head];
        u->head = (u->head + 1) % u->cap;
        u->count--;
        u->base++;
    }
}

static void limits_append(struct user_limits *u, int64_t now)
{
    if (u->count == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        int64_t *ts = dw_malloc(cap * sizeof *ts), *ex = dw_malloc(cap * sizeof *ex);
        for (size_t i = 0; i < u->count; i++) {
            ts[i] = u->ts[(u->head + i) % u->cap];
            ex[i] = u->exec[(u->head + i) % u->cap];
        }
        free(u->ts);
        free(u->exec);
        u->ts = ts;
        u->exec = ex;
        u->head = 0;
        u->cap = cap;
    }
    size_t pos = (u->head + u->count) % u->cap;
    u->ts[pos] = now;
    u->exec[pos] = 0;
    u->count++;
}

/* Format with thousands separators, as Dataverse writes 1,200,000. */
static void thousands(char *out, size_t size, long long v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", v);
    size_t n = strlen(digits), o = 0;
    for (size_t i = 0; i < n && o + 2 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

/* Admits a request or fills resp with the 429; *ticket identifies the admitted entry. */
static bool limits_admit(struct server *s, const char *user, uint64_t *ticket,
                         struct emu_resp *resp, long *remaining)
{
    const struct dw_dvemu_options *o = s->emu.opt;
    int64_t now = emu_clock_ms(&s->emu.clock), window = (int64_t)o->limit_window_s * 1000;
    struct emu_err err = {0};
    long retry = 0;
    pthread_mutex_lock(&s->limit_lock);
    struct user_limits *u = NULL;
    HASH_FIND_STR(s->users, user, u);
    if (u == NULL) {
        u = dw_calloc(1, sizeof *u);
        u->user = dw_strdup(user);
        HASH_ADD_KEYPTR(hh, s->users, u->user, strlen(u->user), u);
    }
    limits_purge(u, now, window);
    if (u->concurrent >= o->limit_concurrent) {
        emu_err_set(&err, 429, "0x80072326",
                    "Number of concurrent requests exceeded the limit of %d.", o->limit_concurrent);
        retry = 1;
    } else if (u->count >= (size_t)o->limit_requests) {
        emu_err_set(&err, 429, "0x80072322",
                    "Number of requests exceeded the limit of %d over time window of %d seconds.",
                    o->limit_requests, o->limit_window_s);
        retry = (long)((u->ts[u->head] + window - now + 999) / 1000);
    } else if (u->exec_sum >= o->limit_exec_ms) {
        char ms[32];
        thousands(ms, sizeof ms, o->limit_exec_ms);
        emu_err_set(&err, 429, "0x80072321",
                    "Combined execution time of incoming requests exceeded limit of %s "
                    "milliseconds over time window of %d seconds. Decrease number of concurrent "
                    "requests or reduce the duration of requests and try again later.",
                    ms, o->limit_window_s);
        retry = (long)((u->ts[u->head] + window - now + 999) / 1000);
    } else {
        limits_append(u, now);
        *ticket = u->base + u->count - 1;
        u->concurrent++;
        if (u->concurrent > s->concurrent_peak)
            s->concurrent_peak = u->concurrent;
        *remaining = o->limit_requests - (long)u->count;
    }
    pthread_mutex_unlock(&s->limit_lock);
    if (err.status == 0)
        return true;
    if (retry < 1)
        retry = 1;
    emu_resp_error(resp, &err);
    char ra[24];
    snprintf(ra, sizeof ra, "%ld", retry);
    emu_resp_header(resp, "Retry-After", ra);
    emu_err_clear(&err);
    pthread_mutex_lock(&s->counter_lock);
    s->throttled++;
    pthread_mutex_unlock(&s->counter_lock);
    return false;
}

static void limits_done(struct server *s, const char *user, uint64_t ticket, int64_t exec_ms)
{
    pthread_mutex_lock(&s->limit_lock);
    struct user_limits *u = NULL;
    HASH_FIND_STR(s->users, user, u);
    if (u) {
        u->concurrent--;
        if (ticket >= u->base && ticket < u->base + u->count) {
            u->exec[(u->head + (ticket - u->base)) % u->cap] = exec_ms;
            u->exec_sum += exec_ms;
        }
    }
    pthread_mutex_unlock(&s->limit_lock);
}

/* Clears the request counters, the 429 count and the concurrency peak (not the store). */
static void counters_clear(struct server *s)
{
    pthread_mutex_lock(&s->limit_lock);
    s->concurrent_peak = 0;
    pthread_mutex_unlock(&s->limit_lock);
    pthread_mutex_lock(&s->counter_lock);
    json_object_clear(s->counters);
    s->throttled = 0;
    pthread_mutex_unlock(&s->counter_lock);
}

static void limits_reset(struct server *s)
{
    pthread_mutex_lock(&s->limit_lock);
    struct user_limits *u, *tmp;
    HASH_ITER(hh, s->users, u, tmp)
    {
        if (u->concurrent > 0) {
            /* In flight: keep the entry so its completion still finds it. */
            u->count = 0;
            u->exec_sum = 0;
            continue;
        }
        HASH_DEL(s->users, u);
        free(u->user);
        free(u->ts);
        free(u->exec);
        free(u);
    }
    pthread_mutex_unlock(&s->limit_lock);
}

/* --- responses ------------------------------------------------------------------------- */

static enum MHD_Result send_resp(struct MHD_Connection *con, struct emu_resp *r)
{
    size_t len = r->body.len;
    char *data = dw_buf_steal(&r->body);
    struct MHD_Response *mr;
    if (len == 0) {
        free(data);
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        mr = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    }
    if (mr == NULL)
        return MHD_NO;
    if (r->content_type && len > 0)
        MHD_add_response_header(mr, "Content-Type", r->content_type);
    for (size_t i = 0; i < r->nheaders; i++)
        MHD_add_response_header(mr, r->hname[i], r->hvalue[i]);
    enum MHD_Result ret = MHD_queue_response(con, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

/* --- admin ----------------------------------------------------------------------------- */

/* POST /_dvemu/organization {"OrganizationId": GUID}: what WhoAmI answers from now on, as
 * after a refresh or copy of the environment (the environment guard's tests). */
static void set_organization(struct emu *emu, struct conn *c, struct emu_resp *resp)
{
    json_t *body = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
    const char *org = json_string_value(json_object_get(body, "OrganizationId"));
    if (org == NULL || !dw_dvemu_is_guid(org, strlen(org))) {
        emu_resp_json(resp, 400, json_pack("{s:s}", "error", "OrganizationId must be a GUID"));
    } else {
        pthread_mutex_lock(&emu->store_lock);
        snprintf(emu->organization_id, sizeof emu->organization_id, "%s", org);
        pthread_mutex_unlock(&emu->store_lock);
        resp->status = 204;
    }
    json_decref(body);
}

static void admin(struct server *s, const char *method, const char *path, const char *query,
                  struct conn *c, struct emu_resp *resp)
{
    struct emu *emu = &s->emu;
    if (strcmp(path, "reset") == 0 && strcmp(method, "POST") == 0) {
        pthread_mutex_lock(&emu->store_lock);
        emu_store_reset(emu);
        emu_reqlog_clear(emu);
        pthread_mutex_unlock(&emu->store_lock);
        limits_reset(s);
        counters_clear(s);
        resp->status = 204;
        return;
    }
    if (strncmp(path, "tables/", 7) == 0 && strcmp(method, "GET") == 0) {
        struct emu_table *t = emu_table_by_set(emu, path + 7, strlen(path + 7));
        if (t == NULL) {
            emu_resp_json(resp, 404, json_pack("{s:s}", "error", "no such table"));
            return;
        }
        json_t *rows = json_array();
        pthread_mutex_lock(&emu->store_lock);
        for (struct emu_row *r = t->rows; r; r = r->hh.next)
            json_array_append(rows, r->data);
        pthread_mutex_unlock(&emu->store_lock);
        emu_resp_json(resp, 200, json_pack("{s:o}", "value", rows));
        return;
    }
    if (strcmp(path, "counters") == 0 && strcmp(method, "DELETE") == 0) {
        counters_clear(s);
        resp->status = 204;
        return;
    }
    if (strcmp(path, "counters") == 0 && strcmp(method, "GET") == 0) {
        pthread_mutex_lock(&s->limit_lock);
        int peak = s->concurrent_peak;
        pthread_mutex_unlock(&s->limit_lock);
        json_t *rows = json_object();
        pthread_mutex_lock(&emu->store_lock);
        for (size_t i = 0; i < emu->ntables; i++)
            json_object_set_new(rows, emu->tables[i].set,
                                json_integer((json_int_t)emu->tables[i].rows_written));
        pthread_mutex_unlock(&emu->store_lock);
        pthread_mutex_lock(&s->counter_lock);
        json_t *body =
            json_pack("{s:O, s:o, s:I, s:I, s:i}", "requests", s->counters, "rows_written", rows,
                      "throttled", (json_int_t)s->throttled, "faults_injected",
                      (json_int_t)s->faults_injected, "concurrent_peak", peak);
        pthread_mutex_unlock(&s->counter_lock);
        emu_resp_json(resp, 200, body);
        return;
    }
    if (strcmp(path, "history") == 0 && strcmp(method, "GET") == 0) {
        char *table = NULL;
        if (query && strncmp(query, "table=", 6) == 0)
            table = dw_strndup(query + 6, strcspn(query + 6, "&"));
        json_t *value = json_array();
        pthread_mutex_lock(&emu->store_lock);
        for (size_t i = 0; i < emu->nhist; i++) {
            const struct emu_hist *h = &emu->hist[i];
            if (table && strcmp(table, h->table->set) != 0)
                continue;
            json_array_append_new(value, json_pack("{s:I, s:s, s:s, s:s, s:O}", "seq",
                                                   (json_int_t)h->seq, "table", h->table->set, "id",
                                                   h->id, "op", h->op, "row", h->row));
        }
        json_t *body =
            json_pack("{s:o, s:I}", "value", value, "dropped", (json_int_t)emu->hist_dropped);
        pthread_mutex_unlock(&emu->store_lock);
        free(table);
        emu_resp_json(resp, 200, body);
        return;
    }
    if (strcmp(path, "requests") == 0 && strcmp(method, "GET") == 0) {
        char *filter = NULL;
        if (query && strncmp(query, "path=", 5) == 0 &&
            dw_dvemu_pct_decode(query + 5, strcspn(query + 5, "&"), &filter) != DW_OK)
            filter = NULL;
        pthread_mutex_lock(&emu->store_lock);
        json_t *body = emu_reqlog_json(emu, filter);
        pthread_mutex_unlock(&emu->store_lock);
        free(filter);
        emu_resp_json(resp, 200, body);
        return;
    }
    if (strcmp(path, "organization") == 0 && strcmp(method, "POST") == 0) {
        set_organization(emu, c, resp);
        return;
    }
    if (strcmp(path, "faults") == 0 && strcmp(method, "GET") == 0) {
        emu_resp_json(resp, 200, faults_json(s));
        return;
    }
    if (strcmp(path, "faults") == 0 && strcmp(method, "POST") == 0) {
        json_t *cfg = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
        char *why = NULL;
        if (faults_configure(s, cfg, &why) != DW_OK) {
            emu_resp_json(resp, 400, json_pack("{s:s}", "error", why));
            free(why);
        } else {
            emu_resp_json(resp, 200, faults_json(s));
        }
        json_decref(cfg);
        return;
    }
    if (strcmp(path, "privileges") == 0 && strcmp(method, "GET") == 0) {
        pthread_mutex_lock(&emu->store_lock);
        json_t *body = emu_privileges_json(emu);
        pthread_mutex_unlock(&emu->store_lock);
        emu_resp_json(resp, 200, body);
        return;
    }
    if (strcmp(path, "privileges") == 0 && strcmp(method, "POST") == 0) {
        json_t *cfg = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
        char *why = NULL;
        pthread_mutex_lock(&emu->store_lock);
        dw_rc rc = emu_privileges_set(emu, cfg, &why);
        json_t *body = rc == DW_OK ? emu_privileges_json(emu) : NULL;
        pthread_mutex_unlock(&emu->store_lock);
        if (rc != DW_OK) {
            emu_resp_json(resp, 400, json_pack("{s:s}", "error", why));
            free(why);
        } else {
            emu_resp_json(resp, 200, body);
        }
        json_decref(cfg);
        return;
    }
    if (strcmp(path, "clock") == 0 && strcmp(method, "GET") == 0) {
        emu_resp_json(resp, 200, emu_clock_json(&emu->clock));
        return;
    }
    if (strcmp(path, "clock") == 0 && strcmp(method, "POST") == 0) {
        json_t *cfg = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
        json_t *adv = json_object_get(cfg, "advance_ms"), *set = json_object_get(cfg, "set_ms");
        char *why = NULL;
        if (!json_is_object(cfg) || json_object_size(cfg) != 1 ||
            !(json_is_integer(adv) || json_is_integer(set)))
            why = dw_strdup("the clock takes {\"advance_ms\": N} or {\"set_ms\": N}");
        else if (emu_clock_move(&emu->clock, json_integer_value(adv), json_integer_value(set),
                                set != NULL, &why) == DW_OK)
            emu_resp_json(resp, 200, emu_clock_json(&emu->clock));
        if (why) {
            emu_resp_json(resp, emu->clock.manual ? 400 : 409, json_pack("{s:s}", "error", why));
            free(why);
        }
        json_decref(cfg);
        return;
    }
    if (strcmp(path, "outage") == 0 && strcmp(method, "POST") == 0) {
        /* ?on=1|0, and with on=1 an optional &except=RESOURCE (a name without '&'). */
        const char *except = query ? strstr(query, "except=") : NULL;
        char *name = except ? dw_strndup(except + 7, strcspn(except + 7, "&")) : dw_strdup("");
        json_t *cfg = json_pack("{s:b, s:s}", "outage", query && strstr(query, "on=1") != NULL,
                                "outage_except", name);
        free(name);
        char *why = NULL;
        (void)faults_configure(s, cfg, &why);
        json_decref(cfg);
        emu_resp_json(resp, 200, faults_json(s));
        return;
    }
    emu_resp_json(resp, 404, json_pack("{s:s}", "error", "no such admin endpoint"));
}

/* --- the Web API front ----------------------------------------------------------------- */

static bool inject_fault(struct server *s, int kind, struct emu_resp *resp)
{
    struct emu_err err = {0};
    switch (kind) {
    case F_503:
        emu_err_set(&err, 503, "0x80040216", "The service is temporarily unavailable.");
        emu_resp_error(resp, &err);
        emu_resp_header(resp, "Retry-After", "1");
        break;
    case F_500:
        emu_err_set(&err, 500, "0x80040216", "An unexpected error occurred.");
        emu_resp_error(resp, &err);
        break;
    case F_429:
        emu_err_set(&err, 429, "0x80072322",
                    "Number of requests exceeded the limit of %d over time window of %d seconds.",
                    s->emu.opt->limit_requests, s->emu.opt->limit_window_s);
        emu_resp_error(resp, &err);
        emu_resp_header(resp, "Retry-After", "1");
        break;
    case F_MALFORMED:
        resp->status = 200;
        (void)dw_buf_puts(&resp->body, "{\"value\":[{\"error\":");
        resp->content_type = "application/json; odata.metadata=minimal";
        break;
    case F_HTML:
        resp->status = 502;
        (void)dw_buf_puts(&resp->body,
                          "<!DOCTYPE html>\n<html><head><title>502 - Web server received an "
                          "invalid response while acting as a gateway or proxy server."
                          "</title></head><body><h1>Server Error</h1></body></html>\n");
        resp->content_type = "text/html";
        break;
    default:
        return false;
    }
    emu_err_clear(&err);
    return true;
}

/*
 * The server time a request costs (--cost-*): a fixed part and a part per row written, less
 * per row in a bulk action, and less again for the rows written with custom synchronous
 * logic bypassed (MSCRM.BypassBusinessLogicExecution: CustomSync, or the older
 * MSCRM.BypassCustomPluginExecution: true; a $batch part's own header counts for its rows).
 */
static int64_t server_cost_ms(const struct dw_dvemu_options *o, const char *path,
                              const struct emu_resp *resp)
{
    bool bulk = strstr(path, "/Microsoft.Dynamics.CRM.") != NULL && strstr(path, "Multiple");
    int64_t per_row = bulk ? o->cost_bulk_row_ms : o->cost_row_ms;
    int64_t full = (int64_t)(resp->rows - resp->rows_bypassed) * per_row;
    int64_t bypassed = (int64_t)resp->rows_bypassed * per_row * o->cost_bypass_percent / 100;
    return o->cost_request_ms + full + bypassed;
}

/*
 * The organization URL as the client called it: links (@odata.nextLink, @odata.context,
 * OData-EntityId) start with it, as Dataverse's start with the URL of the environment, so
 * that a client reaching dvemu by another name (localhost, a proxy) can follow them. A Host
 * header that is no plain host[:port] is not trusted: the listening address is used.
 */
static char *request_base(const struct server *s, struct MHD_Connection *con)
{
    const char *host = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Host");
    size_t n = host ? strlen(host) : 0;
    bool plain = n > 0 && n <= 255 &&
                 strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
                              "STUVWXYZ0123456789.-:[]") == n;
    if (!plain)
        return dw_strdup(s->emu.base_url);
    return dw_asprintf("%s://%s", s->emu.opt->tls_cert ? "https" : "http", host);
}

/*
 * Refuses what a request asks for through a header that dvemu does not emulate, instead of
 * answering as if it had not been asked: impersonation (MSCRMCallerID, CallerObjectId) and
 * change tracking (Prefer: odata.track-changes). True when resp holds the refusal.
 */
static bool header_refused(struct MHD_Connection *con, const char *prefer, struct emu_resp *resp)
{
    static const char *const impersonation[] = {"MSCRMCallerID", "CallerObjectId"};
    const char *what = NULL;
    for (size_t i = 0; i < sizeof impersonation / sizeof *impersonation && !what; i++)
        if (MHD_lookup_connection_value(con, MHD_HEADER_KIND, impersonation[i]))
            what = impersonation[i];
    if (what == NULL && prefer && strstr(prefer, "odata.track-changes"))
        what = "Prefer: odata.track-changes";
    if (what == NULL)
        return false;
    struct emu_err err = {0};
    emu_err_set(&err, 501, "0x80060888",
                "dvemu does not emulate the '%s' header; see dvemu(1), \"What dvemu does not "
                "emulate\".",
                what);
    emu_resp_error(resp, &err);
    emu_err_clear(&err);
    return true;
}

/* Answers an admitted request: the Web API's answer, or a refusal of what dvemu does not
 * emulate. */
static void answer(struct server *s, struct MHD_Connection *con, const char *method,
                   const char *path, const char *query, const struct conn *c, const char *user,
                   struct emu_resp *resp)
{
    const char *prefer = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Prefer");
    if (header_refused(con, prefer, resp))
        return;
    char *base = request_base(s, con);
    struct emu_req req = {
        .method = method,
        .path = path,
        .query = query,
        .body = c->body.data,
        .body_len = c->body.len,
        .prefer_representation = prefer && strstr(prefer, "return=representation"),
        .max_page_size = emu_prefer_max_page_size(prefer),
        .if_match = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "If-Match"),
        .if_none_match = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "If-None-Match"),
        .user = user,
        .prefer = prefer,
        .base = base,
    };
    for (int i = 0; i < EMU_OPT_COUNT; i++)
        req.opts[i] = MHD_lookup_connection_value(con, MHD_HEADER_KIND, emu_opt_headers[i]);
    if (strcmp(path, "$batch") == 0 && strcmp(method, "POST") == 0)
        emu_batch_handle(&s->emu, &req,
                         MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type"),
                         prefer && strstr(prefer, "odata.continue-on-error"), resp);
    else
        emu_api_handle(&s->emu, &req, resp);
    free(base);
}

static void api(struct server *s, struct MHD_Connection *con, const char *method, const char *path,
                const char *query, struct conn *c, struct emu_resp *resp, bool *drop)
{
    struct emu *emu = &s->emu;
    char *user = NULL;
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (emu_token_check(emu, auth, &user) != DW_OK) {
        resp->status = 401;
        char *www = dw_asprintf("Bearer authorization_uri=https://login.microsoftonline.com/%s/"
                                "oauth2/authorize, resource_id=%s",
                                emu->opt->tenant, emu->base_url);
        emu_resp_header(resp, "WWW-Authenticate", www);
        free(www);
        return;
    }
    int slow_ms;
    int kind = fault_draw(s, path, &slow_ms);
    if (kind == F_DROP) {
        *drop = true;
        goto out;
    }
    if (inject_fault(s, kind, resp))
        goto out;
    uint64_t ticket = 0;
    long remaining = 0;
    if (!limits_admit(s, user, &ticket, resp, &remaining))
        goto out;
    int64_t t0 = emu_clock_ms(&emu->clock);
    /* A slow answer counts as execution time, as a slow Dataverse request would. */
    if (kind == F_SLOW)
        emu_clock_sleep(&emu->clock, slow_ms);
    answer(s, con, method, path, query, c, user, resp);
    emu_clock_sleep(&emu->clock, server_cost_ms(emu->opt, path, resp));
    limits_done(s, user, ticket, emu_clock_ms(&emu->clock) - t0);
    char num[24];
    snprintf(num, sizeof num, "%ld", remaining);
    emu_resp_header(resp, "x-ms-ratelimit-burst-remaining-xrm-requests", num);
out:
    if (!*drop) {
        char dop[16];
        snprintf(dop, sizeof dop, "%d", emu->opt->dop_hint);
        emu_resp_header(resp, "x-ms-dop-hint", dop);
        emu_resp_header(resp, "OData-Version", "4.0");
    }
    free(user);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *con, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **req_cls)
{
    struct server *s = cls;
    struct conn *c = *req_cls;
    (void)url;
    (void)version;
    if (c == NULL)
        return MHD_NO;
    if (!c->started) {
        c->started = true;
        clock_gettime(CLOCK_MONOTONIC, &c->start);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (c->body.len + *upload_data_size > MAX_BODY ||
            dw_buf_append(&c->body, upload_data, *upload_data_size) != DW_OK)
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct emu_resp resp;
    emu_resp_init(&resp);
    bool drop = false;
    char *path = dw_strdup(c->uri);
    char *query = strchr(path, '?');
    if (query)
        *query++ = '\0';
    const char *resource = "-";
    char resbuf[128] = "-";
    size_t tlen = strlen(s->emu.opt->tenant);
    if (c->too_large) {
        struct emu_err err = {0};
        emu_err_set(&err, 413, "0x8005f103", "The request body is too large.");
        emu_resp_error(&resp, &err);
        emu_err_clear(&err);
    } else if (strncmp(path, EMU_API_PREFIX, strlen(EMU_API_PREFIX)) == 0) {
        const char *p = path + strlen(EMU_API_PREFIX);
        snprintf(resbuf, sizeof resbuf, "%.*s", (int)strcspn(p, "(/"), p);
        resource = resbuf;
        api(s, con, method, p, query, c, &resp, &drop);
    } else if (path[0] == '/' && strncmp(path + 1, s->emu.opt->tenant, tlen) == 0 &&
               strcmp(path + 1 + tlen, "/oauth2/v2.0/token") == 0 && strcmp(method, "POST") == 0) {
        resource = "token";
        emu_token_endpoint(&s->emu, s->emu.opt->tenant, c->body.data, c->body.len, &resp);
    } else if (path[0] == '/' && strstr(path, "/oauth2/v2.0/token") != NULL &&
               strcmp(method, "POST") == 0) {
        resource = "token";
        char *tenant = dw_strndup(path + 1, strcspn(path + 1, "/"));
        emu_token_endpoint(&s->emu, tenant, c->body.data, c->body.len, &resp);
        free(tenant);
    } else if (strncmp(path, "/_dvemu/", 8) == 0 && s->emu.opt->admin) {
        resource = "admin";
        admin(s, method, path + 8, query, c, &resp);
    } else {
        emu_resp_json(&resp, 404,
                      json_pack("{s:{s:s, s:s}}", "error", "code", "", "message", "Not found"));
    }
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ms = (double)(end.tv_sec - c->start.tv_sec) * 1000.0 +
                (double)(end.tv_nsec - c->start.tv_nsec) / 1e6;
    char status[8], dur[24], rows[24];
    snprintf(status, sizeof status, "%d", drop ? 0 : resp.status);
    snprintf(dur, sizeof dur, "%.1f", ms);
    snprintf(rows, sizeof rows, "%d", (int)resp.rows);
    DW_LOGF(DW_LOG_INFO,
            DW_FIELDS({"method", method}, {"path", c->uri}, {"status", status}, {"rows", rows},
                      {"ms", dur}),
            "request");
    if (dw_log_enabled(DW_LOG_DEBUG) && c->body.len > 0)
        DW_DEBUG("request body: %.*s", (int)(c->body.len > 65536 ? 65536 : c->body.len),
                 c->body.data);
    count_request(s, method, resource, drop ? 0 : resp.status);
    free(path);
    enum MHD_Result ret = drop ? MHD_NO : send_resp(con, &resp);
    emu_resp_cleanup(&resp);
    return ret;
}

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *con)
{
    (void)cls;
    (void)con;
    struct conn *c = dw_calloc(1, sizeof *c);
    c->uri = dw_strdup(uri);
    dw_buf_init(&c->body, MAX_BODY);
    return c;
}

static void completed(void *cls, struct MHD_Connection *con, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con;
    (void)toe;
    struct conn *c = *req_cls;
    if (c == NULL)
        return;
    dw_buf_cleanup(&c->body);
    free(c->uri);
    free(c);
    *req_cls = NULL;
}

/* --- run ------------------------------------------------------------------------------- */

void dw_dvemu_options_init(struct dw_dvemu_options *o)
{
    memset(o, 0, sizeof *o);
    o->listen_host = dw_strdup("127.0.0.1");
    o->listen_port = 0;
    o->token_lifetime = 3599;
    o->limit_requests = 6000;
    o->limit_exec_ms = 1200000;
    o->limit_window_s = 300;
    o->limit_concurrent = 52;
    o->dop_hint = 8;
    o->history_max = 250000;
    o->threads = 0;
    o->page_size = 5000;
    o->cost_bypass_percent = 50;
}

void dw_dvemu_options_cleanup(struct dw_dvemu_options *o)
{
    free(o->listen_host);
    free(o->port_file);
    free(o->metadata_file);
    free(o->state_file);
    free(o->tls_cert);
    free(o->tls_key);
    free(o->tenant);
    for (size_t i = 0; i < o->nclients; i++) {
        free(o->clients[i].id);
        if (o->clients[i].secret)
            OPENSSL_cleanse(o->clients[i].secret, strlen(o->clients[i].secret));
        free(o->clients[i].secret);
        free(o->clients[i].cert_file);
    }
    free(o->clients);
    json_decref(o->faults);
    json_decref(o->privileges);
    memset(o, 0, sizeof *o);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    struct dw_buf b;
    dw_buf_init(&b, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (dw_buf_append(&b, chunk, n) != DW_OK)
            break;
    fclose(f);
    return dw_buf_steal(&b);
}

static dw_rc write_port_file(const char *file, unsigned port)
{
    char *tmp = dw_asprintf("%s.tmp", file);
    FILE *f = fopen(tmp, "w");
    dw_rc rc = DW_OK;
    if (f == NULL || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, file) != 0) {
        DW_ERROR("cannot write port file \"%s\": %s", file, strerror(errno));
        rc = DW_ERR_IO;
    }
    free(tmp);
    return rc;
}

dw_rc dw_dvemu_run(const struct dw_dvemu_options *o)
{
    struct server *s = dw_calloc(1, sizeof *s);
    struct MHD_Daemon *d = NULL;
    char *cert = NULL, *key = NULL;
    dw_rc rc;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    /* Block before any thread starts, so only sigwait() below sees these signals. */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    s->emu.opt = o;
    emu_clock_init(&s->emu.clock, o->manual_clock);
    pthread_mutex_init(&s->emu.store_lock, NULL);
    pthread_mutex_init(&s->limit_lock, NULL);
    pthread_mutex_init(&s->fault_lock, NULL);
    pthread_mutex_init(&s->counter_lock, NULL);
    s->counters = json_object();
    s->schedule = json_object();
    if ((rc = emu_meta_load(&s->emu, o->metadata_file)) != DW_OK)
        goto out;
    if (o->state_file && (rc = emu_state_load(&s->emu, o->state_file)) != DW_OK)
        goto out;
    if ((rc = emu_auth_init(&s->emu)) != DW_OK)
        goto out;
    if (o->privileges) {
        char *why = NULL;
        if ((rc = emu_privileges_set(&s->emu, o->privileges, &why)) != DW_OK) {
            DW_ERROR("invalid --privileges: %s", why);
            free(why);
            goto out;
        }
    }
    if (o->faults) {
        char *why = NULL;
        if ((rc = faults_configure(s, o->faults, &why)) != DW_OK) {
            DW_ERROR("invalid --faults: %s", why);
            free(why);
            goto out;
        }
    }
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)o->listen_port);
    if (inet_pton(AF_INET, o->listen_host, &sin.sin_addr) != 1) {
        DW_ERROR("--listen host \"%s\" is not an IPv4 address", o->listen_host);
        rc = DW_ERR_INVALID;
        goto out;
    }
    /* Bind before starting the daemon: the port (and so base_url, which every answer uses)
     * is known before the first request thread exists. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    socklen_t slen = sizeof sin;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &slen) != 0) {
        DW_ERROR("cannot listen on %s:%d: %s", o->listen_host, o->listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        rc = DW_ERR_IO;
        goto out;
    }
    unsigned port = ntohs(sin.sin_port);
    s->emu.base_url =
        dw_asprintf("%s://%s:%u", o->tls_cert ? "https" : "http", o->listen_host, port);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    flags |= o->threads > 0 ? MHD_USE_EPOLL : MHD_USE_THREAD_PER_CONNECTION;
    struct MHD_OptionItem opts[12];
    size_t n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, fd, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_log, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 300, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 4000, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 256 * 1024, NULL};
    if (o->threads > 0)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, o->threads, NULL};
    if (o->tls_cert) {
        cert = read_file(o->tls_cert);
        key = read_file(o->tls_key);
        if (cert == NULL || key == NULL) {
            DW_ERROR("cannot read TLS certificate \"%s\" or key \"%s\"", o->tls_cert,
                     o->tls_key ? o->tls_key : "");
            rc = DW_ERR_CONFIG;
            close(fd);
            goto out;
        }
        flags |= MHD_USE_TLS;
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    d = MHD_start_daemon(flags, 0, NULL, NULL, handler, s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (d == NULL) {
        DW_ERROR("cannot start the HTTP server on %s:%u", o->listen_host, port);
        close(fd);
        rc = DW_ERR_IO;
        goto out;
    }
    if (o->port_file && (rc = write_port_file(o->port_file, port)) != DW_OK)
        goto out;
    DW_LOGF(DW_LOG_INFO, DW_FIELDS({"url", s->emu.base_url}), "dvemu listening: %zu tables",
            s->emu.ntables);
    int sig = 0;
    sigwait(&sigs, &sig);
    DW_INFO("dvemu stopping on signal %d", sig);
    emu_clock_release(&s->emu.clock);
    MHD_stop_daemon(d);
    d = NULL;
    if (o->state_file) {
        pthread_mutex_lock(&s->emu.store_lock);
        rc = emu_state_save(&s->emu, o->state_file);
        pthread_mutex_unlock(&s->emu.store_lock);
    }
out:
    emu_clock_release(&s->emu.clock);
    if (d)
        MHD_stop_daemon(d);
    free(cert);
    free(key);
    limits_reset(s);
    emu_auth_free(&s->emu);
    emu_store_free(&s->emu);
    emu_privileges_free(&s->emu);
    emu_reqlog_free(&s->emu);
    emu_meta_free(&s->emu);
    free(s->emu.base_url);
    json_decref(s->counters);
    json_decref(s->schedule);
    free(s->outage_except);
    emu_clock_cleanup(&s->emu.clock);
    free(s);
    return rc;
}

/*
 * dw_ops_harness - drives the ops modules the way the daemon's event loop will, for the
 * integration tests (tests/integration/test_ops_*.sh):
 *
 *   dw_ops_harness metrics LISTEN
 *       serves /metrics and /healthz; prints "port N" when listening, then reads commands
 *       from stdin: "inc NAME JOB TABLE CLASS N", "health up|down", "quit". One poll loop
 *       holds stdin, the listener and the signal pipe, as `dwasync run` will.
 *   dw_ops_harness fakedv LISTEN SECRET
 *       a minimal stand-in for Entra ID and Dataverse, for `dwasync check`: POST
 *       /TENANT/oauth2/v2.0/token grants "tok-1" only for client_secret=SECRET (else 401
 *       invalid_client), GET /api/data/v9.2/WhoAmI answers with that token, every other
 *       path is a Dataverse-style 404. Prints "port N", runs until SIGTERM.
 *   dw_ops_harness ha CONNINFO JOB_ID POLL_MS
 *       competes for the job lock; prints "standby" then "active"; while active inserts
 *       one row (pid, n) into public.ha_log every 50 ms after checking it still holds the
 *       lock, and heartbeats dwasync.runner (job JOB_ID must exist); exits on SIGTERM,
 *       releasing the lock.
 */
#include <inttypes.h>
#include <microhttpd.h>
#include <sys/socket.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwasync/clock.h"
#include "dwasync/daemon.h"
#include "dwasync/ha.h"
#include "dwasync/log.h"
#include "dwasync/metrics.h"
#include "dwasync/pg.h"

static bool health_up = true;

static void health(void *ud, struct dw_health *h)
{
    (void)ud;
    snprintf(h->job, sizeof h->job, "harness");
    h->job_active = true;
    h->stream_ok = true;
    h->dataverse_ok = health_up;
    if (!health_up)
        snprintf(h->detail, sizeof h->detail, "told to be down");
}

static int run_command(struct dw_metrics *m, char *line)
{
    char name[128], job[64], table[64], cls[64], what[16];
    double n;
    line[strcspn(line, "\n")] = '\0';
    if (sscanf(line, "inc %127s %63s %63s %63s %lf", name, job, table, cls, &n) == 5) {
        const char *labels[] = {"job", job, "table", table, "class", cls, NULL};
        return dw_metrics_inc(m, name, labels, n) == DW_OK ? 0 : 1;
    }
    if (sscanf(line, "health %15s", what) == 1) {
        health_up = strcmp(what, "up") == 0;
        return 0;
    }
    if (strcmp(line, "quit") == 0)
        return -1;
    fprintf(stderr, "unknown command: %s\n", line);
    return 1;
}

static int serve_metrics(const char *listen)
{
    struct dw_metrics *m = dw_metrics_new();
    struct dw_metrics_server *s = NULL;
    int sigfd = -1, status = 1;
    if (dw_metrics_define_standard(m) != DW_OK || dw_daemon_signals_install(&sigfd) != DW_OK ||
        dw_metrics_server_start(listen, m, health, NULL, &s) != DW_OK)
        goto out;
    printf("port %u\n", dw_metrics_server_port(s));
    fflush(stdout);
    char line[512];
    for (;;) {
        struct pollfd fds[3] = {{.fd = 0, .events = POLLIN},
                                {.fd = dw_metrics_server_fd(s), .events = POLLIN},
                                {.fd = sigfd, .events = POLLIN}};
        int timeout = dw_metrics_server_timeout_ms(s);
        if (poll(fds, 3, timeout < 0 || timeout > 1000 ? 1000 : timeout) < 0)
            continue;
        if (dw_daemon_signals_take() & DW_SIGNAL_STOP)
            break;
        if (fds[0].revents) {
            if (fgets(line, sizeof line, stdin) == NULL)
                break;
            int r = run_command(m, line);
            if (r < 0)
                break;
            printf("%s\n", r == 0 ? "ok" : "error");
            fflush(stdout);
        }
        (void)dw_metrics_server_run(s);
    }
    status = 0;
out:
    dw_metrics_server_free(s);
    dw_metrics_free(m);
    dw_daemon_signals_restore();
    return status;
}

struct upload {
    struct dw_buf body;
};

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static const char *fake_secret;

static enum MHD_Result fake_dv(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    (void)cls;
    (void)version;
    struct upload *up = *ctx;
    if (up == NULL) {
        up = calloc(1, sizeof *up);
        dw_buf_init(&up->body, 1 << 20);
        *ctx = up;
        return MHD_YES;
    }
    if (*size) {
        (void)dw_buf_append(&up->body, data, *size);
        *size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "POST") == 0 && strstr(url, "/oauth2/v2.0/token")) {
        char want[256];
        snprintf(want, sizeof want, "client_secret=%s", fake_secret);
        const char *b = dw_buf_str(&up->body);
        const char *hit = strstr(b, want);
        size_t wl = strlen(want);
        if (hit && (hit[wl] == '\0' || hit[wl] == '&'))
            return send_json(conn, 200,
                             "{\"token_type\":\"Bearer\",\"expires_in\":3600,"
                             "\"access_token\":\"tok-1\"}");
        return send_json(conn, 401,
                         "{\"error\":\"invalid_client\",\"error_description\":"
                         "\"AADSTS7000215: Invalid client secret provided.\"}");
    }
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (auth == NULL || strcmp(auth, "Bearer tok-1") != 0)
        return send_json(conn, 401,
                         "{\"error\":{\"code\":\"0x80072560\",\"message\":"
                         "\"The user is not a member of the organization.\"}}");
    if (strcmp(url, "/api/data/v9.2/WhoAmI") == 0)
        return send_json(conn, 200,
                         "{\"UserId\":\"11111111-2222-3333-4444-555555555555\","
                         "\"BusinessUnitId\":\"11111111-2222-3333-4444-555555555556\","
                         "\"OrganizationId\":\"11111111-2222-3333-4444-555555555557\"}");
    return send_json(conn, 404,
                     "{\"error\":{\"code\":\"0x80060888\",\"message\":"
                     "\"Resource not found for the segment.\"}}");
}

static void fake_done(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *up = *ctx;
    if (up) {
        dw_buf_cleanup(&up->body);
        free(up);
    }
}

static int fake_dataverse(const char *listen, const char *secret)
{
    struct sockaddr_storage addr;
    unsigned len = 0;
    int sigfd = -1;
    fake_secret = secret;
    if (dw_metrics_parse_listen(listen, &addr, &len) != DW_OK ||
        dw_daemon_signals_install(&sigfd) != DW_OK)
        return 1;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_dv, NULL, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL, MHD_OPTION_END);
    if (d == NULL)
        return 1;
    printf("port %u\n", MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
    fflush(stdout);
    while (!(dw_daemon_signals_take() & DW_SIGNAL_STOP)) {
        struct pollfd pfd = {.fd = sigfd, .events = POLLIN};
        (void)poll(&pfd, 1, 1000);
    }
    MHD_stop_daemon(d);
    return 0;
}

static int compete(const char *conninfo, int64_t job_id, uint64_t poll_ms)
{
    PGconn *conn = NULL;
    struct dw_ha ha;
    int sigfd = -1, status = 1;
    bool active = false, announced_standby = false;
    int64_t n = 0;
    if (dw_daemon_signals_install(&sigfd) != DW_OK ||
        dw_pg_connect(conninfo, "dw_ops_harness", &conn) != DW_OK)
        return 1;
    dw_ha_init(&ha, conn, job_id, poll_ms);
    while (!(dw_daemon_signals_take() & DW_SIGNAL_STOP)) {
        uint64_t now = (uint64_t)dw_clock_ms();
        if (dw_ha_try(&ha, now, &active) != DW_OK)
            goto out;
        if (!active && !announced_standby) {
            printf("standby\n");
            fflush(stdout);
            announced_standby = true;
        }
        if (active) {
            if (n == 0) {
                printf("active\n");
                fflush(stdout);
            }
            if (dw_ha_check(&ha) != DW_OK)
                goto out;
            struct dw_ha_report report = {.status = "harness", .throttled_total = n};
            if (dw_ha_heartbeat(&ha, &report) != DW_OK)
                goto out;
            char pid[24], seq[24];
            snprintf(pid, sizeof pid, "%d", (int)getpid());
            snprintf(seq, sizeof seq, "%" PRId64, ++n);
            const char *params[] = {pid, seq};
            PGresult *res = NULL;
            if (dw_pg_query(conn, "ha_log insert",
                            "INSERT INTO public.ha_log (pid, n) VALUES ($1, $2)", 2, params,
                            &res) != DW_OK)
                goto out;
            PQclear(res);
        }
        struct pollfd pfd = {.fd = sigfd, .events = POLLIN};
        (void)poll(&pfd, 1, active ? 50 : dw_ha_timeout_ms(&ha, (uint64_t)dw_clock_ms()));
    }
    status = 0;
out:
    dw_ha_cleanup(&ha);
    PQfinish(conn);
    dw_daemon_signals_restore();
    return status;
}

int main(int argc, char **argv)
{
    dw_log_configure(DW_LOG_INFO, DW_LOG_LOGFMT);
    if (argc == 3 && strcmp(argv[1], "metrics") == 0)
        return serve_metrics(argv[2]);
    if (argc == 4 && strcmp(argv[1], "fakedv") == 0)
        return fake_dataverse(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "ha") == 0)
        return compete(argv[2], strtoll(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    fprintf(stderr, "usage: dw_ops_harness metrics LISTEN | fakedv LISTEN SECRET"
                    " | ha CONNINFO JOB_ID POLL_MS\n");
    return 2;
}

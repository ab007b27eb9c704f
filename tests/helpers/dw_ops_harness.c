/*
 * dw_ops_harness - drives the ops modules the way the daemon's event loop will, for the
 * integration tests (tests/integration/test_ops_*.sh):
 *
 *   dw_ops_harness metrics LISTEN
 *       serves /metrics and /healthz; prints "port N" when listening, then reads commands
 *       from stdin: "inc NAME JOB TABLE CLASS N", "health up|down", "quit". One poll loop
 *       holds stdin, the listener and the signal pipe, as `dwasync run` will.
 *   dw_ops_harness ha CONNINFO JOB_ID POLL_MS
 *       competes for the job lock; prints "standby" then "active"; while active inserts
 *       one row (pid, n) into public.ha_log every 50 ms after checking it still holds the
 *       lock, and heartbeats dwasync.runner (job JOB_ID must exist); exits on SIGTERM,
 *       releasing the lock.
 */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        uint64_t now = dw_daemon_now_ms();
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
        (void)poll(&pfd, 1, active ? 50 : dw_ha_timeout_ms(&ha, dw_daemon_now_ms()));
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
    if (argc == 5 && strcmp(argv[1], "ha") == 0)
        return compete(argv[2], strtoll(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    fprintf(stderr, "usage: dw_ops_harness metrics LISTEN | ha CONNINFO JOB_ID POLL_MS\n");
    return 2;
}

/*
 * The daemon's host interface (see daemon.h): the signal self-pipe, systemd notifications
 * through sd_notify(), the watchdog, and the progress reporter of initial syncs. The signal
 * flags and the pipe are process-global: a signal handler can reach nothing else.
 */
#include "dwasync/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "dwasync/log.h"

/* Process-global by nature: a signal handler can reach nothing else. */
static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t reload_flag;
static int pipe_fds[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    if (signo == SIGHUP)
        reload_flag = 1;
    else
        stop_flag = 1;
    if (pipe_fds[1] >= 0) {
        /* A full pipe already wakes the loop; the lost byte does not matter. */
        ssize_t n = write(pipe_fds[1], "s", 1);
        (void)n;
    }
    errno = saved;
}

dw_rc dw_daemon_signals_install(int *out_fd)
{
    if (pipe_fds[0] < 0) {
        if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
            DW_ERROR("cannot create the signal pipe: %s", strerror(errno));
            return DW_ERR_IO;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART keeps libpq and curl calls from failing with EINTR; poll wakes on the pipe. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGHUP, &sa, NULL) != 0) {
        DW_ERROR("cannot install signal handlers: %s", strerror(errno));
        return DW_ERR_IO;
    }
    signal(SIGPIPE, SIG_IGN);
    *out_fd = pipe_fds[0];
    return DW_OK;
}

unsigned dw_daemon_signals_take(void)
{
    char drain[64];
    if (pipe_fds[0] >= 0)
        while (read(pipe_fds[0], drain, sizeof drain) > 0)
            ;
    unsigned bits = 0;
    if (stop_flag)
        bits |= DW_SIGNAL_STOP;
    if (reload_flag) {
        bits |= DW_SIGNAL_RELOAD;
        reload_flag = 0;
    }
    return bits;
}

bool dw_daemon_stop_requested(void)
{
    return stop_flag != 0;
}

void dw_daemon_signals_restore(void)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    for (int i = 0; i < 2; i++) {
        if (pipe_fds[i] >= 0)
            close(pipe_fds[i]);
        pipe_fds[i] = -1;
    }
    stop_flag = 0;
    reload_flag = 0;
}

bool dw_daemon_under_systemd(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    return s != NULL && *s != '\0';
}

/* Keeps a STATUS= line single-line: systemd splits the message on newlines. */
static void notify_status_text(const char *prefix, const char *status)
{
    char line[256];
    snprintf(line, sizeof line, "%sSTATUS=%s", prefix, status ? status : "");
    for (char *c = line + strlen(prefix); *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    (void)sd_notify(0, line);
}

void dw_daemon_notify_ready(const char *status)
{
    notify_status_text("READY=1\n", status ? status : "ready");
}

void dw_daemon_notify_status(const char *fmt, ...)
{
    if (!dw_daemon_under_systemd())
        return;
    char text[201];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    notify_status_text("", text);
}

void dw_daemon_notify_reloading(void)
{
    (void)sd_notify(0, "RELOADING=1\nSTATUS=reloading configuration");
}

void dw_daemon_notify_stopping(void)
{
    (void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void dw_watchdog_init(struct dw_watchdog *w, uint64_t now_ms)
{
    uint64_t usec = 0;
    memset(w, 0, sizeof *w);
    /* unset_environment=0: a re-exec'd child (none today) would still see the setting. */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        w->enabled = true;
        w->interval_ms = usec / 2000u ? usec / 2000u : 1;
        w->last_ms = now_ms;
    }
}

int dw_watchdog_timeout_ms(const struct dw_watchdog *w, uint64_t now_ms)
{
    if (!w->enabled)
        return -1;
    uint64_t due = w->last_ms + w->interval_ms;
    if (now_ms >= due)
        return 0;
    uint64_t left = due - now_ms;
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

void dw_watchdog_tick(struct dw_watchdog *w, uint64_t now_ms)
{
    if (!w->enabled || now_ms < w->last_ms + w->interval_ms)
        return;
    (void)sd_notify(0, "WATCHDOG=1");
    w->last_ms = now_ms;
}

/* --- progress ---------------------------------------------------------------------------- */

#define LIVE_REDRAW_MS    250u
#define DEFAULT_REPORT_MS 10000u

void dw_progress_init(struct dw_progress *p, const char *what, uint64_t total, FILE *out,
                      uint64_t report_interval_ms, uint64_t now_ms)
{
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->start_ms = now_ms;
    p->last_report_ms = now_ms;
    p->report_interval_ms = report_interval_ms ? report_interval_ms : DEFAULT_REPORT_MS;
    p->out = out;
    p->live = out != NULL && isatty(fileno(out)) && !dw_daemon_under_systemd();
}

double dw_progress_rate(const struct dw_progress *p, uint64_t now_ms)
{
    if (now_ms <= p->start_ms)
        return 0.0;
    return (double)p->done * 1000.0 / (double)(now_ms - p->start_ms);
}

int64_t dw_progress_eta_seconds(const struct dw_progress *p, uint64_t now_ms)
{
    if (p->total == 0)
        return -1;
    if (p->done >= p->total)
        return 0;
    double rate = dw_progress_rate(p, now_ms);
    if (rate <= 0.0)
        return -1;
    double left = (double)(p->total - p->done) / rate;
    /* Round up: "eta 0s" while rows remain would be a lie. */
    int64_t secs = (int64_t)left;
    if ((double)secs < left)
        secs++;
    return secs;
}

static void format_duration(int64_t secs, struct dw_buf *out)
{
    if (secs >= 3600)
        (void)dw_buf_printf(out, "%" PRId64 "h%02" PRId64 "m%02" PRId64 "s", secs / 3600,
                            secs / 60 % 60, secs % 60);
    else if (secs >= 60)
        (void)dw_buf_printf(out, "%" PRId64 "m%02" PRId64 "s", secs / 60, secs % 60);
    else
        (void)dw_buf_printf(out, "%" PRId64 "s", secs);
}

void dw_progress_format(const struct dw_progress *p, uint64_t now_ms, struct dw_buf *out)
{
    if (p->total > 0) {
        double pct = (double)p->done * 100.0 / (double)p->total;
        (void)dw_buf_printf(out, "%s: %" PRIu64 "/%" PRIu64 " rows (%.1f%%)", p->what, p->done,
                            p->total, pct);
    } else {
        (void)dw_buf_printf(out, "%s: %" PRIu64 " rows", p->what, p->done);
    }
    (void)dw_buf_printf(out, ", %.0f rows/s", dw_progress_rate(p, now_ms));
    int64_t eta = dw_progress_eta_seconds(p, now_ms);
    if (eta >= 0) {
        (void)dw_buf_puts(out, ", eta ");
        format_duration(eta, out);
    }
}

static void report(struct dw_progress *p, uint64_t now_ms, bool final)
{
    struct dw_buf line;
    dw_buf_init(&line, 4096);
    dw_progress_format(p, now_ms, &line);
    if (final)
        (void)dw_buf_printf(&line, " (done in %.1fs)", (double)(now_ms - p->start_ms) / 1000.0);
    if (p->live) {
        /* \r and erase-to-end-of-line redraw the one line in place. */
        fprintf(p->out, "\r%s\033[K%s", dw_buf_str(&line), final ? "\n" : "");
        fflush(p->out);
        p->drawn = !final;
        dw_log_set_live_line(p->drawn ? p->out : NULL);
    } else {
        DW_INFO("%s", dw_buf_str(&line));
    }
    p->last_report_ms = now_ms;
    dw_buf_cleanup(&line);
}

void dw_progress_update(struct dw_progress *p, uint64_t done, uint64_t now_ms)
{
    p->done = done;
    uint64_t every = p->live ? LIVE_REDRAW_MS : p->report_interval_ms;
    if (now_ms >= p->last_report_ms + every)
        report(p, now_ms, false);
}

void dw_progress_finish(struct dw_progress *p, uint64_t now_ms)
{
    report(p, now_ms, true);
}

/* --- reconnect backoff ------------------------------------------------------------------ */

void dw_backoff_init(struct dw_backoff *b, uint64_t min_ms, uint64_t max_ms)
{
    memset(b, 0, sizeof *b);
    b->min_ms = min_ms ? min_ms : 1;
    b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
    b->next_ms = b->min_ms;
}

uint64_t dw_backoff_failed(struct dw_backoff *b, uint64_t now_ms)
{
    uint64_t step = b->next_ms;
    /* Jitter only spreads retries out; it needs no cryptographic randomness. */
    uint64_t delay = step / 2 + (uint64_t)random() % (step / 2 + 1);
    b->next_ms = step * 2 > b->max_ms ? b->max_ms : step * 2;
    b->due_ms = now_ms + delay;
    b->failures++;
    return delay;
}

bool dw_backoff_due(const struct dw_backoff *b, uint64_t now_ms)
{
    return now_ms >= b->due_ms;
}

int dw_backoff_timeout_ms(const struct dw_backoff *b, uint64_t now_ms)
{
    if (now_ms >= b->due_ms)
        return 0;
    uint64_t left = b->due_ms - now_ms;
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

void dw_backoff_succeeded(struct dw_backoff *b)
{
    if (b->failures)
        b->reconnects++;
    b->failures = 0;
    b->due_ms = 0;
    b->next_ms = b->min_ms;
}

/*
 * The logger (see log.h): builds one logfmt or JSON line per event, redacts the message and
 * every field value before escaping them, and writes the line to stderr (or the stream a test
 * set) with one fwrite. Under systemd's journal ($JOURNAL_STREAM set) lines carry no ts
 * field: the journal stamps them. Process-global state, one thread.
 */
#include "dwasync/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwasync/buf.h"
#include "dwasync/redact.h"

static enum dw_log_level min_level = DW_LOG_INFO;
static enum dw_log_format log_format = DW_LOG_LOGFMT;
static FILE *log_stream;
static FILE *live_line;     /* a progress line is on screen there (dw_log_set_live_line) */
static int timestamps = -1; /* -1: decide from the environment on first use */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dw_log_configure(enum dw_log_level level, enum dw_log_format format)
{
    min_level = level;
    log_format = format;
}

void dw_log_set_stream(FILE *stream)
{
    log_stream = stream;
}

void dw_log_set_live_line(FILE *stream)
{
    live_line = stream;
}

void dw_log_set_timestamps(bool on)
{
    timestamps = on;
}

dw_rc dw_log_level_parse(const char *s, enum dw_log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof *level_names; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum dw_log_level)i;
            return DW_OK;
        }
    }
    return DW_ERR_INVALID;
}

dw_rc dw_log_format_parse(const char *s, enum dw_log_format *out)
{
    if (strcmp(s, "logfmt") == 0)
        *out = DW_LOG_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = DW_LOG_JSON;
    else
        return DW_ERR_INVALID;
    return DW_OK;
}

bool dw_log_enabled(enum dw_log_level level)
{
    return level >= min_level;
}

/* A logfmt value is quoted when it is empty or holds a space, quote, '=' or control byte. */
static void put_logfmt_value(struct dw_buf *b, const char *v)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(v);
    bool quote = len == 0;
    for (size_t i = 0; i < len && !quote; i++) {
        unsigned char c = (unsigned char)v[i];
        quote = c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f;
    }
    if (!quote) {
        (void)dw_buf_append(b, v, len);
        return;
    }
    (void)dw_buf_putc(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            (void)dw_buf_putc(b, '\\');
            (void)dw_buf_putc(b, (char)c);
        } else if (c == '\n') {
            (void)dw_buf_puts(b, "\\n");
        } else if (c == '\t') {
            (void)dw_buf_puts(b, "\\t");
        } else if (c == '\r') {
            (void)dw_buf_puts(b, "\\r");
        } else if (c < 0x20 || c == 0x7f) {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            (void)dw_buf_append(b, esc, sizeof esc);
        } else {
            (void)dw_buf_putc(b, (char)c);
        }
    }
    (void)dw_buf_putc(b, '"');
}

static void put_field(struct dw_buf *b, const char *key, const char *value, bool first)
{
    if (value == NULL)
        value = "";
    if (log_format == DW_LOG_JSON) {
        if (!first)
            (void)dw_buf_putc(b, ',');
        (void)dw_buf_put_json_string(b, key, strlen(key));
        (void)dw_buf_putc(b, ':');
        (void)dw_buf_put_json_string(b, value, strlen(value));
    } else {
        if (!first)
            (void)dw_buf_putc(b, ' ');
        (void)dw_buf_puts(b, key);
        (void)dw_buf_putc(b, '=');
        put_logfmt_value(b, value);
    }
}

static void format_timestamp(char *out, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void dw_log_emit(enum dw_log_level level, const struct dw_log_field *fields, size_t nfields,
                 const char *fmt, ...)
{
    if (timestamps < 0)
        timestamps = getenv("JOURNAL_STREAM") == NULL;

    /* Redact the message and the fields together, before any escaping hides a secret. */
    struct dw_buf msg;
    dw_buf_init(&msg, 64 * 1024);
    va_list ap;
    va_start(ap, fmt);
    if (dw_buf_vprintf(&msg, fmt, ap) == DW_ERR_RANGE)
        (void)dw_buf_puts(&msg, "...(truncated)");
    va_end(ap);
    dw_redact_buf(&msg);

    struct dw_buf line;
    dw_buf_init(&line, 0);
    if (log_format == DW_LOG_JSON)
        (void)dw_buf_putc(&line, '{');
    bool first = true;
    if (timestamps) {
        char ts[40];
        format_timestamp(ts, sizeof ts);
        put_field(&line, "ts", ts, first);
        first = false;
    }
    put_field(&line, "level", level_names[level], first);
    put_field(&line, "msg", dw_buf_str(&msg), false);
    for (size_t i = 0; i < nfields; i++) {
        char *value = dw_redact_str(fields[i].value ? fields[i].value : "");
        put_field(&line, fields[i].key, value, false);
        free(value);
    }
    if (log_format == DW_LOG_JSON)
        (void)dw_buf_putc(&line, '}');
    (void)dw_buf_putc(&line, '\n');

    if (live_line) {
        /* Back to the start of the progress line and erase it; it is drawn again later. */
        fputs("\r\033[K", live_line);
        fflush(live_line);
        live_line = NULL;
    }
    FILE *out = log_stream ? log_stream : stderr;
    fwrite(line.data, 1, line.len, out);
    fflush(out);
    dw_buf_cleanup(&line);
    dw_buf_cleanup(&msg);
}

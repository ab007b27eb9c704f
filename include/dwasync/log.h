/*
 * log.h - structured logging: logfmt (default) or JSON lines on stderr.
 *
 * One line per event: ts, level, msg and optional key=value fields that scope the event
 * (job, table, lsn, status...). Every line passes through the redactor (redact.h) before it
 * is written, so a secret or bearer token cannot reach the log even by mistake, and control
 * characters in values are escaped so one line is always one event. The level is checked
 * before the message is formatted: a disabled debug line costs one comparison.
 *
 * The logger is process-global and single-threaded like the rest of dwasync. Configure it
 * once at start (and again on SIGHUP); it owns nothing the caller must free.
 */
#ifndef DWASYNC_LOG_H
#define DWASYNC_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "dwasync/rc.h"

enum dw_log_level { DW_LOG_DEBUG = 0, DW_LOG_INFO, DW_LOG_WARN, DW_LOG_ERROR };
enum dw_log_format { DW_LOG_LOGFMT = 0, DW_LOG_JSON };

/* One scoping field of a log line; both strings are borrowed for the call. */
struct dw_log_field {
    const char *key;
    const char *value; /* NULL is written as an empty value */
};

/* Sets the minimum level and the output format. */
void dw_log_configure(enum dw_log_level min_level, enum dw_log_format format);

/* Redirects output (tests); NULL restores stderr. The stream is borrowed. */
void dw_log_set_stream(FILE *stream);

/* Tells the logger a live terminal line (a progress report redrawn in place) is on screen on
 * stream, or that none is (NULL). The next log line erases it first, so a log line never
 * starts in the middle of it; the reporter draws it again at its next redraw. */
void dw_log_set_live_line(FILE *stream);

/* Whether timestamps are written (off under journald, which stamps lines itself). */
void dw_log_set_timestamps(bool on);

/* Parses "debug", "info", "warn", "error" / "logfmt", "json". */
dw_rc dw_log_level_parse(const char *s, enum dw_log_level *out);
dw_rc dw_log_format_parse(const char *s, enum dw_log_format *out);

/* True when a line at this level would be written. */
bool dw_log_enabled(enum dw_log_level level);

/* Formats and writes one line; use the macros below, which check the level first. */
void dw_log_emit(enum dw_log_level level, const struct dw_log_field *fields, size_t nfields,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define DW_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if (dw_log_enabled(level))                                                                 \
            dw_log_emit(level, NULL, 0, __VA_ARGS__);                                              \
    } while (0)

#define DW_DEBUG(...) DW_LOG(DW_LOG_DEBUG, __VA_ARGS__)
#define DW_INFO(...)  DW_LOG(DW_LOG_INFO, __VA_ARGS__)
#define DW_WARN(...)  DW_LOG(DW_LOG_WARN, __VA_ARGS__)
#define DW_ERROR(...) DW_LOG(DW_LOG_ERROR, __VA_ARGS__)

/*
 * A line with scoping fields:
 *   DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", job}, {"table", t}), "applied %d rows", n);
 */
#define DW_FIELDS(...)                                                                             \
    ((const struct dw_log_field[]){__VA_ARGS__}),                                                  \
        (sizeof((const struct dw_log_field[]){__VA_ARGS__}) / sizeof(struct dw_log_field))

#define DW_LOGF(level, fields_and_count, ...)                                                      \
    do {                                                                                           \
        if (dw_log_enabled(level))                                                                 \
            dw_log_emit(level, fields_and_count, __VA_ARGS__);                                     \
    } while (0)

#endif

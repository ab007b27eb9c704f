/*
 * config.h - the dwasync configuration: an INI file described by one table.
 *
 * Every key lives in exactly one place, the table in src/common/config.c: its section,
 * type, default, allowed range or values and a one-line description. The same table fills
 * defaults, validates files (unknown keys, bad values and out-of-range numbers are errors
 * naming file, line, key and what is allowed) and produces `dwasync config describe`.
 *
 * Secrets never live in this file: the [dataverse] section names secret *files*, read
 * through secret.h. Postgres connections are libpq conninfo strings.
 *
 * A struct dw_config is caller-owned: dw_config_init() fills defaults, dw_config_load()
 * overlays a file, dw_config_cleanup() frees the strings it holds. Strings inside are owned
 * by the struct and valid until cleanup or the next load.
 */
#ifndef DWASYNC_CONFIG_H
#define DWASYNC_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Where the config is read from when neither --config nor $DWASYNC_CONFIG says otherwise. */
#define DW_CONFIG_DEFAULT_PATH "/etc/dwasync/dwasync.conf"

enum dw_assertion_alg { DW_ASSERTION_PS256 = 0, DW_ASSERTION_RS256 };

struct dw_config {
    struct {
        char *conninfo;              /* libpq conninfo of the staging database */
        char *timezone;              /* zone of timestamp-without-time-zone values */
        int64_t status_interval_ms;  /* standby status update period */
        int64_t reconnect_max_ms;    /* ceiling of the reconnect backoff */
        int64_t snapshot_fetch_rows; /* rows per FETCH during initial sync */
    } source;
    struct {
        char *conninfo; /* control schema database; empty means source.conninfo */
    } control;
    struct {
        char *url;       /* environment URL, e.g. https://org.crm.dynamics.com */
        char *authority; /* Entra ID authority */
        char *tenant_id;
        char *client_id;
        char *client_secret_file; /* path, or a systemd credential name */
        char *certificate_file;
        char *private_key_file;
        int assertion_alg; /* enum dw_assertion_alg */
        char *ca_file;     /* extra CA bundle; empty means the system store */
        char *api_version;
        int64_t max_concurrency;
        int64_t batch_size;
        int64_t connect_timeout_ms;
        int64_t request_timeout_ms;
        int64_t retry_limit; /* 0 = retry transient failures for ever */
        int64_t retry_max_backoff_ms;
        bool debug_payloads;
        bool allow_insecure_http;   /* http:// to a loopback address (an emulator) */
        int64_t max_response_bytes; /* largest response body kept */
    } dataverse;
    struct {
        int64_t window_rows;
        int64_t window_growth; /* largest multiple of window_rows while the stream is behind */
        bool apply_ahead;      /* the next window may apply ahead (pipeline.h) */
        int64_t window_bytes;
        int64_t window_ms;
        int64_t missing_parent_retries;
        int64_t max_value_bytes; /* a larger single value is parked, never converted */
        int64_t error_retention_days;
    } apply;
    struct {
        int level;  /* enum dw_log_level */
        int format; /* enum dw_log_format */
    } log;
    struct {
        char *listen; /* host:port of /metrics and /healthz; empty = off */
    } metrics;
};

/* Fills every key with its default. */
void dw_config_init(struct dw_config *cfg);

/*
 * The transport rule for [dataverse] url and authority: https://, or http:// to a loopback
 * address when allow_insecure_http is set. Anything else is DW_ERR_CONFIG with why filled
 * (which key, what is wrong, what to do). Used by the Dataverse client and by `check`.
 */
dw_rc dw_config_check_transport(const struct dw_config *cfg, char *why, size_t why_size);

/* Frees the strings the struct holds; it may be initialised again afterwards. */
void dw_config_cleanup(struct dw_config *cfg);

/*
 * Reads the INI file at path over the current values. Every problem found is appended to
 * errors as one "path:line: message" line; returns DW_ERR_CONFIG if there was any, and
 * DW_ERR_IO if the file cannot be opened.
 */
dw_rc dw_config_load(struct dw_config *cfg, const char *path, struct dw_buf *errors);

/* Parses INI text (path is used in messages only). Same contract as dw_config_load. */
dw_rc dw_config_load_string(struct dw_config *cfg, const char *text, const char *path,
                            struct dw_buf *errors);

/* Picks the config path: explicit (may be NULL), else $DWASYNC_CONFIG, else the default. */
const char *dw_config_path(const char *explicit_path);

/* The control database conninfo: [control] conninfo, or [source] conninfo when empty. */
const char *dw_config_control_conninfo(const struct dw_config *cfg);

/* Writes every key with its type, default, range and description (`config describe`). */
void dw_config_describe(FILE *out);

/* Writes a complete sample file with every key commented out at its default. */
void dw_config_write_sample(FILE *out);

#endif

/*
 * The configuration table and its INI reader (see config.h). The array `keys` below is the
 * one list of keys: defaults, validation, `config describe` and `config sample` all walk it.
 * Files are read through inih with a line-counting reader, so every error names its file and
 * line, and every error of a file is reported, not only the first.
 */
#include "dwasync/config.h"

#include <curl/curl.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/log.h"

enum key_type { KEY_STRING, KEY_INT, KEY_BOOL, KEY_ENUM };

struct config_key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    const char *default_value; /* as it would be written in the file */
    int64_t min, max;          /* KEY_INT */
    const char *const *values; /* KEY_ENUM: NULL-terminated allowed values */
    const char *description;
};

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};
static const char *const assertion_algs[] = {"ps256", "rs256", NULL};

#define OFF(field) offsetof(struct dw_config, field)
#define STR(sec, key, field, def, desc)                                                            \
    {                                                                                              \
        sec, key, KEY_STRING, OFF(field), def, 0, 0, NULL, desc                                    \
    }
#define INT(sec, key, field, def, lo, hi, desc)                                                    \
    {                                                                                              \
        sec, key, KEY_INT, OFF(field), def, lo, hi, NULL, desc                                     \
    }
#define BOOL(sec, key, field, def, desc)                                                           \
    {                                                                                              \
        sec, key, KEY_BOOL, OFF(field), def, 0, 0, NULL, desc                                      \
    }
#define ENUM(sec, key, field, def, vals, desc)                                                     \
    {                                                                                              \
        sec, key, KEY_ENUM, OFF(field), def, 0, 0, vals, desc                                      \
    }

/* The one list of configuration keys. */
static const struct config_key keys[] = {
    STR("source", "conninfo", source.conninfo, "dbname=postgres",
        "libpq conninfo of the staging database (passwords via .pgpass or PGPASSFILE)"),
    STR("source", "timezone", source.timezone, "UTC",
        "time zone in which timestamp-without-time-zone values were written"),
    INT("source", "status_interval_ms", source.status_interval_ms, "10000", 100, 600000,
        "period of standby status updates to the server (keep well below wal_sender_timeout)"),
    INT("source", "reconnect_max_ms", source.reconnect_max_ms, "30000", 100, 3600000,
        "ceiling of the backoff between reconnect attempts"),
    INT("source", "snapshot_fetch_rows", source.snapshot_fetch_rows, "10000", 1, 1000000,
        "rows fetched per round trip during an initial sync (at most [apply] window_rows)"),
    STR("control", "conninfo", control.conninfo, "",
        "libpq conninfo of the database holding the dwasync schema (empty: the source database)"),
    STR("dataverse", "url", dataverse.url, "",
        "Dataverse environment URL, e.g. https://contoso.crm.dynamics.com"),
    STR("dataverse", "authority", dataverse.authority, "https://login.microsoftonline.com",
        "Microsoft Entra ID authority that issues tokens"),
    STR("dataverse", "tenant_id", dataverse.tenant_id, "", "Entra ID tenant (directory) id"),
    STR("dataverse", "client_id", dataverse.client_id, "", "application (client) id"),
    STR("dataverse", "client_secret_file", dataverse.client_secret_file, "",
        "file holding the client secret, or a systemd credential name (mode 0600 or stricter)"),
    STR("dataverse", "certificate_file", dataverse.certificate_file, "",
        "PEM certificate for certificate credentials (instead of a client secret)"),
    STR("dataverse", "private_key_file", dataverse.private_key_file, "",
        "PEM private key of the certificate, or a systemd credential name (mode 0600)"),
    ENUM("dataverse", "assertion_alg", dataverse.assertion_alg, "ps256", assertion_algs,
         "signature of the certificate client assertion: ps256 (x5t#S256) or rs256 (x5t)"),
    STR("dataverse", "ca_file", dataverse.ca_file, "",
        "CA bundle to verify Dataverse and the authority (empty: the system store)"),
    STR("dataverse", "api_version", dataverse.api_version, "v9.2", "Web API version"),
    INT("dataverse", "max_concurrency", dataverse.max_concurrency, "16", 1, 52,
        "most requests in flight (also capped by the server's x-ms-dop-hint)"),
    INT("dataverse", "batch_size", dataverse.batch_size, "1000", 1, 1000,
        "rows per UpsertMultiple or $batch request"),
    INT("dataverse", "connect_timeout_ms", dataverse.connect_timeout_ms, "10000", 100, 300000,
        "TCP and TLS connect timeout"),
    INT("dataverse", "request_timeout_ms", dataverse.request_timeout_ms, "120000", 1000, 3600000,
        "whole-request timeout"),
    INT("dataverse", "retry_limit", dataverse.retry_limit, "0", 0, 1000000,
        "attempts for transient failures before a change goes to the error table (0: forever)"),
    INT("dataverse", "retry_max_backoff_ms", dataverse.retry_max_backoff_ms, "60000", 100, 3600000,
        "ceiling of the exponential backoff between retries"),
    BOOL("dataverse", "debug_payloads", dataverse.debug_payloads, "false",
         "log request and response bodies at debug level (secrets redacted)"),
    BOOL("dataverse", "allow_insecure_http", dataverse.allow_insecure_http, "false",
         "accept http:// (no TLS) for url and authority, to a loopback address only "
         "(a local emulator); never in production"),
    INT("dataverse", "max_response_bytes", dataverse.max_response_bytes, "8388608", 65536,
        268435456, "largest response body accepted; a larger answer fails (and is retried)"),
    INT("apply", "window_rows", apply.window_rows, "3000", 1, 1000000,
        "most row changes gathered into one apply window"),
    INT("apply", "window_growth", apply.window_growth, "2", 1, 16,
        "largest multiple of window_rows a window grows to while the stream is behind, so "
        "that bulk requests go out full (1: never grows; memory grows with it)"),
    BOOL("apply", "apply_ahead", apply.apply_ahead, "false",
         "start the next window while one is at its last level, so that its first levels "
         "overlap that one's last, for a Dataverse whose requests take seconds (memory: up to "
         "a window more in flight)"),
    INT("apply", "window_bytes", apply.window_bytes, "16777216", 65536, 1073741824,
        "most bytes of row data held by one apply window"),
    INT("apply", "window_ms", apply.window_ms, "200", 1, 600000,
        "longest time a change waits for its window to fill"),
    INT("apply", "missing_parent_retries", apply.missing_parent_retries, "3", 0, 100,
        "retries of a change whose lookup parent is missing before it is parked"),
    INT("apply", "max_value_bytes", apply.max_value_bytes, "16777216", 1024, 1073741824,
        "largest single column value applied; a change with a larger one is parked"),
    INT("apply", "error_retention_days", apply.error_retention_days, "30", 1, 36500,
        "age after which resolved and skipped error rows are purged"),
    ENUM("log", "level", log.level, "info", log_levels, "least severe level written"),
    ENUM("log", "format", log.format, "logfmt", log_formats, "line format on stderr"),
    STR("metrics", "listen", metrics.listen, "",
        "host:port for /metrics and /healthz (empty: no listener)"),
};

#define NKEYS (sizeof keys / sizeof *keys)

static char **str_field(struct dw_config *cfg, const struct config_key *k)
{
    return (char **)((char *)cfg + k->offset);
}

static const char *type_name(const struct config_key *k)
{
    switch (k->type) {
    case KEY_STRING:
        return "string";
    case KEY_INT:
        return "integer";
    case KEY_BOOL:
        return "boolean";
    case KEY_ENUM:
        return "enum";
    }
    return "?";
}

static void allowed_values(const struct config_key *k, struct dw_buf *out)
{
    switch (k->type) {
    case KEY_INT:
        (void)dw_buf_printf(out, "%" PRId64 "..%" PRId64, k->min, k->max);
        break;
    case KEY_BOOL:
        (void)dw_buf_puts(out, "true, false");
        break;
    case KEY_ENUM:
        for (const char *const *v = k->values; *v; v++)
            (void)dw_buf_printf(out, "%s%s", v == k->values ? "" : ", ", *v);
        break;
    case KEY_STRING:
        (void)dw_buf_puts(out, "any text");
        break;
    }
}

/* Parses value for key k into cfg; on failure says why in *why (static text). */
static dw_rc set_value(struct dw_config *cfg, const struct config_key *k, const char *value)
{
    char *base = (char *)cfg + k->offset;
    switch (k->type) {
    case KEY_STRING: {
        char **field = str_field(cfg, k);
        free(*field);
        *field = dw_strdup(value);
        return DW_OK;
    }
    case KEY_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0')
            return DW_ERR_INVALID;
        if (v < k->min || v > k->max)
            return DW_ERR_RANGE;
        *(int64_t *)base = v;
        return DW_OK;
    }
    case KEY_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "on") == 0 || strcmp(value, "yes") == 0 ||
            strcmp(value, "1") == 0)
            *(bool *)base = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "off") == 0 ||
                 strcmp(value, "no") == 0 || strcmp(value, "0") == 0)
            *(bool *)base = false;
        else
            return DW_ERR_INVALID;
        return DW_OK;
    case KEY_ENUM:
        for (int i = 0; k->values[i]; i++) {
            if (strcmp(value, k->values[i]) == 0) {
                *(int *)base = i;
                return DW_OK;
            }
        }
        return DW_ERR_INVALID;
    }
    return DW_ERR_INVALID;
}

void dw_config_init(struct dw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NKEYS; i++) {
        dw_rc rc = set_value(cfg, &keys[i], keys[i].default_value);
        (void)rc; /* the table's defaults are checked by a unit test */
    }
}

void dw_config_cleanup(struct dw_config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == KEY_STRING) {
            char **field = str_field(cfg, &keys[i]);
            free(*field);
            *field = NULL;
        }
    }
}

struct parse_state {
    struct dw_config *cfg;
    const char *path;
    struct dw_buf *errors;
    const char *text; /* reader position */
    int line;
    int nerrors;
    char *long_value; /* the value of the line being parsed, when longer than inih's buffer */
};

/* Longest line accepted: a conninfo with certificates paths and options takes several kB. */
#define CONFIG_LINE_MAX 65536
/* What inih sees in place of a value too long for its line buffer (see read_line). */
#define LONG_VALUE_MARK "\x1f"

static void add_error(struct parse_state *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_error(struct parse_state *st, const char *fmt, ...)
{
    st->nerrors++;
    if (st->errors == NULL)
        return;
    (void)dw_buf_printf(st->errors, "%s:%d: ", st->path, st->line);
    va_list ap;
    va_start(ap, fmt);
    (void)dw_buf_vprintf(st->errors, fmt, ap);
    va_end(ap);
    (void)dw_buf_putc(st->errors, '\n');
}

/* inih's own whitespace rule (isspace), for the values read_line keeps aside. */
static char *strip_value(char *v)
{
    while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n' || *v == '\f' || *v == '\v')
        v++;
    /* An inline comment starts at a ';' after whitespace, as inih has it. */
    for (char *c = v; *c; c++)
        if (*c == ';' && c > v && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    size_t n = strlen(v);
    while (n > 0 && strchr(" \t\r\n\f\v", v[n - 1]))
        v[--n] = '\0';
    return v;
}

/*
 * inih reader that counts lines, so handler errors can name theirs. The system's inih reads
 * lines of at most 200 bytes; a longer "key = value" line reaches inih as "key = <mark>" and
 * its value is kept in st->long_value for on_key (inih calls the handler before it reads on).
 */
static char *read_line(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    if (*st->text == '\0')
        return NULL;
    const char *nl = strchr(st->text, '\n');
    size_t len = nl ? (size_t)(nl - st->text) + 1 : strlen(st->text);
    st->line++;
    free(st->long_value);
    st->long_value = NULL;
    if (len < (size_t)num) {
        memcpy(str, st->text, len);
        str[len] = '\0';
        st->text += len;
        return str;
    }
    size_t lead = strspn(st->text, " \t");
    const char *sep = memchr(st->text, '=', len);
    if (st->text[lead] == ';' || st->text[lead] == '#') {
        snprintf(str, (size_t)num, "#\n");
    } else if (len > CONFIG_LINE_MAX || sep == NULL ||
               (size_t)(sep - st->text) + sizeof " " LONG_VALUE_MARK "\n" >= (size_t)num) {
        add_error(st, "line is longer than %d characters",
                  len > CONFIG_LINE_MAX ? CONFIG_LINE_MAX : num - 2);
        snprintf(str, (size_t)num, "\n");
    } else {
        st->long_value = dw_strndup(sep + 1, len - (size_t)(sep + 1 - st->text));
        snprintf(str, (size_t)num, "%.*s= " LONG_VALUE_MARK "\n", (int)(sep - st->text), st->text);
    }
    st->text += len;
    return str;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *st = user;
    if (name == NULL)
        return 1; /* a bare [section] line */
    if (st->long_value && strcmp(value, LONG_VALUE_MARK) == 0)
        value = strip_value(st->long_value);
    const struct config_key *k = NULL;
    bool section_known = false;
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        section_known = true;
        if (strcmp(keys[i].name, name) == 0)
            k = &keys[i];
    }
    if (k == NULL) {
        if (strcmp(section, "dataverse") == 0 && strcmp(name, "client_secret") == 0) {
            add_error(st, "[dataverse] client_secret is not accepted in the config file. "
                          "Put the secret in a file only dwasync can read and set "
                          "client_secret_file to its path.");
            return 1;
        }
        if (!section_known) {
            add_error(st,
                      "unknown section \"%s\" (known: source, control, dataverse, apply, "
                      "log, metrics)",
                      section);
            return 1;
        }
        struct dw_buf known;
        dw_buf_init(&known, 0);
        for (size_t i = 0; i < NKEYS; i++)
            if (strcmp(keys[i].section, section) == 0)
                (void)dw_buf_printf(&known, "%s%s", known.len ? ", " : "", keys[i].name);
        add_error(st, "unknown key \"%s\" in section [%s] (known: %s)", name, section,
                  dw_buf_str(&known));
        dw_buf_cleanup(&known);
        return 1;
    }
    dw_rc rc = set_value(st->cfg, k, value);
    if (rc != DW_OK) {
        struct dw_buf allowed;
        dw_buf_init(&allowed, 0);
        allowed_values(k, &allowed);
        add_error(st, "[%s] %s = \"%s\" is %s (allowed: %s)", section, name, value,
                  rc == DW_ERR_RANGE ? "out of range" : "not a valid value", dw_buf_str(&allowed));
        dw_buf_cleanup(&allowed);
    }
    return 1;
}

dw_rc dw_config_load_string(struct dw_config *cfg, const char *text, const char *path,
                            struct dw_buf *errors)
{
    struct parse_state st = {.cfg = cfg, .path = path, .errors = errors, .text = text};
    int r = ini_parse_stream(read_line, &st, on_key, &st);
    free(st.long_value);
    if (r > 0) {
        st.line = r;
        add_error(&st, "syntax error (expected [section], key = value, or a comment)");
    }
    return st.nerrors ? DW_ERR_CONFIG : DW_OK;
}

dw_rc dw_config_load(struct dw_config *cfg, const char *path, struct dw_buf *errors)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errors)
            (void)dw_buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return DW_ERR_IO;
    }
    struct dw_buf text;
    dw_buf_init(&text, 16 * 1024 * 1024);
    char chunk[4096];
    size_t n;
    dw_rc rc = DW_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (dw_buf_append(&text, chunk, n) != DW_OK) {
            if (errors)
                (void)dw_buf_printf(errors, "%s: file is larger than 16 MiB\n", path);
            rc = DW_ERR_CONFIG;
            goto out;
        }
    }
    if (ferror(f)) {
        if (errors)
            (void)dw_buf_printf(errors, "%s: read failed: %s\n", path, strerror(errno));
        rc = DW_ERR_IO;
        goto out;
    }
    rc = dw_config_load_string(cfg, dw_buf_str(&text), path, errors);
out:
    fclose(f);
    dw_buf_cleanup(&text);
    return rc;
}

const char *dw_config_path(const char *explicit_path)
{
    if (explicit_path && *explicit_path)
        return explicit_path;
    const char *env = getenv("DWASYNC_CONFIG");
    if (env && *env)
        return env;
    return DW_CONFIG_DEFAULT_PATH;
}

const char *dw_config_control_conninfo(const struct dw_config *cfg)
{
    return cfg->control.conninfo && *cfg->control.conninfo ? cfg->control.conninfo
                                                           : cfg->source.conninfo;
}

void dw_config_describe(FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
        }
        struct dw_buf allowed;
        dw_buf_init(&allowed, 0);
        allowed_values(k, &allowed);
        fprintf(out, "  %-22s %-8s default \"%s\"  allowed: %s\n  %-22s %s\n", k->name,
                type_name(k), k->default_value, dw_buf_str(&allowed), "", k->description);
        dw_buf_cleanup(&allowed);
    }
}

void dw_config_write_sample(FILE *out)
{
    fprintf(out, "# dwasync configuration. Every key is shown at its default.\n"
                 "# `dwasync config describe` lists the keys with their allowed values.\n"
                 "# Secrets never go in this file: name files that hold them.\n");
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(out, "\n[%s]\n", section);
        }
        fprintf(out, "# %s\n#%s = %s\n", k->description, k->name, k->default_value);
    }
}

/* Whether host names this machine: localhost, 127.0.0.0/8 or ::1. */
static bool is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
        strcmp(host, "::1") == 0)
        return true;
    unsigned a, b, c, d;
    char tail;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
}

/* The rule for one URL key; fills why and returns DW_ERR_CONFIG when it is broken. */
static dw_rc transport_ok(const struct dw_config *cfg, const char *key, const char *url, char *why,
                          size_t why_size)
{
    dw_rc rc = DW_ERR_CONFIG;
    char *scheme = NULL, *host = NULL;
    CURLU *u = curl_url();
    if (u == NULL)
        dw_oom(0);
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(why, why_size, "[dataverse] %s \"%s\" is not a URL. Set it to an https:// URL.",
                 key, url);
        goto out;
    }
    if (strcasecmp(scheme, "https") == 0) {
        rc = DW_OK;
    } else if (strcasecmp(scheme, "http") != 0) {
        snprintf(why, why_size, "[dataverse] %s \"%s\" is not an https:// URL", key, url);
    } else if (!cfg->dataverse.allow_insecure_http) {
        snprintf(why, why_size,
                 "[dataverse] %s \"%s\" is not https: the client secret and tokens would travel "
                 "unencrypted. Use https:// (a local emulator on a loopback address may be "
                 "allowed with allow_insecure_http = true).",
                 key, url);
    } else if (!is_loopback(host)) {
        snprintf(why, why_size,
                 "[dataverse] %s \"%s\" uses http to \"%s\", which is not a loopback address: "
                 "allow_insecure_http allows http to localhost, 127.0.0.0/8 and ::1 only. Use "
                 "https://.",
                 key, url, host);
    } else {
        rc = DW_OK;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

dw_rc dw_config_check_transport(const struct dw_config *cfg, char *why, size_t why_size)
{
    dw_rc rc = transport_ok(cfg, "url", cfg->dataverse.url, why, why_size);
    if (rc == DW_OK)
        rc = transport_ok(cfg, "authority", cfg->dataverse.authority, why, why_size);
    return rc;
}

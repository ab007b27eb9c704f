/*
 * dvemu.h - the Dataverse Web API emulator: its pure parsers and its server entry point.
 *
 * dvemu answers the subset of the Dataverse Web API (and the Entra ID token endpoint) that
 * dwasync's sink depends on, with Microsoft's request and response shapes, so that the
 * sink can be tested without a real Dataverse. The parsers below are exposed for unit
 * tests: OData key segments, $filter expressions and multipart ($batch) bodies.
 *
 * Ownership: every parse function fills a caller-owned struct or returns a heap object
 * that the caller releases with the matching _cleanup/_free; inputs are borrowed for the
 * call only. The server (dw_dvemu_run) owns all of its state and is multi-threaded: it is
 * the one program in the project that is, so everything it shares sits behind its locks.
 */
#ifndef DWASYNC_DVEMU_H
#define DWASYNC_DVEMU_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/rc.h"

/* --- percent-decoding ------------------------------------------------------------------ */

/* Decodes %XX escapes of s[0..len) into a new heap string (caller frees). '+' stays '+'.
 * DW_ERR_INVALID on a malformed escape or an embedded NUL. */
dw_rc dw_dvemu_pct_decode(const char *s, size_t len, char **out);

/* --- OData key segments ---------------------------------------------------------------- */

/* One part of a key: name is NULL for the bare form "(<guid>)". */
struct dw_dvemu_keypart {
    char *name;
    json_t *value; /* string (guids lower-cased), integer, real, true/false or null */
};

/* A parsed key, caller-owned: dw_dvemu_key_cleanup() releases it. */
struct dw_dvemu_key {
    struct dw_dvemu_keypart *parts;
    size_t nparts;
};

/* Parses the text between the parentheses of "<set>(...)" as it appears in a URL:
 * percent-encoded, string literals single-quoted with embedded quotes doubled. */
dw_rc dw_dvemu_key_parse(const char *raw, size_t len, struct dw_dvemu_key *out);

/* Releases a key filled by dw_dvemu_key_parse(); the struct is empty afterwards. */
void dw_dvemu_key_cleanup(struct dw_dvemu_key *key);

/* True when s is a GUID in the 8-4-4-4-12 hex form. */
bool dw_dvemu_is_guid(const char *s, size_t len);

/* --- $filter --------------------------------------------------------------------------- */

struct dw_dvemu_filter;

/* Parses an OData $filter (eq ne gt ge lt le, and, or, not, parentheses, null, property
 * paths "a/b", contains/startswith/endswith). On failure *errmsg (heap, caller frees) says
 * why: a syntax error at a position, or Dataverse's message for an unknown function. */
dw_rc dw_dvemu_filter_parse(const char *text, struct dw_dvemu_filter **out, char **errmsg);

/* Whether a row (a JSON object; nested objects for paths) satisfies the filter. Strings
 * compare case-insensitively, as Dataverse's collation does. */
bool dw_dvemu_filter_match(const struct dw_dvemu_filter *f, const json_t *row);

/* Releases a filter; accepts NULL. */
void dw_dvemu_filter_free(struct dw_dvemu_filter *f);

/* Calls visit on each property path of the filter, which may replace it (a heap string,
 * freeing the old one); stops at the first call that returns false, and returns false then. */
bool dw_dvemu_filter_visit_paths(struct dw_dvemu_filter *f, bool (*visit)(char **path, void *user),
                                 void *user);

/*
 * When the filter is a disjunction of conjunctions of "property eq non-null literal"
 * ("(a eq 1 and b eq 'x') or (a eq 2 and b eq 'y')"), fills keys[0..*nkeys) (a new array,
 * free each with dw_dvemu_key_cleanup() and then the array) and returns true: each
 * conjunction names rows as a key would, so an index can answer it. False otherwise.
 */
bool dw_dvemu_filter_key_terms(const struct dw_dvemu_filter *f, struct dw_dvemu_key **keys,
                               size_t *nkeys);

/* --- multipart ------------------------------------------------------------------------- */

/* One part of a multipart body; every pointer is borrowed from the parsed body. */
struct dw_dvemu_part {
    const char *headers; /* header block, lines separated by CRLF (or LF) */
    size_t headers_len;
    const char *body;
    size_t body_len;
};

/* Reads the boundary parameter (quoted or not) from a Content-Type; caller frees. */
dw_rc dw_dvemu_boundary(const char *content_type, char **out);

/* Splits body into parts by boundary. *parts is a heap array (caller frees, not the
 * bytes it points into). DW_ERR_PROTOCOL when the body is not well-formed multipart. */
dw_rc dw_dvemu_multipart_parse(const char *body, size_t len, const char *boundary,
                               struct dw_dvemu_part **parts, size_t *nparts);

/* Finds a header (case-insensitive name) in a header block; the value is copied into a
 * new heap string with surrounding blanks removed. DW_ERR_NOT_FOUND when absent. */
dw_rc dw_dvemu_header_get(const char *block, size_t len, const char *name, char **out);

/* An HTTP request embedded in a batch part ("application/http"); pointers borrowed. */
struct dw_dvemu_inner {
    char method[16];
    const char *url;
    size_t url_len;
    const char *headers;
    size_t headers_len;
    const char *body;
    size_t body_len;
};

/* Parses "METHOD URL HTTP/1.1", headers, blank line, body. */
dw_rc dw_dvemu_inner_parse(const char *text, size_t len, struct dw_dvemu_inner *out);

/* --- the server ------------------------------------------------------------------------ */

/* A client allowed on the token endpoint; strings owned by the options. */
struct dw_dvemu_client {
    char *id;
    char *secret;    /* NULL for a certificate client */
    char *cert_file; /* PEM certificate whose key signs client assertions */
};

struct dw_dvemu_options {
    char *listen_host;
    int listen_port; /* 0: pick a free port */
    char *port_file;
    char *metadata_file;
    char *state_file;
    char *tls_cert;
    char *tls_key;
    char *tenant;
    struct dw_dvemu_client *clients;
    size_t nclients;
    int token_lifetime; /* seconds */
    bool manual_clock;  /* time stands still until POST /_dvemu/clock moves it */
    bool admin;
    bool lenient_keys; /* accept key values Dataverse refuses in URLs (/ < > * % & : \ ? +) */
    int threads;       /* 0: a thread per connection; N: a pool of N epoll threads */
    int page_size;     /* rows per page of a collection (Dataverse: 5000) */
    /* service protection limits, per user */
    int limit_requests;
    int limit_exec_ms;
    int limit_window_s;
    int limit_concurrent;
    int dop_hint;
    /* server cost: time a request spends on the server, counted as execution time */
    int cost_request_ms;     /* every Web API request */
    int cost_row_ms;         /* each row a request writes one at a time */
    int cost_bulk_row_ms;    /* each row of a CreateMultiple/UpdateMultiple/UpsertMultiple */
    int cost_bypass_percent; /* row cost when custom logic is bypassed, in % (default 50) */
    size_t history_max;
    /* faults: a JSON object as the admin endpoint takes it (NULL: none) */
    json_t *faults;
    /* revoked privileges: a JSON object as POST /_dvemu/privileges takes it (NULL: none) */
    json_t *privileges;
};

/* Fills the options with Dataverse's defaults. */
void dw_dvemu_options_init(struct dw_dvemu_options *o);

/* Releases what the options own. */
void dw_dvemu_options_cleanup(struct dw_dvemu_options *o);

/* Runs the emulator until SIGTERM or SIGINT; saves --state on the way out. */
dw_rc dw_dvemu_run(const struct dw_dvemu_options *o);

#endif

/*
 * values.h - PostgreSQL text values to typed JSON, and a decoded change as JSON.
 *
 * Two forms, one set of rules (the rules live in the fast writer; the jansson form is built
 * from its output so the two cannot drift apart):
 * - dw_value_append_json() appends one datum as JSON text to a caller's reused buffer; it
 *   allocates nothing once the buffer has grown (the `decode` hot path).
 * - dw_change_row_json() builds jansson objects for the mapping engine.
 *
 * The rules, by type (after resolving domains to their base type and enums to text):
 *   bool -> true/false; int2/int4/int8/oid -> JSON integers; numeric -> the JSON number
 *   exactly as Postgres wrote it (never through a double); float4/float8 -> JSON numbers;
 *   numeric and float NaN/Infinity -> unrepresentable (DW_ERR_RANGE), never changed;
 *   bpchar -> string with trailing blanks trimmed; date -> "YYYY-MM-DD" (ISO 8601: years
 *   after 9999 as "+YYYYY", BC years astronomically, 1 BC = "0000", 2 BC = "-0001");
 *   timestamp -> UTC "YYYY-MM-DDTHH:MM:SS[.f]Z", read in the configured source time zone;
 *   timestamptz -> UTC likewise; time -> "HH:MM:SS[.f]"; timetz -> "HH:MM:SS[.f]+HH:MM";
 *   "infinity"/"-infinity" dates and timestamps stay those strings; interval -> its text
 *   (ISO 8601 with the session settings of stream.h); uuid and everything else -> string;
 *   bytea (hex output) -> base64 string; json/jsonb -> embedded JSON (minified, numbers
 *   kept as written); arrays -> JSON arrays (NULL elements -> null), elements by these rules.
 *   A value that is not valid UTF-8 or holds a NUL byte is an error (DW_ERR_INVALID).
 *
 * Time zone: timestamp-without-time-zone values are interpreted in [source] timezone. For a
 * zone other than UTC, dw_values_options_init() sets the process's TZ (dwasync logs in UTC
 * and does not otherwise use local time), and ambiguous local times follow mktime().
 *
 * Ownership: struct dw_values_options and struct dw_row_json are caller-owned; see each
 * function. struct dw_types is a heap object (dw_types_new/dw_types_free).
 */
#ifndef DWASYNC_VALUES_H
#define DWASYNC_VALUES_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/buf.h"
#include "dwasync/change.h"
#include "dwasync/rc.h"

/* User-defined types resolved to what values are written as (domains, enums, their arrays). */
struct dw_types;

struct dw_values_options {
    bool tz_utc;                  /* timestamp without time zone is UTC */
    const struct dw_types *types; /* borrowed; NULL = built-in types only */
    int64_t max_value_bytes;      /* a larger value is refused unread ([apply]); 0: no bound */
};

/*
 * Prepares options for a source time zone name ("UTC", "Europe/Paris"; NULL or "" = UTC).
 * DW_ERR_CONFIG (logged) when the zone is unknown. types starts NULL.
 */
dw_rc dw_values_options_init(struct dw_values_options *o, const char *zone);

/* A new, empty type map. */
struct dw_types *dw_types_new(void);

/* Frees the map; NULL is accepted. */
void dw_types_free(struct dw_types *t);

/*
 * Records a user type: kind 'd' (domain over base_oid), 'e' (enum), 'a' (array of
 * base_oid) or 't' (anything else: written as its text form). A later entry for the same oid
 * replaces the earlier one.
 */
void dw_types_add(struct dw_types *t, uint32_t oid, char kind, uint32_t base_oid);

/* Whether the map has an entry for oid. */
bool dw_types_has(const struct dw_types *t, uint32_t oid);

/* Calls fn for every entry (order unspecified). */
void dw_types_foreach(const struct dw_types *t,
                      void (*fn)(void *user, uint32_t oid, char kind, uint32_t base_oid),
                      void *user);

/*
 * Reads every domain, enum and array of user types from pg_type over conn (simple query
 * protocol, so a replication=database connection works) into t.
 */
dw_rc dw_types_load(PGconn *conn, struct dw_types *t);

/*
 * Appends the datum's text (len bytes, not NUL-terminated) as JSON by type oid. On error
 * the buffer is unchanged, the code is DW_ERR_RANGE (unrepresentable value: NaN, Infinity,
 * too large for the buffer) or DW_ERR_INVALID (not UTF-8, NUL byte, malformed text), and
 * *why (if not NULL) is a static description.
 */
dw_rc dw_value_append_json(struct dw_buf *out, uint32_t type_oid, const char *data, size_t len,
                           const struct dw_values_options *o, const char **why);

/* A change as jansson values for mapping; every member is a new reference or NULL. */
struct dw_row_json {
    json_t *new_row;   /* column -> value (unchanged TOAST columns left out); NULL for DELETE */
    json_t *old_row;   /* the old image (key columns only for 'K'); NULL when not sent */
    json_t *unchanged; /* array of the names of unchanged TOAST columns (maybe empty) */
    json_t *key;       /* replica-identity columns: from the new image, the old for DELETE */
};

/*
 * Converts an INSERT, UPDATE or DELETE into out. Numbers follow json.h: numeric becomes a
 * json_integer when integral and within int64, a json_real when it has at most
 * DW_JSON_REAL_DIGITS significant digits, and is otherwise unrepresentable. A value that
 * cannot be converted gives DW_ERR_RANGE (or DW_ERR_INVALID for a TRUNCATE) and *error, a
 * heap message naming the column and the value (caller frees); out is untouched then.
 */
dw_rc dw_change_row_json(const struct dw_change *c, const struct dw_values_options *opts,
                         struct dw_row_json *out, char **error);

/*
 * dw_change_row_json() that converts what it can: a value that cannot be converted is kept
 * as its text (a JSON string), one over max_value_bytes is left out of the image (so mapping
 * it again fails: the column is not in the row), and *problem (heap, caller frees) names the first
 * such value, or is NULL when every value converted. Only a TRUNCATE fails (DW_ERR_INVALID,
 * *problem set, out untouched). So a change that cannot be applied still has its key.
 */
dw_rc dw_change_row_json_lenient(const struct dw_change *c, const struct dw_values_options *opts,
                                 struct dw_row_json *out, char **problem);

/* Releases the references in r and sets them to NULL. */
void dw_row_json_cleanup(struct dw_row_json *r);

/*
 * A change as the source stage hands it to the apply pipeline (pipeline.h): the change as
 * decoded, and its images typed by dw_change_type(). The pipeline maps the typed rows and
 * keeps their text for error rows; it never types a value itself.
 */
struct dw_typed_change {
    const struct dw_change *change; /* borrowed */
    /* dw_change_row_json_lenient()'s answer: rc DW_OK with row set and problem naming a
     * value that could not be converted (NULL when all were); otherwise no row, problem
     * saying why. A TRUNCATE has no row, rc DW_OK. */
    dw_rc rc;
    struct dw_row_json row;
    char *problem;
};

/* Types a change's images (row and problem owned by out; see dw_typed_change_cleanup()). */
void dw_change_type(const struct dw_change *c, const struct dw_values_options *opts,
                    struct dw_typed_change *out);

void dw_typed_change_cleanup(struct dw_typed_change *t);

/*
 * Appends the `dwasync decode` line(s) for a change: one JSON object per change
 * ({"lsn","xid","commit_time","op","schema","table","key","new","old","unchanged"}), and for
 * a TRUNCATE one object per truncated table. Values that cannot be converted are written as
 * their text and listed in an extra "errors" array ({"column","error"}); nothing is dropped.
 * Each object ends with a newline. Fails only when the buffer's cap is exceeded.
 */
dw_rc dw_change_append_json(struct dw_buf *out, const struct dw_change *c,
                            const struct dw_values_options *o);

/* Appends microseconds since the Unix epoch as "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
dw_rc dw_time_append_iso(struct dw_buf *out, int64_t unix_us);

#endif

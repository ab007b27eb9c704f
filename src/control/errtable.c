/*
 * The control-database side of the error table (see errtable.h): the in-memory set of blocked
 * keys (their digests), inserting error rows through dwasync.insert_errors() (redacted
 * first), claiming and resolving rows for replay, the alert rule, purging, and the LISTEN/NOTIFY of
 * replay requests. The replay engine that drives the claims lives in replay.c.
 */
#include "dwasync/errtable.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/sha.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"
#include "dwasync/redact.h"

/* Error rows stored per statement (dw_errtable_insert()): at most this many, and no more
 * once their JSON text reaches this size (a few rows of large values go alone). */
#define INSERT_CHUNK_ROWS  256
#define INSERT_CHUNK_BYTES ((size_t)8 << 20)

/* Parses the integer text of a bigint/int column; libpq's text is always well formed. */
static int64_t col_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static char *col_strdup(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : dw_strdup(PQgetvalue(res, row, col));
}

/* --- blocked keys --------------------------------------------------------------------- */

/*
 * An open-addressing set (linear probing) of 128-bit digests of "<map id>:<key text>", the
 * first 16 bytes of its SHA-256: 16 bytes a key, at most half full, where a hash of the texts
 * took about 180 (a key names its parents, so its text runs to a hundred bytes) and a job
 * may park hundreds of thousands of keys in an outage (README invariant 5). Two keys share a
 * digest with a chance far below that of a memory error. A digest is never all zeros (its
 * lowest bit is set), so zeros mark a free slot.
 */
struct digest {
    uint64_t h[2];
};

struct dw_blocked_keys {
    struct digest *slots;
    size_t cap; /* 0, or a power of two */
    size_t count;
};

/* The map id is a prefix ending in ':' so (1, "2:x") and (12, "x") cannot collide. */
static struct digest blocked_digest(int64_t map_id, const char *key_text)
{
    char stack[256];
    size_t len = strlen(key_text);
    char *text = len + 24 <= sizeof stack ? stack : dw_malloc(len + 24);
    int n = snprintf(text, 24, "%" PRId64 ":", map_id);
    memcpy(text + n, key_text, len);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, (size_t)n + len, md);
    if (text != stack)
        free(text);
    struct digest d;
    memcpy(d.h, md, sizeof d.h);
    d.h[0] |= 1;
    return d;
}

static bool digest_free(const struct digest *d)
{
    return d->h[0] == 0;
}

/* The slot holding d, or the free slot where it would go; the set has a free slot. */
static size_t blocked_slot(const struct dw_blocked_keys *set, const struct digest *d)
{
    size_t mask = set->cap - 1, i = (size_t)d->h[1] & mask;
    while (!digest_free(&set->slots[i]) && memcmp(&set->slots[i], d, sizeof *d) != 0)
        i = (i + 1) & mask;
    return i;
}

struct dw_blocked_keys *dw_blocked_keys_new(void)
{
    return dw_calloc(1, sizeof(struct dw_blocked_keys));
}

static void blocked_clear(struct dw_blocked_keys *set)
{
    free(set->slots);
    set->slots = NULL;
    set->cap = set->count = 0;
}

void dw_blocked_keys_free(struct dw_blocked_keys *set)
{
    if (set == NULL)
        return;
    blocked_clear(set);
    free(set);
}

bool dw_blocked_keys_contains(const struct dw_blocked_keys *set, int64_t map_id,
                              const char *key_text)
{
    if (set->count == 0)
        return false; /* the common case, asked for every change of every window */
    struct digest d = blocked_digest(map_id, key_text);
    return !digest_free(&set->slots[blocked_slot(set, &d)]);
}

/* Doubles the table (64 slots at first), placing every digest again. */
static void blocked_grow(struct dw_blocked_keys *set)
{
    struct dw_blocked_keys bigger = {
        .slots = dw_calloc(set->cap ? set->cap * 2 : 64, sizeof *set->slots),
        .cap = set->cap ? set->cap * 2 : 64,
        .count = set->count,
    };
    for (size_t i = 0; i < set->cap; i++)
        if (!digest_free(&set->slots[i]))
            bigger.slots[blocked_slot(&bigger, &set->slots[i])] = set->slots[i];
    free(set->slots);
    *set = bigger;
}

void dw_blocked_keys_add(struct dw_blocked_keys *set, int64_t map_id, const char *key_text)
{
    if ((set->count + 1) * 2 > set->cap)
        blocked_grow(set);
    struct digest d = blocked_digest(map_id, key_text);
    size_t i = blocked_slot(set, &d);
    if (digest_free(&set->slots[i])) {
        set->slots[i] = d;
        set->count++;
    }
}

void dw_blocked_keys_remove(struct dw_blocked_keys *set, int64_t map_id, const char *key_text)
{
    if (set->count == 0)
        return;
    struct digest d = blocked_digest(map_id, key_text);
    size_t mask = set->cap - 1, i = blocked_slot(set, &d);
    if (digest_free(&set->slots[i]))
        return;
    /* Backward-shift deletion: each later digest of the run whose home slot is not between
     * the hole and it moves into the hole, so no lookup meets a free slot too early. */
    for (size_t j = (i + 1) & mask; !digest_free(&set->slots[j]); j = (j + 1) & mask) {
        size_t home = (size_t)set->slots[j].h[1] & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            set->slots[i] = set->slots[j];
            i = j;
        }
    }
    memset(&set->slots[i], 0, sizeof set->slots[i]);
    set->count--;
}

size_t dw_blocked_keys_count(const struct dw_blocked_keys *set)
{
    return set->count;
}

dw_rc dw_errtable_load_blocked(PGconn *conn, int64_t job_id, struct dw_blocked_keys *set)
{
    char job[24];
    snprintf(job, sizeof job, "%" PRId64, job_id);
    const char *params[] = {job};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(conn, "loading the blocked keys",
                           "SELECT DISTINCT map_id, key_text FROM dwasync.error "
                           "WHERE job_id = $1 AND status IN ('open', 'waiting', 'replaying')",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    blocked_clear(set);
    for (int i = 0; i < PQntuples(res); i++)
        dw_blocked_keys_add(set, col_i64(res, i, 0), PQgetvalue(res, i, 1));
    PQclear(res);
    return DW_OK;
}

/* --- inserts ------------------------------------------------------------------------- */

/* ISO 8601 UTC with microseconds, as Postgres reads it back exactly. */
static json_t *timestamp_json(int64_t us)
{
    if (us == 0)
        return json_null();
    time_t secs = (time_t)(us / 1000000);
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    struct tm tm;
    char text[64];
    gmtime_r(&secs, &tm);
    size_t n = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text + n, sizeof text - n, ".%06" PRId64 "Z", frac);
    return json_string(text);
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

/* Whether a row can be stored (says why not). */
static bool row_storable(const struct dw_errrow *r)
{
    if (r->source_key == NULL || r->source_schema == NULL || r->source_table == NULL) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", r->source_table}),
                "error row without a source key or table cannot be stored");
        return false;
    }
    return true;
}

/* The queue identity of a row without a key text: its source key, canonical. */
static char *canonical_key(const char *source_key)
{
    json_t *key = json_loads(source_key, JSON_DECODE_ANY, NULL);
    char *text = key ? dw_json_canonical(key) : dw_strdup(source_key);
    json_decref(key);
    return text;
}

/* Appends ,"name":text, or null for NULL: a JSON text (errtable.h) spliced in as it is. */
static dw_rc put_text_member(struct dw_buf *b, const char *name, const char *text)
{
    dw_rc rc;
    if ((rc = dw_buf_printf(b, ",\"%s\":", name)) != DW_OK)
        return rc;
    return dw_buf_puts(b, text ? text : "null");
}

/* Appends a storable row (row_storable()) as one object of insert_errors()'s array: the
 * scalars through jansson, the JSON texts spliced in without being parsed. DW_ERR_RANGE
 * past the buffer's cap. */
static dw_rc put_row(struct dw_buf *b, const struct dw_errrow *r)
{
    char lsn[DW_LSN_STRLEN];
    char *canonical = r->key_text ? NULL : canonical_key(r->source_key);
    json_t *o = json_object();
    json_object_set_new(o, "job_id", json_integer(r->job_id));
    json_object_set_new(o, "map_id", json_integer(r->map_id));
    json_object_set_new(o, "map_name", json_string(r->map_name ? r->map_name : ""));
    json_object_set_new(o, "source_schema", json_string(r->source_schema));
    json_object_set_new(o, "source_table", json_string(r->source_table));
    json_object_set_new(o, "operation", json_string(dw_change_op_name(r->op)));
    json_object_set_new(o, "key_text", json_string(r->key_text ? r->key_text : canonical));
    json_object_set_new(o, "target_id", str_or_null(r->target_id));
    json_object_set_new(o, "commit_lsn", json_string(dw_lsn_format(r->commit_lsn, lsn)));
    json_object_set_new(o, "xid", json_integer(r->xid));
    json_object_set_new(o, "commit_time", timestamp_json(r->commit_time_us));
    json_object_set_new(o, "position", json_integer(r->position));
    json_object_set_new(o, "part", json_integer(r->part));
    json_object_set_new(o, "http_status",
                        r->http_status ? json_integer(r->http_status) : json_null());
    json_object_set_new(o, "dv_code", str_or_null(r->code));
    json_object_set_new(o, "message", json_string(r->message ? r->message : ""));
    json_object_set_new(o, "missing_parent", str_or_null(r->missing_parent));
    json_object_set_new(o, "class",
                        r->error_class == DW_ERRCLASS_NONE
                            ? json_null()
                            : json_string(dw_error_class_name(r->error_class)));
    json_object_set_new(o, "waiting", json_boolean(r->waiting));
    dw_rc rc;
    if ((rc = dw_buf_putc(b, '{')) != DW_OK || (rc = dw_json_append_members(b, o)) != DW_OK ||
        (rc = put_text_member(b, "source_key", r->source_key)) != DW_OK ||
        (rc = put_text_member(b, "payload", r->payload)) != DW_OK ||
        (rc = dw_buf_puts(b, ",\"source_row\":{\"new\":")) != DW_OK ||
        (rc = dw_buf_puts(b, r->new_row ? r->new_row : "null")) != DW_OK ||
        (rc = put_text_member(b, "old", r->old_row)) != DW_OK ||
        (rc = put_text_member(b, "unchanged", r->unchanged)) != DW_OK)
        goto out;
    rc = dw_buf_puts(b, "}}");
out:
    json_decref(o);
    free(canonical);
    return rc;
}

/* Stores the first rows of rows[0..n) in one statement: at most INSERT_CHUNK_ROWS of them, and
 * no more once their text reaches INSERT_CHUNK_BYTES. *taken gets how many; their count is
 * added to *inserted. */
static dw_rc insert_chunk(PGconn *conn, const struct dw_errrow *rows, size_t n,
                          struct dw_blocked_keys *blocked, size_t *taken, size_t *inserted)
{
    struct dw_buf arr;
    dw_buf_init(&arr, 0);
    dw_rc rc = dw_buf_putc(&arr, '[');
    size_t i = 0;
    while (rc == DW_OK && i < n && i < INSERT_CHUNK_ROWS && arr.len < INSERT_CHUNK_BYTES) {
        if (i > 0)
            rc = dw_buf_putc(&arr, ',');
        if (rc == DW_OK)
            rc = put_row(&arr, &rows[i++]);
    }
    if (rc == DW_OK)
        rc = dw_buf_putc(&arr, ']');
    if (rc != DW_OK) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", rows[i - 1].source_table}),
                "an error row is too large to store (over %zu bytes as JSON)", arr.max_len);
        dw_buf_cleanup(&arr);
        return rc;
    }
    /* Invariant 6: whatever a caller forgot, no registered secret or secret-shaped value
     * reaches a stored message, row or payload (redaction keeps the JSON well formed). */
    char *text = dw_redact_str(dw_buf_str(&arr));
    dw_buf_cleanup(&arr);
    const char *params[] = {text};
    PGresult *res = NULL;
    rc = dw_pg_query(conn, "storing error rows",
                     "SELECT error_id, error_status, error_map_id, error_key_text "
                     "FROM dwasync.insert_errors($1::jsonb)",
                     1, params, &res);
    free(text);
    if (rc == DW_OK) {
        if (blocked != NULL)
            for (int r = 0; r < PQntuples(res); r++)
                dw_blocked_keys_add(blocked, col_i64(res, r, 2), PQgetvalue(res, r, 3));
        *inserted += (size_t)PQntuples(res);
    }
    PQclear(res);
    *taken = i;
    return rc;
}

dw_rc dw_errtable_insert(PGconn *conn, const struct dw_errrow *rows, size_t n,
                         struct dw_blocked_keys *blocked, size_t *inserted)
{
    /* In statements of a few hundred rows: a window's thousands of refused rows are never
     * all in one JSON document (text and libpq's copy) at once. A later chunk sees the
     * earlier ones' rows in the table, so a key's status is decided as in one statement;
     * the caller's transaction makes the chunks one write. */
    size_t total = 0, taken = 0;
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < n; i++)
        if (!row_storable(&rows[i]))
            return DW_ERR_INVALID; /* before anything is written */
    for (size_t i = 0; i < n && rc == DW_OK; i += taken)
        rc = insert_chunk(conn, rows + i, n - i, blocked, &taken, &total);
    if (rc == DW_OK && total > 0)
        DW_INFO("stored %zu error row%s (job id %" PRId64 ")", total, total == 1 ? "" : "s",
                rows[0].job_id);
    if (inserted)
        *inserted = rc == DW_OK ? total : 0;
    return rc;
}

/* --- replay bookkeeping ---------------------------------------------------------------- */

void dw_errstored_cleanup(struct dw_errstored *row)
{
    if (row == NULL)
        return;
    free(row->map_name);
    free(row->source_schema);
    free(row->source_table);
    free(row->key_text);
    dw_errstored_drop_images(row);
    memset(row, 0, sizeof *row);
}

void dw_errstored_drop_images(struct dw_errstored *row)
{
    free(row->source_row_text);
    json_decref(row->new_row);
    json_decref(row->old_row);
    json_decref(row->unchanged);
    row->source_row_text = NULL;
    row->new_row = row->old_row = row->unchanged = NULL;
}

static enum dw_change_op parse_op(const char *s)
{
    if (strcmp(s, "insert") == 0)
        return DW_CHANGE_INSERT;
    if (strcmp(s, "update") == 0)
        return DW_CHANGE_UPDATE;
    if (strcmp(s, "delete") == 0)
        return DW_CHANGE_DELETE;
    return DW_CHANGE_TRUNCATE;
}

/* A JSON member that is present and not null, as a new reference. */
static json_t *member_or_null(const json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return v && !json_is_null(v) ? json_incref(v) : NULL;
}

dw_rc dw_errstored_load_images(struct dw_errstored *row)
{
    if (row->source_row_text == NULL)
        return DW_OK;
    json_error_t jerr;
    json_t *src = json_loads(row->source_row_text, 0, &jerr);
    if (src == NULL) {
        DW_ERROR("error row %" PRId64 " holds unreadable JSON: %s", row->id, jerr.text);
        return DW_ERR_PROTOCOL;
    }
    dw_errstored_drop_images(row);
    row->new_row = member_or_null(src, "new");
    row->old_row = member_or_null(src, "old");
    row->unchanged = member_or_null(src, "unchanged");
    json_decref(src);
    return DW_OK;
}

/* A claimed row from the claim's result (its images as text: dw_errstored_load_images()). */
static void stored_from_result(const PGresult *res, int i, struct dw_errstored *row)
{
    memset(row, 0, sizeof *row);
    row->id = col_i64(res, i, 0);
    row->job_id = col_i64(res, i, 1);
    row->map_id = col_i64(res, i, 2);
    row->map_name = col_strdup(res, i, 3);
    row->source_schema = col_strdup(res, i, 4);
    row->source_table = col_strdup(res, i, 5);
    row->op = parse_op(PQgetvalue(res, i, 6));
    row->key_text = col_strdup(res, i, 7);
    row->source_row_text = col_strdup(res, i, 8);
    if (dw_lsn_parse(PQgetvalue(res, i, 9), &row->commit_lsn) != DW_OK)
        row->commit_lsn = DW_LSN_INVALID;
    row->xid = col_i64(res, i, 10);
    row->position = (uint32_t)col_i64(res, i, 11);
    row->part = (int)col_i64(res, i, 12);
    row->attempts = (int)col_i64(res, i, 13);
    row->group_id = col_i64(res, i, 14);
    row->sequence = (int)col_i64(res, i, 15);
}

dw_rc dw_errtable_claim(PGconn *conn, int64_t job_id, const struct dw_errkey *busy, size_t nbusy,
                        size_t max, struct dw_errstored **out, size_t *n)
{
    char job[24], limit[24];
    PGresult *res = NULL;
    json_t *keys = json_array();
    for (size_t i = 0; i < nbusy; i++)
        json_array_append_new(keys,
                              json_pack("[I,s]", (json_int_t)busy[i].map_id, busy[i].key_text));
    char *keytext = dw_json_dumps(keys);
    snprintf(job, sizeof job, "%" PRId64, job_id);
    snprintf(limit, sizeof limit, "%zu", max);
    const char *params[] = {job, keytext, limit};
    /* Busy keys, not just busy rows: a head skipped while its write is in flight already
     * has a successor, which must wait for that write to finish. Only heads below the
     * replay horizon (errtable.h): a change the stream may still resend must not find its
     * row resolved. The slot counts where the control database can see it (the source
     * database by default), since its confirmed position may trail the checkpoint. (NOT IN
     * of a small list is a hashed anti-join: a batch of busy keys costs one probe a row.)
     * Each table map's queued rows are read in commit order from error_replaying_map (sql/069),
     * at most $3 of them past its busy ones, so a claim reads what it takes, not the whole
     * queue; the maps are found by skipping through that index. The rows are chosen first
     * and read after: the wide columns (source_row::text) are converted for the claimed
     * rows only. */
    dw_rc rc = dw_pg_query(conn, "claiming errors to replay",
                           "WITH RECURSIVE maps AS ("
                           "(SELECT e.map_id FROM dwasync.error e WHERE e.job_id = $1 "
                           "AND e.status = 'replaying' ORDER BY e.map_id LIMIT 1) UNION ALL "
                           "SELECT (SELECT e.map_id FROM dwasync.error e WHERE e.job_id = $1 "
                           "AND e.status = 'replaying' AND e.map_id > m.map_id "
                           "ORDER BY e.map_id LIMIT 1) FROM maps m WHERE m.map_id IS NOT NULL), "
                           "busy AS (SELECT (b->>0)::bigint AS map_id, b->>1 AS key_text "
                           "FROM jsonb_array_elements($2::jsonb) b), "
                           "chosen AS (SELECT q.id, coalesce(t.group_id, 0) AS group_id, "
                           "coalesce(t.sequence, 0) AS sequence, q.commit_lsn, q.position, q.part "
                           "FROM maps m LEFT JOIN dwasync.table_map t ON t.id = m.map_id "
                           "CROSS JOIN LATERAL (SELECT e.id, e.commit_lsn, e.position, e.part "
                           "FROM dwasync.error e WHERE e.job_id = $1 AND e.map_id = m.map_id "
                           "AND e.status = 'replaying' "
                           "AND e.commit_lsn < (SELECT least(c.confirmed_lsn, coalesce("
                           "s.confirmed_flush_lsn, c.confirmed_lsn)) FROM dwasync.checkpoint c "
                           "JOIN dwasync.job j ON j.id = c.job_id LEFT JOIN pg_replication_slots s "
                           "ON s.slot_name = j.slot_name WHERE c.job_id = $1) "
                           "AND (e.map_id, e.key_text) NOT IN (SELECT map_id, key_text FROM busy) "
                           "ORDER BY e.commit_lsn, e.position, e.part LIMIT $3) q "
                           "WHERE m.map_id IS NOT NULL "
                           "ORDER BY 2, 3, 4, 5, 6 LIMIT $3) "
                           "SELECT e.id, e.job_id, e.map_id, e.map_name, e.source_schema, "
                           "e.source_table, e.operation, e.key_text, "
                           "e.source_row::text, e.commit_lsn::text, e.xid, e.position, e.part, "
                           "e.attempts, c.group_id, c.sequence "
                           "FROM chosen c JOIN dwasync.error e ON e.id = c.id "
                           "ORDER BY c.group_id, c.sequence, c.commit_lsn, c.position, c.part",
                           3, params, &res);
    free(keytext);
    json_decref(keys);
    if (rc != DW_OK)
        return rc;
    size_t count = (size_t)PQntuples(res);
    struct dw_errstored *rows = dw_calloc(count + 1, sizeof *rows);
    for (size_t i = 0; i < count; i++)
        stored_from_result(res, (int)i, &rows[i]);
    PQclear(res);
    *out = rows;
    *n = count;
    return DW_OK;
}

dw_rc dw_errtable_mark_resolved_send(PGconn *conn, const int64_t *ids, size_t n)
{
    struct dw_buf list;
    dw_buf_init(&list, 0);
    (void)dw_buf_putc(&list, '{');
    for (size_t i = 0; i < n; i++)
        (void)dw_buf_printf(&list, "%s%" PRId64, i ? "," : "", ids[i]);
    (void)dw_buf_putc(&list, '}');
    const char *params[] = {dw_buf_str(&list)};
    /* dwasync.replay_succeeded() for the whole batch in one statement: the rows still
     * replaying are resolved, and each key left with no open or replaying row has its
     * earliest waiting row queued (promote_next()'s rule; the statement's snapshot still
     * shows the batch's rows replaying, hence "not in the batch"); each row's key's queue is
     * counted by the same scan. One scan per key instead of a function call per row. (The
     * updates in WITH run whether or not the final SELECT reads them.) */
    dw_rc rc = dw_pg_send(
        conn, "marking replayed errors resolved",
        "WITH batch AS (SELECT b.i, r.job_id, r.map_id, r.key_text, r.replay_requested_by "
        "FROM unnest($1::bigint[]) WITH ORDINALITY AS b(id, i) "
        "LEFT JOIN dwasync.error r ON r.id = b.id), "
        "done AS (UPDATE dwasync.error e SET status = 'resolved', resolved_at = now(), "
        "resolved_by = coalesce(e.replay_requested_by, 'dwasync') "
        "WHERE e.id = ANY ($1::bigint[]) AND e.status = 'replaying'), "
        "queues AS (SELECT k.job_id, k.map_id, k.key_text, k.replay_requested_by, q.n, "
        "q.blocked, q.head FROM (SELECT DISTINCT ON (job_id, map_id, key_text) job_id, map_id, "
        "key_text, replay_requested_by FROM batch WHERE job_id IS NOT NULL "
        "ORDER BY job_id, map_id, key_text, i) k CROSS JOIN LATERAL ("
        "SELECT count(*) AS n, coalesce(bool_or(x.status <> 'waiting'), false) AS blocked, "
        "(array_agg(x.id ORDER BY x.commit_lsn, x.position, x.part))[1] AS head "
        "FROM dwasync.error x WHERE x.job_id = k.job_id AND x.map_id = k.map_id "
        "AND md5(x.key_text) = md5(k.key_text) AND x.key_text = k.key_text "
        "AND x.status IN ('open', 'waiting', 'replaying') AND x.id <> ALL ($1::bigint[])) q), "
        "promoted AS (UPDATE dwasync.error e SET status = 'replaying', "
        "replay_requested_at = now(), replay_requested_by = q.replay_requested_by "
        "FROM queues q WHERE q.n > 0 AND NOT q.blocked AND e.id = q.head "
        "AND e.status = 'waiting') "
        "SELECT coalesce(q.n, 0) FROM batch b LEFT JOIN queues q ON q.job_id = b.job_id "
        "AND q.map_id = b.map_id AND q.key_text = b.key_text ORDER BY b.i",
        1, params);
    dw_buf_cleanup(&list);
    return rc;
}

dw_rc dw_errtable_mark_resolved_receive(PGconn *conn, size_t n, int *remaining)
{
    PGresult *res = NULL;
    dw_rc rc = dw_pg_receive(conn, "marking replayed errors resolved", &res);
    if (rc == DW_OK && (size_t)PQntuples(res) != n) {
        DW_ERROR("marking %zu replayed errors resolved answered %d rows", n, PQntuples(res));
        rc = DW_ERR_PG;
    }
    for (size_t i = 0; rc == DW_OK && i < n; i++)
        remaining[i] = (int)strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
    PQclear(res);
    return rc;
}

dw_rc dw_errtable_mark_failed(PGconn *conn, const struct dw_errfailure *failures, size_t n)
{
    if (n == 0)
        return DW_OK;
    /* As insert_errors()'s rows: the scalars through jansson, the payload spliced in. */
    struct dw_buf doc;
    dw_buf_init(&doc, 0);
    dw_rc rc = dw_buf_putc(&doc, '[');
    for (size_t i = 0; i < n && rc == DW_OK; i++) {
        const struct dw_write_result *r = failures[i].result;
        char *payload = r->payload ? dw_redact_str(r->payload) : NULL;
        char *message = dw_redact_str(r->message ? r->message : "");
        enum dw_error_class c =
            r->error_class == DW_ERRCLASS_NONE ? DW_ERRCLASS_UNKNOWN : r->error_class;
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(failures[i].id));
        json_object_set_new(o, "class", json_string(dw_error_class_name(c)));
        json_object_set_new(o, "http_status",
                            r->http_status ? json_integer(r->http_status) : json_null());
        json_object_set_new(o, "dv_code", str_or_null(r->code));
        json_object_set_new(o, "message", json_string(message));
        json_object_set_new(o, "missing_parent", str_or_null(r->missing_parent));
        json_object_set_new(o, "target_id", str_or_null(failures[i].target_id));
        if ((rc = dw_buf_puts(&doc, i ? ",{" : "{")) == DW_OK &&
            (rc = dw_json_append_members(&doc, o)) == DW_OK &&
            (rc = put_text_member(&doc, "payload", payload)) == DW_OK)
            rc = dw_buf_putc(&doc, '}');
        json_decref(o);
        free(payload);
        free(message);
    }
    if (rc == DW_OK)
        rc = dw_buf_putc(&doc, ']');
    const char *params[] = {dw_buf_str(&doc)};
    PGresult *res = NULL;
    /* dwasync.replay_failed() for the whole batch in one statement. */
    if (rc == DW_OK)
        rc = dw_pg_query(
            conn, "recording replay failures",
            "UPDATE dwasync.error e SET status = 'open', class = f.class, "
            "http_status = f.http_status, dv_code = nullif(f.dv_code, ''), "
            "message = coalesce(f.message, ''), payload = coalesce(f.payload, e.payload), "
            "missing_parent = f.missing_parent, target_id = coalesce(f.target_id, e.target_id), "
            "attempts = e.attempts + 1, last_failed_at = now() "
            "FROM jsonb_to_recordset($1::jsonb) AS f(id bigint, class text, http_status integer, "
            "dv_code text, message text, payload jsonb, missing_parent text, target_id text) "
            "WHERE e.id = f.id AND e.status = 'replaying'",
            1, params, &res);
    PQclear(res);
    dw_buf_cleanup(&doc);
    return rc;
}

dw_rc dw_errtable_purge(PGconn *conn, int64_t job_id, int days, int64_t *purged)
{
    char jobtext[24], daystext[16];
    snprintf(jobtext, sizeof jobtext, "%" PRId64, job_id);
    snprintf(daystext, sizeof daystext, "%d", days);
    const char *params[] = {daystext, job_id ? jobtext : NULL};
    int64_t n = 0;
    dw_rc rc = dw_pg_query_int(conn, "purging old error rows",
                               "SELECT dwasync.purge_errors($1, $2)", 2, params, &n);
    if (rc != DW_OK)
        return rc;
    if (n > 0)
        DW_INFO("purged %" PRId64 " resolved or skipped error rows older than %d days", n, days);
    if (purged)
        *purged = n;
    return DW_OK;
}

/* --- alert rule ------------------------------------------------------------------------ */

dw_rc dw_errtable_alert_check(PGconn *conn, int64_t job_id, struct dw_alert_state *out)
{
    char jobtext[24];
    snprintf(jobtext, sizeof jobtext, "%" PRId64, job_id);
    const char *params[] = {jobtext};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query_row(conn, "evaluating the alert rule",
                               "SELECT enabled, coalesce(max_errors, 0), coalesce(minutes, 0), "
                               "coalesce(errors_in_window, 0), tripped "
                               "FROM dwasync.alert_state($1)",
                               1, params, &res);
    if (rc != DW_OK)
        return rc;
    struct dw_alert_state a = {
        .enabled = PQgetvalue(res, 0, 0)[0] == 't',
        .max_errors = (int)col_i64(res, 0, 1),
        .minutes = (int)col_i64(res, 0, 2),
        .errors_in_window = col_i64(res, 0, 3),
        .tripped = PQgetvalue(res, 0, 4)[0] == 't',
    };
    PQclear(res);
    *out = a;
    return DW_OK;
}

dw_rc dw_errtable_alert_enforce(PGconn *conn, int64_t job_id, bool *paused)
{
    char jobtext[24];
    snprintf(jobtext, sizeof jobtext, "%" PRId64, job_id);
    const char *params[] = {jobtext};
    PGresult *res = NULL;
    dw_rc rc = dw_pg_query(conn, "enforcing the alert rule",
                           "SELECT j.name, dwasync.enforce_alert_rule(j.id) "
                           "FROM dwasync.job j WHERE j.id = $1",
                           1, params, &res);
    if (rc != DW_OK)
        return rc;
    bool did = PQntuples(res) == 1 && !PQgetisnull(res, 0, 1);
    if (did)
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", PQgetvalue(res, 0, 0)}), "job paused: %s",
                PQgetvalue(res, 0, 1));
    PQclear(res);
    if (paused)
        *paused = did;
    return DW_OK;
}

/* --- listeners ------------------------------------------------------------------------- */

dw_rc dw_errtable_listen(PGconn *conn)
{
    return dw_pg_exec(conn, "listening for replay requests", "LISTEN " DW_REPLAY_CHANNEL);
}

dw_rc dw_errtable_listeners(PGconn *conn, const char *job_name, int *out)
{
    const char *params[] = {job_name};
    int64_t n = 0;
    dw_rc rc = dw_pg_query_int(conn, "looking for a running daemon",
                               "SELECT dwasync.replay_listeners($1)", 1, params, &n);
    if (rc == DW_OK)
        *out = (int)n;
    return rc;
}

dw_rc dw_errtable_poll_requests(PGconn *conn, const char *job_name, bool read, bool *requested)
{
    bool found = false;
    if (read && PQconsumeInput(conn) != 1)
        return dw_pg_fail(conn, NULL, "reading replay requests");
    PGnotify *note;
    while ((note = PQnotifies(conn)) != NULL) {
        if (strcmp(note->relname, DW_REPLAY_CHANNEL) == 0 &&
            (job_name == NULL || strcmp(note->extra, job_name) == 0))
            found = true;
        PQfreemem(note);
    }
    *requested = found;
    return DW_OK;
}

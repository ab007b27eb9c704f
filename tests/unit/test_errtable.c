/*
 * The error table's C API and the replay engine against a private Postgres cluster
 * (tests/harness/pgcluster): idempotent inserts, the blocked set across a reconnect,
 * replay order and idempotence, failures back to open, skip releasing followers, writes
 * completed later, sequence levels, NOTIFY and the runner's job lock, the alert rule and
 * retention. The "Dataverse" here is a list of writes recorded in the order they were sent.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>

#include "check_main.h"
#include "dwasync/alloc.h"
#include "dwasync/errtable.h"
#include "dwasync/ha.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/migrate.h"
#include "dwasync/pg.h"
#include "dwasync/redact.h"
#include "dwasync/stream.h"

static char cluster_dir[256];
static char conninfo[1200];

static const char *harness_script(void)
{
    return DW_SOURCE_SQLDIR "/../tests/harness/pgcluster";
}

static void cluster_start(void)
{
    char cmd[1024], line[512], host[512] = "", port[512] = "";
    snprintf(cluster_dir, sizeof cluster_dir, "/tmp/dwasync-errtable.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(cluster_dir));
    /* The server may run as another user (initdb refuses root): it must reach its dir. */
    ck_assert_int_eq(chmod(cluster_dir, 0755), 0);
    snprintf(cmd, sizeof cmd, "bash '%s' start '%s/c' >/dev/null", harness_script(), cluster_dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/c/env", cluster_dir);
    FILE *f = fopen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "export PGHOST=", 14) == 0)
            snprintf(host, sizeof host, "%s", line + 14);
        if (strncmp(line, "export PGPORT=", 14) == 0)
            snprintf(port, sizeof port, "%s", line + 14);
    }
    fclose(f);
    snprintf(conninfo, sizeof conninfo, "host=%s port=%s user=postgres dbname=postgres", host,
             port);
    PGconn *conn;
    struct dw_migrate_result mr;
    ck_assert_int_eq(dw_pg_connect(conninfo, "test", &conn), DW_OK);
    ck_assert_int_eq(dw_migrate_run(conn, DW_SOURCE_SQLDIR, &mr), DW_OK);
    PQfinish(conn);
}

static void cluster_stop(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s' stop '%s/c' >/dev/null 2>&1; rmdir '%s'", harness_script(),
             cluster_dir, cluster_dir);
    (void)system(cmd);
}

static PGconn *connect_db(void)
{
    PGconn *conn;
    ck_assert_int_eq(dw_pg_connect(conninfo, "test", &conn), DW_OK);
    return conn;
}

/* First column of the first row as a heap string ("" if no row). */
static char *q(PGconn *conn, const char *sql)
{
    PGresult *res;
    ck_assert_int_eq(dw_pg_query(conn, "test query", sql, 0, NULL, &res), DW_OK);
    char *v = dw_strdup(PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

static void q_eq(PGconn *conn, const char *sql, const char *want)
{
    char *got = q(conn, sql);
    ck_assert_msg(strcmp(got, want) == 0, "%s: want [%s] got [%s]", sql, want, got);
    free(got);
}

static void exec_ok(PGconn *conn, const char *sql)
{
    ck_assert_int_eq(dw_pg_exec(conn, "test statement", sql), DW_OK);
}

/* A job named name with one table group and two maps: parent (seq 1) and child (seq 2),
 * and a checkpoint past every row the tests store (replays claim only rows below it). */
static int64_t make_job(PGconn *conn, const char *name)
{
    char *sql = dw_asprintf(
        "WITH j AS (INSERT INTO dwasync.job (name, slot_name, publication_name) "
        "VALUES ('%s', '%s_slot', '%s_pub') RETURNING id), "
        "g AS (INSERT INTO dwasync.table_group (job_id, name) SELECT id, 'g' FROM j "
        "RETURNING id, job_id), "
        "m AS (INSERT INTO dwasync.table_map (job_id, group_id, sequence, name, source_table, "
        "target_entity_set, target_logical_name, key_mapping) "
        "SELECT job_id, id, 1, 'parent', 'custgroup', 'groups', 'group', '{}'::jsonb FROM g UNION "
        "ALL "
        "SELECT job_id, id, 2, 'child', 'custtable', 'accounts', 'account', '{}'::jsonb FROM g), "
        "c AS (INSERT INTO dwasync.checkpoint (job_id, confirmed_lsn) "
        "SELECT id, 'FFFFFFFF/0' FROM j) "
        "SELECT id FROM j",
        name, name, name);
    char *id = q(conn, sql);
    int64_t v = strtoll(id, NULL, 10);
    free(sql);
    free(id);
    return v;
}

static int64_t map_id(PGconn *conn, int64_t job, const char *name)
{
    char *sql = dw_asprintf(
        "SELECT id FROM dwasync.table_map WHERE job_id = %" PRId64 " AND name = '%s'", job, name);
    char *id = q(conn, sql);
    int64_t v = strtoll(id, NULL, 10);
    free(sql);
    free(id);
    return v;
}

/* One error row: key {"k": key}, new row {"k": key, "v": value}. */
struct row_spec {
    const char *key;
    uint64_t lsn;
    uint32_t pos;
    const char *value;
    bool waiting;
    enum dw_error_class cls;
};

/* A JSON value as the compact text an error row carries; takes the reference. */
static char *json_text(json_t *value)
{
    char *text = dw_json_dumps(value);
    json_decref(value);
    return text;
}

static size_t insert_rows(PGconn *conn, int64_t job, int64_t map, const struct row_spec *spec,
                          size_t n, struct dw_blocked_keys *blocked)
{
    struct dw_errrow *rows = dw_calloc(n, sizeof *rows);
    char **keys = dw_calloc(n, sizeof *keys), **news = dw_calloc(n, sizeof *news);
    for (size_t i = 0; i < n; i++) {
        keys[i] = json_text(json_pack("{s:s}", "k", spec[i].key));
        news[i] = json_text(json_pack("{s:s,s:s}", "k", spec[i].key, "v", spec[i].value));
        rows[i] = (struct dw_errrow){
            .job_id = job,
            .map_id = map,
            .map_name = "child",
            .source_schema = "public",
            .source_table = "custtable",
            .op = DW_CHANGE_UPDATE,
            .source_key = keys[i],
            .new_row = news[i],
            .commit_lsn = spec[i].lsn,
            .xid = 700,
            .commit_time_us = 1795000000123456LL,
            .position = spec[i].pos,
            .http_status = spec[i].cls == DW_ERRCLASS_NONE ? 0 : 400,
            .code = spec[i].cls == DW_ERRCLASS_NONE ? NULL : "0x80044331",
            .message = spec[i].cls == DW_ERRCLASS_NONE ? NULL : "A validation error occurred.",
            .error_class = spec[i].cls,
            .waiting = spec[i].waiting,
        };
    }
    size_t inserted = 0;
    ck_assert_int_eq(dw_errtable_insert(conn, rows, n, blocked, &inserted), DW_OK);
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(news[i]);
    }
    free(keys);
    free(news);
    free(rows);
    return inserted;
}

/* --- the fake mapping and Dataverse ----------------------------------------------------- */

struct fake {
    struct dw_replay *engine;
    char sent[4096];         /* "key=value;" per write, in send order */
    bool reject_bad;         /* values "bad" are refused with a 400 (the unfixed state) */
    bool defer;              /* complete later, from the test */
    void *pending[16];       /* deferred tokens */
    char *pending_value[16]; /* and their values */
    int npending;
    char unblocked[1024];
};

static dw_rc fake_remap(void *user, const struct dw_errstored *row, struct dw_remap *out)
{
    (void)user;
    const char *v = json_string_value(json_object_get(row->new_row, "v"));
    if (v && strcmp(v, "unmappable") == 0) {
        out->status = DW_REMAP_FAILED;
        out->error_class = DW_ERRCLASS_MAPPING;
        out->message = dw_strdup("column \"v\": value \"unmappable\" is not in the value map");
        return DW_OK;
    }
    if (v && strcmp(v, "filtered") == 0) {
        out->status = DW_REMAP_NOTHING;
        return DW_OK;
    }
    out->status = DW_REMAP_WRITE;
    out->write.op = DW_WRITE_UPSERT;
    out->write.entity_set = dw_strdup("accounts");
    out->write.logical_name = dw_strdup("account");
    out->write.key = json_loads(row->key_text, 0, NULL);
    dw_write_set_body(&out->write, json_deep_copy(row->new_row));
    out->target_id = dw_strdup("accounts(k)");
    return DW_OK;
}

/* What the fake Dataverse answers: 204, or a refusal with this class, status and code. */
static struct dw_write_result outcome(bool refused, enum dw_error_class c, int http,
                                      const char *code, const char *message)
{
    return (struct dw_write_result){
        .status = refused ? DW_WRITE_REJECTED : DW_WRITE_APPLIED,
        .error_class = refused ? c : DW_ERRCLASS_NONE,
        .http_status = refused ? http : 204,
        .code = refused ? code : "",
        .message = refused ? message : "",
    };
}

static void fake_finish(struct fake *f, void *token, const char *value)
{
    bool bad = f->reject_bad && strcmp(value, "bad") == 0;
    char *payload = dw_asprintf("{\"v\":\"%s\"}", value);
    struct dw_write_result res =
        outcome(bad, DW_ERRCLASS_VALIDATION, 400, "0x80044331", "still too long");
    res.payload = payload;
    dw_replay_complete(f->engine, token, &res);
    free(payload);
}

static dw_rc fake_submit(void *user, void *token, struct dw_write *w)
{
    struct fake *f = user;
    const char *key = json_string_value(json_object_get(w->key, "k"));
    const char *value = json_string_value(json_object_get(dw_check_body(w), "v"));
    size_t len = strlen(f->sent);
    snprintf(f->sent + len, sizeof f->sent - len, "%s=%s;", key, value);
    if (f->defer) {
        ck_assert_int_lt(f->npending, 16);
        f->pending[f->npending] = token;
        f->pending_value[f->npending++] = dw_strdup(value);
    } else {
        fake_finish(f, token, value);
    }
    dw_write_cleanup(w); /* takes the contents: the write is left empty */
    return DW_OK;
}

static void fake_unblocked(void *user, int64_t map, const char *key_text)
{
    struct fake *f = user;
    (void)map;
    size_t len = strlen(f->unblocked);
    snprintf(f->unblocked + len, sizeof f->unblocked - len, "%s;", key_text);
}

static void fake_complete_all(struct fake *f)
{
    for (int i = 0; i < f->npending; i++) {
        fake_finish(f, f->pending[i], f->pending_value[i]);
        free(f->pending_value[i]);
    }
    f->npending = 0;
}

/* Answers the n writes deferred first, in order. */
static void fake_complete_first(struct fake *f, int n)
{
    for (int i = 0; i < n; i++) {
        fake_finish(f, f->pending[i], f->pending_value[i]);
        free(f->pending_value[i]);
    }
    memmove(f->pending, f->pending + n, (size_t)(f->npending - n) * sizeof *f->pending);
    memmove(f->pending_value, f->pending_value + n,
            (size_t)(f->npending - n) * sizeof *f->pending_value);
    f->npending -= n;
}

static const struct dw_replay_ops fake_ops = {fake_remap, fake_submit, fake_unblocked};

static struct dw_replay *engine_for(PGconn *conn, int64_t job, struct fake *f, int max)
{
    struct dw_replay *r;
    ck_assert_int_eq(dw_replay_new(conn, job, &fake_ops, f, max, &r), DW_OK);
    f->engine = r;
    return r;
}

static bool pump(struct dw_replay *r)
{
    bool idle = false;
    ck_assert_int_eq(dw_replay_pump(r, &idle), DW_OK);
    return idle;
}

/* --- tests --------------------------------------------------------------------------- */

static const struct row_spec basic[] = {
    {"A", 0x100, 0, "a1", false, DW_ERRCLASS_VALIDATION},
    {"A", 0x200, 0, "a2", true, DW_ERRCLASS_NONE},
    {"B", 0x200, 1, "b1", false, DW_ERRCLASS_VALIDATION},
    {"A", 0x300, 2, "a3", true, DW_ERRCLASS_NONE},
};

/* More rows than one statement takes: every row is stored once, a key's later row in a later
 * statement still waits behind its head, and nothing is written when any row is bad. */
START_TEST(many_rows_are_stored_in_statements_as_one)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "many");
    int64_t map = map_id(conn, job, "child");
    enum { N = 600 };
    struct row_spec *rows = dw_calloc(N, sizeof *rows);
    char(*keys)[16] = dw_calloc(N, sizeof *keys);
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "K%zu", i);
        rows[i] = (struct row_spec){keys[i], 0x1000 + i, 0, "v", false, DW_ERRCLASS_VALIDATION};
    }
    rows[N - 1].key = keys[0]; /* the last row changes the first row's key again */
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    ck_assert_uint_eq(insert_rows(conn, job, map, rows, N, blocked), N);
    ck_assert_uint_eq(insert_rows(conn, job, map, rows, N, blocked), 0);
    q_eq(conn,
         "SELECT concat(count(*), '/', count(*) FILTER (WHERE status = 'waiting'), '/', "
         "max(key_text) FILTER (WHERE status = 'waiting')) FROM dwasync.error WHERE job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'many')",
         "600/1/{\"k\":\"K0\"}");
    ck_assert(dw_blocked_keys_contains(blocked, map, "{\"k\":\"K598\"}"));
    dw_blocked_keys_free(blocked);

    /* A bad row at the end: the call fails and stores none of the rows before it. */
    struct dw_errrow good = {.job_id = job,
                             .map_id = map,
                             .source_schema = "public",
                             .source_table = "custtable",
                             .op = DW_CHANGE_UPDATE,
                             .error_class = DW_ERRCLASS_VALIDATION};
    struct dw_errrow *batch = dw_calloc(N, sizeof *batch);
    const char *key = "{\"k\":\"fresh\"}";
    for (size_t i = 0; i < N; i++) {
        batch[i] = good;
        batch[i].source_key = key;
        batch[i].commit_lsn = 0x900000 + i;
    }
    batch[N - 1].source_key = NULL;
    size_t inserted = 99;
    ck_assert_int_eq(dw_errtable_insert(conn, batch, N, NULL, &inserted), DW_ERR_INVALID);
    q_eq(conn,
         "SELECT count(*) FROM dwasync.error WHERE key_text = '{\"k\":\"fresh\"}' AND job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'many')",
         "0");
    free(batch);
    free(rows);
    free(keys);
    PQfinish(conn);
}
END_TEST

/* Rows of large values go a few to a statement (their JSON text bounds a statement, not only
 * their count): all five 3 MB rows of one key are stored, the first open and the rest waiting
 * behind it across statements, and every JSON text field comes back as it was given. */
START_TEST(large_rows_are_stored_whole_across_statements)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "large");
    int64_t map = map_id(conn, job, "child");
    enum { N = 5, VALUE = 3 << 20 };
    char *value = dw_malloc(VALUE + 1);
    memset(value, 'x', VALUE);
    value[VALUE] = '\0';
    char *new_row = json_text(json_pack("{s:s,s:s}", "k", "big", "v", value));
    char *old_row = json_text(json_pack("{s:s,s:s}", "k", "big", "v", "before"));
    struct dw_errrow rows[N];
    for (size_t i = 0; i < N; i++)
        rows[i] = (struct dw_errrow){.job_id = job,
                                     .map_id = map,
                                     .map_name = "child",
                                     .source_schema = "public",
                                     .source_table = "custtable",
                                     .op = DW_CHANGE_UPDATE,
                                     .source_key = "{\"k\":\"big\"}",
                                     .new_row = new_row,
                                     .old_row = old_row,
                                     .unchanged = "[\"memo\"]",
                                     .payload = "{\"name\":\"sent\",\"n\":1.5}",
                                     .commit_lsn = 0xA000 + i,
                                     .http_status = 400,
                                     .message = "too big",
                                     .error_class = DW_ERRCLASS_VALIDATION};
    size_t inserted = 0;
    ck_assert_int_eq(dw_errtable_insert(conn, rows, N, NULL, &inserted), DW_OK);
    ck_assert_uint_eq(inserted, N);
    q_eq(conn,
         "SELECT string_agg(concat_ws('/', status, length(source_row->'new'->>'v'), "
         "source_row->'old'->>'v', source_row->'unchanged'->>0, payload::text, "
         "source_key->>'k'), ' ' ORDER BY commit_lsn) FROM dwasync.error "
         "WHERE job_id = (SELECT id FROM dwasync.job WHERE name = 'large')",
         "open/3145728/before/memo/{\"n\": 1.5, \"name\": \"sent\"}/big "
         "waiting/3145728/before/memo/{\"n\": 1.5, \"name\": \"sent\"}/big "
         "waiting/3145728/before/memo/{\"n\": 1.5, \"name\": \"sent\"}/big "
         "waiting/3145728/before/memo/{\"n\": 1.5, \"name\": \"sent\"}/big "
         "waiting/3145728/before/memo/{\"n\": 1.5, \"name\": \"sent\"}/big");
    free(value);
    free(new_row);
    free(old_row);
    PQfinish(conn);
}
END_TEST

START_TEST(inserts_are_idempotent_and_decide_status)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "idem");
    int64_t map = map_id(conn, job, "child");
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    ck_assert_uint_eq(insert_rows(conn, job, map, basic, 4, blocked), 4);
    ck_assert_uint_eq(insert_rows(conn, job, map, basic, 4, blocked), 0);
    q_eq(conn,
         "SELECT string_agg(key_text || ':' || status, ',' ORDER BY commit_lsn, position) "
         "FROM dwasync.error e JOIN dwasync.job j ON j.id = e.job_id WHERE j.name = 'idem'",
         "{\"k\":\"A\"}:open,{\"k\":\"A\"}:waiting,{\"k\":\"B\"}:open,{\"k\":\"A\"}:waiting");
    /* The stored row keeps every field. */
    q_eq(conn,
         "SELECT concat_ws('|', commit_lsn, xid, commit_time AT TIME ZONE 'UTC', position, "
         "http_status, dv_code, class, attempts, source_row->'new'->>'v', operation) "
         "FROM dwasync.error WHERE commit_lsn = '0/100' AND key_text = '{\"k\":\"A\"}' "
         "AND job_id = (SELECT id FROM dwasync.job WHERE name = 'idem')",
         "0/100|700|2026-11-18 11:06:40.123456|0|400|0x80044331|validation|1|a1|update");
    ck_assert(dw_blocked_keys_contains(blocked, map, "{\"k\":\"A\"}"));
    ck_assert(dw_blocked_keys_contains(blocked, map, "{\"k\":\"B\"}"));
    ck_assert(!dw_blocked_keys_contains(blocked, map, "{\"k\":\"C\"}"));
    ck_assert(!dw_blocked_keys_contains(blocked, map + 1, "{\"k\":\"A\"}"));
    dw_blocked_keys_free(blocked);

    /* A later change to a blocked key waits even if the caller did not say so. */
    const struct row_spec later[] = {{"B", 0x400, 0, "b2", false, DW_ERRCLASS_VALIDATION}};
    ck_assert_uint_eq(insert_rows(conn, job, map, later, 1, NULL), 1);
    q_eq(conn,
         "SELECT status FROM dwasync.error WHERE commit_lsn = '0/400' AND job_id = (SELECT id "
         "FROM dwasync.job WHERE name = 'idem')",
         "waiting");

    /* Secrets a caller let through never reach the table. */
    dw_redact_register("Tr0ub4dor&3-secret");
    const char *key = "{\"k\":\"SECRET\"}";
    const char *payload = "{\"name\":\"has Tr0ub4dor&3-secret\",\"password\":\"pw\"}";
    struct dw_errrow leaky = {.job_id = job,
                              .map_id = map,
                              .source_schema = "public",
                              .source_table = "custtable",
                              .source_key = key,
                              .payload = payload,
                              .commit_lsn = 0x800,
                              .message = "rejected Tr0ub4dor&3-secret",
                              .error_class = DW_ERRCLASS_UNKNOWN};
    ck_assert_int_eq(dw_errtable_insert(conn, &leaky, 1, NULL, NULL), DW_OK);
    q_eq(conn,
         "SELECT message || ' ' || payload::text FROM dwasync.error WHERE commit_lsn = '0/800' "
         "AND job_id = (SELECT id FROM dwasync.job WHERE name = 'idem')",
         "rejected [REDACTED] {\"name\": \"has [REDACTED]\", \"password\": \"[REDACTED]\"}");
    dw_redact_clear();

    /* A row without a source key is refused before anything is written. */
    struct dw_errrow bad = {
        .job_id = job, .map_id = map, .source_schema = "public", .source_table = "t"};
    ck_assert_int_eq(dw_errtable_insert(conn, &bad, 1, NULL, NULL), DW_ERR_INVALID);
    PQfinish(conn);
}
END_TEST

/* The set holds many keys through growth and removals (backward shifts), tells keys apart
 * by map id and text (the map id is not a mere prefix of the text), and takes long keys. */
START_TEST(blocked_keys_are_a_set)
{
    enum { N = 20000 };
    struct dw_blocked_keys *set = dw_blocked_keys_new();
    char key[64];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "accounts(accountnumber='C%05d')", i);
        dw_blocked_keys_add(set, 1 + i % 2, key);
        dw_blocked_keys_add(set, 1 + i % 2, key); /* twice is once */
    }
    ck_assert_uint_eq(dw_blocked_keys_count(set), N);
    for (int i = 0; i < N; i += 3) {
        snprintf(key, sizeof key, "accounts(accountnumber='C%05d')", i);
        dw_blocked_keys_remove(set, 1 + i % 2, key);
    }
    ck_assert_uint_eq(dw_blocked_keys_count(set), N - (N + 2) / 3);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "accounts(accountnumber='C%05d')", i);
        ck_assert_msg(dw_blocked_keys_contains(set, 1 + i % 2, key) == (i % 3 != 0), "key %d", i);
        ck_assert(!dw_blocked_keys_contains(set, 2 - i % 2, key));
    }
    dw_blocked_keys_add(set, 1, "2:x");
    ck_assert(!dw_blocked_keys_contains(set, 12, "x"));
    char *long_key = dw_asprintf("%0600d", 7);
    dw_blocked_keys_add(set, 3, long_key);
    ck_assert(dw_blocked_keys_contains(set, 3, long_key));
    long_key[10] = '1';
    ck_assert(!dw_blocked_keys_contains(set, 3, long_key));
    free(long_key);
    dw_blocked_keys_free(set);
}
END_TEST

START_TEST(blocked_keys_survive_a_restart)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "restart");
    int64_t map = map_id(conn, job, "child");
    ck_assert_uint_eq(insert_rows(conn, job, map, basic, 4, NULL), 4);
    PQfinish(conn);

    /* A new process: a new connection and an empty set, rebuilt from the table. */
    conn = connect_db();
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    dw_blocked_keys_add(blocked, 99, "stale");
    ck_assert_int_eq(dw_errtable_load_blocked(conn, job, blocked), DW_OK);
    ck_assert_uint_eq(dw_blocked_keys_count(blocked), 2);
    ck_assert(dw_blocked_keys_contains(blocked, map, "{\"k\":\"A\"}"));
    ck_assert(dw_blocked_keys_contains(blocked, map, "{\"k\":\"B\"}"));
    ck_assert(!dw_blocked_keys_contains(blocked, 99, "stale"));
    dw_blocked_keys_remove(blocked, map, "{\"k\":\"A\"}");
    ck_assert_uint_eq(dw_blocked_keys_count(blocked), 1);
    dw_blocked_keys_free(blocked);
    PQfinish(conn);
}
END_TEST

START_TEST(replay_applies_head_then_followers_once)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "order");
    int64_t map = map_id(conn, job, "child");
    insert_rows(conn, job, map, basic, 4, NULL);
    struct fake f = {0};
    struct dw_replay *r = engine_for(conn, job, &f, 8);
    ck_assert(pump(r)); /* nothing queued yet */
    ck_assert_str_eq(f.sent, "");

    /* Replaying a follower queues its key from the head. */
    q_eq(conn,
         "SELECT dwasync.replay_error(id) FROM dwasync.error WHERE commit_lsn = '0/200' "
         "AND position = 0 AND job_id = (SELECT id FROM dwasync.job WHERE name = 'order')",
         "3");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a1;A=a2;A=a3;");
    ck_assert_str_eq(f.unblocked, "{\"k\":\"A\"};");
    q_eq(conn,
         "SELECT string_agg(status || '/' || coalesce(resolved_by, '-'), ',' ORDER BY "
         "commit_lsn, position) FROM dwasync.error WHERE job_id = (SELECT id FROM dwasync.job "
         "WHERE name = 'order')",
         "resolved/postgres,resolved/postgres,open/-,resolved/postgres");

    /* Twice is once: nothing more is queued or sent. */
    q_eq(conn,
         "SELECT sum(dwasync.replay_error(id)) FROM dwasync.error WHERE job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'order') AND key_text = '{\"k\":\"A\"}'",
         "0");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a1;A=a2;A=a3;");
    struct dw_replay_stats st;
    dw_replay_get_stats(r, &st);
    ck_assert_uint_eq(st.dispatched, 3);
    ck_assert_uint_eq(st.resolved, 3);
    ck_assert_uint_eq(st.unblocked, 1);
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

START_TEST(failed_replay_goes_back_to_open_then_fix_and_replay)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "again");
    int64_t map = map_id(conn, job, "child");
    const struct row_spec rows[] = {
        {"K", 0x100, 0, "bad", false, DW_ERRCLASS_VALIDATION},
        {"K", 0x200, 0, "k2", true, DW_ERRCLASS_NONE},
        {"M", 0x300, 0, "unmappable", false, DW_ERRCLASS_MAPPING},
    };
    insert_rows(conn, job, map, rows, 3, NULL);
    struct fake f = {.reject_bad = true};
    struct dw_replay *r = engine_for(conn, job, &f, 4);
    q_eq(conn, "SELECT dwasync.replay_errors('again')", "3");
    ck_assert(pump(r));
    /* The head failed again: its follower was not sent; the mapping error stays a mapping
     * error and sends nothing. */
    ck_assert_str_eq(f.sent, "K=bad;");
    q_eq(conn,
         "SELECT string_agg(concat_ws('/', status, attempts, class, http_status, dv_code, message, "
         "payload, target_id), ',' ORDER BY commit_lsn) FROM dwasync.error WHERE job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'again')",
         "open/2/validation/400/0x80044331/still too long/{\"v\": \"bad\"}/accounts(k),"
         "waiting/0/,"
         "open/2/mapping/column \"v\": value \"unmappable\" is not in the value map");
    ck_assert_str_eq(f.unblocked, "");

    /* The operator fixes the cause and replays: the head and then its follower go through. */
    f.reject_bad = false;
    q_eq(conn, "SELECT dwasync.replay_errors('again', 'custtable', '0x80044331')", "2");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "K=bad;K=bad;K=k2;");
    q_eq(conn,
         "SELECT count(*) FROM dwasync.error WHERE status = 'resolved' AND job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'again')",
         "2");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

START_TEST(skip_releases_followers)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "skip");
    int64_t map = map_id(conn, job, "child");
    const struct row_spec rows[] = {
        {"S", 0x100, 0, "s1", false, DW_ERRCLASS_VALIDATION},
        {"S", 0x200, 0, "s2", true, DW_ERRCLASS_NONE},
        {"S", 0x300, 0, "filtered", true, DW_ERRCLASS_NONE},
        {"S", 0x400, 0, "s4", true, DW_ERRCLASS_NONE},
    };
    insert_rows(conn, job, map, rows, 4, NULL);
    struct fake f = {0};
    struct dw_replay *r = engine_for(conn, job, &f, 4);
    /* Skipping a waiting row only takes it out of the queue. */
    q_eq(conn,
         "SELECT dwasync.skip_error(id, 'duplicate of s2') FROM dwasync.error "
         "WHERE commit_lsn = '0/400' AND job_id = (SELECT id FROM dwasync.job WHERE name = "
         "'skip')",
         "0");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "");
    /* Skipping the head makes the next row the head, queued; the engine applies the rest. */
    q_eq(conn,
         "SELECT dwasync.skip_error(id, 'customer was deleted in F&O') FROM dwasync.error "
         "WHERE commit_lsn = '0/100' AND job_id = (SELECT id FROM dwasync.job WHERE name = "
         "'skip')",
         "2");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "S=s2;"); /* the filtered row has nothing to send */
    ck_assert_str_eq(f.unblocked, "{\"k\":\"S\"};");
    q_eq(conn,
         "SELECT string_agg(status || ':' || coalesce(skip_reason, '-'), ',' ORDER BY "
         "commit_lsn) FROM dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE name "
         "= 'skip')",
         "skipped:customer was deleted in F&O,resolved:-,resolved:-,skipped:duplicate of s2");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

START_TEST(late_completions_keep_one_write_per_key)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "late");
    int64_t child = map_id(conn, job, "child");
    int64_t parent = map_id(conn, job, "parent");
    const struct row_spec crows[] = {
        {"C", 0x100, 0, "c1", false, DW_ERRCLASS_MISSING_PARENT},
        {"C", 0x300, 0, "c2", true, DW_ERRCLASS_NONE},
    };
    const struct row_spec prows[] = {{"P", 0x200, 0, "p1", false, DW_ERRCLASS_VALIDATION}};
    insert_rows(conn, job, child, crows, 2, NULL);
    insert_rows(conn, job, parent, prows, 1, NULL);
    struct fake f = {.defer = true};
    struct dw_replay *r = engine_for(conn, job, &f, 8);
    q_eq(conn, "SELECT dwasync.replay_errors('late')", "3");

    /* Sequence levels: the parent (sequence 1) goes first, the child waits for it. */
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "P=p1;");
    ck_assert_uint_eq(dw_replay_in_flight(r), 1);
    ck_assert(!pump(r)); /* nothing new while the parent is in flight */
    ck_assert_str_eq(f.sent, "P=p1;");
    fake_complete_all(&f);
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "P=p1;C=c1;");
    /* One write per key: the follower is not sent before its head completes. */
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "P=p1;C=c1;");
    fake_complete_all(&f);
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "P=p1;C=c1;C=c2;");
    fake_complete_all(&f);
    ck_assert(pump(r));
    ck_assert_uint_eq(dw_replay_in_flight(r), 0);
    q_eq(conn,
         "SELECT count(*) FROM dwasync.error WHERE status <> 'resolved' AND job_id = (SELECT id "
         "FROM dwasync.job WHERE name = 'late')",
         "0");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

START_TEST(queues_left_without_a_head_are_healed)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "orphan");
    int64_t map = map_id(conn, job, "child");
    insert_rows(conn, job, map, basic, 4, NULL);
    /* A crash between a replay and a re-streamed window can leave waiting rows alone. */
    exec_ok(conn, "UPDATE dwasync.error SET status = 'resolved', resolved_at = now() WHERE "
                  "commit_lsn = '0/100' AND job_id = (SELECT id FROM dwasync.job WHERE name = "
                  "'orphan')");
    /* A parked row whose blocker is gone becomes a queued head on insert. */
    const struct row_spec parked[] = {{"Z", 0x500, 0, "z1", true, DW_ERRCLASS_NONE}};
    insert_rows(conn, job, map, parked, 1, NULL);
    q_eq(conn,
         "SELECT status FROM dwasync.error WHERE commit_lsn = '0/500' AND job_id = (SELECT id "
         "FROM dwasync.job WHERE name = 'orphan')",
         "replaying");
    struct fake f = {0};
    struct dw_replay *r = engine_for(conn, job, &f, 2);
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a2;Z=z1;A=a3;");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

/* With writes in flight, the heads a pump claims wait for the next pump, which sends them
 * while the server resolves the answers that woke it; the session is free between pumps. */
START_TEST(claimed_heads_go_with_the_next_answers)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "turns");
    const struct row_spec rows[] = {
        {"A", 0x100, 0, "a", false, DW_ERRCLASS_VALIDATION},
        {"B", 0x200, 0, "b", false, DW_ERRCLASS_VALIDATION},
        {"C", 0x300, 0, "c", false, DW_ERRCLASS_VALIDATION},
        {"D", 0x400, 0, "d", false, DW_ERRCLASS_VALIDATION},
        {"E", 0x500, 0, "e", false, DW_ERRCLASS_VALIDATION},
        {"F", 0x600, 0, "f", false, DW_ERRCLASS_VALIDATION},
    };
    insert_rows(conn, job, map_id(conn, job, "child"), rows, 6, NULL);
    q_eq(conn, "SELECT dwasync.replay_errors('turns')", "6");
    struct fake f = {.defer = true};
    struct dw_replay *r = engine_for(conn, job, &f, 4);
    ck_assert(!pump(r)); /* nothing in flight: the four claimed go at once */
    ck_assert_str_eq(f.sent, "A=a;B=b;C=c;D=d;");
    fake_complete_first(&f, 2);
    ck_assert(!pump(r)); /* A and B resolved; E and F claimed, waiting */
    ck_assert_str_eq(f.sent, "A=a;B=b;C=c;D=d;");
    const char *statuses =
        "SELECT string_agg(concat(source_row->'new'->>'v', '=', status), ',' ORDER BY "
        "commit_lsn) FROM dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE "
        "name = 'turns')";
    q_eq(conn, statuses, "a=resolved,b=resolved,c=replaying,d=replaying,e=replaying,f=replaying");
    fake_complete_first(&f, 2);
    ck_assert(!pump(r)); /* C and D resolved while E and F are sent */
    ck_assert_str_eq(f.sent, "A=a;B=b;C=c;D=d;E=e;F=f;");
    fake_complete_all(&f);
    ck_assert(pump(r));
    q_eq(conn, statuses, "a=resolved,b=resolved,c=resolved,d=resolved,e=resolved,f=resolved");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

/* replay_errors() queues each key once: the earliest open row becomes its head, its
 * followers count, a key already being replayed is left alone, a second call queues
 * nothing, and the job's runner is notified once. */
START_TEST(replay_errors_queues_each_key_once)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "bulkq");
    int64_t map = map_id(conn, job, "child");
    const struct row_spec rows[] = {
        {"K", 0x100, 0, "k1", false, DW_ERRCLASS_VALIDATION},
        {"K", 0x200, 0, "k2", true, DW_ERRCLASS_NONE},
        {"K", 0x300, 0, "k3", true, DW_ERRCLASS_NONE},
        {"L", 0x400, 0, "l1", false, DW_ERRCLASS_MAPPING},
        {"M", 0x500, 0, "m1", false, DW_ERRCLASS_VALIDATION},
        {"M", 0x600, 0, "m2", true, DW_ERRCLASS_NONE},
    };
    insert_rows(conn, job, map, rows, 6, NULL);
    const char *statuses =
        "SELECT string_agg(concat(source_row->'new'->>'v', '=', status), ',' ORDER BY "
        "commit_lsn) FROM dwasync.error WHERE job_id = (SELECT id FROM "
        "dwasync.job WHERE name = 'bulkq')";
    /* M is being replayed already (queued by one row's replay). */
    q_eq(conn,
         "SELECT dwasync.replay_error(id) FROM dwasync.error WHERE source_row->'new'->>'v' = 'm1' "
         "AND "
         "job_id = (SELECT id FROM dwasync.job WHERE name = 'bulkq')",
         "2");
    ck_assert_int_eq(dw_errtable_listen(conn), DW_OK);
    q_eq(conn, "SELECT dwasync.replay_errors('bulkq', NULL, NULL, 'validation')", "3");
    q_eq(conn, statuses, "k1=replaying,k2=waiting,k3=waiting,l1=open,m1=replaying,m2=waiting");
    int notes = 0;
    PGnotify *nf;
    ck_assert_int_eq(PQconsumeInput(conn), 1);
    while ((nf = PQnotifies(conn)) != NULL) {
        notes += strcmp(nf->relname, "dwasync_replay") == 0 && strcmp(nf->extra, "bulkq") == 0;
        PQfreemem(nf);
    }
    ck_assert_int_eq(notes, 1);
    q_eq(conn, "SELECT dwasync.replay_errors('bulkq')", "1");
    q_eq(conn, statuses, "k1=replaying,k2=waiting,k3=waiting,l1=replaying,m1=replaying,m2=waiting");
    q_eq(conn, "SELECT dwasync.replay_errors('bulkq')", "0");
    PQfinish(conn);
}
END_TEST

/* replay_errors_chunk() (`errors replay --all`, in chunks) queues at most its limit of keys,
 * parents' before children's whatever their commit order, and leaves out the rows queued
 * since the time it is given: a row failed again after this command queued it is not queued
 * twice, so the command's loop ends. */
START_TEST(replay_chunks_go_parents_first_and_never_twice)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "chunked");
    const struct row_spec children[] = {
        {"C1", 0x100, 0, "c1", false, DW_ERRCLASS_VALIDATION},
        {"C2", 0x200, 0, "c2", false, DW_ERRCLASS_VALIDATION},
    };
    const struct row_spec parents[] = {
        {"P1", 0x300, 0, "p1", false, DW_ERRCLASS_VALIDATION},
        {"P2", 0x400, 0, "p2", false, DW_ERRCLASS_VALIDATION},
    };
    insert_rows(conn, job, map_id(conn, job, "child"), children, 2, NULL);
    insert_rows(conn, job, map_id(conn, job, "parent"), parents, 2, NULL);
    const char *statuses =
        "SELECT string_agg(concat(source_row->'new'->>'v', '=', status), ',' ORDER BY "
        "commit_lsn) FROM dwasync.error WHERE job_id = (SELECT id FROM "
        "dwasync.job WHERE name = 'chunked')";
    char *since = q(conn, "SELECT clock_timestamp()::text");
    char *chunk1 = dw_asprintf(
        "SELECT dwasync.replay_errors_chunk('chunked', NULL, NULL, NULL, '%s', 1)", since);
    char *chunk10 = dw_asprintf(
        "SELECT dwasync.replay_errors_chunk('chunked', NULL, NULL, NULL, '%s', 10)", since);
    q_eq(conn, chunk1, "1");
    q_eq(conn, statuses, "c1=open,c2=open,p1=replaying,p2=open");
    q_eq(conn, chunk1, "1");
    q_eq(conn, statuses, "c1=open,c2=open,p1=replaying,p2=replaying");
    /* The daemon fails p1 again: it is open, queued by this command. */
    q_eq(conn,
         "SELECT dwasync.replay_failed(id, 'validation', 400, '0x1', 'again', NULL, NULL, NULL) "
         "FROM dwasync.error WHERE source_row->'new'->>'v' = 'p1' AND job_id = (SELECT id FROM "
         "dwasync.job WHERE name = 'chunked')",
         "t");
    q_eq(conn, chunk10, "2");
    q_eq(conn, statuses, "c1=replaying,c2=replaying,p1=open,p2=replaying");
    q_eq(conn, chunk10, "0");
    /* Without a time, as replay_errors(): p1 is queued again. */
    q_eq(conn, "SELECT dwasync.replay_errors('chunked')", "1");
    q_eq(conn, statuses, "c1=replaying,c2=replaying,p1=replaying,p2=replaying");
    free(chunk1);
    free(chunk10);
    free(since);
    PQfinish(conn);
}
END_TEST

/* dwasync's sessions, control and source, run without JIT: their statements are short, and
 * a claim over a queue freshly changed was estimated high enough to compile for 330 ms. */
START_TEST(sessions_run_without_jit)
{
    PGconn *control = connect_db();
    q_eq(control, "SHOW jit", "off");
    PGconn *source = NULL;
    ck_assert_int_eq(dw_stream_connect(conninfo, false, "test", &source), DW_OK);
    q_eq(source, "SHOW jit", "off");
    PQfinish(source);
    PQfinish(control);
}
END_TEST

/* The end of the last commit a stream dispatched. */
static dw_rc note_commit(void *user, const struct dw_txn *t)
{
    *(dw_lsn *)user = t->end_lsn;
    return DW_OK;
}

/* The replay horizon reads the slot (errtable.h): a closed stream has left its slot free and
 * confirmed where it last reported, before the close returns, so that a command run right
 * after a `dwasync run` finds the daemon's position there, whether the walsender has been
 * scheduled since or not. */
START_TEST(closed_stream_leaves_its_slot_confirmed)
{
    PGconn *conn = connect_db();
    exec_ok(conn, "CREATE TABLE closing (id int PRIMARY KEY)");
    exec_ok(conn, "CREATE PUBLICATION closing_pub FOR TABLE closing");
    exec_ok(conn, "SELECT pg_create_logical_replication_slot('closing_slot', 'pgoutput')");
    exec_ok(conn, "INSERT INTO closing VALUES (1)");
    dw_lsn end = 0;
    const struct dw_stream_handler h = {.user = &end, .commit = note_commit};
    const struct dw_stream_options o = {
        .conninfo = conninfo, .slot = "closing_slot", .publication = "closing_pub"};
    struct dw_stream *s = NULL;
    ck_assert_int_eq(dw_stream_open(&o, &h, &s), DW_OK);
    while (end == 0) {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(dw_stream_fd(s), &readable);
        struct timeval wait = {1, 0}; /* a bound on each wait, not on the test */
        (void)select(dw_stream_fd(s) + 1, &readable, NULL, NULL, &wait);
        ck_assert_int_eq(dw_stream_step(s, 100), DW_OK);
    }
    dw_stream_confirm(s, end, true);
    dw_stream_close(s);
    char *sql = dw_asprintf("SELECT active::text || ' ' || (confirmed_flush_lsn >= '%X/%X')::text "
                            "FROM pg_replication_slots WHERE slot_name = 'closing_slot'",
                            DW_LSN_ARGS(end));
    q_eq(conn, sql, "false true");
    free(sql);
    exec_ok(conn, "SELECT pg_drop_replication_slot('closing_slot')");
    exec_ok(conn, "DROP PUBLICATION closing_pub");
    exec_ok(conn, "DROP TABLE closing");
    PQfinish(conn);
}
END_TEST

START_TEST(notify_reaches_the_listening_daemon)
{
    PGconn *daemon = connect_db();
    PGconn *op = connect_db();
    int64_t job = make_job(op, "notify");
    int64_t map = map_id(op, job, "child");
    insert_rows(op, job, map, basic, 3, NULL);
    int n = -1;
    ck_assert_int_eq(dw_errtable_listeners(op, "notify", &n), DW_OK);
    ck_assert_int_eq(n, 0);
    /* The active runner: it holds the job lock and listens. */
    struct dw_ha ha;
    bool active = false;
    dw_ha_init(&ha, daemon, job, 0);
    ck_assert_int_eq(dw_ha_try(&ha, 0, &active), DW_OK);
    ck_assert(active);
    ck_assert_int_eq(dw_errtable_listen(daemon), DW_OK);
    ck_assert_int_eq(dw_errtable_listeners(op, "notify", &n), DW_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(dw_errtable_listeners(op, "idem", &n), DW_OK);
    ck_assert_int_eq(n, 0);

    /* Another job's request does not count. (Sent from the listening session itself, so
     * it has certainly arrived when the call returns.) */
    int64_t other = make_job(op, "notify_other");
    int64_t other_map = map_id(op, other, "child");
    insert_rows(op, other, other_map, basic, 1, NULL);
    q_eq(daemon,
         "SELECT dwasync.replay_error(min(id)) FROM dwasync.error WHERE job_id = (SELECT id FROM "
         "dwasync.job WHERE name = 'notify_other')",
         "1");
    bool requested = true;
    ck_assert_int_eq(dw_errtable_poll_requests(daemon, "notify", true, &requested), DW_OK);
    ck_assert(!requested);

    /* A request that arrived while the session answered another statement: libpq took it in
     * with that answer, the socket shows nothing, and a poll without reading finds it. */
    q_eq(daemon,
         "SELECT dwasync.replay_error(min(id)) FROM dwasync.error WHERE job_id = (SELECT id FROM "
         "dwasync.job WHERE name = 'notify') AND source_key->>'k' = 'B'",
         "1");
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(PQsocket(daemon), &readable);
    struct timeval now = {0, 0};
    ck_assert_int_eq(select(PQsocket(daemon) + 1, &readable, NULL, NULL, &now), 0);
    ck_assert_int_eq(dw_errtable_poll_requests(daemon, "notify", false, &requested), DW_OK);
    ck_assert(requested);

    /* This job's request, from the operator's session, does. */
    q_eq(op,
         "SELECT dwasync.replay_error(min(id)) FROM dwasync.error WHERE job_id = (SELECT id FROM "
         "dwasync.job WHERE name = 'notify')",
         "2");
    requested = false;
    for (int i = 0; i < 50 && !requested; i++) {
        int sock = PQsocket(daemon);
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(sock, &fds);
        struct timeval tv = {0, 100000};
        (void)select(sock + 1, &fds, NULL, NULL, &tv);
        ck_assert_int_eq(dw_errtable_poll_requests(daemon, "notify", true, &requested), DW_OK);
    }
    ck_assert(requested);
    /* Every notification was read: nothing is left over. */
    ck_assert_int_eq(dw_errtable_poll_requests(daemon, NULL, true, &requested), DW_OK);
    ck_assert(!requested);
    /* Released before the lock's session is closed: a command run right after a runner has
     * stopped finds no runner, although its backend may not have exited yet. */
    dw_ha_cleanup(&ha);
    ck_assert_int_eq(dw_errtable_listeners(op, "notify", &n), DW_OK);
    ck_assert_int_eq(n, 0);
    PQfinish(daemon);
    PQfinish(op);
}
END_TEST

START_TEST(alert_rule_pauses_the_job)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "alert");
    int64_t map = map_id(conn, job, "child");
    struct dw_alert_state a;
    ck_assert_int_eq(dw_errtable_alert_check(conn, job, &a), DW_OK);
    ck_assert(!a.enabled);
    ck_assert(!a.tripped);
    /* A malformed rule is refused by the table. */
    PGresult *res = PQexec(conn, "UPDATE dwasync.job SET options = "
                                 "'{\"pause_on_errors\": {\"errors\": \"ten\"}}' "
                                 "WHERE name = 'alert'");
    ck_assert_int_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    exec_ok(conn, "UPDATE dwasync.job SET state = 'active', options = "
                  "'{\"pause_on_errors\": {\"errors\": 2, \"minutes\": 15}}' WHERE name = "
                  "'alert'");
    insert_rows(conn, job, map, basic, 4, NULL); /* 2 failures, 2 parked rows */
    ck_assert_int_eq(dw_errtable_alert_check(conn, job, &a), DW_OK);
    ck_assert(a.enabled);
    ck_assert_int_eq(a.max_errors, 2);
    ck_assert_int_eq(a.minutes, 15);
    ck_assert_int_eq(a.errors_in_window, 2);
    ck_assert(!a.tripped); /* more than 2 are needed */
    bool paused = true;
    ck_assert_int_eq(dw_errtable_alert_enforce(conn, job, &paused), DW_OK);
    ck_assert(!paused);
    const struct row_spec more[] = {{"X", 0x900, 0, "x", false, DW_ERRCLASS_PRIVILEGE}};
    insert_rows(conn, job, map, more, 1, NULL);
    /* Failures older than the window do not count. */
    exec_ok(conn, "UPDATE dwasync.error SET last_failed_at = now() - interval '1 hour' WHERE "
                  "commit_lsn = '0/100' AND job_id = (SELECT id FROM dwasync.job WHERE name = "
                  "'alert')");
    ck_assert_int_eq(dw_errtable_alert_check(conn, job, &a), DW_OK);
    ck_assert(!a.tripped);
    exec_ok(conn, "UPDATE dwasync.error SET last_failed_at = now() WHERE job_id = "
                  "(SELECT id FROM dwasync.job WHERE name = 'alert')");
    ck_assert_int_eq(dw_errtable_alert_check(conn, job, &a), DW_OK);
    ck_assert_int_eq(a.errors_in_window, 3);
    ck_assert(a.tripped);
    ck_assert_int_eq(dw_errtable_alert_enforce(conn, job, &paused), DW_OK);
    ck_assert(paused);
    q_eq(conn, "SELECT state || ': ' || state_reason FROM dwasync.job WHERE name = 'alert'",
         "paused: alert rule: 3 errors in the last 15 minutes (more than 2)");
    q_eq(conn,
         "SELECT alert_rule || '|' || alert_tripped FROM dwasync.job_status WHERE job = "
         "'alert'",
         "pause if more than 2 errors in 15 minutes|true");
    /* Already paused: nothing more happens. */
    ck_assert_int_eq(dw_errtable_alert_enforce(conn, job, &paused), DW_OK);
    ck_assert(!paused);
    PQfinish(conn);
}
END_TEST

/* The one-row helpers the control modules share (pg.h): one row or an error, logged. */
START_TEST(one_row_queries_refuse_any_other_count)
{
    PGconn *conn = connect_db();
    PGresult *res = NULL;
    int64_t n = -1;
    ck_assert_int_eq(dw_pg_query_row(conn, "t", "SELECT 1, 'a'", 0, NULL, &res), DW_OK);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "a");
    PQclear(res);
    res = NULL;
    ck_assert_int_eq(dw_pg_query_row(conn, "t", "SELECT 1 WHERE false", 0, NULL, &res), DW_ERR_PG);
    ck_assert_ptr_null(res);
    const char *two[] = {"2"};
    ck_assert_int_eq(dw_pg_query_int(conn, "t", "SELECT generate_series(1, $1::int)", 1, two, &n),
                     DW_ERR_PG);
    ck_assert_int_eq(n, -1);
    ck_assert_int_eq(dw_pg_query_int(conn, "t", "SELECT 9000000000::bigint", 0, NULL, &n), DW_OK);
    ck_assert_int_eq(n, INT64_C(9000000000));
    ck_assert_int_eq(dw_pg_query_int(conn, "t", "SELECT NULL::int", 0, NULL, &n), DW_OK);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(dw_pg_query_int(conn, "t", "SELECT no_such_column", 0, NULL, &n), DW_ERR_PG);
    PQfinish(conn);
}
END_TEST

START_TEST(retention_never_purges_unresolved_rows)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "purge");
    int64_t map = map_id(conn, job, "child");
    const struct row_spec rows[] = {
        {"R", 0x100, 0, "r1", false, DW_ERRCLASS_VALIDATION},
        {"Q", 0x200, 0, "q1", false, DW_ERRCLASS_VALIDATION},
        {"Q", 0x300, 0, "q2", true, DW_ERRCLASS_NONE},
        {"T", 0x400, 0, "t1", false, DW_ERRCLASS_VALIDATION},
        {"U", 0x500, 0, "u1", false, DW_ERRCLASS_VALIDATION},
    };
    insert_rows(conn, job, map, rows, 5, NULL);
    exec_ok(conn, "SELECT dwasync.skip_error(id, 'old') FROM dwasync.error WHERE commit_lsn IN "
                  "('0/100', '0/400') AND job_id = (SELECT id FROM dwasync.job WHERE name = "
                  "'purge')");
    /* Everything is 40 days old; R and T are skipped, Q open with a follower, U open. */
    exec_ok(conn, "UPDATE dwasync.error SET first_failed_at = now() - interval '40 days', "
                  "last_failed_at = now() - interval '40 days', resolved_at = CASE WHEN "
                  "commit_lsn = '0/400' THEN now() - interval '2 days' ELSE now() - interval "
                  "'40 days' END WHERE job_id = (SELECT id FROM dwasync.job WHERE name = "
                  "'purge') AND status <> 'replaying'");
    int64_t purged = -1;
    ck_assert_int_eq(dw_errtable_purge(conn, job, 30, &purged), DW_OK);
    ck_assert_int_eq(purged, 1);
    ck_assert_int_eq(dw_errtable_purge(conn, job, 1, &purged), DW_OK);
    ck_assert_int_eq(purged, 1);
    ck_assert_int_eq(dw_errtable_purge(conn, job, 0, &purged), DW_OK);
    ck_assert_int_eq(purged, 0);
    q_eq(conn,
         "SELECT string_agg(key_text || ':' || status, ',' ORDER BY commit_lsn) FROM "
         "dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE name = 'purge')",
         "{\"k\":\"Q\"}:open,{\"k\":\"Q\"}:waiting,{\"k\":\"U\"}:open");
    ck_assert_int_eq(dw_errtable_purge(conn, job, -1, &purged), DW_ERR_PG);
    PQfinish(conn);
}
END_TEST

START_TEST(a_crash_mid_replay_resends_once_in_order)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "crash");
    int64_t map = map_id(conn, job, "child");
    insert_rows(conn, job, map, basic, 4, NULL);
    q_eq(conn, "SELECT dwasync.replay_errors('crash')", "4");
    struct fake f = {.defer = true};
    struct dw_replay *r = engine_for(conn, job, &f, 8);
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "A=a1;B=b1;");
    /* kill -9: the writes may or may not have landed; nothing was recorded. */
    for (int i = 0; i < f.npending; i++)
        free(f.pending_value[i]);
    f.npending = 0;
    dw_replay_free(r);
    PQfinish(conn);

    conn = connect_db();
    q_eq(conn,
         "SELECT string_agg(status, ',' ORDER BY commit_lsn, position) FROM dwasync.error WHERE "
         "job_id = (SELECT id FROM dwasync.job WHERE name = 'crash')",
         "replaying,waiting,replaying,waiting");
    struct fake g = {0};
    r = engine_for(conn, job, &g, 8);
    ck_assert(pump(r));
    /* Each head is sent again exactly once (PATCH by key makes that harmless), then the
     * followers in commit order; no row is duplicated. */
    ck_assert_str_eq(g.sent, "A=a1;B=b1;A=a2;A=a3;");
    q_eq(conn,
         "SELECT count(*) || '/' || count(DISTINCT (commit_lsn, position)) || '/' || "
         "bool_and(status = 'resolved') FROM dwasync.error WHERE job_id = (SELECT id FROM "
         "dwasync.job WHERE name = 'crash')",
         "4/4/true");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

/* Sets the job's checkpoint (it may move back here: the test plays the stream). */
static void set_checkpoint(PGconn *conn, int64_t job, const char *lsn)
{
    char *sql = dw_asprintf("UPDATE dwasync.checkpoint SET confirmed_lsn = '%s' "
                            "WHERE job_id = %" PRId64,
                            lsn, job);
    exec_ok(conn, sql);
    free(sql);
}

/* Rows the checkpoint has not passed (stored while a missing-parent retry held it back)
 * are queued but not replayed: a crash would resend their changes, and one failing again
 * would find its row resolved and be skipped. Once the checkpoint passes a row it is
 * replayed; a queue goes as far as the checkpoint, its next row waits queued. */
START_TEST(replays_wait_for_the_checkpoint_to_pass_a_row)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "horizon");
    int64_t map = map_id(conn, job, "child");
    insert_rows(conn, job, map, basic, 4, NULL);
    set_checkpoint(conn, job, "0/100"); /* the row at 0/100 is resent after a crash */
    q_eq(conn, "SELECT dwasync.replay_errors('horizon')", "4");
    struct fake f = {0};
    struct dw_replay *r = engine_for(conn, job, &f, 8);
    ck_assert(pump(r)); /* nothing claimable: idle */
    ck_assert_str_eq(f.sent, "");
    const char *statuses = "SELECT string_agg(status, ',' ORDER BY commit_lsn, position) FROM "
                           "dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE "
                           "name = 'horizon')";
    q_eq(conn, statuses, "replaying,waiting,replaying,waiting");

    set_checkpoint(conn, job, "0/101"); /* past 0/100 (an end LSN), not past 0/200 */
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a1;");
    ck_assert_str_eq(f.unblocked, "");
    q_eq(conn, statuses, "resolved,replaying,replaying,waiting");

    /* The job's slot (dwasync_<job>), where the control database sees it, holds replays past its
     * confirmed position even when the checkpoint is ahead (a crash between the two). */
    set_checkpoint(conn, job, "FFFFFFFF/0");
    exec_ok(conn, "SELECT pg_create_logical_replication_slot('dwasync_horizon', 'pgoutput')");
    char *past = q(conn, "SELECT (confirmed_flush_lsn - '0/0' + 4096)::bigint "
                         "FROM pg_replication_slots WHERE slot_name = 'dwasync_horizon'");
    const struct row_spec late = {"C",   strtoull(past, NULL, 10), 0, "c1",
                                  false, DW_ERRCLASS_VALIDATION};
    free(past);
    ck_assert_uint_eq(insert_rows(conn, job, map, &late, 1, NULL), 1);
    q_eq(conn, "SELECT dwasync.replay_errors('horizon')", "1");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a1;A=a2;B=b1;A=a3;");
    exec_ok(conn, "SELECT pg_drop_replication_slot('dwasync_horizon')");
    ck_assert(pump(r));
    ck_assert_str_eq(f.sent, "A=a1;A=a2;B=b1;A=a3;C=c1;");
    ck_assert_str_eq(f.unblocked, "{\"k\":\"B\"};{\"k\":\"A\"};{\"k\":\"C\"};");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

START_TEST(skipping_a_head_in_flight_keeps_one_write_per_key)
{
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "inflight");
    int64_t map = map_id(conn, job, "child");
    insert_rows(conn, job, map, basic, 2, NULL);
    q_eq(conn, "SELECT dwasync.replay_errors('inflight')", "2");
    struct fake f = {.defer = true};
    struct dw_replay *r = engine_for(conn, job, &f, 8);
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "A=a1;");
    /* The operator skips the head while its write is in flight: its follower is queued,
     * but not sent until the write in flight has finished. */
    q_eq(conn,
         "SELECT dwasync.skip_error(min(id), 'changed my mind') FROM dwasync.error WHERE "
         "job_id = (SELECT id FROM dwasync.job WHERE name = 'inflight')",
         "1");
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "A=a1;");
    fake_complete_all(&f);
    ck_assert(!pump(r));
    ck_assert_str_eq(f.sent, "A=a1;A=a2;");
    fake_complete_all(&f);
    ck_assert(pump(r));
    q_eq(conn,
         "SELECT string_agg(status, ',' ORDER BY commit_lsn) FROM dwasync.error WHERE job_id = "
         "(SELECT id FROM dwasync.job WHERE name = 'inflight')",
         "skipped,resolved");
    dw_replay_free(r);
    PQfinish(conn);
}
END_TEST

/*
 * A model of the pipeline and an operator doing random things (seeded, so repeatable):
 * changes to free keys are applied directly or fail into the table, changes to blocked keys
 * are parked; the operator replays and skips at random; writes complete late, in random
 * order, some failing again. After every step each key's queue has exactly one head, the
 * earliest row, and every write that reached "Dataverse" for a key is later in commit order
 * than the one before it.
 */
struct model {
    struct fake f;
    struct dw_blocked_keys *blocked;
    uint64_t last_applied[6];
};

static void model_unblocked(void *user, int64_t map, const char *key_text)
{
    struct model *m = user;
    dw_blocked_keys_remove(m->blocked, map, key_text);
}

static void model_apply(struct model *m, const char *key, uint64_t lsn)
{
    int k = key[1] - '0';
    ck_assert_msg(lsn > m->last_applied[k], "key %s: %" PRIx64 " applied after %" PRIx64, key, lsn,
                  m->last_applied[k]);
    m->last_applied[k] = lsn;
}

static dw_rc model_submit(void *user, void *token, struct dw_write *w)
{
    struct model *m = user;
    ck_assert_int_lt(m->f.npending, 16);
    m->f.pending[m->f.npending] = token;
    m->f.pending_value[m->f.npending++] =
        dw_asprintf("%s %s", json_string_value(json_object_get(w->key, "k")),
                    json_string_value(json_object_get(dw_check_body(w), "v")));
    dw_write_cleanup(w); /* takes the contents: the write is left empty */
    return DW_OK;
}

static void model_complete(struct model *m, int i, bool fail)
{
    char key[8];
    unsigned long long lsn;
    ck_assert_int_eq(sscanf(m->f.pending_value[i], "%7s %llx", key, &lsn), 2);
    if (!fail)
        model_apply(m, key, lsn);
    struct dw_write_result res =
        outcome(fail, DW_ERRCLASS_CONFLICT, 409, "0x80060882", "concurrency conflict");
    dw_replay_complete(m->f.engine, m->f.pending[i], &res);
    free(m->f.pending_value[i]);
    m->f.pending[i] = m->f.pending[m->f.npending - 1];
    m->f.pending_value[i] = m->f.pending_value[m->f.npending - 1];
    m->f.npending--;
}

static void check_queues(PGconn *conn)
{
    /* Keys with unresolved rows whose head is missing, doubled or not the earliest. */
    q_eq(conn,
         "SELECT count(*) FROM (SELECT key_text, "
         "count(*) FILTER (WHERE status IN ('open', 'replaying')) AS heads, "
         "(array_agg(status ORDER BY commit_lsn))[1] AS first "
         "FROM dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE name = 'model') "
         "AND status IN ('open', 'waiting', 'replaying') GROUP BY key_text) q "
         "WHERE heads <> 1 OR first = 'waiting'",
         "0");
}

START_TEST(random_operations_keep_per_key_order)
{
    static const struct dw_replay_ops model_ops = {fake_remap, model_submit, model_unblocked};
    PGconn *conn = connect_db();
    int64_t job = make_job(conn, "model");
    int64_t map = map_id(conn, job, "child");
    struct model *m = dw_calloc(1, sizeof *m);
    exec_ok(conn, "SELECT setseed(0.42)"); /* the operator's random picks, repeatable */
    m->blocked = dw_blocked_keys_new();
    ck_assert_int_eq(dw_replay_new(conn, job, &model_ops, m, 4, &m->f.engine), DW_OK);
    srandom(20261122);
    uint64_t lsn = 0x1000;
    for (int step = 0; step < 400; step++) {
        int op = (int)(random() % 10);
        if (op < 4) { /* the pipeline: one change */
            char key[4], keytext[32], value[24];
            snprintf(key, sizeof key, "K%d", (int)(random() % 6));
            snprintf(keytext, sizeof keytext, "{\"k\":\"%s\"}", key);
            lsn += 0x10;
            snprintf(value, sizeof value, "%" PRIx64, lsn);
            bool blocked = dw_blocked_keys_contains(m->blocked, map, keytext);
            if (!blocked && random() % 2 == 0) {
                model_apply(m, key, lsn);
                continue;
            }
            const struct row_spec row = {
                key, lsn, 0, value, blocked, blocked ? DW_ERRCLASS_NONE : DW_ERRCLASS_VALIDATION};
            insert_rows(conn, job, map, &row, 1, m->blocked);
        } else if (op < 6) { /* the operator replays something */
            exec_ok(conn, "SELECT dwasync.replay_error(id) FROM dwasync.error WHERE job_id = "
                          "(SELECT id FROM dwasync.job WHERE name = 'model') AND status IN "
                          "('open', 'waiting') ORDER BY random() LIMIT 1");
        } else if (op == 6) { /* or skips something */
            exec_ok(conn, "SELECT dwasync.skip_error(id, 'model') FROM dwasync.error WHERE "
                          "job_id = (SELECT id FROM dwasync.job WHERE name = 'model') AND "
                          "status IN ('open', 'waiting', 'replaying') ORDER BY random() LIMIT 1");
        } else if (op < 9) {
            pump(m->f.engine);
        } else if (m->f.npending > 0) { /* a write finishes, perhaps failing */
            model_complete(m, (int)(random() % m->f.npending), random() % 4 == 0);
        }
        check_queues(conn);
    }
    /* Fix everything and replay it all: the queues drain and every key is free again. */
    for (int round = 0; round < 50; round++) {
        while (m->f.npending > 0)
            model_complete(m, 0, false);
        exec_ok(conn, "SELECT dwasync.replay_errors('model')");
        if (pump(m->f.engine) && m->f.npending == 0)
            break;
    }
    q_eq(conn,
         "SELECT count(*) FROM dwasync.error WHERE job_id = (SELECT id FROM dwasync.job WHERE "
         "name = 'model') AND status IN ('open', 'waiting', 'replaying')",
         "0");
    ck_assert_uint_eq(dw_blocked_keys_count(m->blocked), 0);
    struct dw_replay_stats st;
    dw_replay_get_stats(m->f.engine, &st);
    ck_assert_uint_gt(st.failed, 0); /* the model did exercise failures */
    ck_assert_uint_gt(st.unblocked, 0);
    dw_replay_free(m->f.engine);
    dw_blocked_keys_free(m->blocked);
    free(m);
    PQfinish(conn);
}
END_TEST

static Suite *errtable_suite(void)
{
    Suite *s = suite_create("errtable");
    TCase *tc = tcase_create("errtable");
    tcase_add_unchecked_fixture(tc, cluster_start, cluster_stop);
    tcase_add_test(tc, inserts_are_idempotent_and_decide_status);
    tcase_add_test(tc, many_rows_are_stored_in_statements_as_one);
    tcase_add_test(tc, large_rows_are_stored_whole_across_statements);
    tcase_add_test(tc, blocked_keys_are_a_set);
    tcase_add_test(tc, blocked_keys_survive_a_restart);
    tcase_add_test(tc, replay_applies_head_then_followers_once);
    tcase_add_test(tc, failed_replay_goes_back_to_open_then_fix_and_replay);
    tcase_add_test(tc, skip_releases_followers);
    tcase_add_test(tc, late_completions_keep_one_write_per_key);
    tcase_add_test(tc, queues_left_without_a_head_are_healed);
    tcase_add_test(tc, skipping_a_head_in_flight_keeps_one_write_per_key);
    tcase_add_test(tc, a_crash_mid_replay_resends_once_in_order);
    tcase_add_test(tc, replays_wait_for_the_checkpoint_to_pass_a_row);
    tcase_add_test(tc, random_operations_keep_per_key_order);
    tcase_add_test(tc, claimed_heads_go_with_the_next_answers);
    tcase_add_test(tc, replay_errors_queues_each_key_once);
    tcase_add_test(tc, replay_chunks_go_parents_first_and_never_twice);
    tcase_add_test(tc, sessions_run_without_jit);
    tcase_add_test(tc, closed_stream_leaves_its_slot_confirmed);
    tcase_add_test(tc, notify_reaches_the_listening_daemon);
    tcase_add_test(tc, alert_rule_pauses_the_job);
    tcase_add_test(tc, retention_never_purges_unresolved_rows);
    tcase_add_test(tc, one_row_queries_refuse_any_other_count);
    suite_add_tcase(s, tc);
    return s;
}

/* Only what the suite is about reaches the log. */
static void quiet_logs(void)
{
    dw_log_configure(DW_LOG_WARN, DW_LOG_LOGFMT);
}

const struct dw_check_suite dw_check_suite = {.make = errtable_suite, .before = quiet_logs};

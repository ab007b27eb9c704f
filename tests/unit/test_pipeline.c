/*
 * Unit tests of the apply pipeline through its seams (pipeline.h): a fake writer stands in
 * for the sink and Dataverse, a fake store for the control database, and a fake clock for
 * time. The fake writer holds what the pipeline submits and answers it when, and as, the test
 * says (applied, retried, bad row, gave up, missing parent); its Dataverse keeps one row per
 * target and checks, as writes land, per-key order (a row's versions only grow within one
 * process), sequence order (no write starts while one of an earlier level is in flight) and
 * that two writes to one row are never in flight at once. The fake store keeps error rows
 * the way dwasync.insert_errors decides them (open, waiting, queued behind a replayed key),
 * replays them as dw_errtable_claim lets it (only rows the checkpoint has passed) and keeps
 * the checkpoint (it only moves forward).
 *
 * The source is two tables, parents and children (each child's lookup names a parent), and
 * the oracle is its history: every change with its commit LSN, position and version. The
 * random tests interleave deliveries, polls, answers, replays of parked keys, failures of
 * the store and the clock under a seeded PRNG; the crash test drops the pipeline and what
 * is in flight at every step of a run (a write in flight may have landed or not), builds a
 * new pipeline from the store and redelivers from its checkpoint. Every run ends with
 * Dataverse equal to the source once the parked keys are replayed, and every key's
 * unresolved error rows being exactly its changes from the first failed one on.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/alloc.h"
#include "dwasync/errtable.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/pipeline.h"
#include "dwasync/values.h"

/* --- the source ------------------------------------------------------------------------ */

enum table { PARENT, CHILD, NTABLES };
#define NKEYS 4 /* rows per table: p0..p3, c0..c3 */

#define PARENT_MAP_ID 1
#define CHILD_MAP_ID  2

/* Parents (accounts, sequence 10) and children (contacts, sequence 20, a lookup to their
 * parent account): the lookup makes a child wait for its parent. */
static const char *const job_text =
    "{\"format\": 1, \"job\": {\"name\": \"t\"}, \"groups\": [{\"name\": \"g\", \"maps\": ["
    " {\"name\": \"parents\", \"sequence\": 10,"
    "  \"source\": {\"schema\": \"public\", \"table\": \"parent\"},"
    "  \"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"},"
    "  \"key\": [{\"target\": \"accountnumber\", \"source\": \"id\"}],"
    "  \"columns\": [{\"target\": \"name\", \"source\": \"name\"},"
    "   {\"target\": \"ver\", \"source\": \"ver\", \"type\": \"integer\"}]},"
    " {\"name\": \"children\", \"sequence\": 20,"
    "  \"source\": {\"schema\": \"public\", \"table\": \"child\"},"
    "  \"target\": {\"entity_set\": \"contacts\", \"logical_name\": \"contact\"},"
    "  \"key\": [{\"target\": \"contactnumber\", \"source\": \"id\"}],"
    "  \"columns\": [{\"target\": \"lastname\", \"source\": \"name\"},"
    "   {\"target\": \"ver\", \"source\": \"ver\", \"type\": \"integer\"},"
    "   {\"target\": \"parentcustomerid\", \"lookup\": {\"entity_set\": \"accounts\","
    "    \"logical_name\": \"account\","
    "    \"key\": [{\"target\": \"accountnumber\", \"source\": \"parent_id\"}]}}]}"
    "]}]}";

static struct dw_rel_column parent_cols[] = {
    {(char *)"id", 25, -1, true}, {(char *)"ver", 23, -1, false}, {(char *)"name", 25, -1, false}};
static struct dw_rel_column child_cols[] = {{(char *)"id", 25, -1, true},
                                            {(char *)"ver", 23, -1, false},
                                            {(char *)"name", 25, -1, false},
                                            {(char *)"parent_id", 25, -1, false}};
static const struct dw_relation relations[NTABLES] = {
    {16401, (char *)"public", (char *)"parent", 'd', 3, parent_cols},
    {16402, (char *)"public", (char *)"child", 'd', 4, child_cols},
};
static const char table_letter[NTABLES] = {'p', 'c'};

/* A row's state after a change: a version number names all of it (name "n<ver>"). */
struct version {
    bool exists;
    int ver;
    int parent; /* children: the parent row's number */
};

/* One change of the source, as the oracle remembers it. */
struct change_rec {
    enum table table;
    int id;
    enum dw_change_op op;
    dw_lsn commit_lsn;
    dw_lsn end_lsn; /* of its transaction: the checkpoint passes it there */
    uint32_t position;
    struct version after;
};

struct txn {
    dw_lsn commit_lsn, end_lsn;
    size_t first, n; /* its changes in source.changes */
};

struct source {
    struct version rows[NTABLES][NKEYS]; /* now */
    struct change_rec *changes;
    size_t nchanges;
    struct txn *txns;
    size_t ntxns;
};

static uint32_t rnd(uint32_t *state)
{
    /* xorshift32: small, and the same sequence on every machine. */
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static uint32_t below(uint32_t *state, uint32_t n)
{
    return rnd(state) % n;
}

/* Appends a change to the source and its history. */
static void source_change(struct source *s, enum table t, int id, enum dw_change_op op, int parent)
{
    struct txn *x = &s->txns[s->ntxns - 1];
    struct version *v = &s->rows[t][id];
    if (op == DW_CHANGE_DELETE) {
        v->exists = false;
    } else {
        v->exists = true;
        v->ver = (int)s->nchanges + 1; /* versions grow with the history */
        v->parent = parent;
    }
    s->changes = dw_realloc(s->changes, (s->nchanges + 1) * sizeof *s->changes);
    s->changes[s->nchanges++] = (struct change_rec){
        .table = t,
        .id = id,
        .op = op,
        .commit_lsn = x->commit_lsn,
        .end_lsn = x->end_lsn,
        .position = (uint32_t)x->n,
        .after = *v,
    };
    x->n++;
}

static void source_begin(struct source *s)
{
    s->txns = dw_realloc(s->txns, (s->ntxns + 1) * sizeof *s->txns);
    dw_lsn commit = 0x1000 + (dw_lsn)s->ntxns * 0x100;
    s->txns[s->ntxns++] = (struct txn){commit, commit + 0x10, s->nchanges, 0};
}

/* ntxns random transactions of one to four changes: inserts, updates, deletes of parents
 * and children; a child may name a parent that does not exist (yet, or any more). */
static void source_random(struct source *s, uint32_t *seed, size_t ntxns)
{
    for (size_t i = 0; i < ntxns; i++) {
        source_begin(s);
        int n = 1 + (int)below(seed, 4);
        for (int k = 0; k < n; k++) {
            enum table t = below(seed, 2) ? CHILD : PARENT;
            int id = (int)below(seed, NKEYS);
            enum dw_change_op op = !s->rows[t][id].exists ? DW_CHANGE_INSERT
                                   : below(seed, 10) < 7  ? DW_CHANGE_UPDATE
                                                          : DW_CHANGE_DELETE;
            source_change(s, t, id, op, (int)below(seed, NKEYS));
        }
    }
}

static void source_cleanup(struct source *s)
{
    free(s->changes);
    free(s->txns);
}

/* The change of a key at (commit LSN, position); fails the test when there is none. */
static const struct change_rec *source_find(const struct source *s, enum table t, int id,
                                            dw_lsn commit_lsn, uint32_t position)
{
    for (size_t i = 0; i < s->nchanges; i++) {
        const struct change_rec *c = &s->changes[i];
        if (c->table == t && c->id == id && c->commit_lsn == commit_lsn && c->position == position)
            return c;
    }
    ck_abort_msg("no change of %c%d at %X/%X #%u", table_letter[t], id, DW_LSN_ARGS(commit_lsn),
                 position);
    return NULL;
}

/* --- feeding the pipeline -------------------------------------------------------------- */

/* Text values of one change, alive while the pipeline reads them. */
struct tuple_text {
    char id[8], ver[16], name[16], parent[8];
    struct dw_datum cols[4];
};

static void datum(struct dw_datum *d, const char *text)
{
    *d = (struct dw_datum){DW_DATUM_TEXT, text, (uint32_t)strlen(text)};
}

static void fill_tuple(struct tuple_text *tt, const struct change_rec *c, bool key_only)
{
    snprintf(tt->id, sizeof tt->id, "%c%d", table_letter[c->table], c->id);
    snprintf(tt->ver, sizeof tt->ver, "%d", c->after.ver);
    snprintf(tt->name, sizeof tt->name, "n%d", c->after.ver);
    snprintf(tt->parent, sizeof tt->parent, "p%d", c->after.parent);
    datum(&tt->cols[0], tt->id);
    datum(&tt->cols[1], tt->ver);
    datum(&tt->cols[2], tt->name);
    datum(&tt->cols[3], tt->parent);
    for (int i = 1; key_only && i < 4; i++)
        tt->cols[i] = (struct dw_datum){DW_DATUM_NULL, NULL, 0};
}

typedef dw_rc take_fn(struct dw_pipeline *p, const struct dw_typed_change *c);

/* Hands a change to the pipeline through take, typed as the source stage types it. */
static dw_rc take_typed(take_fn *take, struct dw_pipeline *p, const struct dw_change *ch)
{
    struct dw_values_options values;
    ck_assert_int_eq(dw_values_options_init(&values, "UTC"), DW_OK);
    struct dw_typed_change typed;
    dw_change_type(ch, &values, &typed);
    dw_rc rc = take(p, &typed);
    dw_typed_change_cleanup(&typed);
    return rc;
}

/* Hands a change to the pipeline through take (dw_pipeline_change, or _removals). */
static void deliver_change_to(struct dw_pipeline *p, const struct change_rec *c, uint32_t xid,
                              take_fn *take)
{
    struct tuple_text tt;
    const struct dw_relation *rel = &relations[c->table];
    struct dw_change ch = {
        .op = c->op,
        .lsn = c->commit_lsn - 0x8 + c->position,
        .commit_lsn = c->commit_lsn,
        .xid = xid,
        .commit_time_us = 1700000000000000,
        .index = c->position,
        .rel = rel,
    };
    fill_tuple(&tt, c, c->op == DW_CHANGE_DELETE);
    struct dw_tuple tuple = {rel->ncols, tt.cols};
    if (c->op == DW_CHANGE_DELETE) {
        ch.old_tuple = tuple;
        ch.old_kind = 'K';
    } else {
        ch.new_tuple = tuple;
    }
    ck_assert_int_eq(take_typed(take, p, &ch), DW_OK);
}

static void deliver_change(struct dw_pipeline *p, const struct change_rec *c, uint32_t xid)
{
    deliver_change_to(p, c, xid, dw_pipeline_change);
}

/* Delivers transaction i whole, as the stream does. */
static void deliver_txn(struct dw_pipeline *p, const struct source *s, size_t i)
{
    const struct txn *x = &s->txns[i];
    uint32_t xid = 700 + (uint32_t)i;
    ck_assert_int_eq(dw_pipeline_begin(p, xid, x->commit_lsn, 1700000000000000), DW_OK);
    for (size_t k = 0; k < x->n; k++)
        deliver_change(p, &s->changes[x->first + k], xid);
    ck_assert_int_eq(dw_pipeline_commit(p, x->commit_lsn, x->end_lsn, 1700000000000000), DW_OK);
}

/* --- the fake Dataverse and writer ----------------------------------------------------- */

struct dv_row {
    bool exists;
    int ver;
    int parent;
    int order_ver; /* the last version written in this process (per-key order) */
    int went_back; /* versions written in this process older than one before them */
    int max_ver;   /* the newest version ever written */
};

struct dataverse {
    struct dv_row rows[NTABLES][NKEYS];
    uint64_t writes; /* writes applied */
    bool restarted;  /* a crash happened: this process resends what the last one sent */
};

/* A write's target: its table (by entity set) and row number (from its key). */
static void write_target(const struct dw_write *w, enum table *t, int *id)
{
    *t = strcmp(w->entity_set, "accounts") == 0 ? PARENT : CHILD;
    const char *name;
    json_t *value;
    json_object_foreach(w->key, name, value)
    {
        const char *text = json_string_value(value);
        ck_assert_ptr_nonnull(text);
        *id = (int)strtol(text + 1, NULL, 10);
    }
}

/* The parent a child's write binds, or -1. */
static int write_parent(const struct dw_write *w)
{
    const json_t *ref = dw_refs_get(w->refs, "parentcustomerid@odata.bind");
    const char *text =
        json_string_value(json_object_get(json_object_get(ref, "key"), "accountnumber"));
    return text ? (int)strtol(text + 1, NULL, 10) : -1;
}

/* The level a write belongs to: parent upserts, child upserts, child deletes, parent
 * deletes (sequence order; deletes children first). */
static int write_level(const struct dw_write *w)
{
    enum table t;
    int id;
    write_target(w, &t, &id);
    if (w->op == DW_WRITE_DELETE)
        return t == CHILD ? 2 : 3;
    return t == PARENT ? 0 : 1;
}

/*
 * A version reaches a row; it must be newer than what this process wrote there before.
 * After a crash the stream resends from the checkpoint what may have landed already, and a
 * replay may have written a parked key's newest version first: a key may then go back
 * once (what test_e2e_crashpoints.sh allows per crash), and be written again as it was.
 */
static void dv_set(struct dataverse *dv, enum table t, int id, const struct version *v)
{
    struct dv_row *row = &dv->rows[t][id];
    if (v->exists) {
        if (dv->restarted && v->ver < row->order_ver)
            row->went_back++;
        ck_assert_msg(dv->restarted ? v->ver >= row->order_ver || row->went_back <= 1
                                    : v->ver > row->order_ver,
                      "%c%d: version %d written after %d", table_letter[t], id, v->ver,
                      row->order_ver);
        row->order_ver = v->ver;
        row->max_ver = v->ver > row->max_ver ? v->ver : row->max_ver;
        row->ver = v->ver;
        row->parent = v->parent;
    }
    row->exists = v->exists;
    dv->writes++;
}

/* Whether Dataverse would take the write (a child's parent must exist). */
static bool dv_accepts(const struct dataverse *dv, const struct dw_write *w)
{
    int parent = w->op == DW_WRITE_DELETE ? -1 : write_parent(w);
    return parent < 0 || dv->rows[PARENT][parent].exists;
}

static void dv_apply(struct dataverse *dv, const struct dw_write *w)
{
    enum table t;
    int id;
    write_target(w, &t, &id);
    struct version v = {.exists = w->op != DW_WRITE_DELETE, .parent = -1};
    if (v.exists) {
        json_t *body = dw_write_body(w);
        v.ver = (int)json_integer_value(json_object_get(body, "ver"));
        char name[16];
        snprintf(name, sizeof name, "n%d", v.ver);
        ck_assert_str_eq(
            json_string_value(json_object_get(body, t == PARENT ? "name" : "lastname")), name);
        json_decref(body);
        if (t == CHILD)
            v.parent = write_parent(w);
    }
    dv_set(dv, t, id, &v);
}

/* A new process: per-key order starts over (redelivery may write older versions again). */
static void dv_new_process(struct dataverse *dv)
{
    for (int t = 0; t < NTABLES; t++)
        for (int i = 0; i < NKEYS; i++)
            dv->rows[t][i].order_ver = dv->rows[t][i].went_back = 0;
    dv->restarted = true;
}

enum outcome { ANSWER_OK, ANSWER_RETRY, ANSWER_BAD, ANSWER_GAVE_UP, ANSWER_MISSING_PARENT };

struct in_flight {
    struct dw_write write;
    struct dw_write_ticket *ticket;
};

struct fake_writer {
    struct in_flight *q;
    size_t len, cap;
    struct dataverse *dv;
    uint64_t submitted;
    struct dw_pipeline_writer iface;
};

static dw_rc fake_submit(void *user, struct dw_write *writes, void *const *tickets, size_t n)
{
    struct fake_writer *fw = user;
    for (size_t i = 0; i < n; i++) {
        enum table t, t2;
        int id, id2;
        write_target(&writes[i], &t, &id);
        for (size_t k = 0; k < fw->len; k++) {
            write_target(&fw->q[k].write, &t2, &id2);
            ck_assert_msg(t != t2 || id != id2, "two writes to %c%d in flight", table_letter[t],
                          id);
            ck_assert_msg(write_level(&fw->q[k].write) >= write_level(&writes[i]),
                          "a level-%d write started while one of level %d is in flight",
                          write_level(&writes[i]), write_level(&fw->q[k].write));
        }
        if (fw->len == fw->cap) {
            fw->cap = fw->cap ? 2 * fw->cap : 16;
            fw->q = dw_realloc(fw->q, fw->cap * sizeof *fw->q);
        }
        fw->q[fw->len++] = (struct in_flight){writes[i], tickets[i]};
        memset(&writes[i], 0, sizeof writes[i]);
        fw->submitted++;
    }
    return DW_OK;
}

static dw_rc fake_submit_atomic(void *user, struct dw_write *writes, void *const *tickets, size_t n)
{
    (void)user, (void)writes, (void)tickets, (void)n;
    ck_abort_msg("these maps are not atomic");
    return DW_ERR_INVALID;
}

static size_t fake_pending(void *user)
{
    return ((struct fake_writer *)user)->len;
}

static void fake_send(void *user)
{
    (void)user; /* answers come when the test gives them */
}

static void fake_writer_init(struct fake_writer *fw, struct dataverse *dv)
{
    *fw = (struct fake_writer){.dv = dv};
    fw->iface =
        (struct dw_pipeline_writer){fake_submit, fake_submit_atomic, fake_pending, fake_send, fw};
}

/* Answers in-flight write i as outcome says (a write whose parent is missing cannot be
 * applied, whatever the test asks); a retried write goes to the back of the queue. */
static void fake_answer(struct fake_writer *fw, size_t i, enum outcome outcome)
{
    struct in_flight f = fw->q[i];
    memmove(&fw->q[i], &fw->q[i + 1], (fw->len - i - 1) * sizeof *fw->q);
    fw->len--;
    if (outcome == ANSWER_RETRY) {
        fw->q[fw->len++] = f;
        return;
    }
    struct dw_write_result r = {.status = DW_WRITE_REJECTED, .code = "", .message = ""};
    char *payload = NULL;
    if (outcome == ANSWER_OK && !dv_accepts(fw->dv, &f.write))
        outcome = ANSWER_MISSING_PARENT;
    switch (outcome) {
    case ANSWER_OK:
        dv_apply(fw->dv, &f.write);
        r.status = DW_WRITE_APPLIED;
        break;
    case ANSWER_BAD:
        r.error_class = DW_ERRCLASS_VALIDATION;
        r.http_status = 400;
        r.code = "0x80044331";
        r.message = "a value is out of range";
        /* As the sink says it: the body sent, none for a delete. */
        if (f.write.body)
            r.payload = payload = dw_asprintf("{%s}", f.write.body->data);
        break;
    case ANSWER_GAVE_UP:
        r.status = DW_WRITE_GAVE_UP;
        r.error_class = DW_ERRCLASS_TRANSIENT;
        r.http_status = 503;
        r.message = "service unavailable";
        break;
    default:
        r.error_class = DW_ERRCLASS_MISSING_PARENT;
        r.http_status = 404;
        r.message = "parent not found";
        r.missing_parent = "accounts(accountnumber='p0')";
        break;
    }
    f.ticket->done(f.ticket, &r);
    free(payload);
    dw_write_cleanup(&f.write);
}

/* A crash: what was in flight is lost; each write may have landed before it (if it could). */
static void fake_writer_crash(struct fake_writer *fw, uint32_t *seed)
{
    for (size_t i = 0; i < fw->len; i++) {
        if (below(seed, 2) && dv_accepts(fw->dv, &fw->q[i].write))
            dv_apply(fw->dv, &fw->q[i].write);
        dw_write_cleanup(&fw->q[i].write);
    }
    fw->len = 0;
    dv_new_process(fw->dv);
}

static void fake_writer_cleanup(struct fake_writer *fw)
{
    for (size_t i = 0; i < fw->len; i++)
        dw_write_cleanup(&fw->q[i].write);
    free(fw->q);
}

/* --- the fake store -------------------------------------------------------------------- */

enum row_status { ROW_OPEN, ROW_WAITING, ROW_QUEUED, ROW_RESOLVED };

struct stored_row {
    dw_lsn commit_lsn;
    uint32_t position;
    int part;
    int64_t map_id;
    char *key_text;
    enum table table;
    int id;
    enum row_status status;
    enum dw_error_class error_class;
};

enum store_fault { STORE_OK, STORE_FAIL };

struct fake_store {
    struct stored_row *rows;
    size_t n;
    dw_lsn checkpoint;
    uint64_t applied, failed; /* statistics */
    enum store_fault fault;   /* of the next persist */
    struct dw_pipeline_store iface;
};

static bool key_blocked(const struct fake_store *fs, int64_t map_id, const char *key_text)
{
    for (size_t i = 0; i < fs->n; i++)
        if (fs->rows[i].status != ROW_RESOLVED && fs->rows[i].map_id == map_id &&
            strcmp(fs->rows[i].key_text, key_text) == 0)
            return true;
    return false;
}

static dw_rc store_load_blocked(void *user, int64_t job_id, struct dw_blocked_keys *set)
{
    struct fake_store *fs = user;
    ck_assert_int_eq(job_id, 7);
    for (size_t i = 0; i < fs->n; i++)
        if (fs->rows[i].status != ROW_RESOLVED)
            dw_blocked_keys_add(set, fs->rows[i].map_id, fs->rows[i].key_text);
    return DW_OK;
}

static dw_rc store_load_checkpoint(void *user, int64_t job_id, dw_lsn *confirmed)
{
    (void)job_id;
    *confirmed = ((const struct fake_store *)user)->checkpoint;
    return DW_OK;
}

static bool row_stored(const struct fake_store *fs, const struct dw_errrow *r)
{
    for (size_t i = 0; i < fs->n; i++)
        if (fs->rows[i].commit_lsn == r->commit_lsn && fs->rows[i].position == r->position &&
            fs->rows[i].part == r->part)
            return true;
    return false;
}

/* As dwasync.insert_errors: behind an unresolved row of its key a row waits; a parked row
 * whose key has none any more is queued for replay; rows stored before are skipped. */
static void store_insert(struct fake_store *fs, const struct dw_errrow *r,
                         struct dw_blocked_keys *blocked)
{
    if (row_stored(fs, r))
        return;
    enum row_status st = key_blocked(fs, r->map_id, r->key_text) ? ROW_WAITING
                         : r->waiting                            ? ROW_QUEUED
                                                                 : ROW_OPEN;
    json_t *key = json_loads(r->source_key, 0, NULL);
    const char *id = json_string_value(json_object_get(key, "id"));
    ck_assert_ptr_nonnull(id);
    ck_assert_msg(r->waiting || r->error_class != DW_ERRCLASS_NONE, "an open row without a class");
    fs->rows = dw_realloc(fs->rows, (fs->n + 1) * sizeof *fs->rows);
    fs->rows[fs->n++] = (struct stored_row){
        .commit_lsn = r->commit_lsn,
        .position = r->position,
        .part = r->part,
        .map_id = r->map_id,
        .key_text = dw_strdup(r->key_text),
        .table = strcmp(r->source_table, "parent") == 0 ? PARENT : CHILD,
        .id = (int)strtol(id + 1, NULL, 10),
        .status = st,
        .error_class = r->error_class,
    };
    json_decref(key);
    dw_blocked_keys_add(blocked, r->map_id, r->key_text);
}

/* The head of a key's queue: its earliest unresolved row; NULL when it has none. */
static struct stored_row *queue_head(struct fake_store *fs, int64_t map_id, const char *key_text)
{
    struct stored_row *head = NULL;
    for (size_t i = 0; i < fs->n; i++) {
        struct stored_row *r = &fs->rows[i];
        if (r->status == ROW_RESOLVED || r->map_id != map_id || strcmp(r->key_text, key_text))
            continue;
        if (head == NULL || r->commit_lsn < head->commit_lsn ||
            (r->commit_lsn == head->commit_lsn &&
             (r->position < head->position ||
              (r->position == head->position && r->part < head->part))))
            head = r;
    }
    return head;
}

/* As dw_errtable_claim: a row is replayed only once the checkpoint has passed it, since a
 * crash resends its transaction until then (here the stream resends from the checkpoint). */
static bool store_claimable(const struct fake_store *fs, const struct stored_row *r)
{
    return r->commit_lsn < fs->checkpoint;
}

static dw_rc store_persist(void *user, const struct dw_pipeline_persist *w,
                           struct dw_blocked_keys *blocked)
{
    struct fake_store *fs = user;
    enum store_fault fault = fs->fault;
    fs->fault = STORE_OK;
    if (fault == STORE_FAIL)
        return DW_ERR_PG;
    for (size_t i = 0; i < w->nrows; i++)
        store_insert(fs, &w->rows[i], blocked);
    if (w->confirmed_lsn > fs->checkpoint)
        fs->checkpoint = w->confirmed_lsn;
    fs->applied += w->rows_applied;
    fs->failed += w->rows_failed;
    return DW_OK;
}

static void fake_store_init(struct fake_store *fs)
{
    *fs = (struct fake_store){0};
    fs->iface = (struct dw_pipeline_store){.load_blocked = store_load_blocked,
                                           .load_checkpoint = store_load_checkpoint,
                                           .persist = store_persist,
                                           .user = fs};
}

static void fake_store_cleanup(struct fake_store *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        free(fs->rows[i].key_text);
    free(fs->rows);
}

/* --- the world: source, pipeline, fakes and clock --------------------------------------- */

static int64_t fake_now_ms;

static int64_t fake_clock(void)
{
    return fake_now_ms;
}

struct world {
    struct source src;
    struct dataverse dv;
    struct fake_writer writer;
    struct fake_store store;
    struct dw_job_maps *maps;
    struct dw_pipeline_options opts;
    struct dw_pipeline *p;
    size_t next_txn; /* the next transaction the stream delivers */
    uint32_t seed;
};

static struct dw_job_maps *load_maps(void)
{
    json_t *doc = json_loads(job_text, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    struct dw_jobdef *def = NULL;
    ck_assert_msg(dw_jobdef_parse(doc, &errors, &def) == DW_OK, "%s", dw_buf_str(&errors));
    dw_buf_cleanup(&errors);
    json_decref(doc);
    def->groups[0].maps[0].id = PARENT_MAP_ID; /* as the control schema numbers them */
    def->groups[0].maps[1].id = CHILD_MAP_ID;
    struct dw_job_maps *maps = NULL;
    ck_assert_int_eq(dw_job_maps_from_def(def, &maps), DW_OK);
    return maps;
}

static void world_start_pipeline(struct world *w)
{
    ck_assert_int_eq(dw_pipeline_new(&w->opts, &w->writer.iface, &w->store.iface, w->maps, &w->p),
                     DW_OK);
}

/* Whether the pipelines world_init() makes apply a window ahead of the one before. */
static bool world_apply_ahead;

static void world_init(struct world *w, uint32_t seed, int64_t window_rows)
{
    *w = (struct world){.seed = seed ? seed : 1};
    fake_now_ms = 1000000; /* a window opened at 0 would look never opened */
    fake_writer_init(&w->writer, &w->dv);
    fake_store_init(&w->store);
    w->maps = load_maps();
    w->opts = (struct dw_pipeline_options){
        .job_id = 7,
        .job_name = "t",
        .window_rows = window_rows,
        .window_bytes = 1 << 20,
        .window_ms = 100,
        .missing_parent_retries = 2,
        .apply_ahead = world_apply_ahead,
        .clock_ms = fake_clock,
    };
    world_start_pipeline(w);
}

static void world_cleanup(struct world *w)
{
    fake_writer_cleanup(&w->writer); /* the writer first: no answer reaches a freed pipeline */
    dw_pipeline_free(w->p);
    fake_store_cleanup(&w->store);
    dw_job_maps_free(w->maps);
    source_cleanup(&w->src);
}

/* The checkpoint rule's visible half: the slot is told only what the store holds. */
/* Whether a row of the change's key at or before it is stored (in any state). */
static bool parked_at_or_before(const struct fake_store *fs, const struct change_rec *c)
{
    for (size_t i = 0; i < fs->n; i++) {
        const struct stored_row *r = &fs->rows[i];
        if (r->table == c->table && r->id == c->id &&
            (r->commit_lsn < c->commit_lsn ||
             (r->commit_lsn == c->commit_lsn && r->position <= c->position)))
            return true;
    }
    return false;
}

/* Whether a later delete of the change's key is behind the checkpoint too (an upsert
 * coalesced into a delete is never written as such). */
static bool deleted_later(const struct world *w, size_t at)
{
    const struct change_rec *c = &w->src.changes[at];
    for (size_t i = at + 1; i < w->src.nchanges; i++) {
        const struct change_rec *d = &w->src.changes[i];
        if (d->end_lsn > w->store.checkpoint)
            break;
        if (d->table == c->table && d->id == c->id && d->op == DW_CHANGE_DELETE)
            return true;
    }
    return false;
}

/* The checkpoint rule: every upsert the checkpoint passed was written (or a newer version
 * of its row was), or is parked, or a later delete behind the checkpoint took its place. */
static void assert_checkpoint_covered(const struct world *w)
{
    for (size_t i = 0; i < w->src.nchanges; i++) {
        const struct change_rec *c = &w->src.changes[i];
        if (c->end_lsn > w->store.checkpoint)
            break;
        if (c->op == DW_CHANGE_DELETE || w->dv.rows[c->table][c->id].max_ver >= c->after.ver ||
            parked_at_or_before(&w->store, c) || deleted_later(w, i))
            continue;
        ck_abort_msg("the checkpoint %X/%X passed %c%d version %d, neither written nor parked",
                     DW_LSN_ARGS(w->store.checkpoint), table_letter[c->table], c->id, c->after.ver);
    }
}

/* The checkpoint rule, checked after every poll: the slot is told only what the store
 * holds, and the store holds only what is applied or parked. */
static void world_poll(struct world *w, bool flush)
{
    dw_rc rc = dw_pipeline_poll(w->p, flush);
    ck_assert_msg(rc == DW_OK || rc == DW_ERR_PG, "poll: %s", dw_rc_str(rc));
    ck_assert_uint_le(dw_pipeline_confirmed(w->p), w->store.checkpoint);
    assert_checkpoint_covered(w);
}

/* Delivers the next transaction when the pipeline takes more; false when it does not. */
static bool world_deliver(struct world *w)
{
    if (w->next_txn == w->src.ntxns || !dw_pipeline_accepting(w->p))
        return false;
    deliver_txn(w->p, &w->src, w->next_txn++);
    return true;
}

/* The operator replays a parked key, and the replay succeeds: its queue is applied in
 * order as far as the store lets it (the last row applied is the version that stays), and
 * the pipeline is told when it emptied. A row the checkpoint has not passed stays queued,
 * its key blocked (store_claimable()). */
static void world_replay_key(struct world *w, int64_t map_id, const char *key_text)
{
    const struct stored_row *last = NULL;
    struct stored_row *r;
    while ((r = queue_head(&w->store, map_id, key_text)) != NULL) {
        if (!store_claimable(&w->store, r)) {
            r->status = ROW_QUEUED;
            break;
        }
        r->status = ROW_RESOLVED;
        last = r;
    }
    if (last) {
        const struct change_rec *c =
            source_find(&w->src, last->table, last->id, last->commit_lsn, last->position);
        dv_set(&w->dv, c->table, c->id, &c->after);
    }
    if (r == NULL)
        dw_pipeline_unblock(w->p, map_id, key_text);
}

/* Replays a random parked key, if there is one. */
static void world_replay_random(struct world *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->store.n; i++)
        n += w->store.rows[i].status != ROW_RESOLVED;
    if (n == 0)
        return;
    size_t pick = below(&w->seed, (uint32_t)n);
    for (size_t i = 0; i < w->store.n; i++) {
        const struct stored_row *r = &w->store.rows[i];
        if (r->status != ROW_RESOLVED && pick-- == 0) {
            char *key = dw_strdup(r->key_text);
            world_replay_key(w, r->map_id, key);
            free(key);
            return;
        }
    }
}

static void world_replay_all(struct world *w)
{
    for (size_t i = 0; i < w->store.n; i++)
        if (w->store.rows[i].status != ROW_RESOLVED) {
            char *key = dw_strdup(w->store.rows[i].key_text);
            world_replay_key(w, w->store.rows[i].map_id, key);
            free(key);
        }
}

/* A crash at this point: the pipeline and what was in flight are gone; a new process
 * starts from the store, and the stream resends from the slot, which may be behind the
 * checkpoint (it is confirmed after it): from any transaction at or before the first one
 * past the checkpoint. */
static void world_crash(struct world *w)
{
    fake_writer_crash(&w->writer, &w->seed);
    dw_pipeline_free(w->p);
    w->store.fault = STORE_OK;
    world_start_pipeline(w);
    size_t past = 0;
    while (past < w->src.ntxns && w->src.txns[past].end_lsn <= w->store.checkpoint)
        past++;
    w->next_txn = below(&w->seed, (uint32_t)past + 1);
}

/* One random step of a run. */
static void world_step(struct world *w)
{
    uint32_t r = below(&w->seed, 100);
    if (r < 25 && world_deliver(w))
        return;
    if (r < 45) {
        world_poll(w, below(&w->seed, 2));
    } else if (r < 80 && w->writer.len) {
        static const enum outcome outcomes[] = {ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_OK,
                                                ANSWER_RETRY,
                                                ANSWER_RETRY,
                                                ANSWER_BAD,
                                                ANSWER_BAD,
                                                ANSWER_GAVE_UP,
                                                ANSWER_MISSING_PARENT,
                                                ANSWER_MISSING_PARENT,
                                                ANSWER_OK};
        size_t i = below(&w->seed, (uint32_t)w->writer.len);
        fake_answer(&w->writer, i, outcomes[below(&w->seed, 20)]);
    } else if (r < 88) {
        fake_now_ms += below(&w->seed, 400);
    } else if (r < 91) {
        world_replay_random(w);
    } else if (r < 94) {
        w->store.fault = STORE_FAIL;
    } else {
        world_poll(w, true);
    }
}

/* Delivers the rest, answers everything as Dataverse would, and lets time pass until the
 * pipeline is idle with every transaction confirmed. */
static void world_drain(struct world *w)
{
    dw_lsn last = w->src.ntxns ? w->src.txns[w->src.ntxns - 1].end_lsn : 0;
    for (int round = 0; round < 10000; round++) {
        while (world_deliver(w))
            ;
        while (w->writer.len)
            fake_answer(&w->writer, 0, ANSWER_OK);
        fake_now_ms += 300;
        world_poll(w, true);
        /* (After a crash with nothing to resend, the new pipeline has confirmed nothing.) */
        if (w->next_txn == w->src.ntxns && w->writer.len == 0 && dw_pipeline_idle(w->p) &&
            w->store.checkpoint == last)
            return;
    }
    ck_abort_msg("the pipeline did not drain: checkpoint %X/%X of %X/%X",
                 DW_LSN_ARGS(w->store.checkpoint), DW_LSN_ARGS(last));
}

/* The version a key had just before (commit LSN, position); nothing before it: absent. */
static struct version version_before(const struct source *s, enum table t, int id, dw_lsn lsn,
                                     uint32_t position)
{
    struct version v = {0};
    for (size_t i = 0; i < s->nchanges; i++) {
        const struct change_rec *c = &s->changes[i];
        if (c->commit_lsn > lsn || (c->commit_lsn == lsn && c->position >= position))
            break;
        if (c->table == t && c->id == id)
            v = c->after;
    }
    return v;
}

static void assert_row(const struct world *w, enum table t, int id, const struct version *v)
{
    const struct dv_row *row = &w->dv.rows[t][id];
    ck_assert_msg(row->exists == v->exists, "%c%d: exists %d, expected %d", table_letter[t], id,
                  row->exists, v->exists);
    if (v->exists) {
        ck_assert_msg(row->ver == v->ver, "%c%d: version %d, expected %d", table_letter[t], id,
                      row->ver, v->ver);
        if (t == CHILD)
            ck_assert_int_eq(row->parent, v->parent);
    }
}

/*
 * Nothing lost, nothing out of order: a key's unresolved error rows are exactly its changes
 * from the first failed one on (each once), and without a crash Dataverse holds the version
 * just before that one (with a crash, a write that landed unanswered may have gone further).
 */
static void assert_parked_exactly(const struct world *w, enum table t, int id, bool crashed)
{
    const struct stored_row *first = NULL;
    size_t nrows = 0;
    for (size_t i = 0; i < w->store.n; i++) {
        const struct stored_row *r = &w->store.rows[i];
        if (r->status == ROW_RESOLVED || r->table != t || r->id != id)
            continue;
        nrows++;
        if (first == NULL || r->commit_lsn < first->commit_lsn ||
            (r->commit_lsn == first->commit_lsn && r->position < first->position))
            first = r;
    }
    if (first == NULL) {
        assert_row(w, t, id, &w->src.rows[t][id]);
        return;
    }
    size_t after = 0;
    for (size_t i = 0; i < w->src.nchanges; i++) {
        const struct change_rec *c = &w->src.changes[i];
        if (c->table != t || c->id != id || c->commit_lsn < first->commit_lsn ||
            (c->commit_lsn == first->commit_lsn && c->position < first->position))
            continue;
        after++;
        bool stored = false;
        for (size_t k = 0; k < w->store.n && !stored; k++) {
            const struct stored_row *r = &w->store.rows[k];
            stored = r->status != ROW_RESOLVED && r->table == t && r->id == id &&
                     r->commit_lsn == c->commit_lsn && r->position == c->position;
        }
        ck_assert_msg(stored, "%c%d: the change at %X/%X #%u is neither applied nor parked",
                      table_letter[t], id, DW_LSN_ARGS(c->commit_lsn), c->position);
    }
    ck_assert_uint_eq(nrows, after);
    if (!crashed) {
        struct version v = version_before(&w->src, t, id, first->commit_lsn, first->position);
        assert_row(w, t, id, &v);
    }
}

/* The oracle: every key parked exactly, then, with every parked key replayed, Dataverse
 * equals the source. */
static void assert_oracle(struct world *w, bool crashed)
{
    for (int t = 0; t < NTABLES; t++)
        for (int id = 0; id < NKEYS; id++)
            assert_parked_exactly(w, (enum table)t, id, crashed);
    world_replay_all(w);
    for (int t = 0; t < NTABLES; t++)
        for (int id = 0; id < NKEYS; id++)
            assert_row(w, (enum table)t, id, &w->src.rows[t][id]);
    ck_assert_uint_eq(w->store.checkpoint, w->src.txns[w->src.ntxns - 1].end_lsn);
}

/* --- deterministic cases ---------------------------------------------------------------- */

/* The in-flight write to a row (fails the test when there is none). */
static size_t in_flight_to(const struct fake_writer *fw, enum table t, int id)
{
    for (size_t i = 0; i < fw->len; i++) {
        enum table t2;
        int id2;
        write_target(&fw->q[i].write, &t2, &id2);
        if (t2 == t && id2 == id)
            return i;
    }
    ck_abort_msg("no write to %c%d in flight", table_letter[t], id);
    return 0;
}

/* Three changes to one row in one window go as one write of the last version; an insert
 * then a delete goes as one delete. */
START_TEST(changes_to_one_row_coalesce)
{
    struct world w;
    world_init(&w, 1, 100);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 0, DW_CHANGE_UPDATE, 0);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_UPDATE, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_DELETE, 0);
    while (world_deliver(&w))
        ;
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 1);
    const struct dw_write *p0 = &w.writer.q[in_flight_to(&w.writer, PARENT, 0)].write;
    ck_assert_int_eq(p0->op, DW_WRITE_UPSERT);
    ck_assert_int_eq(json_integer_value(json_object_get(dw_check_body(p0), "ver")), 3);
    fake_answer(&w.writer, 0, ANSWER_OK);
    world_poll(&w, false); /* deletes come after upserts */
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert_int_eq(w.writer.q[in_flight_to(&w.writer, PARENT, 1)].write.op, DW_WRITE_DELETE);
    world_drain(&w);
    ck_assert_uint_eq(w.writer.submitted, 2);
    ck_assert_uint_eq(w.store.applied, 5); /* source changes, before coalescing */
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* A window's parents are written before its children, and its children deleted before
 * their parents; the fake writer fails the test if a level starts early. */
START_TEST(parents_before_children_and_deletes_children_first)
{
    struct world w;
    world_init(&w, 1, 100);
    source_begin(&w.src);
    source_change(&w.src, CHILD, 0, DW_CHANGE_INSERT, 0); /* the child comes first */
    source_change(&w.src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_INSERT, 0);
    source_change(&w.src, CHILD, 1, DW_CHANGE_INSERT, 1);
    while (world_deliver(&w))
        ;
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 2); /* the parents only */
    ck_assert_int_eq(write_level(&w.writer.q[0].write), 0);
    fake_answer(&w.writer, 0, ANSWER_OK);
    world_poll(&w, false);
    ck_assert_uint_eq(w.writer.len, 1); /* one parent still in flight: no child yet */
    fake_answer(&w.writer, 0, ANSWER_OK);
    world_poll(&w, false);
    ck_assert_uint_eq(w.writer.len, 2);
    ck_assert_int_eq(write_level(&w.writer.q[0].write), 1);
    world_drain(&w);

    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_DELETE, 0);
    source_change(&w.src, CHILD, 0, DW_CHANGE_DELETE, 0);
    while (world_deliver(&w))
        ;
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert_int_eq(write_level(&w.writer.q[0].write), 2); /* the child's delete first */
    world_drain(&w);
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* A new world whose first transaction, two parent inserts, is sent: both are in flight. */
static void send_two_parents(struct world *w)
{
    world_init(w, 1, 100);
    source_begin(&w->src);
    source_change(&w->src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w->src, PARENT, 1, DW_CHANGE_INSERT, 0);
    deliver_txn(w->p, &w->src, w->next_txn++);
    world_poll(w, true);
    ck_assert_uint_eq(w->writer.len, 2);
}

/* A bad row parks its key: later changes of the key wait (in later windows too), other
 * keys flow, the checkpoint passes them all; once the key is replayed and unblocked, its
 * next change flows again. */
START_TEST(a_parked_key_blocks_its_followers_until_unblocked)
{
    struct world w;
    send_two_parents(&w);
    fake_answer(&w.writer, in_flight_to(&w.writer, PARENT, 0), ANSWER_BAD);
    fake_answer(&w.writer, 0, ANSWER_OK);
    world_poll(&w, false);
    ck_assert_uint_eq(w.store.n, 1);
    ck_assert_int_eq(w.store.rows[0].status, ROW_OPEN);
    ck_assert_int_eq(w.store.rows[0].error_class, DW_ERRCLASS_VALIDATION);
    ck_assert_uint_eq(w.store.checkpoint, w.src.txns[0].end_lsn);

    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_UPDATE, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_UPDATE, 0);
    deliver_txn(w.p, &w.src, w.next_txn++);
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 1); /* p1 only: p0 waits */
    in_flight_to(&w.writer, PARENT, 1);
    world_drain(&w);
    ck_assert_uint_eq(w.store.n, 2);
    ck_assert_int_eq(w.store.rows[1].status, ROW_WAITING);
    ck_assert_uint_eq(w.store.checkpoint, w.src.txns[1].end_lsn);
    assert_parked_exactly(&w, PARENT, 0, false);

    world_replay_key(&w, PARENT_MAP_ID, w.store.rows[0].key_text);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_UPDATE, 0);
    deliver_txn(w.p, &w.src, w.next_txn++);
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 1);
    world_drain(&w);
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* The checkpoint waits for the last answer of a window and for the store: a write in
 * flight, a retried one, a store that fails (again when retried) all hold it. */
START_TEST(the_checkpoint_waits_for_answers_and_the_store)
{
    struct world w;
    send_two_parents(&w);
    fake_answer(&w.writer, 0, ANSWER_OK);
    fake_answer(&w.writer, 0, ANSWER_RETRY);
    world_poll(&w, true);
    ck_assert_uint_eq(w.store.checkpoint, 0);
    fake_answer(&w.writer, 0, ANSWER_BAD);
    w.store.fault = STORE_FAIL;
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_ERR_PG);
    ck_assert_uint_eq(w.store.n, 0);                  /* nothing is stored, */
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), 0); /* nothing confirmed */
    world_poll(&w, true);                             /* too early to try again */
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), 0);
    w.store.fault = STORE_FAIL;
    fake_now_ms += 1000;
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_ERR_PG);
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), 0);
    fake_now_ms += 1000;
    world_poll(&w, true);
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), w.src.txns[0].end_lsn);
    ck_assert_uint_eq(w.store.n, 1); /* stored once */
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* A child whose parent is missing does not hold its window: it is sent again later, after
 * the parent that arrived meanwhile, and the checkpoint does not pass it until then. */
START_TEST(a_missing_parent_is_waited_for_without_passing_the_checkpoint)
{
    struct world w;
    world_init(&w, 1, 100);
    source_begin(&w.src);
    source_change(&w.src, CHILD, 0, DW_CHANGE_INSERT, 2);
    deliver_txn(w.p, &w.src, w.next_txn++);
    world_poll(&w, true);
    fake_answer(&w.writer, 0, ANSWER_OK); /* p2 does not exist: missing parent */
    world_poll(&w, true);
    ck_assert_uint_eq(w.store.n, 0);
    ck_assert_uint_eq(w.store.checkpoint, 0);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 2, DW_CHANGE_INSERT, 0);
    deliver_txn(w.p, &w.src, w.next_txn++);
    world_poll(&w, true); /* not due yet: the carried child waits for its retry time */
    ck_assert_uint_eq(w.writer.len, 0);
    fake_now_ms += 200;
    world_poll(&w, true);
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert_int_eq(write_level(&w.writer.q[0].write), 0); /* the parent first */
    world_drain(&w);
    ck_assert_uint_eq(w.store.n, 0);
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* An error row stored while a missing parent holds the checkpoint back is not replayed
 * until the checkpoint passes it: a crash would resend its change, which, failing again,
 * would find its row resolved. Until then a replay leaves it queued and its key blocked. */
START_TEST(a_row_the_checkpoint_has_not_passed_waits_to_be_replayed)
{
    struct world w;
    world_init(&w, 1, 100);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, CHILD, 0, DW_CHANGE_INSERT, 2); /* p2 does not exist yet */
    deliver_txn(w.p, &w.src, w.next_txn++);
    world_poll(&w, true);
    fake_answer(&w.writer, in_flight_to(&w.writer, PARENT, 0), ANSWER_BAD);
    world_poll(&w, false);
    fake_answer(&w.writer, in_flight_to(&w.writer, CHILD, 0), ANSWER_OK); /* missing parent */
    world_poll(&w, true);
    ck_assert_uint_eq(w.store.n, 1);          /* p0's row is stored, */
    ck_assert_uint_eq(w.store.checkpoint, 0); /* the checkpoint held back by c0 */
    world_replay_key(&w, PARENT_MAP_ID, w.store.rows[0].key_text);
    ck_assert_int_eq(w.store.rows[0].status, ROW_QUEUED);
    ck_assert(!w.dv.rows[PARENT][0].exists);

    source_begin(&w.src);
    source_change(&w.src, PARENT, 2, DW_CHANGE_INSERT, 0);
    world_drain(&w);
    ck_assert_int_eq(w.store.rows[0].status, ROW_QUEUED);
    world_replay_key(&w, PARENT_MAP_ID, w.store.rows[0].key_text);
    ck_assert_int_eq(w.store.rows[0].status, ROW_RESOLVED);
    assert_oracle(&w, false);
    world_cleanup(&w);
}
END_TEST

/* A change to a row a copy has not reached yet brings only its delete: the copy writes
 * inserted and updated rows as they are when it reads them, but never sees a deleted one,
 * which Dataverse may hold from an earlier sync. */
START_TEST(rows_not_copied_yet_take_only_their_deletes)
{
    struct world w;
    world_init(&w, 1, 100);
    dv_set(&w.dv, PARENT, 1, &(struct version){true, 1, 0}); /* from an earlier sync */
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 0, DW_CHANGE_UPDATE, 0);
    source_change(&w.src, CHILD, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_DELETE, 0);
    const struct txn *x = &w.src.txns[0];
    ck_assert_int_eq(dw_pipeline_begin(w.p, 700, x->commit_lsn, 1700000000000000), DW_OK);
    for (size_t k = 0; k < x->n; k++)
        deliver_change_to(w.p, &w.src.changes[x->first + k], 700, dw_pipeline_change_removals);
    ck_assert_int_eq(dw_pipeline_commit(w.p, x->commit_lsn, x->end_lsn, 1700000000000000), DW_OK);
    w.next_txn++;
    /* (Not world_poll(): its oracle expects every change taken whole.) */
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert_int_eq(w.writer.q[in_flight_to(&w.writer, PARENT, 1)].write.op, DW_WRITE_DELETE);
    fake_answer(&w.writer, 0, ANSWER_OK);
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert_uint_eq(w.writer.len, 0);
    ck_assert_uint_eq(w.writer.submitted, 1);
    ck_assert(!w.dv.rows[PARENT][1].exists);
    ck_assert(!w.dv.rows[PARENT][0].exists); /* the copy writes it */
    ck_assert(!w.dv.rows[CHILD][0].exists);
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), x->end_lsn);
    ck_assert_uint_eq(w.store.n, 0);
    world_cleanup(&w);
}
END_TEST

/* A stop drains to settled, not idle: a transaction received in part is applied as far as
 * it came, and its rest is not waited for (nothing reads the stream while stopping). */
START_TEST(a_transaction_received_in_part_settles_without_its_rest)
{
    struct world w;
    world_init(&w, 1, 100);
    source_begin(&w.src);
    source_change(&w.src, PARENT, 0, DW_CHANGE_INSERT, 0);
    source_change(&w.src, PARENT, 1, DW_CHANGE_INSERT, 0);
    const struct txn *x = &w.src.txns[0];
    ck_assert_int_eq(dw_pipeline_begin(w.p, 701, x->commit_lsn, 1700000000000000), DW_OK);
    deliver_change_to(w.p, &w.src.changes[x->first], 701, dw_pipeline_change);
    ck_assert(!dw_pipeline_settled(w.p)); /* a change to apply */
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert(!dw_pipeline_settled(w.p)); /* its write in flight */
    fake_answer(&w.writer, 0, ANSWER_OK);
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert(dw_pipeline_settled(w.p));
    ck_assert(!dw_pipeline_idle(w.p));                /* the transaction is still open */
    ck_assert_uint_eq(dw_pipeline_confirmed(w.p), 0); /* its commit never came */
    world_cleanup(&w);
}
END_TEST

/* Delivers, in a transaction of its own, an UPDATE of parent id whose old image (REPLICA
 * IDENTITY FULL) is its new one: nothing mapped changes. */
static void deliver_noop_update(struct world *w, int id, take_fn *take)
{
    source_begin(&w->src);
    const struct txn *x = &w->src.txns[w->src.ntxns - 1];
    struct change_rec rec = {.table = PARENT,
                             .id = id,
                             .op = DW_CHANGE_UPDATE,
                             .commit_lsn = x->commit_lsn,
                             .end_lsn = x->end_lsn,
                             .after = {true, 1, 0}};
    struct tuple_text tt;
    fill_tuple(&tt, &rec, false);
    struct dw_tuple tuple = {relations[PARENT].ncols, tt.cols};
    struct dw_change ch = {.op = DW_CHANGE_UPDATE,
                           .lsn = x->commit_lsn - 0x8,
                           .commit_lsn = x->commit_lsn,
                           .xid = 900,
                           .commit_time_us = 1700000000000000,
                           .rel = &relations[PARENT],
                           .new_tuple = tuple,
                           .old_tuple = tuple,
                           .old_kind = 'O'};
    ck_assert_int_eq(dw_pipeline_begin(w->p, 900, x->commit_lsn, 1700000000000000), DW_OK);
    ck_assert_int_eq(take_typed(take, w->p, &ch), DW_OK);
    ck_assert_int_eq(dw_pipeline_commit(w->p, x->commit_lsn, x->end_lsn, 1700000000000000), DW_OK);
    w->next_txn = w->src.ntxns;
}

/* An update that changes nothing mapped is applied without a request, but not while a copy
 * runs: the row may not be in Dataverse yet (the copy left it to the stream). */
START_TEST(updates_that_change_nothing_are_sent_while_a_copy_runs)
{
    struct world w;
    world_init(&w, 1, 100);
    deliver_noop_update(&w, 0, dw_pipeline_change);
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert_uint_eq(w.writer.len, 0);
    struct dw_pipeline_stats st;
    dw_pipeline_get_stats(w.p, &st);
    ck_assert_uint_eq(st.rows_unchanged, 1);
    deliver_noop_update(&w, 0, dw_pipeline_change_sent);
    ck_assert_int_eq(dw_pipeline_poll(w.p, true), DW_OK);
    ck_assert_uint_eq(w.writer.len, 1);
    ck_assert_int_eq(w.writer.q[in_flight_to(&w.writer, PARENT, 0)].write.op, DW_WRITE_UPSERT);
    world_cleanup(&w);
}
END_TEST

/* --- random runs ------------------------------------------------------------------------ */

#define RANDOM_TXNS  40
#define RANDOM_STEPS 240

/* Windows applied ahead of the one before (pipeline.h) in the random runs of a test. */
static uint64_t random_windows_ahead;

/* One run of a seed; crash_at < 0: no crash. Even seeds apply windows ahead. */
static void random_run(uint32_t seed, int crash_at, int64_t window_rows)
{
    struct world w;
    world_apply_ahead = seed % 2 == 0;
    world_init(&w, seed, window_rows);
    world_apply_ahead = false;
    source_random(&w.src, &w.seed, RANDOM_TXNS);
    for (int step = 0; step < RANDOM_STEPS; step++) {
        if (step == crash_at)
            world_crash(&w);
        world_step(&w);
    }
    world_drain(&w);
    assert_oracle(&w, crash_at >= 0);
    struct dw_pipeline_stats st;
    dw_pipeline_get_stats(w.p, &st);
    random_windows_ahead += st.windows_ahead;
    world_cleanup(&w);
}

/* Random interleavings of deliveries, answers, failures, replays and store faults. */
START_TEST(random_interleavings_keep_every_invariant)
{
    random_windows_ahead = 0;
    for (uint32_t seed = (uint32_t)_i * 100 + 1; seed <= (uint32_t)_i * 100 + 100; seed++)
        random_run(seed, -1, 2 + seed % 6);
    /* The runs exercise windows applied ahead, not only one window at a time. */
    ck_assert_uint_gt(random_windows_ahead, 0);
}
END_TEST

/* A crash at every step of a run: nothing acknowledged is lost, nothing is applied twice
 * out of order within a process, and the end state is the oracle's. */
START_TEST(a_crash_at_every_step_loses_nothing)
{
    uint32_t seed = 9001 + (uint32_t)_i;
    for (int step = 0; step < RANDOM_STEPS; step++)
        random_run(seed, step, 2 + seed % 6);
}
END_TEST

static void quiet_logs(void)
{
    /* Failed and parked writes log warnings by design. */
    dw_log_configure(DW_LOG_ERROR + 1, DW_LOG_LOGFMT);
}

static Suite *pipeline_suite(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("cases");
    tcase_add_test(tc, changes_to_one_row_coalesce);
    tcase_add_test(tc, parents_before_children_and_deletes_children_first);
    tcase_add_test(tc, a_parked_key_blocks_its_followers_until_unblocked);
    tcase_add_test(tc, the_checkpoint_waits_for_answers_and_the_store);
    tcase_add_test(tc, a_missing_parent_is_waited_for_without_passing_the_checkpoint);
    tcase_add_test(tc, a_row_the_checkpoint_has_not_passed_waits_to_be_replayed);
    tcase_add_test(tc, rows_not_copied_yet_take_only_their_deletes);
    tcase_add_test(tc, a_transaction_received_in_part_settles_without_its_rest);
    tcase_add_test(tc, updates_that_change_nothing_are_sent_while_a_copy_runs);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("random");
    tcase_add_loop_test(tr, random_interleavings_keep_every_invariant, 0, 5);
    tcase_add_loop_test(tr, a_crash_at_every_step_loses_nothing, 0, 6);
    suite_add_tcase(s, tr);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = pipeline_suite, .before = quiet_logs};

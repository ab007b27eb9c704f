/*
 * The apply pipeline (see pipeline.h for the checkpoint rule it keeps). Four windows rotate:
 * one fills from the stream, one applies (its plan's levels submitted per group, chains
 * answered through write tickets, missing parents retried with backoff), one may apply
 * ahead of it while it is at its last levels (start_ahead()), and one waits for
 * persist_round() to write its error rows, checkpoint and statistics in one transaction.
 * Runs on the daemon's thread, driven by dw_pipeline_poll() from the runner's loop.
 */
#include "dwasync/pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/errtable.h"
#include "dwasync/failpoint.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/values.h"
#include "dwasync/window.h"

/* Fixed overhead counted per item on top of its values, for the window's byte bound. */
#define ITEM_OVERHEAD_BYTES 512
/* First delay before a missing-parent retry; doubles per attempt. */
#define MISSING_PARENT_DELAY_MS 200
/* Delay before writing a finished window again after the control database failed. */
#define PERSIST_RETRY_MS 1000

/* A chain's ticket and outcome while its window applies. */
struct chain_state {
    struct dw_write_ticket ticket;
    struct dw_pipeline *pipeline;
    size_t chain;
    bool resolved;
    bool deferred; /* missing parent, retries left: carried into the next window */
    bool held;     /* applying ahead: its key has a change of the round before in flight */
    size_t level;  /* index of its level in its group */
    struct dw_write retry_copy; /* what to send again; empty unless the write has lookups */
    /* failure details, for the error row */
    int http_status;
    enum dw_error_class error_class;
    char *code;
    char *message;
    char *missing_parent; /* "<set>(<key>)" when the sink could name it */
    char *payload;        /* the body sent, as JSON text */
};

struct group_cursor {
    size_t level;      /* index of the level in flight */
    size_t unresolved; /* chains of that level not yet applied or failed */
    size_t held;       /* of those, held chains (not sent): cur has not applied their keys */
    bool submitted;
};

/* One window's apply: its plan, and where each of its chains and groups stands. */
struct round {
    struct dw_window *window; /* NULL: no round */
    struct dw_plan plan;
    struct chain_state *chains;
    struct group_cursor *groups;
};

struct dw_pipeline {
    struct dw_pipeline_options opts;
    const struct dw_pipeline_writer *writer;
    const struct dw_pipeline_store *store;
    const struct dw_job_maps *maps;

    /* A window fills, then applies (cur), then waits for its error rows and checkpoint to
     * be written (done) while the next one's requests are already out. While cur is at
     * its last levels, the next window may apply ahead of it: its chains of keys that cur
     * has not applied wait (held) until cur is finished. */
    struct dw_window windows[4];
    struct dw_window *filling;
    struct round cur;   /* the round applying; window NULL when none is */
    struct round ahead; /* the round applying ahead of cur; window NULL when none is */
    struct round done;  /* the round applied, to persist; window NULL when there is none */
    int64_t persist_retry_at_ms;
    /* Chains carried into the filling window (a missing parent) are sent no earlier than
     * this (0: none carried). Windows they left behind are persisted without moving the
     * checkpoint; the furthest commit they hold back waits here for the next window that
     * holds back none. */
    int64_t carry_due_ms;
    dw_lsn held_lsn;
    int64_t held_time_us;

    struct dw_blocked_keys *blocked;
    struct dw_mapped_vec mapped; /* reused per change */

    struct dw_window_sizing sizing; /* the filling window's row bound (window.h) */
    bool drained;                   /* the stream had nothing more to read (runner) */

    int64_t *atomic_maps; /* ids of the maps with options.atomic */
    size_t natomic_maps;

    bool in_txn;
    bool skipping_txn;
    uint32_t txn_xid;
    dw_lsn txn_commit_lsn;
    int64_t txn_time_us;
    bool txn_atomic;      /* the open transaction has changes through atomic maps */
    size_t txn_items;     /* its items in the filling window */
    dw_lsn warned_lsn;    /* the last transaction warned about as split */
    dw_lsn taken_end_lsn; /* end LSN of the last transaction taken into a window */

    struct dw_pipeline_stats stats;
};

/* The pipeline's monotonic clock (pipeline.h: the options may name the test's). */
static int64_t now_ms(const struct dw_pipeline *p)
{
    return p->opts.clock_ms ? p->opts.clock_ms() : dw_clock_ms();
}

void dw_write_ticket_dispatch(void *user, void *write_user, const struct dw_write_result *r)
{
    (void)user;
    struct dw_write_ticket *t = write_user;
    t->done(t, r);
}

/* Whether a write refers to other rows (lookups), and so may meet a missing parent. */
static bool write_has_references(const struct dw_write *w)
{
    const char *name;
    json_t *value;
    json_object_foreach(w->key, name, value)
    {
        if (json_is_object(value))
            return true;
    }
    return dw_refs_count(w->refs) > 0;
}

/* The sink never modifies a write's key, body or refs (sink.h), so a copy shares them. */
static void write_copy(struct dw_write *dst, const struct dw_write *src)
{
    dst->op = src->op;
    dst->entity_set = dw_strdup(src->entity_set);
    dst->logical_name = dw_strdup(src->logical_name ? src->logical_name : "");
    dst->key = json_incref(src->key);
    dst->body = dw_text_hold(src->body);
    dst->refs = dw_refs_hold(src->refs);
    dst->options = json_incref(src->options);
}

/* The items a window holds when it closes: its row bound, or fewer when its byte bound
 * (ITEM_OVERHEAD_BYTES at least per item) comes first. */
static size_t window_items(const struct dw_pipeline *p)
{
    int64_t by_bytes = p->opts.window_bytes / ITEM_OVERHEAD_BYTES + 1;
    return (size_t)(p->sizing.rows < by_bytes ? p->sizing.rows : by_bytes);
}

dw_rc dw_pipeline_new(const struct dw_pipeline_options *opts,
                      const struct dw_pipeline_writer *writer,
                      const struct dw_pipeline_store *store, const struct dw_job_maps *maps,
                      struct dw_pipeline **out)
{
    struct dw_pipeline *p = dw_calloc(1, sizeof *p);
    p->opts = *opts;
    p->writer = writer;
    p->store = store;
    p->maps = maps;
    for (size_t i = 0; i < 3; i++)
        dw_window_init(&p->windows[i]);
    p->filling = &p->windows[0];
    p->blocked = dw_blocked_keys_new();
    dw_window_sizing_init(&p->sizing, opts->window_rows, opts->batch_size,
                          opts->window_growth > 0 ? opts->window_growth : DW_WINDOW_GROWTH_DEFAULT);
    dw_window_reserve(p->filling, window_items(p));
    const struct dw_jobdef *def = dw_job_maps_def(maps);
    for (size_t g = 0; def && g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            if (!def->groups[g].maps[i].atomic)
                continue;
            p->atomic_maps =
                dw_realloc(p->atomic_maps, (p->natomic_maps + 1) * sizeof *p->atomic_maps);
            p->atomic_maps[p->natomic_maps++] = def->groups[g].maps[i].id;
        }
    }
    dw_rc rc = store->load_blocked(store->user, opts->job_id, p->blocked);
    if (rc == DW_OK)
        rc = store->load_checkpoint(store->user, opts->job_id, &p->stats.confirmed_lsn);
    if (rc != DW_OK) {
        dw_pipeline_free(p);
        return rc;
    }
    p->taken_end_lsn = p->stats.confirmed_lsn; /* what the checkpoint passed is not taken again */
    if (dw_blocked_keys_count(p->blocked))
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", opts->job_name}),
                "%zu source keys are blocked behind open errors; their changes will wait",
                dw_blocked_keys_count(p->blocked));
    *out = p;
    return DW_OK;
}

/* Frees a round's state and empties its window for reuse. */
static void release_round(struct round *r)
{
    for (size_t i = 0; i < r->plan.nchains && r->chains; i++) {
        struct chain_state *cs = &r->chains[i];
        dw_write_cleanup(&cs->retry_copy);
        free(cs->code);
        free(cs->message);
        free(cs->missing_parent);
        free(cs->payload);
    }
    free(r->chains);
    free(r->groups);
    dw_plan_cleanup(&r->plan);
    if (r->window)
        dw_window_reset(r->window);
    *r = (struct round){0};
}

void dw_pipeline_free(struct dw_pipeline *p)
{
    if (p == NULL)
        return;
    release_round(&p->cur);
    release_round(&p->ahead);
    release_round(&p->done);
    for (size_t i = 0; i < sizeof p->windows / sizeof p->windows[0]; i++)
        dw_window_cleanup(&p->windows[i]);
    dw_blocked_keys_free(p->blocked);
    dw_mapped_vec_cleanup(&p->mapped);
    free(p->atomic_maps);
    free(p);
}

dw_rc dw_pipeline_begin(struct dw_pipeline *p, uint32_t xid, dw_lsn commit_lsn,
                        int64_t commit_time_us)
{
    if (p->in_txn) {
        DW_ERROR("transaction %u began before transaction %u committed", xid, p->txn_xid);
        return DW_ERR_PROTOCOL;
    }
    p->in_txn = true;
    p->txn_xid = xid;
    p->txn_commit_lsn = commit_lsn;
    p->txn_time_us = commit_time_us;
    p->txn_atomic = false;
    p->txn_items = 0;
    /* A transaction taken before (the server resends after a reconnect) is not taken twice. */
    p->skipping_txn = commit_lsn < p->taken_end_lsn;
    if (p->skipping_txn)
        DW_DEBUG("skipping transaction %u at %X/%X: already received", xid,
                 DW_LSN_ARGS(commit_lsn));
    return DW_OK;
}

static size_t change_bytes(const struct dw_change *c)
{
    size_t n = ITEM_OVERHEAD_BYTES;
    for (int i = 0; i < c->new_tuple.ncols; i++)
        n += c->new_tuple.cols[i].len;
    for (int i = 0; i < c->old_tuple.ncols; i++)
        n += c->old_tuple.cols[i].len;
    return n;
}

/* Appends an item for a change of the table reader (a map of it) reads. */
static struct dw_item *push_item(struct dw_pipeline *p, const struct dw_change *c,
                                 const struct dw_tablemap *reader)
{
    struct dw_window *w = p->filling;
    struct dw_item *it = dw_window_push(w);
    it->commit_lsn = p->txn_commit_lsn;
    it->xid = p->txn_xid;
    it->commit_time_us = p->txn_time_us;
    it->position = c->index;
    it->op = c->op;
    it->source_schema = reader->source_schema;
    it->source_table = reader->source_table;
    it->bytes = change_bytes(c);
    w->bytes += it->bytes;
    p->txn_items++;
    if (w->opened_ms == 0)
        w->opened_ms = now_ms(p);
    return it;
}

/* The row as Postgres sent it (text values), for error rows of rows that could not be typed. */
static json_t *raw_tuple_json(const struct dw_relation *rel, const struct dw_tuple *t)
{
    json_t *o = json_object();
    for (int i = 0; i < t->ncols && i < rel->ncols; i++) {
        const struct dw_datum *d = &t->cols[i];
        if (d->kind == DW_DATUM_TEXT)
            json_object_set_new(o, rel->cols[i].name, json_stringn_nocheck(d->data, d->len));
        else if (d->kind == DW_DATUM_NULL)
            json_object_set_new(o, rel->cols[i].name, json_null());
    }
    return o;
}

/* Whether two objects hold the very same values under the same names in the same order:
 * their texts are then equal. */
static bool same_members(const json_t *a, const json_t *b)
{
    if (a == NULL || b == NULL || json_object_size(a) != json_object_size(b))
        return false;
    void *i = json_object_iter((json_t *)a), *j = json_object_iter((json_t *)b);
    for (; i && j;
         i = json_object_iter_next((json_t *)a, i), j = json_object_iter_next((json_t *)b, j)) {
        if (json_object_iter_value(i) != json_object_iter_value(j) ||
            strcmp(json_object_iter_key(i), json_object_iter_key(j)) != 0)
            return false;
    }
    return i == NULL && j == NULL;
}

/* The compact JSON text of a row image (NULL stays NULL); the reference is released. */
static char *image_text(json_t *image)
{
    char *text = image ? dw_json_dumps(image) : NULL;
    json_decref(image);
    return text;
}

/*
 * The old image of a change, as text. Under REPLICA IDENTITY FULL an update's old image
 * repeats the new one but for the columns the update changed, so it is kept as the
 * difference (*delta set): [{<column>: <old value>, ...}, [<columns only the new image has>]].
 * A key-only old image is short already and kept whole. whole_old_image_text() puts it together.
 */
static char *old_image_text(const json_t *new_row, const json_t *old_row, bool *delta)
{
    *delta = false;
    if (old_row == NULL)
        return NULL;
    if (new_row == NULL || json_object_size(old_row) < json_object_size(new_row) / 2)
        return dw_json_dumps(old_row); /* a key-only old image is short already */
    json_t *changed = json_object(), *gone = json_array();
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)old_row, name, v)
    {
        const json_t *now = json_object_get(new_row, name);
        if (now == NULL || !json_equal(now, v))
            json_object_set(changed, name, v);
    }
    json_object_foreach((json_t *)new_row, name, v)
    {
        if (json_object_get(old_row, name) == NULL)
            json_array_append_new(gone, json_string(name));
    }
    json_t *diff = json_array();
    json_array_append_new(diff, changed);
    json_array_append_new(diff, gone);
    char *text = dw_json_dumps(diff);
    json_decref(diff);
    *delta = true;
    return text;
}

/* A change whose row could not be read at all (defensive: only a TRUNCATE has none, and it
 * goes through dw_mapping_truncate()): it blocks no key. */
static void push_unmapped_error(struct dw_pipeline *p, const struct dw_change *c,
                                const struct dw_tablemap *reader, json_t *new_row, json_t *old_row,
                                char *message)
{
    struct dw_item *it = push_item(p, c, reader);
    it->mapped.ok = false;
    it->mapped.error_class = DW_ERRCLASS_MAPPING;
    it->mapped.error = message;
    it->new_row = image_text(new_row);
    it->old_row = image_text(old_row);
    it->source_key = dw_strdup("{}");
}

static bool map_is_atomic(const struct dw_pipeline *p, int64_t map_id)
{
    for (size_t i = 0; i < p->natomic_maps; i++)
        if (p->atomic_maps[i] == map_id)
            return true;
    return false;
}

/* A TRUNCATE is not replicated: an open error per map of each table, blocking no row. */
static dw_rc take_truncate(struct dw_pipeline *p, const struct dw_change *c)
{
    int part = 0; /* one change, many rows: told apart by part (the error table's identity) */
    for (int i = 0; i < c->ntruncated; i++) {
        const struct dw_relation *rel = c->truncated[i];
        const struct dw_tablemap *reader = dw_job_maps_reader(p->maps, rel->schema, rel->name);
        dw_mapped_vec_reset(&p->mapped);
        dw_mapping_truncate(p->maps, rel->schema, rel->name, &p->mapped);
        for (size_t k = 0; reader && k < p->mapped.len; k++) {
            struct dw_item *it = push_item(p, c, reader);
            it->part = part++;
            it->mapped = p->mapped.items[k];
            memset(&p->mapped.items[k], 0, sizeof p->mapped.items[k]);
            it->source_key = dw_strdup("{}");
        }
    }
    return DW_OK;
}

/* Keeps the deletes among the mapped writes of a change and drops the rest (upserts, and
 * failures: the copy reads the row later and maps it then). */
static void keep_removals(struct dw_mapped_vec *v)
{
    size_t kept = 0;
    for (size_t i = 0; i < v->len; i++) {
        struct dw_mapped *m = &v->items[i];
        if (m->ok && m->write.op == DW_WRITE_DELETE) {
            struct dw_mapped keep = *m;
            v->items[i] = v->items[kept];
            v->items[kept++] = keep;
        }
    }
    /* dw_mapped_vec_reset() frees what is past the kept ones. */
    struct dw_mapped_vec rest = {v->items + kept, v->len - kept, 0};
    dw_mapped_vec_reset(&rest);
    v->len = kept;
}

/* How a change is taken: whole, whole with every write sent, or only its deletes. */
enum take { TAKE_ALL, TAKE_SENT, TAKE_REMOVALS };

static dw_rc take_change(struct dw_pipeline *p, const struct dw_typed_change *typed, enum take how)
{
    const struct dw_change *c = typed->change;
    if (!p->in_txn) {
        DW_ERROR("a change arrived outside a transaction");
        return DW_ERR_PROTOCOL;
    }
    if (p->skipping_txn)
        return DW_OK;
    p->stats.changes_received++;
    if (p->opts.observer && c->rel)
        p->opts.observer->changed(p->opts.observer->user, DW_OBSERVED_RECEIVED, c->rel->schema,
                                  c->rel->name, "", dw_change_op_name(c->op), p->txn_time_us);
    if (c->op == DW_CHANGE_TRUNCATE)
        return take_truncate(p, c);
    const struct dw_relation *rel = c->rel;
    const struct dw_tablemap *reader = dw_job_maps_reader(p->maps, rel->schema, rel->name);
    if (reader == NULL) {
        p->stats.changes_ignored++;
        return DW_OK;
    }

    /* A value that cannot be converted (or is over max_value_bytes) does not stop the row
     * from being mapped: its map, key and target are known, so it is parked as an open
     * error that blocks exactly its key, and a replay after a fix of the map or data works. */
    const struct dw_row_json row = typed->row;
    const char *problem = typed->problem;
    if (how == TAKE_REMOVALS && (typed->rc != DW_OK || problem)) {
        p->stats.changes_ignored++;
        return DW_OK;
    }
    if (typed->rc != DW_OK) {
        push_unmapped_error(p, c, reader,
                            c->new_tuple.ncols ? raw_tuple_json(rel, &c->new_tuple) : NULL,
                            c->old_tuple.ncols ? raw_tuple_json(rel, &c->old_tuple) : NULL,
                            dw_strdup(problem ? problem : dw_rc_str(typed->rc)));
        return DW_OK;
    }
    if (problem) {
        char lsn[DW_LSN_STRLEN];
        char *key = row.key ? dw_json_canonical(row.key) : dw_strdup("{}");
        DW_LOGF(DW_LOG_WARN,
                DW_FIELDS({"job", p->opts.job_name}, {"table", rel->name}, {"key", key},
                          {"lsn", dw_lsn_format(c->lsn, lsn)}),
                "change cannot be converted, parked: %s", problem);
        free(key);
    }

    struct dw_source_row src = {
        .schema = rel->schema,
        .table = rel->name,
        .op = c->op,
        .new_row = row.new_row,
        .old_row = row.old_row,
        .unchanged = row.unchanged,
    };
    dw_mapped_vec_reset(&p->mapped);
    dw_rc rc = dw_mapping_map_row(p->maps, &src, &p->mapped);
    if (rc != DW_OK)
        return rc;
    if (how == TAKE_REMOVALS)
        keep_removals(&p->mapped);
    for (size_t i = 0; how == TAKE_SENT && i < p->mapped.len; i++)
        p->mapped.items[i].unchanged = false;
    for (size_t i = 0; problem && i < p->mapped.len; i++) {
        struct dw_mapped *m = &p->mapped.items[i];
        dw_write_cleanup(&m->write);
        free(m->error);
        m->ok = false;
        m->error_class = DW_ERRCLASS_MAPPING;
        m->error = dw_strdup(problem);
    }
    if (p->mapped.len == 0)
        p->stats.changes_ignored++;

    int64_t previous_map = 0;
    char *new_text = p->mapped.len ? image_text(json_incref(row.new_row)) : NULL;
    bool old_delta = false;
    char *old_text = p->mapped.len ? old_image_text(row.new_row, row.old_row, &old_delta) : NULL;
    /* Under REPLICA IDENTITY FULL the source key is the whole row: then it is not kept
     * twice (NULL, see window.h). */
    const json_t *image = row.new_row ? row.new_row : row.old_row;
    char *source_key = NULL;
    if (p->mapped.len && row.key == NULL)
        source_key = dw_strdup("{}");
    else if (p->mapped.len && !same_members(row.key, image))
        source_key = dw_json_dumps(row.key);
    char *unchanged_text =
        p->mapped.len && json_array_size(row.unchanged) ? dw_json_dumps(row.unchanged) : NULL;
    for (size_t i = 0; i < p->mapped.len; i++) {
        struct dw_item *it = push_item(p, c, reader);
        it->mapped = p->mapped.items[i];
        memset(&p->mapped.items[i], 0, sizeof p->mapped.items[i]);
        /* A key-changing update yields two writes through one map: parts 0 and 1. */
        it->part = i > 0 && previous_map == it->mapped.map_id;
        previous_map = it->mapped.map_id;
        /* The initial sync (xid 0) copies tables, not transactions: nothing to group. */
        it->atomic = p->txn_xid != 0 && it->mapped.map_id && map_is_atomic(p, it->mapped.map_id);
        p->txn_atomic |= it->atomic;
        it->source_key = i == 0 || source_key == NULL ? source_key : dw_strdup(source_key);
        /* The identity changes are parked behind is the Dataverse row (the mapping engine
         * always names it): the replica-identity key is the whole row under REPLICA
         * IDENTITY FULL, so it would differ between two updates of the same row. */
        if (it->mapped.target_id == NULL)
            it->key_text = row.key ? dw_json_canonical(row.key) : dw_strdup("{}");
        it->new_row = i == 0 ? new_text : (new_text ? dw_strdup(new_text) : NULL);
        it->old_row = i == 0 ? old_text : (old_text ? dw_strdup(old_text) : NULL);
        it->old_row_delta = old_delta;
        it->unchanged = unchanged_text ? dw_strdup(unchanged_text) : NULL;
    }
    free(unchanged_text);
    return DW_OK;
}

dw_rc dw_pipeline_change(struct dw_pipeline *p, const struct dw_typed_change *c)
{
    return take_change(p, c, TAKE_ALL);
}

dw_rc dw_pipeline_change_sent(struct dw_pipeline *p, const struct dw_typed_change *c)
{
    return take_change(p, c, TAKE_SENT);
}

dw_rc dw_pipeline_change_removals(struct dw_pipeline *p, const struct dw_typed_change *c)
{
    return take_change(p, c, c->change->op == DW_CHANGE_TRUNCATE ? TAKE_ALL : TAKE_REMOVALS);
}

dw_rc dw_pipeline_commit(struct dw_pipeline *p, dw_lsn commit_lsn, dw_lsn end_lsn,
                         int64_t commit_time_us)
{
    if (!p->in_txn) {
        DW_ERROR("commit at %X/%X without a transaction", DW_LSN_ARGS(commit_lsn));
        return DW_ERR_PROTOCOL;
    }
    p->in_txn = false;
    if (p->skipping_txn)
        return DW_OK;
    struct dw_window *w = p->filling;
    w->commit_end_lsn = end_lsn;
    w->commit_time_us = commit_time_us;
    w->commits++;
    if (w->opened_ms == 0)
        w->opened_ms = now_ms(p);
    p->taken_end_lsn = end_lsn;
    return DW_OK;
}

void dw_pipeline_reset(struct dw_pipeline *p)
{
    size_t before = p->filling->len;
    /* Carried chains were taken from windows already applied: they are not received again. */
    dw_window_keep_carried(p->filling);
    size_t dropped = before - p->filling->len;
    p->in_txn = false;
    p->skipping_txn = false;
    /* What the applying (and the applied) window holds will be resent too; it must not be
     * taken twice. */
    const struct dw_window *last = p->ahead.window ? p->ahead.window
                                   : p->cur.window ? p->cur.window
                                                   : p->done.window;
    p->taken_end_lsn = last && last->commit_end_lsn ? last->commit_end_lsn : p->stats.confirmed_lsn;
    if (dropped)
        DW_LOGF(DW_LOG_INFO, DW_FIELDS({"job", p->opts.job_name}),
                "stream reconnected: %zu received changes will be received again", dropped);
}

/*
 * Whether the filling window must stay open for the rest of the open transaction: one with
 * atomic changes goes whole into one window, so its unit is whole, unless it is larger
 * than a changeset can be (then memory stays bounded and it is applied in parts). Such a
 * transaction's window may close only after a whole multiple of DW_SINK_ATOMIC_MAX of its
 * changes, so its changesets are 1,000 each (the last one the remainder) whatever the
 * clock does: a window closed by window_ms in between would cut one more, smaller part.
 */
static bool holding_txn(const struct dw_pipeline *p)
{
    return p->in_txn && !p->skipping_txn && p->txn_atomic && p->txn_items % DW_SINK_ATOMIC_MAX;
}

size_t dw_pipeline_room(const struct dw_pipeline *p)
{
    const struct dw_window *w = p->filling;
    if (holding_txn(p))
        return SIZE_MAX;
    /* While a window applies ahead, the next one waits to fill: the windows held in memory
     * stay three (applying, ahead, and filling or persisting), as without applying ahead. */
    if (p->ahead.window || (int64_t)w->len >= p->sizing.rows ||
        (int64_t)w->bytes >= p->opts.window_bytes)
        return 0;
    return (size_t)(p->sizing.rows - (int64_t)w->len);
}

bool dw_pipeline_accepting(const struct dw_pipeline *p)
{
    return dw_pipeline_room(p) > 0;
}

/* Nothing more to read, at the end of a transaction: the window closes without waiting
 * for window_ms (a change waits for no timer; when the reader is ahead, the window is full
 * before the previous one is applied, and this rule never comes into play). */
static bool drained_at_commit(const struct dw_pipeline *p)
{
    return p->drained && !p->in_txn;
}

static bool filling_due(const struct dw_pipeline *p, bool flush, int64_t now)
{
    const struct dw_window *w = p->filling;
    if (dw_window_empty(w) || holding_txn(p))
        return false;
    /* A carried chain waits for its retry time, even on a flush (else an idle stream would
     * spend its retries at once), unless the window is full. */
    if (p->carry_due_ms > now && dw_pipeline_accepting(p))
        return false;
    return flush || !dw_pipeline_accepting(p) || drained_at_commit(p) ||
           now - w->opened_ms >= p->opts.window_ms;
}

void dw_pipeline_stream_drained(struct dw_pipeline *p, bool drained)
{
    p->drained = drained;
}

static void chain_done(struct dw_write_ticket *t, const struct dw_write_result *r);

/* A chain resolved without a write result (never sent). */
static void resolve_unsent(struct round *r, size_t chain, enum dw_error_class cls,
                           const char *message)
{
    struct chain_state *cs = &r->chains[chain];
    cs->error_class = cls;
    cs->code = dw_strdup("");
    cs->message = dw_strdup(message);
    cs->resolved = true;
    r->groups[r->plan.chains[chain].group].unresolved--;
}

/*
 * Hands one atomic unit to the sink as one group. A row of it blocked since the plan (an
 * earlier unit of this window failed on it) parks its chain, and the rest of the unit is
 * not sent: all or nothing.
 */
static void submit_unit(struct dw_pipeline *p, struct round *r, size_t u)
{
    const struct dw_unit *unit = &r->plan.units[u];
    const struct dw_item *blocked_head = NULL;
    for (size_t k = 0; k < unit->nchains && blocked_head == NULL; k++) {
        const struct dw_chain *c = &r->plan.chains[unit->chains[k]];
        const struct dw_item *head = &r->window->items[c->items[0]];
        if (dw_blocked_keys_contains(p->blocked, head->mapped.map_id, dw_item_key(head)))
            blocked_head = head;
    }
    if (blocked_head) {
        char *msg = dw_asprintf("not sent: %s in the same atomic group is waiting behind an "
                                "open error of its key",
                                blocked_head->mapped.target_id);
        for (size_t k = 0; k < unit->nchains; k++) {
            size_t chain = unit->chains[k];
            const struct dw_item *head = &r->window->items[r->plan.chains[chain].items[0]];
            if (dw_blocked_keys_contains(p->blocked, head->mapped.map_id, dw_item_key(head)))
                dw_plan_park_chain(&r->plan, r->window, chain, p->blocked);
            else
                dw_plan_fail_chain(&r->plan, r->window, chain, p->blocked);
            resolve_unsent(r, chain, DW_ERRCLASS_CONFLICT, msg);
        }
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"job", p->opts.job_name}),
                "atomic group of transaction %u not sent: %s", unit->xid, msg);
        free(msg);
        return;
    }
    struct dw_write *writes = dw_calloc(unit->nchains, sizeof *writes);
    void **users = dw_calloc(unit->nchains, sizeof *users);
    for (size_t k = 0; k < unit->nchains; k++) {
        struct dw_chain *c = &r->plan.chains[unit->chains[k]];
        c->attempts++;
        writes[k] = c->write;
        memset(&c->write, 0, sizeof c->write);
        users[k] = &r->chains[unit->chains[k]].ticket;
    }
    if (p->writer->submit_atomic(p->writer->user, writes, users, unit->nchains) != DW_OK) {
        for (size_t k = 0; k < unit->nchains; k++) {
            dw_write_cleanup(&writes[k]);
            dw_plan_fail_chain(&r->plan, r->window, unit->chains[k], p->blocked);
            resolve_unsent(r, unit->chains[k], DW_ERRCLASS_UNKNOWN,
                           "the atomic group was refused as malformed");
        }
    }
    free(writes);
    free(users);
}

/* Hands chains (outside atomic units) of one level of a round to the sink. */
static void submit_chains(struct dw_pipeline *p, struct round *r, const size_t *chains, size_t n)
{
    if (n == 0)
        return;
    struct dw_write *writes = dw_calloc(n, sizeof *writes);
    void **users = dw_calloc(n, sizeof *users);
    for (size_t k = 0; k < n; k++) {
        struct chain_state *cs = &r->chains[chains[k]];
        struct dw_chain *c = &r->plan.chains[chains[k]];
        c->attempts++;
        if (write_has_references(&c->write) && p->opts.missing_parent_retries > 0)
            write_copy(&cs->retry_copy, &c->write);
        writes[k] = c->write;
        memset(&c->write, 0, sizeof c->write);
        users[k] = &cs->ticket;
    }
    dw_rc rc = p->writer->submit(p->writer->user, writes, users, n);
    if (rc != DW_OK) {
        /* A malformed write is a bug in a map or the mapping; fail just those rows. */
        for (size_t k = 0; k < n; k++) {
            struct dw_write_result res = {.status = DW_WRITE_REJECTED,
                                          .error_class = DW_ERRCLASS_UNKNOWN,
                                          .code = "",
                                          .message = "the write was refused as malformed"};
            dw_write_cleanup(&writes[k]);
            chain_done(users[k], &res);
        }
    }
    free(writes);
    free(users);
}

/*
 * Hands one level of a group to the sink: its atomic units, then its chains. A held chain
 * waits (it counts as unresolved until release_held()); one resolved before its level came
 * (release_held() parked or deferred it) is not sent.
 */
static void submit_level(struct dw_pipeline *p, struct round *r, size_t g)
{
    const struct dw_level *lv = &r->plan.groups[g].levels[r->groups[g].level];
    size_t *send = dw_calloc(lv->nchains ? lv->nchains : 1, sizeof *send);
    size_t nsend = 0, total = 0;
    for (size_t k = 0; k < lv->nchains; k++) {
        const struct chain_state *cs = &r->chains[lv->chains[k]];
        if (cs->resolved)
            continue;
        total++;
        if (!cs->held)
            send[nsend++] = lv->chains[k];
    }
    r->groups[g].held = total - nsend;
    for (size_t k = 0; k < lv->nunits; k++)
        total += r->plan.units[lv->units[k]].nchains;
    /* Counted before anything is handed on: a refused write resolves at once. */
    r->groups[g].unresolved = total;
    r->groups[g].submitted = true;
    for (size_t k = 0; k < lv->nunits; k++)
        submit_unit(p, r, lv->units[k]);
    submit_chains(p, r, send, nsend);
    free(send);
}

/* The round a chain's ticket belongs to: the one applying, or the one applying ahead. */
static struct round *round_of(struct dw_pipeline *p, const struct chain_state *cs)
{
    struct round *a = &p->ahead;
    if (a->window && cs >= a->chains && cs < a->chains + a->plan.nchains)
        return a;
    return &p->cur;
}

static void chain_done(struct dw_write_ticket *t, const struct dw_write_result *res)
{
    struct chain_state *cs = (struct chain_state *)t;
    struct dw_pipeline *p = cs->pipeline;
    struct round *r = round_of(p, cs);
    struct dw_chain *c = &r->plan.chains[cs->chain];
    if (res->status == DW_WRITE_APPLIED) {
        dw_plan_apply_chain(&r->plan, r->window, cs->chain);
        p->stats.rows_applied += c->nitems;
    } else if (res->error_class == DW_ERRCLASS_MISSING_PARENT && c->unit < 0 &&
               c->attempts <= p->opts.missing_parent_retries && cs->retry_copy.entity_set) {
        /* The parent may come in a later transaction: the chain is carried into the next
         * window (carry_deferred()), which sees it, and meanwhile other rows go on. */
        cs->deferred = true;
        for (size_t i = 0; i < c->nitems; i++)
            r->window->items[c->items[i]].state = DW_ITEM_DEFERRED;
        const struct dw_item *head = &r->window->items[c->items[0]];
        char attempt[16];
        snprintf(attempt, sizeof attempt, "%d", c->attempts);
        DW_LOGF(c->attempts == 1 ? DW_LOG_INFO : DW_LOG_DEBUG,
                DW_FIELDS({"job", p->opts.job_name}, {"target", head->mapped.target_id},
                          {"parent", res->missing_parent ? res->missing_parent : ""},
                          {"attempt", attempt}),
                "change waits for its parent; other rows go on");
    } else {
        cs->http_status = res->http_status;
        cs->error_class = res->error_class;
        cs->code = dw_strdup(res->code ? res->code : "");
        if (res->missing_parent) {
            cs->message = dw_asprintf("%s (missing parent: %s)", res->message ? res->message : "",
                                      res->missing_parent);
            cs->missing_parent = dw_strdup(res->missing_parent);
        } else
            cs->message = dw_strdup(res->message ? res->message : "");
        cs->payload = res->payload ? dw_strdup(res->payload) : NULL;
        dw_plan_fail_chain(&r->plan, r->window, cs->chain, p->blocked);
        char status[16];
        snprintf(status, sizeof status, "%d", res->http_status);
        const struct dw_item *head = &r->window->items[c->items[0]];
        /* The sink logged an atomic group's failure once; its rows need no line each. */
        DW_LOGF(c->unit >= 0 ? DW_LOG_DEBUG : DW_LOG_WARN,
                DW_FIELDS({"job", p->opts.job_name}, {"target", head->mapped.target_id},
                          {"status", status}, {"code", cs->code},
                          {"class", dw_error_class_name(res->error_class)}),
                "write failed, %zu change(s) parked: %s", c->nitems, cs->message);
    }
    cs->resolved = true;
    r->groups[c->group].unresolved--;
}

/* Warns, once per transaction, that it is applied in parts rather than all or nothing (the
 * README quotes this text). */
static void warn_split(struct dw_pipeline *p, uint32_t xid, dw_lsn commit_lsn)
{
    if (p->warned_lsn == commit_lsn)
        return;
    p->warned_lsn = commit_lsn;
    char lsn[DW_LSN_STRLEN];
    DW_LOGF(DW_LOG_WARN,
            DW_FIELDS({"job", p->opts.job_name}, {"lsn", dw_lsn_format(commit_lsn, lsn)}),
            "transaction %u has more than 1,000 rows for atomic maps: it is applied in changesets "
            "of at most %d rows, each atomic on its own, not as one",
            xid, DW_SINK_ATOMIC_MAX);
}

/* The window neither filling, applying (or applying ahead) nor waiting to be persisted. */
static struct dw_window *spare_window(struct dw_pipeline *p)
{
    for (size_t i = 0;; i++) {
        struct dw_window *w = &p->windows[i];
        if (w != p->filling && w != p->cur.window && w != p->ahead.window && w != p->done.window)
            return w;
    }
}

/* The key a chain blocks (its head's): a held set and the blocked keys name it so. */
static const struct dw_item *chain_head(const struct round *r, size_t chain)
{
    return &r->window->items[r->plan.chains[chain].items[0]];
}

static bool advance_groups(struct dw_pipeline *p, struct round *r);

/*
 * Makes the filling window a round (into r) and hands the first level of each group to the
 * sink. held (NULL: none) names keys a round before it has not applied yet: r's chains of
 * them wait for release_held().
 */
static void start_round(struct dw_pipeline *p, struct round *r, const struct dw_blocked_keys *held)
{
    struct dw_window *w = p->filling;
    /* Caught up: drained, and the last commit is recent (a momentary pause of the server's
     * sending during a backlog is not catching up). */
    bool behind = !dw_pipeline_accepting(p) || !drained_at_commit(p) ||
                  !dw_window_recent(w, dw_clock_wall_us());
    if (p->in_txn && !p->skipping_txn && p->txn_atomic)
        warn_split(p, p->txn_xid, p->txn_commit_lsn);
    p->filling = spare_window(p);
    r->window = w;
    p->txn_items = 0;
    p->carry_due_ms = 0;
    dw_plan_build(w, p->blocked, &r->plan);
    p->stats.rows_unchanged += r->plan.unchanged;
    int64_t bound = p->sizing.rows;
    if (dw_window_sizing_learn(&p->sizing, &r->plan, behind) != bound)
        DW_DEBUG("window of %zu rows (%s): bulk requests %.0f%% full; windows now take %" PRId64
                 " rows",
                 w->len, behind ? "behind" : "caught up",
                 100 * dw_plan_request_fill(&r->plan, p->opts.batch_size), p->sizing.rows);
    dw_window_reserve(p->filling, window_items(p));
    for (size_t u = 0; u < r->plan.nunits; u++)
        if (r->plan.units[u].nparts > 1)
            warn_split(p, r->plan.units[u].xid, r->plan.units[u].commit_lsn);
    r->chains = dw_calloc(r->plan.nchains ? r->plan.nchains : 1, sizeof *r->chains);
    r->groups = dw_calloc(r->plan.ngroups ? r->plan.ngroups : 1, sizeof *r->groups);
    for (size_t i = 0; i < r->plan.nchains; i++) {
        r->chains[i].ticket.done = chain_done;
        r->chains[i].pipeline = p;
        r->chains[i].chain = i;
    }
    size_t nheld = 0;
    for (size_t g = 0; g < r->plan.ngroups; g++)
        for (size_t l = 0; l < r->plan.groups[g].nlevels; l++) {
            const struct dw_level *lv = &r->plan.groups[g].levels[l];
            for (size_t k = 0; k < lv->nchains; k++) {
                struct chain_state *cs = &r->chains[lv->chains[k]];
                const struct dw_item *head = chain_head(r, lv->chains[k]);
                cs->level = l;
                cs->held =
                    held && dw_blocked_keys_contains(held, head->mapped.map_id, dw_item_key(head));
                nheld += cs->held;
            }
        }
    if (held)
        DW_DEBUG("window of %zu rows applies ahead of the one at its last levels (%zu "
                 "chain(s) wait for it)",
                 w->len, nheld);
    /* (A group whose only changes form atomic units that could not be sent has no level.) */
    (void)advance_groups(p, r);
}

/* Where a level comes in a group's apply order: writes by ascending sequence (parents
 * first), then deletes by descending sequence (children first). */
static int64_t level_rank(const struct dw_level *lv)
{
    return lv->deletes ? (INT64_C(1) << 40) - lv->sequence : lv->sequence;
}

/* The index of the group named name in round r (with levels), or -1. */
static int group_named(const struct round *r, const char *name)
{
    for (size_t g = 0; g < r->plan.ngroups; g++)
        if (r->plan.groups[g].nlevels && strcmp(r->plan.groups[g].name, name) == 0)
            return (int)g;
    return -1;
}

/*
 * Whether level l of group g of r may be handed to the sink now: with a round applying
 * ahead, the two keep the group's apply order between them, so that no write starts while
 * one of an earlier level is in flight. The round ahead follows cur: its level waits while
 * cur has yet to send or finish an earlier level of the group, or deletes; its deletes wait
 * for cur to finish (a delete may cascade in Dataverse to a row cur writes). cur waits only
 * for writes the round ahead has in flight at an earlier level, not for its held chains.
 */
static bool level_may_start(const struct dw_pipeline *p, const struct round *r, size_t g, size_t l)
{
    const struct dw_level *lv = &r->plan.groups[g].levels[l];
    const char *name = r->plan.groups[g].name;
    if (r == &p->ahead) {
        if (lv->deletes)
            return false;
        int cg = group_named(&p->cur, name);
        if (cg < 0)
            return true;
        const struct group_cursor *cc = &p->cur.groups[cg];
        const struct dw_group *grp = &p->cur.plan.groups[cg];
        const struct dw_level *at = &grp->levels[cc->level];
        if (cc->submitted && cc->unresolved == 0 && cc->level + 1 == grp->nlevels)
            return true; /* cur is done with the group */
        return cc->submitted && !at->deletes && level_rank(at) >= level_rank(lv);
    }
    int ag = p->ahead.window ? group_named(&p->ahead, name) : -1;
    if (ag < 0)
        return true;
    const struct group_cursor *ac = &p->ahead.groups[ag];
    return !ac->submitted || ac->unresolved == ac->held ||
           level_rank(&p->ahead.plan.groups[ag].levels[ac->level]) >= level_rank(lv);
}

/* Hands a round's groups their next levels as the ones before are resolved (and as
 * level_may_start() lets them); true when every group is finished. */
static bool advance_groups(struct dw_pipeline *p, struct round *r)
{
    bool finished = true;
    for (size_t g = 0; g < r->plan.ngroups; g++) {
        struct group_cursor *gc = &r->groups[g];
        size_t nlevels = r->plan.groups[g].nlevels;
        if (nlevels == 0)
            continue;
        for (;;) {
            if (!gc->submitted) {
                if (!level_may_start(p, r, g, gc->level))
                    break;
                submit_level(p, r, g);
            }
            if (gc->unresolved > 0 || gc->level + 1 >= nlevels)
                break;
            gc->level++;
            gc->submitted = false;
        }
        if (!gc->submitted || gc->unresolved > 0 || gc->level + 1 < nlevels)
            finished = false;
    }
    return finished;
}

/* Whether a window (NULL: none) holds chains carried from an earlier one (they come first). */
static bool holds_carried(const struct dw_window *w)
{
    return w && w->len && w->items[0].carried;
}

/* Whether a window holds changes through atomic maps (applied all or nothing, by unit). */
static bool window_has_atomic(const struct dw_window *w)
{
    for (size_t i = 0; i < w->len; i++)
        if (w->items[i].atomic)
            return true;
    return false;
}

/*
 * Whether the filling window may apply ahead of cur: cur is at the last level of each of
 * its groups, so that the window ahead overlaps its first levels with cur's last (a level
 * waits for the largest of its requests: two windows at the same level would wait
 * together), and that level writes, not deletes (a delete may cascade in Dataverse to rows
 * the next window writes). Atomic units are never applied ahead, in either window, nor
 * chains carried for a missing parent: they go with the next window that applies alone, so
 * each of their retries waits its delay and counts.
 */
static bool ahead_allowed(const struct dw_pipeline *p)
{
    const struct round *c = &p->cur;
    if (!p->opts.apply_ahead || c->window == NULL || p->ahead.window || c->plan.nunits ||
        holds_carried(p->filling))
        return false;
    for (size_t g = 0; g < c->plan.ngroups; g++) {
        const struct dw_group *grp = &c->plan.groups[g];
        if (grp->nlevels == 0)
            continue;
        if (c->groups[g].level + 1 < grp->nlevels || grp->levels[c->groups[g].level].deletes)
            return false;
    }
    /* Last: it reads the filling window's items, and polls ask this at every answer. */
    return !window_has_atomic(p->filling);
}

/* Starts the filling window ahead of cur; the keys cur has not applied yet are held. */
static void start_ahead(struct dw_pipeline *p)
{
    struct dw_blocked_keys *held = dw_blocked_keys_new();
    for (size_t i = 0; i < p->cur.plan.nchains; i++) {
        const struct chain_state *cs = &p->cur.chains[i];
        if (!cs->resolved || cs->deferred) {
            const struct dw_item *head = chain_head(&p->cur, i);
            dw_blocked_keys_add(held, head->mapped.map_id, dw_item_key(head));
        }
    }
    start_round(p, &p->ahead, held);
    dw_blocked_keys_free(held);
    p->stats.windows_ahead++;
}

/*
 * cur is finished: the chains ahead held for its keys go on. A key cur failed on is
 * blocked, so its chain here is parked behind the error; a key cur's chain was deferred
 * for (a missing parent) defers this chain too, to be carried after it, in order; any
 * other is sent (now if its level is the one its group is at, else with its level).
 */
static void release_held(struct dw_pipeline *p)
{
    struct round *a = &p->ahead;
    if (a->window == NULL)
        return;
    struct dw_blocked_keys *deferred = dw_blocked_keys_new();
    for (size_t i = 0; i < p->cur.plan.nchains; i++)
        if (p->cur.chains[i].deferred) {
            const struct dw_item *head = chain_head(&p->cur, i);
            dw_blocked_keys_add(deferred, head->mapped.map_id, dw_item_key(head));
        }
    for (size_t i = 0; i < a->plan.nchains; i++) {
        struct chain_state *cs = &a->chains[i];
        if (!cs->held)
            continue;
        cs->held = false;
        struct dw_chain *c = &a->plan.chains[i];
        const struct dw_item *head = chain_head(a, i);
        bool current = a->groups[c->group].submitted && a->groups[c->group].level == cs->level;
        if (dw_blocked_keys_contains(p->blocked, head->mapped.map_id, dw_item_key(head))) {
            dw_plan_park_chain(&a->plan, a->window, i, p->blocked);
        } else if (dw_blocked_keys_contains(deferred, head->mapped.map_id, dw_item_key(head))) {
            cs->deferred = true;
            cs->retry_copy = c->write;
            memset(&c->write, 0, sizeof c->write);
            for (size_t k = 0; k < c->nitems; k++)
                a->window->items[c->items[k]].state = DW_ITEM_DEFERRED;
        } else {
            if (current) {
                a->groups[c->group].held--;
                submit_chains(p, a, &i, 1);
            }
            continue;
        }
        cs->resolved = true;
        if (current) {
            a->groups[c->group].held--;
            a->groups[c->group].unresolved--;
        }
    }
    dw_blocked_keys_free(deferred);
}

/* An item's whole old image as text, when it holds only the difference from its new image
 * (old_image_text()); NULL when it holds the whole image already. Caller frees. */
static char *whole_old_image_text(const struct dw_item *it)
{
    if (!it->old_row_delta || it->old_row == NULL || it->new_row == NULL)
        return NULL;
    json_t *delta = json_loads(it->old_row, JSON_DECODE_ANY, NULL);
    json_t *whole = json_loads(it->new_row, JSON_DECODE_ANY, NULL), *name;
    size_t i;
    json_object_update(whole, json_array_get(delta, 0));
    json_array_foreach(json_array_get(delta, 1), i, name)
        json_object_del(whole, json_string_value(name));
    char *text = dw_json_dumps(whole);
    json_decref(delta);
    json_decref(whole);
    return text;
}

/* An item's source key text: its own, or the row image it equals (window.h). */
static const char *item_source_key(const struct dw_item *it)
{
    return it->source_key ? it->source_key : it->new_row ? it->new_row : it->old_row;
}

/* Tells the observer (pipeline.h) what became of each change of a checkpointed round. */
static void observe_window(struct dw_pipeline *p, const struct round *r)
{
    const struct dw_pipeline_observer *o = p->opts.observer;
    const struct dw_window *w = r->window;
    for (size_t i = 0; o && i < w->len; i++) {
        const struct dw_item *it = &w->items[i];
        const struct chain_state *cs = it->chain >= 0 ? &r->chains[it->chain] : NULL;
        const char *map = it->mapped.map_name ? it->mapped.map_name : "";
        if (it->state == DW_ITEM_APPLIED)
            o->changed(o->user, DW_OBSERVED_APPLIED, it->source_schema, it->source_table, map,
                       dw_change_op_name(it->op), it->commit_time_us);
        else if (it->state == DW_ITEM_OPEN || it->state == DW_ITEM_WAITING)
            o->changed(o->user, DW_OBSERVED_PARKED, it->source_schema, it->source_table, map,
                       it->state == DW_ITEM_WAITING
                           ? "waiting"
                           : dw_error_class_name(cs ? cs->error_class : it->mapped.error_class),
                       it->commit_time_us);
    }
}

/* Writes the error rows of an applied round, then its checkpoint and statistics. */
static dw_rc persist_round(struct dw_pipeline *p, const struct round *r)
{
    struct dw_window *w = r->window;
    size_t nerr = 0, applied = 0, open = 0, waiting = 0, deferred = 0;
    for (size_t i = 0; i < w->len; i++) {
        enum dw_item_state s = w->items[i].state;
        deferred += s == DW_ITEM_DEFERRED;
        nerr += s == DW_ITEM_OPEN || s == DW_ITEM_WAITING;
        applied += s == DW_ITEM_APPLIED;
        open += s == DW_ITEM_OPEN;
        waiting += s == DW_ITEM_WAITING;
    }
    /* The rows borrow the items' texts as they are; only an old image kept as a difference
     * is put together (old_images, owned here). */
    struct dw_errrow *rows = dw_calloc(nerr ? nerr : 1, sizeof *rows);
    char **old_images = dw_calloc(nerr ? nerr : 1, sizeof *old_images);
    size_t n = 0;
    for (size_t i = 0; i < w->len; i++) {
        struct dw_item *it = &w->items[i];
        if (it->state != DW_ITEM_OPEN && it->state != DW_ITEM_WAITING)
            continue;
        struct dw_errrow *row = &rows[n++];
        const struct chain_state *cs = it->chain >= 0 ? &r->chains[it->chain] : NULL;
        row->job_id = p->opts.job_id;
        row->map_id = it->mapped.map_id;
        row->map_name = it->mapped.map_name;
        row->source_schema = it->source_schema;
        row->source_table = it->source_table;
        row->op = it->op;
        row->source_key = item_source_key(it);
        row->key_text = dw_item_key(it);
        row->target_id = it->mapped.target_id;
        row->new_row = it->new_row;
        old_images[n - 1] = whole_old_image_text(it);
        row->old_row = old_images[n - 1] ? old_images[n - 1] : it->old_row;
        row->unchanged = it->unchanged;
        row->commit_lsn = it->commit_lsn;
        row->xid = it->xid;
        row->commit_time_us = it->commit_time_us;
        row->position = it->position;
        row->part = it->part;
        row->waiting = it->state == DW_ITEM_WAITING;
        if (row->waiting)
            continue; /* parked without being sent: no error of its own */
        if (cs) {
            row->payload = cs->payload;
            row->http_status = cs->http_status;
            row->code = cs->code;
            row->message = cs->message;
            row->missing_parent = cs->missing_parent;
            row->error_class = cs->error_class;
        } else {
            row->message = it->mapped.error;
            row->error_class = it->mapped.error_class;
        }
    }

    /* What this window lets the checkpoint pass: its last commit, and what earlier windows
     * held back; nothing while a change of it waits in a later window (carry_deferred()). */
    dw_lsn upto = p->stats.confirmed_lsn, held = p->held_lsn;
    int64_t upto_time = p->stats.last_commit_time_us, held_time = p->held_time_us;
    if (w->commits && w->commit_end_lsn > held) {
        held = w->commit_end_lsn;
        held_time = w->commit_time_us;
    }
    /* Nor while chains an earlier round carried wait in a later window (carried items come
     * first in a window): when this round applied ahead of that one, they are not in the
     * round after it only, but may be in any window not yet applied. */
    bool waiting_chains = deferred > 0 || holds_carried(p->filling) ||
                          holds_carried(p->cur.window) || holds_carried(p->ahead.window);
    if (!waiting_chains && held > upto) {
        upto = held;
        upto_time = held_time;
    }
    const struct dw_pipeline_persist persist = {
        .job_id = p->opts.job_id,
        .rows = rows,
        .nrows = n,
        .confirmed_lsn = upto,
        .last_commit_time_us = upto_time,
        .rows_applied = applied,
        .rows_failed = nerr,
    };
    /* The window's writes are applied here and nothing of it is durable yet: the first
     * crash point. */
    dw_rc rc = DW_ERR_PG;
    if (!DW_FAILPOINT("apply_before_error_rows"))
        rc = p->store->persist(p->store->user, &persist, p->blocked);
    for (size_t i = 0; i < n; i++)
        free(old_images[i]);
    free(old_images);
    free(rows);
    /* The checkpoint is durable, the slot not yet told (the caller confirms from the stats). */
    if (rc == DW_OK && DW_FAILPOINT("checkpoint_before_confirm"))
        rc = DW_ERR_PG;
    if (rc == DW_OK) {
        p->stats.rows_failed += open;
        p->stats.rows_parked += waiting;
        p->stats.confirmed_lsn = upto;
        p->stats.last_commit_time_us = upto_time;
        p->held_lsn = waiting_chains ? held : DW_LSN_INVALID;
        p->held_time_us = waiting_chains ? held_time : 0;
        dw_window_sizing_outcome(&p->sizing, applied, nerr);
        p->stats.windows++;
        p->stats.last_window_rows = w->len;
        p->stats.last_window_bytes = w->bytes;
        observe_window(p, r);
    }
    return rc;
}

/*
 * Moves the chains of an applied round that wait for a missing parent to the front of the
 * filling window (they are older than everything in it), so a later window sends them
 * again after the parents it holds: a parent committed later is seen. Their items keep
 * their identity (commit LSN, position) for the error row they get once retries run out.
 */
static void carry_deferred(struct dw_pipeline *p, struct round *r)
{
    /* After the chains carried from the round before it, if it applied ahead of that one:
     * they are older. */
    size_t at = 0;
    while (at < p->filling->len && p->filling->items[at].carried)
        at++;
    int64_t now = now_ms(p);
    for (size_t i = 0; i < r->plan.nchains; i++) {
        struct chain_state *cs = &r->chains[i];
        const struct dw_chain *c = &r->plan.chains[i];
        if (!cs->deferred)
            continue;
        for (size_t k = 0; k < c->nitems; k++) {
            const struct dw_item *src = &r->window->items[c->items[k]];
            struct dw_item *it = dw_window_insert(p->filling, at++);
            it->mapped.map_id = src->mapped.map_id;
            it->mapped.map_name = src->mapped.map_name;
            it->mapped.group_name = src->mapped.group_name;
            it->mapped.sequence = src->mapped.sequence;
            it->mapped.target_id = dw_strdup(src->mapped.target_id);
            it->mapped.ok = true;
            if (k == 0) {
                it->mapped.write = cs->retry_copy;
                memset(&cs->retry_copy, 0, sizeof cs->retry_copy);
            }
            it->commit_lsn = src->commit_lsn;
            it->xid = src->xid;
            it->commit_time_us = src->commit_time_us;
            it->position = src->position;
            it->op = src->op;
            it->part = src->part;
            it->source_schema = src->source_schema;
            it->source_table = src->source_table;
            it->source_key = src->source_key ? dw_strdup(src->source_key) : NULL;
            it->new_row = src->new_row ? dw_strdup(src->new_row) : NULL;
            it->old_row = src->old_row ? dw_strdup(src->old_row) : NULL;
            it->old_row_delta = src->old_row_delta;
            it->unchanged = src->unchanged ? dw_strdup(src->unchanged) : NULL;
            it->key_text = src->key_text ? dw_strdup(src->key_text) : NULL;
            it->bytes = src->bytes;
            it->carried = true;
            it->attempts = c->attempts;
            p->filling->bytes += it->bytes;
        }
        /* (A chain held behind a deferred one and deferred with it was never sent.) */
        int64_t due =
            now + ((int64_t)MISSING_PARENT_DELAY_MS << (c->attempts > 1 ? c->attempts - 1 : 0));
        if (due > p->carry_due_ms)
            p->carry_due_ms = due;
    }
    if (at && p->filling->opened_ms == 0)
        p->filling->opened_ms = now;
}

dw_rc dw_pipeline_poll(struct dw_pipeline *p, bool flush)
{
    for (;;) {
        int64_t now = now_ms(p);
        bool started = false;
        if (p->cur.window == NULL && filling_due(p, flush, now)) {
            start_round(p, &p->cur, NULL);
            started = true;
        } else if (ahead_allowed(p) && filling_due(p, flush, now)) {
            start_ahead(p);
            started = true;
        }
        /* Its requests go out now, and travel while the previous round's error rows and
         * checkpoint are written. */
        if (started && p->done.window)
            p->writer->send(p->writer->user);
        if (p->done.window) {
            if (p->persist_retry_at_ms > now)
                return DW_OK;
            if (persist_round(p, &p->done) != DW_OK) {
                p->persist_retry_at_ms = now + PERSIST_RETRY_MS;
                return DW_ERR_PG;
            }
            release_round(&p->done);
            continue;
        }
        if (p->ahead.window)
            (void)advance_groups(p, &p->ahead);
        if (p->cur.window == NULL || !advance_groups(p, &p->cur)) {
            /* cur may have reached its last levels: the next window may apply ahead. */
            if (!started && ahead_allowed(p) && filling_due(p, flush, now))
                continue;
            return DW_OK;
        }
        release_held(p);
        p->done = p->cur;
        p->cur = p->ahead;
        p->ahead = (struct round){0};
        p->persist_retry_at_ms = 0;
        carry_deferred(p, &p->done);
    }
}

int dw_pipeline_timeout_ms(const struct dw_pipeline *p)
{
    int64_t now = now_ms(p), due = -1;
#define CONSIDER(t)                                                                                \
    do {                                                                                           \
        int64_t t_ = (t);                                                                          \
        if (due < 0 || t_ < due)                                                                   \
            due = t_;                                                                              \
    } while (0)
    /* (While an atomic transaction is held open, only its next change can make it due.) */
    if ((p->cur.window == NULL || ahead_allowed(p)) && !dw_window_empty(p->filling) &&
        !holding_txn(p))
        CONSIDER(p->filling->opened_ms + p->opts.window_ms > p->carry_due_ms
                     ? p->filling->opened_ms + p->opts.window_ms
                     : p->carry_due_ms);
    if (p->done.window)
        CONSIDER(p->persist_retry_at_ms);
#undef CONSIDER
    if (due < 0)
        return -1;
    return due <= now ? 0 : (int)(due - now);
}

dw_lsn dw_pipeline_confirmed(const struct dw_pipeline *p)
{
    return p->stats.confirmed_lsn;
}

bool dw_pipeline_idle(const struct dw_pipeline *p)
{
    return p->cur.window == NULL && p->ahead.window == NULL && p->done.window == NULL &&
           dw_window_empty(p->filling) && !p->in_txn;
}

bool dw_pipeline_settled(const struct dw_pipeline *p)
{
    if (p->cur.window || p->ahead.window || p->done.window)
        return false;
    return dw_window_empty(p->filling) || (p->in_txn && !filling_due(p, true, now_ms(p)));
}

/* Whether a round holds a change of the key that failed or was parked: until the round is
 * persisted, its error row exists only here. */
static bool round_parks_key(const struct round *r, int64_t map_id, const char *key_text)
{
    for (size_t i = 0; r->window && i < r->window->len; i++) {
        const struct dw_item *it = &r->window->items[i];
        if ((it->state == DW_ITEM_OPEN || it->state == DW_ITEM_WAITING) &&
            it->mapped.map_id == map_id && strcmp(dw_item_key(it), key_text) == 0)
            return true;
    }
    return false;
}

void dw_pipeline_unblock(struct dw_pipeline *p, int64_t map_id, const char *key_text)
{
    /* A change of the key parked in a round not yet persisted must stay ahead of the key's
     * newer changes: the key stays blocked, and its row, once written, is queued for replay
     * as a new head (errtable.h), whose replay unblocks the key again. */
    if (round_parks_key(&p->cur, map_id, key_text) ||
        round_parks_key(&p->ahead, map_id, key_text) || round_parks_key(&p->done, map_id, key_text))
        return;
    dw_blocked_keys_remove(p->blocked, map_id, key_text);
}

void dw_pipeline_get_stats(const struct dw_pipeline *p, struct dw_pipeline_stats *out)
{
    *out = p->stats;
}

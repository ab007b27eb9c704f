/*
 * The replay engine (errtable.h): applies the heads of queued keys through callbacks.
 *
 * Per-key order needs nothing in memory: the table holds at most one head per key, the
 * next row becomes the head only when dw_errtable_mark_resolved_send() resolves the current one
 * (or an operator skips it), and a key with a write in flight is excluded from the claim. Sequence
 * order across keys: of the heads claimed and in flight, only the lowest sequence level of each
 * table group's upserts is sent, so a parent's replay lands before its children's, and of its
 * deletes only the highest, so a child's delete lands before its parent's.
 *
 * Work in turns: a pump records the answers (the failed rows one by one, the applied ones in
 * one statement) and claims the next heads, which wait, their keys busy, until the next
 * pump sends them while the server resolves that pump's answers (dw_pg_send()): re-mapping
 * the rows and resolving the answers, each about half of a replay's time, go on together.
 * The connection is free whenever a pump returns.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/config.h"
#include "dwasync/errtable.h"
#include "dwasync/failpoint.h"
#include "dwasync/log.h"
#include "dwasync/mapping.h"
#include "dwasync/pg.h"

/* Full bulk requests' worth of rows a replay holds at most (fewer under a lower
 * max_concurrency): about four in flight while one more waits, claimed, for the next pump
 * (RUNS=5 bench_replay.sh: 9,685 replayed rows/s, 0.30 of the initial sync, against 8,800 and
 * 0.26 with four in flight and no overlap). */
#define REPLAY_REQUESTS 5
/* A write's token: its slot's index in the low bits, a count above them (never 0). */
#define TOKEN_SLOT_BITS 20

struct slot {
    bool used;
    bool done;
    bool resolving; /* applied, in the resolve statement sent */
    uintptr_t token;
    struct dw_errstored row; /* the claimed row; its images are dropped once it is sent */
    char *target_id;
    /* the recorded result, owned copies */
    enum dw_write_status status;
    enum dw_error_class error_class;
    int http_status;
    char *code;
    char *message;
    char *missing_parent;
    char *payload;
};

struct dw_replay {
    PGconn *conn;
    int64_t job_id;
    const struct dw_replay_ops *ops;
    void *user;
    int max;
    /* The slots and ready rows are allocated by the first claim that finds rows (nslots is
     * max from then on, 0 before): a daemon that replays nothing holds none of them. */
    int nslots;
    struct slot *slots;
    int free_hint;              /* where free_slot() looks first */
    struct dw_errstored *ready; /* claimed, to be sent by the next pump (their keys busy) */
    size_t nready;
    uintptr_t next_token;
    struct dw_replay_stats stats;
};

static void slot_release(struct slot *s)
{
    dw_errstored_cleanup(&s->row);
    free(s->target_id);
    free(s->code);
    free(s->message);
    free(s->missing_parent);
    free(s->payload);
    memset(s, 0, sizeof *s);
}

int dw_replay_in_flight_for(const struct dw_config *cfg)
{
    int64_t batch = cfg->dataverse.batch_size > 0 ? cfg->dataverse.batch_size : 1;
    int64_t requests =
        cfg->dataverse.max_concurrency < REPLAY_REQUESTS
            ? (cfg->dataverse.max_concurrency > 0 ? cfg->dataverse.max_concurrency : 1)
            : REPLAY_REQUESTS;
    return (int)(batch * requests);
}

dw_rc dw_replay_new(PGconn *conn, int64_t job_id, const struct dw_replay_ops *ops, void *user,
                    int max_in_flight, struct dw_replay **out)
{
    if (max_in_flight < 1 || max_in_flight >= 1 << TOKEN_SLOT_BITS || ops == NULL ||
        ops->remap == NULL || ops->submit == NULL) {
        DW_ERROR("replay engine needs remap and submit callbacks and 1 <= max_in_flight < %d",
                 1 << TOKEN_SLOT_BITS);
        return DW_ERR_INVALID;
    }
    char jobtext[24];
    snprintf(jobtext, sizeof jobtext, "%" PRId64, job_id);
    const char *params[] = {jobtext};
    int64_t healed = 0;
    dw_rc rc = dw_pg_query_int(conn, "queueing error queues left without a head",
                               "SELECT dwasync.promote_orphans($1)", 1, params, &healed);
    if (rc != DW_OK)
        return rc;
    if (healed)
        DW_WARN("queued %" PRId64
                " error queues left without a head by an earlier crash (job id %s)",
                healed, jobtext);
    struct dw_replay *r = dw_calloc(1, sizeof *r);
    r->conn = conn;
    r->job_id = job_id;
    r->ops = ops;
    r->user = user;
    r->max = max_in_flight;
    r->next_token = 1;
    *out = r;
    return DW_OK;
}

void dw_replay_free(struct dw_replay *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->nslots; i++)
        slot_release(&r->slots[i]);
    for (size_t i = 0; i < r->nready; i++)
        dw_errstored_cleanup(&r->ready[i]);
    free(r->ready);
    free(r->slots);
    free(r);
}

size_t dw_replay_in_flight(const struct dw_replay *r)
{
    size_t n = 0;
    for (int i = 0; i < r->nslots; i++)
        n += r->slots[i].used && !r->slots[i].done;
    return n;
}

void dw_replay_get_stats(const struct dw_replay *r, struct dw_replay_stats *out)
{
    *out = r->stats;
}

static char *dup_or_null(const char *s)
{
    return s ? dw_strdup(s) : NULL;
}

void dw_replay_complete(struct dw_replay *r, void *token, const struct dw_write_result *res)
{
    size_t i = (uintptr_t)token & (((uintptr_t)1 << TOKEN_SLOT_BITS) - 1);
    struct slot *s = i < (size_t)r->nslots ? &r->slots[i] : NULL;
    if (s && s->used && !s->done && s->token == (uintptr_t)token) {
        s->done = true;
        s->status = res->status;
        s->error_class = res->error_class;
        s->http_status = res->http_status;
        s->code = dup_or_null(res->code);
        s->message = dup_or_null(res->message);
        s->missing_parent = dup_or_null(res->missing_parent);
        s->payload = dup_or_null(res->payload);
        return;
    }
    DW_WARN("replay completion for an unknown write ignored");
}

/* The applied rows of a resolve statement received: counted, logged (one line, and one a row
 * at debug: a bulk replay's thousands of rows are in the error table, resolved, not in the
 * log), their slots freed, each emptied queue reported. remaining[] follows the resolving
 * slots in slot order, the order finish_slots() sent their ids in. */
static void rows_resolved(struct dw_replay *r, const int *remaining)
{
    size_t k = 0, emptied = 0;
    for (int i = 0; i < r->nslots; i++) {
        struct slot *s = &r->slots[i];
        if (!s->resolving)
            continue;
        const struct dw_errstored *row = &s->row;
        r->stats.resolved++;
        DW_LOGF(DW_LOG_DEBUG, DW_FIELDS({"table", row->source_table}, {"key", row->key_text}),
                "replayed error %" PRId64 ": applied, %d row(s) left in its key's queue", row->id,
                remaining[k]);
        if (remaining[k++] == 0) {
            emptied++;
            r->stats.unblocked++;
            if (r->ops->unblocked)
                r->ops->unblocked(r->user, row->map_id, row->key_text);
        }
        slot_release(s);
    }
    if (k > 0)
        DW_INFO("replayed %zu error row%s: applied and resolved; %zu key%s left with nothing "
                "queued",
                k, k == 1 ? "" : "s", emptied, emptied == 1 ? "" : "s");
}

/* An answered slot's failure, as the error table records it (pointers into the slot). */
static struct dw_write_result slot_result(const struct slot *s)
{
    return (struct dw_write_result){
        .status = s->status,
        .error_class = s->error_class,
        .http_status = s->http_status,
        .code = s->code ? s->code : "",
        .message = s->message ? s->message : "",
        .payload = s->payload,
        .missing_parent = s->missing_parent,
    };
}

/* Whether a slot holds a write answered with a failure. */
static bool slot_failed(const struct slot *s)
{
    return s->used && s->done && s->status != DW_WRITE_APPLIED;
}

/*
 * Records the answered slots that failed, in one statement, and frees them. Each is logged
 * at debug, and all in one warning naming the first: a bulk replay still refused is
 * thousands of rows, each in the error table.
 */
static dw_rc rows_failed(struct dw_replay *r)
{
    size_t n = 0;
    int first = -1;
    for (int i = 0; i < r->nslots; i++)
        if (slot_failed(&r->slots[i])) {
            first = first < 0 ? i : first;
            n++;
        }
    if (n == 0)
        return DW_OK; /* the common case: no array for each pump */
    struct dw_errfailure *failures = dw_calloc(n, sizeof *failures);
    struct dw_write_result *results = dw_calloc(n, sizeof *results);
    n = 0;
    for (int i = first; i < r->nslots; i++) {
        if (!slot_failed(&r->slots[i]))
            continue;
        results[n] = slot_result(&r->slots[i]);
        failures[n] =
            (struct dw_errfailure){r->slots[i].row.id, &results[n], r->slots[i].target_id};
        n++;
    }
    dw_rc rc = dw_errtable_mark_failed(r->conn, failures, n);
    if (rc == DW_OK)
        DW_LOGF(DW_LOG_WARN, DW_FIELDS({"table", r->slots[first].row.source_table}),
                "replay: %zu error row%s failed again and stay%s open; error %" PRId64 ": %s", n,
                n == 1 ? "" : "s", n == 1 ? "s" : "", r->slots[first].row.id, results[0].message);
    for (int i = 0; rc == DW_OK && i < r->nslots; i++) {
        struct slot *s = &r->slots[i];
        if (!slot_failed(s))
            continue;
        struct dw_write_result res = slot_result(s);
        char http[16];
        snprintf(http, sizeof http, "%d", res.http_status);
        DW_LOGF(DW_LOG_DEBUG,
                DW_FIELDS({"table", s->row.source_table}, {"key", s->row.key_text},
                          {"status", http}, {"code", res.code}),
                "replay of error %" PRId64 " failed again: %s", s->row.id, res.message);
        r->stats.failed++;
        slot_release(s);
    }
    free(results);
    free(failures);
    return rc;
}

/*
 * Records the answered slots that failed and sends the statement that resolves the applied
 * ones (*sending: how many; their slots are marked resolving). *any tells whether there was
 * an answer.
 */
static dw_rc finish_slots(struct dw_replay *r, bool *any, size_t *sending)
{
    *any = false;
    *sending = 0;
    for (int i = 0; i < r->nslots; i++)
        *any = *any || (r->slots[i].used && r->slots[i].done);
    if (!*any)
        return DW_OK;
    /* Sent and answered, their rows not yet recorded: a crash replays them again. */
    if (DW_FAILPOINT("replay_before_resolve"))
        return DW_ERR_PG;
    dw_rc rc = rows_failed(r);
    int64_t *ids = dw_calloc((size_t)r->max + 1, sizeof *ids);
    for (int i = 0; i < r->nslots && rc == DW_OK; i++)
        if (r->slots[i].used && r->slots[i].done)
            ids[(*sending)++] = r->slots[i].row.id; /* applied: the failed ones are freed */
    if (rc == DW_OK && *sending > 0)
        rc = dw_errtable_mark_resolved_send(r->conn, ids, *sending);
    if (rc == DW_OK)
        for (int i = 0; i < r->nslots; i++)
            r->slots[i].resolving = r->slots[i].used && r->slots[i].done;
    else
        *sending = 0;
    free(ids);
    return rc;
}

/* The resolve statement's answer (n rows sent): on failure the rows stay answered, to be
 * resolved by a later pump. */
static dw_rc finish_resolve(struct dw_replay *r, size_t n)
{
    int *remaining = dw_calloc(n + 1, sizeof *remaining);
    dw_rc rc = dw_errtable_mark_resolved_receive(r->conn, n, remaining);
    if (rc == DW_OK)
        rows_resolved(r, remaining);
    for (int i = 0; i < r->nslots; i++)
        r->slots[i].resolving = false;
    free(remaining);
    return rc;
}

static struct slot *free_slot(struct dw_replay *r)
{
    for (int n = 0; n < r->nslots; n++) {
        int i = (r->free_hint + n) % r->nslots;
        if (!r->slots[i].used) {
            r->free_hint = (i + 1) % r->nslots;
            return &r->slots[i];
        }
    }
    return NULL;
}

/* Takes a slot for a row; its result comes now (nothing to send, cannot be mapped) or from
 * the write. */
static struct slot *take_slot(struct dw_replay *r, struct dw_errstored *row, char *target_id)
{
    struct slot *s = free_slot(r);
    s->used = true;
    s->token = r->next_token++ << TOKEN_SLOT_BITS | (uintptr_t)(s - r->slots);
    /* The write holds what is sent: the row's images are not needed while it is in flight
     * (a replay keeps thousands of rows in flight). */
    dw_errstored_drop_images(row);
    s->row = *row;
    s->target_id = target_id;
    memset(row, 0, sizeof *row);
    return s;
}

/* Re-maps one claimed head and sends it; takes the row. No SQL: the pump may have a
 * statement running. A row with nothing to send, or that cannot be mapped, is answered at
 * once, and recorded with the written ones. */
static dw_rc dispatch(struct dw_replay *r, struct dw_errstored *row)
{
    struct dw_remap m;
    memset(&m, 0, sizeof m);
    dw_rc rc = dw_errstored_load_images(row);
    if (rc == DW_OK)
        rc = r->ops->remap(r->user, row, &m);
    if (rc != DW_OK) {
        dw_errstored_cleanup(row);
        return rc;
    }
    struct slot *s = take_slot(r, row, m.target_id);
    if (m.status == DW_REMAP_NOTHING) {
        struct dw_write_result res = {.status = DW_WRITE_APPLIED, .code = "", .message = ""};
        dw_replay_complete(r, (void *)s->token, &res);
        return DW_OK;
    }
    if (m.status == DW_REMAP_FAILED) {
        struct dw_write_result res = {
            .status = DW_WRITE_REJECTED,
            .error_class = m.error_class == DW_ERRCLASS_NONE ? DW_ERRCLASS_MAPPING : m.error_class,
            .code = "",
            .message = m.message ? m.message : "cannot be mapped",
        };
        dw_replay_complete(r, (void *)s->token, &res);
        free(m.message);
        return DW_OK;
    }
    r->stats.dispatched++;
    dw_rc sent = r->ops->submit(r->user, (void *)s->token, &m.write);
    /* A refused write keeps its contents; an accepted one was emptied by the sink. */
    dw_write_cleanup(&m.write);
    if (sent != DW_OK && !s->done) {
        struct dw_write_result res = {
            .status = DW_WRITE_REJECTED,
            .error_class = DW_ERRCLASS_UNKNOWN,
            .code = "",
            .message = "the write could not be submitted",
        };
        dw_replay_complete(r, (void *)s->token, &res);
    }
    return DW_OK;
}

/* The sequence level a group's upserts (or deletes) are at: the lowest sequence among their
 * writes in flight and heads claimed (the highest, for deletes). */
struct frontier {
    int64_t group_id;
    bool del;
    int64_t sequence;
};

static void frontier_add(struct frontier *f, size_t *n, const struct dw_errstored *row)
{
    bool del = row->op == DW_CHANGE_DELETE;
    for (size_t i = 0; i < *n; i++) {
        if (f[i].group_id == row->group_id && f[i].del == del) {
            if (del ? row->sequence > f[i].sequence : row->sequence < f[i].sequence)
                f[i].sequence = row->sequence;
            return;
        }
    }
    f[(*n)++] = (struct frontier){row->group_id, del, row->sequence};
}

/*
 * Whether a claimed head is at its group's level now, among in-flight writes and claimed
 * heads of the same group and kind: upserts go by ascending sequence (parents first),
 * deletes by descending sequence (children first, as the apply path sends them: Dataverse
 * may cascade a parent's delete).
 */
static bool at_level(const struct frontier *f, size_t n, const struct dw_errstored *c)
{
    bool del = c->op == DW_CHANGE_DELETE;
    for (size_t i = 0; i < n; i++)
        if (f[i].group_id == c->group_id && f[i].del == del)
            return f[i].sequence == c->sequence;
    return true;
}

/* Sends the ready rows that are at their group's level; the others are let go (still
 * queued, they are claimed again once their level comes). */
static dw_rc send_ready(struct dw_replay *r, bool *progress)
{
    size_t n = r->nready;
    if (n == 0)
        return DW_OK;
    struct frontier *levels = dw_calloc((size_t)r->max + n + 1, sizeof *levels);
    size_t nlevels = 0;
    for (int i = 0; i < r->nslots; i++)
        if (r->slots[i].used)
            frontier_add(levels, &nlevels, &r->slots[i].row);
    for (size_t i = 0; i < n; i++)
        frontier_add(levels, &nlevels, &r->ready[i]);
    bool *now = dw_calloc(n + 1, sizeof *now);
    for (size_t i = 0; i < n; i++)
        now[i] = at_level(levels, nlevels, &r->ready[i]);
    free(levels);
    r->nready = 0;
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < n; i++) {
        if (rc == DW_OK && now[i]) {
            rc = dispatch(r, &r->ready[i]); /* takes the row */
            *progress = true;
        }
        dw_errstored_cleanup(&r->ready[i]);
    }
    free(now);
    return rc;
}

/* Claims queued heads into ready, in batches: each claim reads the queue, so not one for
 * every row freed. Keys in flight or ready are busy. */
static dw_rc claim_ready(struct dw_replay *r, bool *nothing_queued, bool *progress)
{
    struct dw_errkey *busy = dw_calloc((size_t)r->max + 1, sizeof *busy);
    size_t nbusy = 0;
    for (int i = 0; i < r->nslots; i++)
        if (r->slots[i].used)
            busy[nbusy++] = (struct dw_errkey){r->slots[i].row.map_id, r->slots[i].row.key_text};
    for (size_t i = 0; i < r->nready; i++)
        busy[nbusy++] = (struct dw_errkey){r->ready[i].map_id, r->ready[i].key_text};
    size_t room = (size_t)r->max - nbusy;
    dw_rc rc = DW_OK;
    if (room > 0 && (nbusy == 0 || room * 4 >= (size_t)r->max)) {
        struct dw_errstored *claimed = NULL;
        size_t n = 0;
        rc = dw_errtable_claim(r->conn, r->job_id, busy, nbusy, room, &claimed, &n);
        if (rc == DW_OK)
            *nothing_queued = n == 0;
        if (rc == DW_OK && n > 0) {
            if (r->nslots == 0) {
                r->slots = dw_calloc((size_t)r->max, sizeof *r->slots);
                r->ready = dw_calloc((size_t)r->max, sizeof *r->ready);
                r->nslots = r->max;
            }
            memcpy(r->ready + r->nready, claimed, n * sizeof *claimed);
            r->nready += n;
            *progress = true;
        }
        free(claimed);
    }
    free(busy);
    return rc;
}

dw_rc dw_replay_pump(struct dw_replay *r, bool *idle)
{
    dw_rc rc = DW_OK;
    bool nothing_queued = false;
    for (;;) {
        bool progress = false;
        size_t resolving = 0;
        rc = finish_slots(r, &progress, &resolving);
        /* While the server resolves the answers, the rows claimed last are re-mapped and
         * sent; then the statement is received, whatever happened meanwhile. */
        if (rc == DW_OK)
            rc = send_ready(r, &progress);
        if (resolving > 0) {
            dw_rc resolved = finish_resolve(r, resolving);
            rc = rc == DW_OK ? resolved : rc;
        }
        if (rc == DW_OK)
            rc = claim_ready(r, &nothing_queued, &progress);
        /* The rows claimed go with the next answer's pump; with nothing in flight no answer
         * comes, so they go now. */
        if (rc != DW_OK || !progress || dw_replay_in_flight(r) > 0)
            break;
    }
    if (rc == DW_OK && idle)
        *idle = nothing_queued && dw_replay_in_flight(r) == 0 && r->nready == 0;
    return rc;
}

dw_rc dw_replay_remap_with_maps(const struct dw_job_maps *maps, const struct dw_errstored *row,
                                struct dw_remap *out)
{
    if (row->op == DW_CHANGE_TRUNCATE) {
        /* Never replicated, so never replayable: it fails again with its own message (skip it
         * once Dataverse is dealt with). */
        out->status = DW_REMAP_FAILED;
        out->error_class = DW_ERRCLASS_MAPPING;
        out->message = dw_mapping_truncate_message(row->source_schema, row->source_table);
        return DW_OK;
    }
    struct dw_source_row src = {
        .schema = row->source_schema,
        .table = row->source_table,
        .op = row->op,
        .new_row = row->new_row,
        .old_row = row->old_row,
        .unchanged = row->unchanged,
    };
    struct dw_mapped_vec vec = {0};
    dw_rc rc = dw_mapping_map_row_with(maps, row->map_id, &src, &vec);
    if (rc == DW_ERR_NOT_FOUND) {
        out->status = DW_REMAP_FAILED;
        out->error_class = DW_ERRCLASS_MAPPING;
        out->message = dw_asprintf("table map \"%s\" (id %" PRId64 ") is no longer in the job's "
                                   "maps; skip this error or import the map again",
                                   row->map_name ? row->map_name : "", row->map_id);
        return DW_OK;
    }
    if (rc != DW_OK)
        return rc;
    if ((size_t)row->part >= vec.len) {
        out->status = DW_REMAP_NOTHING;
    } else {
        struct dw_mapped *m = &vec.items[row->part];
        out->target_id = m->target_id;
        m->target_id = NULL;
        if (m->ok) {
            out->status = DW_REMAP_WRITE;
            out->write = m->write;
            memset(&m->write, 0, sizeof m->write);
        } else {
            out->status = DW_REMAP_FAILED;
            out->error_class = m->error_class;
            out->message = m->error;
            m->error = NULL;
        }
    }
    dw_mapped_vec_cleanup(&vec);
    return DW_OK;
}

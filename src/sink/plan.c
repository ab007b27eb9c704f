/*
 * Planning, once per turn of the engine: rows whose parents are known become ready, ready
 * rows are grouped into requests (UpsertMultiple per table and write options where supported,
 * else $batch, atomic groups as changesets), and the parent-id cache is advanced and trimmed.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"

/* A ready row and its place in the ready list, for a stable sort. */
struct ready_row {
    struct row *row;
    size_t place;
};

/* By entity set, keeping submission order within one: a row bound to a parent earlier in
 * the same bulk request finds it created (UpsertMultiple applies its targets in order). */
static int cmp_rows_by_set(const void *a, const void *b)
{
    const struct ready_row *x = a, *y = b;
    int c = strcmp(x->row->entity_set, y->row->entity_set);
    return c ? c : (x->place > y->place) - (x->place < y->place);
}

/* Whether two rows go with the same write options (those of one map share the object). */
static bool same_options(const struct row *a, const struct row *b)
{
    return a->options == b->options ||
           (a->options && b->options && json_equal(a->options, b->options));
}

/* Request slots neither in flight nor claimed by a queued request. */
static int free_slots(const struct dw_sink *s)
{
    int queued = 0;
    const struct req *q;
    DL_COUNT(s->queue, q, queued);
    return dw_aimd_limit(&s->aimd) - s->in_flight - queued;
}

/* What group_ready() splits by: the largest request, and the slots not yet taken this pass. */
struct split {
    size_t size;
    bool whole_only;
    int free;
};

/*
 * Queues n rows in requests of even sizes, as many as dw_requests_for() says (as few as size
 * allows unless rows are expensive): the writes of one level are done when the largest is
 * (1,500 rows go as 750 and 750, not 1,000 and 500). With whole_only, only requests of size
 * rows go, the rest waits.
 */
static void queue_split(struct dw_sink *s, struct row **rows, size_t n, struct split *sp,
                        void (*queue)(struct dw_sink *, struct row **, size_t))
{
    size_t k = sp->whole_only ? n / sp->size : dw_requests_for(n, sp->size, s->row_ms, sp->free);
    for (size_t q = 0, at = 0; q < k; q++) {
        size_t len = sp->whole_only ? sp->size : n / k + (q < n % k);
        queue(s, rows + at, len);
        at += len;
    }
    sp->free -= (int)k;
}

static void group_ready(struct dw_sink *s)
{
    size_t n = 0, nbulk = 0, nbatch = 0;
    struct row *r, *tmp;
    DL_COUNT(s->ready, r, n);
    if (n == 0)
        return;
    /* While parents are still being resolved, more rows become ready with each answer:
     * only whole requests go out meanwhile, and the rest waits to be joined by them, so a
     * few large requests are sent instead of many small ones. Resolution always ends
     * (found, missing, or given up), so nothing waits for ever. */
    struct split sp = {(size_t)s->cfg->dataverse.batch_size, s->resolving != NULL, 0};
    if (sp.whole_only && n < sp.size)
        return;
    sp.free = free_slots(s);
    struct ready_row *bulk = dw_malloc(n * sizeof *bulk);
    struct row **batch = dw_malloc(n * sizeof *batch);
    struct row **group = dw_malloc(n * sizeof *group);
    DL_FOREACH_SAFE(s->ready, r, tmp)
    {
        if (r->atomic)
            continue; /* sent with its group by dw_sink_plan_atomic() */
        if (r->single) {
            dw_sink_queue_batch(s, &r, 1);
            continue;
        }
        if (r->op == DW_WRITE_UPSERT && !r->no_bulk && !r->post && r->logical_name &&
            *r->logical_name) {
            struct bulk_entry *e = NULL;
            HASH_FIND_STR(s->bulks, r->logical_name, e);
            if (e == NULL) {
                e = dw_calloc(1, sizeof *e);
                e->name = dw_strdup(r->logical_name);
                HASH_ADD_KEYPTR(hh, s->bulks, e->name, strlen(e->name), e);
                dw_sink_queue_bulkinfo(s, e);
            }
            if (e->state != ST_OK)
                continue; /* waits for the answer */
            if (e->supported) {
                bulk[nbulk] = (struct ready_row){r, nbulk};
                nbulk++;
                continue;
            }
        }
        batch[nbatch++] = r;
    }
    qsort(bulk, nbulk, sizeof *bulk, cmp_rows_by_set);
    for (size_t i = 0; i < nbulk;) {
        size_t j = i;
        while (j < nbulk && strcmp(bulk[j].row->entity_set, bulk[i].row->entity_set) == 0 &&
               same_options(bulk[j].row, bulk[i].row)) {
            group[j - i] = bulk[j].row;
            j++;
        }
        queue_split(s, group, j - i, &sp, dw_sink_queue_bulk);
        i = j;
    }
    queue_split(s, batch, nbatch, &sp, dw_sink_queue_batch);
    free(bulk);
    free(batch);
    free(group);
}

/* True while the cache entry a row last waited for is still being looked up. */
static bool still_waiting(struct dw_sink *s, const struct row *r)
{
    struct guid_entry *g = NULL;
    if (r->wait_id)
        HASH_FIND_STR(s->guids, r->wait_id, g);
    return g && (g->state == ST_PENDING || g->state == ST_INFLIGHT);
}

void dw_sink_plan(struct dw_sink *s)
{
    s->pass++;
    dw_sink_advance_entries(s);
    struct row *r, *tmp;
    DL_FOREACH_SAFE(s->resolving, r, tmp)
    {
        if (!still_waiting(s, r) && dw_sink_resolve_row(s, r) == RES_READY)
            dw_sink_row_move(s, r, ROW_READY);
    }
    dw_sink_advance_entries(s);
    dw_sink_drop_negative_entries(s);
    dw_sink_trim_cache(s);
    dw_sink_plan_atomic(s);
    group_ready(s);
}

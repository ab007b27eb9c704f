/*
 * Apply windows and their plans (see window.h for the rules). Items are pushed in commit
 * order; dw_plan_build() coalesces them into chains per target row, parks blocked keys,
 * gathers atomic units, and places chains and units into per-group levels and waves. Pure
 * in-memory work: no I/O, and nothing outlives the window but what the caller keeps.
 */
#include "dwasync/window.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "dwasync/alloc.h"

#undef uthash_fatal
#define uthash_fatal(msg) dw_oom(0)

void dw_window_init(struct dw_window *w)
{
    memset(w, 0, sizeof *w);
}

static void item_cleanup(struct dw_item *it)
{
    struct dw_mapped_vec one = {.items = &it->mapped, .len = 1, .cap = 1};
    /* dw_mapped_vec_reset frees the contents without freeing the (borrowed) array. */
    dw_mapped_vec_reset(&one);
    free(it->source_key);
    free(it->key_text);
    free(it->new_row);
    free(it->old_row);
    free(it->unchanged);
}

void dw_window_reset(struct dw_window *w)
{
    for (size_t i = 0; i < w->len; i++)
        item_cleanup(&w->items[i]);
    w->len = 0;
    w->bytes = 0;
    w->opened_ms = 0;
    w->commit_end_lsn = DW_LSN_INVALID;
    w->commit_time_us = 0;
    w->commits = 0;
}

void dw_window_cleanup(struct dw_window *w)
{
    dw_window_reset(w);
    free(w->items);
    memset(w, 0, sizeof *w);
}

void dw_window_reserve(struct dw_window *w, size_t n)
{
    if (n < w->len)
        n = w->len;
    if (n == w->cap || n == 0)
        return;
    w->items = dw_realloc(w->items, n * sizeof *w->items);
    w->cap = n;
}

struct dw_item *dw_window_push(struct dw_window *w)
{
    if (w->len == w->cap)
        dw_window_reserve(w, w->cap < 64 ? 64 : w->cap + w->cap / 2);
    struct dw_item *it = &w->items[w->len++];
    memset(it, 0, sizeof *it);
    it->chain = -1;
    return it;
}

struct dw_item *dw_window_insert(struct dw_window *w, size_t at)
{
    dw_window_push(w);
    memmove(&w->items[at + 1], &w->items[at], (w->len - 1 - at) * sizeof *w->items);
    struct dw_item *it = &w->items[at];
    memset(it, 0, sizeof *it);
    it->chain = -1;
    return it;
}

void dw_window_keep_carried(struct dw_window *w)
{
    size_t keep = 0, bytes = 0;
    for (size_t i = 0; i < w->len; i++) {
        if (!w->items[i].carried) {
            item_cleanup(&w->items[i]);
            continue;
        }
        bytes += w->items[i].bytes;
        w->items[keep++] = w->items[i];
    }
    w->len = keep;
    w->bytes = bytes;
    w->commit_end_lsn = DW_LSN_INVALID;
    w->commit_time_us = 0;
    w->commits = 0;
    if (keep == 0)
        w->opened_ms = 0;
}

bool dw_window_empty(const struct dw_window *w)
{
    return w->len == 0 && w->commits == 0;
}

/* target_id (with the transaction, for atomic items) -> chain index, while building a plan */
struct chain_index {
    UT_hash_handle hh;
    size_t chain;
    char target[];
};

/* target_id -> the last wave in which a unit writes it, while placing units */
struct target_wave {
    UT_hash_handle hh;
    int wave;
    char target[];
};

static size_t group_index(struct dw_plan *p, const char *name)
{
    for (size_t i = 0; i < p->ngroups; i++)
        if (strcmp(p->groups[i].name, name) == 0)
            return i;
    p->groups = dw_array_grow(p->groups, p->ngroups, sizeof *p->groups);
    p->groups[p->ngroups] = (struct dw_group){.name = name};
    return p->ngroups++;
}

static bool is_delete(enum dw_write_op op)
{
    return op == DW_WRITE_DELETE;
}

/* Moves src into dst, freeing what dst held. */
static void write_replace(struct dw_write *dst, struct dw_write *src)
{
    dw_write_cleanup(dst);
    *dst = *src;
    memset(src, 0, sizeof *src);
}

/*
 * Folds a later write to the same row into a chain's write: a delete wins; an upsert after
 * a delete replaces it; two upserts merge column by column, the later value winning.
 */
static void write_coalesce(struct dw_write *chain, struct dw_write *next)
{
    if (is_delete(next->op) || is_delete(chain->op) || chain->body == NULL || next->body == NULL) {
        write_replace(chain, next);
        return;
    }
    json_t *merged = dw_write_body(chain), *later = dw_write_body(next);
    json_object_update(merged, later);
    json_decref(later);
    dw_write_set_body(chain, merged);
    /* An explicit create/update-only after an upsert stays an upsert: the row may exist. */
    if (chain->op != next->op)
        chain->op = DW_WRITE_UPSERT;
    dw_write_cleanup(next);
}

static int level_order(const void *a, const void *b)
{
    const struct dw_level *x = a, *y = b;
    if (x->wave != y->wave)
        return x->wave < y->wave ? -1 : 1; /* a wave is a whole pass over the levels */
    if (x->deletes != y->deletes)
        return x->deletes ? 1 : -1; /* upserts first, then deletes */
    if (x->sequence == y->sequence)
        return 0;
    /* upserts ascend (parents first); deletes descend (children first) */
    bool asc = !x->deletes;
    return (x->sequence < y->sequence) == asc ? -1 : 1;
}

static int group_order(const void *a, const void *b)
{
    return strcmp(((const struct dw_group *)a)->name, ((const struct dw_group *)b)->name);
}

/* Adds a chain (or, with unit, a unit) to its level, creating the level if needed. */
static void add_to_level(struct dw_group *g, int wave, int sequence, bool deletes, size_t index,
                         bool unit)
{
    struct dw_level *lv = NULL;
    for (size_t i = 0; i < g->nlevels; i++)
        if (g->levels[i].wave == wave && g->levels[i].sequence == sequence &&
            g->levels[i].deletes == deletes)
            lv = &g->levels[i];
    if (lv == NULL) {
        g->levels = dw_array_grow(g->levels, g->nlevels, sizeof *g->levels);
        lv = &g->levels[g->nlevels++];
        *lv = (struct dw_level){.wave = wave, .sequence = sequence, .deletes = deletes};
    }
    if (unit) {
        lv->units = dw_array_grow(lv->units, lv->nunits, sizeof *lv->units);
        lv->units[lv->nunits++] = index;
    } else {
        lv->chains = dw_array_grow(lv->chains, lv->nchains, sizeof *lv->chains);
        lv->chains[lv->nchains++] = index;
    }
}

/* Whether an item's key is blocked; items with no map (unconvertible rows) block nothing. */
static bool item_blocked(const struct dw_item *it, const struct dw_blocked_keys *blocked)
{
    return it->mapped.map_id && dw_item_key(it) &&
           dw_blocked_keys_contains(blocked, it->mapped.map_id, dw_item_key(it));
}

static void block_item(const struct dw_item *it, struct dw_blocked_keys *blocked)
{
    if (it->mapped.map_id && dw_item_key(it))
        dw_blocked_keys_add(blocked, it->mapped.map_id, dw_item_key(it));
}

/* The chains of one transaction through the atomic maps of one group, before placing. */
struct whole {
    size_t *chains;
    size_t nchains;
    int group;
    dw_lsn commit_lsn;
    uint32_t xid;
    const struct dw_item *poison; /* a change of it that is parked or unmappable */
};

/* The whole of (transaction, group), created when create is set; NULL if none. Wholes of
 * one transaction are created together (its items are contiguous), so when creating, the
 * search from the end stops at the first other transaction. */
static struct whole *whole_of(struct whole **wholes, size_t *n, dw_lsn commit_lsn, uint32_t xid,
                              int group, bool create)
{
    for (size_t i = *n; i-- > 0 && (!create || (*wholes)[i].commit_lsn == commit_lsn);)
        if ((*wholes)[i].commit_lsn == commit_lsn && (*wholes)[i].group == group)
            return &(*wholes)[i];
    if (!create)
        return NULL;
    *wholes = dw_array_grow(*wholes, *n, sizeof **wholes);
    struct whole *h = &(*wholes)[(*n)++];
    *h = (struct whole){.group = group, .commit_lsn = commit_lsn, .xid = xid};
    return h;
}

static int find_group(const struct dw_plan *p, const char *name)
{
    for (size_t i = 0; i < p->ngroups; i++)
        if (strcmp(p->groups[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Changeset order: upserts by ascending sequence, then deletes by descending sequence, and
 * the window's order within a level. */
struct unit_entry {
    size_t chain;
    bool deletes;
    int sequence;
};

static int unit_entry_order(const void *a, const void *b)
{
    const struct unit_entry *x = a, *y = b;
    if (x->deletes != y->deletes)
        return x->deletes ? 1 : -1;
    if (x->sequence != y->sequence)
        return (x->sequence < y->sequence) == !x->deletes ? -1 : 1;
    return (x->chain > y->chain) - (x->chain < y->chain);
}

/* A whole that cannot be applied all-or-nothing: its chains are not sent, and each change
 * becomes an open error naming the change that stopped it (the rest of a chain waits). */
static void fail_whole(struct dw_plan *p, struct dw_window *w, const struct whole *h,
                       struct dw_blocked_keys *blocked)
{
    const struct dw_item *bad = h->poison;
    const char *name = bad->mapped.target_id ? bad->mapped.target_id : dw_item_key(bad);
    char *msg =
        bad->state == DW_ITEM_WAITING
            ? dw_asprintf("not sent: %s in the same atomic group is waiting behind an "
                          "open error of its key",
                          name ? name : "a change")
            : dw_asprintf("not sent: %s in the same atomic group could not be mapped: %s",
                          name ? name : "a change", bad->mapped.error ? bad->mapped.error : "");
    for (size_t k = 0; k < h->nchains; k++) {
        struct dw_chain *c = &p->chains[h->chains[k]];
        for (size_t i = 0; i < c->nitems; i++) {
            struct dw_item *it = &w->items[c->items[i]];
            it->chain = -1;
            it->state = i == 0 ? DW_ITEM_OPEN : DW_ITEM_WAITING;
            if (i == 0) {
                it->mapped.ok = false;
                it->mapped.error_class = DW_ERRCLASS_CONFLICT;
                it->mapped.error = dw_strdup(msg);
            }
            block_item(it, blocked);
        }
    }
    free(msg);
}

/* Places a whole: sorted into changeset order, cut into parts, each part a unit in the
 * level of its first chain and in the wave after every earlier unit that wrote its rows. */
static void place_whole(struct dw_plan *p, struct dw_window *w, const struct whole *h,
                        struct target_wave **waves)
{
    struct unit_entry *order = dw_malloc(h->nchains * sizeof *order);
    for (size_t k = 0; k < h->nchains; k++) {
        const struct dw_chain *c = &p->chains[h->chains[k]];
        order[k] = (struct unit_entry){h->chains[k], c->deleting, c->sequence};
    }
    qsort(order, h->nchains, sizeof *order, unit_entry_order);
    int base = 0;
    struct target_wave *tw;
    for (size_t k = 0; k < h->nchains; k++) {
        const char *t = w->items[p->chains[order[k].chain].items[0]].mapped.target_id;
        HASH_FIND_STR(*waves, t, tw);
        if (tw && tw->wave + 1 > base)
            base = tw->wave + 1;
    }
    size_t nparts = (h->nchains + DW_SINK_ATOMIC_MAX - 1) / DW_SINK_ATOMIC_MAX;
    for (size_t part = 0; part < nparts; part++) {
        size_t first = part * DW_SINK_ATOMIC_MAX;
        size_t n =
            h->nchains - first < DW_SINK_ATOMIC_MAX ? h->nchains - first : DW_SINK_ATOMIC_MAX;
        p->units = dw_array_grow(p->units, p->nunits, sizeof *p->units);
        struct dw_unit *u = &p->units[p->nunits];
        *u = (struct dw_unit){.chains = dw_malloc(n * sizeof *u->chains),
                              .nchains = n,
                              .group = h->group,
                              .commit_lsn = h->commit_lsn,
                              .xid = h->xid,
                              .part = part,
                              .nparts = nparts};
        int wave = base + (int)part;
        for (size_t k = 0; k < n; k++) {
            size_t chain = order[first + k].chain;
            u->chains[k] = chain;
            p->chains[chain].unit = (int)p->nunits;
            const char *t = w->items[p->chains[chain].items[0]].mapped.target_id;
            HASH_FIND_STR(*waves, t, tw);
            if (tw == NULL) {
                size_t len = strlen(t);
                tw = dw_malloc(sizeof *tw + len + 1);
                memcpy(tw->target, t, len + 1);
                HASH_ADD(hh, *waves, target[0], len, tw);
            }
            tw->wave = wave;
        }
        add_to_level(&p->groups[h->group], wave, order[first].sequence, order[first].deletes,
                     p->nunits, true);
        p->nunits++;
    }
    free(order);
}

/* Gathers the chains of atomic items into units (see the header). */
static void build_units(struct dw_plan *p, struct dw_window *w, struct dw_blocked_keys *blocked)
{
    struct whole *wholes = NULL;
    size_t nwholes = 0;
    for (size_t c = 0; c < p->nchains; c++) {
        const struct dw_item *head = &w->items[p->chains[c].items[0]];
        if (!head->atomic)
            continue;
        struct whole *h =
            whole_of(&wholes, &nwholes, head->commit_lsn, head->xid, p->chains[c].group, true);
        h->chains = dw_array_grow(h->chains, h->nchains, sizeof *h->chains);
        h->chains[h->nchains++] = c;
    }
    for (size_t i = 0; i < w->len; i++) {
        const struct dw_item *it = &w->items[i];
        if (!it->atomic || it->chain >= 0 ||
            (it->state != DW_ITEM_WAITING && it->state != DW_ITEM_OPEN))
            continue;
        int g = find_group(p, it->mapped.group_name ? it->mapped.group_name : "");
        struct whole *h =
            g < 0 ? NULL : whole_of(&wholes, &nwholes, it->commit_lsn, it->xid, g, false);
        if (h && h->poison == NULL)
            h->poison = it;
    }
    struct target_wave *waves = NULL, *tw, *tmp;
    for (size_t k = 0; k < nwholes; k++) {
        if (wholes[k].poison)
            fail_whole(p, w, &wholes[k], blocked);
        else
            place_whole(p, w, &wholes[k], &waves);
        free(wholes[k].chains);
    }
    free(wholes);
    HASH_ITER(hh, waves, tw, tmp)
    {
        HASH_DEL(waves, tw);
        free(tw);
    }
}

void dw_plan_build(struct dw_window *w, struct dw_blocked_keys *blocked, struct dw_plan *out)
{
    struct dw_plan p = {0};
    struct chain_index *index = NULL, *e, *tmp;

    for (size_t i = 0; i < w->len; i++) {
        struct dw_item *it = &w->items[i];
        if (item_blocked(it, blocked)) {
            it->state = DW_ITEM_WAITING;
            continue;
        }
        if (!it->mapped.ok) {
            it->state = DW_ITEM_OPEN;
            block_item(it, blocked);
            continue;
        }
        /* An atomic change coalesces only with changes of its own transaction. */
        char *txn_target = it->atomic ? dw_asprintf("%s\x1f%" PRIx64, it->mapped.target_id,
                                                    (uint64_t)it->commit_lsn)
                                      : NULL;
        const char *target = txn_target ? txn_target : it->mapped.target_id;
        HASH_FIND_STR(index, target, e);
        if (e == NULL && it->mapped.unchanged) {
            /* Nothing new for the row, and no write of this window to wait for. */
            it->state = DW_ITEM_APPLIED;
            p.unchanged++;
            free(txn_target);
            continue;
        }
        if (e == NULL) {
            p.chains = dw_array_grow(p.chains, p.nchains, sizeof *p.chains);
            struct dw_chain *c = &p.chains[p.nchains];
            memset(c, 0, sizeof *c);
            c->unit = -1;
            c->attempts = it->attempts;
            c->write = it->mapped.write;
            memset(&it->mapped.write, 0, sizeof it->mapped.write);
            size_t len = strlen(target);
            e = dw_malloc(sizeof *e + len + 1);
            memcpy(e->target, target, len + 1);
            e->chain = p.nchains++;
            HASH_ADD(hh, index, target[0], len, e);
        } else if (it->mapped.write.entity_set) {
            write_coalesce(&p.chains[e->chain].write, &it->mapped.write);
        } /* (else a carried item whose write the chain's first item holds) */
        struct dw_chain *c = &p.chains[e->chain];
        c->items = dw_array_grow(c->items, c->nitems, sizeof *c->items);
        c->items[c->nitems++] = i;
        /* The latest change decides where the row sits in the order. */
        c->group = (int)group_index(&p, it->mapped.group_name ? it->mapped.group_name : "");
        c->sequence = it->mapped.sequence;
        it->chain = (int)e->chain;
        free(txn_target);
    }
    HASH_ITER(hh, index, e, tmp)
    {
        HASH_DEL(index, e);
        free(e);
    }

    for (size_t c = 0; c < p.nchains; c++)
        p.chains[c].deleting = is_delete(p.chains[c].write.op);
    build_units(&p, w, blocked);
    for (size_t c = 0; c < p.nchains; c++) {
        struct dw_chain *ch = &p.chains[c];
        if (!w->items[ch->items[0]].atomic)
            add_to_level(&p.groups[ch->group], 0, ch->sequence, ch->deleting, c, false);
    }
    /* (A group whose only changes form units that cannot be sent has no level at all.) */
    for (size_t g = 0; g < p.ngroups; g++)
        if (p.groups[g].nlevels > 1)
            qsort(p.groups[g].levels, p.groups[g].nlevels, sizeof *p.groups[g].levels, level_order);
    /* Sorting groups would invalidate chain->group indexes; fix them up after. (A window
     * of parked changes only has no group: qsort must not see its NULL array.) */
    if (p.ngroups > 1)
        qsort(p.groups, p.ngroups, sizeof *p.groups, group_order);
    for (size_t g = 0; g < p.ngroups; g++) {
        for (size_t l = 0; l < p.groups[g].nlevels; l++) {
            const struct dw_level *lv = &p.groups[g].levels[l];
            for (size_t k = 0; k < lv->nchains; k++)
                p.chains[lv->chains[k]].group = (int)g;
            for (size_t k = 0; k < lv->nunits; k++) {
                struct dw_unit *u = &p.units[lv->units[k]];
                u->group = (int)g;
                for (size_t j = 0; j < u->nchains; j++)
                    p.chains[u->chains[j]].group = (int)g;
            }
        }
    }
    *out = p;
}

void dw_plan_cleanup(struct dw_plan *p)
{
    for (size_t c = 0; c < p->nchains; c++) {
        dw_write_cleanup(&p->chains[c].write);
        free(p->chains[c].items);
    }
    free(p->chains);
    for (size_t u = 0; u < p->nunits; u++)
        free(p->units[u].chains);
    free(p->units);
    for (size_t g = 0; g < p->ngroups; g++) {
        for (size_t l = 0; l < p->groups[g].nlevels; l++) {
            free(p->groups[g].levels[l].chains);
            free(p->groups[g].levels[l].units);
        }
        free(p->groups[g].levels);
    }
    free(p->groups);
    memset(p, 0, sizeof *p);
}

void dw_plan_fail_chain(struct dw_plan *p, struct dw_window *w, size_t chain,
                        struct dw_blocked_keys *blocked)
{
    struct dw_chain *c = &p->chains[chain];
    for (size_t i = 0; i < c->nitems; i++) {
        struct dw_item *it = &w->items[c->items[i]];
        it->state = i == 0 ? DW_ITEM_OPEN : DW_ITEM_WAITING;
        block_item(it, blocked);
    }
}

void dw_plan_park_chain(struct dw_plan *p, struct dw_window *w, size_t chain,
                        struct dw_blocked_keys *blocked)
{
    struct dw_chain *c = &p->chains[chain];
    for (size_t i = 0; i < c->nitems; i++) {
        struct dw_item *it = &w->items[c->items[i]];
        it->state = DW_ITEM_WAITING;
        block_item(it, blocked);
    }
}

void dw_plan_apply_chain(struct dw_plan *p, struct dw_window *w, size_t chain)
{
    struct dw_chain *c = &p->chains[chain];
    for (size_t i = 0; i < c->nitems; i++) {
        struct dw_item *it = &w->items[c->items[i]];
        it->state = DW_ITEM_APPLIED;
        free(it->source_key);
        free(it->new_row);
        free(it->old_row);
        free(it->unchanged);
        it->source_key = it->new_row = it->old_row = it->unchanged = NULL;
    }
}

/* Rows of one kind of request: a (group, level, entity set, bulk or $batch) while planning. */
struct request_kind {
    UT_hash_handle hh;
    size_t rows;
    char name[];
};

static void count_request_rows(struct request_kind **kinds, size_t g, size_t l,
                               const struct dw_chain *c)
{
    /* Only upserts go in bulk actions; the other writes go in $batch requests (sink.h). */
    char *name = dw_asprintf("%zu\x1f%zu\x1f%s\x1f%d", g, l, c->write.entity_set,
                             c->write.op == DW_WRITE_UPSERT);
    struct request_kind *k;
    HASH_FIND_STR(*kinds, name, k);
    if (k == NULL) {
        size_t len = strlen(name);
        k = dw_calloc(1, sizeof *k + len + 1);
        memcpy(k->name, name, len + 1);
        HASH_ADD(hh, *kinds, name[0], len, k);
    }
    k->rows++;
    free(name);
}

/* The rows of each kind of request of a plan (see dw_plan_request_fill()); caller frees. */
static size_t *request_kinds(const struct dw_plan *p, size_t *n)
{
    struct request_kind *kinds = NULL, *k, *tmp;
    for (size_t g = 0; g < p->ngroups; g++)
        for (size_t l = 0; l < p->groups[g].nlevels; l++)
            for (size_t i = 0; i < p->groups[g].levels[l].nchains; i++)
                count_request_rows(&kinds, g, l, &p->chains[p->groups[g].levels[l].chains[i]]);
    size_t *rows = dw_malloc((HASH_COUNT(kinds) + 1) * sizeof *rows);
    *n = 0;
    HASH_ITER(hh, kinds, k, tmp)
    {
        rows[(*n)++] = k->rows;
        HASH_DEL(kinds, k);
        free(k);
    }
    return rows;
}

/* The fill of requests of size rows carrying rows[k] * scale rows of each kind k. */
static double fill_scaled(const size_t *rows, size_t n, double scale, size_t size)
{
    double total = 0, requests = 0;
    for (size_t k = 0; k < n; k++) {
        double r = (double)rows[k] * scale;
        total += r;
        requests += (double)(((size_t)(r + 0.5) + size - 1) / size);
    }
    return requests > 0 ? total / (requests * (double)size) : 1.0;
}

static size_t batch_rows(int64_t batch_size)
{
    return batch_size > 0 ? (size_t)batch_size : 1;
}

double dw_plan_request_fill(const struct dw_plan *p, int64_t batch_size)
{
    size_t n;
    size_t *rows = request_kinds(p, &n);
    double fill = fill_scaled(rows, n, 1.0, batch_rows(batch_size));
    free(rows);
    return fill;
}

bool dw_window_recent(const struct dw_window *w, int64_t now_us)
{
    return w->commits > 0 && now_us - w->commit_time_us < (int64_t)DW_WINDOW_CAUGHT_UP_MS * 1000;
}

void dw_window_sizing_init(struct dw_window_sizing *s, int64_t base_rows, int64_t batch_size,
                           int64_t growth)
{
    *s = (struct dw_window_sizing){.base_rows = base_rows,
                                   .batch_size = batch_size,
                                   .growth = growth > 1 ? growth : 1,
                                   .rows = base_rows};
}

void dw_window_sizing_outcome(struct dw_window_sizing *s, size_t applied, size_t failed)
{
    s->failing = failed > applied;
    if (s->failing)
        s->rows = s->base_rows;
}

int64_t dw_window_sizing_learn(struct dw_window_sizing *s, const struct dw_plan *p, bool behind)
{
    if (!behind || s->failing) {
        s->rows = s->base_rows;
        return s->rows;
    }
    size_t n, total = 0, size = batch_rows(s->batch_size);
    size_t *rows = request_kinds(p, &n);
    for (size_t k = 0; k < n; k++)
        total += rows[k];
    /* The smallest multiple of window_rows whose requests would be full enough, were the
     * next windows made of the same mix as this one; the largest allowed if none is. */
    if (total > 0 && s->batch_size > 0 && fill_scaled(rows, n, 1.0, size) < DW_WINDOW_FILL_TARGET) {
        int64_t want = s->base_rows * s->growth;
        for (int64_t m = 1; m < s->growth; m++) {
            int64_t candidate = s->base_rows * m;
            if (candidate > s->rows && fill_scaled(rows, n, (double)candidate / (double)total,
                                                   size) >= DW_WINDOW_FILL_TARGET) {
                want = candidate;
                break;
            }
        }
        if (want > s->rows)
            s->rows = want;
    }
    free(rows);
    return s->rows;
}

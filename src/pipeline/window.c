#include "dwasync/window.h"

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
    free(it->source_schema);
    free(it->source_table);
    json_decref(it->source_key);
    free(it->key_text);
    free(it->new_row);
    free(it->old_row);
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

struct dw_item *dw_window_push(struct dw_window *w)
{
    if (w->len == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->items = dw_realloc(w->items, w->cap * sizeof *w->items);
    }
    struct dw_item *it = &w->items[w->len++];
    memset(it, 0, sizeof *it);
    it->chain = -1;
    return it;
}

bool dw_window_empty(const struct dw_window *w)
{
    return w->len == 0 && w->commits == 0;
}

/* target_id -> chain index, while building a plan */
struct chain_index {
    UT_hash_handle hh;
    size_t chain;
    char target[];
};

static size_t group_index(struct dw_plan *p, const char *name)
{
    for (size_t i = 0; i < p->ngroups; i++)
        if (strcmp(p->groups[i].name, name) == 0)
            return i;
    p->groups = dw_realloc(p->groups, (p->ngroups + 1) * sizeof *p->groups);
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
    json_object_update(chain->body, next->body);
    /* An explicit create/update-only after an upsert stays an upsert: the row may exist. */
    if (chain->op != next->op)
        chain->op = DW_WRITE_UPSERT;
    dw_write_cleanup(next);
}

static int level_order(const void *a, const void *b)
{
    const struct dw_level *x = a, *y = b;
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

static void add_to_level(struct dw_group *g, int sequence, bool deletes, size_t chain)
{
    struct dw_level *lv = NULL;
    for (size_t i = 0; i < g->nlevels; i++)
        if (g->levels[i].sequence == sequence && g->levels[i].deletes == deletes)
            lv = &g->levels[i];
    if (lv == NULL) {
        g->levels = dw_realloc(g->levels, (g->nlevels + 1) * sizeof *g->levels);
        lv = &g->levels[g->nlevels++];
        *lv = (struct dw_level){.sequence = sequence, .deletes = deletes};
    }
    lv->chains = dw_realloc(lv->chains, (lv->nchains + 1) * sizeof *lv->chains);
    lv->chains[lv->nchains++] = chain;
}

/* Whether an item's key is blocked; items with no map (unconvertible rows) block nothing. */
static bool item_blocked(const struct dw_item *it, const struct dw_blocked_keys *blocked)
{
    return it->mapped.map_id && it->key_text &&
           dw_blocked_keys_contains(blocked, it->mapped.map_id, it->key_text);
}

static void block_item(const struct dw_item *it, struct dw_blocked_keys *blocked)
{
    if (it->mapped.map_id && it->key_text)
        dw_blocked_keys_add(blocked, it->mapped.map_id, it->key_text);
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
        const char *target = it->mapped.target_id;
        HASH_FIND_STR(index, target, e);
        if (e == NULL) {
            p.chains = dw_realloc(p.chains, (p.nchains + 1) * sizeof *p.chains);
            struct dw_chain *c = &p.chains[p.nchains];
            memset(c, 0, sizeof *c);
            c->write = it->mapped.write;
            memset(&it->mapped.write, 0, sizeof it->mapped.write);
            size_t len = strlen(target);
            e = dw_malloc(sizeof *e + len + 1);
            memcpy(e->target, target, len + 1);
            e->chain = p.nchains++;
            HASH_ADD(hh, index, target[0], len, e);
        } else {
            write_coalesce(&p.chains[e->chain].write, &it->mapped.write);
        }
        struct dw_chain *c = &p.chains[e->chain];
        c->items = dw_realloc(c->items, (c->nitems + 1) * sizeof *c->items);
        c->items[c->nitems++] = i;
        /* The latest change decides where the row sits in the order. */
        c->group = (int)group_index(&p, it->mapped.group_name ? it->mapped.group_name : "");
        c->sequence = it->mapped.sequence;
        it->chain = (int)e->chain;
    }
    HASH_ITER(hh, index, e, tmp)
    {
        HASH_DEL(index, e);
        free(e);
    }

    for (size_t c = 0; c < p.nchains; c++) {
        struct dw_chain *ch = &p.chains[c];
        ch->deleting = is_delete(ch->write.op);
        add_to_level(&p.groups[ch->group], ch->sequence, ch->deleting, c);
    }
    for (size_t g = 0; g < p.ngroups; g++)
        qsort(p.groups[g].levels, p.groups[g].nlevels, sizeof *p.groups[g].levels, level_order);
    /* Sorting groups would invalidate chain->group indexes; fix them up after. (A window
     * of parked changes only has no group: qsort must not see its NULL array.) */
    if (p.ngroups > 1)
        qsort(p.groups, p.ngroups, sizeof *p.groups, group_order);
    for (size_t g = 0; g < p.ngroups; g++)
        for (size_t l = 0; l < p.groups[g].nlevels; l++)
            for (size_t k = 0; k < p.groups[g].levels[l].nchains; k++)
                p.chains[p.groups[g].levels[l].chains[k]].group = (int)g;
    *out = p;
}

void dw_plan_cleanup(struct dw_plan *p)
{
    for (size_t c = 0; c < p->nchains; c++) {
        dw_write_cleanup(&p->chains[c].write);
        free(p->chains[c].items);
    }
    free(p->chains);
    for (size_t g = 0; g < p->ngroups; g++) {
        for (size_t l = 0; l < p->groups[g].nlevels; l++)
            free(p->groups[g].levels[l].chains);
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

void dw_plan_apply_chain(struct dw_plan *p, struct dw_window *w, size_t chain)
{
    struct dw_chain *c = &p->chains[chain];
    for (size_t i = 0; i < c->nitems; i++)
        w->items[c->items[i]].state = DW_ITEM_APPLIED;
}

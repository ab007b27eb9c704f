/*
 * window.h - apply windows: the unit in which changes are gathered, coalesced, ordered
 * and confirmed.
 *
 * A window collects mapped changes of committed transactions in commit order, bounded by
 * rows, bytes and age ([apply] window_*). When it is applied, dw_plan_build() turns it
 * into chains and levels:
 *   - a *chain* is every change in the window to one target row (same target_id),
 *     coalesced into one write: upsert+upsert -> upsert of the merged row, upsert+delete ->
 *     delete, delete+upsert -> upsert; unchanged-TOAST columns were already omitted by the
 *     mapping, so merging bodies keeps the last value sent for every column;
 *   - changes whose source key is blocked behind an open error are *parked* (status
 *     waiting), in order, and never sent; a change that could not be mapped becomes an open
 *     error and blocks its key for the rest of the window;
 *   - chains are grouped into *levels* per table group: upserts by ascending sequence, then
 *     deletes by descending sequence (children first). Groups are independent.
 *   - changes through atomic maps (options.atomic) form *units*: the chains of one source
 *     transaction in one table group, applied all-or-nothing as one changeset, in level
 *     order inside it. Their chains coalesce only within the transaction (never across
 *     transactions, which would tie one transaction's fate to another's), so two units of
 *     a window may write one row: the later one then goes in a later *wave* (a whole new
 *     pass over the levels, after every level of the earlier waves), keeping commit order
 *     per row. A unit sits in the level of its first chain (its lowest upsert sequence, or
 *     its highest delete sequence). A unit with a parked or unmappable change is not sent at
 *     all: its other changes become open errors naming it. A unit of more than
 *     DW_SINK_ATOMIC_MAX chains is cut into parts of that size, one wave each.
 * A change whose mapping found nothing new to send (dw_mapped.unchanged) starts no chain: it
 * is applied as it stands, unless its key is blocked (then it is parked like any other) or
 * an earlier change of the window writes the same row (then it joins that chain, so it
 * shares that write's fate).
 * The checkpoint rule lives above this (pipeline.h): a window knows the end LSN of the last
 * transaction whose commit it received, and that is what may be confirmed once every item
 * is applied or durably in the error table.
 *
 * How many rows the filling window takes is the sizing's (struct dw_window_sizing): the
 * configured bound while the stream is caught up, larger while it is behind, so that bulk
 * requests go out (nearly) full.
 *
 * Ownership: a window owns its items (and everything inside them). A plan borrows the
 * window's items by index and owns the coalesced writes of its chains; free the plan
 * before the window.
 */
#ifndef DWASYNC_WINDOW_H
#define DWASYNC_WINDOW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/errtable.h"
#include "dwasync/lsn.h"
#include "dwasync/mapping.h"
#include "dwasync/write.h"

/* What happened to one item. */
enum dw_item_state {
    DW_ITEM_PENDING,  /* not resolved yet */
    DW_ITEM_APPLIED,  /* sent and acknowledged (alone or inside its chain) */
    DW_ITEM_OPEN,     /* failed: an open error row */
    DW_ITEM_WAITING,  /* parked behind an open error of its key */
    DW_ITEM_DEFERRED, /* its parent is missing, retries are left: carried into the next window */
};

/* One mapped change in a window. */
struct dw_item {
    struct dw_mapped mapped; /* the mapping result (ok or error); owned */
    dw_lsn commit_lsn;
    int64_t commit_time_us;
    uint32_t xid;
    uint32_t position;    /* index of the change within its transaction */
    enum dw_change_op op; /* the source operation */
    int part;             /* 0, or 1 for a change's second write through the same map */
    /* borrowed from the job's maps, as mapped.map_name is (dw_job_maps_reader()) */
    const char *source_schema;
    const char *source_table;
    /* The replica-identity columns and the typed row images, for the error table, as
     * compact JSON text (a tree costs several times more); owned. The images may be NULL;
     * a NULL source_key is the whole row (REPLICA IDENTITY FULL): new_row's text, or
     * old_row's for a delete. */
    char *source_key;
    char *new_row;
    char *old_row;
    char *unchanged; /* JSON array of the columns not sent (unchanged TOAST), NULL when
                      * none; owned. A replay needs it: such a column is left as it is in
                      * Dataverse, not missing from the row. */
    char *key_text;  /* the blocking key (with the map id) when it is not mapped.target_id:
                      * the canonical source key of a change that never reached a map;
                      * NULL when it is the target id (dw_item_key()); owned */
    size_t bytes;    /* memory estimate, for the window's byte bound */
    enum dw_item_state state;
    int chain;          /* index of its chain in the plan, -1 if none */
    bool old_row_delta; /* old_row holds only how it differs from new_row (pipeline.c) */
    bool atomic;        /* through an atomic map: applied all-or-nothing with its transaction */
    /* Carried from an earlier window whose chain met a missing parent (pipeline.c): it was
     * sent attempts times already. The first item of a carried chain holds the chain's
     * coalesced write; the others hold none (mapped.write empty) and add nothing to it. */
    bool carried;
    int attempts;
};

/* The key an item blocks and is parked by (with its map id): key_text, or its target id. */
static inline const char *dw_item_key(const struct dw_item *it)
{
    return it->key_text ? it->key_text : it->mapped.target_id;
}

struct dw_window {
    struct dw_item *items;
    size_t len, cap;
    size_t bytes;
    int64_t opened_ms;      /* monotonic ms of the first change (or commit), 0 when empty */
    dw_lsn commit_end_lsn;  /* end LSN of the last commit received into this window */
    int64_t commit_time_us; /* its commit time */
    uint64_t commits;       /* transactions whose commit this window received */
};

void dw_window_init(struct dw_window *w);
void dw_window_cleanup(struct dw_window *w);

/* Empties the window for reuse (frees items' contents, keeps the array). */
void dw_window_reset(struct dw_window *w);

/* Sizes the item array for n items, the window's row bound, growing or shrinking it (never
 * below its length): three windows keep their arrays from round to round, so an array
 * grown while the stream was behind must not stay that large once it has caught up. */
void dw_window_reserve(struct dw_window *w, size_t n);

/* Appends an item (zeroed, state pending) and returns it; the caller fills it. Past the
 * reserved size the array grows by half. */
struct dw_item *dw_window_push(struct dw_window *w);

/* Inserts an item (zeroed, state pending) at index at (<= len) and returns it; the items
 * after it move up by one. For items older than every item in the window (carried ones). */
struct dw_item *dw_window_insert(struct dw_window *w, size_t at);

/* Drops every item but the carried ones and forgets the commits received (they will be
 * received again after a reconnect); carried items stay, in order. */
void dw_window_keep_carried(struct dw_window *w);

/* Whether the window has nothing to apply or confirm. */
bool dw_window_empty(const struct dw_window *w);

/* A coalesced write to one target row. */
struct dw_chain {
    size_t *items; /* indexes of the window items merged into it, in commit order */
    size_t nitems;
    struct dw_write write; /* the coalesced write; owned */
    int group;             /* index into plan.groups */
    int sequence;
    bool deleting; /* the final operation is a delete */
    int attempts;  /* times sent (missing-parent retries) */
    int unit;      /* index into plan.units, -1 if not atomic */
};

/* The chains of one transaction through the atomic maps of one table group (or one part of
 * them, see nparts), in changeset order. */
struct dw_unit {
    size_t *chains;
    size_t nchains;
    int group;
    dw_lsn commit_lsn;
    uint32_t xid;
    size_t part, nparts; /* this part of the transaction's unit, and how many there are */
};

/* The chains (and atomic units) of one table map level in one wave. */
struct dw_level {
    int wave; /* 0, or later passes for atomic units that write a row an earlier one wrote */
    int sequence;
    bool deletes;
    size_t *chains; /* chains outside units */
    size_t nchains;
    size_t *units;
    size_t nunits;
};

struct dw_group {
    const char *name;        /* borrowed from the maps */
    struct dw_level *levels; /* in apply order */
    size_t nlevels;
};

struct dw_plan {
    struct dw_chain *chains;
    size_t nchains;
    struct dw_unit *units;
    size_t nunits;
    struct dw_group *groups;
    size_t ngroups;
    size_t unchanged; /* items applied without a write: nothing new to send (no-op updates) */
};

/*
 * Builds the plan of a window. Items whose (map id, key text) is in blocked are parked;
 * items that failed mapping become open and add their key to blocked. The window's items
 * are updated (state, chain) and their writes moved into the chains.
 */
void dw_plan_build(struct dw_window *w, struct dw_blocked_keys *blocked, struct dw_plan *out);

void dw_plan_cleanup(struct dw_plan *p);

/*
 * Marks a failed chain: its first item becomes open, the rest waiting, and each item's key
 * is added to blocked.
 */
void dw_plan_fail_chain(struct dw_plan *p, struct dw_window *w, size_t chain,
                        struct dw_blocked_keys *blocked);

/* Marks a chain that was never sent parked: every item waiting, each key blocked. */
void dw_plan_park_chain(struct dw_plan *p, struct dw_window *w, size_t chain,
                        struct dw_blocked_keys *blocked);

/* Marks every item of a chain applied and lets go of their row images: only an error row
 * needs them, and a window's applied rows would otherwise hold them until it is persisted. */
void dw_plan_apply_chain(struct dw_plan *p, struct dw_window *w, size_t chain);

/*
 * The average fill of the bulk requests a plan makes, as a fraction of batch_size: the
 * chains outside atomic units of each (group, level, entity set, upsert or not) go out in
 * requests of at most batch_size rows (sink.h), so n of them take ceil(n / batch_size)
 * requests. 1.0 for a plan without such chains.
 */
double dw_plan_request_fill(const struct dw_plan *p, int64_t batch_size);

/*
 * The row bound of the filling window. While the stream is behind (a window closed full,
 * the stream had more to read when it closed, or its last commit is not recent), a window
 * whose bulk requests would be less than DW_WINDOW_FILL_TARGET full raises the bound for the
 * next ones to the smallest multiple of the configured bound whose requests would be, were
 * they of the same mix; at most growth times the configured bound ([apply] window_growth; the byte
 * bound, [apply] window_bytes, holds whatever the rows: memory stays bounded). Once the stream is
 * caught up (nothing more to read, and recent commits), the bound returns to the configured
 * one: windows stay small. Nor do they grow while the rows of the last window applied
 * mostly failed (dw_window_sizing_outcome()): parked rows gain nothing from fuller requests,
 * and each keeps its error's texts until its window is persisted. (bench_replay.sh's
 * parking is of one table, whose requests are full without growing: this rule does not
 * come into play there, as its debug log shows.)
 * Caller-owned; no resources.
 */
struct dw_window_sizing {
    int64_t base_rows;  /* [apply] window_rows */
    int64_t batch_size; /* [dataverse] batch_size: rows per bulk request */
    int64_t growth;     /* [apply] window_growth: the largest bound, in base_rows */
    int64_t rows;       /* the bound now */
    bool failing;       /* the last window applied had more rows failed than applied */
};

/* Above the 90% that issue 20 asks of a backlog's requests: the first windows of a backlog,
 * before the bound has grown, and its last one are less full. Growth stops by default at
 * twice window_rows: three windows are alive, each row with its images and body (with
 * bodies as trees, bench_limits.sh peaked at 223 MB when windows grew to 16 times, 105 MB at
 * 4 times; bench_replay.sh's initial sync at 80 MB at 2 times and 53 MB at 1; with bodies as
 * text, bench_replay.sh peaks at 67 to 68 MB at 2 times; with references as one block and
 * items that borrow their names, 58 to 67 MB, median 60). */
#define DW_WINDOW_FILL_TARGET    0.95
#define DW_WINDOW_GROWTH_DEFAULT 2

/* A commit read later than this after it was made means the stream is behind. */
#define DW_WINDOW_CAUGHT_UP_MS 1000

/*
 * Whether the window's last commit was made less than DW_WINDOW_CAUGHT_UP_MS before now_us
 * (wall clock, µs; commit times are the source server's): the stream is caught up, unless
 * the reader still has more to read (pipeline.h). A source clock far ahead looks caught up,
 * one far behind looks behind: windows then close by window_ms, as without this rule.
 */
bool dw_window_recent(const struct dw_window *w, int64_t now_us);

void dw_window_sizing_init(struct dw_window_sizing *s, int64_t base_rows, int64_t batch_size,
                           int64_t growth);

/*
 * Learns from a window that is about to be applied and its plan: behind tells whether the
 * stream was behind when it closed (see the struct). Returns the new bound.
 */
int64_t dw_window_sizing_learn(struct dw_window_sizing *s, const struct dw_plan *p, bool behind);

/* Learns how a window's rows ended (applied, and failed or parked): more failed than
 * applied holds the bound at window_rows until a window applies more than fail. */
void dw_window_sizing_outcome(struct dw_window_sizing *s, size_t applied, size_t failed);

#endif

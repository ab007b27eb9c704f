/*
 * The daemon's counts of changes by table, class and map (see changemetrics.h): the series a
 * change is counted in are kept in two small hash tables, keyed by their label values joined
 * with NULs (no label value holds one), so that counting a change costs a lookup each.
 */
#include "dwasync/changemetrics.h"

#include <stdio.h>
#include <string.h>
#include <uthash.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"

/* The longest key kept (job, schema, table and class or map, with their NULs); a longer one
 * is counted in the registry directly. */
#define KEY_MAX 1024

/* The series of one job and table and class: one per kind of count. */
enum { KEPT_RECEIVED, KEPT_APPLIED, KEPT_PARKED, KEPT_ERRORS, KEPT_KINDS };

struct kept {
    struct dw_metric_series *series[KEPT_KINDS]; /* NULL until first counted */
    UT_hash_handle hh;
    char key[]; /* the label values, each ended by a NUL */
};

struct dw_change_metrics {
    struct dw_metrics *metrics;
    struct kept *by_table; /* job, schema, table, class */
    struct kept *by_map;   /* job, map: the latency histogram in series[0] */
    size_t nkept;
};

struct dw_change_metrics *dw_change_metrics_new(struct dw_metrics *m)
{
    struct dw_change_metrics *cm = dw_calloc(1, sizeof *cm);
    cm->metrics = m;
    return cm;
}

static void free_table(struct kept **table)
{
    struct kept *k, *tmp;
    HASH_ITER(hh, *table, k, tmp)
    {
        HASH_DEL(*table, k);
        free(k);
    }
}

void dw_change_metrics_free(struct dw_change_metrics *cm)
{
    if (cm == NULL)
        return;
    free_table(&cm->by_table);
    free_table(&cm->by_map);
    free(cm);
}

/*
 * The series of family with these labels, kept in table under the label values (joined with
 * their NULs) for the next count; found in the registry, and kept, the first time. NULL when
 * the registry refuses it (logged there).
 */
static struct dw_metric_series *kept_series(struct dw_change_metrics *cm, struct kept **table,
                                            int kind, const char *family, enum dw_metric_type type,
                                            const char *const *labels)
{
    char key[KEY_MAX];
    size_t len = 0;
    for (const char *const *v = labels + 1; v[-1]; v += 2) {
        size_t n = strlen(*v) + 1;
        if (len + n > sizeof key)
            return dw_metrics_series(cm->metrics, family, type, labels);
        memcpy(key + len, *v, n);
        len += n;
    }
    struct kept *k;
    HASH_FIND(hh, *table, key, len, k);
    if (k && k->series[kind])
        return k->series[kind];
    struct dw_metric_series *s = dw_metrics_series(cm->metrics, family, type, labels);
    if (k == NULL && s && cm->nkept < DW_METRICS_MAX_SERIES) {
        k = dw_calloc(1, sizeof *k + len);
        memcpy(k->key, key, len);
        HASH_ADD(hh, *table, key, len, k);
        cm->nkept++;
    }
    if (k)
        k->series[kind] = s;
    return s;
}

void dw_change_metrics_count(struct dw_change_metrics *cm, const char *job, enum dw_observed what,
                             const char *schema, const char *table, const char *map,
                             const char *class_name, int64_t commit_time_us)
{
    static const char *const families[] = {
        [KEPT_RECEIVED] = DW_M_CHANGES_RECEIVED,
        [KEPT_APPLIED] = DW_M_CHANGES_APPLIED,
        [KEPT_PARKED] = DW_M_CHANGES_PARKED,
    };
    int kind = what == DW_OBSERVED_RECEIVED  ? KEPT_RECEIVED
               : what == DW_OBSERVED_APPLIED ? KEPT_APPLIED
                                             : KEPT_PARKED;
    char qualified[256];
    snprintf(qualified, sizeof qualified, "%s.%s", schema, table);
    const char *labels[] = {"job", job, "table", qualified, "class", class_name, NULL};
    dw_metric_series_inc(
        kept_series(cm, &cm->by_table, kind, families[kind], DW_METRIC_COUNTER, labels), 1);
    /* Errors are the parked changes that failed, not those waiting behind one. */
    if (kind == KEPT_PARKED && strcmp(class_name, "waiting") != 0)
        dw_metric_series_inc(
            kept_series(cm, &cm->by_table, KEPT_ERRORS, DW_M_ERRORS, DW_METRIC_COUNTER, labels), 1);
    if (kind != KEPT_APPLIED || commit_time_us <= 0)
        return;
    const char *by_map[] = {"job", job, "map", map, NULL};
    int64_t latency_us = dw_clock_wall_us() - commit_time_us;
    dw_metric_series_observe(
        kept_series(cm, &cm->by_map, 0, DW_M_APPLY_LATENCY, DW_METRIC_HISTOGRAM, by_map),
        latency_us > 0 ? (double)latency_us / 1e6 : 0);
}

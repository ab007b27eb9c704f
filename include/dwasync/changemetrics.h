/*
 * changemetrics.h - the daemon's counts of changes: each change received, applied or parked
 * by job, table and class (DW_M_CHANGES_RECEIVED, _APPLIED, _PARKED, DW_M_ERRORS), and each
 * applied change's commit-to-applied latency by map (DW_M_APPLY_LATENCY), as the pipeline's
 * observer reports them (pipeline.h, struct dw_pipeline_observer).
 *
 * Every change is counted two or three times, so the series are kept: the first change of a
 * job, table and class (or job and map) finds its series in the registry, later ones find it
 * here by one hash lookup instead of rendering, sorting and hashing the label set again
 * (tests/bench/bench_metrics.sh: four times cheaper a change). A series is made when first counted,
 * as dw_metrics_inc() makes it, so a scrape shows the same series either way. At most
 * DW_METRICS_MAX_SERIES entries are kept; past that, counts go to the registry directly.
 *
 * Caller-owned (dw_change_metrics_new / dw_change_metrics_free); the registry is borrowed and
 * must outlive it; strings passed in are borrowed for the call.
 */
#ifndef DWASYNC_CHANGEMETRICS_H
#define DWASYNC_CHANGEMETRICS_H

#include <stdint.h>

#include "dwasync/metrics.h"
#include "dwasync/pipeline.h"

struct dw_change_metrics;

struct dw_change_metrics *dw_change_metrics_new(struct dw_metrics *m);

/* Frees what was kept (not the registry); accepts NULL. */
void dw_change_metrics_free(struct dw_change_metrics *cm);

/*
 * Counts one change of job (see enum dw_observed); an applied one with a commit time (> 0)
 * is also observed in its map's latency histogram, measured against the wall clock now.
 */
void dw_change_metrics_count(struct dw_change_metrics *cm, const char *job, enum dw_observed what,
                             const char *schema, const char *table, const char *map,
                             const char *class_name, int64_t commit_time_us);

#endif

/*
 * bench_metrics.c - the cost of counting one change for /metrics (received, then applied with
 * its latency), through the daemon's kept series (changemetrics.h) against the peer, the
 * registry's own dw_metrics_inc()/dw_metrics_observe() that render and sort the label set
 * each time (what the daemon did before). Run by bench_metrics.sh; prints the median of RUNS
 * runs of each and their ratio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dwasync/changemetrics.h"

static const char *const tables[] = {"customersv3", "vendorsv2", "salesorderheaders",
                                     "salesorderlines"};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* µs per change counted through the kept series. */
static double kept_run(int changes)
{
    struct dw_metrics *m = dw_metrics_new();
    dw_metrics_define_standard(m);
    struct dw_change_metrics *cm = dw_change_metrics_new(m);
    double t0 = now_s();
    for (int i = 0; i < changes; i++) {
        dw_change_metrics_count(cm, "fno_sample", DW_OBSERVED_RECEIVED, "fno", tables[i & 3],
                                "customers", "insert", 0);
        dw_change_metrics_count(cm, "fno_sample", DW_OBSERVED_APPLIED, "fno", tables[i & 3],
                                "customers", "insert", 1);
    }
    double us = (now_s() - t0) / changes * 1e6;
    dw_change_metrics_free(cm);
    dw_metrics_free(m);
    return us;
}

/* µs per change counted straight into the registry. */
static double registry_run(int changes)
{
    struct dw_metrics *m = dw_metrics_new();
    dw_metrics_define_standard(m);
    double t0 = now_s();
    for (int i = 0; i < changes; i++) {
        char qualified[256];
        snprintf(qualified, sizeof qualified, "fno.%s", tables[i & 3]);
        const char *labels[] = {"job", "fno_sample", "table", qualified, "class", "insert", NULL};
        const char *by_map[] = {"job", "fno_sample", "map", "customers", NULL};
        dw_metrics_inc(m, DW_M_CHANGES_RECEIVED, labels, 1);
        dw_metrics_inc(m, DW_M_CHANGES_APPLIED, labels, 1);
        dw_metrics_observe(m, DW_M_APPLY_LATENCY, by_map, 1e9);
    }
    double us = (now_s() - t0) / changes * 1e6;
    dw_metrics_free(m);
    return us;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int changes = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 1000000;
    enum { RUNS = 5 };
    double kept[RUNS], registry[RUNS];
    for (int r = 0; r < RUNS; r++) {
        kept[r] = kept_run(changes);
        registry[r] = registry_run(changes);
    }
    qsort(kept, RUNS, sizeof *kept, cmp_double);
    qsort(registry, RUNS, sizeof *registry, cmp_double);
    printf("counting a change for /metrics, median of %d runs of %d changes:\n", RUNS, changes);
    printf("  kept series (changemetrics.h) %.2f us, registry per count (peer) %.2f us, "
           "peer / kept = %.1f\n",
           kept[RUNS / 2], registry[RUNS / 2], registry[RUNS / 2] / kept[RUNS / 2]);
    return 0;
}

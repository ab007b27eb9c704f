/*
 * verify.h - `dwasync verify`: compares Dataverse with what a job's maps make of the source,
 * records the drift in dwasync.verify_run / verify_result (sql/061) and, with repair, fixes
 * it through the job's normal apply path.
 *
 * Per entity set written by the selected maps (every map of the job writing it takes part,
 * so one map's rows are not another's extras): the source tables are read in key order, a
 * page at a time, read-only, under the maps' filters (snapshot.h, dw_snapshot_scan()), each
 * row converted and mapped exactly as the daemon does (values.h, mapping.h); Dataverse is
 * read a page at a time through the sink's dw_sink_get_page() with $select, verify's own
 * loop following each @odata.nextLink (a progress line per page). Both sides go into
 * temporary tables on the control connection, FLUSH_ROWS rows a statement, and the server
 * compares them. Memory: a page of source rows and one Dataverse page (at most 5,000 rows),
 * plus, for each parent table a key or lookup points to, its rows' GUIDs and keys (held
 * for the run: reference tables such as companies, groups, terms are small; a lookup to a
 * large table costs that table's keys). Every key and every mapped attribute is
 * compared; lookups as the "<set>(<key>)" they point to.
 *
 * Repair never races the stream: extras are deleted by alternate key first (404 is done);
 * then the source rows of every missing, different and extra key are queued as a keyed
 * copy (copyreq.h, kind "repair"), which the daemon applies between watermarks interleaved
 * with the stream, so a source change made meanwhile is applied after, in key order, and a
 * row created in the source for an extra key comes back. An extra's source key is read
 * from its Dataverse key, a lookup part's from the key of the parent it points to (the
 * source row holds those columns, as the mapping reads them).
 *
 * Ownership: the options and everything they point to are borrowed for the call.
 */
#ifndef DWASYNC_VERIFY_H
#define DWASYNC_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dwasync/config.h"
#include "dwasync/rc.h"

struct dw_verify_options {
    const struct dw_config *config;
    const char *job;
    const char *const *maps; /* map names; nmaps == 0: every map of the job */
    size_t nmaps;
    bool repair;
    FILE *progress; /* a line per page and per entity set; NULL: quiet */
};

struct dw_verify_summary {
    int64_t run_id;
    int64_t source_rows, target_rows;
    int64_t missing, extra, different;
    int64_t deleted;   /* repair: extras deleted */
    int copies_queued; /* repair: copy requests queued */
};

/* Runs a verification (see the banner); *out is filled on success. Failures are logged. */
dw_rc dw_verify_run(const struct dw_verify_options *o, struct dw_verify_summary *out);

#endif

/*
 * seams.h - the daemon's side of the pipeline's seams: a writer over the sink and a
 * checkpoint store over the control connection (pipeline.h defines both interfaces).
 *
 * The runner fills one of each when it starts a job and passes them to dw_pipeline_new().
 * Ownership: each struct is caller-owned (it may live on the stack of whoever outlives the
 * pipeline) and borrows its sink or connection, which must outlive the pipeline.
 */
#ifndef DWASYNC_SEAMS_H
#define DWASYNC_SEAMS_H

#include <libpq-fe.h>

#include "dwasync/pipeline.h"
#include "dwasync/sink.h"

/* A writer that hands writes to sink (created with dw_write_ticket_dispatch as its done
 * callback, so every answer reaches its ticket). */
void dw_seams_sink_writer(struct dw_sink *sink, struct dw_pipeline_writer *out);

/*
 * A store on the control database: blocked keys from the error table, and a window's error
 * rows (dw_errtable_insert()), its checkpoint row and its apply statistics in one
 * transaction. A failure that broke the connection resets it for the next attempt.
 */
void dw_seams_control_store(PGconn *control, struct dw_pipeline_store *out);

#endif

/*
 * mapping.h - the mapping engine: source rows through a job's table maps into writes.
 *
 * A job's maps are loaded from the control schema into a struct dw_job_maps, compiled
 * (column lookups, value maps, filters, lookups) and immutable afterwards; the daemon loads
 * them at start and again on SIGHUP or after `job start`. Rows come in as typed JSON
 * objects (values.h converts decoded changes; the error table stores the same JSON, so a
 * replay maps a stored row with the current maps through the same function).
 *
 * Ownership: dw_job_maps_load() returns a new object freed with dw_job_maps_free(); the
 * strings a struct dw_mapped borrows from it (map and group names) stay valid until then.
 * Everything else in a struct dw_mapped is owned by it (dw_mapped_vec_cleanup()).
 */
#ifndef DWASYNC_MAPPING_H
#define DWASYNC_MAPPING_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/rc.h"
#include "dwasync/write.h"

struct dw_job_maps;
struct dw_jobdef;
struct dw_entity_meta;

/* One source row change, in typed JSON; all borrowed for the call. */
struct dw_source_row {
    const char *schema;
    const char *table;
    enum dw_change_op op; /* INSERT, UPDATE or DELETE */
    json_t *new_row;      /* column -> value; NULL for DELETE */
    json_t *old_row;      /* key columns or the whole old row; NULL if not sent */
    json_t *unchanged;    /* array of column names not sent (unchanged TOAST); may be NULL */
};

/* The result of mapping one row through one table map. */
struct dw_mapped {
    int64_t map_id;         /* dwasync.table_map id */
    const char *map_name;   /* borrowed from the maps */
    const char *group_name; /* borrowed from the maps */
    char *target_id;        /* canonical "<entity set>(<key>)": equal iff same Dataverse row */
    int sequence;           /* order within the group: lower first */
    bool ok;
    /* ok: an UPDATE that sets every mapped column to the value it had (its old image, under
     * REPLICA IDENTITY FULL, maps to the same write): nothing new for Dataverse, so the
     * window applies it without sending it (window.h) */
    bool unchanged;
    struct dw_write write;           /* ok: what to send */
    enum dw_error_class error_class; /* !ok: why it cannot be mapped */
    char *error;                     /* !ok: message naming the column and value */
};

struct dw_mapped_vec {
    struct dw_mapped *items;
    size_t len, cap;
};

/* Loads and compiles the maps of a job from the control schema. */
dw_rc dw_job_maps_load(PGconn *control, const char *job_name, struct dw_job_maps **out);

void dw_job_maps_free(struct dw_job_maps *maps);

/*
 * Records, for a job, the MaxLength Dataverse gives each string column its maps write (from
 * metadata fetched by `job start`), replacing what was recorded before. dw_job_maps_load()
 * reads it back, so a longer value is a mapping error and no request is sent.
 */
dw_rc dw_job_maps_record_lengths(PGconn *control, const struct dw_jobdef *def,
                                 const struct dw_entity_meta *const *metas, size_t nmetas);

/* Sets the known MaxLength of attribute of table logical_name in every map writing it (the
 * columns and the map's own key); 0 forgets it. */
void dw_job_maps_set_max_length(struct dw_job_maps *maps, const char *logical_name,
                                const char *attribute, int max_length);

/* The first map of the job that reads this source table, or NULL when none does. Its
 * source_schema and source_table live as long as the maps: a window's items borrow them. */
const struct dw_tablemap *dw_job_maps_reader(const struct dw_job_maps *maps, const char *schema,
                                             const char *table);

/*
 * A TRUNCATE of a source table, which is not replicated: appends one failed result per map
 * reading the table (none when no map does), each with its map, the message saying what to
 * do, and as target (and so as the key it blocks) "<entity set>(TRUNCATE)", which no row's
 * target equals. Replays of it give the same result (replay.c).
 */
void dw_mapping_truncate(const struct dw_job_maps *maps, const char *schema, const char *table,
                         struct dw_mapped_vec *out);

/* The message of a TRUNCATE's error row (heap, caller frees). */
char *dw_mapping_truncate_message(const char *schema, const char *table);

/*
 * Maps a row through every map of its table and appends 0..n results: none when no map
 * takes the row (its filter excludes it), one per map that does. An UPDATE whose new image
 * leaves a map's filter while the old one matched yields a DELETE; an UPDATE that changes
 * the target key yields a DELETE of the old row and an UPSERT of the new. A row that cannot
 * be mapped yields a result with ok = false. An UPDATE whose old image maps to the same
 * write as its new one (REPLICA IDENTITY FULL, key unchanged) is flagged unchanged. Fails
 * only on a broken row object.
 */
dw_rc dw_mapping_map_row(const struct dw_job_maps *maps, const struct dw_source_row *row,
                         struct dw_mapped_vec *out);

/* Same, through the one map with this id (replay of a stored error row), and never flagged
 * unchanged: a replayed change follows one that failed, so the row may not hold the old
 * image's values. */
dw_rc dw_mapping_map_row_with(const struct dw_job_maps *maps, int64_t map_id,
                              const struct dw_source_row *row, struct dw_mapped_vec *out);

/* Frees every item's contents and the array; the vector is empty and reusable afterwards. */
void dw_mapped_vec_cleanup(struct dw_mapped_vec *v);

/* Empties the vector (freeing items' contents) but keeps its allocation. */
void dw_mapped_vec_reset(struct dw_mapped_vec *v);

#endif

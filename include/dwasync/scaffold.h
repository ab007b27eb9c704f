/*
 * scaffold.h - `dwasync map scaffold`: a first map file from staging tables and Dataverse
 * metadata, matched by name as F&O and Dataverse name things, never guessed silently.
 *
 * The source side (tables, columns, types, lengths, primary keys) is read from the staging
 * database; the target side is a set of Dataverse table metadata, from a dvemu metadata file
 * (with option labels) or fetched live (dw_dvmeta_fetch, without labels). dw_scaffold_build()
 * is pure: it writes a map file document and a line per thing it could not match.
 *
 * Ownership: a struct dw_scaffold_source or dw_scaffold_targets owns everything in it and is
 * released with its _cleanup function; dw_scaffold_build() borrows both.
 */
#ifndef DWASYNC_SCAFFOLD_H
#define DWASYNC_SCAFFOLD_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "dwasync/buf.h"
#include "dwasync/dvmeta.h"
#include "dwasync/rc.h"

struct dw_scaffold_column {
    char *name;
    char *type;     /* format_type(), e.g. "character varying(20)" */
    int max_length; /* character types: declared length; 0: unlimited or not text */
    bool pk;        /* part of the primary key */
};

struct dw_scaffold_table {
    char *schema, *name;
    struct dw_scaffold_column *cols; /* in column order */
    size_t ncols;
};

struct dw_scaffold_source {
    struct dw_scaffold_table *tables;
    size_t ntables;
};

/* An option's label, as a metadata file has it ("Net", "Current month"). */
struct dw_scaffold_label {
    char *attr;
    int value;
    char *label;
};

struct dw_scaffold_target {
    struct dw_entity_meta *meta;
    struct dw_scaffold_label *labels; /* empty when the metadata was fetched live */
    size_t nlabels;
};

struct dw_scaffold_targets {
    struct dw_scaffold_target *v;
    size_t n;
};

/* Reads table (or, when table is NULL, every table) of schema; DW_ERR_NOT_FOUND if none. */
dw_rc dw_scaffold_source_fetch(PGconn *conn, const char *schema, const char *table,
                               struct dw_scaffold_source *out);
void dw_scaffold_source_cleanup(struct dw_scaffold_source *s);

/* Loads a dvemu metadata file ({"tables": [...]}); problems are appended to errors. */
dw_rc dw_scaffold_targets_load_file(const char *path, struct dw_buf *errors,
                                    struct dw_scaffold_targets *out);
/* Adds fetched metadata (takes ownership of meta). */
void dw_scaffold_targets_add(struct dw_scaffold_targets *t, struct dw_entity_meta *meta);
/* Finds a table's metadata by logical name (case-insensitive); NULL if absent. Borrowed. */
const struct dw_scaffold_target *dw_scaffold_targets_find(const struct dw_scaffold_targets *t,
                                                          const char *logical_name);
void dw_scaffold_targets_cleanup(struct dw_scaffold_targets *t);

/*
 * Distinct values of a source column (at most a hundred), for the value-map skeleton of an
 * option set. *values is an array of heap strings the caller of the callback frees.
 */
typedef dw_rc (*dw_scaffold_values_fn)(void *user, const struct dw_scaffold_table *t,
                                       const char *column, char ***values, size_t *nvalues);

struct dw_scaffold_request {
    const char *job_name;
    const char *const *targets; /* logical names, one map each, sequence 10, 20, ... */
    size_t ntargets;
    dw_scaffold_values_fn values; /* NULL: no value-map skeletons */
    void *values_user;
};

/*
 * Writes the map file document (*out, new reference) for the request: per target, the
 * source table (the given one, or the schema's table whose columns match it best), the key
 * from the target's first alternate key and the source's primary key (DATAAREAID to the
 * company lookup), columns matched by name (case, underscores, publisher prefixes, plural
 * and F&O suffixes, the table's own name as a prefix), lookups by the parent's key, option
 * sets with the values whose names match an option label, NoYes to booleans. Whatever it
 * could not match is listed in the map's options.unmatched and as one line
 * "unmatched: MAP: what" in unmatched. DW_ERR_NOT_FOUND when a target has no metadata.
 */
dw_rc dw_scaffold_build(const struct dw_scaffold_source *src, const struct dw_scaffold_targets *tg,
                        const struct dw_scaffold_request *req, struct dw_buf *unmatched,
                        json_t **out);

/*
 * The candidate nearest to name by edit distance (case-insensitive), if close enough to be
 * a likely typo (at most a third of the name's length, at least 2); NULL otherwise.
 * Borrowed from candidates.
 */
const char *dw_scaffold_nearest(const char *name, const char *const *candidates, size_t n);

#endif

/*
 * mapfile.h - the job definition: map files, their validation, the publication they imply.
 *
 * A job definition (struct dw_jobdef) is what a map file says: the job, its legal entities,
 * table groups, table maps with keys, column mappings and filters (format in README.md,
 * "Map files"). dw_jobdef_parse() checks a whole document and reports every problem with its
 * JSON path ("$.groups[1].maps[0].columns[3].value_map: ..."), one line each. The same parser
 * reads maps back from the control schema (mapstore.h), so a map in the database is always
 * one that a file could have said, and dw_jobdef_to_json() writes the one normal form that
 * export prints: import -> export -> import -> export gives identical bytes.
 *
 * Filters (a map's row filter and the job's legal entities) are evaluated here for the
 * client side and compiled to PostgreSQL 15 publication row filters and column lists.
 *
 * Ownership: a struct dw_jobdef and everything in it (strings, JSON references, nested
 * arrays) is owned by the definition and freed by dw_jobdef_free(); it is immutable after
 * parsing except for the map ids that mapstore.h fills in.
 */
#ifndef DWASYNC_MAPFILE_H
#define DWASYNC_MAPFILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/buf.h"
#include "dwasync/dvmeta.h"
#include "dwasync/mapping.h"
#include "dwasync/rc.h"

/* The map file format version this dwasync reads and writes. */
#define DW_MAPFILE_FORMAT 1

/* The Dataverse company table that company-striped keys refer to (dual-write.md). */
#define DW_COMPANY_ENTITY_SET   "cdm_companies"
#define DW_COMPANY_LOGICAL_NAME "cdm_company"
#define DW_COMPANY_KEY          "cdm_companycode"

enum dw_keypart_kind {
    DW_KEYPART_COLUMN,  /* target attribute <- source column */
    DW_KEYPART_COMPANY, /* _<target>_value <- cdm_companies by cdm_companycode = source */
    DW_KEYPART_LOOKUP,  /* _<target>_value <- a parent row by its alternate key */
};

struct dw_lookup;

/* One part of an alternate key (of the map's target, or of a lookup's parent). */
struct dw_keypart {
    enum dw_keypart_kind kind;
    char *target;             /* attribute (COLUMN) or lookup attribute (COMPANY, LOOKUP) */
    char *source;             /* source column (COLUMN, COMPANY); NULL for LOOKUP */
    bool has_type;            /* COLUMN: coerce to type */
    enum dw_attr_type type;   /* COLUMN */
    struct dw_lookup *lookup; /* LOOKUP */
    int max_length;           /* COLUMN of the map's own key: Dataverse's MaxLength, 0: unknown */
    char *attr; /* derived: the key's attribute name, target or "_<target>_value" for a lookup */
};

/* A reference to a parent row: "<entity set>" keyed by parts read from this row. */
struct dw_lookup {
    char *entity_set;   /* e.g. "msdyn_customergroups" */
    char *logical_name; /* e.g. "msdyn_customergroup" (lookup target check) */
    struct dw_keypart *key;
    size_t nkey;
};

/* Dual-write's directions: = both ways, > toward Dataverse, < toward F&O; doubled with a
 * transform. dwasync writes toward Dataverse only: "<" and "<<" are kept, not applied. */
enum dw_direction {
    DW_DIR_BOTH,            /* "=" */
    DW_DIR_TO_DV,           /* ">" */
    DW_DIR_TO_FO,           /* "<" */
    DW_DIR_BOTH_TRANSFORM,  /* "><" */
    DW_DIR_TO_DV_TRANSFORM, /* ">>" */
    DW_DIR_TO_FO_TRANSFORM, /* "<<" */
};

enum dw_unmapped_rule {
    DW_UNMAPPED_ERROR,
    DW_UNMAPPED_NULL,
    DW_UNMAPPED_PASSTHROUGH,
    DW_UNMAPPED_DEFAULT
};
enum dw_null_rule { DW_NULL_SEND, DW_NULL_OMIT, DW_NULL_DEFAULT, DW_NULL_ERROR };

/* One column mapping: exactly one of source, constant, lookup. */
struct dw_colmap {
    char *target;     /* attribute; for a lookup, the lookup attribute */
    char *navigation; /* lookup: navigation property of "@odata.bind" (default: target) */
    enum dw_direction direction;
    char *source;      /* source column, or NULL */
    json_t *constant;  /* constant value (none >> x = 3), or NULL */
    json_t *deflt;     /* value used by the null/unmapped rules "default", or NULL */
    json_t *value_map; /* object: source value text -> target value, or NULL */
    enum dw_unmapped_rule unmapped;
    enum dw_null_rule null_rule;
    bool has_type;
    enum dw_attr_type type; /* coercion target; a lookup has none */
    struct dw_lookup *lookup;
    int max_length; /* Dataverse's MaxLength of the target, 0: unknown (dw_job_maps_set_max_length)
                     */
    char *bind;     /* derived, lookup only: "<navigation or target>@odata.bind" */
};

enum dw_filter_op {
    DW_F_AND,
    DW_F_OR,
    DW_F_NOT,
    DW_F_EQ,
    DW_F_NE,
    DW_F_LT,
    DW_F_LE,
    DW_F_GT,
    DW_F_GE,
    DW_F_IN,
    DW_F_NOT_IN,
    DW_F_IS_NULL,
    DW_F_IS_NOT_NULL,
};

/* A row filter: a boolean tree over source columns and literals (SQL three-valued logic). */
struct dw_filter {
    enum dw_filter_op op;
    struct dw_filter **args; /* AND, OR: n >= 1; NOT: 1 */
    size_t nargs;
    char *column;  /* comparisons */
    json_t *value; /* scalar (comparisons) or array of scalars (IN, NOT IN) */
};

struct dw_tablemap {
    int64_t id; /* dwasync.table_map id once stored; 0 before */
    char *name;
    char *group_name; /* copy of the group's name */
    int sequence;
    char *source_schema, *source_table;
    char *entity_set, *logical_name;
    struct dw_keypart *key;
    size_t nkey;
    struct dw_colmap *cols;
    size_t ncols;
    struct dw_filter *filter;   /* NULL: every row */
    json_t *options;            /* object, free-form (kept for the pipeline) */
    const char *company_source; /* borrowed: source of the key's company part, or NULL */
    bool atomic;                /* options.atomic: a transaction's rows go all-or-nothing */
    json_t *write_options;      /* borrowed from options: options.write (struct dw_write's
                                 * options), validated; NULL when absent or empty */
};

struct dw_mapgroup {
    char *name;
    struct dw_tablemap *maps; /* sorted by sequence */
    size_t nmaps;
};

struct dw_jobdef {
    char *name;
    char *environment_url;
    char **legal_entities; /* empty: every legal entity */
    size_t nlegal_entities;
    json_t *options; /* object, free-form */
    struct dw_mapgroup *groups;
    size_t ngroups;
};

/*
 * Validates a map-file document and builds the definition. Every problem is appended to
 * errors as one line "PATH: message\n"; DW_ERR_INVALID if there is any (*out untouched).
 * doc is borrowed.
 */
dw_rc dw_jobdef_parse(const json_t *doc, struct dw_buf *errors, struct dw_jobdef **out);

/* Largest map file read: a job of hundreds of maps is well under a megabyte. */
#define DW_MAPFILE_MAX_SIZE ((size_t)16 << 20)

/* Reads and parses a map file (duplicate object keys are errors; a file that is not a
 * regular file, or is larger than DW_MAPFILE_MAX_SIZE, is refused before it is parsed). */
dw_rc dw_jobdef_load_file(const char *path, struct dw_buf *errors, struct dw_jobdef **out);

/* The normal form of the definition as a map-file document (new reference). */
json_t *dw_jobdef_to_json(const struct dw_jobdef *def);

/* The map file text: the normal form, indented, ending in a newline. Caller frees. */
char *dw_jobdef_dump(const struct dw_jobdef *def);

void dw_jobdef_free(struct dw_jobdef *def);

/* Number of maps over all groups. */
size_t dw_jobdef_map_count(const struct dw_jobdef *def);

/* Finds a map by name; NULL if none. Borrowed. */
const struct dw_tablemap *dw_jobdef_find_map(const struct dw_jobdef *def, const char *name);

/* "string", "picklist", ... as map files spell coercion types; parse is case-insensitive. */
const char *dw_mapfile_type_name(enum dw_attr_type t);
dw_rc dw_mapfile_type_parse(const char *s, enum dw_attr_type *out);

/* --- filters --------------------------------------------------------------------------- */

enum dw_tristate { DW_FALSE = 0, DW_TRUE = 1, DW_UNKNOWN = 2 };

/*
 * Looks a column up in a row object, names compared case-insensitively (an exact match
 * wins). Returns the value (borrowed; json null for SQL NULL) or NULL when absent.
 */
json_t *dw_row_get(const json_t *row, const char *column);

/*
 * Evaluates the map's filter and the job's legal entities on a row image with SQL's
 * three-valued logic; a NULL-caused unknown excludes the row (as a publication row filter
 * does). DW_UNKNOWN means a column the filter reads is absent from the image (not sent).
 */
enum dw_tristate dw_tablemap_match(const struct dw_jobdef *def, const struct dw_tablemap *m,
                                   const json_t *row);

/*
 * A source table's columns as the source catalog has them (validate and publication
 * compilation). Names resolve case-insensitively like row columns.
 */
struct dw_src_column {
    char *name;
    char *type;     /* format_type(), e.g. "character varying(20)", "numeric(32,6)" */
    int max_length; /* character types: the declared length; 0: unlimited or not text */
    bool identity;  /* part of the replica identity (primary key or identity index) */
};

struct dw_src_table {
    char *schema, *name;
    char replica_identity; /* 'd' default, 'f' full, 'i' index, 'n' nothing */
    bool has_identity_key; /* 'd' with a primary key, or 'i' */
    struct dw_src_column *cols;
    size_t ncols;
};

struct dw_src_catalog {
    struct dw_src_table *tables;
    size_t ntables;
};

/* Reads the tables the definition maps from the source (missing tables are simply absent). */
dw_rc dw_src_catalog_fetch(PGconn *source, const struct dw_jobdef *def, struct dw_src_catalog *out);

void dw_src_catalog_cleanup(struct dw_src_catalog *cat);

/* Finds a table (schema and name exact, as Postgres compares them); NULL if absent. */
const struct dw_src_table *dw_src_catalog_table(const struct dw_src_catalog *cat,
                                                const char *schema, const char *name);

/* Finds a column case-insensitively (exact match first); NULL if absent. */
const struct dw_src_column *dw_src_table_column(const struct dw_src_table *t, const char *name);

/*
 * The publication for a job: "TABLE <t> [(<cols>)] [WHERE (<filter>)], ..." for every
 * mapped table, each table's row filter being the OR of its maps' filters (with legal
 * entities), its column list every column its maps read plus the replica identity (no
 * list under REPLICA IDENTITY FULL, where PostgreSQL forbids one). Names resolve through
 * the catalog. Appends the clause to sql.
 */
dw_rc dw_publication_tables_sql(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                                struct dw_buf *sql);

/* The row filter of one table (the WHERE expression without parentheses); "" if none. */
dw_rc dw_publication_table_filter(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                                  const char *schema, const char *table, struct dw_buf *sql);

/* What a copy (initial sync, resync) selects of a job: maps by name and legal entities. */
struct dw_copy_selection {
    const char *const *maps; /* map names; nmaps == 0: every map */
    size_t nmaps;
    const char *const *les; /* legal entities (among the job's); nles == 0: the job's */
    size_t nles;
};

/*
 * The rows a copy of one table reads, on the server: the OR over the table's selected maps
 * (sel NULL: all) of each map's filter and legal entities (the publication's row filter,
 * dw_publication_table_filter(), is this with every map), narrowed to sel's legal entities
 * on each map's company column; with legal entities selected, a map without a company
 * column is left out. Appends the expression (parenthesized parts, no WHERE), or nothing when
 * every row qualifies; *any is false when no map of the table is selected (copy nothing).
 * Translated exactly: the engine's filter (dw_tablemap_match) still runs on every row.
 */
dw_rc dw_copy_table_filter(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                           const char *schema, const char *table,
                           const struct dw_copy_selection *sel, struct dw_buf *sql, bool *any);

/* --- validation ------------------------------------------------------------------------ */

/* Findings of `map validate`: text lines "error: PATH: message" / "warning: ...". */
struct dw_findings {
    struct dw_buf text;
    int errors;
    int warnings;
};

void dw_findings_init(struct dw_findings *f);
void dw_findings_cleanup(struct dw_findings *f);

/*
 * Checks the maps against the source catalog (tables and columns exist, types convert,
 * replica identity covers the row filters) when cat is not NULL, and against Dataverse
 * metadata (tables, attributes, string lengths, option values, alternate keys, lookup
 * targets) for the tables in metas[0..nmetas) when nmetas > 0. Pure: no I/O.
 */
void dw_mapvalidate(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                    const struct dw_entity_meta *const *metas, size_t nmetas,
                    struct dw_findings *f);

/* --- engine ---------------------------------------------------------------------------- */

/* Compiled maps from a definition (takes ownership of def, also on failure). */
dw_rc dw_job_maps_from_def(struct dw_jobdef *def, struct dw_job_maps **out);

/* The definition behind compiled maps; borrowed. */
const struct dw_jobdef *dw_job_maps_def(const struct dw_job_maps *maps);

#endif

/*
 * dvmeta.h - Dataverse table metadata: attributes, types, lengths, option sets, keys.
 *
 * Read from the Web API's EntityDefinitions (dw_dvmeta_fetch) to validate table maps
 * before a job starts and to coerce mapped values to the target type. A struct
 * dw_entity_meta is immutable once built, owned by whoever fetched it, freed with
 * dw_entity_meta_free(); every string and array inside belongs to it.
 */
#ifndef DWASYNC_DVMETA_H
#define DWASYNC_DVMETA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "dwasync/rc.h"

struct dw_sink;

enum dw_attr_type {
    DW_ATTR_STRING,
    DW_ATTR_MEMO,
    DW_ATTR_INTEGER,
    DW_ATTR_BIGINT,
    DW_ATTR_DECIMAL,
    DW_ATTR_MONEY,
    DW_ATTR_DOUBLE,
    DW_ATTR_BOOLEAN,
    DW_ATTR_DATETIME,
    DW_ATTR_PICKLIST,
    DW_ATTR_LOOKUP,
    DW_ATTR_UNIQUEIDENTIFIER,
    DW_ATTR_OTHER,
};

struct dw_attr_meta {
    char *logical_name;
    enum dw_attr_type type;
    bool required;    /* RequiredLevel ApplicationRequired / SystemRequired */
    int max_length;   /* String, Memo; 0 if not applicable */
    double min_value; /* Integer, BigInt, Decimal, Money, Double */
    double max_value;
    int precision; /* Decimal, Money, Double */
    int *options;  /* Picklist option values */
    size_t noptions;
    char **targets; /* Lookup target logical names */
    size_t ntargets;
};

struct dw_key_meta {
    char *logical_name;
    char **attributes; /* logical names of the key's attributes */
    size_t nattributes;
    bool active; /* EntityKeyIndexStatus == Active */
};

struct dw_entity_meta {
    char *logical_name;
    char *entity_set;
    char *primary_id;
    struct dw_attr_meta *attrs;
    size_t nattrs;
    struct dw_key_meta *keys;
    size_t nkeys;
};

/* Fetches a table's metadata (entity, attributes with the typed casts, keys). */
dw_rc dw_dvmeta_fetch(struct dw_sink *sink, const char *logical_name, struct dw_entity_meta **out);

/* Looks an attribute up by logical name (case-insensitive); NULL if absent. Borrowed. */
const struct dw_attr_meta *dw_entity_meta_attr(const struct dw_entity_meta *m, const char *name);

/*
 * The range and precision Dataverse gives a numeric type when a column does not narrow
 * them (its documented limits). Returns false, leaving the outputs alone, for other types.
 */
bool dw_attr_type_range(enum dw_attr_type t, double *min, double *max, int *precision);

/* "String", "Picklist", ... as Dataverse spells AttributeType. */
const char *dw_attr_type_name(enum dw_attr_type t);

/* The type an AttributeType name (or a dvemu metadata file's "type") names; NULL or an unknown
 * name: DW_ATTR_OTHER. */
enum dw_attr_type dw_attr_type_parse(const char *s);

void dw_entity_meta_free(struct dw_entity_meta *m);

/*
 * Reads the EntityDefinitions of tables[0..ntables) (logical names) and builds a dvemu
 * metadata file for them: attributes of the types dvemu emulates (with lengths, ranges,
 * precision, date formats, required levels, option sets with labels, lookup targets and
 * navigation property names), alternate keys, and the bulk messages each table supports.
 * Columns dvemu adds itself (primary id, createdon, modifiedon, versionnumber) and companion
 * columns (AttributeOf) are left out. *out is a new reference: {"tables": [...]}.
 */
dw_rc dw_dvmeta_export(struct dw_sink *sink, char *const *tables, size_t ntables, json_t **out);

#endif

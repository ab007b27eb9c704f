/*
 * change.h - a decoded row change: what the source produces and mapping consumes.
 *
 * The decoder fills a struct dw_change for every I/U/D/T message and hands it to its
 * consumer by callback. Everything a change points to is *borrowed* and valid only for the
 * duration of that callback: the relation belongs to the relation cache (which replaces
 * entries on every R message), and datum bytes point into the received message. A consumer
 * that needs values later converts them first (values.h: dw_change_row_json()).
 *
 * Values arrive in PostgreSQL's text output form, exactly as pgoutput sent them; a datum is
 * NULL, "unchanged TOAST" (the value did not change and was not sent: never treat it as
 * NULL), or text bytes that are NOT NUL-terminated.
 */
#ifndef DWASYNC_CHANGE_H
#define DWASYNC_CHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "dwasync/lsn.h"

enum dw_change_op { DW_CHANGE_INSERT, DW_CHANGE_UPDATE, DW_CHANGE_DELETE, DW_CHANGE_TRUNCATE };

/* One column of a published relation, as the last R message described it. */
struct dw_rel_column {
    char *name;
    uint32_t type_oid; /* as sent; domains and enums are resolved by values.h */
    int32_t typmod;
    bool key; /* part of the replica identity */
};

/* A published relation (table) from an R message. Owned by the relation cache. */
struct dw_relation {
    uint32_t oid;
    char *schema; /* "pg_catalog" when pgoutput sent an empty namespace */
    char *name;
    char replica_identity; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    int ncols;
    struct dw_rel_column *cols;
};

enum dw_datum_kind { DW_DATUM_NULL, DW_DATUM_UNCHANGED, DW_DATUM_TEXT };

/* One column value in text form; data is borrowed and not NUL-terminated. */
struct dw_datum {
    enum dw_datum_kind kind;
    const char *data;
    uint32_t len;
};

/* A row image: one datum per column of the relation, in relation column order. */
struct dw_tuple {
    int ncols;
    struct dw_datum *cols;
};

struct dw_change {
    enum dw_change_op op;
    dw_lsn lsn;        /* WAL position of this change */
    dw_lsn commit_lsn; /* commit LSN of its transaction (BEGIN's final LSN) */
    uint32_t xid;
    int64_t commit_time_us;        /* commit time, microseconds since the Unix epoch */
    uint32_t index;                /* position within its transaction, from 0 */
    const struct dw_relation *rel; /* NULL for TRUNCATE */
    struct dw_tuple new_tuple;     /* INSERT, UPDATE */
    struct dw_tuple old_tuple;     /* UPDATE with old_kind set, DELETE */
    char old_kind;                 /* 0: no old image, 'K': key columns only, 'O': whole row */
    /* TRUNCATE only */
    int ntruncated;
    const struct dw_relation *const *truncated;
    uint8_t truncate_options; /* bit 1 CASCADE, bit 2 RESTART IDENTITY */
};

/* "insert", "update", "delete", "truncate". */
const char *dw_change_op_name(enum dw_change_op op);

#endif

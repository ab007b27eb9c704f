/*
 * pgoutput.h - decoder of pgoutput protocol version 1 messages, and the relation cache.
 *
 * The decoder turns the payload of each XLogData ('w') message into calls on a handler:
 * begin for B, change for I/U/D/T, commit for C, message for M (a logical decoding message,
 * pg_logical_emit_message: the initial sync's watermarks). O (origin) and Y (type) are
 * checked and otherwise ignored. Every read is bounds-checked: a malformed or
 * truncated message, a change for a relation never described by R, a change outside a
 * transaction or a tuple whose column count disagrees with its relation is DW_ERR_PROTOCOL
 * (logged once with the message tag and LSN), never a crash or an out-of-bounds read.
 *
 * Ownership: a struct dw_pgoutput is created with dw_pgoutput_new() and released with
 * dw_pgoutput_free(); it owns its relation cache. The struct dw_change passed to the handler
 * and everything it points to is borrowed for the duration of the call (datum bytes point
 * into the message being decoded; relations belong to the cache, which replaces an entry on
 * every R message for its oid). The per-tuple column arrays are reused from change to change:
 * the decode path allocates nothing once it has seen its widest relation.
 */
#ifndef DWASYNC_PGOUTPUT_H
#define DWASYNC_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/rc.h"

/* A transaction as BEGIN and COMMIT describe it. */
struct dw_txn {
    uint32_t xid;
    dw_lsn commit_lsn;      /* LSN of the commit record (BEGIN's final LSN) */
    dw_lsn end_lsn;         /* end of the commit record: what the slot confirms; 0 at begin */
    int64_t commit_time_us; /* microseconds since the Unix epoch */
};

/* A logical decoding message (M). Borrowed for the callback, like a change. */
struct dw_logical_message {
    dw_lsn lsn;
    bool transactional;     /* inside the open transaction (B ... C), else on its own */
    const char *prefix;     /* NUL-terminated */
    const uint8_t *content; /* not NUL-terminated */
    uint32_t len;
};

/* Callbacks of the decoder; a non-DW_OK return stops decoding and is passed on. Any of them
 * may be NULL (message last, so positional initialisers of the first four still work). */
struct dw_pgoutput_handler {
    void *user;
    dw_rc (*begin)(void *user, const struct dw_txn *t);
    dw_rc (*change)(void *user, const struct dw_change *c);
    dw_rc (*commit)(void *user, const struct dw_txn *t);
    dw_rc (*message)(void *user, const struct dw_logical_message *m);
};

struct dw_pgoutput;

/* A new decoder with an empty relation cache. */
struct dw_pgoutput *dw_pgoutput_new(void);

/* Frees the decoder, its relation cache and scratch arrays; NULL is accepted. */
void dw_pgoutput_free(struct dw_pgoutput *d);

/*
 * Decodes one pgoutput message (the bytes after the 25-byte XLogData header) that started
 * at WAL position lsn, calling h. DW_ERR_PROTOCOL on malformed input; any other error is the
 * handler's. The relation cache survives errors; the open transaction does not.
 */
dw_rc dw_pgoutput_decode(struct dw_pgoutput *d, dw_lsn lsn, const uint8_t *msg, size_t len,
                         const struct dw_pgoutput_handler *h);

/* Forgets a partially received transaction (after a reconnect); the cache is kept. */
void dw_pgoutput_reset(struct dw_pgoutput *d);

/* True between a BEGIN and its COMMIT. */
bool dw_pgoutput_in_txn(const struct dw_pgoutput *d);

/* The cached relation with this oid, or NULL. Borrowed until the next R for it or free. */
const struct dw_relation *dw_pgoutput_relation(const struct dw_pgoutput *d, uint32_t oid);

/* Frees what a relation owns (schema, name, columns) and zeroes it; for relations built
 * outside the cache (the initial sync describes tables the same way). */
void dw_relation_cleanup(struct dw_relation *rel);

/* Number of relations in the cache. */
size_t dw_pgoutput_relation_count(const struct dw_pgoutput *d);

#endif

/*
 * errtable.h - the error table (dwasync.error), per-key blocking and the replay engine.
 *
 * Every change that cannot be applied becomes a row of dwasync.error (README invariant
 * 1: durably written there before the slot moves past it). Rows are unique on (job, commit
 * LSN, position, part), so a stream replayed after a crash inserts nothing twice
 * (invariant 2). Rows of one *key* - (table map id, key text: the Dataverse row's identity,
 * the mapping engine's target_id, which the pipeline uses; or any stable text such as the
 * canonical source key) - form a queue in commit order: the head is `open` or
 * `replaying`, later rows are `waiting`, never sent while the head is unresolved
 * (invariant 3). A key is blocked while it has a row in open, waiting or replaying; the
 * blocked set is rebuilt from the table after a restart.
 *
 * The database decides each inserted row's status (migration 020, dwasync.insert_errors),
 * so the pipeline's memory and the table cannot disagree: a row whose key is already
 * blocked waits; a row parked as waiting whose blocker is gone becomes a head queued for
 * replay. Operators queue replays and skips with SQL functions (dwasync.replay_error,
 * replay_errors, skip_error) that NOTIFY channel DW_REPLAY_CHANNEL with the job name.
 *
 * The replay engine (struct dw_replay) applies queued heads through callbacks: re-map the
 * stored row with the current maps, submit the write, report the result with
 * dw_replay_complete() (synchronously from submit, or later from the sink's done
 * callback). It keeps one write per key in flight, applies table-map sequence levels in
 * ascending order, marks each row resolved (its next waiting row becomes the head) or back
 * to open with the new error, and reports keys whose queue became empty.
 *
 * The one rule for the pipeline: rows it parked as waiting must be inserted before the next
 * dw_replay_pump(), since the pump may empty a key's queue and unblock it, after which a
 * newer change to the key would be sent ahead of a parked one still in memory.
 *
 * Ownership: rows handed to dw_errtable_insert() are borrowed for the call. A struct
 * dw_errstored owns its strings and JSON references (dw_errstored_cleanup()). The blocked
 * set and the replay engine are heap objects freed with their _free(); the engine borrows
 * its PGconn, ops and user pointer, which must outlive it. Every function here runs on the
 * control connection outside any transaction of the caller's (each call is atomic).
 */
#ifndef DWASYNC_ERRTABLE_H
#define DWASYNC_ERRTABLE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dwasync/change.h"
#include "dwasync/lsn.h"
#include "dwasync/rc.h"
#include "dwasync/write.h"

struct dw_config; /* config.h */

/* The NOTIFY channel replay and skip functions signal; the payload is the job name. */
#define DW_REPLAY_CHANNEL "dwasync_replay"

/* One change (through one table map) that could not be applied; all borrowed. Its row images
 * and payload are JSON text, compact as dw_json_dumps() writes it (json.h): a window keeps
 * them as text, and they are stored as they are, never parsed back into trees. */
struct dw_errrow {
    int64_t job_id;
    int64_t map_id;
    const char *map_name;
    const char *source_schema;
    const char *source_table;
    enum dw_change_op op;
    const char *source_key; /* JSON object of the source key columns; required */
    const char *key_text;   /* queue identity (target_id); NULL: canonical source_key */
    const char *target_id;  /* "<set>(<key>)" if mapped; may be NULL */
    const char *new_row;    /* JSON object; may be NULL */
    const char *old_row;    /* JSON object, the whole old image; may be NULL */
    const char *unchanged;  /* JSON array of unchanged-TOAST column names; may be NULL */
    const char *payload;    /* JSON, the body last sent; NULL if no request was made */
    dw_lsn commit_lsn;
    uint32_t xid;
    int64_t commit_time_us; /* microseconds since the epoch; 0 if unknown */
    uint32_t position;      /* change index within the transaction */
    int part;               /* 0, or 1 for the second write of one change through one map */
    int http_status;        /* 0 if no response */
    const char *code;       /* Dataverse error code; NULL or "" if none */
    const char *message;    /* redacted; NULL or "" if none */
    const char *missing_parent;
    enum dw_error_class error_class; /* NONE: parked without being sent */
    bool waiting;                    /* the pipeline parked it behind a blocked key */
};

/* The set of blocked keys of one job: (map id, key text) pairs, kept as 128-bit digests
 * (errtable.c), so a key costs 32 to 64 bytes whatever its text. */
struct dw_blocked_keys;

struct dw_blocked_keys *dw_blocked_keys_new(void);
void dw_blocked_keys_free(struct dw_blocked_keys *set);
/* Whether the key is blocked. */
bool dw_blocked_keys_contains(const struct dw_blocked_keys *set, int64_t map_id,
                              const char *key_text);
/* Adds a key (no-op if present); removes one (no-op if absent). */
void dw_blocked_keys_add(struct dw_blocked_keys *set, int64_t map_id, const char *key_text);
void dw_blocked_keys_remove(struct dw_blocked_keys *set, int64_t map_id, const char *key_text);
/* Number of keys. */
size_t dw_blocked_keys_count(const struct dw_blocked_keys *set);

/* Replaces the set's contents with the job's keys that have an open/waiting/replaying row. */
dw_rc dw_errtable_load_blocked(PGconn *conn, int64_t job_id, struct dw_blocked_keys *set);

/*
 * Inserts n rows, a few hundred to a statement (a window's thousands of refused rows are not
 * all in memory as one document); call it inside a transaction to make them one write. Rows
 * already present are skipped; a row's status is decided against the table and the rows
 * before it, as in one statement.
 * *inserted (may be NULL) gets the number of new rows; blocked (may be NULL) gets the key
 * of every row inserted. Bad rows (no source key) fail the whole call with DW_ERR_INVALID
 * before anything is written; JSON fields are trusted to be JSON (a text that is not fails the
 * statement, and the caller's transaction with it). Text is passed through the redactor before it
 * is stored.
 */
dw_rc dw_errtable_insert(PGconn *conn, const struct dw_errrow *rows, size_t n,
                         struct dw_blocked_keys *blocked, size_t *inserted);

/* A row read back from the table for replay; owns everything it points to. Claimed, it holds
 * its images as the JSON text read (images_text); dw_errstored_load_images() parses them when
 * the row is sent, so the rows a claim reads cost their text until then, not their trees. */
struct dw_errstored {
    int64_t id;
    int64_t job_id;
    int64_t map_id;
    char *map_name;
    char *source_schema;
    char *source_table;
    char *key_text;
    enum dw_change_op op;
    char *source_row_text; /* {"new": ..., "old": ..., "unchanged": ...}, until loaded */
    json_t *new_row;       /* new reference or NULL, once loaded */
    json_t *old_row;       /* new reference or NULL, once loaded */
    json_t *unchanged;     /* new reference or NULL, once loaded */
    dw_lsn commit_lsn;
    int64_t xid;
    uint32_t position;
    int part;
    int attempts;
    int64_t group_id; /* of the map now; 0 if the map is gone */
    int sequence;     /* of the map now; 0 if the map is gone */
};

/* Frees what the row holds. */
void dw_errstored_cleanup(struct dw_errstored *row);

/* Parses a row's images from their text (and frees the text); nothing if they are loaded.
 * DW_ERR_PROTOCOL (logged) if the text is not JSON. */
dw_rc dw_errstored_load_images(struct dw_errstored *row);

/* Frees a row's images, loaded or not (a row in flight needs only its identity). */
void dw_errstored_drop_images(struct dw_errstored *row);

/* A key: (table map id, canonical source key text); the text is borrowed. */
struct dw_errkey {
    int64_t map_id;
    const char *key_text;
};

/*
 * Claims up to max heads queued for replay (status replaying) of a job, skipping the keys
 * busy[0..nbusy) (writes in flight), ordered by table group, sequence, commit LSN and
 * position. *out is a new array of *n rows (caller cleans each and frees it).
 *
 * Only heads below the job's *replay horizon* are claimed: its checkpoint (the confirmed
 * LSN in dwasync.checkpoint), or its slot's confirmed position when the control database
 * sees the slot and it is behind (a crash between the two leaves it so). The stream resends
 * every transaction from there on, so a row above it may see its change again; replayed,
 * its row would be resolved, and the resent change, failing again, would be skipped as
 * already stored while an older version of its key is applied (invariant 1). A head above
 * the horizon stays queued, its key blocked, until a checkpoint passes it (rows stored
 * while a missing-parent retry holds the checkpoint back); no checkpoint: nothing.
 */
dw_rc dw_errtable_claim(PGconn *conn, int64_t job_id, const struct dw_errkey *busy, size_t nbusy,
                        size_t max, struct dw_errstored **out, size_t *n);

/*
 * Marks n (>= 1) replaying heads (of n different keys) resolved in one statement, sent by
 * the first half and received by the second (dw_pg_send(), dw_pg_receive()): the replay
 * engine sends the rows it claimed last in between. Each head's next waiting row becomes the
 * head, queued. remaining[i] gets the number of rows ids[i]'s key still has queued (0:
 * unblocked). All or none: on failure none is resolved (a replay applied again is harmless).
 */
dw_rc dw_errtable_mark_resolved_send(PGconn *conn, const int64_t *ids, size_t n);
dw_rc dw_errtable_mark_resolved_receive(PGconn *conn, size_t n, int *remaining);

/* A replayed head that failed again: its new error (borrowed) and target (may be NULL). */
struct dw_errfailure {
    int64_t id;
    const struct dw_write_result *result;
    const char *target_id;
};

/*
 * Puts replaying heads back to open with their new errors (attempts + 1), in one statement;
 * their followers wait. A row that is no longer replaying (skipped meanwhile) is left alone.
 */
dw_rc dw_errtable_mark_failed(PGconn *conn, const struct dw_errfailure *failures, size_t n);

/* Deletes resolved/skipped rows older than days (job_id 0: all jobs); *purged may be NULL. */
dw_rc dw_errtable_purge(PGconn *conn, int64_t job_id, int days, int64_t *purged);

/* The alert rule of a job ("pause if more than max_errors errors in minutes minutes"). */
struct dw_alert_state {
    bool enabled;
    int max_errors;
    int minutes;
    int64_t errors_in_window;
    bool tripped;
};

/* Evaluates the rule now. */
dw_rc dw_errtable_alert_check(PGconn *conn, int64_t job_id, struct dw_alert_state *out);

/*
 * Pauses the job if it is active and its rule tripped; logs why. *paused (may be NULL)
 * says whether it did.
 */
dw_rc dw_errtable_alert_enforce(PGconn *conn, int64_t job_id, bool *paused);

/*
 * For the active runner: LISTENs on DW_REPLAY_CHANNEL on this connection. What tells
 * `dwasync errors replay` that a daemon will act is the job lock the active runner holds
 * (ha.h, dwasync.job_lock): dw_errtable_listeners() counts its holders.
 */
dw_rc dw_errtable_listen(PGconn *conn);

/*
 * For the daemon's event loop: takes and frees every notification the control connection
 * holds; *requested is true if one was a replay request for job_name (NULL: for any job),
 * meaning dw_replay_pump() has work. With read, it first reads what the socket has (when it
 * is readable). Without, it does no I/O: a notification that arrived while the session
 * answered another statement was taken in by libpq with that answer, and the socket shows
 * nothing of it, so the loop asks every turn. DW_ERR_PG if the connection broke (logged).
 */
dw_rc dw_errtable_poll_requests(PGconn *conn, const char *job_name, bool read, bool *requested);

/* Number of active runners (holders of the job lock) for a job (NULL: any job). */
dw_rc dw_errtable_listeners(PGconn *conn, const char *job_name, int *out);

/* --- replay engine ----------------------------------------------------------------------- */

enum dw_remap_status {
    DW_REMAP_WRITE,   /* write is filled: send it */
    DW_REMAP_NOTHING, /* nothing to send now (filtered out): the row is resolved */
    DW_REMAP_FAILED,  /* cannot be mapped: back to open with error_class and message */
};

/* What the remap callback returns; the engine takes ownership of every pointer in it. */
struct dw_remap {
    enum dw_remap_status status;
    struct dw_write write;           /* WRITE */
    char *target_id;                 /* WRITE or FAILED, may be NULL */
    enum dw_error_class error_class; /* FAILED */
    char *message;                   /* FAILED */
};

struct dw_replay_ops {
    /* Re-maps a stored row with the current maps into *out (zeroed by the engine). A
     * non-OK return stops the pump with that code (the row stays queued). */
    dw_rc (*remap)(void *user, const struct dw_errstored *row, struct dw_remap *out);
    /* Sends one write and takes its contents (leaving *write empty; on failure it may keep
     * them, and the engine frees them); dw_replay_complete(token) must follow once,
     * from inside this call or later. A non-OK return counts as a failed write. */
    dw_rc (*submit)(void *user, void *token, struct dw_write *write);
    /* Optional: the key has nothing queued any more; the pipeline may send it again. */
    void (*unblocked)(void *user, int64_t map_id, const char *key_text);
};

struct dw_replay;

struct dw_replay_stats {
    uint64_t dispatched; /* writes submitted */
    uint64_t resolved;   /* rows resolved (applied, or nothing to send) */
    uint64_t failed;     /* rows back to open */
    uint64_t unblocked;  /* keys whose queue emptied */
};

/*
 * How many writes a replay holds under a config, in flight or claimed for the next pump:
 * five bulk requests' worth, [dataverse] batch_size times five (or max_concurrency, when
 * lower). The sink gathers the
 * writes handed to it together into bulk requests (sink.h), so a replay of many rows goes in
 * full bulk requests, several at once, with their bad rows isolated as the apply path's are.
 */
int dw_replay_in_flight_for(const struct dw_config *cfg);

/*
 * Creates an engine for a job with at most max_in_flight writes at once (>= 1). Heals
 * queues left without a head by a crash (their first waiting row is queued).
 */
dw_rc dw_replay_new(PGconn *conn, int64_t job_id, const struct dw_replay_ops *ops, void *user,
                    int max_in_flight, struct dw_replay **out);

void dw_replay_free(struct dw_replay *r);

/*
 * Records the result of a submitted write (r's pointers are borrowed for the call). Does
 * no I/O: the next dw_replay_pump() writes it to the table.
 */
void dw_replay_complete(struct dw_replay *r, void *token, const struct dw_write_result *res);

/*
 * Does all the work it can without waiting: records completed writes, submits the heads
 * the pump before claimed (while the server records), and claims the next ones, which wait
 * for the next pump unless nothing is in flight. *idle (may be NULL) is true when nothing is
 * in flight, claimed or queued. Call it on NOTIFY, after completions, and periodically; the
 * connection is free when it returns.
 */
dw_rc dw_replay_pump(struct dw_replay *r, bool *idle);

/* Writes submitted whose completion has not been recorded yet. */
size_t dw_replay_in_flight(const struct dw_replay *r);

struct dw_job_maps;

/*
 * What a remap callback over the real mapping engine does (call it from yours): maps the
 * stored row through its table map in maps (loaded now, so a fixed map applies) and takes
 * result number `part` (a key-changing update yields two). A map that is gone, or a row
 * the map cannot take, is a mapping failure; a row its filter now excludes has nothing to
 * send.
 */
dw_rc dw_replay_remap_with_maps(const struct dw_job_maps *maps, const struct dw_errstored *row,
                                struct dw_remap *out);

/* Copies the counters. */
void dw_replay_get_stats(const struct dw_replay *r, struct dw_replay_stats *out);

#endif

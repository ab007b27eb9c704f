/*
 * internal.h - the sink's rooms and what they share; private to src/sink.
 *
 * The public face is sink.h. Inside, a row goes from submitted (sink.c) to resolved
 * (resolve.c: references turned into GUIDs through the parent-id cache of guids.c), to
 * grouped (plan.c: UpsertMultiple per table, else $batch; atomic.c: one changeset per
 * atomic group), to a request (build.c), to sent (transport.c: curl multi, tokens,
 * retries and backoff; probe.c: noticing that an outage is over), to answered (answer.c
 * for writes, read.c for GETs and lookups), to done (rows.c keeps each row's state and
 * result; sink.c delivers it to the callback).
 *
 * Everything runs on one thread inside dw_sink_run(), on the sink's event loop (loop.h). Ownership:
 * the sink owns its rows, requests, cache entries and atomic groups; a request borrows the rows it
 * carries (they are owned by whichever list or request holds them: exactly one at a time), a row's
 * borrowed pointers (struct parents' set) point into its own key or body.
 */
#ifndef DWASYNC_SINK_INTERNAL_H
#define DWASYNC_SINK_INTERNAL_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <uthash.h>
#include <utlist.h>

#include "dwasync/buf.h"
#include "dwasync/dvclassify.h"
#include "dwasync/dvthrottle.h"
#include "dwasync/loop.h"
#include "dwasync/rc.h"
#include "dwasync/sink.h"

enum state { ST_PENDING, ST_INFLIGHT, ST_OK, ST_NOTFOUND, ST_FAILED };

/* The outcome of a failed lookup, copied to the rows that needed it. */
struct failure {
    enum dw_write_status status;
    enum dw_error_class cls;
    int http;
    const char *code;    /* owned (heap) once stored by dw_sink_failure_set() */
    const char *message; /* likewise */
};

/* GUID of one row found by (entity set, resolved key); the "GUID cache". */
struct guid_entry {
    char *id; /* "<set>(<canonical key>)" */
    char *set;
    json_t *rkey; /* the key, while it is being looked up */
    enum state state;
    uint64_t neg_pass; /* plan pass in which it became NOTFOUND/FAILED */
    bool alone;        /* a shared lookup could not tell its answer apart: ask alone */
    char *guid;
    struct failure fail;
    UT_hash_handle hh;
};

/* A growable array of cache entries (borrowed pointers). */
struct entry_list {
    struct guid_entry **v;
    size_t n, cap;
};

/* Per entity set: the primary id attribute (needed to read a GUID from a $filter answer). */
struct set_entry {
    char *set;
    enum state state;
    char *pk;
    struct failure fail;
    UT_hash_handle hh;
};

/* Per table: whether UpsertMultiple is available (asked once via sdkmessagefilters). */
struct bulk_entry {
    char *name;
    enum state state;
    bool supported;
    UT_hash_handle hh;
};

enum row_where { ROW_RESOLVING, ROW_READY, ROW_SENT, ROW_DONE };

struct atomic;

/* The parents a row refers to, for naming a missing one: when only one can be, it is named.
 * Only the first is kept, and its text made only on failure: rows rarely fail. */
struct parents {
    size_t n;
    const char *set; /* borrowed from the row's key or refs */
    json_t *rkey;    /* the first one's resolved key */
};

struct row {
    struct row *prev, *next;
    enum row_where where;
    enum dw_write_op op;
    char *entity_set, *logical_name;
    json_t *key;
    struct dw_text *body; /* the write's body and refs (write.h); NULL for a delete */
    struct dw_refs *refs;
    json_t *options; /* the write's options (write.h), or NULL; sent with the row */
    void *user;
    json_t *rkey;  /* key with references replaced by GUIDs */
    char *rbinds;  /* refs written out as body members, "<nav>@odata.bind":
                    * "/<set>(<key>)", in refs order; NULL when it has none */
    json_t *rbody; /* the whole body to send when it is not body + rbinds (a POST) */
    char *used;    /* ids of GUID cache entries this row relied on, each ending in
                    * NUL, used_len bytes in all; NULL when none */
    size_t used_len;
    struct parents binds;   /* the parents bound by reference in refs */
    struct parents keyrefs; /* the parents named in the key */
    char *guid;             /* set when the row is addressed by id (unaddressable key) */
    bool post;              /* unaddressable key, no such row: create with POST */
    bool no_bulk;           /* isolating a failed bulk request: go through $batch */
    bool single;            /* isolating a failed batch: go alone */
    bool refreshed;         /* already resolved again after a 404 */
    bool post_lost;         /* a POST of this row may have landed although its answer was lost */
    bool sent;              /* handed to a request: a failure reports the body sent */
    struct failure res;
    char *missing;
    char *wait_id;         /* id of the cache entry resolution last waited for, or NULL */
    struct atomic *atomic; /* the atomic group it belongs to, or NULL */
    size_t atomic_index;   /* its place in the group */
};

enum req_kind {
    REQ_TOKEN,     /* struct req: the OAuth2 token request */
    REQ_BULK,      /* struct bulk_req: UpsertMultiple of rows of one table */
    REQ_BATCH,     /* struct write_req: a $batch of independent rows (continue on error) */
    REQ_CHANGESET, /* struct changeset_req: one atomic group as one changeset */
    REQ_LOOKUP,    /* struct lookup_req: GUIDs of parents by their keys */
    REQ_SETINFO,   /* struct setinfo_req: the primary id attribute of an entity set */
    REQ_BULKINFO,  /* struct bulkinfo_req: whether a table supports UpsertMultiple */
    REQ_GET,       /* struct get_req: a blocking GET (dw_sink_get_json(), WhoAmI) */
    REQ_PROBE,     /* struct req: WhoAmI, asking whether Dataverse answers again */
};

/*
 * What every request has: the HTTP exchange and its retry state. Each kind is a type of its
 * own that holds this as its first member (kind says which); dw_sink_req_new() allocates
 * the right one and dw_sink_req_free() frees it, and the as_*() helpers below convert.
 */
struct req {
    struct req *prev, *next;
    enum req_kind kind;
    const char *method;
    char *url;
    char *body;
    size_t body_len;
    char *content_type;
    int attempts;
    bool auth_retried;
    int64_t not_before;
    unsigned token_gen;
    /* transfer */
    CURL *easy;
    struct curl_slist *headers;
    struct dw_buf resp;
    char *resp_type;
    char *retry_after;
    char *location; /* Location of a 3xx answer */
    bool too_big;   /* the body passed [dataverse] max_response_bytes */
    int dop_hint;
    char errbuf[CURL_ERROR_SIZE];
};

/* Rows written by one request (REQ_BATCH; the first member of the other write kinds). The
 * request owns the array, and the rows while they are in ROW_SENT. */
struct write_req {
    struct req req;
    struct row **rows;
    size_t nrows;
};

/* REQ_BULK. */
struct bulk_req {
    struct write_req w;
    bool after_siblings; /* sent again after a 404: waits for the others to its set */
};

/* REQ_CHANGESET. */
struct changeset_req {
    struct write_req w;
    struct atomic *atomic; /* the group it sends; borrowed (freed by atomic.c) */
};

/* A GET of a document or a collection (the first member of the read kinds). */
struct read_req {
    struct req req;
    json_t *pages; /* a paged collection: the rows of the pages before this one */
};

/* REQ_LOOKUP. */
struct lookup_req {
    struct read_req rd;
    struct guid_entry **entries; /* the cache entries it answers (borrowed), all of one set */
    size_t nentries;
};

/* REQ_SETINFO. */
struct setinfo_req {
    struct read_req rd;
    struct set_entry *entry; /* borrowed */
};

/* REQ_BULKINFO. */
struct bulkinfo_req {
    struct read_req rd;
    struct bulk_entry *entry; /* borrowed */
};

/* REQ_GET: its caller (dw_sink_blocking_get() in sink.c) waits for done and frees it. */
struct get_req {
    struct read_req rd;
    bool done;
    dw_rc rc;
    long http;
};

static inline bool is_write_req(const struct req *q)
{
    return q->kind == REQ_BULK || q->kind == REQ_BATCH || q->kind == REQ_CHANGESET;
}

static inline bool is_read_req(const struct req *q)
{
    return q->kind == REQ_LOOKUP || q->kind == REQ_SETINFO || q->kind == REQ_BULKINFO ||
           q->kind == REQ_GET;
}

/* The conversions check the kind: a wrong one is a bug, stopped here rather than later. */
#define DW_SINK_AS(type, q, ok) ((ok) ? (type *)(void *)(q) : (abort(), (type *)NULL))

static inline struct write_req *as_write(struct req *q)
{
    return DW_SINK_AS(struct write_req, q, is_write_req(q));
}

static inline struct bulk_req *as_bulk(struct req *q)
{
    return DW_SINK_AS(struct bulk_req, q, q->kind == REQ_BULK);
}

static inline struct changeset_req *as_changeset(struct req *q)
{
    return DW_SINK_AS(struct changeset_req, q, q->kind == REQ_CHANGESET);
}

static inline struct read_req *as_read(struct req *q)
{
    return DW_SINK_AS(struct read_req, q, is_read_req(q));
}

static inline struct lookup_req *as_lookup(struct req *q)
{
    return DW_SINK_AS(struct lookup_req, q, q->kind == REQ_LOOKUP);
}

static inline struct setinfo_req *as_setinfo(struct req *q)
{
    return DW_SINK_AS(struct setinfo_req, q, q->kind == REQ_SETINFO);
}

static inline struct bulkinfo_req *as_bulkinfo(struct req *q)
{
    return DW_SINK_AS(struct bulkinfo_req, q, q->kind == REQ_BULKINFO);
}

static inline struct get_req *as_get(struct req *q)
{
    return DW_SINK_AS(struct get_req, q, q->kind == REQ_GET);
}

struct dw_sink {
    const struct dw_config *cfg;
    dw_write_done_fn done_fn;
    void *done_user;
    CURLM *multi;
    /* The loop curl's sockets and timer live on (the sink's own: transport.c), the timer
     * that wakes it for the engine's own deadlines, and the eventfd dw_sink_wakeup writes. */
    struct dw_loop *loop;
    bool own_loop; /* made by the sink, freed with it (else the daemon's: dw_sink_use_loop) */
    struct dw_loop_timer *curl_timer, *engine_timer;
    int wake_fd;
    struct dw_auth *auth;
    char *api;      /* <url>/api/data/<version> */
    char *api_path; /* its path, for the request lines of $batch parts */
    struct row *resolving, *ready, *done;
    size_t pending;
    struct req *queue;
    struct req *transfers; /* requests handed to curl */
    int in_flight;         /* Dataverse requests among them */
    bool token_in_flight;
    int token_failures;
    int64_t token_not_before;
    bool token_config_error;
    int64_t paused_until;
    /* An outage: requests went unanswered or drew 5xx. Meanwhile a probe asks on a capped
     * interval whether Dataverse answers again, so that recovery is noticed within seconds
     * rather than after the longest backoff of the requests that wait. */
    bool outage;
    bool probe_in_flight;
    int probes_failed;
    int64_t probe_at;
    struct dw_aimd aimd;
    double row_ms; /* the server's time per row of writes, a moving average: measured by
                    * transport.c, requests sized by it in plan.c */
    struct guid_entry *guids;
    size_t guids_ok;             /* entries in state ST_OK */
    struct entry_list to_lookup; /* entries in ST_PENDING: need a lookup */
    struct entry_list negatives; /* entries NOTFOUND or FAILED, dropped a pass later */
    struct set_entry *sets;
    struct bulk_entry *bulks;
    struct atomic *atomics;
    uint64_t pass;
    struct dw_buf scratch; /* reused for the cache id of each reference resolved */
    struct dw_sink_stats stats;
};

enum res { RES_READY, RES_WAIT, RES_FAIL };

/*
 * The writes of one dw_sink_submit_atomic() call. Its rows resolve like any other; once all
 * are ready, dw_sink_plan_atomic() sends them as one changeset (REQ_CHANGESET). A group lives only
 * while none of its rows is finished: whoever finishes one (a failed resolution swept by
 * dw_sink_plan_atomic(), the changeset's answer, dw_sink_give_up()) finishes the others at once and
 * frees the group, before dw_sink_deliver() can free a row it points to.
 */
struct atomic {
    struct atomic *prev, *next;
    struct row **rows; /* in changeset order; NULL where a row finished alone (a no-op) */
    char **ids;        /* dw_dvkey_target_id() of each row, to find parents by their key */
    size_t n;
    bool sent;      /* a changeset request holds the rows */
    bool reresolve; /* resolve the rows again before the changeset goes again */
    bool refreshed; /* cached ids were already forgotten once after a 404 */
    int attempts;   /* of the changeset, kept across re-resolution */
};

/* Each function below is described where it is defined. */

/* rows.c */
void dw_sink_failure_set(struct failure *f, enum dw_write_status status, enum dw_error_class cls,
                         int http, const char *code, const char *message);
void dw_sink_failure_cleanup(struct failure *f);
void dw_sink_row_move(struct dw_sink *s, struct row *r, enum row_where to);
void dw_sink_parents_clear(struct parents *p);
void dw_sink_parents_note(struct parents *p, const char *set, const json_t *rkey);
void dw_sink_row_free(struct row *r);
void dw_sink_finish_row(struct dw_sink *s, struct row *r, enum dw_write_status status,
                        enum dw_error_class cls, int http, const char *code, const char *message);
char *dw_sink_ref_display(const char *set, const json_t *rkey);

/* guids.c */
void dw_sink_guid_entry_free(struct guid_entry *g);
void dw_sink_set_entry_drop(struct dw_sink *s, struct set_entry *e);
size_t dw_sink_forget_cache(struct dw_sink *s, struct row *r);
void dw_sink_trim_cache(struct dw_sink *s);
bool dw_sink_refresh_ids(struct dw_sink *s, struct row *r);
struct guid_entry *dw_sink_guid_get(struct dw_sink *s, const char *set, const json_t *rkey);
void dw_sink_fail_entry(struct dw_sink *s, struct guid_entry *g, const struct failure *f);
void dw_sink_advance_entries(struct dw_sink *s);
void dw_sink_drop_negative_entries(struct dw_sink *s);
void dw_sink_settle_lookup(struct dw_sink *s, struct lookup_req *l, const json_t *values);

/* resolve.c */
enum res dw_sink_ref_guid(struct dw_sink *s, struct row *r, const char *set, const json_t *rkey,
                          bool not_found_ok, char **guid);
enum res dw_sink_resolve_row(struct dw_sink *s, struct row *r);

/* build.c */
void dw_sink_put_body_members(struct dw_buf *b, const struct row *r);
void dw_sink_put_option_headers(struct dw_buf *b, const json_t *options);
struct curl_slist *dw_sink_add_option_headers(struct curl_slist *list, struct req *q);
/* The body as sent, as JSON text: a $batch part's, a POST's, a failure's payload. */
char *dw_sink_body_text(const struct row *r);
char *dw_sink_api_url(struct dw_sink *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
struct req *dw_sink_filter_get(struct dw_sink *s, enum req_kind kind, const char *path,
                               const char *condition, const char *value);
void dw_sink_queue_bulkinfo(struct dw_sink *s, struct bulk_entry *e);
void dw_sink_queue_bulk(struct dw_sink *s, struct row **rows, size_t n);
struct write_req *dw_sink_build_batch(struct dw_sink *s, struct row **rows, size_t n,
                                      const size_t *content_ids);
struct write_req *dw_sink_make_batch(struct dw_sink *s, struct row **rows, size_t n);
void dw_sink_queue_batch(struct dw_sink *s, struct row **rows, size_t n);

/* plan.c */
void dw_sink_plan(struct dw_sink *s);

/* transport.c */
void dw_sink_transport_init(struct dw_sink *s);
void dw_sink_transport_cleanup(struct dw_sink *s);
void dw_sink_transport_wakeup(struct dw_sink *s);
uint32_t dw_sink_random32(void);
struct req *dw_sink_req_new(enum req_kind kind, const char *method, char *url);
void dw_sink_req_reset_transfer(struct req *q);
void dw_sink_req_free(struct req *q);
void dw_sink_enqueue(struct dw_sink *s, struct req *q);
dw_rc dw_sink_start_transfer(struct dw_sink *s, struct req *q, const char *token);
void dw_sink_retry(struct dw_sink *s, struct req *q, const struct dw_classification *c, int http,
                   const char *code, const char *message);
dw_rc dw_sink_drive(struct dw_sink *s, int timeout_ms, bool do_deliver);

/* probe.c */
void dw_sink_outage_begin(struct dw_sink *s, int64_t now);
void dw_sink_outage_end(struct dw_sink *s, int64_t now);
bool dw_sink_answered(CURLcode cc, long http);
bool dw_sink_probe_due(const struct dw_sink *s, int64_t now, int limit);
void dw_sink_start_probe(struct dw_sink *s, const char *token, int64_t now);
void dw_sink_complete_probe(struct dw_sink *s, struct req *q, CURLcode cc, long http);

/* answer.c */
void dw_sink_parse_error(const char *body, char **code, char **message);
void dw_sink_transfer_error(const struct req *q, CURLcode cc, long http, char **code,
                            char **message);
void dw_sink_give_up(struct dw_sink *s, struct req *q, const struct failure *f);
void dw_sink_complete_write(struct dw_sink *s, struct write_req *w, CURLcode cc, long http);

/* read.c */
void dw_sink_complete_read(struct dw_sink *s, struct read_req *rd, CURLcode cc, long http);
void dw_sink_fail_read(struct dw_sink *s, struct read_req *rd, const struct failure *f);

/* atomic.c */
enum res dw_sink_atomic_ref_guid(struct dw_sink *s, struct row *r, const json_t *ref,
                                 const char *set, const json_t *rkey, char **guid);
bool dw_sink_names_content_id(const json_t *rkey);
void dw_sink_atomic_free(struct dw_sink *s, struct atomic *a);
void dw_sink_atomic_fail(struct dw_sink *s, struct atomic *a, struct row *culprit,
                         const struct failure *f);
void dw_sink_plan_atomic(struct dw_sink *s);
void dw_sink_complete_changeset(struct dw_sink *s, struct changeset_req *cs, CURLcode cc,
                                long http);

/* sink.c */
void dw_sink_deliver(struct dw_sink *s);
/* Runs one GET of url (taken) to completion without delivering write results; *out is the
 * answer's document. */
dw_rc dw_sink_blocking_get(struct dw_sink *s, char *url, json_t **out);

#endif

/*
 * internal.h - what dvemu's source files share and nothing else sees: the metadata model,
 * the row store, requests and responses as the Web API layer handles them.
 *
 * Threading: struct emu_meta is immutable after loading and read without locks. The
 * store (rows, key indexes, history, row counters) is guarded by emu->store_lock, which a
 * Web API operation holds from its first read to its last write so that changesets and
 * bulk actions are atomic. Limits and faults have their own locks (server.c).
 */
#ifndef DWASYNC_DVEMU_INTERNAL_H
#define DWASYNC_DVEMU_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

#include "dwasync/buf.h"
#include "dwasync/dvemu.h"
#include "dwasync/dvmeta.h"

#define EMU_API_PREFIX "/api/data/v9.2/"
#define EMU_MAX_BATCH  1000
#define EMU_KEY_MAX    4096 /* index text of one key; Dataverse caps keys at 900 bytes */

struct emu_option {
    int value;
    char *label;
};

/* What deleting a row does to the rows whose lookup names it (CascadeConfiguration.Delete of
 * the one-to-many relationship, "Configure entity relationship cascading behavior"). */
enum emu_cascade {
    EMU_CASCADE_REMOVE_LINK, /* the lookup is cleared (the default of a custom relationship) */
    EMU_CASCADE_CASCADE,     /* the rows are deleted too (a parental relationship) */
    EMU_CASCADE_RESTRICT,    /* the delete is refused while such rows exist */
};

struct emu_attr {
    char *name;      /* logical name */
    char *prop;      /* row property: name, or _name_value for lookups */
    char *type_name; /* AttributeType as Dataverse spells it (String, Customer, ...) */
    enum dw_attr_type type;
    char *required; /* None, Recommended, ApplicationRequired, SystemRequired */
    int max_length;
    double min_value, max_value;
    int precision;
    char *format;  /* DateTime: DateOnly or DateAndTime */
    bool readonly; /* maintained by dvemu (createdon, modifiedon, versionnumber) */
    struct emu_option *options;
    size_t noptions;
    char **targets; /* lookup targets (logical names) */
    char **navs;    /* navigation property for each target */
    char **rnavs;   /* the target's collection-valued navigation property back to this table */
    enum emu_cascade *cascade_delete; /* for each target */
    size_t ntargets;
};

struct emu_key {
    char *name;
    char **attrs;
    size_t nattrs;
};

struct emu_row {
    char id[37];
    json_t *data; /* immutable snapshot; replaced, never edited, on a write */
    UT_hash_handle hh;
};

struct emu_kidx {
    char *k;
    struct emu_row *row;
    UT_hash_handle hh;
};

struct emu_table {
    char *logical;
    char *set;
    char *primary_id;
    char *primary_name;
    char *metadata_id;
    bool bulk_create, bulk_update, bulk_upsert;
    struct emu_attr *attrs;
    size_t nattrs;
    struct emu_key *keys;
    size_t nkeys;
    /* store state, under store_lock */
    struct emu_row *rows;
    struct emu_kidx **kidx; /* one hash per key */
    uint64_t rows_written;
    uint64_t gen;   /* moves when a row goes or a key value changes (stale remembered binds) */
    bool intersect; /* a many-to-many relationship's rows: written by associating only */
};

/* A many-to-many relationship ("Associate and disassociate table rows using the Web API"):
 * rows of t[0] and t[1] are related by rows of the intersect table, each holding the two
 * primary ids under the tables' primary id names. Immutable after loading (meta.c). */
struct emu_m2m {
    char *name;             /* SchemaName */
    struct emu_table *t[2]; /* entity1, entity2 (distinct tables) */
    char *nav[2];           /* t[i]'s collection-valued navigation property to t[1 - i] */
    struct emu_table *intersect;
};

struct emu_hist {
    uint64_t seq;
    struct emu_table *table;
    char id[37];
    const char *op; /* create, update, delete */
    json_t *row;    /* the row after the write (before it, for a delete) */
};

/* Table privileges, then the global ones the bypass parameters need ("Bypass custom
 * Dataverse logic": prvBypassCustomBusinessLogic, prvBypassCustomPlugins). */
enum emu_priv {
    EMU_PRIV_CREATE,
    EMU_PRIV_WRITE,
    EMU_PRIV_DELETE,
    EMU_PRIV_BYPASS_LOGIC,
    EMU_PRIV_BYPASS_PLUGINS,
    EMU_PRIV_COUNT
};

/* A privilege revoked from the application user (privileges.c). */
struct emu_priv_rule {
    struct emu_table *table; /* NULL for a global privilege */
    enum emu_priv priv;
    const struct emu_attr *attr; /* NULL: every row; else rows where attr = value */
    json_t *value;               /* owned */
};

/* What a write replaced, so a changeset or bulk action can be rolled back. */
struct emu_undo {
    struct emu_table *table;
    char id[37];
    json_t *old; /* NULL: the row did not exist */
};

/* dvemu's time source (clock.c): the machine's clocks, or, with --clock manual, a clock that
 * stands still until a test moves it. Its own lock; never held while another is taken. */
struct emu_clock {
    bool manual;
    pthread_mutex_t lock;
    pthread_cond_t moved;
    int64_t mono0_ms, wall0_ms; /* the machine's clocks when dvemu started */
    int64_t offset_ms;          /* manual: how far the clock has been moved since */
    int waiting;                /* manual: requests waiting for the clock to pass their end */
    bool stopping;              /* shutting down: nobody waits any more */
};

/* A client that authenticates with a certificate (a signed JWT client assertion). */
struct emu_certclient {
    const char *id; /* borrowed from the options */
    void *pkey;     /* EVP_PKEY */
    unsigned char sha1[20], sha256[32];
};

struct emu {
    const struct dw_dvemu_options *opt;
    struct emu_clock clock;
    unsigned char token_key[32]; /* signs the access tokens dvemu issues */
    struct emu_certclient *certs;
    size_t ncerts;
    struct emu_table *tables; /* the metadata's tables, then the intersect tables */
    size_t ntables;
    struct emu_m2m *m2m;
    size_t nm2m;
    char *base_url; /* http(s)://host:port */
    pthread_mutex_t store_lock;
    uint64_t seq;
    uint64_t version;
    uint64_t rows_put; /* rows written (or deleted) so far: a request's share is its cost */
    struct emu_hist *hist;
    size_t nhist, hist_cap;
    uint64_t hist_dropped;
    json_t *now_json; /* the current operation's timestamp (createdon, modifiedon) */
    bool in_txn;
    struct emu_undo *undo;
    size_t nundo, undo_cap;
    size_t txn_hist_mark;
    uint64_t txn_seq_mark;
    struct emu_priv_rule *privs; /* revoked privileges, under store_lock */
    size_t nprivs;
    const char *caller; /* the current operation's user (client id), under store_lock */
    struct emu_bind_memo *bind_memo; /* binds that found their row (webapi.c), under store_lock */
    uint64_t rows_bypassed;    /* of rows_put, those written with custom sync logic bypassed */
    struct emu_reqlog *reqlog; /* the last requests and their optional parameters (options.c) */
    /* WhoAmI's OrganizationId when set by POST /_dvemu/organization (a refreshed or copied
     * environment); empty: derived from the tenant. Under store_lock. */
    char organization_id[40];
};

/* The optional parameters of a write that are request headers ("Use optional parameters"):
 * recorded per request, checked against privileges, and bypassing logic lowers the cost. */
enum emu_opt {
    EMU_OPT_BYPASS_LOGIC,        /* MSCRM.BypassBusinessLogicExecution: CustomSync,CustomAsync */
    EMU_OPT_BYPASS_PLUGINS,      /* MSCRM.BypassCustomPluginExecution: true (the older form) */
    EMU_OPT_SUPPRESS_DUPLICATES, /* MSCRM.SuppressDuplicateDetection: true|false */
    EMU_OPT_SUPPRESS_FLOWS,      /* MSCRM.SuppressCallbackRegistrationExpanderJob: true */
    EMU_OPT_COUNT
};
extern const char *const emu_opt_headers[EMU_OPT_COUNT];

/* An error answer in Dataverse's shape. */
struct emu_err {
    int status;
    char *code;
    char *message;
};

/* One request as the Web API layer sees it (from HTTP or from a $batch part). */
struct emu_req {
    const char *method;
    const char *path;  /* raw (percent-encoded) path after /api/data/v9.2/ */
    const char *query; /* raw query string without '?', or NULL */
    const char *body;
    size_t body_len;
    bool prefer_representation;
    int max_page_size; /* Prefer: odata.maxpagesize=N, 0 when not asked */
    const char *if_match;
    const char *if_none_match;
    json_t *content_ids; /* $batch: Content-ID -> "set(guid)"; borrowed, may be NULL */
    bool in_batch;       /* a part of a $batch (its writes answer with Location too) */
    const char *user;    /* who the token says is calling */
    const char *prefer;  /* the Prefer header as sent, or NULL */
    const char *base;    /* the organization URL as the client called it (scheme and its Host
                          * header): the links an answer holds start with it */
    json_t *json;        /* the body already parsed (borrowed), or NULL */
    const char *opts[EMU_OPT_COUNT]; /* optional parameter headers as sent, NULL when absent */
};

#define EMU_MAX_HEADERS 12

struct emu_resp {
    int status;
    struct dw_buf body;
    const char *content_type;
    char *hname[EMU_MAX_HEADERS];
    char *hvalue[EMU_MAX_HEADERS];
    size_t nheaders;
    char *entity_ref;     /* "set(guid)" of the row written, for Content-ID references */
    size_t rows;          /* rows the request wrote, for its server cost */
    size_t rows_bypassed; /* of those, rows written with custom synchronous logic bypassed */
};

/* meta.c */
char *emu_stable_guid(const char *a, const char *b);
dw_rc emu_meta_load(struct emu *emu, const char *file);
void emu_meta_free(struct emu *emu);
struct emu_table *emu_table_by_set(struct emu *emu, const char *set, size_t len);
struct emu_table *emu_table_by_logical(struct emu *emu, const char *name);
const struct emu_attr *emu_attr_find(const struct emu_table *t, const char *name);
const char *emu_edm_type(const struct emu_attr *a);
json_t *emu_meta_entity_json(const struct emu_table *t);
json_t *emu_meta_attr_json(const struct emu_attr *a, bool with_options);
json_t *emu_meta_key_json(const struct emu_table *t, const struct emu_key *k);

/* fetchxml.c (under store_lock) */
/* Answers GET <set>?fetchXml=<xml> for table t (xml decoded): rows, or Dataverse's error. */
void emu_fetchxml_answer(const struct emu_req *req, struct emu_table *t, const char *xml,
                         struct emu_resp *resp);

/* m2m.c (under store_lock) */
/* The relationship whose navigation property on t is nav[0..len); *side is t's index. */
const struct emu_m2m *emu_m2m_find(const struct emu *emu, const struct emu_table *t,
                                   const char *nav, size_t len, int *side);
/* The public rows of m->t[1 - side] related to row id of m->t[side]: a new array. */
json_t *emu_m2m_related(const struct emu_m2m *m, int side, const char *id);
/* Relates id (of t[side]) and other_id (of t[1 - side]); 412 0x80040237 when they are. */
dw_rc emu_m2m_associate(struct emu *emu, const struct emu_m2m *m, int side, const char *id,
                        const char *other_id, struct emu_err *err);
/* Removes the relation; 404 when there is none. */
dw_rc emu_m2m_disassociate(struct emu *emu, const struct emu_m2m *m, int side, const char *id,
                           const char *other_id, struct emu_err *err);
/* Removes every relation of a row of t that is being deleted. */
void emu_m2m_forget(struct emu *emu, const struct emu_table *t, const char *id);
/* Deletes a row of t as Dataverse does: rows whose lookups name it are deleted with it,
 * cleared or keep it (Restrict: DW_ERR_INVALID with err set and nothing changed), as each
 * relationship's cascade says, and its many-to-many associations go. */
dw_rc emu_row_delete(struct emu *emu, struct emu_table *t, const char *id, struct emu_err *err);
/* The CascadeType name of a cascade ("Cascade", "RemoveLink", "Restrict"). */
const char *emu_cascade_name(enum emu_cascade c);

/* store.c */
/* Sets what Dataverse maintains on a row being written: id, timestamps, version. */
void emu_row_finish(struct emu *emu, const struct emu_table *t, json_t *row, const char *id,
                    bool created);
void emu_err_set(struct emu_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void emu_err_clear(struct emu_err *e);
void emu_new_guid(char out[37]);
struct emu_row *emu_row_find_id(struct emu_table *t, const char *id);
/* The index text of row's values for key k into out; false when a part is null. */
bool emu_key_string(const struct emu_table *t, const struct emu_key *k, const json_t *row,
                    char *out, size_t size);
struct emu_row *emu_row_find(struct emu_table *t, const struct dw_dvemu_key *key, bool *by_alt,
                             struct emu_err *err);
/* The row a bind's reference text ("/accounts(...)") found before, and its table, when no row
 * of that table has gone and no key value of it has changed since; NULL otherwise. */
struct emu_row *emu_bind_memo_find(struct emu *emu, const char *ref, struct emu_table **table);
/* Remembers the row a bind's reference text found. */
void emu_bind_memo_keep(struct emu *emu, const char *ref, struct emu_table *table,
                        struct emu_row *row);
/* Writes (or, with data NULL, deletes) a row; logs undo and history. Under store_lock. */
void emu_row_put(struct emu *emu, struct emu_table *t, const char *id, json_t *data,
                 const char *op);
struct emu_row *emu_key_conflict(struct emu_table *t, const json_t *data, const char *id,
                                 const struct emu_key **which);
void emu_txn_begin(struct emu *emu);
void emu_txn_commit(struct emu *emu);
void emu_txn_rollback(struct emu *emu);
void emu_store_reset(struct emu *emu);
void emu_store_free(struct emu *emu);
json_t *emu_row_public(const struct emu_table *t, const json_t *row);
dw_rc emu_state_save(struct emu *emu, const char *file);
dw_rc emu_state_load(struct emu *emu, const char *file);

/* privileges.c (all under store_lock) */
/* Replaces the revoked privileges with cfg's {"revoke": [...]}; on error *why (heap) says
 * why and the previous rules stay. */
dw_rc emu_privileges_set(struct emu *emu, json_t *cfg, char **why);
json_t *emu_privileges_json(const struct emu *emu);
void emu_privileges_free(struct emu *emu);
/* DW_OK, or DW_ERR_AUTH with err set to Dataverse's 403 when a rule refuses the write of row
 * id (before: the stored row or NULL; after: the row written or NULL). */
dw_rc emu_privilege_check(struct emu *emu, const struct emu_table *t, enum emu_priv priv,
                          const json_t *before, const json_t *after, const char *id,
                          struct emu_err *err);

/* Refuses the request (403, Dataverse's message) when the user lacks a global privilege. */
dw_rc emu_privilege_check_global(struct emu *emu, enum emu_priv priv, struct emu_err *err);

/* Answers RetrieveUserPrivilegeByPrivilegeName for privilege name (prv...). */
void emu_user_privilege_by_name(struct emu *emu, const char *name, struct emu_resp *resp);

/* options.c (emu_opts_check and the request log under store_lock) */
/* DW_OK, or a 400 for a value Dataverse does not take, or the 403 of a missing bypass
 * privilege. */
dw_rc emu_opts_check(struct emu *emu, const struct emu_req *req, struct emu_err *err);
/* Whether the request bypasses custom synchronous logic (its rows cost less). */
bool emu_opts_bypass_sync(const struct emu_req *req);
/* Records a request (a $batch part too): method, path, its optional parameters and the tag
 * query option (tag: borrowed, may be NULL), its status. */
void emu_reqlog_add(struct emu *emu, const struct emu_req *req, const char *tag, int status);
/* {"value": [{seq, method, path, status, batch, options}...], "dropped"}, the entries whose
 * path contains path_filter (NULL: all): a new reference. */
json_t *emu_reqlog_json(struct emu *emu, const char *path_filter);
void emu_reqlog_clear(struct emu *emu);
void emu_reqlog_free(struct emu *emu);

/* clock.c */
void emu_clock_init(struct emu_clock *c, bool manual);
void emu_clock_cleanup(struct emu_clock *c);
/* Monotonic milliseconds (only differences mean anything). */
int64_t emu_clock_ms(struct emu_clock *c);
/* Milliseconds since the Unix epoch (manual: the start time plus how far it was moved). */
int64_t emu_clock_wall_ms(struct emu_clock *c);
/* Spends ms of server time: sleeps (real), or waits until the clock is moved that far. */
void emu_clock_sleep(struct emu_clock *c, int64_t ms);
/* Ends every wait and every later one (shutdown: the server's threads must finish). */
void emu_clock_release(struct emu_clock *c);
/* Moves a manual clock forward by advance_ms, or to set_ms (ms since start) when set; on
 * error *why (heap, caller frees) says why: a real clock, or a move backwards. */
dw_rc emu_clock_move(struct emu_clock *c, int64_t advance_ms, int64_t set_ms, bool set, char **why);
/* {"mode", "now_ms" (since start), "wall_s", "wall" (ISO 8601), "waiting"}: a new reference. */
json_t *emu_clock_json(struct emu_clock *c);

/* auth.c */
dw_rc emu_auth_init(struct emu *emu);
void emu_auth_free(struct emu *emu);
void emu_token_endpoint(struct emu *emu, const char *tenant, const char *form, size_t len,
                        struct emu_resp *resp);
/* Checks "Bearer <token>"; on success *user is the client id (heap, caller frees). */
dw_rc emu_token_check(struct emu *emu, const char *authorization, char **user);

/* webapi.c */
/* Orders two property values as Dataverse compares them (nulls first, numbers by value,
 * strings case-insensitively, false before true). */
int emu_value_cmp(const json_t *a, const json_t *b);
/* N of "odata.maxpagesize=N" in a Prefer header, 0 when absent or not a positive number. */
int emu_prefer_max_page_size(const char *prefer);
void emu_resp_init(struct emu_resp *r);
void emu_resp_cleanup(struct emu_resp *r);
void emu_resp_header(struct emu_resp *r, const char *name, const char *value);
void emu_resp_error(struct emu_resp *r, const struct emu_err *e);
void emu_resp_json(struct emu_resp *r, int status, json_t *body);
void emu_api_handle(struct emu *emu, const struct emu_req *req, struct emu_resp *resp);
void emu_batch_handle(struct emu *emu, const struct emu_req *req, const char *content_type,
                      bool continue_on_error, struct emu_resp *resp);

#endif

/*
 * write.h - the write vocabulary: the contract between mapping, pipeline, control and sink.
 *
 * The mapping engine turns a row change into a struct dw_write; the pipeline and error
 * replay hand writes to the sink (sink.h) and get each one back as a struct
 * dw_write_result through a dw_write_done_fn; the error table stores a refused row under
 * its enum dw_error_class name. None of this needs the HTTP client, so this header pulls
 * in nothing but jansson.
 *
 * Ownership: a struct dw_write owns its strings, a hold on its body and refs, and its JSON
 * references (all let go by dw_write_cleanup()); whoever it is handed to takes them (see
 * dw_sink_submit()). A struct dw_write_result is borrowed: its pointers are valid only
 * during the callback that receives it.
 */
#ifndef DWASYNC_WRITE_H
#define DWASYNC_WRITE_H

#include <jansson.h>
#include <stdbool.h>

#include "dwasync/text.h"

enum dw_write_op {
    DW_WRITE_UPSERT, /* PATCH by key, creates or updates */
    DW_WRITE_CREATE, /* PATCH with If-None-Match: * (create only) */
    DW_WRITE_UPDATE, /* PATCH with If-Match: * (update only) */
    DW_WRITE_DELETE, /* DELETE by key; 404 counts as done */
};

/*
 * A body's lookups bound by a reference object, in body order: each member's name
 * ("<nav>@odata.bind") and the parent's reference object {"$ref": .., "key": ..} (a
 * reference each). Built by dw_write_set_body(), never modified after, and shared by
 * counted holds (as text.h's struct dw_text is) with the copy of a write kept to send it
 * again: one allocation, names included (as a JSON object it took a dozen, 4.5 MB of an
 * initial sync's peak).
 */
struct dw_refs {
    unsigned holders;
    size_t n;
    struct dw_ref {
        const char *name; /* inside the same allocation */
        json_t *ref;
    } items[];
};

/* Another holder of refs (NULL stays NULL), returned. */
struct dw_refs *dw_refs_hold(struct dw_refs *refs);

/* Lets go of refs (NULL: nothing); the last holder frees it. */
void dw_refs_drop(struct dw_refs *refs);

/* How many lookups refs binds (0 for NULL). */
static inline size_t dw_refs_count(const struct dw_refs *refs)
{
    return refs ? refs->n : 0;
}

/* The reference bound to member name, or NULL. */
const json_t *dw_refs_get(const struct dw_refs *refs, const char *name);

/*
 * One row write.
 *
 * key: JSON object of alternate-key attribute -> scalar (string, integer, number, boolean).
 *   A key part that is a lookup is named as the URL names it, "_<lookup>_value", and its
 *   value is either a GUID string or a reference object
 *       {"$ref": "<parent entity set>", "key": {<the parent's key, same rules>}}
 *   which the sink resolves to the parent's GUID (cached; invalidated on 404).
 * body: what is written, an object of attribute -> value without the key attributes, kept
 *   as the text the sink sends: the object's members written out compactly without the
 *   braces ("" for none), shared (text.h) with a copy of the write kept to send again. A
 *   lookup is "<navigation property>@odata.bind": null to clear it, or a parent's reference
 *   object as above, which is not in body but in refs. NULL for DW_WRITE_DELETE. Set both
 *   with dw_write_set_body(); dw_write_body() gives the whole object back. A body lives in
 *   a window until it is answered: as text it costs a fifth of a tree, and it is written
 *   out once, not at every request that carries it.
 * refs: the lookups bound by a reference object (struct dw_refs above), which the sink
 *   resolves and writes out as "/<set>(<key>)" after body's members; NULL when there are
 *   none.
 * options: the map's write options (a map file's "options": {"write": ...}, validated by
 *   dw_jobdef_parse()), sent with every request that carries the write, or NULL for none:
 *       {"bypass_logic": ["CustomSync", "CustomAsync"],  MSCRM.BypassBusinessLogicExecution
 *        "suppress_duplicate_detection": true,           MSCRM.SuppressDuplicateDetection
 *        "suppress_flows": true,              MSCRM.SuppressCallbackRegistrationExpanderJob
 *        "tag": "<token>"}                                the `tag` query option
 *   Writes share it (a new reference each); nobody modifies it.
 */
struct dw_write {
    enum dw_write_op op;
    char *entity_set;   /* e.g. "accounts" */
    char *logical_name; /* e.g. "account" (for @odata.type in bulk actions) */
    json_t *key;
    struct dw_text *body;
    struct dw_refs *refs;
    json_t *options;
};

/* Sets a write's body and refs from the object body (stolen; NULL or not an object: none),
 * freeing what it held. */
void dw_write_set_body(struct dw_write *w, json_t *body);

/* The whole body of a write, refs included, as a new object; NULL when it has none. */
json_t *dw_write_body(const struct dw_write *w);

/* Whether body member name binds a lookup by a reference object (one of refs). */
bool dw_write_is_bind_ref(const char *name, const json_t *v);

/* Longest write-options tag: letters, digits, '_', '.', '-' (sent unescaped in a URL). */
#define DW_WRITE_TAG_MAX 64

/* Whether s is a tag write options may carry (1 to DW_WRITE_TAG_MAX safe characters). */
bool dw_write_tag_ok(const char *s);

/* Whether options (NULL: none) has the shape above, so that it cannot add a header or a
 * query option of its own: the sink refuses a write whose options do not. */
bool dw_write_options_ok(const json_t *options);

/* Frees what a write holds and empties it; an empty write is fine. */
void dw_write_cleanup(struct dw_write *w);

/* Why a row was refused; the error table's "class" column uses these names. */
enum dw_error_class {
    DW_ERRCLASS_NONE = 0,
    DW_ERRCLASS_MAPPING,        /* could not be mapped; no request was sent */
    DW_ERRCLASS_VALIDATION,     /* 400: length, type, option value, unknown property */
    DW_ERRCLASS_MISSING_PARENT, /* 404 on a lookup bind or key reference */
    DW_ERRCLASS_DUPLICATE,      /* 412 / duplicate key */
    DW_ERRCLASS_PRIVILEGE,      /* 403 */
    DW_ERRCLASS_CONFLICT,       /* 409, concurrency */
    DW_ERRCLASS_TRANSIENT,      /* retryable failures past the retry limit */
    DW_ERRCLASS_UNKNOWN,
};

/* "mapping", "validation", "missing_parent", ...; never NULL. */
const char *dw_error_class_name(enum dw_error_class c);

enum dw_write_status {
    DW_WRITE_APPLIED,  /* 2xx, or 404 for a delete */
    DW_WRITE_REJECTED, /* a permanent failure of this row */
    DW_WRITE_GAVE_UP,  /* transient failures outlasted [dataverse] retry_limit */
};

struct dw_write_result {
    enum dw_write_status status;
    enum dw_error_class error_class; /* DW_ERRCLASS_NONE when applied */
    int http_status;                 /* 0 when no response was received */
    const char *code;                /* Dataverse error code, e.g. "0x80044331"; "" if none */
    const char *message;             /* Dataverse or transport message, redacted; "" if none */
    const char *payload;             /* the body last sent, as JSON text, for a row that
                                      * failed; NULL for an applied row, a delete or a row
                                      * never sent */
    const char *missing_parent;      /* "<set>(<key>)" of a missing parent, or NULL */
};

/* Called once per write; write_user is what was passed to dw_sink_submit() for it. */
typedef void (*dw_write_done_fn)(void *user, void *write_user, const struct dw_write_result *r);

/* Most writes in one atomic group (dw_sink_submit_atomic()): Dataverse's limit of requests
 * in one $batch, and dual-write's of records in one transaction. The window cuts its atomic
 * units to it. */
#define DW_SINK_ATOMIC_MAX 1000

#endif

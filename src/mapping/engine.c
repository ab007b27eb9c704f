/* The mapping engine: one source row change through a job's table maps into Dataverse writes. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/dvkey.h"
#include "dwasync/hash.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/mapstore.h"
#include "dwasync/pg.h"

struct ref_memo;
static struct ref_memo *ref_memo_new(void);
static void ref_memo_free(struct ref_memo *memo);

struct dw_job_maps {
    struct dw_jobdef *def;
    struct ref_memo *memo; /* references built so far, shared by the rows that repeat them */
};

dw_rc dw_job_maps_from_def(struct dw_jobdef *def, struct dw_job_maps **out)
{
    struct dw_job_maps *m = dw_calloc(1, sizeof *m);
    m->def = def;
    m->memo = ref_memo_new();
    *out = m;
    return DW_OK;
}

void dw_job_maps_set_max_length(struct dw_job_maps *maps, const char *logical_name,
                                const char *attribute, int max_length)
{
    struct dw_jobdef *def = maps->def;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            struct dw_tablemap *m = &def->groups[g].maps[i];
            if (strcmp(m->logical_name, logical_name) != 0)
                continue;
            for (size_t c = 0; c < m->ncols; c++)
                if (m->cols[c].lookup == NULL && strcmp(m->cols[c].target, attribute) == 0)
                    m->cols[c].max_length = max_length;
            for (size_t k = 0; k < m->nkey; k++)
                if (m->key[k].kind == DW_KEYPART_COLUMN && strcmp(m->key[k].target, attribute) == 0)
                    m->key[k].max_length = max_length;
        }
    }
}

/* The lengths `job start` recorded (dw_job_maps_record_lengths). */
static dw_rc load_lengths(PGconn *control, const char *job_name, struct dw_job_maps *maps)
{
    PGresult *res = NULL;
    const char *params[] = {job_name};
    dw_rc rc =
        dw_pg_query(control, "reading the recorded column lengths",
                    "SELECT l.logical_name, l.attribute, l.max_length"
                    "  FROM dwasync.target_max_length l JOIN dwasync.job j ON j.id = l.job_id"
                    " WHERE j.name = $1",
                    1, params, &res);
    if (rc != DW_OK)
        return rc;
    for (int i = 0; i < PQntuples(res); i++)
        dw_job_maps_set_max_length(maps, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                   (int)strtol(PQgetvalue(res, i, 2), NULL, 10));
    PQclear(res);
    return DW_OK;
}

dw_rc dw_job_maps_load(PGconn *control, const char *job_name, struct dw_job_maps **out)
{
    struct dw_jobdef *def = NULL;
    struct dw_job_maps *maps = NULL;
    dw_rc rc = dw_mapstore_load(control, job_name, &def);
    if (rc != DW_OK)
        return rc;
    if ((rc = dw_job_maps_from_def(def, &maps)) != DW_OK)
        return rc;
    if ((rc = load_lengths(control, job_name, maps)) != DW_OK) {
        dw_job_maps_free(maps);
        return rc;
    }
    *out = maps;
    return DW_OK;
}

void dw_job_maps_free(struct dw_job_maps *maps)
{
    if (maps == NULL)
        return;
    dw_jobdef_free(maps->def);
    ref_memo_free(maps->memo);
    free(maps);
}

const struct dw_jobdef *dw_job_maps_def(const struct dw_job_maps *maps)
{
    return maps->def;
}

static bool map_reads(const struct dw_tablemap *m, const char *schema, const char *table)
{
    return strcmp(m->source_table, table) == 0 &&
           strcmp(m->source_schema, schema ? schema : "public") == 0;
}

const struct dw_tablemap *dw_job_maps_reader(const struct dw_job_maps *maps, const char *schema,
                                             const char *table)
{
    const struct dw_jobdef *def = maps->def;
    for (size_t g = 0; g < def->ngroups; g++)
        for (size_t i = 0; i < def->groups[g].nmaps; i++)
            if (map_reads(&def->groups[g].maps[i], schema, table))
                return &def->groups[g].maps[i];
    return NULL;
}

void dw_mapped_vec_reset(struct dw_mapped_vec *v)
{
    for (size_t i = 0; i < v->len; i++) {
        struct dw_mapped *m = &v->items[i];
        free(m->target_id);
        free(m->error);
        dw_write_cleanup(&m->write);
    }
    v->len = 0;
}

void dw_mapped_vec_cleanup(struct dw_mapped_vec *v)
{
    dw_mapped_vec_reset(v);
    free(v->items);
    v->items = NULL;
    v->cap = 0;
}

static struct dw_mapped *vec_push(struct dw_mapped_vec *v)
{
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 4;
        v->items = dw_realloc(v->items, v->cap * sizeof *v->items);
    }
    struct dw_mapped *m = &v->items[v->len++];
    memset(m, 0, sizeof *m);
    return m;
}

/* --- values ---------------------------------------------------------------------------- */

/* A value for a message: compact JSON, cut short so one huge value cannot flood a log. */
static char *show(const json_t *v)
{
    char *s = dw_json_dumps(v);
    if (strlen(s) > 80) {
        s[77] = '.';
        s[78] = '.';
        s[79] = '.';
        s[80] = '\0';
    }
    return s;
}

/* Characters (code points) of a UTF-8 string, as Dataverse's MaxLength counts them. */
static size_t utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Whether a coerced value fits a known MaxLength (0: unknown, anything fits). */
static bool fits_length(const json_t *v, int max_length)
{
    return max_length <= 0 || !json_is_string(v) ||
           utf8_length(json_string_value(v)) <= (size_t)max_length;
}

/* The text a value-map key is compared with. */
static char *value_text(const json_t *v)
{
    if (json_is_string(v))
        return dw_strdup(json_string_value(v));
    if (json_is_boolean(v))
        return dw_strdup(json_is_true(v) ? "true" : "false");
    return dw_json_dumps(v);
}

static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_real(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static bool is_guid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-'
                 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

/*
 * Converts a non-null value to what a Dataverse attribute of type t accepts. Returns a new
 * reference, or NULL with *why set (a static phrase) when the value cannot be converted.
 */
static json_t *coerce(const json_t *v, enum dw_attr_type t, const char **why)
{
    int64_t i;
    double d;
    switch (t) {
    case DW_ATTR_STRING:
    case DW_ATTR_MEMO:
        if (json_is_string(v))
            return json_incref((json_t *)v);
        if (json_is_number(v) || json_is_boolean(v)) {
            char *s = value_text(v);
            json_t *r = json_string(s);
            free(s);
            return r;
        }
        break;
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
    case DW_ATTR_PICKLIST:
        if (json_is_integer(v)) {
            i = json_integer_value(v);
        } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                   fabs(json_real_value(v)) < 9.0e15) {
            i = (int64_t)json_real_value(v);
        } else if (json_is_string(v) && parse_int(json_string_value(v), &i)) {
            ;
        } else if (json_is_boolean(v) && t != DW_ATTR_PICKLIST) {
            i = json_is_true(v) ? 1 : 0;
        } else {
            *why = t == DW_ATTR_PICKLIST ? "is not an option value (add a value map)"
                                         : "is not an integer";
            return NULL;
        }
        if (t != DW_ATTR_BIGINT && (i < INT32_MIN || i > INT32_MAX)) {
            *why = "is outside the 32-bit integer range";
            return NULL;
        }
        return json_integer(i);
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE:
        if (json_is_number(v))
            return json_incref((json_t *)v);
        if (json_is_string(v) && parse_real(json_string_value(v), &d)) {
            if (parse_int(json_string_value(v), &i))
                return json_integer(i);
            return json_real(d);
        }
        *why = "is not a number";
        return NULL;
    case DW_ATTR_BOOLEAN:
        if (json_is_boolean(v))
            return json_incref((json_t *)v);
        if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            return json_boolean(json_integer_value(v) == 1);
        if (json_is_string(v)) {
            const char *s = json_string_value(v);
            if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1"))
                return json_true();
            if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0"))
                return json_false();
        }
        *why = "is not a boolean (NoYes enums need a value map or 0/1)";
        return NULL;
    case DW_ATTR_DATETIME:
        if (json_is_string(v))
            return json_incref((json_t *)v);
        *why = "is not a date/time string";
        return NULL;
    case DW_ATTR_UNIQUEIDENTIFIER:
        if (json_is_string(v) && is_guid(json_string_value(v)))
            return json_incref((json_t *)v);
        *why = "is not a GUID";
        return NULL;
    default:
        return json_incref((json_t *)v);
    }
    *why = "is not text";
    return NULL;
}

/* --- one map --------------------------------------------------------------------------- */

/* Why a row does not map, as it goes into the error table. */
struct failure {
    char *msg;
};

__attribute__((format(printf, 2, 3))) static void fail(struct failure *f, const char *fmt, ...)
{
    if (f->msg)
        return; /* the first problem names the row's error */
    va_list ap;
    va_start(ap, fmt);
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    f->msg = dw_buf_steal(&b);
    if (f->msg == NULL)
        f->msg = dw_strdup("mapping failed");
}

enum fetch { F_VALUE, F_NULL, F_UNCHANGED, F_MISSING };

static bool in_unchanged(const json_t *unchanged, const char *column)
{
    for (size_t i = 0; i < json_array_size(unchanged); i++) {
        json_t *c = json_array_get(unchanged, i);
        if (json_is_string(c) && strcasecmp(json_string_value(c), column) == 0)
            return true;
    }
    return false;
}

static enum fetch fetch(const json_t *row, const json_t *unchanged, const char *column,
                        json_t **out)
{
    if (in_unchanged(unchanged, column))
        return F_UNCHANGED;
    json_t *v = dw_row_get(row, column);
    if (v == NULL)
        return F_MISSING;
    *out = v;
    return json_is_null(v) ? F_NULL : F_VALUE;
}

enum keyuse { FOR_KEY, FOR_BIND };

/* The row image a key or body is read from: its columns, the columns not sent (unchanged
 * TOAST; may be NULL), and the job's memo of references. */
struct image {
    const json_t *row;
    const json_t *unchanged;
    struct ref_memo *memo;
};

static enum fetch fetch_from(const struct image *img, const char *column, json_t **out)
{
    return fetch(img->row, img->unchanged, column, out);
}

/* What a key is built for, named in failure messages only: 'key of "accounts"' or
 * 'lookup "parentcustomerid"'. Kept in two parts so that no row pays for the text. */
struct what {
    const char *kind;
    const char *name;
};

/*
 * Builds the key object of parts from a row. FOR_KEY: every part must have a value.
 * FOR_BIND: returns F_NULL when a part is null (the lookup is cleared) and F_UNCHANGED when
 * a part was not sent (the lookup is left alone).
 */
static enum fetch build_key(const struct dw_keypart *parts, size_t n, const struct image *img,
                            enum keyuse use, const struct what *what, struct failure *f,
                            json_t **out);

/* {"$ref": "<set>", "key": key} (sink.h), taking key. Built directly: this runs for every
 * lookup of every row, and json_pack() parses its format each time. */
static json_t *reference(const char *entity_set, json_t *key)
{
    json_t *ref = json_object();
    json_object_set_new_nocheck(ref, "$ref", json_string(entity_set));
    json_object_set_new_nocheck(ref, "key", key);
    return ref;
}

/*
 * The memo of references. The rows of a window name a handful of parents over and over
 * (their company, currency, payment terms, group): a reference whose key parts are all read
 * from columns is kept by the values it was built from, and every row naming the same
 * parent shares it. Built references are never modified (the window and the sink only read
 * them), so sharing one saves the dozen small allocations each copy took, in memory and in
 * time. Set-associative, the least recently used way of a set giving way: a parent named
 * once (a customer's invoice account) pushes out another such, not the company every row
 * names.
 */
#define REF_MEMO_SETS  64
#define REF_MEMO_WAYS  4
#define REF_MEMO_SLOTS (REF_MEMO_SETS * REF_MEMO_WAYS)

struct ref_memo_slot {
    const void *owner; /* the lookup or company key part the reference was built for */
    char *values;      /* the values it was built from, as memo_values() writes them */
    size_t values_len;
    json_t *ref;    /* NULL while claimed and being built, or when building failed */
    uint64_t claim; /* which claim last took the slot */
    uint64_t used;  /* when it was last found or taken (the memo's clock) */
};

struct ref_memo {
    struct ref_memo_slot slots[REF_MEMO_SLOTS];
    struct dw_buf values; /* scratch for the values of the reference being looked up */
    uint64_t claims;
    uint64_t clock; /* one tick per lookup */
};

/* A slot taken for a reference about to be built; slot NULL: not one to keep. */
struct memo_claim {
    struct ref_memo_slot *slot;
    uint64_t claim;
};

static struct ref_memo *ref_memo_new(void)
{
    struct ref_memo *memo = dw_calloc(1, sizeof *memo);
    dw_buf_init(&memo->values, 64);
    return memo;
}

static void ref_memo_free(struct ref_memo *memo)
{
    for (size_t i = 0; i < REF_MEMO_SLOTS; i++) {
        free(memo->slots[i].values);
        json_decref(memo->slots[i].ref);
    }
    dw_buf_cleanup(&memo->values);
    free(memo);
}

/* Appends one value to the memo's scratch tagged with its type (a string with its length:
 * any byte may be in it); false when it is not a plain string or integer (then the
 * reference is not kept). */
static bool memo_value(struct ref_memo *memo, const json_t *v)
{
    struct dw_buf *b = &memo->values;
    if (json_is_string(v)) {
        (void)dw_buf_printf(b, "s%zu:", json_string_length(v));
        (void)dw_buf_append(b, json_string_value(v), json_string_length(v));
        return true;
    }
    if (json_is_integer(v)) {
        (void)dw_buf_printf(b, "i%" JSON_INTEGER_FORMAT ";", json_integer_value(v));
        return true;
    }
    return false;
}

/* Writes the values parts read from img into the memo's scratch; false when one of them
 * cannot be kept by (a nested lookup, a null, a value not sent, not a string or integer). */
static bool memo_values(struct ref_memo *memo, const struct dw_keypart *parts, size_t n,
                        const struct image *img)
{
    dw_buf_reset(&memo->values);
    for (size_t i = 0; i < n; i++) {
        json_t *v = NULL;
        if (parts[i].kind == DW_KEYPART_LOOKUP || fetch_from(img, parts[i].source, &v) != F_VALUE ||
            !memo_value(memo, v))
            return false;
    }
    return true;
}

/*
 * The reference owner builds from the values in the memo's scratch, when the memo has it (a
 * new reference to it, for the caller). Otherwise NULL, and *claim says where to keep the
 * one the caller builds (ref_memo_keep).
 */
static json_t *ref_memo_find(struct ref_memo *memo, const void *owner, struct memo_claim *claim)
{
    uint64_t h = dw_fnv1a(dw_fnv1a(DW_FNV1A_BASIS, &owner, sizeof owner), memo->values.data,
                          memo->values.len);
    struct ref_memo_slot *set = &memo->slots[(h % REF_MEMO_SETS) * REF_MEMO_WAYS], *slot = set;
    const struct dw_buf *v = &memo->values;
    memo->clock++;
    for (size_t w = 0; w < REF_MEMO_WAYS; w++) {
        struct ref_memo_slot *s = &set[w];
        if (s->ref && s->owner == owner && s->values_len == v->len &&
            memcmp(s->values, v->data, v->len) == 0) {
            s->used = memo->clock;
            return json_incref(s->ref);
        }
        if (s->used < slot->used)
            slot = s;
    }
    free(slot->values);
    json_decref(slot->ref);
    slot->owner = owner;
    slot->values = dw_malloc(v->len ? v->len : 1);
    memcpy(slot->values, v->data, v->len);
    slot->values_len = v->len;
    slot->ref = NULL;
    slot->used = memo->clock;
    slot->claim = ++memo->claims;
    *claim = (struct memo_claim){slot, slot->claim};
    return NULL;
}

/* Keeps ref in the slot claimed for it, unless a reference built meanwhile (a company
 * inside its key) claimed the slot since. */
static void ref_memo_keep(const struct memo_claim *claim, json_t *ref)
{
    if (claim->slot && claim->slot->claim == claim->claim)
        claim->slot->ref = json_incref(ref);
}

static enum fetch build_ref(const struct dw_lookup *l, const struct image *img, enum keyuse use,
                            const struct what *what, struct failure *f, json_t **out)
{
    struct memo_claim claim = {NULL, 0};
    if (memo_values(img->memo, l->key, l->nkey, img) &&
        (*out = ref_memo_find(img->memo, l, &claim)) != NULL)
        return F_VALUE;
    json_t *key = NULL;
    enum fetch r = build_key(l->key, l->nkey, img, use, what, f, &key);
    if (r != F_VALUE)
        return r;
    *out = reference(l->entity_set, key);
    ref_memo_keep(&claim, *out);
    return F_VALUE;
}

/* The reference to the company whose code a key part read (code, already fetched). */
static json_t *company_ref(const struct dw_keypart *kp, struct ref_memo *memo, json_t *code)
{
    struct memo_claim claim = {NULL, 0};
    dw_buf_reset(&memo->values);
    json_t *ref = memo_value(memo, code) ? ref_memo_find(memo, kp, &claim) : NULL;
    if (ref == NULL) {
        json_t *company_key = json_object();
        json_object_set(company_key, DW_COMPANY_KEY, code);
        ref = reference(DW_COMPANY_ENTITY_SET, company_key);
        ref_memo_keep(&claim, ref);
    }
    return ref;
}

static enum fetch build_key(const struct dw_keypart *parts, size_t n, const struct image *img,
                            enum keyuse use, const struct what *what, struct failure *f,
                            json_t **out)
{
    json_t *key = json_object();
    enum fetch result = F_VALUE;
    for (size_t i = 0; i < n && result == F_VALUE; i++) {
        const struct dw_keypart *kp = &parts[i];
        json_t *v = NULL, *val = NULL;
        if (kp->kind == DW_KEYPART_LOOKUP) {
            enum fetch r = build_ref(kp->lookup, img, use, what, f, &val);
            if (r != F_VALUE) {
                result = r;
                break;
            }
            json_object_set_new(key, kp->attr, val);
            continue;
        }
        enum fetch r = fetch_from(img, kp->source, &v);
        if (r == F_MISSING || r == F_UNCHANGED) {
            /* A key column is always sent (it is in the replica identity); a bind's part
             * may be unchanged TOAST and then the lookup stays as it is. */
            if (use == FOR_BIND && r == F_UNCHANGED) {
                result = F_UNCHANGED;
                break;
            }
            fail(f, "%s \"%s\": column \"%s\" is not in the row", what->kind, what->name,
                 kp->source);
            result = F_MISSING;
            break;
        }
        if (r == F_NULL) {
            if (use == FOR_KEY)
                fail(f, "%s \"%s\": key column \"%s\" is null", what->kind, what->name, kp->source);
            result = use == FOR_KEY ? F_MISSING : F_NULL;
            break;
        }
        if (kp->kind == DW_KEYPART_COMPANY) {
            json_object_set_new(key, kp->attr, company_ref(kp, img->memo, v));
            continue;
        }
        if (kp->has_type) {
            const char *why = NULL;
            val = coerce(v, kp->type, &why);
            if (val == NULL) {
                char *s = show(v);
                fail(f, "%s \"%s\": column \"%s\" value %s %s for key attribute \"%s\"", what->kind,
                     what->name, kp->source, s, why, kp->target);
                free(s);
                result = F_MISSING;
                break;
            }
        } else {
            val = json_incref(v);
        }
        if (!fits_length(val, kp->max_length)) {
            char *s = show(v);
            fail(f,
                 "%s \"%s\": column \"%s\" value %s is longer than %d characters, the "
                 "MaxLength of key attribute \"%s\" in Dataverse",
                 what->kind, what->name, kp->source, s, kp->max_length, kp->target);
            free(s);
            json_decref(val);
            result = F_MISSING;
            break;
        }
        json_object_set_new(key, kp->target, val);
    }
    if (result != F_VALUE) {
        json_decref(key);
        return result;
    }
    *out = key;
    return F_VALUE;
}

static bool direction_to_dv(enum dw_direction d)
{
    return d != DW_DIR_TO_FO && d != DW_DIR_TO_FO_TRANSFORM;
}

/* Applies the column's value map; *out is a new reference (json null allowed). */
static bool apply_value_map(const struct dw_colmap *c, const json_t *v, struct failure *f,
                            json_t **out)
{
    char *text = value_text(v);
    json_t *m = json_object_get(c->value_map, text);
    if (m == NULL) {
        /* Enum names differ in case between mirrors (Yes, yes, YES). */
        const char *k;
        json_t *x;
        json_object_foreach(c->value_map, k, x)
        {
            if (strcasecmp(k, text) == 0) {
                m = x;
                break;
            }
        }
    }
    free(text);
    if (m) {
        *out = json_incref(m);
        return true;
    }
    switch (c->unmapped) {
    case DW_UNMAPPED_NULL:
        *out = json_null();
        return true;
    case DW_UNMAPPED_PASSTHROUGH:
        *out = json_incref((json_t *)v);
        return true;
    case DW_UNMAPPED_DEFAULT:
        *out = json_incref(c->deflt);
        return true;
    default: {
        char *s = show(v);
        fail(f, "column \"%s\" value %s is not in the value map of \"%s\"", c->source, s,
             c->target);
        free(s);
        return false;
    }
    }
}

/* Whether the value to send fits the column's known MaxLength: Dataverse would refuse a
 * longer one (0x80044331), so it is a mapping error, with no request. */
static bool check_length(const struct dw_colmap *c, const json_t *sent, const json_t *source,
                         struct failure *f)
{
    if (fits_length(sent, c->max_length))
        return true;
    char *s = show(source);
    fail(f,
         "column \"%s\" value %s is longer than %d characters, the MaxLength of \"%s\" in "
         "Dataverse",
         c->source ? c->source : "(constant)", s, c->max_length, c->target);
    free(s);
    return false;
}

/* Adds one column mapping to body; false (with f set) when the row cannot be mapped. */
static bool map_column(const struct dw_colmap *c, const struct image *img, json_t *body,
                       struct failure *f)
{
    if (c->lookup) {
        json_t *ref = NULL;
        struct what what = {"lookup", c->target};
        enum fetch r = build_ref(c->lookup, img, FOR_BIND, &what, f, &ref);
        if (r == F_MISSING)
            return false;
        if (r == F_UNCHANGED)
            return true;
        json_object_set_new(body, c->bind, r == F_VALUE ? ref : json_null());
        return true;
    }
    json_t *v = NULL, *out = NULL;
    if (c->constant) {
        v = c->constant;
    } else {
        enum fetch r = fetch_from(img, c->source, &v);
        if (r == F_UNCHANGED)
            return true; /* unchanged TOAST: Dataverse keeps its value */
        if (r == F_MISSING) {
            fail(f, "column \"%s\" (for \"%s\") is not in the row", c->source, c->target);
            return false;
        }
        if (r == F_NULL) {
            switch (c->null_rule) {
            case DW_NULL_OMIT:
                return true;
            case DW_NULL_ERROR:
                fail(f, "column \"%s\" is null and \"%s\" does not accept null", c->source,
                     c->target);
                return false;
            case DW_NULL_DEFAULT:
                v = c->deflt;
                break;
            default:
                json_object_set_new(body, c->target, json_null());
                return true;
            }
        } else if (c->value_map) {
            if (!apply_value_map(c, v, f, &out))
                return false;
            v = out;
        }
    }
    if (json_is_null(v) || !c->has_type) {
        if (!check_length(c, v, v, f)) {
            json_decref(out);
            return false;
        }
        json_object_set(body, c->target, v);
        json_decref(out);
        return true;
    }
    const char *why = NULL;
    json_t *coerced = coerce(v, c->type, &why);
    if (coerced == NULL) {
        char *s = show(v);
        fail(f, "column \"%s\" value %s %s for \"%s\" (%s)", c->source ? c->source : "(constant)",
             s, why, c->target, dw_mapfile_type_name(c->type));
        free(s);
        json_decref(out);
        return false;
    }
    /* Dataverse would refuse it (0x80044331): say so without sending it. */
    if (!check_length(c, coerced, v, f)) {
        json_decref(coerced);
        json_decref(out);
        return false;
    }
    json_object_set_new(body, c->target, coerced);
    json_decref(out);
    return true;
}

static struct dw_mapped *start_result(struct dw_mapped_vec *out, const struct dw_tablemap *m)
{
    struct dw_mapped *r = vec_push(out);
    r->map_id = m->id;
    r->map_name = m->name;
    r->group_name = m->group_name;
    r->sequence = m->sequence;
    return r;
}

static void finish_failed(struct dw_mapped *r, const struct dw_tablemap *m, struct failure *f,
                          json_t *key)
{
    r->ok = false;
    r->error_class = DW_ERRCLASS_MAPPING;
    r->error = dw_asprintf("map \"%s\": %s", m->name, f->msg ? f->msg : "cannot be mapped");
    free(f->msg);
    f->msg = NULL;
    /* Never NULL: a row whose key is unknown still needs an identity to park behind. */
    r->target_id =
        key ? dw_dvkey_target_id(m->entity_set, key) : dw_asprintf("%s(?)", m->entity_set);
    json_decref(key);
}

char *dw_mapping_truncate_message(const char *schema, const char *table)
{
    return dw_asprintf("TRUNCATE of \"%s.%s\" is not replicated: Dataverse rows of this table "
                       "were not deleted. Delete them in Dataverse, or skip this error if they "
                       "should stay.",
                       schema, table);
}

void dw_mapping_truncate(const struct dw_job_maps *maps, const char *schema, const char *table,
                         struct dw_mapped_vec *out)
{
    const struct dw_jobdef *def = maps->def;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            if (!map_reads(m, schema, table))
                continue;
            struct dw_mapped *r = start_result(out, m);
            r->ok = false;
            r->error_class = DW_ERRCLASS_MAPPING;
            r->error = dw_mapping_truncate_message(schema, table);
            r->target_id = dw_asprintf("%s(TRUNCATE)", m->entity_set);
        }
    }
}

static void emit_delete(struct dw_mapped_vec *out, const struct dw_tablemap *m, json_t *key)
{
    struct dw_mapped *r = start_result(out, m);
    r->ok = true;
    r->target_id = dw_dvkey_target_id(m->entity_set, key);
    r->write.op = DW_WRITE_DELETE;
    r->write.entity_set = dw_strdup(m->entity_set);
    r->write.logical_name = dw_strdup(m->logical_name);
    r->write.key = key;
    r->write.options = json_incref(m->write_options);
}

/* The body of an upsert of an image through a map (new reference), or NULL with f set. */
static json_t *upsert_body(const struct dw_tablemap *m, const struct image *img, struct failure *f)
{
    json_t *body = json_object();
    for (size_t i = 0; i < m->ncols; i++) {
        if (!direction_to_dv(m->cols[i].direction))
            continue;
        if (!map_column(&m->cols[i], img, body, f)) {
            json_decref(body);
            return NULL;
        }
    }
    return body;
}

/* An upsert of img through m; *body_out (when not NULL) gets its body as an object (a new
 * reference, NULL if it could not be mapped), for a comparison before it is let go. */
static struct dw_mapped *emit_upsert(struct dw_mapped_vec *out, const struct dw_tablemap *m,
                                     json_t *key, const struct image *img, json_t **body_out)
{
    struct dw_mapped *r = start_result(out, m);
    struct failure f = {NULL};
    json_t *body = upsert_body(m, img, &f);
    if (body == NULL) {
        finish_failed(r, m, &f, key);
        return r;
    }
    r->ok = true;
    r->target_id = dw_dvkey_target_id(m->entity_set, key);
    r->write.op = DW_WRITE_UPSERT;
    r->write.entity_set = dw_strdup(m->entity_set);
    r->write.logical_name = dw_strdup(m->logical_name);
    r->write.key = key;
    r->write.options = json_incref(m->write_options);
    if (body_out)
        *body_out = json_incref(body);
    dw_write_set_body(&r->write, body);
    return r;
}

/*
 * Whether an upsert (mapped, ok) of an UPDATE writes what the row held before: the old image
 * (whole under REPLICA IDENTITY FULL) maps to the same body, the columns not sent left out
 * of both. A key-only old image cannot be mapped, and then the answer is no.
 */
static bool same_as_before(const struct dw_tablemap *m, const json_t *body_now,
                           const struct dw_source_row *row, struct ref_memo *memo)
{
    const struct image before = {row->old_row, row->unchanged, memo};
    struct failure ignore = {NULL};
    json_t *body = upsert_body(m, &before, &ignore);
    free(ignore.msg);
    bool same = body && json_equal(body, body_now);
    json_decref(body);
    return same;
}

/* A key from an image: the old one when it carries the key columns, else the new one. */
static json_t *key_from(const struct dw_tablemap *m, const struct image *img, struct failure *f)
{
    json_t *key = NULL;
    struct what what = {"key of", m->entity_set};
    enum fetch r = build_key(m->key, m->nkey, img, FOR_KEY, &what, f, &key);
    return r == F_VALUE ? key : NULL;
}

/* The image a filter sees for an UPDATE: new values, old ones for unchanged columns. */
static json_t *filter_image(const json_t *new_row, const json_t *old_row, const json_t *unchanged)
{
    json_t *img = json_copy((json_t *)new_row);
    for (size_t i = 0; i < json_array_size(unchanged); i++) {
        const char *c = json_string_value(json_array_get(unchanged, i));
        json_t *ov = c ? dw_row_get(old_row, c) : NULL;
        if (c && ov)
            json_object_set(img, c, ov);
        else if (c)
            json_object_del(img, c);
    }
    return img;
}

/* Maps a row through one map; with skip_unchanged, an UPDATE that changes no mapped value
 * is flagged (dw_mapped.unchanged). */
static void map_one(const struct dw_job_maps *maps, const struct dw_tablemap *m,
                    const struct dw_source_row *row, bool skip_unchanged, struct dw_mapped_vec *out)
{
    const struct dw_jobdef *def = maps->def;
    struct ref_memo *memo = maps->memo;
    /* The new image as sent, the same without its unchanged columns named (a key's are
     * always sent), and the old image. */
    const struct image sent = {row->new_row, row->unchanged, memo},
                       new_img = {row->new_row, NULL, memo}, old_img = {row->old_row, NULL, memo};
    struct failure f = {NULL};
    json_t *key = NULL, *old_key = NULL;
    if (row->op == DW_CHANGE_INSERT) {
        enum dw_tristate in = dw_tablemap_match(def, m, row->new_row);
        if (in == DW_FALSE)
            return;
        if (in == DW_UNKNOWN) {
            fail(&f, "the row filter cannot be evaluated: a column it reads is not in the row");
            goto failed;
        }
        if ((key = key_from(m, &new_img, &f)) == NULL)
            goto failed;
        emit_upsert(out, m, key, &sent, NULL);
        return;
    }
    if (row->op == DW_CHANGE_DELETE) {
        const json_t *img = row->old_row ? row->old_row : row->new_row;
        /* Unknown (a key-only old image) deletes: a delete of an absent row is a no-op. */
        if (dw_tablemap_match(def, m, img) == DW_FALSE)
            return;
        const struct image deleted = {img, NULL, memo};
        if ((key = key_from(m, &deleted, &f)) == NULL)
            goto failed;
        emit_delete(out, m, key);
        return;
    }
    /* UPDATE */
    enum dw_tristate now;
    if (json_array_size(row->unchanged) == 0) {
        now = dw_tablemap_match(def, m, row->new_row);
    } else {
        json_t *img = filter_image(row->new_row, row->old_row, row->unchanged);
        now = dw_tablemap_match(def, m, img);
        json_decref(img);
    }
    /* Without an old image the replica identity did not change, and a filter reads only
     * identity columns unless the identity is FULL (validate), where the old image is always
     * sent: so the row matched before exactly as it does now. */
    enum dw_tristate before = row->old_row ? dw_tablemap_match(def, m, row->old_row) : now;
    if (row->old_row) {
        /* An old image without every key column (identity differs from the map's key)
         * cannot name the old row; the new key is then the row's key. */
        struct failure ignore = {NULL};
        old_key = key_from(m, &old_img, &ignore);
        free(ignore.msg);
    }
    if (now == DW_UNKNOWN) {
        /* Neither an upsert nor a delete is safe when the filter cannot be evaluated. */
        fail(&f,
             "the row filter cannot be evaluated: a column it reads was not sent (unchanged "
             "TOAST); set REPLICA IDENTITY FULL on \"%s.%s\"",
             m->source_schema, m->source_table);
        goto failed;
    }
    if (now == DW_TRUE) {
        if ((key = key_from(m, &sent, &f)) == NULL)
            goto failed;
        if (old_key && before != DW_FALSE) {
            if (!json_equal(old_key, key)) {
                emit_delete(out, m, old_key);
                old_key = NULL;
            }
        }
        bool stayed = old_key != NULL && before == DW_TRUE;
        json_decref(old_key);
        bool compare = skip_unchanged && stayed;
        json_t *body = NULL;
        struct dw_mapped *r = emit_upsert(out, m, key, &sent, compare ? &body : NULL);
        /* Dual-write fires only when a mapped column changes: nor does this. */
        if (compare && r->ok)
            r->unchanged = same_as_before(m, body, row, memo);
        json_decref(body);
        return;
    }
    if (before == DW_FALSE) {
        json_decref(old_key);
        return; /* was not in this map and still is not */
    }
    /* The row left the map's filter (or may have): remove it from this map's table. */
    if (old_key) {
        emit_delete(out, m, old_key);
        return;
    }
    if ((key = key_from(m, &sent, &f)) == NULL)
        goto failed;
    emit_delete(out, m, key);
    return;
failed:
    json_decref(old_key);
    finish_failed(start_result(out, m), m, &f, NULL);
}

static bool row_ok(const struct dw_source_row *row)
{
    if (row->table == NULL)
        return false;
    switch (row->op) {
    case DW_CHANGE_INSERT:
        return json_is_object(row->new_row);
    case DW_CHANGE_UPDATE:
        return json_is_object(row->new_row) && (!row->old_row || json_is_object(row->old_row));
    case DW_CHANGE_DELETE:
        return json_is_object(row->old_row) || json_is_object(row->new_row);
    default:
        return false;
    }
}

dw_rc dw_mapping_map_row(const struct dw_job_maps *maps, const struct dw_source_row *row,
                         struct dw_mapped_vec *out)
{
    if (!row_ok(row)) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", row->table}), "malformed row change");
        return DW_ERR_INVALID;
    }
    const struct dw_jobdef *def = maps->def;
    for (size_t g = 0; g < def->ngroups; g++)
        for (size_t i = 0; i < def->groups[g].nmaps; i++)
            if (map_reads(&def->groups[g].maps[i], row->schema, row->table))
                map_one(maps, &def->groups[g].maps[i], row, true, out);
    return DW_OK;
}

dw_rc dw_mapping_map_row_with(const struct dw_job_maps *maps, int64_t map_id,
                              const struct dw_source_row *row, struct dw_mapped_vec *out)
{
    if (!row_ok(row)) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"table", row->table}), "malformed row change");
        return DW_ERR_INVALID;
    }
    const struct dw_jobdef *def = maps->def;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            if (def->groups[g].maps[i].id == map_id) {
                map_one(maps, &def->groups[g].maps[i], row, false, out);
                return DW_OK;
            }
        }
    }
    DW_ERROR("table map %" PRId64 " is not in the loaded maps", map_id);
    return DW_ERR_NOT_FOUND;
}

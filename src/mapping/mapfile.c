/* Map files: parsing with JSON paths in every error, and the one normal form export writes. */
#include "dwasync/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/dvkey.h"
#include "dwasync/json.h"

struct pctx {
    struct dw_buf *errors;
    int nerrors;
};

__attribute__((format(printf, 3, 4))) static void perr(struct pctx *c, const char *path,
                                                       const char *fmt, ...)
{
    va_list ap;
    c->nerrors++;
    (void)dw_buf_printf(c->errors, "%s: ", path);
    va_start(ap, fmt);
    (void)dw_buf_vprintf(c->errors, fmt, ap);
    va_end(ap);
    (void)dw_buf_putc(c->errors, '\n');
}

static const struct {
    const char *name;
    enum dw_attr_type type;
} type_names[] = {
    {"string", DW_ATTR_STRING},
    {"memo", DW_ATTR_MEMO},
    {"integer", DW_ATTR_INTEGER},
    {"bigint", DW_ATTR_BIGINT},
    {"decimal", DW_ATTR_DECIMAL},
    {"money", DW_ATTR_MONEY},
    {"double", DW_ATTR_DOUBLE},
    {"boolean", DW_ATTR_BOOLEAN},
    {"datetime", DW_ATTR_DATETIME},
    {"picklist", DW_ATTR_PICKLIST},
    {"uniqueidentifier", DW_ATTR_UNIQUEIDENTIFIER},
};

const char *dw_mapfile_type_name(enum dw_attr_type t)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        if (type_names[i].type == t)
            return type_names[i].name;
    return "other";
}

dw_rc dw_mapfile_type_parse(const char *s, enum dw_attr_type *out)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (strcasecmp(type_names[i].name, s) == 0) {
            *out = type_names[i].type;
            return DW_OK;
        }
    }
    return DW_ERR_INVALID;
}

static const char *const dir_names[] = {"=", ">", "<", "><", ">>", "<<"};
static const char *const unmapped_names[] = {"error", "null", "passthrough", "default"};
static const char *const null_names[] = {"send", "omit", "default", "error"};
static const char *const filter_ops[] = {
    "and", "or", "not", "=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"};

static int name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Reports keys of obj that are not in allowed (a typo must not silently do nothing). */
static void check_keys(struct pctx *c, const char *path, const json_t *obj,
                       const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok)
            perr(c, path, "unknown member \"%s\"", k);
    }
}

static bool is_ident_ok(const char *s)
{
    return s && *s && strlen(s) <= 128;
}

/* A required non-empty string member; returns a copy or NULL after reporting. */
static char *req_string(struct pctx *c, const char *path, const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        perr(c, path, "\"%s\" is required", key);
        return NULL;
    }
    if (!json_is_string(v) || !is_ident_ok(json_string_value(v))) {
        perr(c, path, "\"%s\" must be a non-empty string of at most 128 characters", key);
        return NULL;
    }
    return dw_strdup(json_string_value(v));
}

/* A required Dataverse identifier (entity set, logical name, attribute, navigation property). */
static char *req_dvident(struct pctx *c, const char *path, const json_t *obj, const char *key)
{
    char *s = req_string(c, path, obj, key);
    if (s && !dw_dvkey_identifier_ok(s)) {
        perr(c, path,
             "\"%s\" must be a Dataverse name: a letter or _ followed by letters, digits or _ "
             "(^[A-Za-z_][A-Za-z0-9_]*$)",
             key);
        free(s);
        s = NULL;
    }
    return s;
}

static char *opt_string(struct pctx *c, const char *path, const json_t *obj, const char *key)
{
    if (json_object_get(obj, key) == NULL)
        return NULL;
    return req_string(c, path, obj, key);
}

static bool is_scalar(const json_t *v)
{
    return json_is_string(v) || json_is_number(v) || json_is_boolean(v);
}

/* --- keys and lookups ------------------------------------------------------------------ */

static void lookup_free(struct dw_lookup *l);

static void keyparts_free(struct dw_keypart *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(parts[i].target);
        free(parts[i].attr);
        free(parts[i].source);
        lookup_free(parts[i].lookup);
    }
    free(parts);
}

static void lookup_free(struct dw_lookup *l)
{
    if (l == NULL)
        return;
    free(l->entity_set);
    free(l->logical_name);
    keyparts_free(l->key, l->nkey);
    free(l);
}

static struct dw_lookup *parse_lookup(struct pctx *c, const char *path, const json_t *v, int depth);

static void parse_type(struct pctx *c, const char *path, const json_t *obj, bool *has,
                       enum dw_attr_type *type)
{
    json_t *t = json_object_get(obj, "type");
    *has = false;
    if (t == NULL)
        return;
    if (!json_is_string(t) || dw_mapfile_type_parse(json_string_value(t), type) != DW_OK) {
        char *p = dw_asprintf("%s.type", path);
        perr(c, p,
             "unknown type (string, memo, integer, bigint, decimal, money, double, boolean, "
             "datetime, picklist, uniqueidentifier)");
        free(p);
        return;
    }
    *has = true;
}

static struct dw_keypart *parse_key(struct pctx *c, const char *path, const json_t *arr,
                                    size_t *nout, int depth)
{
    static const char *const allowed[] = {"target", "source", "company", "lookup", "type", NULL};
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        perr(c, path, "must be a non-empty array of key parts");
        return NULL;
    }
    size_t n = json_array_size(arr);
    struct dw_keypart *parts = dw_calloc(n, sizeof *parts);
    for (size_t i = 0; i < n; i++) {
        char *p = dw_asprintf("%s[%zu]", path, i);
        const json_t *o = json_array_get(arr, i);
        struct dw_keypart *kp = &parts[i];
        if (!json_is_object(o)) {
            perr(c, p, "must be an object");
            free(p);
            continue;
        }
        check_keys(c, p, o, allowed);
        kp->target = req_dvident(c, p, o, "target");
        int kinds = (json_object_get(o, "source") != NULL) +
                    (json_object_get(o, "company") != NULL) +
                    (json_object_get(o, "lookup") != NULL);
        if (kinds != 1) {
            perr(c, p, "a key part has exactly one of \"source\", \"company\", \"lookup\"");
        } else if (json_object_get(o, "source")) {
            kp->kind = DW_KEYPART_COLUMN;
            kp->source = req_string(c, p, o, "source");
            parse_type(c, p, o, &kp->has_type, &kp->type);
        } else if (json_object_get(o, "company")) {
            kp->kind = DW_KEYPART_COMPANY;
            kp->source = req_string(c, p, o, "company");
        } else {
            kp->kind = DW_KEYPART_LOOKUP;
            char *lp = dw_asprintf("%s.lookup", p);
            kp->lookup = parse_lookup(c, lp, json_object_get(o, "lookup"), depth + 1);
            free(lp);
        }
        if (kp->target)
            kp->attr = kp->kind == DW_KEYPART_COLUMN ? dw_strdup(kp->target)
                                                     : dw_asprintf("_%s_value", kp->target);
        if (kp->kind != DW_KEYPART_COLUMN && json_object_get(o, "type"))
            perr(c, p, "\"type\" applies to a \"source\" key part only");
        for (size_t j = 0; j < i; j++) {
            if (kp->target && parts[j].target && strcasecmp(parts[j].target, kp->target) == 0)
                perr(c, p, "key attribute \"%s\" appears twice", kp->target);
        }
        free(p);
    }
    *nout = n;
    return parts;
}

static struct dw_lookup *parse_lookup(struct pctx *c, const char *path, const json_t *v, int depth)
{
    static const char *const allowed[] = {"entity_set", "logical_name", "key", NULL};
    if (!json_is_object(v)) {
        perr(c, path, "must be an object with \"entity_set\", \"logical_name\" and \"key\"");
        return NULL;
    }
    if (depth > 4) {
        perr(c, path, "lookups nest at most 4 deep");
        return NULL;
    }
    check_keys(c, path, v, allowed);
    struct dw_lookup *l = dw_calloc(1, sizeof *l);
    l->entity_set = req_dvident(c, path, v, "entity_set");
    l->logical_name = req_dvident(c, path, v, "logical_name");
    char *kp = dw_asprintf("%s.key", path);
    if (json_object_get(v, "key") == NULL)
        perr(c, path, "\"key\" is required");
    else
        l->key = parse_key(c, kp, json_object_get(v, "key"), &l->nkey, depth);
    free(kp);
    return l;
}

/* --- columns --------------------------------------------------------------------------- */

static void colmap_clear(struct dw_colmap *m)
{
    free(m->target);
    free(m->navigation);
    free(m->bind);
    free(m->source);
    json_decref(m->constant);
    json_decref(m->deflt);
    json_decref(m->value_map);
    lookup_free(m->lookup);
}

static void parse_column(struct pctx *c, const char *p, const json_t *o, struct dw_colmap *m)
{
    static const char *const allowed[] = {"target",   "navigation", "direction", "source",
                                          "constant", "default",    "value_map", "unmapped",
                                          "null",     "type",       "lookup",    NULL};
    if (!json_is_object(o)) {
        perr(c, p, "must be an object");
        return;
    }
    check_keys(c, p, o, allowed);
    m->target = req_dvident(c, p, o, "target");
    m->direction = DW_DIR_TO_DV;
    json_t *d = json_object_get(o, "direction");
    if (d) {
        int i =
            json_is_string(d) ? name_index(dir_names, NELEM(dir_names), json_string_value(d)) : -1;
        if (i < 0) {
            char *dp = dw_asprintf("%s.direction", p);
            perr(c, dp, "must be one of \"=\", \">\", \"<\", \"><\", \">>\", \"<<\"");
            free(dp);
        } else {
            m->direction = (enum dw_direction)i;
        }
    }
    json_t *src = json_object_get(o, "source"), *cst = json_object_get(o, "constant"),
           *lk = json_object_get(o, "lookup");
    if ((src != NULL) + (cst != NULL) + (lk != NULL) != 1)
        perr(c, p, "a column has exactly one of \"source\", \"constant\", \"lookup\"");
    if (src)
        m->source = req_string(c, p, o, "source");
    if (cst) {
        if (!is_scalar(cst) && !json_is_null(cst)) {
            char *cp = dw_asprintf("%s.constant", p);
            perr(c, cp, "must be a string, number, boolean or null");
            free(cp);
        } else {
            m->constant = json_incref(cst);
        }
    }
    if (lk) {
        char *lp = dw_asprintf("%s.lookup", p);
        m->lookup = parse_lookup(c, lp, lk, 1);
        free(lp);
        if (json_object_get(o, "navigation"))
            m->navigation = req_dvident(c, p, o, "navigation");
        if (m->navigation || m->target)
            m->bind = dw_asprintf("%s@odata.bind", m->navigation ? m->navigation : m->target);
    } else if (json_object_get(o, "navigation")) {
        perr(c, p, "\"navigation\" applies to a lookup only");
    }
    json_t *df = json_object_get(o, "default");
    if (df) {
        if (!is_scalar(df)) {
            char *dp = dw_asprintf("%s.default", p);
            perr(c, dp, "must be a string, number or boolean");
            free(dp);
        } else {
            m->deflt = json_incref(df);
        }
    }
    json_t *vm = json_object_get(o, "value_map");
    if (vm) {
        char *vp = dw_asprintf("%s.value_map", p);
        if (!src)
            perr(c, vp, "a value map needs a \"source\" column");
        if (!json_is_object(vm) || json_object_size(vm) == 0) {
            perr(c, vp, "must be a non-empty object of source value -> target value");
        } else {
            const char *k;
            json_t *v;
            json_object_foreach(vm, k, v)
            {
                if (!is_scalar(v) && !json_is_null(v)) {
                    char *ep = dw_asprintf("%s.\"%s\"", vp, k);
                    perr(c, ep, "must map to a string, number, boolean or null");
                    free(ep);
                }
            }
            m->value_map = json_incref(vm);
        }
        free(vp);
    }
    json_t *um = json_object_get(o, "unmapped");
    m->unmapped = DW_UNMAPPED_ERROR;
    if (um) {
        int i = json_is_string(um)
                    ? name_index(unmapped_names, NELEM(unmapped_names), json_string_value(um))
                    : -1;
        char *up = dw_asprintf("%s.unmapped", p);
        if (i < 0)
            perr(c, up, "must be \"error\", \"null\", \"passthrough\" or \"default\"");
        else if (!vm)
            perr(c, up, "applies to a value map only");
        else
            m->unmapped = (enum dw_unmapped_rule)i;
        if (i == DW_UNMAPPED_DEFAULT && !df)
            perr(c, up, "\"default\" needs a \"default\" value");
        free(up);
    }
    json_t *nl = json_object_get(o, "null");
    m->null_rule = DW_NULL_SEND;
    if (nl) {
        int i = json_is_string(nl)
                    ? name_index(null_names, NELEM(null_names), json_string_value(nl))
                    : -1;
        char *np = dw_asprintf("%s.null", p);
        if (i < 0)
            perr(c, np, "must be \"send\", \"omit\", \"default\" or \"error\"");
        else if (!src)
            perr(c, np, "applies to a \"source\" column only");
        else
            m->null_rule = (enum dw_null_rule)i;
        if (i == DW_NULL_DEFAULT && !df)
            perr(c, np, "\"default\" needs a \"default\" value");
        free(np);
    }
    if (df && !src)
        perr(c, p, "\"default\" applies to a \"source\" column only (use \"constant\")");
    parse_type(c, p, o, &m->has_type, &m->type);
    if (m->has_type && lk)
        perr(c, p, "a lookup has no \"type\"");
}

/* --- filters --------------------------------------------------------------------------- */

static void filter_free(struct dw_filter *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->nargs; i++)
        filter_free(f->args[i]);
    free(f->args);
    free(f->column);
    json_decref(f->value);
    free(f);
}

static struct dw_filter *parse_filter(struct pctx *c, const char *path, const json_t *v, int depth)
{
    static const char *const allowed_bool[] = {"and", "or", "not", NULL};
    static const char *const allowed_cmp[] = {"column", "op", "value", NULL};
    if (!json_is_object(v)) {
        perr(c, path, "a filter is an object: {\"column\", \"op\", \"value\"} or and/or/not");
        return NULL;
    }
    if (depth > 16) {
        perr(c, path, "filters nest at most 16 deep");
        return NULL;
    }
    struct dw_filter *f = dw_calloc(1, sizeof *f);
    json_t *a;
    if ((a = json_object_get(v, "and")) || (a = json_object_get(v, "or"))) {
        f->op = json_object_get(v, "and") ? DW_F_AND : DW_F_OR;
        check_keys(c, path, v, allowed_bool);
        if (json_object_size(v) != 1)
            perr(c, path, "use one of \"and\", \"or\", \"not\" per object");
        const char *opname = f->op == DW_F_AND ? "and" : "or";
        if (!json_is_array(a) || json_array_size(a) == 0) {
            perr(c, path, "\"%s\" must be a non-empty array of filters", opname);
            return f;
        }
        f->nargs = json_array_size(a);
        f->args = dw_calloc(f->nargs, sizeof *f->args);
        for (size_t i = 0; i < f->nargs; i++) {
            char *p = dw_asprintf("%s.%s[%zu]", path, opname, i);
            f->args[i] = parse_filter(c, p, json_array_get(a, i), depth + 1);
            free(p);
        }
        return f;
    }
    if ((a = json_object_get(v, "not"))) {
        f->op = DW_F_NOT;
        check_keys(c, path, v, allowed_bool);
        f->nargs = 1;
        f->args = dw_calloc(1, sizeof *f->args);
        char *p = dw_asprintf("%s.not", path);
        f->args[0] = parse_filter(c, p, a, depth + 1);
        free(p);
        return f;
    }
    check_keys(c, path, v, allowed_cmp);
    f->column = req_string(c, path, v, "column");
    json_t *op = json_object_get(v, "op");
    int i =
        json_is_string(op) ? name_index(filter_ops, NELEM(filter_ops), json_string_value(op)) : -1;
    if (i < DW_F_EQ) {
        perr(c, path,
             "\"op\" must be one of \"=\", \"!=\", \"<\", \"<=\", \">\", \">=\", \"in\", "
             "\"not in\", \"is null\", \"is not null\"");
        f->op = DW_F_IS_NULL;
        return f;
    }
    f->op = (enum dw_filter_op)i;
    json_t *val = json_object_get(v, "value");
    char *vp = dw_asprintf("%s.value", path);
    if (f->op == DW_F_IS_NULL || f->op == DW_F_IS_NOT_NULL) {
        if (val)
            perr(c, vp, "\"%s\" takes no value", filter_ops[i]);
    } else if (f->op == DW_F_IN || f->op == DW_F_NOT_IN) {
        bool ok = json_is_array(val) && json_array_size(val) > 0;
        for (size_t j = 0; ok && j < json_array_size(val); j++)
            ok = is_scalar(json_array_get(val, j));
        if (!ok)
            perr(c, vp, "\"%s\" needs a non-empty array of strings, numbers or booleans",
                 filter_ops[i]);
        else
            f->value = json_incref(val);
    } else if (!is_scalar(val)) {
        perr(c, vp, "must be a string, number or boolean (use \"is null\" for null)");
    } else {
        f->value = json_incref(val);
    }
    free(vp);
    return f;
}

/* --- maps, groups, job ----------------------------------------------------------------- */

static void tablemap_clear(struct dw_tablemap *m)
{
    free(m->name);
    free(m->group_name);
    free(m->source_schema);
    free(m->source_table);
    free(m->entity_set);
    free(m->logical_name);
    keyparts_free(m->key, m->nkey);
    for (size_t i = 0; i < m->ncols; i++)
        colmap_clear(&m->cols[i]);
    free(m->cols);
    filter_free(m->filter);
    json_decref(m->options);
}

/* options.write's "bypass_logic": a non-empty array of distinct CustomSync, CustomAsync. */
static void check_bypass_logic(struct pctx *c, const char *path, const json_t *v)
{
    static const char *const allowed[] = {"CustomSync", "CustomAsync"};
    bool seen[2] = {false, false};
    size_t i;
    json_t *item;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        perr(c, path, "must be a non-empty array of \"CustomSync\" and \"CustomAsync\"");
        return;
    }
    json_array_foreach(v, i, item)
    {
        int k = json_is_string(item) ? name_index(allowed, 2, json_string_value(item)) : -1;
        if (k < 0)
            perr(c, path, "item %zu must be \"CustomSync\" or \"CustomAsync\"", i);
        else if (seen[k])
            perr(c, path, "\"%s\" is listed twice", allowed[k]);
        else
            seen[k] = true;
    }
}

/*
 * Validates options.write (v may be NULL: no options) and returns it, borrowed from the
 * map's options, or NULL when absent or empty.
 */
static json_t *parse_write_options(struct pctx *c, const char *path, json_t *v)
{
    static const char *const allowed[] = {"bypass_logic", "suppress_duplicate_detection",
                                          "suppress_flows", "tag", NULL};
    if (v == NULL)
        return NULL;
    if (!json_is_object(v)) {
        perr(c, path, "must be an object");
        return NULL;
    }
    check_keys(c, path, v, allowed);
    json_t *logic = json_object_get(v, "bypass_logic");
    if (logic) {
        char *lp = dw_asprintf("%s.bypass_logic", path);
        check_bypass_logic(c, lp, logic);
        free(lp);
    }
    for (size_t i = 1; i <= 2; i++) {
        json_t *flag = json_object_get(v, allowed[i]);
        if (flag && !json_is_boolean(flag))
            perr(c, path, "\"%s\" must be true or false", allowed[i]);
    }
    json_t *tag = json_object_get(v, "tag");
    if (tag && !(json_is_string(tag) && dw_write_tag_ok(json_string_value(tag))))
        perr(c, path,
             "\"tag\" must be 1 to %d letters, digits, '_', '.' or '-' (it is sent as a query "
             "option)",
             DW_WRITE_TAG_MAX);
    return json_object_size(v) ? v : NULL;
}

/* The source of the first company part inside the lookups of a key, or NULL. */
static const char *nested_company(const struct dw_keypart *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (parts[i].kind == DW_KEYPART_COMPANY)
            return parts[i].source;
        if (parts[i].lookup) {
            const char *s = nested_company(parts[i].lookup->key, parts[i].lookup->nkey);
            if (s)
                return s;
        }
    }
    return NULL;
}

static void parse_map(struct pctx *c, const char *p, const json_t *o, struct dw_tablemap *m)
{
    static const char *const allowed[] = {"name",    "sequence", "source",  "target", "key",
                                          "columns", "filter",   "options", NULL};
    static const char *const src_allowed[] = {"schema", "table", NULL};
    static const char *const tgt_allowed[] = {"entity_set", "logical_name", NULL};
    if (!json_is_object(o)) {
        perr(c, p, "must be an object");
        return;
    }
    check_keys(c, p, o, allowed);
    m->name = req_string(c, p, o, "name");
    json_t *seq = json_object_get(o, "sequence");
    if (!json_is_integer(seq) || json_integer_value(seq) < 0 || json_integer_value(seq) > 1000000) {
        perr(c, p, "\"sequence\" must be an integer from 0 to 1000000");
    } else {
        m->sequence = (int)json_integer_value(seq);
    }
    char *sp = dw_asprintf("%s.source", p);
    json_t *src = json_object_get(o, "source");
    if (!json_is_object(src)) {
        perr(c, sp, "must be an object with \"table\" (and \"schema\", default \"public\")");
    } else {
        check_keys(c, sp, src, src_allowed);
        m->source_schema = opt_string(c, sp, src, "schema");
        if (m->source_schema == NULL && json_object_get(src, "schema") == NULL)
            m->source_schema = dw_strdup("public");
        m->source_table = req_string(c, sp, src, "table");
    }
    free(sp);
    char *tp = dw_asprintf("%s.target", p);
    json_t *tgt = json_object_get(o, "target");
    if (!json_is_object(tgt)) {
        perr(c, tp, "must be an object with \"entity_set\" and \"logical_name\"");
    } else {
        check_keys(c, tp, tgt, tgt_allowed);
        m->entity_set = req_dvident(c, tp, tgt, "entity_set");
        m->logical_name = req_dvident(c, tp, tgt, "logical_name");
    }
    free(tp);
    char *kp = dw_asprintf("%s.key", p);
    if (json_object_get(o, "key") == NULL)
        perr(c, p, "\"key\" is required (the target's alternate key)");
    else
        m->key = parse_key(c, kp, json_object_get(o, "key"), &m->nkey, 0);
    free(kp);
    for (size_t i = 0; i < m->nkey; i++) {
        if (m->key[i].kind == DW_KEYPART_COMPANY) {
            if (m->company_source) {
                char *cp = dw_asprintf("%s.key[%zu]", p, i);
                perr(c, cp, "a key has at most one company part");
                free(cp);
            }
            m->company_source = m->key[i].source;
        }
    }
    /* A child keyed through its parent (an order line) is striped by the parent's company. */
    if (m->company_source == NULL)
        m->company_source = nested_company(m->key, m->nkey);
    json_t *cols = json_object_get(o, "columns");
    char *cp = dw_asprintf("%s.columns", p);
    if (cols && !json_is_array(cols)) {
        perr(c, cp, "must be an array");
    } else if (cols) {
        m->ncols = json_array_size(cols);
        m->cols = dw_calloc(m->ncols ? m->ncols : 1, sizeof *m->cols);
        for (size_t i = 0; i < m->ncols; i++) {
            char *ip = dw_asprintf("%s[%zu]", cp, i);
            parse_column(c, ip, json_array_get(cols, i), &m->cols[i]);
            for (size_t j = 0; j < i && m->cols[i].target; j++) {
                if (m->cols[j].target && strcasecmp(m->cols[j].target, m->cols[i].target) == 0)
                    perr(c, ip, "target \"%s\" is already mapped by columns[%zu]",
                         m->cols[i].target, j);
            }
            for (size_t j = 0; j < m->nkey && m->cols[i].target; j++) {
                if (m->key[j].target && strcasecmp(m->key[j].target, m->cols[i].target) == 0)
                    perr(c, ip, "target \"%s\" is a key attribute: map it in \"key\" only",
                         m->cols[i].target);
            }
            free(ip);
        }
    }
    free(cp);
    json_t *flt = json_object_get(o, "filter");
    if (flt && !json_is_null(flt)) {
        char *fp = dw_asprintf("%s.filter", p);
        m->filter = parse_filter(c, fp, flt, 0);
        free(fp);
    }
    json_t *opts = json_object_get(o, "options");
    if (opts && !json_is_object(opts)) {
        char *op = dw_asprintf("%s.options", p);
        perr(c, op, "must be an object");
        free(op);
    }
    m->options = json_is_object(opts) ? json_deep_copy(opts) : json_object();
    json_t *atomic = json_object_get(m->options, "atomic");
    if (atomic && !json_is_boolean(atomic)) {
        char *ap = dw_asprintf("%s.options.atomic", p);
        perr(c, ap, "must be true or false");
        free(ap);
    }
    m->atomic = json_is_true(atomic);
    char *wp = dw_asprintf("%s.options.write", p);
    m->write_options = parse_write_options(c, wp, json_object_get(m->options, "write"));
    free(wp);
}

/*
 * A Dataverse table is written either inside atomic groups or outside them: a row written
 * by both kinds of map could be sent twice at once from one window, out of commit order.
 */
static void check_atomic_sets(struct pctx *c, const struct dw_jobdef *def)
{
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            bool reported = false;
            for (size_t h = 0; h <= g && !reported && m->entity_set; h++) {
                for (size_t j = 0; j < (h == g ? i : def->groups[h].nmaps) && !reported; j++) {
                    const struct dw_tablemap *o = &def->groups[h].maps[j];
                    if (o->entity_set && strcmp(o->entity_set, m->entity_set) == 0 &&
                        o->atomic != m->atomic) {
                        char *p = dw_asprintf("$.groups[%zu].maps[%zu].options.atomic", g, i);
                        perr(c, p,
                             "maps \"%s\" (atomic %s) and \"%s\" (atomic %s) both write "
                             "\"%s\": maps that write one Dataverse table must agree on "
                             "\"atomic\"",
                             m->name ? m->name : "", m->atomic ? "true" : "false",
                             o->name ? o->name : "", o->atomic ? "true" : "false", m->entity_set);
                        free(p);
                        reported = true;
                    }
                }
            }
        }
    }
}

static int cmp_map_seq(const void *a, const void *b)
{
    const struct dw_tablemap *x = a, *y = b;
    return (x->sequence > y->sequence) - (x->sequence < y->sequence);
}

void dw_jobdef_free(struct dw_jobdef *def)
{
    if (def == NULL)
        return;
    free(def->name);
    free(def->environment_url);
    for (size_t i = 0; i < def->nlegal_entities; i++)
        free(def->legal_entities[i]);
    free(def->legal_entities);
    json_decref(def->options);
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++)
            tablemap_clear(&def->groups[g].maps[i]);
        free(def->groups[g].maps);
        free(def->groups[g].name);
    }
    free(def->groups);
    free(def);
}

static void parse_job(struct pctx *c, const json_t *job, struct dw_jobdef *def)
{
    static const char *const allowed[] = {"name", "environment_url", "legal_entities", "options",
                                          NULL};
    if (!json_is_object(job)) {
        perr(c, "$.job", "must be an object with \"name\"");
        return;
    }
    check_keys(c, "$.job", job, allowed);
    def->name = req_string(c, "$.job", job, "name");
    if (def->name) {
        bool ok = strlen(def->name) <= 48 && def->name[0] >= 'a' && def->name[0] <= 'z';
        for (const char *s = def->name; ok && *s; s++)
            ok = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_';
        if (!ok)
            perr(c, "$.job.name",
                 "must start with a lower-case letter and hold only a-z, 0-9 and _ (at most "
                 "48)");
    }
    json_t *url = json_object_get(job, "environment_url");
    if (url && !json_is_string(url))
        perr(c, "$.job.environment_url", "must be a string");
    def->environment_url = dw_strdup(json_is_string(url) ? json_string_value(url) : "");
    json_t *le = json_object_get(job, "legal_entities");
    if (le && !json_is_array(le)) {
        perr(c, "$.job.legal_entities", "must be an array of legal entity codes (dataAreaId)");
    } else if (le) {
        def->legal_entities = dw_calloc(json_array_size(le) + 1, sizeof(char *));
        for (size_t i = 0; i < json_array_size(le); i++) {
            json_t *e = json_array_get(le, i);
            char *p = dw_asprintf("$.job.legal_entities[%zu]", i);
            if (!json_is_string(e) || !is_ident_ok(json_string_value(e))) {
                perr(c, p, "must be a non-empty string");
            } else {
                for (size_t j = 0; j < def->nlegal_entities; j++)
                    if (strcmp(def->legal_entities[j], json_string_value(e)) == 0)
                        perr(c, p, "\"%s\" is listed twice", json_string_value(e));
                def->legal_entities[def->nlegal_entities++] = dw_strdup(json_string_value(e));
            }
            free(p);
        }
    }
    json_t *opts = json_object_get(job, "options");
    if (opts && !json_is_object(opts))
        perr(c, "$.job.options", "must be an object");
    def->options = json_is_object(opts) ? json_deep_copy(opts) : json_object();
}

dw_rc dw_jobdef_parse(const json_t *doc, struct dw_buf *errors, struct dw_jobdef **out)
{
    static const char *const allowed[] = {"format", "job", "groups", NULL};
    struct pctx c = {errors, 0};
    struct dw_jobdef *def = dw_calloc(1, sizeof *def);
    if (!json_is_object(doc)) {
        perr(&c, "$", "a map file is a JSON object with \"format\", \"job\" and \"groups\"");
        goto out;
    }
    check_keys(&c, "$", doc, allowed);
    json_t *fmt = json_object_get(doc, "format");
    if (!json_is_integer(fmt) || json_integer_value(fmt) != DW_MAPFILE_FORMAT)
        perr(&c, "$.format", "must be %d (this dwasync reads map file format %d)",
             DW_MAPFILE_FORMAT, DW_MAPFILE_FORMAT);
    parse_job(&c, json_object_get(doc, "job"), def);
    json_t *groups = json_object_get(doc, "groups");
    if (!json_is_array(groups) || json_array_size(groups) == 0) {
        perr(&c, "$.groups", "must be a non-empty array of table groups");
        goto out;
    }
    def->ngroups = json_array_size(groups);
    def->groups = dw_calloc(def->ngroups, sizeof *def->groups);
    for (size_t g = 0; g < def->ngroups; g++) {
        static const char *const gallowed[] = {"name", "maps", NULL};
        struct dw_mapgroup *grp = &def->groups[g];
        char *gp = dw_asprintf("$.groups[%zu]", g);
        const json_t *go = json_array_get(groups, g);
        if (!json_is_object(go)) {
            perr(&c, gp, "must be an object with \"name\" and \"maps\"");
            free(gp);
            continue;
        }
        check_keys(&c, gp, go, gallowed);
        grp->name = req_string(&c, gp, go, "name");
        for (size_t j = 0; j < g && grp->name; j++)
            if (def->groups[j].name && strcmp(def->groups[j].name, grp->name) == 0)
                perr(&c, gp, "group name \"%s\" is used twice", grp->name);
        json_t *maps = json_object_get(go, "maps");
        char *mp = dw_asprintf("%s.maps", gp);
        if (!json_is_array(maps) || json_array_size(maps) == 0) {
            perr(&c, mp, "must be a non-empty array of table maps");
        } else {
            grp->nmaps = json_array_size(maps);
            grp->maps = dw_calloc(grp->nmaps, sizeof *grp->maps);
            for (size_t i = 0; i < grp->nmaps; i++) {
                char *ip = dw_asprintf("%s[%zu]", mp, i);
                parse_map(&c, ip, json_array_get(maps, i), &grp->maps[i]);
                grp->maps[i].group_name = dw_strdup(grp->name ? grp->name : "");
                for (size_t j = 0; j < i; j++)
                    if (json_is_integer(json_object_get(json_array_get(maps, i), "sequence")) &&
                        grp->maps[j].sequence == grp->maps[i].sequence)
                        perr(&c, ip, "sequence %d is already used by maps[%zu] of this group",
                             grp->maps[i].sequence, j);
                free(ip);
            }
        }
        free(mp);
        free(gp);
    }
    /* Map names are unique in a job: errors, replays and export refer to maps by name. */
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const char *n = def->groups[g].maps[i].name;
            bool dup = false;
            for (size_t h = 0; h <= g && !dup && n; h++)
                for (size_t j = 0; j < (h == g ? i : def->groups[h].nmaps) && !dup; j++)
                    dup =
                        def->groups[h].maps[j].name && strcmp(def->groups[h].maps[j].name, n) == 0;
            if (dup) {
                char *p = dw_asprintf("$.groups[%zu].maps[%zu].name", g, i);
                perr(&c, p, "map name \"%s\" is used twice in the job", n);
                free(p);
            }
        }
    }
    check_atomic_sets(&c, def);
out:
    if (c.nerrors > 0) {
        dw_jobdef_free(def);
        return DW_ERR_INVALID;
    }
    for (size_t g = 0; g < def->ngroups; g++)
        qsort(def->groups[g].maps, def->groups[g].nmaps, sizeof(struct dw_tablemap), cmp_map_seq);
    /* qsort moved the maps: company_source borrows from the moved key parts, still valid. */
    *out = def;
    return DW_OK;
}

dw_rc dw_jobdef_load_file(const char *path, struct dw_buf *errors, struct dw_jobdef **out)
{
    struct dw_buf text;
    json_t *doc = NULL;
    dw_rc rc = DW_ERR_INVALID;
    dw_buf_init(&text, DW_MAPFILE_MAX_SIZE);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        (void)dw_buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        (void)dw_buf_printf(errors, "%s: not a regular file\n", path);
        goto out;
    }
    char chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            (void)dw_buf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
            goto out;
        }
        if (dw_buf_append(&text, chunk, (size_t)n) != DW_OK) {
            (void)dw_buf_printf(errors, "%s: larger than %zu MiB: not a map file\n", path,
                                DW_MAPFILE_MAX_SIZE >> 20);
            goto out;
        }
    }
    json_error_t jerr;
    doc = json_loadb(text.data ? text.data : "", text.len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        (void)dw_buf_printf(errors, "%s:%d:%d: %s\n", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    rc = dw_jobdef_parse(doc, errors, out);
out:
    if (fd >= 0)
        close(fd);
    json_decref(doc);
    dw_buf_cleanup(&text);
    return rc;
}

size_t dw_jobdef_map_count(const struct dw_jobdef *def)
{
    size_t n = 0;
    for (size_t g = 0; g < def->ngroups; g++)
        n += def->groups[g].nmaps;
    return n;
}

const struct dw_tablemap *dw_jobdef_find_map(const struct dw_jobdef *def, const char *name)
{
    for (size_t g = 0; g < def->ngroups; g++)
        for (size_t i = 0; i < def->groups[g].nmaps; i++)
            if (strcmp(def->groups[g].maps[i].name, name) == 0)
                return &def->groups[g].maps[i];
    return NULL;
}

/* --- normal form ----------------------------------------------------------------------- */

static json_t *key_to_json(const struct dw_keypart *parts, size_t n);

static json_t *lookup_to_json(const struct dw_lookup *l)
{
    json_t *o = json_object();
    json_object_set_new(o, "entity_set", json_string(l->entity_set));
    json_object_set_new(o, "logical_name", json_string(l->logical_name));
    json_object_set_new(o, "key", key_to_json(l->key, l->nkey));
    return o;
}

static json_t *key_to_json(const struct dw_keypart *parts, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct dw_keypart *kp = &parts[i];
        json_t *o = json_object();
        json_object_set_new(o, "target", json_string(kp->target));
        if (kp->kind == DW_KEYPART_COLUMN) {
            json_object_set_new(o, "source", json_string(kp->source));
            if (kp->has_type)
                json_object_set_new(o, "type", json_string(dw_mapfile_type_name(kp->type)));
        } else if (kp->kind == DW_KEYPART_COMPANY) {
            json_object_set_new(o, "company", json_string(kp->source));
        } else {
            json_object_set_new(o, "lookup", lookup_to_json(kp->lookup));
        }
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *filter_to_json(const struct dw_filter *f)
{
    json_t *o = json_object();
    if (f->op == DW_F_AND || f->op == DW_F_OR) {
        json_t *a = json_array();
        for (size_t i = 0; i < f->nargs; i++)
            json_array_append_new(a, filter_to_json(f->args[i]));
        json_object_set_new(o, f->op == DW_F_AND ? "and" : "or", a);
    } else if (f->op == DW_F_NOT) {
        json_object_set_new(o, "not", filter_to_json(f->args[0]));
    } else {
        json_object_set_new(o, "column", json_string(f->column));
        json_object_set_new(o, "op", json_string(filter_ops[f->op]));
        if (f->value)
            json_object_set_new(o, "value", json_deep_copy(f->value));
    }
    return o;
}

static json_t *column_to_json(const struct dw_colmap *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "target", json_string(m->target));
    json_object_set_new(o, "direction", json_string(dir_names[m->direction]));
    if (m->source)
        json_object_set_new(o, "source", json_string(m->source));
    if (m->constant)
        json_object_set_new(o, "constant", json_deep_copy(m->constant));
    if (m->lookup) {
        if (m->navigation)
            json_object_set_new(o, "navigation", json_string(m->navigation));
        json_object_set_new(o, "lookup", lookup_to_json(m->lookup));
    }
    if (m->has_type)
        json_object_set_new(o, "type", json_string(dw_mapfile_type_name(m->type)));
    if (m->value_map) {
        json_object_set_new(o, "value_map", json_deep_copy(m->value_map));
        json_object_set_new(o, "unmapped", json_string(unmapped_names[m->unmapped]));
    }
    if (m->source)
        json_object_set_new(o, "null", json_string(null_names[m->null_rule]));
    if (m->deflt)
        json_object_set_new(o, "default", json_deep_copy(m->deflt));
    return o;
}

json_t *dw_jobdef_to_json(const struct dw_jobdef *def)
{
    json_t *doc = json_object(), *job = json_object(), *groups = json_array();
    json_object_set_new(doc, "format", json_integer(DW_MAPFILE_FORMAT));
    json_object_set_new(job, "name", json_string(def->name));
    json_object_set_new(job, "environment_url", json_string(def->environment_url));
    json_t *le = json_array();
    for (size_t i = 0; i < def->nlegal_entities; i++)
        json_array_append_new(le, json_string(def->legal_entities[i]));
    json_object_set_new(job, "legal_entities", le);
    json_object_set_new(job, "options", json_deep_copy(def->options));
    json_object_set_new(doc, "job", job);
    for (size_t g = 0; g < def->ngroups; g++) {
        json_t *go = json_object(), *maps = json_array();
        json_object_set_new(go, "name", json_string(def->groups[g].name));
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            json_t *mo = json_object(), *src = json_object(), *tgt = json_object(),
                   *cols = json_array();
            json_object_set_new(mo, "name", json_string(m->name));
            json_object_set_new(mo, "sequence", json_integer(m->sequence));
            json_object_set_new(src, "schema", json_string(m->source_schema));
            json_object_set_new(src, "table", json_string(m->source_table));
            json_object_set_new(mo, "source", src);
            json_object_set_new(tgt, "entity_set", json_string(m->entity_set));
            json_object_set_new(tgt, "logical_name", json_string(m->logical_name));
            json_object_set_new(mo, "target", tgt);
            json_object_set_new(mo, "key", key_to_json(m->key, m->nkey));
            for (size_t k = 0; k < m->ncols; k++)
                json_array_append_new(cols, column_to_json(&m->cols[k]));
            json_object_set_new(mo, "columns", cols);
            if (m->filter)
                json_object_set_new(mo, "filter", filter_to_json(m->filter));
            json_object_set_new(mo, "options", json_deep_copy(m->options));
            json_array_append_new(maps, mo);
        }
        json_object_set_new(go, "maps", maps);
        json_array_append_new(groups, go);
    }
    json_object_set_new(doc, "groups", groups);
    return doc;
}

char *dw_jobdef_dump(const struct dw_jobdef *def)
{
    json_t *doc = dw_jobdef_to_json(def);
    /* Indented for diffs in version control; DW_JSON_FLAGS' real precision still applies. */
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(DW_JSON_REAL_DIGITS));
    json_decref(doc);
    if (s == NULL)
        dw_oom(0);
    char *text = dw_asprintf("%s\n", s);
    free(s);
    return text;
}

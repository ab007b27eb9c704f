/* dvemu's FetchXML subset ("Query data using FetchXml", "Page results using FetchXml"):
 * GET <set>?fetchXml=<url-encoded XML> with one <entity> (the set's table), <attribute>,
 * <all-attributes>, <filter type="and|or"> (nested) of <condition> (eq, ne, neq, like,
 * not-like, in, not-in, null, not-null, gt, ge, lt, le), <order>, and the fetch attributes
 * top, count, page and paging-cookie. Anything else (link-entity, aggregates, other
 * operators) answers 501 in Dataverse's error shape, never a 2xx that means something else.
 *
 * The XML is read by a small parser written here for this subset (elements, attributes in
 * either quote, self-closing tags, <value> text, comments, the prolog and the five predefined
 * entities): FetchXML needs nothing more, and libxml2 would be a new dependency of the
 * project's only server for one query option. Runs under emu->store_lock. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "internal.h"

#define FX_MAX_DEPTH 32
#define FX_PAGE_MAX  5000
#define FX_COUNT_MAX 5000 /* returntotalrecordcount counts up to this many rows */

struct fx_node {
    char *name;
    char **keys, **vals;
    size_t nattrs;
    char *text; /* character data directly inside, entities decoded */
    struct fx_node **kids;
    size_t nkids;
};

static void node_free(struct fx_node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nattrs; i++) {
        free(n->keys[i]);
        free(n->vals[i]);
    }
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->keys);
    free(n->vals);
    free(n->kids);
    free(n->name);
    free(n->text);
    free(n);
}

static const char *attr_of(const struct fx_node *n, const char *key)
{
    for (size_t i = 0; i < n->nattrs; i++)
        if (strcmp(n->keys[i], key) == 0)
            return n->vals[i];
    return NULL;
}

/* --- the parser ------------------------------------------------------------------------ */

struct fx_parser {
    const char *p;
    char *err; /* heap: what is wrong, set once */
};

static void perr(struct fx_parser *ps, const char *what)
{
    if (ps->err == NULL && *ps->p == '\0')
        ps->err = dw_asprintf("%s at the end", what);
    else if (ps->err == NULL)
        ps->err = dw_asprintf("%s near '%.20s'", what, ps->p);
}

static void skip_blanks(struct fx_parser *ps)
{
    while (isspace((unsigned char)*ps->p))
        ps->p++;
}

/* Skips blanks, comments and processing instructions (the prolog). */
static void skip_misc(struct fx_parser *ps)
{
    for (;;) {
        skip_blanks(ps);
        const char *end = NULL;
        if (strncmp(ps->p, "<!--", 4) == 0)
            end = strstr(ps->p + 4, "-->");
        else if (strncmp(ps->p, "<?", 2) == 0)
            end = strstr(ps->p + 2, "?>");
        else
            return;
        if (end == NULL) {
            perr(ps, "unterminated comment or declaration");
            return;
        }
        ps->p = end + (ps->p[1] == '!' ? 3 : 2);
    }
}

/* Decodes s[0..len) with the predefined entities and numeric references (ASCII only). */
static char *decode(struct fx_parser *ps, const char *s, size_t len)
{
    static const char *const names[] = {"&lt;", "&gt;", "&amp;", "&quot;", "&apos;"};
    static const char chars[] = "<>&\"'";
    char *out = dw_malloc(len + 1), *o = out;
    for (size_t i = 0; i < len;) {
        if (s[i] != '&') {
            *o++ = s[i++];
            continue;
        }
        size_t k;
        for (k = 0; k < 5; k++)
            if (strncmp(s + i, names[k], strlen(names[k])) == 0)
                break;
        if (k < 5) {
            *o++ = chars[k];
            i += strlen(names[k]);
        } else if (s[i + 1] == '#') {
            char *end;
            long c = s[i + 2] == 'x' ? strtol(s + i + 3, &end, 16) : strtol(s + i + 2, &end, 10);
            if (*end != ';' || c <= 0 || c > 127) {
                perr(ps, "unsupported character reference");
                break;
            }
            *o++ = (char)c;
            i = (size_t)(end - s) + 1;
        } else {
            perr(ps, "unknown entity");
            break;
        }
    }
    *o = '\0';
    return out;
}

static size_t name_len(const char *p)
{
    size_t n = 0;
    while (isalnum((unsigned char)p[n]) || p[n] == '-' || p[n] == '_' || p[n] == ':' || p[n] == '.')
        n++;
    return n;
}

static struct fx_node *parse_element(struct fx_parser *ps, int depth);

/* Reads attributes up to '>' or '/>'; true when the element is self-closing. */
static bool parse_attrs(struct fx_parser *ps, struct fx_node *n)
{
    for (;;) {
        skip_blanks(ps);
        if (strncmp(ps->p, "/>", 2) == 0) {
            ps->p += 2;
            return true;
        }
        if (*ps->p == '>') {
            ps->p++;
            return false;
        }
        size_t kl = name_len(ps->p);
        const char *k = ps->p;
        ps->p += kl;
        skip_blanks(ps);
        if (kl == 0 || *ps->p != '=') {
            perr(ps, "malformed attribute");
            return true;
        }
        ps->p++;
        skip_blanks(ps);
        char q = *ps->p;
        if (q != '\'' && q != '"') {
            perr(ps, "an attribute value needs quotes");
            return true;
        }
        const char *v = ps->p + 1, *end = strchr(v, q);
        if (end == NULL) {
            perr(ps, "unterminated attribute value");
            return true;
        }
        n->keys = dw_realloc(n->keys, (n->nattrs + 1) * sizeof *n->keys);
        n->vals = dw_realloc(n->vals, (n->nattrs + 1) * sizeof *n->vals);
        n->keys[n->nattrs] = dw_strndup(k, kl);
        n->vals[n->nattrs++] = decode(ps, v, (size_t)(end - v));
        ps->p = end + 1;
    }
}

static struct fx_node *parse_element(struct fx_parser *ps, int depth)
{
    skip_misc(ps);
    size_t nl = *ps->p == '<' ? name_len(ps->p + 1) : 0;
    if (nl == 0 || depth > FX_MAX_DEPTH) {
        perr(ps, depth > FX_MAX_DEPTH ? "elements nested too deep" : "expected an element");
        return NULL;
    }
    struct fx_node *n = dw_calloc(1, sizeof *n);
    n->name = dw_strndup(ps->p + 1, nl);
    ps->p += 1 + nl;
    if (parse_attrs(ps, n) || ps->err)
        return n;
    for (;;) {
        const char *text = ps->p;
        while (*ps->p && *ps->p != '<')
            ps->p++;
        size_t tl = (size_t)(ps->p - text);
        while (tl > 0 && isspace((unsigned char)*text)) {
            text++;
            tl--;
        }
        while (tl > 0 && isspace((unsigned char)text[tl - 1]))
            tl--;
        if (tl > 0 && n->text == NULL)
            n->text = decode(ps, text, tl);
        if (*ps->p == '\0') {
            perr(ps, "unterminated element");
            return n;
        }
        if (strncmp(ps->p, "<!--", 4) == 0) {
            skip_misc(ps);
            continue;
        }
        if (ps->p[1] == '/') {
            if (strncmp(ps->p + 2, n->name, nl) != 0 || ps->p[2 + nl] != '>') {
                perr(ps, "mismatched end tag");
                return n;
            }
            ps->p += 3 + nl;
            return n;
        }
        struct fx_node *kid = parse_element(ps, depth + 1);
        if (kid) {
            n->kids = dw_realloc(n->kids, (n->nkids + 1) * sizeof *n->kids);
            n->kids[n->nkids++] = kid;
        }
        if (ps->err)
            return n;
    }
}

/* Parses a whole document; NULL with *why (heap) on error. */
static struct fx_node *fx_parse(const char *xml, char **why)
{
    struct fx_parser ps = {xml, NULL};
    struct fx_node *root = parse_element(&ps, 0);
    skip_misc(&ps);
    if (ps.err == NULL && *ps.p != '\0')
        perr(&ps, "content after the document element");
    if (ps.err) {
        node_free(root);
        *why = ps.err;
        return NULL;
    }
    return root;
}

/* --- the query ------------------------------------------------------------------------- */

struct fx_query {
    struct emu_table *t;
    const struct fx_node *entity;
    json_t *select; /* property names, NULL: all */
};

static void err_unsupported(struct emu_err *err, const char *what)
{
    emu_err_set(err, 501, "0x80060888",
                "dvemu does not emulate %s in FetchXml; see dvemu(1), \"FetchXml\".", what);
}

static void err_no_attribute(struct emu_err *err, const struct emu_table *t, const char *name)
{
    emu_err_set(err, 400, "0x80041103",
                "'%s' entity doesn't contain attribute with Name = '%s' and NameMapping = "
                "'Logical'.",
                t->logical, name ? name : "");
}

static const struct emu_attr *fx_attr(const struct fx_query *q, const struct fx_node *n,
                                      struct emu_err *err)
{
    const char *name = attr_of(n, "attribute");
    const struct emu_attr *a = name ? emu_attr_find(q->t, name) : NULL;
    if (a == NULL)
        err_no_attribute(err, q->t, name);
    return a;
}

/* A condition's value as the attribute's JSON type, for emu_value_cmp. */
static json_t *typed_value(const struct emu_attr *a, const char *s)
{
    switch (a->type) {
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE:
    case DW_ATTR_PICKLIST:
        return json_real(strtod(s, NULL));
    case DW_ATTR_BOOLEAN:
        return json_boolean(strcmp(s, "1") == 0 || strcasecmp(s, "true") == 0);
    default:
        return json_string(s);
    }
}

/* SQL LIKE with % and _, case-insensitive (Dataverse's collation). Backtracks to the last %
 * only, so a hostile pattern costs at most length(s) x length(pat) steps. */
static bool like(const char *s, const char *pat)
{
    const char *star = NULL, *resume = s;
    while (*s) {
        if (*pat == '_' ||
            (*pat && *pat != '%' && tolower((unsigned char)*pat) == tolower((unsigned char)*s))) {
            s++;
            pat++;
        } else if (*pat == '%') {
            star = pat++;
            resume = s;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '%')
        pat++;
    return *pat == '\0';
}

static const char *const fx_ops[] = {"eq",   "ne",       "neq", "gt",     "ge",   "lt",      "le",
                                     "like", "not-like", "in",  "not-in", "null", "not-null"};

/* Checks a <filter> tree once, before any row is read. */
static dw_rc check_filter(const struct fx_query *q, const struct fx_node *f, struct emu_err *err)
{
    const char *type = attr_of(f, "type");
    if (type && strcmp(type, "and") != 0 && strcmp(type, "or") != 0) {
        err_unsupported(err, "a filter type other than and/or");
        return DW_ERR_UNSUPPORTED;
    }
    for (size_t i = 0; i < f->nkids; i++) {
        const struct fx_node *c = f->kids[i];
        if (strcmp(c->name, "filter") == 0) {
            if (check_filter(q, c, err) != DW_OK)
                return DW_ERR_INVALID;
            continue;
        }
        if (strcmp(c->name, "condition") != 0 || attr_of(c, "entityname")) {
            err_unsupported(err, strcmp(c->name, "condition") == 0 ? "a condition on a linked "
                                                                     "entity"
                                                                   : "this element in a filter");
            return DW_ERR_UNSUPPORTED;
        }
        if (fx_attr(q, c, err) == NULL)
            return DW_ERR_INVALID;
        const char *op = attr_of(c, "operator");
        bool known = false;
        for (size_t k = 0; op && k < sizeof fx_ops / sizeof *fx_ops; k++)
            known |= strcmp(op, fx_ops[k]) == 0;
        if (!known) {
            char *what = dw_asprintf("the condition operator '%s'", op ? op : "");
            err_unsupported(err, what);
            free(what);
            return DW_ERR_UNSUPPORTED;
        }
        bool valueless = strcmp(op, "null") == 0 || strcmp(op, "not-null") == 0;
        bool listed = strcmp(op, "in") == 0 || strcmp(op, "not-in") == 0;
        bool has_value = listed ? c->nkids > 0 : attr_of(c, "value") || c->nkids == 1;
        if (!valueless && !has_value) {
            emu_err_set(err, 400, "0x80040203",
                        "Condition for attribute '%s.%s': null is not a valid value for an "
                        "operator. Use the 'Null' or 'NotNull' operators instead.",
                        q->t->logical, attr_of(c, "attribute"));
            return DW_ERR_INVALID;
        }
    }
    return DW_OK;
}

static bool match_condition(const struct fx_query *q, const struct fx_node *c, const json_t *row)
{
    struct emu_err ignored = {0};
    const struct emu_attr *a = fx_attr(q, c, &ignored);
    const char *op = attr_of(c, "operator");
    const json_t *v = json_object_get(row, a->prop);
    bool null = v == NULL || json_is_null(v);
    if (strcmp(op, "null") == 0 || strcmp(op, "not-null") == 0)
        return null == (strcmp(op, "null") == 0);
    if (strcmp(op, "in") == 0 || strcmp(op, "not-in") == 0) {
        bool in = false;
        for (size_t i = 0; i < c->nkids && !null && !in; i++) {
            json_t *x = typed_value(a, c->kids[i]->text ? c->kids[i]->text : "");
            in = emu_value_cmp(v, x) == 0;
            json_decref(x);
        }
        return !null && in == (strcmp(op, "in") == 0);
    }
    const char *value = attr_of(c, "value");
    if (value == NULL && c->nkids == 1)
        value = c->kids[0]->text;
    if (null || value == NULL)
        return false; /* a comparison with null is unknown: no row */
    if (strcmp(op, "like") == 0 || strcmp(op, "not-like") == 0)
        return json_is_string(v) && like(json_string_value(v), value) == (op[0] == 'l');
    json_t *x = typed_value(a, value);
    int r = emu_value_cmp(v, x);
    json_decref(x);
    if (strcmp(op, "eq") == 0)
        return r == 0;
    if (strcmp(op, "ne") == 0 || strcmp(op, "neq") == 0)
        return r != 0;
    if (strcmp(op, "gt") == 0)
        return r > 0;
    if (strcmp(op, "ge") == 0)
        return r >= 0;
    if (strcmp(op, "lt") == 0)
        return r < 0;
    return r <= 0;
}

static bool match_filter(const struct fx_query *q, const struct fx_node *f, const json_t *row)
{
    bool any = attr_of(f, "type") && strcmp(attr_of(f, "type"), "or") == 0;
    for (size_t i = 0; i < f->nkids; i++) {
        const struct fx_node *c = f->kids[i];
        bool m =
            strcmp(c->name, "filter") == 0 ? match_filter(q, c, row) : match_condition(q, c, row);
        if (m == any)
            return any;
    }
    return !any || f->nkids == 0;
}

/* Reads <entity>'s children: attributes into q->select; orders and filters are checked. */
static dw_rc check_entity(struct fx_query *q, struct emu_err *err)
{
    bool all = false;
    for (size_t i = 0; i < q->entity->nkids; i++) {
        const struct fx_node *c = q->entity->kids[i];
        if (strcmp(c->name, "all-attributes") == 0) {
            all = true;
        } else if (strcmp(c->name, "attribute") == 0) {
            const char *name = attr_of(c, "name");
            const struct emu_attr *a = name ? emu_attr_find(q->t, name) : NULL;
            if (a == NULL) {
                err_no_attribute(err, q->t, name);
                return DW_ERR_INVALID;
            }
            if (attr_of(c, "aggregate") || attr_of(c, "alias")) {
                err_unsupported(err, "aggregates and aliases");
                return DW_ERR_UNSUPPORTED;
            }
            if (q->select == NULL)
                q->select = json_array();
            json_array_append_new(q->select, json_string(a->prop));
        } else if (strcmp(c->name, "order") == 0) {
            const char *name = attr_of(c, "attribute");
            if (name == NULL || emu_attr_find(q->t, name) == NULL) {
                err_no_attribute(err, q->t, name);
                return DW_ERR_INVALID;
            }
        } else if (strcmp(c->name, "filter") == 0) {
            if (check_filter(q, c, err) != DW_OK)
                return DW_ERR_INVALID;
        } else {
            char *what = dw_asprintf("the element <%s>", c->name);
            err_unsupported(err, what);
            free(what);
            return DW_ERR_UNSUPPORTED;
        }
    }
    if (all) {
        json_decref(q->select);
        q->select = NULL;
    }
    return DW_OK;
}

static int order_rows(const void *pa, const void *pb, void *arg)
{
    const struct fx_query *q = arg;
    const json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
    for (size_t i = 0; i < q->entity->nkids; i++) {
        const struct fx_node *o = q->entity->kids[i];
        if (strcmp(o->name, "order") != 0)
            continue;
        const char *prop = emu_attr_find(q->t, attr_of(o, "attribute"))->prop;
        int r = emu_value_cmp(json_object_get(a, prop), json_object_get(b, prop));
        const char *desc = attr_of(o, "descending");
        if (r != 0)
            return desc && strcmp(desc, "true") == 0 ? -r : r;
    }
    return 0;
}

/* A fetch attribute that is a positive integer up to max; 0 when absent. */
static dw_rc fetch_number(const struct fx_node *fetch, const char *name, long max, long *out,
                          struct emu_err *err)
{
    const char *s = attr_of(fetch, name);
    *out = 0;
    if (s == NULL)
        return DW_OK;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || end == s || v < 1 || v > max) {
        emu_err_set(err, 400, "0x80040203",
                    "The value '%s' of the fetch attribute '%s' must be an integer from 1 to %ld.",
                    s, name, max);
        return DW_ERR_INVALID;
    }
    *out = v;
    return DW_OK;
}

/* The matching rows of q, ordered: a new array. */
static json_t *fetch_rows(const struct fx_query *q)
{
    const struct fx_node *filters[FX_MAX_DEPTH];
    size_t nf = 0;
    for (size_t i = 0; i < q->entity->nkids && nf < FX_MAX_DEPTH; i++)
        if (strcmp(q->entity->kids[i]->name, "filter") == 0)
            filters[nf++] = q->entity->kids[i];
    size_t n = 0;
    for (struct emu_row *r = q->t->rows; r; r = r->hh.next)
        n++;
    json_t **v = dw_malloc((n ? n : 1) * sizeof *v);
    n = 0;
    for (struct emu_row *r = q->t->rows; r; r = r->hh.next) {
        bool ok = true;
        for (size_t i = 0; i < nf && ok; i++)
            ok = match_filter(q, filters[i], r->data);
        if (ok)
            v[n++] = emu_row_public(q->t, r->data);
    }
    qsort_r(v, n, sizeof *v, order_rows, (void *)q);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, v[i]);
    free(v);
    return out;
}

/* Keeps the selected properties (and the id and etag) of each row. */
static void select_props(json_t *rows, const struct fx_query *q)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(row, tmp, k, v)
        {
            /* A FetchXml result leaves out the columns with no value, unlike OData's. */
            bool keep = strcmp(k, q->t->primary_id) == 0 || strcmp(k, "@odata.etag") == 0 ||
                        (q->select == NULL && !json_is_null(v));
            size_t j;
            json_t *s;
            json_array_foreach(q->select, j, s) keep |=
                !json_is_null(v) && strcmp(json_string_value(s), k) == 0;
            if (!keep)
                json_object_del(row, k);
        }
    }
}

void emu_fetchxml_answer(const struct emu_req *req, struct emu_table *t, const char *xml,
                         struct emu_resp *resp)
{
    struct emu_err err = {0};
    struct fx_query q = {.t = t};
    char *why = NULL;
    long top, count, page;
    struct fx_node *fetch = fx_parse(xml, &why);
    json_t *rows = NULL;
    if (fetch == NULL) {
        emu_err_set(&err, 400, "0x80040203", "The FetchXml is not well formed: %s.", why);
        goto out;
    }
    if (strcmp(fetch->name, "fetch") != 0 || fetch->nkids != 1 ||
        strcmp(fetch->kids[0]->name, "entity") != 0) {
        err_unsupported(&err, "a document other than <fetch> with one <entity>");
        goto out;
    }
    if (attr_of(fetch, "aggregate") || attr_of(fetch, "distinct")) {
        err_unsupported(&err, "aggregate and distinct queries");
        goto out;
    }
    q.entity = fetch->kids[0];
    const char *name = attr_of(q.entity, "name");
    if (name == NULL || strcmp(name, t->logical) != 0) {
        emu_err_set(&err, 400, "0x80040203",
                    "The entity name '%s' in the FetchXml does not match the entity set '%s' "
                    "(table '%s').",
                    name ? name : "", t->set, t->logical);
        goto out;
    }
    if (fetch_number(fetch, "top", FX_PAGE_MAX, &top, &err) != DW_OK ||
        fetch_number(fetch, "count", FX_PAGE_MAX, &count, &err) != DW_OK ||
        fetch_number(fetch, "page", 1000000, &page, &err) != DW_OK ||
        check_entity(&q, &err) != DW_OK)
        goto out;
    if (top && (count || page)) {
        emu_err_set(&err, 400, "0x80040203",
                    "The top attribute can't be specified with paging attribute page or count.");
        goto out;
    }
    const char *rtc = attr_of(fetch, "returntotalrecordcount");
    bool want_total = rtc && strcmp(rtc, "true") == 0;
    if (top && want_total) {
        emu_err_set(&err, 400, "0x80040203",
                    "The top attribute can't be specified with returntotalrecordcount.");
        goto out;
    }
    rows = fetch_rows(&q);
    size_t size = top ? (size_t)top : count ? (size_t)count : FX_PAGE_MAX;
    size_t skip = top ? 0 : ((size_t)(page ? page : 1) - 1) * size;
    size_t total = json_array_size(rows);
    bool more = !top && total > skip + size;
    json_t *value = json_array();
    for (size_t i = skip; i < total && i < skip + size; i++)
        json_array_append(value, json_array_get(rows, i));
    select_props(value, &q);
    char *ctx = dw_asprintf("%s" EMU_API_PREFIX "$metadata#%s", req->base, t->set);
    json_t *body = json_pack("{s:s}", "@odata.context", ctx);
    free(ctx);
    if (more) {
        /* "Page results using FetchXml": the cookie of the next page, and morerecords. */
        char *cookie = dw_asprintf("<cookie pagenumber=\"%zu\" pagingcookie=\"%%253ccookie%%2520"
                                   "page%%253d%%2522%zu%%2522%%253e%%253c%%252fcookie%%253e\" "
                                   "istracking=\"False\" />",
                                   skip / size + 2, skip / size + 1);
        json_object_set_new(body, "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie",
                            json_string(cookie));
        json_object_set_new(body, "@Microsoft.Dynamics.CRM.morerecords", json_true());
        free(cookie);
    }
    if (want_total) {
        /* "Count rows using FetchXml": all the rows that match, up to 5,000. */
        json_object_set_new(body, "@Microsoft.Dynamics.CRM.totalrecordcount",
                            json_integer(total < FX_COUNT_MAX ? (json_int_t)total : FX_COUNT_MAX));
        json_object_set_new(body, "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded",
                            json_boolean(total > FX_COUNT_MAX));
    }
    json_object_set_new(body, "value", value);
    emu_resp_json(resp, 200, body);
out:
    if (err.status)
        emu_resp_error(resp, &err);
    emu_err_clear(&err);
    json_decref(rows);
    json_decref(q.select);
    node_free(fetch);
    free(why);
}

/* dvemu's Web API: routing, validation like Dataverse, reads, writes, bulk actions. The
 * caller (server.c or the $batch code) holds no lock; emu_api_handle takes store_lock for
 * the whole operation. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "internal.h"

void emu_resp_init(struct emu_resp *r)
{
    memset(r, 0, sizeof *r);
    dw_buf_init(&r->body, 0);
}

void emu_resp_cleanup(struct emu_resp *r)
{
    dw_buf_cleanup(&r->body);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->hname[i]);
        free(r->hvalue[i]);
    }
    free(r->entity_ref);
    memset(r, 0, sizeof *r);
}

void emu_resp_header(struct emu_resp *r, const char *name, const char *value)
{
    if (r->nheaders == EMU_MAX_HEADERS)
        return;
    r->hname[r->nheaders] = dw_strdup(name);
    r->hvalue[r->nheaders] = dw_strdup(value);
    r->nheaders++;
}

void emu_resp_json(struct emu_resp *r, int status, json_t *body)
{
    r->status = status;
    dw_buf_reset(&r->body);
    (void)dw_json_append(&r->body, body);
    r->content_type = "application/json; odata.metadata=minimal";
    json_decref(body);
}

void emu_resp_error(struct emu_resp *r, const struct emu_err *e)
{
    emu_resp_json(r, e->status,
                  json_pack("{s:{s:s, s:s}}", "error", "code", e->code ? e->code : "", "message",
                            e->message ? e->message : ""));
}

/* One timestamp per operation, shared by every row it writes (under store_lock). */
static void set_now(struct emu *emu)
{
    char now[32];
    time_t secs = (time_t)(emu_clock_wall_ms(&emu->clock) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_decref(emu->now_json);
    emu->now_json = json_string(now);
}

/* --- query options --------------------------------------------------------------------- */

static json_t *parse_query(const char *q)
{
    json_t *o = json_object();
    if (q == NULL)
        return o;
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        char *name = NULL, *value = NULL;
        if (eq && dw_dvemu_pct_decode(q, (size_t)(eq - q), &name) == DW_OK &&
            dw_dvemu_pct_decode(eq + 1, n - (size_t)(eq - q) - 1, &value) == DW_OK)
            json_object_set_new(o, name, json_string(value));
        free(name);
        free(value);
        q += n;
        if (*q == '&')
            q++;
    }
    return o;
}

static void err_no_property(struct emu_err *err, const char *entity, const char *prop)
{
    emu_err_set(err, 400, "0x0",
                "Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", prop,
                entity);
}

/* Applies $select to one row in place: keeps the listed properties, the id and the etag. */
static void apply_select(json_t *row, json_t *select, const char *keep)
{
    if (select == NULL)
        return;
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(row, tmp, k, v)
    {
        if (k[0] == '@' || (keep && strcmp(k, keep) == 0))
            continue;
        bool listed = false;
        size_t i;
        json_t *s;
        json_array_foreach(select, i, s) listed |= strcmp(json_string_value(s), k) == 0;
        if (!listed)
            json_object_del(row, k);
    }
}

/* Splits "$select=a,b" into an array; checks the names when t is given. */
static dw_rc parse_select(const char *text, const struct emu_table *t, json_t **out,
                          struct emu_err *err)
{
    json_t *arr = json_array();
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, ",");
        char *name = dw_strndup(p, n);
        for (char *c = name; *c; c++)
            if (*c == ' ')
                *c = '\0';
        if (t) {
            bool found = false;
            for (size_t i = 0; i < t->nattrs; i++)
                found |= strcmp(t->attrs[i].prop, name) == 0;
            if (!found) {
                err_no_property(err, t->logical, name);
                free(name);
                json_decref(arr);
                return DW_ERR_INVALID;
            }
        }
        json_array_append_new(arr, json_string(name));
        free(name);
        p += n;
        if (*p == ',')
            p++;
    }
    *out = arr;
    return DW_OK;
}

struct order_key {
    char *prop;
    bool desc;
};

struct order_ctx {
    struct order_key *keys;
    size_t nkeys;
};

int emu_value_cmp(const json_t *a, const json_t *b)
{
    bool an = a == NULL || json_is_null(a), bn = b == NULL || json_is_null(b);
    if (an || bn)
        return an && bn ? 0 : an ? -1 : 1;
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_string(a) && json_is_string(b))
        return strcasecmp(json_string_value(a), json_string_value(b));
    if (json_is_boolean(a) && json_is_boolean(b))
        return (int)json_is_true(a) - (int)json_is_true(b);
    return 0;
}

static int order_cmp(const void *pa, const void *pb, void *arg)
{
    const struct order_ctx *c = arg;
    const json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
    for (size_t i = 0; i < c->nkeys; i++) {
        int r =
            emu_value_cmp(json_object_get(a, c->keys[i].prop), json_object_get(b, c->keys[i].prop));
        if (r != 0)
            return c->keys[i].desc ? -r : r;
    }
    return 0;
}

/*
 * The public form of the table's rows that match filter. A filter that only names rows by
 * alternate key or id ("(k eq 1 and c eq 'x') or ...", how clients look rows up) is answered
 * from the key indexes, as Dataverse's own indexes would; anything else scans the table.
 */
static json_t *table_matches(struct emu_table *t, const struct dw_dvemu_filter *filter)
{
    json_t *out = json_array();
    struct dw_dvemu_key *keys = NULL;
    size_t nkeys = 0;
    bool indexed = dw_dvemu_filter_key_terms(filter, &keys, &nkeys);
    struct emu_row **found = indexed ? dw_calloc(nkeys, sizeof *found) : NULL;
    for (size_t i = 0; indexed && i < nkeys; i++) {
        bool by_alt;
        struct emu_err err = {0};
        found[i] = emu_row_find(t, &keys[i], &by_alt, &err);
        indexed = found[i] != NULL || err.status == 404;
        emu_err_clear(&err);
    }
    if (indexed) {
        for (size_t i = 0; i < nkeys; i++) {
            bool seen = found[i] == NULL;
            for (size_t j = 0; j < i && !seen; j++)
                seen = found[j] == found[i];
            if (!seen && dw_dvemu_filter_match(filter, found[i]->data))
                json_array_append_new(out, emu_row_public(t, found[i]->data));
        }
    } else {
        for (struct emu_row *r = t->rows; r; r = r->hh.next)
            if (filter == NULL || dw_dvemu_filter_match(filter, r->data))
                json_array_append_new(out, emu_row_public(t, r->data));
    }
    for (size_t i = 0; i < nkeys; i++)
        dw_dvemu_key_cleanup(&keys[i]);
    free(keys);
    free(found);
    return out;
}

/* --- annotations ---------------------------------------------------------------------- */

#define ANN_FORMATTED "OData.Community.Display.V1.FormattedValue"
#define ANN_LOGICAL   "Microsoft.Dynamics.CRM.lookuplogicalname"
#define ANN_NAV       "Microsoft.Dynamics.CRM.associatednavigationproperty"
#define ANN_TOTAL     "Microsoft.Dynamics.CRM.totalrecordcount"

/* The value of Prefer: odata.include-annotations (without its quotes), or NULL. Caller frees. */
static char *annotations_asked(const struct emu_req *req)
{
    const char *p = req->prefer ? strstr(req->prefer, "odata.include-annotations=") : NULL;
    if (p == NULL)
        return NULL;
    p += strlen("odata.include-annotations=");
    if (*p == '"') {
        const char *end = strchr(p + 1, '"');
        return end ? dw_strndup(p + 1, (size_t)(end - p - 1)) : NULL;
    }
    return dw_strndup(p, strcspn(p, ", ;"));
}

/* Whether an annotation is in the list asked for: "*", its name, or "Namespace.*". */
static bool annotation_wanted(const char *asked, const char *name)
{
    for (const char *p = asked; p && *p;) {
        size_t n = strcspn(p, ",");
        while (n && *p == ' ')
            p++, n--;
        if ((n == 1 && *p == '*') || (n == strlen(name) && strncmp(p, name, n) == 0) ||
            (n > 2 && p[n - 1] == '*' && p[n - 2] == '.' && strncmp(p, name, n - 1) == 0))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

/* Digits of a number with thousands separators, as en-US formats it ("-1,234.50"). */
static char *thousands_text(double v, int decimals)
{
    char raw[64], out[96];
    snprintf(raw, sizeof raw, "%.*f", decimals, v < 0 ? -v : v);
    size_t whole = strcspn(raw, "."), o = 0;
    if (v < 0)
        out[o++] = '-';
    for (size_t i = 0; raw[i]; i++) {
        if (i > 0 && i < whole && (whole - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = raw[i];
    }
    out[o] = '\0';
    return dw_strdup(out);
}

/* The formatted value of a column ("Format values": labels of choices and yes/no columns,
 * numbers grouped by thousands), or NULL where dvemu does not format (money, dates). */
static char *formatted_value(const struct emu_attr *a, const json_t *v)
{
    if (a->noptions && json_is_integer(v) && a->type != DW_ATTR_BOOLEAN) {
        for (size_t i = 0; i < a->noptions; i++)
            if (a->options[i].value == json_integer_value(v))
                return dw_strdup(a->options[i].label);
        return NULL;
    }
    switch (a->type) {
    case DW_ATTR_BOOLEAN:
        if (!json_is_boolean(v))
            return NULL;
        for (size_t i = 0; i < a->noptions; i++)
            if (a->options[i].value == (json_is_true(v) ? 1 : 0))
                return dw_strdup(a->options[i].label);
        return dw_strdup(json_is_true(v) ? "Yes" : "No");
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
        return json_is_number(v) ? thousands_text(json_number_value(v), 0) : NULL;
    case DW_ATTR_DECIMAL:
    case DW_ATTR_DOUBLE:
        return json_is_number(v)
                   ? thousands_text(json_number_value(v), a->precision > 0 ? a->precision : 2)
                   : NULL;
    default:
        return NULL;
    }
}

/* Adds the annotations asked for to the columns row holds (a row of t, $select applied). */
static void annotate_row(struct emu *emu, const struct emu_table *t, json_t *row, const char *asked)
{
    bool formatted = annotation_wanted(asked, ANN_FORMATTED);
    bool logical = annotation_wanted(asked, ANN_LOGICAL);
    bool nav = annotation_wanted(asked, ANN_NAV);
    for (size_t i = 0; i < t->nattrs; i++) {
        const struct emu_attr *a = &t->attrs[i];
        json_t *v = json_object_get(row, a->prop);
        if (v == NULL || json_is_null(v))
            continue;
        char *text = NULL;
        char name[256];
        for (size_t j = 0; j < a->ntargets && json_is_string(v); j++) {
            struct emu_table *target = emu_table_by_logical(emu, a->targets[j]);
            struct emu_row *r = target ? emu_row_find_id(target, json_string_value(v)) : NULL;
            if (r == NULL)
                continue;
            if (logical) {
                snprintf(name, sizeof name, "%s@" ANN_LOGICAL, a->prop);
                json_object_set_new(row, name, json_string(a->targets[j]));
            }
            if (nav) {
                snprintf(name, sizeof name, "%s@" ANN_NAV, a->prop);
                json_object_set_new(row, name, json_string(a->navs[j]));
            }
            const char *shown =
                target->primary_name
                    ? json_string_value(json_object_get(r->data, target->primary_name))
                    : NULL;
            text = shown ? dw_strdup(shown) : NULL;
            break;
        }
        if (a->ntargets == 0)
            text = formatted_value(a, v);
        if (formatted && text) {
            snprintf(name, sizeof name, "%s@" ANN_FORMATTED, a->prop);
            json_object_set_new(row, name, json_string(text));
        }
        free(text);
    }
}

/* Echoes the annotations asked for ("Preference-Applied"). */
static void annotations_applied(struct emu_resp *resp, const char *asked)
{
    char *applied = dw_asprintf("odata.include-annotations=\"%s\"", asked);
    emu_resp_header(resp, "Preference-Applied", applied);
    free(applied);
}

/* Annotates one row answered on its own, as the request asks. */
static void annotate(struct emu *emu, const struct emu_req *req, const struct emu_table *t,
                     json_t *row, struct emu_resp *resp)
{
    char *asked = annotations_asked(req);
    if (asked) {
        annotate_row(emu, t, row, asked);
        annotations_applied(resp, asked);
    }
    free(asked);
}

/* --- $expand ---------------------------------------------------------------------------- */

static const struct emu_attr *collection_nav(struct emu *emu, const struct emu_table *t,
                                             const char *nav, size_t navlen,
                                             struct emu_table **child, size_t *ti);

/* One item of $expand: a navigation property and the $select inside its parentheses. */
struct expand_item {
    char *nav;
    const struct emu_attr *single; /* a lookup of the table, or */
    const struct emu_attr *coll;   /* another table's lookup back to it (collection) */
    const struct emu_m2m *m2m;     /* a many-to-many relationship (collection) */
    int side;                      /* the table's side of m2m */
    struct emu_table *child;
    json_t *select; /* NULL: every column */
};

static void expand_free(struct expand_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].nav);
        json_decref(items[i].select);
    }
    free(items);
}

/*
 * Parses "$expand=nav1($select=a,b),nav2" for rows of t ("Join tables using OData":
 * single-valued navigation properties with a nested $select, collection-valued ones one
 * level deep). Other nested options answer 501; an unknown property 400.
 */
static dw_rc parse_expand(struct emu *emu, const char *text, struct emu_table *t,
                          struct expand_item **out, size_t *nout, struct emu_err *err)
{
    struct expand_item *items = NULL;
    size_t n = 0;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, "(,");
        int depth = 0;
        size_t end = len;
        if (p[len] == '(')
            for (end = len; p[end]; end++) {
                depth += p[end] == '(' ? 1 : p[end] == ')' ? -1 : 0;
                if (depth == 0) {
                    end++;
                    break;
                }
            }
        items = dw_realloc(items, (n + 1) * sizeof *items);
        struct expand_item *it = &items[n++];
        memset(it, 0, sizeof *it);
        it->nav = dw_strndup(p, len);
        for (size_t i = 0; i < t->nattrs && !it->single; i++)
            for (size_t j = 0; j < t->attrs[i].ntargets; j++)
                if (strcmp(t->attrs[i].navs[j], it->nav) == 0)
                    it->single = &t->attrs[i];
        size_t ti;
        if (!it->single)
            it->coll = collection_nav(emu, t, it->nav, strlen(it->nav), &it->child, &ti);
        if (!it->single && !it->coll &&
            (it->m2m = emu_m2m_find(emu, t, it->nav, strlen(it->nav), &it->side)) != NULL)
            it->child = it->m2m->t[1 - it->side];
        if (!it->single && !it->coll && !it->m2m) {
            err_no_property(err, t->logical, it->nav);
            goto fail;
        }
        if (end > len) { /* "(...)": only $select */
            char *inner = dw_strndup(p + len + 1, end - len - 2);
            dw_rc rc = DW_OK;
            if (strncmp(inner, "$select=", 8) != 0 || strchr(inner, ';')) {
                emu_err_set(err, 501, "0x80060888",
                            "dvemu does not emulate the options '%s' of an expanded property; "
                            "see dvemu(1).",
                            inner);
                rc = DW_ERR_UNSUPPORTED;
            } else {
                struct emu_table *target = it->child;
                if (it->single && it->single->ntargets == 1)
                    target = emu_table_by_logical(emu, it->single->targets[0]);
                rc = parse_select(inner + 8, target, &it->select, err);
            }
            free(inner);
            if (rc != DW_OK)
                goto fail;
        }
        p += end;
        if (*p == ',')
            p++;
    }
    *out = items;
    *nout = n;
    return DW_OK;
fail:
    expand_free(items, n);
    return DW_ERR_INVALID;
}

/* Adds the expanded navigation properties to row (its public form, lookups included). */
static void apply_expand(struct emu *emu, json_t *row, const struct emu_table *t,
                         const struct expand_item *items, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const struct expand_item *it = &items[k];
        if (it->single) {
            const char *id = json_string_value(json_object_get(row, it->single->prop));
            json_t *v = json_null();
            for (size_t j = 0; id && j < it->single->ntargets; j++) {
                struct emu_table *tt = emu_table_by_logical(emu, it->single->targets[j]);
                struct emu_row *r = tt ? emu_row_find_id(tt, id) : NULL;
                if (r && strcmp(it->single->navs[j], it->nav) == 0) {
                    json_decref(v);
                    v = emu_row_public(tt, r->data);
                    apply_select(v, it->select, tt->primary_id);
                }
            }
            json_object_set_new(row, it->nav, v);
        } else if (it->m2m) {
            const char *id = json_string_value(json_object_get(row, t->primary_id));
            json_t *arr = id ? emu_m2m_related(it->m2m, it->side, id) : json_array();
            size_t i;
            json_t *c;
            json_array_foreach(arr, i, c) apply_select(c, it->select, it->child->primary_id);
            json_object_set_new(row, it->nav, arr);
        } else {
            const char *id = json_string_value(json_object_get(row, t->primary_id));
            json_t *arr = json_array();
            for (struct emu_row *r = it->child->rows; id && r; r = r->hh.next) {
                const char *pv = json_string_value(json_object_get(r->data, it->coll->prop));
                if (pv && strcmp(pv, id) == 0) {
                    json_t *c = emu_row_public(it->child, r->data);
                    apply_select(c, it->select, it->child->primary_id);
                    json_array_append_new(arr, c);
                }
            }
            json_object_set_new(row, it->nav, arr);
        }
    }
}

/* Splits "$expand=a($select=x,y),b" at its top-level commas: item k is text[start[k],
 * start[k] + len[k]). Returns the number of items (at most max). */
static size_t expand_items_split(const char *text, size_t *start, size_t *len, size_t max)
{
    size_t n = 0, depth = 0, at = 0;
    for (size_t i = 0;; i++) {
        char c = text[i];
        if (c == '(')
            depth++;
        else if (c == ')' && depth)
            depth--;
        if ((c == ',' && depth == 0) || c == '\0') {
            if (n < max && i > at) {
                start[n] = at;
                len[n++] = i - at;
            }
            at = i + 1;
        }
        if (c == '\0')
            return n;
    }
}

/* The navigation property names of an $expand (without their options), as an array. */
static json_t *expand_names(const char *text)
{
    size_t start[32], len[32];
    size_t n = expand_items_split(text, start, len, 32);
    json_t *names = json_array();
    for (size_t k = 0; k < n; k++) {
        size_t name = strcspn(text + start[k], "(");
        json_array_append_new(names, json_stringn(text + start[k], name < len[k] ? name : len[k]));
    }
    return names;
}

/* Keeps the expanded properties through $select. */
static void select_keep_expanded(json_t *select, const struct expand_item *items, size_t n)
{
    for (size_t k = 0; select && k < n; k++)
        json_array_append_new(select, json_string(items[k].nav));
}

/* The largest page and the largest @odata.count Dataverse answers ("Page results using
 * OData", "Count rows using OData"). */
#define EMU_PAGE_MAX 5000

int emu_prefer_max_page_size(const char *prefer)
{
    const char *p = prefer ? strstr(prefer, "odata.maxpagesize=") : NULL;
    if (p == NULL)
        return 0;
    char *end;
    long n = strtol(p + strlen("odata.maxpagesize="), &end, 10);
    return n > 0 && n <= INT_MAX ? (int)n : 0;
}

/* The rows a $skiptoken says were answered already: dvemu's tokens are Dataverse-shaped
 * cookies carrying the offset ("<cookie pagenumber="2" dvemu-skip="5000" />"). */
static dw_rc skiptoken_offset(const char *token, size_t *out)
{
    const char *p = strstr(token, "dvemu-skip=\"");
    if (p == NULL)
        return DW_ERR_INVALID;
    char *end;
    unsigned long long n = strtoull(p + strlen("dvemu-skip=\""), &end, 10);
    if (*end != '"' || end == p + strlen("dvemu-skip=\""))
        return DW_ERR_INVALID;
    *out = (size_t)n;
    return DW_OK;
}

/* The absolute URL of the next page: the request's own path and query (without its
 * $skiptoken) and a $skiptoken for the rows after skip; a new heap string. */
static char *next_link(const struct emu_req *req, size_t skip, size_t page)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_printf(&b, "%s" EMU_API_PREFIX "%s?", req->base, req->path);
    const char *q = req->query ? req->query : "";
    while (*q) {
        size_t n = strcspn(q, "&");
        if (n > 0 && strncmp(q, "$skiptoken=", 11) != 0 && strncmp(q, "%24skiptoken=", 13) != 0) {
            (void)dw_buf_append(&b, q, n);
            (void)dw_buf_putc(&b, '&');
        }
        q += n;
        if (*q == '&')
            q++;
    }
    (void)dw_buf_printf(&b,
                        "$skiptoken=%%3Ccookie%%20pagenumber=%%22%zu%%22%%20dvemu-skip=%%22%zu%%22"
                        "%%20/%%3E",
                        page, skip);
    return dw_buf_steal(&b);
}

struct path_check {
    const struct emu_table *t;
    struct emu_err *err;
};

/*
 * Checks a property path of $filter or $orderby against t: a column, or a single-valued
 * navigation property, which stands for its lookup column (compared with null). A related
 * table's column ("nav/column") is refused as not emulated; any other name gets
 * Dataverse's 400, as an unknown $select name does.
 */
static bool check_path(char **path, void *user)
{
    struct path_check *pc = user;
    const struct emu_table *t = pc->t;
    const char *slash = strchr(*path, '/');
    size_t n = slash ? (size_t)(slash - *path) : strlen(*path);
    for (size_t i = 0; i < t->nattrs; i++) {
        const struct emu_attr *a = &t->attrs[i];
        if (strlen(a->prop) == n && strncmp(a->prop, *path, n) == 0 && slash == NULL)
            return true;
        for (size_t j = 0; j < a->ntargets; j++) {
            if (strlen(a->navs[j]) != n || strncmp(a->navs[j], *path, n) != 0)
                continue;
            if (slash) {
                emu_err_set(pc->err, 501, "0x80060888",
                            "dvemu does not emulate a related table's column in $filter or "
                            "$orderby ('%s'); see dvemu(1), \"What dvemu does not emulate\".",
                            *path);
                return false;
            }
            free(*path);
            *path = dw_strdup(a->prop);
            return true;
        }
    }
    char *name = dw_strndup(*path, n);
    err_no_property(pc->err, t->logical, name);
    free(name);
    return false;
}

/* Answers a GET on a collection: $filter, $orderby, $count, $top, then $select. Takes
 * ownership of rows (an array of objects); rows NULL: table t's rows. t may be NULL for
 * virtual collections. */
static void collection_answer(struct emu *emu, const struct emu_req *req, const char *context,
                              json_t *rows, json_t *query, struct emu_table *t,
                              struct emu_resp *resp)
{
    struct emu_err err = {0};
    json_t *select = NULL;
    struct dw_dvemu_filter *filter = NULL;
    struct order_ctx oc = {0};
    struct expand_item *xitems = NULL;
    size_t nx = 0;
    char *asked = req ? annotations_asked(req) : NULL;
    const char *fs = json_string_value(json_object_get(query, "$filter"));
    if (fs) {
        char *msg = NULL;
        if (dw_dvemu_filter_parse(fs, &filter, &msg) != DW_OK) {
            emu_err_set(&err, 400, "0x80060888", "%s", msg);
            free(msg);
            goto fail;
        }
        struct path_check pc = {t, &err};
        if (t && !dw_dvemu_filter_visit_paths(filter, check_path, &pc))
            goto fail;
    }
    const char *ss = json_string_value(json_object_get(query, "$select"));
    if (ss && parse_select(ss, t, &select, &err) != DW_OK)
        goto fail;
    /* Expanded properties ($expand=OptionSet) are answered whatever $select says. */
    const char *es = json_string_value(json_object_get(query, "$expand"));
    if (t == NULL && select && es) {
        json_t *expand = expand_names(es);
        json_array_extend(select, expand);
        json_decref(expand);
    }
    if (t && es && parse_expand(emu, es, t, &xitems, &nx, &err) != DW_OK)
        goto fail;
    select_keep_expanded(select, xitems, nx);
    json_t *out;
    size_t i;
    json_t *row;
    if (rows == NULL) {
        out = table_matches(t, filter);
    } else {
        out = json_array();
        json_array_foreach(rows, i, row) if (filter == NULL || dw_dvemu_filter_match(filter, row))
            json_array_append(out, row);
    }
    const char *os = json_string_value(json_object_get(query, "$orderby"));
    if (os) {
        const char *p = os;
        while (*p) {
            size_t n = strcspn(p, ",");
            char *item = dw_strndup(p, n);
            char *sp = strchr(item, ' ');
            oc.keys = dw_realloc(oc.keys, (oc.nkeys + 1) * sizeof *oc.keys);
            oc.keys[oc.nkeys].desc = false;
            if (sp) {
                *sp = '\0';
                oc.keys[oc.nkeys].desc = strstr(sp + 1, "desc") != NULL;
            }
            oc.keys[oc.nkeys++].prop = item;
            struct path_check pc = {t, &err};
            if (t && !check_path(&oc.keys[oc.nkeys - 1].prop, &pc)) {
                json_decref(out);
                goto fail;
            }
            p += n;
            if (*p == ',')
                p++;
        }
        size_t n = json_array_size(out);
        json_t **v = dw_malloc((n ? n : 1) * sizeof *v);
        for (size_t j = 0; j < n; j++)
            v[j] = json_incref(json_array_get(out, j));
        qsort_r(v, n, sizeof *v, order_cmp, &oc);
        json_array_clear(out);
        for (size_t j = 0; j < n; j++)
            json_array_append_new(out, v[j]);
        free(v);
    }
    size_t total = json_array_size(out);
    const char *top = json_string_value(json_object_get(query, "$top"));
    if (top) {
        char *e;
        long n = strtol(top, &e, 10);
        if (*e != '\0' || n < 0) {
            json_decref(out);
            emu_err_set(&err, 400, "0x80060888", "Invalid value '%s' for $top query option.", top);
            goto fail;
        }
        while (json_array_size(out) > (size_t)n)
            json_array_remove(out, json_array_size(out) - 1);
    }
    /* Server-driven paging: at most a page of rows, and a next link for the rest. */
    size_t skip = 0, page = (size_t)emu->opt->page_size;
    const char *st = json_string_value(json_object_get(query, "$skiptoken"));
    if (st && skiptoken_offset(st, &skip) != DW_OK) {
        json_decref(out);
        emu_err_set(&err, 400, "0x80060888", "Invalid value '%s' for $skiptoken query option.", st);
        goto fail;
    }
    /* A preference above the server's page (5,000, or --page-size) is not applied. */
    if (req && req->max_page_size > 0 && (size_t)req->max_page_size <= page) {
        page = (size_t)req->max_page_size;
        char applied[48];
        snprintf(applied, sizeof applied, "odata.maxpagesize=%d", req->max_page_size);
        emu_resp_header(resp, "Preference-Applied", applied);
    }
    for (size_t k = 0; k < skip && json_array_size(out) > 0; k++)
        json_array_remove(out, 0);
    char *next = NULL;
    if (json_array_size(out) > page && req != NULL) {
        next = next_link(req, skip + page, (skip + page) / page + 1);
        while (json_array_size(out) > page)
            json_array_remove(out, json_array_size(out) - 1);
    }
    json_t *final = json_array();
    json_array_foreach(out, i, row)
    {
        json_t *copy = json_deep_copy(row);
        if (nx)
            apply_expand(emu, copy, t, xitems, nx);
        apply_select(copy, select, t ? t->primary_id : NULL);
        if (t && asked)
            annotate_row(emu, t, copy, asked);
        json_array_append_new(final, copy);
    }
    json_decref(out);
    char *ctx = dw_asprintf("%s" EMU_API_PREFIX "$metadata#%s", req->base, context);
    json_t *body = json_pack("{s:s}", "@odata.context", ctx);
    free(ctx);
    const char *count = json_string_value(json_object_get(query, "$count"));
    if (count && strcmp(count, "true") == 0) {
        json_int_t counted = (json_int_t)(total > EMU_PAGE_MAX ? EMU_PAGE_MAX : total);
        json_object_set_new(body, "@odata.count", json_integer(counted));
        /* "Count rows using OData": the same count, and whether there were more. */
        if (asked && annotation_wanted(asked, ANN_TOTAL)) {
            json_object_set_new(body, "@" ANN_TOTAL, json_integer(counted));
            json_object_set_new(body, "@" ANN_TOTAL "limitexceeded",
                                json_boolean(total > EMU_PAGE_MAX));
        }
    }
    if (asked)
        annotations_applied(resp, asked);
    json_object_set_new(body, "value", final);
    if (next)
        json_object_set_new(body, "@odata.nextLink", json_string(next));
    free(next);
    emu_resp_json(resp, 200, body);
    goto out;
fail:
    emu_resp_error(resp, &err);
out:
    emu_err_clear(&err);
    for (size_t k = 0; k < oc.nkeys; k++)
        free(oc.keys[k].prop);
    free(oc.keys);
    dw_dvemu_filter_free(filter);
    json_decref(select);
    json_decref(rows);
    expand_free(xitems, nx);
    free(asked);
}

/* --- values ---------------------------------------------------------------------------- */

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static bool valid_datetime(const char *s, bool date_only)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, consumed = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &consumed) != 3 || consumed != 10)
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || y < 1753 || y > 9999)
        return false;
    const char *p = s + 10;
    if (*p == '\0')
        return true;
    if (date_only || *p != 'T')
        return false;
    if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &mi, &sec, &consumed) != 3 || consumed != 8)
        return false;
    if (h > 23 || mi > 59 || sec > 59)
        return false;
    p += 9;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z')
        return p[1] == '\0';
    if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
        p[3] == ':' && isdigit((unsigned char)p[4]) && isdigit((unsigned char)p[5]) && p[6] == '\0')
        return true;
    return *p == '\0';
}

static void err_convert(struct emu_err *err, const struct emu_table *t, const struct emu_attr *a,
                        const json_t *v)
{
    char *text = json_is_string(v) ? dw_strdup(json_string_value(v)) : dw_json_dumps(v);
    emu_err_set(err, 400, "0x80048d19",
                "Error identified in Payload provided by the user for Entity :'%s', For more "
                "reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 ---->  "
                "InnerException : Microsoft.OData.ODataException: Cannot convert the literal "
                "'%s' to the expected type '%s'.",
                t->set, text, emu_edm_type(a));
    free(text);
}

/* Checks one column value against its metadata; returns the value to store (new ref). */
static json_t *check_value(const struct emu_table *t, const struct emu_attr *a, json_t *v,
                           struct emu_err *err)
{
    if (json_is_null(v))
        return json_null();
    switch (a->type) {
    case DW_ATTR_STRING:
    case DW_ATTR_MEMO: {
        if (!json_is_string(v))
            break;
        if (utf8_chars(json_string_value(v)) > (size_t)a->max_length) {
            emu_err_set(err, 400, "0x80044331",
                        "A validation error occurred.  The length of the '%s' attribute of the "
                        "'%s' entity exceeded the maximum allowed length of '%d'.",
                        a->name, t->logical, a->max_length);
            return NULL;
        }
        return json_incref(v);
    }
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE: {
        if (!json_is_number(v) ||
            ((a->type == DW_ATTR_INTEGER || a->type == DW_ATTR_BIGINT) && !json_is_integer(v)))
            break;
        double d = json_number_value(v);
        if (d < a->min_value || d > a->max_value) {
            char *num = dw_json_dumps(v);
            emu_err_set(err, 400, "0x80044330",
                        "A validation error occurred.  The value %s of '%s' on record of type "
                        "'%s' is outside the valid range. Accepted range: %.15g to %.15g.",
                        num, a->name, t->logical, a->min_value, a->max_value);
            free(num);
            return NULL;
        }
        if (json_is_integer(v))
            return json_incref(v);
        /* Dataverse stores decimals at the column's precision. */
        double scale = pow(10.0, a->precision);
        return json_real(round(d * scale) / scale);
    }
    case DW_ATTR_BOOLEAN:
        if (!json_is_boolean(v))
            break;
        return json_incref(v);
    case DW_ATTR_DATETIME:
        if (!json_is_string(v) ||
            !valid_datetime(json_string_value(v), strcmp(a->format, "DateOnly") == 0))
            break;
        return json_incref(v);
    case DW_ATTR_PICKLIST: {
        if (!json_is_integer(v))
            break;
        json_int_t x = json_integer_value(v);
        for (size_t i = 0; i < a->noptions; i++)
            if (a->options[i].value == x)
                return json_incref(v);
        struct dw_buf b;
        dw_buf_init(&b, 0);
        for (size_t i = 0; i < a->noptions; i++)
            (void)dw_buf_printf(&b, "%s%d", i ? "," : "", a->options[i].value);
        emu_err_set(err, 400, "0x8004431a",
                    "A validation error occurred.  The value %lld of '%s' on record of type '%s' "
                    "is outside the valid range. Accepted Values: %s",
                    (long long)x, a->name, t->logical, dw_buf_str(&b));
        dw_buf_cleanup(&b);
        return NULL;
    }
    case DW_ATTR_UNIQUEIDENTIFIER: {
        const char *s = json_string_value(v);
        if (s == NULL || !dw_dvemu_is_guid(s, strlen(s)))
            break;
        char low[37];
        for (size_t i = 0; i <= 36; i++)
            low[i] = (char)tolower((unsigned char)s[i]);
        return json_string(low);
    }
    case DW_ATTR_LOOKUP:
    case DW_ATTR_OTHER:
        break;
    }
    err_convert(err, t, a, v);
    return NULL;
}

/* "Execute batch operations using the Web API": a Content-ID referenced before it is
 * declared (ref is "$n", possibly followed by a path). */
static void err_content_id(struct emu_err *err, const char *ref)
{
    size_t n = 1 + strspn(ref + 1, "0123456789");
    emu_err_set(err, 400, "0x0",
                "Content-ID Reference: '%.*s' does not exist in the batch context.", (int)n, ref);
}

/* W/"<versionnumber>", the row's @odata.etag; a new heap string. */
static char *row_etag(const json_t *row)
{
    return dw_asprintf("W/\"%lld\"",
                       (long long)json_integer_value(json_object_get(row, "versionnumber")));
}

/* "Perform conditional operations using the Web API": If-Match with an etag that is not
 * the row's current one refuses an update or a delete with 412. */
static dw_rc check_if_match(const struct emu_req *req, const json_t *row, struct emu_err *err)
{
    if (req->if_match == NULL || strcmp(req->if_match, "*") == 0)
        return DW_OK;
    char *etag = row_etag(row);
    bool same = strcmp(etag, req->if_match) == 0;
    free(etag);
    if (same)
        return DW_OK;
    emu_err_set(err, 412, "0x80060882",
                "The version of the existing record doesn't match the RowVersion property "
                "provided.");
    return DW_ERR_STATE;
}

/* Splits an entity reference ("/accounts(...)", "accounts(...)", an absolute URL or a
 * Content-ID "$1") into its table and parsed key. */
static dw_rc parse_ref(struct emu *emu, const char *ref, json_t *content_ids,
                       struct emu_table **table, struct dw_dvemu_key *key)
{
    if (ref[0] == '$' && isdigit((unsigned char)ref[1])) {
        const char *sub = json_string_value(json_object_get(content_ids, ref + 1));
        if (sub == NULL)
            return DW_ERR_NOT_FOUND;
        ref = sub;
    }
    const char *p = strstr(ref, EMU_API_PREFIX);
    if (p)
        ref = p + strlen(EMU_API_PREFIX);
    while (*ref == '/')
        ref++;
    const char *open = strchr(ref, '(');
    if (open == NULL)
        return DW_ERR_INVALID;
    size_t n = strlen(open);
    if (n < 2 || open[n - 1] != ')')
        return DW_ERR_INVALID;
    *table = emu_table_by_set(emu, ref, (size_t)(open - ref));
    if (*table == NULL)
        return DW_ERR_NOT_FOUND;
    return dw_dvemu_key_parse(open + 1, n - 2, key);
}

/* Resolves a "<nav>@odata.bind" to the lookup it sets and the parent's id. */
static dw_rc resolve_bind(struct emu *emu, const struct emu_table *t, const char *nav,
                          json_t *value, json_t *content_ids, const struct emu_attr **attr,
                          json_t **out, struct emu_err *err)
{
    const struct emu_attr *a = NULL;
    size_t ti = 0;
    for (size_t i = 0; i < t->nattrs && a == NULL; i++)
        for (size_t j = 0; j < t->attrs[i].ntargets; j++)
            if (strcmp(t->attrs[i].navs[j], nav) == 0) {
                a = &t->attrs[i];
                ti = j;
                break;
            }
    if (a == NULL) {
        err_no_property(err, t->logical, nav);
        return DW_ERR_INVALID;
    }
    *attr = a;
    if (json_is_null(value)) {
        *out = json_null();
        return DW_OK;
    }
    const char *ref = json_string_value(value);
    struct emu_table *target = NULL;
    /* (A Content-ID names a different row in every changeset: not remembered.) */
    bool memo = ref && content_ids == NULL;
    struct emu_row *row = memo ? emu_bind_memo_find(emu, ref, &target) : NULL;
    if (row && strcmp(target->logical, a->targets[ti]) == 0) {
        *out = json_string(row->id);
        return DW_OK;
    }
    struct dw_dvemu_key key = {0};
    dw_rc rc = ref ? parse_ref(emu, ref, content_ids, &target, &key) : DW_ERR_INVALID;
    if (rc != DW_OK && ref[0] == '$' && isdigit((unsigned char)ref[1])) {
        err_content_id(err, ref);
        return DW_ERR_INVALID;
    }
    if (rc != DW_OK || strcmp(target->logical, a->targets[ti]) != 0) {
        if (rc == DW_OK)
            dw_dvemu_key_cleanup(&key);
        emu_err_set(err, 400, "0x80048d19",
                    "Error identified in Payload provided by the user for Entity :'%s', For "
                    "more reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 "
                    "---->  InnerException : Microsoft.OData.ODataException: An undeclared or "
                    "invalid entity reference '%s' was found for the navigation property '%s'.",
                    t->set, ref ? ref : "", nav);
        return DW_ERR_INVALID;
    }
    bool by_alt;
    row = emu_row_find(target, &key, &by_alt, err);
    dw_dvemu_key_cleanup(&key);
    if (row == NULL)
        return DW_ERR_NOT_FOUND;
    if (memo)
        emu_bind_memo_keep(emu, ref, target, row);
    *out = json_string(row->id);
    return DW_OK;
}

/* Validates a request body and applies its column values to the row being built (stored
 * property names); the row is a private copy, so this writes into it directly. */
static dw_rc body_changes(struct emu *emu, const struct emu_table *t, json_t *body,
                          json_t *content_ids, json_t *changes, struct emu_err *err)
{
    if (!json_is_object(body)) {
        emu_err_set(err, 400, "0x80048d19",
                    "Error identified in Payload provided by the user for Entity :'%s', For "
                    "more reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 "
                    "---->  InnerException : Microsoft.OData.ODataException: The request body "
                    "is not a JSON object.",
                    t->set);
        return DW_ERR_INVALID;
    }
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        const char *at = strchr(k, '@');
        if (at && strcmp(at, "@odata.bind") == 0) {
            char *nav = dw_strndup(k, (size_t)(at - k));
            const struct emu_attr *a;
            json_t *id;
            dw_rc rc = resolve_bind(emu, t, nav, v, content_ids, &a, &id, err);
            free(nav);
            if (rc != DW_OK)
                return rc;
            json_object_set_new(changes, a->prop, id);
            continue;
        }
        if (at)
            continue; /* other annotations (@odata.type, @odata.etag) carry no value */
        const struct emu_attr *a = emu_attr_find(t, k);
        if (a == NULL || a->type == DW_ATTR_LOOKUP) {
            err_no_property(err, t->logical, k);
            return DW_ERR_INVALID;
        }
        if (a->readonly)
            continue; /* Dataverse ignores values for columns it maintains */
        json_t *sv = check_value(t, a, v, err);
        if (sv == NULL)
            return DW_ERR_INVALID;
        json_object_set_new(changes, a->prop, sv);
    }
    return DW_OK;
}

static dw_rc check_required(const struct emu_table *t, const json_t *row, struct emu_err *err)
{
    for (size_t i = 0; i < t->nattrs; i++) {
        const struct emu_attr *a = &t->attrs[i];
        if (strcmp(a->required, "SystemRequired") != 0 || a->readonly ||
            strcmp(a->name, t->primary_id) == 0)
            continue;
        const json_t *v = json_object_get(row, a->prop);
        if (v == NULL || json_is_null(v)) {
            emu_err_set(err, 400, "0x80040203",
                        "Attribute '%s' cannot be NULL: it is required on records of type '%s'.",
                        a->name, t->logical);
            return DW_ERR_INVALID;
        }
    }
    return DW_OK;
}

static dw_rc check_unique(struct emu_table *t, const json_t *row, const char *id,
                          struct emu_err *err)
{
    const struct emu_key *k;
    if (emu_key_conflict(t, row, id, &k) == NULL)
        return DW_OK;
    struct dw_buf b;
    dw_buf_init(&b, 0);
    for (size_t i = 0; i < k->nattrs; i++) {
        const json_t *v = json_object_get(row, emu_attr_find(t, k->attrs[i])->prop);
        if (json_is_string(v))
            (void)dw_buf_printf(&b, "%s%s", i ? "," : "", json_string_value(v));
        else {
            char *s = dw_json_dumps(v);
            (void)dw_buf_printf(&b, "%s%s", i ? "," : "", s);
            free(s);
        }
    }
    emu_err_set(err, 412, "0x80060892",
                "A record that has the attribute values %s already exists. The entity key %s "
                "requires that this set of attributes contains unique values. Select unique "
                "values and try again.",
                dw_buf_str(&b), k->name);
    dw_buf_cleanup(&b);
    return DW_ERR_EXISTS;
}

static void answer_written(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                           const char *id, json_t *row, bool created, struct emu_resp *resp)
{
    if (resp == NULL)
        return; /* a bulk action answers once for all its targets */
    char *ref = dw_asprintf("%s(%s)", t->set, id);
    char *url = dw_asprintf("%s" EMU_API_PREFIX "%s", req->base, ref);
    if (req->prefer_representation) {
        json_t *body = emu_row_public(t, row);
        /* "Create a table row" / "Update and delete table rows": $select limits the
         * representation returned, and $expand adds related rows to it (the names were
         * checked before the write). */
        json_t *query = parse_query(req->query), *select = NULL;
        const char *ss = json_string_value(json_object_get(query, "$select"));
        const char *es = json_string_value(json_object_get(query, "$expand"));
        struct emu_err ignored = {0};
        struct expand_item *xitems = NULL;
        size_t nx = 0;
        if (es && parse_expand(emu, es, t, &xitems, &nx, &ignored) == DW_OK)
            apply_expand(emu, body, t, xitems, nx);
        if (ss && parse_select(ss, t, &select, &ignored) == DW_OK) {
            select_keep_expanded(select, xitems, nx);
            apply_select(body, select, t->primary_id);
        }
        emu_err_clear(&ignored);
        expand_free(xitems, nx);
        json_decref(select);
        json_decref(query);
        annotate(emu, req, t, body, resp);
        char *ctx = dw_asprintf("%s" EMU_API_PREFIX "$metadata#%s/$entity", req->base, t->set);
        json_object_set_new(body, "@odata.context", json_string(ctx));
        free(ctx);
        emu_resp_json(resp, created ? 201 : 200, body);
        emu_resp_header(resp, "Preference-Applied", "return=representation");
    } else {
        resp->status = 204;
    }
    /* In $batch answers every written part carries both, Location first ("Execute batch
     * operations using the Web API"). */
    if ((created && req->prefer_representation) || req->in_batch)
        emu_resp_header(resp, "Location", url);
    emu_resp_header(resp, "OData-EntityId", url);
    free(url);
    free(resp->entity_ref);
    resp->entity_ref = ref;
}

/* Stores row (built by the caller, who keeps its reference) as a new row. */
static dw_rc do_create(struct emu *emu, struct emu_table *t, json_t *row, const char *want_id,
                       char id_out[37], struct emu_err *err)
{
    char id[37];
    const char *given = json_string_value(json_object_get(row, t->primary_id));
    if (want_id)
        given = want_id;
    if (given) {
        for (size_t i = 0; i <= 36; i++)
            id[i] = (char)tolower((unsigned char)given[i]);
        if (emu_row_find_id(t, id)) {
            emu_err_set(err, 412, "0x80040237", "Cannot insert duplicate key.");
            return DW_ERR_EXISTS;
        }
    } else {
        emu_new_guid(id);
    }
    emu_row_finish(emu, t, row, id, true);
    dw_rc rc = emu_privilege_check(emu, t, EMU_PRIV_CREATE, NULL, row, id, err);
    if (rc == DW_OK)
        rc = check_required(t, row, err);
    if (rc == DW_OK)
        rc = check_unique(t, row, id, err);
    if (rc != DW_OK)
        return rc;
    emu_row_put(emu, t, id, row, "create");
    memcpy(id_out, id, 37);
    return DW_OK;
}

/* Creates a row from a request body. */
static dw_rc create_from_body(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                              json_t *body, struct emu_resp *resp, char id_out[37],
                              struct emu_err *err)
{
    json_t *row = json_object();
    dw_rc rc = body_changes(emu, t, body, req->content_ids, row, err);
    if (rc == DW_OK)
        rc = do_create(emu, t, row, NULL, id_out, err);
    if (rc == DW_OK)
        answer_written(emu, req, t, id_out, row, true, resp);
    json_decref(row);
    return rc;
}

/* The stored properties an upsert's alternate key sets on a new row; checks that lookup
 * parts name existing parents. */
static dw_rc key_values(struct emu *emu, struct emu_table *t, const struct dw_dvemu_key *key,
                        json_t *changes, struct emu_err *err)
{
    for (size_t i = 0; i < key->nparts; i++) {
        const struct emu_attr *a = NULL;
        for (size_t j = 0; j < t->nattrs; j++)
            if (key->parts[i].name && strcmp(t->attrs[j].prop, key->parts[i].name) == 0)
                a = &t->attrs[j];
        if (a == NULL)
            continue;
        json_t *v = key->parts[i].value;
        if (a->type == DW_ATTR_LOOKUP) {
            const char *gid = json_string_value(v);
            bool found = false;
            for (size_t j = 0; gid && j < a->ntargets && !found; j++) {
                struct emu_table *pt = emu_table_by_logical(emu, a->targets[j]);
                found = pt && emu_row_find_id(pt, gid);
            }
            if (!found) {
                emu_err_set(err, 404, "0x80040217", "%s With Id = %s Does Not Exist", a->targets[0],
                            gid ? gid : "");
                return DW_ERR_NOT_FOUND;
            }
            json_object_set(changes, a->prop, v);
            continue;
        }
        json_t *sv = check_value(t, a, v, err);
        if (sv == NULL)
            return DW_ERR_INVALID;
        json_object_set_new(changes, a->prop, sv);
    }
    return DW_OK;
}

/* PATCH by key: update, or create when absent, honouring If-Match / If-None-Match. */
static dw_rc do_upsert(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                       const struct dw_dvemu_key *key, json_t *body, struct emu_resp *resp,
                       struct emu_err *err)
{
    bool by_alt;
    struct emu_err nf = {0};
    struct emu_row *r = emu_row_find(t, key, &by_alt, &nf);
    json_t *row = NULL;
    dw_rc rc;
    char id[37];
    if (r == NULL && nf.status != 404) {
        *err = nf;
        return DW_ERR_INVALID;
    }
    if (r) {
        emu_err_clear(&nf);
        if (req->if_none_match && strcmp(req->if_none_match, "*") == 0) {
            emu_err_set(err, 412, "0x80040237",
                        "A record with matching key values already exists.");
            return DW_ERR_EXISTS;
        }
        if (check_if_match(req, r->data, err) != DW_OK) {
            emu_err_clear(&nf);
            return DW_ERR_STATE;
        }
        memcpy(id, r->id, 37);
        row = json_copy(r->data); /* rows are immutable snapshots: write a new version */
        rc = body_changes(emu, t, body, req->content_ids, row, err);
        if (rc == DW_OK) {
            emu_row_finish(emu, t, row, id, false);
            rc = emu_privilege_check(emu, t, EMU_PRIV_WRITE, r->data, row, id, err);
        }
        if (rc == DW_OK)
            rc = check_unique(t, row, id, err);
        if (rc == DW_OK) {
            emu_row_put(emu, t, id, row, "update");
            answer_written(emu, req, t, id, row, false, resp);
        }
        json_decref(row);
        return rc;
    }
    if (req->if_match) { /* "*" or an etag: update only, never create */
        *err = nf;
        return DW_ERR_NOT_FOUND;
    }
    emu_err_clear(&nf);
    row = json_object();
    const char *want_id = by_alt ? NULL : json_string_value(key->parts[0].value);
    rc = body_changes(emu, t, body, req->content_ids, row, err);
    if (rc == DW_OK && by_alt)
        rc = key_values(emu, t, key, row, err);
    if (rc == DW_OK)
        rc = do_create(emu, t, row, want_id, id, err);
    if (rc == DW_OK)
        answer_written(emu, req, t, id, row, true, resp);
    json_decref(row);
    return rc;
}

static json_t *parse_body(const struct emu_req *req, struct emu_table *t, struct emu_err *err)
{
    if (req->json)
        return json_incref(req->json);
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    if (body == NULL)
        emu_err_set(err, 400, "0x80048d19",
                    "Error identified in Payload provided by the user for Entity :'%s', For more "
                    "reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 ----> "
                    " InnerException : Microsoft.OData.ODataException: Invalid JSON. %s",
                    t ? t->set : "", jerr.text);
    return body;
}

/* --- bulk actions ---------------------------------------------------------------------- */

static dw_rc bulk_target_type(const struct emu_table *t, json_t *item, size_t i,
                              struct emu_err *err)
{
    const char *type = json_string_value(json_object_get(item, "@odata.type"));
    if (type && *type == '#')
        type++;
    char *want = dw_asprintf("Microsoft.Dynamics.CRM.%s", t->logical);
    bool ok = type && strcmp(type, want) == 0;
    free(want);
    if (!ok) {
        emu_err_set(err, 400, "0x80048d19",
                    "Error identified in Payload provided by the user for Entity :'%s', For more "
                    "reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 ----> "
                    " InnerException : Microsoft.OData.ODataException: Targets[%zu]: the "
                    "'@odata.type' annotation must be 'Microsoft.Dynamics.CRM.%s'.",
                    t->set, i, t->logical);
        return DW_ERR_INVALID;
    }
    return DW_OK;
}

static void bulk_action(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                        const char *action, struct emu_resp *resp)
{
    struct emu_err err = {0};
    json_t *body = NULL, *ids = json_array();
    bool started = false;
    bool create = strcmp(action, "CreateMultiple") == 0;
    bool update = strcmp(action, "UpdateMultiple") == 0;
    bool upsert = strcmp(action, "UpsertMultiple") == 0;
    if ((!create && !update && !upsert) || (create && !t->bulk_create) ||
        (update && !t->bulk_update) || (upsert && !t->bulk_upsert)) {
        if (!create && !update && !upsert)
            emu_err_set(&err, 404, "0x8006088a", "Resource not found for the segment '%s'.",
                        action);
        else
            emu_err_set(&err, 400, "0x80040800",
                        "The '%s' method does not support entities of type '%s'. "
                        "MessageProcessorCache returned MessageProcessor.Empty.",
                        action, t->logical);
        goto fail;
    }
    if (strcmp(req->method, "POST") != 0) {
        emu_err_set(&err, 405, "0x80060888",
                    "The requested resource does not support http "
                    "method '%s'.",
                    req->method);
        goto fail;
    }
    body = parse_body(req, t, &err);
    if (body == NULL)
        goto fail;
    json_t *targets = json_object_get(body, "Targets");
    if (!json_is_array(targets)) {
        emu_err_set(&err, 400, "0x80048d19",
                    "Error identified in Payload provided by the user for Entity :'%s', For more "
                    "reference please refer: https://go.microsoft.com/fwlink/?linkid=2195293 ----> "
                    " InnerException : Microsoft.OData.ODataException: The parameter 'Targets' "
                    "is missing.",
                    t->set);
        goto fail;
    }
    if (!emu->in_txn) {
        emu_txn_begin(emu);
        started = true;
    }
    size_t i;
    json_t *item;
    json_array_foreach(targets, i, item)
    {
        if (bulk_target_type(t, item, i, &err) != DW_OK)
            goto fail;
        /* Annotations (@odata.type, @odata.id) carry no column value: body_changes skips them. */
        json_t *fields = item;
        const char *odata_id = json_string_value(json_object_get(item, "@odata.id"));
        struct emu_req sub = *req;
        sub.prefer_representation = false;
        sub.if_match = update ? "*" : NULL;
        sub.if_none_match = NULL;
        dw_rc rc;
        if (create) {
            char id[37];
            rc = create_from_body(emu, &sub, t, fields, NULL, id, &err);
            if (rc == DW_OK)
                json_array_append_new(ids, json_string(id));
        } else {
            struct dw_dvemu_key key = {0};
            struct emu_table *kt = t;
            const char *pid = json_string_value(json_object_get(fields, t->primary_id));
            if (odata_id) {
                rc = parse_ref(emu, odata_id, NULL, &kt, &key);
                if (rc == DW_OK && kt != t) {
                    dw_dvemu_key_cleanup(&key);
                    rc = DW_ERR_INVALID;
                }
                if (rc != DW_OK)
                    emu_err_set(&err, 400, "0x80048d19",
                                "Error identified in Payload provided by the user for Entity "
                                ":'%s': Targets[%zu]: invalid '@odata.id' '%s'.",
                                t->set, i, odata_id);
            } else if (pid) {
                rc = DW_OK;
                key.parts = dw_calloc(1, sizeof *key.parts);
                key.parts[0].value = json_string(pid);
                key.nparts = 1;
            } else if (upsert) {
                /* No key at all: an upsert that can only create. */
                char id[37];
                rc = create_from_body(emu, &sub, t, fields, NULL, id, &err);
                if (rc != DW_OK)
                    goto fail;
                continue;
            } else {
                rc = DW_ERR_INVALID;
                emu_err_set(&err, 400, "0x80040203",
                            "Targets[%zu]: the primary key '%s' is required for UpdateMultiple.", i,
                            t->primary_id);
            }
            if (rc == DW_OK) {
                rc = do_upsert(emu, &sub, t, &key, fields, NULL, &err);
                dw_dvemu_key_cleanup(&key);
            }
        }
        if (rc != DW_OK)
            goto fail;
    }
    if (started)
        emu_txn_commit(emu);
    if (create) {
        char *ctx = dw_asprintf("%s" EMU_API_PREFIX
                                "$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                                req->base);
        emu_resp_json(resp, 200, json_pack("{s:s, s:O}", "@odata.context", ctx, "Ids", ids));
        free(ctx);
    } else {
        resp->status = 204;
    }
    goto out;
fail:
    if (started)
        emu_txn_rollback(emu);
    emu_resp_error(resp, &err);
out:
    emu_err_clear(&err);
    json_decref(body);
    json_decref(ids);
}

/* OneToManyRelationshipMetadata of lookup a of table t toward its target j, named as
 * Dataverse names a relationship ("Web API EntityMetadata"; CascadeConfiguration). */
static json_t *one_to_many_json(struct emu *emu, const struct emu_table *t,
                                const struct emu_attr *a, size_t j)
{
    struct emu_table *target = emu_table_by_logical(emu, a->targets[j]);
    char *schema = dw_asprintf("%s_%s_%s", t->logical, a->name, a->targets[j]);
    char *mid = emu_stable_guid(schema, "relationship");
    json_t *rel =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s}}", "SchemaName", schema,
                  "MetadataId", mid, "RelationshipType", "OneToManyRelationship",
                  "ReferencingEntity", t->logical, "ReferencingAttribute", a->name,
                  "ReferencedEntity", a->targets[j], "ReferencedAttribute",
                  target ? target->primary_id : "", "ReferencingEntityNavigationPropertyName",
                  a->navs[j], "ReferencedEntityNavigationPropertyName", a->rnavs[j],
                  "CascadeConfiguration", "Delete", emu_cascade_name(a->cascade_delete[j]));
    free(schema);
    free(mid);
    return rel;
}

/* --- metadata and virtual collections -------------------------------------------------- */

/* The rows of a collection-valued navigation property of t's EntityMetadata (Keys and the
 * relationships; Attributes is answered with its casts by entity_definitions()); NULL for
 * any other name. */
static json_t *entity_nav_rows(struct emu *emu, const struct emu_table *t, const char *nav)
{
    json_t *rows = json_array();
    if (strcmp(nav, "Keys") == 0) {
        for (size_t i = 0; i < t->nkeys; i++)
            json_array_append_new(rows, emu_meta_key_json(t, &t->keys[i]));
    } else if (strcmp(nav, "ManyToOneRelationships") == 0) {
        /* One relationship per lookup target of t, named as Dataverse names them. */
        for (size_t i = 0; i < t->nattrs; i++)
            for (size_t j = 0; j < t->attrs[i].ntargets; j++)
                json_array_append_new(rows, one_to_many_json(emu, t, &t->attrs[i], j));
    } else if (strcmp(nav, "OneToManyRelationships") == 0) {
        /* The same relationships seen from t: every lookup that can name a row of t. */
        for (size_t k = 0; k < emu->ntables; k++) {
            const struct emu_table *u = &emu->tables[k];
            for (size_t i = 0; i < u->nattrs; i++)
                for (size_t j = 0; j < u->attrs[i].ntargets; j++)
                    if (strcmp(u->attrs[i].targets[j], t->logical) == 0)
                        json_array_append_new(rows, one_to_many_json(emu, u, &u->attrs[i], j));
        }
    } else if (strcmp(nav, "ManyToManyRelationships") == 0) {
        /* ManyToManyRelationshipMetadata of the relationships t takes part in. */
        for (size_t i = 0; i < emu->nm2m; i++) {
            const struct emu_m2m *m = &emu->m2m[i];
            if (m->t[0] != t && m->t[1] != t)
                continue;
            char *mid = emu_stable_guid(m->name, "relationship");
            json_array_append_new(
                rows, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "SchemaName",
                                m->name, "MetadataId", mid, "RelationshipType",
                                "ManyToManyRelationship", "Entity1LogicalName", m->t[0]->logical,
                                "Entity2LogicalName", m->t[1]->logical, "IntersectEntityName",
                                m->intersect->logical, "Entity1IntersectAttribute",
                                m->t[0]->primary_id, "Entity2IntersectAttribute",
                                m->t[1]->primary_id, "Entity1NavigationPropertyName", m->nav[0],
                                "Entity2NavigationPropertyName", m->nav[1]));
            free(mid);
        }
    } else {
        json_decref(rows);
        return NULL;
    }
    return rows;
}

/* The attributes of t as AttributeMetadata, with their options when asked. */
static json_t *entity_attribute_rows(const struct emu_table *t, bool options)
{
    json_t *rows = json_array();
    for (size_t i = 0; i < t->nattrs; i++)
        json_array_append_new(rows, emu_meta_attr_json(&t->attrs[i], options));
    return rows;
}

/*
 * Adds the navigation properties $expand names to an EntityMetadata row e of t ("Query
 * table definitions using the Web API": Attributes, Keys, relationships), each with an
 * optional nested $select. Other nested options are refused as not emulated, an unknown
 * name as Dataverse does.
 */
static dw_rc expand_entity(struct emu *emu, json_t *e, const struct emu_table *t, const char *text,
                           struct emu_err *err)
{
    size_t start[32], len[32];
    size_t n = expand_items_split(text, start, len, 32);
    for (size_t k = 0; k < n; k++) {
        char *item = dw_strndup(text + start[k], len[k]);
        char *open = strchr(item, '(');
        char *inner = NULL;
        if (open) {
            size_t il = strlen(open + 1);
            if (il == 0 || open[il] != ')') {
                emu_err_set(err, 400, "0x80060888", "Bad Request - Error in query syntax.");
                free(item);
                return DW_ERR_INVALID;
            }
            open[il] = '\0';
            *open = '\0';
            inner = open + 1;
        }
        json_t *select = NULL;
        if (inner && (strncmp(inner, "$select=", 8) != 0 || strchr(inner, ';'))) {
            emu_err_set(err, 501, "0x80060888",
                        "dvemu does not emulate options other than $select in $expand of "
                        "table definitions ('%s'); see dvemu(1), \"What dvemu does not "
                        "emulate\".",
                        inner);
            free(item);
            return DW_ERR_INVALID;
        }
        if (inner)
            (void)parse_select(inner + 8, NULL, &select, err);
        json_t *rows = strcmp(item, "Attributes") == 0 ? entity_attribute_rows(t, false)
                                                       : entity_nav_rows(emu, t, item);
        if (rows == NULL) {
            err_no_property(err, "EntityMetadata", item);
            json_decref(select);
            free(item);
            return DW_ERR_INVALID;
        }
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row) apply_select(row, select, "MetadataId");
        json_object_set_new(e, item, rows);
        json_decref(select);
        free(item);
    }
    return DW_OK;
}

static void entity_definitions(struct emu *emu, const struct emu_req *req, const char *rest,
                               json_t *query, struct emu_resp *resp)
{
    struct emu_err err = {0};
    if (*rest == '\0' || *rest == '?') {
        const char *es = json_string_value(json_object_get(query, "$expand"));
        json_t *rows = json_array();
        for (size_t i = 0; i < emu->ntables; i++) {
            json_t *e = emu_meta_entity_json(&emu->tables[i]);
            json_array_append_new(rows, e);
            if (es && expand_entity(emu, e, &emu->tables[i], es, &err) != DW_OK) {
                json_decref(rows);
                emu_resp_error(resp, &err);
                emu_err_clear(&err);
                return;
            }
        }
        collection_answer(emu, req, "EntityDefinitions", rows, query, NULL, resp);
        return;
    }
    char *decoded = NULL;
    const char *close = strchr(rest, ')');
    if (*rest != '(' || close == NULL ||
        dw_dvemu_pct_decode(rest + 1, (size_t)(close - rest - 1), &decoded) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888", "Bad Request - Error in query syntax.");
        goto fail;
    }
    struct emu_table *t = NULL;
    char name[128];
    if (sscanf(decoded, "LogicalName='%127[^']'", name) == 1)
        t = emu_table_by_logical(emu, name);
    else if (dw_dvemu_is_guid(decoded, strlen(decoded)))
        for (size_t i = 0; i < emu->ntables; i++)
            if (strcasecmp(emu->tables[i].metadata_id, decoded) == 0)
                t = &emu->tables[i];
    if (t == NULL) {
        emu_err_set(&err, 404, "0x80040217",
                    "Could not find an entity with specified entity key: %s", decoded);
        goto fail;
    }
    const char *sub = close + 1;
    if (*sub == '\0') {
        json_t *e = emu_meta_entity_json(t);
        const char *ss = json_string_value(json_object_get(query, "$select"));
        const char *es = json_string_value(json_object_get(query, "$expand"));
        json_t *select = NULL;
        if (es && expand_entity(emu, e, t, es, &err) != DW_OK) {
            json_decref(e);
            goto fail;
        }
        if (ss && parse_select(ss, NULL, &select, &err) == DW_OK) {
            json_t *names = es ? expand_names(es) : json_array();
            json_array_extend(select, names);
            json_decref(names);
            apply_select(e, select, "MetadataId");
        }
        json_decref(select);
        char *ctx =
            dw_asprintf("%s" EMU_API_PREFIX "$metadata#EntityDefinitions/$entity", req->base);
        json_object_set_new(e, "@odata.context", json_string(ctx));
        free(ctx);
        emu_resp_json(resp, 200, e);
        goto out;
    }
    json_t *nav_rows = *sub == '/' ? entity_nav_rows(emu, t, sub + 1) : NULL;
    if (nav_rows) {
        char *context = dw_asprintf("EntityDefinitions(...)%s", sub);
        collection_answer(emu, req, context, nav_rows, query, NULL, resp);
        free(context);
        goto out;
    }
    if (strncmp(sub, "/Attributes", 11) == 0) {
        const char *cast = sub + 11;
        const char *want = NULL;
        if (strncmp(cast, "/Microsoft.Dynamics.CRM.", 24) == 0)
            want = cast + 24;
        else if (*cast != '\0') {
            emu_err_set(&err, 404, "0x8006088a", "Resource not found for the segment '%s'.",
                        cast + 1);
            goto fail;
        }
        const char *expand = json_string_value(json_object_get(query, "$expand"));
        bool options = expand && strstr(expand, "OptionSet");
        json_t *rows = json_array();
        for (size_t i = 0; i < t->nattrs; i++) {
            json_t *a = emu_meta_attr_json(&t->attrs[i], options);
            const char *type = json_string_value(json_object_get(a, "@odata.type"));
            if (want && strcmp(type + strlen("#Microsoft.Dynamics.CRM."), want) != 0) {
                json_decref(a);
                continue;
            }
            json_array_append_new(rows, a);
        }
        collection_answer(emu, req, "EntityDefinitions(...)/Attributes", rows, query, NULL, resp);
        goto out;
    }
    emu_err_set(&err, 404, "0x8006088a", "Resource not found for the segment '%s'.", sub + 1);
fail:
    emu_resp_error(resp, &err);
out:
    free(decoded);
    emu_err_clear(&err);
}

static void sdk_message_filters(struct emu *emu, const struct emu_req *req, json_t *query,
                                struct emu_resp *resp)
{
    static const char *const messages[] = {"Create",         "Update",         "Delete",
                                           "CreateMultiple", "UpdateMultiple", "UpsertMultiple"};
    json_t *rows = json_array();
    for (size_t i = 0; i < emu->ntables; i++) {
        const struct emu_table *t = &emu->tables[i];
        bool supported[] = {true, true, true, t->bulk_create, t->bulk_update, t->bulk_upsert};
        for (size_t m = 0; m < sizeof messages / sizeof messages[0]; m++) {
            if (!supported[m])
                continue;
            char *fid = emu_stable_guid(t->logical, messages[m]);
            char *mid = emu_stable_guid("sdkmessage", messages[m]);
            json_array_append_new(
                rows, json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:b}", "sdkmessagefilterid", fid,
                                "primaryobjecttypecode", t->logical, "_sdkmessageid_value", mid,
                                "sdkmessageid", "sdkmessageid", mid, "name", messages[m],
                                "iscustomprocessingstepallowed", 1));
            free(fid);
            free(mid);
        }
    }
    collection_answer(emu, req, "sdkmessagefilters", rows, query, NULL, resp);
}

/* System query options dvemu answers (and fetchXml, on a collection). Any other "$..."
 * option is refused with an error in Dataverse's shape: nothing is silently ignored. */
static bool query_refused(const struct emu_req *req, json_t *query, struct emu_err *err)
{
    /* $id names the row of a DELETE <set>(<id>)/<nav>/$ref ("Associate and disassociate"). */
    size_t plen = strlen(req->path);
    bool ref_delete = strcmp(req->method, "DELETE") == 0 && plen > 5 &&
                      strcmp(req->path + plen - 5, "/$ref") == 0;
    static const char *const known[] = {"$select", "$filter",    "$orderby", "$top",
                                        "$count",  "$skiptoken", "$expand"};
    static const char *const not_emulated[] = {"$apply", "savedQuery", "userQuery"};
    const char *k;
    json_t *v;
    json_object_foreach(query, k, v)
    {
        for (size_t i = 0; i < sizeof not_emulated / sizeof not_emulated[0]; i++)
            if (strcmp(k, not_emulated[i]) == 0) {
                emu_err_set(err, 501, "0x80060888",
                            "dvemu does not emulate the '%s' query option; see dvemu(1), "
                            "\"What dvemu does not emulate\".",
                            k);
                return true;
            }
        if (k[0] != '$')
            continue; /* custom query options and parameter aliases (@p1) */
        bool ok = ref_delete && strcmp(k, "$id") == 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            emu_err_set(err, 400, "0x80060888", "The query parameter %s is not supported", k);
            return true;
        }
    }
    return false;
}

/* GET <set>/$count: the number of rows (that match $filter), as text, at most 5,000
 * ("Count rows using OData"). */
static void count_answer(struct emu_table *t, json_t *query, struct emu_resp *resp)
{
    struct emu_err err = {0};
    struct dw_dvemu_filter *filter = NULL;
    const char *fs = json_string_value(json_object_get(query, "$filter"));
    char *msg = NULL;
    if (fs && dw_dvemu_filter_parse(fs, &filter, &msg) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888", "%s", msg);
        free(msg);
        emu_resp_error(resp, &err);
        emu_err_clear(&err);
        return;
    }
    size_t n = 0;
    for (struct emu_row *r = t->rows; r; r = r->hh.next)
        n += filter == NULL || dw_dvemu_filter_match(filter, r->data);
    dw_dvemu_filter_free(filter);
    resp->status = 200;
    (void)dw_buf_printf(&resp->body, "%zu", n > EMU_PAGE_MAX ? (size_t)EMU_PAGE_MAX : n);
    resp->content_type = "text/plain; charset=utf-8";
}

/* --- navigation properties and property paths ----------------------------------------- */

/* Where the key of "(<key>)<tail>" ends: the ')' outside quotes; 0 when there is none. */
static size_t key_end(const char *rest)
{
    bool quoted = false;
    for (size_t i = 1; rest[i]; i++) {
        if (rest[i] == '\'')
            quoted = !quoted; /* a doubled quote toggles twice */
        else if (rest[i] == ')' && !quoted)
            return i;
    }
    return 0;
}

/* The lookup of another table whose collection-valued navigation property back to t is
 * nav; *child is that table, *ti the target's index. NULL when there is none. */
static const struct emu_attr *collection_nav(struct emu *emu, const struct emu_table *t,
                                             const char *nav, size_t navlen,
                                             struct emu_table **child, size_t *ti)
{
    for (size_t c = 0; c < emu->ntables; c++)
        for (size_t i = 0; i < emu->tables[c].nattrs; i++) {
            const struct emu_attr *a = &emu->tables[c].attrs[i];
            for (size_t j = 0; j < a->ntargets; j++)
                if (strcmp(a->targets[j], t->logical) == 0 && strlen(a->rnavs[j]) == navlen &&
                    strncmp(a->rnavs[j], nav, navlen) == 0) {
                    *child = &emu->tables[c];
                    *ti = j;
                    return a;
                }
        }
    return NULL;
}

/* Updates one row (never creates it) with body, as a PATCH with If-Match: * would. */
static dw_rc update_only(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                         const struct dw_dvemu_key *key, json_t *body, struct emu_resp *resp,
                         struct emu_err *err)
{
    struct emu_req sub = *req;
    sub.if_match = "*";
    sub.if_none_match = NULL;
    sub.prefer_representation = false;
    sub.in_batch = false;
    dw_rc rc = do_upsert(emu, &sub, t, key, body, resp, err);
    if (rc == DW_OK) { /* 204 and nothing else, as Dataverse answers these */
        for (size_t i = 0; i < resp->nheaders; i++) {
            free(resp->hname[i]);
            free(resp->hvalue[i]);
        }
        resp->nheaders = 0;
        resp->status = 204;
    }
    return rc;
}

/* The row of table want that a reference (an "@odata.id" or a $id) names; NULL with err set:
 * 400 "<usage> naming a row of '<set>'." when it names none of want's, 404 when it is absent. */
static struct emu_row *referenced_row(struct emu *emu, const struct emu_req *req, const char *ref,
                                      struct emu_table *want, const char *usage,
                                      struct emu_err *err)
{
    struct emu_table *t = NULL;
    struct dw_dvemu_key key = {0};
    struct emu_row *r = NULL;
    bool by_alt;
    if (ref == NULL || parse_ref(emu, ref, req->content_ids, &t, &key) != DW_OK || t != want)
        emu_err_set(err, 400, "0x80048d19", "%s naming a row of '%s'.", usage, want->set);
    else
        r = emu_row_find(want, &key, &by_alt, err);
    dw_dvemu_key_cleanup(&key);
    return r;
}

/*
 * A many-to-many relationship's navigation property m->nav[side] of row id ("Associate and
 * disassociate table rows using the Web API"): GET lists the related rows, POST .../$ref
 * with {"@odata.id": ...} associates one (204; 412 0x80040237 when it is already), DELETE
 * .../<nav>(<key>)/$ref or .../<nav>/$ref?$id=<url> disassociates one (204). after is what
 * follows the property. False
 * when the method and path name no such operation; else the answer is in resp or err.
 */
static bool many_to_many(struct emu *emu, const struct emu_req *req, const struct emu_m2m *m,
                         int side, const char *id, const char *after, json_t *query,
                         struct emu_resp *resp, struct emu_err *err)
{
    struct emu_table *other = m->t[1 - side];
    struct dw_dvemu_key ckey = {0};
    bool by_alt, handled = true;
    struct emu_row *o = NULL;
    if (strcmp(req->method, "GET") == 0 && *after == '\0') {
        collection_answer(emu, req, other->set, emu_m2m_related(m, side, id), query, other, resp);
        return true;
    }
    if (strcmp(req->method, "POST") == 0 && strcmp(after, "/$ref") == 0) {
        json_t *body = req->json ? json_incref(req->json)
                                 : json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
        o = referenced_row(emu, req, json_string_value(json_object_get(body, "@odata.id")), other,
                           "A reference needs a body {\"@odata.id\": ...}", err);
        if (o && emu_m2m_associate(emu, m, side, id, o->id, err) == DW_OK)
            resp->status = 204;
        json_decref(body);
    } else if (strcmp(req->method, "DELETE") == 0 && strcmp(after, "/$ref") == 0) {
        o = referenced_row(emu, req, json_string_value(json_object_get(query, "$id")), other,
                           "A disassociation needs $id=<url>", err);
        if (o && emu_m2m_disassociate(emu, m, side, id, o->id, err) == DW_OK)
            resp->status = 204;
    } else if (strcmp(req->method, "DELETE") == 0 && *after == '(') {
        size_t close = key_end(after);
        handled = close > 0 && strcmp(after + close + 1, "/$ref") == 0 &&
                  dw_dvemu_key_parse(after + 1, close - 1, &ckey) == DW_OK;
        if (handled && (o = emu_row_find(other, &ckey, &by_alt, err)) != NULL &&
            emu_m2m_disassociate(emu, m, side, id, o->id, err) == DW_OK)
            resp->status = 204;
    } else {
        handled = false;
    }
    dw_dvemu_key_cleanup(&ckey);
    return handled;
}

/*
 * "<set>(<key>)/<tail>": a property path ("Update and delete table rows using the Web API":
 * GET, PUT {"value": v} and DELETE of one column) or a navigation property ("Associate and
 * disassociate table rows using the Web API": PUT/DELETE <single>/$ref, POST <collection>/$ref,
 * DELETE <collection>(<id>)/$ref; GET <collection> lists the related rows).
 */
static void nav_or_property(struct emu *emu, const struct emu_req *req, struct emu_table *t,
                            const struct dw_dvemu_key *key, const char *tail, json_t *query,
                            struct emu_resp *resp)
{
    struct emu_err err = {0};
    json_t *body = NULL, *change = NULL;
    struct dw_dvemu_key ckey = {0};
    bool by_alt;
    size_t seglen = strcspn(tail, "(/");
    const char *after = tail + seglen;
    bool ref = strcmp(after, "/$ref") == 0;
    struct emu_row *r = emu_row_find(t, key, &by_alt, &err);
    if (r == NULL)
        goto fail;
    char *seg = dw_strndup(tail, seglen);
    const struct emu_attr *prop = NULL, *single = NULL;
    size_t ti = 0;
    for (size_t i = 0; i < t->nattrs; i++) {
        const struct emu_attr *a = &t->attrs[i];
        if (a->type != DW_ATTR_LOOKUP && strcmp(a->name, seg) == 0)
            prop = a;
        for (size_t j = 0; j < a->ntargets; j++)
            if (strcmp(a->navs[j], seg) == 0) {
                single = a;
                ti = j;
            }
    }
    struct emu_table *child = NULL;
    size_t cti = 0;
    const struct emu_attr *coll =
        prop || single ? NULL : collection_nav(emu, t, tail, seglen, &child, &cti);
    int side = 0;
    const struct emu_m2m *mm =
        prop || single || coll ? NULL : emu_m2m_find(emu, t, tail, seglen, &side);
    const char *m = req->method;
    if (prop && *after == '\0') {
        if (strcmp(m, "GET") == 0) {
            json_t *v = json_object_get(r->data, prop->prop);
            char *ctx = dw_asprintf("%s" EMU_API_PREFIX "$metadata#%s(%s)/%s", req->base, t->set,
                                    r->id, prop->name);
            emu_resp_json(
                resp, 200,
                json_pack("{s:s, s:O}", "@odata.context", ctx, "value", v ? v : json_null()));
            free(ctx);
            goto done;
        }
        if (strcmp(m, "PUT") == 0 || strcmp(m, "DELETE") == 0) {
            json_t *v = NULL;
            if (strcmp(m, "PUT") == 0) {
                body = req->json ? json_incref(req->json)
                                 : json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
                v = json_object_get(body, "value");
                if (v == NULL) {
                    emu_err_set(&err, 400, "0x80048d19",
                                "A property update needs a body {\"value\": ...} naming the "
                                "new value of '%s'.",
                                prop->name);
                    goto fail_seg;
                }
            }
            change = json_pack("{s:O}", prop->name, v ? v : json_null());
            if (update_only(emu, req, t, key, change, resp, &err) != DW_OK)
                goto fail_seg;
            goto done;
        }
    } else if (single && ref) {
        char *bind = dw_asprintf("%s@odata.bind", single->navs[ti]);
        if (strcmp(m, "PUT") == 0) {
            body = req->json ? json_incref(req->json)
                             : json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
            json_t *id = json_object_get(body, "@odata.id");
            if (!json_is_string(id)) {
                free(bind);
                emu_err_set(&err, 400, "0x80048d19",
                            "A reference needs a body {\"@odata.id\": ...} naming the row.");
                goto fail_seg;
            }
            change = json_pack("{s:O}", bind, id);
        } else if (strcmp(m, "DELETE") == 0) {
            change = json_pack("{s:n}", bind);
        }
        free(bind);
        if (change) {
            if (update_only(emu, req, t, key, change, resp, &err) != DW_OK)
                goto fail_seg;
            goto done;
        }
    } else if (coll) {
        char *parent = dw_asprintf("%s(%s)", t->set, r->id);
        char *bind = dw_asprintf("%s@odata.bind", coll->navs[cti]);
        struct emu_table *ct = child;
        bool handled = false;
        if (strcmp(m, "GET") == 0 && *after == '\0') {
            json_t *rows = json_array();
            for (struct emu_row *cr = child->rows; cr; cr = cr->hh.next) {
                const char *pv = json_string_value(json_object_get(cr->data, coll->prop));
                if (pv && strcmp(pv, r->id) == 0)
                    json_array_append_new(rows, emu_row_public(child, cr->data));
            }
            collection_answer(emu, req, child->set, rows, query, child, resp);
            handled = true;
        } else if (strcmp(m, "POST") == 0 && ref) {
            body = req->json ? json_incref(req->json)
                             : json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
            const char *id = json_string_value(json_object_get(body, "@odata.id"));
            if (id == NULL || parse_ref(emu, id, req->content_ids, &ct, &ckey) != DW_OK ||
                ct != child) {
                emu_err_set(&err, 400, "0x80048d19",
                            "A reference needs a body {\"@odata.id\": ...} naming a row of '%s'.",
                            child->set);
            } else {
                change = json_pack("{s:s}", bind, parent);
                (void)update_only(emu, req, child, &ckey, change, resp, &err);
            }
            handled = true;
        } else if (strcmp(m, "DELETE") == 0 && *after == '(') {
            size_t close = key_end(after);
            if (close > 0 && strcmp(after + close + 1, "/$ref") == 0 &&
                dw_dvemu_key_parse(after + 1, close - 1, &ckey) == DW_OK) {
                struct emu_err nf = {0};
                struct emu_row *cr = emu_row_find(child, &ckey, &by_alt, &nf);
                const char *pv =
                    cr ? json_string_value(json_object_get(cr->data, coll->prop)) : NULL;
                if (cr == NULL) {
                    err = nf;
                } else if (pv == NULL || strcmp(pv, r->id) != 0) {
                    emu_err_clear(&nf);
                    emu_err_set(&err, 404, "0x80040217",
                                "The row %s is not associated with %s through '%s'.", cr->id,
                                parent, coll->rnavs[cti]);
                } else {
                    change = json_pack("{s:n}", bind);
                    (void)update_only(emu, req, child, &ckey, change, resp, &err);
                }
                handled = true;
            }
        }
        free(parent);
        free(bind);
        if (handled) {
            if (err.status)
                goto fail_seg;
            goto done;
        }
    }
    if (mm && many_to_many(emu, req, mm, side, r->id, after, query, resp, &err))
        goto done_or_fail;
    if (prop == NULL && single == NULL && coll == NULL && mm == NULL)
        emu_err_set(&err, 400, "0x0",
                    "Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.",
                    seg, t->logical);
    else
        emu_err_set(&err, 405, "0x80060888",
                    "The requested resource does not support http method '%s'.", m);
    goto fail_seg;
done_or_fail:
    if (err.status == 0)
        goto done;
fail_seg:
    free(seg);
fail:
    emu_resp_error(resp, &err);
    goto out;
done:
    free(seg);
out:
    emu_err_clear(&err);
    dw_dvemu_key_cleanup(&ckey);
    json_decref(body);
    json_decref(change);
}

/* --- routing --------------------------------------------------------------------------- */

static void route_locked(struct emu *emu, const struct emu_req *req, struct emu_resp *resp)
{
    struct emu_err err = {0};
    json_t *query = parse_query(req->query);
    json_t *body = NULL;
    struct dw_dvemu_key key = {0};
    const char *path = req->path;
    size_t seg = strcspn(path, "(/");
    const char *rest = path + seg;
    if (query_refused(req, query, &err))
        goto fail;

    if ((seg == 6 && strncmp(path, "WhoAmI", 6) == 0) &&
        (strcmp(rest, "") == 0 || strcmp(rest, "()") == 0)) {
        char *ctx = dw_asprintf(
            "%s" EMU_API_PREFIX "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", req->base);
        char *uid = emu_stable_guid("user", req->user ? req->user : "");
        char *bu = emu_stable_guid("businessunit", "root");
        char *org = emu->organization_id[0]
                        ? dw_strdup(emu->organization_id)
                        : emu_stable_guid("organization", emu->opt->tenant ? emu->opt->tenant : "");
        emu_resp_json(resp, 200,
                      json_pack("{s:s, s:s, s:s, s:s}", "@odata.context", ctx, "BusinessUnitId", bu,
                                "UserId", uid, "OrganizationId", org));
        free(ctx);
        free(uid);
        free(bu);
        free(org);
        goto out;
    }
    static const char by_name[] =
        "/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='";
    const char *fn = strstr(rest, by_name);
    if (seg == 11 && strncmp(path, "systemusers", 11) == 0 && fn && rest[0] == '(' &&
        strcmp(req->method, "GET") == 0) {
        char *name = dw_strndup(fn + strlen(by_name), strcspn(fn + strlen(by_name), "'"));
        emu_user_privilege_by_name(emu, name, resp);
        free(name);
        goto out;
    }
    if (seg == 17 && strncmp(path, "EntityDefinitions", 17) == 0 &&
        strcmp(req->method, "GET") == 0) {
        entity_definitions(emu, req, rest, query, resp);
        goto out;
    }
    if (seg == 17 && strncmp(path, "sdkmessagefilters", 17) == 0 && *rest == '\0' &&
        strcmp(req->method, "GET") == 0) {
        sdk_message_filters(emu, req, query, resp);
        goto out;
    }
    struct emu_table *t = emu_table_by_set(emu, path, seg);
    if (t == NULL) {
        char *name = dw_strndup(path, seg);
        emu_err_set(&err, 404, "0x8006088a", "Resource not found for the segment '%s'.", name);
        free(name);
        goto fail;
    }
    if (t->intersect && strcmp(req->method, "GET") != 0) { /* written by associating only */
        emu_err_set(&err, 405, "0x80060888",
                    "The requested resource does not support http method '%s'.", req->method);
        goto fail;
    }
    const char *wsel = json_string_value(json_object_get(query, "$select"));
    json_t *wselect = NULL;
    const char *wexp = json_string_value(json_object_get(query, "$expand"));
    if (strcmp(req->method, "GET") != 0) { /* returned by return=representation */
        struct expand_item *witems = NULL;
        size_t nw = 0;
        if (wsel && parse_select(wsel, t, &wselect, &err) != DW_OK)
            goto fail;
        json_decref(wselect);
        if (wexp && parse_expand(emu, wexp, t, &witems, &nw, &err) != DW_OK)
            goto fail;
        expand_free(witems, nw);
    }
    if (strcmp(rest, "/$count") == 0 && strcmp(req->method, "GET") == 0) {
        count_answer(t, query, resp);
        goto out;
    }
    if (*rest == '/' && strncmp(rest + 1, "Microsoft.Dynamics.CRM.", 23) == 0) {
        bulk_action(emu, req, t, rest + 24, resp);
        goto out;
    }
    const char *fetch = json_string_value(json_object_get(query, "fetchXml"));
    if (fetch && (*rest != '\0' || strcmp(req->method, "GET") != 0)) {
        emu_err_set(&err, 400, "0x80060888",
                    "The query parameter fetchXml is only valid on a GET of an entity set.");
        goto fail;
    }
    if (*rest == '\0') {
        if (fetch) {
            emu_fetchxml_answer(req, t, fetch, resp);
            goto out;
        }
        if (strcmp(req->method, "GET") == 0) {
            collection_answer(emu, req, t->set, NULL, query, t, resp);
            goto out;
        }
        if (strcmp(req->method, "POST") == 0) {
            char id[37];
            if ((body = parse_body(req, t, &err)) == NULL ||
                create_from_body(emu, req, t, body, resp, id, &err) != DW_OK)
                goto fail;
            goto out;
        }
        emu_err_set(&err, 405, "0x80060888",
                    "The requested resource does not support http method '%s'.", req->method);
        goto fail;
    }
    size_t rlen = strlen(rest);
    size_t kend = *rest == '(' ? key_end(rest) : 0;
    if (kend > 0 && kend + 1 < rlen && rest[kend + 1] == '/') {
        if (dw_dvemu_key_parse(rest + 1, kend - 1, &key) != DW_OK) {
            emu_err_set(&err, 400, "0x80060888", "Bad Request - Error in query syntax.");
            goto fail;
        }
        nav_or_property(emu, req, t, &key, rest + kend + 2, query, resp);
        goto out;
    }
    if (*rest != '(' || rest[rlen - 1] != ')' ||
        dw_dvemu_key_parse(rest + 1, rlen - 2, &key) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888", "Bad Request - Error in query syntax.");
        goto fail;
    }
    /* Dataverse's front end refuses these characters in a URL path, even percent-encoded,
     * so a row keyed by such a value cannot be addressed by key (clients must go by id). */
    for (size_t i = 0; i < key.nparts && !emu->opt->lenient_keys; i++) {
        const char *sv = json_string_value(key.parts[i].value);
        size_t bad = sv ? strcspn(sv, "/<>*%&:\\?+") : 0;
        if (sv && sv[bad] != '\0') {
            emu_err_set(&err, 400, "",
                        "A potentially dangerous Request.Path value was detected from the "
                        "client (%c).",
                        sv[bad]);
            goto fail;
        }
    }
    bool by_alt;
    if (strcmp(req->method, "GET") == 0) {
        struct emu_row *r = emu_row_find(t, &key, &by_alt, &err);
        if (r == NULL)
            goto fail;
        /* "Perform conditional operations": unchanged since the etag the client holds. */
        char *etag = row_etag(r->data);
        bool unchanged = req->if_none_match && strcmp(req->if_none_match, etag) == 0;
        free(etag);
        if (unchanged) {
            resp->status = 304;
            goto out;
        }
        json_t *select = NULL;
        const char *ss = json_string_value(json_object_get(query, "$select"));
        if (ss && parse_select(ss, t, &select, &err) != DW_OK)
            goto fail;
        struct expand_item *xitems = NULL;
        size_t nx = 0;
        const char *es = json_string_value(json_object_get(query, "$expand"));
        if (es && parse_expand(emu, es, t, &xitems, &nx, &err) != DW_OK) {
            json_decref(select);
            goto fail;
        }
        select_keep_expanded(select, xitems, nx);
        json_t *row = emu_row_public(t, r->data);
        apply_expand(emu, row, t, xitems, nx);
        expand_free(xitems, nx);
        apply_select(row, select, t->primary_id);
        json_decref(select);
        annotate(emu, req, t, row, resp);
        char *ctx = dw_asprintf("%s" EMU_API_PREFIX "$metadata#%s/$entity", req->base, t->set);
        json_object_set_new(row, "@odata.context", json_string(ctx));
        free(ctx);
        emu_resp_json(resp, 200, row);
        goto out;
    }
    if (strcmp(req->method, "DELETE") == 0) {
        struct emu_row *r = emu_row_find(t, &key, &by_alt, &err);
        if (r == NULL)
            goto fail;
        char id[37];
        memcpy(id, r->id, 37);
        if (check_if_match(req, r->data, &err) != DW_OK ||
            emu_privilege_check(emu, t, EMU_PRIV_DELETE, r->data, NULL, id, &err) != DW_OK ||
            emu_row_delete(emu, t, id, &err) != DW_OK)
            goto fail;
        resp->status = 204;
        goto out;
    }
    if (strcmp(req->method, "PATCH") == 0) {
        if ((body = parse_body(req, t, &err)) == NULL ||
            do_upsert(emu, req, t, &key, body, resp, &err) != DW_OK)
            goto fail;
        goto out;
    }
    emu_err_set(&err, 405, "0x80060888",
                "The requested resource does not support http method '%s'.", req->method);
fail:
    emu_resp_error(resp, &err);
out:
    emu_err_clear(&err);
    dw_dvemu_key_cleanup(&key);
    json_decref(body);
    json_decref(query);
}

/* One request under store_lock: its optional parameters are checked before anything is
 * done, and the request is recorded with them whatever it answers. */
static void handle_locked(struct emu *emu, const struct emu_req *req, struct emu_resp *resp)
{
    uint64_t rows0 = emu->rows_put;
    struct emu_err err = {0};
    if (emu_opts_check(emu, req, &err) != DW_OK)
        emu_resp_error(resp, &err);
    else
        route_locked(emu, req, resp);
    emu_err_clear(&err);
    if (emu_opts_bypass_sync(req))
        emu->rows_bypassed += emu->rows_put - rows0;
    json_t *query = parse_query(req->query);
    emu_reqlog_add(emu, req, json_string_value(json_object_get(query, "tag")), resp->status);
    json_decref(query);
}

void emu_api_handle(struct emu *emu, const struct emu_req *req, struct emu_resp *resp)
{
    /* Parse the body before taking the lock: with many clients, parsing large bulk
     * requests then runs in parallel and only the apply is serialized. */
    struct emu_req pre = *req;
    if (req->json == NULL && req->body_len > 0)
        pre.json = json_loadb(req->body, req->body_len, 0, NULL);
    pthread_mutex_lock(&emu->store_lock);
    set_now(emu);
    emu->caller = req->user;
    uint64_t rows0 = emu->rows_put, bypassed0 = emu->rows_bypassed;
    handle_locked(emu, &pre, resp);
    resp->rows = (size_t)(emu->rows_put - rows0);
    resp->rows_bypassed = (size_t)(emu->rows_bypassed - bypassed0);
    emu->caller = NULL;
    pthread_mutex_unlock(&emu->store_lock);
    if (pre.json != req->json)
        json_decref(pre.json);
}

/* --- $batch ---------------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 412:
        return "Precondition Failed";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* Writes one response part (headers of the MIME part, then the HTTP response). */
static void put_part(struct dw_buf *out, const char *boundary, const char *content_id,
                     const struct emu_resp *r)
{
    (void)dw_buf_printf(out,
                        "--%s\r\nContent-Type: application/http\r\n"
                        "Content-Transfer-Encoding: binary\r\n",
                        boundary);
    if (content_id)
        (void)dw_buf_printf(out, "Content-ID: %s\r\n", content_id);
    (void)dw_buf_printf(out, "\r\nHTTP/1.1 %d %s\r\n", r->status, reason(r->status));
    if (r->body.len)
        (void)dw_buf_printf(out, "Content-Type: %s\r\n", r->content_type);
    (void)dw_buf_puts(out, "OData-Version: 4.0\r\n");
    for (size_t i = 0; i < r->nheaders; i++)
        (void)dw_buf_printf(out, "%s: %s\r\n", r->hname[i], r->hvalue[i]);
    (void)dw_buf_puts(out, "\r\n");
    (void)dw_buf_append(out, r->body.data ? r->body.data : "", r->body.len);
    (void)dw_buf_puts(out, "\r\n");
}

/* Runs one embedded request. content_ids may be NULL outside a changeset. */
static void run_inner(struct emu *emu, const struct emu_req *outer,
                      const struct dw_dvemu_part *part, json_t *content_ids, struct emu_resp *r,
                      char **content_id)
{
    struct dw_dvemu_inner in;
    struct emu_err err = {0};
    *content_id = NULL;
    if (dw_dvemu_header_get(part->headers, part->headers_len, "Content-ID", content_id) != DW_OK)
        *content_id = NULL;
    if (dw_dvemu_inner_parse(part->body, part->body_len, &in) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888",
                    "The message header '' is invalid. The header value must be of the format "
                    "'<header name>: <header value>'.");
        emu_resp_error(r, &err);
        emu_err_clear(&err);
        return;
    }
    if (*content_id == NULL &&
        dw_dvemu_header_get(in.headers, in.headers_len, "Content-ID", content_id) != DW_OK)
        *content_id = NULL;
    char *url = dw_strndup(in.url, in.url_len);
    char *target = url;
    char *p = strstr(url, EMU_API_PREFIX);
    if (p)
        target = p + strlen(EMU_API_PREFIX);
    char *resolved = NULL;
    if (target[0] == '$' && content_ids) {
        size_t n = strspn(target + 1, "0123456789");
        char *id = dw_strndup(target + 1, n);
        const char *ref = json_string_value(json_object_get(content_ids, id));
        free(id);
        if (ref) {
            resolved = dw_asprintf("%s%s", ref, target + 1 + n);
            target = resolved;
        }
    }
    if (target[0] == '$' && isdigit((unsigned char)target[1]) && resolved == NULL) {
        err_content_id(&err, target);
        emu_resp_error(r, &err);
        emu_err_clear(&err);
        free(url);
        return;
    }
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    char *prefer = NULL, *if_match = NULL, *if_none = NULL;
    (void)dw_dvemu_header_get(in.headers, in.headers_len, "Prefer", &prefer);
    (void)dw_dvemu_header_get(in.headers, in.headers_len, "If-Match", &if_match);
    (void)dw_dvemu_header_get(in.headers, in.headers_len, "If-None-Match", &if_none);
    /* A part's optional parameters are its own headers; those of the $batch request apply
     * to parts that do not set them. */
    char *opts[EMU_OPT_COUNT] = {0};
    for (int i = 0; i < EMU_OPT_COUNT; i++)
        (void)dw_dvemu_header_get(in.headers, in.headers_len, emu_opt_headers[i], &opts[i]);
    struct emu_req sub = {
        .method = in.method,
        .path = target,
        .query = query,
        .body = in.body,
        .body_len = in.body_len,
        .prefer_representation = prefer && strstr(prefer, "return=representation"),
        .max_page_size = emu_prefer_max_page_size(prefer),
        .if_match = if_match,
        .if_none_match = if_none,
        .content_ids = content_ids,
        .in_batch = true,
        .user = outer->user,
        .prefer = prefer,
        .base = outer->base,
    };
    for (int i = 0; i < EMU_OPT_COUNT; i++)
        sub.opts[i] = opts[i] ? opts[i] : outer->opts[i];
    handle_locked(emu, &sub, r);
    for (int i = 0; i < EMU_OPT_COUNT; i++)
        free(opts[i]);
    free(prefer);
    free(if_match);
    free(if_none);
    free(resolved);
    free(url);
}

void emu_batch_handle(struct emu *emu, const struct emu_req *req, const char *content_type,
                      bool continue_on_error, struct emu_resp *resp)
{
    struct emu_err err = {0};
    char *boundary = NULL;
    struct dw_dvemu_part *parts = NULL;
    size_t nparts = 0;
    struct dw_buf out;
    dw_buf_init(&out, 0);
    if (content_type == NULL || strncasecmp(content_type, "multipart/mixed", 15) != 0 ||
        dw_dvemu_boundary(content_type, &boundary) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888",
                    "The content type '%s' specifies a batch payload; however, the payload "
                    "either does not include a batch boundary or includes more than one boundary. "
                    "In OData, batch payload content types must specify exactly one batch "
                    "boundary in the '=boundary' parameter.",
                    content_type ? content_type : "");
        goto fail;
    }
    if (dw_dvemu_multipart_parse(req->body, req->body_len, boundary, &parts, &nparts) != DW_OK) {
        emu_err_set(&err, 400, "0x80060888",
                    "The MIME multipart message is malformed: it does not contain the boundary "
                    "'%s' as the batch and end delimiters require.",
                    boundary);
        goto fail;
    }
    /* Count every request, those inside changesets included, against the 1000 limit. */
    size_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        char *ct = NULL, *cb = NULL;
        struct dw_dvemu_part *sub = NULL;
        size_t nsub = 1;
        if (dw_dvemu_header_get(parts[i].headers, parts[i].headers_len, "Content-Type", &ct) ==
                DW_OK &&
            strncasecmp(ct, "multipart/mixed", 15) == 0 && dw_dvemu_boundary(ct, &cb) == DW_OK &&
            dw_dvemu_multipart_parse(parts[i].body, parts[i].body_len, cb, &sub, &nsub) != DW_OK)
            nsub = 1;
        total += nsub;
        free(sub);
        free(ct);
        free(cb);
    }
    if (total > EMU_MAX_BATCH) {
        emu_err_set(&err, 400, "0x8005f103",
                    "The number of requests in the batch exceeds the maximum of %d.",
                    EMU_MAX_BATCH);
        goto fail;
    }
    char rb[64], gid[37];
    emu_new_guid(gid);
    snprintf(rb, sizeof rb, "batchresponse_%s", gid);
    bool failed = false;
    pthread_mutex_lock(&emu->store_lock);
    set_now(emu);
    emu->caller = req->user;
    uint64_t rows0 = emu->rows_put, bypassed0 = emu->rows_bypassed;
    for (size_t i = 0; i < nparts && !(failed && !continue_on_error); i++) {
        char *ct = NULL, *cb = NULL;
        (void)dw_dvemu_header_get(parts[i].headers, parts[i].headers_len, "Content-Type", &ct);
        if (ct && strncasecmp(ct, "multipart/mixed", 15) == 0) {
            struct dw_dvemu_part *sub = NULL;
            size_t nsub = 0;
            struct dw_buf cs;
            dw_buf_init(&cs, 0);
            char csb[64];
            emu_new_guid(gid);
            snprintf(csb, sizeof csb, "changesetresponse_%s", gid);
            if (dw_dvemu_boundary(ct, &cb) != DW_OK ||
                dw_dvemu_multipart_parse(parts[i].body, parts[i].body_len, cb, &sub, &nsub) !=
                    DW_OK) {
                struct emu_resp r;
                emu_resp_init(&r);
                emu_err_set(&err, 400, "0x80060888", "The changeset is malformed.");
                emu_resp_error(&r, &err);
                emu_err_clear(&err);
                put_part(&out, rb, NULL, &r);
                emu_resp_cleanup(&r);
                failed = true;
            } else {
                json_t *ids = json_object();
                emu_txn_begin(emu);
                bool cs_failed = false;
                for (size_t j = 0; j < nsub && !cs_failed; j++) {
                    struct emu_resp r;
                    emu_resp_init(&r);
                    char *cid = NULL;
                    run_inner(emu, req, &sub[j], ids, &r, &cid);
                    if (r.status >= 400) {
                        /* A failed changeset answers with the failing request alone,
                         * echoing its Content-ID (OData 4.0 part 1, 11.7.4). */
                        emu_txn_rollback(emu);
                        cs_failed = failed = true;
                        put_part(&out, rb, cid, &r);
                    } else {
                        if (cid && r.entity_ref)
                            json_object_set_new(ids, cid, json_string(r.entity_ref));
                        put_part(&cs, csb, cid, &r);
                    }
                    free(cid);
                    emu_resp_cleanup(&r);
                }
                if (!cs_failed) {
                    emu_txn_commit(emu);
                    (void)dw_buf_printf(&out,
                                        "--%s\r\nContent-Type: multipart/mixed; boundary=%s\r\n"
                                        "\r\n",
                                        rb, csb);
                    (void)dw_buf_append(&out, cs.data ? cs.data : "", cs.len);
                    (void)dw_buf_printf(&out, "--%s--\r\n", csb);
                }
                json_decref(ids);
            }
            free(sub);
            dw_buf_cleanup(&cs);
        } else {
            struct emu_resp r;
            emu_resp_init(&r);
            char *cid = NULL;
            run_inner(emu, req, &parts[i], NULL, &r, &cid);
            if (r.status >= 400)
                failed = true;
            put_part(&out, rb, NULL, &r);
            free(cid);
            emu_resp_cleanup(&r);
        }
        free(ct);
        free(cb);
        if (failed && !continue_on_error) {
            /* Stop at the first failure: the answer holds only the failing part. */
            const char *last = NULL;
            for (const char *p = out.data; p && (p = strstr(p, "--batchresponse_")) != NULL; p++)
                last = p;
            if (last && last != out.data) {
                char *keep = dw_strdup(last);
                dw_buf_reset(&out);
                (void)dw_buf_puts(&out, keep);
                free(keep);
            }
        }
    }
    emu->caller = NULL;
    resp->rows = (size_t)(emu->rows_put - rows0);
    resp->rows_bypassed = (size_t)(emu->rows_bypassed - bypassed0);
    pthread_mutex_unlock(&emu->store_lock);
    (void)dw_buf_printf(&out, "--%s--\r\n", rb);
    resp->status = failed && !continue_on_error ? 400 : 200;
    dw_buf_reset(&resp->body);
    (void)dw_buf_append(&resp->body, out.data, out.len);
    char *ctype = dw_asprintf("multipart/mixed; boundary=%s", rb);
    emu_resp_header(resp, "Content-Type", ctype);
    free(ctype);
    resp->content_type = NULL;
    goto out;
fail:
    emu_resp_error(resp, &err);
out:
    dw_buf_cleanup(&out);
    emu_err_clear(&err);
    free(parts);
    free(boundary);
}

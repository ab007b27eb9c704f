/*
 * scaffold.c - `dwasync map scaffold`: a first map file from staging tables and Dataverse
 * metadata. Names are matched by rules an F&O mirror and a Dataverse table follow (see
 * name_score); what no rule matches, or more than one column matches equally, is reported,
 * never picked.
 */
#include "dwasync/scaffold.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/pg.h"

#define COMPANY_TABLE "cdm_company"
#define COMPANY_KEY   "cdm_companycode"
#define COMPANY_COL   "dataareaid"

/* --- source ---------------------------------------------------------------------------- */

dw_rc dw_scaffold_source_fetch(PGconn *conn, const char *schema, const char *table,
                               struct dw_scaffold_source *out)
{
    static const char *const sql =
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),"
        "       CASE WHEN a.atttypid IN (1042, 1043) AND a.atttypmod > 4"
        "            THEN a.atttypmod - 4 ELSE 0 END,"
        "       coalesce(a.attnum = ANY (pk.indkey::int2[]), false)"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        "  LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary"
        " WHERE n.nspname = $1 AND ($2::text IS NULL OR c.relname = $2)"
        "   AND c.relkind IN ('r', 'p')"
        " ORDER BY c.relname, a.attnum";
    const char *params[2] = {schema, table};
    PGresult *res = NULL;
    struct dw_scaffold_source s = {NULL, 0};
    dw_rc rc = dw_pg_query(conn, "reading the staging tables", sql, 2, params, &res);
    if (rc != DW_OK)
        goto out;
    int n = PQntuples(res);
    if (n == 0) {
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    s.tables = dw_calloc((size_t)n, sizeof *s.tables);
    for (int r = 0; r < n; r++) {
        const char *rel = PQgetvalue(res, r, 0);
        struct dw_scaffold_table *t = s.ntables ? &s.tables[s.ntables - 1] : NULL;
        if (t == NULL || strcmp(t->name, rel) != 0) {
            t = &s.tables[s.ntables++];
            t->schema = dw_strdup(schema);
            t->name = dw_strdup(rel);
            t->cols = dw_calloc((size_t)n, sizeof *t->cols);
        }
        struct dw_scaffold_column *c = &t->cols[t->ncols++];
        c->name = dw_strdup(PQgetvalue(res, r, 1));
        c->type = dw_strdup(PQgetvalue(res, r, 2));
        c->max_length = (int)strtol(PQgetvalue(res, r, 3), NULL, 10);
        c->pk = PQgetvalue(res, r, 4)[0] == 't';
    }
    *out = s;
    s.tables = NULL;
    s.ntables = 0;
out:
    PQclear(res);
    dw_scaffold_source_cleanup(&s);
    return rc;
}

void dw_scaffold_source_cleanup(struct dw_scaffold_source *s)
{
    for (size_t i = 0; i < s->ntables; i++) {
        for (size_t j = 0; j < s->tables[i].ncols; j++) {
            free(s->tables[i].cols[j].name);
            free(s->tables[i].cols[j].type);
        }
        free(s->tables[i].cols);
        free(s->tables[i].schema);
        free(s->tables[i].name);
    }
    free(s->tables);
    s->tables = NULL;
    s->ntables = 0;
}

/* --- targets --------------------------------------------------------------------------- */

static char *str_dup_or_null(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? dw_strdup(s) : NULL;
}

static void target_add(struct dw_scaffold_targets *t, struct dw_entity_meta *meta,
                       struct dw_scaffold_label *labels, size_t nlabels)
{
    t->v = dw_realloc(t->v, (t->n + 1) * sizeof *t->v);
    t->v[t->n].meta = meta;
    t->v[t->n].labels = labels;
    t->v[t->n].nlabels = nlabels;
    t->n++;
}

void dw_scaffold_targets_add(struct dw_scaffold_targets *t, struct dw_entity_meta *meta)
{
    target_add(t, meta, NULL, 0);
}

/* One table of a dvemu metadata file; NULL (with a line in errors) when malformed. */
static struct dw_entity_meta *load_table(const json_t *jt, size_t index, struct dw_buf *errors,
                                         struct dw_scaffold_label **labels, size_t *nlabels)
{
    const json_t *attrs = json_object_get(jt, "attributes");
    const json_t *keys = json_object_get(jt, "keys");
    const char *ln = json_string_value(json_object_get(jt, "logical_name"));
    const char *set = json_string_value(json_object_get(jt, "entity_set"));
    if (ln == NULL || set == NULL || !json_is_array(attrs)) {
        (void)dw_buf_printf(errors,
                            "$.tables[%zu]: needs \"logical_name\", \"entity_set\" and "
                            "\"attributes\"\n",
                            index);
        return NULL;
    }
    struct dw_entity_meta *m = dw_calloc(1, sizeof *m);
    m->logical_name = dw_strdup(ln);
    m->entity_set = dw_strdup(set);
    m->primary_id = str_dup_or_null(jt, "primary_id");
    m->attrs = dw_calloc(json_array_size(attrs) + 1, sizeof *m->attrs);
    size_t i;
    const json_t *ja;
    json_array_foreach(attrs, i, ja)
    {
        const char *name = json_string_value(json_object_get(ja, "name"));
        if (name == NULL)
            continue;
        struct dw_attr_meta *a = &m->attrs[m->nattrs++];
        const char *req = json_string_value(json_object_get(ja, "required"));
        a->logical_name = dw_strdup(name);
        a->type = dw_attr_type_parse(json_string_value(json_object_get(ja, "type")));
        a->required = req && strcmp(req, "None") != 0 && strcmp(req, "Recommended") != 0;
        a->max_length = (int)json_integer_value(json_object_get(ja, "max_length"));
        const json_t *targets = json_object_get(ja, "targets");
        a->targets = dw_calloc(json_array_size(targets) + 1, sizeof *a->targets);
        size_t j;
        const json_t *jv;
        json_array_foreach(targets, j, jv)
        {
            if (json_is_string(jv))
                a->targets[a->ntargets++] = dw_strdup(json_string_value(jv));
        }
        const json_t *options = json_object_get(ja, "options");
        a->options = dw_calloc(json_array_size(options) + 1, sizeof *a->options);
        json_array_foreach(options, j, jv)
        {
            const char *label = json_string_value(json_object_get(jv, "label"));
            a->options[a->noptions++] = (int)json_integer_value(json_object_get(jv, "value"));
            if (label == NULL)
                continue;
            *labels = dw_realloc(*labels, (*nlabels + 1) * sizeof **labels);
            (*labels)[*nlabels].attr = dw_strdup(name);
            (*labels)[*nlabels].value = a->options[a->noptions - 1];
            (*labels)[*nlabels].label = dw_strdup(label);
            (*nlabels)++;
        }
    }
    m->keys = dw_calloc(json_array_size(keys) + 1, sizeof *m->keys);
    const json_t *jk;
    json_array_foreach(keys, i, jk)
    {
        const json_t *ka = json_object_get(jk, "attributes");
        struct dw_key_meta *k = &m->keys[m->nkeys++];
        k->logical_name = str_dup_or_null(jk, "name");
        k->active = true;
        k->attributes = dw_calloc(json_array_size(ka) + 1, sizeof *k->attributes);
        size_t j;
        const json_t *jv;
        json_array_foreach(ka, j, jv)
        {
            if (json_is_string(jv))
                k->attributes[k->nattributes++] = dw_strdup(json_string_value(jv));
        }
    }
    return m;
}

dw_rc dw_scaffold_targets_load_file(const char *path, struct dw_buf *errors,
                                    struct dw_scaffold_targets *out)
{
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    struct dw_scaffold_targets t = {NULL, 0};
    dw_rc rc = DW_OK;
    if (doc == NULL) {
        (void)dw_buf_printf(errors, "%s:%d: %s\n", path, err.line, err.text);
        rc = DW_ERR_INVALID;
        goto out;
    }
    const json_t *tables = json_object_get(doc, "tables");
    if (!json_is_array(tables)) {
        (void)dw_buf_printf(errors, "%s: $.tables: must be an array of tables\n", path);
        rc = DW_ERR_INVALID;
        goto out;
    }
    size_t i;
    const json_t *jt;
    json_array_foreach(tables, i, jt)
    {
        struct dw_scaffold_label *labels = NULL;
        size_t nlabels = 0;
        struct dw_entity_meta *m = load_table(jt, i, errors, &labels, &nlabels);
        if (m == NULL) {
            rc = DW_ERR_INVALID;
            continue;
        }
        target_add(&t, m, labels, nlabels);
    }
    if (rc == DW_OK) {
        *out = t;
        t.v = NULL;
        t.n = 0;
    }
out:
    json_decref(doc);
    dw_scaffold_targets_cleanup(&t);
    return rc;
}

const struct dw_scaffold_target *dw_scaffold_targets_find(const struct dw_scaffold_targets *t,
                                                          const char *logical_name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->v[i].meta->logical_name, logical_name) == 0)
            return &t->v[i];
    return NULL;
}

void dw_scaffold_targets_cleanup(struct dw_scaffold_targets *t)
{
    for (size_t i = 0; i < t->n; i++) {
        dw_entity_meta_free(t->v[i].meta);
        for (size_t j = 0; j < t->v[i].nlabels; j++) {
            free(t->v[i].labels[j].attr);
            free(t->v[i].labels[j].label);
        }
        free(t->v[i].labels);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* --- names ----------------------------------------------------------------------------- */

/* Lower-case letters and digits of s only: "Cut-off date" and "CUTOFFDATE" agree. Caller frees. */
static char *norm(const char *s)
{
    char *out = dw_strdup(s);
    size_t n = 0;
    for (const char *p = s; *p; p++)
        if (isalnum((unsigned char)*p))
            out[n++] = (char)tolower((unsigned char)*p);
    out[n] = '\0';
    return out;
}

/* The attribute's name without its publisher prefix (msdyn_, cdm_, mserp_, or the table's). */
static const char *unprefixed(const char *attr, const char *entity)
{
    static const char *const known[] = {"msdyn_", "cdm_", "mserp_", NULL};
    const char *us = strchr(entity, '_');
    if (us && strncasecmp(attr, entity, (size_t)(us - entity) + 1) == 0)
        return attr + (us - entity) + 1;
    for (const char *const *k = known; *k; k++)
        if (strncasecmp(attr, *k, strlen(*k)) == 0)
            return attr + strlen(*k);
    return attr;
}

/* s without one trailing plural "s" (in place). */
static void singular(char *s)
{
    size_t n = strlen(s);
    if (n > 3 && s[n - 1] == 's')
        s[n - 1] = '\0';
}

/* s without one F&O key suffix (id, code, number, num) and a plural "s" (in place). */
static void base(char *s)
{
    static const char *const suffixes[] = {"number", "code", "num", "id", NULL};
    singular(s);
    size_t n = strlen(s);
    for (const char *const *x = suffixes; *x; x++) {
        size_t k = strlen(*x);
        if (n > k + 2 && strcmp(s + n - k, *x) == 0) {
            s[n - k] = '\0';
            break;
        }
    }
    singular(s);
}

/* True when x (at least 3 letters) is a prefix or a suffix of one of the two names. */
static bool affix_of(const char *x, size_t len, const char *a, const char *b)
{
    const char *names[2] = {a, b};
    if (len < 3)
        return false;
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(names[i]);
        if (len <= n &&
            (strncmp(names[i], x, len) == 0 || strncmp(names[i] + n - len, x, len) == 0))
            return true;
    }
    return false;
}

/*
 * How well a source column's name matches a target attribute's, 0 for not at all, else the
 * rule that matched (lower is better): 1 the same letters ("ISCASHPAYMENT" and
 * "msdyn_iscashpayment"), 2 the same but for a plural ("NUMBEROFMONTHS"), 3 one is the other
 * with the table's own name before or after it ("NAME" and "currencyname" in
 * transactioncurrency, "CUSTOMERGROUPID" and "msdyn_groupid" in msdyn_customergroup),
 * 4 the same after an F&O key suffix (id, code, number) is dropped ("PAYMENTTERMS" and the
 * lookup "msdyn_paymenttermid").
 */
static int name_score(const char *column, const char *attr, const char *entity_base,
                      const char *table_base)
{
    char *s = norm(column), *t = norm(attr);
    int score = 0;
    if (*s == '\0' || *t == '\0')
        goto out;
    if (strcmp(s, t) == 0) {
        score = 1;
        goto out;
    }
    singular(s);
    singular(t);
    if (strcmp(s, t) == 0) {
        score = 2;
        goto out;
    }
    free(s);
    free(t);
    s = norm(column);
    t = norm(attr);
    size_t ns = strlen(s), nt = strlen(t);
    const char *longer = ns > nt ? s : t, *shorter = ns > nt ? t : s;
    size_t nl = ns > nt ? ns : nt, nsh = ns > nt ? nt : ns;
    if (nsh >= 3 && nl > nsh) {
        /* longer = X + shorter or shorter + X, X an affix of the table's own name */
        if (strcmp(longer + nl - nsh, shorter) == 0 &&
            affix_of(longer, nl - nsh, entity_base, table_base))
            score = 3;
        else if (strncmp(longer, shorter, nsh) == 0 &&
                 affix_of(longer + nsh, nl - nsh, entity_base, table_base))
            score = 3;
        if (score)
            goto out;
    }
    base(s);
    base(t);
    if (strlen(s) >= 3 && strcmp(s, t) == 0)
        score = 4;
out:
    free(s);
    free(t);
    return score;
}

/* Edit distance of a and b, case-insensitive (two rows of the classic table). */
static size_t distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    size_t *prev = dw_calloc(nb + 1, sizeof *prev), *cur = dw_calloc(nb + 1, sizeof *cur);
    for (size_t j = 0; j <= nb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= na; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t sub = prev[j - 1] +
                         (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        size_t *tmp = prev;
        prev = cur;
        cur = tmp;
    }
    size_t d = prev[nb];
    free(prev);
    free(cur);
    return d;
}

const char *dw_scaffold_nearest(const char *name, const char *const *candidates, size_t n)
{
    size_t limit = strlen(name) / 3 < 2 ? 2 : strlen(name) / 3, best = limit + 1;
    const char *found = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = distance(name, candidates[i]);
        if (d < best) {
            best = d;
            found = candidates[i];
        }
    }
    return found;
}

/* --- building -------------------------------------------------------------------------- */

static char *entity_base_of(const char *logical_name)
{
    return norm(unprefixed(logical_name, logical_name));
}

struct build {
    const struct dw_scaffold_targets *tg;
    const struct dw_scaffold_request *req;
    const struct dw_scaffold_table *table;
    const struct dw_scaffold_target *target;
    char *entity_base, *table_base;
    bool *used; /* per source column */
    json_t *unmatched;
    struct dw_buf *report;
    const char *map_name;
};

__attribute__((format(printf, 2, 3))) static void unmatched(struct build *b, const char *fmt, ...)
{
    va_list ap;
    struct dw_buf line;
    dw_buf_init(&line, 0);
    va_start(ap, fmt);
    (void)dw_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    json_array_append_new(b->unmatched, json_string(dw_buf_str(&line)));
    (void)dw_buf_printf(b->report, "unmatched: %s: %s\n", b->map_name, dw_buf_str(&line));
    dw_buf_cleanup(&line);
}

static char *upper(const char *s)
{
    char *u = dw_strdup(s);
    for (char *p = u; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    return u;
}

static json_t *upper_json(const char *s)
{
    char *u = upper(s);
    json_t *j = json_string(u);
    free(u);
    return j;
}

static const struct dw_scaffold_column *company_column(const struct dw_scaffold_table *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcasecmp(t->cols[i].name, COMPANY_COL) == 0)
            return &t->cols[i];
    return NULL;
}

static bool is_company_lookup(const struct dw_attr_meta *a)
{
    return a->type == DW_ATTR_LOOKUP && a->ntargets == 1 &&
           strcasecmp(a->targets[0], COMPANY_TABLE) == 0;
}

/*
 * Fields that dual-write's own maps pair under different names (Microsoft's published
 * mapping reference for customers V3, vendors V2, terms of payment and sales orders; see
 * /usr/share/dwasync/maps): a column of that name is the attribute's match, before any rule.
 */
static const struct {
    const char *column, *attr;
} synonyms[] = {
    {"organizationname", "name"},
    {"numberofdays", "msdyn_days"},
    {"salescurrencycode", "transactioncurrencyid"},
    {"invoiceaccount", "msdyn_billingaccount"},
    {"deliveryaddressstreet", "address1_line1"},
    {"deliveryaddresscity", "address1_city"},
    {"deliveryaddressstateid", "address1_stateorprovince"},
    {"deliveryaddresszipcode", "address1_postalcode"},
    {"deliveryaddresscountryregionisocode", "address1_country"},
    {"primarycontactemail", "emailaddress1"},
    {"primarycontactphone", "telephone1"},
    {"personfirstname", "firstname"},
    {"personlastname", "lastname"},
    {"vendororganizationname", "msdyn_name"},
    {"vendorgroupid", "msdyn_vendorgroupid"},
    {"orderedsalesquantity", "quantity"},
    {"salesprice", "priceperunit"},
    {"lineamount", "extendedamount"},
    {"salesorderprocessingstatus", "msdyn_processingstatus"},
};

/*
 * The source column whose name matches attr best; NULL when none does or when two match
 * equally well (*ambiguous set, the two named in *second). pk_only: primary key columns.
 */
static const struct dw_scaffold_column *match_column(const struct build *b, const char *attr,
                                                     bool pk_only, bool *ambiguous,
                                                     const char **second)
{
    const struct dw_scaffold_column *best = NULL;
    int best_score = 0;
    *ambiguous = false;
    for (size_t k = 0; k < sizeof synonyms / sizeof *synonyms; k++) {
        if (strcasecmp(synonyms[k].attr, attr) != 0)
            continue;
        for (size_t i = 0; i < b->table->ncols; i++)
            if (!b->used[i] && (!pk_only || b->table->cols[i].pk) &&
                strcasecmp(b->table->cols[i].name, synonyms[k].column) == 0)
                return &b->table->cols[i];
    }
    const char *bare = unprefixed(attr, b->target->meta->logical_name);
    for (size_t i = 0; i < b->table->ncols; i++) {
        const struct dw_scaffold_column *c = &b->table->cols[i];
        if (b->used[i] || (pk_only && !c->pk) || strcasecmp(c->name, COMPANY_COL) == 0)
            continue;
        int s = name_score(c->name, bare, b->entity_base, b->table_base);
        if (s == 0)
            continue;
        if (best == NULL || s < best_score) {
            best = c;
            best_score = s;
            *ambiguous = false;
        } else if (s == best_score) {
            *ambiguous = true;
            *second = c->name;
        }
    }
    return *ambiguous ? NULL : best;
}

/*
 * The one unused column named after the table a lookup points to, by its F&O key suffix
 * ("CURRENCYCODE" for a lookup to transactioncurrency); NULL when none or more than one.
 */
static const struct dw_scaffold_column *named_after(const struct build *b, const char *parent,
                                                    bool *ambiguous, const char **second)
{
    char *pb = entity_base_of(parent);
    const struct dw_scaffold_column *found = NULL;
    size_t np = strlen(pb);
    *ambiguous = false;
    for (size_t i = 0; i < b->table->ncols; i++) {
        const struct dw_scaffold_column *c = &b->table->cols[i];
        if (b->used[i] || strcasecmp(c->name, COMPANY_COL) == 0)
            continue;
        char *cb = norm(c->name);
        size_t full = strlen(cb);
        base(cb);
        size_t nc = strlen(cb);
        if (nc >= 4 && nc < full && nc <= np && strcmp(pb + np - nc, cb) == 0) {
            if (found) {
                *ambiguous = true;
                *second = c->name;
            }
            found = c;
        }
        free(cb);
    }
    free(pb);
    return *ambiguous ? NULL : found;
}

static void use(struct build *b, const struct dw_scaffold_column *c)
{
    b->used[c - b->table->cols] = true;
}

static bool type_in(const char *pgtype, const char *const *prefixes)
{
    for (; *prefixes; prefixes++)
        if (strncmp(pgtype, *prefixes, strlen(*prefixes)) == 0)
            return true;
    return false;
}

static const char *const text_types[] = {"text", "character", "citext", NULL};
static const char *const int_types[] = {"smallint", "integer", "bigint", NULL};
static const char *const num_types[] = {"smallint", "integer", "bigint", "numeric",
                                        "real",     "double",  "money",  NULL};
static const char *const time_types[] = {"timestamp", "date", NULL};

/* The key of a parent table for a lookup: company parts from DATAAREAID, the one other part
 * from column. NULL (reported) when the parent's key has another shape. */
static json_t *parent_key(struct build *b, const char *attr, const struct dw_scaffold_target *p,
                          const char *column)
{
    const struct dw_key_meta *k = p->meta->nkeys ? &p->meta->keys[0] : NULL;
    json_t *key = json_array();
    bool scalar_done = false;
    for (size_t i = 0; k && i < k->nattributes; i++) {
        const struct dw_attr_meta *a = dw_entity_meta_attr(p->meta, k->attributes[i]);
        if (a && is_company_lookup(a) && company_column(b->table)) {
            json_array_append_new(key, json_pack("{s:s,s:o}", "target", a->logical_name, "company",
                                                 upper_json(COMPANY_COL)));
        } else if (a && a->type != DW_ATTR_LOOKUP && !scalar_done && column) {
            json_array_append_new(key, json_pack("{s:s,s:o}", "target", a->logical_name, "source",
                                                 upper_json(column)));
            scalar_done = true;
        } else {
            unmatched(b, "lookup \"%s\": the key of \"%s\" has a part (\"%s\") no column fills",
                      attr, p->meta->logical_name, k->attributes[i]);
            json_decref(key);
            return NULL;
        }
    }
    if (k == NULL || !scalar_done) {
        unmatched(b, "lookup \"%s\": \"%s\" has no alternate key with one column to fill", attr,
                  p->meta->logical_name);
        json_decref(key);
        return NULL;
    }
    return key;
}

static json_t *lookup_json(const struct dw_scaffold_target *p, json_t *key)
{
    return json_pack("{s:s,s:s,s:o}", "entity_set", p->meta->entity_set, "logical_name",
                     p->meta->logical_name, "key", key);
}

/* A lookup column (or key part) to a parent, or NULL (reported). */
static json_t *lookup_for(struct build *b, const struct dw_attr_meta *a, bool key_part)
{
    if (a->ntargets != 1) {
        unmatched(b,
                  "lookup \"%s\" can point to %zu tables: choose one and its \"navigation\" "
                  "(e.g. %s_%s)",
                  a->logical_name, a->ntargets, a->logical_name,
                  a->ntargets ? a->targets[0] : "account");
        return NULL;
    }
    const struct dw_scaffold_target *p = dw_scaffold_targets_find(b->tg, a->targets[0]);
    if (p == NULL) {
        unmatched(b, "lookup \"%s\": no metadata for \"%s\" (add it to the metadata)",
                  a->logical_name, a->targets[0]);
        return NULL;
    }
    if (is_company_lookup(a)) {
        if (company_column(b->table) == NULL) {
            unmatched(b, "lookup \"%s\": the table has no %s column", a->logical_name, COMPANY_COL);
            return NULL;
        }
        return lookup_json(
            p, json_pack("[{s:s,s:o}]", "target", COMPANY_KEY, "source", upper_json(COMPANY_COL)));
    }
    bool amb;
    const char *second = NULL;
    const struct dw_scaffold_column *c = NULL;
    if (key_part) {
        /* A key part: the parent's own key column, named as the parent names it. */
        const struct dw_key_meta *k = p->meta->nkeys ? &p->meta->keys[0] : NULL;
        for (size_t i = 0; k && i < k->nattributes && c == NULL; i++) {
            const struct dw_attr_meta *pa = dw_entity_meta_attr(p->meta, k->attributes[i]);
            if (pa && pa->type != DW_ATTR_LOOKUP) {
                const char *bare = unprefixed(pa->logical_name, p->meta->logical_name);
                c = match_column(b, bare, true, &amb, &second);
            }
        }
    } else {
        c = match_column(b, a->logical_name, false, &amb, &second);
        if (c == NULL && !amb)
            c = named_after(b, p->meta->logical_name, &amb, &second);
    }
    if (c == NULL) {
        unmatched(b, "lookup \"%s\" (to \"%s\"): no source column matches its name%s%s%s",
                  a->logical_name, p->meta->logical_name, second ? " (two do: \"" : "",
                  second ? second : "", second ? "\" and another)" : "");
        return NULL;
    }
    json_t *key = parent_key(b, a->logical_name, p, c->name);
    if (key == NULL)
        return NULL;
    use(b, c);
    return lookup_json(p, key);
}

static const struct dw_scaffold_label *label_of(const struct dw_scaffold_target *t,
                                                const char *attr, const char *value)
{
    char *v = norm(value);
    const struct dw_scaffold_label *found = NULL;
    size_t nv = strlen(v);
    for (size_t i = 0; i < t->nlabels && found == NULL && nv > 0; i++) {
        if (strcasecmp(t->labels[i].attr, attr) != 0)
            continue;
        char *l = norm(t->labels[i].label);
        /* The same letters, or an F&O enum name that abbreviates the label's end. */
        if (strcmp(v, l) == 0 || (nv >= 6 && strncmp(l, v, nv) == 0))
            found = &t->labels[i];
        free(l);
    }
    free(v);
    return found;
}

/* The value map of an option set from the column's values, or NULL (reported). */
static json_t *option_map(struct build *b, const struct dw_attr_meta *a,
                          const struct dw_scaffold_column *c)
{
    char **values = NULL;
    size_t n = 0;
    json_t *map = json_object();
    struct dw_buf missing;
    dw_buf_init(&missing, 0);
    if (b->req->values == NULL || b->target->nlabels == 0 ||
        b->req->values(b->req->values_user, b->table, c->name, &values, &n) != DW_OK) {
        unmatched(b, "option set \"%s\" from \"%s\": no option labels or source values to match",
                  a->logical_name, c->name);
        json_decref(map);
        map = NULL;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct dw_scaffold_label *l = label_of(b->target, a->logical_name, values[i]);
        if (l)
            json_object_set_new(map, values[i], json_integer(l->value));
        else
            (void)dw_buf_printf(&missing, "%s\"%s\"", missing.len ? ", " : "", values[i]);
    }
    if (missing.len)
        unmatched(b, "option set \"%s\": source values %s of \"%s\" match no option label",
                  a->logical_name, dw_buf_str(&missing), c->name);
    if (json_object_size(map) == 0) {
        json_decref(map);
        map = NULL;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(values[i]);
    free(values);
    dw_buf_cleanup(&missing);
    return map;
}

/* Whether values of the column's type go to the attribute's type (else reported). */
static bool types_fit(struct build *b, const struct dw_attr_meta *a,
                      const struct dw_scaffold_column *c)
{
    bool ok;
    switch (a->type) {
    case DW_ATTR_STRING:
    case DW_ATTR_MEMO:
        ok = true;
        if (a->max_length > 0 && c->max_length > a->max_length) {
            unmatched(b, "\"%s\" holds %d characters, \"%s\" only %d: widen it or map by hand",
                      c->name, c->max_length, a->logical_name, a->max_length);
            return false;
        }
        break;
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
        ok = type_in(c->type, int_types);
        break;
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE:
        ok = type_in(c->type, num_types);
        break;
    case DW_ATTR_BOOLEAN:
        ok = strcmp(c->type, "boolean") == 0 || type_in(c->type, int_types) ||
             type_in(c->type, text_types);
        break;
    case DW_ATTR_DATETIME:
        ok = type_in(c->type, time_types);
        break;
    case DW_ATTR_PICKLIST:
        ok = type_in(c->type, int_types) || type_in(c->type, text_types);
        break;
    default:
        ok = false;
    }
    if (!ok)
        unmatched(b, "\"%s\" (%s) does not convert to \"%s\" (%s)", c->name, c->type,
                  a->logical_name, dw_attr_type_name(a->type));
    return ok;
}

static json_t *column_json(struct build *b, const struct dw_attr_meta *a)
{
    if (a->type == DW_ATTR_LOOKUP) {
        json_t *lk = lookup_for(b, a, false);
        return lk ? json_pack("{s:s,s:s,s:o}", "target", a->logical_name, "direction", "=",
                              "lookup", lk)
                  : NULL;
    }
    if (a->type == DW_ATTR_UNIQUEIDENTIFIER || a->type == DW_ATTR_OTHER)
        return NULL;
    bool amb;
    const char *second = NULL;
    const struct dw_scaffold_column *c = match_column(b, a->logical_name, false, &amb, &second);
    if (c == NULL) {
        if (amb)
            unmatched(b, "\"%s\": two source columns match equally (\"%s\" and another)",
                      a->logical_name, second);
        else
            unmatched(b, "\"%s\" (%s%s): no source column matches its name", a->logical_name,
                      dw_attr_type_name(a->type), a->required ? ", required" : "");
        return NULL;
    }
    if (!types_fit(b, a, c))
        return NULL;
    json_t *col = json_pack("{s:s,s:s,s:o,s:s}", "target", a->logical_name, "direction", "=",
                            "source", upper_json(c->name), "type", dw_mapfile_type_name(a->type));
    if (a->type == DW_ATTR_BOOLEAN && strcmp(c->type, "boolean") != 0) {
        /* F&O's NoYes enum, as an int or by name. */
        json_object_set_new(col, "direction", json_string("><"));
        json_object_set_new(col, "value_map",
                            json_pack("{s:b,s:b,s:b,s:b}", "0", 0, "1", 1, "No", 0, "Yes", 1));
        json_object_set_new(col, "unmapped", json_string("error"));
    } else if (a->type == DW_ATTR_PICKLIST) {
        json_t *map = option_map(b, a, c);
        if (map == NULL) {
            json_decref(col);
            return NULL;
        }
        json_object_set_new(col, "direction", json_string("><"));
        json_object_set_new(col, "value_map", map);
        json_object_set_new(col, "unmapped", json_string("error"));
    }
    json_object_set_new(col, "null", json_string("send"));
    use(b, c);
    return col;
}

static bool in_key(const struct dw_key_meta *k, const char *attr)
{
    for (size_t i = 0; k && i < k->nattributes; i++)
        if (strcasecmp(k->attributes[i], attr) == 0)
            return true;
    return false;
}

/* The map's key; parts it cannot fill are reported and left out. */
static json_t *key_json(struct build *b, const struct dw_key_meta *k)
{
    json_t *key = json_array();
    size_t nparts = k ? k->nattributes : 0;
    json_t **parts = dw_calloc(nparts + 1, sizeof *parts);
    int open = -1, nopen = 0;
    for (size_t i = 0; i < nparts; i++) {
        const struct dw_attr_meta *a = dw_entity_meta_attr(b->target->meta, k->attributes[i]);
        if (a == NULL) {
            unmatched(b, "key part \"%s\" is not an attribute of the table", k->attributes[i]);
            continue;
        }
        if (is_company_lookup(a)) {
            const struct dw_scaffold_column *c = company_column(b->table);
            if (c)
                parts[i] = json_pack("{s:s,s:o}", "target", a->logical_name, "company",
                                     upper_json(c->name));
            else
                unmatched(b, "key part \"%s\": the table has no %s column", a->logical_name,
                          COMPANY_COL);
        } else if (a->type == DW_ATTR_LOOKUP) {
            json_t *lk = lookup_for(b, a, true);
            if (lk)
                parts[i] = json_pack("{s:s,s:o}", "target", a->logical_name, "lookup", lk);
        } else {
            bool amb;
            const char *second = NULL;
            const struct dw_scaffold_column *c =
                match_column(b, a->logical_name, true, &amb, &second);
            if (c) {
                use(b, c);
                parts[i] = json_pack("{s:s,s:o,s:s}", "target", a->logical_name, "source",
                                     upper_json(c->name), "type", dw_mapfile_type_name(a->type));
            } else {
                open = (int)i;
                nopen++;
            }
        }
    }
    if (nopen > 0) {
        /* One key attribute and one primary key column left: they are the same thing. */
        const struct dw_scaffold_column *left = NULL;
        int nleft = 0;
        for (size_t i = 0; i < b->table->ncols; i++) {
            const struct dw_scaffold_column *c = &b->table->cols[i];
            if (c->pk && !b->used[i] && strcasecmp(c->name, COMPANY_COL) != 0) {
                left = c;
                nleft++;
            }
        }
        const struct dw_attr_meta *a =
            open >= 0 ? dw_entity_meta_attr(b->target->meta, k->attributes[open]) : NULL;
        if (nopen == 1 && nleft == 1 && a) {
            use(b, left);
            parts[open] = json_pack("{s:s,s:o,s:s}", "target", a->logical_name, "source",
                                    upper_json(left->name), "type", dw_mapfile_type_name(a->type));
            (void)dw_buf_printf(b->report,
                                "note: %s: key \"%s\" from \"%s\", the one primary key column "
                                "left\n",
                                b->map_name, a->logical_name, left->name);
        } else {
            for (size_t i = 0; i < nparts; i++) {
                const struct dw_attr_meta *o =
                    dw_entity_meta_attr(b->target->meta, k->attributes[i]);
                if (parts[i] == NULL && o && o->type != DW_ATTR_LOOKUP)
                    unmatched(b, "key part \"%s\": no primary key column matches it",
                              o->logical_name);
            }
        }
    }
    for (size_t i = 0; i < nparts; i++)
        if (parts[i])
            json_array_append_new(key, parts[i]);
    free(parts);
    return key;
}

/* "customersv3" -> "customer": the table's name without a version and a plural. */
static char *table_base_of(const char *table)
{
    char *t = norm(table);
    size_t n = strlen(t);
    while (n > 0 && isdigit((unsigned char)t[n - 1]))
        n--;
    if (n > 1 && t[n - 1] == 'v' && n < strlen(t))
        n--;
    t[n] = '\0';
    singular(t);
    return t;
}

static void build_init(struct build *b, const struct dw_scaffold_table *t,
                       const struct dw_scaffold_target *tg)
{
    b->table = t;
    b->target = tg;
    b->entity_base = entity_base_of(tg->meta->logical_name);
    b->table_base = table_base_of(t->name);
    b->used = dw_calloc(t->ncols + 1, sizeof *b->used);
    b->unmatched = json_array();
}

static void build_cleanup(struct build *b)
{
    free(b->entity_base);
    free(b->table_base);
    free(b->used);
    json_decref(b->unmatched);
}

/* How many of the target's attributes match the table's columns by name (pairing). */
static int table_score(const struct dw_scaffold_table *t, const struct dw_scaffold_target *tg)
{
    char *eb = entity_base_of(tg->meta->logical_name), *tb = table_base_of(t->name);
    int score = 0;
    for (size_t i = 0; i < tg->meta->nattrs; i++) {
        const char *bare = unprefixed(tg->meta->attrs[i].logical_name, tg->meta->logical_name);
        for (size_t j = 0; j < t->ncols; j++) {
            if (name_score(t->cols[j].name, bare, eb, tb) > 0) {
                score++;
                break;
            }
        }
    }
    free(eb);
    free(tb);
    return score;
}

/*
 * The table a target is scaffolded from: "TABLE=logical" names it; with one table, that
 * one; else the table matching most attributes, NULL (reported) on a tie or no match.
 */
static const struct dw_scaffold_table *pair(const struct dw_scaffold_source *src, const char *spec,
                                            const char **logical, struct dw_buf *report)
{
    const char *eq = strchr(spec, '=');
    *logical = eq ? eq + 1 : spec;
    if (eq) {
        for (size_t i = 0; i < src->ntables; i++)
            if (strlen(src->tables[i].name) == (size_t)(eq - spec) &&
                strncmp(src->tables[i].name, spec, (size_t)(eq - spec)) == 0)
                return &src->tables[i];
        (void)dw_buf_printf(report, "unmatched: %s: no staging table \"%.*s\"\n", *logical,
                            (int)(eq - spec), spec);
        return NULL;
    }
    if (src->ntables == 1)
        return &src->tables[0];
    return NULL;
}

dw_rc dw_scaffold_build(const struct dw_scaffold_source *src, const struct dw_scaffold_targets *tg,
                        const struct dw_scaffold_request *req, struct dw_buf *report, json_t **out)
{
    json_t *maps = json_array();
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < req->ntargets; i++) {
        const char *logical = NULL;
        const struct dw_scaffold_table *t = pair(src, req->targets[i], &logical, report);
        const struct dw_scaffold_target *target = dw_scaffold_targets_find(tg, logical);
        if (target == NULL) {
            (void)dw_buf_printf(report, "error: no metadata for the Dataverse table \"%s\"\n",
                                logical);
            rc = DW_ERR_NOT_FOUND;
            goto out;
        }
        if (t == NULL && strchr(req->targets[i], '=') == NULL) {
            int best = 0, ties = 0;
            for (size_t j = 0; j < src->ntables; j++) {
                int s = table_score(&src->tables[j], target);
                if (s > best) {
                    best = s;
                    ties = 0;
                    t = &src->tables[j];
                } else if (s == best && s > 0) {
                    ties++;
                }
            }
            if (ties > 0 || best == 0) {
                (void)dw_buf_printf(report,
                                    "unmatched: %s: %s staging table matches it by its column "
                                    "names; name one with --target TABLE=%s\n",
                                    logical, best ? "more than one" : "no", logical);
                t = NULL;
            } else {
                (void)dw_buf_printf(report, "note: %s: from \"%s.%s\" (%d matching names)\n",
                                    target->meta->entity_set, t->schema, t->name, best);
            }
        }
        if (t == NULL)
            continue;
        struct build b = {tg,   req,  NULL, NULL,   NULL,
                          NULL, NULL, NULL, report, target->meta->entity_set};
        build_init(&b, t, target);
        const struct dw_key_meta *k = NULL;
        for (size_t j = 0; j < target->meta->nkeys && k == NULL; j++)
            if (target->meta->keys[j].active)
                k = &target->meta->keys[j];
        if (k == NULL)
            unmatched(&b, "\"%s\" has no active alternate key: define one in Dataverse",
                      target->meta->logical_name);
        json_t *key = key_json(&b, k);
        json_t *cols = json_array();
        for (size_t j = 0; j < target->meta->nattrs; j++) {
            const struct dw_attr_meta *a = &target->meta->attrs[j];
            if (in_key(k, a->logical_name) ||
                (target->meta->primary_id &&
                 strcasecmp(a->logical_name, target->meta->primary_id) == 0))
                continue;
            json_t *col = column_json(&b, a);
            if (col)
                json_array_append_new(cols, col);
        }
        struct dw_buf left;
        dw_buf_init(&left, 0);
        for (size_t j = 0; j < t->ncols; j++)
            if (!b.used[j] && strcasecmp(t->cols[j].name, COMPANY_COL) != 0)
                (void)dw_buf_printf(&left, "%s\"%s\"", left.len ? ", " : "", t->cols[j].name);
        if (left.len)
            unmatched(&b, "source columns mapped to nothing: %s", dw_buf_str(&left));
        dw_buf_cleanup(&left);
        json_t *options = json_object();
        if (json_array_size(b.unmatched) > 0)
            json_object_set(options, "unmatched", b.unmatched);
        json_array_append_new(maps, json_pack("{s:s,s:i,s:{s:s,s:s},s:{s:s,s:s},s:o,s:o,s:o}",
                                              "name", target->meta->entity_set, "sequence",
                                              (int)(json_array_size(maps) + 1) * 10, "source",
                                              "schema", t->schema, "table", t->name, "target",
                                              "entity_set", target->meta->entity_set,
                                              "logical_name", target->meta->logical_name, "key",
                                              key, "columns", cols, "options", options));
        build_cleanup(&b);
    }
    *out = json_pack("{s:i,s:{s:s,s:s,s:[],s:{}},s:[{s:s,s:o}]}", "format", 1, "job", "name",
                     req->job_name, "environment_url", "", "legal_entities", "options", "groups",
                     "name", "main", "maps", maps);
    maps = NULL;
out:
    json_decref(maps);
    return rc;
}

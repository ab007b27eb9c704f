/* Row filters and legal entities: client-side evaluation and the publication they compile to. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/pg.h"

json_t *dw_row_get(const json_t *row, const char *column)
{
    if (!json_is_object(row))
        return NULL;
    json_t *v = json_object_get(row, column);
    if (v)
        return v;
    /* F&O mirrors differ in the case of column names (CUSTACCOUNT, custaccount). Postgres
     * folds unquoted names to lower case, so try that with one hash lookup before the scan. */
    char lower[130];
    size_t n = strlen(column);
    if (n < sizeof lower) {
        for (size_t i = 0; i <= n; i++)
            lower[i] = (char)tolower((unsigned char)column[i]);
        if ((v = json_object_get(row, lower)) != NULL)
            return v;
    }
    const char *k;
    json_object_foreach((json_t *)row, k, v)
    {
        if (strcasecmp(k, column) == 0)
            return v;
    }
    return NULL;
}

/* <0, 0, >0 like strcmp, or 2 when the two values do not compare (different kinds). */
static int compare(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) {
            json_int_t x = json_integer_value(a), y = json_integer_value(b);
            return (x > y) - (x < y);
        }
        double x = json_number_value(a), y = json_number_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_string(a) && json_is_string(b)) {
        int r = strcmp(json_string_value(a), json_string_value(b));
        return (r > 0) - (r < 0);
    }
    if (json_is_boolean(a) && json_is_boolean(b))
        return (int)json_is_true(a) - (int)json_is_true(b);
    /* A mirror may hold numbers as text (or the reverse): compare the text forms. */
    if ((json_is_string(a) && json_is_number(b)) || (json_is_number(a) && json_is_string(b))) {
        char *x = json_is_string(a) ? dw_strdup(json_string_value(a)) : dw_json_dumps(a);
        char *y = json_is_string(b) ? dw_strdup(json_string_value(b)) : dw_json_dumps(b);
        int r = strcmp(x, y);
        free(x);
        free(y);
        return r == 0 ? 0 : 2;
    }
    return 2;
}

static enum dw_tristate tri_not(enum dw_tristate t)
{
    return t == DW_UNKNOWN ? DW_UNKNOWN : (t == DW_TRUE ? DW_FALSE : DW_TRUE);
}

static enum dw_tristate eval(const struct dw_filter *f, const json_t *row, bool *missing)
{
    switch (f->op) {
    case DW_F_AND:
    case DW_F_OR: {
        bool is_and = f->op == DW_F_AND;
        enum dw_tristate acc = is_and ? DW_TRUE : DW_FALSE;
        for (size_t i = 0; i < f->nargs; i++) {
            enum dw_tristate t = eval(f->args[i], row, missing);
            if (t == (is_and ? DW_FALSE : DW_TRUE))
                return t;
            if (t == DW_UNKNOWN)
                acc = DW_UNKNOWN;
        }
        return acc;
    }
    case DW_F_NOT:
        return tri_not(eval(f->args[0], row, missing));
    default:
        break;
    }
    json_t *v = dw_row_get(row, f->column);
    if (v == NULL) {
        *missing = true; /* not in this image (key-only old row, unchanged TOAST) */
        return DW_UNKNOWN;
    }
    if (f->op == DW_F_IS_NULL)
        return json_is_null(v) ? DW_TRUE : DW_FALSE;
    if (f->op == DW_F_IS_NOT_NULL)
        return json_is_null(v) ? DW_FALSE : DW_TRUE;
    if (json_is_null(v))
        return DW_UNKNOWN;
    if (f->op == DW_F_IN || f->op == DW_F_NOT_IN) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(f->value) && !found; i++)
            found = compare(v, json_array_get(f->value, i)) == 0;
        return (found == (f->op == DW_F_IN)) ? DW_TRUE : DW_FALSE;
    }
    int r = compare(v, f->value);
    if (r == 2)
        return f->op == DW_F_NE ? DW_TRUE : (f->op == DW_F_EQ ? DW_FALSE : DW_UNKNOWN);
    switch (f->op) {
    case DW_F_EQ:
        return r == 0 ? DW_TRUE : DW_FALSE;
    case DW_F_NE:
        return r != 0 ? DW_TRUE : DW_FALSE;
    case DW_F_LT:
        return r < 0 ? DW_TRUE : DW_FALSE;
    case DW_F_LE:
        return r <= 0 ? DW_TRUE : DW_FALSE;
    case DW_F_GT:
        return r > 0 ? DW_TRUE : DW_FALSE;
    case DW_F_GE:
        return r >= 0 ? DW_TRUE : DW_FALSE;
    default:
        return DW_UNKNOWN;
    }
}

enum dw_tristate dw_tablemap_match(const struct dw_jobdef *def, const struct dw_tablemap *m,
                                   const json_t *row)
{
    /* SQL's unknown (a NULL compared) excludes the row, as a publication row filter does;
     * DW_UNKNOWN is returned only when a column the filter reads is not in the image. */
    bool missing = false;
    if (m->company_source && def->nlegal_entities > 0) {
        json_t *v = dw_row_get(row, m->company_source);
        if (v == NULL)
            missing = true;
        bool listed = false;
        for (size_t i = 0; v && json_is_string(v) && i < def->nlegal_entities && !listed; i++)
            listed = strcmp(json_string_value(v), def->legal_entities[i]) == 0;
        if (v && !listed)
            return DW_FALSE;
    }
    enum dw_tristate f = m->filter ? eval(m->filter, row, &missing) : DW_TRUE;
    if (f == DW_FALSE)
        return DW_FALSE;
    if (missing)
        return DW_UNKNOWN;
    return f == DW_TRUE ? DW_TRUE : DW_FALSE;
}

/* --- source catalog -------------------------------------------------------------------- */

const struct dw_src_table *dw_src_catalog_table(const struct dw_src_catalog *cat,
                                                const char *schema, const char *name)
{
    for (size_t i = 0; cat && i < cat->ntables; i++)
        if (strcmp(cat->tables[i].schema, schema) == 0 && strcmp(cat->tables[i].name, name) == 0)
            return &cat->tables[i];
    return NULL;
}

const struct dw_src_column *dw_src_table_column(const struct dw_src_table *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    for (size_t i = 0; i < t->ncols; i++)
        if (strcasecmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    return NULL;
}

void dw_src_catalog_cleanup(struct dw_src_catalog *cat)
{
    for (size_t i = 0; i < cat->ntables; i++) {
        struct dw_src_table *t = &cat->tables[i];
        for (size_t j = 0; j < t->ncols; j++) {
            free(t->cols[j].name);
            free(t->cols[j].type);
        }
        free(t->cols);
        free(t->schema);
        free(t->name);
    }
    free(cat->tables);
    cat->tables = NULL;
    cat->ntables = 0;
}

dw_rc dw_src_catalog_fetch(PGconn *source, const struct dw_jobdef *def, struct dw_src_catalog *out)
{
    static const char *const sql =
        "SELECT c.relreplident, a.attname, format_type(a.atttypid, a.atttypmod),"
        "       CASE WHEN a.atttypid IN (1042, 1043) AND a.atttypmod > 4"
        "            THEN a.atttypmod - 4 ELSE 0 END,"
        "       coalesce(a.attnum = ANY (ri.indkey::int2[]), false), ri.indexrelid IS NOT NULL"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        "  LEFT JOIN pg_index ri ON ri.indrelid = c.oid"
        "   AND ((c.relreplident = 'd' AND ri.indisprimary)"
        "        OR (c.relreplident = 'i' AND ri.indisreplident))"
        " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')"
        " ORDER BY a.attnum";
    struct dw_src_catalog cat = {NULL, 0};
    dw_rc rc = DW_OK;
    size_t cap = dw_jobdef_map_count(def);
    cat.tables = dw_calloc(cap ? cap : 1, sizeof *cat.tables);
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            if (dw_src_catalog_table(&cat, m->source_schema, m->source_table))
                continue;
            const char *params[2] = {m->source_schema, m->source_table};
            PGresult *res = NULL;
            if ((rc = dw_pg_query(source, "reading the source catalog", sql, 2, params, &res)) !=
                DW_OK)
                goto out;
            int n = PQntuples(res);
            if (n > 0) {
                struct dw_src_table *t = &cat.tables[cat.ntables++];
                t->schema = dw_strdup(m->source_schema);
                t->name = dw_strdup(m->source_table);
                t->replica_identity = PQgetvalue(res, 0, 0)[0];
                t->has_identity_key = PQgetvalue(res, 0, 5)[0] == 't';
                t->ncols = (size_t)n;
                t->cols = dw_calloc((size_t)n, sizeof *t->cols);
                for (int r = 0; r < n; r++) {
                    t->cols[r].name = dw_strdup(PQgetvalue(res, r, 1));
                    t->cols[r].type = dw_strdup(PQgetvalue(res, r, 2));
                    t->cols[r].max_length = (int)strtol(PQgetvalue(res, r, 3), NULL, 10);
                    t->cols[r].identity =
                        t->replica_identity == 'f' || PQgetvalue(res, r, 4)[0] == 't';
                }
            }
            PQclear(res);
        }
    }
out:
    if (rc != DW_OK) {
        dw_src_catalog_cleanup(&cat);
        return rc;
    }
    *out = cat;
    return DW_OK;
}

/* --- SQL ------------------------------------------------------------------------------- */

/*
 * Written here rather than with PQescapeIdentifier/PQescapeLiteral because the publication
 * text is built (and unit tested) without a connection. Identifiers are always quoted;
 * literals use E'' so the escaping holds whatever standard_conforming_strings says.
 */
static void put_ident(struct dw_buf *b, const char *s)
{
    (void)dw_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"')
            (void)dw_buf_putc(b, '"');
        (void)dw_buf_putc(b, *s);
    }
    (void)dw_buf_putc(b, '"');
}

static void put_literal(struct dw_buf *b, const json_t *v)
{
    if (json_is_string(v)) {
        (void)dw_buf_puts(b, "E'");
        for (const char *s = json_string_value(v); *s; s++) {
            if (*s == '\'' || *s == '\\')
                (void)dw_buf_putc(b, *s);
            (void)dw_buf_putc(b, *s);
        }
        (void)dw_buf_putc(b, '\'');
    } else if (json_is_boolean(v)) {
        (void)dw_buf_puts(b, json_is_true(v) ? "true" : "false");
    } else {
        char *s = dw_json_dumps(v);
        (void)dw_buf_puts(b, s);
        free(s);
    }
}

static const char *resolve(const struct dw_src_table *t, const char *column)
{
    const struct dw_src_column *c = t ? dw_src_table_column(t, column) : NULL;
    return c ? c->name : column;
}

static void filter_sql(struct dw_buf *b, const struct dw_filter *f, const struct dw_src_table *t)
{
    static const char *const cmp[] = {"", "", "", "=", "<>", "<", "<=", ">", ">="};
    switch (f->op) {
    case DW_F_AND:
    case DW_F_OR:
        (void)dw_buf_putc(b, '(');
        for (size_t i = 0; i < f->nargs; i++) {
            if (i > 0)
                (void)dw_buf_puts(b, f->op == DW_F_AND ? " AND " : " OR ");
            filter_sql(b, f->args[i], t);
        }
        (void)dw_buf_putc(b, ')');
        return;
    case DW_F_NOT:
        (void)dw_buf_puts(b, "(NOT ");
        filter_sql(b, f->args[0], t);
        (void)dw_buf_putc(b, ')');
        return;
    default:
        break;
    }
    (void)dw_buf_putc(b, '(');
    put_ident(b, resolve(t, f->column));
    if (f->op == DW_F_IS_NULL) {
        (void)dw_buf_puts(b, " IS NULL)");
    } else if (f->op == DW_F_IS_NOT_NULL) {
        (void)dw_buf_puts(b, " IS NOT NULL)");
    } else if (f->op == DW_F_IN || f->op == DW_F_NOT_IN) {
        /* PostgreSQL 15 refuses "x IN (...)" (an array) in a row filter: spell it out. */
        for (size_t i = 0; i < json_array_size(f->value); i++) {
            if (i > 0) {
                (void)dw_buf_puts(b, f->op == DW_F_IN ? " OR " : " AND ");
                put_ident(b, resolve(t, f->column));
            }
            (void)dw_buf_puts(b, f->op == DW_F_IN ? " = " : " <> ");
            put_literal(b, json_array_get(f->value, i));
        }
        (void)dw_buf_putc(b, ')');
    } else {
        (void)dw_buf_printf(b, " %s ", cmp[f->op]);
        put_literal(b, f->value);
        (void)dw_buf_putc(b, ')');
    }
}

/*
 * The row filter of one map, or false (nothing appended) when it takes every row. With
 * les[0..nles), the legal entities compared with the company column are those instead of
 * the job's (the caller checked they are among the job's).
 */
static bool map_filter_sql(struct dw_buf *b, const struct dw_jobdef *def,
                           const struct dw_tablemap *m, const struct dw_src_table *t,
                           const char *const *les, size_t nles)
{
    if (nles == 0) {
        les = (const char *const *)def->legal_entities;
        nles = def->nlegal_entities;
    }
    bool le = m->company_source && nles > 0;
    if (!le && m->filter == NULL)
        return false;
    (void)dw_buf_putc(b, '(');
    if (le) {
        (void)dw_buf_putc(b, '(');
        for (size_t i = 0; i < nles; i++) {
            json_t *s = json_string(les[i]);
            if (i > 0)
                (void)dw_buf_puts(b, " OR ");
            put_ident(b, resolve(t, m->company_source));
            (void)dw_buf_puts(b, " = ");
            put_literal(b, s);
            json_decref(s);
        }
        (void)dw_buf_putc(b, ')');
    }
    if (m->filter) {
        if (le)
            (void)dw_buf_puts(b, " AND ");
        filter_sql(b, m->filter, t);
    }
    (void)dw_buf_putc(b, ')');
    return true;
}

static bool name_listed(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

dw_rc dw_copy_table_filter(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                           const char *schema, const char *table,
                           const struct dw_copy_selection *sel, struct dw_buf *sql, bool *any)
{
    static const struct dw_copy_selection everything = {NULL, 0, NULL, 0};
    const struct dw_src_table *t = dw_src_catalog_table(cat, schema, table);
    struct dw_buf one;
    dw_buf_init(&one, 0);
    size_t nmaps = 0, nfiltered = 0;
    if (sel == NULL)
        sel = &everything;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            if (strcmp(m->source_schema, schema) != 0 || strcmp(m->source_table, table) != 0)
                continue;
            if (sel->nmaps > 0 && !name_listed(m->name, sel->maps, sel->nmaps))
                continue;
            if (sel->nles > 0 && m->company_source == NULL)
                continue; /* not striped by legal entity: not part of one */
            nmaps++;
            size_t mark = one.len;
            if (nfiltered > 0)
                (void)dw_buf_puts(&one, " OR ");
            if (map_filter_sql(&one, def, m, t, sel->les, sel->nles)) {
                nfiltered++;
            } else {
                one.len = mark;
                if (one.data)
                    one.data[mark] = '\0';
            }
        }
    }
    /* One map that takes every row makes the whole table unfiltered. */
    dw_rc rc = DW_OK;
    if (nmaps > 0 && nfiltered == nmaps)
        rc = dw_buf_puts(sql, dw_buf_str(&one));
    dw_buf_cleanup(&one);
    *any = nmaps > 0;
    return rc;
}

dw_rc dw_publication_table_filter(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                                  const char *schema, const char *table, struct dw_buf *sql)
{
    bool any = false;
    return dw_copy_table_filter(def, cat, schema, table, NULL, sql, &any);
}

/* Adds a column name to a list once (case-insensitively, resolved through the table). */
static void add_col(char ***list, size_t *n, const struct dw_src_table *t, const char *name)
{
    const char *r = resolve(t, name);
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*list)[i], r) == 0)
            return;
    *list = dw_realloc(*list, (*n + 1) * sizeof **list);
    (*list)[(*n)++] = dw_strdup(r);
}

static void key_cols(char ***list, size_t *n, const struct dw_src_table *t,
                     const struct dw_keypart *parts, size_t nparts)
{
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].lookup)
            key_cols(list, n, t, parts[i].lookup->key, parts[i].lookup->nkey);
        else if (parts[i].source)
            add_col(list, n, t, parts[i].source);
    }
}

static void filter_cols(char ***list, size_t *n, const struct dw_src_table *t,
                        const struct dw_filter *f)
{
    if (f == NULL)
        return;
    if (f->column)
        add_col(list, n, t, f->column);
    for (size_t i = 0; i < f->nargs; i++)
        filter_cols(list, n, t, f->args[i]);
}

dw_rc dw_publication_tables_sql(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                                struct dw_buf *sql)
{
    size_t ntables = 0;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            /* Each table once, at its first map. */
            bool seen = false;
            for (size_t h = 0; h <= g && !seen; h++)
                for (size_t j = 0; j < (h == g ? i : def->groups[h].nmaps) && !seen; j++)
                    seen = strcmp(def->groups[h].maps[j].source_schema, m->source_schema) == 0 &&
                           strcmp(def->groups[h].maps[j].source_table, m->source_table) == 0;
            if (seen)
                continue;
            const struct dw_src_table *t =
                dw_src_catalog_table(cat, m->source_schema, m->source_table);
            if (ntables++ > 0)
                (void)dw_buf_puts(sql, ", ");
            (void)dw_buf_puts(sql, "TABLE ONLY ");
            put_ident(sql, m->source_schema);
            (void)dw_buf_putc(sql, '.');
            put_ident(sql, m->source_table);
            if (t && t->replica_identity != 'f') {
                char **cols = NULL;
                size_t ncols = 0;
                for (size_t c = 0; c < t->ncols; c++)
                    if (t->cols[c].identity)
                        add_col(&cols, &ncols, t, t->cols[c].name);
                for (size_t h = 0; h < def->ngroups; h++) {
                    for (size_t j = 0; j < def->groups[h].nmaps; j++) {
                        const struct dw_tablemap *o = &def->groups[h].maps[j];
                        if (strcmp(o->source_schema, m->source_schema) != 0 ||
                            strcmp(o->source_table, m->source_table) != 0)
                            continue;
                        key_cols(&cols, &ncols, t, o->key, o->nkey);
                        for (size_t c = 0; c < o->ncols; c++) {
                            if (o->cols[c].direction == DW_DIR_TO_FO ||
                                o->cols[c].direction == DW_DIR_TO_FO_TRANSFORM)
                                continue;
                            if (o->cols[c].source)
                                add_col(&cols, &ncols, t, o->cols[c].source);
                            if (o->cols[c].lookup)
                                key_cols(&cols, &ncols, t, o->cols[c].lookup->key,
                                         o->cols[c].lookup->nkey);
                        }
                        filter_cols(&cols, &ncols, t, o->filter);
                    }
                }
                (void)dw_buf_puts(sql, " (");
                /* In table order, so the list reads like the table and is stable. */
                size_t written = 0;
                for (size_t c = 0; c < t->ncols; c++) {
                    for (size_t k = 0; k < ncols; k++) {
                        if (strcmp(cols[k], t->cols[c].name) == 0) {
                            if (written++ > 0)
                                (void)dw_buf_puts(sql, ", ");
                            put_ident(sql, cols[k]);
                        }
                    }
                }
                (void)dw_buf_putc(sql, ')');
                for (size_t k = 0; k < ncols; k++)
                    free(cols[k]);
                free(cols);
            }
            struct dw_buf where;
            dw_buf_init(&where, 0);
            (void)dw_publication_table_filter(def, cat, m->source_schema, m->source_table, &where);
            if (where.len > 0)
                (void)dw_buf_printf(sql, " WHERE (%s)", dw_buf_str(&where));
            dw_buf_cleanup(&where);
        }
    }
    return DW_OK;
}

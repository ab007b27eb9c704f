/* `map validate`: maps against the source catalog and Dataverse metadata, as a pure function. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/scaffold.h"

void dw_findings_init(struct dw_findings *f)
{
    dw_buf_init(&f->text, 0);
    f->errors = 0;
    f->warnings = 0;
}

void dw_findings_cleanup(struct dw_findings *f)
{
    dw_buf_cleanup(&f->text);
}

__attribute__((format(printf, 4, 5))) static void finding(struct dw_findings *f, bool error,
                                                          const char *path, const char *fmt, ...)
{
    va_list ap;
    if (error)
        f->errors++;
    else
        f->warnings++;
    (void)dw_buf_printf(&f->text, "%s: %s: ", error ? "error" : "warning", path);
    va_start(ap, fmt);
    (void)dw_buf_vprintf(&f->text, fmt, ap);
    va_end(ap);
    (void)dw_buf_putc(&f->text, '\n');
}

struct vctx {
    const struct dw_jobdef *def;
    const struct dw_src_catalog *cat;
    const struct dw_entity_meta *const *metas;
    size_t nmetas;
    struct dw_findings *f;
};

static const struct dw_entity_meta *find_meta(const struct vctx *v, const char *logical_name)
{
    for (size_t i = 0; i < v->nmetas; i++)
        if (strcasecmp(v->metas[i]->logical_name, logical_name) == 0)
            return v->metas[i];
    return NULL;
}

/* --- source ---------------------------------------------------------------------------- */

static bool type_is(const char *pgtype, const char *const *prefixes)
{
    for (; *prefixes; prefixes++)
        if (strncmp(pgtype, *prefixes, strlen(*prefixes)) == 0)
            return true;
    return false;
}

static const char *const text_types[] = {"text", "character", "name", "citext", NULL};
static const char *const int_types[] = {"smallint", "integer", "bigint", NULL};
static const char *const num_types[] = {"smallint", "integer",          "bigint", "numeric",
                                        "real",     "double precision", "money",  NULL};
static const char *const time_types[] = {"timestamp", "date", NULL};

/* Whether values of a source type convert to a map's coercion type (false: never). */
static bool convertible(const char *pgtype, enum dw_attr_type t, bool *maybe)
{
    *maybe = false;
    bool text = type_is(pgtype, text_types);
    switch (t) {
    case DW_ATTR_STRING:
    case DW_ATTR_MEMO:
        return true;
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
    case DW_ATTR_PICKLIST:
        *maybe = text || type_is(pgtype, (const char *const[]){"numeric", NULL});
        return type_is(pgtype, int_types) || *maybe || strcmp(pgtype, "boolean") == 0;
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE:
        *maybe = text;
        return type_is(pgtype, num_types) || text;
    case DW_ATTR_BOOLEAN:
        *maybe = text || type_is(pgtype, int_types);
        return strcmp(pgtype, "boolean") == 0 || *maybe;
    case DW_ATTR_DATETIME:
        *maybe = text;
        return type_is(pgtype, time_types) || text;
    case DW_ATTR_UNIQUEIDENTIFIER:
        *maybe = text;
        return strcmp(pgtype, "uuid") == 0 || text;
    default:
        return true;
    }
}

/* The table's column nearest to a missing one, for a "did you mean" hint; NULL if none. */
static const char *nearest_column(const struct dw_src_table *t, const char *column)
{
    const char **names = dw_calloc(t->ncols + 1, sizeof *names);
    for (size_t i = 0; i < t->ncols; i++)
        names[i] = t->cols[i].name;
    const char *found = dw_scaffold_nearest(column, names, t->ncols);
    free(names);
    return found;
}

static void missing_column(struct vctx *v, const struct dw_src_table *t, const char *path,
                           const char *column)
{
    const char *near = nearest_column(t, column);
    finding(v->f, true, path, "column \"%s\" does not exist in \"%s.%s\"%s%s%s", column, t->schema,
            t->name, near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
}

static void check_source_col(struct vctx *v, const struct dw_src_table *t, const char *path,
                             const char *column)
{
    if (t && dw_src_table_column(t, column) == NULL)
        missing_column(v, t, path, column);
}

static void check_key_sources(struct vctx *v, const struct dw_src_table *t, const char *path,
                              const struct dw_keypart *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *p = dw_asprintf("%s[%zu]", path, i);
        if (parts[i].lookup) {
            char *lp = dw_asprintf("%s.lookup.key", p);
            check_key_sources(v, t, lp, parts[i].lookup->key, parts[i].lookup->nkey);
            free(lp);
        } else {
            check_source_col(v, t, p, parts[i].source);
        }
        free(p);
    }
}

static void filter_columns_check(struct vctx *v, const struct dw_src_table *t, const char *path,
                                 const struct dw_filter *fl, bool *outside_identity,
                                 const char **which)
{
    if (fl->column) {
        const struct dw_src_column *c = dw_src_table_column(t, fl->column);
        if (c == NULL)
            missing_column(v, t, path, fl->column);
        else if (!c->identity && !*outside_identity) {
            *outside_identity = true;
            *which = c->name;
        }
    }
    for (size_t i = 0; i < fl->nargs; i++)
        filter_columns_check(v, t, path, fl->args[i], outside_identity, which);
}

static void check_source(struct vctx *v, const struct dw_tablemap *m, const char *mp)
{
    const struct dw_src_table *t = dw_src_catalog_table(v->cat, m->source_schema, m->source_table);
    char *p = dw_asprintf("%s.source", mp);
    if (t == NULL) {
        finding(v->f, true, p, "table \"%s.%s\" does not exist in the source database",
                m->source_schema, m->source_table);
        free(p);
        return;
    }
    free(p);
    if (t->replica_identity == 'n' || (t->replica_identity == 'd' && !t->has_identity_key)) {
        p = dw_asprintf("%s.source", mp);
        finding(v->f, true, p,
                "table \"%s.%s\" has no replica identity: PostgreSQL refuses UPDATE and DELETE "
                "on a published table without one; add a primary key or run ALTER TABLE "
                "%s.%s REPLICA IDENTITY FULL",
                t->schema, t->name, t->schema, t->name);
        free(p);
    }
    p = dw_asprintf("%s.key", mp);
    check_key_sources(v, t, p, m->key, m->nkey);
    free(p);
    for (size_t i = 0; i < m->ncols; i++) {
        const struct dw_colmap *c = &m->cols[i];
        p = dw_asprintf("%s.columns[%zu]", mp, i);
        if (c->lookup) {
            char *lp = dw_asprintf("%s.lookup.key", p);
            check_key_sources(v, t, lp, c->lookup->key, c->lookup->nkey);
            free(lp);
        } else if (c->source) {
            const struct dw_src_column *sc = dw_src_table_column(t, c->source);
            bool maybe = false;
            if (sc == NULL) {
                check_source_col(v, t, p, c->source);
            } else if (c->has_type && !c->value_map && !convertible(sc->type, c->type, &maybe)) {
                finding(v->f, true, p, "column \"%s\" (%s) does not convert to %s", sc->name,
                        sc->type, dw_mapfile_type_name(c->type));
            } else if (c->has_type && !c->value_map && maybe) {
                finding(v->f, false, p,
                        "column \"%s\" (%s) converts to %s only for some values; the others "
                        "become mapping errors",
                        sc->name, sc->type, dw_mapfile_type_name(c->type));
            }
        }
        free(p);
    }
    /* PostgreSQL checks a row filter's columns against the replica identity when an UPDATE
     * or DELETE runs on the source, and fails that statement: so it is checked here. */
    bool outside = false;
    const char *which = NULL;
    if (m->filter) {
        p = dw_asprintf("%s.filter", mp);
        filter_columns_check(v, t, p, m->filter, &outside, &which);
        free(p);
    }
    if (m->company_source && v->def->nlegal_entities > 0) {
        const struct dw_src_column *c = dw_src_table_column(t, m->company_source);
        if (c && !c->identity && !outside) {
            outside = true;
            which = c->name;
        }
    }
    if (outside) {
        p = dw_asprintf("%s.filter", mp);
        finding(v->f, true, p,
                "the row filter reads column \"%s\", which is not in the replica identity of "
                "\"%s.%s\": PostgreSQL would then refuse every UPDATE and DELETE on the table "
                "once it is published, and dwasync needs the old value to turn an UPDATE that "
                "leaves the filter into a DELETE; run ALTER TABLE %s.%s REPLICA IDENTITY FULL "
                "(or filter on key columns only)",
                which, t->schema, t->name, t->schema, t->name);
        free(p);
    }
}

/* --- Dataverse ------------------------------------------------------------------------- */

static bool type_matches(enum dw_attr_type declared, enum dw_attr_type actual)
{
    if (declared == actual)
        return true;
    if ((declared == DW_ATTR_STRING && actual == DW_ATTR_MEMO) ||
        (declared == DW_ATTR_MEMO && actual == DW_ATTR_STRING))
        return true;
    /* Status and state are option sets too; BigInt accepts any integer. */
    if (declared == DW_ATTR_PICKLIST && actual == DW_ATTR_OTHER)
        return true;
    if (declared == DW_ATTR_INTEGER && actual == DW_ATTR_BIGINT)
        return true;
    return false;
}

static bool has_option(const struct dw_attr_meta *a, json_int_t v)
{
    for (size_t i = 0; i < a->noptions; i++)
        if (a->options[i] == v)
            return true;
    return false;
}

static void check_option_value(struct vctx *v, const char *path, const struct dw_attr_meta *a,
                               const json_t *val)
{
    if (a->type != DW_ATTR_PICKLIST || !json_is_integer(val))
        return;
    if (!has_option(a, json_integer_value(val)))
        finding(v->f, true, path, "option value %lld is not in the option set of \"%s\"",
                (long long)json_integer_value(val), a->logical_name);
}

/* Checks that key parts name an active alternate key of meta. */
static void check_alternate_key(struct vctx *v, const char *path, const struct dw_entity_meta *e,
                                const struct dw_keypart *parts, size_t n)
{
    for (size_t k = 0; k < e->nkeys; k++) {
        const struct dw_key_meta *km = &e->keys[k];
        if (km->nattributes != n)
            continue;
        bool all = true;
        for (size_t i = 0; i < n && all; i++) {
            bool found = false;
            for (size_t j = 0; j < km->nattributes && !found; j++)
                found = strcasecmp(km->attributes[j], parts[i].target) == 0;
            all = found;
        }
        if (all) {
            if (!km->active)
                finding(v->f, true, path, "alternate key \"%s\" of \"%s\" is not active",
                        km->logical_name, e->logical_name);
            return;
        }
    }
    struct dw_buf b;
    dw_buf_init(&b, 0);
    for (size_t i = 0; i < n; i++)
        (void)dw_buf_printf(&b, "%s%s", i ? ", " : "", parts[i].target);
    finding(v->f, true, path, "(%s) is not an alternate key of \"%s\"", dw_buf_str(&b),
            e->logical_name);
    dw_buf_cleanup(&b);
}

static void check_lookup_attr(struct vctx *v, const char *path, const struct dw_entity_meta *e,
                              const char *attr, const char *target_logical)
{
    const struct dw_attr_meta *a = dw_entity_meta_attr(e, attr);
    if (a == NULL) {
        finding(v->f, true, path, "\"%s\" has no column \"%s\"", e->logical_name, attr);
        return;
    }
    if (a->type != DW_ATTR_LOOKUP) {
        finding(v->f, true, path, "\"%s.%s\" is a %s, not a lookup", e->logical_name, attr,
                dw_attr_type_name(a->type));
        return;
    }
    /* Metadata that does not list the targets (a $select without Targets) cannot refute
     * the lookup: only a listed set of targets is checked. */
    if (a->ntargets == 0)
        return;
    for (size_t i = 0; i < a->ntargets; i++)
        if (strcasecmp(a->targets[i], target_logical) == 0)
            return;
    finding(v->f, true, path, "lookup \"%s.%s\" cannot refer to \"%s\"", e->logical_name, attr,
            target_logical);
}

static void check_keyparts_dv(struct vctx *v, const char *path, const struct dw_entity_meta *e,
                              const struct dw_keypart *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *p = dw_asprintf("%s[%zu]", path, i);
        const struct dw_keypart *kp = &parts[i];
        if (kp->kind == DW_KEYPART_COLUMN) {
            if (dw_entity_meta_attr(e, kp->target) == NULL)
                finding(v->f, true, p, "\"%s\" has no column \"%s\"", e->logical_name, kp->target);
        } else {
            const char *tl =
                kp->kind == DW_KEYPART_COMPANY ? DW_COMPANY_LOGICAL_NAME : kp->lookup->logical_name;
            check_lookup_attr(v, p, e, kp->target, tl);
        }
        if (kp->lookup) {
            const struct dw_entity_meta *parent = find_meta(v, kp->lookup->logical_name);
            char *lp = dw_asprintf("%s.lookup.key", p);
            if (parent) {
                check_keyparts_dv(v, lp, parent, kp->lookup->key, kp->lookup->nkey);
                check_alternate_key(v, lp, parent, kp->lookup->key, kp->lookup->nkey);
            }
            free(lp);
        }
        free(p);
    }
}

static void check_dataverse(struct vctx *v, const struct dw_tablemap *m, const char *mp)
{
    const struct dw_entity_meta *e = find_meta(v, m->logical_name);
    char *p = dw_asprintf("%s.target", mp);
    if (e == NULL) {
        finding(v->f, true, p, "Dataverse has no table \"%s\"", m->logical_name);
        free(p);
        return;
    }
    if (e->entity_set && strcasecmp(e->entity_set, m->entity_set) != 0)
        finding(v->f, true, p, "the entity set of \"%s\" is \"%s\", not \"%s\"", e->logical_name,
                e->entity_set, m->entity_set);
    free(p);
    p = dw_asprintf("%s.key", mp);
    check_keyparts_dv(v, p, e, m->key, m->nkey);
    check_alternate_key(v, p, e, m->key, m->nkey);
    free(p);
    const struct dw_src_table *t =
        v->cat ? dw_src_catalog_table(v->cat, m->source_schema, m->source_table) : NULL;
    for (size_t i = 0; i < m->ncols; i++) {
        const struct dw_colmap *c = &m->cols[i];
        p = dw_asprintf("%s.columns[%zu]", mp, i);
        if (c->direction == DW_DIR_TO_FO || c->direction == DW_DIR_TO_FO_TRANSFORM) {
            free(p);
            continue;
        }
        if (c->lookup) {
            char *lp = dw_asprintf("%s.lookup.key", p);
            check_lookup_attr(v, p, e, c->target, c->lookup->logical_name);
            const struct dw_entity_meta *parent = find_meta(v, c->lookup->logical_name);
            if (parent) {
                check_keyparts_dv(v, lp, parent, c->lookup->key, c->lookup->nkey);
                check_alternate_key(v, lp, parent, c->lookup->key, c->lookup->nkey);
            }
            free(lp);
            free(p);
            continue;
        }
        const struct dw_attr_meta *a = dw_entity_meta_attr(e, c->target);
        if (a == NULL) {
            finding(v->f, true, p, "\"%s\" has no column \"%s\"", e->logical_name, c->target);
            free(p);
            continue;
        }
        if (c->has_type && !type_matches(c->type, a->type))
            finding(v->f, true, p, "\"%s\" is %s in Dataverse, the map converts to %s", c->target,
                    dw_attr_type_name(a->type), dw_mapfile_type_name(c->type));
        if (c->value_map) {
            const char *k;
            json_t *val;
            json_object_foreach(c->value_map, k, val)
            {
                char *vp = dw_asprintf("%s.value_map.\"%s\"", p, k);
                check_option_value(v, vp, a, val);
                free(vp);
            }
        }
        if (c->constant) {
            char *cp = dw_asprintf("%s.constant", p);
            check_option_value(v, cp, a, c->constant);
            free(cp);
        }
        if (c->deflt) {
            char *dp = dw_asprintf("%s.default", p);
            check_option_value(v, dp, a, c->deflt);
            free(dp);
        }
        const struct dw_src_column *sc = t && c->source ? dw_src_table_column(t, c->source) : NULL;
        if (sc && !c->value_map && (a->type == DW_ATTR_STRING || a->type == DW_ATTR_MEMO) &&
            a->max_length > 0) {
            /* A warning, not an error: the data may fit, and a row that does not is an
             * error row of class validation, fixed and skipped by the operator. */
            if (sc->max_length > a->max_length)
                finding(v->f, false, p,
                        "source \"%s\" (%s) is longer than \"%s\" (%s, at most %d): longer "
                        "values are refused by Dataverse and land in the error table",
                        sc->name, sc->type, c->target, dw_attr_type_name(a->type), a->max_length);
            else if (sc->max_length == 0 && type_is(sc->type, text_types))
                finding(v->f, false, p,
                        "source \"%s\" (%s) has no length limit, \"%s\" holds at most %d", sc->name,
                        sc->type, c->target, a->max_length);
        }
        free(p);
    }
}

/*
 * An atomic group is applied at the level of its first map, children inside it: a map of the
 * group that is not atomic but sits between atomic ones is applied after the whole group,
 * so the group's later rows cannot refer to its rows.
 */
static void check_atomic_order(const struct dw_mapgroup *grp, size_t g, struct dw_findings *f)
{
    const struct dw_tablemap *lo = NULL, *hi = NULL;
    for (size_t i = 0; i < grp->nmaps; i++) {
        if (!grp->maps[i].atomic)
            continue;
        lo = lo ? lo : &grp->maps[i];
        hi = &grp->maps[i];
    }
    for (size_t i = 0; lo && i < grp->nmaps; i++) {
        const struct dw_tablemap *m = &grp->maps[i];
        if (m->atomic || m->sequence <= lo->sequence || m->sequence >= hi->sequence)
            continue;
        char *p = dw_asprintf("$.groups[%zu].maps[%zu]", g, i);
        finding(f, false, p,
                "map \"%s\" (sequence %d) is not atomic but lies between the atomic maps \"%s\" "
                "and \"%s\": it is applied after their atomic groups, whose rows therefore "
                "cannot refer to its rows",
                m->name, m->sequence, lo->name, hi->name);
        free(p);
    }
}

void dw_mapvalidate(const struct dw_jobdef *def, const struct dw_src_catalog *cat,
                    const struct dw_entity_meta *const *metas, size_t nmetas, struct dw_findings *f)
{
    struct vctx v = {def, cat, metas, nmetas, f};
    /* F&O stores dataAreaId in lower case; the filters compare exactly. */
    for (size_t i = 0; i < def->nlegal_entities; i++) {
        bool upper = false;
        for (const char *c = def->legal_entities[i]; *c; c++)
            upper = upper || (*c >= 'A' && *c <= 'Z');
        if (upper) {
            char *p = dw_asprintf("$.job.legal_entities[%zu]", i);
            finding(f, false, p,
                    "\"%s\" has upper-case letters: F&O stores dataAreaId in lower case and "
                    "legal entities compare exactly",
                    def->legal_entities[i]);
            free(p);
        }
    }
    for (size_t g = 0; g < def->ngroups; g++) {
        check_atomic_order(&def->groups[g], g, f);
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            char *mp = dw_asprintf("$.groups[%zu].maps[%zu]", g, i);
            if (cat)
                check_source(&v, &def->groups[g].maps[i], mp);
            if (nmetas > 0)
                check_dataverse(&v, &def->groups[g].maps[i], mp);
            free(mp);
        }
    }
}

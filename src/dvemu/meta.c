/* dvemu's table metadata: loading the JSON file (format in README, "dvemu") and rendering
 * it the way EntityDefinitions answers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/hash.h"
#include "dwasync/log.h"
#include "internal.h"
#include "dwasync/dvmeta.h"

static const struct {
    const char *name;
    enum dw_attr_type type;
    const char *edm;
    const char *meta_type; /* the @odata.type cast of its AttributeMetadata */
} type_table[] = {
    {"String", DW_ATTR_STRING, "Edm.String", "StringAttributeMetadata"},
    {"Memo", DW_ATTR_MEMO, "Edm.String", "MemoAttributeMetadata"},
    {"Integer", DW_ATTR_INTEGER, "Edm.Int32", "IntegerAttributeMetadata"},
    {"BigInt", DW_ATTR_BIGINT, "Edm.Int64", "BigIntAttributeMetadata"},
    {"Decimal", DW_ATTR_DECIMAL, "Edm.Decimal", "DecimalAttributeMetadata"},
    {"Money", DW_ATTR_MONEY, "Edm.Decimal", "MoneyAttributeMetadata"},
    {"Double", DW_ATTR_DOUBLE, "Edm.Double", "DoubleAttributeMetadata"},
    {"Boolean", DW_ATTR_BOOLEAN, "Edm.Boolean", "BooleanAttributeMetadata"},
    {"DateTime", DW_ATTR_DATETIME, "Edm.DateTimeOffset", "DateTimeAttributeMetadata"},
    {"Picklist", DW_ATTR_PICKLIST, "Edm.Int32", "PicklistAttributeMetadata"},
    {"State", DW_ATTR_PICKLIST, "Edm.Int32", "StateAttributeMetadata"},
    {"Status", DW_ATTR_PICKLIST, "Edm.Int32", "StatusAttributeMetadata"},
    {"Lookup", DW_ATTR_LOOKUP, "Edm.Guid", "LookupAttributeMetadata"},
    {"Customer", DW_ATTR_LOOKUP, "Edm.Guid", "LookupAttributeMetadata"},
    {"Owner", DW_ATTR_LOOKUP, "Edm.Guid", "LookupAttributeMetadata"},
    {"Uniqueidentifier", DW_ATTR_UNIQUEIDENTIFIER, "Edm.Guid", "UniqueIdentifierAttributeMetadata"},
};

static int type_index(const char *type_name)
{
    for (size_t i = 0; i < sizeof type_table / sizeof type_table[0]; i++)
        if (strcmp(type_table[i].name, type_name) == 0)
            return (int)i;
    return -1;
}

const char *emu_edm_type(const struct emu_attr *a)
{
    int i = type_index(a->type_name);
    if (a->type == DW_ATTR_DATETIME && a->format && strcmp(a->format, "DateOnly") == 0)
        return "Edm.Date";
    return i >= 0 ? type_table[i].edm : "Edm.String";
}

struct emu_table *emu_table_by_set(struct emu *emu, const char *set, size_t len)
{
    for (size_t i = 0; i < emu->ntables; i++)
        if (strlen(emu->tables[i].set) == len && memcmp(emu->tables[i].set, set, len) == 0)
            return &emu->tables[i];
    return NULL;
}

struct emu_table *emu_table_by_logical(struct emu *emu, const char *name)
{
    for (size_t i = 0; i < emu->ntables; i++)
        if (strcmp(emu->tables[i].logical, name) == 0)
            return &emu->tables[i];
    return NULL;
}

const struct emu_attr *emu_attr_find(const struct emu_table *t, const char *name)
{
    for (size_t i = 0; i < t->nattrs; i++)
        if (strcmp(t->attrs[i].name, name) == 0)
            return &t->attrs[i];
    return NULL;
}

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

/* A stable GUID-shaped MetadataId derived from a name, so answers do not change between
 * runs (FNV-1a; identity, not security). */
char *emu_stable_guid(const char *a, const char *b)
{
    /* (Their own seeds, which the ids of saved states depend on.) */
    uint64_t h1 = dw_fnv1a(1469598103934665603ULL, a, strlen(a));
    uint64_t h2 = dw_fnv1a(1099511628211ULL * 7, b, strlen(b)) ^ h1;
    return dw_asprintf("%08x-%04x-%04x-%04x-%012llx", (unsigned)(h1 >> 32),
                       (unsigned)(h1 >> 16) & 0xffff, (unsigned)h1 & 0xffff,
                       (unsigned)(h2 >> 48) & 0xffff, (unsigned long long)(h2 & 0xffffffffffffULL));
}

static void add_implicit(struct emu_table *t, const char *name, const char *type, bool ro)
{
    if (emu_attr_find(t, name))
        return;
    t->attrs = dw_realloc(t->attrs, (t->nattrs + 1) * sizeof *t->attrs);
    struct emu_attr *a = &t->attrs[t->nattrs++];
    memset(a, 0, sizeof *a);
    a->name = dw_strdup(name);
    a->prop = dw_strdup(name);
    a->type_name = dw_strdup(type);
    a->type = type_table[type_index(type)].type;
    a->required = dw_strdup(strcmp(type, "Uniqueidentifier") == 0 ? "SystemRequired" : "None");
    a->readonly = ro;
    if (a->type == DW_ATTR_DATETIME)
        a->format = dw_strdup("DateAndTime");
    if (a->type == DW_ATTR_BIGINT) {
        a->min_value = -9223372036854775807.0;
        a->max_value = 9223372036854775807.0;
    }
}

static const char *const cascade_names[] = {
    [EMU_CASCADE_REMOVE_LINK] = "RemoveLink",
    [EMU_CASCADE_CASCADE] = "Cascade",
    [EMU_CASCADE_RESTRICT] = "Restrict",
};

const char *emu_cascade_name(enum emu_cascade c)
{
    return cascade_names[c];
}

static dw_rc parse_cascade(const char *name, enum emu_cascade *out)
{
    for (size_t i = 0; i < sizeof cascade_names / sizeof *cascade_names; i++)
        if (strcmp(name, cascade_names[i]) == 0) {
            *out = (enum emu_cascade)i;
            return DW_OK;
        }
    return DW_ERR_CONFIG;
}

static dw_rc load_attr(const char *table, json_t *ja, struct emu_attr *a)
{
    const char *name = json_string_value(json_object_get(ja, "name"));
    const char *type = json_string_value(json_object_get(ja, "type"));
    int ti = type ? type_index(type) : -1;
    if (name == NULL || ti < 0) {
        DW_ERROR("metadata: table \"%s\": attribute \"%s\" needs a name and a known type (got "
                 "\"%s\")",
                 table, name ? name : "?", type ? type : "");
        return DW_ERR_CONFIG;
    }
    a->name = dw_strdup(name);
    a->type_name = dw_strdup(type);
    a->type = type_table[ti].type;
    a->prop = a->type == DW_ATTR_LOOKUP ? dw_asprintf("_%s_value", name) : dw_strdup(name);
    a->required = dw_strdup(str_or(ja, "required", "None"));
    a->max_length = (int)json_integer_value(json_object_get(ja, "max_length"));
    if ((a->type == DW_ATTR_STRING || a->type == DW_ATTR_MEMO) && a->max_length <= 0)
        a->max_length = a->type == DW_ATTR_STRING ? 100 : 2000;
    a->precision = (int)json_integer_value(json_object_get(ja, "precision"));
    json_t *mn = json_object_get(ja, "min"), *mx = json_object_get(ja, "max");
    int precision = 0;
    if (dw_attr_type_range(a->type, &a->min_value, &a->max_value, &precision) &&
        !json_object_get(ja, "precision"))
        a->precision = precision;
    if (json_is_number(mn))
        a->min_value = json_number_value(mn);
    if (json_is_number(mx))
        a->max_value = json_number_value(mx);
    if (a->type == DW_ATTR_DATETIME)
        a->format = dw_strdup(str_or(ja, "format", "DateAndTime"));
    json_t *opts = json_object_get(ja, "options");
    if (a->type == DW_ATTR_PICKLIST) {
        if (!json_is_array(opts) || json_array_size(opts) == 0) {
            DW_ERROR("metadata: table \"%s\": picklist \"%s\" needs options", table, name);
            return DW_ERR_CONFIG;
        }
        a->noptions = json_array_size(opts);
        a->options = dw_calloc(a->noptions, sizeof *a->options);
        for (size_t i = 0; i < a->noptions; i++) {
            json_t *o = json_array_get(opts, i);
            a->options[i].value = (int)json_integer_value(json_object_get(o, "value"));
            a->options[i].label = dw_strdup(str_or(o, "label", ""));
        }
    }
    if (a->type == DW_ATTR_LOOKUP) {
        json_t *targets = json_object_get(ja, "targets");
        json_t *nav = json_object_get(ja, "navigation");
        if (!json_is_array(targets) || json_array_size(targets) == 0) {
            DW_ERROR("metadata: table \"%s\": lookup \"%s\" needs targets", table, name);
            return DW_ERR_CONFIG;
        }
        a->ntargets = json_array_size(targets);
        a->targets = dw_calloc(a->ntargets, sizeof *a->targets);
        a->navs = dw_calloc(a->ntargets, sizeof *a->navs);
        a->rnavs = dw_calloc(a->ntargets, sizeof *a->rnavs);
        json_t *rnav = json_object_get(ja, "referenced_navigation");
        json_t *cascade = json_object_get(ja, "cascade_delete");
        a->cascade_delete = dw_calloc(a->ntargets, sizeof *a->cascade_delete);
        for (size_t i = 0; i < a->ntargets; i++) {
            const char *tn = json_string_value(json_array_get(targets, i));
            a->targets[i] = dw_strdup(tn ? tn : "");
            const char *nv = NULL;
            if (json_is_string(nav) && a->ntargets == 1)
                nv = json_string_value(nav);
            else if (json_is_object(nav))
                nv = json_string_value(json_object_get(nav, a->targets[i]));
            /* Dataverse names a polymorphic lookup's properties <lookup>_<target>. */
            a->navs[i] = nv                ? dw_strdup(nv)
                         : a->ntargets > 1 ? dw_asprintf("%s_%s", name, a->targets[i])
                                           : dw_strdup(name);
            /* The one-to-many relationship seen from the target: a collection-valued
             * navigation property, named by the file or <table>_<lookup>_<target>. */
            const char *rv = NULL;
            if (json_is_string(rnav) && a->ntargets == 1)
                rv = json_string_value(rnav);
            else if (json_is_object(rnav))
                rv = json_string_value(json_object_get(rnav, a->targets[i]));
            a->rnavs[i] = rv ? dw_strdup(rv) : dw_asprintf("%s_%s_%s", table, name, a->targets[i]);
            const char *cv = NULL;
            if (json_is_string(cascade) && a->ntargets == 1)
                cv = json_string_value(cascade);
            else if (json_is_object(cascade))
                cv = json_string_value(json_object_get(cascade, a->targets[i]));
            else if (cascade != NULL) {
                DW_ERROR("metadata: table \"%s\": lookup \"%s\": cascade_delete is a string (one "
                         "target) or an object of one per target",
                         table, name);
                return DW_ERR_CONFIG;
            }
            if (cv && parse_cascade(cv, &a->cascade_delete[i]) != DW_OK) {
                DW_ERROR("metadata: table \"%s\": lookup \"%s\": cascade_delete \"%s\" is not "
                         "Cascade, RemoveLink or Restrict",
                         table, name, cv);
                return DW_ERR_CONFIG;
            }
        }
    }
    return DW_OK;
}

static dw_rc load_table(json_t *jt, struct emu_table *t)
{
    const char *logical = json_string_value(json_object_get(jt, "logical_name"));
    const char *set = json_string_value(json_object_get(jt, "entity_set"));
    if (logical == NULL || set == NULL) {
        DW_ERROR("metadata: every table needs \"logical_name\" and \"entity_set\"");
        return DW_ERR_CONFIG;
    }
    t->logical = dw_strdup(logical);
    t->set = dw_strdup(set);
    char *pid = dw_asprintf("%sid", logical);
    t->primary_id = dw_strdup(str_or(jt, "primary_id", pid));
    free(pid);
    t->primary_name = dw_strdup(str_or(jt, "primary_name", "name"));
    t->metadata_id = emu_stable_guid(logical, "entity");
    json_t *bulk = json_object_get(jt, "bulk_messages");
    if (bulk == NULL) {
        t->bulk_create = t->bulk_update = t->bulk_upsert = true;
    } else {
        size_t i;
        json_t *m;
        json_array_foreach(bulk, i, m)
        {
            const char *s = json_string_value(m);
            if (s && strcmp(s, "CreateMultiple") == 0)
                t->bulk_create = true;
            else if (s && strcmp(s, "UpdateMultiple") == 0)
                t->bulk_update = true;
            else if (s && strcmp(s, "UpsertMultiple") == 0)
                t->bulk_upsert = true;
        }
    }
    json_t *attrs = json_object_get(jt, "attributes");
    t->nattrs = json_array_size(attrs);
    t->attrs = dw_calloc(t->nattrs ? t->nattrs : 1, sizeof *t->attrs);
    for (size_t i = 0; i < t->nattrs; i++) {
        dw_rc rc = load_attr(logical, json_array_get(attrs, i), &t->attrs[i]);
        if (rc != DW_OK) {
            t->nattrs = i + 1;
            return rc;
        }
    }
    add_implicit(t, t->primary_id, "Uniqueidentifier", false);
    add_implicit(t, "createdon", "DateTime", true);
    add_implicit(t, "modifiedon", "DateTime", true);
    add_implicit(t, "versionnumber", "BigInt", true);
    json_t *keys = json_object_get(jt, "keys");
    t->nkeys = json_array_size(keys);
    t->keys = dw_calloc(t->nkeys ? t->nkeys : 1, sizeof *t->keys);
    t->kidx = dw_calloc(t->nkeys ? t->nkeys : 1, sizeof *t->kidx);
    for (size_t i = 0; i < t->nkeys; i++) {
        json_t *jk = json_array_get(keys, i);
        struct emu_key *k = &t->keys[i];
        k->name = dw_strdup(str_or(jk, "name", "key"));
        json_t *ka = json_object_get(jk, "attributes");
        k->nattrs = json_array_size(ka);
        k->attrs = dw_calloc(k->nattrs ? k->nattrs : 1, sizeof *k->attrs);
        for (size_t j = 0; j < k->nattrs; j++) {
            const char *an = json_string_value(json_array_get(ka, j));
            const struct emu_attr *a = an ? emu_attr_find(t, an) : NULL;
            if (a == NULL) {
                DW_ERROR("metadata: table \"%s\": key \"%s\" names unknown attribute \"%s\"",
                         logical, k->name, an ? an : "?");
                k->nattrs = j;
                return DW_ERR_CONFIG;
            }
            k->attrs[j] = dw_strdup(an);
        }
        if (k->nattrs == 0 || k->nattrs > 16) {
            DW_ERROR("metadata: table \"%s\": key \"%s\" needs 1 to 16 attributes", logical,
                     k->name);
            return DW_ERR_CONFIG;
        }
    }
    return DW_OK;
}

/* The table a relationship names as entity1 or entity2 (key), or NULL after an error. */
static struct emu_table *m2m_table(struct emu *emu, const json_t *jr, const char *name,
                                   const char *key)
{
    const char *logical = json_string_value(json_object_get(jr, key));
    struct emu_table *t = logical ? emu_table_by_logical(emu, logical) : NULL;
    if (t == NULL)
        DW_ERROR("metadata: many-to-many relationship \"%s\": \"%s\" names no table (\"%s\")", name,
                 key, logical ? logical : "");
    return t;
}

/*
 * Loads "many_to_many": [{"name", "entity1", "entity2", "intersect", "navigation1",
 * "navigation2"}] (intersect and navigation properties default to the name, as Dataverse
 * names them for a relationship between two tables). Each intersect table is added after the
 * metadata's tables, with the two primary ids as its columns and "<intersect>collection" as
 * its entity set; the tables array is reallocated once, before any pointer into it is kept.
 */
static dw_rc load_many_to_many(struct emu *emu, json_t *rels)
{
    size_t n = json_array_size(rels), base = emu->ntables;
    if (n == 0)
        return DW_OK;
    emu->tables = dw_realloc(emu->tables, (base + n) * sizeof *emu->tables);
    memset(emu->tables + base, 0, n * sizeof *emu->tables);
    emu->m2m = dw_calloc(n, sizeof *emu->m2m);
    for (size_t i = 0; i < n; i++) {
        json_t *jr = json_array_get(rels, i);
        const char *name = json_string_value(json_object_get(jr, "name"));
        if (name == NULL) {
            DW_ERROR("metadata: many-to-many relationship %zu needs a \"name\"", i);
            return DW_ERR_CONFIG;
        }
        struct emu_m2m *m = &emu->m2m[emu->nm2m++];
        m->name = dw_strdup(name);
        m->nav[0] = dw_strdup(str_or(jr, "navigation1", name));
        m->nav[1] = dw_strdup(str_or(jr, "navigation2", name));
        if ((m->t[0] = m2m_table(emu, jr, name, "entity1")) == NULL ||
            (m->t[1] = m2m_table(emu, jr, name, "entity2")) == NULL)
            return DW_ERR_CONFIG;
        if (m->t[0] == m->t[1]) {
            DW_ERROR("metadata: many-to-many relationship \"%s\" relates \"%s\" to itself, "
                     "which dvemu does not emulate",
                     name, m->t[0]->logical);
            return DW_ERR_CONFIG;
        }
        const char *intersect = str_or(jr, "intersect", name);
        char *set = dw_asprintf("%scollection", intersect);
        json_t *jt =
            json_pack("{s:s, s:s, s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}], s:[]}", "logical_name",
                      intersect, "entity_set", set, "primary_name", m->t[0]->primary_id,
                      "attributes", "name", m->t[0]->primary_id, "type", "Uniqueidentifier",
                      "required", "SystemRequired", "name", m->t[1]->primary_id, "type",
                      "Uniqueidentifier", "required", "SystemRequired", "bulk_messages");
        free(set);
        m->intersect = &emu->tables[emu->ntables++];
        dw_rc rc = load_table(jt, m->intersect);
        json_decref(jt);
        if (rc != DW_OK)
            return rc;
        m->intersect->intersect = true;
    }
    return DW_OK;
}

dw_rc emu_meta_load(struct emu *emu, const char *file)
{
    json_error_t jerr;
    json_t *root = json_load_file(file, 0, &jerr);
    dw_rc rc = DW_ERR_CONFIG;
    if (root == NULL) {
        DW_ERROR("cannot read metadata file \"%s\": %s (line %d)", file, jerr.text, jerr.line);
        return DW_ERR_CONFIG;
    }
    json_t *tables = json_object_get(root, "tables");
    if (!json_is_array(tables) || json_array_size(tables) == 0) {
        DW_ERROR("metadata file \"%s\" has no \"tables\" array", file);
        goto out;
    }
    emu->ntables = json_array_size(tables);
    emu->tables = dw_calloc(emu->ntables, sizeof *emu->tables);
    for (size_t i = 0; i < emu->ntables; i++) {
        rc = load_table(json_array_get(tables, i), &emu->tables[i]);
        if (rc != DW_OK)
            goto out;
    }
    for (size_t i = 0; i < emu->ntables; i++)
        for (size_t j = 0; j < emu->tables[i].nattrs; j++) {
            const struct emu_attr *a = &emu->tables[i].attrs[j];
            for (size_t k = 0; k < a->ntargets; k++)
                if (emu_table_by_logical(emu, a->targets[k]) == NULL) {
                    DW_ERROR("metadata: lookup \"%s.%s\" targets unknown table \"%s\"",
                             emu->tables[i].logical, a->name, a->targets[k]);
                    rc = DW_ERR_CONFIG;
                    goto out;
                }
        }
    rc = load_many_to_many(emu, json_object_get(root, "many_to_many"));
out:
    json_decref(root);
    return rc;
}

void emu_meta_free(struct emu *emu)
{
    for (size_t i = 0; i < emu->nm2m; i++) {
        free(emu->m2m[i].name);
        free(emu->m2m[i].nav[0]);
        free(emu->m2m[i].nav[1]);
    }
    free(emu->m2m);
    emu->m2m = NULL;
    emu->nm2m = 0;
    for (size_t i = 0; i < emu->ntables; i++) {
        struct emu_table *t = &emu->tables[i];
        for (size_t j = 0; j < t->nattrs; j++) {
            struct emu_attr *a = &t->attrs[j];
            free(a->name);
            free(a->prop);
            free(a->type_name);
            free(a->required);
            free(a->format);
            for (size_t k = 0; k < a->noptions; k++)
                free(a->options[k].label);
            free(a->options);
            for (size_t k = 0; k < a->ntargets; k++) {
                free(a->targets[k]);
                free(a->navs[k]);
                if (a->rnavs)
                    free(a->rnavs[k]);
            }
            free(a->targets);
            free(a->navs);
            free(a->rnavs);
            free(a->cascade_delete);
        }
        for (size_t j = 0; j < t->nkeys; j++) {
            for (size_t k = 0; k < t->keys[j].nattrs; k++)
                free(t->keys[j].attrs[k]);
            free(t->keys[j].attrs);
            free(t->keys[j].name);
        }
        free(t->attrs);
        free(t->keys);
        free(t->kidx);
        free(t->logical);
        free(t->set);
        free(t->primary_id);
        free(t->primary_name);
        free(t->metadata_id);
    }
    free(emu->tables);
    emu->tables = NULL;
    emu->ntables = 0;
}

json_t *emu_meta_entity_json(const struct emu_table *t)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "LogicalName", t->logical, "SchemaName",
                     t->logical, "EntitySetName", t->set, "PrimaryIdAttribute", t->primary_id,
                     "PrimaryNameAttribute", t->primary_name, "MetadataId", t->metadata_id,
                     "IsCustomEntity", strncmp(t->logical, "msdyn_", 6) == 0);
}

static json_t *label_json(const char *text)
{
    json_t *l = json_pack("{s:s, s:i}", "Label", text, "LanguageCode", 1033);
    return json_pack("{s:[O], s:o}", "LocalizedLabels", l, "UserLocalizedLabel", l);
}

json_t *emu_meta_attr_json(const struct emu_attr *a, bool with_options)
{
    int ti = type_index(a->type_name);
    char *mid = emu_stable_guid(a->name, a->type_name);
    char *odata_type = dw_asprintf("#Microsoft.Dynamics.CRM.%s", type_table[ti].meta_type);
    char *type_value = dw_asprintf("%sType", a->type_name);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}, s:{s:s, s:b, s:s}, s:s, s:b}",
                          "@odata.type", odata_type, "LogicalName", a->name, "SchemaName", a->name,
                          "AttributeType", a->type_name, "AttributeTypeName", "Value", type_value,
                          "RequiredLevel", "Value", a->required, "CanBeChanged", 1,
                          "ManagedPropertyLogicalName", "canmodifyrequirementlevelsettings",
                          "MetadataId", mid, "IsValidForCreate", !a->readonly);
    free(mid);
    free(odata_type);
    free(type_value);
    switch (a->type) {
    case DW_ATTR_STRING:
    case DW_ATTR_MEMO:
        json_object_set_new(j, "MaxLength", json_integer(a->max_length));
        break;
    case DW_ATTR_INTEGER:
    case DW_ATTR_BIGINT:
        json_object_set_new(j, "MinValue", json_integer((json_int_t)a->min_value));
        json_object_set_new(j, "MaxValue", json_integer((json_int_t)a->max_value));
        break;
    case DW_ATTR_DECIMAL:
    case DW_ATTR_MONEY:
    case DW_ATTR_DOUBLE:
        json_object_set_new(j, "MinValue", json_real(a->min_value));
        json_object_set_new(j, "MaxValue", json_real(a->max_value));
        json_object_set_new(j, "Precision", json_integer(a->precision));
        break;
    case DW_ATTR_DATETIME:
        json_object_set_new(j, "Format", json_string(a->format));
        break;
    case DW_ATTR_LOOKUP: {
        json_t *targets = json_array();
        for (size_t i = 0; i < a->ntargets; i++)
            json_array_append_new(targets, json_string(a->targets[i]));
        json_object_set_new(j, "Targets", targets);
        break;
    }
    case DW_ATTR_PICKLIST:
        if (with_options) {
            json_t *opts = json_array();
            for (size_t i = 0; i < a->noptions; i++)
                json_array_append_new(opts, json_pack("{s:i, s:o}", "Value", a->options[i].value,
                                                      "Label", label_json(a->options[i].label)));
            json_object_set_new(j, "OptionSet",
                                json_pack("{s:s, s:o}", "Name", a->name, "Options", opts));
            json_object_set_new(j, "GlobalOptionSet", json_null());
        }
        break;
    default:
        break;
    }
    return j;
}

json_t *emu_meta_key_json(const struct emu_table *t, const struct emu_key *k)
{
    json_t *attrs = json_array();
    for (size_t i = 0; i < k->nattrs; i++)
        json_array_append_new(attrs, json_string(k->attrs[i]));
    char *mid = emu_stable_guid(t->logical, k->name);
    json_t *j = json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "LogicalName", k->name, "SchemaName",
                          k->name, "KeyAttributes", attrs, "EntityKeyIndexStatus", "Active",
                          "EntityLogicalName", t->logical, "MetadataId", mid);
    free(mid);
    return j;
}

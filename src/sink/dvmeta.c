/*
 * Fetching Dataverse table metadata (see dvmeta.h): the entity, its attributes and their
 * typed casts (lengths, ranges, precision, lookup targets, option sets), read through the
 * sink's blocking dw_sink_get_json(). Called by the CLI (`map validate`, `job start`,
 * `check`), never from the daemon's event loop.
 */
#include "dwasync/dvmeta.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/dvkey.h"
#include "dwasync/log.h"
#include "dwasync/sink.h"

static const struct {
    const char *name;
    enum dw_attr_type type;
} type_names[] = {
    {"String", DW_ATTR_STRING},     {"Memo", DW_ATTR_MEMO},
    {"Integer", DW_ATTR_INTEGER},   {"BigInt", DW_ATTR_BIGINT},
    {"Decimal", DW_ATTR_DECIMAL},   {"Money", DW_ATTR_MONEY},
    {"Double", DW_ATTR_DOUBLE},     {"Boolean", DW_ATTR_BOOLEAN},
    {"DateTime", DW_ATTR_DATETIME}, {"Picklist", DW_ATTR_PICKLIST},
    {"Lookup", DW_ATTR_LOOKUP},     {"Customer", DW_ATTR_LOOKUP},
    {"Owner", DW_ATTR_LOOKUP},      {"Uniqueidentifier", DW_ATTR_UNIQUEIDENTIFIER},
};

const char *dw_attr_type_name(enum dw_attr_type t)
{
    for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
        if (type_names[i].type == t)
            return type_names[i].name;
    return "Other";
}

enum dw_attr_type dw_attr_type_parse(const char *s)
{
    for (size_t i = 0; s && i < sizeof type_names / sizeof *type_names; i++)
        if (strcmp(type_names[i].name, s) == 0)
            return type_names[i].type;
    return DW_ATTR_OTHER;
}

bool dw_attr_type_range(enum dw_attr_type t, double *min, double *max, int *precision)
{
    switch (t) {
    case DW_ATTR_INTEGER:
        *min = -2147483648.0;
        *max = 2147483647.0;
        *precision = 0;
        return true;
    case DW_ATTR_BIGINT:
        *min = -9223372036854775808.0;
        *max = 9223372036854775807.0;
        *precision = 0;
        return true;
    case DW_ATTR_DECIMAL:
    case DW_ATTR_DOUBLE:
        *min = -100000000000.0;
        *max = 100000000000.0;
        *precision = 2;
        return true;
    case DW_ATTR_MONEY:
        *min = -922337203685477.0;
        *max = 922337203685477.0;
        *precision = 2;
        return true;
    default:
        return false;
    }
}

/* Limits Dataverse applies when a column does not narrow them (its documented limits). */
static void default_range(struct dw_attr_meta *a)
{
    if (dw_attr_type_range(a->type, &a->min_value, &a->max_value, &a->precision))
        return;
    switch (a->type) {
    case DW_ATTR_MEMO:
        a->max_length = 1048576;
        break;
    case DW_ATTR_STRING:
        a->max_length = 4000;
        break;
    default:
        break;
    }
}

const struct dw_attr_meta *dw_entity_meta_attr(const struct dw_entity_meta *m, const char *name)
{
    for (size_t i = 0; i < m->nattrs; i++)
        if (strcasecmp(m->attrs[i].logical_name, name) == 0)
            return &m->attrs[i];
    return NULL;
}

static struct dw_attr_meta *attr_mut(struct dw_entity_meta *m, const char *name)
{
    return name ? (struct dw_attr_meta *)dw_entity_meta_attr(m, name) : NULL;
}

static char **strings_of(json_t *arr, size_t *n)
{
    size_t count = json_array_size(arr), k = 0, i;
    char **out = count ? dw_calloc(count, sizeof *out) : NULL;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v)) out[k++] = dw_strdup(json_string_value(v));
    *n = k;
    return out;
}

static dw_rc get(struct dw_sink *sink, const char *prefix, const char *suffix, json_t **out)
{
    char *path = dw_asprintf("%s%s", prefix, suffix);
    dw_rc rc = dw_sink_get_json(sink, path, out);
    free(path);
    return rc;
}

/*
 * GETs a table's definition, EntityDefinitions(LogicalName='<name>')?$select=<select>, into
 * *doc (a new reference), which must name the table's entity set and primary id. url gets
 * the definition's address (the literal percent-encoded), the prefix of the attribute
 * queries that follow; lit the literal itself ('<name>'), for a $filter.
 */
static dw_rc get_definition(struct dw_sink *sink, const char *logical_name, const char *select,
                            struct dw_buf *url, struct dw_buf *lit, json_t **doc)
{
    json_t *name_json = json_string(logical_name);
    dw_rc rc = DW_OK;
    if (name_json == NULL || dw_dvkey_literal(lit, name_json, false) != DW_OK) {
        DW_ERROR("table name \"%s\" is not valid UTF-8", logical_name);
        rc = DW_ERR_INVALID;
        goto out;
    }
    (void)dw_buf_puts(url, "EntityDefinitions(LogicalName=");
    (void)dw_dvkey_encode(url, lit->data, lit->len);
    (void)dw_buf_putc(url, ')');
    char *query = dw_asprintf("?$select=%s", select);
    rc = get(sink, dw_buf_str(url), query, doc);
    free(query);
    if (rc != DW_OK)
        goto out;
    if (!json_is_string(json_object_get(*doc, "EntitySetName")) ||
        !json_is_string(json_object_get(*doc, "PrimaryIdAttribute"))) {
        DW_ERROR("metadata of table \"%s\" lacks EntitySetName or PrimaryIdAttribute",
                 logical_name);
        json_decref(*doc);
        *doc = NULL;
        rc = DW_ERR_PROTOCOL;
    }
out:
    json_decref(name_json);
    return rc;
}

static void add_options(struct dw_attr_meta *a, json_t *optionset)
{
    json_t *opts = json_object_get(optionset, "Options"), *o;
    size_t i;
    if (!json_is_array(opts))
        return;
    a->options = dw_realloc(a->options, (a->noptions + json_array_size(opts) + 1) * sizeof(int));
    json_array_foreach(opts, i, o)
    {
        json_t *v = json_object_get(o, "Value");
        if (json_is_integer(v))
            a->options[a->noptions++] = (int)json_integer_value(v);
    }
}

/* The typed casts of AttributeMetadata read after the base list, with what each adds. */
static const struct {
    const char *cast;
    const char *select;
} casts[] = {
    {"StringAttributeMetadata", "MaxLength"},
    {"MemoAttributeMetadata", "MaxLength"},
    {"IntegerAttributeMetadata", "MinValue,MaxValue"},
    {"BigIntAttributeMetadata", "MinValue,MaxValue"},
    {"DecimalAttributeMetadata", "MinValue,MaxValue,Precision"},
    {"MoneyAttributeMetadata", "MinValue,MaxValue,Precision"},
    {"DoubleAttributeMetadata", "MinValue,MaxValue,Precision"},
    {"LookupAttributeMetadata", "Targets"},
};

/* Copies the typed properties of one cast's answer into the attribute (NULL: not listed). */
static void apply_cast(struct dw_attr_meta *a, json_t *v)
{
    if (a == NULL)
        return;
    json_t *x;
    if (json_is_integer(x = json_object_get(v, "MaxLength")))
        a->max_length = (int)json_integer_value(x);
    if (json_is_number(x = json_object_get(v, "MinValue")))
        a->min_value = json_number_value(x);
    if (json_is_number(x = json_object_get(v, "MaxValue")))
        a->max_value = json_number_value(x);
    if (json_is_integer(x = json_object_get(v, "Precision")))
        a->precision = (int)json_integer_value(x);
    if (json_is_array(x = json_object_get(v, "Targets"))) {
        for (size_t j = 0; j < a->ntargets; j++)
            free(a->targets[j]);
        free(a->targets);
        a->targets = strings_of(x, &a->ntargets);
    }
}

dw_rc dw_dvmeta_fetch(struct dw_sink *sink, const char *logical_name, struct dw_entity_meta **out)
{
    struct dw_entity_meta *m = dw_calloc(1, sizeof *m);
    json_t *doc = NULL;
    dw_rc rc;
    struct dw_buf url, lit;
    dw_buf_init(&url, 0);
    dw_buf_init(&lit, 0);
    if ((rc = get_definition(sink, logical_name, "LogicalName,EntitySetName,PrimaryIdAttribute",
                             &url, &lit, &doc)) != DW_OK)
        goto out;
    const char *p = dw_buf_str(&url);
    const char *set = json_string_value(json_object_get(doc, "EntitySetName"));
    const char *pk = json_string_value(json_object_get(doc, "PrimaryIdAttribute"));
    const char *lname = json_string_value(json_object_get(doc, "LogicalName"));
    m->logical_name = dw_strdup(lname ? lname : logical_name);
    m->entity_set = dw_strdup(set);
    m->primary_id = dw_strdup(pk);
    json_decref(doc);
    doc = NULL;

    if ((rc = get(sink, p, "/Attributes?$select=LogicalName,AttributeType,RequiredLevel", &doc)) !=
        DW_OK)
        goto out;
    json_t *values = json_object_get(doc, "value"), *v;
    size_t i;
    m->attrs = dw_calloc(json_array_size(values) + 1, sizeof *m->attrs);
    json_array_foreach(values, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "LogicalName"));
        if (name == NULL)
            continue;
        struct dw_attr_meta *a = &m->attrs[m->nattrs++];
        a->logical_name = dw_strdup(name);
        a->type = dw_attr_type_parse(json_string_value(json_object_get(v, "AttributeType")));
        const char *req =
            json_string_value(json_object_get(json_object_get(v, "RequiredLevel"), "Value"));
        a->required =
            req && (strcmp(req, "ApplicationRequired") == 0 || strcmp(req, "SystemRequired") == 0);
        default_range(a);
        a->targets = strings_of(json_object_get(v, "Targets"), &a->ntargets);
    }
    json_decref(doc);
    doc = NULL;

    for (size_t c = 0; c < sizeof casts / sizeof *casts; c++) {
        char *suffix = dw_asprintf("/Attributes/Microsoft.Dynamics.CRM.%s?$select=LogicalName,%s",
                                   casts[c].cast, casts[c].select);
        rc = get(sink, p, suffix, &doc);
        free(suffix);
        if (rc != DW_OK)
            goto out;
        json_array_foreach(json_object_get(doc, "value"), i, v)
            apply_cast(attr_mut(m, json_string_value(json_object_get(v, "LogicalName"))), v);
        json_decref(doc);
        doc = NULL;
    }

    if ((rc = get(sink, p,
                  "/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
                  "?$select=LogicalName&$expand=OptionSet,GlobalOptionSet",
                  &doc)) != DW_OK)
        goto out;
    json_array_foreach(json_object_get(doc, "value"), i, v)
    {
        struct dw_attr_meta *a = attr_mut(m, json_string_value(json_object_get(v, "LogicalName")));
        if (a == NULL)
            continue;
        add_options(a, json_object_get(v, "OptionSet"));
        if (a->noptions == 0)
            add_options(a, json_object_get(v, "GlobalOptionSet"));
    }
    json_decref(doc);
    doc = NULL;

    if ((rc = get(sink, p, "/Keys?$select=LogicalName,KeyAttributes,EntityKeyIndexStatus", &doc)) !=
        DW_OK)
        goto out;
    values = json_object_get(doc, "value");
    m->keys = dw_calloc(json_array_size(values) + 1, sizeof *m->keys);
    json_array_foreach(values, i, v)
    {
        struct dw_key_meta *k = &m->keys[m->nkeys++];
        const char *kn = json_string_value(json_object_get(v, "LogicalName"));
        const char *status = json_string_value(json_object_get(v, "EntityKeyIndexStatus"));
        k->logical_name = dw_strdup(kn ? kn : "");
        k->attributes = strings_of(json_object_get(v, "KeyAttributes"), &k->nattributes);
        k->active = status && strcmp(status, "Active") == 0;
    }
out:
    json_decref(doc);
    dw_buf_cleanup(&lit);
    dw_buf_cleanup(&url);
    if (rc != DW_OK) {
        dw_entity_meta_free(m);
        return rc;
    }
    *out = m;
    return DW_OK;
}

/* --- export as a dvemu metadata file ----------------------------------------------------- */

/* Attributes dvemu adds to every table itself, so an export leaves them out. */
static bool implicit_attr(const char *name, const char *primary_id)
{
    return strcmp(name, primary_id) == 0 || strcmp(name, "createdon") == 0 ||
           strcmp(name, "modifiedon") == 0 || strcmp(name, "versionnumber") == 0;
}

/* The attribute types dvemu emulates (its metadata file's "type"); others are left out. */
static bool exported_type(const char *type)
{
    static const char *const types[] = {"String",   "Memo",     "Integer", "BigInt",
                                        "Decimal",  "Money",    "Double",  "Boolean",
                                        "DateTime", "Picklist", "Lookup",  "Customer"};
    for (size_t i = 0; type && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(type, types[i]) == 0)
            return true;
    return false;
}

/* Copies what one typed cast says of each listed attribute into the export's attribute
 * objects (attrs: logical name -> object). */
static void export_cast(json_t *attrs, json_t *doc)
{
    size_t i;
    json_t *v, *x;
    json_array_foreach(json_object_get(doc, "value"), i, v)
    {
        json_t *a = json_object_get(attrs, json_string_value(json_object_get(v, "LogicalName")));
        if (a == NULL)
            continue;
        if (json_is_integer(x = json_object_get(v, "MaxLength")))
            json_object_set(a, "max_length", x);
        if (json_is_number(x = json_object_get(v, "MinValue")))
            json_object_set(a, "min", x);
        if (json_is_number(x = json_object_get(v, "MaxValue")))
            json_object_set(a, "max", x);
        if (json_is_integer(x = json_object_get(v, "Precision")))
            json_object_set(a, "precision", x);
        if (json_is_string(x = json_object_get(v, "Format")))
            json_object_set(a, "format", x);
        if (json_is_array(x = json_object_get(v, "Targets")))
            json_object_set(a, "targets", x);
        json_t *os = json_object_get(v, "OptionSet");
        if (!json_is_array(json_object_get(os, "Options")))
            os = json_object_get(v, "GlobalOptionSet");
        if (json_is_array(json_object_get(os, "Options"))) {
            json_t *opts = json_array(), *o;
            size_t k;
            json_array_foreach(json_object_get(os, "Options"), k, o)
            {
                json_t *label = json_object_get(
                    json_object_get(json_object_get(o, "Label"), "UserLocalizedLabel"), "Label");
                json_array_append_new(
                    opts, json_pack("{s:O, s:s}", "value", json_object_get(o, "Value"), "label",
                                    json_is_string(label) ? json_string_value(label) : ""));
            }
            json_object_set_new(a, "options", opts);
        }
    }
}

/* One table of the export; *out a new reference. */
static dw_rc export_table(struct dw_sink *sink, const char *logical_name, json_t **out)
{
    json_t *doc = NULL, *t = NULL, *attrs = json_object(), *order = json_array();
    struct dw_buf url, lit;
    dw_buf_init(&url, 0);
    dw_buf_init(&lit, 0);
    dw_rc rc = get_definition(sink, logical_name,
                              "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute",
                              &url, &lit, &doc);
    if (rc != DW_OK)
        goto out;
    const char *p = dw_buf_str(&url);
    const char *set = json_string_value(json_object_get(doc, "EntitySetName"));
    const char *pk = json_string_value(json_object_get(doc, "PrimaryIdAttribute"));
    const char *pn = json_string_value(json_object_get(doc, "PrimaryNameAttribute"));
    t = json_pack("{s:s, s:s, s:s, s:s}", "logical_name", logical_name, "entity_set", set,
                  "primary_id", pk, "primary_name", pn ? pn : "");
    char *primary_id = dw_strdup(pk);
    json_decref(doc);
    doc = NULL;

    rc = get(sink, p, "/Attributes?$select=LogicalName,AttributeType,RequiredLevel,AttributeOf",
             &doc);
    size_t i;
    json_t *v;
    json_array_foreach(rc == DW_OK ? json_object_get(doc, "value") : NULL, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "LogicalName"));
        const char *type = json_string_value(json_object_get(v, "AttributeType"));
        const char *req =
            json_string_value(json_object_get(json_object_get(v, "RequiredLevel"), "Value"));
        /* AttributeOf: a companion column (a lookup's name, a yomi name) Dataverse fills. */
        if (name == NULL || !exported_type(type) || implicit_attr(name, primary_id) ||
            json_is_string(json_object_get(v, "AttributeOf")))
            continue;
        json_t *a = json_pack("{s:s, s:s, s:s}", "name", name, "type", type, "required",
                              req ? req : "None");
        json_object_set_new(attrs, name, a);
        json_array_append(order, a);
    }
    free(primary_id);
    json_decref(doc);
    doc = NULL;
    if (rc != DW_OK)
        goto out;
    for (size_t c = 0; c <= sizeof casts / sizeof *casts + 1; c++) {
        char *suffix =
            c < sizeof casts / sizeof *casts
                ? dw_asprintf("/Attributes/Microsoft.Dynamics.CRM.%s?$select=LogicalName,%s",
                              casts[c].cast, casts[c].select)
            : c == sizeof casts / sizeof *casts
                ? dw_strdup("/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"
                            "?$select=LogicalName,Format")
                : dw_strdup("/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
                            "?$select=LogicalName&$expand=OptionSet,GlobalOptionSet");
        rc = get(sink, p, suffix, &doc);
        free(suffix);
        if (rc != DW_OK)
            goto out;
        export_cast(attrs, doc);
        json_decref(doc);
        doc = NULL;
    }
    /* Navigation properties: written where they differ from dvemu's default names. */
    if ((rc = get(sink, p,
                  "/ManyToOneRelationships?$select=ReferencingAttribute,ReferencedEntity,"
                  "ReferencingEntityNavigationPropertyName,ReferencedEntityNavigationPropertyName,"
                  "CascadeConfiguration",
                  &doc)) != DW_OK)
        goto out;
    json_array_foreach(json_object_get(doc, "value"), i, v)
    {
        json_t *a =
            json_object_get(attrs, json_string_value(json_object_get(v, "ReferencingAttribute")));
        const char *target = json_string_value(json_object_get(v, "ReferencedEntity"));
        const char *nav =
            json_string_value(json_object_get(v, "ReferencingEntityNavigationPropertyName"));
        const char *an = json_string_value(json_object_get(a, "name"));
        if (a == NULL || target == NULL || nav == NULL)
            continue;
        size_t ntargets = json_array_size(json_object_get(a, "targets"));
        char *def = ntargets > 1 ? dw_asprintf("%s_%s", an, target) : dw_strdup(an);
        if (strcmp(def, nav) != 0) {
            if (!json_is_object(json_object_get(a, "navigation")))
                json_object_set_new(a, "navigation", json_object());
            json_object_set_new(json_object_get(a, "navigation"), target, json_string(nav));
        }
        free(def);
        /* The collection-valued property on the target's side of the relationship. */
        const char *rnav =
            json_string_value(json_object_get(v, "ReferencedEntityNavigationPropertyName"));
        char *rdef = dw_asprintf("%s_%s_%s", logical_name, an, target);
        if (rnav && strcmp(rdef, rnav) != 0) {
            if (!json_is_object(json_object_get(a, "referenced_navigation")))
                json_object_set_new(a, "referenced_navigation", json_object());
            json_object_set_new(json_object_get(a, "referenced_navigation"), target,
                                json_string(rnav));
        }
        free(rdef);
        /* What deleting the target row does here, where it is not dvemu's default. */
        const char *cascade = json_string_value(
            json_object_get(json_object_get(v, "CascadeConfiguration"), "Delete"));
        if (cascade && strcmp(cascade, "RemoveLink") != 0) {
            if (ntargets == 1) {
                json_object_set_new(a, "cascade_delete", json_string(cascade));
            } else {
                if (!json_is_object(json_object_get(a, "cascade_delete")))
                    json_object_set_new(a, "cascade_delete", json_object());
                json_object_set_new(json_object_get(a, "cascade_delete"), target,
                                    json_string(cascade));
            }
        }
    }
    json_decref(doc);
    doc = NULL;
    json_object_set(t, "attributes", order);

    if ((rc = get(sink, p, "/Keys?$select=LogicalName,KeyAttributes", &doc)) != DW_OK)
        goto out;
    json_t *keys = json_array();
    json_array_foreach(json_object_get(doc, "value"), i, v) json_array_append_new(
        keys, json_pack("{s:O, s:O}", "name", json_object_get(v, "LogicalName"), "attributes",
                        json_object_get(v, "KeyAttributes")));
    json_object_set_new(t, "keys", keys);
    json_decref(doc);
    doc = NULL;

    /* The bulk messages the table supports, asked as the sink asks for UpsertMultiple. */
    static const char *const bulk[] = {"CreateMultiple", "UpdateMultiple", "UpsertMultiple"};
    json_t *msgs = json_array();
    json_object_set_new(t, "bulk_messages", msgs);
    for (size_t b = 0; b < sizeof bulk / sizeof bulk[0]; b++) {
        struct dw_buf q;
        dw_buf_init(&q, 0);
        (void)dw_buf_printf(&q, "sdkmessageid/name eq '%s' and primaryobjecttypecode eq ", bulk[b]);
        (void)dw_buf_append(&q, lit.data, lit.len);
        struct dw_buf path;
        dw_buf_init(&path, 0);
        (void)dw_buf_puts(&path, "sdkmessagefilters?$select=sdkmessagefilterid&$filter=");
        (void)dw_dvkey_encode(&path, q.data, q.len);
        rc = dw_sink_get_json(sink, dw_buf_str(&path), &doc);
        dw_buf_cleanup(&q);
        dw_buf_cleanup(&path);
        if (rc != DW_OK)
            goto out;
        if (json_array_size(json_object_get(doc, "value")) > 0)
            json_array_append_new(msgs, json_string(bulk[b]));
        json_decref(doc);
        doc = NULL;
    }
out:
    json_decref(doc);
    json_decref(attrs);
    json_decref(order);
    dw_buf_cleanup(&lit);
    dw_buf_cleanup(&url);
    if (rc != DW_OK) {
        json_decref(t);
        return rc;
    }
    *out = t;
    return DW_OK;
}

dw_rc dw_dvmeta_export(struct dw_sink *sink, char *const *tables, size_t ntables, json_t **out)
{
    json_t *arr = json_array();
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < ntables && rc == DW_OK; i++) {
        json_t *t = NULL;
        if ((rc = export_table(sink, tables[i], &t)) == DW_OK)
            json_array_append_new(arr, t);
    }
    if (rc != DW_OK) {
        json_decref(arr);
        return rc;
    }
    *out = json_pack("{s:o}", "tables", arr);
    return DW_OK;
}

void dw_entity_meta_free(struct dw_entity_meta *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nattrs; i++) {
        free(m->attrs[i].logical_name);
        free(m->attrs[i].options);
        for (size_t j = 0; j < m->attrs[i].ntargets; j++)
            free(m->attrs[i].targets[j]);
        free(m->attrs[i].targets);
    }
    for (size_t i = 0; i < m->nkeys; i++) {
        free(m->keys[i].logical_name);
        for (size_t j = 0; j < m->keys[i].nattributes; j++)
            free(m->keys[i].attributes[j]);
        free(m->keys[i].attributes);
    }
    free(m->attrs);
    free(m->keys);
    free(m->logical_name);
    free(m->entity_set);
    free(m->primary_id);
    free(m);
}

/* Unit tests: map files (errors with JSON paths, normal form), the mapping engine, filters. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/scaffold.h"

/* A job with the shapes that matter: company-striped keys, value maps, lookups (one nested
 * through the parent's company), constants, two filtered maps of one table, a child keyed
 * through its parent. Source names are upper-case; rows come lower-case. */
static const char *const job_text =
    "{\"format\": 1, \"job\": {\"name\": \"t\", \"legal_entities\": [\"usmf\", \"demf\"]},"
    " \"groups\": [{\"name\": \"g\", \"maps\": ["
    "  {\"name\": \"persons\", \"sequence\": 55, \"source\": {\"schema\": \"fno\", \"table\": "
    "\"cust\"},"
    "   \"target\": {\"entity_set\": \"contacts\", \"logical_name\": \"contact\"},"
    "   \"key\": [{\"target\": \"msdyn_contactpersonid\", \"source\": \"ACCOUNT\"},"
    "             {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}],"
    "   \"columns\": [{\"target\": \"lastname\", \"source\": \"NAME\", \"type\": \"string\"}],"
    "   \"filter\": {\"column\": \"PARTYTYPE\", \"op\": \"=\", \"value\": \"Person\"}},"
    "  {\"name\": \"orgs\", \"sequence\": 50, \"source\": {\"schema\": \"fno\", \"table\": "
    "\"cust\"},"
    "   \"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"},"
    "   \"key\": [{\"target\": \"accountnumber\", \"source\": \"ACCOUNT\", \"type\": \"string\"},"
    "             {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}],"
    "   \"columns\": ["
    "    {\"target\": \"name\", \"direction\": \"=\", \"source\": \"NAME\", \"type\": \"string\"},"
    "    {\"target\": \"creditlimit\", \"source\": \"CREDITLIMIT\", \"type\": \"money\"},"
    "    {\"target\": \"msdyn_creditlimitismandatory\", \"direction\": \"><\", \"source\": "
    "\"MANDATORY\","
    "     \"type\": \"boolean\", \"value_map\": {\"0\": false, \"1\": true}},"
    "    {\"target\": \"msdyn_onholdstatus\", \"direction\": \"><\", \"source\": \"ONHOLD\","
    "     \"type\": \"picklist\", \"value_map\": {\"0\": 806380000, \"2\": 806380002}},"
    "    {\"target\": \"customertypecode\", \"direction\": \">>\", \"constant\": 3, \"type\": "
    "\"picklist\"},"
    "    {\"target\": \"msdyn_customergroupid\", \"lookup\": {\"entity_set\": "
    "\"msdyn_customergroups\","
    "     \"logical_name\": \"msdyn_customergroup\", \"key\": [{\"target\": \"msdyn_groupid\", "
    "\"source\": \"GROUPID\"},"
    "     {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}]}},"
    "    {\"target\": \"msdyn_billingaccount\", \"lookup\": {\"entity_set\": \"accounts\","
    "     \"logical_name\": \"account\", \"key\": [{\"target\": \"accountnumber\", \"source\": "
    "\"INVOICEACCOUNT\"},"
    "     {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}]}},"
    "    {\"target\": \"description\", \"source\": \"NOTES\", \"null\": \"omit\"},"
    "    {\"target\": \"msdyn_fo_only\", \"direction\": \"<\", \"source\": \"NAME\"}],"
    "   \"filter\": {\"column\": \"PARTYTYPE\", \"op\": \"=\", \"value\": \"Organization\"}},"
    "  {\"name\": \"lines\", \"sequence\": 80, \"source\": {\"schema\": \"fno\", \"table\": "
    "\"lines\"},"
    "   \"target\": {\"entity_set\": \"salesorderdetails\", \"logical_name\": "
    "\"salesorderdetail\"},"
    "   \"key\": [{\"target\": \"salesorderid\", \"lookup\": {\"entity_set\": \"salesorders\","
    "     \"logical_name\": \"salesorder\", \"key\": [{\"target\": \"msdyn_salesordernumber\", "
    "\"source\": \"SALESID\"},"
    "     {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}]}},"
    "     {\"target\": \"sequencenumber\", \"source\": \"LINENUM\", \"type\": \"integer\"}],"
    "   \"columns\": [{\"target\": \"quantity\", \"source\": \"QTY\", \"type\": \"decimal\"},"
    "     {\"target\": \"ispriceoverridden\", \"direction\": \">>\", \"constant\": true, "
    "\"type\": \"boolean\"}]}"
    "]}]}";

static struct dw_jobdef *parse_text(const char *text, struct dw_buf *errors, dw_rc *rc)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_msg(doc != NULL, "bad test JSON: %s (line %d col %d)", jerr.text, jerr.line,
                  jerr.column);
    struct dw_jobdef *def = NULL;
    *rc = dw_jobdef_parse(doc, errors, &def);
    json_decref(doc);
    return def;
}

/* The compiled maps of a job's map file text, which must be valid. */
static struct dw_job_maps *maps_from_text(const char *text)
{
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(text, &errors, &rc);
    ck_assert_msg(rc == DW_OK, "errors: %s", dw_buf_str(&errors));
    dw_buf_cleanup(&errors);
    struct dw_job_maps *maps = NULL;
    ck_assert_int_eq(dw_job_maps_from_def(def, &maps), DW_OK);
    return maps;
}

static struct dw_job_maps *load_maps(void)
{
    return maps_from_text(job_text);
}

static json_t *J(const char *text)
{
    json_t *v = json_loads(text, 0, NULL);
    ck_assert_msg(v != NULL, "bad JSON in test: %s", text);
    return v;
}

/* Asserts a JSON value equals expected JSON text (compared canonically). */
static void assert_json(const json_t *got, const char *expected)
{
    json_t *e = J(expected);
    char *a = dw_json_canonical(got), *b = dw_json_canonical(e);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    json_decref(e);
}

static const char *const org_row =
    "{\"dataareaid\": \"usmf\", \"account\": \"C1\", \"partytype\": \"Organization\","
    " \"name\": \"Contoso\", \"creditlimit\": 1000.5, \"mandatory\": 1, \"onhold\": 2,"
    " \"groupid\": \"10\", \"invoiceaccount\": null, \"notes\": null}";

static void map_rows(struct dw_job_maps *maps, enum dw_change_op op, const char *table,
                     const char *new_row, const char *old_row, const char *unchanged,
                     struct dw_mapped_vec *out)
{
    json_t *n = new_row ? J(new_row) : NULL, *o = old_row ? J(old_row) : NULL,
           *u = unchanged ? J(unchanged) : NULL;
    struct dw_source_row row = {"fno", table, op, n, o, u};
    ck_assert_int_eq(dw_mapping_map_row(maps, &row, out), DW_OK);
    json_decref(n);
    json_decref(o);
    json_decref(u);
}

#define COMPANY(c) "{\"$ref\": \"cdm_companies\", \"key\": {\"cdm_companycode\": \"" c "\"}}"

/* A TRUNCATE gives one failed result per map of its table, each with its map and a target
 * no row has; a table no map reads gives none. */
START_TEST(truncate_fails_through_each_map_of_its_table)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    dw_mapping_truncate(maps, "fno", "cust", &v);
    ck_assert_uint_eq(v.len, 2);
    for (size_t i = 0; i < v.len; i++) {
        ck_assert(!v.items[i].ok);
        ck_assert_int_eq(v.items[i].error_class, DW_ERRCLASS_MAPPING);
        ck_assert_str_eq(v.items[i].error,
                         "TRUNCATE of \"fno.cust\" is not replicated: Dataverse rows of this table "
                         "were not deleted. Delete them in Dataverse, or skip this error if they "
                         "should stay.");
    }
    ck_assert_str_eq(v.items[0].map_name, "orgs"); /* (maps go by sequence) */
    ck_assert_str_eq(v.items[0].target_id, "accounts(TRUNCATE)");
    ck_assert_str_eq(v.items[1].map_name, "persons");
    ck_assert_str_eq(v.items[1].target_id, "contacts(TRUNCATE)");
    dw_mapped_vec_reset(&v);
    dw_mapping_truncate(maps, "fno", "unmapped", &v);
    ck_assert_uint_eq(v.len, 0);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

/* A write keeps its body as the text the sink sends, in the map's column order, with the
 * lookups bound by reference apart (write.h); put back together, it is the whole body. */
START_TEST(bodies_are_kept_as_text_with_references_apart)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    const struct dw_write *w = &v.items[0].write;
    ck_assert_str_eq(w->body->data, "\"name\":\"Contoso\",\"creditlimit\":1000.5,"
                                    "\"msdyn_creditlimitismandatory\":true,"
                                    "\"msdyn_onholdstatus\":806380002,\"customertypecode\":3,"
                                    "\"msdyn_billingaccount@odata.bind\":null");
    ck_assert_uint_eq(dw_refs_count(w->refs), 1);
    ck_assert(dw_write_is_bind_ref("msdyn_customergroupid@odata.bind",
                                   dw_refs_get(w->refs, "msdyn_customergroupid@odata.bind")));
    json_t *whole = dw_write_body(w);
    ck_assert_uint_eq(json_object_size(whole), 7);
    ck_assert(json_equal(json_object_get(whole, "msdyn_customergroupid@odata.bind"),
                         dw_refs_get(w->refs, "msdyn_customergroupid@odata.bind")));
    /* Set again from the whole object, it is the same body, the object left as it was. */
    struct dw_write again = {0};
    dw_write_set_body(&again, json_incref(whole));
    ck_assert_str_eq(again.body->data, w->body->data);
    ck_assert_uint_eq(dw_refs_count(again.refs), 1);
    ck_assert(json_equal(dw_refs_get(again.refs, "msdyn_customergroupid@odata.bind"),
                         dw_refs_get(w->refs, "msdyn_customergroupid@odata.bind")));
    ck_assert_uint_eq(json_object_size(whole), 7);
    json_decref(whole);
    /* Not an object: no body, which the sink refuses for an upsert. */
    dw_write_set_body(&again, json_string("x"));
    ck_assert_ptr_null(again.body);
    ck_assert_ptr_null(again.refs);
    dw_write_set_body(&again, json_object());
    ck_assert_str_eq(again.body->data, "");
    /* Any string survives the text and back, a NUL character included (a json column). */
    dw_write_set_body(&again, json_pack("{s:s%}", "description", "a\0b", (size_t)3));
    json_t *back = dw_write_body(&again);
    ck_assert_uint_eq(json_string_length(json_object_get(back, "description")), 3);
    json_decref(back);
    /* Two references, in body order, held by a write and the copy kept to send it again. */
    dw_write_set_body(&again, json_pack("{s:{s:s,s:{s:s}},s:n,s:i,s:{s:s,s:{s:i}}}", "b@odata.bind",
                                        "$ref", "accounts", "key", "k", "1", "c@odata.bind", "n", 2,
                                        "a@odata.bind", "$ref", "contacts", "key", "k", 3));
    ck_assert_str_eq(again.body->data, "\"c@odata.bind\":null,\"n\":2");
    ck_assert_uint_eq(dw_refs_count(again.refs), 2);
    ck_assert_str_eq(again.refs->items[0].name, "b@odata.bind");
    ck_assert_str_eq(again.refs->items[1].name, "a@odata.bind");
    ck_assert_ptr_eq(dw_refs_get(again.refs, "a@odata.bind"), again.refs->items[1].ref);
    ck_assert_ptr_null(dw_refs_get(again.refs, "c@odata.bind"));
    struct dw_refs *copy = dw_refs_hold(again.refs);
    ck_assert_uint_eq(copy->holders, 2);
    dw_write_cleanup(&again);
    ck_assert_uint_eq(copy->holders, 1);
    ck_assert_str_eq(json_string_value(json_object_get(copy->items[1].ref, "$ref")), "contacts");
    dw_refs_drop(copy);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(insert_maps_keys_value_maps_lookups_constants)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1); /* the person map's filter excludes the row */
    struct dw_mapped *m = &v.items[0];
    ck_assert(m->ok);
    ck_assert_str_eq(m->map_name, "orgs");
    ck_assert_str_eq(m->group_name, "g");
    ck_assert_int_eq(m->sequence, 50);
    ck_assert_int_eq(m->write.op, DW_WRITE_UPSERT);
    ck_assert_str_eq(m->write.entity_set, "accounts");
    ck_assert_str_eq(m->write.logical_name, "account");
    assert_json(m->write.key,
                "{\"accountnumber\": \"C1\", \"_msdyn_company_value\": " COMPANY("usmf") "}");
    assert_json(dw_check_body(&m->write),
                "{\"name\": \"Contoso\", \"creditlimit\": 1000.5,"
                " \"msdyn_creditlimitismandatory\": true, \"msdyn_onholdstatus\": 806380002,"
                " \"customertypecode\": 3,"
                " \"msdyn_customergroupid@odata.bind\": {\"$ref\": \"msdyn_customergroups\","
                "   \"key\": {\"msdyn_groupid\": \"10\", \"_msdyn_company_value\": " COMPANY(
                    "usmf") "}},"
                            " \"msdyn_billingaccount@odata.bind\": null}");
    char *key = dw_json_canonical(m->write.key);
    char *expect = dw_asprintf("accounts(%s)", key);
    ck_assert_str_eq(m->target_id, expect);
    free(key);
    free(expect);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(child_key_nests_parent_reference)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    map_rows(maps, DW_CHANGE_INSERT, "lines",
             "{\"DATAAREAID\": \"demf\", \"SalesId\": \"SO1\", \"linenum\": \"2\", \"qty\": 2.5}",
             NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(v.items[0].ok);
    assert_json(v.items[0].write.key,
                "{\"_salesorderid_value\": {\"$ref\": \"salesorders\", \"key\":"
                " {\"msdyn_salesordernumber\": \"SO1\", \"_msdyn_company_value\": " COMPANY(
                    "demf") "}}, \"sequencenumber\": 2}");
    assert_json(dw_check_body(&v.items[0].write),
                "{\"quantity\": 2.5, \"ispriceoverridden\": true}");
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

/* The parents rows name over and over (company, group) are built once and shared; every
 * row still gets exactly its own references, also while parents named once each (invoice
 * accounts) keep landing on the memo's slots. */
START_TEST(repeated_references_are_shared_and_stay_exact)
{
    static const char *const companies[] = {"usmf", "demf"}; /* the job's legal entities */
    static const char *const groups[] = {"10", "20", "30", "40"};
    enum { ROWS = 3000 };
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    for (int i = 0; i < ROWS; i++) {
        char *row = dw_asprintf("{\"dataareaid\": \"%s\", \"account\": \"C%d\", \"partytype\": "
                                "\"Organization\", \"name\": \"n\", \"creditlimit\": 1, "
                                "\"mandatory\": 0, \"onhold\": 0, \"groupid\": \"%s\", "
                                "\"invoiceaccount\": \"I%d\", \"notes\": null}",
                                companies[i % 2], i, groups[i % 4], i);
        map_rows(maps, DW_CHANGE_INSERT, "cust", row, NULL, NULL, &v);
        free(row);
    }
    ck_assert_uint_eq(v.len, ROWS);
    for (int i = 0; i < ROWS; i++) {
        const struct dw_mapped *m = &v.items[i];
        ck_assert(m->ok);
        char *key = dw_asprintf("{\"accountnumber\": \"C%d\", \"_msdyn_company_value\": {\"$ref\":"
                                " \"cdm_companies\", \"key\": {\"cdm_companycode\": \"%s\"}}}",
                                i, companies[i % 2]);
        assert_json(m->write.key, key);
        char *group =
            dw_asprintf("{\"$ref\": \"msdyn_customergroups\", \"key\": {\"msdyn_groupid\":"
                        " \"%s\", \"_msdyn_company_value\": {\"$ref\": \"cdm_companies\","
                        " \"key\": {\"cdm_companycode\": \"%s\"}}}}",
                        groups[i % 4], companies[i % 2]);
        assert_json(dw_refs_get(m->write.refs, "msdyn_customergroupid@odata.bind"), group);
        char *billing = dw_asprintf("{\"$ref\": \"accounts\", \"key\": {\"accountnumber\": \"I%d\","
                                    " \"_msdyn_company_value\": {\"$ref\": \"cdm_companies\","
                                    " \"key\": {\"cdm_companycode\": \"%s\"}}}}",
                                    i, companies[i % 2]);
        assert_json(dw_refs_get(m->write.refs, "msdyn_billingaccount@odata.bind"), billing);
        free(key);
        free(group);
        free(billing);
    }
    /* The 3000 rows name 8 groups and 2 companies: they share a few objects between them
     * (a parent named once may push one out of the memo now and then), not 3000 copies. */
    size_t groups_seen = 0, companies_seen = 0;
    for (int i = 0; i < ROWS; i++) {
        const json_t *g = dw_refs_get(v.items[i].write.refs, "msdyn_customergroupid@odata.bind");
        const json_t *c = json_object_get(v.items[i].write.key, "_msdyn_company_value");
        bool g_seen = false, c_seen = false;
        for (int k = 0; k < i && !(g_seen && c_seen); k++) {
            g_seen |= dw_refs_get(v.items[k].write.refs, "msdyn_customergroupid@odata.bind") == g;
            c_seen |= json_object_get(v.items[k].write.key, "_msdyn_company_value") == c;
        }
        groups_seen += !g_seen;
        companies_seen += !c_seen;
    }
    ck_assert_msg(groups_seen < ROWS / 10, "%zu distinct group references", groups_seen);
    ck_assert_msg(companies_seen < ROWS / 10, "%zu distinct company references", companies_seen);
    const struct dw_refs *a = v.items[0].write.refs, *b = v.items[4].write.refs;
    ck_assert_ptr_ne(dw_refs_get(a, "msdyn_billingaccount@odata.bind"),
                     dw_refs_get(b, "msdyn_billingaccount@odata.bind"));
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

/* Two rows whose parent keys differ only in where a separator-like byte falls get two
 * references, not one remembered for both. */
START_TEST(remembered_references_tell_apart_values_with_any_bytes)
{
    static const char *const text =
        "{\"format\": 1, \"job\": {\"name\": \"t\"}, \"groups\": [{\"name\": \"g\", \"maps\": ["
        " {\"name\": \"parts\", \"sequence\": 10, \"source\": {\"schema\": \"fno\", \"table\": "
        "\"p\"},"
        "  \"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"},"
        "  \"key\": [{\"target\": \"accountnumber\", \"source\": \"ID\"}],"
        "  \"columns\": [{\"target\": \"parent\", \"lookup\": {\"entity_set\": \"accounts\","
        "   \"logical_name\": \"account\", \"key\": [{\"target\": \"a\", \"source\": \"A\"},"
        "   {\"target\": \"b\", \"source\": \"B\"}]}}]}]}]}";
    struct dw_job_maps *maps = maps_from_text(text);
    struct dw_mapped_vec v = {0};
    map_rows(maps, DW_CHANGE_INSERT, "p", "{\"id\": \"1\", \"a\": \"x\\u001fs\", \"b\": \"y\"}",
             NULL, NULL, &v);
    map_rows(maps, DW_CHANGE_INSERT, "p", "{\"id\": \"2\", \"a\": \"x\", \"b\": \"s\\u001fy\"}",
             NULL, NULL, &v);
    map_rows(maps, DW_CHANGE_INSERT, "p", "{\"id\": \"3\", \"a\": \"x\", \"b\": 7}", NULL, NULL,
             &v);
    map_rows(maps, DW_CHANGE_INSERT, "p", "{\"id\": \"4\", \"a\": \"x\", \"b\": \"7\"}", NULL, NULL,
             &v);
    ck_assert_uint_eq(v.len, 4);
    assert_json(dw_refs_get(v.items[0].write.refs, "parent@odata.bind"),
                "{\"$ref\": \"accounts\", \"key\": {\"a\": \"x\\u001fs\", \"b\": \"y\"}}");
    assert_json(dw_refs_get(v.items[1].write.refs, "parent@odata.bind"),
                "{\"$ref\": \"accounts\", \"key\": {\"a\": \"x\", \"b\": \"s\\u001fy\"}}");
    assert_json(dw_refs_get(v.items[2].write.refs, "parent@odata.bind"),
                "{\"$ref\": \"accounts\", \"key\": {\"a\": \"x\", \"b\": 7}}");
    assert_json(dw_refs_get(v.items[3].write.refs, "parent@odata.bind"),
                "{\"$ref\": \"accounts\", \"key\": {\"a\": \"x\", \"b\": \"7\"}}");
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(unmapped_value_is_a_mapping_error_naming_column_and_value)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_set_new(row, "onhold", json_integer(7));
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(!v.items[0].ok);
    ck_assert_int_eq(v.items[0].error_class, DW_ERRCLASS_MAPPING);
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "\"ONHOLD\""));
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "value 7"));
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "msdyn_onholdstatus"));
    ck_assert_ptr_nonnull(v.items[0].target_id);
    ck_assert_ptr_null(v.items[0].write.body);
    /* A key column that is null cannot name the row. */
    dw_mapped_vec_reset(&v);
    json_object_set_new(row, "onhold", json_integer(0));
    json_object_set_new(row, "account", json_null());
    free(text);
    text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(!v.items[0].ok);
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "key column \"ACCOUNT\" is null"));
    ck_assert_str_eq(v.items[0].target_id, "accounts(?)");
    /* A mapped column missing from the row (schema drift) is an error too. */
    dw_mapped_vec_reset(&v);
    json_object_set_new(row, "account", json_string("C1"));
    json_object_del(row, "creditlimit");
    free(text);
    text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert(!v.items[0].ok);
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "\"CREDITLIMIT\" (for \"creditlimit\") is not"));
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(string_over_known_max_length_is_a_mapping_error)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    /* Unknown lengths: anything goes (Dataverse decides). */
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert(v.items[0].ok);
    /* "Contoso" is 7 characters: a MaxLength of 7 fits, 6 does not; UTF-8 counts characters. */
    dw_job_maps_set_max_length(maps, "account", "name", 7);
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert(v.items[0].ok);
    dw_mapped_vec_reset(&v);
    json_t *row = J(org_row);
    json_object_set_new(row, "name", json_string("Z\xc3\xbcrich"));
    char *text = dw_json_dumps(row);
    dw_job_maps_set_max_length(maps, "account", "name", 6);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert(v.items[0].ok);
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(!v.items[0].ok);
    ck_assert_int_eq(v.items[0].error_class, DW_ERRCLASS_MAPPING);
    ck_assert_str_eq(v.items[0].error, "map \"orgs\": column \"NAME\" value \"Contoso\" is longer "
                                       "than 6 characters, the MaxLength of \"name\" in Dataverse");
    ck_assert_ptr_null(v.items[0].write.body);
    ck_assert_str_eq(v.items[0].target_id,
                     "accounts({\"_msdyn_company_value\":{\"$ref\":\"cdm_companies\",\"key\":{"
                     "\"cdm_companycode\":\"usmf\"}},\"accountnumber\":\"C1\"})");
    /* The other table writing a column of that name is not affected; a key part is checked. */
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust",
             "{\"dataareaid\": \"usmf\", \"account\": \"P1\", \"partytype\": \"Person\","
             " \"name\": \"Contoso\"}",
             NULL, NULL, &v);
    ck_assert(v.items[0].ok);
    dw_job_maps_set_max_length(maps, "account", "name", 0);
    dw_job_maps_set_max_length(maps, "account", "accountnumber", 1);
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert(!v.items[0].ok);
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "column \"ACCOUNT\" value \"C1\" is longer "
                                                   "than 1 characters, the MaxLength of key "
                                                   "attribute \"accountnumber\""));
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(update_leaving_filter_deletes_and_enters_other_map)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_set_new(row, "partytype", json_string("Person"));
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, org_row, NULL, &v);
    ck_assert_uint_eq(v.len, 2);
    /* maps come in group order by sequence: orgs (50) then persons (55) */
    ck_assert_str_eq(v.items[0].map_name, "orgs");
    ck_assert_int_eq(v.items[0].write.op, DW_WRITE_DELETE);
    ck_assert_ptr_null(v.items[0].write.body);
    assert_json(v.items[0].write.key,
                "{\"accountnumber\": \"C1\", \"_msdyn_company_value\": " COMPANY("usmf") "}");
    ck_assert_str_eq(v.items[1].map_name, "persons");
    ck_assert_int_eq(v.items[1].write.op, DW_WRITE_UPSERT);
    assert_json(dw_check_body(&v.items[1].write), "{\"lastname\": \"Contoso\"}");
    /* An update that stays out of a map's filter does nothing there. */
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, text, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert_str_eq(v.items[0].map_name, "persons");
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(update_changing_key_deletes_old_row)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_set_new(row, "account", json_string("C2"));
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, org_row, NULL, &v);
    ck_assert_uint_eq(v.len, 2);
    ck_assert_int_eq(v.items[0].write.op, DW_WRITE_DELETE);
    ck_assert_ptr_nonnull(strstr(v.items[0].target_id, "\"C1\""));
    ck_assert_int_eq(v.items[1].write.op, DW_WRITE_UPSERT);
    ck_assert_ptr_nonnull(strstr(v.items[1].target_id, "\"C2\""));
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

/* An UPDATE whose old image (REPLICA IDENTITY FULL) maps to the same write changes nothing
 * mapped: flagged unchanged, so it is not sent. Anything less certain is sent. */
START_TEST(update_of_unmapped_columns_is_flagged_unchanged)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_set_new(row, "phone", json_string("+1 555 0100")); /* no map reads it */
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, org_row, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(v.items[0].ok && v.items[0].unchanged);
    /* A mapped column that changed is sent. */
    dw_mapped_vec_reset(&v);
    json_object_set_new(row, "creditlimit", json_real(2000.5));
    free(text);
    text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, org_row, NULL, &v);
    ck_assert(v.items[0].ok && !v.items[0].unchanged);
    /* Without an old image, or with the key columns only, the previous state is unknown. */
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", org_row, NULL, NULL, &v);
    ck_assert(v.items[0].ok && !v.items[0].unchanged);
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", org_row,
             "{\"dataareaid\": \"usmf\", \"account\": \"C1\"}", NULL, &v);
    ck_assert(v.items[0].ok && !v.items[0].unchanged);
    /* A column not sent (unchanged TOAST) is left out of both images. */
    dw_mapped_vec_reset(&v);
    json_decref(row);
    row = J(org_row);
    json_object_del(row, "name");
    free(text);
    text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, org_row, "[\"NAME\"]", &v);
    ck_assert(v.items[0].ok && v.items[0].unchanged);
    /* A replay is always sent: the change before it failed. */
    dw_mapped_vec_reset(&v);
    struct dw_jobdef *def = (struct dw_jobdef *)dw_job_maps_def(maps);
    for (size_t i = 0; i < def->groups[0].nmaps; i++)
        def->groups[0].maps[i].id = (int64_t)(100 + i); /* as dw_mapstore_load() would */
    json_t *n = J(org_row), *o = J(org_row);
    struct dw_source_row r = {"fno", "cust", DW_CHANGE_UPDATE, n, o, NULL};
    ck_assert_int_eq(dw_mapping_map_row_with(maps, 100, &r, &v), DW_OK);
    ck_assert(v.items[0].ok && !v.items[0].unchanged);
    json_decref(n);
    json_decref(o);
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(unchanged_toast_and_null_rules)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_del(row, "name"); /* not sent: unchanged TOAST */
    json_object_set_new(row, "notes", json_string("n"));
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, NULL, "[\"NAME\"]", &v);
    ck_assert_uint_eq(v.len, 1);
    ck_assert(v.items[0].ok);
    ck_assert_ptr_null(json_object_get(dw_check_body(&v.items[0].write), "name"));
    ck_assert_str_eq(
        json_string_value(json_object_get(dw_check_body(&v.items[0].write), "description")), "n");
    /* A filter column not sent at all cannot be evaluated: an error, not a guess. */
    dw_mapped_vec_reset(&v);
    json_object_del(row, "partytype");
    free(text);
    text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_UPDATE, "cust", text, NULL, "[\"partytype\"]", &v);
    ck_assert_uint_eq(v.len, 2);
    ck_assert(!v.items[0].ok && !v.items[1].ok);
    ck_assert_ptr_nonnull(strstr(v.items[0].error, "row filter cannot be evaluated"));
    /* An INSERT without a filter column (schema drift) is an error, not a silent skip. */
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 2);
    ck_assert(!v.items[0].ok);
    ck_assert_ptr_nonnull(strstr(v.items[1].error, "map \"persons\": the row filter"));
    /* null "omit": a null source leaves the attribute out; "send" (default) sends null */
    dw_mapped_vec_reset(&v);
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &v);
    ck_assert_ptr_null(json_object_get(dw_check_body(&v.items[0].write), "description"));
    ck_assert(json_is_null(
        json_object_get(dw_check_body(&v.items[0].write), "msdyn_billingaccount@odata.bind")));
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(legal_entity_filter_and_delete)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec v = {0};
    json_t *row = J(org_row);
    json_object_set_new(row, "dataareaid", json_string("jpmf"));
    char *text = dw_json_dumps(row);
    map_rows(maps, DW_CHANGE_INSERT, "cust", text, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 0);
    map_rows(maps, DW_CHANGE_DELETE, "cust", NULL, text, NULL, &v);
    ck_assert_uint_eq(v.len, 0);
    /* A delete with a key-only old image cannot evaluate the filter: delete in both maps
     * (deleting an absent row is a no-op by key). */
    map_rows(maps, DW_CHANGE_DELETE, "cust", NULL,
             "{\"dataareaid\": \"usmf\", \"account\": \"C1\"}", NULL, &v);
    ck_assert_uint_eq(v.len, 2);
    ck_assert_int_eq(v.items[0].write.op, DW_WRITE_DELETE);
    ck_assert_int_eq(v.items[1].write.op, DW_WRITE_DELETE);
    ck_assert_str_eq(v.items[1].write.entity_set, "contacts");
    ck_assert(dw_job_maps_reader(maps, "fno", "other") == NULL);
    const struct dw_tablemap *reader = dw_job_maps_reader(maps, "fno", "lines");
    ck_assert(reader != NULL);
    ck_assert_str_eq(reader->source_table, "lines");
    /* A broken change is refused as such. */
    struct dw_source_row bad = {"fno", "cust", DW_CHANGE_INSERT, NULL, NULL, NULL};
    ck_assert_int_eq(dw_mapping_map_row(maps, &bad, &v), DW_ERR_INVALID);
    free(text);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

/* One column of type t through the engine; returns the body value's canonical text or the
 * error. */
static char *coerce_one(const char *type, const char *value)
{
    char *text = dw_asprintf(
        "{\"format\": 1, \"job\": {\"name\": \"c\"}, \"groups\": [{\"name\": \"g\", \"maps\": "
        "[{\"name\": \"m\", \"sequence\": 1, \"source\": {\"schema\": \"fno\", \"table\": "
        "\"t\"}, \"target\": {\"entity_set\": \"es\", \"logical_name\": \"e\"}, \"key\": "
        "[{\"target\": \"k\", \"source\": \"k\"}], \"columns\": [{\"target\": \"a\", \"source\": "
        "\"v\", \"type\": "
        "\"%s\"}]}]}]}",
        type);
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(text, &errors, &rc);
    ck_assert_msg(rc == DW_OK, "%s", dw_buf_str(&errors));
    struct dw_job_maps *maps = NULL;
    dw_job_maps_from_def(def, &maps);
    char *row = dw_asprintf("{\"k\": 1, \"v\": %s}", value);
    struct dw_mapped_vec v = {0};
    map_rows(maps, DW_CHANGE_INSERT, "t", row, NULL, NULL, &v);
    ck_assert_uint_eq(v.len, 1);
    char *out = v.items[0].ok
                    ? dw_json_dumps(json_object_get(dw_check_body(&v.items[0].write), "a"))
                    : dw_strdup(v.items[0].error);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
    dw_buf_cleanup(&errors);
    free(row);
    free(text);
    return out;
}

START_TEST(coercions_to_dataverse_types)
{
    static const struct {
        const char *type, *in, *out;
    } cases[] = {
        {"integer", "\"12\"", "12"},
        {"integer", "12.0", "12"},
        {"integer", "true", "1"},
        {"integer", "\"abc\"", "is not an integer"},
        {"integer", "3000000000", "outside the 32-bit"},
        {"bigint", "3000000000", "3000000000"},
        {"picklist", "\"3\"", "3"},
        {"picklist", "\"Yes\"", "not an option value"},
        {"string", "42", "\"42\""},
        {"string", "1.5", "\"1.5\""},
        {"money", "\"1000.25\"", "1000.25"},
        {"money", "\"x\"", "is not a number"},
        {"decimal", "0.1", "0.1"},
        {"boolean", "1", "true"},
        {"boolean", "\"No\"", "false"},
        {"boolean", "2", "is not a boolean"},
        {"uniqueidentifier", "\"00000000-0000-0000-0000-00000000000a\"",
         "\"00000000-0000-0000-0000-00000000000a\""},
        {"uniqueidentifier", "\"nope\"", "is not a GUID"},
        {"datetime", "\"2026-11-22T10:00:00Z\"", "\"2026-11-22T10:00:00Z\""},
        {"string", "null", "null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = coerce_one(cases[i].type, cases[i].in);
        ck_assert_msg(strstr(got, cases[i].out) != NULL, "%s %s: got %s, want %s", cases[i].type,
                      cases[i].in, got, cases[i].out);
        free(got);
    }
}
END_TEST

START_TEST(replay_through_one_map_by_id)
{
    struct dw_job_maps *maps = load_maps();
    /* Ids come from the control schema; set them as dw_mapstore_load() would. */
    struct dw_jobdef *def = (struct dw_jobdef *)dw_job_maps_def(maps);
    for (size_t i = 0; i < def->groups[0].nmaps; i++)
        def->groups[0].maps[i].id = (int64_t)(100 + i);
    json_t *row = J(org_row);
    struct dw_source_row r = {"fno", "cust", DW_CHANGE_INSERT, row, NULL, NULL};
    struct dw_mapped_vec v = {0};
    ck_assert_int_eq(dw_mapping_map_row_with(maps, 100, &r, &v), DW_OK); /* orgs only */
    ck_assert_uint_eq(v.len, 1);
    ck_assert_int_eq(v.items[0].map_id, 100);
    ck_assert_str_eq(v.items[0].write.entity_set, "accounts");
    ck_assert_int_eq(dw_mapping_map_row_with(maps, 101, &r, &v), DW_OK); /* filtered out */
    ck_assert_uint_eq(v.len, 1);
    ck_assert_int_eq(dw_mapping_map_row_with(maps, 999, &r, &v), DW_ERR_NOT_FOUND);
    json_decref(row);
    dw_mapped_vec_cleanup(&v);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(target_id_is_canonical)
{
    struct dw_job_maps *maps = load_maps();
    struct dw_mapped_vec a = {0}, b = {0};
    map_rows(maps, DW_CHANGE_DELETE, "cust", NULL,
             "{\"dataareaid\": \"usmf\", \"account\": \"C1\", \"partytype\": \"Organization\"}",
             NULL, &a);
    map_rows(maps, DW_CHANGE_INSERT, "cust", org_row, NULL, NULL, &b);
    ck_assert_uint_eq(a.len, 1);
    ck_assert_str_eq(a.items[0].target_id, b.items[0].target_id);
    dw_mapped_vec_cleanup(&a);
    dw_mapped_vec_cleanup(&b);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(map_file_errors_carry_json_paths)
{
    const char *bad =
        "{\"format\": 2, \"job\": {\"name\": \"Bad-Name\", \"legal_entities\": [\"usmf\", "
        "\"usmf\"]}, \"extra\": 1,"
        " \"groups\": [{\"name\": \"g\", \"maps\": ["
        "  {\"name\": \"a\", \"sequence\": 1, \"source\": {\"table\": \"t\"},"
        "   \"target\": {\"entity_set\": \"es\", \"logical_name\": \"e\"},"
        "   \"key\": [{\"target\": \"k\", \"source\": \"k\", \"company\": \"d\"}],"
        "   \"columns\": [{\"target\": \"x\", \"source\": \"x\", \"direction\": \"->\"},"
        "     {\"target\": \"y\", \"constant\": 1, \"value_map\": {}},"
        "     {\"target\": \"z\", \"source\": \"z\", \"value_map\": {\"1\": [1]}, \"unmapped\": "
        "\"default\"},"
        "     {\"target\": \"w\", \"source\": \"w\", \"type\": \"text\", \"colour\": 1}],"
        "   \"filter\": {\"and\": [{\"column\": \"c\", \"op\": \"like\", \"value\": 1},"
        "     {\"column\": \"c\", \"op\": \"in\", \"value\": []}]}},"
        "  {\"name\": \"a\", \"sequence\": 1, \"source\": {\"table\": \"t\"},"
        "   \"target\": {\"entity_set\": \"es\"}}]}]}";
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(bad, &errors, &rc);
    ck_assert_int_eq(rc, DW_ERR_INVALID);
    ck_assert_ptr_null(def);
    const char *text = dw_buf_str(&errors);
    static const char *const expected[] = {
        "$: unknown member \"extra\"",
        "$.format: must be 1",
        "$.job.name: must start with a lower-case letter",
        "$.job.legal_entities[1]: \"usmf\" is listed twice",
        "$.groups[0].maps[0].key[0]: a key part has exactly one of",
        "$.groups[0].maps[0].columns[0].direction: must be one of",
        "$.groups[0].maps[0].columns[1].value_map: a value map needs a \"source\" column",
        "$.groups[0].maps[0].columns[1].value_map: must be a non-empty object",
        "$.groups[0].maps[0].columns[2].value_map.\"1\": must map to a string",
        "$.groups[0].maps[0].columns[2].unmapped: \"default\" needs a \"default\" value",
        "$.groups[0].maps[0].columns[3]: unknown member \"colour\"",
        "$.groups[0].maps[0].columns[3].type: unknown type",
        "$.groups[0].maps[0].filter.and[0]: \"op\" must be one of",
        "$.groups[0].maps[0].filter.and[1].value: \"in\" needs a non-empty array",
        "$.groups[0].maps[1]: \"key\" is required",
        "$.groups[0].maps[1].target: \"logical_name\" is required",
        "$.groups[0].maps[1]: sequence 1 is already used by maps[0]",
        "$.groups[0].maps[1].name: map name \"a\" is used twice",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        ck_assert_msg(strstr(text, expected[i]) != NULL, "missing [%s] in:\n%s", expected[i], text);
    dw_buf_cleanup(&errors);

    /* Syntax errors name file, line and column. */
    char path[] = "/tmp/dwmapXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"format\": 1,\n \"job\": {\"name\": \"a\", \"name\": \"b\"}}", f);
    fclose(f);
    dw_buf_init(&errors, 0);
    ck_assert_int_eq(dw_jobdef_load_file(path, &errors, &def), DW_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), ":2:"));
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "duplicate"));
    unlink(path);
    dw_buf_cleanup(&errors);

    /* Upper-case legal entities parse but draw a warning (dataAreaId is lower case). */
    dw_buf_init(&errors, 0);
    def = parse_text("{\"format\": 1, \"job\": {\"name\": \"u\", \"legal_entities\": "
                     "[\"USMF\", \"demf\"]}, \"groups\": [{\"name\": \"g\", \"maps\": "
                     "[{\"name\": \"m\", \"sequence\": 1, \"source\": {\"table\": \"t\"}, "
                     "\"target\": {\"entity_set\": \"es\", \"logical_name\": \"e\"}, "
                     "\"key\": [{\"target\": \"k\", \"company\": \"d\"}]}]}]}",
                     &errors, &rc);
    ck_assert_int_eq(rc, DW_OK);
    struct dw_findings found;
    dw_findings_init(&found);
    dw_mapvalidate(def, NULL, NULL, 0, &found);
    ck_assert_int_eq(found.errors, 0);
    ck_assert_int_eq(found.warnings, 1);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&found.text), "warning: $.job.legal_entities[0]"));
    dw_findings_cleanup(&found);
    dw_jobdef_free(def);
    dw_buf_cleanup(&errors);
}
END_TEST

/* Every Dataverse name of a map is an identifier: a CR/LF in an entity set, a slash in an
 * attribute or a quote in a navigation property would reach a URL or a $batch part. A map
 * file that is not a regular file, or is larger than 16 MiB, is refused before parsing. */
START_TEST(map_file_names_are_identifiers_and_files_are_bounded)
{
    static const char *const bad[] = {
        "\"target\": {\"entity_set\": \"accounts HTTP/1.1\\r\\nX-Evil: 1\", \"logical_name\": "
        "\"account\"}, \"key\": [{\"target\": \"k\", \"source\": \"k\"}]",
        "\"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"acc/ount\"}, \"key\": "
        "[{\"target\": \"k\", \"source\": \"k\"}]",
        "\"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"}, \"key\": "
        "[{\"target\": \"k'\", \"source\": \"k\"}]",
        "\"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"}, \"key\": "
        "[{\"target\": \"k\", \"source\": \"k\"}], \"columns\": [{\"target\": \"9name\", "
        "\"source\": \"n\"}]",
        "\"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"}, \"key\": "
        "[{\"target\": \"k\", \"source\": \"k\"}], \"columns\": [{\"target\": \"p\", "
        "\"navigation\": \"p\\nq\", \"lookup\": {\"entity_set\": \"accounts\", \"logical_name\": "
        "\"account\", \"key\": [{\"target\": \"k\", \"source\": \"p\"}]}}]",
        "\"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"}, \"key\": "
        "[{\"target\": \"k\", \"source\": \"k\"}], \"columns\": [{\"target\": \"p\", "
        "\"lookup\": {\"entity_set\": \"acc#ounts\", \"logical_name\": \"account\", \"key\": "
        "[{\"target\": \"k\", \"source\": \"p\"}]}}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *text = dw_asprintf("{\"format\": 1, \"job\": {\"name\": \"j\"}, \"groups\": "
                                 "[{\"name\": \"g\", \"maps\": [{\"name\": \"m\", \"sequence\": "
                                 "1, \"source\": {\"table\": \"t\"}, %s}]}]}",
                                 bad[i]);
        struct dw_buf errors;
        dw_buf_init(&errors, 0);
        dw_rc rc;
        struct dw_jobdef *def = parse_text(text, &errors, &rc);
        ck_assert_msg(rc == DW_ERR_INVALID, "accepted: %s", bad[i]);
        ck_assert_ptr_null(def);
        ck_assert_msg(strstr(dw_buf_str(&errors), "must be a Dataverse name") != NULL, "%s",
                      dw_buf_str(&errors));
        dw_buf_cleanup(&errors);
        free(text);
    }

    char dir[] = "/tmp/dwmapdirXXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *fifo = dw_asprintf("%s/fifo", dir), *big = dw_asprintf("%s/big.json", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    struct dw_buf errors;
    struct dw_jobdef *def = NULL;
    dw_buf_init(&errors, 0);
    ck_assert_int_eq(dw_jobdef_load_file(fifo, &errors, &def), DW_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "not a regular file"));
    dw_buf_reset(&errors);
    FILE *f = fopen(big, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"format\": 1, \"pad\": \"", f);
    for (int i = 0; i < 17 * 1024; i++)
        fprintf(f, "%01024d", 0);
    fputs("\"}", f);
    fclose(f);
    ck_assert_int_eq(dw_jobdef_load_file(big, &errors, &def), DW_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "larger than 16 MiB"));
    ck_assert_ptr_null(def);
    dw_buf_cleanup(&errors);
    unlink(fifo);
    unlink(big);
    rmdir(dir);
    free(fifo);
    free(big);
}
END_TEST

/* options.write: validated with JSON paths, kept through export, and carried on every write
 * of its map (upserts and deletes), never on another map's. */
START_TEST(write_options_are_validated_exported_and_carried)
{
#define WOPT_MAP(name, seq, table, write)                                                          \
    "{\"name\": \"" name "\", \"sequence\": " seq                                                  \
    ", \"source\": {\"schema\": \"fno\", \"table\": \"" table "\"}, "                              \
    "\"target\": {\"entity_set\": \"" name "s\", \"logical_name\": \"" name "\"}, "                \
    "\"key\": [{\"target\": \"k\", \"source\": \"k\"}], "                                          \
    "\"columns\": [{\"target\": \"v\", \"source\": \"v\"}], \"options\": {\"write\": " write "}}"
#define WOPT_JOB(maps)                                                                             \
    "{\"format\": 1, \"job\": {\"name\": \"w\"}, \"groups\": [{\"name\": \"g\", \"maps\": [" maps  \
    "]}]}"
    const char *good = WOPT_JOB(
        WOPT_MAP("fast", "1", "t",
                 "{\"bypass_logic\": [\"CustomSync\", \"CustomAsync\"], "
                 "\"suppress_duplicate_detection\": true, \"suppress_flows\": "
                 "true, \"tag\": \"dwasync-load_1.0\"}") ", " WOPT_MAP("plain", "2", "t", "{}"));
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(good, &errors, &rc);
    ck_assert_msg(rc == DW_OK, "%s", dw_buf_str(&errors));
    assert_json(dw_jobdef_find_map(def, "fast")->write_options,
                "{\"bypass_logic\": [\"CustomSync\", \"CustomAsync\"], "
                "\"suppress_duplicate_detection\": true, \"suppress_flows\": true, "
                "\"tag\": \"dwasync-load_1.0\"}");
    ck_assert_ptr_null(dw_jobdef_find_map(def, "plain")->write_options);
    char *one = dw_jobdef_dump(def);
    struct dw_jobdef *again = parse_text(one, &errors, &rc);
    ck_assert_int_eq(rc, DW_OK);
    char *two = dw_jobdef_dump(again);
    ck_assert_str_eq(one, two);
    ck_assert_ptr_nonnull(strstr(one, "\"suppress_flows\": true"));
    free(one);
    free(two);
    dw_jobdef_free(again);
    dw_jobdef_free(def);

    /* Both maps read table t: each write carries its own map's options. */
    struct dw_job_maps *maps = maps_from_text(good);
    for (int op = 0; op < 2; op++) {
        struct dw_mapped_vec v = {0};
        map_rows(maps, op ? DW_CHANGE_DELETE : DW_CHANGE_INSERT, "t",
                 op ? NULL : "{\"k\": 1, \"v\": 2}", op ? "{\"k\": 1, \"v\": 2}" : NULL, NULL, &v);
        ck_assert_int_eq(v.len, 2);
        for (size_t i = 0; i < v.len; i++) {
            const struct dw_mapped *m = &v.items[i];
            ck_assert(m->ok);
            if (strcmp(m->write.entity_set, "fasts") == 0)
                ck_assert_str_eq(json_string_value(json_object_get(m->write.options, "tag")),
                                 "dwasync-load_1.0");
            else
                ck_assert_ptr_null(m->write.options);
        }
        dw_mapped_vec_cleanup(&v);
    }
    dw_job_maps_free(maps);

    /* Bad values: each named with its path, the file refused. */
    def =
        parse_text(
            WOPT_JOB(WOPT_MAP("a", "1", "t", "{\"bypass_logic\": [\"CustomSync\", \"Plugins\"]}") ", " WOPT_MAP("b", "2", "t", "{\"bypass_logic\": \"CustomSync\", \"suppress_flows\": \"yes\"}") ", " WOPT_MAP(
                "c", "3", "t",
                "{\"tag\": \"a b&c=d\"}") ", " WOPT_MAP("d", "4", "t",
                                                        "{\"bypass\": true}") ", " WOPT_MAP("e",
                                                                                            "5",
                                                                                            "t",
                                                                                            "[]") ", " WOPT_MAP("f",
                                                                                                                "6",
                                                                                                                "t",
                                                                                                                "{\"bypass_logic\": [\"CustomSync\", \"CustomSync\"], \"tag\": \"\"}")),
            &errors, &rc);
    ck_assert_int_eq(rc, DW_ERR_INVALID);
    ck_assert_ptr_null(def);
    const char *text = dw_buf_str(&errors);
    static const char *const expected[] = {
        ("$.groups[0].maps[0].options.write.bypass_logic: item 1 must be \"CustomSync\" or "
         "\"CustomAsync\""),
        "$.groups[0].maps[1].options.write.bypass_logic: must be a non-empty array",
        "$.groups[0].maps[1].options.write: \"suppress_flows\" must be true or false",
        "$.groups[0].maps[2].options.write: \"tag\" must be 1 to 64 letters",
        "$.groups[0].maps[3].options.write: unknown member \"bypass\"",
        "$.groups[0].maps[4].options.write: must be an object",
        "$.groups[0].maps[5].options.write.bypass_logic: \"CustomSync\" is listed twice",
        "$.groups[0].maps[5].options.write: \"tag\" must be 1 to 64",
    };
    for (size_t i = 0; i < sizeof expected / sizeof *expected; i++)
        ck_assert_msg(strstr(text, expected[i]), "missing \"%s\" in:\n%s", expected[i], text);
    dw_buf_cleanup(&errors);
#undef WOPT_JOB
#undef WOPT_MAP
}
END_TEST

/* options.atomic: a boolean, kept through export, and agreed on by the maps of one table. */
START_TEST(atomic_option_is_validated_and_exported)
{
#define ATOMIC_MAP(name, seq, set, atomic)                                                         \
    "{\"name\": \"" name "\", \"sequence\": " seq ", \"source\": {\"table\": \"t" seq "\"}, "      \
    "\"target\": {\"entity_set\": \"" set "\", \"logical_name\": \"e\"}, "                         \
    "\"key\": [{\"target\": \"k\", \"source\": \"k\"}], \"options\": {\"atomic\": " atomic "}}"
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(
        "{\"format\": 1, \"job\": {\"name\": \"a\"}, \"groups\": [{\"name\": \"g\", \"maps\": "
        "[" ATOMIC_MAP("h", "1", "hs", "true") ", " ATOMIC_MAP(
            "l", "2", "ls", "true") ", " ATOMIC_MAP("o", "3", "os", "false") "]}]}",
        &errors, &rc);
    ck_assert_msg(rc == DW_OK, "%s", dw_buf_str(&errors));
    ck_assert(dw_jobdef_find_map(def, "h")->atomic);
    ck_assert(dw_jobdef_find_map(def, "l")->atomic);
    ck_assert(!dw_jobdef_find_map(def, "o")->atomic);
    /* Export keeps the option, and the export parses to the same normal form. */
    char *one = dw_jobdef_dump(def);
    ck_assert_ptr_nonnull(strstr(one, "\"atomic\": true"));
    struct dw_jobdef *again = parse_text(one, &errors, &rc);
    ck_assert_int_eq(rc, DW_OK);
    ck_assert(dw_jobdef_find_map(again, "l")->atomic);
    char *two = dw_jobdef_dump(again);
    ck_assert_str_eq(one, two);
    free(one);
    free(two);
    dw_jobdef_free(def);
    dw_jobdef_free(again);

    /* A non-atomic map between atomic ones of its group: map validate warns. */
    def = parse_text(
        "{\"format\": 1, \"job\": {\"name\": \"a\"}, \"groups\": [{\"name\": \"g\", \"maps\": "
        "[" ATOMIC_MAP("h", "1", "hs", "true") ", " ATOMIC_MAP(
            "l", "3", "ls", "true") ", " ATOMIC_MAP("o", "2", "os",
                                                    "false") ", " ATOMIC_MAP("z", "4", "zs",
                                                                             "false") "]}]}",
        &errors, &rc);
    ck_assert_msg(rc == DW_OK, "%s", dw_buf_str(&errors));
    struct dw_findings found;
    dw_findings_init(&found);
    dw_mapvalidate(def, NULL, NULL, 0, &found);
    ck_assert_int_eq(found.errors, 0);
    ck_assert_int_eq(found.warnings, 1);
    ck_assert_msg(strstr(dw_buf_str(&found.text),
                         "warning: $.groups[0].maps[1]: map \"o\" (sequence 2) is not atomic but "
                         "lies between the atomic maps \"h\" and \"l\""),
                  "%s", dw_buf_str(&found.text));
    dw_findings_cleanup(&found);
    dw_jobdef_free(def);

    /* Not a boolean; two maps of one table that disagree: errors with their JSON paths. */
    def = parse_text(
        "{\"format\": 1, \"job\": {\"name\": \"a\"}, \"groups\": [{\"name\": \"g\", "
        "\"maps\": [" ATOMIC_MAP("h", "1", "hs", "\"yes\"") ", " ATOMIC_MAP(
            "l", "2", "ls", "true") "]}, {\"name\": \"g2\", \"maps\": [" ATOMIC_MAP("l2", "5", "ls",
                                                                                    "false") "]}]}",
        &errors, &rc);
    ck_assert_int_eq(rc, DW_ERR_INVALID);
    ck_assert_ptr_null(def);
    const char *text = dw_buf_str(&errors);
    ck_assert_msg(strstr(text, "$.groups[0].maps[0].options.atomic: must be true or false"), "%s",
                  text);
    ck_assert_msg(strstr(text, "$.groups[1].maps[0].options.atomic: maps \"l2\" (atomic false) "
                               "and \"l\" (atomic true) both write \"ls\""),
                  "%s", text);
    dw_buf_cleanup(&errors);
#undef ATOMIC_MAP
}
END_TEST

START_TEST(normal_form_is_a_fixed_point)
{
    const char *src = getenv("DWASYNC_SOURCE_DIR");
    ck_assert_ptr_nonnull(src);
    char *path = dw_asprintf("%s/packaging/sample/fno-sample.map.json", src);
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    struct dw_jobdef *def = NULL, *again = NULL;
    ck_assert_msg(dw_jobdef_load_file(path, &errors, &def) == DW_OK, "%s", dw_buf_str(&errors));
    ck_assert_uint_eq(dw_jobdef_map_count(def), 9);
    char *one = dw_jobdef_dump(def);
    dw_rc rc;
    again = parse_text(one, &errors, &rc);
    ck_assert_int_eq(rc, DW_OK);
    char *two = dw_jobdef_dump(again);
    ck_assert_str_eq(one, two);
    /* The sample file is itself in normal form, so an export of it is the same file. */
    FILE *f = fopen(path, "r");
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_str_eq(buf, one);
    free(one);
    free(two);
    free(path);
    dw_jobdef_free(def);
    dw_jobdef_free(again);
    dw_buf_cleanup(&errors);
}
END_TEST

/* A hand-built source catalog: fno.cust (key dataareaid, account) and fno.lines. */
static struct dw_src_column cust_cols[] = {
    {(char *)"dataareaid", (char *)"character varying(4)", 4, true},
    {(char *)"account", (char *)"character varying(20)", 20, true},
    {(char *)"partytype", (char *)"character varying(20)", 20, false},
    {(char *)"name", (char *)"character varying(200)", 200, false},
    {(char *)"creditlimit", (char *)"numeric(32,6)", 0, false},
    {(char *)"mandatory", (char *)"integer", 0, false},
    {(char *)"onhold", (char *)"integer", 0, false},
    {(char *)"groupid", (char *)"character varying(10)", 10, false},
    {(char *)"invoiceaccount", (char *)"character varying(20)", 20, false},
    {(char *)"notes", (char *)"text", 0, false},
    {(char *)"unused", (char *)"text", 0, false},
};
static struct dw_src_column line_cols[] = {
    {(char *)"dataareaid", (char *)"character varying(4)", 4, true},
    {(char *)"salesid", (char *)"character varying(20)", 20, true},
    {(char *)"linenum", (char *)"integer", 0, true},
    {(char *)"qty", (char *)"numeric(32,6)", 0, false},
};

static struct dw_src_catalog make_catalog(char cust_identity)
{
    static struct dw_src_table tables[2];
    tables[0] = (struct dw_src_table){(char *)"fno", (char *)"cust",
                                      cust_identity, true,
                                      cust_cols,     sizeof cust_cols / sizeof cust_cols[0]};
    tables[1] = (struct dw_src_table){(char *)"fno", (char *)"lines",
                                      'd',           true,
                                      line_cols,     sizeof line_cols / sizeof line_cols[0]};
    for (size_t i = 0; i < tables[0].ncols; i++)
        cust_cols[i].identity = cust_identity == 'f' || i < 2;
    return (struct dw_src_catalog){tables, 2};
}

START_TEST(filters_compile_to_publication_sql)
{
    struct dw_job_maps *maps = load_maps();
    const struct dw_jobdef *def = dw_job_maps_def(maps);
    struct dw_src_catalog cat = make_catalog('f');
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    ck_assert_int_eq(dw_publication_tables_sql(def, &cat, &sql), DW_OK);
    /* REPLICA IDENTITY FULL: no column list (PostgreSQL forbids one); the OR of both maps'
     * filters with the legal entities; the child filtered through its parent's company. */
    ck_assert_str_eq(
        dw_buf_str(&sql),
        "TABLE ONLY \"fno\".\"cust\" WHERE (((\"dataareaid\" = E'usmf' OR \"dataareaid\" = "
        "E'demf') AND (\"partytype\" = E'Organization')) OR ((\"dataareaid\" = E'usmf' OR "
        "\"dataareaid\" = E'demf') AND (\"partytype\" = E'Person'))), "
        "TABLE ONLY \"fno\".\"lines\" (\"dataareaid\", \"salesid\", \"linenum\", \"qty\") "
        "WHERE (((\"dataareaid\" = E'usmf' OR \"dataareaid\" = E'demf')))");
    /* With a default identity the column list holds exactly what the maps read. */
    dw_buf_reset(&sql);
    cat = make_catalog('d');
    dw_publication_tables_sql(def, &cat, &sql);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&sql), "(\"dataareaid\", \"account\", \"partytype\", "
                                                   "\"name\", \"creditlimit\", \"mandatory\", "
                                                   "\"onhold\", \"groupid\", \"invoiceaccount\", "
                                                   "\"notes\")"));
    ck_assert_ptr_null(strstr(dw_buf_str(&sql), "unused"));
    dw_buf_cleanup(&sql);
    dw_job_maps_free(maps);
}
END_TEST

START_TEST(filter_literals_and_three_valued_logic)
{
    const char *text =
        "{\"format\": 1, \"job\": {\"name\": \"f\"}, \"groups\": [{\"name\": \"g\", \"maps\": "
        "[{\"name\": \"m\", \"sequence\": 1, \"source\": {\"table\": \"t\"}, \"target\": "
        "{\"entity_set\": \"es\", \"logical_name\": \"e\"}, \"key\": [{\"target\": \"k\", "
        "\"source\": \"k\"}], \"filter\": {\"or\": [{\"not\": {\"column\": \"a\", \"op\": \"in\", "
        "\"value\": [\"it's\", \"b\\\\c\"]}}, {\"column\": \"n\", \"op\": \">=\", \"value\": 5}, "
        "{\"column\": \"z\", \"op\": \"is null\"}]}}]}]}";
    struct dw_buf errors, sql;
    dw_buf_init(&errors, 0);
    dw_buf_init(&sql, 0);
    dw_rc rc;
    struct dw_jobdef *def = parse_text(text, &errors, &rc);
    ck_assert_msg(rc == DW_OK, "%s", dw_buf_str(&errors));
    struct dw_src_catalog none = {NULL, 0};
    dw_publication_table_filter(def, &none, "public", "t", &sql);
    ck_assert_str_eq(dw_buf_str(&sql), "(((NOT (\"a\" = E'it''s' OR \"a\" = E'b\\\\c')) OR "
                                       "(\"n\" >= 5) OR (\"z\" IS NULL)))");
    const struct dw_tablemap *m = &def->groups[0].maps[0];
    static const struct {
        const char *row;
        enum dw_tristate want;
    } cases[] = {
        {"{\"a\": \"it's\", \"n\": 1, \"z\": 1}", DW_FALSE},
        {"{\"a\": \"x\", \"n\": 1, \"z\": 1}", DW_TRUE},
        {"{\"a\": \"it's\", \"n\": 5, \"z\": 1}", DW_TRUE},
        {"{\"a\": \"it's\", \"n\": null, \"z\": 1}",
         DW_FALSE}, /* NULL >= 5 excludes, as in a publication */
        {"{\"a\": \"it's\", \"n\": 1, \"z\": null}", DW_TRUE},
        {"{\"A\": \"it's\", \"N\": 1, \"Z\": 2}", DW_FALSE},
        {"{\"a\": null, \"n\": 1, \"z\": 1}", DW_FALSE},
        {"{\"n\": 1, \"z\": 1}", DW_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *row = J(cases[i].row);
        ck_assert_msg(dw_tablemap_match(def, m, row) == cases[i].want, "row %s", cases[i].row);
        json_decref(row);
    }
    dw_jobdef_free(def);
    dw_buf_cleanup(&errors);
    dw_buf_cleanup(&sql);
}
END_TEST

/* --- validate -------------------------------------------------------------------------- */

static struct dw_attr_meta account_attrs[] = {
    {(char *)"accountnumber", DW_ATTR_STRING, false, 20, 0, 0, 0, NULL, 0, NULL, 0},
    {(char *)"msdyn_company", DW_ATTR_LOOKUP, false, 0, 0, 0, 0, NULL, 0,
     (char *[]){(char *)"cdm_company"}, 1},
    {(char *)"name", DW_ATTR_STRING, true, 160, 0, 0, 0, NULL, 0, NULL, 0},
    {(char *)"creditlimit", DW_ATTR_MONEY, false, 0, 0, 1e14, 2, NULL, 0, NULL, 0},
    {(char *)"msdyn_creditlimitismandatory", DW_ATTR_BOOLEAN, false, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {(char *)"msdyn_onholdstatus", DW_ATTR_PICKLIST, false, 0, 0, 0, 0,
     (int[]){806380000, 806380001}, 2, NULL, 0},
    {(char *)"customertypecode", DW_ATTR_PICKLIST, false, 0, 0, 0, 0, (int[]){3, 11}, 2, NULL, 0},
    {(char *)"msdyn_customergroupid", DW_ATTR_LOOKUP, false, 0, 0, 0, 0, NULL, 0,
     (char *[]){(char *)"msdyn_customergroup"}, 1},
    {(char *)"msdyn_billingaccount", DW_ATTR_LOOKUP, false, 0, 0, 0, 0, NULL, 0,
     (char *[]){(char *)"contact"}, 1},
};

static struct dw_key_meta account_keys[] = {
    {(char *)"msdyn_accountnumber_company",
     (char *[]){(char *)"accountnumber", (char *)"msdyn_company"}, 2, true},
};

START_TEST(validate_finds_metadata_and_source_problems)
{
    struct dw_job_maps *maps = load_maps();
    const struct dw_jobdef *def = dw_job_maps_def(maps);
    struct dw_entity_meta account = {(char *)"account",
                                     (char *)"accounts",
                                     (char *)"accountid",
                                     account_attrs,
                                     sizeof account_attrs / sizeof account_attrs[0],
                                     account_keys,
                                     1};
    struct dw_entity_meta contact = {
        (char *)"contact", (char *)"contacts", (char *)"contactid", account_attrs, 1, NULL, 0};
    const struct dw_entity_meta *metas[] = {&account, &contact};
    struct dw_src_catalog cat = make_catalog('d');
    struct dw_findings f;
    dw_findings_init(&f);
    dw_mapvalidate(def, &cat, metas, 2, &f);
    const char *text = dw_buf_str(&f.text);
    static const char *const expected[] = {
        /* maps sorted by sequence: [0] orgs, [1] persons, [2] lines */
        "error: $.groups[0].maps[0].filter: the row filter reads column \"partytype\", which is "
        "not in the replica identity",
        "warning: $.groups[0].maps[0].columns[0]: source \"name\" (character varying(200)) is "
        "longer than \"name\" (String, at most 160)",
        "error: $.groups[0].maps[0].columns[3].value_map.\"2\": option value 806380002 is not in "
        "the option set of \"msdyn_onholdstatus\"",
        "error: $.groups[0].maps[0].columns[6]: lookup \"account.msdyn_billingaccount\" cannot "
        "refer to \"account\"",
        "error: $.groups[0].maps[0].columns[7]: \"account\" has no column \"description\"",
        "error: $.groups[0].maps[1].key: (msdyn_contactpersonid, msdyn_company) is not an "
        "alternate key of \"contact\"",
        "error: $.groups[0].maps[1].key[0]: \"contact\" has no column \"msdyn_contactpersonid\"",
        "error: $.groups[0].maps[1].filter: the row filter reads column \"partytype\"",
        "error: $.groups[0].maps[1].key[1]: \"contact\" has no column \"msdyn_company\"",
        "error: $.groups[0].maps[1].columns[0]: \"contact\" has no column \"lastname\"",
        "error: $.groups[0].maps[2].target: Dataverse has no table \"salesorderdetail\"",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        ck_assert_msg(strstr(text, expected[i]) != NULL, "missing [%s] in:\n%s", expected[i], text);
    /* The type check is satisfied (money, boolean, picklist match), the company key is an
     * alternate key, and the customertypecode constant 3 is a valid option. */
    ck_assert_ptr_null(strstr(text, "maps[0].key"));
    ck_assert_ptr_null(strstr(text, "customertypecode"));
    ck_assert_ptr_null(strstr(text, "columns[8]")); /* "<" is not written to Dataverse */
    int expected_errors = 0;
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        expected_errors += strncmp(expected[i], "error:", 6) == 0;
    ck_assert_msg(f.errors == expected_errors, "findings:\n%s", text);
    ck_assert_int_eq(f.warnings, 1); /* the longer source column */
    dw_findings_cleanup(&f);

    /* Source only: REPLICA IDENTITY FULL satisfies the filter rule; a missing column and a
     * missing table are errors. */
    cat = make_catalog('f');
    cat.ntables = 1;
    cust_cols[9].name = (char *)"memo";
    dw_findings_init(&f);
    dw_mapvalidate(def, &cat, NULL, 0, &f);
    text = dw_buf_str(&f.text);
    ck_assert_ptr_null(strstr(text, "replica identity"));
    ck_assert_ptr_nonnull(
        strstr(text, "error: $.groups[0].maps[0].columns[7]: column \"NOTES\" does not exist"));
    ck_assert_ptr_nonnull(strstr(text, "error: $.groups[0].maps[2].source: table \"fno.lines\" "
                                       "does not exist"));
    ck_assert_int_eq(f.errors, 2);
    cust_cols[9].name = (char *)"notes";
    dw_findings_cleanup(&f);
    dw_job_maps_free(maps);
}
END_TEST

/* "did you mean": a typo finds its column, a different name finds none. */
START_TEST(nearest_column_names)
{
    const char *cols[] = {"customeraccount", "organizationname", "personlastname", "dataareaid"};
    ck_assert_str_eq(dw_scaffold_nearest("ORGANISATIONNAME", cols, 4), "organizationname");
    ck_assert_str_eq(dw_scaffold_nearest("CUSTOMERACOUNT", cols, 4), "customeraccount");
    ck_assert_str_eq(dw_scaffold_nearest("dataareid", cols, 4), "dataareaid");
    ck_assert_ptr_null(dw_scaffold_nearest("PERSONMIDDLENAME", cols, 4));
    ck_assert_ptr_null(dw_scaffold_nearest("vendorid", cols, 4));
    ck_assert_ptr_null(dw_scaffold_nearest("x", cols, 0));
}
END_TEST

static Suite *mapping_suite(void)
{
    Suite *s = suite_create("mapping");
    TCase *tc = tcase_create("mapping");
    tcase_add_test(tc, insert_maps_keys_value_maps_lookups_constants);
    tcase_add_test(tc, bodies_are_kept_as_text_with_references_apart);
    tcase_add_test(tc, child_key_nests_parent_reference);
    tcase_add_test(tc, repeated_references_are_shared_and_stay_exact);
    tcase_add_test(tc, remembered_references_tell_apart_values_with_any_bytes);
    tcase_add_test(tc, unmapped_value_is_a_mapping_error_naming_column_and_value);
    tcase_add_test(tc, string_over_known_max_length_is_a_mapping_error);
    tcase_add_test(tc, update_leaving_filter_deletes_and_enters_other_map);
    tcase_add_test(tc, update_changing_key_deletes_old_row);
    tcase_add_test(tc, unchanged_toast_and_null_rules);
    tcase_add_test(tc, update_of_unmapped_columns_is_flagged_unchanged);
    tcase_add_test(tc, legal_entity_filter_and_delete);
    tcase_add_test(tc, coercions_to_dataverse_types);
    tcase_add_test(tc, target_id_is_canonical);
    tcase_add_test(tc, replay_through_one_map_by_id);
    tcase_add_test(tc, map_file_errors_carry_json_paths);
    tcase_add_test(tc, map_file_names_are_identifiers_and_files_are_bounded);
    tcase_add_test(tc, normal_form_is_a_fixed_point);
    tcase_add_test(tc, atomic_option_is_validated_and_exported);
    tcase_add_test(tc, write_options_are_validated_exported_and_carried);
    tcase_add_test(tc, filters_compile_to_publication_sql);
    tcase_add_test(tc, filter_literals_and_three_valued_logic);
    tcase_add_test(tc, validate_finds_metadata_and_source_problems);
    tcase_add_test(tc, truncate_fails_through_each_map_of_its_table);
    tcase_add_test(tc, nearest_column_names);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = mapping_suite};

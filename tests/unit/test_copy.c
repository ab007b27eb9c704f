/*
 * Unit tests of what a copy (initial sync, `job resync`, `verify --repair`) reads: the
 * operator's predicate is kept inside its parentheses (dw_snapshot_condition_ok) and the
 * maps' filters and selected legal entities become the copy's server-side condition
 * (dw_copy_table_filter).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"

#include "dwasync/mapfile.h"
#include "dwasync/snapshot.h"

START_TEST(conditions_stay_inside_their_parentheses)
{
    static const char *const good[] = {
        "creditlimit > 1000",
        "name = 'it''s (not) closed; -- nor a comment'",
        "name = E'a\\'b; ) /* still a literal'",
        "\"odd;name\" IS NULL AND (a = 1 OR (b = 2))",
        "date'2026-01-01' < created AND x <> 'a\\'",
    };
    static const char *const bad[] = {
        "true) OR (true",
        "a = 1; DROP TABLE t",
        "a = 1 -- x",
        "a = 1 /* x */",
        "$$x$$ = 'x'",
        "a = $1",
        "(a = 1",
        "a = 'open",
        "\"open = 1",
        "a = E'\\'",
        "  ",
        "a = 1 \\g",
    };
    const char *why = NULL;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(dw_snapshot_condition_ok(good[i], &why), "refused [%s]: %s", good[i], why);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        ck_assert_msg(!dw_snapshot_condition_ok(bad[i], &why), "accepted [%s]", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
    char *huge = malloc(DW_SNAPSHOT_CONDITION_MAX + 2);
    memset(huge, 'a', DW_SNAPSHOT_CONDITION_MAX + 1);
    huge[DW_SNAPSHOT_CONDITION_MAX + 1] = '\0';
    ck_assert(!dw_snapshot_condition_ok(huge, &why));
    free(huge);
}
END_TEST

/* Two maps of one table split by a filter, a company-keyed one and a global one. */
static const char job[] =
    "{\"format\": 1, \"job\": {\"name\": \"j\", \"legal_entities\": [\"usmf\", \"demf\"]},"
    " \"groups\": [{\"name\": \"g\", \"maps\": ["
    " {\"name\": \"orgs\", \"sequence\": 2, \"source\": {\"table\": \"cust\"},"
    "  \"target\": {\"entity_set\": \"accounts\", \"logical_name\": \"account\"},"
    "  \"key\": [{\"target\": \"accountnumber\", \"source\": \"ACCOUNT\"},"
    "   {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}],"
    "  \"filter\": {\"column\": \"PARTYTYPE\", \"op\": \"=\", \"value\": \"Organization\"}},"
    " {\"name\": \"persons\", \"sequence\": 3, \"source\": {\"table\": \"cust\"},"
    "  \"target\": {\"entity_set\": \"contacts\", \"logical_name\": \"contact\"},"
    "  \"key\": [{\"target\": \"msdyn_contactpersonid\", \"source\": \"ACCOUNT\"},"
    "   {\"target\": \"msdyn_company\", \"company\": \"DATAAREAID\"}],"
    "  \"filter\": {\"column\": \"PARTYTYPE\", \"op\": \"=\", \"value\": \"Person\"}},"
    " {\"name\": \"currencies\", \"sequence\": 1, \"source\": {\"table\": \"cur\"},"
    "  \"target\": {\"entity_set\": \"transactioncurrencies\", \"logical_name\":"
    "   \"transactioncurrency\"}, \"key\": [{\"target\": \"isocurrencycode\", \"source\":"
    "   \"CODE\"}]}]}]}";

static char *filter_of(const struct dw_jobdef *def, const char *table,
                       const struct dw_copy_selection *sel, bool *any)
{
    struct dw_src_catalog none = {NULL, 0};
    struct dw_buf sql;
    dw_buf_init(&sql, 0);
    ck_assert_int_eq(dw_copy_table_filter(def, &none, "public", table, sel, &sql, any), DW_OK);
    char *s = strdup(dw_buf_str(&sql));
    dw_buf_cleanup(&sql);
    return s;
}

START_TEST(copies_read_only_the_selected_maps_and_legal_entities)
{
    json_t *doc = json_loads(job, 0, NULL);
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    struct dw_jobdef *def = NULL;
    ck_assert_msg(dw_jobdef_parse(doc, &errors, &def) == DW_OK, "%s", dw_buf_str(&errors));
    bool any = false;
    char *all = filter_of(def, "cust", NULL, &any);
    ck_assert(any);
    ck_assert_str_eq(all, "((\"DATAAREAID\" = E'usmf' OR \"DATAAREAID\" = E'demf') AND "
                          "(\"PARTYTYPE\" = E'Organization')) OR ((\"DATAAREAID\" = E'usmf' OR "
                          "\"DATAAREAID\" = E'demf') AND (\"PARTYTYPE\" = E'Person'))");
    struct dw_buf pub;
    dw_buf_init(&pub, 0);
    struct dw_src_catalog none = {NULL, 0};
    dw_publication_table_filter(def, &none, "public", "cust", &pub);
    ck_assert_str_eq(dw_buf_str(&pub), all); /* the initial sync reads what is published */
    dw_buf_cleanup(&pub);

    const char *orgs[] = {"orgs"}, *demf[] = {"demf"};
    struct dw_copy_selection one_map = {orgs, 1, NULL, 0};
    char *o = filter_of(def, "cust", &one_map, &any);
    ck_assert_str_eq(o, "((\"DATAAREAID\" = E'usmf' OR \"DATAAREAID\" = E'demf') AND "
                        "(\"PARTYTYPE\" = E'Organization'))");
    char *cur = filter_of(def, "cur", &one_map, &any);
    ck_assert(!any); /* no selected map reads it: nothing to copy */

    struct dw_copy_selection one_le = {NULL, 0, demf, 1};
    char *d = filter_of(def, "cust", &one_le, &any);
    ck_assert(any);
    ck_assert_ptr_null(strstr(d, "usmf"));
    ck_assert_ptr_nonnull(strstr(d, "(\"DATAAREAID\" = E'demf') AND (\"PARTYTYPE\" = E'Person')"));
    char *global = filter_of(def, "cur", &one_le, &any);
    ck_assert(!any); /* not striped by legal entity: not part of one */
    free(all);
    free(o);
    free(cur);
    free(d);
    free(global);
    dw_jobdef_free(def);
    dw_buf_cleanup(&errors);
    json_decref(doc);
}
END_TEST

static Suite *copy_suite(void)
{
    Suite *s = suite_create("copy");
    TCase *tc = tcase_create("copy");
    tcase_add_test(tc, conditions_stay_inside_their_parentheses);
    tcase_add_test(tc, copies_read_only_the_selected_maps_and_legal_entities);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = copy_suite};

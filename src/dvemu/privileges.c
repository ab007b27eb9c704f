/* dvemu's security roles in miniature: privileges revoked from the application user, so
 * that tests see Dataverse's authorization errors. A rule revokes a global privilege
 * (prvBypassCustomBusinessLogic or prvBypassCustomPlugins, which the bypass parameters need:
 * 403 0x80040220, "is missing prvBypass... privilege"), or create, write or delete
 * on a table, for every row (the role lacks the privilege: 403 0x80040220, "is missing
 * prv<Create|Write|Delete><table> privilege") or only for rows whose attribute holds a
 * value, standing in for rows owned by a business unit the user's role does not reach (the
 * privilege check passes, the access check on the record fails: 403 0x80048306, "does not
 * have <Create|Write|Delete>Access right(s) for record"). Everything here runs under
 * emu->store_lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "internal.h"

static const char *const priv_names[EMU_PRIV_COUNT] = {
    "create", "write", "delete", "bypasscustombusinesslogic", "bypasscustomplugins"};
static const char *const priv_verbs[] = {"Create", "Write", "Delete"};
/* The global privileges by name and by the id that is "the same for all Dataverse
 * environments" ("Bypass custom Dataverse logic"). */
static const char *const global_privs[][2] = {
    {"prvBypassCustomBusinessLogic", "0ea552b0-a491-4470-9a1b-82068deccf66"},
    {"prvBypassCustomPlugins", "148a9eaf-d0c4-4196-9852-c3a38e35f6a1"},
};

void emu_privileges_free(struct emu *emu)
{
    for (size_t i = 0; i < emu->nprivs; i++)
        json_decref(emu->privs[i].value);
    free(emu->privs);
    emu->privs = NULL;
    emu->nprivs = 0;
}

static struct emu_table *table_named(struct emu *emu, const char *name)
{
    struct emu_table *t = emu_table_by_set(emu, name, strlen(name));
    return t ? t : emu_table_by_logical(emu, name);
}

/* Parses one element of "revoke" into r; *why (heap) says what is wrong. */
static dw_rc parse_rule(struct emu *emu, json_t *j, size_t i, struct emu_priv_rule *r, char **why)
{
    const char *table = json_string_value(json_object_get(j, "table"));
    const char *priv = json_string_value(json_object_get(j, "privilege"));
    json_t *where = json_object_get(j, "where");
    memset(r, 0, sizeof *r);
    size_t p = EMU_PRIV_COUNT;
    for (size_t k = 0; priv && k < EMU_PRIV_COUNT; k++)
        if (strcmp(priv, priv_names[k]) == 0)
            p = k;
    bool global = p >= EMU_PRIV_BYPASS_LOGIC && p < EMU_PRIV_COUNT;
    if (!json_is_object(j) || priv == NULL || (table == NULL && !global)) {
        *why = dw_asprintf("revoke[%zu] needs \"table\" and \"privilege\"", i);
        return DW_ERR_INVALID;
    }
    if (p == EMU_PRIV_COUNT) {
        *why = dw_asprintf("revoke[%zu]: privilege \"%s\" is not create, write, delete, "
                           "bypasscustombusinesslogic or bypasscustomplugins",
                           i, priv);
        return DW_ERR_INVALID;
    }
    r->priv = (enum emu_priv)p;
    if (global) {
        if (table != NULL || where != NULL) {
            *why = dw_asprintf("revoke[%zu]: \"%s\" is a global privilege (no table, no where)", i,
                               priv);
            return DW_ERR_INVALID;
        }
        return DW_OK;
    }
    if ((r->table = table_named(emu, table)) == NULL) {
        *why = dw_asprintf("revoke[%zu]: no table \"%s\"", i, table);
        return DW_ERR_INVALID;
    }
    if (where == NULL || json_is_null(where))
        return DW_OK;
    const char *attr;
    json_t *value;
    if (!json_is_object(where) || json_object_size(where) != 1) {
        *why = dw_asprintf("revoke[%zu]: \"where\" must be {\"<attribute>\": value}", i);
        return DW_ERR_INVALID;
    }
    json_object_foreach(where, attr, value)
    {
        if ((r->attr = emu_attr_find(r->table, attr)) == NULL) {
            *why = dw_asprintf("revoke[%zu]: table \"%s\" has no attribute \"%s\"", i,
                               r->table->logical, attr);
            return DW_ERR_INVALID;
        }
        r->value = json_incref(value);
    }
    return DW_OK;
}

dw_rc emu_privileges_set(struct emu *emu, json_t *cfg, char **why)
{
    json_t *revoke = json_object_get(cfg, "revoke");
    if (!json_is_object(cfg) || !json_is_array(revoke)) {
        *why = dw_strdup("privileges must be {\"revoke\": [{\"table\", \"privilege\", "
                         "\"where\"}, ...]}");
        return DW_ERR_INVALID;
    }
    size_t n = json_array_size(revoke);
    struct emu_priv_rule *rules = dw_calloc(n ? n : 1, sizeof *rules);
    for (size_t i = 0; i < n; i++) {
        if (parse_rule(emu, json_array_get(revoke, i), i, &rules[i], why) != DW_OK) {
            for (size_t k = 0; k <= i; k++)
                json_decref(rules[k].value);
            free(rules);
            return DW_ERR_INVALID;
        }
    }
    /* All or nothing: a bad rule leaves the previous set in force. */
    emu_privileges_free(emu);
    emu->privs = rules;
    emu->nprivs = n;
    return DW_OK;
}

json_t *emu_privileges_json(const struct emu *emu)
{
    json_t *revoke = json_array();
    for (size_t i = 0; i < emu->nprivs; i++) {
        const struct emu_priv_rule *r = &emu->privs[i];
        json_t *j = json_object();
        if (r->table)
            json_object_set_new(j, "table", json_string(r->table->set));
        json_object_set_new(j, "privilege", json_string(priv_names[r->priv]));
        if (r->attr)
            json_object_set_new(j, "where", json_pack("{s:O}", r->attr->name, r->value));
        json_array_append_new(revoke, j);
    }
    return json_pack("{s:o}", "revoke", revoke);
}

/* Whether a stored row holds the rule's value (strings compare as Dataverse's collation). */
static bool row_in_scope(const struct emu_priv_rule *r, const json_t *row)
{
    const json_t *v = row ? json_object_get(row, r->attr->prop) : NULL;
    if (v == NULL)
        return false;
    if (json_is_string(v) && json_is_string(r->value))
        return strcasecmp(json_string_value(v), json_string_value(r->value)) == 0;
    return json_equal((json_t *)v, r->value);
}

/* Object type codes of the system tables Dataverse numbers; custom tables get 10000+. */
static int object_type_code(const struct emu *emu, const struct emu_table *t)
{
    static const struct {
        const char *logical;
        int otc;
    } known[] = {{"account", 1},
                 {"contact", 2},
                 {"salesorder", 1088},
                 {"salesorderdetail", 1089},
                 {"transactioncurrency", 9105}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(known[i].logical, t->logical) == 0)
            return known[i].otc;
    return 10000 + (int)(t - emu->tables);
}

/* 403 0x80040220: the user's roles lack privilege prv (id prv_id); where says on what. */
static void err_missing(const struct emu *emu, const char *user, const char *prv,
                        const char *prv_id, const char *where, struct emu_err *err)
{
    char *bu = emu_stable_guid("businessunit", "root");
    int all = 8 * (int)emu->ntables;
    emu_err_set(err, 403, "0x80040220",
                "Principal user (Id=%s, type=8, roleCount=1, privilegeCount=%d, accessMode=4, "
                "MetadataCachePrivilegesCount=%d, BusinessUnitId=%s), is missing %s "
                "privilege (Id=%s)%s. context.Caller=%s",
                user, all - (int)emu->nprivs, all, bu, prv, prv_id, where, user);
    free(bu);
}

dw_rc emu_privilege_check_global(struct emu *emu, enum emu_priv priv, struct emu_err *err)
{
    bool revoked = false;
    for (size_t i = 0; i < emu->nprivs; i++)
        revoked |= emu->privs[i].table == NULL && emu->privs[i].priv == priv;
    if (!revoked)
        return DW_OK;
    const char *const *g = global_privs[priv - EMU_PRIV_BYPASS_LOGIC];
    char *user = emu_stable_guid("user", emu->caller ? emu->caller : "");
    err_missing(emu, user, g[0], g[1], "", err);
    free(user);
    return DW_ERR_AUTH;
}

dw_rc emu_privilege_check(struct emu *emu, const struct emu_table *t, enum emu_priv priv,
                          const json_t *before, const json_t *after, const char *id,
                          struct emu_err *err)
{
    const struct emu_priv_rule *hit = NULL;
    for (size_t i = 0; i < emu->nprivs && hit == NULL; i++) {
        const struct emu_priv_rule *r = &emu->privs[i];
        /* A scoped rule guards rows on both sides: a user cannot write a row owned by a
         * business unit out of reach, nor move a row into one. */
        if (r->table == t && r->priv == priv &&
            (r->attr == NULL || row_in_scope(r, before) || row_in_scope(r, after)))
            hit = r;
    }
    if (hit == NULL)
        return DW_OK;
    char *user = emu_stable_guid("user", emu->caller ? emu->caller : "");
    if (hit->attr == NULL) {
        char *prv = dw_asprintf("prv%s%s", priv_verbs[priv], t->logical);
        char *prv_id = emu_stable_guid("privilege", prv);
        char *where =
            dw_asprintf(" on OTC=%d for entity '%s'", object_type_code(emu, t), t->logical);
        err_missing(emu, user, prv, prv_id, where, err);
        free(prv);
        free(prv_id);
        free(where);
    } else {
        emu_err_set(err, 403, "0x80048306",
                    "Principal with ID %s does not have %sAccess right(s) for record with ID %s "
                    "of entity %s.",
                    user, priv_verbs[priv], id, t->logical);
    }
    free(user);
    return DW_ERR_AUTH;
}

/* RetrieveUserPrivilegeByPrivilegeName, bound to the caller's systemuser: the user holds
 * every privilege but the revoked global ones (a table privilege revoked for some rows
 * only is still held). RolePrivileges is empty for a privilege the user lacks. */
void emu_user_privilege_by_name(struct emu *emu, const char *name, struct emu_resp *resp)
{
    bool held = true;
    const char *id = NULL;
    for (size_t g = 0; g < sizeof global_privs / sizeof *global_privs; g++) {
        if (strcasecmp(name, global_privs[g][0]) != 0)
            continue;
        id = global_privs[g][1];
        struct emu_err none = {0};
        held = emu_privilege_check_global(emu, (enum emu_priv)(EMU_PRIV_BYPASS_LOGIC + g), &none) ==
               DW_OK;
        emu_err_clear(&none);
    }
    char *bu = emu_stable_guid("businessunit", "root");
    char *pid = id ? dw_strdup(id) : emu_stable_guid("privilege", name);
    json_t *list = json_array();
    if (held)
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:s}", "Depth", "Global", "PrivilegeId",
                                        pid, "BusinessUnitId", bu, "PrivilegeName", name));
    emu_resp_json(resp, 200, json_pack("{s:o}", "RolePrivileges", list));
    free(bu);
    free(pid);
}

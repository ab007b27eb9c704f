/* Job definitions in the control schema: import in one transaction, load through the parser. */
#include "dwasync/mapstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

static char *dump_or_null(const json_t *v)
{
    return v ? dw_json_dumps(v) : NULL;
}

/* Rows a command affected, and the result cleared. */
static int affected(PGresult *r)
{
    int n = (int)strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return n;
}

static dw_rc import_maps(PGconn *c, const struct dw_jobdef *def, const char *job_id, json_t *doc,
                         struct dw_mapstore_import_result *res)
{
    dw_rc rc = DW_OK;
    PGresult *r = NULL;
    json_t *groups = json_object_get(doc, "groups"), *names = json_array(), *gnames = json_array();
    if ((rc = dw_pg_exec(c, "deferring constraints", "SET CONSTRAINTS ALL DEFERRED")) != DW_OK)
        goto out;
    for (size_t g = 0; g < def->ngroups; g++) {
        char pos[32];
        snprintf(pos, sizeof pos, "%zu", g);
        const char *gp[3] = {job_id, def->groups[g].name, pos};
        if ((rc = dw_pg_query(c, "storing a table group",
                              "INSERT INTO dwasync.table_group (job_id, name, position)"
                              " VALUES ($1, $2, $3) ON CONFLICT (job_id, name)"
                              " DO UPDATE SET position = EXCLUDED.position RETURNING id",
                              3, gp, &r)) != DW_OK)
            goto out;
        char *group_id = dw_strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        r = NULL;
        json_array_append_new(gnames, json_string(def->groups[g].name));
        json_t *maps = json_object_get(json_array_get(groups, g), "maps");
        for (size_t i = 0; i < def->groups[g].nmaps && rc == DW_OK; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            json_t *mo = json_array_get(maps, i);
            char seq[32];
            snprintf(seq, sizeof seq, "%d", m->sequence);
            char *key = dump_or_null(json_object_get(mo, "key"));
            char *cols = dump_or_null(json_object_get(mo, "columns"));
            char *filter = dump_or_null(json_object_get(mo, "filter"));
            char *opts = dump_or_null(json_object_get(mo, "options"));
            const char *mp[12] = {
                job_id,        group_id,        seq, m->name, m->source_schema, m->source_table,
                m->entity_set, m->logical_name, key, cols,    filter,           opts};
            /* The version counts definition changes: unchanged maps keep theirs. */
            rc = dw_pg_query(
                c, "storing a table map",
                "INSERT INTO dwasync.table_map AS t (job_id, group_id, sequence, name,"
                " source_schema, source_table, target_entity_set, target_logical_name,"
                " key_mapping, column_mappings, filter, options)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                " ON CONFLICT (job_id, name) DO UPDATE SET group_id = EXCLUDED.group_id,"
                " sequence = EXCLUDED.sequence, source_schema = EXCLUDED.source_schema,"
                " source_table = EXCLUDED.source_table,"
                " target_entity_set = EXCLUDED.target_entity_set,"
                " target_logical_name = EXCLUDED.target_logical_name,"
                " key_mapping = EXCLUDED.key_mapping, column_mappings = EXCLUDED.column_mappings,"
                " filter = EXCLUDED.filter, options = EXCLUDED.options,"
                " version = t.version + 1, updated_at = now()"
                " WHERE (t.group_id, t.sequence, t.source_schema, t.source_table,"
                " t.target_entity_set, t.target_logical_name, t.key_mapping, t.column_mappings,"
                " t.filter, t.options) IS DISTINCT FROM (EXCLUDED.group_id, EXCLUDED.sequence,"
                " EXCLUDED.source_schema, EXCLUDED.source_table, EXCLUDED.target_entity_set,"
                " EXCLUDED.target_logical_name, EXCLUDED.key_mapping, EXCLUDED.column_mappings,"
                " EXCLUDED.filter, EXCLUDED.options)"
                " RETURNING id",
                12, mp, &r);
            free(key);
            free(cols);
            free(filter);
            free(opts);
            if (rc == DW_OK) {
                res->maps_changed += PQntuples(r);
                PQclear(r);
                r = NULL;
            }
            json_array_append_new(names, json_string(m->name));
        }
        free(group_id);
        if (rc != DW_OK)
            goto out;
    }
    char *ntext = dw_json_dumps(names), *gtext = dw_json_dumps(gnames);
    const char *dp[2] = {job_id, ntext};
    rc = dw_pg_query(c, "removing table maps no longer in the file",
                     "DELETE FROM dwasync.table_map WHERE job_id = $1 AND name NOT IN"
                     " (SELECT jsonb_array_elements_text($2::jsonb))",
                     2, dp, &r);
    if (rc == DW_OK) {
        res->maps_removed = affected(r);
        r = NULL;
        dp[1] = gtext;
        rc = dw_pg_query(c, "removing table groups no longer in the file",
                         "DELETE FROM dwasync.table_group WHERE job_id = $1 AND name NOT IN"
                         " (SELECT jsonb_array_elements_text($2::jsonb))",
                         2, dp, &r);
    }
    free(ntext);
    free(gtext);
out:
    PQclear(r);
    json_decref(names);
    json_decref(gnames);
    return rc;
}

dw_rc dw_mapstore_import(PGconn *control, const struct dw_jobdef *def,
                         struct dw_mapstore_import_result *result)
{
    struct dw_mapstore_import_result res = {false, (int)dw_jobdef_map_count(def), 0, 0};
    json_t *doc = dw_jobdef_to_json(def);
    PGresult *r = NULL;
    char *job_id = NULL;
    json_t *le = json_object_get(json_object_get(doc, "job"), "legal_entities");
    char *le_text = dw_json_dumps(le), *opts = dw_json_dumps(def->options);
    bool in_tx = false;
    dw_rc rc = dw_pg_exec(control, "starting the import transaction", "BEGIN");
    if (rc != DW_OK)
        goto out;
    in_tx = true;
    const char *jp[1] = {def->name};
    if ((rc = dw_pg_query(control, "locking the job",
                          "SELECT id, state FROM dwasync.job WHERE name = $1 FOR UPDATE", 1, jp,
                          &r)) != DW_OK)
        goto out;
    if (PQntuples(r) == 1) {
        const char *state = PQgetvalue(r, 0, 1);
        if (strcmp(state, "active") == 0 || strcmp(state, "starting") == 0 ||
            strcmp(state, "paused") == 0) {
            char *hint = dw_asprintf("Run \"dwasync job stop %s\", import again, then "
                                     "\"dwasync job start %s\"; no change is lost while the "
                                     "job is stopped.",
                                     def->name, def->name);
            DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"job", def->name}, {"hint", hint}),
                    "job \"%s\" is %s: its table maps cannot change while it runs", def->name,
                    state);
            free(hint);
            rc = DW_ERR_STATE;
            goto out;
        }
        job_id = dw_strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        r = NULL;
        const char *up[4] = {job_id, def->environment_url, le_text, opts};
        if ((rc = dw_pg_query(control, "updating the job",
                              "UPDATE dwasync.job SET environment_url = $2, legal_entities ="
                              " ARRAY(SELECT jsonb_array_elements_text($3::jsonb)),"
                              " options = $4::jsonb, updated_at = now() WHERE id = $1",
                              4, up, &r)) != DW_OK)
            goto out;
    } else {
        PQclear(r);
        r = NULL;
        const char *ip[4] = {def->name, def->environment_url, le_text, opts};
        if ((rc = dw_pg_query(control, "creating the job",
                              "INSERT INTO dwasync.job (name, slot_name, publication_name,"
                              " environment_url, legal_entities, options)"
                              " VALUES ($1, 'dwasync_' || $1, 'dwasync_' || $1, $2,"
                              " ARRAY(SELECT jsonb_array_elements_text($3::jsonb)), $4::jsonb)"
                              " RETURNING id",
                              4, ip, &r)) != DW_OK)
            goto out;
        job_id = dw_strdup(PQgetvalue(r, 0, 0));
        res.job_created = true;
    }
    PQclear(r);
    r = NULL;
    if ((rc = import_maps(control, def, job_id, doc, &res)) != DW_OK)
        goto out;
    rc = dw_pg_exec(control, "committing the import", "COMMIT");
    in_tx = false;
out:
    if (in_tx)
        (void)dw_pg_exec(control, "rolling back the import", "ROLLBACK");
    PQclear(r);
    free(job_id);
    free(le_text);
    free(opts);
    json_decref(doc);
    if (rc == DW_OK)
        *result = res;
    return rc;
}

/* Parses a jsonb column's text; NULL for SQL NULL. */
static json_t *col_json(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return json_loads(PQgetvalue(r, row, col), JSON_DECODE_ANY, NULL);
}

dw_rc dw_mapstore_load(PGconn *control, const char *job_name, struct dw_jobdef **out)
{
    PGresult *jr = NULL, *mr = NULL;
    json_t *doc = NULL;
    struct dw_jobdef *def = NULL;
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    const char *p[1] = {job_name};
    dw_rc rc = dw_pg_query(control, "reading the job",
                           "SELECT id, environment_url, to_jsonb(legal_entities), options"
                           " FROM dwasync.job WHERE name = $1",
                           1, p, &jr);
    if (rc != DW_OK)
        goto out;
    if (PQntuples(jr) == 0) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"job", job_name}), "job \"%s\" does not exist", job_name);
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    const char *ip[1] = {PQgetvalue(jr, 0, 0)};
    rc = dw_pg_query(control, "reading the table maps",
                     "SELECT g.name, m.id, m.name, m.sequence, m.source_schema, m.source_table,"
                     " m.target_entity_set, m.target_logical_name, m.key_mapping,"
                     " m.column_mappings, m.filter, m.options"
                     " FROM dwasync.table_map m JOIN dwasync.table_group g ON g.id = m.group_id"
                     " WHERE m.job_id = $1 ORDER BY g.position, g.id, m.sequence",
                     1, ip, &mr);
    if (rc != DW_OK)
        goto out;
    if (PQntuples(mr) == 0) {
        DW_LOGF(DW_LOG_ERROR,
                DW_FIELDS({"job", job_name},
                          {"hint", "Import a map file with \"dwasync map import FILE\"."}),
                "job \"%s\" has no table maps", job_name);
        rc = DW_ERR_STATE;
        goto out;
    }
    doc = json_object();
    json_t *job = json_object(), *groups = json_array(), *maps = NULL;
    json_object_set_new(doc, "format", json_integer(DW_MAPFILE_FORMAT));
    json_object_set_new(job, "name", json_string(job_name));
    json_object_set_new(job, "environment_url", json_string(PQgetvalue(jr, 0, 1)));
    json_object_set_new(job, "legal_entities", col_json(jr, 0, 2));
    json_object_set_new(job, "options", col_json(jr, 0, 3));
    json_object_set_new(doc, "job", job);
    json_object_set_new(doc, "groups", groups);
    const char *last_group = NULL;
    for (int i = 0; i < PQntuples(mr); i++) {
        const char *gname = PQgetvalue(mr, i, 0);
        if (last_group == NULL || strcmp(last_group, gname) != 0) {
            maps = json_array();
            json_array_append_new(groups, json_pack("{s:s, s:o}", "name", gname, "maps", maps));
            last_group = gname;
        }
        json_t *m = json_object();
        json_object_set_new(m, "name", json_string(PQgetvalue(mr, i, 2)));
        json_object_set_new(m, "sequence", json_integer(strtol(PQgetvalue(mr, i, 3), NULL, 10)));
        json_object_set_new(
            m, "source",
            json_pack("{s:s, s:s}", "schema", PQgetvalue(mr, i, 4), "table", PQgetvalue(mr, i, 5)));
        json_object_set_new(m, "target",
                            json_pack("{s:s, s:s}", "entity_set", PQgetvalue(mr, i, 6),
                                      "logical_name", PQgetvalue(mr, i, 7)));
        json_object_set_new(m, "key", col_json(mr, i, 8));
        json_object_set_new(m, "columns", col_json(mr, i, 9));
        json_t *f = col_json(mr, i, 10);
        if (f)
            json_object_set_new(m, "filter", f);
        json_object_set_new(m, "options", col_json(mr, i, 11));
        json_array_append_new(maps, m);
    }
    /* Through the parser: what the database holds is checked like a file. */
    if ((rc = dw_jobdef_parse(doc, &errors, &def)) != DW_OK) {
        DW_LOGF(DW_LOG_ERROR, DW_FIELDS({"job", job_name}), "stored table maps are invalid: %s",
                dw_buf_str(&errors));
        goto out;
    }
    for (int i = 0; i < PQntuples(mr); i++) {
        struct dw_tablemap *m = (struct dw_tablemap *)dw_jobdef_find_map(def, PQgetvalue(mr, i, 2));
        if (m)
            m->id = strtoll(PQgetvalue(mr, i, 1), NULL, 10);
    }
    *out = def;
out:
    PQclear(jr);
    PQclear(mr);
    json_decref(doc);
    dw_buf_cleanup(&errors);
    return rc;
}

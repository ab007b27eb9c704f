/* What dwasync knows of Dataverse's string lengths: recorded by `job start` from the
 * metadata it validates the maps with, read back with the maps (engine.c). */
#include <stdlib.h>
#include <string.h>

#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"
#include "dwasync/pg.h"

static const struct dw_entity_meta *meta_of(const struct dw_entity_meta *const *metas, size_t n,
                                            const char *logical_name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(metas[i]->logical_name, logical_name) == 0)
            return metas[i];
    return NULL;
}

static void add_length(json_t *rows, const struct dw_entity_meta *meta, const char *attribute)
{
    const struct dw_attr_meta *a = dw_entity_meta_attr(meta, attribute);
    if (a == NULL || (a->type != DW_ATTR_STRING && a->type != DW_ATTR_MEMO) || a->max_length <= 0)
        return;
    json_array_append_new(rows,
                          json_pack("{s:s, s:s, s:i}", "logical_name", meta->logical_name,
                                    "attribute", a->logical_name, "max_length", a->max_length));
}

dw_rc dw_job_maps_record_lengths(PGconn *control, const struct dw_jobdef *def,
                                 const struct dw_entity_meta *const *metas, size_t nmetas)
{
    json_t *rows = json_array();
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            const struct dw_entity_meta *meta = meta_of(metas, nmetas, m->logical_name);
            if (meta == NULL)
                continue;
            for (size_t c = 0; c < m->ncols; c++)
                if (m->cols[c].lookup == NULL)
                    add_length(rows, meta, m->cols[c].target);
            for (size_t k = 0; k < m->nkey; k++)
                if (m->key[k].kind == DW_KEYPART_COLUMN)
                    add_length(rows, meta, m->key[k].target);
        }
    }
    char *text = dw_json_dumps(rows);
    const char *params[] = {def->name, text};
    PGresult *res = NULL;
    /* Rows no longer mapped go; the others are inserted or updated (disjoint sets, so one
     * statement does both). */
    dw_rc rc = dw_pg_query(
        control, "recording the column lengths",
        "WITH j AS (SELECT id FROM dwasync.job WHERE name = $1),"
        " new AS (SELECT DISTINCT ON (r.logical_name, r.attribute) r.*"
        "           FROM jsonb_to_recordset($2::jsonb)"
        "                AS r(logical_name text, attribute text, max_length integer)),"
        " gone AS (DELETE FROM dwasync.target_max_length t USING j WHERE t.job_id = j.id"
        "            AND (t.logical_name, t.attribute) NOT IN"
        "                (SELECT logical_name, attribute FROM new))"
        " INSERT INTO dwasync.target_max_length (job_id, logical_name, attribute, max_length)"
        " SELECT j.id, n.logical_name, n.attribute, n.max_length FROM j, new n"
        " ON CONFLICT (job_id, logical_name, attribute)"
        " DO UPDATE SET max_length = EXCLUDED.max_length",
        2, params, &res);
    PQclear(res);
    free(text);
    json_decref(rows);
    return rc;
}

/*
 * Fuzz target for map files: the parser must report, never crash, on any document; a document
 * it accepts must come back from its normal form unchanged, and its rows of random shape
 * must map without crashing (the input's bytes after a NUL are a row for every map).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t doc_len = nul ? (size_t)(nul - data) : size;
    json_t *doc = json_loadb((const char *)data, doc_len, JSON_REJECT_DUPLICATES, NULL);
    if (doc == NULL)
        return 0;
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    struct dw_jobdef *def = NULL;
    if (dw_jobdef_parse(doc, &errors, &def) == DW_OK) {
        char *one = dw_jobdef_dump(def);
        json_t *again = json_loads(one, 0, NULL);
        struct dw_jobdef *def2 = NULL;
        if (again == NULL || dw_jobdef_parse(again, &errors, &def2) != DW_OK)
            abort(); /* the normal form must parse */
        char *two = dw_jobdef_dump(def2);
        if (strcmp(one, two) != 0)
            abort(); /* and be a fixed point */
        free(one);
        free(two);
        json_decref(again);
        dw_jobdef_free(def2);
        json_t *row = nul ? json_loadb((const char *)nul + 1, size - doc_len - 1, 0, NULL) : NULL;
        struct dw_job_maps *maps = NULL;
        dw_job_maps_from_def(def, &maps);
        if (json_is_object(row)) {
            const struct dw_jobdef *d = dw_job_maps_def(maps);
            struct dw_mapped_vec v = {0};
            for (size_t g = 0; g < d->ngroups; g++) {
                for (size_t i = 0; i < d->groups[g].nmaps; i++) {
                    const struct dw_tablemap *m = &d->groups[g].maps[i];
                    for (int op = DW_CHANGE_INSERT; op <= DW_CHANGE_DELETE; op++) {
                        struct dw_source_row r = {m->source_schema,
                                                  m->source_table,
                                                  (enum dw_change_op)op,
                                                  row,
                                                  row,
                                                  NULL};
                        (void)dw_mapping_map_row(maps, &r, &v);
                    }
                }
            }
            dw_mapped_vec_cleanup(&v);
        }
        json_decref(row);
        dw_job_maps_free(maps);
    }
    json_decref(doc);
    dw_buf_cleanup(&errors);
    return 0;
}

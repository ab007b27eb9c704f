/* Lifetime of mapping results (struct dw_mapped, struct dw_mapped_vec). */
#include <stdlib.h>
#include <string.h>

#include "dwasync/mapping.h"

static void mapped_cleanup(struct dw_mapped *m)
{
    free(m->target_id);
    free(m->error);
    free(m->write.entity_set);
    free(m->write.logical_name);
    json_decref(m->write.key);
    json_decref(m->write.body);
    memset(m, 0, sizeof *m);
}

void dw_mapped_vec_reset(struct dw_mapped_vec *v)
{
    for (size_t i = 0; i < v->len; i++)
        mapped_cleanup(&v->items[i]);
    v->len = 0;
}

void dw_mapped_vec_cleanup(struct dw_mapped_vec *v)
{
    dw_mapped_vec_reset(v);
    free(v->items);
    v->items = NULL;
    v->cap = 0;
}

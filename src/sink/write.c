/* Lifetime of struct dw_write (sink.h). */
#include <stdlib.h>
#include <string.h>

#include "dwasync/sink.h"

void dw_write_cleanup(struct dw_write *w)
{
    free(w->entity_set);
    free(w->logical_name);
    json_decref(w->key);
    json_decref(w->body);
    memset(w, 0, sizeof *w);
}

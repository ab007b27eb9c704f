/*
 * The write vocabulary's few functions (see write.h): releasing what a write holds, and
 * the names the error table gives to error classes.
 */
#include "dwasync/write.h"

#include <stdlib.h>
#include <string.h>

void dw_write_cleanup(struct dw_write *w)
{
    free(w->entity_set);
    free(w->logical_name);
    json_decref(w->key);
    json_decref(w->body);
    json_decref(w->options);
    memset(w, 0, sizeof *w);
}

const char *dw_error_class_name(enum dw_error_class c)
{
    switch (c) {
    case DW_ERRCLASS_NONE:
        return "none";
    case DW_ERRCLASS_MAPPING:
        return "mapping";
    case DW_ERRCLASS_VALIDATION:
        return "validation";
    case DW_ERRCLASS_MISSING_PARENT:
        return "missing_parent";
    case DW_ERRCLASS_DUPLICATE:
        return "duplicate";
    case DW_ERRCLASS_PRIVILEGE:
        return "privilege";
    case DW_ERRCLASS_CONFLICT:
        return "conflict";
    case DW_ERRCLASS_TRANSIENT:
        return "transient";
    case DW_ERRCLASS_UNKNOWN:
        return "unknown";
    }
    return "unknown";
}

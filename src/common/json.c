#include "dwasync/json.h"

#include "dwasync/alloc.h"

static int append_chunk(const char *data, size_t size, void *user)
{
    return dw_buf_append(user, data, size) == DW_OK ? 0 : -1;
}

char *dw_json_dumps(const json_t *value)
{
    char *s = json_dumps(value, DW_JSON_FLAGS | JSON_ENCODE_ANY);
    if (s == NULL)
        dw_oom(0);
    return s;
}

char *dw_json_canonical(const json_t *value)
{
    char *s = json_dumps(value, DW_JSON_FLAGS | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (s == NULL)
        dw_oom(0);
    return s;
}

dw_rc dw_json_append(struct dw_buf *b, const json_t *value)
{
    return json_dump_callback(value, append_chunk, b, DW_JSON_FLAGS | JSON_ENCODE_ANY) == 0
               ? DW_OK
               : DW_ERR_RANGE;
}

/* The text of each dw_rc code and the process exit status it maps to (see rc.h). */
#include "dwasync/rc.h"

#include <stddef.h>

static const char *const rc_names[DW_ERR__COUNT] = {
    [DW_OK] = "ok",
    [DW_ERR_INVALID] = "invalid input",
    [DW_ERR_CONFIG] = "configuration error",
    [DW_ERR_IO] = "i/o error",
    [DW_ERR_PROTOCOL] = "protocol error",
    [DW_ERR_PG] = "postgres error",
    [DW_ERR_HTTP] = "http error",
    [DW_ERR_AUTH] = "authentication error",
    [DW_ERR_NOT_FOUND] = "not found",
    [DW_ERR_RANGE] = "value out of range",
    [DW_ERR_MAPPING] = "mapping error",
    [DW_ERR_SECRET] = "secret error",
    [DW_ERR_TIMEOUT] = "timeout",
    [DW_ERR_RETRY] = "transient failure",
    [DW_ERR_STATE] = "wrong state",
    [DW_ERR_VERSION] = "version mismatch",
    [DW_ERR_UNSUPPORTED] = "not supported",
    [DW_ERR_INTERRUPTED] = "interrupted",
    [DW_ERR_EXISTS] = "already exists",
};

const char *dw_rc_str(dw_rc rc)
{
    if ((unsigned)rc >= DW_ERR__COUNT || rc_names[rc] == NULL)
        return "unknown error";
    return rc_names[rc];
}

int dw_rc_exit_status(dw_rc rc)
{
    return rc == DW_OK ? 0 : 1;
}

/* Names of row change operations, as logs, decode output and error rows spell them (see
 * change.h). */
#include "dwasync/change.h"

const char *dw_change_op_name(enum dw_change_op op)
{
    switch (op) {
    case DW_CHANGE_INSERT:
        return "insert";
    case DW_CHANGE_UPDATE:
        return "update";
    case DW_CHANGE_DELETE:
        return "delete";
    case DW_CHANGE_TRUNCATE:
        return "truncate";
    }
    return "unknown";
}

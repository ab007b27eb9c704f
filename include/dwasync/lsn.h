/*
 * lsn.h - PostgreSQL log sequence numbers.
 *
 * An LSN is a 64-bit WAL position, written "%X/%X" (high and low 32 bits in hex) in every
 * message dwasync prints, as PostgreSQL does.
 */
#ifndef DWASYNC_LSN_H
#define DWASYNC_LSN_H

#include <stdint.h>

#include "dwasync/rc.h"

typedef uint64_t dw_lsn;

#define DW_LSN_INVALID ((dw_lsn)0)

/* Room for "FFFFFFFF/FFFFFFFF" and the terminator. */
#define DW_LSN_STRLEN 18

/* Parses "X/X"; DW_ERR_INVALID on anything else. */
dw_rc dw_lsn_parse(const char *s, dw_lsn *out);

/* Formats into out (at least DW_LSN_STRLEN bytes) and returns out. */
char *dw_lsn_format(dw_lsn lsn, char out[DW_LSN_STRLEN]);

/* The two halves for printf("%X/%X", DW_LSN_ARGS(lsn)). */
#define DW_LSN_ARGS(lsn) (unsigned)((lsn) >> 32), (unsigned)(lsn)

#endif

/* Parsing and formatting of LSNs in PostgreSQL's "%X/%X" text form (see lsn.h). */
#include "dwasync/lsn.h"

#include <stdio.h>

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads 1 to 8 hex digits; returns the number of characters used, 0 if none. */
static int read_hex32(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    int i = 0;
    for (; i < 8 && hex_digit(s[i]) >= 0; i++)
        v = (v << 4) | (uint32_t)hex_digit(s[i]);
    *out = v;
    return i;
}

dw_rc dw_lsn_parse(const char *s, dw_lsn *out)
{
    uint32_t hi, lo;
    int n = read_hex32(s, &hi);
    if (n == 0 || s[n] != '/')
        return DW_ERR_INVALID;
    s += n + 1;
    n = read_hex32(s, &lo);
    if (n == 0 || s[n] != '\0')
        return DW_ERR_INVALID;
    *out = ((dw_lsn)hi << 32) | lo;
    return DW_OK;
}

char *dw_lsn_format(dw_lsn lsn, char out[DW_LSN_STRLEN])
{
    snprintf(out, DW_LSN_STRLEN, "%X/%X", DW_LSN_ARGS(lsn));
    return out;
}

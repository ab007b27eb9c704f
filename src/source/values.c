/* PostgreSQL text values to typed JSON (see values.h). */
#include "dwasync/values.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/pg.h"

/* Built-in type oids (pg_type.dat); stable across PostgreSQL versions. */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_CHAR = 18,
    OID_NAME = 19,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_TEXT = 25,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_BPCHAR = 1042,
    OID_VARCHAR = 1043,
    OID_DATE = 1082,
    OID_TIME = 1083,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
    OID_INTERVAL = 1186,
    OID_TIMETZ = 1266,
    OID_NUMERIC = 1700,
    OID_UUID = 2950,
    OID_JSONB = 3802,
};

/* Element type of the built-in arrays whose elements are not plain text; 0 otherwise. */
static uint32_t builtin_array_elem(uint32_t oid)
{
    switch (oid) {
    case 1000:
        return OID_BOOL;
    case 1001:
        return OID_BYTEA;
    case 1002:
        return OID_CHAR;
    case 1003:
        return OID_NAME;
    case 1005:
        return OID_INT2;
    case 1007:
        return OID_INT4;
    case 1009:
        return OID_TEXT;
    case 1014:
        return OID_BPCHAR;
    case 1015:
        return OID_VARCHAR;
    case 1016:
        return OID_INT8;
    case 1021:
        return OID_FLOAT4;
    case 1022:
        return OID_FLOAT8;
    case 1028:
        return OID_OID;
    case 1115:
        return OID_TIMESTAMP;
    case 1182:
        return OID_DATE;
    case 1183:
        return OID_TIME;
    case 1185:
        return OID_TIMESTAMPTZ;
    case 1187:
        return OID_INTERVAL;
    case 1231:
        return OID_NUMERIC;
    case 1270:
        return OID_TIMETZ;
    case 2951:
        return OID_UUID;
    case 199:
        return OID_JSON;
    case 3807:
        return OID_JSONB;
    default:
        return 0;
    }
}

struct typent {
    uint32_t oid;
    char kind; /* 'd' domain, 'e' enum, 'a' array, 't' text form */
    uint32_t base;
    UT_hash_handle hh;
};

struct dw_types {
    struct typent *map;
};

struct dw_types *dw_types_new(void)
{
    return dw_calloc(1, sizeof(struct dw_types));
}

void dw_types_free(struct dw_types *t)
{
    if (t == NULL)
        return;
    struct typent *e, *tmp;
    HASH_ITER(hh, t->map, e, tmp)
    {
        HASH_DEL(t->map, e);
        free(e);
    }
    free(t);
}

void dw_types_add(struct dw_types *t, uint32_t oid, char kind, uint32_t base_oid)
{
    struct typent *e;
    HASH_FIND(hh, t->map, &oid, sizeof oid, e);
    if (e == NULL) {
        e = dw_calloc(1, sizeof *e);
        e->oid = oid;
        HASH_ADD(hh, t->map, oid, sizeof(uint32_t), e);
    }
    e->kind = kind;
    e->base = base_oid;
}

bool dw_types_has(const struct dw_types *t, uint32_t oid)
{
    struct typent *e;
    HASH_FIND(hh, t->map, &oid, sizeof oid, e);
    return e != NULL;
}

void dw_types_foreach(const struct dw_types *t,
                      void (*fn)(void *user, uint32_t oid, char kind, uint32_t base_oid),
                      void *user)
{
    for (const struct typent *e = t->map; e; e = e->hh.next)
        fn(user, e->oid, e->kind, e->base);
}

dw_rc dw_types_load(PGconn *conn, struct dw_types *t)
{
    /* Simple query protocol only: a walsender accepts nothing else. */
    PGresult *res = PQexec(conn, "SELECT oid, typtype, typbasetype, typelem FROM pg_type"
                                 " WHERE oid >= 16384 AND (typtype IN ('d', 'e')"
                                 " OR (typcategory = 'A' AND typelem <> 0))");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        dw_rc rc = dw_pg_fail(conn, res, "reading user-defined types");
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        uint32_t oid = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        char typtype = PQgetvalue(res, i, 1)[0];
        uint32_t base = (uint32_t)strtoul(PQgetvalue(res, i, 2), NULL, 10);
        uint32_t elem = (uint32_t)strtoul(PQgetvalue(res, i, 3), NULL, 10);
        if (typtype == 'd')
            dw_types_add(t, oid, 'd', base);
        else if (typtype == 'e')
            dw_types_add(t, oid, 'e', OID_TEXT);
        else
            dw_types_add(t, oid, 'a', elem);
    }
    PQclear(res);
    return DW_OK;
}

/* What a value is written as: a scalar type oid, or (is_array) the element type. */
static uint32_t resolve(const struct dw_values_options *o, uint32_t oid, bool *is_array)
{
    *is_array = false;
    for (int depth = 0; depth < 16; depth++) {
        if (oid < 16384) {
            uint32_t elem = builtin_array_elem(oid);
            *is_array = elem != 0;
            return elem ? elem : oid;
        }
        struct typent *e = NULL;
        if (o && o->types)
            HASH_FIND(hh, o->types->map, &oid, sizeof oid, e);
        if (e == NULL)
            return OID_TEXT;
        if (e->kind == 'a') {
            *is_array = true;
            return e->base;
        }
        oid = e->base; /* a domain over a domain resolves step by step */
    }
    return OID_TEXT;
}

/* resolve(), and for an array its element type resolved too (a domain or an enum). */
static uint32_t resolve_value(const struct dw_values_options *o, uint32_t oid, bool *is_array)
{
    oid = resolve(o, oid, is_array);
    if (*is_array) {
        bool nested;
        oid = resolve(o, oid, &nested);
        if (nested)
            oid = OID_TEXT;
    }
    return oid;
}

dw_rc dw_values_options_init(struct dw_values_options *o, const char *zone)
{
    o->types = NULL;
    o->tz_utc = true;
    o->max_value_bytes = 0;
    if (zone == NULL || zone[0] == '\0' || strcmp(zone, "UTC") == 0 ||
        strcmp(zone, "Etc/UTC") == 0 || strcmp(zone, "GMT") == 0)
        return DW_OK;
    /* Only names from the zoneinfo database: anything else would silently mean UTC. */
    bool ok = strstr(zone, "..") == NULL && zone[0] != '/';
    if (ok) {
        char *path = dw_asprintf("/usr/share/zoneinfo/%s", zone);
        ok = access(path, R_OK) == 0;
        free(path);
    }
    if (!ok) {
        DW_ERROR("unknown time zone \"%s\" in [source] timezone", zone);
        return DW_ERR_CONFIG;
    }
    setenv("TZ", zone, 1);
    tzset();
    o->tz_utc = false;
    return DW_OK;
}

/* --- text checks ------------------------------------------------------------------------ */

/* Valid UTF-8 without NUL bytes, overlong forms or surrogates. */
static bool utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x01 && c < 0x80) {
            p++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false; /* NUL, continuation byte, C0/C1 or F5..FF */
        }
        if ((size_t)(end - p) <= need)
            return false;
        for (size_t i = 1; i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        p += need + 1;
    }
    return true;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The JSON number grammar (RFC 8259), which Postgres's numeric and float output obey. */
static bool json_number_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return false;
    if (s[i] == '0')
        i++;
    else if (is_digit(s[i]))
        while (i < n && is_digit(s[i]))
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    return i == n;
}

static bool integer_ok(const char *s, size_t n)
{
    size_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    if (i >= n || n - i > 20)
        return false;
    for (; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

static bool eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* --- dates and times ------------------------------------------------------------------- */

/* a / b rounded down (b > 0), and the remainder in [0, b): what the calendar needs before
 * 1970 as after. Cannot overflow, INT64_MIN included. */
static int64_t floor_divmod(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        q--;
        r += b;
    }
    *rem = r;
    return q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t yoe, era = floor_divmod(y, 400, &yoe);
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t doe, era = floor_divmod(z, 146097, &doe);
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly or at least ndigits decimal digits. */
static bool rd_num(const char **p, const char *end, int min_digits, int max_digits, int64_t *v)
{
    int64_t x = 0;
    int n = 0;
    while (*p < end && is_digit(**p) && n < max_digits) {
        x = x * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    *v = x;
    return n >= min_digits;
}

static bool rd_char(const char **p, const char *end, char c)
{
    if (*p < end && **p == c) {
        (*p)++;
        return true;
    }
    return false;
}

struct pgtime {
    int64_t year; /* astronomical */
    int month, day, hour, min, sec;
    const char *frac; /* digits after the point, borrowed */
    size_t frac_len;
    bool has_offset;
    int offset_s; /* east of UTC */
};

/* "[-]HH[:MM[:SS]]" after the sign. */
static bool parse_offset(const char **p, const char *end, struct pgtime *t)
{
    int sign = 0;
    if (rd_char(p, end, '+'))
        sign = 1;
    else if (rd_char(p, end, '-'))
        sign = -1;
    else
        return true;
    int64_t h, m = 0, s = 0;
    if (!rd_num(p, end, 2, 2, &h))
        return false;
    if (rd_char(p, end, ':') && !rd_num(p, end, 2, 2, &m))
        return false;
    if (rd_char(p, end, ':') && !rd_num(p, end, 2, 2, &s))
        return false;
    t->has_offset = true;
    t->offset_s = sign * (int)(h * 3600 + m * 60 + s);
    return true;
}

static bool parse_date_part(const char **p, const char *end, struct pgtime *t)
{
    int64_t y, m, d;
    if (!rd_num(p, end, 4, 9, &y) || !rd_char(p, end, '-') || !rd_num(p, end, 2, 2, &m) ||
        !rd_char(p, end, '-') || !rd_num(p, end, 2, 2, &d))
        return false;
    if (m < 1 || m > 12 || d < 1 || d > 31 || y < 1)
        return false;
    t->year = y;
    t->month = (int)m;
    t->day = (int)d;
    return true;
}

static bool parse_time_part(const char **p, const char *end, struct pgtime *t)
{
    int64_t h, mi, s;
    if (!rd_num(p, end, 2, 2, &h) || !rd_char(p, end, ':') || !rd_num(p, end, 2, 2, &mi) ||
        !rd_char(p, end, ':') || !rd_num(p, end, 2, 2, &s))
        return false;
    if (h > 24 || mi > 59 || s > 60)
        return false;
    t->hour = (int)h;
    t->min = (int)mi;
    t->sec = (int)s;
    t->frac = NULL;
    t->frac_len = 0;
    if (rd_char(p, end, '.')) {
        t->frac = *p;
        while (*p < end && is_digit(**p))
            (*p)++;
        t->frac_len = (size_t)(*p - t->frac);
        if (t->frac_len == 0 || t->frac_len > 6)
            return false;
    }
    return true;
}

/* " BC" suffix: 1 BC is astronomical year 0. */
static bool parse_era(const char **p, const char *end, struct pgtime *t)
{
    if (end - *p == 3 && memcmp(*p, " BC", 3) == 0) {
        t->year = 1 - t->year;
        *p = end;
    }
    return *p == end;
}

/*
 * Digit writers for the hot path: snprintf was a third of the time of `decode`, so dates,
 * times and numbers that we format ourselves are written digit by digit.
 */
static char *put_digits(char *p, uint64_t v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < min_digits)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_2d(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

/* ISO 8601 years: four digits, "+" beyond 9999, "-" before year 0 (astronomical). */
static char *put_year(char *p, int64_t y)
{
    if (y > 9999)
        *p++ = '+';
    else if (y < 0)
        *p++ = '-';
    return put_digits(p, (uint64_t)(y < 0 ? -y : y), 4);
}

static char *put_ymd(char *p, int64_t y, int m, int d)
{
    p = put_year(p, y);
    *p++ = '-';
    p = put_2d(p, m);
    *p++ = '-';
    return put_2d(p, d);
}

/* Writes a UTC timestamp, in double quotes when quoted (JSON) and bare otherwise. */
static dw_rc put_timestamp_utc(struct dw_buf *b, int64_t secs, const char *frac, size_t frac_len,
                               bool quoted)
{
    int64_t rem, y, days = floor_divmod(secs, 86400, &rem);
    int m, d;
    civil_from_days(days, &y, &m, &d);
    char tmp[64], *p = tmp;
    if (quoted)
        *p++ = '"';
    p = put_ymd(p, y, m, d);
    *p++ = 'T';
    p = put_2d(p, (int)(rem / 3600));
    *p++ = ':';
    p = put_2d(p, (int)(rem / 60 % 60));
    *p++ = ':';
    p = put_2d(p, (int)(rem % 60));
    if (frac_len) {
        *p++ = '.';
        memcpy(p, frac, frac_len); /* at most 6 digits: parse_time_part checked */
        p += frac_len;
    }
    *p++ = 'Z';
    if (quoted)
        *p++ = '"';
    return dw_buf_append(b, tmp, (size_t)(p - tmp));
}

dw_rc dw_time_append_iso(struct dw_buf *out, int64_t unix_us)
{
    int64_t us, secs = floor_divmod(unix_us, 1000000, &us);
    char frac[8];
    char *end = put_digits(frac, (uint64_t)us, 6);
    return put_timestamp_utc(out, secs, frac, (size_t)(end - frac), false);
}

static dw_rc put_infinity(struct dw_buf *b, const char *s, size_t n, bool *done)
{
    *done = eq(s, n, "infinity") || eq(s, n, "-infinity");
    return *done ? dw_buf_put_json_string(b, s, n) : DW_OK;
}

static dw_rc put_date(struct dw_buf *b, const char *s, size_t n, const char **why)
{
    bool done;
    dw_rc rc = put_infinity(b, s, n, &done);
    if (done || rc != DW_OK)
        return rc;
    struct pgtime t;
    const char *p = s, *end = s + n;
    if (!parse_date_part(&p, end, &t) || !parse_era(&p, end, &t)) {
        *why = "malformed date";
        return DW_ERR_INVALID;
    }
    char tmp[32], *w = tmp;
    *w++ = '"';
    w = put_ymd(w, t.year, t.month, t.day);
    *w++ = '"';
    return dw_buf_append(b, tmp, (size_t)(w - tmp));
}

static dw_rc put_timestamp(struct dw_buf *b, const char *s, size_t n, bool with_tz,
                           const struct dw_values_options *o, const char **why)
{
    bool done;
    dw_rc rc = put_infinity(b, s, n, &done);
    if (done || rc != DW_OK)
        return rc;
    struct pgtime t = {0};
    const char *p = s, *end = s + n;
    if (!parse_date_part(&p, end, &t) || !rd_char(&p, end, ' ') || !parse_time_part(&p, end, &t) ||
        !parse_offset(&p, end, &t) || !parse_era(&p, end, &t) || t.has_offset != with_tz) {
        *why = with_tz ? "malformed timestamp with time zone" : "malformed timestamp";
        return DW_ERR_INVALID;
    }
    int64_t secs = days_from_civil(t.year, t.month, t.day) * 86400 + t.hour * 3600 + t.min * 60 +
                   t.sec - t.offset_s;
    if (!with_tz && !(o && o->tz_utc) && o != NULL) {
        struct tm tm = {.tm_year = (int)(t.year - 1900),
                        .tm_mon = t.month - 1,
                        .tm_mday = t.day,
                        .tm_hour = t.hour,
                        .tm_min = t.min,
                        .tm_sec = t.sec,
                        .tm_isdst = -1};
        errno = 0;
        time_t local = mktime(&tm);
        if (local == (time_t)-1 && errno != 0) {
            *why = "timestamp outside the range of the source time zone";
            return DW_ERR_RANGE;
        }
        secs = (int64_t)local;
    }
    return put_timestamp_utc(b, secs, t.frac, t.frac_len, true);
}

/* time: as is (already ISO); timetz: "+HH" offsets spelled "+HH:MM". */
static dw_rc put_time(struct dw_buf *b, const char *s, size_t n, bool with_tz, const char **why)
{
    struct pgtime t = {0};
    const char *p = s, *end = s + n;
    if (!parse_time_part(&p, end, &t) || !parse_offset(&p, end, &t) || p != end ||
        t.has_offset != with_tz) {
        *why = "malformed time";
        return DW_ERR_INVALID;
    }
    if (!with_tz)
        return dw_buf_put_json_string(b, s, n);
    int off = t.offset_s < 0 ? -t.offset_s : t.offset_s;
    dw_rc rc = dw_buf_printf(b, "\"%02d:%02d:%02d", t.hour, t.min, t.sec);
    if (rc == DW_OK && t.frac_len) {
        rc = dw_buf_putc(b, '.');
        if (rc == DW_OK)
            rc = dw_buf_append(b, t.frac, t.frac_len);
    }
    if (rc == DW_OK)
        rc = dw_buf_printf(b, "%c%02d:%02d", t.offset_s < 0 ? '-' : '+', off / 3600, off / 60 % 60);
    if (rc == DW_OK && off % 60)
        rc = dw_buf_printf(b, ":%02d", off % 60);
    if (rc == DW_OK)
        rc = dw_buf_putc(b, '"');
    return rc;
}

/* --- bytea ------------------------------------------------------------------------------ */

static int hexval(char c)
{
    return OPENSSL_hexchar2int((unsigned char)c);
}

/* "\x0a1b..." (bytea_output = hex, which stream.h sets) to a base64 JSON string. */
static dw_rc put_bytea(struct dw_buf *b, const char *s, size_t n, const char **why)
{
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2 != 0) {
        *why = "bytea not in hex output format";
        return DW_ERR_INVALID;
    }
    size_t bytes = (n - 2) / 2;
    dw_rc rc = dw_buf_reserve(b, (bytes + 2) / 3 * 4 + 3);
    if (rc != DW_OK)
        return rc;
    b->data[b->len++] = '"';
    /* Chunks of a multiple of 3 bytes encode to base64 that simply concatenates. */
    unsigned char chunk[768];
    for (size_t i = 0; i < bytes;) {
        size_t k = 0;
        for (; k < sizeof chunk && i < bytes; k++, i++) {
            int hi = hexval(s[2 + 2 * i]), lo = hexval(s[3 + 2 * i]);
            if (hi < 0 || lo < 0) {
                *why = "bytea not in hex output format";
                return DW_ERR_INVALID;
            }
            chunk[k] = (unsigned char)(hi << 4 | lo);
        }
        b->len += (size_t)EVP_EncodeBlock((unsigned char *)b->data + b->len, chunk, (int)k);
    }
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    return DW_OK;
}

/* --- embedded JSON ---------------------------------------------------------------------- */

/*
 * A validating minifier for json/jsonb text. Hand-written rather than jansson because
 * jansson turns numbers into doubles and would change 12345678901234567890.5; this keeps
 * every token exactly as written and only drops insignificant whitespace (json values keep
 * the newlines of their input, which would break one-object-per-line output).
 */
struct jmin {
    const char *p, *end;
    struct dw_buf *b;
    int depth;
};

static void jskip(struct jmin *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool jvalue(struct jmin *j);

static bool jstring(struct jmin *j)
{
    const char *start = j->p++;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return false;
            if (*j->p == 'u') {
                if (j->end - j->p < 5)
                    return false;
                for (int i = 1; i <= 4; i++)
                    if (hexval(j->p[i]) < 0)
                        return false;
                /* \u0000 would put a NUL into every consumer's string */
                if (memcmp(j->p + 1, "0000", 4) == 0)
                    return false;
                j->p += 4;
            } else if (!strchr("\"\\/bfnrt", *j->p)) {
                return false;
            }
        }
        j->p++;
    }
    if (j->p >= j->end)
        return false;
    j->p++;
    return dw_buf_append(j->b, start, (size_t)(j->p - start)) == DW_OK;
}

static bool jcontainer(struct jmin *j, char open, char close)
{
    if (++j->depth > 256 || dw_buf_putc(j->b, open) != DW_OK)
        return false;
    j->p++;
    jskip(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return dw_buf_putc(j->b, close) == DW_OK;
    }
    for (;;) {
        jskip(j);
        if (open == '{') {
            if (j->p >= j->end || *j->p != '"' || !jstring(j))
                return false;
            jskip(j);
            if (j->p >= j->end || *j->p != ':' || dw_buf_putc(j->b, ':') != DW_OK)
                return false;
            j->p++;
        }
        if (!jvalue(j))
            return false;
        jskip(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            if (dw_buf_putc(j->b, ',') != DW_OK)
                return false;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return dw_buf_putc(j->b, close) == DW_OK;
        }
        return false;
    }
}

static bool jvalue(struct jmin *j)
{
    jskip(j);
    if (j->p >= j->end)
        return false;
    switch (*j->p) {
    case '{':
        return jcontainer(j, '{', '}');
    case '[':
        return jcontainer(j, '[', ']');
    case '"':
        return jstring(j);
    default: {
        const char *start = j->p;
        while (j->p < j->end &&
               (strchr("+-.eE", *j->p) || is_digit(*j->p) || (*j->p >= 'a' && *j->p <= 'z')))
            j->p++;
        size_t n = (size_t)(j->p - start);
        if (!(eq(start, n, "true") || eq(start, n, "false") || eq(start, n, "null") ||
              json_number_ok(start, n)))
            return false;
        return dw_buf_append(j->b, start, n) == DW_OK;
    }
    }
}

static dw_rc put_json(struct dw_buf *b, const char *s, size_t n, const char **why)
{
    struct jmin j = {s, s + n, b, 0};
    if (!jvalue(&j) || (jskip(&j), j.p != j.end)) {
        *why = "malformed json";
        return DW_ERR_INVALID;
    }
    return DW_OK;
}

/* --- arrays ----------------------------------------------------------------------------- */

static dw_rc put_scalar(struct dw_buf *b, uint32_t oid, const char *s, size_t n,
                        const struct dw_values_options *o, const char **why);

/*
 * Postgres array output: "{a,b}", nested "{{1,2},{3,4}}", an optional "[l:u]=" dimension
 * prefix (skipped: JSON arrays start at 0), elements unquoted or double-quoted with
 * backslash escapes, unquoted NULL for null.
 */
static dw_rc put_array(struct dw_buf *b, uint32_t elem, const char *s, size_t n,
                       const struct dw_values_options *o, const char **why)
{
    const char *p = s, *end = s + n;
    dw_rc rc = DW_OK;
    struct dw_buf unesc;
    dw_buf_init(&unesc, 0);
    if (p < end && *p == '[') {
        const char *eqs = memchr(p, '=', n);
        if (eqs == NULL)
            goto bad;
        p = eqs + 1;
    }
    int depth = 0;
    bool expect_elem = true;
    while (p < end) {
        char c = *p;
        if (c == '{') {
            if (!expect_elem || ++depth > 6)
                goto bad;
            if ((rc = dw_buf_putc(b, '[')) != DW_OK)
                goto out;
            p++;
            if (p < end && *p == '}')
                expect_elem = false;
            continue;
        }
        if (c == '}') {
            if (depth == 0 || expect_elem)
                goto bad;
            depth--;
            if ((rc = dw_buf_putc(b, ']')) != DW_OK)
                goto out;
            p++;
            if (depth == 0)
                break;
            continue;
        }
        if (c == ',') {
            if (expect_elem || depth == 0)
                goto bad;
            if ((rc = dw_buf_putc(b, ',')) != DW_OK)
                goto out;
            expect_elem = true;
            p++;
            continue;
        }
        if (!expect_elem || depth == 0)
            goto bad;
        if (c == '"') {
            const char *start = ++p;
            bool escaped = false;
            while (p < end && *p != '"') {
                if (*p == '\\') {
                    escaped = true;
                    p++;
                }
                p++;
            }
            if (p >= end)
                goto bad;
            const char *val = start;
            size_t vlen = (size_t)(p - start);
            if (escaped) {
                dw_buf_reset(&unesc);
                for (const char *q = start; q < p; q++) {
                    if (*q == '\\')
                        q++;
                    if ((rc = dw_buf_putc(&unesc, *q)) != DW_OK)
                        goto out;
                }
                val = unesc.data;
                vlen = unesc.len;
            }
            p++;
            if ((rc = put_scalar(b, elem, val, vlen, o, why)) != DW_OK)
                goto out;
        } else {
            const char *start = p;
            while (p < end && *p != ',' && *p != '}' && *p != '{' && *p != '"')
                p++;
            size_t vlen = (size_t)(p - start);
            if (vlen == 0)
                goto bad;
            rc = eq(start, vlen, "NULL") ? dw_buf_append(b, "null", 4)
                                         : put_scalar(b, elem, start, vlen, o, why);
            if (rc != DW_OK)
                goto out;
        }
        expect_elem = false;
    }
    if (depth != 0 || p != end)
        goto bad;
    goto out;
bad:
    *why = "malformed array";
    rc = DW_ERR_INVALID;
out:
    dw_buf_cleanup(&unesc);
    return rc;
}

/* --- scalars ---------------------------------------------------------------------------- */

static dw_rc put_string(struct dw_buf *b, const char *s, size_t n, const char **why)
{
    if (!utf8_ok(s, n)) {
        *why = memchr(s, 0, n) ? "NUL byte in text" : "invalid UTF-8";
        return DW_ERR_INVALID;
    }
    return dw_buf_put_json_string(b, s, n);
}

static dw_rc put_scalar(struct dw_buf *b, uint32_t oid, const char *s, size_t n,
                        const struct dw_values_options *o, const char **why)
{
    switch (oid) {
    case OID_BOOL:
        if (eq(s, n, "t"))
            return dw_buf_append(b, "true", 4);
        if (eq(s, n, "f"))
            return dw_buf_append(b, "false", 5);
        *why = "malformed boolean";
        return DW_ERR_INVALID;
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        if (!integer_ok(s, n)) {
            *why = "malformed integer";
            return DW_ERR_INVALID;
        }
        return dw_buf_append(b, s, n);
    case OID_NUMERIC:
    case OID_FLOAT4:
    case OID_FLOAT8:
        if (json_number_ok(s, n))
            return dw_buf_append(b, s, n);
        if (eq(s, n, "NaN") || eq(s, n, "Infinity") || eq(s, n, "-Infinity")) {
            *why = oid == OID_NUMERIC ? "numeric NaN or infinity has no JSON representation"
                                      : "float NaN or infinity has no JSON representation";
            return DW_ERR_RANGE;
        }
        *why = "malformed number";
        return DW_ERR_INVALID;
    case OID_BPCHAR:
        while (n > 0 && s[n - 1] == ' ')
            n--;
        return put_string(b, s, n, why);
    case OID_DATE:
        return put_date(b, s, n, why);
    case OID_TIMESTAMP:
        return put_timestamp(b, s, n, false, o, why);
    case OID_TIMESTAMPTZ:
        return put_timestamp(b, s, n, true, o, why);
    case OID_TIME:
        return put_time(b, s, n, false, why);
    case OID_TIMETZ:
        return put_time(b, s, n, true, why);
    case OID_BYTEA:
        return put_bytea(b, s, n, why);
    case OID_JSON:
    case OID_JSONB:
        if (!utf8_ok(s, n)) {
            *why = memchr(s, 0, n) ? "NUL byte in json" : "invalid UTF-8";
            return DW_ERR_INVALID;
        }
        return put_json(b, s, n, why);
    default:
        return put_string(b, s, n, why);
    }
}

dw_rc dw_value_append_json(struct dw_buf *out, uint32_t type_oid, const char *data, size_t len,
                           const struct dw_values_options *o, const char **why)
{
    const char *dummy;
    bool is_array;
    size_t mark = out->len;
    uint32_t oid = resolve_value(o, type_oid, &is_array);
    if (why == NULL)
        why = &dummy;
    *why = "value too large";
    dw_rc rc =
        is_array ? put_array(out, oid, data, len, o, why) : put_scalar(out, oid, data, len, o, why);
    if (rc != DW_OK)
        dw_buf_truncate(out, mark);
    return rc;
}

/* --- jansson form ----------------------------------------------------------------------- */

/*
 * numeric -> json_integer when integral and within int64, json_real when at most
 * DW_JSON_REAL_DIGITS significant digits (json.h dumps it back exactly), else NULL.
 */
static json_t *numeric_json(const char *s, size_t n)
{
    char tmp[128];
    if (n >= sizeof tmp)
        return NULL;
    const char *dot = memchr(s, '.', n);
    size_t int_len = dot ? (size_t)(dot - s) : n;
    bool integral = true;
    for (size_t i = int_len + 1; dot && i < n; i++)
        integral = integral && s[i] == '0';
    if (memchr(s, 'e', n) || memchr(s, 'E', n))
        integral = false;
    if (integral) {
        memcpy(tmp, s, int_len);
        tmp[int_len] = '\0';
        errno = 0;
        char *endp;
        long long v = strtoll(tmp, &endp, 10);
        if (errno == 0 && *endp == '\0')
            return json_integer(v);
    }
    /* Significant digits: from the first non-zero digit to the last non-zero one. */
    int first = -1, last = -1, pos = 0;
    for (size_t i = 0; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        if (!is_digit(s[i]))
            continue;
        if (s[i] != '0') {
            if (first < 0)
                first = pos;
            last = pos;
        }
        pos++;
    }
    if (first >= 0 && last - first + 1 > DW_JSON_REAL_DIGITS)
        return NULL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL);
    if (!isfinite(d))
        return NULL;
    return json_real(d);
}

/*
 * A numeric array from the fast writer's output (only brackets, commas, null and numbers as
 * Postgres wrote them) with every element converted by numeric_json(): jansson's parser
 * would put every element through a double. NULL when an element is unrepresentable.
 */
static json_t *numeric_array_json(const char *s, size_t n)
{
    json_t *stack[8] = {NULL}, *result = NULL;
    int depth = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '[') {
            if (depth == 8)
                goto fail;
            stack[depth++] = json_array();
            i++;
        } else if (c == ']') {
            if (depth == 0)
                goto fail;
            json_t *a = stack[--depth];
            if (depth == 0) {
                result = a;
            } else {
                json_array_append_new(stack[depth - 1], a);
            }
            i++;
        } else if (c == ',') {
            i++;
        } else {
            size_t j = i;
            while (j < n && s[j] != ',' && s[j] != ']')
                j++;
            json_t *v = eq(s + i, j - i, "null") ? json_null() : numeric_json(s + i, j - i);
            if (v == NULL || depth == 0) {
                json_decref(v);
                goto fail;
            }
            json_array_append_new(stack[depth - 1], v);
            i = j;
        }
    }
    if (depth == 0 && result)
        return result;
fail:
    for (int k = 0; k < depth; k++)
        json_decref(stack[k]);
    json_decref(result);
    return NULL;
}

static char *value_error(const char *col, const char *data, size_t len, const char *why)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    size_t shown = len > 100 ? 100 : len;
    dw_buf_printf(&b, "column \"%s\": %s: value ", col, why);
    dw_buf_put_json_string(&b, data, shown);
    if (shown < len)
        dw_buf_printf(&b, " (%zu bytes, truncated)", len);
    return dw_buf_steal(&b);
}

/*
 * The JSON value of the commonest scalar types built directly, as put_scalar() would write
 * and json_loadb() read it back, without the text round trip; NULL when the slow path must
 * decide (other types, or a value it will refuse with a reason).
 */
static json_t *direct_json(uint32_t oid, const char *s, size_t n)
{
    switch (oid) {
    case OID_BOOL:
        return eq(s, n, "t") ? json_true() : eq(s, n, "f") ? json_false() : NULL;
    case OID_INT2:
    case OID_INT4:
    case OID_INT8: {
        char num[24];
        if (!integer_ok(s, n) || n >= sizeof num)
            return NULL;
        memcpy(num, s, n);
        num[n] = '\0';
        errno = 0;
        long long v = strtoll(num, NULL, 10);
        return errno ? NULL : json_integer(v);
    }
    case OID_BPCHAR:
        while (n > 0 && s[n - 1] == ' ')
            n--;
        /* fall through */
    case OID_TEXT:
    case OID_VARCHAR:
        return utf8_ok(s, n) ? json_stringn_nocheck(s, n) : NULL;
    default:
        return NULL;
    }
}

static dw_rc datum_json(const struct dw_rel_column *col, const struct dw_datum *d,
                        const struct dw_values_options *o, struct dw_buf *scratch, json_t **out,
                        char **error)
{
    if (d->kind == DW_DATUM_NULL) {
        *out = json_null();
        return DW_OK;
    }
    bool is_array;
    uint32_t oid = resolve_value(o, col->type_oid, &is_array);
    if (!is_array && oid == OID_NUMERIC && json_number_ok(d->data, d->len)) {
        if ((*out = numeric_json(d->data, d->len)) != NULL)
            return DW_OK;
        *error = value_error(col->name, d->data, d->len,
                             "numeric has more significant digits than JSON keeps exactly");
        return DW_ERR_RANGE;
    }
    if (!is_array && d->kind == DW_DATUM_TEXT && (*out = direct_json(oid, d->data, d->len)))
        return DW_OK;
    const char *why;
    dw_buf_reset(scratch);
    dw_rc rc = dw_value_append_json(scratch, col->type_oid, d->data, d->len, o, &why);
    if (rc != DW_OK) {
        *error = value_error(col->name, d->data, d->len, why);
        return DW_ERR_RANGE;
    }
    json_error_t jerr;
    if (is_array && oid == OID_NUMERIC) {
        if ((*out = numeric_array_json(scratch->data, scratch->len)) != NULL)
            return DW_OK;
        *error = value_error(col->name, d->data, d->len,
                             "numeric has more significant digits than JSON keeps exactly");
        return DW_ERR_RANGE;
    }
    *out = json_loadb(scratch->data, scratch->len, JSON_DECODE_ANY, &jerr);
    if (*out == NULL) {
        *error = value_error(col->name, d->data, d->len, "value cannot be represented in JSON");
        return DW_ERR_RANGE;
    }
    return DW_OK;
}

void dw_row_json_cleanup(struct dw_row_json *r)
{
    json_decref(r->new_row);
    json_decref(r->old_row);
    json_decref(r->unchanged);
    json_decref(r->key);
    r->new_row = r->old_row = r->unchanged = r->key = NULL;
}

/* Fills obj from a tuple; key_only keeps replica-identity columns ('K' old images). */
/*
 * Converts a tuple's columns into obj. Strict (first_error NULL), the first value that
 * cannot be converted fails it. Lenient, such a value is kept as its text (a JSON string),
 * a value over o->max_value_bytes is left out of the image, and
 * the first such problem is set in *first_error (heap).
 */
static dw_rc tuple_json(const struct dw_relation *rel, const struct dw_tuple *t, bool key_only,
                        const struct dw_values_options *o, struct dw_buf *scratch, json_t *obj,
                        json_t *unchanged, char **error, char **first_error)
{
    for (int i = 0; i < t->ncols && i < rel->ncols; i++) {
        const struct dw_rel_column *col = &rel->cols[i];
        const struct dw_datum *d = &t->cols[i];
        if (key_only && !col->key)
            continue;
        if (d->kind == DW_DATUM_UNCHANGED) {
            if (unchanged)
                json_array_append_new(unchanged, json_string(col->name));
            continue;
        }
        char *why = NULL;
        json_t *v = NULL;
        dw_rc rc = DW_OK;
        /* Checked before anything is copied: the value is never converted nor quoted. */
        if (o && o->max_value_bytes > 0 && d->kind != DW_DATUM_NULL &&
            (int64_t)d->len > o->max_value_bytes) {
            why = dw_asprintf("column \"%s\": value too large (%zu bytes)", col->name,
                              (size_t)d->len);
            rc = DW_ERR_RANGE;
        } else {
            rc = datum_json(col, d, o, scratch, &v, &why);
        }
        if (rc != DW_OK && first_error == NULL) {
            *error = why;
            return rc;
        }
        if (rc != DW_OK) {
            if (*first_error == NULL)
                *first_error = why;
            else
                free(why);
            /* Left out, and not listed as unchanged: a replay of this change must not
             * succeed without the value (the mapping says the column is not in the row). */
            if (v == NULL && o && o->max_value_bytes > 0 && (int64_t)d->len > o->max_value_bytes)
                continue;
            v = json_stringn_nocheck(d->data, d->len);
        }
        json_object_set_new(obj, col->name, v);
    }
    return DW_OK;
}

static dw_rc row_json(const struct dw_change *c, const struct dw_values_options *opts,
                      struct dw_row_json *out, char **error, char **first_error)
{
    struct dw_row_json r = {NULL, NULL, json_array(), json_object()};
    struct dw_buf scratch;
    dw_rc rc = DW_OK;
    dw_buf_init(&scratch, 0);
    if (c->op == DW_CHANGE_TRUNCATE || c->rel == NULL) {
        *error = dw_strdup("a truncate has no row");
        rc = DW_ERR_INVALID;
        goto out;
    }
    const struct dw_relation *rel = c->rel;
    if (c->op != DW_CHANGE_DELETE) {
        r.new_row = json_object();
        if ((rc = tuple_json(rel, &c->new_tuple, false, opts, &scratch, r.new_row, r.unchanged,
                             error, first_error)) != DW_OK)
            goto out;
    }
    if (c->old_kind) {
        r.old_row = json_object();
        if ((rc = tuple_json(rel, &c->old_tuple, c->old_kind == 'K', opts, &scratch, r.old_row,
                             NULL, error, first_error)) != DW_OK)
            goto out;
    }
    for (int i = 0; i < rel->ncols; i++) {
        if (!rel->cols[i].key)
            continue;
        json_t *v = r.new_row ? json_object_get(r.new_row, rel->cols[i].name) : NULL;
        if (v == NULL && r.old_row)
            v = json_object_get(r.old_row, rel->cols[i].name);
        if (v)
            json_object_set(r.key, rel->cols[i].name, v);
    }
out:
    dw_buf_cleanup(&scratch);
    if (rc != DW_OK) {
        dw_row_json_cleanup(&r);
        return rc;
    }
    *out = r;
    return DW_OK;
}

dw_rc dw_change_row_json(const struct dw_change *c, const struct dw_values_options *opts,
                         struct dw_row_json *out, char **error)
{
    return row_json(c, opts, out, error, NULL);
}

void dw_change_type(const struct dw_change *c, const struct dw_values_options *opts,
                    struct dw_typed_change *out)
{
    *out = (struct dw_typed_change){.change = c};
    if (c->op != DW_CHANGE_TRUNCATE)
        out->rc = dw_change_row_json_lenient(c, opts, &out->row, &out->problem);
}

void dw_typed_change_cleanup(struct dw_typed_change *t)
{
    dw_row_json_cleanup(&t->row);
    free(t->problem);
    t->problem = NULL;
}

dw_rc dw_change_row_json_lenient(const struct dw_change *c, const struct dw_values_options *opts,
                                 struct dw_row_json *out, char **problem)
{
    char *first = NULL, *error = NULL;
    dw_rc rc = row_json(c, opts, out, &error, &first);
    if (rc != DW_OK) {
        free(first);
        *problem = error;
        return rc;
    }
    *problem = first;
    return DW_OK;
}

/* --- decode lines ----------------------------------------------------------------------- */

struct line_errors {
    struct dw_buf *b; /* where "errors" entries accumulate, as JSON text */
    int n;
};

static dw_rc put_datum(struct dw_buf *out, const struct dw_rel_column *col,
                       const struct dw_datum *d, const struct dw_values_options *o,
                       struct line_errors *errs)
{
    if (d->kind == DW_DATUM_NULL)
        return dw_buf_append(out, "null", 4);
    const char *why;
    dw_rc rc = dw_value_append_json(out, col->type_oid, d->data, d->len, o, &why);
    if (rc == DW_OK)
        return DW_OK;
    /* Not dropped: the text goes out as a string (invalid bytes escaped) with the reason. */
    if (errs->n++)
        dw_buf_putc(errs->b, ',');
    dw_buf_puts(errs->b, "{\"column\":");
    dw_buf_put_json_string(errs->b, col->name, strlen(col->name));
    dw_buf_puts(errs->b, ",\"error\":");
    dw_buf_put_json_string(errs->b, why, strlen(why));
    dw_buf_putc(errs->b, '}');
    struct dw_buf tmp;
    dw_buf_init(&tmp, 0);
    for (uint32_t i = 0; i < d->len; i++) {
        unsigned char ch = (unsigned char)d->data[i];
        if (ch >= 0x80 || ch == 0)
            dw_buf_printf(&tmp, "\\x%02x", ch);
        else
            dw_buf_putc(&tmp, (char)ch);
    }
    rc = utf8_ok(d->data, d->len) ? dw_buf_put_json_string(out, d->data, d->len)
                                  : dw_buf_put_json_string(out, tmp.data, tmp.len);
    dw_buf_cleanup(&tmp);
    return rc;
}

static dw_rc put_tuple(struct dw_buf *out, const struct dw_relation *rel, const struct dw_tuple *t,
                       int mode, const struct dw_values_options *o, struct line_errors *errs)
{
    /* mode: 0 every sent column, 1 key columns only ('K' image) */
    dw_rc rc = dw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; rc == DW_OK && i < t->ncols; i++) {
        const struct dw_rel_column *col = &rel->cols[i];
        if (t->cols[i].kind == DW_DATUM_UNCHANGED || (mode == 1 && !col->key))
            continue;
        if (!first)
            dw_buf_putc(out, ',');
        first = false;
        rc = dw_buf_put_json_string(out, col->name, strlen(col->name));
        if (rc == DW_OK)
            rc = dw_buf_putc(out, ':');
        if (rc == DW_OK)
            rc = put_datum(out, col, &t->cols[i], o, errs);
    }
    if (rc == DW_OK)
        rc = dw_buf_putc(out, '}');
    return rc;
}

static dw_rc put_key(struct dw_buf *out, const struct dw_change *c,
                     const struct dw_values_options *o, struct line_errors *errs)
{
    const struct dw_relation *rel = c->rel;
    dw_rc rc = dw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; rc == DW_OK && i < rel->ncols; i++) {
        if (!rel->cols[i].key)
            continue;
        const struct dw_datum *d = NULL;
        if (c->op != DW_CHANGE_DELETE && c->new_tuple.cols[i].kind != DW_DATUM_UNCHANGED)
            d = &c->new_tuple.cols[i];
        else if (c->old_kind && c->old_tuple.cols[i].kind != DW_DATUM_UNCHANGED)
            d = &c->old_tuple.cols[i];
        if (d == NULL)
            continue;
        if (!first)
            dw_buf_putc(out, ',');
        first = false;
        rc = dw_buf_put_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
        if (rc == DW_OK)
            rc = dw_buf_putc(out, ':');
        if (rc == DW_OK)
            rc = put_datum(out, &rel->cols[i], d, o, errs);
    }
    if (rc == DW_OK)
        rc = dw_buf_putc(out, '}');
    return rc;
}

static dw_rc put_header(struct dw_buf *out, const struct dw_change *c,
                        const struct dw_relation *rel)
{
    static const char hex[] = "0123456789ABCDEF";
    char tmp[96], *p = tmp;
    memcpy(p, "{\"lsn\":\"", 8);
    p += 8;
    /* "%X/%X" by hand: this runs once per change */
    for (int half = 1; half >= 0; half--) {
        uint32_t v = (uint32_t)(c->lsn >> (32 * half));
        int shift = 28;
        while (shift > 0 && ((v >> shift) & 15) == 0)
            shift -= 4;
        for (; shift >= 0; shift -= 4)
            *p++ = hex[(v >> shift) & 15];
        *p++ = half ? '/' : '"';
    }
    memcpy(p, ",\"xid\":", 7);
    p = put_digits(p + 7, c->xid, 1);
    memcpy(p, ",\"commit_time\":\"", 16);
    p += 16;
    dw_rc rc = dw_buf_append(out, tmp, (size_t)(p - tmp));
    if (rc == DW_OK)
        rc = dw_time_append_iso(out, c->commit_time_us);
    if (rc == DW_OK)
        rc = dw_buf_puts(out, "\",\"op\":\"");
    if (rc == DW_OK)
        rc = dw_buf_puts(out, dw_change_op_name(c->op));
    if (rc == DW_OK)
        rc = dw_buf_puts(out, "\",\"schema\":");
    if (rc == DW_OK)
        rc = dw_buf_put_json_string(out, rel->schema, strlen(rel->schema));
    if (rc == DW_OK)
        rc = dw_buf_puts(out, ",\"table\":");
    if (rc == DW_OK)
        rc = dw_buf_put_json_string(out, rel->name, strlen(rel->name));
    return rc;
}

dw_rc dw_change_append_json(struct dw_buf *out, const struct dw_change *c,
                            const struct dw_values_options *o)
{
    dw_rc rc = DW_OK;
    size_t mark = out->len;
    if (c->op == DW_CHANGE_TRUNCATE) {
        for (int i = 0; rc == DW_OK && i < c->ntruncated; i++) {
            rc = put_header(out, c, c->truncated[i]);
            if (rc == DW_OK)
                rc = dw_buf_printf(out,
                                   ",\"key\":null,\"new\":null,\"old\":null,\"unchanged\":[],"
                                   "\"cascade\":%s,\"restart_identity\":%s}\n",
                                   (c->truncate_options & 1) ? "true" : "false",
                                   (c->truncate_options & 2) ? "true" : "false");
        }
        goto out;
    }
    struct dw_buf errbuf;
    struct line_errors errs = {&errbuf, 0};
    dw_buf_init(&errbuf, 0);
    rc = put_header(out, c, c->rel);
    if (rc == DW_OK)
        rc = dw_buf_puts(out, ",\"key\":");
    if (rc == DW_OK)
        rc = put_key(out, c, o, &errs);
    if (rc == DW_OK)
        rc = dw_buf_puts(out, ",\"new\":");
    if (rc == DW_OK)
        rc = c->op == DW_CHANGE_DELETE ? dw_buf_puts(out, "null")
                                       : put_tuple(out, c->rel, &c->new_tuple, 0, o, &errs);
    if (rc == DW_OK)
        rc = dw_buf_puts(out, ",\"old\":");
    if (rc == DW_OK)
        rc = c->old_kind
                 ? put_tuple(out, c->rel, &c->old_tuple, c->old_kind == 'K' ? 1 : 0, o, &errs)
                 : dw_buf_puts(out, "null");
    if (rc == DW_OK)
        rc = dw_buf_puts(out, ",\"unchanged\":[");
    bool first = true;
    for (int i = 0; rc == DW_OK && c->op != DW_CHANGE_DELETE && i < c->new_tuple.ncols; i++) {
        if (c->new_tuple.cols[i].kind != DW_DATUM_UNCHANGED)
            continue;
        if (!first)
            dw_buf_putc(out, ',');
        first = false;
        rc = dw_buf_put_json_string(out, c->rel->cols[i].name, strlen(c->rel->cols[i].name));
    }
    if (rc == DW_OK)
        rc = dw_buf_putc(out, ']');
    if (rc == DW_OK && errs.n) {
        rc = dw_buf_puts(out, ",\"errors\":[");
        if (rc == DW_OK)
            rc = dw_buf_append(out, errbuf.data, errbuf.len);
        if (rc == DW_OK)
            rc = dw_buf_putc(out, ']');
    }
    if (rc == DW_OK)
        rc = dw_buf_append(out, "}\n", 2);
    dw_buf_cleanup(&errbuf);
out:
    if (rc != DW_OK)
        dw_buf_truncate(out, mark);
    return rc;
}

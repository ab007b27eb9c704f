/*
 * Dataverse key addressing (see dvkey.h): OData literals, percent-encoding, the key segment
 * and $filter fallback of a key object, and target ids. Pure string work into a dw_buf.
 */
#include "dwasync/dvkey.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"

static bool identifier_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* A loop, not strspn(): glibc's builds a table from the set on every call, and this runs
 * for every name of every write. */
bool dw_dvkey_identifier_ok(const char *s)
{
    if (s == NULL || !identifier_start((unsigned char)*s))
        return false;
    size_t n = 1;
    while (identifier_start((unsigned char)s[n]) || (s[n] >= '0' && s[n] <= '9'))
        n++;
    return s[n] == '\0' && n <= 128;
}

bool dw_dvkey_names_ok(const json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!dw_dvkey_names_ok(json_array_get(v, i)))
                return false;
        return true;
    }
    if (!json_is_object(v))
        return true;
    if (dw_dvkey_is_ref(v)) {
        const json_t *key = json_object_get(v, "key");
        const char *attr;
        const json_t *part;
        if (!dw_dvkey_identifier_ok(json_string_value(json_object_get(v, "$ref"))))
            return false;
        json_object_foreach((json_t *)key, attr, part)
        {
            if (!dw_dvkey_identifier_ok(attr) || !dw_dvkey_names_ok(part))
                return false;
        }
        return true;
    }
    const char *name;
    const json_t *m;
    json_object_foreach((json_t *)v, name, m)
    {
        if (!dw_dvkey_names_ok(m))
            return false;
    }
    return true;
}

bool dw_dvkey_is_guid(const char *s)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    for (size_t g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, s++)
            if (!isxdigit((unsigned char)*s))
                return false;
        if (g < 4 && *s++ != '-')
            return false;
    }
    return *s == '\0';
}

bool dw_dvkey_is_ref(const json_t *v)
{
    /* Read by iterating, which is cheaper than hashing two names: this runs for every
     * lookup of every row. */
    if (!json_is_object(v) || json_object_size(v) < 2)
        return false;
    bool set = false, key = false;
    for (void *it = json_object_iter((json_t *)v); it;
         it = json_object_iter_next((json_t *)v, it)) {
        const char *name = json_object_iter_key(it);
        const json_t *value = json_object_iter_value(it);
        set |= strcmp(name, "$ref") == 0 && json_is_string(value);
        key |= strcmp(name, "key") == 0 && json_is_object(value);
    }
    return set && key;
}

bool dw_dvkey_is_lookup_part(const char *name)
{
    size_t n = strlen(name);
    return n > 7 && name[0] == '_' && strcmp(name + n - 6, "_value") == 0;
}

bool dw_dvkey_addressable(const json_t *key)
{
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)key, name, v)
    {
        if (json_is_string(v) && strpbrk(json_string_value(v), DW_DVKEY_UNADDRESSABLE))
            return false;
    }
    return true;
}

dw_rc dw_dvkey_literal(struct dw_buf *b, const json_t *v, bool bare_guid)
{
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (bare_guid && dw_dvkey_is_guid(s))
            return dw_buf_append(b, s, len);
        dw_rc rc = dw_buf_putc(b, '\'');
        for (size_t i = 0; i < len && rc == DW_OK; i++)
            rc = s[i] == '\'' ? dw_buf_puts(b, "''") : dw_buf_putc(b, s[i]);
        return rc == DW_OK ? dw_buf_putc(b, '\'') : rc;
    }
    case JSON_INTEGER:
        return dw_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return dw_buf_printf(b, "%.15g", json_real_value(v));
    case JSON_TRUE:
        return dw_buf_puts(b, "true");
    case JSON_FALSE:
        return dw_buf_puts(b, "false");
    default:
        return DW_ERR_INVALID;
    }
}

/*
 * Written here rather than with curl_easy_escape(): that needs a handle, and it encodes the
 * single quote too, which makes every key in a URL (and in the logs) unreadable.
 */
dw_rc dw_dvkey_encode(struct dw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < len && rc == DW_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '\'') {
            rc = dw_buf_putc(b, (char)c);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = dw_buf_append(b, esc, sizeof esc);
        }
    }
    return rc;
}

dw_rc dw_dvkey_encode_path(struct dw_buf *b, const char *s)
{
    dw_rc rc = DW_OK;
    for (const char *p = s; *p && rc == DW_OK; p++) {
        unsigned char c = (unsigned char)*p;
        bool escape = c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]);
        if (escape || (c > ' ' && c < 0x7f && strchr("\"#<>\\^`{|}%", c) == NULL))
            rc = dw_buf_putc(b, (char)c);
        else
            rc = dw_dvkey_encode(b, p, 1);
    }
    return rc;
}

static dw_rc put(struct dw_buf *b, const char *s, size_t len, bool encode)
{
    return encode ? dw_dvkey_encode(b, s, len) : dw_buf_append(b, s, len);
}

/* Writes "name<sep>literal" pairs joined by joiner, percent-encoding names and literals. */
static dw_rc key_pairs(struct dw_buf *b, const json_t *key, const char *sep, const char *joiner,
                       bool encode)
{
    const char *name;
    const json_t *v;
    struct dw_buf lit;
    dw_rc rc = DW_OK;
    bool first = true;
    dw_buf_init(&lit, 0);
    if (!json_is_object(key) || json_object_size(key) == 0) {
        rc = DW_ERR_INVALID;
        goto out;
    }
    json_object_foreach((json_t *)key, name, v)
    {
        if (!dw_dvkey_identifier_ok(name)) {
            rc = DW_ERR_INVALID;
            goto out;
        }
        dw_buf_reset(&lit);
        if ((rc = dw_dvkey_literal(&lit, v, dw_dvkey_is_lookup_part(name))) != DW_OK)
            goto out;
        if ((!first && (rc = dw_buf_puts(b, joiner)) != DW_OK) ||
            (rc = put(b, name, strlen(name), encode)) != DW_OK ||
            (rc = dw_buf_puts(b, sep)) != DW_OK ||
            (rc = put(b, lit.data, lit.len, encode)) != DW_OK)
            goto out;
        first = false;
    }
out:
    dw_buf_cleanup(&lit);
    return rc;
}

dw_rc dw_dvkey_segment(struct dw_buf *b, const json_t *key, bool encode)
{
    return key_pairs(b, key, "=", ",", encode);
}

dw_rc dw_dvkey_filter(struct dw_buf *b, const json_t *key)
{
    return key_pairs(b, key, "%20eq%20", "%20and%20", true);
}

dw_rc dw_dvkey_append_target_id(struct dw_buf *b, const char *entity_set, const json_t *key)
{
    size_t mark = b->len;
    dw_rc rc;
    if ((rc = dw_buf_puts(b, entity_set)) != DW_OK || (rc = dw_buf_putc(b, '(')) != DW_OK ||
        (rc = dw_json_append_canonical(b, key)) != DW_OK || (rc = dw_buf_putc(b, ')')) != DW_OK)
        dw_buf_truncate(b, mark);
    return rc;
}

char *dw_dvkey_target_id(const char *entity_set, const json_t *key)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    if (dw_dvkey_append_target_id(&b, entity_set, key) != DW_OK)
        dw_oom(0); /* only a key past the buffer's gigabyte cap gets here */
    return dw_buf_steal(&b);
}

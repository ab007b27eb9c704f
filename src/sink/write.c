/*
 * The write vocabulary's few functions (see write.h): a body split into its text and its
 * references and put back together, releasing what a write holds, the shape of write
 * options, and the names the error table gives to error classes.
 */
#include "dwasync/write.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/dvkey.h"
#include "dwasync/json.h"

/* Room made for a body's text while it is written: most fit at once. */
#define BODY_RESERVE 1024

bool dw_write_is_bind_ref(const char *name, const json_t *v)
{
    size_t n = strlen(name);
    return n > 11 && strcmp(name + n - 11, "@odata.bind") == 0 && dw_dvkey_is_ref(v);
}

struct dw_refs *dw_refs_hold(struct dw_refs *refs)
{
    if (refs)
        refs->holders++;
    return refs;
}

void dw_refs_drop(struct dw_refs *refs)
{
    if (refs == NULL || --refs->holders > 0)
        return;
    for (size_t i = 0; i < refs->n; i++)
        json_decref(refs->items[i].ref);
    free(refs);
}

const json_t *dw_refs_get(const struct dw_refs *refs, const char *name)
{
    for (size_t i = 0; i < dw_refs_count(refs); i++)
        if (strcmp(refs->items[i].name, name) == 0)
            return refs->items[i].ref;
    return NULL;
}

/* The refs of body's n members bound by reference objects, whose names take names bytes
 * with their terminators. */
static struct dw_refs *refs_of(json_t *body, size_t n, size_t names)
{
    struct dw_refs *refs = dw_malloc(sizeof *refs + n * sizeof refs->items[0] + names);
    refs->holders = 1;
    refs->n = 0;
    char *at = (char *)&refs->items[n];
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        if (!dw_write_is_bind_ref(name, v))
            continue;
        size_t len = strlen(name) + 1;
        memcpy(at, name, len);
        refs->items[refs->n++] = (struct dw_ref){at, json_incref(v)};
        at += len;
    }
    return refs;
}

void dw_write_set_body(struct dw_write *w, json_t *body)
{
    dw_text_drop(w->body);
    dw_refs_drop(w->refs);
    w->body = NULL;
    w->refs = NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        return;
    }
    const char *name;
    json_t *v;
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_reserve(&b, BODY_RESERVE);
    size_t nrefs = 0, names = 0;
    json_object_foreach(body, name, v)
    {
        if (!dw_write_is_bind_ref(name, v)) {
            (void)dw_json_append_member(&b, name, v, b.len == 0);
            continue;
        }
        nrefs++;
        names += strlen(name) + 1;
    }
    w->body = dw_text_new(b.data, b.len);
    w->refs = nrefs ? refs_of(body, nrefs, names) : NULL;
    dw_buf_cleanup(&b);
    json_decref(body);
}

json_t *dw_write_body(const struct dw_write *w)
{
    if (w->body == NULL)
        return NULL;
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_putc(&b, '{');
    (void)dw_buf_append(&b, w->body->data, w->body->len);
    (void)dw_buf_putc(&b, '}');
    json_t *body = json_loadb(b.data, b.len, JSON_ALLOW_NUL, NULL);
    dw_buf_cleanup(&b);
    for (size_t i = 0; body && i < dw_refs_count(w->refs); i++)
        json_object_set(body, w->refs->items[i].name, w->refs->items[i].ref);
    return body;
}

bool dw_write_tag_ok(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
    return n > 0 && n <= DW_WRITE_TAG_MAX && s[n] == '\0';
}

static bool bypass_value_ok(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && (strcmp(s, "CustomSync") == 0 || strcmp(s, "CustomAsync") == 0);
}

bool dw_write_options_ok(const json_t *options)
{
    const char *name;
    json_t *v;
    if (options == NULL)
        return true;
    if (!json_is_object(options))
        return false;
    json_object_foreach((json_t *)options, name, v)
    {
        bool ok = false;
        if (strcmp(name, "bypass_logic") == 0) {
            ok = json_array_size(v) > 0 && json_array_size(v) <= 2;
            for (size_t i = 0; ok && i < json_array_size(v); i++)
                ok = bypass_value_ok(json_array_get(v, i));
        } else if (strcmp(name, "suppress_duplicate_detection") == 0 ||
                   strcmp(name, "suppress_flows") == 0) {
            ok = json_is_boolean(v);
        } else if (strcmp(name, "tag") == 0) {
            ok = json_is_string(v) && dw_write_tag_ok(json_string_value(v));
        }
        if (!ok)
            return false;
    }
    return true;
}

void dw_write_cleanup(struct dw_write *w)
{
    free(w->entity_set);
    free(w->logical_name);
    json_decref(w->key);
    dw_text_drop(w->body);
    dw_refs_drop(w->refs);
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

/*
 * Resolution of a row: the reference objects in its key and in its body's "@odata.bind"
 * members become GUIDs or "/<set>(<key>)" addresses (through the parent-id cache), a key
 * that cannot be put in a URL is replaced by the row's GUID or turns the write into a POST.
 * The caller's key and body are never modified.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvkey.h"

/* Nesting of reference objects inside reference keys (company inside group inside ...). */
#define MAX_REF_DEPTH 4

static enum res resolve_key(struct dw_sink *s, struct row *r, const json_t *key, int depth,
                            json_t **out);

/*
 * The GUID of the row a reference object names. RES_FAIL has set the row's result. When
 * not_found_ok, a missing row gives RES_READY with *guid NULL (the row's own key).
 */
enum res dw_sink_ref_guid(struct dw_sink *s, struct row *r, const char *set, const json_t *rkey,
                          bool not_found_ok, char **guid)
{
    struct guid_entry *g = dw_sink_guid_get(s, set, rkey);
    size_t idlen = strlen(g->id) + 1;
    r->used = dw_realloc(r->used, r->used_len + idlen);
    memcpy(r->used + r->used_len, g->id, idlen);
    r->used_len += idlen;
    switch (g->state) {
    case ST_PENDING:
    case ST_INFLIGHT:
        free(r->wait_id);
        r->wait_id = dw_strdup(g->id);
        return RES_WAIT;
    case ST_OK:
        *guid = dw_strdup(g->guid);
        return RES_READY;
    case ST_NOTFOUND:
        if (not_found_ok) {
            *guid = NULL;
            return RES_READY;
        }
        if (r->op == DW_WRITE_DELETE) {
            /* A row keyed by a parent that is gone is gone too (or cascaded with it): a
             * redelivered child delete is done, not a missing parent (README invariant 2,
             * idempotent apply). */
            dw_sink_finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, 404, "", "");
            return RES_FAIL;
        }
        free(r->missing);
        r->missing = dw_sink_ref_display(set, rkey);
        {
            char *msg = dw_asprintf("A record with the specified key values does not exist in "
                                    "%s (parent %s)",
                                    set, r->missing);
            dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MISSING_PARENT, 404,
                               "0x80048d02", msg);
            free(msg);
        }
        return RES_FAIL;
    case ST_FAILED:
        dw_sink_finish_row(s, r, g->fail.status, g->fail.cls, g->fail.http, g->fail.code,
                           g->fail.message);
        return RES_FAIL;
    }
    return RES_WAIT;
}

/* Resolves the key of a reference object and then its GUID. */
static enum res resolve_ref(struct dw_sink *s, struct row *r, const json_t *ref, int depth,
                            char **set_out, json_t **rkey_out, char **guid)
{
    const char *set = json_string_value(json_object_get(ref, "$ref"));
    json_t *rkey = NULL;
    enum res res = resolve_key(s, r, json_object_get(ref, "key"), depth + 1, &rkey);
    if (res == RES_READY && guid)
        res = r->atomic && depth == 0 ? dw_sink_atomic_ref_guid(s, r, ref, set, rkey, guid)
                                      : dw_sink_ref_guid(s, r, set, rkey, false, guid);
    if (res == RES_READY) {
        if (depth == 0)
            dw_sink_parents_note(guid ? &r->keyrefs : &r->binds, set, rkey);
        *set_out = dw_strdup(set);
        *rkey_out = rkey;
    } else {
        json_decref(rkey);
    }
    return res;
}

/* Whether every value of a key is a scalar: then it is its own resolved form. */
static bool key_is_plain(const json_t *key)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)key, name, v)
    {
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
            return false;
    }
    return true;
}

static enum res resolve_key(struct dw_sink *s, struct row *r, const json_t *key, int depth,
                            json_t **out)
{
    const char *name;
    json_t *v;
    if (depth > MAX_REF_DEPTH || !json_is_object(key) || json_object_size(key) == 0) {
        dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "",
                           "a key is empty, not an object, or nests references too deeply");
        return RES_FAIL;
    }
    if (key_is_plain(key)) {
        *out = json_incref((json_t *)key); /* shared, never modified */
        return RES_READY;
    }
    json_t *rkey = json_object();
    json_object_foreach((json_t *)key, name, v)
    {
        if (dw_dvkey_is_ref(v)) {
            char *set = NULL, *guid = NULL;
            json_t *inner = NULL;
            enum res res = resolve_ref(s, r, v, depth, &set, &inner, &guid);
            if (res != RES_READY) {
                json_decref(rkey);
                return res;
            }
            json_object_set_new(rkey, name, json_string(guid));
            free(set);
            free(guid);
            json_decref(inner);
        } else if (json_is_string(v) || json_is_number(v) || json_is_boolean(v)) {
            json_object_set(rkey, name, v);
        } else {
            char *msg = dw_asprintf("key part \"%s\" is not a scalar or a reference", name);
            dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "", msg);
            free(msg);
            json_decref(rkey);
            return RES_FAIL;
        }
    }
    *out = rkey;
    return RES_READY;
}

/*
 * Writes each of the row's refs out as a body member "<nav>@odata.bind":"/<set>(<key>)", or
 * "/<set>(<guid>)" when the parent's key cannot be put in a URL (or a Content-ID inside an
 * atomic group), into *out in refs order: the write itself is never modified (sink.h), and
 * what is sent is its body followed by these (dw_sink_put_body_members()). *out is NULL for
 * a row without refs.
 */
static enum res resolve_body(struct dw_sink *s, struct row *r, char **out)
{
    *out = NULL;
    if (dw_refs_count(r->refs) == 0)
        return RES_READY;
    struct dw_buf binds;
    dw_buf_init(&binds, 0);
    for (size_t i = 0; i < r->refs->n; i++) {
        const char *name = r->refs->items[i].name;
        const json_t *v = r->refs->items[i].ref;
        char *set = NULL;
        json_t *pkey = NULL;
        enum res res = resolve_ref(s, r, v, 0, &set, &pkey, NULL);
        if (res == RES_READY) {
            struct dw_buf b;
            dw_buf_init(&b, 0);
            if (dw_dvkey_addressable(pkey)) {
                (void)dw_buf_putc(&b, '/');
                (void)dw_buf_puts(&b, set);
                (void)dw_buf_putc(&b, '(');
                (void)dw_dvkey_segment(&b, pkey, true);
                (void)dw_buf_putc(&b, ')');
            } else {
                char *guid = NULL;
                res = r->atomic ? dw_sink_atomic_ref_guid(s, r, v, set, pkey, &guid)
                                : dw_sink_ref_guid(s, r, set, pkey, false, &guid);
                if (res == RES_READY && guid[0] == '$')
                    (void)dw_buf_puts(&b, guid); /* a Content-ID reference */
                else if (res == RES_READY)
                    (void)dw_buf_printf(&b, "/%s(%s)", set, guid);
                free(guid);
            }
            if (res == RES_READY) {
                if (binds.len)
                    (void)dw_buf_putc(&binds, ',');
                (void)dw_buf_put_json_string(&binds, name, strlen(name));
                (void)dw_buf_putc(&binds, ':');
                (void)dw_buf_put_json_string(&binds, dw_buf_str(&b), b.len);
            }
            dw_buf_cleanup(&b);
        }
        free(set);
        json_decref(pkey);
        if (res != RES_READY) {
            dw_buf_cleanup(&binds);
            return res;
        }
    }
    *out = dw_buf_steal(&binds);
    return RES_READY;
}

/* Adds the key attributes to the body of a POST (only for unaddressable keys). */
static enum res post_body(struct dw_sink *s, struct row *r)
{
    const char *name;
    json_t *v;
    char *sent = dw_sink_body_text(r); /* the caller's write is never modified */
    json_t *own = json_loads(sent, JSON_ALLOW_NUL, NULL);
    free(sent);
    json_decref(r->rbody);
    r->rbody = own ? own : json_object();
    json_object_foreach(r->key, name, v)
    {
        if (!dw_dvkey_is_lookup_part(name)) {
            json_object_set(r->rbody, name, v);
            continue;
        }
        if (!dw_dvkey_is_ref(v)) {
            char *msg = dw_asprintf("cannot create a row whose key holds a character a URL "
                                    "cannot carry when key part \"%s\" is a bare GUID: give "
                                    "it as a reference object",
                                    name);
            dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_MAPPING, 0, "", msg);
            free(msg);
            return RES_FAIL;
        }
        /* "_parent_value" becomes "parent@odata.bind": the lookup's navigation name. */
        char *nav = dw_strndup(name + 1, strlen(name) - 7);
        char *bind = dw_asprintf("%s@odata.bind", nav);
        const char *id = json_string_value(json_object_get(r->rkey, name));
        char *val = id[0] == '$'
                        ? dw_strdup(id) /* a Content-ID reference */
                        : dw_asprintf("/%s(%s)", json_string_value(json_object_get(v, "$ref")), id);
        json_object_set_new(r->rbody, bind, json_string(val));
        free(nav);
        free(bind);
        free(val);
    }
    return RES_READY;
}

enum res dw_sink_resolve_row(struct dw_sink *s, struct row *r)
{
    free(r->wait_id);
    r->wait_id = NULL;
    free(r->used);
    r->used = NULL;
    r->used_len = 0;
    dw_sink_parents_clear(&r->binds);
    dw_sink_parents_clear(&r->keyrefs);
    json_t *rkey = NULL;
    char *rbinds = NULL;
    enum res res = resolve_key(s, r, r->key, 0, &rkey);
    if (res == RES_READY && r->body)
        res = resolve_body(s, r, &rbinds);
    if (res != RES_READY)
        goto out;
    free(r->guid);
    r->guid = NULL;
    /* Keyed through a parent created earlier in its changeset: new, so created by POST. */
    r->post = r->atomic && dw_sink_names_content_id(rkey);
    if (r->post && r->op == DW_WRITE_UPDATE) {
        dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, 404, "",
                           "update-only write: no row matches the key");
        res = RES_FAIL;
        goto out;
    }
    if (!r->post && !dw_dvkey_addressable(rkey)) {
        char *guid = NULL;
        res = dw_sink_ref_guid(s, r, r->entity_set, rkey, true, &guid);
        if (res != RES_READY)
            goto out;
        if (guid) {
            r->guid = guid;
        } else if (r->op == DW_WRITE_DELETE) {
            dw_sink_finish_row(s, r, DW_WRITE_APPLIED, DW_ERRCLASS_NONE, 404, "", "");
            res = RES_FAIL;
            goto out;
        } else if (r->op == DW_WRITE_UPDATE) {
            dw_sink_finish_row(s, r, DW_WRITE_REJECTED, DW_ERRCLASS_CONFLICT, 404, "",
                               "update-only write: no row matches the key");
            res = RES_FAIL;
            goto out;
        } else {
            r->post = true;
        }
    }
    json_decref(r->rkey);
    free(r->rbinds);
    json_decref(r->rbody);
    r->rkey = rkey;
    r->rbinds = rbinds;
    r->rbody = NULL;
    rkey = NULL;
    rbinds = NULL;
    if (r->post)
        res = post_body(s, r);
out:
    json_decref(rkey);
    free(rbinds);
    return res;
}

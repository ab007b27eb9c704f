/* dvemu's side of a write's optional parameters ("Use optional parameters", "Bypass custom
 * Dataverse logic", "Bypass Power Automate flows"): the MSCRM.* headers are checked as
 * Dataverse checks them (known values; the bypass privileges), and every Web API request, a
 * $batch part included, is recorded with its parameters and its `tag` query option in a
 * bounded log that tests read through GET /_dvemu/requests. dvemu runs no plug-ins or flows,
 * so a parameter changes nothing but the record and, for a bypass of synchronous logic, the
 * request's server cost. Everything here runs under emu->store_lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "internal.h"

/* The log keeps this many requests; older ones are dropped (and counted). */
#define EMU_REQLOG_MAX 20000

const char *const emu_opt_headers[EMU_OPT_COUNT] = {
    "MSCRM.BypassBusinessLogicExecution",
    "MSCRM.BypassCustomPluginExecution",
    "MSCRM.SuppressDuplicateDetection",
    "MSCRM.SuppressCallbackRegistrationExpanderJob",
};

struct emu_reqlog {
    json_t *entries[EMU_REQLOG_MAX]; /* a ring: the oldest at head */
    size_t head, count;
    uint64_t seq, dropped;
};

/* Whether each comma-separated item of v is CustomSync or CustomAsync (blanks allowed). */
static bool valid_bypass_logic(const char *v)
{
    const char *p = v;
    do {
        p += strspn(p, " ");
        size_t n = strcspn(p, ", ");
        if (!((n == 10 && strncmp(p, "CustomSync", 10) == 0) ||
              (n == 11 && strncmp(p, "CustomAsync", 11) == 0)))
            return false;
        p += n;
        p += strspn(p, " ");
    } while (*p++ == ',');
    return p[-1] == '\0';
}

static bool is_bool(const char *v)
{
    return strcasecmp(v, "true") == 0 || strcasecmp(v, "false") == 0;
}

bool emu_opts_bypass_sync(const struct emu_req *req)
{
    const char *logic = req->opts[EMU_OPT_BYPASS_LOGIC];
    const char *plugins = req->opts[EMU_OPT_BYPASS_PLUGINS];
    return (logic && strstr(logic, "CustomSync")) || (plugins && strcasecmp(plugins, "true") == 0);
}

dw_rc emu_opts_check(struct emu *emu, const struct emu_req *req, struct emu_err *err)
{
    const char *logic = req->opts[EMU_OPT_BYPASS_LOGIC];
    if (logic && !valid_bypass_logic(logic)) {
        emu_err_set(err, 400, "0x80040203",
                    "Invalid value '%s' for the optional parameter BypassBusinessLogicExecution. "
                    "Valid values are CustomSync, CustomAsync or CustomSync,CustomAsync.",
                    logic);
        return DW_ERR_INVALID;
    }
    for (int i = EMU_OPT_BYPASS_PLUGINS; i < EMU_OPT_COUNT; i++) {
        const char *v = req->opts[i];
        if (v && !is_bool(v)) {
            emu_err_set(err, 400, "0x80040203",
                        "Invalid value '%s' for the optional parameter %s: true or false.", v,
                        emu_opt_headers[i] + strlen("MSCRM."));
            return DW_ERR_INVALID;
        }
    }
    if (logic && emu_privilege_check_global(emu, EMU_PRIV_BYPASS_LOGIC, err) != DW_OK)
        return DW_ERR_AUTH;
    const char *plugins = req->opts[EMU_OPT_BYPASS_PLUGINS];
    if (plugins && strcasecmp(plugins, "true") == 0 &&
        emu_privilege_check_global(emu, EMU_PRIV_BYPASS_PLUGINS, err) != DW_OK)
        return DW_ERR_AUTH;
    return DW_OK;
}

void emu_reqlog_add(struct emu *emu, const struct emu_req *req, const char *tag, int status)
{
    if (emu->reqlog == NULL)
        emu->reqlog = dw_calloc(1, sizeof *emu->reqlog);
    struct emu_reqlog *l = emu->reqlog;
    json_t *opts = json_object();
    for (int i = 0; i < EMU_OPT_COUNT; i++)
        if (req->opts[i])
            json_object_set_new(opts, emu_opt_headers[i], json_string(req->opts[i]));
    if (tag)
        json_object_set_new(opts, "tag", json_string(tag));
    json_t *e = json_pack("{s:I, s:s, s:s, s:s?, s:i, s:b, s:o}", "seq", (json_int_t)++l->seq,
                          "method", req->method, "path", req->path, "query", req->query, "status",
                          status, "batch", req->in_batch, "options", opts);
    if (e == NULL) /* a path or value that is not UTF-8: nothing to show */
        return;
    if (l->count == EMU_REQLOG_MAX) {
        json_decref(l->entries[l->head]);
        l->head = (l->head + 1) % EMU_REQLOG_MAX;
        l->count--;
        l->dropped++;
    }
    l->entries[(l->head + l->count++) % EMU_REQLOG_MAX] = e;
}

json_t *emu_reqlog_json(struct emu *emu, const char *path_filter)
{
    struct emu_reqlog *l = emu->reqlog;
    json_t *value = json_array();
    for (size_t i = 0; l && i < l->count; i++) {
        json_t *e = l->entries[(l->head + i) % EMU_REQLOG_MAX];
        const char *path = json_string_value(json_object_get(e, "path"));
        if (path_filter == NULL || strstr(path, path_filter))
            json_array_append(value, e);
    }
    return json_pack("{s:o, s:I}", "value", value, "dropped", (json_int_t)(l ? l->dropped : 0));
}

void emu_reqlog_clear(struct emu *emu)
{
    struct emu_reqlog *l = emu->reqlog;
    for (size_t i = 0; l && i < l->count; i++)
        json_decref(l->entries[(l->head + i) % EMU_REQLOG_MAX]);
    if (l)
        memset(l, 0, sizeof *l);
}

void emu_reqlog_free(struct emu *emu)
{
    emu_reqlog_clear(emu);
    free(emu->reqlog);
    emu->reqlog = NULL;
}

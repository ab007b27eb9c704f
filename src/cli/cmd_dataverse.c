/*
 * `dwasync dataverse whoami | get PATH | apply [FILE] | metadata TABLE...`: talks to Dataverse
 * through the sink, for operators checking connectivity, for tests driving the sink end to
 * end, and for teams that want dvemu to emulate their own environment's schema.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/dvkey.h"
#include "dwasync/dvmeta.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/sink.h"

/* Lines read and submitted together: bounds memory on large files. */
#define APPLY_CHUNK 10000

struct apply_state {
    json_t **results; /* one per line of the chunk, NULL until its write is done */
    char **groups;    /* one per line: its "atomic" group name, or NULL */
    size_t failed;
};

static const char *status_name(enum dw_write_status s)
{
    switch (s) {
    case DW_WRITE_APPLIED:
        return "applied";
    case DW_WRITE_REJECTED:
        return "rejected";
    case DW_WRITE_GAVE_UP:
        return "gave_up";
    }
    return "?";
}

static void on_done(void *user, void *write_user, const struct dw_write_result *r)
{
    struct apply_state *st = user;
    size_t i = (size_t)(uintptr_t)write_user;
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:s}", "status", status_name(r->status), "class",
                          dw_error_class_name(r->error_class), "http", r->http_status, "code",
                          r->code, "message", r->message);
    if (r->missing_parent)
        json_object_set_new(o, "missing_parent", json_string(r->missing_parent));
    if (r->status != DW_WRITE_APPLIED)
        st->failed++;
    json_decref(st->results[i]);
    st->results[i] = o;
}

static bool parse_op(const char *s, enum dw_write_op *op)
{
    static const char *const names[] = {"upsert", "create", "update", "delete"};
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, names[i]) == 0) {
            *op = (enum dw_write_op)i;
            return true;
        }
    }
    return false;
}

/* Turns one input line into a write (and its atomic group name, or NULL); on failure says
 * why in *why. */
static bool parse_line(const char *line, struct dw_write *w, char **group, char **why)
{
    json_error_t jerr;
    json_t *doc = json_loads(line, 0, &jerr);
    bool ok = false;
    memset(w, 0, sizeof *w);
    if (!json_is_object(doc)) {
        *why = doc ? dw_strdup("a line must be a JSON object")
                   : dw_asprintf("invalid JSON: %s (column %d)", jerr.text, jerr.column);
        goto out;
    }
    const char *set = json_string_value(json_object_get(doc, "entity_set"));
    const char *ln = json_string_value(json_object_get(doc, "logical_name"));
    if (!parse_op(json_string_value(json_object_get(doc, "op")), &w->op)) {
        *why = dw_strdup("\"op\" must be one of upsert, create, update, delete");
        goto out;
    }
    if (set == NULL) {
        *why = dw_strdup("\"entity_set\" is missing");
        goto out;
    }
    json_t *atomic = json_object_get(doc, "atomic");
    if (atomic && !json_is_string(atomic)) {
        *why = dw_strdup("\"atomic\" must be a string naming the line's atomic group");
        goto out;
    }
    w->entity_set = dw_strdup(set);
    w->logical_name = ln ? dw_strdup(ln) : NULL;
    w->key = json_incref(json_object_get(doc, "key"));
    dw_write_set_body(w, json_incref(json_object_get(doc, "body")));
    *group = atomic ? dw_strdup(json_string_value(atomic)) : NULL;
    ok = true;
out:
    json_decref(doc);
    return ok;
}

static void print_result(size_t line_no, json_t *o)
{
    json_object_set_new(o, "line", json_integer((json_int_t)line_no));
    char *s = dw_json_canonical(o);
    printf("%s\n", s);
    free(s);
}

/* Marks a write the sink refused as invalid. */
static void refused(struct apply_state *st, struct dw_write *w, void *user)
{
    st->results[(size_t)(uintptr_t)user] =
        json_pack("{s:s, s:s}", "status", "invalid", "message",
                  "write refused by the sink (empty key, missing body, bad entity set, or an "
                  "atomic group of more than 1000 writes)");
    st->failed++;
    dw_write_cleanup(w);
}

/*
 * Submits each run of consecutive lines of one atomic group as a group (refused as a whole
 * if the sink refuses it) and moves the other writes to the front; returns how many.
 */
static size_t submit_groups(struct dw_sink *sink, struct apply_state *st, struct dw_write *writes,
                            void **users, size_t n)
{
    size_t nplain = 0;
    for (size_t i = 0; i < n;) {
        const char *g = st->groups[(size_t)(uintptr_t)users[i]];
        if (g == NULL) {
            writes[nplain] = writes[i];
            users[nplain++] = users[i++];
            continue;
        }
        size_t j = i + 1;
        while (j < n && st->groups[(size_t)(uintptr_t)users[j]] &&
               strcmp(st->groups[(size_t)(uintptr_t)users[j]], g) == 0)
            j++;
        if (dw_sink_submit_atomic(sink, writes + i, users + i, j - i) != DW_OK)
            for (size_t k = i; k < j; k++)
                refused(st, &writes[k], users[k]);
        i = j;
    }
    return nplain;
}

/* Submits one chunk (each write alone if the chunk is refused) and waits for every result. */
static dw_rc apply_chunk(struct dw_sink *sink, struct apply_state *st, struct dw_write *writes,
                         void **users, size_t n, size_t first_line)
{
    size_t nvalid = 0;
    dw_rc rc = DW_OK;
    for (size_t i = 0; i < n; i++) {
        if (st->results[(size_t)(uintptr_t)users[i]])
            continue; /* already failed to parse */
        writes[nvalid] = writes[i];
        users[nvalid] = users[i];
        nvalid++;
    }
    nvalid = submit_groups(sink, st, writes, users, nvalid);
    if (dw_sink_submit(sink, writes, users, nvalid) != DW_OK) {
        for (size_t i = 0; i < nvalid; i++) {
            if (dw_sink_submit(sink, &writes[i], &users[i], 1) != DW_OK)
                refused(st, &writes[i], users[i]);
        }
    }
    while (dw_sink_pending(sink) > 0)
        if ((rc = dw_sink_run(sink, 1000)) != DW_OK)
            break;
    for (size_t i = 0; i < n; i++) {
        if (st->results[i]) {
            print_result(first_line + i, st->results[i]);
            json_decref(st->results[i]);
            st->results[i] = NULL;
        }
        free(st->groups[i]);
        st->groups[i] = NULL;
    }
    return rc;
}

static int cmd_apply(const struct dw_config *cfg, const char *path)
{
    FILE *in = path ? fopen(path, "r") : stdin;
    struct apply_state st = {dw_calloc(APPLY_CHUNK, sizeof(json_t *)),
                             dw_calloc(APPLY_CHUNK, sizeof(char *)), 0};
    struct dw_write *writes = dw_calloc(APPLY_CHUNK, sizeof *writes);
    void **users = dw_calloc(APPLY_CHUNK, sizeof *users);
    struct dw_sink *sink = NULL;
    char *line = NULL;
    size_t cap = 0, n = 0, line_no = 0, first_line = 1;
    dw_rc rc = DW_OK;
    if (in == NULL) {
        DW_ERROR("cannot open \"%s\": %s", path, strerror(errno));
        rc = DW_ERR_IO;
        goto out;
    }
    if ((rc = dw_sink_new(cfg, on_done, &st, &sink)) != DW_OK)
        goto out;
    ssize_t len;
    while ((len = getline(&line, &cap, in)) >= 0) {
        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        char *why = NULL;
        users[n] = (void *)(uintptr_t)n;
        if (!parse_line(line, &writes[n], &st.groups[n], &why)) {
            st.results[n] = json_pack("{s:s, s:s}", "status", "invalid", "message", why);
            st.failed++;
            free(why);
        }
        if (n == 0)
            first_line = line_no;
        n++;
        if (n == APPLY_CHUNK) {
            if ((rc = apply_chunk(sink, &st, writes, users, n, first_line)) != DW_OK)
                goto out;
            n = 0;
        }
    }
    if (n > 0)
        rc = apply_chunk(sink, &st, writes, users, n, first_line);
    fflush(stdout);
out:
    if (in && in != stdin)
        fclose(in);
    dw_sink_free(sink);
    free(line);
    free(writes);
    free(users);
    free(st.results);
    for (size_t i = 0; i < APPLY_CHUNK; i++)
        free(st.groups[i]);
    free(st.groups);
    if (rc != DW_OK)
        return DW_EXIT_FAILURE;
    return st.failed ? DW_EXIT_FAILURE : DW_EXIT_OK;
}

static void ignore_result(void *user, void *write_user, const struct dw_write_result *r)
{
    (void)user;
    (void)write_user;
    (void)r;
}

int dw_cmd_dataverse(struct dw_cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return dw_cli_usage("dataverse");
    const char *sub = argv[1];
    bool whoami = strcmp(sub, "whoami") == 0 && argc == 2;
    bool get = strcmp(sub, "get") == 0 && argc == 3;
    bool apply = strcmp(sub, "apply") == 0 && (argc == 2 || argc == 3);
    bool metadata = strcmp(sub, "metadata") == 0 && argc >= 3;
    if (!whoami && !get && !apply && !metadata)
        return dw_cli_usage("dataverse");
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_EXIT_FAILURE;
    if (apply)
        return cmd_apply(cfg, argc == 3 && strcmp(argv[2], "-") != 0 ? argv[2] : NULL);
    struct dw_sink *sink = NULL;
    dw_rc rc = dw_sink_new(cfg, ignore_result, NULL, &sink);
    if (rc == DW_OK && whoami) {
        char *id = NULL;
        if ((rc = dw_sink_whoami(sink, &id)) == DW_OK)
            printf("%s\n", id);
        free(id);
    } else if (rc == DW_OK && metadata) {
        json_t *doc = NULL;
        if ((rc = dw_dvmeta_export(sink, argv + 2, (size_t)(argc - 2), &doc)) == DW_OK) {
            char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (s == NULL || printf("%s\n", s) < 0)
                rc = DW_ERR_IO;
            free(s);
        }
        json_decref(doc);
    } else if (rc == DW_OK) {
        json_t *doc = NULL;
        struct dw_buf path;
        dw_buf_init(&path, 0);
        rc = dw_dvkey_encode_path(&path, argv[2][0] == '/' ? argv[2] + 1 : argv[2]);
        if (rc == DW_OK && (rc = dw_sink_get_json(sink, dw_buf_str(&path), &doc)) == DW_OK) {
            char *s = dw_json_dumps(doc);
            printf("%s\n", s);
            free(s);
        }
        json_decref(doc);
        dw_buf_cleanup(&path);
    }
    dw_sink_free(sink);
    return rc == DW_OK ? DW_EXIT_OK : DW_EXIT_FAILURE;
}

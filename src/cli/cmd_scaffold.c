/*
 * cmd_scaffold.c - `dwasync map scaffold --source SCHEMA[.TABLE] --target LOGICAL_NAME...
 * [--metadata FILE]`: writes a first map file to stdout from the staging tables and the
 * Dataverse metadata (a dvemu metadata file, or read live through [dataverse]); what it could
 * not match goes to stderr as "unmatched: MAP: what" lines (src/mapping/scaffold.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/pg.h"
#include "dwasync/scaffold.h"
#include "dwasync/sink.h"

/* At most this many tables are read live: the targets and the parents of their lookups. */
#define LIVE_TABLES_MAX 64

static dw_rc column_values(void *user, const struct dw_scaffold_table *t, const char *column,
                           char ***values, size_t *nvalues)
{
    PGconn *conn = user;
    char *s = dw_pg_quote_ident(conn, t->schema), *n = dw_pg_quote_ident(conn, t->name);
    char *c = dw_pg_quote_ident(conn, column);
    char *sql = NULL;
    PGresult *res = NULL;
    dw_rc rc = DW_ERR_PG;
    if (s == NULL || n == NULL || c == NULL)
        goto out;
    sql = dw_asprintf("SELECT DISTINCT %s::text FROM %s.%s WHERE %s IS NOT NULL ORDER BY 1"
                      " LIMIT 100",
                      c, s, n, c);
    if ((rc = dw_pg_query(conn, "reading a column's values", sql, 0, NULL, &res)) != DW_OK)
        goto out;
    *nvalues = (size_t)PQntuples(res);
    *values = dw_calloc(*nvalues + 1, sizeof **values);
    for (size_t i = 0; i < *nvalues; i++)
        (*values)[i] = dw_strdup(PQgetvalue(res, (int)i, 0));
out:
    PQclear(res);
    free(sql);
    PQfreemem(s);
    PQfreemem(n);
    PQfreemem(c);
    return rc;
}

static void no_writes(void *user, void *write_user, const struct dw_write_result *r)
{
    (void)user;
    (void)write_user;
    (void)r;
}

/* Reads the targets and, one level down, the parents their lookups point to. */
static dw_rc fetch_live(struct dw_cli *cli, char **names, size_t n, struct dw_scaffold_targets *tg)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    struct dw_sink *sink = NULL;
    dw_rc rc = DW_ERR_CONFIG;
    if (cfg == NULL)
        goto out;
    if (cfg->dataverse.url[0] == '\0') {
        fprintf(stderr, "dwasync map scaffold: give --metadata FILE, or set [dataverse] url to "
                        "read the metadata live\n");
        goto out;
    }
    if ((rc = dw_sink_new(cfg, no_writes, NULL, &sink)) != DW_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct dw_entity_meta *m = NULL;
        if ((rc = dw_dvmeta_fetch(sink, names[i], &m)) != DW_OK) {
            fprintf(stderr, "dwasync map scaffold: cannot read the metadata of \"%s\"\n", names[i]);
            goto out;
        }
        dw_scaffold_targets_add(tg, m);
    }
    for (size_t i = 0; i < tg->n && tg->n < LIVE_TABLES_MAX; i++) {
        const struct dw_entity_meta *m = tg->v[i].meta;
        for (size_t a = 0; a < m->nattrs && tg->n < LIVE_TABLES_MAX; a++) {
            if (m->attrs[a].ntargets != 1 ||
                dw_scaffold_targets_find(tg, m->attrs[a].targets[0]) != NULL)
                continue;
            struct dw_entity_meta *p = NULL;
            rc = dw_dvmeta_fetch(sink, m->attrs[a].targets[0], &p);
            if (rc == DW_ERR_NOT_FOUND)
                continue;
            if (rc != DW_OK)
                goto out;
            dw_scaffold_targets_add(tg, p);
            m = tg->v[i].meta; /* the array moved */
        }
    }
    rc = DW_OK;
out:
    dw_sink_free(sink);
    return rc;
}

/* Splits comma-separated --target values into names (heap strings appended to *v). */
static void add_targets(const char *arg, char ***v, size_t *n)
{
    const char *p = arg;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0) {
            *v = dw_realloc(*v, (*n + 1) * sizeof **v);
            (*v)[*n] = dw_calloc(len + 1, 1);
            memcpy((*v)[*n], p, len);
            (*n)++;
        }
        p += len + (comma != NULL);
    }
}

int dw_cli_map_scaffold(struct dw_cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"source", required_argument, NULL, 's'},
        {"target", required_argument, NULL, 't'},
        {"metadata", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    const char *source = NULL, *metadata = NULL;
    char **targets = NULL, *schema = NULL, *table = NULL;
    size_t ntargets = 0;
    struct dw_scaffold_targets tg = {NULL, 0};
    struct dw_scaffold_source src = {NULL, 0};
    struct dw_buf report;
    PGconn *conn = NULL;
    json_t *doc = NULL;
    int status = DW_EXIT_FAILURE, opt;
    dw_buf_init(&report, 0);
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 's')
            source = optarg;
        else if (opt == 't')
            add_targets(optarg, &targets, &ntargets);
        else if (opt == 'm')
            metadata = optarg;
        else {
            status = dw_cli_usage("map");
            goto out;
        }
    }
    if (optind != argc || source == NULL || ntargets == 0) {
        status = dw_cli_usage("map");
        goto out;
    }
    const char *dot = strchr(source, '.');
    schema = dot ? dw_calloc((size_t)(dot - source) + 1, 1) : dw_strdup(source);
    if (dot) {
        memcpy(schema, source, (size_t)(dot - source));
        table = dw_strdup(dot + 1);
    }
    if (metadata) {
        struct dw_buf errors;
        dw_buf_init(&errors, 0);
        dw_rc rc = dw_scaffold_targets_load_file(metadata, &errors, &tg);
        fputs(dw_buf_str(&errors), stderr);
        dw_buf_cleanup(&errors);
        if (rc != DW_OK) {
            fprintf(stderr, "dwasync map scaffold: cannot use the metadata file \"%s\"\n",
                    metadata);
            goto out;
        }
    } else {
        char **names = dw_calloc(ntargets, sizeof *names);
        for (size_t i = 0; i < ntargets; i++) {
            char *eq = strchr(targets[i], '=');
            names[i] = eq ? eq + 1 : targets[i];
        }
        dw_rc rc = fetch_live(cli, names, ntargets, &tg);
        free(names);
        if (rc != DW_OK)
            goto out;
    }
    if (dw_cli_connect_source(cli, "dwasync map scaffold", &conn) != DW_OK)
        goto out;
    dw_rc rc = dw_scaffold_source_fetch(conn, schema, table, &src);
    if (rc == DW_ERR_NOT_FOUND)
        fprintf(stderr, "dwasync map scaffold: no table \"%s\" in the source database\n", source);
    if (rc != DW_OK)
        goto out;
    struct dw_scaffold_request req = {table ? table : schema, (const char *const *)targets,
                                      ntargets, column_values, conn};
    rc = dw_scaffold_build(&src, &tg, &req, &report, &doc);
    fputs(dw_buf_str(&report), stderr);
    if (rc != DW_OK)
        goto out;
    /* In normal form (as `map export` writes it) when it parses; as built otherwise. */
    struct dw_buf errors;
    struct dw_jobdef *def = NULL;
    dw_buf_init(&errors, 0);
    char *text = NULL;
    if (dw_jobdef_parse(doc, &errors, &def) == DW_OK) {
        text = dw_jobdef_dump(def);
    } else {
        fprintf(stderr, "note: the scaffold is not a valid map file yet (fix the unmatched):\n%s",
                dw_buf_str(&errors));
        text = json_dumps(doc, JSON_INDENT(2));
    }
    dw_buf_cleanup(&errors);
    dw_jobdef_free(def);
    fputs(text, stdout);
    if (text[0] && text[strlen(text) - 1] != '\n')
        fputc('\n', stdout);
    free(text);
    status = DW_EXIT_OK;
out:
    json_decref(doc);
    PQfinish(conn);
    dw_scaffold_source_cleanup(&src);
    dw_scaffold_targets_cleanup(&tg);
    for (size_t i = 0; i < ntargets; i++)
        free(targets[i]);
    free(targets);
    free(schema);
    free(table);
    dw_buf_cleanup(&report);
    return status;
}

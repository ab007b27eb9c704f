/* `dwasync map import|export|list|validate`: table maps between files and the control schema. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapstore.h"
#include "dwasync/pg.h"
#include "dwasync/sink.h"

/* Metadata fetches need a sink; its write callback is never called here. */
static void no_writes(void *user, void *write_user, const struct dw_write_result *r)
{
    (void)user;
    (void)write_user;
    (void)r;
}

struct names {
    char **v;
    size_t n;
};

static void add_name(struct names *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return;
    ns->v = dw_realloc(ns->v, (ns->n + 1) * sizeof *ns->v);
    ns->v[ns->n++] = dw_strdup(name);
}

static void add_key_names(struct names *ns, const struct dw_keypart *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (parts[i].kind == DW_KEYPART_COMPANY)
            add_name(ns, DW_COMPANY_LOGICAL_NAME);
        if (parts[i].lookup) {
            add_name(ns, parts[i].lookup->logical_name);
            add_key_names(ns, parts[i].lookup->key, parts[i].lookup->nkey);
        }
    }
}

/*
 * Fetches the metadata of every Dataverse table the maps write or refer to. Tables that do
 * not exist are left out (the validator reports them). Caller frees each with
 * dw_entity_meta_free() and the array with free().
 */
static dw_rc fetch_metadata(const struct dw_config *cfg, const struct dw_jobdef *def,
                            struct dw_entity_meta ***out, size_t *nout)
{
    struct names ns = {NULL, 0};
    struct dw_sink *sink = NULL;
    struct dw_entity_meta **metas = NULL;
    size_t n = 0;
    for (size_t g = 0; g < def->ngroups; g++) {
        for (size_t i = 0; i < def->groups[g].nmaps; i++) {
            const struct dw_tablemap *m = &def->groups[g].maps[i];
            add_name(&ns, m->logical_name);
            add_key_names(&ns, m->key, m->nkey);
            for (size_t c = 0; c < m->ncols; c++) {
                if (m->cols[c].lookup) {
                    add_name(&ns, m->cols[c].lookup->logical_name);
                    add_key_names(&ns, m->cols[c].lookup->key, m->cols[c].lookup->nkey);
                }
            }
        }
    }
    dw_rc rc = dw_sink_new(cfg, no_writes, NULL, &sink);
    if (rc != DW_OK)
        goto out;
    metas = dw_calloc(ns.n ? ns.n : 1, sizeof *metas);
    for (size_t i = 0; i < ns.n; i++) {
        struct dw_entity_meta *m = NULL;
        rc = dw_dvmeta_fetch(sink, ns.v[i], &m);
        if (rc == DW_ERR_NOT_FOUND) {
            rc = DW_OK;
            continue;
        }
        if (rc != DW_OK)
            goto out;
        metas[n++] = m;
    }
out:
    for (size_t i = 0; i < ns.n; i++)
        free(ns.v[i]);
    free(ns.v);
    dw_sink_free(sink);
    if (rc != DW_OK) {
        for (size_t i = 0; i < n; i++)
            dw_entity_meta_free(metas[i]);
        free(metas);
        return rc;
    }
    *out = metas;
    *nout = n;
    return DW_OK;
}

int dw_cli_map_validate(struct dw_cli *cli, const struct dw_jobdef *def, bool dataverse,
                        PGconn *record)
{
    const struct dw_config *cfg = dw_cli_config(cli);
    PGconn *src = NULL;
    struct dw_src_catalog cat = {NULL, 0};
    struct dw_entity_meta **metas = NULL;
    size_t nmetas = 0;
    struct dw_findings f;
    int result = -1;
    dw_findings_init(&f);
    if (cfg == NULL || dw_cli_connect_source(cli, "dwasync map", &src) != DW_OK ||
        dw_src_catalog_fetch(src, def, &cat) != DW_OK)
        goto out;
    if (dataverse && cfg->dataverse.url[0] == '\0') {
        fprintf(stderr, "note: [dataverse] url is not set: Dataverse metadata checks skipped\n");
    } else if (dataverse && fetch_metadata(cfg, def, &metas, &nmetas) != DW_OK) {
        fprintf(stderr, "cannot read the Dataverse metadata of the mapped tables\n");
        goto out;
    }
    dw_mapvalidate(def, &cat, (const struct dw_entity_meta *const *)metas, nmetas, &f);
    if (dataverse && nmetas == 0 && cfg->dataverse.url[0] != '\0')
        dw_mapvalidate(def, NULL, NULL, 0, &f); /* nothing fetched: every target is unknown */
    fputs(dw_buf_str(&f.text), stderr);
    result = f.errors;
    if (result == 0 && record != NULL &&
        dw_job_maps_record_lengths(record, def, (const struct dw_entity_meta *const *)metas,
                                   nmetas) != DW_OK)
        result = -1;
out:
    for (size_t i = 0; i < nmetas; i++)
        dw_entity_meta_free(metas[i]);
    free(metas);
    dw_src_catalog_cleanup(&cat);
    dw_findings_cleanup(&f);
    PQfinish(src);
    return result;
}

static int map_import(struct dw_cli *cli, const char *path)
{
    struct dw_buf errors;
    struct dw_jobdef *def = NULL;
    PGconn *ctl = NULL;
    int status = DW_EXIT_FAILURE;
    dw_buf_init(&errors, 0);
    if (dw_jobdef_load_file(path, &errors, &def) != DW_OK) {
        fprintf(stderr, "%s", dw_buf_str(&errors));
        fprintf(stderr, "map file \"%s\" is invalid: nothing imported\n", path);
        goto out;
    }
    int nerr = dw_cli_map_validate(cli, def, false, NULL);
    if (nerr != 0) {
        fprintf(stderr, "map file \"%s\" does not fit the source database: nothing imported\n",
                path);
        goto out;
    }
    struct dw_mapstore_import_result res;
    if (dw_cli_connect_control(cli, "dwasync map import", &ctl) != DW_OK ||
        dw_mapstore_import(ctl, def, &res) != DW_OK) {
        fprintf(stderr, "nothing imported\n");
        goto out;
    }
    printf("%s job \"%s\": %d map%s in %zu group%s (%d new or changed, %d removed)\n",
           res.job_created ? "created" : "updated", def->name, res.maps, res.maps == 1 ? "" : "s",
           def->ngroups, def->ngroups == 1 ? "" : "s", res.maps_changed, res.maps_removed);
    status = DW_EXIT_OK;
out:
    PQfinish(ctl);
    dw_jobdef_free(def);
    dw_buf_cleanup(&errors);
    return status;
}

static int map_export(struct dw_cli *cli, const char *job, const char *path)
{
    PGconn *ctl = NULL;
    struct dw_jobdef *def = NULL;
    char *text = NULL;
    int status = DW_EXIT_FAILURE;
    if (dw_cli_connect_control(cli, "dwasync map export", &ctl) != DW_OK ||
        dw_mapstore_load(ctl, job, &def) != DW_OK)
        goto out;
    text = dw_jobdef_dump(def);
    if (path == NULL) {
        fputs(text, stdout);
        status = DW_EXIT_OK;
        goto out;
    }
    /* Written beside the target and renamed: a failed export never leaves half a file. The
     * temporary name is mkstemp's (created O_EXCL, never a file or link planted there). */
    char *tmp = dw_asprintf("%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *f = NULL;
    if (fd >= 0) {
        mode_t mask = umask(0);
        umask(mask);
        (void)fchmod(fd, 0666 & ~mask);
        f = fdopen(fd, "w");
        if (f == NULL)
            close(fd);
    }
    bool ok = f && fputs(text, f) >= 0;
    ok = (f && fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) == 0) {
        status = DW_EXIT_OK;
    } else {
        DW_ERROR("cannot write \"%s\": %m", path);
        if (fd >= 0)
            remove(tmp);
    }
    free(tmp);
out:
    free(text);
    dw_jobdef_free(def);
    PQfinish(ctl);
    return status;
}

static int map_list(struct dw_cli *cli, const char *job)
{
    PGconn *ctl = NULL;
    PGresult *r = NULL;
    int status = DW_EXIT_FAILURE;
    const char *p[1] = {job};
    if (dw_cli_connect_control(cli, "dwasync map list", &ctl) != DW_OK)
        goto out;
    if (dw_pg_query(ctl, "listing table maps",
                    "SELECT j.name, j.state, g.name, m.sequence, m.name,"
                    " m.source_schema || '.' || m.source_table, m.target_entity_set,"
                    " m.filter IS NOT NULL, m.version"
                    " FROM dwasync.table_map m JOIN dwasync.job j ON j.id = m.job_id"
                    " JOIN dwasync.table_group g ON g.id = m.group_id"
                    " WHERE $1::text IS NULL OR j.name = $1"
                    " ORDER BY j.name, g.position, g.id, m.sequence",
                    1, p, &r) != DW_OK)
        goto out;
    printf("%-16s %-8s %-16s %5s %-24s %-32s %-24s %-6s %s\n", "JOB", "STATE", "GROUP", "SEQ",
           "MAP", "SOURCE", "TARGET", "FILTER", "VERSION");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-16s %-8s %-16s %5s %-24s %-32s %-24s %-6s %s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
               PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
               PQgetvalue(r, i, 7)[0] == 't' ? "yes" : "no", PQgetvalue(r, i, 8));
    status = DW_EXIT_OK;
out:
    PQclear(r);
    PQfinish(ctl);
    return status;
}

static int map_validate(struct dw_cli *cli, const char *job)
{
    PGconn *ctl = NULL;
    struct dw_jobdef *def = NULL;
    int status = DW_EXIT_FAILURE;
    if (dw_cli_connect_control(cli, "dwasync map validate", &ctl) != DW_OK ||
        dw_mapstore_load(ctl, job, &def) != DW_OK)
        goto out;
    int errors = dw_cli_map_validate(cli, def, true, NULL);
    if (errors == 0) {
        printf("maps of job \"%s\" are valid\n", job);
        status = DW_EXIT_OK;
    } else if (errors > 0) {
        printf("maps of job \"%s\": %d error%s\n", job, errors, errors == 1 ? "" : "s");
    }
out:
    dw_jobdef_free(def);
    PQfinish(ctl);
    return status;
}

int dw_cmd_map(struct dw_cli *cli, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "import") == 0)
        return map_import(cli, argv[2]);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "export") == 0)
        return map_export(cli, argv[2], argc == 4 ? argv[3] : NULL);
    if ((argc == 2 || argc == 3) && strcmp(argv[1], "list") == 0)
        return map_list(cli, argc == 3 ? argv[2] : NULL);
    if (argc == 3 && strcmp(argv[1], "validate") == 0)
        return map_validate(cli, argv[2]);
    if (argc >= 2 && strcmp(argv[1], "scaffold") == 0)
        return dw_cli_map_scaffold(cli, argc - 1, argv + 1);
    return dw_cli_usage("map");
}

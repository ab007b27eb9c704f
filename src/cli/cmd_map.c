/* `dwasync map import|export|list|validate`: table maps between files and the control schema. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/log.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapstore.h"
#include "dwasync/pg.h"

/*
 * Checks a definition against the source catalog and prints the findings. Used by import,
 * validate and job start. *errors gets the number of errors.
 */
static dw_rc check_against_source(struct dw_cli *cli, const struct dw_jobdef *def, int *errors)
{
    PGconn *src = NULL;
    struct dw_src_catalog cat = {NULL, 0};
    struct dw_findings f;
    dw_findings_init(&f);
    dw_rc rc = dw_cli_connect_source(cli, "dwasync map", &src);
    if (rc == DW_OK)
        rc = dw_src_catalog_fetch(src, def, &cat);
    if (rc == DW_OK) {
        dw_mapvalidate(def, &cat, NULL, 0, &f);
        fputs(dw_buf_str(&f.text), stderr);
        *errors = f.errors;
    }
    dw_src_catalog_cleanup(&cat);
    dw_findings_cleanup(&f);
    PQfinish(src);
    return rc;
}

int dw_cli_map_validate(struct dw_cli *cli, const struct dw_jobdef *def, bool quiet_ok)
{
    int errors = 0;
    if (check_against_source(cli, def, &errors) != DW_OK)
        return -1;
    /* The Dataverse half needs dw_dvmeta_fetch (the sink); see README "Validating maps". */
    if (!quiet_ok || errors > 0)
        fprintf(stderr, "note: Dataverse metadata checks are not part of this build (they need the "
                        "sink's metadata fetch)\n");
    return errors;
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
    int nerr = dw_cli_map_validate(cli, def, true);
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
    /* Written beside the target and renamed: a failed export never leaves half a file. */
    char *tmp = dw_asprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f && fputs(text, f) >= 0;
    ok = (f && fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) == 0) {
        status = DW_EXIT_OK;
    } else {
        DW_ERROR("cannot write \"%s\": %m", path);
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
    int errors = dw_cli_map_validate(cli, def, false);
    if (errors == 0) {
        printf("maps of job \"%s\" fit the source database\n", job);
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
    return dw_cli_usage("map");
}

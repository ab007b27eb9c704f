/* `dwasync init`, `dwasync config ...` and `dwasync version`. */
#include <stdio.h>
#include <string.h>

#include "dwasync/cli.h"
#include "dwasync/log.h"
#include "dwasync/migrate.h"
#include "dwasync/paths.h"
#include "dwasync/pg.h"

int dw_cmd_version(struct dw_cli *cli, int argc, char **argv)
{
    (void)cli;
    (void)argv;
    if (argc != 1)
        return dw_cli_usage("version");
    printf("dwasync %s\n", DW_VERSION);
    return DW_EXIT_OK;
}

int dw_cmd_init(struct dw_cli *cli, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return dw_cli_usage("init");
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_EXIT_FAILURE;
    const char *sqldir = dw_paths_sqldir();
    if (sqldir == NULL) {
        DW_ERROR("cannot find the SQL migrations (looked in %s); set DWASYNC_SHAREDIR",
                 dw_paths_sqldir_candidates());
        return DW_EXIT_FAILURE;
    }
    PGconn *conn = NULL;
    struct dw_migrate_result result;
    dw_rc rc = dw_pg_connect(dw_config_control_conninfo(cfg), "dwasync init", &conn);
    if (rc == DW_OK)
        rc = dw_migrate_run(conn, sqldir, &result);
    PQfinish(conn);
    if (rc != DW_OK)
        return DW_EXIT_FAILURE;
    if (result.applied == 0)
        printf("control schema is up to date at version %d\n", result.to_version);
    else
        printf("control schema upgraded from version %d to %d (%d migration%s applied)\n",
               result.from_version, result.to_version, result.applied,
               result.applied == 1 ? "" : "s");
    return DW_EXIT_OK;
}

int dw_cmd_config(struct dw_cli *cli, int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "describe") == 0) {
        dw_config_describe(stdout);
        return DW_EXIT_OK;
    }
    if (argc == 2 && strcmp(argv[1], "sample") == 0) {
        dw_config_write_sample(stdout);
        return DW_EXIT_OK;
    }
    if ((argc == 2 || argc == 3) && strcmp(argv[1], "validate") == 0) {
        struct dw_config cfg;
        struct dw_buf errors;
        const char *path = argc == 3 ? argv[2] : dw_config_path(cli->config_path);
        dw_config_init(&cfg);
        dw_buf_init(&errors, 0);
        dw_rc rc = dw_config_load(&cfg, path, &errors);
        fputs(dw_buf_str(&errors), stderr);
        if (rc == DW_OK)
            printf("%s: ok\n", path);
        dw_buf_cleanup(&errors);
        dw_config_cleanup(&cfg);
        return rc == DW_OK ? DW_EXIT_OK : DW_EXIT_FAILURE;
    }
    return dw_cli_usage("config");
}

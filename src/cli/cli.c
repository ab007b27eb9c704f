/*
 * The command line's lazily loaded configuration (see cli.h). dw_cli_config() reads the file
 * named by --config, else $DWASYNC_CONFIG, else the default path (whose absence means the
 * built-in defaults), prints the file's errors to stderr and configures the logger. The
 * struct dw_cli owns the loaded config from then on.
 */
#include "dwasync/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwasync/log.h"

const struct dw_config *dw_cli_config(struct dw_cli *cli)
{
    if (cli->config_loaded)
        return &cli->config;
    dw_config_init(&cli->config);
    const char *path = dw_config_path(cli->config_path);
    bool explicit_path = (cli->config_path && *cli->config_path) || getenv("DWASYNC_CONFIG");
    if (!explicit_path && access(path, F_OK) != 0 && errno == ENOENT) {
        DW_DEBUG("no config file at \"%s\": using built-in defaults", path);
    } else {
        struct dw_buf errors;
        dw_buf_init(&errors, 0);
        dw_rc rc = dw_config_load(&cli->config, path, &errors);
        if (rc != DW_OK) {
            fputs(dw_buf_str(&errors), stderr);
            dw_buf_cleanup(&errors);
            dw_config_cleanup(&cli->config);
            return NULL;
        }
        dw_buf_cleanup(&errors);
    }
    dw_log_configure(cli->verbose ? DW_LOG_DEBUG : (enum dw_log_level)cli->config.log.level,
                     (enum dw_log_format)cli->config.log.format);
    cli->config_loaded = true;
    return &cli->config;
}

/* Global options may also follow the command (`dwasync check --verbose`): see cli.h. */
int dw_cli_take_global_options(struct dw_cli *cli, int argc, char **argv, bool *help)
{
    int n = 1;
    bool options_end = false;
    *help = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_end && strcmp(a, "--") == 0) {
            options_end = true;
        } else if (!options_end && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            *help = true;
            continue;
        } else if (!options_end && strcmp(a, "--verbose") == 0) {
            cli->verbose = true;
            continue;
        } else if (!options_end && strcmp(a, "--config") == 0 && i + 1 < argc) {
            cli->config_path = argv[++i];
            continue;
        } else if (!options_end && strncmp(a, "--config=", 9) == 0) {
            cli->config_path = a + 9;
            continue;
        }
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

/* `dwasync run [--job NAME] [--until-caught-up]`: the daemon. */
#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

#include "dwasync/cli.h"
#include "dwasync/runner.h"

int dw_cmd_run(struct dw_cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"job", required_argument, NULL, 'j'},
        {"until-caught-up", no_argument, NULL, 'u'},
        {NULL, 0, NULL, 0},
    };
    struct dw_runner_options ro = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "j:u", options, NULL)) != -1) {
        switch (opt) {
        case 'j':
            ro.job_name = optarg;
            break;
        case 'u':
            ro.until_caught_up = true;
            break;
        default:
            return dw_cli_usage("run");
        }
    }
    if (optind != argc)
        return dw_cli_usage("run");
    if (dw_cli_config(cli) == NULL)
        return DW_EXIT_FAILURE;
    const char *path = dw_config_path(cli->config_path);
    ro.config_path = access(path, F_OK) == 0 ? path : NULL;
    return dw_runner_run(&ro) == DW_OK ? DW_EXIT_OK : DW_EXIT_FAILURE;
}

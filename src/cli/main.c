/* dwasync: the command-line entry point. Parses global options and dispatches. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "dwasync/cli.h"

#ifdef DW_JEMALLOC
/*
 * jemalloc's options, read when it starts (MALLOC_CONF in the environment still overrides
 * them). Pages freed by a window are handed back to the kernel within a second rather than
 * kept for ten: the windows free what they allocated over and over, and with the default
 * the peak RSS of the same 1,000,000-change run wandered between 54 and 68 MB, with this
 * between 49 and 51 (tests/bench/bench_e2e.sh).
 */
const char *malloc_conf = "dirty_decay_ms:1000,muzzy_decay_ms:0";
#endif

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    /* No core file, and no ptrace by other processes of the same user: memory holds the
     * client secret, the private key and bearer tokens. */
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct dw_cli cli = {0};
    int opt;
    /* "+": stop at the command name; its options belong to the command. */
    while ((opt = getopt_long(argc, argv, "+c:vh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cli.config_path = optarg;
            break;
        case 'v':
            cli.verbose = true;
            break;
        case 'h':
            dw_cli_print_help(stdout);
            return DW_EXIT_OK;
        case 'V':
            printf("dwasync %s\n", DW_VERSION);
            return DW_EXIT_OK;
        default:
            dw_cli_print_help(stderr);
            return DW_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        dw_cli_print_help(stderr);
        return DW_EXIT_USAGE;
    }
    const char *name = argv[optind];
    for (const struct dw_cli_command *c = dw_cli_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            /* Commands parse their own options with getopt from a fresh start. */
            char **sub_argv = argv + optind;
            bool help;
            int sub_argc = dw_cli_take_global_options(&cli, argc - optind, sub_argv, &help);
            if (help) {
                dw_cli_command_help(stdout, c, sub_argc > 1 ? sub_argv[1] : NULL);
                return DW_EXIT_OK;
            }
            optind = 0;
            int status = c->run(&cli, sub_argc, sub_argv);
            if (cli.config_loaded)
                dw_config_cleanup(&cli.config);
            return status;
        }
    }
    fprintf(stderr, "dwasync: unknown command \"%s\"\n\n", name);
    dw_cli_print_help(stderr);
    return DW_EXIT_USAGE;
}

#include "dwasync/cli.h"

#include <string.h>

/* The one list of dwasync commands; `dwasync --help` prints it. */
const struct dw_cli_command dw_cli_commands[] = {
    {"init", dw_cmd_init, "", "install or upgrade the control schema (idempotent)"},
    {"config", dw_cmd_config, "describe | sample | validate [FILE]",
     "list configuration keys, print a sample file, or validate a file"},
    {"job", dw_cmd_job, "list | create|show|start|stop|pause|resume|drop NAME [OPTION]",
     "manage integration jobs (create: --environment-url URL; start: --initial-sync; drop: "
     "--yes)"},
    {"map", dw_cmd_map, "import FILE | export JOB [FILE] | list [JOB] | validate JOB",
     "load, write back, list and check table maps"},
    {"dataverse", dw_cmd_dataverse, "whoami | get PATH | apply [FILE]",
     "check the connection to Dataverse, GET a Web API path, or apply JSON-line writes"},
    {"version", dw_cmd_version, "", "print the version"},
    {NULL, NULL, NULL, NULL},
};

int dw_cli_usage(const char *name)
{
    for (const struct dw_cli_command *c = dw_cli_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            fprintf(stderr, "usage: dwasync %s %s\n", c->name, c->usage);
            return DW_EXIT_USAGE;
        }
    }
    fprintf(stderr, "usage: dwasync %s\n", name);
    return DW_EXIT_USAGE;
}

void dw_cli_print_help(FILE *out)
{
    fprintf(out, "usage: dwasync [--config FILE] [--verbose] COMMAND [ARGS]\n\n"
                 "Asynchronous dual-write from a PostgreSQL staging mirror of Dynamics 365\n"
                 "Finance & Operations into Microsoft Dataverse.\n\ncommands:\n");
    for (const struct dw_cli_command *c = dw_cli_commands; c->name; c++)
        fprintf(out, "  %-8s %-40s %s\n", c->name, c->usage, c->summary);
    fprintf(out, "\nconfig: --config FILE, else $DWASYNC_CONFIG, else %s\n",
            DW_CONFIG_DEFAULT_PATH);
}

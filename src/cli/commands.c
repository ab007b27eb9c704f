/*
 * The dwasync command table, the usage lines and the `--help` text (see cli.h). A command
 * is added here and nowhere else: main() dispatches through the table and help prints it.
 */
#include "dwasync/cli.h"

#include <string.h>

/* The one list of dwasync commands; `dwasync --help` prints it. */
const struct dw_cli_command dw_cli_commands[] = {
    {"init", dw_cmd_init, "", "install or upgrade the control schema (idempotent)"},
    {"config", dw_cmd_config, "describe | sample | validate [FILE]",
     "list configuration keys, print a sample file, or validate a file"},
    {"decode", dw_cmd_decode,
     "--publication P [--slot S] [--create-slot] [--initial-sync T,...] "
     "[--until-caught-up] [--limit N]",
     "print decoded row changes of a publication as JSON lines"},
    {"errors", dw_cmd_errors,
     "list [--job J] [--status S] [--table T] [--code C] [--limit N] | show ID"
     " | replay ID...|--all [--job J] [--table T] [--code C] [--queue-only]"
     " | skip ID... --reason TEXT",
     "triage the error table: list, show, replay or skip failed changes"},
    {"status", dw_cmd_status, "[--json] [--at TIMESTAMP]",
     "jobs with state, lag, throughput, error counts and throttling"},
    {"check", dw_cmd_check, "[--job NAME] [--json]",
     "health check of config, secrets, Postgres, replication and Dataverse"},
    {"job", dw_cmd_job,
     "create NAME [--environment-url URL] | list | show NAME | start NAME [--initial-sync] | "
     "stop NAME | pause NAME | resume NAME | drop NAME [--yes]",
     "manage integration jobs"},
    {"job", dw_cmd_job, "list | create|show|start|stop|pause|resume|drop NAME [OPTION]",
     "manage integration jobs (create: --environment-url URL; start: --initial-sync; drop: "
     "--yes)"},
    {"map", dw_cmd_map, "import FILE | export JOB [FILE] | list [JOB] | validate JOB",
     "load, write back, list and check table maps"},
    {"dataverse", dw_cmd_dataverse, "whoami | get PATH | apply [FILE] | metadata TABLE...",
     "check the connection to Dataverse, GET a Web API path, apply JSON-line writes, or write "
     "tables' metadata as a dvemu metadata file"},
    {"run", dw_cmd_run, "[--job NAME] [--until-caught-up]",
     "the daemon: apply the job's changes to Dataverse until stopped"},
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

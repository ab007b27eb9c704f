/*
 * cli.h - the dwasync command line: global options, the command table, shared helpers.
 *
 * main() parses the global options into a struct dw_cli and dispatches to a command
 * function from the one table in src/cli/commands.c. A command function receives the
 * arguments after its name (argv[0] is the command name) and returns a process exit
 * status: 0 success, 1 failure (already logged), 2 usage error (already printed).
 * The config is loaded lazily by dw_cli_config() so that `--help` and `config describe`
 * work without a config file.
 */
#ifndef DWASYNC_CLI_H
#define DWASYNC_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "dwasync/config.h"

#define DW_EXIT_OK      0
#define DW_EXIT_FAILURE 1
#define DW_EXIT_USAGE   2

struct dw_cli {
    const char *config_path; /* --config value, or NULL */
    bool verbose;            /* --verbose: log at debug level */
    bool config_loaded;
    struct dw_config config;
};

typedef int (*dw_cli_command_fn)(struct dw_cli *cli, int argc, char **argv);

struct dw_cli_command {
    const char *name;
    dw_cli_command_fn run;
    const char *usage;   /* arguments, e.g. "[--job NAME]" */
    const char *summary; /* one line for `dwasync --help` */
};

/* The command table (NULL-terminated), defined in src/cli/commands.c. */
extern const struct dw_cli_command dw_cli_commands[];

/*
 * Loads the config on first use (explicit path, $DWASYNC_CONFIG, or the default path; a
 * missing default file means built-in defaults) and applies its log settings. NULL on
 * failure, after printing every problem. Borrowed; owned by cli.
 */
const struct dw_config *dw_cli_config(struct dw_cli *cli);

/* Prints "usage: dwasync NAME FORM" for each form of a command to stderr; returns
 * DW_EXIT_USAGE. */
int dw_cli_usage(const char *name);

/* Prints the list of commands, each with its forms, to out. */
void dw_cli_print_help(FILE *out);

/* True when word is a subcommand of c (the first word of one of its forms). */
bool dw_cli_is_subcommand(const struct dw_cli_command *c, const char *word);

/* Prints the forms of c, or of its subcommand sub (NULL or not a subcommand: all), and its
 * summary to out: the answer to `dwasync COMMAND [SUB] --help`. */
void dw_cli_command_help(FILE *out, const struct dw_cli_command *c, const char *sub);

/*
 * Prepares a command's arguments (argv[0] is the command name): takes the global options
 * that follow the command (--verbose, --config FILE, --config=FILE) into cli and removes
 * them from argv, up to a "--". Sets *help when --help or -h is among the arguments.
 * Returns the new argc; the pointers stay borrowed from the caller's argv.
 */
int dw_cli_take_global_options(struct dw_cli *cli, int argc, char **argv, bool *help);

/* Connects to the control database / the source database of the config (logged on failure). */
dw_rc dw_cli_connect_control(struct dw_cli *cli, const char *purpose, PGconn **out);
dw_rc dw_cli_connect_source(struct dw_cli *cli, const char *purpose, PGconn **out);

struct dw_jobdef;

/*
 * Checks a loaded definition against the source catalog and, with dataverse, against the
 * Dataverse metadata of its tables ([dataverse] url set); prints every finding to stderr.
 * With record (a control connection) and no error, the string lengths of that metadata are
 * recorded for the job (dw_job_maps_record_lengths). Returns the number of errors, or -1
 * when the checks could not run (logged).
 */
int dw_cli_map_validate(struct dw_cli *cli, const struct dw_jobdef *def, bool dataverse,
                        PGconn *record);

/* `map scaffold` (src/cli/cmd_scaffold.c); argv[0] is "scaffold". */
int dw_cli_map_scaffold(struct dw_cli *cli, int argc, char **argv);

/* Command implementations, one per family (src/cli/cmd_*.c). */
int dw_cmd_init(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_config(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_status(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_check(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_version(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_run(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_decode(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_errors(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_map(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_job(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_dataverse(struct dw_cli *cli, int argc, char **argv);
int dw_cmd_verify(struct dw_cli *cli, int argc, char **argv);

#endif

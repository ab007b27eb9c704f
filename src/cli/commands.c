/*
 * The dwasync command table, the usage lines and the `--help` text (see cli.h). A command
 * is added here and nowhere else: main() dispatches through the table and help prints it.
 */
#include "dwasync/cli.h"

#include <ctype.h>
#include <string.h>

/*
 * Each command's usage is a list of forms, one per line ("create NAME [...]\nlist"); a form
 * that starts with a lowercase word is a subcommand, a line that starts with spaces continues
 * the form above it. `dwasync --help` lists every command once with its forms under it;
 * `dwasync COMMAND --help` prints the command's forms, `dwasync COMMAND SUB --help` the forms
 * of one subcommand.
 */
const struct dw_cli_command dw_cli_commands[] = {
    {"init", dw_cmd_init, "", "install or upgrade the control schema (idempotent)"},
    {"config", dw_cmd_config, "describe\nsample\nvalidate [FILE]",
     "list configuration keys, print a sample file, or validate a file"},
    {"check", dw_cmd_check, "[--job NAME] [--json] [--verbose]",
     "health check of config, secrets, Postgres, replication and Dataverse"},
    {"job", dw_cmd_job,
     "create NAME [--environment-url URL]\nlist\nshow NAME\nstart NAME [--initial-sync]\n"
     "stop NAME\npause NAME\nresume NAME\ndrop NAME [--yes]\n"
     "resync NAME [--map M]... [--legal-entity LE]... [--where SQL]\n"
     "relink NAME [--resync|--verify]",
     "manage integration jobs"},
    {"map", dw_cmd_map,
     "import FILE\nexport JOB [FILE]\nlist [JOB]\nvalidate JOB\n"
     "scaffold --source SCHEMA[.TABLE] --target NAME[,NAME...] [--metadata FILE]",
     "load, write back, list and check table maps"},
    {"verify", dw_cmd_verify, "JOB [--map M]... [--repair]",
     "compare Dataverse with the source through the maps; --repair queues the fixes"},
    {"run", dw_cmd_run, "[--job NAME] [--until-caught-up]",
     "the daemon: apply the job's changes to Dataverse until stopped"},
    {"status", dw_cmd_status, "[--json] [--at TIMESTAMP]",
     "jobs with state, lag, throughput, error counts and throttling"},
    {"errors", dw_cmd_errors,
     "list [--job J] [--status S] [--table T] [--code C] [--limit N]\nshow ID\n"
     "replay ID...|--all [--job J] [--table T] [--code C] [--queue-only]\n"
     "skip ID... --reason TEXT\nresolve-from-source ID...",
     "triage the error table: list, show, replay, skip or resolve from the source"},
    {"dataverse", dw_cmd_dataverse, "whoami\nget PATH\napply [FILE]\nmetadata TABLE...",
     "check the connection, GET a Web API path, apply JSON-line writes, export metadata"},
    {"decode", dw_cmd_decode,
     "--publication P [--slot S] [--create-slot] [--initial-sync T,...]\n"
     "    [--until-caught-up] [--limit N]",
     "print decoded row changes of a publication as JSON lines"},
    {"version", dw_cmd_version, "", "print the version"},
    {NULL, NULL, NULL, NULL},
};

static const struct dw_cli_command *find(const char *name)
{
    for (const struct dw_cli_command *c = dw_cli_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* Length of the form's first word when the form is a subcommand, else 0. */
static size_t sub_len(const char *form, size_t len)
{
    size_t n = 0;
    if (len == 0 || !islower((unsigned char)form[0]))
        return 0;
    while (n < len && form[n] != ' ')
        n++;
    return n;
}

/*
 * Prints the forms of c (those of subcommand sub alone when sub names one), the first after
 * first_prefix, the others after other_prefix, each after the command name when named.
 * Returns the number of forms printed.
 */
static int print_forms(FILE *out, const struct dw_cli_command *c, const char *sub, bool named,
                       const char *first_prefix, const char *other_prefix)
{
    int printed = 0;
    bool continued = false; /* the previous form was printed: its continuation lines go too */
    for (const char *p = c->usage;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        bool continuation = len > 0 && p[0] == ' ';
        size_t n = sub_len(p, len);
        bool wanted =
            continuation ? continued : sub == NULL || (n == strlen(sub) && strncmp(p, sub, n) == 0);
        if (wanted) {
            if (continuation)
                fprintf(out, "%*s%.*s\n",
                        (int)(strlen(other_prefix) + (named ? strlen(c->name) + 1 : 0)), "",
                        (int)len, p);
            else
                fprintf(out, "%s%s%s%.*s\n", printed ? other_prefix : first_prefix,
                        named ? c->name : "", named && len ? " " : "", (int)len, p);
            printed += !continuation;
        }
        if (!continuation)
            continued = wanted;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return printed;
}

bool dw_cli_is_subcommand(const struct dw_cli_command *c, const char *word)
{
    for (const char *p = c->usage;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        size_t n = sub_len(p, len);
        if (n > 0 && n == strlen(word) && strncmp(p, word, n) == 0)
            return true;
        if (nl == NULL)
            return false;
        p = nl + 1;
    }
}

int dw_cli_usage(const char *name)
{
    const struct dw_cli_command *c = find(name);
    if (c == NULL) {
        fprintf(stderr, "usage: dwasync %s\n", name);
        return DW_EXIT_USAGE;
    }
    print_forms(stderr, c, NULL, true, "usage: dwasync ", "       dwasync ");
    fprintf(stderr, "(dwasync %s --help for more)\n", name);
    return DW_EXIT_USAGE;
}

void dw_cli_command_help(FILE *out, const struct dw_cli_command *c, const char *sub)
{
    if (sub == NULL || !dw_cli_is_subcommand(c, sub))
        sub = NULL;
    print_forms(out, c, sub, true, "usage: dwasync ", "       dwasync ");
    fprintf(out, "\n%s\n", c->summary);
    fprintf(out, "\nglobal options, before or after the command: --config FILE, --verbose\n"
                 "man dwasync for every option\n");
}

void dw_cli_print_help(FILE *out)
{
    fprintf(out, "usage: dwasync [--config FILE] [--verbose] COMMAND [ARGS]\n\n"
                 "Asynchronous dual-write from a PostgreSQL staging mirror of Dynamics 365\n"
                 "Finance & Operations into Microsoft Dataverse.\n\ncommands:\n");
    for (const struct dw_cli_command *c = dw_cli_commands; c->name; c++) {
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
        if (*c->usage)
            print_forms(out, c, NULL, false, "             ", "             ");
    }
    fprintf(out,
            "\nEvery command and subcommand answers --help. --config and --verbose may also\n"
            "follow the command. Config: --config FILE, else $DWASYNC_CONFIG, else %s\n",
            DW_CONFIG_DEFAULT_PATH);
}

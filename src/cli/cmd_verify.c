/*
 * `dwasync verify JOB [--map M]... [--repair]`: compares Dataverse with the source through the
 * job's maps (verify.h), prints progress to stderr and a summary to stdout. Exit status 0 when
 * Dataverse equals what the maps make of the source, 3 when drift was found (recorded in
 * dwasync.verify_result; with --repair the fixes are queued for the daemon), 1 on failure.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/cli.h"
#include "dwasync/verify.h"

/* Exit status of a verification that found drift. */
#define EXIT_DRIFT 3

int dw_cmd_verify(struct dw_cli *cli, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return dw_cli_usage("verify");
    const char **maps = dw_calloc((size_t)argc, sizeof *maps);
    struct dw_verify_options o = {.job = argv[1], .maps = maps, .progress = stderr};
    int status = DW_EXIT_USAGE;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--repair") == 0)
            o.repair = true;
        else if (strcmp(argv[i], "--map") == 0 && i + 1 < argc)
            maps[o.nmaps++] = argv[++i];
        else
            goto out;
    }
    status = DW_EXIT_FAILURE;
    if ((o.config = dw_cli_config(cli)) == NULL)
        goto out;
    struct dw_verify_summary s;
    if (dw_verify_run(&o, &s) != DW_OK)
        goto out;
    int64_t drift = s.missing + s.extra + s.different;
    printf("verify run %" PRId64 " of job \"%s\": %" PRId64 " source rows, %" PRId64
           " Dataverse rows: %" PRId64 " missing, %" PRId64 " extra, %" PRId64 " different%s\n",
           s.run_id, o.job, s.source_rows, s.target_rows, s.missing, s.extra, s.different,
           drift ? " (dwasync.verify_result has each row)" : "");
    if (o.repair && drift)
        printf("repair: %" PRId64 " extra row%s deleted, %d keyed cop%s queued; the daemon "
               "applies them interleaved with the stream\n",
               s.deleted, s.deleted == 1 ? "" : "s", s.copies_queued,
               s.copies_queued == 1 ? "y" : "ies");
    status = drift ? EXIT_DRIFT : DW_EXIT_OK;
out:
    free(maps);
    return status == DW_EXIT_USAGE ? dw_cli_usage("verify") : status;
}

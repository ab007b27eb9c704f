/* `dwasync decode`: print decoded row changes of a publication as JSON lines. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"

#include "dwasync/cli.h"
#include "dwasync/log.h"
#include "dwasync/snapshot.h"
#include "dwasync/stream.h"
#include "dwasync/values.h"

#define DEFAULT_SLOT "dwasync_decode"
#define STEP_CHANGES 4096
#define OUT_FLUSH    (256 * 1024)

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

struct decoder {
    struct dw_values_options values;
    struct dw_buf out;
    bool in_txn;
    dw_lsn done_lsn; /* end LSN of the last transaction fully written */
    dw_lsn pending_lsn;
    long long printed, limit;
    long long seen; /* changes dispatched, printed or not */
    bool write_failed;
};

static bool flush_out(struct decoder *d)
{
    if (d->out.len && fwrite(d->out.data, 1, d->out.len, stdout) != d->out.len)
        d->write_failed = true;
    dw_buf_reset(&d->out);
    if (fflush(stdout) != 0)
        d->write_failed = true;
    return !d->write_failed;
}

static dw_rc on_begin(void *user, const struct dw_txn *t)
{
    struct decoder *d = user;
    (void)t;
    d->in_txn = true;
    return DW_OK;
}

static dw_rc on_change(void *user, const struct dw_change *c)
{
    struct decoder *d = user;
    d->seen++;
    if (d->limit && d->printed >= d->limit)
        return DW_OK;
    dw_rc rc = dw_change_append_json(&d->out, c, &d->values);
    if (rc != DW_OK) {
        DW_ERROR("change at %X/%X is too large to print", DW_LSN_ARGS(c->lsn));
        return rc;
    }
    d->printed++;
    if (d->out.len >= OUT_FLUSH && fwrite(d->out.data, 1, d->out.len, stdout) != d->out.len)
        d->write_failed = true;
    if (d->out.len >= OUT_FLUSH)
        dw_buf_reset(&d->out);
    return d->write_failed ? DW_ERR_IO : DW_OK;
}

static dw_rc on_commit(void *user, const struct dw_txn *t)
{
    struct decoder *d = user;
    d->in_txn = false;
    if (!d->limit || d->printed < d->limit)
        d->pending_lsn = t->end_lsn;
    return DW_OK;
}

static void on_reset(void *user)
{
    struct decoder *d = user;
    d->in_txn = false;
}

static int parse_limit(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* --initial-sync "t1,s.t2": the tables' rows as inserts, then the stream from that point. */
static dw_rc run_initial_sync(const struct dw_config *cfg, const char *slot, const char *list,
                              const struct dw_stream_handler *h, struct decoder *d)
{
    char *copy = dw_strdup(list);
    const char *tables[64];
    size_t n = 0;
    dw_rc rc = DW_OK;
    for (char *p = copy; p && *p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (n == sizeof tables / sizeof tables[0]) {
            DW_ERROR("--initial-sync takes at most 64 tables");
            rc = DW_ERR_INVALID;
            goto out;
        }
        tables[n++] = p;
        p = comma ? comma + 1 : NULL;
    }
    struct dw_snapshot_options so = {cfg->source.conninfo, slot, tables, n,
                                     cfg->source.snapshot_fetch_rows};
    dw_lsn cp;
    rc = dw_snapshot_run(&so, h, &cp);
    if (rc == DW_OK && !flush_out(d))
        rc = DW_ERR_IO;
    if (rc == DW_OK)
        d->done_lsn = cp;
out:
    free(copy);
    return rc;
}

int dw_cmd_decode(struct dw_cli *cli, int argc, char **argv)
{
    const char *publication = NULL, *slot = DEFAULT_SLOT, *record = NULL, *initial = NULL;
    const char *replay = NULL;
    bool create_slot = false, until_caught_up = false;
    struct decoder d = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--publication") == 0 && i + 1 < argc)
            publication = argv[++i];
        else if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc)
            slot = argv[++i];
        else if (strcmp(argv[i], "--initial-sync") == 0 && i + 1 < argc)
            initial = argv[++i];
        else if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc)
            replay = argv[++i];
        else if (strcmp(argv[i], "--record") == 0 && i + 1 < argc)
            record = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (parse_limit(argv[++i], &d.limit) != 0) {
                fprintf(stderr, "dwasync decode: --limit needs a non-negative integer\n");
                return DW_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--create-slot") == 0)
            create_slot = true;
        else if (strcmp(argv[i], "--until-caught-up") == 0)
            until_caught_up = true;
        else
            return dw_cli_usage("decode");
    }
    if (publication == NULL && replay == NULL)
        return dw_cli_usage("decode");
    const struct dw_config *cfg = dw_cli_config(cli);
    if (cfg == NULL)
        return DW_EXIT_FAILURE;
    if (dw_values_options_init(&d.values, cfg->source.timezone) != DW_OK)
        return DW_EXIT_FAILURE;

    struct dw_types *types = dw_types_new();
    d.values.types = types;
    dw_buf_init(&d.out, 0);
    struct dw_stream_options so = {
        .conninfo = cfg->source.conninfo,
        .slot = slot,
        .publication = publication,
        .status_interval_ms = cfg->source.status_interval_ms,
        .reconnect_max_ms = cfg->source.reconnect_max_ms,
        .create_slot = create_slot,
        .types = types,
        .record_path = record,
    };
    struct dw_stream_handler h = {&d, on_begin, on_change, on_commit, on_reset, NULL};
    struct dw_stream *s = NULL;
    int status = DW_EXIT_FAILURE;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (replay) {
        struct dw_pgoutput_handler ph = {&d, on_begin, on_change, on_commit, NULL};
        if (dw_stream_replay(replay, types, &ph) == DW_OK && flush_out(&d))
            status = DW_EXIT_OK;
        goto out;
    }
    if (initial && run_initial_sync(cfg, slot, initial, &h, &d) != DW_OK)
        goto out;
    if (dw_stream_open(&so, &h, &s) != DW_OK)
        goto out;
    bool more = false; /* the last step used its budget: do not wait for the fd */
    while (!stop_requested) {
        struct pollfd pfd = {dw_stream_fd(s), POLLIN, 0};
        int timeout = more ? 0 : dw_stream_timeout_ms(s);
        if (pfd.fd >= 0 ? poll(&pfd, 1, timeout) < 0 : poll(NULL, 0, timeout) < 0) {
            if (errno == EINTR)
                continue;
            DW_ERROR("poll failed: %s", strerror(errno));
            goto out;
        }
        size_t room = STEP_CHANGES;
        if (d.limit && d.limit - d.printed < (long long)room)
            room = (size_t)(d.limit - d.printed);
        long long before = d.seen;
        dw_rc rc = dw_stream_step(s, room ? room : 1);
        if (rc != DW_OK) {
            if (d.write_failed)
                DW_ERROR("cannot write to standard output: %s", strerror(errno));
            goto out;
        }
        more = d.seen - before >= (long long)(room ? room : 1);
        /* What is printed and flushed is durable for decode: confirm it. */
        if (!flush_out(&d)) {
            DW_ERROR("cannot write to standard output: %s", strerror(errno));
            goto out;
        }
        if (d.pending_lsn > d.done_lsn)
            d.done_lsn = d.pending_lsn;
        dw_stream_confirm(s, d.done_lsn, !d.in_txn);
        if (d.limit && d.printed >= d.limit)
            break;
        if (until_caught_up && dw_stream_start_lsn(s) != 0 && !d.in_txn &&
            dw_stream_received_lsn(s) >= dw_stream_start_lsn(s))
            break;
    }
    status = DW_EXIT_OK;
out:
    dw_stream_close(s); /* sends the final confirmation */
    dw_types_free(types);
    dw_buf_cleanup(&d.out);
    return status;
}

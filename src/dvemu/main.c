/* dvemu: the Dataverse Web API emulator's entry point. Strict option parsing, then
 * dw_dvemu_run() until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvemu.h"
#include "dwasync/log.h"
#include "dwasync/secret.h"

/* Every option on one line: this help is complete on its own (dvemu(1) says the same, at
 * length; test_dvemu_help keeps them in step). */
static void usage(FILE *f)
{
    fputs(
        "usage: dvemu --metadata FILE --tenant ID (--client ID:SECRET | --client-cert "
        "ID:CERTFILE)\n"
        "             [options]\n"
        "\n"
        "  --listen HOST:PORT         address to listen on (127.0.0.1:0; port 0 picks a free one)\n"
        "  --port-file FILE           write the port there once listening\n"
        "  --metadata FILE            tables, columns, keys and relationships to emulate (JSON)\n"
        "  --state FILE               load the rows from FILE at start, save them there at "
        "SIGTERM\n"
        "  --tls-cert FILE            serve HTTPS with this PEM certificate (needs --tls-key)\n"
        "  --tls-key FILE             the PEM private key of --tls-cert\n"
        "  --tenant ID                tenant of the token endpoint /ID/oauth2/v2.0/token\n"
        "  --client ID:SECRET         a client with a secret (ID:@FILE reads it); repeatable\n"
        "  --client-cert ID:CERTFILE  a client signing JWT assertions with this certificate's key\n"
        "  --token-lifetime SECONDS   access token lifetime (3599)\n"
        "  --clock real|manual        manual: time stands still until POST /_dvemu/clock moves it\n"
        "  --admin                    enable the /_dvemu/ inspection, clock and fault endpoints\n"
        "  --lenient-keys             accept / < > * % & : \\ ? + in key values of URLs "
        "(Dataverse: 400)\n"
        "  --threads N                0: a thread per connection (default); N: N epoll threads\n"
        "  --page-size N              rows per page of a collection (5000, as Dataverse)\n"
        "  --limit-requests N         service protection: requests per user and window (6000)\n"
        "  --limit-exec-ms N          execution time per user and window, in ms (1200000)\n"
        "  --limit-window SECONDS     length of the sliding window (300)\n"
        "  --limit-concurrent N       concurrent requests per user (52)\n"
        "  --dop-hint N               the x-ms-dop-hint header's value (8)\n"
        "  --cost-request-ms N        server time of every Web API request (0)\n"
        "  --cost-row-ms N            server time of each row written singly (0)\n"
        "  --cost-bulk-row-ms N       server time of each row of a *Multiple action (0)\n"
        "  --cost-bypass-percent P    row time when custom synchronous logic is bypassed, % (50)\n"
        "  --history-max N            write history entries kept (250000; 0 disables)\n"
        "  --faults JSON              faults, as POST /_dvemu/faults takes them\n"
        "  --privileges JSON          privileges revoked from the user, as POST "
        "/_dvemu/privileges\n"
        "  --log-level LEVEL          debug, info (default), warn, error\n"
        "  --log-format FORMAT        logfmt (default) or json\n"
        "  --help                     print this help and exit\n"
        "  --version                  print the version and exit\n"
        "\n"
        "man dvemu: the metadata file, the admin endpoints, server cost, what is not emulated\n",
        f);
}

static dw_rc parse_int(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "dvemu: %s needs an integer from %ld to %ld, not \"%s\"\n", opt, min, max,
                s);
        return DW_ERR_INVALID;
    }
    *out = v;
    return DW_OK;
}

/* Replaces *out with the JSON document of an option's argument. */
static dw_rc parse_json(const char *opt, const char *s, json_t **out)
{
    json_error_t jerr;
    json_t *doc = json_loads(s, 0, &jerr);
    if (doc == NULL) {
        fprintf(stderr, "dvemu: %s is not JSON: %s\n", opt, jerr.text);
        return DW_ERR_INVALID;
    }
    json_decref(*out);
    *out = doc;
    return DW_OK;
}

static dw_rc add_client(struct dw_dvemu_options *o, const char *arg, bool cert)
{
    const char *colon = strchr(arg, ':');
    if (colon == NULL || colon == arg || colon[1] == '\0') {
        fprintf(stderr, "dvemu: %s needs ID:%s\n", cert ? "--client-cert" : "--client",
                cert ? "CERTFILE" : "SECRET");
        return DW_ERR_INVALID;
    }
    o->clients = dw_realloc(o->clients, (o->nclients + 1) * sizeof *o->clients);
    struct dw_dvemu_client *c = &o->clients[o->nclients++];
    memset(c, 0, sizeof *c);
    c->id = dw_strndup(arg, (size_t)(colon - arg));
    if (cert) {
        c->cert_file = dw_strdup(colon + 1);
    } else if (colon[1] == '@') {
        size_t len;
        if (dw_secret_read(colon + 2, 0, &c->secret, &len) != DW_OK)
            return DW_ERR_SECRET;
    } else {
        c->secret = dw_strdup(colon + 1);
    }
    return DW_OK;
}

int main(int argc, char **argv)
{
    enum {
        O_LISTEN = 256,
        O_PORT_FILE,
        O_METADATA,
        O_STATE,
        O_TLS_CERT,
        O_TLS_KEY,
        O_TENANT,
        O_CLIENT,
        O_CLIENT_CERT,
        O_TOKEN_LIFETIME,
        O_CLOCK,
        O_ADMIN,
        O_LENIENT_KEYS,
        O_THREADS,
        O_PAGE_SIZE,
        O_LIMIT_REQUESTS,
        O_LIMIT_EXEC,
        O_LIMIT_WINDOW,
        O_LIMIT_CONCURRENT,
        O_DOP_HINT,
        O_COST_REQUEST,
        O_COST_ROW,
        O_COST_BULK_ROW,
        O_COST_BYPASS,
        O_HISTORY_MAX,
        O_FAULTS,
        O_PRIVILEGES,
        O_LOG_LEVEL,
        O_LOG_FORMAT,
        O_VERSION,
    };
    static const struct option options[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"port-file", required_argument, NULL, O_PORT_FILE},
        {"metadata", required_argument, NULL, O_METADATA},
        {"state", required_argument, NULL, O_STATE},
        {"tls-cert", required_argument, NULL, O_TLS_CERT},
        {"tls-key", required_argument, NULL, O_TLS_KEY},
        {"tenant", required_argument, NULL, O_TENANT},
        {"client", required_argument, NULL, O_CLIENT},
        {"client-cert", required_argument, NULL, O_CLIENT_CERT},
        {"token-lifetime", required_argument, NULL, O_TOKEN_LIFETIME},
        {"clock", required_argument, NULL, O_CLOCK},
        {"admin", no_argument, NULL, O_ADMIN},
        {"lenient-keys", no_argument, NULL, O_LENIENT_KEYS},
        {"threads", required_argument, NULL, O_THREADS},
        {"page-size", required_argument, NULL, O_PAGE_SIZE},
        {"limit-requests", required_argument, NULL, O_LIMIT_REQUESTS},
        {"limit-exec-ms", required_argument, NULL, O_LIMIT_EXEC},
        {"limit-window", required_argument, NULL, O_LIMIT_WINDOW},
        {"limit-concurrent", required_argument, NULL, O_LIMIT_CONCURRENT},
        {"dop-hint", required_argument, NULL, O_DOP_HINT},
        {"cost-request-ms", required_argument, NULL, O_COST_REQUEST},
        {"cost-row-ms", required_argument, NULL, O_COST_ROW},
        {"cost-bulk-row-ms", required_argument, NULL, O_COST_BULK_ROW},
        {"cost-bypass-percent", required_argument, NULL, O_COST_BYPASS},
        {"history-max", required_argument, NULL, O_HISTORY_MAX},
        {"faults", required_argument, NULL, O_FAULTS},
        {"privileges", required_argument, NULL, O_PRIVILEGES},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"log-format", required_argument, NULL, O_LOG_FORMAT},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct dw_dvemu_options o;
    dw_dvemu_options_init(&o);
    enum dw_log_level level = DW_LOG_INFO;
    enum dw_log_format format = DW_LOG_LOGFMT;
    int status = 2;
    int opt;
    long v;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        dw_rc rc = DW_OK;
        switch (opt) {
        case O_LISTEN: {
            const char *colon = strrchr(optarg, ':');
            if (colon == NULL || colon == optarg) {
                fprintf(stderr, "dvemu: --listen needs HOST:PORT\n");
                goto out;
            }
            free(o.listen_host);
            o.listen_host = dw_strndup(optarg, (size_t)(colon - optarg));
            rc = parse_int("--listen port", colon + 1, 0, 65535, &v);
            o.listen_port = (int)v;
            break;
        }
        case O_PORT_FILE:
            free(o.port_file);
            o.port_file = dw_strdup(optarg);
            break;
        case O_METADATA:
            free(o.metadata_file);
            o.metadata_file = dw_strdup(optarg);
            break;
        case O_STATE:
            free(o.state_file);
            o.state_file = dw_strdup(optarg);
            break;
        case O_TLS_CERT:
            free(o.tls_cert);
            o.tls_cert = dw_strdup(optarg);
            break;
        case O_TLS_KEY:
            free(o.tls_key);
            o.tls_key = dw_strdup(optarg);
            break;
        case O_TENANT:
            free(o.tenant);
            o.tenant = dw_strdup(optarg);
            break;
        case O_CLIENT:
            rc = add_client(&o, optarg, false);
            break;
        case O_CLIENT_CERT:
            rc = add_client(&o, optarg, true);
            break;
        case O_TOKEN_LIFETIME:
            rc = parse_int("--token-lifetime", optarg, 1, 86400, &v);
            o.token_lifetime = (int)v;
            break;
        case O_CLOCK:
            if (strcmp(optarg, "real") != 0 && strcmp(optarg, "manual") != 0) {
                fprintf(stderr, "dvemu: --clock is real or manual, not \"%s\"\n", optarg);
                rc = DW_ERR_INVALID;
            }
            o.manual_clock = strcmp(optarg, "manual") == 0;
            break;
        case O_ADMIN:
            o.admin = true;
            break;
        case O_LENIENT_KEYS:
            o.lenient_keys = true;
            break;
        case O_THREADS:
            rc = parse_int("--threads", optarg, 0, 256, &v);
            o.threads = (int)v;
            break;
        case O_PAGE_SIZE:
            rc = parse_int("--page-size", optarg, 1, 5000, &v);
            o.page_size = (int)v;
            break;
        case O_LIMIT_REQUESTS:
            rc = parse_int("--limit-requests", optarg, 1, INT_MAX, &v);
            o.limit_requests = (int)v;
            break;
        case O_LIMIT_EXEC:
            rc = parse_int("--limit-exec-ms", optarg, 1, INT_MAX, &v);
            o.limit_exec_ms = (int)v;
            break;
        case O_LIMIT_WINDOW:
            rc = parse_int("--limit-window", optarg, 1, 86400, &v);
            o.limit_window_s = (int)v;
            break;
        case O_LIMIT_CONCURRENT:
            rc = parse_int("--limit-concurrent", optarg, 1, 100000, &v);
            o.limit_concurrent = (int)v;
            break;
        case O_DOP_HINT:
            rc = parse_int("--dop-hint", optarg, 1, 10000, &v);
            o.dop_hint = (int)v;
            break;
        case O_COST_REQUEST:
            rc = parse_int("--cost-request-ms", optarg, 0, 600000, &v);
            o.cost_request_ms = (int)v;
            break;
        case O_COST_ROW:
            rc = parse_int("--cost-row-ms", optarg, 0, 600000, &v);
            o.cost_row_ms = (int)v;
            break;
        case O_COST_BULK_ROW:
            rc = parse_int("--cost-bulk-row-ms", optarg, 0, 600000, &v);
            o.cost_bulk_row_ms = (int)v;
            break;
        case O_COST_BYPASS:
            rc = parse_int("--cost-bypass-percent", optarg, 0, 100, &v);
            o.cost_bypass_percent = (int)v;
            break;
        case O_HISTORY_MAX:
            rc = parse_int("--history-max", optarg, 0, LONG_MAX, &v);
            o.history_max = (size_t)v;
            break;
        case O_FAULTS:
            rc = parse_json("--faults", optarg, &o.faults);
            break;
        case O_PRIVILEGES:
            rc = parse_json("--privileges", optarg, &o.privileges);
            break;
        case O_LOG_LEVEL:
            rc = dw_log_level_parse(optarg, &level);
            break;
        case O_LOG_FORMAT:
            rc = dw_log_format_parse(optarg, &format);
            break;
        case 'h':
            usage(stdout);
            status = 0;
            goto out;
        case O_VERSION:
            printf("dvemu %s\n", DW_VERSION);
            status = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
        if (rc != DW_OK)
            goto out;
    }
    if (optind < argc) {
        fprintf(stderr, "dvemu: unexpected argument \"%s\"\n", argv[optind]);
        goto out;
    }
    if (o.metadata_file == NULL || o.tenant == NULL || o.nclients == 0) {
        fprintf(stderr, "dvemu: --metadata, --tenant and at least one --client or "
                        "--client-cert are required\n");
        usage(stderr);
        goto out;
    }
    if (o.manual_clock && !o.admin) {
        fprintf(stderr, "dvemu: --clock manual needs --admin (the clock moves through "
                        "POST /_dvemu/clock)\n");
        goto out;
    }
    if ((o.tls_cert == NULL) != (o.tls_key == NULL)) {
        fprintf(stderr, "dvemu: --tls-cert and --tls-key go together\n");
        goto out;
    }
    dw_log_configure(level, format);
    dw_log_set_timestamps(true);
    status = dw_dvemu_run(&o) == DW_OK ? 0 : 1;
out:
    dw_dvemu_options_cleanup(&o);
    return status;
}

/*
 * Unit tests of the sink's API and of dw_dvmeta_fetch against a dvemu started here
 * ($DVEMU_BIN, the sample metadata): config errors, submit validation and ownership,
 * callbacks exactly once from dw_sink_run, freeing with writes in flight, table metadata,
 * write options on every request (dvemu's request log, /_dvemu/requests), and, against a
 * peer forked here, that no cookie (Azure's ARRAffinity) is ever sent back.
 */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/dvmeta.h"
#include "dwasync/loop.h"
#include "dwasync/sink.h"

extern char **environ;

static char dir[] = "/tmp/dw-sink-test.XXXXXX";
static pid_t dvemu_pid;
static int dvemu_port;

/* Setup runs outside any test, where ck_assert cannot report: fail loudly instead. */
static _Noreturn void setup_failed(const char *why)
{
    fprintf(stderr, "test_sink setup: %s\n", why);
    exit(EXIT_FAILURE);
}

static void start_dvemu(void)
{
    const char *bin = getenv("DVEMU_BIN");
    const char *src = getenv("DWASYNC_SOURCE_DIR");
    if (bin == NULL || src == NULL || mkdtemp(dir) == NULL)
        setup_failed("DVEMU_BIN and DWASYNC_SOURCE_DIR must be set, and /tmp writable");
    char secret[512], port[512], client[600], meta[512], log[512];
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(port, sizeof port, "%s/port", dir);
    snprintf(log, sizeof log, "%s/dvemu.log", dir);
    snprintf(client, sizeof client, "client-1:@%s", secret);
    snprintf(meta, sizeof meta, "%s/packaging/sample/dataverse-metadata.json", src);
    FILE *f = fopen(secret, "w");
    fputs("unit-test-secret-42\n", f);
    fclose(f);
    chmod(secret, 0600);
    char a_listen[] = "--listen", a_addr[] = "127.0.0.1:0", a_port[] = "--port-file",
         a_meta[] = "--metadata", a_tenant[] = "--tenant", a_tid[] = "tenant-1",
         a_client[] = "--client", a_level[] = "--log-level", a_warn[] = "warn",
         a_admin[] = "--admin";
    char *argv[] = {(char *)bin, a_listen, a_addr, a_port,  port,   a_meta,  meta, a_tenant,
                    a_tid,       a_client, client, a_level, a_warn, a_admin, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (posix_spawn(&dvemu_pid, bin, &fa, NULL, argv, environ) != 0)
        setup_failed("cannot start dvemu");
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 200 && dvemu_port == 0; i++) {
        f = fopen(port, "r");
        if (f) {
            if (fscanf(f, "%d", &dvemu_port) != 1)
                dvemu_port = 0;
            fclose(f);
        }
        if (dvemu_port == 0)
            usleep(50000);
    }
    if (dvemu_port == 0)
        setup_failed("dvemu did not write its port file");
}

static void stop_dvemu(void)
{
    if (dvemu_pid > 0) {
        kill(dvemu_pid, SIGTERM);
        waitpid(dvemu_pid, NULL, 0);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void make_config(struct dw_config *cfg)
{
    char url[64], secret[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", dvemu_port);
    snprintf(secret, sizeof secret, "%s/secret", dir);
    dw_config_init(cfg);
    free(cfg->dataverse.url);
    free(cfg->dataverse.authority);
    free(cfg->dataverse.tenant_id);
    free(cfg->dataverse.client_id);
    free(cfg->dataverse.client_secret_file);
    cfg->dataverse.url = strdup(url);
    cfg->dataverse.authority = strdup(url);
    cfg->dataverse.tenant_id = strdup("tenant-1");
    cfg->dataverse.client_id = strdup("client-1");
    cfg->dataverse.client_secret_file = strdup(secret);
    cfg->dataverse.allow_insecure_http = true; /* dvemu on 127.0.0.1 */
}

struct seen {
    int calls[8];
    enum dw_write_status status[8];
    enum dw_error_class cls[8];
    int http[8];
};

static void on_done(void *user, void *write_user, const struct dw_write_result *r)
{
    struct seen *s = user;
    size_t i = (size_t)(uintptr_t)write_user;
    s->calls[i]++;
    s->status[i] = r->status;
    s->cls[i] = r->error_class;
    s->http[i] = r->http_status;
}

static struct dw_write company(const char *code, const char *name)
{
    struct dw_write w = {.op = DW_WRITE_UPSERT,
                         .entity_set = strdup("cdm_companies"),
                         .logical_name = strdup("cdm_company"),
                         .key = json_pack("{s:s}", "cdm_companycode", code)};
    dw_write_set_body(&w, json_pack("{s:s}", "cdm_name", name));
    return w;
}

START_TEST(config_errors)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    make_config(&cfg);
    free(cfg.dataverse.url);
    cfg.dataverse.url = strdup("ftp://example");
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, NULL, &sink), DW_ERR_CONFIG);
    ck_assert_ptr_null(sink);
    free(cfg.dataverse.url);
    cfg.dataverse.url = strdup("http://127.0.0.1:1");
    free(cfg.dataverse.client_secret_file);
    cfg.dataverse.client_secret_file = strdup("");
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, NULL, &sink), DW_ERR_CONFIG);
    free(cfg.dataverse.client_secret_file);
    cfg.dataverse.client_secret_file = strdup("/nonexistent/secret");
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, NULL, &sink), DW_ERR_SECRET);
    dw_config_cleanup(&cfg);
}
END_TEST

/* Submits two writes (one atomic group when atomic) and frees the sink with them queued:
 * no callback after that, no leak (checked under ASan); cleans the config up. */
static void free_with_writes_queued(struct dw_sink *sink, struct dw_config *cfg,
                                    const struct seen *seen, bool atomic)
{
    void *users[2] = {(void *)0, (void *)1};
    struct dw_write more[2] = {company("Q1", "d"), company("Q2", "e")};
    ck_assert_int_eq(atomic ? dw_sink_submit_atomic(sink, more, users, 2)
                            : dw_sink_submit(sink, more, users, 2),
                     DW_OK);
    ck_assert_int_eq(dw_sink_run(sink, 0), DW_OK);
    int calls = seen->calls[0];
    dw_sink_free(sink);
    ck_assert_int_eq(seen->calls[0], calls);
    dw_config_cleanup(cfg);
}

START_TEST(submit_run_callbacks_once)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, &seen, &sink), DW_OK);

    /* A malformed write refuses the whole call and takes nothing. */
    struct dw_write bad[2] = {company("A", "a"), company("B", "b")};
    json_decref(bad[1].key);
    bad[1].key = json_object();
    void *users[4] = {(void *)0, (void *)1, (void *)2, (void *)3};
    ck_assert_int_eq(dw_sink_submit(sink, bad, users, 2), DW_ERR_INVALID);
    ck_assert_uint_eq(dw_sink_pending(sink), 0);
    ck_assert_ptr_nonnull(bad[0].entity_set); /* still the caller's */
    for (int i = 0; i < 2; i++)
        dw_write_cleanup(&bad[i]);

    struct dw_write w[4] = {company("A", "Alpha"),
                            company("B", "Beta"),
                            company("C", "x"),
                            {.op = DW_WRITE_DELETE,
                             .entity_set = strdup("cdm_companies"),
                             .key = json_pack("{s:s}", "cdm_companycode", "NONE")}};
    /* Too long for cdm_name (100): rejected alone, the others apply. */
    dw_check_body_set(
        &w[2], "cdm_name",
        json_string("0123456789012345678901234567890123456789012345678901234567890123456789"
                    "0123456789012345678901234567890123456789"));
    ck_assert_int_eq(dw_sink_submit(sink, w, users, 4), DW_OK);
    ck_assert_ptr_null(w[0].entity_set); /* taken */
    ck_assert_ptr_null(w[0].key);
    ck_assert_uint_eq(dw_sink_pending(sink), 4);
    ck_assert_int_eq(seen.calls[0], 0); /* never from submit */
    for (int i = 0; i < 200 && dw_sink_pending(sink) > 0; i++)
        ck_assert_int_eq(dw_sink_run(sink, 100), DW_OK);
    ck_assert_uint_eq(dw_sink_pending(sink), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(seen.calls[i], 1);
    ck_assert_int_eq(seen.status[0], DW_WRITE_APPLIED);
    ck_assert_int_eq(seen.status[1], DW_WRITE_APPLIED);
    ck_assert_int_eq(seen.status[2], DW_WRITE_REJECTED);
    ck_assert_int_eq(seen.cls[2], DW_ERRCLASS_VALIDATION);
    ck_assert_int_eq(seen.http[2], 400);
    ck_assert_int_eq(seen.status[3], DW_WRITE_APPLIED);
    ck_assert_int_eq(seen.http[3], 404);

    struct dw_sink_stats st;
    dw_sink_get_stats(sink, &st);
    ck_assert_uint_eq(st.rows_applied, 3);
    ck_assert_uint_eq(st.rows_rejected, 1);
    ck_assert_uint_ge(st.requests, 3);
    ck_assert_uint_ge(st.token_renewals, 1);
    ck_assert_int_eq(st.in_flight, 0);

    /* Blocking helpers. */
    char *uid = NULL;
    ck_assert_int_eq(dw_sink_whoami(sink, &uid), DW_OK);
    ck_assert_uint_eq(strlen(uid), 36);
    free(uid);
    json_t *doc = NULL;
    ck_assert_int_eq(dw_sink_get_json(sink, "cdm_companies(cdm_companycode='A')", &doc), DW_OK);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "cdm_name")), "Alpha");
    json_decref(doc);
    ck_assert_int_eq(dw_sink_get_json(sink, "cdm_companies(cdm_companycode='ZZ')", &doc),
                     DW_ERR_NOT_FOUND);
    ck_assert_int_eq(dw_sink_get_json(sink, "nosuchset", &doc), DW_ERR_NOT_FOUND);

    free_with_writes_queued(sink, &cfg, &seen, false);
}
END_TEST

/* Runs the sink until nothing is pending. */
static void run_until_done(struct dw_sink *sink)
{
    for (int i = 0; i < 300 && dw_sink_pending(sink) > 0; i++)
        ck_assert_int_eq(dw_sink_run(sink, 100), DW_OK);
    ck_assert_uint_eq(dw_sink_pending(sink), 0);
}

/* Submits n writes at once (users 0..n-1) and runs the sink until all are done; returns
 * how many applied. */
static int apply_all(struct dw_sink *sink, struct seen *seen, struct dw_write *w, size_t n)
{
    void *users[8];
    ck_assert_uint_le(n, 8);
    for (size_t i = 0; i < n; i++)
        users[i] = (void *)(uintptr_t)i;
    memset(seen, 0, sizeof *seen);
    ck_assert_int_eq(dw_sink_submit(sink, w, users, n), DW_OK);
    run_until_done(sink);
    int applied = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(seen->calls[i], 1);
        applied += seen->status[i] == DW_WRITE_APPLIED;
    }
    return applied;
}

/* Submits one write and runs the sink until its callback came; returns its status. */
static enum dw_write_status apply_one(struct dw_sink *sink, struct seen *seen, struct dw_write w)
{
    apply_all(sink, seen, &w, 1);
    return seen->status[0];
}

/* The id of company code, read from Dataverse; the caller frees it. */
static char *company_id(struct dw_sink *sink, const char *code)
{
    char path[100];
    json_t *doc = NULL;
    snprintf(path, sizeof path, "cdm_companies(cdm_companycode='%s')", code);
    ck_assert_int_eq(dw_sink_get_json(sink, path, &doc), DW_OK);
    char *id = strdup(json_string_value(json_object_get(doc, "cdm_companyid")));
    json_decref(doc);
    return id;
}

static struct dw_write account_r1(enum dw_write_op op)
{
    json_t *key =
        json_pack("{s:s, s:{s:s, s:{s:s}}}", "accountnumber", "R1", "_msdyn_company_value", "$ref",
                  "cdm_companies", "key", "cdm_companycode", "P2");
    struct dw_write w = {
        .op = op, .entity_set = strdup("accounts"), .logical_name = strdup("account"), .key = key};
    if (op != DW_WRITE_DELETE)
        dw_write_set_body(&w, json_pack("{s:s}", "name", "R one"));
    return w;
}

/* dvemu's request log of write requests (not GETs) as one JSON array text; caller frees. */
static char *logged_writes(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "curl -sf http://127.0.0.1:%d/_dvemu/requests | jq -c '[.value[] | "
             "select(.method != \"GET\") | {path, batch, options}]'",
             dvemu_port);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, p);
    text[n] = '\0';
    ck_assert_int_eq(pclose(p), 0);
    return strdup(text);
}

/* A write's options go on every request that carries it: the headers of a bulk request
 * (which holds rows of equal options only), of each $batch part (mixed in one $batch), of
 * each changeset part; and a write whose options could add a header is refused. */
START_TEST(write_options_reach_every_request)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, &seen, &sink), DW_OK);
    json_t *opts =
        json_pack("{s:[s,s], s:b, s:b, s:s}", "bypass_logic", "CustomSync", "CustomAsync",
                  "suppress_duplicate_detection", 1, "suppress_flows", 1, "tag", "wo-1");
    void *users[4] = {(void *)0, (void *)1, (void *)2, (void *)3};

    struct dw_write bad[1] = {company("WX", "x")};
    bad[0].options = json_pack("{s:s}", "tag", "a\r\nX-Injected: 1");
    ck_assert_int_eq(dw_sink_submit(sink, bad, users, 1), DW_ERR_INVALID);
    dw_write_cleanup(&bad[0]);

    /* Two rows with options, two without, of one table: two bulk requests. A delete with
     * options: a $batch part. */
    struct dw_write w[4] = {company("WA", "a"), company("WB", "b"), company("WC", "c"),
                            company("WD", "d")};
    w[0].options = json_incref(opts);
    w[2].options = json_incref(opts);
    ck_assert_int_eq(dw_sink_submit(sink, w, users, 4), DW_OK);
    for (int i = 0; i < 200 && dw_sink_pending(sink) > 0; i++)
        ck_assert_int_eq(dw_sink_run(sink, 100), DW_OK);
    struct dw_write del[1] = {{.op = DW_WRITE_DELETE,
                               .entity_set = strdup("cdm_companies"),
                               .key = json_pack("{s:s}", "cdm_companycode", "WA"),
                               .options = json_incref(opts)}};
    ck_assert_int_eq(dw_sink_submit(sink, del, users, 1), DW_OK);
    struct dw_write grp[2] = {company("WE", "e"), company("WF", "f")};
    grp[1].options = json_incref(opts);
    ck_assert_int_eq(dw_sink_submit_atomic(sink, grp, users, 2), DW_OK);
    for (int i = 0; i < 200 && dw_sink_pending(sink) > 0; i++)
        ck_assert_int_eq(dw_sink_run(sink, 100), DW_OK);
    ck_assert_uint_eq(dw_sink_pending(sink), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(seen.status[i], DW_WRITE_APPLIED);

    char *log = logged_writes();
    const char *with = "\"options\":{\"MSCRM.BypassBusinessLogicExecution\":\"CustomSync,"
                       "CustomAsync\",\"MSCRM.SuppressDuplicateDetection\":\"true\",\"MSCRM."
                       "SuppressCallbackRegistrationExpanderJob\":\"true\",\"tag\":\"wo-1\"}";
    char want[1024];
    snprintf(
        want, sizeof want,
        "{\"path\":\"cdm_companies/Microsoft.Dynamics.CRM.UpsertMultiple\",\"batch\":false,%s}",
        with);
    ck_assert_msg(strstr(log, want), "no bulk request with the options in %s", log);
    ck_assert_msg(strstr(log, "{\"path\":\"cdm_companies/Microsoft.Dynamics.CRM.UpsertMultiple\","
                              "\"batch\":false,\"options\":{}}"),
                  "no bulk request without options in %s", log);
    snprintf(want, sizeof want,
             "{\"path\":\"cdm_companies(cdm_companycode='WA')\",\"batch\":true,%s}", with);
    ck_assert_msg(strstr(log, want), "no delete part with the options in %s", log);
    snprintf(want, sizeof want,
             "{\"path\":\"cdm_companies(cdm_companycode='WF')\",\"batch\":true,%s}", with);
    ck_assert_msg(strstr(log, want), "no changeset part with the options in %s", log);
    ck_assert_msg(strstr(log, "{\"path\":\"cdm_companies(cdm_companycode='WE')\",\"batch\":true,"
                              "\"options\":{}}"),
                  "the part without options carries some in %s", log);
    free(log);
    json_decref(opts);
    dw_sink_free(sink);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(atomic_group_all_or_nothing)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, &seen, &sink), DW_OK);
    void *users[4] = {(void *)0, (void *)1, (void *)2, (void *)3};

    /* An empty group, or one with a malformed write, is refused and nothing is taken. */
    ck_assert_int_eq(dw_sink_submit_atomic(sink, NULL, users, 0), DW_ERR_INVALID);
    struct dw_write bad[2] = {company("G1", "g"), company("G2", "g")};
    json_decref(bad[1].key);
    bad[1].key = json_object();
    ck_assert_int_eq(dw_sink_submit_atomic(sink, bad, users, 2), DW_ERR_INVALID);
    ck_assert_ptr_nonnull(bad[0].entity_set);
    dw_write_cleanup(&bad[0]);
    dw_write_cleanup(&bad[1]);
    /* A name that is not a Dataverse identifier never reaches a request (CR/LF would add
     * headers to a $batch part). */
    struct dw_write crlf[1] = {company("G9", "g")};
    free(crlf[0].entity_set);
    crlf[0].entity_set = strdup("cdm_companies HTTP/1.1\r\nX-Injected: 1");
    ck_assert_int_eq(dw_sink_submit(sink, crlf, users, 1), DW_ERR_INVALID);
    dw_write_cleanup(&crlf[0]);
    struct dw_write badref[1] = {company("G9", "g")};
    dw_check_body_set(&badref[0], "parent@odata.bind",
                      json_pack("{s:s, s:{s:s}}", "$ref", "cdm_companies\r\nX: 1", "key",
                                "cdm_companycode", "P"));
    ck_assert_int_eq(dw_sink_submit(sink, badref, users, 1), DW_ERR_INVALID);
    dw_write_cleanup(&badref[0]);
    ck_assert_uint_eq(dw_sink_pending(sink), 0);

    /* One bad write: none applies; it carries Dataverse's error, the others are rolled
     * back naming it. */
    struct dw_write w[3] = {company("G1", "one"), company("G2", "two"), company("G3", "three")};
    dw_check_body_set(
        &w[1], "cdm_name",
        json_string("0123456789012345678901234567890123456789012345678901234567890123456789"
                    "0123456789012345678901234567890123456789"));
    ck_assert_int_eq(dw_sink_submit_atomic(sink, w, users, 3), DW_OK);
    ck_assert_ptr_null(w[0].entity_set); /* taken */
    ck_assert_int_eq(seen.calls[0], 0);  /* never from submit */
    run_until_done(sink);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(seen.calls[i], 1);
        ck_assert_int_eq(seen.status[i], DW_WRITE_REJECTED);
    }
    ck_assert_int_eq(seen.cls[1], DW_ERRCLASS_VALIDATION);
    ck_assert_int_eq(seen.cls[0], DW_ERRCLASS_CONFLICT);
    ck_assert_int_eq(seen.cls[2], DW_ERRCLASS_CONFLICT);
    json_t *doc = NULL;
    ck_assert_int_eq(dw_sink_get_json(sink, "cdm_companies(cdm_companycode='G1')", &doc),
                     DW_ERR_NOT_FOUND);

    /* Fixed: all of it applies, in one changeset. */
    struct dw_sink_stats before, after;
    dw_sink_get_stats(sink, &before);
    struct dw_write ok[3] = {company("G1", "one"), company("G2", "two"), company("G3", "three")};
    ck_assert_int_eq(dw_sink_submit_atomic(sink, ok, users, 3), DW_OK);
    run_until_done(sink);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(seen.calls[i], 2);
        ck_assert_int_eq(seen.status[i], DW_WRITE_APPLIED);
    }
    dw_sink_get_stats(sink, &after);
    ck_assert_uint_eq(after.requests - before.requests, 1);
    ck_assert_int_eq(dw_sink_get_json(sink, "cdm_companies(cdm_companycode='G3')", &doc), DW_OK);
    json_decref(doc);

    free_with_writes_queued(sink, &cfg, &seen, true);
}
END_TEST

START_TEST(stale_cached_parent_id_is_refreshed)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, &seen, &sink), DW_OK);
    ck_assert_int_eq(apply_one(sink, &seen, company("P2", "first")), DW_WRITE_APPLIED);
    char *first = company_id(sink, "P2");
    /* The account's key names the company by its code: its id is looked up and cached. */
    ck_assert_int_eq(apply_one(sink, &seen, account_r1(DW_WRITE_UPSERT)), DW_WRITE_APPLIED);
    ck_assert_int_eq(apply_one(sink, &seen, account_r1(DW_WRITE_DELETE)), DW_WRITE_APPLIED);
    /* The company is deleted and created again: same code, new id. */
    struct dw_write del = {.op = DW_WRITE_DELETE,
                           .entity_set = strdup("cdm_companies"),
                           .key = json_pack("{s:s}", "cdm_companycode", "P2")};
    ck_assert_int_eq(apply_one(sink, &seen, del), DW_WRITE_APPLIED);
    ck_assert_int_eq(apply_one(sink, &seen, company("P2", "second")), DW_WRITE_APPLIED);
    char *second = company_id(sink, "P2");
    ck_assert_str_ne(first, second);
    /* The cached id is stale: the 404 makes the sink look it up again, and the write lands. */
    ck_assert_int_eq(apply_one(sink, &seen, account_r1(DW_WRITE_UPSERT)), DW_WRITE_APPLIED);
    char path[200];
    json_t *doc = NULL;
    snprintf(path, sizeof path, "accounts(accountnumber='R1',_msdyn_company_value=%s)", second);
    ck_assert_int_eq(dw_sink_get_json(sink, path, &doc), DW_OK);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "_msdyn_company_value")), second);
    json_decref(doc);
    free(first);
    free(second);
    dw_sink_free(sink);
    dw_config_cleanup(&cfg);
}
END_TEST

/* Accounts S0.. of company P3, each naming it by the one shared reference object, in its
 * key and as a bind in its body (as the mapping engine shares references). */
static void accounts_of(json_t *company_ref, enum dw_write_op op, struct dw_write *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char number[24];
        snprintf(number, sizeof number, "S%zu", i);
        json_t *key =
            json_pack("{s:s, s:O}", "accountnumber", number, "_msdyn_company_value", company_ref);
        json_t *body = op == DW_WRITE_DELETE ? NULL
                                             : json_pack("{s:s, s:O}", "name", number,
                                                         "msdyn_company@odata.bind", company_ref);
        w[i] = (struct dw_write){.op = op,
                                 .entity_set = strdup("accounts"),
                                 .logical_name = strdup("account"),
                                 .key = key};
        dw_write_set_body(&w[i], body);
    }
}

/* Eight rows in one request name their company by one shared reference object (as the
 * mapping engine shares them); the company comes back with a new id between two rounds of
 * them. Each row meets the stale id, and each is resolved again, though the first to
 * refresh already forgot the id for the others. */
START_TEST(shared_references_follow_a_parent_that_comes_back)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    struct seen seen;
    struct dw_write w[8];
    memset(&seen, 0, sizeof seen);
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, &seen, &sink), DW_OK);
    json_t *p3 =
        json_pack("{s:s, s:{s:s}}", "$ref", "cdm_companies", "key", "cdm_companycode", "P3");
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(apply_one(sink, &seen, company("P3", "shared")), DW_WRITE_APPLIED);
        char *id = company_id(sink, "P3");
        accounts_of(p3, DW_WRITE_UPSERT, w, 8);
        ck_assert_int_eq(apply_all(sink, &seen, w, 8), 8);
        for (int i = 0; i < 8; i++) {
            char path[200];
            json_t *doc = NULL;
            snprintf(path, sizeof path, "accounts(accountnumber='S%d',_msdyn_company_value=%s)", i,
                     id);
            ck_assert_int_eq(dw_sink_get_json(sink, path, &doc), DW_OK);
            ck_assert_str_eq(json_string_value(json_object_get(doc, "_msdyn_company_value")), id);
            json_decref(doc);
        }
        /* The accounts go, then the company: created again, it has a new id. */
        accounts_of(p3, DW_WRITE_DELETE, w, 8);
        ck_assert_int_eq(apply_all(sink, &seen, w, 8), 8);
        struct dw_write del = {.op = DW_WRITE_DELETE,
                               .entity_set = strdup("cdm_companies"),
                               .key = json_pack("{s:s}", "cdm_companycode", "P3")};
        ck_assert_int_eq(apply_one(sink, &seen, del), DW_WRITE_APPLIED);
        free(id);
    }
    json_decref(p3);
    dw_sink_free(sink);
    dw_config_cleanup(&cfg);
}
END_TEST

/* A descriptor watched on the sink's loop, and what it was called back with. */
struct watched {
    int fd;
    unsigned revents;
};

static int watched_fd(void *user)
{
    return ((struct watched *)user)->fd;
}

static void on_watched(void *user, int fd, unsigned revents)
{
    (void)fd;
    ((struct watched *)user)->revents |= revents;
}

START_TEST(run_returns_for_the_loops_other_tenants)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, NULL, &sink), DW_OK);
    struct dw_loop *loop = dw_loop_new(NULL);
    dw_sink_use_loop(sink, loop);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct watched w = {fds[0], 0};
    struct dw_loop_watch *watch = dw_loop_watch_new(loop, watched_fd, DW_LOOP_IN, on_watched, &w);
    /* Nothing to do and nothing ready: nothing is called back. */
    ck_assert_int_eq(dw_sink_run(sink, 0), DW_OK);
    ck_assert_uint_eq(w.revents, 0);
    /* A readable descriptor watched on the loop (as the runner watches its connections) ends
     * the wait and is called back. The wait asked for outlasts ctest's timeout for this
     * test, so a missed wake-up fails it. */
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ck_assert_int_eq(dw_sink_run(sink, 600000), DW_OK);
    ck_assert(w.revents & DW_LOOP_IN);
    dw_loop_watch_free(watch);
    close(fds[0]);
    close(fds[1]);
    /* dw_sink_wakeup ends a wait without any descriptor. */
    dw_sink_wakeup(sink);
    ck_assert_int_eq(dw_sink_run(sink, 600000), DW_OK);
    dw_sink_free(sink);
    dw_loop_free(loop);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(metadata_of_a_table)
{
    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    make_config(&cfg);
    ck_assert_int_eq(dw_sink_new(&cfg, on_done, NULL, &sink), DW_OK);
    struct dw_entity_meta *m = NULL;
    ck_assert_int_eq(dw_dvmeta_fetch(sink, "account", &m), DW_OK);
    ck_assert_str_eq(m->logical_name, "account");
    ck_assert_str_eq(m->entity_set, "accounts");
    ck_assert_str_eq(m->primary_id, "accountid");

    const struct dw_attr_meta *a = dw_entity_meta_attr(m, "NAME");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->type, DW_ATTR_STRING);
    ck_assert_int_eq(a->max_length, 160);
    ck_assert(a->required);
    a = dw_entity_meta_attr(m, "accountnumber");
    ck_assert_int_eq(a->max_length, 20);
    ck_assert(!a->required);
    a = dw_entity_meta_attr(m, "description");
    ck_assert_int_eq(a->type, DW_ATTR_MEMO);
    ck_assert_int_eq(a->max_length, 2000);
    a = dw_entity_meta_attr(m, "numberofemployees");
    ck_assert_int_eq(a->type, DW_ATTR_INTEGER);
    ck_assert(a->min_value == 0 && a->max_value == 1000000000);
    a = dw_entity_meta_attr(m, "creditlimit");
    ck_assert_int_eq(a->type, DW_ATTR_MONEY);
    ck_assert_int_eq(a->precision, 2);
    ck_assert(a->max_value == 100000000000000.0);
    a = dw_entity_meta_attr(m, "customertypecode");
    ck_assert_int_eq(a->type, DW_ATTR_PICKLIST);
    ck_assert_uint_eq(a->noptions, 12);
    ck_assert_int_eq(a->options[0], 1);
    ck_assert_int_eq(a->options[11], 12);
    a = dw_entity_meta_attr(m, "msdyn_company");
    ck_assert_int_eq(a->type, DW_ATTR_LOOKUP);
    ck_assert_uint_eq(a->ntargets, 1);
    ck_assert_str_eq(a->targets[0], "cdm_company");
    ck_assert_int_eq(dw_entity_meta_attr(m, "msdyn_creditlimitismandatory")->type, DW_ATTR_BOOLEAN);
    ck_assert_ptr_null(dw_entity_meta_attr(m, "nosuchcolumn"));

    ck_assert_uint_eq(m->nkeys, 1);
    ck_assert_str_eq(m->keys[0].logical_name, "msdyn_accountnumberkey");
    ck_assert_uint_eq(m->keys[0].nattributes, 2);
    ck_assert_str_eq(m->keys[0].attributes[0], "accountnumber");
    ck_assert_str_eq(m->keys[0].attributes[1], "msdyn_company");
    ck_assert(m->keys[0].active);
    ck_assert_str_eq(dw_attr_type_name(DW_ATTR_PICKLIST), "Picklist");
    dw_entity_meta_free(m);

    m = NULL;
    ck_assert_int_eq(dw_dvmeta_fetch(sink, "nosuchtable", &m), DW_ERR_NOT_FOUND);
    ck_assert_ptr_null(m);
    dw_entity_meta_free(NULL);
    dw_sink_free(sink);
    dw_config_cleanup(&cfg);
}
END_TEST

/*
 * A peer that answers every request as an Azure front end does: 200 with Set-Cookie
 * ARRAffinity, which pins a client to one web server. For each request it writes one byte to
 * report: 'C' when the request carried a Cookie header, '.' when not. A POST gets a token,
 * anything else a WhoAmI answer. Runs in a forked child until killed.
 */
static _Noreturn void cookie_peer(int lfd, int report)
{
    static const char token[] = "{\"access_token\":\"t0k3n\",\"expires_in\":3600,"
                                "\"token_type\":\"Bearer\"}";
    static const char whoami[] = "{\"UserId\":\"00000000-0000-0000-0000-000000000001\"}";
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            _exit(0);
        char buf[16384];
        size_t len = 0;
        ssize_t n;
        while ((n = read(c, buf + len, sizeof buf - 1 - len)) > 0) {
            len += (size_t)n;
            buf[len] = '\0';
            char *end;
            while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
                size_t head = (size_t)(end + 4 - buf), body = 0;
                char *cl = strcasestr(buf, "\r\ncontent-length:");
                if (cl && cl < end)
                    body = strtoul(cl + 17, NULL, 10);
                if (len < head + body)
                    break;
                char *cookie = strcasestr(buf, "\r\ncookie:");
                if (write(report, cookie && cookie < end ? "C" : ".", 1) != 1)
                    _exit(1);
                const char *answer = strncmp(buf, "POST", 4) == 0 ? token : whoami;
                dprintf(c,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Set-Cookie: ARRAffinity=5e1f00d; Path=/; HttpOnly; Domain=127.0.0.1\r\n"
                        "Set-Cookie: ARRAffinitySameSite=5e1f00d; Path=/; SameSite=None\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        strlen(answer), answer);
                memmove(buf, buf + head + body, len - head - body);
                len -= head + body;
                buf[len] = '\0';
            }
        }
        close(c);
    }
}

/* Requests spread over the environment's web servers as Microsoft advises: the sink keeps
 * no affinity cookie (no cookie engine), so none is ever sent back. */
START_TEST(no_affinity_cookie_is_kept)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0), report[2];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 16), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    ck_assert_int_eq(pipe(report), 0);
    pid_t peer = fork();
    ck_assert_int_ge(peer, 0);
    if (peer == 0) {
        signal(SIGTERM, SIG_DFL); /* not Check's handler, which signals the whole group */
        close(report[0]);
        cookie_peer(lfd, report[1]);
    }
    close(lfd);
    close(report[1]);

    struct dw_config cfg;
    struct dw_sink *sink = NULL;
    make_config(&cfg);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    free(cfg.dataverse.url);
    free(cfg.dataverse.authority);
    cfg.dataverse.url = strdup(url);
    cfg.dataverse.authority = strdup(url);
    ck_assert_int_eq(dw_sink_new(&cfg, NULL, NULL, &sink), DW_OK);
    for (int i = 0; i < 3; i++) {
        char *user = NULL;
        ck_assert_int_eq(dw_sink_whoami(sink, &user), DW_OK);
        ck_assert_str_eq(user, "00000000-0000-0000-0000-000000000001");
        free(user);
    }
    dw_sink_free(sink);
    dw_config_cleanup(&cfg);
    kill(peer, SIGKILL);
    waitpid(peer, NULL, 0);

    char seen[64];
    ssize_t n = read(report[0], seen, sizeof seen - 1);
    close(report[0]);
    ck_assert_int_eq(n, 4); /* the token, then three WhoAmI, each answered with cookies */
    seen[n] = '\0';
    ck_assert_str_eq(seen, "....");
}
END_TEST

static Suite *sink_suite(void)
{
    Suite *s = suite_create("sink");
    TCase *tc = tcase_create("sink");
    tcase_add_test(tc, config_errors);
    tcase_add_test(tc, submit_run_callbacks_once);
    tcase_add_test(tc, atomic_group_all_or_nothing);
    tcase_add_test(tc, stale_cached_parent_id_is_refreshed);
    tcase_add_test(tc, shared_references_follow_a_parent_that_comes_back);
    tcase_add_test(tc, run_returns_for_the_loops_other_tenants);
    tcase_add_test(tc, metadata_of_a_table);
    tcase_add_test(tc, no_affinity_cookie_is_kept);
    tcase_add_test(tc, write_options_reach_every_request);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {
    .make = sink_suite, .nofork = true, .before = start_dvemu, .after = stop_dvemu};

/* Unit tests: the config table, INI loading and its errors, secret files. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/config.h"
#include "dwasync/log.h"
#include "dwasync/redact.h"
#include "dwasync/secret.h"

static dw_rc load(struct dw_config *cfg, const char *text, struct dw_buf *errors)
{
    dw_config_init(cfg);
    dw_buf_init(errors, 0);
    return dw_config_load_string(cfg, text, "test.conf", errors);
}

START_TEST(defaults_are_valid)
{
    struct dw_config cfg;
    dw_config_init(&cfg);
    ck_assert_str_eq(cfg.source.conninfo, "dbname=postgres");
    ck_assert_int_eq(cfg.dataverse.batch_size, 1000);
    ck_assert_int_eq(cfg.apply.window_rows, 3000);
    ck_assert_int_eq(cfg.apply.window_growth, 2);
    ck_assert_int_eq(cfg.log.level, DW_LOG_INFO);
    ck_assert(!cfg.dataverse.debug_payloads);
    ck_assert_str_eq(dw_config_control_conninfo(&cfg), "dbname=postgres");

    /* The sample file, written from the same table, loads without error. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    dw_config_write_sample(f);
    fclose(f);
    struct dw_buf errors;
    dw_config_cleanup(&cfg);
    ck_assert_int_eq(load(&cfg, text, &errors), DW_OK);
    ck_assert_uint_eq(errors.len, 0);
    free(text);
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(valid_file_overrides_defaults)
{
    struct dw_config cfg;
    struct dw_buf errors;
    const char *text = "; comment\n[source]\nconninfo = host=/tmp dbname=staging\n"
                       "[control]\nconninfo = dbname=control\n"
                       "[dataverse]\nbatch_size = 250\ndebug_payloads = true\n"
                       "assertion_alg = rs256\n[log]\nlevel = debug\nformat = json\n";
    ck_assert_int_eq(load(&cfg, text, &errors), DW_OK);
    ck_assert_str_eq(cfg.source.conninfo, "host=/tmp dbname=staging");
    ck_assert_str_eq(dw_config_control_conninfo(&cfg), "dbname=control");
    ck_assert_int_eq(cfg.dataverse.batch_size, 250);
    ck_assert(cfg.dataverse.debug_payloads);
    ck_assert_int_eq(cfg.dataverse.assertion_alg, DW_ASSERTION_RS256);
    ck_assert_int_eq(cfg.log.level, DW_LOG_DEBUG);
    ck_assert_int_eq(cfg.log.format, DW_LOG_JSON);
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(errors_name_file_line_key_and_allowed_values)
{
    struct dw_config cfg;
    struct dw_buf errors;
    const char *text = "[source]\n"
                       "conninfo = dbname=x\n"
                       "bogus = 1\n" /* line 3: unknown key */
                       "[apply]\n"
                       "window_rows = 0\n"  /* line 5: out of range */
                       "window_ms = soon\n" /* line 6: not a number */
                       "[log]\n"
                       "level = chatty\n" /* line 8: bad enum */
                       "[nowhere]\n"
                       "x = 1\n" /* line 10: unknown section */
                       "[dataverse]\n"
                       "client_secret = hunter2\n"; /* line 12: secret in config */
    ck_assert_int_eq(load(&cfg, text, &errors), DW_ERR_CONFIG);
    const char *e = dw_buf_str(&errors);
    ck_assert_ptr_nonnull(strstr(e, "test.conf:3: unknown key \"bogus\" in section [source]"));
    ck_assert_ptr_nonnull(strstr(e, "known: conninfo, timezone"));
    ck_assert_ptr_nonnull(strstr(
        e, "test.conf:5: [apply] window_rows = \"0\" is out of range (allowed: 1..1000000)"));
    ck_assert_ptr_nonnull(
        strstr(e, "test.conf:6: [apply] window_ms = \"soon\" is not a valid value"));
    ck_assert_ptr_nonnull(
        strstr(e, "test.conf:8: [log] level = \"chatty\" is not a valid value (allowed: debug, "
                  "info, warn, error)"));
    ck_assert_ptr_nonnull(strstr(e, "test.conf:10: unknown section \"nowhere\""));
    ck_assert_ptr_nonnull(strstr(e, "test.conf:12: [dataverse] client_secret is not accepted"));
    /* The secret's value is never repeated back. */
    ck_assert_ptr_null(strstr(e, "hunter2"));
    /* The valid line before the errors still applied. */
    ck_assert_str_eq(cfg.source.conninfo, "dbname=x");
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(syntax_error_is_reported_with_line)
{
    struct dw_config cfg;
    struct dw_buf errors;
    ck_assert_int_eq(load(&cfg, "[source]\nconninfo = a\nthis line has no equals\n", &errors),
                     DW_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "test.conf:3: syntax error"));
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
}
END_TEST

START_TEST(describe_lists_every_section)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    dw_config_describe(f);
    fclose(f);
    const char *sections[] = {"[source]", "[control]", "[dataverse]",
                              "[apply]",  "[log]",     "[metrics]"};
    for (size_t i = 0; i < sizeof sections / sizeof *sections; i++)
        ck_assert_ptr_nonnull(strstr(text, sections[i]));
    ck_assert_ptr_nonnull(strstr(text, "batch_size"));
    ck_assert_ptr_nonnull(strstr(text, "allowed: 1..1000"));
    free(text);
}
END_TEST

START_TEST(missing_file_is_io_error)
{
    struct dw_config cfg;
    struct dw_buf errors;
    dw_config_init(&cfg);
    dw_buf_init(&errors, 0);
    ck_assert_int_eq(dw_config_load(&cfg, "/nonexistent/dwasync.conf", &errors), DW_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "/nonexistent/dwasync.conf: cannot open"));
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
}
END_TEST

static char *write_temp(const char *content, mode_t mode)
{
    char *path = strdup("/tmp/dwasync-secret-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    chmod(path, mode);
    return path;
}

START_TEST(secret_file_permissions)
{
    char *log_text = NULL;
    size_t log_len = 0;
    FILE *log = open_memstream(&log_text, &log_len);
    dw_log_set_stream(log);

    char *good = write_temp("s3cr3t-value\n", 0600);
    char *secret = NULL;
    size_t len = 0;
    ck_assert_int_eq(dw_secret_read(good, 0, &secret, &len), DW_OK);
    ck_assert_str_eq(secret, "s3cr3t-value");
    ck_assert_uint_eq(len, 12);
    dw_secret_free(secret, len);

    /* Group-readable and world-readable files are refused with a fix hint. */
    char *loose = write_temp("another-secret\n", 0640);
    char why[512];
    ck_assert_int_eq(dw_secret_check(loose, why, sizeof why), DW_ERR_SECRET);
    ck_assert_ptr_nonnull(strstr(why, "has mode 0640: group or others can access it"));
    ck_assert_ptr_nonnull(strstr(why, "chmod 600"));
    secret = NULL;
    ck_assert_int_eq(dw_secret_read(loose, 0, &secret, &len), DW_ERR_SECRET);
    ck_assert_ptr_null(secret);
    chmod(loose, 0604);
    ck_assert_int_eq(dw_secret_check(loose, why, sizeof why), DW_ERR_SECRET);

    ck_assert_int_eq(dw_secret_read("/nonexistent/secret", 0, &secret, &len), DW_ERR_SECRET);

    /* A bare name resolves inside $CREDENTIALS_DIRECTORY (systemd LoadCredential=). */
    setenv("CREDENTIALS_DIRECTORY", "/tmp", 1);
    char *base = strrchr(good, '/') + 1;
    ck_assert_int_eq(dw_secret_read(base, 0, &secret, &len), DW_OK);
    ck_assert_str_eq(secret, "s3cr3t-value");
    dw_secret_free(secret, len);
    unsetenv("CREDENTIALS_DIRECTORY");

    /* What was read is registered: logging it by mistake prints the redaction instead. */
    DW_ERROR("leaked %s here", "s3cr3t-value");
    fflush(log);
    ck_assert_ptr_null(strstr(log_text, "s3cr3t-value"));
    ck_assert_ptr_nonnull(strstr(log_text, "leaked [REDACTED] here"));

    dw_log_set_stream(NULL);
    fclose(log);
    free(log_text);
    unlink(good);
    unlink(loose);
    free(good);
    free(loose);
    dw_redact_clear();
}
END_TEST

/* A conninfo takes several kB (the system's inih reads 200 bytes a line): the value arrives
 * whole, trimmed like a short one; a line past the limit is an error that names its line. */
START_TEST(long_lines)
{
    struct dw_config cfg;
    struct dw_buf errors;
    size_t n = 6000;
    char *value = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        value[i] = (char)('a' + i % 26);
    value[n] = '\0';
    struct dw_buf text;
    dw_buf_init(&text, 0);
    ck_assert_int_eq(dw_buf_printf(&text,
                                   "# %s\n[source]\nconninfo =   %s   ; a comment\n"
                                   "timezone = Europe/Paris\n",
                                   value, value),
                     DW_OK);
    ck_assert_int_eq(load(&cfg, dw_buf_str(&text), &errors), DW_OK);
    ck_assert_str_eq(cfg.source.conninfo, value);
    ck_assert_str_eq(cfg.source.timezone, "Europe/Paris");
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);

    /* An unknown key on a long line is still named. */
    dw_buf_reset(&text);
    ck_assert_int_eq(dw_buf_printf(&text, "[source]\nbogus = %s\n", value), DW_OK);
    ck_assert_int_eq(load(&cfg, dw_buf_str(&text), &errors), DW_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&errors), "test.conf:2: unknown key \"bogus\""));
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);

    /* Past 64 KiB a line is refused. */
    dw_buf_reset(&text);
    (void)dw_buf_puts(&text, "[source]\nconninfo = ");
    for (int i = 0; i < 12; i++)
        (void)dw_buf_puts(&text, value);
    (void)dw_buf_puts(&text, "\n");
    ck_assert_int_eq(load(&cfg, dw_buf_str(&text), &errors), DW_ERR_CONFIG);
    ck_assert_ptr_nonnull(
        strstr(dw_buf_str(&errors), "test.conf:2: line is longer than 65536 characters"));
    ck_assert_str_eq(cfg.source.conninfo, "dbname=postgres");
    dw_buf_cleanup(&errors);
    dw_config_cleanup(&cfg);
    dw_buf_cleanup(&text);
    free(value);
}
END_TEST

/* The secret rule shared by check and the daemon: a FIFO is refused at once (it would
 * block), a symlink to a safe file is read, a symlink to an unsafe one is refused by both,
 * a bare name outside systemd never resolves against the working directory. */
START_TEST(secret_file_kinds)
{
    char *log_text = NULL;
    size_t log_len = 0;
    FILE *log = open_memstream(&log_text, &log_len);
    dw_log_set_stream(log);
    char why[512], *secret = NULL;
    size_t len = 0;
    char dir[] = "/tmp/dwasync-kinds-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char fifo[128], link_ok[128], link_bad[128];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(dw_secret_check(fifo, why, sizeof why), DW_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(why, "is not a regular file"));
    ck_assert_int_eq(dw_secret_read(fifo, 0, &secret, &len), DW_ERR_SECRET);

    char *good = write_temp("linked-secret\n", 0600), *loose = write_temp("loose\n", 0644);
    snprintf(link_ok, sizeof link_ok, "%s/ok", dir);
    snprintf(link_bad, sizeof link_bad, "%s/bad", dir);
    ck_assert_int_eq(symlink(good, link_ok), 0);
    ck_assert_int_eq(symlink(loose, link_bad), 0);
    ck_assert_int_eq(dw_secret_check(link_ok, why, sizeof why), DW_OK);
    ck_assert_int_eq(dw_secret_read(link_ok, 0, &secret, &len), DW_OK);
    ck_assert_str_eq(secret, "linked-secret");
    dw_secret_free(secret, len);
    secret = NULL;
    ck_assert_int_eq(dw_secret_check(link_bad, why, sizeof why), DW_ERR_SECRET);
    ck_assert_ptr_nonnull(strstr(why, "has mode 0644"));
    ck_assert_int_eq(dw_secret_read(link_bad, 0, &secret, &len), DW_ERR_SECRET);
    ck_assert_ptr_null(secret);

    /* A bare name: the file exists in the working directory, and is not used. */
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    unsetenv("CREDENTIALS_DIRECTORY");
    ck_assert_int_eq(dw_secret_check("ok", why, sizeof why), DW_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(why, "$CREDENTIALS_DIRECTORY is not set"));
    ck_assert_int_eq(dw_secret_read("ok", 0, &secret, &len), DW_ERR_SECRET);
    ck_assert_int_eq(dw_secret_check("./ok", why, sizeof why), DW_OK);
    ck_assert_int_eq(chdir(cwd), 0);

    dw_log_set_stream(NULL);
    fclose(log);
    free(log_text);
    unlink(link_ok);
    unlink(link_bad);
    unlink(fifo);
    rmdir(dir);
    unlink(good);
    unlink(loose);
    free(good);
    free(loose);
    dw_redact_clear();
}
END_TEST

/* [dataverse] url and authority: https, or http to a loopback address with the loudly named
 * allow_insecure_http; the error names the key and what to do. */
START_TEST(transport_rule)
{
    struct dw_config cfg;
    struct dw_buf errors;
    char why[512];
    ck_assert_int_eq(load(&cfg,
                          "[dataverse]\nurl = https://contoso.crm.dynamics.com\n"
                          "authority = https://login.microsoftonline.com\n",
                          &errors),
                     DW_OK);
    ck_assert_int_eq(dw_config_check_transport(&cfg, why, sizeof why), DW_OK);
    dw_config_cleanup(&cfg);
    dw_buf_cleanup(&errors);

    static const struct {
        const char *text, *fragment;
    } bad[] = {
        {"[dataverse]\nurl = http://contoso.crm.dynamics.com\n",
         "[dataverse] url \"http://contoso.crm.dynamics.com\" is not https"},
        {"[dataverse]\nurl = https://x.crm.dynamics.com\nauthority = http://127.0.0.1:9\n",
         "[dataverse] authority \"http://127.0.0.1:9\" is not https"},
        {"[dataverse]\nallow_insecure_http = true\nurl = http://10.1.2.3:8080\n",
         "which is not a loopback address"},
        {"[dataverse]\nallow_insecure_http = true\nurl = http://127.0.0.1.evil.example\n",
         "which is not a loopback address"},
        {"[dataverse]\nurl = ftp://x.example\n", "is not an https:// URL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(load(&cfg, bad[i].text, &errors), DW_OK);
        ck_assert_int_eq(dw_config_check_transport(&cfg, why, sizeof why), DW_ERR_CONFIG);
        ck_assert_msg(strstr(why, bad[i].fragment) != NULL, "[%s] not in [%s]", bad[i].fragment,
                      why);
        dw_config_cleanup(&cfg);
        dw_buf_cleanup(&errors);
    }
    static const char *const loopback[] = {"http://127.0.0.1:8080", "http://localhost:1",
                                           "http://[::1]:9"};
    for (size_t i = 0; i < sizeof loopback / sizeof *loopback; i++) {
        char *text = NULL;
        ck_assert_int_ge(asprintf(&text,
                                  "[dataverse]\nallow_insecure_http = true\nurl = %s\n"
                                  "authority = %s\n",
                                  loopback[i], loopback[i]),
                         0);
        ck_assert_int_eq(load(&cfg, text, &errors), DW_OK);
        ck_assert_msg(dw_config_check_transport(&cfg, why, sizeof why) == DW_OK, "%s", why);
        dw_config_cleanup(&cfg);
        dw_buf_cleanup(&errors);
        free(text);
    }
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults_are_valid);
    tcase_add_test(tc, valid_file_overrides_defaults);
    tcase_add_test(tc, errors_name_file_line_key_and_allowed_values);
    tcase_add_test(tc, syntax_error_is_reported_with_line);
    tcase_add_test(tc, describe_lists_every_section);
    tcase_add_test(tc, missing_file_is_io_error);
    tcase_add_test(tc, secret_file_permissions);
    tcase_add_test(tc, secret_file_kinds);
    tcase_add_test(tc, long_lines);
    tcase_add_test(tc, transport_rule);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = config_suite};

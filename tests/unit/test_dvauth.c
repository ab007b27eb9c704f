/* Unit tests: the certificate client assertion (decoded and its signature verified with
 * OpenSSL), the token request body, token caching and renewal times. */
#include <check.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "dwasync/dvauth.h"
#include "dwasync/redact.h"

static EVP_PKEY *key;
static X509 *cert;

static void make_cert(void)
{
    if (key)
        return;
    key = EVP_RSA_gen(2048);
    ck_assert_ptr_nonnull(key);
    cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"dwasync-test", -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    ck_assert_int_gt(X509_sign(cert, key, EVP_sha256()), 0);
}

/* Decodes base64url (no padding) into a heap buffer. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *out_len)
{
    size_t padded = (n + 3) / 4 * 4;
    char *tmp = calloc(1, padded + 1);
    for (size_t i = 0; i < n; i++)
        tmp[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    for (size_t i = n; i < padded; i++)
        tmp[i] = '=';
    unsigned char *out = calloc(1, padded);
    int len = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
    ck_assert_int_ge(len, 0);
    len -= (int)(padded - n); /* EVP_DecodeBlock counts the padding as zero bytes */
    free(tmp);
    *out_len = (size_t)len;
    return out;
}

static json_t *decode_json_part(const char *s, size_t n)
{
    size_t len;
    unsigned char *raw = b64url_decode(s, n, &len);
    json_t *doc = json_loadb((const char *)raw, len, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    free(raw);
    return doc;
}

static void check_assertion(enum dw_assertion_alg alg)
{
    make_cert();
    char *jwt = NULL;
    ck_assert_int_eq(dw_auth_make_assertion(key, cert, alg, "client-1",
                                            "https://login.example/tenant/oauth2/v2.0/token",
                                            1795341600, &jwt),
                     DW_OK);
    char *dot1 = strchr(jwt, '.');
    ck_assert_ptr_nonnull(dot1);
    char *dot2 = strchr(dot1 + 1, '.');
    ck_assert_ptr_nonnull(dot2);
    ck_assert_ptr_null(strchr(dot2 + 1, '.'));
    ck_assert_ptr_null(strpbrk(jwt, "=+/"));

    json_t *header = decode_json_part(jwt, (size_t)(dot1 - jwt));
    json_t *claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    ck_assert_str_eq(json_string_value(json_object_get(header, "alg")),
                     alg == DW_ASSERTION_PS256 ? "PS256" : "RS256");
    ck_assert_str_eq(json_string_value(json_object_get(header, "typ")), "JWT");

    /* The thumbprint is the certificate's DER digest: SHA-256 for PS256, SHA-1 for RS256. */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    X509_digest(cert, alg == DW_ASSERTION_PS256 ? EVP_sha256() : EVP_sha1(), md, &mdlen);
    const char *thumb =
        json_string_value(json_object_get(header, alg == DW_ASSERTION_PS256 ? "x5t#S256" : "x5t"));
    ck_assert_ptr_nonnull(thumb);
    size_t tlen;
    unsigned char *traw = b64url_decode(thumb, strlen(thumb), &tlen);
    ck_assert_uint_eq(tlen, mdlen);
    ck_assert(memcmp(traw, md, mdlen) == 0);
    free(traw);
    ck_assert_ptr_null(json_object_get(header, alg == DW_ASSERTION_PS256 ? "x5t" : "x5t#S256"));

    ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")),
                     "https://login.example/tenant/oauth2/v2.0/token");
    ck_assert_str_eq(json_string_value(json_object_get(claims, "iss")), "client-1");
    ck_assert_str_eq(json_string_value(json_object_get(claims, "sub")), "client-1");
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "nbf")), 1795341600);
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "iat")), 1795341600);
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    ck_assert(exp >= 1795341600 + 300 && exp <= 1795341600 + 600);
    ck_assert_uint_eq(strlen(json_string_value(json_object_get(claims, "jti"))), 36);

    /* The signature verifies over "header.claims" with the certificate's public key. */
    size_t siglen;
    unsigned char *sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &siglen);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pub = X509_get_pubkey(cert);
    ck_assert_int_eq(EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, pub), 1);
    if (alg == DW_ASSERTION_PS256) {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    ck_assert_int_eq(EVP_DigestVerify(ctx, sig, siglen, (unsigned char *)jwt, (size_t)(dot2 - jwt)),
                     1);
    /* A changed claim does not verify. */
    EVP_MD_CTX_free(ctx);
    ctx = EVP_MD_CTX_new();
    pctx = NULL;
    EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, pub);
    if (alg == DW_ASSERTION_PS256) {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    jwt[dot1 - jwt + 3] ^= 1;
    ck_assert_int_ne(EVP_DigestVerify(ctx, sig, siglen, (unsigned char *)jwt, (size_t)(dot2 - jwt)),
                     1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pub);
    free(sig);
    json_decref(header);
    json_decref(claims);
    free(jwt);
}

START_TEST(assertion_ps256)
{
    check_assertion(DW_ASSERTION_PS256);
}
END_TEST

START_TEST(assertion_rs256)
{
    check_assertion(DW_ASSERTION_RS256);
}
END_TEST

static char dir[] = "/tmp/dw-auth-test.XXXXXX";

static char *write_file(const char *name, const char *text, mode_t mode)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        abort();
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

START_TEST(secret_request_body_and_token_cache)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *secret = write_file("secret", "s3cr&t=value+x\n", 0600);
    struct dw_config cfg;
    dw_config_init(&cfg);
    free(cfg.dataverse.url);
    free(cfg.dataverse.tenant_id);
    free(cfg.dataverse.client_id);
    free(cfg.dataverse.client_secret_file);
    free(cfg.dataverse.authority);
    cfg.dataverse.url = strdup("https://org.crm.dynamics.com/");
    cfg.dataverse.tenant_id = strdup("tenant-1");
    cfg.dataverse.client_id = strdup("client-1");
    cfg.dataverse.client_secret_file = strdup(secret);
    cfg.dataverse.authority = strdup("http://127.0.0.1:9/");
    struct dw_auth *a = NULL;
    ck_assert_int_eq(dw_auth_new(&cfg, &a), DW_OK);
    ck_assert_str_eq(dw_auth_token_url(a), "http://127.0.0.1:9/tenant-1/oauth2/v2.0/token");
    struct dw_buf body;
    dw_buf_init(&body, 0);
    ck_assert_int_eq(dw_auth_request_body(a, 0, &body), DW_OK);
    ck_assert_str_eq(dw_buf_str(&body),
                     "client_id=client-1&scope=https%3A%2F%2Forg.crm.dynamics.com%2F.default"
                     "&grant_type=client_credentials&client_secret=s3cr%26t%3Dvalue%2Bx");
    /* The secret is registered with the redactor as soon as it is read. */
    char *red = dw_redact_str("oops s3cr&t=value+x leaked");
    ck_assert_ptr_null(strstr(red, "s3cr&t"));
    free(red);
    dw_buf_cleanup(&body);

    ck_assert_ptr_null(dw_auth_token(a, 0));
    ck_assert_int_eq(dw_auth_accept(a, 400, "{\"error\":\"invalid_client\"}", 0), DW_ERR_AUTH);
    ck_assert_int_eq(dw_auth_accept(a, 200, "not json", 0), DW_ERR_AUTH);
    unsigned gen = dw_auth_generation(a);
    ck_assert_int_eq(dw_auth_accept(a, 200,
                                    "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                                    "\"access_token\":\"tok-1\"}",
                                    1000000),
                     DW_OK);
    ck_assert_uint_eq(dw_auth_generation(a), gen + 1);
    ck_assert_str_eq(dw_auth_token(a, 1000000), "tok-1");
    /* Renewed five minutes before expiry, valid until a second before it. */
    ck_assert_int_eq(dw_auth_renew_at(a), 1000000 + 3599000 - 300000);
    ck_assert_ptr_nonnull(dw_auth_token(a, 1000000 + 3599000 - 1001));
    ck_assert_ptr_null(dw_auth_token(a, 1000000 + 3599000 - 999));
    /* A lifetime under a minute is taken as a minute (renewed at three quarters of it): a
     * one-second lifetime would have every request ask for a token. */
    ck_assert_int_eq(dw_auth_accept(a, 200, "{\"expires_in\":\"8\",\"access_token\":\"tok-2\"}", 0),
                     DW_OK);
    ck_assert_int_eq(dw_auth_renew_at(a), 45000);
    ck_assert_ptr_nonnull(dw_auth_token(a, 58999));
    ck_assert_ptr_null(dw_auth_token(a, 59000));
    ck_assert_int_eq(dw_auth_accept(a, 200, "{\"expires_in\":1,\"access_token\":\"tok-3\"}", 0),
                     DW_OK);
    ck_assert_ptr_nonnull(dw_auth_token(a, 800));
    ck_assert_int_eq(dw_auth_renew_at(a), 45000);
    /* A huge lifetime (it overflowed the milliseconds) is taken as 24 hours. */
    ck_assert_int_eq(dw_auth_accept(a, 200,
                                    "{\"expires_in\":9223372036854775807,"
                                    "\"access_token\":\"tok-4\"}",
                                    1000),
                     DW_OK);
    ck_assert_int_eq(dw_auth_renew_at(a), 1000 + 86400000 - 300000);
    ck_assert_ptr_nonnull(dw_auth_token(a, 1000 + 86400000 - 1001));
    ck_assert_ptr_null(dw_auth_token(a, 1000 + 86400000 - 999));
    dw_auth_invalidate(a);
    ck_assert_ptr_null(dw_auth_token(a, 0));
    dw_auth_free(a);

    /* Both credentials, or none, is a configuration error. */
    free(cfg.dataverse.certificate_file);
    cfg.dataverse.certificate_file = strdup("/nonexistent.pem");
    ck_assert_int_eq(dw_auth_new(&cfg, &a), DW_ERR_CONFIG);
    free(cfg.dataverse.certificate_file);
    cfg.dataverse.certificate_file = strdup("");
    free(cfg.dataverse.client_secret_file);
    cfg.dataverse.client_secret_file = strdup("");
    ck_assert_int_eq(dw_auth_new(&cfg, &a), DW_ERR_CONFIG);

    /* Certificate credentials: the body carries a fresh assertion, never a secret. */
    make_cert();
    char *pem = NULL, *kpem = NULL;
    size_t n;
    FILE *m = open_memstream(&pem, &n);
    PEM_write_X509(m, cert);
    fclose(m);
    m = open_memstream(&kpem, &n);
    PEM_write_PrivateKey(m, key, NULL, NULL, 0, NULL, NULL);
    fclose(m);
    char *cpath = write_file("cert.pem", pem, 0644);
    char *kpath = write_file("key.pem", kpem, 0644);
    free(cfg.dataverse.certificate_file);
    free(cfg.dataverse.private_key_file);
    cfg.dataverse.certificate_file = strdup(cpath);
    cfg.dataverse.private_key_file = strdup(kpath);
    /* A key file others can read is refused. */
    ck_assert_int_eq(dw_auth_new(&cfg, &a), DW_ERR_SECRET);
    chmod(kpath, 0600);
    ck_assert_int_eq(dw_auth_new(&cfg, &a), DW_OK);
    dw_buf_init(&body, 0);
    ck_assert_int_eq(dw_auth_request_body(a, 1795341600, &body), DW_OK);
    ck_assert_ptr_nonnull(strstr(dw_buf_str(&body),
                                 "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-"
                                 "assertion-type%3Ajwt-bearer&client_assertion=eyJ"));
    ck_assert_ptr_null(strstr(dw_buf_str(&body), "client_secret"));
    dw_buf_cleanup(&body);
    dw_auth_free(a);

    unlink(secret);
    unlink(cpath);
    unlink(kpath);
    rmdir(dir);
    free(secret);
    free(cpath);
    free(kpath);
    free(pem);
    free(kpem);
    dw_config_cleanup(&cfg);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("dvauth");
    TCase *tc = tcase_create("dvauth");
    tcase_add_test(tc, assertion_ps256);
    tcase_add_test(tc, assertion_rs256);
    tcase_add_test(tc, secret_request_body_and_token_cache);
    suite_add_tcase(s, tc);
    return s;
}

/* Frees the test key and certificate make_cert() made. */
static void free_test_keys(void)
{
    X509_free(cert);
    EVP_PKEY_free(key);
}

const struct dw_check_suite dw_check_suite = {
    .make = auth_suite, .nofork = true, .after = free_test_keys};

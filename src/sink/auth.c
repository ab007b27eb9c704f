/*
 * OAuth2 client credentials for the sink (see dvauth.h): reads the client secret, or the
 * certificate and private key, at creation; composes token request bodies (a client
 * assertion is a JWT signed PS256 or RS256 with OpenSSL) and takes in the answers. No I/O
 * after creation: the sink sends the requests.
 */
#include "dwasync/dvauth.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvkey.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/secret.h"

struct dw_auth {
    char *token_url;
    char *client_id;
    char *scope;
    char *secret; /* client secret, or NULL with a certificate */
    size_t secret_len;
    EVP_PKEY *key;
    X509 *cert;
    enum dw_assertion_alg alg;
    char *token;
    size_t token_len;
    int64_t expires_at_ms;
    int64_t valid_until_ms; /* a margin before expiry, so a token does not expire in flight */
    int64_t renew_at_ms;
    unsigned generation;
};

static void strip_slash(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

static void log_openssl(const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char msg[256];
    ERR_error_string_n(e, msg, sizeof msg);
    DW_ERROR("%s \"%s\": %s", what, path, e ? msg : "no PEM data found");
    ERR_clear_error();
}

static dw_rc load_certificate(struct dw_auth *a, const struct dw_config *cfg)
{
    char *pem = NULL;
    size_t pem_len = 0;
    BIO *bio = NULL;
    dw_rc rc = DW_OK;
    FILE *f = fopen(cfg->dataverse.certificate_file, "r");
    if (f == NULL) {
        DW_ERROR("certificate file \"%s\" cannot be opened: %m", cfg->dataverse.certificate_file);
        rc = DW_ERR_SECRET;
        goto out;
    }
    a->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (a->cert == NULL) {
        log_openssl("cannot read the certificate in", cfg->dataverse.certificate_file);
        rc = DW_ERR_SECRET;
        goto out;
    }
    if (!*cfg->dataverse.private_key_file) {
        DW_ERROR("[dataverse] certificate_file is set but private_key_file is not. "
                 "Name the PEM file holding the certificate's private key.");
        rc = DW_ERR_CONFIG;
        goto out;
    }
    if ((rc = dw_secret_read(cfg->dataverse.private_key_file, 1, &pem, &pem_len)) != DW_OK)
        goto out;
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    a->key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (a->key == NULL || EVP_PKEY_base_id(a->key) != EVP_PKEY_RSA) {
        log_openssl("cannot read an RSA private key in", cfg->dataverse.private_key_file);
        rc = DW_ERR_SECRET;
        goto out;
    }
    if (X509_check_private_key(a->cert, a->key) != 1) {
        ERR_clear_error();
        DW_ERROR("private key \"%s\" does not belong to certificate \"%s\"",
                 cfg->dataverse.private_key_file, cfg->dataverse.certificate_file);
        rc = DW_ERR_SECRET;
        goto out;
    }
out:
    BIO_free(bio);
    dw_secret_free(pem, pem_len);
    return rc;
}

dw_rc dw_auth_new(const struct dw_config *cfg, struct dw_auth **out)
{
    struct dw_auth *a = dw_calloc(1, sizeof *a);
    dw_rc rc = DW_OK;
    const struct dw_config *c = cfg;
    if (!*c->dataverse.url || !*c->dataverse.tenant_id || !*c->dataverse.client_id) {
        DW_ERROR("[dataverse] url, tenant_id and client_id must all be set");
        rc = DW_ERR_CONFIG;
        goto out;
    }
    char *authority = dw_strdup(c->dataverse.authority);
    char *url = dw_strdup(c->dataverse.url);
    strip_slash(authority);
    strip_slash(url);
    a->token_url = dw_asprintf("%s/%s/oauth2/v2.0/token", authority, c->dataverse.tenant_id);
    a->scope = dw_asprintf("%s/.default", url);
    free(authority);
    free(url);
    a->client_id = dw_strdup(c->dataverse.client_id);
    a->alg = (enum dw_assertion_alg)c->dataverse.assertion_alg;
    bool have_secret = *c->dataverse.client_secret_file;
    bool have_cert = *c->dataverse.certificate_file;
    if (have_secret == have_cert) {
        DW_ERROR("[dataverse] needs exactly one credential: client_secret_file, or "
                 "certificate_file with private_key_file");
        rc = DW_ERR_CONFIG;
        goto out;
    }
    if (have_secret)
        rc = dw_secret_read(c->dataverse.client_secret_file, 0, &a->secret, &a->secret_len);
    else
        rc = load_certificate(a, c);
out:
    if (rc != DW_OK) {
        dw_auth_free(a);
        return rc;
    }
    *out = a;
    return DW_OK;
}

void dw_auth_free(struct dw_auth *a)
{
    if (a == NULL)
        return;
    free(a->token_url);
    free(a->client_id);
    free(a->scope);
    dw_secret_free(a->secret, a->secret_len);
    dw_secret_free(a->token, a->token_len);
    EVP_PKEY_free(a->key);
    X509_free(a->cert);
    free(a);
}

const char *dw_auth_token_url(const struct dw_auth *a)
{
    return a->token_url;
}

dw_rc dw_base64url(struct dw_buf *out, const unsigned char *data, size_t len)
{
    size_t enc_len = 4 * ((len + 2) / 3);
    unsigned char *enc = dw_malloc(enc_len + 1);
    int n = EVP_EncodeBlock(enc, data, (int)len);
    dw_rc rc = DW_OK;
    for (int i = 0; i < n && rc == DW_OK; i++) {
        char c = (char)enc[i];
        if (c == '=')
            break;
        rc = dw_buf_putc(out, c == '+' ? '-' : c == '/' ? '_' : c);
    }
    free(enc);
    return rc;
}

static dw_rc put_b64url_json(struct dw_buf *out, json_t *obj)
{
    char *s = dw_json_dumps(obj);
    dw_rc rc = dw_base64url(out, (const unsigned char *)s, strlen(s));
    free(s);
    return rc;
}

dw_rc dw_auth_make_assertion(EVP_PKEY *key, X509 *cert, enum dw_assertion_alg alg,
                             const char *client_id, const char *audience, int64_t now_s, char **out)
{
    struct dw_buf jwt, thumb;
    unsigned char md[EVP_MAX_MD_SIZE], jti_raw[16];
    unsigned int mdlen = 0;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    json_t *header = NULL, *claims = NULL;
    dw_rc rc = DW_OK;
    dw_buf_init(&jwt, 0);
    dw_buf_init(&thumb, 0);

    const EVP_MD *thumb_md = alg == DW_ASSERTION_PS256 ? EVP_sha256() : EVP_sha1();
    if (X509_digest(cert, thumb_md, md, &mdlen) != 1 || RAND_bytes(jti_raw, sizeof jti_raw) != 1) {
        rc = DW_ERR_AUTH;
        goto out;
    }
    (void)dw_base64url(&thumb, md, mdlen);
    /* jti: a random version-4 UUID, so the endpoint can refuse a replayed assertion. */
    jti_raw[6] = (unsigned char)((jti_raw[6] & 0x0f) | 0x40);
    jti_raw[8] = (unsigned char)((jti_raw[8] & 0x3f) | 0x80);
    char jti[37];
    snprintf(jti, sizeof jti,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", jti_raw[0],
             jti_raw[1], jti_raw[2], jti_raw[3], jti_raw[4], jti_raw[5], jti_raw[6], jti_raw[7],
             jti_raw[8], jti_raw[9], jti_raw[10], jti_raw[11], jti_raw[12], jti_raw[13],
             jti_raw[14], jti_raw[15]);
    header =
        json_pack("{s:s, s:s, s:s}", "alg", alg == DW_ASSERTION_PS256 ? "PS256" : "RS256", "typ",
                  "JWT", alg == DW_ASSERTION_PS256 ? "x5t#S256" : "x5t", dw_buf_str(&thumb));
    claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", audience, "iss", client_id,
                       "sub", client_id, "jti", jti, "nbf", (json_int_t)now_s, "iat",
                       (json_int_t)now_s, "exp", (json_int_t)(now_s + 600));
    if (header == NULL || claims == NULL) {
        rc = DW_ERR_INVALID;
        goto out;
    }
    if ((rc = put_b64url_json(&jwt, header)) != DW_OK || (rc = dw_buf_putc(&jwt, '.')) != DW_OK ||
        (rc = put_b64url_json(&jwt, claims)) != DW_OK)
        goto out;

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, key) != 1 ||
        (alg == DW_ASSERTION_PS256 &&
         (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
        EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)jwt.data, jwt.len) != 1) {
        rc = DW_ERR_AUTH;
        goto out;
    }
    sig = dw_malloc(siglen);
    if (EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)jwt.data, jwt.len) != 1) {
        rc = DW_ERR_AUTH;
        goto out;
    }
    if ((rc = dw_buf_putc(&jwt, '.')) != DW_OK || (rc = dw_base64url(&jwt, sig, siglen)) != DW_OK)
        goto out;
    *out = dw_buf_steal(&jwt);
out:
    if (rc == DW_ERR_AUTH) {
        DW_ERROR("signing the client assertion failed: %s",
                 ERR_error_string(ERR_get_error(), NULL));
        ERR_clear_error();
    }
    EVP_MD_CTX_free(ctx);
    free(sig);
    json_decref(header);
    json_decref(claims);
    dw_buf_cleanup(&jwt);
    dw_buf_cleanup(&thumb);
    return rc;
}

static dw_rc put_form(struct dw_buf *out, const char *name, const char *value, bool first)
{
    dw_rc rc = first ? DW_OK : dw_buf_putc(out, '&');
    if (rc == DW_OK)
        rc = dw_buf_printf(out, "%s=", name);
    if (rc == DW_OK)
        rc = dw_dvkey_encode(out, value, strlen(value));
    return rc;
}

dw_rc dw_auth_request_body(struct dw_auth *a, int64_t now_s, struct dw_buf *out)
{
    dw_rc rc = put_form(out, "client_id", a->client_id, true);
    if (rc == DW_OK)
        rc = put_form(out, "scope", a->scope, false);
    if (rc == DW_OK)
        rc = put_form(out, "grant_type", "client_credentials", false);
    if (rc != DW_OK)
        return rc;
    if (a->secret)
        return put_form(out, "client_secret", a->secret, false);
    char *jwt = NULL;
    rc = dw_auth_make_assertion(a->key, a->cert, a->alg, a->client_id, a->token_url, now_s, &jwt);
    if (rc == DW_OK)
        rc = put_form(out, "client_assertion_type",
                      "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", false);
    if (rc == DW_OK)
        rc = put_form(out, "client_assertion", jwt, false);
    free(jwt);
    return rc;
}

dw_rc dw_auth_accept(struct dw_auth *a, long http_status, const char *body, int64_t now_ms)
{
    json_error_t jerr;
    json_t *doc = json_loads(body ? body : "", 0, &jerr);
    const char *token = json_string_value(json_object_get(doc, "access_token"));
    json_t *exp = json_object_get(doc, "expires_in");
    int64_t expires_in = json_is_integer(exp)  ? json_integer_value(exp)
                         : json_is_string(exp) ? strtoll(json_string_value(exp), NULL, 10)
                                               : 0;
    dw_rc rc = DW_OK;
    if (http_status != 200 || token == NULL || *token == '\0' || expires_in <= 0) {
        const char *err = json_string_value(json_object_get(doc, "error"));
        const char *desc = json_string_value(json_object_get(doc, "error_description"));
        DW_ERROR("token request to \"%s\" failed: HTTP %ld %s%s%s", a->token_url, http_status,
                 err ? err : "(no error code)", desc ? ": " : "", desc ? desc : "");
        rc = DW_ERR_AUTH;
        goto out;
    }
    /* A lifetime outside 60 s .. 24 h is a broken or hostile authority: a huge one would
     * overflow below, a tiny one would have every request ask for a new token. */
    if (expires_in < DW_AUTH_LIFETIME_MIN_S || expires_in > DW_AUTH_LIFETIME_MAX_S) {
        int64_t clamped =
            expires_in < DW_AUTH_LIFETIME_MIN_S ? DW_AUTH_LIFETIME_MIN_S : DW_AUTH_LIFETIME_MAX_S;
        DW_WARN("the authority gave a token lifetime of %" PRId64 " s: taken as %" PRId64 " s",
                expires_in, clamped);
        expires_in = clamped;
    }
    dw_secret_free(a->token, a->token_len);
    a->token_len = strlen(token);
    a->token = dw_strdup(token);
    a->expires_at_ms = now_ms + expires_in * 1000;
    /* Renew five minutes ahead, or at three quarters of a short lifetime. */
    int64_t ahead = expires_in * 1000 / 4;
    if (ahead > 300000)
        ahead = 300000;
    a->renew_at_ms = a->expires_at_ms - ahead;
    int64_t margin = expires_in * 1000 / 10;
    a->valid_until_ms = a->expires_at_ms - (margin > 1000 ? 1000 : margin);
    a->generation++;
    DW_INFO("obtained an access token valid for %" PRId64 " s", expires_in);
out:
    json_decref(doc);
    return rc;
}

const char *dw_auth_token(const struct dw_auth *a, int64_t now_ms)
{
    return a->token && now_ms < a->valid_until_ms ? a->token : NULL;
}

int64_t dw_auth_renew_at(const struct dw_auth *a)
{
    return a->token ? a->renew_at_ms : 0;
}

unsigned dw_auth_generation(const struct dw_auth *a)
{
    return a->generation;
}

void dw_auth_invalidate(struct dw_auth *a)
{
    dw_secret_free(a->token, a->token_len);
    a->token = NULL;
    a->token_len = 0;
    a->renew_at_ms = 0;
    a->expires_at_ms = 0;
    a->valid_until_ms = 0;
}

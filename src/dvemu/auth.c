/* dvemu's Microsoft Entra ID stand-in: the client-credentials token endpoint (secret or
 * certificate assertion, RS256 with x5t or PS256 with x5t#S256) and the check of the bearer
 * tokens it issues. Tokens are JWTs signed with HS256 under a key made at start, so checking
 * one needs no shared table (and no lock). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "internal.h"

/* base64url without padding, as JWTs use it. */
static char *b64url_encode(const unsigned char *data, size_t len)
{
    char *out = dw_malloc(4 * ((len + 2) / 3) + 1);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

static dw_rc b64url_decode(const char *s, size_t len, unsigned char **out, size_t *out_len)
{
    size_t padded = (len + 3) / 4 * 4;
    char *tmp = dw_malloc(padded + 1);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+' || c == '/' || c == '=') {
            free(tmp);
            return DW_ERR_INVALID;
        }
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    for (size_t i = len; i < padded; i++)
        tmp[i] = '=';
    tmp[padded] = '\0';
    unsigned char *buf = dw_malloc(padded / 4 * 3 + 1);
    int n = EVP_DecodeBlock(buf, (unsigned char *)tmp, (int)padded);
    free(tmp);
    if (n < 0 || len % 4 == 1) {
        free(buf);
        return DW_ERR_INVALID;
    }
    n -= (int)(padded - len); /* EVP_DecodeBlock counts padding as zero bytes */
    *out = buf;
    *out_len = (size_t)n;
    return DW_OK;
}

dw_rc emu_auth_init(struct emu *emu)
{
    if (RAND_bytes(emu->token_key, sizeof emu->token_key) != 1)
        return DW_ERR_IO;
    const struct dw_dvemu_options *o = emu->opt;
    emu->certs = dw_calloc(o->nclients ? o->nclients : 1, sizeof *emu->certs);
    for (size_t i = 0; i < o->nclients; i++) {
        if (o->clients[i].cert_file == NULL)
            continue;
        FILE *f = fopen(o->clients[i].cert_file, "r");
        X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
        if (f)
            fclose(f);
        if (x == NULL) {
            DW_ERROR("cannot read certificate \"%s\" of client \"%s\"", o->clients[i].cert_file,
                     o->clients[i].id);
            return DW_ERR_CONFIG;
        }
        struct emu_certclient *c = &emu->certs[emu->ncerts++];
        c->id = o->clients[i].id;
        c->pkey = X509_get_pubkey(x);
        unsigned int n;
        X509_digest(x, EVP_sha1(), c->sha1, &n);
        X509_digest(x, EVP_sha256(), c->sha256, &n);
        X509_free(x);
    }
    return DW_OK;
}

void emu_auth_free(struct emu *emu)
{
    for (size_t i = 0; i < emu->ncerts; i++)
        EVP_PKEY_free(emu->certs[i].pkey);
    free(emu->certs);
    emu->certs = NULL;
    emu->ncerts = 0;
    OPENSSL_cleanse(emu->token_key, sizeof emu->token_key);
}

/* Form fields (application/x-www-form-urlencoded) into a JSON object of strings. */
static json_t *parse_form(const char *s, size_t len)
{
    json_t *o = json_object();
    char *copy = dw_strndup(s, len);
    for (char *p = copy; *p; p++)
        if (*p == '+')
            *p = ' ';
    char *p = copy;
    while (*p) {
        size_t n = strcspn(p, "&");
        char *eq = memchr(p, '=', n);
        char *name = NULL, *value = NULL;
        if (eq && dw_dvemu_pct_decode(p, (size_t)(eq - p), &name) == DW_OK &&
            dw_dvemu_pct_decode(eq + 1, n - (size_t)(eq - p) - 1, &value) == DW_OK)
            json_object_set_new(o, name, json_string(value));
        free(name);
        free(value);
        p += n;
        if (*p == '&')
            p++;
    }
    free(copy);
    return o;
}

static void token_error(struct emu *emu, struct emu_resp *resp, int status, const char *error,
                        int code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void token_error(struct emu *emu, struct emu_resp *resp, int status, const char *error,
                        int code, const char *fmt, ...)
{
    char guid[37], ts[32];
    emu_new_guid(guid);
    time_t now = (time_t)(emu_clock_wall_ms(&emu->clock) / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%SZ", &tm);
    char desc_head[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc_head, sizeof desc_head, fmt, ap);
    va_end(ap);
    char *desc = dw_asprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", code,
                             desc_head, guid, guid, ts);
    emu_resp_json(resp, status,
                  json_pack("{s:s, s:s, s:[i], s:s, s:s, s:s, s:s}", "error", error,
                            "error_description", desc, "error_codes", code, "timestamp", ts,
                            "trace_id", guid, "correlation_id", guid, "error_uri",
                            "https://login.microsoftonline.com/error"));
    resp->content_type = "application/json; charset=utf-8";
    free(desc);
}

static char *make_token(struct emu *emu, const char *client_id, long lifetime)
{
    time_t now = (time_t)(emu_clock_wall_ms(&emu->clock) / 1000);
    char *uid = emu_stable_guid("user", client_id);
    char jti[37];
    emu_new_guid(jti);
    char *iss = dw_asprintf("https://sts.windows.net/%s/", emu->opt->tenant);
    json_t *hdr = json_pack("{s:s, s:s}", "typ", "JWT", "alg", "HS256");
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", emu->base_url, "iss", iss,
                  "tid", emu->opt->tenant, "appid", client_id, "oid", uid, "uti", jti, "iat",
                  (json_int_t)now, "nbf", (json_int_t)now, "exp", (json_int_t)(now + lifetime));
    char *h = dw_json_dumps(hdr), *c = dw_json_dumps(claims);
    char *h64 = b64url_encode((unsigned char *)h, strlen(h));
    char *c64 = b64url_encode((unsigned char *)c, strlen(c));
    char *signing = dw_asprintf("%s.%s", h64, c64);
    unsigned char mac[32];
    unsigned int maclen = sizeof mac;
    HMAC(EVP_sha256(), emu->token_key, sizeof emu->token_key, (unsigned char *)signing,
         strlen(signing), mac, &maclen);
    char *s64 = b64url_encode(mac, maclen);
    char *token = dw_asprintf("%s.%s", signing, s64);
    free(uid);
    free(iss);
    free(h);
    free(c);
    free(h64);
    free(c64);
    free(signing);
    free(s64);
    json_decref(hdr);
    json_decref(claims);
    return token;
}

/* Splits a JWT into its decoded header and claims and the signed part's length. */
static dw_rc jwt_split(const char *jwt, json_t **hdr, json_t **claims, size_t *signed_len,
                       unsigned char **sig, size_t *sig_len)
{
    const char *d1 = strchr(jwt, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d2 == NULL || strchr(d2 + 1, '.'))
        return DW_ERR_INVALID;
    unsigned char *hb = NULL, *cb = NULL;
    size_t hl, cl;
    dw_rc rc = DW_ERR_INVALID;
    if (b64url_decode(jwt, (size_t)(d1 - jwt), &hb, &hl) != DW_OK ||
        b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cb, &cl) != DW_OK ||
        b64url_decode(d2 + 1, strlen(d2 + 1), sig, sig_len) != DW_OK)
        goto out;
    *hdr = json_loadb((char *)hb, hl, 0, NULL);
    *claims = json_loadb((char *)cb, cl, 0, NULL);
    if (!json_is_object(*hdr) || !json_is_object(*claims)) {
        json_decref(*hdr);
        json_decref(*claims);
        free(*sig);
        goto out;
    }
    *signed_len = (size_t)(d2 - jwt);
    rc = DW_OK;
out:
    free(hb);
    free(cb);
    return rc;
}

dw_rc emu_token_check(struct emu *emu, const char *authorization, char **user)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return DW_ERR_AUTH;
    const char *jwt = authorization + 7;
    json_t *hdr = NULL, *claims = NULL;
    unsigned char *sig = NULL;
    size_t signed_len, sig_len;
    if (jwt_split(jwt, &hdr, &claims, &signed_len, &sig, &sig_len) != DW_OK)
        return DW_ERR_AUTH;
    dw_rc rc = DW_ERR_AUTH;
    unsigned char mac[32];
    unsigned int maclen = sizeof mac;
    HMAC(EVP_sha256(), emu->token_key, sizeof emu->token_key, (const unsigned char *)jwt,
         signed_len, mac, &maclen);
    if (sig_len != maclen || CRYPTO_memcmp(sig, mac, maclen) != 0)
        goto out;
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    if (exp <= (json_int_t)(emu_clock_wall_ms(&emu->clock) / 1000))
        goto out;
    const char *appid = json_string_value(json_object_get(claims, "appid"));
    if (appid == NULL)
        goto out;
    *user = dw_strdup(appid);
    rc = DW_OK;
out:
    free(sig);
    json_decref(hdr);
    json_decref(claims);
    return rc;
}

/* Verifies a certificate client assertion; on failure *why names the AADSTS case. */
static int check_assertion(struct emu *emu, const char *client_id, const char *jwt,
                           const char *tenant, const char **why)
{
    json_t *hdr = NULL, *claims = NULL;
    unsigned char *sig = NULL, *thumb = NULL;
    size_t signed_len, sig_len, thumb_len = 0;
    int code = 700027;
    EVP_MD_CTX *md = NULL;
    *why = "Client assertion failed signature validation.";
    if (jwt_split(jwt, &hdr, &claims, &signed_len, &sig, &sig_len) != DW_OK) {
        *why = "Client assertion is not a valid JWT.";
        return 50027;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    bool pss = alg && strcmp(alg, "PS256") == 0;
    bool rs = alg && strcmp(alg, "RS256") == 0;
    const char *t64 = json_string_value(json_object_get(hdr, pss ? "x5t#S256" : "x5t"));
    if (!(pss || rs) || t64 == NULL || b64url_decode(t64, strlen(t64), &thumb, &thumb_len)) {
        *why = "The client assertion header must name PS256 with x5t#S256 or RS256 with x5t.";
        goto out;
    }
    struct emu_certclient *c = NULL;
    for (size_t i = 0; i < emu->ncerts && c == NULL; i++) {
        const unsigned char *want = pss ? emu->certs[i].sha256 : emu->certs[i].sha1;
        if (strcmp(emu->certs[i].id, client_id) == 0 && thumb_len == (pss ? 32u : 20u) &&
            memcmp(want, thumb, thumb_len) == 0)
            c = &emu->certs[i];
    }
    if (c == NULL) {
        code = 700027;
        *why = "Client assertion contains an invalid signature. The key was not found.";
        goto out;
    }
    md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, c->pkey) != 1)
        goto out;
    if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1))
        goto out;
    if (EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt, signed_len) != 1)
        goto out;
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    json_int_t now = (json_int_t)(emu_clock_wall_ms(&emu->clock) / 1000);
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    char *suffix = dw_asprintf("/%s/oauth2/v2.0/token", tenant);
    bool aud_ok = aud && strlen(aud) >= strlen(suffix) &&
                  strcmp(aud + strlen(aud) - strlen(suffix), suffix) == 0;
    free(suffix);
    if (iss == NULL || sub == NULL || strcmp(iss, client_id) != 0 || strcmp(sub, client_id) != 0) {
        code = 700021;
        *why = "Client assertion application identifier doesn't match 'client_id' parameter.";
    } else if (!aud_ok) {
        code = 700016;
        *why = "The audience claim of the client assertion is not the token endpoint.";
    } else if (!json_is_integer(exp) || json_integer_value(exp) <= now ||
               (nbf && json_integer_value(nbf) > now + 300)) {
        code = 700024;
        *why = "Client assertion is not within its valid time range.";
    } else {
        code = 0;
    }
out:
    EVP_MD_CTX_free(md);
    free(sig);
    free(thumb);
    json_decref(hdr);
    json_decref(claims);
    return code;
}

void emu_token_endpoint(struct emu *emu, const char *tenant, const char *form, size_t len,
                        struct emu_resp *resp)
{
    json_t *f = parse_form(form ? form : "", len);
    const char *grant = json_string_value(json_object_get(f, "grant_type"));
    const char *client_id = json_string_value(json_object_get(f, "client_id"));
    const char *secret = json_string_value(json_object_get(f, "client_secret"));
    const char *assertion = json_string_value(json_object_get(f, "client_assertion"));
    const char *atype = json_string_value(json_object_get(f, "client_assertion_type"));
    const char *scope = json_string_value(json_object_get(f, "scope"));
    const struct dw_dvemu_options *o = emu->opt;
    if (strcmp(tenant, o->tenant) != 0) {
        token_error(emu, resp, 400, "invalid_request", 90002,
                    "Tenant '%s' not found. Check to make sure you have the correct tenant ID "
                    "and are signing into the correct cloud.",
                    tenant);
        goto out;
    }
    if (grant == NULL || strcmp(grant, "client_credentials") != 0) {
        token_error(emu, resp, 400, "unsupported_grant_type", 70003,
                    "The app requested an unsupported grant type '%s'.", grant ? grant : "");
        goto out;
    }
    if (client_id == NULL) {
        token_error(emu, resp, 400, "invalid_request", 900144,
                    "The request body must contain the following parameter: '%s'.", "client_id");
        goto out;
    }
    if (scope == NULL) {
        token_error(emu, resp, 400, "invalid_request", 900144,
                    "The request body must contain the following parameter: '%s'.", "scope");
        goto out;
    }
    const struct dw_dvemu_client *c = NULL;
    for (size_t i = 0; i < o->nclients; i++)
        if (strcmp(o->clients[i].id, client_id) == 0)
            c = &o->clients[i];
    if (c == NULL) {
        token_error(emu, resp, 400, "unauthorized_client", 700016,
                    "Application with identifier '%s' was not found in the directory.", client_id);
        goto out;
    }
    if (assertion) {
        const char *why;
        int code;
        if (atype == NULL ||
            strcmp(atype, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") != 0) {
            token_error(emu, resp, 400, "invalid_request", 50027,
                        "Invalid client_assertion_type '%s'.", atype ? atype : "");
            goto out;
        }
        if (c->cert_file == NULL) {
            token_error(emu, resp, 401, "invalid_client", 700027, "%s",
                        "Client assertion contains an invalid signature. No certificate is "
                        "registered for the application.");
            goto out;
        }
        if ((code = check_assertion(emu, client_id, assertion, tenant, &why)) != 0) {
            token_error(emu, resp, 401, "invalid_client", code, "%s", why);
            goto out;
        }
    } else if (secret) {
        size_t a = strlen(secret), b = c->secret ? strlen(c->secret) : 0;
        if (c->secret == NULL || a != b || CRYPTO_memcmp(secret, c->secret, a) != 0) {
            token_error(emu, resp, 401, "invalid_client", 7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the "
                        "request is the client secret value, not the client secret ID, for a "
                        "secret added to app '%s'.",
                        client_id);
            goto out;
        }
    } else {
        token_error(emu, resp, 401, "invalid_client", 7000218,
                    "The request body must contain the following parameter: '%s'.",
                    "client_assertion' or 'client_secret");
        goto out;
    }
    char *token = make_token(emu, client_id, o->token_lifetime);
    emu_resp_json(resp, 200,
                  json_pack("{s:s, s:i, s:i, s:s}", "token_type", "Bearer", "expires_in",
                            o->token_lifetime, "ext_expires_in", o->token_lifetime, "access_token",
                            token));
    resp->content_type = "application/json; charset=utf-8";
    OPENSSL_cleanse(token, strlen(token));
    free(token);
out:
    json_decref(f);
}

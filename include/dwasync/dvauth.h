/*
 * dvauth.h - OAuth2 client credentials against Microsoft Entra ID, for the sink.
 *
 * A struct dw_auth holds the credential (a client secret, or a certificate and its private
 * key for a signed JWT client assertion) and the cached access token. It does no I/O of its
 * own beyond reading the credential files at creation: the sink sends the token request
 * that dw_auth_request_body() composes and hands the answer to dw_auth_accept(). Tokens are
 * renewed ahead of expiry (dw_auth_renew_due) so that a 401 is the exception.
 *
 * Ownership: created by dw_auth_new(), freed by dw_auth_free(), which wipes the secret.
 * Strings returned are borrowed from the struct. Secrets read are registered with the
 * redactor; the token is never logged.
 */
#ifndef DWASYNC_DVAUTH_H
#define DWASYNC_DVAUTH_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

#include "dwasync/buf.h"
#include "dwasync/config.h"
#include "dwasync/rc.h"

struct dw_auth;

/* Reads the credential named by cfg ([dataverse] client_secret_file, or certificate_file and
 * private_key_file); errors name the file and the fix. */
dw_rc dw_auth_new(const struct dw_config *cfg, struct dw_auth **out);

/* Wipes the credential and the token; NULL is fine. */
void dw_auth_free(struct dw_auth *a);

/* The token endpoint: <authority>/<tenant>/oauth2/v2.0/token. Borrowed. */
const char *dw_auth_token_url(const struct dw_auth *a);

/* Composes the form body of a token request (a fresh assertion each time) into out. */
dw_rc dw_auth_request_body(struct dw_auth *a, int64_t now_s, struct dw_buf *out);

/* The token lifetimes believed: an expires_in outside these bounds is clamped to them. */
#define DW_AUTH_LIFETIME_MIN_S 60
#define DW_AUTH_LIFETIME_MAX_S 86400

/*
 * Takes a token endpoint answer. On 200 with an access_token, caches it with its expiry
 * (now_ms + expires_in, expires_in clamped to DW_AUTH_LIFETIME_MIN_S..MAX_S) and bumps the
 * generation. Otherwise logs the endpoint's error
 * (never the secret) and returns DW_ERR_AUTH.
 */
dw_rc dw_auth_accept(struct dw_auth *a, long http_status, const char *body, int64_t now_ms);

/* The cached token if it is valid at now_ms, else NULL. Borrowed. */
const char *dw_auth_token(const struct dw_auth *a, int64_t now_ms);

/* When the cached token should be renewed (0 if there is none). */
int64_t dw_auth_renew_at(const struct dw_auth *a);

/* Generation of the cached token: bumps on each new token. */
unsigned dw_auth_generation(const struct dw_auth *a);

/* Drops the cached token (after a 401 with it). */
void dw_auth_invalidate(struct dw_auth *a);

/*
 * Builds a signed client assertion JWT (caller frees): header {alg, typ, x5t#S256 for PS256
 * or x5t for RS256}, claims aud, iss, sub, jti, nbf, iat, exp (10 minutes).
 */
dw_rc dw_auth_make_assertion(EVP_PKEY *key, X509 *cert, enum dw_assertion_alg alg,
                             const char *client_id, const char *audience, int64_t now_s,
                             char **out);

/* base64url without padding of len bytes, appended to out. */
dw_rc dw_base64url(struct dw_buf *out, const unsigned char *data, size_t len);

#endif

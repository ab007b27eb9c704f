/*
 * The redactor (see redact.h). Registered secrets (copies, held until exit or
 * dw_redact_clear()) are replaced first; then one left-to-right scan replaces the shapes that
 * are secrets whatever their origin: bearer tokens, JWTs, values of secret keys and PEM
 * private key blocks. Process-global state, one thread.
 */
#include "dwasync/redact.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"

static char **secrets;
static size_t nsecrets;

/* Keys whose values are secrets in form (k=v), JSON ("k":"v") and conninfo syntax. */
static const char *const secret_keys[] = {
    "client_secret", "client_assertion", "access_token", "refresh_token", "password", "id_token",
};

void dw_redact_register(const char *secret)
{
    if (secret == NULL || strlen(secret) < 4)
        return;
    for (size_t i = 0; i < nsecrets; i++)
        if (strcmp(secrets[i], secret) == 0)
            return;
    secrets = dw_realloc(secrets, (nsecrets + 1) * sizeof *secrets);
    secrets[nsecrets++] = dw_strdup(secret);
}

void dw_redact_clear(void)
{
    for (size_t i = 0; i < nsecrets; i++)
        free(secrets[i]);
    free(secrets);
    secrets = NULL;
    nsecrets = 0;
}

static bool is_token_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '/' ||
           c == '=';
}

/* Bearer tokens are long; a shorter word after "bearer" is prose ("bearer of news"). */
#define MIN_TOKEN_LENGTH 8

static size_t token_length(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && is_token_char((unsigned char)s[n]))
        n++;
    return n;
}

static bool is_b64url_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_';
}

/* Length of a JSON Web Token starting at s (three base64url segments), or 0. */
static size_t jwt_length(const char *s, size_t len)
{
    if (len < 10 || strncmp(s, "eyJ", 3) != 0)
        return 0;
    size_t i = 0, dots = 0;
    while (i < len && (is_b64url_char((unsigned char)s[i]) || s[i] == '.')) {
        if (s[i] == '.')
            dots++;
        i++;
    }
    return dots >= 2 ? i : 0;
}

/*
 * If a secret key starts at s, returns the length of "key" plus its separator and
 * sets *value_len to the length of the value that follows (quotes excluded).
 */
static size_t secret_key_prefix(const char *s, size_t len, size_t *value_len)
{
    for (size_t k = 0; k < sizeof secret_keys / sizeof *secret_keys; k++) {
        size_t klen = strlen(secret_keys[k]);
        if (len < klen || strncasecmp(s, secret_keys[k], klen) != 0)
            continue;
        size_t i = klen;
        if (i < len && s[i] == '"')
            i++;
        while (i < len && s[i] == ' ')
            i++;
        if (i >= len || (s[i] != '=' && s[i] != ':'))
            continue;
        i++;
        while (i < len && s[i] == ' ')
            i++;
        char quote = 0;
        if (i < len && (s[i] == '"' || s[i] == '\'')) {
            quote = s[i];
            i++;
        }
        size_t v = i;
        if (quote) {
            while (v < len && s[v] != quote) {
                if (s[v] == '\\' && v + 1 < len)
                    v++;
                v++;
            }
        } else {
            while (v < len && !isspace((unsigned char)s[v]) && s[v] != '&' && s[v] != ',' &&
                   s[v] != '}' && s[v] != ';')
                v++;
        }
        *value_len = v - i;
        return i;
    }
    return 0;
}

/* Length of a PEM private key block starting at s, or 0. */
static size_t pem_private_key_length(const char *s, size_t len)
{
    static const char begin[] = "-----BEGIN ";
    if (len < sizeof begin || strncmp(s, begin, sizeof begin - 1) != 0)
        return 0;
    const char *eol = memchr(s, '\n', len);
    size_t head = eol ? (size_t)(eol - s) : len;
    const char *pk = memmem(s, head, "PRIVATE KEY-----", 16);
    if (pk == NULL)
        return 0;
    const char *end = memmem(s, len, "-----END ", 9);
    if (end == NULL)
        return len;
    const char *close = memmem(end + 9, len - (size_t)(end + 9 - s), "-----", 5);
    return close ? (size_t)(close + 5 - s) : len;
}

static void redact_registered(struct dw_buf *b)
{
    for (size_t k = 0; k < nsecrets; k++) {
        size_t slen = strlen(secrets[k]);
        if (b->len < slen || memmem(b->data, b->len, secrets[k], slen) == NULL)
            continue;
        struct dw_buf out;
        dw_buf_init(&out, 0);
        size_t i = 0;
        while (i < b->len) {
            const char *hit = memmem(b->data + i, b->len - i, secrets[k], slen);
            size_t upto = hit ? (size_t)(hit - b->data) : b->len;
            (void)dw_buf_append(&out, b->data + i, upto - i);
            if (!hit)
                break;
            (void)dw_buf_puts(&out, DW_REDACTED);
            i = upto + slen;
        }
        dw_buf_cleanup(b);
        *b = out;
    }
}

static void redact_shapes(struct dw_buf *b)
{
    struct dw_buf out;
    dw_buf_init(&out, 0);
    const char *s = b->data;
    size_t len = b->len, i = 0;
    bool changed = false;
    while (i < len) {
        size_t n, vlen;
        if (len - i > 7 && strncasecmp(s + i, "bearer ", 7) == 0 &&
            token_length(s + i + 7, len - i - 7) >= MIN_TOKEN_LENGTH) {
            (void)dw_buf_append(&out, s + i, 7);
            (void)dw_buf_puts(&out, DW_REDACTED);
            i += 7;
            while (i < len && is_token_char((unsigned char)s[i]))
                i++;
            changed = true;
        } else if ((i == 0 || !is_b64url_char((unsigned char)s[i - 1])) &&
                   (n = jwt_length(s + i, len - i)) > 0) {
            (void)dw_buf_puts(&out, DW_REDACTED);
            i += n;
            changed = true;
        } else if ((i == 0 || !isalnum((unsigned char)s[i - 1])) &&
                   (n = secret_key_prefix(s + i, len - i, &vlen)) > 0 && vlen > 0) {
            (void)dw_buf_append(&out, s + i, n);
            (void)dw_buf_puts(&out, DW_REDACTED);
            i += n + vlen;
            changed = true;
        } else if ((n = pem_private_key_length(s + i, len - i)) > 0) {
            (void)dw_buf_puts(&out, DW_REDACTED);
            i += n;
            changed = true;
        } else {
            (void)dw_buf_putc(&out, s[i]);
            i++;
        }
    }
    if (changed) {
        dw_buf_cleanup(b);
        *b = out;
    } else {
        dw_buf_cleanup(&out);
    }
}

void dw_redact_buf(struct dw_buf *b)
{
    if (b->len == 0)
        return;
    redact_registered(b);
    redact_shapes(b);
}

char *dw_redact_str(const char *s)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_puts(&b, s);
    dw_redact_buf(&b);
    return dw_buf_steal(&b);
}

/*
 * The classifier (see dvclassify.h): a transport failure, HTTP status and Dataverse error
 * code in, a verdict (done, retry, renew the token, permanent) and error class out. Pure
 * functions; what counts as retryable is decided here and nowhere else.
 */
#include "dwasync/dvclassify.h"

#include <string.h>

const char *dw_verdict_name(enum dw_verdict v)
{
    switch (v) {
    case DW_VERDICT_OK:
        return "ok";
    case DW_VERDICT_RETRY:
        return "retry";
    case DW_VERDICT_RENEW_AUTH:
        return "renew_auth";
    case DW_VERDICT_PERMANENT:
        return "permanent";
    }
    return "?";
}

/* Codes that say the request failed for the service's reasons, not for what it holds:
 * service protection limits and the generic unexpected error. */
static bool transient_code(const char *code)
{
    static const char *const codes[] = {
        "0x80072322", /* number of requests */
        "0x80072321", /* combined execution time */
        "0x80072326", /* concurrent requests */
        "0x80040216", /* "an unexpected error occurred": the platform's generic failure */
    };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (strcmp(code, codes[i]) == 0)
            return true;
    return false;
}

static struct dw_classification verdict(enum dw_verdict v, enum dw_error_class c)
{
    struct dw_classification r = {v, c, false, false};
    return r;
}

static struct dw_classification classify_transport(CURLcode transport)
{
    struct dw_classification r = verdict(DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT);
    switch (transport) {
    /* The peer is not who the CA file says or the URL is wrong: still retried (the
     * operator may fix trust without losing anything) but flagged for blocking callers. */
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        r.config_error = true;
        break;
    default:
        break;
    }
    return r;
}

struct dw_classification dw_classify(enum dw_write_op op, CURLcode transport, int http_status,
                                     const char *code)
{
    if (code == NULL)
        code = "";
    if (transport != CURLE_OK)
        return classify_transport(transport);
    if (http_status >= 200 && http_status < 300)
        return verdict(DW_VERDICT_OK, DW_ERRCLASS_NONE);
    if (http_status == 404 && op == DW_WRITE_DELETE)
        return verdict(DW_VERDICT_OK, DW_ERRCLASS_NONE); /* already gone: idempotent */
    if (http_status == 429) {
        struct dw_classification r = verdict(DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT);
        r.throttled = true;
        return r;
    }
    if (http_status == 401)
        return verdict(DW_VERDICT_RENEW_AUTH, DW_ERRCLASS_PRIVILEGE);
    if (http_status >= 300 && http_status < 400) {
        /* A redirect is never followed (it could lead the bearer token anywhere): the URL is
         * wrong, which the operator fixes; the change waits, it is not the row's fault. */
        struct dw_classification r = verdict(DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT);
        r.config_error = true;
        return r;
    }
    if (transient_code(code) || http_status == 408 || http_status == 502 || http_status == 503 ||
        http_status == 504)
        return verdict(DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT);
    if (http_status >= 500)
        /* A 5xx with a Dataverse code is the platform refusing this row (a plug-in, a SQL
         * constraint); without one it is the service failing, which passes. */
        return *code ? verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_UNKNOWN)
                     : verdict(DW_VERDICT_RETRY, DW_ERRCLASS_TRANSIENT);
    switch (http_status) {
    case 400:
    case 413:
    case 422:
        if (strcmp(code, "0x80040237") == 0 || strcmp(code, "0x80060892") == 0)
            return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_DUPLICATE);
        return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_VALIDATION);
    case 403:
        return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_PRIVILEGE);
    case 404:
        /* Update-only on an absent row is a precondition, not a missing parent. */
        if (op == DW_WRITE_UPDATE && strcmp(code, "0x80048d02") != 0 &&
            strcmp(code, "0x80040217") != 0)
            return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_CONFLICT);
        if (strcmp(code, "0x8006088a") == 0) /* unknown entity set: the map is wrong */
            return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_VALIDATION);
        return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_MISSING_PARENT);
    case 409:
        return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_CONFLICT);
    case 412:
        return verdict(DW_VERDICT_PERMANENT,
                       op == DW_WRITE_UPDATE ? DW_ERRCLASS_CONFLICT : DW_ERRCLASS_DUPLICATE);
    default:
        return verdict(DW_VERDICT_PERMANENT, DW_ERRCLASS_UNKNOWN);
    }
}

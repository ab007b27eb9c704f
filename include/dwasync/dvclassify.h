/*
 * dvclassify.h - the one place that decides what a Dataverse answer means.
 *
 * Every response (an HTTP status, a Dataverse error code, or a transport failure) is
 * classified here into what the sink does next: done, retry later, renew the token and
 * retry, or give the row up as permanently refused, with the error class the error table
 * records. Nothing else in dwasync decides retryable versus permanent. Pure functions.
 */
#ifndef DWASYNC_DVCLASSIFY_H
#define DWASYNC_DVCLASSIFY_H

#include <curl/curl.h>
#include <stdbool.h>

#include "dwasync/write.h"

enum dw_verdict {
    DW_VERDICT_OK,         /* applied */
    DW_VERDICT_RETRY,      /* transient: back off (or wait for Retry-After) and resend */
    DW_VERDICT_RENEW_AUTH, /* 401: renew the token once and resend */
    DW_VERDICT_PERMANENT,  /* this row is refused; keep code and message */
};

struct dw_classification {
    enum dw_verdict verdict;
    enum dw_error_class error_class; /* DW_ERRCLASS_NONE for OK */
    bool throttled;                  /* 429: slow the whole environment down */
    bool config_error; /* retrying cannot help until an operator acts (TLS trust, URL) */
};

/*
 * Classifies one answer. transport is CURLE_OK when an HTTP response was received;
 * otherwise http_status is ignored. code is the Dataverse error code ("" or NULL if none).
 */
struct dw_classification dw_classify(enum dw_write_op op, CURLcode transport, int http_status,
                                     const char *code);

/* "ok", "retry", "renew_auth", "permanent". */
const char *dw_verdict_name(enum dw_verdict v);

#endif

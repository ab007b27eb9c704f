/*
 * dvbatch.h - OData 4.0 multipart $batch: building requests and parsing responses.
 *
 * The builder writes one application/http part per request (optionally all inside one
 * changeset) with CRLF line ends, as Dataverse's $batch expects. The parser reads the
 * response body that came back with a given Content-Type: boundaries quoted or not,
 * changeset responses nested one level, CRLF or bare LF line ends, embedded responses with
 * or without Content-Length. It trusts nothing: malformed input gives DW_ERR_PROTOCOL,
 * never a crash. A parsed response owns its parts; free it with dw_batch_response_cleanup.
 */
#ifndef DWASYNC_DVBATCH_H
#define DWASYNC_DVBATCH_H

#include <stddef.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Most parts one response may hold (Dataverse allows 1000 requests per batch). */
#define DW_BATCH_MAX_PARTS 5000

/* One request of a batch; every pointer is borrowed for the call. */
struct dw_batch_request {
    const char *method;  /* "PATCH", "POST", "DELETE", "GET" */
    const char *url;     /* relative to the service root, or absolute */
    const char *headers; /* extra header lines, each ending in CRLF, or NULL */
    const char *body;    /* JSON body or NULL */
    size_t body_len;
    size_t content_id; /* inside a changeset: its Content-ID; 0 numbers it by position */
};

/*
 * Appends the multipart body of n requests separated by boundary. With changeset non-NULL
 * the requests go into one atomic changeset with that boundary and Content-IDs 1..n (or
 * each request's own content_id).
 */
dw_rc dw_batch_build(struct dw_buf *out, const char *boundary, const char *changeset,
                     const struct dw_batch_request *reqs, size_t n);

/* One embedded response, in the order the requests were sent. */
struct dw_batch_part {
    int status;        /* HTTP status of the embedded response */
    char *content_id;  /* echoed Content-ID, or NULL */
    char *retry_after; /* Retry-After header value, or NULL */
    char *body;        /* NUL-terminated body ("" when none) */
    size_t body_len;
};

struct dw_batch_response {
    struct dw_batch_part *parts;
    size_t nparts;
};

/*
 * Extracts the boundary parameter of a multipart Content-Type (quoted or not) into a new
 * heap string (caller frees). DW_ERR_PROTOCOL when there is none.
 */
dw_rc dw_batch_boundary(const char *content_type, char **out);

/*
 * Parses a $batch response body. *out is filled (caller cleans up) on success; on failure
 * it is left empty and DW_ERR_PROTOCOL is returned.
 */
dw_rc dw_batch_parse(const char *content_type, const char *body, size_t len,
                     struct dw_batch_response *out);

/* Frees the parts; the struct is empty afterwards. */
void dw_batch_response_cleanup(struct dw_batch_response *r);

#endif

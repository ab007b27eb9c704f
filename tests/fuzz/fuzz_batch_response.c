/*
 * Fuzz target for the $batch response parser. The input's first line is the response's
 * Content-Type header value, the rest its body, so boundaries are fuzzed too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/dvbatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : size;
    char *ct = malloc(ct_len + 1);
    if (ct == NULL)
        return 0;
    memcpy(ct, data, ct_len);
    ct[ct_len] = '\0';
    const char *body = nl ? (const char *)nl + 1 : "";
    size_t body_len = nl ? size - ct_len - 1 : 0;
    struct dw_batch_response r;
    if (dw_batch_parse(ct, body, body_len, &r) == DW_OK) {
        /* Every part must be self-consistent: touch each byte the parser claims. */
        size_t sum = 0;
        for (size_t i = 0; i < r.nparts; i++) {
            if (r.parts[i].status < 100 || r.parts[i].status > 999 ||
                r.parts[i].body[r.parts[i].body_len] != '\0')
                abort();
            for (size_t j = 0; j < r.parts[i].body_len; j++)
                sum += (unsigned char)r.parts[i].body[j];
        }
        (void)sum;
        dw_batch_response_cleanup(&r);
    }
    free(ct);
    return 0;
}

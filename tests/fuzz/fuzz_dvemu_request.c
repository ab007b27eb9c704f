/* Fuzz target: dvemu's parsers of untrusted request bytes. The first byte picks the parser
 * (OData key segment, $filter, multipart $batch body with its parts' embedded requests);
 * the rest is the input. Every parser must return an error on bad input, never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvemu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *text = dw_strndup((const char *)data + 1, size - 1);
    size_t len = strlen(text);
    switch (data[0] % 3) {
    case 0: {
        struct dw_dvemu_key k = {0};
        if (dw_dvemu_key_parse(text, len, &k) == DW_OK)
            dw_dvemu_key_cleanup(&k);
        break;
    }
    case 1: {
        struct dw_dvemu_filter *f = NULL;
        char *err = NULL;
        if (dw_dvemu_filter_parse(text, &f, &err) == DW_OK) {
            json_t *row =
                json_pack("{s:s, s:i, s:{s:s}, s:n}", "name", "x", "n", 5, "a", "b", "c", "z");
            (void)dw_dvemu_filter_match(f, row);
            json_decref(row);
            dw_dvemu_filter_free(f);
        }
        free(err);
        break;
    }
    default: {
        /* Raw bytes (NULs included) as a batch body with boundary "b". */
        struct dw_dvemu_part *parts = NULL;
        size_t n = 0;
        if (dw_dvemu_multipart_parse((const char *)data + 1, size - 1, "b", &parts, &n) == DW_OK) {
            for (size_t i = 0; i < n; i++) {
                char *ct = NULL, *cb = NULL;
                struct dw_dvemu_inner in;
                (void)dw_dvemu_inner_parse(parts[i].body, parts[i].body_len, &in);
                if (dw_dvemu_header_get(parts[i].headers, parts[i].headers_len, "Content-Type",
                                        &ct) == DW_OK &&
                    dw_dvemu_boundary(ct, &cb) == DW_OK) {
                    struct dw_dvemu_part *sub = NULL;
                    size_t nsub = 0;
                    if (dw_dvemu_multipart_parse(parts[i].body, parts[i].body_len, cb, &sub,
                                                 &nsub) == DW_OK)
                        free(sub);
                }
                free(ct);
                free(cb);
            }
            free(parts);
        }
        break;
    }
    }
    free(text);
    return 0;
}

/*
 * Fuzz target: the pgoutput decoder and the value conversions behind it.
 *
 * The first byte picks the mode, the rest is the payload:
 *   even: one message (tag and body) decoded by a decoder primed with a relation of oid 1
 *         (int4 key, text, numeric, timestamptz, jsonb, int4[]) inside an open transaction,
 *         so the bytes behind every tag, I/U/D/T included, reach the deep paths;
 *   odd:  a sequence of messages, each a 2-byte big-endian length and the bytes, decoded by
 *         one fresh decoder (R before I, schema changes, transactions).
 * Every change is converted to the decode line and to the jansson row form.
 * Seeds: tests/data/pgoutput/make_fuzz_seeds.py turns the golden recording into corpus files.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/log.h"
#include "dwasync/pgoutput.h"
#include "dwasync/values.h"

static struct dw_values_options opts;
static struct dw_buf line;

static dw_rc on_change(void *user, const struct dw_change *c)
{
    (void)user;
    dw_buf_reset(&line);
    dw_change_append_json(&line, c, &opts);
    if (c->op != DW_CHANGE_TRUNCATE) {
        struct dw_row_json row;
        char *error = NULL;
        if (dw_change_row_json(c, &opts, &row, &error) == DW_OK)
            dw_row_json_cleanup(&row);
        free(error);
    }
    return DW_OK;
}

static void put(uint8_t **p, const void *src, size_t n)
{
    memcpy(*p, src, n);
    *p += n;
}

static void put32(uint8_t **p, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(p, b, 4);
}

static void prime(struct dw_pgoutput *d, const struct dw_pgoutput_handler *h)
{
    static const struct {
        const char *name;
        uint32_t type;
    } cols[] = {{"id", 23}, {"t", 25}, {"n", 1700}, {"ts", 1184}, {"j", 3802}, {"a", 1007}};
    uint8_t msg[256], *p = msg;
    put(&p, "R", 1);
    put32(&p, 1);
    put(&p, "public", 7);
    put(&p, "t", 2);
    put(&p, "d", 1);
    put(&p, "\0\6", 2);
    for (size_t i = 0; i < 6; i++) {
        uint8_t key = i == 0;
        put(&p, &key, 1);
        put(&p, cols[i].name, strlen(cols[i].name) + 1);
        put32(&p, cols[i].type);
        put32(&p, 0xffffffff);
    }
    dw_pgoutput_decode(d, 1, msg, (size_t)(p - msg), h);
    p = msg;
    put(&p, "B", 1);
    put32(&p, 0);
    put32(&p, 0x1000);
    put32(&p, 0);
    put32(&p, 0);
    put32(&p, 7);
    dw_pgoutput_decode(d, 2, msg, (size_t)(p - msg), h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        dw_log_configure(DW_LOG_ERROR + 1, DW_LOG_LOGFMT);
        dw_values_options_init(&opts, "UTC");
        dw_buf_init(&line, 0);
        init = true;
    }
    if (size < 1)
        return 0;
    struct dw_pgoutput_handler h = {NULL, NULL, on_change, NULL, NULL};
    struct dw_pgoutput *d = dw_pgoutput_new();
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    if ((data[0] & 1) == 0) {
        prime(d, &h);
        /* An exact-size copy: a read past the message is a read past the allocation. */
        uint8_t *copy = malloc(left ? left : 1);
        memcpy(copy, p, left);
        dw_pgoutput_decode(d, 3, copy, left, &h);
        free(copy);
    } else {
        while (left >= 2) {
            size_t n = (size_t)p[0] << 8 | p[1];
            p += 2;
            left -= 2;
            if (n > left)
                n = left;
            uint8_t *copy = malloc(n ? n : 1);
            memcpy(copy, p, n);
            dw_pgoutput_decode(d, 3, copy, n, &h);
            free(copy);
            p += n;
            left -= n;
        }
    }
    dw_pgoutput_free(d);
    return 0;
}

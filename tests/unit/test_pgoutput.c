/*
 * Unit tests: the pgoutput decoder and relation cache against the golden recording
 * (tests/data/pgoutput, re-recorded by record.sh), every truncation of every recorded
 * message, hand-made malformed messages, and the jansson row form of the recorded changes.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/json.h"
#include "dwasync/log.h"
#include "dwasync/pgoutput.h"
#include "dwasync/stream.h"
#include "dwasync/values.h"

#define GOLDEN   DW_TEST_DATA_DIR "/pgoutput/stream.bin"
#define EXPECTED DW_TEST_DATA_DIR "/pgoutput/expected.jsonl"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    struct dw_buf b;
    dw_buf_init(&b, 0);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ck_assert_int_eq(dw_buf_append(&b, chunk, n), DW_OK);
    fclose(f);
    *len = b.len;
    return dw_buf_steal(&b);
}

/* The frames of the recording: pointers into one buffer. */
struct frames {
    char *data;
    size_t n;
    const uint8_t *frame[4096];
    uint32_t len[4096];
};

static void load_frames(struct frames *fr)
{
    size_t total;
    fr->data = read_file(GOLDEN, &total);
    fr->n = 0;
    const uint8_t *p = (const uint8_t *)fr->data, *end = p + total;
    while (p < end) {
        ck_assert(end - p >= 4);
        uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        p += 4;
        ck_assert(len <= (size_t)(end - p));
        ck_assert(fr->n < 4096);
        fr->frame[fr->n] = p;
        fr->len[fr->n++] = len;
        p += len;
    }
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

struct collect {
    struct dw_values_options vo;
    struct dw_buf out;
    int begins, commits;
};

static dw_rc c_begin(void *user, const struct dw_txn *t)
{
    struct collect *c = user;
    ck_assert_uint_eq(t->end_lsn, 0);
    c->begins++;
    return DW_OK;
}

static dw_rc c_change(void *user, const struct dw_change *ch)
{
    struct collect *c = user;
    return dw_change_append_json(&c->out, ch, &c->vo);
}

static dw_rc c_commit(void *user, const struct dw_txn *t)
{
    struct collect *c = user;
    ck_assert(t->end_lsn > t->commit_lsn);
    c->commits++;
    return DW_OK;
}

START_TEST(golden_stream_decodes_to_expected_json)
{
    struct collect c = {0};
    struct dw_types *types = dw_types_new();
    ck_assert_int_eq(dw_values_options_init(&c.vo, "UTC"), DW_OK);
    c.vo.types = types;
    dw_buf_init(&c.out, 0);
    struct dw_pgoutput_handler h = {&c, c_begin, c_change, c_commit, NULL};
    ck_assert_int_eq(dw_stream_replay(GOLDEN, types, &h), DW_OK);
    size_t len;
    char *expected = read_file(EXPECTED, &len);
    ck_assert_uint_eq(c.out.len, len);
    ck_assert_str_eq(dw_buf_str(&c.out), expected);
    ck_assert_int_eq(c.begins, c.commits);
    ck_assert_int_ge(c.begins, 30);
    free(expected);
    dw_buf_cleanup(&c.out);
    dw_types_free(types);
}
END_TEST

START_TEST(golden_stream_covers_every_message_type)
{
    struct frames *fr = dw_calloc(1, sizeof *fr);
    load_frames(fr);
    bool seen[256] = {false};
    for (size_t i = 0; i < fr->n; i++)
        if (fr->frame[i][0] == 'w')
            seen[fr->frame[i][25]] = true;
    for (const char *t = "BCORYIUDTM"; *t; t++)
        ck_assert_msg(seen[(unsigned char)*t], "no \"%c\" message in the recording", *t);
    free(fr->data);
    free(fr);
}
END_TEST

/* Every strict prefix of every recorded message is a protocol error, never a crash. */
START_TEST(every_truncation_is_a_protocol_error)
{
    struct frames *fr = dw_calloc(1, sizeof *fr);
    load_frames(fr);
    struct dw_pgoutput_handler h = {NULL, NULL, NULL, NULL, NULL};
    size_t checked = 0;
    for (size_t k = 0; k < fr->n; k++) {
        if (fr->frame[k][0] != 'w')
            continue;
        uint32_t mlen = fr->len[k] - 25;
        for (uint32_t cut = 0; cut < mlen; cut += (mlen > 400 && cut > 64) ? 97 : 1) {
            struct dw_pgoutput *d = dw_pgoutput_new();
            /* The state the message was sent in: every earlier message decoded. */
            for (size_t j = 0; j < k; j++)
                if (fr->frame[j][0] == 'w')
                    dw_pgoutput_decode(d, be64(fr->frame[j] + 1), fr->frame[j] + 25,
                                       fr->len[j] - 25, &h);
            /* An exact-size copy, so that a read past the end is caught by ASan. */
            uint8_t *copy = dw_malloc(cut ? cut : 1);
            memcpy(copy, fr->frame[k] + 25, cut);
            ck_assert_int_eq(dw_pgoutput_decode(d, 0, copy, cut, &h), DW_ERR_PROTOCOL);
            free(copy);
            dw_pgoutput_free(d);
            checked++;
        }
    }
    ck_assert_uint_gt(checked, 1000);
    free(fr->data);
    free(fr);
}
END_TEST

/* --- hand-made messages ----------------------------------------------------------------- */

static void put32(struct dw_buf *b, uint32_t v)
{
    char x[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    dw_buf_append(b, x, 4);
}

static void put64(struct dw_buf *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}

static void put16(struct dw_buf *b, uint16_t v)
{
    dw_buf_putc(b, (char)(v >> 8));
    dw_buf_putc(b, (char)v);
}

static void putstr(struct dw_buf *b, const char *s)
{
    dw_buf_append(b, s, strlen(s) + 1);
}

/* R for oid with the named int4 columns; the first is the key. */
static void msg_relation(struct dw_buf *b, uint32_t oid, const char *const *cols, int n)
{
    dw_buf_reset(b);
    dw_buf_putc(b, 'R');
    put32(b, oid);
    putstr(b, "");
    putstr(b, "t");
    dw_buf_putc(b, 'd');
    put16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        dw_buf_putc(b, i == 0 ? 1 : 0);
        putstr(b, cols[i]);
        put32(b, 23);
        put32(b, (uint32_t)-1);
    }
}

/* B of xid 42 committed at pg_time (µs since 2000-01-01). */
static void msg_begin_at(struct dw_buf *b, uint64_t pg_time)
{
    dw_buf_reset(b);
    dw_buf_putc(b, 'B');
    put64(b, 0x1000);
    put64(b, pg_time);
    put32(b, 42);
}

static void msg_begin(struct dw_buf *b)
{
    msg_begin_at(b, 0);
}

/* I for oid with n text columns "1", "2", ...; kind overrides the first column's kind. */
static void msg_insert(struct dw_buf *b, uint32_t oid, int n, char kind)
{
    dw_buf_reset(b);
    dw_buf_putc(b, 'I');
    put32(b, oid);
    dw_buf_putc(b, 'N');
    put16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        dw_buf_putc(b, i == 0 && kind ? kind : 't');
        put32(b, 1);
        dw_buf_putc(b, (char)('1' + i));
    }
}

static dw_rc feed(struct dw_pgoutput *d, const struct dw_buf *b,
                  const struct dw_pgoutput_handler *h)
{
    return dw_pgoutput_decode(d, 0x100, (const uint8_t *)b->data, b->len, h);
}

struct last {
    int changes;
    int64_t commit_time_us;
    int ncols;
    char first_col[32];
    char relschema[32];
};

static dw_rc l_change(void *user, const struct dw_change *c)
{
    struct last *l = user;
    l->changes++;
    l->commit_time_us = c->commit_time_us;
    if (c->op == DW_CHANGE_TRUNCATE) {
        l->ncols = c->ntruncated;
        return DW_OK;
    }
    l->ncols = c->new_tuple.ncols;
    snprintf(l->first_col, sizeof l->first_col, "%s", c->rel->cols[c->rel->ncols - 1].name);
    snprintf(l->relschema, sizeof l->relschema, "%s", c->rel->schema);
    ck_assert_uint_eq(c->xid, 42);
    return DW_OK;
}

/* M: a logical message (the initial sync's watermarks), inside a transaction or not. */
static void msg_message(struct dw_buf *b, bool transactional, const char *prefix,
                        const char *content)
{
    dw_buf_reset(b);
    dw_buf_putc(b, 'M');
    dw_buf_putc(b, transactional ? 1 : 0);
    put64(b, 0x2000);
    putstr(b, prefix);
    put32(b, (uint32_t)strlen(content));
    dw_buf_append(b, content, strlen(content));
}

struct seen_message {
    int n;
    bool transactional;
    char prefix[32], content[64];
    dw_lsn lsn;
};

static dw_rc m_message(void *user, const struct dw_logical_message *m)
{
    struct seen_message *s = user;
    s->n++;
    s->transactional = m->transactional;
    s->lsn = m->lsn;
    snprintf(s->prefix, sizeof s->prefix, "%s", m->prefix);
    snprintf(s->content, sizeof s->content, "%.*s", (int)m->len, (const char *)m->content);
    return DW_OK;
}

START_TEST(logical_messages_reach_the_message_callback)
{
    struct dw_pgoutput *d = dw_pgoutput_new();
    struct seen_message s = {0};
    struct dw_pgoutput_handler h = {&s, NULL, NULL, NULL, m_message};
    struct dw_buf b;
    dw_buf_init(&b, 0);
    msg_message(&b, false, "dwasync", "job 1 chunk 2 low");
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert(!s.transactional);
    ck_assert_str_eq(s.prefix, "dwasync");
    ck_assert_str_eq(s.content, "job 1 chunk 2 low");
    ck_assert_uint_eq(s.lsn, 0x2000);
    /* A transactional message outside a transaction is malformed. */
    msg_message(&b, true, "dwasync", "x");
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);
    ck_assert_int_eq(s.n, 1);
    msg_begin(&b);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    msg_message(&b, true, "other", "");
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert(s.transactional);
    ck_assert_str_eq(s.content, "");
    /* Without a callback a message is checked and skipped. */
    h.message = NULL;
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_int_eq(s.n, 2);
    dw_buf_cleanup(&b);
    dw_pgoutput_free(d);
}
END_TEST

START_TEST(relation_cache_is_replaced_on_each_relation_message)
{
    struct dw_pgoutput *d = dw_pgoutput_new();
    struct last l = {0};
    struct dw_pgoutput_handler h = {&l, NULL, l_change, NULL, NULL};
    struct dw_buf b;
    dw_buf_init(&b, 0);
    const char *two[] = {"id", "b"}, *three[] = {"id", "c", "d"};
    msg_relation(&b, 100, two, 2);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    msg_begin(&b);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    msg_insert(&b, 100, 2, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_str_eq(l.first_col, "b");
    ck_assert_str_eq(l.relschema, "pg_catalog"); /* empty namespace means pg_catalog */

    msg_relation(&b, 100, three, 3); /* ADD COLUMN mid-transaction */
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_uint_eq(dw_pgoutput_relation_count(d), 1);
    ck_assert_int_eq(dw_pgoutput_relation(d, 100)->ncols, 3);
    msg_insert(&b, 100, 3, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_str_eq(l.first_col, "d");
    ck_assert_int_eq(l.ncols, 3);
    /* An old-shaped tuple no longer matches the relation. */
    msg_insert(&b, 100, 2, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);
    ck_assert_int_eq(l.changes, 2);
    dw_buf_cleanup(&b);
    dw_pgoutput_free(d);
}
END_TEST

/* Commit times convert to the Unix epoch; the far end of PostgreSQL's range saturates. */
START_TEST(commit_times_convert_and_saturate_at_the_end_of_the_range)
{
    static const struct {
        uint64_t pg;
        int64_t unix_us;
    } cases[] = {
        {0, DW_PG_EPOCH_OFFSET_US},
        {(uint64_t)INT64_C(-946684800000000), 0},                 /* 1970-01-01 */
        {UINT64_C(9223371331200000000), INT64_MAX},               /* 294277-01-01 */
        {(uint64_t)INT64_MAX, INT64_MAX},                         /* 'infinity' */
        {(uint64_t)INT64_MAX - DW_PG_EPOCH_OFFSET_US, INT64_MAX}, /* the last that fits */
        {(uint64_t)INT64_MAX - DW_PG_EPOCH_OFFSET_US + 1, INT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dw_pgoutput *d = dw_pgoutput_new();
        struct last l = {0};
        struct dw_pgoutput_handler h = {&l, NULL, l_change, NULL, NULL};
        struct dw_buf b;
        dw_buf_init(&b, 0);
        const char *one[] = {"id"};
        msg_relation(&b, 100, one, 1);
        ck_assert_int_eq(feed(d, &b, &h), DW_OK);
        msg_begin_at(&b, cases[i].pg);
        ck_assert_int_eq(feed(d, &b, &h), DW_OK);
        msg_insert(&b, 100, 1, 0);
        ck_assert_int_eq(feed(d, &b, &h), DW_OK);
        ck_assert_int_eq(l.changes, 1);
        ck_assert_msg(l.commit_time_us == cases[i].unix_us, "case %zu: %" PRId64, i,
                      l.commit_time_us);
        dw_buf_cleanup(&b);
        dw_pgoutput_free(d);
    }
}
END_TEST

START_TEST(malformed_messages_are_protocol_errors)
{
    struct dw_pgoutput *d = dw_pgoutput_new();
    struct last l = {0};
    struct dw_pgoutput_handler h = {&l, NULL, l_change, NULL, NULL};
    struct dw_buf b;
    dw_buf_init(&b, 0);
    const char *two[] = {"id", "b"};

    ck_assert_int_eq(dw_pgoutput_decode(d, 0, (const uint8_t *)"", 0, &h), DW_ERR_PROTOCOL);
    ck_assert_int_eq(dw_pgoutput_decode(d, 0, (const uint8_t *)"Z", 1, &h), DW_ERR_PROTOCOL);
    msg_relation(&b, 100, two, 2);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    msg_insert(&b, 100, 2, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* outside a transaction */

    msg_begin(&b);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* BEGIN inside a transaction */
    msg_begin(&b);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    msg_insert(&b, 999, 2, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* relation never described */
    msg_begin(&b);
    feed(d, &b, &h);
    msg_insert(&b, 100, 2, 'b');
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* binary data never requested */
    msg_begin(&b);
    feed(d, &b, &h);
    msg_insert(&b, 100, 2, 'x');
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* unknown column kind */
    msg_begin(&b);
    feed(d, &b, &h);
    msg_insert(&b, 100, 2, 0);
    dw_buf_putc(&b, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL); /* trailing garbage */

    /* A text column claiming more bytes than the message holds. */
    msg_begin(&b);
    feed(d, &b, &h);
    msg_insert(&b, 100, 2, 0);
    b.data[9] = 0x7f;
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);

    /* A relation announcing 65535 columns in a few bytes. */
    dw_buf_reset(&b);
    dw_buf_putc(&b, 'R');
    put32(&b, 5);
    putstr(&b, "s");
    putstr(&b, "t");
    dw_buf_putc(&b, 'd');
    put16(&b, 65535);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);
    ck_assert_ptr_null(dw_pgoutput_relation(d, 5));

    /* COMMIT without BEGIN, COMMIT of another transaction. */
    dw_buf_reset(&b);
    dw_buf_putc(&b, 'C');
    dw_buf_putc(&b, 0);
    put64(&b, 0x1000);
    put64(&b, 0x1010);
    put64(&b, 0);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);
    struct dw_buf c;
    dw_buf_init(&c, 0);
    msg_begin(&c);
    feed(d, &c, &h);
    b.data[9] = 0x20; /* commit LSN 0x2000 instead of 0x1000 */
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);

    /* TRUNCATE of an unknown relation; of a known one. */
    msg_begin(&c);
    feed(d, &c, &h);
    dw_buf_reset(&b);
    dw_buf_putc(&b, 'T');
    put32(&b, 1);
    dw_buf_putc(&b, 0);
    put32(&b, 77);
    ck_assert_int_eq(feed(d, &b, &h), DW_ERR_PROTOCOL);
    msg_begin(&c);
    feed(d, &c, &h);
    b.len -= 4;
    put32(&b, 100);
    ck_assert_int_eq(feed(d, &b, &h), DW_OK);
    ck_assert_int_eq(l.ncols, 1);
    ck_assert_int_eq(l.changes, 1);
    dw_buf_cleanup(&b);
    dw_buf_cleanup(&c);
    dw_pgoutput_free(d);
}
END_TEST

/* --- the jansson form of the recorded changes ------------------------------------------- */

struct rows {
    struct dw_values_options vo;
    int n;
    dw_rc rc[256];
    char *text[256]; /* canonical {"new","old","key","unchanged"} or the error */
};

static dw_rc r_change(void *user, const struct dw_change *c)
{
    struct rows *r = user;
    if (c->op == DW_CHANGE_TRUNCATE)
        return DW_OK;
    struct dw_row_json row;
    char *error = NULL;
    ck_assert(r->n < 256);
    int i = r->n++;
    r->rc[i] = dw_change_row_json(c, &r->vo, &row, &error);
    if (r->rc[i] != DW_OK) {
        r->text[i] = error;
        return DW_OK;
    }
    json_t *all = json_pack("{sOsOsOsO}", "new", row.new_row ? row.new_row : json_null(), "old",
                            row.old_row ? row.old_row : json_null(), "key", row.key, "unchanged",
                            row.unchanged);
    r->text[i] = dw_json_canonical(all);
    json_decref(all);
    dw_row_json_cleanup(&row);
    ck_assert_ptr_null(row.new_row);
    return DW_OK;
}

START_TEST(row_json_of_recorded_changes)
{
    struct rows *r = dw_calloc(1, sizeof *r);
    struct dw_types *types = dw_types_new();
    dw_values_options_init(&r->vo, NULL);
    r->vo.types = types;
    struct dw_pgoutput_handler h = {r, NULL, r_change, NULL, NULL};
    ck_assert_int_eq(dw_stream_replay(GOLDEN, types, &h), DW_OK);
    ck_assert_int_eq(r->n, 38);
    /* Row 1 holds a numeric array with NaN: the error names column and value. */
    ck_assert_int_eq(r->rc[0], DW_ERR_RANGE);
    ck_assert_str_eq(r->text[0], "column \"an\": numeric NaN or infinity has no JSON "
                                 "representation: value \"{1.10,NaN}\"");
    /* 30+ significant digits cannot go through a double. */
    ck_assert_int_eq(r->rc[4], DW_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(r->text[4], "column \"n\""));
    ck_assert_ptr_nonnull(strstr(r->text[4], "-123456789012345678901234567890.123456789"));
    ck_assert_int_eq(r->rc[7], DW_ERR_RANGE); /* NaN */
    /* NULLs, empty strings, trimmed bpchar, embedded json. */
    ck_assert_int_eq(r->rc[2], DW_OK);
    ck_assert_ptr_nonnull(strstr(r->text[2], "\"bp\":\"\",\"by\":null"));
    ck_assert_ptr_nonnull(strstr(r->text[2], "\"j\":\"str\\nline\""));
    ck_assert_ptr_nonnull(strstr(r->text[2], "\"atx\":[]"));
    ck_assert_int_eq(r->rc[3], DW_OK);
    ck_assert_ptr_nonnull(strstr(r->text[3], "\"bp\":\"é\""));
    ck_assert_ptr_nonnull(strstr(r->text[3], "\"jb\":[true,false,\"é\\n\"]"));
    /* A tiny numeric is a real with one significant digit; 1e300 stays a real. */
    ck_assert_int_eq(r->rc[8], DW_OK);
    ck_assert_ptr_nonnull(strstr(r->text[8], "\"n\":1e-22"));
    ck_assert_ptr_nonnull(strstr(r->text[8], "\"f8\":1e300"));
    /* Key-changing update: key from the new image, old holds the old key. */
    ck_assert_str_eq(r->text[15], "{\"key\":{\"id\":10},\"new\":{\"id\":10,\"v\":\"two\"},"
                                  "\"old\":{\"id\":2},\"unchanged\":[]}");
    /* Delete: key from the old image. */
    ck_assert_str_eq(r->text[16],
                     "{\"key\":{\"id\":10},\"new\":null,\"old\":{\"id\":10},\"unchanged\":[]}");
    /* REPLICA IDENTITY FULL update: the whole old row. */
    ck_assert_str_eq(r->text[18], "{\"key\":{\"id\":1,\"v\":\"uno\"},\"new\":{\"id\":1,\"v\":"
                                  "\"uno\"},\"old\":{\"id\":1,\"v\":\"one\"},\"unchanged\":[]}");
    /* Unchanged TOAST: reported, not null. */
    ck_assert_str_eq(r->text[25], "{\"key\":{\"id\":1},\"new\":{\"id\":1,\"small\":2},\"old\":null,"
                                  "\"unchanged\":[\"big\"]}");
    /* numeric(32,6): integral -> integer, else a real that dumps as written. */
    ck_assert_str_eq(r->text[28], "{\"key\":{\"id\":1},\"new\":{\"id\":1,\"parent_id\":1,\"qty\":"
                                  "10.5},\"old\":null,\"unchanged\":[]}");
    ck_assert_ptr_nonnull(strstr(r->text[30], "\"extra\":3.3"));
    for (int i = 0; i < r->n; i++)
        free(r->text[i]);
    dw_types_free(types);
    free(r);
}
END_TEST

static Suite *pgoutput_suite(void)
{
    Suite *s = suite_create("pgoutput");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, golden_stream_decodes_to_expected_json);
    tcase_add_test(tc, golden_stream_covers_every_message_type);
    tcase_add_test(tc, every_truncation_is_a_protocol_error);
    tcase_add_test(tc, relation_cache_is_replaced_on_each_relation_message);
    tcase_add_test(tc, logical_messages_reach_the_message_callback);
    tcase_add_test(tc, commit_times_convert_and_saturate_at_the_end_of_the_range);
    tcase_add_test(tc, malformed_messages_are_protocol_errors);
    tcase_add_test(tc, row_json_of_recorded_changes);
    suite_add_tcase(s, tc);
    return s;
}

/* Only what the suite is about reaches the log: malformed input logs by design. */
static void quiet_logs(void)
{
    dw_log_configure(DW_LOG_ERROR + 1, DW_LOG_LOGFMT);
}

const struct dw_check_suite dw_check_suite = {.make = pgoutput_suite, .before = quiet_logs};

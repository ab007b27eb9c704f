/* pgoutput v1 decoder and relation cache (see pgoutput.h). */
#include "dwasync/pgoutput.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "dwasync/alloc.h"
#include "dwasync/clock.h"
#include "dwasync/log.h"

struct relent {
    struct dw_relation rel;
    UT_hash_handle hh;
};

struct dw_pgoutput {
    struct relent *rels; /* uthash, keyed by rel.oid */
    bool in_txn;
    struct dw_txn txn;
    uint32_t index;
    /* Scratch reused by every change: grown to the widest relation, never shrunk. */
    struct dw_datum *newcols, *oldcols;
    int cols_cap;
    const struct dw_relation **trunc;
    int trunc_cap;
};

/* A cursor over one message; every read checks the remaining length first. */
struct reader {
    const uint8_t *p;
    size_t left;
};

static bool rd_u8(struct reader *r, uint8_t *v)
{
    if (r->left < 1)
        return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

static bool rd_u16(struct reader *r, uint16_t *v)
{
    if (r->left < 2)
        return false;
    *v = (uint16_t)((uint16_t)r->p[0] << 8 | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return true;
}

static bool rd_u32(struct reader *r, uint32_t *v)
{
    if (r->left < 4)
        return false;
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    r->left -= 4;
    return true;
}

static bool rd_u64(struct reader *r, uint64_t *v)
{
    uint32_t hi, lo;
    if (r->left < 8 || !rd_u32(r, &hi) || !rd_u32(r, &lo))
        return false;
    *v = (uint64_t)hi << 32 | lo;
    return true;
}

/* A NUL-terminated string inside the message; borrowed. */
static bool rd_str(struct reader *r, const char **s)
{
    const uint8_t *nul = memchr(r->p, 0, r->left);
    if (nul == NULL)
        return false;
    *s = (const char *)r->p;
    size_t n = (size_t)(nul - r->p) + 1;
    r->p += n;
    r->left -= n;
    return true;
}

static bool rd_skip(struct reader *r, size_t n)
{
    if (r->left < n)
        return false;
    r->p += n;
    r->left -= n;
    return true;
}

void dw_relation_cleanup(struct dw_relation *rel)
{
    for (int i = 0; i < rel->ncols; i++)
        free(rel->cols[i].name);
    free(rel->cols);
    free(rel->schema);
    free(rel->name);
    memset(rel, 0, sizeof *rel);
}

struct dw_pgoutput *dw_pgoutput_new(void)
{
    return dw_calloc(1, sizeof(struct dw_pgoutput));
}

void dw_pgoutput_free(struct dw_pgoutput *d)
{
    if (d == NULL)
        return;
    struct relent *e, *tmp;
    HASH_ITER(hh, d->rels, e, tmp)
    {
        HASH_DEL(d->rels, e);
        dw_relation_cleanup(&e->rel);
        free(e);
    }
    free(d->newcols);
    free(d->oldcols);
    free(d->trunc);
    free(d);
}

void dw_pgoutput_reset(struct dw_pgoutput *d)
{
    d->in_txn = false;
    d->index = 0;
}

bool dw_pgoutput_in_txn(const struct dw_pgoutput *d)
{
    return d->in_txn;
}

const struct dw_relation *dw_pgoutput_relation(const struct dw_pgoutput *d, uint32_t oid)
{
    struct relent *e;
    HASH_FIND(hh, d->rels, &oid, sizeof oid, e);
    return e ? &e->rel : NULL;
}

size_t dw_pgoutput_relation_count(const struct dw_pgoutput *d)
{
    return HASH_COUNT(d->rels);
}

static dw_rc decode_relation(struct dw_pgoutput *d, struct reader *r)
{
    uint32_t oid;
    const char *schema, *name;
    uint8_t ident;
    uint16_t ncols;
    if (!rd_u32(r, &oid) || !rd_str(r, &schema) || !rd_str(r, &name) || !rd_u8(r, &ident) ||
        !rd_u16(r, &ncols))
        return DW_ERR_PROTOCOL;
    if (ident != 'd' && ident != 'n' && ident != 'f' && ident != 'i')
        return DW_ERR_PROTOCOL;
    /* Each column needs at least 10 bytes: reject absurd counts before allocating. */
    if ((size_t)ncols * 10 > r->left || ncols > 1664)
        return DW_ERR_PROTOCOL;
    struct dw_relation rel = {.oid = oid, .replica_identity = (char)ident, .ncols = 0};
    rel.cols = dw_calloc(ncols ? ncols : 1, sizeof(struct dw_rel_column));
    for (int i = 0; i < ncols; i++) {
        uint8_t flags;
        const char *cname;
        uint32_t type, typmod;
        if (!rd_u8(r, &flags) || !rd_str(r, &cname) || !rd_u32(r, &type) || !rd_u32(r, &typmod)) {
            dw_relation_cleanup(&rel);
            return DW_ERR_PROTOCOL;
        }
        rel.cols[i].name = dw_strdup(cname);
        rel.cols[i].type_oid = type;
        rel.cols[i].typmod = (int32_t)typmod;
        rel.cols[i].key = (flags & 1) != 0;
        rel.ncols = i + 1;
    }
    if (r->left != 0) {
        dw_relation_cleanup(&rel);
        return DW_ERR_PROTOCOL;
    }
    rel.schema = dw_strdup(schema[0] ? schema : "pg_catalog");
    rel.name = dw_strdup(name);

    struct relent *e;
    HASH_FIND(hh, d->rels, &oid, sizeof oid, e);
    if (e) {
        dw_relation_cleanup(&e->rel);
    } else {
        e = dw_calloc(1, sizeof *e);
        e->rel.oid = oid;
        HASH_ADD(hh, d->rels, rel.oid, sizeof(uint32_t), e);
    }
    e->rel = rel;
    if (ncols > d->cols_cap) {
        d->newcols = dw_realloc(d->newcols, ncols * sizeof(struct dw_datum));
        d->oldcols = dw_realloc(d->oldcols, ncols * sizeof(struct dw_datum));
        d->cols_cap = ncols;
    }
    return DW_OK;
}

static dw_rc decode_tuple(struct reader *r, const struct dw_relation *rel, struct dw_datum *cols,
                          struct dw_tuple *out)
{
    uint16_t n;
    if (!rd_u16(r, &n) || n != rel->ncols)
        return DW_ERR_PROTOCOL;
    for (int i = 0; i < n; i++) {
        uint8_t kind;
        if (!rd_u8(r, &kind))
            return DW_ERR_PROTOCOL;
        switch (kind) {
        case 'n':
            cols[i] = (struct dw_datum){DW_DATUM_NULL, NULL, 0};
            break;
        case 'u':
            cols[i] = (struct dw_datum){DW_DATUM_UNCHANGED, NULL, 0};
            break;
        case 't': {
            uint32_t len;
            if (!rd_u32(r, &len) || len > r->left)
                return DW_ERR_PROTOCOL;
            cols[i] = (struct dw_datum){DW_DATUM_TEXT, (const char *)r->p, len};
            rd_skip(r, len);
            break;
        }
        default: /* 'b' (binary) is only sent when asked for, and we never ask */
            return DW_ERR_PROTOCOL;
        }
    }
    out->ncols = n;
    out->cols = cols;
    return DW_OK;
}

static const struct dw_relation *find_rel(struct dw_pgoutput *d, struct reader *r)
{
    uint32_t oid;
    if (!rd_u32(r, &oid))
        return NULL;
    return dw_pgoutput_relation(d, oid);
}

static void change_init(struct dw_pgoutput *d, struct dw_change *c, enum dw_change_op op,
                        dw_lsn lsn)
{
    memset(c, 0, sizeof *c);
    c->op = op;
    c->lsn = lsn;
    c->commit_lsn = d->txn.commit_lsn;
    c->xid = d->txn.xid;
    c->commit_time_us = d->txn.commit_time_us;
    c->index = d->index;
}

static dw_rc decode_dml(struct dw_pgoutput *d, uint8_t tag, struct reader *r, dw_lsn lsn,
                        const struct dw_pgoutput_handler *h)
{
    struct dw_change c;
    const struct dw_relation *rel = find_rel(d, r);
    uint8_t sub;
    if (rel == NULL || !d->in_txn)
        return DW_ERR_PROTOCOL;
    change_init(d, &c,
                tag == 'I'   ? DW_CHANGE_INSERT
                : tag == 'U' ? DW_CHANGE_UPDATE
                             : DW_CHANGE_DELETE,
                lsn);
    c.rel = rel;
    if (!rd_u8(r, &sub))
        return DW_ERR_PROTOCOL;
    if (tag != 'I' && (sub == 'K' || sub == 'O')) {
        c.old_kind = (char)sub;
        if (decode_tuple(r, rel, d->oldcols, &c.old_tuple) != DW_OK)
            return DW_ERR_PROTOCOL;
        if (tag == 'U' && !rd_u8(r, &sub))
            return DW_ERR_PROTOCOL;
    } else if (tag == 'D') {
        return DW_ERR_PROTOCOL; /* a delete always carries K or O */
    }
    if (tag != 'D') {
        if (sub != 'N' || decode_tuple(r, rel, d->newcols, &c.new_tuple) != DW_OK)
            return DW_ERR_PROTOCOL;
    }
    if (r->left != 0)
        return DW_ERR_PROTOCOL;
    d->index++;
    return h->change ? h->change(h->user, &c) : DW_OK;
}

static dw_rc decode_truncate(struct dw_pgoutput *d, struct reader *r, dw_lsn lsn,
                             const struct dw_pgoutput_handler *h)
{
    uint32_t n;
    uint8_t options;
    if (!d->in_txn || !rd_u32(r, &n) || !rd_u8(r, &options) || n == 0 || (size_t)n * 4 != r->left)
        return DW_ERR_PROTOCOL;
    if ((int)n > d->trunc_cap) {
        d->trunc = dw_realloc(d->trunc, n * sizeof *d->trunc);
        d->trunc_cap = (int)n;
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((d->trunc[i] = find_rel(d, r)) == NULL)
            return DW_ERR_PROTOCOL;
    }
    struct dw_change c;
    change_init(d, &c, DW_CHANGE_TRUNCATE, lsn);
    c.ntruncated = (int)n;
    c.truncated = d->trunc;
    c.truncate_options = options;
    d->index++;
    return h->change ? h->change(h->user, &c) : DW_OK;
}

static dw_rc decode_message(struct dw_pgoutput *d, uint8_t tag, struct reader *r, dw_lsn lsn,
                            const struct dw_pgoutput_handler *h)
{
    switch (tag) {
    case 'B': {
        uint64_t final_lsn, t;
        uint32_t xid;
        if (d->in_txn || !rd_u64(r, &final_lsn) || !rd_u64(r, &t) || !rd_u32(r, &xid) ||
            r->left != 0)
            return DW_ERR_PROTOCOL;
        d->in_txn = true;
        d->index = 0;
        d->txn = (struct dw_txn){xid, final_lsn, 0, dw_clock_pg_to_unix_us((int64_t)t)};
        return h->begin ? h->begin(h->user, &d->txn) : DW_OK;
    }
    case 'C': {
        uint8_t flags;
        uint64_t commit_lsn, end_lsn, t;
        if (!d->in_txn || !rd_u8(r, &flags) || !rd_u64(r, &commit_lsn) || !rd_u64(r, &end_lsn) ||
            !rd_u64(r, &t) || r->left != 0 || commit_lsn != d->txn.commit_lsn ||
            end_lsn < commit_lsn)
            return DW_ERR_PROTOCOL;
        d->in_txn = false;
        d->txn.end_lsn = end_lsn;
        d->txn.commit_time_us = dw_clock_pg_to_unix_us((int64_t)t);
        return h->commit ? h->commit(h->user, &d->txn) : DW_OK;
    }
    case 'O': {
        uint64_t origin_lsn;
        const char *name;
        return rd_u64(r, &origin_lsn) && rd_str(r, &name) && r->left == 0 ? DW_OK : DW_ERR_PROTOCOL;
    }
    case 'Y': {
        uint32_t oid;
        const char *schema, *name;
        return rd_u32(r, &oid) && rd_str(r, &schema) && rd_str(r, &name) && r->left == 0
                   ? DW_OK
                   : DW_ERR_PROTOCOL;
    }
    case 'M': {
        uint8_t flags;
        uint64_t mlsn;
        const char *prefix;
        uint32_t len;
        if (!rd_u8(r, &flags) || !rd_u64(r, &mlsn) || !rd_str(r, &prefix) || !rd_u32(r, &len) ||
            len != r->left || ((flags & 1) && !d->in_txn))
            return DW_ERR_PROTOCOL;
        struct dw_logical_message m = {mlsn, (flags & 1) != 0, prefix, r->p, len};
        return h->message ? h->message(h->user, &m) : DW_OK;
    }
    case 'R':
        return decode_relation(d, r);
    case 'I':
    case 'U':
    case 'D':
        return decode_dml(d, tag, r, lsn, h);
    case 'T':
        return decode_truncate(d, r, lsn, h);
    default:
        return DW_ERR_PROTOCOL;
    }
}

dw_rc dw_pgoutput_decode(struct dw_pgoutput *d, dw_lsn lsn, const uint8_t *msg, size_t len,
                         const struct dw_pgoutput_handler *h)
{
    struct reader r = {msg, len};
    uint8_t tag = 0;
    dw_rc rc = rd_u8(&r, &tag) ? decode_message(d, tag, &r, lsn, h) : DW_ERR_PROTOCOL;
    if (rc == DW_ERR_PROTOCOL) {
        char t[2] = {(tag >= 0x20 && tag < 0x7f) ? (char)tag : '?', 0};
        DW_ERROR("malformed pgoutput message \"%s\" (%zu bytes) at %X/%X", t, len,
                 DW_LSN_ARGS(lsn));
        dw_pgoutput_reset(d);
    }
    return rc;
}

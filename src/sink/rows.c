/*
 * A row's life inside the sink: which list holds it (resolving, ready, sent, done), the
 * parents it names (for naming a missing one), its result once finished, and freeing it.
 * finish_row() is the one way a row gets its outcome.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/dvkey.h"
#include "dwasync/redact.h"

void dw_sink_failure_set(struct failure *f, enum dw_write_status status, enum dw_error_class cls,
                         int http, const char *code, const char *message)
{
    free((char *)f->code);
    free((char *)f->message);
    f->status = status;
    f->cls = cls;
    f->http = http;
    f->code = dw_strdup(code ? code : "");
    f->message = dw_redact_str(message ? message : "");
}

void dw_sink_failure_cleanup(struct failure *f)
{
    free((char *)f->code);
    free((char *)f->message);
    f->code = f->message = NULL;
}

static struct row **list_of(struct dw_sink *s, enum row_where w)
{
    switch (w) {
    case ROW_RESOLVING:
        return &s->resolving;
    case ROW_READY:
        return &s->ready;
    case ROW_DONE:
        return &s->done;
    case ROW_SENT:
        break;
    }
    return NULL;
}

void dw_sink_row_move(struct dw_sink *s, struct row *r, enum row_where to)
{
    struct row **from = list_of(s, r->where);
    if (from)
        DL_DELETE(*from, r);
    r->where = to;
    struct row **dest = list_of(s, to);
    if (dest)
        DL_APPEND(*dest, r);
}

void dw_sink_parents_clear(struct parents *p)
{
    json_decref(p->rkey);
    memset(p, 0, sizeof *p);
}

void dw_sink_parents_note(struct parents *p, const char *set, const json_t *rkey)
{
    if (p->n++ == 0) {
        p->set = set;
        p->rkey = json_incref((json_t *)rkey);
    }
}

void dw_sink_row_free(struct row *r)
{
    free(r->entity_set);
    free(r->logical_name);
    json_decref(r->key);
    dw_text_drop(r->body);
    dw_refs_drop(r->refs);
    json_decref(r->options);
    json_decref(r->rkey);
    free(r->rbinds);
    json_decref(r->rbody);
    free(r->used);
    dw_sink_parents_clear(&r->binds);
    dw_sink_parents_clear(&r->keyrefs);
    free(r->guid);
    free(r->missing);
    free(r->wait_id);
    dw_sink_failure_cleanup(&r->res);
    free(r);
}

void dw_sink_finish_row(struct dw_sink *s, struct row *r, enum dw_write_status status,
                        enum dw_error_class cls, int http, const char *code, const char *message)
{
    dw_sink_failure_set(&r->res, status, cls, http, code, message);
    /* Dataverse does not say which parent is missing; when only one can be, name it (the
     * key's parents were just looked up, so a bound one is the suspect). */
    if (cls == DW_ERRCLASS_MISSING_PARENT && r->missing == NULL) {
        const struct parents *c = r->binds.n ? &r->binds : &r->keyrefs;
        if (c->n == 1)
            r->missing = dw_sink_ref_display(c->set, c->rkey);
    }
    if (status == DW_WRITE_APPLIED)
        s->stats.rows_applied++;
    else
        s->stats.rows_rejected++;
    dw_sink_row_move(s, r, ROW_DONE);
}

char *dw_sink_ref_display(const char *set, const json_t *rkey)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    (void)dw_buf_puts(&b, set);
    (void)dw_buf_putc(&b, '(');
    (void)dw_dvkey_segment(&b, rkey, false);
    (void)dw_buf_putc(&b, ')');
    return dw_buf_steal(&b);
}

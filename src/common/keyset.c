#include "dwasync/keyset.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "dwasync/alloc.h"

/* uthash reports allocation failure through this hook; dwasync aborts as everywhere else. */
#undef uthash_fatal
#define uthash_fatal(msg) dw_oom(0)

struct dw_keyset_entry {
    UT_hash_handle hh;
    char key[];
};

void dw_keyset_init(struct dw_keyset *s)
{
    s->head = NULL;
    s->count = 0;
}

void dw_keyset_cleanup(struct dw_keyset *s)
{
    struct dw_keyset_entry *e, *tmp;
    HASH_ITER(hh, s->head, e, tmp)
    {
        HASH_DEL(s->head, e);
        free(e);
    }
    s->count = 0;
}

bool dw_keyset_has(const struct dw_keyset *s, const char *key)
{
    struct dw_keyset_entry *e;
    HASH_FIND_STR(s->head, key, e);
    return e != NULL;
}

bool dw_keyset_add(struct dw_keyset *s, const char *key)
{
    if (dw_keyset_has(s, key))
        return false;
    size_t len = strlen(key);
    struct dw_keyset_entry *e = dw_malloc(sizeof *e + len + 1);
    memcpy(e->key, key, len + 1);
    HASH_ADD(hh, s->head, key[0], len, e);
    s->count++;
    return true;
}

bool dw_keyset_remove(struct dw_keyset *s, const char *key)
{
    struct dw_keyset_entry *e;
    HASH_FIND_STR(s->head, key, e);
    if (e == NULL)
        return false;
    HASH_DEL(s->head, e);
    free(e);
    s->count--;
    return true;
}

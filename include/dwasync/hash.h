/*
 * hash.h - FNV-1a over bytes: the hash of dwasync's small in-memory memos and of dvemu's
 * stable ids (identity, not security). Chain calls to hash several pieces as one.
 */
#ifndef DWASYNC_HASH_H
#define DWASYNC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define DW_FNV1A_BASIS 14695981039346656037ULL

static inline uint64_t dw_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

#endif

/*
 * keyset.h - a set of strings (uthash), for keys that are blocked behind an open error
 * and other membership questions on the apply path.
 *
 * The set owns copies of the strings it holds. dw_keyset_init() / dw_keyset_cleanup()
 * for a caller-owned struct; lookups are O(1).
 */
#ifndef DWASYNC_KEYSET_H
#define DWASYNC_KEYSET_H

#include <stdbool.h>
#include <stddef.h>

struct dw_keyset_entry;

struct dw_keyset {
    struct dw_keyset_entry *head; /* uthash table */
    size_t count;
};

void dw_keyset_init(struct dw_keyset *s);
void dw_keyset_cleanup(struct dw_keyset *s);

/* Adds a copy of key; returns false if it was already present. */
bool dw_keyset_add(struct dw_keyset *s, const char *key);

/* Removes key; returns false if it was absent. */
bool dw_keyset_remove(struct dw_keyset *s, const char *key);

bool dw_keyset_has(const struct dw_keyset *s, const char *key);

#endif

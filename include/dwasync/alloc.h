/*
 * alloc.h - allocation wrappers that never return NULL.
 *
 * dwasync does not try to limp on after an allocation failure: the process aborts through
 * dw_oom() and the replication slot replays whatever was in flight (the checkpoint rule
 * guarantees nothing acknowledged is lost). Every heap allocation in the code goes through
 * these wrappers so there is exactly one place that decides what out-of-memory means.
 * Memory returned is owned by the caller and released with free().
 */
#ifndef DWASYNC_ALLOC_H
#define DWASYNC_ALLOC_H

#include <stddef.h>

/* Logs "out of memory" with the requested size and aborts. Never returns. */
_Noreturn void dw_oom(size_t size);

/* malloc/calloc/realloc/strdup/strndup that abort instead of returning NULL. */
void *dw_malloc(size_t size);
void *dw_calloc(size_t count, size_t size);
void *dw_realloc(void *ptr, size_t size);
char *dw_strdup(const char *s);
char *dw_strndup(const char *s, size_t n);

/* Returns array, len elements of size bytes, with room for one more (element len). An
 * array grown by this function alone (NULL when empty; len may drop, never jump up) has a
 * power-of-two capacity of at least 4 implied by its length, so it is reallocated only at
 * lengths 0, 4, 8, 16, ...: n appends cost O(n) copying, not O(n^2) as growing by one does
 * under allocators that move every block (ASan's, musl's). Aborts on overflow. */
void *dw_array_grow(void *array, size_t len, size_t size);

/* Formats into a new heap string (caller frees). Aborts on allocation failure. */
char *dw_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

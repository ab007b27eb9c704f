/*
 * The allocation wrappers (see alloc.h). Every failure ends in dw_oom(), which writes one
 * log line with write(2) and aborts: nothing on that path allocates or uses stdio, since the
 * heap is what failed. A request for zero bytes allocates one, so no call returns NULL.
 * jansson is pointed at the same wrappers before main() runs, so JSON values, most of the
 * daemon's small allocations, keep alloc.h's promise too.
 */
#include "dwasync/alloc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void dw_oom(size_t size)
{
    /* No allocation and no stdio here: the heap is what just failed. */
    char msg[96];
    int n =
        snprintf(msg, sizeof msg, "level=error msg=\"out of memory allocating %zu bytes\"\n", size);
    if (n > 0)
        (void)!write(STDERR_FILENO, msg, (size_t)n);
    abort();
}

void *dw_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        dw_oom(size);
    return p;
}

void *dw_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        dw_oom(count * size);
    return p;
}

void *dw_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        dw_oom(size);
    return p;
}

/* The capacity an array of len elements grown by dw_array_grow has: 0, or the smallest
 * power of two of at least 4 that holds len. */
static size_t implied_capacity(size_t len)
{
    if (len == 0)
        return 0;
    size_t cap = 4;
    while (cap < len)
        cap *= 2;
    return cap;
}

void *dw_array_grow(void *array, size_t len, size_t size)
{
    size_t cap = implied_capacity(len);
    if (len < cap)
        return array;
    size_t grown = cap ? cap * 2 : 4;
    if (grown < cap || grown > SIZE_MAX / (size ? size : 1))
        dw_oom(SIZE_MAX);
    return dw_realloc(array, grown * size);
}

char *dw_strdup(const char *s)
{
    return dw_strndup(s, strlen(s));
}

char *dw_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = dw_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *dw_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        dw_oom(0);
    char *p = dw_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* Before main(): every binary linking dwasync's core gets jansson on these wrappers. */
__attribute__((constructor)) static void route_jansson_allocations(void)
{
    json_set_alloc_funcs(dw_malloc, free);
}

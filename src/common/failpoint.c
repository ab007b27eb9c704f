/*
 * failpoint.c - named fault-injection points (see failpoint.h). The armed points sit in a
 * small fixed table: tests arm a handful at most, and a table scan only happens once a
 * point is armed, never on the unarmed fast path.
 */
#include "dwasync/failpoint.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_POINTS 16
#define MAX_NAME   64

enum action { ACTION_CRASH, ACTION_ERROR };

struct point {
    char name[MAX_NAME];
    enum action action;
    long nth;  /* fire only on this hit; 0: crash on the first, error on every hit */
    long hits; /* times reached so far */
};

bool dw_failpoints_armed;
static struct point points[MAX_POINTS];
static int npoints;

static void fire(const struct point *p)
{
    /* stderr is unbuffered: the line is out before the process dies. */
    fprintf(stderr, "failpoint \"%s\" fired (%s, hit %ld)\n", p->name,
            p->action == ACTION_CRASH ? "crash" : "error", p->hits);
    if (p->action == ACTION_CRASH) {
        raise(SIGKILL);
        _exit(137); /* not reached */
    }
}

bool dw_failpoint_hit(const char *name)
{
    for (int i = 0; i < npoints; i++) {
        struct point *p = &points[i];
        if (strcmp(p->name, name) != 0)
            continue;
        p->hits++;
        bool now = p->nth ? p->hits == p->nth : (p->action == ACTION_ERROR || p->hits == 1);
        if (now)
            fire(p);
        return now;
    }
    return false;
}

static int parse_one(const char *item, size_t len, struct point *out)
{
    const char *colon = memchr(item, ':', len);
    if (!colon || colon == item || (size_t)(colon - item) >= MAX_NAME)
        return -1;
    memset(out, 0, sizeof(*out));
    memcpy(out->name, item, (size_t)(colon - item));
    const char *act = colon + 1;
    size_t act_len = len - (size_t)(act - item);
    const char *at = memchr(act, '@', act_len);
    size_t word = at ? (size_t)(at - act) : act_len;
    if (word == 5 && memcmp(act, "crash", 5) == 0)
        out->action = ACTION_CRASH;
    else if (word == 5 && memcmp(act, "error", 5) == 0)
        out->action = ACTION_ERROR;
    else
        return -1;
    if (at) {
        char digits[24];
        size_t n = act_len - word - 1;
        if (n == 0 || n >= sizeof(digits))
            return -1;
        memcpy(digits, at + 1, n);
        digits[n] = '\0';
        char *end;
        errno = 0;
        long nth = strtol(digits, &end, 10);
        if (errno || *end || nth < 1)
            return -1;
        out->nth = nth;
    }
    return 0;
}

dw_rc dw_failpoints_configure(const char *spec)
{
    struct point parsed[MAX_POINTS];
    int n = 0;
    for (const char *s = spec; s && *s;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (n == MAX_POINTS || parse_one(s, len, &parsed[n]) != 0) {
            fprintf(stderr,
                    "DWASYNC_FAILPOINTS: bad entry \"%.*s\" (want name:crash|error[@N], "
                    "at most %d)\n",
                    (int)len, s, MAX_POINTS);
            return DW_ERR_INVALID;
        }
        n++;
        s = comma ? comma + 1 : s + len;
    }
    memcpy(points, parsed, sizeof(parsed[0]) * (size_t)n);
    npoints = n;
    dw_failpoints_armed = n > 0;
    return DW_OK;
}

/* Armed before main() so that every binary, the daemon and the tests alike, honours it. */
__attribute__((constructor)) static void configure_from_environment(void)
{
    if (dw_failpoints_configure(getenv("DWASYNC_FAILPOINTS")) != DW_OK)
        _exit(2);
}

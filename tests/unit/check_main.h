/*
 * check_main.h - the one main() of the unit suites (check_main.c, linked into each of them).
 *
 * A suite file defines dw_check_suite: the function that builds its Check suite and what
 * its run needs around it (whether tests share one process, what to start before the run
 * and stop after it). main() runs it with CK_NORMAL output and exits non-zero when a test
 * failed. The struct is the suite file's; main() only reads it.
 */
#ifndef DW_TESTS_CHECK_MAIN_H
#define DW_TESTS_CHECK_MAIN_H

#include <check.h>
#include <jansson.h>
#include <stdbool.h>

#include "dwasync/write.h"

struct dw_check_suite {
    Suite *(*make)(void); /* builds the suite (called once, after before()) */
    bool nofork;          /* run every test in this process (they share what before() made) */
    void (*before)(void); /* optional: log level, a shared emulator, test keys */
    void (*after)(void);  /* optional: frees what before() made */
};

/* Defined by each suite file. */
extern const struct dw_check_suite dw_check_suite;

/* The whole body of a write as an object (dw_write_body(); NULL for none), for a test to
 * read in place: it stays valid until the run ends. */
const json_t *dw_check_body(const struct dw_write *w);

/* Sets (value stolen) or replaces one member of a write's body. */
void dw_check_body_set(struct dw_write *w, const char *name, json_t *value);

#endif

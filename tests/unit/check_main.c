/*
 * The main() every unit suite binary shares (check_main.h): builds the suite its file
 * declares in dw_check_suite, runs it, and exits with EXIT_FAILURE when a test failed.
 * Check's per-test timer (4 s by default) is switched off: a wall-clock limit fails slow
 * machines and sanitizer builds, not wrong code. A hung test is ctest's TIMEOUT to catch.
 * It also keeps the bodies dw_check_body() hands out.
 */
#include <stdlib.h>

#include "check_main.h"

/* Every body dw_check_body() made, freed when the run ends. */
static json_t *bodies;

const json_t *dw_check_body(const struct dw_write *w)
{
    json_t *body = dw_write_body(w);
    if (body == NULL)
        return NULL;
    if (bodies == NULL)
        bodies = json_array();
    json_array_append_new(bodies, body);
    return body;
}

void dw_check_body_set(struct dw_write *w, const char *name, json_t *value)
{
    json_t *body = dw_write_body(w);
    json_object_set_new(body ? body : (body = json_object()), name, value);
    dw_write_set_body(w, body);
}

int main(void)
{
    setenv("CK_DEFAULT_TIMEOUT", "0", 0);
    if (dw_check_suite.before)
        dw_check_suite.before();
    SRunner *sr = srunner_create(dw_check_suite.make());
    if (dw_check_suite.nofork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (dw_check_suite.after)
        dw_check_suite.after();
    json_decref(bodies);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Unit tests: coalescing and ordering rules of apply windows (table-driven). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/window.h"

/* One change in a test window: "U accounts A1 g1 20 {...}" style rows. */
struct change_spec {
    char op;            /* 'U' upsert, 'D' delete, 'E' mapping error */
    const char *target; /* entity set (also the table) */
    const char *key;    /* key value (target row identity) */
    const char *group;
    int sequence;
    const char *body; /* JSON object for upserts */
};

static void push(struct dw_window *w, const struct change_spec *s, int position)
{
    struct dw_item *it = dw_window_push(w);
    it->position = (uint32_t)position;
    it->commit_lsn = 100 + (dw_lsn)position;
    /* The map id stands for the table; the key text for the source key. */
    it->mapped.map_id = (int64_t)strlen(s->target);
    it->key_text = dw_strdup(s->key);
    it->source_key = json_pack("{s:s}", "k", s->key);
    it->mapped.group_name = s->group;
    it->mapped.sequence = s->sequence;
    it->mapped.target_id = dw_asprintf("%s(k='%s')", s->target, s->key);
    if (s->op == 'E') {
        it->mapped.ok = false;
        it->mapped.error_class = DW_ERRCLASS_MAPPING;
        it->mapped.error = dw_strdup("value not in value map");
        return;
    }
    it->mapped.ok = true;
    it->mapped.write.op = s->op == 'D' ? DW_WRITE_DELETE : DW_WRITE_UPSERT;
    it->mapped.write.entity_set = dw_strdup(s->target);
    it->mapped.write.logical_name = dw_strdup(s->target);
    it->mapped.write.key = json_pack("{s:s}", "k", s->key);
    if (s->op != 'D')
        it->mapped.write.body = json_loads(s->body ? s->body : "{}", 0, NULL);
}

/* Describes the plan as "group:seq:U|D[target key op body] ..." in apply order. */
static char *describe(const struct dw_plan *p)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    for (size_t g = 0; g < p->ngroups; g++) {
        for (size_t l = 0; l < p->groups[g].nlevels; l++) {
            const struct dw_level *lv = &p->groups[g].levels[l];
            dw_buf_printf(&b, "%s%s:%d:%s[", b.len ? " " : "", p->groups[g].name, lv->sequence,
                          lv->deletes ? "D" : "U");
            for (size_t k = 0; k < lv->nchains; k++) {
                const struct dw_chain *c = &p->chains[lv->chains[k]];
                char *key = dw_json_canonical(c->write.key);
                char *body = c->write.body ? dw_json_canonical(c->write.body) : dw_strdup("-");
                dw_buf_printf(&b, "%s%s%s%s%s", k ? " " : "", c->write.entity_set, key,
                              c->write.op == DW_WRITE_DELETE ? "del" : "ups", body);
                free(key);
                free(body);
            }
            dw_buf_putc(&b, ']');
        }
    }
    return dw_buf_steal(&b);
}

static char *states(const struct dw_window *w)
{
    static const char names[] = {'p', 'a', 'o', 'w'};
    char *s = dw_malloc(w->len + 1);
    for (size_t i = 0; i < w->len; i++)
        s[i] = names[w->items[i].state];
    s[w->len] = '\0';
    return s;
}

struct plan_case {
    const char *name;
    struct change_spec changes[8];
    const char *blocked; /* "table:key" already blocked, or NULL */
    const char *expected_plan;
    const char *expected_states; /* after planning: p pending, o open, w waiting */
};

static const struct plan_case cases[] = {
    {"insert then update -> one upsert of the final row",
     {{'U', "accounts", "A1", "g", 20, "{\"name\":\"a\",\"city\":\"x\"}"},
      {'U', "accounts", "A1", "g", 20, "{\"city\":\"y\"}"}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"city\":\"y\",\"name\":\"a\"}]",
     "pp"},
    {"update then delete -> delete",
     {{'U', "accounts", "A1", "g", 20, "{\"name\":\"a\"}"}, {'D', "accounts", "A1", "g", 20, NULL}},
     NULL,
     "g:20:D[accounts{\"k\":\"A1\"}del-]",
     "pp"},
    {"delete then insert -> upsert",
     {{'D', "accounts", "A1", "g", 20, NULL}, {'U', "accounts", "A1", "g", 20, "{\"name\":\"b\"}"}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"name\":\"b\"}]",
     "pp"},
    {"parents before children, deletes children first",
     {{'U', "salesorderdetails", "L1", "sales", 70, "{}"},
      {'U', "accounts", "A1", "sales", 20, "{}"},
      {'D', "salesorders", "O9", "sales", 60, NULL},
      {'U', "salesorders", "O1", "sales", 60, "{}"},
      {'D', "salesorderdetails", "L9", "sales", 70, NULL},
      {'D', "accounts", "A9", "sales", 20, NULL}},
     NULL,
     "sales:20:U[accounts{\"k\":\"A1\"}ups{}] sales:60:U[salesorders{\"k\":\"O1\"}ups{}] "
     "sales:70:U[salesorderdetails{\"k\":\"L1\"}ups{}] "
     "sales:70:D[salesorderdetails{\"k\":\"L9\"}del-] sales:60:D[salesorders{\"k\":\"O9\"}del-] "
     "sales:20:D[accounts{\"k\":\"A9\"}del-]",
     "pppppp"},
    {"groups are independent and listed by name",
     {{'U', "vendors", "V1", "vend", 10, "{}"}, {'U', "accounts", "A1", "cust", 30, "{}"}},
     NULL,
     "cust:30:U[accounts{\"k\":\"A1\"}ups{}] vend:10:U[vendors{\"k\":\"V1\"}ups{}]",
     "pp"},
    {"blocked key parks all its changes; other keys flow",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}"},
      {'U', "accounts", "A2", "g", 20, "{\"n\":2}"},
      {'D', "accounts", "A1", "g", 20, NULL}},
     "accounts:A1",
     "g:20:U[accounts{\"k\":\"A2\"}ups{\"n\":2}]",
     "wpw"},
    {"a window of parked changes only has an empty plan",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}"}, {'D', "accounts", "A1", "g", 20, NULL}},
     "accounts:A1",
     "",
     "ww"},
    {"mapping error opens and blocks later changes of its key only",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}"},
      {'E', "accounts", "A1", "g", 20, NULL},
      {'U', "accounts", "A1", "g", 20, "{\"n\":3}"},
      {'U', "accounts", "A2", "g", 20, "{\"n\":4}"}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"n\":1} accounts{\"k\":\"A2\"}ups{\"n\":4}]",
     "powp"},
};

START_TEST(plan_cases)
{
    const struct plan_case *c = &cases[_i];
    struct dw_window w;
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    struct dw_plan plan;
    dw_window_init(&w);
    if (c->blocked) {
        const char *colon = strchr(c->blocked, ':');
        dw_blocked_keys_add(blocked, (int64_t)(colon - c->blocked), colon + 1);
    }
    for (int i = 0; i < 8 && c->changes[i].op; i++)
        push(&w, &c->changes[i], i);
    dw_plan_build(&w, blocked, &plan);
    char *got = describe(&plan);
    char *st = states(&w);
    ck_assert_msg(strcmp(got, c->expected_plan) == 0, "%s:\n  got      %s\n  expected %s", c->name,
                  got, c->expected_plan);
    ck_assert_msg(strcmp(st, c->expected_states) == 0, "%s: states %s, expected %s", c->name, st,
                  c->expected_states);
    free(got);
    free(st);
    dw_plan_cleanup(&plan);
    dw_window_cleanup(&w);
    dw_blocked_keys_free(blocked);
}
END_TEST

START_TEST(failed_chain_opens_head_and_parks_followers)
{
    static const struct change_spec changes[] = {
        {'U', "accounts", "A1", "g", 20, "{\"n\":1}"},
        {'U', "accounts", "A2", "g", 20, "{\"n\":2}"},
        {'U', "accounts", "A1", "g", 20, "{\"n\":3}"},
    };
    struct dw_window w;
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    struct dw_plan plan;
    dw_window_init(&w);
    for (int i = 0; i < 3; i++)
        push(&w, &changes[i], i);
    dw_plan_build(&w, blocked, &plan);
    ck_assert_uint_eq(plan.nchains, 2);
    size_t a1 = (size_t)w.items[0].chain;
    ck_assert_int_eq(w.items[2].chain, (int)a1);
    dw_plan_fail_chain(&plan, &w, a1, blocked);
    dw_plan_apply_chain(&plan, &w, (size_t)w.items[1].chain);
    char *st = states(&w);
    ck_assert_str_eq(st, "oaw");
    free(st);
    ck_assert(dw_blocked_keys_contains(blocked, 8, "A1"));
    ck_assert(!dw_blocked_keys_contains(blocked, 8, "A2"));

    /* The next window: A1 stays parked behind its open error until replay unblocks it. */
    dw_plan_cleanup(&plan);
    dw_window_reset(&w);
    push(&w, &changes[2], 0);
    push(&w, &changes[1], 1);
    dw_plan_build(&w, blocked, &plan);
    st = states(&w);
    ck_assert_str_eq(st, "wp");
    free(st);
    dw_plan_cleanup(&plan);
    dw_window_cleanup(&w);
    dw_blocked_keys_free(blocked);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("window");
    TCase *tc = tcase_create("window");
    tcase_add_loop_test(tc, plan_cases, 0, (int)(sizeof cases / sizeof *cases));
    tcase_add_test(tc, failed_chain_opens_head_and_parks_followers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Unit tests: coalescing and ordering rules of apply windows (table-driven). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
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
    int txn;          /* > 0: through an atomic map, in transaction txn */
};

static void push(struct dw_window *w, const struct change_spec *s, int position)
{
    struct dw_item *it = dw_window_push(w);
    it->position = (uint32_t)position;
    it->commit_lsn = 100 + (dw_lsn)position;
    if (s->txn > 0) {
        it->atomic = true;
        it->commit_lsn = 1000 + (dw_lsn)s->txn;
        it->xid = (uint32_t)s->txn;
    }
    /* The map id stands for the table; the key text for the source key. */
    it->mapped.map_id = (int64_t)strlen(s->target);
    it->key_text = dw_strdup(s->key);
    it->source_key = dw_asprintf("{\"k\":\"%s\"}", s->key);
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
        dw_write_set_body(&it->mapped.write, json_loads(s->body ? s->body : "{}", 0, NULL));
}

static void describe_chain(struct dw_buf *b, const struct dw_chain *c, bool first)
{
    char *key = dw_json_canonical(c->write.key);
    char *body = c->write.body ? dw_json_canonical(dw_check_body(&c->write)) : dw_strdup("-");
    dw_buf_printf(b, "%s%s%s%s%s", first ? "" : " ", c->write.entity_set, key,
                  c->write.op == DW_WRITE_DELETE ? "del" : "ups", body);
    free(key);
    free(body);
}

/* Describes the plan as "group:[wN:]seq:U|D[target key op body ... {tT chains}] ..." in apply
 * order; an atomic unit is in braces, with its transaction (and part, when cut). */
static char *describe(const struct dw_plan *p)
{
    struct dw_buf b;
    dw_buf_init(&b, 0);
    for (size_t g = 0; g < p->ngroups; g++) {
        for (size_t l = 0; l < p->groups[g].nlevels; l++) {
            const struct dw_level *lv = &p->groups[g].levels[l];
            dw_buf_printf(&b, "%s%s:", b.len ? " " : "", p->groups[g].name);
            if (lv->wave)
                dw_buf_printf(&b, "w%d:", lv->wave);
            dw_buf_printf(&b, "%d:%s[", lv->sequence, lv->deletes ? "D" : "U");
            for (size_t k = 0; k < lv->nchains; k++)
                describe_chain(&b, &p->chains[lv->chains[k]], k == 0);
            for (size_t k = 0; k < lv->nunits; k++) {
                const struct dw_unit *u = &p->units[lv->units[k]];
                dw_buf_printf(&b, "%s{t%u ", k || lv->nchains ? " " : "", u->xid);
                for (size_t j = 0; j < u->nchains; j++)
                    describe_chain(&b, &p->chains[u->chains[j]], j == 0);
                dw_buf_putc(&b, '}');
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
     {{'U', "accounts", "A1", "g", 20, "{\"name\":\"a\",\"city\":\"x\"}", 0},
      {'U', "accounts", "A1", "g", 20, "{\"city\":\"y\"}", 0}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"city\":\"y\",\"name\":\"a\"}]",
     "pp"},
    {"update then delete -> delete",
     {{'U', "accounts", "A1", "g", 20, "{\"name\":\"a\"}", 0},
      {'D', "accounts", "A1", "g", 20, NULL, 0}},
     NULL,
     "g:20:D[accounts{\"k\":\"A1\"}del-]",
     "pp"},
    {"delete then insert -> upsert",
     {{'D', "accounts", "A1", "g", 20, NULL, 0},
      {'U', "accounts", "A1", "g", 20, "{\"name\":\"b\"}", 0}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"name\":\"b\"}]",
     "pp"},
    {"parents before children, deletes children first",
     {{'U', "salesorderdetails", "L1", "sales", 70, "{}", 0},
      {'U', "accounts", "A1", "sales", 20, "{}", 0},
      {'D', "salesorders", "O9", "sales", 60, NULL, 0},
      {'U', "salesorders", "O1", "sales", 60, "{}", 0},
      {'D', "salesorderdetails", "L9", "sales", 70, NULL, 0},
      {'D', "accounts", "A9", "sales", 20, NULL, 0}},
     NULL,
     "sales:20:U[accounts{\"k\":\"A1\"}ups{}] sales:60:U[salesorders{\"k\":\"O1\"}ups{}] "
     "sales:70:U[salesorderdetails{\"k\":\"L1\"}ups{}] "
     "sales:70:D[salesorderdetails{\"k\":\"L9\"}del-] sales:60:D[salesorders{\"k\":\"O9\"}del-] "
     "sales:20:D[accounts{\"k\":\"A9\"}del-]",
     "pppppp"},
    {"groups are independent and listed by name",
     {{'U', "vendors", "V1", "vend", 10, "{}", 0}, {'U', "accounts", "A1", "cust", 30, "{}", 0}},
     NULL,
     "cust:30:U[accounts{\"k\":\"A1\"}ups{}] vend:10:U[vendors{\"k\":\"V1\"}ups{}]",
     "pp"},
    {"blocked key parks all its changes; other keys flow",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}", 0},
      {'U', "accounts", "A2", "g", 20, "{\"n\":2}", 0},
      {'D', "accounts", "A1", "g", 20, NULL, 0}},
     "accounts:A1",
     "g:20:U[accounts{\"k\":\"A2\"}ups{\"n\":2}]",
     "wpw"},
    {"a window of parked changes only has an empty plan",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}", 0}, {'D', "accounts", "A1", "g", 20, NULL, 0}},
     "accounts:A1",
     "",
     "ww"},
    {"mapping error opens and blocks later changes of its key only",
     {{'U', "accounts", "A1", "g", 20, "{\"n\":1}", 0},
      {'E', "accounts", "A1", "g", 20, NULL, 0},
      {'U', "accounts", "A1", "g", 20, "{\"n\":3}", 0},
      {'U', "accounts", "A2", "g", 20, "{\"n\":4}", 0}},
     NULL,
     "g:20:U[accounts{\"k\":\"A1\"}ups{\"n\":1} accounts{\"k\":\"A2\"}ups{\"n\":4}]",
     "powp"},
    {"an atomic transaction is one unit, parents first, in the level of its first chain",
     {{'U', "salesorderdetails", "L1", "s", 80, "{}", 1},
      {'U', "accounts", "A1", "s", 20, "{}", 0},
      {'U', "salesorders", "O1", "s", 70, "{}", 1},
      {'D', "salesorderdetails", "L9", "s", 80, NULL, 1}},
     NULL,
     "s:20:U[accounts{\"k\":\"A1\"}ups{}] s:70:U[{t1 salesorders{\"k\":\"O1\"}ups{} "
     "salesorderdetails{\"k\":\"L1\"}ups{} salesorderdetails{\"k\":\"L9\"}del-}]",
     "pppp"},
    {"atomic changes coalesce within their transaction only; a later one on the same row waits "
     "a wave",
     {{'U', "salesorders", "O1", "s", 70, "{\"a\":1}", 1},
      {'U', "salesorders", "O1", "s", 70, "{\"b\":2}", 1},
      {'U', "salesorders", "O1", "s", 70, "{\"a\":3}", 2},
      {'U', "salesorderdetails", "L1", "s", 80, "{}", 2},
      {'U', "salesorders", "O2", "s", 70, "{}", 3},
      {'U', "salesorderdetails", "L1", "s", 80, "{\"q\":4}", 4}},
     NULL,
     "s:70:U[{t1 salesorders{\"k\":\"O1\"}ups{\"a\":1,\"b\":2}} "
     "{t3 salesorders{\"k\":\"O2\"}ups{}}] "
     "s:w1:70:U[{t2 salesorders{\"k\":\"O1\"}ups{\"a\":3} salesorderdetails{\"k\":\"L1\"}ups{}}] "
     "s:w2:80:U[{t4 salesorderdetails{\"k\":\"L1\"}ups{\"q\":4}}]",
     "pppppp"},
    {"a parked change stops its whole unit; its other changes open, other units flow",
     {{'U', "salesorders", "O1", "s", 70, "{}", 1},
      {'U', "salesorderdetails", "L1", "s", 80, "{}", 1},
      {'U', "salesorderdetails", "L2", "s", 80, "{}", 1},
      {'U', "salesorderdetails", "L2", "s", 80, "{\"q\":1}", 1},
      {'U', "salesorders", "O2", "s", 70, "{}", 2}},
     "salesorders:O1",
     "s:70:U[{t2 salesorders{\"k\":\"O2\"}ups{}}]",
     "woowp"},
    {"an unmappable change stops its unit",
     {{'U', "salesorders", "O1", "s", 70, "{}", 1},
      {'E', "salesorderdetails", "L1", "s", 80, NULL, 1},
      {'U', "accounts", "A1", "s", 20, "{}", 0}},
     NULL,
     "s:20:U[accounts{\"k\":\"A1\"}ups{}]",
     "oop"},
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

/* Pushes n changes into an empty window and plans it. */
static void plan_changes(struct dw_window *w, struct dw_blocked_keys *blocked,
                         const struct change_spec *changes, int n, struct dw_plan *plan)
{
    for (int i = 0; i < n; i++)
        push(w, &changes[i], i);
    dw_plan_build(w, blocked, plan);
}

START_TEST(failed_chain_opens_head_and_parks_followers)
{
    static const struct change_spec changes[] = {
        {'U', "accounts", "A1", "g", 20, "{\"n\":1}", 0},
        {'U', "accounts", "A2", "g", 20, "{\"n\":2}", 0},
        {'U', "accounts", "A1", "g", 20, "{\"n\":3}", 0},
    };
    struct dw_window w;
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    struct dw_plan plan;
    dw_window_init(&w);
    plan_changes(&w, blocked, changes, 3, &plan);
    ck_assert_uint_eq(plan.nchains, 2);
    size_t a1 = (size_t)w.items[0].chain;
    ck_assert_int_eq(w.items[2].chain, (int)a1);
    dw_plan_fail_chain(&plan, &w, a1, blocked);
    dw_plan_apply_chain(&plan, &w, (size_t)w.items[1].chain);
    char *st = states(&w);
    ck_assert_str_eq(st, "oaw");
    free(st);
    /* Only the rows that go to the error table keep their images. */
    ck_assert_ptr_null(w.items[1].source_key);
    ck_assert_str_eq(w.items[0].source_key, "{\"k\":\"A1\"}");
    ck_assert_str_eq(w.items[2].source_key, "{\"k\":\"A1\"}");
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

/* The messages of a stopped unit, and a unit cut into parts of DW_SINK_ATOMIC_MAX. */
START_TEST(atomic_units_stop_whole_and_cut_at_the_limit)
{
    static const struct change_spec changes[] = {
        {'U', "salesorders", "O1", "s", 70, "{}", 1},
        {'E', "salesorderdetails", "L1", "s", 80, NULL, 1},
        {'U', "salesorderdetails", "L2", "s", 80, "{}", 1},
    };
    struct dw_window w;
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    struct dw_plan plan;
    dw_window_init(&w);
    plan_changes(&w, blocked, changes, 3, &plan);
    ck_assert_uint_eq(plan.nunits, 0);
    ck_assert_int_eq(w.items[0].chain, -1);
    ck_assert_int_eq(w.items[0].mapped.error_class, DW_ERRCLASS_CONFLICT);
    ck_assert_str_eq(w.items[0].mapped.error,
                     "not sent: salesorderdetails(k='L1') in the same atomic group could not be "
                     "mapped: value not in value map");
    ck_assert_str_eq(w.items[1].mapped.error, "value not in value map");
    ck_assert(dw_blocked_keys_contains(blocked, 11, "O1"));
    ck_assert(dw_blocked_keys_contains(blocked, 17, "L2"));
    dw_plan_cleanup(&plan);
    dw_window_reset(&w);
    dw_blocked_keys_free(blocked);
    blocked = dw_blocked_keys_new();

    /* A header and 2,000 lines: parts of 1000 chains, one wave each, parents first. */
    static const struct change_spec header = {'U', "salesorders", "O1", "s", 70, "{}", 7};
    push(&w, &header, 0);
    for (int i = 0; i < 2000; i++) {
        char key[16];
        snprintf(key, sizeof key, "L%d", i);
        struct change_spec line = {'U', "salesorderdetails", key, "s", 80, "{}", 7};
        push(&w, &line, i + 1);
    }
    dw_plan_build(&w, blocked, &plan);
    ck_assert_uint_eq(plan.nunits, 3);
    ck_assert_uint_eq(plan.units[0].nchains, 1000);
    ck_assert_uint_eq(plan.units[1].nchains, 1000);
    ck_assert_uint_eq(plan.units[2].nchains, 1);
    ck_assert_uint_eq(plan.units[2].part, 2);
    ck_assert_uint_eq(plan.units[2].nparts, 3);
    ck_assert_str_eq(plan.chains[plan.units[0].chains[0]].write.entity_set, "salesorders");
    ck_assert_str_eq(plan.chains[plan.units[2].chains[0]].write.entity_set, "salesorderdetails");
    ck_assert_uint_eq(plan.groups[0].nlevels, 3);
    for (int l = 0; l < 3; l++) {
        ck_assert_int_eq(plan.groups[0].levels[l].wave, l);
        ck_assert_uint_eq(plan.groups[0].levels[l].nunits, 1);
        ck_assert_uint_eq(plan.groups[0].levels[l].units[0], (size_t)l);
    }
    ck_assert_int_eq(plan.groups[0].levels[0].sequence, 70);
    ck_assert_int_eq(plan.groups[0].levels[1].sequence, 80);
    dw_plan_cleanup(&plan);
    dw_window_cleanup(&w);
    dw_blocked_keys_free(blocked);
}
END_TEST

/* Unchanged updates start no chain; blocked ones park; one after a write joins its chain. */
START_TEST(unchanged_updates_are_applied_without_a_write)
{
    static const struct change_spec changes[] = {
        {'U', "accounts", "A1", "g", 20, "{\"n\":1}", 0}, /* unchanged: applied, not sent */
        {'U', "accounts", "A2", "g", 20, "{\"n\":2}", 0},
        {'U', "accounts", "A2", "g", 20, "{\"n\":2}", 0}, /* unchanged, joins A2's write */
        {'U', "accounts", "B1", "g", 20, "{\"n\":3}", 0}, /* unchanged, but blocked */
        {'U', "accounts", "A1", "g", 20, "{\"n\":4}", 0}, /* a change after it is sent */
    };
    static const bool unchanged[] = {true, false, true, true, false};
    struct dw_window w;
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    struct dw_plan plan;
    dw_window_init(&w);
    dw_blocked_keys_add(blocked, 8, "B1");
    for (int i = 0; i < 5; i++) {
        push(&w, &changes[i], i);
        w.items[i].mapped.unchanged = unchanged[i];
    }
    dw_plan_build(&w, blocked, &plan);
    char *st = states(&w);
    ck_assert_str_eq(st, "appwp");
    free(st);
    ck_assert_uint_eq(plan.unchanged, 1);
    ck_assert_int_eq(w.items[0].chain, -1);
    ck_assert_int_eq(w.items[2].chain, w.items[1].chain);
    char *d = describe(&plan);
    ck_assert_str_eq(
        d, "g:20:U[accounts{\"k\":\"A2\"}ups{\"n\":2} accounts{\"k\":\"A1\"}ups{\"n\":4}]");
    free(d);
    dw_plan_cleanup(&plan);
    dw_window_cleanup(&w);
    dw_blocked_keys_free(blocked);
}
END_TEST

/* Pushes rows changes into w cycling over three tables of one level: 40% accounts, 20%
 * contacts, 40% vendors (keys unique from *next on), and plans it. */
static void plan_mix(struct dw_window *w, int64_t rows, int *next, struct dw_plan *plan)
{
    static const char *const sets[] = {"accounts", "accounts", "contacts", "vendors", "vendors"};
    struct dw_blocked_keys *blocked = dw_blocked_keys_new();
    dw_window_reset(w);
    for (int64_t i = 0; i < rows; i++, (*next)++) {
        char key[16];
        snprintf(key, sizeof key, "K%d", *next);
        struct change_spec s = {'U', sets[*next % 5], key, "g", 50, "{}", 0};
        push(w, &s, (int)i);
    }
    dw_plan_build(w, blocked, plan);
    dw_blocked_keys_free(blocked);
}

START_TEST(request_fill_counts_requests_per_level_and_table)
{
    struct dw_window w;
    struct dw_plan plan;
    int next = 0;
    dw_window_init(&w);
    /* 1,200 + 600 + 1,200 rows: 2 + 1 + 2 requests of 1,000 */
    plan_mix(&w, 3000, &next, &plan);
    ck_assert_double_eq_tol(dw_plan_request_fill(&plan, 1000), 3000.0 / 5000.0, 1e-9);
    ck_assert_double_eq_tol(dw_plan_request_fill(&plan, 600), 1.0, 1e-9);
    dw_plan_cleanup(&plan);
    dw_window_cleanup(&w);
}
END_TEST

/* Behind, windows grow at once to the multiple of window_rows that fills requests (or the
 * largest allowed), and no further; caught up, they are window_rows again. */
START_TEST(windows_grow_under_a_backlog_until_requests_are_full)
{
    struct dw_window w;
    struct dw_plan plan;
    struct dw_window_sizing sizing;
    int next = 0;
    double fill = 0;
    dw_window_init(&w);
    dw_window_sizing_init(&sizing, 6000, 1000, 2);
    int64_t sizes[6];
    for (int i = 0; i < 6; i++) {
        sizes[i] = sizing.rows;
        plan_mix(&w, sizing.rows, &next, &plan);
        fill = dw_plan_request_fill(&plan, 1000);
        dw_window_sizing_learn(&sizing, &plan, true);
        dw_plan_cleanup(&plan);
    }
    ck_assert_int_eq(sizes[0], 6000);
    /* 2,400 + 1,200 + 2,400 rows in 8 requests (75%); at 12,000 rows, the largest allowed,
     * the same mix fills 13 requests (92%): straight there, and no further. */
    ck_assert_int_eq(sizes[1], 6000 * 2);
    ck_assert_int_eq(sizes[5], 6000 * 2);
    ck_assert(fill >= 0.9);

    /* A window whose rows mostly failed: back to window_rows, and no growth while that
     * lasts; one that mostly applied lets them grow again. */
    dw_window_sizing_outcome(&sizing, 10, 11);
    ck_assert_int_eq(sizing.rows, 6000);
    plan_mix(&w, sizing.rows, &next, &plan);
    ck_assert_int_eq(dw_window_sizing_learn(&sizing, &plan, true), 6000);
    dw_plan_cleanup(&plan);
    dw_window_sizing_outcome(&sizing, 11, 10);
    ck_assert_int_eq(sizing.rows, 6000);
    plan_mix(&w, sizing.rows, &next, &plan);
    ck_assert_int_eq(dw_window_sizing_learn(&sizing, &plan, true), 6000 * 2);
    dw_plan_cleanup(&plan);

    /* Caught up: back to window_rows at once. */
    plan_mix(&w, 10, &next, &plan);
    ck_assert_int_eq(dw_window_sizing_learn(&sizing, &plan, false), 6000);
    dw_plan_cleanup(&plan);

    /* Requests that never fill (one row per table) stop growing at the bound. */
    for (int i = 0; i < 6; i++) {
        plan_mix(&w, 5, &next, &plan);
        dw_window_sizing_learn(&sizing, &plan, true);
        dw_plan_cleanup(&plan);
    }
    ck_assert_int_eq(sizing.rows, 6000 * 2);
    /* Without a batch size (0), windows never grow. */
    dw_window_sizing_init(&sizing, 3000, 0, 2);
    plan_mix(&w, 5, &next, &plan);
    ck_assert_int_eq(dw_window_sizing_learn(&sizing, &plan, true), 3000);
    dw_plan_cleanup(&plan);

    /* [apply] window_growth is the largest multiple: 1 never grows, 3 goes to 3 times for
     * requests that never fill, and to no more than that for the mix above. */
    int64_t growths[] = {1, 3};
    for (size_t g = 0; g < sizeof growths / sizeof *growths; g++) {
        dw_window_sizing_init(&sizing, 6000, 1000, growths[g]);
        for (int i = 0; i < 3; i++) {
            plan_mix(&w, sizing.rows, &next, &plan);
            dw_window_sizing_learn(&sizing, &plan, true);
            dw_plan_cleanup(&plan);
            ck_assert_int_le(sizing.rows, 6000 * growths[g]);
        }
        ck_assert_int_eq(sizing.rows > 6000, growths[g] > 1);
        plan_mix(&w, 5, &next, &plan);
        ck_assert_int_eq(dw_window_sizing_learn(&sizing, &plan, true), 6000 * growths[g]);
        dw_plan_cleanup(&plan);
    }
    dw_window_cleanup(&w);
}
END_TEST

/* A window's array is sized to its bound, grows by half past it, and shrinks back (never
 * below its length) once the bound is smaller: an array grown under a backlog is given back. */
START_TEST(item_arrays_follow_the_window_bound)
{
    struct dw_window w;
    dw_window_init(&w);
    dw_window_reserve(&w, 6000);
    ck_assert_uint_eq(w.cap, 6000);
    for (int i = 0; i < 6001; i++)
        dw_window_push(&w);
    ck_assert_uint_eq(w.cap, 9000);
    dw_window_reserve(&w, 100);
    ck_assert_uint_eq(w.cap, 6001);
    dw_window_reset(&w);
    dw_window_reserve(&w, 100);
    ck_assert_uint_eq(w.cap, 100);
    dw_window_cleanup(&w);
}
END_TEST

/* A window is recent while its last commit is younger than DW_WINDOW_CAUGHT_UP_MS. */
START_TEST(recent_commits_mean_caught_up)
{
    struct dw_window w;
    dw_window_init(&w);
    int64_t now = 1800000000000000;
    ck_assert(!dw_window_recent(&w, now)); /* no commit received */
    w.commits = 1;
    w.commit_time_us = now - (DW_WINDOW_CAUGHT_UP_MS - 1) * 1000;
    ck_assert(dw_window_recent(&w, now));
    w.commit_time_us = now - DW_WINDOW_CAUGHT_UP_MS * 1000;
    ck_assert(!dw_window_recent(&w, now));
    dw_window_cleanup(&w);
}
END_TEST

static Suite *window_suite(void)
{
    Suite *s = suite_create("window");
    TCase *tc = tcase_create("window");
    tcase_add_loop_test(tc, plan_cases, 0, (int)(sizeof cases / sizeof *cases));
    tcase_add_test(tc, failed_chain_opens_head_and_parks_followers);
    tcase_add_test(tc, atomic_units_stop_whole_and_cut_at_the_limit);
    tcase_add_test(tc, unchanged_updates_are_applied_without_a_write);
    tcase_add_test(tc, request_fill_counts_requests_per_level_and_table);
    tcase_add_test(tc, windows_grow_under_a_backlog_until_requests_are_full);
    tcase_add_test(tc, item_arrays_follow_the_window_bound);
    tcase_add_test(tc, recent_commits_mean_caught_up);
    suite_add_tcase(s, tc);
    return s;
}

const struct dw_check_suite dw_check_suite = {.make = window_suite};

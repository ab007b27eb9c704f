#!/usr/bin/env bash
# Atomic groups end to end: the sample job with sales order headers and lines marked
# "options": {"atomic": true}. A transaction writing an order and its lines where one line
# holds a value Dataverse refuses (400) leaves nothing in Dataverse (tables and write
# history), every row of it lands in dwasync.error (the bad line with Dataverse's error, the
# others rolled back naming it), later changes of its keys wait, other transactions flow.
# Then the operator's fix (data fixed, rows replayed, the bad head skipped so its fix
# follows) applies everything. Last, a transaction of more than 1,000 rows is split into
# changesets of at most 1,000 with a warning. Also: the option is validated at import, and
# export -> import -> export is a fixed point.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"

# --- the map file: orders and lines atomic -------------------------------------------------
atomic_map() {   # atomic_map VALUE OUT: the sample map with options.atomic = VALUE on orders and lines
    python3 - "$DW_SAMPLE_DIR/fno-sample.map.json" "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for g in d["groups"]:
    for m in g["maps"]:
        if m["name"] in ("sales_orders", "sales_order_lines"):
            m["options"]["atomic"] = json.loads(sys.argv[2])
json.dump(d, open(sys.argv[3], "w"), indent=1)
PY
}
atomic_map '"yes"' "$DW_E2E_DIR/bad.map.json"
out=$(dw map import "$DW_E2E_DIR/bad.map.json" 2>&1)
check_eq "a map file with atomic \"yes\" is refused" 1 $?
check_contains "the refusal names the JSON path" ".options.atomic: must be true or false" "$out"
atomic_map true "$DW_E2E_DIR/atomic.map.json"
check_status "atomic map file imported" 0 dw map import "$DW_E2E_DIR/atomic.map.json"
dw map export fno_sample "$DW_E2E_DIR/export1.json" >/dev/null
check_eq "export keeps the option on both maps" 2 "$(grep -c '"atomic": true' "$DW_E2E_DIR/export1.json")"
dw map import "$DW_E2E_DIR/export1.json" >/dev/null
dw map export fno_sample "$DW_E2E_DIR/export2.json" >/dev/null
check_status "export -> import -> export is a fixed point" 0 cmp "$DW_E2E_DIR/export1.json" "$DW_E2E_DIR/export2.json"

dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_applied

# --- one transaction with a bad line; others around it -------------------------------------
read -r cust cur <<<"$(psql_q "SELECT orderingcustomeraccountnumber || ' ' || currencycode
                              FROM fno.salesorderheaders WHERE dataareaid = 'usmf' LIMIT 1" | tr -d '|')"
psql -X -q -v ON_ERROR_STOP=1 -v cust="$cust" -v cur="$cur" <<'SQL'
BEGIN;   -- the bad one: line 3's quantity is beyond Dataverse's decimal range (1e11)
INSERT INTO fno.salesorderheaders VALUES ('usmf', 'SO-AT1', :'cust', :'cur', 'Atomic one', 50, 1);
INSERT INTO fno.salesorderlines
SELECT 'usmf', 'SO-AT1', n, 'AT1-P' || n, CASE WHEN n = 3 THEN 1e12 ELSE n END, 10, 10 * n
  FROM generate_series(1, 5) n;
COMMIT;
BEGIN;   -- a good one right after
INSERT INTO fno.salesorderheaders VALUES ('usmf', 'SO-AT2', :'cust', :'cur', 'Atomic two', 30, 1);
INSERT INTO fno.salesorderlines
SELECT 'usmf', 'SO-AT2', n, 'AT2-P' || n, n, 10, 10 * n FROM generate_series(1, 3) n;
COMMIT;
-- and a change outside the atomic maps
UPDATE fno.customersv3 SET primarycontactphone = '+1 555 0142' WHERE dataareaid = 'usmf'
   AND customeraccount = :'cust';
SQL
check_status "workload applied or parked" 0 e2e_wait_applied

dv_rows() {   # dv_rows SET JQ_FILTER: rows of dvemu's table SET matching the filter
    dvemu_admin GET "tables/$1" | jq "[.value[] | select($2)] | length"
}
dv_history() {   # dv_history SET JQ_FILTER: writes in dvemu's history of SET matching it
    dvemu_admin GET "history?table=$1" | jq "[.value[] | select(.row | $2)] | length"
}
check_eq "the bad transaction's order is not in Dataverse" 0 \
    "$(dv_rows salesorders '.msdyn_salesordernumber == "SO-AT1"')"
check_eq "none of its lines either" 0 \
    "$(dv_rows salesorderdetails '.productdescription // "" | startswith("AT1-")')"
check_eq "nor any write of them in the write history" "0 0" \
    "$(dv_history salesorders '.msdyn_salesordernumber == "SO-AT1"') $(dv_history salesorderdetails '.productdescription // "" | startswith("AT1-")')"
check_eq "the next transaction applied: its order" 1 \
    "$(dv_rows salesorders '.msdyn_salesordernumber == "SO-AT2"')"
so2=$(dvemu_admin GET tables/salesorders | jq -r '.value[] | select(.msdyn_salesordernumber == "SO-AT2") | .salesorderid')
check_eq "and its lines, under it" 3 "$(dv_rows salesorderdetails "._salesorderid_value == \"$so2\"")"
check_eq "the change outside atomic maps applied" 1 \
    "$(dv_rows accounts '.accountnumber == "'"$cust"'" and .telephone1 == "+1 555 0142"')"

errors() {   # errors SELECT_LIST [MORE_WHERE]: over the error rows of the bad transaction
    psql_q "SELECT $1 FROM dwasync.error WHERE target_id LIKE '%SO-AT1%' ${2:-}"
}
psql_q "SELECT id, status, class, http_status, dv_code, target_id, message FROM dwasync.error
         ORDER BY id" >"$DW_E2E_DIR/errors.txt"
show_log_on_failure "$DW_E2E_DIR/errors.txt"
check_eq "all six rows of the transaction are open errors" "6|6" \
    "$(errors "count(*), count(*) FILTER (WHERE status = 'open')")"
check_eq "one row carries Dataverse's error: validation, 400, 0x80044330" "1|400|0x80044330" \
    "$(errors "count(*), min(http_status), min(dv_code)" "AND class = 'validation'")"
check_contains "it is line 3" '"sequencenumber":3' "$(errors target_id "AND class = 'validation'")"
check_contains "its message is Dataverse's" "is outside the valid range" \
    "$(errors message "AND class = 'validation'")"
check_eq "the other five are rolled back, naming the failed row" 5 \
    "$(errors "count(*)" "AND class = 'conflict' AND message = 'rolled back: '
        || (SELECT target_id FROM dwasync.error WHERE class = 'validation')
        || ' in the same atomic group failed: '
        || (SELECT message FROM dwasync.error WHERE class = 'validation')")"
check_eq "no other errors" 6 "$(psql_q "SELECT count(*) FROM dwasync.error")"
check_contains "the daemon logged the group's failure once" "atomic group of 6 writes not applied" \
    "$(cat "$DW_E2E_DIR/daemon.log")"

# --- the fix ---------------------------------------------------------------------------------
# The line's quantity is fixed in F&O and the order renamed: both wait behind their keys.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
UPDATE fno.salesorderlines SET orderedsalesquantity = 3 WHERE salesordernumber = 'SO-AT1'
   AND linecreationsequencenumber = 3;
UPDATE fno.salesorderheaders SET salesordername = 'Atomic one, fixed' WHERE salesordernumber = 'SO-AT1';
SQL
check_status "fixes parked" 0 e2e_wait_applied
check_eq "both fixes wait behind their keys" 2 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'waiting'")"
check_eq "still nothing of the order in Dataverse" 0 \
    "$(dv_rows salesorders '.msdyn_salesordernumber == "SO-AT1"')"
# Replays go row by row (parents first); the bad line's stored image still holds the bad
# value, so it fails again, and the operator skips it: its waiting fix follows.
out=$(dw errors replay --all --job fno_sample 2>&1)
check_contains "replay is handed to the running daemon" "replays them now" "$out"
check_status "replays done" 0 e2e_wait_replayed
check_eq "only the bad line is open again" "1|validation" \
    "$(psql_q "SELECT count(*) || '|' || min(class) FROM dwasync.error WHERE status = 'open'")"
out=$(dw errors skip "$(psql_q "SELECT id FROM dwasync.error WHERE status = 'open'")" \
    --reason "fixed in F&O" 2>&1)
check_contains "skip says what it did" "skipped 1 error" "$out"
check_status "the fix replays" 0 e2e_wait_replayed
check_eq "nothing open, waiting or replaying" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status IN ('open', 'waiting', 'replaying')")"
so1=$(dvemu_admin GET tables/salesorders | jq -r '.value[] | select(.msdyn_salesordernumber == "SO-AT1") | .salesorderid')
check_eq "the order is applied with its later name" "Atomic one, fixed" \
    "$(dvemu_admin GET tables/salesorders | jq -r ".value[] | select(.salesorderid == \"$so1\") | .name")"
check_eq "all five lines are under it, line 3 fixed" "5 3" \
    "$(dvemu_admin GET tables/salesorderdetails | jq -r "[.value[] | select(._salesorderid_value == \"$so1\")]
        | \"\(length) \(.[] | select(.sequencenumber == 3) | .quantity)\"")"
check_eq "Dataverse equals the staging tables" 0 "$(e2e_mismatches)"

# --- more than 1,000 rows in one transaction -------------------------------------------------
psql -X -q -v ON_ERROR_STOP=1 -v cust="$cust" -v cur="$cur" <<'SQL'
BEGIN;
INSERT INTO fno.salesorderheaders VALUES ('usmf', 'SO-BIG', :'cust', :'cur', 'Big', 1200, 1);
INSERT INTO fno.salesorderlines
SELECT 'usmf', 'SO-BIG', n, 'BIG-P' || n, 1, 1, 1 FROM generate_series(1, 1200) n;
COMMIT;
SQL
check_status "the big transaction applied" 0 e2e_wait_applied
big=$(dvemu_admin GET tables/salesorders | jq -r '.value[] | select(.msdyn_salesordernumber == "SO-BIG") | .salesorderid')
check_eq "its order and all 1,200 lines are in Dataverse" 1200 \
    "$(dv_rows salesorderdetails "._salesorderid_value == \"$big\"")"
check_eq "no errors from it" 0 "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status <> 'resolved' AND status <> 'skipped'")"
check_eq "the split was warned about once" 1 \
    "$(grep -c 'applied in changesets of at most 1000 rows' "$DW_E2E_DIR/daemon.log")"

kill -TERM $daemon; wait $daemon
check_eq "daemon stops cleanly" 0 $?
finish

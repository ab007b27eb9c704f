#!/usr/bin/env bash
# Redelivered and already-done deletes (issue 14 items 3 and 7), driven by crash points:
#  1. An order and its lines deleted in one transaction are applied, and the daemon dies at
#     the crash point after the apply and before the error rows and checkpoint: the slot
#     redelivers the deletes, the lines name a parent that is gone, and that is done (no
#     missing_parent error).
#  2. Through atomic maps: rows deleted in Dataverse directly and then in the source are
#     done (no conflict, no missing parent); so is a redelivered atomic delete after a crash
#     between the error rows and the checkpoint.
#  3. A 2,500-row atomic transaction goes out as changesets of 1,000, 1,000 and 500 even
#     with window_ms = 1, with the README's warning once.
#  4. A rolled-back atomic delete (the order's delete refused) replays children first.
# Each part ends with Dataverse equal to the source (the oracle) and the error table's exact rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced

stop_daemon() {
    kill -TERM "$daemon"
    wait "$daemon"
    daemon=
}
# crash_at POINT SQL: a daemon armed with POINT runs SQL's window and dies there.
crash_at() {
    local before
    stop_daemon
    before=$(grep -c "failpoint \"$1\" fired" "$DW_E2E_DIR/daemon.log")
    DWASYNC_FAILPOINTS="$1:crash" e2e_start_daemon
    psql_q "$2" >/dev/null
    wait "$daemon"
    check_eq "the daemon died at $1 (SIGKILL)" 137 $?
    daemon=
    check_eq "its log says the point fired" $((before + 1)) \
        "$(grep -c "failpoint \"$1\" fired" "$DW_E2E_DIR/daemon.log")"
    e2e_start_daemon
}
read -r cust cur <<<"$(psql_q "SELECT orderingcustomeraccountnumber || ' ' || currencycode
                              FROM fno.salesorderheaders WHERE dataareaid = 'usmf' LIMIT 1" | tr -d '|')"
new_order() {   # new_order NUMBER LINES: an order with LINES lines, in one transaction
    psql -X -q -v ON_ERROR_STOP=1 -v cust="$cust" -v cur="$cur" -v so="$1" -v n="$2" <<'SQL'
BEGIN;
INSERT INTO fno.salesorderheaders VALUES ('usmf', :'so', :'cust', :'cur', 'Redelivery', 5, 1);
INSERT INTO fno.salesorderlines
SELECT 'usmf', :'so', n, 'RD-P' || n, n, 1, n FROM generate_series(1, :n) n;
COMMIT;
SQL
}
delete_order="DELETE FROM fno.salesorderlines WHERE salesordernumber = '%s';
              DELETE FROM fno.salesorderheaders WHERE salesordernumber = '%s'"
order_id() {
    dvemu_admin GET tables/salesorders |
        jq -r ".value[] | select(.msdyn_salesordernumber == \"$1\") | .salesorderid"
}
lines_of() {
    dvemu_admin GET tables/salesorderdetails | jq "[.value[] | select(._salesorderid_value == \"$1\")] | length"
}
errors() { psql_q "SELECT count(*) FROM dwasync.error"; }

# --- 1. a redelivered order + lines delete --------------------------------------------------
new_order SO-RD1 3
check_status "order applied" 0 e2e_wait_applied
so=$(order_id SO-RD1)
check_eq "the order and its 3 lines are in Dataverse" 3 "$(lines_of "$so")"
crash_at apply_before_error_rows "$(printf "$delete_order" SO-RD1 SO-RD1)"
check_eq "the deletes were applied before the crash" "0|" "$(lines_of "$so")|$(order_id SO-RD1)"
check_status "the redelivered deletes are applied" 0 e2e_wait_applied
check_eq "no error row: a child whose parent is gone is deleted already" 0 "$(errors)"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"

# --- 2. atomic maps: deletes of rows already gone ------------------------------------------
stop_daemon
python3 - "$DW_SAMPLE_DIR/fno-sample.map.json" "$DW_E2E_DIR/atomic.map.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for g in d["groups"]:
    for m in g["maps"]:
        if m["name"] in ("sales_orders", "sales_order_lines"):
            m["options"]["atomic"] = True
json.dump(d, open(sys.argv[2], "w"), indent=1)
PY
dw job stop fno_sample >/dev/null 2>&1
dw map import "$DW_E2E_DIR/atomic.map.json" >/dev/null || die "atomic map import failed"
dw job start fno_sample >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
new_order SO-AT1 2
check_status "atomic order applied" 0 e2e_wait_applied
so=$(order_id SO-AT1)
check_eq "the order and its 2 lines are in Dataverse" 2 "$(lines_of "$so")"
for id in $(dvemu_admin GET tables/salesorderdetails |
            jq -r ".value[] | select(._salesorderid_value == \"$so\") | .salesorderdetailid"); do
    dvemu_api DELETE "salesorderdetails($id)" >/dev/null
done
dvemu_api DELETE "salesorders($so)" >/dev/null
check_eq "deleted in Dataverse directly" "0|" "$(lines_of "$so")|$(order_id SO-AT1)"
psql_q "$(printf "$delete_order" SO-AT1 SO-AT1)" >/dev/null
check_status "the source deletes are applied" 0 e2e_wait_applied
check_eq "no error row for deletes of rows already gone" 0 "$(errors)"

new_order SO-AT2 2
check_status "second atomic order applied" 0 e2e_wait_applied
so=$(order_id SO-AT2)
crash_at error_rows_before_checkpoint "$(printf "$delete_order" SO-AT2 SO-AT2)"
check_eq "the atomic deletes were applied before the crash" "0|" "$(lines_of "$so")|$(order_id SO-AT2)"
check_status "the redelivered atomic deletes are applied" 0 e2e_wait_applied
check_eq "no error row for the redelivered atomic delete" 0 "$(errors)"

# --- 3. changesets of 1,000 whatever window_ms does ------------------------------------------
stop_daemon
sed -i 's/^window_ms = .*/window_ms = 1/' "$DW_E2E_CONF"
e2e_start_daemon
batches() { dvemu_admin GET counters | jq '[.requests | to_entries[] | select(.key | startswith("POST $batch")) | .value] | add // 0'; }
before=$(batches)
new_order SO-BIG 2499
check_status "the 2,500-row transaction applied" 0 e2e_wait_applied
check_eq "its order and 2,499 lines are in Dataverse" 2499 "$(lines_of "$(order_id SO-BIG)")"
check_eq "in three changesets (1,000, 1,000 and 500)" 3 "$(($(batches) - before))"
check_eq "with the README's warning, once" 1 "$(grep -c \
    'has more than 1,000 rows for atomic maps: it is applied in changesets of at most 1000 rows, each atomic on its own, not as one' \
    "$DW_E2E_DIR/daemon.log")"
check_eq "no error row" 0 "$(errors)"

# --- 4. a rolled-back atomic delete replays children first ----------------------------------
new_order SO-AT3 2
check_status "third atomic order applied" 0 e2e_wait_applied
so=$(order_id SO-AT3)
dvemu_admin POST privileges '{"revoke": [{"table": "salesorders", "privilege": "delete"}]}' >/dev/null
psql_q "$(printf "$delete_order" SO-AT3 SO-AT3)" >/dev/null
check_status "the refused delete is parked" 0 e2e_wait_applied
check_eq "the order's delete failed, its lines' were rolled back naming it" "conflict,conflict,privilege|2" \
    "$(psql_q "SELECT string_agg(class, ',' ORDER BY class) || '|' ||
                      count(*) FILTER (WHERE message LIKE 'rolled back: salesorders(%')
                 FROM dwasync.error WHERE status = 'open'")"
check_eq "exactly those three rows" 3 "$(errors)"
check_eq "nothing was deleted" 2 "$(lines_of "$so")"
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
dw errors replay --all --job fno_sample >/dev/null 2>&1
check_status "replayed" 0 e2e_wait_replayed
check_eq "all three resolved" 3 "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'resolved'")"
check_eq "gone from Dataverse" "0|" "$(lines_of "$so")|$(order_id SO-AT3)"
hist=$(dvemu_admin GET history | jq --arg so "$so" '[.value[] | select(.op == "delete")
        | select(.id == $so or .row._salesorderid_value == $so) | .table] | join(",")')
check_eq "the lines were deleted before the order" '"salesorderdetails,salesorderdetails,salesorders"' "$hist"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
stop_daemon
finish

#!/usr/bin/env bash
# `dwasync verify` finds each class of drift made behind dwasync's back (through dvemu's Web
# API directly: a contact deleted, an account's column changed, a contact created), records
# each in dwasync.verify_result exactly, and `--repair` fixes them through the daemon (the
# extra deleted, the missing and different rows copied interleaved with the stream): then
# verify is clean and Dataverse equals the independent oracle. dvemu serves pages of 25 rows,
# so every read follows @odata.nextLink: verify's own loop reads them one page at a time
# (dvemu's request log counts the GETs, verify's progress counts the pages it saw), and the
# daemon publishes the latest run's progress in /metrics.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup --page-size 25
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync finished" 0 e2e_wait_synced
port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log")
# verify_gauges: the daemon's gauges of the latest verify run: "running rows drift".
verify_gauges() {
    curl -sf "http://127.0.0.1:$port/metrics" | awk '
        /^dwasync_verify_running\{job="fno_sample"\}/ {r = $2}
        /^dwasync_verify_rows_read\{job="fno_sample"\}/ {n = $2}
        /^dwasync_verify_drift_rows\{job="fno_sample"\}/ {d = $2}
        END {print r + 0, n + 0, d + 0}'
}

seq0=$(dvemu_admin GET 'requests?path=accounts' | jq '[.value[].seq] | max // 0')
out=$(dw verify fno_sample 2>"$DW_E2E_DIR/verify.err")
check_eq "verify of a synced job exits 0" 0 $?
progress=$(cat "$DW_E2E_DIR/verify.err")
log=$(dvemu_admin GET 'requests?path=accounts')
# The set verified is read page by page; the accounts other rows name as parents (invoice
# accounts, orders' customers) by GUID, 40 at most a request, each once: never the whole set.
set_gets=$(jq --argjson s "$seq0" '[.value[] | select(.seq > $s and .method == "GET" and
    ((.query // "") | contains("filter") | not))] | length' <<<"$log")
parent_gets=$(jq -r --argjson s "$seq0" '.value[] | select(.seq > $s and .method == "GET" and
    ((.query // "") | contains("filter"))) | .query' <<<"$log")
asked=$(grep -o 'accountid%20eq%20[0-9a-f-]*' <<<"$parent_gets" | sort)
accounts=$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | jq '.value | length')
pages=$(((accounts + 24) / 25))
check_status "several pages" 0 test "$pages" -ge 3
check_eq "verify read accounts in pages of 25, one GET each" "$pages" "$set_gets"
check_eq "verify's own loop saw every page (a progress line each)" "$set_gets" \
    "$(grep -c '^verify: accounts: page ' <<<"$progress")"
check_status "parents were read by GUID" 0 test "$(grep -c . <<<"$asked")" -gt 0
check_eq "each parent GUID asked once" "$(uniq <<<"$asked" | grep -c .)" "$(grep -c . <<<"$asked")"
check_eq "at most 40 GUIDs a request" 0 "$(awk -F'accountid%20eq%20' 'NF - 1 > 40' <<<"$parent_gets" | grep -c .)"
check_contains "the last page says so" "verify: accounts: page $pages, $accounts rows read (last)" "$progress"
check_contains "and finds no drift" "0 missing, 0 extra, 0 different" "$out"
check_contains "it read every source row" "$(psql_q "SELECT (SELECT count(*) FROM fno.legalentities) +
    (SELECT count(*) FROM fno.currencies WHERE currencycode <> '999') +
    (SELECT count(*) FROM fno.paymentterms) + (SELECT count(*) FROM fno.customergroups) +
    (SELECT count(*) FROM fno.customersv3) + (SELECT count(*) FROM fno.vendorsv2) +
    (SELECT count(*) FROM fno.salesorderheaders) + (SELECT count(*) FROM fno.salesorderlines)") source rows" "$out"
check_contains "it printed progress per entity set" "verify: accounts: 0 missing" "$progress"

# Drift behind dwasync's back.
row() { curl -sf "$DVEMU_URL/_dvemu/tables/$1" | jq -r "$2"; }
usmf=$(row cdm_companies '.value[] | select(.cdm_companycode == "usmf") | .cdm_companyid')
gone=$(row contacts "[.value[] | select(._msdyn_company_value == \"$usmf\")][0].contactid")
gone_person=$(row contacts ".value[] | select(.contactid == \"$gone\") | .msdyn_contactpersonid")
dvemu_api DELETE "contacts($gone)" >/dev/null || die "deleting a contact failed"
changed=$(row accounts '.value[3].accountid')
dvemu_api PATCH "accounts($changed)" '{"name": "changed behind dwasync", "telephone1": "000"}' >/dev/null ||
    die "changing an account failed"
dvemu_api POST contacts '{"msdyn_contactpersonid": "X0000001", "firstname": "Extra", "lastname": "Row",
    "msdyn_company@odata.bind": "/cdm_companies('"$usmf"')"}' >/dev/null || die "creating a contact failed"

out=$(dw verify fno_sample 2>/dev/null)
check_eq "verify exits 3 when it finds drift" 3 $?
check_contains "its summary" "1 missing, 1 extra, 1 different" "$out"
run=$(psql_q "SELECT max(id) FROM dwasync.verify_run")
check_eq "each class recorded exactly" "different accounts name,telephone1
extra contacts
missing contacts" "$(psql_q "SELECT concat_ws(' ', class, entity_set, array_to_string(columns, ','))
    FROM dwasync.verify_result WHERE run_id = $run ORDER BY class")"
check_contains "the missing row names its source key" "\"customeraccount\": \"$gone_person\"" \
    "$(psql_q "SELECT source_key FROM dwasync.verify_result WHERE run_id = $run AND class = 'missing'")"
check_contains "the extra row names its key" "X0000001" \
    "$(psql_q "SELECT target_id FROM dwasync.verify_result WHERE run_id = $run AND class = 'extra'")"
check_eq "the run's totals" "1 1 1" "$(psql_q "SELECT missing || ' ' || extra || ' ' || different FROM dwasync.verify_run WHERE id = $run")"
# The daemon publishes the latest run's progress (it reads dwasync.verify_run every 2 s).
want="0 $(psql_q "SELECT source_rows + target_rows FROM dwasync.verify_run WHERE id = $run") 3"
for _ in $(seq 1 600); do [ "$(verify_gauges)" = "$want" ] && break; sleep 0.1; done
check_eq "/metrics: the run finished, the rows it read and the drift it found" "$want" "$(verify_gauges)"
check_status "(rows read counted)" 0 test "$(echo "$want" | cut -d' ' -f2)" -gt 100
out=$(dw verify fno_sample --map customers_persons 2>/dev/null)
check_contains "--map verifies that map's entity set only" "1 missing, 1 extra, 0 different" "$out"
out=$(dw verify fno_sample --map nosuchmap 2>&1)
check_eq "an unknown map is refused" 1 $?

out=$(dw verify fno_sample --repair 2>/dev/null)
check_eq "verify --repair reports the drift it found" 3 $?
check_contains "it deleted the extra and queued the copies" "1 extra row deleted, 2 keyed copies queued" "$out"
check_status "the daemon applied the repair" 0 e2e_wait_resynced
out=$(dw verify fno_sample 2>/dev/null)
check_eq "after the repair verify is clean" 0 $?
check_contains "(summary)" "0 missing, 0 extra, 0 different" "$out"
check_eq "Dataverse equals the source (independent oracle)" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"

# An extra whose key holds a lookup to a parent other than the company (a sales order line):
# its source key is read through the order's key, so the repair queues its copy too (a line
# created in the source meanwhile would come back).
order=$(row salesorders '.value[0]')
order_no=$(jq -r .msdyn_salesordernumber <<<"$order")
dvemu_api POST salesorderdetails '{"sequencenumber": 999, "productdescription": "Extra line",
    "salesorderid@odata.bind": "/salesorders('"$(jq -r .salesorderid <<<"$order")"')"}' >/dev/null ||
    die "creating a sales order line failed"
out=$(dw verify fno_sample --map sales_order_lines --repair 2>/dev/null)
check_eq "a line created behind dwasync's back is drift" 3 $?
check_contains "found as an extra" "0 missing, 1 extra, 0 different" "$out"
check_contains "deleted, and its source key queued as a copy" "1 extra row deleted, 1 keyed copy queued" "$out"
cond=$(psql_q "SELECT condition FROM dwasync.copy_request ORDER BY id DESC LIMIT 1")
check_contains "the copy asks the source for the line by its order's number" "'$order_no'" "$cond"
check_contains "and its own sequence number" "'999'" "$cond"
check_status "the daemon applied the repair" 0 e2e_wait_resynced
check_eq "the line is gone" 0 "$(row salesorderdetails '[.value[] | select(.sequencenumber == 999)] | length')"
out=$(dw verify fno_sample 2>/dev/null)
check_eq "verify is clean again" 0 $?
check_eq "Dataverse equals the source (independent oracle, again)" 0 "$(e2e_mismatches)"
kill -TERM "$daemon"; wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
finish

#!/usr/bin/env bash
# Online resync (`dwasync job resync`): copies of one map and of one legal entity while the
# job streams a workload, on the job's own slot, each with a kill -9 (failpoint) in the
# middle. Before each resync, Dataverse drifts behind dwasync's back (rows deleted, a column
# changed in dvemu directly); the resync puts it back. Asserts: Dataverse equals the oracle,
# no account's credit limit (raised by the workload only) goes back more than once per crash,
# the slot is the one created at the start (never dropped or created again), the error row
# parked before the resync is still there, untouched, the copy resumed from its last chunk,
# `status` shows the progress, and rows the selection excludes are never read: a legal
# entity the job does not sync (frrt) is not read by the initial sync, nor usmf by a resync
# of demf (the rows read are counted in dwasync.copy_request). Bad --where predicates are
# refused and queue nothing. status's rate and ETA are checked at a set instant (--at).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 25/' "$DW_E2E_CONF"
FP=initial_sync_chunk_applied_before_progress

# A third legal entity the job does not sync: its customers must never leave the server.
psql_q "INSERT INTO fno.customersv3 SELECT (jsonb_populate_record(c, jsonb_build_object('dataareaid', 'frrt'))).*
          FROM fno.customersv3 c WHERE dataareaid = 'usmf'" >/dev/null || die "adding frrt failed"
synced=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE dataareaid IN ('usmf', 'demf')")
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync finished" 0 e2e_wait_synced
check_eq "the initial sync read only the synced legal entities' customers" "$synced" \
    "$(psql_q "SELECT rows_copied FROM dwasync.copy_request WHERE source_table = 'customersv3'")"
slot=$(psql_q "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")
check_eq "the job's slot" dwasync_fno_sample "$slot"

# An error row from before the resync: a usmf vendor gets an on-hold status its map lacks
# (open), then its old one back (so Dataverse, untouched, equals the source).
vendor=$(psql_q "SELECT vendoraccountnumber FROM fno.vendorsv2 WHERE dataareaid = 'usmf' ORDER BY 1 LIMIT 1")
vwhere="dataareaid = 'usmf' AND vendoraccountnumber = '$vendor'"
hold=$(psql_q "SELECT onholdstatus FROM fno.vendorsv2 WHERE $vwhere")
lsn=$(e2e_commit_lsn "UPDATE fno.vendorsv2 SET onholdstatus = 6 WHERE $vwhere")
e2e_wait_checkpoint "$lsn" || die "the poison change was not checkpointed"
lsn=$(e2e_commit_lsn "UPDATE fno.vendorsv2 SET onholdstatus = $hold WHERE $vwhere")
e2e_wait_checkpoint "$lsn" || die "the poison change was not checkpointed"
errors() { psql_q "SELECT string_agg(id || ' ' || status || ' ' || coalesce(class, '-'), ', ' ORDER BY id) FROM dwasync.error"; }
error=$(errors)
check_contains "an open mapping error before the resync" "open mapping" "$error"
kill -TERM "$daemon"; wait "$daemon"; daemon=

# workload N LE...: N single-row updates raising customers' credit limits in those legal
# entities, each its own transaction.
workload() {
    local i n les
    les=$(printf "'%s'," "${@:2}")
    for i in $(seq 1 "$1"); do
        n=$(( (i * 37) % 100 + 1 ))
        psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
                 WHERE customeraccount = 'C$(printf %07d "$n")' AND dataareaid IN (${les%,})" >/dev/null || return 1
    done
}
# drift_delete FILTER: behind dwasync's back, deletes the contacts (persons: no orders hang
# from them) whose jq FILTER holds.
drift_delete() {
    local id
    for id in $(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" | jq -r ".value[] | select($1) | .contactid"); do
        dvemu_api DELETE "contacts($id)" >/dev/null || die "deleting contacts($id) in dvemu failed"
    done
}
contacts_where() { curl -sf "$DVEMU_URL/_dvemu/tables/contacts" | jq "[.value[] | select($1)] | length"; }

# --- Bad predicates are refused before anything is queued. ------------------------------
for bad in "true) OR (true" "creditlimit > 0; DROP TABLE fno.customersv3" "true -- x" \
           "\$\$x\$\$ = 'x'" "nosuchcolumn = 1"; do
    out=$(dw job resync fno_sample --where "$bad" 2>&1)
    check_eq "--where \"$bad\" is refused" 1 "$?"
done
check_contains "the refusal says why" "refused: it contains ';'" \
    "$(dw job resync fno_sample --where "creditlimit > 0; DROP TABLE fno.customersv3" 2>&1)"
check_contains "the server's word on an unknown column" "nosuchcolumn" "$out"
check_eq "nothing was queued" 0 "$(psql_q "SELECT count(*) FROM dwasync.copy_request WHERE kind <> 'initial'")"
out=$(dw job resync fno_sample --legal-entity frrt 2>&1)
check_eq "a legal entity the job does not sync is refused" 1 "$?"
check_contains "naming it" 'does not sync legal entity' "$out"

# --- Resync of the customers' maps, drift repaired, kill -9 in the middle. ---------------
drift_delete '.msdyn_contactpersonid | test("^C00000[1-5]")'
dvemu_api PATCH "accounts($(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | jq -r '.value[0].accountid'))" \
    '{"name": "changed behind dwasync'"'"'s back"}' >/dev/null || die "changing an account failed"
check_eq "drift: Dataverse differs from the source" 1 "$([ "$(e2e_mismatches)" -gt 0 ] && echo 1)"
out=$(dw job resync fno_sample --map customers_organizations --map customers_persons)
check_eq "job resync --map queues the maps' table" 0 $?
orgs=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE dataareaid IN ('usmf', 'demf')")
check_contains "with the rows it will copy" "resync: fno.customersv3, $orgs rows" "$out"
DWASYNC_FAILPOINTS=$FP:crash@3 e2e_start_daemon
workload 150 usmf demf & wl=$!
wait "$daemon"
check_eq "the daemon died in the middle of the resync (SIGKILL)" 137 $?
daemon=
status=$(dw status --json)
check_eq "status shows the resync's progress" "resync 1 50 $orgs" \
    "$(jq -r '.jobs[0].copy | "\(.kind) \(.tables_left) \(.rows_copied) \(.rows_total)"' <<<"$status")"
at=$(psql_q "SELECT started_at + interval '10 s' FROM dwasync.copy_request WHERE kind = 'resync'")
check_eq "rate and ETA at a given instant (50 rows in 10 s; $orgs to copy)" \
    "5 $(( (orgs - 50) / 5 ))" \
    "$(dw status --json --at "$at" | jq -r '.jobs[0].copy | "\(.rows_per_second) \(.eta_seconds)"')"
check_contains "the table form says so" "copying (resync): 1 table(s) left, 50 of $orgs rows, 5 rows/s" \
    "$(dw status --at "$at")"
e2e_start_daemon
wait "$wl"; check_eq "the workload ran" 0 $?
check_status "the resync finished" 0 e2e_wait_resynced
check_contains "it resumed from its last chunk" "copy resumes: 1 table(s) left, 1 in progress" \
    "$(cat "$DW_E2E_DIR/daemon.log")"
check_eq "the resync read the maps' rows (the chunk redone after the crash counted once)" \
    "$orgs" "$(psql_q "SELECT rows_copied FROM dwasync.copy_request WHERE kind = 'resync'")"
check_eq "Dataverse equals the source again" 0 "$(e2e_mismatches)"
check_eq "the error rows are kept, untouched" "$error" "$(errors)"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no credit limit went back more than once (one crash; got $rewinds)" 1 "$([ "$rewinds" -le 1 ] && echo 1)"

# --- Resync of one legal entity under the workload, kill -9 in the middle. ---------------
kill -TERM "$daemon"; wait "$daemon"; daemon=
drift_delete '.msdyn_contactpersonid | test("^C00000[6-9]")'
gone_usmf=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE customeraccount ~ '^C00000[6-9]'
                     AND partytype = 'Person' AND dataareaid = 'usmf'")
demf=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE dataareaid = 'demf'")
dw job resync fno_sample --legal-entity demf >"$DW_E2E_DIR/resync.out" ||
    die "job resync --legal-entity failed"
check_eq "every demf customer and none other is to be read" "$demf" \
    "$(psql_q "SELECT rows_total FROM dwasync.copy_request WHERE kind = 'resync' AND NOT done AND source_table = 'customersv3'")"
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
DWASYNC_FAILPOINTS=$FP:crash@4 e2e_start_daemon
workload 150 demf & wl=$!
wait "$daemon"
check_eq "the daemon died in the middle of the legal entity's resync" 137 $?
e2e_start_daemon
wait "$wl"; check_eq "the workload ran" 0 $?
check_status "the legal entity's resync finished" 0 e2e_wait_resynced
port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log" | tail -1)
gauge() { curl -sf "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m"{" {print $2}'; }
for i in $(seq 1 40); do [ "$(gauge dwasync_copy_tables_pending)" = 0 ] && break; sleep 0.25; done
check_eq "/metrics: no table left to copy, no rows under way" "0 0 0" \
    "$(gauge dwasync_copy_tables_pending) $(gauge dwasync_copy_rows_copied) $(gauge dwasync_copy_rows_planned)"
check_eq "its customers' copy read the demf rows, none other" "$demf $demf" \
    "$(psql_q "SELECT rows_total || ' ' || rows_copied FROM dwasync.copy_request
                WHERE kind = 'resync' AND source_table = 'customersv3' ORDER BY id DESC LIMIT 1")"
usmf_id=$(curl -sf "$DVEMU_URL/_dvemu/tables/cdm_companies" | jq -r '.value[] | select(.cdm_companycode == "usmf") | .cdm_companyid')
check_eq "usmf's deleted contacts stay deleted: usmf was not copied" "$gone_usmf" \
    "$(( $(psql_q "SELECT count(*) FROM fno.customersv3 WHERE partytype = 'Person' AND dataareaid = 'usmf'") -
        $(contacts_where "._msdyn_company_value == \"$usmf_id\"") ))"
check_eq "demf's deleted contacts are back: only usmf's are missing" "$gone_usmf" "$(e2e_mismatches)"
check_eq "the slot (job start's) was never dropped or created again" 0 "$(grep -c 'created replication slot' "$DW_E2E_DIR/daemon.log")"
check_eq "the same slot" "$slot" "$(psql_q "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")"
check_eq "the error rows are still kept" "$error" "$(errors)"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no credit limit went back more than twice (two crashes; got $rewinds)" 1 "$([ "$rewinds" -le 2 ] && echo 1)"

# --- A predicate: counted by the server, copied under the map filters. --------------------
out=$(dw job resync fno_sample --map customers_persons --where "creditlimit >= 0 AND customeraccount < 'C0000050'")
check_eq "a good --where is queued" 0 $?
check_eq "its rows counted by the server" \
    "$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE partytype = 'Person' AND dataareaid IN ('usmf', 'demf')
                AND creditlimit >= 0 AND customeraccount < 'C0000050'")" \
    "$(psql_q "SELECT rows_total FROM dwasync.copy_request ORDER BY id DESC LIMIT 1")"
check_status "it is copied" 0 e2e_wait_resynced
kill -TERM "$daemon"; wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
finish

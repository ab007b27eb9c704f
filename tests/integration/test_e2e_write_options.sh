#!/usr/bin/env bash
# Per-map write options end to end: the sample job with the vendors map declaring
# "options": {"write": {...}} (bypass custom sync and async logic, suppress duplicate
# detection, do not trigger flows, tag "dwasync-load"). Bad values are refused at import with
# their JSON path; `check` reports the missing prvBypassCustomBusinessLogic privilege (DV008)
# and is satisfied once it is granted; and every write request of the vendors map that
# reaches dvemu (its bulk UpsertMultiple requests and its $batch parts, a lone delete
# included) carries exactly those headers and the tag, while the other maps' writes carry
# none. dvemu's request log (GET /_dvemu/requests) is the oracle.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"

write_map() { # write_map JSON OUT: the sample map with options.write = JSON on the vendors map
    python3 - "$DW_SAMPLE_DIR/fno-sample.map.json" "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for g in d["groups"]:
    for m in g["maps"]:
        if m["name"] == "vendors":
            m.setdefault("options", {})["write"] = json.loads(sys.argv[2])
json.dump(d, open(sys.argv[3], "w"), indent=1)
PY
}

# --- import refuses bad values, naming each ----------------------------------------------------
write_map '{"bypass_logic": ["CustomSync", "Plugins"], "suppress_flows": "yes", "tag": "a b"}' \
    "$DW_E2E_DIR/bad.map.json"
out=$(dw map import "$DW_E2E_DIR/bad.map.json" 2>&1)
check_eq "a map file with bad write options is refused" 1 $?
check_contains "an unknown bypass value is named with its path" \
    '.options.write.bypass_logic: item 1 must be "CustomSync" or "CustomAsync"' "$out"
check_contains "a flag that is not a boolean" '.options.write: "suppress_flows" must be true or false' "$out"
check_contains "a tag that is not a safe token" '.options.write: "tag" must be 1 to 64 letters' "$out"
check_eq "nothing of it was imported" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.table_map WHERE options ? 'write'")"

opts='{"bypass_logic": ["CustomSync", "CustomAsync"], "suppress_duplicate_detection": true,
       "suppress_flows": true, "tag": "dwasync-load"}'
write_map "$opts" "$DW_E2E_DIR/wopts.map.json"
check_status "the map file with write options is imported" 0 dw map import "$DW_E2E_DIR/wopts.map.json"
dw map export fno_sample "$DW_E2E_DIR/export1.json" >/dev/null
dw map import "$DW_E2E_DIR/export1.json" >/dev/null
dw map export fno_sample "$DW_E2E_DIR/export2.json" >/dev/null
check_status "export -> import -> export is a fixed point" 0 \
    cmp "$DW_E2E_DIR/export1.json" "$DW_E2E_DIR/export2.json"
check_contains "export keeps the options" '"tag": "dwasync-load"' "$(cat "$DW_E2E_DIR/export1.json")"

# --- check: the privilege the bypass needs -------------------------------------------------------
dvemu_admin POST privileges '{"revoke": [{"privilege": "bypasscustombusinesslogic"}]}' >/dev/null
out=$(dw check --job fno_sample 2>&1)
check_contains "check reports the missing privilege" \
    'error   DV008   job "fno_sample": map "vendors" bypasses custom logic, but the application user lacks prvBypassCustomBusinessLogic' \
    "$out"
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
out=$(dw --verbose check --job fno_sample 2>&1)
check_contains "with the privilege granted, check says so" \
    'ok      DV008   job "fno_sample": the application user holds prvBypassCustomBusinessLogic' "$out"

# --- the headers on every request of the map, and on no other -------------------------------------
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced || die "the sample was not applied"
lsn=$(e2e_commit_lsn "INSERT INTO fno.vendorsv2 (dataareaid, vendoraccountnumber,
        vendororganizationname, vendorgroupid, creditlimit, onholdstatus, currencycode)
    SELECT 'usmf', 'WO' || i, 'Vendor WO' || i, '10', 0, 0, 'USD' FROM generate_series(1, 30) i")
e2e_wait_checkpoint "$lsn" 120 || die "the vendors were not applied"
lsn=$(e2e_commit_lsn "DELETE FROM fno.vendorsv2 WHERE vendoraccountnumber = 'WO7'")
e2e_wait_checkpoint "$lsn" 120 || die "the delete was not applied"

dvemu_admin GET requests >"$DW_E2E_DIR/requests.json"
writes() { # writes JQ_PATH_TEST: write requests (not GETs) whose path passes the test
    jq -c "[.value[] | select(.method != \"GET\" and (.path | $1))]" "$DW_E2E_DIR/requests.json"
}
expected='{"MSCRM.BypassBusinessLogicExecution":"CustomSync,CustomAsync","MSCRM.SuppressDuplicateDetection":"true","MSCRM.SuppressCallbackRegistrationExpanderJob":"true","tag":"dwasync-load"}'
vendors=$(writes 'startswith("msdyn_vendors")')
check_eq "the log dropped nothing" 0 "$(jq .dropped "$DW_E2E_DIR/requests.json")"
check_eq "vendors went in bulk requests" true \
    "$(jq 'any(.[]; .path | endswith("UpsertMultiple"))' <<<"$vendors")"
check_eq "and the delete as a \$batch part" true \
    "$(jq 'any(.[]; .method == "DELETE" and .batch)' <<<"$vendors")"
check_eq "every vendors write carried the options and the tag" true \
    "$(jq --argjson e "$expected" 'length > 0 and all(.[]; .options == $e)' <<<"$vendors")"
check_eq "each was answered 2xx" true "$(jq 'all(.[]; .status < 300)' <<<"$vendors")"
others=$(writes 'startswith("msdyn_vendors") | not')
check_eq "the other maps wrote too" true "$(jq 'length > 0' <<<"$others")"
check_eq "no other map's write carried an option" 0 \
    "$(jq '[.[] | select(.options != {})] | length' <<<"$others")"
check_eq "Dataverse equals the staging tables" 0 "$(e2e_mismatches)"

kill -TERM $daemon
wait $daemon
check_eq "daemon stops cleanly" 0 $?
finish

#!/usr/bin/env bash
# End to end through the real pipeline, mapping engine, sink and dvemu: a change that cannot
# be mapped (an on-hold status missing from the value map) lands in the error table, the
# next change to the same customer waits behind it, other customers keep flowing; the map
# is fixed, `dwasync errors replay` (no daemon running) applies both in commit order, a
# second replay writes nothing, and after a restart the key flows again.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=warn e2e_setup
dw job start fno_sample >/dev/null 2>&1 || die "job start failed"
e2e_load_sample
run() { timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up >/dev/null 2>&1; }
run || die "the first run failed"

acct() { # acct DATAAREA ACCOUNT FIELD: a field of the account as dvemu holds it
    dv_load accounts
    psql_q "SELECT a.doc ->> '$3' FROM dv.accounts a
            WHERE a.doc ->> 'accountnumber' = '$2'
              AND a.doc ->> '_msdyn_company_value' = (SELECT c.doc ->> 'cdm_companyid' FROM dv.cdm_companies c
                                                       WHERE c.doc ->> 'cdm_companycode' = '$1')"
}
dv_load cdm_companies
errs() { psql_q "SELECT count(*) FROM dwasync.error WHERE map_name = 'customers_organizations' $1"; }
check_eq "the sample flows without account errors" 0 "$(errs "")"
check_eq "account C0000001 arrived" "Customer 1 USMF" "$(acct usmf C0000001 name)"

# A poison change, then a later change to the same customer, then another customer.
psql_q "UPDATE fno.customersv3 SET onholdstatus = 9 WHERE dataareaid = 'usmf' AND customeraccount = 'C0000001'"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Renamed 1' WHERE dataareaid = 'usmf' AND customeraccount = 'C0000001'"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Renamed 2' WHERE dataareaid = 'usmf' AND customeraccount = 'C0000002'"
run || die "the second run failed"
check_eq "the poison row is open, its follower waits" "open:mapping waiting:" \
    "$(psql_q "SELECT string_agg(status || ':' || coalesce(class, ''), ' ' ORDER BY commit_lsn, position)
               FROM dwasync.error WHERE map_name = 'customers_organizations'")"
check_contains "the message names the column and value" "9" \
    "$(psql_q "SELECT message FROM dwasync.error WHERE map_name = 'customers_organizations' AND status = 'open'")"
check_eq "the blocked customer was not touched" "Customer 1 USMF" "$(acct usmf C0000001 name)"
check_eq "another customer kept flowing" "Renamed 2" "$(acct usmf C0000002 name)"
check_eq "the same customer in another company kept flowing" "806380000" "$(acct demf C0000001 msdyn_onholdstatus)"

# Replaying before the fix fails again and changes nothing in Dataverse.
# --verbose: this test's config logs warnings only, and progress goes to the log when
# standard error is not a terminal.
out=$(dw --verbose errors replay --all --job fno_sample --table customers_organizations 2>&1)
check_contains "a replay before the fix queues the key" "queued 2 rows for replay" "$out"
check_contains "and fails again" "0 resolved, 1 failed again" "$out"
check_contains "one warning for the rows of a batch that failed again, naming the first" \
    "level=warn msg=\"replay: 1 error row failed again and stays open; error $(psql_q "SELECT id
        FROM dwasync.error WHERE map_name = 'customers_organizations' AND status = 'open'"): " "$out"
check_eq "each row that failed again is in the log at debug" 1 \
    "$(grep -c 'level=debug msg="replay of error [0-9]* failed again' <<<"$out")"
check_contains "a bulk replay reports its progress" "replay: 1/2 rows" "$out"
check_eq "attempts counted" "2" "$(psql_q "SELECT attempts FROM dwasync.error WHERE map_name = 'customers_organizations' AND status = 'open'")"

# A head whose change comes after the job's confirmed position (a crash between the Dataverse
# writes and the checkpoint leaves it so) is not replayed from here: the command says so.
job_id=$(psql_q "SELECT id FROM dwasync.job WHERE name = 'fno_sample'")
confirmed=$(psql_q "SELECT confirmed_lsn FROM dwasync.checkpoint WHERE job_id = $job_id")
psql_q "UPDATE dwasync.checkpoint SET confirmed_lsn = '0/1' WHERE job_id = $job_id"
out=$(dw errors replay --all --job fno_sample --table customers_organizations 2>&1)
check_contains "a head past the confirmed position is left queued" \
    "replayed 0 rows: 0 resolved, 0 failed again" "$out"
check_contains "and the command says why and who replays it" \
    "1 row stays queued: its change comes after the position the job has confirmed" "$out"
check_eq "attempts unchanged" "2" "$(psql_q "SELECT attempts FROM dwasync.error WHERE map_name = 'customers_organizations' AND status = 'replaying'")"
psql_q "UPDATE dwasync.checkpoint SET confirmed_lsn = '$confirmed' WHERE job_id = $job_id"

# Fix the map (stop the job first, as maps of a running job are frozen) and replay.
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
psql_q "UPDATE dwasync.table_map m SET column_mappings = (
          SELECT jsonb_agg(CASE WHEN c ->> 'source' = 'ONHOLDSTATUS'
                                THEN jsonb_set(c, '{value_map,9}', '806380005') ELSE c END)
            FROM jsonb_array_elements(m.column_mappings) c)
        WHERE m.name = 'customers_organizations'"
before=$(acct usmf C0000002 versionnumber)
out=$(dw --verbose errors replay --all --job fno_sample --table customers_organizations 2>&1)
check_contains "the fixed replay applies head and follower" "replayed 2 rows: 2 resolved, 0 failed again" "$out"
check_eq "each replayed row's outcome is logged at debug" 2 \
    "$(grep -c 'level=debug msg="replayed error [0-9]*: applied' <<<"$out")"
check_eq "and counted in a line at info for each batch resolved" 2 \
    "$(sed -n 's/.*level=info msg="replayed \([0-9]*\) error rows\{0,1\}: applied and resolved.*/\1/p' \
        <<<"$out" | awk '{ n += $1 } END { print n + 0 }')"
check_eq "the final state has the follower's name (applied after the head)" "Renamed 1" "$(acct usmf C0000001 name)"
check_eq "and the head's on-hold status through the fixed map" "806380005" "$(acct usmf C0000001 msdyn_onholdstatus)"
check_eq "both rows resolved" "resolved resolved" \
    "$(psql_q "SELECT string_agg(status, ' ' ORDER BY commit_lsn) FROM dwasync.error WHERE map_name = 'customers_organizations'")"
check_eq "other rows were not written" "$before" "$(acct usmf C0000002 versionnumber)"

# Replaying again is replaying once: nothing is queued, nothing is written.
version=$(acct usmf C0000001 versionnumber)
head=$(psql_q "SELECT min(id) FROM dwasync.error WHERE map_name = 'customers_organizations'")
out=$(dw errors replay "$head" 2>&1)
check_contains "a second replay queues nothing" "queued 0 rows for replay" "$out"
check_eq "and writes nothing" "$version" "$(acct usmf C0000001 versionnumber)"

# After a restart the key is free again: a new change flows straight through.
dw job start fno_sample >/dev/null 2>&1 || die "job restart failed"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Renamed again' WHERE dataareaid = 'usmf' AND customeraccount = 'C0000001'"
run || die "the third run failed"
check_eq "the unblocked key flows after a restart" "Renamed again" "$(acct usmf C0000001 name)"
check_eq "no new error rows for it" 2 "$(errs "")"

finish

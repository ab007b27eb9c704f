#!/usr/bin/env bash
# High availability during an online resync (`dwasync job resync`, issue 19). After the
# initial sync, Dataverse drifts behind dwasync's back (contacts deleted in dvemu) and the
# customers' maps are queued for a resync. Runner A takes the lock and copies in chunks of 25
# rows; runner B waits as a standby. A dies inside the resync (a failpoint, as kill -9)
# after a chunk was applied and before its progress was recorded. While B is frozen, the
# source changes: persons A already copied are deleted, others leave their map's filter, and
# a workload raises credit limits. B takes over, resumes the resync at its last chunk on the
# same slot (none created, none dropped) and finishes it: Dataverse equals the oracle, with
# the drift repaired, no ghost rows, no error rows, and no credit limit gone back more than
# once (one crash).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 25/' "$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/sync.log" "$DW_E2E_DIR/a.log" "$DW_E2E_DIR/b.log"

dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_runner sync; daemon=$!
on_exit '[ -n "$daemon" ] && kill -9 $daemon 2>/dev/null'
check_status "the initial sync finished" 0 e2e_wait_synced
slot=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")
kill -TERM "$daemon"; wait "$daemon"; daemon=

# Drift: persons deleted in Dataverse behind dwasync's back.
for id in $(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" |
            jq -r '.value[] | select(.msdyn_contactpersonid | test("^C00000[1-5]")) | .contactid'); do
    dvemu_api DELETE "contacts($id)" >/dev/null || die "deleting contacts($id) in dvemu failed"
done
check_eq "drift: Dataverse differs from the source" 1 "$([ "$(e2e_mismatches)" -gt 0 ] && echo 1)"

# A dies after its third chunk of the resync was applied, before it was recorded. The resync
# is queued only once B waits as a standby, so A cannot finish (or die) before B is there.
e2e_runner a DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash@3; a=$!
on_exit "kill -9 $a 2>/dev/null"
check_status "A takes the lock" 0 e2e_wait_log a "acquired the job lock: now active"
e2e_runner b; b=$!
on_exit "kill -9 $b 2>/dev/null"
check_status "B waits as a standby" 0 e2e_wait_log b "waiting as a standby"
kill -STOP "$b"
dw job resync fno_sample --map customers_organizations --map customers_persons >/dev/null ||
    die "job resync failed"
total=$(psql_q "SELECT rows_total FROM dwasync.copy_request WHERE kind = 'resync' AND NOT done")
wait "$a"
check_eq "A died at the failpoint inside the resync (SIGKILL)" 137 $?
check_eq "the resync is recorded as under way, two chunks done" "false 50" \
    "$(psql_q "SELECT done || ' ' || rows_copied FROM dwasync.copy_request WHERE kind = 'resync'")"

# While B is frozen: persons A re-copied (in the two recorded chunks: the first 50 rows in
# key order, all demf) are deleted or become organizations, and credit limits rise
# (single-row transactions, applied once B streams).
persons=$(psql_q "SELECT string_agg(customeraccount, ',' ORDER BY customeraccount) FROM (
                    SELECT customeraccount FROM (SELECT * FROM fno.customersv3
                                                  ORDER BY dataareaid, customeraccount LIMIT 50) c
                     WHERE partytype = 'Person' AND dataareaid = 'demf'
                     ORDER BY customeraccount LIMIT 6) p")
check_eq "six persons A re-copied" 6 "$(tr , '\n' <<<"$persons" | grep -c .)"
gone=$(cut -d, -f1-3 <<<"$persons") moved=$(cut -d, -f4-6 <<<"$persons")
psql_q "DELETE FROM fno.customersv3
         WHERE dataareaid = 'demf' AND customeraccount = ANY (string_to_array('$gone', ','));
        UPDATE fno.customersv3 SET partytype = 'Organization', organizationname = 'Moved ' || customeraccount
         WHERE dataareaid = 'demf' AND customeraccount = ANY (string_to_array('$moved', ','))" >/dev/null ||
    die "changing the source failed"
for i in $(seq 1 60); do
    psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
             WHERE customeraccount = 'C$(printf %07d $(( (i * 37) % 100 + 1 )))'" >/dev/null ||
        die "the workload failed"
done

kill -CONT "$b"
daemon=$b
check_status "B takes over" 0 e2e_wait_log b "streaming changes to Dataverse"
check_status "B finished the resync" 0 e2e_wait_resynced
check_contains "B resumed the resync from its last chunk" "copy resumes: 1 table(s) left, 1 in progress" \
    "$(cat "$DW_E2E_DIR/b.log")"
check_eq "the rows were read once (the chunk redone after the crash counted once)" \
    "$total" "$(psql_q "SELECT rows_copied FROM dwasync.copy_request WHERE kind = 'resync'")"
check_eq "no slot was created by B" 0 "$(grep -c 'created replication slot' "$DW_E2E_DIR/b.log")"
now=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")
check_eq "one slot, the same one" "${slot%% *}" "${now%% *}"
check_eq "Dataverse equals the source: drift repaired, no ghost rows" 0 "$(e2e_mismatches)"
demf_id=$(curl -sf "$DVEMU_URL/_dvemu/tables/cdm_companies" | jq -r '.value[] | select(.cdm_companycode == "demf") | .cdm_companyid')
check_eq "no deleted or moved person is left" 0 "$(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" |
    jq --arg g "$persons" --arg le "$demf_id" '[.value[] | select(._msdyn_company_value == $le)
        | select(.msdyn_contactpersonid as $a | $g | split(",") | index($a))] | length')"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no credit limit went back more than once (one crash; got $rewinds)" 1 \
    "$([ "$rewinds" -le 1 ] && echo 1)"
kill -TERM "$b"; wait "$b"
check_eq "B stops cleanly" 0 $?
daemon=
finish

#!/usr/bin/env bash
# High availability during and right after an initial sync. Runner A takes the lock of the
# stopped job, runner B waits as a standby, then "job start --initial-sync" runs: A reads the
# job again and syncs in chunks of 25 rows. A dies inside the customers
# table (a failpoint, as kill -9) after a chunk was applied and before its progress was
# recorded; while B is frozen, persons A already copied are deleted or move out of their
# filter. B takes over, resumes the sync at the next chunk on the same slot (none created,
# none dropped) and finishes it. Then runner C waits as a standby and B is killed with
# kill -9 right after it recorded the sync done: C streams on and never copies. Dataverse
# ends equal to the oracle with no ghost rows and no error rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 25/' "$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/a.log" "$DW_E2E_DIR/b.log" "$DW_E2E_DIR/c.log"

# Chunks: legal entities, currencies, payment terms, customer groups, then customers (200
# rows, 8 chunks): the 7th recorded chunk is the customers' third.
e2e_runner a DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash@7; a=$!
on_exit "kill -9 $a 2>/dev/null"
check_status "A takes the lock" 0 e2e_wait_log a "acquired the job lock"
e2e_runner b; b=$!
on_exit "kill -9 $b 2>/dev/null"
check_status "B waits as a standby" 0 e2e_wait_log b "waiting as a standby"
kill -STOP "$b"
# The job starts only now, so A cannot finish (or die) before B is there.
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
wait "$a"
check_eq "A died at the failpoint inside the sync (SIGKILL)" 137 $?
check_contains "the failpoint fired" 'failpoint "initial_sync_chunk_applied_before_progress" fired' \
    "$(cat "$DW_E2E_DIR/a.log")"
slot=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")
check_eq "the sync is recorded as running" running \
    "$(psql_q "SELECT initial_sync FROM dwasync.job WHERE name = 'fno_sample'")"
persons=$(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" | jq -r '[.value[].msdyn_contactpersonid] | unique | .[0:6] | join(",")')
check_eq "A copied persons before it died" 6 "$(tr , '\n' <<<"$persons" | grep -c .)"
gone=$(cut -d, -f1-3 <<<"$persons") moved=$(cut -d, -f4-6 <<<"$persons")
psql_q "DELETE FROM fno.customersv3 WHERE customeraccount = ANY (string_to_array('$gone', ','));
        UPDATE fno.customersv3 SET partytype = 'Organization', organizationname = 'Moved ' || customeraccount
          WHERE customeraccount = ANY (string_to_array('$moved', ','));
        UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
          WHERE customeraccount IN (SELECT customeraccount FROM fno.customersv3
                                     ORDER BY dataareaid, customeraccount LIMIT 30)" >/dev/null ||
    die "changing the source failed"
kill -CONT "$b"
check_status "B takes over" 0 e2e_wait_log b "streaming changes to Dataverse"
daemon=$b
check_status "B finished the sync" 0 e2e_wait_synced
check_contains "B resumed the sync, not restarted it" "initial sync resumes" "$(cat "$DW_E2E_DIR/b.log")"
check_eq "no slot was created by B" 0 "$(grep -c 'created replication slot' "$DW_E2E_DIR/b.log")"
check_eq "the same slot" "${slot%% *}" "$(psql_q "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")"
check_eq "Dataverse equals the source after the failover: no ghost rows" 0 "$(e2e_mismatches)"

# Right after the sync: C is a standby, B dies, C streams on from the same slot.
e2e_runner c; c=$!
on_exit "kill -9 $c 2>/dev/null"
check_status "C waits as a standby" 0 e2e_wait_log c "waiting as a standby"
{ kill -9 "$b"; wait "$b"; } 2>/dev/null
check_status "C takes over" 0 e2e_wait_log c "streaming changes to Dataverse"
daemon=$c
psql_q "DELETE FROM fno.customersv3 WHERE (dataareaid, customeraccount) =
          (SELECT dataareaid, customeraccount FROM fno.customersv3 WHERE partytype = 'Person'
            ORDER BY dataareaid DESC, customeraccount DESC LIMIT 1)" >/dev/null
check_status "everything applied by C" 0 e2e_wait_applied
check_eq "C did not copy" 0 "$(grep -c 'initial sync' "$DW_E2E_DIR/c.log")"
now=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")
check_eq "one slot, the same one" "${slot%% *}" "${now%% *}"
check_eq "the slot's restart position never went back" 1 "$(psql_q "SELECT ('${now#* }'::pg_lsn >= '${slot#* }'::pg_lsn)::int")"
check_eq "Dataverse equals the source: no ghost rows" 0 "$(e2e_mismatches)"
check_eq "no deleted or moved person is left" 0 "$(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" |
    jq --arg g "$persons" '[.value[] | select(.msdyn_contactpersonid as $a | $g | split(",") | index($a))] | length')"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
finish

#!/usr/bin/env bash
# High availability around an initial sync: two `dwasync run` started together right after
# `job start --initial-sync`. The first does the sync; the standby must read the job's state
# after it takes the lock, not before: when the active runner dies after the sync, the
# standby streams on from the same slot and never copies again (a second copy would drop
# the slot, lose what was committed meanwhile and leave ghost rows). Deletes and a row
# moved out of the legal-entity filter, committed while no runner is active, must reach
# Dataverse: it ends equal to the oracle with no ghost rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
show_log_on_failure "$DW_E2E_DIR/a.log" "$DW_E2E_DIR/b.log"
e2e_runner a; a=$!
on_exit "kill -9 $a"
e2e_runner b; b=$!
on_exit "kill -9 $b"
# Whichever got the lock first is "first"; the other waits as a standby.
first= i=0
while [ -z "$first" ] && [ $i -lt 1200 ]; do
    grep -qsF "acquired the job lock" "$DW_E2E_DIR/a.log" && first=a
    grep -qsF "acquired the job lock" "$DW_E2E_DIR/b.log" && first=b
    [ -n "$first" ] || sleep 0.1
    i=$((i + 1))
done
[ $first = a ] && { active=$a standby=$b sname=b; } || { active=$b standby=$a sname=a; }
e2e_wait_log "$sname" "waiting as a standby" && pass "second runner is a standby" ||
    fail "second runner is a standby"
daemon=$active
check_status "initial sync applied by the first runner" 0 e2e_wait_synced
slot_before=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")

# Freeze the standby, then change the source while nobody applies, then kill the active
# runner: the standby wakes to a lock that is free and a job whose sync is done.
kill -STOP "$standby"
psql_q "DELETE FROM fno.salesorderlines WHERE salesordernumber IN
          (SELECT salesordernumber FROM fno.salesorderheaders ORDER BY 1 LIMIT 3);
        DELETE FROM fno.salesorderheaders WHERE salesordernumber IN
          (SELECT salesordernumber FROM fno.salesorderheaders ORDER BY 1 LIMIT 3);
        UPDATE fno.customersv3 SET partytype = 'Person' WHERE customeraccount IN
          (SELECT customeraccount FROM fno.customersv3 WHERE partytype = 'Organization'
            ORDER BY customeraccount LIMIT 2)" >/dev/null
{ kill -9 "$active"; wait "$active"; } 2>/dev/null
kill -CONT "$standby"
e2e_wait_log "$sname" "streaming changes to Dataverse" && pass "standby took over" ||
    fail "standby took over"
daemon=$standby
check_status "everything applied by the new active runner" 0 e2e_wait_applied
check_eq "the standby did not copy again" 0 "$(grep -c 'initial sync' "$DW_E2E_DIR/$sname.log")"
slot_now=$(psql_q "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots")
check_eq "one slot, the same one (never dropped and recreated)" "${slot_before%% *}" "${slot_now%% *}"
check_eq "the slot's restart position never went back" 1 "$(psql_q "SELECT ('${slot_now#* }'::pg_lsn >= '${slot_before#* }'::pg_lsn)::int")"
check_eq "Dataverse equals the source: no ghost rows" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no account went back (one crash, after a checkpoint)" 1 "$([ "$rewinds" -le 1 ] && echo 1)"
finish

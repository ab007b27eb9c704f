#!/usr/bin/env bash
# An initial sync into a populated Dataverse while the source keeps changing (issue 14): the
# sample with 300 more customers is synced once; then the job is started again with
# --initial-sync (a new slot, as after `job drop`), and the copy, in chunks of 20 rows, runs
# interleaved with a workload that commits all the way through it: credit limits raised,
# customers with orders added, orders deleted with their lines (rows Dataverse holds from the
# first sync, in tables the copy has not reached yet). The daemon is killed once mid-copy
# (after a chunk was applied, before its progress was recorded) and restarted. Then, with
# order lines and persons deleted in dvemu behind dwasync's back, `job resync` of every map
# runs under the same workload and is killed mid-copy too. Whatever the interleaving:
# Dataverse ends equal to the source, no error rows, and no account's history goes back more
# than once per crash.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=warn e2e_setup
e2e_load_copy_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the first sync is applied" 0 e2e_wait_synced
kill -TERM "$daemon"
wait "$daemon"
daemon=

dw job stop fno_sample >/dev/null 2>&1
psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "the second job start failed"
fault_workload_start
check_status "the workload commits" 0 fault_workload_wait_progress
# The 30th recorded chunk is in the customers' table, well before the orders'.
DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash@30 e2e_start_daemon
wait "$daemon"
check_eq "the daemon died mid-copy (SIGKILL)" 137 $?
daemon=
check_eq "the sync is still running" running \
    "$(psql_q "SELECT initial_sync FROM dwasync.job WHERE name = 'fno_sample'")"
check_status "the workload goes on" 0 fault_workload_wait_progress
e2e_start_daemon
check_status "the second sync is applied" 0 e2e_wait_synced
check_status "the workload goes on after the sync" 0 fault_workload_wait_progress
# Then a resync of every map under the same workload, with Dataverse drifted behind
# dwasync's back (order lines and persons deleted in dvemu), killed mid-copy as well.
kill -TERM "$daemon"
wait "$daemon"
daemon=
for set in salesorderdetails:salesorderdetailid contacts:contactid; do
    for id in $(curl -sf "$DVEMU_URL/_dvemu/tables/${set%:*}" | jq -r ".value[0:5][].${set#*:}"); do
        dvemu_api DELETE "${set%:*}($id)" >/dev/null || die "cannot delete ${set%:*}($id) in dvemu"
    done
done
dw job resync fno_sample >/dev/null || die "job resync failed"
DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash@30 e2e_start_daemon
wait "$daemon"
check_eq "the daemon died mid-resync (SIGKILL)" 137 $?
daemon=
e2e_start_daemon
check_status "the resync is applied" 0 e2e_wait_resynced
check_status "the workload goes on after the resync" 0 fault_workload_wait_progress
fault_workload_stop
check_eq "every workload transaction committed" 0 "$workload_rc"
log "workload: $(cat "$DW_E2E_DIR/workload.tx") transactions"
check_status "the workload is applied" 0 e2e_wait_applied
fault_final_checks 2
finish

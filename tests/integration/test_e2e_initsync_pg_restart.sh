#!/usr/bin/env bash
# Immediate Postgres restarts (a crash of the server) in the middle of an initial sync, while
# a workload commits: the sample with 300 more customers is copied in chunks of 20 rows into
# a Dataverse that costs 2 ms a row (so the copy outlasts several restarts), and the server
# is restarted up to five times while the copy runs. The daemon started once reconnects its
# stream, its copy session, its control sessions and its job lock each time and resumes the
# copy on the same slot; at the end Dataverse equals the source, no error rows exist, and no
# account's history goes back more than once per restart.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup --cost-row-ms 2 --cost-bulk-row-ms 2
e2e_load_sample
psql_q "SELECT fno.sample_generate(300, 5001)" >/dev/null || die "cannot generate customers"
show_log_on_failure "$DW_E2E_DIR/daemon.log" "$DW_PG_DIR/server.log"
sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 20/' "$DW_E2E_CONF"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
fault_workload_start
e2e_start_daemon
first=$daemon
restarts=0
while [ "$restarts" -lt 5 ] && [ "$(e2e_copying)" != 0 ]; do
    fault_wait_streaming || { fail "the daemon streams again before restart $((restarts + 1))"; break; }
    fault_workload_wait_progress || { fail "the workload moves before restart $((restarts + 1))"; break; }
    [ "$(e2e_copying)" != 0 ] || break
    pg_restart immediate || die "restart $((restarts + 1)) failed"
    restarts=$((restarts + 1))
done
log "$restarts restarts during the copy"
check_eq "at least one restart fell inside the copy" 1 "$([ "$restarts" -ge 1 ] && echo 1)"
check_status "the sync finished" 0 e2e_wait_synced 600
fault_workload_stop
check_eq "the workload committed every transaction" 0 "$workload_rc"
check_status "everything applied after the restarts" 0 e2e_wait_applied 300
check_eq "the daemon started once is still running" "$first" "$(kill -0 "$daemon" 2>/dev/null && echo "$daemon")"
check_eq "the slot was created once" 1 "$(grep -c 'created replication slot' "$DW_E2E_DIR/daemon.log")"
fault_final_checks "$restarts"
finish

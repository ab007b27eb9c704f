#!/usr/bin/env bash
# Ten immediate Postgres restarts (a crash of the server) while a workload commits: the
# daemon that was started once is still running at the end, having reconnected its stream,
# its control sessions and its job lock each time; Dataverse equals the source (the oracle),
# no error rows exist, and every account's history in dvemu moves forward except where a
# restart rewound it (the slot redelivers from the last confirmed position, at most once
# per restart). `dwasync status` counts the reconnects.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log" "$DW_PG_DIR/server.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
first=$daemon
check_status "initial sync applied" 0 e2e_wait_synced

fault_workload_start
restarts=0
for i in $(seq 1 10); do
    fault_wait_streaming || { fail "daemon streams again before restart $i"; break; }
    fault_workload_wait_progress || { fail "workload moves before restart $i"; break; }
    pg_restart immediate || die "restart $i failed"
    restarts=$((restarts + 1))
done
check_eq "ten immediate restarts while the workload ran" 10 "$restarts"
fault_workload_stop
check_eq "workload committed every transaction" 0 "$workload_rc"

check_status "daemon streams again after the last restart" 0 fault_wait_streaming
check_status "everything applied after the restarts" 0 e2e_wait_applied 300
check_eq "the daemon started once is still running" "$first" "$(kill -0 "$daemon" 2>/dev/null && echo "$daemon")"
# The runner rewrites its status line once its heartbeat session is back (the first write
# after a restart finds that session broken): wait for it, 60 s at most (a bound for a hung
# test, not a timing assert).
for ((i = 0; i < 600; i++)); do
    status=$(dw status --json 2>&1)
    [[ $status == *reconnects* ]] && break
    sleep 0.1
done
check_contains "status counts the reconnects" "reconnects" "$status"
log_text=$(cat "$DW_E2E_DIR/daemon.log")
check_contains "the lost lock session is reported" "job lock session was lost" "$log_text"
fault_final_checks "$restarts"
finish

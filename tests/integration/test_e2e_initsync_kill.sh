#!/usr/bin/env bash
# kill -9 at random moments of an initial sync, while a workload commits (issue 14): the
# sample with 300 more customers is copied in chunks of 20 rows into a Dataverse that costs
# 2 ms a row, and the daemon is killed five times while the copy runs, each time after the
# workload moved and a random pause (seeded: DW_KILL_SEED, printed, gives the same pauses), and
# started again. Whatever the moments: Dataverse ends equal to the source (rows the stream
# changed while their chunk was read, which the copy leaves to the stream, included), no
# error rows exist, and no account's history goes back more than once per kill.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
seed=${DW_KILL_SEED:-$((SECONDS + $$))}
RANDOM=$seed
log "kill schedule seed $seed (DW_KILL_SEED=$seed gives the same pauses)"
e2e_setup --cost-row-ms 2 --cost-bulk-row-ms 2
e2e_load_copy_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
fault_workload_start
e2e_start_daemon
kills=0
while [ "$kills" -lt 5 ] && [ "$(e2e_copying)" != 0 ]; do
    fault_workload_wait_progress || { fail "the workload moves before kill $((kills + 1))"; break; }
    sleep "0.$((RANDOM % 9 + 1))" # the moment of the kill: random by design, no event
    kill -9 "$daemon"
    wait "$daemon" 2>/dev/null
    kills=$((kills + 1))
    e2e_start_daemon
done
log "$kills kill(s) during the copy"
check_eq "at least one kill fell inside the copy" 1 "$([ "$kills" -ge 1 ] && echo 1)"
check_status "the sync finished" 0 e2e_wait_synced 600
fault_workload_stop
check_eq "the workload committed every transaction" 0 "$workload_rc"
check_status "everything applied" 0 e2e_wait_applied 300
fault_final_checks "$kills"
finish

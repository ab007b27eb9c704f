#!/usr/bin/env bash
# Postgres faults in the middle of an initial sync, while a workload commits. The sample with
# 300 more customers is copied in chunks of 20 rows into a Dataverse that costs 2 ms a row (so
# the copy outlasts several faults), twice:
# 1. the daemon's walsender is killed up to five times during the copy: the stream
#    reconnects, the changes it had received but not applied (chunk rows among them) come
#    again, and the copy goes on from its last recorded chunk;
# 2. after `job start --initial-sync` again (a new slot, taken by job start: the workload goes
#    on before the daemon runs, and its deletes of rows the first part wrote come through
#    it), the server is restarted (immediate
#    mode, a crash) up to five times during the copy: every session reconnects, the job lock
#    is taken again and the job restarts in the same process, on the same slot, where the
#    watermarks of its earlier copies come again and must match no new chunk.
# The daemon started once runs throughout; after each part Dataverse equals the source, no
# error rows exist, and no account's history goes back more than once per fault (the second
# workload goes on raising the credit limits the first raised).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup --cost-row-ms 2 --cost-bulk-row-ms 2
e2e_load_copy_sample
show_log_on_failure "$DW_E2E_DIR/daemon-walsender.log" "$DW_E2E_DIR/daemon.log" "$DW_PG_DIR/server.log"

# copy_under_faults FAULT: up to five FAULTs (walsender or restart) while the copy runs;
# sets $faults.
copy_under_faults() {
    local old
    faults=0
    while [ "$faults" -lt 5 ] && [ "$(e2e_copying)" != 0 ]; do
        fault_wait_streaming || { fail "the daemon streams again before fault $((faults + 1))"; return; }
        fault_workload_wait_progress || { fail "the workload moves before fault $((faults + 1))"; return; }
        [ "$(e2e_copying)" != 0 ] || break
        if [ "$1" = walsender ]; then
            old=$(fault_backend_pid dwasync)
            [ -n "$old" ] || continue
            psql_q "SELECT pg_terminate_backend($old)" >/dev/null
        else
            pg_restart immediate || die "restart $((faults + 1)) failed"
        fi
        faults=$((faults + 1))
    done
    log "$faults fault(s) ($1) during the copy"
}

# --- 1. the walsender killed during the copy ----------------------------------------------------
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
fault_workload_start
e2e_start_daemon
first=$daemon
copy_under_faults walsender
check_eq "walsender: at least one kill fell inside the copy" 1 "$([ "$faults" -ge 1 ] && echo 1)"
check_status "walsender: the sync finished" 0 e2e_wait_synced 600
check_contains "walsender: the copy went on from its record" \
    "the copy goes on from its last recorded chunk" "$(cat "$DW_E2E_DIR/daemon.log")"
fault_workload_stop
check_eq "walsender: the workload committed every transaction" 0 "$workload_rc"
check_status "walsender: everything applied" 0 e2e_wait_applied 300
check_eq "walsender: the daemon started once is still running" "$first" \
    "$(kill -0 "$daemon" 2>/dev/null && echo "$daemon")"
fault_final_checks "$faults"
walsender_faults=$faults
mv "$DW_E2E_DIR/daemon.log" "$DW_E2E_DIR/daemon-walsender.log"

# --- 2. the server restarted during a new copy ---------------------------------------------------
# (fault_final_checks stopped the daemon.)
dw job stop fno_sample >/dev/null 2>&1
psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
started=$(dw job start fno_sample --initial-sync 2>&1) || die "the second job start failed: $started"
fault_workload_start "$(cat "$DW_E2E_DIR/workload.tx")"
e2e_start_daemon
first=$daemon
copy_under_faults restart
check_eq "restart: at least one restart fell inside the copy" 1 "$([ "$faults" -ge 1 ] && echo 1)"
check_status "restart: the sync finished" 0 e2e_wait_synced 600
fault_workload_stop
check_eq "restart: the workload committed every transaction" 0 "$workload_rc"
check_status "restart: everything applied" 0 e2e_wait_applied 300
check_eq "restart: the daemon started once is still running" "$first" \
    "$(kill -0 "$daemon" 2>/dev/null && echo "$daemon")"
check_contains "restart: job start created the slot" 'created replication slot "dwasync_fno_sample"' "$started"
check_eq "restart: the daemon created none" 0 "$(grep -c 'created replication slot' "$DW_E2E_DIR/daemon.log")"
fault_final_checks $((walsender_faults + faults))
finish

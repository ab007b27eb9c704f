#!/usr/bin/env bash
# The daemon's sessions killed one by one (pg_terminate_backend), each found by its
# application_name: the walsender during start-up (held in its publication check by a lock
# the test takes on pg_publication, killed there, then let go) and three times while
# streaming; the control session ("dwasync run"), the heartbeat session ("dwasync run
# (lock)") and the job lock session ("dwasync job lock") while a workload commits. The
# daemon reconnects each, takes its lock again, and never exits: at the end Dataverse
# equals the source, no error rows exist, and each account moved back at most once per
# killed session.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced
kill -TERM "$daemon"; wait "$daemon"; daemon=

# --- the walsender killed during start-up ---
# A session holds pg_publication locked: the new walsender's publication check waits on it.
mkfifo "$DW_E2E_DIR/locker"
psql -X -q -v ON_ERROR_STOP=1 <"$DW_E2E_DIR/locker" >"$DW_E2E_DIR/locker.log" 2>&1 &
locker=$!
exec 7>"$DW_E2E_DIR/locker"
on_exit "kill $locker 2>/dev/null"
echo "BEGIN; LOCK TABLE pg_catalog.pg_publication IN ACCESS EXCLUSIVE MODE;" >&7
wait_sql() {   # wait_sql SQL VALUE: up to 120 s (a bound for a hung test, not a timing assert)
    local i
    for ((i = 0; i < 1200; i++)); do
        [ "$(psql_try "$1" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
check_status "pg_publication is locked" 0 wait_sql "SELECT count(*) FROM pg_locks
    WHERE relation = 'pg_catalog.pg_publication'::regclass AND mode = 'AccessExclusiveLock'
      AND granted" 1
e2e_start_daemon 7>&-   # the daemon must not hold the locker's input open
first=$daemon
check_status "the walsender waits in its start-up checks" 0 wait_sql "SELECT count(*)
    FROM pg_stat_activity WHERE application_name = 'dwasync' AND backend_type = 'walsender'
     AND wait_event_type = 'Lock'" 1
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'dwasync' AND backend_type = 'walsender'" >/dev/null
echo "COMMIT;" >&7
exec 7>&-
wait "$locker"
check_status "the daemon streams after its walsender was killed in start-up" 0 fault_wait_streaming
log_text=$(cat "$DW_E2E_DIR/daemon.log")
check_contains "the failed check was retried" "reconnecting the replication stream" "$log_text"

# --- sessions killed while a workload commits ---
fault_workload_start
kills=0
kill_session() {   # kill_session APPLICATION_NAME
    local old
    fault_wait_streaming || { fail "daemon streams before \"$1\" is killed"; return; }
    fault_workload_wait_progress || { fail "workload moves before \"$1\" is killed"; return; }
    old=$(fault_backend_pid "$1")
    [ -n "$old" ] || { fail "the daemon has a \"$1\" session"; return; }
    psql_q "SELECT pg_terminate_backend($old)" >/dev/null
    kills=$((kills + 1))
    fault_wait_new_backend "$1" "$old" && pass "\"$1\" killed ($kills) and opened again" ||
        fail "\"$1\" killed ($kills) and opened again"
}
for name in dwasync dwasync dwasync "dwasync run" "dwasync run (lock)" "dwasync job lock" \
    "dwasync run" "dwasync job lock"; do
    kill_session "$name"
done
fault_workload_stop
check_eq "workload committed every transaction" 0 "$workload_rc"
check_status "daemon streams and holds its lock after the kills" 0 fault_wait_streaming
check_status "everything applied after the kills" 0 e2e_wait_applied 300
check_eq "the daemon started once is still running" "$first" "$(kill -0 "$daemon" 2>/dev/null && echo "$daemon")"
log_text=$(cat "$DW_E2E_DIR/daemon.log")
check_contains "the lost lock session is reported" "job lock session was lost" "$log_text"
check_contains "the lost control session is reported" "control database connection" "$log_text"
fault_final_checks "$kills"
finish

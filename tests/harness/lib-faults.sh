# tests/harness/lib-faults.sh - connection faults for the end-to-end tests (lib-e2e.sh): a
# workload that keeps committing through server restarts and killed sessions, and waits on
# the daemon's connections (its walsender, its control session, its job lock) coming back.
#
#   fault_workload_start [AFTER]  # background transactions until fault_workload_stop,
#                                 # numbered from AFTER + 1 (default 0: a second workload
#                                 # goes on raising what the first raised); each retried
#                                 # until it commits (idempotent: a retry after an unseen
#                                 # commit changes nothing)
#   fault_workload_wait_progress  # waits until two more transactions have committed
#   fault_workload_stop           # ends it; $workload_rc is 0 when every transaction committed
#   fault_wait_streaming          # waits until the daemon ($daemon) streams and holds its lock
#   fault_backend_pid NAME        # pid of the daemon's session with application_name NAME
#                                 # ("dwasync": the walsender), empty when there is none
#   fault_wait_new_backend NAME OLD_PID   # waits until NAME's session is another than OLD_PID
#   fault_final_checks FAULTS     # stops the daemon cleanly, then: Dataverse equals the source,
#                                 # no error rows, each account went back at most FAULTS times

# fault_tx SQL: runs SQL in one transaction, again while the server is unreachable (bounded:
# two minutes, far beyond a restart; the pause paces retries, it stands in for no event).
fault_tx() {
    local i
    for ((i = 0; i < 600; i++)); do
        psql -X -q -v ON_ERROR_STOP=1 -c "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

fault_workload_start() {
    rm -f "$DW_E2E_DIR/workload.stop"
    echo "${1:-0}" >"$DW_E2E_DIR/workload.tx"
    (
        tx=${1:-0}
        while [ ! -e "$DW_E2E_DIR/workload.stop" ]; do
            tx=$((tx + 1))
            # Every customer of the first fifty gets a larger credit limit each transaction;
            # every tenth transaction adds five customers with orders (unless a retry of an
            # unseen commit finds them) and deletes an order with its lines.
            fault_tx "UPDATE fno.customersv3 SET creditlimit = 1000000 + $tx
                       WHERE customeraccount < 'C0000051'" || exit 1
            if ((tx % 10 == 0)); then
                fault_tx "SELECT fno.sample_generate(5, 1000 + $tx) WHERE NOT EXISTS
                            (SELECT 1 FROM fno.customersv3
                              WHERE customeraccount = 'C' || lpad((1000 + $tx)::text, 7, '0'));
                          DELETE FROM fno.salesorderlines WHERE salesordernumber =
                            'SO' || lpad(($tx / 10)::text, 8, '0');
                          DELETE FROM fno.salesorderheaders WHERE salesordernumber =
                            'SO' || lpad(($tx / 10)::text, 8, '0')" || exit 1
            fi
            echo "$tx" >"$DW_E2E_DIR/workload.tx.new" && mv "$DW_E2E_DIR/workload.tx.new" "$DW_E2E_DIR/workload.tx"
        done
    ) &
    workload=$!
    on_exit "touch '$DW_E2E_DIR/workload.stop'; kill $workload 2>/dev/null"
}

fault_workload_wait_progress() {
    local from i
    from=$(cat "$DW_E2E_DIR/workload.tx")
    for ((i = 0; i < 1200; i++)); do
        [ "$(cat "$DW_E2E_DIR/workload.tx")" -ge $((from + 2)) ] && return 0
        kill -0 "$workload" 2>/dev/null || return 2
        sleep 0.1
    done
    return 1
}

fault_workload_stop() {
    touch "$DW_E2E_DIR/workload.stop"
    wait "$workload"
    workload_rc=$?
}

# The daemon streams (its walsender is in pg_stat_replication) and holds its job lock.
fault_wait_streaming() {
    local i
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$daemon" 2>/dev/null || { log "the daemon (pid $daemon) is gone"; return 2; }
        [ "$(psql_q "SELECT (SELECT count(*) FROM pg_stat_replication
                               WHERE application_name = 'dwasync' AND state = 'streaming')
                          || ' ' || (SELECT count(*) FROM dwasync.job j,
                                       dwasync.job_lock_holder(j.id) h
                                      WHERE j.name = 'fno_sample')" 2>/dev/null)" = "1 1" ] &&
            return 0
        sleep 0.1
    done
    return 1
}

fault_backend_pid() {
    psql_q "SELECT pid FROM pg_stat_activity WHERE application_name = '$1' ORDER BY pid LIMIT 1"
}

fault_wait_new_backend() {
    local i now
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$daemon" 2>/dev/null || { log "the daemon (pid $daemon) is gone"; return 2; }
        now=$(fault_backend_pid "$1" 2>/dev/null)
        [ -n "$now" ] && [ "$now" != "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

fault_final_checks() {
    local rewinds errors
    kill -TERM "$daemon"
    wait "$daemon"
    check_eq "daemon stops cleanly" 0 $?
    daemon=
    check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
    errors=$(psql_q "SELECT count(*) FROM dwasync.error")
    check_eq "no error rows" 0 "$errors"
    [ "$errors" = 0 ] ||
        psql_q "SELECT id, map_name, operation, status, class, key_text, missing_parent,
                       commit_lsn, position, left(message, 120)
                  FROM dwasync.error ORDER BY id LIMIT 20" | sed 's/^/# /'
    rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
    check_eq "the history is complete" 0 $?
    check_eq "each account went back at most once per fault ($1)" 1 "$([ "$rewinds" -le "$1" ] && echo 1)"
}

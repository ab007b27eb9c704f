#!/usr/bin/env bash
# A reconnect after the stream dropped changes it had received but not applied starts from
# what was applied, never from the old connection's keepalive. The order of events is made,
# not waited for by the clock:
#   A is received and held in the window being applied (Dataverse is down);
#   B is received into the next window, then a keepalive past B (WAL written elsewhere);
#   the walsender is killed while new connections fail: B is dropped;
#   Dataverse comes back, A is applied and the pipeline is idle;
#   connections work again: the stream must ask for B again.
# Starting from the keepalive's position lost B (seen in an initial sync under walsender
# kills: rows a copy had skipped for the stream never reached Dataverse).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
sed -i 's/^\[source\]$/[source]\nstatus_interval_ms = 200\nreconnect_max_ms = 1000/' "$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync finished" 0 e2e_wait_synced

# received LSN: true once the daemon has told the server it received up to LSN.
received() {
    [ "$(psql_q "SELECT coalesce(bool_and(write_lsn >= '$1'), false) FROM pg_stat_replication
                  WHERE application_name = 'dwasync'")" = t ]
}
wait_until() {   # wait_until COMMAND...: polls (at most two minutes) until COMMAND succeeds
    local i
    for i in $(seq 1 1200); do "$@" && return 0; sleep 0.1; done
    return 1
}
# The server's socket file hidden: new connections through it fail as if the server were
# down, while the daemon's open control sessions and the test's TCP sessions go on.
socket_file=$PGHOST/.s.PGSQL.$PGPORT
tcp() { PGHOST=127.0.0.1 "$@"; }

curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=1" >/dev/null || die "outage on failed"
a=$(e2e_commit_lsn "UPDATE fno.customersv3 SET creditlimit = 7001 WHERE customeraccount = 'C0000001'")
check_status "A was received" 0 wait_until received "$a"
b=$(e2e_commit_lsn "UPDATE fno.customersv3 SET creditlimit = 7002 WHERE customeraccount = 'C0000002'")
psql_q "CREATE TABLE public.elsewhere (id int); INSERT INTO public.elsewhere VALUES (1)"
past=$(psql_q "SELECT pg_current_wal_insert_lsn()")
check_status "B was received, and a keepalive past it" 0 wait_until received "$past"

mv "$socket_file" "$socket_file.hidden"
on_exit "[ -e '$socket_file.hidden' ] && mv '$socket_file.hidden' '$socket_file'"
tcp psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'dwasync'" >/dev/null
check_status "the stream dropped what it had received and not applied (B)" 0 \
    e2e_wait_log daemon "received changes will be received again"
check_status "and cannot reconnect yet" 0 e2e_wait_log daemon "cannot connect to the source database"
curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=0" >/dev/null || die "outage off failed"
check_status "A applied (the pipeline is idle)" 0 tcp e2e_wait_checkpoint "$a" 120
check_eq "B is not applied yet" 0 "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" |
    jq '[.value[] | select(.accountnumber == "C0000002" and .creditlimit == 7002)] | length')"
mv "$socket_file.hidden" "$socket_file"

check_status "everything applied after the reconnect" 0 e2e_wait_applied 120
check_eq "B applied in both legal entities" 2 "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" |
    jq '[.value[] | select(.accountnumber == "C0000002" and .creditlimit == 7002)] | length')"
check_eq "Dataverse equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
check_eq "the checkpoint passed B" t "$(psql_q "SELECT bool_and(confirmed_lsn > '$b') FROM dwasync.checkpoint")"
finish

#!/usr/bin/env bash
# A change committed while a chunk's read is under way. The daemon reads a chunk's rows while
# its sink goes on (snapshot.h: dw_snapshot_chunk_begin), and it must not read the stream
# meanwhile: the low watermark and the change after it would reach the chunk before its rows,
# which the change must drop, and a transaction streamed before the read ends makes the chunk
# stale, to be read again. Here a session holds the customers' table locked, with an update of
# ten customers not committed, and a second session waits for the same lock, when the initial
# sync starts: the copy's read of the table waits behind both, its snapshot taken, the update
# not in it. The update commits, and the walsender sends it (small enough for its socket),
# while the read still waits on the second session; then the read returns the customers as
# they were. The stream has the update between the chunk's watermarks: the chunk must drop
# those rows, not be read again. Dataverse must end equal to the source, with no error rows,
# and no account's history may go back.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"

# session NAME FD: a psql session named NAME that reads statements written to FD.
session() {
    mkfifo "$DW_E2E_DIR/$1"
    PGAPPNAME=$1 psql -X -q -v ON_ERROR_STOP=1 <"$DW_E2E_DIR/$1" >"$DW_E2E_DIR/$1.log" 2>&1 &
    on_exit "kill $! 2>/dev/null"
    eval "exec $2>\"\$DW_E2E_DIR/$1\""
}
waiting_on_lock() {
    [ "$(psql_q "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = '$1' AND wait_event_type = 'Lock'
                    AND query LIKE '%customersv3%'")" = 1 ]
}
holds_lock() {
    [ "$(psql_q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.granted AND l.mode = 'AccessExclusiveLock'
                    AND l.relation = 'fno.customersv3'::regclass
                    AND a.application_name = '$1'")" = 1 ]
}
sent_past() {
    [ "$(psql_q "SELECT count(*) FROM pg_stat_replication WHERE sent_lsn >= '$1'")" = 1 ]
}

session updater 7
echo "BEGIN; LOCK TABLE fno.customersv3 IN ACCESS EXCLUSIVE MODE;
      UPDATE fno.customersv3 SET creditlimit = creditlimit + 7,
                                 primarycontactphone = primarycontactphone || '7'
       WHERE (dataareaid, customeraccount) IN (SELECT dataareaid, customeraccount
                                                 FROM fno.customersv3 ORDER BY 1, 2 LIMIT 10);" >&7
check_status "the updater holds the customers, its update not committed" 0 \
    wait_for 60 holds_lock updater
session queued 8
echo "BEGIN; LOCK TABLE fno.customersv3 IN ACCESS EXCLUSIVE MODE;" >&8
check_status "a second session waits for the lock" 0 wait_for 60 waiting_on_lock queued

e2e_start_daemon
check_status "the copy's read of the customers waits on the lock" 0 \
    wait_for 120 waiting_on_lock "dwasync initial sync"
echo "COMMIT;" >&7
check_status "the update commits while the read waits" 0 wait_for 60 holds_lock queued
# The walsender's sent position names the start of the last record it sent: a message after
# the update takes it past the update's commit.
lsn=$(psql_q "SELECT pg_current_wal_lsn()")
psql_q "SELECT pg_logical_emit_message(true, 'test', 'after the update')" >/dev/null
check_status "the walsender has sent the update" 0 wait_for 60 sent_past "$lsn"
echo "ROLLBACK;" >&8
check_eq "both sessions ran without an error" "" \
    "$(cat "$DW_E2E_DIR/updater.log" "$DW_E2E_DIR/queued.log")"

check_status "the initial sync is applied" 0 e2e_wait_synced
check_status "everything is applied" 0 e2e_wait_applied
kill -TERM "$daemon"
wait "$daemon"
check_eq "daemon stops cleanly" 0 $?
daemon=
check_eq "the chunk dropped the updated rows and was not read again" 0 \
    "$(grep -cF "committed but not visible yet" "$DW_E2E_DIR/daemon.log")"
check_eq "no account's credit limit went back (the chunk's older rows never followed the update)" \
    0 "$(e2e_history_rewinds accounts creditlimit numeric)"
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
finish

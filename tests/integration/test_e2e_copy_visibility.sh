#!/usr/bin/env bash
# A copy's chunk and a transaction whose commit is in the WAL (so in the stream) but not yet
# visible to other sessions. Postgres writes a commit record before it makes the transaction
# visible; a synchronous standby holds every commit in that gap until it answers (a busy
# machine holds one there for a few milliseconds). A chunk read in that gap still holds the
# rows the transaction deleted, while the stream has delivered the delete already, before
# any watermark: written after it, the chunk would bring the rows back. Here a synchronous
# standby that never answers holds a delete of one sales order (with its lines) in the gap,
# and a resync of the orders' map runs. With the daemon streaming when the delete commits,
# the copy must wait until the transaction is visible (its log says so) and read the chunk
# only then. With the daemon started after the delete committed, the queued resync reads
# its first chunk before the stream delivers anything: the stream delivers the delete after
# the read, and the chunk drops the row, its snapshot having missed that transaction
# (snapshot.h). Both ways the order stays deleted in Dataverse, and Dataverse ends equal to
# the source.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
# Every session commits locally, except one that asks for the absent standby. Set before a
# restart: a reload reaches the server's checkpointer, which enables the waits, some time later.
psql_q "ALTER SYSTEM SET synchronous_commit = 'local'" >/dev/null &&
    psql_q "ALTER SYSTEM SET synchronous_standby_names = 'dwasync_test_absent'" >/dev/null ||
    die "cannot configure the absent standby"
pg_restart
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync is applied" 0 e2e_wait_synced

# held_delete N: deletes the Nth sales order in key order (lines first) in a transaction
# that waits for the absent standby. $area and $number name it (a number is used in each
# legal entity), $others counts the orders of its number left, $held is its psql's pid.
held_delete() {
    IFS='|' read -r area number < <(psql_q "SELECT dataareaid, salesordernumber
        FROM fno.salesorderheaders ORDER BY 1, 2 OFFSET $(($1 - 1)) LIMIT 1")
    others=$(($(psql_q "SELECT count(*) FROM fno.salesorderheaders
                         WHERE salesordernumber = '$number'") - 1))
    PGAPPNAME=held_delete PGOPTIONS="-c synchronous_commit=on" psql -X -q -c "
        BEGIN;
        DELETE FROM fno.salesorderlines
         WHERE dataareaid = '$area' AND salesordernumber = '$number';
        DELETE FROM fno.salesorderheaders
         WHERE dataareaid = '$area' AND salesordernumber = '$number';
        COMMIT" >/dev/null 2>&1 &
    held=$!
}
held_waiting() {
    [ "$(psql_q "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'held_delete' AND wait_event = 'SyncRep'")" = 1 ]
}
release_held() {
    psql_q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'held_delete'" >/dev/null
    wait "$held"
}
# deleted_in_dataverse: Dataverse holds only the other legal entities' orders of $number.
deleted_in_dataverse() {
    [ "$(curl -sf "$DVEMU_URL/_dvemu/tables/salesorders" | jq --arg n "$number" \
          '[.value[] | select(.msdyn_salesordernumber == $n)] | length')" = "$others" ]
}
# visible_to_others: a session of its own no longer sees the order.
visible_to_others() {
    [ "$(psql_q "SELECT count(*) FROM fno.salesorderheaders
                  WHERE dataareaid = '$area' AND salesordernumber = '$number'")" = 0 ]
}

# 1. The daemon starts after the delete committed.
kill -TERM "$daemon"
wait "$daemon"
daemon=
held_delete 1
check_status "the first delete waits for the standby" 0 wait_for 60 held_waiting
check_status "it is committed but not visible" 1 visible_to_others
dw job resync fno_sample --map sales_orders >/dev/null || die "job resync failed"
e2e_start_daemon
check_status "the daemon applies the delete" 0 wait_for 60 deleted_in_dataverse
check_status "the resync (one chunk) is applied while the delete is not visible" 0 \
    e2e_wait_resynced
check_eq "the copy read its chunk before the delete came, and did not wait" 0 \
    "$(grep -cF "committed but not visible yet" "$DW_E2E_DIR/daemon.log")"
check_status "the chunk dropped the row: the order is still deleted in Dataverse" 0 \
    deleted_in_dataverse
release_held
check_status "the first delete is visible once released" 0 visible_to_others
check_status "the order stays deleted in Dataverse" 0 deleted_in_dataverse

# 2. The daemon streams when the delete commits.
held_delete 2
check_status "the second delete waits for the standby" 0 wait_for 60 held_waiting
check_status "the daemon applies the second delete" 0 wait_for 60 deleted_in_dataverse
waits=$(grep -cF "committed but not visible yet" "$DW_E2E_DIR/daemon.log")
dw job resync fno_sample --map sales_orders >/dev/null || die "the second job resync failed"
check_status "the copy waits for the second transaction" 0 \
    e2e_wait_log daemon "committed but not visible yet" $((waits + 1))
check_status "the second order is still deleted in Dataverse" 0 deleted_in_dataverse
release_held
check_status "the second resync is applied" 0 e2e_wait_resynced
check_status "the second order stays deleted in Dataverse" 0 deleted_in_dataverse

check_status "everything is applied" 0 e2e_wait_applied
kill -TERM "$daemon"
wait "$daemon"
check_eq "daemon stops cleanly" 0 $?
daemon=
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
finish

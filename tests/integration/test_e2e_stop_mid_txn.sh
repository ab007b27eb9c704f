#!/usr/bin/env bash
# SIGTERM while the daemon is part way through one large transaction (every customer updated
# ten times over, in windows of 50 rows against a Dataverse that takes 5 ms a row, so that
# the stream is read no further than the windows in memory): the stop applies what it received, does
# not wait for the rest of the transaction (nothing reads the stream while stopping, so the
# rest would never come and the stop would wait out its whole bound), and exits 0. The next
# start receives the transaction again from the slot and applies it whole.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=${DW_E2E_LOG_LEVEL:-info} e2e_setup --cost-row-ms 5 --cost-bulk-row-ms 5 >/dev/null
sed -i "s/^\[apply\]\$/&\nwindow_rows = 50\nwindow_growth = 1/" "$DW_E2E_CONF"
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync is applied" 0 e2e_wait_synced

written() { curl -sf "$DVEMU_URL/_dvemu/counters" | jq '[.rows_written[]] | add // 0'; }
before=$(written)
grew() { test "$(written)" -gt "$before"; } # read at each try of wait_for
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "the large transaction failed"
BEGIN;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
UPDATE fno.customersv3 SET creditlimit = creditlimit + 1;
COMMIT;
SQL
check_status "Dataverse receives the transaction's first rows" 0 \
    wait_for 120 grew
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops with status 0" 0 $?
daemon=
check_eq "without waiting out its bound for the rest of the transaction" 0 \
    "$(grep -c 'stopping with writes still in flight' "$DW_E2E_DIR/daemon.log")"
e2e_start_daemon
check_status "the next start applies the transaction whole" 0 e2e_wait_applied
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops cleanly again" 0 $?
daemon=
finish

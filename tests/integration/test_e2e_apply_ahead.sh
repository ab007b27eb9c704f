#!/usr/bin/env bash
# [apply] apply_ahead = true: a backlog applied against a Dataverse whose requests take time
# (dvemu --cost-*, and slow answers that hold a write before it is applied), with small
# windows, so that windows start while the one before is at its last level. The backlog updates every customer's credit limit upward in each transaction,
# adds customers with orders, and deletes orders with their lines. The end state is exact:
# Dataverse equals the source, there are no error rows, and no credit limit in dvemu's write
# history ever went back (per-key order with two windows in flight). That windows do apply
# ahead, and keep every invariant while they do, is asserted deterministically by
# tests/unit/test_pipeline.c's random runs; here the number of windows applied ahead is
# only printed (it depends on how fast the stream is read against the server's cost).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=debug e2e_setup --cost-request-ms 5 --cost-row-ms 1 --cost-bulk-row-ms 1 >/dev/null
sed -i "s/^\[apply\]\$/&\napply_ahead = true\nwindow_rows = 400/" "$DW_E2E_CONF"
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync is applied" 0 e2e_wait_synced
kill -TERM "$daemon" && wait "$daemon"
daemon=

psql -X -q -v ON_ERROR_STOP=1 <<'SQL' || die "the backlog was not committed"
DO $$
DECLARE
    doomed text;
BEGIN
    FOR tx IN 1..40 LOOP
        UPDATE fno.customersv3 SET creditlimit = 2000000 + tx;
        IF tx % 10 = 0 THEN
            PERFORM fno.sample_generate(5, 3000 + tx);
        END IF;
        IF tx % 8 = 0 THEN
            SELECT max(salesordernumber) INTO doomed FROM fno.salesorderlines;
            DELETE FROM fno.salesorderlines WHERE salesordernumber = doomed;
            DELETE FROM fno.salesorderheaders WHERE salesordernumber = doomed;
        END IF;
        COMMIT;
    END LOOP;
END $$;
SQL
lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
# Some requests are slow before Dataverse applies them (as a long UpsertMultiple is): a write
# of a key sent while an older one is in flight would land first, and take the key back.
curl -sf -X POST "$DVEMU_URL/_dvemu/faults" -d '{"rates": {"slow": 0.3}, "slow_ms": 400, "seed": 7}' \
    >/dev/null || die "setting faults failed"
e2e_start_daemon
check_status "the backlog is applied" 0 e2e_wait_checkpoint "$lsn" 900
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no account's credit limit went back (per-key order)" 0 "$rewinds"
log "windows applied ahead: $(grep -c 'applies ahead of the one at its last levels' "$DW_E2E_DIR/daemon.log")"
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
finish

#!/usr/bin/env bash
# Full requests under a backlog, small windows when caught up (issue 20; window.h's sizing).
#  1. Caught up, a window closes on the commit once the stream has nothing more to read: with
#     window_ms at ten minutes, a single update is applied (its checkpoint passes) long
#     before any timer could close its window.
#  2. Behind: a backlog of small transactions, each touching one customer's account or
#     contact, order and three lines (four levels, four tables: a window of 750 rows, the
#     window_rows here, holds 429 order lines but 36 contacts, in 10 requests of 100: 75%
#     full), is applied with bulk requests that carry at least 90% of batch_size rows on
#     average, counted in dvemu's write requests and rows written.
#  3. The same backlog again with [apply] window_growth = 1: windows stay at window_rows, and
#     the requests are less full (the knob takes effect).
# Each ends with Dataverse equal to the source (the oracle). Before them, the initial sync
# reads its chunks no larger than a window (window_rows), whatever snapshot_fetch_rows says.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
BATCH=100 CUSTOMERS=4000

# Each row costs Dataverse 1 ms (as a real environment's do), so the apply, not the stream,
# is what the backlog waits for: the reader is ahead, as with a real backlog.
DW_E2E_LOG_LEVEL=debug e2e_setup --cost-row-ms 1 --cost-bulk-row-ms 1 >/dev/null
# Only events close windows here: nothing the test waits for may come from window_ms.
sed -i "s/^window_ms = 50\$/window_ms = 600000\nwindow_rows = 750/" "$DW_E2E_CONF"
sed -i "s/^\[dataverse\]\$/&\nbatch_size = $BATCH/" "$DW_E2E_CONF"
e2e_load_sample
psql_q "SELECT fno.sample_generate($CUSTOMERS, 1001)" >/dev/null
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced 300 || die "the sample was not applied"
chunks=$(sed -n 's/.*a chunk of \([0-9]*\) row(s).*/\1/p' "$DW_E2E_DIR/daemon.log" | sort -n)
check_eq "the initial sync read chunks of at most window_rows (750), not snapshot_fetch_rows" \
    "yes 750" "$([ "$(echo "$chunks" | wc -l)" -gt 10 ] && echo yes) $(echo "$chunks" | tail -1)"

# --- 1. caught up: one change, its window closed by its commit ------------------------------
lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET primarycontactemail = 'one@example.com'
                       WHERE customeraccount = 'C0000001' AND dataareaid = 'usmf'")
check_status "a single change is applied without waiting for window_ms (10 min)" 0 \
    e2e_wait_checkpoint "$lsn" 120

# --- 2. behind: a backlog of mixed small transactions --------------------------------------
writes() { # write requests so far (not the token's), and rows written, as "requests rows"
    curl -sf "$DVEMU_URL/_dvemu/counters" | jq -r '
        ([.requests | to_entries[] | select((.key | split(" ")[0]) as $m
            | ($m == "POST" or $m == "PATCH" or $m == "DELETE") and (.key | test("token") | not))
            | .value] | add // 0) as $r | ([.rows_written[]] | add // 0) as $w | "\($r) \($w)"'
}
# backlog: with the daemon stopped, commits the backlog (one transaction per customer), starts
# the daemon, waits until it is applied; sets changes, requests and rows (written).
backlog() {
    kill "$daemon" && wait "$daemon" 2>/dev/null
    daemon=
    local req0 rows0 req1 rows1 lsn
    read -r req0 rows0 <<<"$(writes)"
    psql -X -q -v ON_ERROR_STOP=1 <<SQL || die "the backlog was not committed"
DO \$\$
BEGIN
    FOR i IN 1001..$((1000 + CUSTOMERS)) LOOP
        UPDATE fno.customersv3 SET primarycontactphone = primarycontactphone || '1'
         WHERE customeraccount = 'C' || lpad(i::text, 7, '0');
        UPDATE fno.salesorderheaders SET ordertotalamount = ordertotalamount + 1
         WHERE salesordernumber = 'SO' || lpad(i::text, 8, '0');
        UPDATE fno.salesorderlines SET salesprice = salesprice + 1
         WHERE salesordernumber = 'SO' || lpad(i::text, 8, '0');
        COMMIT;
    END LOOP;
END \$\$;
SQL
    changes=$(psql_q "SELECT 2 * $CUSTOMERS + count(*) FROM fno.salesorderheaders h
                       JOIN fno.salesorderlines l USING (dataareaid, salesordernumber)
                      WHERE h.salesordernumber >= 'SO00001001'")
    changes=$((changes + $(psql_q "SELECT count(*) FROM fno.salesorderheaders
                                    WHERE salesordernumber >= 'SO00001001'")))
    # The last change, a currency's, marks the end (the checkpoint passes it after the rest).
    lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
    changes=$((changes + 1))
    e2e_start_daemon
    e2e_wait_checkpoint "$lsn" 600 || die "the backlog was not applied"
    read -r req1 rows1 <<<"$(writes)"
    requests=$((req1 - req0)) rows=$((rows1 - rows0))
    log "backlog: $changes changes, $rows rows written in $requests write requests"
}
backlog
check_eq "every change of the backlog was written once" "$changes" "$rows"
check_status "requests carry at least 90% of batch_size ($BATCH) rows on average" 0 \
    test $((100 * rows)) -ge $((90 * BATCH * requests))
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches 2>/dev/null)"

# --- 3. [apply] window_growth = 1: windows never grow ----------------------------------------
sed -i "s/^window_rows = 750\$/&\nwindow_growth = 1/" "$DW_E2E_CONF"
backlog
check_eq "every change of the second backlog was written once" "$changes" "$rows"
check_status "held to 750 rows, windows leave requests less than 90% full" 0 \
    test $((100 * rows)) -lt $((90 * BATCH * requests))
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches 2>/dev/null)"
finish

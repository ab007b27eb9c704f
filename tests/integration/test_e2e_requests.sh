#!/usr/bin/env bash
# Bulk requests come out whole. A window closes at exactly its row bound (the stream reads no
# more than the room left), and under a backlog a window whose requests are less than 95%
# full raises the bound (window.h: to twice window_rows at most): 2,800 vendors in requests
# of 500 go as windows of 700 (500 + 200), 1,400 (500 + 500 + 400) and 700 (500 + 200):
# seven UpsertMultiple calls (a window closed early, or past its bound, would send another
# number). And while parents are still being looked
# up, only whole requests leave: 1,500 order lines (windows of 700 and 800) whose orders'
# ids arrive a hundred at a time (one request at a time here) go as four $batch requests,
# not one more for the few rows an answer made ready beyond the first 500.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup >/dev/null
# Rows close the windows here, and each workload's commit its last one; no timer does
# (window_ms is ten minutes), however slowly the rows are read.
sed -i 's/^window_ms = 50$/window_ms = 600000\nwindow_rows = 700/' "$DW_E2E_CONF"
sed -i 's/^\[dataverse\]$/&\nbatch_size = 500\nmax_concurrency = 1/' "$DW_E2E_CONF"
e2e_load_sample
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon

counter() { # counter "POST msdyn_vendors 204": requests so far with that method, path, status
    curl -sf "$DVEMU_URL/_dvemu/counters" | jq --arg k "$1" '.requests[$k] // 0'
}
vendors() { dvemu_api GET 'msdyn_vendors?$count=true&$top=1' | jq '."@odata.count"'; }
e2e_wait_synced || die "the sample was not applied"
before=$(counter "POST msdyn_vendors 204") vendors_before=$(vendors)
lsn=$(e2e_commit_lsn "INSERT INTO fno.vendorsv2 (dataareaid, vendoraccountnumber,
        vendororganizationname, vendorgroupid, creditlimit, onholdstatus, currencycode)
    SELECT 'usmf', 'W' || lpad(i::text, 6, '0'), 'Vendor W' || i, '10', 0, 0, 'USD'
      FROM generate_series(1, 2800) AS i")
e2e_wait_checkpoint "$lsn" 120 || die "the vendors were not applied"
check_eq "2800 vendors in windows of 700, 1400 and 700: seven whole requests" 7 \
    $(($(counter "POST msdyn_vendors 204") - before))
check_eq "every vendor landed" 2800 $(($(vendors) - vendors_before))

# Orders first, applied and forgotten by a restart (their ids are looked up afresh).
lsn=$(e2e_commit_lsn "INSERT INTO fno.salesorderheaders (dataareaid, salesordernumber,
        orderingcustomeraccountnumber, currencycode, salesordername, ordertotalamount,
        salesorderprocessingstatus)
    SELECT 'usmf', 'SW' || lpad(i::text, 6, '0'), 'C0000001', 'USD', 'Order W' || i, 10, 1
      FROM generate_series(1, 500) AS i")
e2e_wait_checkpoint "$lsn" 120 || die "the orders were not applied"
kill "$daemon" && wait "$daemon" 2>/dev/null
e2e_start_daemon
before=$(counter 'POST $batch 200')
lookups=$(counter "GET salesorders 200")
lsn=$(e2e_commit_lsn "INSERT INTO fno.salesorderlines (dataareaid, salesordernumber,
        linecreationsequencenumber, productnumber, orderedsalesquantity, salesprice, lineamount)
    SELECT 'usmf', 'SW' || lpad((1 + (i - 1) / 3)::text, 6, '0'), 1 + (i - 1) % 3, 'P00001', 1, 1, 1
      FROM generate_series(1, 1500) AS i")
e2e_wait_checkpoint "$lsn" 120 || die "the order lines were not applied"
check_status "the orders' ids were looked up in several queries" 0 \
    test $(($(counter "GET salesorders 200") - lookups)) -ge 5
check_eq "1500 lines in windows of 700 and 800, requests of 500: four \$batch requests" 4 \
    $(($(counter 'POST $batch 200') - before))
check_eq "every line landed" 1500 \
    "$(dvemu_api GET "salesorderdetails?\$count=true&\$top=1&\$filter=productdescription%20eq%20'P00001'" | jq '."@odata.count"')"
finish

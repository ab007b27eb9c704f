#!/usr/bin/env bash
# A child committed before its parent (issue 14 item 6): an order line is committed in one
# transaction and its order header in a later one. While the line waits for its parent
# (missing_parent_retries, here 10: minutes), other rows keep flowing; once the
# order arrives the line applies under it with no error row. Driven by events: the line is
# committed, the daemon logs that it waits for its parent, a customer's change is applied
# meanwhile, then the order is committed and the job catches up. Also: with the retries spent
# (the order never comes) the line is an open missing_parent error naming the order, and a
# kill -9 while a line waits loses nothing (the checkpoint does not pass it).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

e2e_setup
sed -i 's/^\[apply\]$/[apply]\nmissing_parent_retries = 10/' "$DW_E2E_CONF"
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced

read -r cust cur <<<"$(psql_q "SELECT orderingcustomeraccountnumber || ' ' || currencycode
                              FROM fno.salesorderheaders WHERE dataareaid = 'usmf' LIMIT 1" | tr -d '|')"
waits() { grep -c 'change waits for its parent' "$DW_E2E_DIR/daemon.log"; }
alive_and() { kill -0 "$daemon" 2>/dev/null && "$@"; }   # CMD, while the daemon lives
more_waits() { [ "$(waits)" -gt "$1" ]; }
usmf=$(dvemu_admin GET tables/cdm_companies | jq -r '.value[] | select(.cdm_companycode == "usmf") | .cdm_companyid')
phone_is() {
    [ "$(dvemu_admin GET tables/accounts | jq -r ".value[] | select(.accountnumber == \"$cust\"
        and ._msdyn_company_value == \"$usmf\") | .telephone1")" = "$1" ]
}
lines_of() {   # lines_of ORDER: its lines in Dataverse
    local so
    so=$(dvemu_admin GET tables/salesorders | jq -r ".value[] | select(.msdyn_salesordernumber == \"$1\") | .salesorderid")
    [ -n "$so" ] || { echo 0; return; }
    dvemu_admin GET tables/salesorderdetails | jq "[.value[] | select(._salesorderid_value == \"$so\")] | length"
}
line_sql="INSERT INTO fno.salesorderlines VALUES ('usmf', '%s', 1, 'LATE-P1', 1, 1, 1)"
order_sql="INSERT INTO fno.salesorderheaders VALUES ('usmf', '%s', '$cust', '$cur', 'Late', 1, 1)"

# --- the parent comes later -------------------------------------------------------------------
n=$(waits)
psql_q "$(printf "$line_sql" SO-LATE1)" >/dev/null
check_status "the daemon says the line waits for its parent" 0 wait_for 60 alive_and more_waits "$n"
check_contains "naming the parent" 'SO-LATE1' "$(grep 'change waits for its parent' "$DW_E2E_DIR/daemon.log" | tail -1)"
psql_q "UPDATE fno.customersv3 SET primarycontactphone = '+1 555 0170' WHERE dataareaid = 'usmf' AND customeraccount = '$cust'" >/dev/null
check_status "meanwhile another row's change is applied" 0 wait_for 60 alive_and phone_is '+1 555 0170'
check_eq "the line is not parked meanwhile" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
psql_q "$(printf "$order_sql" SO-LATE1)" >/dev/null
check_status "the order arrives and the job catches up" 0 e2e_wait_applied
check_eq "the line is in Dataverse under its order" 1 "$(lines_of SO-LATE1)"
check_eq "no error row" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"

# --- a kill -9 while a line waits ------------------------------------------------------------
n=$(waits)
psql_q "$(printf "$line_sql" SO-LATE2)" >/dev/null
check_status "a second line waits" 0 wait_for 60 alive_and more_waits "$n"
kill -9 "$daemon"
wait "$daemon" 2>/dev/null
e2e_start_daemon
psql_q "$(printf "$order_sql" SO-LATE2)" >/dev/null
check_status "after a restart the order comes and the job catches up" 0 e2e_wait_applied
check_eq "the line was redelivered and is in Dataverse" 1 "$(lines_of SO-LATE2)"
check_eq "still no error row" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"

# --- the parent never comes: the retries run out ----------------------------------------------
kill -TERM "$daemon"
wait "$daemon"
sed -i 's/^missing_parent_retries = .*/missing_parent_retries = 2/' "$DW_E2E_CONF"
e2e_start_daemon
psql_q "$(printf "$line_sql" SO-NEVER)" >/dev/null
check_status "the orphan line is parked once its retries are spent" 0 e2e_wait_applied
check_eq "as one open missing_parent error naming the order" "open|missing_parent|1" "$(psql_q "
    SELECT status || '|' || class || '|' || (missing_parent LIKE 'salesorders(%SO-NEVER%')::int
      FROM dwasync.error")"
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
finish

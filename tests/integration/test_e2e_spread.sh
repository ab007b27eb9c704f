#!/usr/bin/env bash
# Requests spread while rows are expensive (issue 20): each row costs Dataverse 3 ms here, as
# the sink measures from its writes, so the 640 accounts of one transaction (a level of their
# own) go in parallel requests of even sizes, each carrying 200 ms of server time or more (67
# rows), instead of one request of 640 that the next level would wait for. Dataverse equals
# the source afterwards (the oracle).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=debug e2e_setup --cost-row-ms 3 --cost-bulk-row-ms 3 >/dev/null
# The transaction's commit closes its window, not a timer: however slowly it is read, its
# 640 accounts reach the sink together, as one level.
sed -i "s/^window_ms = 50\$/window_ms = 600000/" "$DW_E2E_CONF"
e2e_load_sample
psql_q "SELECT fno.sample_generate(300, 5001)" >/dev/null
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced 300 || die "the sample was not applied"

accounts=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE partytype = 'Organization'")
check_eq "the sample has 640 organizations (accounts)" 640 "$accounts"
from=$(($(wc -l <"$DW_E2E_DIR/daemon.log") + 1))
lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET primarycontactphone = primarycontactphone || '9'
                       WHERE partytype = 'Organization'")
e2e_wait_checkpoint "$lsn" 300 || die "the update was not applied"
sizes=$(tail -n +"$from" "$DW_E2E_DIR/daemon.log" |
    sed -n 's/.*sending POST .*\/accounts\/Microsoft.Dynamics.CRM.UpsertMultiple (attempt 1, \([0-9]*\) rows).*/\1/p' |
    sort -n)
log "accounts' requests: $(echo $sizes)"
check_eq "every account was sent once" 640 "$(awk '{s += $1} END {print s}' <<<"$sizes")"
check_eq "in two requests or more, each of 67 rows or more, of even sizes" "yes yes yes" \
    "$([ "$(wc -l <<<"$sizes")" -ge 2 ] && echo yes) $([ "$(head -1 <<<"$sizes")" -ge 67 ] && echo yes) $(
        [ $(($(tail -1 <<<"$sizes") - $(head -1 <<<"$sizes"))) -le 1 ] && echo yes)"
check_eq "Dataverse equals the source (oracle)" 0 "$(e2e_mismatches)"
finish

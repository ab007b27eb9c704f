#!/usr/bin/env bash
# The README's triage section, as written, on the demo's setup (the sample job fno_sample,
# as demo.sh --keep leaves it): its shell block gives a customer an on-hold status the value
# map lacks, the daemon parks it, and the five queries, run one by one as a member of
# dwasync_triage, show the job with one open error, the cause grouped, its details, queue a
# replay that fails again (the map still lacks 6), and skip it with a reason.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_applied 300 || die "the initial sync was not applied"
psql_q "CREATE ROLE alice LOGIN IN ROLE dwasync_triage" >/dev/null

sed -n '/^## Triage from psql/,/^## /p' "$DWASYNC_SOURCE_DIR/README.md" >"$DW_E2E_DIR/triage.md"
sed -n '/^```sh$/,/^```$/p' "$DW_E2E_DIR/triage.md" | grep -v '^```' >"$DW_E2E_DIR/poison.sh"
sed -n '/^```sql$/,/^```$/p' "$DW_E2E_DIR/triage.md" | grep -v '^```' >"$DW_E2E_DIR/queries.sql"
check_eq "the section has the five queries" 5 "$(grep -c '^-- [1-5]\.' "$DW_E2E_DIR/queries.sql")"
query() {   # query N: the Nth numbered query, run as alice
    awk -v n="$1" '/^-- [1-5]\./ {on = ($2 == n ".")} on' "$DW_E2E_DIR/queries.sql" |
        psql -X -qAt -v ON_ERROR_STOP=1 -U alice 2>&1
}

bash -e "$DW_E2E_DIR/poison.sh" >/dev/null 2>&1
check_eq "the section's shell block runs" 0 "$?"
e2e_wait_applied 120 || die "the poison change was not parked"

out=$(query 1)
check_contains "1. the job, active, with one open error" "fno_sample|active|" "$out"
check_eq "1. open errors" 1 "$(psql_q "select open_errors from dwasync.job_status where job = 'fno_sample'")"
out=$(query 2)
check_contains "2. the cause, grouped" "fno_sample|fno.customersv3|customers_organizations|mapping||open|1|" "$out"
out=$(query 3)
check_contains "3. the details name the customer" "C0000007" "$out"
check_contains "3. and the value the map lacks" "6" "$out"
out=$(query 4)
check_eq "4. the replay is queued" 1 "$out"
e2e_wait_replayed 120 || die "the replay did not finish"
check_eq "4. it fails again while the map lacks 6" "open" \
    "$(psql_q "select status from dwasync.error_detail where job = 'fno_sample'")"
out=$(query 5)
check_eq "5. skipping it releases no waiting row" 0 "$out"
check_eq "5. the row is skipped with the reason" "skipped|on-hold status 6 is not used by this company" \
    "$(psql_q "select status, skip_reason from dwasync.error_detail where job = 'fno_sample'")"
finish

#!/usr/bin/env bash
# Triage of bad source data (sql/066): a customer gets an on-hold status the map does not
# know, and two later changes carry the same bad value, so the key has an open head and two
# waiting followers. The status is fixed in the source; `dwasync errors resolve-from-source`
# on the head (no daemon running: the command replays itself) applies the customer's current
# row once and resolves the whole queue at once. The exact error rows are checked before
# and after; the fixing change, streamed afterwards, is applied normally (no new error row).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
DW_E2E_LOG_LEVEL=warn e2e_setup
dw job start fno_sample >/dev/null 2>&1 || die "job start failed"
e2e_load_sample
run() { timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up >/dev/null 2>&1; }
run || die "the first run failed"

acct() { # acct ACCOUNT FIELD: a field of usmf's account as dvemu holds it
    dv_load accounts
    psql_q "SELECT a.doc ->> '$2' FROM dv.accounts a
            WHERE a.doc ->> 'accountnumber' = '$1'
              AND a.doc ->> '_msdyn_company_value' = (SELECT c.doc ->> 'cdm_companyid' FROM dv.cdm_companies c
                                                       WHERE c.doc ->> 'cdm_companycode' = 'usmf')"
}
dv_load cdm_companies
rows() {
    psql_q "SELECT string_agg(status || ':' || operation || ':' || coalesce(class, '-'), ' '
                              ORDER BY commit_lsn, position)
              FROM dwasync.error WHERE map_name = 'customers_organizations'"
}
key="dataareaid = 'usmf' AND customeraccount = 'C0000001'"
psql_q "UPDATE fno.customersv3 SET onholdstatus = 9 WHERE $key"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Bad 1' WHERE $key"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Bad 2' WHERE $key"
run || die "the second run failed"
check_eq "before: the head is open, its two followers wait" \
    "open:update:mapping waiting:update:- waiting:update:-" "$(rows)"
head=$(psql_q "SELECT id FROM dwasync.error WHERE map_name = 'customers_organizations' AND status = 'open'")
last=$(psql_q "SELECT max(id) FROM dwasync.error WHERE map_name = 'customers_organizations'")

# The source is fixed; the daemon does not run, so the fix is not streamed yet.
psql_q "UPDATE fno.customersv3 SET onholdstatus = 2, organizationname = 'Fixed' WHERE $key"
out=$(dw --verbose errors resolve-from-source "$head" 2>&1)
check_contains "the command says what it resolved" "resolved 3 rows from the current source rows" "$out"
check_contains "and replays the state itself" "1 resolved, 0 failed again" "$out"
check_eq "after: every row of the key is resolved" \
    "resolved:update:mapping resolved:update:- resolved:update:-" "$(rows)"
check_eq "the followers were superseded by the source row of the last one" 2 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE map_name = 'customers_organizations'
               AND resolved_by LIKE '%(superseded by the source row, error $last)'")"
check_eq "the last row carries the source row it applied" "Fixed 2" \
    "$(psql_q "SELECT source_row -> 'new' ->> 'organizationname', source_row -> 'new' ->> 'onholdstatus'
               FROM dwasync.error WHERE id = $last" | tr '|' ' ')"
check_eq "Dataverse has the current name" "Fixed" "$(acct C0000001 name)"
check_eq "and the current on-hold status" "806380002" "$(acct C0000001 msdyn_onholdstatus)"
check_eq "resolving a resolved row does nothing" 0 \
    "$(psql_q "SELECT dwasync.resolve_from_source($head)" 2>/dev/null)"

run || die "the third run failed"
check_eq "the fix streamed afterwards added no error row" 3 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE map_name = 'customers_organizations'")"
check_eq "Dataverse equals the source (oracle)" 0 "$(e2e_mismatches)"
finish

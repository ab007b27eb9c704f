#!/usr/bin/env bash
# A write on the wire when the job starts again is not given up while Dataverse still works
# on it. dvemu runs on its manual clock and holds every request from some point until the
# test moves the clock: an account's credit limit goes out and is held; the daemon's job
# lock session is killed, so the job starts again (its in-flight writes are given up and
# come again from the slot). The daemon must first wait for the held request: Dataverse
# would otherwise apply it after the rows written again and after a newer change of the same
# account, taking that change back. Meanwhile the account changes again; then the clock
# moves. At the end the account holds the newer credit limit, no credit limit ever went back,
# Dataverse equals the source and there are no error rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup --clock manual
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "the initial sync is applied" 0 e2e_wait_synced

held() { curl -sf "$DVEMU_URL/_dvemu/clock" | jq -r .waiting; }
# (Predicates for wait_for, which runs its command again: an argument "$(held)" would be
# read once, when wait_for is called.)
holding() { test "$(held)" -ge 1; }
released() { test "$(held)" = 0; }
faults() { curl -sf -X POST "$DVEMU_URL/_dvemu/faults" -d "$1" >/dev/null || die "setting faults failed"; }
usmf=$(curl -sf "$DVEMU_URL/_dvemu/tables/cdm_companies" | jq -r '.value[] | select(.cdm_companycode == "usmf") | .cdm_companyid')
credit_limit() {
    curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | jq -r --arg a "$acct" --arg c "$usmf" \
        '[.value[] | select(.accountnumber == $a and ._msdyn_company_value == $c)] | map(.creditlimit) | join(",")'
}
acct=$(psql_q "SELECT customeraccount FROM fno.customersv3 WHERE partytype = 'Organization'
                 AND dataareaid = 'usmf' ORDER BY customeraccount LIMIT 1")
[ -n "$acct" ] || die "no organisation in the sample"
setting() { psql_q "UPDATE fno.customersv3 SET creditlimit = $1 WHERE customeraccount = '$acct'
                      AND dataareaid = 'usmf'" >/dev/null || die "updating $acct failed"; }

faults '{"rates": {"slow": 1}, "slow_ms": 1000, "seed": 1}'
setting 9000111
check_status "the write of 9000111 is held by Dataverse" 0 wait_for 60 holding
faults '{"rates": {"slow": 0}}' # what comes next is answered at once
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'dwasync job lock'" >/dev/null
check_status "the daemon waits for the held write before starting the job again" 0 \
    wait_for 60 grep -q "write request(s) on the wire: waiting for Dataverse" "$DW_E2E_DIR/daemon.log"
setting 9000222
curl -sf -X POST "$DVEMU_URL/_dvemu/clock" -d '{"advance_ms": 1000}' >/dev/null || die "moving the clock failed"
check_status "Dataverse has finished the held write" 0 wait_for 60 released
check_status "the job started again and applied everything" 0 e2e_wait_applied
check_eq "the account holds the newer credit limit" 9000222 "$(credit_limit)"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no account's credit limit went back (per-key order)" 0 "$rewinds"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
kill -TERM "$daemon"; wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
finish

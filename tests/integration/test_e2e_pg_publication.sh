#!/usr/bin/env bash
# A mapped table that leaves the publication fails the job instead of going silent.
# `ALTER TABLE fno.customersv3 DROP COLUMN partytype CASCADE` drops the column its maps'
# row filter names, and with it the table from the publication: after SIGHUP (which checks
# at once; the daemon also checks every minute) the job is `failed` with a reason naming
# the table, shown by `dwasync status`, dwasync.job_status and /healthz (503), and the
# daemon holds its stream but keeps running. Started again with the table still missing,
# the check at start fails the job again (and `run --until-caught-up` exits 1). Once the
# table is back in the publication and the job is active, changes flow again and the job
# stays active.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced
wait_sql() {   # wait_sql SQL VALUE: up to 120 s (a bound for a hung test, not a timing assert)
    local i
    for ((i = 0; i < 1200; i++)); do
        [ "$(psql_try "$1" 2>/dev/null)" = "$2" ] && return 0
        kill -0 "$daemon" 2>/dev/null || { log "the daemon is gone"; return 2; }
        sleep 0.1
    done
    return 1
}
state="SELECT state FROM dwasync.job WHERE name = 'fno_sample'"
port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log")
check_status "metrics listener bound" 0 test -n "$port"
check_eq "healthz is 200 while the job is active" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")"

psql_q "ALTER TABLE fno.customersv3 DROP COLUMN partytype CASCADE" >/dev/null
check_eq "the table left the publication" 0 "$(psql_q "SELECT count(*) FROM pg_publication_tables
    WHERE pubname = 'dwasync_fno_sample' AND tablename = 'customersv3'")"
kill -HUP "$daemon"
check_status "the job is marked failed" 0 wait_sql "$state" failed
reason=$(psql_q "SELECT state_reason FROM dwasync.job_status WHERE job = 'fno_sample'")
check_eq "job_status gives the reason" \
    'mapped tables not in publication "dwasync_fno_sample": fno.customersv3' "$reason"
status=$(dw status 2>&1)
check_contains "status shows the job failed" "failed" "$status"
status=$(dw status --json 2>&1)
check_contains "status gives the reason" "fno.customersv3" "$status"
code=$(curl -s -o "$DW_E2E_DIR/healthz" -w '%{http_code}' "http://127.0.0.1:$port/healthz")
check_eq "healthz is 503" 503 "$code"
check_contains "healthz gives the reason" "job failed: mapped tables not in publication" \
    "$(cat "$DW_E2E_DIR/healthz")"
check_contains "the error is logged" "level=error msg=\"mapped tables not in publication" \
    "$(cat "$DW_E2E_DIR/daemon.log")"
check_status "the daemon keeps running" 0 kill -0 "$daemon"

# Started again with the table still missing: the check at start fails the job again, and
# a run --until-caught-up ends (a held job would never catch up).
kill -TERM "$daemon"; wait "$daemon"
check_eq "daemon stops cleanly" 0 $?
daemon=
psql_q "UPDATE dwasync.job SET state = 'active', state_reason = NULL WHERE name = 'fno_sample'"
check_status "run --until-caught-up exits 1" 1 dw run --job fno_sample --until-caught-up
check_eq "and leaves the job failed" failed "$(psql_q "$state")"
psql_q "UPDATE dwasync.job SET state = 'active', state_reason = NULL WHERE name = 'fno_sample'"
e2e_start_daemon
check_status "the check at start fails the job again" 0 wait_sql "$state" failed
check_eq "the reason is recorded again" 1 "$(grep -c 'level=error msg="mapped tables not in publication' "$DW_E2E_DIR/daemon.log" | awk '{print ($1 >= 2)}')"

# Fixed: the table is published again and the job started; changes flow, the job stays active.
psql_q "ALTER PUBLICATION dwasync_fno_sample ADD TABLE fno.customersv3" >/dev/null
psql_q "UPDATE dwasync.job SET state = 'active', state_reason = NULL WHERE name = 'fno_sample'"
lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET name = 'Euro (fixed)' WHERE currencycode = 'EUR'")
check_status "changes flow again" 0 e2e_wait_checkpoint "$lsn"
kill -HUP "$daemon"
lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET name = 'Euro' WHERE currencycode = 'EUR'")
check_status "and keep flowing after another check" 0 e2e_wait_checkpoint "$lsn"
check_eq "the job stays active" active "$(psql_q "$state")"
check_eq "the currency reached Dataverse" Euro "$(curl -sf "$DVEMU_URL/_dvemu/tables/transactioncurrencies" |
    jq -r '.value[] | select(.isocurrencycode == "EUR") | .currencyname')"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
finish

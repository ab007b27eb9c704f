#!/usr/bin/env bash
# No-op updates are not sent (issue 20): dual-write fires only when a mapped column changes.
# fno.customersv3 has REPLICA IDENTITY FULL, so each update brings its old row: an update of
# persons' credit limit (a column the contacts map does not read) and an update that sets
# organizations' names to what they were change nothing Dataverse holds. They send no
# request, dvemu writes no row, dwasync_changes_unchanged_total counts them, and the one real
# change committed after them is applied (and Dataverse still equals the source).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup >/dev/null
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced || die "the sample was not applied"
port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log")
[ -n "$port" ] || die "the metrics listener did not start"

metric() { # metric NAME: its value for the job (0 while it has none)
    curl -sf "http://127.0.0.1:$port/metrics" |
        awk -v m="$1" '$1 ~ "^"m"{job=\"fno_sample\"" {s += $2} END {print s + 0}'
}
# Waits (up to 60 s) until metric NAME reaches VALUE: the registry is refreshed once a second.
wait_metric() {
    local i
    for i in $(seq 1 240); do
        [ "$(metric "$1")" -ge "$2" ] && return 0
        sleep 0.25
    done
    return 1
}
writes() { # write requests so far (not the token's) and rows written, as "requests rows"
    curl -sf "$DVEMU_URL/_dvemu/counters" | jq -r '
        ([.requests | to_entries[] | select((.key | split(" ")[0]) as $m
            | ($m == "POST" or $m == "PATCH" or $m == "DELETE") and (.key | test("token") | not))
            | .value] | add // 0) as $r | ([.rows_written[]] | add // 0) as $w | "\($r) \($w)"'
}

persons=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE partytype = 'Person'")
orgs=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE partytype = 'Organization'")
unchanged0=$(metric dwasync_changes_unchanged_total)
read -r req0 rows0 <<<"$(writes)"
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE partytype = 'Person'"
psql_q "UPDATE fno.customersv3 SET organizationname = organizationname WHERE partytype = 'Organization'"
lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET primarycontactemail = 'changed@example.com'
                       WHERE customeraccount = 'C0000001' AND dataareaid = 'usmf'")
e2e_wait_checkpoint "$lsn" || die "the updates were not applied"
read -r req1 rows1 <<<"$(writes)"
check_eq "only the real change was written" 1 $((rows1 - rows0))
check_eq "only the real change was sent" 1 $((req1 - req0))
check_status "the no-op updates are counted" 0 \
    wait_metric dwasync_changes_unchanged_total $((unchanged0 + persons + orgs))
check_eq "and counted exactly" $((unchanged0 + persons + orgs)) \
    "$(metric dwasync_changes_unchanged_total)"
check_eq "the real change reached Dataverse" '"changed@example.com"' \
    "$(dvemu_api GET "accounts?\$filter=accountnumber%20eq%20'C0000001'&\$select=emailaddress1" |
        jq -c '[.value[].emailaddress1] | map(select(. == "changed@example.com")) | .[0]')"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches 2>/dev/null)"
finish

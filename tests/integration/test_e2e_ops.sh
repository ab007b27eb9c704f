#!/usr/bin/env bash
# Operating the daemon: /metrics counts what was applied, and the count agrees with what
# dvemu says it wrote; /healthz answers 200 while the stream and Dataverse work, 503 with
# a JSON reason while Dataverse is down, and 200 again after it recovers, with nothing lost;
# `status --json` reports the job.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
# Short backoffs so recovery after the outage is quick.
sed -i 's/^\[dataverse\]$/[dataverse]\nretry_max_backoff_ms = 500/' "$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
on_exit "kill -9 $daemon"
check_status "initial sync applied" 0 e2e_wait_applied
port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log")
check_status "metrics listener bound" 0 test -n "$port"

metric_sum() {   # metric_sum NAME: sum over every series of a metric
    curl -sf "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}'
}
written=$(curl -sf "$DVEMU_URL/_dvemu/counters" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["rows_written"].values()))')
counted() { [ "$(metric_sum dwasync_changes_applied_total)" = "$written" ]; }
wait_for 60 counted   # the registry is refreshed once a second
check_eq "changes applied (metrics) = rows dvemu wrote during the initial sync" "$written" \
    "$(metric_sum dwasync_changes_applied_total)"
check_eq "no change parked" 0 "$(metric_sum dwasync_changes_parked_total)"
check_eq "job active" 1 "$(metric_sum dwasync_job_active)"
check_eq "/healthz 200 while all is well" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")"

curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=1" >/dev/null
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE partytype = 'Organization'"
code=
for _ in $(seq 1 40); do
    code=$(curl -s -o "$DW_E2E_DIR/health.json" -w '%{http_code}' "http://127.0.0.1:$port/healthz")
    [ "$code" = 503 ] && break
    sleep 0.5
done
check_eq "/healthz 503 while Dataverse is down" 503 "$code"
check_contains "with a JSON reason" '"dataverse"' "$(cat "$DW_E2E_DIR/health.json")"
curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=0" >/dev/null
check_status "changes made during the outage are applied after it" 0 e2e_wait_applied
for _ in $(seq 1 20); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
    [ "$code" = 200 ] && break
    sleep 0.5
done
check_eq "/healthz 200 again after recovery" 200 "$code"
check_eq "nothing lost or parked: Dataverse equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"
status=$(dw status --json)
check_eq "status --json: the job is active" "fno_sample active" "$(python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    print(j["name"], j["state"])' <<<"$status")"
# SIGHUP re-reads the log settings.
check_eq "no debug lines at level info" 0 "$(grep -c 'level=debug' "$DW_E2E_DIR/daemon.log")"
sed -i 's/^level = info$/level = debug/' "$DW_E2E_CONF"
kill -HUP $daemon
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE customeraccount = 'C0000001'"
check_status "change after the reload applied" 0 e2e_wait_applied
check_eq "SIGHUP: debug lines after raising the level" 1 "$(grep -q 'level=debug' "$DW_E2E_DIR/daemon.log" && echo 1)"
check_contains "SIGHUP: the reload is logged" "configuration reloaded" "$(cat "$DW_E2E_DIR/daemon.log")"
kill -TERM $daemon; wait $daemon
check_eq "daemon stops cleanly" 0 $?
finish

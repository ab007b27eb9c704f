#!/usr/bin/env bash
# High availability with the real daemon: two `dwasync run` for one job; the first is
# active (/healthz 200, dwasync_job_active 1), the second a standby (/healthz 503 saying
# so). A workload of updates runs, the active one is killed with SIGKILL in the middle, the
# standby takes over and finishes it: Dataverse (dvemu) ends exactly as the source, and
# each key's history in dvemu only moves forward, apart from the one replay of the suffix
# the killed runner had applied but not yet confirmed.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
for n in a b; do
    cp "$DW_E2E_CONF" "$DW_E2E_DIR/$n.conf"
    printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_DIR/$n.conf"
done
runner() {   # runner NAME: starts `dwasync run` with NAME.conf, logging to NAME.log
    "$DWASYNC_BIN" --config "$DW_E2E_DIR/$1.conf" run --job fno_sample >"$DW_E2E_DIR/$1.log" 2>&1 &
}
port_of() { grep -o 'port [0-9]*)' "$DW_E2E_DIR/$1.log" | head -1 | tr -dc 0-9; }

runner a; a=$!
on_exit "kill -9 $a"
e2e_wait_log a "streaming changes to Dataverse" && pass "first runner is active" ||
    fail "first runner is active"
runner b; b=$!
on_exit "kill $b"
e2e_wait_log b "waiting as a standby" && pass "second runner is a standby" ||
    fail "second runner is a standby"
pa=$(port_of a) pb=$(port_of b)
check_eq "active /healthz 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pa/healthz")"
body=$(curl -s "http://127.0.0.1:$pb/healthz")
check_eq "standby /healthz 503" 503 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pb/healthz")"
check_contains "standby says why" "standby" "$body"
check_contains "active reports job_active 1" 'dwasync_job_active{job="fno_sample"} 1' \
    "$(curl -s "http://127.0.0.1:$pa/metrics")"
check_eq "standby does not report itself active" 0 \
    "$(curl -s "http://127.0.0.1:$pb/metrics" | grep -c 'dwasync_job_active{job="fno_sample"} 1')"

# The workload: 300 transactions, each renaming two currencies to the next version.
n=300
(
    for ((i = 1; i <= n; i++)); do
        psql_q "update fno.currencies set name = 'v' || $i where currencycode in ('USD', 'EUR')"
    done
) &
load=$!
# Kill the active runner once part of the workload has reached Dataverse.
for ((i = 0; i < 600; i++)); do
    v=$(curl -s "$DVEMU_URL/_dvemu/tables/transactioncurrencies" |
        jq -r '[.value[] | select(.isocurrencycode == "USD") | .currencyname][0] // ""')
    [[ "$v" =~ ^v([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 50 ] && break
    sleep 0.1
done
{ kill -9 "$a"; wait "$a"; } 2>/dev/null
pass "killed the active runner at USD = $v"
wait "$load"
after=$(psql_q "select pg_current_wal_lsn()")
e2e_wait_log b "acquired the job lock" && pass "standby took over" || fail "standby took over"

# Wait until the standby has applied everything (bounded; the assertion is the state).
for ((i = 0; i < 600; i++)); do
    got=$(curl -s "$DVEMU_URL/_dvemu/tables/transactioncurrencies" |
        jq -r '[.value[] | select(.isocurrencycode == "USD" or .isocurrencycode == "EUR") | .currencyname] | sort | join(",")')
    [ "$got" = "v$n,v$n" ] && break
    sleep 0.1
done
check_eq "Dataverse ends as the source" "v$n,v$n" "$got"
# (The sample's map filters out its placeholder currency "999".)
src=$(psql_q "select string_agg(currencycode || '=' || name || '/' || symbol, ',' order by currencycode)
              from fno.currencies where currencycode <> '999'")
dst=$(curl -s "$DVEMU_URL/_dvemu/tables/transactioncurrencies" |
    jq -r '[.value[] | "\(.isocurrencycode)=\(.currencyname)/\(.currencysymbol)"] | sort | join(",")')
check_eq "every currency row equal" "$src" "$dst"

# Per-key order: versions written for a key never go backwards except once (the replay
# of what the killed runner applied after its last confirmed position).
hist=$(curl -s "$DVEMU_URL/_dvemu/history?table=transactioncurrencies")
for key in USD EUR; do
    rewinds=$(jq -r --arg k "$key" '[.value[] | select(.row.isocurrencycode == $k) | .row.currencyname
        | select(test("^v[0-9]+$")) | ltrimstr("v") | tonumber] as $v
        | [range(1; $v | length) | select($v[.] < $v[. - 1])] | length' <<<"$hist")
    check_eq "$key history moves forward (at most one replay)" 1 "$([ "$rewinds" -le 1 ] && echo 1 || echo 0)"
done
check_eq "history not truncated" 0 "$(jq .dropped <<<"$hist")"
# The control schema shares the database, so the daemon's own checkpoints write WAL that
# no published change follows: caught up means confirmed up to the workload's last commit,
# give or take those few bytes (under 64 KiB), not zero lag.
for ((i = 0; i < 600; i++)); do
    confirmed=$(dw status --json | jq -r '.jobs[0].confirmed_lsn')
    behind=$(psql_q "select pg_wal_lsn_diff('$after', '$confirmed')::bigint")
    [ "$behind" -lt 65536 ] && break
    sleep 0.1
done
check_eq "status shows the workload confirmed (confirmed $confirmed, workload end $after)" 1 \
    "$([ "$behind" -lt 65536 ] && echo 1 || echo 0)"
# The new active runner reports itself (dwasync.runner heartbeat) and its traffic.
for ((i = 0; i < 100; i++)); do
    st=$(dw status --json)
    [ "$(jq '.jobs[0].runner.pid' <<<"$st")" = "$b" ] && break
    sleep 0.1
done
check_eq "status names the standby as the runner now" "$b" "$(jq '.jobs[0].runner.pid' <<<"$st")"
check_eq "status: not throttled" '"none"' "$(jq '.jobs[0].throttling.state' <<<"$st")"
check_contains "status line of the runner" "applied" "$(jq -r '.jobs[0].runner.status' <<<"$st")"
ok2xx=$(curl -s "http://127.0.0.1:$pb/metrics" |
    sed -n 's/^dwasync_dataverse_requests_total{job="fno_sample",status="2xx"} //p')
check_eq "new active runner counts its 2xx requests (got ${ok2xx:-none})" 1 \
    "$([ "${ok2xx:-0}" -gt 0 ] && echo 1 || echo 0)"
[ "$DW_FAILED" = 0 ] || { log "standby log:"; tail -20 "$DW_E2E_DIR/b.log" >&2; }
finish

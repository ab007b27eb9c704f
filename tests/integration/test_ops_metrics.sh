#!/usr/bin/env bash
# /metrics and /healthz served by the listener inside a poll loop (dw_ops_harness): counters
# move as updates arrive, /healthz flips to 503 with a JSON reason and back, unknown paths
# are 404, a busy port is a clear error.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
harness=$DWASYNC_BUILD_DIR/bin/dw_ops_harness
[ -x "$harness" ] || die "no $harness"
dw_mktemp work metrics

coproc H { "$harness" metrics 127.0.0.1:0 2>/dev/null; }
on_exit "kill $H_PID"
read -r -t 10 word port <&"${H[0]}" || die "harness did not start"
check_eq "harness listens" "port" "$word"
base="http://127.0.0.1:$port"
cmd() { echo "$*" >&"${H[1]}"; local r; read -r -t 10 r <&"${H[0]}"; echo "$r"; }

body=$(curl -fsS "$base/metrics")
check_contains "HELP line" "# HELP dwasync_changes_applied_total " "$body"
check_contains "TYPE line" "# TYPE dwasync_changes_applied_total counter" "$body"
check_contains "gauge type" "# TYPE dwasync_slot_lag_bytes gauge" "$body"
check_contains "rss reported" "dwasync_process_resident_memory_bytes " "$body"
ctype=$(curl -fsS -o /dev/null -w '%{content_type}' "$base/metrics")
check_eq "exposition content type" "text/plain; version=0.0.4; charset=utf-8" "$ctype"

check_eq "inc accepted" ok "$(cmd inc dwasync_changes_applied_total crm custtable insert 3)"
check_eq "inc accepted" ok "$(cmd inc dwasync_changes_applied_total crm custtable insert 4)"
check_eq "inc accepted" ok "$(cmd inc dwasync_changes_parked_total crm custtable missing_parent 1)"
check_eq "unknown metric refused" error "$(cmd inc dwasync_bogus_total crm t c 1)"
body=$(curl -fsS "$base/metrics")
check_contains "applied counter moved" \
    'dwasync_changes_applied_total{class="insert",job="crm",table="custtable"} 7' "$body"
check_contains "parked counter moved" \
    'dwasync_changes_parked_total{class="missing_parent",job="crm",table="custtable"} 1' "$body"

code=$(curl -sS -o "$work/healthz" -w '%{http_code}' "$base/healthz")
check_eq "healthz 200 when healthy" 200 "$code"
check_contains "healthz ok body" '"status":"ok"' "$(cat "$work/healthz")"
cmd health down >/dev/null
code=$(curl -sS -o "$work/healthz" -w '%{http_code}' "$base/healthz")
check_eq "healthz 503 when dataverse is down" 503 "$code"
down=$(cat "$work/healthz")
check_contains "503 says why" '"reasons":["dataverse is not reachable"]' "$down"
check_contains "503 is JSON with detail" '"detail":"told to be down"' "$down"
cmd health up >/dev/null
check_eq "healthz back to 200" 200 "$(curl -sS -o /dev/null -w '%{http_code}' "$base/healthz")"
check_eq "unknown path 404" 404 "$(curl -sS -o /dev/null -w '%{http_code}' "$base/other")"
check_eq "POST refused" 405 "$(curl -sS -o /dev/null -w '%{http_code}' -d x "$base/metrics")"

out=$("$harness" metrics "127.0.0.1:$port" 2>&1); status=$?
check_eq "busy port fails" 1 "$status"
check_contains "busy port message" "cannot listen for metrics" "$out"
out=$("$harness" metrics "nonsense" 2>&1)
check_contains "bad listen value message" 'is not HOST:PORT' "$out"

cmd quit >/dev/null
finish

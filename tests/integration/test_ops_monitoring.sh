#!/usr/bin/env bash
# The monitoring files shipped in packaging/monitoring/: the Prometheus rule file parses
# (promtool check rules) and its alerts fire exactly on the cases in
# tests/data/monitoring/dwasync-alerts.test.yml (promtool test rules); the rules and the
# Grafana dashboard name only metrics and labels that include/dwasync/metrics.h defines
# (check_monitoring.py, shown to catch a renamed metric, a renamed label and a gauge under
# rate()); and a real daemon's /metrics exposes every family they use, with the labels
# they use on it.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
mon=$DWASYNC_SOURCE_DIR/packaging/monitoring
rules=$mon/dwasync-alerts.yml
dash=$mon/dwasync-dashboard.json
header=$DWASYNC_SOURCE_DIR/include/dwasync/metrics.h
checker() { python3 "$DWASYNC_SOURCE_DIR/tests/harness/check_monitoring.py" "$@"; }
python3 -c 'import yaml' 2>/dev/null || die "python3 cannot import yaml: run tests/harness/deps.sh (python3-yaml)"
command -v promtool >/dev/null || die "no promtool: run tests/harness/deps.sh (Debian's prometheus package)"
dw_mktemp work monitoring

# --- the rule file -------------------------------------------------------------------------
check_status "promtool check rules accepts the rule file" 0 promtool check rules "$rules"
{ cat "$rules"; printf '      - alert: Broken\n        expr: sum by (job) (rate(dwasync_changes_parked_total[5m])\n'; } \
    >"$work/broken.yml"
check_status "promtool check rules refuses an unbalanced expression" 1 \
    promtool check rules "$work/broken.yml"
sed 's/{{ $labels.job }} is more than 1 GiB/{{ $labels.job is more than 1 GiB/' "$rules" >"$work/badtemplate.yml"
check_status "promtool check rules refuses a broken annotation template" 1 \
    promtool check rules "$work/badtemplate.yml"

# promtool compares annotations exactly, so the cases run against a copy that keeps only
# the (short) summary; the descriptions are still template-checked by `check rules` above.
mkdir -p "$work/rules" "$work/mutant"
checker strip "$rules" "$work/rules/dwasync-alerts.yml" || die "cannot strip the rule file"
cp "$DWASYNC_SOURCE_DIR/tests/data/monitoring/dwasync-alerts.test.yml" "$work/rules/"
out=$(cd "$work/rules" && promtool test rules dwasync-alerts.test.yml 2>&1)
check_eq "every alert fires on its cases and only there (promtool test rules)" 0 $?
grep -q FAILED <<<"$out" && sed 's/^/#   /' <<<"$out"
# The same cases catch a stall rule that forgets "changes waiting" (an idle job would page).
grep -v 'and dwasync_slot_lag_seconds > 0$' "$rules" >"$work/mutant/unstripped.yml"
checker strip "$work/mutant/unstripped.yml" "$work/mutant/dwasync-alerts.yml"
cp "$DWASYNC_SOURCE_DIR/tests/data/monitoring/dwasync-alerts.test.yml" "$work/mutant/"
out=$(cd "$work/mutant" && promtool test rules dwasync-alerts.test.yml 2>&1)
check_contains "the cases catch a stall rule without its lag condition" \
    'alertname: DwasyncRunnerStalled' "$out"

# --- names and labels against metrics.h ------------------------------------------------------
check_eq "rules and dashboard use only defined metrics and labels" "" \
    "$(checker static "$header" "$rules" "$dash" 2>&1)"
sed 's/"dwasync_slot_lag_bytes"/"dwasync_slot_wal_lag_bytes"/' "$header" >"$work/renamed.h"
check_contains "a renamed metric is caught" \
    "alert DwasyncSlotLagBytesHigh: metric dwasync_slot_lag_bytes is not defined in metrics.h" \
    "$(checker static "$work/renamed.h" "$rules" "$dash" 2>&1)"
sed 's|/\* job, status \*/|/* job, code */|' "$header" >"$work/relabelled.h"
check_contains "a renamed label is caught" \
    "metric dwasync_dataverse_requests_total has no label status" \
    "$(checker static "$work/relabelled.h" "$rules" "$dash" 2>&1)"
sed 's/rate(dwasync_dataverse_throttled_total/rate(dwasync_slot_lag_bytes/' "$rules" >"$work/gauge.yml"
check_contains "rate() of a gauge is caught" "rate() of dwasync_slot_lag_bytes, which is not a counter" \
    "$(checker static "$header" "$work/gauge.yml" "$dash" 2>&1)"
# A histogram's series (_bucket with le, _sum, _count) count as its family's: the checker
# is ready for one, and still refuses le where it does not belong.
{ cat "$header"; echo '#define DW_M_LATENCY "dwasync_apply_latency_seconds" /* job, map */'; } \
    >"$work/histogram.h"
{ cat "$rules"; cat <<'YML'
      - alert: DwasyncSlowApply
        expr: histogram_quantile(0.99, sum by (job, map, le) (rate(dwasync_apply_latency_seconds_bucket[5m]))) > 60
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: "job {{ $labels.job }} map {{ $labels.map }} is slow"
          description: "Run `dwasync status`."
YML
} >"$work/histogram.yml"
check_eq "a histogram's _bucket series and le label are accepted" "" \
    "$(checker static "$work/histogram.h" "$work/histogram.yml" "$dash" 2>&1)"
sed 's/dwasync_apply_latency_seconds_bucket/dwasync_apply_latency_seconds_sum/' "$work/histogram.yml" \
    >"$work/histogram-sum.yml"
check_contains "le on a histogram's _sum is caught" "label le is on none of" \
    "$(checker static "$work/histogram.h" "$work/histogram-sum.yml" "$dash" 2>&1)"
jq 'del(.templating.list[0])' "$dash" >"$work/nods.json"
check_contains "a dashboard without its datasource variable is caught" \
    "no Prometheus datasource variable" "$(checker static "$header" "$rules" "$work/nods.json" 2>&1)"
check_eq "the dashboard is Grafana schema 39" 39 "$(jq .schemaVersion "$dash")"

# --- a real daemon's /metrics -----------------------------------------------------------------
e2e_setup
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced
# A change the map cannot take (an unknown on-hold status): parked and error series exist
# only once something was parked.
psql_q "UPDATE fno.customersv3 SET onholdstatus = 9 WHERE dataareaid = 'usmf' AND customeraccount = 'C0000001'"
port=
for _ in $(seq 1 240); do
    port=$(sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log")
    [ -n "$port" ] && break
    sleep 0.5
done
check_status "metrics listener bound" 0 test -n "$port"
# The registry is refreshed about once a second: wait (bounded) until a scrape shows every
# family with the labels the rules and the dashboard use, then report what is missing.
out=unscraped
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/metrics" >"$work/scrape.txt" || { sleep 0.5; continue; }
    out=$(checker exposed "$header" "$rules" "$dash" "$work/scrape.txt" 2>&1) && break
    sleep 0.5
done
check_eq "the daemon exposes every family and label the rules and dashboard use" "" "$out"
check_status "promtool check metrics accepts the exposition" 0 \
    sh -c "promtool check metrics <'$work/scrape.txt'"
finish

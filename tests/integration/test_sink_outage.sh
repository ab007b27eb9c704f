#!/usr/bin/env bash
# 503 outage then recovery: the sink retries with backoff for as long as the outage lasts
# and loses nothing. With [dataverse] retry_limit set, rows give up as "transient" instead.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-outage
dvemu_start
sink_conf "$work/dw.conf" "batch_size = 20" "retry_max_backoff_ms = 400"
sink_seed_company "$work/dw.conf" "$work/rows"

sink_accounts 300 O >"$work/rows.jsonl"
dvemu_admin POST "outage?on=1" >/dev/null
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err" &
apply_pid=$!
# Let the outage last until the sink has been refused a good number of times.
for ((i = 0; i < 200; i++)); do
    [ "$(dvemu_admin GET counters | jq .faults_injected)" -ge 10 ] && break
    sleep 0.1
done
check_eq "writes are still pending during the outage" 0 "$(wc -l <"$work/out")"
dvemu_admin POST "outage?on=0" >/dev/null
wait "$apply_pid"
check_eq "run exits 0 after recovery" 0 $?
check_eq "all 300 rows applied" 300 "$(sink_count "$work/out" applied)"
refused=$(dvemu_admin GET counters | jq .faults_injected)
[ "$refused" -ge 10 ] && pass "dvemu refused $refused requests with 503" ||
    fail "dvemu refused requests with 503" "$refused"
check_eq "nothing lost: 300 accounts" 300 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"
check_contains "backoff is logged" "transient failure (HTTP 503" "$(cat "$work/err")"

# With a retry limit, a lasting outage ends in "gave_up" rows, not an endless run.
sink_conf "$work/limited.conf" "batch_size = 20" "retry_max_backoff_ms = 200" "retry_limit = 3"
sink_accounts 40 L >"$work/more.jsonl"
dvemu_admin POST "outage?on=1" >/dev/null
sink_apply "$work/limited.conf" "$work/more.jsonl" "$work/out" "$work/err"
check_eq "limited run exits 1" 1 $?
check_eq "every row gave up" 40 "$(sink_count "$work/out" gave_up)"
check_eq "as transient, with the last status" '["transient",503]' \
    "$(jq -c '[.class, .http]' "$work/out" | sort -u)"
check_contains "the message says how often it tried" "gave up after 3 attempts" \
    "$(jq -r .message "$work/out" | sort -u)"
dvemu_admin POST "outage?on=0" >/dev/null
check_eq "none of them was written" 300 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

finish

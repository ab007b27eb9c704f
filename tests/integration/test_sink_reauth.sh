#!/usr/bin/env bash
# A 401 mid-run: dvemu is restarted (same port, same data, a new token signing key), so
# the sink's cached token is suddenly refused. The sink renews it once and retries; the
# outage of the restart itself is retried too; every row lands exactly once.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-reauth
slow='{"rates":{"slow":1.0},"slow_ms":150}'
dvemu_start --state "$work/state.json" --faults "$slow"
sink_conf "$work/dw.conf" "batch_size = 10" "max_concurrency = 1" "retry_max_backoff_ms = 300"
sink_seed_company "$work/dw.conf" "$work/rows"

sink_accounts 150 A >"$work/rows.jsonl"
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err" &
apply_pid=$!
# Restart once the run is under way (some rows written, the token in use).
for ((i = 0; i < 100; i++)); do
    [ "$(curl -s "$DVEMU_URL/_dvemu/counters" | jq '.rows_written.accounts // 0')" -ge 20 ] && break
    sleep 0.05
done
dvemu_stop
"$DVEMU_BIN" --listen "127.0.0.1:$DVEMU_PORT" --metadata "$DVEMU_METADATA_DEFAULT" \
    --state "$work/state.json" --tenant "$DVEMU_TENANT" \
    --client "$DVEMU_CLIENT_ID:@$DVEMU_SECRET_FILE" --admin --faults "$slow" \
    >"$work/dvemu2.log" 2>&1 &
DVEMU_PID=$!
for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "$DVEMU_URL/_dvemu/counters" && break
    sleep 0.05
done
wait "$apply_pid"
check_eq "run exits 0 across the restart" 0 $?
check_eq "all 150 rows applied" 150 "$(sink_count "$work/out" applied)"
check_contains "the old token was refused by the new instance" "status=401" "$(cat "$work/dvemu2.log")"
check_contains "the sink renewed it" "renewing the access token and retrying" "$(cat "$work/err")"
check_eq "each row exactly once" 150 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

finish

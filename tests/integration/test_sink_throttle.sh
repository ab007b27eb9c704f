#!/usr/bin/env bash
# 429 storm: dvemu's service protection limits are set tiny, so a run of 400 rows is
# throttled again and again. Every row lands, and while a Retry-After pause is in force the
# sink sends nothing at all to the environment (counted from dvemu's request log).
# dvemu's window runs on its manual clock, moved on by the test each time dvemu throttles:
# every window ends in a 429 however fast or slow the machine is.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-throttle
dvemu_start --clock manual --limit-requests 15 --limit-window 2
sink_conf "$work/dw.conf" "batch_size = 10" "max_concurrency = 8"
sink_seed_company "$work/dw.conf" "$work/rows"

sink_accounts 400 R >"$work/rows.jsonl"
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err" &
apply_pid=$!
seen=0
while kill -0 "$apply_pid" 2>/dev/null; do
    now=$(dvemu_admin GET counters | jq .throttled)
    if [ "$now" -gt "$seen" ]; then # a 429: the window moves on while the sink pauses
        dvemu_clock_advance 2000
        seen=$now
    fi
    sleep 0.05
done
wait "$apply_pid"
check_eq "throttled run exits 0" 0 $?
check_eq "all 400 rows applied" 400 "$(sink_count "$work/out" applied)"
check_eq "dvemu holds 400 accounts" 400 \
    "$(curl -s "$DVEMU_URL/_dvemu/counters" | jq .rows_written.accounts)"

throttled=$(dvemu_admin GET counters | jq .throttled)
[ "$throttled" -gt 0 ] && pass "dvemu throttled the run ($throttled times)" ||
    fail "dvemu throttled the run" "no 429 was sent; the test proves nothing"
check_contains "the sink paused the environment" "pausing all requests" "$(cat "$work/err")"

# dvemu's Retry-After here is at least 1 s. For each 429, count API requests that *arrived*
# (log time less duration) from 150 ms after it (anything in flight has landed by then) to
# 950 ms after it: none.
during=$(awk '
    /msg=request/ && /path=\/api\/data\// {
        match($0, /ts=[^ ]+/); ts = substr($0, RSTART + 3, RLENGTH - 3)
        split(substr(ts, 12, 12), t, ":"); s = t[1] * 3600 + t[2] * 60 + t[3]
        ms = 0; if (match($0, / ms=[0-9.]+/)) ms = substr($0, RSTART + 4, RLENGTH - 4)
        n++; end[n] = s; start[n] = s - ms / 1000; st[n] = ($0 ~ /status=429/)
    }
    END {
        c = 0
        for (i = 1; i <= n; i++) if (st[i])
            for (j = 1; j <= n; j++)
                if (start[j] > end[i] + 0.15 && start[j] < end[i] + 0.95) c++
        print c
    }' "$DVEMU_LOG")
check_eq "no request reached dvemu during a Retry-After pause" 0 "$during"

# Concurrency ceilings: dvemu refuses a third concurrent request (429, 0x80072326), and every
# request takes 100 ms so that they overlap. The sink's window would grow past 2, but the
# server's x-ms-dop-hint of 2 (first run) or [dataverse] max_concurrency = 2 (second run)
# caps it: not one request is refused. A third run without either cap shows the limit bites.
ceiling_run() { # LABEL DVEMU_ARGS... -- CONF_LINES...
    local label=$1 a=() c=()
    shift
    while [ "$1" != "--" ]; do a+=("$1"); shift; done
    shift
    c=("$@")
    dvemu_stop
    dvemu_start --limit-concurrent 2 --faults '{"rates":{"slow":1.0},"slow_ms":100}' "${a[@]}"
    sink_conf "$work/c.conf" "batch_size = 10" "${c[@]}"
    sink_seed_company "$work/c.conf" "$work/c"
    sink_accounts 300 C >"$work/c.jsonl"
    sink_apply "$work/c.conf" "$work/c.jsonl" "$work/out" "$work/err"
    check_eq "$label: all rows applied" 300 "$(sink_count "$work/out" applied)"
    ceiling_throttled=$(dvemu_admin GET counters | jq .throttled)
}
ceiling_run "dop hint 2" --dop-hint 2 -- "max_concurrency = 16"
check_eq "x-ms-dop-hint caps concurrency: no 429" 0 "$ceiling_throttled"
ceiling_run "max_concurrency 2" --dop-hint 50 -- "max_concurrency = 2"
check_eq "max_concurrency caps concurrency: no 429" 0 "$ceiling_throttled"
ceiling_run "no cap" --dop-hint 50 -- "max_concurrency = 16"
[ "$ceiling_throttled" -gt 0 ] && pass "without a cap the window grows past 2 (and is throttled)" ||
    fail "without a cap the window grows past 2" "no 429: the two checks above prove nothing"

finish

#!/usr/bin/env bash
# After an outage, recovery is noticed within seconds (issue 20): while Dataverse answers 503
# the write requests back off exponentially (here up to retry_max_backoff_ms = 10 minutes),
# and a cheap probe (GET WhoAmI) asks on a capped interval (at most 2 s) whether Dataverse
# answers again; its first answer releases every request that was backing off. Asserted on
# dvemu's request counters and log and on the sink's log, not on elapsed time (the time to
# recover is printed, as a measurement). Also: no probe when the backoff is as short as a
# probe interval.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-probe
dvemu_start
sink_conf "$work/dw.conf" "batch_size = 20" "retry_max_backoff_ms = 600000"
sink_seed_company "$work/dw.conf" "$work/rows"
show_log_on_failure "$work/err" "$work/err2"

counter() { # counter "<METHOD> <resource> <status>": how many such requests dvemu answered
    local all
    all=$(dvemu_admin GET counters)
    jq --arg k "$1" '.requests[$k] // 0' <<<"$all"
}
refused_work() { # requests other than the probe that dvemu refused with 503
    local all
    all=$(dvemu_admin GET counters)
    jq '[.requests | to_entries[] | select((.key | endswith(" 503")) and
        (.key | startswith("GET WhoAmI ") | not)) | .value] | add // 0' <<<"$all"
}

sink_accounts 100 P >"$work/rows.jsonl"
dvemu_admin POST "outage?on=1" >/dev/null
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err" &
apply_pid=$!
# The outage lasts until the probe has been refused six times: by then the requests of the
# apply (metadata, parent lookups, writes) have been refused about five times each and wait
# several seconds for their next attempt.
for ((i = 0; i < 1200; i++)); do
    [ "$(counter "GET WhoAmI 503")" -ge 6 ] && break
    sleep 0.1
done
probes_refused=$(counter "GET WhoAmI 503")
[ "$probes_refused" -ge 6 ] && pass "probes asked during the outage ($probes_refused refused)" ||
    fail "probes asked during the outage" "$probes_refused"
check_eq "writes are still pending during the outage" 0 "$(wc -l <"$work/out")"
work_refused=$(refused_work)
[ "$work_refused" -ge 5 ] && pass "the apply's own requests were refused too ($work_refused)" ||
    fail "the apply's own requests were refused too" "$work_refused"

# Only WhoAmI answers for a while: only a probe can see Dataverse answer again (when the
# whole service comes back, a request's own retry may be the first to: a race, so this step
# makes the probe's part certain). Its answer releases the requests waiting in their backoff,
# which meet the outage again.
dvemu_admin POST "outage?on=1&except=WhoAmI" >/dev/null
released() { grep -c 'Dataverse answers again: resuming [1-9]' "$work/err"; }
for ((i = 0; i < 1200; i++)); do
    [ "$(released)" -ge 1 ] && break
    sleep 0.1
done
[ "$(counter "GET WhoAmI 200")" -ge 1 ] && pass "a probe saw Dataverse answer again" ||
    fail "a probe saw Dataverse answer again" "$(counter "GET WhoAmI 200")"
check_status "its answer released the requests waiting in their backoff" 0 test "$(released)" -ge 1

dvemu_admin POST "outage?on=0" >/dev/null
off_at=$(date +%s%N)
wait "$apply_pid"
check_eq "run exits 0 after recovery" 0 $?
recovered_ms=$((($(date +%s%N) - off_at) / 1000000))
printf '# %s\n' "measured: the 100 rows were applied ${recovered_ms} ms after the outage ended"
check_eq "all 100 rows applied" 100 "$(sink_count "$work/out" applied)"
check_eq "nothing lost: 100 accounts" 100 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"
log=$(cat "$work/err")
check_contains "the outage is logged" "Dataverse does not answer: asking WhoAmI" "$log"
# Which request met the recovered service first (dvemu logs its requests in order).
first=$(awk '/msg=request/ { line[++n] = $0; if (/ status=503/) last = n }
    END { for (i = last + 1; i <= n; i++) if (line[i] !~ /token|_dvemu/) { print line[i]; exit } }' \
    "$DVEMU_LOG" | grep -o 'path=[^ ]*' || true)
printf '# %s\n' "first request answered after the outage: ${first:-none}"

# With a backoff no longer than a probe interval, the requests' own retries are the probe.
sink_conf "$work/short.conf" "batch_size = 20" "retry_max_backoff_ms = 400"
sink_accounts 20 S >"$work/short.jsonl"
before=$(($(counter "GET WhoAmI 503") + $(counter "GET WhoAmI 200")))
dvemu_admin POST "outage?on=1" >/dev/null
sink_apply "$work/short.conf" "$work/short.jsonl" "$work/out2" "$work/err2" &
apply_pid=$!
for ((i = 0; i < 600; i++)); do
    [ "$(refused_work)" -ge $((work_refused + 5)) ] && break
    sleep 0.1
done
dvemu_admin POST "outage?on=0" >/dev/null
wait "$apply_pid"
check_eq "short backoff: run exits 0" 0 $?
check_eq "short backoff: all 20 rows applied" 20 "$(sink_count "$work/out2" applied)"
check_eq "short backoff: no probe sent" "$before" \
    "$(($(counter "GET WhoAmI 503") + $(counter "GET WhoAmI 200")))"

finish

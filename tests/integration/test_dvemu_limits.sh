#!/usr/bin/env bash
# dvemu: service protection limits (requests, execution time, concurrency) trip at the
# configured numbers, answer 429 with Retry-After and the documented codes, and recover
# after the window; x-ms-dop-hint is sent. dvemu runs on its manual clock: the test says
# when time passes, so nothing here depends on how fast the machine is.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start --clock manual --limit-requests 50 --limit-window 5 --dop-hint 3

j() { printf '%s' "$DV_BODY" | jq -r "$1"; }

DVEMU_TOKEN=$(dvemu_token)
dvemu_call GET WhoAmI
check_eq "x-ms-dop-hint carries the configured value" 3 "$(dvemu_header x-ms-dop-hint)"
check_eq "remaining requests reported" 49 "$(dvemu_header x-ms-ratelimit-burst-remaining-xrm-requests)"
ok=1
for i in $(seq 2 50); do
    dvemu_call GET WhoAmI
    [ "$DV_STATUS" = 200 ] || ok=0
done
check_eq "the first 50 requests in the window pass" 1 "$ok"
dvemu_call GET WhoAmI
check_eq "request 51 is throttled" 429 "$DV_STATUS"
check_eq "requests limit code" 0x80072322 "$(j .error.code)"
check_eq "requests limit message" "Number of requests exceeded the limit of 50 over time window of 5 seconds." "$(j .error.message)"
retry=$(dvemu_header Retry-After)
check_eq "Retry-After is the time until the window's oldest request leaves it" 5 "$retry"
dvemu_call PATCH "cdm_companies(cdm_companycode='x')" '{"cdm_name":"x"}'
check_eq "writes are throttled too" 429 "$DV_STATUS"
check_eq "the throttled write did not happen" 0 "$(dvemu_admin GET tables/cdm_companies | jq '.value | length')"
check_eq "throttled requests counted" 2 "$(dvemu_admin GET counters | jq .throttled)"
dvemu_clock_advance 2000
dvemu_call GET WhoAmI
check_eq "two seconds later the window is still full" 429 "$DV_STATUS"
check_eq "and Retry-After has counted down" 3 "$(dvemu_header Retry-After)"
dvemu_clock_advance 2999
dvemu_call GET WhoAmI
check_eq "a millisecond before the window slides, still throttled" 429 "$DV_STATUS"
dvemu_clock_advance 1
dvemu_call GET WhoAmI
check_eq "after Retry-After the window has room again" 200 "$DV_STATUS"
check_eq "and the next 49 requests fit as well" 49 "$(dvemu_header x-ms-ratelimit-burst-remaining-xrm-requests)"
clock_post() { curl -s -o /dev/null -w '%{http_code}' -X POST --data "$1" "$DVEMU_URL/_dvemu/clock"; }
check_eq "the clock reads what it was moved by" 5000 "$(dvemu_admin GET clock | jq .now_ms)"
check_eq "the clock does not go back" 400 "$(clock_post '{"set_ms": 4000}')"
check_eq "a malformed move is refused" 400 "$(clock_post '{"advance_ms": "soon"}')"
check_eq "set_ms moves it to a point" 200 "$(clock_post '{"set_ms": 5500}')"
check_eq "to that point" 5500 "$(dvemu_admin GET clock | jq .now_ms)"

# Limits are per user: a second client has its own window.
dvemu_stop
DVEMU_TOKEN=
dvemu_start --clock manual --limit-requests 3 --limit-window 60
other=$(curl -s "$DVEMU_URL/$DVEMU_TENANT/oauth2/v2.0/token" --data-urlencode "client_id=$DVEMU_CLIENT_ID" \
    --data-urlencode "client_secret=$(cat "$DVEMU_SECRET_FILE")" --data-urlencode scope=x \
    --data-urlencode grant_type=client_credentials | jq -r .access_token)
for i in 1 2 3 4; do dvemu_call GET WhoAmI; done
check_eq "the fourth request of the user is throttled" 429 "$DV_STATUS"
check_eq "a new token of the same client is the same user" 429 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $other" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
check_eq "admin reset clears the windows" 204 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$DVEMU_URL/_dvemu/reset")"
dvemu_call GET WhoAmI
check_eq "after reset requests pass" 200 "$DV_STATUS"

# Execution time: slow answers (a fault) use up the budget. On the manual clock a slow
# request waits until the clock has moved past its 300 ms; the time counted is dvemu's.
dvemu_stop
DVEMU_TOKEN=
dvemu_start --clock manual --limit-exec-ms 500 --limit-window 60
dvemu_admin POST faults '{"rates":{"slow":1},"slow_ms":300}' >/dev/null
DVEMU_TOKEN=$(dvemu_token)
slow_call() { # one slow WhoAmI, run to its end by moving the clock; sets DV_STATUS
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DVEMU_TOKEN" \
        "$DVEMU_URL/api/data/v9.2/WhoAmI" >"$DVEMU_DIR/slow-status" &
    local pid=$!
    dvemu_clock_wait_waiting 1 || fail "a slow request waits for the clock"
    dvemu_clock_advance 300
    wait "$pid"
    DV_STATUS=$(cat "$DVEMU_DIR/slow-status")
}
slow_call
check_eq "the first slow request is admitted" 200 "$DV_STATUS"
slow_call
check_eq "slow requests are admitted while under the budget" 200 "$DV_STATUS"
dvemu_call GET WhoAmI
check_eq "the execution time limit trips" 429 "$DV_STATUS"
check_eq "execution time code" 0x80072321 "$(j .error.code)"
check_eq "execution time message" "Combined execution time of incoming requests exceeded limit of 500 milliseconds over time window of 60 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later." "$(j .error.message)"

dvemu_clock_advance 60000
slow_call
check_eq "the budget frees up as the window slides" 200 "$DV_STATUS"

# Concurrency: slow requests in parallel beyond the limit. Two are held on the manual clock
# until the three others have been refused; then the clock lets them finish.
dvemu_stop
DVEMU_TOKEN=
dvemu_start --clock manual --limit-concurrent 2
dvemu_admin POST faults '{"rates":{"slow":1},"slow_ms":1500}' >/dev/null
DVEMU_TOKEN=$(dvemu_token)
pids=()
for i in 1 2 3 4 5; do
    curl -s -o "$DVEMU_DIR/par$i" -w '%{http_code}\n' -H "Authorization: Bearer $DVEMU_TOKEN" \
        "$DVEMU_URL/api/data/v9.2/WhoAmI" >"$DVEMU_DIR/status$i" &
    pids+=($!)
done
dvemu_wait_jq .throttled 3 || fail "three requests are refused while two are held"
dvemu_clock_wait_waiting 2 || fail "two requests are held by the clock"
dvemu_clock_advance 1500
wait "${pids[@]}"
statuses=$(cat "$DVEMU_DIR"/status* | sort | uniq -c | awk '{print $2 "x" $1}' | paste -sd ' ')
check_eq "two run, three are refused" "200x2 429x3" "$statuses"
check_eq "concurrency code and message" "0x80072326 Number of concurrent requests exceeded the limit of 2." \
    "$(cat "$DVEMU_DIR"/par* | jq -r 'select(.error) | "\(.error.code) \(.error.message)"' | sort -u)"

finish

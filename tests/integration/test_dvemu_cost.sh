#!/usr/bin/env bash
# dvemu's server cost (--cost-request-ms, --cost-row-ms, --cost-bulk-row-ms,
# --cost-bypass-percent): each request spends that much server time, seen as latency (it
# answers only once the time has passed) and counted against the execution-time limit. On the
# manual clock the test says when the time passes, so nothing depends on the machine's speed:
# a request still waits a millisecond before its cost and answers at it.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start --clock manual --cost-request-ms 100 --cost-row-ms 10 --cost-bulk-row-ms 2 \
    --limit-exec-ms 440 --limit-window 60
DVEMU_TOKEN=$(dvemu_token)

targets() { # N PREFIX: CreateMultiple targets of cdm_companies
    jq -nc --argjson n "$1" --arg p "$2" '{Targets: [range(0; $n) |
        {"@odata.type": "Microsoft.Dynamics.CRM.cdm_company", cdm_companycode: ($p + tostring),
         cdm_name: "x"}]}'
}

# costs LABEL MS METHOD PATH [BODY] [HEADER]: the request is still waiting MS-1 ms after it
# arrived, and answers (2xx) once MS have passed.
costs() {
    local label=$1 ms=$2 method=$3 path=$4 body=${5:-} header=${6:-X-None: 1}
    local -a data=()
    [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
    curl -s -o "$DVEMU_DIR/cost-body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $DVEMU_TOKEN" \
        -H "$header" "${data[@]}" "$DVEMU_URL/api/data/v9.2/$path" >"$DVEMU_DIR/cost-status" &
    local pid=$!
    dvemu_clock_wait_waiting 1 || fail "$label: the request waits for its server time"
    dvemu_clock_advance $((ms - 1))
    check_eq "$label: still on the server after $((ms - 1)) ms" 1 "$(dvemu_admin GET clock | jq .waiting)"
    dvemu_clock_advance 1
    wait "$pid"
    check_eq "$label: answered after $ms ms" 2 "$(cut -c1 "$DVEMU_DIR/cost-status")"
}

costs "a read: the request cost" 100 GET WhoAmI
costs "a single write: request + one row" 110 PATCH "cdm_companies(cdm_companycode='S1')" '{"cdm_name":"one"}'
costs "a bulk action of 10: request + 10 bulk rows" 120 POST cdm_companies/Microsoft.Dynamics.CRM.CreateMultiple \
    "$(targets 10 B)"
costs "the same, custom logic bypassed: rows at 50 %" 110 POST cdm_companies/Microsoft.Dynamics.CRM.CreateMultiple \
    "$(targets 10 P)" 'MSCRM.BypassBusinessLogicExecution: CustomSync,CustomAsync'
check_eq "every row was written" 21 "$(dvemu_admin GET tables/cdm_companies | jq '.value | length')"

# 100 + 110 + 120 + 110 = 440 ms of server time: the execution-time budget is used up.
dvemu_call GET WhoAmI
check_eq "server cost counts against the execution-time limit" "429 0x80072321" \
    "$DV_STATUS $(printf '%s' "$DV_BODY" | jq -r .error.code)"

dvemu_stop
"$DVEMU_BIN" --cost-bypass-percent 101 --metadata x --tenant t --client a:b >/dev/null 2>"$DVEMU_DIR/bad"
check_eq "a bypass percentage above 100 is refused" 2 $?

finish

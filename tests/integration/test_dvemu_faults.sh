#!/usr/bin/env bash
# dvemu: faults on demand (outage switch, scheduled and seeded random 503/500/429/slow/drop/
# malformed JSON/HTML), the admin endpoints (off unless --admin, reset, counters, per-key
# write history with a global sequence), and clean shutdown on SIGTERM.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start

j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
DVEMU_TOKEN=$(dvemu_token)

# --- outage switch ----------------------------------------------------------------------------
dvemu_admin POST 'outage?on=1' >/dev/null
dvemu_call GET WhoAmI
check_eq "outage: the Web API answers 503" 503 "$DV_STATUS"
check_eq "outage: with Retry-After" 1 "$(dvemu_header Retry-After)"
check_eq "outage: the token endpoint still works" 1 "$([ "$(dvemu_token)" != null ] && echo 1)"
dvemu_admin POST 'outage?on=0' >/dev/null
dvemu_call GET WhoAmI
check_eq "outage over" 200 "$DV_STATUS"
check_eq "the machine's clock cannot be moved (409)" 409 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data '{"advance_ms": 1}' "$DVEMU_URL/_dvemu/clock")"
check_eq "GET /_dvemu/clock says which clock runs" real "$(dvemu_admin GET clock | jq -r .mode)"

# --- a schedule: request N gets fault F ----------------------------------------------------------
dvemu_admin POST faults '{"schedule":{"1":"503","2":"500","3":"429","4":"html","5":"malformed","6":"drop","8":"slow"},"slow_ms":200}' >/dev/null
statuses=()
for i in 1 2 3 4 5 6 7 8; do
    dvemu_call GET "accounts?\$top=1"
    statuses+=("$DV_STATUS")
    case $i in
    3) check_eq "scheduled 429 has the throttling code" 0x80072322 "$(j .error.code)" ;;
    4) check_eq "scheduled HTML page" "text/html" "$(dvemu_header Content-Type)"
       check_contains "an HTML body" "<html>" "$DV_BODY" ;;
    5) printf '%s' "$DV_BODY" | jq . >/dev/null 2>&1
       check_eq "scheduled malformed JSON does not parse" 1 "$([ $? -ne 0 ] && echo 1)" ;;
    esac
done
check_eq "scheduled statuses (000: dropped connection)" "503 500 429 502 200 000 200 200" "${statuses[*]}"
check_eq "faults counted (the outage answer included)" 8 "$(dvemu_admin GET faults | jq .injected)"

# --- seeded random faults are reproducible ---------------------------------------------------------
run_seeded() {
    dvemu_admin POST faults "{\"seed\":$1,\"rates\":{\"503\":0.2,\"500\":0.1,\"429\":0.1,\"html\":0.1},\"schedule\":{}}" >/dev/null
    local out=() i
    for i in $(seq 1 30); do
        dvemu_call GET WhoAmI
        out+=("$DV_STATUS")
    done
    echo "${out[*]}"
}
a=$(run_seeded 42)
b=$(run_seeded 42)
c=$(run_seeded 7)
check_eq "the same seed gives the same faults" "$a" "$b"
check_eq "a different seed gives others" 1 "$([ "$a" != "$c" ] && echo 1)"
check_eq "faults were injected at about the rate" 1 \
    "$(n=$(tr ' ' '\n' <<<"$a" | grep -vc 200); [ "$n" -ge 5 ] && [ "$n" -le 25 ] && echo 1)"
dvemu_admin POST faults '{"rates":{}}' >/dev/null
check_eq "bad fault config refused" 400 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data '{"rates":{"teapot":1}}' "$DVEMU_URL/_dvemu/faults")"

# --- counters, history and reset ---------------------------------------------------------------
dvemu_admin POST reset >/dev/null
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"v1"}'
usmf=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
dvemu_call PATCH "accounts(accountnumber='H1',_msdyn_company_value=$usmf)" '{"name":"v1"}'
dvemu_call PATCH "accounts(accountnumber='H1',_msdyn_company_value=$usmf)" '{"name":"v2"}'
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"v2"}'
dvemu_call DELETE "accounts(accountnumber='H1',_msdyn_company_value=$usmf)"
hist=$(dvemu_admin GET history)
check_eq "history: global sequence across tables" \
    "1 cdm_companies create v1|2 accounts create v1|3 accounts update v2|4 cdm_companies update v2|5 accounts delete v2" \
    "$(printf '%s' "$hist" | jq -r '[.value[] | "\(.seq) \(.table) \(.op) \(.row.name // .row.cdm_name)"] | join("|")')"
check_eq "history filtered by table" "create update delete" \
    "$(dvemu_admin GET 'history?table=accounts' | jq -r '[.value[].op] | join(" ")')"
counters=$(dvemu_admin GET counters)
check_eq "requests counted by method, resource and status" 2 "$(printf '%s' "$counters" | jq '.requests["PATCH accounts 204"]')"
check_eq "rows written counted per table" 3 "$(printf '%s' "$counters" | jq '.rows_written.accounts')"
check_eq "table dump" v2 "$(dvemu_admin GET tables/cdm_companies | jq -r '.value[0].cdm_name')"
dvemu_admin POST reset >/dev/null
check_eq "reset empties the tables" 0 "$(dvemu_admin GET tables/cdm_companies | jq '.value | length')"
check_eq "reset empties the history" 0 "$(dvemu_admin GET history | jq '.value | length')"

# --- admin is off unless enabled; SIGTERM stops cleanly -----------------------------------------
pid=$DVEMU_PID
kill -TERM "$pid"
wait "$pid"
check_eq "SIGTERM exits 0" 0 "$?"
check_contains "shutdown logged" "dvemu stopping" "$(cat "$DVEMU_LOG")"
port_dir=$(mktemp -d)
on_exit "rm -rf '$port_dir'"
"$DVEMU_BIN" --listen 127.0.0.1:0 --port-file "$port_dir/port" --metadata \
    "$DWASYNC_SOURCE_DIR/packaging/sample/dataverse-metadata.json" --tenant t --client c:s \
    >"$port_dir/log" 2>&1 &
DVEMU_PID=$!
for i in $(seq 1 100); do [ -s "$port_dir/port" ] && break; sleep 0.05; done
check_eq "without --admin the admin endpoints do not exist" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(cat "$port_dir/port")/_dvemu/counters")"
"$DVEMU_BIN" --listen 127.0.0.1:0 --metadata /nonexistent --tenant t --client c:s >"$port_dir/bad" 2>&1
check_eq "a missing metadata file fails with status 1" 1 "$?"
check_contains "and says why" "cannot read metadata file" "$(cat "$port_dir/bad")"
"$DVEMU_BIN" --listen 127.0.0.1:99999 --metadata x --tenant t --client c:s >"$port_dir/bad" 2>&1
check_eq "a bad port is a usage error" 2 "$?"

finish

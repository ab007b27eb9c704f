#!/usr/bin/env bash
# dvemu: a write's optional parameters ("Use optional parameters", "Bypass custom Dataverse
# logic", "Bypass Power Automate flows"): MSCRM.BypassBusinessLogicExecution,
# MSCRM.BypassCustomPluginExecution, MSCRM.SuppressDuplicateDetection,
# MSCRM.SuppressCallbackRegistrationExpanderJob and the tag query option are recorded per
# request (GET /_dvemu/requests), $batch parts included (a part's own header, else the batch's);
# values Dataverse does not take answer 400; without prvBypassCustomBusinessLogic (or
# prvBypassCustomPlugins for the older header) the request answers 403 0x80040220 and writes
# nothing; a bypass of synchronous logic lowers the rows' server cost (--cost-bypass-percent),
# seen on the manual clock.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
count() { dvemu_admin GET "tables/$1" | jq '.value | length'; }
BYPASS='MSCRM.BypassBusinessLogicExecution: CustomSync,CustomAsync'
DUP='MSCRM.SuppressDuplicateDetection: true'
FLOWS='MSCRM.SuppressCallbackRegistrationExpanderJob: true'

# --- recorded per request ---------------------------------------------------------------------
dvemu_call PATCH "cdm_companies(cdm_companycode='W0')" '{"cdm_name":"plain"}'
dvemu_call PATCH "cdm_companies(cdm_companycode='W1')?tag=dwasync-job1" '{"cdm_name":"one"}' \
    -H "$BYPASS" -H "$DUP" -H "$FLOWS"
check_eq "a write with every option: 204" 204 "$DV_STATUS"
log=$(dvemu_admin GET 'requests?path=cdm_companies')
check_eq "both writes are recorded" 2 "$(jq '.value | length' <<<"$log")"
check_eq "the plain one without options" '{}' "$(jq -c '.value[0].options' <<<"$log")"
check_eq "the other with its headers and tag, as sent" \
    '{"MSCRM.BypassBusinessLogicExecution":"CustomSync,CustomAsync","MSCRM.SuppressCallbackRegistrationExpanderJob":"true","MSCRM.SuppressDuplicateDetection":"true","tag":"dwasync-job1"}' \
    "$(jq -Sc '.value[1].options' <<<"$log")"
check_eq "with method, path and status" "PATCH cdm_companies(cdm_companycode='W1') 204 false" \
    "$(jq -r '.value[1] | "\(.method) \(.path) \(.status) \(.batch)"' <<<"$log")"

# --- inside $batch: a part's own headers, else the batch request's ---------------------------
B=batch_AAA
# opt_part "METHOD URL" BODY HEADER: a part whose request carries HEADER.
opt_part() {
    printf -- '--%s\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n' $B
    printf '\r\n%s HTTP/1.1\r\nContent-Type: application/json\r\n%s\r\n\r\n%s\r\n' "$1" "$3" "$2"
}
body=$(
    dvemu_batch_part $B "PATCH /api/data/v9.2/cdm_companies(cdm_companycode='W2')?tag=t2" '{"cdm_name":"two"}'
    opt_part "PATCH /api/data/v9.2/cdm_companies(cdm_companycode='W3')" '{"cdm_name":"three"}' \
        'MSCRM.BypassBusinessLogicExecution: CustomAsync'
    printf -- '--%s--\r\n' $B
)
dvemu_batch "$body" -H "$DUP"
check_eq "the batch answers 200" 200 "$DV_STATUS"
log=$(dvemu_admin GET 'requests?path=cdm_companies')
check_eq "both parts are recorded as batch parts" "true true" \
    "$(jq -r '[.value[2:][] | .batch] | join(" ")' <<<"$log")"
check_eq "a part without its own header takes the batch's, and its own tag" \
    '{"MSCRM.SuppressDuplicateDetection":"true","tag":"t2"}' "$(jq -Sc '.value[2].options' <<<"$log")"
check_eq "a part's own header is recorded with the batch's" \
    '{"MSCRM.BypassBusinessLogicExecution":"CustomAsync","MSCRM.SuppressDuplicateDetection":"true"}' \
    "$(jq -Sc '.value[3].options' <<<"$log")"

# --- values Dataverse does not take -------------------------------------------------------------
before=$(count cdm_companies)
dvemu_call PATCH "cdm_companies(cdm_companycode='X1')" '{"cdm_name":"x"}' -H 'MSCRM.BypassBusinessLogicExecution: Everything'
check_eq "an unknown bypass value: 400 0x80040203" "400 0x80040203" "$DV_STATUS $(j .error.code)"
check_contains "naming the valid values" "Valid values are CustomSync, CustomAsync or CustomSync,CustomAsync" "$(j .error.message)"
dvemu_call PATCH "cdm_companies(cdm_companycode='X1')" '{"cdm_name":"x"}' -H 'MSCRM.SuppressDuplicateDetection: yes'
check_eq "a flag that is not true or false: 400" "400 0x80040203" "$DV_STATUS $(j .error.code)"
check_eq "and neither wrote anything" "$before" "$(count cdm_companies)"
check_eq "refused requests are recorded with their status" "400 400" \
    "$(dvemu_admin GET 'requests?path=X1' | jq -r '[.value[].status] | join(" ")')"

# --- the bypass privileges ----------------------------------------------------------------------
out=$(dvemu_admin POST privileges '{"revoke":[{"table":"accounts","privilege":"bypasscustombusinesslogic"}]}')
check_contains "a global privilege takes no table" "is a global privilege" "$out"
out=$(dvemu_admin POST privileges '{"revoke":[{"privilege":"bypasscustombusinesslogic"}]}')
check_eq "prvBypassCustomBusinessLogic revoked" '{"revoke":[{"privilege":"bypasscustombusinesslogic"}]}' "$(jq -c . <<<"$out")"
user=$(dvemu_api GET WhoAmI | jq -r .UserId)
dvemu_call PATCH "cdm_companies(cdm_companycode='X2')" '{"cdm_name":"x"}' -H "$BYPASS"
check_eq "a bypass without the privilege: 403 0x80040220" "403 0x80040220" "$DV_STATUS $(j .error.code)"
check_contains "naming the user and the privilege by its documented id" \
    "Principal user (Id=$user, type=8, " "$(j .error.message)"
check_contains "the privilege" "is missing prvBypassCustomBusinessLogic privilege (Id=0ea552b0-a491-4470-9a1b-82068deccf66)" "$(j .error.message)"
check_eq "nothing was written" "$before" "$(count cdm_companies)"
dvemu_call PATCH "cdm_companies(cdm_companycode='X3')" '{"cdm_name":"x"}' -H 'MSCRM.BypassCustomPluginExecution: true'
check_eq "the older header needs another privilege, still held: 204" 204 "$DV_STATUS"
body=$(
    dvemu_batch_part $B "PATCH /api/data/v9.2/cdm_companies(cdm_companycode='X4')" '{"cdm_name":"x"}'
    printf -- '--%s--\r\n' $B
)
dvemu_batch "$body" -H "$BYPASS"
check_eq "inside \$batch the refusal is the part's answer" 400 "$DV_STATUS"
check_contains "a 403 part" "HTTP/1.1 403 Forbidden" "$DV_BODY"
check_contains "with the missing privilege" "prvBypassCustomBusinessLogic" "$DV_BODY"
dvemu_admin POST privileges '{"revoke":[{"privilege":"bypasscustomplugins"}]}' >/dev/null
dvemu_call PATCH "cdm_companies(cdm_companycode='X5')" '{"cdm_name":"x"}' -H 'MSCRM.BypassCustomPluginExecution: true'
check_eq "prvBypassCustomPlugins revoked: the older header answers 403" "403" "$DV_STATUS"
check_contains "naming prvBypassCustomPlugins" "is missing prvBypassCustomPlugins privilege (Id=148a9eaf-d0c4-4196-9852-c3a38e35f6a1)" "$(j .error.message)"
dvemu_call PATCH "cdm_companies(cdm_companycode='X5')" '{"cdm_name":"x"}' -H 'MSCRM.BypassCustomPluginExecution: false'
check_eq "BypassCustomPluginExecution: false needs no privilege" 204 "$DV_STATUS"
check_eq "what was allowed was written" $((before + 2)) "$(count cdm_companies)"

dvemu_admin POST reset >/dev/null
check_eq "reset empties the request log" 0 "$(dvemu_admin GET requests | jq '.value | length')"

dvemu_stop
dvemu_start --clock manual --cost-row-ms 10 --cost-bulk-row-ms 4 --cost-bypass-percent 25
DVEMU_TOKEN=$(dvemu_token)
# --- cost: rows with synchronous logic bypassed cost 25 % -------------------------------------
targets() { # N PREFIX: CreateMultiple targets of cdm_companies
    jq -nc --argjson n "$1" --arg p "$2" '{Targets: [range(0; $n) |
        {"@odata.type": "Microsoft.Dynamics.CRM.cdm_company", cdm_companycode: ($p + tostring),
         cdm_name: "x"}]}'
}
# costs LABEL MS HEADER PREFIX: a CreateMultiple of 10 rows is still waiting at MS-1 and
# answers at MS.
costs() {
    local label=$1 ms=$2 header=$3
    (dvemu_call POST cdm_companies/Microsoft.Dynamics.CRM.CreateMultiple "$(targets 10 "$4")" \
        -H "$header" && printf '%s' "$DV_STATUS" >"$DVEMU_DIR/cost-status") &
    local pid=$!
    dvemu_clock_wait_waiting 1 || fail "$label: the request waits for its server time"
    dvemu_clock_advance $((ms - 1))
    check_eq "$label: still on the server after $((ms - 1)) ms" 1 "$(dvemu_admin GET clock | jq .waiting)"
    dvemu_clock_advance 1
    wait "$pid"
    check_eq "$label: answered (200) after $ms ms" 200 "$(cat "$DVEMU_DIR/cost-status")"
}
costs "10 bulk rows, no bypass: 40 ms" 40 'X-None: 1' A
costs "10 bulk rows, CustomSync bypassed: 10 ms" 10 "$BYPASS" B
costs "the older header bypasses synchronous plug-ins too: 10 ms" 10 'MSCRM.BypassCustomPluginExecution: true' C
costs "CustomAsync alone saves no synchronous time: 40 ms" 40 'MSCRM.BypassBusinessLogicExecution: CustomAsync' D

body=$(
    dvemu_batch_part $B "PATCH /api/data/v9.2/cdm_companies(cdm_companycode='E1')" '{"cdm_name":"x"}'
    opt_part "PATCH /api/data/v9.2/cdm_companies(cdm_companycode='E2')" '{"cdm_name":"x"}' \
        'MSCRM.BypassBusinessLogicExecution: CustomSync'
    printf -- '--%s--\r\n' $B
)
(dvemu_batch "$body" && printf '%s' "$DV_STATUS" >"$DVEMU_DIR/cost-status") &
pid=$!
dvemu_clock_wait_waiting 1 || fail "the batch waits for its server time"
dvemu_clock_advance 11
check_eq "a batch of two single rows, one part bypassing: still on the server at 11 ms" 1 \
    "$(dvemu_admin GET clock | jq .waiting)"
dvemu_clock_advance 1
wait "$pid"
check_eq "and answered (200) at 10 + 10 x 25 % = 12 ms" 200 "$(cat "$DVEMU_DIR/cost-status")"

finish

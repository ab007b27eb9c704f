#!/usr/bin/env bash
# A misbehaving peer: dvemu answers a random third of API requests with 500 (generic
# error), 503, 429, a dropped connection, a truncated JSON body or an HTML gateway page.
# Bulk requests, $batch requests and $filter lookups (keys a URL cannot carry) all go
# through it; every row lands exactly once and nothing is reported as refused.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-chaos
dvemu_start
sink_conf "$work/dw.conf" "batch_size = 50" "retry_max_backoff_ms = 200"
sink_seed_company "$work/dw.conf" "$work/rows"
usmf=$(dvemu_api GET "cdm_companies(cdm_companycode='USMF')" | jq -r .cdm_companyid)

sink_accounts 1000 K >"$work/rows.jsonl"                       # UpsertMultiple
jq -nc 'range(0; 100) | {op: "upsert", entity_set: "contacts", logical_name: "contact",
    key: {msdyn_contactpersonid: ("C/" + (. | tostring)),       # unaddressable: $filter + POST
          _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: "USMF"}}},
    body: {lastname: ("Person " + (. | tostring))}}' >>"$work/rows.jsonl"
jq -nc 'range(0; 100) | {op: "upsert", entity_set: "transactioncurrencies",   # $batch
    logical_name: "transactioncurrency", key: {isocurrencycode: ("Q" + (. | tostring))},
    body: {currencyname: "Test", currencysymbol: "q", exchangerate: 1.5}}' >>"$work/rows.jsonl"

dvemu_admin POST faults \
    '{"rates":{"500":0.07,"503":0.06,"429":0.05,"drop":0.05,"malformed":0.05,"html":0.04},"seed":42}' \
    >/dev/null
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "run exits 0 despite the faults" 0 $?
injected=$(dvemu_admin GET counters | jq .faults_injected)
dvemu_admin POST faults '{"rates":{}}' >/dev/null
[ "$injected" -ge 10 ] && pass "dvemu injected $injected faults" ||
    fail "dvemu injected faults" "only $injected: the test proves little"
check_eq "all 1200 rows applied" 1200 "$(sink_count "$work/out" applied)"
count() { dvemu_api GET "$1?\$count=true&\$top=1" | jq '."@odata.count"'; }
check_eq "1000 accounts, once each" 1000 "$(count accounts)"
check_eq "100 contacts, once each (no duplicate from a lost lookup)" 100 "$(count contacts)"
check_eq "100 currencies plus none extra" 100 "$(count transactioncurrencies)"
check_eq "an unaddressable key row is there" "Person 7" \
    "$(dvemu_api GET "contacts?\$filter=msdyn_contactpersonid%20eq%20'C%2F7'" | jq -r '.value[0].lastname')"

# Applying the same file again changes nothing: still once each.
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "second run exits 0" 0 $?
check_eq "still 100 contacts" 100 "$(count contacts)"

# An answer lost after the write was done: the 5th API request of a fresh run (the POST
# that creates a row whose key a URL cannot carry; before it come the metadata and $filter
# lookups of the company and of the row) is answered only after the client timed out.
# Sending the POST again would meet a duplicate key; the sink looks the row up again and
# updates it by id instead.
printf '%s\n' '{"op":"upsert","entity_set":"contacts","logical_name":"contact","key":{"msdyn_contactpersonid":"late/1","_msdyn_company_value":{"$ref":"cdm_companies","key":{"cdm_companycode":"USMF"}}},"body":{"lastname":"Late"}}' >"$work/late.jsonl"
sink_conf "$work/late.conf" "request_timeout_ms = 1000" "retry_max_backoff_ms = 200"
dvemu_admin POST faults '{"schedule":{"5":"slow"},"slow_ms":1600}' >/dev/null
sink_apply "$work/late.conf" "$work/late.jsonl" "$work/out" "$work/err"
check_eq "late answer: the row is applied, not refused as a duplicate" \
    '["applied",204]' "$(jq -c '[.status, .http]' "$work/out")"
check_contains "the POST's answer was lost" "was lost: looking them up again" "$(cat "$work/err")"
check_eq "and the row exists once" 1 \
    "$(dvemu_api GET "contacts?\$count=true&\$filter=msdyn_contactpersonid%20eq%20'late%2F1'" | jq '."@odata.count"')"

finish

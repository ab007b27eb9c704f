#!/usr/bin/env bash
# Atomic groups in the sink, through `dwasync dataverse apply` lines carrying "atomic": an
# order created with its lines in one changeset (the lines keyed through the new order by
# Content-ID), an existing order updated with old and new lines, a bad line that rolls its
# group back (the failing row named, the others "rolled back"), a row whose parent cannot be
# found that stops its group before anything is sent, a whole changeset retried through 503s,
# and a group larger than 1000 refused.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-atomic
dvemu_start
sink_conf "$work/dw.conf" "retry_max_backoff_ms = 200"
sink_seed_company "$work/dw.conf" "$work/co"

co='{"$ref":"cdm_companies","key":{"cdm_companycode":"USMF"}}'
order() { printf '{"$ref":"salesorders","key":{"msdyn_salesordernumber":"%s","_msdyn_company_value":%s}}' "$1" "$co"; }
# header GROUP ORDER NAME / line GROUP ORDER SEQ QTY: one input line each
header() {
    printf '{"atomic":"%s","op":"upsert","entity_set":"salesorders","logical_name":"salesorder","key":{"msdyn_salesordernumber":"%s","_msdyn_company_value":%s},"body":{"name":"%s"}}\n' \
        "$1" "$2" "$co" "$3"
}
line() {
    printf '{"atomic":"%s","op":"upsert","entity_set":"salesorderdetails","logical_name":"salesorderdetail","key":{"_salesorderid_value":%s,"sequencenumber":%s},"body":{"quantity":%s}}\n' \
        "$1" "$(order "$2")" "$3" "$4"
}
lines_of() {   # lines_of ORDER: "seq:qty ..." of dvemu's lines under that order
    local id
    id=$(dvemu_admin GET tables/salesorders |
        jq -r ".value[] | select(.msdyn_salesordernumber == \"$1\") | .salesorderid")
    dvemu_admin GET tables/salesorderdetails | jq -r "[.value[] | select(._salesorderid_value == \"$id\")
        | \"\(.sequencenumber):\(.quantity)\"] | sort | join(\" \")"
}
batches() { grep -c 'path=/api/data/v9.2/$batch' "$DVEMU_LOG"; }

# --- a new order and its lines: one changeset, the lines created under it by Content-ID ---
{ header g1 SO1 "Order one"; line g1 SO1 1 5; line g1 SO1 2 7; } >"$work/g1.jsonl"
before=$(batches)
sink_apply "$work/dw.conf" "$work/g1.jsonl" "$work/out" "$work/err"
check_eq "a new order with its lines applies" 0 $?
check_eq "three rows applied" 3 "$(sink_count "$work/out" applied)"
check_eq "in one \$batch request" 1 "$(($(batches) - before))"
check_eq "the lines sit under the new order" "1:5 2:7" "$(lines_of SO1)"

# --- the order exists now: updated with an old line changed and a new line added ---------
{ header g2 SO1 "Order one, changed"; line g2 SO1 2 8; line g2 SO1 3 9; } >"$work/g2.jsonl"
sink_apply "$work/dw.conf" "$work/g2.jsonl" "$work/out" "$work/err"
check_eq "an existing order updated with old and new lines" 0 $?
check_eq "lines updated and added in place" "1:5 2:8 3:9" "$(lines_of SO1)"

# --- a bad line rolls its group back; another group in the same run applies -------------
{ header g3 SO2 "Order two"; line g3 SO2 1 1; line g3 SO2 2 1e12; line g3 SO2 3 1
  header g4 SO3 "Order three"; line g4 SO3 1 4; } >"$work/g3.jsonl"
writes_before=$(dvemu_admin GET history | jq '.value | length')
sink_apply "$work/dw.conf" "$work/g3.jsonl" "$work/out" "$work/err"
check_eq "a run with a rolled-back group exits 1" 1 $?
res() { jq -r "select(.line == $1) | [.status, .class, .http, .code] | join(\" \")" "$work/out"; }
check_eq "the bad line: rejected with Dataverse's error" "rejected validation 400 0x80044330" "$(res 3)"
check_contains "its message is Dataverse's" "is outside the valid range" \
    "$(jq -r 'select(.line == 3) | .message' "$work/out")"
for l in 1 2 4; do
    check_eq "line $l rolled back as a conflict" "rejected conflict 400 " "$(res $l)"
done
check_eq "the others name the failed row" \
    "rolled back: salesorderdetails({\"_salesorderid_value\":$(order SO2 | jq -cS .),\"sequencenumber\":2}) in the same atomic group failed: $(jq -r 'select(.line == 3) | .message' "$work/out")" \
    "$(jq -r 'select(.line == 1) | .message' "$work/out")"
check_eq "nothing of the group is in Dataverse" "" "$(lines_of SO2)"
check_eq "no order SO2 either" 0 \
    "$(dvemu_admin GET tables/salesorders | jq '[.value[] | select(.msdyn_salesordernumber == "SO2")] | length')"
check_eq "the other group applied" "1:4" "$(lines_of SO3)"
check_eq "the write history holds the other group only" 2 \
    "$(($(dvemu_admin GET history | jq '.value | length') - writes_before))"
check_contains "the failure is logged once" "atomic group of 4 writes not applied" "$(cat "$work/err")"

# --- a parent that cannot be found stops the group before anything is sent ---------------
{ header g5 SO4 "Order four"
  printf '{"atomic":"g5","op":"upsert","entity_set":"salesorderdetails","logical_name":"salesorderdetail","key":{"_salesorderid_value":%s,"sequencenumber":1},"body":{"quantity":1}}\n' \
      "$(order SO-NONE)"; } >"$work/g5.jsonl"
before=$(batches)
sink_apply "$work/dw.conf" "$work/g5.jsonl" "$work/out" "$work/err"
check_eq "a group with a missing parent is refused" 1 $?
check_eq "the orphan line: missing parent" "rejected missing_parent 404" \
    "$(jq -r 'select(.line == 2) | [.status, .class, .http] | join(" ")' "$work/out")"
check_eq "the order: rolled back because of it" "rejected conflict" \
    "$(jq -r 'select(.line == 1) | [.status, .class] | join(" ")' "$work/out")"
check_eq "no \$batch was sent" 0 "$(($(batches) - before))"

# --- 503s: the whole changeset goes again until it applies -------------------------------
{ header g6 SO5 "Order five"; line g6 SO5 1 2; line g6 SO5 2 3; } >"$work/g6.jsonl"
dvemu_admin POST faults '{"seed":7,"rates":{"503":0.6}}' >/dev/null
sink_apply "$work/dw.conf" "$work/g6.jsonl" "$work/out" "$work/err"
check_eq "applied despite the 503s" 0 $?
injected=$(dvemu_admin GET counters | jq .faults_injected)
dvemu_admin POST faults '{"rates":{}}' >/dev/null
[ "$injected" -ge 1 ] && pass "dvemu injected $injected 503s" || fail "dvemu injected 503s" "none"
check_eq "every line of the order once" "1:2 2:3" "$(lines_of SO5)"

# --- more than 1000 writes cannot be one group -------------------------------------------
{ header g7 SO6 "Order six"; for i in $(seq 1 1000); do line g7 SO6 "$i" 1; done; } >"$work/g7.jsonl"
sink_apply "$work/dw.conf" "$work/g7.jsonl" "$work/out" "$work/err"
check_eq "a group of 1001 writes is refused" 1 $?
check_eq "every line of it invalid" 1001 "$(sink_count "$work/out" invalid)"
check_eq "nothing of it sent" 0 \
    "$(dvemu_admin GET tables/salesorders | jq '[.value[] | select(.msdyn_salesordernumber == "SO6")] | length')"
finish

#!/usr/bin/env bash
# Parent GUID lookups, shared: rows whose alternate key holds a lookup to many different
# parents (order lines keyed by their order) are resolved with one $filter query per
# hundred parents, each answer row matched back to its parent as Dataverse's collation
# compares (no case, trailing spaces ignored); a parent whose key is not ASCII is asked
# alone; absent parents are named.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-lookups
dvemu_start
sink_conf "$work/dw.conf"
sink_seed_company "$work/dw.conf" "$work/seed"

orders=250
{
jq -nc --argjson n "$orders" 'range(0; $n) | {op: "upsert", entity_set: "salesorders",
    logical_name: "salesorder",
    key: {msdyn_salesordernumber: ("SO-" + tostring),
          _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: "USMF"}}},
    body: {name: ("Order " + tostring)}}'
jq -nc '{op: "upsert", entity_set: "salesorders", logical_name: "salesorder",
    key: {msdyn_salesordernumber: "SO-Ä1",
          _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: "USMF"}}},
    body: {name: "Order Ä1"}}'
} >"$work/orders.jsonl"
sink_apply "$work/dw.conf" "$work/orders.jsonl" "$work/out" "$work/err"
check_eq "orders applied" $((orders + 1)) "$(sink_count "$work/out" applied)"

# One line per order, one whose order key carries trailing spaces (next to that order's,
# so in the same query), one for the non-ASCII order, two orphans.
line() { # ORDER_NUMBER SEQUENCE
    jq -nc --arg o "$1" --argjson s "$2" '{op: "upsert", entity_set: "salesorderdetails",
        logical_name: "salesorderdetail",
        key: {_salesorderid_value: {"$ref": "salesorders", key: {msdyn_salesordernumber: $o,
                  _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: "USMF"}}}},
              sequencenumber: $s},
        body: {productdescription: $o}}'
}
{
    for i in $(seq 0 $((orders - 1))); do
        line "SO-$i" 1
        [ "$i" = 7 ] && line "SO-7   " 2
    done
    line "SO-Ä1" 1
    line "SO-NOPE-1" 1
    line "SO-NOPE-2" 1
} >"$work/lines.jsonl"
before=$(grep -cF 'method=GET path="/api/data/v9.2/salesorders?' "$DVEMU_LOG")
sink_apply "$work/dw.conf" "$work/lines.jsonl" "$work/out" "$work/err"
check_eq "a run with orphans exits 1" 1 $?
check_eq "every line with an order applied" $((orders + 2)) "$(sink_count "$work/out" applied)"
lookups=$(($(grep -cF 'method=GET path="/api/data/v9.2/salesorders?' "$DVEMU_LOG") - before))
# 254 parents: three shared queries of at most 100, and the non-ASCII one alone.
check_eq "parents looked up in shared queries" 4 "$lookups"
check_contains "the non-ASCII order was asked alone" \
    "&\$filter=msdyn_salesordernumber%20eq%20'SO-%C3%841'" "$(cat "$DVEMU_LOG")"
res() { jq -c "select(.line == $1) | [.status, .class, .missing_parent]" "$work/out"; }
check_eq "orphan 1 names its order" \
    '["rejected","missing_parent","salesorders(msdyn_salesordernumber='"'SO-NOPE-1'"',_msdyn_company_value='"$(dvemu_api GET "cdm_companies(cdm_companycode='USMF')" | jq -r .cdm_companyid)"')"]' \
    "$(res $((orders + 3)))"
check_eq "orphan 2 is missing too" "missing_parent" "$(jq -r "select(.line == $((orders + 4))) | .class" "$work/out")"

# Each line hangs off the order its description names (GUIDs as dvemu stored them).
curl -sf "$DVEMU_URL/_dvemu/tables/salesorders" |
    jq -c '[.value[] | {(.salesorderid): .msdyn_salesordernumber}] | add' >"$work/o.json"
curl -sf "$DVEMU_URL/_dvemu/tables/salesorderdetails" >"$work/lines.json"
check_eq "$((orders + 2)) lines stored" $((orders + 2)) "$(jq '.value | length' "$work/lines.json")"
check_eq "every line hangs off the order it names" 0 "$(jq --slurpfile o "$work/o.json" \
    '[.value[] | select(($o[0][._salesorderid_value] | ascii_downcase)
        != (.productdescription | rtrimstr("   ") | ascii_downcase))] | length' \
    "$work/lines.json")"
check_eq "the trailing-space line hangs off SO-7" "SO-7" "$(jq -r --slurpfile o "$work/o.json" \
    '.value[] | select(.sequencenumber == 2) | $o[0][._salesorderid_value]' "$work/lines.json")"
finish

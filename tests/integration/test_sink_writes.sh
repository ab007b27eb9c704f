#!/usr/bin/env bash
# Sink writes against dvemu through `dwasync dataverse apply`: upsert, create-only,
# update-only and delete by a composite alternate key with a lookup part, lookups bound by
# the parent's key, UpsertMultiple where the table supports it and $batch where it does not,
# the $filter fallback for keys a URL cannot carry, missing parents, bad input lines.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-writes
dvemu_start
sink_conf "$work/dw.conf"

co='{"$ref":"cdm_companies","key":{"cdm_companycode":"USMF"}}'
cat >"$work/parents.jsonl" <<JSON
{"op":"upsert","entity_set":"cdm_companies","logical_name":"cdm_company","key":{"cdm_companycode":"USMF"},"body":{"cdm_name":"Contoso US"}}
{"op":"upsert","entity_set":"transactioncurrencies","logical_name":"transactioncurrency","key":{"isocurrencycode":"USD"},"body":{"currencyname":"US Dollar","currencysymbol":"\$","exchangerate":1.0}}
JSON
sink_apply "$work/dw.conf" "$work/parents.jsonl" "$work/out" "$work/err"
check_eq "parents applied" 0 $?
check_eq "two parent results" 2 "$(sink_count "$work/out" applied)"
check_contains "cdm_company supports UpsertMultiple" 'table \"cdm_company\" supports UpsertMultiple' "$(cat "$work/err")"
check_contains "transactioncurrency has no UpsertMultiple" 'table \"transactioncurrency\" does not support' "$(cat "$work/err")"
check_contains "bulk request sent" "cdm_companies/Microsoft.Dynamics.CRM.UpsertMultiple status=204" "$(cat "$DVEMU_LOG")"
check_contains "\$batch used for the other table" 'path=/api/data/v9.2/$batch status=200' "$(cat "$DVEMU_LOG")"
usmf=$(dvemu_api GET "cdm_companies(cdm_companycode='USMF')" | jq -r .cdm_companyid)
usd=$(dvemu_api GET "transactioncurrencies(isocurrencycode='USD')" | jq -r .transactioncurrencyid)

cat >"$work/w1.jsonl" <<JSON
{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-001","_msdyn_company_value":$co},"body":{"name":"O'Brien & Sons","transactioncurrencyid@odata.bind":{"\$ref":"transactioncurrencies","key":{"isocurrencycode":"USD"}}}}
{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C/002 50%","_msdyn_company_value":$co},"body":{"name":"Slash and percent"}}
{"op":"create","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-003 Müller","_msdyn_company_value":"$usmf"},"body":{"name":"Created only"}}
{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-004","_msdyn_company_value":{"\$ref":"cdm_companies","key":{"cdm_companycode":"NOPE"}}},"body":{"name":"Orphan"}}
{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-005","_msdyn_company_value":$co},"body":{"name":"Bad bind","transactioncurrencyid@odata.bind":{"\$ref":"transactioncurrencies","key":{"isocurrencycode":"XXX"}}}}
{"op":"update","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-006","_msdyn_company_value":$co},"body":{"name":"Update only, absent"}}
{"op":"delete","entity_set":"accounts","key":{"accountnumber":"C-007","_msdyn_company_value":$co}}
{"op":"upsert","entity_set":"accounts","key":{}}
this is not json
{"op":"merge","entity_set":"accounts","key":{"a":1},"body":{}}
JSON
sink_apply "$work/dw.conf" "$work/w1.jsonl" "$work/out" "$work/err"
check_eq "a run with rejected rows exits 1" 1 $?
res() { jq -c "select(.line == $1) | [.status, .class, .http, .code]" "$work/out"; }
check_eq "composite key with lookup part: applied" '["applied","none",204,""]' "$(res 1)"
check_eq "unaddressable key (/ and %): applied" '["applied","none",204,""]' "$(res 2)"
check_eq "create-only with a unicode key and a bare GUID lookup part" '["applied","none",204,""]' "$(res 3)"
check_eq "missing parent in the key" '["rejected","missing_parent",404,"0x80048d02"]' "$(res 4)"
check_eq "missing parent names the parent" "cdm_companies(cdm_companycode='NOPE')" \
    "$(jq -r 'select(.line == 4) | .missing_parent' "$work/out")"
check_eq "missing parent of a bind" '["rejected","missing_parent",404,"0x80048d02"]' "$(res 5)"
check_eq "the missing bound parent is named" "transactioncurrencies(isocurrencycode='XXX')" \
    "$(jq -r 'select(.line == 5) | .missing_parent' "$work/out")"
# Dataverse answers an absent row and an absent bind target alike (404 0x80048d02).
check_eq "update-only of an absent row" '["rejected","missing_parent",404,"0x80048d02"]' "$(res 6)"
check_eq "delete of an absent row counts as done" '["applied","none",404,""]' "$(res 7)"
check_eq "empty key refused" "invalid" "$(jq -r 'select(.line == 8) | .status' "$work/out")"
check_eq "bad JSON line reported" "invalid" "$(jq -r 'select(.line == 9) | .status' "$work/out")"
check_eq "unknown op reported" "invalid" "$(jq -r 'select(.line == 10) | .status' "$work/out")"
check_eq "one result per input line" 10 "$(wc -l <"$work/out")"

row=$(dvemu_api GET "accounts(accountnumber='C-001',_msdyn_company_value=$usmf)")
check_eq "row stored with its quote and ampersand" "O'Brien & Sons" "$(jq -r .name <<<"$row")"
check_eq "lookup bound by the parent's key" "$usd" "$(jq -r ._transactioncurrencyid_value <<<"$row")"
check_eq "company lookup set from the key" "$usmf" "$(jq -r ._msdyn_company_value <<<"$row")"
check_eq "unaddressable key row exists" "Slash and percent" \
    "$(dvemu_api GET "accounts?\$filter=accountnumber%20eq%20'C%2F002%2050%25'" | jq -r '.value[0].name')"
check_eq "unicode key row exists" "Created only" \
    "$(dvemu_api GET "accounts(accountnumber='C-003%20M%C3%BCller',_msdyn_company_value=$usmf)" | jq -r .name)"

# Second pass: the same keys update in place (the unaddressable one through its id),
# create-only now meets a duplicate, and deletes remove rows by key and by id.
cat >"$work/w2.jsonl" <<JSON
{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-001","_msdyn_company_value":$co},"body":{"name":"Renamed","transactioncurrencyid@odata.bind":null}}
{"op":"update","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C/002 50%","_msdyn_company_value":$co},"body":{"name":"Updated by id"}}
{"op":"create","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"C-003 Müller","_msdyn_company_value":$co},"body":{"name":"dup"}}
JSON
sink_apply "$work/dw.conf" "$work/w2.jsonl" "$work/out" "$work/err"
check_eq "update by key applied" '["applied","none",204,""]' "$(res 1)"
check_eq "update of an unaddressable key applied" '["applied","none",204,""]' "$(res 2)"
check_eq "create-only duplicate refused" '["rejected","duplicate",412]' "$(jq -c 'select(.line == 3) | [.status, .class, .http]' "$work/out")"
row=$(dvemu_api GET "accounts(accountnumber='C-001',_msdyn_company_value=$usmf)")
check_eq "renamed in place" "Renamed" "$(jq -r .name <<<"$row")"
check_eq "bind cleared with null" "null" "$(jq -r ._transactioncurrencyid_value <<<"$row")"
check_eq "still three accounts (no duplicates)" 3 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

cat >"$work/w3.jsonl" <<JSON
{"op":"delete","entity_set":"accounts","key":{"accountnumber":"C-001","_msdyn_company_value":$co}}
{"op":"delete","entity_set":"accounts","key":{"accountnumber":"C/002 50%","_msdyn_company_value":$co}}
{"op":"delete","entity_set":"accounts","key":{"accountnumber":"C-003 Müller","_msdyn_company_value":$co}}
JSON
sink_apply "$work/dw.conf" "$work/w3.jsonl" "$work/out" "$work/err"
check_eq "deletes exit 0" 0 $?
check_eq "three deletes applied" 3 "$(sink_count "$work/out" applied)"
check_eq "no accounts left" 0 "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

# Metadata through the sink's GET: the sample's account key is composite with a lookup.
out=$("$DWASYNC_BIN" --config "$work/dw.conf" dataverse get "EntityDefinitions(LogicalName='account')/Keys" 2>/dev/null)
check_eq "dataverse get reads metadata" "accountnumber,msdyn_company" \
    "$(jq -r '.value[0].KeyAttributes | join(",")' <<<"$out")"
out=$("$DWASYNC_BIN" --config "$work/dw.conf" dataverse get "nosuchset" 2>&1)
check_eq "GET of an unknown set fails" 1 $?
check_contains "with the Dataverse code" "0x8006088a" "$out"

finish

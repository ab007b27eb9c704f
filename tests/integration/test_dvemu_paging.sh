#!/usr/bin/env bash
# dvemu pages collections as Dataverse does, counts rows, and refuses what it does not
# emulate instead of ignoring it; dwasync follows next links on every read (lookups of
# parents, `dataverse get`, which metadata reads share), so a server with a small page size
# loses nothing. Each case cites the Microsoft Learn page it follows (Power Apps > Developer >
# Dataverse > Web API):
#   [page]  "Page results using OData" (webapi/query/page-results)
#   [count] "Count rows using OData" (webapi/query/count-rows)
#   [query] "Query data using the Web API" (webapi/query-data-web-api): $skip is not supported
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work dvemu-paging
dvemu_start --page-size 5
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }

for i in 1 2 3 4 5 6 7; do
    dvemu_call PATCH "cdm_companies(cdm_companycode='C$i')" "{\"cdm_name\":\"Company $i\"}"
done
check_eq "seven companies" 7 "$(dvemu_admin GET tables/cdm_companies | jq '.value | length')"

# next_page: follows the last answer's @odata.nextLink with the same Prefer header ([page]:
# "use the same Prefer header").
next_page() {
    local link prefer=${1:-}
    link=$(j '."@odata.nextLink"')
    local -a h=()
    [ -n "$prefer" ] && h=(-H "Prefer: $prefer")
    dvemu_call GET "${link#"$DVEMU_URL/api/data/v9.2/"}" "" "${h[@]}"
}

# --- table: request, Prefer, expected status, rows, next link?, Preference-Applied -----------------
# [page] odata.maxpagesize=N gives N rows, a next link and Preference-Applied
# [page] without it, the server's page (Dataverse 5,000; this dvemu --page-size 5) and a next link
# [page] a max page size above 5,000 is ignored (and so, in dvemu, one above --page-size)
# [page] $top limits the rows; the pages stay within it
while IFS='|' read -r label path prefer want_rows want_next want_applied; do
    h=()
    [ -n "$prefer" ] && h=(-H "Prefer: $prefer")
    dvemu_call GET "$path" "" "${h[@]}"
    check_eq "$label: 200" 200 "$DV_STATUS"
    check_eq "$label: rows" "$want_rows" "$(j '.value | length')"
    check_eq "$label: next link" "$want_next" "$(j 'has("@odata.nextLink")')"
    check_eq "$label: Preference-Applied" "$want_applied" "$(dvemu_header Preference-Applied)"
done <<'EOF'
[page] maxpagesize 3|cdm_companies?$select=cdm_companycode|odata.maxpagesize=3|3|true|odata.maxpagesize=3
[page] no page-size preference: the server's page (only the annotations applied)|cdm_companies|odata.include-annotations="*"|5|true|odata.include-annotations="*"
[page] maxpagesize above 5000 is ignored|cdm_companies|odata.maxpagesize=5001|5|true|
[page] maxpagesize above this server's page: its page|cdm_companies|odata.maxpagesize=50|5|true|
[page] $top under the page: no next link|cdm_companies?$top=4|odata.maxpagesize=5|4|false|odata.maxpagesize=5
EOF

# [page] following next links returns every row once, and the last page has none.
dvemu_call GET 'cdm_companies?$select=cdm_companycode&$orderby=cdm_companycode&$count=true' "" \
    -H 'Prefer: odata.maxpagesize=3'
codes=$(j '[.value[].cdm_companycode] | join(",")')
check_eq "[count] @odata.count counts every matching row, not the page" 7 "$(j '."@odata.count"')"
check_contains "[page] the next link keeps the query" '$orderby=cdm_companycode' "$(j '."@odata.nextLink"')"
check_contains "[page] and carries a skip token" '$skiptoken=' "$(j '."@odata.nextLink"')"
next_page odata.maxpagesize=3
codes="$codes,$(j '[.value[].cdm_companycode] | join(",")')"
check_eq "[count] the count is on every page" 7 "$(j '."@odata.count"')"
next_page odata.maxpagesize=3
codes="$codes,$(j '[.value[].cdm_companycode] | join(",")')"
check_eq "[page] three pages hold the seven rows in order" "C1,C2,C3,C4,C5,C6,C7" "$codes"
check_eq "[page] the last page has no next link" false "$(j 'has("@odata.nextLink")')"

# [page] $top=6 in pages of 4: 4, then the 2 left.
dvemu_call GET 'cdm_companies?$top=6' "" -H 'Prefer: odata.maxpagesize=4'
check_eq "[page] \$top in pages: first page" 4 "$(j '.value | length')"
next_page odata.maxpagesize=4
check_eq "[page] \$top in pages: the rest of \$top" "2 false" "$(j '"\(.value | length) \(has("@odata.nextLink"))"')"

# [page] a next link followed without the Prefer header gets the server's page.
dvemu_call GET 'cdm_companies' "" -H 'Prefer: odata.maxpagesize=2'
next_page
check_eq "[page] a next link without Prefer: the server's page" 5 "$(j '.value | length')"

# --- counting ---------------------------------------------------------------------------------------
# [count] GET <set>/$count answers the number as text.
dvemu_call GET 'cdm_companies/$count'
check_eq "[count] /\$count: 200" 200 "$DV_STATUS"
check_eq "[count] /\$count is the number as text" 7 "$DV_BODY"
check_contains "[count] /\$count is text/plain" "text/plain" "$(dvemu_header Content-Type)"
dvemu_call GET "cdm_companies/\$count?\$filter=cdm_companycode%20ne%20'C1'"
check_eq "[count] /\$count with \$filter" 6 "$DV_BODY"

# --- nothing unsupported is silently ignored -----------------------------------------------------------
while IFS='|' read -r label path want_status want_code; do
    dvemu_call GET "$path"
    check_eq "$label: status" "$want_status" "$DV_STATUS"
    check_eq "$label: Dataverse-shaped error" "$want_code" "$(j .error.code)"
    check_eq "$label: with a message" true "$(j '.error.message | length > 0')"
done <<'EOF'
[query] $skip is not supported|cdm_companies?$skip=2|400|0x80060888
[query] an unknown system query option|cdm_companies?$frobnicate=1|400|0x80060888
[page] a skip token dvemu did not write|cdm_companies?$skiptoken=abc|400|0x80060888
[query] a fetchXml without one entity is not emulated|cdm_companies?fetchXml=%3Cfetch%2F%3E|501|0x80060888
[query] $apply is not emulated|cdm_companies?$apply=aggregate($count%20as%20n)|501|0x80060888
EOF

# --- dwasync follows next links --------------------------------------------------------------------------
# A dvemu whose pages hold 2 rows: every read of more rows than that is paged.
dvemu_stop
DVEMU_TOKEN=
dvemu_start --page-size 2
sink_conf "$work/dw.conf" "batch_size = 10"
for i in 1 2 3 4 5; do
    printf '{"op":"upsert","entity_set":"cdm_companies","logical_name":"cdm_company","key":{"cdm_companycode":"P%s"},"body":{"cdm_name":"Parent %s"}}\n' "$i" "$i"
done >"$work/companies.jsonl"
sink_apply "$work/dw.conf" "$work/companies.jsonl" "$work/out" "$work/err"
check_eq "five companies written" 5 "$(sink_count "$work/out" applied)"

out=$("$DWASYNC_BIN" --config "$work/dw.conf" dataverse get 'cdm_companies?$select=cdm_companycode' 2>"$work/get.err")
check_eq "dataverse get exits 0" 0 $?
check_eq "dataverse get follows next links: every row" "P1,P2,P3,P4,P5" \
    "$(printf '%s' "$out" | jq -r '[.value[].cdm_companycode] | sort | join(",")')"
out=$("$DWASYNC_BIN" --config "$work/dw.conf" dataverse get "EntityDefinitions(LogicalName='account')/Attributes?\$select=LogicalName" 2>>"$work/get.err")
dvemu_call GET "EntityDefinitions(LogicalName='account')/Attributes?\$select=LogicalName&\$count=true"
check_eq "metadata reads follow next links: every attribute" "$(j '."@odata.count"')" \
    "$(printf '%s' "$out" | jq '.value | length')"
check_eq "(and there are more than a page of them)" true "$(j '."@odata.count" > 2')"

# Five accounts, each under another company: the sink looks the five parents up in one
# GET, whose answer comes in three pages.
for i in 1 2 3 4 5; do sink_accounts 1 "X$i-" "P$i"; done >"$work/accounts.jsonl"
sink_apply "$work/dw.conf" "$work/accounts.jsonl" "$work/out" "$work/err"
check_eq "the apply exits 0" 0 $?
check_eq "parents found across pages: every account applied" 5 "$(sink_count "$work/out" applied)"
check_eq "each account under its own company" 5 \
    "$(dvemu_admin GET tables/accounts | jq '[.value[]._msdyn_company_value] | unique | length')"
check_eq "the lookup was paged: two next pages asked for" 2 "$(grep -F 'path="/api/data/v9.2/cdm_companies?$select=cdm_companyid' "$DVEMU_LOG" | grep -c skiptoken)"

finish

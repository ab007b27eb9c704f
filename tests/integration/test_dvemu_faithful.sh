#!/usr/bin/env bash
# dvemu answers common Web API requests as Microsoft documents them: $filter functions and
# precedence, conditional operations by ETag, $select with return=representation on create
# and update, and $batch's Location header and undeclared Content-ID. Table-driven; each case
# cites the Microsoft Learn page (Power Apps > Developer > Dataverse > Web API) it follows:
#   [filter] "Filter rows using OData" (webapi/query/filter-rows)
#   [cond]   "Perform conditional operations using the Web API"
#   [create] "Create a table row using the Web API" (create with data returned, $select)
#   [update] "Update and delete table rows using the Web API" (update with data returned)
#   [batch]  "Execute batch operations using the Web API" (Reference URIs; Content-ID)
source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
dvemu_start
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }

dvemu_call PATCH "cdm_companies(cdm_companycode='C1')" '{"cdm_name":"Company one"}'
c1=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
acct() { # NUMBER BODY
    dvemu_call PATCH "accounts(accountnumber='$1',_msdyn_company_value=$c1)" "$2"
    [ "$DV_STATUS" = 204 ] || fail "seed account $1" "$DV_STATUS $DV_BODY"
}
acct A1 '{"name":"Contoso Pharmaceuticals","numberofemployees":10,"address1_city":"Seattle","msdyn_lastsyncedon":"2026-01-05T00:00:00Z"}'
acct A2 '{"name":"Fabrikam","numberofemployees":50,"msdyn_lastsyncedon":"2026-02-01T00:00:00Z"}'
acct A3 '{"name":"Contoso Bikes","numberofemployees":200,"address1_city":"Redmond"}'
acct A4 '{"name":"Adventure Works","address1_city":"Seattle"}'

# --- [filter] label | $filter | accounts it answers ------------------------------------------------------
while IFS='|' read -r label filter want; do
    enc=$(jq -rn --arg f "$filter" '$f | @uri')
    dvemu_call GET "accounts?\$select=accountnumber&\$filter=$enc"
    check_eq "$label: 200" 200 "$DV_STATUS"
    check_eq "$label" "$want" "$(j '[.value[].accountnumber] | sort | join(",")')"
done <<EOF
[filter] contains, case-insensitive|contains(name,'contoso')|A1,A3
[filter] startswith|startswith(name,'adv')|A4
[filter] endswith|endswith(name,'Bikes')|A3
[filter] not with a function|not contains(name,'contoso')|A2,A4
[filter] ne on a string|name ne 'Fabrikam'|A1,A3,A4
[filter] eq null|address1_city eq null|A2
[filter] ne null and a number|address1_city ne null and numberofemployees gt 20|A3
[filter] and binds tighter than or|numberofemployees gt 5 and numberofemployees lt 100 or startswith(name,'Adv')|A1,A2,A4
[filter] parentheses change it|numberofemployees gt 5 and (numberofemployees lt 100 or startswith(name,'Adv'))|A1,A2
[filter] a date|msdyn_lastsyncedon ge 2026-01-31T00:00:00Z|A2
[filter] a lookup by _x_value|_msdyn_company_value eq $c1 and numberofemployees le 10|A1
EOF
dvemu_call GET "accounts?\$filter=$(jq -rn '"substringof('"'"'x'"'"',name)" | @uri')"
check_eq "[filter] an unknown function: 400" 400 "$DV_STATUS"
check_eq "[filter] with Dataverse's code" 0x80060888 "$(j .error.code)"
check_eq "[filter] and the OData library's message" \
    "An unknown function with name 'substringof' was found. This may also be a function import or a key lookup on a navigation property, which is not allowed." \
    "$(j .error.message)"

# --- [cond] conditional operations by ETag -------------------------------------------------------------
a1="accounts(accountnumber='A1',_msdyn_company_value=$c1)"
dvemu_call GET "$a1?\$select=name"
etag=$(j '."@odata.etag"')
check_contains "[cond] rows carry a weak etag" 'W/"' "$etag"
while IFS='|' read -r label method header body want; do
    h=()
    [ -n "$header" ] && h=(-H "$header")
    dvemu_call "$method" "$a1" "$body" "${h[@]}"
    check_eq "$label" "$want" "$DV_STATUS"
done <<EOF
[cond] If-None-Match with the current etag: 304|GET|If-None-Match: $etag||304
[cond] If-Match with the current etag updates|PATCH|If-Match: $etag|{"telephone1":"555-0101"}|204
[cond] If-Match with a stale etag: 412 for update|PATCH|If-Match: $etag|{"telephone1":"555-0102"}|412
[cond] If-Match with a stale etag: 412 for delete|DELETE|If-Match: $etag||412
[cond] If-None-Match with a stale etag: the row|GET|If-None-Match: $etag||200
EOF
dvemu_call PATCH "$a1" '{"telephone1":"x"}' -H "If-Match: $etag"
check_eq "[cond] stale etag: Dataverse's code and message" \
    "0x80060882 The version of the existing record doesn't match the RowVersion property provided." \
    "$(j '"\(.error.code) \(.error.message)"')"
dvemu_call GET "$a1?\$select=telephone1"
check_eq "[cond] the refused update changed nothing" 555-0101 "$(j .telephone1)"
dvemu_call PATCH "accounts(accountnumber='NOPE',_msdyn_company_value=$c1)" '{"name":"x"}' -H "If-Match: $etag"
check_eq "[cond] If-Match on an absent row: 404, nothing created" "404 0" \
    "$DV_STATUS $(dvemu_admin GET tables/accounts | jq '[.value[] | select(.accountnumber == "NOPE")] | length')"

# --- [create]/[update] $select with return=representation --------------------------------------------------
rep=(-H 'Prefer: return=representation')
dvemu_call POST 'cdm_companies?$select=cdm_name' '{"cdm_companycode":"C2","cdm_name":"Two"}' "${rep[@]}"
check_eq "[create] with data returned: 201" 201 "$DV_STATUS"
check_eq "[create] \$select limits the properties (plus id and etag)" \
    '["@odata.context","@odata.etag","cdm_companyid","cdm_name"]' "$(printf '%s' "$DV_BODY" | jq -c '[keys[]] | sort')"
dvemu_call PATCH "cdm_companies(cdm_companycode='C2')?\$select=cdm_companycode" '{"cdm_name":"Deux"}' "${rep[@]}"
check_eq "[update] with data returned: 200" 200 "$DV_STATUS"
check_eq "[update] \$select limits the properties" '["@odata.context","@odata.etag","cdm_companycode","cdm_companyid"]' \
    "$(printf '%s' "$DV_BODY" | jq -c '[keys[]] | sort')"
dvemu_call POST 'cdm_companies?$select=nosuch' '{"cdm_companycode":"C3","cdm_name":"Three"}' "${rep[@]}"
check_eq "[create] an unknown \$select property: 400, nothing written" "400 0x0 0" \
    "$DV_STATUS $(j .error.code) $(dvemu_admin GET tables/cdm_companies | jq '[.value[] | select(.cdm_companycode == "C3")] | length')"
dvemu_call POST 'cdm_companies' '{"cdm_companycode":"C4","cdm_name":"Four"}'
check_eq "[create] without return=representation: 204 and OData-EntityId" "204 1" \
    "$DV_STATUS $(dvemu_header OData-EntityId | grep -c 'cdm_companies(')"

# --- [batch] Location on written parts; an undeclared Content-ID --------------------------------------------
part() { dvemu_batch_part "$@"; }
changeset() { printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary=changeset_BBB\r\n\r\n%s\r\n--batch_AAA--\r\n' "$1"; }
cs=$(
    part changeset_BBB "POST /api/data/v9.2/cdm_companies" '{"cdm_companycode":"B1","cdm_name":"Batch"}' "Content-ID: 1"
    part changeset_BBB 'PATCH $1' '{"cdm_name":"Batch one"}' "Content-ID: 2"
    printf -- '--changeset_BBB--\r\n'
)
dvemu_batch "$(changeset "$cs")"
check_eq "[batch] a changeset of a create and an update: 200" 200 "$DV_STATUS"
check_eq "[batch] both parts carry Location as well as OData-EntityId" "2 2" \
    "$(tr -d '\r' <"$DVEMU_DIR/batch-resp" | grep -c '^Location: .*cdm_companies(') $(tr -d '\r' <"$DVEMU_DIR/batch-resp" | grep -c '^OData-EntityId: ')"
cs=$(
    part changeset_BBB "POST /api/data/v9.2/accounts" \
        '{"name":"early","accountnumber":"E1","msdyn_company@odata.bind":"$1"}' "Content-ID: 2"
    part changeset_BBB "POST /api/data/v9.2/cdm_companies" '{"cdm_companycode":"L1","cdm_name":"Late"}' "Content-ID: 1"
    printf -- '--changeset_BBB--\r\n'
)
dvemu_batch "$(changeset "$cs")"
check_eq "[batch] a Content-ID used before it is declared: 400" 400 "$DV_STATUS"
check_contains "[batch] with the documented message" "Content-ID Reference: '\$1' does not exist in the batch context." "$DV_BODY"
check_eq "[batch] and the changeset wrote nothing" 0 \
    "$(dvemu_admin GET tables/cdm_companies | jq '[.value[] | select(.cdm_companycode == "L1")] | length')"
cs=$(
    part changeset_BBB 'PATCH $7' '{"cdm_name":"x"}' "Content-ID: 1"
    printf -- '--changeset_BBB--\r\n'
)
dvemu_batch "$(changeset "$cs")"
check_eq "[batch] an undeclared Content-ID in a URL: 400 with the message" "400 1" \
    "$DV_STATUS $(printf '%s' "$DV_BODY" | grep -c "Content-ID Reference: '\$7' does not exist in the batch context.")"

finish

#!/usr/bin/env bash
# dvemu answers common Web API requests as Microsoft documents them: $filter functions and
# precedence, conditional operations by ETag, $select with return=representation on create
# and update, property paths, navigation references ($ref), and $batch's Location header,
# property paths after a Content-ID and undeclared Content-IDs. Table-driven; each case
# cites the Microsoft Learn page (Power Apps > Developer > Dataverse > Web API) it follows:
#   [filter] "Filter rows using OData" (webapi/query/filter-rows)
#   [cond]   "Perform conditional operations using the Web API"
#   [create] "Create a table row using the Web API" (create with data returned, $select)
#   [update] "Update and delete table rows using the Web API" (update with data returned)
#   [batch]  "Execute batch operations using the Web API" (Reference URIs; Content-ID)
#   [assoc]  "Associate and disassociate table rows using the Web API" ($ref, single- and
#            collection-valued navigation properties)
#   [prop]   "Update and delete table rows using the Web API" (update / delete a single
#            property value) and "Retrieve a table row using the Web API" (a single property)
#   [expand] "Join tables using OData" ($expand of single- and collection-valued properties)
#   [links]  "Page results using OData": links start with the URL the client called (its Host)
#   [select] "Select columns": a column with no value comes back as null; [fetch] a FetchXml
#            result leaves it out, and counts rows with returntotalrecordcount ("Count rows
#            using FetchXml")
#   [filter] "Filter rows using OData": names checked as $select's are; a lookup's navigation
#            property compared with null
#   [refused] what dvemu does not emulate (saved and user queries, change tracking,
#            impersonation) is refused with 501, never answered as if it had not been asked
#   [meta]   "Query table definitions using the Web API": $expand of Attributes, Keys
#   [annot]  "Format values" and "Count rows using OData": Prefer: odata.include-annotations
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
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

# --- [prop] property paths ---------------------------------------------------------------------------------
while IFS='|' read -r label method path body want_status want_value; do
    dvemu_call "$method" "$path" "$body"
    check_eq "$label: status" "$want_status" "$DV_STATUS"
    if [ -n "$want_value" ]; then
        check_eq "$label: value" "$want_value" "$(j .value)"
    fi
done <<EOF
[prop] PUT one column|PUT|$a1/telephone1|{"value":"555-0199"}|204|
[prop] GET one column|GET|$a1/telephone1||200|555-0199
[prop] DELETE one column|DELETE|$a1/telephone1||204|
[prop] it is null now|GET|$a1/telephone1||200|null
[prop] PUT without {"value"}|PUT|$a1/telephone1|{"v":1}|400|
[prop] a property the table lacks|PUT|$a1/nosuch|{"value":1}|400|
[prop] PUT is validated like any write|PUT|$a1/numberofemployees|{"value":"many"}|400|
EOF

# --- [assoc] navigation references ---------------------------------------------------------------------------
a2="accounts(accountnumber='A2',_msdyn_company_value=$c1)"
id_of() { dvemu_admin GET "tables/$1" | jq -r --arg k "$2" --arg v "$3" ".value[] | select(.[\$k] == \$v) | .$4"; }
a1id=$(id_of accounts accountnumber A1 accountid)
dvemu_call POST contacts "{\"lastname\":\"Doe\",\"msdyn_contactpersonid\":\"K1\",\"msdyn_company@odata.bind\":\"cdm_companies($c1)\"}"
k1=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
coll=contact_parentcustomerid_account
dvemu_call PUT "$a2/msdyn_billingaccount/\$ref" "{\"@odata.id\":\"accounts($a1id)\"}"
check_eq "[assoc] PUT a single-valued \$ref: 204" 204 "$DV_STATUS"
check_eq "[assoc] the lookup now names the row" "$a1id" "$(id_of accounts accountnumber A2 _msdyn_billingaccount_value)"
dvemu_call DELETE "$a2/msdyn_billingaccount/\$ref"
check_eq "[assoc] DELETE a single-valued \$ref: 204" 204 "$DV_STATUS"
check_eq "[assoc] the lookup is cleared" null "$(id_of accounts accountnumber A2 _msdyn_billingaccount_value)"
dvemu_call POST "accounts($a1id)/$coll/\$ref" "{\"@odata.id\":\"$DVEMU_URL/api/data/v9.2/contacts($k1)\"}"
check_eq "[assoc] POST to a collection-valued \$ref: 204" 204 "$DV_STATUS"
check_eq "[assoc] the child's lookup names the parent" "$a1id" "$(id_of contacts msdyn_contactpersonid K1 _parentcustomerid_value)"
dvemu_call GET "accounts($a1id)/$coll?\$select=lastname"
check_eq "[assoc] GET the collection-valued navigation property lists the child" "Doe" "$(j '[.value[].lastname] | join(",")')"
dvemu_call DELETE "accounts($a1id)/$coll($k1)/\$ref"
check_eq "[assoc] DELETE one row of a collection-valued \$ref: 204" 204 "$DV_STATUS"
dvemu_call GET "accounts($a1id)/$coll"
check_eq "[assoc] and the collection is empty" 0 "$(j '.value | length')"
check_eq "[assoc] the relationship is in the metadata with its navigation names" \
    "parentcustomerid_account $coll" \
    "$(dvemu_api GET "EntityDefinitions(LogicalName='contact')/ManyToOneRelationships" |
        jq -r '.value[] | select(.ReferencedEntity == "account") | "\(.ReferencingEntityNavigationPropertyName) \(.ReferencedEntityNavigationPropertyName)"')"

# [batch] a property path after a Content-ID: "PUT $1/lastname".
cs=$(
    part changeset_BBB "POST /api/data/v9.2/contacts" \
        "{\"lastname\":\"First\",\"msdyn_contactpersonid\":\"K2\",\"msdyn_company@odata.bind\":\"cdm_companies($c1)\"}" "Content-ID: 1"
    part changeset_BBB 'PUT $1/lastname' '{"value":"BBBBB"}' "Content-ID: 2"
    printf -- '--changeset_BBB--\r\n'
)
dvemu_batch "$(changeset "$cs")"
check_eq "[batch] PUT \$1/lastname in a changeset: 200" 200 "$DV_STATUS"
check_eq "[batch] the property was set on the row \$1 created" BBBBB "$(id_of contacts msdyn_contactpersonid K2 lastname)"

# --- [expand] "Join tables using OData" (webapi/query/join-tables) ---------------------------------------------
dvemu_call PUT "$a2/msdyn_billingaccount/\$ref" "{\"@odata.id\":\"accounts($a1id)\"}"
k2=$(id_of contacts msdyn_contactpersonid K2 contactid)
dvemu_call POST "accounts($a1id)/$coll/\$ref" "{\"@odata.id\":\"contacts($k2)\"}"
dvemu_call GET "$a2?\$select=name&\$expand=msdyn_billingaccount(\$select=name)"
check_eq "[expand] a single-valued navigation property of a row" "Contoso Pharmaceuticals" "$(j .msdyn_billingaccount.name)"
check_eq "[expand] with its nested \$select (plus id and etag)" '["@odata.etag","accountid","name"]' \
    "$(printf '%s' "$DV_BODY" | jq -c '.msdyn_billingaccount | keys | sort')"
dvemu_call GET "accounts?\$select=name&\$filter=accountnumber%20eq%20'A1'&\$expand=msdyn_company(\$select=cdm_name)"
check_eq "[expand] in a collection" "Company one" "$(j '.value[0].msdyn_company.cdm_name')"
dvemu_call GET "accounts?\$select=name&\$filter=accountnumber%20eq%20'A3'&\$expand=msdyn_billingaccount"
check_eq "[expand] an empty lookup expands to null" null "$(j '.value[0].msdyn_billingaccount')"
dvemu_call GET "accounts($a1id)?\$select=name&\$expand=$coll(\$select=lastname)"
check_eq "[expand] a collection-valued navigation property, one level" BBBBB "$(j "[.$coll[].lastname] | join(\",\")")"
dvemu_call GET "accounts?\$expand=nosuchnav"
check_eq "[expand] an unknown navigation property: 400" 400 "$DV_STATUS"
dvemu_call GET "accounts?\$expand=msdyn_company(\$filter=cdm_name%20eq%20'x')"
check_eq "[expand] nested options other than \$select: 501, never ignored" "501 0x80060888" "$DV_STATUS $(j .error.code)"


# --- [links] links start with the URL the client called ("Page results using OData") ---------------------
url=$DVEMU_URL
DVEMU_URL="http://localhost:$DVEMU_PORT"
dvemu_call GET "accounts?\$select=name" '' -H 'Prefer: odata.maxpagesize=1'
next=$(j '."@odata.nextLink"')
check_eq "[links] nextLink with the host the client called" "http://localhost:$DVEMU_PORT/api/data/v9.2/accounts?" "${next%%\$*}"
check_eq "[links] and @odata.context" "http://localhost:$DVEMU_PORT/api/data/v9.2/\$metadata#accounts" "$(j '."@odata.context"' | sed 's/(.*//')"
check_eq "[links] the next link can be followed" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DVEMU_TOKEN" "$next")"
DVEMU_URL=$url
dvemu_call POST cdm_companies '{"cdm_companycode":"C5","cdm_name":"Five"}' -H 'Host: org.example.test:8443'
check_eq "[links] OData-EntityId through a proxy's name" "http://org.example.test:8443/api/data/v9.2/cdm_companies(" \
    "$(dvemu_header OData-EntityId | sed 's/(.*/(/')"

# --- [select] every column asked for comes back, null when it has no value ("Select columns") --------------
dvemu_call GET "accounts(accountnumber='A2',_msdyn_company_value=$c1)?\$select=name,telephone1,description"
check_eq "[select] columns with no value are null, not left out" '[true,true,null,"Fabrikam"]' \
    "$(printf '%s' "$DV_BODY" | jq -c '[has("description"), has("telephone1"), .telephone1, .name]')"
fx="<fetch><entity name='account'><attribute name='name'/><attribute name='telephone1'/><filter><condition attribute='accountnumber' operator='eq' value='A2'/></filter></entity></fetch>"
dvemu_call GET "accounts?fetchXml=$(jq -rn --arg x "$fx" '$x | @uri')"
check_eq "[fetch] a FetchXml result leaves columns with no value out" "Fabrikam false" \
    "$(j '.value[0].name') $(j '.value[0] | has("telephone1")')"
fx="<fetch count='1' returntotalrecordcount='true'><entity name='account'><attribute name='name'/></entity></fetch>"
dvemu_call GET "accounts?fetchXml=$(jq -rn --arg x "$fx" '$x | @uri')"
check_eq "[fetch] returntotalrecordcount counts every matching row, not the page" "1 4 false" \
    "$(j '.value | length') $(j '."@Microsoft.Dynamics.CRM.totalrecordcount"') $(j '."@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"')"

# --- [filter] names are checked; a lookup's navigation property stands for its column --------------------
while IFS='|' read -r label query want; do
    dvemu_call GET "accounts?\$select=name&$query"
    check_eq "$label" "$want" "$DV_STATUS $(j '.error.code // ([.value[].name] | length)')"
done <<'EOF2'
[filter] an unknown property: 400|$filter=nosuch%20eq%201|400 0x0
[filter] a related table's column: 501, never a wrong answer|$filter=msdyn_company/cdm_name%20eq%20'Company%20one'|501 0x80060888
[filter] an unknown navigation path: 400|$filter=nosuchnav/cdm_name%20eq%20'x'|400 0x0
[filter] a lookup's navigation property eq null|$filter=msdyn_company%20eq%20null|200 0
[filter] a lookup's navigation property ne null|$filter=msdyn_company%20ne%20null|200 4
[orderby] an unknown property: 400|$orderby=nosuch%20desc|400 0x0
EOF2

# --- [refused] what dvemu does not emulate is refused, never answered as if not asked --------------------
dvemu_call GET "accounts?savedQuery=00000000-0000-0000-0000-00000000000a"
check_eq "[refused] savedQuery" "501 0x80060888" "$DV_STATUS $(j .error.code)"
dvemu_call GET "accounts?userQuery=00000000-0000-0000-0000-00000000000a"
check_eq "[refused] userQuery" "501 0x80060888" "$DV_STATUS $(j .error.code)"
dvemu_call GET "accounts?\$select=name" '' -H 'Prefer: odata.track-changes'
check_eq "[refused] change tracking" "501 0x80060888" "$DV_STATUS $(j .error.code)"
dvemu_call PATCH "$a1" '{"name":"as someone else"}' -H "MSCRMCallerID: 00000000-0000-0000-0000-00000000000b"
check_eq "[refused] impersonation (MSCRMCallerID), nothing written" "501 Contoso Pharmaceuticals" \
    "$DV_STATUS $(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber == "A1") | .name')"
dvemu_call GET "accounts?\$select=name" '' -H "CallerObjectId: 00000000-0000-0000-0000-00000000000b"
check_eq "[refused] impersonation (CallerObjectId)" 501 "$DV_STATUS"

# --- [create]/[update] $expand with return=representation ("Create with data returned") ------------------
dvemu_call POST "contacts?\$select=lastname&\$expand=msdyn_company(\$select=cdm_name)" \
    "{\"lastname\":\"Roe\",\"msdyn_contactpersonid\":\"K9\",\"msdyn_company@odata.bind\":\"cdm_companies($c1)\"}" "${rep[@]}"
check_eq "[create] \$expand in the representation" "201 Roe Company one" \
    "$DV_STATUS $(j .lastname) $(j .msdyn_company.cdm_name)"
k9=$(j .contactid)
dvemu_call PATCH "contacts($k9)?\$select=lastname&\$expand=msdyn_company(\$select=cdm_name)" \
    '{"lastname":"Poe"}' "${rep[@]}"
check_eq "[update] \$expand in the representation" "200 Poe Company one" \
    "$DV_STATUS $(j .lastname) $(j .msdyn_company.cdm_name)"
dvemu_call POST "contacts?\$expand=nosuchnav" '{"lastname":"Zoe","msdyn_contactpersonid":"K10"}' "${rep[@]}"
check_eq "[create] an unknown \$expand: 400, nothing written" "400 0" \
    "$DV_STATUS $(dvemu_admin GET tables/contacts | jq '[.value[] | select(.msdyn_contactpersonid == "K10")] | length')"

# --- [meta] $expand of table definitions ("Query table definitions using the Web API") --------------------
dvemu_call GET "EntityDefinitions(LogicalName='account')?\$select=LogicalName&\$expand=Attributes(\$select=LogicalName),Keys"
check_eq "[meta] Attributes and Keys expanded, the nested \$select applied" "200 account true true true" \
    "$DV_STATUS $(j .LogicalName) $(j '(.Attributes | length) > 5') $(j '[.Attributes[] | keys - ["LogicalName", "MetadataId", "@odata.type"] | length] | max == 0') $(j '(.Keys | length) > 0')"
dvemu_call GET "EntityDefinitions?\$select=LogicalName&\$filter=LogicalName%20eq%20'account'&\$expand=Keys"
check_eq "[meta] \$expand in the collection" "1 true" "$(j '.value | length') $(j '(.value[0].Keys | length) > 0')"
dvemu_call GET "EntityDefinitions(LogicalName='account')?\$expand=NoSuchNav"
check_eq "[meta] an unknown navigation property: 400" 400 "$DV_STATUS"
dvemu_call GET "EntityDefinitions(LogicalName='account')?\$expand=Attributes(\$filter=LogicalName%20eq%20'name')"
check_eq "[meta] nested options other than \$select: 501" 501 "$DV_STATUS"


# --- [annot] Prefer: odata.include-annotations ("Format values", "Count rows using OData") -----------------
dvemu_call PATCH "$a1" '{"customertypecode":3,"msdyn_creditlimitismandatory":true,"numberofemployees":1200}'
ann() { printf '%s' "$DV_BODY" | jq -r --arg k "$1" '.[$k] // "absent"'; }
fv=@OData.Community.Display.V1.FormattedValue
dvemu_call GET "$a1?\$select=name,customertypecode,msdyn_creditlimitismandatory,numberofemployees,_msdyn_company_value" '' \
    -H 'Prefer: odata.include-annotations="*"'
check_eq "[annot] formatted values: a choice's label, yes/no, a grouped number, a lookup's name" \
    "Customer|Yes|1,200|Company one" \
    "$(ann "customertypecode$fv")|$(ann "msdyn_creditlimitismandatory$fv")|$(ann "numberofemployees$fv")|$(ann "_msdyn_company_value$fv")"
check_eq "[annot] a lookup's table and navigation property" "cdm_company msdyn_company" \
    "$(ann _msdyn_company_value@Microsoft.Dynamics.CRM.lookuplogicalname) $(ann _msdyn_company_value@Microsoft.Dynamics.CRM.associatednavigationproperty)"
check_eq "[annot] the preference is echoed" 'odata.include-annotations="*"' "$(dvemu_header Preference-Applied)"
dvemu_call GET "accounts?\$select=name,_msdyn_company_value&\$filter=accountnumber%20eq%20'A1'" '' \
    -H 'Prefer: odata.include-annotations="OData.Community.Display.V1.FormattedValue"'
check_eq "[annot] only the annotations asked for, in a collection too" "Company one absent" \
    "$(j ".value[0][\"_msdyn_company_value$fv\"]") $(j '.value[0]["_msdyn_company_value@Microsoft.Dynamics.CRM.lookuplogicalname"] // "absent"')"
dvemu_call GET "accounts?\$select=name&\$count=true&\$top=1" '' -H 'Prefer: odata.include-annotations="Microsoft.Dynamics.CRM.*"'
check_eq "[annot] totalrecordcount with \$count" "4 false" \
    "$(j '."@Microsoft.Dynamics.CRM.totalrecordcount"') $(j '."@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"')"
dvemu_call GET "$a1?\$select=name,numberofemployees"
check_eq "[annot] none unless asked" absent "$(ann "numberofemployees$fv")"

finish

#!/usr/bin/env bash
# dvemu: GET <set>?fetchXml=<url-encoded XML>, the subset Microsoft's "Query data using
# FetchXml" and "Page results using FetchXml" describe and dvemu(1) lists: attribute and
# all-attributes, filter (and/or, nested) of conditions eq ne like not-like in not-in null
# not-null gt ge lt le, order (ascending and descending, several), top, count with page and
# the paging cookie and morerecords annotations. Every answer is checked against an oracle
# (jq over the table's rows); a document dvemu does not emulate (link-entity, aggregates,
# unknown operators) answers 501 and never 2xx; malformed XML, an unknown attribute and an
# entity that is not the set's answer 400 with Dataverse's code.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
dvemu_call PATCH "cdm_companies(cdm_companycode='C1')" '{"cdm_name":"Company one"}'
c1=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
acct() { # NUMBER BODY
    dvemu_call PATCH "accounts(accountnumber='$1',_msdyn_company_value=$c1)" "$2"
    [ "$DV_STATUS" = 204 ] || fail "seed account $1" "$DV_STATUS $DV_BODY"
}
acct A1 '{"name":"Contoso Pharmaceuticals","numberofemployees":10,"address1_city":"Seattle","creditlimit":100}'
acct A2 '{"name":"Fabrikam","numberofemployees":50,"creditlimit":5000}'
acct A3 '{"name":"Contoso Bikes","numberofemployees":200,"address1_city":"Redmond"}'
acct A4 '{"name":"Adventure Works","address1_city":"Seattle","numberofemployees":50}'
acct A5 '{"name":"Litware","address1_city":"redmond","msdyn_creditlimitismandatory":true}'

fetch() { dvemu_call GET "accounts?fetchXml=$(jq -rn --arg x "$1" '$x | @uri')"; }
numbers() { j '[.value[].accountnumber] | join(",")'; }
# oracle JQ: the account numbers the table's rows give through a jq filter, in order.
oracle() { dvemu_admin GET tables/accounts | jq -r "[.value[] | select($1)] | sort_by(.accountnumber) | [.[].accountnumber] | join(\",\")"; }
E='<fetch><entity name="account"><attribute name="accountnumber"/>'
Z='<order attribute="accountnumber"/></entity></fetch>'

while IFS='|' read -r label filter want; do
    fetch "$E${filter//__C1__/$c1}$Z"
    check_eq "$label: 200" 200 "$DV_STATUS"
    check_eq "$label: the rows of the oracle" "$(oracle "$want")" "$(numbers)"
done <<'EOF'
eq (strings case-insensitive)|<filter><condition attribute="address1_city" operator="eq" value="REDMOND"/></filter>|(.address1_city // "" | ascii_downcase) == "redmond"
ne and neq|<filter><condition attribute="numberofemployees" operator="ne" value="50"/><condition attribute="numberofemployees" operator="neq" value="10"/></filter>|.numberofemployees != null and .numberofemployees != 50 and .numberofemployees != 10
like with %|<filter><condition attribute="name" operator="like" value="contoso%"/></filter>|.name | startswith("Contoso")
like: a suffix, _ and inner %|<filter type="or"><condition attribute="name" operator="like" value="%BIKES"/><condition attribute="name" operator="like" value="_abrikam"/><condition attribute="name" operator="like" value="a%v%works"/></filter>|.name == "Contoso Bikes" or .name == "Fabrikam" or .name == "Adventure Works"
like: no match without a wildcard|<filter><condition attribute="name" operator="like" value="Contoso"/></filter>|false
not-like|<filter><condition attribute="name" operator="not-like" value="%o%"/></filter>|(.name | test("o"; "i")) | not
in with values|<filter><condition attribute="accountnumber" operator="in"><value>A2</value><value>A5</value><value>A9</value></condition></filter>|.accountnumber == "A2" or .accountnumber == "A5"
not-in|<filter><condition attribute="accountnumber" operator="not-in"><value>A2</value></condition></filter>|.accountnumber != "A2"
null|<filter><condition attribute="address1_city" operator="null"/></filter>|.address1_city == null
not-null|<filter><condition attribute="creditlimit" operator="not-null"/></filter>|.creditlimit != null
gt on a number|<filter><condition attribute="numberofemployees" operator="gt" value="10"/></filter>|(.numberofemployees // -1) > 10
ge|<filter><condition attribute="numberofemployees" operator="ge" value="50"/></filter>|(.numberofemployees // -1) >= 50
lt on money|<filter><condition attribute="creditlimit" operator="lt" value="1000"/></filter>|.creditlimit != null and .creditlimit < 1000
le|<filter><condition attribute="numberofemployees" operator="le" value="50"/></filter>|.numberofemployees != null and .numberofemployees <= 50
a boolean|<filter><condition attribute="msdyn_creditlimitismandatory" operator="eq" value="1"/></filter>|.msdyn_creditlimitismandatory == true
a lookup by id|<filter><condition attribute="msdyn_company" operator="eq" value="__C1__"/></filter>|true
or|<filter type="or"><condition attribute="accountnumber" operator="eq" value="A1"/><condition attribute="numberofemployees" operator="eq" value="200"/></filter>|.accountnumber == "A1" or .numberofemployees == 200
nested and inside or|<filter type="or"><condition attribute="accountnumber" operator="eq" value="A5"/><filter type="and"><condition attribute="address1_city" operator="eq" value="Seattle"/><condition attribute="numberofemployees" operator="eq" value="50"/></filter></filter>|.accountnumber == "A5" or (.address1_city == "Seattle" and .numberofemployees == 50)
no filter|<!-- every row -->|true
EOF

fetch "$E<filter><condition attribute=\"msdyn_company\" operator=\"eq\" value=\"${c1^^}\"/></filter>$Z"
check_eq "a lookup condition with the id in upper case" "A1,A2,A3,A4,A5" "$(numbers)"

fetch '<fetch><entity name="account"><attribute name="name"/><attribute name="msdyn_company"/><filter><condition attribute="accountnumber" operator="eq" value="A2"/></filter></entity></fetch>'
check_eq "attributes: the selected properties, the id and the etag" \
    '["@odata.etag","_msdyn_company_value","accountid","name"]' "$(j '.value[0] | keys' | jq -c .)"
check_eq "the context names the set" "$DVEMU_URL/api/data/v9.2/\$metadata#accounts" "$(j '."@odata.context"')"
fetch "<?xml version=\"1.0\"?><fetch><entity name='account'><all-attributes /><filter><condition attribute='accountnumber' operator='eq' value='A2'/></filter></entity></fetch>"
check_eq "all-attributes (a prolog, single quotes)" "Fabrikam 50 5000" "$(j '.value[0] | "\(.name) \(.numberofemployees) \(.creditlimit)"')"
fetch '<fetch><entity name="account"><attribute name="accountnumber"/><order attribute="numberofemployees" descending="true"/><order attribute="accountnumber"/></entity></fetch>'
check_eq "orders: descending, then ascending" "$(dvemu_admin GET tables/accounts | jq -r '[.value[]] | sort_by([-(.numberofemployees // -1), .accountnumber]) | [.[].accountnumber] | join(",")')" "$(numbers)"
fetch '<fetch top="2"><entity name="account"><attribute name="accountnumber"/><order attribute="accountnumber" descending="true"/></entity></fetch>'
check_eq "top" "A5,A4" "$(numbers)"
check_eq "top: no paging annotations" null "$(j '."@Microsoft.Dynamics.CRM.morerecords"')"

# Paging: count and page, the cookie and morerecords, until the last page.
got=
for page in 1 2 3; do
    fetch "<fetch count=\"2\" page=\"$page\"><entity name=\"account\"><attribute name=\"accountnumber\"/><order attribute=\"accountnumber\"/></entity></fetch>"
    got+="$(numbers);"
    more=$(j '."@Microsoft.Dynamics.CRM.morerecords" // false')
    cookie=$(j '."@Microsoft.Dynamics.CRM.fetchxmlpagingcookie" // ""')
    [ "$page" -lt 3 ] && check_eq "page $page: morerecords" true "$more"
    [ "$page" -lt 3 ] && check_contains "page $page: the cookie names the next page" "<cookie pagenumber=\"$((page + 1))\"" "$cookie"
done
check_eq "pages of 2 hold every row once, in order" "A1,A2;A3,A4;A5;" "$got"
check_eq "the last page: no morerecords" false "$more"

while IFS='|' read -r label xml want_status want_code want_text; do
    fetch "$xml"
    check_eq "$label: status" "$want_status" "$DV_STATUS"
    check_eq "$label: code" "$want_code" "$(j .error.code)"
    check_contains "$label: message" "$want_text" "$(j .error.message)"
done <<'EOF'
a link-entity|<fetch><entity name="account"><link-entity name="contact" from="parentcustomerid" to="accountid"/></entity></fetch>|501|0x80060888|the element <link-entity>
an aggregate|<fetch aggregate="true"><entity name="account"><attribute name="numberofemployees" aggregate="sum" alias="n"/></entity></fetch>|501|0x80060888|aggregate
an unknown operator|<fetch><entity name="account"><filter><condition attribute="name" operator="begins-with" value="C"/></filter></entity></fetch>|501|0x80060888|operator 'begins-with'
an unknown attribute|<fetch><entity name="account"><attribute name="nosuch"/></entity></fetch>|400|0x80041103|'account' entity doesn't contain attribute with Name = 'nosuch' and NameMapping = 'Logical'.
an unknown attribute in a condition|<fetch><entity name="account"><filter><condition attribute="nosuch" operator="eq" value="1"/></filter></entity></fetch>|400|0x80041103|Name = 'nosuch'
another table than the set's|<fetch><entity name="contact"><all-attributes/></entity></fetch>|400|0x80040203|does not match the entity set 'accounts'
malformed XML|<fetch><entity name="account"></fetch>|400|0x80040203|not well formed
an unquoted attribute|<fetch top=2><entity name="account"/></fetch>|400|0x80040203|not well formed
top with paging|<fetch top="2" count="2"><entity name="account"/></fetch>|400|0x80040203|top attribute
in without values|<fetch><entity name="account"><filter><condition attribute="name" operator="in"/></filter></entity></fetch>|400|0x80040203|null is not a valid value
eq without a value|<fetch><entity name="account"><filter><condition attribute="name" operator="eq"/></filter></entity></fetch>|400|0x80040203|Condition for attribute 'account.name'
unterminated|<fetch><entity name="account">|400|0x80040203|unterminated element at the end
nested too deep|<fetch><entity name="account"><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter><filter>|400|0x80040203|nested too deep
a count of 0|<fetch count="0"><entity name="account"/></fetch>|400|0x80040203|from 1 to 5000
EOF
dvemu_call GET "accounts(accountnumber='A1',_msdyn_company_value=$c1)?fetchXml=%3Cfetch%2F%3E"
check_eq "fetchXml on a single row: 400" 400 "$DV_STATUS"
finish

#!/usr/bin/env bash
# dvemu: rows by id and alternate key (composite, lookup parts, quotes, percent-encoding),
# upsert semantics, @odata.bind, validation errors, queries, metadata, state across restarts.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work
dvemu_start --state "$work/state.json"

j() { printf '%s' "$DV_BODY" | jq -r "$1"; }

# --- rows by alternate key ---------------------------------------------------------------
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}'
check_eq "upsert create answers 204" 204 "$DV_STATUS"
entity=$(dvemu_header OData-EntityId)
check_contains "OData-EntityId names the row" "$DVEMU_URL/api/data/v9.2/cdm_companies(" "$entity"
usmf=$(printf '%s' "$entity" | sed 's/.*(\(.*\))/\1/')
check_eq "x-ms-dop-hint sent" 8 "$(dvemu_header x-ms-dop-hint)"

dvemu_call GET "cdm_companies(cdm_companycode='USMF')"
check_eq "key lookup ignores case like Dataverse" "Contoso US" "$(j .cdm_name)"
check_eq "GET by key returns the id" "$usmf" "$(j .cdm_companyid)"
check_eq "etag present" 'W/"1"' "$(j '."@odata.etag"')"

dvemu_call GET "cdm_companies($usmf)"
check_eq "GET by primary id" usmf "$(j .cdm_companycode)"
dvemu_call GET "cdm_companies(cdm_companyid=$usmf)"
check_eq "GET by named primary id" 200 "$DV_STATUS"

dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso USA"}' \
    -H 'Prefer: return=representation'
check_eq "upsert update with representation answers 200" 200 "$DV_STATUS"
check_eq "representation shows the new value" "Contoso USA" "$(j .cdm_name)"
dvemu_call PATCH "cdm_companies(cdm_companycode='demf')" '{"cdm_name":"Contoso DE"}' \
    -H 'Prefer: return=representation'
check_eq "upsert create with representation answers 201" 201 "$DV_STATUS"
demf=$(j .cdm_companyid)

dvemu_call PATCH "cdm_companies(cdm_companycode='nope')" '{"cdm_name":"x"}' -H 'If-Match: *'
check_eq "If-Match: * on an absent row is 404" 404 "$DV_STATUS"
check_eq "absent alternate key code" 0x80048d02 "$(j .error.code)"
check_eq "absent alternate key message" \
    "A record with the specified key values does not exist in cdm_company entity" "$(j .error.message)"
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"x"}' -H 'If-None-Match: *'
check_eq "If-None-Match: * on an existing row is 412" 412 "$DV_STATUS"
check_eq "If-None-Match message" "A record with matching key values already exists." "$(j .error.message)"
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}' -H 'If-Match: *'
check_eq "If-Match: * on an existing row updates" 204 "$DV_STATUS"

# Composite key with a lookup part, doubled quotes and percent-encoding.
enc="accountnumber=%27O%27%27Brien%20%28Sons%29%27,_msdyn_company_value=$usmf"
dvemu_call PATCH "accounts($enc)" '{"name":"O'"'"'Brien (Sons)","customertypecode":3,"creditlimit":1234.567}'
check_eq "upsert by composite key with a lookup part" 204 "$DV_STATUS"
dvemu_call GET "accounts($enc)"
check_eq "quotes were undoubled and percent-decoded" "O'Brien (Sons)" "$(j .accountnumber)"
check_eq "lookup key part stored as _x_value" "$usmf" "$(j ._msdyn_company_value)"
check_eq "money rounded to precision 2" 1234.57 "$(j .creditlimit)"
acct=$(j .accountid)
dvemu_call GET "accounts(accountnumber='A1')"
check_eq "a key set that matches no key is 400" 400 "$DV_STATUS"
check_contains "invalid key message" "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.account'" "$(j .error.message)"
dvemu_call PATCH "accounts(accountnumber='A9',_msdyn_company_value=00000000-0000-0000-0000-0000000000aa)" '{"name":"x"}'
check_eq "lookup key part naming no parent is 404" 404 "$DV_STATUS"
check_eq "missing parent by id code" 0x80040217 "$(j .error.code)"
dvemu_call GET "Accounts"
check_eq "unknown entity set is 404" 404 "$DV_STATUS"
check_eq "unknown entity set code" 0x8006088a "$(j .error.code)"
check_eq "unknown entity set message" "Resource not found for the segment 'Accounts'." "$(j .error.message)"

# Characters Dataverse refuses in a URL path: such rows are reached by $filter, then by id.
dvemu_call PATCH "accounts(accountnumber=%27A%26B%2F1%27,_msdyn_company_value=$usmf)" '{"name":"amp"}'
check_eq "a key value with & or / cannot be used in a URL" 400 "$DV_STATUS"
check_eq "with ASP.NET's message" "A potentially dangerous Request.Path value was detected from the client (&)." "$(j .error.message)"
dvemu_call POST accounts "{\"accountnumber\":\"A&B/1\",\"name\":\"amp\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"}"
check_eq "such a row can be created by POST" 204 "$DV_STATUS"
dvemu_call GET "accounts?\$select=accountid&\$filter=accountnumber%20eq%20%27A%26B%2F1%27%20and%20_msdyn_company_value%20eq%20$usmf"
amp=$(j '.value[0].accountid')
check_eq "and found by \$filter" 36 "${#amp}"
dvemu_call PATCH "accounts($amp)" '{"name":"amp2"}'
check_eq "and updated by id" 204 "$DV_STATUS"

# --- @odata.bind ----------------------------------------------------------------------------
dvemu_call PATCH "msdyn_paymentterms(msdyn_name='Net30',_msdyn_company_value=$usmf)" \
    '{"msdyn_days":30,"msdyn_paymentmethodtype":806380991,"msdyn_iscashpayment":false}'
check_eq "payment term created" 204 "$DV_STATUS"
dvemu_call PATCH "msdyn_customergroups(msdyn_groupid='10',_msdyn_company_value=$usmf)" \
    "{\"msdyn_description\":\"Wholesale\",\"msdyn_paymenttermid@odata.bind\":\"/msdyn_paymentterms(msdyn_name='Net30',_msdyn_company_value=$usmf)\"}"
check_eq "bind by alternate key" 204 "$DV_STATUS"
dvemu_call PATCH "accounts($enc)" \
    "{\"msdyn_customergroupid@odata.bind\":\"/msdyn_customergroups(msdyn_groupid='10',_msdyn_company_value=$usmf)\",\"msdyn_billingaccount@odata.bind\":\"accounts($acct)\"}" \
    -H 'Prefer: return=representation'
check_eq "bind by key and by id" 200 "$DV_STATUS"
check_eq "self lookup bound by id" "$acct" "$(j ._msdyn_billingaccount_value)"
group=$(j ._msdyn_customergroupid_value)
check_eq "group lookup bound" 36 "${#group}"
dvemu_call PATCH "accounts($enc)" '{"msdyn_billingaccount@odata.bind":null}' -H 'Prefer: return=representation'
check_eq "bind null clears the lookup" null "$(j ._msdyn_billingaccount_value)"
check_eq "other lookups kept" "$group" "$(j ._msdyn_customergroupid_value)"
dvemu_call PATCH "accounts($enc)" \
    "{\"msdyn_customergroupid@odata.bind\":\"/msdyn_customergroups(msdyn_groupid='99',_msdyn_company_value=$usmf)\"}"
check_eq "bind to a missing parent by key is 404" 404 "$DV_STATUS"
check_eq "missing parent by key code" 0x80048d02 "$(j .error.code)"
check_eq "missing parent by key message" \
    "A record with the specified key values does not exist in msdyn_customergroup entity" "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"msdyn_billingaccount@odata.bind":"/accounts(00000000-0000-0000-0000-000000000001)"}'
check_eq "bind to a missing parent by id is 404" 404 "$DV_STATUS"
check_eq "missing parent by id message" \
    "account With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist" "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" "{\"msdyn_billingaccount@odata.bind\":\"/cdm_companies($usmf)\"}"
check_eq "bind to the wrong table is 400" 400 "$DV_STATUS"
# A bind is remembered once it found its row, but never past a change to that row's table:
# the parent deleted, created again under the same key (a new id), its key changed.
g20="msdyn_customergroups(msdyn_groupid='20',_msdyn_company_value=$usmf)"
bind_g20() { dvemu_call PATCH "accounts($enc)" "{\"msdyn_customergroupid@odata.bind\":\"/$g20\"}" \
    -H 'Prefer: return=representation'; }
dvemu_call PATCH "$g20" '{"msdyn_description":"Retail"}'
bind_g20
first=$(j ._msdyn_customergroupid_value)
check_eq "bound to the new group" 36 "${#first}"
dvemu_call PATCH "accounts($enc)" '{"msdyn_customergroupid@odata.bind":null}'
dvemu_call DELETE "$g20"
check_eq "group deleted" 204 "$DV_STATUS"
bind_g20
check_eq "a bind to the deleted group is 404" 404 "$DV_STATUS"
dvemu_call PATCH "$g20" '{"msdyn_description":"Retail again"}'
bind_g20
second=$(j ._msdyn_customergroupid_value)
check_eq "bound to the group created again" 36 "${#second}"
check_status "the group created again has a new id" 0 test "$first" != "$second"
dvemu_call PATCH "accounts($enc)" '{"msdyn_customergroupid@odata.bind":null}'
dvemu_call PATCH "msdyn_customergroups($second)" '{"msdyn_groupid":"21"}'
check_eq "the group's key changed" 204 "$DV_STATUS"
bind_g20
check_eq "a bind to its old key is 404" 404 "$DV_STATUS"
dvemu_call PATCH "salesorders(msdyn_salesordernumber='SO1',_msdyn_company_value=$usmf)" \
    "{\"name\":\"Order 1\",\"customerid_account@odata.bind\":\"/accounts($acct)\"}" \
    -H 'Prefer: return=representation'
check_eq "polymorphic lookup bound through its per-target property" "$acct" "$(j ._customerid_value)"
order=$(j .salesorderid)
dvemu_call PATCH "salesorderdetails(_salesorderid_value=$order,sequencenumber=1)" '{"quantity":2.5,"priceperunit":10}'
check_eq "key with a lookup and an integer" 204 "$DV_STATUS"
dvemu_call GET "salesorderdetails(_salesorderid_value=$order,sequencenumber=1)"
check_eq "line found by parent and sequence" 2.5 "$(j .quantity)"

# --- validation -----------------------------------------------------------------------------
long=$(printf 'x%.0s' $(seq 1 21))
dvemu_call PATCH "accounts(accountnumber='$long',_msdyn_company_value=$usmf)" '{"name":"x"}'
check_eq "key value longer than MaxLength is 400" 400 "$DV_STATUS"
check_eq "length code" 0x80044331 "$(j .error.code)"
check_eq "length message" "A validation error occurred.  The length of the 'accountnumber' attribute of the 'account' entity exceeded the maximum allowed length of '20'." "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"msdyn_onholdstatus":806380006}'
check_eq "option outside the set is 400" 400 "$DV_STATUS"
check_eq "option code" 0x8004431a "$(j .error.code)"
check_eq "option message" "A validation error occurred.  The value 806380006 of 'msdyn_onholdstatus' on record of type 'account' is outside the valid range. Accepted Values: 806380000,806380001,806380002,806380003,806380004,806380005" "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"nosuchcolumn":1}'
check_eq "unknown column is 400" 400 "$DV_STATUS"
check_eq "unknown column code" 0x0 "$(j .error.code)"
check_eq "unknown column message" "Could not find a property named 'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.account'." "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"numberofemployees":"many"}'
check_eq "string into Integer is 400" 400 "$DV_STATUS"
check_eq "type error code" 0x80048d19 "$(j .error.code)"
check_contains "type error names the EDM type" "Cannot convert the literal 'many' to the expected type 'Edm.Int32'." "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"msdyn_lastsyncedon":"2026-13-45T00:00:00Z"}'
check_eq "bad date is 400" 400 "$DV_STATUS"
check_contains "bad date names Edm.DateTimeOffset" "Edm.DateTimeOffset" "$(j .error.message)"
dvemu_call PATCH "accounts($enc)" '{"msdyn_lastsyncedon":"2026-11-22T10:00:00.123Z","msdyn_creditlimitismandatory":true}'
check_eq "valid date and boolean accepted" 204 "$DV_STATUS"
dvemu_call PATCH "accounts($enc)" '{"msdyn_creditlimitismandatory":1}'
check_eq "number into Boolean is 400" 400 "$DV_STATUS"
dvemu_call PATCH "accounts($enc)" '{"creditlimit":1e15}'
check_eq "money above its range is 400" 400 "$DV_STATUS"
dvemu_call PATCH "accounts($enc)" '{"name":'
check_eq "malformed JSON is 400" 400 "$DV_STATUS"
dvemu_call POST "transactioncurrencies" '{"isocurrencycode":"USD","currencyname":"US Dollar","currencysymbol":"$"}'
check_eq "required column missing on create is 400" 400 "$DV_STATUS"
check_contains "required message names the column" "'exchangerate'" "$(j .error.message)"
dvemu_call POST "transactioncurrencies" '{"isocurrencycode":"USD","currencyname":"US Dollar","currencysymbol":"$","exchangerate":1}'
check_eq "create answers 204" 204 "$DV_STATUS"
check_contains "create names the row" "transactioncurrencies(" "$(dvemu_header OData-EntityId)"
dvemu_call POST "transactioncurrencies" '{"isocurrencycode":"usd","currencyname":"Again","currencysymbol":"$","exchangerate":1}'
check_eq "duplicate alternate key on create is 412" 412 "$DV_STATUS"
check_eq "duplicate key code" 0x80060892 "$(j .error.code)"
check_contains "duplicate key message" "The entity key isocurrencycode requires that this set of attributes contains unique values" "$(j .error.message)"
dvemu_call GET "transactioncurrencies?\$count=true"
check_eq "nothing half-written by the failed creates" 1 "$(j '."@odata.count"')"

# --- queries --------------------------------------------------------------------------------
for n in 1 2 3 4 5; do
    dvemu_call PATCH "accounts(accountnumber='Q$n',_msdyn_company_value=$demf)" \
        "{\"name\":\"Query $n\",\"creditlimit\":$((n * 100)),\"customertypecode\":$([ $n -le 2 ] && echo 3 || echo 11)}"
done
dvemu_call GET "accounts?\$select=accountnumber,creditlimit&\$filter=_msdyn_company_value%20eq%20$demf%20and%20(customertypecode%20eq%2011%20or%20creditlimit%20eq%20100)&\$orderby=creditlimit%20desc&\$count=true&\$top=3"
check_eq "collection query answers 200" 200 "$DV_STATUS"
check_eq "\$count counts before \$top" 4 "$(j '."@odata.count"')"
check_eq "\$filter, \$orderby desc and \$top" "Q5 Q4 Q3" "$(j '[.value[].accountnumber] | join(" ")')"
check_eq "\$select keeps listed columns, the id and the etag" \
    '["@odata.etag","accountid","accountnumber","creditlimit"]' "$(j '.value[0] | keys | tojson')"
dvemu_call GET "accounts?\$filter=msdyn_billingaccount%20eq%20null%20and%20accountnumber%20ne%20null&\$select=accountnumber&\$orderby=accountnumber"
check_eq "null comparisons" "A&B/1 O'Brien (Sons) Q1 Q2 Q3 Q4 Q5" "$(j '[.value[].accountnumber] | join(" ")')"
dvemu_call GET "accounts?\$select=Name"
check_eq "unknown \$select column is 400" "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'." "$(j .error.message)"
dvemu_call GET "accounts?\$filter=name%20eq"
check_eq "bad \$filter is 400" 400 "$DV_STATUS"

# --- delete ---------------------------------------------------------------------------------
dvemu_call DELETE "accounts(accountnumber='Q5',_msdyn_company_value=$demf)"
check_eq "delete by key answers 204" 204 "$DV_STATUS"
dvemu_call DELETE "accounts(accountnumber='Q5',_msdyn_company_value=$demf)"
check_eq "delete of an absent row is 404" 404 "$DV_STATUS"
dvemu_call PATCH "accounts(accountnumber='Q5',_msdyn_company_value=$demf)" '{"name":"back"}'
check_eq "a deleted key can be created again" 204 "$DV_STATUS"

# --- metadata -------------------------------------------------------------------------------
dvemu_call GET "EntityDefinitions(LogicalName='account')?\$select=LogicalName,EntitySetName,PrimaryIdAttribute"
check_eq "entity definition" "account accounts accountid" "$(j '[.LogicalName,.EntitySetName,.PrimaryIdAttribute] | join(" ")')"
dvemu_call GET "EntityDefinitions(LogicalName='account')/Attributes?\$select=LogicalName,AttributeType,RequiredLevel"
check_eq "attribute types" "Lookup" "$(j '.value[] | select(.LogicalName=="msdyn_company") | .AttributeType')"
check_eq "required levels" "ApplicationRequired" "$(j '.value[] | select(.LogicalName=="name") | .RequiredLevel.Value')"
dvemu_call GET "EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?\$select=LogicalName,MaxLength"
check_eq "string lengths through the cast" 20 "$(j '.value[] | select(.LogicalName=="accountnumber") | .MaxLength')"
check_eq "the cast lists only strings" 0 "$(j '[.value[] | select(.LogicalName=="creditlimit")] | length')"
dvemu_call GET "EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?\$select=LogicalName&\$expand=OptionSet,GlobalOptionSet"
check_eq "option sets" "3:Customer 11:Vendor" \
    "$(j '[.value[] | select(.LogicalName=="customertypecode") | .OptionSet.Options[] | select(.Value==3 or .Value==11) | "\(.Value):\(.Label.UserLocalizedLabel.Label)"] | join(" ")')"
dvemu_call GET "EntityDefinitions(LogicalName='account')/Keys"
check_eq "keys with a lookup attribute" '["accountnumber","msdyn_company"]' "$(j '.value[0].KeyAttributes | tojson')"
check_eq "key index active" Active "$(j '.value[0].EntityKeyIndexStatus')"
dvemu_call GET "EntityDefinitions(LogicalName='nosuch')"
check_eq "unknown entity definition is 404" 404 "$DV_STATUS"
dvemu_call GET "sdkmessagefilters?\$select=sdkmessagefilterid&\$filter=sdkmessageid/name%20eq%20'UpsertMultiple'%20and%20primaryobjecttypecode%20eq%20'account'"
check_eq "accounts support UpsertMultiple" 1 "$(j '.value | length')"
dvemu_call GET "sdkmessagefilters?\$filter=sdkmessageid/name%20eq%20'UpsertMultiple'%20and%20primaryobjecttypecode%20eq%20'salesorderdetail'"
check_eq "sales order lines do not" 0 "$(j '.value | length')"

# --- state across a restart -----------------------------------------------------------------
before=$(dvemu_admin GET tables/accounts | jq -c '[.value[] | {accountid, accountnumber, name}] | sort_by(.accountnumber)')
kill -TERM "$DVEMU_PID"
wait "$DVEMU_PID"
check_eq "SIGTERM stops dvemu cleanly" 0 "$?"
check_contains "state saved" "\"accounts\"" "$(cat "$work/state.json")"
DVEMU_TOKEN=
dvemu_start --state "$work/state.json"
after=$(dvemu_admin GET tables/accounts | jq -c '[.value[] | {accountid, accountnumber, name}] | sort_by(.accountnumber)')
check_eq "rows reloaded from --state" "$before" "$after"
dvemu_call GET "accounts($enc)"
check_eq "key indexes rebuilt on reload" "$acct" "$(j .accountid)"

finish

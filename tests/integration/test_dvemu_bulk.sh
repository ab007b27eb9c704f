#!/usr/bin/env bash
# dvemu: CreateMultiple, UpdateMultiple and UpsertMultiple (all-or-nothing, @odata.type on
# every target, @odata.id for upsert targets, tables that do not support the messages).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start

j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
count() { dvemu_admin GET "tables/$1" | jq '.value | length'; }

dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}'
usmf=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
T='"@odata.type":"Microsoft.Dynamics.CRM.account"'

dvemu_call POST "accounts/Microsoft.Dynamics.CRM.CreateMultiple" \
    "{\"Targets\":[{$T,\"name\":\"c1\",\"accountnumber\":\"M1\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"},{$T,\"name\":\"c2\",\"accountnumber\":\"M2\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"}]}"
check_eq "CreateMultiple answers 200" 200 "$DV_STATUS"
check_eq "CreateMultiple returns the Ids" 2 "$(j '.Ids | length')"
first=$(j '.Ids[0]')
check_eq "rows created" 2 "$(count accounts)"

dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpdateMultiple" \
    "{\"Targets\":[{$T,\"accountid\":\"$first\",\"telephone1\":\"555\"}]}"
check_eq "UpdateMultiple answers 204" 204 "$DV_STATUS"
check_eq "row updated" 555 "$(dvemu_api GET "accounts($first)" | jq -r .telephone1)"
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpdateMultiple" \
    "{\"Targets\":[{$T,\"accountid\":\"00000000-0000-0000-0000-0000000000ff\",\"telephone1\":\"1\"}]}"
check_eq "UpdateMultiple of an absent row is 404" 404 "$DV_STATUS"

upsert() { printf '{%s,"@odata.id":"accounts(accountnumber='"'"'%s'"'"',_msdyn_company_value=%s)","name":"%s"%s}' "$T" "$1" "$usmf" "$2" "${3:-}"; }
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" \
    "{\"Targets\":[$(upsert M1 renamed),$(upsert M3 new),$(upsert M4 new4)]}"
check_eq "UpsertMultiple answers 204" 204 "$DV_STATUS"
check_eq "upsert updated an existing row and created new ones" "c2 new new4 renamed" \
    "$(dvemu_admin GET tables/accounts | jq -r '[.value[] | .name] | sort | join(" ")')"
check_eq "four rows now" 4 "$(count accounts)"
check_eq "new rows carry the key from @odata.id" "$usmf" \
    "$(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber=="M3") | ._msdyn_company_value')"

history_before=$(dvemu_admin GET history | jq '.value | length')
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" \
    "{\"Targets\":[$(upsert M5 ok),$(upsert M1 changed),$(upsert M6 bad ',"customertypecode":77')]}"
check_eq "one bad target fails the whole UpsertMultiple" 400 "$DV_STATUS"
check_eq "the error is the bad row's" 0x8004431a "$(j .error.code)"
check_eq "nothing from the failed request was written (no new row)" 4 "$(count accounts)"
check_eq "nothing from the failed request was written (no update)" renamed \
    "$(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber=="M1") | .name')"
check_eq "no history for the failed request" "$history_before" "$(dvemu_admin GET history | jq '.value | length')"

dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" \
    "{\"Targets\":[{\"@odata.id\":\"accounts(accountnumber='M7',_msdyn_company_value=$usmf)\",\"name\":\"x\"}]}"
check_eq "a target without @odata.type is 400" 400 "$DV_STATUS"
check_contains "the message names the annotation" "@odata.type" "$(j .error.message)"
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" \
    "{\"Targets\":[{\"@odata.type\":\"Microsoft.Dynamics.CRM.contact\",\"@odata.id\":\"accounts(accountnumber='M7',_msdyn_company_value=$usmf)\",\"name\":\"x\"}]}"
check_eq "a target of another type is 400" 400 "$DV_STATUS"
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" '{"Rows":[]}'
check_eq "a body without Targets is 400" 400 "$DV_STATUS"

dvemu_call POST "transactioncurrencies/Microsoft.Dynamics.CRM.UpsertMultiple" \
    '{"Targets":[{"@odata.type":"Microsoft.Dynamics.CRM.transactioncurrency","@odata.id":"transactioncurrencies(isocurrencycode='"'"'EUR'"'"')","currencyname":"Euro","currencysymbol":"E","exchangerate":1}]}'
check_eq "a table without bulk support refuses UpsertMultiple" 400 "$DV_STATUS"
check_eq "with the documented message" \
    "The 'UpsertMultiple' method does not support entities of type 'transactioncurrency'. MessageProcessorCache returned MessageProcessor.Empty." \
    "$(j .error.message)"
dvemu_call POST "salesorderdetails/Microsoft.Dynamics.CRM.UpsertMultiple" '{"Targets":[]}'
check_eq "bulk support is per message (lines: create/update only)" 400 "$DV_STATUS"
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.DeleteMultiple" '{"Targets":[]}'
check_eq "an unknown action is 404" 404 "$DV_STATUS"

counters=$(dvemu_admin GET counters)
check_eq "rows written counted per table" 6 "$(printf '%s' "$counters" | jq '.rows_written.accounts')"

finish

#!/usr/bin/env bash
# dvemu: privileges revoked from the application user (--privileges at start, GET/POST
# /_dvemu/privileges). A revoked privilege answers 403 0x80040220 naming the principal and
# prv<Create|Write|Delete><table>; a rule scoped to rows whose attribute has a value (a
# business unit out of reach) answers 403 0x80048306 naming the record. Inside $batch the
# refusal is that part's answer, an UpsertMultiple with one refused target fails whole, bad
# rules are refused and leave the previous ones, and lifting a rule lets the write through.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

# Bad rules stop dvemu at start, with the reason.
dw_mktemp tmp
bad() {
    "$DVEMU_BIN" --listen 127.0.0.1:0 --metadata "$DVEMU_METADATA_DEFAULT" --tenant t \
        --client c:s --privileges "$1" >"$tmp/out" 2>&1
}
check_status "--privileges that is not JSON is refused" 2 bad '{"revoke":'
check_contains "and says so" "--privileges is not JSON" "$(cat "$tmp/out")"
check_status "--privileges naming an unknown table is refused" 1 bad '{"revoke":[{"table":"nope","privilege":"create"}]}'
check_contains "and names it" 'no table \"nope\"' "$(cat "$tmp/out")"

dvemu_start --privileges '{"revoke":[{"table":"contact","privilege":"create"}]}'
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
count() { dvemu_admin GET "tables/$1" | jq '.value | length'; }

check_eq "the start rule is listed (by entity set)" \
    '{"revoke":[{"table":"contacts","privilege":"create"}]}' "$(dvemu_admin GET privileges | jq -c .)"
user=$(dvemu_api GET WhoAmI | jq -r .UserId)
bu=$(dvemu_api GET WhoAmI | jq -r .BusinessUnitId)
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}'
usmf=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')

# --- a revoked privilege: every row of the table --------------------------------------------
dvemu_call PATCH "contacts(msdyn_contactpersonid='P1',_msdyn_company_value=$usmf)" '{"lastname":"Doe"}'
check_eq "create without prvCreate: 403" 403 "$DV_STATUS"
check_eq "with Dataverse's code" 0x80040220 "$(j .error.code)"
check_contains "naming the application user and its business unit" \
    "Principal user (Id=$user, type=8, roleCount=1, " "$(j .error.message)"
check_contains "the business unit" "BusinessUnitId=$bu)" "$(j .error.message)"
check_contains "and the missing privilege" \
    "is missing prvCreatecontact privilege (Id=" "$(j .error.message)"
check_contains "on the table" "on OTC=2 for entity 'contact'. context.Caller=$user" "$(j .error.message)"
check_eq "nothing was created" 0 "$(count contacts)"
dvemu_call POST accounts "{\"name\":\"A1\",\"accountnumber\":\"A1\",\"address1_city\":\"Seattle\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"}"
check_eq "other tables are not affected" 204 "$DV_STATUS"
a1=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')

# --- rules replaced: write scoped to a business unit's rows, delete on every row --------------
dvemu_admin POST privileges '{"revoke":[{"table":"accounts","privilege":"write","where":{"address1_city":"Berlin"}},
                                         {"table":"account","privilege":"delete"}]}' >/dev/null
check_eq "the new rules replace the old" \
    '{"revoke":[{"table":"accounts","privilege":"write","where":{"address1_city":"Berlin"}},{"table":"accounts","privilege":"delete"}]}' \
    "$(dvemu_admin GET privileges | jq -c .)"
dvemu_call PATCH "contacts(msdyn_contactpersonid='P1',_msdyn_company_value=$usmf)" '{"lastname":"Doe"}'
check_eq "the lifted create rule lets the contact in" 204 "$DV_STATUS"

key="accounts(accountnumber='A1',_msdyn_company_value=$usmf)"
dvemu_call PATCH "$key" '{"telephone1":"555"}'
check_eq "an update outside the scope passes" 204 "$DV_STATUS"
dvemu_call PATCH "$key" '{"address1_city":"BERLIN"}'
check_eq "moving a row into the scope: 403" 403 "$DV_STATUS"
check_eq "an access check failure: 0x80048306" 0x80048306 "$(j .error.code)"
check_eq "naming the principal, the right and the record" \
    "Principal with ID $user does not have WriteAccess right(s) for record with ID $a1 of entity account." \
    "$(j .error.message)"
check_eq "the row is unchanged" Seattle "$(dvemu_api GET "$key" | jq -r .address1_city)"
dvemu_call POST accounts "{\"name\":\"A2\",\"accountnumber\":\"A2\",\"address1_city\":\"Berlin\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"}"
check_eq "creating a row in the scope is another privilege: allowed" 204 "$DV_STATUS"
key2="accounts(accountnumber='A2',_msdyn_company_value=$usmf)"
dvemu_call PATCH "$key2" '{"telephone1":"1"}'
check_eq "updating a row of the scope: 403" 403 "$DV_STATUS"
dvemu_call DELETE "$key"
check_eq "delete without prvDelete: 403" 403 "$DV_STATUS"
check_contains "prvDeleteaccount on OTC 1" "is missing prvDeleteaccount privilege" "$(j .error.message)"
check_contains "on OTC 1" "on OTC=1 for entity 'account'" "$(j .error.message)"
check_eq "the row is still there" 2 "$(count accounts)"

# --- inside $batch: the refused part answers 403, the others apply ---------------------------
body=$(
    dvemu_batch_part batch_AAA "PATCH $key" '{"telephone1":"first"}'
    dvemu_batch_part batch_AAA "PATCH $key2" '{"telephone1":"refused"}'
    dvemu_batch_part batch_AAA "PATCH accounts(accountnumber='A3',_msdyn_company_value=$usmf)" '{"name":"third"}'
    printf -- '--batch_AAA--\r\n'
)
dvemu_batch "$body" -H 'Prefer: odata.continue-on-error'
check_eq "continue-on-error batch: 200" 200 "$DV_STATUS"
check_eq "parts: applied, refused, applied" "204 403 204" \
    "$(tr -d '\r' <"$DVEMU_DIR/batch-resp" | awk '/^HTTP\/1.1/ {printf "%s%s", sep, $2; sep=" "}')"
check_contains "the refused part carries the code" '"code":"0x80048306"' "$DV_BODY"
check_eq "the other parts applied" "first third" \
    "$(dvemu_admin GET tables/accounts | jq -r '[.value[] | select(.accountnumber != "A2") | .telephone1 // .name] | sort | join(" ")')"

# --- UpsertMultiple: one refused target fails the request, nothing is written ---------------
T='"@odata.type":"Microsoft.Dynamics.CRM.account"'
up() { printf '{%s,"@odata.id":"accounts(accountnumber='"'"'%s'"'"',_msdyn_company_value=%s)","telephone1":"%s"}' "$T" "$1" "$usmf" "$2"; }
history=$(dvemu_admin GET history | jq '.value | length')
dvemu_call POST "accounts/Microsoft.Dynamics.CRM.UpsertMultiple" "{\"Targets\":[$(up A1 bulk),$(up A2 bulk),$(up A4 bulk)]}"
check_eq "UpsertMultiple with a refused target: 403" 403 "$DV_STATUS"
check_eq "the refused target's error" 0x80048306 "$(j .error.code)"
check_eq "nothing of it was written" "$history" "$(dvemu_admin GET history | jq '.value | length')"

# --- bad rules are refused and leave the rules in force -----------------------------------------
for rule in '{"revoke":[{"table":"accounts","privilege":"read"}]}' \
            '{"revoke":[{"table":"accounts","privilege":"write","where":{"nope":1}}]}' \
            '{"revoke":[{"table":"accounts","privilege":"write","where":{"name":"a","telephone1":"b"}}]}' \
            '{"revoke":{}}' 'not json'; do
    check_eq "refused: $rule" 400 \
        "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data "$rule" "$DVEMU_URL/_dvemu/privileges")"
done
check_eq "the previous rules stay" 2 "$(dvemu_admin GET privileges | jq '.revoke | length')"

# --- lifted: the same writes go through -----------------------------------------------------------
dvemu_admin POST privileges '{"revoke":[]}' >/dev/null
dvemu_call PATCH "$key2" '{"telephone1":"1"}'
check_eq "after lifting, the update applies" 204 "$DV_STATUS"
dvemu_call DELETE "$key"
check_eq "after lifting, the delete applies" 204 "$DV_STATUS"
finish

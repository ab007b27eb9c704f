#!/usr/bin/env bash
# Deleting a row does to the rows whose lookups name it what the relationship's
# CascadeConfiguration.Delete says ("Configure entity relationship cascading behavior",
# Microsoft Learn; CascadeType EnumType): Cascade deletes them too (an order's lines:
# salesorderdetail.salesorderid is parental, in the sample as in Dataverse; and here an
# account's orders, two levels down), RemoveLink clears the lookup and the row gets a new
# version (the default; contact.parentcustomerid here), and Restrict refuses the delete with
# 0x80040227 and changes nothing (account.transactioncurrencyid made Restrict in a copy of
# the sample metadata). A delete inside a $batch changeset that fails later is undone with its
# cascade. ManyToOneRelationships and OneToManyRelationships report each relationship's
# CascadeConfiguration, and a metadata file with another value is refused with a message
# naming the lookup.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work dvemu-cascade
jq '(.tables[] | select(.logical_name == "account") | .attributes[]
     | select(.name == "transactioncurrencyid")) += {"cascade_delete": "Restrict"}
    | (.tables[] | select(.logical_name == "salesorder") | .attributes[]
     | select(.name == "customerid")) += {"cascade_delete": {"account": "Cascade"}}' \
    "$DVEMU_METADATA_DEFAULT" >"$work/meta.json" || die "cannot write the metadata"
DVEMU_METADATA=$work/meta.json dvemu_start
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
# create SET BODY: POSTs a row, prints its id.
create() {
    dvemu_call POST "$1" "$2"
    [ "$DV_STATUS" = 204 ] || die "creating a row of $1: $DV_STATUS $DV_BODY"
    dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/'
}
status_of() { dvemu_call GET "$1"; echo "$DV_STATUS"; }

company=$(create cdm_companies '{"cdm_companycode":"C1","cdm_name":"Company one"}')
usd=$(create transactioncurrencies '{"isocurrencycode":"USD","currencyname":"US Dollar","currencysymbol":"$","exchangerate":1}')
eur=$(create transactioncurrencies '{"isocurrencycode":"EUR","currencyname":"Euro","currencysymbol":"E","exchangerate":1}')
acct() { # NUMBER [CURRENCY]
    create accounts "{\"accountnumber\":\"$1\",\"name\":\"Account $1\",
        \"msdyn_company@odata.bind\":\"/cdm_companies($company)\"${2:+,\"transactioncurrencyid@odata.bind\":\"/transactioncurrencies($2)\"}}"
}
order() { # NUMBER ACCOUNT
    create salesorders "{\"msdyn_salesordernumber\":\"$1\",\"name\":\"Order $1\",
        \"msdyn_company@odata.bind\":\"/cdm_companies($company)\",
        \"customerid_account@odata.bind\":\"/accounts($2)\"}"
}
line() { # ORDER SEQUENCE
    create salesorderdetails "{\"sequencenumber\":$2,\"salesorderid@odata.bind\":\"/salesorders($1)\"}"
}

# --- the metadata ------------------------------------------------------------------------------
dvemu_call GET "EntityDefinitions(LogicalName='salesorderdetail')/ManyToOneRelationships"
check_eq "ManyToOneRelationships: an order's lines cascade" Cascade \
    "$(j '.value[] | select(.ReferencingAttribute == "salesorderid") | .CascadeConfiguration.Delete')"
dvemu_call GET "EntityDefinitions(LogicalName='salesorder')/OneToManyRelationships?\$select=ReferencingEntity,ReferencingAttribute,CascadeConfiguration"
check_eq "OneToManyRelationships: the same seen from the order" "salesorderdetail.salesorderid Cascade" \
    "$(j '.value[] | "\(.ReferencingEntity).\(.ReferencingAttribute) \(.CascadeConfiguration.Delete)"')"
dvemu_call GET "EntityDefinitions(LogicalName='contact')/ManyToOneRelationships"
check_eq "ManyToOneRelationships: RemoveLink by default" "RemoveLink RemoveLink" \
    "$(j '[.value[] | select(.ReferencingAttribute == "parentcustomerid") | .CascadeConfiguration.Delete] | join(" ")')"

# --- Cascade -----------------------------------------------------------------------------------
a1=$(acct A1)
o1=$(order O1 "$a1")
l1=$(line "$o1" 1) l2=$(line "$o1" 2)
o2=$(order O2 "$a1")
l3=$(line "$o2" 1)
check_eq "a line is found by its key" 200 \
    "$(status_of "salesorderdetails(_salesorderid_value=$o1,sequencenumber=1)")"
dvemu_call DELETE "salesorders($o1)"
check_eq "deleting an order: 204" 204 "$DV_STATUS"
check_eq "its lines are deleted with it" "404 404" "$(status_of "salesorderdetails($l1)") $(status_of "salesorderdetails($l2)")"
check_eq "another order's line stays" 200 "$(status_of "salesorderdetails($l3)")"
dvemu_call GET "salesorderdetails(_salesorderid_value=$o1,sequencenumber=1)"
check_eq "nor is a line found by its key" 404 "$DV_STATUS"
# Two levels: the account's orders (Cascade here) and their lines go with the account.
dvemu_call DELETE "accounts($a1)"
check_eq "deleting an account with an order: 204" 204 "$DV_STATUS"
check_eq "its order and the order's line are deleted" "404 404" \
    "$(status_of "salesorders($o2)") $(status_of "salesorderdetails($l3)")"

# --- RemoveLink --------------------------------------------------------------------------------
a2=$(acct A2)
c1=$(create contacts "{\"msdyn_contactpersonid\":\"P1\",\"lastname\":\"Person\",
    \"parentcustomerid_account@odata.bind\":\"/accounts($a2)\"}")
dvemu_call GET "contacts($c1)?\$select=_parentcustomerid_value,versionnumber"
check_eq "the contact names its account" "$a2" "$(j ._parentcustomerid_value)"
version=$(j .versionnumber)
dvemu_call DELETE "accounts($a2)"
check_eq "deleting the contact's account: 204" 204 "$DV_STATUS"
dvemu_call GET "contacts($c1)?\$select=_parentcustomerid_value,versionnumber"
check_eq "the contact stays" 200 "$DV_STATUS"
check_eq "its lookup is cleared" null "$(j ._parentcustomerid_value)"
check_eq "as an update: a newer version" 1 "$(j ".versionnumber > $version" | sed 's/true/1/')"

# --- Restrict ----------------------------------------------------------------------------------
a3=$(acct A3 "$usd")
dvemu_call DELETE "transactioncurrencies($usd)"
check_eq "deleting a currency an account uses: 400" 400 "$DV_STATUS"
check_eq "with CannotDeleteDueToAssociation" \
    "0x80040227 The object you tried to delete is associated with another object and cannot be deleted." \
    "$(j '.error.code + " " + .error.message')"
check_eq "the currency stays" 200 "$(status_of "transactioncurrencies($usd)")"
check_eq "a currency nobody uses is deleted" 204 "$(dvemu_call DELETE "transactioncurrencies($eur)"; echo "$DV_STATUS")"
# A cascade that would reach a restricted row refuses the whole delete.
a4=$(acct A4 "$usd")
o3=$(order O3 "$a4")
l4=$(line "$o3" 1)
dvemu_call DELETE "transactioncurrencies($usd)"
check_eq "still refused while two accounts use it" 400 "$DV_STATUS"
dvemu_call DELETE "accounts($a3)"
check_eq "an account itself can go (the currency is the one referenced)" 204 "$DV_STATUS"

# --- a changeset undone ------------------------------------------------------------------------
cs=$(
    dvemu_batch_part changeset_BBB "DELETE /api/data/v9.2/accounts($a4)" "" "Content-ID: 1"
    dvemu_batch_part changeset_BBB \
        "DELETE /api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)" "" "Content-ID: 2"
    printf -- '--changeset_BBB--\r\n'
)
dvemu_batch "$(
    printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary="changeset_BBB"\r\n\r\n%s\r\n' "$cs"
    printf -- '--batch_AAA--\r\n'
)"
check_contains "the changeset's second delete fails (404)" "HTTP/1.1 404" "$DV_BODY"
check_eq "a changeset whose second delete fails is undone: the account," 200 "$(status_of "accounts($a4)")"
check_eq "its order and the order's line are back" "200 200" \
    "$(status_of "salesorders($o3)") $(status_of "salesorderdetails($l4)")"

# --- a metadata file with another value --------------------------------------------------------
jq '(.tables[] | select(.logical_name == "salesorderdetail") | .attributes[]
     | select(.name == "salesorderid")) += {"cascade_delete": "Sometimes"}' \
    "$DVEMU_METADATA_DEFAULT" >"$work/bad.json"
out=$("$DVEMU_BIN" --metadata "$work/bad.json" --listen 127.0.0.1:0 --tenant t --client c:s 2>&1)
check_eq "dvemu refuses a cascade it does not know" 1 $?
check_contains "and names the lookup and the value" \
    'lookup \"salesorderid\": cascade_delete \"Sometimes\" is not Cascade, RemoveLink or Restrict' "$out"
finish

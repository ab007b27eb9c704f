#!/usr/bin/env bash
# dvemu: many-to-many relationships (metadata "many_to_many"), as Microsoft's "Associate and
# disassociate table rows using the Web API" and "Join tables using OData" describe them:
# POST <set>(<id>)/<nav>/$ref with {"@odata.id"} associates (204; the same pair again answers
# 412 0x80040237 "Cannot insert duplicate key."), from either side and by alternate key; GET
# <set>(<id>)/<nav> and $expand=<nav>($select=...) list the related rows; DELETE
# <set>(<id>)/<nav>(<id>)/$ref or <set>(<id>)/<nav>/$ref?$id=<url> disassociates (404 when
# not associated); a changeset that
# fails rolls its associations back; deleting a row removes its associations; the intersect
# table is readable and not writable; EntityDefinitions(...)/ManyToManyRelationships describes
# them; bad relationships stop dvemu at start.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work m2m
meta=$work/metadata.json
jq '.many_to_many = [{"name": "dwasync_account_contact", "entity1": "account", "entity2": "contact",
                      "navigation2": "dwasync_contact_accounts"}]' "$DVEMU_METADATA_DEFAULT" >"$meta"
bad() { # JSON of many_to_many: dvemu refuses to start
    jq --argjson r "$1" '.many_to_many = $r' "$DVEMU_METADATA_DEFAULT" >"$work/bad.json"
    "$DVEMU_BIN" --listen 127.0.0.1:0 --metadata "$work/bad.json" --tenant t --client c:s \
        >"$work/out" 2>&1
}
check_status "a relationship to an unknown table stops dvemu" 1 bad '[{"name":"r","entity1":"account","entity2":"nope"}]'
check_contains "naming it" "names no table" "$(cat "$work/out")"
check_status "a self-referential relationship is refused" 1 bad '[{"name":"r","entity1":"account","entity2":"account"}]'

DVEMU_METADATA=$meta dvemu_start
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
id_of() { dvemu_admin GET "tables/$1" | jq -r --arg k "$2" --arg v "$3" ".value[] | select(.[\$k] == \$v) | .$4"; }
dvemu_call PATCH "cdm_companies(cdm_companycode='C1')" '{"cdm_name":"Company one"}'
c1=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')
for a in A1 A2; do
    dvemu_call PATCH "accounts(accountnumber='$a',_msdyn_company_value=$c1)" "{\"name\":\"Account $a\"}"
done
for k in K1 K2; do
    dvemu_call PATCH "contacts(msdyn_contactpersonid='$k',_msdyn_company_value=$c1)" "{\"lastname\":\"Last $k\"}"
done
a1=$(id_of accounts accountnumber A1 accountid)
a2=$(id_of accounts accountnumber A2 accountid)
k1=$(id_of contacts msdyn_contactpersonid K1 contactid)
k2=$(id_of contacts msdyn_contactpersonid K2 contactid)
nav=dwasync_account_contact
pairs() { dvemu_admin GET tables/dwasync_account_contactcollection | jq '.value | length'; }

dvemu_call POST "accounts($a1)/$nav/\$ref" "{\"@odata.id\":\"$DVEMU_URL/api/data/v9.2/contacts($k1)\"}"
check_eq "associate by \$ref: 204" 204 "$DV_STATUS"
dvemu_call POST "accounts($a1)/$nav/\$ref" "{\"@odata.id\":\"contacts(msdyn_contactpersonid='K2',_msdyn_company_value=$c1)\"}"
check_eq "associate a row named by alternate key: 204" 204 "$DV_STATUS"
dvemu_call POST "contacts($k1)/dwasync_contact_accounts/\$ref" "{\"@odata.id\":\"accounts($a2)\"}"
check_eq "associate from the other side, through its own navigation property: 204" 204 "$DV_STATUS"
check_eq "three intersect rows" 3 "$(pairs)"
dvemu_call POST "contacts($k1)/dwasync_contact_accounts/\$ref" "{\"@odata.id\":\"accounts($a1)\"}"
check_eq "the same pair again: 412 0x80040237" "412 0x80040237" "$DV_STATUS $(j .error.code)"
check_eq "Cannot insert duplicate key" "Cannot insert duplicate key." "$(j .error.message)"
check_eq "and no fourth row" 3 "$(pairs)"
dvemu_call POST "accounts($a1)/$nav/\$ref" "{\"@odata.id\":\"cdm_companies($c1)\"}"
check_eq "a reference to a row of another table: 400" 400 "$DV_STATUS"
dvemu_call POST "accounts($a1)/$nav/\$ref" '{"@odata.id":"contacts(00000000-0000-0000-0000-000000000009)"}'
check_eq "a reference to a missing row: 404 0x80040217" "404 0x80040217" "$DV_STATUS $(j .error.code)"

dvemu_call GET "accounts($a1)/$nav?\$select=lastname&\$orderby=lastname"
check_eq "GET the navigation property lists the related rows" "Last K1,Last K2" "$(j '[.value[].lastname] | join(",")')"
dvemu_call GET "contacts($k1)/dwasync_contact_accounts?\$select=name&\$orderby=name"
check_eq "from the other side too" "Account A1,Account A2" "$(j '[.value[].name] | join(",")')"
dvemu_call GET "accounts($a1)?\$select=name&\$expand=$nav(\$select=lastname)"
check_eq "\$expand with a nested \$select" '[{"lastname":"Last K1"},{"lastname":"Last K2"}]' \
    "$(j "[.$nav[] | {lastname}] | sort_by(.lastname)" | jq -c .)"
check_eq "the expanded rows carry their id" "$(jq -rn --arg a "$k1" --arg b "$k2" '[$a, $b] | sort | join(" ")')" \
    "$(j "[.$nav[].contactid] | sort | join(\" \")")"
dvemu_call GET "accounts?\$select=accountnumber&\$expand=$nav(\$select=lastname)&\$orderby=accountnumber"
check_eq "\$expand on a collection" "A1:2 A2:1" "$(j "[.value[] | \"\(.accountnumber):\(.$nav | length)\"] | join(\" \")")"

dvemu_call DELETE "accounts($a1)/$nav($k2)/\$ref"
check_eq "disassociate: 204" 204 "$DV_STATUS"
dvemu_call DELETE "accounts($a1)/$nav($k2)/\$ref"
check_eq "disassociate what is not associated: 404" 404 "$DV_STATUS"
dvemu_call GET "accounts($a1)/$nav"
check_eq "one related row left" "Last K1" "$(j '[.value[].lastname] | join(",")')"
dvemu_call POST "accounts($a1)/$nav/\$ref" "{\"@odata.id\":\"contacts($k2)\"}"
dvemu_call DELETE "accounts($a1)/$nav/\$ref?\$id=$DVEMU_URL/api/data/v9.2/contacts($k2)"
check_eq "disassociate with \$id=<url>: 204" 204 "$DV_STATUS"
dvemu_call GET "accounts($a1)/$nav"
check_eq "and K2 is no longer related" "Last K1" "$(j '[.value[].lastname] | join(",")')"
dvemu_call GET "accounts($a1)?\$id=contacts($k2)"
check_eq "\$id anywhere else is refused, not ignored: 400" 400 "$DV_STATUS"

# A changeset that fails rolls its association back.
B=batch_AAA
cs=$(
    dvemu_batch_part changeset_BBB "POST /api/data/v9.2/accounts($a2)/$nav/\$ref" \
        "{\"@odata.id\":\"contacts($k2)\"}" "Content-ID: 1"
    dvemu_batch_part changeset_BBB "PATCH /api/data/v9.2/accounts($a2)" '{"nosuchcolumn":1}' "Content-ID: 2"
    printf -- '--changeset_BBB--\r\n'
)
body=$(
    printf -- '--%s\r\nContent-Type: multipart/mixed; boundary="changeset_BBB"\r\n\r\n%s\r\n' $B "$cs"
    printf -- '--%s--\r\n' $B
)
dvemu_batch "$body"
check_eq "a changeset with a failing part: 400" 400 "$DV_STATUS"
check_eq "its association is rolled back" 2 "$(pairs)"

dvemu_call POST dwasync_account_contactcollection '{"accountid":"x"}'
check_eq "the intersect table is not written directly" 405 "$DV_STATUS"
dvemu_call DELETE "accounts($a2)"
check_eq "delete a related row: 204" 204 "$DV_STATUS"
check_eq "its associations go with it" 1 "$(pairs)"
dvemu_call GET "contacts($k1)/dwasync_contact_accounts?\$select=name"
check_eq "and the other side no longer lists it" "Account A1" "$(j '[.value[].name] | join(",")')"
check_eq "EntityDefinitions/ManyToManyRelationships describes it, from either table" \
    "dwasync_account_contact account contact dwasync_account_contact accountid contactid dwasync_account_contact dwasync_contact_accounts" \
    "$(dvemu_api GET "EntityDefinitions(LogicalName='contact')/ManyToManyRelationships" | jq -r '.value[] |
        "\(.SchemaName) \(.Entity1LogicalName) \(.Entity2LogicalName) \(.IntersectEntityName) \(.Entity1IntersectAttribute) \(.Entity2IntersectAttribute) \(.Entity1NavigationPropertyName) \(.Entity2NavigationPropertyName)"')"
check_eq "a table without one lists none" 0 \
    "$(dvemu_api GET "EntityDefinitions(LogicalName='cdm_company')/ManyToManyRelationships" | jq '.value | length')"
dvemu_call GET "accounts($a1)/nosuchnav"
check_eq "an unknown navigation property: 400" 400 "$DV_STATUS"
finish

#!/usr/bin/env bash
# dvemu: $batch multipart requests and the exact shape of their answers (success with a
# changeset and Content-ID references, stop on the first error, continue-on-error, changeset
# rollback, the 1000-request limit). Written parts carry Location and OData-EntityId, as in
# "Execute batch operations using the Web API".
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dvemu_start

j() { printf '%s' "$DV_BODY" | jq -r "$1"; }

dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}'
usmf=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')

part() { dvemu_batch_part "$@"; }
batch() { dvemu_batch "$@"; }

# The answer with CRLF checked and removed, and the varying parts (boundaries, GUIDs, the
# base URL, versions) replaced by placeholders.
normalized() {
    local bare
    bare=$(grep -c $'[^\r]$' "$DVEMU_DIR/batch-resp")
    [ "$bare" = 0 ] || echo "LINES WITHOUT CRLF: $bare"
    local g='[0-9a-f]\{8\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{12\}'
    tr -d '\r' <"$DVEMU_DIR/batch-resp" |
        sed -e "s/batchresponse_$g/batchresponse_X/g" \
            -e "s/changesetresponse_$g/changesetresponse_Y/g" \
            -e "s#$DVEMU_URL#URL#g" \
            -e "s/$g/GUID/g" \
            -e 's/W\/\\"[0-9]*\\"/W\/\\"N\\"/g'
}

# --- success: a changeset with Content-ID references, then a GET --------------------------
cs=$(
    part changeset_BBB "POST /api/data/v9.2/accounts" \
        "{\"name\":\"Batch one\",\"accountnumber\":\"B1\",\"msdyn_company@odata.bind\":\"/cdm_companies($usmf)\"}" \
        "Content-ID: 1"
    part changeset_BBB 'PATCH $1' '{"telephone1":"555-0100"}' "Content-ID: 2"
    part changeset_BBB "POST $DVEMU_URL/api/data/v9.2/contacts" \
        '{"lastname":"Doe","msdyn_contactpersonid":"P1","parentcustomerid_account@odata.bind":"$1"}' \
        "Content-ID: 3"
    printf -- '--changeset_BBB--\r\n'
)
body=$(
    printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary="changeset_BBB"\r\n\r\n%s\r\n' "$cs"
    part batch_AAA "GET accounts?\$select=telephone1&\$filter=accountnumber%20eq%20'B1'"
    printf -- '--batch_AAA--\r\n'
)
batch "$body"
check_eq "batch answers 200" 200 "$DV_STATUS"
check_contains "response content type has the batchresponse boundary" \
    "Content-Type: multipart/mixed; boundary=batchresponse_" "$(tr -d '\r' <"$DVEMU_DIR/batch-hdr")"
expected=$(cat <<'EOF'
--batchresponse_X
Content-Type: multipart/mixed; boundary=changesetresponse_Y

--changesetresponse_Y
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: URL/api/data/v9.2/accounts(GUID)
OData-EntityId: URL/api/data/v9.2/accounts(GUID)


--changesetresponse_Y
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: URL/api/data/v9.2/accounts(GUID)
OData-EntityId: URL/api/data/v9.2/accounts(GUID)


--changesetresponse_Y
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 3

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: URL/api/data/v9.2/contacts(GUID)
OData-EntityId: URL/api/data/v9.2/contacts(GUID)


--changesetresponse_Y--
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"@odata.context":"URL/api/data/v9.2/$metadata#accounts","value":[{"@odata.etag":"W/\"N\"","accountid":"GUID","telephone1":"555-0100"}]}
--batchresponse_X--
EOF
)
check_eq "success shape" "$expected" "$(normalized)"
acct=$(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber=="B1") | .accountid')
check_eq "\$1 in a bind resolved to the created row" "$acct" \
    "$(dvemu_admin GET tables/contacts | jq -r '.value[0]._parentcustomerid_value')"

# --- stop on the first error (the default) -----------------------------------------------
long=$(printf 'y%.0s' $(seq 1 161))
body=$(
    part batch_AAA "PATCH accounts(accountnumber='S1',_msdyn_company_value=$usmf)" '{"name":"first"}'
    part batch_AAA "PATCH accounts(accountnumber='S2',_msdyn_company_value=$usmf)" "{\"name\":\"$long\"}"
    part batch_AAA "PATCH accounts(accountnumber='S3',_msdyn_company_value=$usmf)" '{"name":"third"}'
    printf -- '--batch_AAA--\r\n'
)
batch "$body"
check_eq "a failing batch answers 400" 400 "$DV_STATUS"
expected=$(cat <<'EOF'
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the 'name' attribute of the 'account' entity exceeded the maximum allowed length of '160'."}}
--batchresponse_X--
EOF
)
check_eq "stop-on-error shape: only the failing part" "$expected" "$(normalized)"
names=$(dvemu_admin GET tables/accounts | jq -r '[.value[].accountnumber | select(startswith("S"))] | sort | join(" ")')
check_eq "requests before the failure stay applied, later ones never run" "S1" "$names"

# --- continue on error ---------------------------------------------------------------------
body=$(
    part batch_AAA "PATCH accounts(accountnumber='C1',_msdyn_company_value=$usmf)" '{"name":"first"}'
    part batch_AAA "PATCH accounts(accountnumber='C2',_msdyn_company_value=$usmf)" '{"customertypecode":42}'
    part batch_AAA "DELETE accounts(accountnumber='C9',_msdyn_company_value=$usmf)"
    part batch_AAA "PATCH accounts(accountnumber='C3',_msdyn_company_value=$usmf)" '{"name":"third"}'
    printf -- '--batch_AAA--\r\n'
)
batch "$body" -H 'Prefer: odata.continue-on-error'
check_eq "continue-on-error answers 200" 200 "$DV_STATUS"
expected=$(cat <<'EOF'
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: URL/api/data/v9.2/accounts(GUID)
OData-EntityId: URL/api/data/v9.2/accounts(GUID)


--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x8004431a","message":"A validation error occurred.  The value 42 of 'customertypecode' on record of type 'account' is outside the valid range. Accepted Values: 1,2,3,4,5,6,7,8,9,10,11,12"}}
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 404 Not Found
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x80048d02","message":"A record with the specified key values does not exist in account entity"}}
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: URL/api/data/v9.2/accounts(GUID)
OData-EntityId: URL/api/data/v9.2/accounts(GUID)


--batchresponse_X--
EOF
)
check_eq "continue-on-error shape: one part per request" "$expected" "$(normalized)"
names=$(dvemu_admin GET tables/accounts | jq -r '[.value[].accountnumber | select(startswith("C"))] | sort | join(" ")')
check_eq "requests after the failure ran" "C1 C3" "$names"

# --- changeset rollback ----------------------------------------------------------------------
writes_before=$(dvemu_admin GET history | jq '.value | length')
cs=$(
    part changeset_BBB "PATCH accounts(accountnumber='R1',_msdyn_company_value=$usmf)" '{"name":"r1"}' "Content-ID: 1"
    part changeset_BBB "PATCH accounts(accountnumber='C1',_msdyn_company_value=$usmf)" '{"name":"changed"}' "Content-ID: 2"
    part changeset_BBB "PATCH accounts(accountnumber='R3',_msdyn_company_value=$usmf)" '{"nosuch":1}' "Content-ID: 3"
    printf -- '--changeset_BBB--\r\n'
)
body=$(
    printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary=changeset_BBB\r\n\r\n%s\r\n' "$cs"
    printf -- '--batch_AAA--\r\n'
)
batch "$body"
check_eq "a failing changeset answers 400" 400 "$DV_STATUS"
expected=$(cat <<'EOF'
--batchresponse_X
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 3

HTTP/1.1 400 Bad Request
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x0","message":"Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.account'."}}
--batchresponse_X--
EOF
)
check_eq "changeset failure shape: the failing part with its Content-ID" "$expected" "$(normalized)"
check_eq "the changeset's create was rolled back" "" \
    "$(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber=="R1") | .accountid')"
check_eq "the changeset's update was rolled back" first \
    "$(dvemu_admin GET tables/accounts | jq -r '.value[] | select(.accountnumber=="C1") | .name')"
check_eq "rolled-back writes leave no history" "$writes_before" "$(dvemu_admin GET history | jq '.value | length')"

# The same changeset with continue-on-error: rolled back, and the next part still runs.
body=$(
    printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary=changeset_BBB\r\n\r\n%s\r\n' "$cs"
    part batch_AAA "PATCH accounts(accountnumber='R4',_msdyn_company_value=$usmf)" '{"name":"r4"}'
    printf -- '--batch_AAA--\r\n'
)
batch "$body" -H 'Prefer: odata.continue-on-error'
check_eq "continue-on-error with a failing changeset answers 200" 200 "$DV_STATUS"
check_eq "failing changeset answered by its failing part, then the next request" \
    "HTTP/1.1 400 Bad Request|HTTP/1.1 204 No Content" \
    "$(normalized | grep '^HTTP/1.1' | paste -sd '|')"
names=$(dvemu_admin GET tables/accounts | jq -r '[.value[].accountnumber | select(startswith("R"))] | sort | join(" ")')
check_eq "only the request after the changeset is applied" "R4" "$names"

# --- a changeset binds to a parent it created: by Content-ID and by alternate key ---------
cs=$(
    part changeset_BBB "PATCH salesorders(msdyn_salesordernumber='SO9',_msdyn_company_value=$usmf)" \
        '{"name":"so9"}' "Content-ID: 1"
    part changeset_BBB "POST salesorderdetails" '{"sequencenumber":1,"salesorderid@odata.bind":"$1"}' \
        "Content-ID: 2"
    part changeset_BBB "POST salesorderdetails" \
        "{\"sequencenumber\":2,\"salesorderid@odata.bind\":\"/salesorders(msdyn_salesordernumber='SO9',_msdyn_company_value=$usmf)\"}" \
        "Content-ID: 3"
    printf -- '--changeset_BBB--\r\n'
)
body=$(
    printf -- '--batch_AAA\r\nContent-Type: multipart/mixed; boundary=changeset_BBB\r\n\r\n%s\r\n' "$cs"
    printf -- '--batch_AAA--\r\n'
)
batch "$body"
check_eq "a changeset creating a parent and its children answers 200" 200 "$DV_STATUS"
check_eq "every part of it answered 204" "204 204 204" \
    "$(normalized | sed -n 's/^HTTP\/1.1 \([0-9]*\).*/\1/p' | paste -sd ' ')"
so=$(dvemu_admin GET tables/salesorders | jq -r '.value[] | select(.msdyn_salesordernumber=="SO9") | .salesorderid')
check_eq "children bound by \$1 and by the parent's alternate key both point at it" "$so $so" \
    "$(dvemu_admin GET tables/salesorderdetails | jq -r '[.value[] | ._salesorderid_value] | join(" ")')"

# --- limits and malformed batches --------------------------------------------------------------
body=$(
    for i in $(seq 1 1001); do part batch_AAA "GET WhoAmI"; done
    printf -- '--batch_AAA--\r\n'
)
batch "$body"
check_eq "more than 1000 requests is 400" 400 "$DV_STATUS"
check_contains "the limit is named" "1000" "$DV_BODY"
batch "this is not multipart"
check_eq "a body without the boundary is 400" 400 "$DV_STATUS"
BATCH_CT=application/json batch "$(part batch_AAA 'GET WhoAmI'; printf -- '--batch_AAA--\r\n')"
check_eq "a batch without a multipart content type is 400" 400 "$DV_STATUS"

finish

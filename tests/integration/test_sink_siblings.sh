#!/usr/bin/env bash
# A table whose rows refer to each other, split over two bulk requests: an account in the
# first request is billed to an account created by the second. With one request at a time
# the first meets a missing parent (404); the sink sends it again after the second, instead
# of isolating its 1000 rows through $batch. Every row lands, the child bound to its parent,
# and the only requests are the three UpsertMultiple calls. A parent earlier in the same
# request needs no second try: rows keep their order. dvemu gives each row its own version 4
# id.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-siblings
dvemu_start
sink_conf "$work/dw.conf" "max_concurrency = 1"
sink_seed_company "$work/dw.conf" "$work/rows"

sink_accounts 2000 S | jq -c '
    if .key.accountnumber == "S0005" then
        .body["msdyn_billingaccount@odata.bind"] = {"$ref": "accounts",
            key: {accountnumber: "S1500", _msdyn_company_value: .key._msdyn_company_value}}
    elif .key.accountnumber == "S0100" then
        .body["msdyn_billingaccount@odata.bind"] = {"$ref": "accounts",
            key: {accountnumber: "S0050", _msdyn_company_value: .key._msdyn_company_value}}
    else . end' >"$work/rows.jsonl"

sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "exit 0: every row applied" 0 $?
check_eq "2000 applied" 2000 "$(sink_count "$work/out" applied)"

usmf=$(dvemu_api GET "cdm_companies(cdm_companycode='USMF')" | jq -r .cdm_companyid)
parent=$(dvemu_api GET "accounts(accountnumber='S1500',_msdyn_company_value=$usmf)" | jq -r .accountid)
child=$(dvemu_api GET "accounts(accountnumber='S0005',_msdyn_company_value=$usmf)")
check_eq "the child is bound to its parent" "$parent" \
    "$(jq -r '._msdyn_billingaccount_value' <<<"$child")"
# Within one request rows keep their order: a parent earlier in it is created first.
parent=$(dvemu_api GET "accounts(accountnumber='S0050',_msdyn_company_value=$usmf)" | jq -r .accountid)
child=$(dvemu_api GET "accounts(accountnumber='S0100',_msdyn_company_value=$usmf)")
check_eq "a child bound to a parent earlier in its own request" "$parent" \
    "$(jq -r '._msdyn_billingaccount_value' <<<"$child")"

ids=$(dvemu_api GET 'accounts?$select=accountid' | jq -r '.value[].accountid')
check_eq "dvemu gave each of the 2000 rows its own id" 2000 "$(sort -u <<<"$ids" | wc -l)"
check_eq "every id a version 4 GUID" 2000 \
    "$(grep -cE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' <<<"$ids")"

log=$(cat "$DVEMU_LOG")
check_eq "the first request met the missing parent once" 1 \
    "$(grep -c 'accounts/Microsoft.Dynamics.CRM.UpsertMultiple status=404' <<<"$log")"
check_eq "then the second request and the first again succeeded" 2 \
    "$(grep -c 'accounts/Microsoft.Dynamics.CRM.UpsertMultiple status=20' <<<"$log")"
check_eq "no row was isolated through \$batch" 0 "$(grep -c '\$batch' <<<"$log")"
check_eq "nothing on stderr but the log" "" "$(grep -v 'level=' "$work/err" || true)"
finish

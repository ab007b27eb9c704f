#!/usr/bin/env bash
# A bulk request of 1000 rows with 3 bad ones: UpsertMultiple fails as a whole, the sink
# isolates the bad rows through $batch, 997 rows are applied and the 3 are reported with
# their own Dataverse codes. Rows beyond batch_size are split into requests of even sizes.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-bulk
dvemu_start
sink_conf "$work/dw.conf"
sink_seed_company "$work/dw.conf" "$work/rows"

long=$(printf 'x%.0s' $(seq 1 300))
sink_accounts 1000 B | jq -c --arg long "$long" '
    if .key.accountnumber == "B0010" or .key.accountnumber == "B0500" then .body.name = $long
    elif .key.accountnumber == "B0999" then .body.customertypecode = 999999
    else . end' >"$work/rows.jsonl"
check_eq "1000 input rows" 1000 "$(wc -l <"$work/rows.jsonl")"

sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "exit 1: some rows were rejected" 1 $?
check_eq "997 applied" 997 "$(sink_count "$work/out" applied)"
check_eq "3 rejected" 3 "$(sink_count "$work/out" rejected)"
bad=$(jq -c 'select(.status == "rejected") | [.line, .class, .http, .code]' "$work/out" | tr '\n' ' ')
check_eq "each bad row has its own code" \
    '[11,"validation",400,"0x80044331"] [501,"validation",400,"0x80044331"] [1000,"validation",400,"0x8004431a"] ' \
    "$bad"
check_contains "length message kept" "exceeded the maximum allowed length" \
    "$(jq -r 'select(.line == 11) | .message' "$work/out")"

check_eq "dvemu holds exactly the 997 good rows" 997 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"
usmf=$(dvemu_api GET "cdm_companies(cdm_companycode='USMF')" | jq -r .cdm_companyid)
for k in B0010 B0500 B0999; do
    dvemu_call GET "accounts(accountnumber='$k',_msdyn_company_value=$usmf)"
    check_eq "bad row $k not written" 404 "$DV_STATUS"
done
dvemu_call GET "accounts(accountnumber='B0011',_msdyn_company_value=$usmf)"
check_eq "a good neighbour was written" "Account 11" "$(jq -r .name <<<"$DV_BODY")"

log=$(cat "$DVEMU_LOG")
check_contains "UpsertMultiple was tried first" "accounts/Microsoft.Dynamics.CRM.UpsertMultiple status=400" "$log"
check_eq "then one \$batch isolated the rows" 1 "$(grep -c 'path=/api/data/v9.2/$batch status=200' "$DVEMU_LOG")"
check_contains "the sink says why it fell back" "sending them as \$batch to isolate the bad rows" "$(cat "$work/err")"

# A clean second run goes through UpsertMultiple alone.
sink_accounts 1000 B >"$work/clean.jsonl"
sink_apply "$work/dw.conf" "$work/clean.jsonl" "$work/out" "$work/err"
check_eq "clean bulk run exits 0" 0 $?
check_eq "1000 applied" 1000 "$(sink_count "$work/out" applied)"
check_eq "one more UpsertMultiple, no more \$batch" "2 1" \
    "$(grep -c 'accounts/Microsoft.Dynamics.CRM.UpsertMultiple status=' "$DVEMU_LOG") $(grep -c 'path=/api/data/v9.2/$batch status=200' "$DVEMU_LOG")"
check_eq "1000 accounts" 1000 "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

# 1,500 rows at once go as two requests of 750, not 1,000 and 500: the writes of a level are
# done when the largest request is.
sink_accounts 1500 E >"$work/even.jsonl"
sink_apply "$work/dw.conf" "$work/even.jsonl" "$work/out" "$work/err"
check_eq "1500 applied" 1500 "$(sink_count "$work/out" applied)"
check_eq "in two UpsertMultiple requests of 750 rows" "rows=750 rows=750" \
    "$(grep 'accounts/Microsoft.Dynamics.CRM.UpsertMultiple status=' "$DVEMU_LOG" | tail -2 |
        grep -o 'rows=[0-9]*' | tr '\n' ' ' | sed 's/ $//')"

finish

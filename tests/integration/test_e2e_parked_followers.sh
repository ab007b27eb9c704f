#!/usr/bin/env bash
# Followers of a parked key (README invariant 8, DESIGN invariant 3): an account's change
# is parked (an on-hold status outside the value map: an open mapping error), then the same
# account changes again in later transactions: its credit limit (with another account's, in
# one transaction), then its old on-hold status back (a value Dataverse already holds: the
# case test_ops_resync met, whose status listing dropped the follower because a waiting row's
# class is NULL and `text || NULL` is NULL), and once more after a daemon restart (the
# blocked set reloaded from the table). Asserts the exact error rows (head open, every
# follower waiting, all of one key), that Dataverse got none of the followers while the
# other account's change applied, then fixes the map, replays, and asserts every row
# resolved, the account's write history in commit order and Dataverse equal to the source.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

# Dataverse has the on-hold option the sample's value map lacks (the fix adds it to the map).
e2e_metadata 'attr(tables["account"], "msdyn_onholdstatus")["options"].append({"value": 806380006, "label": "Legal hold"})'
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_synced

read -r a b <<<"$(psql_q "SELECT string_agg(customeraccount, ' ' ORDER BY customeraccount) FROM (
    SELECT customeraccount FROM fno.customersv3 WHERE dataareaid = 'usmf'
       AND partytype = 'Organization' ORDER BY customeraccount LIMIT 2) x")"
where() { echo "dataareaid = 'usmf' AND customeraccount = '$1'"; }
hold=$(psql_q "SELECT onholdstatus FROM fno.customersv3 WHERE $(where "$a")")
usmf=$(dvemu_admin GET tables/cdm_companies | jq -r '.value[] | select(.cdm_companycode == "usmf") | .cdm_companyid')
account() { # account NUMBER JQ: JQ over the usmf account NUMBER in Dataverse
    local rows
    rows=$(dvemu_admin GET tables/accounts)
    jq -r ".value[] | select(.accountnumber == \"$1\" and ._msdyn_company_value == \"$usmf\") | $2" <<<"$rows"
}
limit_a=$(account "$a" .creditlimit)
limit_b=$(account "$b" .creditlimit)
plus100() { jq -n "$1 + 100"; } # credit limits are decimals
commit() { # commit SQL: commits SQL in one transaction, waits until it is applied or parked
    local lsn
    lsn=$(e2e_commit_lsn "$1") || die "committing failed: $1"
    e2e_wait_checkpoint "$lsn" || die "not checkpointed: $1"
}
# The unresolved rows, one line each: status, class, map, whether the row names the account
# and its key is its target; the head's message. All rows of one key.
rows() {
    psql_q "SELECT status, coalesce(class, '-'), map_name,
                   key_text = target_id AND position('$a' in target_id) > 0,
                   CASE WHEN status = 'open' THEN message ELSE '' END
              FROM dwasync.error WHERE status <> 'resolved' ORDER BY commit_lsn, position" | tr '\n' ';'
}
head='open|mapping|customers_organizations|t|map "customers_organizations": column "ONHOLDSTATUS" value 6 is not in the value map of "msdyn_onholdstatus"'
follower='waiting|-|customers_organizations|t|'

# --- the head is parked, then followers come in later transactions ----------------------------
commit "UPDATE fno.customersv3 SET onholdstatus = 6 WHERE $(where "$a")"
check_eq "the head is an open mapping error" "$head;" "$(rows)"
commit "UPDATE fno.customersv3 SET creditlimit = creditlimit + 100 WHERE $(where "$a") OR $(where "$b")"
commit "UPDATE fno.customersv3 SET onholdstatus = $hold WHERE $(where "$a")"
check_eq "both followers wait behind the head, in its key" "$head;$follower;$follower;" "$(rows)"
check_eq "one key" 1 "$(psql_q "SELECT count(DISTINCT (map_id, key_text)) FROM dwasync.error")"
check_eq "the other account's change applied" "$(plus100 "$limit_b")" "$(account "$b" .creditlimit)"
check_eq "Dataverse did not get the follower" "$limit_a" "$(account "$a" .creditlimit)"

# A restart: the key stays blocked (reloaded from the error table), a new change waits too.
kill -TERM "$daemon"
wait "$daemon"
e2e_start_daemon
commit "UPDATE fno.customersv3 SET primarycontactphone = '+1 555 0199' WHERE $(where "$a")"
check_eq "after a restart the next change waits as well" "$head;$follower;$follower;$follower;" "$(rows)"
check_eq "Dataverse still has none of them" "$limit_a" "$(account "$a" .creditlimit)"
acc_id=$(account "$a" .accountid)
history() {
    local h
    h=$(dvemu_admin GET "history?table=accounts")
    jq -r "[.value[] | select(.id == \"$acc_id\") | .op] | join(\",\")" <<<"$h"
}
check_eq "the account was written once (the initial sync)" create "$(history)"

# --- the fix: the map learns on-hold 6, the queue is replayed in commit order -----------------
e2e_map_onhold_6
e2e_start_daemon
dw errors replay --all --job fno_sample >/dev/null 2>&1
check_status "replayed" 0 e2e_wait_replayed
check_status "applied" 0 e2e_wait_applied
check_eq "every row resolved" "4|4" \
    "$(psql_q "SELECT count(*) || '|' || count(*) FILTER (WHERE status = 'resolved') FROM dwasync.error")"
h=$(dvemu_admin GET "history?table=accounts")
check_eq "the account's writes in commit order (on hold, credit limit, on hold back, phone)" \
    "806380006 $limit_a,806380006 $(plus100 "$limit_a"),$(account "$a" .msdyn_onholdstatus) $(plus100 "$limit_a"),+1 555 0199" \
    "$(jq -r "[.value[] | select(.id == \"$acc_id\" and .op != \"create\") | .row |
               if .telephone1 == \"+1 555 0199\" then .telephone1
               else \"\(.msdyn_onholdstatus) \(.creditlimit)\" end] | join(\",\")" <<<"$h")"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
finish

#!/usr/bin/env bash
# Poison rows end to end, with the daemon running: in a workload of a few thousand changes,
# about 1% of the customers carry a value outside a value map (mapping), a name longer than
# Dataverse's MaxLength (mapping too: `job start` recorded the length, so nothing is sent)
# or a customer group that does not exist (missing parent). Exactly those keys land in
# dwasync.error with the right class and code, later changes to them wait behind the head,
# everything else is applied. Then the operator's fixes: data fixed and the bad head
# skipped (its waiting fix follows), the missing parent created and the rows replayed
# through the running daemon (NOTIFY). The final Dataverse state equals the staging tables;
# replaying again changes nothing.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

# A Dataverse whose account names are shorter than the mirror's: the classic length mismatch.
e2e_metadata 'attr(tables["account"], "name")["max_length"] = 30'
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
psql_q "UPDATE dwasync.table_map SET options = options" >/dev/null   # maps loaded as imported
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
on_exit "kill -9 $daemon"

check_status "initial sync applied" 0 e2e_wait_applied

# The workload: 400 new customers (both legal entities, with orders and lines), then updates
# of every existing account; 1% of the customers get each kind of poison.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT fno.sample_generate(400, 101);
UPDATE fno.customersv3 SET onholdstatus = 6                       -- not in the value map
 WHERE partytype = 'Organization' AND customeraccount::text ~ '1[0-9]7$' AND dataareaid = 'usmf';
UPDATE fno.customersv3 SET organizationname = 'A name far longer than thirty characters'
 WHERE partytype = 'Organization' AND customeraccount::text ~ '2[0-9]3$' AND dataareaid = 'usmf';
UPDATE fno.customersv3 SET customergroupid = '77'                 -- no such group
 WHERE partytype = 'Organization' AND customeraccount::text ~ '3[0-9]9$' AND dataareaid = 'demf';
UPDATE fno.customersv3 SET primarycontactphone = '+1 555 9999' WHERE partytype = 'Organization';
SQL
poisoned=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE onholdstatus = 6
    OR length(organizationname) > 30 OR customergroupid = '77'")
check_status "workload applied or parked" 0 e2e_wait_applied
# The source key of a customer's error row: its whole row (REPLICA IDENTITY FULL).
check_contains "customers' errors recorded" "t" \
    "$(psql_q "SELECT count(*) > 0 FROM dwasync.error WHERE source_table = 'customersv3'
                 AND operation = 'update'")"
check_eq "a customer's source key is its whole new row" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE source_table = 'customersv3'
                 AND operation = 'update' AND source_key IS DISTINCT FROM source_row->'new'")"
# Its old image is whole too (kept as the difference while the window waited): the row
# before the update, which differs from the new one only where the update wrote.
check_eq "a customer's old image has every column" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE source_table = 'customersv3'
                 AND operation = 'update'
                 AND (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(source_row->'old') k)
                     IS DISTINCT FROM
                     (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(source_row->'new') k)")"
onhold_heads="source_table = 'customersv3' AND class = 'mapping' AND message LIKE '%ONHOLDSTATUS%'"
check_contains "value-map heads recorded" "t" \
    "$(psql_q "SELECT count(*) > 0 FROM dwasync.error WHERE $onhold_heads")"
check_eq "a value-map head's old image is the row before: the old status, all else equal" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE $onhold_heads
                 AND (source_row->'old'->>'onholdstatus' = '6'
                      OR (source_row->'old') - 'onholdstatus' IS DISTINCT FROM (source_row->'new') - 'onholdstatus')")"
# The heads the poison itself caused (not the dependants that follow them).
poison_heads="status = 'open' AND source_table = 'customersv3' AND (class IN ('mapping', 'validation')
              OR message LIKE '%msdyn_customergroup entity%')"
check_eq "one open error per poisoned customer" "$poisoned" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE $poison_heads")"
# A customer that never reached Dataverse takes its dependants with it (its order, the
# order's lines, customers billed to it): they wait for their parent as missing-parent
# errors, and nothing else fails.
check_eq "every other open error is a missing parent" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class <> 'missing_parent'
                 AND source_table <> 'customersv3'")"
check_eq "missing parents name the parent" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'missing_parent'
                 AND message NOT LIKE '%does not exist in%'")"
check_eq "mapping errors: value outside the value map" \
    "$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE onholdstatus = 6")" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'mapping' AND message LIKE '%onholdstatus%'")"
check_eq "mapping errors: longer than the MaxLength job start recorded, never sent" \
    "$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE length(organizationname) > 30")" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'mapping'
                 AND message LIKE '%\"ORGANIZATIONNAME\"%is longer than 30 characters, the MaxLength of \"name\" in Dataverse'
                 AND payload IS NULL AND http_status IS NULL")"
check_eq "missing parents: named in the error" \
    "$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE customergroupid = '77'")" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'missing_parent' AND message LIKE '%msdyn_customergroup%'")"
check_eq "later changes of poisoned customers wait behind their head" "$poisoned" \
    "$(psql_q "SELECT count(DISTINCT key_text) FROM dwasync.error WHERE status = 'waiting'
                 AND (map_id, key_text) IN (SELECT map_id, key_text FROM dwasync.error WHERE $poison_heads)")"
dv_load accounts
dv_load cdm_companies
check_eq "every clean account got the later update" 0 "$(psql_q "
    SELECT count(*) FROM fno.customersv3 c WHERE c.partytype = 'Organization'
       AND NOT (c.onholdstatus = 6 OR length(c.organizationname) > 30 OR c.customergroupid = '77')
       AND NOT EXISTS (SELECT 1 FROM dv.accounts a WHERE a.doc->>'accountnumber' = c.customeraccount
                          AND a.doc->>'telephone1' = '+1 555 9999')")"
check_eq "no poisoned account got the later update" 0 "$(psql_q "
    SELECT count(*) FROM fno.customersv3 c
      JOIN dv.cdm_companies co ON co.doc->>'cdm_companycode' = c.dataareaid
      JOIN dv.accounts a ON a.doc->>'accountnumber' = c.customeraccount
                        AND a.doc->>'_msdyn_company_value' = co.doc->>'cdm_companyid'
     WHERE (c.onholdstatus = 6 OR length(c.organizationname) > 30 OR c.customergroupid = '77')
       AND a.doc->>'telephone1' = '+1 555 9999'")"

# The fixes. Data: correct the rows (the fixes wait behind the heads), skip the bad heads.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
UPDATE fno.customersv3 SET onholdstatus = 5 WHERE onholdstatus = 6;
UPDATE fno.customersv3 SET organizationname = left(organizationname, 30) WHERE length(organizationname) > 30;
SQL
check_status "fixes parked" 0 e2e_wait_applied
# Every parked image of such a key still carries the bad value (the whole row is stored),
# so the operator skips the key's rows up to the fix: waiting ones first, then the head,
# which promotes the fix; the daemon replays it at once (NOTIFY).
skip_until_fix() {   # skip_until_fix open|waiting
    psql_q "SELECT string_agg(id::text, ' ') FROM (
        SELECT id, status, row_number() OVER (PARTITION BY map_id, key_text
                                              ORDER BY commit_lsn DESC, position DESC, part DESC) AS newest
          FROM dwasync.error
         WHERE status IN ('open', 'waiting') AND (map_id, key_text) IN
               (SELECT map_id, key_text FROM dwasync.error
                 WHERE status = 'open' AND class IN ('mapping', 'validation'))) x
     WHERE newest > 1 AND status = '$1'"
}
waiting=$(skip_until_fix waiting)
heads=$(skip_until_fix open)
check_eq "each poisoned key has a head to skip" 20 "$(wc -w <<<"$heads")"
dw errors skip $waiting --reason "superseded by the fix in F&O" >/dev/null 2>&1
out=$(dw errors skip $heads --reason "fixed in F&O" 2>&1)
check_contains "skip says what it did" "skipped 20 errors" "$out"
check_status "the daemon replays the fixes" 0 e2e_wait_replayed
check_eq "fixed keys have nothing open" 0 "$(psql_q "SELECT count(*) FROM dwasync.error
    WHERE status IN ('open', 'waiting') AND class IN ('mapping', 'validation')")"
# Missing parent: create the group in F&O (it flows), then replay through the daemon.
psql_q "INSERT INTO fno.customergroups VALUES ('demf', '77', 'Late group', 0, 'Net30')"
check_status "parent applied" 0 e2e_wait_applied
out=$(dw errors replay --all --job fno_sample 2>&1)
check_contains "replay is handed to the running daemon" "replays them now" "$out"
e2e_wait_replayed
psql_q "SELECT status, class, source_table, count(*), min(message) FROM dwasync.error GROUP BY 1, 2, 3 ORDER BY 1, 2, 3" >"$DW_E2E_DIR/errors.txt"
show_log_on_failure "$DW_E2E_DIR/errors.txt"
check_eq "no open, waiting or replaying rows left" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status IN ('open', 'waiting', 'replaying')")"
check_eq "missing-parent rows resolved by the replay" \
    "$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE customergroupid = '77'")" \
    "$(psql_q "SELECT count(DISTINCT key_text) FROM dwasync.error WHERE class = 'missing_parent'
                 AND status = 'resolved' AND message LIKE '%msdyn_customergroup entity%'")"
check_status "everything applied" 0 e2e_wait_applied
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"

before=$(curl -sf "$DVEMU_URL/_dvemu/counters" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["rows_written"].values()))')
out=$(dw errors replay --all --job fno_sample 2>&1)
check_contains "replaying again queues nothing" "queued 0 rows" "$out"
sleep 2
after=$(curl -sf "$DVEMU_URL/_dvemu/counters" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["rows_written"].values()))')
check_eq "replaying again writes nothing" "$before" "$after"

kill -TERM $daemon; wait $daemon
check_eq "daemon stops cleanly" 0 $?
finish

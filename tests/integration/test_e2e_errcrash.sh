#!/usr/bin/env bash
# kill -9 while error rows are being written and while replays run (issue 7).
#
# 1. A paced workload of 120 transactions updating customers, in which groups of accounts
#    are poisoned one after another: an on-hold status outside the value map (mapping, no
#    request) or a move into a business unit the application user cannot write (dvemu's
#    privilege rule, 403). Every later change of a poisoned key is parked behind it, so the
#    error table grows through the run; `dwasync run` is killed three times while it grows.
#    After the restarts the error table holds exactly one row per parked change (no
#    duplicate, none missing: counted against the workload), one open head per key.
# 2. The map is fixed and the mapping errors are replayed by the daemon (dvemu slowed by its
#    'slow' fault), which is killed mid-replay; the restarted daemon finishes the queue.
# 3. The privilege rule is lifted and `dwasync errors replay --all` (no daemon: the CLI
#    replays directly) is killed mid-way; run again, it finishes.
# Afterwards: every error row resolved, exactly as many as before, the final Dataverse state
# equals the staging tables (nothing lost), and each account's history went back at most
# once per kill (a redelivery after a crash), never otherwise.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
t_start=$SECONDS

e2e_metadata '
attr(tables["account"], "msdyn_onholdstatus")["options"].append(
    {"value": 806380006, "label": "Legal hold"})'
DW_E2E_LOG_LEVEL=warn e2e_setup
e2e_load_sample
psql_q "SELECT fno.sample_generate(200, 1001)" >/dev/null
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
kill_daemon() {   # kill -9, and wait for it
    kill -9 "$daemon" 2>/dev/null
    wait "$daemon" 2>/dev/null
    daemon=
}
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_applied
dvemu_admin POST privileges \
    '{"revoke": [{"table": "accounts", "privilege": "write", "where": {"address1_stateorprovince": "ZZ"}}]}' >/dev/null
errors() { psql_q "SELECT count(*) FROM dwasync.error"; }

# --- 1. kill -9 while error rows are written ----------------------------------------------------
# Group g of accounts (customer number % 20 = g) is poisoned in transaction p of the schedule;
# a transaction first poisons its group, then updates the phone of every customer except
# those of groups still to be poisoned (so no change of a key precedes its poison).
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE schedule (grp int PRIMARY KEY, tx int NOT NULL, kind text NOT NULL);
INSERT INTO schedule VALUES (1, 5, 'mapping'), (2, 15, 'privilege'), (3, 25, 'mapping'),
    (4, 40, 'mapping'), (6, 55, 'privilege'), (7, 70, 'mapping'), (8, 85, 'mapping');
SQL
# Expected: per poisoned account, its poison and the update of the same transaction, then
# one update per later transaction.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE expected AS
SELECT c.dataareaid, c.customeraccount, s.kind, 120 - s.tx + 2 AS changes
  FROM fno.customersv3 c JOIN schedule s ON substr(c.customeraccount, 2)::int % 20 = s.grp
 WHERE c.partytype = 'Organization';
CREATE VIEW err AS
SELECT e.*, e.source_row->'new'->>'dataareaid' AS dataareaid,
       e.source_row->'new'->>'customeraccount' AS customeraccount
  FROM dwasync.error e;
SQL
total=$(psql_q "SELECT sum(changes) FROM expected")
psql -X -q -v ON_ERROR_STOP=1 >"$DW_E2E_DIR/workload.log" 2>&1 <<'SQL' &
DO $$
DECLARE
    s record;
BEGIN
    FOR t IN 1..120 LOOP
        FOR s IN SELECT * FROM schedule WHERE schedule.tx = t LOOP
            IF s.kind = 'mapping' THEN
                UPDATE fno.customersv3 SET onholdstatus = 6
                 WHERE partytype = 'Organization' AND substr(customeraccount, 2)::int % 20 = s.grp;
            ELSE
                UPDATE fno.customersv3 SET deliveryaddressstateid = 'ZZ'
                 WHERE partytype = 'Organization' AND substr(customeraccount, 2)::int % 20 = s.grp;
            END IF;
        END LOOP;
        UPDATE fno.customersv3 SET primarycontactphone = 'T' || lpad(t::text, 4, '0')
         WHERE substr(customeraccount, 2)::int % 20 NOT IN (SELECT grp FROM schedule WHERE schedule.tx > t);
        COMMIT;
        PERFORM pg_sleep(0.05);   -- paced: the kills below land while it runs
    END LOOP;
END $$;
SQL
workload=$!
kills=0
at_kill=()
t0=$SECONDS
# Each kill lands once the error table has passed a mark and before it is complete: the
# daemon is writing error rows (the workload may have committed already).
for mark in 1500 6000 11000; do
    for _ in $(seq 1 2400); do
        n=$(errors)
        [ "$n" -ge "$mark" ] && break
        sleep 0.05
    done
    if [ "$n" -ge "$mark" ] && [ "$n" -lt "$total" ]; then
        at_kill+=("$n")
        kill_daemon
        kills=$((kills + 1))
        e2e_start_daemon
    fi
done
wait $workload
check_eq "workload committed" 0 $?
show_log_on_failure "$DW_E2E_DIR/workload.log"
check_eq "the daemon was killed three times while error rows were written" 3 "$kills"
check_status "workload applied or parked after the crashes" 0 e2e_wait_applied 300
log "workload and kills: $((SECONDS - t0)) s"
final=$(errors)
log "error rows at the kills: ${at_kill[*]}, in the end $final (expected $total)"
check_eq "the kills landed while the error table grew" 1 \
    "$([ "${#at_kill[@]}" = 3 ] && [ "${at_kill[2]}" -lt "$final" ] && echo 1)"
check_eq "one error row per parked change: none lost, none twice" "$total" "$final"
check_eq "every poisoned account has its count" 0 "$(psql_q "
    SELECT count(*) FROM expected x
     WHERE x.changes <> (SELECT count(*) FROM err e WHERE e.dataareaid = x.dataareaid
                                                 AND e.customeraccount = x.customeraccount)")"
check_eq "no change is stored twice (same key and row under another position)" 0 "$(psql_q "
    SELECT count(*) - count(DISTINCT (key_text, source_row)) FROM dwasync.error")"
check_eq "one open head per poisoned key, of the right class" "$(psql_q "SELECT count(*) FROM expected")" "$(psql_q "
    SELECT count(*) FROM err e JOIN expected x USING (dataareaid, customeraccount)
     WHERE e.status = 'open' AND e.class = x.kind")"
check_eq "the heads are the poison changes" 0 "$(psql_q "
    SELECT count(*) FROM err e WHERE e.status = 'open'
       AND e.source_row->'new'->>'onholdstatus' <> '6'
       AND e.source_row->'new'->>'deliveryaddressstateid' <> 'ZZ'")"
check_eq "every other row waits behind its head" "$((total - $(psql_q "SELECT count(*) FROM expected")))" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'waiting'")"

# --- 2. kill -9 of the daemon while it replays ---------------------------------------------------
e2e_map_onhold_6
dvemu_admin POST faults '{"seed": 7, "rates": {"slow": 0.2}, "slow_ms": 100}' >/dev/null
t0=$SECONDS
e2e_start_daemon
mapping=$(psql_q "SELECT count(*) FROM dwasync.error WHERE class = 'mapping' OR (status = 'waiting'
    AND (map_id, key_text) IN (SELECT map_id, key_text FROM dwasync.error WHERE class = 'mapping'))")
check_eq "replay_errors queues every mapping row" "$mapping" \
    "$(psql_q "SELECT dwasync.replay_errors('fno_sample', NULL, NULL, 'mapping')")"
resolved() { psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'resolved'"; }
for _ in $(seq 1 1200); do
    [ "$(resolved)" -ge $((mapping / 4)) ] && break
    sleep 0.05
done
kill_daemon
done_at_kill=$(resolved)
log "daemon killed with $done_at_kill of $mapping rows replayed"
check_eq "the daemon was killed in the middle of the replay" 1 \
    "$([ "$done_at_kill" -gt 0 ] && [ "$done_at_kill" -lt "$mapping" ] && echo 1)"
e2e_start_daemon
check_status "the restarted daemon finishes the replay" 0 e2e_wait_replayed 300
check_eq "every mapping row is resolved" "$mapping" "$(resolved)"
log "daemon replay with a kill: $((SECONDS - t0)) s"
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=

# --- 3. kill -9 of a CLI replay -------------------------------------------------------------------
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
left=$(psql_q "SELECT count(*) FROM dwasync.error WHERE status IN ('open', 'waiting')")
t0=$SECONDS
"$DWASYNC_BIN" --config "$DW_E2E_CONF" errors replay --all --job fno_sample >"$DW_E2E_DIR/replay1.log" 2>&1 &
cli=$!
for _ in $(seq 1 1200); do
    [ "$(resolved)" -ge $((mapping + left / 4)) ] && break
    kill -0 $cli 2>/dev/null || break
    sleep 0.05
done
kill -9 $cli 2>/dev/null
wait $cli 2>/dev/null
# A statement the CLI sent before it died still runs to its end on the server (a COMMIT that
# resolves a batch of rows included): count once its sessions are gone. The killed CLI also
# held the job lock, which the server releases with them (meanwhile a replay would take the
# lock holder for a daemon and leave the rows queued).
for _ in $(seq 1 600); do
    [ "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dwasync%'")" = 0 ] &&
        break
    sleep 0.1
done
done_at_kill=$(( $(resolved) - mapping ))
log "CLI replay killed with $done_at_kill of $left rows replayed"
check_eq "the CLI replay was killed in the middle" 1 \
    "$([ "$done_at_kill" -gt 0 ] && [ "$done_at_kill" -lt "$left" ] && echo 1)"
check_eq "what it had not done stays queued" "$((left - done_at_kill))" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status IN ('replaying', 'waiting', 'open')")"
dvemu_admin POST faults '{"rates": {}}' >/dev/null
out=$(dw errors replay --all --job fno_sample 2>&1)
log "CLI replay with a kill: $((SECONDS - t0)) s"
check_contains "run again, it replays the rest" "replayed $((left - done_at_kill)) rows" "$out"

# --- the end state ---------------------------------------------------------------------------------
check_eq "every error row is resolved" "$total" "$(resolved)"
check_eq "no error row was added by the replays" "$total" "$(errors)"
e2e_start_daemon
check_status "the job catches up" 0 e2e_wait_applied
kill -TERM "$daemon"
wait "$daemon"
daemon=
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
rewinds=$(e2e_history_rewinds accounts telephone1)
check_eq "the history is complete" 0 $?
check_eq "each account went back at most once per kill" 1 "$([ "$rewinds" -le $((kills + 2)) ] && echo 1)"
log "test ran $((SECONDS - t_start)) s"
finish

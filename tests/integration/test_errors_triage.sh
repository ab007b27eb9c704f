#!/usr/bin/env bash
# Triage from the shell and from psql: `dwasync errors list|show|replay|skip`, the views
# (error_summary, error_detail, job_status with slot lag and throughput), NOTIFY to a
# listening session, and the roles: dwasync_triage reads the views and replays/skips but
# changes nothing else; dwasync_admin manages jobs and maps.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start

dw_mktemp work errors
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$conf"
dw() { "$DWASYNC_BIN" --config "$conf" "$@"; }

dw init >/dev/null 2>&1 || die "dwasync init failed"

psql_q "
INSERT INTO dwasync.job (name, slot_name, publication_name) VALUES ('sales', 'dwasync_sales', 'dwasync_sales');
INSERT INTO dwasync.table_group (job_id, name) VALUES (1, 'customers');
INSERT INTO dwasync.table_map (job_id, group_id, sequence, name, source_table, target_entity_set,
                               target_logical_name, key_mapping)
VALUES (1, 1, 10, 'customers', 'custtable', 'accounts', 'account', '{\"accountnumber\": \"accountnum\"}');
CREATE TABLE public.payroll (salary int);"

# Rows as the pipeline stores them (dwasync.insert_errors is what dw_errtable_insert calls).
row() { # key lsn pos class code http waiting message
    local cls=null code=null http=null
    [ "$4" != - ] && cls="\"$4\""
    [ "$5" != - ] && code="\"$5\""
    [ "$6" != - ] && http=$6
    printf '{"job_id":1,"map_id":1,"map_name":"customers","source_schema":"public","source_table":"custtable","operation":"update","source_key":{"accountnum":"%s"},"key_text":"{\\"accountnum\\":\\"%s\\"}","target_id":"accounts(accountnumber=%s)","source_row":{"new":{"accountnum":"%s","name":"Contoso %s"},"old":null},"payload":{"name":"Contoso %s","creditlimit":100},"commit_lsn":"%s","xid":42,"commit_time":"2026-11-22T10:00:00.5Z","position":%s,"class":%s,"dv_code":%s,"http_status":%s,"waiting":%s,"message":"%s"}' \
        "$1" "$1" "$1" "$1" "$1" "$1" "$2" "$3" "$cls" "$code" "$http" "$7" "$8"
}
rows="[$(row C001 0/1000 0 validation 0x80044331 400 false 'A validation error occurred.'),
$(row C001 0/2000 0 - - - true ''),
$(row C002 0/2000 1 missing_parent 0x80040217 404 false 'msdyn_customergroups(msdyn_groupid=VIP) does not exist'),
$(row C003 0/3000 0 validation 0x80044331 400 false 'A validation error occurred.'),
$(row C001 0/4000 0 - - - true '')]"
check_eq "five rows stored" 5 "$(psql_q "SELECT count(*) FROM dwasync.insert_errors('$rows')")"
check_eq "the same rows again add nothing" 0 "$(psql_q "SELECT count(*) FROM dwasync.insert_errors('$rows')")"
check_eq "statuses decided per key" "1:open 2:waiting 3:open 4:open 5:waiting" \
    "$(psql_q "SELECT string_agg(id || ':' || status, ' ' ORDER BY id) FROM dwasync.error")"

# --- views -------------------------------------------------------------------------------
check_eq "error_summary counts by class, code and status" \
    "missing_parent|0x80040217|open|1 validation|0x80044331|open|2 waiting|2" \
    "$(psql_q "SELECT string_agg(concat_ws('|', class, dv_code, status, errors), ' ' ORDER BY class NULLS LAST) FROM dwasync.error_summary WHERE job = 'sales'")"
check_eq "error_detail names the head a row waits behind" 1 \
    "$(psql_q "SELECT blocked_by FROM dwasync.error_detail WHERE id = 5")"
check_contains "error_detail pretty-prints the payload" '    "creditlimit": 100' \
    "$(psql_q "SELECT payload FROM dwasync.error_detail WHERE id = 1")"

psql_q "SELECT pg_create_logical_replication_slot('dwasync_sales', 'pgoutput')" >/dev/null
psql_q "CREATE TABLE public.wal_filler AS SELECT g FROM generate_series(1, 20000) g"
psql_q "INSERT INTO dwasync.checkpoint (job_id, confirmed_lsn, last_commit_time, last_applied_at)
        VALUES (1, '0/1', now() - interval '120 seconds', now() - interval '100 seconds')"
# The statistics rows and the view read in one transaction: one now(), whatever the clock does.
stat_rows="INSERT INTO dwasync.apply_stat (job_id, minute, rows_applied) VALUES
          (1, date_trunc('minute', now()), 5),
          (1, date_trunc('minute', now() - interval '30 minutes'), 7),
          (1, date_trunc('minute', now() - interval '2 hours'), 11)"
check_eq "job_status lag_bytes is the slot's distance to the WAL end" t \
    "$(psql_q "SELECT lag_bytes = pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn) AND lag_bytes > 0
               FROM dwasync.job_status j JOIN pg_replication_slots s USING (slot_name)")"
check_eq "job_status lag_seconds is the age of the last applied commit" t \
    "$(psql_q "SELECT lag_seconds >= 120 AND lag_seconds < 3600 FROM dwasync.job_status")"
check_eq "job_status throughput, errors and alert rule" "5|12|3|2|0|off|f" \
    "$(psql -X -qAt -v ON_ERROR_STOP=1 -c "BEGIN" -c "$stat_rows" \
        -c "SELECT concat_ws('|', rows_applied_last_minute, rows_applied_last_hour, open_errors, waiting_errors, replaying_errors, alert_rule, alert_tripped) FROM dwasync.job_status" \
        -c "COMMIT")"

# --- CLI ---------------------------------------------------------------------------------
out=$(dw errors list 2>&1)
check_contains "list shows an open error" "validation     400  0x80044331" "$out"
check_contains "list shows what a waiting row waits for" "waiting behind 1" "$out"
check_contains "list counts unresolved rows" "(5 errors)" "$out"
check_contains "list filters by code" "(2 errors)" "$(dw errors list --code 0x80044331)"
check_contains "list filters by table and status" "(2 errors)" "$(dw errors list --table custtable --status waiting)"
check_contains "list of another job is empty" "(0 errors)" "$(dw errors list --job other)"
check_status "list rejects an unknown status" 2 dw errors list --status broken

out=$(dw errors show 3)
check_contains "show prints the message" "msdyn_customergroups(msdyn_groupid=VIP) does not exist" "$out"
check_contains "show prints the commit LSN" "commit_lsn           0/2000" "$out"
check_contains "show prints the source row pretty" '"name": "Contoso C002"' "$out"
out=$(dw errors show 999 2>&1); status=$?
check_eq "show of a missing id fails" 1 "$status"
check_contains "and says so" "error 999 does not exist" "$out"
check_status "replay of a non-number is a usage error" 2 dw errors replay abc
check_status "replay without ids or --all is a usage error" 2 dw errors replay
check_status "skip without a reason is a usage error" 2 dw errors skip 3

# NOTIFY reaches a session listening on dwasync_replay (as the daemon's connection does). The
# listener sleeps until the replay is done and its sleep is cancelled; psql prints what arrived.
psql -X -qAt -c "LISTEN dwasync_replay" -c "SELECT pg_sleep(600)" -c "SELECT 1" >"$work/listen.out" 2>&1 &
listener=$!
for _ in $(seq 1 600); do
    [ "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'")" = 1 ] && break
    sleep 0.1
done
out=$(dw errors replay 5)
psql_q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'" >/dev/null
check_contains "replaying a follower queues its whole key" "queued 3 rows for replay" "$out"
check_contains "without a daemon the CLI says when it happens" \
    "no dwasync daemon is listening: the rows will be replayed when \`dwasync run\` next starts" "$out"
wait $listener
check_contains "NOTIFY delivered to the listener with the job name" \
    'Asynchronous notification "dwasync_replay" with payload "sales" received' "$(cat "$work/listen.out")"
check_eq "the head is queued, its followers wait" "1:replaying 2:waiting 5:waiting" \
    "$(psql_q "SELECT string_agg(id || ':' || status, ' ' ORDER BY id) FROM dwasync.error WHERE id IN (1, 2, 5)")"
check_contains "replaying again queues nothing" "queued 0 rows for replay" "$(dw errors replay 1 2 5)"
out=$(dw errors replay 1 999 2>&1); status=$?
check_eq "an unknown id fails the whole call" 1 "$status"
check_contains "naming it" "error 999 does not exist" "$out"

# An active runner holds the job lock (ha.h): the CLI tells the operator it acts now.
psql -X -qAt -c "SELECT dwasync.job_lock_relation(1)" -c "BEGIN" \
    -c "LOCK TABLE dwasync.job_lock_1 IN EXCLUSIVE MODE" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
daemon=$!
for _ in $(seq 1 600); do
    [ "$(psql_q "SELECT dwasync.replay_listeners('sales')")" = 1 ] && break
    sleep 0.1
done
out=$(dw errors replay --all --job sales --code 0x80044331)
check_contains "replay --all filters by code" "queued 1 row for replay" "$out"
check_contains "with a daemon the CLI says it replays now" "the active \`dwasync run\` replays them now" "$out"
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'" >/dev/null
wait $daemon 2>/dev/null
for _ in $(seq 1 600); do
    [ "$(psql_q "SELECT dwasync.replay_listeners('sales')")" = 0 ] && break
    sleep 0.1
done

out=$(dw errors skip 3 --reason "customer group VIP retired")
check_contains "skip of a head without followers" "skipped 1 error" "$out"
check_eq "skip is recorded with who and why" "skipped|postgres|customer group VIP retired" \
    "$(psql_q "SELECT concat_ws('|', status, resolved_by, skip_reason) FROM dwasync.error WHERE id = 3")"
psql_q "UPDATE dwasync.error SET status = 'open' WHERE id = 1"
out=$(dw errors skip 1 --reason "fixed by hand in Dataverse")
check_contains "skip of a head releases its followers" "2 waiting rows released for replay" "$out"
check_eq "the next follower is the head now" "1:skipped 2:replaying 5:waiting" \
    "$(psql_q "SELECT string_agg(id || ':' || status, ' ' ORDER BY id) FROM dwasync.error WHERE id IN (1, 2, 5)")"
check_contains "skip of a finished row is a note" "already skipped" "$(dw errors skip 1 --reason again)"

# --- roles -------------------------------------------------------------------------------
psql_q "UPDATE dwasync.error SET status = 'open', replay_requested_by = NULL WHERE id = 4"
psql_q "CREATE ROLE alice LOGIN IN ROLE dwasync_triage; CREATE ROLE bob LOGIN IN ROLE dwasync_admin"
as_alice() { psql -X -qAt -v ON_ERROR_STOP=1 -U alice -c "$1" 2>&1; }
as_bob() { psql -X -qAt -v ON_ERROR_STOP=1 -U bob -c "$1" 2>&1; }
check_eq "triage reads error_summary" 0 "$(as_alice "SELECT count(*) > 0 FROM dwasync.error_summary" >/dev/null; echo $?)"
check_eq "triage reads error_detail" 5 "$(as_alice "SELECT count(*) FROM dwasync.error_detail")"
check_eq "triage reads job_status" "sales|1" "$(as_alice "SELECT job || '|' || open_errors FROM dwasync.job_status")"
check_eq "triage replays" 1 "$(as_alice "SELECT dwasync.replay_error(4)")"
check_eq "triage replays in bulk" 0 "$(as_alice "SELECT dwasync.replay_errors('sales')")"
check_eq "replay requests carry the operator's name" alice \
    "$(psql_q "SELECT replay_requested_by FROM dwasync.error WHERE id = 4")"
check_eq "triage skips" 0 "$(as_alice "SELECT dwasync.skip_error(5, 'duplicate')")"
for sql in "UPDATE dwasync.table_map SET sequence = 5" \
           "DELETE FROM dwasync.error" \
           "SELECT count(*) FROM dwasync.error" \
           "UPDATE dwasync.job SET state = 'stopped'" \
           "SELECT * FROM dwasync.insert_errors('[]')" \
           "SELECT dwasync.replay_succeeded(4)" \
           "SELECT dwasync.purge_errors(0)" \
           "SELECT count(*) FROM public.payroll" \
           "CREATE TABLE public.mine (x int)" \
           "CREATE TABLE dwasync.mine (x int)"; do
    out=$(as_alice "$sql"); status=$?
    check_eq "triage refused: $sql" 1 "$status"
    check_contains "with a privilege error: $sql" "permission denied" "$out"
done
check_eq "every SECURITY DEFINER function pins its search_path" 0 \
    "$(psql_q "SELECT count(*) FROM pg_proc WHERE pronamespace = 'dwasync'::regnamespace AND prosecdef
               AND NOT coalesce(proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false)")"
check_eq "the SECURITY DEFINER functions, all for operators" \
    "job_lock_holder job_lock_relation purge_errors relink_job replay_error replay_errors replay_errors_chunk replay_listeners resolve_from_source set_job_state skip_error" \
    "$(psql_q "SELECT string_agg(proname, ' ' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'dwasync'::regnamespace AND prosecdef")"
check_eq "no dwasync function is executable by PUBLIC" 0 \
    "$(psql_q "SELECT count(*) FROM pg_proc p WHERE pronamespace = 'dwasync'::regnamespace
               AND has_function_privilege('public', p.oid, 'EXECUTE')")"

# The five queries the README gives operators run, as dwasync_triage, without error.
sed -n '/^## Triage from psql/,/^## /p' "$DWASYNC_SOURCE_DIR/README.md" |
    sed -n '/^```sql/,/^```/p' | grep -v '^```' >"$work/readme.sql"
check_eq "README has the five triage queries" 5 "$(grep -c '^-- [1-5]\.' "$work/readme.sql")"
out=$(psql -X -qAt -v ON_ERROR_STOP=1 -U alice -f "$work/readme.sql" 2>&1); status=$?
check_eq "README triage queries run as dwasync_triage" 0 "$status"
check_contains "README query 1 shows the job" "sales|stopped" "$out"

check_eq "admin changes maps of a stopped job" "" "$(as_bob "UPDATE dwasync.table_map SET sequence = 20")"
check_eq "admin reads the error table" 5 "$(as_bob "SELECT count(*) FROM dwasync.error")"
check_eq "admin may not delete errors" 1 "$(as_bob "DELETE FROM dwasync.error" >/dev/null; echo $?)"
check_eq "admin purges old finished errors" 0 "$(as_bob "SELECT dwasync.purge_errors(30)")"
check_eq "admin inherits triage" 0 "$(as_bob "SELECT dwasync.replay_errors()")"

# A superuser's apply_role_grants() (for when `dwasync init` could not create the roles)
# makes the grants of every migration, not only 045's.
chunk_fn="dwasync.replay_errors_chunk(text, text, text, text, timestamptz, integer)"
psql_q "REVOKE EXECUTE ON FUNCTION dwasync.resolve_from_source(bigint), $chunk_fn FROM dwasync_triage;
        REVOKE INSERT ON dwasync.copy_request FROM dwasync_admin;
        REVOKE EXECUTE ON FUNCTION dwasync.relink_job(text) FROM dwasync_admin"
check_contains "without its grant triage may not queue a chunk" "permission denied" \
    "$(as_alice "SELECT dwasync.replay_errors_chunk('sales', NULL, NULL, NULL, now(), 10)")"
psql_q "SELECT dwasync.apply_role_grants()" >/dev/null
check_eq "apply_role_grants() makes the later migrations' grants" "t t t t" \
    "$(psql_q "SELECT concat_ws(' ',
        has_function_privilege('dwasync_triage', 'dwasync.resolve_from_source(bigint)', 'EXECUTE'),
        has_function_privilege('dwasync_triage', '$chunk_fn', 'EXECUTE'),
        has_table_privilege('dwasync_admin', 'dwasync.copy_request', 'INSERT'),
        has_function_privilege('dwasync_admin', 'dwasync.relink_job(text)', 'EXECUTE'))")"
check_eq "triage queues a chunk" 0 \
    "$(as_alice "SELECT dwasync.replay_errors_chunk('sales', NULL, NULL, NULL, now(), 10)")"

finish

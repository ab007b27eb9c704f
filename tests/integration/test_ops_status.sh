#!/usr/bin/env bash
# dwasync status [--json]: fields present and correct against a control schema populated by
# hand (jobs, checkpoint, apply_stat, runner, error rows, a slot with WAL behind it), and
# with the error table hidden (an older control schema).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start
dw_mktemp work status
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$conf"
# Every report is as of one instant the test chose, so crossing a minute (or a slow machine)
# changes nothing; the rows below are placed relative to it.
at=$(psql_q "select now()")
st() { "$DWASYNC_BIN" --config "$conf" status --at "$at" "$@"; }

out=$(st --json 2>&1); status=$?
check_eq "status before init fails" 1 "$status"
check_contains "status before init says what to do" "run dwasync init" "$out"

"$DWASYNC_BIN" --config "$conf" init >/dev/null 2>&1 || die "init failed"
check_eq "no jobs: empty list" '{"version":1,"jobs":[]}' "$(st --json | jq -c 'del(.generated_at)')"
check_contains "no jobs: table says so" "no jobs" "$(st)"

psql_q "insert into dwasync.job (name, state, slot_name, publication_name) values
        ('crm', 'active', 'dwasync_crm', 'dwasync_crm'), ('fin', 'stopped', 'dwasync_fin', 'dwasync_fin')"
psql_q "insert into dwasync.checkpoint (job_id, confirmed_lsn, last_commit_time, last_applied_at)
        select id, '0/0', '$at'::timestamptz - interval '30 seconds', '$at'::timestamptz - interval '5 seconds'
        from dwasync.job where name = 'crm'"
psql_q "insert into dwasync.apply_stat (job_id, minute, rows_applied, rows_failed)
        select id, date_trunc('minute', '$at'::timestamptz) - interval '1 minute', 120, 3 from dwasync.job where name = 'crm'
        union all select id, date_trunc('minute', '$at'::timestamptz), 999, 9 from dwasync.job where name = 'crm'
        union all select id, date_trunc('minute', '$at'::timestamptz) - interval '2 minutes', 777, 7 from dwasync.job where name = 'crm'"
psql_q "insert into dwasync.runner (job_id, host, pid, version, status, throttled_until, throttled_total, heartbeat_at)
        select id, 'host-a', 4242, '0.1.0', 'streaming', '$at'::timestamptz + interval '60 seconds', 17, '$at'
        from dwasync.job where name = 'crm'"
psql_q "select pg_create_logical_replication_slot('dwasync_crm', 'pgoutput')" >/dev/null
psql_q "create table filler as select g from generate_series(1, 20000) g"

doc=$(st --json)
j() { jq -c "$1" <<<"$doc"; }
check_eq "version" 1 "$(j .version)"
check_eq "generated_at is ISO UTC" true "$(j '.generated_at | test("^[0-9-]{10}T[0-9:.]+Z$")')"
check_eq "jobs sorted by name" '["crm","fin"]' "$(j '[.jobs[].name]')"
check_eq "state" '"active"' "$(j '.jobs[0].state')"
check_eq "slot exists" true "$(j '.jobs[0].slot.exists')"
check_eq "slot wal_status" '"reserved"' "$(j '.jobs[0].slot.wal_status')"
check_eq "lag bytes counts the WAL behind the slot" true "$(j '.jobs[0].lag_bytes > 100000')"
check_eq "lag seconds is the age of the last applied commit" true \
    "$(j '.jobs[0].lag_seconds >= 30 and .jobs[0].lag_seconds < 3600')"
check_eq "throughput is the previous full minute" 120 "$(j '.jobs[0].throughput_last_minute.rows_applied')"
check_eq "failed rows of that minute" 3 "$(j '.jobs[0].throughput_last_minute.rows_failed')"
check_eq "rows per second" 2 "$(j '.jobs[0].throughput_last_minute.rows_per_second')"
check_eq "throttled" '"throttled"' "$(j '.jobs[0].throttling.state')"
check_eq "429 count" 17 "$(j '.jobs[0].throttling.responses_429')"
check_eq "runner" '{"host":"host-a","pid":4242,"status":"streaming"}' \
    "$(j '.jobs[0].runner | {host, pid, status}')"
check_eq "no errors yet" '[{"available":true,"open":0,"waiting":0},null]' "$(j '[.jobs[0].errors, .jobs[0].last_error]')"
check_eq "second job: no slot, no lag, no runner" '[false,null,null,"unknown"]' \
    "$(j '[.jobs[1].slot.exists, .jobs[1].lag_bytes, .jobs[1].runner, .jobs[1].throttling.state]')"
check_eq "second job: zero throughput" 0 "$(j '.jobs[1].throughput_last_minute.rows_applied')"
later=$("$DWASYNC_BIN" --config "$conf" status --json --at "$(psql_q "select '$at'::timestamptz + interval '1 minute'")")
check_eq "--at moves the report: a minute later, the then-current minute is the previous one" \
    999 "$(jq -c '.jobs[0].throughput_last_minute.rows_applied' <<<"$later")"
check_eq "a runner that heartbeats is alive" '[true,true]' "$(j '[.jobs[0].runner.alive, .jobs[0].runner_alive]')"
check_eq "a job without a runner has none alive" false "$(j '.jobs[1].runner_alive')"
check_eq "a minute without a heartbeat: not alive" '[false,false]' \
    "$(jq -c '[.jobs[0].runner.alive, .jobs[0].runner_alive]' <<<"$later")"
check_contains "the table warns of an active job with no live runner" \
    'warning: job "crm" is active but no runner is alive (last heartbeat 60 s ago)' \
    "$("$DWASYNC_BIN" --config "$conf" status --at "$(psql_q "select '$at'::timestamptz + interval '1 minute'")")"
check_eq "--at moves the ages too" true \
    "$(jq -c '((.jobs[0].runner.heartbeat_age_seconds - ('"$(j '.jobs[0].runner.heartbeat_age_seconds')"')) * 1000 | round) == 60000' <<<"$later")"

# Caught up: the slot's confirmed position at the server's: zero lag, whatever the commit age.
psql_q "select pg_replication_slot_advance('dwasync_crm', pg_current_wal_lsn())" >/dev/null
doc=$(st --json)
check_eq "caught up: lag 0 bytes, 0 s" '[0,0]' "$(j '[.jobs[0].lag_bytes, .jobs[0].lag_seconds]')"

psql_q "$(cat <<SQL
insert into dwasync.error (job_id, map_id, source_schema, source_table, operation, source_key,
       key_text, source_row, commit_lsn, position, http_status, dv_code, message, class, status,
       skip_reason, last_failed_at)
select j.id, 1, 'public', 'custtable', 'update', '{"id": 1}', '{"id":1}', '{}', '0/10', n, 400,
       '0x80040203', 'msg ' || n, 'validation', s, case when s = 'skipped' then 'r' end,
       '$at'::timestamptz - make_interval(mins => 10 - n)
  from dwasync.job j, (values ('open', 1), ('open', 2), ('waiting', 3), ('skipped', 4), ('waiting', 5)) v(s, n)
 where j.name = 'crm'
SQL
)"
doc=$(st --json)
check_eq "error counts" '{"available":true,"open":2,"waiting":2}' "$(j '.jobs[0].errors')"
check_eq "last error is the most recent failure, never a row waiting behind one" \
    '{"status":"skipped","table":"public.custtable","http_status":400,"code":"0x80040203","class":"validation","message":"msg 4"}' \
    "$(j '.jobs[0].last_error | {status, table, http_status, code, class, message}')"
check_eq "last error time is ISO UTC" true "$(j '.jobs[0].last_error.at | test("Z$")')"
check_eq "other job has none" '[0,0,null]' "$(j '[.jobs[1].errors.open, .jobs[1].errors.waiting, .jobs[1].last_error]')"

table=$(st)
check_contains "table header" "JOB              STATE" "$table"
check_contains "table row" "crm              active" "$table"
check_contains "table shows throttling and last error" "throttled  msg 4" "$table"
check_status "unknown option is a usage error" 2 st --bogus

# A control schema without the error table (before 020) still gives a status.
psql_q "alter table dwasync.error rename to error_hidden"
doc=$(st --json)
check_eq "error table absent: counts unknown" '{"available":false,"open":null,"waiting":null}' \
    "$(j '.jobs[0].errors')"
psql_q "alter table dwasync.error_hidden rename to error"
finish

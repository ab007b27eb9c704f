#!/usr/bin/env bash
# High availability: two runners compete for one job's lock (a row lock, sql/051); one is active, the
# other a standby; kill -9 of the active one hands the job to the standby; the work log
# shows the two were never active at the same time and each one's sequence is unbroken.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
harness=$DWASYNC_BUILD_DIR/bin/dw_ops_harness
pg_start
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$DW_PG_DIR/dw.conf"
"$DWASYNC_BIN" --config "$DW_PG_DIR/dw.conf" init >/dev/null 2>&1 || die "init failed"
psql_q "insert into dwasync.job (id, name, slot_name, publication_name) overriding system value
        values (42, 'crm', 'dw_crm', 'dw_crm'), (43, 'fin', 'dw_fin', 'dw_fin')"
psql_q "create table ha_log (id bigserial primary key, pid int not null, n bigint not null,
        at timestamptz not null default clock_timestamp())"
dw_mktemp work ha

"$harness" ha "$DW_PG_CONNINFO" 42 200 >"$work/a.out" 2>"$work/a.err" & a=$!
on_exit "kill -9 $a"
says() { grep -qx "$2" "$1"; }   # says FILE WORD: the runner printed WORD last
wait_for 30 says "$work/a.out" active && pass "first runner became active" || fail "first runner became active"
"$harness" ha "$DW_PG_CONNINFO" 42 200 >"$work/b.out" 2>"$work/b.err" & b=$!
on_exit "kill $b"
wait_for 30 says "$work/b.out" standby
sleep 1
check_eq "second runner stays standby while the first lives" "standby" "$(cat "$work/b.out")"
before=$(psql_q "select count(*) from ha_log where pid = $b")
check_eq "standby wrote nothing" 0 "$before"
# A different job is independent.
"$harness" ha "$DW_PG_CONNINFO" 43 200 >"$work/c.out" 2>/dev/null & c=$!
wait_for 30 says "$work/c.out" active && pass "another job's runner is active beside them" || fail "job 43 runner active"
kill "$c"; wait "$c" 2>/dev/null

kill -9 "$a"; wait "$a" 2>/dev/null
wait_for 30 says "$work/b.out" active && pass "standby took over after kill -9" || fail "standby took over"
b_wrote() { [ "$(psql_q "select count(*) > 0 from ha_log where pid = $b")" = t ]; }
wait_for 30 b_wrote
check_eq "no overlap: every row of A precedes every row of B" t \
    "$(psql_q "select max(at) filter (where pid = $a) < min(at) filter (where pid = $b) from ha_log")"
check_eq "B's sequence is unbroken" t \
    "$(psql_q "select count(*) = max(n) from ha_log where pid = $b")"
check_eq "runner row names the new active process" "$b harness" \
    "$(psql_q "select pid || ' ' || status from dwasync.runner where job_id = 42")"
check_eq "B's lock session holds the job lock" "dwasync job lock" \
    "$(psql_q "select application_name from dwasync.job_lock_holder(42)")"

# A clean stop releases the lock at once: a new runner becomes active.
kill -TERM "$b"; wait "$b"
check_eq "clean stop exits 0" 0 $?
check_eq "clean stop released the lock" 0 \
    "$(psql_q "select count(*) from dwasync.job_lock_holder(42)")"
finish

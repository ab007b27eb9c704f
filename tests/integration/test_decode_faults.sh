#!/usr/bin/env bash
# dwasync decode under faults: an idle publication with writes elsewhere does not pin WAL
# (the keepalive's WAL end is confirmed), an immediate server restart mid-stream is survived
# without losing changes, types created mid-stream are resolved, and an invalidated slot or
# a wal_level below logical stops with advice.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start "max_slot_wal_keep_size = 64MB" "wal_keep_size = 0" "max_wal_size = 64MB"
dw_mktemp work faults
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\nstatus_interval_ms = 500\nreconnect_max_ms = 1000\n' \
    "$DW_PG_CONNINFO" >"$conf"
decode() { "$DWASYNC_BIN" --config "$conf" decode "$@"; }

psql_q "CREATE TABLE idle_t (id int PRIMARY KEY)"
psql_q "CREATE TABLE busy (id int PRIMARY KEY, filler text)"
psql_q "CREATE TABLE stream_t (id int PRIMARY KEY, v text)"
psql_q "CREATE PUBLICATION idlepub FOR TABLE idle_t"
psql_q "CREATE PUBLICATION streampub FOR TABLE stream_t"
decode --publication idlepub --slot idle --create-slot --until-caught-up 2>/dev/null
decode --publication idlepub --slot unread --create-slot --until-caught-up 2>/dev/null

# --- idle publication, busy database ---
"$DWASYNC_BIN" --config "$conf" decode --publication idlepub --slot idle >"$work/idle.jsonl" \
    2>"$work/idle.err" &
idle_pid=$!
on_exit "kill $idle_pid"
psql_q "INSERT INTO busy SELECT i, repeat(md5(i::text), 20) FROM generate_series(1, 30000) i"
after=$(psql_q "SELECT pg_current_wal_lsn()")
confirmed_past() {
    [ "$(psql_q "SELECT confirmed_flush_lsn >= '$after' FROM pg_replication_slots
                  WHERE slot_name = 'idle'")" = t ]
}
wait_for 60 confirmed_past
check_eq "idle slot confirmed past the unrelated writes" 0 $?
psql_q "CHECKPOINT"
retained() {
    psql_q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
            FROM pg_replication_slots WHERE slot_name = '$1'"
}
small_retention() { [ "$(retained idle)" -lt 4000000 ]; }
wait_for 60 small_retention
check_eq "idle slot retains little WAL (restart_lsn advanced)" 0 $?
check_eq "an unread slot would have retained it all" 1 "$([ "$(retained unread)" -gt 10000000 ] && echo 1)"
check_eq "nothing was printed for the idle publication" 0 "$(wc -l <"$work/idle.jsonl")"
kill -TERM $idle_pid
wait $idle_pid
check_eq "decode ends cleanly on SIGTERM" 0 $?
psql_q "SELECT pg_drop_replication_slot('unread')" >/dev/null

# --- immediate restart mid-stream ---
decode --publication streampub --slot s --create-slot --until-caught-up 2>/dev/null
"$DWASYNC_BIN" --config "$conf" decode --publication streampub --slot s >"$work/stream.jsonl" \
    2>"$work/stream.err" &
stream_pid=$!
on_exit "kill $stream_pid"
for i in $(seq 1 20); do
    psql_q "INSERT INTO stream_t SELECT g, 'batch $i' FROM generate_series($((i * 100 - 99)), $((i * 100))) g"
done
half() { [ "$(wc -l <"$work/stream.jsonl")" -ge 500 ]; }
wait_for 60 half
pg_restart immediate
for i in $(seq 21 30); do
    psql_q "INSERT INTO stream_t SELECT g, 'batch $i' FROM generate_series($((i * 100 - 99)), $((i * 100))) g"
done
all_seen() { [ "$(jq -r .key.id "$work/stream.jsonl" | sort -u | wc -l)" -ge 3000 ]; }
wait_for 120 all_seen
check_eq "every row committed before and after the restart was decoded" 3000 \
    "$(jq -r .key.id "$work/stream.jsonl" | sort -u | wc -l)"
check_contains "the stream reconnected" "streaming from" "$(tail -5 "$work/stream.err")"
# A domain created while streaming is typed by its base type (looked up when announced).
psql_q "CREATE DOMAIN qty AS numeric(10, 2); CREATE TYPE state AS ENUM ('open', 'closed');
        ALTER TABLE stream_t ADD COLUMN q qty, ADD COLUMN st state"
psql_q "INSERT INTO stream_t VALUES (99999, 'typed', 12.50, 'open')"
typed_seen() { grep -q '"key":{"id":99999}' "$work/stream.jsonl"; }
wait_for 60 typed_seen
check_contains "a domain created mid-stream is typed by its base type" '"q":12.50,"st":"open"' \
    "$(grep '"key":{"id":99999}' "$work/stream.jsonl")"
# A longer outage: reconnect attempts fail for a while (backoff), then the stream resumes.
pg_stop
sleep 3
pg_restart fast
psql_q "INSERT INTO stream_t VALUES (99998, 'after outage', 1, 'closed')"
outage_seen() { grep -q '"key":{"id":99998}' "$work/stream.jsonl"; }
wait_for 60 outage_seen
check_eq "the stream resumed after the server was down" 0 $?
kill -TERM $stream_pid
wait $stream_pid
check_eq "decode still healthy after the restart" 0 $?

# --- invalidated slot ---
decode --publication streampub --slot doomed --create-slot --until-caught-up 2>/dev/null
psql_q "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"
psql_q "SELECT pg_reload_conf()" >/dev/null
for i in 1 2 3 4 5 6; do
    psql_q "INSERT INTO busy SELECT i, repeat(md5(i::text), 20) FROM generate_series($((i * 100000)), $((i * 100000 + 5000))) i"
    psql_q "SELECT pg_switch_wal()" >/dev/null
done
psql_q "CHECKPOINT"
lost() { psql_q "CHECKPOINT"; [ "$(psql_q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'doomed'")" = lost ]; }
if wait_for 30 lost; then
    out=$(decode --publication streampub --slot doomed --until-caught-up 2>&1); st=$?
    check_eq "invalidated slot stops decode" 1 "$st"
    check_contains "invalidated slot is named" 'replication slot \"doomed\" is invalidated' "$out"
    check_contains "the message says how to recover" "Drop the slot" "$out"
else
    fail "could not invalidate a slot for the test" "wal_status: $(psql_q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'doomed'")"
fi

# --- wal_level below logical ---
psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
psql_q "ALTER SYSTEM SET wal_level = replica"
pg_restart fast
out=$(decode --publication streampub --slot s --create-slot --until-caught-up 2>&1); st=$?
check_eq "wal_level replica stops decode" 1 "$st"
check_contains "wal_level problem is named" 'has wal_level \"replica\"' "$out"
check_contains "and the fix is given" 'Set wal_level = logical' "$out"
finish

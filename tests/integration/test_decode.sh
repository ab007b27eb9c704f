#!/usr/bin/env bash
# dwasync decode on a private cluster: what comes out equals what was committed (the rows
# rebuilt from the decoded changes equal to_jsonb of the table), a run stopped in the middle
# and restarted loses nothing, bad names and missing objects give clear errors, and the
# initial sync copies a table consistently with the slot and restarts cleanly.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start
export PGTZ=UTC
dw_mktemp work decode
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\nstatus_interval_ms = 500\nsnapshot_fetch_rows = 100\n' \
    "$DW_PG_CONNINFO" >"$conf"
state() { python3 "$DWASYNC_SOURCE_DIR/tests/harness/decode_state.py" "$@"; }
decode() { "$DWASYNC_BIN" --config "$conf" decode "$@"; }
types="code=bpchar,created=ts,modified=tstz,data=bytea,d=date"

psql_q "CREATE TABLE custtable (
    id int PRIMARY KEY, code char(10), name text, amount numeric(32,6), big numeric,
    qty int8, flag bool, created timestamp, modified timestamptz, d date, payload jsonb,
    data bytea, tags text[], ratio float8)"
psql_q "CREATE TABLE other (id int PRIMARY KEY, v text)"
psql_q "CREATE PUBLICATION pub FOR TABLE custtable"
out=$(decode --publication pub --slot main --create-slot --until-caught-up 2>&1)
check_eq "creating the slot prints nothing" "" "$(grep -v 'level=info' <<<"$out")"
out=$(decode --publication pub --slot reference --create-slot --until-caught-up 2>&1)

psql_q "INSERT INTO custtable
    SELECT i, 'C' || i, CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'ünïcødé 日本 \"q\" \\ b'
        WHEN 3 THEN E'line\nbreak\ttab' ELSE repeat('x', i) END,
        (i * 1234.567891)::numeric(32,6), ('123456789012345678901234567890.' || i)::numeric,
        i::int8 * 1000000000000, i % 2 = 0,
        timestamp '1969-07-20 20:17:40' + i * interval '37 days 1 second',
        timestamptz '2026-11-22 10:00:00.123456+02' - i * interval '1 hour',
        date '0044-03-15 BC' + i * 1000,
        jsonb_build_object('i', i, 'nested', jsonb_build_array(1.50, 'x', null)),
        decode(md5(i::text), 'hex'), ARRAY['a' || i, 'b,c', NULL], i / 7.0
    FROM generate_series(1, 400) i"
psql_q "UPDATE custtable SET amount = -amount, name = name || '!' WHERE id % 3 = 0"
psql_q "UPDATE custtable SET id = id + 1000 WHERE id % 50 = 0"
psql_q "DELETE FROM custtable WHERE id % 7 = 0"
psql_q "INSERT INTO other SELECT i, 'not published' FROM generate_series(1, 100) i"
psql_q "BEGIN; INSERT INTO custtable (id, name) VALUES (5000, 'in txn');
        UPDATE custtable SET flag = NULL WHERE id < 20; COMMIT"
total=$(psql_q "SELECT count(*) FROM custtable")

# Stop in the middle (inside a transaction), then continue: nothing may be missing.
decode --publication pub --slot main --limit 300 >"$work/part1.jsonl" 2>"$work/part1.err"
check_eq "first run stops at --limit" 300 "$(wc -l <"$work/part1.jsonl")"
decode --publication pub --slot main --until-caught-up >"$work/part2.jsonl" 2>"$work/part2.err"
check_eq "decode exits 0" 0 $?
decode --publication pub --slot reference --until-caught-up >"$work/ref.jsonl" 2>/dev/null
check_eq "reference slot saw every change" 0 $?
check_eq "the restarted run resumed where the first one was confirmed: no change lost" \
    "$(jq -r .lsn "$work/ref.jsonl" | sort -u)" \
    "$(cat "$work/part1.jsonl" "$work/part2.jsonl" | jq -r .lsn | sort -u)"
check_eq "unpublished table never appears" "" "$(jq -r 'select(.table != "custtable") | .table' "$work/ref.jsonl")"

expected=$(psql_q "SELECT to_jsonb(c) FROM custtable c" | state table "$types")
check_eq "table has the rows" "$total" "$(wc -l <<<"$expected")"
check_eq "decoded changes rebuild exactly the committed rows (to_jsonb)" "$expected" \
    "$(state apply custtable <"$work/ref.jsonl")"
check_eq "the restarted stream rebuilds them too" "$expected" \
    "$(cat "$work/part1.jsonl" "$work/part2.jsonl" | state apply custtable)"
check_eq "a fully confirmed slot has nothing more" "" \
    "$(decode --publication pub --slot main --until-caught-up 2>/dev/null)"

line=$(jq -c 'select(.op == "update" and .old != null)' "$work/ref.jsonl" | head -1)
check_contains "key-changing update names the old key" '"old":{"id":50}' "$line"
check_contains "numeric with 30+ digits exactly" \
    '"big":123456789012345678901234567890.1,' "$(head -1 "$work/ref.jsonl")"
check_eq "every line has the documented fields" \
    '["commit_time","key","lsn","new","old","op","schema","table","unchanged","xid"]' \
    "$(head -1 "$work/ref.jsonl" | jq -c 'keys')"

# Operator-facing errors.
out=$(decode --publication 'Bad-Name' --slot main 2>&1); st=$?
check_eq "bad publication name exits 1" 1 "$st"
check_contains "bad publication name says why" 'invalid publication name \"Bad-Name\"' "$out"
out=$(decode --publication pub --slot "x;DROP" 2>&1)
check_contains "bad slot name refused before reaching the server" 'invalid slot name' "$out"
out=$(decode --publication pub --slot nosuch --until-caught-up 2>&1); st=$?
check_eq "missing slot exits 1" 1 "$st"
check_contains "missing slot names it and hints" 'replication slot \"nosuch\" does not exist' "$out"
check_contains "missing slot hint" '--create-slot' "$out"
out=$(decode --publication nopub --slot main --until-caught-up 2>&1)
check_contains "missing publication" 'publication \"nopub\" does not exist' "$out"
psql_q "SELECT pg_create_logical_replication_slot('textslot', 'test_decoding')" >/dev/null
out=$(decode --publication pub --slot textslot --until-caught-up 2>&1)
check_contains "slot with another plugin refused" 'plugin \"test_decoding\"' "$out"
psql_q "CREATE DATABASE otherdb"
psql_q "CREATE PUBLICATION pub" -d otherdb
out=$("$DWASYNC_BIN" --config <(printf '[source]\nconninfo = %s\n' "${DW_PG_CONNINFO/dbname=postgres/dbname=otherdb}") \
    decode --publication pub --slot main --until-caught-up 2>&1)
check_contains "slot of another database refused" 'belongs to database \"postgres\"' "$out"
check_status "usage error exits 2" 2 "$DWASYNC_BIN" --config "$conf" decode --slot x

# Initial sync: rows copied in the slot's snapshot, then the stream continues after it.
psql_q "CREATE TABLE snap (id int PRIMARY KEY, v text)"
psql_q "INSERT INTO snap SELECT i, 'v' || i FROM generate_series(1, 1000) i"
psql_q "CREATE PUBLICATION snappub FOR TABLE snap"
decode --publication snappub --slot snapslot --initial-sync public.snap --limit 250 \
    >"$work/snap0.jsonl" 2>/dev/null
check_eq "interrupted initial sync stopped at the limit" 250 "$(wc -l <"$work/snap0.jsonl")"
# A copy killed midway (kill -9, nothing confirmed) also starts over cleanly.
psql_q "CREATE TABLE bigsnap (id int PRIMARY KEY, v text)"
psql_q "INSERT INTO bigsnap SELECT i, repeat('v', 200) FROM generate_series(1, 200000) i"
psql_q "ALTER PUBLICATION snappub ADD TABLE bigsnap"
"$DWASYNC_BIN" --config "$conf" decode --publication snappub --slot snapslot \
    --initial-sync public.snap,public.bigsnap >"$work/killed.jsonl" 2>/dev/null &
killed_pid=$!
for _ in $(seq 1 300); do [ "$(wc -l <"$work/killed.jsonl")" -ge 2000 ] && break; sleep 0.1; done
kill -9 $killed_pid
wait $killed_pid 2>/dev/null
check_eq "the copy was killed midway" 1 "$(( $(wc -l <"$work/killed.jsonl") < 201000 ))"
psql_q "ALTER PUBLICATION snappub DROP TABLE bigsnap"
psql_q "INSERT INTO snap VALUES (1001, 'between')"
decode --publication snappub --slot snapslot --initial-sync snap --until-caught-up \
    >"$work/snap1.jsonl" 2>"$work/snap1.err"
check_eq "restarted initial sync exits 0" 0 $?
check_eq "restarted initial sync copies every row once" "1001 1001" \
    "$(jq -r .key.id "$work/snap1.jsonl" | sort -u | wc -l) $(wc -l <"$work/snap1.jsonl")"
check_eq "snapshot rows are inserts at one consistent point" "1" \
    "$(jq -r '[.op, .lsn] | join(" ")' "$work/snap1.jsonl" | sort -u | wc -l)"
psql_q "UPDATE snap SET v = 'after' WHERE id = 1; INSERT INTO snap VALUES (1002, 'after')"
decode --publication snappub --slot snapslot --until-caught-up >"$work/snap2.jsonl" 2>/dev/null
check_eq "after the sync the stream has only later changes" "update 1|insert 1002" \
    "$(jq -r '[.op, (.key.id|tostring)] | join(" ")' "$work/snap2.jsonl" | paste -sd'|')"
check_eq "sync plus stream equals the table" \
    "$(psql_q "SELECT to_jsonb(s) FROM snap s" | state table "")" \
    "$(cat "$work/snap1.jsonl" "$work/snap2.jsonl" | state apply snap)"
out=$(decode --publication snappub --slot snapslot2 --initial-sync public.nosuch 2>&1)
check_contains "initial sync of a missing table" 'table \"public\".\"nosuch\" does not exist' "$out"
finish

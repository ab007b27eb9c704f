#!/usr/bin/env bash
# The harness itself: clusters are private and concurrent, removed on success, on failure
# and when the test shell is killed outright.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

dw_mktemp work harness

# A failing test still removes its cluster (the EXIT trap runs on error exits).
bash -c "source '$DWASYNC_SOURCE_DIR/tests/harness/lib.sh'; pg_start; echo \$PGDATA > '$work/failed-dir'; exit 3" >/dev/null 2>&1
check_eq "failing test exits with its status" 3 $?
dir=$(cat "$work/failed-dir")
check_status "failing test's cluster removed" 1 test -e "$dir"

# A test shell killed with SIGKILL: the watcher stops the server and removes the dir.
bash -c "source '$DWASYNC_SOURCE_DIR/tests/harness/lib.sh'; pg_start; echo \$PGDATA \$PGPORT > '$work/killed'; sleep 600" >/dev/null 2>&1 &
victim=$!
for _ in $(seq 1 100); do [ -s "$work/killed" ] && break; sleep 0.2; done
read -r kdir kport <"$work/killed"
kill -9 $victim; wait $victim 2>/dev/null
for _ in $(seq 1 50); do [ -e "$kdir" ] || break; sleep 0.2; done
check_status "killed test's cluster removed" 1 test -e "$kdir"
check_status "killed test's server stopped" 2 pg_isready -q -h 127.0.0.1 -p "$kport"

# Two clusters at once, each with its own port, socket dir and data.
pg_start
first_port=$PGPORT first_host=$PGHOST
psql_q "create table marker(x int)"
( pg_start; psql_q "select count(*) from pg_tables where tablename = 'marker'" >"$work/second"; echo "$PGPORT" >>"$work/second" )
check_eq "second cluster is separate" 0 "$(head -1 "$work/second")"
check_status "second cluster on another port" 1 test "$(tail -1 "$work/second")" = "$first_port"
check_eq "first cluster unaffected" "$first_host" "$PGHOST"
check_eq "wal_level is logical" logical "$(psql_q 'show wal_level')"
check_eq "max_replication_slots >= 10" 1 "$(psql_q "select (setting::int >= 10)::int from pg_settings where name = 'max_replication_slots'")"

finish

#!/usr/bin/env bash
# dwasync init: installs the control schema on a private cluster, twice is a no-op, a newer
# schema is refused; the harness removes the cluster afterwards; .pgpass passwords work.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start

dw_mktemp work init
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$conf"

out=$("$DWASYNC_BIN" --config "$conf" init 2>&1)
check_status "init exits 0" 0 test $? -eq 0
check_contains "first init applies migrations" "upgraded from version 0" "$out"
latest=$(ls "$DWASYNC_SOURCE_DIR"/sql/[0-9]*.sql | sed 's|.*/||; s|_.*||' | sort -n | tail -1 | sed 's/^0*//')
count=$(ls "$DWASYNC_SOURCE_DIR"/sql/[0-9]*.sql | wc -l)
check_eq "schema version is the newest migration" "$latest" \
    "$(psql_q 'select max(version) from dwasync.schema_version')"

before=$(psql_q "select string_agg(version || ':' || applied_at, ',' order by version) from dwasync.schema_version")
out=$("$DWASYNC_BIN" --config "$conf" init 2>&1)
check_contains "second init is a no-op" "up to date at version $latest" "$out"
check_eq "second init changed nothing" "$before" \
    "$(psql_q "select string_agg(version || ':' || applied_at, ',' order by version) from dwasync.schema_version")"

# Concurrent inits on a fresh database serialize on the advisory lock.
psql_q "create database concurrent"
printf '[source]\nconninfo = %s\n' "${DW_PG_CONNINFO/dbname=postgres/dbname=concurrent}" >"$work/c.conf"
"$DWASYNC_BIN" --config "$work/c.conf" init >/dev/null 2>&1 & p1=$!
"$DWASYNC_BIN" --config "$work/c.conf" init >/dev/null 2>&1 & p2=$!
wait $p1; s1=$?; wait $p2; s2=$?
check_eq "two concurrent inits both succeed" "0 0" "$s1 $s2"
check_eq "concurrent inits applied each migration once" "$count" \
    "$(psql_q 'select count(*) from dwasync.schema_version' -d concurrent)"

# A schema newer than the binary is refused.
psql_q "insert into dwasync.schema_version values (99999, '99999_future.sql')"
out=$("$DWASYNC_BIN" --config "$conf" init 2>&1); status=$?
check_eq "newer schema refused" 1 "$status"
check_contains "refusal says why" "at version 99999 but this dwasync knows versions up to $latest" "$out"
psql_q "delete from dwasync.schema_version where version = 99999"

# The control database may be reached with a password from a .pgpass file.
printf '127.0.0.1:%s:*:%s:%s\n' "$PGPORT" "$DW_PG_PASSWORD_ROLE" "$DW_PG_PASSWORD" >"$work/pgpass"
chmod 600 "$work/pgpass"
psql_q "create database pwdb owner dw_password"
printf '[source]\nconninfo = host=127.0.0.1 port=%s user=%s dbname=pwdb\n' "$PGPORT" "$DW_PG_PASSWORD_ROLE" >"$work/pw.conf"
out=$(PGPASSFILE=$work/pgpass "$DWASYNC_BIN" --config "$work/pw.conf" init 2>&1)
check_contains "init with a .pgpass password" "upgraded from version 0" "$out"
out=$(PGPASSFILE=/dev/null "$DWASYNC_BIN" --config "$work/pw.conf" init 2>&1); status=$?
check_eq "init without the password fails" 1 "$status"
check_contains "failure is a clear connection error" "cannot connect to postgres" "$out"

# Bad config: clear error, non-zero exit, nothing done.
printf '[source]\nconninfo = x\nbogus = 1\n' >"$work/bad.conf"
out=$("$DWASYNC_BIN" --config "$work/bad.conf" init 2>&1); status=$?
check_eq "bad config exits 1" 1 "$status"
check_contains "bad config names file and line" "bad.conf:3: unknown key \"bogus\"" "$out"

finish

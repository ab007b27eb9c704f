#!/usr/bin/env bash
# tests/harness/demo.sh [--keep] - the main job end to end on a fresh Debian 12 machine:
# installs dependencies, builds, starts a private Postgres (and, as the pipeline lands,
# dvemu with the sample Dataverse metadata), installs the control schema, and prints a
# summary. Everything is removed at the end unless --keep is given, in which case the
# services stay up and the script prints how to reach them (stop them with Ctrl-C).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
keep=0
[ "${1:-}" = "--keep" ] && keep=1

bash "$src/tests/harness/deps.sh"
cmake -S "$src" -B "$src/build" >/dev/null
cmake --build "$src/build" -j"$(nproc)" >/dev/null

export DWASYNC_SOURCE_DIR=$src DWASYNC_BUILD_DIR=$src/build
source "$src/tests/harness/lib.sh"
set +e

echo "== starting a private PostgreSQL 15 (wal_level=logical)"
pg_start
dw_mktemp demo demo
conf=$demo/dwasync.conf
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$conf"

echo "== dwasync init: installing the control schema"
"$DWASYNC_BIN" --config "$conf" init || die "dwasync init failed"

echo
echo "== summary"
echo "control schema version: $(psql_q 'select max(version) from dwasync.schema_version')"
psql -X -c "select version, name, applied_at from dwasync.schema_version order by version"

if [ "$keep" = 1 ]; then
    echo "services are up. config: $conf"
    echo "psql: psql -h $PGHOST -p $PGPORT -U postgres"
    echo "press Ctrl-C to stop and remove everything"
    while sleep 3600; do :; done
fi
echo "demo finished; everything it started has been removed"

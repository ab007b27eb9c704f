#!/usr/bin/env bash
# tests/harness/demo.sh [--keep] - the main job end to end on a fresh Debian 12 machine:
# installs dependencies, builds, starts a private PostgreSQL 15 holding a sample F&O
# staging mirror (two legal entities) and dvemu with the sample Dataverse metadata, imports
# the sample job's map file, starts the job with an initial sync, runs the daemon, applies a
# burst of live changes, and prints what landed in Dataverse. Everything it started is
# removed at the end; with --keep it stays up until Ctrl-C.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
keep=0
[ "${1:-}" = "--keep" ] && keep=1

echo "== installing dependencies and building (first run takes a few minutes)"
bash "$src/tests/harness/deps.sh"
cmake -S "$src" -B "$src/build" >/dev/null
cmake --build "$src/build" -j"$(nproc)" >/dev/null

export DWASYNC_SOURCE_DIR=$src DWASYNC_BUILD_DIR=$src/build
source "$src/tests/harness/lib.sh"
set +e

echo "== starting PostgreSQL 15 (wal_level=logical) and dvemu, the Dataverse emulator"
e2e_setup
echo "   staging database: psql -h $PGHOST -p $PGPORT -U postgres"
echo "   Dataverse (dvemu): $DVEMU_URL/api/data/v9.2/"
echo "== loading the sample F&O mirror: legal entities usmf and demf, 100 customers each"
e2e_load_sample
psql -X -qAt -c "SELECT '   ' || count(*) || ' customers, ' || (SELECT count(*) FROM fno.salesorderlines) || ' order lines' FROM fno.customersv3"

echo "== the sample job's table maps, in sequence order (parents first)"
dw map list fno_sample | sed 's/^/   /'
echo "== dwasync job start fno_sample --initial-sync"
dw job start fno_sample --initial-sync | sed 's/^/   /'

echo "== dwasync run: initial sync, then streaming (log in $DW_E2E_DIR/daemon.log)"
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
on_exit "kill -TERM $daemon; wait $daemon"
e2e_wait_applied 300 || die "the initial sync did not finish; see $DW_E2E_DIR/daemon.log"
echo "   initial sync applied"

echo "== a burst of live changes in F&O: new customers with orders, updates, a deletion"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT fno.sample_generate(25, 101);
UPDATE fno.customersv3 SET creditlimit = creditlimit * 2, onholdstatus = 1
 WHERE customeraccount BETWEEN 'C0000001' AND 'C0000010' AND partytype = 'Organization';
UPDATE fno.currencies SET symbol = 'US$' WHERE currencycode = 'USD';
DELETE FROM fno.salesorderlines WHERE salesordernumber = 'SO00000003';
DELETE FROM fno.salesorderheaders WHERE salesordernumber = 'SO00000003';
SQL
e2e_wait_applied 120 || die "live changes were not applied; see $DW_E2E_DIR/daemon.log"
echo "   applied"

echo
echo "== what Dataverse holds now (rows per table)"
for s in $DW_SAMPLE_SETS; do printf '   %-24s %6s\n' "$s" "$(e2e_rows "$s")"; done
echo
echo "== checked against the staging tables, every mapped column of every row:"
m=$(e2e_mismatches 2>/dev/null)
[ "$m" = 0 ] && echo "   identical" || echo "   $m rows differ"
echo
echo "== dwasync status"
dw status | sed 's/^/   /'
echo
echo "== errors (dwasync errors list)"
dw errors list | sed 's/^/   /'

if [ "$keep" = 1 ]; then
    echo
    echo "everything is still running. config: $DW_E2E_CONF"
    echo "try: $DWASYNC_BIN --config $DW_E2E_CONF status"
    echo "press Ctrl-C to stop and remove everything (or, from another terminal: kill $$)"
    # sleep in the background: a TERM to this shell runs its cleanup at once
    while :; do sleep 3600 & wait $!; done
fi
echo
echo "demo finished; everything it started has been removed"

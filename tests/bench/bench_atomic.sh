#!/usr/bin/env bash
# tests/bench/bench_atomic.sh - what atomic groups cost: the sample job applying sales
# orders, each order and its lines committed in one transaction, with the order and line
# maps atomic (one changeset per transaction) and, as the peer measured in the same run, not
# atomic (coalesced across transactions into full $batch requests). Not a test: it prints
# figures. Sizes come from the environment:
#   ORDERS=1000 LINES=5 ROUNDS=3   orders per round, lines per order, rounds per mode
# Each round commits its orders while no daemon runs, then times a daemon catching up.
# Printed per mode: median seconds from the daemon's start to applied, rows/s, Dataverse
# write requests per 1,000 rows; then the ratio atomic / not atomic.
set -uo pipefail
export DWASYNC_SOURCE_DIR=${DWASYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
ORDERS=${ORDERS:-1000} LINES=${LINES:-5} ROUNDS=${ROUNDS:-3}

e2e_setup --limit-requests 100000000 --limit-exec-ms 2000000000 >/dev/null
e2e_load_sample
daemon=

requests() { curl -sf "$DVEMU_URL/_dvemu/counters" | python3 -c '
import json, sys
c = json.load(sys.stdin)["requests"]
print(sum(n for k, n in c.items() if k.split()[0] in ("POST", "PATCH", "DELETE") and "token" not in k))'; }
now() { date +%s.%N; }

set_maps() {   # set_maps true|false [--initial-sync]: the job with orders and lines atomic or not
    dw job stop fno_sample >/dev/null 2>&1
    python3 - "$DW_SAMPLE_DIR/fno-sample.map.json" "$1" "$DW_E2E_DIR/bench.map.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for g in d["groups"]:
    for m in g["maps"]:
        if m["name"] in ("sales_orders", "sales_order_lines"):
            m["options"]["atomic"] = sys.argv[2] == "true"
json.dump(d, open(sys.argv[3], "w"))
PY
    dw map import "$DW_E2E_DIR/bench.map.json" >/dev/null || die "map import failed"
    dw job start fno_sample ${2:-} >/dev/null 2>&1 || die "job start failed"
}
start_daemon() {
    "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >>"$DW_E2E_DIR/daemon.log" 2>&1 &
    daemon=$!
    on_exit "kill -9 $daemon 2>/dev/null"
}
stop_daemon() { kill -TERM "$daemon"; wait "$daemon"; }

# run_round N MODE: commits workload N while no daemon runs, then starts one and times how
# long it takes to apply it all (the same start-up cost in both modes); appends
# "MODE seconds requests" to the results.
run_round() {
    local req0 t0 t1 last
    cat >"$DW_E2E_DIR/round.sql" <<SQL
DO \$\$
DECLARE cust text; cur text;
BEGIN
    SELECT orderingcustomeraccountnumber, currencycode INTO cust, cur
      FROM fno.salesorderheaders WHERE dataareaid = 'usmf' LIMIT 1;
    FOR o IN 1..$ORDERS LOOP
        INSERT INTO fno.salesorderheaders VALUES ('usmf', 'B$1-' || o, cust, cur, 'Bench', 1, 1);
        INSERT INTO fno.salesorderlines
        SELECT 'usmf', 'B$1-' || o, n, 'P' || n, 1, 1, 1 FROM generate_series(1, $LINES) n;
        COMMIT;
    END LOOP;
END \$\$;
-- The checkpoint passes an LSN taken inside a transaction once that one is applied.
BEGIN;
UPDATE fno.salesorderheaders SET salesordername = 'Bench, done' WHERE salesordernumber = 'B$1-1';
SELECT pg_current_wal_insert_lsn();
COMMIT;
SQL
    last=$(psql -X -qAt -v ON_ERROR_STOP=1 -f "$DW_E2E_DIR/round.sql" | grep /)
    [ -n "$last" ] || die "round $1: the workload failed"
    req0=$(requests)
    t0=$(now)
    start_daemon
    e2e_wait_checkpoint "$last" 3600 || die "round $1 not applied"
    t1=$(now)
    stop_daemon
    [ "$(psql_q "SELECT count(*) FROM dwasync.error")" = 0 ] || die "round $1: errors"
    echo "$2 $(python3 -c "print(f'{$t1 - $t0:.3f}')") $(($(requests) - req0))" >>"$DW_E2E_DIR/results"
}

# The sample (companies, customers, ...) the orders refer to, once.
set_maps false --initial-sync
start_daemon
e2e_wait_applied 600 || die "sample not applied"
stop_daemon

rows=$((ORDERS * (LINES + 1)))
echo "== $ORDERS orders of $LINES lines, one transaction each ($rows rows a round), $ROUNDS rounds a mode"
: >"$DW_E2E_DIR/results"
round=0
for r in $(seq 1 "$ROUNDS"); do
    for mode in false true; do
        set_maps $mode
        round=$((round + 1))
        run_round $round $mode
    done
done
python3 - "$DW_E2E_DIR/results" "$rows" <<'PY'
import statistics, sys
rows = int(sys.argv[2])
res = {"false": [], "true": []}
for line in open(sys.argv[1]):
    mode, secs, reqs = line.split()
    res[mode].append((float(secs), int(reqs)))
med = {}
for mode, name in (("false", "not atomic"), ("true", "atomic")):
    s = statistics.median(x for x, _ in res[mode])
    q = statistics.median(y for _, y in res[mode])
    med[mode] = s
    print(f"   {name:>10}: median {s:.2f} s, {rows / s:,.0f} rows/s, "
          f"{1000 * q / rows:.1f} write requests per 1,000 rows")
print(f"   atomic / not atomic time: {med['true'] / med['false']:.2f}")
PY

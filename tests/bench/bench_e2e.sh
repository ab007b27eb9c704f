#!/usr/bin/env bash
# tests/bench/bench_e2e.sh - end to end on one machine: harness Postgres + dvemu + dwasync on
# the sample job. Not a test: it prints figures. Sizes come from the environment:
#   CUSTOMERS=94000   new customers per legal entity, in two legal entities (about 5.3 row
#                     changes per customer: the default is the issue's 1,000,000 changes;
#                     inserts with lookups, then one update of every customer)
#   RATE=2000 SECONDS_STEADY=20 PROBES=100   steady load and latency probes
#   BIG_TXN=2000000   rows of one single transaction, for peak RSS (0: skip); the daemon is
#                     restarted before it so that its peak is the transaction's own
#   WINDOW_ROWS=      [apply] window_rows for dwasync (empty: the default)
#   APPLY_AHEAD=      [apply] apply_ahead for dwasync: true or false (empty: the default)
#   RUNS=3            throughput runs, each on a fresh Postgres, dvemu and dwasync (later
#                     runs on a grown store were slower each time); the median is printed
# Peer, measured in the same run: `dwasync decode` of the same changes from a second slot
# (receiving and decoding only). Printed per run and as the median of the runs (the machines
# are noisy): rows/s, the ratio of dwasync's end-to-end time to the decode peer's, Dataverse
# requests per 1,000 rows, the CPU time dwasync and dvemu spent per 1,000 rows (dwasync's is
# the apply path's own cost, whatever the machine shares with dvemu and Postgres); then
# p50/p99 commit-to-applied latency and dwasync's peak RSS.
set -uo pipefail
export DWASYNC_SOURCE_DIR=${DWASYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
CUSTOMERS=${CUSTOMERS:-94000} RATE=${RATE:-2000} SECONDS_STEADY=${SECONDS_STEADY:-20}
PROBES=${PROBES:-100} BIG_TXN=${BIG_TXN:-2000000} RUNS=${RUNS:-3}

# The first RUNS-1 throughput runs are this script again, each in a setting of its own, doing
# only that (BENCH_RUNS_FILE set); this process does the last one and everything after it.
if [ -z "${BENCH_RUNS_FILE:-}" ]; then
    dw_mktemp bench_dir bench
    export BENCH_RUNS_FILE=$bench_dir/runs
    : >"$BENCH_RUNS_FILE"
    for run in $(seq 1 $((RUNS - 1))); do
        echo "== throughput, run $run of $RUNS: $CUSTOMERS customers per legal entity, inserted then updated"
        BENCH_THROUGHPUT_ONLY=1 bash "$0" || die "throughput run $run failed"
    done
    echo "== throughput, run $RUNS of $RUNS: $CUSTOMERS customers per legal entity, inserted then updated"
fi

# A generous service-protection window: the benchmark measures dwasync, not throttling.
e2e_setup --limit-requests 100000000 --limit-exec-ms 2000000000 >/dev/null
sed -i 's/^window_ms = 50$/window_ms = 200/' "$DW_E2E_CONF"
# /metrics on, as a monitored installation runs: the daemon then counts every change by table, class and map.
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
[ -n "${WINDOW_ROWS:-}" ] && sed -i "s/^window_ms = 200\$/&\nwindow_rows = $WINDOW_ROWS/" "$DW_E2E_CONF"
[ -n "${APPLY_AHEAD:-}" ] && sed -i "s/^window_ms = 200\$/&\napply_ahead = $APPLY_AHEAD/" "$DW_E2E_CONF"
e2e_load_sample
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
on_exit "kill -9 $daemon"
e2e_wait_synced 600 || die "sample not applied"

requests() { curl -sf "$DVEMU_URL/_dvemu/counters" | python3 -c '
import json, sys
c = json.load(sys.stdin)["requests"]
print(sum(n for k, n in c.items() if k.split()[0] in ("POST", "PATCH", "DELETE") and "token" not in k))'; }
now() { date +%s.%N; }
# cpu_ms PID: the CPU time (user + system) the process has used, in milliseconds.
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / t)}' "/proc/$1/stat"; }

# One throughput run: CUSTOMERS new customers per legal entity (with their vendors, orders and
# lines), inserted, then each updated once. Appends "rows/s ratio requests-per-1000" to
# $BENCH_RUNS_FILE.
throughput_run() {
    local first=100001 last=$((100001 + CUSTOMERS - 1))
    local range="customeraccount BETWEEN 'C$(printf %07d "$first")' AND 'C$(printf %07d "$last")'"
    psql_q "SELECT pg_create_logical_replication_slot('bench_peer', 'pgoutput')" >/dev/null
    local req0 t0 inserted lsn updated t_commit t1 req1 d0 d1 cpu0 cpu1 emu0 emu1
    req0=$(requests)
    cpu0=$(cpu_ms "$daemon")
    emu0=$(cpu_ms "$DVEMU_PID")
    t0=$(now)
    inserted=$(psql_q "SELECT fno.sample_generate($CUSTOMERS, $first)")
    lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE $range")
    updated=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE $range")
    t_commit=$(now)
    e2e_wait_checkpoint "$lsn" 3600 || die "workload not applied"
    t1=$(now)
    cpu1=$(cpu_ms "$daemon")
    emu1=$(cpu_ms "$DVEMU_PID")
    req1=$(requests)
    # The peer: `dwasync decode` of the same changes from the second slot (to /dev/null).
    d0=$(now)
    "$DWASYNC_BIN" --config "$DW_E2E_CONF" decode --publication dwasync_fno_sample --slot bench_peer \
        --until-caught-up >/dev/null 2>"$DW_E2E_DIR/decode.log" || die "decode failed"
    d1=$(now)
    psql_q "SELECT pg_drop_replication_slot('bench_peer')" >/dev/null
    python3 - "$((inserted + updated))" "$t0" "$t_commit" "$t1" "$req0" "$req1" "$d0" "$d1" \
        "$BENCH_RUNS_FILE" "$((cpu1 - cpu0))" "$((emu1 - emu0))" <<'PY'
import sys
rows, t0, tc, t1 = int(sys.argv[1]), *map(float, sys.argv[2:5])
r0, r1, d0, d1 = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
cpu, emu = 1000 * int(sys.argv[10]) / rows, 1000 * int(sys.argv[11]) / rows
rate, ratio, per = rows / (t1 - t0), (t1 - t0) / (d1 - d0), 1000 * (r1 - r0) / rows
print(f"   {rows} row changes committed in {tc - t0:.1f} s, applied {t1 - t0:.1f} s after the first commit")
print(f"   dwasync end to end: {rate:,.0f} rows/s; decode only: {d1 - d0:.1f} s, end to end / decode = {ratio:.2f}")
print(f"   Dataverse write requests: {r1 - r0} ({per:.2f} per 1,000 rows)")
print(f"   CPU per 1,000 rows: dwasync {cpu:.0f} ms, dvemu {emu:.0f} ms")
open(sys.argv[9], "a").write(f"{rate} {ratio} {per} {cpu} {emu}\n")
PY
}

throughput_run
[ -n "${BENCH_THROUGHPUT_ONLY:-}" ] && exit 0
python3 - "$BENCH_RUNS_FILE" <<'PY'
import statistics, sys
runs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
rates, ratios, pers, cpus, emus = zip(*runs)
print(f"== median of {len(runs)} runs: {statistics.median(rates):,.0f} rows/s "
      f"({', '.join(f'{r:,.0f}' for r in rates)}); end to end / decode = "
      f"{statistics.median(ratios):.2f}; {statistics.median(pers):.2f} write requests per 1,000 rows; "
      f"CPU per 1,000 rows: dwasync {statistics.median(cpus):.0f} ms, dvemu {statistics.median(emus):.0f} ms")
PY

echo "== latency at a steady $RATE rows/s for ${SECONDS_STEADY}s, $PROBES probes"
psql -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<SQL &
DO \$\$
DECLARE per integer := greatest($RATE / 10, 1);
BEGIN
    FOR tick IN 1..($SECONDS_STEADY * 10) LOOP
        UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM fno.customersv3 WHERE customeraccount >= 'C0100001'
                                  ORDER BY random() LIMIT per));
        COMMIT;
        PERFORM pg_sleep(0.1);
    END LOOP;
END \$\$;
SQL
load=$!
# Probes read one row through the Web API, as a client would.
token=$(dvemu_token)
company=$(curl -sf "$DVEMU_URL/_dvemu/tables/cdm_companies" | python3 -c '
import json, sys
print([r["cdm_companyid"] for r in json.load(sys.stdin)["value"] if r["cdm_companycode"] == "usmf"][0])')
probe_url="$DVEMU_URL/api/data/v9.2/accounts(accountnumber='C0000001',_msdyn_company_value=$company)?\$select=emailaddress1"
: >"$DW_E2E_DIR/latency"
for i in $(seq 1 "$PROBES"); do
    value="probe-$i-$RANDOM"
    start=$(now)
    psql_q "UPDATE fno.customersv3 SET primarycontactemail = '$value' WHERE customeraccount = 'C0000001' AND dataareaid = 'usmf'"
    until curl -sf -H "Authorization: Bearer $token" "$probe_url" | grep -q "$value"; do sleep 0.01; done
    echo "$(now) $start" >>"$DW_E2E_DIR/latency"
    sleep 0.1
done
wait $load
python3 - "$DW_E2E_DIR/latency" <<'PY'
import sys
lat = sorted(float(a) - float(b) for a, b in (l.split() for l in open(sys.argv[1])))
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"   commit to applied: p50 {p(0.50):.0f} ms, p99 {p(0.99):.0f} ms (probes poll every 10 ms)")
PY
echo "   dwasync peak RSS so far: $(awk '/VmHWM/ {print $2, $3}' /proc/$daemon/status)"

if [ "$BIG_TXN" -gt 0 ]; then
    echo "== one transaction of $BIG_TXN updates (daemon restarted first)"
    kill -TERM "$daemon"
    wait "$daemon"
    "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >>"$DW_E2E_DIR/daemon.log" 2>&1 &
    daemon=$!
    on_exit "kill -9 $daemon"
    psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE customeraccount >= 'C0100001'" >/dev/null
    big=$(psql_q "SELECT count(*) FROM fno.customersv3 WHERE customeraccount >= 'C0100001'")
    reps=$(( (BIG_TXN + big - 1) / big ))
    b0=$(now)
    last=$(e2e_commit_lsn "DO \$\$ BEGIN FOR i IN 1..$reps LOOP UPDATE fno.customersv3
        SET creditlimit = creditlimit + 1 WHERE customeraccount >= 'C0100001'; END LOOP; END \$\$")
    e2e_wait_checkpoint "$last" 3600 || die "big transaction not applied"
    b1=$(now)
    python3 -c "print(f'   {$reps * $big} rows in one transaction applied in {$b1 - $b0:.1f} s, {$reps * $big / ($b1 - $b0):,.0f} rows/s')"
    echo "   dwasync peak RSS through it: $(awk '/VmHWM/ {print $2, $3}' /proc/$daemon/status)"
fi
echo "   final state check: $(e2e_mismatches 2>/dev/null) mismatching rows"

#!/usr/bin/env bash
# tests/bench/bench_limits.sh - throughput of a backlog under Dataverse's service protection
# limits (issue 20): how much of what the limits allow dwasync uses. Not a test: it prints
# figures. Harness Postgres + dvemu + dwasync on the sample job. Sizes from the environment:
#   CHANGES=200000   backlog: sample rows (fno.sample_generate) inserted in transactions of
#                    10 customers (86 rows of four tables each, so a window mixes tables and
#                    levels) while the daemon is stopped; then the daemon is started
#   ROW_MS=4         server time of each row written, in bulk or singly (dvemu --cost-*row-ms)
#   REQUEST_MS=20    server time of each request (dvemu --cost-request-ms)
#   WINDOW_S=10      length of dvemu's sliding window. Dataverse's defaults are 6,000 requests
#                    and 1,200,000 ms of execution time per 300 s and 52 concurrent requests;
#                    the window is shortened and the per-window budgets scaled with it (here
#                    200 requests and 40,000 ms per 10 s): the same rates, reached within a
#                    run of a few minutes instead of after the first 5 minutes' burst
#   RUNS=3           runs, each on a fresh Postgres, dvemu and dwasync; medians are printed
#   WINDOW_ROWS=     [apply] window_rows for dwasync (default: its own default)
#   WINDOW_GROWTH=   [apply] window_growth for dwasync (default: its own default)
#   APPLY_AHEAD=     [apply] apply_ahead for dwasync: true or false (default: its own default)
# The theoretical maximum is computed from those settings, per limit, for full requests of
# batch_size (1,000) rows:
#   requests:    requests per window / window * batch_size
#   execution:   execution ms per window / window / (ROW_MS + REQUEST_MS / batch_size)
#   concurrency: 52 * batch_size / ((REQUEST_MS + batch_size * ROW_MS) / 1000 s)
# The least of them binds. A sliding window admits at most one window's budget in any window,
# so a run of T seconds fits at most ceil(T / window) budgets: the maximum for the run is
# binding * window * ceil(T / window) / T (at least the sustained rate; a run that starts on
# a fresh budget may go that much faster). The ratio is measured / that maximum.
# Printed per run: measured rows/s, the maximum, their ratio, rows per write request, 429s,
# dwasync's peak RSS (VmHWM).
set -uo pipefail
export DWASYNC_SOURCE_DIR=${DWASYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
CHANGES=${CHANGES:-200000} ROW_MS=${ROW_MS:-4} REQUEST_MS=${REQUEST_MS:-20}
WINDOW_S=${WINDOW_S:-10} RUNS=${RUNS:-3}
BATCH=1000 CONCURRENT=52
LIMIT_REQUESTS=$((6000 * WINDOW_S / 300)) LIMIT_EXEC_MS=$((1200000 * WINDOW_S / 300))

if [ -z "${BENCH_RUNS_FILE:-}" ]; then
    dw_mktemp bench_dir bench
    export BENCH_RUNS_FILE=$bench_dir/runs
    : >"$BENCH_RUNS_FILE"
    echo "== limits per ${WINDOW_S} s: $LIMIT_REQUESTS requests, $LIMIT_EXEC_MS ms execution," \
        "$CONCURRENT concurrent; cost $REQUEST_MS ms a request + $ROW_MS ms a row"
    for run in $(seq 1 $((RUNS - 1))); do
        echo "== run $run of $RUNS: a backlog of about $CHANGES changes"
        BENCH_ONE_RUN=1 bash "$0" || die "run $run failed"
    done
    echo "== run $RUNS of $RUNS: a backlog of about $CHANGES changes"
fi

e2e_setup --limit-requests "$LIMIT_REQUESTS" --limit-exec-ms "$LIMIT_EXEC_MS" \
    --limit-window "$WINDOW_S" --limit-concurrent "$CONCURRENT" --cost-request-ms "$REQUEST_MS" \
    --cost-row-ms "$ROW_MS" --cost-bulk-row-ms "$ROW_MS" >/dev/null
sed -i "s/^\[dataverse\]\$/&\nbatch_size = $BATCH/" "$DW_E2E_CONF"
[ -z "${WINDOW_ROWS:-}" ] || sed -i "s/^\[apply\]\$/&\nwindow_rows = $WINDOW_ROWS/" "$DW_E2E_CONF"
[ -z "${WINDOW_GROWTH:-}" ] || sed -i "s/^\[apply\]\$/&\nwindow_growth = $WINDOW_GROWTH/" "$DW_E2E_CONF"
[ -z "${APPLY_AHEAD:-}" ] || sed -i "s/^\[apply\]\$/&\napply_ahead = $APPLY_AHEAD/" "$DW_E2E_CONF"
e2e_load_sample
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced 600 || die "sample not applied"
kill -TERM "$daemon" && wait "$daemon"
daemon=

counters() { # "write-requests rows-written throttled" so far
    curl -sf "$DVEMU_URL/_dvemu/counters" | jq -r '
        ([.requests | to_entries[] | select((.key | split(" ")[0]) as $m
            | ($m == "POST" or $m == "PATCH" or $m == "DELETE") and (.key | test("token") | not))
            | .value] | add // 0) as $r | ([.rows_written[]] | add // 0) as $w
        | "\($r) \($w) \(.throttled)"'
}
rows_now() {
    psql_q "SELECT (SELECT count(*) FROM fno.customersv3) + (SELECT count(*) FROM fno.vendorsv2)
                 + (SELECT count(*) FROM fno.salesorderheaders) + (SELECT count(*) FROM fno.salesorderlines)"
}
before=$(rows_now)
txns=$(((CHANGES + 85) / 86))
psql -X -q -v ON_ERROR_STOP=1 <<SQL || die "the backlog was not committed"
DO \$\$
BEGIN
    FOR k IN 0..$((txns - 1)) LOOP
        PERFORM fno.sample_generate(10, 1001 + 10 * k);
        COMMIT;
    END LOOP;
END \$\$;
SQL
lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
changes=$(($(rows_now) - before + 1))
read -r req0 rows0 thr0 <<<"$(counters)"
t0=$(date +%s.%N)
e2e_start_daemon
e2e_wait_checkpoint "$lsn" 3600 || die "the backlog was not applied"
t1=$(date +%s.%N)
read -r req1 rows1 thr1 <<<"$(counters)"
rss=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")
python3 - "$changes" "$t0" "$t1" "$((req1 - req0))" "$((rows1 - rows0))" "$((thr1 - thr0))" "$rss" \
    "$LIMIT_REQUESTS" "$LIMIT_EXEC_MS" "$WINDOW_S" "$CONCURRENT" "$BATCH" "$ROW_MS" "$REQUEST_MS" \
    "$BENCH_RUNS_FILE" <<'PY'
import math, sys
changes, t0, t1, req, rows, thr, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), *map(int, sys.argv[4:8])
lreq, lexec, win, conc, batch, row_ms, req_ms = map(int, sys.argv[8:15])
t = t1 - t0
limits = {
    "requests": lreq / win * batch,
    "execution": lexec / win / (row_ms + req_ms / batch),
    "concurrency": conc * batch / ((req_ms + batch * row_ms) / 1000),
}
binding = min(limits, key=limits.get)
run_max = limits[binding] * win * math.ceil(t / win) / t
rate = changes / t
print(f"   {changes} changes applied in {t:.1f} s: {rate:,.0f} rows/s; theoretical maximum "
      f"{limits[binding]:,.0f} rows/s sustained, {run_max:,.0f} over this run ({binding} binds; "
      + ", ".join(f"{k} {v:,.0f}" for k, v in limits.items()) + ")")
print(f"   measured / maximum = {rate / run_max:.2f}; {rows / max(req, 1):,.0f} rows per write request "
      f"({rows} rows, {req} requests), {thr} throttled (429); dwasync peak RSS {rss / 1024:.1f} MB")
open(sys.argv[15], "a").write(f"{rate} {rate / run_max} {rows / max(req, 1)} {rss}\n")
PY
echo "   final state check: $(e2e_mismatches 2>/dev/null) mismatching rows"
[ -n "${BENCH_ONE_RUN:-}" ] && exit 0
python3 - "$BENCH_RUNS_FILE" <<'PY'
import statistics, sys
runs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
rates, ratios, per, rss = zip(*runs)
m = statistics.median
print(f"== median of {len(runs)} runs: {m(rates):,.0f} rows/s, measured / maximum = {m(ratios):.2f} "
      f"({', '.join(f'{r:.2f}' for r in ratios)}), {m(per):,.0f} rows per write request, "
      f"peak RSS {m(rss) / 1024:.1f} MB (largest {max(rss) / 1024:.1f} MB)")
PY

#!/usr/bin/env bash
# tests/bench/bench_replay.sh - initial sync, streaming and replay of the same rows (issue 20).
# Not a test: it prints figures. Harness Postgres + dvemu (limits out of the way: this
# measures dwasync) + dwasync on the sample job, with CUSTOMERS more customers per legal
# entity (default 12,500: about 108,000 rows, 20,000 of them organizations). In one run:
#   initial     the job's initial sync of every row (chunked copy with watermarks)
#   streaming   the same rows again through the stream: an update of every row of the four
#               sample tables, one transaction each, applied by the daemon
#   replay      every organization's update refused by dvemu (the write privilege on
#               accounts revoked: parked as open errors), the privilege given back, and
#               `errors replay --all` applied by the running daemon
# Printed: rows/s of each, initial / streaming and replay / initial (issue 20's targets:
# at least 1 and at least 0.5), dwasync's peak RSS (after each phase, as VmHWM only grows);
# medians of RUNS runs (default 3). WINDOW_GROWTH sets [apply] window_growth (empty: the default).
set -uo pipefail
export DWASYNC_SOURCE_DIR=${DWASYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
CUSTOMERS=${CUSTOMERS:-12500} RUNS=${RUNS:-3}

if [ -z "${BENCH_RUNS_FILE:-}" ]; then
    dw_mktemp bench_dir bench
    export BENCH_RUNS_FILE=$bench_dir/runs
    : >"$BENCH_RUNS_FILE"
    for run in $(seq 1 $((RUNS - 1))); do
        echo "== run $run of $RUNS: $CUSTOMERS customers per legal entity"
        BENCH_ONE_RUN=1 bash "$0" || die "run $run failed"
    done
    echo "== run $RUNS of $RUNS: $CUSTOMERS customers per legal entity"
fi

e2e_setup --limit-requests 100000000 --limit-exec-ms 2000000000 >/dev/null
[ -n "${WINDOW_GROWTH:-}" ] && sed -i "s/^\[apply\]\$/&\nwindow_growth = $WINDOW_GROWTH/" "$DW_E2E_CONF"
e2e_load_sample
psql_q "SELECT fno.sample_generate($CUSTOMERS, 1001)" >/dev/null
now() { date +%s.%N; }
rows=$(psql_q "SELECT (SELECT count(*) FROM fno.customersv3) + (SELECT count(*) FROM fno.vendorsv2)
                    + (SELECT count(*) FROM fno.salesorderheaders) + (SELECT count(*) FROM fno.salesorderlines)")

# Initial sync of every row (the reference tables' few rows counted in its time, not its rows).
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
t0=$(now)
e2e_start_daemon
e2e_wait_synced 1800 0.05 || die "the sample was not applied"
t_sync=$(python3 -c "print($(now) - $t0)")
peak() { awk '/VmHWM/ {print $2}' "/proc/$daemon/status"; }
rss_sync=$(peak)

# Streaming the same rows: every row of the four tables updated (mapped columns).
t0=$(now)
psql_q "UPDATE fno.customersv3 SET primarycontactphone = primarycontactphone || '1'" >/dev/null
psql_q "UPDATE fno.vendorsv2 SET creditlimit = creditlimit + 1" >/dev/null
psql_q "UPDATE fno.salesorderheaders SET ordertotalamount = ordertotalamount + 1" >/dev/null
lsn=$(e2e_commit_lsn "UPDATE fno.salesorderlines SET salesprice = salesprice + 1")
e2e_wait_checkpoint "$lsn" 1800 || die "the updates were not applied"
t_stream=$(python3 -c "print($(now) - $t0)")
rss_stream=$(peak)

# Replay: every organization's update refused (the write privilege on accounts revoked in
# dvemu: parked as open errors), the privilege given back, all replayed by the daemon.
dvemu_admin POST privileges '{"revoke": [{"table": "accounts", "privilege": "write"}]}' >/dev/null
lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE partytype = 'Organization'")
e2e_wait_checkpoint "$lsn" 1800 || die "the refused update was not parked"
parked=$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open'")
rss_parked=$(peak)
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
t0=$(now)
dw errors replay --all --job fno_sample >/dev/null || die "errors replay failed"
e2e_wait_replayed 1800 0.05 || die "the replay did not finish"
t_replay=$(python3 -c "print($(now) - $t0)")
resolved=$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'resolved'")
rss=$(peak)
echo "   dwasync peak RSS after the initial sync $((rss_sync / 1024)) MB, the streaming" \
    "$((rss_stream / 1024)) MB, the parking $((rss_parked / 1024)) MB, the replay $((rss / 1024)) MB"
python3 - "$rows" "$t_stream" "$t_sync" "$parked" "$resolved" "$t_replay" "$rss" "$BENCH_RUNS_FILE" <<'PY'
import sys
rows, ts, ti, parked, resolved, tr, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
s, i, r = rows / ts, rows / ti, resolved / tr
print(f"   {rows} rows: initial sync {i:,.0f} rows/s ({ti:.1f} s), streaming {s:,.0f} rows/s "
      f"({ts:.1f} s); replay of {parked} parked organizations ({resolved} resolved) "
      f"{r:,.0f} rows/s ({tr:.1f} s)")
print(f"   initial / streaming = {i / s:.2f}, replay / initial = {r / i:.2f}; "
      f"dwasync peak RSS {rss / 1024:.1f} MB")
open(sys.argv[8], "a").write(f"{s} {i} {r} {i / s} {r / i} {rss}\n")
PY
[ -n "${BENCH_ONE_RUN:-}" ] && exit 0
python3 - "$BENCH_RUNS_FILE" <<'PY'
import statistics, sys
runs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
s, i, r, i_s, r_i, rss = zip(*runs)
m = statistics.median
print(f"== median of {len(runs)} runs: streaming {m(s):,.0f}, initial sync {m(i):,.0f}, replay "
      f"{m(r):,.0f} rows/s; initial / streaming = {m(i_s):.2f} ({', '.join(f'{x:.2f}' for x in i_s)}), "
      f"replay / initial = {m(r_i):.2f} ({', '.join(f'{x:.2f}' for x in r_i)}); "
      f"peak RSS {m(rss) / 1024:.1f} MB (largest {max(rss) / 1024:.1f} MB)")
PY

#!/usr/bin/env bash
# Benchmark of the source (not a test; run on demand):
#   ROWS=1000000 REPS=3 [KEEP_RECORDING=file] bash tests/bench/bench_decode.sh
# On one harness cluster it writes ROWS inserts then ROWS updates to a mirror-like table
# (a dozen columns: varchar keys, numeric(32,6), int enums, timestamps), then consumes the
# same changes from identical slots: with pg_recvlogical (pgoutput, to /dev/null) and with
# `dwasync decode` (JSON to /dev/null). It prints the median wall and CPU (user+sys) time of
# each and the ratio dwasync/pg_recvlogical (target: wall within 1.1x; the server's
# decoding is the limit). Then it decodes a recording of the same stream offline
# (`dwasync decode --replay`) and prints changes per second per core (target: 500,000).
set -e
source "$(cd "$(dirname "$0")/../harness" && pwd)/lib.sh"
ROWS=${ROWS:-1000000}
REPS=${REPS:-1}
BATCH=${BATCH:-10000}
pg_start "max_wal_size = 4GB" "checkpoint_timeout = 30min" "shared_buffers = 256MB"
dw_mktemp work bench
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n[log]\nlevel = warn\n' "$DW_PG_CONNINFO" >"$conf"

psql_q "CREATE TABLE custtable (
    recid bigint PRIMARY KEY, dataareaid varchar(4) NOT NULL, accountnum varchar(20) NOT NULL,
    name varchar(100), custgroup varchar(10), currency varchar(3), blocked int, creditrating int,
    creditmax numeric(32,6), balance numeric(32,6), createddatetime timestamp,
    modifieddatetime timestamp)"
psql_q "CREATE PUBLICATION bench FOR TABLE custtable"
for r in $(seq 1 "$REPS"); do
    for peer in recv dw; do
        psql_q "SELECT pg_create_logical_replication_slot('${peer}_$r', 'pgoutput')" >/dev/null
    done
done
psql_q "SELECT pg_create_logical_replication_slot('rec', 'pgoutput')" >/dev/null

log "writing $ROWS inserts and $ROWS updates in transactions of $BATCH rows"
for ((lo = 1; lo <= ROWS; lo += BATCH)); do
    hi=$((lo + BATCH - 1 < ROWS ? lo + BATCH - 1 : ROWS))
    psql_q "INSERT INTO custtable SELECT i, (ARRAY['usmf','usrt','demf','gbsi'])[i % 4 + 1],
        'CUST-' || lpad(i::text, 9, '0'), 'Customer ' || i || ' Ltd.', 'G' || (i % 20),
        'USD', i % 3, i % 5, (i * 12.345678)::numeric(32,6), (i * -0.5)::numeric(32,6),
        timestamp '2020-01-01' + i * interval '1 minute', timestamp '2026-11-22 10:00:00.123456'
        FROM generate_series($lo, $hi) i"
done
for ((lo = 1; lo <= ROWS; lo += BATCH)); do
    hi=$((lo + BATCH - 1 < ROWS ? lo + BATCH - 1 : ROWS))
    psql_q "UPDATE custtable SET balance = balance + 1.25, blocked = (blocked + 1) % 3,
        modifieddatetime = modifieddatetime + interval '1 second' WHERE recid BETWEEN $lo AND $hi"
done
endpos=$(psql_q "SELECT pg_current_wal_lsn()")
changes=$((ROWS * 2))

# timed LABEL COMMAND...: appends "wall cpu" (seconds) to $work/LABEL.
timed() {
    local label=$1 t
    shift
    t=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>"$work/$label.err"; } 2>&1 | tail -1)
    awk '{printf "%.3f %.3f\n", $1, $2 + $3}' <<<"$t" >>"$work/$label"
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# The recording pass doubles as a warm-up: the WAL is in the page cache for both peers.
"$DWASYNC_BIN" --config "$conf" decode --publication bench --slot rec --until-caught-up \
    --record "$work/stream.bin" >/dev/null
run_recv() {
    timed recv pg_recvlogical -d "$DW_PG_CONNINFO" --slot "recv_$1" --start --endpos "$endpos" \
        -o proto_version=1 -o publication_names=bench -f /dev/null
}
run_dw() {
    timed dw "$DWASYNC_BIN" --config "$conf" decode --publication bench --slot "dw_$1" \
        --until-caught-up
}
for r in $(seq 1 "$REPS"); do   # alternate who goes first
    if [ $((r % 2)) = 1 ]; then run_recv "$r"; run_dw "$r"; else run_dw "$r"; run_recv "$r"; fi
done
got=$("$DWASYNC_BIN" --config "$conf" decode --replay "$work/stream.bin" | wc -l)
[ "$got" = "$changes" ] || die "the recording holds $got changes, expected $changes"
[ -n "${KEEP_RECORDING:-}" ] && cp "$work/stream.bin" "$KEEP_RECORDING"   # for profiling
for r in $(seq 1 "$REPS"); do timed replay "$DWASYNC_BIN" decode --replay "$work/stream.bin"; done

recv_wall=$(cut -d' ' -f1 "$work/recv" | median); recv_cpu=$(cut -d' ' -f2 "$work/recv" | median)
dw_wall=$(cut -d' ' -f1 "$work/dw" | median); dw_cpu=$(cut -d' ' -f2 "$work/dw" | median)
rp_cpu=$(cut -d' ' -f2 "$work/replay" | median); rp_wall=$(cut -d' ' -f1 "$work/replay" | median)
printf '%s changes (%s inserts + %s updates), %s run(s), medians:\n' "$changes" "$ROWS" "$ROWS" "$REPS"
printf '  pg_recvlogical     wall %8.3f s   cpu %8.3f s\n' "$recv_wall" "$recv_cpu"
printf '  dwasync decode     wall %8.3f s   cpu %8.3f s\n' "$dw_wall" "$dw_cpu"
awk -v a="$dw_wall" -v b="$recv_wall" 'BEGIN {printf "  ratio dwasync/pg_recvlogical wall %.2fx (target <= 1.10x)\n", a / b}'
awk -v c="$changes" -v s="$rp_cpu" -v w="$rp_wall" -v m="$(stat -c %s "$work/stream.bin")" \
    'BEGIN {printf "  offline decode+JSON: %.0f changes/s/core (cpu %.3f s, wall %.3f s, %.1f MB recorded; target >= 500000)\n", c / s, s, w, m / 1e6}'

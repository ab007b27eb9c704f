#!/usr/bin/env bash
# Records the golden pgoutput stream: runs schema.sql and workload.sql on a harness cluster
# and saves what `dwasync decode` received (stream.bin, in the format of dw_stream_replay(),
# user types included) and what it printed (expected.jsonl, reviewed by hand before
# committing). Re-record after changing the SQL:
#   DWASYNC_BUILD_DIR=build bash tests/data/pgoutput/record.sh
set -e
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../harness/lib.sh"
pg_start
dw_mktemp work record
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\nstatus_interval_ms = 1000\n' "$DW_PG_CONNINFO" >"$conf"

psql -X -q -v ON_ERROR_STOP=1 -f "$here/schema.sql" >/dev/null
"$DWASYNC_BIN" --config "$conf" decode --publication golden --slot golden --create-slot \
    --until-caught-up >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -f "$here/workload.sql" >/dev/null
rm -f "$work/stream.bin"
"$DWASYNC_BIN" --config "$conf" decode --publication golden --slot golden --until-caught-up \
    --record "$work/stream.bin" >"$work/expected.jsonl"
cp "$work/stream.bin" "$work/expected.jsonl" "$here/"
echo "recorded $(wc -l <"$here/expected.jsonl") changes, $(stat -c %s "$here/stream.bin") bytes"

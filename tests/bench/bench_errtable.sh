#!/usr/bin/env bash
# bench_errtable.sh [ROWS] [BATCH] - what the error table's bookkeeping costs.
#
# Stores ROWS error rows (1 key in 10 repeated, so a tenth wait behind a head) in batches
# of BATCH through dwasync.insert_errors (the status decision against the table, the
# unique check, the per-key indexes) and, as the peer measured in the same run, a plain
# INSERT ... SELECT of the same JSON into a copy of the table without indexes or logic.
# Then the same batches again (a stream replayed after a crash: every row a duplicate).
# Prints the median per batch of 5 runs and the ratios. Not a test: nothing is asserted.
source "$(dirname "$0")/../harness/lib.sh"
rows=${1:-20000}
batch=${2:-1000}
pg_start
dw_mktemp work bench
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$work/c.conf"
"$DWASYNC_BIN" --config "$work/c.conf" init >/dev/null 2>&1 || die "init failed"

psql_q "INSERT INTO dwasync.job (name, slot_name, publication_name) VALUES ('b', 'b', 'b');
CREATE TABLE peer (LIKE dwasync.error INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE batches AS
SELECT b, jsonb_agg(jsonb_build_object(
         'job_id', 1, 'map_id', 1, 'map_name', 'customers', 'source_schema', 'public',
         'source_table', 'custtable', 'operation', 'update',
         'source_key', jsonb_build_object('accountnum', 'C' || (g % ($rows * 9 / 10))),
         'key_text', '{\"accountnum\":\"C' || (g % ($rows * 9 / 10)) || '\"}',
         'source_row', jsonb_build_object('new', jsonb_build_object('accountnum', 'C' || g, 'name', repeat('x', 60))),
         'payload', jsonb_build_object('name', repeat('x', 60)),
         'commit_lsn', '0/' || to_hex(g * 64), 'xid', g, 'position', 0,
         'class', 'validation', 'http_status', 400, 'dv_code', '0x80044331',
         'message', 'A validation error occurred.', 'waiting', false)) AS rows
  FROM generate_series(1, $rows) g, LATERAL (SELECT (g - 1) / $batch AS b) x
 GROUP BY b;"

cat >"$work/bench.sql" <<'SQL'
CREATE FUNCTION pg_temp.run(kind text) RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; r record; n integer := 0;
BEGIN
    t0 := clock_timestamp();
    FOR r IN SELECT rows FROM batches ORDER BY b LOOP
        IF kind = 'peer' THEN
            INSERT INTO peer (job_id, map_id, map_name, source_schema, source_table, operation,
                              source_key, key_text, source_row, payload, commit_lsn, xid,
                              position, class, http_status, dv_code, message, status)
            SELECT job_id, map_id, map_name, source_schema, source_table, operation, source_key,
                   key_text, source_row, payload, commit_lsn::pg_lsn, xid, position, class,
                   http_status, dv_code, message, 'open'
              FROM jsonb_to_recordset(r.rows) AS x(job_id bigint, map_id bigint, map_name text,
                   source_schema text, source_table text, operation text, source_key jsonb,
                   key_text text, source_row jsonb, payload jsonb, commit_lsn text, xid bigint,
                   position integer, class text, http_status integer, dv_code text, message text);
        ELSE
            PERFORM count(*) FROM dwasync.insert_errors(r.rows);
        END IF;
        n := n + 1;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
END $$;
SQL

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A ms
for kind in peer errors duplicates; do
    for run in 1 2 3 4 5; do
        if [ "$kind" != duplicates ]; then
            psql_q "TRUNCATE peer; DELETE FROM dwasync.error" >/dev/null
        fi
        [ "$kind" = duplicates ] && [ "$run" = 1 ] && psql_q "DELETE FROM dwasync.error" >/dev/null &&
            psql -X -qAt -f "$work/bench.sql" -c "SELECT pg_temp.run('errors')" >/dev/null
        psql -X -qAt -f "$work/bench.sql" -c "SELECT pg_temp.run('${kind/duplicates/errors}')"
    done | median >"$work/$kind"
    ms[$kind]=$(cat "$work/$kind")
done
printf 'rows %d, batch %d: ms per batch (median of 5)\n' "$rows" "$batch"
printf '  plain INSERT (peer)        %8.2f\n' "${ms[peer]}"
printf '  dwasync.insert_errors      %8.2f   ratio %.2f\n' "${ms[errors]}" "$(echo "${ms[errors]} / ${ms[peer]}" | bc -l)"
printf '  same batches again (dups)  %8.2f   ratio %.2f\n' "${ms[duplicates]}" "$(echo "${ms[duplicates]} / ${ms[peer]}" | bc -l)"
printf '  error rows in the table    %8s\n' "$(psql_q 'SELECT count(*) FROM dwasync.error')"

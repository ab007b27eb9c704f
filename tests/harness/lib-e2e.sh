# tests/harness/lib-e2e.sh - the whole product on one machine: a private Postgres holding
# the sample F&O staging schema, dvemu with the sample Dataverse metadata, a dwasync config
# pointing at both, and the sample job imported. Used by the end-to-end tests, the
# benchmarks and the demo. Sourced by lib.sh; needs lib-dvemu.sh (dvemu_start).
#
#   e2e_setup [dvemu args...]   # pg_start + dvemu_start + schema + config + init + map import
#   e2e_load_sample             # the sample data for two legal entities
#   e2e_load_copy_sample        # the same with 300 more customers, copied in chunks of 20
#                               # rows: a copy long enough for faults to fall inside it
#   dw ...                      # runs dwasync with the e2e config
#   dv_load SET                 # loads dvemu's rows of an entity set into table dv.SET (jsonb)
#   e2e_metadata 'PYTHON'       # dvemu gets the sample metadata as edited by the snippet,
#                               # which sees tables (by logical name) and attr(table, name);
#                               # call before e2e_setup (exports DVEMU_METADATA)
#   e2e_start_daemon            # `dwasync run --job fno_sample` in the background, appending
#                               # to $DW_E2E_DIR/daemon.log; $daemon is its pid (killed at exit)
#   e2e_map_onhold_6            # the poison tests' map fix: stops the daemon (SIGTERM) and the
#                               # job, gives on-hold status 6 an option, starts the job again
#   lsn=$(e2e_commit_lsn SQL)   # runs SQL in one transaction; prints an LSN its commit ends
#                               # after (for e2e_wait_checkpoint)
#   e2e_wait_synced [SECONDS]   # waits until the job's initial sync is applied
#   e2e_wait_resynced [SECONDS] # waits until every copy request (resync, repair) is applied

DW_SAMPLE_DIR=${DW_SAMPLE_DIR:-$DWASYNC_SOURCE_DIR/packaging/sample}

dw() { "$DWASYNC_BIN" --config "$DW_E2E_CONF" "$@"; }

e2e_metadata() {
    local dir
    dw_mktemp dir meta
    python3 - "$DW_SAMPLE_DIR/dataverse-metadata.json" "$dir/metadata.json" "$1" <<'PY' ||
import json, sys
doc = json.load(open(sys.argv[1]))
tables = {t["logical_name"]: t for t in doc["tables"]}
def attr(table, name):
    return next(a for a in table["attributes"] if a["name"] == name)
exec(sys.argv[3])
json.dump(doc, open(sys.argv[2], "w"))
PY
        die "editing the sample metadata failed"
    export DVEMU_METADATA=$dir/metadata.json
}

# e2e_runner NAME [VAR=value...]: starts another `dwasync run` of the sample job (a runner of
# a high-availability test) with those environment settings, appending to NAME.log in
# $DW_E2E_DIR; its pid is in $! (the caller kills it).
e2e_runner() {
    env "${@:2}" "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample \
        >>"$DW_E2E_DIR/$1.log" 2>&1 &
}

# e2e_wait_log NAME TEXT [N]: waits until NAME.log in $DW_E2E_DIR holds TEXT N times (1),
# for 120 s at most: a bound for a hung test, not a timing assert.
e2e_wait_log() {
    local i
    for ((i = 0; i < 1200; i++)); do
        [ "$(grep -csF -- "$2" "$DW_E2E_DIR/$1.log")" -ge "${3:-1}" ] && return 0
        sleep 0.1
    done
    return 1
}

daemon=
e2e_start_daemon() {
    "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >>"$DW_E2E_DIR/daemon.log" 2>&1 &
    daemon=$!
    if [ -z "${DW_E2E_DAEMON_CLEANUP:-}" ]; then
        DW_E2E_DAEMON_CLEANUP=1
        on_exit '[ -n "$daemon" ] && kill -9 $daemon'
    fi
}

e2e_map_onhold_6() {
    [ -n "$daemon" ] && { kill -TERM "$daemon"; wait "$daemon"; }
    daemon=
    dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
    psql_q "UPDATE dwasync.table_map m SET column_mappings = (
              SELECT jsonb_agg(CASE WHEN c ->> 'source' = 'ONHOLDSTATUS'
                                    THEN jsonb_set(c, '{value_map,6}', '806380006') ELSE c END)
                FROM jsonb_array_elements(m.column_mappings) c)
            WHERE m.name = 'customers_organizations'" >/dev/null
    dw job start fno_sample >/dev/null 2>&1 || die "job restart failed"
}

e2e_setup() {
    pg_start
    dvemu_start "$@"
    dw_mktemp DW_E2E_DIR e2e
    export DW_E2E_DIR DW_E2E_CONF=$DW_E2E_DIR/dwasync.conf
    psql -X -q -v ON_ERROR_STOP=1 -f "$DW_SAMPLE_DIR/fno-schema.sql" >/dev/null ||
        die "loading the sample schema failed"
    cat >"$DW_E2E_CONF" <<CONF
[source]
conninfo = $DW_PG_CONNINFO

[dataverse]
url = $DVEMU_URL
authority = $DVEMU_URL
tenant_id = $DVEMU_TENANT
client_id = $DVEMU_CLIENT_ID
client_secret_file = $DVEMU_SECRET_FILE
# dvemu listens on 127.0.0.1, over http unless a test asks for TLS.
allow_insecure_http = true

[apply]
window_ms = 50

[log]
level = ${DW_E2E_LOG_LEVEL:-info}
CONF
    dw init >/dev/null || die "dwasync init failed"
    dw map import "$DW_SAMPLE_DIR/fno-sample.map.json" >/dev/null || die "map import failed"
}

e2e_load_sample() {
    psql -X -q -v ON_ERROR_STOP=1 -f "$DW_SAMPLE_DIR/fno-sample-data.sql" >/dev/null ||
        die "loading the sample data failed"
}

e2e_load_copy_sample() {
    e2e_load_sample
    psql_q "SELECT fno.sample_generate(300, 5001)" >/dev/null || die "cannot generate customers"
    sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 20/' "$DW_E2E_CONF"
}

# dv_load SET: copies dvemu's current rows of SET into dv.SET (one jsonb document a row).
dv_load() {
    # CASCADE: the oracle's views over the previous copy go too (the oracle recreates them).
    psql_q "SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS dv; \
            DROP TABLE IF EXISTS dv.$1 CASCADE; CREATE TABLE dv.$1 (doc jsonb)" ||
        die "cannot prepare dv.$1"
    # One JSON document a line; CSV with quote and delimiter bytes that never occur in JSON.
    curl -sf "$DVEMU_URL/_dvemu/tables/$1" |
        psql -X -qAt -v ON_ERROR_STOP=1 -c "CREATE TEMP TABLE raw (t text); \
            COPY raw FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02'); \
            INSERT INTO dv.$1 SELECT jsonb_array_elements(t::jsonb->'value') FROM raw" ||
        die "loading dvemu table $1 failed"
    # Statistics: without them the oracle's joins are planned as nested loops (12 s, not 0.5).
    psql_q "ANALYZE dv.$1" || die "cannot analyze dv.$1"
}

DW_SAMPLE_SETS="cdm_companies transactioncurrencies msdyn_paymentterms msdyn_customergroups accounts contacts msdyn_vendors salesorders salesorderdetails"

# e2e_mismatches [LEGAL_ENTITIES]: loads dvemu's tables and compares them with the staging
# tables through the SQL oracle (tests/data/e2e/sample-oracle.sql). Prints the number of
# rows present on one side only (0: exact), and up to 5 of them on stderr.
e2e_mismatches() {
    local le=${1:-'{usmf,demf}'} s
    for s in $DW_SAMPLE_SETS; do dv_load "$s"; done
    PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 \
        -f "$DWASYNC_SOURCE_DIR/tests/data/e2e/sample-oracle.sql" >/dev/null ||
        die "oracle failed to load"
    PGOPTIONS="-c oracle.legal_entities=$le" psql -X -qAt -c \
        "select kind, tbl, row from oracle.mismatch order by tbl limit 5" >&2
    PGOPTIONS="-c oracle.legal_entities=$le" psql_q "select count(*) from oracle.mismatch"
}

# e2e_rows SET: number of rows dvemu holds in SET.
e2e_rows() {
    curl -sf "$DVEMU_URL/_dvemu/tables/$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["value"]))'
}

# e2e_wait_applied [SECONDS]: waits until the job's slot has confirmed everything committed
# before the call (applied or parked: the slot only moves after that). Fails on timeout, or
# at once when the daemon whose pid is in $daemon has died.
e2e_wait_applied() {
    local target i
    target=$(psql_q "SELECT pg_current_wal_flush_lsn()")
    for i in $(seq 1 $((${1:-120} * 2))); do
        if [ -n "${daemon:-}" ] && ! kill -0 "$daemon" 2>/dev/null; then
            log "the daemon (pid $daemon) is gone"
            return 2
        fi
        [ "$(psql_q "SELECT bool_and(confirmed_flush_lsn >= '$target') FROM pg_replication_slots
                      WHERE slot_name LIKE 'dwasync_%'") $(e2e_copying)" = "t 0" ] && return 0
        sleep 0.5
    done
    return 1
}

e2e_commit_lsn() {
    psql -X -qAt -v ON_ERROR_STOP=1 -c "BEGIN" -c "$1" -c "SELECT pg_current_wal_insert_lsn()" \
        -c "COMMIT" | grep /
}

# e2e_wait_checkpoint LSN [SECONDS]: waits until the job's checkpoint has passed LSN (take
# it with pg_current_wal_insert_lsn() inside the last transaction of interest, as
# e2e_commit_lsn does: its commit ends after it). Unlike e2e_wait_applied, it does not wait
# for idle keepalives.
e2e_wait_checkpoint() {
    local i
    for i in $(seq 1 $((${2:-120} * 20))); do
        [ "$(psql_q "SELECT coalesce(bool_and(confirmed_lsn > '$1'), false) FROM dwasync.checkpoint")" = t ] && return 0
        sleep 0.05
    done
    return 1
}

# e2e_copying: the number of jobs whose initial sync is still pending or running (the copy
# runs interleaved with the stream, so a checkpoint past an LSN does not mean it is done).
e2e_copying() {
    psql_q "SELECT count(*) FROM dwasync.job WHERE initial_sync IN ('pending', 'running')"
}

# e2e_wait_synced [SECONDS] [POLL]: waits until the initial sync of a job started with
# --initial-sync is applied (recorded done) and a change committed now is checkpointed.
# POLL: seconds between looks (0.25; a benchmark timing the sync looks every 0.05, as
# e2e_wait_checkpoint does, so that its figure is the sync's and not the poll's).
e2e_wait_synced() {
    local lsn deadline=$((SECONDS + ${1:-120}))
    while [ "$(e2e_copying)" != 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep "${2:-0.25}"
    done
    lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
    e2e_wait_checkpoint "$lsn" "${1:-120}"
}

# e2e_wait_resynced [SECONDS]: waits until every copy request (initial sync, `job resync`,
# `verify --repair`) is recorded done and a change committed now is checkpointed. Fails on
# timeout, or at once when the daemon whose pid is in $daemon has died.
e2e_wait_resynced() {
    local lsn i
    for i in $(seq 1 $((${1:-120} * 4))); do
        if [ -n "${daemon:-}" ] && ! kill -0 "$daemon" 2>/dev/null; then
            log "the daemon (pid $daemon) is gone"
            return 2
        fi
        [ "$(psql_q "SELECT count(*) FROM dwasync.copy_request WHERE NOT done")" = 0 ] && break
        sleep 0.25
    done
    [ "$(psql_q "SELECT count(*) FROM dwasync.copy_request WHERE NOT done")" = 0 ] || return 1
    lsn=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
    e2e_wait_checkpoint "$lsn" "${1:-120}"
}

# e2e_wait_replayed [SECONDS] [POLL]: waits until no error row is `replaying` (the daemon or
# a CLI replay has worked through what was queued). Fails on timeout, or at once when the
# daemon whose pid is in $daemon has died. POLL: seconds between looks (0.25; a benchmark
# timing the replay looks every 0.05, as e2e_wait_synced does; each look stops at the first
# row replaying, so looking often costs the server little).
e2e_wait_replayed() {
    local deadline=$((SECONDS + ${1:-120}))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ -n "${daemon:-}" ] && ! kill -0 "$daemon" 2>/dev/null; then
            log "the daemon (pid $daemon) is gone"
            return 2
        fi
        [ "$(psql_q "SELECT NOT EXISTS (SELECT FROM dwasync.error WHERE status = 'replaying')")" = t ] &&
            return 0
        sleep "${2:-0.25}"
    done
    return 1
}

# e2e_history_rewinds SET COLUMN [TYPE]: loads dvemu's write history of SET into table
# dv.history (one jsonb document a write) and prints the largest number of times one row's
# COLUMN (compared as TYPE, default text) went back to a smaller value: 0 when every row
# moved forward only. Without crashes it must be 0; a kill -9 may rewind a row once (the
# slot redelivers from the last checkpoint). Fails when the history dropped entries.
e2e_history_rewinds() {
    local dropped
    curl -sf "$DVEMU_URL/_dvemu/history?table=$1" >"$DW_E2E_DIR/history.json" ||
        die "cannot read dvemu's history of $1"
    dropped=$(jq .dropped "$DW_E2E_DIR/history.json")
    [ "$dropped" = 0 ] || { log "dvemu's history dropped $dropped entries"; return 1; }
    psql -X -qAt -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning;
        CREATE SCHEMA IF NOT EXISTS dv; DROP TABLE IF EXISTS dv.history;
        CREATE TABLE dv.history (doc jsonb); CREATE TEMP TABLE raw (t text);
        COPY raw FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
        INSERT INTO dv.history SELECT jsonb_array_elements(t::jsonb->'value') FROM raw" \
        <"$DW_E2E_DIR/history.json" >/dev/null || die "loading dvemu's history of $1 failed"
    psql_q "WITH h AS (SELECT (doc->>'seq')::bigint seq, doc->>'id' id, (doc->'row'->>'$2')::${3:-text} v
                         FROM dv.history WHERE doc->>'op' <> 'delete'),
                 steps AS (SELECT id, v < lag(v) OVER (PARTITION BY id ORDER BY seq) AS back FROM h)
            SELECT coalesce(max(n), 0) FROM (SELECT id, count(*) FILTER (WHERE back) n FROM steps GROUP BY id) x"
}

#!/usr/bin/env bash
# Hostile input around maps and the daemon (issue 16): a map file whose entity set carries
# CR/LF is refused at import; a map row edited in the database the same way is refused when
# the daemon loads it, and nothing is sent; the daemon refuses to stream from a slot that is
# not its own; the daemon runs as a member of dwasync_runner (least privilege) and applies
# everything; `map export` never writes through a planted link; CLI runs are not dumpable.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
dw_mktemp work maps-hostile
show_log_on_failure "$work/run1.log" "$work/run2.log" "$work/run3.log"
writes() { dvemu_admin GET counters | jq '[.requests | to_entries[] | select(.key | test("^(POST|PATCH|DELETE) (?!token)")) | .value] | add // 0'; }

# --- import: CR/LF in an entity set -------------------------------------------------------
python3 - "$DW_SAMPLE_DIR/fno-sample.map.json" "$work/evil.map.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["job"]["name"] = "evil"
doc["groups"][0]["maps"][0]["target"]["entity_set"] = "accounts HTTP/1.1\r\nX-Injected: 1\r\n\r\nDELETE /api/data/v9.2/accounts"
json.dump(doc, open(sys.argv[2], "w"))
PY
out=$(dw map import "$work/evil.map.json" 2>&1); status=$?
check_eq "CR/LF entity set refused at import" 1 "$status"
check_contains "the error names the rule" "must be a Dataverse name" "$out"
check_eq "nothing imported" 0 "$(psql_q "SELECT count(*) FROM dwasync.job WHERE name = 'evil'")"

# --- the daemon validates what it loads ---------------------------------------------------
dw job start fno_sample >/dev/null 2>&1 || die "job start failed"
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
orig=$(psql_q "SELECT target_entity_set FROM dwasync.table_map WHERE id = (SELECT min(id) FROM dwasync.table_map)")
psql_q "UPDATE dwasync.table_map SET target_entity_set = E'accounts HTTP/1.1\r\nX-Injected: 1'
         WHERE id = (SELECT min(id) FROM dwasync.table_map)"
psql_q "SELECT dwasync.set_job_state('fno_sample', 'start')" >/dev/null
e2e_load_sample
before=$(writes)
timeout 120 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
    >"$work/run1.log" 2>&1
status=$?
check_eq "the daemon refuses maps edited in the database" 1 "$([ "$status" -ne 0 ] && [ "$status" -ne 124 ] && echo 1 || echo 0)"
check_contains "and says which" "must be a Dataverse name" "$(cat "$work/run1.log")"
check_eq "no write was sent" "$before" "$(writes)"
check_eq "the slot kept every change (nothing confirmed)" t \
    "$(psql_q "SELECT confirmed_flush_lsn < pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'")"

# --- the daemon streams only from its own slot --------------------------------------------
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
psql_q "UPDATE dwasync.table_map SET target_entity_set = '$orig'
         WHERE id = (SELECT min(id) FROM dwasync.table_map)"
psql_q "SELECT pg_drop_replication_slot('dwasync_fno_sample')" >/dev/null
psql_q "SELECT pg_create_logical_replication_slot('dwasync_fno_sample', 'test_decoding')" >/dev/null
psql_q "SELECT dwasync.set_job_state('fno_sample', 'start')" >/dev/null
timeout 120 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
    >"$work/run2.log" 2>&1
status=$?
check_eq "the daemon refuses a slot of another plugin" 1 "$([ "$status" -ne 0 ] && [ "$status" -ne 124 ] && echo 1 || echo 0)"
check_contains "and names it" 'it decodes with plugin \"test_decoding\"' "$(cat "$work/run2.log")"
check_eq "the foreign slot is untouched" test_decoding \
    "$(psql_q "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'")"

# --- the daemon as dwasync_runner ---------------------------------------------------------
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
psql_q "SELECT pg_drop_replication_slot('dwasync_fno_sample')" >/dev/null
out=$(dw job start fno_sample --initial-sync 2>&1) || die "job start --initial-sync failed: $out"
psql_q "CREATE ROLE dw_runner LOGIN REPLICATION IN ROLE dwasync_runner;
        GRANT USAGE ON SCHEMA fno TO dw_runner; GRANT SELECT ON ALL TABLES IN SCHEMA fno TO dw_runner"
sed "s|^conninfo = .*|conninfo = $DW_PG_CONNINFO user=dw_runner|" "$DW_E2E_CONF" >"$work/runner.conf"
timeout 300 "$DWASYNC_BIN" --config "$work/runner.conf" run --job fno_sample --until-caught-up \
    >"$work/run3.log" 2>&1
check_eq "the daemon runs as a dwasync_runner member" 0 $?
check_eq "and applies everything" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q 'SELECT count(*) FROM dwasync.error')"
check_eq "it is not the schema owner" f \
    "$(psql_q "SELECT pg_has_role('dw_runner', (SELECT nspowner FROM pg_namespace WHERE nspname = 'dwasync'), 'MEMBER')")"

# --- map export through a planted link ----------------------------------------------------
echo "precious" >"$work/victim"
ln -s "$work/victim" "$work/out.json.tmp"
out=$(dw map export fno_sample "$work/out.json" 2>&1); status=$?
check_eq "export succeeds" 0 "$status"
check_eq "the planted link's target is untouched" precious "$(cat "$work/victim")"
check_eq "the export is a map file" fno_sample "$(jq -r .job.name "$work/out.json")"
check_eq "no temporary file is left" out.json.tmp "$(ls "$work" | grep '^out\.json\.')"

# --- CLI runs are not dumpable --------------------------------------------------------------
user=$(pg_os_user)
mkfifo "$work/conf.fifo"
chmod 755 "$work"
chmod 666 "$work/conf.fifo"
uid=$(id -u "$user")
# The config is read from a FIFO nobody writes to: the process waits there, long enough to look.
setpriv --reuid="$uid" --regid="$(id -g "$user")" --clear-groups "$DWASYNC_BIN" --config "$work/conf.fifo" check >/dev/null 2>&1 &
pid=$!
on_exit "kill $pid"
setpriv --reuid="$uid" --regid="$(id -g "$user")" --clear-groups sleep 600 &
control=$!
on_exit "kill $control"
for i in $(seq 1 200); do [ "$(stat -c %u /proc/$control/environ 2>/dev/null)" = "$uid" ] && break; sleep 0.05; done
check_eq "an ordinary process of that user owns its /proc files" "$uid" "$(stat -c %u /proc/$control/environ)"
# Opening the FIFO's write end returns once dwasync has opened it to read: past main's start.
( exec 7>"$work/conf.fifo"; echo opened >"$work/opened"; exec sleep 600 ) &
on_exit "kill $!"
for i in $(seq 1 600); do [ -s "$work/opened" ] && break; sleep 0.05; done
check_eq "dwasync's are root's: PR_SET_DUMPABLE is 0 (no core file)" 0 "$(stat -c %u /proc/$pid/environ)"

finish

#!/usr/bin/env bash
# Least privilege in the control schema (issue 16): a job's slot and publication are named
# after it and no role can point them elsewhere; dwasync_admin changes a job's state only
# through dwasync.set_job_state (what the CLI calls); `job drop` refuses a slot that is not a
# logical pgoutput slot of this database; an upgrade resets names written before; and
# dwasync_runner holds what the daemon needs.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start

dw_mktemp work roles
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$work/owner.conf"
"$DWASYNC_BIN" --config "$work/owner.conf" init >/dev/null 2>&1 || die "init failed"
dw() { "$DWASYNC_BIN" --config "$work/owner.conf" "$@"; }
dw job create sales >/dev/null 2>&1 || die "job create failed"
dw job create hr >/dev/null 2>&1 || die "job create failed"

psql_q "CREATE ROLE bob LOGIN IN ROLE dwasync_admin; CREATE ROLE runner LOGIN REPLICATION IN ROLE dwasync_runner"
as_bob() { psql -X -qAt -v ON_ERROR_STOP=1 -U bob -c "$1" 2>&1; }
printf '[source]\nconninfo = %s user=bob\n' "$DW_PG_CONNINFO" >"$work/bob.conf"

# --- the admin role cannot retarget a job -------------------------------------------------
for sql in "UPDATE dwasync.job SET slot_name = 'standby_1' WHERE name = 'sales'" \
           "UPDATE dwasync.job SET publication_name = 'other_pub' WHERE name = 'sales'" \
           "UPDATE dwasync.job SET state = 'active' WHERE name = 'sales'" \
           "UPDATE dwasync.job SET name = 'sales2' WHERE name = 'sales'" \
           "INSERT INTO dwasync.job (name, state) VALUES ('evil', 'active')"; do
    out=$(as_bob "$sql"); status=$?
    check_eq "admin refused: $sql" 1 "$status"
    check_contains "with a privilege error: $sql" "permission denied" "$out"
done
out=$(as_bob "INSERT INTO dwasync.job (name, slot_name, publication_name) VALUES ('mine', 'standby_1', 'other_pub') RETURNING slot_name || ' ' || publication_name")
check_eq "a slot named on INSERT is replaced by the job's own" "dwasync_mine dwasync_mine" "$out"
check_eq "admin still edits what is theirs" "" \
    "$(as_bob "UPDATE dwasync.job SET environment_url = 'https://x.crm.dynamics.com' WHERE name = 'sales'")"

# Not even the schema owner: the names are derived, the job is not renamed.
psql_q "UPDATE dwasync.job SET slot_name = 'standby_1', publication_name = 'other_pub' WHERE name = 'sales'"
check_eq "the owner's UPDATE of the names is overridden" "dwasync_sales dwasync_sales" \
    "$(psql_q "SELECT slot_name || ' ' || publication_name FROM dwasync.job WHERE name = 'sales'")"
out=$(psql_try "UPDATE dwasync.job SET name = 'renamed' WHERE name = 'sales'" 2>&1); status=$?
check_eq "a job is not renamed" 1 "$status"
check_contains "renaming says why" "cannot be renamed" "$out"

# --- state changes through the function and the CLI, as the admin role --------------------
check_eq "admin starts through set_job_state" stopped "$(as_bob "SELECT dwasync.set_job_state('hr', 'start')")"
check_eq "a change that does not apply returns NULL" "" "$(as_bob "SELECT dwasync.set_job_state('hr', 'resume')")"
out=$(as_bob "SELECT dwasync.set_job_state('hr', 'delete')"); status=$?
check_eq "an unknown verb is refused" 1 "$status"
check_contains "an unknown verb is named" 'unknown job state change "delete"' "$out"
out=$("$DWASYNC_BIN" --config "$work/bob.conf" job pause hr 2>&1); status=$?
check_eq "admin pauses with the CLI" 0 "$status"
out=$("$DWASYNC_BIN" --config "$work/bob.conf" job stop hr 2>&1); status=$?
check_eq "admin stops with the CLI" 0 "$status"
check_eq "state and stop time recorded" "stopped|true" \
    "$(psql_q "SELECT state || '|' || (stopped_at IS NOT NULL)::text FROM dwasync.job WHERE name = 'hr'")"
check_eq "five SECURITY DEFINER functions pin their search_path" 0 \
    "$(psql_q "SELECT count(*) FROM pg_proc WHERE pronamespace = 'dwasync'::regnamespace AND prosecdef
               AND NOT coalesce(proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false)")"

# --- job drop checks the slot is its own ----------------------------------------------------
# A physical slot (a standby's) and a logical slot of another plugin squat the jobs' names.
psql_q "SELECT pg_create_physical_replication_slot('dwasync_sales')" >/dev/null
psql_q "SELECT pg_create_logical_replication_slot('dwasync_hr', 'test_decoding')" >/dev/null
out=$(dw job drop sales --yes 2>&1); status=$?
check_eq "drop refuses a physical slot" 1 "$status"
check_contains "the refusal names the slot and its kind" \
    'is not job \"sales\"'"'"'s: it is a physical slot' "$out"
out=$(dw check 2>&1)
check_contains "check reports the squatted slot with the same rule" \
    'SLOT003 job "sales": replication slot "dwasync_sales" is not job "sales"'"'"'s: it is a physical slot' "$out"
out=$(dw job drop hr --yes 2>&1); status=$?
check_eq "drop refuses a slot of another plugin" 1 "$status"
check_contains "the refusal names the plugin" 'it decodes with plugin \"test_decoding\"' "$out"
check_eq "both slots are still there" 2 \
    "$(psql_q "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('dwasync_sales', 'dwasync_hr')")"
check_eq "both jobs are still there" 2 "$(psql_q "SELECT count(*) FROM dwasync.job WHERE name IN ('sales', 'hr')")"
# A slot of the same name in another database is not this job's either.
psql_q "SELECT pg_drop_replication_slot('dwasync_hr')" >/dev/null
psql_q "CREATE DATABASE otherdb"
psql_q "SELECT pg_create_logical_replication_slot('dwasync_hr', 'pgoutput')" -d otherdb >/dev/null
out=$(dw job drop hr --yes 2>&1); status=$?
check_eq "drop refuses a slot of another database" 1 "$status"
check_contains "the refusal names the database" 'it belongs to database \"otherdb\"' "$out"
psql_q "SELECT pg_drop_replication_slot('dwasync_hr')" >/dev/null
psql_q "SELECT pg_create_logical_replication_slot('dwasync_hr', 'pgoutput')" >/dev/null
out=$(dw job drop hr --yes 2>&1); status=$?
check_eq "drop takes its own slot" 0 "$status"
check_eq "its own slot is gone" 0 "$(psql_q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dwasync_hr'")"

# --- upgrade: names written before 045 are reset ------------------------------------------
psql_q "CREATE DATABASE old"
mkdir "$work/share" "$work/share/sql"
for f in "$DWASYNC_SOURCE_DIR"/sql/0[0-3]*.sql; do cp "$f" "$work/share/sql/"; done
printf '[source]\nconninfo = %s\n' "${DW_PG_CONNINFO/dbname=postgres/dbname=old}" >"$work/old.conf"
DWASYNC_SHAREDIR=$work/share "$DWASYNC_BIN" --config "$work/old.conf" init >/dev/null 2>&1 ||
    die "init of the old schema failed"
psql_q "INSERT INTO dwasync.job (name, slot_name, publication_name) VALUES ('legacy', 'standby_1', 'other_pub')" -d old
out=$("$DWASYNC_BIN" --config "$work/old.conf" init 2>&1); status=$?
check_eq "upgrade succeeds" 0 "$status"
check_eq "upgrade resets the slot and publication" "dwasync_legacy dwasync_legacy" \
    "$(psql_q "SELECT slot_name || ' ' || publication_name FROM dwasync.job" -d old)"
check_eq "after the upgrade the admin role cannot set the state" 1 \
    "$(psql -X -qAt -v ON_ERROR_STOP=1 -U bob -d old -c "UPDATE dwasync.job SET state = 'active'" >/dev/null 2>&1; echo $?)"

# --- dwasync_runner: what the daemon writes, nothing an operator does ---------------------
as_runner() { psql -X -qAt -v ON_ERROR_STOP=1 -U runner -c "$1" 2>&1; }
jid=$(psql_q "SELECT id FROM dwasync.job WHERE name = 'sales'")
check_eq "runner writes its checkpoint" "" \
    "$(as_runner "INSERT INTO dwasync.checkpoint (job_id) VALUES ($jid) ON CONFLICT (job_id) DO UPDATE SET updated_at = now()")"
check_eq "runner writes its runner row" "" \
    "$(as_runner "INSERT INTO dwasync.runner (job_id, host, pid, version) VALUES ($jid, 'h', 1, 'v') ON CONFLICT (job_id) DO UPDATE SET heartbeat_at = now()")"
check_eq "runner records errors" 0 "$(as_runner "SELECT count(*) FROM dwasync.insert_errors('[]')")"
check_eq "runner records the initial sync" "" "$(as_runner "UPDATE dwasync.job SET initial_sync = 'done' WHERE id = $jid")"
for sql in "UPDATE dwasync.job SET slot_name = 'x'" \
           "UPDATE dwasync.table_map SET sequence = 5" \
           "DELETE FROM dwasync.job" \
           "SELECT dwasync.set_job_state('sales', 'start')"; do
    out=$(as_runner "$sql"); status=$?
    check_eq "runner refused: $sql" 1 "$status"
    check_contains "with a privilege error: $sql" "permission denied" "$out"
done

finish

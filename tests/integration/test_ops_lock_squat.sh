#!/usr/bin/env bash
# The job lock cannot be squatted. A role with only CONNECT, and a dwasync_admin member, try
# every way to hold a job's lock: the advisory lock the job lock used to be (held while the
# daemon starts), the job's lock table (dwasync.job_lock_<id>) in any mode. The daemon still becomes
# active and replicates (Dataverse equals the oracle). A privileged session that does hold
# the lock by hand is named by `status` (text and JSON) and `check` (LOCK001) as a foreign
# holder; the daemon waits as a standby meanwhile and takes over when that session ends.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
psql_q "CREATE ROLE squatter LOGIN; CREATE ROLE squatting_admin LOGIN IN ROLE dwasync_admin" ||
    die "cannot create the roles"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
job=$(psql_q "SELECT id FROM dwasync.job WHERE name = 'fno_sample'")

# The old attack: the advisory lock (class "dwas", the job id), held for the whole start-up.
for role in squatter squatting_admin; do
    psql -X -qAt -U $role -c "SELECT pg_advisory_lock(1685545331, $job)" -c "SELECT pg_sleep(600)" \
        >/dev/null 2>&1 &
    on_exit "kill $!"
done
for ((i = 0; i < 100; i++)); do
    [ "$(psql_q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $job")" -ge 1 ] && break
    sleep 0.1
done
check_eq "a squatter holds the advisory lock" 1 \
    "$(psql_q "SELECT (count(*) >= 1)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = $job AND granted")"

# The lock table exists once a runner asked for it (the daemon below, or this).
psql_q "SELECT dwasync.job_lock_relation($job)" >/dev/null
for role in squatter squatting_admin; do
    out=$(psql -X -qAt -U $role -c "SELECT dwasync.job_lock_relation($job)" 2>&1)
    check_contains "$role cannot create or name the lock table" "permission denied" "$out"
    out=$(psql -X -qAt -U $role -c "BEGIN" -c "LOCK TABLE dwasync.job_lock_$job IN EXCLUSIVE MODE" 2>&1)
    check_contains "$role cannot take the table lock" "permission denied" "$out"
    out=$(psql -X -qAt -U $role -c "BEGIN" -c "LOCK TABLE dwasync.job_lock_$job IN ACCESS SHARE MODE" 2>&1)
    check_contains "$role cannot take a weaker lock either" "permission denied" "$out"
done
e2e_start_daemon
check_status "the daemon is active despite the squatters" 0 e2e_wait_log daemon "acquired the job lock"
check_status "and replicates" 0 e2e_wait_synced
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "status: held by the runner, not foreign" "dwasync job lock false" \
    "$(dw status --json | jq -r '.jobs[0].lock | "\(.application_name) \(.foreign)"')"
check_contains "check: the lock is fine" "LOCK000" "$(dw check --job fno_sample --json 2>&1)"

# A privileged session (the owner, by hand) holding the lock is named as a foreign holder.
kill -TERM "$daemon"; wait "$daemon"; daemon=
PGAPPNAME=by-hand psql -X -qAt -c "BEGIN" \
    -c "LOCK TABLE dwasync.job_lock_$job IN EXCLUSIVE MODE" -c "SELECT pg_sleep(600)" \
    >/dev/null 2>&1 &
holder=$!
on_exit "kill $holder"
for ((i = 0; i < 100; i++)); do
    [ "$(dw status --json | jq -r '.jobs[0].lock.foreign')" = true ] && break
    sleep 0.1
done
st=$(dw status --json)
check_eq "status --json names the foreign holder" "by-hand postgres true" \
    "$(jq -r '.jobs[0].lock | "\(.application_name) \(.role) \(.foreign)"' <<<"$st")"
check_contains "status says so in words" "held by a foreign session" "$(dw status)"
out=$(dw check --job fno_sample 2>&1); status=$?
check_eq "check fails" 1 "$([ $status -ne 0 ] && echo 1)"
check_contains "check names it (LOCK001)" "LOCK001" "$out"
check_contains "with the application" "by-hand" "$out"
e2e_start_daemon
check_status "the daemon waits as a standby" 0 e2e_wait_log daemon "waiting as a standby"
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 7" >/dev/null
# Ended as the check's hint says (killing psql alone leaves its backend in pg_sleep).
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'by-hand'" >/dev/null
wait "$holder" 2>/dev/null
check_status "it takes over when the holder ends" 0 e2e_wait_log daemon "acquired the job lock" 2
check_status "and applies what was committed meanwhile" 0 e2e_wait_applied
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
finish

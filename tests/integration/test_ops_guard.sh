#!/usr/bin/env bash
# The environment guard (guard.h, sql/065): a job streams only between the source and the
# Dataverse environment it was started against. A refreshed environment (dvemu's
# organization id changed) and a swapped source cluster (the same port, the data directory
# re-initialised and the database restored from a dump: a new system identifier) each pause
# the job with a reason naming the old and the new identity, before anything is written;
# `job resume` does not get past the guard, `job relink` does, and the job then applies
# what changed meanwhile (the oracle is exact).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced || die "the sample was not applied"

# wait_sql SQL [SECONDS]: waits until SQL answers t (the daemon acts on its own schedule).
wait_sql() {
    local i
    for i in $(seq 1 $((${2:-60} * 5))); do
        [ "$(psql_try "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.2
    done
    return 1
}
written() { dvemu_admin GET counters | jq '[.rows_written[]] | add'; }
stop_daemon() { kill -TERM "$daemon" && wait "$daemon"; daemon=; }
identity() { psql_q "SELECT $1 FROM dwasync.job_identity i JOIN dwasync.job j ON j.id = i.job_id"; }

org_before=$(dvemu_api GET WhoAmI | jq -r .OrganizationId)
sysid_before=$(psql_q "SELECT system_identifier FROM pg_control_system()")
check_eq "the first start recorded the organization" "$org_before" "$(identity organization_id)"
check_eq "the first start recorded the source's system identifier" "$sysid_before" \
    "$(identity source_system_id)"
check_eq "the first start recorded the Dataverse URL" "$DVEMU_URL" "$(identity dataverse_url)"

# --- a refreshed Dataverse environment ------------------------------------------------------
stop_daemon
org_after=6f0c5a52-1d2e-4c3b-9a8f-0e1d2c3b4a59
dvemu_admin POST organization "{\"OrganizationId\": \"$org_after\"}" >/dev/null
check_eq "dvemu answers the new organization" "$org_after" "$(dvemu_api GET WhoAmI | jq -r .OrganizationId)"
psql_q "UPDATE fno.currencies SET name = 'Euro (guarded)' WHERE currencycode = 'EUR'"
before=$(written)
e2e_start_daemon
check_status "the guard pauses the job" 0 wait_sql \
    "SELECT state = 'paused' AND state_reason LIKE 'environment guard:%' FROM dwasync.job"
reason=$(psql_q "SELECT state_reason FROM dwasync.job")
check_contains "the reason names the old organization" "was organization $org_before at $DVEMU_URL" "$reason"
check_contains "the reason names the new organization" "now organization $org_after at $DVEMU_URL" "$reason"
check_contains "the reason says the source is unchanged" "the source is unchanged (system $sysid_before" "$reason"
check_eq "nothing was written while paused" "$before" "$(written)"
status_out=$(dw status 2>&1)
check_contains "status shows the guard's reason" "environment guard: the source is unchanged" "$status_out"
port=$(grep -o 'serving /metrics and /healthz on port [0-9]*' "$DW_E2E_DIR/daemon.log" | tail -1 |
    awk '{print $NF}')
healthz=$(curl -s "http://127.0.0.1:$port/healthz")
check_contains "/healthz says why the job is paused" "job is paused: environment guard: " "$healthz"
check_out=$(dw check --job fno_sample 2>&1)
check_contains "check reports the guard's pause" "paused by the environment guard" "$check_out"
check_eq "the daemon waits (it did not exit)" 0 "$(kill -0 "$daemon" 2>/dev/null; echo $?)"

# Resuming is not relinking: the guard pauses the job again, still writing nothing.
seen_at=$(identity "seen_at")
dw job resume fno_sample >/dev/null 2>&1 || die "job resume failed"
check_status "a resumed job is paused again by the guard" 0 wait_sql \
    "SELECT i.seen_at > '$seen_at' AND j.state = 'paused' FROM dwasync.job_identity i
       JOIN dwasync.job j ON j.id = i.job_id"
check_eq "nothing was written after the resume" "$before" "$(written)"

relink_out=$(dw job relink fno_sample 2>&1)
check_contains "relink accepts the new organization" "organization $org_after" "$relink_out"
check_eq "relink records the new organization" "$org_after" "$(identity organization_id)"
check_eq "relink resumes the job" "active" "$(psql_q "SELECT state FROM dwasync.job")"
check_eq "relink to another environment keeps the checkpoint" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.checkpoint WHERE confirmed_lsn = '0/0'")"
check_status "the change made meanwhile is applied" 0 e2e_wait_applied 60
check_eq "Dataverse equals the source (oracle)" 0 "$(e2e_mismatches)"
check_eq "relink with nothing to accept fails" 1 "$(dw job relink fno_sample >/dev/null 2>&1; echo $?)"

# --- a swapped source cluster: same port, re-initialised, restored from a dump ----------------
stop_daemon
dw_mktemp swap swap
pg_dump -Fc -f "$swap/db.dump" postgres || die "pg_dump failed"
cp "$PGDATA/postgresql.conf" "$PGDATA/pg_hba.conf" "$swap/"
pg_stop
rm -rf "$PGDATA"
as_pg_user "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$swap/initdb.log" 2>&1 || die "initdb failed"
cp "$swap/postgresql.conf" "$swap/pg_hba.conf" "$PGDATA/"
[ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$PGDATA/postgresql.conf" "$PGDATA/pg_hba.conf"
as_pg_user "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DW_PG_DIR/server.log" -w -t 60 start >/dev/null ||
    die "the new cluster did not start"
# (A fresh database already has schema public: that one error is expected.)
pg_restore -d postgres "$swap/db.dump" 2>"$swap/restore.log" || log "$(cat "$swap/restore.log")"
[ "$(psql_q "SELECT count(*) FROM dwasync.job")" = 1 ] || die "the dump was not restored"
sysid_after=$(psql_q "SELECT system_identifier FROM pg_control_system()")
[ "$sysid_after" != "$sysid_before" ] || die "the new cluster has the old system identifier"
psql_q "UPDATE fno.currencies SET name = 'Euro (restored)' WHERE currencycode = 'EUR'"
before=$(written)
e2e_start_daemon
check_status "the guard pauses the job on the swapped source" 0 wait_sql \
    "SELECT state = 'paused' AND state_reason LIKE 'environment guard: the source changed%'
       FROM dwasync.job"
reason=$(psql_q "SELECT state_reason FROM dwasync.job")
check_contains "the reason names the old source" "was system $sysid_before, timeline 1, database \"postgres\"" "$reason"
check_contains "the reason names the new source" "now system $sysid_after, timeline 1, database \"postgres\"" "$reason"
check_contains "the reason says the environment is unchanged" "the environment is unchanged (organization $org_after" "$reason"
check_eq "nothing was written while paused" "$before" "$(written)"
check_eq "no replication slot was created on the new source" 0 \
    "$(psql_q "SELECT count(*) FROM pg_replication_slots")"

stop_daemon
relink_out=$(dw job relink fno_sample --resync 2>&1)
check_contains "relink accepts the new source" "source system $sysid_after" "$relink_out"
check_contains "relink says the new source has no slot" "does not exist on this source" "$relink_out"
check_eq "relink --resync queues nothing without a slot" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.copy_request WHERE kind = 'resync'")"
check_eq "relink to another cluster resets the checkpoint (its WAL is numbered anew)" "0/0" \
    "$(psql_q "SELECT confirmed_lsn FROM dwasync.checkpoint")"
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start --initial-sync failed"
e2e_start_daemon
e2e_wait_synced || die "the copy of the new source was not applied"
check_eq "Dataverse equals the restored source (oracle)" 0 "$(e2e_mismatches)"
check_eq "the restored row's value reached Dataverse" "Euro (restored)" \
    "$(dvemu_api GET "transactioncurrencies?\$filter=isocurrencycode%20eq%20'EUR'&\$select=currencyname" | jq -r '.value[0].currencyname')"
finish

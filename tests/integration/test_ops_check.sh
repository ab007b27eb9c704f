#!/usr/bin/env bash
# dwasync check: a sound setup passes (exit 0); each failing prerequisite is reported with
# its code and makes the exit status 1: invalid config, missing and world-readable secret,
# unreachable Postgres, wal_level replica, role without REPLICATION, schema not installed,
# unknown job, a running job without slot or publication, a mapped table not published,
# an active job without a live runner, idle dwasync slots retaining WAL (a job's and one
# `decode` created), unreachable authority, wrong client secret, a mapped Dataverse table that does not exist.
# Dataverse is a minimal stand-in (dw_ops_harness fakedv): token endpoint and WhoAmI.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start "max_slot_wal_keep_size = 1GB"
dw_mktemp work check
"$DWASYNC_BUILD_DIR/bin/dw_ops_harness" fakedv 127.0.0.1:0 s3cr3t-value >"$work/fakedv.out" 2>/dev/null &
fakedv=$!
on_exit "kill $fakedv"
for _ in $(seq 100); do [ -s "$work/fakedv.out" ] && break; sleep 0.1; done
dv="http://127.0.0.1:$(awk '{print $2}' "$work/fakedv.out")"
good_conninfo=$DW_PG_CONNINFO
secret=$work/client-secret
printf 's3cr3t-value\n' >"$secret"
chmod 600 "$secret"
write_conf() {   # write_conf CONNINFO [SECRET [DATAVERSE]]
    printf '[source]\nconninfo = %s\n[dataverse]\nallow_insecure_http = true\nurl = %s\nauthority = %s\n' "$1" "${3:-$dv}" "${3:-$dv}" >"$work/c.conf"
    printf 'tenant_id = t\nclient_id = c\nclient_secret_file = %s\n' "${2:-$secret}" >>"$work/c.conf"
}
chk() { "$DWASYNC_BIN" --config "$work/c.conf" check "$@" 2>"$work/stderr"; }

write_conf "$good_conninfo"
out=$(chk); status=$?
check_eq "schema missing: exit 1" 1 "$status"
check_contains "schema missing: CTL001" "error   CTL001  the control schema is not installed" "$out"
check_contains "hint follows the finding" "fix: Run dwasync init." "$out"

"$DWASYNC_BIN" --config "$work/c.conf" init >/dev/null 2>&1 || die "init failed"
out=$(chk); status=$?
check_eq "sound setup: exit 0" 0 "$status"
check_contains "sound setup: no errors" "0 errors" "$out"
check_contains "keep size noted" "note    PG005   max_slot_wal_keep_size is 1GB" "$out"
out=$("$DWASYNC_BIN" --verbose --config "$work/c.conf" check 2>/dev/null)
check_contains "--verbose lists passing checks" "ok      PG003   wal_level is logical" "$out"
check_contains "token obtained and WhoAmI answers" "ok      DV003   WhoAmI answers (user 11111111-2222-3333-4444-555555555555)" "$out"
check_eq "secret never printed" 0 "$(grep -c s3cr3t-value <<<"$out$(cat "$work/stderr")")"

json=$(chk --json)
check_eq "json findings have code, severity, job, message, hint" '["code","hint","job","message","severity"]' \
    "$(jq -c '.findings[0] | keys' <<<"$json")"
check_eq "json: no error findings" 0 "$(jq '[.findings[] | select(.severity == "error")] | length' <<<"$json")"

chmod 644 "$secret"
out=$(chk); status=$?
check_eq "world-readable secret: exit 1" 1 "$status"
check_contains "world-readable secret: SEC002" "error   SEC002  [dataverse] client_secret_file: \"$secret\" has mode 0644" "$out"
chmod 600 "$secret"
write_conf "$good_conninfo" "$work/absent"
out=$(chk); status=$?
check_eq "missing secret: exit 1" 1 "$status"
check_contains "missing secret: SEC001" "SEC001  [dataverse] client_secret_file: \"$work/absent\" cannot be read" "$out"

printf '[source]\nconninfo = %s\n[dataverse]\nallow_insecure_http = true\nurl = %s\nauthority = %s\ntenant_id = t\nclient_id = c\n' "$good_conninfo" "$dv" "$dv" >"$work/c.conf"
printf 'certificate_file = %s/absent.pem\nprivate_key_file = %s\n' "$work" "$secret" >>"$work/c.conf"
out=$(chk); status=$?
check_eq "missing certificate: exit 1" 1 "$status"
check_contains "missing certificate: SEC005" "SEC005  [dataverse] certificate_file: \"$work/absent.pem\" cannot be read" "$out"

printf 'wrong-secret\n' >"$work/wrong"
chmod 600 "$work/wrong"
write_conf "$good_conninfo" "$work/wrong"
out=$(chk); status=$?
check_eq "wrong client secret: exit 1" 1 "$status"
check_contains "wrong client secret: DV002" "error   DV002   cannot obtain an access token from the authority" "$out"
check_contains "wrong client secret: the authority's answer is logged" "invalid_client" "$(cat "$work/stderr")"
check_eq "wrong secret never printed" 0 "$(grep -c wrong-secret <<<"$out$(cat "$work/stderr")")"
write_conf "$good_conninfo" "$secret" "http://127.0.0.1:1"
out=$(chk); status=$?
check_eq "unreachable authority: exit 1" 1 "$status"
check_contains "unreachable authority: DV002" 'error   DV002   cannot reach the authority "http://127.0.0.1:1"' "$out"

printf '[source]\nconninfo = x\nbogus = 1\n' >"$work/c.conf"
out=$(chk); status=$?
check_eq "invalid config: exit 1" 1 "$status"
check_contains "invalid config: CFG001 names line and key" 'CFG001  config' "$out"
check_contains "invalid config: the problem itself" 'c.conf:3: unknown key "bogus"' "$out"

write_conf "host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=3"
out=$(chk); status=$?
check_eq "unreachable Postgres: exit 1" 1 "$status"
check_contains "unreachable Postgres: PG001" "error   PG001   cannot connect to the source database" "$out"

psql_q "create role norepl login"
write_conf "${good_conninfo/user=postgres/user=norepl}"
out=$(chk); status=$?
check_eq "no REPLICATION: exit 1" 1 "$status"
check_contains "no REPLICATION: PG004" 'error   PG004   role "norepl" lacks the REPLICATION attribute' "$out"

write_conf "$good_conninfo"
out=$(chk --job nope); status=$?
check_eq "unknown job: exit 1" 1 "$status"
check_contains "unknown job: JOB001" 'JOB001  job "nope": job "nope" does not exist' "$out"

# A stopped job without slot and publication is fine (job start creates them) ...
psql_q "create table custtable (id int primary key, name text)"
psql_q "create table other (id int primary key)"
psql_q "insert into dwasync.job (name, slot_name, publication_name) values ('crm', 'dwasync_crm', 'dwasync_crm')"
psql_q "insert into dwasync.table_group (job_id, name) select id, 'g' from dwasync.job"
psql_q "$(cat <<'SQL'
insert into dwasync.table_map (job_id, group_id, sequence, name, source_table, target_entity_set,
       target_logical_name, key_mapping)
select j.id, g.id, 1, 'customers', 'custtable', 'accounts', 'account',
       '[{"target": "accountnumber", "source": "id"}]'
  from dwasync.job j join dwasync.table_group g on g.job_id = j.id
SQL
)"
out=$(chk --job crm); status=$?
check_eq "stopped job without slot: no slot or publication error" 0 \
    "$(grep -cE '^error +(SLOT|PUB)' <<<"$out")"
check_contains "stopped job: slot noted" 'note    SLOT001 job "crm": replication slot "dwasync_crm" does not exist' "$out"
# ... a running one is not.
psql_q "update dwasync.job set state = 'active'"
out=$(chk --job crm); status=$?
check_eq "active job without slot: exit 1" 1 "$status"
check_contains "active job: SLOT001 error" 'error   SLOT001 job "crm"' "$out"
check_contains "active job: PUB001 error" 'error   PUB001  job "crm": publication "dwasync_crm" does not exist' "$out"
psql_q "select pg_create_logical_replication_slot('dwasync_crm', 'pgoutput')" >/dev/null
psql_q "create publication dwasync_crm for table other"
out=$(chk --job crm); status=$?
check_eq "mapped table not published: exit 1" 1 "$status"
check_contains "PUB003 names the table" 'PUB003  job "crm": mapped table "public.custtable" is not in publication "dwasync_crm"' "$out"
psql_q "alter publication dwasync_crm add table custtable"
out=$(chk --job crm); status=$?
check_eq "mapped Dataverse table missing: exit 1" 1 "$status"
check_contains "DV004 names map and table" 'error   DV004   job "crm": map "customers": Dataverse table "account" does not exist' "$out"
check_contains "an active job without a runner: RUN001" \
    'error   RUN001  job "crm": the job is active but no runner has ever run it' "$out"
check_eq "Postgres prerequisites met (DV004 and RUN001 only)" 2 "$(grep -c '^error' <<<"$out")"
out=$("$DWASYNC_BIN" --verbose --config "$work/c.conf" check --job crm 2>/dev/null)
check_contains "slot reported healthy" 'SLOT000 job "crm": slot "dwasync_crm" is healthy (wal_status reserved)' "$out"

# Slots nobody consumes hold WAL back: the job's own (its runner is not running) and one
# that `dwasync decode` created, which belongs to no job.
"$DWASYNC_BIN" --config "$work/c.conf" decode --publication dwasync_crm --create-slot \
    --until-caught-up >/dev/null 2>"$work/decode.err" || die "decode failed: $(cat "$work/decode.err")"
psql_q "insert into other select generate_series(1, 1000)"
out=$(chk); status=$?
check_contains "idle job slot: SLOT004" \
    'warning SLOT004 job "crm": slot "dwasync_crm" is inactive and retains' "$out"
check_contains "idle decode slot: SLOT004" \
    'warning SLOT004 slot "dwasync_decode" is inactive, belongs to no job and retains' "$out"
psql_q "select pg_drop_replication_slot('dwasync_decode')" >/dev/null
# A runner that died: its heartbeat is in the runner row, nobody holds the lock.
psql_q "insert into dwasync.runner (job_id, host, pid, version, heartbeat_at)
        select id, 'h', 1, 'v', now() - interval '300 seconds' from dwasync.job"
out=$(chk --job crm); status=$?
check_contains "a dead runner: RUN001 with its last heartbeat" \
    'error   RUN001  job "crm": the job is active but no runner is alive (last heartbeat ' "$out"

# wal_level replica: a second cluster.
first_pgdata=$PGDATA first_bin=$(pg_bindir)
on_exit "as_pg_user '$first_bin/pg_ctl' -D '$first_pgdata' -m immediate stop"
pg_start "wal_level = replica" "max_wal_senders = 10"
write_conf "$DW_PG_CONNINFO"
out=$(chk); status=$?
check_eq "wal_level replica: exit 1" 1 "$status"
check_contains "wal_level replica: PG003" 'error   PG003   wal_level is "replica": logical decoding needs "logical"' "$out"
check_contains "unlimited keep size noted" "max_slot_wal_keep_size is unlimited" "$out"
check_status "unknown option is a usage error" 2 chk --bogus
finish

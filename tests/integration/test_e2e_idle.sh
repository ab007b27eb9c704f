#!/usr/bin/env bash
# An idle job pins no WAL: with the daemon running and nothing published changing (only
# other tables of the database are written), the slot's confirmed position follows the
# server's WAL, from the very start of the daemon (before any change was ever applied).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample >/dev/null 2>&1 || die "job start failed"
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
on_exit "kill -9 $daemon"
psql_q "CREATE TABLE public.elsewhere (id serial PRIMARY KEY, pad text)"
before=$(psql_q "SELECT pg_current_wal_flush_lsn()")
for _ in $(seq 1 20); do
    psql_q "INSERT INTO public.elsewhere (pad) SELECT repeat('x', 500) FROM generate_series(1, 2000)"
done
check_status "slot confirms WAL written to unpublished tables" 0 e2e_wait_applied 60
check_eq "the confirmed position moved past the 20 MB written elsewhere" 1 "$(psql_q "
    SELECT (pg_wal_lsn_diff(confirmed_flush_lsn, '$before') > 16 * 1024 * 1024)::int
      FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'")"
check_eq "nothing was written to Dataverse" 0 "$(e2e_rows accounts)"
finish

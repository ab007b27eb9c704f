#!/usr/bin/env bash
# kill -9 of `dwasync run`, three times, in the middle of a 100,000-change workload (500
# transactions updating every customer with an increasing credit limit, plus new customers
# with orders). After a restart the final Dataverse state equals the staging tables, no
# error rows exist, and every account's history in dvemu moves forward except where a crash
# rewound it: after a kill -9 the slot redelivers from the last checkpoint, so a key may go
# back once per crash (to a version at or after the checkpoint) and then forward again; it
# never goes back without a crash, and never more often than there were crashes.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_applied

# The workload, in the background: 500 transactions of 200 updates each, and every 50th
# transaction 20 new customers (with orders and lines) in both legal entities.
psql -X -q -v ON_ERROR_STOP=1 >"$DW_E2E_DIR/workload.log" 2>&1 <<'SQL' &
DO $$
BEGIN
    FOR tx IN 1..500 LOOP
        UPDATE fno.customersv3 SET creditlimit = 1000000 + tx;
        IF tx % 50 = 0 THEN
            PERFORM fno.sample_generate(20, 1000 + tx);
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.02);   -- paced: the kills below land while it runs
    END LOOP;
END $$;
SQL
workload=$!

kills=0
for delay in 2 3 3; do
    sleep "$delay"
    kill -0 $workload 2>/dev/null && kill -9 "$daemon" 2>/dev/null && kills=$((kills + 1))
    wait "$daemon" 2>/dev/null
    e2e_start_daemon
done
wait $workload
check_eq "workload committed" 0 $?
check_eq "daemon killed three times while the workload ran" 3 "$kills"
check_eq "100,000 updates committed" 1 "$(psql_q "SELECT (min(creditlimit) = 1000500)::int FROM fno.customersv3 WHERE customeraccount < 'C0000101'")"
check_status "everything applied after the crashes" 0 e2e_wait_applied 300
kill -TERM $daemon; wait $daemon
check_eq "last daemon stops cleanly" 0 $?
daemon=
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"

rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "the history holds many versions per account" 1 "$(psql_q "
    SELECT (count(*) > 5000)::int FROM dv.history WHERE doc->>'op' <> 'delete'")"
check_eq "each account went back at most once per crash" 1 "$([ "$rewinds" -le "$kills" ] && echo 1)"
starts=$(grep -c "streaming from" "$DW_E2E_DIR/daemon.log")
check_eq "each restart says where it streams from, never 0/0" "$((kills + 1)) 0" \
    "$starts $(grep -c "streaming from 0/0" "$DW_E2E_DIR/daemon.log")"
finish

#!/usr/bin/env bash
# Replay in bulk (issue 20): the daemon replays many parked rows in bulk requests, and the
# bad rows among them are isolated as the apply path isolates them.
# With the application user's write privilege on accounts revoked (dvemu), an update of every
# organization (160) is refused (open, privilege); then four of them name a customer group
# that does not exist in Dataverse, and the usmf ones (80) are renamed: 84 changes wait
# behind. The privilege is given back and `errors replay --all` asks the running daemon to
# replay (its replay_submit hands the writes to the sink): the 244 rows go in a handful of
# bulk requests of 40 rows (batch_size); the four bad
# changes are open again with class missing_parent, the renames behind them
# still wait, and every other row is resolved. Dataverse ends equal to the source except
# those four rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup >/dev/null
# Requests of 40 rows: the 244 rows fill several, and a replay keeps four in flight.
sed -i 's/^\[dataverse\]$/&\nbatch_size = 40/' "$DW_E2E_CONF"
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced || die "the sample was not applied"

writes() { # write requests so far (not the token's, nor dvemu's admin endpoints)
    curl -sf "$DVEMU_URL/_dvemu/counters" | jq -r '[.requests | to_entries[]
        | select((.key | split(" ")[0]) as $m
            | ($m == "POST" or $m == "PATCH" or $m == "DELETE")
                and (.key | test("token| admin ") | not))
        | .value] | add // 0'
}
BAD="'C0000001', 'C0000002', 'C0000003', 'C0000004'"
dvemu_admin POST privileges '{"revoke": [{"table": "accounts", "privilege": "write"}]}' >/dev/null
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1 WHERE partytype = 'Organization'"
psql_q "UPDATE fno.customersv3 SET customergroupid = '99'
         WHERE dataareaid = 'usmf' AND customeraccount IN ($BAD)"
psql_q "UPDATE fno.customersv3 SET organizationname = 'Renamed ' || customeraccount
         WHERE dataareaid = 'usmf' AND partytype = 'Organization'"
e2e_wait_applied || die "the changes were not applied"
check_eq "every organization's change is open, the later ones wait" "open 160|waiting 84" \
    "$(psql_q "SELECT string_agg(status || ' ' || n, '|' ORDER BY status) FROM (SELECT status,
                 count(*) n FROM dwasync.error GROUP BY status) s")"

dvemu_admin POST privileges '{"revoke": []}' >/dev/null
before=$(writes)
dw errors replay --all --job fno_sample >/dev/null || die "errors replay failed"
check_status "the daemon replayed every queued row" 0 e2e_wait_replayed 300
sent=$(($(writes) - before))
log "replay: $sent write requests"
# 244 rows are seven requests of 40; isolating the four bad rows takes a few more.
check_status "in a handful of bulk requests ($sent)" 0 test "$sent" -le 12
check_eq "exactly the bad rows are open again, their followers wait" \
    "$(for k in 1 2 3 4; do
        echo "C000000$k|open|missing_parent"
        echo "C000000$k|waiting|"
    done)" \
    "$(psql_q "SELECT source_key ->> 'customeraccount', status, coalesce(class, '')
                 FROM dwasync.error WHERE status NOT IN ('resolved', 'skipped')
                ORDER BY source_key ->> 'customeraccount', commit_lsn, position")"
check_eq "every other row is resolved" $((244 - 8)) \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'resolved'")"
# The oracle counts a row that differs once on each side: the four bad accounts are 8.
check_eq "Dataverse equals the source but for the four bad accounts" 8 \
    "$(e2e_mismatches 2>/dev/null)"

# Several bulk requests at once: 156 more refused updates (all but the bad accounts),
# replayed by their code while dvemu holds every answer for a second. Four requests of 40
# rows are handed to the sink together; the replay does not wait for one to be answered
# before it sends the next (it did: one batch_size of writes in flight).
dvemu_admin POST privileges '{"revoke": [{"table": "accounts", "privilege": "write"}]}' >/dev/null
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
         WHERE partytype = 'Organization' AND NOT (dataareaid = 'usmf' AND customeraccount IN ($BAD))"
e2e_wait_applied || die "the second updates were not applied"
check_eq "156 more changes are open" 156 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND dv_code = '0x80040220'")"
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
dvemu_admin DELETE counters >/dev/null
dvemu_admin POST faults '{"rates": {"slow": 1}, "slow_ms": 1000}' >/dev/null
dw errors replay --all --code 0x80040220 --job fno_sample >/dev/null || die "errors replay failed"
check_status "the daemon replayed them" 0 e2e_wait_replayed 300
dvemu_admin POST faults '{"rates": {}}' >/dev/null
counters=$(dvemu_admin GET counters)
log "second replay: $(jq -c '{requests, concurrent_peak}' <<<"$counters")"
check_eq "in four full requests" 4 "$(writes)"
check_status "several of them in flight at once" 0 \
    test "$(jq -r .concurrent_peak <<<"$counters")" -ge 2
check_eq "every one of them is resolved" $((244 - 8 + 156)) \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'resolved'")"
check_eq "Dataverse still equals the source but for the four bad accounts" 8 \
    "$(e2e_mismatches 2>/dev/null)"
finish

#!/usr/bin/env bash
# /metrics against ground truth after a restart: a restarted runner that received a backlog
# it cannot apply yet (Dataverse is down) reports as slot lag the WAL between the slot's
# confirmed position and what it received, bounded by what Postgres says the slot retains,
# not the absolute WAL position (what it reported until the first window was confirmed);
# dwasync_apply_window_bytes is set; changes received and applied by table and class, and
# the commit-to-applied histogram per map, count exactly the backlog; the initial sync's
# final progress line reports the exact totals.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
printf '\n[metrics]\nlisten = 127.0.0.1:0\n' >>"$DW_E2E_CONF"
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
e2e_wait_synced || die "the sample was not applied"

port() { sed -n 's/.*serving \/metrics and \/healthz on port \([0-9]*\).*/\1/p' "$DW_E2E_DIR/daemon.log" | tail -1; }
metric() { # metric NAME: the job's series of a gauge ("" when absent)
    local body
    body=$(curl -sf "http://127.0.0.1:$(port)/metrics")
    awk -v m="$1{job=\"fno_sample\"}" '$1 == m {print $2}' <<<"$body"
}
wait_metric_at_least() { # wait_metric_at_least NAME MIN: the registry refreshes once a second
    local i v
    for i in $(seq 1 300); do
        v=$(metric "$1")
        [ -n "$v" ] && [ "${v%.*}" -ge "$2" ] && return 0
        sleep 0.2
    done
    return 1
}
check_status "the last window's bytes are reported" 0 wait_metric_at_least dwasync_apply_window_bytes 1
copied=$(sed -n 's/.*initial sync done: \([0-9]*\) row(s) copied.*/\1/p' "$DW_E2E_DIR/daemon.log")
check_contains "the initial sync's final progress line has the exact totals" \
    "initial sync: $copied/$copied rows (100.0%)" "$(cat "$DW_E2E_DIR/daemon.log")"

kill -TERM "$daemon" && wait "$daemon"
e2e_start_daemon
for _ in $(seq 1 300); do
    [ "$(psql_q "SELECT active FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'")" = t ] && break
    sleep 0.2
done
curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=1" >/dev/null || die "outage failed"
lsn=$(e2e_commit_lsn "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1")
slot_lag() { psql_q "SELECT pg_wal_lsn_diff($1, confirmed_flush_lsn)::bigint FROM pg_replication_slots
                     WHERE slot_name = 'dwasync_fno_sample'"; }
least=$(slot_lag "'$lsn'")
check_status "the backlog shows as lag" 0 wait_metric_at_least dwasync_slot_lag_bytes "$least"
lag=$(metric dwasync_slot_lag_bytes)
most=$(slot_lag "pg_current_wal_lsn()")
absolute=$(psql_q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
check_status "lag ($lag) is at most what the slot retains ($most), not the WAL position ($absolute)" \
    0 test "${lag%.*}" -le "$most"
curl -sf -X POST "$DVEMU_URL/_dvemu/outage?on=0" >/dev/null
check_status "the backlog is applied after the outage" 0 e2e_wait_applied 120
check_eq "Dataverse equals the source (oracle)" 0 "$(e2e_mismatches)"

# Counters by table and class, and the latency histogram per map, against the source: the
# restarted runner received exactly one update per customer, applied each (no error).
series_sum() { # series_sum REGEX: the sum of the series whose line matches
    local body
    body=$(curl -sf "http://127.0.0.1:$(port)/metrics")
    awk -v re="$1" '$0 ~ re {s += $NF} END {print s + 0}' <<<"$body"
}
customers=$(psql_q "SELECT count(*) FROM fno.customersv3")
t='table="fno.customersv3"'
for _ in $(seq 1 50); do # the registry is refreshed once a second
    [ "$(series_sum "^dwasync_changes_applied_total[{].*class=\"update\".*$t")" = "$customers" ] && break
    sleep 0.2
done
check_eq "received: one update per customer" "$customers" \
    "$(series_sum "^dwasync_changes_received_total[{]class=\"update\",job=\"fno_sample\",$t")"
check_eq "applied: one update per customer" "$customers" \
    "$(series_sum "^dwasync_changes_applied_total[{]class=\"update\",job=\"fno_sample\",$t")"
check_eq "the latency histograms of the customer maps count them" "$customers" \
    "$(series_sum '^dwasync_commit_to_applied_seconds_count[{]job="fno_sample",map="customers_')"
check_eq "and every observation is under +Inf" "$customers" \
    "$(series_sum '^dwasync_commit_to_applied_seconds_bucket[{]job="fno_sample",map="customers_[a-z]*",le="[+]Inf"')"
check_eq "no error was counted" 0 "$(series_sum '^dwasync_errors_total[{]')"
finish

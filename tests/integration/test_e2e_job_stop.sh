#!/usr/bin/env bash
# "job stop" while the daemon streams, as an operator changes maps: stop, import, start. The
# daemon finishes what is in flight, closes its stream (the slot is kept, and no session
# holds it) and keeps its lock; a change committed meanwhile waits in the slot; "job start"
# resumes the same process with the new maps, so the change is applied through them and no
# restart of the service is needed (under systemd's Restart=on-failure, a daemon that ended
# on the stop stayed down). A second runner stays a standby throughout. The same holds for a
# failed job whose maps change before it is started again. Dropping the stopped job ends the
# holding daemon with status 0.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
# Dataverse has an on-hold option the sample's value map does not reach.
e2e_metadata '
attr(tables["account"], "msdyn_onholdstatus")["options"] += [{"value": 806380006, "label": "Legal hold"},
                                                           {"value": 806380007, "label": "Audit hold"}]'
e2e_setup >/dev/null
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log" "$DW_E2E_DIR/standby.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
# As dwasync.service runs it: no --job, the one job that is not stopped (found by its id
# from then on, so the stopped job is still its job).
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run >>"$DW_E2E_DIR/daemon.log" 2>&1 &
daemon=$!
first=$daemon
on_exit "kill -9 $first 2>/dev/null"
e2e_wait_synced || die "the sample was not applied"
e2e_runner standby; standby=$!
on_exit "kill -9 $standby 2>/dev/null"
check_status "a second runner waits as a standby" 0 e2e_wait_log standby "waiting as a standby"

onhold() { curl -sf "$DVEMU_URL/_dvemu/tables/accounts" |
    jq --arg a "$1" '[.value[] | select(.accountnumber == $a) | .msdyn_onholdstatus] | max'; }
import_onhold_6() { # import_onhold_6 OPTION: the exported maps, on-hold 6 sent to OPTION
    jq --argjson o "$1" '(.groups[].maps[] | select(.name == "customers_organizations")
        | .columns[] | select(.source == "ONHOLDSTATUS") | .value_map) += {"6": $o}' \
        "$DW_E2E_DIR/maps.json" >"$DW_E2E_DIR/maps-$1.json" && dw map import "$DW_E2E_DIR/maps-$1.json"
}
slot_held() { psql_q "SELECT active FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'"; }
wait_slot_free() { # up to 60 s: a bound for a hung test, not a timing assert
    local i
    for ((i = 0; i < 600; i++)); do
        [ "$(slot_held)" = f ] && return 0
        sleep 0.1
    done
    return 1
}
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
check_status "the daemon holds the stopped job" 0 \
    e2e_wait_log daemon "the stopped job holds its lock and slot"
check_eq "the same process still runs" "$first" "$(kill -0 "$first" 2>/dev/null && echo "$first")"
check_status "its stream is closed: the slot is kept and no session holds it" 0 wait_slot_free

# While stopped: an organization goes on hold 6, which the map does not know yet, and the map
# learns it (export, edit, import: refused while the job is active, allowed now).
read -r le acct <<<"$(psql_q "SELECT dataareaid, customeraccount FROM fno.customersv3
    WHERE partytype = 'Organization' ORDER BY dataareaid, customeraccount LIMIT 1" | tr '|' ' ')"
psql_q "UPDATE fno.customersv3 SET onholdstatus = 6 WHERE dataareaid = '$le' AND customeraccount = '$acct'"
dw map export fno_sample "$DW_E2E_DIR/maps.json" >/dev/null || die "map export failed"
check_status "the stopped job's maps can be imported" 0 import_onhold_6 806380006
out=$(dw job start fno_sample 2>&1) || die "job start failed: $out"
check_status "the same daemon streams again" 0 \
    e2e_wait_log daemon "streaming changes to Dataverse" 2
check_status "the change committed while stopped is applied" 0 e2e_wait_applied
check_eq "through the new map" 806380006 "$(onhold "$acct")"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
check_eq "Dataverse equals the source" 0 "$(e2e_mismatches)"
check_eq "the first daemon was never restarted" "$first" "$(kill -0 "$first" 2>/dev/null && echo "$first")"
check_eq "the standby is still a standby" 0 "$(grep -c "acquired the job lock" "$DW_E2E_DIR/standby.log")"

# A failed job's maps may change too: the customers leave the publication (the check on
# SIGHUP fails the job), the map sends on-hold 6 to another option, and "job start" (which
# publishes the table again) makes the same daemon read the job and its maps again.
psql_q "ALTER PUBLICATION dwasync_fno_sample DROP TABLE fno.customersv3" >/dev/null
kill -HUP "$first"
check_status "the job fails" 0 e2e_wait_log daemon "mapped tables not in publication"
check_status "the failed job's maps can be imported" 0 import_onhold_6 806380007
out=$(dw job start fno_sample 2>&1) || die "job start failed: $out"
check_status "the daemon reads the job and its maps again" 0 \
    e2e_wait_log daemon "job was started again after it failed"
read -r le2 acct2 <<<"$(psql_q "SELECT dataareaid, customeraccount FROM fno.customersv3
    WHERE partytype = 'Organization' ORDER BY dataareaid, customeraccount OFFSET 1 LIMIT 1" | tr '|' ' ')"
psql_q "UPDATE fno.customersv3 SET onholdstatus = 6 WHERE dataareaid = '$le2' AND customeraccount = '$acct2'"
check_status "the change is applied" 0 e2e_wait_applied
check_eq "through the map imported while the job was failed" 806380007 "$(onhold "$acct2")"
check_eq "the first daemon still runs" "$first" "$(kill -0 "$first" 2>/dev/null && echo "$first")"
check_eq "still no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"

# A dropped job leaves the holding daemon nothing to run: it ends with status 0.
kill -9 "$standby"; wait "$standby" 2>/dev/null
dw job stop fno_sample >/dev/null 2>&1 || die "job stop failed"
e2e_wait_log daemon "the stopped job holds its lock and slot" 2 || die "the daemon did not hold the job"
wait_slot_free || die "the slot stayed held"
dw job drop fno_sample --yes >/dev/null 2>&1 || die "job drop failed"
wait "$first"
check_eq "the daemon ends with status 0 when the stopped job is dropped" 0 $?
daemon=
check_contains "and says why" "the job was dropped: nothing is left to run" "$(cat "$DW_E2E_DIR/daemon.log")"
finish

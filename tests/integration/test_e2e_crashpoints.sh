#!/usr/bin/env bash
# The crash suite (issue 14): every crash point in src/ (each DW_FAILPOINT("name"), found by
# grep, so a point added later is walked too), one round each. A round starts the sample job
# from an initial sync with the point armed (DWASYNC_FAILPOINTS=name:crash), commits a small
# workload (updates, an order created and one deleted, a change Dataverse refuses (403) and a
# later change of its key, which waits behind it), asks for a replay (refused again), and
# requires the daemon to die at the point (its stderr says so; a point no round reaches fails
# the suite). Then a daemon without crash points finishes the round: the refusal is lifted
# and the errors replayed.
# After each round: Dataverse equals the source (the oracle), the round left exactly its two
# error rows (no duplicate), all resolved. A replay point is walked a second time through the
# CLI replay (`dwasync errors replay --all` with no daemon). In the end each account's history
# went back at most once per crash.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
t_start=$SECONDS

points=$(grep -rhoE 'DW_FAILPOINT\("[a-z0-9_]+"\)' "$DWASYNC_SOURCE_DIR/src" |
    sed -E 's/DW_FAILPOINT\("([a-z0-9_]+)"\)/\1/' | sort -u)
[ -n "$points" ] || die "no crash point found in src/"
# DW_CRASHPOINTS="name..." walks only those points, in that order, a name given twice twice
# (to chase one round again and again).
if [ -n "${DW_CRASHPOINTS:-}" ]; then
    for p in $DW_CRASHPOINTS; do
        grep -qx "$p" <<<"$points" || die "DW_CRASHPOINTS: no crash point \"$p\" in src/"
    done
    points=$DW_CRASHPOINTS
fi
rounds=()
for p in $points; do
    rounds+=("daemon:$p")
    case $p in replay_*) rounds+=("cli:$p") ;; esac
done
log "crash points: $(echo $points) (${#rounds[@]} rounds)"

DW_E2E_LOG_LEVEL=warn e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
# X, the poisoned account: a new one no order and no other account refers to, so its error
# blocks nothing else.
x=CX00001
psql_q "INSERT INTO fno.customersv3 SELECT (jsonb_populate_record(c, jsonb_build_object(
            'customeraccount', '$x', 'invoiceaccount', null))).* FROM fno.customersv3 c
         WHERE dataareaid = 'usmf' AND partytype = 'Organization' ORDER BY customeraccount LIMIT 1" >/dev/null ||
    die "cannot add the account to poison"
read -r cust cur <<<"$(psql_q "SELECT orderingcustomeraccountnumber || ' ' || currencycode
                              FROM fno.salesorderheaders WHERE dataareaid = 'usmf' LIMIT 1" | tr -d '|')"
# The poison: dvemu refuses writes of accounts in state ZZ (403), as if the application user
# could not write them, and X is moved there. A replay sends the write again (and is refused
# again) until the rule is lifted.
revoke() {
    dvemu_admin POST privileges "{\"revoke\": [{\"table\": \"accounts\", \"privilege\": \"write\",
        \"where\": {\"address1_stateorprovince\": \"ZZ\"}}]}" >/dev/null
}
lift() { dvemu_admin POST privileges '{"revoke": []}' >/dev/null; }
state=$(psql_q "SELECT deliveryaddressstateid FROM fno.customersv3 WHERE dataareaid = 'usmf' AND customeraccount = '$x'")
fired() { grep -c "failpoint \"$1\" fired" "$DW_E2E_DIR/daemon.log"; }
gone() { ! kill -0 "$daemon" 2>/dev/null; }
# until_gone_or CMD...: waits until the daemon died or CMD succeeds (both are events).
until_gone_or() {
    local i
    for i in $(seq 1 1200); do
        gone && return 0
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
# (The checkpoint, not the slot: a slot created by the initial sync starts past the workload.)
checkpoint_passed() {
    [ "$(psql_q "SELECT coalesce(bool_and(confirmed_lsn > '$target'), false) FROM dwasync.checkpoint")" = t ]
}
# The copy is interleaved with the stream: the checkpoint may pass the target before the
# initial sync is done.
synced() { [ "$(e2e_copying)" = 0 ] && checkpoint_passed; }
none_replaying() { [ "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'replaying'")" = 0 ]; }

workload() {
    psql -X -q -v ON_ERROR_STOP=1 -v tag="$tag" -v x="$x" -v cust="$cust" -v cur="$cur" <<'SQL' ||
UPDATE fno.customersv3 SET primarycontactphone = :'tag' || '-1'
 WHERE dataareaid = 'usmf' AND customeraccount <= 'C0000030';
UPDATE fno.customersv3 SET deliveryaddressstateid = 'ZZ', primarycontactphone = :'tag' || '-2'
 WHERE dataareaid = 'usmf' AND customeraccount = :'x';
UPDATE fno.customersv3 SET primarycontactphone = :'tag' || '-3'
 WHERE dataareaid = 'usmf' AND (customeraccount <= 'C0000010' OR customeraccount = :'x');
BEGIN;
INSERT INTO fno.salesorderheaders VALUES ('usmf', 'SO-' || :'tag', :'cust', :'cur', 'Crash', 2, 1);
INSERT INTO fno.salesorderlines
SELECT 'usmf', 'SO-' || :'tag', n, 'CP-P' || n, n, 1, n FROM generate_series(1, 2) n;
COMMIT;
BEGIN;
DELETE FROM fno.salesorderlines WHERE salesordernumber LIKE 'SO-R%' AND salesordernumber < 'SO-' || :'tag';
DELETE FROM fno.salesorderheaders WHERE salesordernumber LIKE 'SO-R%' AND salesordernumber < 'SO-' || :'tag';
COMMIT;
SQL
        die "workload of round $r failed"
}

crashes=0
r=0
for round in "${rounds[@]}"; do
    r=$((r + 1))
    mode=${round%%:*}
    point=${round#*:}
    tag=$(printf 'R%02d' "$r")
    log "round $r: $point through the $mode"
    before=$(fired "$point")
    # A fresh start from an initial sync, writes of the poisoned state refused.
    dw job stop fno_sample >/dev/null 2>&1
    revoke
    psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name LIKE 'dwasync_%'" >/dev/null
    dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
    if [ "$mode" = daemon ]; then
        DWASYNC_FAILPOINTS="$point:crash" e2e_start_daemon
    else
        e2e_start_daemon
    fi
    # The workload goes after the initial sync, so the round's error rows do not depend on
    # where the point stops the daemon.
    target=$(e2e_commit_lsn "UPDATE fno.currencies SET symbol = symbol WHERE currencycode = 'USD'")
    until_gone_or synced || die "round $r: the initial sync neither applied nor crashed"
    committed=
    if ! gone; then
        workload
        committed=1
        until_gone_or checkpoint_passed || die "round $r: the workload neither applied nor crashed"
    fi
    if ! gone; then
        if [ "$mode" = cli ]; then
            kill -TERM "$daemon"
            wait "$daemon"
            # The stopped daemon's session held the job lock; the replay waits for it to go.
            for _ in $(seq 1 100); do
                [ "$(psql_q "SELECT dwasync.replay_listeners('fno_sample')")" = 0 ] && break
                sleep 0.1
            done
            DWASYNC_FAILPOINTS="$point:crash" "$DWASYNC_BIN" --config "$DW_E2E_CONF" \
                errors replay --all --job fno_sample >>"$DW_E2E_DIR/daemon.log" 2>&1
            check_eq "round $r: the CLI replay died at $point (SIGKILL)" 137 $?
        else
            dw errors replay --all --job fno_sample >/dev/null 2>&1
            until_gone_or none_replaying
        fi
    fi
    if [ "$mode" = daemon ]; then
        gone || { log "round $r: $point was never reached"; kill -9 "$daemon"; }
        wait "$daemon" 2>/dev/null
    fi
    daemon=
    check_eq "round $r: $point fired once" $((before + 1)) "$(fired "$point")"
    crashes=$((crashes + 1))

    # The round finished without crash points: the workload (if the crash came first), the
    # rule lifted, the errors replayed, X moved back.
    e2e_start_daemon
    check_status "round $r: the restarted daemon catches up" 0 e2e_wait_synced
    if [ -z "$committed" ]; then
        workload
        check_status "round $r: the workload applied" 0 e2e_wait_applied
    fi
    lift
    # Into the daemon's log (shown on failure): how many rows it queued, and who replays them.
    dw errors replay --all --job fno_sample >>"$DW_E2E_DIR/daemon.log" 2>&1
    check_status "round $r: replayed" 0 e2e_wait_replayed
    psql_q "UPDATE fno.customersv3 SET deliveryaddressstateid = '$state'
             WHERE dataareaid = 'usmf' AND customeraccount = '$x'" >/dev/null
    check_status "round $r: everything applied" 0 e2e_wait_applied
    kill -TERM "$daemon"
    wait "$daemon"
    daemon=
    rows=$(psql_q "SELECT count(*) || '|' || count(*) FILTER (WHERE status = 'resolved')
                     FROM dwasync.error WHERE source_row::text LIKE '%$tag-%'")
    check_eq "round $r: the round's two error rows, once each, resolved" "2|2" "$rows"
    # A flake must be diagnosable from its one failing run: the rows and the replay's log.
    [ "$rows" = "2|2" ] || psql_q "SELECT id, status, class, http_status, dv_code, commit_lsn,
            position, attempts, replay_requested_by, resolved_by, left(message, 120)
            FROM dwasync.error WHERE source_row::text LIKE '%$tag-%' ORDER BY id" >&2
    check_eq "round $r: no change stored twice" 0 \
        "$(psql_q "SELECT count(*) - count(DISTINCT (key_text, source_row)) FROM dwasync.error")"
    check_eq "round $r: Dataverse equals the source" 0 "$(e2e_mismatches)"
done

rewinds=$(e2e_history_rewinds accounts telephone1)
check_eq "the history is complete" 0 $?
log "largest number of rewinds of one account: $rewinds, crashes: $crashes"
check_eq "each account went back at most once per crash" 1 "$([ "$rewinds" -le "$crashes" ] && echo 1)"
log "suite ran $((SECONDS - t_start)) s"
finish

#!/usr/bin/env bash
# The metrics listener against slow clients (issue 16): 40 connections that trickle a byte
# every half second from one address do not starve /healthz (at most 4 per client address),
# and a connection that never finishes its request is cut at the whole-request deadline
# (10 s), however often it sends.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
harness=$DWASYNC_BUILD_DIR/bin/dw_ops_harness
[ -x "$harness" ] || die "no $harness"

coproc H { "$harness" metrics 127.0.0.1:0 2>/dev/null; }
on_exit "kill $H_PID"
read -r -t 10 word port <&"${H[0]}" || die "harness did not start"
check_eq "harness listens" "port" "$word"

coproc SLOW { python3 "$DWASYNC_SOURCE_DIR/tests/data/peers/slow_clients.py" "$port" 127.0.0.2 40; }
on_exit "kill $SLOW_PID"
read -r -t 60 word n <&"${SLOW[0]}" || die "slow clients did not start"
check_eq "slow clients connected" ready "$word"
log "$n of 40 slow connections opened (past 4 the server closes them at once)"

# Generous bound: the attackers keep trickling for as long as this waits.
code=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
check_eq "/healthz answers while 40 slow clients hold on" 200 "$code"
check_eq "/metrics too" 200 \
    "$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")"

# Every accepted slow connection is closed by the server at its deadline.
closed=0
while [ "$closed" -lt "$n" ] && read -r -t 60 line <&"${SLOW[0]}"; do
    [ "$line" = closed ] && closed=$((closed + 1))
done
check_eq "every slow connection was cut at the deadline" "$n" "$closed"

finish

#!/usr/bin/env bash
# The systemd units: `systemd-analyze verify` passes for dwasync.service and an instance of
# dwasync@.service, the settings the issue requires are there, and the offline
# `systemd-analyze security` exposure stays low (at most 2.0, "OK").
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
command -v systemd-analyze >/dev/null || die "systemd-analyze missing (tests/harness/deps.sh installs systemd)"
dw_mktemp work units
# verify insists that ExecStart exists: point the copies at the binary just built.
for u in dwasync.service dwasync@.service; do
    sed "s|/usr/bin/dwasync|$DWASYNC_BIN|" "$DWASYNC_SOURCE_DIR/packaging/systemd/$u" >"$work/$u"
done
cp "$work/dwasync@.service" "$work/dwasync@crm.service"
out=$(cd "$work" && systemd-analyze verify --man=no ./dwasync.service ./dwasync@crm.service 2>&1)
check_eq "systemd-analyze verify passes" "" "$out"

for u in dwasync.service dwasync@.service; do
    text=$(cat "$DWASYNC_SOURCE_DIR/packaging/systemd/$u")
    for want in "Type=notify" "User=dwasync" 'ExecReload=/bin/kill -HUP $MAINPID' \
        "Restart=on-failure" "LoadCredential=dwasync:/etc/dwasync/credentials" \
        "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "PrivateDevices=yes" \
        "NoNewPrivileges=yes" "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" \
        "SystemCallFilter=@system-service" "CapabilityBoundingSet=" "UMask=0077" \
        "StateDirectory=dwasync" "WatchdogSec="; do
        grep -qxF -- "$want" <<<"$text" || grep -q -- "^$want" <<<"$text" \
            && pass "$u has $want" || fail "$u has $want"
    done
done
check_contains "template runs one job" "run --job %i" "$(cat "$DWASYNC_SOURCE_DIR/packaging/systemd/dwasync@.service")"

for u in dwasync.service dwasync@crm.service; do
    score=$(cd "$work" && systemd-analyze security --offline=yes "./$u" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    log "$u exposure $score"
    check_eq "$u exposure at most 2.0 (got $score)" 1 "$(awk -v s="$score" 'BEGIN { print (s != "" && s <= 2.0) ? 1 : 0 }')"
done
finish

#!/usr/bin/env bash
# tests/harness/deps.sh - installs the Debian 12 packages dwasync needs to build, test,
# package and demo. Idempotent: apt runs only when something is missing. Needs root.
set -euo pipefail
packages=(
    build-essential cmake pkg-config git ca-certificates curl
    libpq-dev libcurl4-openssl-dev libjansson-dev libssl-dev check
    libmicrohttpd-dev libinih-dev uthash-dev libsystemd-dev libjemalloc-dev
    postgresql-15 postgresql-client-15
    clang clang-format libclang-rt-14-dev
    rpm rpmlint lintian file openssl procps iproute2 util-linux systemd jq python3
    adduser man-db groff-base bsdextrautils
    # promtool (check and unit-test the shipped alert rules) comes only in the server
    # package; PyYAML reads the rule file for the metric-name checks.
    prometheus python3-yaml
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "deps.sh: run as root to install: ${missing[*]}" >&2; exit 1; }
    echo "# installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus package enables and starts a server on :9090 that tests never use:
# stop it when this run installed it (a Prometheus that was already there is left alone).
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
# The Debian server package creates and starts a system cluster; tests never use it.
if [ -n "$(ls /etc/postgresql 2>/dev/null)" ] && command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r v c; do
        pg_ctlcluster "$v" "$c" stop 2>/dev/null || true
    done
fi

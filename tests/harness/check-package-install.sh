#!/usr/bin/env bash
# tests/harness/check-package-install.sh DEB - installs the .deb on this (throwaway, root)
# machine: the binary runs, the user and directories exist, the units verify, `dwasync
# init` works against a harness Postgres, an upgrade keeps an edited config, remove keeps
# the config, purge removes config and state. Leaves the package purged.
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
deb=$1
[ "$(id -u)" = 0 ] || die "the install test needs root"
if dpkg-query -W -f='${Status}' dwasync 2>/dev/null | grep -q "ok installed"; then
    die "dwasync is already installed here; the install test would replace it"
fi
on_exit "dpkg -P dwasync"
dw_mktemp work pkg
export DEBIAN_FRONTEND=noninteractive

dpkg -i "$deb" </dev/null >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i"; }
check_eq "package installed" "install ok installed" "$(dpkg-query -W -f='${Status}' dwasync)"
version=$(dpkg-deb -f "$deb" Version)
check_eq "dwasync --version" "dwasync ${version%-*}" "$(/usr/bin/dwasync --version)"
check_contains "dwasync config describe" "[dataverse]" "$(/usr/bin/dwasync config describe)"
check_eq "system user exists" "/var/lib/dwasync" "$(getent passwd dwasync | cut -d: -f6)"
check_eq "config is root:dwasync 0640" "root:dwasync 640" "$(stat -c '%U:%G %a' /etc/dwasync/dwasync.conf)"
check_eq "state dir" "dwasync:dwasync 700" "$(stat -c '%U:%G %a' /var/lib/dwasync)"
check_eq "credentials dir" "root:root 700" "$(stat -c '%U:%G %a' /etc/dwasync/credentials)"
check_eq "man pages installed" "3" "$(ls /usr/share/man/man1/dwasync.1.gz /usr/share/man/man1/dvemu.1.gz /usr/share/man/man5/dwasync.conf.5.gz | wc -l)"
check_contains "man page renders" "HIGH AVAILABILITY" "$(MANWIDTH=100 man -l /usr/share/man/man1/dwasync.1.gz 2>&1)"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/dwasync.service 2>&1)
    check_eq "installed unit verifies" "" "$out"
fi

pg_start
printf '[source]\nconninfo = %s\n' "$DW_PG_CONNINFO" >"$work/dw.conf"
out=$(/usr/bin/dwasync --config "$work/dw.conf" init 2>&1)
check_contains "dwasync init with the packaged SQL" "upgraded from version 0" "$out"
check_eq "packaged migrations applied" "$(ls /usr/share/dwasync/sql/*.sql | wc -l)" \
    "$(psql_q 'select count(*) from dwasync.schema_version')"
# The installed binary runs as the service user too.
out=$(runuser -u dwasync -- /usr/bin/dwasync --config "$work/dw.conf" status --json 2>&1)
check_contains "status as the dwasync user" '"jobs":[]' "$out"

# Upgrade to a newer version of the same package: the edited config survives untouched.
echo "# edited by the operator" >>/etc/dwasync/dwasync.conf
before=$(sha256sum /etc/dwasync/dwasync.conf)
rm -rf "$work/x" && dpkg-deb -R "$deb" "$work/x"
sed -i "s/^Version: .*/Version: ${version%-*}-99/" "$work/x/DEBIAN/control"
dpkg-deb -b "$work/x" "$work/upgrade.deb" >/dev/null
dpkg -i "$work/upgrade.deb" </dev/null >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log" >&2; fail "upgrade"; }
check_eq "upgraded" "${version%-*}-99" "$(dpkg-query -W -f='${Version}' dwasync)"
check_eq "upgrade keeps the edited config" "$before" "$(sha256sum /etc/dwasync/dwasync.conf)"
check_eq "config group survives the upgrade" "root:dwasync 640" "$(stat -c '%U:%G %a' /etc/dwasync/dwasync.conf)"

dpkg -r dwasync >/dev/null 2>&1
check_eq "remove: binary gone" 1 "$([ -e /usr/bin/dwasync ] && echo 0 || echo 1)"
check_eq "remove: config kept" 0 "$([ -e /etc/dwasync/dwasync.conf ] && echo 0 || echo 1)"
dpkg -P dwasync >/dev/null 2>&1
check_eq "purge: config gone" 1 "$([ -e /etc/dwasync ] && echo 0 || echo 1)"
check_eq "purge: state gone" 1 "$([ -e /var/lib/dwasync ] && echo 0 || echo 1)"
finish

#!/usr/bin/env bash
# tests/harness/check-packages.sh BUILD_DIR - builds the .deb and .rpm with CPack and checks
# that they hold what an installation needs, that lintian and rpmlint find no errors, and
# (as root on CI, or with DWASYNC_PACKAGE_INSTALL_TEST=1) that the .deb installs, works,
# upgrades keeping an edited config, and is removed and purged cleanly.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
cd "$build"
rm -f dwasync*.deb dwasync*.rpm
cpack -G DEB >/dev/null
cpack -G RPM >/dev/null 2>&1
deb=$(ls dwasync*.deb) rpm=$(ls dwasync*.rpm)
status=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; status=1; }
expect() {   # expect KIND LISTING PATH
    if grep -q -- "$3\$" <<<"$2"; then ok "$1 has $3"; else bad "$1 lacks $3"; fi
}
deb_files=$(dpkg-deb -c "$deb" | awk '{print $1, $6}')
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/bin/dwasync /usr/bin/dvemu /usr/share/dwasync/sql/001_control_schema.sql \
    /usr/share/dwasync/sql/030_runner.sql /etc/dwasync/dwasync.conf \
    /usr/lib/systemd/system/dwasync.service /usr/lib/systemd/system/dwasync@.service \
    /usr/share/man/man1/dwasync.1.gz /usr/share/man/man1/dvemu.1.gz \
    /usr/share/man/man5/dwasync.conf.5.gz /usr/share/man/man7/dwasync-internals.7.gz \
    /usr/share/dwasync/maps/customers-v3.map.json /usr/share/doc/dwasync/copyright \
    /usr/share/dwasync/monitoring/dwasync-alerts.yml \
    /usr/share/dwasync/monitoring/dwasync-dashboard.json; do
    expect "$deb" "$deb_files" "$f"
    expect "$rpm" "$rpm_files" "$f"
done
if grep -q -- "-rw-r----- ./etc/dwasync/dwasync.conf" <<<"$deb_files"; then ok "deb config mode 0640"
else bad "deb config mode is not 0640"; fi
# Listings are read whole before grep -q: grep leaving at the first match would kill the
# writer with SIGPIPE, which pipefail turns into a failure at random.
conffiles=$(dpkg-deb -I "$deb" conffiles 2>/dev/null || true)
if grep -qx /etc/dwasync/dwasync.conf <<<"$conffiles"; then ok "deb config is a conffile"
else bad "deb config is not a conffile"; fi
for s in postinst prerm postrm; do
    dpkg-deb -I "$deb" "$s" >/dev/null 2>&1 && ok "deb has $s" || bad "deb lacks $s"
done
configfiles=$(rpm -qp --configfiles "$rpm" 2>/dev/null || true)
if grep -qx /etc/dwasync/dwasync.conf <<<"$configfiles"; then ok "rpm config is %config"
else bad "rpm config is not %config"; fi
dump=$(rpm -qp --dump "$rpm" 2>/dev/null || true)
if grep -q '^/etc/dwasync/dwasync.conf .* 0100640 root dwasync 1 0 ' <<<"$dump"; then
    ok "rpm config is %config(noreplace) 0640 root:dwasync"
else bad "rpm config is not noreplace 0640 root:dwasync"; fi
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
for want in "preinstall scriptlet" "useradd -r -g dwasync" "postinstall scriptlet" \
    "preuninstall scriptlet" "systemctl stop dwasync.service"; do
    grep -qF -- "$want" <<<"$scripts" && ok "rpm scripts: $want" || bad "rpm scripts lack: $want"
done

# Linters: no errors (remaining warnings are explained in packaging/README.packaging).
if command -v lintian >/dev/null; then
    lint=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v "running with root privileges" || true)
    [ -n "$lint" ] && sed "s|^|#   |" <<<"$lint"
    if grep -q '^E:' <<<"$lint"; then bad "lintian reports errors"; else ok "lintian: no errors"; fi
else bad "lintian is not installed"; fi
if command -v rpmlint >/dev/null; then
    lint=$(rpmlint -c "$src/packaging/rpm/rpmlint.toml" "$rpm" 2>&1 || true)
    sed "s|^|#   |" <<<"$lint" | grep -E ": [EW]: |errors" || true
    if grep -q ' 0 errors' <<<"$lint"; then ok "rpmlint: no errors"; else bad "rpmlint reports errors"; fi
else bad "rpmlint is not installed"; fi

if [ "$(id -u)" = 0 ] && { [ "${CI:-}" = true ] || [ "${DWASYNC_PACKAGE_INSTALL_TEST:-}" = 1 ]; }; then
    bash "$src/tests/harness/check-package-install.sh" "$PWD/$deb" || status=1
else
    echo "# install test skipped (needs root and CI=true or DWASYNC_PACKAGE_INSTALL_TEST=1)"
fi
exit $status

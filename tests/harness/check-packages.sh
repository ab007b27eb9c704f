#!/usr/bin/env bash
# tests/harness/check-packages.sh BUILD_DIR - builds the .deb and .rpm with CPack and checks
# that they hold what an installation needs.
set -euo pipefail
build=${1:-build}
cd "$build"
rm -f dwasync*.deb dwasync*.rpm
cpack -G DEB >/dev/null
cpack -G RPM >/dev/null
deb=$(ls dwasync*.deb) rpm=$(ls dwasync*.rpm)
status=0
expect() {   # expect KIND LISTING PATH
    if grep -q -- "$3\$" <<<"$2"; then echo "ok - $1 has $3"; else echo "not ok - $1 lacks $3"; status=1; fi
}
deb_files=$(dpkg-deb -c "$deb" | awk '{print $1, $6}')
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/bin/dwasync /usr/bin/dvemu /usr/share/dwasync/sql/001_control_schema.sql /etc/dwasync/dwasync.conf; do
    expect "$deb" "$deb_files" "$f"
    expect "$rpm" "$rpm_files" "$f"
done
if grep -q -- "-rw-r----- ./etc/dwasync/dwasync.conf" <<<"$deb_files"; then echo "ok - deb config mode 0640"
else echo "not ok - deb config mode is not 0640"; status=1; fi
if dpkg-deb -I "$deb" conffiles | grep -qx /etc/dwasync/dwasync.conf; then echo "ok - deb config is a conffile"
else echo "not ok - deb config is not a conffile"; status=1; fi
if rpm -qp --configfiles "$rpm" 2>/dev/null | grep -qx /etc/dwasync/dwasync.conf; then echo "ok - rpm config is %config"
else echo "not ok - rpm config is not %config"; status=1; fi
exit $status

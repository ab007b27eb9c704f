#!/usr/bin/env bash
# Man pages stay in step with the binary: every command and option that `dwasync --help`
# lists is in dwasync(1); every key of `dwasync config describe` is in the generated
# dwasync.conf(5); all pages render without groff warnings.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
man_dir=$DWASYNC_BUILD_DIR/packaging/man
[ -f "$man_dir/dwasync.conf.5" ] || die "no generated $man_dir/dwasync.conf.5 (build the manpages target)"
render() { MANWIDTH=200 man -E UTF-8 -l "$1" 2>/dev/null | col -b | sed 's/‐/-/g'; }
page=$(render "$man_dir/dwasync.1")
help=$("$DWASYNC_BIN" --help)
commands=$(sed -n '/^commands:/,/^$/p' <<<"$help" | awk '/^  [a-z]/ {print $1}')
[ -n "$commands" ] || die "no commands parsed from dwasync --help"
for c in $commands; do
    grep -qE "^ {7}$c( |$)" <<<"$page" && pass "dwasync(1) documents \"$c\"" || fail "dwasync(1) documents \"$c\""
done
for opt in $(grep -oE -- '--[a-z-]+' <<<"$help" | sort -u); do
    check_contains "dwasync(1) mentions $opt" "$opt" "$page"
done
conf=$(render "$man_dir/dwasync.conf.5")
section=
while IFS= read -r line; do
    case $line in
    "["*) section=$line
        check_contains "dwasync.conf(5) has section $section" "$section" "$conf" ;;
    "  "[a-z]*) key=$(awk '{print $1}' <<<"$line")
        grep -qE "^ {7}$key( |$)" <<<"$conf" && pass "dwasync.conf(5) documents $section $key" \
            || fail "dwasync.conf(5) documents $section $key" ;;
    esac
done < <("$DWASYNC_BIN" config describe)
for p in dwasync.1 dvemu.1 dwasync.conf.5 dwasync-internals.7; do
    warnings=$(LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l -Tutf8 -Z "$man_dir/$p" 2>&1 >/dev/null)
    check_eq "$p renders without warnings" "" "$warnings"
done
finish

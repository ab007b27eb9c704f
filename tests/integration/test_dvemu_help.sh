#!/usr/bin/env bash
# dvemu --help is complete on its own and dvemu(1) matches it: it exits 0, lists every option
# one line each (none past 100 columns), points to no README; every option it lists heads an
# entry of dvemu(1)'s OPTIONS, every option an entry heads is in the help and accepted (a
# value outside its range is a usage error, 2, never "unrecognized option"); an unknown option
# is refused with 2.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
man_dir=$DWASYNC_BUILD_DIR/packaging/man
[ -f "$man_dir/dvemu.1" ] || die "no $man_dir/dvemu.1 (build the manpages target)"
help=$("$DVEMU_BIN" --help); status=$?
check_eq "dvemu --help exits 0" 0 "$status"
check_eq "no help line past 100 columns" "" "$(awk 'length > 100' <<<"$help")"
check_eq "the help does not send the reader to the README" "" "$(grep -i readme <<<"$help")"
opts=$(grep -E '^  --' <<<"$help" | awk '{print $1}')
[ "$(wc -w <<<"$opts")" -ge 25 ] || die "too few options parsed from dvemu --help: $opts"
check_eq "each option on one line, listed once" "" "$(sort <<<"$opts" | uniq -d)"
check_eq "every option line says what it does" "" "$(grep -E '^  --' <<<"$help" | awk 'NF < 3')"
src_opts=$(grep -oE '^ +\{"[a-z-]+", (required|no)_argument' "$DWASYNC_SOURCE_DIR/src/dvemu/main.c" |
    sed -E 's/^ +\{"([a-z-]+)".*/--\1/' | sort)
check_eq "the help lists every option dvemu parses" "$src_opts" "$(sort <<<"$opts")"

page=$(MANWIDTH=200 man -E UTF-8 -l "$man_dir/dvemu.1" 2>/dev/null | col -b | sed 's/‐/-/g')
options=$(sed -n '/^OPTIONS/,/^[A-Z]/p' <<<"$page")
headed=$(grep -E '^ {7}--' <<<"$options" | grep -oE -- '--[a-z-]+' | sort -u)
for o in $opts; do
    grep -qxF -- "$o" <<<"$headed" && pass "dvemu(1) has an entry for $o" || fail "dvemu(1) has an entry for $o"
done
for o in $headed; do
    grep -qxF -- "$o" <<<"$opts" && pass "$o of dvemu(1) is in --help" || fail "$o of dvemu(1) is in --help"
done
out=$("$DVEMU_BIN" --cost-row-ms -1 --metadata x --tenant t --client a:b 2>&1); status=$?
check_eq "a value out of range is a usage error" 2 "$status"
check_contains "saying the range" "needs an integer from 0 to" "$out"
out=$("$DVEMU_BIN" --frobnicate 2>&1); status=$?
check_eq "an unknown option is refused with 2" 2 "$status"
check_contains "and prints the usage" "usage: dvemu" "$out"
finish

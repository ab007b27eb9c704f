#!/usr/bin/env bash
# The allocator dwasync ships with: jemalloc, told by the binary itself (its malloc_conf) to
# hand freed pages back within a second, which keeps the daemon's peak RSS steady; an
# operator's MALLOC_CONF still overrides it. jemalloc prints its options at exit when asked
# (stats_print). A sanitizer build brings the sanitizer's allocator and has no jemalloc.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
# ldd's output is read whole first: `ldd | grep -q` under pipefail failed whenever grep quit
# before ldd had written its last line (SIGPIPE), and a jemalloc build looked like one without.
libs=$(ldd "$DWASYNC_BIN")
if ! grep -q libjemalloc <<<"$libs"; then
    check_contains "a build without jemalloc is a sanitizer build" "DWASYNC_SANITIZE:BOOL=ON" \
        "$(cat "$DWASYNC_BUILD_DIR/CMakeCache.txt")"
    finish
fi
opts=$(MALLOC_CONF=stats_print:true "$DWASYNC_BIN" --version 2>&1)
check_contains "freed pages go back within a second" "opt.dirty_decay_ms: 1000" "$opts"
check_contains "and are not kept as lazily freed" "opt.muzzy_decay_ms: 0" "$opts"
opts=$(MALLOC_CONF=stats_print:true,dirty_decay_ms:5000 "$DWASYNC_BIN" --version 2>&1)
check_contains "MALLOC_CONF overrides the binary's setting" "opt.dirty_decay_ms: 5000" "$opts"
check_contains "the program still runs under it" "dwasync " "$("$DWASYNC_BIN" --version)"
finish

#!/usr/bin/env bash
# The cost of counting a change for /metrics, kept series against the registry's own calls
# (run on demand, not part of ctest).
#   bash tests/bench/bench_metrics.sh [CHANGES]     (after a build in build/)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${DWASYNC_BUILD_DIR:-$src/build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -std=c11 -D_GNU_SOURCE -I"$src/include" $(pkg-config --cflags libpq libcurl jansson) "$src/tests/bench/bench_metrics.c" \
    "$build/libdwcore.a" $(pkg-config --libs libpq libcurl jansson openssl libmicrohttpd inih libsystemd) -lm \
    -o "$out/bench_metrics"
"$out/bench_metrics" "${1:-1000000}"

#!/usr/bin/env bash
# Mapping engine throughput against a parse+dump peer (run on demand, not part of ctest).
#   bash tests/bench/bench_mapping.sh [ROWS]     (after a Release build in build/)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${DWASYNC_BUILD_DIR:-$src/build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -std=c11 -D_GNU_SOURCE -I"$src/include" $(pkg-config --cflags libpq libcurl jansson) "$src/tests/bench/bench_mapping.c" \
    "$build/libdwcore.a" $(pkg-config --libs libpq libcurl jansson openssl libmicrohttpd inih libsystemd) -lm \
    -o "$out/bench_mapping"
"$out/bench_mapping" "$src/packaging/sample/fno-sample.map.json" "${1:-200000}"

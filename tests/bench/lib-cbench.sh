#!/usr/bin/env bash
# tests/bench/lib-cbench.sh - for the benchmarks written in C (run on demand, not part of
# ctest): sourced by their scripts after `set -euo pipefail`, it sets src and build (the
# build tree, DWASYNC_BUILD_DIR or build/) and compiles a bench against libdwcore.a.
#   cbench_build NAME    compiles tests/bench/NAME.c; prints the binary's path (a temporary
#                        directory removed when the script exits)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${DWASYNC_BUILD_DIR:-$src/build}
cbench_out=$(mktemp -d)
trap 'rm -rf "$cbench_out"' EXIT

cbench_build() {
    cc -O2 -std=c11 -D_GNU_SOURCE -I"$src/include" $(pkg-config --cflags libpq libcurl jansson) \
        "$src/tests/bench/$1.c" "$build/libdwcore.a" \
        $(pkg-config --libs libpq libcurl jansson openssl libmicrohttpd inih libsystemd) -lm \
        -o "$cbench_out/$1"
    echo "$cbench_out/$1"
}

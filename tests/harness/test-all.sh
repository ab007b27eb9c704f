#!/usr/bin/env bash
# tests/harness/test-all.sh - the whole test suite, as CI runs it, on a fresh Debian 12:
# dependencies, format check, -Werror build, unit + integration + corpus tests, the same
# again under ASan+UBSan, libFuzzer targets for a bounded time, and the .deb/.rpm packages.
# Exit status is non-zero if any step fails. Build trees: build/, build-asan/, build-fuzz/.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src"
jobs=$(nproc)
fuzz_seconds=${DWASYNC_FUZZ_SECONDS:-20}
step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
bash tests/harness/deps.sh

step "format (clang-format)"
bad=$(git ls-files -co --exclude-standard '*.c' '*.h' | while read -r f; do
    [ -f "$f" ] && ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1 && echo "$f"; done || true)
[ -z "$bad" ] || { echo "not clang-formatted (run clang-format -i):"; echo "$bad"; exit 1; }
echo "all C files formatted"

step "build (-Werror)"
cmake -S . -B build -DDWASYNC_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

step "tests"
(cd build && ctest -j"$jobs" --output-on-failure)

step "build and tests under ASan+UBSan"
cmake -S . -B build-asan -DDWASYNC_WERROR=ON -DDWASYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest -j"$jobs" --output-on-failure)

step "fuzz targets (${fuzz_seconds}s each)"
CC=clang cmake -S . -B build-fuzz -DDWASYNC_FUZZ=ON -DDWASYNC_SANITIZE=ON \
    -DDWASYNC_FUZZ_SECONDS="$fuzz_seconds" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$jobs"
(cd build-fuzz && ctest -L fuzz -j"$jobs" --output-on-failure --no-tests=ignore)

step "packages"
bash tests/harness/check-packages.sh build

step "done"

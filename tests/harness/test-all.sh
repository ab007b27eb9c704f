#!/usr/bin/env bash
# tests/harness/test-all.sh - the whole test suite, as CI runs it, on a fresh Debian 12:
# dependencies, format and source checks, -Werror build, unit + integration + corpus tests,
# the same again under ASan+UBSan (but the random kill -9 schedules: every crash point is
# walked there instead, see tests/CMakeLists.txt), libFuzzer targets for a bounded time, and the .deb/.rpm
# packages. Every stage runs even when an earlier one failed (a stage whose build failed is
# reported as not run); a summary of all stages ends the output, and the exit status is
# non-zero if any failed. Build trees: build/, build-asan/, build-fuzz/.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src"
jobs=$(nproc)
fuzz_seconds=${DWASYNC_FUZZ_SECONDS:-20}
results=()
failed=0

# stage NAME COMMAND...: runs one stage in a subshell, records its outcome. (set -e has no
# force inside a function whose status is tested, so the helpers below chain with &&.)
stage() {
    local name=$1 start=$SECONDS rc
    shift
    printf '\n=== %s\n' "$name"
    (set -euo pipefail; "$@")
    rc=$?
    if [ "$rc" = 0 ]; then
        results+=("ok       $name ($((SECONDS - start)) s)")
    else
        results+=("FAILED   $name (exit $rc, $((SECONDS - start)) s)")
        failed=$((failed + 1))
    fi
    return "$rc"
}
skipped() {
    printf '\n=== %s\n(not run: %s)\n' "$1" "$2"
    results+=("not run  $1 ($2)")
    failed=$((failed + 1))
}

format_check() {
    local bad
    bad=$(git ls-files -co --exclude-standard '*.c' '*.h' | while read -r f; do
        [ -f "$f" ] && ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1 && echo "$f"; done || true)
    [ -z "$bad" ] || { echo "not clang-formatted (run clang-format -i):"; echo "$bad"; return 1; }
    echo "all C files formatted"
}
build() {   # build DIR CMAKE_ARGS...
    local dir=$1
    shift
    cmake -S . -B "$dir" -DDWASYNC_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j"$jobs"
}
ctest_in() {   # ctest_in DIR CTEST_ARGS... (DW_CTEST_JOBS: tests at once, default one a core)
    local dir=$1
    shift
    (cd "$dir" && ctest -j"${DW_CTEST_JOBS:-$jobs}" --output-on-failure "$@")
}

if ! stage "dependencies" bash tests/harness/deps.sh; then
    echo "dependencies could not be installed: nothing else can run" >&2
    exit 1
fi
stage "format (clang-format)" format_check
stage "source rules (banned functions, banners)" bash tests/harness/check-source.sh

if stage "build (-Werror)" build build; then
    # Two tests a core: they wait on Postgres, dvemu and the daemon more than they compute,
    # and every wait is for an event, so a loaded machine slows them but cannot fail them.
    DW_CTEST_JOBS=$((jobs * 2)) stage "tests" ctest_in build
    stage "packages" bash tests/harness/check-packages.sh build
else
    skipped "tests" "the build failed"
    skipped "packages" "the build failed"
fi

if stage "build under ASan+UBSan" build build-asan -DDWASYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        stage "tests under ASan+UBSan" ctest_in build-asan -LE schedule
else
    skipped "tests under ASan+UBSan" "the sanitizer build failed"
fi

if CC=clang stage "build of the fuzz targets" build build-fuzz -DDWASYNC_FUZZ=ON \
    -DDWASYNC_SANITIZE=ON -DDWASYNC_FUZZ_SECONDS="$fuzz_seconds" -DCMAKE_BUILD_TYPE=Debug; then
    stage "fuzz targets (${fuzz_seconds}s each)" ctest_in build-fuzz -L fuzz --no-tests=ignore
else
    skipped "fuzz targets" "the fuzz build failed"
fi

printf '\n=== summary\n'
printf '%s\n' "${results[@]}"
printf 'stages: %d passed, %d failed\n' "$((${#results[@]} - failed))" "$failed"
[ "$failed" = 0 ]

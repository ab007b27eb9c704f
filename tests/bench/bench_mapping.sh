#!/usr/bin/env bash
# Mapping engine throughput against a parse+dump peer (run on demand, not part of ctest).
#   bash tests/bench/bench_mapping.sh [ROWS]     (after a Release build in build/)
set -euo pipefail
source "$(dirname "$0")/lib-cbench.sh"
bin=$(cbench_build bench_mapping)
"$bin" "$src/packaging/sample/fno-sample.map.json" "${1:-200000}"

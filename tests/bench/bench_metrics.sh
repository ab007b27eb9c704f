#!/usr/bin/env bash
# The cost of counting a change for /metrics, kept series against the registry's own calls
# (run on demand, not part of ctest).
#   bash tests/bench/bench_metrics.sh [CHANGES]     (after a build in build/)
set -euo pipefail
source "$(dirname "$0")/lib-cbench.sh"
bin=$(cbench_build bench_metrics)
"$bin" "${1:-1000000}"

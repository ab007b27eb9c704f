#!/usr/bin/env bash
# Sink throughput against dvemu on this machine: N upserts through `dwasync dataverse apply`
# as UpsertMultiple (accounts) and, as the peer measured in the same run, as $batch of PATCH
# (contacts with bulk messages switched off in a copy of the sample metadata). Prints the
# median rows/s of each over RUNS runs and their ratio. Not a test: nothing is asserted.
#   tests/bench/bench_sink.sh [N=10000] [RUNS=3]
source "$(dirname "$0")/../harness/lib.sh"
n=${1:-10000}
runs=${2:-3}
dw_mktemp work bench-sink
jq '(.tables[] | select(.logical_name == "contact")).bulk_messages = []' \
    "$DVEMU_METADATA_DEFAULT" >"$work/meta.json"
DVEMU_METADATA=$work/meta.json dvemu_start --history-max 0 --log-level warn
sink_conf "$work/dw.conf"
sink_seed_company "$work/dw.conf" "$work/rows"

sink_accounts "$n" X >"$work/bulk.jsonl"
jq -nc --argjson n "$n" 'range(0; $n) | {op: "upsert", entity_set: "contacts",
    logical_name: "contact", key: {msdyn_contactpersonid: ("P" + (. | tostring)),
    _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: "USMF"}}},
    body: {lastname: ("Person " + (. | tostring))}}' >"$work/batch.jsonl"

rate() { # FILE -> rows per second of one run
    local t0 t1
    t0=$(date +%s.%N)
    sink_apply "$work/dw.conf" "$1" "$work/out" "$work/err" || die "apply failed: $(tail -3 "$work/err")"
    t1=$(date +%s.%N)
    [ "$(sink_count "$work/out" applied)" = "$n" ] || die "not every row applied"
    awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { print n / (b - a) }'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

for ((r = 0; r < runs; r++)); do
    rate "$work/bulk.jsonl" >>"$work/bulk.rates"
    rate "$work/batch.jsonl" >>"$work/batch.rates"
done
bulk=$(median <"$work/bulk.rates")
batch=$(median <"$work/batch.rates")
printf 'rows=%d runs=%d\n' "$n" "$runs"
printf 'UpsertMultiple  median %8.0f rows/s\n' "$bulk"
printf '$batch (PATCH)  median %8.0f rows/s\n' "$batch"
printf 'ratio UpsertMultiple / $batch = %.2f\n' "$(awk -v a="$bulk" -v b="$batch" 'BEGIN { print a / b }')"

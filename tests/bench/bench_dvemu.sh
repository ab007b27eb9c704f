#!/usr/bin/env bash
# Benchmark dvemu: UpsertMultiple requests of 1000 accounts and $batch requests of 100 PATCH
# upserts, sent by concurrent clients (curl --parallel); prints rows/s (median of runs) and
# the ratio of the two paths measured in the same run. Target: >= 50,000 rows/s through
# UpsertMultiple, so that dvemu never limits an end-to-end benchmark.
#
#   tests/bench/bench_dvemu.sh [REQUESTS] [CONCURRENCY] [RUNS] [-- extra dvemu args]
#
# Not part of ctest: run it on demand against a build (DVEMU_BIN or build/bin/dvemu).
source "$(dirname "$0")/../harness/lib.sh"

REQUESTS=${1:-64}
CONCURRENCY=${2:-8}
RUNS=${3:-3}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = -- ] && shift
dvemu_start --log-level warn "$@"
DVEMU_TOKEN=$(dvemu_token)
dw_mktemp work bench

dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"Contoso US"}'
usmf=$(dvemu_header OData-EntityId | sed 's/.*(\(.*\))/\1/')

# Eight different UpsertMultiple bodies of 1000 accounts and $batch bodies of 100 upserts.
for f in 0 1 2 3 4 5 6 7; do
    awk -v f="$f" -v c="$usmf" 'BEGIN {
        printf "{\"Targets\":["
        for (i = 0; i < 1000; i++) {
            printf "%s{\"@odata.type\":\"Microsoft.Dynamics.CRM.account\",\"@odata.id\":\"accounts(accountnumber='"'"'C%d-%04d'"'"',_msdyn_company_value=%s)\",\"name\":\"Customer %d-%d\",\"creditlimit\":%d.5,\"customertypecode\":3,\"msdyn_onholdstatus\":806380000,\"address1_city\":\"Seattle\",\"address1_postalcode\":\"98052\",\"emailaddress1\":\"c%d@example.com\",\"telephone1\":\"555-%04d\"}", (i ? "," : ""), f, i, c, f, i, i * 10, i, i
        }
        printf "]}"
    }' >"$work/upsert$f.json"
    awk -v f="$f" -v c="$usmf" 'BEGIN {
        for (i = 0; i < 100; i++) {
            printf "--batch_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            printf "PATCH accounts(accountnumber='"'"'B%d-%03d'"'"',_msdyn_company_value=%s) HTTP/1.1\r\n", f, i, c
            printf "Content-Type: application/json; type=entry\r\n\r\n"
            printf "{\"name\":\"Batch %d-%d\",\"creditlimit\":%d.5,\"customertypecode\":3,\"telephone1\":\"555-%04d\"}\r\n", f, i, i, i
        }
        printf "--batch_b--\r\n"
    }' >"$work/batch$f.txt"
done

# run KIND: sends REQUESTS requests with CONCURRENCY in flight; prints elapsed seconds.
run() {
    local kind=$1 cfg="$work/$1.cfg" i
    : >"$cfg"
    for ((i = 0; i < REQUESTS; i++)); do
        [ "$i" -gt 0 ] && printf 'next\n' # options apply to one transfer each
        if [ "$kind" = upsert ]; then
            printf 'url = "%s/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpsertMultiple"\n' "$DVEMU_URL"
            printf 'header = "Content-Type: application/json"\ndata-binary = "@%s/upsert%d.json"\n' "$work" $((i % 8))
        else
            printf 'url = "%s/api/data/v9.2/$batch"\n' "$DVEMU_URL"
            printf 'header = "Content-Type: multipart/mixed; boundary=batch_b"\ndata-binary = "@%s/batch%d.txt"\n' "$work" $((i % 8))
        fi
        printf 'header = "Authorization: Bearer %s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$DVEMU_TOKEN"
    done >"$cfg"
    local t0 t1 c0 c1
    c0=$(cpu_seconds)
    t0=$(date +%s.%N)
    curl -s -S --no-progress-meter --parallel --parallel-max "$CONCURRENCY" --parallel-immediate -K "$cfg" >"$work/$kind.codes"
    t1=$(date +%s.%N)
    c1=$(cpu_seconds)
    calc "$c1 - $c0" >"$work/$kind.cpu"
    local bad
    bad=$(grep -vcE '^(200|204)$' "$work/$kind.codes")
    [ "$bad" = 0 ] || die "$kind: $bad requests failed: $(sort "$work/$kind.codes" | uniq -c | tr '\n' ' ')"
    calc "$t1 - $t0"
}

# CPU seconds dvemu has used (user + system): rows per CPU-second do not depend on what
# else runs on the machine, which wall-clock rows/s on a shared box do.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$DVEMU_PID/stat"
}

calc() { awk "BEGIN { print ($1) }"; }

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

up=() ba=() upc=() bac=()
for ((r = 0; r < RUNS; r++)); do
    s=$(run upsert)
    up+=("$(calc "$REQUESTS * 1000 / $s")")
    upc+=("$(calc "$REQUESTS * 1000 / ($(cat "$work/upsert.cpu") + 0.001)")")
    s=$(run batch)
    ba+=("$(calc "$REQUESTS * 100 / $s")")
    bac+=("$(calc "$REQUESTS * 100 / ($(cat "$work/batch.cpu") + 0.001)")")
done
mu=$(printf '%s\n' "${up[@]}" | median)
mb=$(printf '%s\n' "${ba[@]}" | median)
muc=$(printf '%s\n' "${upc[@]}" | median)
mbc=$(printf '%s\n' "${bac[@]}" | median)
printf 'dvemu UpsertMultiple (1000 rows/request): %.0f rows/s  (runs: %s)\n' "$mu" \
    "$(printf '%.0f ' "${up[@]}")"
printf 'dvemu $batch (100 PATCH upserts/request): %.0f rows/s  (runs: %s)\n' "$mb" \
    "$(printf '%.0f ' "${ba[@]}")"
printf 'dvemu CPU cost: UpsertMultiple %.0f rows per CPU-second, $batch %.0f (load now: %s)\n' \
    "$muc" "$mbc" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'ratio UpsertMultiple / $batch: %.2f  (%d requests x %d runs, %d concurrent)\n' \
    "$(calc "$mu / $mb")" "$REQUESTS" "$RUNS" "$CONCURRENCY"
printf 'target >= 50000 rows/s via UpsertMultiple: %s\n' \
    "$([ "$(calc "$mu >= 50000")" = 1 ] && echo met || echo NOT met)"

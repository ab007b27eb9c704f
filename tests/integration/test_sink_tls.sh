#!/usr/bin/env bash
# TLS: dvemu over HTTPS with a throwaway CA. Trusting that CA ([dataverse] ca_file) works;
# another CA, or the system store, is refused with a clear error and nothing is sent.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-tls
dvemu_start_tls
sink_conf "$work/dw.conf"

out=$("$DWASYNC_BIN" --config "$work/dw.conf" dataverse whoami 2>"$work/err")
check_eq "whoami over TLS with the test CA" 0 $?
sink_seed_company "$work/dw.conf" "$work/rows"
sink_accounts 25 T >"$work/rows.jsonl"
sink_apply "$work/dw.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "writes over TLS" 25 "$(sink_count "$work/out" applied)"

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=some other CA" \
    -keyout "$work/other.key" -out "$work/other.pem" >/dev/null 2>&1 || die "openssl failed"
sink_conf "$work/wrong.conf" "ca_file = $work/other.pem"
before=$(dvemu_admin GET counters | jq -c '.requests | del(.["GET admin 200"])')
out=$("$DWASYNC_BIN" --config "$work/wrong.conf" dataverse whoami 2>&1)
check_eq "the wrong CA is refused" 1 $?
check_contains "the error names the certificate problem" "SSL certificate problem" "$out"
check_eq "no request got through" "$before" "$(dvemu_admin GET counters | jq -c '.requests | del(.["GET admin 200"])')"

# Without ca_file the system store is used, which does not know the test CA.
grep -v '^ca_file' "$work/dw.conf" >"$work/system.conf"
out=$("$DWASYNC_BIN" --config "$work/system.conf" dataverse whoami 2>&1)
check_eq "the system store does not trust the test CA" 1 $?

# Writes under the wrong CA with a retry limit give up rather than go unverified.
sink_conf "$work/wrong-limited.conf" "ca_file = $work/other.pem" "retry_limit = 2" \
    "retry_max_backoff_ms = 100"
sink_apply "$work/wrong-limited.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "writes with the wrong CA give up" 25 "$(sink_count "$work/out" gave_up)"

finish

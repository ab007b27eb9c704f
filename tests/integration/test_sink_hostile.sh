#!/usr/bin/env bash
# Transport rules against hostile or wrong peers (issue 16): plain http is refused unless
# allow_insecure_http names a loopback address (and `check` reports it); a redirect is a
# retried configuration error that quotes Location, never a permanent row error; a body past
# max_response_bytes fails with an error naming the cap; a huge expires_in is clamped; key
# values with '#' are percent-encoded in @odata.bind and @odata.id. Peers are a small
# Python server (tests/data/peers/hostile_peer.py) and dvemu.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-hostile
echo "peer-secret-value" >"$work/secret"
chmod 600 "$work/secret"

# peer_start MODE: starts the peer; sets $peer_url and $peer_log (one line per request).
peer_start() {
    local portfile=$work/$1.port i
    peer_log=$work/$1.requests
    : >"$peer_log"
    python3 "$DWASYNC_SOURCE_DIR/tests/data/peers/hostile_peer.py" "$1" "$portfile" "$peer_log" &
    on_exit "kill $!"
    for i in $(seq 1 600); do [ -s "$portfile" ] && break; sleep 0.05; done
    [ -s "$portfile" ] || die "the $1 peer did not start"
    peer_url=http://127.0.0.1:$(cat "$portfile")
}
peer_conf() { # FILE URL [LINE...]
    local f=$1 url=$2
    shift 2
    printf '[dataverse]\nurl = %s\nauthority = %s\ntenant_id = t\nclient_id = c\nclient_secret_file = %s\nretry_limit = 2\nretry_max_backoff_ms = 100\n' \
        "$url" "$url" "$work/secret" >"$f"
    for line in "$@"; do printf '%s\n' "$line" >>"$f"; done
}

# --- plain http ---------------------------------------------------------------------------
peer_start hugetoken
peer_conf "$work/plain.conf" "$peer_url"
out=$("$DWASYNC_BIN" --config "$work/plain.conf" dataverse whoami 2>&1); status=$?
check_eq "http without allow_insecure_http: refused" 1 "$status"
check_contains "the refusal names the key" "[dataverse] url \\\"$peer_url\\\" is not https" "$out"
check_eq "nothing was sent (no secret on the wire)" 0 "$(wc -l <"$peer_log")"
printf '[source]\nconninfo = host=127.0.0.1 port=1 connect_timeout=1\n' >"$work/check.conf"
cat "$work/plain.conf" >>"$work/check.conf"
out=$("$DWASYNC_BIN" --config "$work/check.conf" check 2>&1)
check_contains "check reports it as an error" "error   DV007   [dataverse] url \"$peer_url\" is not https" "$out"
peer_conf "$work/remote.conf" "http://192.0.2.1:8080" "allow_insecure_http = true"
out=$("$DWASYNC_BIN" --config "$work/remote.conf" dataverse whoami 2>&1); status=$?
check_eq "allow_insecure_http to a remote host: refused" 1 "$status"
check_contains "the refusal says loopback only" "which is not a loopback address" "$out"

# --- a huge expires_in --------------------------------------------------------------------
peer_conf "$work/huge.conf" "$peer_url" "allow_insecure_http = true"
out=$("$DWASYNC_BIN" --config "$work/huge.conf" dataverse whoami 2>&1); status=$?
check_eq "whoami with a huge token lifetime" 0 "$status"
check_contains "the lifetime is clamped to a day" "taken as 86400 s" "$out"
check_contains "insecure http is named loudly" "allow_insecure_http: talking to Dataverse without TLS" "$out"
check_eq "one token request" 1 "$(grep -c oauth2 "$peer_log")"

# --- redirects ----------------------------------------------------------------------------
peer_start redirect
peer_conf "$work/redirect.conf" "$peer_url" "allow_insecure_http = true"
out=$("$DWASYNC_BIN" --config "$work/redirect.conf" dataverse whoami 2>&1); status=$?
check_eq "whoami redirected: fails" 1 "$status"
check_contains "the error quotes Location" 'redirected to \"https://elsewhere.example/api/data/v9.2/\"' "$out"
printf '%s\n' '{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"R1"},"body":{"name":"r"}}' >"$work/one.jsonl"
"$DWASYNC_BIN" --config "$work/redirect.conf" dataverse apply "$work/one.jsonl" >"$work/r.out" 2>"$work/r.err"
check_eq "a redirected write gives up as transient, not a row error" "gave_up transient" \
    "$(jq -r '.status + " " + .class' "$work/r.out")"
check_contains "its message quotes Location" "elsewhere.example" "$(jq -r .message "$work/r.out")"
check_eq "it was retried" 1 "$([ "$(grep -c '^[A-Z]* /api/' "$peer_log")" -ge 2 ] && echo 1 || echo 0)"
check_eq "never followed" 0 "$(grep -c elsewhere "$peer_log")"

# --- response body cap --------------------------------------------------------------------
peer_start big
peer_conf "$work/big.conf" "$peer_url" "allow_insecure_http = true" "max_response_bytes = 65536"
out=$("$DWASYNC_BIN" --config "$work/big.conf" dataverse get 'accounts' 2>&1); status=$?
check_eq "a body over the cap fails" 1 "$status"
check_contains "the error names the cap" "larger than [dataverse] max_response_bytes (65536 bytes)" "$out"
peer_conf "$work/bigok.conf" "$peer_url" "allow_insecure_http = true"
out=$("$DWASYNC_BIN" --config "$work/bigok.conf" dataverse get 'accounts' 2>&1); status=$?
check_eq "the same body under the default cap is read" 0 "$status"
check_eq "secret never printed" 0 "$(grep -c peer-secret-value <<<"$out$(cat "$work/r.err")")"

# --- '#' in key values, against dvemu -----------------------------------------------------
dvemu_start
sink_conf "$work/dv.conf" "debug_payloads = true" "batch_size = 10"
printf '[log]\nlevel = debug\n' >>"$work/dv.conf"
printf '%s\n' '{"op":"upsert","entity_set":"cdm_companies","logical_name":"cdm_company","key":{"cdm_companycode":"A#1"},"body":{"cdm_name":"Hash"}}' \
              '{"op":"upsert","entity_set":"cdm_companies","logical_name":"cdm_company","key":{"cdm_companycode":"A"},"body":{"cdm_name":"Plain"}}' >"$work/companies.jsonl"
sink_apply "$work/dv.conf" "$work/companies.jsonl" "$work/c.out" "$work/c.err"
check_eq "companies with and without #" 2 "$(sink_count "$work/c.out" applied)"
for i in 1 2 3; do
    printf '{"op":"upsert","entity_set":"accounts","logical_name":"account","key":{"accountnumber":"H#%s","_msdyn_company_value":{"$ref":"cdm_companies","key":{"cdm_companycode":"A#1"}}},"body":{"name":"h%s","msdyn_company@odata.bind":{"$ref":"cdm_companies","key":{"cdm_companycode":"A#1"}}}}\n' "$i" "$i"
done >"$work/accounts.jsonl"
sink_apply "$work/dv.conf" "$work/accounts.jsonl" "$work/a.out" "$work/a.err"
check_eq "accounts bound to the # company" 3 "$(sink_count "$work/a.out" applied)"
check_contains "the bind is percent-encoded" "cdm_companycode='A%231'" "$(cat "$work/a.err")"
check_eq "no raw # reaches a bind or an id" 0 "$(grep -cE "(odata.bind|odata.id)[^,]*A#1" "$work/a.err")"
company_hash=$(curl -sf "$DVEMU_URL/_dvemu/tables/cdm_companies" | jq -r '.value[] | select(.cdm_companycode == "A#1") | .cdm_companyid')
check_eq "every account hangs off the # company, not another" 3 \
    "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | jq --arg c "$company_hash" '[.value[] | select(._msdyn_company_value == $c)] | length')"

finish

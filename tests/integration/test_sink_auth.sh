#!/usr/bin/env bash
# Sink auth against dvemu: client secret, certificate assertions (PS256 + x5t#S256 and
# RS256 + x5t), wrong credentials refused with a clear error, tokens renewed mid-run.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-auth

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dwasync test client" \
    -keyout "$work/client.key" -out "$work/client.pem" >/dev/null 2>&1 || die "openssl failed"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=stranger" \
    -keyout "$work/other.key" -out "$work/other.pem" >/dev/null 2>&1 || die "openssl failed"
chmod 600 "$work/client.key" "$work/other.key"

# Tokens live 2 seconds, so a run of a few seconds needs several.
dvemu_start --client-cert "cert-client:$work/client.pem" --token-lifetime 2

sink_conf "$work/secret.conf"
out=$("$DWASYNC_BIN" --config "$work/secret.conf" dataverse whoami 2>"$work/err")
check_eq "whoami with a client secret exits 0" 0 $?
[[ "$out" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] &&
    pass "whoami prints the user id" || fail "whoami prints the user id" "$out"

cert_conf() { # FILE CERT KEY ALG
    printf '[dataverse]\nallow_insecure_http = true\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = cert-client\n' \
        "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" >"$1"
    printf 'certificate_file = %s\nprivate_key_file = %s\nassertion_alg = %s\n' "$2" "$3" "$4" >>"$1"
}
cert_conf "$work/ps.conf" "$work/client.pem" "$work/client.key" ps256
out=$("$DWASYNC_BIN" --config "$work/ps.conf" dataverse whoami 2>&1)
check_eq "certificate auth with PS256 and x5t#S256" 0 $?
cert_conf "$work/rs.conf" "$work/client.pem" "$work/client.key" rs256
out=$("$DWASYNC_BIN" --config "$work/rs.conf" dataverse whoami 2>&1)
check_eq "certificate auth with RS256 and x5t" 0 $?

# A certificate dvemu does not know: the assertion is refused, the error says so.
cert_conf "$work/bad.conf" "$work/other.pem" "$work/other.key" ps256
out=$("$DWASYNC_BIN" --config "$work/bad.conf" dataverse whoami 2>&1)
check_eq "unknown certificate fails" 1 $?
check_contains "the endpoint's refusal is shown" "invalid_client" "$out"
check_contains "and the token URL" "$DVEMU_URL/$DVEMU_TENANT/oauth2/v2.0/token" "$out"

# A key that does not belong to the certificate is caught before any request.
cert_conf "$work/mismatch.conf" "$work/client.pem" "$work/other.key" ps256
out=$("$DWASYNC_BIN" --config "$work/mismatch.conf" dataverse whoami 2>&1)
check_eq "mismatched key fails" 1 $?
check_contains "mismatch is named" "does not belong to certificate" "$out"

# A wrong secret: refused, clear message, exit 1.
(umask 077 && printf 'not-the-secret-%s\n' $RANDOM >"$work/wrong-secret")
sink_conf "$work/wrong.conf" "client_secret_file = $work/wrong-secret"
out=$("$DWASYNC_BIN" --config "$work/wrong.conf" dataverse whoami 2>&1)
check_eq "wrong secret fails" 1 $?
check_contains "wrong secret: endpoint error shown" "HTTP 401 invalid_client" "$out"

# Token expiry mid-run: every API request takes 250 ms and goes one at a time, so 150 rows
# in batches of 10 take about 4 s: two-second tokens must be renewed on the way.
sink_conf "$work/run.conf" "batch_size = 10" "max_concurrency = 1"
sink_seed_company "$work/run.conf" "$work/rows"
tokens_before=$(dvemu_admin GET counters | jq '.requests["POST token 200"] // 0')
dvemu_admin POST faults '{"rates":{"slow":1.0},"slow_ms":250}' >/dev/null
sink_accounts 150 T >"$work/rows.jsonl"
sink_apply "$work/run.conf" "$work/rows.jsonl" "$work/out" "$work/err"
check_eq "long run exits 0" 0 $?
dvemu_admin POST faults '{"rates":{}}' >/dev/null
check_eq "all 150 rows applied" 150 "$(sink_count "$work/out" applied)"
tokens_after=$(dvemu_admin GET counters | jq '.requests["POST token 200"] // 0')
[ $((tokens_after - tokens_before)) -ge 2 ] && pass "tokens renewed during the run" ||
    fail "tokens renewed during the run" "$((tokens_after - tokens_before)) token(s)"
check_eq "dvemu holds the 150 rows" 150 \
    "$(dvemu_api GET 'accounts?$count=true&$top=1' | jq '."@odata.count"')"

finish

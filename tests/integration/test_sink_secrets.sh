#!/usr/bin/env bash
# Secrets stay secret: with debug logging and payload dumps on, in success and in failure
# (refused secret, throttling, outage, bad input), no output of dwasync carries the client
# secret, the private key, the client assertion or an access token.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work sink-secrets

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dwasync test client" \
    -keyout "$work/client.key" -out "$work/client.pem" >/dev/null 2>&1 || die "openssl failed"
chmod 600 "$work/client.key"
dvemu_start --client-cert "cert-client:$work/client.pem" --limit-requests 30 --limit-window 2
secret=$(cat "$DVEMU_SECRET_FILE")
all=$work/all-output
: >"$all"
run() { "$DWASYNC_BIN" --verbose --config "$@" >>"$all" 2>&1; }

sink_conf "$work/dw.conf" "debug_payloads = true" "batch_size = 25"
printf '[log]\nlevel = debug\n' >>"$work/dw.conf"
sink_conf "$work/json.conf" "debug_payloads = true"
printf '[log]\nlevel = debug\nformat = json\n' >>"$work/json.conf"

run "$work/dw.conf" dataverse whoami
run "$work/json.conf" dataverse whoami
run "$work/dw.conf" dataverse get 'accounts?$top=1'
sink_seed_company "$work/dw.conf" "$work/rows"
sink_accounts 200 S | sed '5s/"Account 4"/"'"$(printf 'y%.0s' $(seq 1 200))"'"/' >"$work/rows.jsonl"
echo 'garbage line' >>"$work/rows.jsonl"
run "$work/dw.conf" dataverse apply "$work/rows.jsonl"      # throttled, one bad row
dvemu_admin POST "outage?on=1" >/dev/null
sink_conf "$work/limited.conf" "debug_payloads = true" "retry_limit = 2" "retry_max_backoff_ms = 100"
run "$work/limited.conf" dataverse apply "$work/rows.jsonl" # gives up
dvemu_admin POST "outage?on=0" >/dev/null

# A refused secret must not leak either.
(umask 077 && printf 'wrong-secret-%s%s\n' $RANDOM $RANDOM >"$work/wrong")
wrong=$(cat "$work/wrong")
sink_conf "$work/wrong.conf" "client_secret_file = $work/wrong" "debug_payloads = true"
run "$work/wrong.conf" dataverse whoami

# Certificate credentials with payload dumps.
printf '[dataverse]\nallow_insecure_http = true\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = cert-client\n' \
    "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" >"$work/cert.conf"
printf 'certificate_file = %s\nprivate_key_file = %s\ndebug_payloads = true\n' \
    "$work/client.pem" "$work/client.key" >>"$work/cert.conf"
run "$work/cert.conf" dataverse whoami

# A secret written into the config itself is refused without being echoed.
printf '[dataverse]\nclient_secret = %s\n' "$secret" >"$work/inline.conf"
run "$work/inline.conf" dataverse whoami

check_contains "payloads were logged (the test looks at real dumps)" "request body:" "$(cat "$all")"
check_contains "the Authorization header is shown redacted" "Authorization: Bearer [REDACTED]" "$(cat "$all")"
check_contains "the refused secret produced an error" "invalid_client" "$(cat "$all")"
check_contains "the inline secret was refused" "client_secret is not accepted" "$(cat "$all")"
check_eq "the client secret appears nowhere" 0 "$(grep -cF -- "$secret" "$all")"
check_eq "the refused secret appears nowhere" 0 "$(grep -cF -- "$wrong" "$all")"
check_eq "no access token (dvemu's JWT header) appears" 0 "$(grep -c 'eyJ0eXAiOiJKV1Qi' "$all")"
check_eq "no client assertion appears" 0 "$(grep -c 'client_assertion=ey' "$all")"
keyline=$(sed -n 2p "$work/client.key")
check_eq "no private key material appears" 0 "$(grep -cF -- "$keyline" "$all")"
check_eq "no token request body appears" 0 "$(grep -c 'grant_type=client_credentials' "$all")"

finish

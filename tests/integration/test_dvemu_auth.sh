#!/usr/bin/env bash
# dvemu: the Entra ID token endpoint (secret, certificate assertions RS256/x5t and
# PS256/x5t#S256), 401 on missing/wrong/expired tokens, HTTPS against a test CA. dvemu runs
# on its manual clock: tokens expire and assertions age when the test moves it, not when the
# machine gets round to it.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work

# A client certificate and key made with the openssl CLI.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=dwasync test client" \
    -keyout "$work/client.key" -out "$work/client.pem" >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=another client" \
    -keyout "$work/other.key" -out "$work/other.pem" >/dev/null 2>&1
CERT_CLIENT=11111111-2222-4333-8444-555555555555

dvemu_start --clock manual --token-lifetime 2 --client-cert "$CERT_CLIENT:$work/client.pem"
TOKEN_URL="$DVEMU_URL/$DVEMU_TENANT/oauth2/v2.0/token"

# token FORM-ARGS...: POSTs the form; sets DV_STATUS and DV_BODY.
token() {
    DV_STATUS=$(curl -s -o "$work/tok" -w '%{http_code}' "$@")
    DV_BODY=$(cat "$work/tok")
}
j() { printf '%s' "$DV_BODY" | jq -r "$1"; }
secret=$(cat "$DVEMU_SECRET_FILE")

token "$TOKEN_URL" --data-urlencode "client_id=$DVEMU_CLIENT_ID" --data-urlencode "client_secret=$secret" \
    --data-urlencode "scope=$DVEMU_URL/.default" --data-urlencode grant_type=client_credentials
check_eq "secret grant answers 200" 200 "$DV_STATUS"
check_eq "token type" Bearer "$(j .token_type)"
check_eq "expires_in is the configured lifetime" 2 "$(j .expires_in)"
tok=$(j .access_token)

token "$TOKEN_URL" --data-urlencode "client_id=$DVEMU_CLIENT_ID" --data-urlencode "client_secret=wrong" \
    --data-urlencode "scope=$DVEMU_URL/.default" --data-urlencode grant_type=client_credentials
check_eq "wrong secret is 401" 401 "$DV_STATUS"
check_eq "wrong secret error" invalid_client "$(j .error)"
check_eq "wrong secret AADSTS code" 7000215 "$(j '.error_codes[0]')"
check_contains "wrong secret description" "AADSTS7000215: Invalid client secret provided." "$(j .error_description)"
token "$TOKEN_URL" --data-urlencode "client_id=nobody" --data-urlencode "client_secret=$secret" \
    --data-urlencode "scope=$DVEMU_URL/.default" --data-urlencode grant_type=client_credentials
check_eq "unknown client is 400 unauthorized_client" "400 unauthorized_client 700016" "$DV_STATUS $(j .error) $(j '.error_codes[0]')"
token "$DVEMU_URL/other-tenant/oauth2/v2.0/token" --data-urlencode "client_id=$DVEMU_CLIENT_ID" \
    --data-urlencode "client_secret=$secret" --data-urlencode "scope=x" --data-urlencode grant_type=client_credentials
check_eq "unknown tenant is 400 (AADSTS90002)" "400 90002" "$DV_STATUS $(j '.error_codes[0]')"
token "$TOKEN_URL" --data-urlencode "client_id=$DVEMU_CLIENT_ID" --data-urlencode "client_secret=$secret" \
    --data-urlencode "scope=x" --data-urlencode grant_type=password
check_eq "other grant types are refused" "400 unsupported_grant_type" "$DV_STATUS $(j .error)"
token "$TOKEN_URL" --data-urlencode "client_id=$DVEMU_CLIENT_ID" --data-urlencode "client_secret=$secret" \
    --data-urlencode grant_type=client_credentials
check_eq "scope is required" "400 900144" "$DV_STATUS $(j '.error_codes[0]')"
check_eq "the secret never reaches the log" 0 "$(grep -c -- "$secret" "$DVEMU_LOG")"

# --- the Web API refuses missing, wrong and expired tokens ------------------------------------
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check_eq "a valid token is accepted" 200 "$(status -H "Authorization: Bearer $tok" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
check_eq "no token is 401" 401 "$(status "$DVEMU_URL/api/data/v9.2/WhoAmI")"
www=$(curl -s -D - -o /dev/null "$DVEMU_URL/api/data/v9.2/accounts" | tr -d '\r' | grep -i '^WWW-Authenticate:')
check_contains "401 carries WWW-Authenticate with the authority" \
    "Bearer authorization_uri=https://login.microsoftonline.com/$DVEMU_TENANT/oauth2/authorize" "$www"
forged="${tok%.*}.AAAA${tok##*.}"
check_eq "a token with a wrong signature is 401" 401 "$(status -H "Authorization: Bearer $forged" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
check_eq "garbage is 401" 401 "$(status -H "Authorization: Bearer abc" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
dvemu_clock_advance 1999
check_eq "a token is valid until its last millisecond" 200 "$(status -H "Authorization: Bearer $tok" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
dvemu_clock_advance 1
check_eq "an expired token is 401" 401 "$(status -H "Authorization: Bearer $tok" "$DVEMU_URL/api/data/v9.2/WhoAmI")"

# --- certificate assertions -------------------------------------------------------------------
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# assertion ALG KEY CERT [AUD] [EXP-OFFSET] [ISS]
assertion() {
    local alg=$1 key=$2 cert=$3 aud=${4:-$TOKEN_URL} exp=${5:-600} iss=${6:-$CERT_CLIENT}
    local now hdr claims signing sig
    now=$(dvemu_admin GET clock | jq .wall_s) # dvemu's time, which stands still
    if [ "$alg" = PS256 ]; then
        hdr=$(printf '{"alg":"PS256","typ":"JWT","x5t#S256":"%s"}' \
            "$(openssl x509 -in "$cert" -outform DER | openssl dgst -sha256 -binary | b64url)")
    else
        hdr=$(printf '{"alg":"RS256","typ":"JWT","x5t":"%s"}' \
            "$(openssl x509 -in "$cert" -outform DER | openssl dgst -sha1 -binary | b64url)")
    fi
    claims=$(printf '{"aud":"%s","iss":"%s","sub":"%s","jti":"%s","nbf":%d,"iat":%d,"exp":%d}' \
        "$aud" "$iss" "$iss" "$(cat /proc/sys/kernel/random/uuid)" "$now" "$now" $((now + exp)))
    signing="$(printf '%s' "$hdr" | b64url).$(printf '%s' "$claims" | b64url)"
    if [ "$alg" = PS256 ]; then
        sig=$(printf '%s' "$signing" | openssl dgst -sha256 -sigopt rsa_padding_mode:pss \
            -sigopt rsa_pss_saltlen:32 -sign "$key" | b64url)
    else
        sig=$(printf '%s' "$signing" | openssl dgst -sha256 -sign "$key" | b64url)
    fi
    printf '%s.%s' "$signing" "$sig"
}
cert_token() {
    token "$TOKEN_URL" --data-urlencode "client_id=$CERT_CLIENT" --data-urlencode "scope=$DVEMU_URL/.default" \
        --data-urlencode grant_type=client_credentials \
        --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
        --data-urlencode "client_assertion=$1"
}
cert_token "$(assertion PS256 "$work/client.key" "$work/client.pem")"
check_eq "PS256 assertion with x5t#S256 is accepted" 200 "$DV_STATUS"
check_eq "its token works" 200 "$(status -H "Authorization: Bearer $(j .access_token)" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
cert_token "$(assertion RS256 "$work/client.key" "$work/client.pem")"
check_eq "RS256 assertion with x5t is accepted" 200 "$DV_STATUS"
cert_token "$(assertion PS256 "$work/other.key" "$work/client.pem")"
check_eq "an assertion signed by another key is refused" "401 invalid_client 700027" "$DV_STATUS $(j .error) $(j '.error_codes[0]')"
cert_token "$(assertion RS256 "$work/other.key" "$work/other.pem")"
check_eq "an unregistered certificate is refused" 401 "$DV_STATUS"
cert_token "$(assertion PS256 "$work/client.key" "$work/client.pem" "https://example.invalid/token")"
check_eq "a wrong audience is refused" 401 "$DV_STATUS"
cert_token "$(assertion PS256 "$work/client.key" "$work/client.pem" "$TOKEN_URL" -60)"
check_eq "an expired assertion is refused (AADSTS700024)" "401 700024" "$DV_STATUS $(j '.error_codes[0]')"
cert_token "$(assertion PS256 "$work/client.key" "$work/client.pem" "$TOKEN_URL" 600 someone-else)"
check_eq "iss/sub must be the client id" 401 "$DV_STATUS"
cert_token "not.a.jwt"
check_eq "a malformed assertion is refused" 401 "$DV_STATUS"
token "$TOKEN_URL" --data-urlencode "client_id=$DVEMU_CLIENT_ID" --data-urlencode "scope=x" \
    --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
    --data-urlencode "client_assertion=$(assertion PS256 "$work/client.key" "$work/client.pem")"
check_eq "a secret client cannot use an assertion" 401 "$DV_STATUS"

# --- HTTPS with a test CA ----------------------------------------------------------------------
dvemu_stop
DVEMU_PID=
DVEMU_TOKEN=
dvemu_start_tls
check_contains "TLS URL" "https://127.0.0.1:" "$DVEMU_URL"
check_eq "the test CA verifies the server" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DVEMU_CA_FILE" -H "Authorization: Bearer $(dvemu_token)" "$DVEMU_URL/api/data/v9.2/WhoAmI")"
curl -s -o /dev/null "$DVEMU_URL/api/data/v9.2/WhoAmI"
check_eq "without the CA, verification fails" 60 "$?"
dvemu_call PATCH "cdm_companies(cdm_companycode='usmf')" '{"cdm_name":"TLS"}'
check_eq "writes over HTTPS" 204 "$DV_STATUS"

finish

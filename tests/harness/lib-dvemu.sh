# tests/harness/lib-dvemu.sh - start dvemu (the Dataverse emulator) for a test; sourced by lib.sh.
#
#   dvemu_start [extra dvemu args]     # HTTP on a free port, sample metadata, --admin
#   dvemu_start_tls [extra dvemu args] # the same over HTTPS with a throwaway test CA
#
# Both export DVEMU_URL (http(s)://127.0.0.1:PORT), DVEMU_TENANT, DVEMU_CLIENT_ID,
# DVEMU_SECRET_FILE (mode 0600), DVEMU_PID, DVEMU_LOG, DVEMU_DIR, and for TLS DVEMU_CA_FILE.
# The metadata is $DVEMU_METADATA if set, else packaging/sample/dataverse-metadata.json.
# dvemu is stopped (SIGTERM) when the shell exits. Helpers:
#   dvemu_token                        # prints an access token for the test client
#   dvemu_admin GET|POST PATH [BODY]   # calls /_dvemu/PATH, prints the body
#   dvemu_api METHOD PATH [BODY] [curl args...]   # authenticated Web API call, prints body
#   dvemu_stop                         # SIGTERM and wait (state is saved with --state)
#   dvemu_clock_advance MS             # moves a --clock manual dvemu's clock forward MS ms
#   dvemu_clock_wait_waiting N         # waits until N requests wait for the clock to move
#   dvemu_wait_jq FILTER VALUE [PATH]  # waits until /_dvemu/PATH (counters) | jq FILTER = VALUE

DVEMU_METADATA_DEFAULT="$DWASYNC_SOURCE_DIR/packaging/sample/dataverse-metadata.json"

dvemu_curl_tls_args() {
    if [ -n "${DVEMU_CA_FILE:-}" ]; then printf '%s\n' --cacert "$DVEMU_CA_FILE"; fi
}

# dvemu_make_ca DIR: a test CA and a server certificate for 127.0.0.1/localhost (openssl CLI).
dvemu_make_ca() {
    local d=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dvemu test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || die "openssl: CA failed"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 || die "openssl: CSR failed"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1 ||
        die "openssl: server certificate failed"
    chmod 600 "$d/server.key" "$d/ca.key"
}

dvemu_start() {
    [ -x "$DVEMU_BIN" ] || die "dvemu binary not found at $DVEMU_BIN"
    dw_mktemp DVEMU_DIR dvemu
    export DVEMU_DIR
    export DVEMU_TENANT=${DVEMU_TENANT:-tenant-$RANDOM$RANDOM}
    export DVEMU_CLIENT_ID=${DVEMU_CLIENT_ID:-00000000-0000-4000-8000-$(printf '%012d' $RANDOM$RANDOM)}
    export DVEMU_SECRET_FILE="$DVEMU_DIR/client-secret"
    (umask 077 && printf 'secret-%s%s%s\n' $RANDOM $RANDOM $RANDOM >"$DVEMU_SECRET_FILE")
    export DVEMU_LOG="$DVEMU_DIR/dvemu.log"
    local scheme=http
    local -a tls=()
    if [ -n "${DVEMU_TLS:-}" ]; then
        dvemu_make_ca "$DVEMU_DIR"
        export DVEMU_CA_FILE="$DVEMU_DIR/ca.pem"
        tls=(--tls-cert "$DVEMU_DIR/server.pem" --tls-key "$DVEMU_DIR/server.key")
        scheme=https
    fi
    rm -f "$DVEMU_DIR/port"
    "$DVEMU_BIN" --listen 127.0.0.1:0 --port-file "$DVEMU_DIR/port" \
        --metadata "${DVEMU_METADATA:-$DVEMU_METADATA_DEFAULT}" --tenant "$DVEMU_TENANT" \
        --client "$DVEMU_CLIENT_ID:@$DVEMU_SECRET_FILE" --admin "${tls[@]}" "$@" \
        >>"$DVEMU_LOG" 2>&1 &
    export DVEMU_PID=$!
    on_exit "dvemu_stop"
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$DVEMU_DIR/port" ] && break
        kill -0 "$DVEMU_PID" 2>/dev/null || { cat "$DVEMU_LOG" >&2; die "dvemu exited at start"; }
        sleep 0.05
    done
    [ -s "$DVEMU_DIR/port" ] || { cat "$DVEMU_LOG" >&2; die "dvemu did not start"; }
    export DVEMU_PORT
    DVEMU_PORT=$(cat "$DVEMU_DIR/port")
    export DVEMU_URL="$scheme://127.0.0.1:$DVEMU_PORT"
    # Wait until it answers (the port file is written once listening, so this is quick).
    for ((i = 0; i < 100; i++)); do
        curl -s -o /dev/null $(dvemu_curl_tls_args) "$DVEMU_URL/_dvemu/counters" && break
        sleep 0.05
    done
    log "dvemu on $DVEMU_URL (pid $DVEMU_PID)"
}

dvemu_start_tls() {
    DVEMU_TLS=1 dvemu_start "$@"
}

dvemu_stop() {
    [ -n "${DVEMU_PID:-}" ] || return 0
    kill -TERM "$DVEMU_PID" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$DVEMU_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$DVEMU_PID" 2>/dev/null || true
    wait "$DVEMU_PID" 2>/dev/null || true
}

# Prints an access token for the test client (client_credentials with the secret).
dvemu_token() {
    curl -s $(dvemu_curl_tls_args) "$DVEMU_URL/$DVEMU_TENANT/oauth2/v2.0/token" \
        --data-urlencode "client_id=$DVEMU_CLIENT_ID" \
        --data-urlencode "client_secret=$(cat "$DVEMU_SECRET_FILE")" \
        --data-urlencode "scope=$DVEMU_URL/.default" \
        --data-urlencode "grant_type=client_credentials" | jq -r .access_token
}

# dvemu_admin GET|POST PATH [BODY]: calls /_dvemu/PATH and prints the body.
dvemu_admin() {
    local method=$1 path=$2 body=${3:-}
    if [ -n "$body" ]; then
        curl -s $(dvemu_curl_tls_args) -X "$method" -H 'Content-Type: application/json' \
            --data-binary "$body" "$DVEMU_URL/_dvemu/$path"
    else
        curl -s $(dvemu_curl_tls_args) -X "$method" "$DVEMU_URL/_dvemu/$path"
    fi
}

# dvemu_api METHOD PATH [BODY] [curl args...]: an authenticated Web API call (token cached
# in DVEMU_TOKEN); prints the body. PATH is relative to /api/data/v9.2/.
dvemu_api() {
    local method=$1 path=$2 body=${3:-}
    shift 2
    [ $# -gt 0 ] && shift
    [ -n "${DVEMU_TOKEN:-}" ] || DVEMU_TOKEN=$(dvemu_token)
    local -a data=()
    [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
    curl -s $(dvemu_curl_tls_args) -X "$method" -H "Authorization: Bearer $DVEMU_TOKEN" \
        -H 'Accept: application/json' -H 'OData-Version: 4.0' "${data[@]}" "$@" \
        "$DVEMU_URL/api/data/v9.2/$path"
}

# dvemu_call METHOD PATH [BODY] [curl args...]: like dvemu_api, but sets DV_STATUS (HTTP
# status), DV_BODY (body) and DV_HEADERS (response headers, CRLFs removed) instead of printing.
dvemu_call() {
    local method=$1 path=$2 body=${3:-}
    shift 2
    [ $# -gt 0 ] && shift
    [ -n "${DVEMU_TOKEN:-}" ] || DVEMU_TOKEN=$(dvemu_token)
    local -a data=()
    [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
    local hdr="$DVEMU_DIR/last-headers" out="$DVEMU_DIR/last-body"
    DV_STATUS=$(curl -s $(dvemu_curl_tls_args) -o "$out" -D "$hdr" -w '%{http_code}' \
        -X "$method" -H "Authorization: Bearer $DVEMU_TOKEN" -H 'Accept: application/json' \
        -H 'OData-Version: 4.0' "${data[@]}" "$@" "$DVEMU_URL/api/data/v9.2/$path")
    DV_BODY=$(cat "$out")
    DV_HEADERS=$(tr -d '\r' <"$hdr")
}

# dvemu_header NAME: the value of a header of the last dvemu_call (case-insensitive).
dvemu_header() {
    printf '%s\n' "$DV_HEADERS" | awk -v n="$(printf '%s' "$1" | tr 'A-Z' 'a-z')" '
        { i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^ +/, "", v); print v } }' | tail -n 1
}

# dvemu_batch_part BOUNDARY "METHOD URL" [BODY] [extra MIME header]: one request part of a
# $batch body, printed.
dvemu_batch_part() {
    local b=$1 line=$2 body=${3:-} extra=${4:-}
    printf -- '--%s\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n' "$b"
    [ -n "$extra" ] && printf '%s\r\n' "$extra"
    printf '\r\n%s HTTP/1.1\r\n' "$line"
    [ -n "$body" ] && printf 'Content-Type: application/json; type=entry\r\n'
    printf '\r\n%s\r\n' "$body"
}

# dvemu_batch BODY [curl args...]: sends BODY as a $batch (boundary batch_AAA unless
# $BATCH_CT says otherwise); sets DV_STATUS and DV_BODY (raw) and leaves the answer in
# $DVEMU_DIR/batch-resp.
dvemu_batch() {
    local body=$1
    shift
    printf '%s' "$body" >"$DVEMU_DIR/batch-req"
    [ -n "${DVEMU_TOKEN:-}" ] || DVEMU_TOKEN=$(dvemu_token)
    DV_STATUS=$(curl -s $(dvemu_curl_tls_args) -o "$DVEMU_DIR/batch-resp" \
        -D "$DVEMU_DIR/batch-hdr" -w '%{http_code}' \
        -H "Authorization: Bearer $DVEMU_TOKEN" -H 'OData-Version: 4.0' \
        -H "Content-Type: ${BATCH_CT:-multipart/mixed; boundary=\"batch_AAA\"}" "$@" \
        --data-binary @"$DVEMU_DIR/batch-req" "$DVEMU_URL/api/data/v9.2/\$batch")
    DV_BODY=$(cat "$DVEMU_DIR/batch-resp")
}

# dvemu_clock_advance MS: moves the manual clock forward (dvemu --clock manual); fails the
# test's shell if dvemu refuses.
dvemu_clock_advance() {
    local out
    out=$(curl -s -w '\n%{http_code}' $(dvemu_curl_tls_args) -X POST -H 'Content-Type: application/json' \
        --data-binary "{\"advance_ms\": $1}" "$DVEMU_URL/_dvemu/clock")
    [ "${out##*$'\n'}" = 200 ] || die "dvemu refused to move its clock: $out"
}

# dvemu_wait_jq FILTER VALUE [PATH]: waits (bounded: 60 s) until GET /_dvemu/PATH (default
# counters) piped through jq -r FILTER prints VALUE; returns 1 if it never does. An event
# wait: the bound is generous and only ends a test that would otherwise hang.
dvemu_wait_jq() {
    local filter=$1 want=$2 path=${3:-counters} i got=
    for ((i = 0; i < 1200; i++)); do
        got=$(dvemu_admin GET "$path" | jq -r "$filter")
        [ "$got" = "$want" ] && return 0
        sleep 0.05
    done
    log "dvemu_wait_jq: $path | $filter is \"$got\", not \"$want\""
    return 1
}

# dvemu_clock_wait_waiting N: waits until N requests wait for the manual clock to move.
dvemu_clock_wait_waiting() {
    dvemu_wait_jq .waiting "$1" clock
}

# tests/harness/lib-sink.sh - helpers for the sink's integration tests; sourced by lib.sh.
#
#   sink_conf FILE [LINE...]        # a dwasync config for the running dvemu (secret auth);
#                                   # each LINE (e.g. "batch_size = 10") is added to [dataverse]
#   sink_accounts N PREFIX [COMPANY]  # N upserts of accounts keyed by accountnumber PREFIXnnnn
#                                   # and the company (by its key), one JSON line each
#   sink_apply CONF FILE OUT ERR    # dwasync dataverse apply; exit status returned
#   sink_count OUT STATUS           # lines of OUT whose "status" is STATUS

sink_conf() {
    local f=$1 line
    shift
    {
        printf '[dataverse]\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = %s\n' \
            "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" "$DVEMU_CLIENT_ID"
        printf 'client_secret_file = %s\n' "$DVEMU_SECRET_FILE"
        printf 'allow_insecure_http = true\n' # dvemu on 127.0.0.1
        [ -n "${DVEMU_CA_FILE:-}" ] && printf 'ca_file = %s\n' "$DVEMU_CA_FILE"
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$f"
}

sink_accounts() {
    local n=$1 prefix=$2 company=${3:-USMF}
    jq -nc --argjson n "$n" --arg p "$prefix" --arg c "$company" '
        range(0; $n) | {op: "upsert", entity_set: "accounts", logical_name: "account",
          key: {accountnumber: ($p + (. | tostring | ("0000" + .)[-4:])),
                _msdyn_company_value: {"$ref": "cdm_companies", key: {cdm_companycode: $c}}},
          body: {name: ("Account " + (. | tostring))}}'
}

sink_apply() {
    "$DWASYNC_BIN" --config "$1" dataverse apply "$2" >"$3" 2>"$4"
}

sink_count() {
    jq -r .status "$1" | grep -cx "$2"
}

# The company every account test row hangs off.
sink_seed_company() {
    printf '%s\n' '{"op":"upsert","entity_set":"cdm_companies","logical_name":"cdm_company","key":{"cdm_companycode":"USMF"},"body":{"cdm_name":"Contoso US"}}' >"$2.seed"
    "$DWASYNC_BIN" --config "$1" dataverse apply "$2.seed" >/dev/null 2>&1 ||
        die "could not create the test company"
}

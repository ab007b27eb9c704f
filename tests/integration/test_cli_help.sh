#!/usr/bin/env bash
# The command line answers --help everywhere: every command and every subcommand named in
# `dwasync --help` prints its usage and exits 0 (before or after its arguments, with no config
# file and no server); the help lists each command once, no line past 100 columns; every
# option a form documents is accepted where it is documented (a bad config then fails with 1,
# never a usage error 2); --config and --verbose work after the command (`check --verbose`
# lists what passed); `dataverse get` percent-encodes a typed $filter.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"

dw_mktemp work help
export DWASYNC_CONFIG=$work/absent.conf   # never read by --help
help=$("$DWASYNC_BIN" --help); status=$?
check_eq "dwasync --help exits 0" 0 "$status"
long=$("$DWASYNC_BIN" --help | awk 'length > 100')
check_eq "no help line past 100 columns" "" "$long"
commands=$(sed -n '/^commands:/,/^$/p' <<<"$help" | awk '/^  [a-z]/ {print $1}')
[ "$(wc -w <<<"$commands")" -ge 10 ] || die "too few commands parsed from dwasync --help: $commands"
check_eq "each command listed once" "" "$(sort <<<"$commands" | uniq -d)"

# Forms of a command: the indented lines under it in the command list.
forms_of() {
    sed -n '/^commands:/,/^$/p' <<<"$help" | awk -v c="$1" '
        /^  [a-z]/ { cur = $1; next }
        /^              / && cur == c { sub(/^ +/, ""); line = line " " $0; next }
        /^             [^ ]/ && cur == c { if (line != "") print line; sub(/^ +/, ""); line = $0; next }
        /^  [a-z]/ || /^$/ { if (line != "") print line; line = "" }
        END { if (line != "") print line }'
}

for c in $commands; do
    out=$("$DWASYNC_BIN" "$c" --help 2>&1); status=$?
    check_eq "$c --help exits 0" 0 "$status"
    check_contains "$c --help prints its usage" "usage: dwasync $c" "$out"
    subs=$(forms_of "$c" | awk '$1 ~ /^[a-z]/ {print $1}' | sort -u)
    for s in $subs; do
        out=$("$DWASYNC_BIN" "$c" "$s" --help 2>&1); status=$?
        check_eq "$c $s --help exits 0" 0 "$status"
        check_contains "$c $s --help prints its usage" "usage: dwasync $c $s" "$out"
        others=$(grep -c "dwasync $c " <<<"$out")
        check_eq "$c $s --help prints only its own forms" "$(forms_of "$c" | grep -c "^$s\( \|$\)")" "$others"
        out=$("$DWASYNC_BIN" "$c" "$s" x y --help 2>&1); status=$?
        check_eq "$c $s ARGS --help exits 0" 0 "$status"
        check_contains "$c $s ARGS --help prints its usage" "usage: dwasync $c $s" "$out"
    done
done
out=$("$DWASYNC_BIN" job 2>&1); status=$?
check_eq "a usage error still exits 2" 2 "$status"
check_contains "a usage error prints the forms" "dwasync job start NAME [--initial-sync]" "$out"

# Every documented option is accepted where it stands: each form is run with all of its
# options (of "A|B", the last) and a config that does not load, so a command that parsed its
# arguments fails with 1; a usage error would be 2.
printf '[nosuch]\nkey = 1\n' >"$work/bad.conf"
placeholder() {
    case $1 in
    FILE) echo "$work/none.json" ;;
    ID*) echo 1 ;;
    S) echo open ;;
    SCHEMA*) echo fno.custtable ;;
    T,...) echo fno.t ;;
    N) echo 5 ;;
    TIMESTAMP) echo 2026-12-04T10:00:00Z ;;
    *) echo x ;;
    esac
}
nforms=0
for c in $commands; do
    while IFS= read -r form; do
        [[ $form == *--* ]] || continue
        read -ra words <<<"$form"
        argv=()
        for ((i = 0; i < ${#words[@]}; i++)); do
            w=${words[$i]}
            w=${w#[}; w=${w%]}; w=${w##*|}
            if [[ $w == --* && ${words[$((i + 1))]:-} =~ ^[A-Z] ]]; then
                nxt=${words[$((i + 1))]%]}
                argv+=("$w" "$(placeholder "$nxt")")
                i=$((i + 1))
            elif [[ $w =~ ^[A-Z] ]]; then
                argv+=("$(placeholder "$w")")
            else
                argv+=("$w")
            fi
        done
        nforms=$((nforms + 1))
        "$DWASYNC_BIN" --config "$work/bad.conf" "$c" "${argv[@]}" </dev/null >/dev/null 2>"$work/err"
        status=$?
        if [ "$status" = 1 ]; then pass "dwasync $c ${argv[*]}: options accepted"
        else fail "dwasync $c ${argv[*]}: options accepted" "exit $status: $(head -3 "$work/err")"; fi
    done < <(forms_of "$c")
done
[ "$nforms" -ge 10 ] || fail "at least 10 forms with options walked" "walked $nforms"
check_status "an undocumented option is a usage error" 2 "$DWASYNC_BIN" --config "$work/bad.conf" check --nosuch

# --config and --verbose after the command; `dataverse get` encodes a typed $filter.
dvemu_start
printf '[dataverse]\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = %s\nclient_secret_file = %s\nallow_insecure_http = true\n' \
    "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" "$DVEMU_CLIENT_ID" "$DVEMU_SECRET_FILE" >"$work/dv.conf"
dvemu_api POST transactioncurrencies \
    '{"isocurrencycode":"XBT","currencyname":"Test coin one","currencysymbol":"T","exchangerate":1}' >/dev/null
dvemu_api POST transactioncurrencies \
    '{"isocurrencycode":"XBU","currencyname":"Test coin two","currencysymbol":"U","exchangerate":1}' >/dev/null
out=$("$DWASYNC_BIN" dataverse get "transactioncurrencies?\$filter=currencyname eq 'Test coin two'&\$select=isocurrencycode" \
    --config "$work/dv.conf" 2>"$work/err"); status=$?
check_eq "dataverse get with spaces in \$filter exits 0" 0 "$status"
check_eq "dataverse get returns the one row the filter names" '["XBU"]' \
    "$(jq -c '[.value[].isocurrencycode]' <<<"$out" 2>/dev/null)"
out=$("$DWASYNC_BIN" dataverse get "/transactioncurrencies?\$filter=currencyname%20eq%20'Test%20coin%20one'" \
    --config "$work/dv.conf" 2>"$work/err")
check_eq "escapes already typed are kept" '["XBT"]' "$(jq -c '[.value[].isocurrencycode]' <<<"$out" 2>/dev/null)"
quiet=$("$DWASYNC_BIN" --config "$work/dv.conf" check 2>&1)
loud=$("$DWASYNC_BIN" check --verbose --config "$work/dv.conf" 2>&1)
check_contains "check --verbose (after the command) lists what passed" "ok " "$loud"
check_eq "check without --verbose lists no passes" "" "$(grep '^ok ' <<<"$quiet")"

finish

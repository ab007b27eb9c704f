#!/bin/sh
# packaging/man/gen-conf-keys.sh DWASYNC_BIN TEMPLATE VERSION OUT
# Builds dwasync.conf(5) from its template and `dwasync config describe`, so the key list
# in the manual is the config table itself and cannot drift from it.
set -eu
bin=$1 template=$2 version=$3 out=$4
keys=$(mktemp)
trap 'rm -f "$keys"' EXIT
"$bin" config describe | awk '
    function esc(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); return s }
    /^\[/ { printf ".SS %s\n", esc($0); next }
    /^  [a-z]/ {
        name = $1; type = $2
        rest = $0; sub(/^ *[^ ]+ +[^ ]+ +/, "", rest)
        sub(/  allowed:/, "; allowed:", rest)
        printf ".TP\n.B %s\n%s, %s\n.br\n", name, type, esc(rest)
        next
    }
    /^ +[^ ]/ { line = $0; sub(/^ +/, "", line); printf "\\&%s\n", esc(line); next }
' >"$keys"
awk -v keys="$keys" -v version="$version" '
    /@KEYS@/ { while ((getline l < keys) > 0) print l; next }
    { gsub(/@VERSION@/, version); print }
' "$template" >"$out"

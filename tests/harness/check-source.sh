#!/usr/bin/env bash
# tests/harness/check-source.sh - mechanical rules of the source tree that a compiler does
# not check, as curl's checksrc does: no banned C functions (unbounded copies and formats,
# conversions that cannot report errors), and a banner comment opening every C file.
# Prints each offence as FILE:LINE: what; exits 1 if there is any.
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
# snprintf, strtol and friends say when they ran out of room or met garbage; these do not.
banned='\b(atoi|atol|atoll|sprintf|vsprintf|strcpy|strncpy|strcat|strncat|strtok|gets)[[:space:]]*\('
if git ls-files -co --exclude-standard '*.c' '*.h' | xargs grep -nE "$banned" /dev/null; then
    echo "banned functions above: use snprintf, dw_buf (buf.h), strtol/strtoll with checks"
    status=1
fi
while read -r f; do
    [ -f "$f" ] || continue
    if [ "$(head -c 2 "$f")" != "/*" ]; then
        echo "$f:1: no banner comment (say what the file is for, as the others do)"
        status=1
    fi
done < <(git ls-files -co --exclude-standard '*.c' '*.h')
[ "$status" = 0 ] && echo "no banned functions; every C file has a banner"
exit "$status"

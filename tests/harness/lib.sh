# tests/harness/lib.sh - shared shell helpers for integration tests, benchmarks and the demo.
#
# Source it, then call pg_start (and dvemu_start once dvemu exists). Everything started is
# stopped and every temp dir removed when the shell exits, on success, failure or Ctrl-C;
# a watcher process also cleans up if the shell itself is killed with SIGKILL.
#
#   source "$DWASYNC_SOURCE_DIR/tests/harness/lib.sh"
#   dw_mktemp work            # a temp dir in $work, removed at exit
#   pg_start                      # exports PGHOST PGPORT PGUSER PGDATABASE DW_PG_CONNINFO ...
#   psql_q "select 1"             # psql -X -qAt -v ON_ERROR_STOP=1; a failure fails the test
#   check_eq "label" "$expected" "$actual"
#   finish                        # prints "N passed, N failed" and exits accordingly

set -o pipefail

DWASYNC_SOURCE_DIR=${DWASYNC_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
DWASYNC_BUILD_DIR=${DWASYNC_BUILD_DIR:-$DWASYNC_SOURCE_DIR/build}
DWASYNC_BIN=${DWASYNC_BIN:-$DWASYNC_BUILD_DIR/bin/dwasync}
DVEMU_BIN=${DVEMU_BIN:-$DWASYNC_BUILD_DIR/bin/dvemu}
export DWASYNC_SOURCE_DIR DWASYNC_BUILD_DIR DWASYNC_BIN DVEMU_BIN

DW_CLEANUP=()
DW_PASSED=0
DW_FAILED=0

log() { printf '# %s\n' "$*" >&2; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

# Registers a command to run at exit (run in reverse order of registration).
on_exit() { DW_CLEANUP+=("$*"); }

dw_run_cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    for ((i = ${#DW_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${DW_CLEANUP[$i]}" >/dev/null 2>&1 || true
    done
    exit "$status"
}
trap dw_run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dw_mktemp VAR [PREFIX]: a fresh temp dir, removed at exit, its path stored in VAR.
# (Not a command substitution: the cleanup must be registered in this shell.)
dw_mktemp() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/dwasync-${2:-test}.XXXXXX") || die "mktemp failed"
    chmod 755 "$d"
    on_exit "rm -rf '$d'"
    printf -v "$1" '%s' "$d"
}

# --- PostgreSQL ---------------------------------------------------------------------------

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { printf '%s\n' "$d"; return; }
    done
    command -v pg_config >/dev/null && { pg_config --bindir; return; }
    die "no PostgreSQL server binaries found (apt-get install postgresql-15)"
}

# The OS user that runs test servers: ourselves, or an unprivileged one when we are root
# (initdb refuses root). Creates "dwtest" if there is no "postgres" user.
pg_os_user() {
    if [ "$(id -u)" != 0 ]; then id -un; return; fi
    if id postgres >/dev/null 2>&1; then echo postgres; return; fi
    id dwtest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin dwtest
    echo dwtest
}

# Runs a command as the server's OS user.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

# Picks PGPORT and holds it for this shell's lifetime, so that a cluster stopped on purpose
# finds its port free when it starts again: the port lies below the kernel's ephemeral range
# (32768 and up on Linux), where no client socket or "listen on port 0" can take it, and a
# directory made atomically in /tmp keeps every other harness cluster off it.
pg_reserve_port() {
    local lock_dir=/tmp/dwasync-ports port
    mkdir -p "$lock_dir" && chmod 1777 "$lock_dir" 2>/dev/null
    while :; do
        port=$((20000 + RANDOM % 12000))
        mkdir "$lock_dir/$port" 2>/dev/null && break
    done
    [ -n "${DW_PG_PORT_LOCK:-}" ] && rmdir "$DW_PG_PORT_LOCK" 2>/dev/null
    DW_PG_PORT_LOCK=$lock_dir/$port
    on_exit "rmdir '$DW_PG_PORT_LOCK'"
    export PGPORT=$port
}

# Starts a private cluster; exports PGHOST (its socket dir), PGPORT, PGUSER=postgres,
# PGDATABASE=postgres, PGDATA, DW_PG_DIR, DW_PG_CONNINFO, and the password role's
# DW_PG_PASSWORD_ROLE / DW_PG_PASSWORD. Extra postgresql.conf lines may be passed as args.
pg_start() {
    PG_BIN=$(pg_bindir)
    PG_OS_USER=$(pg_os_user)
    dw_mktemp DW_PG_DIR pg
    export PGDATA=$DW_PG_DIR/data PGHOST=$DW_PG_DIR/sock PGUSER=postgres PGDATABASE=postgres
    mkdir -p "$PGHOST"
    [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$DW_PG_DIR" "$PGHOST"
    as_pg_user "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$DW_PG_DIR/initdb.log" 2>&1 || { cat "$DW_PG_DIR/initdb.log" >&2; die "initdb failed"; }
    {
        echo "wal_level = logical"
        echo "max_replication_slots = 20"
        echo "max_wal_senders = 20"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$PGHOST'"
        echo "fsync = off"             # test clusters need no durability against OS crashes
        echo "full_page_writes = off"
        echo "shared_buffers = 64MB"
        echo "log_min_messages = warning"
        echo "wal_sender_timeout = 60s"
        for line in "$@"; do echo "$line"; done
    } >>"$PGDATA/postgresql.conf"
    cat >"$PGDATA/pg_hba.conf" <<HBA
local   all          all                     trust
local   replication  all                     trust
host    all          dw_password 127.0.0.1/32 scram-sha-256
host    replication  dw_password 127.0.0.1/32 scram-sha-256
host    all          all         127.0.0.1/32 trust
host    replication  all         127.0.0.1/32 trust
HBA
    local try
    for try in 1 2 3 4 5 6 7 8 9 10; do
        pg_reserve_port
        if as_pg_user "$PG_BIN/pg_ctl" -D "$PGDATA" -o "-p $PGPORT" -l "$DW_PG_DIR/server.log" \
            -w -t 60 start >/dev/null 2>&1; then
            break
        fi
        grep -q "Address already in use\|could not bind\|could not create lock file" \
            "$DW_PG_DIR/server.log" 2>/dev/null || { cat "$DW_PG_DIR/server.log" >&2; die "postgres did not start"; }
        : >"$DW_PG_DIR/server.log"
        [ "$try" = 10 ] && die "no free port found for postgres"
    done
    echo "port = $PGPORT" >>"$PGDATA/postgresql.conf"   # keep the port across restarts
    on_exit "pg_stop"
    # If this shell dies without running its traps (kill -9), still stop the server.
    # (pgcluster sets DW_PG_KEEP: there the cluster outlives the shell on purpose.)
    # (The watcher is a job of its own only when started: an "a || (...) &" list that
    # ends at once could be reaped before disown, which then fails the script.)
    if [ -z "${DW_PG_KEEP:-}" ]; then
        (
            trap '' INT TERM
            while kill -0 $$ 2>/dev/null; do sleep 1; done
            as_pg_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop
            rm -rf "$DW_PG_DIR" "$DW_PG_PORT_LOCK"
        ) </dev/null >/dev/null 2>&1 &
        disown
    fi
    export DW_PG_CONNINFO="host=$PGHOST port=$PGPORT user=postgres dbname=postgres"
    export DW_PG_PASSWORD_ROLE=dw_password DW_PG_PASSWORD="pw-$RANDOM$RANDOM"
    psql_q "CREATE ROLE dw_password LOGIN REPLICATION PASSWORD '$DW_PG_PASSWORD'" >/dev/null
    log "postgres $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PGPORT, socket $PGHOST"
}

pg_stop() {
    [ -n "${PGDATA:-}" ] && [ -d "$PGDATA" ] || return 0
    as_pg_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
}

# Restarts the server; "immediate" (the default) simulates a crash.
pg_restart() {
    as_pg_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m "${1:-immediate}" -l "$DW_PG_DIR/server.log" \
        -w -t 60 restart >/dev/null && return 0
    tail -20 "$DW_PG_DIR/server.log" >&2
    die "postgres did not restart"
}

# psql_q SQL [PSQL ARGS...]: runs SQL and prints its rows, unaligned. A statement that fails
# fails the test (finish() lists it), whether or not anything reads its output: a setup
# statement that does nothing must not leave a check passing for the wrong reason. psql_try
# only returns psql's status, for statements that may fail (expected errors, a restart).
psql_try() { psql -X -qAt -v ON_ERROR_STOP=1 -c "$1" "${@:2}"; }
psql_q() {
    psql_try "$@" && return 0
    local status=$?
    printf '%s\n' "${1:0:300}" >>"$DW_FAILED_STATEMENTS"
    return $status
}
DW_FAILED_STATEMENTS=$(mktemp "${TMPDIR:-/tmp}/dwasync-statements.XXXXXX") || die "mktemp failed"
on_exit "rm -f '$DW_FAILED_STATEMENTS'"

# wait_for SECONDS COMMAND...: polls until the command succeeds; 1 if it never does (the
# bound is for a hung test, never a timing assert: a test waits on events, not on sleeps).
# The command runs again at each try, but its arguments do not: `wait_for 60 test "$(n)" -gt
# 0` reads n once; wrap the check in a function instead.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}

# --- assertions ---------------------------------------------------------------------------

pass() { DW_PASSED=$((DW_PASSED + 1)); printf 'ok - %s\n' "$1"; }
fail() { DW_FAILED=$((DW_FAILED + 1)); printf 'not ok - %s\n' "$1"; [ -n "${2:-}" ] && printf '#   %s\n' "$2"; }

check_eq() {
    if [ "$2" == "$3" ]; then pass "$1"; else fail "$1" "expected [$2] got [$3]"; fi
}
check_contains() {
    if [[ "$3" == *"$2"* ]]; then pass "$1"; else fail "$1" "expected to contain [$2] in [$3]"; fi
}
check_status() {   # check_status LABEL EXPECTED_STATUS command...
    local label=$1 want=$2 got
    shift 2
    "$@" >/dev/null 2>&1
    got=$?
    check_eq "$label" "$want" "$got"
}

# Extensions (lib-*.sh: dvemu launcher, workload helpers...) add their functions here.
for dw_ext in "$DWASYNC_SOURCE_DIR"/tests/harness/lib-*.sh; do
    [ -f "$dw_ext" ] && source "$dw_ext"
done
unset dw_ext

# Logs whose tails finish() prints when something failed (show_log_on_failure FILE...); with
# DW_KEEP_FAILURE_LOGS=DIR, finish() also copies them whole into DIR.
DW_FAILURE_LOGS=()
show_log_on_failure() { DW_FAILURE_LOGS+=("$@"); }

finish() {
    local f
    if [ -s "$DW_FAILED_STATEMENTS" ]; then
        fail "every statement the test ran succeeded" "failed (psql_q):"
        sed 's/^/#     /' "$DW_FAILED_STATEMENTS"
    fi
    if [ "$DW_FAILED" != 0 ]; then
        for f in "${DW_FAILURE_LOGS[@]}"; do
            [ -f "$f" ] || continue
            printf '# --- last lines of %s\n' "$f"
            tail -n 40 "$f" | sed 's/^/#   /'
            [ -n "${DW_KEEP_FAILURE_LOGS:-}" ] && mkdir -p "$DW_KEEP_FAILURE_LOGS" &&
                cp "$f" "$DW_KEEP_FAILURE_LOGS/$(basename "$0" .sh).$$.$(basename "$f")"
        done
    fi
    printf '%d passed, %d failed\n' "$DW_PASSED" "$DW_FAILED"
    [ "$DW_FAILED" = 0 ] && [ "$DW_PASSED" -gt 0 ]
    exit $?
}

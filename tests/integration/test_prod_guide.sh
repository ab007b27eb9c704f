#!/usr/bin/env bash
# The README's production guide, every command of it, in order: its ```sh blocks are taken
# from the README as written and run against a harness Postgres (database "staging", the
# sample schema "fno" owned by "fno_owner") and dvemu over TLS that knows the guide's
# certificate as the application's credential. What the test changes, and nothing else:
#   names:     /etc/dwasync, /var/lib/dwasync -> temp dirs; /usr/bin/dwasync -> the build;
#              staging.example.com:5432 -> the harness cluster; contoso -> dvemu's URL, with
#              dvemu as the authority and its test CA as [dataverse] ca_file;
#   stand-ins: systemd-run loads credentials as LoadCredential does (DIR/F -> NAME_F, mode
#              600, $CREDENTIALS_DIRECTORY) and sets Environment=, without switching user;
#              `systemctl enable --now dwasync` runs the unit's ExecStart (read from
#              packaging/systemd/dwasync.service) that way in the background, `systemctl
#              restart postgresql` restarts the harness cluster, journalctl shows the daemon's
#              output, `sudo -u postgres` runs as the harness superuser, chown to the
#              dwasync user is skipped when that user does not exist; the portal steps
#              (app registration, application user) are dvemu's --client-cert and its
#              default privileges; the status poll is bounded.
# Then: the job is active and Dataverse holds what the maps say; whoami answers; the final
# check is clean; the role the guide creates is not a superuser and owns no staging table.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start
dw_mktemp work guide
mkdir -p "$work/etc/dwasync" "$work/var/lib"
sample=$DWASYNC_SOURCE_DIR/packaging/sample

# The mirror, as it exists before the guide: loaded and owned by its loader role.
psql_q "CREATE DATABASE staging" >/dev/null
psql_q "CREATE ROLE fno_owner NOLOGIN" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d staging -f "$sample/fno-schema.sql" >/dev/null || die "schema failed"
psql -X -qAt -v ON_ERROR_STOP=1 -d staging -v customers=10 -f "$sample/fno-sample-data.sql" >/dev/null || die "data failed"
psql -X -qAt -v ON_ERROR_STOP=1 -d staging >/dev/null <<'SQL' || die "ownership failed"
ALTER TABLE fno.customersv3 REPLICA IDENTITY DEFAULT;
SELECT format('ALTER TABLE fno.%I OWNER TO fno_owner', tablename) FROM pg_tables WHERE schemaname = 'fno' \gexec
SQL

# The guide's shell blocks, with the names above replaced.
awk '/^## Production guide/ {on = 1; next} on && /^## / {on = 0} on' "$DWASYNC_SOURCE_DIR/README.md" >"$work/guide.md"
blocks=$(awk '/^```sh$/ {n++} END {print n}' "$work/guide.md")
[ "$blocks" -ge 7 ] || die "the production guide has $blocks shell blocks"
block() {   # block N: the Nth ```sh block, names replaced
    awk -v n="$1" '/^```sh$/ {i++; on = (i == n); next} /^```$/ {on = 0} on' "$work/guide.md" |
        sed -e "s#/etc/dwasync#$work/etc/dwasync#g" -e "s#/var/lib/dwasync#$work/var/lib/dwasync#g" \
            -e "s#/usr/bin/dwasync#$DWASYNC_BIN#g" \
            -e "s#staging.example.com:5432#127.0.0.1:$PGPORT#g" \
            -e "s#host=staging.example.com port=5432#host=127.0.0.1 port=$PGPORT#g" \
            -e "s#https://contoso.crm.dynamics.com#$DVEMU_URL#g" \
            -e "s#^url = .*#&\nauthority = $DVEMU_URL\nca_file = $DVEMU_CA_FILE#" \
            -e "s#sleep 5; done#sleep 0.2; (( ++polls < 3000 )) || exit 1; done#"
}
cat >"$work/standins.sh" <<'SH'
set -euo pipefail
polls=0
systemd-run() {
    local creds= spec f
    local -a envs=()
    while [ $# -gt 0 ]; do
        case $1 in
        --quiet | --pipe | --wait | --collect | --uid=* | --gid=*) shift ;;
        -p)
            case $2 in
            LoadCredential=*)
                spec=${2#LoadCredential=}
                creds=$(mktemp -d "$GUIDE_WORK/creds.XXXXXX")
                for f in "${spec#*:}"/*; do install -m 600 "$f" "$creds/${spec%%:*}_$(basename "$f")"; done ;;
            Environment=*) envs+=("${2#Environment=}") ;;
            esac
            shift 2 ;;
        *) break ;;
        esac
    done
    env ${creds:+CREDENTIALS_DIRECTORY=$creds} "${envs[@]}" "$@"
}
systemctl() {
    case "$*" in
    "restart postgresql") pg_restart ;;
    "enable --now dwasync")
        local exec cred envv
        exec=$(sed -n 's/^ExecStart=//p' "$GUIDE_UNIT")
        cred=$(sed -n 's/^LoadCredential=//p' "$GUIDE_UNIT")
        envv=$(sed -n 's/^Environment=//p' "$GUIDE_UNIT")
        # shellcheck disable=SC2086
        systemd-run -p "LoadCredential=$cred" -p "Environment=$envv" $exec >>"$GUIDE_WORK/journal" 2>&1 &
        echo $! >"$GUIDE_WORK/daemon.pid" ;;
    *) echo "systemctl stand-in: $*" >&2; return 1 ;;
    esac
}
journalctl() { cat "$GUIDE_WORK/journal"; }
sudo() { [ "$1" = -u ] && shift 2; "$@"; }
chown() { if id dwasync >/dev/null 2>&1; then command chown "$@"; fi; }
SH
export GUIDE_WORK=$work
GUIDE_UNIT=$work/dwasync.service
sed -e "s#/etc/dwasync#$work/etc/dwasync#g" -e "s#/var/lib/dwasync#$work/var/lib/dwasync#g" \
    -e "s#/usr/bin/dwasync#$DWASYNC_BIN#g" "$DWASYNC_SOURCE_DIR/packaging/systemd/dwasync.service" >"$GUIDE_UNIT"
export GUIDE_UNIT
# (daemon.pid is the stand-in's shell; the daemon is its child, found by its config file.)
on_exit 'pkill -9 -f -- "--config $GUIDE_WORK/etc/dwasync/" 2>/dev/null;
         [ -s "$GUIDE_WORK/daemon.pid" ] && kill -9 $(cat "$GUIDE_WORK/daemon.pid")'

# Step 1 makes the certificate; the app registration uploads it: dvemu learns it.
DVEMU_URL=https://placeholder block 1 >"$work/step1.sh"
(source "$work/standins.sh"; source "$work/step1.sh") >"$work/step1.out" 2>&1
check_eq "step 1 (certificate) runs" 0 "$?"
export DVEMU_TENANT=11111111-2222-3333-4444-555555555555
dvemu_start_tls --client-cert "66666666-7777-8888-9999-000000000000:$work/etc/dwasync/dwasync.pem"

for ((i = 2; i <= blocks; i++)); do block "$i"; done >"$work/rest.sh"
grep -q "dwasync check" "$work/rest.sh" || die "the guide does not end with a check"
(source "$work/standins.sh"; set -x; source "$work/rest.sh") >"$work/guide.out" 2>&1
status=$?
check_eq "every command of the guide runs (exit 0)" 0 "$status"
[ "$status" = 0 ] || tail -30 "$work/guide.out" >&2
out=$(cat "$work/guide.out")
check_contains "the control schema is installed" "control schema upgraded" "$out"
check_contains "the scaffold is imported" 'created job "fno": 3 maps' "$out"
check_contains "the maps validate against the live metadata" 'maps of job "fno" are valid' "$out"
[[ $(grep -E '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' <<<"$out") ]] &&
    pass "dataverse whoami prints the application user's id" || fail "dataverse whoami prints the application user's id"
check_eq "the final check is clean" "0 errors, 0 warnings" "$(grep -E '^[0-9]+ errors?,' <<<"$out" | tail -1)"
check_eq "the job is active" "active" "$(psql_q "select state from dwasync.job where name = 'fno'" -d staging)"
check_eq "Dataverse holds usmf's payment terms, and only those" \
    "$(psql_q "select count(*) from fno.paymentterms where dataareaid = 'usmf'" -d staging)" \
    "$(curl -sf $(dvemu_curl_tls_args) "$DVEMU_URL/_dvemu/tables/msdyn_paymentterms" | jq '.value | length')"
check_eq "and its customer groups" \
    "$(psql_q "select count(*) from fno.customergroups where dataareaid = 'usmf'" -d staging)" \
    "$(curl -sf $(dvemu_curl_tls_args) "$DVEMU_URL/_dvemu/tables/msdyn_customergroups" | jq '.value | length')"
check_eq "the certificate credential was used (no secret configured)" "" \
    "$(grep -E '^client_secret_file' "$work/etc/dwasync/dwasync.conf")"
check_eq "the guide's role is not a superuser" "f" "$(psql_q "select rolsuper from pg_roles where rolname = 'dwasync'")"
check_eq "the guide's role owns no staging table" 0 "$(psql_q "select count(*) from pg_tables where tableowner = 'dwasync' and schemaname = 'fno'" -d staging)"
check_contains "the daemon connected as the guide's role" "dwasync" \
    "$(psql_q "select string_agg(usename, ',') from pg_stat_replication")"
check_status "the daemon is still running" 0 kill -0 "$(cat "$work/daemon.pid")"
show_log_on_failure "$work/guide.out" "$work/journal"
finish

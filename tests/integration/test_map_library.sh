#!/usr/bin/env bash
# The shipped map library (packaging/sample/maps): every map file imports and validates
# against the source and against dvemu with the library's Dataverse metadata; all of them
# together, as one job, sync the sample staging tables (plus fno-library.sql) exactly, first
# by the initial sync and again after live inserts, updates and deletes, as an independent
# oracle (tests/harness/map_oracle.py) reads the map files.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
lib=$DWASYNC_SOURCE_DIR/packaging/sample/maps
sample=$DWASYNC_SOURCE_DIR/packaging/sample
pg_start
DVEMU_METADATA=$lib/dataverse-metadata.json dvemu_start

dw_mktemp work maplib
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n[dataverse]\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = %s\nclient_secret_file = %s\nallow_insecure_http = true\n[apply]\nwindow_ms = 50\n' \
    "$DW_PG_CONNINFO" "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" "$DVEMU_CLIENT_ID" "$DVEMU_SECRET_FILE" >"$conf"
dw() { "$DWASYNC_BIN" --config "$conf" "$@"; }
dw init >/dev/null 2>&1 || die "init failed"
psql -X -q -v ON_ERROR_STOP=1 -f "$sample/fno-schema.sql" >/dev/null || die "schema failed"
psql -X -qAt -v ON_ERROR_STOP=1 -v customers=20 -f "$sample/fno-sample-data.sql" >/dev/null || die "data failed"
psql -X -q -v ON_ERROR_STOP=1 -f "$lib/fno-library.sql" >/dev/null || die "library staging failed"

files=$(ls "$lib"/*.map.json)
[ "$(wc -w <<<"$files")" -ge 9 ] || die "the library has fewer than 9 map files"
for f in $files; do
    name=$(basename "$f" .map.json)
    job=$(jq -r .job.name "$f")
    out=$(dw map import "$f" 2>&1)
    check_contains "$name imports" "created job \"$job\"" "$out"
    out=$(dw map validate "$job" 2>&1)
    check_contains "$name validates against source and Dataverse metadata" "maps of job \"$job\" are valid" "$out"
    dw map export "$job" "$work/$name.json"
    check_status "$name is in normal form (export equals the file)" 0 cmp "$f" "$work/$name.json"
    dw job drop "$job" --yes >/dev/null 2>&1
done

# All maps as one job, in the files' sequences.
jq -s '{format: 1, job: {name: "dual_write", environment_url: "", legal_entities: ["usmf", "demf"],
        options: {}}, groups: [{name: "dual_write", maps: ([.[].groups[0].maps[]] | sort_by(.sequence))}]}' \
    $files >"$work/all.json"
out=$(dw map import "$work/all.json" 2>&1)
check_contains "the whole library imports as one job" 'created job "dual_write": 11 maps' "$out"
check_contains "and validates" 'are valid' "$(dw map validate dual_write 2>&1)"
dw job start dual_write --initial-sync >/dev/null 2>&1 || die "job start failed"
timeout 300 "$DWASYNC_BIN" --config "$conf" run --job dual_write --until-caught-up >"$work/run1.log" 2>&1
check_eq "initial sync run exits 0" 0 "$?"
out=$(python3 "$DWASYNC_SOURCE_DIR/tests/harness/map_oracle.py" "$DVEMU_URL" "$work/all.json" 2>&1)
check_contains "initial sync: Dataverse equals the staging tables (oracle)" "exact" "$out"
[[ $out == exact* ]] || log "$out"
check_eq "initial sync: no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"
check_eq "vendor groups arrived" 4 "$(curl -sf "$DVEMU_URL/_dvemu/tables/msdyn_vendorgroups" | jq '.value | length')"
check_eq "released products arrived, one per item and legal entity" \
    "$(psql_q "select count(*) from fno.releasedproductsv2 where dataareaid in ('usmf', 'demf')")" \
    "$(curl -sf "$DVEMU_URL/_dvemu/tables/msdyn_sharedproductdetails" | jq '.value | length')"

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO fno.vendorgroups VALUES ('usmf', '30', 'Freight carriers', 'Net30');
UPDATE fno.vendorsv2 SET vendorgroupid = '30', creditlimit = creditlimit + 1.5
 WHERE dataareaid = 'usmf' AND vendoraccountnumber IN (SELECT min(vendoraccountnumber) FROM fno.vendorsv2);
UPDATE fno.vendorgroups SET description = 'Default vendors' WHERE vendorgroupid = '10';
DELETE FROM fno.vendorgroups WHERE vendorgroupid = '90' AND dataareaid = 'demf';
UPDATE fno.customersv3 SET organizationname = organizationname || ' (renamed)', onholdstatus = 2
 WHERE customeraccount IN (SELECT min(customeraccount) FROM fno.customersv3 WHERE partytype = 'Organization');
UPDATE fno.paymentterms SET numberofdays = numberofdays + 1;
INSERT INTO fno.releasedproductsv2 (dataareaid, itemnumber, productnumber, producttype, salesprice, isphantom)
VALUES ('demf', 'NEW-ITEM', 'NEW-ITEM', 2, 9.99, 1);
UPDATE fno.releasedproductsv2 SET salesprice = salesprice + 1, primaryvendoraccountnumber = NULL
 WHERE itemnumber = (SELECT min(itemnumber) FROM fno.releasedproductsv2 WHERE producttype = 1);
DELETE FROM fno.releasedproductsv2 WHERE itemnumber = 'SRV-INSTALL' AND dataareaid = 'usmf';
SQL
timeout 300 "$DWASYNC_BIN" --config "$conf" run --job dual_write --until-caught-up >"$work/run2.log" 2>&1
check_eq "live run exits 0" 0 "$?"
out=$(python3 "$DWASYNC_SOURCE_DIR/tests/harness/map_oracle.py" "$DVEMU_URL" "$work/all.json" 2>&1)
check_contains "after live changes: Dataverse equals the staging tables (oracle)" "exact" "$out"
[[ $out == exact* ]] || log "$out"
check_eq "after live changes: no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"

# The oracle can fail: a row changed behind dwasync's back is seen.
psql_q "update fno.vendorgroups set description = 'changed unseen' where vendorgroupid = '30'" >/dev/null
out=$(python3 "$DWASYNC_SOURCE_DIR/tests/harness/map_oracle.py" "$DVEMU_URL" "$work/all.json" 2>&1)
check_contains "the oracle sees a difference" "1 of" "$out"
finish

#!/usr/bin/env bash
# Map files and jobs through the CLI on a private cluster (and dvemu for the metadata):
# import/export fixed point, errors with JSON paths loading nothing, the replica-identity
# check, `map validate` against source and Dataverse metadata, refusal while active, the job
# lifecycle with its slot and publication (row filters in pg_publication_tables), and a legal
# entity excluded from what the slot decodes.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start
dvemu_start

dw_mktemp work maps
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n[dataverse]\nallow_insecure_http = true\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = %s\nclient_secret_file = %s\n' \
    "$DW_PG_CONNINFO" "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" "$DVEMU_CLIENT_ID" "$DVEMU_SECRET_FILE" >"$conf"
dw() { "$DWASYNC_BIN" --config "$conf" "$@"; }
sample=$DWASYNC_SOURCE_DIR/packaging/sample
mapfile=$sample/fno-sample.map.json

dw init >/dev/null 2>&1 || die "init failed"
psql -X -q -v ON_ERROR_STOP=1 -f "$sample/fno-schema.sql" >/dev/null || die "schema failed"
out=$(psql -X -qAt -v ON_ERROR_STOP=1 -v customers=20 -f "$sample/fno-sample-data.sql")
check_contains "sample data generator reports rows" "172" "$out"
check_eq "two legal entities" "demf,usmf" "$(psql_q "select string_agg(distinct dataareaid, ',' order by dataareaid) from fno.customersv3")"
psql_q "create table fno.unmapped (id int primary key)"

# --- import / export ---------------------------------------------------------------------
out=$(dw map import "$mapfile" 2>&1)
check_status "import exits 0" 0 dw map import "$mapfile"
check_contains "first import creates the job" "created job \"fno_sample\": 9 maps in 1 group" "$out"
check_eq "9 maps stored" 9 "$(psql_q "select count(*) from dwasync.table_map")"
check_eq "legal entities stored" "{usmf,demf}" "$(psql_q "select legal_entities from dwasync.job")"
out=$(dw map list fno_sample)
check_contains "map list shows sequence and target" "80 sales_order_lines        fno.salesorderlines" "$out"

dw map export fno_sample "$work/e1.json"
check_status "export equals the sample file byte for byte" 0 cmp "$mapfile" "$work/e1.json"
out=$(dw map import "$work/e1.json" 2>&1)
check_contains "re-import of the export changes nothing" "(0 new or changed, 0 removed)" "$out"
dw map export fno_sample >"$work/e2.json"
check_status "import -> export -> import -> export is a fixed point" 0 cmp "$work/e1.json" "$work/e2.json"
check_eq "versions unchanged" "1" "$(psql_q "select string_agg(distinct version::text, ',') from dwasync.table_map")"

# Errors: every problem with its JSON path, nothing loaded.
onhold=$(python3 - "$mapfile" "$work/bad.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
m = d["groups"][0]["maps"]
cols = m[4]["columns"]
i = next(i for i, c in enumerate(cols) if c["target"] == "msdyn_onholdstatus")
cols[i]["value_map"] = []
print(i)
m[2]["sequence"] = m[1]["sequence"]
m[7]["columns"][0]["direction"] = "->"
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
)
out=$(dw map import "$work/bad.json" 2>&1); status=$?
check_eq "invalid map file exits 1" 1 "$status"
check_contains "error names the value map path" "\$.groups[0].maps[4].columns[$onhold].value_map: must be a non-empty object" "$out"
check_contains "error names the duplicate sequence" '$.groups[0].maps[2]: sequence 20 is already used by maps[1]' "$out"
check_contains "error names the direction" '$.groups[0].maps[7].columns[0].direction: must be one of' "$out"
check_contains "nothing imported" "nothing imported" "$out"

python3 - "$mapfile" "$work/missing.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["groups"][0]["maps"][5]["columns"][0]["source"] = "PERSONMIDDLENAME"
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
out=$(dw map import "$work/missing.json" 2>&1); status=$?
check_eq "map of a missing column exits 1" 1 "$status"
check_contains "missing column named with its path" '$.groups[0].maps[5].columns[0]: column "PERSONMIDDLENAME" does not exist in "fno.customersv3"' "$out"

# Replica identity: a row filter on a non-key column needs REPLICA IDENTITY FULL.
psql_q "alter table fno.customersv3 replica identity default"
out=$(dw map import "$mapfile" 2>&1); status=$?
check_eq "filter outside the replica identity is refused" 1 "$status"
check_contains "refusal explains the replica identity rule" 'reads column "partytype", which is not in the replica identity of "fno.customersv3": PostgreSQL would then refuse every UPDATE and DELETE' "$out"
check_contains "refusal gives the fix" "ALTER TABLE fno.customersv3 REPLICA IDENTITY FULL" "$out"
psql_q "alter table fno.customersv3 replica identity full"
check_eq "nothing changed by the refused imports" "9 1" "$(psql_q "select count(*) || ' ' || max(version) from dwasync.table_map")"

out=$(dw map validate fno_sample 2>&1); status=$?
check_eq "the sample maps are valid against source and dvemu metadata" 0 "$status"
check_contains "map validate says so" 'maps of job "fno_sample" are valid' "$out"

# Findings against the Dataverse metadata: each names its path; job start refuses.
python3 - "$mapfile" "$work/dvbad.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["job"]["name"] = "fno_dvbad"
m = d["groups"][0]["maps"]
def col(mi, target):
    return next(c for c in m[mi]["columns"] if c["target"] == target)
col(4, "msdyn_onholdstatus")["value_map"]["5"] = 806389999          # not an option
col(4, "telephone1")["target"] = "telephone9"                     # no such column
col(6, "msdyn_name")["source"] = "VENDORGROUPID"                  # fine: 10 <= 100
col(2, "msdyn_description")["source"] = "PAYMENTMETHODTYPE"       # fine
m[1]["key"][0]["target"] = "currencyprecision"                        # not an alternate key
col(0, "cdm_name")["type"] = "integer"                             # String in Dataverse
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
psql_q "alter table fno.legalentities alter column name type varchar(200)"
dw map import "$work/dvbad.json" >/dev/null 2>&1
out=$(dw map validate fno_dvbad 2>&1); status=$?
check_eq "validate with findings exits 1" 1 "$status"
check_contains "option value missing from the option set" 'maps[4].columns[7].value_map."5": option value 806389999 is not in the option set of "msdyn_onholdstatus"' "$out"
check_contains "unknown column" '"account" has no column "telephone9"' "$out"
check_contains "key that is no alternate key" 'maps[1].key: (currencyprecision) is not an alternate key of "transactioncurrency"' "$out"
check_contains "type mismatch" '"cdm_name" is String in Dataverse, the map converts to integer' "$out"
check_contains "source column longer than the target" 'source "name" (character varying(200)) is longer than "cdm_name" (String, at most 100)' "$out"
out=$(dw job start fno_dvbad 2>&1); status=$?
check_eq "job start refuses maps with errors" 1 "$status"
check_contains "and says why" 'job "fno_dvbad" not started: its maps have' "$out"
check_eq "nothing created by the refused start" "0 0 stopped" \
    "$(psql_q "select (select count(*) from pg_replication_slots) || ' ' || (select count(*) from pg_publication) || ' ' || (select state from dwasync.job where name = 'fno_dvbad')")"
psql_q "alter table fno.legalentities alter column name type varchar(60)"
dw job drop fno_dvbad --yes >/dev/null 2>&1

# --- job lifecycle ---------------------------------------------------------------------------
out=$(dw job start fno_sample 2>&1)
check_contains "start creates the slot" 'created replication slot "dwasync_fno_sample"' "$out"
check_eq "job active" active "$(psql_q "select state from dwasync.job where name = 'fno_sample'")"
check_eq "slot uses pgoutput" "pgoutput" "$(psql_q "select plugin from pg_replication_slots where slot_name = 'dwasync_fno_sample'")"
check_eq "8 mapped tables published, the unmapped one not" "8 0" \
    "$(psql_q "select count(*) || ' ' || count(*) filter (where tablename = 'unmapped') from pg_publication_tables where pubname = 'dwasync_fno_sample'")"
rf=$(psql_q "select rowfilter from pg_publication_tables where pubname = 'dwasync_fno_sample' and tablename = 'customersv3'")
check_contains "customers filter has the organization map" "'Organization'::text" "$rf"
check_contains "customers filter has the person map" "'Person'::text" "$rf"
check_contains "customers filter has the legal entities" "(dataareaid)::text = 'demf'::text" "$rf"
check_eq "currencies filtered by the map filter" "((currencycode)::text <> '999'::text)" \
    "$(psql_q "select rowfilter from pg_publication_tables where pubname = 'dwasync_fno_sample' and tablename = 'currencies'")"
check_eq "vendor column list holds only mapped columns" "{dataareaid,vendoraccountnumber,vendororganizationname,creditlimit,onholdstatus,currencycode}" \
    "$(psql_q "select attnames from pg_publication_tables where pubname = 'dwasync_fno_sample' and tablename = 'vendorsv2'")"

# A legal entity outside the job's list never reaches the slot's output.
psql_q "insert into fno.customersv3 (dataareaid, customeraccount, organizationname) values ('usmf', 'CKEEP001', 'kept'), ('jpmf', 'CDROP001', 'dropped')"
psql_q "update fno.customersv3 set organizationname = 'x' where customeraccount = 'C0000001' and dataareaid = 'usmf'"
peek=$(psql_q "select string_agg(encode(data, 'escape'), '') from pg_logical_slot_peek_binary_changes('dwasync_fno_sample', NULL, NULL, 'proto_version', '1', 'publication_names', 'dwasync_fno_sample')")
check_contains "an included legal entity is decoded" "CKEEP001" "$peek"
check_contains "a person update passes the OR of the maps" "C0000001" "$peek"
[[ "$peek" != *CDROP001* ]] && pass "an excluded legal entity is filtered out by the publication" \
    || fail "an excluded legal entity is filtered out by the publication"
# The source still takes UPDATE and DELETE on filtered tables (replica identity holds).
check_status "delete on a filtered table works on the source" 0 psql_q "delete from fno.customersv3 where customeraccount = 'CDROP001'"

out=$(dw map import "$mapfile" 2>&1); status=$?
check_eq "import into an active job exits 1" 1 "$status"
check_contains "refusal says why" 'job \"fno_sample\" is active: its table maps cannot change while it runs' "$out"
check_contains "refusal hints at stop" 'dwasync job stop fno_sample' "$out"
out=$(psql -X -qAt -c "update dwasync.table_map set sequence = 11 where name = 'legal_entities'" 2>&1)
check_contains "the trigger backs the refusal up" "stop it before changing its table maps" "$out"
out=$(dw job start fno_sample 2>&1); status=$?
check_eq "start of an active job exits 1" 1 "$status"

out=$(dw job pause fno_sample 2>&1)
check_contains "pause keeps the slot" 'replication slot "dwasync_fno_sample" is kept and lag grows' "$out"
check_eq "paused" paused "$(psql_q "select state from dwasync.job where name = 'fno_sample'")"
out=$(dw job show fno_sample 2>&1)
check_contains "show reports the slot lag" "lag " "$out"
check_contains "show lists the publication filters" "fno.currencies WHERE" "$out"
out=$(dw job pause fno_sample 2>&1)
check_contains "pausing a paused job is a no-op" "already paused" "$out"
dw job resume fno_sample >/dev/null
check_eq "resumed" active "$(psql_q "select state from dwasync.job where name = 'fno_sample'")"

out=$(dw job stop fno_sample 2>&1)
check_status "a stopped job cannot be paused" 1 dw job pause fno_sample
check_contains "stop says WAL is retained" "the source retains WAL while the job is stopped" "$out"
check_eq "stopped keeps the slot" 1 "$(psql_q "select count(*) from pg_replication_slots where slot_name = 'dwasync_fno_sample'")"

# Stopped: maps change; the changed map gets a new version and the publication follows.
python3 - "$mapfile" "$work/changed.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["groups"][0]["maps"][1]["filter"] = {"column": "CURRENCYCODE", "op": "not in", "value": ["999", "GBP"]}
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
out=$(dw map import "$work/changed.json" 2>&1)
check_contains "import into a stopped job" "(1 new or changed, 0 removed)" "$out"
check_eq "changed map has version 2" 2 "$(psql_q "select version from dwasync.table_map where name = 'currencies'")"
out=$(dw job start fno_sample --initial-sync 2>&1); status=$?
check_eq "initial sync with an existing slot is refused" 1 "$status"
check_contains "refusal explains the slot" "an initial sync needs a new slot" "$out"
out=$(dw job start fno_sample 2>&1)
check_eq "restart keeps the slot" 1 "$(psql_q "select count(*) from pg_replication_slots where slot_name = 'dwasync_fno_sample'")"
check_eq "publication altered to the new filter" "(((currencycode)::text <> '999'::text) AND ((currencycode)::text <> 'GBP'::text))" \
    "$(psql_q "select rowfilter from pg_publication_tables where pubname = 'dwasync_fno_sample' and tablename = 'currencies'")"

check_status "drop of an active job is refused" 1 dw job drop fno_sample --yes
dw job stop fno_sample >/dev/null
out=$(dw job drop fno_sample 2>&1); status=$?
check_eq "drop without --yes exits 1" 1 "$status"
check_contains "drop asks for confirmation" "Run again with --yes" "$out"
check_eq "still there" 1 "$(psql_q "select count(*) from dwasync.job")"
out=$(dw job drop fno_sample --yes 2>&1)
check_contains "drop confirms" 'dropped job "fno_sample"' "$out"
check_eq "slot, publication and job gone" "0 0 0 0" \
    "$(psql_q "select (select count(*) from pg_replication_slots) || ' ' || (select count(*) from pg_publication) || ' ' || (select count(*) from dwasync.job) || ' ' || (select count(*) from dwasync.table_map)")"

# create, then an initial-sync start: it takes the slot at once, as any start does, so every
# change committed from then on reaches Dataverse (the copy needs no snapshot of the slot's).
out=$(dw job create empty_job 2>&1)
check_contains "job create" 'created job "empty_job"' "$out"
check_status "creating it twice fails" 1 dw job create empty_job
out=$(dw job start empty_job 2>&1); status=$?
check_eq "a job without maps does not start" 1 "$status"
check_contains "and says so" 'job \"empty_job\" has no table maps' "$out"
sed 's/"name": "fno_sample"/"name": "fno_init"/' "$mapfile" >"$work/init.json"
dw map import "$work/init.json" >/dev/null 2>&1
# A start that fails once it has taken the slot (here the checkpoint's row is refused) drops
# it again: a second try with --initial-sync would refuse a slot left behind.
psql_q "CREATE FUNCTION public.dw_test_refuse() RETURNS trigger LANGUAGE plpgsql
          AS \$\$BEGIN RAISE EXCEPTION 'refused by the test'; END\$\$;
        CREATE TRIGGER dw_test_refuse BEFORE INSERT ON dwasync.checkpoint
          FOR EACH ROW EXECUTE FUNCTION public.dw_test_refuse()" >/dev/null
out=$(dw job start fno_init --initial-sync 2>&1); status=$?
check_eq "a start failing after the slot exits 1" 1 "$status"
check_contains "it says why" "refused by the test" "$out"
check_eq "and leaves no slot behind" 0 "$(psql_q "select count(*) from pg_replication_slots")"
psql_q "DROP TRIGGER dw_test_refuse ON dwasync.checkpoint; DROP FUNCTION public.dw_test_refuse()" >/dev/null
out=$(dw job start fno_init --initial-sync 2>&1)
check_contains "initial sync is pending" "initial sync pending" "$out"
check_eq "state and initial_sync" "active pending" "$(psql_q "select state || ' ' || initial_sync from dwasync.job where name = 'fno_init'")"
check_eq "the slot is taken now" dwasync_fno_init "$(psql_q "select string_agg(slot_name, ',') from pg_replication_slots")"
check_eq "publication created" 1 "$(psql_q "select count(*) from pg_publication where pubname = 'dwasync_fno_init'")"
out=$(dw job list)
check_contains "job list shows both" "empty_job" "$out"
check_contains "job list shows state" "fno_init             active" "$out"

finish

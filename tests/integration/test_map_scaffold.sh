#!/usr/bin/env bash
# `dwasync map scaffold` on the sample schema against the sample metadata: the scaffold of the
# whole schema imports and validates; after the edits listed below (what no name can tell:
# filters, constants, value maps of int enums, polymorphic lookups, one-way directions) it
# equals the sample map; what it cannot match is listed on stderr and in the map's options,
# never guessed; a table paired by column names alone is refused when two tables tie; `map
# import` suggests the nearest column name for a missing one.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
pg_start
dvemu_start

dw_mktemp work scaffold
sample=$DWASYNC_SOURCE_DIR/packaging/sample
conf=$work/dwasync.conf
printf '[source]\nconninfo = %s\n[dataverse]\nurl = %s\nauthority = %s\ntenant_id = %s\nclient_id = %s\nclient_secret_file = %s\nallow_insecure_http = true\n' \
    "$DW_PG_CONNINFO" "$DVEMU_URL" "$DVEMU_URL" "$DVEMU_TENANT" "$DVEMU_CLIENT_ID" "$DVEMU_SECRET_FILE" >"$conf"
dw() { "$DWASYNC_BIN" --config "$conf" "$@"; }
dw init >/dev/null 2>&1 || die "init failed"
psql -X -q -v ON_ERROR_STOP=1 -f "$sample/fno-schema.sql" >/dev/null || die "schema failed"
psql -X -qAt -v ON_ERROR_STOP=1 -v customers=20 -f "$sample/fno-sample-data.sql" >/dev/null || die "data failed"

targets=legalentities=cdm_company,transactioncurrency,msdyn_paymentterm,msdyn_customergroup
targets=$targets,customersv3=account,customersv3=contact,msdyn_vendor,salesorder
dw map scaffold --source fno --metadata "$sample/dataverse-metadata.json" --target "$targets" \
    --target salesorderlines=salesorderdetail >"$work/scaffold.json" 2>"$work/unmatched"
check_eq "scaffold of the schema exits 0" 0 "$?"
report=$(cat "$work/unmatched")
check_contains "a required column no name matches is listed" \
    'unmatched: transactioncurrencies: "exchangerate" (Decimal, required): no source column matches its name' "$report"
check_contains "an enum name that matches no option label is listed" \
    'unmatched: msdyn_paymentterms: option set "msdyn_paymentmethodtype": source values "CurrentMth" of "paymentmethodtype" match no option label' "$report"
check_contains "int enum values are not guessed into options" \
    'unmatched: accounts: option set "msdyn_onholdstatus": source values "0", "1", "2", "3", "4", "5" of "onholdstatus" match no option label' "$report"
check_contains "a polymorphic lookup is left to the user" \
    'unmatched: salesorders: lookup "customerid" can point to 2 tables' "$report"
check_contains "source columns left over are listed" \
    'unmatched: salesorderdetails: source columns mapped to nothing: "productnumber"' "$report"
check_contains "a table paired by name says so" 'note: msdyn_paymentterms: from "fno.paymentterms"' "$report"
check_eq "unmatched lines carry no comment syntax" "" "$(grep -E '^(#|//)' "$work/unmatched")"
check_eq "the unmatched of a map are also in the file" \
    '"productdescription" (String): no source column matches its name' \
    "$(jq -r '.groups[0].maps[] | select(.name == "salesorderdetails") | .options.unmatched[0]' "$work/scaffold.json")"
check_eq "keys from the tables' keys, DATAAREAID to the company" \
    '[{"target":"msdyn_name","source":"NAME","type":"string"},{"target":"msdyn_company","company":"DATAAREAID"}]' \
    "$(jq -c '.groups[0].maps[] | select(.name == "msdyn_paymentterms") | .key' "$work/scaffold.json")"
check_eq "a lookup key part from the parent's key" \
    '{"target":"salesorderid","lookup":{"entity_set":"salesorders","logical_name":"salesorder","key":[{"target":"msdyn_salesordernumber","source":"SALESORDERNUMBER"},{"target":"msdyn_company","company":"DATAAREAID"}]}}' \
    "$(jq -c '.groups[0].maps[] | select(.name == "salesorderdetails") | .key[0]' "$work/scaffold.json")"
check_eq "NoYes to a boolean" '{"0":false,"1":true,"No":false,"Yes":true}' \
    "$(jq -c '.groups[0].maps[] | select(.name == "msdyn_paymentterms") | .columns[] | select(.target == "msdyn_iscashpayment") | .value_map' "$work/scaffold.json")"

out=$(dw map import "$work/scaffold.json" 2>&1)
check_contains "the scaffold imports" 'created job "fno": 9 maps in 1 group' "$out"
out=$(dw map validate fno 2>&1)
check_contains "the scaffold validates against source and Dataverse metadata" 'maps of job "fno" are valid' "$out"

# The listed edits: each names a map (by target table) and what it takes from the sample.
python3 - "$work/scaffold.json" "$sample/fno-sample.map.json" "$work/edited.json" <<'PY'
import json, sys
s, ref = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
edits = {  # scaffold map -> (columns set as the sample has them, columns dropped, filter)
    "cdm_companies": (["cdm_name"], [], True),                   # one-way (>)
    "transactioncurrencies": (["exchangerate"], [], True),       # constant 1
    "msdyn_paymentterms": (["msdyn_paymentmethodtype"], [], False),  # CurrentMth
    "msdyn_customergroups": ([], [], False),
    "accounts": (["msdyn_onholdstatus", "customertypecode"], [], True),  # int enum, constant
    "contacts": ([], ["address1_city", "transactioncurrencyid"], True),
    "msdyn_vendors": (["msdyn_onholdstatus"], [], False),        # int enum
    "salesorders": (["customerid", "msdyn_ordertype", "name", "totalamount",
                     "msdyn_processingstatus"], [], False),      # polymorphic, constant, >
    "salesorderdetails": (["productdescription", "isproductoverridden", "ispriceoverridden",
                           "extendedamount"], [], False),
}
rmaps = ref["groups"][0]["maps"]
out = []
for m, r in zip(s["groups"][0]["maps"], rmaps):
    assert m["target"] == r["target"] and m["source"] == r["source"], (m["name"], r["name"])
    sets, drops, flt = edits[m["name"]]
    rc = {c["target"]: c for c in r["columns"]}
    cols = [c for c in m["columns"] if c["target"] not in drops and c["target"] not in sets]
    cols += [rc[t] for t in sets]
    m["columns"] = cols
    if flt:
        m["filter"] = r["filter"]
    m["name"], m["sequence"], m["options"] = r["name"], r["sequence"], r["options"]
    out.append(m)
s["job"] = ref["job"]
s["groups"][0]["name"] = ref["groups"][0]["name"]
s["groups"][0]["maps"] = out
json.dump(s, open(sys.argv[3], "w"), indent=2)
PY
out=$(dw map import "$work/edited.json" 2>&1)
check_contains "the edited scaffold imports" 'created job "fno_sample"' "$out"
dw map export fno_sample "$work/edited-export.json"
norm() { jq -S '.groups[0].maps[] |= (.columns |= sort_by(.target))' "$1"; }
diff <(norm "$work/edited-export.json") <(norm "$sample/fno-sample.map.json") >"$work/diff"
check_eq "after the listed edits the scaffold equals the sample map" "" "$(head -20 "$work/diff")"

# Pairing by column names alone refuses a tie.
out=$(dw map scaffold --source fno --metadata "$sample/dataverse-metadata.json" --target salesorderdetail 2>&1 >/dev/null)
check_contains "a tie between two tables is not guessed" \
    'unmatched: salesorderdetail: more than one staging table matches it by its column names; name one with --target TABLE=salesorderdetail' "$out"
# A single table that cannot be fully matched.
psql_q "create table fno.oddities (dataareaid varchar(4), code varchar(10), label varchar(500), primary key (dataareaid, code))"
out=$(dw map scaffold --source fno.oddities --metadata "$sample/dataverse-metadata.json" --target msdyn_customergroup 2>&1 >/dev/null)
check_contains "the one key part and primary key column left are paired, and it says so" \
    'key "msdyn_groupid" from "code", the one primary key column left' "$out"
check_contains "a column no name matches is listed" \
    'unmatched: msdyn_customergroups: "msdyn_description" (String): no source column matches its name' "$out"
check_contains "unused source columns are listed" 'source columns mapped to nothing: "label"' "$out"
out=$(dw map scaffold --source fno.nosuch --metadata "$sample/dataverse-metadata.json" --target account 2>&1); status=$?
check_eq "a missing table fails" 1 "$status"
check_contains "a missing table is named" 'no table "fno.nosuch" in the source database' "$out"
out=$(dw map scaffold --source fno.currencies --metadata "$sample/dataverse-metadata.json" --target nosuch 2>&1); status=$?
check_eq "a target without metadata fails" 1 "$status"
check_contains "a target without metadata is named" 'no metadata for the Dataverse table "nosuch"' "$out"

# map import: did you mean.
python3 - "$sample/fno-sample.map.json" "$work/typo.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["groups"][0]["maps"][4]["columns"][0]["source"] = "ORGANISATIONNAME"
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
out=$(dw map import "$work/typo.json" 2>&1)
check_contains "map import suggests the nearest column" \
    'column "ORGANISATIONNAME" does not exist in "fno.customersv3"; did you mean "organizationname"?' "$out"
finish

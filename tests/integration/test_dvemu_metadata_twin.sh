#!/usr/bin/env bash
# A real environment's schema (issue 17), tested against dvemu itself: dvemu A serves the
# sample metadata; `dwasync dataverse metadata` exports every table the sample job maps from
# A; dvemu B starts on that export. The sample job then runs twice, each time on a fresh
# Postgres and one of the two dvemus: the initial sync, then a workload of inserts, updates
# and deletes with poison whose outcome only Dataverse's schema decides (a credit limit and a
# number of days outside their columns' ranges, an on-hold status outside the value map, an
# order of a customer that never arrives). Both runs must end with identical Dataverse
# contents, read through the Web API (every page) with the volatile fields removed (ids,
# versionnumber, etags, timestamps) and every lookup named by the alternate key of the row
# it refers to, and with identical error rows.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work dvemu-twin

# twin_snapshot FILE: every row of every entity set the job maps, read through the Web API
# of the current dvemu (following @odata.nextLink), normalized as the header says, one
# "key<TAB>row" line a row, sorted; FILE.ids gets one "id<TAB>key" line a row.
twin_snapshot() {
    local token
    token=$(dvemu_token)
    python3 - "$DVEMU_URL" "$token" "$DVEMU_METADATA_DEFAULT" "$1" <<'PY' || die "snapshot of $DVEMU_URL failed"
import json, sys, urllib.request
url, token, meta_file, out = sys.argv[1:5]
meta = {t["entity_set"]: t for t in json.load(open(meta_file))["tables"]}
VOLATILE = {"@odata.etag", "versionnumber", "createdon", "modifiedon"}

def get_all(entity_set):
    rows, link = [], f"{url}/api/data/v9.2/{entity_set}"
    while link:
        req = urllib.request.Request(link, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json",
            "OData-Version": "4.0", "Prefer": "odata.maxpagesize=50"})
        page = json.load(urllib.request.urlopen(req))
        rows += page["value"]
        link = page.get("@odata.nextLink")
    return rows

tables = {s: get_all(s) for s in meta}
by_id = {r[meta[s]["primary_id"]]: (s, r) for s in tables for r in tables[s]}

def lookup_value(name):
    return f"_{name}_value"

def key_of(entity_set, row):
    """The row's alternate key, lookups in it named by their own rows' keys."""
    attrs = meta[entity_set]["keys"][0]["attributes"]
    return entity_set + "(" + ",".join(
        f"{a}={ref(row[lookup_value(a)]) if lookup_value(a) in row else json.dumps(row.get(a))}"
        for a in attrs) + ")"

def ref(guid):
    if guid is None:
        return None
    target = by_id.get(guid)
    return key_of(*target) if target else f"unknown row {guid}"

lines = []
for s, rows in tables.items():
    for r in rows:
        norm = {k: (ref(v) if k.startswith("_") and k.endswith("_value") else v)
                for k, v in r.items() if k not in VOLATILE and k != meta[s]["primary_id"]}
        lines.append(f"{key_of(s, r)}\t{json.dumps(norm, sort_keys=True)}")
open(out, "w").write("\n".join(sorted(lines)) + "\n")
open(out + ".ids", "w").write("".join(f"{i}\t{key_of(*t)}\n" for i, t in by_id.items()))
PY
}

# twin_errors FILE IDS: the job's error rows, without what differs between two clusters
# (ids, LSNs, xids, times), in commit order within each key; a Dataverse id in them (a
# lookup of a payload's @odata.bind) is named by its row's key from IDS (twin_snapshot's).
twin_errors() {
    psql_q "SELECT map_name, source_table, operation, key_text, target_id, part, http_status,
                   dv_code, message, missing_parent, class, status, payload,
                   row_number() OVER (PARTITION BY map_name, key_text
                                      ORDER BY commit_lsn, position, part)
              FROM dwasync.error ORDER BY map_name, key_text, 14" >"$1.raw" ||
        die "reading the error rows failed"
    python3 - "$1.raw" "$2" "$1" <<'PY' || die "naming the ids of the error rows failed"
import re, sys
raw, ids, out = sys.argv[1:4]
key = dict(line.rstrip("\n").split("\t", 1) for line in open(ids))
guid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
text = guid.sub(lambda m: key.get(m.group(0), "unknown row " + m.group(0)), open(raw).read())
open(out, "w").write(text)
PY
}

# twin_run NAME: the sample job on the current Postgres and dvemu, its outcome in
# $work/NAME.rows and $work/NAME.errors.
twin_run() {
    local name=$1
    e2e_load_sample
    show_log_on_failure "$work/$name-sync.log" "$work/$name-live.log"
    dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "$name: job start failed"
    timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
        >"$work/$name-sync.log" 2>&1
    check_eq "$name: the initial sync exits 0" 0 $?
    psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "$name: the workload failed"
BEGIN;  -- new customers with orders and lines
SELECT fno.sample_generate(20, 101);
COMMIT;
UPDATE fno.customersv3 SET organizationname = organizationname || ' (renamed)',
       creditlimit = creditlimit + 0.25, onholdstatus = (onholdstatus + 1) % 6,
       customergroupid = '20', paymentterms = 'Net10'
 WHERE customeraccount BETWEEN 'C0000001' AND 'C0000030' AND partytype = 'Organization';
UPDATE fno.currencies SET symbol = 'US$' WHERE currencycode = 'USD';
UPDATE fno.paymentterms SET description = 'Net 30 days, revised', numberofdays = 31
 WHERE name = 'Net30';
UPDATE fno.salesorderheaders SET orderingcustomeraccountnumber = 'C0000001'
 WHERE salesordernumber = 'SO00000002';
UPDATE fno.customersv3 SET partytype = 'Person', personfirstname = 'Ada',
       personlastname = 'Lovelace', organizationname = NULL
 WHERE customeraccount = 'C0000002';
BEGIN;
DELETE FROM fno.salesorderlines WHERE salesordernumber = 'SO00000003';
DELETE FROM fno.salesorderheaders WHERE salesordernumber = 'SO00000003';
COMMIT;
DELETE FROM fno.salesorderlines WHERE salesordernumber = 'SO00000004' AND dataareaid = 'usmf';
DELETE FROM fno.salesorderheaders WHERE salesordernumber = 'SO00000004' AND dataareaid = 'usmf';
DELETE FROM fno.customersv3 WHERE customeraccount = 'C0000004' AND dataareaid = 'usmf';
-- poison: ranges only the Dataverse schema knows, a value map, a parent that never arrives
UPDATE fno.customersv3 SET creditlimit = -1
 WHERE customeraccount IN ('C0000013', 'C0000113') AND partytype = 'Organization';
UPDATE fno.paymentterms SET numberofdays = 5000 WHERE name = 'Net10' AND dataareaid = 'usmf';
UPDATE fno.customersv3 SET onholdstatus = 6
 WHERE customeraccount IN ('C0000007', 'C0000107') AND partytype = 'Organization';
INSERT INTO fno.salesorderheaders (dataareaid, salesordernumber, orderingcustomeraccountnumber,
                                   currencycode, salesordername, ordertotalamount)
VALUES ('usmf', 'SOX0000001', 'CX000001', 'USD', 'Lost order', 10);
-- later changes to every customer, poisoned ones included (they wait behind their heads)
UPDATE fno.customersv3 SET primarycontactphone = '+1 555 7777';
SQL
    timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
        >"$work/$name-live.log" 2>&1
    check_eq "$name: the live changes run exits 0" 0 $?
    twin_snapshot "$work/$name.rows"
    twin_errors "$work/$name.errors" "$work/$name.rows.ids"
}

# --- dvemu A: the sample metadata; its export; the job on it ---------------------------------
e2e_setup
mapfile -t mapped < <(jq -r '[.groups[].maps[].target.logical_name] | unique | .[]' \
    "$DW_SAMPLE_DIR/fno-sample.map.json")
dw dataverse metadata "${mapped[@]}" >"$work/export.json" 2>"$work/export.err"
check_eq "the export of the ${#mapped[@]} mapped tables exits 0" 0 $?
check_eq "it holds every mapped table" "${mapped[*]}" \
    "$(jq -r '[.tables[].logical_name] | sort | join(" ")' "$work/export.json")"
twin_run A
dvemu_stop
pg_stop

# --- dvemu B: the export; the same job on a fresh Postgres ----------------------------------
export DVEMU_METADATA=$work/export.json
e2e_setup
twin_run B

# The comparison is worth something only if the run did what the workload asks.
check_eq "A: every entity set has rows" 0 "$(for s in $DW_SAMPLE_SETS; do
    grep -c "^$s(" "$work/A.rows"; done | grep -c '^0$')"
check_eq "A: the renamed accounts are there" 1 \
    "$(grep -q 'Customer 1 USMF (renamed)' "$work/A.rows" && echo 1)"
check_eq "A: every lookup and bound id names a row of a mapped table" 0 \
    "$(cat "$work/A.rows" "$work/A.errors" | grep -c 'unknown row')"
check_eq "A: the poison gave errors of each class" "mapping missing_parent validation" \
    "$(cut -d'|' -f11 "$work/A.errors" | grep . | sort -u | paste -sd' ')"

diff -u "$work/A.rows" "$work/B.rows" >"$work/rows.diff"
same=$?
check_eq "both end with identical Dataverse contents ($(wc -l <"$work/A.rows") rows)" 0 "$same"
diff -u "$work/A.errors" "$work/B.errors" >"$work/errors.diff"
same=$?
check_eq "both end with identical error rows ($(wc -l <"$work/A.errors") rows)" 0 "$same"
[ -s "$work/rows.diff" ] && head -n 20 "$work/rows.diff" >&2
[ -s "$work/errors.diff" ] && head -n 20 "$work/errors.diff" >&2

finish

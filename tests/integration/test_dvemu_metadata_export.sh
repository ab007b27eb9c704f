#!/usr/bin/env bash
# `dwasync dataverse metadata TABLE...` reads the EntityDefinitions of an environment (here a
# dvemu on the sample metadata) and writes a dvemu metadata file. The export describes the
# same schema as the sample file, and a second dvemu started on the export serves the sample
# job exactly: maps validate, the initial sync lands every row, Dataverse equals the staging
# tables. Pages followed: "Query table definitions using the Web API", "Web API EntityMetadata"
# (Microsoft Learn), read through the same paged reads as every other GET.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
dw_mktemp work dvemu-export

dvemu_start --page-size 3 # attribute lists come in pages: the export follows them
sink_conf "$work/dw.conf"
mapfile -t tables < <(jq -r '.tables[].logical_name' "$DVEMU_METADATA_DEFAULT")
"$DWASYNC_BIN" --config "$work/dw.conf" dataverse metadata "${tables[@]}" >"$work/export.json" 2>"$work/err"
check_eq "metadata export exits 0" 0 $?
check_eq "the export is a metadata file of the nine sample tables" "${tables[*]}" \
    "$(jq -r '[.tables[].logical_name] | join(" ")' "$work/export.json")"

# The same schema: every table property, attribute (in order, every property) and key, with
# the file's defaults spelled out (required None; every bulk message when none are listed).
diffs=$(python3 - "$work/export.json" "$DVEMU_METADATA_DEFAULT" <<'PY'
import json, sys
got, want = (json.load(open(f))["tables"] for f in sys.argv[1:3])
out = []
for g, w in zip(got, want):
    w = dict(w)
    w.setdefault("bulk_messages", ["CreateMultiple", "UpdateMultiple", "UpsertMultiple"])
    for k in sorted(set(g) | set(w)):
        if k == "attributes":
            continue
        if g.get(k) != w.get(k):
            out.append(f"{g['logical_name']}.{k}: {g.get(k)} != {w.get(k)}")
    ga = [a["name"] for a in g["attributes"]]
    wa = [a["name"] for a in w["attributes"]]
    if ga != wa:
        out.append(f"{g['logical_name']} attributes: {ga} != {wa}")
    gd = {a["name"]: a for a in g["attributes"]}
    for a in w["attributes"]:
        a = dict(a, required=a.get("required", "None"))
        b = gd.get(a["name"], {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"{g['logical_name']}.{a['name']}.{k}: {b.get(k)} != {a.get(k)}")
print("\n".join(out))
PY
)
check_eq "the export describes the sample's schema exactly" "" "$diffs"

"$DWASYNC_BIN" --config "$work/dw.conf" dataverse metadata account nosuchtable >/dev/null 2>"$work/err"
check_eq "an unknown table fails the export" 1 $?
check_contains "and the error names it" "nosuchtable" "$(cat "$work/err")"
dvemu_stop

# A second dvemu on the export runs the sample job.
export DVEMU_METADATA=$work/export.json
e2e_setup
e2e_load_sample
check_eq "the sample maps validate against the exported schema" 0 \
    "$(dw map validate fno_sample >"$work/validate.out" 2>&1; echo $?)"
dw job start fno_sample --initial-sync >/dev/null 2>&1
timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
    >"$work/run.log" 2>&1
check_eq "initial sync on the exported schema exits 0" 0 $?
check_eq "Dataverse equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"
check_eq "160 accounts, as on the sample schema" 160 "$(e2e_rows accounts)"

finish

#!/usr/bin/env python3
# tests/harness/map_oracle.py - a second, independent reading of map files, as the oracle of
# the map library test: from the staging tables (read with psql) and the map files, the rows
# each Dataverse table must hold; from dvemu (its /_dvemu/tables dump), the rows it holds;
# lookups on both sides named by the parent's key (company by its code). Prints each row
# present on one side only and exits 1 when there is any; "exact N" (rows compared) if none.
#
#   map_oracle.py DVEMU_URL MAPFILE...     (PG* environment variables select the database)
#
# It handles what the shipped maps use: key parts (source, company, lookup), columns
# (source with value_map, constant, lookup), filters (=, !=, in, and/or/not) and the job's
# legal entities. Written apart from the C engine on purpose: a shared bug cannot agree.
import json
import subprocess
import sys
import urllib.request
from decimal import Decimal

dvemu, files = sys.argv[1], sys.argv[2:]
jobs = [json.load(open(f)) for f in files]


def psql_rows(schema, table):
    sql = f'SELECT coalesce(json_agg(t), \'[]\') FROM "{schema}"."{table}" t'
    out = subprocess.run(["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [{k.lower(): v for k, v in r.items()} for r in json.loads(out)]


_dv = {}


def dv_rows(entity_set):
    if entity_set not in _dv:
        with urllib.request.urlopen(f"{dvemu}/_dvemu/tables/{entity_set}") as r:
            _dv[entity_set] = json.load(r)["value"]
    return _dv[entity_set]


def norm(v):
    """Values compared by meaning: numbers exactly as decimals, the rest as JSON."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return str(Decimal(str(v)).normalize())
    return v


def matches(f, row):
    if f is None:
        return True
    if "and" in f:
        return all(matches(x, row) for x in f["and"])
    if "or" in f:
        return any(matches(x, row) for x in f["or"])
    if "not" in f:
        return not matches(f["not"], row)
    v = row.get(f["column"].lower())
    op, want = f["op"], f.get("value")
    if v is None:
        return op == "is null"
    return {"=": lambda: str(v) == str(want), "!=": lambda: str(v) != str(want),
            "in": lambda: str(v) in [str(w) for w in want],
            "not in": lambda: str(v) not in [str(w) for w in want],
            "is not null": lambda: True}[op]()


def parent_ref(lookup, row):
    """A lookup as the parent's key: (entity set, ((attr, value), ...)); None for a null."""
    parts = []
    for p in lookup["key"]:
        if "company" in p:
            v = row.get(p["company"].lower())
            parts.append((p["target"], ("company", v)))
        elif "lookup" in p:
            v = parent_ref(p["lookup"], row)
            parts.append((p["target"], v))
        else:
            v = row.get(p["source"].lower())
            parts.append((p["target"], norm(v)))
        if v is None:
            return None
    return (lookup["entity_set"], tuple(sorted(parts)))


def source_value(col, row):
    if "constant" in col:
        return norm(col["constant"])
    if "lookup" in col:
        return parent_ref(col["lookup"], row)
    v = row.get(col["source"].lower())
    if v is None:
        return None
    vm = col.get("value_map")
    if vm is not None:
        hit = vm.get(str(v))
        if hit is None:
            hit = next((t for k, t in vm.items() if k.lower() == str(v).lower()), None)
        return norm(hit)
    if col.get("type") in ("string", "memo"):
        return str(v)
    return norm(v)


def company_of(m):
    return next((p["company"].lower() for p in m["key"] if "company" in p), None)


# --- expected ------------------------------------------------------------------------------
expected = {}  # entity set -> key -> {attr: value}
meta = {}  # entity set -> (key attrs with lookups, written attrs)
for job in jobs:
    les = job["job"]["legal_entities"]
    for g in job["groups"]:
        for m in g["maps"]:
            rows = psql_rows(m["source"]["schema"], m["source"]["table"])
            comp = company_of(m)
            tset = m["target"]["entity_set"]
            written = [c for c in m["columns"] if c.get("direction", "=") not in ("<", "<<")]
            meta[tset] = (m["key"], written)
            for r in rows:
                if not matches(m.get("filter"), r):
                    continue
                if les and comp and r.get(comp) not in les:
                    continue
                key = parent_ref({"entity_set": tset, "key": m["key"]}, r)
                rec = {c["target"]: source_value(c, r) for c in written}
                expected.setdefault(tset, {})[key] = rec

# --- actual --------------------------------------------------------------------------------
ids = {}  # (entity set, id) -> key; built on demand
logical_to_set = {}
for job in jobs:
    for g in job["groups"]:
        for m in g["maps"]:
            logical_to_set[m["target"]["logical_name"]] = m["target"]["entity_set"]
def primary_id(entity_set, row):
    """Every table of the library names its id <logical name>id."""
    logical = next((l for l, s in logical_to_set.items() if s == entity_set), entity_set)
    return row.get(logical + "id")


def company_code(guid):
    for r in dv_rows("cdm_companies"):
        if r.get("cdm_companyid") == guid:
            return r.get("cdm_companycode")
    return None


def key_of(entity_set, lookup_key, row):
    parts = []
    for p in lookup_key:
        if "company" in p:
            v = ("company", company_code(row.get(f"_{p['target']}_value")))
        elif "lookup" in p:
            v = ref_of(p["lookup"], row.get(f"_{p['target']}_value"))
        else:
            v = norm(row.get(p["target"]))
        if v is None or v == ("company", None):
            return None
        parts.append((p["target"], v))
    return (entity_set, tuple(sorted(parts)))


def ref_of(lookup, guid):
    if guid is None:
        return None
    s = lookup["entity_set"]
    for r in dv_rows(s):
        if primary_id(s, r) == guid:
            return key_of(s, lookup["key"], r)
    return ("missing", guid)


actual = {}
for tset, (key, written) in meta.items():
    for r in dv_rows(tset):
        k = key_of(tset, key, r)
        rec = {}
        for c in written:
            if "lookup" in c:
                rec[c["target"]] = ref_of(c["lookup"], r.get(f"_{c['target']}_value"))
            else:
                rec[c["target"]] = norm(r.get(c["target"]))
        actual.setdefault(tset, {})[k] = rec

bad = 0
count = 0
for tset in sorted(set(expected) | set(actual)):
    e, a = expected.get(tset, {}), actual.get(tset, {})
    for k in set(e) | set(a):
        count += 1
        if e.get(k) != a.get(k):
            bad += 1
            if bad <= 10:
                print(f"{tset} {k}: expected {e.get(k)} actual {a.get(k)}")
if bad:
    print(f"{bad} of {count} rows differ")
    sys.exit(1)
print(f"exact {count}")

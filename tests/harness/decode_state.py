#!/usr/bin/env python3
"""Rebuilds a table's rows from `dwasync decode` output, or normalizes to_jsonb rows, so the
two can be compared line by line (tests/integration/test_decode*.sh).

  decode_state.py apply TABLE TYPES < decode.jsonl     rows after applying every change
  decode_state.py table TYPES < to_jsonb.lines          rows as Postgres holds them

TYPES is "col=kind,..." for columns whose JSON forms differ on purpose: ts (timestamp:
dwasync adds "Z"), tstz (timestamptz: dwasync writes Z where to_jsonb writes +00:00 with
PGTZ=UTC), bpchar (dwasync trims trailing blanks), bytea (dwasync writes base64, to_jsonb
\\x hex), date (dwasync writes BC years astronomically: 1 BC is 0000). Numbers
are compared exactly as written (Decimal, never float). Output: one canonical JSON row per
line, sorted.
"""
import base64
import json
import sys
from decimal import Decimal


def load(line):
    return json.loads(line, parse_float=Decimal, parse_int=Decimal)


def canon(v):
    if isinstance(v, Decimal):
        return "num:" + str(v)
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [canon(x) for x in v]
    return v


def norm_theirs(row, types):
    for col, kind in types.items():
        v = row.get(col)
        if v is None:
            continue
        if kind == "bpchar":
            row[col] = v.rstrip(" ")
        elif kind == "bytea":
            row[col] = base64.b64encode(bytes.fromhex(v[2:])).decode()
        elif kind == "date" and v.endswith(" BC"):
            year = 1 - int(v[:-3].split("-")[0])  # 1 BC is year 0, 2 BC is -0001
            row[col] = ("-%04d" % -year if year < 0 else "%04d" % year) + v[-9:-3]
        elif kind == "ts":
            row[col] = v + "Z" if v not in ("infinity", "-infinity") else v
        elif kind == "tstz":
            row[col] = v[:-6] + "Z" if v.endswith("+00:00") else v
    return row


def dump(rows):
    for r in sorted(json.dumps(canon(r), sort_keys=True, ensure_ascii=False) for r in rows):
        print(r)


def main():
    mode = sys.argv[1]
    if mode == "apply":
        table = sys.argv[2]
        state = {}
        for line in sys.stdin:
            c = load(line)
            if c["table"] != table:
                continue
            if c["op"] == "truncate":
                state.clear()
                continue
            k = json.dumps(canon(c["key"]), sort_keys=True)
            if c["op"] == "delete":
                state.pop(k, None)
                continue
            row = dict(c["new"])
            if c["op"] == "update":
                prev = k
                if c["old"] is not None:
                    keycols = list(c["key"].keys())
                    prev = json.dumps(canon({x: c["old"][x] for x in keycols if x in c["old"]}),
                                      sort_keys=True)
                before = state.pop(prev, {})
                for col in c["unchanged"]:
                    row[col] = before[col]  # KeyError: an unchanged column we never saw
            state[k] = row
        dump(state.values())
    else:
        types = dict(x.split("=") for x in sys.argv[2].split(",") if x)
        dump(norm_theirs(load(line), types) for line in sys.stdin if line.strip())


if __name__ == "__main__":
    main()

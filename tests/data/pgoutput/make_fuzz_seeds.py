#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_pgoutput.c from the golden recording.

Seeds: the whole recording as one message sequence (mode 1), each transaction of it as a
sequence with the relation messages it needs, and hand-made I/U/D/T messages for the
primed relation of mode 0. Run from the repository root after re-recording:
    python3 tests/data/pgoutput/make_fuzz_seeds.py
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "fuzz", "corpus", "fuzz_pgoutput")


def frames(path):
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        yield data[i + 4:i + 4 + n]
        i += 4 + n


def seq(msgs):
    return b"\x01" + b"".join(struct.pack(">H", len(m)) + m for m in msgs if len(m) < 65536)


def tuple_data(values):
    out = struct.pack(">H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            out += b"t" + struct.pack(">I", len(v)) + v
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    msgs = [f[25:] for f in frames(os.path.join(HERE, "stream.bin")) if f[:1] == b"w"]
    seeds = [seq(msgs)]
    relations = {}
    current = []
    for m in msgs:
        if m[:1] == b"R":
            relations[m[1:5]] = m
        current.append(m)
        if m[:1] == b"C":
            seeds.append(seq(list(relations.values()) + current))
            current = []
    row = [b"1", b"text \"q\" \\ \xc3\xa9", b"-12345678901234567890.5", b"2026-01-01 10:00:00+02",
           b'{"a": [1, 2]}', b"{1,NULL,3}"]
    rel = struct.pack(">I", 1)
    seeds += [
        b"\x00I" + rel + b"N" + tuple_data(row),
        b"\x00I" + rel + b"N" + tuple_data([b"2", None, b"NaN", b"infinity", b"null", b"{}"]),
        b"\x00U" + rel + b"K" + tuple_data([b"1", None, None, None, None, None]) + b"N" +
        tuple_data([b"2", "u", b"1.5", b"1999-12-31 23:59:59.999999+00", b"[]", b"{{1},{2}}"]),
        b"\x00U" + rel + b"O" + tuple_data(row) + b"N" + tuple_data(row),
        b"\x00D" + rel + b"K" + tuple_data([b"1", None, None, None, None, None]),
        b"\x00T" + struct.pack(">I", 1) + b"\x03" + rel,
        b"\x00C\x00" + struct.pack(">QQQ", 0x1000, 0x1010, 0),
        b"\x00M\x01" + struct.pack(">Q", 5) + b"p\x00" + struct.pack(">I", 2) + b"hi",
    ]
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(s)
    print(f"wrote {len(seeds)} seeds to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()

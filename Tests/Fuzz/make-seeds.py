"""Writes the seed corpora under Tests/Fuzz/corpus/<target>/ (committed).

Requests are built with the protobuf classes of the Python KV Connect client
(denokv), keys with its tuple packer, V8 values by the Deno CLI's V8
(node:v8 `serialize`, version 15 headers) plus the `FF 10` form Deno KV
stores. Run from the repository root after `bash scripts/install-deps.sh --test`:

    .venv/bin/python Tests/Fuzz/make-seeds.py
"""

import hashlib
import json
import os
import struct
import subprocess
import sys

from denokv import _datapath_pb2 as pb
from fdb.tuple import pack

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


KEYS = [
    pack(("users", "alice")),
    pack(("counter",)),
    pack(("a", 1, 2.5, b"\x00\xff", True, False)),
    pack(("big", 2**70, -(2**70), -1, 0)),
    pack(("f", float("inf"), float("-inf"), -0.0, float("nan"))),
    pack(("日本語", "😀", "")),
    b"\x02\x00",
]
for k in KEYS:
    put("fuzz-key", k)


def v8_double(x):
    return b"\xff\x0f\x4e" + struct.pack("<d", x)


def v8_bigint(n):
    mag = abs(n)
    words = max(1, (mag.bit_length() + 63) // 64)
    body = mag.to_bytes(words * 8, "little")
    bitfield = len(body) * 2 + (1 if n < 0 else 0)
    out = bytearray(b"\xff\x0f\x5a")
    while True:
        b = bitfield & 0x7F
        bitfield >>= 7
        out.append(b | (0x80 if bitfield else 0))
        if not bitfield:
            break
    return bytes(out + body)


SCALARS = [v8_double(1.0), v8_double(-2.5), v8_double(float("nan")), v8_bigint(1), v8_bigint(-(2**100)),
           b"\xff\x0f\x49\x54", b"\xff\x0f\x55\x80\x80\x80\x80\x0f"]

# SnapshotRead
for ranges in ([(KEYS[0], KEYS[0] + b"\xff", 10, False)],
               [(b"\x01", b"\xff", 1000, True)],
               [(k, k + b"\x00", 1, i % 2 == 0) for i, k in enumerate(KEYS[:5])]):
    m = pb.SnapshotRead()
    for s, e, lim, rev in ranges:
        m.ranges.add(start=s, end=e, limit=lim, reverse=rev)
    put("fuzz-snapshot-read", m.SerializeToString())

# Watch
for keys in ([KEYS[0]], KEYS[:5], [b""]):
    m = pb.Watch()
    for k in keys:
        m.keys.add(key=k)
    put("fuzz-watch", m.SerializeToString())

# AtomicWrite
V8, LE64, BYTES = 1, 2, 3
w = pb.AtomicWrite()
w.checks.add(key=KEYS[0], versionstamp=b"\x00" * 9 + b"\x01")
w.checks.add(key=KEYS[1])
w.mutations.add(key=KEYS[0], mutation_type=pb.M_SET, value=pb.KvValue(data=v8_double(3.0), encoding=V8))
w.mutations.add(key=KEYS[2], mutation_type=pb.M_DELETE)
put("fuzz-atomic-write", w.SerializeToString())
for s in SCALARS:
    w = pb.AtomicWrite()
    w.mutations.add(key=KEYS[1], mutation_type=pb.M_SUM, value=pb.KvValue(data=s, encoding=V8),
                    sum_min=s, sum_max=s, sum_clamp=True)
    put("fuzz-atomic-write", w.SerializeToString())
for mt in (pb.M_SUM, pb.M_MIN, pb.M_MAX):
    w = pb.AtomicWrite()
    w.mutations.add(key=KEYS[1], mutation_type=mt, value=pb.KvValue(data=struct.pack("<Q", 7), encoding=LE64))
    put("fuzz-atomic-write", w.SerializeToString())
w = pb.AtomicWrite()
w.mutations.add(key=KEYS[0], mutation_type=pb.M_SET_SUFFIX_VERSIONSTAMPED_KEY,
                value=pb.KvValue(data=b"x", encoding=BYTES), expire_at_ms=1_700_000_060_000)
w.enqueues.add(payload=v8_double(1.0), deadline_ms=1_700_000_000_000, keys_if_undelivered=[KEYS[3]],
               backoff_schedule=[100, 1000])
put("fuzz-atomic-write", w.SerializeToString())

# Metadata exchange bodies
for body in (b"", b"  \n", b'{"supportedVersions":[1,2,3]}', b'{"supportedVersions":[2]}',
             b'{"supportedVersions":[]}', b'{"supportedVersions":[1,2,3,4],"x":{"y":[null,true,1.5e3,"\\u00e9"]}}'):
    put("fuzz-metadata-json", body)

# V8 values: Deno's serializer, and the FF 10 header Deno KV stores.
JS = r"""
import { serialize } from "node:v8";
const values = [
  null, undefined, true, false, 0, -1, 42, 2 ** 31, 1.5, -0, NaN, Infinity, 1e300, 10n, -(2n ** 100n),
  "", "hello", "héllo", "日本語 😀", [], [1, "a", null], [1, , 3], { a: 1, b: { c: [true, null] }, "0": "zero" },
  new Date(0), new Date(1700000000123), new Date(NaN), { bytes: 1 },
];
const sparse = []; sparse[5] = 1; values.push(sparse);
const hex = (u) => Array.from(u).map((b) => b.toString(16).padStart(2, "0")).join("");
console.log(JSON.stringify(values.map((v) => hex(serialize(v)))));
"""
deno = os.environ.get("DENO", os.path.join(os.path.dirname(sys.executable), "deno"))
out = subprocess.run([deno, "eval", JS], capture_output=True, text=True, check=True).stdout
for h in json.loads(out):
    b = bytes.fromhex(h)
    put("fuzz-v8", b)
    if b[:2] == b"\xff\x0f":
        put("fuzz-v8", b"\xff\x10" + b[2:])
for s in SCALARS:
    put("fuzz-v8", s)
# A Uint8Array the way Deno KV stores one (ArrayBuffer + view), and a two-byte string.
put("fuzz-v8", b"\xff\x10\x42\x03\x01\x02\x03\x56\x42\x00\x03\x00")
put("fuzz-v8", b"\xff\x10\x63\x0c\xe5\x65\x2c\x67\x9e\x8a\x20\x00\x3d\xd8\x00\xde")
print("seeds written under", ROOT)

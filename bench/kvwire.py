"""KV Connect over raw HTTP for the benchmark harness (bench/run.sh).

  token URL ACCESS_TOKEN                  metadata exchange; prints the data-plane token
  preload URL TOKEN PREFIX N SIZE [CONC]  writes keys PREFIX/00000000..N-1 with SIZE-byte values
                                          (big atomic writes, CONC parallel HTTP/1.1 connections)
  bodies DIR KEYS HOT                     protobuf request bodies for h2load (one fixed body per run)
  idle URL N h1|h2                        opens N idle keep-alive connections, prints "ready N", waits
  h2load LOGFILE STDOUT                   summarises an h2load run (--log-file + its output): JSON ops/s, p50, p99
  redis CSVFILE                           redis-benchmark --csv → JSON lines

Keys use the tuple encoding Deno uses for string parts (0x02 utf8 0x00), so
they look like ["<prefix>", "00001234"] to a Deno client. Values are raw
bytes (VE_BYTES).
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

from denokv import _datapath_pb2 as pb


def key(prefix: str, i) -> bytes:
    part = i if isinstance(i, str) else "%08d" % i
    return b"\x02" + prefix.encode() + b"\x00\x02" + part.encode() + b"\x00"


def prefix_end(prefix: str) -> bytes:
    # every key ["prefix", <string>] sorts below ["prefix", <0x03...>]
    return b"\x02" + prefix.encode() + b"\x00\x03"


def metadata(url: str, access: str) -> str:
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("POST", "/", body=json.dumps({"supportedVersions": [2, 3]}),
              headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"metadata exchange: {r.status} {body[:200]!r}")
    return json.loads(body)["token"]


def read_body(k: bytes, end: bytes = None, limit: int = 1) -> bytes:
    return pb.SnapshotRead(ranges=[pb.ReadRange(start=k, end=end or k + b"\x00", limit=limit)]).SerializeToString()


def set_mutation(k: bytes, data: bytes, mtype=pb.M_SET):
    return pb.Mutation(key=k, value=pb.KvValue(data=data, encoding=pb.VE_BYTES), mutation_type=mtype)


def preload(url, token, prefix, n, size, conc=4):
    n, size, conc = int(n), int(size), int(conc)
    u = urllib.parse.urlsplit(url)
    per = max(1, min(1000, 760_000 // (size + 32)))   # ≤ 1000 mutations, ≤ 819200 bytes per write
    batches = [(s, min(n, s + per)) for s in range(0, n, per)]
    lock = threading.Lock()
    value = (b"v" * size)
    errors = []
    t0 = time.time()

    def worker():
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while True:
            with lock:
                if not batches or errors:
                    return
                s, e = batches.pop()
            body = pb.AtomicWrite(mutations=[set_mutation(key(prefix, i), value) for i in range(s, e)]).SerializeToString()
            c.request("POST", "/v2/atomic_write", body=body,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"})
            r = c.getresponse()
            out = r.read()
            if r.status != 200:
                errors.append(f"{r.status} {out[:200]!r}")
                return
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit("preload failed: " + errors[0])
    dt = time.time() - t0
    print(json.dumps({"preload": prefix, "keys": n, "value_bytes": size, "seconds": round(dt, 1),
                      "keys_per_s": round(n / dt) if dt else None}))


def bodies(outdir, keys, hot):
    keys, hot = int(keys), int(hot)
    os.makedirs(outdir, exist_ok=True)
    w = lambda name, b: open(os.path.join(outdir, name), "wb").write(b)
    # point read of one existing key (h2load sends the same body on every request)
    w("read.bin", read_body(key("r", keys // 2)))
    # durable write of a NEW key on every request with a fixed body: the daemon
    # appends the commit's versionstamp to the key (M_SET_SUFFIX_VERSIONSTAMPED_KEY)
    w("write.bin", pb.AtomicWrite(mutations=[set_mutation(b"\x02h2w\x00", b"x" * 100, pb.M_SET_SUFFIX_VERSIONSTAMPED_KEY)]).SerializeToString())
    # list of 100 entries from the middle of the read set
    w("list.bin", read_body(key("r", keys // 3), prefix_end("r"), 100))


def idle(url, n, kind):
    u = urllib.parse.urlsplit(url)
    socks = []
    for i in range(int(n)):
        s = socket.create_connection((u.hostname, u.port))
        if kind == "h1":
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            s.recv(4096)
        else:  # h2c prior knowledge: preface + empty SETTINGS, then silence
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            s.recv(4096)
        socks.append(s)
    print("ready", len(socks), flush=True)
    sys.stdin.read()   # hold until stdin closes / the process is killed


def h2load_parse(logfile, stdout_file):
    """(requests/s, sorted latencies in ms, failed requests) of one h2load run."""
    import re
    out = open(stdout_file).read()
    m = re.search(r"finished in [0-9.]+\w*, ([0-9.]+) req/s", out)
    rps = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    lat, bad = [], 0
    for line in open(logfile):
        parts = line.split()
        if len(parts) < 3:
            continue
        if parts[1] == "200":
            lat.append(int(parts[2]) / 1000.0)
        else:
            bad += 1
    failed = int(m.group(2)) + int(m.group(3)) if m else bad
    return rps, lat, max(bad, failed)


def h2load_summary(*files):
    """One run (log, stdout) or several run at the same time (summed)."""
    rps, lat, errors = 0.0, [], 0
    for i in range(0, len(files), 2):
        r, l, e = h2load_parse(files[i], files[i + 1])
        rps, errors = rps + r, errors + e
        lat += l
    lat.sort()
    q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))], 3) if lat else None
    print(json.dumps({"ops_per_s": round(rps), "p50_ms": q(0.5), "p99_ms": q(0.99), "errors": errors}))


def redis_csv(path):
    import csv
    rows = list(csv.reader(open(path)))
    head = rows[0]
    for r in rows[1:]:
        d = dict(zip(head, r))
        print(json.dumps({"op": d["test"], "ops_per_s": round(float(d["rps"])),
                          "p50_ms": float(d["p50_latency_ms"]), "p99_ms": float(d["p99_latency_ms"])}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "token":
        print(metadata(*args))
    elif cmd == "preload":
        preload(*args)
    elif cmd == "bodies":
        bodies(*args)
    elif cmd == "idle":
        idle(*args)
    elif cmd in ("h2load", "h2load-sum"):
        h2load_summary(*args)
    elif cmd == "redis":
        redis_csv(*args)
    else:
        raise SystemExit(__doc__)

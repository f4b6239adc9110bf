"""Two and three daemons serving one PostgreSQL database, with the real Deno
CLI: one database id, tokens accepted by every daemon, read-your-writes and
versionstamp order across daemons, no lost update under concurrent
check-and-set through different daemons, watch and queues across daemons,
expiry swept once, kill -9 of a daemon and a PostgreSQL restart under load."""
import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from denokv import open_kv

from conftest import BIN, DENO, ROOT, TOKEN, run_deno

DENO_DIR = ROOT / "Tests/e2e/deno"


def deno_script(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def snapshot_read_body(start: bytes, end: bytes, limit: int) -> bytes:
    """SnapshotRead{ranges:[ReadRange{start,end,limit}]}, encoded by hand."""
    def field(n, b):
        return bytes([n << 3 | 2, len(b)]) + b
    rng = field(1, start) + field(2, end) + bytes([3 << 3 | 0, limit])
    return field(1, rng)


def http(url, body=b"", headers=None, method="POST"):
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric_sum(d, name):
    status, body = http(d.url + "/metrics", method="GET")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_one_database_id_and_tokens_accepted_by_every_daemon(daemons):
    a, b, c = daemons(3)
    metas = [d.metadata() for d in (a, b, c)]
    assert len({m["databaseId"] for m in metas}) == 1, metas
    for m in metas:
        for d in (a, b, c):
            status, body = http(d.url + "/v2/snapshot_read", snapshot_read_body(b"\x02a", b"\x02b", 1),
                                {"Authorization": f"Bearer {m['token']}", "Content-Type": "application/x-protobuf",
                                 "x-denokv-database-id": m["databaseId"]})
            assert status == 200, body
    # A forged token is still refused everywhere.
    forged = metas[0]["token"][:-2] + ("AA" if not metas[0]["token"].endswith("AA") else "BB")
    status, _ = http(b.url + "/v2/snapshot_read", snapshot_read_body(b"\x02a", b"\x02b", 1),
                     {"Authorization": f"Bearer {forged}", "Content-Type": "application/x-protobuf"})
    assert status == 401


def test_read_your_writes_and_versionstamp_order_across_daemons(daemons, tmp_path):
    a, b, c = daemons(3)
    script = deno_script(tmp_path, "ryw.ts", """
    const urls = Deno.args;
    const kvs = await Promise.all(urls.map((u) => Deno.openKv(u)));
    let last = "";
    const problems: string[] = [];
    for (let i = 0; i < 60; i++) {
      const w = kvs[i % kvs.length], r = kvs[(i + 1) % kvs.length];
      const res = await w.set(["ryw", i % 7], { i });
      if (!(res.versionstamp > last)) problems.push(`vs ${res.versionstamp} after ${last}`);
      last = res.versionstamp;
      const got = await r.get(["ryw", i % 7]);
      if (got.versionstamp !== res.versionstamp || (got.value as any)?.i !== i) {
        problems.push(`read ${JSON.stringify(got)} after write ${i} ${res.versionstamp}`);
      }
    }
    kvs.forEach((k) => k.close());
    console.log(JSON.stringify({ problems, last }));
    """)
    r = run_deno(["run", "--unstable-kv", "-A", script, a.url, b.url, c.url])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["problems"] == [], out


def test_no_lost_update_under_check_and_set_through_different_daemons(daemons):
    ds = daemons(3)
    key, per_process, n = "xdaemon", 15, 6
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1")
    procs = [subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "cas_increment.ts"),
                               ds[i % 3].url, key, str(per_process)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(n)]
    conflicts = 0
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        conflicts += json.loads(out.strip().splitlines()[-1])["conflicts"]
    for d in ds:
        r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "read_counter.ts"), d.url, key])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["value"] == n * per_process
    print(f"{n} processes over 3 daemons x {per_process} increments, {conflicts} conflicts retried")


def test_watch_sees_writes_made_through_another_daemon(daemons, tmp_path):
    a, b = daemons(2)
    script = deno_script(tmp_path, "xwatch.ts", """
    const [wurl, rurl] = Deno.args;
    const writer = await Deno.openKv(wurl), watcher = await Deno.openKv(rurl);
    const seen: number[] = [];
    const lat: number[] = [];
    let sentAt = 0;
    let resolveNext: (() => void) | null = null;
    const reader = (async () => {
      for await (const [e] of watcher.watch([["xw"]])) {
        if (e.value !== null) { seen.push(e.value as number); lat.push(performance.now() - sentAt); }
        resolveNext?.();
        if (e.value === 10) break;
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 1; i <= 10; i++) {
      const arrived = new Promise<void>((r) => (resolveNext = r));
      sentAt = performance.now();
      await writer.set(["xw"], i);
      await Promise.race([arrived, new Promise((r) => setTimeout(r, 5000))]);
    }
    await Promise.race([reader, new Promise((r) => setTimeout(r, 5000))]);
    writer.close(); watcher.close();
    console.log(JSON.stringify({ seen, lat }));
    """)
    r = run_deno(["run", "--unstable-kv", "-A", script, a.url, b.url], timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["seen"][-1] == 10 and out["seen"] == sorted(out["seen"]), out
    print("cross-daemon watch latency ms:", sorted(out["lat"]))


def test_queue_enqueued_through_one_daemon_is_pulled_through_another(daemons):
    a, b = daemons(2)

    async def put():
        kv = await open_kv(a.url, access_token=TOKEN)
        async with kv:
            for i in range(20):
                await kv.enqueue({"n": i}, retry_delays=[])
    asyncio.run(put())
    m = b.metadata()
    headers = {"Authorization": f"Bearer {m['token']}", "x-denokv-database-id": m["databaseId"],
               "Content-Type": "application/json"}
    got = []
    while True:
        status, body = http(b.url + "/v2/queue/lease", json.dumps({"waitMs": 500}).encode(), headers)
        if status == 204:
            break
        assert status == 200, body
        lease = json.loads(body)
        got.append(lease["messageId"])
        assert http(b.url + "/v2/queue/ack", json.dumps({"id": lease["id"]}).encode(), headers)[0] == 200
    assert len(got) == 20 and len(set(got)) == 20
    # Nothing left for the first daemon either.
    m2 = a.metadata()
    status, _ = http(a.url + "/v2/queue/lease", json.dumps({"waitMs": 200}).encode(),
                     {**headers, "Authorization": f"Bearer {m2['token']}"})
    assert status == 204


def test_expired_entries_are_swept_once(daemons, tmp_path):
    ds = daemons(3)
    n = 40
    script = deno_script(tmp_path, "expire.ts", f"""
    const kv = await Deno.openKv(Deno.args[0]);
    for (let i = 0; i < {n}; i++) await kv.set(["exp", i], i, {{ expireIn: 300 }});
    await kv.set(["keep"], 1);
    kv.close();
    """)
    r = run_deno(["run", "--unstable-kv", "-A", script, ds[0].url])
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 30
    total = 0
    while time.time() < deadline:
        total = sum(metric_sum(d, "kvconnectd_expired_entries_removed_total") for d in ds)
        if total >= n:
            break
        time.sleep(0.5)
    time.sleep(2)  # a second sweep by another daemon would show up here
    total = sum(metric_sum(d, "kvconnectd_expired_entries_removed_total") for d in ds)
    assert total == n, f"{total} removals reported for {n} expired entries"


def _start_writers(urls, tmp_path, n):
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1")
    procs = []
    for i in range(n):
        out = open(tmp_path / f"writer{i}.out", "w")
        procs.append((subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "durable_writer.ts"),
                                        urls[i % len(urls)], f"w{i}"],
                                       stdout=out, stderr=subprocess.STDOUT, env=env), tmp_path / f"writer{i}.out"))
    return procs


def _acknowledged(path):
    acks = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                acks.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by the kill
    return acks


def _check_all_present(url, writers):
    r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "durable_check.ts"), url], timeout=300)
    assert r.returncode == 0, r.stderr
    stored = json.loads(r.stdout)["entries"]
    total = 0
    for name, path in writers.items():
        for ack in _acknowledged(path):
            total += 1
            got = stored.get(name, {}).get(str(ack["i"]))
            assert got == [ack["vs"], ack["vs"]], f"{name} write {ack['i']} acknowledged as {ack['vs']}, stored {got}"
    return total


def test_kill_9_of_one_daemon_under_load_loses_no_acknowledged_write(daemons, tmp_path):
    a, b = daemons(2)
    procs = _start_writers([a.url, b.url], tmp_path, 4)
    try:
        time.sleep(3)
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        before = {f"w{i}": len(_acknowledged(p)) for i, (_, p) in enumerate(procs)}
        time.sleep(3)
        # Writers through the surviving daemon keep committing.
        for i in (1, 3):
            assert len(_acknowledged(procs[i][1])) > before[f"w{i}"], procs[i][1].read_text()[-2000:]
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()
    total = _check_all_present(b.url, {f"w{i}": p for i, (_, p) in enumerate(procs)})
    assert total > 0
    # The killed daemon comes back on the same database.
    a.start()
    assert a.metadata()["databaseId"] == b.metadata()["databaseId"]


def test_postgres_restart_under_load_loses_nothing_and_clients_resume(daemons, pg_cluster, tmp_path):
    a, b = daemons(2)
    procs = _start_writers([a.url, b.url], tmp_path, 2)
    try:
        time.sleep(2)
        pg_cluster.stop_server()
        # While PostgreSQL is down: /readyz fails, requests get 503 + Retry-After.
        deadline = time.time() + 15
        status = 200
        while time.time() < deadline and status == 200:
            status, _ = http(a.url + "/readyz", method="GET")
            time.sleep(0.2)
        assert status == 503
        m = a.metadata()  # tokens are in memory: the exchange works without the database
        req = urllib.request.Request(a.url + "/v2/snapshot_read", data=snapshot_read_body(b"\x02a", b"\x02b", 1),
                                     headers={"Authorization": f"Bearer {m['token']}",
                                              "Content-Type": "application/x-protobuf"}, method="POST")
        try:
            urllib.request.urlopen(req, timeout=30).read()
            raise AssertionError("a read succeeded while PostgreSQL was down")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and e.headers.get("Retry-After") == "1", (e.code, dict(e.headers))
        counts_down = [len(_acknowledged(p)) for _, p in procs]
        pg_cluster.start_server()
        deadline = time.time() + 30
        while time.time() < deadline and http(a.url + "/readyz", method="GET")[0] != 200:
            time.sleep(0.2)
        assert http(a.url + "/readyz", method="GET")[0] == 200
        time.sleep(5)
        # Clients resumed by themselves (Deno retries 503s).
        for (p, path), before in zip(procs, counts_down):
            assert p.poll() is None, path.read_text()[-2000:]
            assert len(_acknowledged(path)) > before, path.read_text()[-2000:]
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()
    assert _check_all_present(b.url, {f"w{i}": p for i, (_, p) in enumerate(procs)}) > 0


def _signed_with(token, secret_hex):
    import base64, hashlib, hmac
    _, payload, mac = token.split(".")
    pad = lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    return hmac.compare_digest(hmac.new(bytes.fromhex(secret_hex), pad(payload), hashlib.sha256).digest(), pad(mac))


def test_signing_key_rotation_logs_nobody_out(daemons, pg_cluster, tmp_path):
    a, b = daemons(2)
    db = daemons.database.rsplit("/", 1)[1]
    keys = lambda: pg_cluster.psql("SELECT encode(secret, 'hex') FROM kvconnectd.signing_keys ORDER BY created_at DESC", db=db).split()
    first = keys()
    assert len(first) == 1, "the daemons agreed on one key"
    old = a.metadata()
    assert _signed_with(old["token"], first[0])
    r = subprocess.run([BIN, "rotate-signing-key", daemons.database, "--force"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    second = keys()
    assert len(second) == 2 and second[1] == first[0]
    # Daemons pick the new key up by themselves (periodic re-read) and sign with it.
    deadline = time.time() + 20
    while time.time() < deadline and not _signed_with(b.metadata()["token"], second[0]):
        time.sleep(0.5)
    new = b.metadata()
    assert _signed_with(new["token"], second[0])
    # Old and new tokens are accepted by every daemon.
    for token in (old["token"], new["token"]):
        for d in (a, b):
            status, body = http(d.url + "/v2/snapshot_read", snapshot_read_body(b"\x02a", b"\x02b", 1),
                                {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf",
                                 "x-denokv-database-id": old["databaseId"]})
            assert status == 200, body
    # Without --force, a second rotation within the token lifetime is refused:
    # it would retire the key that signed tokens still in use.
    r = subprocess.run([BIN, "rotate-signing-key", daemons.database], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "token lifetime" in r.stderr, r.stderr
    assert keys() == second

"""Durability and consistency with real Deno clients: SIGTERM under load,
SIGKILL at random moments (atomic writes, and queue enqueues delivered to
pull workers), and a bank-transfer invariant.
CRASH_KILLS and BANK_SECONDS lengthen the runs (make crash-test / make soak)."""
import base64
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time

from denokv import _datapath_pb2 as pb

from conftest import DENO, ROOT, TOKEN, run_deno

DENO_DIR = ROOT / "Tests/e2e/deno"
ENV = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1")


class Writer:
    def __init__(self, url, name):
        self.name = name
        self.acked = {}
        self.proc = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "durable_writer.ts"), url, name],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            self.acked[r["i"]] = r["vs"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.thread.join(timeout=5)


def check_state(d, writers_acked, last_vs):
    r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "durable_check.ts"), d.url])
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    for name, acked in writers_acked.items():
        stored = state["entries"].get(name, {})
        for i, vs in acked.items():
            assert stored.get(str(i)) == [vs, vs], f"acknowledged write {name}/{i} ({vs}) lost: {stored.get(str(i))}"
        for i, pair in stored.items():
            assert pair[0] == pair[1] and pair[0] is not None, f"half-applied atomic write {name}/{i}: {pair}"
    assert state["next"] > last_vs, "versionstamps keep increasing across restarts"
    return state["next"]


def integrity_ok(db_path):
    c = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()


def test_sigterm_under_load_keeps_every_acknowledged_write(fresh_daemon):
    d = fresh_daemon.start()
    port = d.port
    writers = [Writer(d.url, f"t{i}") for i in range(3)]
    time.sleep(2.5)
    t0 = time.time()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0, "clean exit on SIGTERM"
    stop_s = time.time() - t0
    for w in writers:
        w.stop()
    acked = {w.name: dict(w.acked) for w in writers}
    assert sum(len(a) for a in acked.values()) > 50, acked
    assert integrity_ok(d.db_path)
    d.start(port=port)
    check_state(d, acked, "")
    print(f"SIGTERM under load: {sum(len(a) for a in acked.values())} acknowledged writes, all durable; stop took {stop_s:.2f}s")


def test_sigkill_at_random_moments_loses_nothing_acknowledged(fresh_daemon):
    kills = int(os.environ.get("CRASH_KILLS", "3"))
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    d = fresh_daemon.start()
    port = d.port
    acked = {}
    last_vs = ""
    total = 0
    for k in range(kills):
        writers = [Writer(d.url, f"k{k}w{i}") for i in range(2)]
        time.sleep(1.0 + rng.random() * 2.0)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        for w in writers:
            w.stop()
            acked[w.name] = dict(w.acked)
            total += len(w.acked)
        assert integrity_ok(d.db_path), f"integrity after kill {k + 1}"
        d.start(port=port)
        last_vs = check_state(d, acked, last_vs)
    print(f"{kills} SIGKILLs survived, {total} acknowledged atomic writes all present, none half-applied")


class QueueKillRun:
    """Raw HTTP/1.1 enqueuers and pull workers that keep going while the
    daemon is killed and restarted on the same port (the data-plane token
    survives restarts: the signing key is a file)."""

    def __init__(self, d):
        self.port = d.port
        meta = d.metadata()
        self.headers = {"Authorization": f"Bearer {meta['token']}", "x-denokv-database-id": meta["databaseId"]}
        self.lock = threading.Lock()
        self.stop_writers = threading.Event()
        self.stop_workers = threading.Event()
        self.acked = {}         # write id -> message ids, for writes answered 200 + AW_SUCCESS
        self.unacked = {}       # write id -> message ids, for writes sent but not answered (killed) or refused
        self.errors = []        # answers that are neither success nor a dropped connection
        self.deliveries = {}    # message id -> times leased
        self.acks = 0

    def post(self, path, body, headers, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("POST", path, body=body, headers={**self.headers, **headers})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    @staticmethod
    def v8_string(s):
        b = s.encode()
        assert len(b) < 128
        return b"\xff\x0f\x22" + bytes([len(b)]) + b

    def writer(self, w):
        n = 0
        while not self.stop_writers.is_set():
            wid = f"w{w}-{n}"
            n += 1
            mids = [f"{wid}.{j}" for j in range(1 + n % 3)]
            aw = pb.AtomicWrite(
                mutations=[pb.Mutation(key=b"\x02qd\x00\x02" + wid.encode() + b"\x00", mutation_type=pb.M_SET,
                                       value=pb.KvValue(data=",".join(mids).encode(), encoding=pb.VE_BYTES))],
                enqueues=[pb.Enqueue(payload=self.v8_string(m), deadline_ms=int(time.time() * 1000),
                                     backoff_schedule=[100, 200, 400]) for m in mids])
            try:
                st, body = self.post("/v2/atomic_write", aw.SerializeToString(),
                                     {"Content-Type": "application/x-protobuf", "x-denokv-version": "3"})
            except ConnectionRefusedError:
                time.sleep(0.02)  # the daemon is down or restarting: nothing was sent
                continue
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.unacked[wid] = mids  # killed while the write was in flight
                continue
            time.sleep(0.004)  # about the workers' pace, so the backlog at the end stays small
            ok = st == 200 and pb.AtomicWriteOutput.FromString(body).status == pb.AW_SUCCESS
            with self.lock:
                (self.acked if ok else self.unacked)[wid] = mids
                if not ok:
                    self.errors.append((wid, st, body[:200]))

    def worker(self):
        while not self.stop_workers.is_set():
            try:
                st, body = self.post("/v2/queue/lease", json.dumps({"waitMs": 300, "visibilityTimeoutMs": 10000}),
                                     {"Content-Type": "application/json"})
            except (OSError, http.client.HTTPException):
                time.sleep(0.02)
                continue
            if st == 204:
                continue
            if st != 200:
                with self.lock:
                    self.errors.append(("lease", st, body[:200]))
                time.sleep(0.05)
                continue
            m = json.loads(body)
            payload = base64.b64decode(m["payload"])
            if payload[:3] != b"\xff\x0f\x22":
                with self.lock:
                    self.errors.append(("payload", m["messageId"], payload[:200]))
                continue
            mid = payload[4:4 + payload[3]].decode()
            with self.lock:
                self.deliveries[mid] = self.deliveries.get(mid, 0) + 1
            try:
                st, _ = self.post("/v2/queue/ack", json.dumps({"id": m["id"]}), {"Content-Type": "application/json"})
            except (OSError, http.client.HTTPException):
                continue  # killed before the ack: delivered again after the restart
            if st == 200:
                with self.lock:
                    self.acks += 1

    def markers(self):
        """{write id: message ids} of the writes whose mutation is in the database."""
        out, start, end = {}, b"\x02qd\x00", b"\x02qd\x01"
        while True:
            rr = pb.SnapshotRead(ranges=[pb.ReadRange(start=start, end=end, limit=1000)])
            st, body = self.post("/v2/snapshot_read", rr.SerializeToString(),
                                 {"Content-Type": "application/x-protobuf", "x-denokv-version": "3"})
            assert st == 200, (st, body)
            vals = pb.SnapshotReadOutput.FromString(body).ranges[0].values
            for v in vals:
                out[v.key[5:-1].decode()] = v.value.decode().split(",")
            if len(vals) < 1000:
                return out
            start = vals[-1].key + b"\x00"


def test_queue_enqueues_survive_sigkill(fresh_daemon):
    """No acknowledged enqueue is lost across SIGKILLs: two enqueuers (1-3
    messages per atomic write, plus a marker key in the same write) and three
    pull workers run while the daemon is killed CRASH_KILLS times at random
    moments and restarted; then every acknowledged message is delivered at
    least once, and a write is all or nothing (marker present exactly when
    its messages were delivered)."""
    kills = int(os.environ.get("CRASH_KILLS", "3"))
    rng = random.Random(int(os.environ.get("CRASH_SEED", "11")))
    d = fresh_daemon.start()
    port = d.port
    run = QueueKillRun(d)
    writers = [threading.Thread(target=run.writer, args=(w,), daemon=True) for w in range(2)]
    workers = [threading.Thread(target=run.worker, daemon=True) for _ in range(3)]
    try:
        for t in writers + workers:
            t.start()
        recovered = 0
        for k in range(kills):
            time.sleep(1.0 + rng.random() * 2.0)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            assert integrity_ok(d.db_path), f"integrity after kill {k + 1}"
            time.sleep(rng.random() * 0.3)
            d.start(port=port)
            m = re.findall(r"queue_ready_again=(\d+)", d.log())
            recovered += int(m[-1]) if m else 0
        time.sleep(1.0)
        run.stop_writers.set()
        for t in writers:
            t.join(30)
        assert not any(t.is_alive() for t in writers), "an enqueuer hangs"
        with run.lock:
            acked = dict(run.acked)
        want = {mid for mids in acked.values() for mid in mids}
        t0 = time.time()
        while time.time() - t0 < 60:
            with run.lock:
                missing = want - set(run.deliveries)
            if not missing:
                break
            time.sleep(0.1)
        drain_s = time.time() - t0
        time.sleep(1.5)  # redeliveries of anything still leased, and applied-but-unacknowledged writes
    finally:
        run.stop_writers.set()
        run.stop_workers.set()
        for t in writers + workers:
            t.join(15)
    assert not run.errors, run.errors[:10]
    assert not missing, f"{len(missing)} acknowledged enqueues never delivered (of {len(want)}): {sorted(missing)[:10]}"
    markers = run.markers()
    for wid, mids in acked.items():
        assert markers.get(wid) == mids, f"acknowledged write {wid} lost its mutation: {markers.get(wid)}"
    delivered = set(run.deliveries)
    half = [wid for wid, mids in markers.items() if not set(mids) <= delivered]
    assert not half, f"writes applied without their enqueues delivered: {half[:10]}"
    orphans = delivered - {mid for mids in markers.values() for mid in mids}
    assert not orphans, f"messages delivered whose write is not in the database: {sorted(orphans)[:10]}"
    applied_unacked = [wid for wid in run.unacked if wid in markers]
    assert len(want) > 10 * kills, (len(want), kills)
    dups = sum(n - 1 for n in run.deliveries.values())
    print(f"\nqueue SIGKILL: {kills} kills; {len(want)} acknowledged enqueues in {len(acked)} atomic writes, "
          f"all {len(want & delivered)} delivered ({len(delivered)} distinct incl. {len(applied_unacked)} "
          f"unacknowledged writes that were applied, of {len(run.unacked)} unacknowledged); "
          f"{dups} duplicate deliveries, {recovered} in-flight made ready on restarts, {run.acks} acks; "
          f"drain after the last restart {drain_s:.1f} s; none half-applied")


def test_bank_transfers_conserve_money(daemon):
    accounts, clients = 50, 8
    seconds = os.environ.get("BANK_SECONDS", "6")
    setup = f'''const kv = await Deno.openKv(Deno.args[0]);
    let op = kv.atomic(); for (let i = 0; i < {accounts}; i++) op = op.set(["bank", i], 100);
    await op.commit(); kv.close();'''
    path = daemon.workdir / "bank_setup.ts"
    path.write_text(setup)
    assert run_deno(["run", "--unstable-kv", "-A", str(path), daemon.url]).returncode == 0
    procs = [subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "bank_client.ts"), daemon.url,
                               f"c{i}", str(accounts), seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for i in range(clients)]
    samples, stop = [], threading.Event()

    def sample():
        # RSS (KiB) and open fds of the daemon every SAMPLE_SECONDS (soak).
        while not stop.is_set():
            status = open(f"/proc/{daemon.proc.pid}/status").read()
            rss = int(status.split("VmRSS:")[1].split()[0])
            samples.append((round(time.time()), rss, len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))))
            stop.wait(float(os.environ.get("SAMPLE_SECONDS", "10")))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=int(seconds) + 120)
        assert p.returncode == 0, err
        results[f"c{i}"] = json.loads(out.strip().splitlines()[-1])
    verify = f'''const kv = await Deno.openKv(Deno.args[0]);
    let total = 0; for await (const e of kv.list({{ prefix: ["bank"] }})) total += e.value;
    const logs = {{}}; for await (const e of kv.list({{ prefix: ["banklog"] }})) logs[e.key[1]] = (logs[e.key[1]] ?? 0) + 1;
    console.log(JSON.stringify({{ total, logs }})); kv.close();'''
    path = daemon.workdir / "bank_verify.ts"
    path.write_text(verify)
    r = run_deno(["run", "--unstable-kv", "-A", str(path), daemon.url])
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    assert state["total"] == accounts * 100, "money is conserved"
    for c, res in results.items():
        assert state["logs"].get(c, 0) == res["ok"], f"{c}: every successful transfer is visible"
    stop.set()
    sampler.join()
    print("daemon samples (time, rss KiB, fds):", samples)
    if len(samples) >= 6:
        # Soak: after warm-up, memory and fds stay flat.
        warm = samples[len(samples) // 3:]
        assert max(s[2] for s in warm) <= min(s[2] for s in warm) + 8, "fd count grows"
        assert max(s[1] for s in warm) <= min(s[1] for s in warm) * 1.25 + 4096, "RSS grows"
    print("bank:", {"transfers": sum(r["ok"] for r in results.values()),
                    "conflicts": sum(r["conflicts"] for r in results.values())})

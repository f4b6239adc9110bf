"""Durability and consistency with real Deno clients: SIGTERM under load,
SIGKILL at random moments, and a bank-transfer invariant.
CRASH_KILLS and BANK_SECONDS lengthen the runs (make crash-test / make soak)."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

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

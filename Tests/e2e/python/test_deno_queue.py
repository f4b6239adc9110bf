"""Queues for Deno programs: clients/deno/queue.ts (enqueue, atomic with
enqueue, listenQueue) against kvconnectd with the real Deno CLI, one process
enqueueing and others listening; values compared byte for byte with what
Deno.Kv's own kv.set stores, and value for value with Python's denokv."""
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from denokv import open_kv
from v8serialize.jstypes import JSObject

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno

WORKER = str(ROOT / "Tests/e2e/deno/queue_worker.ts")
VALUES = str(ROOT / "Tests/e2e/deno/queue_values.ts")


@pytest.fixture
def qd(tmp_path):
    d = Daemon(tmp_path / "daemon").start()
    yield d
    if d.alive():
        d.stop(signal.SIGKILL)


class Listener:
    """queue_worker.ts listen, in its own process, writing JSON lines."""

    def __init__(self, d, out: Path, **env):
        self.out = out
        self.out.touch()
        e = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, DENO_NO_UPDATE_CHECK="1", NO_COLOR="1")
        e.update({k: str(v) for k, v in env.items()})
        self.proc = subprocess.Popen([DENO, "run", "-A", WORKER, "listen", d.url, str(out)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=e, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "listening", line + self.proc.stderr.read()

    def calls(self):
        return [json.loads(l) for l in self.out.read_text().splitlines() if l.strip()]

    def wait_for(self, pred, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            c = self.calls()
            if pred(c):
                return c
            time.sleep(0.02)
        raise AssertionError(f"condition not met within {timeout}s; calls: {self.calls()}")

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def listeners():
    started = []
    yield started
    for l in started:
        l.kill()


def deno_enqueue(d, items, **env):
    r = run_deno(["run", "-A", WORKER, "enqueue", d.url, json.dumps(items)], env_extra=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def deno_get(d, key):
    """Deno.Kv's own kv.get (the real remote client) of one key."""
    script = "const kv = await Deno.openKv(Deno.args[0]); const e = await kv.get(JSON.parse(Deno.args[1]));" \
             "console.log(JSON.stringify({ value: e.value, versionstamp: e.versionstamp })); kv.close();"
    r = run_deno(["eval", "--unstable-kv", script, d.url, json.dumps(key)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_enqueue_in_one_process_listen_in_another_with_delay(qd, listeners, tmp_path):
    l = Listener(qd, tmp_path / "calls.jsonl")
    listeners.append(l)
    sent = deno_enqueue(qd, [{"value": {"job": 1}, "delay": 800}, {"value": "now"}])
    assert len(sent["versionstamps"]) == 2 and all(len(v) == 20 for v in sent["versionstamps"])
    got = l.wait_for(lambda c: len(c) >= 2)
    by = {json.dumps(c["value"]): c for c in got}
    now, later = by['"now"'], by['{"job": 1}']
    assert now["atMs"] - sent["enqueuedAtMs"] < 800, "an undelayed message does not wait"
    assert later["atMs"] >= sent["enqueuedAtMs"] + 800, "delivered before its delay"
    assert later["atMs"] < sent["enqueuedAtMs"] + 800 + 1000, got
    time.sleep(0.5)
    assert len(l.calls()) == 2, "each message handled once"


def test_handler_throwing_twice_gets_three_attempts_at_the_delays(qd, listeners, tmp_path):
    l = Listener(qd, tmp_path / "calls.jsonl", FAIL_FIRST=2)
    listeners.append(l)
    deno_enqueue(qd, [{"value": "retry-me", "backoffSchedule": [300, 600, 600]}])
    l.wait_for(lambda c: len(c) >= 3)
    time.sleep(1.0)
    got = l.calls()
    assert [c["call"] for c in got] == [1, 2, 3], got
    gap1, gap2 = got[1]["atMs"] - got[0]["atMs"], got[2]["atMs"] - got[1]["atMs"]
    assert 300 <= gap1 < 300 + 400, gap1
    assert 600 <= gap2 < 600 + 400, gap2


def test_dead_letters_are_readable_with_deno_kv_get(qd, listeners, tmp_path):
    l = Listener(qd, tmp_path / "calls.jsonl", ALWAYS_FAIL=1)
    listeners.append(l)
    deno_enqueue(qd, [{"value": {"order": 7, "items": [1, 2]}, "backoffSchedule": [100, 100],
                       "keysIfUndelivered": [["dlq", "a"], ["dlq", 2]]}])
    l.wait_for(lambda c: len(c) >= 3)
    deadline = time.time() + 10
    while (a := deno_get(qd, ["dlq", "a"]))["value"] is None and time.time() < deadline:
        time.sleep(0.1)
    b = deno_get(qd, ["dlq", 2])
    assert a["value"] == {"order": 7, "items": [1, 2]} and b["value"] == a["value"]
    assert a["versionstamp"] == b["versionstamp"], "both keys written by one commit"
    time.sleep(0.5)
    assert len(l.calls()) == 3, "no delivery after dead-lettering"


def test_default_schedule_is_denos_and_empty_schedule_dead_letters_at_once(qd, listeners, tmp_path):
    l = Listener(qd, tmp_path / "calls.jsonl", FAIL_FIRST=1)
    listeners.append(l)
    # No backoffSchedule: Deno's default, first retry after 100 ms.
    deno_enqueue(qd, [{"value": "default"}, {"value": "once", "backoffSchedule": [], "keysIfUndelivered": [["dl1"]]}])
    got = l.wait_for(lambda c: len([x for x in c if x["value"] == "default"]) >= 2)
    d = [x for x in got if x["value"] == "default"]
    assert 100 <= d[1]["atMs"] - d[0]["atMs"] < 600, d
    deadline = time.time() + 10
    while deno_get(qd, ["dl1"])["value"] != "once" and time.time() < deadline:
        time.sleep(0.1)
    assert deno_get(qd, ["dl1"])["value"] == "once"
    assert len([x for x in l.calls() if x["value"] == "once"]) == 1


def test_atomic_enqueue_with_failing_check_enqueues_nothing(qd, listeners, tmp_path):
    l = Listener(qd, tmp_path / "calls.jsonl")
    listeners.append(l)
    r = run_deno(["run", "-A", WORKER, "atomic", qd.url])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["guardSet"] is True
    assert out["failed"] == {"ok": False}
    assert out["passed"]["ok"] is True and len(out["passed"]["versionstamp"]) == 20
    got = l.wait_for(lambda c: len(c) >= 1)
    time.sleep(0.8)
    assert [c["value"] for c in l.calls()] == ["from-passing-commit"], "the failed commit enqueued nothing"
    written = deno_get(qd, ["atomic", "written"])
    assert written == {"value": {"by": "atomic"}, "versionstamp": out["passed"]["versionstamp"]}
    assert got


def test_two_listening_processes_share_the_work_without_duplicates(qd, listeners, tmp_path):
    a = Listener(qd, tmp_path / "a.jsonl", CONCURRENCY=4, HANDLER_MS=5)
    b = Listener(qd, tmp_path / "b.jsonl", CONCURRENCY=4, HANDLER_MS=5)
    listeners.extend([a, b])
    n = 300
    deno_enqueue(qd, [{"value": i} for i in range(n)])
    deadline = time.time() + 30
    while len(a.calls()) + len(b.calls()) < n and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    va, vb = [c["value"] for c in a.calls()], [c["value"] for c in b.calls()]
    assert sorted(va + vb) == list(range(n)), "every message handled exactly once"
    assert not set(va) & set(vb)
    assert va and vb, (len(va), len(vb))
    print(f"split: {len(va)}/{len(vb)}")


def test_listener_killed_mid_handler_message_redelivered_after_its_lease(qd, listeners, tmp_path):
    first = Listener(qd, tmp_path / "first.jsonl", HANG=1, LEASE_MS=1500, CONCURRENCY=1)
    listeners.append(first)
    deno_enqueue(qd, [{"value": "survivor"}])
    assert first.proc.stdout.readline().strip() == "handling"
    leased_at = first.calls()[0]["atMs"]
    first.kill()
    second = Listener(qd, tmp_path / "second.jsonl")
    listeners.append(second)
    got = second.wait_for(lambda c: len(c) >= 1, timeout=10)
    assert got[0]["value"] == "survivor"
    # leased_at is when the handler started, a few ms after the lease began.
    assert got[0]["atMs"] >= leased_at + 1500 - 100, "not before the lease ended"
    assert got[0]["atMs"] < leased_at + 1500 + 1500, got


def test_close_stops_listen_queue_cleanly(qd, tmp_path):
    deno_enqueue(qd, [{"value": i} for i in range(5)])
    out = tmp_path / "calls.jsonl"
    env = dict(STOP_AFTER="5", CONCURRENCY="2")
    t0 = time.time()
    r = run_deno(["run", "-A", WORKER, "listen", qd.url, str(out)], env_extra=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == json.dumps({"stopped": True, "handled": 5}).replace(" ", "")
    assert time.time() - t0 < 10, "close() ends the long-polls at once"
    # All five were acknowledged: nothing is delivered to a new listener.
    m = qd.metadata()
    token, db = m["token"], m["databaseId"]
    req = urllib.request.Request(f"{qd.url}/v2/queue/lease", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token}", "x-denokv-database-id": db})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204, "nothing left: every handled message was acknowledged"


def test_errors_match_deno_kv(qd):
    r = run_deno(["run", "-A", WORKER, "errors", qd.url])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["negativeDelay"] == "TypeError: Delay must be >= 0: received -1"
    assert out["hugeDelay"] == "TypeError: Delay cannot be greater than 30 days: received 2678400000"
    assert out["nanDelay"] == "TypeError: Delay cannot be NaN"
    assert out["longSchedule"] == "TypeError: Invalid backoffSchedule, max 5 intervals allowed"
    assert out["badInterval"] == "TypeError: Invalid backoffSchedule, interval at index 1 is invalid"
    assert out["function"].startswith("TypeError: ") and "could not be cloned" in out["function"]
    assert out["symbol"].startswith("TypeError: ") and "could not be cloned" in out["symbol"]
    assert out["badKey"].startswith("TypeError: Invalid key part")
    assert out["badVersionstamp"] == "TypeError: invalid versionstamp"
    assert out["expireIn"] == "TypeError: expireIn must be a non-negative integer: received -5"
    assert out["notAPromise"].startswith("TypeError: 'Deno.AtomicOperation' is not a promise")
    # Server-side limits come back as TypeErrors with the server's reason.
    assert out["hugePayload"].startswith("TypeError: "), out["hugePayload"]
    assert out["emptyKeySet"].startswith("TypeError: "), out["emptyKeySet"]
    assert out["concurrency0"].startswith("TypeError: concurrency must be")
    assert out["leaseTooShort"].startswith("TypeError: leaseMs must be")


def test_wrong_token_and_read_only_token_are_refused(tmp_path):
    ro = tmp_path / "ro-token"
    ro.write_text("read-only-token-0123456789")
    d = Daemon(tmp_path / "ro", extra_args=["--read-only-access-token-file", str(ro)]).start()
    try:
        script = ("import { openKv } from '%s';" % (ROOT / "clients/deno/queue.ts")) + """
const out = {};
try { await openKv(Deno.args[0], { accessToken: "wrong-token-0123456789" }); out.wrong = "opened"; }
catch (e) { out.wrong = `${e.name}: ${e.message}`; }
const kv = await openKv(Deno.args[0], { accessToken: "read-only-token-0123456789" });
try { await kv.enqueue(1); out.enqueue = "ok"; } catch (e) { out.enqueue = `${e.name}: ${e.message}`; }
try { await kv.listenQueue(() => {}); out.listen = "returned"; } catch (e) { out.listen = `${e.name}: ${e.message}`; }
kv.close();
console.log(JSON.stringify(out));
"""
        r = run_deno(["eval", script, d.url], timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert "401" in out["wrong"] and "invalid access token" in out["wrong"], out
        assert out["enqueue"].startswith("TypeError: ") and "read-only" in out["enqueue"], out
        assert "read-only" in out["listen"], out
    finally:
        d.stop()


def test_module_values_are_byte_identical_to_deno_kv_set(qd, tmp_path):
    """Every value type: the module's encoding (Deno's core serializer and
    the node:v8 fallback) equals the bytes Deno.Kv's kv.set stored."""
    out = tmp_path / "module.json"
    r = run_deno(["run", "--unstable-kv", "-A", VALUES, "bytes", qd.url, str(out)])
    assert r.returncode == 0, r.stderr
    module = json.loads(out.read_text())
    con = sqlite3.connect(f"file:{qd.db_path}?mode=ro", uri=True)
    rows = con.execute("SELECT key, value, encoding FROM entries").fetchall()
    con.close()
    stored = {}
    for key, value, enc in rows:
        parts = bytes(key).split(b"\x00")
        if parts[0] == b"\x02qv":
            stored[parts[1][1:].decode()] = (bytes(value).hex(), enc)
    names = module["values"].keys()
    assert len(names) >= 45 and set(names) == set(stored), set(names) ^ set(stored)
    bad = {}
    for name, m in module["values"].items():
        value_hex, enc = stored[name]
        for codec in ("core", "node"):
            if (m["encoding"], m[codec]) != (enc, value_hex):
                bad[f"{codec}:{name}"] = f"module {m['encoding']} {m[codec]} vs kv.set {enc} {value_hex}"
    assert not bad, json.dumps(bad, indent=1)
    assert stored["topbytes"] == ("0007", 3) and stored["kvu64"][1] == 2
    print("codec in use:", module["codec"])


def test_every_value_type_roundtrips_through_listener_and_dead_letter(qd):
    r = run_deno(["run", "--unstable-kv", "-A", VALUES, "roundtrip", qd.url], timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    bad = {k: v for k, v in out.items() if v != "ok"}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    assert len(out) >= 2 * 45


def test_python_and_module_read_each_others_messages(qd):
    # Python enqueues, the module's listener receives.
    from datetime import datetime as dt, timezone
    from v8serialize.jstypes import JSUndefined
    py = [JSObject(a=1, b=[2, "x"]), {"k": 1}, {1, 2}, 2**70, b"\x00\x01", JSUndefined, None, -0.0,
          dt(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "héllo"]

    async def put():
        kv = await open_kv(qd.url, access_token=TOKEN)
        async with kv:
            for v in py:
                await kv.enqueue(v, retry_delays=[])
    asyncio.run(put())
    r = run_deno(["run", "-A", VALUES, "receive", qd.url, str(len(py))], timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"a": 1, "b": [2, "x"]}, {"$map": [["k", 1]]}, {"$set": [1, 2]}, {"$bigint": str(2**70)},
        {"$arraybuffer": [0, 1]}, {"$undefined": True}, None, 0, {"$date": 1704164645000}, "héllo"]
    # The module enqueues (dead-lettered at once by a failing listener), Python
    # reads the dead letters. Python's v8serialize reads V8 format <= 15 only
    # (also not what Deno's own kv.set writes since V8 14.9): v8FormatVersion 15.
    items = [{"value": v, "backoffSchedule": [], "keysIfUndelivered": [["fromdeno", i]]}
             for i, v in enumerate([{"x": [1, 2]}, "text", 3.5, True, None])]
    deno_enqueue(qd, items, V8_FORMAT_VERSION="15")
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, ALWAYS_FAIL="1", STOP_AFTER="0")
    p = subprocess.Popen([DENO, "run", "-A", WORKER, "listen", qd.url, "/dev/null"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def read():
            kv = await open_kv(qd.url, access_token=TOKEN)
            async with kv:
                for _ in range(200):
                    got = [await kv.get(("fromdeno", i)) for i in range(5)]
                    if all(e is not None for _, e in got):
                        return [e.value for _, e in got]
                    await asyncio.sleep(0.05)
        got = asyncio.run(read())
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert got is not None, "dead letters not written"
    assert list(got[0].keys()) == ["x"] and [got[0]["x"][i] for i in range(2)] == [1, 2]
    assert got[1:] == ["text", 3.5, True, None]

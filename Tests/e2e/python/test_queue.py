"""Queue delivery end to end: Python's denokv client enqueues, the Deno
example receiver (examples/queue-webhook-receiver.ts) gets the webhook
deliveries, the Deno CLI reads dead letters, pull workers use the JSON
endpoints. Delays are a few hundred milliseconds."""
import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from denokv import open_kv
from v8serialize.jstypes import JSObject

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno

RECEIVER = ROOT / "examples/queue-webhook-receiver.ts"
SECRET = "e2e-webhook-secret-0123456789"


class Receiver:
    """The example webhook receiver, on a free port, writing JSON lines to a file."""

    def __init__(self, workdir: Path, **env):
        self.out = Path(workdir) / f"deliveries-{time.monotonic_ns()}.jsonl"
        self.out.touch()
        e = dict(os.environ, QUEUE_WEBHOOK_SECRET=SECRET, PORT="0", OUT=str(self.out),
                 DENO_NO_UPDATE_CHECK="1", NO_COLOR="1")
        e.update({k: str(v) for k, v in env.items()})
        self.proc = subprocess.Popen([DENO, "run", "--allow-net", "--allow-env", "--allow-read", "--allow-write",
                                      str(RECEIVER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=e, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("receiver did not start: " + self.proc.stderr.read())
        self.port = json.loads(line)["listening"]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/queue"

    def deliveries(self):
        return [json.loads(l) for l in self.out.read_text().splitlines() if l.strip()]

    def wait_for(self, pred, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = self.deliveries()
            if pred(d):
                return d
            time.sleep(0.02)
        raise AssertionError(f"condition not met within {timeout}s; deliveries: {self.deliveries()}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        if isinstance(t, Daemon):
            if t.alive():
                t.stop(signal.SIGKILL)
        else:
            t.stop()


def push_daemon(workdir, receiver, cleanup, name="daemon", extra=()):
    secret_file = Path(workdir) / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    d = Daemon(Path(workdir) / name, extra_args=[
        "--queue-webhook-url", receiver.url, "--queue-webhook-secret-file", str(secret_file),
        "--queue-webhook-timeout-ms", "3000", *extra])
    cleanup.append(d)
    return d.start()


def enqueue(url, *messages):
    """messages: (value, kwargs) pairs, enqueued with Python's denokv client."""
    async def body():
        kv = await open_kv(url, access_token=TOKEN)
        async with kv:
            for value, kw in messages:
                await kv.enqueue(value, **kw)
    asyncio.run(body())


def test_delayed_message_arrives_after_deadline_not_before(workdir, cleanup):
    r = Receiver(workdir)
    cleanup.append(r)
    d = push_daemon(workdir, r, cleanup)
    when = datetime.now(timezone.utc) + timedelta(milliseconds=700)
    deadline_ms = int(when.timestamp() * 1000)
    # A Python dict is sent as a JS Map; JSObject is a plain object.
    payload = JSObject(job=1, tags=["a", "b"], n=2.5, big=2**70, bytes=b"\x00\x01", none=None, m={"k": 1})
    enqueue(d.url, (payload, dict(delivery_time=when)))
    time.sleep(0.3)
    assert r.deliveries() == [], "delivered before its deadline"
    got = r.wait_for(lambda x: len(x) >= 1)[0]
    assert got["receivedAtMs"] >= deadline_ms
    assert got["receivedAtMs"] - deadline_ms < 1000, got
    assert got["attempt"] == 1 and got["databaseId"] == d.metadata()["databaseId"]
    assert got["value"] == {"job": 1, "tags": ["a", "b"], "n": 2.5, "big": {"$bigint": str(2**70)},
                            "bytes": {"$arraybuffer": [0, 1]}, "none": None, "m": {"$map": [["k", 1]]}}, got
    time.sleep(0.5)
    assert len(r.deliveries()) == 1, "acknowledged: delivered once"
    print(f"deadline -> delivery: {got['receivedAtMs'] - deadline_ms} ms")


def test_receiver_failing_twice_sees_three_attempts_at_the_delays(workdir, cleanup):
    r = Receiver(workdir, FAIL_FIRST=2)
    cleanup.append(r)
    d = push_daemon(workdir, r, cleanup)
    enqueue(d.url, ("retry-me", dict(retry_delays=[0.3, 0.6, 0.6])))
    got = r.wait_for(lambda x: len(x) >= 3)
    time.sleep(1.0)
    got = r.deliveries()
    assert [g["attempt"] for g in got] == [1, 2, 3], got
    assert len({g["id"] for g in got}) == 1
    assert [g["answered"] for g in got] == [500, 500, 200]
    gap1 = got[1]["receivedAtMs"] - got[0]["receivedAtMs"]
    gap2 = got[2]["receivedAtMs"] - got[1]["receivedAtMs"]
    assert 300 <= gap1 < 300 + 400, gap1
    assert 600 <= gap2 < 600 + 400, gap2
    assert all(g["value"] == "retry-me" for g in got)


def test_always_failing_receiver_leaves_dead_letters_readable_by_deno(workdir, cleanup):
    r = Receiver(workdir, ALWAYS_FAIL=1)
    cleanup.append(r)
    d = push_daemon(workdir, r, cleanup)
    enqueue(d.url, (JSObject(order=7, items=[1, 2]),
                    dict(retry_delays=[0.1, 0.1], dead_letter_keys=[("dlq", "a"), ("dlq", "b")])))
    r.wait_for(lambda x: len(x) >= 3)
    script = Path(workdir) / "read_dlq.ts"
    script.write_text("""
const kv = await Deno.openKv(Deno.args[0]);
const a = await kv.get(["dlq", "a"]);
const b = await kv.get(["dlq", "b"]);
console.log(JSON.stringify({ a: a.value, b: b.value, same: a.versionstamp === b.versionstamp, vs: a.versionstamp }));
kv.close();
""")
    deadline = time.time() + 10
    while True:
        res = run_deno(["run", "--unstable-kv", "-A", str(script), d.url])
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        if out["a"] is not None or time.time() > deadline:
            break
        time.sleep(0.1)
    assert out["a"] == {"order": 7, "items": [1, 2]}
    assert out["b"] == {"order": 7, "items": [1, 2]}
    assert out["same"] and out["vs"]
    time.sleep(0.5)
    assert [g["attempt"] for g in r.deliveries()] == [1, 2, 3], "no delivery after dead-lettering"


def test_empty_schedule_is_one_attempt_then_dead_letter(workdir, cleanup):
    r = Receiver(workdir, ALWAYS_FAIL=1)
    cleanup.append(r)
    d = push_daemon(workdir, r, cleanup)
    enqueue(d.url, ("once", dict(retry_delays=[], dead_letter_keys=[("dlq1",)])))
    r.wait_for(lambda x: len(x) >= 1)

    async def read():
        kv = await open_kv(d.url, access_token=TOKEN)
        async with kv:
            for _ in range(100):
                _, e = await kv.get(("dlq1",))
                if e is not None:
                    return e.value
                await asyncio.sleep(0.05)
    assert asyncio.run(read()) == "once"
    time.sleep(0.3)
    assert len(r.deliveries()) == 1


def data_token(d):
    m = d.metadata()
    return m["token"], m["databaseId"]


def queue_call(d, token, db, op, body):
    req = urllib.request.Request(f"{d.url}/v2/queue/{op}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "x-denokv-database-id": db,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_two_concurrent_pull_workers_get_distinct_messages(workdir, cleanup):
    d = Daemon(Path(workdir) / "pull")
    cleanup.append(d)
    d.start()
    n = 30
    enqueue(d.url, *[(JSObject(n=i), dict(retry_delays=[])) for i in range(n)])
    token, db = data_token(d)
    seen = {0: [], 1: []}

    def worker(w):
        while True:
            status, body = queue_call(d, token, db, "lease", {"waitMs": 300, "visibilityTimeoutMs": 10000})
            if status == 204:
                return
            assert status == 200, body
            seen[w].append(body["messageId"])
            time.sleep(0.01)
            assert queue_call(d, token, db, "ack", {"id": body["id"]})[0] == 200

    threads = [threading.Thread(target=worker, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen[0]) + len(seen[1]) == n
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] and seen[1], seen
    # Long-poll: a lease waiting before the enqueue gets the message when it is due.
    result = {}
    t = threading.Thread(target=lambda: result.update(r=queue_call(d, token, db, "lease", {"waitMs": 5000})))
    t.start()
    time.sleep(0.2)
    enqueue(d.url, ("late", dict(delivery_time=datetime.now(timezone.utc) + timedelta(milliseconds=300))))
    t.join(10)
    assert result["r"][0] == 200 and result["r"][1]["attempt"] == 1
    print(f"worker split: {len(seen[0])}/{len(seen[1])}")


def test_kill_9_with_messages_in_flight_all_delivered_after_restart(workdir, cleanup):
    slow = Receiver(workdir, DELAY_MS=5000, ALWAYS_FAIL=0)
    cleanup.append(slow)
    d = push_daemon(workdir, slow, cleanup, extra=["--queue-concurrency", "4", "--queue-webhook-timeout-ms", "10000"])
    n = 10
    enqueue(d.url, *[(JSObject(n=i), dict(retry_delays=[0.1])) for i in range(n)])
    slow.wait_for(lambda x: len(x) >= 4)
    d.stop(signal.SIGKILL)
    slow.stop()

    fast = Receiver(workdir)
    cleanup.append(fast)
    secret_file = Path(workdir) / "webhook.secret"
    d.extra_args = ["--queue-webhook-url", fast.url, "--queue-webhook-secret-file", str(secret_file)]
    d.start()
    got = fast.wait_for(lambda x: len({g["value"]["n"] for g in x}) >= n)
    assert {g["value"]["n"] for g in got} == set(range(n))
    assert "queue_ready_again=4" in d.log(), "the 4 in-flight messages were made ready on start"

    async def count():
        for _ in range(100):
            # All acknowledged: nothing left to deliver.
            if len(fast.deliveries()) >= n:
                return True
            await asyncio.sleep(0.05)
    assert asyncio.run(count())
    time.sleep(0.5)
    assert len(fast.deliveries()) == n, "each message delivered once after the restart"


def test_node_v8_deserialize_decodes_deno_and_python_payloads(workdir, cleanup):
    """Queue payloads are V8 values written by the client's serializer (Deno's
    is the one behind kv.set and kv.enqueue). Deno and Python store one value
    of each type; node:v8's deserialize must give what Deno's kv.get gives."""
    import sqlite3
    from datetime import datetime as dt
    from v8serialize.jstypes import JSMap, JSRegExp, JSSet, JSUint8Array, JSUndefined
    d = Daemon(Path(workdir) / "compat")
    cleanup.append(d)
    d.start()
    script = ROOT / "Tests/e2e/deno/v8_compat.ts"
    w = run_deno(["run", "--unstable-kv", "-A", str(script), "write", d.url])
    assert w.returncode == 0, w.stderr
    py_values = {
        "str": "héllo", "int": 42, "float": 2.5, "bigint": 2**70, "bool": True, "none": None,
        "undefined": JSUndefined, "list": [1, "a"], "object": JSObject(a=1, b=[2]), "dict": {"k": 1},
        "set": {1, 2}, "datetime": dt(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "bytes": b"\x00\x01",
        "uint8array": JSUint8Array(b"\x01\x02"), "regexp": JSRegExp.from_python_pattern(__import__("re").compile("ab+c", __import__("re").I)),
    }

    async def put():
        kv = await open_kv(d.url, access_token=TOKEN)
        async with kv:
            for name, v in py_values.items():
                await kv.set(("v8compat", "python", name), [v])
    asyncio.run(put())
    con = sqlite3.connect(f"file:{d.db_path}?mode=ro", uri=True)
    rows = con.execute("SELECT hex(key), hex(value) FROM entries WHERE encoding = 1").fetchall()
    con.close()
    raw = Path(workdir) / "raw.json"
    raw.write_text(json.dumps([{"key": k.lower(), "value": v.lower()} for k, v in rows]))
    c = run_deno(["run", "--unstable-kv", "-A", str(script), "check", d.url, str(raw)])
    assert c.returncode == 0, c.stderr
    result = json.loads(c.stdout)
    bad = {k: v for k, v in result.items() if v != "ok"}
    print("node:v8 deserialize vs Deno's own decoding:", json.dumps(bad, indent=1, ensure_ascii=False))
    must = ["string", "unicode", "int", "float", "nan", "negzero", "bigint", "hugebigint", "null", "undefined",
            "array", "object", "map", "set", "date", "regexp", "arraybuffer", "cyclic"]
    for name in must:
        assert result.get(f"deno:{name}") == "ok", (name, result.get(f"deno:{name}"))
    for name in ["str", "int", "float", "bigint", "none", "list", "object", "dict", "set", "datetime", "bytes"]:
        assert result.get(f"python:{name}") == "ok", (name, result.get(f"python:{name}"))
    assert len(result) >= len(py_values) + 30


def test_queue_settings_are_validated_and_the_secret_never_printed(workdir):
    from conftest import BIN
    token = Path(workdir) / "token"
    token.write_text(TOKEN)
    secret = Path(workdir) / "secret"
    secret.write_text(SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
    base = [BIN, "check-config", "--access-token-file", str(token)]
    r = subprocess.run(base + ["--queue-webhook-url", "http://127.0.0.1:9/q"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "queue_webhook_secret_file" in r.stderr, r.stderr
    r = subprocess.run(base + ["--queue-webhook-url", "ftp://x"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "queue_webhook_url" in r.stderr
    env2 = dict(env, KVCONNECTD_QUEUE_CONCURRENCY="3", KVCONNECTD_QUEUE_WEBHOOK_SECRET_FILE=str(secret))
    r = subprocess.run(base + ["--queue-webhook-url", "http://127.0.0.1:9/q"], capture_output=True, text=True, env=env2)
    assert r.returncode == 0, r.stderr
    assert "queue_webhook_url = http://127.0.0.1:9/q" in r.stdout
    assert "queue_concurrency = 3" in r.stdout
    assert "queue_visibility_timeout_ms = 30000" in r.stdout
    assert "queue_max_leases = 10" in r.stdout
    r = subprocess.run(base + ["--queue-max-leases=-1"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "queue_max_leases" in r.stderr, r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_sighup_reloads_the_webhook_url(workdir, cleanup):
    first, second = Receiver(workdir), Receiver(workdir)
    cleanup.extend([first, second])
    secret_file = Path(workdir) / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    cfg = Path(workdir) / "queue.yaml"
    cfg.write_text(f"queue_webhook_url: {first.url}\nqueue_webhook_secret_file: {secret_file}\n")
    d = Daemon(Path(workdir) / "reload", extra_args=["--config", str(cfg)])
    cleanup.append(d)
    d.start()
    enqueue(d.url, ("to-first", {}))
    first.wait_for(lambda ds: len(ds) == 1)
    cfg.write_text(f"queue_webhook_url: {second.url}\nqueue_webhook_secret_file: {secret_file}\n")
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.time() + 10
    while "reloaded queue webhook settings" not in d.log() and time.time() < deadline:
        time.sleep(0.05)
    enqueue(d.url, ("to-second", {}))
    got = second.wait_for(lambda ds: len(ds) == 1)
    assert len(first.deliveries()) == 1 and got[0]


class KeepAliveReceiver:
    """An HTTP/1.1 receiver that answers 200 and records, per delivery, the
    client's (address, port): one port per kept-alive connection."""

    def __init__(self):
        import http.server
        import socketserver
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                seen.append((self.client_address[1], body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = S(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/queue"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_connections_are_kept_alive(workdir, cleanup):
    r = KeepAliveReceiver()
    cleanup.append(r)
    d = push_daemon(workdir, r, cleanup, extra=["--queue-concurrency", "4"])
    n = 200
    enqueue(d.url, *[(i, dict(retry_delays=[])) for i in range(n)])
    deadline = time.time() + 20
    while len(r.seen) < n and time.time() < deadline:
        time.sleep(0.05)
    # Payloads, not message ids: an id can be reused once its message is gone.
    assert len({body for _, body in r.seen}) == n == len(r.seen), len(r.seen)
    ports = {p for p, _ in r.seen}
    assert len(ports) <= 4, f"{len(ports)} connections for {n} deliveries: not kept alive"


def test_slow_receiver_times_out_as_a_failed_attempt(workdir, cleanup):
    slow = Receiver(workdir, DELAY_MS=1500)
    cleanup.append(slow)
    d = push_daemon(workdir, slow, cleanup, extra=["--queue-webhook-timeout-ms", "300"])
    t0 = time.time()
    enqueue(d.url, ("slow", dict(retry_delays=[0.1], dead_letter_keys=[("timedout",)])))

    async def read():
        kv = await open_kv(d.url, access_token=TOKEN)
        async with kv:
            for _ in range(200):
                _, e = await kv.get(("timedout",))
                if e is not None:
                    return e.value, time.time() - t0
                await asyncio.sleep(0.05)
        return None, None
    value, took = asyncio.run(read())
    assert value == "slow", "two timed-out attempts dead-letter the message"
    # Two attempts of 300 ms + 100 ms backoff, not two of the receiver's 1.5 s.
    assert took < 2.5, took
    assert "Timeout was reached" in d.log(), d.log()[-2000:]

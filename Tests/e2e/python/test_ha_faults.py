"""Fault tests on PostgreSQL (docs/ha.md), real processes on loopback and a
private veth link: a network partition between one daemon and PostgreSQL
(network namespace), one of two daemons killed behind HAProxy under load
with a watch open, and (make fault-test) PostgreSQL stopped for 30 s.
Writers commit ["w", id, i] together with sum(["counter"], 1): every
acknowledged write must be present with its versionstamp, and the counter
must equal the number of writes present (sums applied exactly once)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, DENO, ROOT, TOKEN, Daemon
from test_ha import HA, DENO_HA, Clusters, check_exactly_once, dump, finish_writers, ha, kill_writers, start_writers

NETNS = ROOT / "scripts/netns-partition.sh"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(not any(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup")),
                                reason="PostgreSQL server binaries not installed")


def get(url, timeout=30):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def acks_between(results, ids, t0, t1):
    return sum(1 for w in ids for l in results[w] if l["ok"] and t0 <= l["t"] <= t1)


def snapshot_read_body(start: bytes, end: bytes, limit: int) -> bytes:
    def field(n, b):
        return bytes([n << 3 | 2, len(b)]) + b
    return field(1, field(1, start) + field(2, end) + bytes([3 << 3 | 0, limit]))


def netns_available():
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.skipif(not netns_available(), reason="needs root and iproute2 (ip netns)")
def test_partition_between_one_daemon_and_postgres(tmp_path):
    n = os.getpid() % 200 + 20
    ns = f"kvp{os.getpid() % 100000}"
    db_host, db_ns, api_host, api_ns = f"10.213.{n}.1", f"10.213.{n}.2", f"10.214.{n}.1", f"10.214.{n}.2"
    subprocess.run(["bash", str(NETNS), "down", ns], capture_output=True)
    c = Clusters()
    procs = []
    writers = None
    try:
        subprocess.run(["bash", str(NETNS), "up", ns, db_host, db_ns, api_host, api_ns], check=True, timeout=30)
        p = c.path("primary")
        env = dict(os.environ, PG_EXTRA_LISTEN=db_host, PG_EXTRA_HBA=f"{db_host.rsplit('.', 1)[0]}.0/30")
        r = subprocess.run(["bash", str(HA), "primary", str(p)], capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == 0, r.stderr
        uri = r.stdout.strip().splitlines()[-1]
        port = (p / "port").read_text().strip()
        a = Daemon(tmp_path / "a", database=uri).start()
        procs.append(a)
        # Daemon B inside the namespace: PostgreSQL over the database pair,
        # clients over the API pair. tcp_user_timeout: a query on a cut link
        # fails after 2 s instead of waiting for TCP's retransmission timeout.
        b_uri = f"postgresql://postgres@{db_host}:{port}/kvtest?tcp_user_timeout=2000&connect_timeout=3"
        (tmp_path / "tok").write_text(TOKEN)
        b_log = tmp_path / "b.log"
        env_b = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
        b = subprocess.Popen(["ip", "netns", "exec", ns, BIN, "serve", "--listen", f"{api_ns}:0", "--database", b_uri,
                              "--access-token-file", str(tmp_path / "tok")],
                             stdout=open(b_log, "wb"), stderr=subprocess.STDOUT, env=env_b)
        procs.append(b)
        deadline = time.time() + 30
        b_url = None
        while time.time() < deadline and not b_url:
            m = re.search(r"listen=" + re.escape(api_ns) + r":(\d+)", b_log.read_text(errors="replace"))
            b_url = f"http://{api_ns}:{m.group(1)}" if m else None
            assert b.poll() is None, b_log.read_text()
            time.sleep(0.1)
        assert b_url, b_log.read_text()
        assert get(b_url + "/readyz")[0] == 200
        # A data-plane token from B for raw requests during the partition.
        req = urllib.request.Request(b_url + "/", data=b'{"supportedVersions":[3]}', method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        meta = json.loads(urllib.request.urlopen(req, timeout=10).read())
        stop, writers = start_writers([a.url, b_url], 1, tmp_path)
        time.sleep(3)
        subprocess.run(["bash", str(NETNS), "cut", ns], check=True)
        cut_at = time.time() * 1000
        # B notices: /readyz fails with Retry-After, data-path calls get 503 + Retry-After.
        deadline = time.time() + 30
        status = None
        while time.time() < deadline:
            status, headers, body = get(b_url + "/readyz")
            if status == 503:
                break
            time.sleep(0.5)
        assert status == 503 and "retry-after" in headers, (status, body)
        readyz_failed_ms = time.time() * 1000 - cut_at
        status, headers, body = get_post(b_url + "/v2/snapshot_read", snapshot_read_body(b"\x02w", b"\x02x", 1), meta)
        assert status == 503 and "retry-after" in headers, (status, body)
        assert get(a.url + "/readyz")[0] == 200
        # PostgreSQL ends B's abandoned transaction (idle_in_transaction_session_timeout
        # = 5s, docs/ha.md) and A's writes go on.
        time.sleep(9)
        subprocess.run(["bash", str(NETNS), "heal", ns], check=True)
        healed_at = time.time() * 1000
        deadline = time.time() + 60
        while time.time() < deadline and get(b_url + "/readyz", timeout=10)[0] != 200:
            time.sleep(0.5)
        assert get(b_url + "/readyz")[0] == 200
        ready_again_ms = time.time() * 1000 - healed_at
        time.sleep(4)
        results = finish_writers(stop, writers)
        # A ("0") kept acknowledging during the partition; B ("1") resumed by itself after it.
        during_a = acks_between(results, ["0"], cut_at + 500, healed_at)
        after_b = acks_between(results, ["1"], healed_at, time.time() * 1000)
        assert during_a > 0 and after_b > 0, (during_a, after_b)
        acked, present = check_exactly_once(results, dump(a.url))
        print(f"\nPARTITION: /readyz on the cut daemon failed {readyz_failed_ms:.0f} ms after the cut, ready again "
              f"{ready_again_ms:.0f} ms after healing; other daemon acknowledged {during_a} writes during the cut; "
              f"acknowledged {acked}, present {present}")
    finally:
        for d in procs:
            if isinstance(d, Daemon):
                if d.alive():
                    d.stop(signal.SIGKILL)
            elif d.poll() is None:
                d.kill()
                d.wait()
        kill_writers(writers)
        subprocess.run(["bash", str(NETNS), "down", ns], capture_output=True)
        c.close()


def get_post(url, body, meta):
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {meta['token']}", "Content-Type": "application/x-protobuf",
        "x-denokv-database-id": meta["databaseId"]})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy not installed")
def test_haproxy_one_daemon_killed_under_load_watch_reconnects(daemons, tmp_path):
    a, b = daemons(2)
    front = free_port()
    cfg = (ROOT / "config/haproxy.cfg").read_text()
    cfg = cfg.replace("127.0.0.1:4500", f"127.0.0.1:{front}")
    cfg = cfg.replace("127.0.0.1:4512", f"127.0.0.1:{a.port}").replace("127.0.0.1:4513", f"127.0.0.1:{b.port}")
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    hp = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=open(tmp_path / "haproxy.log", "wb"),
                          stderr=subprocess.STDOUT)
    watcher = None
    writers = None
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2.5)  # first health checks
        url = f"http://127.0.0.1:{front}"
        env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, DENO_NO_UPDATE_CHECK="1", NO_COLOR="1")
        watcher = subprocess.Popen([DENO, "run", "-A", "--unstable-kv", str(DENO_HA / "watcher.ts"), url],
                                   stdout=open(tmp_path / "watch.jsonl", "w"), stderr=subprocess.STDOUT, env=env)
        stop, writers = start_writers([url], 3, tmp_path)
        time.sleep(3)
        a.stop(signal.SIGKILL)
        killed_at = time.time() * 1000
        time.sleep(6)
        results = finish_writers(stop, writers)
        final = dump(b.url)
        # The watch (through HAProxy, possibly on the killed daemon) ends on the final counter.
        deadline = time.time() + 20
        seen = []
        while time.time() < deadline:
            seen = [json.loads(l) for l in (tmp_path / "watch.jsonl").read_text().splitlines() if l.startswith("{")]
            if seen and seen[-1]["v"] == final["counter"]:
                break
            time.sleep(0.5)
        assert seen and seen[-1]["v"] == final["counter"], (seen[-3:], final["counter"])
        assert any(s["t"] > killed_at for s in seen)
        after = acks_between(results, list(results), killed_at, time.time() * 1000)
        errors = sum(1 for ls in results.values() for l in ls if not l["ok"])
        assert after > 0
        # The killed daemon's in-flight writes may be replayed by the clients.
        acked, present = check_exactly_once(results, final, replays_allowed=len(results))
        print(f"\nHAPROXY: one of two daemons killed under load; {after} writes acknowledged after the kill, "
              f"{errors} failed attempts; acknowledged {acked}, present {present}; watch ended on counter {final['counter']}")
    finally:
        if watcher and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        kill_writers(writers)
        hp.terminate()
        hp.wait(10)


@pytest.mark.skipif(os.environ.get("KVCONNECTD_FAULT_TESTS") != "1", reason="long: make fault-test")
def test_postgres_stopped_30s_under_load(tmp_path):
    c = Clusters()
    ds = []
    writers = None
    try:
        p = c.path("primary")
        uri = ha("primary", p)
        ds = [Daemon(tmp_path / n, database=uri).start() for n in ("a", "b")]
        stop, writers = start_writers([d.url for d in ds], 2, tmp_path)
        time.sleep(3)
        ha("stop-fast", p)
        stopped_at = time.time() * 1000
        time.sleep(5)
        assert all(get(d.url + "/readyz")[0] == 503 for d in ds)
        time.sleep(25)
        ha("start", p)
        started_at = time.time() * 1000
        deadline = time.time() + 60
        while time.time() < deadline and not all(get(d.url + "/readyz", timeout=10)[0] == 200 for d in ds):
            time.sleep(0.5)
        ready_ms = time.time() * 1000 - started_at
        time.sleep(5)
        results = finish_writers(stop, writers)
        resumed = [l["t"] for ls in results.values() for l in ls if l["ok"] and l["t0"] > started_at]
        assert resumed, "no write acknowledged after PostgreSQL came back"
        acked, present = check_exactly_once(results, dump(ds[0].url))
        print(f"\nPG STOPPED {(started_at - stopped_at) / 1000:.0f} s: daemons ready {ready_ms:.0f} ms after the start, "
              f"first write acknowledged {min(resumed) - started_at:.0f} ms after it; acknowledged {acked}, present {present}")
    finally:
        kill_writers(writers)
        for d in ds:
            if d.alive():
                d.stop(signal.SIGKILL)
        c.close()

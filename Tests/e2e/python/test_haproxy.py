"""The example HAProxy config (config/haproxy.cfg) in front of two daemons on
one PostgreSQL database: HTTP/2 cleartext on both sides, the Deno CLI
writes through it and reads back; the daemons' request counters show
where the requests went."""
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, run_deno

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request_count(d):
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kvconnectd_requests_total")
               and ('endpoint="snapshot_read"' in line or 'endpoint="atomic_write"' in line))


def test_deno_through_haproxy_h2c_to_two_daemons(daemons, tmp_path):
    if not shutil.which(HAPROXY) and not (ROOT / HAPROXY).exists():
        pytest.skip("haproxy not installed")
    a, b = daemons(2)
    front = free_port()
    cfg = (ROOT / "config/haproxy.cfg").read_text()
    cfg = cfg.replace("127.0.0.1:4500", f"127.0.0.1:{front}")
    cfg = cfg.replace("127.0.0.1:4512", f"127.0.0.1:{a.port}").replace("127.0.0.1:4513", f"127.0.0.1:{b.port}")
    assert f"127.0.0.1:{a.port}" in cfg and f"127.0.0.1:{b.port}" in cfg
    assert re.search(r"bind 127\.0\.0\.1:\d+ proto h2", cfg) and "proto h2" in cfg.split("backend", 1)[1]
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2.5)  # first health checks (inter 2s) mark both servers up
        before = (request_count(a), request_count(b))
        script = tmp_path / "through.ts"
        script.write_text("""
        const kv = await Deno.openKv(Deno.args[0]);
        for (let i = 0; i < 40; i++) await kv.set(["lb", i], { i });
        let n = 0, ok = true;
        for (let i = 0; i < 40; i++) { const e = await kv.get(["lb", i]); ok &&= (e.value as any)?.i === i; n++; }
        const listed = [];
        for await (const e of kv.list({ prefix: ["lb"] })) listed.push(e.key[1]);
        kv.close();
        console.log(JSON.stringify({ n, ok, listed: listed.length }));
        """)
        r = run_deno(["run", "--unstable-kv", "-A", str(script), f"http://127.0.0.1:{front}"], timeout=120)
        assert r.returncode == 0, r.stderr + "\nhaproxy: " + (proc.stdout.read1(20000).decode() if proc.poll() is not None else "")
        assert r.stdout.strip().endswith('{"n":40,"ok":true,"listed":40}'), r.stdout
        after = (request_count(a), request_count(b))
        # The 120 data-path requests went through the daemons (and nowhere else).
        assert (after[0] - before[0]) + (after[1] - before[1]) >= 81
        print("data-path requests per daemon:", after[0] - before[0], after[1] - before[1])
    finally:
        proc.terminate()
        proc.wait(10)

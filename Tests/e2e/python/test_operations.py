"""Operator-facing behaviour: systemd notify protocol, unit file, install
tree, several databases with scoped tokens, SIGHUP token reload."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, DENO, ROOT, Daemon, run_deno


# ---- systemd -------------------------------------------------------------

def test_notify_ready_watchdog_and_stopping(tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(20)
    d = Daemon(tmp_path / "d", env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"}).start()
    try:
        msg = s.recv(4096).decode()
        assert "READY=1" in msg and f"MAINPID={d.proc.pid}" in msg
        assert s.recv(4096).decode() == "WATCHDOG=1"
        d.proc.send_signal(signal.SIGTERM)
        seen = []
        while "STOPPING=1" not in seen:
            seen.append(s.recv(4096).decode())
        assert d.proc.wait(timeout=15) == 0
    finally:
        d.stop()
        s.close()


def test_abstract_notify_socket(tmp_path):
    name = f"kvconnectd-test-{os.getpid()}-{time.time()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(20)
    d = Daemon(tmp_path / "d", env={"NOTIFY_SOCKET": "@" + name}).start()
    try:
        assert "READY=1" in s.recv(4096).decode()
    finally:
        d.stop()
        s.close()


def install(tmp_path, destdir=""):
    prefix = tmp_path / "usr"
    args = ["make", "-s", "install", f"BIN={BIN}", f"DESTDIR={destdir}", f"PREFIX={prefix}",
            f"SYSCONFDIR={tmp_path / 'etc'}", f"UNITDIR={tmp_path / 'unit'}"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return prefix


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    install(tmp_path)
    unit = tmp_path / "unit/kvconnectd.service"
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = unit.read_text()
    for line in ["Type=notify", "DynamicUser=yes", "StateDirectory=kvconnectd", "LoadCredential=access-token:",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "Restart=on-failure", "WatchdogSec="]:
        assert line in text, line


def test_make_install_into_destdir_and_uninstall(tmp_path):
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-s", "install", f"BIN={BIN}", f"DESTDIR={dest}", "PREFIX=/usr/local"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["etc/kvconnectd/kvconnectd.yaml", "etc/kvconnectd/kvconnectd.yaml.example",
                     "lib/systemd/system/kvconnectd.service", "usr/local/bin/kvconnectd",
                     "usr/local/share/doc/kvconnectd/ARCHITECTURE.md", "usr/local/share/doc/kvconnectd/README.md",
                     "usr/local/share/doc/kvconnectd/clients/deno/queue.ts",
                     "usr/local/share/doc/kvconnectd/clients/deno/wire.ts",
                     "usr/local/share/doc/kvconnectd/queues.md",
                     "usr/local/share/man/man1/kvconnectd.1"]
    assert os.access(dest / "usr/local/bin/kvconnectd", os.X_OK)
    assert "ExecStart=/usr/local/bin/kvconnectd serve" in (dest / "lib/systemd/system/kvconnectd.service").read_text()
    assert "check-config" in (dest / "usr/local/share/man/man1/kvconnectd.1").read_text()
    # The installed Deno queue module stands alone (no imports outside its folder, none remote).
    c = subprocess.run([DENO, "check", str(dest / "usr/local/share/doc/kvconnectd/clients/deno/queue.ts")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, NO_COLOR="1"))
    assert c.returncode == 0, c.stderr
    r = subprocess.run(["make", "-s", "uninstall", f"DESTDIR={dest}", "PREFIX=/usr/local"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert left == ["etc/kvconnectd/kvconnectd.yaml"], left


# ---- several databases, scoped tokens, reload ---------------------------

A_RW = "tenant-a-read-write-token"
A_RO = "tenant-a-read-only-token"
B_RW = "tenant-b-read-write-token"


def multi_config(tmp_path, b_token=B_RW):
    (tmp_path / "a.token").write_text(A_RW + "\n")
    (tmp_path / "b.token").write_text(b_token)
    ro_hash = hashlib.sha256(A_RO.encode()).hexdigest()
    cfg = tmp_path / "multi.yaml"
    cfg.write_text(f"""
databases:
  - name: a
    path: {tmp_path}/a.sqlite3
    tokens:
      - file: {tmp_path}/a.token
      - sha256: {ro_hash}
        scope: read-only
  - name: b
    path: {tmp_path}/b.sqlite3
    tokens:
      - file: {tmp_path}/b.token
""")
    return cfg


def meta(url, token):
    req = urllib.request.Request(url + "/", data=b'{"supportedVersions":[1,2,3]}', method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def deno(url, token, code):
    path = ROOT / ".venv" / f"snippet-{abs(hash(code))}.ts"
    path.write_text(code)
    return run_deno(["run", "--unstable-kv", "-A", str(path), url], token=token)


def test_tenants_are_isolated_and_scopes_enforced(tmp_path):
    cfg = multi_config(tmp_path)
    d = Daemon(tmp_path / "d", extra_args=["--databases-file", str(cfg)]).start()
    try:
        ma, mb, mro = meta(d.url, A_RW), meta(d.url, B_RW), meta(d.url, A_RO)
        assert ma["databaseId"] != mb["databaseId"] and mro["databaseId"] == ma["databaseId"]
        r = deno(d.url, A_RW, 'const kv = await Deno.openKv(Deno.args[0]); await kv.set(["secret"], "a-only"); kv.close();')
        assert r.returncode == 0, r.stderr
        r = deno(d.url, B_RW, 'const kv = await Deno.openKv(Deno.args[0]); console.log(JSON.stringify((await kv.get(["secret"])).value)); kv.close();')
        assert r.returncode == 0 and r.stdout.strip() == "null", r.stdout + r.stderr
        # B's data-plane token presented for A's database id: 401.
        req = urllib.request.Request(d.url + "/v2/snapshot_read", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {mb['token']}",
                                              "x-denokv-database-id": ma["databaseId"]})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
        # Read-only token (stored as a SHA-256 hash): reads and watches work, writes get 403.
        r = deno(d.url, A_RO, '''const kv = await Deno.openKv(Deno.args[0]);
            const v = (await kv.get(["secret"])).value;
            const it = kv.watch([["secret"]]).getReader(); const first = await it.read(); await it.cancel();
            let err = ""; try { await kv.set(["x"], 1); } catch (e) { err = String(e.message); }
            console.log(JSON.stringify({ v, watched: first.value[0].value, err })); kv.close();''')
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["v"] == "a-only" and out["watched"] == "a-only"
        assert "403" in out["err"] and "read-only" in out["err"]
        # check-config names both databases and masks the tokens.
        r = subprocess.run([BIN, "check-config", "--databases-file", str(cfg)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "database.a" in r.stdout and "database.b" in r.stdout
        for secret in (A_RW, A_RO, B_RW):
            assert secret not in r.stdout and secret not in d.log()
    finally:
        d.stop()


def test_sighup_reloads_tokens_and_keeps_old_config_on_error(tmp_path):
    cfg = multi_config(tmp_path)
    d = Daemon(tmp_path / "d", extra_args=["--databases-file", str(cfg)]).start()
    try:
        meta(d.url, B_RW)
        (tmp_path / "b.token").write_text("tenant-b-rotated-token-1")
        os.kill(d.proc.pid, signal.SIGHUP)
        deadline = time.time() + 10
        while "reloaded access tokens" not in d.log() and time.time() < deadline:
            time.sleep(0.1)
        assert meta(d.url, "tenant-b-rotated-token-1")["databaseId"]
        with pytest.raises(urllib.error.HTTPError) as e:
            meta(d.url, B_RW)
        assert e.value.code == 401
        # A broken config is refused; the rotated token keeps working.
        good = cfg.read_text()
        cfg.write_text(good.replace("scope: read-only", "scope: sometimes"))
        os.kill(d.proc.pid, signal.SIGHUP)
        deadline = time.time() + 10
        while "reload failed" not in d.log() and time.time() < deadline:
            time.sleep(0.1)
        assert "invalid scope 'sometimes'" in d.log()
        assert meta(d.url, "tenant-b-rotated-token-1")["databaseId"]
        assert d.alive()
    finally:
        d.stop()


def test_bad_databases_config_fails_fast(tmp_path):
    cfg = tmp_path / "bad.yaml"
    (tmp_path / "t").write_text("same-token-in-two-dbs")
    cfg.write_text(f"databases:\n  - name: a\n    path: {tmp_path}/a.db\n    tokens: [{{file: {tmp_path}/t}}]\n"
                   f"  - name: b\n    path: {tmp_path}/b.db\n    tokens: [{{file: {tmp_path}/t}}]\n")
    r = subprocess.run([BIN, "serve", "--databases-file", str(cfg), "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "opens both" in r.stderr

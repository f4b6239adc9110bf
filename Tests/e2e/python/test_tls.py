"""HTTPS on the daemon's port: a test CA and server certificate made with
openssl, curl --cacert over HTTP/1.1 and HTTP/2 (ALPN), the Deno CLI trusting
the CA (--cert) doing set/get/watch over https://, and SIGHUP reloading the
certificate and key (a broken file keeps the old ones)."""
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno

DENO_SCRIPTS = ROOT / "Tests/e2e/deno"


def make_pki(d: Path, name: str) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2",
         "-subj", f"/CN=kvconnectd e2e CA {name}"],
        ["req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "server.pem", "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


def install(pki: dict, live: Path):
    """Replaces the files the daemon reads (new inodes, like certbot renewals)."""
    for src, dst in ((pki["cert"], live / "cert.pem"), (pki["key"], live / "key.pem")):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


@pytest.fixture(scope="module")
def pkis(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    return make_pki(base / "a", "a"), make_pki(base / "b", "b")


@pytest.fixture
def tls_daemon(tmp_path, pkis):
    live = tmp_path / "live"
    live.mkdir()
    install(pkis[0], live)
    d = Daemon(tmp_path / "daemon", extra_args=["--tls-cert-file", str(live / "cert.pem"),
                                                "--tls-key-file", str(live / "key.pem")])
    d.live = live
    d.start()
    yield d
    if d.alive():
        d.stop()


def curl(args, timeout=20):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout


def wait_log(d: Daemon, text: str, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in d.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"log never contained {text!r}:\n{d.log()[-3000:]}")


def deno(ca, script, *args, timeout=120):
    return run_deno(["run", "--unstable-kv", "-A", "--cert", ca, str(script), *args], timeout=timeout)


def test_startup_log_and_curl_over_https(tls_daemon, pkis):
    ca = pkis[0]["ca"]
    assert f"https://127.0.0.1:{tls_daemon.port}" in tls_daemon.log()
    url = tls_daemon.https_url + "/healthz"
    assert curl(["--cacert", ca, "--http1.1", url]) == "200 1.1"
    assert curl(["--cacert", ca, "--http2", url]) == "200 2"
    # Without the CA the client refuses; plain HTTP on the TLS port is closed.
    assert curl(["--http2", url]).startswith("000")
    assert curl(["--max-time", "5", f"http://127.0.0.1:{tls_daemon.port}/healthz"]).startswith("000")
    assert curl(["--max-time", "5", "--http2-prior-knowledge",
                 f"http://127.0.0.1:{tls_daemon.port}/healthz"]).startswith("000")
    assert curl(["--cacert", ca, "--http1.1", url]) == "200 1.1"
    assert tls_daemon.alive()


def test_deno_set_get_watch_over_https(tls_daemon, pkis, tmp_path):
    ca = pkis[0]["ca"]
    url = tls_daemon.https_url
    script = tmp_path / "setget.ts"
    script.write_text("""
const kv = await Deno.openKv(Deno.args[0]);
await kv.set(["tls", "k"], { hello: "https" });
const got = await kv.get(["tls", "k"]);
console.log(JSON.stringify({ value: got.value, versionstamp: got.versionstamp !== null }));
kv.close();
""")
    r = deno(ca, script, url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"value": {"hello": "https"}, "versionstamp": True}

    # Without --cert the Deno CLI does not trust the test CA.
    r = run_deno(["run", "--unstable-kv", "-A", str(script), url], timeout=60)
    assert r.returncode != 0

    # watch in one process sees a change made by a second process.
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1", DENO_NO_UPDATE_CHECK="1")
    watcher = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", "--cert", ca,
                                str(DENO_SCRIPTS / "watch_print.ts"), url, "10", "tw"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    frames = queue.Queue()
    threading.Thread(target=lambda: [frames.put(json.loads(l)) for l in watcher.stdout], daemon=True).start()

    def wait_frame(want, timeout=30):
        seen = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                f = frames.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            seen.append(f)
            if f == want:
                return
        raise AssertionError(f"watch never reported {want}; saw {seen}; "
                             f"stderr: {watcher.stderr.read() if watcher.poll() is not None else '(running)'}")

    try:
        wait_frame([None])
        r = deno(ca, DENO_SCRIPTS / "kv_set.ts", url, 'tw="changed"')
        assert r.returncode == 0, r.stderr
        wait_frame(["changed"])
        r = deno(ca, DENO_SCRIPTS / "kv_set.ts", url, "tw=42")
        assert r.returncode == 0, r.stderr
        wait_frame([42])
    finally:
        watcher.kill()
        watcher.wait()
    assert tls_daemon.alive()


def test_sighup_reloads_certificate(tls_daemon, pkis):
    a, b = pkis
    url = tls_daemon.https_url + "/healthz"
    assert curl(["--cacert", a["ca"], "--http2", url]) == "200 2"

    install(b, tls_daemon.live)
    os.kill(tls_daemon.proc.pid, signal.SIGHUP)
    wait_log(tls_daemon, "reloaded TLS certificate and key")
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        assert curl(["--cacert", b["ca"], flag, url]) == f"200 {version}"
        assert curl(["--cacert", a["ca"], flag, url]).startswith("000")

    # A broken key file: the daemon keeps B's certificate and says why.
    (tls_daemon.live / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    os.kill(tls_daemon.proc.pid, signal.SIGHUP)
    wait_log(tls_daemon, "TLS reload failed")
    assert str(tls_daemon.live / "key.pem") in tls_daemon.log()
    assert tls_daemon.alive()
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        assert curl(["--cacert", b["ca"], flag, url]) == f"200 {version}"


def test_tls_settings_must_come_in_pairs(tmp_path, pkis):
    d = Daemon(tmp_path / "d", extra_args=["--tls-cert-file", pkis[0]["cert"]])
    with pytest.raises(RuntimeError, match="tls_cert_file and tls_key_file"):
        d.start()
    d2 = Daemon(tmp_path / "d2", extra_args=["--tls-cert-file", pkis[0]["cert"],
                                              "--tls-key-file", str(tmp_path / "missing.key")])
    with pytest.raises(RuntimeError, match="cannot read"):
        d2.start()

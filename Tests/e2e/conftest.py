"""Starts kvconnectd for the end-to-end tests: a free port (the daemon binds
port 0 and logs the port it got), a temp directory, cleanup by PID."""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("KVCONNECTD_BIN", str(ROOT / ".build/debug/kvconnectd"))
DENO = str(ROOT / ".venv/bin/deno")
TOKEN = "e2e-access-token-0123456789abcdef"


class Daemon:
    def __init__(self, workdir: Path, token: str = TOKEN, extra_args=(), env=None, database=None):
        self.workdir = Path(workdir)
        # A postgres:// URI (PostgreSQL backend); None = kv.sqlite3 in workdir.
        self.database = database
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.extra_args = list(extra_args)
        self.extra_env = env or {}
        self.proc = None
        self.port = None
        self.log_path = self.workdir / "daemon.log"

    @property
    def db_path(self):
        return self.workdir / "kv.sqlite3"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_url(self):
        """For a daemon started with --tls-cert-file/--tls-key-file."""
        return f"https://127.0.0.1:{self.port}"

    def start(self, port=0):
        token_file = self.workdir / "token"
        token_file.write_text(self.token)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        start_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--database", self.database or str(self.db_path),
             "--access-token-file", str(token_file), *self.extra_args],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = self.log_path.read_bytes()[start_offset:].decode(errors="replace")
            m = re.search(r'listen(?:=|":")127\.0\.0\.1:(\d+)', text)  # text or --log-format json
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("daemon did not report its port within 20 s")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError("daemon did not stop within %ss of signal %s" % (timeout, sig))
        return self.proc.returncode if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def metadata(self, versions=(1, 2, 3), token=None):
        body = json.dumps({"supportedVersions": list(versions)}).encode()
        req = urllib.request.Request(self.url + "/", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token or self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("kvconnectd")).start()
    yield d
    d.stop()


@pytest.fixture
def fresh_daemon(tmp_path):
    """A daemon of the test's own, for tests that restart or kill it."""
    d = Daemon(tmp_path / "daemon")
    yield d
    if d.alive():
        d.stop(signal.SIGKILL)


def run_deno(args, env_extra=None, timeout=180, token=TOKEN):
    env = dict(os.environ)
    env["DENO_KV_ACCESS_TOKEN"] = token
    env["DENO_NO_UPDATE_CHECK"] = "1"
    env["NO_COLOR"] = "1"
    env.update(env_extra or {})
    return subprocess.run([DENO, *args], env=env, capture_output=True, text=True, timeout=timeout)


# --- PostgreSQL: a throwaway cluster (scripts/pg-test-cluster.sh) ----------

PG_SCRIPT = ROOT / "scripts/pg-test-cluster.sh"


class PGCluster:
    """One initdb'd server per test session; a fresh database per test."""

    open_clusters = []

    def __init__(self):
        # Not under pytest's 0700 basetemp: the server runs as `postgres` when we are root.
        self.dir = Path(tempfile.mkdtemp(prefix="kvc-pg-"))
        PGCluster.open_clusters.append(self)
        r = subprocess.run(["bash", str(PG_SCRIPT), "start", str(self.dir)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("pg-test-cluster.sh start failed:\n" + r.stdout + r.stderr)
        self.uri = r.stdout.strip().splitlines()[-1]
        self.base = self.uri.rsplit("/", 1)[0]
        self.count = 0

    def psql(self, sql, db="postgres"):
        r = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", f"{self.base}/{db}", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {r.stderr}")
        return r.stdout.strip()

    def new_database(self):
        """URI of a new, empty database on the cluster."""
        self.count += 1
        name = f"kv_{os.getpid()}_{self.count}"
        self.psql(f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    def restart(self):
        r = subprocess.run(["bash", str(PG_SCRIPT), "restart", str(self.dir)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

    def stop_server(self):
        """Stops the server but keeps its data (`restart` … needs start_server)."""
        pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        cmd = [str(pgbin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, capture_output=True, timeout=60, check=True)

    def start_server(self):
        pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        port = (self.dir / "port").read_text().strip()
        opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200"
        cmd = [str(pgbin / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-w", "-o", opts, "start"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, capture_output=True, timeout=60, check=True)

    def close(self):
        if self in PGCluster.open_clusters:
            PGCluster.open_clusters.remove(self)
            subprocess.run(["bash", str(PG_SCRIPT), "stop", str(self.dir)], capture_output=True, timeout=120)
            shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _stop_leftover_clusters():
    """Whatever a fixture teardown missed (an interrupted run) is stopped at exit."""
    for c in list(PGCluster.open_clusters):
        c.close()


def pg_available():
    return PG_SCRIPT.exists() and any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture(scope="session")
def pg_cluster():
    if not pg_available():
        pytest.skip("PostgreSQL server binaries or scripts/pg-test-cluster.sh not available")
    c = PGCluster()
    yield c
    c.close()


@pytest.fixture
def pg_database(pg_cluster):
    """URI of a fresh PostgreSQL database for this test."""
    return pg_cluster.new_database()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend_daemon(request, tmp_path_factory):
    """The session daemon on each backend: the key Deno tests run against both."""
    database = None
    if request.param == "postgres":
        if not pg_available():
            pytest.skip("PostgreSQL not available")
        database = request.getfixturevalue("pg_cluster").new_database()
    d = Daemon(tmp_path_factory.mktemp(f"kvconnectd-{request.param}"), database=database).start()
    yield d
    d.stop()


@pytest.fixture
def daemons(tmp_path, pg_database):
    """Start(n): n daemons serving one fresh PostgreSQL database; stopped (SIGKILL if needed) after the test."""
    started = []

    def start(n, extra_args=(), env=None):
        for i in range(n):
            started.append(Daemon(tmp_path / f"daemon{len(started)}", database=pg_database,
                                  extra_args=extra_args, env=env).start())
        return started[-n:]

    start.database = pg_database
    yield start
    for d in started:
        if d.alive():
            d.stop(signal.SIGKILL)

"""PostgreSQL settings: the backend chosen by the database setting, SQLite
and PostgreSQL side by side in one daemon, and a password that never shows
in argv, logs, /metrics or check-config."""
import os
import re
import subprocess
import time
import urllib.request

from conftest import BIN, TOKEN, Daemon, run_deno

SECRET = "TopSecret-pw-4711"


def env_clean(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_", "PG"))}
    e.update(extra)
    return e


def with_password(uri):
    return uri.replace("postgres@", f"postgres:{SECRET}@", 1)


def test_password_on_the_command_line_is_refused(pg_database):
    r = subprocess.run([BIN, "serve", "--database", with_password(pg_database)], capture_output=True, text=True,
                       env=env_clean(KVCONNECTD_ACCESS_TOKEN=TOKEN), timeout=30)
    assert r.returncode == 2
    assert "process list" in r.stderr and SECRET not in r.stderr


def test_password_in_config_file_is_masked_everywhere(pg_database, tmp_path):
    cfg = tmp_path / "kvconnectd.yaml"
    cfg.write_text(f"database: {with_password(pg_database)}?sslmode=disable\n")
    r = subprocess.run([BIN, "check-config", "--config", str(cfg)], capture_output=True, text=True,
                       env=env_clean(KVCONNECTD_ACCESS_TOKEN=TOKEN), timeout=30)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert "postgres:********@" in r.stdout and "sslmode=disable" in r.stdout
    assert "signing_key_file = (not used" in r.stdout
    d = Daemon(tmp_path / "d", extra_args=["--config", str(cfg)])
    start_without_database_flag(d)
    try:
        with urllib.request.urlopen(d.url + "/metrics", timeout=10) as m:
            metrics = m.read().decode()
        assert SECRET not in metrics
        assert "kvconnectd_database_size_bytes" in metrics
        with urllib.request.urlopen(d.url + "/readyz", timeout=10) as m:
            assert m.status == 200
        cmdline = open(f"/proc/{d.proc.pid}/cmdline", "rb").read().decode(errors="replace")
        assert SECRET not in cmdline
    finally:
        d.stop()
    assert SECRET not in d.log()
    assert "postgres:********@" in d.log() or "***" in d.log()


def start_without_database_flag(d):
    """Daemon.start passes --database (a flag beats the config file); here the config file names it."""
    token_file = d.workdir / "token"
    token_file.write_text(d.token)
    log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--access-token-file", str(token_file),
                               *d.extra_args], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env_clean())
    deadline = time.time() + 20
    while time.time() < deadline:
        m = re.search(r"listen=127\.0\.0\.1:(\d+)", d.log())
        if m:
            d.port = int(m.group(1))
            return
        assert d.proc.poll() is None, d.log()
        time.sleep(0.05)
    raise AssertionError("daemon did not start: " + d.log())


def test_password_file_is_used_and_masked(pg_database, tmp_path):
    pw = tmp_path / "pg-password"
    pw.write_text(SECRET + "\n")
    r = subprocess.run([BIN, "check-config", "--database", pg_database, "--database-password-file", str(pw)],
                       capture_output=True, text=True, env=env_clean(KVCONNECTD_ACCESS_TOKEN=TOKEN), timeout=30)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout and "password from file" in r.stdout
    d = Daemon(tmp_path / "d", database=pg_database, extra_args=["--database-password-file", str(pw)])
    d.start()
    try:
        assert d.metadata()["databaseId"]
    finally:
        d.stop()
    assert SECRET not in d.log()
    # A password file for a SQLite database is a configuration error.
    r = subprocess.run([BIN, "check-config", "--database", str(tmp_path / "x.sqlite3"), "--database-password-file", str(pw)],
                       capture_output=True, text=True, env=env_clean(KVCONNECTD_ACCESS_TOKEN=TOKEN), timeout=30)
    assert r.returncode == 2 and "only for a PostgreSQL URI" in r.stderr


def test_sqlite_and_postgres_side_by_side(pg_database, tmp_path):
    (tmp_path / "t-sqlite").write_text("token-for-sqlite-0123456789")
    (tmp_path / "t-pg").write_text("token-for-postgres-0123456789")
    dbs = tmp_path / "databases.yaml"
    dbs.write_text(f"""databases:
  - name: local
    path: {tmp_path}/local.sqlite3
    tokens:
      - file: {tmp_path}/t-sqlite
  - name: shared
    path: {pg_database}
    tokens:
      - file: {tmp_path}/t-pg
""")
    d = Daemon(tmp_path / "d", extra_args=["--databases-file", str(dbs)])
    d.start()
    try:
        script = tmp_path / "side.ts"
        script.write_text("""
        const kv = await Deno.openKv(Deno.args[0]);
        await kv.set(["who"], Deno.args[1]);
        console.log((await kv.get(["who"])).value);
        kv.close();
        """)
        ids = set()
        for token, name in (("token-for-sqlite-0123456789", "local"), ("token-for-postgres-0123456789", "shared")):
            r = run_deno(["run", "--unstable-kv", "-A", str(script), d.url, name], token=token)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == name
            ids.add(d.metadata(token=token)["databaseId"])
        assert len(ids) == 2
        assert (tmp_path / "local.sqlite3").exists()
    finally:
        d.stop()

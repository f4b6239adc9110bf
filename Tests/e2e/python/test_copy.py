"""`kvconnectd copy`: SQLite → PostgreSQL → SQLite with every value type
(byte-for-byte exports, versionstamps, expiry and queue messages kept),
resuming an interrupted copy, refusing a non-empty destination, and a
KV Connect URL as the source."""
import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta, timezone

from v8serialize.jstypes import JSObject

from conftest import BIN, TOKEN, Daemon, run_deno
from test_backup import READBACK, VALUES
from test_queue import enqueue


FILL = """
const kv = await Deno.openKv(Deno.args[0]);
const n = Number(Deno.args[1]);
for (let i = 0; i < n; i += 100) {
  const op = kv.atomic();
  for (let j = i; j < Math.min(n, i + 100); j++) op.set(["fill", j], { j, pad: "x".repeat(50) });
  await op.commit();
}
kv.close();
"""


def copy(source, dest, *args, env=None, timeout=300):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
    e.update(env or {})
    return subprocess.run([BIN, "copy", str(source), str(dest), *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def export(db):
    r = subprocess.run([BIN, "export", "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def queue_rows(db):
    c = sqlite3.connect(str(db))
    try:
        return sorted(c.execute("SELECT payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts FROM queue_messages").fetchall())
    finally:
        c.close()


def script(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def seeded_sqlite(tmp_path):
    d = Daemon(tmp_path / "src")
    d.start()
    try:
        r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "values.ts", VALUES), d.url])
        assert r.returncode == 0, r.stderr
        # Deno cannot enqueue over KV Connect; Python's denokv client can. Due in an hour.
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        enqueue(d.url, *[(JSObject(job=i), dict(delivery_time=later, retry_delays=[0.5, 1],
                                                dead_letter_keys=[("dead", i)])) for i in range(3)])
    finally:
        d.stop()
    return d.db_path


def test_sqlite_to_postgres_to_sqlite_round_trip(tmp_path, pg_database):
    src = seeded_sqlite(tmp_path)
    back = tmp_path / "back.sqlite3"
    r1 = copy(src, pg_database)
    assert r1.returncode == 0, r1.stderr
    assert "verified" in r1.stdout and "3 queue messages" in r1.stdout, r1.stdout
    r2 = copy(pg_database, back)
    assert r2.returncode == 0, r2.stderr
    # Keys, values (every type), encodings, versionstamps and expiry: byte for byte.
    original = export(src)
    assert original.count("\n") >= 40
    assert export(back) == original
    assert queue_rows(back) == queue_rows(src) and len(queue_rows(src)) == 3
    # Deno reads the same values back, and new versionstamps sort after the copied ones.
    d = Daemon(tmp_path / "back-daemon")
    d.database = str(back)
    d.start()
    try:
        r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "readback.ts", READBACK), d.url])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["u64"] == "12345678901234567890" and out["counter"] == "5" and out["map"] == 1, out
        max_vs = max(json.loads(line)["versionstamp"] for line in original.splitlines())
        r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "next.ts",
                      "const kv = await Deno.openKv(Deno.args[0]); console.log((await kv.set(['n'], 1)).versionstamp); kv.close();"), d.url])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() > max_vs
    finally:
        d.stop()
    # Passwords never on the command line.
    r = copy(src, pg_database.replace("postgres@", "postgres:secret@"))
    assert r.returncode == 2 and "password" in r.stderr and "secret" not in r.stderr


def test_non_empty_destination_is_refused(tmp_path):
    src = seeded_sqlite(tmp_path)
    other = Daemon(tmp_path / "other")
    other.start()
    r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "one.ts",
                  "const kv = await Deno.openKv(Deno.args[0]); await kv.set(['mine'], 1); kv.close();"), other.url])
    other.stop()
    assert r.returncode == 0, r.stderr
    before = export(other.db_path)
    r = copy(src, other.db_path)
    assert r.returncode == 2 and "not empty" in r.stderr, r.stderr
    assert export(other.db_path) == before


def test_interrupted_copy_continues_where_it_stopped(tmp_path):
    d = Daemon(tmp_path / "big")
    d.start()
    r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "fill.ts", FILL), d.url, "6000"])
    d.stop()
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "dest.sqlite3"
    p = subprocess.Popen([BIN, "copy", str(d.db_path), str(dest), "--page-size", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it once a few pages are in (the WAL grows with every page).
    wal = tmp_path / "dest.sqlite3-wal"
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None and not (wal.exists() and wal.stat().st_size > 150_000):
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # Counted in another process: this one must not keep the file open.
    partial = int(subprocess.run(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                                  "print(c.execute('SELECT count(*) FROM entries').fetchone()[0]); c.close()", str(dest)],
                                 capture_output=True, text=True, check=True).stdout)
    assert 0 < partial < 6000, f"copy was not interrupted mid-way ({partial} entries)"
    r = copy(d.db_path, dest)
    assert r.returncode == 0, r.stderr
    assert "6000 entries" in r.stdout and "verified" in r.stdout, r.stdout
    assert export(dest) == export(d.db_path)
    # Running it again after completion only verifies.
    r = copy(d.db_path, dest)
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr


def test_kv_connect_url_as_source(tmp_path, fresh_daemon):
    d = fresh_daemon.start()
    r = run_deno(["run", "--unstable-kv", "-A", script(tmp_path, "values.ts", VALUES), d.url])
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "from-remote.sqlite3"
    r = copy(d.url, dest)
    assert r.returncode == 2 and "access token" in r.stderr
    token_file = tmp_path / "remote-token"
    token_file.write_text(TOKEN)
    r = copy(d.url, dest, "--source-token-file", str(token_file))
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert "expiry not readable" in r.stdout and "verified" in r.stdout
    d.stop()
    # Same keys, values and versionstamps; no expiry (the protocol hides it).
    strip = lambda text: [{k: v for k, v in json.loads(line).items() if k != "expiresAt"} for line in text.splitlines()]
    assert strip(export(dest)) == strip(export(d.db_path))
    assert all("expiresAt" not in json.loads(line) for line in export(dest).splitlines())

"""backup / restore / export / import against a daemon fed by the Deno CLI."""
import json
import os
import sqlite3
import subprocess
import time

from conftest import BIN, DENO, TOKEN, Daemon, run_deno

WRITER = """
const kv = await Deno.openKv(Deno.args[0]);
const until = Date.now() + Number(Deno.args[1]);
let n = 0, last = "";
while (Date.now() < until) { last = (await kv.set(["w", n], { n, at: Date.now() })).versionstamp; n++; }
console.log(JSON.stringify({ n, last }));
kv.close();
"""

PROBE = """
const kv = await Deno.openKv(Deno.args[0]);
let count = 0;
for await (const _ of kv.list({ prefix: ["w"] })) count++;
const r = await kv.set(["after-restore"], true);
console.log(JSON.stringify({ count, next: r.versionstamp }));
kv.close();
"""

VALUES = """
const kv = await Deno.openKv(Deno.args[0]);
const shared = { s: 1 };
const holey = new Array(3); holey[1] = "x";
const vals = {
  str: "hello", latin1: "héllo ÿ", utf16: "日本語 😀", empty: "", int: 42, neg: -7, big32: 2 ** 31, dbl: 1.5,
  nan: NaN, inf: -Infinity, negzero: -0, bigint: 123456789012345678901234567890n, nbig: -5n, t: true, f: false,
  nul: null, undef: undefined, arr: [1, "two", [3], 2n ** 70n], emptyarr: [], sparse: [1, , 3], holey,
  obj: { a: 1, b: { c: [true, null] }, "d e": "x", 0: "zero" }, emptyobj: {}, wrapperlike: { bytes: "AQI=" },
  date: new Date(1700000000123), baddate: new Date(NaN), u8nested: { b: new Uint8Array([1, 2, 255]) },
  bytes: new Uint8Array([0, 1, 2, 250]), u64: new Deno.KvU64(12345678901234567890n),
  map: new Map([["a", 1]]), set: new Set([1, 2]), regexp: /ab+c/gi, i16: new Int16Array([1, -1]),
  ab: new Uint8Array([9, 8]).buffer, shared: { x: shared, y: shared }, boxed: new String("s"),
};
for (const [k, v] of Object.entries(vals)) await kv.set(["v", k], v);
await kv.set([new Uint8Array([0, 1]), "s\\x00t", 5n, -(2n ** 80n), 1.5, -0, NaN, true, false], "odd key");
await kv.set(["exp"], "later", { expireIn: 3600_000 });
await kv.set(["vs", kv.commitVersionstamp()], 1);
await kv.atomic().sum(["counter"], 5n).commit();
const got = {};
for await (const e of kv.list({ prefix: ["v"] })) got[e.key[1]] = e.value;
console.log(JSON.stringify({ obj: got.obj, date: got.date, u64: String(got.u64?.value) }));
kv.close();
"""

READBACK = """
const kv = await Deno.openKv(Deno.args[0]);
const got = {};
for await (const e of kv.list({ prefix: ["v"] })) got[e.key[1]] = e.value;
const c = await kv.get(["counter"]);
console.log(JSON.stringify({ obj: got.obj, date: got.date, u64: String(got.u64?.value), n: Object.keys(got).length,
  counter: String(c.value?.value), sparse: 1 in got.sparse, map: got.map instanceof Map && got.map.get("a") }));
kv.close();
"""


def cli(*args, input=None):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=120, input=input)


def rows(db):
    c = sqlite3.connect(db)
    try:
        return list(c.execute("SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries ORDER BY key"))
    finally:
        c.close()


def meta(db, key):
    c = sqlite3.connect(db)
    try:
        return c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
    finally:
        c.close()


def test_backup_while_writing_then_restore_keeps_versionstamps_increasing(fresh_daemon, tmp_path):
    d = fresh_daemon.start()
    writer_ts = tmp_path / "writer.ts"
    writer_ts.write_text(WRITER)
    probe_ts = tmp_path / "probe.ts"
    probe_ts.write_text(PROBE)
    env = {"DENO_KV_ACCESS_TOKEN": TOKEN, "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    writer = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(writer_ts), d.url, "4000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    time.sleep(1.5)
    backup = tmp_path / "backup.sqlite3"
    t0 = time.time()
    r = cli("backup", "--db", d.db_path, "--out", backup)
    took = time.time() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"backup: {backup}: database ")
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    written = json.loads(out)
    print(f"backup took {took:.2f}s; writer wrote {written['n']} entries in 4 s")

    # A consistent copy: integrity ok, entries 0..k-1 exactly, counter matching.
    c = sqlite3.connect(backup)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
    in_backup = len(rows(backup))
    assert 0 < in_backup < written["n"], "writes went on during and after the backup"
    assert meta(backup, "database_id") == meta(d.db_path, "database_id")
    assert meta(backup, "commit_counter") == in_backup

    # Restore refuses while the daemon has the file open.
    r = cli("restore", "--db", d.db_path, "--from", backup)
    assert r.returncode == 2 and "in use" in r.stderr and r.stderr.count("\n") == 1, r.stderr

    d.stop()
    r = cli("restore", "--db", d.db_path, "--from", backup)
    assert r.returncode == 0, r.stderr
    assert not (d.workdir / "kv.sqlite3-wal").exists()
    d.start()
    p = run_deno(["run", "--unstable-kv", "-A", str(probe_ts), d.url])
    assert p.returncode == 0, p.stderr
    probe = json.loads(p.stdout)
    assert probe["count"] == in_backup, "the data is the backup's"
    assert probe["next"] > written["last"], "new versionstamps are above every one issued before the restore"


def test_export_import_round_trip_is_byte_for_byte(fresh_daemon, tmp_path):
    d = fresh_daemon.start()
    values_ts = tmp_path / "values.ts"
    values_ts.write_text(VALUES)
    r = run_deno(["run", "--unstable-kv", "-A", str(values_ts), d.url])
    assert r.returncode == 0, r.stderr
    original = json.loads(r.stdout)

    # Export works while the daemon runs (one read transaction).
    exported = tmp_path / "export.jsonl"
    r = cli("export", "--db", d.db_path, "--out", exported)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in exported.read_text().splitlines()]
    by_key = {json.dumps(l["key"]): l for l in lines}
    assert by_key['["v", "obj"]']["value"] == {"0": "zero", "a": 1, "b": {"c": [True, None]}, "d e": "x"}
    assert by_key['["v", "date"]']["value"] == {"date": "2023-11-14T22:13:20.123Z"}
    assert by_key['["v", "bigint"]']["value"] == {"bigint": "123456789012345678901234567890"}
    assert by_key['["v", "u64"]'] ["value"] == {"u64": "12345678901234567890"}
    assert by_key['["v", "bytes"]']["value"] == {"bytes": "AAEC+g=="} and by_key['["v", "bytes"]']["encoding"] == "bytes"
    assert by_key['["v", "wrapperlike"]']["value"] == {"object": {"bytes": "AQI="}}
    assert by_key['["v", "u8nested"]']["value"] == {"b": {"bytes": "AQL/"}}
    assert "v8" in by_key['["v", "map"]']["value"]
    assert by_key['["counter"]']["value"] == {"u64": "5"}
    assert "expiresAt" in by_key['["exp"]']
    # stdout is the default.
    r = cli("export", "--db", d.db_path)
    assert r.returncode == 0 and r.stdout == exported.read_text()

    d.stop()
    target = Daemon(tmp_path / "imported")
    r = cli("import", "--db", target.db_path, "--in", exported)
    assert r.returncode == 0, r.stderr
    assert rows(target.db_path) == rows(d.db_path), "every row byte for byte, versionstamps and expiry included"
    assert meta(target.db_path, "commit_counter") == meta(d.db_path, "commit_counter")
    # Exporting the import gives the same file.
    r = cli("export", "--db", target.db_path)
    assert r.stdout == exported.read_text()

    # Deno reads the imported database like the original.
    target.start()
    try:
        readback_ts = tmp_path / "readback.ts"
        readback_ts.write_text(READBACK)
        r = run_deno(["run", "--unstable-kv", "-A", str(readback_ts), target.url])
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert {k: got[k] for k in original} == original
        assert got["counter"] == "5" and got["sparse"] is False and got["map"] == 1
    finally:
        target.stop()


def test_data_commands_fail_clearly(tmp_path):
    missing = tmp_path / "missing.sqlite3"
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database " * 100)
    cases = [
        (["backup", "--db", missing, "--out", tmp_path / "b"], "does not exist"),
        (["backup", "--db", junk, "--out", tmp_path / "b"], "not a database"),
        (["restore", "--db", tmp_path / "x.sqlite3", "--from", missing], "does not exist"),
        (["restore", "--db", tmp_path / "x.sqlite3", "--from", junk], "not a database"),
        (["restore", "--db", tmp_path / "x.sqlite3", "--from", junk, "--min-versionstamp", "zz"], "20 hex digits"),
        (["export", "--db", missing], "does not exist"),
        (["import", "--db", tmp_path / "i.sqlite3", "--in", missing], "does not exist"),
    ]
    for args, text in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert text in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    assert not (tmp_path / "b").exists()
    bad = '{"key":["a"],"value":1,"encoding":"v8","versionstamp":"00000000000000010000"}\n{"key":\n'
    r = cli("import", "--db", tmp_path / "i.sqlite3", "--in", "-", input=bad)
    assert r.returncode == 2 and r.stderr.startswith("kvconnectd import: line 2: invalid JSON"), r.stderr
    r = cli("import", "--db", tmp_path / "i.sqlite3", "--in", "-", input=bad.splitlines()[0])
    assert r.returncode == 0, r.stderr
    assert rows(tmp_path / "i.sqlite3") == [(b"\x02a\x00", b"\xff\x10\x49\x02", 1, bytes.fromhex("00000000000000010000"), None)]

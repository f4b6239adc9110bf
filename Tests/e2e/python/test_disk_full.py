"""Disk full: the database directory on a small filesystem of the test's own
(a loop-mounted ext4 image, and a size-limited tmpfs), filled by a filler
file. Writes must fail with a retryable 503 + Retry-After and a plain-text
reason naming the disk, reads and /healthz keep working, writes succeed again
soon after space is freed, and after a restart every acknowledged write is
there and the file passes integrity_check. Needs root (mount); skipped
otherwise."""
import errno
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from denokv import _datapath_pb2 as pb

from conftest import DENO, Daemon, run_deno

FS_MB = 16
ROOM_KB = 192          # left free after the filler, before the writes
VALUE_BYTES = 3000     # per key; each write sets two keys (a, b)


class SmallFsDaemon(Daemon):
    """Log and token stay in the (roomy) work dir; the database directory
    (database, WAL, shm, signing key) is the small filesystem."""

    def __init__(self, workdir, data_dir):
        super().__init__(workdir)
        self.data_dir = Path(data_dir)

    @property
    def db_path(self):
        return self.data_dir / "kv.sqlite3"


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def small_fs(request, tmp_path):
    """Mounts a FS_MB filesystem (kind = request.param) at tmp_path/mnt.
    Yields (mount point, list to append daemons to); on the way out kills
    those daemons by PID, then unmounts and removes the image, always."""
    kind = request.param
    if os.geteuid() != 0:
        pytest.skip(f"disk-full test needs root to mount a small {kind} filesystem (euid {os.geteuid()})")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    img = tmp_path / "fs.img"
    if kind == "ext4":
        if not shutil.which("mkfs.ext4"):
            pytest.skip("mkfs.ext4 not installed")
        with open(img, "wb") as f:
            f.truncate(FS_MB * 1024 * 1024)
        r = run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)])
        if r.returncode != 0:
            img.unlink()
            pytest.skip(f"mkfs.ext4 failed: {r.stderr.strip()}")
        r = run(["mount", "-o", "loop", str(img), str(mnt)])
    else:
        r = run(["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        img.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a small {kind} filesystem here (mount exit {r.returncode}: {r.stderr.strip()})")
    daemons = []
    try:
        yield mnt, daemons
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                os.kill(d.proc.pid, signal.SIGKILL)
                d.proc.wait(timeout=30)
        for attempt in range(50):
            if run(["umount", str(mnt)]).returncode == 0:
                break
            time.sleep(0.1)
        else:
            run(["umount", "-l", str(mnt)])
        img.unlink(missing_ok=True)


def fill(path, leave_bytes):
    """Writes a filler file until ENOSPC, then shrinks it to leave about
    `leave_bytes` free. Returns the filler's size."""
    chunk = b"\xa5" * (256 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[:max(1, len(chunk) // 4)]
                continue
            if n < len(chunk):
                chunk = chunk[:max(1, len(chunk) // 4)]
        size = os.lseek(fd, 0, os.SEEK_CUR)
        size = max(0, size - leave_bytes)
        os.ftruncate(fd, size)
        os.fsync(fd)
        return size
    finally:
        os.close(fd)


class Raw:
    """Raw HTTP/1.1 client (the Deno CLI retries 5xx forever, so statuses are
    observed here). Every request has a timeout: a hang fails the test."""

    def __init__(self, d):
        self.d = d
        self.refresh()

    def refresh(self):
        meta = self.d.metadata()
        self.headers = {"Authorization": f"Bearer {meta['token']}", "x-denokv-database-id": meta["databaseId"],
                        "x-denokv-version": "3", "Content-Type": "application/x-protobuf"}

    def request(self, method, path, body=b"", headers=None, timeout=15):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def write(self, name, value):
        w = pb.AtomicWrite(mutations=[
            pb.Mutation(key=key("df", name, "a"), value=pb.KvValue(data=value, encoding=pb.VE_BYTES), mutation_type=pb.M_SET),
            pb.Mutation(key=key("df", name, "b"), value=pb.KvValue(data=value, encoding=pb.VE_BYTES), mutation_type=pb.M_SET)])
        st, h, body = self.request("POST", "/v2/atomic_write", w.SerializeToString(), self.headers)
        if st == 200:
            out = pb.AtomicWriteOutput.FromString(body)
            assert out.status == pb.AW_SUCCESS, out
        return st, h, body

    def read_all(self):
        """{name: {"a": value, "b": value}} of every df entry (pages of 1000)."""
        start, end = key("df"), key("df")[:-1] + b"\x01"
        found = {}
        while True:
            rr = pb.SnapshotRead(ranges=[pb.ReadRange(start=start, end=end, limit=1000)])
            st, _, body = self.request("POST", "/v2/snapshot_read", rr.SerializeToString(), self.headers)
            assert st == 200, (st, body)
            vals = pb.SnapshotReadOutput.FromString(body).ranges[0].values
            for v in vals:
                parts = v.key.split(b"\x00\x02")
                name, side = parts[1].decode(), parts[2].rstrip(b"\x00").decode()
                found.setdefault(name, {})[side] = v.value
            if len(vals) < 1000:
                return found
            start = vals[-1].key + b"\x00"


def key(*parts):
    return b"".join(b"\x02" + p.encode() + b"\x00" for p in parts)


def value_for(i):
    return (f"{i:08d}".encode() * (VALUE_BYTES // 8 + 1))[:VALUE_BYTES]


def write_pair_ts(tmp_path):
    """Deno CLI: one atomic write of ["df", name, "a"|"b"] (it retries 5xx
    by itself, so it returns only once the write went through)."""
    script = tmp_path / "set_pair.ts"
    script.write_text("""const kv = await Deno.openKv(Deno.args[0]);
const v = new Uint8Array(Number(Deno.args[2])).fill(7);
const r = await kv.atomic().set(["df", Deno.args[1], "a"], v).set(["df", Deno.args[1], "b"], v).commit();
console.log(JSON.stringify({ ok: r.ok }));
kv.close();
""")
    return script


def get_ts(tmp_path):
    script = tmp_path / "get.ts"
    script.write_text("""const kv = await Deno.openKv(Deno.args[0]);
const e = await kv.get(["df", Deno.args[1], "a"]);
console.log(JSON.stringify({ len: e.value?.length ?? null, vs: e.versionstamp }));
kv.close();
""")
    return script


def assert_disk_full_answer(st, h, text, took, what):
    assert st == 503, f"{what}: {st} {text!r} (want 503)"
    assert h.get("retry-after", "").isdigit(), f"{what}: no Retry-After: {h}"
    assert h.get("content-type", "").startswith("text/plain"), (what, h)
    low = text.lower()
    assert "disk" in low or "space" in low, f"{what}: message does not name the disk: {text!r}"
    assert took < 10, f"{what}: answer took {took:.1f}s"


def integrity(db_path):
    c = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def check_after_restart(d, raw, acked):
    """Stops cleanly, checks the file, restarts: every acknowledged write is
    there, none half-applied. Returns the names found."""
    assert d.stop() == 0, d.log()[-3000:]
    result = integrity(d.db_path)
    assert result == "ok", result
    d.start()
    raw.refresh()
    found = raw.read_all()
    lost = [n for n, v in acked.items() if found.get(n) != {"a": v, "b": v}]
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    half = [n for n, sides in found.items() if set(sides) != {"a", "b"} or sides["a"] != sides["b"]]
    assert not half, f"half-applied writes: {half[:10]}"
    return found


def start_on_small_fs(small_fs, tmp_path):
    """A daemon whose database directory is on the small filesystem (log and
    token outside it); the fixture kills it. Returns (mount, daemon, raw client)."""
    mnt, daemons = small_fs
    (mnt / "data").mkdir()
    d = SmallFsDaemon(tmp_path / "daemon", mnt / "data")
    daemons.append(d)
    d.start()
    return mnt, d, Raw(d)


@pytest.mark.parametrize("small_fs", ["ext4", "tmpfs"], indirect=True)
def test_disk_full_gives_retryable_503_then_recovers(small_fs, tmp_path):
    mnt, d, raw = start_on_small_fs(small_fs, tmp_path)
    # Some data before the disk fills, so reads have something to find.
    acked, i = {}, 0
    for _ in range(20):
        st, _, body = raw.write(f"k{i:05d}", value_for(i))
        assert st == 200, (st, body)
        acked[f"k{i:05d}"] = value_for(i)
        i += 1
    filler = mnt / "filler"
    fill(filler, ROOM_KB * 1024)

    # 1. One writer, fixed-size writes, until they fail; then more (200 or 503 only).
    statuses, failures, first_fail, acked_before_full = {}, [], None, None
    deadline = time.time() + 60
    while time.time() < deadline and len(failures) < 15:
        name = f"k{i:05d}"
        t0 = time.time()
        st, h, body = raw.write(name, value_for(i))
        took = time.time() - t0
        assert d.alive(), "daemon died on a full disk:\n" + d.log()[-3000:]
        statuses[st] = statuses.get(st, 0) + 1
        if st == 200:
            acked[name] = value_for(i)
        else:
            if first_fail is None:
                first_fail, acked_before_full = (st, h, body.decode(errors="replace")), len(acked) - 20
            failures.append((name, st, h, body.decode(errors="replace"), took))
        i += 1
    assert failures, f"writes never failed on a full {FS_MB} MiB filesystem: {statuses}"
    for name, st, h, text, took in failures:
        assert_disk_full_answer(st, h, text, took, name)

    # 2. Four concurrent writers, 100 B ... 60 KB per write, for 3 s: batches
    # of several writes fail together; still only 200 or 503, never slow.
    lock = threading.Lock()
    conc = {"200": 0, "503": 0, "other": [], "max_s": 0.0}
    stop_at = time.time() + 3

    def writer(w):
        rng = random.Random(w)
        n = 0
        while time.time() < stop_at:
            name, size = f"c{w}-{n:05d}", rng.choice([100, 3000, 20000, 60000])
            value = (name.encode() * (size // len(name) + 1))[:size]
            t0 = time.time()
            try:
                st, h, body = raw.write(name, value)
            except Exception as e:  # timeout, reset: recorded as a failure of the test
                st, h, body = -1, {}, repr(e).encode()
            took = time.time() - t0
            n += 1
            with lock:
                conc["max_s"] = max(conc["max_s"], took)
                if st == 200:
                    conc["200"] += 1
                    acked[name] = value
                elif st == 503:
                    conc["503"] += 1
                    try:
                        assert_disk_full_answer(st, h, body.decode(errors="replace"), took, name)
                    except AssertionError as e:
                        conc["other"].append(str(e))
                else:
                    conc["other"].append((name, st, body[:200]))
    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer hangs"
    assert not conc["other"], conc["other"][:5]
    assert conc["503"] > 0, conc
    assert d.alive(), d.log()[-3000:]

    # 3. Reads, health, readiness while full.
    found = raw.read_all()
    for name, v in acked.items():
        assert found.get(name) == {"a": v, "b": v}, f"acknowledged {name} not readable while full"
    st, _, body = raw.request("GET", "/healthz")
    assert st == 200 and body.strip() == b"ok", (st, body)
    ready_st, ready_h, ready_body = raw.request("GET", "/readyz")
    # /readyz probes BEGIN IMMEDIATE + ROLLBACK, which needs no new space: the
    # database is open and lockable, so it says ready (see README).
    assert ready_st == 200, (ready_st, ready_body)
    last = sorted(n for n in acked if n.startswith("k"))[-1]
    r = run_deno(["run", "--unstable-kv", "-A", str(get_ts(tmp_path)), d.url, last], timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["len"] == VALUE_BYTES, r.stdout
    # A Deno CLI write started while full retries the 503s by itself...
    deno_set = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(write_pair_ts(tmp_path)), d.url,
                                 "deno-while-full", "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ, DENO_KV_ACCESS_TOKEN=d.token, NO_COLOR="1",
                                                    DENO_NO_UPDATE_CHECK="1"))
    try:
        time.sleep(2)
        assert deno_set.poll() is None, ("a Deno write went through on a full disk", deno_set.communicate())

        # 4. Free the space: writes succeed again within a bounded time.
        os.remove(filler)
        t_free = time.time()
        recovered_after = None
        while time.time() - t_free < 30:
            name = f"k{i:05d}"
            st, h, body = raw.write(name, value_for(i))
            assert st in (200, 503), (st, body)
            if st == 200:
                acked[name] = value_for(i)
                recovered_after = time.time() - t_free
            i += 1
            if recovered_after is not None:
                break
            time.sleep(0.1)
        assert recovered_after is not None, "writes still fail 30 s after the filler was deleted:\n" + d.log()[-3000:]
        # ...and finishes once there is room again.
        out, err = deno_set.communicate(timeout=60)
        deno_after = time.time() - t_free
    finally:
        if deno_set.poll() is None:
            os.kill(deno_set.pid, signal.SIGKILL)
            deno_set.wait()
    assert deno_set.returncode == 0 and json.loads(out)["ok"] is True, (out, err)
    acked["deno-while-full"] = b"\x07" * 20000
    for _ in range(30):
        name = f"k{i:05d}"
        st, _, body = raw.write(name, value_for(i))
        assert st == 200, ("after recovery", st, body)
        acked[name] = value_for(i)
        i += 1

    # 5. Clean stop, integrity, restart: every acknowledged write is there.
    found = check_after_restart(d, raw, acked)
    failed_but_present = [f[0] for f in failures if f[0] in found]
    assert d.stop() == 0
    print(f"\ndisk full ({small_fs_kind_of(d)}): {acked_before_full} writes of 2x{VALUE_BYTES} B acknowledged "
          f"in the last {ROOM_KB} KiB, then {first_fail[0]} Retry-After: {first_fail[1].get('retry-after')} "
          f"{first_fail[2].strip()!r}; sequential {statuses}; 4 concurrent writers for 3 s: {conc['200']} ok, "
          f"{conc['503']} x 503, slowest {conc['max_s'] * 1000:.0f} ms; /readyz while full {ready_st} "
          f"{ready_body.decode().strip()!r}; writes back {recovered_after:.2f} s after freeing space, the "
          f"Deno CLI write started while full done after {deno_after:.2f} s; {len(acked)} acknowledged writes "
          f"all present after restart, integrity ok; {len(failed_but_present)} of {len(failures)} refused "
          f"writes present")


@pytest.mark.parametrize("small_fs", ["ext4", "tmpfs"], indirect=True)
def test_daemon_stopped_cleanly_starts_again_on_a_full_disk(small_fs, tmp_path):
    """After a clean stop the disk fills up (another program); the daemon must
    still start, serve reads and answer writes 503 until space frees. SQLite
    deletes -wal and -shm on the last close unless told to keep them, and
    re-creating the -shm needs free blocks: this failed with 'cannot start:
    disk I/O error' before the engine kept them (SQLITE_FCNTL_PERSIST_WAL)."""
    mnt, d, raw = start_on_small_fs(small_fs, tmp_path)
    acked = {}
    for i in range(20):
        st, _, body = raw.write(f"s{i:03d}", value_for(i))
        assert st == 200, (st, body)
        acked[f"s{i:03d}"] = value_for(i)
    assert d.stop() == 0
    filler = mnt / "filler"
    fill(filler, 0)
    free_kb = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize // 1024
    d.start()
    raw.refresh()
    found = raw.read_all()
    assert all(found.get(n) == {"a": v, "b": v} for n, v in acked.items()), "reads after a restart on a full disk"
    t0 = time.time()
    st, h, body = raw.write("refused", value_for(99))
    assert_disk_full_answer(st, h, body.decode(errors="replace"), time.time() - t0, "write on a full disk")
    st, _, body = raw.request("GET", "/healthz")
    assert st == 200, (st, body)
    os.remove(filler)
    deadline = time.time() + 30
    while True:
        st, _, body = raw.write("after", value_for(100))
        assert st in (200, 503), (st, body)
        if st == 200:
            acked["after"] = value_for(100)
            break
        assert time.time() < deadline, "writes still fail 30 s after the filler was deleted"
        time.sleep(0.1)
    check_after_restart(d, raw, acked)
    assert d.stop() == 0
    print(f"\nclean stop, then disk filled ({free_kb} KiB free): the daemon started, served "
          f"{len(found)} entries, writes 503 until the filler was deleted, then 200; integrity ok")


def small_fs_kind_of(d):
    with open("/proc/mounts") as f:
        mounts = [line.split() for line in f]
    best = max((m for m in mounts if str(d.db_path).startswith(m[1] + "/")), key=lambda m: len(m[1]))
    return best[2]

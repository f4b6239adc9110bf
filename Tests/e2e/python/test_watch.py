"""kv.watch with the real Deno CLI: initial values, changes from another
process, deletes, many streams, daemon restarts."""
import json
import os
import queue
import subprocess
import threading
import time

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno

DENO_DIR = ROOT / "Tests/e2e/deno"


class Watcher:
    """A Deno process printing one JSON line per watch frame."""

    def __init__(self, url, keys, max_frames=1000):
        env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1")
        self.proc = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "watch_print.ts"), url,
                                      str(max_frames), *keys], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.frames = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.frames.put(json.loads(line))

    def wait_for(self, want, timeout=20):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            try:
                f = self.frames.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            seen.append(f)
            if f == want:
                return seen
        raise AssertionError(f"watch never reported {want}; saw {seen}; stderr: {self.stderr_tail()}")

    def stderr_tail(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def kv_set(url, *pairs):
    r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "kv_set.ts"), url, *pairs])
    assert r.returncode == 0, r.stderr


def test_initial_values_changes_and_deletes(daemon):
    kv_set(daemon.url, 'a1="first"')
    w = Watcher(daemon.url, ["a1", "a2"])
    try:
        w.wait_for(["first", None])
        kv_set(daemon.url, 'a2={"n":2}')
        w.wait_for(["first", {"n": 2}])
        kv_set(daemon.url, "a1=")
        w.wait_for([None, {"n": 2}])
        kv_set(daemon.url, 'a1=3', 'a2=4')
        w.wait_for([3, 4])
    finally:
        w.stop()


def test_expiry_reports_the_key_gone(daemon):
    script = 'const kv = await Deno.openKv(Deno.args[0]); await kv.set(["w", "exp"], "soon", { expireIn: 800 }); kv.close();'
    path = daemon.workdir / "exp.ts"
    path.write_text(script)
    w = Watcher(daemon.url, ["exp"])
    try:
        w.wait_for([None])
        r = run_deno(["run", "--unstable-kv", "-A", str(path), daemon.url])
        assert r.returncode == 0, r.stderr
        w.wait_for(["soon"])
        w.wait_for([None], timeout=10)
    finally:
        w.stop()


def test_200_concurrent_streams_see_every_final_value(daemon):
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1")
    watchers = [subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "watch_many.ts"), daemon.url,
                                  "100", "20", "25", "90000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env) for _ in range(2)]
    time.sleep(1.0)
    r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "write_many.ts"), daemon.url, "20", "25"])
    assert r.returncode == 0, r.stderr
    for p in watchers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
        assert json.loads(out.strip().splitlines()[-1]) == {"done": 100}


def test_watch_survives_daemon_restart(fresh_daemon):
    d = fresh_daemon.start()
    port = d.port
    kv_set(d.url, 'r="before"')
    w = Watcher(d.url, ["r"])
    try:
        w.wait_for(["before"])
        d.stop()
        d.start(port=port)
        kv_set(d.url, 'r="after"')
        w.wait_for(["after"], timeout=60)
    finally:
        w.stop()
        d.stop()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_vanished_watchers_are_cleaned_up(fresh_daemon):
    # Watcher processes killed outright: their connections and streams are
    # released (fds back to the baseline within a ping interval or two).
    d = fresh_daemon.start()

    def round_trip():
        ws = [Watcher(d.url, [f"gone{i}"]) for i in range(5)]
        for w in ws:
            w.wait_for([None])
        during = fd_count(d.proc.pid)
        for w in ws:
            w.proc.kill()
            w.proc.wait()
        return during

    def settle(limit):
        deadline = time.time() + 15
        while time.time() < deadline and fd_count(d.proc.pid) > limit:
            time.sleep(0.2)
        return fd_count(d.proc.pid)

    # The first rounds open the lazily created read connections (the pool
    # grows with read concurrency, up to 4 connections of 2-3 fds each, so a
    # later round may still add one); the 5 sockets of a round must come back.
    round_trip()
    round_trip()
    time.sleep(7)
    base = fd_count(d.proc.pid)
    during = round_trip()
    assert during >= base + 5
    assert settle(base) <= base + 3, f"fds: base {base}, during {during}, after {fd_count(d.proc.pid)}"
    w = Watcher(d.url, ["gone0"])
    try:
        w.wait_for([None])
        kv_set(d.url, "gone0=1")
        w.wait_for([1])
    finally:
        w.stop()

"""Many watch streams on one Deno.Kv handle (issue 16): Deno keeps every
request of a handle on one HTTP/2 connection and queues new streams at the
server's SETTINGS_MAX_CONCURRENT_STREAMS, so a low limit hangs the whole
handle. Here thousands of watches on one handle each get their initial frame
and their change, plain reads and writes through the same handle still
complete, and cancelling every stream at once is not taken for a flood.
With a low configured limit, reaching it is logged once per connection and
counted in /metrics.

WATCH_SCALE_STREAMS sets the size (default 10000, `make test`); `make
watch-scale` runs 50000 plus the fan-out measurement (bench/watch_scale.py)."""
import json
import os
import re
import subprocess
import tempfile
import time

from conftest import DENO, ROOT, TOKEN, Daemon
from test_metrics import scrape, value

DENO_DIR = ROOT / "Tests/e2e/deno"
STREAMS = int(os.environ.get("WATCH_SCALE_STREAMS", "10000"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def deno_env():
    return dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1", DENO_NO_UPDATE_CHECK="1")


class ScaleRun:
    """watch_scale.ts as a child process, read line by line."""

    def __init__(self, url, streams, step=1, timeout_ms=60000):
        # stderr to a file: Deno's warnings must never block it on a full pipe.
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [DENO, "run", "--unstable-kv", "--v8-flags=--max-old-space-size=4096", "-A",
             str(DENO_DIR / "watch_scale.ts"), url, str(streams), str(step), str(timeout_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, env=deno_env())

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def phase(self):
        line = self.proc.stdout.readline()
        assert line, "watch_scale.ts ended early: " + self.stderr()[-3000:]
        return json.loads(line)

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout=120):
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.stderr()[-3000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_many_watches_on_one_handle_all_live(fresh_daemon):
    # Defaults only: the default stream limit must cover this many watches.
    d = fresh_daemon.start()
    time.sleep(0.5)
    rss0 = rss_kib(d.proc.pid)
    run = ScaleRun(d.url, STREAMS, step=1, timeout_ms=90000)
    try:
        opened = run.phase()
        assert opened == {"phase": "open", "streams": STREAMS, "initial": STREAMS, "ms": opened["ms"]}, opened
        rss_open = rss_kib(d.proc.pid)
        _, samples = scrape(d)
        assert value(samples, "kvconnectd_open_watch_streams") == STREAMS
        run.go()
        changes = run.phase()
        assert changes["changed"] == changes["expected"] == STREAMS, changes
        rc, out, err = run.finish()
        assert rc == 0, out + err
        done = json.loads(out.strip().splitlines()[-1])
        assert done["phase"] == "done" and done["setGet"] is True, done
        assert done["liveBeforeCancel"] == STREAMS, done
        assert done["errors"] == 0, done
    finally:
        run.kill()
    per_1000 = (rss_open - rss0) / (STREAMS / 1000) / 1024
    print(f"\n{STREAMS} streams: RSS {rss0 / 1024:.1f} -> {rss_open / 1024:.1f} MiB "
          f"({per_1000:.2f} MiB per 1000 streams); open {opened['ms']} ms, "
          f"changes {changes['ms']} ms, cancel {done['cancelMs']} ms")
    # Mass cancel is ordinary client behaviour: no flood verdict, no limit hit.
    log = d.log()
    assert "ENHANCE_YOUR_CALM" not in log and "stream limit" not in log, log[-2000:]
    _, samples = scrape(d)
    assert value(samples, "kvconnectd_http2_stream_limit_reached_total") == 0
    # Every stream ended server-side too.
    deadline = time.time() + 10
    while value(scrape(d)[1], "kvconnectd_open_watch_streams") != 0 and time.time() < deadline:
        time.sleep(0.2)
    assert value(scrape(d)[1], "kvconnectd_open_watch_streams") == 0


def test_reaching_a_lower_stream_limit_is_logged_once_and_counted(tmp_path):
    # 150 watches against a limit of 100: the client queues the rest (so
    # the run times out waiting for their initial frames), and the daemon
    # says why, once per connection, with the address and the limit.
    d = Daemon(tmp_path / "d", extra_args=["--http2-max-concurrent-streams", "100"]).start()
    try:
        _, samples = scrape(d)
        assert value(samples, "kvconnectd_http2_stream_limit_reached_total") == 0
        run = ScaleRun(d.url, 150, timeout_ms=3000)
        try:
            rc, out, err = run.finish(timeout=60)
        finally:
            run.kill()
        assert rc == 1, out + err
        stuck = json.loads(out.strip().splitlines()[-1])
        assert stuck == {"phase": "open", "streams": 150, "initial": 100, "timeout": True}, stuck
        lines = [l for l in d.log().splitlines() if "stream limit" in l]
        assert len(lines) == 1, lines
        assert re.search(r"127\.0\.0\.1:\d+", lines[0]) and "100" in lines[0], lines[0]
        _, samples = scrape(d)
        assert value(samples, "kvconnectd_http2_stream_limit_reached_total") == 1
    finally:
        d.stop()


def test_stream_limit_setting_default_and_validation(tmp_path):
    from test_daemon_cli import run
    env = {"DENO_KV_ACCESS_TOKEN": "a-long-enough-token"}
    r = run(["check-config", "--database", str(tmp_path / "db")], env=env)
    assert r.returncode == 0, r.stderr
    settings = dict(line.split(" = ", 1) for line in r.stdout.strip().splitlines())
    assert int(settings["http2_max_concurrent_streams"]) >= 50000
    for bad in ["0", "-5", "many", "4294967296"]:
        r = run(["serve", "--database", str(tmp_path / "db")],
                env=dict(env, KVCONNECTD_HTTP2_MAX_CONCURRENT_STREAMS=bad))
        assert r.returncode == 2, (bad, r.stderr)
        assert "http2_max_concurrent_streams" in r.stderr

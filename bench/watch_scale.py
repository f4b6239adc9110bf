"""`make watch-scale`: watch streams at full size against one daemon
(issue 16), with the real Deno CLI.

1. Memory: daemon RSS (VmRSS) with 0, SMALL and LARGE watch streams open on
   ONE Deno.Kv handle (one key each, Tests/e2e/deno/watch_scale.ts); each
   run also checks every stream's initial frame, a change of every key,
   kv.set/kv.get through the same handle, and cancelling every stream.
2. Fan-out: FANOUT watchers of ONE key spread over PROCS Deno processes
   (Tests/e2e/deno/watch_fanout.ts); ROUNDS writes from another process
   (fanout_writer.ts); per round, latency from the writer's kv.set call to
   each watcher's frame (p50 over the watchers, and to the last one).

Prints a Markdown section for docs/benchmarks.md. Environment: KVCONNECTD_BIN
(default .build/release/kvconnectd), LARGE (50000), SMALL (10000), FANOUT
(10000), PROCS (4), ROUNDS (10), GAP (3 s between writes)."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests/e2e"))
sys.path.insert(0, str(ROOT / "Tests/e2e/python"))
os.environ.setdefault("KVCONNECTD_BIN", str(ROOT / ".build/release/kvconnectd"))
os.environ.setdefault("DENO_DIR", str(ROOT / ".venv/deno-cache"))

from conftest import DENO, Daemon  # noqa: E402
from test_watch_scale import ScaleRun, deno_env, rss_kib  # noqa: E402

DENO_DIR = ROOT / "Tests/e2e/deno"
LARGE = int(os.environ.get("LARGE", "50000"))
SMALL = int(os.environ.get("SMALL", "10000"))
FANOUT = int(os.environ.get("FANOUT", "10000"))
PROCS = int(os.environ.get("PROCS", "4"))
ROUNDS = int(os.environ.get("ROUNDS", "10"))
# Seconds between writes: each round's frames should be out before the next
# write, or a CPU-starved run measures its own backlog.
GAP = float(os.environ.get("GAP", "3"))


def log(msg):
    print(f"[watch-scale] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_run(d, streams):
    run = ScaleRun(d.url, streams, step=1, timeout_ms=300000)
    try:
        opened = run.phase()
        assert opened.get("initial") == streams, opened
        time.sleep(2)
        rss = rss_kib(d.proc.pid)
        cpu0 = cpu_seconds(d.proc.pid)
        time.sleep(10)   # idle with every stream open: keep-alive pings only
        idle_cpu = (cpu_seconds(d.proc.pid) - cpu0) / 10
        run.go()
        changes = run.phase()
        assert changes["changed"] == streams, changes
        rc, out, err = run.finish(timeout=600)
        assert rc == 0, out + err
        done = json.loads(out.strip().splitlines()[-1])
        assert done["setGet"] and done["liveBeforeCancel"] == streams, done
    finally:
        run.kill()
    return {"streams": streams, "rss_kib": rss, "open_ms": opened["ms"], "change_ms": changes["ms"],
            "cancel_ms": done["cancelMs"], "idle_cpu": idle_cpu}


def fanout_run(d):
    per = [FANOUT // PROCS + (1 if i < FANOUT % PROCS else 0) for i in range(PROCS)]
    errs = [tempfile.TemporaryFile(mode="w+") for _ in per]   # never a full stderr pipe
    watchers = [subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "watch_fanout.ts"), d.url,
                                  str(n), "hot", str(ROUNDS), "300000"],
                                 stdout=subprocess.PIPE, stderr=e, text=True, env=deno_env())
                for n, e in zip(per, errs)]
    writer = None
    try:
        for p in watchers:
            line = p.stdout.readline()
            assert line and json.loads(line)["phase"] == "ready", line
        rss = rss_kib(d.proc.pid)
        writer = subprocess.Popen([DENO, "run", "--unstable-kv", "-A", str(DENO_DIR / "fanout_writer.ts"), d.url,
                                   "hot", str(ROUNDS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=deno_env())
        writes = []
        for _ in range(ROUNDS):
            time.sleep(GAP)
            writer.stdin.write("go\n")
            writer.stdin.flush()
            writes.append(json.loads(writer.stdout.readline()))
        arrivals = [[] for _ in range(ROUNDS)]
        for p in watchers:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out
            done = json.loads(out.strip().splitlines()[-1])
            for r, times in enumerate(done["arrivals"]):
                arrivals[r].extend(times)
        writer.communicate(timeout=30)
    finally:
        for p in watchers + ([writer] if writer else []):
            if p.poll() is None:
                p.kill()
                p.wait()
    rounds = []
    for w, times in zip(writes, arrivals):
        assert len(times) == FANOUT, (len(times), FANOUT)
        lat = sorted(t - w["start"] for t in times)
        rounds.append({"ack_ms": w["acked"] - w["start"], "p50_ms": lat[len(lat) // 2], "last_ms": lat[-1]})
    return {"rss_kib": rss, "rounds": rounds}


def main():
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # A fresh daemon per size: RSS never shrinks back after a run.
        for n in (SMALL, LARGE):
            d = Daemon(Path(tmp) / f"d{n}").start()
            try:
                time.sleep(1)
                rss0 = rss_kib(d.proc.pid)
                log(f"{n} streams on one handle")
                r = memory_run(d, n)
                time.sleep(3)
                r["rss0_kib"] = rss0
                r["rss_after_kib"] = rss_kib(d.proc.pid)
                log(json.dumps(r))
                results.append(r)
            finally:
                d.stop()
        d = Daemon(Path(tmp) / "fanout").start()
        try:
            log(f"fan-out: {FANOUT} watchers of one key over {PROCS} processes, {ROUNDS} writes")
            fan = fanout_run(d)
            log(json.dumps(fan))
        finally:
            d.stop()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    deno_v = subprocess.run([DENO, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"### Results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {git}, "
          f"{os.path.basename(os.environ['KVCONNECTD_BIN'].rstrip('/'))} from "
          f"{Path(os.environ['KVCONNECTD_BIN']).parent.name} build)\n")
    load = open("/proc/loadavg").read().split()[0]
    print(f"{os.cpu_count()} cores ({cpu}), {deno_v}, load average {load} at the end (the machine is shared). "
          "Command: `make watch-scale`.\n")
    print("| watch streams on one Deno.Kv handle | daemon RSS before → open | per 1,000 streams | "
          "all initial frames | a change of every key seen | idle CPU (pings) | cancel all + set/get | "
          "RSS after they ended |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        per = (r["rss_kib"] - r["rss0_kib"]) / 1024 / (r["streams"] / 1000)
        print(f"| {r['streams']:,} | {r['rss0_kib'] / 1024:.1f} → {r['rss_kib'] / 1024:.1f} MiB | {per:.2f} MiB | "
              f"{r['open_ms'] / 1000:.1f} s | {r['change_ms'] / 1000:.1f} s | {r['idle_cpu'] * 100:.0f} % of a core | "
              f"{r['cancel_ms'] / 1000:.1f} s | {r['rss_after_kib'] / 1024:.1f} MiB |")
    print()
    rs = fan["rounds"]
    p50s = [r["p50_ms"] for r in rs]
    lasts = [r["last_ms"] for r in rs]
    acks = [r["ack_ms"] for r in rs]
    print(f"Fan-out: {FANOUT:,} watchers of one key over {PROCS} Deno processes (daemon RSS "
          f"{fan['rss_kib'] / 1024:.1f} MiB), {ROUNDS} writes {GAP:g} s apart from one more process. Latency from the "
          "writer's `kv.set` call to each watcher's frame, measured in the watcher processes (wall clock, "
          "same machine), so it includes the commit (fsync) and the clients' own work:\n")
    print("| per write | median over the writes | worst write |")
    print("|---|---|---|")
    print(f"| commit acknowledged to the writer | {statistics.median(acks):.1f} ms | {max(acks):.1f} ms |")
    print(f"| p50 over the {FANOUT:,} watchers | {statistics.median(p50s):.1f} ms | {max(p50s):.1f} ms |")
    print(f"| last of the {FANOUT:,} watchers | {statistics.median(lasts):.1f} ms | {max(lasts):.1f} ms |")


if __name__ == "__main__":
    main()

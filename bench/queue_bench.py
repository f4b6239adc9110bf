#!/usr/bin/env python3
"""Queue delivery measurements (docs/queues.md, "Measured").

  .venv/bin/python bench/queue_bench.py [--bin .build/release/kvconnectd]
      [--throughput 5000] [--latency 500] [--backlog 100000]

1. Throughput: N messages enqueued (Python denokv, 1000 per atomic write) with
   one deadline 3 s ahead; deliveries/s = N / (last - first delivery) at the
   example Deno receiver (examples/queue-webhook-receiver.ts).
2. Delay deadline -> delivery: M messages with deadlines spread over 5 s;
   p50/p99 of (received at receiver - deadline), same machine clock.
3. Backlog: B messages queued for an hour ahead: daemon RSS, then restart
   time (process start -> listening) and RSS after the restart.
"""
import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests/e2e"))
sys.path.insert(0, str(ROOT / "Tests/e2e/python"))

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=str(ROOT / ".build/release/kvconnectd"))
ap.add_argument("--throughput", type=int, default=5000)
ap.add_argument("--latency", type=int, default=500)
ap.add_argument("--backlog", type=int, default=100_000)
ap.add_argument("--concurrency", type=int, default=16)
ap.add_argument("--synchronous", default="full")
args = ap.parse_args()
os.environ["KVCONNECTD_BIN"] = str(Path(args.bin).resolve())
os.environ.setdefault("DENO_DIR", str(ROOT / ".venv/deno-cache"))

from conftest import TOKEN, Daemon  # noqa: E402
from denokv import open_kv  # noqa: E402
from test_queue import SECRET, Receiver  # noqa: E402
from v8serialize.jstypes import JSObject  # noqa: E402


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


async def enqueue_many(url, items):
    """items: list of (value, deadline datetime)."""
    kv = await open_kv(url, access_token=TOKEN)
    async with kv:
        for i in range(0, len(items), 1000):
            a = kv.atomic()
            for value, when in items[i:i + 1000]:
                a.enqueue(value, delivery_time=when, retry_delays=[])
            r = await a.write()
            assert r.ok, r


def wait_lines(r, n, timeout):
    """Cheap poll (line count) so the bench does not steal the daemon's CPU."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(r.out, "rb") as f:
            if sum(1 for _ in f) >= n:
                return r.deliveries()
        time.sleep(0.25)
    raise AssertionError(f"only {len(r.deliveries())} of {n} deliveries within {timeout}s")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def push_daemon(work, receiver, name):
    secret = work / "secret"
    secret.write_text(SECRET)
    return Daemon(work / name, extra_args=[
        "--queue-webhook-url", receiver.url, "--queue-webhook-secret-file", str(secret),
        "--queue-concurrency", str(args.concurrency), "--log-level", "info", "--synchronous", args.synchronous]).start()


def main():
    work = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    results = {}
    # 1. throughput
    r = Receiver(work)
    d = push_daemon(work, r, "throughput")
    try:
        when = datetime.now(timezone.utc) + timedelta(seconds=3)
        t0 = time.time()
        asyncio.run(enqueue_many(d.url, [(JSObject(i=i), when) for i in range(args.throughput)]))
        enq_s = time.time() - t0
        got = wait_lines(r, args.throughput, 600)
        ts = [g["receivedAtMs"] for g in got]
        span = (max(ts) - min(ts)) / 1000
        results["throughput"] = dict(messages=args.throughput, enqueue_s=round(enq_s, 2),
                                     deliver_s=round(span, 2), per_s=round(args.throughput / span),
                                     daemon_rss_mib=round(rss_kib(d.proc.pid) / 1024, 1))
        print("throughput:", results["throughput"], flush=True)
    finally:
        d.stop()
        r.stop()

    # 2. deadline -> delivery delay
    r = Receiver(work)
    d = push_daemon(work, r, "latency")
    try:
        base = datetime.now(timezone.utc) + timedelta(seconds=1)
        items = []
        for i in range(args.latency):
            when = base + timedelta(milliseconds=5000 * i / args.latency)
            items.append((JSObject(deadline=int(when.timestamp() * 1000)), when))
        asyncio.run(enqueue_many(d.url, items))
        got = wait_lines(r, args.latency, 120)
        delays = [g["receivedAtMs"] - g["value"]["deadline"] for g in got]
        results["delay_ms"] = dict(messages=args.latency, p50=percentile(delays, 50),
                                   p99=percentile(delays, 99), max=max(delays), min=min(delays))
        print("deadline -> delivery:", results["delay_ms"], flush=True)
    finally:
        d.stop()
        r.stop()

    # 3. backlog
    d = Daemon(work / "backlog", extra_args=["--log-level", "info"]).start()
    rss_empty = rss_kib(d.proc.pid)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    t0 = time.time()
    asyncio.run(enqueue_many(d.url, [(JSObject(i=i, pad="x" * 32), later) for i in range(args.backlog)]))
    enq_s = time.time() - t0
    time.sleep(1)
    rss_full = rss_kib(d.proc.pid)
    d.stop()
    t0 = time.time()
    d.start()
    start_s = time.time() - t0
    time.sleep(1)
    rss_restart = rss_kib(d.proc.pid)
    d.stop(signal.SIGTERM)
    # Worst case for recovery: the whole backlog in flight when the process died.
    import sqlite3
    con = sqlite3.connect(d.db_path)
    con.execute("UPDATE queue_messages SET state = 'inflight', lease_until_ms = 1")
    con.commit()
    con.close()
    t0 = time.time()
    d.start()
    recover_s = time.time() - t0
    recovered_ok = f"queue_ready_again={args.backlog}" in d.log()
    rss_recovered = rss_kib(d.proc.pid)
    d.stop(signal.SIGTERM)
    results["backlog"] = dict(messages=args.backlog, enqueue_s=round(enq_s, 1),
                              rss_empty_mib=round(rss_empty / 1024, 1), rss_queued_mib=round(rss_full / 1024, 1),
                              restart_to_listening_s=round(start_s, 3), rss_after_restart_mib=round(rss_restart / 1024, 1),
                              db_mib=round(d.db_path.stat().st_size / 2**20, 1),
                              restart_all_inflight_s=round(recover_s, 3), recovered_all=recovered_ok,
                              rss_after_recovery_mib=round(rss_recovered / 1024, 1))
    print("backlog:", results["backlog"], flush=True)
    return results


if __name__ == "__main__":
    main()

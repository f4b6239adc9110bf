"""GET /metrics (Prometheus text) and structured logging: counters and gauges
move with real Deno and curl traffic, tokens never show up in /metrics,
/healthz, /readyz or the debug log, and --log-format json writes one JSON
object per line."""
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno
from test_watch import Watcher, kv_set

DENO_DIR = ROOT / "Tests/e2e/deno"
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return r.status, r.headers.get("content-type"), r.read().decode()


def scrape(d):
    status, ctype, text = get(d.url, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return text, samples


def value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    found = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())]
    return sum(found) if found else None


def curl(*args):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


def deno_get(url, key):
    code = ("const kv = await Deno.openKv(Deno.args[0]);"
            "console.log(JSON.stringify((await kv.get(['w', Deno.args[1]])).value ?? null)); kv.close();")
    r = run_deno(["eval", "--unstable-kv", code, url, key])
    if r.returncode != 0:  # older CLIs: eval takes no script arguments
        r = run_deno(["run", "--unstable-kv", "-A", str(DENO_DIR / "read_counter.ts"), url, key])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def debug_daemon(tmp_path):
    d = Daemon(tmp_path / "daemon", extra_args=["--log-level", "debug"]).start()
    yield d
    d.stop()


def test_metrics_move_with_traffic_and_never_show_tokens(debug_daemon):
    d = debug_daemon
    _, before = scrape(d)
    assert value(before, "kvconnectd_database_size_bytes") > 0

    watcher = Watcher(d.url, ["m1"])
    try:
        watcher.wait_for([None])
        kv_set(d.url, 'm1="one"', 'm2="two"')
        watcher.wait_for(["one"])
        deno_get(d.url, "m2")

        # A wrong access token (401) and curl over HTTP/1.1 on the data path.
        bad = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer wrong-token-xyz",
                   d.url + "/")
        assert bad.stdout == "401"
        meta = d.metadata()
        data_token = meta["token"]
        read = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", f"Authorization: Bearer {data_token}",
                    "-H", f"x-denokv-database-id: {meta['databaseId']}", "-H", "content-type: application/x-protobuf",
                    "--data-binary", "", d.url + "/v2/snapshot_read")
        assert read.stdout == "200", read.stderr
        forged = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer forged.1.x",
                      d.url + "/v2/snapshot_read")
        assert forged.stdout == "401"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", d.url + f"/nope/{TOKEN}").stdout == "404"

        text, s = scrape(d)
        # Requests by endpoint and status.
        assert value(s, "kvconnectd_requests_total", endpoint="snapshot_read", status="200") >= 2
        assert value(s, "kvconnectd_requests_total", endpoint="atomic_write", status="200") >= 1
        assert value(s, "kvconnectd_requests_total", endpoint="watch", status="200") >= 1
        assert value(s, "kvconnectd_requests_total", endpoint="metadata", status="401") >= 1
        assert value(s, "kvconnectd_requests_total", endpoint="snapshot_read", status="401") >= 1
        assert value(s, "kvconnectd_requests_total", endpoint="other", status="404") >= 1
        assert value(s, "kvconnectd_requests_total", endpoint="metrics", status="200") >= 1
        assert value(s, "kvconnectd_request_duration_seconds_count", endpoint="atomic_write") >= 1
        assert value(s, "kvconnectd_request_duration_seconds_bucket", endpoint="atomic_write", le="+Inf") >= 1
        assert value(s, "kvconnectd_request_duration_seconds_bucket", endpoint="atomic_write", le="0.0001") is not None
        # Engine.
        assert value(s, "kvconnectd_commit_batch_size_count") >= 1
        assert value(s, "kvconnectd_commit_batch_size_sum") >= 2
        assert value(s, "kvconnectd_commit_duration_seconds_count") >= 1
        assert value(s, "kvconnectd_open_watch_streams") >= 1
        assert value(s, "kvconnectd_open_connections", protocol="h2") >= 1
        assert value(s, "kvconnectd_open_connections", protocol="h1") is not None
        assert value(s, "kvconnectd_database_size_bytes", database_id=meta["databaseId"]) > 0
        assert value(s, "kvconnectd_versionstamp_counter") >= 1
        assert value(s, "kvconnectd_queue_messages", state="ready") == 0
        assert value(s, "kvconnectd_queue_messages", state="inflight") == 0
        assert value(s, "kvconnectd_queue_deliveries_total", result="ok") == 0
        assert value(s, "kvconnectd_expired_entries_removed_total") == 0
        assert TOKEN not in text and data_token not in text and "/nope" not in text
    finally:
        watcher.stop()

    # The watch ends when its stream closes.
    deadline = time.time() + 15
    while value(scrape(d)[1], "kvconnectd_open_watch_streams") != 0:
        assert time.time() < deadline, "open_watch_streams never went back to 0"
        time.sleep(0.2)

    for path in ("/healthz", "/readyz", "/metrics"):
        _, _, body = get(d.url, path)
        assert TOKEN not in body and data_token not in body, path
    log = d.log()
    assert TOKEN not in log and data_token not in log
    assert "Bearer" not in log
    assert re.search(r"endpoint=atomic_write .*status=200 .*request$", log, re.M), log[-3000:]


def test_expired_and_queue_metrics(tmp_path):
    from test_queue import data_token, enqueue, queue_call

    d = Daemon(tmp_path / "daemon").start()
    try:
        code = "const kv = await Deno.openKv(Deno.args[0]); await kv.set(['x'], 1, { expireIn: 100 }); kv.close();"
        r = run_deno(["eval", "--unstable-kv", code, d.url])
        assert r.returncode == 0, r.stderr
        enqueue(d.url, ("hello", dict(retry_delays=[])), ("bye", dict(retry_delays=[])))
        deadline = time.time() + 20
        while True:
            _, s = scrape(d)
            if value(s, "kvconnectd_expired_entries_removed_total") >= 1:
                break
            assert time.time() < deadline, "expired entry never counted"
            time.sleep(0.2)
        assert value(s, "kvconnectd_queue_messages", state="ready") == 2

        token, db = data_token(d)
        status, lease = queue_call(d, token, db, "lease", {"waitMs": 5000})
        assert status == 200, lease
        _, s = scrape(d)
        assert value(s, "kvconnectd_queue_messages", state="inflight") == 1
        assert queue_call(d, token, db, "ack", {"id": lease["id"]})[0] == 200
        status, lease = queue_call(d, token, db, "lease", {"waitMs": 5000})
        assert status == 200, lease
        assert queue_call(d, token, db, "fail", {"id": lease["id"]})[0] == 200  # empty schedule: dead letter
        _, s = scrape(d)
        assert value(s, "kvconnectd_queue_deliveries_total", result="ok") == 1
        assert value(s, "kvconnectd_queue_deliveries_total", result="dead_lettered") == 1
        assert value(s, "kvconnectd_queue_messages", state="ready") == 0
        assert value(s, "kvconnectd_queue_messages", state="inflight") == 0
        assert value(s, "kvconnectd_requests_total", endpoint="queue_lease", status="200") == 2
        assert value(s, "kvconnectd_requests_total", endpoint="queue_ack", status="200") == 1
        assert value(s, "kvconnectd_requests_total", endpoint="queue_fail", status="200") == 1
    finally:
        d.stop()


def test_log_format_json(tmp_path):
    d = Daemon(tmp_path / "daemon", extra_args=["--log-format", "json", "--log-level", "debug"]).start()
    try:
        kv_set(d.url, 'j1="x"')
        meta = d.metadata()
        get(d.url, "/healthz")
    finally:
        d.stop()
    lines = [l for l in d.log().splitlines() if l.strip()]
    assert lines
    objects = [json.loads(l) for l in lines]  # every line is one JSON object
    for o in objects:
        assert {"ts", "level", "label", "message"} <= o.keys(), o
    assert any(o["message"] == "kvconnectd listening" and o["level"] == "info" for o in objects)
    requests = [o for o in objects if o["message"] == "request"]
    assert requests and all(o["level"] == "debug" for o in requests)
    writes = [o["metadata"] for o in requests if o["metadata"]["endpoint"] == "atomic_write"]
    assert writes, requests
    w = writes[0]
    assert w["status"] == "200" and w["method"] == "POST" and w["database_id"] == meta["databaseId"]
    assert float(w["duration_ms"]) >= 0 and w["request_id"]
    text = d.log()
    assert TOKEN not in text and meta["token"] not in text


def test_bad_log_format_is_a_config_error(tmp_path):
    d = Daemon(tmp_path / "daemon", extra_args=["--log-format", "xml"])
    with pytest.raises(RuntimeError, match="invalid log format 'xml'"):
        d.start()

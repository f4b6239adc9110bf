"""Queue administration: /admin/queue/... over HTTP with the access token,
the `kvconnectd queue` CLI against the running daemon, the poison-message
limit for pull workers, never-reused message ids, and the queue metrics."""
import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from denokv import open_kv
from v8serialize.jstypes import JSObject

from conftest import BIN, TOKEN, Daemon

RO_TOKEN = "read-only-admin-token-0123456789"


@pytest.fixture
def ad(tmp_path):
    ro = tmp_path / "ro-token"
    ro.write_text(RO_TOKEN)
    d = Daemon(tmp_path / "daemon", extra_args=["--read-only-access-token-file", str(ro),
                                                "--queue-max-leases", "2"]).start()
    yield d
    if d.alive():
        d.stop()


def admin(d, method, path, body=None, token=TOKEN):
    req = urllib.request.Request(f"{d.url}/admin/queue{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def pull(d, op, body):
    m = d.metadata()
    req = urllib.request.Request(f"{d.url}/v2/queue/{op}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {m['token']}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def enqueue(url, *messages):
    async def body():
        kv = await open_kv(url, access_token=TOKEN)
        async with kv:
            for value, kw in messages:
                await kv.enqueue(value, **kw)
    asyncio.run(body())


def kv_get(url, key):
    async def body():
        kv = await open_kv(url, access_token=TOKEN)
        async with kv:
            _, e = await kv.get(key)
            return None if e is None else e.value
    return asyncio.run(body())


def cli(d, *args, token=TOKEN):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
    if token:
        env["DENO_KV_ACCESS_TOKEN"] = token
    return subprocess.run([BIN, "queue", *args, "--url", d.url], capture_output=True, text=True, env=env, timeout=30)


def test_stats_list_peek_delete_purge(ad):
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    enqueue(ad.url, (JSObject(job="a", n=1), dict(retry_delays=[])),
            ("b", dict(delivery_time=later, dead_letter_keys=[("dl", "b")])),
            ("c", dict(delivery_time=later + timedelta(minutes=1))))
    status, s = admin(ad, "GET", "/stats")
    assert status == 200 and (s["ready"], s["delayed"], s["inflight"]) == (1, 2, 0), s
    assert s["oldestDueMs"] <= time.time() * 1000 and s["oldestDueAt"].endswith("Z")
    # Lease the due one: in flight; the oldest due is now b's deadline.
    st, leased = pull(ad, "lease", {"visibilityTimeoutMs": 60000})
    assert st == 200
    _, s = admin(ad, "GET", "/stats")
    assert (s["ready"], s["delayed"], s["inflight"]) == (0, 2, 1), s
    assert abs(s["oldestDueMs"] - later.timestamp() * 1000) < 5

    status, page = admin(ad, "GET", "/messages?limit=2")
    assert status == 200 and len(page["messages"]) == 2 and page["next"] == page["messages"][1]["id"]
    a, b = page["messages"]
    assert a["state"] == "inflight" and a["payload"] == {"job": "a", "n": 1} and a["attempt"] == 1
    assert a["leases"] == 1 and "leaseUntil" in a and a["backoffSchedule"] == []
    assert b["state"] == "delayed" and b["payload"] == "b" and b["keysIfUndelivered"] == [["dl", "b"]]
    _, rest = admin(ad, "GET", f"/messages?after={page['next']}")
    assert [m["payload"] for m in rest["messages"]] == ["c"] and rest["next"] is None

    status, one = admin(ad, "GET", f"/messages/{b['id']}")
    assert status == 200 and one == b
    assert admin(ad, "DELETE", f"/messages/{b['id']}") == (200, {"deleted": 1})
    assert admin(ad, "GET", f"/messages/{b['id']}")[0] == 404
    assert admin(ad, "DELETE", f"/messages/{b['id']}")[0] == 404
    assert kv_get(ad.url, ("dl", "b")) is None, "deleting does not dead-letter"

    assert admin(ad, "POST", "/purge", {}) == (200, {"deleted": 2})
    _, s = admin(ad, "GET", "/stats")
    assert (s["ready"], s["delayed"], s["inflight"], s["oldestDueMs"]) == (0, 0, 0, None)
    # The purged in-flight message can no longer be settled.
    assert pull(ad, "ack", {"id": leased["id"]})[0] == 404


def test_redrive_puts_dead_letters_back(ad):
    enqueue(ad.url, (JSObject(order=7), dict(retry_delays=[], dead_letter_keys=[("dlq", "x")])),
            ("second", dict(retry_delays=[], dead_letter_keys=[("dlq", "y")])))
    for _ in range(2):
        st, m = pull(ad, "lease", {"waitMs": 2000})
        assert st == 200
        assert pull(ad, "fail", {"id": m["id"]})[1]["result"] == "deadLettered"
    assert kv_get(ad.url, ("dlq", "x")) == JSObject(order=7)
    status, r = admin(ad, "POST", "/redrive", {"key": ["dlq", "x"]})
    assert status == 200 and r == {"redriven": 1, "keys": [["dlq", "x"]]}
    assert kv_get(ad.url, ("dlq", "x")) is None, "the dead letter moved back into the queue"
    _, page = admin(ad, "GET", "/messages")
    [m] = page["messages"]
    assert m["payload"] == {"order": 7} and m["keysIfUndelivered"] == [["dlq", "x"]]
    assert m["backoffSchedule"] == [100, 1000, 5000, 30000, 60000] and m["attempt"] == 1
    st, leased = pull(ad, "lease", {"waitMs": 2000})
    assert st == 200 and leased["messageId"] == str(m["id"])
    assert pull(ad, "ack", {"id": leased["id"]})[0] == 200
    # By prefix, through the CLI; a second redrive finds nothing.
    r = cli(ad, "redrive", "--prefix", '["dlq"]')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"redriven": 1, "keys": [["dlq", "y"]]}
    assert json.loads(cli(ad, "redrive", "--prefix", '["dlq"]').stdout)["redriven"] == 0


def test_cli_against_the_running_daemon(ad):
    enqueue(ad.url, ("one", {}), ("two", dict(delivery_time=datetime.now(timezone.utc) + timedelta(hours=1))))
    r = cli(ad, "stats")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["ready"], s["delayed"], s["inflight"]) == (1, 1, 0) and s["databaseId"] == ad.metadata()["databaseId"]
    msgs = json.loads(cli(ad, "list").stdout)["messages"]
    assert [m["payload"] for m in msgs] == ["one", "two"]
    peek = json.loads(cli(ad, "peek", str(msgs[1]["id"])).stdout)
    assert peek["state"] == "delayed"
    assert json.loads(cli(ad, "delete", str(msgs[1]["id"])).stdout) == {"deleted": 1}
    r = cli(ad, "delete", str(msgs[1]["id"]))
    assert r.returncode == 2 and "404" in r.stderr
    r = cli(ad, "purge")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert json.loads(cli(ad, "purge", "--yes").stdout) == {"deleted": 1}
    r = cli(ad, "stats", token="wrong-token-0123456789")
    assert r.returncode == 2 and "401" in r.stderr and "invalid access token" in r.stderr
    r = cli(ad, "stats", token=None)
    assert r.returncode == 2 and "no access token" in r.stderr
    r = cli(ad, "redrive")
    assert r.returncode == 2 and "exactly one" in r.stderr


def test_admin_auth_and_bad_requests(ad):
    assert admin(ad, "GET", "/stats", token=None)[0] == 401
    assert admin(ad, "GET", "/stats", token="nope-nope-nope-nope")[0] == 401
    # A data-plane token is not an access token.
    assert admin(ad, "GET", "/stats", token=ad.metadata()["token"])[0] == 401
    assert admin(ad, "GET", "/stats", token=RO_TOKEN)[0] == 200
    assert admin(ad, "GET", "/messages", token=RO_TOKEN)[0] == 200
    for method, path in [("POST", "/purge"), ("DELETE", "/messages/1"), ("POST", "/redrive")]:
        status, text = admin(ad, method, path, {} if method == "POST" else None, token=RO_TOKEN)
        assert status == 403 and "read-only" in text, (path, status, text)
    assert admin(ad, "GET", "/messages/abc")[0] == 400
    assert admin(ad, "GET", "/messages?limit=-1")[0] == 400
    assert admin(ad, "POST", "/redrive", {"nothing": 1})[0] == 400
    assert admin(ad, "POST", "/redrive", {"key": "not-an-array"})[0] == 400
    assert admin(ad, "POST", "/redrive", {"prefix": []})[0] == 400
    assert admin(ad, "POST", "/redrive", {"key": ["k"], "limit": 0})[0] == 400
    assert admin(ad, "POST", "/stats", {})[0] == 405
    assert admin(ad, "GET", "/purge")[0] == 405
    assert admin(ad, "GET", "/nothing")[0] == 404
    _, s = admin(ad, "GET", "/stats")
    assert (s["ready"], s["delayed"], s["inflight"]) == (0, 0, 0), "nothing changed"


def test_poison_message_dead_lettered_after_max_leases(ad):
    enqueue(ad.url, ("poison", dict(retry_delays=[1, 1], dead_letter_keys=[("poisoned",)])))
    for i in range(2):
        st, m = pull(ad, "lease", {"waitMs": 3000, "visibilityTimeoutMs": 200})
        assert st == 200 and m["attempt"] == 1, (i, st, m)
        # Never acked nor failed: the lease expires (a crashing worker).
        time.sleep(0.3)
    # The next consumer finds the second lease expired: dead-lettered, not leased a third time.
    assert pull(ad, "lease", {"waitMs": 300})[0] == 204, "not leased a third time"
    assert kv_get(ad.url, ("poisoned",)) == "poison", "dead-lettered after --queue-max-leases 2 lost leases"
    assert "leases ended without ack or fail" in ad.log()
    metrics = urllib.request.urlopen(f"{ad.url}/metrics", timeout=10).read().decode()
    assert any(l.startswith("kvconnectd_queue_poison_messages_total") and l.endswith(" 1")
               for l in metrics.splitlines()), metrics


def test_message_ids_are_not_reused(ad):
    ids = []
    for i in range(3):
        enqueue(ad.url, (i, {}))
        st, m = pull(ad, "lease", {"waitMs": 2000})
        assert st == 200
        ids.append(int(m["messageId"]))
        assert pull(ad, "ack", {"id": m["id"]})[0] == 200
    assert ids == sorted(set(ids)) and len(ids) == 3, ids


def test_queue_metrics_by_state_and_delivery_lag(ad):
    enqueue(ad.url, ("now", {}), ("later", dict(delivery_time=datetime.now(timezone.utc) + timedelta(hours=1))))
    st, m = pull(ad, "lease", {"waitMs": 2000})
    assert st == 200
    text = urllib.request.urlopen(f"{ad.url}/metrics", timeout=10).read().decode()
    lines = text.splitlines()

    def value(prefix):
        hits = [l for l in lines if l.startswith(prefix)]
        assert hits, prefix
        return float(hits[0].rsplit(" ", 1)[1])
    assert value('kvconnectd_queue_messages{database_id') is not None
    by_state = {s: [l for l in lines if l.startswith("kvconnectd_queue_messages") and f'state="{s}"' in l]
                for s in ("ready", "delayed", "inflight")}
    assert [float(by_state[s][0].rsplit(" ", 1)[1]) for s in ("ready", "delayed", "inflight")] == [0, 1, 1]
    assert any(l.startswith("kvconnectd_queue_delivery_lag_seconds") for l in lines), text[-2000:]
    assert any(l.startswith("kvconnectd_queue_oldest_due_age_seconds") for l in lines)


def test_batch_lease_and_settle(ad):
    enqueue(ad.url, *[(i, dict(retry_delays=[1])) for i in range(5)])
    st, r = pull(ad, "lease", {"max": 3, "waitMs": 2000})
    assert st == 200 and len(r["messages"]) == 3, r
    ids = [m["id"] for m in r["messages"]]
    assert len({m["messageId"] for m in r["messages"]}) == 3
    st, rest = pull(ad, "lease", {"max": 10})
    assert st == 200 and len(rest["messages"]) == 2, "only what is due; no wait for more"
    st, res = pull(ad, "ack", {"ids": ids[:2] + ["999-1"]})
    assert st == 200
    assert [(x["id"], x["status"], x["result"]) for x in res["results"]] == \
        [(ids[0], 200, "acknowledged"), (ids[1], 200, "acknowledged"), ("999-1", 404, "notFound")]
    st, res = pull(ad, "fail", {"ids": [ids[2]]})
    assert res["results"][0]["result"] == "retryScheduled"
    assert pull(ad, "ack", {"ids": [ids[0]]})[1]["results"][0]["status"] == 404, "already settled"
    for bad in ({"max": 0}, {"max": 257}, {"max": "3"}):
        assert pull(ad, "lease", bad)[0] == 400, bad
    for bad in ({"ids": []}, {"ids": "x"}, {"ids": ["nope"]}, {"ids": ["1-1"] * 257}):
        assert pull(ad, "ack", bad)[0] == 400, bad

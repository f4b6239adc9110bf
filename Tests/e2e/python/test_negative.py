"""Every error path over raw HTTP/1.1 (http.client) and HTTP/2 (curl
--http2-prior-knowledge): documented status, plain-text reason, and the
daemon keeps serving."""
import http.client
import json
import socket
import subprocess
import time

import pytest
from denokv import _datapath_pb2 as pb

PROTO = {"Content-Type": "application/x-protobuf"}


class Client:
    """One request helper per HTTP version, same interface."""

    def __init__(self, daemon, version):
        self.d, self.version = daemon, version

    def request(self, method, path, body=b"", headers=None):
        headers = dict(headers or {})
        if self.version == "1.1":
            c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=10)
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            out = (r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read())
            c.close()
            return out
        args = ["curl", "-sS", "--http2-prior-knowledge", "-X", method, "-D", "-", "-o", "-",
                "--data-binary", "@-", f"{self.d.url}{path}"]
        for k, v in headers.items():
            args += ["-H", f"{k}: {v}"]
        p = subprocess.run(args, input=body, capture_output=True, timeout=20)
        assert p.returncode == 0, p.stderr
        head, _, rest = p.stdout.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/2"), lines[0]
        status = int(lines[0].split()[1])
        hdrs = dict((l.split(":", 1)[0].lower(), l.split(":", 1)[1].strip()) for l in lines[1:] if ":" in l)
        return status, hdrs, rest

    def token(self, versions=(1, 2, 3)):
        st, _, body = self.request("POST", "/", json.dumps({"supportedVersions": list(versions)}).encode(),
                                   {"Authorization": f"Bearer {self.d.token}"})
        assert st == 200, body
        return json.loads(body)

    def data(self, endpoint, msg, token=None, extra=None, raw=None):
        meta = self.token()
        headers = {"Authorization": f"Bearer {token or meta['token']}", "x-denokv-database-id": meta["databaseId"],
                   "x-denokv-version": "3", **PROTO, **(extra or {})}
        body = raw if raw is not None else msg.SerializeToString()
        return self.request("POST", f"/v2/{endpoint}", body, headers)


@pytest.fixture(params=["1.1", "2"])
def client(request, daemon):
    return Client(daemon, request.param)


def healthy(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5):
        pass
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
    c.request("GET", "/healthz")
    return c.getresponse().status == 200


def text_of(body):
    return body.decode("utf-8", errors="replace")


def test_health_and_readiness(client):
    st, h, body = client.request("GET", "/healthz")
    assert st == 200 and text_of(body).strip() == "ok" and h["content-type"].startswith("text/plain")
    st, _, body = client.request("GET", "/readyz")
    assert st == 200 and text_of(body).strip() == "ready"


def test_metadata_exchange_versions(client, daemon):
    for versions, want in [((1, 2, 3), 3), ((1, 2), 2), ((1,), 1), ((1, 2, 3, 99), 3)]:
        meta = client.token(versions)
        assert meta["version"] == want
        assert meta["endpoints"][0]["consistency"] == "strong"
        url = meta["endpoints"][0]["url"]
        assert not url.endswith("/")
        if want == 1:
            assert url == f"http://127.0.0.1:{daemon.port}/v2"
        else:
            assert url == "/v2"
        assert meta["expiresAt"].endswith("Z")
        assert len(meta["databaseId"]) == 36 and meta["databaseId"] == meta["databaseId"].lower()
        assert meta["token"] != daemon.token
    # No body at all: a version-1 client.
    st, _, body = client.request("POST", "/", b"", {"Authorization": f"Bearer {daemon.token}"})
    assert st == 200 and json.loads(body)["version"] == 1
    assert json.loads(body)["endpoints"][0]["url"].startswith("http://")


@pytest.mark.parametrize("body,needle", [
    (b'{"supportedVersions":[4,5]}', "no common protocol version"),
    (b'{"supportedVersions":"3"}', "invalid metadata exchange body"),
    (b'{"supportedVersions":[1.5]}', "invalid metadata exchange body"),
    (b'{not json', "invalid metadata exchange body"),
    (b'\xff\xfe{"supportedVersions":[3]}', "UTF-8"),
    (b'[1,2,3]', "invalid metadata exchange body"),
])
def test_metadata_exchange_bad_bodies(client, daemon, body, needle):
    st, h, resp = client.request("POST", "/", body, {"Authorization": f"Bearer {daemon.token}"})
    assert st == 400, resp
    assert needle in text_of(resp)
    assert h["content-type"].startswith("text/plain")


def test_metadata_exchange_tokens(client):
    body = b'{"supportedVersions":[3]}'
    st, _, resp = client.request("POST", "/", body)
    assert st == 401 and "missing access token" in text_of(resp)
    st, _, resp = client.request("POST", "/", body, {"Authorization": "Bearer not-the-token-at-all"})
    assert st == 401 and text_of(resp).strip() == "invalid access token"
    st, _, resp = client.request("POST", "/", body, {"Authorization": "Basic abc"})
    assert st == 401


def test_data_path_token_errors(client, daemon):
    read = pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x02a\x00", end=b"\x02a\x00\x00", limit=1)])
    st, _, body = client.data("snapshot_read", read)
    assert st == 200
    out = pb.SnapshotReadOutput.FromString(body)
    assert out.read_is_strongly_consistent and out.status == pb.SR_SUCCESS and len(out.ranges) == 1
    # The access token is not a data-plane token.
    st, _, body = client.data("snapshot_read", read, token=daemon.token)
    assert st == 401 and "invalid data-plane token" in text_of(body)
    # Forged: a valid token with one character of the signature changed.
    good = client.token()["token"]
    forged = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    st, _, body = client.data("snapshot_read", read, token=forged)
    assert st == 401
    # Missing Authorization.
    st, _, body = client.request("POST", "/v2/snapshot_read", read.SerializeToString(), PROTO)
    assert st == 401 and "missing data-plane token" in text_of(body)
    # A token for another database id.
    st, _, body = client.data("snapshot_read", read, extra={"x-denokv-database-id": "00000000-0000-0000-0000-000000000000"})
    assert st == 401 and "not valid for database" in text_of(body)


def test_expired_data_plane_token(tmp_path):
    from conftest import Daemon
    d = Daemon(tmp_path / "short", extra_args=["--token-lifetime-seconds", "10"]).start()
    try:
        c = Client(d, "1.1")
        meta = c.token()
        read = pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x02a\x00", end=b"\x02b\x00", limit=1)])
        st, _, _ = c.data("snapshot_read", read, token=meta["token"])
        assert st == 200
        time.sleep(10.5)
        st, _, body = c.data("snapshot_read", read, token=meta["token"])
        assert st == 401 and "expired" in text_of(body)
    finally:
        d.stop()


def test_malformed_protobuf(client, daemon):
    for endpoint in ("snapshot_read", "atomic_write"):
        st, _, body = client.data(endpoint, None, raw=b"\xff\xff\xff\xff garbage")
        assert st == 400 and "not a valid" in text_of(body), body
    assert healthy(daemon)


def key(s: str) -> bytes:
    return b"\x02" + s.encode() + b"\x00"


def setm(k, v=b"\xff\x0f\x49\x02", enc=pb.VE_V8, **kw):
    return pb.Mutation(key=k, value=pb.KvValue(data=v, encoding=enc), mutation_type=pb.M_SET, **kw)


LIMIT_CASES = [
    ("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=b"", end=b"\xff", limit=1)] * 11), "too many read ranges"),
    ("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=b"", end=b"\xff", limit=1001)]), "too many entries"),
    ("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=b"", end=b"\xff", limit=600)] * 2), "too many entries"),
    ("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=b"", end=b"\xff", limit=0)]), "limit"),
    ("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x01" * 2050, end=b"\xff", limit=1)]), "key too large"),
    ("atomic_write", pb.AtomicWrite(checks=[pb.Check(key=key(f"c{i}")) for i in range(101)]), "too many checks"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(key(f"m{i}")) for i in range(1001)]), "too many mutations"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(b"\x01" * 2049)]), "key too large"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(b"")]), "empty"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(key("big"), v=b"x" * 65537, enc=pb.VE_BYTES)]), "value too large"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(key(f"t{i}"), v=b"x" * 60000, enc=pb.VE_BYTES) for i in range(14)]), "atomic write too large"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(key("enc"), enc=pb.VE_UNSPECIFIED)]), "unknown value encoding"),
    ("atomic_write", pb.AtomicWrite(mutations=[setm(key("enc"), enc=7)]), "unknown value encoding"),
    ("atomic_write", pb.AtomicWrite(mutations=[pb.Mutation(key=key("t"), mutation_type=77)]), "unknown mutation type"),
    ("atomic_write", pb.AtomicWrite(mutations=[pb.Mutation(key=key("t"), mutation_type=pb.M_SET)]), "missing value"),
    ("atomic_write", pb.AtomicWrite(checks=[pb.Check(key=key("c"), versionstamp=b"\x00" * 5)]), "invalid check versionstamp"),
    ("atomic_write", pb.AtomicWrite(mutations=[pb.Mutation(key=key("s"), value=pb.KvValue(data=b"\x01", encoding=pb.VE_BYTES), mutation_type=pb.M_SUM)]), "non-U64 operand"),
    ("atomic_write", pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"\xff\x0f\x49\x02", deadline_ms=int(time.time() * 1000) + 31 * 86400 * 1000)]), "enqueue delay too long"),
    ("atomic_write", pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"\xff\x0f\x49\x02", keys_if_undelivered=[key(str(i)) for i in range(11)])]), "keys_if_undelivered"),
    ("atomic_write", pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"\xff\x0f\x49\x02", backoff_schedule=[1] * 11)]), "backoff schedule too long"),
    ("atomic_write", pb.AtomicWrite(enqueues=[pb.Enqueue(payload=b"\xff\x0f\x49\x02", backoff_schedule=[3600001])]), "backoff delay too long"),
]


@pytest.mark.parametrize("endpoint,msg,needle", LIMIT_CASES, ids=[c[2] + f"-{i}" for i, c in enumerate(LIMIT_CASES)])
def test_every_limit(client, daemon, endpoint, msg, needle):
    st, h, body = client.data(endpoint, msg)
    assert st == 400, (st, body)
    assert needle in text_of(body), text_of(body)
    assert h["content-type"].startswith("text/plain")


def test_limits_at_the_boundary_are_accepted(client):
    ok = pb.AtomicWrite(checks=[pb.Check(key=key(f"c{i}")) for i in range(100)],
                        mutations=[setm(key("boundary"), v=b"x" * 65536, enc=pb.VE_BYTES),
                                   setm(b"\x01" + b"k" * 2047)])
    st, _, body = client.data("atomic_write", ok)
    assert st == 200, body
    out = pb.AtomicWriteOutput.FromString(body)
    assert out.status == pb.AW_SUCCESS and len(out.versionstamp) == 10
    read = pb.SnapshotRead(ranges=[pb.ReadRange(start=b"\x01" * 2049, end=b"\xff", limit=1000)])
    st, _, body = client.data("snapshot_read", read)
    assert st == 200


def test_nothing_applied_after_a_rejected_write(client):
    k = key(f"rejected-{client.version}-{time.time()}")
    bad = pb.AtomicWrite(mutations=[setm(k), setm(key("x"), enc=pb.VE_UNSPECIFIED)])
    st, _, _ = client.data("atomic_write", bad)
    assert st == 400
    st, _, body = client.data("snapshot_read", pb.SnapshotRead(ranges=[pb.ReadRange(start=k, end=k + b"\x00", limit=1)]))
    assert st == 200 and len(pb.SnapshotReadOutput.FromString(body).ranges[0].values) == 0


def test_check_failure_reports_failed_indexes(client):
    k1, k2 = key(f"cf1-{client.version}-{time.time()}"), key(f"cf2-{client.version}-{time.time()}")
    st, _, body = client.data("atomic_write", pb.AtomicWrite(mutations=[setm(k1)]))
    vs = pb.AtomicWriteOutput.FromString(body).versionstamp
    w = pb.AtomicWrite(checks=[pb.Check(key=k1), pb.Check(key=k2), pb.Check(key=k1, versionstamp=vs),
                               pb.Check(key=k2, versionstamp=vs)], mutations=[setm(k2)])
    st, _, body = client.data("atomic_write", w)
    assert st == 200
    out = pb.AtomicWriteOutput.FromString(body)
    assert out.status == pb.AW_CHECK_FAILURE and list(out.failed_checks) == [0, 3]


def test_wrong_content_type(client):
    st, _, body = client.data("snapshot_read", pb.SnapshotRead(), extra={"Content-Type": "application/json"})
    assert st == 415 and "unsupported content type" in text_of(body)


def test_unknown_path_and_wrong_method(client):
    st, _, body = client.request("GET", "/nope")
    assert st == 404 and "not found" in text_of(body)
    st, h, body = client.request("GET", "/v2/snapshot_read")
    assert st == 405 and h.get("allow") == "POST"
    st, h, _ = client.request("GET", "/")
    assert st == 405 and h.get("allow") == "POST"
    st, h, _ = client.request("DELETE", "/healthz")
    assert st == 405


def test_oversized_body_gets_413(client, daemon):
    big = b"\x00" * (1_048_576 + 10)
    if client.version == "1.1":
        # Announce the size and send only a little: the daemon must answer 413
        # from the headers alone, without waiting for (or buffering) the body.
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        s.sendall(b"POST /v2/atomic_write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n"
                  b"Content-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\n" % len(big) + big[:1000])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
    else:
        st, _, body = client.request("POST", "/v2/atomic_write", big, {"Authorization": "Bearer x", **PROTO})
        assert st == 413, body
        assert b"exceeds the limit" in body
    assert healthy(daemon)


def test_daemon_keeps_serving_after_garbage(daemon):
    for payload in (b"\x00\x01garbage\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort"):
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(65536)
        except OSError:
            pass
        s.close()
    assert healthy(daemon)

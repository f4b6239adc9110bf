"""The same core operations over HTTP/1.1 with Python's denokv client from
PyPI (a second, independent KV Connect implementation)."""
import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from denokv import KvU64, open_kv

from conftest import DENO, TOKEN, run_deno


def run(coro):
    return asyncio.run(coro)


async def session(daemon, fn):
    kv = await open_kv(daemon.url, access_token=TOKEN)
    async with kv:
        return await fn(kv)


def test_set_get_delete_list(daemon):
    async def body(kv):
        vs = await kv.set(("py", "a"), "hello")
        await kv.set(("py", "b"), {"n": 1, "list": [1, 2]})
        await kv.set(("py", "c"), b"\x00\x01")
        key, entry = await kv.get(("py", "a"))
        assert entry is not None and entry.value == "hello" and entry.versionstamp == vs
        many = await kv.get(("py", "a"), ("py", "missing"), ("py", "c"))
        assert many[1][1] is None and many[2][1].value == b"\x00\x01"
        listed = [e async for e in kv.list(prefix=("py",))]
        assert [tuple(e.key) for e in listed] == [("py", "a"), ("py", "b"), ("py", "c")]
        rev = [e async for e in kv.list(prefix=("py",), reverse=True, limit=2)]
        assert [tuple(e.key) for e in rev] == [("py", "c"), ("py", "b")]
        await kv.delete(("py", "b"))
        assert (await kv.get(("py", "b")))[1] is None
    run(session(daemon, body))


def test_atomic_check_and_kvu64_sum(daemon):
    async def body(kv):
        vs = await kv.set(("pyatomic", "x"), 1)
        ok = await kv.atomic().check(("pyatomic", "x"), vs).set(("pyatomic", "x"), 2).write()
        assert ok.ok
        conflict = await kv.atomic().check(("pyatomic", "x"), vs).set(("pyatomic", "x"), 3).write()
        assert not conflict.ok
        await kv.sum(("pyatomic", "u"), KvU64(2**64 - 1))
        await kv.sum(("pyatomic", "u"), KvU64(3))
        assert (await kv.get(("pyatomic", "u")))[1].value == KvU64(2)
    run(session(daemon, body))


def test_v8_number_and_bigint_sums_with_limits(daemon):
    async def body(kv):
        await kv.sum_float(("pysum", "f"), 1.5)
        await kv.sum_float(("pysum", "f"), 2.25)
        assert (await kv.get(("pysum", "f")))[1].value == 3.75
        await kv.sum_bigint(("pysum", "b"), 2**70)
        await kv.sum_bigint(("pysum", "b"), -1)
        b = (await kv.get(("pysum", "b")))[1].value
        assert int(b) == 2**70 - 1
        await kv.sum_float(("pysum", "c"), 8.0, clamp_over=10.0)
        await kv.sum_float(("pysum", "c"), 8.0, clamp_over=10.0)
        assert (await kv.get(("pysum", "c")))[1].value == 10.0
        with pytest.raises(Exception) as e:
            await kv.sum_float(("pysum", "c"), 5.0, abort_over=12.0)
        # A 4xx (not retried): the client reports the response as unsuccessful.
        assert "ResponseUnsuccessful" in str(e.value)
        assert (await kv.get(("pysum", "c")))[1].value == 10.0
    run(session(daemon, body))


def test_enqueue_is_persisted_and_values_readable_by_deno(daemon):
    async def body(kv):
        vs = await kv.enqueue({"job": 1}, delivery_time=datetime.now(timezone.utc) + timedelta(seconds=60),
                              dead_letter_keys=[("pyq", "dead")])
        assert vs is not None
        await kv.set(("pyshared", "from-python"), {"x": [1, "two"]})
    run(session(daemon, body))
    script = 'const kv = await Deno.openKv(Deno.args[0]); const v = (await kv.get(["pyshared", "from-python"])).value; console.log(JSON.stringify(v instanceof Map ? Object.fromEntries(v) : v)); kv.close();'
    path = daemon.workdir / "pyshared.ts"
    path.write_text(script)
    r = run_deno(["run", "--unstable-kv", "-A", str(path), daemon.url])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"x": [1, "two"]}

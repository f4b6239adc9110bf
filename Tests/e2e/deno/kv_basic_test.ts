// End-to-end: the real Deno CLI against kvconnectd (HTTP/2), compared with
// Deno's built-in local database wherever results can be compared.
import assert from "node:assert/strict";

const URL = Deno.env.get("KV_URL")!;
const opts = { sanitizeResources: false, sanitizeOps: false };

async function both<T>(fn: (kv: Deno.Kv, prefix: string) => Promise<T>): Promise<[T, T]> {
  const prefix = crypto.randomUUID();
  const remote = await Deno.openKv(URL);
  const local = await Deno.openKv(":memory:");
  try {
    return [await fn(remote, prefix), await fn(local, prefix)];
  } finally {
    remote.close();
    local.close();
  }
}

function stripVersionstamps<T>(x: T): T {
  return JSON.parse(JSON.stringify(x, (k, v) => {
    if (k === "versionstamp") return v === null ? null : "vs";
    if (typeof v === "bigint") return `bigint:${v}`;
    if (v instanceof Deno.KvU64) return `u64:${v.value}`;
    if (v instanceof Uint8Array) return `bytes:${Array.from(v)}`;
    return v;
  }));
}

Deno.test({ name: "get/set/delete round trip", ...opts, fn: async () => {
  const kv = await Deno.openKv(URL);
  const key = ["basic", crypto.randomUUID()];
  assert.equal((await kv.get(key)).value, null);
  assert.equal((await kv.get(key)).versionstamp, null);
  const r = await kv.set(key, "hello");
  assert.equal(r.ok, true);
  assert.match(r.versionstamp, /^[0-9a-f]{20}$/);
  const got = await kv.get(key);
  assert.equal(got.value, "hello");
  assert.equal(got.versionstamp, r.versionstamp);
  await kv.delete(key);
  assert.equal((await kv.get(key)).value, null);
  kv.close();
}});

Deno.test({ name: "versionstamps strictly increase", ...opts, fn: async () => {
  const kv = await Deno.openKv(URL);
  let last = "";
  for (let i = 0; i < 20; i++) {
    const r = await kv.set(["vs", i], i);
    assert.ok(r.versionstamp > last, `${r.versionstamp} > ${last}`);
    last = r.versionstamp;
  }
  kv.close();
}});

const VALUES: [string, unknown][] = [
  ["string", "héllo wörld ✓"], ["empty string", ""], ["number", 42.5], ["negative", -7],
  ["NaN", NaN], ["Infinity", Infinity], ["-0", -0], ["bigint", 12345678901234567890123n],
  ["negative bigint", -5n], ["true", true], ["false", false], ["null", null],
  ["undefined", undefined], ["Uint8Array", new Uint8Array([0, 1, 2, 255])],
  ["Date", new Date("2024-01-02T03:04:05.678Z")], ["RegExp", /ab+c/gi],
  ["array", [1, "two", [3], { four: 4 }]], ["object", { a: 1, b: { c: [true, null] } }],
  ["Map", new Map<unknown, unknown>([["k", 1], [2, "v"]])], ["Set", new Set([1, "a"])],
  ["KvU64", new Deno.KvU64(18446744073709551615n)], ["big string", "x".repeat(60000)],
];

Deno.test({ name: "every value type round-trips like the local database", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    const out: unknown[] = [];
    for (const [name, v] of VALUES) {
      await kv.set([p, name], v);
      out.push((await kv.get([p, name])).value);
    }
    return out;
  });
  for (let i = 0; i < VALUES.length; i++) {
    assert.deepStrictEqual(remote[i], local[i], `value type ${VALUES[i][0]}`);
    if (!(VALUES[i][1] instanceof Deno.KvU64)) assert.deepStrictEqual(remote[i], VALUES[i][1], VALUES[i][0]);
  }
  assert.equal((remote[VALUES.findIndex(v => v[0] === "KvU64")] as Deno.KvU64).value, 18446744073709551615n);
}});

const KEY_PARTS: Deno.KvKeyPart[] = [
  new Uint8Array([]), new Uint8Array([0, 0xff, 1]), new Uint8Array([2]),
  "", "a", "a\u0000b", "b", "é", "🙂",
  -1n, 0n, 1n, 2n ** 70n, -(2n ** 70n),
  -Infinity, -1.5, -0, 0, 1, 2.5, Infinity, NaN,
  false, true,
];

Deno.test({ name: "every key part type, in the local database's order", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    for (const [i, part] of KEY_PARTS.entries()) await kv.set([p, part], i);
    const seen: [Deno.KvKey, unknown][] = [];
    for await (const e of kv.list({ prefix: [p] })) seen.push([e.key, e.value]);
    const direct: unknown[] = [];
    for (const part of KEY_PARTS) direct.push((await kv.get([p, part])).value);
    return { seen, direct };
  });
  assert.equal(remote.seen.length, KEY_PARTS.length);
  assert.deepStrictEqual(remote.seen, local.seen);
  assert.deepStrictEqual(remote.direct, local.direct);
}});

Deno.test({ name: "getMany", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    await kv.set([p, 1], "one");
    await kv.set([p, 3], "three");
    const r = await kv.getMany([[p, 1], [p, 2], [p, 3], [p, "x"]]);
    return r.map(e => [e.key, e.value, e.versionstamp === null]);
  });
  assert.deepStrictEqual(remote, local);
}});

Deno.test({ name: "list: prefix, start, end, reverse, limit, batchSize, cursor", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    for (let i = 0; i < 250; i++) await kv.set([p, "items", i], { i });
    await kv.set([p, "other"], 1);
    const collect = async (it: Deno.KvListIterator<unknown>) => {
      const out: unknown[] = [];
      for await (const e of it) out.push([e.key, e.value]);
      return out;
    };
    const results: Record<string, unknown> = {};
    results.prefix = await collect(kv.list({ prefix: [p, "items"] }));
    results.reverse = await collect(kv.list({ prefix: [p, "items"] }, { reverse: true }));
    results.limit = await collect(kv.list({ prefix: [p, "items"] }, { limit: 7 }));
    results.revlimit = await collect(kv.list({ prefix: [p, "items"] }, { limit: 7, reverse: true }));
    results.batch = await collect(kv.list({ prefix: [p, "items"] }, { batchSize: 13 }));
    results.startEnd = await collect(kv.list({ start: [p, "items", 10], end: [p, "items", 20] }));
    results.prefixStart = await collect(kv.list({ prefix: [p, "items"], start: [p, "items", 240] }));
    results.prefixEnd = await collect(kv.list({ prefix: [p, "items"], end: [p, "items", 3] }));
    const it = kv.list({ prefix: [p, "items"] }, { limit: 10 });
    results.page1 = await collect(it);
    const cursor = it.cursor;
    results.page2 = await collect(kv.list({ prefix: [p, "items"] }, { limit: 10, cursor }));
    results.page2rev = await collect(kv.list({ prefix: [p, "items"] }, { limit: 10, cursor, reverse: true }));
    results.consistencyEventual = await collect(kv.list({ prefix: [p, "items"] }, { limit: 3, consistency: "eventual" }));
    return results;
  });
  assert.equal((remote.prefix as unknown[]).length, 250);
  for (const k of Object.keys(local)) assert.deepStrictEqual(remote[k], local[k], k);
}});

Deno.test({ name: "atomic: checks succeed and fail like the local database", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    const out: unknown[] = [];
    const a = await kv.set([p, "a"], 1);
    out.push((await kv.atomic().check({ key: [p, "a"], versionstamp: a.versionstamp }).set([p, "a"], 2).commit()).ok);
    out.push((await kv.atomic().check({ key: [p, "a"], versionstamp: a.versionstamp }).set([p, "a"], 3).commit()).ok);
    out.push((await kv.atomic().check({ key: [p, "new"], versionstamp: null }).set([p, "new"], "n").commit()).ok);
    out.push((await kv.atomic().check({ key: [p, "new"], versionstamp: null }).set([p, "new"], "m").commit()).ok);
    out.push((await kv.get([p, "a"])).value, (await kv.get([p, "new"])).value);
    // A failed check applies nothing, including other mutations.
    out.push((await kv.atomic().check({ key: [p, "a"], versionstamp: null }).set([p, "z"], 1).delete([p, "a"]).commit()).ok);
    out.push((await kv.get([p, "z"])).value, (await kv.get([p, "a"])).value);
    // 100 checks (Deno's own maximum) are accepted.
    let op = kv.atomic();
    for (let i = 0; i < 100; i++) op = op.check({ key: [p, "c", i], versionstamp: null });
    out.push((await op.set([p, "hundred"], true).commit()).ok);
    return out;
  });
  assert.deepStrictEqual(remote, local);
  assert.deepStrictEqual(remote, [true, false, true, false, 2, "n", false, null, 2, true]);
}});

Deno.test({ name: "atomic: every mutation kind", ...opts, fn: async () => {
  const [remote, local] = await both(async (kv, p) => {
    const U = (n: bigint) => new Deno.KvU64(n);
    await kv.atomic()
      .set([p, "s"], "v")
      .sum([p, "sum"], 5n).sum([p, "sum"], 7n)
      .sum([p, "wrap"], 18446744073709551615n).sum([p, "wrap"], 2n)
      .min([p, "min"], 10n).min([p, "min"], 3n).min([p, "min"], 8n)
      .max([p, "max"], 10n).max([p, "max"], 30n).max([p, "max"], 8n)
      .set([p, "gone"], 1).delete([p, "gone"])
      .set([p, "twice"], 1).set([p, "twice"], 2)
      .mutate({ type: "set", key: [p, "m"], value: U(1n) }, { type: "sum", key: [p, "m"], value: U(1n) })
      .commit();
    const keys = ["s", "sum", "wrap", "min", "max", "gone", "twice", "m"];
    return stripVersionstamps((await kv.getMany(keys.map(k => [p, k]))).map(e => e.value));
  });
  assert.deepStrictEqual(remote, local);
  assert.deepStrictEqual(remote, ["v", "u64:12", "u64:1", "u64:3", "u64:30", null, 2, "u64:2"]);
}});

Deno.test({ name: "atomic: sum on a non-U64 value fails with the documented text and applies nothing", ...opts, fn: async () => {
  const kv = await Deno.openKv(URL);
  const p = crypto.randomUUID();
  await kv.set([p, "str"], "not a number");
  await assert.rejects(
    kv.atomic().set([p, "before"], 1).sum([p, "str"], 1n).commit(),
    (e: Error) => e.message.includes("Failed to perform 'sum' mutation on a non-U64 value in the database"));
  assert.equal((await kv.get([p, "before"])).value, null, "all-or-nothing");
  await assert.rejects(kv.atomic().min([p, "str"], 1n).commit(),
    (e: Error) => e.message.includes("Failed to perform 'min' mutation on a non-U64 value in the database"));
  await assert.rejects(kv.atomic().max([p, "str"], 1n).commit(),
    (e: Error) => e.message.includes("Failed to perform 'max' mutation on a non-U64 value in the database"));
  // The daemon keeps serving after a 4xx.
  assert.equal((await kv.get([p, "str"])).value, "not a number");
  kv.close();
}});

Deno.test({ name: "commitVersionstamp() as the last key part", ...opts, fn: async () => {
  const kv = await Deno.openKv(URL);
  const p = crypto.randomUUID();
  const r = await kv.atomic().set([p, kv.commitVersionstamp()], "stamped").commit();
  assert.ok(r.ok);
  const entries = await Array.fromAsync(kv.list({ prefix: [p] }));
  assert.equal(entries.length, 1);
  assert.equal(entries[0].key[1], r.versionstamp);
  assert.equal(entries[0].value, "stamped");
  assert.equal(entries[0].versionstamp, r.versionstamp);
  kv.close();
}});

Deno.test({ name: "expireIn hides the entry once expired", ...opts, fn: async () => {
  const kv = await Deno.openKv(URL);
  const p = crypto.randomUUID();
  await kv.set([p, "short"], "x", { expireIn: 700 });
  await kv.set([p, "long"], "y", { expireIn: 600_000 });
  assert.equal((await kv.get([p, "short"])).value, "x");
  await new Promise(r => setTimeout(r, 1200));
  assert.equal((await kv.get([p, "short"])).value, null);
  assert.equal((await kv.get([p, "long"])).value, "y");
  const listed = await Array.fromAsync(kv.list({ prefix: [p] }));
  assert.deepStrictEqual(listed.map(e => e.key[1]), ["long"]);
  // An expired key counts as absent for checks.
  const ok = await kv.atomic().check({ key: [p, "short"], versionstamp: null }).set([p, "short"], "again").commit();
  assert.equal(ok.ok, true);
  kv.close();
}});

// Value compatibility of clients/deno/queue.ts with Deno.Kv
// (Tests/e2e/python/test_deno_queue.py). Run with --unstable-kv.
//   bytes URL OUT.json   Deno.Kv's kv.set stores every value under ["qv", name];
//                        OUT.json gets the module's encoding of the same values
//                        ({name: {encoding, core, node}} hex per codec) to be
//                        compared with the stored bytes.
//   roundtrip URL        the module enqueues every value (dead letter key
//                        ["qdl", name], no retry), its listener receives and
//                        fails each; prints {name: "ok" | reason} comparing
//                        what the listener got and what Deno.Kv's kv.get reads
//                        at the dead-letter key with the original.
//   receive URL N        the module's listener receives N messages (enqueued by
//                        another client) and prints them tagged, one JSON list.
import { isDeepStrictEqual } from "node:util";
import { openKv } from "../../../clients/deno/queue.ts";
import { encodeValue, serializeV8, v8Codec } from "../../../clients/deno/wire.ts";

const [mode, url, arg] = Deno.args;

const cyclic: Record<string, unknown> = { name: "cyclic" };
cyclic.self = cyclic;
const shared = { s: 1 };
// Every kind of value Deno.Kv can store (V8 structured clone for storage).
const values: Record<string, unknown> = {
  string: "hello", unicode: "héllo ✓ 🦕", empty: "", int: 42, negative: -7, float: 3.25,
  bignum: 2 ** 53, nan: NaN, infinity: -Infinity, negzero: -0, bigint: 12n, hugebigint: -(2n ** 130n),
  true: true, false: false, null: null, undefined: undefined,
  array: [1, "two", [3]], sparse: [1, , 3], object: { a: 1, b: { c: [true] }, 7: "idx" },
  map: new Map<unknown, unknown>([["k", 1], [2, "v"], [{ o: 1 }, new Set([1])]]), set: new Set([1, "x"]),
  date: new Date(1700000000123), invaliddate: new Date(NaN), regexp: /ab+c/gimsuy,
  uint8array: new Uint8Array([0, 1, 255]), int8array: new Int8Array([-1]), uint16array: new Uint16Array([65535]),
  int32array: new Int32Array([-1, 2]), uint32array: new Uint32Array([4294967295]),
  float32array: new Float32Array([0.5]), float64array: new Float64Array([1.5]),
  bigint64array: new BigInt64Array([-1n]), biguint64array: new BigUint64Array([2n ** 64n - 1n]),
  uint8clamped: new Uint8ClampedArray([300 as number]), subarray: new Uint8Array([1, 2, 3, 4, 5]).subarray(1, 3),
  arraybuffer: new Uint8Array([9, 8]).buffer, dataview: new DataView(new Uint8Array([1, 2, 3]).buffer),
  error: new Error("boom"), typeerror: new TypeError("bad type"), rangeerror: new RangeError("r"),
  boxedstring: new String("boxed"), boxednumber: new Number(5), boxedbool: new Boolean(false),
  boxedbigint: Object(7n), cyclic, sharedrefs: [shared, shared],
  nested: { list: [new Map([["d", new Date(0)]]), { deep: [[[-0]]] }] },
};

const tag = (v: unknown) => Object.prototype.toString.call(v);
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function same(a: unknown, b: unknown): string {
  if (isDeepStrictEqual(a, b) && tag(a) === tag(b)) return "ok";
  return `differs: got ${tag(a)} ${Deno.inspect(a)}, expected ${tag(b)} ${Deno.inspect(b)}`;
}

if (mode === "bytes") {
  const kv = await Deno.openKv(url);
  const all: Record<string, unknown> = { ...values, kvu64: new Deno.KvU64(2n ** 64n - 2n), topbytes: new Uint8Array([0, 7]) };
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(all)) {
    await kv.set(["qv", name], v);
    const e = encodeValue(v);
    out[name] = {
      encoding: e.encoding,
      core: e.encoding === 1 && v8Codec === "core" ? hex(serializeV8(v, "core")) : hex(e.data),
      node: e.encoding === 1 ? hex(serializeV8(v, "node:v8")) : hex(e.data),
    };
  }
  Deno.writeTextFileSync(arg, JSON.stringify({ codec: v8Codec, values: out }));
  kv.close();
} else if (mode === "roundtrip") {
  const q = await openKv(url);
  const names = Object.keys(values);
  for (const name of names) {
    await q.enqueue(values[name], { keysIfUndelivered: [["qdl", name]], backoffSchedule: [] });
  }
  // One handler at a time: delivered by deadline then id, i.e. in enqueue order.
  const got: unknown[] = [];
  await q.listenQueue((v) => {
    got.push(v);
    if (got.length === names.length) q.close();
    throw new Error("dead-letter me");
  }, { concurrency: 1 });
  const kv = await Deno.openKv(url);
  const out: Record<string, string> = {};
  for (const [i, name] of names.entries()) {
    out[`listener:${name}`] = same(got[i], values[name]);
    let e = await kv.get(["qdl", name]);
    for (let t = 0; e.versionstamp === null && t < 100; t++) {
      await new Promise((r) => setTimeout(r, 50));
      e = await kv.get(["qdl", name]);
    }
    out[`deadletter:${name}`] = e.versionstamp === null ? "no dead letter" : same(e.value, values[name]);
  }
  console.log(JSON.stringify(out));
  kv.close();
} else if (mode === "receive") {
  const q = await openKv(url);
  const got: unknown[] = [];
  const n = Number(arg);
  await q.listenQueue((v) => {
    got.push(v);
    if (got.length === n) q.close();
  }, { concurrency: 1 });
  // A JSON view that keeps the JS types visible to the Python side.
  const view = (v: unknown): unknown => {
    if (typeof v === "bigint") return { $bigint: String(v) };
    if (v === undefined) return { $undefined: true };
    if (v instanceof Map) return { $map: [...v].map(([k, x]) => [view(k), view(x)]) };
    if (v instanceof Set) return { $set: [...v].map(view) };
    if (v instanceof Date) return { $date: v.getTime() };
    if (v instanceof RegExp) return { $regexp: [v.source, v.flags] };
    if (v instanceof ArrayBuffer) return { $arraybuffer: [...new Uint8Array(v)] };
    if (ArrayBuffer.isView(v)) return { [`$${tag(v).slice(8, -1)}`]: [...new Uint8Array(v.buffer, v.byteOffset, v.byteLength)] };
    if (Array.isArray(v)) return v.map(view);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, view(x)]));
    return v;
  };
  console.log(JSON.stringify(got.map(view)));
}

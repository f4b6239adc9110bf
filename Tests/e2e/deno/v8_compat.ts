// Does node:v8's deserialize decode what Deno's KV serializer writes (the same
// serializer as kv.enqueue payloads) and what Python's denokv writes?
//   write URL           — Deno stores one value per type under ["v8compat", "deno", name]
//   check URL RAW.json  — RAW.json: [{key: hex, value: hex}] of the raw V8 bytes
//                         (read from SQLite); compares node:v8 deserialize with
//                         Deno's own kv.get, prints {name: "ok" | reason}
import { deserialize } from "node:v8";
import { Buffer } from "node:buffer";
import { isDeepStrictEqual } from "node:util";

const [mode, url, rawFile] = Deno.args;
const kv = await Deno.openKv(url);

const cyclic: Record<string, unknown> = { name: "cyclic" };
cyclic.self = cyclic;
const values: Record<string, unknown> = {
  string: "hello", unicode: "héllo ✓ 🦕", empty: "", int: 42, negative: -7, float: 3.25,
  nan: NaN, infinity: -Infinity, negzero: -0, bigint: 12n, hugebigint: -(2n ** 130n),
  true: true, false: false, null: null, undefined: undefined,
  array: [1, "two", [3]], sparse: [1, , 3], object: { a: 1, b: { c: [true] } },
  map: new Map<unknown, unknown>([["k", 1], [2, "v"]]), set: new Set([1, "x"]),
  date: new Date(1700000000123), regexp: /ab+c/gi,
  uint8array: new Uint8Array([0, 1, 255]), int32array: new Int32Array([-1, 2]),
  float64array: new Float64Array([1.5]), arraybuffer: new Uint8Array([9, 8]).buffer,
  dataview: new DataView(new Uint8Array([1, 2, 3]).buffer),
  error: new Error("boom"), typeerror: new TypeError("bad type"),
  boxedstring: new String("boxed"), boxednumber: new Number(5), cyclic,
};

if (mode === "write") {
  for (const [name, v] of Object.entries(values)) {
    try {
      // Wrapped in an array: a top-level Uint8Array would be stored as raw bytes, not V8.
      await kv.set(["v8compat", "deno", name], [v]);
    } catch (e) {
      console.error(`deno cannot store ${name}: ${e}`);
    }
  }
  console.log(JSON.stringify({ written: Object.keys(values).length }));
} else {
  const raw: { key: string; value: string }[] = JSON.parse(Deno.readTextFileSync(rawFile));
  const byKey = new Map(raw.map((r) => [r.key, r.value]));
  const out: Record<string, string> = {};
  for await (const e of kv.list({ prefix: ["v8compat"] })) {
    const name = `${String(e.key[1])}:${String(e.key[2])}`;
    // Raw key bytes: tuple-encoded strings (0x02 ... 0x00), names are plain ASCII here.
    const enc = (s: string) => "02" + [...new TextEncoder().encode(s)].map((b) => b.toString(16).padStart(2, "0")).join("") + "00";
    const keyHex = enc("v8compat") + enc(String(e.key[1])) + enc(String(e.key[2]));
    const v = byKey.get(keyHex);
    if (v === undefined) { out[name] = "raw bytes not found"; continue; }
    const bytes = Buffer.from(v, "hex");
    let decoded: unknown;
    try {
      decoded = deserialize(bytes);
    } catch (err) {
      out[name] = `deserialize threw: ${err}`;
      continue;
    }
    const same = isDeepStrictEqual(decoded, e.value) &&
      Object.prototype.toString.call(decoded) === Object.prototype.toString.call(e.value);
    out[name] = same ? "ok" : `differs: node:v8 gives ${Object.prototype.toString.call(decoded)} ${Deno.inspect(decoded)}, Deno gives ${Deno.inspect(e.value)}`;
  }
  console.log(JSON.stringify(out));
}
kv.close();

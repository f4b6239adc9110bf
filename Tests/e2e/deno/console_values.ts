// Writes one value of every type Deno KV stores under ["console", "types", name]
// (and keys of every part type under ["console", "keys"]), reads them back and
// prints, per name, Deno.inspect of the stored value: the browser test checks
// that the console shows exactly that.
const kv = await Deno.openKv(Deno.args[0]);
const cycle: Record<string, unknown> = { name: "c" };
cycle.self = cycle;
const values: Record<string, unknown> = {
  string: 'say "hi"\n',
  number: 3.25,
  negzero: -0,
  nan: NaN,
  big: 1e21,
  bigint: 12345678901234567890n,
  boolean: true,
  null: null,
  undefined: undefined,
  object: { a: 1, b: "x", "a-b": [1, 2], nested: { deeper: { deepest: true } } },
  array: [1, "two", [3], {}],
  holes: [1, , 3],
  map: new Map<unknown, unknown>([["k", 1], [2, { x: 2 }]]),
  set: new Set([1, "a", 2n]),
  date: new Date(Date.UTC(2024, 0, 1, 12, 30)),
  regexp: /ab+c/gi,
  bytes: new Uint8Array([1, 2, 3]),
  nestedBytes: { b: new Uint8Array([4, 5]) },
  int16: new Int16Array([1, -2]),
  float64: new Float64Array([0.5, 1e21]),
  bigint64: new BigInt64Array([-1n]),
  u64: new Deno.KvU64(5n),
  cycle,
  shared: [cycle, cycle],
  deep: { x: { y: { z: { w: { v: { u: 1 } } } } } },
  boxed: [new Number(3), new String("s"), new Boolean(false)],
  long: Array.from({ length: 120 }, (_, i) => i),
};
const out: Record<string, { compact: string; standard: string }> = {};
for (const [name, value] of Object.entries(values)) {
  await kv.set(["console", "types", name], value);
  const stored = (await kv.get(["console", "types", name])).value;
  out[name] = {
    compact: Deno.inspect(stored, { compact: true, breakLength: Infinity, colors: false }),
    standard: Deno.inspect(stored, { colors: false }),
  };
}
await kv.set(["console", "keys", "text", 1.5, 7n, true, new Uint8Array([1, 2])], "parts");
out["#key"] = { compact: Deno.inspect(["console", "keys", "text", 1.5, 7n, true, new Uint8Array([1, 2])]), standard: "" };
console.log(JSON.stringify(out));
kv.close();

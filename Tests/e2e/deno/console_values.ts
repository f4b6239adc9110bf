// Writes one value of every type Deno KV stores under ["console", "types", name]
// and corner cases under ["console", "more", name] (and keys of every part type
// under ["console", "keys"]), reads them back and prints, per group and name,
// Deno.inspect of the stored value: the browser test checks that the console
// shows exactly that.
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
const more: Record<string, unknown> = {
  error: new TypeError("bad"),
  errorNoStack: (() => {
    const e = new RangeError("x");
    e.stack = undefined;
    return e;
  })(),
  arrayBuffer: new Uint8Array([1, 2]).buffer,
  dataView: new DataView(new Uint8Array([1, 2, 3]).buffer, 1, 2),
  float32: new Float32Array([0.1, 1.5]),
  clamped: new Uint8ClampedArray([255]),
  quotes: `it's "x"`,
  allQuotes: "a'b\"c`d",
  numericKeys: { 1: "a", b: 2, 10: "c" },
  nullPrototype: Object.assign(Object.create(null), { a: 1 }),
  sparse: (() => {
    const a: unknown[] = [];
    a[5] = 1;
    a[200] = 2;
    return a;
  })(),
  nested: new Set([new Map([[1, new Set()]])]),
  empties: [new Map(), new Set(), [], {}],
  arrayProps: Object.assign([1, 2], { foo: "bar" }),
  unicode: "héllo ✓ 😀",
  control: "\u0001\u007f\t",
  bigNegative: -(2n ** 70n),
  boxedBigint: Object(5n),
  dates: [new Date(NaN), new Date(-1), new Date(8.64e15)],
  objectMapKey: new Map([[{ a: 1 }, [1]]]),
  manyKeys: Object.fromEntries(Array.from({ length: 30 }, (_, i) => ["k" + i, i])),
  deepArray: [[[[[[1]]]]]],
  floats: [0.1 + 0.2, 1e-7, 123e-20, 2 ** 53],
  backslash: "a\\b",
  oddKeys: { "key with space": 1, $dollar: 2, _ok: 3, "ünï": 4 },
};
const out: Record<string, Record<string, { compact: string; standard: string }>> = { types: {}, more: {} };
for (const [group, entries] of [["types", values], ["more", more]] as const) {
  for (const [name, value] of Object.entries(entries)) {
    await kv.set(["console", group, name], value);
    const stored = (await kv.get(["console", group, name])).value;
    out[group][name] = {
      compact: Deno.inspect(stored, { compact: true, breakLength: Infinity, colors: false }),
      standard: Deno.inspect(stored, { colors: false }),
    };
  }
}
const key = ["console", "keys", "text", 1.5, 7n, true, new Uint8Array([1, 2])];
await kv.set(key, "parts");
console.log(JSON.stringify({ ...out, key: Deno.inspect(key, { compact: true, breakLength: Infinity, colors: false }) }));
kv.close();

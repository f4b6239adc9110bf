// Closed-loop throughput: `conc` concurrent loops of kv.get or kv.set for
// `seconds`; prints ops/s and latency percentiles. Works against a KV Connect
// URL or a local path (":memory:" or a file) for side-by-side numbers.
const [url, op, concText, secondsText] = Deno.args;
const kv = await Deno.openKv(url);
const conc = Number(concText ?? 64), seconds = Number(secondsText ?? 5);
const value = "x".repeat(100);
for (let i = 0; i < 1000; i++) await kv.set(["bench", "tp", i], value);
const lat: number[] = [];
let ops = 0, counter = 0;
const end = performance.now() + seconds * 1000;
await Promise.all(Array.from({ length: conc }, async (_, w) => {
  while (performance.now() < end) {
    const t0 = performance.now();
    if (op === "get") await kv.get(["bench", "tp", (w * 7919 + ops) % 1000]);
    else await kv.set(["bench", "new", w, counter++], value);
    lat.push(performance.now() - t0);
    ops++;
  }
}));
lat.sort((a, b) => a - b);
const q = (f: number) => +lat[Math.min(lat.length - 1, Math.floor(f * lat.length))].toFixed(3);
console.log(JSON.stringify({ target: url.startsWith("http") ? "kvconnectd" : "deno-local", op, conc, ops_per_s: Math.round(ops / seconds), p50_ms: q(0.5), p99_ms: q(0.99) }));
kv.close();

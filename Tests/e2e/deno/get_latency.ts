// Sequential kv.get from one client; prints p50/p99 in milliseconds.
const [url, nText] = Deno.args;
const n = Number(nText ?? 2000);
const kv = await Deno.openKv(url);
await kv.set(["latency"], "x".repeat(100));
for (let i = 0; i < 100; i++) await kv.get(["latency"]);
const times: number[] = [];
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  await kv.get(["latency"]);
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const q = (f: number) => times[Math.min(times.length - 1, Math.floor(f * times.length))];
console.log(JSON.stringify({ n, p50_ms: q(0.5), p99_ms: q(0.99) }));
kv.close();

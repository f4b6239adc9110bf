// Closed-loop throughput: `conc` concurrent loops of one operation for
// `seconds`; prints ops/s and latency percentiles. Works against a KV Connect
// URL or a local path (":memory:" or a file) for side-by-side numbers.
// op: get (random of 1000 existing keys) | set (new keys) | mixed (90 % get,
// 10 % set) | list (100 entries) | cas (kv.get then atomic check+set on 16
// hot keys; each get and each commit counts as one op, conflicts reported).
const [url, op, concText, secondsText] = Deno.args;
const kv = await Deno.openKv(url);
const conc = Number(concText ?? 64), seconds = Number(secondsText ?? 5);
const value = "x".repeat(100);
const HOT = 16;
for (let b = 0; b < 1000; b += 500) {
  const a = kv.atomic();
  for (let i = b; i < b + 500; i++) a.set(["bench", "tp", i], value);
  await a.commit();
}
for (let h = 0; h < HOT; h++) await kv.set(["bench", "hot", h], 0);
const lat: number[] = [];
let ops = 0, counter = 0, casWrites = 0, casConflicts = 0;
const rnd = (n: number) => Math.floor(Math.random() * n);
const end = performance.now() + seconds * 1000;
await Promise.all(Array.from({ length: conc }, async (_, w) => {
  while (performance.now() < end) {
    let t0 = performance.now();
    if (op === "get" || (op === "mixed" && Math.random() < 0.9)) await kv.get(["bench", "tp", rnd(1000)]);
    else if (op === "set" || op === "mixed") await kv.set(["bench", "new", w, counter++], value);
    else if (op === "list") { for await (const _ of kv.list({ start: ["bench", "tp", rnd(900)], end: ["bench", "tp", 1000] }, { limit: 100, batchSize: 100 })) { /* drain */ } }
    else if (op === "cas") {
      const k = ["bench", "hot", rnd(HOT)];
      const e = await kv.get<number>(k);
      lat.push(performance.now() - t0); ops++;
      t0 = performance.now();
      const r = await kv.atomic().check(e).set(k, (e.value ?? 0) + 1).commit();
      casWrites++;
      if (!r.ok) casConflicts++;
    } else throw new Error(`unknown op ${op}`);
    lat.push(performance.now() - t0);
    ops++;
  }
}));
lat.sort((a, b) => a - b);
const q = (f: number) => +lat[Math.min(lat.length - 1, Math.floor(f * lat.length))].toFixed(3);
const out: Record<string, unknown> = { target: url.startsWith("http") ? "kvconnectd" : "deno-local", op, conc, ops_per_s: Math.round(ops / seconds), p50_ms: q(0.5), p99_ms: q(0.99) };
if (op === "cas") Object.assign(out, { cas_writes: casWrites, cas_conflicts: casConflicts, cas_commits_per_s: Math.round((casWrites - casConflicts) / seconds) });
console.log(JSON.stringify(out));
kv.close();

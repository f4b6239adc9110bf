// Queue benchmarks for bench/run.sh (section "queue"). Every mode prints one
// JSON line.
//
//   sink                     a webhook receiver (Deno.serve, HTTP/1.1 keep-alive)
//                            that answers 200 at once; prints {"port"} first.
//                            GET /stats (/reset: and start over) → {count, firstMs, lastMs, lags} (lags:
//                            receive time - deadline of payloads {d: deadline}).
//   push URL SINK N          N messages due 2 s ahead, enqueued with the module
//                            (1000 per atomic write); waits for the sink to count
//                            them: deliveries/s = N / (last - first delivery).
//   lag URL SINK M           M messages with deadlines spread over 5 s: p50/p99/max
//                            of deadline → webhook delivery.
//   pull URL N CONC          N messages enqueued (not timed), then listenQueue with
//                            CONC handlers until all are handled: messages/s
//                            leased and acknowledged through clients/deno/queue.ts.
import { openKv } from "../clients/deno/queue.ts";

const [mode, url, a, b] = Deno.args;

async function enqueueBatched(n: number, value: (i: number) => unknown, deadline: (i: number) => number) {
  const kv = await openKv(url);
  for (let i = 0; i < n; i += 1000) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      op.enqueue(value(j), { delay: Math.max(0, deadline(j) - Date.now()), backoffSchedule: [] });
    }
    const r = await op.commit();
    if (!r.ok) throw new Error("enqueue failed");
  }
  kv.close();
}

async function sinkStats(sink: string, reset = false) {
  const r = await fetch(sink.replace(/\/queue$/, reset ? "/reset" : "/stats"));
  return await r.json() as { count: number; firstMs: number; lastMs: number; lags: number[] };
}

async function waitForCount(sink: string, n: number, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await sinkStats(sink);
    if (s.count >= n || Date.now() > end) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};

if (mode === "sink") {
  let count = 0, firstMs = 0, lastMs = 0;
  const lags: number[] = [];
  const { deserialize } = await import("node:v8");
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: ({ port }) => console.log(JSON.stringify({ port })) },
    async (req) => {
      if (req.method === "GET") {
        const body = JSON.stringify({ count, firstMs, lastMs, lags });
        if (new URL(req.url).pathname === "/reset") count = 0, firstMs = 0, lastMs = 0, lags.length = 0;
        return new Response(body);
      }
      const now = Date.now();
      const bytes = new Uint8Array(await req.arrayBuffer());
      count++;
      if (!firstMs) firstMs = now;
      lastMs = now;
      const v = deserialize(bytes) as { d?: number };
      if (typeof v?.d === "number") lags.push(now - v.d);
      return new Response(null, { status: 200 });
    });
  await server.finished;
} else if (mode === "push") {
  const n = Number(b);
  await sinkStats(a, true);
  const due = Date.now() + 2000 + n / 5; // all enqueued before they are due
  await enqueueBatched(n, (i) => ({ i }), () => due);
  const s = await waitForCount(a, n, 120_000);
  const seconds = (s.lastMs - s.firstMs) / 1000;
  console.log(JSON.stringify({ messages: n, delivered: s.count, seconds, perSecond: Math.round(s.count / seconds) }));
} else if (mode === "lag") {
  const m = Number(b);
  await sinkStats(a, true);
  const start = Date.now() + 1000 + m / 5;
  const deadline = (i: number) => Math.round(start + (i * 5000) / m);
  await enqueueBatched(m, (i) => ({ d: deadline(i) }), deadline);
  const s = await waitForCount(a, m, 60_000);
  console.log(JSON.stringify({
    messages: m, delivered: s.count, p50Ms: pct(s.lags, 50), p99Ms: pct(s.lags, 99),
    maxMs: Math.max(...s.lags), minMs: Math.min(...s.lags),
  }));
} else if (mode === "pull") {
  const n = Number(a), conc = Number(b);
  await enqueueBatched(n, (i) => ({ i }), () => Date.now());
  const kv = await openKv(url);
  let handled = 0;
  const t0 = performance.now();
  await kv.listenQueue(() => {
    if (++handled === n) kv.close();
  }, { concurrency: conc });
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ messages: n, concurrency: conc, seconds, perSecond: Math.round(n / seconds) }));
}

// Latency from a write to the watch frame that reports it, over N changes.
// The writer and the watcher use separate connections (separate Deno.Kv);
// with WATCH_URL, the watcher uses another daemon (PostgreSQL backend).
const [url, nText, watchUrl] = Deno.args;
const n = Number(nText ?? 1000);
const writer = await Deno.openKv(url);
const watcher = await Deno.openKv(watchUrl ?? url);
const key = ["bench", "watch", crypto.randomUUID()];
await writer.set(key, -1);
const reader = watcher.watch([key]).getReader();
const waiters = new Map<number, (t: number) => void>();
(async () => {
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const v = value![0].value as number;
    waiters.get(v)?.(performance.now());
  }
})();
// Wait for the initial frame.
await new Promise<void>((res) => { waiters.set(-1, () => res()); });
const sinceWrite: number[] = [], sinceAck: number[] = [];
for (let i = 0; i < n; i++) {
  const got = new Promise<number>((res) => waiters.set(i, res));
  const t0 = performance.now();
  await writer.set(key, i);
  const tAck = performance.now();
  const tFrame = await got;
  waiters.delete(i);
  sinceWrite.push(tFrame - t0);
  sinceAck.push(tFrame - tAck);
}
const q = (a: number[], f: number) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(f * s.length))]; };
console.log(JSON.stringify({
  changes: n,
  write_to_frame_p50_ms: +q(sinceWrite, 0.5).toFixed(3), write_to_frame_p99_ms: +q(sinceWrite, 0.99).toFixed(3),
  ack_to_frame_p50_ms: +q(sinceAck, 0.5).toFixed(3), ack_to_frame_p99_ms: +q(sinceAck, 0.99).toFixed(3),
}));
await reader.cancel();
writer.close();
watcher.close();
Deno.exit(0);

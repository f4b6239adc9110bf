// Deno's own in-process queue as the peer of kvconnectd's pull queue
// (bench/run.sh, queue section): Deno.openKv(<local file>), N messages
// enqueued (in atomic batches, not timed), then timed from the first
// listenQueue call until every message was handled (acknowledged).
//   deno run --unstable-kv -A bench/deno_local_queue.ts DIR N
// Prints {"messages", "seconds", "perSecond"}.
const [dir, nArg] = Deno.args;
const n = Number(nArg ?? 20000);
const path = `${dir}/deno-local-queue.sqlite3`;
for (const suffix of ["", "-wal", "-shm"]) {
  try { Deno.removeSync(path + suffix); } catch { /* fresh */ }
}
const kv = await Deno.openKv(path);
for (let i = 0; i < n; i += 100) {
  const op = kv.atomic();
  for (let j = i; j < Math.min(n, i + 100); j++) op.enqueue({ i: j });
  await op.commit();
}
let handled = 0;
let t0 = 0;
const done = Promise.withResolvers<void>();
t0 = performance.now();
kv.listenQueue(() => {
  if (++handled === n) done.resolve();
});
await done.promise;
const seconds = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ messages: n, seconds, perSecond: Math.round(n / seconds) }));
kv.close();
Deno.exit(0);

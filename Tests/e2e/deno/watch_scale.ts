// Many watch streams on ONE Deno.Kv handle (one HTTP/2 connection), one
// key each: ["scale", run, i] for i < streams.
//   1. opens them all and waits until every stream got its initial frame;
//   2. prints {"phase":"open",...} and waits for a line on stdin (the test
//      samples the daemon's RSS meanwhile);
//   3. sets every `step`-th key (atomics of 500) and waits until each of
//      those streams saw its new value;
//   4. a kv.set + kv.get through the same handle must complete;
//   5. cancels every stream (one RST_STREAM each, all at once), then a
//      second kv.set + kv.get must still complete.
// Prints one JSON line per phase; the last is {"phase":"done",...}. Each
// wait is bounded (timeoutMs): on expiry the line says how far it got and
// the script exits 1 instead of hanging.
const [url, streamsText, stepText, timeoutText] = Deno.args;
const streams = Number(streamsText), step = Number(stepText ?? 1);
const timeoutMs = Number(timeoutText ?? 60000);
const run = crypto.randomUUID();
const kv = await Deno.openKv(url);
const now = () => performance.now();
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** Resolves when `cond()` holds (polled), or fails after `ms` with `what`. */
async function until(cond: () => boolean, ms: number, what: () => Record<string, unknown>) {
  const end = now() + ms;
  while (!cond()) {
    if (now() > end) { emit({ ...what(), timeout: true }); Deno.exit(1); }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A kv operation that must finish within `ms` (a hung handle fails the run). */
async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: number | undefined;
  const timeout = new Promise<never>((_, rej) => { t = setTimeout(() => rej(new Error(`${what} did not complete within ${ms} ms`)), ms); });
  try { return await Promise.race([p, timeout]); } finally { clearTimeout(t); }
}

let initial = 0, changed = 0, ended = 0, errors = 0;
const expectChange = (i: number) => i % step === 0;
const readers: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]>[] = [];
const t0 = now();
for (let i = 0; i < streams; i++) {
  const reader = kv.watch([["scale", run, i]]).getReader();
  readers.push(reader);
  (async () => {
    let first = true, seen = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (first) { first = false; initial++; }
        if (!seen && value[0].value === i + 1) { seen = true; changed++; }
      }
    } catch (_) {
      // Cancelled by us in phase 5 (or the connection failed: counted below).
    }
    ended++;
  })().catch(() => errors++);
}
await until(() => initial === streams, timeoutMs, () => ({ phase: "open", streams, initial }));
emit({ phase: "open", streams, initial, ms: Math.round(now() - t0) });

// Let the test sample memory with every stream open.
const buf = new Uint8Array(64);
await Deno.stdin.read(buf);

const t1 = now();
const targets = Array.from({ length: streams }, (_, i) => i).filter(expectChange);
for (let b = 0; b < targets.length; b += 500) {
  const op = kv.atomic();
  for (const i of targets.slice(b, b + 500)) op.set(["scale", run, i], i + 1);
  const r = await bounded(op.commit(), timeoutMs, "atomic commit");
  if (!r.ok) throw new Error("commit failed");
}
const written = now();
await until(() => changed === targets.length, timeoutMs, () => ({ phase: "changes", expected: targets.length, changed }));
emit({ phase: "changes", expected: targets.length, changed, writeMs: Math.round(written - t1), ms: Math.round(now() - t1) });

// The handle still serves plain requests with every watch open.
await bounded(kv.set(["scale", run, "probe"], "alive"), timeoutMs, "kv.set");
const got = await bounded(kv.get(["scale", run, "probe"]), timeoutMs, "kv.get");
if (got.value !== "alive") throw new Error(`kv.get returned ${got.value}`);
const live = streams - ended;

// Every stream cancelled at once, then the same handle once more.
const t2 = now();
await Promise.all(readers.map((r) => r.cancel()));
await until(() => ended === streams, timeoutMs, () => ({ phase: "cancel", ended }));
await bounded(kv.set(["scale", run, "probe"], "after-cancel"), timeoutMs, "kv.set after cancel");
const got2 = await bounded(kv.get(["scale", run, "probe"]), timeoutMs, "kv.get after cancel");
if (got2.value !== "after-cancel") throw new Error(`kv.get after cancel returned ${got2.value}`);
emit({ phase: "done", streams, initial, changed, liveBeforeCancel: live, setGet: true, cancelMs: Math.round(now() - t2), errors });
kv.close();
Deno.exit(0);

// Drives clients/deno/queue.ts for Tests/e2e/python/test_deno_queue.py.
//   enqueue URL JSON      JSON: [{value, delay?, backoffSchedule?, keysIfUndelivered?}]
//                         prints {"enqueuedAtMs", "versionstamps": [...]}
//   listen URL OUT        appends one JSON line per handler call to OUT:
//                         {"pid", "value", "atMs", "call"} (call = nth call for that value)
//     env FAIL_FIRST=n    throw on the first n calls for each value
//         ALWAYS_FAIL=1   always throw
//         HANG=1          never return from the handler (prints "handling" first)
//         HANDLER_MS=n    work n ms per message
//         CONCURRENCY, LEASE_MS   listenQueue options
//         STOP_AFTER=n    close() after n successful handler calls, print {"stopped"}
//   atomic URL            a failing check with an enqueue, then a passing one
//   errors URL            Deno.Kv's validation errors, printed as JSON
import { openKv } from "../../../clients/deno/queue.ts";

const [mode, url, arg] = Deno.args;
const env = Deno.env.toObject();
// V8_FORMAT_VERSION=15: values readable by Python's denokv (see OpenKvOptions).
const kv = await openKv(url, {
  v8FormatVersion: env.V8_FORMAT_VERSION ? Number(env.V8_FORMAT_VERSION) as 15 : undefined,
});

if (mode === "enqueue") {
  const items = JSON.parse(arg);
  const enqueuedAtMs = Date.now();
  const versionstamps = [];
  for (const it of items) {
    const r = await kv.enqueue(it.value, {
      delay: it.delay,
      backoffSchedule: it.backoffSchedule,
      keysIfUndelivered: it.keysIfUndelivered,
    });
    if (r.ok !== true) throw new Error("enqueue not ok");
    versionstamps.push(r.versionstamp);
  }
  console.log(JSON.stringify({ enqueuedAtMs, versionstamps }));
  kv.close();
} else if (mode === "listen") {
  const failFirst = Number(env.FAIL_FIRST ?? 0);
  const stopAfter = Number(env.STOP_AFTER ?? 0);
  const handlerMs = Number(env.HANDLER_MS ?? 0);
  const calls = new Map<string, number>();
  let done = 0;
  const file = await Deno.open(arg, { append: true, create: true });
  const enc = new TextEncoder();
  const p = kv.listenQueue(async (value) => {
    const k = JSON.stringify(value);
    const call = (calls.get(k) ?? 0) + 1;
    calls.set(k, call);
    file.writeSync(enc.encode(JSON.stringify({ pid: Deno.pid, value, atMs: Date.now(), call }) + "\n"));
    if (env.HANG === "1") {
      console.log("handling");
      await new Promise(() => {});
    }
    if (handlerMs) await new Promise((r) => setTimeout(r, handlerMs));
    if (env.ALWAYS_FAIL === "1" || call <= failFirst) throw new Error(`failing call ${call}`);
    if (stopAfter && ++done >= stopAfter) kv.close();
  }, {
    concurrency: env.CONCURRENCY ? Number(env.CONCURRENCY) : undefined,
    leaseMs: env.LEASE_MS ? Number(env.LEASE_MS) : undefined,
  });
  console.log("listening");
  await p;
  console.log(JSON.stringify({ stopped: true, handled: done }));
} else if (mode === "atomic") {
  const out: Record<string, unknown> = {};
  const first = await kv.atomic().set(["atomic", "guard"], "present").commit();
  out.guardSet = first.ok;
  // The key exists: a "must not exist" check fails and nothing is enqueued or written.
  const failed = await kv.atomic()
    .check({ key: ["atomic", "guard"], versionstamp: null })
    .set(["atomic", "written"], "should-not-exist")
    .enqueue("from-failed-commit")
    .commit();
  out.failed = failed;
  // Passing check on the exact versionstamp: the enqueue commits with the set and the sum.
  const ok = await kv.atomic()
    .check({ key: ["atomic", "guard"], versionstamp: (first as { versionstamp: string }).versionstamp })
    .set(["atomic", "written"], { by: "atomic" })
    .sum(["atomic", "count"], 5n)
    .enqueue("from-passing-commit")
    .commit();
  out.passed = ok;
  console.log(JSON.stringify(out));
  kv.close();
} else if (mode === "errors") {
  const out: Record<string, string> = {};
  const attempt = async (name: string, f: () => unknown) => {
    try {
      await f();
      out[name] = "no error";
    } catch (e) {
      out[name] = `${(e as Error).name}: ${(e as Error).message}`;
    }
  };
  await attempt("negativeDelay", () => kv.enqueue(1, { delay: -1 }));
  await attempt("hugeDelay", () => kv.enqueue(1, { delay: 31 * 24 * 3600 * 1000 }));
  await attempt("nanDelay", () => kv.enqueue(1, { delay: NaN }));
  await attempt("longSchedule", () => kv.enqueue(1, { backoffSchedule: [1, 2, 3, 4, 5, 6] }));
  await attempt("badInterval", () => kv.enqueue(1, { backoffSchedule: [1, -2] }));
  await attempt("function", () => kv.enqueue(() => 1));
  await attempt("symbol", () => kv.enqueue(Symbol("s")));
  await attempt("badKey", () => kv.enqueue(1, { keysIfUndelivered: [[{} as unknown as string]] }));
  await attempt("badVersionstamp", () => kv.atomic().check({ key: ["a"], versionstamp: "xyz" }).commit());
  await attempt("expireIn", () => kv.atomic().set(["a"], 1, { expireIn: -5 }));
  await attempt("notAPromise", () => (kv.atomic() as unknown as { then(): void }).then());
  await attempt("hugePayload", () => kv.enqueue("x".repeat(300_000)));
  await attempt("emptyKeySet", () => kv.atomic().set([], 1).commit());
  await attempt("concurrency0", () => kv.listenQueue(() => {}, { concurrency: 0 }));
  await attempt("leaseTooShort", () => kv.listenQueue(() => {}, { leaseMs: 5 }));
  console.log(JSON.stringify(out));
  kv.close();
}

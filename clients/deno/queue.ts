// Deno.Kv's queue API for kvconnectd databases: enqueue, atomic (with
// enqueue) and listenQueue, speaking KV Connect over fetch. Deno's own
// remote client refuses kv.enqueue and never delivers to kv.listenQueue; this
// module fills that gap with the same names, options, results and errors.
//
//   import { openKv } from "./queue.ts";
//   const kv = await openKv("http://127.0.0.1:4512"); // DENO_KV_ACCESS_TOKEN
//   await kv.enqueue({ job: 1 }, { delay: 1000 });
//   kv.listenQueue(async (msg) => { ... });        // throw = failed attempt
//
// Permissions: --allow-net (the server), --allow-env (DENO_KV_ACCESS_TOKEN).
// See docs/queues.md. No third-party imports.

import {
  AW_CHECK_FAILURE,
  AW_SUCCESS,
  AW_WRITE_DISABLED,
  decodeAtomicWriteOutput,
  deserializeV8,
  encodeAtomicWrite,
  encodeKey,
  encodeValue,
  type KvKey,
  KvU64,
  M_DELETE,
  M_MAX,
  M_MIN,
  M_SET,
  M_SUM,
  serializeV8,
  versionstampBytes,
  versionstampHex,
  type WireCheck,
  type WireEnqueue,
  type WireMutation,
} from "./wire.ts";

export { KvU64 };
export type { KvKey };

// Deno's limits and defaults for enqueue (ext/kv/01_db.ts, denokv sqlite backend).
const MAX_QUEUE_DELAY_MS = 30 * 24 * 60 * 60 * 1000;
const MAX_BACKOFF_INTERVALS = 5;
const MAX_BACKOFF_INTERVAL_MS = 60 * 60 * 1000;
/** What Deno's own queue uses when no backoffSchedule is given. */
export const DEFAULT_BACKOFF_SCHEDULE = [100, 1000, 5000, 30000, 60000];

export interface EnqueueOptions {
  delay?: number;
  keysIfUndelivered?: KvKey[];
  backoffSchedule?: number[];
}
export interface AtomicCheck {
  key: KvKey;
  versionstamp: string | null;
}
export type KvMutation =
  & { key: KvKey }
  & (
    | { type: "set"; value: unknown; expireIn?: number }
    | { type: "delete" }
    | { type: "sum" | "max" | "min"; value: KvU64 }
  );
export interface KvCommitResult {
  ok: true;
  versionstamp: string;
}
export interface KvCommitError {
  ok: false;
}
export interface ListenQueueOptions {
  /** Handlers running at once. Default 8. While handlers are quick, up to as
   * many more messages are leased ahead so the handlers never wait for a
   * round trip. */
  concurrency?: number;
  /** Lease (visibility timeout) per delivery in ms; a message whose handler has
   * not returned by then is delivered again. Default: the server's (30000). */
  leaseMs?: number;
}
export interface OpenKvOptions {
  /** Default: the DENO_KV_ACCESS_TOKEN environment variable, as Deno.openKv. */
  accessToken?: string;
  /**
   * V8 serialization format version written in the header of V8 values and
   * messages. Default: the runtime's, i.e. exactly the bytes kv.set writes
   * (16 since V8 14.9 / Deno 2.8). 15 makes them readable by Node.js and by
   * Python's v8serialize (used by the denokv client), which stop at 15; for
   * values under 4 GiB the bytes after the header are the same in 15 and 16
   * and Deno reads both.
   */
  v8FormatVersion?: 13 | 14 | 15 | 16;
}

function validateQueueDelay(delay: number) {
  if (delay < 0) throw new TypeError(`Delay must be >= 0: received ${delay}`);
  if (delay > MAX_QUEUE_DELAY_MS) throw new TypeError(`Delay cannot be greater than 30 days: received ${delay}`);
  if (Number.isNaN(delay)) throw new TypeError("Delay cannot be NaN");
}

function validateBackoffSchedule(schedule: number[]) {
  if (schedule.length > MAX_BACKOFF_INTERVALS) {
    throw new TypeError(`Invalid backoffSchedule, max ${MAX_BACKOFF_INTERVALS} intervals allowed`);
  }
  for (let i = 0; i < schedule.length; ++i) {
    const v = schedule[i];
    if (v < 0 || v > MAX_BACKOFF_INTERVAL_MS || Number.isNaN(v)) {
      throw new TypeError(`Invalid backoffSchedule, interval at index ${i} is invalid`);
    }
  }
}

function validateExpireIn(expireIn: number | undefined) {
  if (expireIn === undefined) return;
  if (!Number.isInteger(expireIn) || expireIn < 0) {
    throw new TypeError(`expireIn must be a non-negative integer: received ${expireIn}`);
  }
}

interface PendingEnqueue {
  payload: Uint8Array;
  delay: number;
  keysIfUndelivered: KvKey[];
  backoffSchedule: number[] | null;
}

function pendingEnqueue(message: unknown, opts: EnqueueOptions | undefined, v8FormatVersion?: number): PendingEnqueue {
  if (opts?.delay !== undefined) validateQueueDelay(opts.delay);
  if (opts?.backoffSchedule !== undefined) validateBackoffSchedule(opts.backoffSchedule);
  return {
    payload: serializeV8(message, undefined, v8FormatVersion),
    delay: opts?.delay ?? 0,
    keysIfUndelivered: opts?.keysIfUndelivered ?? [],
    backoffSchedule: opts?.backoffSchedule ?? null,
  };
}

function toWireEnqueue(e: PendingEnqueue, nowMs: number): WireEnqueue {
  return {
    payload: e.payload,
    deadlineMs: Math.floor(nowMs + e.delay),
    keysIfUndelivered: e.keysIfUndelivered.map(encodeKey),
    // The wire has no "unset": an empty schedule means "no retry" (as Deno's
    // backoffSchedule: []), so Deno's default is sent explicitly.
    backoffSchedule: (e.backoffSchedule ?? DEFAULT_BACKOFF_SCHEDULE).map((v) => Math.floor(v)),
  };
}

/** An HTTP answer that is not a success, with the server's plain-text reason. */
export class KvConnectError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "KvConnectError";
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/** Metadata exchange and authenticated data-path calls, with token refresh
 * and retries where the server says a retry can help (5xx, network errors). */
class Connection {
  private token = "";
  private databaseId = "";
  private endpoint = "";
  private expiresAtMs = 0;
  private refreshing: Promise<void> | null = null;

  constructor(readonly url: string, private readonly accessToken: string) {}

  async exchange(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const r = await fetch(this.url.replace(/\/?$/, "/"), {
          method: "POST",
          headers: { "authorization": `Bearer ${this.accessToken}`, "content-type": "application/json" },
          body: JSON.stringify({ supportedVersions: [2, 3] }),
        });
        const text = await r.text();
        if (!r.ok) throw new KvConnectError(r.status, `Failed to connect to ${this.url}: ${r.status} ${text}`);
        const m = JSON.parse(text);
        this.token = m.token;
        this.databaseId = m.databaseId;
        this.endpoint = new URL(m.endpoints[0].url, this.url).href.replace(/\/$/, "");
        this.expiresAtMs = Date.parse(m.expiresAt);
      } finally {
        this.refreshing = null;
      }
    })();
    return await this.refreshing;
  }

  /** POSTs to `<endpoint><path>`; returns status and body of a 2xx answer. */
  async post(path: string, body: Uint8Array | string, signal?: AbortSignal): Promise<{ status: number; body: Uint8Array }> {
    let refreshed = false;
    for (let attempt = 0;; attempt++) {
      if (Date.now() > this.expiresAtMs - 60_000) await this.exchange();
      let r: Response;
      try {
        r = await fetch(this.endpoint + path, {
          method: "POST",
          headers: {
            "authorization": `Bearer ${this.token}`,
            "x-denokv-database-id": this.databaseId,
            "content-type": typeof body === "string" ? "application/json" : "application/x-protobuf",
          },
          body: body as BodyInit,
          signal,
        });
      } catch (e) {
        if (signal?.aborted || attempt >= 4) throw e;
        await sleep(100 * 2 ** attempt, signal);
        continue;
      }
      const data = new Uint8Array(await r.arrayBuffer());
      if (r.ok) return { status: r.status, body: data };
      const reason = new TextDecoder().decode(data);
      if (r.status === 401 && !refreshed) {
        refreshed = true;
        await this.exchange();
        continue;
      }
      if (r.status >= 500 && attempt < 4) {
        await sleep(100 * 2 ** attempt, signal);
        continue;
      }
      throw new KvConnectError(r.status, reason || `HTTP ${r.status}`);
    }
  }
}

/** Deno.AtomicOperation for a kvconnectd database (checks, mutations, enqueues). */
export class AtomicOperation {
  #checks: AtomicCheck[] = [];
  #mutations: { key: KvKey; type: number; value?: ReturnType<typeof encodeValue>; expireIn?: number }[] = [];
  #enqueues: PendingEnqueue[] = [];

  constructor(private readonly kv: QueueKv) {}

  check(...checks: AtomicCheck[]): this {
    this.#checks.push(...checks);
    return this;
  }

  mutate(...mutations: KvMutation[]): this {
    for (const m of mutations) {
      switch (m.type) {
        case "delete":
          // deno-lint-ignore no-explicit-any
          if ((m as any).value) throw new TypeError("Invalid mutation 'delete' with value");
          this.#mutations.push({ key: m.key, type: M_DELETE });
          break;
        case "set":
        case "sum":
        case "min":
        case "max": {
          const expireIn = m.type === "set" && typeof m.expireIn === "number" ? m.expireIn : undefined;
          if (m.type === "set") validateExpireIn(expireIn);
          if (!Object.hasOwn(m, "value")) throw new TypeError(`Invalid mutation '${m.type}' without value`);
          const type = { set: M_SET, sum: M_SUM, min: M_MIN, max: M_MAX }[m.type];
          this.#mutations.push({ key: m.key, type, value: encodeValue(m.value, this.kv.v8FormatVersion), expireIn });
          break;
        }
        default:
          throw new TypeError("Invalid mutation type");
      }
    }
    return this;
  }

  sum(key: KvKey, n: bigint): this {
    this.#mutations.push({ key, type: M_SUM, value: encodeValue(new KvU64(n)) });
    return this;
  }

  min(key: KvKey, n: bigint): this {
    this.#mutations.push({ key, type: M_MIN, value: encodeValue(new KvU64(n)) });
    return this;
  }

  max(key: KvKey, n: bigint): this {
    this.#mutations.push({ key, type: M_MAX, value: encodeValue(new KvU64(n)) });
    return this;
  }

  set(key: KvKey, value: unknown, options?: { expireIn?: number }): this {
    validateExpireIn(options?.expireIn);
    this.#mutations.push({ key, type: M_SET, value: encodeValue(value, this.kv.v8FormatVersion), expireIn: options?.expireIn });
    return this;
  }

  delete(key: KvKey): this {
    this.#mutations.push({ key, type: M_DELETE });
    return this;
  }

  enqueue(message: unknown, opts?: EnqueueOptions): this {
    this.#enqueues.push(pendingEnqueue(message, opts, this.kv.v8FormatVersion));
    return this;
  }

  async commit(): Promise<KvCommitResult | KvCommitError> {
    const now = Date.now();
    const checks: WireCheck[] = this.#checks.map((c) => ({
      key: encodeKey(c.key),
      versionstamp: c.versionstamp === null ? null : versionstampBytes(c.versionstamp),
    }));
    const mutations: WireMutation[] = this.#mutations.map((m) => ({
      key: encodeKey(m.key),
      type: m.type,
      value: m.value,
      expireAtMs: m.expireIn !== undefined ? now + m.expireIn : undefined,
    }));
    const enqueues = this.#enqueues.map((e) => toWireEnqueue(e, now));
    const versionstamp = await this.kv._write(checks, mutations, enqueues);
    return versionstamp === null ? { ok: false } : { ok: true, versionstamp };
  }

  then() {
    throw new TypeError("'Deno.AtomicOperation' is not a promise: did you forget to call 'commit()'");
  }
}

interface Lease {
  id: string;
  messageId: string;
  attempt: number;
  payload: string;
  leaseExpiresAt: string;
}

function base64ToBytes(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** How long finished deliveries wait to be reported together (one settle
 * request, one server transaction: an fsync), unless a full batch is ready
 * sooner. Longer than a lease round trip, so that settles do not take the
 * server's writer once per lease; short enough to stay invisible. */
const SETTLE_WINDOW_MS = 10;
/** Most lease ids per settle request (the server's batch limit). */
const SETTLE_BATCH_MAX = 256;

/** Reports finished deliveries: acks and fails each go out as one batch
 * request per window (or as soon as a full batch is pending), one request of
 * a kind at a time. Not aborted by close(): a finished handler is always
 * reported. */
class Settler {
  #pending = { ack: [] as Lease[], fail: [] as Lease[] };
  #flushing = { ack: null as Promise<void> | null, fail: null as Promise<void> | null };
  #timer: Record<"ack" | "fail", ReturnType<typeof setTimeout> | undefined> = { ack: undefined, fail: undefined };
  #draining = false;

  constructor(private readonly conn: Connection) {}

  report(lease: Lease, ok: boolean) {
    const kind = ok ? "ack" : "fail";
    this.#pending[kind].push(lease);
    this.#schedule(kind);
  }

  #schedule(kind: "ack" | "fail") {
    if (this.#flushing[kind] || !this.#pending[kind].length) return; // rescheduled when the request in flight ends
    if (this.#draining || this.#pending[kind].length >= SETTLE_BATCH_MAX) {
      clearTimeout(this.#timer[kind]);
      this.#timer[kind] = undefined;
      this.#flushing[kind] = this.#send(kind);
    } else {
      this.#timer[kind] ??= setTimeout(() => {
        this.#timer[kind] = undefined;
        this.#flushing[kind] ??= this.#send(kind);
      }, SETTLE_WINDOW_MS);
    }
  }

  async #send(kind: "ack" | "fail") {
    const batch = this.#pending[kind].splice(0, SETTLE_BATCH_MAX);
    try {
      const r = await this.conn.post(`/queue/${kind}`, JSON.stringify({ ids: batch.map((l) => l.id) }));
      const results = JSON.parse(new TextDecoder().decode(r.body)).results as { status: number; result: string }[];
      for (const [i, x] of results.entries()) {
        // 409: the lease expired and the message was handed out again; 404:
        // it was settled meanwhile. Either way the server's state is consistent.
        if (x.status !== 200) console.warn(`kvconnectd queue: message ${batch[i].messageId} ${kind}: ${x.result}`);
      }
    } catch (e) {
      console.error(`kvconnectd queue: could not report ${batch.length} message(s) (${kind}):`, e);
    } finally {
      this.#flushing[kind] = null;
      this.#schedule(kind);
    }
  }

  /** Sends what is pending at once and waits until everything is reported. */
  async drain() {
    this.#draining = true;
    this.#schedule("ack");
    this.#schedule("fail");
    while (this.#flushing.ack || this.#flushing.fail) await Promise.all([this.#flushing.ack, this.#flushing.fail]);
  }
}

/** Leased messages waiting for a free handler, beyond the running ones: as
 * many as `concurrency` while handlers are quick (their average duration is
 * under an eighth of the lease), none otherwise, so a prefetched message is
 * never held anywhere near its lease's end. */
class Prefetch {
  #avgMs = -1;
  #leaseMs: number;

  constructor(private readonly concurrency: number, leaseMs: number | undefined) {
    this.#leaseMs = leaseMs ?? 0; // learnt from the first lease when the server's default applies
  }

  /** A lease answer arrived at `now`: learn the lease length if unknown. */
  leased(expiresAt: string, now: number) {
    if (this.#leaseMs === 0) this.#leaseMs = Math.max(0, Date.parse(expiresAt) - now);
  }

  /** A handler took `ms`. */
  handled(ms: number) {
    this.#avgMs = this.#avgMs < 0 ? ms : 0.9 * this.#avgMs + 0.1 * ms;
  }

  get size(): number {
    return this.#avgMs >= 0 && this.#avgMs * 8 < this.#leaseMs ? this.concurrency : 0;
  }
}

/** The queue half of Deno.Kv on a kvconnectd database. */
export class QueueKv {
  #closed = false;
  #stop = new AbortController();
  #listening = false;

  /** @internal use openKv */
  constructor(private readonly conn: Connection, readonly v8FormatVersion?: number) {}

  atomic(): AtomicOperation {
    return new AtomicOperation(this);
  }

  async enqueue(message: unknown, opts?: EnqueueOptions): Promise<KvCommitResult> {
    const e = pendingEnqueue(message, opts, this.v8FormatVersion);
    const versionstamp = await this._write([], [], [toWireEnqueue(e, Date.now())]);
    if (versionstamp === null) throw new TypeError("Failed to enqueue value");
    return { ok: true, versionstamp };
  }

  /** @internal: one atomic_write; the versionstamp, or null when a check failed. */
  async _write(checks: WireCheck[], mutations: WireMutation[], enqueues: WireEnqueue[]): Promise<string | null> {
    if (this.#closed) throw new Error("Database is closed");
    let res;
    try {
      res = await this.conn.post("/atomic_write", encodeAtomicWrite(checks, mutations, enqueues));
    } catch (e) {
      if (e instanceof KvConnectError && e.status >= 400 && e.status < 500) throw new TypeError(e.message);
      throw e;
    }
    const out = decodeAtomicWriteOutput(res.body);
    if (out.status === AW_SUCCESS) return versionstampHex(out.versionstamp);
    if (out.status === AW_CHECK_FAILURE) return null;
    if (out.status === AW_WRITE_DISABLED) throw new TypeError("Writes are disabled on this database");
    throw new Error(`Unexpected atomic write status ${out.status}`);
  }

  /**
   * Calls `handler` with each message when it is due. Returning (or a
   * resolved promise) acknowledges it; throwing is a failed attempt, retried
   * after the next `backoffSchedule` delay and then written to
   * `keysIfUndelivered`. Resolves after `close()`, once running handlers (and
   * messages this listener had already leased) have finished and been reported.
   */
  async listenQueue(
    handler: (message: unknown) => Promise<void> | void,
    options: ListenQueueOptions = {},
  ): Promise<void> {
    if (this.#closed) throw new Error("Queue already closed");
    if (this.#listening) throw new TypeError("Already listening on this queue");
    const concurrency = options.concurrency ?? 8;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1024) {
      throw new TypeError(`concurrency must be an integer 1 ... 1024: received ${concurrency}`);
    }
    const leaseMs = options.leaseMs;
    if (leaseMs !== undefined && (!Number.isInteger(leaseMs) || leaseMs < 100 || leaseMs > 43_200_000)) {
      throw new TypeError(`leaseMs must be an integer 100 ... 43200000: received ${leaseMs}`);
    }
    this.#listening = true;
    const signal = this.#stop.signal;
    // One long-poll at a time leases a batch (claimed in one server
    // transaction) for the free handler slots plus a bounded prefetch, so the
    // handlers do not wait for a round trip; finished deliveries are reported
    // in batches. Requests per message stay well below one.
    let running = 0;
    const queued: Lease[] = []; // leased, waiting for a handler slot
    let wake: (() => void) | null = null;
    const prefetch = new Prefetch(concurrency, leaseMs);
    const settler = new Settler(this.conn);
    const handlers = new Set<Promise<void>>();
    let failure: unknown = null;

    const run = async (lease: Lease) => {
      let ok = false;
      const t0 = performance.now();
      try {
        await handler(deserializeV8(base64ToBytes(lease.payload)));
        ok = true;
      } catch (error) {
        console.error("Exception in queue handler", error);
      }
      prefetch.handled(performance.now() - t0);
      settler.report(lease, ok);
      running--;
      pump();
      wake?.();
    };
    /** Starts queued messages while handler slots are free. */
    const pump = () => {
      while (running < concurrency && queued.length) {
        running++;
        const p: Promise<void> = run(queued.shift()!).finally(() => handlers.delete(p));
        handlers.add(p);
      }
    };
    const stopped = new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));

    try {
      let backoff = 0;
      while (!signal.aborted) {
        const buffer = prefetch.size;
        const free = concurrency + buffer - running - queued.length;
        // Without prefetch, lease as soon as a slot is free; with it, once
        // half of the room is free or nothing is left waiting (bigger batches).
        if (free < 1 || (buffer > 0 && queued.length > 0 && free < (concurrency + buffer) / 2)) {
          await Promise.race([new Promise<void>((r) => wake = r), stopped]);
          wake = null;
          continue;
        }
        const body = {
          waitMs: 20_000,
          max: Math.min(free, 256),
          ...(leaseMs === undefined ? {} : { visibilityTimeoutMs: leaseMs }),
        };
        let leases: Lease[];
        try {
          const r = await this.conn.post("/queue/lease", JSON.stringify(body), signal);
          leases = r.status === 204 ? [] : JSON.parse(new TextDecoder().decode(r.body)).messages;
          backoff = 0;
        } catch (e) {
          if (signal.aborted) break;
          if (e instanceof KvConnectError && e.status < 500) {
            failure = e; // 403, 400: no retry helps
            break;
          }
          backoff = Math.min(Math.max(backoff * 2, 100), 5000);
          console.error("kvconnectd queue: lease failed, retrying in", backoff, "ms:", e);
          await sleep(backoff, signal);
          continue;
        }
        if (leases.length) prefetch.leased(leases[0].leaseExpiresAt, Date.now());
        queued.push(...leases);
        pump();
      }
      // Messages this listener already holds are still handled (at most
      // `concurrency` beyond the running ones), so none waits for its lease
      // to end before another listener can have it.
      while (queued.length || handlers.size) {
        pump();
        await Promise.race(handlers);
      }
      await settler.drain();
      if (failure) throw failure;
    } finally {
      this.#listening = false;
    }
  }

  /** Stops listenQueue (running handlers finish and are reported) and further calls. */
  close(): void {
    this.#closed = true;
    this.#stop.abort();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens a kvconnectd database by URL (as Deno.openKv("http://...")). */
export async function openKv(url: string, options: OpenKvOptions = {}): Promise<QueueKv> {
  if (!/^https?:\/\//.test(url)) throw new TypeError(`Invalid URL: expected http:// or https://, got ${url}`);
  const token = options.accessToken ?? Deno.env.get("DENO_KV_ACCESS_TOKEN");
  if (!token) throw new TypeError("Missing access token: set DENO_KV_ACCESS_TOKEN or pass { accessToken }");
  const v = options.v8FormatVersion;
  if (v !== undefined && ![13, 14, 15, 16].includes(v)) {
    throw new TypeError(`v8FormatVersion must be 13 ... 16: received ${v}`);
  }
  const conn = new Connection(url, token);
  await conn.exchange();
  return new QueueKv(conn, v);
}

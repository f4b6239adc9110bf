// A kvconnectd queue webhook receiver (docs/queues.md).
//
//   QUEUE_WEBHOOK_SECRET=... deno run --allow-net --allow-env examples/queue-webhook-receiver.ts
//
// Verifies x-kvconnectd-signature (HMAC-SHA256 over "<message id>." + body,
// with WebCrypto), decodes the V8 payload with node:v8's deserialize, prints
// one JSON line per delivery and answers 200 (acknowledged).
//
// Environment:
//   PORT                   port to listen on (default 8000; 0 = any free port)
//   QUEUE_WEBHOOK_SECRET   the secret (or QUEUE_WEBHOOK_SECRET_FILE: a file holding it)
//   OUT                    append the JSON lines to this file instead of stdout
// For tests:
//   FAIL_FIRST=n           answer 500 to attempts 1..n of every message
//   ALWAYS_FAIL=1          answer 500 to every delivery
//   DELAY_MS=n             wait n ms before answering
// The first line on stdout is {"listening": <port>}.

import { deserialize } from "node:v8";
import { Buffer } from "node:buffer";

const env = Deno.env.toObject();
const secretText = env.QUEUE_WEBHOOK_SECRET ??
  (env.QUEUE_WEBHOOK_SECRET_FILE ? Deno.readTextFileSync(env.QUEUE_WEBHOOK_SECRET_FILE) : undefined);
if (!secretText) {
  console.error("set QUEUE_WEBHOOK_SECRET or QUEUE_WEBHOOK_SECRET_FILE");
  Deno.exit(2);
}
const key = await crypto.subtle.importKey(
  "raw",
  new TextEncoder().encode(secretText.trim()),
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["verify"],
);
const failFirst = Number(env.FAIL_FIRST ?? 0);
const alwaysFail = env.ALWAYS_FAIL === "1";
const delayMs = Number(env.DELAY_MS ?? 0);
const out = env.OUT;

function hexToBytes(hex: string): Uint8Array | null {
  if (!/^([0-9a-f]{2})*$/i.test(hex)) return null;
  const b = new Uint8Array(hex.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return b;
}

/** Constant-time check of "sha256=<hex>" via WebCrypto's verify. */
async function verify(id: string, body: Uint8Array, header: string | null): Promise<boolean> {
  if (!header?.startsWith("sha256=")) return false;
  const mac = hexToBytes(header.slice(7));
  if (!mac) return false;
  const prefix = new TextEncoder().encode(id + ".");
  const signed = new Uint8Array(prefix.length + body.length);
  signed.set(prefix);
  signed.set(body, prefix.length);
  return await crypto.subtle.verify("HMAC", key, mac, signed);
}

/** JSON-friendly view of decoded values (bigint, Map, Set, Date, bytes...). */
function toJSON(v: unknown): unknown {
  if (typeof v === "bigint") return { $bigint: v.toString() };
  if (v === undefined) return { $undefined: true };
  if (typeof v === "number" && !Number.isFinite(v)) return { $number: String(v) };
  if (v instanceof Date) return { $date: v.toISOString() };
  if (v instanceof Map) return { $map: [...v].map(([k, x]) => [toJSON(k), toJSON(x)]) };
  if (v instanceof Set) return { $set: [...v].map(toJSON) };
  if (v instanceof RegExp) return { $regexp: v.toString() };
  if (v instanceof Uint8Array) return { $bytes: [...v] };
  if (v instanceof ArrayBuffer) return { $arraybuffer: [...new Uint8Array(v)] };
  if (ArrayBuffer.isView(v)) {
    return { $view: v.constructor.name, bytes: [...new Uint8Array(v.buffer, v.byteOffset, v.byteLength)] };
  }
  if (v instanceof Error) return { $error: v.name, message: v.message };
  if (Array.isArray(v)) return v.map(toJSON);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJSON(x)]));
  }
  return v;
}

function record(line: Record<string, unknown>) {
  const text = JSON.stringify(line) + "\n";
  if (out) Deno.writeTextFileSync(out, text, { append: true });
  else console.log(text.trimEnd());
}

const server = Deno.serve({
  port: Number(env.PORT ?? 8000),
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(JSON.stringify({ listening: port })),
}, async (req) => {
  const receivedAtMs = Date.now();
  const id = req.headers.get("x-kvconnectd-message-id") ?? "";
  const attempt = Number(req.headers.get("x-kvconnectd-attempt") ?? 0);
  const body = new Uint8Array(await req.arrayBuffer());
  if (req.method !== "POST" || !(await verify(id, body, req.headers.get("x-kvconnectd-signature")))) {
    record({ id, attempt, receivedAtMs, rejected: "bad signature" });
    return new Response("bad signature\n", { status: 401 });
  }
  let value: unknown;
  let decodeError: string | undefined;
  try {
    value = toJSON(deserialize(Buffer.from(body)));
  } catch (e) {
    decodeError = String(e);
  }
  const fail = alwaysFail || attempt <= failFirst;
  record({
    id,
    attempt,
    databaseId: req.headers.get("x-kvconnectd-database-id"),
    receivedAtMs,
    value,
    decodeError,
    answered: fail ? 500 : 200,
  });
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  return new Response(fail ? "failing on purpose\n" : "ok\n", { status: fail ? 500 : 200 });
});

Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));

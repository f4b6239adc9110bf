// The bytes kvconnectd and Deno agree on: KV keys (Deno's tuple encoding),
// KV values (V8 / BYTES / LE64, exactly as Deno.Kv stores them) and the few
// protobuf messages of proto/datapath.proto the queue module needs.
// No third-party imports: works offline with `deno run`.

import { Deserializer, Serializer } from "node:v8";

// ---------------------------------------------------------------- values

/** Deno.KvU64 when running with --unstable-kv, else this module's own. */
export class KvU64 {
  readonly value: bigint;
  constructor(value: bigint) {
    if (typeof value !== "bigint") throw new TypeError(`Value must be a bigint: received ${typeof value}`);
    if (value < 0n) throw new RangeError(`Value must be a positive bigint: received ${value}`);
    if (value > 0xffffffffffffffffn) throw new RangeError("Value must fit in a 64-bit unsigned integer");
    this.value = value;
    Object.freeze(this);
  }
  valueOf(): bigint {
    return this.value;
  }
  toString(): string {
    return this.value.toString();
  }
  get [Symbol.toStringTag](): string {
    return "Deno.KvU64";
  }
}

// deno-lint-ignore no-explicit-any
const DenoKvU64: any = (Deno as any).KvU64;
function isKvU64(v: unknown): v is { value: bigint } {
  return v instanceof KvU64 || (DenoKvU64 !== undefined && v instanceof DenoKvU64);
}
function newKvU64(n: bigint): unknown {
  return DenoKvU64 !== undefined ? new DenoKvU64(n) : new KvU64(n);
}

export const VE_V8 = 1, VE_LE64 = 2, VE_BYTES = 3;
export interface RawValue {
  data: Uint8Array;
  encoding: number;
}

// Deno.Kv stores values with its runtime's `core.serialize(v, {forStorage:
// true})`. That function is reachable as Deno[Deno.internal].core; using it
// gives byte-identical values and the same errors as kv.set. Where it is not
// reachable, node:v8's *base* Serializer writes the same bytes (its
// DefaultSerializer, behind node:v8's serialize(), writes typed arrays as
// Node host objects instead), except that node:v8's releaseBuffer relabels a
// version-16 header as 15 for Node.js (deno#35113): the fallback undoes that.
// deno-lint-ignore no-explicit-any
const core: any = (() => {
  try {
    // deno-lint-ignore no-explicit-any
    const c = (Deno as any)[(Deno as any).internal]?.core;
    return typeof c?.serialize === "function" && typeof c?.deserialize === "function" ? c : undefined;
  } catch {
    return undefined;
  }
})();

export type V8Codec = "core" | "node:v8";
/** Which serializer is in use: "core" (Deno's own) or the node:v8 fallback. */
export const v8Codec: V8Codec = core ? "core" : "node:v8";

/** `formatVersion`: see OpenKvOptions.v8FormatVersion; default = the runtime's. */
export function serializeV8(value: unknown, codec: V8Codec = v8Codec, formatVersion?: number): Uint8Array {
  const out = serializeV8Native(value, codec);
  if (formatVersion !== undefined && out[0] === 0xff && out[1] !== formatVersion) {
    const copy = out.slice();
    copy[1] = formatVersion;
    return copy;
  }
  return out;
}

function serializeV8Native(value: unknown, codec: V8Codec): Uint8Array {
  if (codec === "core") return core.serialize(value, { forStorage: true });
  const s = new Serializer();
  s.writeHeader();
  // Undo the Node.js relabelling of the header: find the flag releaseBuffer checks.
  for (const sym of Object.getOwnPropertySymbols(s)) {
    // deno-lint-ignore no-explicit-any
    if (sym.description === "kHeaderWritten") (s as any)[sym] = false;
  }
  try {
    s.writeValue(value);
  } catch (e) {
    throw new TypeError((e as Error).message);
  }
  const b = s.releaseBuffer();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export function deserializeV8(bytes: Uint8Array, codec: V8Codec = v8Codec): unknown {
  if (codec === "core") {
    return core.deserialize(bytes, { forStorage: true, deserializers: core.getCloneableDeserializers?.() });
  }
  const d = new Deserializer(bytes);
  d.readHeader();
  return d.readValue();
}

/** As Deno.Kv: a Uint8Array is stored raw, a KvU64 as 8 bytes little-endian, all else V8. */
export function encodeValue(value: unknown, v8FormatVersion?: number): RawValue {
  if (value instanceof Uint8Array && Object.prototype.toString.call(value) === "[object Uint8Array]") {
    return { data: value, encoding: VE_BYTES };
  }
  if (isKvU64(value)) {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigUint64(0, value.value, true);
    return { data, encoding: VE_LE64 };
  }
  return { data: serializeV8(value, v8Codec, v8FormatVersion), encoding: VE_V8 };
}

export function decodeValue(data: Uint8Array, encoding: number): unknown {
  switch (encoding) {
    case VE_V8:
      return deserializeV8(data);
    case VE_BYTES:
      return data;
    case VE_LE64:
      return newKvU64(new DataView(data.buffer, data.byteOffset, data.byteLength).getBigUint64(0, true));
    default:
      throw new TypeError("Invalid value type");
  }
}

// ---------------------------------------------------------------- keys

export type KvKeyPart = Uint8Array | string | number | bigint | boolean;
export type KvKey = readonly KvKeyPart[];

const utf8 = new TextEncoder();

/** Deno's KV key encoding (FoundationDB tuple layer subset, denokv proto/codec.rs). */
export function encodeKey(key: KvKey): Uint8Array {
  if (!Array.isArray(key)) throw new TypeError("Key must be an array");
  const out: number[] = [];
  const escaped = (b: Uint8Array) => {
    for (const c of b) {
      out.push(c);
      if (c === 0) out.push(0xff);
    }
    out.push(0);
  };
  for (const part of key) {
    if (typeof part === "string") {
      out.push(0x02);
      escaped(utf8.encode(part));
    } else if (part instanceof Uint8Array) {
      out.push(0x01);
      escaped(part);
    } else if (typeof part === "bigint") {
      encodeBigInt(out, part);
    } else if (typeof part === "number") {
      const dv = new DataView(new ArrayBuffer(8));
      dv.setFloat64(0, Number.isNaN(part) ? NaN : part); // canonical NaN
      let bits = dv.getBigUint64(0);
      bits = bits & (1n << 63n) ? ~bits & 0xffffffffffffffffn : bits ^ (1n << 63n);
      dv.setBigUint64(0, bits);
      out.push(0x21, ...new Uint8Array(dv.buffer));
    } else if (typeof part === "boolean") {
      out.push(part ? 0x27 : 0x26);
    } else {
      throw new TypeError(`Invalid key part: ${typeof part}`);
    }
  }
  return new Uint8Array(out);
}

function encodeBigInt(out: number[], v: bigint) {
  if (v === 0n) {
    out.push(0x14);
    return;
  }
  const neg = v < 0n;
  let hex = (neg ? -v : v).toString(16);
  if (hex.length % 2) hex = "0" + hex;
  const bytes = hex.match(/../g)!.map((h) => parseInt(h, 16));
  const n = bytes.length;
  if (n > 255) throw new TypeError("Invalid key part: bigint too large");
  if (neg) {
    out.push(...(n <= 8 ? [0x14 - n] : [0x0b, n ^ 0xff]), ...bytes.map((b) => ~b & 0xff));
  } else {
    out.push(...(n <= 8 ? [0x14 + n] : [0x1d, n]), ...bytes);
  }
}

// ---------------------------------------------------------------- versionstamps

export function versionstampHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export function versionstampBytes(hex: string): Uint8Array {
  if (typeof hex !== "string" || !/^[0-9a-f]{20}$/.test(hex)) throw new TypeError("invalid versionstamp");
  return new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

// ---------------------------------------------------------------- protobuf

/** Minimal proto3 writer: varints, length-delimited fields, packed repeats. */
class PbWriter {
  private buf = new Uint8Array(256);
  private len = 0;
  private ensure(n: number) {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  varint(v: bigint | number) {
    let n = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (n >= 0x80n) {
      this.buf[this.len++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.len++] = Number(n);
  }
  tag(field: number, wire: number) {
    this.varint((field << 3) | wire);
  }
  bytes(field: number, b: Uint8Array) {
    this.tag(field, 2);
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  message(field: number, w: PbWriter) {
    this.bytes(field, w.finish());
  }
  uint(field: number, v: bigint | number) {
    if (v === 0 || v === 0n) return; // proto3 default
    this.tag(field, 0);
    this.varint(v);
  }
  packed(field: number, vs: number[]) {
    if (vs.length === 0) return;
    const w = new PbWriter();
    for (const v of vs) w.varint(v);
    this.message(field, w);
  }
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

export const M_SET = 1, M_DELETE = 2, M_SUM = 3, M_MAX = 4, M_MIN = 5;

export interface WireCheck {
  key: Uint8Array;
  versionstamp: Uint8Array | null;
}
export interface WireMutation {
  key: Uint8Array;
  type: number;
  value?: RawValue;
  expireAtMs?: number;
}
export interface WireEnqueue {
  payload: Uint8Array;
  deadlineMs: number;
  keysIfUndelivered: Uint8Array[];
  backoffSchedule: number[];
}

export function encodeAtomicWrite(checks: WireCheck[], mutations: WireMutation[], enqueues: WireEnqueue[]): Uint8Array {
  const w = new PbWriter();
  for (const c of checks) {
    const m = new PbWriter();
    m.bytes(1, c.key);
    if (c.versionstamp) m.bytes(2, c.versionstamp);
    w.message(1, m);
  }
  for (const mu of mutations) {
    const m = new PbWriter();
    m.bytes(1, mu.key);
    if (mu.value) {
      const v = new PbWriter();
      v.bytes(1, mu.value.data);
      v.uint(2, mu.value.encoding);
      m.message(2, v);
    }
    m.uint(3, mu.type);
    if (mu.expireAtMs !== undefined) m.uint(4, mu.expireAtMs);
    w.message(2, m);
  }
  for (const e of enqueues) {
    const m = new PbWriter();
    m.bytes(1, e.payload);
    m.uint(2, e.deadlineMs);
    for (const k of e.keysIfUndelivered) m.bytes(3, k);
    m.packed(4, e.backoffSchedule);
    w.message(3, m);
  }
  return w.finish();
}

export const AW_SUCCESS = 1, AW_CHECK_FAILURE = 2, AW_WRITE_DISABLED = 5;
export interface AtomicWriteOutput {
  status: number;
  versionstamp: Uint8Array;
  failedChecks: number[];
}

/** Decodes AtomicWriteOutput; unknown fields are skipped, repeats packed or not. */
export function decodeAtomicWriteOutput(b: Uint8Array): AtomicWriteOutput {
  const out: AtomicWriteOutput = { status: 0, versionstamp: new Uint8Array(), failedChecks: [] };
  let i = 0;
  const varint = (): bigint => {
    let r = 0n, shift = 0n;
    for (;;) {
      if (i >= b.length) throw new Error("truncated protobuf");
      const c = b[i++];
      r |= BigInt(c & 0x7f) << shift;
      if (!(c & 0x80)) return r;
      shift += 7n;
    }
  };
  while (i < b.length) {
    const tag = Number(varint());
    const field = tag >>> 3, wire = tag & 7;
    if (wire === 0) {
      const v = Number(varint());
      if (field === 1) out.status = v;
      else if (field === 4) out.failedChecks.push(v);
    } else if (wire === 2) {
      const n = Number(varint());
      if (i + n > b.length) throw new Error("truncated protobuf");
      const sub = b.subarray(i, i + n);
      i += n;
      if (field === 2) out.versionstamp = sub;
      else if (field === 4) {
        const end = i;
        i -= n;
        while (i < end) out.failedChecks.push(Number(varint()));
      }
    } else if (wire === 5) i += 4;
    else if (wire === 1) i += 8;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
  return out;
}

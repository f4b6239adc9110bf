// Inputs shaped like what Deno sends: tuple-encoded keys, V8-serialized
// string values, and protobuf request bodies as Deno's KV Connect client
// (prost) encodes them: fields in number order, proto3 defaults omitted.

import KVEngine

/// Key `[prefix, "k0000042"]` in the KV tuple encoding (string parts: 0x02 … 0x00).
public func tupleKey(_ prefix: String, _ i: Int) -> Bytes {
    var digits = String(i)
    if digits.count < 8 { digits = String(repeating: "0", count: 8 - digits.count) + digits }
    var k: Bytes = [0x02]
    k += Array(prefix.utf8)
    k += [0x00, 0x02, UInt8(ascii: "k")]
    k += Array(digits.utf8)
    k.append(0x00)
    return k
}

/// A V8-serialized one-byte string (`"xxxx…"`) of exactly `total` bytes (≤ 131):
/// version header 0xFF 0x0F, tag '"' (0x22), varint length, Latin-1 bytes.
public func v8StringValue(totalBytes total: Int) -> KVValue {
    precondition(total >= 5 && total - 4 < 128)
    let n = total - 4
    var data: Bytes = [0xFF, 0x0F, 0x22, UInt8(n)]
    data += Bytes(repeating: UInt8(ascii: "x"), count: n)
    return KVValue(data: data, encoding: .v8)
}

/// 10-byte versionstamp of commit `counter`.
public func versionstamp(_ counter: UInt64) -> Bytes { Versionstamps.make(counter: counter) }

/// Deterministic PRNG (SplitMix64): the same keys in every run, no syscall per draw.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Minimal protobuf writer for building request bodies.
public struct ProtoWriter {
    public private(set) var bytes: Bytes = []
    public init() {}

    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Varint field (wire type 0); proto3 omits zero.
    public mutating func field(_ number: Int, varint v: UInt64) {
        if v == 0 { return }
        varint(UInt64(number << 3))
        varint(v)
    }

    /// Length-delimited field (wire type 2): bytes or an embedded message; proto3 omits empty bytes.
    public mutating func field(_ number: Int, bytes b: Bytes, omitEmpty: Bool = true) {
        if b.isEmpty && omitEmpty { return }
        varint(UInt64(number << 3 | 2))
        varint(UInt64(b.count))
        bytes += b
    }

    public static func message(_ build: (inout ProtoWriter) -> Void) -> Bytes {
        var w = ProtoWriter()
        build(&w)
        return w.bytes
    }
}

/// `SnapshotRead` body of `kv.get(key)`: one range [key, key ++ 0x00), limit 1.
public func snapshotReadBody(getting key: Bytes) -> Bytes {
    let range = ProtoWriter.message { r in
        r.field(1, bytes: key)
        r.field(2, bytes: key + [0x00])
        r.field(3, varint: 1)
    }
    return ProtoWriter.message { $0.field(1, bytes: range, omitEmpty: false) }
}

/// `AtomicWrite` body of `kv.set(key, value)` for each pair: one M_SET mutation each.
public func atomicWriteBody(setting pairs: [(key: Bytes, value: KVValue)]) -> Bytes {
    ProtoWriter.message { w in
        for (key, value) in pairs {
            let kvValue = ProtoWriter.message { v in
                v.field(1, bytes: value.data)
                v.field(2, varint: UInt64(value.encoding.rawValue))
            }
            let mutation = ProtoWriter.message { m in
                m.field(1, bytes: key)
                m.field(2, bytes: kvValue, omitEmpty: false)
                m.field(3, varint: 1)  // M_SET
            }
            w.field(2, bytes: mutation, omitEmpty: false)
        }
    }
}

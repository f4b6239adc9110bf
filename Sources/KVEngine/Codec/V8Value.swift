// A subset of the V8 ValueSerializer format, enough for the plain data Deno
// stores with `kv.set`: strings, numbers, bigints, booleans, null, undefined,
// arrays (dense and sparse), plain objects, Dates and Uint8Arrays. Anything
// else (Map, Set, RegExp, Error, other typed arrays, shared references, …)
// is not decoded: callers keep the raw bytes.
//
// `encode(decode(b)) == b` is not guaranteed (V8 has several ways to write
// some values), so callers that need the exact bytes re-encode and compare
// (see `V8Value.decodeExactly`).

import Foundation

public indirect enum V8Value: Sendable, Equatable {
    case undefined
    case null
    case bool(Bool)
    /// 'I' (a Smi).
    case int32(Int32)
    /// 'N' (a heap number).
    case double(Double)
    case bigint(BigIntValue)
    case string(String)
    /// Milliseconds since the epoch (NaN for an invalid Date).
    case date(Double)
    /// A Uint8Array over a whole ArrayBuffer of its own.
    case bytes(Bytes)
    case array([V8Value])
    case sparseArray(length: UInt32, properties: [V8Property])
    case object([V8Property])

    public static func == (a: V8Value, b: V8Value) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int32(x), .int32(y)): return x == y
        case let (.double(x), .double(y)): return x.bitPattern == y.bitPattern
        case let (.bigint(x), .bigint(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.date(x), .date(y)): return x.bitPattern == y.bitPattern
        case let (.bytes(x), .bytes(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.sparseArray(l1, p1), .sparseArray(l2, p2)): return l1 == l2 && p1 == p2
        case let (.object(x), .object(y)): return x == y
        default: return false
        }
    }
}

/// An own enumerable property; integer-index keys are kept as their decimal text.
public struct V8Property: Sendable, Equatable {
    public var key: String
    public var value: V8Value
    public init(_ key: String, _ value: V8Value) {
        self.key = key
        self.value = value
    }
}

extension V8Value {
    /// The serializer format version Deno 2.x writes (`FF 10`).
    public static let defaultVersion: UInt8 = 0x10

    enum Tag {
        static let version: UInt8 = 0xFF
        static let padding: UInt8 = 0x00
        static let undefined: UInt8 = 0x5F  // '_'
        static let null: UInt8 = 0x30  // '0'
        static let `true`: UInt8 = 0x54  // 'T'
        static let `false`: UInt8 = 0x46  // 'F'
        static let int32: UInt8 = 0x49  // 'I'
        static let uint32: UInt8 = 0x55  // 'U'
        static let double: UInt8 = 0x4E  // 'N'
        static let bigint: UInt8 = 0x5A  // 'Z'
        static let utf8String: UInt8 = 0x53  // 'S'
        static let oneByteString: UInt8 = 0x22  // '"'
        static let twoByteString: UInt8 = 0x63  // 'c'
        static let date: UInt8 = 0x44  // 'D'
        static let beginObject: UInt8 = 0x6F  // 'o'
        static let endObject: UInt8 = 0x7B  // '{'
        static let beginDense: UInt8 = 0x41  // 'A'
        static let endDense: UInt8 = 0x24  // '$'
        static let beginSparse: UInt8 = 0x61  // 'a'
        static let endSparse: UInt8 = 0x40  // '@'
        static let arrayBuffer: UInt8 = 0x42  // 'B'
        static let view: UInt8 = 0x56  // 'V'
        static let uint8ArraySubtag: UInt8 = 0x42  // 'B'
    }

    // MARK: decoding

    /// Decodes a whole serialized value; nil when it uses anything outside the
    /// subset or is malformed. Returns the format version from the header.
    public static func decode(_ bytes: Bytes) -> (version: UInt8, value: V8Value)? {
        var r = Reader(bytes: bytes)
        guard r.peek() == Tag.version else { return nil }
        r.i += 1
        guard let v = r.varint(), v <= 0xFF, v >= 13 else { return nil }
        guard let value = r.value(depth: 0), r.i == bytes.count else { return nil }
        return (UInt8(v), value)
    }

    /// Decodes only when re-encoding gives back exactly `bytes`.
    public static func decodeExactly(_ bytes: Bytes) -> V8Value? {
        guard let (version, value) = decode(bytes),
            let again = try? value.encode(version: version), again == bytes
        else { return nil }
        return value
    }

    private struct Reader {
        let bytes: Bytes
        var i = 0

        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

        mutating func byte() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }

        mutating func varint() -> UInt64? { V8Codec.readVarint(bytes, &i) }

        mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, n <= bytes.count - i else { return nil }
            defer { i += n }
            return bytes[i..<(i + n)]
        }

        mutating func double() -> Double? {
            guard let s = take(8) else { return nil }
            var bits: UInt64 = 0
            for (k, b) in s.enumerated() { bits |= UInt64(b) << (8 * UInt64(k)) }
            return Double(bitPattern: bits)
        }

        mutating func length() -> Int? {
            guard let v = varint(), v <= UInt64(UInt32.max) else { return nil }
            return Int(v)
        }

        mutating func value(depth: Int) -> V8Value? {
            guard depth < 200 else { return nil }
            var tag: UInt8
            repeat {
                guard let t = byte() else { return nil }
                tag = t
            } while tag == Tag.padding
            switch tag {
            case Tag.undefined: return .undefined
            case Tag.null: return .null
            case Tag.true: return .bool(true)
            case Tag.false: return .bool(false)
            case Tag.int32:
                guard let raw = varint(), raw <= UInt64(UInt32.max) else { return nil }
                let u = UInt32(raw)
                return .int32(Int32(bitPattern: (u >> 1) ^ (0 &- (u & 1))))
            case Tag.uint32:
                guard let raw = varint(), raw <= UInt64(UInt32.max) else { return nil }
                return .double(Double(raw))
            case Tag.double:
                return double().map { .double($0) }
            case Tag.date:
                return double().map { .date($0) }
            case Tag.bigint:
                guard let bits = varint() else { return nil }
                let n = Int(bits >> 1)
                guard let s = take(n) else { return nil }
                var words = [UInt64](repeating: 0, count: (n + 7) / 8)
                for (k, b) in s.enumerated() { words[k / 8] |= UInt64(b) << (8 * UInt64(k % 8)) }
                return .bigint(BigIntValue(negative: bits & 1 == 1, magnitude: words))
            case Tag.oneByteString:
                guard let n = length(), let s = take(n) else { return nil }
                return .string(String(s.map { Character(Unicode.Scalar($0)) }))
            case Tag.twoByteString:
                guard let n = length(), n % 2 == 0, let s = take(n) else { return nil }
                var units: [UInt16] = []
                units.reserveCapacity(n / 2)
                var it = s.makeIterator()
                while let lo = it.next(), let hi = it.next() { units.append(UInt16(lo) | UInt16(hi) << 8) }
                // Lone surrogates have no String form: not decodable.
                let str = String(decoding: units, as: UTF16.self)
                return Array(str.utf16) == units ? .string(str) : nil
            case Tag.utf8String:
                guard let n = length(), let s = take(n), let str = String(validating: Array(s), as: UTF8.self) else {
                    return nil
                }
                return .string(str)
            case Tag.beginObject:
                guard let props = properties(end: Tag.endObject, depth: depth),
                    let count = length(), count == props.count
                else { return nil }
                return .object(props)
            case Tag.beginDense:
                guard let n = length(), n <= bytes.count - i else { return nil }
                var items: [V8Value] = []
                items.reserveCapacity(n)
                for _ in 0..<n {
                    guard let v = value(depth: depth + 1) else { return nil }
                    items.append(v)
                }
                // Extra (non-index) properties are outside the subset.
                guard byte() == Tag.endDense, length() == 0, length() == n else { return nil }
                return .array(items)
            case Tag.beginSparse:
                guard let n = length(),
                    let props = properties(end: Tag.endSparse, depth: depth),
                    let count = length(), count == props.count, length() == n
                else { return nil }
                return .sparseArray(length: UInt32(n), properties: props)
            case Tag.arrayBuffer:
                guard let n = length(), let s = take(n), byte() == Tag.view,
                    byte() == Tag.uint8ArraySubtag,
                    let offset = length(), offset == 0, let len = length(), len == n,
                    let flags = varint(), flags == 0
                else { return nil }
                return .bytes(Bytes(s))
            default:
                return nil
            }
        }

        /// Key/value pairs up to the end tag (consumed).
        mutating func properties(end: UInt8, depth: Int) -> [V8Property]? {
            var props: [V8Property] = []
            while true {
                while peek() == Tag.padding { i += 1 }
                guard let t = peek() else { return nil }
                if t == end {
                    i += 1
                    return props
                }
                guard let k = value(depth: depth + 1), let v = value(depth: depth + 1) else { return nil }
                let key: String
                switch k {
                case .string(let s): key = s
                case .int32(let n) where n >= 0: key = String(n)
                case .double(let d) where d >= 0 && d < 4294967295 && d == d.rounded(.towardZero):
                    key = String(UInt32(d))
                default: return nil
                }
                props.append(V8Property(key, v))
            }
        }
    }

    // MARK: encoding

    public struct EncodingError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Serializes as V8 does (header `FF <version>`); throws for values V8
    /// cannot produce (e.g. a sparse array with a property past its length).
    public func encode(version: UInt8 = V8Value.defaultVersion) throws -> Bytes {
        var out: Bytes = [Tag.version]
        V8Codec.writeVarint(UInt64(version), into: &out)
        try write(into: &out)
        return out
    }

    private static func writeDouble(_ d: Double, into out: inout Bytes) {
        let bits = d.bitPattern
        for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))) }
    }

    static func writeString(_ s: String, into out: inout Bytes) {
        let units = Array(s.utf16)
        if units.allSatisfy({ $0 <= 0xFF }) {
            out.append(Tag.oneByteString)
            V8Codec.writeVarint(UInt64(units.count), into: &out)
            for u in units { out.append(UInt8(u)) }
        } else {
            // V8 aligns two-byte data on an even offset with a padding tag.
            let byteLength = UInt64(units.count * 2)
            var lenBytes: Bytes = []
            V8Codec.writeVarint(byteLength, into: &lenBytes)
            if (out.count + 1 + lenBytes.count) & 1 == 1 { out.append(Tag.padding) }
            out.append(Tag.twoByteString)
            out.append(contentsOf: lenBytes)
            for u in units {
                out.append(UInt8(truncatingIfNeeded: u))
                out.append(UInt8(truncatingIfNeeded: u >> 8))
            }
        }
    }

    /// Integer-index keys ("0", "17") are written as numbers, others as strings.
    private static func writeKey(_ key: String, into out: inout Bytes) {
        if let n = arrayIndex(key) {
            if n <= 0x3FFF_FFFF {
                V8Value.int32(Int32(n)).writeScalar(into: &out)
            } else {
                out.append(Tag.double)
                writeDouble(Double(n), into: &out)
            }
        } else {
            writeString(key, into: &out)
        }
    }

    /// The value of a canonical array index ("0", "42"; not "01", not 2^32-1).
    static func arrayIndex(_ s: String) -> UInt32? {
        guard !s.isEmpty, s.count <= 10, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        if s.count > 1 && s.hasPrefix("0") { return nil }
        guard let v = UInt64(s), v < 4294967295 else { return nil }
        return UInt32(v)
    }

    private func writeScalar(into out: inout Bytes) {
        if case .int32(let n) = self {
            out.append(Tag.int32)
            let zz = UInt32(bitPattern: (n << 1) ^ (n >> 31))
            V8Codec.writeVarint(UInt64(zz), into: &out)
        }
    }

    private func write(into out: inout Bytes) throws {
        switch self {
        case .undefined: out.append(Tag.undefined)
        case .null: out.append(Tag.null)
        case .bool(let b): out.append(b ? Tag.true : Tag.false)
        case .int32: writeScalar(into: &out)
        case .double(let d):
            out.append(Tag.double)
            Self.writeDouble(d, into: &out)
        case .date(let d):
            out.append(Tag.date)
            Self.writeDouble(d, into: &out)
        case .bigint(let b):
            out.append(Tag.bigint)
            V8Codec.writeVarint(UInt64(b.magnitude.count * 8) * 2 + (b.negative ? 1 : 0), into: &out)
            for w in b.magnitude {
                for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: w >> (8 * UInt64(k)))) }
            }
        case .string(let s): Self.writeString(s, into: &out)
        case .bytes(let b):
            out.append(Tag.arrayBuffer)
            V8Codec.writeVarint(UInt64(b.count), into: &out)
            out.append(contentsOf: b)
            out.append(contentsOf: [Tag.view, Tag.uint8ArraySubtag, 0])
            V8Codec.writeVarint(UInt64(b.count), into: &out)
            out.append(0)
        case .array(let items):
            out.append(Tag.beginDense)
            V8Codec.writeVarint(UInt64(items.count), into: &out)
            for v in items { try v.write(into: &out) }
            out.append(Tag.endDense)
            out.append(0)
            V8Codec.writeVarint(UInt64(items.count), into: &out)
        case .sparseArray(let length, let props):
            out.append(Tag.beginSparse)
            V8Codec.writeVarint(UInt64(length), into: &out)
            for p in props {
                if let n = Self.arrayIndex(p.key), n >= length {
                    throw EncodingError(description: "sparse array index \(n) is not below its length \(length)")
                }
                Self.writeKey(p.key, into: &out)
                try p.value.write(into: &out)
            }
            out.append(Tag.endSparse)
            V8Codec.writeVarint(UInt64(props.count), into: &out)
            V8Codec.writeVarint(UInt64(length), into: &out)
        case .object(let props):
            out.append(Tag.beginObject)
            for p in props {
                Self.writeKey(p.key, into: &out)
                try p.value.write(into: &out)
            }
            out.append(Tag.endObject)
            V8Codec.writeVarint(UInt64(props.count), into: &out)
        }
    }
}

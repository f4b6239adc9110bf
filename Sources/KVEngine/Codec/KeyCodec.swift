import Foundation

// MARK: - KV key tuple encoding

public enum KeyPart: Sendable, Equatable {
    case bytes(Bytes)
    case string(String)
    case bigint(BigIntValue)
    case number(Double)
    case bool(Bool)

    public static func == (a: KeyPart, b: KeyPart) -> Bool {
        switch (a, b) {
        case let (.bytes(x), .bytes(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.bigint(x), .bigint(y)): return x == y
        case let (.number(x), .number(y)): return x.bitPattern == y.bitPattern
        case let (.bool(x), .bool(y)): return x == y
        default: return false
        }
    }
}

public enum KeyCodec {
    /// Decodes a stored key; nil when it is not a well-formed tuple.
    public static func decode(_ key: Bytes) -> [KeyPart]? {
        var parts: [KeyPart] = []
        var i = 0
        func escaped() -> Bytes? {
            var out: Bytes = []
            while i < key.count {
                let c = key[i]
                i += 1
                if c == 0 {
                    if i < key.count, key[i] == 0xFF {
                        out.append(0)
                        i += 1
                        continue
                    }
                    return out
                }
                out.append(c)
            }
            return nil
        }
        while i < key.count {
            let tag = key[i]
            i += 1
            switch tag {
            case 0x01:
                guard let b = escaped() else { return nil }
                parts.append(.bytes(b))
            case 0x02:
                guard let b = escaped(), let s = String(validating: b, as: UTF8.self) else { return nil }
                parts.append(.string(s))
            case 0x0B...0x1D:
                var n: Int
                let negative = tag < 0x14
                if tag == 0x1D || tag == 0x0B {
                    guard i < key.count else { return nil }
                    n = Int(tag == 0x1D ? key[i] : key[i] ^ 0xFF)
                    i += 1
                } else {
                    n = abs(Int(tag) - 0x14)
                }
                guard key.count - i >= n else { return nil }
                var be = Array(key[i..<(i + n)])
                i += n
                if negative { be = be.map { ~$0 } }
                parts.append(.bigint(BigIntValue(negative: negative, bigEndian: be)))
            case 0x21:
                guard key.count - i >= 8 else { return nil }
                var bits: UInt64 = 0
                for k in 0..<8 { bits = (bits << 8) | UInt64(key[i + k]) }
                i += 8
                bits = bits & (1 << 63) != 0 ? bits ^ (1 << 63) : ~bits
                parts.append(.number(Double(bitPattern: bits)))
            case 0x26: parts.append(.bool(false))
            case 0x27: parts.append(.bool(true))
            default: return nil
            }
        }
        return parts
    }

    public static func encode(_ parts: [KeyPart]) -> Bytes {
        var out: Bytes = []
        func escaped(_ b: Bytes) {
            for c in b {
                out.append(c)
                if c == 0 { out.append(0xFF) }
            }
            out.append(0)
        }
        for p in parts {
            switch p {
            case .bytes(let b):
                out.append(0x01)
                escaped(b)
            case .string(let s):
                out.append(0x02)
                escaped(Array(s.utf8))
            case .bigint(let v):
                var be = v.bigEndianBytes
                if be.isEmpty {
                    out.append(0x14)
                    continue
                }
                let n = be.count
                if v.negative {
                    if n <= 8 {
                        out.append(UInt8(0x14 - n))
                    } else {
                        out.append(contentsOf: [0x0B, UInt8(truncatingIfNeeded: n) ^ 0xFF])
                    }
                    be = be.map { ~$0 }
                } else {
                    if n <= 8 {
                        out.append(UInt8(0x14 + n))
                    } else {
                        out.append(contentsOf: [0x1D, UInt8(truncatingIfNeeded: n)])
                    }
                }
                out.append(contentsOf: be)
            case .number(let d):
                var bits = d.bitPattern
                bits = bits & (1 << 63) != 0 ? ~bits : bits ^ (1 << 63)
                out.append(0x21)
                for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(7 - k)))) }
            case .bool(let b):
                out.append(b ? 0x27 : 0x26)
            }
        }
        return out
    }
}

extension BigIntValue {
    init(negative: Bool, bigEndian be: Bytes) {
        var words = [UInt64](repeating: 0, count: (be.count + 7) / 8)
        for (k, b) in be.reversed().enumerated() { words[k / 8] |= UInt64(b) << (8 * UInt64(k % 8)) }
        self.init(negative: negative, magnitude: words)
    }

    /// Magnitude, big-endian, without leading zero bytes (empty for zero).
    var bigEndianBytes: Bytes {
        var out: Bytes = []
        for w in magnitude.reversed() {
            for k in stride(from: 7, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: w >> (8 * UInt64(k)))) }
        }
        while let f = out.first, f == 0 { out.removeFirst() }
        return out
    }

    /// Parses an optionally signed decimal integer.
    public init?(decimal: String) {
        var s = Substring(decimal)
        var negative = false
        if s.hasPrefix("-") {
            negative = true
            s = s.dropFirst()
        }
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        var words: [UInt64] = []
        for c in s.utf8 {
            var carry = UInt64(c - 0x30)
            for k in 0..<words.count {
                let (hi, lo) = words[k].multipliedFullWidth(by: 10)
                let (sum, o) = lo.addingReportingOverflow(carry)
                words[k] = sum
                carry = hi + (o ? 1 : 0)
            }
            if carry != 0 { words.append(carry) }
        }
        self.init(negative: negative, magnitude: words)
    }
}

// A small V8 ValueSerializer codec for the values a `sum` mutation can
// involve: numbers (double / int32 / uint32) and bigints.

/// Arbitrary-size integer: sign + little-endian 64-bit magnitude words.
/// Normalized: no trailing zero words; zero is never negative.
public struct BigIntValue: Sendable, Equatable, Hashable, Comparable, CustomStringConvertible {
    public private(set) var negative: Bool
    /// Little-endian 64-bit words of the absolute value (empty for zero).
    public private(set) var magnitude: [UInt64]

    public init(negative: Bool, magnitude: [UInt64]) {
        var m = magnitude
        while let last = m.last, last == 0 { m.removeLast() }
        self.magnitude = m
        self.negative = m.isEmpty ? false : negative
    }

    public init(_ value: Int64) {
        if value < 0 {
            self.init(negative: true, magnitude: [UInt64(bitPattern: value).magnitudeOfNegative])
        } else {
            self.init(negative: false, magnitude: [UInt64(value)])
        }
    }

    public init(uint64 value: UInt64) {
        self.init(negative: false, magnitude: [value])
    }

    public static let zero = BigIntValue(negative: false, magnitude: [])

    public var isZero: Bool { magnitude.isEmpty }

    /// The value as a UInt64 when 0 <= self <= UInt64.max.
    public var uint64Value: UInt64? {
        if negative { return nil }
        switch magnitude.count {
        case 0: return 0
        case 1: return magnitude[0]
        default: return nil
        }
    }

    public static prefix func - (v: BigIntValue) -> BigIntValue {
        BigIntValue(negative: !v.negative, magnitude: v.magnitude)
    }

    public static func + (a: BigIntValue, b: BigIntValue) -> BigIntValue {
        if a.negative == b.negative {
            return BigIntValue(negative: a.negative, magnitude: addMagnitudes(a.magnitude, b.magnitude))
        }
        // Different signs: subtract the smaller magnitude from the larger.
        switch compareMagnitudes(a.magnitude, b.magnitude) {
        case 0:
            return .zero
        case 1:
            return BigIntValue(negative: a.negative, magnitude: subtractMagnitudes(a.magnitude, b.magnitude))
        default:
            return BigIntValue(negative: b.negative, magnitude: subtractMagnitudes(b.magnitude, a.magnitude))
        }
    }

    public static func - (a: BigIntValue, b: BigIntValue) -> BigIntValue { a + (-b) }

    public static func < (a: BigIntValue, b: BigIntValue) -> Bool {
        if a.negative != b.negative { return a.negative }
        let c = compareMagnitudes(a.magnitude, b.magnitude)
        return a.negative ? c > 0 : c < 0
    }

    public var description: String {
        if isZero { return "0" }
        // Repeated division by 10^19.
        var words = magnitude
        var chunks: [UInt64] = []
        let base: UInt64 = 10_000_000_000_000_000_000
        while !words.isEmpty {
            var rem: UInt64 = 0
            for i in stride(from: words.count - 1, through: 0, by: -1) {
                let (q, r) = base.dividingFullWidth((high: rem, low: words[i]))
                words[i] = q
                rem = r
            }
            while let last = words.last, last == 0 { words.removeLast() }
            chunks.append(rem)
        }
        var s = negative ? "-" : ""
        s += String(chunks.last!)
        for c in chunks.dropLast().reversed() {
            let d = String(c)
            s += String(repeating: "0", count: 19 - d.count) + d
        }
        return s
    }

    // MARK: magnitude helpers

    static func compareMagnitudes(_ a: [UInt64], _ b: [UInt64]) -> Int {
        if a.count != b.count { return a.count < b.count ? -1 : 1 }
        for i in stride(from: a.count - 1, through: 0, by: -1) where a[i] != b[i] {
            return a[i] < b[i] ? -1 : 1
        }
        return 0
    }

    static func addMagnitudes(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        let n = max(a.count, b.count)
        var out = [UInt64]()
        out.reserveCapacity(n + 1)
        var carry: UInt64 = 0
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            let (s1, o1) = x.addingReportingOverflow(y)
            let (s2, o2) = s1.addingReportingOverflow(carry)
            out.append(s2)
            carry = (o1 ? 1 : 0) + (o2 ? 1 : 0)
        }
        if carry != 0 { out.append(carry) }
        return out
    }

    /// a - b, requires |a| >= |b|.
    static func subtractMagnitudes(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        var out = [UInt64]()
        out.reserveCapacity(a.count)
        var borrow: UInt64 = 0
        for i in 0..<a.count {
            let y = i < b.count ? b[i] : 0
            let (d1, o1) = a[i].subtractingReportingOverflow(y)
            let (d2, o2) = d1.subtractingReportingOverflow(borrow)
            out.append(d2)
            borrow = (o1 ? 1 : 0) + (o2 ? 1 : 0)
        }
        return out
    }
}

private extension UInt64 {
    /// For the bit pattern of a negative Int64, its absolute value.
    var magnitudeOfNegative: UInt64 { (~self) &+ 1 }
}

/// A JS number or bigint, as found in V8-serialized `sum` operands and values.
public enum V8Scalar: Sendable, Equatable {
    case number(Double)
    case bigint(BigIntValue)

    /// "Number" / "BigInt" (used in error texts).
    public var kindName: String {
        switch self {
        case .number: return "Number"
        case .bigint: return "BigInt"
        }
    }

    public func sameKind(as other: V8Scalar) -> Bool {
        switch (self, other) {
        case (.number, .number), (.bigint, .bigint): return true
        default: return false
        }
    }
}

public enum V8Codec {
    static let tagPadding: UInt8 = 0x00
    static let tagVersion: UInt8 = 0xFF
    static let tagDouble: UInt8 = 0x4E  // 'N'
    static let tagInt32: UInt8 = 0x49  // 'I'
    static let tagUint32: UInt8 = 0x55  // 'U'
    static let tagBigInt: UInt8 = 0x5A  // 'Z'
    static let writeVersion: UInt8 = 15

    /// Decodes a serialized number or bigint; nil for anything else or malformed input.
    public static func decodeScalar(_ bytes: Bytes) -> V8Scalar? {
        var i = 0
        guard !bytes.isEmpty else { return nil }
        if bytes[0] == tagVersion {
            i = 1
            guard readVarint(bytes, &i) != nil else { return nil }
        }
        while i < bytes.count, bytes[i] == tagPadding { i += 1 }
        guard i < bytes.count else { return nil }
        let tag = bytes[i]
        i += 1
        switch tag {
        case tagDouble:
            guard i + 8 <= bytes.count else { return nil }
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
            return .number(Double(bitPattern: bits))
        case tagInt32:
            guard let raw = readVarint(bytes, &i), raw <= UInt64(UInt32.max) else { return nil }
            let u = UInt32(raw)
            let v = Int32(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
            return .number(Double(v))
        case tagUint32:
            guard let raw = readVarint(bytes, &i), raw <= UInt64(UInt32.max) else { return nil }
            return .number(Double(raw))
        case tagBigInt:
            guard let bitfield = readVarint(bytes, &i) else { return nil }
            let negative = bitfield & 1 == 1
            let byteLength = Int(bitfield >> 1)
            guard byteLength <= bytes.count - i else { return nil }
            var words = [UInt64](repeating: 0, count: (byteLength + 7) / 8)
            for k in 0..<byteLength {
                words[k / 8] |= UInt64(bytes[i + k]) << (8 * UInt64(k % 8))
            }
            return .bigint(BigIntValue(negative: negative, magnitude: words))
        default:
            return nil
        }
    }

    /// `FF 0F 'N' <f64 LE>` or `FF 0F 'Z' <bitfield> <magnitude LE>`.
    public static func encode(_ v: V8Scalar) -> Bytes {
        var out: Bytes = [tagVersion, writeVersion]
        switch v {
        case .number(let d):
            out.append(tagDouble)
            let bits = d.bitPattern
            for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))) }
        case .bigint(let b):
            out.append(tagBigInt)
            let byteLength = UInt64(b.magnitude.count * 8)
            writeVarint(byteLength * 2 + (b.negative ? 1 : 0), into: &out)
            for w in b.magnitude {
                for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: w >> (8 * UInt64(k)))) }
            }
        }
        return out
    }

    static func readVarint(_ bytes: Bytes, _ i: inout Int) -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while i < bytes.count {
            let b = bytes[i]
            i += 1
            if shift >= 64 { return nil }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    static func writeVarint(_ value: UInt64, into out: inout Bytes) {
        var v = value
        repeat {
            var b = UInt8(v & 0x7F)
            v >>= 7
            if v != 0 { b |= 0x80 }
            out.append(b)
        } while v != 0
    }
}

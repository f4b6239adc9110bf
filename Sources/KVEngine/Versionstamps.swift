// Versionstamps: the 10 bytes every committed write carries.

/// Versionstamp helpers: 8-byte big-endian commit counter + 0x0000.
public enum Versionstamps {
    public static func make(counter: UInt64) -> Versionstamp {
        var out = Bytes(repeating: 0, count: 10)
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(7 - i))) }
        return out
    }

    /// The commit counter of a 10-byte versionstamp (nil for a malformed one).
    public static func counter(of v: Versionstamp) -> UInt64? {
        guard v.count == 10 else { return nil }
        var c: UInt64 = 0
        for i in 0..<8 { c = (c << 8) | UInt64(v[i]) }
        return c
    }

    /// 20 lower-case hex characters.
    public static func hex(_ v: Versionstamp) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = Bytes()
        out.reserveCapacity(v.count * 2)
        for b in v {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

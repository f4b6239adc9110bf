// The JSON Lines format of `kvconnectd export` / `import`: one entry per line,
//
//   {"key":[...parts...],"value":...,"encoding":"v8"|"bytes"|"u64","versionstamp":"<20 hex>","expiresAt":ms}
//
// Readable forms are only written when they re-encode to exactly the stored
// bytes (checked at export time); otherwise the raw bytes are written, so an
// import reproduces every row byte for byte. See README "Backup and restore".

import Foundation

// MARK: - entries ⇄ JSON

public struct ExportedEntry: Sendable, Equatable {
    public var key: Bytes
    public var value: Bytes
    /// Raw `entries.encoding` (1 V8, 2 LE64, 3 bytes).
    public var encoding: Int64
    public var versionstamp: Bytes
    public var expiresAtMs: Int64?

    public init(key: Bytes, value: Bytes, encoding: Int64, versionstamp: Bytes, expiresAtMs: Int64?) {
        self.key = key
        self.value = value
        self.encoding = encoding
        self.versionstamp = versionstamp
        self.expiresAtMs = expiresAtMs
    }
}

public struct ExportFormatError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

public enum ExportFormat {
    /// Single-member objects with one of these names are type wrappers; a
    /// real object that looks like one is written as `{"object":{...}}`.
    static let wrapperNames: Set<String> = [
        "bytes", "bigint", "number", "date", "undefined", "object",
        "sparseArray", "v8", "u64", "rawKey"
    ]

    // MARK: export

    public static func line(for e: ExportedEntry) -> String {
        var members: [(String, JSONValue)] = []
        members.append(("key", keyJSON(e.key)))
        let (value, encoding) = valueJSON(e.value, encoding: e.encoding)
        members.append(("value", value))
        members.append(("encoding", encoding))
        members.append(("versionstamp", .string(hex(e.versionstamp))))
        if let x = e.expiresAtMs { members.append(("expiresAt", .number(String(x)))) }
        return JSONValue.object(members).serialized
    }

    public static func keyJSON(_ key: Bytes) -> JSONValue {
        // NaN is written as "NaN", which imports as the canonical NaN only.
        guard let parts = KeyCodec.decode(key), KeyCodec.encode(parts) == key,
            !parts.contains(where: {
                if case .number(let d) = $0 { return !canonicalIfNaN(d) }
                return false
            })
        else {
            return .object([("rawKey", .string(base64(key)))])
        }
        return .array(
            parts.map { p in
                switch p {
                case .string(let s): return .string(s)
                case .bool(let b): return .bool(b)
                case .bytes(let b): return .object([("bytes", .string(base64(b)))])
                case .bigint(let v): return .object([("bigint", .string(v.description))])
                case .number(let d): return .object([("number", keyNumberJSON(d))])
                }
            })
    }

    /// False for a NaN whose bits are not those of `Double.nan` (other NaNs
    /// have no readable form that imports byte for byte).
    static func canonicalIfNaN(_ d: Double) -> Bool { !d.isNaN || d.bitPattern == Double.nan.bitPattern }

    static func keyNumberJSON(_ d: Double) -> JSONValue {
        if d.isNaN { return .string("NaN") }
        if d.isInfinite { return .string(d < 0 ? "-Infinity" : "Infinity") }
        if d == 0 && d.sign == .minus { return .string("-0") }
        if d == d.rounded(.towardZero), abs(d) < 9007199254740992 { return .number(String(Int64(d))) }
        return .number("\(d)")
    }

    /// A V8 value as readable JSON (the export format's wrappers) whatever
    /// its header version; `{"v8": base64}` when it has no readable form.
    /// For display only: unlike `valueJSON` it does not promise a byte-exact import.
    public static func readableV8(_ data: Bytes) -> JSONValue {
        if let v = V8Value.decode(data)?.value, let j = try? v8JSON(v) { return j }
        return .object([("v8", .string(base64(data)))])
    }

    public static func valueJSON(_ data: Bytes, encoding: Int64) -> (JSONValue, JSONValue) {
        switch encoding {
        case Int64(ValueEncoding.v8.rawValue):
            // The readable form imports with the default header version only.
            if data.count >= 2, data[1] == V8Value.defaultVersion,
                let v = V8Value.decodeExactly(data), let j = try? v8JSON(v)
            {
                return (j, .string("v8"))
            }
            return (.object([("v8", .string(base64(data)))]), .string("v8"))
        case Int64(ValueEncoding.le64.rawValue):
            if data.count == 8 {
                var n: UInt64 = 0
                for k in 0..<8 { n |= UInt64(data[k]) << (8 * UInt64(k)) }
                return (.object([("u64", .string(String(n)))]), .string("u64"))
            }
            return (.object([("bytes", .string(base64(data)))]), .string("u64"))
        case Int64(ValueEncoding.bytes.rawValue):
            return (.object([("bytes", .string(base64(data)))]), .string("bytes"))
        default:
            return (.object([("bytes", .string(base64(data)))]), .number(String(encoding)))
        }
    }

    struct NotReadable: Error {}

    static func v8JSON(_ v: V8Value) throws -> JSONValue {
        switch v {
        case .undefined: return .object([("undefined", .bool(true))])
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .int32(let n): return .number(String(n))
        case .double(let d):
            guard canonicalIfNaN(d) else { throw NotReadable() }
            if d.isNaN || d.isInfinite || (d == 0 && d.sign == .minus) {
                return .object([("number", keyNumberJSON(d))])
            }
            return .number(doubleText(d))
        case .bigint(let b): return .object([("bigint", .string(b.description))])
        case .string(let s): return .string(s)
        case .date(let ms):
            guard canonicalIfNaN(ms) else { throw NotReadable() }
            if ms.isNaN { return .object([("date", .string("Invalid Date"))]) }
            if let iso = isoDate(ms) { return .object([("date", .string(iso))]) }
            guard ms.isFinite else { throw NotReadable() }
            return .object([("date", .number(doubleText(ms)))])
        case .bytes(let b): return .object([("bytes", .string(base64(b)))])
        case .array(let items): return .array(try items.map(v8JSON))
        case .sparseArray(let length, let props):
            return .object([
                (
                    "sparseArray",
                    .object([
                        ("length", .number(String(length))),
                        ("properties", .object(try props.map { ($0.key, try v8JSON($0.value)) }))
                    ])
                )
            ])
        case .object(let props):
            let o = JSONValue.object(try props.map { ($0.key, try v8JSON($0.value)) })
            if props.count == 1, wrapperNames.contains(props[0].key) { return .object([("object", o)]) }
            return o
        }
    }

    /// Always with a '.' or an exponent, so it reads back as a double.
    static func doubleText(_ d: Double) -> String {
        let s = "\(d)"
        return s.contains(".") || s.contains("e") ? s : s + ".0"
    }

    // MARK: import

    public static func parse(line: String) throws -> ExportedEntry {
        let j = try JSONValue.parse(line)
        guard case .object = j else { throw ExportFormatError("not a JSON object") }
        guard let k = j["key"] else { throw ExportFormatError("missing \"key\"") }
        let key = try keyBytes(k)
        guard let encJ = j["encoding"] else { throw ExportFormatError("missing \"encoding\"") }
        let encoding: Int64
        switch encJ {
        case .string("v8"): encoding = Int64(ValueEncoding.v8.rawValue)
        case .string("u64"): encoding = Int64(ValueEncoding.le64.rawValue)
        case .string("bytes"): encoding = Int64(ValueEncoding.bytes.rawValue)
        case .number(let n):
            guard let e = Int64(n) else { throw ExportFormatError("bad \"encoding\"") }
            encoding = e
        default: throw ExportFormatError("bad \"encoding\" (v8, u64 or bytes)")
        }
        guard let vJ = j["value"] else { throw ExportFormatError("missing \"value\"") }
        let value = try valueBytes(vJ, encoding: encoding)
        guard case .string(let vsHex)? = j["versionstamp"], let vs = unhex(vsHex), vs.count == 10 else {
            throw ExportFormatError("missing or bad \"versionstamp\" (20 hex digits)")
        }
        var expires: Int64?
        if let x = j["expiresAt"] {
            switch x {
            case .null: expires = nil
            case .number(let n):
                guard let v = Int64(n) else { throw ExportFormatError("bad \"expiresAt\"") }
                expires = v
            default: throw ExportFormatError("bad \"expiresAt\"")
            }
        }
        return ExportedEntry(key: key, value: value, encoding: encoding, versionstamp: vs, expiresAtMs: expires)
    }

    static func wrapper(_ j: JSONValue) -> (String, JSONValue)? {
        if case .object(let m) = j, m.count == 1, wrapperNames.contains(m[0].0) { return m[0] }
        return nil
    }

    public static func keyBytes(_ j: JSONValue) throws -> Bytes {
        if let (name, v) = wrapper(j), name == "rawKey" {
            guard case .string(let s) = v, let b = unbase64(s) else { throw ExportFormatError("bad rawKey") }
            return b
        }
        guard case .array(let items) = j else {
            throw ExportFormatError("\"key\" must be an array or {\"rawKey\":...}")
        }
        var parts: [KeyPart] = []
        for item in items {
            switch item {
            case .string(let s): parts.append(.string(s))
            case .bool(let b): parts.append(.bool(b))
            default:
                guard let (name, v) = wrapper(item) else { throw ExportFormatError("bad key part \(item.serialized)") }
                switch (name, v) {
                case ("bytes", .string(let s)):
                    guard let b = unbase64(s) else { throw ExportFormatError("bad base64 in key") }
                    parts.append(.bytes(b))
                case ("bigint", .string(let s)):
                    guard let b = BigIntValue(decimal: s) else { throw ExportFormatError("bad bigint in key") }
                    parts.append(.bigint(b))
                case ("number", _):
                    parts.append(.number(try numberValue(v)))
                default:
                    throw ExportFormatError("bad key part \(item.serialized)")
                }
            }
        }
        return KeyCodec.encode(parts)
    }

    static func numberValue(_ j: JSONValue) throws -> Double {
        switch j {
        case .number(let n):
            guard let d = Double(n) else { throw ExportFormatError("bad number \(n)") }
            return d
        case .string("NaN"): return .nan
        case .string("Infinity"): return .infinity
        case .string("-Infinity"): return -.infinity
        case .string("-0"): return -0.0
        default: throw ExportFormatError("bad number \(j.serialized)")
        }
    }

    static func valueBytes(_ j: JSONValue, encoding: Int64) throws -> Bytes {
        if let (name, v) = wrapper(j), name == "bytes" || name == "v8" || name == "u64" {
            if name == "u64" {
                guard encoding == Int64(ValueEncoding.le64.rawValue), case .string(let s) = v, let n = UInt64(s) else {
                    throw ExportFormatError("bad u64 value")
                }
                return (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
            }
            if name == "v8" || encoding != Int64(ValueEncoding.v8.rawValue) {
                guard case .string(let s) = v, let b = unbase64(s) else { throw ExportFormatError("bad base64 value") }
                return b
            }
        }
        guard encoding == Int64(ValueEncoding.v8.rawValue) else {
            throw ExportFormatError("a value with encoding \(encoding) must be {\"bytes\":...} or {\"u64\":...}")
        }
        do {
            return try v8Value(j).encode()
        } catch let e as V8Value.EncodingError {
            throw ExportFormatError(e.description)
        }
    }

    static func v8Value(_ j: JSONValue) throws -> V8Value {
        switch j {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .number(let n):
            if !n.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let i = Int32(n) { return .int32(i) }
            guard let d = Double(n) else { throw ExportFormatError("bad number \(n)") }
            return .double(d)
        case .array(let items): return .array(try items.map(v8Value))
        case .object(let members):
            if let (name, v) = wrapper(j) {
                switch (name, v) {
                case ("undefined", _): return .undefined
                case ("number", _): return .double(try numberValue(v))
                case ("bigint", .string(let s)):
                    guard let b = BigIntValue(decimal: s) else { throw ExportFormatError("bad bigint \(s)") }
                    return .bigint(b)
                case ("bytes", .string(let s)):
                    guard let b = unbase64(s) else { throw ExportFormatError("bad base64") }
                    return .bytes(b)
                case ("date", .string("Invalid Date")): return .date(.nan)
                case ("date", .string(let s)):
                    guard let ms = parseISODate(s) else { throw ExportFormatError("bad date \(s)") }
                    return .date(ms)
                case ("date", .number(let n)):
                    guard let d = Double(n) else { throw ExportFormatError("bad date \(n)") }
                    return .date(d)
                case ("object", .object(let inner)):
                    return .object(try inner.map { V8Property($0.0, try v8Value($0.1)) })
                case ("sparseArray", .object):
                    guard case .number(let ln)? = v["length"], let length = UInt32(ln),
                        case .object(let props)? = v["properties"]
                    else {
                        throw ExportFormatError("bad sparseArray")
                    }
                    return .sparseArray(
                        length: length, properties: try props.map { V8Property($0.0, try v8Value($0.1)) })
                default:
                    throw ExportFormatError("bad \(name) value \(j.serialized)")
                }
            }
            return .object(try members.map { V8Property($0.0, try v8Value($0.1)) })
        }
    }

    // MARK: helpers

    public static func hex(_ b: Bytes) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count * 2)
        for c in b {
            out.append(digits[Int(c >> 4)])
            out.append(digits[Int(c & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func unhex(_ s: String) -> Bytes? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        func v(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        var out: Bytes = []
        var i = 0
        while i < u.count {
            guard let hi = v(u[i]), let lo = v(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func base64(_ b: Bytes) -> String { Data(b).base64EncodedString() }

    static func unbase64(_ s: String) -> Bytes? { Data(base64Encoded: s).map { Bytes($0) } }

    /// "YYYY-MM-DDTHH:MM:SS.sssZ" for whole milliseconds in years 0000…9999.
    /// Not for -0 (a Date V8 can hold): the text would import as +0.
    static func isoDate(_ ms: Double) -> String? {
        guard ms.isFinite, ms == ms.rounded(.towardZero), ms >= -62167219200000, ms <= 253402300799999,
            !(ms == 0 && ms.sign == .minus)
        else { return nil }
        let t = Int64(ms)
        let days = Int64((Double(t) / 86_400_000).rounded(.down))
        let rem = t - days * 86_400_000
        // Howard Hinnant's civil_from_days.
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func pad(_ v: Int64, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        return
            "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3_600_000, 2)):\(pad(rem / 60_000 % 60, 2)):\(pad(rem / 1000 % 60, 2)).\(pad(rem % 1000, 3))Z"
    }

    static func parseISODate(_ s: String) -> Double? {
        let u = Array(s.utf8)
        guard u.count == 24, u[4] == 0x2D, u[7] == 0x2D, u[10] == 0x54, u[13] == 0x3A, u[16] == 0x3A,
            u[19] == 0x2E, u[23] == 0x5A
        else { return nil }
        func num(_ a: Int, _ b: Int) -> Int64? { Int64(String(decoding: u[a..<b], as: UTF8.self)) }
        guard let y0 = num(0, 4), let m = num(5, 7), let d = num(8, 10), let hh = num(11, 13), let mi = num(14, 16),
            let ss = num(17, 19), let ms = num(20, 23),
            (1...12).contains(m), (1...31).contains(d), hh < 24, mi < 60, ss < 60
        else { return nil }
        // days_from_civil.
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        let t = days * 86_400_000 + hh * 3_600_000 + mi * 60_000 + ss * 1000 + ms
        guard isoDate(Double(t)) == s else { return nil }
        return Double(t)
    }
}

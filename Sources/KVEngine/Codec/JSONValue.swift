import Foundation

// MARK: - a small order-preserving JSON model

/// JSON with object member order and the text of numbers kept (so `1` and
/// `1.0` stay distinct: V8 writes them differently).
public indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// The number's JSON text.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public subscript(key: String) -> JSONValue? {
        if case .object(let m) = self { return m.first(where: { $0.0 == key })?.1 }
        return nil
    }

    public var serialized: String {
        var out = ""
        write(into: &out)
        return out
    }

    func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n
        case .string(let s): Self.writeString(s, into: &out)
        case .array(let items):
            out += "["
            for (i, v) in items.enumerated() {
                if i > 0 { out += "," }
                v.write(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (k, v)) in members.enumerated() {
                if i > 0 { out += "," }
                Self.writeString(k, into: &out)
                out += ":"
                v.write(into: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x2028 || u.value == 0x2029 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String) throws -> JSONValue {
        var p = Parser(b: Array(text.utf8))
        p.ws()
        let v = try p.value(depth: 0)
        p.ws()
        guard p.i == p.b.count else { throw p.fail("trailing characters") }
        return v
    }

    private struct Parser {
        let b: [UInt8]
        var i = 0

        func fail(_ what: String) -> ParseError { ParseError(description: "invalid JSON at offset \(i): \(what)") }

        mutating func ws() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D { i += 1 }
        }

        mutating func literal(_ s: String, _ v: JSONValue) throws -> JSONValue {
            let l = Array(s.utf8)
            guard b.count - i >= l.count, Array(b[i..<(i + l.count)]) == l else { throw fail("unexpected token") }
            i += l.count
            return v
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 256 else { throw fail("nested too deeply") }
            guard i < b.count else { throw fail("unexpected end") }
            switch b[i] {
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONValue] = []
                ws()
                if i < b.count, b[i] == UInt8(ascii: "]") {
                    i += 1
                    return .array(items)
                }
                while true {
                    ws()
                    items.append(try value(depth: depth + 1))
                    ws()
                    guard i < b.count else { throw fail("unterminated array") }
                    if b[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    if b[i] == UInt8(ascii: "]") {
                        i += 1
                        return .array(items)
                    }
                    throw fail("expected , or ]")
                }
            case UInt8(ascii: "{"):
                i += 1
                var members: [(String, JSONValue)] = []
                ws()
                if i < b.count, b[i] == UInt8(ascii: "}") {
                    i += 1
                    return .object(members)
                }
                while true {
                    ws()
                    guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                    let k = try string()
                    ws()
                    guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected :") }
                    i += 1
                    ws()
                    members.append((k, try value(depth: depth + 1)))
                    ws()
                    guard i < b.count else { throw fail("unterminated object") }
                    if b[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    if b[i] == UInt8(ascii: "}") {
                        i += 1
                        return .object(members)
                    }
                    throw fail("expected , or }")
                }
            default:
                return .number(try number())
            }
        }

        mutating func number() throws -> String {
            let start = i
            func digits() -> Int {
                let s = i
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
                return i - s
            }
            if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
            let intStart = i
            let n = digits()
            guard n > 0, !(n > 1 && b[intStart] == 0x30) else { throw fail("bad number") }
            if i < b.count, b[i] == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { throw fail("bad number") }
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw fail("bad number") }
            }
            return String(decoding: b[start..<i], as: UTF8.self)
        }

        mutating func hex4() throws -> UInt16 {
            guard b.count - i >= 4, let v = UInt16(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                throw fail("bad \\u escape")
            }
            i += 4
            return v
        }

        mutating func string() throws -> String {
            i += 1  // opening quote
            var bytes: [UInt8] = []
            while true {
                guard i < b.count else { throw fail("unterminated string") }
                let c = b[i]
                i += 1
                if c == UInt8(ascii: "\"") { break }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") {
                    bytes.append(c)
                    continue
                }
                guard i < b.count else { throw fail("unterminated string") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(e)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "u"):
                    var scalar = UInt32(try hex4())
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard b.count - i >= 2, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                            throw fail("lone surrogate")
                        }
                        i += 2
                        let lo = UInt32(try hex4())
                        guard (0xDC00...0xDFFF).contains(lo) else { throw fail("lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("lone surrogate")
                    }
                    bytes.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
                default: throw fail("bad escape")
                }
            }
            guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("invalid UTF-8") }
            return s
        }
    }
}

// Keys between the store and the page: raw keys travel as base64url (exact,
// whatever their contents); the page shows the decoded parts with their
// types, and names new keys as a JSON array.

import Foundation
import KVEngine

enum KeyPresentation {
    /// Base64url without padding: the key's identity in URLs and requests.
    static func id(_ key: Bytes) -> String {
        Data(key).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func bytes(fromId s: String) -> Bytes? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t).map(Array.init)
    }

    static func typeName(_ p: KeyPart) -> String {
        switch p {
        case .string: return "string"
        case .number: return "number"
        case .bigint: return "bigint"
        case .bool: return "boolean"
        case .bytes: return "bytes"
        }
    }

    /// One part as `Deno.inspect` shows it inside a key array.
    static func text(_ p: KeyPart) -> String {
        switch p {
        case .string(let s): return InspectFormatter.quote(s)
        case .number(let d): return InspectFormatter.number(d)
        case .bigint(let b): return "\(b)n"
        case .bool(let b): return b ? "true" : "false"
        case .bytes(let b): return InspectFormatter.typedArray(.uint8, b)
        }
    }

    /// The whole key as Deno shows it: `[ "users", 1 ]`.
    static func text(_ parts: [KeyPart]) -> String {
        parts.isEmpty ? "[]" : "[ " + parts.map { text($0) }.joined(separator: ", ") + " ]"
    }

    /// Parts with their types and the prefix each one ends (for breadcrumbs
    /// and links); a key that is not a valid tuple is shown as raw bytes.
    static func json(_ key: Bytes) -> JSONValue {
        guard let parts = KeyCodec.decode(key) else {
            return .object([
                ("id", .string(id(key))),
                ("text", .string("<raw key \(key.map { String(format: "%02x", $0) }.joined())>")),
                ("parts", .array([]))
            ])
        }
        var items: [JSONValue] = []
        for (i, p) in parts.enumerated() {
            items.append(
                .object([
                    ("type", .string(typeName(p))), ("text", .string(text(p))),
                    ("prefix", .string(id(KeyCodec.encode(Array(parts[0...i])))))
                ]))
        }
        return .object([("id", .string(id(key))), ("text", .string(text(parts))), ("parts", .array(items))])
    }

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    /// A key written as a JSON array: strings, numbers, true/false,
    /// `{"bigint": "123"}`, `{"bytes": "<hex>"}`.
    static func parse(_ text: String) throws(ParseError) -> Bytes {
        let j: JSONValue
        do { j = try JSONValue.parse(text) } catch { throw ParseError(description: "key is not valid JSON: \(error)") }
        guard case .array(let items) = j else {
            throw ParseError(description: "key must be a JSON array, e.g. [\"users\", 1]")
        }
        guard !items.isEmpty else { throw ParseError(description: "key must have at least one part") }
        var parts: [KeyPart] = []
        for item in items {
            switch item {
            case .string(let s): parts.append(.string(s))
            case .bool(let b): parts.append(.bool(b))
            case .number(let n):
                guard let d = Double(n) else { throw ParseError(description: "bad number \(n)") }
                parts.append(.number(d))
            case .object(let m) where m.count == 1 && m[0].0 == "bigint":
                guard case .string(let s) = m[0].1, let b = BigIntValue(decimal: s) else {
                    throw ParseError(description: "bigint part must be {\"bigint\": \"<decimal digits>\"}")
                }
                parts.append(.bigint(b))
            case .object(let m) where m.count == 1 && m[0].0 == "bytes":
                guard case .string(let s) = m[0].1, let b = hexBytes(s) else {
                    throw ParseError(description: "bytes part must be {\"bytes\": \"<hex>\"}")
                }
                parts.append(.bytes(b))
            default:
                throw ParseError(
                    description:
                        "unsupported key part \(item.serialized): use a string, number, boolean, {\"bigint\": ...} or {\"bytes\": ...}"
                )
            }
        }
        return KeyCodec.encode(parts)
    }

    static func hexBytes(_ s: String) -> Bytes? {
        let h = Array(s.utf8)
        guard h.count % 2 == 0 else { return nil }
        var out: Bytes = []
        for i in stride(from: 0, to: h.count, by: 2) {
            guard let b = UInt8(String(decoding: h[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        return out
    }
}

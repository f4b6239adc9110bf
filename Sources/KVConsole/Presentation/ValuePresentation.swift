// Stored values for the page (type, Deno-style text, an editable form when
// there is one) and the page's typed editor input back to stored values.

import KVEngine

enum ValuePresentation {
    /// Short type label for listings.
    static func typeName(_ v: KVValue) -> String {
        switch v.encoding {
        case .le64: return "Deno.KvU64"
        case .bytes: return "Uint8Array"
        case .v8:
            guard let g = try? V8Graph.decode(v.data) else { return "V8 (undecodable)" }
            switch g.root {
            case .undefined: return "undefined"
            case .null: return "null"
            case .bool: return "boolean"
            case .number: return "number"
            case .bigint: return "bigint"
            case .string: return "string"
            case .object(let id):
                guard let o = g.objects[safe: id] else { return "object" }
                if case .plain = o { return "object" }
                if case .boxed(let inner) = o {
                    switch inner {
                    case .number: return "Number"
                    case .string: return "String"
                    case .bool: return "Boolean"
                    default: return "BigInt"
                    }
                }
                return InspectFormatter.constructorName(o)
            }
        }
    }

    /// The typed editor the value opens in: (type, text); nil when the value
    /// has no editable form (Map, Date, cycles, ...: replace or delete it).
    static func editor(_ v: KVValue) -> (String, String)? {
        switch v.encoding {
        case .le64: return InspectFormatter.littleEndianU64(v.data).map { ("u64", String($0)) }
        case .bytes: return nil
        case .v8:
            guard let g = try? V8Graph.decode(v.data) else { return nil }
            switch g.root {
            case .string(let s): return ("string", s)
            case .number(let d): return ("number", InspectFormatter.number(d))
            case .bigint(let b): return ("bigint", b.description)
            case .bool(let b): return ("boolean", b ? "true" : "false")
            case .null: return ("json", "null")
            case .undefined: return nil
            case .object:
                var seen: Set<Int> = []
                guard let j = json(g.root, g, &seen) else { return nil }
                return ("json", pretty(j, indent: ""))
            }
        }
    }

    /// The JSON form of plain data (objects, dense arrays, strings, finite
    /// numbers, booleans, null); nil for anything JSON cannot hold exactly.
    private static func json(_ n: V8Node, _ g: V8Graph, _ seen: inout Set<Int>) -> JSONValue? {
        switch n {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .number(let d):
            guard d.isFinite, !(d == 0 && d.sign == .minus) else { return nil }
            return .number(InspectFormatter.jsNumber(d))
        case .undefined, .bigint: return nil
        case .object(let id):
            guard !seen.contains(id) else { return nil }  // shared or circular
            seen.insert(id)
            switch g.objects[safe: id] {
            case .plain(let props)?:
                var out: [(String, JSONValue)] = []
                for p in props {
                    guard let v = json(p.value, g, &seen) else { return nil }
                    out.append((p.key, v))
                }
                return .object(out)
            case .array(let length, let elements, let extra)? where extra.isEmpty && elements.count == length:
                var out: [JSONValue] = []
                for i in 0..<length {
                    guard let e = elements[i], let v = json(e, g, &seen) else { return nil }
                    out.append(v)
                }
                return .array(out)
            default: return nil
            }
        }
    }

    static func pretty(_ j: JSONValue, indent: String) -> String {
        let inner = indent + "  "
        switch j {
        case .array(let items) where !items.isEmpty:
            return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let m) where !m.isEmpty:
            return "{\n"
                + m.map { inner + JSONValue.string($0.0).serialized + ": " + pretty($0.1, indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        default:
            return j.serialized
        }
    }

    struct InputError: Error, CustomStringConvertible {
        var description: String
    }

    /// A value from the typed editor.
    static func value(type: String, text: String) throws(InputError) -> KVValue {
        func v8(_ v: V8Value) throws(InputError) -> KVValue {
            do { return KVValue(data: try v.encode(), encoding: .v8) } catch {
                throw InputError(description: "\(error)")
            }
        }
        switch type {
        case "string": return try v8(.string(text))
        case "number":
            let t = text.trimmingCharacters(in: .whitespaces)
            guard let d = Double(t) ?? ["NaN": Double.nan, "Infinity": .infinity, "-Infinity": -.infinity][t] else {
                throw InputError(description: "not a number: '\(text)'")
            }
            return try v8(number(d))
        case "bigint":
            guard let b = BigIntValue(decimal: text.trimmingCharacters(in: .whitespaces)) else {
                throw InputError(description: "not a bigint (decimal digits, optional '-'): '\(text)'")
            }
            return try v8(.bigint(b))
        case "boolean":
            switch text.trimmingCharacters(in: .whitespaces) {
            case "true": return try v8(.bool(true))
            case "false": return try v8(.bool(false))
            default: throw InputError(description: "boolean must be true or false")
            }
        case "u64":
            guard let u = UInt64(text.trimmingCharacters(in: .whitespaces)) else {
                throw InputError(description: "Deno.KvU64 must be an integer from 0 to 18446744073709551615")
            }
            return KVValue(data: (0..<8).map { UInt8(truncatingIfNeeded: u >> (8 * UInt64($0))) }, encoding: .le64)
        case "json":
            let j: JSONValue
            do { j = try JSONValue.parse(text) } catch { throw InputError(description: "\(error)") }
            return try v8(try v8Value(j))
        default:
            throw InputError(
                description: "unknown value type '\(type)': expected string, number, bigint, boolean, u64 or json")
        }
    }

    /// Small integers as V8 writes them (a Smi), other numbers as doubles.
    static func number(_ d: Double) -> V8Value {
        if d == d.rounded(.towardZero), abs(d) < 1_073_741_824, !(d == 0 && d.sign == .minus) {
            return .int32(Int32(d))
        }
        return .double(d)
    }

    static func v8Value(_ j: JSONValue) throws(InputError) -> V8Value {
        switch j {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .number(let n):
            guard let d = Double(n) else { throw InputError(description: "bad number \(n)") }
            return number(d)
        case .array(let items):
            var out: [V8Value] = []
            for i in items { out.append(try v8Value(i)) }
            return .array(out)
        case .object(let m):
            var props: [V8Property] = []
            for (k, v) in m { props.append(V8Property(k, try v8Value(v))) }
            return .object(props)
        }
    }
}

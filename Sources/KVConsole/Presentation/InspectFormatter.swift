// Renders a decoded value the way `Deno.inspect(value, { compact: true,
// breakLength: Infinity })` does: Deno's own one-line form, which equals the
// default `Deno.inspect` output for every value that fits on one line.
// Depth 4 and 100 items per list, as Deno's defaults.

import KVEngine

enum InspectFormatter {
    static let maxDepth = 4
    static let maxItems = 100

    /// A stored value as Deno would show it.
    static func inspect(_ value: KVValue) -> String {
        switch value.encoding {
        case .le64:
            return "[Deno.KvU64: \(littleEndianU64(value.data).map(String.init) ?? "?")n]"
        case .bytes:
            return typedArray(.uint8, value.data)
        case .v8:
            do {
                let g = try V8Graph.decode(value.data)
                var f = Walk(graph: g)
                return f.format(g.root, depth: 0)
            } catch {
                return "[undecodable V8 value: \(error)]"
            }
        }
    }

    static func littleEndianU64(_ b: Bytes) -> UInt64? {
        guard b.count == 8 else { return nil }
        return b.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    private struct Walk {
        let graph: V8Graph
        var seen: [Int] = []
        var circular: [Int: Int] = [:]

        mutating func format(_ node: V8Node, depth: Int) -> String {
            switch node {
            case .undefined: return "undefined"
            case .null: return "null"
            case .bool(let b): return b ? "true" : "false"
            case .number(let d): return InspectFormatter.number(d)
            case .bigint(let b): return "\(b)n"
            case .string(let s): return InspectFormatter.quote(s)
            case .object(let id): return object(id, depth: depth)
            }
        }

        mutating func object(_ id: Int, depth: Int) -> String {
            if seen.contains(id) {
                let n = circular[id] ?? (circular.count + 1)
                circular[id] = n
                return "[Circular *\(n)]"
            }
            guard let obj = graph.objects[safe: id] else { return "[?]" }
            // Values Deno prints without looking inside (and empty containers) ignore the depth limit.
            switch obj {
            case .date(let ms): return InspectFormatter.isoDate(ms)
            case .regexp(let source, let flags): return "/\(source)/\(flags)"
            case .boxed(let inner):
                let kind: String
                switch inner {
                case .number: kind = "Number"
                case .string: kind = "String"
                case .bool: kind = "Boolean"
                default: kind = "BigInt"
                }
                return "[\(kind): \(format(inner, depth: depth))]"
            case .error(let name, let message, let stack, _):
                // Deno prints the stack when there is one, else `[TypeError: message]`.
                if let stack { return stack }
                return "[" + (message.map { "\(name): \($0)" } ?? name) + "]"
            case .plain(let p) where p.isEmpty: return "{}"
            case .array(0, _, let extra) where extra.isEmpty: return "[]"
            case .pending: return "[?]"
            default: break
            }
            if depth > InspectFormatter.maxDepth {
                return "[\(InspectFormatter.constructorName(obj))]"
            }
            seen.append(id)
            var body: String
            switch obj {
            case .plain(let props):
                body = braces(
                    "{", props.map { "\(InspectFormatter.key($0.key)): \(format($0.value, depth: depth + 1))" }, "}")
            case .array(let length, let elements, let extra):
                var out = arrayItems(length: length, elements: elements, depth: depth)
                out += extra.map { "\(InspectFormatter.key($0.key)): \(format($0.value, depth: depth + 1))" }
                body = braces("[", out, "]")
            case .map(let pairs):
                var out: [String] = []
                for p in pairs.prefix(InspectFormatter.maxItems) {
                    out.append("\(format(p.key, depth: depth + 1)) => \(format(p.value, depth: depth + 1))")
                }
                if pairs.count > InspectFormatter.maxItems {
                    out.append(InspectFormatter.more(pairs.count - InspectFormatter.maxItems))
                }
                body = braces("Map(\(pairs.count)) {", out, "}")
            case .set(let items):
                var out = items.prefix(InspectFormatter.maxItems).map { format($0, depth: depth + 1) }
                if items.count > InspectFormatter.maxItems {
                    out.append(InspectFormatter.more(items.count - InspectFormatter.maxItems))
                }
                body = braces("Set(\(items.count)) {", out, "}")
            case .arrayBuffer(let b):
                body = InspectFormatter.arrayBuffer(b)
            case .view(let kind, let buffer, let offset, let length):
                let bytes = graph.viewBytes(buffer: buffer, offset: offset, length: length)
                if kind == .dataView {
                    body =
                        "DataView { byteLength: \(length), byteOffset: \(offset), buffer: \(InspectFormatter.arrayBuffer(fullBuffer(buffer))) }"
                } else {
                    body = InspectFormatter.typedArray(kind, bytes)
                }
            default:
                body = "[?]"
            }
            seen.removeLast()
            if let n = circular[id] { body = "<ref *\(n)> " + body }
            return body
        }

        func fullBuffer(_ id: Int) -> Bytes {
            if case .arrayBuffer(let b)? = graph.objects[safe: id] { return b }
            return []
        }

        mutating func arrayItems(length: Int, elements: [Int: V8Node], depth: Int) -> [String] {
            var out: [String] = []
            var i = 0
            while i < length && out.count < InspectFormatter.maxItems {
                if let v = elements[i] {
                    out.append(format(v, depth: depth + 1))
                    i += 1
                } else {
                    // A run of holes is one entry: `<3 empty items>`.
                    let next = elements.keys.filter { $0 > i }.min() ?? length
                    let n = next - i
                    out.append("<\(n) empty item\(n == 1 ? "" : "s")>")
                    i = next
                }
            }
            if i < length { out.append(InspectFormatter.more(length - i)) }
            return out
        }

        func braces(_ open: String, _ items: [String], _ close: String) -> String {
            items.isEmpty ? "\(open)\(close)" : "\(open) \(items.joined(separator: ", ")) \(close)"
        }
    }

    static func more(_ n: Int) -> String { "... \(n) more item\(n == 1 ? "" : "s")" }

    static func constructorName(_ o: V8Object) -> String {
        switch o {
        case .plain: return "Object"
        case .array: return "Array"
        case .map: return "Map"
        case .set: return "Set"
        case .arrayBuffer: return "ArrayBuffer"
        case .view(let kind, _, _, _): return kind.rawValue
        case .date: return "Date"
        case .regexp: return "RegExp"
        case .error(let name, _, _, _): return name
        case .boxed: return "Object"
        case .pending: return "Object"
        }
    }

    static func arrayBuffer(_ b: Bytes) -> String {
        let shown = b.prefix(50).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
        let rest = b.count > 50 ? " ... \(b.count - 50) more byte\(b.count - 50 == 1 ? "" : "s")" : ""
        return "ArrayBuffer { [Uint8Contents]: <\(shown)\(rest)>, byteLength: \(b.count) }"
    }

    static func typedArray(_ kind: V8ViewKind, _ bytes: Bytes) -> String {
        let size = kind.elementSize
        let count = bytes.count / size
        var items: [String] = []
        for k in 0..<min(count, maxItems) {
            let chunk = Array(bytes[(k * size)..<((k + 1) * size)])
            var u: UInt64 = 0
            for (j, b) in chunk.enumerated() { u |= UInt64(b) << (8 * UInt64(j)) }
            switch kind {
            case .int8: items.append(String(Int8(truncatingIfNeeded: u)))
            case .uint8, .uint8Clamped, .dataView: items.append(String(UInt8(truncatingIfNeeded: u)))
            case .int16: items.append(String(Int16(truncatingIfNeeded: u)))
            case .uint16: items.append(String(UInt16(truncatingIfNeeded: u)))
            case .int32: items.append(String(Int32(truncatingIfNeeded: u)))
            case .uint32: items.append(String(UInt32(truncatingIfNeeded: u)))
            case .float16: items.append(number(Double(Float16Bits.toFloat(UInt16(truncatingIfNeeded: u)))))
            case .float32: items.append(number(Double(Float(bitPattern: UInt32(truncatingIfNeeded: u)))))
            case .float64: items.append(number(Double(bitPattern: u)))
            case .bigInt64: items.append("\(Int64(bitPattern: u))n")
            case .bigUint64: items.append("\(u)n")
            }
        }
        if count > maxItems { items.append(more(count - maxItems)) }
        let head = "\(kind.rawValue)(\(count)) ["
        return items.isEmpty ? head + "]" : head + " " + items.joined(separator: ", ") + " ]"
    }

    // MARK: primitives

    /// `Deno.inspect` of a number: JS `Number.prototype.toString`, but `-0` for negative zero.
    static func number(_ d: Double) -> String {
        if d == 0 && d.sign == .minus { return "-0" }
        return jsNumber(d)
    }

    /// JS `Number.prototype.toString()` (ECMA-262 Number::toString, radix 10)
    /// from the shortest round-trip digits.
    static func jsNumber(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        if d == 0 { return "0" }
        let sign = d < 0 ? "-" : ""
        // Swift's description is also shortest round-trip: take its digits and exponent.
        var text = "\(abs(d))"
        var exp = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exp = Int(text[text.index(after: e)...]) ?? 0
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let intPart = String(parts[0]), fracPart = parts.count > 1 ? String(parts[1]) : ""
        var digits = intPart + fracPart
        var n = intPart.count + exp  // decimal point position
        while digits.hasPrefix("0") && digits.count > 1 {
            digits.removeFirst()
            n -= 1
        }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let k = digits.count
        if k <= n && n <= 21 { return sign + digits + String(repeating: "0", count: n - k) }
        if 0 < n && n <= 21 {
            let idx = digits.index(digits.startIndex, offsetBy: n)
            return sign + digits[..<idx] + "." + digits[idx...]
        }
        if -6 < n && n <= 0 { return sign + "0." + String(repeating: "0", count: -n) + digits }
        let e = n - 1
        let mant = k == 1 ? digits : String(digits.first!) + "." + digits.dropFirst()
        return sign + mant + "e" + (e < 0 ? "-" : "+") + String(abs(e))
    }

    /// Deno's quoting: the first of " ' ` the string lacks, escapes for
    /// that quote, backslash and control characters.
    static func quote(_ s: String) -> String {
        let q: Character = ["\"", "'", "`"].first { !s.contains($0) } ?? "\""
        let qs = q.unicodeScalars.first!
        var out = String(q)
        for u in s.unicodeScalars {
            switch u {
            case "\\": out += "\\\\"
            case qs: out += "\\" + String(q)
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{0B}": out += "\\v"
            case _ where u.value < 0x20 || (u.value >= 0x7F && u.value <= 0x9F):
                out += "\\x" + (u.value < 16 ? "0" : "") + String(u.value, radix: 16)
            default: out.unicodeScalars.append(u)
            }
        }
        out.append(q)
        return out
    }

    /// Identifier-like keys bare, others quoted.
    static func key(_ k: String) -> String {
        let bytes = Array(k.utf8)
        func letter(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F }
        if let f = bytes.first, letter(f), bytes.allSatisfy({ letter($0) || ($0 >= 0x30 && $0 <= 0x39) }) { return k }
        return quote(k)
    }

    /// `Date.prototype.toISOString`, or "Invalid Date".
    static func isoDate(_ ms: Double) -> String {
        guard ms.isFinite, abs(ms) <= 8.64e15 else { return "Invalid Date" }
        let t = Int64(ms)
        var days = t / 86_400_000, rem = t % 86_400_000
        if rem < 0 {
            rem += 86_400_000
            days -= 1
        }
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func pad(_ v: Int64, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        let year = (0...9999).contains(y) ? pad(y, 4) : (y < 0 ? "-" : "+") + pad(abs(y), 6)
        return
            "\(year)-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3_600_000, 2)):\(pad(rem / 60_000 % 60, 2)):\(pad(rem / 1000 % 60, 2)).\(pad(rem % 1000, 3))Z"
    }
}

/// IEEE half precision → Float (Float16 itself is not available on every platform).
enum Float16Bits {
    static func toFloat(_ h: UInt16) -> Float {
        let sign: Float = h & 0x8000 != 0 ? -1 : 1
        let exp = Int((h >> 10) & 0x1F), frac = Float(h & 0x3FF)
        if exp == 0 { return sign * frac * Float(pow2: -24) }
        if exp == 31 { return frac == 0 ? sign * .infinity : .nan }
        return sign * (1 + frac / 1024) * Float(pow2: exp - 15)
    }
}

extension Float {
    init(pow2 e: Int) { self = Float(sign: .plus, exponent: e, significand: 1) }
}

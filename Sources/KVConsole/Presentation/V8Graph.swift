// A full reader of the V8 ValueSerializer format, for display only: every
// type Deno can store (Map, Set, RegExp, typed arrays, boxed primitives,
// errors, shared and circular references), not just the plain-data subset
// KVEngine's `V8Value` round-trips. Objects are kept in a table by their
// serializer id so back-references (cycles) resolve to the same node.

import KVEngine

/// A value inside a decoded graph: a primitive, or a reference into `V8Graph.objects`.
enum V8Node: Equatable {
    case undefined
    case null
    case bool(Bool)
    case number(Double)
    case bigint(BigIntValue)
    case string(String)
    case object(Int)

    static func == (a: V8Node, b: V8Node) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x.bitPattern == y.bitPattern
        case let (.bigint(x), .bigint(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.object(x), .object(y)): return x == y
        default: return false
        }
    }
}

/// Typed array and DataView kinds, by the serializer's sub-tag.
enum V8ViewKind: String {
    case int8 = "Int8Array", uint8 = "Uint8Array", uint8Clamped = "Uint8ClampedArray"
    case int16 = "Int16Array", uint16 = "Uint16Array", int32 = "Int32Array", uint32 = "Uint32Array"
    case float16 = "Float16Array", float32 = "Float32Array", float64 = "Float64Array"
    case bigInt64 = "BigInt64Array", bigUint64 = "BigUint64Array", dataView = "DataView"

    init?(subtag: UInt8) {
        switch subtag {
        case 0x62: self = .int8  // 'b'
        case 0x42: self = .uint8  // 'B'
        case 0x43: self = .uint8Clamped  // 'C'
        case 0x77: self = .int16  // 'w'
        case 0x57: self = .uint16  // 'W'
        case 0x64: self = .int32  // 'd'
        case 0x44: self = .uint32  // 'D'
        case 0x68: self = .float16  // 'h'
        case 0x66: self = .float32  // 'f'
        case 0x46: self = .float64  // 'F'
        case 0x71: self = .bigInt64  // 'q'
        case 0x51: self = .bigUint64  // 'Q'
        case 0x3F: self = .dataView  // '?'
        default: return nil
        }
    }

    var elementSize: Int {
        switch self {
        case .int8, .uint8, .uint8Clamped, .dataView: return 1
        case .int16, .uint16, .float16: return 2
        case .int32, .uint32, .float32: return 4
        case .float64, .bigInt64, .bigUint64: return 8
        }
    }
}

/// An object of the graph (anything V8 gives an identity to).
enum V8Object {
    /// Own enumerable properties in V8's order (integer keys first).
    case plain([(key: String, value: V8Node)])
    /// `elements`: index → value (missing = hole); `extra`: non-index properties.
    case array(length: Int, elements: [Int: V8Node], extra: [(key: String, value: V8Node)])
    case date(Double)
    case regexp(source: String, flags: String)
    case map([(key: V8Node, value: V8Node)])
    case set([V8Node])
    case arrayBuffer(Bytes)
    case view(kind: V8ViewKind, buffer: Int, offset: Int, length: Int)
    /// `new Number(1)`, `new String("x")`, `Object(1n)`, `new Boolean(true)`.
    case boxed(V8Node)
    case error(name: String, message: String?, stack: String?, cause: V8Node?)
    /// Reserved while its contents are read (a cycle may point at it meanwhile).
    case pending
}

struct V8Graph {
    var root: V8Node
    var objects: [V8Object]

    struct DecodeError: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes a whole serialized value (header `FF <version>`).
    static func decode(_ bytes: Bytes) throws(DecodeError) -> V8Graph {
        var r = Reader(bytes: bytes)
        guard r.byte() == 0xFF else { throw DecodeError(description: "no V8 header") }
        guard let version = r.varint(), version >= 13 else {
            throw DecodeError(description: "unsupported V8 format version")
        }
        r.version = version
        let root = try r.value(depth: 0)
        while r.peek() == 0 { r.i += 1 }
        guard r.i == bytes.count else { throw DecodeError(description: "trailing bytes at offset \(r.i)") }
        return V8Graph(root: root, objects: r.objects)
    }

    /// The bytes a view shows.
    func viewBytes(buffer: Int, offset: Int, length: Int) -> Bytes {
        guard case .arrayBuffer(let b)? = objects[safe: buffer], offset >= 0, length >= 0,
            offset + length <= b.count
        else { return [] }
        return Array(b[offset..<(offset + length)])
    }

    private struct Reader {
        let bytes: Bytes
        var i = 0
        var version: UInt64 = 15
        var objects: [V8Object] = []

        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

        mutating func byte() -> UInt8? {
            guard i < bytes.count else { return nil }
            defer { i += 1 }
            return bytes[i]
        }

        mutating func varint() -> UInt64? {
            var result: UInt64 = 0, shift: UInt64 = 0
            while let b = byte() {
                if shift < 64 { result |= UInt64(b & 0x7F) << shift }
                if b & 0x80 == 0 { return result }
                shift += 7
                if shift > 70 { return nil }
            }
            return nil
        }

        mutating func length() throws(DecodeError) -> Int {
            guard let v = varint(), v <= UInt64(UInt32.max) else { throw fail("bad length") }
            return Int(v)
        }

        mutating func take(_ n: Int) throws(DecodeError) -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.count - i else { throw fail("truncated") }
            defer { i += n }
            return bytes[i..<(i + n)]
        }

        mutating func double() throws(DecodeError) -> Double {
            let s = try take(8)
            var bits: UInt64 = 0
            for (k, b) in s.enumerated() { bits |= UInt64(b) << (8 * UInt64(k)) }
            return Double(bitPattern: bits)
        }

        func fail(_ what: String) -> DecodeError { DecodeError(description: "\(what) at offset \(i)") }

        mutating func reserve() -> Int {
            objects.append(.pending)
            return objects.count - 1
        }

        mutating func string() throws(DecodeError) -> String {
            let v = try value(depth: 0)
            guard case .string(let s) = v else { throw fail("expected a string") }
            return s
        }

        mutating func bigint() throws(DecodeError) -> BigIntValue {
            guard let bits = varint() else { throw fail("bad bigint") }
            let n = Int(bits >> 1)
            let s = try take(n)
            var words = [UInt64](repeating: 0, count: (n + 7) / 8)
            for (k, b) in s.enumerated() { words[k / 8] |= UInt64(b) << (8 * UInt64(k % 8)) }
            return BigIntValue(negative: bits & 1 == 1, magnitude: words)
        }

        mutating func value(depth: Int) throws(DecodeError) -> V8Node {
            guard depth < 256 else { throw fail("nested too deeply") }
            var tag: UInt8
            repeat {
                guard let t = byte() else { throw fail("truncated") }
                tag = t
            } while tag == 0x00
            switch tag {
            case 0x5F: return .undefined  // '_'
            case 0x30: return .null  // '0'
            case 0x54: return .bool(true)  // 'T'
            case 0x46: return .bool(false)  // 'F'
            case 0x49:  // 'I' zigzag int32
                guard let raw = varint(), raw <= UInt64(UInt32.max) else { throw fail("bad int32") }
                let u = UInt32(raw)
                return .number(Double(Int32(bitPattern: (u >> 1) ^ (0 &- (u & 1)))))
            case 0x55:  // 'U'
                guard let raw = varint(), raw <= UInt64(UInt32.max) else { throw fail("bad uint32") }
                return .number(Double(raw))
            case 0x4E: return .number(try double())  // 'N'
            case 0x5A: return .bigint(try bigint())  // 'Z'
            case 0x22:  // '"' Latin-1
                let s = try take(try length())
                return .string(String(s.map { Character(Unicode.Scalar($0)) }))
            case 0x63:  // 'c' UTF-16LE
                let n = try length()
                guard n % 2 == 0 else { throw fail("odd two-byte string") }
                let s = try take(n)
                var units: [UInt16] = []
                units.reserveCapacity(n / 2)
                var it = s.makeIterator()
                while let lo = it.next(), let hi = it.next() { units.append(UInt16(lo) | UInt16(hi) << 8) }
                // Lone surrogates become U+FFFD (display only).
                return .string(String(decoding: units, as: UTF16.self))
            case 0x53:  // 'S' UTF-8
                let s = try take(try length())
                return .string(String(decoding: s, as: UTF8.self))
            case 0x5E:  // '^' back-reference
                let id = try length()
                guard id < objects.count else { throw fail("reference to unknown object \(id)") }
                return .object(id)
            case 0x6F:  // 'o' object
                let id = reserve()
                let props = try properties(end: 0x7B, depth: depth)
                _ = try length()
                objects[id] = .plain(props)
                return .object(id)
            case 0x41:  // 'A' dense array
                let id = reserve()
                let n = try length()
                guard n <= bytes.count - i else { throw fail("array longer than its data") }
                var elements: [Int: V8Node] = [:]
                for k in 0..<n {
                    if peek() == 0x2D {
                        i += 1
                        continue
                    }  // '-' hole
                    elements[k] = try value(depth: depth + 1)
                }
                var extra: [(key: String, value: V8Node)] = []
                for p in try properties(end: 0x24, depth: depth) {
                    if let idx = Int(p.key), idx >= 0, idx < n, String(idx) == p.key {
                        elements[idx] = p.value
                    } else {
                        extra.append(p)
                    }
                }
                _ = try length()
                _ = try length()
                objects[id] = .array(length: n, elements: elements, extra: extra)
                return .object(id)
            case 0x61:  // 'a' sparse array
                let id = reserve()
                let n = try length()
                var elements: [Int: V8Node] = [:]
                var extra: [(key: String, value: V8Node)] = []
                for p in try properties(end: 0x40, depth: depth) {
                    if let idx = Int(p.key), idx >= 0, idx < n, String(idx) == p.key {
                        elements[idx] = p.value
                    } else {
                        extra.append(p)
                    }
                }
                _ = try length()
                _ = try length()
                objects[id] = .array(length: n, elements: elements, extra: extra)
                return .object(id)
            case 0x44:  // 'D' Date
                let id = reserve()
                objects[id] = .date(try double())
                return .object(id)
            case 0x79, 0x78:  // 'y' / 'x' Boolean objects
                let id = reserve()
                objects[id] = .boxed(.bool(tag == 0x79))
                return .object(id)
            case 0x6E:  // 'n' Number object
                let id = reserve()
                objects[id] = .boxed(.number(try double()))
                return .object(id)
            case 0x7A:  // 'z' BigInt object
                let id = reserve()
                objects[id] = .boxed(.bigint(try bigint()))
                return .object(id)
            case 0x73:  // 's' String object
                let id = reserve()
                objects[id] = .boxed(.string(try string()))
                return .object(id)
            case 0x52:  // 'R' RegExp
                let id = reserve()
                let source = try string()
                guard let bits = varint() else { throw fail("bad regexp flags") }
                // V8's JSRegExp::Flags bit order.
                let names: [(UInt64, Character)] = [
                    (1 << 7, "d"), (1 << 0, "g"), (1 << 1, "i"), (1 << 2, "m"),
                    (1 << 5, "s"), (1 << 4, "u"), (1 << 8, "v"), (1 << 3, "y")
                ]
                objects[id] = .regexp(source: source, flags: String(names.filter { bits & $0.0 != 0 }.map(\.1)))
                return .object(id)
            case 0x3B:  // ';' Map
                let id = reserve()
                var pairs: [(key: V8Node, value: V8Node)] = []
                while true {
                    while peek() == 0 { i += 1 }
                    if peek() == 0x3A {
                        i += 1
                        break
                    }  // ':'
                    let k = try value(depth: depth + 1)
                    let v = try value(depth: depth + 1)
                    pairs.append((k, v))
                }
                _ = try length()
                objects[id] = .map(pairs)
                return .object(id)
            case 0x27:  // '\'' Set
                let id = reserve()
                var items: [V8Node] = []
                while true {
                    while peek() == 0 { i += 1 }
                    if peek() == 0x2C {
                        i += 1
                        break
                    }  // ','
                    items.append(try value(depth: depth + 1))
                }
                _ = try length()
                objects[id] = .set(items)
                return .object(id)
            case 0x42, 0x7E:  // 'B' ArrayBuffer, '~' resizable
                let id = reserve()
                let n = try length()
                if tag == 0x7E { _ = try length() }
                objects[id] = .arrayBuffer(Bytes(try take(n)))
                // A view consumes the buffer before it.
                if peek() == 0x56 {  // 'V'
                    i += 1
                    return try view(buffer: id)
                }
                return .object(id)
            case 0x72:  // 'r' Error
                let id = reserve()
                objects[id] = try error(depth: depth)
                return .object(id)
            default:
                throw fail("unsupported V8 tag 0x\(String(tag, radix: 16))")
            }
        }

        mutating func view(buffer: Int) throws(DecodeError) -> V8Node {
            guard let sub = byte(), let kind = V8ViewKind(subtag: sub) else { throw fail("unknown array buffer view") }
            let offset = try length(), len = try length()
            if version >= 14 { _ = varint() }  // flags
            let id = reserve()
            objects[id] = .view(kind: kind, buffer: buffer, offset: offset, length: len)
            return .object(id)
        }

        mutating func error(depth: Int) throws(DecodeError) -> V8Object {
            var name = "Error", message: String?, stack: String?, cause: V8Node?
            while true {
                guard let t = byte() else { throw fail("truncated error") }
                switch t {
                case 0x45: name = "EvalError"  // 'E'
                case 0x52: name = "RangeError"  // 'R'
                case 0x46: name = "ReferenceError"  // 'F'
                case 0x53: name = "SyntaxError"  // 'S'
                case 0x54: name = "TypeError"  // 'T'
                case 0x55: name = "URIError"  // 'U'
                case 0x6D: message = try string()  // 'm'
                case 0x73: stack = try string()  // 's'
                case 0x63: cause = try value(depth: depth + 1)  // 'c'
                case 0x2E:  // '.'
                    return .error(name: name, message: message, stack: stack, cause: cause)
                default: throw fail("unknown error field")
                }
            }
        }

        /// Key/value pairs up to the end tag (consumed).
        mutating func properties(end: UInt8, depth: Int) throws(DecodeError) -> [(key: String, value: V8Node)] {
            var props: [(key: String, value: V8Node)] = []
            while true {
                while peek() == 0 { i += 1 }
                guard let t = peek() else { throw fail("truncated object") }
                if t == end {
                    i += 1
                    return props
                }
                let k = try value(depth: depth + 1)
                let v = try value(depth: depth + 1)
                switch k {
                case .string(let s): props.append((s, v))
                case .number(let d): props.append((InspectFormatter.jsNumber(d), v))
                default: throw fail("bad property key")
                }
            }
        }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { i >= 0 && i < count ? self[i] : nil }
}

// Statement parameters, all in binary format (bytea and int8 travel as raw
// bytes, no escaping or parsing).

import CLibPQ
import Foundation
import KVEngine

/// A statement parameter. Everything is sent in binary format.
enum PGParam: Sendable {
    case null
    case bytea(Bytes)
    case int8(Int64)
    case int2(Int16)
    case text(String)
    case byteaArray([Bytes])
    case int8Array([Int64?])
    case int2Array([Int16])
    case textArray([String])

    /// Type OIDs (pg_type): used when the statement is prepared.
    var oid: Oid {
        switch self {
        case .null: return 0
        case .bytea: return 17
        case .int8: return 20
        case .int2: return 21
        case .text: return 25
        case .byteaArray: return 1001
        case .int8Array: return 1016
        case .int2Array: return 1005
        case .textArray: return 1009
        }
    }

    /// Binary wire encoding; nil for SQL NULL.
    var encoded: Bytes? {
        switch self {
        case .null: return nil
        case .bytea(let b): return b
        case .int8(let v): return PGBinary.be(UInt64(bitPattern: v), 8)
        case .int2(let v): return PGBinary.be(UInt64(UInt16(bitPattern: v)), 2)
        case .text(let s): return Array(s.utf8)
        case .byteaArray(let a): return PGBinary.array(elementOid: 17, a.map { Optional($0) })
        case .int8Array(let a):
            return PGBinary.array(elementOid: 20, a.map { $0.map { PGBinary.be(UInt64(bitPattern: $0), 8) } })
        case .int2Array(let a):
            return PGBinary.array(elementOid: 21, a.map { PGBinary.be(UInt64(UInt16(bitPattern: $0)), 2) })
        case .textArray(let a): return PGBinary.array(elementOid: 25, a.map { Array($0.utf8) })
        }
    }
}

enum PGBinary {
    static func be(_ v: UInt64, _ n: Int) -> Bytes {
        (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64(n - 1 - $0))) }
    }

    /// One-dimensional array in PostgreSQL's binary array format.
    static func array(elementOid: Oid, _ elements: [Bytes?]) -> Bytes {
        var out = Bytes()
        out.reserveCapacity(20 + elements.reduce(0) { $0 + 4 + ($1?.count ?? 0) })
        let hasNull = elements.contains { $0 == nil }
        out += be(elements.isEmpty ? 0 : 1, 4)
        out += be(hasNull ? 1 : 0, 4)
        out += be(UInt64(elementOid), 4)
        if !elements.isEmpty {
            out += be(UInt64(elements.count), 4)
            out += be(1, 4)  // lower bound
        }
        for e in elements {
            if let e {
                out += be(UInt64(e.count), 4)
                out += e
            } else {
                out += be(UInt64(UInt32.max), 4)  // -1: NULL
            }
        }
        return out
    }
}

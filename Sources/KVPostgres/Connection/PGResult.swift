import CLibPQ
import Foundation
import KVEngine

/// The rows of one statement (binary format). Owns the libpq result.
final class PGResult {
    private let res: OpaquePointer

    init(_ res: OpaquePointer) { self.res = res }
    deinit { PQclear(res) }

    var rowCount: Int { Int(PQntuples(res)) }

    func isNull(_ row: Int, _ col: Int) -> Bool { PQgetisnull(res, Int32(row), Int32(col)) == 1 }

    func bytes(_ row: Int, _ col: Int) -> Bytes {
        let n = Int(PQgetlength(res, Int32(row), Int32(col)))
        guard n > 0, let p = PQgetvalue(res, Int32(row), Int32(col)) else { return [] }
        return p.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    }

    /// int2, int4 or int8 column (by its binary length).
    func int64(_ row: Int, _ col: Int) -> Int64 {
        let b = bytes(row, col)
        var v: UInt64 = 0
        for x in b { v = (v << 8) | UInt64(x) }
        switch b.count {
        case 2: return Int64(Int16(truncatingIfNeeded: v))
        case 4: return Int64(Int32(truncatingIfNeeded: v))
        default: return Int64(bitPattern: v)
        }
    }

    func optionalInt64(_ row: Int, _ col: Int) -> Int64? { isNull(row, col) ? nil : int64(row, col) }

    func text(_ row: Int, _ col: Int) -> String { String(decoding: bytes(row, col), as: UTF8.self) }

    func bool(_ row: Int, _ col: Int) -> Bool { bytes(row, col).first == 1 }
}

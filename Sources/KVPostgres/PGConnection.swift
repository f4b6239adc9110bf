// One libpq connection: parameterised statements in binary format (bytea and
// int8 travel as raw bytes, no escaping or parsing), prepared once per
// connection, and pipelines (many statements, one round trip). Errors are
// classified by SQLSTATE so callers know whether to retry the transaction,
// reconnect, or give up.

import CLibPQ
import Foundation
import KVEngine

/// A failed libpq call, classified for the retry logic.
struct PGError: Error, CustomStringConvertible, Sendable {
    enum Kind: Sendable, Equatable {
        /// Serialization failure or deadlock (40001, 40P01): run the transaction again.
        case retry
        /// The connection is gone (or the server is shutting down): reconnect.
        case connectionLost
        /// Anything else (a bug, a constraint, a permission): do not retry.
        case other
    }

    var kind: Kind
    var sqlstate: String?
    var message: String
    /// Index of the failing statement within a pipeline.
    var failedAt: Int?
    /// Attached by a caller for its own recovery (the writer: what to answer
    /// if a COMMIT lost in flight took effect).
    var context: (any Sendable)? = nil

    var description: String {
        "PostgreSQL error\(sqlstate.map { " \($0)" } ?? ""): \(message)"
    }

    static func classify(sqlstate: String?, connectionBad: Bool) -> Kind {
        if connectionBad { return .connectionLost }
        guard let s = sqlstate else { return .other }
        if s == "40001" || s == "40P01" { return .retry }
        // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot connect now.
        if s.hasPrefix("08") || s == "57P01" || s == "57P02" || s == "57P03" { return .connectionLost }
        return .other
    }

    var asKVError: KVError {
        switch kind {
        case .retry, .connectionLost: return .unavailable("PostgreSQL unavailable: \(message)")
        case .other:
            // 53xxx: insufficient resources (disk full, out of memory, too many connections).
            if sqlstate?.hasPrefix("53") == true { return .unavailable("PostgreSQL: \(message)") }
            return .internalError("PostgreSQL: \(message)")
        }
    }
}

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

/// One statement of a pipeline.
struct PGQuery {
    var sql: String
    var params: [PGParam]
    init(_ sql: String, _ params: [PGParam] = []) {
        self.sql = sql
        self.params = params
    }
}

/// Not thread-safe: one thread uses a connection at a time (it may be handed
/// from one thread to another, hence Sendable).
final class PGConnection: @unchecked Sendable {
    private var conn: OpaquePointer?
    private var prepared: [String: String] = [:]

    /// Connects; `conninfo` is a URI or key=value string. Defaults (connect
    /// timeout, TCP keepalives, application name) apply unless it sets them.
    init(conninfo: String, searchPath: String) throws {
        let defaults: [(String, String)] = [
            ("connect_timeout", "5"),
            ("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"), ("keepalives_count", "3"),
            ("application_name", "kvconnectd"),
            ("dbname", conninfo)
        ]
        let keys = defaults.map { strdup($0.0) }
        let values = defaults.map { strdup($0.1) }
        defer { (keys + values).forEach { free($0) } }
        var kp: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var vp: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        conn = PQconnectdbParams(&kp, &vp, 1)
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            let msg = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let c = conn { PQfinish(c) }
            conn = nil
            throw PGError(
                kind: .connectionLost, sqlstate: nil, message: msg.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        // NOTICEs ("already exists, skipping") are not for the daemon's stderr.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        do {
            try execScript("SET search_path TO \(PGConnection.quoteIdentifier(searchPath)), public")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func close() {
        if let c = conn { PQfinish(c) }
        conn = nil
    }

    static func quoteIdentifier(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    var isBroken: Bool { conn.map { PQstatus($0) != CONNECTION_OK } ?? true }
    var backendPID: Int32 { conn.map { PQbackendPID($0) } ?? 0 }
    var socket: Int32 { conn.map { PQsocket($0) } ?? -1 }
    var inTransaction: Bool { conn.map { PQtransactionStatus($0) != PQTRANS_IDLE } ?? false }

    private func connError(_ what: String) -> PGError {
        let msg = conn.map { String(cString: PQerrorMessage($0)) } ?? "connection closed"
        return PGError(
            kind: .connectionLost, sqlstate: nil,
            message: "\(what): \(msg.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    private func error(from res: OpaquePointer?, at index: Int?) -> PGError {
        let bad = isBroken
        guard let res else {
            var e = connError("no result")
            e.failedAt = index
            return e
        }
        let state = PQresultErrorField(res, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let primary =
            PQresultErrorField(res, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            ?? String(cString: PQresultErrorMessage(res)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PGError(
            kind: PGError.classify(sqlstate: state, connectionBad: bad), sqlstate: state,
            message: primary, failedAt: index)
    }

    /// Simple-protocol script (several statements allowed, no parameters).
    func execScript(_ sql: String) throws {
        guard let c = conn else { throw connError("exec") }
        guard let res = PQexec(c, sql) else { throw connError("exec") }
        defer { PQclear(res) }
        let st = PQresultStatus(res)
        if st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK { throw error(from: res, at: nil) }
    }

    /// Name of the prepared statement for `sql`, preparing it on first use.
    private func statementName(_ q: PGQuery) throws -> String {
        if let n = prepared[q.sql] { return n }
        guard let c = conn else { throw connError("prepare") }
        let name = "s\(prepared.count)"
        let types = q.params.map(\.oid)
        guard let res = PQprepare(c, name, q.sql, Int32(types.count), types) else { throw connError("prepare") }
        defer { PQclear(res) }
        if PQresultStatus(res) != PGRES_COMMAND_OK { throw error(from: res, at: nil) }
        prepared[q.sql] = name
        return name
    }

    /// Sends one prepared statement with binary parameters and results.
    private func send(_ q: PGQuery, name: String) -> Bool {
        guard let c = conn else { return false }
        let encoded = q.params.map(\.encoded)
        var lengths = encoded.map { Int32($0?.count ?? 0) }
        var formats = [Int32](repeating: 1, count: encoded.count)
        // libpq wants non-NULL pointers for non-NULL values, even empty ones.
        let buffers: [UnsafeMutablePointer<CChar>?] = encoded.map { e in
            guard let e else { return nil }
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, e.count))
            e.withUnsafeBufferPointer { src in
                if let base = src.baseAddress {
                    UnsafeMutableRawPointer(p).copyMemory(from: base, byteCount: e.count)
                }
            }
            return p
        }
        defer { buffers.forEach { $0?.deallocate() } }
        var values: [UnsafePointer<CChar>?] = buffers.map { $0.map { UnsafePointer($0) } }
        return PQsendQueryPrepared(c, name, Int32(encoded.count), &values, &lengths, &formats, 1) == 1
    }

    /// One statement; returns its rows. Throws PGError.
    @discardableResult
    func query(_ sql: String, _ params: [PGParam] = []) throws -> PGResult {
        try pipeline([PGQuery(sql, params)])[0]
    }

    /// Runs the statements in one round trip. On the first failing statement
    /// the rest are skipped by the server and the error (with `failedAt`) is
    /// thrown after the pipeline is drained. A lost connection throws
    /// `.connectionLost`; then whether a COMMIT in the pipeline took effect
    /// is unknown.
    func pipeline(_ queries: [PGQuery]) throws -> [PGResult] {
        guard let c = conn, !isBroken else { throw connError("not connected") }
        let names = try queries.map { try statementName($0) }
        guard PQenterPipelineMode(c) == 1 else { throw connError("pipeline mode") }
        for (q, n) in zip(queries, names) {
            guard send(q, name: n) else {
                let e = connError("send")
                close()
                throw e
            }
        }
        guard PQpipelineSync(c) == 1 else {
            let e = connError("sync")
            close()
            throw e
        }
        var results: [PGResult] = []
        results.reserveCapacity(queries.count)
        var firstError: PGError?
        for i in 0..<queries.count {
            var kept: OpaquePointer?
            while let r = PQgetResult(c) {
                if kept == nil { kept = r } else { PQclear(r) }
            }
            guard let r = kept else {
                // No result at all: the connection died.
                var e = connError("lost during pipeline")
                e.failedAt = i
                close()
                throw firstError ?? e
            }
            let st = PQresultStatus(r)
            if st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK {
                results.append(PGResult(r))
            } else {
                if firstError == nil && st != PGRES_PIPELINE_ABORTED { firstError = error(from: r, at: i) }
                PQclear(r)
                if isBroken {
                    close()
                    throw firstError ?? connError("lost during pipeline")
                }
            }
        }
        // The sync point.
        if let r = PQgetResult(c) {
            let st = PQresultStatus(r)
            PQclear(r)
            if st != PGRES_PIPELINE_SYNC {
                close()
                throw firstError ?? connError("pipeline out of step")
            }
        } else {
            close()
            throw firstError ?? connError("lost at pipeline sync")
        }
        if PQexitPipelineMode(c) != 1 {
            close()
            throw firstError ?? connError("leaving pipeline mode")
        }
        if let firstError { throw firstError }
        return results
    }

    /// Rolls back whatever transaction is open (after a failed pipeline).
    func rollbackQuietly() {
        guard conn != nil, !isBroken, inTransaction else { return }
        try? execScript("ROLLBACK")
    }

    // MARK: - notifications

    /// Waits up to `timeoutMs` for input, then returns the notifications that
    /// arrived (channel, payload). Throws when the connection is lost.
    func waitForNotifications(timeoutMs: Int32) throws -> [(String, String)] {
        guard let c = conn, !isBroken else { throw connError("not connected") }
        var out: [(String, String)] = []
        func drain() {
            while let n = PQnotifies(c) {
                out.append((String(cString: n.pointee.relname), String(cString: n.pointee.extra)))
                PQfreemem(n)
            }
        }
        drain()
        if !out.isEmpty { return out }
        var pfd = pollfd(fd: PQsocket(c), events: Int16(POLLIN), revents: 0)
        let r = poll(&pfd, 1, timeoutMs)
        if r > 0 {
            if PQconsumeInput(c) != 1 {
                let e = connError("listen")
                close()
                throw e
            }
            drain()
        }
        if isBroken {
            let e = connError("listen")
            close()
            throw e
        }
        return out
    }
}

// One libpq connection: parameterised statements in binary format (bytea and
// int8 travel as raw bytes, no escaping or parsing), prepared once per
// connection, and pipelines (many statements, one round trip). Errors are
// classified by SQLSTATE so callers know whether to retry the transaction,
// reconnect, or give up.

import CLibPQ
import Foundation
import KVEngine

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

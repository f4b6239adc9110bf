// Snapshot reads on a small pool of connections. One range is one statement
// (its own snapshot); several ranges are one pipelined REPEATABLE READ READ
// ONLY transaction: one snapshot, one round trip. A connection lost under a
// read is replaced and the read tried once more before it fails with
// `.unavailable`.

import Foundation
import KVEngine

final class PGReadPool: @unchecked Sendable {
    /// Opens one pooled connection (the primary's for `PostgresStore`, the
    /// standby's for `PostgresReplicaStore`).
    private let connect: () throws -> PGConnection
    private let cond = NSCondition()
    private var idle: [PGConnection] = []
    private var total = 0
    private let maxConnections: Int
    private var closed = false

    init(maxConnections: Int, connect: @escaping () throws -> PGConnection) {
        self.connect = connect
        self.maxConnections = max(1, maxConnections)
    }

    /// Runs `body` on a pooled connection; retries once on a fresh connection
    /// after a lost one. Throws KVError.
    func withConnection<T>(_ body: (PGConnection) throws -> T) throws -> T {
        var lastError: PGError?
        for _ in 0..<2 {
            let c = try checkout()
            do {
                let out = try body(c)
                checkin(c)
                return out
            } catch let e as PGError {
                c.rollbackQuietly()
                if e.kind == .connectionLost || c.isBroken {
                    discard(c)
                    lastError = e
                    continue
                }
                checkin(c)
                if e.kind == .retry {
                    lastError = e
                    continue
                }
                throw e.asKVError
            } catch {
                checkin(c)
                throw error
            }
        }
        throw lastError?.asKVError ?? KVError.unavailable("PostgreSQL unavailable")
    }

    private func checkout() throws -> PGConnection {
        cond.lock()
        while idle.isEmpty && !closed && total >= maxConnections { cond.wait() }
        if closed {
            cond.unlock()
            throw KVError.unavailable("shutting down")
        }
        if let c = idle.popLast() {
            cond.unlock()
            return c
        }
        total += 1
        cond.unlock()
        do {
            return try connect()
        } catch {
            cond.lock()
            total -= 1
            cond.signal()
            cond.unlock()
            throw (error as? PGError)?.asKVError ?? KVError.unavailable("\(error)")
        }
    }

    private func checkin(_ c: PGConnection) {
        cond.lock()
        if closed || c.isBroken {
            c.close()
            total -= 1
        } else {
            idle.append(c)
        }
        cond.signal()
        cond.unlock()
    }

    private func discard(_ c: PGConnection) {
        c.close()
        cond.lock()
        total -= 1
        cond.signal()
        cond.unlock()
    }

    func close() {
        cond.lock()
        closed = true
        for c in idle { c.close() }
        total -= idle.count
        idle.removeAll()
        cond.broadcast()
        cond.unlock()
    }

    // MARK: - reads

    func snapshotRead(_ ranges: [ReadRange], nowMs: Int64) throws -> [[KVEntry]] {
        let live = ranges.enumerated().filter { $0.element.limit > 0 }
        if live.isEmpty { return ranges.map { _ in [] } }
        let queries = live.map { _, r in
            PGQuery(
                r.reverse ? PGSQL.rangeDesc : PGSQL.rangeAsc,
                [.bytea(r.start), .bytea(r.end), .int8(nowMs), .int8(Int64(r.limit))])
        }
        let results: [PGResult] = try withConnection { c in
            if queries.count == 1 { return try c.pipeline(queries) }
            let all = try c.pipeline(
                [PGQuery("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")] + queries + [PGQuery("COMMIT")])
            return Array(all[1...queries.count])
        }
        var out = ranges.map { _ in [KVEntry]() }
        for ((i, _), r) in zip(live, results) {
            var entries: [KVEntry] = []
            entries.reserveCapacity(r.rowCount)
            for row in 0..<r.rowCount {
                let raw = r.int64(row, 2)
                guard let enc = Int32(exactly: raw).flatMap(ValueEncoding.init(rawValue:)) else {
                    throw KVError.internalError("The value encoding \(raw) is unknown.")
                }
                entries.append(
                    KVEntry(
                        key: r.bytes(row, 0), value: KVValue(data: r.bytes(row, 1), encoding: enc),
                        versionstamp: r.bytes(row, 3)))
            }
            out[i] = entries
        }
        return out
    }
}

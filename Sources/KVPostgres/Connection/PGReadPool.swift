// Snapshot reads on a small pool of connections. One range is one statement
// (its own snapshot); several ranges are one pipelined REPEATABLE READ READ
// ONLY transaction: one snapshot, one round trip. A connection lost under a
// read is replaced and the read tried once more before it fails with
// `.unavailable`.

import KVEngine
import Threading

final class PGReadPool: Sendable {
    /// Opens one pooled connection (the primary's for `PostgresStore`, the
    /// standby's for `PostgresReplicaStore`).
    private let connect: @Sendable () throws -> PGConnection
    private struct State {
        var idle: [PGConnection] = []
        var total = 0
        var closed = false
    }
    /// A condition: readers wait for a connection when all are lent.
    private let state = ConditionLock(State())
    private let maxConnections: Int

    init(maxConnections: Int, connect: @escaping @Sendable () throws -> PGConnection) {
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
        // .some(nil): none idle, open one (counted already); nil: closed.
        let lent: PGConnection?? = state.wait { s in
            if s.closed { return .done(.none) }
            if let c = s.idle.popLast() { return .done(.some(c)) }
            if s.total < maxConnections {
                s.total += 1
                return .done(.some(nil))
            }
            return .wait(timeoutMs: nil)
        }
        guard let lent else { throw KVError.unavailable("shutting down") }
        if let lent { return lent }
        do {
            return try connect()
        } catch {
            state.withLock { $0.total -= 1 }
            state.signal()
            throw (error as? PGError)?.asKVError ?? KVError.unavailable("\(error)")
        }
    }

    private func checkin(_ c: PGConnection) {
        state.withLock { s in
            if s.closed || c.isBroken {
                c.close()
                s.total -= 1
            } else {
                s.idle.append(c)
            }
        }
        state.signal()
    }

    private func discard(_ c: PGConnection) {
        c.close()
        state.withLock { $0.total -= 1 }
        state.signal()
    }

    func close() {
        state.withLock { s in
            s.closed = true
            for c in s.idle { c.close() }
            s.total -= s.idle.count
            s.idle.removeAll()
        }
        state.broadcast()
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

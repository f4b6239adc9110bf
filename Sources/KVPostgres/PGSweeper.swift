// Deletes expired entries in small transactions on its own connection.
// Every daemon runs one, but a transaction-scoped advisory lock lets only one
// sweep at a time; the others find the lock taken and try again later. A
// sweep takes the counter row lock like a commit (so it never deadlocks with
// one), deletes a batch with RETURNING key and NOTIFYs those keys, waking
// watchers on every daemon. It sleeps until the earliest expiry it knows of
// (from local commits, other daemons' notifications and the table), and also
// prunes old commit markers.

import Foundation
import KVEngine

final class PGSweeper: @unchecked Sendable {
    static let batchSize = 256
    static let maxIdleMs: Int64 = 60_000
    /// When another daemon holds the sweep lock, look again after this.
    static let lockedRetryMs: Int64 = 1000

    private let ctx: PGContext
    private let cond = NSCondition()
    private var nextDueMs: Int64?
    private var stopped = false
    private var thread: Thread?
    private var conn: PGConnection?
    private var nextPruneMs: Int64 = 0

    private let statsLock = NSLock()
    private var _removed = 0
    var removedCount: Int {
        statsLock.lock()
        defer { statsLock.unlock() }
        return _removed
    }

    init(ctx: PGContext) {
        self.ctx = ctx
    }

    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "kvpg-sweeper"
        cond.lock()
        thread = t
        nextDueMs = 0
        cond.unlock()
        t.start()
    }

    func noteExpiry(_ ms: Int64) {
        cond.lock()
        if nextDueMs.map({ ms < $0 }) ?? true {
            nextDueMs = ms
            cond.signal()
        }
        cond.unlock()
    }

    func stop() {
        cond.lock()
        stopped = true
        thread = nil
        cond.broadcast()
        cond.unlock()
    }

    private func loop() {
        while true {
            cond.lock()
            while !stopped {
                let now = PGContext.wallClockMs()
                let due = min(nextDueMs ?? (now + Self.maxIdleMs), nextPruneMs)
                if due <= now { break }
                _ = cond.wait(until: Date().addingTimeInterval(Double(min(due - now, Self.maxIdleMs)) / 1000))
            }
            if stopped {
                cond.unlock()
                break
            }
            let sweepDue = (nextDueMs ?? Int64.max) <= PGContext.wallClockMs()
            if sweepDue { nextDueMs = nil }
            cond.unlock()

            if PGContext.wallClockMs() >= nextPruneMs {
                pruneMarkers()
                nextPruneMs = PGContext.wallClockMs() + 60_000
            }
            guard sweepDue else { continue }
            let next = sweepOnce()
            cond.lock()
            if nextDueMs.map({ next < $0 }) ?? true { nextDueMs = next }
            cond.unlock()
        }
        conn?.close()
        conn = nil
    }

    private func connected() throws -> PGConnection {
        if let c = conn, !c.isBroken { return c }
        conn = try ctx.connect()
        return conn!
    }

    private func pruneMarkers() {
        do {
            try connected().query(PGSQL.pruneMarkers, [.int8(ctx.options.markerRetentionMs)])
        } catch {
            conn?.rollbackQuietly()
            ctx.logger.debug("commit marker pruning failed: \(error)")
        }
    }

    /// One bounded batch; returns when to sweep next.
    private func sweepOnce() -> Int64 {
        let now = PGContext.wallClockMs()
        do {
            let c = try connected()
            let r = try c.pipeline([
                PGQuery(PGSQL.begin),
                PGQuery(PGSQL.trySweepLock, [.int8(Int64(PGSchema.LockSpace.sweep.rawValue)), .text(ctx.schema)])
            ])
            guard r[1].bool(0, 0) else {
                try c.execScript("ROLLBACK")
                return now + Self.lockedRetryMs  // another daemon is sweeping
            }
            let d = try c.pipeline([
                PGQuery(PGSQL.lockCounter),
                PGQuery(PGSQL.sweepExpired, [.int8(now), .int8(Int64(Self.batchSize))])
            ])
            let counter = UInt64(bitPattern: d[0].int64(0, 0))
            let removed = (0..<d[1].rowCount).map { d[1].bytes($0, 0) }
            var tail: [PGQuery] = []
            if let n = ctx.notifyQuery(counter: counter, keys: removed, expiryMs: nil, dueMs: nil) { tail.append(n) }
            tail.append(PGQuery("COMMIT"))
            tail.append(PGQuery(PGSQL.nextExpiry))
            let t = try c.pipeline(tail)
            if !removed.isEmpty {
                statsLock.lock()
                _removed += removed.count
                statsLock.unlock()
                ctx.hub.notify(changed: removed)
            }
            if removed.count >= Self.batchSize { return now }
            let nextRow = t[t.count - 1]
            return nextRow.optionalInt64(0, 0) ?? (now + Self.maxIdleMs)
        } catch {
            conn?.rollbackQuietly()
            if (error as? PGError)?.kind == .connectionLost {
                conn?.close()
                conn = nil
            }
            ctx.logger.warning("expiry sweep failed: \(error)")
            return now + 1000
        }
    }
}

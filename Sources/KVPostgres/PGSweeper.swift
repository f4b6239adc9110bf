// Deletes expired entries in small transactions on its own connection.
// Every daemon runs one, but a transaction-scoped advisory lock lets only one
// sweep at a time; the others find the lock taken and try again later. A
// sweep takes the counter row lock like a commit (so it never deadlocks with
// one), deletes a batch with RETURNING key and NOTIFYs those keys, waking
// watchers on every daemon. It sleeps until the earliest expiry it knows of
// (from local commits, other daemons' notifications and the table), and also
// prunes old commit markers.

import KVEngine
import Synchronization
import Threading

final class PGSweeper: Sendable {
    static let batchSize = 256
    static let maxIdleMs: Int64 = 60_000
    /// When another daemon holds the sweep lock, look again after this.
    static let lockedRetryMs: Int64 = 1000
    /// How often old commit markers are deleted.
    static let pruneEveryMs: Int64 = 60_000

    private let ctx: PGContext
    private let loop = DeadlineLoop(name: "kvpg-sweeper", maxIdleMs: maxIdleMs, clock: { PGContext.wallClockMs() })
    /// Sweeper-thread only.
    private let session: PGSession
    private struct Schedule {
        var nextSweepMs: Int64? = Int64.min
        var nextPruneMs: Int64 = Int64.min
    }
    /// Sweeper-thread only, except `noteExpiry`'s update of the sweep deadline.
    private let schedule = Mutex(Schedule())
    private let removed = Atomic<Int>(0)
    var removedCount: Int { removed.load(ordering: .relaxed) }

    init(ctx: PGContext) {
        self.ctx = ctx
        session = PGSession(connect: ctx.connect)
    }

    /// Sweeps and prunes once at start, then when due.
    func start() throws {
        try loop.start(work: { [self] in turn() }, finish: { [session] in session.close() })
    }

    func noteExpiry(_ ms: Int64) {
        schedule.withLock { s in
            if s.nextSweepMs.map({ ms < $0 }) ?? true { s.nextSweepMs = ms }
        }
        loop.wake(at: ms)
    }

    func stop() {
        loop.stop()
    }

    /// Prunes and sweeps what is due; returns when either is due next.
    private func turn() -> Int64? {
        let now = PGContext.wallClockMs()
        let (sweepDue, pruneDue) = schedule.withLock { s in
            let sweep = (s.nextSweepMs ?? Int64.max) <= now
            if sweep { s.nextSweepMs = nil }
            return (sweep, s.nextPruneMs <= now)
        }
        if pruneDue {
            pruneMarkers()
            schedule.withLock { $0.nextPruneMs = PGContext.wallClockMs() + Self.pruneEveryMs }
        }
        if sweepDue {
            let next = sweepOnce()
            schedule.withLock { s in
                if s.nextSweepMs.map({ next < $0 }) ?? true { s.nextSweepMs = next }
            }
        }
        return schedule.withLock { s in min(s.nextSweepMs ?? Int64.max, s.nextPruneMs) }
    }

    private func connected() throws -> PGConnection {
        try session.connected()
    }

    private func pruneMarkers() {
        do {
            try connected().query(PGSQL.pruneMarkers, [.int8(ctx.options.markerRetentionMs)])
        } catch {
            session.recover(from: error)
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
                self.removed.add(removed.count, ordering: .relaxed)
                ctx.hub.notify(changed: removed)
            }
            if removed.count >= Self.batchSize { return now }
            let nextRow = t[t.count - 1]
            return nextRow.optionalInt64(0, 0) ?? (now + Self.maxIdleMs)
        } catch {
            session.recover(from: error)
            ctx.logger.warning("expiry sweep failed: \(error)")
            return now + 1000
        }
    }
}

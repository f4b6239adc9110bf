import Foundation
import KVEngine
import Logging
import Synchronization
import Threading

/// Deletes expired entries in small transactions on the writer thread, so it
/// never holds the writer for long. It sleeps until the earliest expiry in the
/// database (learned from commits as they happen) instead of polling fast.
/// Reads hide expired rows on their own; the sweeper reclaims space and tells
/// watchers that the keys are gone.
final class ExpirySweeper: Sendable {
    /// Rows per sweep transaction: bounds the time the writer is held.
    static let batchSize = 256
    /// Upper bound on sleeping, as a safety net for clock jumps.
    static let maxIdleMs: Int64 = 60_000

    /// Weak: the core owns the sweeper and stops it on close.
    private weak let core: StoreCore?
    private let loop = DeadlineLoop(name: "kvengine-sweeper", maxIdleMs: maxIdleMs, clock: { StoreCore.wallClockMs() })
    private let logger = Logger(label: "kvengine.sweeper")
    private let removed = Atomic<Int>(0)
    var removedCount: Int { removed.load(ordering: .relaxed) }

    init(core: StoreCore) {
        self.core = core
    }

    /// Looks at the database once at start (backlog after a restart).
    func start() throws {
        try loop.start(
            work: { [self] in
                // One bounded batch; the writer runs pending commits between batches.
                guard let outcome = sweepOnce() else { return nil }
                return outcome.full ? Int64.min : outcome.nextExpiry
            })
    }

    /// A commit set an expiry at `ms`: wake earlier if that is sooner.
    func noteExpiry(_ ms: Int64) {
        loop.wake(at: ms)
    }

    /// `wait: false` on the writer thread: a sweep may be waiting for it.
    func stop(wait: Bool = true) {
        loop.stop(wait: wait)
    }

    private struct Outcome: Sendable {
        var full: Bool
        var nextExpiry: Int64?
    }

    /// nil when the store is closing.
    private func sweepOnce() -> Outcome? {
        guard let core = self.core else { return nil }
        let box = ResultBox<Outcome?>()
        let logger = self.logger
        let queued = core.onWriter { [weak core] conn in
            let now = StoreCore.wallClockMs()
            var removed: [Bytes] = []
            do {
                try conn.run("BEGIN IMMEDIATE")
                let del = try conn.statement(SQL.sweepExpired)
                defer { del.reset() }
                del.bind(1, now)
                del.bind(2, Int64(Self.batchSize))
                while try del.step() { removed.append(del.columnBytes(0)) }
                del.reset()
                try conn.run("COMMIT")
                let next = try conn.statement(SQL.nextExpiry)
                defer { next.reset() }
                var nextMs: Int64?
                if try next.step(), !next.columnIsNull(0) { nextMs = next.columnInt64(0) }
                core?.didSweep(removed)
                box.set(Outcome(full: removed.count >= Self.batchSize, nextExpiry: nextMs))
            } catch {
                if !conn.isAutocommit { try? conn.run("ROLLBACK") }
                logger.warning("expiry sweep failed: \(error)")
                box.set(Outcome(full: false, nextExpiry: now + 1000))
            }
        }
        guard queued else { return nil }
        return box.wait()
    }

    func addRemoved(_ n: Int) {
        removed.add(n, ordering: .relaxed)
    }
}

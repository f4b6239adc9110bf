import KVEngine
import Foundation
import Logging

/// Deletes expired entries in small transactions on the writer thread, so it
/// never holds the writer for long. It sleeps until the earliest expiry in the
/// database (learned from commits as they happen) instead of polling fast.
/// Reads hide expired rows on their own; the sweeper reclaims space and tells
/// watchers that the keys are gone.
final class ExpirySweeper: @unchecked Sendable {
    /// Rows per sweep transaction: bounds the time the writer is held.
    static let batchSize = 256
    /// Upper bound on sleeping, as a safety net for clock jumps.
    static let maxIdleMs: Int64 = 60_000

    private weak var core: StoreCore?
    private let cond = NSCondition()
    private var nextDueMs: Int64?
    private var stopped = false
    private var thread: Thread?
    private let logger = Logger(label: "kvengine.sweeper")

    private let statsLock = NSLock()
    private var _removed = 0
    var removedCount: Int { statsLock.lock(); defer { statsLock.unlock() }; return _removed }

    init(core: StoreCore) {
        self.core = core
    }

    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "kvengine-sweeper"
        cond.lock()
        thread = t
        nextDueMs = 0  // look at the database once at start (backlog after a restart)
        cond.unlock()
        t.start()
    }

    /// A commit set an expiry at `ms`: wake earlier if that is sooner.
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
        thread = nil  // its closure holds self: break the cycle (the running thread keeps itself)
        cond.broadcast()
        cond.unlock()
    }

    private func loop() {
        while true {
            cond.lock()
            while !stopped {
                let now = StoreCore.wallClockMs()
                let due = nextDueMs ?? (now + Self.maxIdleMs)
                if due <= now { break }
                let wait = min(due - now, Self.maxIdleMs)
                _ = cond.wait(until: Date().addingTimeInterval(Double(wait) / 1000))
                if nextDueMs == nil && StoreCore.wallClockMs() >= now + Self.maxIdleMs { nextDueMs = 0 }
            }
            if stopped { cond.unlock(); return }
            nextDueMs = nil
            cond.unlock()

            // One bounded batch; the writer runs pending commits between batches.
            guard let outcome = sweepOnce() else { return }
            cond.lock()
            if outcome.full {
                nextDueMs = 0
            } else if let next = outcome.nextExpiry {
                if nextDueMs.map({ next < $0 }) ?? true { nextDueMs = next }
            }
            cond.unlock()
        }
    }

    private struct Outcome: Sendable { var full: Bool; var nextExpiry: Int64? }

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
        statsLock.lock()
        _removed += n
        statsLock.unlock()
    }
}

import Foundation
import KVEngine
import Logging
import Threading

/// The queue's scheduler thread. It sleeps until the earliest deadline of a
/// ready message or lease end of an in-flight one (learned from commits and
/// from the table's index after each round), and only while someone can take
/// a message (push capacity or a waiting pull worker). A round runs on the
/// writer thread: expire leases, claim for waiting pull workers (up to each
/// one's batch size, FIFO), claim up to the free push capacity. Claims are
/// single UPDATEs on the writer connection, so two consumers never get the
/// same message.
final class QueueDispatcher: Sendable {
    static let maxIdleMs: Int64 = 60_000

    /// @unchecked: `tried` is only read and written under the dispatcher's `state` lock.
    final class Waiter: @unchecked Sendable {
        let visibilityMs: Int64
        let deadlineMs: Int64
        /// Most messages this worker takes (a batch lease).
        let max: Int
        let completion: @Sendable (Result<[QueueMessage], KVError>) -> Void
        var tried = false
        init(
            visibilityMs: Int64, deadlineMs: Int64, max: Int,
            completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
        ) {
            self.visibilityMs = visibilityMs
            self.deadlineMs = deadlineMs
            self.max = max
            self.completion = completion
        }
    }

    private struct Push {
        var deliver: QueueDeliverFunction
        var options: QueuePushOptions
    }

    private struct State {
        /// Earliest deadline or lease end in the table, as far as known.
        var nextDueMs: Int64? = 0  // look at the table once at start (backlog, recovered messages)
        /// When the last round looked at the table (the once-a-minute safety net).
        var lastRoundMs: Int64 = 0
        var stopped = false
        var push: Push?
        var pushInFlight = 0
        var waiters: [Waiter] = []
        var stats = QueueStats()
        var pendingSettles: [PendingSettle] = []
        var settleScheduled = false
    }

    /// Weak: the core owns the dispatcher and stops it on close.
    private weak let core: StoreCore?
    /// A condition: `waitForPushIdle` waits for deliveries to end.
    private let state = ConditionLock(State())
    private let loop = DeadlineLoop(name: "kvengine-queue", maxIdleMs: maxIdleMs, clock: { StoreCore.wallClockMs() })
    private let logger = Logger(label: "kvengine.queue")

    /// Poison limit: a message whose `maxLeases`-th lease ends without ack or
    /// fail is dead-lettered (0 = leased again forever).
    private let maxLeases: Int

    init(core: StoreCore, maxLeases: Int) {
        self.core = core
        self.maxLeases = maxLeases
    }

    var stats: QueueStats { state.withLock { $0.stats } }
    var inFlightPushes: Int { state.withLock { $0.pushInFlight } }
    var waitingWorkers: Int { state.withLock { $0.waiters.count } }

    func start() throws {
        try loop.start(work: { [self] in dispatch() })
    }

    /// Runs `dispatch` at `ms` unless it runs sooner.
    private func wake(at ms: Int64 = Int64.min) {
        loop.wake(at: ms)
    }

    /// Something may become claimable at `ms` (a commit's enqueue, a retry).
    func noteDue(_ ms: Int64) {
        let sooner = state.withLock { s in
            guard s.nextDueMs.map({ ms < $0 }) ?? true else { return false }
            s.nextDueMs = ms
            return true
        }
        if sooner { wake(at: ms) }
    }

    func setPush(_ deliver: QueueDeliverFunction?, options: QueuePushOptions) {
        state.withLock { s in
            s.push = deliver.map { Push(deliver: $0, options: options) }
            s.nextDueMs = 0
        }
        wake()
    }

    /// Waits (bounded) until no push delivery is in flight. True if idle.
    func waitForPushIdle(timeoutMs: Int64) -> Bool {
        let end = MonotonicClock.deadlineMs(after: timeoutMs)
        return state.wait { s in
            let left = end - MonotonicClock.nowMs()
            return s.pushInFlight == 0 || left <= 0 ? .done(s.pushInFlight == 0) : .wait(timeoutMs: left)
        }
    }

    /// A pull worker waits up to `waitMs` for ready messages (up to `max`).
    func lease(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        let now = StoreCore.wallClockMs()
        let w = Waiter(
            visibilityMs: Swift.max(1, visibilityMs), deadlineMs: now + Swift.max(0, waitMs),
            max: Swift.max(1, max), completion: completion)
        enum Admission { case stopped, queued, direct }
        let admission: Admission = state.withLock { s in
            if s.stopped { return .stopped }
            // A backlog (something is due) and nobody waiting before this worker:
            // claim straight on the writer thread, without a hop through the
            // dispatcher thread and back. Long-polls go to the dispatcher.
            if s.waiters.isEmpty && (s.nextDueMs.map { $0 <= now } ?? false) { return .direct }
            s.waiters.append(w)
            return .queued
        }
        switch admission {
        case .stopped: completion(.failure(.unavailable("shutting down")))
        case .queued: wake()
        case .direct: leaseNow(w)
        }
    }

    /// A lease claimed in its own round on the writer thread; if nothing was
    /// due after all, the worker waits at the dispatcher like any other.
    private func leaseNow(_ w: Waiter) {
        guard let core else { return w.completion(.failure(.unavailable("shutting down"))) }
        let queued = core.onWriter { [weak self, weak core] c in
            guard let self, let core else { return w.completion(.failure(.unavailable("shutting down"))) }
            let out = self.claimRound(core, c, waiters: [w], pushCapacity: 0, pushLeaseMs: 0)
            let claimed = out.assigned.first?.1
            self.state.withLock { s in
                if let next = out.nextDue, s.nextDueMs.map({ next < $0 }) ?? true { s.nextDueMs = next }
                s.stats.leasesExpired += out.expired
                if claimed == nil {
                    w.tried = true
                    s.waiters.append(w)
                }
            }
            if let claimed { w.completion(.success(claimed)) } else { self.wake() }
        }
        if !queued { w.completion(.failure(.unavailable("shutting down"))) }
    }

    private struct PendingSettle {
        let id: Int64
        let leaseSeq: Int64
        let success: Bool
        let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void
    }

    /// Ack (`success`) or fail a lease, on the writer thread. Settles that
    /// arrive together share one transaction (one fsync); dead letters get
    /// their own versionstamped commit right after it.
    func settle(
        id: Int64, leaseSeq: Int64, success: Bool,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        guard let core else { return completion(.failure(.unavailable("shutting down"))) }
        let schedule = state.withLock { s in
            s.pendingSettles.append(PendingSettle(id: id, leaseSeq: leaseSeq, success: success, completion: completion))
            defer { s.settleScheduled = true }
            return !s.settleScheduled
        }
        guard schedule else { return }
        let queued = core.onWriter { [weak self, weak core] c in
            guard let self else { return }
            self.drainSettles(core, c)
        }
        if !queued { drainSettles(nil, nil) }
    }

    private func drainSettles(_ core: StoreCore?, _ c: SQLiteConnection?) {
        let batch = state.withLock { s in
            defer {
                s.pendingSettles.removeAll()
                s.settleScheduled = false
            }
            return s.pendingSettles
        }
        guard let core, let c else {
            for p in batch { p.completion(.failure(.unavailable("shutting down"))) }
            return
        }
        let now = StoreCore.wallClockMs()
        var results: [Result<QueueSettleResult, KVError>] = []
        var exhausted: [(Int, QueueMessage)] = []
        do {
            try c.run("BEGIN IMMEDIATE")
            for (i, p) in batch.enumerated() {
                if p.success {
                    results.append(.success(try QueueStore.ack(c, id: p.id, leaseSeq: p.leaseSeq)))
                } else {
                    switch try QueueStore.failOrExhausted(c, id: p.id, leaseSeq: p.leaseSeq, nowMs: now) {
                    case .settled(let r): results.append(.success(r))
                    case .exhausted(let m):
                        results.append(.success(.deadLettered(versionstamp: nil)))
                        exhausted.append((i, m))
                    }
                }
            }
            try c.run("COMMIT")
        } catch {
            if !c.isAutocommit { try? c.run("ROLLBACK") }
            logger.error("queue: settling \(batch.count) message(s) failed: \(error)")
            // Nothing changed: the messages stay in flight until their leases end.
            results = Array(repeating: .failure(error.asKVError), count: batch.count)
            exhausted = []
        }
        for (i, m) in exhausted {
            do {
                results[i] = .success(.deadLettered(versionstamp: try QueueStore.deadLetter(core, c, m)))
            } catch {
                logger.error("queue: dead-lettering message \(m.id) failed: \(error)")
                results[i] = .failure(error.asKVError)
            }
        }
        for (p, r) in zip(batch, results) {
            if case .success(let s) = r { record(s) }
            p.completion(r)
        }
    }

    private func record(_ r: QueueSettleResult, poisoned: Bool = false) {
        state.withLock { s in
            if poisoned { s.stats.poisoned += 1 }
            switch r {
            case .acknowledged: s.stats.acknowledged += 1
            case .retryScheduled:
                s.stats.failedAttempts += 1
            case .deadLettered:
                s.stats.failedAttempts += 1
                s.stats.deadLettered += 1
            case .notFound, .leaseLost: break
            }
        }
        if case .retryScheduled(let at) = r { noteDue(at) }
    }

    /// Fails the waiting pull workers. `wait: false` on the writer thread:
    /// a round may be waiting for it.
    func stop(wait: Bool = true) {
        state.withLock { $0.stopped = true }
        loop.stop(wait: wait)
        let left = state.withLock { s in
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for w in left { w.completion(.failure(.unavailable("shutting down"))) }
    }

    /// Puts pull workers back in line, or fails them once stopped.
    private func requeue(_ workers: [Waiter]) {
        let stopped = state.withLock { s in
            if !s.stopped { s.waiters.insert(contentsOf: workers, at: 0) }
            return s.stopped
        }
        if stopped { for w in workers { w.completion(.failure(.unavailable("shutting down"))) } }
    }

    // MARK: - the loop

    /// One turn of the loop: answers pull workers whose wait ended, runs a
    /// round when something is due and someone can take it; returns when to
    /// look again.
    private func dispatch() -> Int64? {
        enum Turn {
            case sleep(until: Int64?)
            case expire([Waiter])
            case round([Waiter], push: Push?, capacity: Int)
        }
        let turn: Turn = state.withLock { s in
            if s.stopped { return .sleep(until: nil) }
            let now = StoreCore.wallClockMs()
            if s.waiters.contains(where: { $0.tried && $0.deadlineMs <= now }) {
                let expired = s.waiters.filter { $0.tried && $0.deadlineMs <= now }
                s.waiters.removeAll { $0.tried && $0.deadlineMs <= now }
                return .expire(expired)
            }
            let capacity = s.push.map { $0.options.concurrency - s.pushInFlight } ?? 0
            let consumers = capacity > 0 || !s.waiters.isEmpty
            // Safety net for clock jumps: look at the table at least once a minute.
            let due = s.nextDueMs ?? (s.lastRoundMs + Self.maxIdleMs)
            if s.waiters.contains(where: { !$0.tried }) || (consumers && due <= now) {
                let take = s.waiters
                s.waiters.removeAll()
                s.nextDueMs = nil
                s.lastRoundMs = now
                return .round(take, push: s.push, capacity: max(0, capacity))
            }
            var wake: Int64? = consumers ? due : nil
            if let w = s.waiters.map(\.deadlineMs).min() { wake = min(wake ?? w, w) }
            return .sleep(until: wake)
        }
        switch turn {
        case .sleep(let until):
            return until
        case .expire(let expired):
            for w in expired { w.completion(.success([])) }
            return Int64.min  // look again at once
        case .round(let take, let pushNow, let capacity):
            guard let outcome = round(waiters: take, pushCapacity: capacity, pushLeaseMs: pushNow?.options.leaseMs ?? 0)
            else {
                // The store is closing: its close stops this loop and fails the workers.
                requeue(take)
                return nil
            }
            for (w, m) in outcome.assigned { w.completion(.success(m)) }

            let deliver: QueueDeliverFunction? = state.withLock { s in
                for w in outcome.leftover { w.tried = true }
                if let next = outcome.nextDue, s.nextDueMs.map({ next < $0 }) ?? true { s.nextDueMs = next }
                s.stats.leasesExpired += outcome.expired
                guard let pushNow, !outcome.pushed.isEmpty else { return nil }
                s.pushInFlight += outcome.pushed.count
                return pushNow.deliver
            }
            requeue(outcome.leftover)

            if let deliver {
                for m in outcome.pushed {
                    deliver(m) { [weak self] ok in self?.pushFinished(m, ok: ok) }
                }
            }
            return Int64.min  // look again at once: the next deadline, the workers left
        }
    }

    private func pushFinished(_ m: QueueMessage, ok: Bool) {
        settle(id: m.id, leaseSeq: m.leaseSeq, success: ok) { [weak self] r in
            guard let self else { return }
            if case .success(.leaseLost) = r {
                self.logger.warning("queue: lease of pushed message \(m.id) was lost before it was settled")
            }
            self.state.withLock { $0.pushInFlight -= 1 }
            self.state.broadcast()
            self.wake()  // capacity for another delivery
        }
    }

    /// @unchecked: holds `Waiter`s (see there); handed from the writer to the dispatcher thread.
    private struct Outcome: @unchecked Sendable {
        var assigned: [(Waiter, [QueueMessage])] = []
        var leftover: [Waiter] = []
        var pushed: [QueueMessage] = []
        var nextDue: Int64?
        var expired = 0
    }

    /// One round on the writer thread; nil when the store is closing.
    private func round(waiters: [Waiter], pushCapacity: Int, pushLeaseMs: Int64) -> Outcome? {
        guard let core else { return nil }
        let box = ResultBox<Outcome>()
        let queued = core.onWriter { [weak self, weak core] c in
            guard let self, let core else { return box.set(Outcome(leftover: waiters)) }
            box.set(self.claimRound(core, c, waiters: waiters, pushCapacity: pushCapacity, pushLeaseMs: pushLeaseMs))
        }
        guard queued else { return nil }
        return box.wait()
    }

    /// Writer thread: expire leases, claim for `waiters` (FIFO, up to each
    /// one's batch) and up to `pushCapacity` for push, in one transaction;
    /// then dead-letter poison messages.
    private func claimRound(
        _ core: StoreCore, _ c: SQLiteConnection, waiters: [Waiter], pushCapacity: Int,
        pushLeaseMs: Int64
    ) -> Outcome {
        let logger = self.logger
        let maxLeases = self.maxLeases
        let now = StoreCore.wallClockMs()
        var out = Outcome()
        var poison: [QueueMessage] = []
        var relaxed: Int64?
        do {
            // One transaction per round, not waiting for the disk (see relaxSynchronous).
            relaxed = try QueueStore.relaxSynchronous(c)
            try c.run("BEGIN IMMEDIATE")
            out.expired = try QueueStore.expireLeases(c, nowMs: now, maxLeases: maxLeases, poison: &poison)
            var i = 0
            while i < waiters.count {
                let w = waiters[i]
                let ms = try QueueStore.claimDue(c, nowMs: now, leaseUntilMs: now + w.visibilityMs, limit: w.max)
                if ms.isEmpty { break }
                out.assigned.append((w, ms))
                i += 1
            }
            out.leftover = Array(waiters[i...])
            out.pushed = try QueueStore.claimDue(c, nowMs: now, leaseUntilMs: now + pushLeaseMs, limit: pushCapacity)
            out.nextDue = try QueueStore.nextDue(c)
            try c.run("COMMIT")
            for m in out.assigned.flatMap(\.1) + out.pushed {
                EngineMetrics.recordQueueDelivery(lagMs: now - m.deadlineMs)
            }
        } catch {
            // Rolled back: nothing was claimed; try again shortly.
            if !c.isAutocommit { try? c.run("ROLLBACK") }
            logger.error("queue: dispatch round failed: \(error)")
            out = Outcome()
            out.leftover = waiters
            out.nextDue = now + 1000
            poison = []
        }
        do { try QueueStore.restoreSynchronous(c, relaxed) } catch {
            logger.critical("queue: could not restore PRAGMA synchronous after a claim round: \(error)")
        }
        // Poison messages: dead-lettered like a failed last attempt, each
        // in its own versionstamped commit (as in drainSettles).
        for m in poison {
            do {
                _ = try QueueStore.deadLetter(core, c, m)
                logger.warning("queue: message \(m.id) dead-lettered: \(maxLeases) leases ended without ack or fail")
                record(.deadLettered(versionstamp: nil), poisoned: true)
            } catch {
                if !c.isAutocommit { try? c.run("ROLLBACK") }
                logger.error("queue: dead-lettering poison message \(m.id) failed: \(error)")
            }
        }
        return out
    }
}

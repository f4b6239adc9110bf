import Foundation
import KVEngine
import Logging

/// The queue's scheduler thread. It sleeps until the earliest deadline of a
/// ready message or lease end of an in-flight one (learned from commits and
/// from the table's index after each round), and only while someone can take
/// a message (push capacity or a waiting pull worker). A round runs on the
/// writer thread: expire leases, claim for waiting pull workers (up to each
/// one's batch size, FIFO), claim up to the free push capacity. Claims are
/// single UPDATEs on the writer connection, so two consumers never get the
/// same message.
final class QueueDispatcher: @unchecked Sendable {
    static let maxIdleMs: Int64 = 60_000

    final class Waiter: @unchecked Sendable {
        let visibilityMs: Int64
        let deadlineMs: Int64
        /// Most messages this worker takes (a batch lease).
        let max: Int
        let completion: @Sendable (Result<[QueueMessage], KVError>) -> Void
        var tried = false
        init(visibilityMs: Int64, deadlineMs: Int64, max: Int,
             completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void) {
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

    private weak var core: StoreCore?
    private let cond = NSCondition()
    private var nextDueMs: Int64?
    private var stopped = false
    private var push: Push?
    private var pushInFlight = 0
    private var waiters: [Waiter] = []
    private var thread: Thread?
    private var _stats = QueueStats()
    private let logger = Logger(label: "kvengine.queue")

    /// Poison limit: a message whose `maxLeases`-th lease ends without ack or
    /// fail is dead-lettered (0 = leased again forever).
    private let maxLeases: Int

    init(core: StoreCore, maxLeases: Int) {
        self.core = core
        self.maxLeases = maxLeases
    }

    var stats: QueueStats { cond.lock(); defer { cond.unlock() }; return _stats }
    var inFlightPushes: Int { cond.lock(); defer { cond.unlock() }; return pushInFlight }
    var waitingWorkers: Int { cond.lock(); defer { cond.unlock() }; return waiters.count }

    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "kvengine-queue"
        cond.lock()
        thread = t
        nextDueMs = 0  // look at the table once at start (backlog, recovered messages)
        cond.unlock()
        t.start()
    }

    /// Something may become claimable at `ms` (a commit's enqueue, a retry).
    func noteDue(_ ms: Int64) {
        cond.lock()
        if nextDueMs.map({ ms < $0 }) ?? true {
            nextDueMs = ms
            cond.signal()
        }
        cond.unlock()
    }

    func setPush(_ deliver: QueueDeliverFunction?, options: QueuePushOptions) {
        cond.lock()
        push = deliver.map { Push(deliver: $0, options: options) }
        nextDueMs = 0
        cond.signal()
        cond.unlock()
    }

    /// Waits (bounded) until no push delivery is in flight. True if idle.
    func waitForPushIdle(timeoutMs: Int64) -> Bool {
        let until = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        cond.lock()
        defer { cond.unlock() }
        while pushInFlight > 0 {
            if !cond.wait(until: until) { break }
        }
        return pushInFlight == 0
    }

    /// A pull worker waits up to `waitMs` for ready messages (up to `max`).
    func lease(visibilityMs: Int64, waitMs: Int64, max: Int,
               completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void) {
        cond.lock()
        if stopped {
            cond.unlock()
            completion(.failure(.unavailable("shutting down")))
            return
        }
        let now = StoreCore.wallClockMs()
        let w = Waiter(visibilityMs: Swift.max(1, visibilityMs), deadlineMs: now + Swift.max(0, waitMs),
                       max: Swift.max(1, max), completion: completion)
        // A backlog (something is due) and nobody waiting before this worker:
        // claim straight on the writer thread, without a hop through the
        // dispatcher thread and back. Long-polls go to the dispatcher.
        let direct = waiters.isEmpty && (nextDueMs.map { $0 <= now } ?? false)
        if !direct {
            waiters.append(w)
            cond.signal()
        }
        cond.unlock()
        if direct { leaseNow(w) }
    }

    /// A lease claimed in its own round on the writer thread; if nothing was
    /// due after all, the worker waits at the dispatcher like any other.
    private func leaseNow(_ w: Waiter) {
        guard let core else { return w.completion(.failure(.unavailable("shutting down"))) }
        let queued = core.onWriter { [weak self, weak core] c in
            guard let self, let core else { return w.completion(.failure(.unavailable("shutting down"))) }
            let out = self.claimRound(core, c, waiters: [w], pushCapacity: 0, pushLeaseMs: 0)
            self.cond.lock()
            if let next = out.nextDue, self.nextDueMs.map({ next < $0 }) ?? true { self.nextDueMs = next }
            self._stats.leasesExpired += out.expired
            let claimed = out.assigned.first?.1
            if claimed == nil {
                w.tried = true
                self.waiters.append(w)
                self.cond.signal()
            }
            self.cond.unlock()
            if let claimed { w.completion(.success(claimed)) }
        }
        if !queued { w.completion(.failure(.unavailable("shutting down"))) }
    }

    private struct PendingSettle {
        let id: Int64
        let leaseSeq: Int64
        let success: Bool
        let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void
    }
    private var pendingSettles: [PendingSettle] = []
    private var settleScheduled = false

    /// Ack (`success`) or fail a lease, on the writer thread. Settles that
    /// arrive together share one transaction (one fsync); dead letters get
    /// their own versionstamped commit right after it.
    func settle(id: Int64, leaseSeq: Int64, success: Bool,
                completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void) {
        guard let core else { return completion(.failure(.unavailable("shutting down"))) }
        cond.lock()
        pendingSettles.append(PendingSettle(id: id, leaseSeq: leaseSeq, success: success, completion: completion))
        let schedule = !settleScheduled
        settleScheduled = true
        cond.unlock()
        guard schedule else { return }
        let queued = core.onWriter { [weak self, weak core] c in
            guard let self else { return }
            self.drainSettles(core, c)
        }
        if !queued { drainSettles(nil, nil) }
    }

    private func drainSettles(_ core: StoreCore?, _ c: SQLiteConnection?) {
        cond.lock()
        let batch = pendingSettles
        pendingSettles.removeAll()
        settleScheduled = false
        cond.unlock()
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
        cond.lock()
        if poisoned { _stats.poisoned += 1 }
        switch r {
        case .acknowledged: _stats.acknowledged += 1
        case .retryScheduled(let at):
            _stats.failedAttempts += 1
            if nextDueMs.map({ at < $0 }) ?? true { nextDueMs = at; cond.signal() }
        case .deadLettered:
            _stats.failedAttempts += 1
            _stats.deadLettered += 1
        case .notFound, .leaseLost: break
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

    // MARK: - the loop

    private func loop() {
        while true {
            var expired: [Waiter] = []
            var runRound = false
            cond.lock()
            while !stopped {
                let now = StoreCore.wallClockMs()
                if waiters.contains(where: { $0.tried && $0.deadlineMs <= now }) {
                    expired = waiters.filter { $0.tried && $0.deadlineMs <= now }
                    waiters.removeAll { $0.tried && $0.deadlineMs <= now }
                    break
                }
                let capacity = push.map { $0.options.concurrency - pushInFlight } ?? 0
                let consumers = capacity > 0 || !waiters.isEmpty
                let due = nextDueMs ?? (now + Self.maxIdleMs)
                if waiters.contains(where: { !$0.tried }) || (consumers && due <= now) {
                    runRound = true
                    break
                }
                var wake = consumers ? due : now + Self.maxIdleMs
                if let w = waiters.map(\.deadlineMs).min() { wake = min(wake, w) }
                let wait = max(1, min(wake - now, Self.maxIdleMs))
                _ = cond.wait(until: Date().addingTimeInterval(Double(wait) / 1000))
                // Safety net for clock jumps: look at the table at least once a minute.
                if nextDueMs == nil && StoreCore.wallClockMs() >= now + Self.maxIdleMs { nextDueMs = 0 }
            }
            if stopped {
                let left = waiters
                waiters.removeAll()
                cond.unlock()
                for w in left { w.completion(.failure(.unavailable("shutting down"))) }
                return
            }
            if !runRound {
                cond.unlock()
                for w in expired { w.completion(.success([])) }
                continue
            }
            let take = waiters
            waiters.removeAll()
            let pushNow = push
            let capacity = pushNow.map { max(0, $0.options.concurrency - pushInFlight) } ?? 0
            nextDueMs = nil
            cond.unlock()

            guard let outcome = round(waiters: take, pushCapacity: capacity, pushLeaseMs: pushNow?.options.leaseMs ?? 0) else {
                cond.lock(); stopped = true; waiters.insert(contentsOf: take, at: 0); cond.unlock()
                continue
            }
            for (w, m) in outcome.assigned { w.completion(.success(m)) }

            cond.lock()
            for w in outcome.leftover { w.tried = true }
            waiters.insert(contentsOf: outcome.leftover, at: 0)
            if let next = outcome.nextDue, nextDueMs.map({ next < $0 }) ?? true { nextDueMs = next }
            _stats.leasesExpired += outcome.expired
            var deliver: QueueDeliverFunction?
            if let pushNow, !outcome.pushed.isEmpty {
                pushInFlight += outcome.pushed.count
                deliver = pushNow.deliver
            }
            cond.unlock()

            if let deliver {
                for m in outcome.pushed {
                    deliver(m) { [weak self] ok in self?.pushFinished(m, ok: ok) }
                }
            }
        }
    }

    private func pushFinished(_ m: QueueMessage, ok: Bool) {
        settle(id: m.id, leaseSeq: m.leaseSeq, success: ok) { [weak self] r in
            guard let self else { return }
            if case .success(.leaseLost) = r {
                self.logger.warning("queue: lease of pushed message \(m.id) was lost before it was settled")
            }
            self.cond.lock()
            self.pushInFlight -= 1
            self.cond.broadcast()
            self.cond.unlock()
        }
    }

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
    private func claimRound(_ core: StoreCore, _ c: SQLiteConnection, waiters: [Waiter], pushCapacity: Int,
                            pushLeaseMs: Int64) -> Outcome {
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

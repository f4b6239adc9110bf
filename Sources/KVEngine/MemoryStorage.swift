// A small in-process `KVStorage`: everything in one sorted dictionary under
// one lock, nothing on disk. It exists so the protocol layer (KVConnect) is
// tested without a database file, against the same semantics: checks,
// mutations and versionstamps come from the shared `MutationEvaluator`.

import Foundation
import Synchronization

public final class MemoryStorage: KVStorage, Sendable {
    public let databaseId: String
    public var location: String { ":memory:" }

    private struct Stored {
        var value: KVValue
        var versionstamp: Versionstamp
        var expireAtMs: Int64?
        func isLive(_ nowMs: Int64) -> Bool { expireAtMs.map { $0 > nowMs } ?? true }
    }

    private struct Message {
        var id: Int64
        var enqueue: Enqueue
        var deadlineMs: Int64
        var attempts = 0
        var leaseSeq: Int64 = 0
        var leaseUntilMs: Int64?
    }

    private struct Waiter {
        var id: Int
        var visibilityMs: Int64
        var max: Int
        var completion: @Sendable (Result<[QueueMessage], KVError>) -> Void
    }

    private struct State {
        var entries: [Bytes: Stored] = [:]
        var counter: UInt64 = 0
        var closed = false
        var messages: [Int64: Message] = [:]
        var nextMessageId: Int64 = 1
        var waiters: [Waiter] = []
        var nextWaiterId = 0
        var stats = QueueStats()
        var push: (deliver: QueueDeliverFunction, options: QueuePushOptions)?
        var pushInFlight = 0
        var copyMarkers: [String: Bytes] = [:]
    }

    private let state = Mutex(State())
    private let hub = WatchHub()
    private let queue = DispatchQueue(label: "memory-storage")

    public init(databaseId: String = "00000000-0000-4000-8000-000000000000") {
        self.databaseId = databaseId
    }

    // MARK: reads and writes

    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]] {
        let now = nowMs ?? WallClock.nowMs()
        return try state.withLock { s in
            if s.closed { throw KVError.unavailable("closed") }
            let live = s.entries.filter { $0.value.isLive(now) }
            return ranges.map { r in
                guard r.limit > 0 else { return [] }
                let keys = live.keys.filter {
                    !$0.lexicographicallyPrecedes(r.start) && $0.lexicographicallyPrecedes(r.end)
                }
                .sorted { $0.lexicographicallyPrecedes($1) }
                let picked = r.reverse ? Array(keys.reversed().prefix(r.limit)) : Array(keys.prefix(r.limit))
                return picked.map { k in
                    let e = live[k]!
                    return KVEntry(key: k, value: e.value, versionstamp: e.versionstamp)
                }
            }
        }
    }

    /// The evaluator's view of `State`, valid inside one `withLock`.
    private struct Target: WriteTarget {
        let s: UnsafeMutablePointer<State>
        func currentVersionstamp(_ key: Bytes, nowMs: Int64) throws -> Versionstamp? {
            s.pointee.entries[key].flatMap { $0.isLive(nowMs) ? $0.versionstamp : nil }
        }
        func currentValue(_ key: Bytes, nowMs: Int64) throws -> KVValue? {
            s.pointee.entries[key].flatMap { $0.isLive(nowMs) ? $0.value : nil }
        }
        func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws {
            s.pointee.entries[key] = Stored(value: value, versionstamp: versionstamp, expireAtMs: expireAtMs)
        }
        func delete(_ key: Bytes) throws { s.pointee.entries[key] = nil }
        func enqueue(_ e: Enqueue) throws {
            let id = s.pointee.nextMessageId
            s.pointee.nextMessageId += 1
            s.pointee.messages[id] = Message(id: id, enqueue: e, deadlineMs: e.deadlineMs)
        }
    }

    public func atomicWrite(
        _ write: AtomicWrite,
        completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    ) {
        let now = WallClock.nowMs()
        let outcome: (Result<AtomicWriteResult, KVError>, [Bytes]) = state.withLock { s in
            if s.closed { return (.failure(.unavailable("closed")), []) }
            let before = s
            return withUnsafeMutablePointer(to: &s) { p in
                let eval = MutationEvaluator(target: Target(s: p), nowMs: now)
                do {
                    let failed = try eval.failedChecks(write.checks)
                    if !failed.isEmpty { return (.success(.checkFailed(failedChecks: failed)), []) }
                    let vs = Versionstamps.make(counter: p.pointee.counter + 1)
                    for m in write.mutations { try eval.apply(m, versionstamp: vs) }
                    for e in write.enqueues { try eval.enqueue(e) }
                    p.pointee.counter += 1
                    return (.success(.committed(versionstamp: vs)), eval.effects.touched)
                } catch {
                    p.pointee = before  // all-or-nothing
                    return (.failure((error as? KVError) ?? .internalError("\(error)")), [])
                }
            }
        }
        hub.notify(changed: outcome.1)
        if !write.enqueues.isEmpty { scheduleQueueRound() }
        completion(outcome.0)
    }

    public func checkWritable() -> Bool { state.withLock { !$0.closed } }

    public var currentVersionstamp: Versionstamp { Versionstamps.make(counter: state.withLock { $0.counter }) }

    public func close() {
        let waiters = state.withLock { s in
            s.closed = true
            s.push = nil
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.completion(.success([])) }
    }

    public func watch(keys: [Bytes], onChange: @escaping @Sendable () -> Void) -> KeyWatch {
        let w = KeyWatch(keys: keys, onChange: onChange)
        hub.add(w)
        return w
    }

    public var watchCount: Int { hub.watchCount }
    public var expiredEntriesRemoved: Int { 0 }

    public func storageStats() throws -> StorageStats {
        state.withLock { s in
            StorageStats(
                sizeBytes: Int64(s.entries.reduce(0) { $0 + $1.key.count + $1.value.value.data.count }),
                entries: Int64(s.entries.count))
        }
    }

    // MARK: queues

    public func startQueueDelivery(options: QueuePushOptions, deliver: @escaping QueueDeliverFunction) {
        state.withLock { $0.push = (deliver, options) }
        scheduleQueueRound()
    }

    public func stopQueueDelivery(drainTimeoutMs: Int64) -> Bool {
        state.withLock { $0.push = nil }
        let end = WallClock.nowMs() + drainTimeoutMs
        while state.withLock({ $0.pushInFlight }) > 0 && WallClock.nowMs() < end {
            Thread.sleep(forTimeInterval: 0.005)
        }
        return state.withLock { $0.pushInFlight } == 0
    }

    public func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        let now = WallClock.nowMs()
        let max = Swift.max(1, max)
        let claimed: Result<[QueueMessage], KVError>? = state.withLock { s in
            if s.closed { return .failure(.unavailable("closed")) }
            let ms = Self.claim(&s, now: now, visibilityMs: visibilityMs, max: max)
            if !ms.isEmpty || waitMs <= 0 { return .success(ms) }
            s.nextWaiterId += 1
            s.waiters.append(Waiter(id: s.nextWaiterId, visibilityMs: visibilityMs, max: max, completion: completion))
            let id = s.nextWaiterId
            queue.asyncAfter(deadline: .now() + .milliseconds(Int(waitMs))) { [weak self] in
                self?.expireWaiter(id)
            }
            return nil
        }
        if let claimed { completion(claimed) } else { scheduleQueueRound() }
    }

    public func ackQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        settle(id: id, leaseSeq: leaseSeq, success: true, completion: completion)
    }

    public func failQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        settle(id: id, leaseSeq: leaseSeq, success: false, completion: completion)
    }

    public func queueCounts() throws -> QueueCounts {
        state.withLock { s in
            let inflight = s.messages.values.filter { $0.leaseUntilMs != nil }.count
            return QueueCounts(ready: s.messages.count - inflight, inflight: inflight)
        }
    }

    public var queueStats: QueueStats { state.withLock { $0.stats } }
    public var queueRecoveredOnOpen: Int { 0 }

    // MARK: queue administration

    private static func info(_ m: Message, now: Int64) -> QueueMessageInfo {
        let state: QueueMessageState = m.leaseUntilMs != nil ? .inflight : (m.deadlineMs <= now ? .ready : .delayed)
        return QueueMessageInfo(
            id: m.id, state: state, attempt: m.attempts + 1, deadlineMs: m.deadlineMs,
            leaseUntilMs: m.leaseUntilMs, leases: m.leaseSeq, payload: m.enqueue.payload,
            keysIfUndelivered: m.enqueue.keysIfUndelivered,
            backoffSchedule: m.enqueue.backoffSchedule)
    }

    public func queueOverview(nowMs: Int64) throws -> QueueOverview {
        state.withLock { s in
            var o = QueueOverview()
            for m in s.messages.values {
                switch Self.info(m, now: nowMs).state {
                case .ready: o.ready += 1
                case .delayed: o.delayed += 1
                case .inflight: o.inflight += 1
                }
                if m.leaseUntilMs == nil { o.oldestDueMs = min(o.oldestDueMs ?? m.deadlineMs, m.deadlineMs) }
            }
            return o
        }
    }

    public func listQueueMessages(afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo] {
        state.withLock { s in
            s.messages.values.filter { $0.id > afterId }.sorted { $0.id < $1.id }.prefix(max(0, limit))
                .map { Self.info($0, now: nowMs) }
        }
    }

    public func queueMessage(id: Int64, nowMs: Int64) throws -> QueueMessageInfo? {
        state.withLock { s in s.messages[id].map { Self.info($0, now: nowMs) } }
    }

    public func deleteQueueMessages(ids: [Int64]?, completion: @escaping @Sendable (Result<Int, KVError>) -> Void) {
        let n: Int = state.withLock { s in
            guard let ids else {
                defer { s.messages.removeAll() }
                return s.messages.count
            }
            return ids.reduce(0) { n, id in n + (s.messages.removeValue(forKey: id) == nil ? 0 : 1) }
        }
        completion(.success(n))
    }

    // MARK: bulk copy

    public func scanEntries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        state.withLock { s in
            let keys = s.entries.keys.filter { k in after.map { $0.lexicographicallyPrecedes(k) } ?? true }
                .sorted { $0.lexicographicallyPrecedes($1) }.prefix(limit)
            return keys.map { k in
                let e = s.entries[k]!
                return StoredEntry(key: k, value: e.value, versionstamp: e.versionstamp, expiresAtMs: e.expireAtMs)
            }
        }
    }

    public func scanQueueMessages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] {
        state.withLock { s in
            s.messages.values.filter { $0.id > (after ?? .min) }.sorted { $0.id < $1.id }.prefix(limit).map {
                var e = $0.enqueue
                e.deadlineMs = $0.deadlineMs
                return StoredQueueMessage(id: $0.id, enqueue: e, attempts: $0.attempts)
            }
        }
    }

    public func importBulk(_ batch: BulkImport) throws {
        try state.withLock { s in
            if s.closed { throw KVError.unavailable("storage closed") }
            for e in batch.entries {
                s.entries[e.key] = Stored(value: e.value, versionstamp: e.versionstamp, expireAtMs: e.expiresAtMs)
                s.counter = max(s.counter, Versionstamps.counter(of: e.versionstamp) ?? 0)
            }
            for m in batch.messages {
                let id = s.nextMessageId
                s.nextMessageId += 1
                s.messages[id] = Message(
                    id: id, enqueue: m.enqueue, deadlineMs: m.enqueue.deadlineMs, attempts: m.attempts)
            }
            s.copyMarkers[batch.progressName] = batch.progress
        }
    }

    public func copyProgress(name: String) throws -> Bytes? {
        state.withLock { $0.copyMarkers[name] }
    }

    // MARK: queue internals

    /// Expires lapsed leases, then leases up to `max` of the earliest due
    /// ready messages (oldest deadline first), all under the one lock.
    private static func claim(_ s: inout State, now: Int64, visibilityMs: Int64, max: Int) -> [QueueMessage] {
        for (id, m) in s.messages where (m.leaseUntilMs ?? Int64.max) <= now {
            s.messages[id]?.leaseUntilMs = nil
            s.stats.leasesExpired += 1
        }
        let due = s.messages.values.filter { $0.leaseUntilMs == nil && $0.deadlineMs <= now }
            .sorted { ($0.deadlineMs, $0.id) < ($1.deadlineMs, $1.id) }.prefix(max)
        return due.map { next in
            var m = next
            m.leaseSeq += 1
            m.leaseUntilMs = now + visibilityMs
            s.messages[m.id] = m
            return QueueMessage(
                id: m.id, leaseSeq: m.leaseSeq, attempt: m.attempts + 1, payload: m.enqueue.payload,
                deadlineMs: m.deadlineMs, leaseUntilMs: now + visibilityMs,
                keysIfUndelivered: m.enqueue.keysIfUndelivered,
                backoffSchedule: m.enqueue.backoffSchedule)
        }
    }

    private func settle(
        id: Int64, leaseSeq: Int64, success: Bool,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        let now = WallClock.nowMs()
        var deadLetter: Message?
        let result: QueueSettleResult = state.withLock { s in
            guard var m = s.messages[id] else { return .notFound }
            guard m.leaseSeq == leaseSeq, m.leaseUntilMs != nil else { return .leaseLost }
            if success {
                s.messages[id] = nil
                s.stats.acknowledged += 1
                return .acknowledged
            }
            s.stats.failedAttempts += 1
            if m.attempts < m.enqueue.backoffSchedule.count {
                let at = now + Int64(m.enqueue.backoffSchedule[m.attempts])
                m.attempts += 1
                m.deadlineMs = at
                m.leaseUntilMs = nil
                s.messages[id] = m
                return .retryScheduled(atMs: at)
            }
            s.messages[id] = nil
            s.stats.deadLettered += 1
            deadLetter = m
            return .deadLettered(versionstamp: nil)
        }
        guard let m = deadLetter, !m.enqueue.keysIfUndelivered.isEmpty else {
            scheduleQueueRound()
            completion(.success(result))
            return
        }
        let value = KVValue(data: m.enqueue.payload, encoding: .v8)
        let write = AtomicWrite(mutations: m.enqueue.keysIfUndelivered.map { Mutation(key: $0, kind: .set(value)) })
        atomicWrite(write) { r in
            completion(r.map { if case .committed(let vs) = $0 { .deadLettered(versionstamp: vs) } else { result } })
        }
    }

    private func expireWaiter(_ id: Int) {
        let w: Waiter? = state.withLock { s in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        w?.completion(.success([]))
    }

    /// Hands due messages to waiting pull workers, then to the pusher, and
    /// schedules itself for the next deadline.
    private func scheduleQueueRound() {
        queue.async { [weak self] in self?.queueRound() }
    }

    private func queueRound() {
        let now = WallClock.nowMs()
        var handOut: [(@Sendable (Result<[QueueMessage], KVError>) -> Void, [QueueMessage])] = []
        var pushes: [(QueueDeliverFunction, QueueMessage)] = []
        let nextDue: Int64? = state.withLock { s in
            while let w = s.waiters.first {
                let ms = Self.claim(&s, now: now, visibilityMs: w.visibilityMs, max: w.max)
                if ms.isEmpty { break }
                handOut.append((s.waiters.removeFirst().completion, ms))
            }
            if let push = s.push {
                let ms = Self.claim(
                    &s, now: now, visibilityMs: push.options.leaseMs,
                    max: Swift.max(0, push.options.concurrency - s.pushInFlight))
                s.pushInFlight += ms.count
                pushes = ms.map { (push.deliver, $0) }
            }
            return s.messages.values.map { $0.leaseUntilMs ?? $0.deadlineMs }.min()
        }
        for (c, m) in handOut { c(.success(m)) }
        for (deliver, m) in pushes {
            deliver(m) { [weak self] ok in
                guard let self else { return }
                self.state.withLock { $0.pushInFlight -= 1 }
                self.settle(id: m.id, leaseSeq: m.leaseSeq, success: ok) { _ in }
            }
        }
        if let nextDue, nextDue > now {
            queue.asyncAfter(deadline: .now() + .milliseconds(Int(min(nextDue - now, 60_000)))) { [weak self] in
                self?.queueRound()
            }
        }
    }
}

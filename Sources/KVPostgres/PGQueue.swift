// Queue delivery on PostgreSQL, with the states and semantics of SQLite mode
// (see KVSQLite's QueueStore): ready → inflight (claim, lease_seq + 1) →
// deleted (ack) / ready later (fail with schedule left) / dead-lettered.
//
// Every daemon runs this dispatcher thread with its own connection. Claims
// are `FOR UPDATE SKIP LOCKED`, so each due message is claimed by exactly one
// daemon or pull worker per attempt. Expired leases (of any daemon) become
// ready again in every round. A pushed message records the pushing daemon
// (`leased_by`); each daemon holds a session advisory lock named after its
// instance while connected, so when a daemon dies the others can take its
// lock and make its pushed messages ready at once instead of waiting for the
// lease to end. Enqueues and retries NOTIFY, waking the dispatchers of all
// daemons at the right time.

import KVEngine
import Threading

final class PGQueue: Sendable {
    static let maxIdleMs: Int64 = 60_000
    /// How often to look for pushed messages of daemons that died.
    static let orphanScanMs: Int64 = 2_000

    static let columns =
        "id, lease_seq, attempts, payload, deadline_ms, lease_until_ms, keys_if_undelivered, backoff_schedule"
    static let claimSQL = """
        UPDATE queue_messages SET state = 'inflight', lease_until_ms = $2, lease_seq = lease_seq + 1, leased_by = $4
        WHERE id IN (SELECT id FROM queue_messages WHERE state = 'ready' AND deadline_ms <= $1
                     ORDER BY deadline_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING \(columns)
        """
    /// Expired leases → ready, except poison messages (their `$2`-th lease
    /// ended without ack or fail; `$2` = 0: no limit), which `poisonSQL` finds.
    static let expireSQL = """
        UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL, leased_by = NULL
        WHERE state = 'inflight' AND lease_until_ms <= $1 AND ($2 = 0 OR lease_seq - attempts < $2) RETURNING id
        """
    static let poisonSQL = """
        SELECT id, lease_seq FROM queue_messages
        WHERE state = 'inflight' AND lease_until_ms <= $1 AND $2 > 0 AND lease_seq - attempts >= $2
        """
    static let nextDueSQL = """
        SELECT LEAST((SELECT MIN(deadline_ms) FROM queue_messages WHERE state = 'ready'),
                     (SELECT MIN(lease_until_ms) FROM queue_messages WHERE state = 'inflight'))
        """
    static let relaxedCommitSQL = "SET LOCAL synchronous_commit = off"
    static let ackSQL =
        "DELETE FROM queue_messages WHERE id = $1 AND state = 'inflight' AND lease_seq = $2 RETURNING id"
    static let existsSQL = "SELECT 1 FROM queue_messages WHERE id = $1"
    static let selectLeasedSQL = """
        SELECT \(columns) FROM queue_messages WHERE id = $1 AND state = 'inflight' AND lease_seq = $2 FOR UPDATE
        """
    static let retrySQL = """
        UPDATE queue_messages SET state = 'ready', attempts = $3, deadline_ms = $4, lease_until_ms = NULL, leased_by = NULL
        WHERE id = $1 AND state = 'inflight' AND lease_seq = $2
        """
    static let deleteSQL = "DELETE FROM queue_messages WHERE id = $1"
    static let countsSQL = "SELECT state, COUNT(*) FROM queue_messages GROUP BY state"
    static let ownersSQL = """
        SELECT DISTINCT leased_by FROM queue_messages WHERE state = 'inflight' AND leased_by IS NOT NULL AND leased_by <> $1
        """
    static let lockOwnerSQL = "SELECT pg_advisory_lock($1::int4, hashtext($2))"
    static let tryOwnerSQL = "SELECT pg_try_advisory_lock($1::int4, hashtext($2))"
    static let unlockOwnerSQL = "SELECT pg_advisory_unlock($1::int4, hashtext($2))"
    static let recoverOwnerSQL = """
        UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL, leased_by = NULL
        WHERE state = 'inflight' AND leased_by = $1 RETURNING id
        """

    /// @unchecked: `tried` is only read and written under the queue's `state` lock.
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

    private struct Settle {
        let id: Int64
        let leaseSeq: Int64
        let success: Bool
        let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void
    }

    private let ctx: PGContext
    private struct State {
        /// Earliest deadline or lease end in the table, as far as known.
        var nextDueMs: Int64? = 0  // look at the table once at start
        /// When the last round looked at the table (the once-a-minute safety net).
        var lastRoundMs: Int64 = 0
        var stopped = false
        var push: (deliver: QueueDeliverFunction, options: QueuePushOptions)?
        var pushInFlight = 0
        var waiters: [Waiter] = []
        var settles: [Settle] = []
        var stats = QueueStats()
        var recoveredOnOpen = 0
        var firstOrphanScanDone = false
        var nextOrphanScanMs: Int64 = 0
    }
    /// A condition: `waitForPushIdle` waits for deliveries to end.
    private let state = ConditionLock(State())
    private let loop = DeadlineLoop(name: "kvpg-queue", maxIdleMs: maxIdleMs, clock: { PGContext.wallClockMs() })
    /// Queue-thread only: the connection holding this daemon's liveness lock.
    private let session: PGSession

    init(ctx: PGContext) {
        self.ctx = ctx
        session = PGSession(connect: ctx.connect) { c in
            try c.query(Self.lockOwnerSQL, [.int8(Int64(PGSchema.LockSpace.daemon.rawValue)), .text(ctx.instanceId)])
        }
    }

    var stats: QueueStats { state.withLock { $0.stats } }
    var recoveredOnOpen: Int { state.withLock { $0.recoveredOnOpen } }

    /// The thread holds the queue until `stop` ends it.
    func start() throws {
        try loop.start(work: { [self] in dispatch() }, finish: { [self] in finish() })
    }

    /// Waits for the thread; what is still waiting fails with "shutting down".
    func stop() {
        state.withLock { $0.stopped = true }
        loop.stop()
    }

    func noteDue(_ ms: Int64) {
        let sooner = state.withLock { s in
            guard s.nextDueMs.map({ ms < $0 }) ?? true else { return false }
            s.nextDueMs = ms
            return true
        }
        if sooner { loop.wake(at: ms) }
    }

    func setPush(_ deliver: QueueDeliverFunction?, options: QueuePushOptions) {
        state.withLock { s in
            s.push = deliver.map { ($0, options) }
            s.nextDueMs = 0
        }
        loop.wake()
    }

    func waitForPushIdle(timeoutMs: Int64) -> Bool {
        let end = MonotonicClock.deadlineMs(after: timeoutMs)
        return state.wait { s in
            let left = end - MonotonicClock.nowMs()
            return s.pushInFlight == 0 || left <= 0 ? .done(s.pushInFlight == 0) : .wait(timeoutMs: left)
        }
    }

    func lease(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        let accepted = state.withLock { s in
            if s.stopped { return false }
            s.waiters.append(
                Waiter(
                    visibilityMs: Swift.max(1, visibilityMs),
                    deadlineMs: PGContext.wallClockMs() + Swift.max(0, waitMs),
                    max: Swift.max(1, max), completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.unavailable("shutting down"))) }
        loop.wake()
    }

    func settle(
        id: Int64, leaseSeq: Int64, success: Bool,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        let accepted = state.withLock { s in
            if s.stopped { return false }
            s.settles.append(Settle(id: id, leaseSeq: leaseSeq, success: success, completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.unavailable("shutting down"))) }
        loop.wake()
    }

    /// Ready and in-flight counts from a result of `countsSQL`.
    static func counts(_ r: PGResult) -> QueueCounts {
        var out = QueueCounts(ready: 0, inflight: 0)
        for i in 0..<r.rowCount {
            switch r.text(i, 0) {
            case "ready": out.ready = Int(r.int64(i, 1))
            case "inflight": out.inflight = Int(r.int64(i, 1))
            default: break
            }
        }
        return out
    }

    // MARK: - the loop

    private enum Work {
        case sleep(until: Int64?)
        case settle([Settle])
        case round([Waiter], capacity: Int, leaseMs: Int64)
        case expire([Waiter])
    }

    private func nextWork() -> Work {
        state.withLock { s in
            if s.stopped { return .sleep(until: nil) }
            if !s.settles.isEmpty {
                defer { s.settles.removeAll() }
                return .settle(s.settles)
            }
            let now = PGContext.wallClockMs()
            let expired = s.waiters.filter { $0.tried && $0.deadlineMs <= now }
            if !expired.isEmpty {
                s.waiters.removeAll { $0.tried && $0.deadlineMs <= now }
                return .expire(expired)
            }
            let capacity = s.push.map { $0.options.concurrency - s.pushInFlight } ?? 0
            let consumers = capacity > 0 || !s.waiters.isEmpty
            // Safety net for clock jumps: look at the table at least once a minute.
            let due = min(
                s.nextDueMs ?? (s.lastRoundMs + Self.maxIdleMs),
                consumers && s.push != nil ? s.nextOrphanScanMs : Int64.max)
            if s.waiters.contains(where: { !$0.tried }) || (consumers && due <= now) {
                let take = s.waiters
                s.waiters.removeAll()
                s.nextDueMs = nil
                s.lastRoundMs = now
                return .round(take, capacity: max(0, capacity), leaseMs: s.push?.options.leaseMs ?? 0)
            }
            var wake: Int64? = consumers ? due : nil
            if let w = s.waiters.map(\.deadlineMs).min() { wake = min(wake ?? w, w) }
            return .sleep(until: wake)
        }
    }

    /// One turn of the loop; returns when to look again.
    private func dispatch() -> Int64? {
        switch nextWork() {
        case .sleep(let until):
            return until
        case .settle(let s):
            settle(s)
        case .expire(let w):
            for x in w { x.completion(.success([])) }
        case .round(let w, let capacity, let leaseMs):
            round(w, capacity: capacity, leaseMs: leaseMs)
        }
        return Int64.min  // look again at once
    }

    /// On the queue thread after its last turn.
    private func finish() {
        let (w, s) = state.withLock { s in
            defer {
                s.waiters.removeAll()
                s.settles.removeAll()
            }
            return (s.waiters, s.settles)
        }
        for x in w { x.completion(.failure(.unavailable("shutting down"))) }
        for x in s { x.completion(.failure(.unavailable("shutting down"))) }
        session.close()
    }

    /// The queue connection, holding this daemon's liveness lock.
    private func connected() throws -> PGConnection {
        try session.connected()
    }

    private func message(_ r: PGResult, _ i: Int) -> QueueMessage {
        QueueMessage(
            id: r.int64(i, 0), leaseSeq: r.int64(i, 1), attempt: Int(r.int64(i, 2)) + 1,
            payload: r.bytes(i, 3), deadlineMs: r.int64(i, 4), leaseUntilMs: r.optionalInt64(i, 5) ?? 0,
            keysIfUndelivered: QueueKeysCodec.decode(r.bytes(i, 6)) ?? [],
            backoffSchedule: QueueKeysCodec.decodeBackoff(r.text(i, 7)) ?? [])
    }

    /// The rows of a claim, oldest deadline first (RETURNING order is unspecified).
    private func messages(_ r: PGResult) -> [QueueMessage] {
        (0..<r.rowCount).map { message(r, $0) }.sorted { ($0.deadlineMs, $0.id) < ($1.deadlineMs, $1.id) }
    }

    private func fail<T>(_ error: Error) -> Result<T, KVError> {
        session.recover(from: error)
        if let e = error as? PGError {
            return .failure(e.asKVError)
        }
        return .failure((error as? KVError) ?? .internalError("\(error)"))
    }

    /// Pushed messages of daemons whose liveness lock is free (they died) → ready.
    private func recoverOrphans(_ c: PGConnection) throws -> Int {
        let owners = try c.query(Self.ownersSQL, [.text(ctx.instanceId)])
        var n = 0
        let space = Int64(PGSchema.LockSpace.daemon.rawValue)
        for i in 0..<owners.rowCount {
            let owner = owners.text(i, 0)
            guard try c.query(Self.tryOwnerSQL, [.int8(space), .text(owner)]).bool(0, 0) else { continue }
            defer { _ = try? c.query(Self.unlockOwnerSQL, [.int8(space), .text(owner)]) }
            n += try c.query(Self.recoverOwnerSQL, [.text(owner)]).rowCount
        }
        if n > 0 { ctx.logger.notice("queue: \(n) message(s) pushed by a daemon that stopped are ready again") }
        return n
    }

    private func round(_ waiters: [Waiter], capacity: Int, leaseMs: Int64) {
        let now = PGContext.wallClockMs()
        var assigned: [(Waiter, [QueueMessage])] = []
        var leftover = waiters
        var pushed: [QueueMessage] = []
        var nextDue: Int64?
        var expired = 0
        var recovered = 0
        do {
            let c = try connected()
            if state.withLock({ now >= $0.nextOrphanScanMs || !$0.firstOrphanScanDone }) {
                recovered = try recoverOrphans(c)
                state.withLock { $0.nextOrphanScanMs = now + Self.orphanScanMs }
            }
            let maxLeases = Int64(ctx.options.queueMaxLeases)
            var poison: [(id: Int64, leaseSeq: Int64)] = []
            if maxLeases > 0 {
                let p = try c.query(Self.poisonSQL, [.int8(now), .int8(maxLeases)])
                poison = (0..<p.rowCount).map { (p.int64($0, 0), p.int64($0, 1)) }
            }
            for m in poison {
                // Dead-lettered like a failed last attempt; another daemon
                // may have done it first (then this finds no lease).
                let r = try failAttempt(
                    c, Settle(id: m.id, leaseSeq: m.leaseSeq, success: false) { _ in },
                    poison: true)
                if case .deadLettered = r {
                    ctx.logger.warning(
                        "queue: message \(m.id) dead-lettered: \(maxLeases) leases ended without ack or fail")
                    state.withLock { s in
                        s.stats.poisoned += 1
                        s.stats.deadLettered += 1
                    }
                }
            }
            // Claims are committed without waiting for the disk (or a
            // synchronous standby): a crash can only undo a claim, leaving the
            // message ready, as an expired lease would. Saves a flush per round.
            var q = [
                PGQuery(PGSQL.begin), PGQuery(Self.relaxedCommitSQL),
                PGQuery(Self.expireSQL, [.int8(now), .int8(maxLeases)])
            ]
            for w in waiters {
                q.append(PGQuery(Self.claimSQL, [.int8(now), .int8(now + w.visibilityMs), .int8(Int64(w.max)), .null]))
            }
            if capacity > 0 {
                q.append(
                    PGQuery(
                        Self.claimSQL, [.int8(now), .int8(now + leaseMs), .int8(Int64(capacity)), .text(ctx.instanceId)]
                    ))
            }
            q.append(PGQuery(Self.nextDueSQL))
            q.append(PGQuery("COMMIT"))
            let r = try c.pipeline(q)
            expired = r[2].rowCount
            leftover = []
            for (i, w) in waiters.enumerated() {
                let wr = r[3 + i]
                if wr.rowCount > 0 {
                    assigned.append((w, messages(wr)))
                } else {
                    leftover.append(w)
                }
            }
            if capacity > 0 {
                let pr = r[3 + waiters.count]
                pushed = messages(pr)
            }
            nextDue = r[r.count - 2].optionalInt64(0, 0)
        } catch {
            let f: Result<Void, KVError> = fail(error)
            ctx.logger.error("queue: dispatch round failed: \(f)")
            leftover = waiters
            nextDue = now + 500
        }
        for (w, m) in assigned { w.completion(.success(m)) }
        let deliver: QueueDeliverFunction? = state.withLock { s in
            if !s.firstOrphanScanDone {
                s.firstOrphanScanDone = true
                s.recoveredOnOpen = recovered
            }
            for w in leftover { w.tried = true }
            // Once stopped, `finish` fails them.
            s.waiters.insert(contentsOf: leftover, at: 0)
            if let next = nextDue, s.nextDueMs.map({ next < $0 }) ?? true { s.nextDueMs = next }
            s.stats.leasesExpired += expired
            guard let p = s.push, !pushed.isEmpty else { return nil }
            s.pushInFlight += pushed.count
            return p.deliver
        }
        if let deliver {
            for m in pushed {
                deliver(m) { [weak self] ok in self?.pushFinished(m, ok: ok) }
            }
        } else if !pushed.isEmpty {
            // Push was switched off meanwhile: let the leases lapse quickly.
            ctx.logger.debug("queue: \(pushed.count) claimed message(s) wait for their lease to end")
        }
    }

    private func pushFinished(_ m: QueueMessage, ok: Bool) {
        settle(id: m.id, leaseSeq: m.leaseSeq, success: ok) { [weak self] r in
            guard let self else { return }
            if case .success(.leaseLost) = r {
                self.ctx.logger.warning("queue: lease of pushed message \(m.id) was lost before it was settled")
            }
            self.state.withLock { $0.pushInFlight -= 1 }
            self.state.broadcast()
            self.loop.wake()  // capacity for another delivery
        }
    }

    /// Settles that arrived together: the acks in one transaction (one
    /// flush), each failed attempt in its own (it may dead-letter, with a
    /// versionstamp).
    private func settle(_ batch: [Settle]) {
        let acks = batch.filter(\.success)
        if acks.count > 1 { settleAcks(acks) } else { acks.forEach(settleOne) }
        batch.filter { !$0.success }.forEach(settleOne)
    }

    private func settleAcks(_ acks: [Settle]) {
        var results: [Result<QueueSettleResult, KVError>]
        do {
            let c = try connected()
            let r = try c.pipeline(
                [PGQuery(PGSQL.begin)] + acks.map { PGQuery(Self.ackSQL, [.int8($0.id), .int8($0.leaseSeq)]) }
                    + [PGQuery("COMMIT")])
            results = []
            for (i, s) in acks.enumerated() {
                results.append(.success(r[1 + i].rowCount > 0 ? .acknowledged : try lostOrMissing(c, s.id)))
            }
        } catch {
            let f: Result<QueueSettleResult, KVError> = fail(error)
            results = Array(repeating: f, count: acks.count)
        }
        for (s, r) in zip(acks, results) { answer(s, r) }
    }

    private func settleOne(_ s: Settle) {
        let r: Result<QueueSettleResult, KVError>
        do {
            let c = try connected()
            r = .success(s.success ? try ack(c, s) : try failAttempt(c, s))
        } catch {
            r = fail(error)
        }
        answer(s, r)
    }

    /// Counts a settle's outcome and answers it.
    private func answer(_ s: Settle, _ r: Result<QueueSettleResult, KVError>) {
        if case .success(let x) = r {
            state.withLock { s in
                switch x {
                case .acknowledged: s.stats.acknowledged += 1
                case .retryScheduled: s.stats.failedAttempts += 1
                case .deadLettered:
                    s.stats.failedAttempts += 1
                    s.stats.deadLettered += 1
                case .notFound, .leaseLost: break
                }
            }
        }
        if case .success(.retryScheduled(let at)) = r { noteDue(at) }
        s.completion(r)
    }

    private func lostOrMissing(_ c: PGConnection, _ id: Int64) throws -> QueueSettleResult {
        try c.query(Self.existsSQL, [.int8(id)]).rowCount > 0 ? .leaseLost : .notFound
    }

    private func ack(_ c: PGConnection, _ s: Settle) throws -> QueueSettleResult {
        let r = try c.query(Self.ackSQL, [.int8(s.id), .int8(s.leaseSeq)])
        return r.rowCount > 0 ? .acknowledged : try lostOrMissing(c, s.id)
    }

    /// A failed attempt: retry after the next delay of the schedule, or dead
    /// letter (payload to every keys_if_undelivered key with a versionstamp
    /// from the shared counter, message deleted) in one transaction.
    private func failAttempt(_ c: PGConnection, _ s: Settle, poison: Bool = false) throws -> QueueSettleResult {
        let sel = try c.pipeline([PGQuery(PGSQL.begin), PGQuery(Self.selectLeasedSQL, [.int8(s.id), .int8(s.leaseSeq)])]
        )
        guard sel[1].rowCount > 0 else {
            try c.execScript("ROLLBACK")
            return try lostOrMissing(c, s.id)
        }
        let m = message(sel[1], 0)
        let now = PGContext.wallClockMs()
        let failures = m.attempt
        if !poison && failures - 1 < m.backoffSchedule.count {
            let at = now + Int64(m.backoffSchedule[failures - 1])
            var q = [PGQuery(Self.retrySQL, [.int8(s.id), .int8(s.leaseSeq), .int8(Int64(failures)), .int8(at)])]
            if let n = ctx.notifyQuery(counter: ctx.counter, keys: [], expiryMs: nil, dueMs: at) { q.append(n) }
            q.append(PGQuery("COMMIT"))
            _ = try c.pipeline(q)
            return .retryScheduled(atMs: at)
        }
        if m.keysIfUndelivered.isEmpty {
            _ = try c.pipeline([PGQuery(Self.deleteSQL, [.int8(s.id)]), PGQuery("COMMIT")])
            return .deadLettered(versionstamp: nil)
        }
        let base = UInt64(bitPattern: try c.query(PGSQL.lockCounter).int64(0, 0))
        let counter = base + 1
        let vs = Versionstamps.make(counter: counter)
        let keys = Array(Set(m.keysIfUndelivered))
        var q = [
            PGQuery(
                PGSQL.upsert,
                [
                    .byteaArray(keys), .byteaArray(keys.map { _ in m.payload }),
                    .int2Array(keys.map { _ in Int16(ValueEncoding.v8.rawValue) }),
                    .byteaArray(keys.map { _ in vs }), .int8Array(keys.map { _ in nil })
                ]),
            PGQuery(Self.deleteSQL, [.int8(s.id)]),
            PGQuery(PGSQL.storeCounter, [.int8(Int64(bitPattern: counter))])
        ]
        if let n = ctx.notifyQuery(counter: counter, keys: keys, expiryMs: nil, dueMs: nil) { q.append(n) }
        q.append(PGQuery("COMMIT"))
        _ = try c.pipeline(q)
        ctx.noteCounter(counter)
        ctx.hub.notify(changed: keys)
        return .deadLettered(versionstamp: vs)
    }
}

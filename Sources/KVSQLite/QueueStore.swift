import KVEngine

// Queue message storage: the SQL of claiming, acknowledging, failing,
// dead-lettering and lease expiry. Every function runs on the writer
// connection (writer thread), so queue changes serialize with commits and a
// message is always in exactly one state:
//
//   ready ──claim──▶ inflight ──ack──▶ (deleted)
//     ▲                 │
//     │                 ├─fail, schedule left──▶ ready (deadline = now + delay)
//     │                 ├─fail, schedule exhausted──▶ dead-lettered (deleted)
//     └─lease expired / restart──┘
//
// `attempts` counts failed attempts; the attempt number of a delivery is
// attempts + 1. An expired lease or a crash is not a failed attempt (the
// redelivery carries the same attempt number). `lease_seq` grows with every
// claim, so a settle from an older lease is recognised as a lost lease.

enum QueueStore {
    static let columns = "id, lease_seq, attempts, payload, deadline_ms, lease_until_ms, keys_if_undelivered, backoff_schedule"

    static let claim = """
        UPDATE queue_messages SET state = 'inflight', lease_until_ms = ?2, lease_seq = lease_seq + 1
        WHERE id IN (SELECT id FROM queue_messages WHERE state = 'ready' AND deadline_ms <= ?1
                     ORDER BY deadline_ms, id LIMIT ?3)
        RETURNING \(columns)
        """
    static let selectLeased = """
        SELECT \(columns) FROM queue_messages WHERE id = ?1 AND state = 'inflight' AND lease_seq = ?2
        """
    static let exists = "SELECT 1 FROM queue_messages WHERE id = ?1"
    static let ack = "DELETE FROM queue_messages WHERE id = ?1 AND state = 'inflight' AND lease_seq = ?2 RETURNING id"
    static let retry = """
        UPDATE queue_messages SET state = 'ready', attempts = ?3, deadline_ms = ?4, lease_until_ms = NULL
        WHERE id = ?1 AND state = 'inflight' AND lease_seq = ?2
        """
    static let deleteById = "DELETE FROM queue_messages WHERE id = ?1"
    static let expireLeases = """
        UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL
        WHERE state = 'inflight' AND lease_until_ms <= ?1 RETURNING id
        """
    static let recover = "UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL WHERE state = 'inflight' RETURNING id"
    static let nextReady = "SELECT MIN(deadline_ms) FROM queue_messages WHERE state = 'ready'"
    static let nextLeaseEnd = "SELECT MIN(lease_until_ms) FROM queue_messages WHERE state = 'inflight'"
    static let counts = "SELECT state, COUNT(*) FROM queue_messages GROUP BY state"

    private static func message(_ s: SQLiteStatement) -> QueueMessage {
        QueueMessage(id: s.columnInt64(0), leaseSeq: s.columnInt64(1), attempt: Int(s.columnInt64(2)) + 1,
                     payload: s.columnBytes(3), deadlineMs: s.columnInt64(4),
                     leaseUntilMs: s.columnIsNull(5) ? 0 : s.columnInt64(5),
                     keysIfUndelivered: QueueKeysCodec.decode(s.columnBytes(6)) ?? [],
                     backoffSchedule: s.columnText(7).flatMap(QueueKeysCodec.decodeBackoff) ?? [])
    }

    /// All in-flight messages → ready (on open: their process is gone).
    static func recoverInflight(_ c: SQLiteConnection) throws -> Int {
        let s = try c.statement(recover)
        defer { s.reset() }
        var n = 0
        while try s.step() { n += 1 }
        return n
    }

    /// Atomically moves up to `limit` due ready messages (oldest deadline
    /// first) to in-flight with a lease until `leaseUntilMs`.
    static func claimDue(_ c: SQLiteConnection, nowMs: Int64, leaseUntilMs: Int64, limit: Int) throws -> [QueueMessage] {
        guard limit > 0 else { return [] }
        let s = try c.statement(claim)
        defer { s.reset() }
        s.bind(1, nowMs)
        s.bind(2, leaseUntilMs)
        s.bind(3, Int64(limit))
        var out: [QueueMessage] = []
        while try s.step() { out.append(message(s)) }
        // RETURNING order is unspecified: deliver oldest deadline first.
        out.sort { ($0.deadlineMs, $0.id) < ($1.deadlineMs, $1.id) }
        return out
    }

    /// Expired leases → ready. Returns how many.
    static func expireLeases(_ c: SQLiteConnection, nowMs: Int64) throws -> Int {
        let s = try c.statement(expireLeases)
        defer { s.reset() }
        s.bind(1, nowMs)
        var n = 0
        while try s.step() { n += 1 }
        return n
    }

    /// The earliest time something may become claimable: a ready message's
    /// deadline or an in-flight message's lease end.
    static func nextDue(_ c: SQLiteConnection) throws -> Int64? {
        var out: Int64?
        for sql in [nextReady, nextLeaseEnd] {
            let s = try c.statement(sql)
            defer { s.reset() }
            if try s.step(), !s.columnIsNull(0) {
                let v = s.columnInt64(0)
                out = out.map { min($0, v) } ?? v
            }
        }
        return out
    }

    private static func lostOrMissing(_ c: SQLiteConnection, id: Int64) throws -> QueueSettleResult {
        let s = try c.statement(exists)
        defer { s.reset() }
        s.bind(1, id)
        return try s.step() ? .leaseLost : .notFound
    }

    static func ack(_ c: SQLiteConnection, id: Int64, leaseSeq: Int64) throws -> QueueSettleResult {
        let s = try c.statement(ack)
        s.bind(1, id)
        s.bind(2, leaseSeq)
        let hit = try s.step()
        s.reset()
        return hit ? .acknowledged : try lostOrMissing(c, id: id)
    }

    enum FailStep { case settled(QueueSettleResult), exhausted(QueueMessage) }

    /// A failed attempt: a retry after the next delay of the schedule is
    /// scheduled; when the schedule is exhausted (an empty schedule: no retry)
    /// the message is returned for `deadLetter` (its own commit).
    static func failOrExhausted(_ c: SQLiteConnection, id: Int64, leaseSeq: Int64, nowMs: Int64) throws -> FailStep {
        let sel = try c.statement(selectLeased)
        sel.bind(1, id)
        sel.bind(2, leaseSeq)
        guard try sel.step() else {
            sel.reset()
            return .settled(try lostOrMissing(c, id: id))
        }
        let m = message(sel)
        sel.reset()
        let failures = m.attempt  // including this one
        if failures - 1 < m.backoffSchedule.count {
            let at = nowMs + Int64(m.backoffSchedule[failures - 1])
            let u = try c.statement(retry)
            defer { u.reset() }
            u.bind(1, id)
            u.bind(2, leaseSeq)
            u.bind(3, Int64(failures))
            u.bind(4, at)
            try u.step()
            return .settled(.retryScheduled(atMs: at))
        }
        return .exhausted(m)
    }

    /// Writes the payload as a V8 value to every `keys_if_undelivered` key and
    /// deletes the message, in one versionstamped commit.
    static func deadLetter(_ core: StoreCore, _ c: SQLiteConnection, _ m: QueueMessage) throws -> Versionstamp? {
        if m.keysIfUndelivered.isEmpty {
            let d = try c.statement(deleteById)
            defer { d.reset() }
            d.bind(1, m.id)
            try d.step()
            return nil
        }
        return try core.commitVersionstamped(c) { eval, vs in
            for key in m.keysIfUndelivered {
                try eval.apply(Mutation(key: key, kind: .set(KVValue(data: m.payload, encoding: .v8))), versionstamp: vs)
            }
            let d = try c.statement(deleteById)
            defer { d.reset() }
            d.bind(1, m.id)
            try d.step()
        }
    }

    static func counts(_ c: SQLiteConnection) throws -> QueueCounts {
        let s = try c.statement(counts)
        defer { s.reset() }
        var out = QueueCounts(ready: 0, inflight: 0)
        while try s.step() {
            switch s.columnText(0) {
            case "ready": out.ready = Int(s.columnInt64(1))
            case "inflight": out.inflight = Int(s.columnInt64(1))
            default: break
            }
        }
        return out
    }
}

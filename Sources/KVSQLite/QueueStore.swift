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
    static let columns =
        "id, lease_seq, attempts, payload, deadline_ms, lease_until_ms, keys_if_undelivered, backoff_schedule"

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
    /// Expired leases, with how many of the message's leases ended unsettled
    /// (leases minus failed attempts; an ack deletes the row).
    static let selectExpired = """
        SELECT \(columns), lease_seq - attempts FROM queue_messages
        WHERE state = 'inflight' AND lease_until_ms <= ?1
        """
    static let makeReady = "UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL WHERE id = ?1"
    static let recover =
        "UPDATE queue_messages SET state = 'ready', lease_until_ms = NULL WHERE state = 'inflight' RETURNING id"
    static let nextReady = "SELECT MIN(deadline_ms) FROM queue_messages WHERE state = 'ready'"
    static let nextLeaseEnd = "SELECT MIN(lease_until_ms) FROM queue_messages WHERE state = 'inflight'"
    static let counts = "SELECT state, COUNT(*) FROM queue_messages GROUP BY state"

    private static func message(_ s: SQLiteStatement) -> QueueMessage {
        QueueMessage(
            id: s.columnInt64(0), leaseSeq: s.columnInt64(1), attempt: Int(s.columnInt64(2)) + 1,
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

    /// A claim round (leases, expired leases) is committed without waiting
    /// for the disk: PRAGMA synchronous FULL is lowered to NORMAL for it and
    /// restored afterwards (`restoreSynchronous`). In WAL mode that keeps the
    /// database consistent; a power loss can only undo claims, and every
    /// message in flight is made ready again on open anyway, so an undone
    /// claim ends the same way as a kept one. The next FULL commit (an ack, a
    /// write) makes the claim durable too. Saves an fsync per lease round.
    /// Returns the level to restore (nil: nothing lowered).
    static func relaxSynchronous(_ c: SQLiteConnection) throws -> Int64? {
        let s = try c.statement("PRAGMA synchronous")
        let level = try s.step() ? s.columnInt64(0) : 0
        s.reset()
        guard level >= 2 else { return nil }  // 2 FULL, 3 EXTRA
        try c.run("PRAGMA synchronous = NORMAL")
        return level
    }

    static func restoreSynchronous(_ c: SQLiteConnection, _ level: Int64?) throws {
        if let level { try c.run("PRAGMA synchronous = \(level)") }
    }

    /// Atomically moves up to `limit` due ready messages (oldest deadline
    /// first) to in-flight with a lease until `leaseUntilMs`.
    static func claimDue(_ c: SQLiteConnection, nowMs: Int64, leaseUntilMs: Int64, limit: Int) throws -> [QueueMessage]
    {
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

    /// Expired leases → ready, except messages whose `maxLeases`-th lease
    /// ended without ack or fail (0 = no limit): poison messages, returned
    /// (still in flight) for `deadLetter`. Returns how many leases expired.
    static func expireLeases(
        _ c: SQLiteConnection, nowMs: Int64, maxLeases: Int,
        poison: inout [QueueMessage]
    ) throws -> Int {
        let s = try c.statement(selectExpired)
        s.bind(1, nowMs)
        var expired: [(QueueMessage, Int64)] = []
        while try s.step() { expired.append((message(s), s.columnInt64(8))) }
        s.reset()
        let u = try c.statement(makeReady)
        defer { u.reset() }
        for (m, unsettled) in expired {
            if maxLeases > 0 && unsettled >= Int64(maxLeases) {
                poison.append(m)
                continue
            }
            u.bind(1, m.id)
            try u.step()
            u.reset()
        }
        return expired.count
    }

    // MARK: administration

    static let adminColumns =
        "id, state, attempts, deadline_ms, lease_until_ms, lease_seq, payload, keys_if_undelivered, backoff_schedule"
    static let overview = """
        SELECT COALESCE(SUM(state = 'ready' AND deadline_ms <= ?1), 0),
               COALESCE(SUM(state = 'ready' AND deadline_ms > ?1), 0),
               COALESCE(SUM(state = 'inflight'), 0),
               MIN(CASE WHEN state = 'ready' THEN deadline_ms END)
        FROM queue_messages
        """
    static let page = "SELECT \(adminColumns) FROM queue_messages WHERE id > ?1 ORDER BY id LIMIT ?2"
    static let one = "SELECT \(adminColumns) FROM queue_messages WHERE id = ?1"
    static let deleteAll = "DELETE FROM queue_messages"

    static func overview(_ c: SQLiteConnection, nowMs: Int64) throws -> QueueOverview {
        let s = try c.statement(overview)
        defer { s.reset() }
        s.bind(1, nowMs)
        guard try s.step() else { return QueueOverview() }
        return QueueOverview(
            ready: Int(s.columnInt64(0)), delayed: Int(s.columnInt64(1)),
            inflight: Int(s.columnInt64(2)), oldestDueMs: s.columnIsNull(3) ? nil : s.columnInt64(3))
    }

    private static func info(_ s: SQLiteStatement, nowMs: Int64) -> QueueMessageInfo {
        let deadline = s.columnInt64(3)
        let state: QueueMessageState =
            s.columnText(1) == "inflight" ? .inflight : (deadline <= nowMs ? .ready : .delayed)
        return QueueMessageInfo(
            id: s.columnInt64(0), state: state, attempt: Int(s.columnInt64(2)) + 1,
            deadlineMs: deadline, leaseUntilMs: s.columnIsNull(4) ? nil : s.columnInt64(4),
            leases: s.columnInt64(5), payload: s.columnBytes(6),
            keysIfUndelivered: QueueKeysCodec.decode(s.columnBytes(7)) ?? [],
            backoffSchedule: s.columnText(8).flatMap(QueueKeysCodec.decodeBackoff) ?? [])
    }

    static func list(_ c: SQLiteConnection, afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo] {
        let s = try c.statement(page)
        defer { s.reset() }
        s.bind(1, afterId)
        s.bind(2, Int64(max(0, limit)))
        var out: [QueueMessageInfo] = []
        while try s.step() { out.append(info(s, nowMs: nowMs)) }
        return out
    }

    static func get(_ c: SQLiteConnection, id: Int64, nowMs: Int64) throws -> QueueMessageInfo? {
        let s = try c.statement(one)
        defer { s.reset() }
        s.bind(1, id)
        return try s.step() ? info(s, nowMs: nowMs) : nil
    }

    /// Deletes the messages (nil: all); returns how many there were.
    static func delete(_ c: SQLiteConnection, ids: [Int64]?) throws -> Int {
        guard let ids else {
            try c.run(deleteAll)
            return Int(c.changes)
        }
        let d = try c.statement(deleteById)
        defer { d.reset() }
        var n = 0
        for id in ids {
            d.bind(1, id)
            try d.step()
            n += Int(c.changes)
            d.reset()
        }
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
                try eval.apply(
                    Mutation(key: key, kind: .set(KVValue(data: m.payload, encoding: .v8))), versionstamp: vs)
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

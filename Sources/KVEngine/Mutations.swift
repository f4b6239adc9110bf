// Evaluation of one atomic write's checks, mutations and enqueues inside the
// writer's open transaction.

/// Versionstamp helpers: 8-byte big-endian commit counter + 0x0000.
public enum Versionstamps {
    public static func make(counter: UInt64) -> Versionstamp {
        var out = Bytes(repeating: 0, count: 10)
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(7 - i))) }
        return out
    }

    /// The commit counter of a 10-byte versionstamp (nil for a malformed one).
    public static func counter(of v: Versionstamp) -> UInt64? {
        guard v.count == 10 else { return nil }
        var c: UInt64 = 0
        for i in 0..<8 { c = (c << 8) | UInt64(v[i]) }
        return c
    }

    /// 20 lower-case hex characters.
    public static func hex(_ v: Versionstamp) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = Bytes()
        out.reserveCapacity(v.count * 2)
        for b in v {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Encoding of `queue_messages.keys_if_undelivered`: for each key a 4-byte
/// big-endian length followed by the key bytes.
public enum QueueKeysCodec {
    public static func encode(_ keys: [Bytes]) -> Bytes {
        var out = Bytes()
        for k in keys {
            let n = UInt32(k.count)
            out += [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
            out += k
        }
        return out
    }

    public static func decode(_ bytes: Bytes) -> [Bytes]? {
        var keys: [Bytes] = []
        var i = 0
        while i < bytes.count {
            guard i + 4 <= bytes.count else { return nil }
            let n = Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            i += 4
            guard i + n <= bytes.count else { return nil }
            keys.append(Array(bytes[i..<(i + n)]))
            i += n
        }
        return keys
    }

    /// `backoff_schedule` column text: a JSON array of milliseconds.
    public static func encodeBackoff(_ schedule: [UInt32]) -> String {
        "[" + schedule.map(String.init).joined(separator: ",") + "]"
    }

    public static func decodeBackoff(_ text: String) -> [UInt32]? {
        let t = text.kvTrimmed()
        guard t.hasPrefix("["), t.hasSuffix("]") else { return nil }
        let inner = t.dropFirst().dropLast().kvTrimmed()
        if inner.isEmpty { return [] }
        var out: [UInt32] = []
        for part in inner.split(separator: ",") {
            guard let v = UInt32(part.kvTrimmed()) else { return nil }
            out.append(v)
        }
        return out
    }
}

private extension StringProtocol {
    func kvTrimmed() -> String {
        let chars: Set<Character> = [" ", "\n", "\t"]
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s.removeFirst() }
        while let l = s.last, chars.contains(l) { s.removeLast() }
        return String(s)
    }
}

enum SQL {
    static let selectVersionstamp =
        "SELECT versionstamp FROM entries WHERE key = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
    static let selectValue =
        "SELECT value, encoding FROM entries WHERE key = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
    static let upsert = """
        INSERT INTO entries (key, value, encoding, versionstamp, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value, encoding = excluded.encoding,
        versionstamp = excluded.versionstamp, expires_at_ms = excluded.expires_at_ms
        """
    static let delete = "DELETE FROM entries WHERE key = ?1"
    static let insertQueueMessage = """
        INSERT INTO queue_messages (payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts, state, lease_until_ms)
        VALUES (?1, ?2, ?3, ?4, 0, 'ready', NULL)
        """
    static let rangeAsc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= ?1 AND key < ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)
        ORDER BY key ASC LIMIT ?4
        """
    static let rangeDesc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= ?1 AND key < ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)
        ORDER BY key DESC LIMIT ?4
        """
    static let updateCounter = "UPDATE meta SET value = ?1 WHERE key = 'commit_counter'"
    static let countQueue = "SELECT COUNT(*) FROM queue_messages"
    static let sweepExpired = """
        DELETE FROM entries WHERE key IN (
            SELECT key FROM entries WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1
            ORDER BY expires_at_ms LIMIT ?2)
        RETURNING key
        """
    static let nextExpiry = "SELECT MIN(expires_at_ms) FROM entries WHERE expires_at_ms IS NOT NULL"
}

/// Applies one atomic write's parts on the write connection, within the
/// writer's transaction. Throws KVError.invalidMutation for bad requests and
/// SQLiteError for storage failures.
struct WriteEvaluator {
    let conn: SQLiteConnection
    let nowMs: Int64
    /// Keys this batch wrote or deleted (for watchers), and the earliest
    /// expiry it set (for the sweeper); the writer trims both on rollback.
    let effects = WriteEffects()

    /// Indexes of all failing checks.
    func failedChecks(_ checks: [Check]) throws -> [Int] {
        var failed: [Int] = []
        for (i, check) in checks.enumerated() {
            let current = try currentVersionstamp(check.key)
            if current != check.versionstamp { failed.append(i) }
        }
        return failed
    }

    func currentVersionstamp(_ key: Bytes) throws -> Versionstamp? {
        let s = try conn.statement(SQL.selectVersionstamp)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, nowMs)
        return try s.step() ? s.columnBytes(0) : nil
    }

    /// The live (non-expired) value of a key.
    func currentValue(_ key: Bytes) throws -> KVValue? {
        let s = try conn.statement(SQL.selectValue)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, nowMs)
        guard try s.step() else { return nil }
        let data = s.columnBytes(0)
        let raw = s.columnInt64(1)
        guard let enc = Int32(exactly: raw).flatMap(ValueEncoding.init(rawValue:)) else {
            throw KVError.internalError("The value encoding \(raw) is unknown.")
        }
        return KVValue(data: data, encoding: enc)
    }

    func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws {
        let s = try conn.statement(SQL.upsert)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, value.data)
        s.bind(3, Int64(value.encoding.rawValue))
        s.bind(4, versionstamp)
        s.bind(5, expireAtMs)
        try s.step()
        effects.touched.append(key)
        if let e = expireAtMs { effects.noteExpiry(e) }
    }

    func delete(_ key: Bytes) throws {
        let s = try conn.statement(SQL.delete)
        defer { s.reset() }
        s.bind(1, key)
        try s.step()
        effects.touched.append(key)
    }

    func apply(_ m: Mutation, versionstamp: Versionstamp) throws {
        switch m.kind {
        case .set(let value):
            try put(m.key, value, versionstamp: versionstamp, expireAtMs: m.expireAtMs)
        case .delete:
            try delete(m.key)
        case .sum(let operand, let minBound, let maxBound, let clamp):
            if operand.encoding == .v8 {
                try sumV8(m, operand: operand, minBound: minBound, maxBound: maxBound, clamp: clamp, versionstamp: versionstamp)
            } else {
                try mutateLE64(m, op: "sum", operand: operand, versionstamp: versionstamp) { $0 &+ $1 }
            }
        case .min(let operand):
            try mutateLE64(m, op: "min", operand: operand, versionstamp: versionstamp) { Swift.min($0, $1) }
        case .max(let operand):
            try mutateLE64(m, op: "max", operand: operand, versionstamp: versionstamp) { Swift.max($0, $1) }
        case .setSuffixVersionstampedKey(let value):
            let key = m.key + [0x02] + Array(Versionstamps.hex(versionstamp).utf8) + [0x00]
            try put(key, value, versionstamp: versionstamp, expireAtMs: m.expireAtMs)
        }
    }

    func enqueue(_ e: Enqueue) throws {
        let s = try conn.statement(SQL.insertQueueMessage)
        defer { s.reset() }
        s.bind(1, e.payload)
        s.bind(2, e.deadlineMs)
        s.bind(3, QueueKeysCodec.encode(e.keysIfUndelivered))
        s.bind(4, QueueKeysCodec.encodeBackoff(e.backoffSchedule))
        try s.step()
        effects.noteDeadline(e.deadlineMs)
    }

    // MARK: - numeric mutations

    static func le64(_ v: KVValue) -> UInt64? {
        guard v.encoding == .le64, v.data.count == 8 else { return nil }
        var x: UInt64 = 0
        for i in 0..<8 { x |= UInt64(v.data[i]) << (8 * UInt64(i)) }
        return x
    }

    static func le64Value(_ x: UInt64) -> KVValue {
        var d = Bytes(repeating: 0, count: 8)
        for i in 0..<8 { d[i] = UInt8(truncatingIfNeeded: x >> (8 * UInt64(i))) }
        return KVValue(data: d, encoding: .le64)
    }

    private func mutateLE64(_ m: Mutation, op: String, operand: KVValue, versionstamp: Versionstamp,
                            _ combine: (UInt64, UInt64) -> UInt64) throws {
        guard let x = Self.le64(operand) else {
            throw KVError.invalidMutation("Failed to perform '\(op)' mutation on a non-U64 operand")
        }
        let result: UInt64
        if let current = try currentValue(m.key) {
            guard let old = Self.le64(current) else {
                throw KVError.invalidMutation("Failed to perform '\(op)' mutation on a non-U64 value in the database")
            }
            result = combine(old, x)
        } else {
            result = x
        }
        try put(m.key, Self.le64Value(result), versionstamp: versionstamp, expireAtMs: m.expireAtMs)
    }

    static let invalidV8Parameters = "Some of the parameters are not valid V8 values"
    static let boundsTypeMismatch = "Min/max parameters have different types than the operand"
    static let sumOutOfRange = "The result of a Sum operation would exceed its range limit"
    static let nonNumberInDatabase = "Failed to perform 'sum' mutation on a non-number, non-bigint value in the database"

    private func sumV8(_ m: Mutation, operand: KVValue, minBound: Bytes?, maxBound: Bytes?, clamp: Bool,
                       versionstamp: Versionstamp) throws {
        func parseBound(_ b: Bytes?) throws -> V8Scalar? {
            guard let b, !b.isEmpty else { return nil }
            guard let v = V8Codec.decodeScalar(b) else { throw KVError.invalidMutation(Self.invalidV8Parameters) }
            return v
        }
        guard let op = V8Codec.decodeScalar(operand.data) else {
            throw KVError.invalidMutation(Self.invalidV8Parameters)
        }
        let lo = try parseBound(minBound)
        let hi = try parseBound(maxBound)
        for bound in [lo, hi] {
            if let bound, !bound.sameKind(as: op) { throw KVError.invalidMutation(Self.boundsTypeMismatch) }
        }

        let current = try currentValue(m.key)
        var sum: V8Scalar
        switch current {
        case nil:
            sum = op
        case let cur? where cur.encoding == .le64:
            // Compatibility: a bigint in u64 range added to a KvU64 without bounds stays a KvU64.
            if case .bigint(let b) = op, let x = b.uint64Value, lo == nil, hi == nil, !clamp,
               let old = Self.le64(cur) {
                try put(m.key, Self.le64Value(old &+ x), versionstamp: versionstamp, expireAtMs: m.expireAtMs)
                return
            }
            throw KVError.invalidMutation("Cannot sum KvU64 with \(op.kindName)")
        case let cur?:
            guard cur.encoding == .v8, let old = V8Codec.decodeScalar(cur.data) else {
                throw KVError.invalidMutation(Self.nonNumberInDatabase)
            }
            switch (old, op) {
            case (.number(let a), .number(let b)): sum = .number(a + b)
            case (.bigint(let a), .bigint(let b)): sum = .bigint(a + b)
            default:
                throw KVError.invalidMutation("Cannot sum \(old.kindName) with \(op.kindName)")
            }
        }

        if let lo, Self.less(sum, lo) {
            guard clamp else { throw KVError.invalidMutation(Self.sumOutOfRange) }
            sum = lo
        }
        if let hi, Self.less(hi, sum) {
            guard clamp else { throw KVError.invalidMutation(Self.sumOutOfRange) }
            sum = hi
        }
        try put(m.key, KVValue(data: V8Codec.encode(sum), encoding: .v8), versionstamp: versionstamp,
                expireAtMs: m.expireAtMs)
    }

    /// a < b for same-kind scalars (NaN compares false).
    static func less(_ a: V8Scalar, _ b: V8Scalar) -> Bool {
        switch (a, b) {
        case (.number(let x), .number(let y)): return x < y
        case (.bigint(let x), .bigint(let y)): return x < y
        default: return false
        }
    }
}

/// What a batch changed, beyond its results.
final class WriteEffects {
    var touched: [Bytes] = []
    var earliestExpiryMs: Int64?
    /// Earliest deadline of the batch's enqueues (for the queue dispatcher).
    var earliestDeadlineMs: Int64?

    func noteExpiry(_ ms: Int64) {
        if earliestExpiryMs.map({ ms < $0 }) ?? true { earliestExpiryMs = ms }
    }

    func noteDeadline(_ ms: Int64) {
        if earliestDeadlineMs.map({ ms < $0 }) ?? true { earliestDeadlineMs = ms }
    }

    struct Mark { let touched: Int; let expiry: Int64?; let deadline: Int64? }
    var mark: Mark { Mark(touched: touched.count, expiry: earliestExpiryMs, deadline: earliestDeadlineMs) }

    func rollback(to m: Mark) {
        touched.removeSubrange(m.touched...)
        earliestExpiryMs = m.expiry
        earliestDeadlineMs = m.deadline
    }
}

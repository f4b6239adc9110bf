// Evaluation of one atomic write's checks, mutations and enqueues inside a
// backend's open write transaction. The semantics (sum/min/max on KvU64 and
// V8 numbers, bounds and clamping, versionstamped keys, expiry) live here
// once; a backend only says how to read and write one key.

/// What the evaluator needs from a backend, inside its write transaction.
/// Reads must see the effects of earlier `put`/`delete` calls of the same
/// transaction.
public protocol WriteTarget {
    /// Versionstamp of the key's live (non-expired at `nowMs`) entry.
    func currentVersionstamp(_ key: Bytes, nowMs: Int64) throws -> Versionstamp?
    /// The key's live (non-expired at `nowMs`) value.
    func currentValue(_ key: Bytes, nowMs: Int64) throws -> KVValue?
    func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws
    func delete(_ key: Bytes) throws
    func enqueue(_ e: Enqueue) throws
}

/// Applies one atomic write's parts to a `WriteTarget`. Throws
/// KVError.invalidMutation for bad requests; storage errors pass through.
public struct MutationEvaluator<Target: WriteTarget> {
    public let target: Target
    public let nowMs: Int64
    /// Keys this batch wrote or deleted (for watchers), and the earliest
    /// expiry and deadline it set; the writer trims them on rollback.
    public let effects = WriteEffects()

    public init(target: Target, nowMs: Int64) {
        self.target = target
        self.nowMs = nowMs
    }

    /// Indexes of all failing checks.
    public func failedChecks(_ checks: [Check]) throws -> [Int] {
        var failed: [Int] = []
        for (i, check) in checks.enumerated() {
            let current = try target.currentVersionstamp(check.key, nowMs: nowMs)
            if current != check.versionstamp { failed.append(i) }
        }
        return failed
    }

    /// Every key a write reads before writing (checks and numeric
    /// mutations): a backend may fetch them in one round trip first.
    public static func keysRead(by write: AtomicWrite) -> [Bytes] {
        var keys = write.checks.map(\.key)
        for m in write.mutations {
            switch m.kind {
            case .sum, .min, .max: keys.append(m.key)
            case .set, .delete, .setSuffixVersionstampedKey: break
            }
        }
        return keys
    }

    /// The key a mutation writes (versionstamped keys get their suffix).
    public static func writtenKey(_ m: Mutation, versionstamp: Versionstamp) -> Bytes {
        if case .setSuffixVersionstampedKey = m.kind {
            return m.key + [0x02] + Array(Versionstamps.hex(versionstamp).utf8) + [0x00]
        }
        return m.key
    }

    public func apply(_ m: Mutation, versionstamp: Versionstamp) throws {
        switch m.kind {
        case .set(let value):
            try put(m.key, value, versionstamp: versionstamp, expireAtMs: m.expireAtMs)
        case .delete:
            try target.delete(m.key)
            effects.touched.append(m.key)
        case .sum(let operand, let minBound, let maxBound, let clamp):
            if operand.encoding == .v8 {
                try sumV8(
                    m, operand: operand, minBound: minBound, maxBound: maxBound, clamp: clamp,
                    versionstamp: versionstamp)
            } else {
                try mutateLE64(m, op: "sum", operand: operand, versionstamp: versionstamp) { $0 &+ $1 }
            }
        case .min(let operand):
            try mutateLE64(m, op: "min", operand: operand, versionstamp: versionstamp) { Swift.min($0, $1) }
        case .max(let operand):
            try mutateLE64(m, op: "max", operand: operand, versionstamp: versionstamp) { Swift.max($0, $1) }
        case .setSuffixVersionstampedKey(let value):
            try put(
                Self.writtenKey(m, versionstamp: versionstamp), value, versionstamp: versionstamp,
                expireAtMs: m.expireAtMs)
        }
    }

    public func enqueue(_ e: Enqueue) throws {
        try target.enqueue(e)
        effects.noteDeadline(e.deadlineMs)
    }

    private func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws {
        try target.put(key, value, versionstamp: versionstamp, expireAtMs: expireAtMs)
        effects.touched.append(key)
        if let e = expireAtMs { effects.noteExpiry(e) }
    }

    // MARK: - numeric mutations

    public static func le64(_ v: KVValue) -> UInt64? {
        guard v.encoding == .le64, v.data.count == 8 else { return nil }
        var x: UInt64 = 0
        for i in 0..<8 { x |= UInt64(v.data[i]) << (8 * UInt64(i)) }
        return x
    }

    public static func le64Value(_ x: UInt64) -> KVValue {
        var d = Bytes(repeating: 0, count: 8)
        for i in 0..<8 { d[i] = UInt8(truncatingIfNeeded: x >> (8 * UInt64(i))) }
        return KVValue(data: d, encoding: .le64)
    }

    private func mutateLE64(
        _ m: Mutation, op: String, operand: KVValue, versionstamp: Versionstamp,
        _ combine: (UInt64, UInt64) -> UInt64
    ) throws {
        guard let x = Self.le64(operand) else {
            throw KVError.invalidMutation("Failed to perform '\(op)' mutation on a non-U64 operand")
        }
        let result: UInt64
        if let current = try target.currentValue(m.key, nowMs: nowMs) {
            guard let old = Self.le64(current) else {
                throw KVError.invalidMutation("Failed to perform '\(op)' mutation on a non-U64 value in the database")
            }
            result = combine(old, x)
        } else {
            result = x
        }
        try put(m.key, Self.le64Value(result), versionstamp: versionstamp, expireAtMs: m.expireAtMs)
    }

    private func sumV8(
        _ m: Mutation, operand: KVValue, minBound: Bytes?, maxBound: Bytes?, clamp: Bool,
        versionstamp: Versionstamp
    ) throws {
        func parseBound(_ b: Bytes?) throws -> V8Scalar? {
            guard let b, !b.isEmpty else { return nil }
            guard let v = V8Codec.decodeScalar(b) else {
                throw KVError.invalidMutation(SumMessages.invalidV8Parameters)
            }
            return v
        }
        guard let op = V8Codec.decodeScalar(operand.data) else {
            throw KVError.invalidMutation(SumMessages.invalidV8Parameters)
        }
        let lo = try parseBound(minBound)
        let hi = try parseBound(maxBound)
        for bound in [lo, hi] {
            if let bound, !bound.sameKind(as: op) { throw KVError.invalidMutation(SumMessages.boundsTypeMismatch) }
        }

        let current = try target.currentValue(m.key, nowMs: nowMs)
        var sum: V8Scalar
        switch current {
        case nil:
            sum = op
        case let cur? where cur.encoding == .le64:
            // Compatibility: a bigint in u64 range added to a KvU64 without bounds stays a KvU64.
            if case .bigint(let b) = op, let x = b.uint64Value, lo == nil, hi == nil, !clamp,
                let old = Self.le64(cur)
            {
                try put(m.key, Self.le64Value(old &+ x), versionstamp: versionstamp, expireAtMs: m.expireAtMs)
                return
            }
            throw KVError.invalidMutation("Cannot sum KvU64 with \(op.kindName)")
        case let cur?:
            guard cur.encoding == .v8, let old = V8Codec.decodeScalar(cur.data) else {
                throw KVError.invalidMutation(SumMessages.nonNumberInDatabase)
            }
            switch (old, op) {
            case (.number(let a), .number(let b)): sum = .number(a + b)
            case (.bigint(let a), .bigint(let b)): sum = .bigint(a + b)
            default:
                throw KVError.invalidMutation("Cannot sum \(old.kindName) with \(op.kindName)")
            }
        }

        if let lo, Self.less(sum, lo) {
            guard clamp else { throw KVError.invalidMutation(SumMessages.sumOutOfRange) }
            sum = lo
        }
        if let hi, Self.less(hi, sum) {
            guard clamp else { throw KVError.invalidMutation(SumMessages.sumOutOfRange) }
            sum = hi
        }
        try put(
            m.key, KVValue(data: V8Codec.encode(sum), encoding: .v8), versionstamp: versionstamp,
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

/// The error texts of V8 sums (Deno's own wording; tests compare them).
public enum SumMessages {
    public static let invalidV8Parameters = "Some of the parameters are not valid V8 values"
    public static let boundsTypeMismatch = "Min/max parameters have different types than the operand"
    public static let sumOutOfRange = "The result of a Sum operation would exceed its range limit"
    public static let nonNumberInDatabase =
        "Failed to perform 'sum' mutation on a non-number, non-bigint value in the database"
}

/// What a batch changed, beyond its results.
public final class WriteEffects {
    public var touched: [Bytes] = []
    public private(set) var earliestExpiryMs: Int64?
    /// Earliest deadline of the batch's enqueues (for the queue dispatcher).
    public private(set) var earliestDeadlineMs: Int64?

    public init() {}

    public func noteExpiry(_ ms: Int64) {
        if earliestExpiryMs.map({ ms < $0 }) ?? true { earliestExpiryMs = ms }
    }

    public func noteDeadline(_ ms: Int64) {
        if earliestDeadlineMs.map({ ms < $0 }) ?? true { earliestDeadlineMs = ms }
    }

    public struct Mark {
        let touched: Int
        let expiry: Int64?
        let deadline: Int64?
    }
    public var mark: Mark { Mark(touched: touched.count, expiry: earliestExpiryMs, deadline: earliestDeadlineMs) }

    public func rollback(to m: Mark) {
        touched.removeSubrange(m.touched...)
        earliestExpiryMs = m.expiry
        earliestDeadlineMs = m.deadline
    }
}

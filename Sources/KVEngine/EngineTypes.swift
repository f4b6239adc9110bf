// Plain value types the engine speaks. No protobuf, no HTTP: the protocol
// layer (KVConnect) maps wire messages to these and back.

public typealias Bytes = [UInt8]

/// How a stored value's bytes are to be read; raw values match the wire enum.
public enum ValueEncoding: Int32, Sendable, Equatable {
    /// V8 ValueSerializer bytes (any JS value).
    case v8 = 1
    /// 8-byte little-endian unsigned integer (Deno.KvU64).
    case le64 = 2
    /// Raw bytes (Uint8Array).
    case bytes = 3
}

public struct KVValue: Sendable, Equatable {
    public var data: Bytes
    public var encoding: ValueEncoding
    public init(data: Bytes, encoding: ValueEncoding) {
        self.data = data
        self.encoding = encoding
    }
}

/// 10 bytes: 8-byte big-endian commit counter + 2 bytes of order within it.
public typealias Versionstamp = Bytes

public struct KVEntry: Sendable, Equatable {
    public var key: Bytes
    public var value: KVValue
    public var versionstamp: Versionstamp
    public init(key: Bytes, value: KVValue, versionstamp: Versionstamp) {
        self.key = key
        self.value = value
        self.versionstamp = versionstamp
    }
}

/// `start` inclusive, `end` exclusive, at most `limit` entries (> 0).
public struct ReadRange: Sendable, Equatable {
    public var start: Bytes
    public var end: Bytes
    public var limit: Int
    public var reverse: Bool
    public init(start: Bytes, end: Bytes, limit: Int, reverse: Bool = false) {
        self.start = start
        self.end = end
        self.limit = limit
        self.reverse = reverse
    }
}

public struct Check: Sendable, Equatable {
    public var key: Bytes
    /// nil: the key must not exist (or be expired).
    public var versionstamp: Versionstamp?
    public init(key: Bytes, versionstamp: Versionstamp?) {
        self.key = key
        self.versionstamp = versionstamp
    }
}

public enum MutationKind: Sendable, Equatable {
    case set(KVValue)
    case delete
    /// LE64 operand: wrapping add. V8 operand (number or bigint): add, with
    /// optional V8-encoded bounds; out of bounds → clamp or reject.
    case sum(KVValue, min: Bytes?, max: Bytes?, clamp: Bool)
    case min(KVValue)
    case max(KVValue)
    /// Stored key = key ++ [0x02] ++ 20 lower-case hex chars of the commit's versionstamp ++ [0x00].
    case setSuffixVersionstampedKey(KVValue)
}

public struct Mutation: Sendable, Equatable {
    public var key: Bytes
    public var kind: MutationKind
    /// Unix milliseconds after which the entry is invisible; nil = never.
    public var expireAtMs: Int64?
    public init(key: Bytes, kind: MutationKind, expireAtMs: Int64? = nil) {
        self.key = key
        self.kind = kind
        self.expireAtMs = expireAtMs
    }
}

public struct Enqueue: Sendable, Equatable {
    public var payload: Bytes
    public var deadlineMs: Int64
    public var keysIfUndelivered: [Bytes]
    public var backoffSchedule: [UInt32]
    public init(payload: Bytes, deadlineMs: Int64, keysIfUndelivered: [Bytes], backoffSchedule: [UInt32]) {
        self.payload = payload
        self.deadlineMs = deadlineMs
        self.keysIfUndelivered = keysIfUndelivered
        self.backoffSchedule = backoffSchedule
    }
}

public struct AtomicWrite: Sendable, Equatable {
    public var checks: [Check]
    public var mutations: [Mutation]
    public var enqueues: [Enqueue]
    public init(checks: [Check] = [], mutations: [Mutation] = [], enqueues: [Enqueue] = []) {
        self.checks = checks
        self.mutations = mutations
        self.enqueues = enqueues
    }
}

public enum AtomicWriteResult: Sendable, Equatable {
    case committed(versionstamp: Versionstamp)
    /// Indexes into `AtomicWrite.checks` of the checks that failed; nothing applied.
    case checkFailed(failedChecks: [Int])
}

public enum KVError: Error, Sendable, Equatable {
    /// The request is wrong (e.g. sum on a non-U64 value); nothing applied. Maps to 400.
    case invalidMutation(String)
    /// Temporary: disk full, database busy, engine shutting down. Maps to 503; a retry may succeed.
    case unavailable(String)
    /// Unexpected storage failure. Maps to 500.
    case internalError(String)
}
